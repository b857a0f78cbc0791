//! `ring` beside `aws-lc-rs` for what `sign` spends its CPU on: P-256 ECDSA-SHA256 sign (one
//! per certificate) and verify (one per CSR), measured, never asserted:
//! `cargo bench --bench ecdsa`. Numbers and the decision are in docs/performance.md.

use std::time::Instant;

const N: usize = 20_000;

fn per(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6 / N as f64
}

fn ring_numbers(msg: &[u8]) -> (f64, f64) {
    use ring::rand::SystemRandom;
    use ring::signature::{self as rs, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let alg = &rs::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..N {
        sig = key.sign(&rng, msg).expect("sign").as_ref().to_vec();
    }
    let sign = per(t.elapsed());
    let pk = rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    let t = Instant::now();
    for _ in 0..N {
        pk.verify(msg, &sig).expect("verify");
    }
    (sign, per(t.elapsed()))
}

fn aws_lc_numbers(msg: &[u8]) -> (f64, f64) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self as rs, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let alg = &rs::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("key");
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..N {
        sig = key.sign(&rng, msg).expect("sign").as_ref().to_vec();
    }
    let sign = per(t.elapsed());
    let pk = rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    let t = Instant::now();
    for _ in 0..N {
        pk.verify(msg, &sig).expect("verify");
    }
    (sign, per(t.elapsed()))
}

fn main() {
    // About the size of a device certificate's TBSCertificate.
    let msg = vec![0x5a_u8; 420];
    for round in 1..=3 {
        let (rs, rv) = ring_numbers(&msg);
        let (aws, awv) = aws_lc_numbers(&msg);
        println!(
            "round {round}: sign ring {rs:.1} µs, aws-lc-rs {aws:.1} µs ({:+.1}%); \
             verify ring {rv:.1} µs, aws-lc-rs {awv:.1} µs ({:+.1}%)",
            (aws - rs) / rs * 100.0,
            (awv - rv) / rv * 100.0
        );
    }
}
