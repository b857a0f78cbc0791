//! `nrfca sign`: check every request, issue certificates in one atomic batch, write a bundle.

use super::common::{print_json, CliResult, Outcome, UnlockArgs};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrfca::keygen::DeviceIdMode;
use nrfca::signer::sign::{self, SignEvent, SignOptions, SignReport};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Which identity the certificate CN carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceIdArg {
    /// The attested device UUID (the CSR CN must be the UUID).
    Uuid,
    /// The CSR CN: nrf-<IMEI> (matching the requests row's IMEI when given) or the UUID.
    Cn,
}

/// Arguments of `nrfca sign`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every request got a certificate, 1 some were rejected (see \
                  B/rejects.csv and docs/reject-codes.md), 2 could not run (nothing was issued).\n\n\
                  Example:\n  nrfca sign --ca-dir /media/ca --out bundle-2025-06-01 requests.csv\n  \
                  nrfca sign --ca-dir ca --identity officer.agekey --out b2 --pem-files a.csv b.txt\n  \
                  nrfca sign --ca-dir ca --out unused --dry-run requests.csv"
)]
pub struct SignArgs {
    /// CA directory (ca.pem, ca.key.age, ca.db).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Bundle directory to create; must not exist.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Certificate validity in days (never past the CA's notAfter).
    #[arg(long, default_value_t = sign::DEFAULT_DAYS)]
    pub days: u32,
    /// Required sec_tag of the modem key.
    #[arg(long, value_name = "T", default_value_t = nrfca::keygen::DEFAULT_SEC_TAG, conflicts_with = "any_sec_tag")]
    pub sec_tag: u32,
    /// Accept keys in any sec_tag.
    #[arg(long)]
    pub any_sec_tag: bool,
    /// What the certificate CN is.
    #[arg(long, value_enum, default_value_t = DeviceIdArg::Uuid)]
    pub device_id: DeviceIdArg,
    /// Issue a new certificate to a device that already has one (new key); recorded as a
    /// reissue in the audit log.
    #[arg(long)]
    pub reissue: bool,
    /// Run every check and report, but write nothing (no key needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Also write certs/<deviceId>_crt.pem (the names Nordic's tools use).
    #[arg(long)]
    pub pem_files: bool,
    /// nRF Cloud onboarding fwTypes, joined with |.
    #[arg(long, value_name = "LIST", default_value = "APP|MODEM")]
    pub fw_types: String,
    /// nRF Cloud onboarding tags, joined with |.
    #[arg(long, value_name = "LIST", default_value = "", hide_default_value = true)]
    pub tags: String,
    /// nRF Cloud onboarding subType.
    #[arg(long, value_name = "S", default_value = "", hide_default_value = true)]
    pub sub_type: String,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", hide = true)]
    pub threads: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Requests files: CSV from `nrfca bench export`, or one KEYGEN string per line.
    #[arg(value_name = "REQUESTS", required = true)]
    pub requests: Vec<PathBuf>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split('|')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Run `sign`.
pub fn run(a: SignArgs) -> CliResult {
    let mut opts = SignOptions::new(a.out.clone(), a.requests.clone(), a.unlock.operator());
    opts.days = a.days;
    opts.sec_tag = if a.any_sec_tag { None } else { Some(a.sec_tag) };
    opts.device_id = match a.device_id {
        DeviceIdArg::Uuid => DeviceIdMode::Uuid,
        DeviceIdArg::Cn => DeviceIdMode::Cn,
    };
    opts.reissue = a.reissue;
    opts.dry_run = a.dry_run;
    opts.pem_files = a.pem_files;
    opts.fw_types = split_list(&a.fw_types);
    opts.tags = split_list(&a.tags);
    opts.sub_type = a.sub_type.clone();
    opts.threads = a.threads;

    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut on_event = |e: SignEvent| {
        let Some(b) = bar.as_ref() else { return };
        match e {
            SignEvent::Started { total_bytes, .. } => b.set_length(total_bytes),
            SignEvent::Progress {
                requests,
                issued,
                returned,
                rejected,
                bytes_read,
            } => {
                b.set_position(bytes_read);
                b.set_message(format!(
                    "{requests} requests: {issued} issued, {returned} returned, {rejected} rejected"
                ));
            }
            SignEvent::Committing => b.set_message("committing the batch"),
            SignEvent::Done => {}
        }
    };
    let report = if a.dry_run {
        sign::dry_run(&a.ca_dir, &opts, &mut on_event)
    } else {
        let unlock = a.unlock.unlock()?;
        sign::sign(&a.ca_dir, &unlock, &opts, &mut on_event)
    };
    if let Some(b) = bar.as_ref() {
        b.finish_and_clear();
    }
    let report = report?;
    if a.json {
        print_json(&report)?;
    }
    eprint!("{}", render(&report));
    Ok(if report.all_ok() {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

/// Human summary (stderr).
fn render(r: &SignReport) -> String {
    let mut s = String::new();
    let secs = r.elapsed_ms as f64 / 1000.0;
    let rate = if secs > 0.0 {
        format!(" ({:.0}/s)", r.requests as f64 / secs)
    } else {
        String::new()
    };
    if r.dry_run {
        s.push_str(&format!(
            "dry run of batch {}: nothing was written\n",
            r.batch
        ));
    } else {
        s.push_str(&format!("batch {}\n", r.batch));
    }
    s.push_str(&format!(
        "  requests    {} in {:.1} s{rate}\n",
        r.requests, secs
    ));
    let verb = if r.dry_run { "would issue" } else { "issued" };
    s.push_str(&format!("  {verb:<11} {}", r.issued));
    if r.reissued > 0 {
        s.push_str(&format!(" ({} reissued)", r.reissued));
    }
    s.push('\n');
    if r.returned > 0 {
        s.push_str(&format!(
            "  returned    {} (identical requests already signed: same certificates)\n",
            r.returned
        ));
    }
    s.push_str(&format!("  rejected    {}\n", r.rejected));
    for (code, n) in &r.rejects_by_code {
        let hint = nrfca::reject::RejectCode::parse(code)
            .map(|c| c.next_step())
            .unwrap_or("");
        s.push_str(&format!("    {code:<22} {n:>6}  {hint}\n"));
    }
    if let Some(b) = &r.bundle {
        s.push_str(&format!("  bundle      {}\n", b.display()));
    }
    s.push_str(&format!("  CA sha256   {}\n", r.ca_fingerprint));
    if let Some(h) = &r.audit_head {
        s.push_str(&format!("  audit head  #{} {}\n", h.seq, h.hash));
    }
    for w in &r.warnings {
        s.push_str(&format!("  warning: {w}\n"));
    }
    for p in &r.removed_stale {
        s.push_str(&format!(
            "  removed the unfinished bundle of a crashed run: {}\n",
            p.display()
        ));
    }
    if r.rejected > 0 && !r.dry_run {
        if let Some(b) = &r.bundle {
            s.push_str(&format!(
                "Rejected requests are listed in {}.\n",
                b.join("rejects.csv").display()
            ));
        }
    }
    s
}
