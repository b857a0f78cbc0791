//! DER and PKCS#10: `tlv::parse_one` (walked recursively to the depth limit), `Csr::parse`
//! and its accessors, `Spki::parse`, `parse_name_der`, `oid_string`, `inspect::inspect_csr`.
//! Properties: never panics; TLV ranges are byte-exact (raw = header + value, reparse equal);
//! a parsed CSR's `info` is a sub-slice of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::internal::keygen::{csr, tlv};

fn walk(t: tlv::Tlv<'_>, depth: usize) {
    assert!(t.raw.ends_with(t.value));
    assert_eq!(tlv::parse_one(t.raw), Ok(t));
    if depth >= tlv::MAX_DEPTH || t.tag & 0x20 == 0 {
        return;
    }
    let mut r = t.children();
    while let Ok(c) = r.read() {
        walk(c, depth + 1);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = tlv::parse_one(data) {
        walk(t, 0);
    }
    if let Ok(c) = csr::Csr::parse(data) {
        let range = data.as_ptr_range();
        assert!(range.contains(&c.info.as_ptr()));
        let _ = c.null_param();
        let _ = c.is_ecdsa_sha256();
        let _ = c.common_names();
        let _ = c.requested_extensions();
        let _ = c.spki.p256_point();
        let _ = c.spki.describe();
        let _ = csr::name_to_string(&c.subject);
        let _ = csr::oid_name(c.sig_alg_oid);
        let info = nrfca::inspect::csr_info(&c);
        let _ = serde_json::to_string(&info);
    }
    let _ = csr::Spki::parse(data).map(|s| s.describe());
    if let Ok(n) = csr::parse_name_der(data) {
        assert!(n.len() <= csr::MAX_SUBJECT_ATTRS);
        let _ = csr::name_to_string(&n);
    }
    if let Some(s) = tlv::oid_string(data) {
        assert!(s.split('.').count() >= 2);
    }
    let r = nrfca::inspect::inspect_csr(data, data);
    let _ = nrfca::inspect::render_text(&r);
});
