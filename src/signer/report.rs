//! The printable batch report (`nrfca audit report`): what one committed batch did, read back
//! from the hash-chained audit records in `ca.db` (never from the `batches` or `rejects`
//! tables, which the chain does not cover) and checked against the audit chain, for the
//! officer to file with the ceremony record. Read-only; never prints.

use crate::bundle::FileDigest;
use crate::signer::audit::{self, AuditError, Finding};
use crate::signer::ca_files::{self as ca, CaFileError};
use crate::signer::db::{self, Connection, DbError};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use crate::util::term_escape;

/// How many reject rows a report lists one by one (all of them are counted by code).
pub const MAX_LISTED_REJECTS: usize = 50;

/// Shortest batch id prefix accepted for `--batch`.
pub const MIN_PREFIX: usize = 6;

/// Why a report could not be made. Display is this layer's sentence; the cause is the
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `ca.db` could not be opened.
    #[error(transparent)]
    Open(DbError),
    /// SQLite failed while reading.
    #[error("CA database error (check that ca.db is not in use by another nrfca)")]
    Db(#[from] rusqlite::Error),
    /// `ca.pem` could not be loaded.
    #[error(transparent)]
    Ca(CaFileError),
    /// Verifying the audit chain could not run.
    #[error(transparent)]
    Audit(AuditError),
    /// The CA has not committed any batch yet.
    #[error("this CA has not signed any batch yet; run `nrfca sign` first")]
    NoBatches,
    /// No batch has this id (or prefix).
    #[error("no batch `{0}` in this CA; list the batches with `nrfca audit report --list`")]
    UnknownBatch(String),
    /// Several batches start with this prefix.
    #[error("`{0}` matches {n} batches ({list}); give more of the id", n = .1.len(), list = .1.join(", "))]
    Ambiguous(String, Vec<String>),
}

/// One line of `audit report --list`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    /// Batch id.
    pub batch: String,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// When it was committed.
    pub committed_at: Option<String>,
    /// Who ran `sign`.
    pub operator: String,
    /// New certificates.
    pub issued: u64,
    /// Stored certificates given back.
    pub returned: u64,
    /// Rejected requests.
    pub rejected: u64,
}

/// The CA that signed the batch.
#[derive(Debug, Clone, Serialize)]
pub struct CaPart {
    /// Subject (RFC 4514, most specific first).
    pub subject: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// The CA's end of validity.
    pub not_after: String,
}

/// Batch counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Requests read.
    pub requests: u64,
    /// New certificates.
    pub issued: u64,
    /// Of which issued under `--reissue` to a device that already had one.
    pub reissued: u64,
    /// Stored certificates given back for identical re-submitted requests.
    pub returned: u64,
    /// Rejected requests.
    pub rejected: u64,
}

/// One rejected request.
#[derive(Debug, Clone, Serialize)]
pub struct RejectRow {
    /// Requests file as named to `sign`.
    pub source: String,
    /// 1-based line where the request starts.
    pub line: u64,
    /// Attested or claimed device UUID, if known.
    pub device_uuid: Option<String>,
    /// Stable reject code.
    pub code: String,
    /// Human explanation.
    pub detail: String,
}

/// Where the batch sits in the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPart {
    /// First and last record carrying this batch id.
    pub first_seq: u64,
    /// Last record carrying this batch id.
    pub last_seq: u64,
    /// The `key-unlocked` record of the session that signed the batch.
    pub unlocked_seq: Option<u64>,
    /// How the key was unlocked (`passphrase` / `identity`).
    pub unlock_method: Option<String>,
    /// The checkpoint that signs the batch: its seq, and the head it signs.
    pub checkpoint_seq: Option<u64>,
    /// Seq of the record the checkpoint signs (`batch-committed`).
    pub signed_head_seq: Option<u64>,
    /// Hash of that record.
    pub signed_head_hash: Option<String>,
    /// The head right after the batch (the checkpoint after `bundle-written`, else the last
    /// batch record): what `sign` printed as "audit head".
    pub head_after_seq: u64,
    /// Hash of that record.
    pub head_after_hash: String,
    /// The log now: record count.
    pub records: u64,
    /// The log now: head hash.
    pub head_hash: String,
    /// Whether `audit verify` passes now.
    pub verified: bool,
    /// The first problem `audit verify` found, if any.
    pub first_bad: Option<Finding>,
    /// The CA-signed Merkle checkpoint of the log as the batch committed it (SPEC §11): the
    /// exact `checkpoint` text, as in the bundle (None in a log from before checkpoints).
    pub checkpoint: Option<String>,
    /// Its signature (`checkpoint.sig`: base64 DER ECDSA-SHA256 by the CA key).
    pub checkpoint_sig: Option<String>,
}

/// The bundle the batch wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BundlePart {
    /// The `--out` path as given to `sign`.
    pub path: String,
    /// SHA-256 of its `manifest.json`.
    pub manifest_sha256: String,
}

/// Everything the printable report says about one batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Batch id.
    pub batch: String,
    /// Who ran `sign` (`--operator` or `$USER`).
    pub operator: String,
    /// When the batch started.
    pub started_at: String,
    /// When it was committed.
    pub committed_at: Option<String>,
    /// The signing CA.
    pub ca: CaPart,
    /// The `sign` settings recorded in `batch-started` (days, sec_tag, device_id, validity…).
    pub settings: BTreeMap<String, Value>,
    /// Each requests file and its SHA-256.
    pub inputs: Vec<FileDigest>,
    /// Counts.
    pub counts: Counts,
    /// Rejects per code.
    pub rejects_by_code: BTreeMap<String, u64>,
    /// The first [`MAX_LISTED_REJECTS`] rejects, in input order.
    pub rejects: Vec<RejectRow>,
    /// The bundle, once written.
    pub bundle: Option<BundlePart>,
    /// The audit trail of the batch and the state of the log now.
    pub audit: AuditPart,
    /// When this report was made.
    pub generated_at: String,
}

fn open(ca_dir: &Path) -> Result<Connection, ReportError> {
    db::open_existing(&ca_dir.join(ca::CA_DB)).map_err(ReportError::Open)
}

/// One audit record of a batch, as read for the report: seq, time, operator, event, details.
struct BatchRecord {
    seq: u64,
    time: String,
    operator: String,
    event: String,
    details: Value,
}

impl From<db::audit::RawRecord> for BatchRecord {
    fn from(r: db::audit::RawRecord) -> Self {
        BatchRecord {
            seq: r.seq.max(0) as u64,
            time: r.time,
            operator: r.operator,
            event: r.event,
            details: serde_json::from_str(&r.details).unwrap_or(Value::Null),
        }
    }
}

fn batch_records(raw: Vec<db::audit::RawRecord>) -> Vec<BatchRecord> {
    raw.into_iter().map(BatchRecord::from).collect()
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Every batch of the CA, oldest first, from the chained `batch-started` and
/// `batch-committed` records (not the unchained `batches` table).
pub fn list_batches(ca_dir: &Path) -> Result<Vec<BatchSummary>, ReportError> {
    let conn = open(ca_dir)?;
    chained_batches(&conn)
}

fn chained_batches(conn: &Connection) -> Result<Vec<BatchSummary>, ReportError> {
    let records = batch_records(db::audit::of_events(
        conn,
        &["batch-started", "batch-committed"],
    )?);
    let mut out: Vec<BatchSummary> = Vec::new();
    for r in records {
        let batch = str_of(&r.details, "batch");
        if r.event == "batch-started" {
            if !batch.is_empty() && !out.iter().any(|b| b.batch == batch) {
                out.push(BatchSummary {
                    batch,
                    started_at: r.time,
                    committed_at: None,
                    operator: r.operator,
                    issued: 0,
                    returned: 0,
                    rejected: 0,
                });
            }
        } else if let Some(b) = out
            .iter_mut()
            .find(|b| b.batch == batch && b.committed_at.is_none())
        {
            b.committed_at = Some(r.time);
            b.issued = u64_of(&r.details, "issued");
            b.returned = u64_of(&r.details, "returned");
            b.rejected = u64_of(&r.details, "rejected");
        }
    }
    Ok(out)
}

/// The batch id `wanted` names: `None` = the latest batch; else an exact id or a unique
/// prefix of at least [`MIN_PREFIX`] characters.
fn resolve(conn: &Connection, wanted: Option<&str>) -> Result<String, ReportError> {
    let ids: Vec<String> = chained_batches(conn)?
        .into_iter()
        .map(|b| b.batch)
        .collect();
    let Some(w) = wanted.map(|w| w.trim().trim_end_matches('…').to_ascii_lowercase()) else {
        return ids.into_iter().last().ok_or(ReportError::NoBatches);
    };
    if ids.contains(&w) {
        return Ok(w);
    }
    if w.len() < MIN_PREFIX || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReportError::UnknownBatch(w));
    }
    let matching: Vec<String> = ids.into_iter().filter(|id| id.starts_with(&w)).collect();
    match matching.len() {
        0 => Err(ReportError::UnknownBatch(w)),
        1 => Ok(matching.into_iter().next().unwrap_or_default()),
        _ => Err(ReportError::Ambiguous(w, matching)),
    }
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The report of batch `wanted` (`None` = the latest) of the CA in `ca_dir`, with the audit
/// log verified now (`audit.verified`; a failed verification is reported, not an error).
///
/// Everything it states about the batch comes from the audit records that `audit verify`
/// checks (SPEC §5): operator and times from `batch-started`/`batch-committed`, inputs and
/// counts from `batch-committed`, reissues from `certificate-issued`, rejects from
/// `request-rejected`, the bundle from `bundle-written`; never from the `batches` or
/// `rejects` tables, which the chain does not cover. One read transaction, so the records
/// read and the records verified are the same.
pub fn batch_report(ca_dir: &Path, wanted: Option<&str>) -> Result<BatchReport, ReportError> {
    let cert = ca::load_cert(ca_dir).map_err(ReportError::Ca)?;
    let conn = open(ca_dir)?;
    let tx = db::begin_read(&conn)?;
    let conn: &Connection = &tx;
    let batch = resolve(conn, wanted)?;

    let records = batch_records(db::audit::of_batch(conn, &batch)?);
    let first = |event: &str| records.iter().find(|r| r.event == event);
    let started = first("batch-started");
    let committed = first("batch-committed");
    let written = first("bundle-written");

    let mut settings = BTreeMap::new();
    if let Some(Value::Object(map)) = started.map(|r| &r.details) {
        for (k, v) in map {
            if k != "batch" && k != "inputs" {
                settings.insert(k.clone(), v.clone());
            }
        }
    }
    let inputs: Vec<FileDigest> = committed
        .and_then(|r| serde_json::from_value(r.details.get("inputs")?.clone()).ok())
        .unwrap_or_default();

    let count = |event: &str| records.iter().filter(|r| r.event == event).count() as u64;
    let reissued = records
        .iter()
        .filter(|r| {
            r.event == "certificate-issued"
                && r.details.get("reissue").and_then(Value::as_bool) == Some(true)
        })
        .count() as u64;
    let counts = match committed {
        Some(c) => Counts {
            requests: u64_of(&c.details, "requests"),
            issued: u64_of(&c.details, "issued"),
            reissued,
            returned: u64_of(&c.details, "returned"),
            rejected: u64_of(&c.details, "rejected"),
        },
        None => {
            let (issued, returned, rejected) = (
                count("certificate-issued"),
                count("certificate-returned"),
                count("request-rejected"),
            );
            Counts {
                requests: issued + returned + rejected,
                issued,
                reissued,
                returned,
                rejected,
            }
        }
    };

    // batch-committed counts every reject by code (past sign::MAX_RECORDED_REJECTS not every
    // reject has a record of its own); a batch without that count (older nrfca, or not
    // committed) is counted from its request-rejected records.
    let committed_by_code: Option<BTreeMap<String, u64>> = committed
        .and_then(|c| c.details.get("rejected_by_code"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        });
    let mut counted = BTreeMap::new();
    let mut rejects = Vec::new();
    for r in records.iter().filter(|r| r.event == "request-rejected") {
        if committed_by_code.is_none() {
            *counted.entry(str_of(&r.details, "code")).or_insert(0u64) += 1;
        }
        if rejects.len() < MAX_LISTED_REJECTS {
            rejects.push(RejectRow {
                source: str_of(&r.details, "source"),
                line: u64_of(&r.details, "line"),
                device_uuid: r
                    .details
                    .get("device_uuid")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                code: str_of(&r.details, "code"),
                detail: str_of(&r.details, "detail"),
            });
        }
    }

    let rejects_by_code = committed_by_code.unwrap_or(counted);

    let bundle = written.map(|r| BundlePart {
        path: str_of(&r.details, "path"),
        manifest_sha256: str_of(&r.details, "manifest_sha256"),
    });

    let first_seq = records.first().map_or(0, |r| r.seq);
    let last_seq = records.last().map_or(0, |r| r.seq);
    let unlocked =
        db::audit::last_before(conn, "key-unlocked", first_seq as i64)?.map(BatchRecord::from);
    let unlock_method = unlocked
        .as_ref()
        .and_then(|r| r.details.get("method")?.as_str().map(str::to_string));
    let checkpoint = match committed {
        Some(c) => db::audit::first_after(conn, "checkpoint", c.seq as i64)?.map(BatchRecord::from),
        None => None,
    };

    let merkle = match checkpoint.as_ref() {
        Some(cp) => audit::tree::first_covering(conn, cp.seq).map_err(ReportError::Audit)?,
        None => None,
    };

    let (head_after_seq, head_after_hash) =
        db::audit::head_after(conn, last_seq as i64)?.unwrap_or((0, String::new()));

    let verify = audit::verify_conn(conn, &cert.public_key, &cert.fingerprint)
        .map_err(ReportError::Audit)?;

    Ok(BatchReport {
        operator: started.map(|r| r.operator.clone()).unwrap_or_default(),
        started_at: started.map(|r| r.time.clone()).unwrap_or_default(),
        committed_at: committed.map(|r| r.time.clone()),
        batch,
        ca: CaPart {
            subject: cert.subject.clone(),
            fingerprint: cert.fingerprint.clone(),
            not_after: cert
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        },
        settings,
        inputs,
        counts,
        rejects_by_code,
        rejects,
        bundle,
        audit: AuditPart {
            first_seq,
            last_seq,
            unlocked_seq: unlocked.as_ref().map(|r| r.seq),
            unlock_method,
            checkpoint_seq: checkpoint.as_ref().map(|r| r.seq),
            signed_head_seq: checkpoint
                .as_ref()
                .and_then(|r| r.details.get("head_seq")?.as_u64()),
            signed_head_hash: checkpoint
                .as_ref()
                .and_then(|r| r.details.get("head_hash")?.as_str().map(str::to_string)),
            head_after_seq: head_after_seq.max(0) as u64,
            head_after_hash,
            records: verify.records,
            head_hash: verify.head_hash.clone(),
            verified: verify.first_bad.is_none(),
            checkpoint: merkle.as_ref().map(|m| m.text.clone()),
            checkpoint_sig: merkle.as_ref().map(|m| m.sig_file().trim_end().to_string()),
            first_bad: verify.first_bad,
        },
        generated_at: audit::now_rfc3339(),
    })
}

/// A setting from `batch-started` as text (`any` for a null sec_tag).
fn setting(r: &BatchReport, key: &str) -> String {
    match r.settings.get(key) {
        None => "-".to_string(),
        Some(Value::Null) => "any".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// One `  key   value` line of the report; the value is escaped for the terminal (it may
/// come from a request or the database).
fn kv(out: &mut String, k: &str, v: &str) {
    out.push_str(&format!("  {k:<20} {}\n", term_escape(v)));
}

/// The report as plain text for printing (80 columns, no colour), with lines for the
/// officer's and a witness's signatures. Every string from a request or the database passes
/// through [`term_escape`]: no control character but the line ends reaches the terminal.
pub fn render_text(r: &BatchReport) -> String {
    let rule = "=".repeat(78);
    let mut out = format!("{rule}\nnrfca batch report\n{rule}\n");
    kv(&mut out, "batch", &r.batch);
    kv(&mut out, "operator", &r.operator);
    kv(&mut out, "started", &r.started_at);
    kv(
        &mut out,
        "committed",
        r.committed_at.as_deref().unwrap_or("-"),
    );

    out.push_str("\nCertificate authority\n");
    kv(&mut out, "subject", &r.ca.subject);
    kv(&mut out, "sha256 fingerprint", &r.ca.fingerprint);
    kv(&mut out, "valid until", &r.ca.not_after);
    if let (Some(seq), Some(m)) = (r.audit.unlocked_seq, &r.audit.unlock_method) {
        kv(
            &mut out,
            "key unlocked",
            &format!("by {m} (audit record #{seq})"),
        );
    }

    out.push_str("\nSettings\n");
    kv(&mut out, "device id", &setting(r, "device_id"));
    kv(&mut out, "sec_tag", &setting(r, "sec_tag"));
    kv(&mut out, "validity (days)", &setting(r, "days"));
    kv(&mut out, "not before", &setting(r, "not_before"));
    kv(&mut out, "not after", &setting(r, "not_after"));
    kv(&mut out, "reissue allowed", &setting(r, "reissue"));

    out.push_str("\nInputs (SHA-256 of every byte read)\n");
    if r.inputs.is_empty() {
        out.push_str("  (none recorded)\n");
    }
    for i in &r.inputs {
        out.push_str(&format!(
            "  {}  {}\n",
            term_escape(&i.sha256),
            term_escape(&i.name)
        ));
    }

    out.push_str("\nCounts\n");
    let c = &r.counts;
    kv(&mut out, "requests", &c.requests.to_string());
    let issued = if c.reissued > 0 {
        format!("{} ({} reissued)", c.issued, c.reissued)
    } else {
        c.issued.to_string()
    };
    kv(&mut out, "issued", &issued);
    kv(
        &mut out,
        "returned",
        &format!("{} (identical requests signed before)", c.returned),
    );
    kv(&mut out, "rejected", &c.rejected.to_string());
    for (code, n) in &r.rejects_by_code {
        out.push_str(&format!("    {:<24} {n}\n", term_escape(code)));
    }

    if !r.rejects.is_empty() {
        out.push_str(&format!(
            "\nRejected requests{}\n",
            if (r.rejects.len() as u64) < c.rejected {
                format!(
                    " (first {} of {}; all in rejects.csv)",
                    r.rejects.len(),
                    c.rejected
                )
            } else {
                String::new()
            }
        ));
        for x in &r.rejects {
            out.push_str(&format!(
                "  {}:{}  {}  {}\n",
                term_escape(&x.source),
                x.line,
                term_escape(&x.code),
                term_escape(x.device_uuid.as_deref().unwrap_or("-"))
            ));
        }
    }

    out.push_str("\nBundle\n");
    match &r.bundle {
        Some(b) => {
            kv(&mut out, "directory", &b.path);
            kv(&mut out, "manifest.json sha256", &b.manifest_sha256);
        }
        None => kv(
            &mut out,
            "directory",
            "(not recorded: re-run the same sign to write it)",
        ),
    }

    out.push_str("\nAudit log\n");
    let a = &r.audit;
    kv(
        &mut out,
        "batch records",
        &format!("#{} to #{}", a.first_seq, a.last_seq),
    );
    if let (Some(cp), Some(hs), Some(hh)) =
        (a.checkpoint_seq, a.signed_head_seq, &a.signed_head_hash)
    {
        kv(
            &mut out,
            "signed by the CA",
            &format!("checkpoint #{cp} over record #{hs}"),
        );
        kv(&mut out, "signed head hash", hh);
    }
    kv(
        &mut out,
        "head after batch",
        &format!("#{} {}", a.head_after_seq, a.head_after_hash),
    );
    kv(
        &mut out,
        "head now",
        &format!("#{} {}", a.records, a.head_hash),
    );
    let verdict = match &a.first_bad {
        None => "intact (chain, checkpoints, certificates agree)".to_string(),
        Some(f) => format!("BROKEN at record #{}: {}", f.seq, f.problem),
    };
    kv(&mut out, "verified", &verdict);
    if let (Some(text), Some(sig)) = (&a.checkpoint, &a.checkpoint_sig) {
        out.push_str(
            "\nCheckpoint (the log as committed; an auditor checks that later logs extend it:\n",
        );
        out.push_str(
            "nrfca audit verify --ca-dir D --checkpoint FILE with these three lines as FILE)\n",
        );
        for line in text.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str(&format!("  signature {sig}\n"));
    }

    out.push_str(&format!("\nReport made {}\n\n", r.generated_at));
    out.push_str("Security officer  ______________________________  date __________\n\n");
    out.push_str("Witness           ______________________________  date __________\n");
    out
}

#[cfg(all(test, feature = "bench"))]
mod tests {
    use super::*;
    use crate::signer::ca::{self, InitOptions};
    use crate::signer::secret::{Protection, Unlock};
    use crate::signer::sign::{self, SignOptions};
    use crate::sim::generate::{write_requests, BatchOptions};

    /// A CA (age recipient, so no scrypt) with two committed batches: 3 good requests, then
    /// the same 3 again (returned) plus one line that is not a KEYGEN string.
    fn ca_with_batches() -> (tempfile::TempDir, std::path::PathBuf, Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let id_file = dir.path().join("id.agekey");
        {
            use age::secrecy::ExposeSecret;
            std::fs::write(&id_file, format!("{}\n", id.to_string().expose_secret())).unwrap();
        }
        std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ca_dir = dir.path().join("ca");
        ca::init(
            &ca_dir,
            &InitOptions {
                subject: "CN=Report Test CA".into(),
                days: ca::DEFAULT_DAYS, // longer than sign's 3650-day certificates
                protection: Protection::Recipients(vec![id.to_public().to_string()]),
                operator: "alice".into(),
            },
        )
        .unwrap();
        let good = dir.path().join("requests.csv");
        let mut buf = Vec::new();
        write_requests(
            &mut buf,
            &BatchOptions {
                count: 3,
                ..BatchOptions::default()
            },
            &mut |_| {},
        )
        .unwrap();
        std::fs::write(&good, buf).unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "not-a-keygen-string\n").unwrap();
        let unlock = Unlock::Identity(id_file);
        let mut batches = Vec::new();
        for (out, inputs) in [("b1", vec![good.clone()]), ("b2", vec![good, bad])] {
            let opts = SignOptions::new(dir.path().join(out), inputs, "alice".into());
            let r = sign::sign(&ca_dir, &unlock, &opts, &mut |_| {}).unwrap();
            batches.push(r.batch);
        }
        (dir, ca_dir, batches)
    }

    #[test]
    fn report_of_latest_and_by_prefix() {
        let (_dir, ca_dir, batches) = ca_with_batches();
        let list = list_batches(&ca_dir).unwrap();
        assert_eq!(
            list.iter().map(|b| b.batch.clone()).collect::<Vec<_>>(),
            batches
        );

        let latest = batch_report(&ca_dir, None).unwrap();
        assert_eq!(latest.batch, batches[1]);
        assert_eq!(latest.operator, "alice");
        assert_eq!(latest.counts.requests, 4);
        assert_eq!(latest.counts.issued, 0);
        assert_eq!(latest.counts.returned, 3);
        assert_eq!(latest.counts.rejected, 1);
        assert_eq!(latest.rejects_by_code.get("missing-attestation"), Some(&1));
        assert_eq!(latest.rejects.len(), 1);
        assert_eq!(latest.rejects[0].line, 1);
        assert_eq!(latest.inputs.len(), 2);
        assert!(latest.audit.verified, "{:?}", latest.audit.first_bad);
        assert!(latest
            .bundle
            .as_ref()
            .is_some_and(|b| b.path.ends_with("b2")));
        // The head after the batch is the log's head: nothing was appended since.
        assert_eq!(latest.audit.head_after_seq, latest.audit.records);
        assert_eq!(latest.audit.head_after_hash, latest.audit.head_hash);

        let first = batch_report(&ca_dir, Some(&batches[0][..8])).unwrap();
        assert_eq!(first.batch, batches[0]);
        assert_eq!(first.counts.issued, 3);
        assert!(first.audit.head_after_seq < first.audit.records);

        let text = render_text(&first);
        for needle in [
            batches[0].as_str(),
            "CN=Report Test CA",
            "requests.csv",
            "intact",
            "Security officer",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn unknown_short_and_missing_batches_are_errors() {
        let (_dir, ca_dir, _) = ca_with_batches();
        assert!(matches!(
            batch_report(&ca_dir, Some("ffffffffffff")),
            Err(ReportError::UnknownBatch(_))
        ));
        // Too short to be taken as a prefix.
        assert!(matches!(
            batch_report(&ca_dir, Some("ab")),
            Err(ReportError::UnknownBatch(_))
        ));
        assert!(matches!(
            batch_report(&ca_dir.join("nowhere"), None),
            Err(ReportError::Ca(_))
        ));
    }
}
