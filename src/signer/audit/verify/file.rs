//! The exported-file front end of `audit verify`: JSONL or CSV read line by line (with a line
//! length limit), each line the canonical form of its record, walked like the database.

use super::walk::Verifier;
use super::*;
use crate::signer::ca_files as ca;
use std::io::{BufRead, BufReader};

/// [`verify_file`], and that the exported log extends every `given` checkpoint (its leaves
/// are the records' `hash` fields, in file order).
pub fn verify_file_with(
    log: &Path,
    ca_cert_pem: &Path,
    given: &[super::tree::GivenCheckpoint],
) -> Result<VerifyReport, AuditError> {
    let mut report = verify_file(log, ca_cert_pem)?;
    if given.is_empty() {
        return Ok(report);
    }
    let origin = crate::checkpoint::origin_for(&report.ca_fingerprint);
    super::tree::check_given_origins(&origin, given)?;
    let leaves = file_leaves(log)?;
    let findings = super::tree::check_given(&origin, || leaves.clone(), leaves.len() as u64, given);
    merge_findings(&mut report, findings, Vec::new());
    Ok(report)
}

/// The `hash` of every record of an exported log (JSONL or CSV), in file order; lines that do
/// not parse are skipped (the chain check reports them).
fn file_leaves(log: &Path) -> Result<Vec<[u8; 32]>, AuditError> {
    let bytes = std::fs::read(log).map_err(io_err(log))?;
    let mut out = Vec::new();
    let mut push = |h: &str| {
        let mut b = [0u8; 32];
        if hex::decode_to_slice(h, &mut b).is_ok() {
            out.push(b);
        }
    };
    if bytes.first() == Some(&b'{') {
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                if let Some(h) = v.get("hash").and_then(Value::as_str) {
                    push(h);
                }
            }
        }
    } else {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(&bytes[..]);
        for rec in r.records().flatten() {
            if let Some(h) = rec.get(6) {
                push(h);
            }
        }
    }
    Ok(out)
}

/// Verify an exported log (JSONL or CSV, detected from the first byte) against a CA
/// certificate PEM file. Every line must be the canonical form of its record (JSONL: the
/// exact bytes; CSV: `seq` and `details` as the chain hashes them). An empty log, a log
/// without any checkpoint, and batch or certificate events after the last checkpoint
/// ([`CHECKPOINTED_EVENTS`]) are findings. A log cut exactly after a checkpoint cannot be
/// told from a complete one by the file alone; compare `records`/`head_hash` with
/// `nrfca audit verify --ca-dir`.
pub fn verify_file(log: &Path, ca_cert_pem: &Path) -> Result<VerifyReport, AuditError> {
    let cert = ca::load_cert_file(ca_cert_pem)?;
    let f = std::fs::File::open(log).map_err(io_err(log))?;
    let mut reader = BufReader::new(f);
    let first = reader.fill_buf().map_err(io_err(log))?.first().copied();
    let mut v = Verifier::new(cert.public_key, cert.fingerprint.clone(), false);
    match first {
        None => {}
        Some(b'{') => verify_jsonl(reader, &mut v, log)?,
        Some(_) => verify_csv(reader, &mut v)?,
    }
    v.finish();
    Ok(v.report())
}

/// Consume the rest of the current line (through its LF) without keeping it: an over-long
/// line costs no memory however long it is.
fn skip_line<R: BufRead>(reader: &mut R) -> io::Result<()> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn verify_jsonl<R: BufRead>(
    mut reader: R,
    v: &mut Verifier,
    path: &Path,
) -> Result<(), AuditError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most MAX_LINE bytes of content plus the LF are kept.
        let n = io::Read::take(&mut reader, MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut line)
            .map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if line.len() - usize::from(line.ends_with(b"\n")) > MAX_LINE {
            v.feed_unparsable("line longer than 1 MiB".into());
            if !line.ends_with(b"\n") {
                skip_line(&mut reader).map_err(io_err(path))?;
            }
            continue;
        }
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t,
            Err(_) => {
                v.feed_unparsable("not UTF-8".into());
                continue;
            }
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        if !line.ends_with(b"\n") {
            // The last line of an export always ends with LF: a missing one means a cut.
            v.feed_unparsable("truncated line (no line end)".into());
            continue;
        }
        if text.trim().is_empty() {
            v.feed_unparsable("empty line".into());
            continue;
        }
        match serde_json::from_str::<Record>(text) {
            Ok(r) => {
                // The chain hashes the canonical form; the line must be exactly it, so that
                // what a reader sees (e.g. the first of duplicate keys) is what was hashed.
                if r.to_export_json() != text {
                    v.not_canonical(
                        v.expected_seq,
                        "the line differs from the canonical JSON of its record",
                    );
                }
                v.feed(&r)
            }
            Err(e) => v.feed_unparsable(format!("not a record: {e}")),
        }
    }
    Ok(())
}

/// Header of the CSV form of the log (`audit export --format csv`, `audit show --csv`).
pub const CSV_HEADER: [&str; 7] = [
    "seq",
    "time",
    "operator",
    "event",
    "details",
    "prev_hash",
    "hash",
];

/// Longest physical line of a CSV export: a record's JSON details are quoted with doubled
/// quotes, so a CSV line can be about twice its JSONL form ([`MAX_LINE`]).
const MAX_CSV_LINE: usize = 4 * MAX_LINE;

/// A `Read` that fails once a physical line exceeds [`MAX_CSV_LINE`] bytes and reads as end of
/// input after that, so the CSV reader never buffers an unbounded record.
struct LineLimit<R> {
    inner: R,
    run: usize,
    tripped: bool,
}

impl<R: io::Read> io::Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tripped {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        let chunk = buf.get(..n).unwrap_or_default();
        let mut segments = chunk.split(|&b| b == b'\n');
        let head = segments.next().map_or(0, <[u8]>::len);
        let mut longest = self.run + head;
        let mut tail = None;
        for seg in segments {
            longest = longest.max(seg.len());
            tail = Some(seg.len());
        }
        self.run = tail.unwrap_or(self.run + head);
        if longest > MAX_CSV_LINE {
            self.tripped = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than {MAX_CSV_LINE} bytes"),
            ));
        }
        Ok(n)
    }
}

fn verify_csv<R: io::Read>(reader: R, v: &mut Verifier) -> Result<(), AuditError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(LineLimit {
            inner: reader,
            run: 0,
            tripped: false,
        });
    let header_ok = match rdr.headers() {
        Ok(h) => h.iter().eq(CSV_HEADER.iter().copied()),
        Err(_) => false,
    };
    if !header_ok {
        v.feed_unparsable(format!(
            "not an nrfca audit export (JSONL, or CSV with header {})",
            CSV_HEADER.join(",")
        ));
        return Ok(());
    }
    for row in rdr.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                v.feed_unparsable(format!("bad CSV: {e}"));
                continue;
            }
        };
        if row.len() != 7 {
            v.feed_unparsable(format!("row has {} fields, expected 7", row.len()));
            continue;
        }
        let field = |i: usize| row.get(i).unwrap_or_default().to_string();
        let Ok(seq) = field(0).parse::<u64>() else {
            v.feed_unparsable(format!("seq {:?} is not a number", field(0)));
            continue;
        };
        let details = match serde_json::from_str::<Value>(&field(4)) {
            Ok(d) => d,
            Err(e) => {
                v.feed_unparsable(format!("details are not JSON: {e}"));
                continue;
            }
        };
        if field(0) != seq.to_string() {
            v.not_canonical(
                v.expected_seq,
                "seq is not written as a plain decimal number",
            );
        } else if field(4) != canonical_json(&details) {
            v.not_canonical(v.expected_seq, "details are not canonical JSON");
        }
        v.feed(&Record {
            seq,
            time: field(1),
            operator: field(2),
            event: field(3),
            details,
            prev_hash: field(5),
            hash: field(6),
        });
    }
    Ok(())
}
