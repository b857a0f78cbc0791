//! Evidence checked by readers that do not run nrfca (SPEC §10, §11): a checkpoint, its
//! signature and consistency proofs made by `nrfca::internal::merkle` / `nrfca::checkpoint` are checked
//! by the independent Python verifier (`tests/interop/verify_checkpoint.py`, `cryptography` +
//! RFC 9162 §2.1.4.2 written from the RFC) and by `openssl dgst`; a bench's `requests.csv.sig`
//! is checked by `openssl dgst` after the extraction documented in `docs/formats.md`. Forged
//! signatures and altered proofs must be refused by both.

mod common;

use common::{have_openssl, openssl_in, venv_tool};
use nrfca::checkpoint::{Checkpoint, ProofFile, SignedCheckpoint};
use nrfca::internal::crypto::{self, P256Key};
use nrfca::internal::merkle::Tree;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_checkpoint.py")
}

/// A P-256 CA made by openssl in `dir`: `ca.pem`, `ca.key` (PKCS#8), `ca.pub`; returns the key.
fn openssl_ca(dir: &Path, name: &str) -> (P256Key, Vec<u8>) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "30",
            "-subj",
            "/CN=evidence test CA",
        ],
    );
    let pkcs8 = crypto::pkcs8_from_pem_any(&fs::read_to_string(dir.join(&key)).unwrap()).unwrap();
    let der = nrfca::internal::util::first_cert_der(&fs::read_to_string(dir.join(&pem)).unwrap())
        .unwrap();
    (P256Key::from_pkcs8(&pkcs8).unwrap(), der)
}

fn log_tree(n: u64, salt: u8) -> Tree {
    let mut t = Tree::new();
    for i in 0..n {
        // Leaves are chain hashes: 32 bytes each.
        t.push(&crypto::sha256(&[&[salt][..], &i.to_be_bytes()].concat()));
    }
    t
}

struct Evidence {
    dir: PathBuf,
}

impl Evidence {
    fn python(&self, python: &Path, ca: &str, extra: &[&str]) -> Output {
        let d = &self.dir;
        Command::new(python)
            .arg(script())
            .arg("--ca-cert")
            .arg(d.join(ca))
            .arg("--checkpoint")
            .arg(d.join("checkpoint"))
            .arg("--sig")
            .arg(d.join("checkpoint.sig"))
            .arg("--proofs")
            .arg(d.join("checkpoint.proofs"))
            .args(extra)
            .current_dir(d)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn checkpoint_and_proofs_verify_independently_and_forgeries_do_not() {
    if !have_openssl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (ca_key, ca_der) = openssl_ca(&dir, "ca");
    let (other_key, _) = openssl_ca(&dir, "other");
    let fp = crypto::sha256_hex(&ca_der);

    // A log of 1000 records; benches quoted checkpoints at 1, 17, 512 and 999 records.
    let t = log_tree(1000, 1);
    let held: Vec<Checkpoint> = [1u64, 17, 512, 999]
        .iter()
        .map(|&m| Checkpoint::new(&fp, m, t.root_at(m).unwrap()).unwrap())
        .collect();
    for (i, c) in held.iter().enumerate() {
        fs::write(dir.join(format!("old{i}")), c.to_text()).unwrap();
    }
    let new = Checkpoint::new(&fp, t.len(), t.root()).unwrap();
    let signed = new.sign(|m| ca_key.sign_der(m)).unwrap();
    let proofs = ProofFile::build(&t, &new, &held).unwrap();
    fs::write(dir.join("checkpoint"), &signed.text).unwrap();
    fs::write(dir.join("checkpoint.sig"), signed.sig_file()).unwrap();
    fs::write(dir.join("checkpoint.proofs"), proofs.to_text()).unwrap();

    // Our own verifier agrees.
    let back = SignedCheckpoint::verify_with_ca_cert(
        &fs::read(dir.join("checkpoint")).unwrap(),
        &fs::read(dir.join("checkpoint.sig")).unwrap(),
        &ca_der,
    )
    .unwrap();
    ProofFile::parse(&fs::read(dir.join("checkpoint.proofs")).unwrap())
        .unwrap()
        .verify_all(&back.checkpoint)
        .unwrap();

    // openssl, as docs/formats.md tells an auditor.
    fs::write(
        dir.join("checkpoint.der"),
        crypto::b64_decode(signed.sig_file().trim()).unwrap(),
    )
    .unwrap();
    openssl_in(
        &dir,
        &[
            "x509", "-in", "ca.pem", "-pubkey", "-noout", "-out", "ca.pub",
        ],
    );
    openssl_in(
        &dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "ca.pub",
            "-signature",
            "checkpoint.der",
            "checkpoint",
        ],
    );

    let Some(python) = venv_tool("python") else {
        return;
    };
    let ev = Evidence { dir: dir.clone() };
    let olds: Vec<String> = (0..held.len()).map(|i| format!("old{i}")).collect();
    let mut old_args = Vec::new();
    for o in &olds {
        old_args.push("--old");
        old_args.push(o.as_str());
    }
    let ok = ev.python(&python, "ca.pem", &old_args);
    assert!(ok.status.success(), "python verifier: {}", text(&ok));
    assert!(
        text(&ok).contains("4 consistency proof(s) verified"),
        "{}",
        text(&ok)
    );

    let reject = |what: &str, ca: &str, extra: &[&str]| {
        let o = ev.python(&python, ca, extra);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        assert!(text(&o).contains("REJECT"), "{what}: {}", text(&o));
    };
    let orig_proofs = fs::read_to_string(dir.join("checkpoint.proofs")).unwrap();
    let orig_sig = fs::read_to_string(dir.join("checkpoint.sig")).unwrap();

    // A checkpoint whose old prefix was not in the log (another log) has no proof.
    let fork = log_tree(600, 2);
    fs::write(
        dir.join("fork"),
        Checkpoint::new(&fp, 512, fork.root_at(512).unwrap())
            .unwrap()
            .to_text(),
    )
    .unwrap();
    reject("a checkpoint of another log", "ca.pem", &["--old", "fork"]);
    // The wrong CA certificate.
    reject("another CA", "other.pem", &[]);

    // A forged signature (another key over the same body).
    let forged = new.sign(|m| other_key.sign_der(m)).unwrap();
    fs::write(dir.join("checkpoint.sig"), forged.sig_file()).unwrap();
    reject("forged signature", "ca.pem", &[]);
    assert!(SignedCheckpoint::verify_with_ca_cert(
        signed.text.as_bytes(),
        forged.sig_file().as_bytes(),
        &ca_der
    )
    .is_err());
    fs::write(dir.join("checkpoint.sig"), &orig_sig).unwrap();

    // Each proof hash altered in turn (one bit), and a proof hash dropped.
    let lines: Vec<&str> = orig_proofs.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(' ') {
            continue;
        }
        let mut raw = crypto::b64_decode(line).unwrap();
        raw[i % 32] ^= 0x10;
        let mut v = lines.clone();
        let altered = crypto::b64_encode(&raw);
        v[i] = &altered;
        let body = v.join("\n") + "\n";
        fs::write(dir.join("checkpoint.proofs"), &body).unwrap();
        reject(&format!("proof line {} altered", i + 1), "ca.pem", &[]);
        assert!(ProofFile::parse(body.as_bytes())
            .unwrap()
            .verify_all(&new)
            .is_err());
    }
    // A `from` line claiming another old root or size.
    let other_root = crypto::b64_encode(&fork.root_at(17).unwrap());
    let from17 = lines
        .iter()
        .position(|l| l.starts_with("from 17 "))
        .unwrap();
    let mut v = lines.clone();
    let swapped = lines[from17].replace(lines[from17].split(' ').nth(2).unwrap(), &other_root);
    v[from17] = &swapped;
    fs::write(dir.join("checkpoint.proofs"), v.join("\n") + "\n").unwrap();
    reject("another old root", "ca.pem", &[]);
    let mut v = lines.clone();
    let resized = lines[from17].replacen("from 17 ", "from 18 ", 1);
    v[from17] = &resized;
    fs::write(dir.join("checkpoint.proofs"), v.join("\n") + "\n").unwrap();
    reject("another old size", "ca.pem", &[]);
    fs::write(dir.join("checkpoint.proofs"), &orig_proofs).unwrap();

    // The checkpoint body altered (size), with the original signature.
    let altered = signed.text.replacen("\n1000\n", "\n1001\n", 1);
    fs::write(dir.join("checkpoint"), &altered).unwrap();
    reject("altered checkpoint", "ca.pem", &[]);
    // A truncated log's checkpoint, honestly signed, with the proofs for the longer log.
    let short = Checkpoint::new(&fp, 998, t.root_at(998).unwrap()).unwrap();
    let s2 = short.sign(|m| ca_key.sign_der(m)).unwrap();
    fs::write(dir.join("checkpoint"), &s2.text).unwrap();
    fs::write(dir.join("checkpoint.sig"), s2.sig_file()).unwrap();
    reject("proofs for another checkpoint", "ca.pem", &[]);
    // ... and with proofs honestly made to it, the bench's newer checkpoint (999) has none.
    let t998 = log_tree(998, 1);
    let held_ok: Vec<Checkpoint> = held.iter().filter(|c| c.size <= 998).cloned().collect();
    fs::write(
        dir.join("checkpoint.proofs"),
        ProofFile::build(&t998, &short, &held_ok).unwrap().to_text(),
    )
    .unwrap();
    let ok = ev.python(&python, "ca.pem", &["--old", "old0"]);
    assert!(ok.status.success(), "{}", text(&ok));
    reject(
        "rolled back below a held checkpoint",
        "ca.pem",
        &["--old", "old3"],
    );
    assert!(ProofFile::build(&t998, &short, &held).is_err());
}

#[cfg(feature = "bench")]
#[test]
fn requests_statement_checks_with_openssl_after_the_documented_extraction() {
    use nrfca::internal::bench::identity::BenchIdentity;
    use nrfca::provenance::SignedStatement;
    if !have_openssl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id = BenchIdentity::create(&dir.join("state"), "bench 1").unwrap();
    let other = BenchIdentity::create(&dir.join("other"), "bench 2").unwrap();
    let requests = b"device_uuid,imei,sec_tag,keygen,modem_fw,model,bench,port,exported_at\n";
    let fp = "ab".repeat(32);
    let quoted = Checkpoint::new(&fp, 42, [7u8; 32]).unwrap();
    let sig_file = id.sign_statement(requests, vec![quoted.clone()]).unwrap();
    fs::write(dir.join("requests.csv"), requests).unwrap();
    fs::write(dir.join("requests.csv.sig"), &sig_file).unwrap();
    fs::copy(dir.join("state/bench.pem"), dir.join("bench.pem")).unwrap();
    fs::copy(dir.join("other/bench.pem"), dir.join("other.pem")).unwrap();

    let parsed = SignedStatement::parse(sig_file.as_bytes()).unwrap();
    parsed.verify(&id.public_key(), requests).unwrap();
    assert_eq!(parsed.statement.checkpoint_for(&fp), Some(&quoted));

    // The extraction and check exactly as docs/formats.md gives them.
    let check = |pem: &str| -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sed '$d' requests.csv.sig > stmt && sed -n '$s/^signature //p' requests.csv.sig | base64 -d > stmt.der && openssl dgst -sha256 -verify {pem} -signature stmt.der stmt"
            ))
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let ok = check("bench.pem");
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Verified OK"));
    // The extracted statement names the requests file's SHA-256.
    let stmt = fs::read_to_string(dir.join("stmt")).unwrap();
    assert!(stmt.contains(&format!("requests {}\n", crypto::sha256_hex(requests))));
    // The fingerprint is what openssl computes from bench.pem.
    openssl_in(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            "bench.pem",
            "-outform",
            "DER",
            "-out",
            "bench.der",
        ],
    );
    assert_eq!(
        crypto::sha256_hex(&fs::read(dir.join("bench.der")).unwrap()),
        id.fingerprint()
    );

    // Another bench's key.
    assert!(!check("other.pem").status.success());
    assert_eq!(
        parsed
            .verify(&other.public_key(), requests)
            .unwrap_err()
            .code(),
        "statement-wrong-key"
    );
    // One byte of the statement changed (the quoted tree size).
    let tampered = sig_file.replacen(" 42 ", " 43 ", 1);
    assert_ne!(tampered, sig_file);
    fs::write(dir.join("requests.csv.sig"), &tampered).unwrap();
    assert!(!check("bench.pem").status.success());
    assert_eq!(
        SignedStatement::parse(tampered.as_bytes())
            .unwrap()
            .verify(&id.public_key(), requests)
            .unwrap_err()
            .code(),
        "statement-bad-signature"
    );
    // One byte of requests.csv changed: the signature still holds over the statement, but the
    // digest no longer matches the file.
    let mut altered = requests.to_vec();
    altered[0] = b'D';
    assert_eq!(
        parsed
            .verify(&id.public_key(), &altered)
            .unwrap_err()
            .code(),
        "requests-altered"
    );
}

mod parsers_never_panic {
    use super::*;
    use nrfca::provenance::{SignedStatement, Statement};
    use proptest::prelude::*;

    /// A valid checkpoint, proof file and statement, as bytes.
    fn samples() -> Vec<Vec<u8>> {
        let t = log_tree(37, 3);
        let fp = "cd".repeat(32);
        let new = Checkpoint::new(&fp, 37, t.root()).unwrap();
        let quoted: Vec<Checkpoint> = [0u64, 5, 16, 37]
            .iter()
            .map(|&m| Checkpoint::new(&fp, m, t.root_at(m).unwrap()).unwrap())
            .collect();
        let proofs = ProofFile::build(&t, &new, &quoted).unwrap();
        let (key, _) = P256Key::generate().unwrap();
        let kfp = nrfca::provenance::key_fingerprint(&key.public_key()).unwrap();
        let st = Statement::new("b", &kfp, b"req", vec![new.clone()]).unwrap();
        vec![
            new.to_text().into_bytes(),
            proofs.to_text().into_bytes(),
            st.sign(|m| key.sign_der(m)).unwrap().into_bytes(),
        ]
    }

    fn parse_all(b: &[u8]) {
        let _ = Checkpoint::parse(b);
        let _ = nrfca::checkpoint::parse_sig_file(b);
        if let Ok(p) = ProofFile::parse(b) {
            // Whatever parses formats back to the same bytes (one text per value).
            assert_eq!(p.to_text().as_bytes(), b);
            let _ = p.verify_all(&p.to);
        }
        if let Ok(s) = SignedStatement::parse(b) {
            assert_eq!(s.statement.to_text().as_bytes(), &s.signed[..]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            parse_all(&b);
        }

        #[test]
        fn mutated_valid_files(which in 0usize..3, edits in proptest::collection::vec(
            (any::<usize>(), any::<u8>(), 0u8..3), 1..4)) {
            let mut b = samples().swap_remove(which);
            for (pos, byte, kind) in edits {
                let i = pos % (b.len() + 1);
                match kind {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ if i < b.len() => { b.remove(i); }
                    _ => {}
                }
            }
            parse_all(&b);
        }
    }

    #[test]
    fn checkpoint_text_round_trips() {
        for b in samples() {
            parse_all(&b);
        }
        let first = &samples()[0];
        assert_eq!(
            Checkpoint::parse(first).unwrap().to_text().as_bytes(),
            &first[..]
        );
    }
}
