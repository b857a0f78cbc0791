//! The signer side of evidence (SPEC §10, §11), through the binary: trusted benches and their
//! signed requests files, `--unsigned`, `--expect`, the Merkle checkpoint in every bundle
//! (checked with openssl and the independent Python verifier), and a rolled-back or truncated
//! `ca.db` caught at `sign` and by `audit verify --checkpoint`.

mod common;

use common::{bin_plain, explain, have_openssl, openssl_in, venv_tool, AgeCa, TAG};
use nrfca::checkpoint::{Checkpoint, ProofFile, SignedCheckpoint};
use nrfca::internal::bench::identity::BenchIdentity;
use nrfca::sim::generate::{GenOptions, ModemIdentity};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What the evidence tests add to `common::AgeCa`.
trait EvidenceCa {
    fn fingerprint(&self) -> String;
    fn trust(&self, b: &BenchIdentity);
    fn bench(&self, name: &str) -> BenchIdentity;
    fn bundle_checkpoint(&self, out: &str) -> Checkpoint;
}

impl EvidenceCa for AgeCa {
    fn fingerprint(&self) -> String {
        let pem = fs::read_to_string(self.dir.join("ca.pem")).unwrap();
        nrfca::internal::crypto::sha256_hex(&nrfca::internal::util::first_cert_der(&pem).unwrap())
    }

    fn trust(&self, b: &BenchIdentity) {
        let pem = self.path(&format!("{}.pem", b.name()));
        fs::write(&pem, b.public_pem()).unwrap();
        let o = self.with_key(&[
            "ca",
            "trust-bench",
            "--name",
            b.name(),
            "--key",
            pem.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", explain(&o));
    }

    fn bench(&self, name: &str) -> BenchIdentity {
        BenchIdentity::create(&self.path(&format!("state-{name}")), name).unwrap()
    }

    fn bundle_checkpoint(&self, out: &str) -> Checkpoint {
        Checkpoint::parse(&fs::read(self.path(out).join("checkpoint")).unwrap()).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A requests CSV of `n` fresh devices, rows naming `bench`; returns the bytes and the UUIDs.
fn requests(n: usize, bench: &str) -> (String, Vec<String>) {
    let mut s = format!("{}\n", nrfca::requests::HEADER);
    let mut uuids = Vec::new();
    for _ in 0..n {
        let m = ModemIdentity::random().unwrap();
        let k = m.keygen(TAG, &GenOptions::default()).unwrap().keygen;
        s.push_str(&format!(
            "{},,{TAG},{k},mfw_nrf9160_1.3.7,nRF9160-SICA,{bench},/dev/ttyACM0,2025-06-01T10:00:00Z\n",
            m.uuid_string()
        ));
        uuids.push(m.uuid_string());
    }
    (s, uuids)
}

/// Write `name` with `text` and, signed by `b` quoting `checkpoints`, `name.sig`.
fn signed_input(
    ca: &AgeCa,
    name: &str,
    text: &str,
    b: &BenchIdentity,
    checkpoints: Vec<Checkpoint>,
) -> PathBuf {
    let p = ca.path(name);
    fs::write(&p, text).unwrap();
    let sig = b.sign_statement(text.as_bytes(), checkpoints).unwrap();
    fs::write(nrfca::provenance::sig_path_for(&p), sig).unwrap();
    p
}

fn refused(o: &Output, words: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", explain(o));
    assert!(
        stderr(o).contains(words),
        "expected {words:?}: {}",
        explain(o)
    );
}

fn last_refusal_code(ca: &AgeCa) -> String {
    ca.db()
        .query_row(
            "SELECT json_extract(details, '$.code') FROM audit WHERE event = 'input-refused' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// The bundle's checkpoint: signature with openssl (as docs/formats.md shows) and the whole
/// evidence with the independent Python verifier, `olds` the checkpoints it must prove from.
fn check_bundle_evidence(ca: &AgeCa, out: &str, olds: &[&Path]) {
    let b = ca.path(out);
    let manifest = fs::read_to_string(b.join("manifest.json")).unwrap();
    for f in ["checkpoint", "checkpoint.sig", "checkpoint.proofs"] {
        assert!(manifest.contains(&format!("\"{f}\"")), "{f} not listed");
    }
    let ca_der =
        nrfca::internal::util::first_cert_der(&fs::read_to_string(ca.dir.join("ca.pem")).unwrap())
            .unwrap();
    let signed = SignedCheckpoint::verify_with_ca_cert(
        &fs::read(b.join("checkpoint")).unwrap(),
        &fs::read(b.join("checkpoint.sig")).unwrap(),
        &ca_der,
    )
    .unwrap();
    let proofs = ProofFile::parse(&fs::read(b.join("checkpoint.proofs")).unwrap()).unwrap();
    proofs.verify_all(&signed.checkpoint).unwrap();
    if have_openssl() {
        fs::write(
            b.join("../cp.der"),
            nrfca::internal::crypto::b64_decode(
                fs::read_to_string(b.join("checkpoint.sig")).unwrap().trim(),
            )
            .unwrap(),
        )
        .unwrap();
        openssl_in(
            &ca.root,
            &[
                "x509",
                "-in",
                "ca/ca.pem",
                "-pubkey",
                "-noout",
                "-out",
                "ca.pub",
            ],
        );
        let o = Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "ca.pub",
                "-signature",
                "cp.der",
            ])
            .arg(b.join("checkpoint"))
            .current_dir(&ca.root)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl: {}", explain(&o));
    }
    if let Some(py) = venv_tool("python") {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_checkpoint.py");
        let mut c = Command::new(py);
        c.arg(script)
            .arg("--ca-cert")
            .arg(ca.dir.join("ca.pem"))
            .arg("--checkpoint")
            .arg(b.join("checkpoint"))
            .arg("--sig")
            .arg(b.join("checkpoint.sig"))
            .arg("--proofs")
            .arg(b.join("checkpoint.proofs"));
        for o in olds {
            c.arg("--old").arg(o);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "verify_checkpoint.py: {}", explain(&o));
    }
}

#[test]
fn trusted_benches_unsigned_expect_and_bundle_checkpoints() {
    let ca = AgeCa::new("CN=Evidence Test CA");
    let fp = ca.fingerprint();
    let a = ca.bench("line-a");
    let b = ca.bench("line-b");

    // No bench trusted yet: a plain CSV is signed as before, and its bundle carries the
    // checkpoint of the log as committed.
    let (text, _) = requests(2, "line-a");
    fs::write(ca.path("r1.csv"), &text).unwrap();
    let o = ca.sign("b1", &[], &[&ca.path("r1.csv")]);
    assert!(o.status.success(), "{}", explain(&o));
    let c1 = ca.bundle_checkpoint("b1");
    assert_eq!(c1.ca_sha256(), fp);
    // The checkpoint covers the batch: every record up to its chain checkpoint.
    let batch_cp: i64 = ca.count(
        "SELECT seq FROM audit WHERE event = 'checkpoint' AND seq > (SELECT seq FROM audit WHERE event = 'batch-committed') ORDER BY seq LIMIT 1",
    );
    assert_eq!(c1.size as i64, batch_cp);
    check_bundle_evidence(&ca, "b1", &[]);
    fs::copy(ca.path("b1/checkpoint"), ca.path("held1")).unwrap();
    // The batch report (the paper ceremony record) prints that checkpoint and its signature.
    let o = ca.nrfca(&["audit", "report"]);
    assert!(o.status.success(), "{}", explain(&o));
    let report = explain(&o);
    for line in c1.to_text().lines() {
        assert!(report.contains(&format!("  {line}\n")), "{line}: {report}");
    }
    let sig = fs::read_to_string(ca.path("b1/checkpoint.sig")).unwrap();
    assert!(
        report.contains(&format!("  signature {}", sig.trim())),
        "{report}"
    );

    // Trust bench A: audited, listed by ca show.
    ca.trust(&a);
    assert_eq!(
        ca.count("SELECT count(*) FROM audit WHERE event = 'bench-trusted'"),
        1
    );
    let show = ca.nrfca(&["ca", "show"]);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains(&format!("line-a key {}", a.fingerprint())),
        "{}",
        explain(&show)
    );

    // Unsigned input: refused before unlocking, nothing written, audited.
    let (text, _) = requests(1, "line-a");
    fs::write(ca.path("u.csv"), &text).unwrap();
    let records = ca.count("SELECT count(*) FROM audit");
    let unlocks = ca.count("SELECT count(*) FROM audit WHERE event = 'key-unlocked'");
    let o = ca.sign("bu", &[], &[&ca.path("u.csv")]);
    refused(&o, "--unsigned");
    assert!(!ca.path("bu").exists());
    assert_eq!(ca.count("SELECT count(*) FROM audit"), records + 1);
    assert_eq!(
        ca.count("SELECT count(*) FROM audit WHERE event = 'key-unlocked'"),
        unlocks
    );
    assert_eq!(last_refusal_code(&ca), "input-unsigned");
    // Plain-text KEYGEN lines need --unsigned too.
    let m = ModemIdentity::random().unwrap();
    fs::write(
        ca.path("plain.txt"),
        format!(
            "{}\n",
            m.keygen(TAG, &GenOptions::default()).unwrap().keygen
        ),
    )
    .unwrap();
    refused(&ca.sign("bp", &[], &[&ca.path("plain.txt")]), "--unsigned");

    // --unsigned: accepted and recorded in batch-started.
    let o = ca.sign("bu", &["--unsigned"], &[&ca.path("u.csv")]);
    assert!(o.status.success(), "{}", explain(&o));
    let prov: String = ca
        .db()
        .query_row(
            "SELECT json_extract(details, '$.provenance') FROM audit WHERE event = 'batch-started' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(prov.contains("\"unsigned\":true"), "{prov}");

    // Signed by A, quoting the checkpoint of b1: issued, bench recorded, proof from held1.
    let (text, _) = requests(2, "line-a");
    let r2 = signed_input(&ca, "r2.csv", &text, &a, vec![c1.clone()]);
    let o = ca.sign("b2", &[], &[&r2]);
    assert!(o.status.success(), "{}", explain(&o));
    let prov: String = ca
        .db()
        .query_row(
            "SELECT json_extract(details, '$.provenance') FROM audit WHERE event = 'batch-started' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        prov.contains("line-a") && prov.contains(a.fingerprint()),
        "{prov}"
    );
    let proofs = fs::read_to_string(ca.path("b2/checkpoint.proofs")).unwrap();
    assert!(proofs.contains(&format!("from {} ", c1.size)), "{proofs}");
    check_bundle_evidence(&ca, "b2", &[&ca.path("held1")]);
    let c2 = ca.bundle_checkpoint("b2");
    assert!(c2.size > c1.size);

    // One byte changed after signing.
    let (text, _) = requests(1, "line-a");
    let p = signed_input(&ca, "t.csv", &text, &a, vec![]);
    let mut bytes = fs::read(&p).unwrap();
    let i = bytes.len() - 3;
    bytes[i] ^= 1;
    fs::write(&p, bytes).unwrap();
    refused(
        &ca.sign("bt", &[], &[&p]),
        "changed after the bench signed it",
    );
    assert_eq!(last_refusal_code(&ca), "requests-altered");

    // Signed by an untrusted bench.
    let (text, _) = requests(1, "line-b");
    let p = signed_input(&ca, "ub.csv", &text, &b, vec![]);
    refused(&ca.sign("bb", &[], &[&p]), "does not trust");
    assert_eq!(last_refusal_code(&ca), "bench-not-trusted");

    // Signed by A, but a row names bench B.
    let (mut text, _) = requests(1, "line-a");
    text.push_str(requests(1, "line-b").0.lines().nth(1).unwrap());
    text.push('\n');
    let p = signed_input(&ca, "mixed.csv", &text, &a, vec![]);
    refused(&ca.sign("bm", &[], &[&p]), "names bench \"line-b\"");
    assert_eq!(last_refusal_code(&ca), "rows-of-another-bench");

    // A quoted checkpoint of a longer log than this CA's.
    let longer = Checkpoint::new(&fp, c2.size + 50, c2.root).unwrap();
    let (text, _) = requests(1, "line-a");
    let p = signed_input(&ca, "long.csv", &text, &a, vec![longer]);
    refused(&ca.sign("bl", &[], &[&p]), "restored from an older backup");
    assert_eq!(last_refusal_code(&ca), "log-not-extended");
    // --unsigned does not skip the checkpoint a statement quotes.
    refused(
        &ca.sign("bl", &["--unsigned"], &[&p]),
        "restored from an older backup",
    );
    // A quoted checkpoint of this CA's size but another root (another log).
    let other_root = Checkpoint::new(&fp, c1.size, [7u8; 32]).unwrap();
    let p = signed_input(&ca, "other.csv", &text, &a, vec![other_root]);
    refused(&ca.sign("bo", &[], &[&p]), "differ from the checkpoint");
    // A checkpoint of another CA is not this CA's business: it is neither checked against
    // this log nor proved from.
    let other_ca = Checkpoint::new(&"ab".repeat(32), c2.size + 50, [9u8; 32]).unwrap();
    let p = signed_input(&ca, "oca.csv", &text, &a, vec![other_ca, c2.clone()]);
    let o = ca.sign("boca", &[], &[&p]);
    assert!(o.status.success(), "{}", explain(&o));
    let proofs = fs::read_to_string(ca.path("boca/checkpoint.proofs")).unwrap();
    // Proved from the quoted c2 (and from the CA's recent checkpoints), never from the other
    // CA's size.
    assert!(proofs.contains(&format!("\nfrom {} ", c2.size)), "{proofs}");
    assert!(
        !proofs.contains(&format!("\nfrom {} ", c2.size + 50)),
        "{proofs}"
    );

    // --expect: a device not on the list is rejected not-expected (exit 1), the other issued.
    let (text, uuids) = requests(2, "line-a");
    let p = signed_input(&ca, "exp.csv", &text, &a, vec![]);
    fs::write(
        ca.path("expect.csv"),
        format!("device_uuid,note\n{},ok\n", uuids[0]),
    )
    .unwrap();
    let o = ca.sign(
        "be",
        &["--expect", ca.path("expect.csv").to_str().unwrap()],
        &[&p],
    );
    assert_eq!(o.status.code(), Some(1), "{}", explain(&o));
    let rejects = fs::read_to_string(ca.path("be/rejects.csv")).unwrap();
    assert!(
        rejects.contains(&format!("{},not-expected", uuids[1])),
        "{rejects}"
    );
    assert!(!rejects.contains(&uuids[0]), "{rejects}");
    // A list without a device_uuid or imei column is refused.
    fs::write(ca.path("bad-expect.csv"), "serial\n1\n").unwrap();
    let o = ca.sign(
        "bx",
        &["--expect", ca.path("bad-expect.csv").to_str().unwrap()],
        &[&p],
    );
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));

    // Distrust A (B trusted now, so signatures stay required): A's files are refused.
    ca.trust(&b);
    let o = ca.with_key(&["ca", "distrust-bench", "--name", "line-a"]);
    assert!(o.status.success(), "{}", explain(&o));
    let (text, _) = requests(1, "line-a");
    let p = signed_input(&ca, "after.csv", &text, &a, vec![]);
    refused(&ca.sign("bd", &[], &[&p]), "does not trust");

    // The whole log, Merkle checkpoints included, verifies, and extends b1's and b2's.
    let o = ca.nrfca(&[
        "audit",
        "verify",
        "--checkpoint",
        ca.path("held1").to_str().unwrap(),
        "--checkpoint",
        ca.path("b2/checkpoint").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", explain(&o));
}

#[test]
fn restored_or_truncated_ca_db_is_caught_at_sign_and_by_audit_verify() {
    let ca = AgeCa::new("CN=Evidence Test CA");
    let a = ca.bench("line-a");
    ca.trust(&a);
    // The backup, taken before the batch.
    fs::copy(ca.dir.join("ca.db"), ca.path("backup.db")).unwrap();
    let (text, _) = requests(2, "line-a");
    let r1 = signed_input(&ca, "r1.csv", &text, &a, vec![]);
    let o = ca.sign("b1", &[], &[&r1]);
    assert!(o.status.success(), "{}", explain(&o));
    let c1 = ca.bundle_checkpoint("b1");
    fs::copy(ca.dir.join("ca.db"), ca.path("after.db")).unwrap();

    // An export of the good log extends the checkpoint; cut its tail and it no longer does.
    let export = ca.path("audit.jsonl");
    let o = ca.nrfca(&["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", explain(&o));
    let verify_file = |log: &Path| {
        bin_plain()
            .args(["audit", "verify", "--file"])
            .arg(log)
            .arg("--ca-cert")
            .arg(ca.dir.join("ca.pem"))
            .arg("--checkpoint")
            .arg(ca.path("b1/checkpoint"))
            .output()
            .unwrap()
    };
    let o = verify_file(&export);
    assert!(o.status.success(), "{}", explain(&o));
    let text_log = fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text_log.lines().collect();
    let cut = ca.path("cut.jsonl");
    fs::write(&cut, lines[..c1.size as usize - 2].join("\n") + "\n").unwrap();
    let o = verify_file(&cut);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("does not extend the checkpoint"),
        "{}",
        explain(&o)
    );

    // ca.db restored from the backup: the bench quotes the checkpoint of b1.
    fs::copy(ca.path("backup.db"), ca.dir.join("ca.db")).unwrap();
    let (text, _) = requests(1, "line-a");
    let r2 = signed_input(&ca, "r2.csv", &text, &a, vec![c1.clone()]);
    let o = ca.sign("b2", &[], &[&r2]);
    refused(&o, "restored from an older backup");
    assert!(!ca.path("b2").exists());
    assert_eq!(last_refusal_code(&ca), "log-not-extended");
    // ... and by audit verify with the checkpoint from the ceremony record / bundle.
    let o = ca.nrfca(&[
        "audit",
        "verify",
        "--checkpoint",
        ca.path("b1/checkpoint").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(stderr(&o).contains("b1/checkpoint"), "{}", explain(&o));

    // The newer ca.db back: sign works again and proves from b1's checkpoint.
    fs::copy(ca.path("after.db"), ca.dir.join("ca.db")).unwrap();
    let o = ca.sign("b2", &[], &[&r2]);
    assert!(o.status.success(), "{}", explain(&o));
    check_bundle_evidence(&ca, "b2", &[&ca.path("b1/checkpoint")]);

    // A tail cut off ca.db (records and Merkle checkpoints past b1's): audit verify against
    // b2's checkpoint says so.
    let c2 = ca.bundle_checkpoint("b2");
    {
        let db = ca.db();
        db.execute("DELETE FROM audit WHERE seq > ?1", [c1.size as i64])
            .unwrap();
        db.execute("DELETE FROM checkpoints WHERE size > ?1", [c1.size as i64])
            .unwrap();
        db.execute(
            "UPDATE meta SET value = (SELECT seq || ' ' || hash FROM audit ORDER BY seq DESC LIMIT 1) WHERE key = 'audit_checkpoint'",
            [],
        )
        .unwrap();
    }
    let o = ca.nrfca(&[
        "audit",
        "verify",
        "--checkpoint",
        ca.path("b2/checkpoint").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains(&format!("(size {})", c2.size)),
        "{}",
        explain(&o)
    );
}

#[test]
fn ca_db_of_schema_3_gets_its_first_checkpoint_when_the_key_is_used() {
    let ca = AgeCa::new("CN=Evidence Test CA");
    // Make it look like a ca.db from before checkpoints.
    {
        let db = ca.db();
        db.execute("DELETE FROM checkpoints", []).unwrap();
        db.execute("DROP TABLE checkpoints", []).unwrap();
        db.execute("DROP TABLE benches", []).unwrap();
        db.execute(
            "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let o = ca.nrfca(&["audit", "verify"]);
    assert!(o.status.success(), "{}", explain(&o));
    assert!(explain(&o).contains("none yet"), "{}", explain(&o));
    let o = ca.with_key(&["ca", "verify-key"]);
    assert!(o.status.success(), "{}", explain(&o));
    let records = ca.count("SELECT count(*) FROM audit");
    assert_eq!(
        ca.count("SELECT max(size) FROM checkpoints"),
        records,
        "the first checkpoint covers the whole existing log"
    );
    let o = ca.nrfca(&["audit", "verify"]);
    assert!(o.status.success(), "{}", explain(&o));
    assert!(
        explain(&o).contains(&format!("checkpoint   size {records} ")),
        "{}",
        explain(&o)
    );
}

/// A checkpoint of another, real CA's log (Y, its bundle's `checkpoint`) quoted under this
/// CA's origin (X) is not X's log: refused like a rolled-back one, whether Y's log is shorter
/// or longer than X's. Quoted under Y's own origin it is legitimate (a bench that imported
/// from both CAs quotes both) and `sign` of X ignores it. `audit verify` of X against Y's
/// checkpoint file refuses it as another CA's.
#[test]
fn checkpoint_of_another_ca_presented_as_this_cas_is_refused() {
    let x = AgeCa::new("CN=Evidence Test CA");
    let y = AgeCa::new("CN=Evidence Test CA");
    let x_fp = x.fingerprint();
    let a = x.bench("line-a");
    x.trust(&a);

    // Y signs two batches (a short and a longer log); X one, signed by bench A.
    let sign_plain = |ca: &AgeCa, name: &str, n: usize| {
        let (t, _) = requests(n, "line-a");
        fs::write(ca.path(&format!("{name}.csv")), &t).unwrap();
        let o = ca.sign(name, &[], &[&ca.path(&format!("{name}.csv"))]);
        assert!(o.status.success(), "{}", explain(&o));
        ca.bundle_checkpoint(name)
    };
    let cy1 = sign_plain(&y, "y1", 1);
    let cy2 = sign_plain(&y, "y2", 6);
    let (t, _) = requests(2, "line-a");
    let r = signed_input(&x, "x1.csv", &t, &a, vec![]);
    let o = x.sign("x1", &[], &[&r]);
    assert!(o.status.success(), "{}", explain(&o));
    let cx = x.bundle_checkpoint("x1");
    assert_ne!(cy1.origin, cx.origin);
    let x_len = x.count("SELECT count(*) FROM audit") as u64;
    assert!(
        cy1.size <= x_len && cy2.size > x_len,
        "one of Y's checkpoints within X's log size ({x_len}), one beyond: {} {}",
        cy1.size,
        cy2.size
    );

    // Y's size and root under X's origin, signed by a bench X trusts: refused before the
    // key is unlocked, nothing issued, the refusal recorded.
    for (what, cy, why) in [
        (
            "Y's shorter log",
            &cy1,
            "the log's first records differ from the checkpoint's",
        ),
        (
            "Y's longer log",
            &cy2,
            "the log is shorter than the checkpoint",
        ),
    ] {
        let as_x = Checkpoint::new(&x_fp, cy.size, cy.root).unwrap();
        let (t, _) = requests(1, "line-a");
        let p = signed_input(&x, "forged.csv", &t, &a, vec![as_x]);
        let records = x.count("SELECT count(*) FROM audit");
        let unlocks = x.count("SELECT count(*) FROM audit WHERE event = 'key-unlocked'");
        let certs = x.count("SELECT count(*) FROM certificates");
        let o = x.sign("forged", &[], &[&p]);
        refused(&o, "another CA's log");
        assert!(stderr(&o).contains(why), "{what}: {}", explain(&o));
        assert!(!x.path("forged").exists(), "{what}");
        assert_eq!(last_refusal_code(&x), "log-not-extended", "{what}");
        assert_eq!(x.count("SELECT count(*) FROM audit"), records + 1, "{what}");
        assert_eq!(
            x.count("SELECT count(*) FROM audit WHERE event = 'key-unlocked'"),
            unlocks,
            "{what}"
        );
        assert_eq!(
            x.count("SELECT count(*) FROM certificates"),
            certs,
            "{what}"
        );
    }

    // Y's checkpoints under Y's origin beside X's own: signed, proved from X's only.
    let (t, _) = requests(1, "line-a");
    let p = signed_input(&x, "both.csv", &t, &a, vec![cy2.clone(), cx.clone()]);
    let o = x.sign("x2", &[], &[&p]);
    assert!(o.status.success(), "{}", explain(&o));
    let proofs = fs::read_to_string(x.path("x2/checkpoint.proofs")).unwrap();
    let cy2_root = nrfca::internal::crypto::b64_encode(&cy2.root);
    assert!(!proofs.contains(&cy2_root), "{proofs}");
    assert!(
        proofs.contains(&format!(
            "\nfrom {} {} ",
            cx.size,
            nrfca::internal::crypto::b64_encode(&cx.root)
        )),
        "{proofs}"
    );
    check_bundle_evidence(&x, "x2", &[&x.path("x1/checkpoint")]);

    // The auditor handed Y's checkpoint for X's log (ca.db or an export): the wrong file,
    // said as such (exit 2), not a tampered log to restore from a backup.
    let export = x.path("x.jsonl");
    let o = x.nrfca(&["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", explain(&o));
    let y1 = y.path("y1/checkpoint");
    let by_dir = x.nrfca(&["audit", "verify", "--checkpoint", y1.to_str().unwrap()]);
    let by_file = bin_plain()
        .args(["audit", "verify", "--file"])
        .arg(&export)
        .arg("--ca-cert")
        .arg(x.dir.join("ca.pem"))
        .arg("--checkpoint")
        .arg(&y1)
        .output()
        .unwrap();
    for o in [by_dir, by_file] {
        assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
        let err = stderr(&o);
        assert!(
            err.contains("is a checkpoint of another CA"),
            "{}",
            explain(&o)
        );
        assert!(
            err.contains(&cy1.origin) && err.contains(&cx.origin),
            "{err}"
        );
        assert!(!err.contains("TAMPERED"), "{err}");
        assert!(!err.contains("restore ca.db"), "{err}");
    }
    // With X's own checkpoint beside it, the same refusal: nothing half-checked.
    let o = x.nrfca(&[
        "audit",
        "verify",
        "--checkpoint",
        x.path("x1/checkpoint").to_str().unwrap(),
        "--checkpoint",
        y1.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", explain(&o));
    assert!(
        stderr(&o).contains("is a checkpoint of another CA"),
        "{}",
        explain(&o)
    );
}
