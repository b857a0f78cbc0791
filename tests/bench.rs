//! The bench over real pseudo-terminals: `bench export` on several simulated modems at once,
//! `nrfca sign`, `bench import`; re-runs are no-ops; a tampered bundle is refused before any
//! modem is touched; one test per simulator fault (the affected device recovers or fails with
//! a clear reason, the others finish, a re-run completes it, no exported key is lost).
#![cfg(feature = "bench")]

use nrfca::bench::state::{DeviceState, State};
use nrfca::bench::{
    export, import, DeviceResult, ExportOptions, ExportReport, ImportOptions, ImportReport,
    PortSettings, Status,
};
use nrfca::internal::bench::import::default_root_bundle;
use nrfca::sim::{Fault, Latency, SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;
use common::{bin, cert_public_key, run, sha_upper, stderr, TAG};

// ---------------------------------------------------------------------------------- helpers

/// Timeouts short enough for CI, long enough for the `slow` fault (10x latency + 250 ms).
fn settings() -> PortSettings {
    common::port_settings(1500, 600, 5)
}

struct Bench {
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
    bundles: u32,
    settings: PortSettings,
}

impl Bench {
    fn new(count: usize, f: impl FnOnce(&mut SimConfig)) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SimConfig {
            count,
            latency: Latency::Test,
            link_dir: Some(dir.path().join("modems")),
            ..SimConfig::default()
        };
        f(&mut cfg);
        let sim = Simulator::start(cfg).expect("simulator starts");
        let ports = common::port_names(&sim);
        Bench {
            dir,
            sim,
            ports,
            bundles: 0,
            settings: settings(),
        }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.p("S")
    }
    fn out(&self) -> PathBuf {
        self.p("requests.csv")
    }

    fn export(&self, force: bool) -> ExportReport {
        let mut o = ExportOptions::new(self.ports.clone(), self.out());
        o.state_dir = self.state();
        o.force = force;
        o.operator = Some("tester".into());
        o.bench_name = Some("bench-1".into());
        o.settings = self.settings.clone();
        export(&o, &|_| {}).expect("export runs")
    }

    fn import(&self, bundle: &Path) -> ImportReport {
        let mut o = ImportOptions::new(
            self.ports.clone(),
            bundle.to_path_buf(),
            self.ca().join("ca.pem"),
        );
        o.state_dir = self.state();
        o.operator = Some("tester".into());
        o.settings = self.settings.clone();
        import(&o, &|_| {}).expect("import runs")
    }

    fn ca(&self) -> PathBuf {
        self.p("ca")
    }

    /// Make the CA (age recipient: fast) once.
    fn ensure_ca(&self) {
        if self.ca().join("ca.pem").exists() {
            return;
        }
        common::ca_init_age(
            &self.ca(),
            &self.p("id.agekey"),
            "CN=Bench Test CA,O=Test",
            &["--operator", "officer"],
        );
    }

    /// `nrfca sign` the requests file into a new bundle; returns its directory.
    fn sign(&mut self) -> PathBuf {
        self.ensure_ca();
        self.bundles += 1;
        let b = self.p(&format!("bundle{}", self.bundles));
        let o = run(bin().args([
            "sign",
            "--ca-dir",
            self.ca().to_str().unwrap(),
            "--identity",
            self.p("id.agekey").to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--operator",
            "officer",
            self.out().to_str().unwrap(),
        ]));
        assert!(
            o.status.code() == Some(0),
            "sign: {:?} {}",
            o.status,
            stderr(&o)
        );
        b
    }

    fn commands(&self, i: usize) -> Vec<String> {
        self.sim.snapshot(i).commands
    }
}

fn statuses(devices: &[DeviceResult]) -> Vec<Status> {
    devices.iter().map(|d| d.status).collect()
}

fn assert_all(devices: &[DeviceResult], want: Status) {
    for d in devices {
        assert_eq!(d.status, want, "{d:#?}");
    }
}

/// (imei, keygen) rows of the requests file.
fn request_rows(path: &Path) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[1].to_string(), rec[3].to_string())
        })
        .collect()
}

/// (imei -> certificate PEM) from a bundle's certs.csv.
fn bundle_certs(bundle: &Path) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_path(bundle.join("certs.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[1].to_string(), rec[7].to_string())
        })
        .collect()
}

/// Every modem is fully provisioned: one request row per IMEI whose key is the device's key,
/// the certificate from the bundle stored byte-exactly (listed SHA = sha256 of the PEM), the
/// root bundle stored, and the key in the slot is the certified one.
fn assert_provisioned(b: &Bench, bundle: &Path) {
    let rows = request_rows(&b.out());
    let certs = bundle_certs(bundle);
    let root = default_root_bundle();
    for i in 0..b.sim.count() {
        let snap = b.sim.snapshot(i);
        let mine: Vec<_> = rows.iter().filter(|(imei, _)| *imei == snap.imei).collect();
        assert_eq!(mine.len(), 1, "one request row for {}", snap.imei);
        let verified = nrfca::keygen::check(&mine[0].1, &Default::default()).unwrap();
        let key = snap.credential(TAG, 2).expect("key in slot");
        assert_eq!(
            key.public_key.map(|k| k.to_vec()),
            Some(verified.public_key.to_vec()),
            "the exported key is the device's key"
        );
        let (_, pem) = certs
            .iter()
            .find(|(imei, _)| *imei == snap.imei)
            .expect("certificate in bundle");
        let c1 = snap.credential(TAG, 1).expect("certificate stored");
        assert_eq!(
            c1.content.as_deref(),
            Some(pem.as_str()),
            "stored byte-exactly"
        );
        assert_eq!(c1.sha256_upper, sha_upper(pem.as_bytes()));
        assert_eq!(cert_public_key(pem), verified.public_key.to_vec());
        let c0 = snap.credential(TAG, 0).expect("root CAs stored");
        assert_eq!(c0.sha256_upper, sha_upper(root.as_bytes()));
        assert_eq!(c0.content.as_deref(), Some(root.as_str()));
    }
}

fn storage_changing(cmds: &[String]) -> Vec<String> {
    cmds.iter()
        .filter(|c| {
            let u = c.to_ascii_uppercase();
            u.starts_with("AT%KEYGEN") || u.starts_with("AT%CMNG=0") || u.starts_with("AT%CMNG=3")
        })
        .cloned()
        .collect()
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn four_modems_export_sign_import_and_reruns_are_noops() {
    let mut b = Bench::new(4, |c| c.boot_cfun = 1);
    let t = Instant::now();
    let r = b.export(false);
    let first = t.elapsed();
    assert_all(&r.devices, Status::Done);
    assert_eq!(request_rows(&b.out()).len(), 4);
    for i in 0..4 {
        assert_eq!(
            b.sim.snapshot(i).cfun,
            4,
            "export leaves the device offline"
        );
    }

    // Re-run: nothing sent that changes storage, nothing appended.
    let before: Vec<usize> = (0..4).map(|i| b.commands(i).len()).collect();
    let csv_before = std::fs::read(b.out()).unwrap();
    let r2 = b.export(false);
    assert_all(&r2.devices, Status::AlreadyDone);
    assert_eq!(std::fs::read(b.out()).unwrap(), csv_before);
    for (i, n) in before.iter().enumerate() {
        let new = &b.commands(i)[*n..];
        assert!(storage_changing(new).is_empty(), "{new:?}");
        assert!(!new.iter().any(|c| c.starts_with("AT+CFUN=")), "{new:?}");
    }

    let bundle = b.sign();
    let r3 = b.import(&bundle);
    assert_all(&r3.devices, Status::Done);
    assert_provisioned(&b, &bundle);
    for i in 0..4 {
        assert_eq!(
            b.sim.snapshot(i).cfun,
            1,
            "import restores the mode found before export"
        );
        let cmds = b.commands(i);
        assert!(
            !cmds
                .iter()
                .any(|c| c.starts_with("AT%CMNG=0,16842753,2")
                    || c.starts_with("AT%CMNG=3,16842753,2")),
            "import never touches the key"
        );
    }

    // Re-run import: no writes, no CFUN change.
    let before: Vec<usize> = (0..4).map(|i| b.commands(i).len()).collect();
    let r4 = b.import(&bundle);
    assert_all(&r4.devices, Status::AlreadyDone);
    for (i, n) in before.iter().enumerate() {
        let new = &b.commands(i)[*n..];
        assert!(storage_changing(new).is_empty(), "{new:?}");
        assert!(!new.iter().any(|c| c.starts_with("AT+CFUN=")), "{new:?}");
    }

    // The state and its journal.
    let st = State::open_existing(&b.state()).unwrap();
    let devs = st.devices().unwrap();
    assert_eq!(devs.len(), 4);
    for d in &devs {
        assert_eq!(d.state, DeviceState::Imported);
        assert_eq!(d.cfun_before, Some(1));
        assert!(d.cert_serial.is_some() && d.public_key.is_some());
    }
    let j = st.journal_entries(None).unwrap();
    assert!(j
        .iter()
        .any(|e| e.command.starts_with("AT%KEYGEN=16842753,2,0")));
    assert!(j.iter().all(|e| e.operator == "tester"));
    assert!(
        !j.iter().any(|e| e.command.contains("BEGIN CERTIFICATE")),
        "the journal summarises PEMs"
    );
    eprintln!("export of 4 modems took {first:?}");
}

#[test]
fn cli_export_status_and_exit_codes() {
    let b = Bench::new(2, |_| {});
    let mut args: Vec<String> = vec!["bench".into(), "export".into()];
    for p in &b.ports {
        args.push("--port".into());
        args.push(p.clone());
    }
    args.push("--port".into());
    args.push(b.p("no-such-port").to_string_lossy().into_owned());
    for a in [
        "--out",
        b.out().to_str().unwrap(),
        "--state",
        b.state().to_str().unwrap(),
        "--operator",
        "tech",
        "--timeout",
        "1.5",
        "--slow-timeout",
        "3",
        "--reconnect-wait",
        "0.3",
        "--json",
    ] {
        args.push(a.into());
    }
    let o = run(bin().args(&args));
    // One port does not exist: exit 1, the other two are exported.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let devs = report["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    assert_eq!(devs.iter().filter(|d| d["status"] == "done").count(), 2);
    let bad = devs.iter().find(|d| d["status"] != "done").unwrap();
    assert_eq!(bad["code"], "port-not-found");
    let err = stderr(&o);
    assert!(err.contains("devices that need attention"), "{err}");
    assert!(err.contains("next:"), "{err}");

    // status --json lists both devices with their next step.
    let o = run(bin().args([
        "bench",
        "status",
        "--json",
        "--state",
        b.state().to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let devs = st["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    for d in devs {
        assert_eq!(d["state"], "exported");
        assert!(d["next_step"].as_str().unwrap().contains("sign"));
    }
    // status on a directory that is not a bench state: exit 2 with advice.
    let o = run(bin().args([
        "bench",
        "status",
        "--state",
        b.p("nowhere").to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--state"));
}

#[test]
fn tampered_bundle_is_refused_before_any_modem_is_touched() {
    let mut b = Bench::new(2, |_| {});
    assert_all(&b.export(false).devices, Status::Done);
    let bundle = b.sign();

    // 1. One byte of certs.csv changed.
    let bad = b.p("tampered");
    std::fs::create_dir(&bad).unwrap();
    for e in std::fs::read_dir(&bundle).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let certs = std::fs::read_to_string(bad.join("certs.csv")).unwrap();
    let pos = certs.find("MII").unwrap() + 10;
    let mut bytes = certs.into_bytes();
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    std::fs::write(bad.join("certs.csv"), bytes).unwrap();

    // 2. The right bundle but the wrong trust anchor.
    let other = b.p("other-ca.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            b.p("other.key").to_str().unwrap(),
            "-out",
            other.to_str().unwrap(),
            "-subj",
            "/CN=Other CA",
            "-days",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let have_openssl = matches!(o, Ok(st) if st.success());
    if !have_openssl {
        assert!(
            !common::require_tools(),
            "openssl is required (NRFCA_REQUIRE_TOOLS=1)"
        );
        eprintln!("note: openssl not found; skipping the wrong --trust case");
    }

    let before: Vec<usize> = (0..2).map(|i| b.commands(i).len()).collect();
    let mut cases = vec![(bad.clone(), b.ca().join("ca.pem"), "altered")];
    if have_openssl {
        cases.push((bundle.clone(), other.clone(), ""));
    }
    for (bdir, trust, needle) in cases {
        let mut args = vec!["bench".to_string(), "import".into()];
        for p in &b.ports {
            args.push("--port".into());
            args.push(p.clone());
        }
        for a in [
            "--bundle",
            bdir.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
            "--state",
            b.state().to_str().unwrap(),
        ] {
            args.push(a.into());
        }
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("refused before touching any modem"), "{err}");
        assert!(err.contains(needle), "{err}");
    }
    for (i, n) in before.iter().enumerate() {
        assert_eq!(b.commands(i).len(), *n, "no byte reached modem {i}");
    }
    // The genuine bundle still imports.
    assert_all(&b.import(&bundle).devices, Status::Done);
    assert_provisioned(&b, &bundle);
}

#[test]
fn a_foreign_key_is_refused_unless_force() {
    let mut b = Bench::new(2, |_| {});
    // Modem 1 already holds a key this bench never exported (another tool's KEYGEN).
    assert_all(&b.export(false).devices, Status::Done);
    let state2 = b.p("S-other");
    let mut o = ExportOptions::new(vec![b.ports[1].clone()], b.p("other.csv"));
    o.state_dir = state2;
    o.settings = settings();
    let r = export(&o, &|_| {}).unwrap();
    assert_eq!(statuses(&r.devices), vec![Status::Failed]);
    assert_eq!(r.devices[0].code.as_deref(), Some("slot-occupied"));
    assert!(r.devices[0]
        .next_step
        .as_deref()
        .unwrap()
        .contains("--force"));
    let key_before = b.sim.snapshot(1).credential(TAG, 2).unwrap().public_key;

    // With --force the other bench replaces it (the only path that deletes a key).
    let mut o2 = o.clone();
    o2.force = true;
    let r = export(&o2, &|_| {}).unwrap();
    assert_eq!(statuses(&r.devices), vec![Status::Done]);
    let key_after = b.sim.snapshot(1).credential(TAG, 2).unwrap().public_key;
    assert_ne!(key_before, key_after);
    let cmds = b.commands(1);
    assert!(cmds.iter().any(|c| c == "AT%CMNG=3,16842753,2"));

    // Back on the first bench, modem 1's key changed behind its back: refused, not skipped.
    let r = b.export(false);
    assert_eq!(r.devices[0].status, Status::AlreadyDone);
    assert_eq!(r.devices[1].status, Status::Failed);
    assert_eq!(r.devices[1].code.as_deref(), Some("key-changed"));
    let _ = b.sign();
}

/// Run the whole flow with `fault` on modem 1 during export (and, for faults that hit
/// writes, during import), checking the others are never held up and a re-run completes.
fn fault_flow(
    fault: Fault,
    expect_export: Status,
    expect_import: Status,
    code: Option<&str>,
) -> Bench {
    let mut b = Bench::new(3, |_| {});
    b.sim.set_faults(1, vec![fault]);
    let r = b.export(false);
    assert_eq!(r.devices[0].status, Status::Done, "{:#?}", r.devices[0]);
    assert_eq!(r.devices[2].status, Status::Done, "{:#?}", r.devices[2]);
    let d = &r.devices[1];
    assert_eq!(d.status, expect_export, "export with {fault}: {d:#?}");
    if d.status != Status::Done {
        if let Some(c) = code {
            assert_eq!(d.code.as_deref(), Some(c), "{d:#?}");
        }
        assert!(d.next_step.is_some());
        b.sim.set_faults(1, vec![]);
        let r = b.export(false);
        assert_eq!(r.devices[1].status, Status::Done, "{:#?}", r.devices[1]);
        assert_eq!(r.devices[0].status, Status::AlreadyDone);
    }
    let bundle = b.sign();

    b.sim.set_faults(1, vec![fault]);
    let r = b.import(&bundle);
    assert_eq!(r.devices[0].status, Status::Done, "{:#?}", r.devices[0]);
    assert_eq!(r.devices[2].status, Status::Done, "{:#?}", r.devices[2]);
    let d = &r.devices[1];
    assert_eq!(d.status, expect_import, "import with {fault}: {d:#?}");
    if d.status != Status::Done {
        if let Some(c) = code {
            assert_eq!(d.code.as_deref(), Some(c), "{d:#?}");
        }
        b.sim.set_faults(1, vec![]);
        let r = b.import(&bundle);
        assert_eq!(r.devices[1].status, Status::Done, "{:#?}", r.devices[1]);
        assert_eq!(r.devices[0].status, Status::AlreadyDone);
    }
    b.sim.set_faults(1, vec![]);
    assert_provisioned(&b, &bundle);
    // Nothing ever deleted an exported key (no --force was used): every KEYGEN'd key that
    // reached the requests file is the device's key (checked above), and exactly one row per
    // device exists.
    assert_eq!(request_rows(&b.out()).len(), 3);
    b
}

fn count(cmds: &[String], prefix: &str) -> usize {
    cmds.iter().filter(|c| c.starts_with(prefix)).count()
}

#[test]
fn fault_disconnect_recovers_by_reconnecting() {
    // Unplugged mid-KEYGEN reply: the key exists but its CSR never arrived; the bench
    // reconnects, finds the orphan key of its own interrupted KEYGEN, replaces it and exports.
    // On import the unplug hits the first write; the re-check finds it done and continues.
    let b = fault_flow(Fault::Disconnect, Status::Done, Status::Done, None);
    let snap = b.sim.snapshot(1);
    assert_eq!(
        snap.disconnects, 2,
        "one unplug during export, one during import"
    );
    let cmds = snap.commands;
    assert_eq!(count(&cmds, "AT%KEYGEN="), 2, "{cmds:?}");
    assert_eq!(
        count(&cmds, "AT%CMNG=3,16842753,2"),
        1,
        "the orphan key was replaced"
    );
    assert_eq!(
        count(&cmds, "AT%CMNG=0,16842753,0"),
        1,
        "the root write survived the unplug"
    );
}

#[test]
fn fault_lost_final_recovers() {
    // KEYGEN's reply arrives without OK: the string is kept, the slot confirms the key.
    let b = fault_flow(Fault::LostFinal, Status::Done, Status::Done, None);
    let cmds = b.sim.snapshot(1).commands;
    assert_eq!(
        count(&cmds, "AT%KEYGEN="),
        1,
        "the reply was adopted: {cmds:?}"
    );
    assert_eq!(count(&cmds, "AT%CMNG=3"), 0, "nothing deleted");
    assert_eq!(
        count(&cmds, "AT%CMNG=0,16842753,0"),
        1,
        "the write was not repeated"
    );
}

#[test]
fn fault_garbage_is_skipped() {
    fault_flow(Fault::Garbage, Status::Done, Status::Done, None);
}

#[test]
fn fault_urcs_are_skipped() {
    fault_flow(Fault::Urcs, Status::Done, Status::Done, None);
}

#[test]
fn fault_slow_replies_are_waited_for() {
    fault_flow(Fault::Slow, Status::Done, Status::Done, None);
}

#[test]
fn fault_first_command_fails_is_tolerated() {
    fault_flow(Fault::FirstCommandFails, Status::Done, Status::Done, None);
}

#[test]
fn fault_cme_on_write_fails_import_then_rerun_completes() {
    fault_flow(
        Fault::CmeOnWrite,
        Status::Done,
        Status::Failed,
        Some("cme-528"),
    );
}

#[test]
fn fault_storage_full_fails_then_rerun_completes() {
    // 515 on KEYGEN in export; import writes also get 515 while it is on.
    fault_flow(
        Fault::StorageFull,
        Status::Failed,
        Status::Failed,
        Some("cme-515"),
    );
}

#[test]
fn fault_keygen_fail_then_rerun_completes() {
    fault_flow(
        Fault::KeygenFail,
        Status::Failed,
        Status::Done,
        Some("cme-523"),
    );
}

#[test]
fn old_firmware_and_state_after_failures() {
    // A KEYGEN failure is recorded as export-failed with the code, and the device keeps its
    // mode (export restores CFUN after a definite failure).
    let b = Bench::new(1, |c| c.boot_cfun = 1);
    b.sim.set_faults(0, vec![Fault::KeygenFail]);
    let r = b.export(false);
    assert_eq!(r.devices[0].status, Status::Failed);
    assert_eq!(
        b.sim.snapshot(0).cfun,
        1,
        "CFUN restored after a failed export"
    );
    let st = State::open_existing(&b.state()).unwrap();
    let d = &st.devices().unwrap()[0];
    assert_eq!(d.state, DeviceState::ExportFailed);
    assert_eq!(d.error_code.as_deref(), Some("cme-523"));
    assert!(d.last_error.as_deref().unwrap().contains("523"));
}

#[test]
fn other_profiles_slm_and_nrf91x1() {
    use nrfca::sim::Profile;
    for profile in [Profile::Slm, Profile::Nrf91x1] {
        let mut b = Bench::new(2, |c| c.profile = profile);
        let r = b.export(false);
        assert_all(&r.devices, Status::Done);
        let bundle = b.sign();
        assert_all(&b.import(&bundle).devices, Status::Done);
        assert_provisioned(&b, &bundle);
        let snap = b.sim.snapshot(0);
        let st = State::open_existing(&b.state()).unwrap();
        let rec = st.device(&snap.imei, TAG).unwrap().unwrap();
        assert_eq!(rec.uuid.as_deref(), Some(snap.uuid.as_str()), "{profile:?}");
        assert_eq!(rec.model.as_deref(), Some(snap.model.as_str()));
    }
}

#[test]
fn device_missing_from_bundle_fails_alone() {
    let mut b = Bench::new(2, |_| {});
    assert_all(&b.export(false).devices, Status::Done);
    // The officer signed a file holding only the first device's request.
    let text = std::fs::read_to_string(b.out()).unwrap();
    let imei0 = b.sim.snapshot(0).imei;
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.contains(&imei0))
        .map(|(_, l)| l)
        .collect();
    std::fs::write(b.out(), format!("{}\n", kept.join("\n"))).unwrap();
    let bundle = b.sign();
    let r = b.import(&bundle);
    assert_eq!(r.devices[0].status, Status::Done);
    assert_eq!(r.devices[1].status, Status::Failed);
    assert_eq!(r.devices[1].code.as_deref(), Some("no-certificate"));
    let snap = b.sim.snapshot(1);
    assert!(snap.credential(TAG, 1).is_none(), "nothing written to it");
    assert!(snap.credential(TAG, 2).is_some(), "its key is untouched");
    let st = State::open_existing(&b.state()).unwrap();
    let rec = st.device(&snap.imei, TAG).unwrap().unwrap();
    assert_eq!(rec.state, DeviceState::ImportFailed);
    // Still counts as exported: a re-run of export skips it.
    let r = b.export(false);
    assert_eq!(r.devices[1].status, Status::AlreadyDone);
}

// ------------------------------------------------- issue 10 item 7: which CA, which device

/// `ca init` of another CA in `b`'s directory (age recipient `<name>.agekey`).
fn make_ca(b: &Bench, name: &str, subject: &str) -> PathBuf {
    let dir = b.p(name);
    common::ca_init_age(
        &dir,
        &b.p(&format!("{name}.agekey")),
        subject,
        &["--operator", "officer"],
    );
    dir
}

/// `nrfca sign` of `b`'s requests file with the CA in `b.p(ca)` into `b.p(out)`.
fn sign_with(b: &Bench, ca: &str, out: &str) -> PathBuf {
    let bundle = b.p(out);
    let o = run(bin()
        .args(["sign", "--ca-dir"])
        .arg(b.p(ca))
        .arg("--identity")
        .arg(b.p(&format!("{ca}.agekey")))
        .arg("--out")
        .arg(&bundle)
        .args(["--operator", "officer"])
        .arg(b.out()));
    assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));
    bundle
}

/// Library `bench import` of `bundle` on the modems `idx`, trusting `trust`.
fn import_on(b: &Bench, idx: &[usize], bundle: &Path, trust: &Path, force: bool) -> ImportReport {
    let ports = idx.iter().map(|&i| b.ports[i].clone()).collect();
    let mut o = ImportOptions::new(ports, bundle.to_path_buf(), trust.to_path_buf());
    o.state_dir = b.state();
    o.operator = Some("tester".into());
    o.settings = b.settings.clone();
    o.force = force;
    import(&o, &|_| {}).expect("import runs")
}

/// `nrfca bench import` (the binary) on every modem of `b`.
fn cli_import(b: &Bench, bundle: &Path, trust: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.args(["bench", "import"]);
    for p in &b.ports {
        c.args(["--port", p]);
    }
    c.arg("--bundle")
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .arg("--state")
        .arg(b.state())
        .args([
            "--operator",
            "tester",
            "--timeout",
            "1.5",
            "--slow-timeout",
            "2",
            "--reconnect-wait",
            "2",
        ])
        .args(extra);
    run(&mut c)
}

/// SHA-256 (lowercase hex) of the DER of the certificate in `pem_file`: a CA's fingerprint.
fn ca_fingerprint(pem_file: &Path) -> String {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    nrfca::internal::crypto::sha256_hex(&nrfca::internal::util::first_cert_der(&pem).unwrap())
}

/// Issue 10 item 7a: `--trust` inside `--bundle` is refused (exit 2, nothing sent to a
/// modem): a bundle cannot vouch for itself. Whoever writes the stick could otherwise sign
/// certificates with their own CA and ship its ca.pem beside them. Also through a symlink and
/// a hard link. On 845129f the import ran (exit 0).
#[test]
fn import_trust_inside_bundle_is_refused() {
    let mut b = Bench::new(1, |_| {});
    assert_all(&b.export(false).devices, Status::Done);
    let bundle = b.sign();
    let before = b.commands(0).len();
    let link = b.p("linked-ca.pem");
    std::os::unix::fs::symlink(bundle.join("ca.pem"), &link).unwrap();
    let hard = b.p("hard-ca.pem");
    std::fs::hard_link(bundle.join("ca.pem"), &hard).unwrap();
    for trust in [
        bundle.join("ca.pem"),
        bundle.join(".").join("ca.pem"),
        link.clone(),
        hard.clone(),
    ] {
        let o = cli_import(&b, &bundle, &trust, &[]);
        assert_eq!(o.status.code(), Some(2), "{trust:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("inside the bundle"),
            "{trust:?}: {}",
            stderr(&o)
        );
        let mut opts = ImportOptions::new(b.ports.clone(), bundle.clone(), trust.clone());
        opts.state_dir = b.state();
        assert!(nrfca::bench::verify_bundle(&opts).is_err(), "{trust:?}");
    }
    assert_eq!(b.commands(0).len(), before, "no byte reached the modem");
    // The CA's own ca.pem, kept outside the bundle, is accepted.
    let o = cli_import(&b, &bundle, &b.ca().join("ca.pem"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_provisioned(&b, &bundle);
}

/// Issue 10 item 7b: a device provisioned from CA X is not re-provisioned from CA Y without
/// `--force`: the CA is pinned per device in the bench state when its certificate is
/// installed (`ca-changed`, per device: a device without a certificate still imports from Y
/// in the same run). With `--force` the change goes through and is journaled. On 845129f the
/// CA Y bundle silently replaced CA X's certificate.
#[test]
fn import_ca_change_is_refused_unless_force() {
    let mut b = Bench::new(2, |_| {});
    assert_all(&b.export(false).devices, Status::Done);
    let bundle_x = b.sign();
    let trust_x = b.ca().join("ca.pem");
    // Only modem 0 gets CA X's certificate.
    let r = import_on(&b, &[0], &bundle_x, &trust_x, false);
    assert_all(&r.devices, Status::Done);
    let imei0 = b.sim.snapshot(0).imei;
    let imei1 = b.sim.snapshot(1).imei;
    let st = State::open_existing(&b.state()).unwrap();
    let cert_x = b
        .sim
        .snapshot(0)
        .credential(TAG, 1)
        .unwrap()
        .content
        .clone();

    // CA Y signs the same requests (same keys, a CA of its own).
    make_ca(&b, "ca-y", "CN=Other CA,O=Elsewhere");
    let bundle_y = sign_with(&b, "ca-y", "bundle-y");
    let trust_y = b.p("ca-y").join("ca.pem");
    let before = b.commands(0).len();
    let r = import_on(&b, &[0, 1], &bundle_y, &trust_y, false);
    assert_eq!(r.devices[0].status, Status::Failed, "{:#?}", r.devices[0]);
    assert_eq!(r.devices[0].code.as_deref(), Some("ca-changed"));
    assert!(r.devices[0]
        .next_step
        .as_deref()
        .unwrap()
        .contains("--force"));
    assert_eq!(r.devices[1].status, Status::Done, "{:#?}", r.devices[1]);
    assert!(
        !b.commands(0)[before..]
            .iter()
            .any(|c| common::changes_modem(c)),
        "nothing written to the pinned device: {:?}",
        &b.commands(0)[before..]
    );
    assert_eq!(
        b.sim.snapshot(0).credential(TAG, 1).unwrap().content,
        cert_x,
        "CA X's certificate stays"
    );
    let rec = st.device(&imei0, TAG).unwrap().unwrap();
    assert_eq!(
        rec.state,
        DeviceState::Imported,
        "the verified import stands"
    );
    assert_eq!(rec.ca_sha256, Some(ca_fingerprint(&trust_x)), "CA X pinned");
    let rec1 = st.device(&imei1, TAG).unwrap().unwrap();
    assert_eq!(rec1.ca_sha256, Some(ca_fingerprint(&trust_y)));

    // The binary: exit 1, the code named.
    let o = cli_import(&b, &bundle_y, &trust_y, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("ca-changed"), "{}", stderr(&o));

    // --force: installed, pinned to Y, journaled.
    let o = cli_import(&b, &bundle_y, &trust_y, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_provisioned(&b, &bundle_y);
    let rec = st.device(&imei0, TAG).unwrap().unwrap();
    assert_eq!(rec.ca_sha256, Some(ca_fingerprint(&trust_y)));
    let j = st.journal_entries(Some(&imei0)).unwrap();
    assert!(
        j.iter()
            .any(|e| e.command == "forced" && e.outcome.contains("ca-changed")),
        "{j:#?}"
    );
    // And back to X is again a change of CA.
    let r = import_on(&b, &[0], &bundle_x, &trust_x, false);
    assert_eq!(r.devices[0].code.as_deref(), Some("ca-changed"));
}

/// Issue 10 item 7c: a certificate validly signed by the trusted CA, for the key the device
/// exported, but whose CN names another device, is refused for that device
/// (`cert-wrong-device`, nothing written); the other device of the run imports. On 845129f
/// it was installed (the threat model claimed the CN was checked; it was not).
#[test]
fn import_cert_not_naming_the_device_is_refused() {
    use der::DecodePem;
    use der::Encode;
    let mut b = Bench::new(2, |_| {});
    assert_all(&b.export(false).devices, Status::Done);
    let genuine = b.sign();
    let snap0 = b.sim.snapshot(0);
    let snap1 = b.sim.snapshot(1);

    // The CA key (we control the CA) and its profile.
    let ca_pem = std::fs::read(b.ca().join("ca.pem")).unwrap();
    let ct = std::fs::read(b.ca().join("ca.key.age")).unwrap();
    let pkcs8 = nrfca::signer::secret::decrypt(
        &ct,
        &nrfca::signer::secret::Unlock::Identity(b.p("id.agekey")),
    )
    .unwrap();
    let ca_key = nrfca::internal::crypto::P256Key::from_pkcs8(&pkcs8).unwrap();
    let ca_cert = x509_cert::Certificate::from_pem(&ca_pem).unwrap();
    let tbs = &ca_cert.tbs_certificate;
    let ski = tbs
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.14")
        .unwrap();
    let ski = <der::asn1::OctetString as der::Decode>::from_der(ski.extn_value.as_bytes()).unwrap();
    let ca_not_after = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
    let profile = nrfca::internal::signer::issue::IssuerProfile {
        subject_der: tbs.subject.to_der().unwrap(),
        ski: ski.as_bytes().to_vec(),
        not_after: time::OffsetDateTime::from_unix_timestamp(ca_not_after).unwrap(),
    };

    // Modem 0's row gets a certificate for modem 0's exported key, CN = modem 1's UUID.
    let certs_csv = std::fs::read_to_string(genuine.join("certs.csv")).unwrap();
    let rows = nrfca::bundle::parse_certs_csv(certs_csv.as_bytes()).unwrap();
    let row0 = rows.iter().find(|r| r.imei == snap0.imei).unwrap();
    let key0: [u8; 65] = cert_public_key(&row0.certificate_pem).try_into().unwrap();
    let nb = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let serial = nrfca::internal::signer::issue::Serial::random().unwrap();
    let forged = nrfca::internal::signer::issue::issue(
        &profile,
        &nrfca::internal::signer::issue::Issuance {
            device_id: snap1.uuid.clone(),
            public_key: key0,
            serial,
            not_before: nb,
            not_after: nb + time::Duration::days(365),
        },
        |t| ca_key.sign_der(t),
    )
    .unwrap();
    let forged_sha = nrfca::internal::crypto::sha256_hex(forged.pem.as_bytes());
    let bad = b.p("forged");
    common::copy_dir(&genuine, &bad);
    let new_csv = certs_csv
        .replacen(&row0.certificate_pem, &forged.pem, 1)
        .replacen(&row0.sha256, &forged_sha, 1)
        .replacen(
            &format!(",{},", row0.serial),
            &format!(",{},", serial.to_hex()),
            1,
        );
    assert_ne!(new_csv, certs_csv);
    std::fs::write(bad.join("certs.csv"), &new_csv).unwrap();
    let manifest = std::fs::read_to_string(bad.join("manifest.json")).unwrap();
    let manifest = manifest.replacen(
        &nrfca::internal::crypto::sha256_hex(certs_csv.as_bytes()),
        &nrfca::internal::crypto::sha256_hex(new_csv.as_bytes()),
        1,
    );
    std::fs::write(bad.join("manifest.json"), &manifest).unwrap();
    std::fs::write(
        bad.join("manifest.sig"),
        format!(
            "{}\n",
            nrfca::internal::crypto::b64_encode(&ca_key.sign_der(manifest.as_bytes()).unwrap())
        ),
    )
    .unwrap();
    // A validly signed bundle: it passes bundle verification.
    nrfca::bundle::verify(&bad, &ca_pem).expect("the forged bundle is validly signed");

    let before = b.commands(0).len();
    let r = b.import(&bad);
    assert_eq!(r.devices[0].status, Status::Failed, "{:#?}", r.devices[0]);
    assert_eq!(r.devices[0].code.as_deref(), Some("cert-wrong-device"));
    assert!(
        r.devices[0].detail.contains(&snap1.uuid),
        "{}",
        r.devices[0].detail
    );
    assert!(
        !b.commands(0)[before..]
            .iter()
            .any(|c| common::changes_modem(c)),
        "nothing written: {:?}",
        &b.commands(0)[before..]
    );
    assert!(b.sim.snapshot(0).credential(TAG, 1).is_none());
    assert_eq!(r.devices[1].status, Status::Done, "{:#?}", r.devices[1]);
    // The genuine bundle still imports on both.
    let r = b.import(&genuine);
    assert_eq!(
        statuses(&r.devices),
        vec![Status::Done, Status::AlreadyDone]
    );
}

/// Issue 16: with `$USER` (and `$LOGNAME`) unset the CA audit log and the bench journal name
/// the same operator (one rule, `nrfca::operator_name`); before, the audit log had the
/// login name and the journal `unknown`. And `sign`'s next step names the bundle by the path
/// given to `--out`, not its base name (which only works from the bundle's parent directory).
#[test]
fn issue16_one_operator_rule_and_sign_hint_with_the_bundle_path() {
    let b = Bench::new(1, |_| {});
    let no_user = |c: &mut Command| {
        c.env_remove("USER").env_remove("LOGNAME");
    };
    let mut export = bin();
    no_user(&mut export);
    let o = run(export.args([
        "bench",
        "export",
        "--port",
        &b.ports[0],
        "--out",
        b.out().to_str().unwrap(),
        "--state",
        b.state().to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = State::open_existing(&b.state()).unwrap();
    let journal: Vec<String> = st
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .map(|e| e.operator)
        .collect();
    assert!(!journal.is_empty());

    let id = b.p("id.agekey");
    let r = common::age_identity(&id);
    let mut init = bin();
    no_user(&mut init);
    let o = run(init.args(["ca", "init", "--ca-dir"]).arg(b.ca()).args([
        "--subject",
        "CN=Operator Test CA",
        "--recipient",
        &r,
    ]));
    assert!(o.status.success(), "ca init: {}", stderr(&o));
    let o = run(bin()
        .args(["audit", "show", "--json", "--ca-dir"])
        .arg(b.ca()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let audit_op = records[0]["operator"].as_str().unwrap().to_string();
    assert!(
        journal.iter().all(|j| *j == audit_op),
        "journal {journal:?} vs audit {audit_op}"
    );

    // The sign hint: a bundle in a sub-directory is named by its path.
    std::fs::create_dir(b.p("batches")).unwrap();
    let bundle = b.p("batches").join("b1");
    let o = run(bin()
        .args(["sign", "--ca-dir"])
        .arg(b.ca())
        .arg("--identity")
        .arg(&id)
        .arg("--out")
        .arg(&bundle)
        .arg(b.out()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!("--bundle {} --trust ca.pem", bundle.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}
