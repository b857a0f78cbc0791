//! `audit verify`: the chain, the sequence, every checkpoint signature, the last checkpoint
//! noted in `meta`, and the agreement of the `certificates` table with the
//! `certificate-issued` records, over `ca.db` or an exported file (JSONL or CSV).

mod checks;
mod database;
mod file;
mod walk;

pub(super) use database::raw_to_record;
pub use database::{verify_conn, verify_db, verify_db_with};
pub use file::{verify_file, verify_file_with, CSV_HEADER};
pub use walk::CHECKPOINTED_EVENTS;

use super::*;

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

/// The earliest finding wins; on a tie, a given checkpoint's (the question the auditor
/// asked), then the chain's own, then the stored checkpoints'.
fn merge_findings(report: &mut VerifyReport, given: Vec<Finding>, stored: Vec<Finding>) {
    let mut all = given;
    all.extend(report.first_bad.take());
    all.extend(stored);
    report.first_bad = all.into_iter().min_by_key(|f| f.seq);
}
