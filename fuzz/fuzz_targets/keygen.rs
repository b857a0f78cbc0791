//! KEYGEN / ATTESTTOKEN text: `keygen::check` (all option variants), `keygen::parse`,
//! `parse_attesttoken`, `decode_halves_lenient`, `inspect_keygen`. Properties: never panics;
//! over-long input is `malformed-input`; `check` accepting implies `parse` accepting the same
//! halves, the digest agreeing and the hash being of the unwrapped text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::keygen::{self, CheckOptions, DeviceIdMode};
use nrfca::reject::RejectCode;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s: &str = &s;
    let opts = [
        CheckOptions::default(),
        CheckOptions {
            sec_tag: None,
            device_id: DeviceIdMode::Cn,
            imei: Some("352656100000001".into()),
        },
        CheckOptions {
            sec_tag: Some(0),
            device_id: DeviceIdMode::Cn,
            imei: None,
        },
    ];
    let parsed = keygen::parse(s);
    for o in &opts {
        match keygen::check(s, o) {
            Ok(v) => {
                let p = parsed.as_ref().expect("check accepted what parse refused");
                assert_eq!(p.der, v.csr_der);
                assert!(p.digest_ok());
                assert_eq!(v.uuid, p.uuid());
                let text = keygen::unwrap_line(s).expect("unwrap_line refused an accepted string");
                assert_eq!(v.keygen_sha256, nrfca::internal::crypto::sha256(text.as_bytes()));
                assert!(s.len() <= keygen::MAX_LINE);
            }
            Err(r) => {
                if s.len() > keygen::MAX_LINE {
                    assert_eq!(r.code, RejectCode::MalformedInput);
                }
                // Codes up to malformed-attestation must agree with parse().
                if r.code <= RejectCode::MalformedAttestation {
                    assert_eq!(parsed.as_ref().err().map(|e| e.code), Some(r.code));
                }
            }
        }
    }
    if let Ok(p) = &parsed {
        let _ = p
            .csr()
            .map(|c| (c.common_names(), c.requested_extensions()));
        let _ = p.spki().map(|k| k.describe());
        let _ = p.cose.alg_name();
        let _ = p.cose.kid_name();
    }
    let _ = keygen::parse_attesttoken(s).map(|t| t.uuid());
    let _ = keygen::decode_halves_lenient(s);
    let r = nrfca::inspect::inspect_keygen(s, &opts[0]);
    let _ = nrfca::inspect::render_text(&r);
});
