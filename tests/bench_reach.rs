//! Bench reach (SPEC §14) through the binary on simulated modems: an `nrf-<IMEI>` fleet end to
//! end (`bench export --device-id imei`, `sign --device-id cn`, `bench import`), a device that
//! refuses KEYGEN attributes failing alone with its code and finished by a re-run, and the
//! root CA bundle on its own sec_tag (`bench import --ca-sec-tag`).
#![cfg(feature = "bench")]

use nrfca::keygen::{check, CheckOptions, DeviceIdMode};
use nrfca::sim::{Fault, FaultSpec, Latency, SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bin, run, sha_upper, stderr, TAG};

struct Fleet {
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
}

impl Fleet {
    fn new(count: usize, specs: Vec<FaultSpec>) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(SimConfig {
            count,
            latency: Latency::Test,
            link_dir: Some(dir.path().join("modems")),
            fault_specs: specs,
            boot_cfun: 1,
            ..SimConfig::default()
        })
        .expect("simulator starts");
        let ports = common::port_names(&sim);
        Fleet { dir, sim, ports }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bench(&self, sub: &str, extra: &[&str]) -> Output {
        let mut c = bin();
        c.args(["bench", sub]);
        for p in &self.ports {
            c.args(["--port", p]);
        }
        c.arg("--state").arg(self.p("S")).args([
            "--operator",
            "tech",
            "--timeout",
            "1.5",
            "--slow-timeout",
            "3",
            "--reconnect-wait",
            "1",
            "--json",
        ]);
        c.args(extra);
        run(&mut c)
    }

    fn export(&self, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let out = self.p("requests.csv");
        let mut args = vec!["--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = self.bench("export", &args);
        let json = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("export --json: {e}; stderr: {}", stderr(&o)));
        (o.status.code(), json)
    }

    fn sign(&self, extra: &[&str]) -> (Output, PathBuf) {
        if !self.p("ca/ca.pem").exists() {
            common::ca_init_age(
                &self.p("ca"),
                &self.p("id.agekey"),
                "CN=Reach Test CA,O=Test",
                &["--operator", "officer"],
            );
        }
        let bundle = self.p("bundle");
        let _ = std::fs::remove_dir_all(&bundle);
        let o = run(bin()
            .args(["sign", "--ca-dir"])
            .arg(self.p("ca"))
            .arg("--identity")
            .arg(self.p("id.agekey"))
            .arg("--out")
            .arg(&bundle)
            .args(["--operator", "officer"])
            .args(extra)
            .arg(self.p("requests.csv")));
        (o, bundle)
    }

    fn import(&self, bundle: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let trust = self.p("ca/ca.pem");
        let mut args = vec![
            "--bundle",
            bundle.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = self.bench("import", &args);
        let json = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("import --json: {e}; stderr: {}", stderr(&o)));
        (o.status.code(), json)
    }
}

/// (imei, keygen) of every request row.
fn rows(path: &Path) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[1].to_string(), rec[3].to_string())
        })
        .collect()
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

/// The subject CN of a PEM certificate.
fn cert_cn(pem: &str) -> String {
    use der::Decode;
    let der = nrfca::internal::util::first_cert_der(pem).expect("a certificate");
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    cert.tbs_certificate.subject.to_string()
}

#[test]
fn imei_fleet_end_to_end_and_a_device_refusing_attributes_fails_alone() {
    let f = Fleet::new(4, vec![FaultSpec::on(3, Fault::KeygenNoAttributes)]);

    // Export: three devices done, the fourth refuses the attributes and fails alone.
    let (code, report) = f.export(&["--device-id", "imei"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        statuses(&report),
        ["done", "done", "done", "failed"],
        "{report:#}"
    );
    let bad = &report["devices"][3];
    assert_eq!(bad["code"], "keygen-attributes-refused");
    assert!(
        bad["next_step"]
            .as_str()
            .unwrap()
            .contains("--device-id uuid"),
        "{bad:#}"
    );
    assert_eq!(
        f.sim.snapshot(3).credential(TAG, 2).map(|_| ()),
        None,
        "no key was made on the refusing device"
    );

    // Re-run once the firmware takes attributes: only the unfinished device is exported.
    f.sim.set_faults(3, vec![]);
    let (code, report) = f.export(&["--device-id", "imei"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        statuses(&report),
        ["already-done", "already-done", "already-done", "done"]
    );

    // Every request names its device nrf-<IMEI>: it passes the CN check with its IMEI and
    // fails the default UUID check; the modem was asked for exactly those attributes.
    let requests = rows(&f.p("requests.csv"));
    assert_eq!(requests.len(), 4);
    for i in 0..4 {
        let snap = f.sim.snapshot(i);
        let (_, keygen) = requests
            .iter()
            .find(|(imei, _)| *imei == snap.imei)
            .expect("a row per device");
        let cn = CheckOptions {
            sec_tag: Some(TAG),
            device_id: DeviceIdMode::Cn,
            imei: Some(snap.imei.clone()),
        };
        check(keygen, &cn).expect("CN=nrf-<IMEI> passes the CN check");
        assert!(check(keygen, &CheckOptions::default()).is_err());
        let want = format!("AT%KEYGEN={TAG},2,0,\"CN=nrf-{}\"", snap.imei);
        assert!(snap.commands.contains(&want), "{:?}", snap.commands);
    }

    // Sign with --device-id cn, import: every device holds a certificate naming nrf-<IMEI>.
    let (o, bundle) = f.sign(&["--device-id", "cn"]);
    assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));
    let (code, report) = f.import(&bundle, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["done"; 4]);
    for i in 0..4 {
        let snap = f.sim.snapshot(i);
        let cert = snap.credential(TAG, 1).expect("certificate stored");
        let pem = cert.content.clone().expect("content");
        assert_eq!(cert_cn(&pem), format!("CN=nrf-{}", snap.imei));
        assert_eq!(cert.sha256_upper, sha_upper(pem.as_bytes()));
        let key = snap.credential(TAG, 2).expect("key kept");
        assert_eq!(
            key.public_key.map(|k| k.to_vec()),
            Some(common::cert_public_key(&pem)),
            "the certificate is for the key in the slot"
        );
    }

    // A re-run of import changes nothing.
    let (code, report) = f.import(&bundle, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(statuses(&report), ["already-done"; 4]);
}

#[test]
fn root_cas_on_their_own_sec_tag() {
    const CA_TAG: u32 = 42;
    let f = Fleet::new(2, vec![]);
    let (code, report) = f.export(&[]);
    assert_eq!(code, Some(0), "{report:#}");
    let (o, bundle) = f.sign(&[]);
    assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));

    let (code, report) = f.import(&bundle, &["--ca-sec-tag", &CA_TAG.to_string()]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["done"; 2]);
    let root = nrfca::internal::bench::import::default_root_bundle();
    for i in 0..2 {
        let snap = f.sim.snapshot(i);
        let ca = snap
            .credential(CA_TAG, 0)
            .expect("root CAs on the CA sec_tag");
        assert_eq!(ca.content.as_deref(), Some(root.as_str()));
        assert_eq!(ca.sha256_upper, sha_upper(root.as_bytes()));
        assert!(
            snap.credential(TAG, 0).is_none(),
            "no root CAs beside the certificate"
        );
        assert!(snap.credential(TAG, 1).is_some() && snap.credential(TAG, 2).is_some());
        assert!(
            !snap
                .commands
                .iter()
                .any(|c| c.starts_with(&format!("AT%CMNG=0,{TAG},0"))),
            "type 0 never written to the device tag"
        );
    }

    // Re-run: everything in place (the CA tag is listed), nothing written.
    let before: Vec<usize> = (0..2).map(|i| f.sim.snapshot(i).commands.len()).collect();
    let (code, report) = f.import(&bundle, &["--ca-sec-tag", &CA_TAG.to_string()]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["already-done"; 2]);
    for (i, n) in before.iter().enumerate() {
        let snap = f.sim.snapshot(i);
        let new = &snap.commands[*n..];
        assert!(!new.iter().any(|c| common::changes_modem(c)), "{new:?}");
    }

    // Out of range: refused before any port is opened.
    let (code, _) = {
        let trust = f.p("ca/ca.pem");
        let o = f.bench(
            "import",
            &[
                "--bundle",
                bundle.to_str().unwrap(),
                "--trust",
                trust.to_str().unwrap(),
                "--ca-sec-tag",
                "2147483648",
            ],
        );
        (o.status.code(), stderr(&o))
    };
    assert_eq!(code, Some(2));
}

/// Nordic's writer (`nrfcloud_utils.gather_attestation_tokens.save_attestation_csv`, default
/// append-and-replace mode) fed the same rows in the same order, its clock set to the times in
/// our file: the bytes it writes.
const NORDIC_WRITER: &str = r#"
import sys, datetime as real
from nrfcloud_utils import gather_attestation_tokens as g
rows = [l.split(',') for l in open(sys.argv[1]).read().splitlines()]
times = iter([real.datetime.fromisoformat(r[3]) for r in rows])
class Clock(real.datetime):
    @classmethod
    def now(cls, tz=None):
        return next(times)
g.datetime = Clock
for imei, uuid, token, _ in rows:
    g.save_attestation_csv(sys.argv[2], True, True, imei, uuid, token)
"#;

#[test]
fn claim_tokens_csv_as_nordics_writer_writes_it() {
    let f = Fleet::new(
        4,
        vec![FaultSpec::on(1, Fault::LostFinal).when("%ATTESTTOKEN")],
    );
    let tokens = f.p("attestation_tokens.csv");
    let arg = ["--claim-tokens", tokens.to_str().unwrap()];

    // The token of modem 1 does not arrive: it fails alone, its request is written.
    let (code, report) = f.export(&arg);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(statuses(&report), ["done", "failed", "done", "done"]);
    assert_eq!(report["devices"][1]["code"], "claim-token-missing");
    assert_eq!(rows(&f.p("requests.csv")).len(), 4);
    assert_eq!(std::fs::read_to_string(&tokens).unwrap().lines().count(), 3);

    // The re-run only gathers the missing token.
    let before: Vec<usize> = (0..4).map(|i| f.sim.snapshot(i).commands.len()).collect();
    let (code, report) = f.export(&arg);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(statuses(&report), ["already-done"; 4]);
    for (i, n) in before.iter().enumerate() {
        let snap = f.sim.snapshot(i);
        let new = &snap.commands[*n..];
        assert!(!new.iter().any(|c| common::changes_modem(c)), "{new:?}");
        let asked = new
            .iter()
            .filter(|c| c.starts_with("AT%ATTESTTOKEN"))
            .count();
        assert_eq!(asked, usize::from(i == 1), "modem {i}: {new:?}");
    }

    let text = std::fs::read_to_string(&tokens).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(text.ends_with('\n') && !text.contains('\r'));
    for i in 0..4 {
        let snap = f.sim.snapshot(i);
        let row: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with(&snap.imei))
            .expect("a row per device")
            .split(',')
            .collect();
        assert_eq!(row.len(), 4);
        assert_eq!(row[1], snap.uuid);
        let token = nrfca::keygen::parse_attesttoken(row[2]).expect("a token");
        assert_eq!(token.uuid(), snap.uuid);
        assert!(row[3].ends_with("+00:00"), "{}", row[3]);
    }

    // Byte for byte what nrfcloud-utils writes for the same tokens.
    let Some(python) = common::venv_tool("python") else {
        return;
    };
    let theirs = f.p("nordic.csv");
    let o = run(Command::new(python)
        .arg("-c")
        .arg(NORDIC_WRITER)
        .arg(&tokens)
        .arg(&theirs));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), text);
}

/// The nRF91x1 family profiles (nRF9151, nRF9131, nRF9151 on NTN firmware) identify as their
/// parts do, and the bench exports them: the requests carry their model and firmware, the
/// attestation token its device type and firmware UUID.
#[test]
fn nrf91x1_family_profiles_export() {
    use nrfca::sim::Profile;
    let cases = [
        (Profile::Nrf9151, "nRF9151-LACA", "mfw_nrf91x1_2.0.2", 6),
        (Profile::Nrf9131, "nRF9131-LACA", "mfw_nrf91x1_2.0.2", 5),
        (
            Profile::Nrf9151Ntn,
            "nRF9151-LACA",
            "mfw_nrf9151-ntn_1.0.0-1.alpha",
            6,
        ),
    ];
    for (profile, model, fw, device_type) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(SimConfig {
            count: 1,
            profile,
            latency: Latency::Test,
            link_dir: Some(dir.path().join("modems")),
            ..SimConfig::default()
        })
        .unwrap();
        let f = Fleet {
            ports: common::port_names(&sim),
            dir,
            sim,
        };
        let (code, report) = f.export(&[]);
        assert_eq!(code, Some(0), "{profile}: {report:#}");
        let mut r = csv::Reader::from_path(f.p("requests.csv")).unwrap();
        let row = r.records().next().unwrap().unwrap();
        assert_eq!((&row[4], &row[5]), (fw, model), "{profile}");
        let snap = f.sim.snapshot(0);
        assert_eq!(snap.model, model);
        let verified = check(&row[3], &CheckOptions::default()).unwrap();
        assert_eq!(verified.uuid, snap.uuid);
        let token = nrfca::keygen::parse_attesttoken(&{
            let o = f.bench(
                "export",
                &[
                    "--out",
                    f.p("r2.csv").to_str().unwrap(),
                    "--claim-tokens",
                    f.p("t.csv").to_str().unwrap(),
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            std::fs::read_to_string(f.p("t.csv"))
                .unwrap()
                .split(',')
                .nth(2)
                .unwrap()
                .to_string()
        })
        .unwrap();
        assert_eq!(token.message.device_type, device_type, "{profile}");
        assert_eq!(token.message.fw_uuid, profile.firmware_uuid(), "{profile}");
    }
    assert_ne!(
        Profile::Nrf9151Ntn.firmware_uuid(),
        Profile::Nrf9151.firmware_uuid(),
        "the NTN build is another firmware"
    );
}
