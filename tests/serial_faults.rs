//! The serial fault matrix (SPEC §6, §7): every simulator fault at every step of `bench
//! export` and `bench import`, one simulated modem per cell, all cells of a phase in one
//! parallel run.
//!
//! Steps are not hard-coded: a clean run on a probe modem records the exact command sequence
//! (`AT`, `AT+CMEE=1`, `AT+CFUN?`, `AT+CGSN`, … `AT%KEYGEN=…`, `AT%CMNG=1,…`), and the
//! output faults (`disconnect`, `lost-final`, `garbage`, `urcs`, `slow`) are put on the k-th
//! command of it with the simulator's `*#k` trigger; `disconnect` is also combined with
//! `first-command-fails` (the first command after the reboot fails too). The engine faults
//! (`cme-on-write`, `storage-full`, `keygen-fail`, `first-command-fails`) are put on the
//! commands they apply to (`%KEYGEN`, each `%CMNG=0` write separately, every boot).
//!
//! After every run, for every modem, against `nrfca bench status --json`, the requests file,
//! the bundle and the modem's real storage:
//! - the device is in the bench state with a known state, or (IMEI never read) nothing that
//!   changes a modem was sent to it;
//! - a requests row is never written twice, and whenever one was written the modem's key
//!   (type 2) is the exported key and the state says so (no key lost without `--force`);
//! - a state that claims an exported key means a row exists and the key is in the slot;
//! - no modem holds a certificate whose key is not its key; `imported` means the bundle's
//!   certificate and the root CAs are stored byte-exactly;
//! - a device reported done is in the done state.
//!
//! Run 1 has the faults on; run 2 keeps them (one-shot faults are spent: those cells must be
//! done); run 3 switches every fault off and must finish every device; run 4 must be a no-op.
#![cfg(feature = "bench")]

use nrfca::bench::{
    export, import, DeviceResult, ExportOptions, ImportOptions, PortSettings, Status,
};
use nrfca::internal::bench::import::default_root_bundle;
use nrfca::sim::{Fault, FaultSpec, Latency, Profile, SimConfig, Simulator};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{bin, cert_public_key, changes_modem, TAG};

/// Functional mode at power-on: import must put it back.
const BOOT_CFUN: u8 = 1;

/// Short timeouts: a lost final result costs one timeout, the `slow` fault stays well
/// inside them (10x latency + 250 ms, trickled).
fn settings(retries: u32) -> PortSettings {
    PortSettings {
        retries,
        ..common::port_settings(1200, 500, 3)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Export,
    Import,
}

/// One cell of the matrix: a name and the faults of its modem.
#[derive(Debug, Clone)]
struct Cell {
    name: String,
    specs: Vec<FaultSpec>,
    /// Only one-shot faults (or `#N`-limited ones): a re-run with the faults still on must
    /// finish the job.
    one_shot: bool,
}

fn spec(f: Fault, trigger: &str) -> FaultSpec {
    FaultSpec::all(f).when(trigger)
}

/// Every cell for a phase whose clean command sequence is `steps`.
fn cells(phase: Phase, steps: &[String]) -> Vec<Cell> {
    let mut out = Vec::new();
    let output = [
        Fault::Disconnect,
        Fault::LostFinal,
        Fault::Garbage,
        Fault::Urcs,
        Fault::Slow,
    ];
    for (k, cmd) in steps.iter().enumerate() {
        let k = k + 1;
        let short: String = cmd.chars().take(28).collect();
        for f in output {
            out.push(Cell {
                name: format!("{f} at #{k} {short}"),
                specs: vec![spec(f, &format!("*#{k}"))],
                one_shot: true,
            });
        }
        out.push(Cell {
            name: format!("disconnect at command #{k} + first-command-fails"),
            specs: vec![
                spec(Fault::Disconnect, &format!("*#{k}")),
                spec(Fault::FirstCommandFails, "*"),
            ],
            one_shot: false,
        });
    }
    // Engine faults where they apply.
    out.push(Cell {
        name: "first-command-fails (every boot)".into(),
        specs: vec![spec(Fault::FirstCommandFails, "*")],
        one_shot: false,
    });
    out.push(Cell {
        name: "garbage on every reply".into(),
        specs: vec![spec(Fault::Garbage, "*")],
        one_shot: false,
    });
    out.push(Cell {
        name: "urcs on every reply".into(),
        specs: vec![spec(Fault::Urcs, "*")],
        one_shot: false,
    });
    match phase {
        Phase::Export => {
            out.push(Cell {
                name: "keygen-fail on %KEYGEN".into(),
                specs: vec![spec(Fault::KeygenFail, "%KEYGEN")],
                one_shot: true,
            });
            out.push(Cell {
                name: "storage-full on %KEYGEN".into(),
                specs: vec![spec(Fault::StorageFull, "%KEYGEN")],
                one_shot: false,
            });
            out.push(Cell {
                name: "cme-on-write (no write in export)".into(),
                specs: vec![spec(Fault::CmeOnWrite, "*")],
                one_shot: false,
            });
            out.push(Cell {
                name: "disconnect on %KEYGEN + first-command-fails + urcs".into(),
                specs: vec![
                    spec(Fault::Disconnect, "%KEYGEN"),
                    spec(Fault::FirstCommandFails, "*"),
                    spec(Fault::Urcs, "*"),
                ],
                one_shot: false,
            });
            out.push(Cell {
                name: "lost-final on %KEYGEN then on the confirm listing".into(),
                specs: vec![
                    spec(Fault::LostFinal, "%KEYGEN"),
                    spec(Fault::LostFinal, "%CMNG=1#2"),
                ],
                one_shot: true,
            });
        }
        Phase::Import => {
            for (n, what) in [(1, "root CAs (type 0)"), (2, "certificate (type 1)")] {
                out.push(Cell {
                    name: format!("cme-on-write on write #{n} {what}"),
                    specs: vec![spec(Fault::CmeOnWrite, &format!("%CMNG=0#{n}"))],
                    one_shot: true,
                });
                out.push(Cell {
                    name: format!("storage-full on write #{n} {what}"),
                    specs: vec![spec(Fault::StorageFull, &format!("%CMNG=0#{n}"))],
                    one_shot: true,
                });
            }
            out.push(Cell {
                name: "cme-on-write on every write".into(),
                specs: vec![spec(Fault::CmeOnWrite, "%CMNG=0")],
                one_shot: false,
            });
            out.push(Cell {
                name: "storage-full on every write".into(),
                specs: vec![spec(Fault::StorageFull, "%CMNG=0")],
                one_shot: false,
            });
            out.push(Cell {
                name: "keygen-fail (import never generates)".into(),
                specs: vec![spec(Fault::KeygenFail, "*")],
                one_shot: true,
            });
            out.push(Cell {
                name: "disconnect on each write (default trigger) + first-command-fails".into(),
                specs: vec![
                    FaultSpec::all(Fault::Disconnect),
                    spec(Fault::FirstCommandFails, "*"),
                ],
                one_shot: false,
            });
        }
    }
    out
}

struct Bench {
    profile: Profile,
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
}

impl Bench {
    fn new(count: usize, profile: Profile) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(SimConfig {
            count,
            latency: Latency::Test,
            link_dir: Some(dir.path().join("modems")),
            boot_cfun: BOOT_CFUN,
            profile,
            seed: Some(7),
            ..SimConfig::default()
        })
        .expect("simulator starts");
        let ports = common::port_names(&sim);
        Bench {
            profile,
            dir,
            sim,
            ports,
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn export(&self, idx: &[usize], retries: u32) -> Vec<DeviceResult> {
        let ports = idx.iter().map(|&i| self.ports[i].clone()).collect();
        let mut o = ExportOptions::new(ports, self.p("requests.csv"));
        o.state_dir = self.p("S");
        o.operator = Some("tech".into());
        o.settings = settings(retries);
        export(&o, &|_| {}).expect("export runs").devices
    }

    fn import(&self, idx: &[usize], bundle: &Path, retries: u32) -> Vec<DeviceResult> {
        let ports = idx.iter().map(|&i| self.ports[i].clone()).collect();
        let mut o = ImportOptions::new(ports, bundle.to_path_buf(), self.p("ca/ca.pem"));
        o.state_dir = self.p("S");
        o.operator = Some("tech".into());
        o.settings = settings(retries);
        import(&o, &|_| {}).expect("import runs").devices
    }

    /// CA (age recipient) and `nrfca sign` of the requests file.
    fn sign(&self) -> PathBuf {
        let idf = self.p("id.agekey");
        common::ca_init_age(&self.p("ca"), &idf, "CN=Fault Matrix CA", &[]);
        let b = self.p("bundle");
        let o = bin()
            .args(["sign", "--ca-dir"])
            .arg(self.p("ca"))
            .arg("--identity")
            .arg(&idf)
            .arg("--out")
            .arg(&b)
            .arg(self.p("requests.csv"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        b
    }

    /// `nrfca bench status --json`: imei -> device object.
    fn status(&self) -> HashMap<String, serde_json::Value> {
        let o = bin()
            .args(["bench", "status", "--json", "--state"])
            .arg(self.p("S"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["imei"].as_str().unwrap().to_string(), d.clone()))
            .collect()
    }

    /// Wait until every modem answers snapshots again (a disconnected one comes back on a
    /// new pty within 0.1 s at Latency::Test).
    fn settle(&self) {
        let t = Instant::now();
        while (0..self.sim.count()).any(|i| self.sim.try_snapshot(i).is_none())
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// imei -> exported public keys (one per requests row).
fn request_keys(path: &Path) -> HashMap<String, Vec<Vec<u8>>> {
    let mut out: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    if !path.exists() {
        return out;
    }
    let mut r = csv::Reader::from_path(path).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let v = nrfca::keygen::check(&rec[3], &Default::default()).expect("row passes check");
        out.entry(rec[1].to_string())
            .or_default()
            .push(v.public_key.to_vec());
    }
    out
}

fn changes(cmds: &[String]) -> Vec<&String> {
    cmds.iter().filter(|c| changes_modem(c)).collect()
}

/// Everything that must hold after any run, for modem `i` of cell `cell`. Returns the state.
#[allow(clippy::too_many_arguments)]
fn check_device(
    b: &Bench,
    phase: Phase,
    i: usize,
    cell: &str,
    result: &DeviceResult,
    status: &HashMap<String, serde_json::Value>,
    requests: &HashMap<String, Vec<Vec<u8>>>,
    bundle_certs: &HashMap<String, String>,
    cmds_before: usize,
) -> String {
    let snap = b.sim.snapshot(i);
    let ctx = format!("[{phase:?}] cell `{cell}` (modem {i}, {})", snap.imei);
    let key = snap.credential(TAG, 2).and_then(|c| c.public_key);
    let rows = requests.get(&snap.imei).cloned().unwrap_or_default();
    assert!(rows.len() <= 1, "{ctx}: {} request rows", rows.len());

    let Some(dev) = status.get(&snap.imei) else {
        // Never identified: nothing may have changed on the modem in this run.
        let new = &snap.commands[cmds_before.min(snap.commands.len())..];
        assert!(
            changes(new).is_empty(),
            "{ctx}: not in the bench state but was sent {:?}",
            changes(new)
        );
        assert!(rows.is_empty(), "{ctx}: a row without a state record");
        assert!(!result.status.ok(), "{ctx}: done without a record");
        return "absent".into();
    };
    let state = dev["state"].as_str().unwrap().to_string();
    let has_exported_key = matches!(
        state.as_str(),
        "exported" | "imported" | "import-unknown" | "import-failed"
    );
    assert!(
        [
            "exported",
            "export-unknown",
            "export-failed",
            "imported",
            "import-unknown",
            "import-failed"
        ]
        .contains(&state.as_str()),
        "{ctx}: state {state}"
    );
    assert!(
        dev["next_step"].as_str().is_some_and(|s| !s.is_empty()),
        "{ctx}: no next step"
    );

    // A written row means the key is on the modem and recorded (no key lost).
    if let Some(row_key) = rows.first() {
        assert_eq!(
            key.map(|k| k.to_vec()).as_ref(),
            Some(row_key),
            "{ctx}: exported key lost (state {state})"
        );
        assert!(
            has_exported_key,
            "{ctx}: a row was written but state is {state}"
        );
    }
    if has_exported_key {
        assert_eq!(rows.len(), 1, "{ctx}: state {state} without a request row");
        assert_eq!(
            dev["public_key"].as_str(),
            key.map(hex::encode).as_deref(),
            "{ctx}: recorded key is not the modem's key"
        );
    }
    // No certificate that does not match the key.
    if let Some(c1) = snap.credential(TAG, 1) {
        let pem = c1.content.clone().expect("type 1 content");
        assert_eq!(
            Some(cert_public_key(&pem)),
            key.map(|k| k.to_vec()),
            "{ctx}: stored certificate is not for the stored key"
        );
    }
    if state == "imported" {
        let want = bundle_certs.get(&snap.imei).expect("bundle row");
        let c1 = snap.credential(TAG, 1).expect("imported: certificate");
        assert_eq!(c1.content.as_deref(), Some(want.as_str()), "{ctx}");
        let c0 = snap.credential(TAG, 0).expect("imported: root CAs");
        assert_eq!(c0.content.as_deref(), Some(default_root_bundle().as_str()));
        assert_eq!(
            dev["cert_sha256"].as_str(),
            Some(nrfca::internal::crypto::sha256_hex(want.as_bytes()).as_str())
        );
    }
    if result.status == Status::Unknown {
        assert!(
            !state.ends_with("-failed"),
            "{ctx}: reported unknown but recorded {state}"
        );
    }
    if result.status.ok() {
        let want = match phase {
            Phase::Export => "exported",
            Phase::Import => "imported",
        };
        assert_eq!(state, want, "{ctx}: reported {:?}", result.status);
    }
    state
}

/// Run a phase over all cells and check. `run` performs the bench operation on the given
/// modem indices.
fn matrix(
    b: &Bench,
    phase: Phase,
    first: usize,
    cells: &[Cell],
    bundle_certs: &HashMap<String, String>,
    clean_len: usize,
    run: &dyn Fn(&[usize], u32) -> Vec<DeviceResult>,
) {
    let idx: Vec<usize> = (first..first + cells.len()).collect();
    for (n, c) in cells.iter().enumerate() {
        b.sim.set_fault_specs(first + n, c.specs.clone());
    }
    let mut table: Vec<(String, Vec<String>)> =
        cells.iter().map(|c| (c.name.clone(), Vec::new())).collect();
    for round in 1..=4 {
        if round == 3 {
            for i in &idx {
                b.sim.set_faults(*i, vec![]);
            }
        }
        let before: Vec<usize> = idx
            .iter()
            .map(|&i| b.sim.snapshot(i).commands.len())
            .collect();
        let t = Instant::now();
        // Round 1 gives up on contact loss at once (no reconnect), so the state a fault
        // leaves is what the bench records and the next run must pick up; later rounds
        // retry as the CLI does by default.
        let results = run(&idx, if round == 1 { 0 } else { 2 });
        let took = t.elapsed();
        b.settle();
        assert_eq!(results.len(), idx.len());
        let status = b.status();
        let requests = request_keys(&b.p("requests.csv"));
        for (n, r) in results.iter().enumerate() {
            let i = first + n;
            let state = check_device(
                b,
                phase,
                i,
                &cells[n].name,
                r,
                &status,
                &requests,
                bundle_certs,
                before[n],
            );
            let outcome = format!(
                "{}{}/{}",
                r.status.as_str(),
                r.code
                    .as_deref()
                    .map(|c| format!("({c})"))
                    .unwrap_or_default(),
                state
            );
            table[n].1.push(outcome);
            let done = match phase {
                Phase::Export => "exported",
                Phase::Import => "imported",
            };
            if round == 1 {
                // Evidence that the fault fired.
                let snap = b.sim.snapshot(i);
                let sent = snap.commands.len() - before[n];
                let name = &cells[n].name;
                if name.starts_with("disconnect") {
                    assert!(snap.disconnects >= 1, "`{name}`: no disconnect happened");
                }
                if name.starts_with("lost-final at") || name.starts_with("disconnect at") {
                    // A failure, a resync (more commands), or — on the last step, CFUN
                    // restore — a done device with a note.
                    assert!(
                        !r.status.ok() || sent > clean_len || r.detail.contains("restore"),
                        "`{name}`: no sign of the fault ({sent} commands): {r:#?}"
                    );
                }
            }
            if round >= 3 || (round == 2 && cells[n].one_shot) {
                assert_eq!(
                    state, done,
                    "[{phase:?}] `{}`: round {round} did not finish the job: {r:#?}",
                    cells[n].name
                );
            }
            if round == 4 {
                assert_eq!(r.status, Status::AlreadyDone, "{}", cells[n].name);
                let snap = b.sim.snapshot(i);
                assert!(
                    changes(&snap.commands[before[n]..]).is_empty(),
                    "[{phase:?}] `{}`: a no-op re-run changed the modem",
                    cells[n].name
                );
                if phase == Phase::Import {
                    assert_eq!(
                        snap.cfun, BOOT_CFUN,
                        "{}: import restores the mode found before export",
                        cells[n].name
                    );
                }
            }
        }
        eprintln!(
            "[{phase:?} {:?}] round {round}: {} modems in {took:?}",
            b.profile,
            idx.len()
        );
    }
    let mut text = format!(
        "[{phase:?} {:?}] matrix (round 1 | round 2 faults still on | round 3 faults off | round 4 no-op):\n",
        b.profile
    );
    for (name, outcomes) in &table {
        text.push_str(&format!("  {name:<62} {}\n", outcomes.join(" | ")));
    }
    eprint!("{text}");
}

/// The command sequence of a clean run on modem `i`, as the simulator received it.
fn clean_steps(b: &Bench, i: usize, from: usize) -> Vec<String> {
    b.sim.snapshot(i).commands[from..]
        .iter()
        .map(|c| c.chars().take(40).collect())
        .collect()
}

fn export_fault_matrix(profile: Profile) {
    // Probe the clean sequence on a scratch bench (same profile).
    let probe = Bench::new(1, profile);
    let r = probe.export(&[0], 2);
    assert_eq!(r[0].status, Status::Done);
    let steps = clean_steps(&probe, 0, 0);
    eprintln!("{profile:?} export steps: {steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("AT%KEYGEN")));
    drop(probe);

    let cells = cells(Phase::Export, &steps);
    let b = Bench::new(cells.len(), profile);
    let empty = HashMap::new();
    matrix(
        &b,
        Phase::Export,
        0,
        &cells,
        &empty,
        steps.len(),
        &|idx, r| b.export(idx, r),
    );
}

fn import_fault_matrix(profile: Profile) {
    let probe = Bench::new(1, profile);
    assert_eq!(probe.export(&[0], 2)[0].status, Status::Done);
    let bundle = probe.sign();
    let from = probe.sim.snapshot(0).commands.len();
    assert_eq!(probe.import(&[0], &bundle, 2)[0].status, Status::Done);
    let steps = clean_steps(&probe, 0, from);
    eprintln!("{profile:?} import steps: {steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("AT%CMNG=0")));
    drop(probe);

    let cells = cells(Phase::Import, &steps);
    let b = Bench::new(cells.len(), profile);
    let idx: Vec<usize> = (0..cells.len()).collect();
    for r in b.export(&idx, 2) {
        assert_eq!(r.status, Status::Done, "{r:#?}");
    }
    let bundle = b.sign();
    let verified =
        nrfca::bundle::verify(&bundle, &std::fs::read(b.p("ca/ca.pem")).unwrap()).unwrap();
    let certs: HashMap<String, String> = verified
        .certs
        .into_iter()
        .map(|r| (r.imei, r.certificate_pem))
        .collect();
    assert_eq!(certs.len(), cells.len());
    matrix(
        &b,
        Phase::Import,
        0,
        &cells,
        &certs,
        steps.len(),
        &|idx, r| b.import(idx, &bundle, r),
    );
}

#[test]
fn export_fault_matrix_nrf9160() {
    export_fault_matrix(Profile::Nrf9160);
}

#[test]
fn import_fault_matrix_nrf9160() {
    import_fault_matrix(Profile::Nrf9160);
}

#[test]
fn export_fault_matrix_nrf91x1() {
    export_fault_matrix(Profile::Nrf91x1);
}

#[test]
fn import_fault_matrix_nrf91x1() {
    import_fault_matrix(Profile::Nrf91x1);
}

#[test]
fn export_fault_matrix_slm() {
    export_fault_matrix(Profile::Slm);
}

#[test]
fn import_fault_matrix_slm() {
    import_fault_matrix(Profile::Slm);
}
