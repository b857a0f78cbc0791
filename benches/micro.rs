//! Micro-benchmarks of two pieces of `sign`, measured, never asserted:
//! `cargo bench --bench micro`. The whole-batch benchmark against the Python peer and the
//! machine's ECDSA limit is `scripts/bench.sh` (docs/performance.md).
//!
//! - KEYGEN check (parse + CSR signature verify): µs per request on one core, requests/s on
//!   all cores, parse alone, and a bare ring verify (the floor).
//! - Audit log: 100 000 appends in one transaction, then a full verify.

use std::time::Instant;

use nrfca::crypto;
use nrfca::keygen::{self, check, CheckOptions};
use nrfca::signer::audit::{self, AuditWriter};
use nrfca::signer::ca::{self, InitOptions};
use nrfca::signer::secret::{Protection, Unlock};
use nrfca::sim::generate::{GenOptions, ModemIdentity};

fn keygen_check() {
    let m = ModemIdentity::random().expect("modem identity");
    let n: usize = 20_000;
    let strings: Vec<String> = (0..n)
        .map(|_| {
            m.keygen(keygen::DEFAULT_SEC_TAG, &GenOptions::default())
                .expect("keygen")
                .keygen
        })
        .collect();
    let o = CheckOptions::default();
    let t = Instant::now();
    for s in &strings {
        check(s, &o).expect("check");
    }
    let one = t.elapsed();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    std::thread::scope(|sc| {
        for chunk in strings.chunks(n.div_ceil(threads)) {
            let o = &o;
            sc.spawn(move || {
                for s in chunk {
                    check(s, o).expect("check");
                }
            });
        }
    });
    let all = t.elapsed();
    let t = Instant::now();
    for s in &strings {
        keygen::parse(s).expect("parse");
    }
    let parse_only = t.elapsed();
    let csrs: Vec<(Vec<u8>, [u8; 65])> = strings
        .iter()
        .map(|s| {
            let v = check(s, &o).expect("check");
            (v.csr_der, v.public_key)
        })
        .collect();
    let t = Instant::now();
    for (d, k) in &csrs {
        let c = keygen::Csr::parse(d).expect("csr");
        assert!(crypto::verify_p256_sha256(k, c.info, c.signature));
    }
    let verify_only = t.elapsed();
    println!(
        "keygen check: {:.1} µs/request on one core ({:.0}/s); {:.0}/s on {threads} threads; \
         parse only {:.2} µs; bare ring verify {:.1} µs",
        one.as_secs_f64() * 1e6 / n as f64,
        n as f64 / one.as_secs_f64(),
        n as f64 / all.as_secs_f64(),
        parse_only.as_secs_f64() * 1e6 / n as f64,
        verify_only.as_secs_f64() * 1e6 / n as f64
    );
}

fn audit_append() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca_dir = root.path().join("ca");
    let pass = || age::secrecy::SecretString::from("bench passphrase".to_string());
    ca::init(
        &ca_dir,
        &InitOptions {
            subject: "CN=Bench CA".into(),
            days: 365,
            protection: Protection::Passphrase(pass()),
            operator: "bench".into(),
        },
    )
    .expect("ca init");
    let unlocked = ca::unlock(&ca_dir, &Unlock::Passphrase(pass()), "bench").expect("unlock");
    let mut conn = nrfca::signer::db::open(&ca_dir.join("ca.db")).expect("ca.db");
    let n = 100_000;
    let t = Instant::now();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("transaction");
    let mut w = AuditWriter::new(&tx, "bench").expect("writer");
    for i in 0..n {
        let h = crypto::sha256_hex(&(i as u64).to_le_bytes());
        let details = audit::Details::with_capacity(320)
            .str("batch", "b1")
            .str("cert_sha256", &h)
            .str("device_id", &format!("00000000-0000-4000-8000-{i:012}"))
            .str("keygen_sha256", &h)
            .bool("reissue", false)
            .str("serial", &h[..40])
            .finish();
        w.append_canonical(&tx, "certificate-issued", &details)
            .expect("append");
    }
    w.checkpoint(&tx, &unlocked.key).expect("checkpoint");
    drop(w);
    tx.commit().expect("commit");
    let append = t.elapsed();
    let t = Instant::now();
    let report = audit::verify_conn(&conn, &unlocked.cert.public_key, &unlocked.cert.fingerprint)
        .expect("verify");
    let verify = t.elapsed();
    println!(
        "audit: {n} appends + commit {append:?} ({:.1} µs each); verify {} records {verify:?}",
        append.as_secs_f64() * 1e6 / n as f64,
        report.records
    );
}

fn main() {
    keygen_check();
    audit_append();
}
