//! CBOR and COSE: `cbor::decode` (+ diagnostic notation), `cose::parse_sign1`,
//! `parse_keygen_payload`, `parse_attest_payload`, `decode_sec_tag`, `keygen::parse_attestation`.
//! Properties: never panics; decoded payloads re-encode to bytes that decode to the same value;
//! `diag` output stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::internal::keygen::{cbor, cose};
use nrfca::keygen;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = cbor::decode(data) {
        let d = v.diag(200);
        assert!(d.len() <= 200 + 4, "diag not bounded: {} bytes", d.len());
        let _ = v.kind();
        let _ = v.as_int();
    }
    // Item-at-a-time reading, as the COSE code does.
    let mut r = cbor::Reader::new(data);
    for _ in 0..64 {
        if r.value().is_err() || r.is_empty() {
            break;
        }
    }
    if let Ok(c) = cose::parse_sign1(data) {
        let _ = c.alg_name();
        let _ = c.kid_name();
        assert!(!c.signature.is_empty() && c.signature.len() <= 132);
    }
    if let Ok(p) = cose::parse_keygen_payload(data) {
        let again = cose::keygen_payload(p.msg_type, &p.uuid, p.sec_tag, &p.digest, &p.nonce);
        assert_eq!(cose::parse_keygen_payload(&again).as_ref(), Ok(&p));
    }
    if let Ok(p) = cose::parse_attest_payload(data) {
        if p.msg_type == cose::MSG_TYPE_IDENTITY {
            let again = cose::attest_payload(&p.uuid, p.device_type, &p.fw_uuid, &p.nonce);
            assert_eq!(cose::parse_attest_payload(&again).as_ref(), Ok(&p));
        }
        let _ = cose::device_type_name(p.device_type);
    }
    if let Ok(t) = cose::decode_sec_tag(data) {
        assert_eq!(cose::decode_sec_tag(&cose::encode_sec_tag(t)), Ok(t));
    }
    let _ = keygen::parse_attestation(data);
});
