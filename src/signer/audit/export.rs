//! `audit show` (records matching a filter) and `audit export` (every record to a new file,
//! JSONL or CSV, then an `audit-exported` record).

use super::verify::raw_to_record;
use super::*;
use crate::signer::ca_files as ca;
use std::io::Write;

/// What to select in [`show`]. Empty filter = every record.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records about this device: details `device_id`, `uuid`, `device_uuid` or `imei` equal
    /// to it, or a `serial` of a certificate issued to that UUID or IMEI.
    pub device: Option<String>,
    /// Records of this batch (details `batch`).
    pub batch: Option<String>,
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records at or before this time.
    pub until: Option<OffsetDateTime>,
    /// Records with this event name.
    pub event: Option<String>,
}

/// Records of `ca_dir/ca.db` matching `filter`, in seq order. Does not verify; run
/// [`verify_db`] for that.
pub fn show(ca_dir: &Path, filter: &Filter) -> Result<Vec<Record>, AuditError> {
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let since = filter.since.map(format_time);
    let until = filter.until.map(format_time);
    let sel = db::audit::Selection {
        device: filter.device.as_deref(),
        batch: filter.batch.as_deref(),
        event: filter.event.as_deref(),
        since: since.as_deref(),
        until: until.as_deref(),
    };
    let mut out = Vec::new();
    db::audit::select::<AuditError>(&conn, &sel, |row| {
        out.push(raw_to_record(row?).map_err(AuditError::Corrupt)?);
        Ok(())
    })?;
    Ok(out)
}

/// Export file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One canonical JSON record per line (LF).
    Jsonl,
    /// CSV with header `seq,time,operator,event,details,prev_hash,hash`.
    Csv,
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The file written.
    pub out: PathBuf,
    /// Its format.
    pub format: ExportFormat,
    /// Records in the file.
    pub records: u64,
    /// Hash of the last record in the file.
    pub head_hash: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Seq of the `audit-exported` record appended to ca.db after the file was written.
    pub export_record_seq: u64,
}

enum Sink<'a, W: Write> {
    Csv(Box<csv::Writer<&'a mut W>>),
    Jsonl(&'a mut W),
}

struct HashingWriter<W: Write> {
    inner: W,
    ctx: ring::digest::Context,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write every record of `ca_dir/ca.db` to `out` (new file, never overwritten), then append an
/// `audit-exported` record (out path, format, records, head seq/hash, file SHA-256) to ca.db in
/// the same write transaction. The export record is therefore not in the file it describes:
/// it is the next record after the file's head. On any failure the file is removed.
pub fn export(
    ca_dir: &Path,
    out: &Path,
    format: ExportFormat,
    operator: &str,
) -> Result<ExportSummary, AuditError> {
    let mut conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let tx = db::begin_immediate(&mut conn)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AuditError::Exists(out.to_path_buf())
            } else {
                io_err(out)(e)
            }
        })?;
    let result = (|| -> Result<ExportSummary, AuditError> {
        let mut w = HashingWriter {
            inner: io::BufWriter::new(file),
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        };
        let mut records = 0u64;
        let mut head_hash = GENESIS_HASH.to_string();
        let mut head_seq = 0u64;
        {
            let mut sink = match format {
                ExportFormat::Csv => {
                    let mut c = csv::WriterBuilder::new()
                        .terminator(csv::Terminator::Any(b'\n'))
                        .from_writer(&mut w);
                    c.write_record(CSV_HEADER)
                        .map_err(|e| io_err(out)(e.into()))?;
                    Sink::Csv(Box::new(c))
                }
                ExportFormat::Jsonl => Sink::Jsonl(&mut w),
            };
            db::audit::for_each::<AuditError>(&tx, |row| {
                let rec = raw_to_record(row?).map_err(AuditError::Corrupt)?;
                match &mut sink {
                    Sink::Csv(c) => c
                        .write_record(rec.to_csv_fields())
                        .map_err(|e| io_err(out)(e.into()))?,
                    Sink::Jsonl(j) => {
                        let mut line = rec.to_export_json();
                        line.push('\n');
                        j.write_all(line.as_bytes()).map_err(io_err(out))?;
                    }
                }
                records += 1;
                head_seq = rec.seq;
                head_hash = rec.hash;
                Ok(())
            })?;
            if let Sink::Csv(mut c) = sink {
                c.flush().map_err(io_err(out))?;
            }
        }
        w.flush().map_err(io_err(out))?;
        let HashingWriter { inner, ctx } = w;
        let file = inner
            .into_inner()
            .map_err(|e| io_err(out)(e.into_error()))?;
        file.sync_all().map_err(io_err(out))?;
        let sha256 = hex::encode(ctx.finish().as_ref());
        let mut audit = AuditWriter::new(&tx, operator)?;
        let export_record_seq = audit.append(
            &tx,
            "audit-exported",
            &serde_json::json!({
                "out": out.display().to_string(),
                "format": format.name(),
                "records": records,
                "head_seq": head_seq,
                "head_hash": head_hash,
                "sha256": sha256,
            }),
        )?;
        Ok(ExportSummary {
            out: out.to_path_buf(),
            format,
            records,
            head_hash,
            sha256,
            export_record_seq,
        })
    })();
    match result {
        Ok(summary) => match tx.commit() {
            Ok(()) => Ok(summary),
            Err(e) => {
                let _ = std::fs::remove_file(out);
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}
