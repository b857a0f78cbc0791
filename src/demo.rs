//! The narrated end-to-end flow of `nrfca demo`: CA, simulated modems, export, sign, import,
//! audit — each step done through the same library calls the three users' commands make.
//!
//! The library does not print: every step is reported as a [`DemoEvent`] and the CLI renders
//! them. Nothing here is a shortcut: the modems sit on real pseudo-terminals and are driven by
//! the bench's serial code; the CA key is age-encrypted with the passphrase `demo`.

use crate::bench::{self, ExportOptions, ImportOptions, PortEvent};
use crate::crypto;
use crate::signer::audit;
use crate::signer::ca::{self, InitOptions};
use crate::signer::secret::{Protection, Unlock};
use crate::signer::sign::{self, SignEvent, SignOptions};
use crate::sim::{Latency, Profile, SimConfig, Simulator};
use age::secrecy::SecretString;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The demo CA's passphrase (the demo is not a place for secrets).
pub const DEMO_PASSPHRASE: &str = "demo";

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of simulated modems.
    pub devices: usize,
    /// Working directory (created; must be empty if it exists). `None`: a new directory under
    /// the system temporary directory, kept so its files can be looked at.
    pub dir: Option<PathBuf>,
    /// Simulated modem latency (the demo and benchmarks use [`Latency::Realistic`]).
    pub latency: Latency,
    /// What the modems imitate.
    pub profile: Profile,
    /// How the demo CA's key is held.
    pub custody: DemoCustody,
}

/// How the demo CA's key is held (`nrfca demo --custody`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoCustody {
    /// `ca.key.age` with the passphrase `demo`.
    #[default]
    Age,
    /// A SoftHSM2 token initialised in the demo directory (its own `SOFTHSM2_CONF`).
    Hsm,
    /// A 2-of-3 quorum (alice, bob, carol) with passphrase files in the demo directory.
    Quorum,
}

impl std::str::FromStr for DemoCustody {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "age" => Ok(DemoCustody::Age),
            "hsm" => Ok(DemoCustody::Hsm),
            "quorum" => Ok(DemoCustody::Quorum),
            other => Err(format!(
                "unknown custody `{other}`: give age, hsm or quorum"
            )),
        }
    }
}

/// Where Debian, Ubuntu and Fedora install the SoftHSM2 module (or `$NRFCA_SOFTHSM2_MODULE`).
pub fn softhsm_module() -> Option<PathBuf> {
    if let Some(m) = std::env::var_os("NRFCA_SOFTHSM2_MODULE") {
        return Some(PathBuf::from(m));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The demo token's label and user PIN (a demo is not a place for secrets).
const DEMO_TOKEN: &str = "nrfca demo";
const DEMO_PIN: &str = "1234";
const DEMO_CUSTODIANS: [&str; 3] = ["alice", "bob", "carol"];

/// The demo CA's custody: `ca init` options, its protection, how `sign` unlocks, a sentence.
type DemoKey = (ca::NewCustody, Protection, Box<dyn Fn() -> Unlock>, String);

/// Set up the demo CA's custody in `dir`: the options for `ca init` and the unlock for `sign`.
fn demo_custody(
    custody: DemoCustody,
    dir: &Path,
    note: &dyn Fn(String),
) -> Result<DemoKey, DemoError> {
    use crate::signer::key::pkcs11::{Pin, TokenSelector};
    use crate::signer::key::quorum::{Custodian, ShareLock};
    use crate::signer::secret::{ShareInput, ShareSecret};
    let pass = || Protection::Passphrase(SecretString::from(DEMO_PASSPHRASE.to_string()));
    match custody {
        DemoCustody::Age => Ok((
            ca::NewCustody::Age {
                scrypt_log_n: crate::signer::secret::DEFAULT_SCRYPT_LOG_N,
            },
            pass(),
            Box::new(|| Unlock::Passphrase(SecretString::from(DEMO_PASSPHRASE.to_string()))),
            "key age-encrypted with the passphrase `demo`".into(),
        )),
        DemoCustody::Hsm => {
            let util = std::process::Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            let module = softhsm_module().filter(|_| util).ok_or(DemoError::Unavailable(
                "SoftHSM2 is not installed (softhsm2-util and libsofthsm2.so, Debian package softhsm2): install it, or run `nrfca demo --custody age`".into(),
            ))?;
            let tokens = dir.join("softhsm-tokens");
            std::fs::create_dir_all(&tokens).map_err(|e| DemoError::Dir(tokens.clone(), e))?;
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
            .map_err(|e| DemoError::Dir(conf.clone(), e))?;
            // The module reads it when it is loaded (at the init step, in this process).
            std::env::set_var("SOFTHSM2_CONF", &conf);
            let o = std::process::Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", DEMO_TOKEN])
                .args(["--so-pin", "12345678", "--pin", DEMO_PIN])
                .output()
                .map_err(|e| DemoError::Step("softhsm2-util", Box::new(e)))?;
            if !o.status.success() {
                return Err(DemoError::Check(format!(
                    "softhsm2-util --init-token failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            note(format!(
                "SoftHSM2 token \"{DEMO_TOKEN}\" initialised in {} (SOFTHSM2_CONF={}; user PIN {DEMO_PIN})",
                tokens.display(),
                conf.display()
            ));
            Ok((
                ca::NewCustody::Pkcs11 {
                    module: module.clone(),
                    token: TokenSelector {
                        label: Some(DEMO_TOKEN.into()),
                        serial: None,
                    },
                    pin: Pin::from(DEMO_PIN.to_string()),
                    label: "nrfca demo CA".into(),
                },
                pass(),
                Box::new(|| Unlock::Pin(Pin::from(DEMO_PIN.to_string()))),
                format!("key generated inside the SoftHSM2 token \"{DEMO_TOKEN}\" ({}), never leaves it", module.display()),
            ))
        }
        DemoCustody::Quorum => {
            let mut custodians = Vec::new();
            for n in DEMO_CUSTODIANS {
                let f = dir.join(format!("{n}.passphrase"));
                crate::signer::secret::write_secret_file(&f, format!("{n}-demo\n").as_bytes())
                    .map_err(step_err("custodian passphrase"))?;
                custodians.push(Custodian {
                    name: n.to_string(),
                    lock: ShareLock::Passphrase(SecretString::from(format!("{n}-demo"))),
                });
            }
            note(format!(
                "custodians alice, bob, carol; their share passphrases are in {}/NAME.passphrase",
                dir.display()
            ));
            let shares = dir.join("ca").join(crate::signer::ca::SHARES_DIR);
            Ok((
                ca::NewCustody::Quorum {
                    threshold: 2,
                    custodians,
                    scrypt_log_n: crate::signer::secret::DEFAULT_SCRYPT_LOG_N,
                },
                pass(),
                Box::new(move || {
                    Unlock::Shares(
                        ["alice", "carol"]
                            .iter()
                            .map(|n| ShareInput {
                                path: shares.join(format!("{n}.share.age")),
                                secret: ShareSecret::Passphrase(SecretString::from(format!(
                                    "{n}-demo"
                                ))),
                            })
                            .collect(),
                    )
                }),
                "key held 2-of-3 by custodians alice, bob, carol (shares in ca/shares/)".into(),
            ))
        }
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            devices: 4,
            dir: None,
            latency: Latency::Realistic,
            profile: Profile::Nrf9160,
            custody: DemoCustody::Age,
        }
    }
}

/// One thing the demo reports while it runs.
#[derive(Debug, Clone)]
pub enum DemoEvent {
    /// A new step: number, who does it, what the step is, the equivalent command.
    Step {
        /// 1-based step number.
        n: u32,
        /// Who does this in real life: officer, technician, auditor.
        role: &'static str,
        /// What the step does.
        title: String,
        /// The command a user would type for it.
        command: String,
    },
    /// A line of explanation or a result of the current step.
    Note(String),
    /// Progress of one serial port (export/import).
    Port(PortEvent),
    /// Progress of the signing batch.
    Sign(SignEvent),
}

/// Durations of the phases, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct DemoTimings {
    /// `bench export` on all modems.
    pub export_ms: u128,
    /// `sign` (including the scrypt unlock).
    pub sign_ms: u128,
    /// `bench import` on all modems.
    pub import_ms: u128,
    /// Export + import: the time the bench spent on the modems.
    pub bench_ms: u128,
    /// Everything.
    pub total_ms: u128,
}

/// What the demo did and where its files are.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The working directory.
    pub dir: PathBuf,
    /// The CA directory (`ca.pem`, `ca.key.age`, `ca.db`).
    pub ca_dir: PathBuf,
    /// The requests file the bench wrote.
    pub requests: PathBuf,
    /// The bundle the signer wrote.
    pub bundle: PathBuf,
    /// The bench state directory.
    pub bench_state: PathBuf,
    /// The exported audit log.
    pub audit_log: PathBuf,
    /// Simulated modems.
    pub devices: usize,
    /// Devices exported.
    pub exported: usize,
    /// Certificates issued.
    pub issued: u64,
    /// Devices provisioned and verified by SHA-256.
    pub imported: usize,
    /// Audit records and head hash after the demo.
    pub audit_records: u64,
    /// Audit head hash.
    pub audit_head: String,
    /// Phase durations.
    pub timings: DemoTimings,
}

/// Why the demo stopped. Display is this layer's sentence; the failing step's error is the
/// `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The working directory cannot be used.
    #[error("cannot use {} as the demo directory; give an empty or new directory with --dir", .0.display())]
    Dir(PathBuf, #[source] std::io::Error),
    /// A step failed; the message names it.
    #[error("demo step `{0}` failed")]
    Step(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// A step ran but its result is wrong (a demo that "succeeds" wrongly must not exit 0).
    #[error("demo check failed: {0}")]
    Check(String),
    /// What the chosen flow needs is not installed (e.g. SoftHSM2 for `--custody hsm`).
    #[error("{0}")]
    Unavailable(String),
}

fn step_err<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> DemoError {
    move |e| DemoError::Step(step, Box::new(e))
}

fn prepare_dir(dir: Option<&Path>) -> Result<PathBuf, DemoError> {
    match dir {
        Some(d) => {
            if d.exists() {
                let mut entries =
                    std::fs::read_dir(d).map_err(|e| DemoError::Dir(d.to_path_buf(), e))?;
                if entries.next().is_some() {
                    return Err(DemoError::Dir(
                        d.to_path_buf(),
                        std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "directory is not empty",
                        ),
                    ));
                }
            } else {
                std::fs::create_dir_all(d).map_err(|e| DemoError::Dir(d.to_path_buf(), e))?;
            }
            Ok(d.to_path_buf())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("nrfca-demo-")
                .tempdir()
                .map_err(|e| DemoError::Dir(std::env::temp_dir(), e))?;
            Ok(t.keep())
        }
    }
}

/// Run the whole flow; `on` receives every step, note and progress event.
pub fn run(opts: &DemoOptions, on: &(dyn Fn(DemoEvent) + Sync)) -> Result<DemoReport, DemoError> {
    let t_all = Instant::now();
    let demo = Demo::new(opts, on)?;
    let unlock_with = demo.create_ca()?;
    let (sim, ports) = demo.connect_modems()?;
    let (exported, export_ms) = demo.export(&ports, &*unlock_with)?;
    let (report, sign_ms) = demo.sign(&*unlock_with)?;
    let (imported, import_ms) = demo.import(&ports)?;
    demo.check_modems(&sim)?;
    sim.shutdown().map_err(step_err("sim shutdown"))?;
    let audited = demo.audit()?;
    let ok = |devices: &[bench::DeviceResult]| devices.iter().filter(|d| d.status.ok()).count();
    Ok(DemoReport {
        exported: ok(&exported.devices),
        issued: report.issued,
        imported: ok(&imported.devices),
        audit_records: audited.records,
        audit_head: audited.head_hash,
        timings: DemoTimings {
            export_ms,
            sign_ms,
            import_ms,
            bench_ms: export_ms + import_ms,
            total_ms: t_all.elapsed().as_millis(),
        },
        devices: demo.devices,
        dir: demo.dir,
        ca_dir: demo.ca_dir,
        requests: demo.requests,
        bundle: demo.bundle,
        bench_state: demo.state,
        audit_log: demo.audit_log,
    })
}

/// The demo's working files and whom it reports to; one method per narrated step.
struct Demo<'a> {
    opts: &'a DemoOptions,
    on: &'a (dyn Fn(DemoEvent) + Sync),
    devices: usize,
    dir: PathBuf,
    ca_dir: PathBuf,
    requests: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
    audit_log: PathBuf,
}

/// How `sign` (and `ca trust-bench`) unlock the demo CA's key.
type Unlocker = Box<dyn Fn() -> Unlock>;

/// The flags `ca init` takes for a custody, as the narration shows them (pure).
fn init_flags(custody: DemoCustody) -> String {
    match custody {
        DemoCustody::Age => String::new(),
        DemoCustody::Hsm => {
            format!(" --pkcs11 MODULE --token-label \"{DEMO_TOKEN}\" --pin-file PIN")
        }
        DemoCustody::Quorum => {
            " --quorum 2 --custodian alice --custodian bob --custodian carol".into()
        }
    }
}

/// ` --port P` for every port (pure).
fn port_flags(ports: &[String]) -> String {
    ports.iter().map(|p| format!(" --port {p}")).collect()
}

/// A bench run must have every device done (now or before): otherwise the demo fails, naming
/// how many did not (pure).
fn all_devices_ok(what: &str, devices: &[bench::DeviceResult]) -> Result<(), DemoError> {
    let failed = devices.iter().filter(|d| !d.status.ok()).count();
    if failed > 0 {
        return Err(DemoError::Check(format!(
            "{what} failed on {failed} device(s)"
        )));
    }
    Ok(())
}

/// Signing must issue one certificate per modem and reject none (pure).
fn sign_counts_ok(issued: u64, rejected: u64, devices: usize) -> Result<(), DemoError> {
    if rejected > 0 || issued as usize != devices {
        return Err(DemoError::Check(format!(
            "sign issued {issued} and rejected {rejected} of {devices} requests"
        )));
    }
    Ok(())
}

impl<'a> Demo<'a> {
    /// The working directory (made or checked empty), announced.
    fn new(opts: &'a DemoOptions, on: &'a (dyn Fn(DemoEvent) + Sync)) -> Result<Self, DemoError> {
        let dir = prepare_dir(opts.dir.as_deref())?;
        let demo = Demo {
            opts,
            on,
            devices: opts.devices.max(1),
            ca_dir: dir.join("ca"),
            requests: dir.join("requests.csv"),
            bundle: dir.join("bundle"),
            state: dir.join("bench-state"),
            audit_log: dir.join("audit.jsonl"),
            dir,
        };
        demo.note(format!("working directory: {}", demo.dir.display()));
        Ok(demo)
    }

    fn note(&self, s: String) {
        (self.on)(DemoEvent::Note(s));
    }

    fn step(&self, n: u32, role: &'static str, title: String, command: String) {
        (self.on)(DemoEvent::Step {
            n,
            role,
            title,
            command,
        });
    }

    fn ca_pem(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    /// Step 1: the officer creates the CA on the air-gapped machine.
    fn create_ca(&self) -> Result<Unlocker, DemoError> {
        let note = |s: String| self.note(s);
        let (new_custody, protection, unlock_with, custody_text) =
            demo_custody(self.opts.custody, &self.dir, &note)?;
        self.step(
            1,
            "officer",
            format!("create the CA (P-256, {custody_text})"),
            format!(
                "nrfca ca init --ca-dir {} --subject \"CN=nrfca demo CA,O=nrfca demo\"{}",
                self.ca_dir.display(),
                init_flags(self.opts.custody)
            ),
        );
        let info = ca::init_with(
            &self.ca_dir,
            &InitOptions {
                subject: "CN=nrfca demo CA,O=nrfca demo".into(),
                days: ca::DEFAULT_DAYS,
                protection,
                operator: "officer".into(),
            },
            &new_custody,
        )
        .map_err(step_err("ca init"))?;
        self.note(format!(
            "CA {} fingerprint {}",
            info.subject, info.fingerprint
        ));
        self.note(format!(
            "valid until {}; key: {}",
            info.not_after, info.key_protection
        ));
        Ok(unlock_with)
    }

    /// Step 2: modems on the bench (simulated, on pseudo-terminals).
    fn connect_modems(&self) -> Result<(Simulator, Vec<String>), DemoError> {
        let devices = self.devices;
        self.step(
            2,
            "technician",
            format!(
                "connect {devices} modems (simulated {} on pseudo-terminals)",
                self.opts.profile.name()
            ),
            format!("nrfca sim --count {devices}"),
        );
        let sim = Simulator::start(SimConfig {
            count: devices,
            profile: self.opts.profile,
            latency: self.opts.latency,
            ..SimConfig::default()
        })
        .map_err(step_err("sim"))?;
        let ports: Vec<String> = sim
            .ports()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        for (i, p) in ports.iter().enumerate() {
            let snap = sim.snapshot(i);
            self.note(format!("{p}: IMEI {} UUID {}", snap.imei, snap.uuid));
        }
        Ok((sim, ports))
    }

    /// Step 3, export: AT%KEYGEN on every modem at once, from a bench the officer trusts.
    fn export(
        &self,
        ports: &[String],
        unlock_with: &dyn Fn() -> Unlock,
    ) -> Result<(bench::ExportReport, u128), DemoError> {
        self.step(
            3,
            "technician",
            "generate a key inside every modem (AT%KEYGEN) and collect the requests".into(),
            format!(
                "nrfca bench export{} --out {}",
                port_flags(ports),
                self.requests.display()
            ),
        );
        self.enroll_bench(unlock_with)?;
        let t = Instant::now();
        let mut eo = ExportOptions::new(ports.to_vec(), self.requests.clone());
        eo.state_dir = self.state.clone();
        eo.operator = Some("technician".into());
        eo.bench_name = Some("demo-bench".into());
        let port_cb = |e: PortEvent| (self.on)(DemoEvent::Port(e));
        let exported = bench::export(&eo, &port_cb).map_err(step_err("bench export"))?;
        let export_ms = t.elapsed().as_millis();
        all_devices_ok("export", &exported.devices)?;
        self.note(format!(
            "{} requests in {} ({} ms); each string was checked exactly as the signer will",
            exported.exported(),
            self.requests.display(),
            export_ms
        ));
        Ok((exported, export_ms))
    }

    /// The bench's identity (SPEC §10): enrolled once, trusted by the officer, so `sign` only
    /// accepts requests files this bench signed.
    fn enroll_bench(&self, unlock_with: &dyn Fn() -> Unlock) -> Result<(), DemoError> {
        let enrolled = bench::evidence::init(&self.state, "demo-bench", Some("technician"))
            .map_err(step_err("bench init"))?;
        self.note(format!(
            "bench enrolled: `nrfca bench init --name demo-bench` made its signing key; {} (sha256 {}) goes to the officer",
            enrolled.public_key_file.display(),
            enrolled.fingerprint
        ));
        let trusted = crate::signer::ca::trust_bench(
            &self.ca_dir,
            "demo-bench",
            &enrolled.public_key_pem,
            &unlock_with(),
            "officer",
        )
        .map_err(step_err("ca trust-bench"))?;
        self.note(format!(
            "officer: `nrfca ca trust-bench --name demo-bench --key bench.pem` (audited); sign now refuses requests not signed by {} (key {})",
            trusted.name, trusted.fingerprint
        ));
        Ok(())
    }

    /// Step 4: sign on the air-gapped machine.
    fn sign(
        &self,
        unlock_with: &dyn Fn() -> Unlock,
    ) -> Result<(sign::SignReport, u128), DemoError> {
        self.step(
            4,
            "officer",
            "check every request and issue the certificates in one atomic batch".into(),
            format!(
                "nrfca sign --ca-dir {} --out {} {}",
                self.ca_dir.display(),
                self.bundle.display(),
                self.requests.display()
            ),
        );
        let t = Instant::now();
        let so = SignOptions::new(
            self.bundle.clone(),
            vec![self.requests.clone()],
            "officer".into(),
        );
        let unlock = unlock_with();
        let mut sign_cb = |e: SignEvent| (self.on)(DemoEvent::Sign(e));
        let report =
            sign::sign(&self.ca_dir, &unlock, &so, &mut sign_cb).map_err(step_err("sign"))?;
        let sign_ms = t.elapsed().as_millis();
        sign_counts_ok(report.issued, report.rejected, self.devices)?;
        self.note(format!(
            "batch {}: {} certificates issued, 0 rejected ({} ms, includes the scrypt unlock)",
            report.batch, report.issued, sign_ms
        ));
        if let Ok(cp) = std::fs::read_to_string(self.bundle.join("checkpoint")) {
            let mut lines = cp.lines();
            let (_origin, size, root) = (lines.next(), lines.next(), lines.next());
            self.note(format!(
                "requests.csv.sig checked (signed by trusted bench demo-bench) before the key was unlocked; the bundle carries the CA's checkpoint of its audit log: size {}, root {}",
                size.unwrap_or("?"),
                root.unwrap_or("?")
            ));
        }
        self.note(format!(
            "bundle {}: certs.csv, onboard.csv (for nRF Cloud), rejects.csv, ca.pem, checkpoint + checkpoint.sig + checkpoint.proofs, manifest.json + manifest.sig",
            self.bundle.display()
        ));
        Ok((report, sign_ms))
    }

    /// Step 5, import on the bench: verify the bundle, write root CAs and certificate, prove
    /// each write by SHA-256.
    fn import(&self, ports: &[String]) -> Result<(bench::ImportReport, u128), DemoError> {
        self.step(
            5,
            "technician",
            "verify the signed bundle, install root CAs and certificates, prove each write by SHA-256".into(),
            format!(
                "nrfca bench import{} --bundle {} --trust {}",
                port_flags(ports),
                self.bundle.display(),
                self.ca_pem().display()
            ),
        );
        let t = Instant::now();
        let mut io = ImportOptions::new(ports.to_vec(), self.bundle.clone(), self.ca_pem());
        io.state_dir = self.state.clone();
        io.operator = Some("technician".into());
        io.bench_name = Some("demo-bench".into());
        let port_cb = |e: PortEvent| (self.on)(DemoEvent::Port(e));
        let imported = bench::import(&io, &port_cb).map_err(step_err("bench import"))?;
        let import_ms = t.elapsed().as_millis();
        self.note(format!(
            "{} — the bench keeps it, and its next requests.csv.sig quotes it, so a rolled-back ca.db is refused at sign and at import",
            imported.checkpoint
        ));
        all_devices_ok("import", &imported.devices)?;
        Ok((imported, import_ms))
    }

    /// Independent check, from the modems' own storage: the SHA-256 each one lists for its
    /// client certificate is the SHA-256 of the PEM in the bundle.
    fn check_modems(&self, sim: &Simulator) -> Result<(), DemoError> {
        let verified = crate::bundle::verify(
            &self.bundle,
            std::fs::read(self.ca_pem())
                .map_err(step_err("read ca.pem"))?
                .as_slice(),
        )
        .map_err(step_err("bundle verify"))?;
        // Behind the nRF Connect SDK shell the modem stores the PEM with CR LF line ends.
        let dialect = if self.opts.profile.is_shell() {
            crate::bench::Dialect::Shell
        } else {
            crate::bench::Dialect::At
        };
        for i in 0..self.devices {
            let snap = sim.snapshot(i);
            let row = verified
                .certs
                .iter()
                .find(|c| c.device_uuid == snap.uuid)
                .ok_or_else(|| {
                    DemoError::Check(format!(
                        "no certificate in the bundle for modem {}",
                        snap.uuid
                    ))
                })?;
            let want = crypto::sha256_hex(dialect.stored(&row.certificate_pem).as_bytes());
            let listed = snap
                .credential(crate::keygen::DEFAULT_SEC_TAG, 1)
                .map(|c| c.sha256_upper.to_ascii_lowercase())
                .unwrap_or_default();
            if listed != want {
                return Err(DemoError::Check(format!(
                    "modem {} lists certificate SHA-256 {listed}, the bundle has {want}",
                    snap.uuid
                )));
            }
            self.note(format!(
                "{}  serial {}…  modem lists SHA-256 {}… = certs.csv",
                snap.uuid,
                row.serial.get(..12).unwrap_or(&row.serial),
                want.get(..12).unwrap_or(&want)
            ));
        }
        Ok(())
    }

    /// Step 6: the auditor verifies the chain, exports it, and verifies the export alone.
    fn audit(&self) -> Result<audit::VerifyReport, DemoError> {
        self.step(
            6,
            "auditor",
            "verify the hash-chained, CA-signed audit log; export it and verify the copy alone".into(),
            format!(
                "nrfca audit verify --ca-dir {0} && nrfca audit export --ca-dir {0} --out {1} && nrfca audit verify --file {1} --ca-cert {2}",
                self.ca_dir.display(),
                self.audit_log.display(),
                self.ca_pem().display()
            ),
        );
        let v = audit::verify_db(&self.ca_dir).map_err(step_err("audit verify"))?;
        if !v.is_ok() {
            return Err(DemoError::Check(format!("audit verify: {:?}", v.first_bad)));
        }
        audit::export(
            &self.ca_dir,
            &self.audit_log,
            audit::ExportFormat::Jsonl,
            "auditor",
        )
        .map_err(step_err("audit export"))?;
        let vf = audit::verify_file(&self.audit_log, &self.ca_pem())
            .map_err(step_err("audit verify --file"))?;
        if !vf.is_ok() {
            return Err(DemoError::Check(format!(
                "exported audit log: {:?}",
                vf.first_bad
            )));
        }
        self.note(format!(
            "{} records, chain and checkpoints intact, head {}",
            vf.records, vf.head_hash
        ));
        Ok(vf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{DeviceResult, Status};

    #[test]
    fn init_flags_table() {
        for (custody, want) in [
            (DemoCustody::Age, ""),
            (
                DemoCustody::Hsm,
                " --pkcs11 MODULE --token-label \"nrfca demo\" --pin-file PIN",
            ),
            (
                DemoCustody::Quorum,
                " --quorum 2 --custodian alice --custodian bob --custodian carol",
            ),
        ] {
            assert_eq!(init_flags(custody), want, "{custody:?}");
        }
        assert_eq!(port_flags(&[]), "");
        assert_eq!(
            port_flags(&["/dev/pts/3".into(), "/dev/pts/4".into()]),
            " --port /dev/pts/3 --port /dev/pts/4"
        );
    }

    #[test]
    fn all_devices_ok_table() {
        let d = |status| DeviceResult {
            port: "p".into(),
            imei: None,
            uuid: None,
            sec_tag: 0,
            status,
            code: None,
            detail: String::new(),
            next_step: None,
        };
        use Status::*;
        let cases = [
            (vec![], ""),
            (vec![d(Done), d(AlreadyDone)], ""),
            (
                vec![d(Done), d(Failed)],
                "demo check failed: export failed on 1 device(s)",
            ),
            (
                vec![d(Unknown), d(Failed), d(Done)],
                "demo check failed: export failed on 2 device(s)",
            ),
        ];
        for (devices, want) in cases {
            let got = all_devices_ok("export", &devices)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn sign_counts_ok_table() {
        for (issued, rejected, devices, ok) in [
            (4, 0, 4, true),
            (3, 1, 4, false),
            (3, 0, 4, false),
            (5, 0, 4, false),
            (4, 1, 4, false),
        ] {
            assert_eq!(
                sign_counts_ok(issued, rejected, devices).is_ok(),
                ok,
                "{issued} {rejected} {devices}"
            );
        }
    }
}
