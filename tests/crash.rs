//! The crash matrix of `nrfca sign` (SPEC §5: "a batch is all or nothing; after a crash at
//! any instant `ca.db` holds either the whole batch or none of it, `audit verify` passes, no
//! bundle directory or a complete one exists, and running the same `sign` again gives the
//! same set of devices with no duplicates"; "nothing signed exists outside `ca.db` before its
//! batch commits: a crash or a signal (INT, TERM, HUP, KILL) at any instant leaves no
//! certificate PEM, no signed manifest and no directory that `bench import` accepts, other
//! than for committed batches").
//!
//! Every case starts from a copy of the same CA, which already holds an earlier batch, and
//! signs one batch of new requests + requests of the earlier batch (certificates given back)
//! + duplicated rows (rejects). The process is stopped:
//! - at exact points through the `NRFCA_CRASH_AT` hook (`std::process::abort`): unlocked,
//!   started, checked:n, written:n, before-commit, after-commit, bundle-finished,
//!   after-rename, bundle-audited; and with `NRFCA_CRASH_SIGNAL=INT|TERM|HUP|KILL` the same
//!   points send that signal to the process instead (no test stops it at a timed delay: a
//!   delay lands somewhere different on every machine, a named point always in one place);
//! - by a full disk (`ulimit -f`: killed by SIGXFSZ, or with SIGXFSZ ignored, failing writes
//!   with EFBIG) at several sizes;
//! - by an unwritable output directory, an unwritable `ca.db`, unreadable inputs.
//!
//! After each: `nrfca audit verify --ca-dir` exits 0; `ca.db` holds the whole batch or none
//! of it (every batch row committed, its certificates all there), one certificate row per
//! device; the bundle directory is absent or verifies (`bundle::verify`) with every device of
//! the batch; a staging (partial) directory never verifies, and a copy of it under another
//! name verifies only if its batch committed; every certificate in any file under the
//! output's parent directory is a row of `ca.db`. Then the same `sign` is run again and must
//! end with exactly the expected devices, once each, a complete bundle, a verifying log and
//! no partial directory left.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{copy_dir, stderr, BIN};

/// `nrfca` (see [`common::bin`]) without a crash point from the caller's environment.
fn bin() -> Command {
    let mut c = common::bin();
    c.env_remove("NRFCA_CRASH_AT");
    c
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// The CA with an earlier batch, the requests of the batch under test and what it must give.
struct Fixture {
    dir: tempfile::TempDir,
    pristine: PathBuf,
    id: PathBuf,
    requests: PathBuf,
    /// Every device the CA must hold after the batch: earlier batch + new ones.
    all_devices: BTreeSet<String>,
    /// The devices of the earlier batch (all the CA holds if the batch is not committed).
    earlier_devices: BTreeSet<String>,
    /// Devices the batch's bundle must list (new + given back).
    batch_devices: BTreeSet<String>,
    rejects: usize,
    /// Exit code of an uninterrupted run (1: the duplicates are rejected).
    clean_code: i32,
}

fn csv_rows(path: &Path) -> (String, Vec<(String, String)>) {
    // (header, [(uuid, raw line)]) of a gen CSV (one line per row: no quoted newlines).
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| (l.split(',').next().unwrap().to_string(), l.to_string()))
        .collect();
    (header, rows)
}

fn fixture(earlier: usize, new: usize, again: usize, dups: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let all = d.join("all.csv");
    let o = bin()
        .args(["gen", "--count", &(earlier + new).to_string(), "--out"])
        .arg(&all)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = csv_rows(&all);
    let (old, fresh) = rows.split_at(earlier);
    let write = |name: &str, rows: &[&(String, String)]| {
        let mut t = format!("{header}\n");
        for (_, l) in rows {
            t.push_str(l);
            t.push('\n');
        }
        let p = d.join(name);
        std::fs::write(&p, t).unwrap();
        p
    };
    let earlier_csv = write("earlier.csv", &old.iter().collect::<Vec<_>>());
    let mut batch: Vec<&(String, String)> = fresh.iter().collect();
    batch.extend(old.iter().take(again));
    batch.extend(fresh.iter().take(dups));
    let requests = write("batch.csv", &batch);

    let id = d.join("id.agekey");
    let pristine = d.join("pristine");
    common::ca_init_age(
        &pristine,
        &id,
        "CN=Crash Test CA",
        &["--operator", "officer"],
    );
    let o = bin()
        .args(["sign", "--ca-dir"])
        .arg(&pristine)
        .arg("--identity")
        .arg(&id)
        .arg("--out")
        .arg(d.join("earlier-bundle"))
        .arg(&earlier_csv)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    Fixture {
        pristine,
        id,
        requests,
        all_devices: rows.iter().map(|(u, _)| u.clone()).collect(),
        earlier_devices: old.iter().map(|(u, _)| u.clone()).collect(),
        batch_devices: fresh
            .iter()
            .chain(old.iter().take(again))
            .map(|(u, _)| u.clone())
            .collect(),
        rejects: dups,
        clean_code: if dups > 0 { 1 } else { 0 },
        dir,
    }
}

/// One crash case: its own copy of the CA and output location.
struct Case {
    ca: PathBuf,
    out: PathBuf,
    work: PathBuf,
    name: String,
}

impl Fixture {
    fn case(&self, name: &str) -> Case {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let work = self.dir.path().join(format!("case-{slug}"));
        std::fs::create_dir(&work).unwrap();
        let ca = work.join("ca");
        copy_dir(&self.pristine, &ca);
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o700)).unwrap();
        Case {
            out: work.join("bundle"),
            ca,
            work,
            name: name.to_string(),
        }
    }

    /// The `sign` command of a case (same arguments every time).
    fn sign_cmd(&self, c: &Case, out: &Path) -> Command {
        let mut cmd = bin();
        cmd.args(["sign", "--ca-dir"])
            .arg(&c.ca)
            .arg("--identity")
            .arg(&self.id)
            .arg("--out")
            .arg(out)
            .args(["--operator", "officer", "--pem-files"])
            .arg(&self.requests)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Everything SPEC §5 promises right after an interrupted run. Returns whether the batch
    /// was committed.
    fn check_after_crash(&self, c: &Case) -> bool {
        let ctx = &c.name;
        let o = bin()
            .args(["audit", "verify", "--ca-dir"])
            .arg(&c.ca)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{ctx}: audit verify: {}",
            stderr(&o)
        );
        let db = rusqlite::Connection::open_with_flags(
            c.ca.join("ca.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let dups: i64 = db
            .query_row(
                "SELECT count(*) FROM (SELECT device_id FROM certificates GROUP BY device_id HAVING count(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(dups, 0, "{ctx}: duplicate certificate rows");
        // Every batch is committed and holds exactly its certificates.
        let mut st = db
            .prepare("SELECT id, committed_at, issued FROM batches")
            .unwrap();
        let batches: Vec<(String, Option<String>, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (id, committed, issued) in &batches {
            assert!(
                committed.is_some(),
                "{ctx}: batch {id} in ca.db but not committed"
            );
            let n: i64 = db
                .query_row(
                    "SELECT count(*) FROM certificates WHERE batch_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, *issued, "{ctx}: batch {id} is partial");
        }
        let devices: BTreeSet<String> = db
            .prepare("SELECT device_id FROM certificates")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let committed = if devices == self.all_devices {
            true
        } else {
            assert_eq!(
                devices,
                self.earlier_devices,
                "{ctx}: ca.db holds part of the batch ({} devices)",
                devices.len()
            );
            false
        };
        // The bundle: absent or complete.
        if c.out.exists() {
            assert!(committed, "{ctx}: a bundle exists for an uncommitted batch");
            self.check_bundle(&c.out, &c.ca, ctx);
        }
        // A staging directory is never a bundle (SPEC §5): refused by name, and copied out
        // under another name it verifies only if its batch committed.
        let trust = std::fs::read(c.ca.join("ca.pem")).unwrap();
        for p in partials(&c.work) {
            assert!(
                nrfca::bundle::verify(&p, &trust).is_err(),
                "{ctx}: partial directory {} verifies as a bundle",
                p.display()
            );
            if !committed {
                let copy = c.work.join("copied-partial");
                copy_dir(&p, &copy);
                assert!(
                    nrfca::bundle::verify(&copy, &trust).is_err(),
                    "{ctx}: a copy of the partial directory of an uncommitted batch verifies"
                );
                std::fs::remove_dir_all(&copy).unwrap();
            }
        }
        // Nothing signed exists outside ca.db: every certificate anywhere under the output's
        // parent directory (the CA directory aside) is a committed row of ca.db.
        let ca_der = first_der(&String::from_utf8_lossy(&trust)).unwrap();
        for (file, der) in certificates_under(&c.work, &c.ca) {
            if der == ca_der {
                continue;
            }
            let n: i64 = db
                .query_row(
                    "SELECT count(*) FROM certificates WHERE der = ?1",
                    [&der],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                n,
                1,
                "{ctx}: {} holds a certificate that ca.db does not record",
                file.display()
            );
        }
        committed
    }

    fn check_bundle(&self, dir: &Path, ca: &Path, ctx: &str) {
        let trust = std::fs::read(ca.join("ca.pem")).unwrap();
        let v = nrfca::bundle::verify(dir, &trust)
            .unwrap_or_else(|e| panic!("{ctx}: bundle {} does not verify: {e}", dir.display()));
        let ids: Vec<String> = v.certs.iter().map(|r| r.device_uuid.clone()).collect();
        let set: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(set.len(), ids.len(), "{ctx}: a device twice in the bundle");
        assert_eq!(set, self.batch_devices, "{ctx}: bundle devices");
        assert_eq!(v.manifest.counts.rejected as usize, self.rejects, "{ctx}");
    }

    /// Run the same sign again (a new --out if the bundle is already in place) and check
    /// that everything converged.
    fn rerun_and_converge(&self, c: &Case) {
        let ctx = &c.name;
        let out = if c.out.exists() {
            c.work.join("bundle-again")
        } else {
            c.out.clone()
        };
        let o = self.sign_cmd(c, &out).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(self.clean_code),
            "{ctx}: re-run: {}",
            stderr(&o)
        );
        assert!(self.check_after_crash(c), "{ctx}: re-run did not commit");
        self.check_bundle(&out, &c.ca, &format!("{ctx} (re-run)"));
        assert!(
            partials(&c.work).is_empty(),
            "{ctx}: partial directories left: {:?}",
            partials(&c.work)
        );
        let db = rusqlite::Connection::open(c.ca.join("ca.db")).unwrap();
        let n: i64 = db
            .query_row("SELECT count(*) FROM certificates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            n as usize,
            self.all_devices.len(),
            "{ctx}: one row per device"
        );
    }
}

/// DER of every `-----BEGIN CERTIFICATE-----` block in `text`, wherever it starts (CSV cells
/// hold them inside quotes).
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(BEGIN) {
        rest = &rest[i + BEGIN.len()..];
        let Some(j) = rest.find(END) else { break };
        let b64: String = rest[..j].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &rest[j + END.len()..];
    }
    out
}

fn first_der(text: &str) -> Option<Vec<u8>> {
    pem_certificates(text).into_iter().next()
}

/// Every certificate found in any file under `dir`, `skip` aside.
fn certificates_under(dir: &Path, skip: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                for der in pem_certificates(&text) {
                    found.push((p.clone(), der));
                }
            }
        }
    }
    found
}

fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".nrfca-partial-"))
        })
        .collect()
}

fn wait_with_stderr(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (child.wait().unwrap(), err)
}

// ------------------------------------------------------------------------------- tests

/// The named points of the hook, for a batch of `total` requests.
fn named_points(total: usize) -> Vec<String> {
    vec![
        "unlocked".into(),
        "started".into(),
        "checked:1".into(),
        format!("checked:{}", total / 2),
        format!("checked:{total}"),
        "written:1".into(),
        format!("written:{}", total / 3),
        format!("written:{}", total - 1),
        format!("written:{total}"),
        "before-commit".into(),
        "after-commit".into(),
        "bundle-finished".into(),
        "after-rename".into(),
        "bundle-audited".into(),
    ]
}

/// Points at which the batch is already committed.
fn is_after_commit(p: &str) -> bool {
    matches!(
        p,
        "after-commit" | "bundle-finished" | "after-rename" | "bundle-audited"
    )
}

#[test]
fn signals_at_every_named_point() {
    // SIGINT/SIGTERM/SIGHUP raised at an exact instant: before the commit the batch rolls
    // back (exit 2, nothing recorded, no staging directory left); after it the run finishes
    // its bundle and exits as a clean run would. SIGKILL: as a crash.
    let f = fixture(30, 200, 20, 3);
    let total = 200 + 20 + 3;
    let mut table = Vec::new();
    for sig in ["INT", "TERM", "HUP", "KILL"] {
        for p in named_points(total) {
            let c = f.case(&format!("SIG{sig} at {p}"));
            let mut cmd = f.sign_cmd(&c, &c.out);
            cmd.env("NRFCA_CRASH_AT", &p).env("NRFCA_CRASH_SIGNAL", sig);
            let (status, err) = wait_with_stderr(cmd.spawn().unwrap());
            let committed = f.check_after_crash(&c);
            let after = is_after_commit(p.split(':').next().unwrap());
            assert_eq!(committed, after, "{}: {status} {err}", c.name);
            if sig == "KILL" {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(9), "{}: {err}", c.name);
            } else if after {
                assert_eq!(status.code(), Some(f.clean_code), "{}: {err}", c.name);
                assert!(c.out.exists(), "{}: no bundle", c.name);
            } else {
                assert_eq!(status.code(), Some(2), "{}: {err}", c.name);
                assert!(
                    err.contains(&format!("interrupted by SIG{sig}")),
                    "{}: {err}",
                    c.name
                );
                assert!(!c.out.exists(), "{}: bundle", c.name);
                assert!(partials(&c.work).is_empty(), "{}: staging left", c.name);
            }
            table.push(format!(
                "{:<30} {:<26} committed={committed:<5} bundle={}",
                c.name,
                format!("{status}"),
                c.out.exists()
            ));
            f.rerun_and_converge(&c);
        }
    }
    eprintln!("signal-point matrix:\n  {}", table.join("\n  "));
}

#[test]
fn crash_hook_at_every_named_point() {
    let f = fixture(40, 300, 30, 4);
    let total = 300 + 30 + 4;
    let points = named_points(total);
    // Every named point of the hook is exercised.
    for p in nrfca::internal::signer::sign::CRASH_POINTS {
        assert!(points.iter().any(|q| q.split(':').next() == Some(p)), "{p}");
    }
    let mut table = Vec::new();
    for p in &points {
        let c = f.case(&format!("crash at {p}"));
        let mut cmd = f.sign_cmd(&c, &c.out);
        cmd.env("NRFCA_CRASH_AT", p);
        let (status, err) = wait_with_stderr(cmd.spawn().unwrap());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGABRT as i32),
            "{}: the hook did not fire ({status}): {err}",
            c.name
        );
        let committed = f.check_after_crash(&c);
        let expect_committed = is_after_commit(p);
        assert_eq!(committed, expect_committed, "{}", c.name);
        assert_eq!(
            c.out.exists(),
            matches!(p.as_str(), "after-rename" | "bundle-audited"),
            "{}: bundle presence",
            c.name
        );
        table.push(format!(
            "{:<28} committed={committed:<5} bundle={:<5} partial-dir={}",
            c.name,
            c.out.exists(),
            !partials(&c.work).is_empty()
        ));
        f.rerun_and_converge(&c);
    }
    eprintln!("crash-point matrix:\n  {}", table.join("\n  "));
}

/// Run `sign` under `sh -c 'ulimit -f BLOCKS; exec nrfca sign ...'`, optionally ignoring
/// SIGXFSZ (then writes past the limit fail with EFBIG instead of killing the process).
fn sign_with_file_limit(f: &Fixture, c: &Case, blocks: u64, ignore_xfsz: bool) -> Output {
    let mut sh = String::new();
    if ignore_xfsz {
        sh.push_str("trap '' XFSZ; ");
    }
    sh.push_str(&format!("ulimit -f {blocks} && exec \"$0\" \"$@\""));
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(sh)
        .arg(BIN)
        .args(["sign", "--ca-dir"])
        .arg(&c.ca)
        .arg("--identity")
        .arg(&f.id)
        .arg("--out")
        .arg(&c.out)
        .args(["--operator", "officer", "--pem-files"])
        .arg(&f.requests)
        .env_remove("NRFCA_CRASH_AT")
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

#[test]
fn disk_full_at_many_sizes() {
    let f = fixture(40, 300, 30, 4);
    let db_size = std::fs::metadata(f.pristine.join("ca.db")).unwrap().len();
    eprintln!("ca.db before the batch: {db_size} bytes");
    let mut table = Vec::new();
    // /bin/sh counts `ulimit -f` in 512-byte blocks (POSIX); bash in 1 KiB — either way the
    // sizes below go from "nothing can be written" to "the batch fits".
    for blocks in [1u64, 128, 1024, 1300, 1500, 1700, 2048] {
        for ignore in [false, true] {
            let how = if ignore { "EFBIG" } else { "SIGXFSZ" };
            let c = f.case(&format!("file limit {blocks} blocks {how}"));
            let o = sign_with_file_limit(&f, &c, blocks, ignore);
            let committed = f.check_after_crash(&c);
            use std::os::unix::process::ExitStatusExt;
            let outcome = match (o.status.code(), o.status.signal()) {
                (Some(code), _) => format!("exit {code}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => "?".into(),
            };
            if ignore {
                // A write error is an error (exit 2 with a message), never a crash or a
                // silent success.
                assert!(
                    matches!(o.status.code(), Some(2)) || o.status.code() == Some(f.clean_code),
                    "{}: {outcome}: {}",
                    c.name,
                    stderr(&o)
                );
                if o.status.code() == Some(2) {
                    assert!(!stderr(&o).is_empty(), "{}: no message", c.name);
                }
            }
            table.push(format!(
                "{:<36} {outcome:<10} committed={committed:<5} bundle={:<5} {}",
                c.name,
                c.out.exists(),
                if o.status.code() == Some(2) {
                    first_line(&o)
                } else {
                    String::new()
                }
            ));
            f.rerun_and_converge(&c);
        }
    }
    eprintln!("disk-full matrix:\n  {}", table.join("\n  "));
}

/// Make a case runnable by `nobody` (so permissions bite even when the tests run as root).
fn hand_to_nobody(f: &Fixture, c: &Case) {
    use std::os::unix::fs::chown;
    fn chown_r(p: &Path) {
        chown(p, Some(65534), Some(65534)).unwrap();
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                chown_r(&e.unwrap().path());
            }
        }
    }
    chown_r(&c.work);
    for p in [&f.id, &f.requests] {
        chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unwritable_and_unreadable_places() {
    use std::os::unix::process::CommandExt;
    let f = fixture(30, 120, 10, 2);
    let root = is_root();
    let as_user = |cmd: &mut Command| {
        if root {
            cmd.uid(65534).gid(65534);
        }
    };
    let mut table = Vec::new();

    // 1. The output directory's parent is not writable.
    {
        let c = f.case("unwritable out dir");
        let locked = c.work.join("locked");
        std::fs::create_dir(&locked).unwrap();
        if root {
            hand_to_nobody(&f, &c);
            std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = locked.join("bundle");
        let mut cmd = f.sign_cmd(&c, &out);
        as_user(&mut cmd);
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}: {}", c.name, stderr(&o));
        assert!(!f.check_after_crash(&c), "{}: committed", c.name);
        assert!(!out.exists());
        table.push(format!("{:<34} exit 2: {}", c.name, first_line(&o)));
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        f.rerun_and_converge(&c);
    }
    // 2. ca.db cannot be written (read-only file): nothing half-done, exit 2.
    {
        let c = f.case("read-only ca.db");
        if root {
            hand_to_nobody(&f, &c);
        }
        std::fs::set_permissions(c.ca.join("ca.db"), std::fs::Permissions::from_mode(0o444))
            .unwrap();
        let mut cmd = f.sign_cmd(&c, &c.out);
        as_user(&mut cmd);
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}: {}", c.name, stderr(&o));
        assert!(!c.out.exists());
        std::fs::set_permissions(c.ca.join("ca.db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(!f.check_after_crash(&c));
        table.push(format!("{:<34} exit 2: {}", c.name, first_line(&o)));
        f.rerun_and_converge(&c);
    }
    // 3. Unreadable inputs: no permission (read fails after the key is unlocked), a
    //    directory, a missing file.
    for kind in ["no read permission", "a directory", "missing"] {
        let c = f.case(&format!("input: {kind}"));
        let input = c.work.join("input.csv");
        match kind {
            "no read permission" => {
                std::fs::copy(&f.requests, &input).unwrap();
                if root {
                    hand_to_nobody(&f, &c);
                }
                std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o000)).unwrap();
            }
            "a directory" => std::fs::create_dir(&input).unwrap(),
            _ => {}
        }
        let mut cmd = bin();
        cmd.args(["sign", "--ca-dir"])
            .arg(&c.ca)
            .arg("--identity")
            .arg(&f.id)
            .arg("--out")
            .arg(&c.out)
            .arg(&input);
        if kind == "no read permission" {
            as_user(&mut cmd);
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}: {}", c.name, stderr(&o));
        assert!(!c.out.exists(), "{}", c.name);
        assert!(partials(&c.work).is_empty(), "{}: partial dir left", c.name);
        assert!(!f.check_after_crash(&c));
        table.push(format!("{:<34} exit 2: {}", c.name, first_line(&o)));
        f.rerun_and_converge(&c);
    }
    eprintln!("unwritable/unreadable matrix:\n  {}", table.join("\n  "));
}

fn first_line(o: &Output) -> String {
    stderr(o)
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or("")
        .chars()
        .take(110)
        .collect()
}

#[test]
fn staging_dirs_are_cleaned_whatever_the_out() {
    // A run killed mid-batch leaves its staging directory beside its --out; the next run of
    // the same CA removes it even though it writes somewhere else, and never touches the
    // staging directory of a run that is still alive (its flock is held).
    let f = fixture(10, 60, 0, 0);
    let c = f.case("killed then elsewhere");
    let mut cmd = f.sign_cmd(&c, &c.out);
    cmd.env("NRFCA_CRASH_AT", "written:30");
    let (status, _) = wait_with_stderr(cmd.spawn().unwrap());
    assert!(!status.success());
    let left = partials(&c.work);
    assert_eq!(left.len(), 1, "the killed run left its staging directory");
    // Only rejects.csv, no certificate, no manifest.
    let names: Vec<String> = std::fs::read_dir(&left[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["rejects.csv".to_string()], "{names:?}");
    assert!(!f.check_after_crash(&c));

    // A live run's staging directory elsewhere (same CA, registered, locked) stays.
    let elsewhere = c.work.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let o = f.sign_cmd(&c, &elsewhere.join("bundle")).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        partials(&c.work).is_empty(),
        "the staging directory of the killed run is still there"
    );
    assert!(stderr(&o).contains("removed"), "{}", stderr(&o));
    let db = rusqlite::Connection::open(c.ca.join("ca.db")).unwrap();
    assert!(nrfca::internal::signer::staging::registered(&db)
        .unwrap()
        .is_empty());
}
