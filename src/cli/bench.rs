//! `nrfca bench init | ports | export | import | status`.

use super::common::{print_json, print_stdout, progress_enabled, CliResult, Outcome};
use clap::{Args, Subcommand};
use nrfca::bench::state::{DeviceRecord, State, DEFAULT_DIR};
use nrfca::bench::transport::{list_ports, SerialSettings};
use nrfca::bench::{
    export, import_verified, verify_bundle, DeviceResult, DialectChoice, ExportOptions,
    ImportOptions, PortEvent, PortEventKind, PortSettings, Status,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bench subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Enrol this bench: create its signing key and print the public key for the officer.
    ///
    /// Creates a P-256 key in the bench state (bench.key, mode 0600), its public key
    /// (bench.pem) and name (bench.name). From then on every `bench export` writes
    /// requests.csv.sig beside the requests file, signed by this key, and every requests row
    /// names this bench. Give bench.pem to the CA officer and read the fingerprint out to them:
    /// they run `nrfca ca trust-bench`. Refused when the state already has a key.
    #[command(
        after_help = "Example:\n  nrfca bench init --name line-3\n  nrfca bench init --state /srv/bench --name line-3\n\nExit status: 0 key created, 2 refused (already initialised, bad name, unwritable state)."
    )]
    Init(InitArgs),
    /// List serial ports; Nordic/SEGGER kits are marked.
    #[command(after_help = "Example:\n  nrfca bench ports\n  nrfca bench ports --json")]
    Ports(PortsArgs),
    /// Run AT%KEYGEN on every device in parallel and write a requests file.
    ///
    /// Per device: read CFUN (import restores it), IMEI, firmware, model; list the sec_tag;
    /// skip a device already exported with the same key, refuse one whose slot holds a key or
    /// certificate this bench did not make (unless --force); set CFUN=4; AT%KEYGEN; check the
    /// reply exactly as `nrfca sign` will; append the row (fsync'd); record it in the state.
    /// Re-running finishes only what is unfinished.
    #[command(
        after_help = "Example:\n  nrfca bench export --port /dev/ttyACM0 --port /dev/ttyACM2 --out requests.csv\n\nExit status: 0 every device exported (now or before), 1 some failed (listed with the\nnext step), 2 could not run."
    )]
    Export(ExportArgs),
    /// Install root CAs and device certificates from a signed bundle, verified by SHA-256.
    ///
    /// The bundle is verified first (manifest.sig with --trust, every file's SHA-256): a
    /// tampered bundle is refused before any modem is touched. Per device: the certificate
    /// must chain to the trusted CA and carry the key recorded at export; CFUN=4; write the
    /// root CA bundle (type 0) and the certificate (type 1) unless the slot already lists
    /// their SHA-256; check the listing; restore the CFUN mode found before export. The key
    /// (type 2) is never touched.
    #[command(
        after_help = "Example:\n  nrfca bench import --port /dev/ttyACM0 --port /dev/ttyACM2 --bundle bundle/ --trust ca.pem\n\nExit status: 0 every device imported (now or before), 1 some failed, 2 could not run\n(tampered bundle, wrong --trust, unreadable state)."
    )]
    Import(ImportArgs),
    /// Every device the bench has seen, its state and what to do next.
    #[command(
        after_help = "Example:\n  nrfca bench status\n  nrfca bench status --state /srv/bench --json\n  nrfca bench status --journal 352656109480783"
    )]
    Status(StatusArgs),
}

/// Arguments of `bench init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Bench state directory (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    state: PathBuf,
    /// The bench's name: in every requests row it exports and in the CA's list of trusted
    /// benches (printable ASCII, at most 64 characters).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Operator name for the journal (default: $USER).
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `bench ports`.
#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Serial and timing flags shared by export and import.
#[derive(Debug, Args)]
pub struct SerialArgs {
    /// Serial port of one device (repeatable; all run in parallel).
    #[arg(long = "port", short = 'p', value_name = "PORT", required = true)]
    ports: Vec<String>,
    /// Bench state directory (devices and journal).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    state: PathBuf,
    /// Turn RTS/CTS hardware flow control off (on by default, as in Nordic's tools).
    #[arg(long, help_heading = "Serial and timing")]
    no_flow_control: bool,
    /// How AT commands travel: `at` (AT Client, Serial LTE Modem), `shell` (nRF Connect SDK
    /// shell firmware: `at '<command>'`), or `auto` (ask each device at connect).
    #[arg(
        long,
        value_enum,
        help_heading = "Serial and timing",
        value_name = "D",
        default_value_t = DialectArg::Auto
    )]
    dialect: DialectArg,
    /// Operator name for the journal (default: $USER).
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Bench name for the requests file and journal (default: host name).
    #[arg(long, value_name = "NAME")]
    bench: Option<String>,
    /// Timeout for ordinary AT commands, in seconds.
    #[arg(
        long,
        help_heading = "Serial and timing",
        value_name = "SECS",
        default_value_t = 5.0
    )]
    timeout: f64,
    /// Timeout for AT%KEYGEN and AT+CFUN, in seconds (at least 15 is advised on hardware).
    #[arg(
        long,
        help_heading = "Serial and timing",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    slow_timeout: f64,
    /// How long to wait for an unplugged device to come back before giving up on it.
    #[arg(
        long,
        help_heading = "Serial and timing",
        value_name = "SECS",
        default_value_t = 10.0
    )]
    reconnect_wait: f64,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
}

/// `--dialect` of `bench export` and `bench import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialectArg {
    /// Plain AT commands.
    At,
    /// The nRF Connect SDK shell (`at '<command>'`).
    Shell,
    /// Find out per device (`AT`, then `at AT`).
    Auto,
}

impl SerialArgs {
    fn settings(&self) -> Result<PortSettings, Box<dyn std::error::Error>> {
        let secs = |v: f64, name: &str| -> Result<Duration, Box<dyn std::error::Error>> {
            if !(v.is_finite() && v > 0.0 && v < 3600.0) {
                return Err(format!("--{name} must be between 0 and 3600 seconds").into());
            }
            Ok(Duration::from_secs_f64(v))
        };
        let base = secs(self.timeout, "timeout")?;
        let slow = secs(self.slow_timeout, "slow-timeout")?;
        let mut s = PortSettings {
            serial: SerialSettings {
                flow_control: !self.no_flow_control,
            },
            reconnect_wait: secs(self.reconnect_wait, "reconnect-wait")?,
            dialect: match self.dialect {
                DialectArg::At => DialectChoice::At,
                DialectArg::Shell => DialectChoice::Shell,
                DialectArg::Auto => DialectChoice::Auto,
            },
            ..PortSettings::default()
        };
        s.timeouts.default = base;
        s.timeouts.write = base.max(Duration::from_secs_f64(self.timeout * 2.0));
        s.timeouts.sync = base.min(Duration::from_secs(2));
        s.timeouts.cfun = slow;
        s.timeouts.keygen = slow;
        Ok(s)
    }
}

/// Arguments of `bench export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Requests CSV to create or append to (the file you carry to the signer).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// sec_tag for the key (nRF Cloud uses 16842753).
    #[arg(long, value_name = "T", default_value_t = nrfca::keygen::DEFAULT_SEC_TAG)]
    sec_tag: u32,
    /// Replace whatever key or certificate the sec_tag holds: deletes types 0, 1, 2 first.
    /// Any certificate issued for the old key becomes useless.
    #[arg(long)]
    force: bool,
    /// What the certificate names the device by: `uuid` (CN = the device UUID, nRF Cloud's
    /// default) or `imei` (CN = nrf-<IMEI>, for firmware that connects as nrf-<IMEI>; sign
    /// those requests with `nrfca sign --device-id cn`).
    #[arg(long, value_enum, value_name = "ID", default_value_t = DeviceIdArg::Uuid)]
    device_id: DeviceIdArg,
    /// Also gather each device's AT%ATTESTTOKEN into FILE, the CSV nRF Cloud's claiming tools
    /// read (as nrfcloud-utils' gather_attestation_tokens writes it: imei,uuid,token,time; no
    /// header). Appended to; a device already in it is not asked again.
    #[arg(long, value_name = "FILE")]
    claim_tokens: Option<PathBuf>,
    #[command(flatten)]
    serial: SerialArgs,
}

/// `--device-id` of `bench export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceIdArg {
    /// CN = the device UUID.
    Uuid,
    /// CN = nrf-<IMEI>.
    Imei,
}

/// Arguments of `bench import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Bundle directory written by `nrfca sign`.
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// The CA certificate this bench trusts (the signer's ca.pem, carried separately; a file
    /// inside --bundle is refused).
    #[arg(long, value_name = "CA.pem")]
    trust: PathBuf,
    /// Root CA PEM for the modem (type 0); repeatable, concatenated in order. Default: the
    /// project's keys/AmazonRootCA1.pem then keys/nrf-cloud-coap-ca.pem.
    #[arg(long = "root-ca", value_name = "PEM")]
    root_ca: Vec<PathBuf>,
    /// Install even where the device's current certificate came from another CA (refused
    /// otherwise: ca-changed, ca-unpinned); each forced change is journaled.
    #[arg(long)]
    force: bool,
    /// Write the root CA bundle (type 0) to this sec_tag instead of the certificate's (newer
    /// nRF Connect SDK CoAP configurations read the CAs from their own sec_tag).
    #[arg(long, value_name = "T")]
    ca_sec_tag: Option<u32>,
    #[command(flatten)]
    serial: SerialArgs,
}

/// Arguments of `bench status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Bench state directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    state: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also print the journal (all of it, or of one IMEI).
    #[arg(long, value_name = "IMEI", num_args = 0..=1, default_missing_value = "")]
    journal: Option<String>,
}

/// Run a bench subcommand.
pub fn run(cmd: BenchCmd) -> CliResult {
    match cmd {
        BenchCmd::Init(a) => init(a),
        BenchCmd::Ports(a) => ports(a),
        BenchCmd::Export(a) => run_export(a),
        BenchCmd::Import(a) => run_import(a),
        BenchCmd::Status(a) => status(a),
    }
}

fn init(a: InitArgs) -> CliResult {
    let r = nrfca::bench::evidence::init(&a.state, &a.name, a.operator.as_deref())?;
    if a.json {
        print_json(&r)?;
        return Ok(Outcome::Done);
    }
    say!(
        "bench {:?} enrolled: its signing key is in {} (mode 0600; back it up with the state)",
        r.name,
        a.state.display()
    );
    print_stdout(&format!(
        "public key: {}\n{}fingerprint (SHA-256): {}\n",
        r.public_key_file.display(),
        r.public_key_pem,
        r.fingerprint
    ))?;
    say!(
        "next: give {} to the CA officer and read them the fingerprint; they run\n  nrfca ca trust-bench --ca-dir CA --name {} --key bench.pem\nFrom now on `nrfca bench export` writes a signed requests.csv.sig beside each requests file: carry both.",
        r.public_key_file.display(),
        shell_word(&r.name)
    );
    Ok(Outcome::Done)
}

/// `s` as one shell word (single-quoted unless plainly safe).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@+=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn ports(a: PortsArgs) -> CliResult {
    let list = list_ports();
    if a.json {
        print_json(&list)?;
        return Ok(Outcome::Done);
    }
    if list.is_empty() {
        say!("no serial ports found; plug in the kit (a DK's AT port is its first VCOM)");
        say!("{SIM_NOTE}");
        return Ok(Outcome::Done);
    }
    let mut out = format!(
        "  {:<22} {:<10} {:<9} {:<28} {}\n",
        "PORT", "TYPE", "VID:PID", "DESCRIPTION", "SERIAL NUMBER"
    );
    for p in &list {
        let ids = match (p.vid, p.pid) {
            (Some(v), Some(pid)) => format!("{v:04x}:{pid:04x}"),
            _ => "-".into(),
        };
        let desc = [p.manufacturer.as_deref(), p.product.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{} {:<22} {:<10} {:<9} {:<28} {}{}\n",
            if p.nordic { "*" } else { " " },
            p.name,
            format!("{:?}", p.kind).to_lowercase(),
            ids,
            if desc.is_empty() { "-" } else { &desc },
            p.serial.as_deref().unwrap_or("-"),
            p.board.map(|b| format!("  ({b})")).unwrap_or_default()
        ));
    }
    print_stdout(&out)?;
    if list.iter().any(|p| p.nordic) {
        say!("* Nordic/SEGGER device: on a DK the first port of a kit is the modem's AT port");
    } else {
        say!("no Nordic/SEGGER kit found (none marked *); check the USB cable and power");
    }
    say!("{SIM_NOTE}");
    Ok(Outcome::Done)
}

/// Simulated modems sit on pseudo-terminals, which no port listing shows.
const SIM_NOTE: &str =
    "simulated modems (`nrfca sim`) are not listed: use the paths `nrfca sim` printed";

/// Live progress: one line per port (indicatif when stderr is a terminal, plain lines
/// otherwise).
struct Render {
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
    /// Devices finished so far (for the interrupt message).
    finished: AtomicUsize,
    ports: usize,
    /// Set when the run ends normally: the interrupt watcher stops.
    over: AtomicBool,
}

impl Render {
    fn new(ports: &[String]) -> Render {
        let tty = progress_enabled();
        let multi = tty.then(indicatif::MultiProgress::new);
        let mut bars = HashMap::new();
        if let Some(m) = &multi {
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            for p in ports {
                let b = m.add(indicatif::ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(p.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                bars.insert(p.clone(), b);
            }
        }
        Render {
            multi,
            bars: Mutex::new(bars),
            finished: AtomicUsize::new(0),
            ports: ports.len(),
            over: AtomicBool::new(false),
        }
    }

    /// Catch Ctrl-C, SIGTERM and SIGHUP for this run: instead of dying silently with frozen
    /// spinner lines, say what was interrupted and that a re-run finishes it, then exit 2.
    /// Stopping at any instant is as safe as being killed (every write to a modem is
    /// journaled first, every requests row fsync'd, a KEYGEN without its answer recorded as
    /// "key may exist"); this only makes the stop readable.
    fn watch_interrupts(
        self: &Arc<Self>,
        what: &'static str,
    ) -> Result<(), Box<dyn std::error::Error>> {
        nrfca::interrupt::install()?;
        let me = Arc::clone(self);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(50));
            if me.over.load(Ordering::SeqCst) {
                return;
            }
            let Some(sig) = nrfca::interrupt::requested() else {
                continue;
            };
            // Replace the live spinner lines by plain ones: where each port was. Clear first
            // and stop drawing, so no tick redraws a frame between the bars' ends.
            if let Ok(bars) = me.bars.lock() {
                for b in bars.values() {
                    b.disable_steady_tick();
                }
            }
            if let Some(m) = &me.multi {
                let _ = m.clear();
                m.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let mut lines = Vec::new();
            if let Ok(bars) = me.bars.lock() {
                let mut ports: Vec<&String> = bars.keys().collect();
                ports.sort();
                for p in ports {
                    let b = &bars[p];
                    let state = if b.is_finished() {
                        ""
                    } else {
                        " (interrupted)"
                    };
                    lines.push(format!("  {p:<24} {}{state}", b.message()));
                    b.finish_and_clear();
                }
            }
            for l in lines {
                say!("{l}");
            }
            let done = me.finished.load(Ordering::SeqCst);
            say!(
                "\ninterrupted by {} during bench {what}: {done} of {} device(s) had finished; the others stopped where they were, and the bench state and journal record how far each got. Run the same command again to finish them (`nrfca bench status` shows each device).",
                nrfca::interrupt::name(sig),
                me.ports
            );
            std::process::exit(2);
        });
        Ok(())
    }

    fn event(&self, ev: PortEvent) {
        let line = match &ev.kind {
            PortEventKind::Step { step, imei } => match imei {
                Some(i) => format!("{i}: {step}"),
                None => step.clone(),
            },
            PortEventKind::Finished(r) => {
                self.finished.fetch_add(1, Ordering::SeqCst);
                finished_line(r)
            }
        };
        if self.multi.is_some() {
            if let Ok(bars) = self.bars.lock() {
                if let Some(b) = bars.get(&ev.port) {
                    match ev.kind {
                        PortEventKind::Finished(_) => b.finish_with_message(line),
                        _ => b.set_message(line),
                    }
                }
            }
        } else {
            say!("[{}] {line}", ev.port);
        }
    }

    fn done(&self) {
        self.over.store(true, Ordering::SeqCst);
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                if !b.is_finished() {
                    b.finish();
                }
            }
        }
    }
}

fn finished_line(r: &DeviceResult) -> String {
    let who = r.imei.clone().unwrap_or_else(|| "device".into());
    match r.status {
        Status::Done => format!("{who}: done - {}", r.detail),
        Status::AlreadyDone => format!("{who}: nothing to do - {}", r.detail),
        Status::Failed => format!("{who}: FAILED ({})", r.code.as_deref().unwrap_or("?")),
        Status::Unknown => format!(
            "{who}: UNKNOWN ({}) - re-run to resolve",
            r.code.as_deref().unwrap_or("?")
        ),
    }
}

fn summary(what: &str, devices: &[DeviceResult], elapsed_ms: u128) -> Outcome {
    let count = |s: Status| devices.iter().filter(|d| d.status == s).count();
    say!(
        "{what}: {} done, {} already done, {} failed, {} unknown ({} device(s), {:.1} s)",
        count(Status::Done),
        count(Status::AlreadyDone),
        count(Status::Failed),
        count(Status::Unknown),
        devices.len(),
        elapsed_ms as f64 / 1000.0
    );
    let bad: Vec<&DeviceResult> = devices.iter().filter(|d| !d.status.ok()).collect();
    if bad.is_empty() {
        return Outcome::Done;
    }
    say!("devices that need attention:");
    for d in bad {
        say!(
            "  {} {} [{}]: {}",
            d.port,
            d.imei.as_deref().unwrap_or("(IMEI unknown)"),
            d.code.as_deref().unwrap_or(d.status.as_str()),
            d.detail
        );
        if let Some(n) = d
            .next_step
            .as_ref()
            .filter(|n| !d.detail.contains(n.as_str()))
        {
            say!("      next: {n}");
        }
    }
    Outcome::Partial
}

fn run_export(a: ExportArgs) -> CliResult {
    let settings = a.serial.settings()?;
    let opts = ExportOptions {
        ports: a.serial.ports.clone(),
        out: a.out.clone(),
        sec_tag: a.sec_tag,
        force: a.force,
        state_dir: a.serial.state.clone(),
        operator: a.serial.operator.clone(),
        bench_name: a.serial.bench.clone(),
        settings,
        claim_tokens: a.claim_tokens.clone(),
        device_id: match a.device_id {
            DeviceIdArg::Uuid => nrfca::bench::DeviceId::Uuid,
            DeviceIdArg::Imei => nrfca::bench::DeviceId::Imei,
        },
    };
    let render = Arc::new(Render::new(&opts.ports));
    render.watch_interrupts("export")?;
    let report = export(&opts, &|e| render.event(e))?;
    render.done();
    if a.serial.json {
        print_json(&report)?;
    }
    let outcome = summary("export", &report.devices, report.elapsed_ms);
    match &report.signature {
        Some(sig) => say!(
            "signed {} as bench {:?} in {}{}",
            report.out.display(),
            sig.bench,
            sig.path.display(),
            match sig.checkpoints {
                0 => String::new(),
                n => format!(" (quoting the newest checkpoint of {n} CA(s))"),
            }
        ),
        None => say!(
            "warning: this bench is not enrolled, so {} is not signed; `nrfca sign` refuses it once the officer trusts a bench. Run `nrfca bench init --state {} --name NAME`, have the officer trust its bench.pem, then run this export again to sign the file",
            report.out.display(),
            a.serial.state.display()
        ),
    }
    let rows = request_rows(&report.out);
    if rows == 0 {
        // A header-only file: nothing to carry.
        if outcome == Outcome::Done {
            say!(
                "{} holds no request: every device was exported before, into the requests file named on its line above; carry that file to the signer if it is not signed yet (nothing to carry in {})",
                report.out.display(),
                report.out.display()
            );
        } else {
            say!(
                "{} holds no request: no device was exported; fix what is listed above and run the same command again (do not carry the file to the signer yet)",
                report.out.display()
            );
        }
    } else if report.exported() > 0 || outcome == Outcome::Done {
        say!(
            "next: carry {} to the air-gapped signer, who runs\n  nrfca sign --ca-dir CA --out BUNDLE{} {}\nthen install the certificates with\n  nrfca bench import --port ... --bundle BUNDLE --trust ca.pem",
            match &report.signature {
                Some(sig) => format!("{} and {}", report.out.display(), sig.path.display()),
                None => report.out.display().to_string(),
            },
            if a.device_id == DeviceIdArg::Imei { " --device-id cn" } else { "" },
            report.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| report.out.display().to_string())
        );
    }
    Ok(outcome)
}

/// How many requests the requests file holds (0 for a file with only its header, or one
/// that cannot be read).
fn request_rows(path: &std::path::Path) -> usize {
    let mut reader = nrfca::requests::RequestReader::open(&[path.to_path_buf()]);
    let mut n = 0;
    while let Some(Ok(_)) = reader.next_entry() {
        n += 1;
    }
    n
}

fn run_import(a: ImportArgs) -> CliResult {
    let settings = a.serial.settings()?;
    let opts = ImportOptions {
        ports: a.serial.ports.clone(),
        bundle: a.bundle.clone(),
        trust: a.trust.clone(),
        root_ca: a.root_ca.clone(),
        state_dir: a.serial.state.clone(),
        operator: a.serial.operator.clone(),
        bench_name: a.serial.bench.clone(),
        settings,
        force: a.force,
        ca_sec_tag: a.ca_sec_tag,
    };
    let verified = verify_bundle(&opts)?;
    say!(
        "bundle {} (batch {}, {} certificates) verified with {}; {}",
        opts.bundle.display(),
        verified.batch,
        verified.certificates(),
        a.trust.display(),
        verified.evidence.describe()
    );
    if let Some(w) = verified.evidence.warning() {
        say!("{w}");
    }
    let render = Arc::new(Render::new(&opts.ports));
    render.watch_interrupts("import")?;
    let report = import_verified(&opts, verified, &|e| render.event(e))?;
    render.done();
    if a.serial.json {
        print_json(&report)?;
    }
    let outcome = summary("import", &report.devices, report.elapsed_ms);
    if let Some(nrfca::bench::state::Adoption::Superseded(n)) = report.adoption {
        say!(
            "warning: the bundle's checkpoint was not kept: another import adopted a checkpoint (size {n}) while this one ran; run this import again to check the bundle against it"
        );
    }
    if outcome == Outcome::Done {
        say!(
            "next: upload {} to nRF Cloud (Devices > Add devices > bulk onboarding) so the devices can connect",
            report.bundle.join("onboard.csv").display()
        );
    }
    Ok(outcome)
}

/// The per-device table of `bench status`: one row per device, then what went wrong and what
/// to do next under every device that is not done.
fn status_table(devices: &[DeviceRecord]) -> String {
    let mut out = format!(
        "{:<15} {:<36} {:<15} {:<20} {:<20} {}\n",
        "IMEI", "UUID", "STATE", "EXPORTED", "IMPORTED", "CERT SERIAL"
    );
    for d in devices {
        out.push_str(&format!(
            "{:<15} {:<36} {:<15} {:<20} {:<20} {}\n",
            d.imei,
            d.uuid.as_deref().unwrap_or("-"),
            d.state.as_str(),
            d.exported_at.as_deref().unwrap_or("-"),
            d.imported_at.as_deref().unwrap_or("-"),
            d.cert_serial.as_deref().unwrap_or("-"),
        ));
        if d.sec_tag != nrfca::keygen::DEFAULT_SEC_TAG {
            out.push_str(&format!("    sec_tag {}\n", d.sec_tag));
        }
        if let Some(e) = &d.last_error {
            let code = d
                .error_code
                .as_deref()
                .map(|c| format!("[{c}] "))
                .unwrap_or_default();
            out.push_str(&format!("    error: {code}{e}\n"));
        }
        if d.state != nrfca::bench::state::DeviceState::Imported {
            out.push_str(&format!("    next:  {}\n", d.state.next_step()));
        }
    }
    out
}

#[derive(serde::Serialize)]
struct StatusRow<'a> {
    #[serde(flatten)]
    device: &'a DeviceRecord,
    next_step: &'static str,
}

fn status(a: StatusArgs) -> CliResult {
    let state = State::open_existing(&a.state)?;
    let devices = state.devices()?;
    let journal = match &a.journal {
        Some(i) if i.is_empty() => Some(state.journal_entries(None)?),
        Some(i) => {
            let entries = state.journal_entries(Some(i))?;
            if entries.is_empty() && !devices.iter().any(|d| &d.imei == i) {
                return Err(format!(
                    "--journal {}: this IMEI is unknown to the bench in {} (no device, no journal entry); check the IMEI (`nrfca bench status --state {}` lists the devices) or the --state directory",
                    nrfca::term_escape(i),
                    a.state.display(),
                    a.state.display()
                )
                .into());
            }
            Some(entries)
        }
        None => None,
    };
    let identity = nrfca::bench::evidence::identity_summary(&a.state)?;
    let checkpoints = state.newest_checkpoints()?;
    if a.json {
        let rows: Vec<StatusRow<'_>> = devices
            .iter()
            .map(|d| StatusRow {
                device: d,
                next_step: d.state.next_step(),
            })
            .collect();
        #[derive(serde::Serialize)]
        struct Identity<'a> {
            name: &'a str,
            fingerprint: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            bench: Option<Identity<'a>>,
            checkpoints: &'a [nrfca::bench::state::HeldCheckpoint],
            devices: Vec<StatusRow<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            journal: Option<&'a Vec<nrfca::bench::state::JournalEntry>>,
        }
        print_json(&Out {
            bench: identity
                .as_ref()
                .map(|(name, fingerprint)| Identity { name, fingerprint }),
            checkpoints: &checkpoints,
            devices: rows,
            journal: journal.as_ref(),
        })?;
    } else {
        match &identity {
            Some((name, fp)) => say!("bench {name:?}, key fingerprint {fp}"),
            None => say!(
                "bench not enrolled (no bench key): its requests files are not signed; run `nrfca bench init --state {} --name NAME`",
                a.state.display()
            ),
        }
        for h in &checkpoints {
            say!(
                "checkpoint held: {} (verified {} from bundle {})",
                h.checkpoint,
                h.adopted_at,
                h.bundle
            );
        }
        if devices.is_empty() {
            say!(
                "no devices in {} yet; run `nrfca bench export --state {} ...` first",
                a.state.display(),
                a.state.display()
            );
        } else {
            print_stdout(&status_table(&devices))?;
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for d in &devices {
                match counts.iter_mut().find(|(s, _)| *s == d.state.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((d.state.as_str(), 1)),
                }
            }
            let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            say!("{} device(s): {}", devices.len(), parts.join(", "));
        }
        if let Some(j) = &journal {
            let mut out = String::new();
            for e in j {
                out.push_str(&format!(
                    "{:>6} {} {} {} {} {} {}: {} -> {}\n",
                    e.seq,
                    e.time,
                    e.operator,
                    e.bench,
                    e.port,
                    e.imei.as_deref().unwrap_or("-"),
                    e.action,
                    e.command,
                    e.outcome
                ));
            }
            print_stdout(&out)?;
        }
    }
    Ok(Outcome::Done)
}
