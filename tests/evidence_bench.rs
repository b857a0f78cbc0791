//! The bench's side of the evidence (SPEC §10, §11) through the binary on simulated modems:
//! `bench init` (key 0600, refused twice), `bench export` writing a `requests.csv.sig` that
//! `openssl dgst` checks after the extraction of `docs/formats.md`, re-signed over the whole
//! file when a re-run appends, and quoting the checkpoint the bench holds; `bench import`
//! adopting a bundle's first CA-signed checkpoint, accepting one that extends it, refusing a
//! forged signature, a rolled-back or forked log, a missing proof, another CA's checkpoint,
//! and (once a checkpoint is held) a bundle without one, each with exit 2 and nothing sent to
//! the modem.
//!
//! The signer does not write checkpoints yet in every build, so the test bundles are normal
//! `nrfca sign` bundles to which the test adds `checkpoint`, `checkpoint.sig` and
//! `checkpoint.proofs` made with `nrfca::internal::merkle` / `nrfca::checkpoint` and the CA key (an
//! openssl key the CA was imported from).
#![cfg(feature = "bench")]

use nrfca::checkpoint::{Checkpoint, ProofFile};
use nrfca::internal::crypto::{self, P256Key};
use nrfca::internal::merkle::Tree;
use nrfca::sim::Simulator;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{age_identity, bin, copy_dir, have_openssl, openssl_in, openssl_p256_key, run};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Lab {
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
    ca_key: P256Key,
    ca_sha: String,
}

impl Lab {
    /// Two simulated modems and a CA imported from an openssl key (kept for checkpoints).
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let (sim, ports) = common::test_modems(dir.path(), 2);
        let d = dir.path();
        openssl_p256_key(d, "ca_sec1.pem");
        openssl_in(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "ca_sec1.pem",
                "-out",
                "ca_prv.pem",
            ],
        );
        openssl_in(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca_sec1.pem",
                "-sha256",
                "-days",
                // Longer than `sign`'s default certificate validity (3650 days).
                "7300",
                "-subj",
                "/C=NO/O=Test/CN=Evidence Bench CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext",
                "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
                "-addext",
                "subjectKeyIdentifier=hash",
                "-addext",
                "authorityKeyIdentifier=keyid",
                "-out",
                "ca_cert.pem",
            ],
        );
        let recipient = age_identity(&d.join("id.agekey"));
        let o = run(bin()
            .args(["ca", "import", "--ca-dir"])
            .arg(d.join("ca"))
            .arg("--cert")
            .arg(d.join("ca_cert.pem"))
            .arg("--key")
            .arg(d.join("ca_prv.pem"))
            .args(["--recipient", &recipient, "--operator", "officer"]));
        assert!(o.status.success(), "ca import: {}", text(&o));
        let pkcs8 =
            crypto::pkcs8_from_pem_any(&fs::read_to_string(d.join("ca_prv.pem")).unwrap()).unwrap();
        let der = nrfca::internal::util::first_cert_der(
            &fs::read_to_string(d.join("ca/ca.pem")).unwrap(),
        )
        .unwrap();
        Lab {
            ca_key: P256Key::from_pkcs8(&pkcs8).unwrap(),
            ca_sha: crypto::sha256_hex(&der),
            dir,
            sim,
            ports,
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nrfca(&self, args: &[&str]) -> Output {
        run(bin().current_dir(self.dir.path()).args(args))
    }

    /// `bench SUB` on the given ports with test timeouts.
    fn bench(&self, sub: &str, ports: &[usize], extra: &[&str]) -> Output {
        let mut c = bin();
        c.current_dir(self.dir.path()).args(["bench", sub]);
        for &i in ports {
            c.args(["--port", &self.ports[i]]);
        }
        c.args([
            "--state",
            "S",
            "--operator",
            "tech",
            "--timeout",
            "1.5",
            "--slow-timeout",
            "3",
            "--reconnect-wait",
            "1",
        ]);
        c.args(extra);
        run(&mut c)
    }

    fn export(&self, ports: &[usize]) -> Output {
        self.bench("export", ports, &["--out", "requests.csv"])
    }

    fn import(&self, bundle: &str) -> Output {
        self.bench(
            "import",
            &[0],
            &["--bundle", bundle, "--trust", "ca/ca.pem"],
        )
    }

    fn sign(&self, out: &str) {
        let o = self.nrfca(&[
            "sign",
            "--ca-dir",
            "ca",
            "--identity",
            "id.agekey",
            "--out",
            out,
            "--operator",
            "officer",
            "requests.csv",
        ]);
        assert!(o.status.success(), "sign: {}", text(&o));
        // `sign` now puts the CA's checkpoint in every bundle; these tests start from a bundle
        // as an older signer wrote it, without one, and add the checkpoints they need.
        strip_checkpoint(self, out);
    }

    fn checkpoint(&self, tree: &Tree, size: u64) -> Checkpoint {
        Checkpoint::new(&self.ca_sha, size, tree.root_at(size).unwrap()).unwrap()
    }

    /// Copy bundle `from` to `to` and add `checkpoint` (size `size` of `tree`) signed by
    /// `key`, and proofs from each of `from_sizes` (computed in `proof_tree`).
    #[allow(clippy::too_many_arguments)]
    fn with_checkpoint(
        &self,
        from: &str,
        to: &str,
        tree: &Tree,
        size: u64,
        key: &P256Key,
        proof_tree: &Tree,
        from_sizes: &[u64],
    ) -> String {
        copy_dir(&self.p(from), &self.p(to));
        let cp = self.checkpoint(tree, size);
        let signed = cp.sign(|m| key.sign_der(m)).unwrap();
        let b = self.p(to);
        fs::write(b.join("checkpoint"), &signed.text).unwrap();
        fs::write(b.join("checkpoint.sig"), signed.sig_file()).unwrap();
        let proofs = ProofFile {
            to: cp.clone(),
            proofs: from_sizes
                .iter()
                .map(|&s| nrfca::checkpoint::ConsistencyProof {
                    old_size: s,
                    old_root: proof_tree.root_at(s).unwrap(),
                    hashes: proof_tree.consistency_proof(s, size).unwrap(),
                })
                .collect(),
        };
        fs::write(b.join("checkpoint.proofs"), proofs.to_text()).unwrap();
        to.to_string()
    }

    /// Copy bundle `from` to `to` with a `checkpoint` of another CA (origin `nrfca/<origin_sha>`,
    /// size and root of `tree`) signed by `key`, or without `checkpoint.sig` (`None`).
    fn with_foreign_checkpoint(
        &self,
        from: &str,
        to: &str,
        origin_sha: &str,
        tree: &Tree,
        size: u64,
        key: Option<&P256Key>,
    ) -> String {
        copy_dir(&self.p(from), &self.p(to));
        let cp = Checkpoint::new(origin_sha, size, tree.root_at(size).unwrap()).unwrap();
        let b = self.p(to);
        fs::write(b.join("checkpoint"), cp.to_text()).unwrap();
        if let Some(key) = key {
            let signed = cp.sign(|m| key.sign_der(m)).unwrap();
            fs::write(b.join("checkpoint.sig"), signed.sig_file()).unwrap();
        }
        let proofs = ProofFile {
            to: cp,
            proofs: Vec::new(),
        };
        fs::write(b.join("checkpoint.proofs"), proofs.to_text()).unwrap();
        to.to_string()
    }

    /// Modem-changing commands seen by modem `i` so far.
    fn writes(&self, i: usize) -> usize {
        self.sim
            .snapshot(i)
            .commands
            .iter()
            .filter(|c| common::changes_modem(c))
            .count()
    }

    fn status(&self) -> serde_json::Value {
        let o = self.nrfca(&["bench", "status", "--state", "S", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn held_sizes(&self) -> Vec<u64> {
        self.status()["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["checkpoint"]["size"].as_u64().unwrap())
            .collect()
    }
}

fn log_tree(n: u64, salt: u8) -> Tree {
    let mut t = Tree::new();
    for i in 0..n {
        t.push(&crypto::sha256(&[&[salt][..], &i.to_be_bytes()].concat()));
    }
    t
}

/// The documented check: split off the signature line, verify with openssl, and compare the
/// `requests` line with the SHA-256 of the requests file. Returns the statement text.
fn openssl_check_statement(dir: &Path, requests: &str) -> String {
    let sig = fs::read_to_string(dir.join(format!("{requests}.sig"))).unwrap();
    let (stmt, last) = sig.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let stmt = format!("{stmt}\n");
    let b64 = last
        .strip_prefix("signature ")
        .expect("signature line last");
    fs::write(dir.join("stmt"), &stmt).unwrap();
    fs::write(dir.join("stmt.der"), crypto::b64_decode(b64).unwrap()).unwrap();
    let o = Command::new("openssl")
        .current_dir(dir)
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "S/bench.pem",
            "-signature",
            "stmt.der",
            "stmt",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "Verified OK");
    let digest = crypto::sha256_hex(&fs::read(dir.join(requests)).unwrap());
    assert!(
        stmt.lines().any(|l| l == format!("requests {digest}")),
        "{stmt}"
    );
    stmt
}

#[test]
fn enrolled_bench_signs_exports_and_holds_the_ca_log_to_its_checkpoints() {
    if !have_openssl() {
        return;
    }
    let lab = Lab::new();
    let d = lab.dir.path();

    // ---- bench init: key 0600, public key and fingerprint printed; a second init refused.
    let o = lab.nrfca(&["bench", "init", "--state", "S", "--name", "line-3"]);
    assert!(o.status.success(), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(d.join("S/bench.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let spki = Command::new("openssl")
        .current_dir(d)
        .args(["pkey", "-pubin", "-in", "S/bench.pem", "-outform", "DER"])
        .output()
        .unwrap();
    assert!(spki.status.success());
    let fingerprint = crypto::sha256_hex(&spki.stdout);
    let out = text(&o);
    assert!(
        out.contains(&format!("fingerprint (SHA-256): {fingerprint}")),
        "{out}"
    );
    assert!(out.contains("S/bench.pem"), "{out}");
    assert!(
        out.contains(&fs::read_to_string(d.join("S/bench.pem")).unwrap()),
        "{out}"
    );
    let key_before = fs::read(d.join("S/bench.key")).unwrap();
    let o = lab.nrfca(&["bench", "init", "--state", "S", "--name", "other"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already has a key"), "{}", text(&o));
    assert_eq!(fs::read(d.join("S/bench.key")).unwrap(), key_before);
    assert_eq!(lab.status()["bench"]["fingerprint"], fingerprint.as_str());

    // ---- export names the bench and signs the file; --bench naming another is refused.
    let o = lab.bench(
        "export",
        &[0],
        &["--out", "requests.csv", "--bench", "other"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("enrolled as"), "{}", text(&o));
    assert_eq!(lab.writes(0), 0, "refused before touching the modem");
    let o = lab.export(&[0]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("requests.csv.sig"), "{}", text(&o));
    let stmt = openssl_check_statement(d, "requests.csv");
    assert!(stmt.contains("bench line-3\n"), "{stmt}");
    assert!(stmt.contains(&format!("key {fingerprint}\n")), "{stmt}");
    assert!(!stmt.contains("checkpoint "), "nothing held yet: {stmt}");
    let mut rows = csv::Reader::from_path(d.join("requests.csv")).unwrap();
    for r in rows.records() {
        assert_eq!(&r.unwrap()[6], "line-3");
    }

    // ---- a bundle without checkpoint imports with a warning while none is held.
    lab.sign("bundle1");
    let o = lab.import("bundle1");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("carries no checkpoint"), "{}", text(&o));
    assert!(lab.held_sizes().is_empty());

    // ---- the first checkpoint (signed by the CA) is adopted and journaled.
    let log = log_tree(40, 1);
    let b2 = lab.with_checkpoint("bundle1", "bundle2", &log, 10, &lab.ca_key, &log, &[]);
    let o = lab.import(&b2);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("checkpoint size 10 signed by the CA"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.held_sizes(), [10]);
    let o = lab.nrfca(&["bench", "status", "--state", "S", "--journal"]);
    assert!(text(&o).contains("checkpoint: verify"), "{}", text(&o));

    // ---- a re-run that appends re-signs the whole file, quoting the held checkpoint.
    let before = fs::read(d.join("requests.csv")).unwrap();
    let o = lab.export(&[0, 1]);
    assert!(o.status.success(), "{}", text(&o));
    let after = fs::read(d.join("requests.csv")).unwrap();
    assert!(after.len() > before.len() && after.starts_with(&before));
    let stmt = openssl_check_statement(d, "requests.csv");
    let held = lab.checkpoint(&log, 10);
    assert!(
        stmt.contains(&format!(
            "checkpoint {} 10 {}\n",
            held.origin,
            crypto::b64_encode(&held.root)
        )),
        "{stmt}"
    );

    // ---- a later checkpoint that extends it (manifest listing the files, re-signed) is
    // accepted and becomes the newest held.
    let b3 = lab.with_checkpoint("bundle1", "bundle3", &log, 15, &lab.ca_key, &log, &[10, 3]);
    list_in_manifest(&lab, &b3);
    let o = lab.import(&b3);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("extends the size 10 held"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.held_sizes(), [15]);

    // ---- refusals: exit 2, nothing sent to the modem, nothing adopted.
    let writes = lab.writes(0);
    let (other_key, _) = P256Key::generate().unwrap();
    let (y_key, _) = P256Key::generate().unwrap();
    let y_sha = crypto::sha256_hex(&y_key.public_key());
    let y_log = log_tree(40, 4);
    let refusals = [
        (
            "forged signature",
            lab.with_checkpoint("bundle1", "forged", &log, 20, &other_key, &log, &[15]),
            "checkpoint-bad-signature",
        ),
        (
            "rolled back (shorter log)",
            lab.with_checkpoint("bundle1", "shorter", &log, 12, &lab.ca_key, &log, &[10]),
            "rolled back or forked",
        ),
        (
            "forked log",
            lab.with_checkpoint(
                "bundle1",
                "forked",
                &log_tree(40, 2),
                20,
                &lab.ca_key,
                &log_tree(40, 2),
                &[15],
            ),
            "rolled back or forked",
        ),
        (
            "same size, other root",
            lab.with_checkpoint(
                "bundle1",
                "sibling",
                &log_tree(40, 3),
                15,
                &lab.ca_key,
                &log_tree(40, 3),
                &[],
            ),
            "log-rolled-back",
        ),
        (
            "no proof from the held checkpoint",
            lab.with_checkpoint("bundle1", "noproof", &log, 20, &lab.ca_key, &log, &[10]),
            "checkpoint-proof-missing",
        ),
        (
            "no checkpoint once one is held",
            "bundle1".to_string(),
            "checkpoint-missing",
        ),
        // Another CA's checkpoint (CA Y: its own key and fingerprint) in this CA's bundle:
        // as Y signed it (copied from a bundle of Y), without its signature, and even signed
        // by this CA's key (the origin alone tells it is not this CA's log).
        (
            "checkpoint of another CA, signed by that CA",
            lab.with_foreign_checkpoint("bundle1", "ca-y", &y_sha, &y_log, 20, Some(&y_key)),
            "checkpoint-bad-signature",
        ),
        (
            "checkpoint of another CA, no checkpoint.sig",
            lab.with_foreign_checkpoint("bundle1", "ca-y-unsigned", &y_sha, &y_log, 20, None),
            "checkpoint-incomplete",
        ),
        (
            "checkpoint of another CA, signed by this CA's key",
            lab.with_foreign_checkpoint(
                "bundle1",
                "ca-y-by-x",
                &y_sha,
                &y_log,
                20,
                Some(&lab.ca_key),
            ),
            "checkpoint-wrong-ca",
        ),
    ];
    for (what, bundle, want) in &refusals {
        let o = lab.import(bundle);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", text(&o));
        assert!(text(&o).contains(want), "{what}: {}", text(&o));
        assert!(
            text(&o).contains("before touching any modem"),
            "{what}: {}",
            text(&o)
        );
        assert_eq!(
            lab.writes(0),
            writes,
            "{what}: nothing written to the modem"
        );
        assert_eq!(lab.held_sizes(), [15], "{what}");
    }
    let o = lab.nrfca(&["bench", "status", "--state", "S", "--journal"]);
    assert!(
        text(&o).contains("refused: log-rolled-back"),
        "{}",
        text(&o)
    );

    // ---- an older bundle of the same log (its checkpoint held before) imports again.
    let o = lab.import(&b2);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already held"), "{}", text(&o));
    assert_eq!(lab.held_sizes(), [15]);
}

/// List the checkpoint files in the bundle's manifest and sign it again with the CA key: the
/// shape a signer that covers them in the manifest produces.
/// Remove the checkpoint files and their manifest entries, re-signing the manifest: the
/// bundle as a signer before checkpoints wrote it.
fn strip_checkpoint(lab: &Lab, bundle: &str) {
    let b = lab.p(bundle);
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    let names = ["checkpoint", "checkpoint.proofs", "checkpoint.sig"];
    m["files"]
        .as_array_mut()
        .unwrap()
        .retain(|f| !names.contains(&f["name"].as_str().unwrap_or("")));
    for name in names {
        let _ = fs::remove_file(b.join(name));
    }
    resign_manifest(lab, &b, &m);
}

/// Write `m` as the bundle's manifest and sign it with the CA key (a forger holding the key).
fn resign_manifest(lab: &Lab, b: &Path, m: &serde_json::Value) {
    let mut text = serde_json::to_string_pretty(m).unwrap();
    text.push('\n');
    fs::write(b.join("manifest.json"), &text).unwrap();
    let sig = lab.ca_key.sign_der(text.as_bytes()).unwrap();
    fs::write(
        b.join("manifest.sig"),
        format!("{}\n", crypto::b64_encode(&sig)),
    )
    .unwrap();
}

fn list_in_manifest(lab: &Lab, bundle: &str) {
    let b = lab.p(bundle);
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_array_mut().unwrap();
    for name in ["checkpoint", "checkpoint.proofs", "checkpoint.sig"] {
        files.push(serde_json::json!({
            "name": name,
            "sha256": crypto::sha256_hex(&fs::read(b.join(name)).unwrap()),
        }));
    }
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    resign_manifest(lab, &b, &m);
}

/// Without `bench init`, export works, writes no statement and says once what to do.
#[test]
fn unenrolled_bench_exports_unsigned_with_one_warning() {
    if !have_openssl() {
        return;
    }
    let lab = Lab::new();
    let o = lab.export(&[0]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert_eq!(out.matches("not enrolled").count(), 1, "{out}");
    assert!(out.contains("nrfca bench init"), "{out}");
    assert!(!lab.p("requests.csv.sig").exists());
    // A key readable by others is refused before any modem is touched.
    let o = lab.nrfca(&["bench", "init", "--state", "S", "--name", "line-4"]);
    assert!(o.status.success(), "{}", text(&o));
    // Once enrolled, the bench does not sign a file holding rows of another bench name.
    let writes = lab.writes(1);
    let o = lab.export(&[1]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("line 2 was written by bench"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.writes(1), writes);
    assert!(!lab.p("requests.csv.sig").exists());
    let o = lab.bench("export", &[1], &["--out", "new.csv"]);
    assert!(o.status.success(), "{}", text(&o));
    openssl_check_statement(lab.dir.path(), "new.csv");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(lab.p("S/bench.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let writes = lab.writes(1);
    let o = lab.export(&[1]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    assert_eq!(lab.writes(1), writes);
}
