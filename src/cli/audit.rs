//! `nrfca audit verify | show | export`.

use super::common::{
    check_out_parent, operator, print_json, print_stdout, with_spinner, CliResult, Outcome,
};
use clap::{Args, Subcommand, ValueEnum};
use nrfca::signer::audit::{self, ExportFormat, Filter, Record, VerifyReport};
use nrfca::signer::report;
use nrfca::term_escape;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain, the sequence and the CA-signed checkpoints (and, with --ca-dir,
    /// that issued certificates and audit records agree); print record count and head hash.
    #[command(
        after_help = "Example:\n  nrfca audit verify --ca-dir /media/ca\n  nrfca audit verify --file audit-2025-06.jsonl --ca-cert ca.pem --json\n\nExit 0: intact. Exit 2: the first bad record is named."
    )]
    Verify(VerifyArgs),
    /// Review the log (a table; --json or --csv for machines).
    #[command(
        after_help = "Example:\n  nrfca audit show --ca-dir /media/ca --device 50503041-3633-4261-803d-1e2b8f70111a\n  nrfca audit show --ca-dir /media/ca --since 2025-06-01 --event request-rejected --csv"
    )]
    Show(ShowArgs),
    /// Write a standalone copy that verifies alone against ca.pem.
    #[command(
        after_help = "Example:\n  nrfca audit export --ca-dir /media/ca --out audit-2025-06.jsonl\n  nrfca audit verify --file audit-2025-06.jsonl --ca-cert /media/ca/ca.pem"
    )]
    Export(ExportArgs),
    /// A printable report of one signed batch, to file with the ceremony record: operator,
    /// times, CA fingerprint, settings, inputs with SHA-256, counts, rejects by code, bundle
    /// manifest hash, the checkpoint that signs the batch and the audit head; the log is
    /// verified as the report is made.
    #[command(
        after_help = "Example:\n  nrfca audit report --ca-dir /media/ca                     # the latest batch\n  nrfca audit report --ca-dir /media/ca --batch 8bf7fe96d232 --out batch-report.txt\n  nrfca audit report --ca-dir /media/ca --list\n\nExit 0: report made, log intact. Exit 2: no such batch, or the audit log does not verify\n(the report is still printed, with the first bad record)."
    )]
    Report(ReportArgs),
}

/// Arguments of `audit report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Batch id, or a unique prefix of it (at least 6 characters); default: the latest batch.
    #[arg(long, value_name = "ID", conflicts_with = "list")]
    pub batch: Option<String>,
    /// List the batches (id, time, operator, counts) instead.
    #[arg(long)]
    pub list: bool,
    /// Write the report to FILE (must not exist) instead of stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `audit verify`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ca_dir", "file"])))]
pub struct VerifyArgs {
    /// CA directory (verifies ca.db against ca.pem).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// An exported log (JSONL or CSV).
    #[arg(long, value_name = "LOG", requires = "ca_cert")]
    pub file: Option<PathBuf>,
    /// The CA certificate to check an exported log against.
    #[arg(long, value_name = "PEM", requires = "file")]
    pub ca_cert: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    // --- evidence (SPEC §11) ---
    /// A checkpoint the log must extend (a bundle's `checkpoint`, or the three lines of the
    /// ceremony record); repeatable.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,
}

/// Arguments of `audit show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Only records about this device (UUID or certificate CN).
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Only records of this batch (the id, or a unique prefix of at least 6 characters).
    #[arg(long, value_name = "ID")]
    pub batch: Option<String>,
    /// Only records at or after this time (RFC 3339, or YYYY-MM-DD = that day's start, UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records at or before this time (RFC 3339, or YYYY-MM-DD = that day's end, UTC).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only records with this event name (e.g. certificate-issued, request-rejected).
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// List the revoked certificates (serial, device, reason, time) instead of records.
    #[arg(long, conflicts_with_all = ["device", "batch", "since", "until", "event", "expiring"])]
    pub revoked: bool,
    /// List the certificates (not revoked) that expire within DAYS days, or already have,
    /// instead of records.
    #[arg(long, value_name = "DAYS", conflicts_with_all = ["device", "batch", "since", "until", "event"])]
    pub expiring: Option<u32>,
    /// Print the records as a JSON array on stdout.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV on stdout (same columns as `audit export --format csv`).
    #[arg(long)]
    pub csv: bool,
}

/// Export format flag.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// One JSON record per line.
    Jsonl,
    /// CSV with a header.
    Csv,
}

/// Arguments of `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// File to write (must not exist).
    #[arg(long, value_name = "LOG")]
    pub out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: FormatArg,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run an audit subcommand.
pub fn run(cmd: AuditCmd) -> CliResult {
    match cmd {
        AuditCmd::Verify(a) => verify(a),
        AuditCmd::Show(a) => show(a),
        AuditCmd::Report(a) => batch_report(a),
        AuditCmd::Export(a) => {
            let format = match a.format {
                FormatArg::Jsonl => ExportFormat::Jsonl,
                FormatArg::Csv => ExportFormat::Csv,
            };
            check_out_parent(&a.out)?;
            let op = operator(a.operator);
            let s = with_spinner("exporting the audit log", || {
                audit::export(&a.ca_dir, &a.out, format, &op)
            })?;
            if a.json {
                print_json(&s)?;
            } else {
                say!(
                    "exported {} records to {} (head {}, sha256 {}); recorded as audit record {}",
                    s.records,
                    s.out.display(),
                    s.head_hash,
                    s.sha256,
                    s.export_record_seq
                );
                say!(
                    "check it anywhere with: nrfca audit verify --file {} --ca-cert ca.pem",
                    s.out.display()
                );
            }
            Ok(Outcome::Done)
        }
    }
}

fn verify(a: VerifyArgs) -> CliResult {
    let mut given = Vec::new();
    for p in &a.checkpoint {
        let bytes = std::fs::read(p)
            .map_err(|e| format!("cannot read --checkpoint {}: {e}", p.display()))?;
        given.push(audit::GivenCheckpoint::parse(
            &p.display().to_string(),
            &bytes,
        )?);
    }
    let report: VerifyReport = match (&a.ca_dir, &a.file, &a.ca_cert) {
        (Some(dir), None, None) => with_spinner("verifying the audit log", || {
            audit::verify_db_with(dir, &given)
        })?,
        (None, Some(file), Some(cert)) => with_spinner("verifying the audit log", || {
            audit::verify_file_with(file, cert, &given)
        })?,
        _ => return Err("give either --ca-dir DIR, or --file LOG with --ca-cert CA.pem".into()),
    };
    if a.json {
        print_json(&report)?;
    } else {
        say!("records      {}", report.records);
        say!("head hash    {}", report.head_hash);
        say!("CA sha256    {}", report.ca_fingerprint);
        say!(
            "signed to    record {} (last valid checkpoint)",
            report.last_checkpoint_seq
        );
        if report.unsigned_tail > 0 {
            say!(
                "unsigned     {} record(s) after the last checkpoint (chained, not yet signed by the CA)",
                report.unsigned_tail
            );
        }
        if let Some(c) = &report.checkpoint {
            let mut l = c.lines();
            let (_, size, root) = (l.next(), l.next().unwrap_or(""), l.next().unwrap_or(""));
            say!("checkpoint   size {size} root {root} (newest, CA-signed)");
        } else if a.ca_dir.is_some() && report.records > 0 {
            say!("checkpoint   none yet (ca.db from before checkpoints: the next command that unlocks the key signs the first)");
        }
        for g in given.iter().filter(|_| report.first_bad.is_none()) {
            say!("extends      {} (size {})", g.name, g.checkpoint.size);
        }
    }
    match &report.first_bad {
        None => {
            if !a.json {
                say!("audit log intact");
            }
            Ok(Outcome::Done)
        }
        Some(f) => {
            let what_to_do = if a.file.is_some() {
                "do not trust this copy: export the log again from the signer (`nrfca audit export`) and compare its head hash with an earlier export"
            } else {
                "stop signing, keep this ca.db for the investigation, and restore ca.db from a backup"
            };
            Err(format!(
                "audit log TAMPERED or damaged at record {}: {}; {what_to_do}",
                f.seq, f.problem
            )
            .into())
        }
    }
}

fn batch_report(a: ReportArgs) -> CliResult {
    if a.list {
        let list = report::list_batches(&a.ca_dir)?;
        if a.json {
            print_json(&list)?;
        } else if list.is_empty() {
            say!("no batches yet; run `nrfca sign` first");
        } else {
            let mut out = format!(
                "{:<32}  {:<24}  {:<16}  {:>8}  {:>8}  {:>8}\n",
                "BATCH", "COMMITTED", "OPERATOR", "ISSUED", "RETURNED", "REJECTED"
            );
            for b in &list {
                out.push_str(&format!(
                    "{:<32}  {:<24}  {:<16}  {:>8}  {:>8}  {:>8}\n",
                    term_escape(&b.batch),
                    term_escape(b.committed_at.as_deref().unwrap_or("-")),
                    term_escape(&b.operator),
                    b.issued,
                    b.returned,
                    b.rejected
                ));
            }
            print_stdout(&out)?;
            say!(
                "{} batch(es); print one with `nrfca audit report --ca-dir {} --batch ID`",
                list.len(),
                a.ca_dir.display()
            );
        }
        return Ok(Outcome::Done);
    }
    if let Some(out) = a.out.as_deref().filter(|_| !a.json) {
        check_out_parent(out)?;
    }
    let r = with_spinner("reading the batch and verifying the audit log", || {
        report::batch_report(&a.ca_dir, a.batch.as_deref())
    })?;
    if a.json {
        print_json(&r)?;
    } else {
        let text = report::render_text(&r);
        match &a.out {
            Some(path) => {
                write_new(path, text.as_bytes())?;
                say!(
                    "wrote the report of batch {} to {}; print it, sign it, file it with the ceremony record",
                    r.batch,
                    path.display()
                );
            }
            None => print_stdout(&text)?,
        }
    }
    match &r.audit.first_bad {
        None => Ok(Outcome::Done),
        Some(f) => Err(format!(
            "audit log TAMPERED or damaged at record {}: {}; do not file this report as clean: restore ca.db from a backup and investigate",
            f.seq, f.problem
        )
        .into()),
    }
}

/// Create `path` (refusing an existing file), write `bytes`, fsync.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "{} already exists; reports are never overwritten: choose another --out",
                    path.display()
                )
            } else {
                format!(
                    "cannot create {}: {e}; choose another --out",
                    path.display()
                )
            }
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn parse_time(s: &str, end_of_day: bool) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).map_err(|_| {
        format!("`{s}` is not a time: use RFC 3339 (2025-06-01T12:00:00Z) or a date (2025-06-01)")
    })?;
    let t = if end_of_day {
        d.with_hms_milli(23, 59, 59, 999)
    } else {
        d.with_hms(0, 0, 0)
    }
    .map_err(|e| e.to_string())?;
    Ok(t.assume_utc())
}

/// A `--batch` value as the full id: an exact id, or a unique prefix of at least 6
/// characters (as `audit show` tables and `sign` print it).
fn full_batch_id(ca_dir: &std::path::Path, b: &str) -> Result<String, Box<dyn std::error::Error>> {
    let want = b.trim().trim_end_matches('…').to_ascii_lowercase();
    let ids: Vec<String> = report::list_batches(ca_dir)?
        .into_iter()
        .map(|x| x.batch)
        .collect();
    if ids.contains(&want) {
        return Ok(want);
    }
    let matches: Vec<&String> = ids
        .iter()
        .filter(|id| want.len() >= report::MIN_PREFIX && id.starts_with(&want))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no batch `{b}` in this CA; list the batches with `nrfca audit report --ca-dir {} --list`",
            ca_dir.display()
        )
        .into()),
        _ => Err(format!("`{b}` matches {} batches; give more of the id", matches.len()).into()),
    }
}

/// `audit show --revoked` / `--expiring DAYS`: certificate lists, not records.
fn show_certificates(a: &ShowArgs) -> CliResult {
    use nrfca::signer::lifecycle::revoke;
    let (header, rows): (&[&str], Vec<Vec<String>>) = if let Some(days) = a.expiring {
        let list = revoke::list_expiring(&a.ca_dir, days)?;
        if a.json {
            print_json(&list)?;
            return Ok(Outcome::Done);
        }
        (
            &["serial", "device_id", "not_after", "batch"],
            list.into_iter()
                .map(|e| vec![e.serial, e.device_id, e.not_after, e.batch_id])
                .collect(),
        )
    } else {
        let list = revoke::list_revoked(&a.ca_dir)?;
        if a.json {
            print_json(&list)?;
            return Ok(Outcome::Done);
        }
        (
            &["serial", "device_id", "reason", "revoked_at", "operator"],
            list.into_iter()
                .map(|r| vec![r.serial, r.device_id, r.reason, r.revoked_at, r.operator])
                .collect(),
        )
    };
    let n = rows.len();
    if a.csv {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(header)?;
        for r in &rows {
            w.write_record(r.iter().map(|c| nrfca::bundle::safe_cell(c).into_owned()))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| format!("cannot build the CSV: {}", e.error()))?;
        print_stdout(&String::from_utf8_lossy(&bytes))?;
    } else {
        let mut out = header.join("  ");
        out.push('\n');
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| term_escape(c).into_owned()).collect();
            out.push_str(&cells.join("  "));
            out.push('\n');
        }
        print_stdout(&out)?;
        say!("{n} certificate(s)");
    }
    Ok(Outcome::Done)
}

fn show(a: ShowArgs) -> CliResult {
    if a.revoked || a.expiring.is_some() {
        return show_certificates(&a);
    }
    if let Some(e) = a.event.as_deref() {
        if !audit::EVENTS.contains(&e) {
            return Err(format!(
                "--event {}: no such event; give one of: {}",
                term_escape(e),
                audit::EVENTS.join(", ")
            )
            .into());
        }
    }
    let batch = match &a.batch {
        Some(b) => Some(full_batch_id(&a.ca_dir, b)?),
        None => None,
    };
    let filter = Filter {
        device: a.device,
        batch,
        since: a
            .since
            .as_deref()
            .map(|s| parse_time(s, false))
            .transpose()?,
        until: a
            .until
            .as_deref()
            .map(|s| parse_time(s, true))
            .transpose()?,
        event: a.event,
    };
    let records = audit::show(&a.ca_dir, &filter)?;
    if a.json {
        print_json(&records)?;
    } else if a.csv {
        // Built in memory (the records already are), then written like every other stdout
        // output: a closed pipe is not an error.
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(audit::CSV_HEADER)?;
        for r in &records {
            w.write_record(r.to_csv_fields())?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| format!("cannot build the CSV: {}", e.error()))?;
        print_stdout(&String::from_utf8_lossy(&bytes))?;
    } else {
        print_stdout(&table(&records))?;
        say!("{} record(s)", records.len());
    }
    Ok(Outcome::Done)
}

/// One-line summary of the details: `key=value` pairs, long hex shortened.
fn summary(r: &Record) -> String {
    let Some(map) = r.details.as_object() else {
        return r.details.to_string();
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut parts = Vec::new();
    for k in keys {
        let v = &map[k];
        let text = match v {
            serde_json::Value::String(s) => {
                // Batch ids stay whole: they are what `--batch` takes.
                if k != "batch" && s.len() > 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("{}…", &s[..12])
                } else if k == "signature" {
                    "(sig)".to_string()
                } else {
                    s.clone()
                }
            }
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        // Details carry request text (reject details, file names): escape what a terminal
        // would act on.
        parts.push(format!("{}={}", term_escape(k), term_escape(&text)));
    }
    parts.join(" ")
}

fn table(records: &[Record]) -> String {
    let mut out = String::new();
    let op_w = records
        .iter()
        .map(|r| term_escape(&r.operator).chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 20);
    out.push_str(&format!(
        "{:>6}  {:<24}  {:<op_w$}  {:<20}  {}\n",
        "SEQ", "TIME", "OPERATOR", "EVENT", "DETAILS"
    ));
    for r in records {
        out.push_str(&format!(
            "{:>6}  {:<24}  {:<op_w$}  {:<20}  {}\n",
            r.seq,
            term_escape(&r.time),
            term_escape(&r.operator),
            term_escape(&r.event),
            summary(r)
        ));
    }
    out
}
