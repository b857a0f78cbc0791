//! Micro-benchmarks of two pieces of `sign`, measured, never asserted:
//! `cargo bench --bench micro`. The whole-batch benchmark against the Python peer and the
//! machine's ECDSA limit is `scripts/bench.sh` (docs/performance.md).
//!
//! - KEYGEN check (parse + CSR signature verify): µs per request on one core, requests/s on
//!   all cores, parse alone, and a bare ring verify (the floor).
//! - Audit log: 100 000 appends in one transaction, then a full verify.
//! - Device certificate: the hand TBS template (`issue::build_tbs`) against the same bytes
//!   from `x509-cert`'s types (`issue::build_tbs_x509_cert`), alone and with the CA signature.

use std::str::FromStr;
use std::time::Instant;

use nrfca::internal::crypto;
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
    let t = Instant::now();
    for (d, _) in &csrs {
        std::hint::black_box(keygen::Csr::parse(d).expect("csr"));
    }
    let csr_ours = t.elapsed();
    let t = Instant::now();
    for (d, _) in &csrs {
        use der::{Decode, Encode};
        let c = x509_cert::request::CertReq::from_der(d).expect("csr");
        std::hint::black_box(c.info.to_der().expect("info"));
    }
    let csr_crate = t.elapsed();
    println!(
        "keygen check: {:.1} µs/request on one core ({:.0}/s); {:.0}/s on {threads} threads; \
         parse only {:.2} µs; bare ring verify {:.1} µs; CSR alone: keygen::Csr {:.2} µs, \
         x509-cert CertReq + info re-encoded {:.2} µs",
        one.as_secs_f64() * 1e6 / n as f64,
        n as f64 / one.as_secs_f64(),
        n as f64 / all.as_secs_f64(),
        parse_only.as_secs_f64() * 1e6 / n as f64,
        verify_only.as_secs_f64() * 1e6 / n as f64,
        csr_ours.as_secs_f64() * 1e6 / n as f64,
        csr_crate.as_secs_f64() * 1e6 / n as f64
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
    let mut conn = nrfca::internal::signer::db::open(&ca_dir.join("ca.db")).expect("ca.db");
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

fn device_certificate() {
    use nrfca::internal::crypto::P256Key;
    use nrfca::internal::signer::issue::{self, Issuance, IssuerProfile, Serial};
    use time::OffsetDateTime;
    let (ca_key, _) = P256Key::generate().expect("ca key");
    let ca_name =
        x509_cert::name::Name::from_str("CN=nrfca Bench CA,O=Example,C=NO").expect("name");
    let ca = IssuerProfile {
        subject_der: der::Encode::to_der(&ca_name).expect("name der"),
        ski: issue::key_identifier(&ca_key.public_key()).to_vec(),
        not_after: OffsetDateTime::now_utc() + time::Duration::days(7300),
    };
    let (dev, _) = P256Key::generate().expect("device key");
    let nb = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let n = 20_000;
    let items: Vec<Issuance> = (0..n)
        .map(|_| Issuance {
            device_id: ModemIdentity::random().expect("id").uuid_string(),
            public_key: dev.public_key(),
            serial: Serial::random().expect("serial"),
            not_before: nb,
            not_after: nb + time::Duration::days(3650),
        })
        .collect();
    for i in items.iter().take(100) {
        assert_eq!(
            issue::build_tbs(&ca, i).expect("tbs"),
            issue::build_tbs_x509_cert(&ca, i).expect("tbs")
        );
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for i in &items {
        std::hint::black_box(issue::build_tbs(&ca, i).expect("tbs"));
    }
    let hand = per(t.elapsed());
    let t = Instant::now();
    for i in &items {
        std::hint::black_box(issue::build_tbs_x509_cert(&ca, i).expect("tbs"));
    }
    let crate_tbs = per(t.elapsed());
    let t = Instant::now();
    for i in &items {
        std::hint::black_box(issue::issue(&ca, i, |t| ca_key.sign_der(t)).expect("issue"));
    }
    let hand_full = per(t.elapsed());
    let t = Instant::now();
    for i in &items {
        let tbs = issue::build_tbs_x509_cert(&ca, i).expect("tbs");
        let sig = ca_key.sign_der(&tbs).expect("sign");
        let der = issue::assemble(&tbs, &sig);
        let pem = nrfca::internal::util::pem_encode("CERTIFICATE", &der);
        std::hint::black_box(crypto::sha256(pem.as_bytes()));
    }
    let crate_full = per(t.elapsed());
    println!(
        "device certificate TBS: hand template {hand:.2} µs, x509-cert {crate_tbs:.2} µs; \
         TBS + sign + PEM: hand {hand_full:.1} µs, x509-cert {crate_full:.1} µs \
         ({:+.1}% per certificate)",
        (crate_full - hand_full) / hand_full * 100.0
    );
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().map_or(true, |o| name.contains(o));
    if run("keygen") {
        keygen_check();
    }
    if run("audit") {
        audit_append();
    }
    if run("certificate") {
        device_certificate();
    }
}
