//! Tests of `nrfca inspect` on generated and real inputs.

use super::*;
use crate::sim::generate::{GenOptions, ModemIdentity};

const SEED: &str = crate::util::SEED_KEYGEN_FOR_TESTS;

#[test]
fn seed_keygen() {
    let r = inspect(SEED.as_bytes(), &InspectOptions::default());
    assert_eq!(r.kind, InputKind::Keygen);
    assert!(r.valid, "{}", r.detail);
    let k = r.keygen.unwrap();
    assert_eq!(
        k.uuid.as_deref(),
        Some("50503041-3539-47eb-807b-102dbb423b9a")
    );
    assert_eq!(k.digest_ok, Some(true));
    let c = k.csr.unwrap();
    assert!(c.null_param && c.signature_ok);
    assert_eq!(c.requested_extensions[0].name, "keyUsage");
    assert_eq!(
        c.requested_extensions[0].value,
        "digitalSignature, nonRepudiation, keyEncipherment, keyAgreement"
    );
    let text = render_text(&inspect(SEED.as_bytes(), &InspectOptions::default()));
    assert!(text.contains("verdict: OK"), "{text}");
    assert!(text.contains("NULL parameter"), "{text}");
    let wrapped = format!("%KEYGEN: \"{SEED}\"\n");
    assert!(inspect(wrapped.as_bytes(), &InspectOptions::default()).valid);
}

#[test]
fn attesttoken_and_requests() {
    let m = ModemIdentity::random().unwrap();
    let t = m.attesttoken(None, 3, [1; 16]).unwrap();
    let r = inspect(t.as_bytes(), &InspectOptions::default());
    assert_eq!(r.kind, InputKind::Attesttoken);
    assert!(r.valid, "{}", r.detail);
    assert_eq!(r.attesttoken.unwrap().uuid, m.uuid_string());

    let g1 = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
    let g2 = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
    let lines = format!("# comment\n{SEED}\n\n{g1}\n{g2}\nnot-a-keygen\n");
    let r = inspect(lines.as_bytes(), &InspectOptions::default());
    assert_eq!(r.kind, InputKind::Requests);
    assert!(!r.valid);
    let q = r.requests.unwrap();
    assert_eq!(q.total, 4);
    assert_eq!(q.ok, 2);
    assert_eq!(q.items[2].verdict, "duplicate-in-batch");
    assert_eq!(q.items[2].line, 5);
    assert_eq!(q.items[3].verdict, "missing-attestation");
}

#[test]
fn csr_pem_and_der() {
    let p = keygen::parse(SEED).unwrap();
    let r = inspect(&p.der, &InspectOptions::default());
    assert_eq!(r.kind, InputKind::Csr);
    assert!(r.valid);
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        crypto::b64_encode(&p.der)
    );
    let r = inspect(pem.as_bytes(), &InspectOptions::default());
    assert!(r.valid);
    let mut bad = p.der.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let r = inspect(&bad, &InspectOptions::default());
    assert_eq!(r.code.as_deref(), Some("bad-csr-signature"));
}

proptest::proptest! {
    #[test]
    fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = inspect(&data, &InspectOptions::default());
        let mut d = data.clone();
        d.insert(0, 0x30);
        let _ = inspect(&d, &InspectOptions::default());
    }

    #[test]
    fn never_panics_text(s in "(-----BEGIN CERTIFICATE-----\n)?[A-Za-z0-9+/=\n.%:\" -]{0,300}") {
        let _ = inspect(s.as_bytes(), &InspectOptions::default());
    }
}
