//! Structure-aware KEYGEN: the fuzzer mutates the decoded halves, the target base64url-encodes
//! them (so no time is spent learning base64) and runs `keygen::check`.
//!
//! Input: `flags` byte, then
//! - flags bit 0 clear: `len_hi len_lo <first half, len bytes> <COSE bytes>`;
//! - flags bit 0 set: `<CSR DER>`; the target wraps it in a well-formed COSE_Sign1 whose
//!   payload attests the CSR's SHA-256 and the UUID of the CSR CN (when it is one), so every
//!   check after `malformed-attestation` is reachable.
//! flags bit 1: wrap as `%KEYGEN: "…"`; bit 2: msg_type 8 instead of 9; bit 3: sec_tag 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::internal::crypto;
use nrfca::internal::keygen::{cbor, cose};
use nrfca::keygen::{self, CheckOptions, DeviceIdMode};
use nrfca::reject::RejectCode;

fn wrap_cose(csr: &[u8], flags: u8) -> Vec<u8> {
    let uuid = keygen::Csr::parse(csr)
        .ok()
        .and_then(|c| c.common_names().into_iter().flatten().next())
        .and_then(nrfca::internal::util::parse_uuid)
        .unwrap_or([0x11; 16]);
    let msg_type = if flags & 4 != 0 { 8 } else { 9 };
    let sec_tag = if flags & 8 != 0 {
        0
    } else {
        keygen::DEFAULT_SEC_TAG
    };
    let payload = cose::keygen_payload(msg_type, &uuid, sec_tag, &crypto::sha256(csr), &[7; 16]);
    let mut out = Vec::new();
    cbor::write_head(&mut out, 6, cose::TAG_COSE_SIGN1);
    cbor::write_head(&mut out, 4, 4);
    cbor::write_bytes(&mut out, &cose::PROTECTED_ES256);
    out.extend_from_slice(&cose::UNPROTECTED_IDENTITY_KID);
    cbor::write_bytes(&mut out, &payload);
    cbor::write_bytes(&mut out, &[0x5a; 64]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (first, cose_bytes) = if flags & 1 != 0 {
        (rest.to_vec(), wrap_cose(rest, flags))
    } else {
        let Some((len, body)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let n = usize::from(u16::from_be_bytes(*len)).min(body.len());
        let (a, b) = body.split_at(n);
        (a.to_vec(), b.to_vec())
    };
    let mut s = format!(
        "{}.{}",
        crypto::b64url_encode(&first),
        crypto::b64url_encode(&cose_bytes)
    );
    if flags & 2 != 0 {
        s = format!("%KEYGEN: \"{s}\"");
    }
    for o in [
        CheckOptions::default(),
        CheckOptions {
            sec_tag: None,
            device_id: DeviceIdMode::Cn,
            imei: None,
        },
    ] {
        match keygen::check(&s, &o) {
            Ok(v) => {
                assert_eq!(v.csr_der, first);
                assert!(crypto::is_valid_p256_point(&v.public_key));
                let c = keygen::Csr::parse(&v.csr_der).expect("accepted CSR reparses");
                assert!(crypto::verify_p256_sha256(
                    &v.public_key,
                    c.info,
                    c.signature
                ));
            }
            Err(r) => {
                if s.len() <= keygen::MAX_LINE {
                    // Well-formed base64url halves never fail before the attestation.
                    assert!(
                        r.code >= RejectCode::MalformedAttestation || cose_bytes.is_empty(),
                        "{r}"
                    );
                }
            }
        }
    }
    let r = nrfca::inspect::inspect_keygen(&s, &CheckOptions::default());
    let _ = nrfca::inspect::render_text(&r);
});
