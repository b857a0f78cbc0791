//! `audit verify`: the chain, the sequence, every checkpoint signature, the last checkpoint
//! noted in `meta`, and the agreement of the `certificates` table with the
//! `certificate-issued` records, over `ca.db` or an exported file (JSONL or CSV).

use super::*;
use crate::signer::ca_files as ca;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};

/// The first place where the log stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Sequence number of the first bad record (for a missing record: the seq it should have).
    pub seq: u64,
    /// What is wrong, in words.
    pub problem: String,
}

/// Result of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of records read.
    pub records: u64,
    /// Hash of the last record read (64 zeros for an empty log).
    pub head_hash: String,
    /// Seq of the last checkpoint whose signature verified (0: none).
    pub last_checkpoint_seq: u64,
    /// Records after the last valid checkpoint (not covered by a CA signature yet).
    pub unsigned_tail: u64,
    /// The first problem found, if any.
    pub first_bad: Option<Finding>,
    /// SHA-256 fingerprint of the CA certificate the log was checked against.
    pub ca_fingerprint: String,
    /// The newest CA-signed Merkle checkpoint in `ca.db` (`--ca-dir` only; SPEC §11).
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its exact text (three lines).
    pub checkpoint: Option<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

#[derive(Debug)]
struct IssuedRec {
    seq: u64,
    device_id: String,
    keygen_sha256: String,
    cert_sha256: String,
    batch: String,
    reissue: bool,
    /// Recorded by nrfca since Hardening II; `None` in older records (then not checked).
    uuid: Option<String>,
    /// `Some(None)`: recorded as null (no IMEI); `None`: not recorded (older record).
    imei: Option<Option<String>>,
    /// `None`: not recorded (older record).
    sec_tag: Option<u64>,
}

/// Streaming verifier: feed records in file/seq order.
struct Verifier {
    ca_public: [u8; 65],
    ca_fingerprint: String,
    expected_seq: u64,
    prev_hash: String,
    records: u64,
    head_hash: String,
    last_checkpoint_seq: u64,
    first_bad: Option<Finding>,
    issued: Option<HashMap<String, IssuedRec>>,
    /// The first batch or certificate event after the last valid checkpoint: (seq, event).
    unsigned_batch_event: Option<(u64, String)>,
}

/// Events that `sign` (and `ca protect`, for `key-protection-changed`) always follows with a
/// CA-signed checkpoint in the same transaction: one of them after the last checkpoint means
/// the tail was cut and a new one made up.
pub const CHECKPOINTED_EVENTS: &[&str] = &[
    "key-protection-changed",
    "batch-started",
    "certificate-issued",
    "certificate-returned",
    "request-rejected",
    "batch-committed",
    "bundle-written",
];

impl Verifier {
    fn new(ca_public: [u8; 65], ca_fingerprint: String, collect_issued: bool) -> Self {
        Verifier {
            ca_public,
            ca_fingerprint,
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            records: 0,
            head_hash: GENESIS_HASH.to_string(),
            last_checkpoint_seq: 0,
            first_bad: None,
            issued: collect_issued.then(HashMap::new),
            unsigned_batch_event: None,
        }
    }

    /// A record whose line is not in canonical form (what it hashes is not what it says).
    fn not_canonical(&mut self, seq: u64, what: &str) {
        self.bad(
            seq,
            format!(
                "record {seq} is not in canonical form ({what}): the exact line is not what the chain hashed (edited, e.g. duplicate JSON keys spliced in)"
            ),
        );
    }

    /// End-of-log checks, once every record was fed: an empty log, a log without any
    /// CA-signed checkpoint, and batch or certificate events after the last checkpoint.
    fn finish(&mut self) {
        if self.first_bad.is_some() {
            return;
        }
        if self.records == 0 {
            self.bad(
                1,
                "the log is empty: every nrfca log starts with ca-created or ca-imported and a checkpoint (an empty file or a CSV header alone is not an export)".into(),
            );
        } else if self.last_checkpoint_seq == 0 {
            self.bad(
                self.records + 1,
                "the log has no CA-signed checkpoint: nrfca signs one when the CA is created, so records were cut from it".into(),
            );
        } else if let Some((seq, event)) = self.unsigned_batch_event.take() {
            // Reported where the missing checkpoint should be: the records from the last
            // checkpoint on may be made up, and the real tail is missing.
            self.bad(
                self.records + 1,
                format!(
                    "uncheckpointed tail: {event} record {seq} comes after the last CA-signed checkpoint (record {}), but sign always checkpoints its batch: the log was cut and records after record {} may be made up",
                    self.last_checkpoint_seq, self.last_checkpoint_seq
                ),
            );
        }
    }

    fn bad(&mut self, seq: u64, problem: String) {
        if self.first_bad.is_none() {
            self.first_bad = Some(Finding { seq, problem });
        }
    }

    /// A line/row that could not be parsed as a record.
    fn feed_unparsable(&mut self, what: String) {
        self.records += 1;
        let seq = self.expected_seq;
        self.bad(seq, format!("record {seq} cannot be read: {what}"));
        self.expected_seq += 1;
    }

    fn feed(&mut self, r: &Record) {
        self.records += 1;
        self.head_hash = r.hash.clone();
        if self.first_bad.is_some() {
            return;
        }
        let expected = self.expected_seq;
        self.expected_seq += 1;
        if r.seq != expected {
            let problem = if r.seq > expected {
                format!("sequence broken: expected record {expected}, found {} (records missing or reordered)", r.seq)
            } else {
                format!("sequence broken: expected record {expected}, found {} again or out of order (record inserted, duplicated or reordered)", r.seq)
            };
            self.bad(expected, problem);
            return;
        }
        if r.prev_hash != self.prev_hash {
            self.bad(
                r.seq,
                format!(
                    "hash chain broken: prev_hash does not match the hash of record {} (a record before it was altered, removed or inserted)",
                    r.seq - 1
                ),
            );
            return;
        }
        match r.compute_hash() {
            Some(h) if h == r.hash => {}
            _ => {
                self.bad(
                    r.seq,
                    "record does not match its hash (its content was altered)".to_string(),
                );
                return;
            }
        }
        self.prev_hash = r.hash.clone();
        if let Err(problem) = self.check_content(r) {
            self.bad(r.seq, problem);
        }
    }

    fn check_content(&mut self, r: &Record) -> Result<(), String> {
        if !is_kebab(&r.event) {
            return Err(format!("event name {:?} is not kebab-case", r.event));
        }
        if time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
            .is_err()
        {
            return Err(format!("time {:?} is not RFC 3339", r.time));
        }
        let Some(details) = r.details.as_object() else {
            return Err("details are not a JSON object".into());
        };
        if r.seq == 1 {
            if r.event != "ca-created" && r.event != "ca-imported" {
                return Err(format!(
                    "the log starts with {:?}, not ca-created or ca-imported",
                    r.event
                ));
            }
            let fp = details.get("fingerprint").and_then(Value::as_str);
            if fp != Some(self.ca_fingerprint.as_str()) {
                return Err(format!(
                    "the log belongs to another CA (fingerprint {}, expected {})",
                    fp.unwrap_or("missing"),
                    self.ca_fingerprint
                ));
            }
        }
        if CHECKPOINTED_EVENTS.contains(&r.event.as_str()) && self.unsigned_batch_event.is_none() {
            self.unsigned_batch_event = Some((r.seq, r.event.clone()));
        }
        match r.event.as_str() {
            "checkpoint" => self.check_checkpoint(r, details)?,
            "certificate-issued" => {
                if let Some(map) = self.issued.as_mut() {
                    let s = |k: &str| {
                        details
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let serial = s("serial");
                    if serial.is_empty() {
                        return Err("certificate-issued record without serial".into());
                    }
                    let rec = IssuedRec {
                        seq: r.seq,
                        device_id: s("device_id"),
                        keygen_sha256: s("keygen_sha256"),
                        cert_sha256: s("cert_sha256"),
                        batch: s("batch"),
                        reissue: details
                            .get("reissue")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        uuid: details
                            .get("uuid")
                            .map(|u| u.as_str().unwrap_or_default().to_string()),
                        imei: details.get("imei").map(|i| i.as_str().map(str::to_string)),
                        sec_tag: details
                            .get("sec_tag")
                            .map(|t| t.as_u64().unwrap_or(u64::MAX)),
                    };
                    if let Some(prev) = map.insert(serial.clone(), rec) {
                        return Err(format!(
                            "serial {serial} is recorded as issued twice (first at record {})",
                            prev.seq
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        r: &Record,
        details: &serde_json::Map<String, Value>,
    ) -> Result<(), String> {
        let head_seq = details.get("head_seq").and_then(Value::as_u64);
        let head_hash = details.get("head_hash").and_then(Value::as_str);
        let sig = details.get("signature").and_then(Value::as_str);
        let (Some(head_seq), Some(head_hash), Some(sig)) = (head_seq, head_hash, sig) else {
            return Err("checkpoint without head_seq, head_hash or signature".into());
        };
        if head_seq.checked_add(1) != Some(r.seq) || head_hash != r.prev_hash {
            return Err(format!(
                "checkpoint signs record {head_seq}, not the record before it"
            ));
        }
        let Ok(sig) = crypto::b64_decode(sig) else {
            return Err("checkpoint signature is not base64".into());
        };
        if !crypto::verify_p256_sha256(
            &self.ca_public,
            &checkpoint_message(head_seq, head_hash),
            &sig,
        ) {
            return Err(format!(
                "checkpoint signature does not verify with the CA key: records after the last good checkpoint ({}) may have been rewritten",
                self.last_checkpoint_seq
            ));
        }
        self.last_checkpoint_seq = r.seq;
        self.unsigned_batch_event = None;
        Ok(())
    }

    fn report(self) -> VerifyReport {
        let signed = if self.first_bad.is_some() {
            self.last_checkpoint_seq.min(self.records)
        } else {
            self.last_checkpoint_seq
        };
        VerifyReport {
            records: self.records,
            head_hash: self.head_hash,
            last_checkpoint_seq: self.last_checkpoint_seq,
            unsigned_tail: self.records.saturating_sub(signed),
            first_bad: self.first_bad,
            ca_fingerprint: self.ca_fingerprint,
            checkpoint: None,
        }
    }
}

pub(super) fn raw_to_record(r: db::audit::RawRecord) -> Result<Record, String> {
    let details = match serde_json::from_str::<Value>(&r.details) {
        Ok(v) => v,
        Err(e) => return Err(format!("details are not JSON: {e}")),
    };
    let Ok(seq) = u64::try_from(r.seq) else {
        return Err(format!("seq {} is negative", r.seq));
    };
    Ok(Record {
        seq,
        time: r.time,
        operator: r.operator,
        event: r.event,
        details,
        prev_hash: r.prev_hash,
        hash: r.hash,
    })
}

/// Verify the log in `ca_dir/ca.db` against `ca_dir/ca.pem`: the chain, the sequence, every
/// checkpoint signature, and the agreement between the `certificates` table and the
/// `certificate-issued` records (same serial, device, KEYGEN and certificate hashes, batch
/// and reissue flag, both ways), and the last checkpoint noted in `meta`.
pub fn verify_db(ca_dir: &Path) -> Result<VerifyReport, AuditError> {
    verify_db_with(ca_dir, &[])
}

/// [`verify_db`], and the Merkle checkpoints (SPEC §11): the stored ones are CA-signed
/// prefixes of the log, the newest covers the last signed record, and the log extends every
/// `given` one (`audit verify --checkpoint`).
pub fn verify_db_with(
    ca_dir: &Path,
    given: &[super::tree::GivenCheckpoint],
) -> Result<VerifyReport, AuditError> {
    let cert = ca::load_cert(ca_dir)?;
    let origin = crate::checkpoint::origin_for(&cert.fingerprint);
    super::tree::check_given_origins(&origin, given)?;
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let mut report = verify_conn(&conn, &cert.public_key, &cert.fingerprint)?;
    let (newest, stored) = super::tree::check_db(
        &conn,
        &cert.public_key,
        &cert.fingerprint,
        report.last_checkpoint_seq,
    )?;
    report.checkpoint = newest.map(|c| c.to_text());
    let leaves = super::tree::leaves(&conn)?;
    let given = super::tree::check_given(&origin, || leaves.clone(), leaves.len() as u64, given);
    merge_findings(&mut report, given, stored);
    Ok(report)
}

/// The earliest finding wins; on a tie, a given checkpoint's (the question the auditor
/// asked), then the chain's own, then the stored checkpoints'.
fn merge_findings(report: &mut VerifyReport, given: Vec<Finding>, stored: Vec<Finding>) {
    let mut all = given;
    all.extend(report.first_bad.take());
    all.extend(stored);
    report.first_bad = all.into_iter().min_by_key(|f| f.seq);
}

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

/// [`verify_db`] on an open connection (used inside other commands, e.g. after a batch).
///
/// Stages: the chain record by record (`feed_db`), `meta`'s note of the last checkpoint
/// (`check_note`), the `certificates` table against the `certificate-issued` records
/// (`issued_agreement`); the earliest finding wins.
pub fn verify_conn(
    conn: &Connection,
    ca_public: &[u8; 65],
    ca_fingerprint: &str,
) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier::new(*ca_public, ca_fingerprint.to_string(), true);
    feed_db(conn, &mut v)?;
    v.finish();
    let mut findings: Vec<Finding> = Vec::new();
    // meta's note of the last checkpoint: catches a table truncated to before it.
    let noted = db::meta::get(conn, db::meta::AUDIT_CHECKPOINT)?;
    match check_note(
        noted.as_deref(),
        v.records,
        v.first_bad.is_none(),
        v.last_checkpoint_seq,
    ) {
        NoteCheck::Found(f) => findings.push(f),
        NoteCheck::HashAt { seq, hash } => {
            let stored = db::audit::hash_at(conn, seq as i64)?;
            if stored.as_deref() != Some(hash.as_str()) {
                findings.push(Finding {
                    seq,
                    problem: format!(
                        "checkpoint {seq} differs from the one ca.db noted when it was written"
                    ),
                });
            }
        }
        NoteCheck::Nothing => {}
    }
    if let Some(issued) = v.issued.take() {
        findings.extend(issued_agreement(conn, issued, v.records)?);
    }
    let mut report = v.report();
    if let Some(f) = report.first_bad.take() {
        findings.push(f);
    }
    report.first_bad = findings.into_iter().min_by_key(|f| f.seq);
    Ok(report)
}

/// Feed every record of `ca.db`'s log to `v`, in seq order.
fn feed_db(conn: &Connection, v: &mut Verifier) -> Result<(), AuditError> {
    db::audit::for_each::<AuditError>(conn, |row| {
        match row {
            Ok(raw) => {
                // Readers (json_extract, `audit report`) read the stored text: it must be
                // exactly what the chain hashed (no duplicate keys, no other spelling).
                let stored = raw.details.clone();
                match raw_to_record(raw) {
                    Ok(rec) => {
                        if stored != canonical_json(&rec.details) {
                            v.not_canonical(
                                v.expected_seq,
                                "the details stored in ca.db are not canonical JSON",
                            );
                        }
                        v.feed(&rec)
                    }
                    Err(why) => v.feed_unparsable(why),
                }
            }
            Err(e) => v.feed_unparsable(e.to_string()),
        }
        Ok(())
    })
}

/// What `meta`'s note of the last checkpoint (`"<seq> <hash>"`) says about the log.
#[derive(Debug, PartialEq, Eq)]
enum NoteCheck {
    /// It shows the log is wrong.
    Found(Finding),
    /// It agrees so far; the record at `seq` must still have this hash.
    HashAt { seq: u64, hash: String },
    /// Nothing to check (no note, and no records).
    Nothing,
}

/// Check the note against the log as verified (pure): `records` read, whether the chain held
/// (`chain_ok`), and its last CA-signed checkpoint.
fn check_note(
    noted: Option<&str>,
    records: u64,
    chain_ok: bool,
    last_checkpoint: u64,
) -> NoteCheck {
    let Some(noted) = noted else {
        if records == 0 {
            return NoteCheck::Nothing;
        }
        // Every checkpoint writes the note in its own transaction (ca init and import
        // included), so a log without one lost its tail together with the note.
        return NoteCheck::Found(Finding {
            seq: records + 1,
            problem: "ca.db has no note of its last checkpoint (meta audit_checkpoint), which every nrfca CA writes: the end of the log was deleted together with the note, or ca.db was edited".into(),
        });
    };
    let mut it = noted.splitn(2, ' ');
    let seq = it.next().and_then(|s| s.parse::<u64>().ok());
    let hash = it.next().unwrap_or_default().to_string();
    match seq {
        Some(seq) if seq > records => NoteCheck::Found(Finding {
            seq: records + 1,
            problem: format!(
                "log truncated: ca.db noted a checkpoint at record {seq} but the log ends at {records}"
            ),
        }),
        Some(seq) if chain_ok && seq != last_checkpoint => NoteCheck::Found(Finding {
            seq: seq.min(last_checkpoint) + 1,
            problem: format!(
                "ca.db noted its last checkpoint at record {seq}, but the last CA-signed checkpoint in the log is record {last_checkpoint}: records were removed, or the note was rewritten"
            ),
        }),
        Some(seq) => NoteCheck::HashAt { seq, hash },
        None => NoteCheck::Found(Finding {
            seq: 1,
            problem: "ca.db's note of the last checkpoint is unreadable".into(),
        }),
    }
}

/// certificates ↔ certificate-issued agreement: every row has its record and agrees with it,
/// every record has its row. `records`: the log's length (a row without a record is found
/// after its end).
fn issued_agreement(
    conn: &Connection,
    mut issued: HashMap<String, IssuedRec>,
    records: u64,
) -> Result<Vec<Finding>, AuditError> {
    let mut findings = Vec::new();
    db::certificates::for_each(conn, |row| {
        findings.extend(row_finding(&mut issued, &row, records));
    })?;
    for (serial, rec) in issued {
        findings.push(Finding {
            seq: rec.seq,
            problem: format!(
                "certificate-issued record for serial {serial} has no row in ca.db's certificates"
            ),
        });
    }
    Ok(findings)
}

/// One `certificates` row against its `certificate-issued` record, which is taken out of
/// `issued` (pure).
fn row_finding(
    issued: &mut HashMap<String, IssuedRec>,
    row: &db::certificates::Row,
    records: u64,
) -> Option<Finding> {
    let (serial, device_id) = (&row.serial, &row.device_id);
    let Some(rec) = issued.remove(serial) else {
        return Some(Finding {
            seq: records + 1,
            problem: format!(
                "certificate {serial} (device {device_id}) is in ca.db but has no certificate-issued record: audit records are missing"
            ),
        });
    };
    let diffs = row_diffs(&rec, row);
    (!diffs.is_empty()).then(|| Finding {
        seq: rec.seq,
        problem: format!(
            "certificate {serial} in ca.db disagrees with its certificate-issued record ({})",
            diffs.join(", ")
        ),
    })
}

/// Where a `certificates` row disagrees with its `certificate-issued` record, then with its
/// own certificate (pure). Fields an older record does not carry are not compared.
fn row_diffs(rec: &IssuedRec, row: &db::certificates::Row) -> Vec<&'static str> {
    // The stored certificate must be the one whose PEM hash the audit log holds.
    let bytes_ok = crypto::sha256_hex(crate::util::pem_encode("CERTIFICATE", &row.der).as_bytes())
        == row.cert_sha256;
    let mut diffs = Vec::new();
    if rec.device_id != row.device_id {
        diffs.push("device_id");
    }
    if rec.keygen_sha256 != row.keygen_sha256 {
        diffs.push("keygen_sha256");
    }
    if rec.cert_sha256 != row.cert_sha256 {
        diffs.push("cert_sha256");
    }
    if !bytes_ok {
        diffs.push("certificate bytes");
    }
    if rec.batch != row.batch_id {
        diffs.push("batch");
    }
    if rec.reissue != (row.reissue != 0) {
        diffs.push("reissue");
    }
    if rec.uuid.as_ref().is_some_and(|u| *u != row.uuid) {
        diffs.push("uuid");
    }
    if rec.imei.as_ref().is_some_and(|i| *i != row.imei) {
        diffs.push("imei");
    }
    if rec
        .sec_tag
        .is_some_and(|t| i64::try_from(t).ok() != Some(row.sec_tag))
    {
        diffs.push("sec_tag");
    }
    // The columns the certificate itself states must be what it states (the DER is covered
    // by the chain through cert_sha256 when the bytes agree).
    if bytes_ok {
        diffs.extend(cert_column_diffs(
            &row.der,
            &CertColumns {
                serial: &row.serial,
                device_id: &row.device_id,
                public_key: &row.public_key,
                not_before: &row.not_before,
                not_after: &row.not_after,
            },
        ));
    }
    diffs
}

/// The `certificates` columns that the certificate DER states itself.
struct CertColumns<'a> {
    serial: &'a str,
    device_id: &'a str,
    public_key: &'a [u8],
    not_before: &'a str,
    not_after: &'a str,
}

/// Which of `cols` disagree with the certificate `der` (every column when it does not parse).
fn cert_column_diffs(der: &[u8], cols: &CertColumns<'_>) -> Vec<&'static str> {
    use der::Decode;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return vec!["certificate DER (does not parse)"];
    };
    let tbs = &cert.tbs_certificate;
    let mut diffs = Vec::new();
    if hex::encode(tbs.serial_number.as_bytes()) != cols.serial {
        diffs.push("serial");
    }
    if tbs.subject.to_string() != format!("CN={}", cols.device_id) {
        diffs.push("device_id (certificate CN)");
    }
    if tbs.subject_public_key_info.subject_public_key.as_bytes() != Some(cols.public_key) {
        diffs.push("public_key");
    }
    let same_time = |t: &x509_cert::time::Time, text: &str| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|c| u64::try_from(c.unix_timestamp()).ok())
            == Some(t.to_unix_duration().as_secs())
    };
    if !same_time(&tbs.validity.not_before, cols.not_before) {
        diffs.push("not_before");
    }
    if !same_time(&tbs.validity.not_after, cols.not_after) {
        diffs.push("not_after");
    }
    diffs
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_note_table() {
        let found = |seq: u64, start: &str| (Some(seq), start.to_string());
        // (case, note, records, chain ok, last checkpoint, finding seq and text start / hash)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            u64,
            bool,
            u64,
            (Option<u64>, String),
        );
        let cases: Vec<Case> = vec![
            ("empty log, no note", None, 0, true, 0, (None, "nothing".into())),
            ("records, no note", None, 5, true, 5, found(6, "ca.db has no note")),
            ("note agrees", Some("5 abc"), 5, true, 5, (None, "hash 5 abc".into())),
            (
                "note past the end",
                Some("9 abc"),
                5,
                true,
                5,
                found(6, "log truncated: ca.db noted a checkpoint at record 9 but the log ends at 5"),
            ),
            (
                "note before the last checkpoint",
                Some("3 abc"),
                5,
                true,
                5,
                found(4, "ca.db noted its last checkpoint at record 3, but the last CA-signed checkpoint in the log is record 5"),
            ),
            (
                "note after the last checkpoint",
                Some("4 abc"),
                5,
                true,
                2,
                found(3, "ca.db noted its last checkpoint at record 4"),
            ),
            (
                "broken chain: only the hash is compared",
                Some("3 abc"),
                5,
                false,
                5,
                (None, "hash 3 abc".into()),
            ),
            ("unreadable", Some("x abc"), 5, true, 5, found(1, "ca.db's note of the last checkpoint is unreadable")),
            ("no hash", Some("5"), 5, true, 5, (None, "hash 5 ".into())),
        ];
        for (name, noted, records, chain_ok, last, (seq, want)) in cases {
            match check_note(noted, records, chain_ok, last) {
                NoteCheck::Found(f) => {
                    assert_eq!(Some(f.seq), seq, "case: {name}");
                    assert!(f.problem.starts_with(&want), "case: {name}: {}", f.problem);
                }
                NoteCheck::HashAt { seq: s, hash } => {
                    assert_eq!(seq, None, "case: {name}");
                    assert_eq!(format!("hash {s} {hash}"), want, "case: {name}");
                }
                NoteCheck::Nothing => {
                    assert_eq!((seq, want.as_str()), (None, "nothing"), "case: {name}")
                }
            }
        }
    }

    fn issued(seq: u64) -> IssuedRec {
        IssuedRec {
            seq,
            device_id: "dev".into(),
            keygen_sha256: "kk".into(),
            cert_sha256: String::new(),
            batch: "b1".into(),
            reissue: false,
            uuid: Some("dev".into()),
            imei: Some(Some("355025930000001".into())),
            sec_tag: Some(16842753),
        }
    }

    /// A row agreeing with `issued`; its DER is not a certificate (so the certificate's own
    /// columns are reported as not parsing whenever the bytes match the recorded hash).
    fn row() -> db::certificates::Row {
        let der = b"not a certificate".to_vec();
        db::certificates::Row {
            serial: "01".into(),
            device_id: "dev".into(),
            keygen_sha256: "kk".into(),
            cert_sha256: crypto::sha256_hex(
                crate::util::pem_encode("CERTIFICATE", &der).as_bytes(),
            ),
            batch_id: "b1".into(),
            reissue: 0,
            der,
            uuid: "dev".into(),
            imei: Some("355025930000001".into()),
            sec_tag: 16842753,
            public_key: Vec::new(),
            not_before: String::new(),
            not_after: String::new(),
        }
    }

    #[test]
    fn row_diffs_table() {
        const DER: &str = "certificate DER (does not parse)";
        type Edit = fn(&mut IssuedRec, &mut db::certificates::Row);
        let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
            ("agrees", |_, _| {}, vec![]),
            (
                "device",
                |_, r| r.device_id = "other".into(),
                vec!["device_id"],
            ),
            (
                "keygen",
                |_, r| r.keygen_sha256 = "kl".into(),
                vec!["keygen_sha256"],
            ),
            ("batch", |i, _| i.batch = "b2".into(), vec!["batch"]),
            ("reissue", |_, r| r.reissue = 1, vec!["reissue"]),
            ("uuid", |_, r| r.uuid = "x".into(), vec!["uuid"]),
            (
                "uuid not recorded",
                |i, r| {
                    i.uuid = None;
                    r.uuid = "x".into();
                },
                vec![],
            ),
            ("imei", |_, r| r.imei = None, vec!["imei"]),
            (
                "imei recorded as null",
                |i, r| {
                    i.imei = Some(None);
                    r.imei = None;
                },
                vec![],
            ),
            (
                "imei not recorded",
                |i, r| {
                    i.imei = None;
                    r.imei = None;
                },
                vec![],
            ),
            ("sec_tag", |_, r| r.sec_tag = 7, vec!["sec_tag"]),
            (
                "sec_tag not recorded",
                |i, r| {
                    i.sec_tag = None;
                    r.sec_tag = 7;
                },
                vec![],
            ),
            (
                "other bytes",
                |_, r| r.der = b"other".to_vec(),
                vec!["certificate bytes"],
            ),
        ];
        for (name, edit, want) in cases {
            let (mut rec, mut row) = (issued(3), row());
            rec.cert_sha256 = row.cert_sha256.clone();
            edit(&mut rec, &mut row);
            let mut want = want;
            if !want.contains(&"certificate bytes") {
                want.push(DER);
            }
            assert_eq!(row_diffs(&rec, &row), want, "case: {name}");
        }
    }

    #[test]
    fn row_finding_takes_the_record_out() {
        let r = row();
        let mut rec = issued(3);
        rec.cert_sha256 = r.cert_sha256.clone();
        let mut map = HashMap::from([("01".to_string(), rec)]);
        let f = row_finding(&mut map, &r, 10).unwrap();
        assert_eq!(f.seq, 3);
        assert!(
            f.problem
                .ends_with("record (certificate DER (does not parse))"),
            "{}",
            f.problem
        );
        assert!(map.is_empty());
        let f = row_finding(&mut map, &r, 10).unwrap();
        assert_eq!(f.seq, 11);
        assert!(
            f.problem.contains("has no certificate-issued record"),
            "{}",
            f.problem
        );
    }
}
