//! Key custody through the binary (SPEC §13): a CA whose key is in a SoftHSM2 token (init,
//! sign, `audit verify`, `bench import` onto simulated modems, openssl verifies the device
//! certificates, a wrong PIN, the token deleted mid-batch rolls the batch back) and a CA held
//! 2-of-3 by custodians (sign with 2 shares; every refusal exits 2 and is audited as
//! `unlock-failed` with its code; after `ca reshare` the new set works and the old does not);
//! `--scrypt-log-n` recorded in the key file and the audit log.
//! SoftHSM2 tests skip (with a note) where it is absent; they fail under
//! `NRFCA_REQUIRE_TOOLS=1`.
#![cfg(feature = "bench")]

mod common;

use common::{bin, have_openssl, openssl, run, softhsm_module, stderr, tool_missing, write_secret};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ------------------------------------------------------------------------------- helpers

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {:?}\n{}", o.status, stderr(o));
}

fn exit2(o: &Output, what: &str) -> String {
    assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(o));
    stderr(o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The audit log as JSON records (`audit export --format jsonl`).
fn audit_records(ca: &Path, dir: &Path) -> Vec<serde_json::Value> {
    let out = dir.join(format!("audit-{}.jsonl", rand_suffix()));
    let o = run(bin()
        .args(["audit", "export", "--ca-dir", s(ca), "--out", s(&out)])
        .args(["--format", "jsonl"]));
    ok(&o, "audit export");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn last_event(ca: &Path, dir: &Path, event: &str) -> serde_json::Value {
    audit_records(ca, dir)
        .into_iter()
        .rev()
        .find(|r| r["event"] == event)
        .unwrap_or_else(|| panic!("no {event} record"))
}

fn audit_verify(ca: &Path) {
    let o = run(bin().args(["audit", "verify", "--ca-dir", s(ca)]));
    ok(&o, "audit verify");
}

fn gen_requests(path: &Path, n: u32) {
    let o = run(bin().args(["gen", "-n", &n.to_string(), "--out", s(path)]));
    ok(&o, "gen");
}

/// Verify every device certificate of a bundle against ca.pem with openssl.
fn openssl_verify_bundle(ca: &Path, bundle: &Path, dir: &Path) -> usize {
    let Some(openssl) = openssl() else {
        tool_missing("openssl not found");
        return 0;
    };
    let csv = std::fs::read_to_string(bundle.join("certs.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let col = headers
        .iter()
        .position(|h| h.contains("cert") || h.contains("pem"))
        .expect("a certificate column in certs.csv");
    let mut n = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let pem = rec.get(col).unwrap();
        if !pem.contains("BEGIN CERTIFICATE") {
            continue;
        }
        let f = dir.join(format!("dev-{n}.pem"));
        std::fs::write(&f, pem).unwrap();
        let o = Command::new(openssl)
            .args(["verify", "-CAfile", s(&ca.join("ca.pem")), s(&f)])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl verify: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        n += 1;
    }
    n
}

// ------------------------------------------------------------------------------- SoftHSM2

/// A SoftHSM2 token of its own (own SOFTHSM2_CONF and token directory) in `dir`.
struct Token {
    module: PathBuf,
    conf: PathBuf,
    pin_file: PathBuf,
}

const LABEL: &str = "nrfca CA";

fn token(dir: &Path) -> Option<Token> {
    let module = softhsm_module();
    let util = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(module) = module.filter(|_| util) else {
        tool_missing(
            "SoftHSM2 (softhsm2-util and libsofthsm2.so, Debian package softhsm2) not found",
        );
        return None;
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let o = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", LABEL])
        .args(["--so-pin", "87654321", "--pin", "123456"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pin_file = dir.join("pin");
    write_secret(&pin_file, b"123456\n");
    Some(Token {
        module,
        conf,
        pin_file,
    })
}

impl Token {
    fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("NRFCA_PKCS11_PIN");
        c
    }

    fn init(&self, ca: &Path) -> Output {
        run(self
            .cmd()
            .args([
                "ca",
                "init",
                "--ca-dir",
                s(ca),
                "--subject",
                "CN=HSM Test CA",
            ])
            .args(["--pkcs11", s(&self.module), "--token-label", LABEL])
            .args(["--pin-file", s(&self.pin_file), "--operator", "officer"]))
    }

    fn sign(&self, ca: &Path, pin_file: &Path, out: &Path, requests: &Path) -> Command {
        let mut c = self.cmd();
        c.args(["sign", "--ca-dir", s(ca), "--pin-file", s(pin_file)])
            .args(["--out", s(out), "--operator", "officer", s(requests)]);
        c
    }
}

#[test]
fn hsm_init_sign_audit_and_wrong_pin() {
    let dir = tempfile::tempdir().unwrap();
    let Some(t) = token(dir.path()) else { return };
    let ca = dir.path().join("ca");
    ok(&t.init(&ca), "ca init --pkcs11");
    assert!(ca.join("ca.key.pkcs11").is_file());
    assert!(
        !ca.join("ca.key.age").exists(),
        "no key file: the key is in the token"
    );
    let uri = std::fs::read_to_string(ca.join("ca.key.pkcs11")).unwrap();
    assert!(
        uri.starts_with("pkcs11:") && uri.contains("type=private"),
        "{uri}"
    );
    assert!(!uri.contains("123456"), "no PIN in the URI");

    // ca show says how the key is held.
    let o = run(t.cmd().args(["ca", "show", "--ca-dir", s(&ca), "--json"]));
    ok(&o, "ca show");
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["custody"]["kind"], "pkcs11");
    assert_eq!(info["custody"]["token_label"], LABEL);
    assert_eq!(info["unlock_with"], "pin");
    let serial = info["custody"]["token_serial"]
        .as_str()
        .unwrap()
        .to_string();
    let key_id = info["custody"]["key_id"].as_str().unwrap().to_string();
    assert!(!serial.is_empty() && !key_id.is_empty());

    // Sign a batch: every signature by the token.
    let req = dir.path().join("req.csv");
    gen_requests(&req, 20);
    let b1 = dir.path().join("b1");
    let o = run(&mut t.sign(&ca, &t.pin_file, &b1, &req));
    ok(&o, "sign with the token");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("123456"));
    let unlocked = last_event(&ca, dir.path(), "key-unlocked");
    assert_eq!(unlocked["details"]["custody"]["kind"], "pkcs11");
    assert_eq!(
        unlocked["details"]["custody"]["token_serial"],
        serial.as_str()
    );
    assert_eq!(unlocked["details"]["custody"]["key_id"], key_id.as_str());
    audit_verify(&ca);
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    let v = nrfca::bundle::verify(&b1, &ca_pem);
    assert!(v.is_ok(), "bundle verify: {v:?}");
    if have_openssl() {
        assert_eq!(openssl_verify_bundle(&ca, &b1, dir.path()), 20);
    }

    // A wrong PIN: exit 2, the token's word on tries, audited with its code.
    let bad = dir.path().join("bad.pin");
    write_secret(&bad, b"000000\n");
    let o = run(t.cmd().args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&ca),
        "--pin-file",
        s(&bad),
    ]));
    let e = exit2(&o, "wrong PIN");
    assert!(e.contains("wrong PIN"), "{e}");
    assert!(!e.contains("000000"), "the PIN is never printed: {e}");
    let failed = last_event(&ca, dir.path(), "unlock-failed");
    assert_eq!(failed["details"]["code"], "pkcs11-wrong-pin");
    assert_eq!(failed["details"]["custody_kind"], "pkcs11");
    // The PIN from the environment works too.
    let o = run(t.cmd().env("NRFCA_PKCS11_PIN", "123456").args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&ca),
    ]));
    ok(&o, "verify-key with NRFCA_PKCS11_PIN");
    audit_verify(&ca);
}

#[test]
fn hsm_token_deleted_mid_batch_rolls_the_batch_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(t) = token(dir.path()) else { return };
    let ca = dir.path().join("ca");
    ok(&t.init(&ca), "ca init --pkcs11");
    let req = dir.path().join("req.csv");
    gen_requests(&req, 300);
    let out = dir.path().join("b");
    // Pause the batch after 100 requests are checked, delete the token, resume.
    let child = t
        .sign(&ca, &t.pin_file, &out, &req)
        .env("NRFCA_CRASH_AT", "checked:100")
        .env("NRFCA_CRASH_SIGNAL", "STOP")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stat = format!("/proc/{pid}/stat");
    let mut stopped = false;
    for _ in 0..600 {
        let st = std::fs::read_to_string(&stat).unwrap_or_default();
        // The state is the field after the parenthesised command name.
        if st
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
        {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(stopped, "sign did not reach the pause point");
    let o = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &t.conf)
        .args(["--delete-token", "--token", LABEL])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let e = exit2(&o, "token gone mid-batch");
    assert!(
        e.contains("pkcs11-token-gone") && e.contains("rolled back"),
        "{e}"
    );
    assert!(!out.exists(), "no bundle");
    let o = run(t.cmd().args(["ca", "show", "--ca-dir", s(&ca), "--json"]));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["issued"], 0, "nothing of the batch was committed");
    assert_eq!(info["batches"], 0);
    let failed = last_event(&ca, dir.path(), "batch-failed");
    assert_eq!(failed["details"]["code"], "pkcs11-token-gone");
    audit_verify(&ca);
}

#[test]
fn hsm_bundle_imports_onto_simulated_modems() {
    use nrfca::bench::{export, import, ExportOptions, ImportOptions, Status};
    let dir = tempfile::tempdir().unwrap();
    let Some(t) = token(dir.path()) else { return };
    let ca = dir.path().join("ca");
    ok(&t.init(&ca), "ca init --pkcs11");
    let (sim, ports) = common::test_modems(dir.path(), 2);
    let settings = common::port_settings(1500, 600, 5);
    let req = dir.path().join("requests.csv");
    let mut eo = ExportOptions::new(ports.clone(), req.clone());
    eo.state_dir = dir.path().join("S");
    eo.operator = Some("tester".into());
    eo.bench_name = Some("bench-1".into());
    eo.settings = settings.clone();
    export(&eo, &|_| {}).expect("export runs");
    let bundle = dir.path().join("bundle");
    ok(&run(&mut t.sign(&ca, &t.pin_file, &bundle, &req)), "sign");
    let mut io = ImportOptions::new(ports, bundle.clone(), ca.join("ca.pem"));
    io.state_dir = dir.path().join("S");
    io.operator = Some("tester".into());
    io.settings = settings;
    let r = import(&io, &|_| {}).expect("import runs");
    assert!(
        r.devices.iter().all(|d| d.status == Status::Done),
        "{:?}",
        r.devices
    );
    for i in 0..sim.count() {
        let snap = sim.snapshot(i);
        let c = snap.credential(common::TAG, 1).expect("certificate stored");
        assert!(c
            .content
            .as_deref()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE")));
    }
    audit_verify(&ca);
}

// ------------------------------------------------------------------------------- quorum

const LOG_N: &str = "12"; // low work factor: these tests open many shares

struct Quorum {
    dir: tempfile::TempDir,
}

impl Quorum {
    fn new(subject: &str) -> Quorum {
        let q = Quorum {
            dir: tempfile::tempdir().unwrap(),
        };
        for n in ["alice", "bob", "carol", "dave"] {
            write_secret(&q.p(&format!("{n}.pw")), format!("{n} secret\n").as_bytes());
        }
        let o = run(bin()
            .args(["ca", "init", "--ca-dir", s(&q.ca()), "--subject", subject])
            .args([
                "--quorum",
                "2",
                "--custodian",
                "alice",
                "--custodian",
                "bob",
            ])
            .args(["--custodian", "carol", "--scrypt-log-n", LOG_N])
            .args(q.pw_args("--share-passphrase-file", &["alice", "bob", "carol"])));
        ok(&o, "ca init --quorum");
        q
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ca(&self) -> PathBuf {
        self.p("ca")
    }
    fn share(&self, name: &str) -> PathBuf {
        self.ca().join("shares").join(format!("{name}.share.age"))
    }
    fn pw_args(&self, opt: &str, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .flat_map(|n| {
                [
                    opt.to_string(),
                    format!("{n}={}", self.p(&format!("{n}.pw")).display()),
                ]
            })
            .collect()
    }
    /// `ca verify-key` with these share files, each opened with its custodian's passphrase.
    fn verify(&self, shares: &[PathBuf]) -> Output {
        let mut c = bin();
        c.args(["ca", "verify-key", "--ca-dir", s(&self.ca())]);
        for sh in shares {
            c.arg("--share").arg(sh);
        }
        c.args(self.pw_args(
            "--share-passphrase-file",
            &["alice", "bob", "carol", "dave"],
        ));
        run(&mut c)
    }
    fn refused(&self, shares: &[PathBuf], code: &str) -> String {
        let o = self.verify(shares);
        let e = exit2(&o, code);
        let r = last_event(&self.ca(), self.dir.path(), "unlock-failed");
        assert_eq!(r["details"]["code"], code, "{e}");
        assert_eq!(r["details"]["custody_kind"], "quorum");
        e
    }
}

#[test]
fn quorum_sign_refusals_and_reshare() {
    let q = Quorum::new("CN=Quorum Test CA");
    let ca = q.ca();
    // The work factor is recorded in each share and in the audit log.
    let share = std::fs::read(q.share("alice")).unwrap();
    assert_eq!(nrfca::signer::secret::scrypt_log_n(&share), Some(12));
    let created = last_event(&ca, q.dir.path(), "ca-created");
    assert_eq!(created["details"]["scrypt_log_n"], 12);
    assert_eq!(created["details"]["custody"]["kind"], "quorum");
    let o = run(bin().args(["ca", "show", "--ca-dir", s(&ca), "--json"]));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["custody"]["threshold"], 2);
    assert_eq!(
        info["custody"]["custodians"],
        serde_json::json!(["alice", "bob", "carol"])
    );
    let old_set = info["custody"]["set_id"].as_str().unwrap().to_string();

    // Sign with two shares; the audit names who took part.
    let req = q.p("req.csv");
    gen_requests(&req, 5);
    let out = q.p("b1");
    let o = run(bin()
        .args(["sign", "--ca-dir", s(&ca), "--out", s(&out), s(&req)])
        .args([
            "--share",
            s(&q.share("alice")),
            "--share",
            s(&q.share("carol")),
        ])
        .args(q.pw_args("--share-passphrase-file", &["alice", "carol"])));
    ok(&o, "sign with 2 shares");
    let u = last_event(&ca, q.dir.path(), "key-unlocked");
    assert_eq!(
        u["details"]["custody"]["participants"],
        serde_json::json!(["alice", "carol"])
    );
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    let v = nrfca::bundle::verify(&out, &ca_pem);
    assert!(v.is_ok(), "{v:?}");

    // Every refusal: exit 2, audited with its code.
    let e = q.refused(&[q.share("alice")], "quorum-too-few-shares");
    assert!(
        e.contains("bob") && e.contains("carol"),
        "names who is missing: {e}"
    );
    q.refused(
        &[q.share("alice"), q.share("alice")],
        "quorum-duplicate-share",
    );
    let other = Quorum::new("CN=Other CA");
    q.refused(
        &[q.share("alice"), other.share("bob")],
        "quorum-share-other-ca",
    );
    // A wrong custodian passphrase: bob's share under a file name announcing carol.
    let wrong = q.p("carol.share.age");
    std::fs::copy(q.share("bob"), &wrong).unwrap();
    q.refused(&[q.share("alice"), wrong], "quorum-wrong-share-secret");

    // Reshare: alice + bob of the old set → alice, dave, carol (2-of-3).
    let keep = q.p("old");
    std::fs::create_dir(&keep).unwrap();
    for n in ["alice", "bob"] {
        std::fs::copy(q.share(n), keep.join(format!("{n}.share.age"))).unwrap();
    }
    let o = run(bin()
        .args(["ca", "reshare", "--ca-dir", s(&ca), "--quorum", "2"])
        .args([
            "--custodian",
            "alice",
            "--custodian",
            "dave",
            "--custodian",
            "carol",
        ])
        .args(["--scrypt-log-n", LOG_N])
        .args([
            "--share",
            s(&q.share("alice")),
            "--share",
            s(&q.share("bob")),
        ])
        .args(q.pw_args("--share-passphrase-file", &["alice", "bob"]))
        .args(q.pw_args("--new-share-passphrase-file", &["alice", "dave", "carol"])));
    ok(&o, "ca reshare");
    let r = last_event(&ca, q.dir.path(), "key-reshared");
    assert_eq!(r["details"]["old_set"], old_set.as_str());
    assert_ne!(r["details"]["new_set"], old_set.as_str());
    // The new set works (any 2), the old set does not.
    ok(&q.verify(&[q.share("dave"), q.share("carol")]), "new set");
    q.refused(
        &[keep.join("alice.share.age"), keep.join("bob.share.age")],
        "quorum-share-old-set",
    );
    // Not a mix of old and new either.
    assert_eq!(
        q.verify(&[keep.join("alice.share.age"), q.share("dave")])
            .status
            .code(),
        Some(2)
    );
    audit_verify(&ca);
}

#[test]
fn scrypt_log_n_is_recorded_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let pw = dir.path().join("pw");
    write_secret(&pw, b"correct horse battery staple\n");
    let o = run(bin()
        .args(["ca", "init", "--ca-dir", s(&ca), "--subject", "CN=Log N CA"])
        .args(["--passphrase-file", s(&pw), "--scrypt-log-n", "14"]));
    ok(&o, "ca init --scrypt-log-n 14");
    let key = std::fs::read(ca.join("ca.key.age")).unwrap();
    assert_eq!(nrfca::signer::secret::scrypt_log_n(&key), Some(14));
    let created = last_event(&ca, dir.path(), "ca-created");
    assert_eq!(created["details"]["scrypt_log_n"], 14);
    let o = run(bin().args(["ca", "show", "--ca-dir", s(&ca)]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("work factor 2^14"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(bin().args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&ca),
        "--passphrase-file",
        s(&pw),
    ]));
    ok(&o, "verify-key");
    let u = last_event(&ca, dir.path(), "key-unlocked");
    assert_eq!(u["details"]["custody"]["scrypt_log_n"], 14);
    // Out of range: refused before anything is written.
    let o = run(bin()
        .args([
            "ca",
            "init",
            "--ca-dir",
            s(&dir.path().join("ca2")),
            "--subject",
            "CN=X",
        ])
        .args(["--passphrase-file", s(&pw), "--scrypt-log-n", "30"]));
    exit2(&o, "log_n 30");
    assert!(!dir.path().join("ca2").join("ca.pem").exists());
}

#[test]
fn protect_moves_a_passphrase_key_to_a_quorum_then_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let pw = dir.path().join("pw");
    write_secret(&pw, b"officer passphrase\n");
    for n in ["alice", "bob"] {
        write_secret(
            &dir.path().join(format!("{n}.pw")),
            format!("{n} pw\n").as_bytes(),
        );
    }
    let o = run(bin()
        .args(["ca", "init", "--ca-dir", s(&ca), "--subject", "CN=Move CA"])
        .args(["--passphrase-file", s(&pw), "--scrypt-log-n", LOG_N]));
    ok(&o, "ca init");
    let pwf = |n: &str| format!("{n}={}", dir.path().join(format!("{n}.pw")).display());
    // passphrase → quorum 2-of-2
    let o = run(bin()
        .args([
            "ca",
            "protect",
            "--ca-dir",
            s(&ca),
            "--passphrase-file",
            s(&pw),
        ])
        .args([
            "--quorum",
            "2",
            "--custodian",
            "alice",
            "--custodian",
            "bob",
        ])
        .args(["--scrypt-log-n", LOG_N])
        .args(["--new-share-passphrase-file", &pwf("alice")])
        .args(["--new-share-passphrase-file", &pwf("bob")]));
    ok(&o, "protect --quorum");
    let r = last_event(&ca, dir.path(), "key-protection-changed");
    assert_eq!(r["details"]["old_method"], "passphrase");
    assert_eq!(r["details"]["new_method"], "quorum");
    // The old passphrase no longer opens the CA; the shares do.
    let o = run(bin().args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&ca),
        "--passphrase-file",
        s(&pw),
    ]));
    exit2(&o, "old passphrase after the move");
    let shares = |c: &mut Command| {
        for n in ["alice", "bob"] {
            c.arg("--share")
                .arg(ca.join("shares").join(format!("{n}.share.age")))
                .args(["--share-passphrase-file", &pwf(n)]);
        }
    };
    let mut c = bin();
    c.args(["ca", "verify-key", "--ca-dir", s(&ca)]);
    shares(&mut c);
    ok(&run(&mut c), "verify-key with the shares");
    audit_verify(&ca);

    // quorum → token
    let Some(t) = token(dir.path()) else { return };
    let mut c = t.cmd();
    c.args([
        "ca",
        "protect",
        "--ca-dir",
        s(&ca),
        "--pkcs11",
        s(&t.module),
    ])
    .args(["--token-label", LABEL, "--pin-file", s(&t.pin_file)]);
    shares(&mut c);
    ok(&run(&mut c), "protect --pkcs11");
    assert!(ca.join("ca.key.pkcs11").is_file());
    assert!(!ca.join("ca.key.age").exists());
    let o = run(t.cmd().args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&ca),
        "--pin-file",
        s(&t.pin_file),
    ]));
    ok(&o, "verify-key with the token");
    let o = run(t.cmd().args(["ca", "show", "--ca-dir", s(&ca), "--json"]));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["custody"]["kind"], "pkcs11");
    assert!(!info["retired_key_files"].as_array().unwrap().is_empty());
    audit_verify(&ca);
}

#[test]
fn demo_runs_with_a_quorum_and_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("q");
    let o = run(bin()
        .args([
            "demo",
            "--devices",
            "1",
            "--latency",
            "test",
            "--custody",
            "quorum",
        ])
        .args(["--dir", s(&d)]));
    ok(&o, "demo --custody quorum");
    let u = last_event(&d.join("ca"), dir.path(), "key-unlocked");
    assert_eq!(u["details"]["custody"]["kind"], "quorum");
    assert_eq!(u["details"]["custody"]["threshold"], 2);

    let d = dir.path().join("h");
    let o = run(bin()
        .args([
            "demo",
            "--devices",
            "1",
            "--latency",
            "test",
            "--custody",
            "hsm",
        ])
        .args(["--dir", s(&d)]));
    if softhsm_module().is_none() {
        let e = exit2(&o, "demo --custody hsm without SoftHSM2");
        assert!(e.contains("SoftHSM2"), "{e}");
        tool_missing("SoftHSM2 not found: demo --custody hsm checked for its refusal only");
        return;
    }
    ok(&o, "demo --custody hsm");
    let u = last_event(&d.join("ca"), dir.path(), "key-unlocked");
    assert_eq!(u["details"]["custody"]["kind"], "pkcs11");
    assert!(!d.join("ca").join("ca.key.age").exists());
}

#[test]
fn import_into_a_token_and_into_a_quorum() {
    if !have_openssl() {
        tool_missing("openssl not found: ca import --pkcs11/--quorum not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::openssl_p256_key(dir.path(), "prv.pem");
    common::openssl_in(
        dir.path(),
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "prv.pem",
            "-subj",
            "/CN=Imported CA",
            "-days",
            "365",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            "ca.pem",
        ],
    );
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("prv.pem"));
    // Into a quorum.
    for n in ["alice", "bob"] {
        write_secret(
            &dir.path().join(format!("{n}.pw")),
            format!("{n} pw\n").as_bytes(),
        );
    }
    let pwf = |n: &str| format!("{n}={}", dir.path().join(format!("{n}.pw")).display());
    let q = dir.path().join("q");
    let o = run(bin()
        .args([
            "ca",
            "import",
            "--ca-dir",
            s(&q),
            "--cert",
            s(&cert),
            "--key",
            s(&key),
        ])
        .args([
            "--quorum",
            "2",
            "--custodian",
            "alice",
            "--custodian",
            "bob",
        ])
        .args(["--scrypt-log-n", LOG_N])
        .args(["--share-passphrase-file", &pwf("alice")])
        .args(["--share-passphrase-file", &pwf("bob")]));
    ok(&o, "ca import --quorum");
    let imported = last_event(&q, dir.path(), "ca-imported");
    assert_eq!(imported["details"]["custody"]["kind"], "quorum");
    let mut c = bin();
    c.args(["ca", "verify-key", "--ca-dir", s(&q)]);
    for n in ["alice", "bob"] {
        c.arg("--share")
            .arg(q.join("shares").join(format!("{n}.share.age")))
            .args(["--share-passphrase-file", &pwf(n)]);
    }
    ok(&run(&mut c), "verify-key of the imported quorum CA");
    // Into a token.
    let Some(t) = token(dir.path()) else { return };
    let h = dir.path().join("h");
    let o = run(t
        .cmd()
        .args([
            "ca",
            "import",
            "--ca-dir",
            s(&h),
            "--cert",
            s(&cert),
            "--key",
            s(&key),
        ])
        .args(["--pkcs11", s(&t.module), "--token-label", LABEL])
        .args(["--pin-file", s(&t.pin_file)]));
    ok(&o, "ca import --pkcs11");
    assert!(!h.join("ca.key.age").exists());
    let o = run(t.cmd().args([
        "ca",
        "verify-key",
        "--ca-dir",
        s(&h),
        "--pin-file",
        s(&t.pin_file),
    ]));
    ok(&o, "verify-key of the imported token CA");
    let u = last_event(&h, dir.path(), "key-unlocked");
    assert_eq!(u["details"]["custody"]["kind"], "pkcs11");
}
