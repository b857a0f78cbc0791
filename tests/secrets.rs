//! Secret hygiene (SPEC §2 "no plaintext key ever touches disk", §9 "wrong passphrase exits 2
//! and writes nothing secret"): every check here can fail.
//!
//! - core dumps off and not ptrace-able while a key or passphrase is in memory: the hardening
//!   call itself, and the real `ca init` / `ca verify-key` processes observed from outside
//!   (`/proc/<pid>/limits`, the owner of `/proc/<pid>`) while scrypt runs;
//! - no passphrase and no key byte (DER, base64, scalar, hex) in any file written, in stdout
//!   or stderr of `ca init`, `ca verify-key` (right and wrong), `sign`, `ca show`, `audit
//!   show/export`, `ca import`; nothing left in TMPDIR;
//! - `ca.key.age` is 0600 and refused (audited) when group/world-readable;
//! - a hostile `ca.key.age` asking for scrypt 2^30 (or 2^23) is refused at once, audited;
//! - secrets have redacted `Debug`.

use age::secrecy::SecretString;
use nrfca::signer::secret::{self, CaKey, Protection, Unlock};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "Tr0ub4dor&3 correct-horse-7d1c9";

mod common;
use common::{bin, contains, stderr};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Every representation of a secret we look for.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    fn passphrase(p: &str) -> Needles {
        Needles(vec![("passphrase".into(), p.as_bytes().to_vec())])
    }
    fn add_key(&mut self, pkcs8: &[u8]) {
        use p256::pkcs8::DecodePrivateKey;
        let scalar = p256::SecretKey::from_pkcs8_der(pkcs8).unwrap().to_bytes();
        let b64 = nrfca::internal::crypto::b64_encode(pkcs8);
        let sb64 = nrfca::internal::crypto::b64_encode(&scalar);
        self.0.push(("PKCS#8 DER".into(), pkcs8.to_vec()));
        self.0.push(("scalar".into(), scalar.to_vec()));
        self.0
            .push(("scalar hex".into(), hex::encode(scalar).into_bytes()));
        self.0
            .push(("scalar HEX".into(), hex::encode_upper(scalar).into_bytes()));
        self.0
            .push(("scalar base64".into(), sb64.as_bytes()[..24].to_vec()));
        // A 40-character piece from the middle of the base64 (line breaks differ by writer).
        self.0
            .push(("PKCS#8 base64".into(), b64.as_bytes()[20..60].to_vec()));
    }
    fn assert_absent(&self, what: &str, bytes: &[u8]) {
        for (name, n) in &self.0 {
            assert!(!contains(bytes, n), "{what} holds the {name}");
        }
    }
}

/// Check every file under `root` except `skip`.
fn assert_no_secret_in_files(root: &Path, needles: &Needles, skip: &[&Path]) -> usize {
    let mut files = Vec::new();
    files_under(root, &mut files);
    let mut n = 0;
    for f in files {
        if skip.iter().any(|s| *s == f) {
            continue;
        }
        needles.assert_absent(&f.display().to_string(), &std::fs::read(&f).unwrap());
        n += 1;
    }
    n
}

fn run_checked(cmd: &mut Command, needles: &Needles, what: &str) -> Output {
    let o = cmd.output().unwrap();
    needles.assert_absent(&format!("stdout of {what}"), &o.stdout);
    needles.assert_absent(&format!("stderr of {what}"), &o.stderr);
    o
}

// ---------------------------------------------------------------- core dumps / ptrace

#[test]
fn harden_process_turns_off_core_dumps_and_dumpability() {
    // This test binary: after the call the process is non-dumpable with core limits 0/0.
    secret::harden_process().unwrap();
    assert!(secret::process_hardened());
    assert!(!nix::sys::prctl::get_dumpable().unwrap());
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    // The hard limit cannot be raised back without privilege (CAP_SYS_RESOURCE).
    if !nix::unistd::getuid().is_root() {
        assert!(nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_CORE,
            1 << 20,
            1 << 20
        )
        .is_err());
    }
    // Idempotent.
    secret::harden_process().unwrap();
}

/// Watch a running nrfca from outside until it exits: did it ever show core limit 0 and a
/// /proc/<pid> no longer owned by us (non-dumpable processes' /proc files belong to root)?
fn watch(mut child: std::process::Child, child_uid: u32) -> (Output, bool, bool) {
    let pid = child.id();
    let (mut core0, mut not_ours) = (false, false);
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
        if let Ok(l) = std::fs::read_to_string(format!("/proc/{pid}/limits")) {
            if let Some(line) = l.lines().find(|l| l.starts_with("Max core file size")) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(4..6) == Some(&["0", "0"][..]) {
                    core0 = true;
                }
            }
        }
        // /proc/<pid>/environ follows the dump owner (the directory inode may be cached).
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/environ")) {
            if m.uid() != child_uid {
                not_ours = true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    (out, core0, not_ours)
}

/// The uid to run an observed child as: ourselves, or `nobody` when we are root (root's
/// own /proc files belong to root whether dumpable or not).
fn observable(cmd: &mut Command, dir: &Path) -> u32 {
    use std::os::unix::process::CommandExt;
    if nix::unistd::getuid().is_root() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        cmd.uid(65534).gid(65534);
        65534
    } else {
        nix::unistd::getuid().as_raw()
    }
}

#[test]
fn commands_that_touch_the_key_run_without_core_dumps() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    // ca init with a passphrase: age calibrates scrypt to about a second, so there is time
    // to look at the process while the passphrase and key are in memory.
    let mut cmd = bin();
    cmd.env("NRFCA_PASSPHRASE", PASS)
        .args(["ca", "init", "--ca-dir"])
        .arg(&ca)
        .args(["--subject", "CN=Hardening CA", "--operator", "officer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let uid = observable(&mut cmd, root.path());
    let (o, core0, not_ours) = watch(cmd.spawn().unwrap(), uid);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(core0, "ca init ran with core dumps allowed");
    assert!(
        not_ours,
        "ca init stayed dumpable (ptrace-able by the same user)"
    );

    // Unlock (scrypt decrypt, about a second).
    let mut cmd = bin();
    cmd.env("NRFCA_PASSPHRASE", PASS)
        .args(["ca", "verify-key", "--ca-dir"])
        .arg(&ca)
        .args(["--operator", "officer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let uid = observable(&mut cmd, root.path());
    let (o, core0, not_ours) = watch(cmd.spawn().unwrap(), uid);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(core0, "unlock ran with core dumps allowed");
    assert!(not_ours, "unlock stayed dumpable");

    // ca protect (decrypt, encrypt to the new passphrase, decrypt again: a few seconds).
    let mut cmd = bin();
    cmd.env("NRFCA_PASSPHRASE", PASS)
        .env(
            "NRFCA_NEW_PASSPHRASE",
            "a new passphrase for the hardening test",
        )
        .args(["ca", "protect", "--ca-dir"])
        .arg(&ca)
        .args(["--operator", "officer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let uid = observable(&mut cmd, root.path());
    let (o, core0, not_ours) = watch(cmd.spawn().unwrap(), uid);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(core0, "ca protect ran with core dumps allowed");
    assert!(not_ours, "ca protect stayed dumpable");
}

// ---------------------------------------------------------------- key file protection

fn passphrase_ca(root: &Path) -> PathBuf {
    let ca = root.join("ca");
    let o = bin()
        .env("NRFCA_PASSPHRASE", PASS)
        .args(["ca", "init", "--ca-dir"])
        .arg(&ca)
        .args(["--subject", "CN=Secrets CA", "--operator", "officer"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    ca
}

fn audit_events(ca: &Path) -> Vec<serde_json::Value> {
    nrfca::signer::audit::show(ca, &Default::default())
        .unwrap()
        .into_iter()
        .map(|r| serde_json::json!({"event": r.event, "details": r.details}))
        .collect()
}

#[test]
fn key_file_mode_hostile_work_factor_and_audited_failures() {
    let root = tempfile::tempdir().unwrap();
    let ca = passphrase_ca(root.path());
    let key = ca.join("ca.key.age");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let ct = std::fs::read(&key).unwrap();
    let log_n = secret::scrypt_log_n(&ct).unwrap();
    assert!(
        (secret::MIN_SCRYPT_LOG_N..=secret::MAX_SCRYPT_LOG_N).contains(&log_n),
        "work factor 2^{log_n}"
    );

    // Group- or world-readable: refused before decrypting, with advice, and audited.
    for bad in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
        let o = bin()
            .env("NRFCA_PASSPHRASE", PASS)
            .args(["ca", "verify-key", "--ca-dir"])
            .arg(&ca)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "mode {bad:o}");
        assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let events = audit_events(&ca);
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "unlock-failed")
        .collect();
    assert_eq!(refused.len(), 3, "{events:#?}");
    assert!(refused
        .iter()
        .all(|e| e["details"]["reason"] == "ca.key.age readable by group or others"));

    // A hostile ca.key.age demanding scrypt 2^30 (and 2^23, one above the limit): refused
    // at once (no 2^30 computation, no 8 GiB allocation), audited, exit 2.
    let good = ct.clone();
    for hostile in [30u8, secret::MAX_SCRYPT_LOG_N + 1] {
        std::fs::remove_file(&key).unwrap();
        let forged = with_work_factor(&good, hostile);
        assert_eq!(secret::scrypt_log_n(&forged), Some(hostile));
        secret::write_secret_file(&key, &forged).unwrap();
        // Refused by the header check before any scrypt work: the message names the work
        // factor the file asks for and the limit (age itself would compute 2^23, or fail
        // allocating 2^30, with another message).
        let o = bin()
            .env("NRFCA_PASSPHRASE", PASS)
            .args(["ca", "verify-key", "--ca-dir"])
            .arg(&ca)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("work factor"), "{}", stderr(&o));
        // And at library level, without the CLI.
        let e = secret::decrypt(
            &forged,
            &Unlock::Passphrase(SecretString::from(PASS.to_string())),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(&format!("2^{hostile}")),
            "the refusal names the file's work factor: {e}"
        );
    }
    let events = audit_events(&ca);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "unlock-failed");
    assert_eq!(
        last["details"]["reason"],
        "scrypt work factor of ca.key.age above the limit"
    );
    // The genuine file still opens; the log verifies.
    std::fs::remove_file(&key).unwrap();
    secret::write_secret_file(&key, &good).unwrap();
    let o = bin()
        .env("NRFCA_PASSPHRASE", PASS)
        .args(["ca", "verify-key", "--ca-dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report = nrfca::signer::audit::verify_db(&ca).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Re-write the scrypt stanza of an age file with another work factor (binary output).
fn with_work_factor(armored: &[u8], log_n: u8) -> Vec<u8> {
    use std::io::Read;
    let mut bin = Vec::new();
    age::armor::ArmoredReader::new(armored)
        .read_to_end(&mut bin)
        .unwrap();
    let text_end = bin.windows(4).position(|w| w == b"\n---").unwrap();
    let head = String::from_utf8(bin[..text_end].to_vec()).unwrap();
    let mut out = String::new();
    for line in head.lines() {
        if let Some(rest) = line.strip_prefix("-> scrypt ") {
            let salt = rest.split(' ').next().unwrap();
            out.push_str(&format!("-> scrypt {salt} {log_n}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.pop();
    let mut v = out.into_bytes();
    v.extend_from_slice(&bin[text_end..]);
    v
}

// ---------------------------------------------------------------- nothing secret anywhere

#[test]
fn no_passphrase_or_key_byte_in_any_file_or_output() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let ppf = root.path().join("pass.txt");
    common::write_secret(&ppf, format!("{PASS}\n").as_bytes());
    let ca = work.join("ca");
    let mut needles = Needles::passphrase(PASS);
    let cmd = |args: &[&str]| {
        let mut c = bin();
        c.env("TMPDIR", &tmp).current_dir(&work).args(args);
        c
    };

    let o = run_checked(
        cmd(&[
            "ca",
            "init",
            "--ca-dir",
            "ca",
            "--subject",
            "CN=Needle CA",
            "--json",
        ])
        .arg("--passphrase-file")
        .arg(&ppf),
        &needles,
        "ca init",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Now we know the key: add it to what must never appear.
    let pkcs8 = secret::decrypt(
        &std::fs::read(ca.join("ca.key.age")).unwrap(),
        &Unlock::Passphrase(SecretString::from(PASS.to_string())),
    )
    .unwrap();
    needles.add_key(&pkcs8);

    // Wrong passphrase (a prefix of the right one, so a partial echo would show).
    let wrong = &PASS[..PASS.len() - 3];
    let o = run_checked(
        cmd(&["ca", "verify-key", "--ca-dir", "ca"]).env("NRFCA_PASSPHRASE", wrong),
        &needles,
        "verify-key (wrong)",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!contains(&o.stderr, wrong.as_bytes()));
    let o = run_checked(
        cmd(&["ca", "verify-key", "--ca-dir", "ca"]).env("NRFCA_PASSPHRASE", PASS),
        &needles,
        "verify-key",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // A batch.
    let o = run_checked(
        &mut cmd(&["gen", "--count", "5", "--out", "requests.csv"]),
        &needles,
        "gen",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_checked(
        cmd(&[
            "sign",
            "--ca-dir",
            "ca",
            "--out",
            "bundle",
            "--pem-files",
            "--json",
            "requests.csv",
        ])
        .env("NRFCA_PASSPHRASE", PASS),
        &needles,
        "sign",
    );
    assert!(o.status.code() == Some(0), "{}", stderr(&o));
    // sign with a wrong passphrase: exit 2, no bundle.
    let o = run_checked(
        cmd(&["sign", "--ca-dir", "ca", "--out", "bundle2", "requests.csv"])
            .env("NRFCA_PASSPHRASE", wrong),
        &needles,
        "sign (wrong)",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!work.join("bundle2").exists());
    for args in [
        &["ca", "show", "--ca-dir", "ca", "--json"][..],
        &["audit", "show", "--ca-dir", "ca", "--json"],
        &["audit", "show", "--ca-dir", "ca"],
        &["audit", "export", "--ca-dir", "ca", "--out", "audit.jsonl"],
        &["audit", "verify", "--ca-dir", "ca", "--json"],
    ] {
        let o = run_checked(&mut cmd(args), &needles, &args.join(" "));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }

    // ca protect to a new passphrase (both from the environment): neither passphrase nor the
    // key shows anywhere, and the new one opens the key.
    const NEW_PASS: &str = "an entirely new passphrase for ca protect";
    needles.0.extend(Needles::passphrase(NEW_PASS).0);
    let o = run_checked(
        cmd(&["ca", "protect", "--ca-dir", "ca", "--json"])
            .env("NRFCA_PASSPHRASE", PASS)
            .env("NRFCA_NEW_PASSPHRASE", NEW_PASS),
        &needles,
        "ca protect",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_checked(
        cmd(&["ca", "verify-key", "--ca-dir", "ca"]).env("NRFCA_PASSPHRASE", NEW_PASS),
        &needles,
        "verify-key (after protect)",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // ca import of a plaintext key: the encrypted copy and the log never hold it.
    let (imp_cert, imp_key, imp_pkcs8) = plaintext_ca(&work);
    let mut needles2 = Needles::passphrase(PASS);
    needles2.add_key(&imp_pkcs8);
    let o = run_checked(
        cmd(&["ca", "import", "--ca-dir", "imported", "--cert"])
            .arg(&imp_cert)
            .arg("--key")
            .arg(&imp_key)
            .arg("--passphrase-file")
            .arg(&ppf),
        &needles2,
        "ca import",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    needles.0.extend(needles2.0);

    let n = assert_no_secret_in_files(&work, &needles, &[&imp_key]);
    assert!(n >= 12, "only {n} files checked");
    let mut left = Vec::new();
    files_under(&tmp, &mut left);
    assert!(left.is_empty(), "files left in TMPDIR: {left:?}");
    // The key files are 0600.
    for k in [ca.join("ca.key.age"), work.join("imported/ca.key.age")] {
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

/// A plaintext P-256 CA as Nordic's create_ca_cert leaves it (SEC1 PEM key), made with our
/// own crypto: (cert path, key path, PKCS#8).
fn plaintext_ca(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    use p256::pkcs8::DecodePrivateKey;
    let (key, pkcs8) = nrfca::internal::crypto::P256Key::generate().unwrap();
    let sk = p256::SecretKey::from_pkcs8_der(&pkcs8).unwrap();
    let sec1 = sk.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let ca_key = CaKey::new(key);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Plaintext Source CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42; 16]));
    let cert = params.self_signed(&ca_key).unwrap();
    let cp = dir.join("src_ca.pem");
    let kp = dir.join("src_prv.pem");
    std::fs::write(&cp, cert.pem()).unwrap();
    std::fs::write(&kp, sec1.as_bytes()).unwrap();
    std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cp, kp, pkcs8.to_vec())
}

#[test]
fn secrets_have_redacted_debug_and_errors() {
    let pass = SecretString::from(PASS.to_string());
    let u = Unlock::Passphrase(pass.clone());
    let p = Protection::Passphrase(pass);
    let (key, pkcs8) = nrfca::internal::crypto::P256Key::generate().unwrap();
    let hexkey = hex::encode(&pkcs8[..]);
    let dbg = format!(
        "{u:?} {p:?} {key:?} {:?}",
        CaKey::new(nrfca::internal::crypto::P256Key::from_pkcs8(&pkcs8).unwrap())
    );
    assert!(!dbg.contains(PASS), "{dbg}");
    assert!(!dbg.contains(&hexkey[40..80]), "{dbg}");
    assert!(!dbg.to_lowercase().contains(&hexkey[40..80]));
    assert_eq!(p.describe(), "passphrase (age scrypt)");
    // Errors of secret handling name files and reasons, never content.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pp");
    common::write_secret(&f, b"\xff\xfe not utf-8 secret");
    let e = secret::read_passphrase_file(&f).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("secret"), "{e:?}");
    let e = nrfca::internal::crypto::pkcs8_from_pem_any(
        "-----BEGIN EC PRIVATE KEY-----\nAAAA!!!!c2VjcmV0\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains("c2VjcmV0"), "{e:?}");
    // The zeroizing PEM reader still reads what it must.
    let sk = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_der(&pkcs8).unwrap()
    };
    let sec1 = sk.to_sec1_pem(p256::pkcs8::LineEnding::CRLF).unwrap();
    let text = format!(
        "Bag Attributes\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        sec1.as_str()
    );
    let back = nrfca::internal::crypto::pkcs8_from_pem_any(&text).unwrap();
    assert_eq!(
        nrfca::internal::crypto::P256Key::from_pkcs8(&back)
            .unwrap()
            .public_key(),
        key.public_key()
    );
    let e = nrfca::internal::crypto::pkcs8_from_pem_any(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("CERTIFICATE"), "{e}");
}
