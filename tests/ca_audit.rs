//! CA custody and audit log, through the real binary and the library: `ca init/import/show/
//! verify-key`, `audit verify/show/export`, and a tampering matrix on ca.db and on exports.

use nrfca::signer::audit::{self, AuditWriter, ExportFormat};
use nrfca::signer::ca;
use nrfca::signer::secret::{self, Unlock};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{
    age_identity, bin, contains, have_openssl, openssl_in, openssl_p256_key, run, stderr, venv_tool,
};

// ------------------------------------------------------------------ helpers

/// New CA encrypted to a fresh identity, made through the binary. Returns (ca_dir, id file).
fn recipient_ca(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ca_dir = root.join(name);
    let idf = root.join(format!("{name}.agekey"));
    common::ca_init_age(
        &ca_dir,
        &idf,
        "CN=Test Device CA,O=Test",
        &["--days", "365", "--operator", "tester"],
    );
    (ca_dir, idf)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

// ------------------------------------------------------------------ init / unlock

#[test]
fn passphrase_init_refuse_overwrite_lint_wrong_passphrase_leaves_no_plaintext() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let ca_dir = root.path().join("ca");
    let pp = root.path().join("pass.txt");
    common::write_secret(&pp, b"correct horse battery staple\n");
    let bad = root.path().join("bad.txt");
    common::write_secret(&bad, b"wrong\n");

    let o = run(bin().env("TMPDIR", &tmp).args([
        "ca",
        "init",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--subject",
        "CN=Acme Device CA,O=Acme,C=NO",
        "--passphrase-file",
        pp.to_str().unwrap(),
        "--operator",
        "alice",
        "--json",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["subject"], "CN=Acme Device CA,O=Acme,C=NO");
    assert_eq!(info["unlock_with"], "passphrase");
    assert_eq!(info["audit_records"], 2);
    for f in ["ca.pem", "ca.key.age", "ca.db"] {
        assert!(ca_dir.join(f).is_file(), "{f} missing");
    }
    let mode = std::fs::metadata(ca_dir.join("ca.key.age"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_ct = std::fs::read(ca_dir.join("ca.key.age")).unwrap();
    assert!(
        secret::scrypt_log_n(&key_ct).unwrap() >= 18,
        "scrypt work factor below 2^18"
    );

    // Second init refuses and changes nothing.
    let pem_before = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    let o = run(bin().args([
        "ca",
        "init",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--subject",
        "CN=Other",
        "--recipient",
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(ca_dir.join("ca.pem")).unwrap(), pem_before);
    assert_eq!(std::fs::read(ca_dir.join("ca.key.age")).unwrap(), key_ct);

    // External oracles on the certificate.
    if have_openssl() {
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(ca_dir.join("ca.pem"))
            .output()
            .unwrap();
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("Digital Signature"), "{text}");
        assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        assert!(text.contains("Subject Key Identifier"), "{text}");
        assert!(
            text.contains("C = NO, O = Acme, CN = Acme Device CA"),
            "{text}"
        );
    }
    if let Some(lint) = venv_tool("lint_pkix_cert") {
        let o = Command::new(lint)
            .args(["lint", "-s", "WARNING"])
            .arg(ca_dir.join("ca.pem"))
            .output()
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim().is_empty(),
            "pkilint findings: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }

    // Wrong passphrase: exit 2, distinct message, unlock-failed recorded.
    let o = run(bin().env("TMPDIR", &tmp).args([
        "ca",
        "verify-key",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--passphrase-file",
        bad.to_str().unwrap(),
        "--operator",
        "mallory",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("wrong passphrase or identity"),
        "{}",
        stderr(&o)
    );
    // No secret source at all: exit 2 with the SPEC message.
    let o = run(bin().args(["ca", "verify-key", "--ca-dir", ca_dir.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no passphrase"), "{}", stderr(&o));
    // Right passphrase from the environment.
    let o = run(bin()
        .env("TMPDIR", &tmp)
        .env("NRFCA_PASSPHRASE", "correct horse battery staple")
        .args(["ca", "verify-key", "--ca-dir", ca_dir.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));

    let failed = audit::show(
        &ca_dir,
        &audit::Filter {
            event: Some("unlock-failed".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].operator, "mallory");
    let details = failed[0].details.to_string();
    assert!(!details.contains("wrong\\n") && !details.contains("\"wrong\""));
    let report = audit::verify_db(&ca_dir).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 5); // created, checkpoint, failed, unlocked, checkpoint
    assert_eq!(report.unsigned_tail, 0);

    // No plaintext key anywhere: not the PKCS#8, not its base64, not the private scalar.
    let pkcs8 = secret::decrypt(
        &key_ct,
        &Unlock::Passphrase("correct horse battery staple".to_string().into()),
    )
    .unwrap();
    let scalar = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_der(&pkcs8).unwrap().to_bytes()
    };
    let b64 = nrfca::internal::crypto::b64_encode(&pkcs8);
    let mut files = Vec::new();
    files_under(root.path(), &mut files);
    assert!(files.len() >= 5);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, &pkcs8),
            "{} holds the PKCS#8",
            f.display()
        );
        assert!(
            !contains(&bytes, &scalar),
            "{} holds the scalar",
            f.display()
        );
        assert!(
            !contains(&bytes, &b64.as_bytes()[..40]),
            "{} holds the PKCS#8 base64",
            f.display()
        );
    }
}

#[test]
fn recipients_init_and_identity_unlock() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let id1 = root.path().join("one.agekey");
    let id2 = root.path().join("two.agekey");
    let other = root.path().join("other.agekey");
    let (r1, r2) = (age_identity(&id1), age_identity(&id2));
    age_identity(&other);
    let o = run(bin().args([
        "ca",
        "init",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--subject",
        "CN=Two Holders CA",
        "--recipient",
        &r1,
        "--recipient",
        &r2,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(bin().args(["ca", "show", "--ca-dir", ca_dir.to_str().unwrap(), "--json"]));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["unlock_with"], "identity");
    assert!(info["key_protection"].as_str().unwrap().contains(&r1));

    for id in [&id1, &id2] {
        let o = run(bin().args([
            "ca",
            "verify-key",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
        ]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = run(bin().args([
        "ca",
        "verify-key",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--identity",
        other.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("wrong passphrase or identity"));
    // A passphrase on a recipients CA says to use --identity.
    let o = run(bin().env("NRFCA_PASSPHRASE", "whatever").args([
        "ca",
        "verify-key",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--identity"), "{}", stderr(&o));
    // A world-readable identity file is refused.
    std::fs::set_permissions(&id1, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(bin().args([
        "ca",
        "verify-key",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--identity",
        id1.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    let report = audit::verify_db(&ca_dir).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let events: Vec<String> = audit::show(&ca_dir, &Default::default())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        [
            "ca-created",
            "checkpoint",
            "key-unlocked",
            "checkpoint",
            "key-unlocked",
            "checkpoint",
            "unlock-failed",
            "unlock-failed",
            "unlock-failed"
        ]
    );
}

#[test]
fn bad_subjects_and_days_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let r = age_identity(&root.path().join("id"));
    for (subject, days) in [
        ("CN=", "10"),
        ("CN=a,CN=b", "10"),
        ("XX=a", "10"),
        ("CN=a", "0"),
    ] {
        let dir = root.path().join("ca");
        let o = run(bin().args([
            "ca",
            "init",
            "--ca-dir",
            dir.to_str().unwrap(),
            "--subject",
            subject,
            "--days",
            days,
            "--recipient",
            &r,
        ]));
        assert_eq!(o.status.code(), Some(2), "{subject}");
        assert!(!dir.join("ca.pem").exists());
    }
}

// ------------------------------------------------------------------ import

/// A CA shaped like Nordic's create_ca_cert output, made with openssl: SEC1 and PKCS#8 keys.
fn openssl_nordic_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let key = format!("{name}_sec1.pem");
    let p8 = format!("{name}_prv.pem");
    let cert = format!("{name}_ca.pem");
    openssl_p256_key(dir, &key);
    openssl_in(
        dir,
        &["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-out", &p8],
    );
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/C=NO/O=Acme/CN=example.com",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-addext",
            "authorityKeyIdentifier=keyid",
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key), dir.join(p8))
}

fn import(ca_dir: &Path, cert: &Path, key: &Path, recipient: &str) -> Output {
    run(bin().args([
        "ca",
        "import",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--recipient",
        recipient,
        "--json",
    ]))
}

#[test]
fn import_openssl_nordic_style_ca_and_refuse_mismatch() {
    if !have_openssl() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let idf = d.join("id.agekey");
    let r = age_identity(&idf);
    let (cert, sec1, p8) = openssl_nordic_ca(d, "a");
    let (_, other_sec1, _) = openssl_nordic_ca(d, "b");

    // SEC1 key.
    let o = import(&d.join("ca1"), &cert, &sec1, &r);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = info["warnings"].to_string();
    assert!(warnings.contains("pathLenConstraint"), "{warnings}");
    assert!(warnings.contains("keyEncipherment"), "{warnings}");
    // ca.pem carries the very same certificate.
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout)
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(info["fingerprint"], fp);
    let o = run(bin().args([
        "ca",
        "verify-key",
        "--ca-dir",
        d.join("ca1").to_str().unwrap(),
        "--identity",
        idf.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = &audit::show(&d.join("ca1"), &Default::default()).unwrap()[0];
    assert_eq!(first.event, "ca-imported");
    assert!(first.details["warnings"].as_array().unwrap().len() >= 2);
    assert!(audit::verify_db(&d.join("ca1")).unwrap().is_ok());

    // PKCS#8 key.
    let o = import(&d.join("ca2"), &cert, &p8, &r);
    assert!(o.status.success(), "{}", stderr(&o));

    // Key of another CA: refused, nothing written.
    let o = import(&d.join("ca3"), &cert, &other_sec1, &r);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not belong"), "{}", stderr(&o));
    for f in ["ca.pem", "ca.key.age", "ca.db"] {
        assert!(!d.join("ca3").join(f).exists());
    }

    // Not a CA (CA:FALSE) and not P-256: refused.
    openssl_in(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "a_sec1.pem",
            "-sha256",
            "-days",
            "30",
            "-subj",
            "/CN=leaf",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-out",
            "leaf.pem",
        ],
    );
    let o = import(&d.join("ca4"), &d.join("leaf.pem"), &sec1, &r);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a CA"), "{}", stderr(&o));
    openssl_in(
        d,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "p384.pem",
        ],
    );
    openssl_in(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "p384.pem",
            "-sha256",
            "-days",
            "30",
            "-subj",
            "/CN=p384",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-out",
            "p384ca.pem",
        ],
    );
    let o = import(
        &d.join("ca5"),
        &d.join("p384ca.pem"),
        &d.join("p384.pem"),
        &r,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("P-256"), "{}", stderr(&o));

    // An existing CA directory is never overwritten.
    let o = import(&d.join("ca1"), &cert, &sec1, &r);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn import_real_create_ca_cert_output() {
    let Some(tool) = venv_tool("create_ca_cert") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let o = Command::new(tool)
        .args([
            "-p",
            d.join("nordic").to_str().unwrap(),
            "-f",
            "acme-",
            "-o",
            "Acme",
            "--cn",
            "Acme CA",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut cert = None;
    let mut key = None;
    for e in std::fs::read_dir(d.join("nordic")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("_ca.pem") {
            cert = Some(e.path());
        } else if name.ends_with("_prv.pem") {
            key = Some(e.path());
        }
    }
    let r = age_identity(&d.join("id"));
    let o = import(&d.join("ca"), &cert.unwrap(), &key.unwrap(), &r);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(info["warnings"].to_string().contains("empty attribute"));
    assert!(audit::verify_db(&d.join("ca")).unwrap().is_ok());
}

// ------------------------------------------------------------------ tampering

/// A CA with one synthetic batch of `n` issued certificates, recorded like `sign` does:
/// batch-started, n × certificate-issued, batch-committed, checkpoint, in one transaction.
fn ca_with_batch(root: &Path, n: usize) -> PathBuf {
    let (ca_dir, idf) = recipient_ca(root, "ca");
    let unlocked = ca::unlock(&ca_dir, &Unlock::Identity(idf), "tester").unwrap();
    let mut conn = nrfca::internal::signer::db::open(&ca_dir.join("ca.db")).unwrap();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let mut w = AuditWriter::new(&tx, "tester").unwrap();
    tx.execute(
        "INSERT INTO batches(id, started_at, operator, inputs) VALUES ('b1', '2025-01-01T00:00:00Z', 'tester', '[]')",
        [],
    )
    .unwrap();
    w.append(&tx, "batch-started", &json!({"batch": "b1"}))
        .unwrap();
    // Real certificates signed by the CA: `audit verify` compares the DER with its columns.
    let profile = nrfca::internal::signer::issue::IssuerProfile {
        subject_der: unlocked.cert.subject_der.clone(),
        ski: unlocked.cert.ski.clone(),
        not_after: unlocked.cert.not_after,
    };
    let nb = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let na = nb + time::Duration::days(30);
    let (nb_text, na_text) = (
        nrfca::internal::signer::issue::rfc3339(nb),
        nrfca::internal::signer::issue::rfc3339(na),
    );
    for i in 0..n {
        let mut sb = [0u8; 20];
        sb[0] = 0x40;
        sb[19] = i as u8;
        let serial_v = nrfca::internal::signer::issue::Serial(sb);
        let serial = serial_v.to_hex();
        let device = format!("00000000-0000-4000-8000-{:012}", i);
        let keygen = nrfca::internal::crypto::sha256_hex(format!("keygen {i}").as_bytes());
        let public_key = nrfca::internal::crypto::P256Key::generate()
            .unwrap()
            .0
            .public_key();
        let issued = nrfca::internal::signer::issue::issue(
            &profile,
            &nrfca::internal::signer::issue::Issuance {
                device_id: device.clone(),
                public_key,
                serial: serial_v,
                not_before: nb,
                not_after: na,
            },
            |t| unlocked.key.sign_der(t),
        )
        .unwrap();
        let der = issued.der;
        let cert = hex::encode(issued.pem_sha256);
        tx.execute(
            "INSERT INTO certificates(serial, device_id, uuid, sec_tag, public_key, keygen_sha256, cert_sha256, der, not_before, not_after, batch_id, reissue)
             VALUES (?1, ?2, ?2, 16842753, ?3, ?4, ?5, ?6, ?7, ?8, 'b1', 0)",
            params![serial, device, &public_key[..], keygen, cert, der, nb_text, na_text],
        )
        .unwrap();
        w.append(
            &tx,
            "certificate-issued",
            &json!({"batch": "b1", "serial": serial, "device_id": device,
                    "keygen_sha256": keygen, "cert_sha256": cert, "reissue": false,
                    "uuid": device, "imei": null, "sec_tag": 16842753}),
        )
        .unwrap();
    }
    w.append(&tx, "batch-committed", &json!({"batch": "b1", "issued": n}))
        .unwrap();
    w.checkpoint(&tx, &unlocked.key).unwrap();
    drop(w);
    tx.commit().unwrap();
    drop(conn);
    ca_dir
}

fn copy_ca(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Recompute prev_hash/hash of every record from `from` on, as an attacker who knows the
/// format (but not the CA key) would.
fn rechain(conn: &Connection, from: i64) {
    let mut prev: String = conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [from - 1], |r| {
            r.get(0)
        })
        .unwrap_or_else(|_| audit::GENESIS_HASH.to_string());
    let rows: Vec<(i64, String, String, String, String)> = conn
        .prepare(
            "SELECT seq, time, operator, event, details FROM audit WHERE seq >= ?1 ORDER BY seq",
        )
        .unwrap()
        .query_map([from], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (seq, time, op, event, details) in rows {
        let d: Value = serde_json::from_str(&details).unwrap();
        let canon = audit::canonical_record(
            seq as u64,
            &time,
            &op,
            &event,
            &audit::canonical_json(&d),
            &prev,
        );
        let h = audit::chain_hash(&prev, &canon).unwrap();
        conn.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![prev, h, seq],
        )
        .unwrap();
        prev = h;
    }
}

/// Shift records 9.. up by one and insert a forged record 9 correctly chained to record 8.
fn insert_forged(c: &Connection, event: &str, d: Value) {
    c.execute_batch("UPDATE audit SET seq = -(seq + 1) WHERE seq >= 9; UPDATE audit SET seq = -seq WHERE seq < 0;").unwrap();
    let prev: String = c
        .query_row("SELECT hash FROM audit WHERE seq = 8", [], |r| r.get(0))
        .unwrap();
    let t = "2025-01-01T00:00:00.000Z";
    let canon = audit::canonical_record(9, t, "x", event, &audit::canonical_json(&d), &prev);
    let h = audit::chain_hash(&prev, &canon).unwrap();
    c.execute(
        "INSERT INTO audit VALUES (9, ?1, 'x', ?2, ?3, ?4, ?5)",
        params![t, event, audit::canonical_json(&d), prev, h],
    )
    .unwrap();
}

fn first_bad_db(dir: &Path) -> Option<u64> {
    audit::verify_db(dir).unwrap().first_bad.map(|f| f.seq)
}

#[test]
fn tampering_ca_db_is_found_at_the_right_record() {
    let root = tempfile::tempdir().unwrap();
    let base = ca_with_batch(root.path(), 5);
    // Records: 1 ca-created, 2 checkpoint, 3 key-unlocked, 4 checkpoint, 5 batch-started,
    // 6..=10 certificate-issued, 11 batch-committed, 12 checkpoint.
    let report = audit::verify_db(&base).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 12);
    assert_eq!(report.last_checkpoint_seq, 12);

    type Tamper = Box<dyn Fn(&Connection)>;
    let cases: Vec<(&str, Tamper, u64)> = vec![
        (
            "edit details",
            Box::new(|c| {
                c.execute("UPDATE audit SET details = replace(details, '000000000002', '000000000099') WHERE seq = 8", []).unwrap();
            }),
            8,
        ),
        (
            "edit operator",
            Box::new(|c| {
                c.execute("UPDATE audit SET operator = 'nobody' WHERE seq = 5", [])
                    .unwrap();
            }),
            5,
        ),
        (
            "delete middle",
            Box::new(|c| {
                c.execute("DELETE FROM audit WHERE seq = 7", []).unwrap();
            }),
            7,
        ),
        (
            "swap two records",
            Box::new(|c| {
                c.execute_batch(
                    "UPDATE audit SET seq = -7 WHERE seq = 7;
                 UPDATE audit SET seq = 7 WHERE seq = 8;
                 UPDATE audit SET seq = 8 WHERE seq = -7;",
                )
                .unwrap();
            }),
            7,
        ),
        (
            "insert forged certificate-issued (hash chained)",
            Box::new(|c| {
                insert_forged(
                    c,
                    "certificate-issued",
                    json!({"batch":"b1","serial":"ff","device_id":"evil","keygen_sha256":"00","cert_sha256":"00","reissue":false}),
                );
            }),
            9,
        ),
        (
            "insert forged request-rejected (hash chained)",
            Box::new(|c| {
                insert_forged(
                    c,
                    "request-rejected",
                    json!({"batch":"b1","code":"bad-base64"}),
                );
            }),
            10,
        ),
        (
            "truncate tail (last checkpoint gone)",
            Box::new(|c| {
                c.execute("DELETE FROM audit WHERE seq > 9", []).unwrap();
            }),
            10,
        ),
        (
            "edit and rechain (no key)",
            Box::new(|c| {
                c.execute("UPDATE audit SET operator = 'nobody' WHERE seq = 5", [])
                    .unwrap();
                rechain(c, 5);
            }),
            12,
        ),
        (
            "edit issued record and rechain: agreement names it",
            Box::new(|c| {
                c.execute("UPDATE audit SET details = replace(details, '000000000003', '000000000077') WHERE seq = 9", []).unwrap();
                rechain(c, 9);
            }),
            9,
        ),
        (
            "replace checkpoint signature and rechain",
            Box::new(|c| {
                let other: String = c
                    .query_row(
                        "SELECT json_extract(details, '$.signature') FROM audit WHERE seq = 2",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                c.execute(
                    "UPDATE audit SET details = json_set(details, '$.signature', ?1) WHERE seq = 4",
                    [other],
                )
                .unwrap();
                rechain(c, 4);
            }),
            4,
        ),
        (
            "certificate row changed",
            Box::new(|c| {
                c.execute("UPDATE certificates SET cert_sha256 = 'aa' WHERE device_id LIKE '%000000000001'", []).unwrap();
            }),
            7,
        ),
        (
            "certificate bytes changed",
            Box::new(|c| {
                c.execute(
                    "UPDATE certificates SET der = x'3000' WHERE device_id LIKE '%000000000002'",
                    [],
                )
                .unwrap();
            }),
            8,
        ),
        (
            "certificate row deleted",
            Box::new(|c| {
                c.execute(
                    "DELETE FROM certificates WHERE device_id LIKE '%000000000004'",
                    [],
                )
                .unwrap();
            }),
            10,
        ),
        (
            "certificate row added",
            Box::new(|c| {
                c.execute("INSERT INTO certificates(serial, device_id, uuid, sec_tag, public_key, keygen_sha256, cert_sha256, der, not_before, not_after, batch_id) VALUES ('77', 'ghost', 'ghost', 1, x'04', 'k', 'c', x'30', 'a', 'b', 'b1')", []).unwrap();
            }),
            13,
        ),
    ];
    for (i, (name, tamper, expected)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case{i}"));
        copy_ca(&base, &dir);
        {
            let c = Connection::open(dir.join("ca.db")).unwrap();
            tamper(&c);
        }
        assert_eq!(first_bad_db(&dir), Some(*expected), "case {name}");
    }

    // Through the binary: exit 2 naming the record.
    let dir = root.path().join("case0");
    let o = run(bin().args([
        "audit",
        "verify",
        "--ca-dir",
        dir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["first_bad"]["seq"], 8);
    assert!(stderr(&o).contains("record 8"), "{}", stderr(&o));
}

#[test]
fn export_verifies_alone_and_file_tampering_is_found() {
    let root = tempfile::tempdir().unwrap();
    let base = ca_with_batch(root.path(), 4);
    // 1..=4 as above, 5 batch-started, 6..=9 issued, 10 committed, 11 checkpoint.
    let log = root.path().join("audit.jsonl");
    let o = run(bin().args([
        "audit",
        "export",
        "--ca-dir",
        base.to_str().unwrap(),
        "--out",
        log.to_str().unwrap(),
        "--operator",
        "auditor",
        "--json",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["records"], 11);
    assert_eq!(summary["export_record_seq"], 12);
    assert_eq!(
        summary["sha256"],
        nrfca::internal::crypto::sha256_hex(&std::fs::read(&log).unwrap())
    );
    // Never overwrites.
    let o = run(bin().args([
        "audit",
        "export",
        "--ca-dir",
        base.to_str().unwrap(),
        "--out",
        log.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    // The db records the export and still verifies.
    let r = audit::verify_db(&base).unwrap();
    assert!(r.is_ok());
    assert_eq!(r.unsigned_tail, 1);

    let ca_pem = base.join("ca.pem");
    let o = run(bin().args([
        "audit",
        "verify",
        "--file",
        log.to_str().unwrap(),
        "--ca-cert",
        ca_pem.to_str().unwrap(),
        "--json",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["records"], 11);
    assert_eq!(rep["unsigned_tail"], 0);

    // CSV export verifies too.
    let csv_log = root.path().join("audit.csv");
    audit::export(&base, &csv_log, ExportFormat::Csv, "auditor").unwrap();
    let rep = audit::verify_file(&csv_log, &ca_pem).unwrap();
    assert!(rep.is_ok(), "{rep:?}");
    assert_eq!(rep.records, 12);
    assert_eq!(rep.unsigned_tail, 1);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 11);
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let rehash = |line: &str, f: &dyn Fn(&mut Value)| -> String {
        let mut rec: audit::Record = serde_json::from_str(line).unwrap();
        f(&mut rec.details);
        rec.hash = rec.compute_hash().unwrap();
        rec.to_export_json()
    };

    let mut cases: Vec<(&str, String, Option<u64>)> = Vec::new();
    let mut l = lines.clone();
    l[6] = l[6].replace("000000000001", "000000000066");
    cases.push(("edit a line", join(&l), Some(7)));
    let mut l = lines.clone();
    l.remove(5);
    cases.push(("delete a line", join(&l), Some(6)));
    let mut l = lines.clone();
    l.insert(7, lines[6].clone());
    cases.push(("insert a duplicate", join(&l), Some(8)));
    let mut l = lines.clone();
    l.swap(6, 7);
    cases.push(("swap two lines", join(&l), Some(7)));
    let cut = join(&lines);
    cases.push(("cut mid-line", cut[..cut.len() - 30].to_string(), Some(11)));
    let mut l = lines.clone();
    let other_sig =
        serde_json::from_str::<Value>(&lines[1]).unwrap()["details"]["signature"].clone();
    l[3] = rehash(&l[3], &|d| d["signature"] = other_sig.clone());
    cases.push(("replace checkpoint signature (rehashed)", join(&l), Some(4)));
    let mut l = lines.clone();
    l[10] = l[10].replace("\"signature\":\"M", "\"signature\":\"N");
    cases.push(("edit checkpoint signature", join(&l), Some(11)));
    let mut l = lines.clone();
    l[0] = rehash(&l[0], &|d| d["fingerprint"] = json!("00"));
    cases.push(("log of another CA", join(&l), Some(1)));
    // Truncation to whole records inside a batch: the batch's records after the last
    // checkpoint are an uncheckpointed tail (sign always checkpoints its batch), a finding
    // where the missing checkpoint should be.
    cases.push(("truncate to 8 records", join(&lines[..8]), Some(9)));

    for (i, (name, content, expected)) in cases.iter().enumerate() {
        let f = root.path().join(format!("t{i}.jsonl"));
        std::fs::write(&f, content).unwrap();
        let rep = audit::verify_file(&f, &ca_pem).unwrap();
        assert_eq!(
            rep.first_bad.as_ref().map(|b| b.seq),
            *expected,
            "case {name}: {rep:?}"
        );
    }
    let f = root.path().join("t8.jsonl");
    let rep = audit::verify_file(&f, &ca_pem).unwrap();
    assert_eq!(
        (rep.records, rep.last_checkpoint_seq, rep.unsigned_tail),
        (8, 4, 4)
    );

    // Binary on a tampered file: exit 2 with the record named.
    let f = root.path().join("t0.jsonl");
    let o = run(bin().args([
        "audit",
        "verify",
        "--file",
        f.to_str().unwrap(),
        "--ca-cert",
        ca_pem.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("record 7"), "{}", stderr(&o));
}

#[test]
fn audit_show_filters() {
    let root = tempfile::tempdir().unwrap();
    let base = ca_with_batch(root.path(), 3);
    let dev = "00000000-0000-4000-8000-000000000001";
    let o = run(bin().args([
        "audit",
        "show",
        "--ca-dir",
        base.to_str().unwrap(),
        "--device",
        dev,
        "--json",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let recs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["details"]["device_id"], dev);
    let o = run(bin().args([
        "audit",
        "show",
        "--ca-dir",
        base.to_str().unwrap(),
        "--batch",
        "b1",
        "--event",
        "certificate-issued",
        "--csv",
    ]));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.starts_with("seq,time,operator,event,details,prev_hash,hash\n"));
    let o = run(bin().args([
        "audit",
        "show",
        "--ca-dir",
        base.to_str().unwrap(),
        "--since",
        "2999-01-01",
        "--json",
    ]));
    let recs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(recs.is_empty());
    let o = run(bin().args([
        "audit",
        "show",
        "--ca-dir",
        base.to_str().unwrap(),
        "--until",
        "2000-01-01T00:00:00Z",
        "--json",
    ]));
    let recs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(recs.is_empty());
    let o = run(bin().args(["audit", "show", "--ca-dir", base.to_str().unwrap()]));
    assert!(o.status.success());
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(
        table.contains("certificate-issued") && table.contains("SEQ"),
        "{table}"
    );
    let o = run(bin().args([
        "audit",
        "show",
        "--ca-dir",
        base.to_str().unwrap(),
        "--since",
        "yesterday",
    ]));
    assert_eq!(o.status.code(), Some(2));
}

// ------------------------------------------------------------ Hardening II (issue 10)

/// A file name carrying terminal control sequences (title-setting OSC, BEL, CR).
const EVIL_NAME: &str = "req\u{1b}]0;pwned\u{7}\rX.csv";

/// A CA with one batch really signed by `sign`: 3 good requests and one junk line, read
/// from a requests file whose name holds terminal escapes. Returns (tempdir, ca_dir, batch).
fn signed_ca() -> (tempfile::TempDir, PathBuf, String) {
    use nrfca::signer::sign::{self, SignOptions};
    use nrfca::sim::generate::{write_requests, BatchOptions};
    let root = tempfile::tempdir().unwrap();
    let (ca_dir, idf) = recipient_ca(root.path(), "ca");
    let mut buf = Vec::new();
    write_requests(
        &mut buf,
        &BatchOptions {
            count: 3,
            ..BatchOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    buf.extend_from_slice(b"not-a-keygen-string\n");
    let input = root.path().join(EVIL_NAME);
    std::fs::write(&input, buf).unwrap();
    let mut opts = SignOptions::new(root.path().join("out"), vec![input], "alice".into());
    opts.days = 30; // the test CA lives 365 days
    let r = sign::sign(&ca_dir, &Unlock::Identity(idf), &opts, &mut |_| {}).unwrap();
    assert_eq!((r.issued, r.rejected), (3, 1));
    (root, ca_dir, r.batch)
}

/// Item 3: `audit report` and `ca show` state what the chained records say, whatever the
/// unchained `batches` and `rejects` tables were edited to.
#[test]
fn report_and_ca_show_ignore_edited_batches_and_rejects_tables() {
    use nrfca::signer::report;
    let (_root, ca_dir, batch) = signed_ca();
    let before = report::batch_report(&ca_dir, None).unwrap();
    let show_before = ca::show(&ca_dir).unwrap();
    assert!(before.audit.verified, "{:?}", before.audit.first_bad);
    assert_eq!(before.operator, "alice");
    {
        let c = Connection::open(ca_dir.join("ca.db")).unwrap();
        c.execute_batch(
            "UPDATE batches SET operator = 'mallory', started_at = '2001-01-01T00:00:00Z',
                 committed_at = '2001-01-01T00:00:01Z',
                 inputs = '[{\"name\":\"forged.csv\",\"sha256\":\"00\"}]',
                 issued = 999, returned = 7, rejected = 0;
             DELETE FROM rejects;
             INSERT INTO batches(id, started_at, committed_at, operator, inputs, issued)
                 VALUES ('ffffffffffffffffffffffffffffffff', '2999-01-01T00:00:00Z',
                         '2999-01-01T00:00:00Z', 'mallory', '[]', 5);
             INSERT INTO rejects(batch_id, source, line, code, detail)
                 VALUES ('ffffffffffffffffffffffffffffffff', 'x', 1, 'bad-base64', 'x');",
        )
        .unwrap();
    }
    let after = report::batch_report(&ca_dir, None).unwrap();
    assert_eq!(after.batch, batch, "the latest batch comes from the chain");
    assert_eq!(after.operator, "alice");
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(after.committed_at, before.committed_at);
    assert_eq!(after.inputs, before.inputs);
    assert_eq!(after.inputs.len(), 1);
    assert_eq!(
        (
            after.counts.requests,
            after.counts.issued,
            after.counts.returned,
            after.counts.rejected
        ),
        (4, 3, 0, 1)
    );
    assert_eq!(after.rejects.len(), 1);
    assert_eq!(after.rejects_by_code, before.rejects_by_code);
    assert!(after.audit.verified, "{:?}", after.audit.first_bad);
    let list = report::list_batches(&ca_dir).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].operator.as_str(), list[0].issued), ("alice", 3));
    assert!(matches!(
        report::batch_report(&ca_dir, Some("ffffffffffffffffffffffffffffffff")),
        Err(report::ReportError::UnknownBatch(_))
    ));
    let show = ca::show(&ca_dir).unwrap();
    assert_eq!(
        (show.issued, show.rejected, show.batches),
        (
            show_before.issued,
            show_before.rejected,
            show_before.batches
        )
    );
    assert_eq!((show.issued, show.rejected, show.batches), (3, 1, 1));
}

/// Item 3: every certificate column `audit verify` did not check (imei, uuid, public key,
/// sec_tag, validity, CN, serial) is now checked against the DER or `certificate-issued`.
#[test]
fn audit_verify_checks_every_certificate_column() {
    let (root, ca_dir, _) = signed_ca();
    assert!(audit::verify_db(&ca_dir).unwrap().is_ok());
    let cases = [
        ("imei", "UPDATE certificates SET imei = '352656100000001' WHERE rowid = 1"),
        ("uuid", "UPDATE certificates SET uuid = '00000000-0000-4000-8000-000000000000' WHERE rowid = 1"),
        ("sec_tag", "UPDATE certificates SET sec_tag = 7 WHERE rowid = 1"),
        ("public_key", "UPDATE certificates SET public_key = (SELECT public_key FROM certificates WHERE rowid = 2) WHERE rowid = 1"),
        ("not_after", "UPDATE certificates SET not_after = '2999-01-01T00:00:00Z' WHERE rowid = 1"),
        ("not_before", "UPDATE certificates SET not_before = '2000-01-01T00:00:00Z' WHERE rowid = 1"),
    ];
    for (i, (column, sql)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("col{i}"));
        copy_ca(&ca_dir, &dir);
        Connection::open(dir.join("ca.db"))
            .unwrap()
            .execute(sql, [])
            .unwrap();
        let r = audit::verify_db(&dir).unwrap();
        let bad = r
            .first_bad
            .unwrap_or_else(|| panic!("{column} edit verified intact"));
        assert!(bad.problem.contains(column), "{column}: {}", bad.problem);
    }
}

fn export_jsonl(ca_dir: &Path, out: &Path) -> Vec<String> {
    audit::export(ca_dir, out, ExportFormat::Jsonl, "auditor").unwrap();
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn verify_file_cli(log: &Path, ca_pem: &Path) -> Output {
    run(bin().args([
        "audit",
        "verify",
        "--file",
        log.to_str().unwrap(),
        "--ca-cert",
        ca_pem.to_str().unwrap(),
    ]))
}

/// Item 4: a tail cut together with ca.db's checkpoint note, and an export cut after a
/// checkpoint with a made-up (correctly hashed) batch appended, no longer verify intact;
/// real exports (with `audit-exported` records after the last checkpoint) still do.
#[test]
fn truncated_tail_and_fabricated_export_tail_are_found() {
    let (root, ca_dir, batch) = signed_ca();
    let ca_pem = ca_dir.join("ca.pem");
    // Two real exports: the second holds the first's audit-exported record, unsigned.
    export_jsonl(&ca_dir, &root.path().join("e1.jsonl"));
    let lines = export_jsonl(&ca_dir, &root.path().join("e2.jsonl"));
    for f in ["e1.jsonl", "e2.jsonl"] {
        let o = verify_file_cli(&root.path().join(f), &ca_pem);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
    }
    let recs: Vec<audit::Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The checkpoint right after batch-committed: cut there (the bundle-written record and
    // its checkpoint gone).
    let committed = recs
        .iter()
        .position(|r| r.event == "batch-committed")
        .unwrap();
    assert_eq!(recs[committed + 1].event, "checkpoint");
    let cut = committed + 2;

    // ca.db: delete the tail and the meta note with it.
    let dir = root.path().join("cut");
    copy_ca(&ca_dir, &dir);
    Connection::open(dir.join("ca.db"))
        .unwrap()
        .execute_batch(&format!(
            "DELETE FROM audit WHERE seq > {cut}; DELETE FROM meta WHERE key = 'audit_checkpoint';"
        ))
        .unwrap();
    let o = run(bin().args(["audit", "verify", "--ca-dir", dir.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no note of its last checkpoint"),
        "{}",
        stderr(&o)
    );

    // Export: cut after the checkpoint, append a fabricated batch with correct hashes.
    let mut fake: Vec<String> = lines[..cut].to_vec();
    let mut prev = recs[cut - 1].hash.clone();
    for (i, (event, details)) in [
        ("batch-started", json!({"batch": "f00d"})),
        (
            "certificate-issued",
            json!({"batch": "f00d", "serial": "42", "device_id": "evil",
            "keygen_sha256": "00", "cert_sha256": "00", "reissue": false}),
        ),
        ("batch-committed", json!({"batch": "f00d", "issued": 1})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = audit::Record {
            seq: (cut + 1 + i) as u64,
            time: recs[cut - 1].time.clone(),
            operator: "mallory".into(),
            event: event.into(),
            details,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        r.hash = r.compute_hash().unwrap();
        prev = r.hash.clone();
        fake.push(r.to_export_json());
    }
    let f = root.path().join("fake.jsonl");
    std::fs::write(
        &f,
        fake.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let o = verify_file_cli(&f, &ca_pem);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("uncheckpointed tail"), "{}", stderr(&o));
    let _ = batch;
}

/// Item 8: a JSONL line with a duplicate key spliced in front of the real one hashes like
/// the real record but says something else to a first-key reader: refused. The same for a
/// CSV row whose details are not canonical.
#[test]
fn audit_verify_file_refuses_non_canonical_lines() {
    let (root, ca_dir, _) = signed_ca();
    let ca_pem = ca_dir.join("ca.pem");
    let lines = export_jsonl(&ca_dir, &root.path().join("e.jsonl"));
    let i = lines
        .iter()
        .position(|l| l.contains("\"event\":\"certificate-issued\""))
        .unwrap();
    let mut l = lines.clone();
    l[i] = l[i].replacen("\"details\":{", "\"details\":{\"serial\":\"0666\",", 1);
    assert_ne!(l[i], lines[i]);
    let f = root.path().join("dup.jsonl");
    std::fs::write(&f, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
    let o = verify_file_cli(&f, &ca_pem);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("record {}", i + 1)),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("canonical"), "{}", stderr(&o));

    let csv = root.path().join("e.csv");
    audit::export(&ca_dir, &csv, ExportFormat::Csv, "auditor").unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(verify_file_cli(&csv, &ca_pem).status.success());
    let spliced = text.replacen(
        "\"{\"\"batch\"\":",
        "\"{\"\"serial\"\":\"\"0666\"\",\"\"batch\"\":",
        1,
    );
    assert_ne!(spliced, text);
    let f = root.path().join("dup.csv");
    std::fs::write(&f, spliced).unwrap();
    let o = verify_file_cli(&f, &ca_pem);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("canonical"), "{}", stderr(&o));
}

/// Item 10: an empty file, a CSV header alone, and a log without its CA checkpoint are not
/// valid exports (the flaky property shrank to exactly these).
#[test]
fn empty_and_header_only_logs_are_not_valid_exports() {
    let (root, ca_dir, _) = signed_ca();
    let ca_pem = ca_dir.join("ca.pem");
    let lines = export_jsonl(&ca_dir, &root.path().join("e.jsonl"));
    for (name, content) in [
        ("empty.jsonl", String::new()),
        (
            "header.csv",
            "seq,time,operator,event,details,prev_hash,hash\n".to_string(),
        ),
        ("first-record-only.jsonl", format!("{}\n", lines[0])),
    ] {
        let f = root.path().join(name);
        std::fs::write(&f, content).unwrap();
        let o = verify_file_cli(&f, &ca_pem);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("TAMPERED or damaged at record"),
            "{name}: {}",
            stderr(&o)
        );
    }
}

/// Terminal escaping: a requests file name with ESC/BEL/CR reaches `audit show` and
/// `audit report` (text) only escaped.
#[test]
fn audit_show_and_report_escape_terminal_control_characters() {
    let (_root, ca_dir, _) = signed_ca();
    for args in [
        vec!["audit", "show", "--ca-dir"],
        vec!["audit", "report", "--ca-dir"],
        vec!["audit", "report", "--list", "--ca-dir"],
    ] {
        let o = run(bin().args(&args).arg(&ca_dir));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a raw control character: {out:?}"
        );
    }
    let o = run(bin().args(["audit", "show", "--ca-dir"]).arg(&ca_dir));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("req\\x1b]0;pwned\\x07\\rX.csv"), "{out}");
}
