//! Regression tests of issue 10 (Hardening II) that have no better home: a staging directory
//! is never importable (#1), `--out` inside the CA directory (#6), and the smaller findings of
//! #9 (explicit modes under a permissive umask, no `sync` from `PATH`, FIFO inputs, the
//! per-batch cap on recorded rejects, the passphrase file's mode, an unlock with `ca.db`
//! locked). Each test failed on 845129f.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{bin, ca_init_age, copy_dir, run, stderr, BIN};

/// A CA (age identity) and a requests file of `n` generated devices.
struct Setup {
    dir: tempfile::TempDir,
    ca: PathBuf,
    id: PathBuf,
    requests: PathBuf,
}

fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let id = dir.path().join("id.agekey");
    ca_init_age(&ca, &id, "CN=Hardening CA", &["--operator", "officer"]);
    let requests = dir.path().join("requests.csv");
    let o = run(bin()
        .args(["gen", "--count", &n.to_string(), "--out"])
        .arg(&requests));
    assert!(o.status.success(), "{}", stderr(&o));
    Setup {
        dir,
        ca,
        id,
        requests,
    }
}

impl Setup {
    fn sign(&self, out: &Path, inputs: &[&Path]) -> Command {
        let mut c = bin();
        c.args(["sign", "--ca-dir"])
            .arg(&self.ca)
            .arg("--identity")
            .arg(&self.id)
            .args(["--operator", "officer", "--out"])
            .arg(out)
            .args(inputs);
        c
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.ca.join("ca.db")).unwrap()
    }

    fn audit_verifies(&self) {
        let o = run(bin().args(["audit", "verify", "--ca-dir"]).arg(&self.ca));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn item1_staging_directory_is_never_importable() {
    // A complete, correctly signed bundle under a staging name is still refused: a directory
    // named .<B>.nrfca-partial-<batch> is never a bundle, whatever it holds.
    let s = setup(3);
    let out = s.dir.path().join("bundle");
    let o = run(&mut s.sign(&out, &[&s.requests]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let partial = s.dir.path().join(".bundle.nrfca-partial-0123456789abcdef");
    copy_dir(&out, &partial);
    let trust = std::fs::read(s.ca.join("ca.pem")).unwrap();
    assert!(nrfca::bundle::verify(&out, &trust).is_ok());
    let e = nrfca::bundle::verify(&partial, &trust).unwrap_err();
    assert!(
        e.to_string().contains("unfinished temporary directory"),
        "{e}"
    );
    // Through a symlink with an innocent name too.
    let link = s.dir.path().join("innocent");
    std::os::unix::fs::symlink(&partial, &link).unwrap();
    assert!(nrfca::bundle::verify(&link, &trust).is_err());
    // And bench import refuses it before touching any port.
    let o = run(bin()
        .args([
            "bench",
            "import",
            "--port",
            "/dev/nrfca-no-such-port",
            "--bundle",
        ])
        .arg(&partial)
        .arg("--trust")
        .arg(s.ca.join("ca.pem"))
        .arg("--state")
        .arg(s.dir.path().join("bench-state")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unfinished temporary directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn item6_out_inside_the_ca_directory_is_refused() {
    let s = setup(2);
    let link = s.dir.path().join("ca-link");
    std::os::unix::fs::symlink(&s.ca, &link).unwrap();
    let before = std::fs::read_dir(&s.ca).unwrap().count();
    for out in [
        s.ca.join("ca.db-journal"),
        s.ca.join("bundle"),
        link.join("bundle"),
        s.ca.join(".").join("x"),
    ] {
        let o = run(&mut s.sign(&out, &[&s.requests]));
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: {}",
            out.display(),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("inside the CA directory"),
            "{}: {}",
            out.display(),
            stderr(&o)
        );
    }
    // An --out that carries the staging mark would be refused by bench import and taken for
    // a leftover by a later sign: refused too.
    let o = run(&mut s.sign(
        &s.dir
            .path()
            .join(".b.nrfca-partial-0123456789abcdef0123456789abcdef"),
        &[&s.requests],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mark of sign's temporary"),
        "{}",
        stderr(&o)
    );
    // Nothing was unlocked, written or committed; the CA still works.
    assert_eq!(std::fs::read_dir(&s.ca).unwrap().count(), before);
    assert_eq!(count(&s.db(), "SELECT count(*) FROM batches"), 0);
    let o = run(&mut s.sign(&s.dir.path().join("bundle"), &[&s.requests]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    s.audit_verifies();
}

#[test]
fn item9_bundle_files_get_explicit_modes_under_a_permissive_umask() {
    let s = setup(3);
    let out = s.dir.path().join("bundle");
    let script = format!(
        "umask 000; exec {BIN} sign --ca-dir {} --identity {} --operator officer --pem-files --out {} {}",
        s.ca.display(),
        s.id.display(),
        out.display(),
        s.requests.display()
    );
    let o = run(Command::new("sh").arg("-c").arg(&script));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut todo = vec![out.clone()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o644, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 9, "{files}");
}

#[test]
fn item9_sync_is_never_run_from_path() {
    // While the key is unlocked nothing is resolved from PATH: a `sync` planted there is
    // never executed (the bundle is made durable with syncfs(2)).
    let s = setup(3);
    let fake = s.dir.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    let marker = s.dir.path().join("fake-sync-ran");
    let sync = fake.join("sync");
    std::fs::write(
        &sync,
        format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&sync, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = s.dir.path().join("bundle");
    let o = run(s
        .sign(&out, &[&s.requests])
        .arg("--pem-files")
        .env("PATH", path));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!marker.exists(), "sign ran `sync` from PATH");
}

#[test]
fn item9_fifo_input_is_named_as_one() {
    let s = setup(1);
    let fifo = s.dir.path().join("requests.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let o = run(&mut s.sign(&s.dir.path().join("bundle"), &[&fifo]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("named pipe (FIFO)"), "{e}");
    assert!(!e.contains("does not exist"), "{e}");
}

#[test]
fn item9_rejects_past_the_cap_are_counted_not_recorded() {
    // One device, then the same line 1,200 times more: 1 certificate, 1,200
    // duplicate-in-batch rejects. ca.db records the first MAX_RECORDED_REJECTS one by one and
    // counts the rest in batch-committed; rejects.csv lists every one.
    let s = setup(1);
    let text = std::fs::read_to_string(&s.requests).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let row = lines.next().unwrap();
    let mut big = format!("{header}\n");
    for _ in 0..1201 {
        big.push_str(row);
        big.push('\n');
    }
    let input = s.dir.path().join("dups.csv");
    std::fs::write(&input, big).unwrap();
    let out = s.dir.path().join("bundle");
    let o = run(&mut s.sign(&out, &[&input]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let cap = nrfca::signer::sign::MAX_RECORDED_REJECTS as i64;
    let db = s.db();
    assert_eq!(count(&db, "SELECT count(*) FROM rejects"), cap);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit WHERE event = 'request-rejected'"
        ),
        cap
    );
    let details: String = db
        .query_row(
            "SELECT details FROM audit WHERE event = 'batch-committed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(v["rejected"], 1200);
    assert_eq!(v["rejects_unrecorded"], 1200 - cap);
    assert_eq!(v["rejected_by_code"]["duplicate-in-batch"], 1200);
    let rejects = std::fs::read_to_string(out.join("rejects.csv")).unwrap();
    assert_eq!(rejects.lines().count(), 1 + 1200);
    s.audit_verifies();
    // The ceremony report counts every reject by code from batch-committed.
    let o = run(bin()
        .args(["audit", "report", "--json", "--ca-dir"])
        .arg(&s.ca));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["rejects_by_code"]["duplicate-in-batch"], 1200, "{r}");
}

#[test]
fn item9_passphrase_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pp = dir.path().join("pass.txt");
    std::fs::write(&pp, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ca = dir.path().join("ca");
    let o = run(bin()
        .args(["ca", "init", "--ca-dir"])
        .arg(&ca)
        .args(["--subject", "CN=Mode CA", "--passphrase-file"])
        .arg(&pp));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(!ca.join("ca.key.age").exists());
}

#[test]
fn item9_unlock_with_ca_db_locked_decrypts_nothing() {
    // Another command holds ca.db's write lock: the key is not decrypted (it could not be
    // recorded), and the message says so; once the lock is gone the unlock is recorded.
    let s = setup(1);
    let holder = s.db();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let o = run(bin()
        .args(["ca", "verify-key", "--ca-dir"])
        .arg(&s.ca)
        .arg("--identity")
        .arg(&s.id));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the key was not unlocked"),
        "{}",
        stderr(&o)
    );
    holder.execute_batch("ROLLBACK").unwrap();
    let unlocked = |db: &rusqlite::Connection| {
        count(
            db,
            "SELECT count(*) FROM audit WHERE event = 'key-unlocked'",
        )
    };
    let before = unlocked(&holder);
    let o = run(bin()
        .args(["ca", "verify-key", "--ca-dir"])
        .arg(&s.ca)
        .arg("--identity")
        .arg(&s.id));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(unlocked(&holder), before + 1);
    s.audit_verifies();
}

#[test]
fn item5_onboarding_options_are_shaped_and_bundle_cells_are_guarded() {
    // --tags/--fw-types/--sub-type land in every onboard.csv row: a formula or a control
    // character there is refused before anything is unlocked.
    let s = setup(1);
    for (flag, v) in [
        ("--tags", "=HYPERLINK(\"http://x\")"),
        ("--tags", "ok|@SUM(A1)"),
        ("--fw-types", "APP|-cmd"),
        ("--sub-type", "x\u{1b}]0;t\u{7}"),
    ] {
        let out = s.dir.path().join("bundle");
        let o = run(s.sign(&out, &[&s.requests]).args([flag, v]));
        assert_eq!(o.status.code(), Some(2), "{flag} {v:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not a plain onboarding value"),
            "{}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains('\u{1b}'), "raw ESC on the terminal");
        assert!(!out.exists());
    }
    assert_eq!(count(&s.db(), "SELECT count(*) FROM batches"), 0);
    // The writer's own guard, for any value that would slip past the shapes.
    use nrfca::bundle::safe_cell;
    assert_eq!(safe_cell("=1+2"), "'=1+2");
    assert_eq!(safe_cell("@SUM(A1)"), "'@SUM(A1)");
    assert_eq!(safe_cell("a\r\nb"), "a\\r\\nb");
    assert_eq!(safe_cell("\tx"), "\\tx");
    assert!(matches!(
        safe_cell("50503041-3539-47eb-807b-102dbb423b9a"),
        std::borrow::Cow::Borrowed(_)
    ));
}
