//! The evidence end to end (issue 12, SPEC §10–§11) through the binary on simulated modems:
//! two enrolled benches, three batches, and a `ca.db` restored from a backup taken after the
//! first, caught at `sign` (a bench quoting the newer checkpoint) and at `bench import` (a
//! bundle of the restored log, a fork of the one the bench holds: refused as rolled back
//! while shorter, as proving nothing from the held checkpoint once longer, which sends the
//! technician to export again and so to the refusal at `sign`); then the newest `ca.db` put
//! back, as the officer guide says, and the flow going on.
#![cfg(feature = "bench")]

use nrfca::sim::Simulator;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{bin, ca_init_age, copy_dir, explain as text, run, TAG};

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A bundle's (or the bench's) checkpoint: (origin, size, base64 root).
type Cp = (String, u64, String);

struct Lab {
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
}

impl Lab {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nrfca(&self, args: &[&str]) -> Output {
        run(bin().current_dir(self.dir.path()).args(args))
    }

    /// A command that unlocks the CA key (age identity) as the officer.
    fn officer(&self, args: &[&str]) -> Output {
        run(bin()
            .current_dir(self.dir.path())
            .args(args)
            .args(["--ca-dir", "ca", "--identity", "officer.agekey"])
            .args(["--operator", "officer"]))
    }

    fn sign(&self, out: &str, requests: &str) -> Output {
        self.officer(&["sign", "--out", out, requests])
    }

    /// `bench SUB` with bench state `state` on modems `modems`, test timeouts.
    fn bench(&self, state: &str, sub: &str, modems: &[usize], extra: &[&str]) -> Output {
        let mut c = bin();
        c.current_dir(self.dir.path()).args(["bench", sub]);
        for &i in modems {
            c.args(["--port", &self.ports[i]]);
        }
        c.args(["--state", state, "--operator", "tech"]);
        c.args([
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

    fn export(&self, state: &str, modems: &[usize], out: &str) {
        let o = self.bench(state, "export", modems, &["--out", out]);
        assert!(o.status.success(), "export {out}: {}", text(&o));
    }

    fn import(&self, state: &str, modems: &[usize], bundle: &str) -> Output {
        self.bench(
            state,
            "import",
            modems,
            &["--bundle", bundle, "--trust", "ca/ca.pem"],
        )
    }

    fn status(&self, state: &str) -> serde_json::Value {
        json(&self.nrfca(&["bench", "status", "--state", state, "--json"]))
    }

    /// The checkpoints bench `state` holds (the newest per CA).
    fn held(&self, state: &str) -> Vec<Cp> {
        self.status(state)["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let c = &c["checkpoint"];
                (
                    c["origin"].as_str().unwrap().to_string(),
                    c["size"].as_u64().unwrap(),
                    c["root"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The bench's record of modem `i` (by IMEI).
    fn device(&self, state: &str, i: usize) -> serde_json::Value {
        let imei = self.sim.snapshot(i).imei;
        self.status(state)["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["imei"] == imei.as_str())
            .unwrap_or_else(|| panic!("modem {i} not in {state}"))
            .clone()
    }

    /// The `checkpoint` file of bundle `b`.
    fn bundle_cp(&self, b: &str) -> Cp {
        let t = fs::read_to_string(self.p(b).join("checkpoint")).unwrap();
        let l: Vec<&str> = t.lines().collect();
        assert_eq!(l.len(), 3, "{t}");
        (l[0].to_string(), l[1].parse().unwrap(), l[2].to_string())
    }

    /// The `checkpoint` lines of the statement beside `requests`.
    fn quoted(&self, requests: &str) -> Vec<String> {
        fs::read_to_string(self.p(&format!("{requests}.sig")))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("checkpoint "))
            .map(str::to_string)
            .collect()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        json(&self.nrfca(&["audit", "show", "--ca-dir", "ca", "--json"]))
            .as_array()
            .unwrap()
            .clone()
    }

    fn events(&self, event: &str) -> usize {
        self.audit().iter().filter(|r| r["event"] == event).count()
    }

    fn issued(&self) -> u64 {
        json(&self.nrfca(&["ca", "show", "--ca-dir", "ca", "--json"]))["issued"]
            .as_u64()
            .unwrap()
    }

    fn verify(&self, checkpoints: &[&str]) -> Output {
        let mut args = vec!["audit", "verify", "--ca-dir", "ca"];
        for c in checkpoints {
            args.extend(["--checkpoint", c]);
        }
        self.nrfca(&args)
    }

    /// Modem-changing commands modem `i` has seen.
    fn writes(&self, i: usize) -> usize {
        self.sim
            .snapshot(i)
            .commands
            .iter()
            .filter(|c| common::changes_modem(c))
            .count()
    }

    /// The certificate stored in modem `i`'s security tag.
    fn modem_cert(&self, i: usize) -> Option<String> {
        self.sim
            .snapshot(i)
            .credential(TAG, 1)
            .and_then(|c| c.content.clone())
    }
}

fn cp_line((origin, size, root): &Cp) -> String {
    format!("checkpoint {origin} {size} {root}")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn two_benches_three_batches_and_a_restored_ca_db_caught_at_sign_and_at_import() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ports) = common::test_modems(dir.path(), 7);
    let lab = Lab { dir, sim, ports };
    // Modems 0 and 6 are bench A's; 1–3 (batch 2), 4 (batch 3) and 5 (later) are bench B's.

    // ---- The CA, two enrolled benches, both trusted by the officer.
    ca_init_age(
        &lab.p("ca"),
        &lab.p("officer.agekey"),
        "CN=E2E Evidence CA,O=Test",
        &["--operator", "officer"],
    );
    for (state, name) in [("SA", "bench-a"), ("SB", "bench-b")] {
        let o = lab.nrfca(&["bench", "init", "--state", state, "--name", name]);
        assert!(o.status.success(), "{}", text(&o));
        let key = format!("{state}/bench.pem");
        let o = lab.officer(&["ca", "trust-bench", "--name", name, "--key", &key]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(lab.events("bench-trusted"), 2);

    // ---- Batch 1 on bench A: exported, signed, imported; A now holds c1.
    lab.export("SA", &[0], "r1.csv");
    assert!(lab.quoted("r1.csv").is_empty(), "A holds no checkpoint yet");
    let o = lab.sign("b1", "r1.csv");
    assert!(o.status.success(), "sign b1: {}", text(&o));
    let o = lab.import("SA", &[0], "b1");
    assert!(o.status.success(), "import b1: {}", text(&o));
    let c1 = lab.bundle_cp("b1");
    assert_eq!(lab.held("SA"), std::slice::from_ref(&c1));
    assert!(lab.modem_cert(0).is_some());
    // The officer's backup: the CA directory as it stands after batch 1.
    copy_dir(&lab.p("ca"), &lab.p("backup"));

    // ---- Bench B exports batch 2 and, into another file, batch 3; it holds no checkpoint,
    // so neither statement quotes one.
    lab.export("SB", &[1, 2, 3], "r2.csv");
    lab.export("SB", &[4], "r3.csv");
    assert!(lab.quoted("r2.csv").is_empty());
    assert!(lab.quoted("r3.csv").is_empty());
    let o = lab.sign("b2", "r2.csv");
    assert!(o.status.success(), "sign b2: {}", text(&o));
    let o = lab.import("SB", &[1, 2, 3], "b2");
    assert!(o.status.success(), "import b2: {}", text(&o));
    let c2 = lab.bundle_cp("b2");
    assert_eq!(c2.0, c1.0, "one CA, one origin");
    assert!(c2.1 > c1.1);
    assert_eq!(lab.held("SB"), std::slice::from_ref(&c2));
    assert_eq!(lab.issued(), 4);
    // The log as it was: it extends both bundles' checkpoints.
    let o = lab.verify(&["b1/checkpoint", "b2/checkpoint"]);
    assert!(o.status.success(), "{}", text(&o));

    // ---- The rollback: the CA machine's ca.db replaced by the backup. (The ca.db it
    // replaced is kept aside: the officer finds it later.)
    fs::copy(lab.p("ca/ca.db"), lab.p("newest.db")).unwrap();
    fs::copy(lab.p("backup/ca.db"), lab.p("ca/ca.db")).unwrap();
    assert_eq!(lab.issued(), 1, "the restored ca.db knows batch 1 only");

    // ---- Caught at sign: B exports again after importing bundle 2, quoting c2.
    lab.export("SB", &[5], "r4.csv");
    assert_eq!(lab.quoted("r4.csv"), [cp_line(&c2)]);
    let records = lab.audit().len();
    let unlocks = lab.events("key-unlocked");
    let before = entries(lab.dir.path());
    let o = lab.sign("b4", "r4.csv");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("size {}", c2.1)), "{err}");
    assert!(err.contains("restored from an older backup"), "{err}");
    assert!(err.contains("Do not sign"), "{err}");
    assert!(err.contains("nrfca audit verify"), "{err}");
    // Nothing written: no bundle or staging directory, no certificate, no unlock; one
    // input-refused record with the stable code; the log still verifies.
    assert_eq!(entries(lab.dir.path()), before);
    assert_eq!(lab.issued(), 1);
    let log = lab.audit();
    assert_eq!(log.len(), records + 1);
    let last = log.last().unwrap();
    assert_eq!(last["event"], "input-refused");
    assert_eq!(last["details"]["code"], "log-not-extended");
    assert_eq!(
        lab.events("key-unlocked"),
        unlocks,
        "refused before unlocking"
    );
    let o = lab.verify(&[]);
    assert!(o.status.success(), "{}", text(&o));

    // ---- Caught at import: batch 3 quotes nothing, so the restored ca.db signs it, and its
    // bundle carries the restored log's checkpoint, a fork of the one bench B holds.
    let o = lab.sign("b3", "r3.csv");
    assert!(o.status.success(), "sign b3: {}", text(&o));
    let c3 = lab.bundle_cp("b3");
    assert_eq!(c3.0, c2.0);
    assert_ne!(c3.2, c2.2);
    // Batch 3 (one device, after the refusal) adds fewer records than batch 2 (three devices)
    // did: the fork is shorter than c2 (a longer fork is refused too, as having no proof from
    // c2: `checkpoint-proof-missing`).
    assert!(c3.1 < c2.1, "{} vs {}", c3.1, c2.1);
    assert_eq!(lab.issued(), 2);
    let writes = lab.writes(4);
    let o = lab.import("SB", &[4], "b3");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[log-rolled-back]"), "{err}");
    assert!(err.contains("before touching any modem"), "{err}");
    assert!(err.contains(&format!("size {}", c2.1)), "{err}");
    assert!(err.contains("Do not install this bundle"), "{err}");
    assert_eq!(lab.writes(4), writes, "nothing sent to modem 4");
    assert_eq!(lab.modem_cert(4), None, "no certificate on modem 4");
    let dev = lab.device("SB", 4);
    assert_eq!(dev["state"], "exported", "{dev}");
    assert!(dev["bundle"].is_null(), "{dev}");
    assert_eq!(
        lab.held("SB"),
        std::slice::from_ref(&c2),
        "B still holds c2"
    );
    let o = lab.nrfca(&["bench", "status", "--state", "SB", "--journal"]);
    assert!(
        text(&o).contains("refused: log-rolled-back"),
        "{}",
        text(&o)
    );
    // Bench A, which holds c1 only, cannot tell: the fork extends c1, and its import check
    // (read only here) would accept it. Only a bench that saw the lost tail catches it.
    assert_eq!(lab.held("SA"), std::slice::from_ref(&c1));
    let ca_der =
        nrfca::internal::util::first_cert_der(&fs::read_to_string(lab.p("ca/ca.pem")).unwrap())
            .unwrap();
    let state_a = nrfca::bench::state::State::open_existing(&lab.p("SA")).unwrap();
    let verdict = nrfca::bench::evidence::check_bundle(&lab.p("b3"), &ca_der, &state_a).unwrap();
    assert!(
        matches!(
            verdict,
            nrfca::bench::evidence::CheckpointVerdict::Extends { .. }
        ),
        "{verdict:?}"
    );
    drop(state_a);

    // ---- The fork grows past c2: bench A's next batch (quoting c1, which the fork extends)
    // is signed on the restored ca.db. Its bundle has no proof from c2, so bench B refuses
    // it too (`checkpoint-proof-missing`), and doing what that message says (export again
    // into the requests file, whose statement then quotes c2) brings the refusal to `sign`.
    lab.export("SA", &[6], "r5.csv");
    assert_eq!(lab.quoted("r5.csv"), [cp_line(&c1)]);
    let o = lab.sign("b5", "r5.csv");
    assert!(o.status.success(), "sign b5: {}", text(&o));
    let c5 = lab.bundle_cp("b5");
    assert!(c5.1 > c2.1, "{} vs {}", c5.1, c2.1);
    let o = lab.import("SB", &[4], "b5");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[checkpoint-proof-missing]"), "{err}");
    assert!(err.contains("before touching any modem"), "{err}");
    assert!(err.contains("nrfca bench export"), "{err}");
    assert_eq!(lab.writes(4), writes, "nothing sent to modem 4");
    assert_eq!(lab.held("SB"), std::slice::from_ref(&c2));
    lab.export("SB", &[4], "r3.csv");
    assert_eq!(lab.quoted("r3.csv"), [cp_line(&c2)]);
    let records = lab.audit().len();
    let o = lab.sign("b3-again", "r3.csv");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!lab.p("b3-again").exists());
    let log = lab.audit();
    assert_eq!(log.len(), records + 1);
    assert_eq!(log.last().unwrap()["details"]["code"], "log-not-extended");

    // ---- The auditor: the restored ca.db does not extend bundle 2's checkpoint, and does
    // extend bundle 1's.
    let o = lab.verify(&["b2/checkpoint"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("b2/checkpoint"), "{err}");
    assert!(err.contains("does not extend"), "{err}");
    let o = lab.verify(&["b1/checkpoint"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("audit log intact"), "{}", text(&o));

    // ---- The officer guide's way out: the newest ca.db back in place, checked against the
    // bench's checkpoint; then the refused requests sign, and bench B imports them.
    fs::copy(lab.p("ca/ca.db"), lab.p("forked.db")).unwrap();
    fs::copy(lab.p("newest.db"), lab.p("ca/ca.db")).unwrap();
    let o = lab.verify(&["b1/checkpoint", "b2/checkpoint"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lab.sign("b4", "r4.csv");
    assert!(o.status.success(), "sign b4: {}", text(&o));
    let c4 = lab.bundle_cp("b4");
    assert!(c4.1 > c2.1);
    let o = lab.import("SB", &[5], "b4");
    assert!(o.status.success(), "import b4: {}", text(&o));
    assert!(
        text(&o).contains(&format!("extends the size {} held", c2.1)),
        "{}",
        text(&o)
    );
    assert_eq!(lab.held("SB"), [c4]);
    assert!(lab.modem_cert(5).is_some());
    assert_eq!(
        lab.issued(),
        5,
        "batches 1, 2 and 4; batch 3 is only in the fork"
    );
}
