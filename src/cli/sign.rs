//! `nrfca sign`: check every request, issue certificates in one atomic batch, write a bundle.

use super::common::{print_json, progress_enabled, CliResult, Outcome, UnlockArgs};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrfca::keygen::DeviceIdMode;
use nrfca::signer::sign::{self, SignEvent, SignOptions, SignReport};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[arg(
        long,
        value_name = "LIST",
        default_value = "",
        hide_default_value = true
    )]
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
    // --- evidence (SPEC §10) ---
    /// Accept requests files without a trusted bench's signature (F.sig); recorded in the
    /// batch's audit records. Needed for plain-text KEYGEN files once a bench is trusted.
    #[arg(long)]
    pub unsigned: bool,
    /// Only sign devices listed in FILE (CSV with a device_uuid and/or imei column);
    /// others are rejected not-expected.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
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
    opts.unsigned = a.unsigned;
    opts.expect = a.expect.clone();

    // What `sign` refuses before it unlocks anything, checked before the passphrase prompt so
    // a typo does not cost a passphrase entry (the library checks the same again).
    precheck(&a)?;
    sign::precheck_evidence(&a.ca_dir, &opts)?;
    let unlock = if a.dry_run {
        None
    } else {
        Some(a.unlock.unlock_for(&a.ca_dir)?)
    };

    let bar = progress_enabled().then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_message(if a.dry_run {
            "reading the CA database"
        } else {
            "unlocking the CA key"
        });
        b.enable_steady_tick(Duration::from_millis(100));
        b
    });
    let mut on_event = |e: SignEvent| {
        let Some(b) = bar.as_ref() else { return };
        match e {
            SignEvent::Started { total_bytes, .. } => {
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_length(total_bytes);
                b.set_message("checking requests");
            }
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
            SignEvent::WritingBundle => b.set_message("batch committed; writing the bundle"),
            SignEvent::Done => {}
        }
    };
    let report = match &unlock {
        None => sign::dry_run(&a.ca_dir, &opts, &mut on_event),
        Some(u) => {
            // Once the key is unlocked, Ctrl-C, SIGTERM and SIGHUP roll the batch back instead
            // of killing the process mid-way.
            opts.catch_signals = true;
            sign::sign(&a.ca_dir, u, &opts, &mut on_event)
        }
    };
    if let Some(b) = bar.as_ref() {
        b.finish_and_clear();
    }
    let report = report?;
    if a.json {
        print_json(&report)?;
    }
    say_raw!("{}", render(&report));
    say_raw!("{}", next_steps(&report, &a.ca_dir));
    Ok(if report.all_ok() {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

/// Refuse, before any secret is asked for, what `sign` would refuse anyway: an existing
/// `--out`, a missing requests file or one that is not a requests file, a missing CA.
fn precheck(a: &SignArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.ca_dir.join(nrfca::signer::ca::CA_PEM).is_file() {
        return Err(format!(
            "{} does not exist; check --ca-dir (create a CA with `nrfca ca init`)",
            a.ca_dir.join(nrfca::signer::ca::CA_PEM).display()
        )
        .into());
    }
    if !a.dry_run && a.out.symlink_metadata().is_ok() {
        return Err(format!(
            "{} already exists; give a new --out directory (bundles are never overwritten)",
            a.out.display()
        )
        .into());
    }
    if !a.dry_run {
        sign::check_out_outside_ca(&a.ca_dir, &a.out)?;
    }
    for p in &a.requests {
        if p.is_dir() {
            return Err(format!(
                "{} is a directory; give the requests files themselves (the CSV from `nrfca bench export`, or KEYGEN lines)",
                p.display()
            )
            .into());
        }
        if p.symlink_metadata().is_err() {
            return Err(format!(
                "requests file {} does not exist; check the path",
                p.display()
            )
            .into());
        }
        sign::check_input_path(p)?;
        // A file that is not a requests file (ca.pem, ca.db, onboard.csv, empty, …) is
        // refused before a passphrase is asked for; `sign` itself checks again.
        nrfca::requests::sniff(p)?;
    }
    Ok(())
}

/// What the officer does with the result (stderr).
fn next_steps(r: &SignReport, ca_dir: &Path) -> String {
    if r.dry_run {
        return if r.rejected > 0 {
            "next: fix or drop the rejected requests (`nrfca inspect FILE` explains each), or sign anyway: the rejects are listed in rejects.csv\n".to_string()
        } else {
            "next: run the same command without --dry-run to sign\n".to_string()
        };
    }
    let Some(b) = &r.bundle else {
        return String::new();
    };
    let short = r.batch.get(..12).unwrap_or(&r.batch);
    format!(
        "next:\n  1. carry {b} to the bench: nrfca bench import --port ... --bundle {b} --trust ca.pem\n  \
         2. upload {onboard} to nRF Cloud (bulk onboarding), from a machine with network access\n  \
         3. file the batch report: nrfca audit report --ca-dir {ca} --batch {short} --out batch-{short}.txt\n",
        b = b.display(),
        onboard = onboard_files(b, r.issued + r.returned),
        ca = ca_dir.display(),
    )
}

/// The onboarding file(s) to upload: `onboard.csv`, or its 1000-row chunks.
fn onboard_files(bundle: &Path, rows: u64) -> String {
    if rows <= 1000 {
        return bundle.join("onboard.csv").display().to_string();
    }
    let chunks = rows.div_ceil(1000);
    format!(
        "{} … onboard-{chunks:04}.csv (nRF Cloud takes 1000 devices per upload)",
        bundle.join("onboard-0001.csv").display()
    )
}

/// Human summary (stderr).
fn render(r: &SignReport) -> String {
    let mut s = String::new();
    let secs = r.elapsed_ms as f64 / 1000.0;
    // The time includes the key unlock (scrypt): a rate means something only for big batches.
    let rate = if secs > 0.0 && r.requests >= 1000 {
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
