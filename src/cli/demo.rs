//! `nrfca demo`: the whole flow on simulated modems, narrated on stderr.

use super::common::{print_json, progress_enabled, CliResult, Outcome};
use clap::Args;
use nrfca::bench::{PortEvent, PortEventKind};
use nrfca::demo::{self, DemoEvent, DemoOptions};
use nrfca::signer::sign::SignEvent;
use nrfca::sim::{Latency, Profile};
use std::path::PathBuf;

/// Arguments of `nrfca demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  nrfca demo                       # 4 modems, files kept in a new temporary directory\n  nrfca demo --devices 8 --dir ./demo --latency test"
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
    /// Print the report as JSON on stdout (timings included).
    #[arg(long)]
    pub json: bool,
}

fn port_line(e: &PortEvent) -> Option<String> {
    match &e.kind {
        PortEventKind::Step { step, imei } => Some(format!(
            "      {} {}{}",
            e.port,
            step,
            imei.as_ref()
                .map(|i| format!(" (IMEI {i})"))
                .unwrap_or_default()
        )),
        PortEventKind::Finished(d) => Some(format!(
            "      {} {}: {}",
            e.port,
            d.status.as_str(),
            d.detail
        )),
    }
}

/// Run `demo`.
pub fn run(args: DemoArgs) -> CliResult {
    let verbose = progress_enabled() || std::env::var_os("NRFCA_DEMO_VERBOSE").is_some();
    let opts = DemoOptions {
        devices: usize::from(args.devices),
        dir: args.dir,
        latency: args.latency,
        profile: args.profile,
    };
    let on = |e: DemoEvent| match e {
        DemoEvent::Step {
            n,
            role,
            title,
            command,
        } => {
            eprintln!("\n[{n}] {role}: {title}\n    $ {command}");
        }
        DemoEvent::Note(s) => eprintln!("    {s}"),
        DemoEvent::Port(p) => {
            let finished = matches!(p.kind, PortEventKind::Finished(_));
            if verbose || finished {
                if let Some(l) = port_line(&p) {
                    eprintln!("{l}");
                }
            }
        }
        DemoEvent::Sign(SignEvent::Committing) => {
            eprintln!("    committing the batch (one transaction)…")
        }
        DemoEvent::Sign(_) => {}
    };
    let report = demo::run(&opts, &on)?;
    let t = &report.timings;
    eprintln!(
        "\ndone: {} modems provisioned in {:.1} s (export {:.1} s, sign {:.1} s, import {:.1} s)",
        report.imported,
        t.total_ms as f64 / 1000.0,
        t.export_ms as f64 / 1000.0,
        t.sign_ms as f64 / 1000.0,
        t.import_ms as f64 / 1000.0
    );
    eprintln!("files:");
    eprintln!("  CA            {}", report.ca_dir.display());
    eprintln!("  requests      {}", report.requests.display());
    eprintln!(
        "  bundle        {}  (upload onboard.csv to nRF Cloud)",
        report.bundle.display()
    );
    eprintln!("  bench state   {}", report.bench_state.display());
    eprintln!("  audit export  {}", report.audit_log.display());
    eprintln!("look around (the CA passphrase is `demo`):");
    eprintln!("  nrfca ca show --ca-dir {}", report.ca_dir.display());
    eprintln!(
        "  nrfca bench status --state {}",
        report.bench_state.display()
    );
    eprintln!("  nrfca audit show --ca-dir {}", report.ca_dir.display());
    eprintln!(
        "  nrfca audit report --ca-dir {}      # the batch report for the ceremony record",
        report.ca_dir.display()
    );
    eprintln!("  nrfca inspect {}", report.requests.display());
    if args.json {
        print_json(&report)?;
    }
    Ok(Outcome::Done)
}
