//! `nrfca demo`: the whole flow on simulated modems, narrated on stderr.

use super::common::{print_json, progress_enabled, CliResult, Outcome};
use clap::Args;
use nrfca::bench::{PortEvent, PortEventKind};
use nrfca::demo::{self, DemoEvent, DemoOptions};
use nrfca::signer::sign::SignEvent;
use nrfca::sim::{Latency, Profile};
use std::path::PathBuf;
use std::sync::Mutex;

/// Arguments of `nrfca demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  nrfca demo                       # 4 modems, files kept in a new temporary directory\n  nrfca demo --devices 8 --dir ./demo --latency test\n  nrfca demo --custody quorum      # the CA key held 2-of-3 by custodians\n  nrfca demo --custody hsm         # the CA key in a SoftHSM2 token"
)]
pub struct DemoArgs {
    /// Number of simulated modems.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub devices: u16,
    /// Working directory (new or empty); default: a new temporary directory, kept.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Simulated modem latency: none, test (milliseconds) or realistic (seconds for KEYGEN).
    #[arg(long, default_value = "realistic")]
    pub latency: Latency,
    /// What the modems imitate: nrf9160, nrf91x1 or slm.
    #[arg(long, default_value = "nrf9160")]
    pub profile: Profile,
    /// How the demo CA's key is held: age (passphrase `demo`), hsm (a SoftHSM2 token made in
    /// the demo directory; needs softhsm2-util) or quorum (2-of-3 custodians, passphrase files
    /// in the demo directory).
    #[arg(long, default_value = "age", value_parser = ["age", "hsm", "quorum"])]
    pub custody: String,
    /// Print the report as JSON on stdout (timings included).
    #[arg(long)]
    pub json: bool,
}

/// One port's line: `/dev/pts/3  352656100323818  KEYGEN` while it runs, its outcome when done.
fn port_line(e: &PortEvent) -> String {
    match &e.kind {
        PortEventKind::Step { step, imei } => format!(
            "{:<12} {:<15}  {step}",
            e.port,
            imei.as_deref().unwrap_or("")
        ),
        PortEventKind::Finished(d) => {
            let imei = d.imei.as_deref().unwrap_or("");
            if d.status.ok() {
                format!("{:<12} {imei:<15}  {}", e.port, d.status.as_str())
            } else {
                format!(
                    "{:<12} {imei:<15}  {}: {}",
                    e.port,
                    d.status.as_str(),
                    d.detail
                )
            }
        }
    }
}

/// How port progress is shown: on a terminal one live line per port (indicatif) that ends
/// as the port's outcome; otherwise only the outcomes (or every step with
/// `NRFCA_DEMO_VERBOSE`), one plain line each.
struct Ports {
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<Vec<(String, indicatif::ProgressBar)>>,
    /// A spinner between a step's narration and its first event (scrypt, signing).
    busy: Mutex<Option<indicatif::ProgressBar>>,
    verbose: bool,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            multi: progress_enabled().then(indicatif::MultiProgress::new),
            bars: Mutex::new(Vec::new()),
            busy: Mutex::new(None),
            verbose: std::env::var_os("NRFCA_DEMO_VERBOSE").is_some(),
        }
    }

    /// Show a spinner until the next event (terminal only).
    fn working(&self) {
        self.idle();
        if progress_enabled() {
            if let Ok(mut busy) = self.busy.lock() {
                *busy = super::common::spinner("working");
            }
        }
    }

    /// Remove the spinner of [`Ports::working`].
    fn idle(&self) {
        if let Ok(mut busy) = self.busy.lock() {
            if let Some(b) = busy.take() {
                b.finish_and_clear();
            }
        }
    }

    fn event(&self, e: &PortEvent) {
        self.idle();
        let line = port_line(e);
        let finished = matches!(e.kind, PortEventKind::Finished(_));
        let Some(multi) = &self.multi else {
            if self.verbose || finished {
                say!("      {line}");
            }
            return;
        };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = match bars.iter().find(|(p, _)| *p == e.port) {
            Some((_, b)) => b.clone(),
            None => {
                let b = multi.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("    {spinner} {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                bars.push((e.port.clone(), b.clone()));
                b
            }
        };
        if finished {
            bar.set_style(
                indicatif::ProgressStyle::with_template("      {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(line);
        } else {
            bar.set_message(line);
        }
    }

    /// Before narration is printed: finish what is still running and start afresh, so the
    /// next step's ports get new lines below it.
    fn settle(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain(..) {
                if !b.is_finished() {
                    b.finish();
                }
            }
        }
    }
}

/// Run `demo`.
pub fn run(args: DemoArgs) -> CliResult {
    let temporary = args.dir.is_none();
    let opts = DemoOptions {
        devices: usize::from(args.devices),
        dir: args.dir,
        latency: args.latency,
        profile: args.profile,
        custody: args.custody.parse()?,
    };
    let args_custody = args.custody.clone();
    let ports = Ports::new();
    let on = |e: DemoEvent| match e {
        DemoEvent::Step {
            n,
            role,
            title,
            command,
        } => {
            ports.idle();
            ports.settle();
            say!("\n[{n}] {role}: {title}\n    $ {command}");
            ports.working();
        }
        DemoEvent::Note(s) => {
            ports.idle();
            ports.settle();
            say!("    {s}");
            ports.working();
        }
        DemoEvent::Port(p) => ports.event(&p),
        DemoEvent::Sign(SignEvent::Committing) => {
            ports.idle();
            say!("    committing the batch (one transaction)…");
            ports.working();
        }
        DemoEvent::Sign(SignEvent::WritingBundle) => {
            ports.idle();
            say!("    committed; writing the bundle from ca.db, manifest signed last…");
            ports.working();
        }
        DemoEvent::Sign(_) => {}
    };
    let report = demo::run(&opts, &on);
    ports.idle();
    let report = report?;
    let t = &report.timings;
    say!(
        "\ndone: {} modems provisioned in {:.1} s (export {:.1} s, sign {:.1} s, import {:.1} s)",
        report.imported,
        t.total_ms as f64 / 1000.0,
        t.export_ms as f64 / 1000.0,
        t.sign_ms as f64 / 1000.0,
        t.import_ms as f64 / 1000.0
    );
    say!("files:");
    say!("  CA            {}", report.ca_dir.display());
    say!("  requests      {}", report.requests.display());
    say!(
        "  bundle        {}  (upload onboard.csv to nRF Cloud)",
        report.bundle.display()
    );
    say!("  bench state   {}", report.bench_state.display());
    say!("  audit export  {}", report.audit_log.display());
    match args_custody.as_str() {
        "hsm" => say!(
            "look around (the key is in the SoftHSM2 token \"nrfca demo\", user PIN 1234; export SOFTHSM2_CONF={} first):",
            report.dir.join("softhsm2.conf").display()
        ),
        "quorum" => say!(
            "look around (custodians alice, bob, carol; share passphrases in {}/NAME.passphrase):",
            report.dir.display()
        ),
        _ => say!("look around (the CA passphrase is `demo`):"),
    }
    say!("  nrfca ca show --ca-dir {}", report.ca_dir.display());
    say!(
        "  nrfca bench status --state {}",
        report.bench_state.display()
    );
    say!("  nrfca audit show --ca-dir {}", report.ca_dir.display());
    say!(
        "  nrfca audit report --ca-dir {}      # the batch report for the ceremony record",
        report.ca_dir.display()
    );
    say!("  nrfca inspect {}", report.requests.display());
    if temporary {
        // Every run without --dir makes a new directory; say where, so they do not pile up
        // unnoticed.
        say!(
            "{} is a new temporary directory and is kept: remove it with `rm -r {}` when done (or give --dir DIR to choose where the files go)",
            report.dir.display(),
            report.dir.display()
        );
    }
    if args.json {
        print_json(&report)?;
    }
    Ok(Outcome::Done)
}
