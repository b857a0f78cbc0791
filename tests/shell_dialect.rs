//! The nRF Connect SDK shell dialect (SPEC §14): Nordic's unchanged
//! `nrfcredstore --cmd-type shell` (list, write, delete) against the simulator's shell
//! personality, and export → sign → import over the shell dialect on four simulated modems
//! with faults on (echo and prompts always; URCs and application log lines, line noise, a
//! failing first command, an unplug, a lost final result), every write proven by the SHA-256
//! the modem lists of the bytes it stores (CR LF line ends behind the shell).
#![cfg(feature = "bench")]

use nrfca::sim::{Fault, FaultSpec, Latency, Profile, SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bin, run, sha_upper, stderr, TAG};

const CA: &str = include_str!("../keys/AmazonRootCA1.pem");

fn sim(count: usize, dir: &Path, specs: Vec<FaultSpec>) -> Simulator {
    Simulator::start(SimConfig {
        count,
        profile: Profile::Shell,
        latency: Latency::Test,
        link_dir: Some(dir.join("modems")),
        fault_specs: specs,
        boot_cfun: 1,
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

/// Run Nordic's tool through tests/interop/run_nordic.py (which only adds the ptys to
/// pyserial's port list).
fn nordic(venv: &Path, ports: &[PathBuf], cwd: &Path, args: &[&str]) -> Output {
    let joined = ports
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let out = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/run_nordic.py"))
        .args(args)
        .env("NRFCA_SIM_PORTS", joined)
        .current_dir(cwd)
        .output()
        .unwrap();
    eprintln!(
        "{args:?} -> {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the AT shell stores for `text` sent by a tool that writes LF line ends: CR LF.
fn crlf(text: &str) -> String {
    text.replace('\r', "").replace('\n', "\r\n")
}

#[test]
fn nrfcredstore_shell_mode_against_the_shell_personality() {
    let Some(_) = common::venv_tool("nrfcredstore") else {
        return;
    };
    let venv = common::venv();
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(1, dir.path(), vec![]);
    let ports = sim.pty_paths();
    let port = ports[0].to_str().unwrap();
    let tool = |args: &[&str]| {
        let mut all = vec!["nrfcredstore", port, "--cmd-type", "shell"];
        all.extend_from_slice(args);
        nordic(&venv, &ports, dir.path(), &all)
    };

    let out = tool(&["imei"]);
    assert_eq!(out.status.code(), Some(0));
    let snap = sim.snapshot(0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("IMEI: {}", snap.imei)));
    assert!(
        snap.commands.iter().any(|c| c == "AT+CGSN"),
        "the modem saw the AT command the shell unwrapped: {:?}",
        snap.commands
    );

    // write: the file rstrip()ed, its LFs sent as `\n`, stored by the modem as CR LF.
    std::fs::write(dir.path().join("ca.pem"), CA).unwrap();
    let out = tool(&["write", "42", "ROOT_CA_CERT", "ca.pem"]);
    assert_eq!(out.status.code(), Some(0));
    let want = crlf(CA.trim_end());
    let snap = sim.snapshot(0);
    let stored = snap.credential(42, 0).expect("written");
    assert_eq!(stored.content.as_deref(), Some(want.as_str()));
    assert_eq!(stored.sha256_upper, sha_upper(want.as_bytes()));

    let out = tool(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&stored.sha256_upper), "{listing}");
    assert!(listing.contains("ROOT_CA_CERT"), "{listing}");
    assert!(listing.contains("NORDIC_PUB_KEY"), "{listing}");

    let out = tool(&["delete", "42", "ROOT_CA_CERT"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(sim.snapshot(0).credential(42, 0).is_none());

    // auto: the tool's own detection finds the shell.
    let out = nordic(
        &venv,
        &ports,
        dir.path(),
        &["nrfcredstore", port, "--cmd-type", "auto", "list"],
    );
    assert_eq!(out.status.code(), Some(0));
}

struct Fleet {
    dir: tempfile::TempDir,
    sim: Simulator,
}

impl Fleet {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The officer's side: a CA in `ca/` and `nrfca sign` of `requests` into `bundle/`.
    fn sign(&self, requests: &Path) -> PathBuf {
        common::ca_init_age(
            &self.p("ca"),
            &self.p("id.agekey"),
            "CN=Shell Test CA,O=Test",
            &["--operator", "officer"],
        );
        let bundle = self.p("bundle");
        let o = run(bin()
            .args(["sign", "--ca-dir"])
            .arg(self.p("ca"))
            .arg("--identity")
            .arg(self.p("id.agekey"))
            .arg("--out")
            .arg(&bundle)
            .args(["--operator", "officer"])
            .arg(requests));
        assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));
        bundle
    }

    fn bench(&self, sub: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut c = bin();
        c.args(["bench", sub]);
        for p in self.sim.ports() {
            c.arg("--port").arg(p);
        }
        c.arg("--state").arg(self.p("S")).args([
            "--operator",
            "tech",
            "--timeout",
            "1.5",
            "--slow-timeout",
            "3",
            "--reconnect-wait",
            "2",
            "--json",
        ]);
        c.args(extra);
        let o = run(&mut c);
        let json = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("bench {sub} --json: {e}; stderr: {}", stderr(&o)));
        (o.status.code(), json)
    }
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

/// Run until every device is done or already done (a re-run finishes only what is
/// unfinished); at most three runs.
fn until_done(f: &Fleet, sub: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut reports = Vec::new();
    for _ in 0..3 {
        let (code, report) = f.bench(sub, extra);
        let done = statuses(&report)
            .iter()
            .all(|s| s == "done" || s == "already-done");
        reports.push(report);
        if done {
            assert_eq!(code, Some(0));
            return reports;
        }
        assert_eq!(code, Some(1), "{:#}", reports.last().unwrap());
    }
    panic!("not done after three runs: {reports:#?}");
}

#[test]
fn export_sign_import_over_the_shell_on_four_modems_with_faults() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        FaultSpec::all(Fault::Urcs),
        FaultSpec::all(Fault::Garbage),
        FaultSpec::all(Fault::FirstCommandFails),
        FaultSpec::on(1, Fault::Disconnect),
        FaultSpec::on(2, Fault::LostFinal),
    ];
    let sim = sim(4, dir.path(), specs);
    let f = Fleet { dir, sim };
    let requests = f.p("requests.csv");

    let exports = until_done(
        &f,
        "export",
        &["--out", requests.to_str().unwrap(), "--dialect", "shell"],
    );
    // Every modem was driven through the shell (`at '<command>'` lines, echoed).
    for i in 0..4 {
        let snap = f.sim.snapshot(i);
        assert!(
            snap.commands
                .iter()
                .any(|c| c.starts_with(&format!("AT%KEYGEN={TAG},2,0"))),
            "{:?}",
            snap.commands
        );
    }
    let rows = csv::Reader::from_path(&requests).unwrap().records().count();
    assert_eq!(rows, 4, "{exports:#?}");

    let bundle = f.sign(&requests);

    // Import finds the shell by itself (--dialect auto, the default).
    let trust = f.p("ca/ca.pem");
    let args = [
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ];
    until_done(&f, "import", &args);

    let mut certs = csv::Reader::from_path(bundle.join("certs.csv")).unwrap();
    let certs: Vec<(String, String)> = certs
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[7].to_string())
        })
        .collect();
    let root = crlf(&nrfca::internal::bench::import::default_root_bundle());
    for i in 0..4 {
        let snap = f.sim.snapshot(i);
        let (_, pem) = certs
            .iter()
            .find(|(imei, _)| *imei == snap.imei)
            .expect("a certificate per device");
        let want = crlf(pem);
        let c1 = snap.credential(TAG, 1).expect("certificate stored");
        assert_eq!(c1.content.as_deref(), Some(want.as_str()));
        assert_eq!(c1.sha256_upper, sha_upper(want.as_bytes()));
        let c0 = snap.credential(TAG, 0).expect("root CAs stored");
        assert_eq!(c0.content.as_deref(), Some(root.as_str()));
        let key = snap.credential(TAG, 2).expect("key kept");
        assert_eq!(
            key.public_key.map(|k| k.to_vec()),
            Some(common::cert_public_key(pem))
        );
        assert_eq!(snap.cfun, 1, "the mode found before export is restored");
    }

    // A re-run over the shell recognises what the modems list (CR LF SHA-256s): nothing
    // is written again.
    let before: Vec<usize> = (0..4).map(|i| f.sim.snapshot(i).commands.len()).collect();
    let (code, report) = f.bench("import", &args);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["already-done"; 4]);
    for (i, n) in before.iter().enumerate() {
        let snap = f.sim.snapshot(i);
        let new = &snap.commands[*n..];
        assert!(!new.iter().any(|c| common::changes_modem(c)), "{new:?}");
    }
}

/// A shell that cuts long lines (Zephyr's default 256-byte buffer): the certificate writes of
/// that device reach the modem cut short and are refused; it fails alone with a named code,
/// nothing unproven is recorded as installed, and a re-run on fixed firmware finishes it.
#[test]
fn a_shell_that_truncates_long_lines_fails_that_device_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(2, dir.path(), vec![FaultSpec::on(1, Fault::ShellTruncate)]);
    let f = Fleet { dir, sim };
    let requests = f.p("requests.csv");
    let (code, report) = f.bench("export", &["--out", requests.to_str().unwrap()]);
    assert_eq!(code, Some(0), "short commands pass: {report:#}");
    let bundle = f.sign(&requests);
    let trust = f.p("ca/ca.pem");
    let args = [
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
        "--dialect",
        "shell",
    ];
    let (code, report) = f.bench("import", &args);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(statuses(&report), ["done", "failed"], "{report:#}");
    let bad = &report["devices"][1];
    assert_eq!(bad["code"], "at-error", "{bad:#}");
    let snap = f.sim.snapshot(1);
    assert!(snap.credential(TAG, 1).is_none() && snap.credential(TAG, 0).is_none());

    f.sim.set_faults(1, vec![]);
    let (code, report) = f.bench("import", &args);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["already-done", "done"]);
}
