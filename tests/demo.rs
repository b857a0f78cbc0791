//! `nrfca demo` end to end: the README's first command must work and tell the truth.

mod common;
use common::bin_plain;

#[test]
fn demo_runs_the_whole_flow_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = bin_plain()
        .args([
            "demo",
            "--devices",
            "3",
            "--latency",
            "test",
            "--json",
            "--dir",
        ])
        .arg(&work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["devices"], 3);
    assert_eq!(report["exported"], 3);
    assert_eq!(report["issued"], 3);
    assert_eq!(report["imported"], 3);
    // The narration names each role's step and the command a user would type.
    for needle in [
        "officer",
        "technician",
        "auditor",
        "nrfca sign --ca-dir",
        "nrfca bench import",
    ] {
        assert!(
            stderr.contains(needle),
            "narration lacks {needle:?}:\n{stderr}"
        );
    }
    // With --dir the user chose the place: no word about a temporary directory.
    assert!(!stderr.contains("temporary directory"), "{stderr}");
    // The files it says it wrote are there, and the exported audit log verifies alone.
    for f in [
        "ca/ca.pem",
        "ca/ca.key.age",
        "ca/ca.db",
        "requests.csv",
        "bundle/manifest.sig",
        "audit.jsonl",
    ] {
        assert!(work.join(f).exists(), "missing {f}");
    }
    let requests = std::fs::read_to_string(work.join("requests.csv")).unwrap();
    assert_eq!(requests.lines().count(), 4, "header + 3 rows");
    let verify = bin_plain()
        .args(["audit", "verify", "--file"])
        .arg(work.join("audit.jsonl"))
        .arg("--ca-cert")
        .arg(work.join("ca/ca.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn demo_refuses_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let out = bin_plain()
        .args(["demo", "--latency", "test", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// Issue 16: every run without `--dir` makes a new temporary directory and keeps it; the
/// end of the output says which one and that it is kept (before, it said nothing).
#[test]
fn demo_without_dir_says_its_temporary_directory_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bin_plain()
        .env("TMPDIR", tmp.path())
        .args(["demo", "--devices", "1", "--latency", "test", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = report["dir"].as_str().unwrap();
    assert!(dir.starts_with(tmp.path().to_str().unwrap()), "{dir}");
    assert!(std::path::Path::new(dir).join("ca/ca.pem").exists());
    let want =
        format!("{dir} is a new temporary directory and is kept: remove it with `rm -r {dir}`");
    assert!(stderr.contains(&want), "{stderr}");
}
