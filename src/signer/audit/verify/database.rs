//! The `ca.db` front end of `audit verify`: read the log out of the database, walk it, then
//! check `meta`'s note and the `certificates` table against it.

use super::checks::{check_note, issued_agreement, NoteCheck};
use super::walk::Verifier;
use super::*;
use crate::signer::ca_files as ca;

pub(in crate::signer::audit) fn raw_to_record(r: db::audit::RawRecord) -> Result<Record, String> {
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
