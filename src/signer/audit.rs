//! The audit log of the signer (SPEC §5): hash-chained records in `ca.db`'s `audit` table,
//! CA-signed checkpoints, and verify / show / export.
//!
//! Format (also in `docs/audit.md`):
//!
//! * A record is `seq` (1, 2, 3, … no gaps), `time` (RFC 3339 UTC, milliseconds, `Z`),
//!   `operator`, `event` (kebab-case), `details` (a JSON object), `prev_hash` (hex; 64 zeros
//!   for seq 1) and `hash`.
//! * The **canonical record** is the JSON object
//!   `{"details":D,"event":E,"operator":O,"prev_hash":P,"seq":N,"time":T}` serialised by
//!   [`canonical_json`]: keys sorted by their UTF-8 bytes, no whitespace, strings escaped as
//!   serde_json does (only `"`, `\` and control characters; non-ASCII as UTF-8), integers in
//!   decimal. `hash = SHA-256(raw 32 bytes of prev_hash || canonical record bytes)`, lowercase hex.
//! * A **checkpoint** is a record with event `checkpoint` whose details are
//!   `{"alg":"ecdsa-p256-sha256","head_hash":H,"head_seq":S,"signature":B64}` where `S = seq-1`,
//!   `H` is that record's hash (= the checkpoint's `prev_hash`) and `B64` is the standard base64
//!   of the CA's DER ECDSA-SHA256 signature over [`checkpoint_message`]:
//!   `"nrfca-audit-checkpoint-v1\n" + S + "\n" + H + "\n"` (ASCII, `S` in decimal).
//!
//! The library never prints; the CLI renders [`VerifyReport`] and [`Record`]s.

use crate::crypto;
use crate::signer::ca_files::{self as ca, CaFileError};
use crate::signer::db;
use crate::signer::db::Connection;
use crate::signer::secret::CaKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// `prev_hash` of record 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain-separation prefix of [`checkpoint_message`].
pub const CHECKPOINT_DOMAIN: &str = "nrfca-audit-checkpoint-v1\n";

/// Longest line accepted in an exported log file.
pub const MAX_LINE: usize = 1 << 20;

/// Every event name nrfca writes (docs/architecture.md). Other kebab-case names are accepted
/// by the verifier (a newer nrfca may add events) but [`AuditWriter`] only writes these.
pub const EVENTS: &[&str] = &[
    "ca-created",
    "ca-imported",
    "key-unlocked",
    "unlock-failed",
    "key-protection-changed",
    "batch-started",
    "certificate-issued",
    "certificate-returned",
    "request-rejected",
    "batch-committed",
    "checkpoint",
    "bundle-written",
    "audit-exported",
];

/// Errors of the audit layer ("could not run"; tampering is a [`Finding`], not an error).
/// Display is this layer's sentence; the cause is the `source()` (the CLI prints the chain).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed.
    #[error("audit log database error (check that ca.db is not in use by another nrfca)")]
    Db(#[from] rusqlite::Error),
    /// Opening ca.db failed.
    #[error(transparent)]
    Open(#[from] db::DbError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The export target exists; exports never overwrite.
    #[error("{} already exists; audit exports never overwrite: choose another --out", .0.display())]
    Exists(PathBuf),
    /// An event name that nrfca does not write, or details that are not a JSON object.
    #[error("internal error: bad audit event: {0}")]
    BadEvent(String),
    /// The head of the stored log is not usable (bad hash text, seq out of range).
    #[error("the audit log in ca.db is corrupt ({0}); run `nrfca audit verify --ca-dir` and restore ca.db from a backup")]
    Corrupt(String),
    /// Signing a checkpoint failed.
    #[error("signing the audit checkpoint failed")]
    Sign(#[source] crypto::CryptoError),
    /// The CA certificate could not be loaded.
    #[error(transparent)]
    Cert(#[from] CaFileError),
    /// A filter value could not be understood.
    #[error("{0}")]
    Filter(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One audit record, as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time of the event.
    pub time: String,
    /// Who ran the command (`--operator`, else `$USER`).
    pub operator: String,
    /// kebab-case event name.
    pub event: String,
    /// Event details (a JSON object).
    pub details: Value,
    /// Hash of the previous record (64 zeros for seq 1).
    pub prev_hash: String,
    /// SHA-256(prev_hash bytes || canonical record), lowercase hex.
    pub hash: String,
}

/// Canonical JSON: object keys sorted by UTF-8 bytes, no whitespace, serde_json string
/// escaping and number formatting.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(k, out);
                out.push(':');
                if let Some(val) = map.get(k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => push_json_str(s, out),
        // null, bool and numbers have a single serde_json rendering.
        other => out.push_str(&other.to_string()),
    }
}

fn push_json_str(s: &str, out: &mut String) {
    // Fast path (hex, UUIDs, names): nothing to escape, identical to serde_json's output.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's string escaping; serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()));
}

/// The canonical record bytes (see the module docs) given the details already in canonical
/// form. Keys in sorted order: details, event, operator, prev_hash, seq, time.
pub fn canonical_record(
    seq: u64,
    time: &str,
    operator: &str,
    event: &str,
    details_canonical: &str,
    prev_hash: &str,
) -> String {
    let mut s = String::with_capacity(details_canonical.len() + 200);
    s.push_str("{\"details\":");
    s.push_str(details_canonical);
    s.push_str(",\"event\":");
    push_json_str(event, &mut s);
    s.push_str(",\"operator\":");
    push_json_str(operator, &mut s);
    s.push_str(",\"prev_hash\":");
    push_json_str(prev_hash, &mut s);
    s.push_str(",\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"time\":");
    push_json_str(time, &mut s);
    s.push('}');
    s
}

/// `hash = SHA-256(prev_hash as 32 raw bytes || canonical record bytes)`, lowercase hex.
/// `None` if `prev_hash` is not 64 hex digits.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> Option<String> {
    let prev = decode_hash(prev_hash)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&prev);
    ctx.update(canonical.as_bytes());
    Some(hex::encode(ctx.finish()))
}

fn decode_hash(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).ok()?;
    Some(out)
}

impl Record {
    /// Recompute this record's hash from its fields (`None` if `prev_hash` is malformed).
    pub fn compute_hash(&self) -> Option<String> {
        let canonical = canonical_record(
            self.seq,
            &self.time,
            &self.operator,
            &self.event,
            &canonical_json(&self.details),
            &self.prev_hash,
        );
        chain_hash(&self.prev_hash, &canonical)
    }

    /// The CSV form: the fields in [`CSV_HEADER`] order, details as canonical JSON.
    pub fn to_csv_fields(&self) -> [String; 7] {
        [
            self.seq.to_string(),
            self.time.clone(),
            self.operator.clone(),
            self.event.clone(),
            canonical_json(&self.details),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
    }

    /// The export form: the canonical JSON of all seven fields (one JSONL line, no newline).
    pub fn to_export_json(&self) -> String {
        let v = serde_json::json!({
            "seq": self.seq,
            "time": self.time,
            "operator": self.operator,
            "event": self.event,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        });
        canonical_json(&v)
    }
}

/// The message a checkpoint signs: `"nrfca-audit-checkpoint-v1\n<head_seq>\n<head_hash>\n"`.
pub fn checkpoint_message(head_seq: u64, head_hash: &str) -> Vec<u8> {
    format!("{CHECKPOINT_DOMAIN}{head_seq}\n{head_hash}\n").into_bytes()
}

/// Current UTC time as stored in records: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// Format a time as stored in records (UTC, milliseconds, `Z`).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Appends records to the audit log inside the caller's transaction.
///
/// Create it inside a write transaction ([`db::begin_immediate`], so no other writer
/// can move the head in between), append, and drop it with the transaction. If the
/// transaction rolls back, the writer's view of the head is stale: make a new one.
///
/// ```no_run
/// use nrfca::signer::{audit::AuditWriter, db};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let key: nrfca::signer::secret::CaKey = todo!();
/// let mut conn = db::open(std::path::Path::new("ca/ca.db"))?;
/// let tx = db::begin_immediate(&mut conn)?;
/// let mut audit = AuditWriter::new(&tx, "alice")?;
/// audit.append(&tx, "batch-started", &serde_json::json!({"batch": "b1"}))?;
/// // ... insert certificates, one `certificate-issued` record each ...
/// audit.append(&tx, "batch-committed", &serde_json::json!({"batch": "b1"}))?;
/// audit.checkpoint(&tx, &key)?;
/// drop(audit);
/// tx.commit()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AuditWriter {
    operator: String,
    next_seq: u64,
    head_hash: String,
    clock: Clock,
}

/// Record times, formatted once per millisecond (a batch writes many records in each).
#[derive(Debug, Default)]
struct Clock {
    unix_ms: i128,
    text: String,
}

impl Clock {
    fn now(&mut self) -> &str {
        let t = OffsetDateTime::now_utc();
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        if ms != self.unix_ms || self.text.is_empty() {
            self.unix_ms = ms;
            self.text = format_time(t);
        }
        &self.text
    }
}

/// Canonical details for [`AuditWriter::append_canonical`]: add the keys in byte order (the
/// caller's duty; `sign`'s uses are checked against [`canonical_json`] in the tests), with
/// string, bool or unsigned values (what the per-certificate events carry).
#[derive(Debug, Default)]
pub struct Details(String);

impl Details {
    /// Empty, with room for about `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Details(String::with_capacity(cap))
    }

    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        push_json_str(k, &mut self.0);
        self.0.push(':');
    }

    /// Add a string value.
    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        push_json_str(v, &mut self.0);
        self
    }

    /// Add a string value or `null`.
    pub fn opt_str(mut self, k: &str, v: Option<&str>) -> Self {
        self.key(k);
        match v {
            Some(v) => push_json_str(v, &mut self.0),
            None => self.0.push_str("null"),
        }
        self
    }

    /// Add a boolean value.
    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    /// Add an unsigned number.
    pub fn uint(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }

    /// The canonical JSON object.
    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

impl AuditWriter {
    /// Read the current head (seq and hash of the last record) once.
    pub fn new(conn: &Connection, operator: &str) -> Result<Self, AuditError> {
        let head = db::audit::head(conn)?;
        let (next_seq, head_hash) = match head {
            None => (1, GENESIS_HASH.to_string()),
            Some((seq, hash)) => {
                if seq < 1 || decode_hash(&hash).is_none() {
                    return Err(AuditError::Corrupt(format!(
                        "last record has seq {seq} and hash {hash:?}"
                    )));
                }
                (seq as u64 + 1, hash)
            }
        };
        Ok(AuditWriter {
            operator: operator.to_string(),
            next_seq,
            head_hash,
            clock: Clock::default(),
        })
    }

    /// Sequence number and hash of the last record written (0 and 64 zeros for an empty log).
    pub fn head(&self) -> (u64, &str) {
        (self.next_seq - 1, &self.head_hash)
    }

    /// Append one record; returns its seq. `details` must be a JSON object; `event` one of
    /// [`EVENTS`].
    pub fn append(
        &mut self,
        conn: &Connection,
        event: &str,
        details: &Value,
    ) -> Result<u64, AuditError> {
        if !details.is_object() {
            return Err(AuditError::BadEvent(format!(
                "details of {event} are not a JSON object"
            )));
        }
        self.append_canonical(conn, event, &canonical_json(details))
    }

    /// [`AuditWriter::append`] with the details already in canonical form (see
    /// [`Details`]): the per-certificate path of `sign`, which skips building a JSON value.
    pub fn append_canonical(
        &mut self,
        conn: &Connection,
        event: &str,
        details_canonical: &str,
    ) -> Result<u64, AuditError> {
        if !EVENTS.contains(&event) {
            return Err(AuditError::BadEvent(format!("unknown event {event:?}")));
        }
        let seq = self.next_seq;
        let time = self.clock.now();
        let canonical = canonical_record(
            seq,
            time,
            &self.operator,
            event,
            details_canonical,
            &self.head_hash,
        );
        let hash = chain_hash(&self.head_hash, &canonical)
            .ok_or_else(|| AuditError::Corrupt("head hash is not hex".into()))?;
        let seq_i = i64::try_from(seq).map_err(|_| AuditError::Corrupt("seq overflow".into()))?;
        db::audit::insert(
            conn,
            &db::audit::NewRecord {
                seq: seq_i,
                time,
                operator: &self.operator,
                event,
                details: details_canonical,
                prev_hash: &self.head_hash,
                hash: &hash,
            },
        )?;
        self.next_seq += 1;
        self.head_hash = hash;
        Ok(seq)
    }

    /// Append a `checkpoint` record signed by the CA key over the current head; also notes it
    /// in `meta` (`audit_checkpoint` = `"<seq> <hash>"`) so truncation of the table is caught.
    /// Returns the checkpoint's seq. Appending to an empty log is refused.
    pub fn checkpoint(&mut self, conn: &Connection, key: &CaKey) -> Result<u64, AuditError> {
        let (head_seq, head_hash) = (self.next_seq - 1, self.head_hash.clone());
        if head_seq == 0 {
            return Err(AuditError::BadEvent(
                "a checkpoint needs at least one record".into(),
            ));
        }
        let sig = key
            .sign_der(&checkpoint_message(head_seq, &head_hash))
            .map_err(AuditError::Sign)?;
        let details = serde_json::json!({
            "alg": "ecdsa-p256-sha256",
            "head_seq": head_seq,
            "head_hash": head_hash,
            "signature": crypto::b64_encode(&sig),
        });
        let seq = self.append(conn, "checkpoint", &details)?;
        db::meta::set(
            conn,
            db::meta::AUDIT_CHECKPOINT,
            &format!("{seq} {}", self.head_hash),
        )?;
        Ok(seq)
    }
}

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
        }
    }
}

fn raw_to_record(r: db::audit::RawRecord) -> Result<Record, String> {
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
    let cert = ca::load_cert(ca_dir)?;
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    verify_conn(&conn, &cert.public_key, &cert.fingerprint)
}

/// [`verify_db`] on an open connection (used inside other commands, e.g. after a batch).
pub fn verify_conn(
    conn: &Connection,
    ca_public: &[u8; 65],
    ca_fingerprint: &str,
) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier::new(*ca_public, ca_fingerprint.to_string(), true);
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
    })?;
    v.finish();
    let records = v.records;
    let chain_ok = v.first_bad.is_none();
    let last_checkpoint = v.last_checkpoint_seq;
    let mut findings: Vec<Finding> = Vec::new();

    // meta's note of the last checkpoint: catches a table truncated to before it.
    let noted = db::meta::get(conn, db::meta::AUDIT_CHECKPOINT)?;
    if let Some(noted) = noted {
        let mut it = noted.splitn(2, ' ');
        let seq = it.next().and_then(|s| s.parse::<u64>().ok());
        let hash = it.next().unwrap_or_default().to_string();
        match seq {
            Some(seq) if seq > records => findings.push(Finding {
                seq: records + 1,
                problem: format!(
                    "log truncated: ca.db noted a checkpoint at record {seq} but the log ends at {records}"
                ),
            }),
            Some(seq) if chain_ok && seq != last_checkpoint => findings.push(Finding {
                seq: seq.min(last_checkpoint) + 1,
                problem: format!(
                    "ca.db noted its last checkpoint at record {seq}, but the last CA-signed checkpoint in the log is record {last_checkpoint}: records were removed, or the note was rewritten"
                ),
            }),
            Some(seq) => {
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
            None => findings.push(Finding {
                seq: 1,
                problem: "ca.db's note of the last checkpoint is unreadable".into(),
            }),
        }
    } else if records > 0 {
        // Every checkpoint writes the note in its own transaction (ca init and import
        // included), so a log without one lost its tail together with the note.
        findings.push(Finding {
            seq: records + 1,
            problem: "ca.db has no note of its last checkpoint (meta audit_checkpoint), which every nrfca CA writes: the end of the log was deleted together with the note, or ca.db was edited".into(),
        });
    }

    // certificates ↔ certificate-issued agreement.
    if let Some(mut issued) = v.issued.take() {
        db::certificates::for_each(conn, |row| {
            let db::certificates::Row {
                serial,
                device_id,
                keygen_sha256: keygen,
                cert_sha256: cert,
                batch_id: batch,
                reissue,
                der,
                uuid,
                imei,
                sec_tag,
                public_key,
                not_before,
                not_after,
            } = row;
            let (der, public_key) = (&der[..], &public_key[..]);
            // The stored certificate must be the one whose PEM hash the audit log holds.
            let bytes_ok =
                crypto::sha256_hex(crate::util::pem_encode("CERTIFICATE", der).as_bytes()) == cert;
            // The columns the certificate itself states must be what it states (the DER is
            // covered by the chain through cert_sha256 when the bytes agree).
            let mut cert_diffs = if bytes_ok {
                cert_column_diffs(
                    der,
                    &CertColumns {
                        serial: &serial,
                        device_id: &device_id,
                        public_key,
                        not_before: &not_before,
                        not_after: &not_after,
                    },
                )
            } else {
                Vec::new()
            };
            match issued.remove(&serial) {
                None => findings.push(Finding {
                    seq: records + 1,
                    problem: format!(
                        "certificate {serial} (device {device_id}) is in ca.db but has no certificate-issued record: audit records are missing"
                    ),
                }),
                Some(rec) => {
                    let mut diffs = Vec::new();
                    if rec.device_id != device_id {
                        diffs.push("device_id");
                    }
                    if rec.keygen_sha256 != keygen {
                        diffs.push("keygen_sha256");
                    }
                    if rec.cert_sha256 != cert {
                        diffs.push("cert_sha256");
                    }
                    if !bytes_ok {
                        diffs.push("certificate bytes");
                    }
                    if rec.batch != batch {
                        diffs.push("batch");
                    }
                    if rec.reissue != (reissue != 0) {
                        diffs.push("reissue");
                    }
                    if rec.uuid.as_ref().is_some_and(|u| *u != uuid) {
                        diffs.push("uuid");
                    }
                    if rec.imei.as_ref().is_some_and(|i| *i != imei) {
                        diffs.push("imei");
                    }
                    if rec
                        .sec_tag
                        .is_some_and(|t| i64::try_from(t).ok() != Some(sec_tag))
                    {
                        diffs.push("sec_tag");
                    }
                    diffs.append(&mut cert_diffs);
                    if !diffs.is_empty() {
                        findings.push(Finding {
                            seq: rec.seq,
                            problem: format!(
                                "certificate {serial} in ca.db disagrees with its certificate-issued record ({})",
                                diffs.join(", ")
                            ),
                        });
                    }
                }
            }
        })?;
        for (serial, rec) in issued {
            findings.push(Finding {
                seq: rec.seq,
                problem: format!(
                    "certificate-issued record for serial {serial} has no row in ca.db's certificates"
                ),
            });
        }
    }
    let mut report = v.report();
    if let Some(f) = report.first_bad.take() {
        findings.push(f);
    }
    report.first_bad = findings.into_iter().min_by_key(|f| f.seq);
    Ok(report)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_escapes_like_serde_json() {
        let v =
            serde_json::json!({"b": 1, "a": {"z": [true, null, "x\"y\\\n"], "é": "ü"}, "A": -2});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":-2,"a":{"z":[true,null,"x\"y\\\n"],"é":"ü"},"b":1}"#
        );
        for s in [
            "plain",
            "quote\"",
            "back\\slash",
            "ctl\u{1}\t",
            "ünïcode",
            "",
        ] {
            let mut out = String::new();
            push_json_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn record_hash_matches_the_documented_formula() {
        let r = Record {
            seq: 1,
            time: "2025-01-01T00:00:00.000Z".into(),
            operator: "alice".into(),
            event: "ca-created".into(),
            details: serde_json::json!({"fingerprint": "ab"}),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let canonical = r#"{"details":{"fingerprint":"ab"},"event":"ca-created","operator":"alice","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,"time":"2025-01-01T00:00:00.000Z"}"#;
        let mut buf = vec![0u8; 32];
        buf.extend_from_slice(canonical.as_bytes());
        assert_eq!(r.compute_hash().unwrap(), crypto::sha256_hex(&buf));
        assert_eq!(
            checkpoint_message(7, "ab"),
            b"nrfca-audit-checkpoint-v1\n7\nab\n".to_vec()
        );
    }

    #[test]
    fn writer_refuses_unknown_events_and_non_objects() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("ca.db")).unwrap();
        let mut w = AuditWriter::new(&conn, "t").unwrap();
        assert!(w.append(&conn, "made-up", &serde_json::json!({})).is_err());
        assert!(w
            .append(&conn, "batch-started", &serde_json::json!([1]))
            .is_err());
        assert_eq!(
            w.append(&conn, "batch-started", &serde_json::json!({"batch": "b"}))
                .unwrap(),
            1
        );
        assert_eq!(w.head().0, 1);
        // A second writer continues the chain.
        let mut w2 = AuditWriter::new(&conn, "t").unwrap();
        assert_eq!(
            w2.append(&conn, "batch-committed", &serde_json::json!({}))
                .unwrap(),
            2
        );
    }

    #[test]
    fn hostile_export_lines_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        // Any CA certificate will do for parsing; make one.
        let id = age::x25519::Identity::generate();
        let ca_dir = dir.path().join("ca");
        crate::signer::ca::init(
            &ca_dir,
            &crate::signer::ca::InitOptions {
                subject: "CN=T".into(),
                days: 2,
                protection: crate::signer::secret::Protection::Recipients(vec![id
                    .to_public()
                    .to_string()]),
                operator: "t".into(),
            },
        )
        .unwrap();
        std::fs::copy(ca_dir.join("ca.pem"), &cert).unwrap();
        for content in [
            &b""[..],
            b"{",
            b"{}\n",
            b"{\"seq\":1}\n",
            b"\xff\xfe\n",
            b"seq,time\n1,2\n",
            b"seq,time,operator,event,details,prev_hash,hash\n1,t,o,e,{,p,h\nx\n",
            b"{\"seq\":18446744073709551615,\"time\":\"\",\"operator\":\"\",\"event\":\"\",\"details\":{},\"prev_hash\":\"\",\"hash\":\"\"}\n",
        ] {
            let f = dir.path().join("log");
            std::fs::write(&f, content).unwrap();
            let r = verify_file(&f, &cert).unwrap();
            assert!(r.first_bad.is_some(), "{content:?}");
        }
    }
}
