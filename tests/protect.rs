//! `nrfca ca protect`: a new passphrase or new age recipients for the same CA key, through the
//! real binary, with real age encryption (scrypt at the work factor `ca init` uses) and files.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{age_identity, bin, run, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn retired(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with("ca.key.age.retired-"))
        .collect()
}

/// No temporary key file left, and the CA directory holds only the expected names.
fn assert_no_temp(dir: &Path) {
    for n in names(dir) {
        assert!(
            !n.contains(".tmp-"),
            "temporary file {n} left in {}",
            dir.display()
        );
    }
}

/// `nrfca ca protect --ca-dir CA_DIR ARGS...`, not run yet.
fn protect_cmd(ca_dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.args(["ca", "protect", "--ca-dir", s(ca_dir)]).args(args);
    c
}

/// `nrfca ca protect --ca-dir CA_DIR ARGS...`, run.
fn protect(ca_dir: &Path, args: &[&str]) -> Output {
    run(&mut protect_cmd(ca_dir, args))
}

fn verify_key(ca_dir: &Path, args: &[&str]) -> Output {
    run(bin()
        .args(["ca", "verify-key", "--ca-dir", s(ca_dir)])
        .args(args))
}

fn audit_events(ca_dir: &Path) -> Vec<Value> {
    let o = run(bin().args(["audit", "show", "--ca-dir", s(ca_dir), "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    match v {
        Value::Array(a) => a,
        other => other["records"].as_array().cloned().unwrap_or_default(),
    }
}

fn audit_verify_ok(ca_dir: &Path) {
    let o = run(bin().args(["audit", "verify", "--ca-dir", s(ca_dir)]));
    assert!(o.status.success(), "audit verify: {}", stderr(&o));
}

fn show_json(ca_dir: &Path) -> Value {
    let o = run(bin().args(["ca", "show", "--ca-dir", s(ca_dir), "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    nrfca::internal::crypto::sha256_hex(b)
}

#[test]
fn passphrase_to_passphrase_to_recipients() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let old_pw = root.path().join("old.pw");
    common::write_secret(&old_pw, b"old passphrase one\n");
    let new_pw = root.path().join("new.pw");
    common::write_secret(&new_pw, b"new passphrase two\n");
    let bad_pw = root.path().join("bad.pw");
    common::write_secret(&bad_pw, b"not it\n");

    let o = run(bin().args([
        "ca",
        "init",
        "--ca-dir",
        s(&ca_dir),
        "--subject",
        "CN=Protect Test CA",
        "--passphrase-file",
        s(&old_pw),
        "--operator",
        "alice",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let original = std::fs::read(ca_dir.join("ca.key.age")).unwrap();

    // A wrong current passphrase changes nothing, and the failure is audited.
    let o = protect(
        &ca_dir,
        &[
            "--passphrase-file",
            s(&bad_pw),
            "--new-passphrase-file",
            s(&new_pw),
            "--operator",
            "mallory",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wrong passphrase or identity"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(ca_dir.join("ca.key.age")).unwrap(), original);
    assert!(retired(&ca_dir).is_empty());
    assert_no_temp(&ca_dir);
    let ev = audit_events(&ca_dir);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "unlock-failed", "{last}");
    assert!(!ev.iter().any(|e| e["event"] == "key-protection-changed"));

    // Passphrase -> new passphrase.
    let o = protect(
        &ca_dir,
        &[
            "--passphrase-file",
            s(&old_pw),
            "--new-passphrase-file",
            s(&new_pw),
            "--operator",
            "bob",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["old_method"], "passphrase");
    assert_eq!(rep["new_method"], "passphrase");
    let retired_name = rep["retired_file"].as_str().unwrap().to_string();
    assert_eq!(retired(&ca_dir), vec![retired_name.clone()]);
    assert_no_temp(&ca_dir);
    // The retired file is the old key file, still 0600; the new one is 0600 and different.
    assert_eq!(std::fs::read(ca_dir.join(&retired_name)).unwrap(), original);
    let now = std::fs::read(ca_dir.join("ca.key.age")).unwrap();
    assert_ne!(now, original);
    for f in ["ca.key.age", retired_name.as_str()] {
        let mode = std::fs::metadata(ca_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert_eq!(rep["new_key_sha256"], sha256_hex(&now));
    assert!(nrfca::signer::secret::scrypt_log_n(&now).unwrap() >= 18);

    // The old passphrase no longer opens ca.key.age; the new one does.
    let o = verify_key(&ca_dir, &["--passphrase-file", s(&old_pw)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = verify_key(&ca_dir, &["--passphrase-file", s(&new_pw)]);
    assert!(o.status.success(), "{}", stderr(&o));

    // ca show warns about the retired file, in the table and in JSON.
    let o = run(bin().args(["ca", "show", "--ca-dir", s(&ca_dir)]));
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("a retired key file is still present") && table.contains(&retired_name),
        "{table}"
    );
    assert!(!table.contains("interrupted"), "{table}");
    let info = show_json(&ca_dir);
    assert_eq!(info["retired_key_files"][0], retired_name.as_str());
    assert_eq!(info["unlock_with"], "passphrase");
    assert_eq!(info["key_protection"], "passphrase (age scrypt)");

    audit_verify_ok(&ca_dir);
    let ev = audit_events(&ca_dir);
    let changed: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "key-protection-changed")
        .collect();
    assert_eq!(changed.len(), 1);
    let d = &changed[0]["details"];
    assert_eq!(d["retired_file"], retired_name.as_str(), "{d}");
    assert_eq!(d["new_key_sha256"], sha256_hex(&now), "{d}");
    assert_eq!(d["old_method"], "passphrase");
    assert_eq!(d["new_method"], "passphrase");
    assert_eq!(changed[0]["operator"], "bob");

    // Passphrase (from NRFCA_PASSPHRASE) -> recipients, proven with --new-identity.
    let id2 = root.path().join("id2.agekey");
    let r2 = age_identity(&id2);
    let id3 = root.path().join("id3.agekey");
    let r3 = age_identity(&id3);
    let o = run(protect_cmd(
        &ca_dir,
        &[
            "--new-recipient",
            &r2,
            "--new-recipient",
            &r3,
            "--new-identity",
            s(&id2),
        ],
    )
    .env("NRFCA_PASSPHRASE", "new passphrase two"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("shred -u"), "{}", stderr(&o));
    assert_eq!(retired(&ca_dir).len(), 2);
    assert_no_temp(&ca_dir);
    for id in [&id2, &id3] {
        let o = verify_key(&ca_dir, &["--identity", s(id)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = verify_key(&ca_dir, &["--passphrase-file", s(&new_pw)]);
    assert_eq!(o.status.code(), Some(2));
    let info = show_json(&ca_dir);
    assert_eq!(info["unlock_with"], "identity");
    let kp = info["key_protection"].as_str().unwrap();
    assert!(kp.contains(&r2) && kp.contains(&r3), "{kp}");
    assert_eq!(info["retired_key_files"].as_array().unwrap().len(), 2);
    audit_verify_ok(&ca_dir);

    // Once the retired files are gone, so is the warning.
    for n in retired(&ca_dir) {
        std::fs::remove_file(ca_dir.join(n)).unwrap();
    }
    let info = show_json(&ca_dir);
    assert!(info["warnings"].as_array().unwrap().is_empty(), "{info}");
}

/// Recipient CA (no scrypt): returns (ca_dir, identity file).
fn recipient_ca(root: &Path) -> (PathBuf, PathBuf) {
    let ca_dir = root.join("ca");
    let id = root.join("id1.agekey");
    common::ca_init_age(&ca_dir, &id, "CN=Protect Test CA", &["--operator", "alice"]);
    (ca_dir, id)
}

#[test]
fn refusals_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (ca_dir, id1) = recipient_ca(root.path());
    let original = std::fs::read(ca_dir.join("ca.key.age")).unwrap();
    let id2 = root.path().join("id2.agekey");
    let r2 = age_identity(&id2);
    let other = root.path().join("other.agekey");
    let _ = age_identity(&other);
    let records_before = audit_events(&ca_dir).len();

    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(ca_dir.join("ca.key.age")).unwrap(),
            original,
            "{what}"
        );
        assert!(retired(&ca_dir).is_empty(), "{what}");
        assert_no_temp(&ca_dir);
    };

    // A --new-identity that is not one of the new recipients: refused before anything.
    let o = protect(
        &ca_dir,
        &[
            "--identity",
            s(&id1),
            "--new-recipient",
            &r2,
            "--new-identity",
            s(&other),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds no identity of the new recipients"),
        "{}",
        stderr(&o)
    );
    unchanged("mismatched --new-identity");
    assert_eq!(audit_events(&ca_dir).len(), records_before);

    // New recipients without any --new-identity: refused (the new file could not be proven).
    let o = protect(&ca_dir, &["--identity", s(&id1), "--new-recipient", &r2]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--new-identity"), "{}", stderr(&o));
    unchanged("no --new-identity");

    // A current identity that does not open the key: unlock-failed, nothing else.
    let o = protect(
        &ca_dir,
        &[
            "--identity",
            s(&other),
            "--new-recipient",
            &r2,
            "--new-identity",
            s(&id2),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    unchanged("wrong current identity");
    let ev = audit_events(&ca_dir);
    assert_eq!(ev.last().unwrap()["event"], "unlock-failed");
    assert!(!ev.iter().any(|e| e["event"] == "key-protection-changed"));

    // No new passphrase source and no terminal: exit 2 with what to give.
    let o = protect(&ca_dir, &["--identity", s(&id1)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--new-passphrase-file"),
        "{}",
        stderr(&o)
    );
    unchanged("no new passphrase");
    audit_verify_ok(&ca_dir);

    // And the real thing still works afterwards: recipients -> recipients.
    let o = protect(
        &ca_dir,
        &[
            "--identity",
            s(&id1),
            "--new-recipient",
            &r2,
            "--new-identity",
            s(&id2),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(retired(&ca_dir).len(), 1);
    let o = verify_key(&ca_dir, &["--identity", s(&id1)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = verify_key(&ca_dir, &["--identity", s(&id2)]);
    assert!(o.status.success(), "{}", stderr(&o));
    audit_verify_ok(&ca_dir);
}

#[test]
fn show_flags_a_retired_file_without_a_record() {
    // What a crash between the swap and the commit would leave: a retired file that no
    // key-protection-changed record names.
    let root = tempfile::tempdir().unwrap();
    let (ca_dir, _id1) = recipient_ca(root.path());
    std::fs::hard_link(
        ca_dir.join("ca.key.age"),
        ca_dir.join("ca.key.age.retired-20260101T000000Z"),
    )
    .unwrap();
    let info = show_json(&ca_dir);
    let w = info["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("a retired key file is still present") && w.contains("interrupted"),
        "{w}"
    );
}

#[test]
fn a_failed_record_puts_the_old_file_back() {
    // A trigger in the real ca.db makes the key-protection-changed insert fail after the swap.
    let root = tempfile::tempdir().unwrap();
    let (ca_dir, id1) = recipient_ca(root.path());
    let original = std::fs::read(ca_dir.join("ca.key.age")).unwrap();
    let id2 = root.path().join("id2.agekey");
    let r2 = age_identity(&id2);
    let db = ca_dir.join("ca.db");
    let trigger = "CREATE TRIGGER fail_protect BEFORE INSERT ON audit \
                   WHEN NEW.event = 'key-protection-changed' \
                   BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END;";
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(trigger)
        .unwrap();
    let unlocked_before = audit_events(&ca_dir)
        .iter()
        .filter(|e| e["event"] == "key-unlocked")
        .count();

    let o = protect(
        &ca_dir,
        &[
            "--identity",
            s(&id1),
            "--new-recipient",
            &r2,
            "--new-identity",
            s(&id2),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the old ca.key.age was put back"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(ca_dir.join("ca.key.age")).unwrap(), original);
    assert!(retired(&ca_dir).is_empty());
    assert_no_temp(&ca_dir);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TRIGGER fail_protect;")
        .unwrap();
    // The unlock of the failed run is recorded; the change is not.
    let ev = audit_events(&ca_dir);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "key-unlocked").count(),
        unlocked_before + 1
    );
    assert!(!ev.iter().any(|e| e["event"] == "key-protection-changed"));
    audit_verify_ok(&ca_dir);
    let o = verify_key(&ca_dir, &["--identity", s(&id1)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_change_record_without_its_checkpoint_is_found() {
    // key-protection-changed is always checkpointed in its transaction: a log cut right after
    // it (the checkpoint removed) is a finding.
    let root = tempfile::tempdir().unwrap();
    let (ca_dir, id1) = recipient_ca(root.path());
    let id2 = root.path().join("id2.agekey");
    let r2 = age_identity(&id2);
    let o = protect(
        &ca_dir,
        &[
            "--identity",
            s(&id1),
            "--new-recipient",
            &r2,
            "--new-identity",
            s(&id2),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    audit_verify_ok(&ca_dir);
    // An export cut after the change record (its checkpoint line removed).
    let log = root.path().join("audit.jsonl");
    let o = run(bin().args(["audit", "export", "--ca-dir", s(&ca_dir), "--out", s(&log)]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap();
    assert!(last.contains("\"checkpoint\""), "{last}");
    assert!(lines.last().unwrap().contains("key-protection-changed"));
    let cut = root.path().join("cut.jsonl");
    std::fs::write(&cut, lines.join("\n") + "\n").unwrap();
    let o = run(bin().args([
        "audit",
        "verify",
        "--file",
        s(&cut),
        "--ca-cert",
        s(&ca_dir.join("ca.pem")),
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("key-protection-changed"), "{err}");
}
