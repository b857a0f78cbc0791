//! The record walk: a streaming verifier fed the log in order, checking the canonical form,
//! the hash chain, the sequence, every checkpoint signature and the events that must be
//! checkpointed, and collecting the `certificate-issued` records.

use super::*;
use std::collections::HashMap;

/// Streaming verifier: feed records in file/seq order.
pub(super) struct Verifier {
    ca_public: [u8; 65],
    ca_fingerprint: String,
    pub(super) expected_seq: u64,
    prev_hash: String,
    pub(super) records: u64,
    head_hash: String,
    pub(super) last_checkpoint_seq: u64,
    pub(super) first_bad: Option<Finding>,
    pub(super) issued: Option<HashMap<String, IssuedRec>>,
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
    pub(super) fn new(ca_public: [u8; 65], ca_fingerprint: String, collect_issued: bool) -> Self {
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
    pub(super) fn not_canonical(&mut self, seq: u64, what: &str) {
        self.bad(
            seq,
            format!(
                "record {seq} is not in canonical form ({what}): the exact line is not what the chain hashed (edited, e.g. duplicate JSON keys spliced in)"
            ),
        );
    }

    /// End-of-log checks, once every record was fed: an empty log, a log without any
    /// CA-signed checkpoint, and batch or certificate events after the last checkpoint.
    pub(super) fn finish(&mut self) {
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
    pub(super) fn feed_unparsable(&mut self, what: String) {
        self.records += 1;
        let seq = self.expected_seq;
        self.bad(seq, format!("record {seq} cannot be read: {what}"));
        self.expected_seq += 1;
    }

    pub(super) fn feed(&mut self, r: &Record) {
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

    pub(super) fn report(self) -> VerifyReport {
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
