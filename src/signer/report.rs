//! The printable batch report (`nrfca audit report`): what one committed batch did, read back
//! from `ca.db` (batches, certificates, rejects, audit records) and checked against the audit
//! chain, for the officer to file with the ceremony record. Read-only; never prints.

use crate::bundle::FileDigest;
use crate::signer::audit::{self, AuditError, Finding};
use crate::signer::ca::{self, CaError};
use crate::signer::db::{self, DbError};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// How many reject rows a report lists one by one (all of them are counted by code).
pub const MAX_LISTED_REJECTS: usize = 50;

/// Shortest batch id prefix accepted for `--batch`.
pub const MIN_PREFIX: usize = 6;

/// Why a report could not be made.
#[derive(Debug)]
pub enum ReportError {
    /// `ca.db` could not be opened.
    Open(DbError),
    /// SQLite failed while reading.
    Db(rusqlite::Error),
    /// `ca.pem` could not be loaded.
    Ca(CaError),
    /// Verifying the audit chain could not run.
    Audit(AuditError),
    /// The CA has not committed any batch yet.
    NoBatches,
    /// No batch has this id (or prefix).
    UnknownBatch(String),
    /// Several batches start with this prefix.
    Ambiguous(String, Vec<String>),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Open(e) => write!(f, "{e}"),
            ReportError::Db(e) => write!(
                f,
                "CA database error: {e}; check that ca.db is not in use by another nrfca"
            ),
            ReportError::Ca(e) => write!(f, "{e}"),
            ReportError::Audit(e) => write!(f, "{e}"),
            ReportError::NoBatches => write!(
                f,
                "this CA has not signed any batch yet; run `nrfca sign` first"
            ),
            ReportError::UnknownBatch(b) => write!(
                f,
                "no batch `{b}` in this CA; list the batches with `nrfca audit report --list`"
            ),
            ReportError::Ambiguous(b, ids) => write!(
                f,
                "`{b}` matches {} batches ({}); give more of the id",
                ids.len(),
                ids.join(", ")
            ),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Open(e) => e.source(),
            ReportError::Ca(e) => e.source(),
            ReportError::Audit(e) => e.source(),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for ReportError {
    fn from(e: rusqlite::Error) -> Self {
        ReportError::Db(e)
    }
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

/// Every batch of the CA, oldest first.
pub fn list_batches(ca_dir: &Path) -> Result<Vec<BatchSummary>, ReportError> {
    let conn = open(ca_dir)?;
    let mut stmt = conn.prepare(
        "SELECT id, started_at, committed_at, operator, issued, returned, rejected \
         FROM batches ORDER BY started_at, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(BatchSummary {
            batch: r.get(0)?,
            started_at: r.get(1)?,
            committed_at: r.get(2)?,
            operator: r.get(3)?,
            issued: r.get::<_, i64>(4)?.max(0) as u64,
            returned: r.get::<_, i64>(5)?.max(0) as u64,
            rejected: r.get::<_, i64>(6)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The batch id `wanted` names: `None` = the latest batch; else an exact id or a unique
/// prefix of at least [`MIN_PREFIX`] characters.
fn resolve(conn: &Connection, wanted: Option<&str>) -> Result<String, ReportError> {
    let Some(w) = wanted.map(|w| w.trim().trim_end_matches('…').to_ascii_lowercase()) else {
        return conn
            .query_row(
                "SELECT id FROM batches ORDER BY started_at DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(ReportError::NoBatches);
    };
    let exact: Option<String> = conn
        .query_row("SELECT id FROM batches WHERE id = ?1", [&w], |r| r.get(0))
        .optional()?;
    if let Some(id) = exact {
        return Ok(id);
    }
    if w.len() < MIN_PREFIX || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReportError::UnknownBatch(w));
    }
    let mut stmt = conn.prepare("SELECT id FROM batches WHERE substr(id, 1, ?2) = ?1")?;
    let ids: Vec<String> = stmt
        .query_map(rusqlite::params![w, w.len() as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    match ids.len() {
        0 => Err(ReportError::UnknownBatch(w)),
        1 => Ok(ids.into_iter().next().unwrap_or_default()),
        _ => Err(ReportError::Ambiguous(w, ids)),
    }
}

/// The first audit record of `event` for `batch`: (seq, details).
fn batch_record(
    conn: &Connection,
    batch: &str,
    event: &str,
) -> Result<Option<(u64, Value)>, ReportError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, details FROM audit WHERE event = ?2 \
             AND json_extract(details, '$.batch') = ?1 ORDER BY seq LIMIT 1",
            [batch, event],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(seq, d)| {
        (
            seq.max(0) as u64,
            serde_json::from_str(&d).unwrap_or(Value::Null),
        )
    }))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The report of batch `wanted` (`None` = the latest) of the CA in `ca_dir`, with the audit
/// log verified now (`audit.verified`; a failed verification is reported, not an error).
pub fn batch_report(ca_dir: &Path, wanted: Option<&str>) -> Result<BatchReport, ReportError> {
    let cert = ca::load_cert(ca_dir).map_err(ReportError::Ca)?;
    let conn = open(ca_dir)?;
    let batch = resolve(&conn, wanted)?;

    let (started_at, committed_at, operator, inputs_json, issued, returned, rejected): (
        String,
        Option<String>,
        String,
        String,
        i64,
        i64,
        i64,
    ) = conn.query_row(
        "SELECT started_at, committed_at, operator, inputs, issued, returned, rejected \
         FROM batches WHERE id = ?1",
        [&batch],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )?;
    let inputs: Vec<FileDigest> = serde_json::from_str(&inputs_json).unwrap_or_default();

    let started = batch_record(&conn, &batch, "batch-started")?;
    let committed = batch_record(&conn, &batch, "batch-committed")?;
    let written = batch_record(&conn, &batch, "bundle-written")?;

    let mut settings = BTreeMap::new();
    if let Some((_, Value::Object(map))) = &started {
        for (k, v) in map {
            if k != "batch" && k != "inputs" {
                settings.insert(k.clone(), v.clone());
            }
        }
    }

    let reissued: i64 = conn.query_row(
        "SELECT COUNT(*) FROM certificates WHERE batch_id = ?1 AND reissue != 0",
        [&batch],
        |r| r.get(0),
    )?;
    let requests = committed
        .as_ref()
        .map(|(_, d)| u64_of(d, "requests"))
        .unwrap_or((issued + returned + rejected).max(0) as u64);
    let counts = Counts {
        requests,
        issued: issued.max(0) as u64,
        reissued: reissued.max(0) as u64,
        returned: returned.max(0) as u64,
        rejected: rejected.max(0) as u64,
    };

    let mut rejects_by_code = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT code, COUNT(*) FROM rejects WHERE batch_id = ?1 GROUP BY code ORDER BY code",
        )?;
        let rows = stmt.query_map([&batch], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (code, n) = row?;
            rejects_by_code.insert(code, n.max(0) as u64);
        }
    }
    let rejects: Vec<RejectRow> = {
        let mut stmt = conn.prepare(
            "SELECT source, line, device_uuid, code, detail FROM rejects WHERE batch_id = ?1 \
             ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(rusqlite::params![batch, MAX_LISTED_REJECTS as i64], |r| {
            Ok(RejectRow {
                source: r.get(0)?,
                line: r.get::<_, i64>(1)?.max(0) as u64,
                device_uuid: r.get(2)?,
                code: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };

    let bundle = written.as_ref().map(|(_, d)| BundlePart {
        path: d
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        manifest_sha256: d
            .get("manifest_sha256")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    });

    let (first_seq, last_seq): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT MIN(seq), MAX(seq) FROM audit WHERE json_extract(details, '$.batch') = ?1",
        [&batch],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let first_seq = first_seq.unwrap_or(0).max(0) as u64;
    let last_seq = last_seq.unwrap_or(0).max(0) as u64;
    let unlocked: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, details FROM audit WHERE event = 'key-unlocked' AND seq < ?1 \
             ORDER BY seq DESC LIMIT 1",
            [first_seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let unlock_method = unlocked.as_ref().and_then(|(_, d)| {
        serde_json::from_str::<Value>(d)
            .ok()
            .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_string))
    });
    let checkpoint: Option<(i64, String)> = match &committed {
        Some((seq, _)) => conn
            .query_row(
                "SELECT seq, details FROM audit WHERE event = 'checkpoint' AND seq > ?1 \
                 ORDER BY seq LIMIT 1",
                [*seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        None => None,
    };
    let cp_details = checkpoint
        .as_ref()
        .and_then(|(_, d)| serde_json::from_str::<Value>(d).ok());

    let (head_after_seq, head_after_hash): (i64, String) = conn
        .query_row(
            "SELECT seq, hash FROM audit WHERE (seq = ?1 + 1 AND event = 'checkpoint') OR seq = ?1 \
             ORDER BY seq DESC LIMIT 1",
            [last_seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, String::new()));

    let verify = audit::verify_conn(&conn, &cert.public_key, &cert.fingerprint)
        .map_err(ReportError::Audit)?;

    Ok(BatchReport {
        batch,
        operator,
        started_at,
        committed_at,
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
            unlocked_seq: unlocked.map(|(s, _)| s.max(0) as u64),
            unlock_method,
            checkpoint_seq: checkpoint.as_ref().map(|(s, _)| (*s).max(0) as u64),
            signed_head_seq: cp_details
                .as_ref()
                .and_then(|d| d.get("head_seq")?.as_u64()),
            signed_head_hash: cp_details
                .as_ref()
                .and_then(|d| d.get("head_hash")?.as_str().map(str::to_string)),
            head_after_seq: head_after_seq.max(0) as u64,
            head_after_hash,
            records: verify.records,
            head_hash: verify.head_hash.clone(),
            verified: verify.first_bad.is_none(),
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

/// One `  key   value` line of the report.
fn kv(out: &mut String, k: &str, v: &str) {
    out.push_str(&format!("  {k:<20} {v}\n"));
}

/// The report as plain text for printing (80 columns, no colour), with lines for the
/// officer's and a witness's signatures.
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
        out.push_str(&format!("  {}  {}\n", i.sha256, i.name));
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
        out.push_str(&format!("    {code:<24} {n}\n"));
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
                x.source,
                x.line,
                x.code,
                x.device_uuid.as_deref().unwrap_or("-")
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

    out.push_str(&format!("\nReport made {}\n\n", r.generated_at));
    out.push_str("Security officer  ______________________________  date __________\n\n");
    out.push_str("Witness           ______________________________  date __________\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::generate::{write_requests, BatchOptions};
    use crate::signer::ca::InitOptions;
    use crate::signer::secret::{Protection, Unlock};
    use crate::signer::sign::{self, SignOptions};

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
