//! KEYGEN and ATTESTTOKEN strings and bare CSRs, judged with the checks `sign` runs. CSRs are
//! read with `crate::keygen::csr`, which keeps the modem's exact bytes (the NULL quirk).

use super::keys::{ext_name, ext_value_text, key_info_from_spki};
use super::*;
use crate::keygen::{self, cose, csr};

fn cose_info(c: &cose::CoseSign1) -> CoseInfo {
    CoseInfo {
        tagged: c.tagged,
        alg: c.alg_name(),
        kid: c.kid_name(),
        signature_length: c.signature.len(),
        signature: "not verifiable offline: made with the modem's identity key, whose public \
                    key only Nordic holds"
            .into(),
    }
}

/// Decode a CSR (no verdict).
pub fn csr_info(c: &Csr<'_>) -> CsrInfo {
    let key = key_info_from_spki(&c.spki);
    let signature_ok = c
        .spki
        .p256_point()
        .map(|p| c.is_ecdsa_sha256() && crypto::verify_p256_sha256(&p, c.info, c.signature))
        .unwrap_or(false);
    let cns = c.common_names();
    CsrInfo {
        der_length: c.der.len(),
        sha256: crypto::sha256_hex(c.der),
        subject: csr::name_to_string(&c.subject),
        cn: match cns.as_slice() {
            [Some(cn)] => Some((*cn).to_string()),
            _ => None,
        },
        key,
        signature_algorithm: csr::oid_name(c.sig_alg_oid),
        null_param: c.null_param(),
        signature_ok,
        requested_extensions: c
            .requested_extensions()
            .into_iter()
            .map(|(oid, critical, v)| ExtInfo {
                name: ext_name(oid),
                critical,
                value: ext_value_text(oid, v),
            })
            .collect(),
    }
}

/// Judge a bare CSR: malformed-csr, unsupported-key, bad-csr-signature.
fn csr_verdict(c: &Csr<'_>) -> Result<(), Reject> {
    if c.sig_alg_oid == crate::oid::ECDSA_WITH_SHA256.as_bytes() && !c.is_ecdsa_sha256() {
        return Err(Reject::new(
            RejectCode::MalformedCsr,
            "ecdsa-with-SHA256 carries parameters other than NULL",
        ));
    }
    let p = c
        .spki
        .p256_point()
        .map_err(|e| Reject::new(RejectCode::UnsupportedKey, e))?;
    if !c.is_ecdsa_sha256() {
        return Err(Reject::new(
            RejectCode::UnsupportedKey,
            format!("signature algorithm is {}", csr::oid_name(c.sig_alg_oid)),
        ));
    }
    if !crypto::is_valid_p256_point(&p) {
        return Err(Reject::new(
            RejectCode::UnsupportedKey,
            "the public key is not a valid P-256 point",
        ));
    }
    if !crypto::verify_p256_sha256(&p, c.info, c.signature) {
        return Err(Reject::new(
            RejectCode::BadCsrSignature,
            "the CSR self-signature does not verify",
        ));
    }
    Ok(())
}

/// Decode and judge a KEYGEN string with `opts`.
pub fn inspect_keygen(s: &str, opts: &CheckOptions) -> Report {
    let mut r = base_report(InputKind::Keygen, s.as_bytes());
    let text = keygen::unwrap_line(s).unwrap_or(s.trim());
    let mut info = KeygenInfo {
        length: text.len(),
        keygen_sha256: crypto::sha256_hex(text.as_bytes()),
        msg_type: None,
        uuid: None,
        sec_tag: None,
        digest: None,
        digest_ok: None,
        nonce: None,
        cose: None,
        csr: None,
        public_key: None,
        problems: Vec::new(),
    };
    match keygen::decode_halves_lenient(s) {
        Ok(h) => {
            let mut msg_type = None;
            match h.cose.as_deref() {
                None => info.problems.push("no COSE half".into()),
                Some(c) => match keygen::parse_attestation(c) {
                    Ok((c, p)) => {
                        msg_type = Some(p.msg_type);
                        info.msg_type = Some(p.msg_type);
                        info.uuid = Some(keygen::uuid_string(&p.uuid));
                        info.sec_tag = Some(p.sec_tag);
                        info.digest = Some(hex::encode(p.digest));
                        info.digest_ok = Some(crypto::sha256(&h.first) == p.digest);
                        info.nonce = Some(hex::encode(p.nonce));
                        info.cose = Some(cose_info(&c));
                    }
                    Err(e) => info.problems.push(e.detail),
                },
            }
            if msg_type == Some(cose::MSG_TYPE_PUBLIC_KEY) {
                match csr::Spki::parse(&h.first) {
                    Ok(s) => info.public_key = Some(key_info_from_spki(&s)),
                    Err(e) => info.problems.push(format!("public key: {e}")),
                }
            } else {
                match Csr::parse(&h.first) {
                    Ok(c) => info.csr = Some(csr_info(&c)),
                    Err(e) => info.problems.push(format!("CSR: {e}")),
                }
            }
        }
        Err(e) => info.problems.push(e.detail),
    }
    let verdict = keygen::check(s, opts).map(|v| {
        format!(
            "valid request for device {} (sec_tag {}); the COSE signature cannot be checked \
             offline",
            v.device_id, v.sec_tag
        )
    });
    r.keygen = Some(info);
    set_verdict(&mut r, verdict);
    r
}

/// Decode and judge an ATTESTTOKEN string.
pub fn inspect_attesttoken(s: &str) -> Report {
    let mut r = base_report(InputKind::Attesttoken, s.as_bytes());
    let v = keygen::parse_attesttoken(s).and_then(|t| {
        let m = &t.message;
        r.attesttoken = Some(AttestInfo {
            msg_type: m.msg_type,
            uuid: t.uuid(),
            device_type: m.device_type,
            device_type_name: cose::device_type_name(m.device_type).into(),
            fw_uuid: keygen::uuid_string(&m.fw_uuid),
            nonce: hex::encode(m.nonce),
            cose: cose_info(&t.cose),
        });
        if m.msg_type != cose::MSG_TYPE_IDENTITY {
            return Err(Reject::new(
                RejectCode::WrongMessageType,
                format!("message type {} is not 1 (device identity)", m.msg_type),
            ));
        }
        Ok(format!(
            "well-formed attestation token of device {}; the COSE signature cannot be checked \
             offline",
            t.uuid()
        ))
    });
    set_verdict(&mut r, v);
    r
}

/// Decode and judge one CSR DER.
pub fn inspect_csr(input: &[u8], d: &[u8]) -> Report {
    let mut r = base_report(InputKind::Csr, input);
    match Csr::parse(d) {
        Ok(c) => {
            r.csr = Some(csr_info(&c));
            let v = csr_verdict(&c).map(|()| {
                format!(
                    "valid CSR{}",
                    if c.null_param() {
                        " (signature algorithm with the nRF91 NULL parameter)"
                    } else {
                        ""
                    }
                )
            });
            set_verdict(&mut r, v);
        }
        Err(e) => set_verdict(
            &mut r,
            Err(Reject::new(
                RejectCode::MalformedCsr,
                format!("not a PKCS#10 CSR: {e}"),
            )),
        ),
    }
    r
}
