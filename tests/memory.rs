//! Regression guard for SPEC §9 "peak memory stays flat as batches grow", measured as a
//! quantity (peak RSS of the `nrfca sign` child, from `wait4`), never as a time.
//!
//! A batch ten times larger may grow the process only by what is bounded by design: SQLite's
//! page cache (capped at 32 MiB by `sign`) and the per-device fingerprint sets (16 bytes a
//! device), so the bound is 32 MiB + slack = 50 MB. A regression that holds the batch in
//! memory (requests, certificates, PEMs: about 3 KB a device, 54 MB more at this size) on top
//! of the cache fails the test. Measured here: 23 MB at 2 000, 60 MB at 20 000 (debug build);
//! 67 MB at 100 000 in release.
//!
//! Its own test binary, so no other test's children run while it measures.

use std::path::Path;
use std::process::Command;

mod common;
use common::bin_plain;

/// Run a command to completion and return (exit status, peak RSS in KiB).
fn run_peak_rss(mut cmd: Command) -> (i32, i64) {
    let child = cmd.spawn().expect("spawn nrfca");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers; `child` is never waited
    // on again (it is forgotten below), so the pid cannot be reused under us.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss)
}

fn gen(out: &Path, n: usize) {
    let st = bin_plain()
        .args([
            "gen",
            "--count",
            &n.to_string(),
            "--format",
            "lines",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn sign_peak_memory_is_flat_in_batch_size() {
    use age::secrecy::ExposeSecret;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let id = age::x25519::Identity::generate();
    let identity = root.join("officer.agekey");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let small = root.join("small.txt");
    let large = root.join("large.txt");
    gen(&small, 2_000);
    gen(&large, 20_000);

    let mut peaks = Vec::new();
    for (name, input) in [("small", &small), ("large", &large)] {
        // A fresh CA each time, so both batches issue every certificate.
        let ca = root.join(format!("ca-{name}"));
        let st = bin_plain()
            .args(["ca", "init", "--ca-dir"])
            .arg(&ca)
            .args([
                "--subject",
                "CN=memory test CA",
                "--recipient",
                &id.to_public().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let mut cmd = bin_plain();
        cmd.args(["sign", "--ca-dir"])
            .arg(&ca)
            .arg("--identity")
            .arg(&identity)
            .arg("--out")
            .arg(root.join(format!("bundle-{name}")))
            .arg(input)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let (code, peak_kib) = run_peak_rss(cmd);
        assert_eq!(code, 0, "sign of the {name} batch failed");
        peaks.push(peak_kib);
    }
    let (small_kib, large_kib) = (peaks[0], peaks[1]);
    eprintln!("peak RSS: 2 000 requests {small_kib} KiB, 20 000 requests {large_kib} KiB");
    assert!(
        large_kib - small_kib < 50 * 1024,
        "peak RSS grew from {small_kib} KiB to {large_kib} KiB for 10x the batch: something holds the batch in memory"
    );
    assert!(
        large_kib < 150 * 1024,
        "peak RSS {large_kib} KiB is over the 150 MB bar"
    );
}

/// Issue 10 item 9 (part): `inspect` of a file over its limit is refused from the file's
/// size, before reading it (a 2 GB file used to take 1.3 GB of memory before the refusal).
/// A sparse file one byte over the limit costs no disk and no time to make.
#[test]
fn h10_item9_inspect_refuses_an_oversized_file_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("huge-requests.csv");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(nrfca::inspect::MAX_INPUT + 1).unwrap();
    drop(f);
    let err_path = tmp.path().join("stderr.txt");
    let mut cmd = bin_plain();
    cmd.arg("inspect")
        .arg(&big)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let (code, peak_kib) = run_peak_rss(cmd);
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("huge-requests.csv is")
            && err.contains(&format!(
                "over the {}-byte limit",
                nrfca::inspect::MAX_INPUT
            )),
        "{err}"
    );
    // A refusal by size: the process never grows by the file's size (old code: > 256 MB).
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB for a refusal"
    );
}
