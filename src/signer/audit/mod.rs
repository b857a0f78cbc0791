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
//! This module: records, the canonical form, the chain and the [`AuditWriter`]; checking a
//! log is `verify`'s, reading it out [`export`]'s (`audit show` / `audit export`). The
//! library never prints; the CLI renders [`VerifyReport`] and [`Record`]s.

mod export;
pub(crate) mod tree;
mod verify;

pub use export::{export, show, ExportFormat, ExportSummary, Filter};
pub use tree::GivenCheckpoint;
pub use verify::{
    verify_conn, verify_db, verify_db_with, verify_file, verify_file_with, Finding, VerifyReport,
    CHECKPOINTED_EVENTS, CSV_HEADER,
};

use crate::crypto;
use crate::signer::ca_files::CaFileError;
use crate::signer::db;
use crate::signer::db::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io;
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
    "key-reshared",
    "batch-started",
    "certificate-issued",
    "certificate-returned",
    "request-rejected",
    "batch-committed",
    "batch-failed",
    "checkpoint",
    "bundle-written",
    "audit-exported",
    "certificate-revoked",
    "crl-issued",
    "verification-cert-issued",
    "intermediate-issued",
    "bench-trusted",
    "bench-distrusted",
    "input-refused",
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
    Sign(#[source] crate::signer::key::KeyError),
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
/// Create it inside a write transaction (`db::begin_immediate`, so no other writer
/// can move the head in between), append, and drop it with the transaction. If the
/// transaction rolls back, the writer's view of the head is stale: make a new one.
///
/// The flow, as the signer's operations run it (`ca.db` is opened only by the crate: its
/// `signer::db` layer is private, so this is not compiled as a doctest; `tests/ca_audit.rs`
/// and `benches/micro.rs` run it through `nrfca::internal`; `key` is the unlocked CA key):
///
/// ```text
/// use crate::signer::{audit::AuditWriter, db};
/// let mut conn = db::open(std::path::Path::new("ca/ca.db"))?;
/// let tx = db::begin_immediate(&mut conn)?;
/// let mut audit = AuditWriter::new(&tx, "alice")?;
/// audit.append(&tx, "batch-started", &serde_json::json!({"batch": "b1"}))?;
/// // ... insert certificates, one `certificate-issued` record each ...
/// audit.append(&tx, "batch-committed", &serde_json::json!({"batch": "b1"}))?;
/// audit.checkpoint(&tx, key.as_ref())?;
/// drop(audit);
/// tx.commit()?;
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
    pub fn checkpoint(
        &mut self,
        conn: &Connection,
        key: &dyn crate::signer::key::CaSigner,
    ) -> Result<u64, AuditError> {
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
        // The Merkle checkpoint (SPEC §11) over the whole log, this record included.
        tree::write_checkpoint(conn, key)?;
        Ok(seq)
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
