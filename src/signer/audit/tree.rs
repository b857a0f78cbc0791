//! The audit log as an RFC 9162 Merkle tree (SPEC §11): leaf *i* is the 32-byte chain hash of
//! record *i*; the CA-signed checkpoints kept in `ca.db`'s `checkpoints` table; and the
//! checks of a log against checkpoints (prefix, coverage).
//!
//! A Merkle checkpoint is signed by [`AuditWriter::checkpoint`](super::AuditWriter::checkpoint)
//! right after the chain's own `checkpoint` record, in the same transaction, so it covers the
//! whole log including that record; the chain records are unchanged.

use super::AuditError;
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::merkle::{self, Hash};
use crate::signer::db::{self, Connection};
use crate::signer::secret::CaKey;

/// The one place a checkpoint body is signed with the CA key (DER ECDSA-SHA256 over `bytes`).
pub fn sign_checkpoint_bytes(key: &CaKey, bytes: &[u8]) -> Result<Vec<u8>, AuditError> {
    key.sign_der(bytes).map_err(AuditError::Sign)
}

fn leaf(hex_hash: &str) -> Result<Hash, AuditError> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut h)
        .map_err(|_| AuditError::Corrupt(format!("record hash {hex_hash:?} is not hex")))?;
    Ok(h)
}

/// The tree of the first `upto` records (all with `None`).
pub fn tree(conn: &Connection, upto: Option<u64>) -> Result<merkle::Tree, AuditError> {
    let upto = upto.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
    let mut t = merkle::Tree::new();
    for h in db::checkpoints::leaves(conn, upto)? {
        t.push(&leaf(&h)?);
    }
    Ok(t)
}

/// The CA fingerprint recorded in `ca.db`.
pub fn ca_fingerprint(conn: &Connection) -> Result<String, AuditError> {
    db::meta::get(conn, db::meta::CA_FINGERPRINT)?
        .ok_or_else(|| AuditError::Corrupt("ca.db has no CA fingerprint".into()))
}

/// Sign and store the checkpoint of the whole log as it stands in `conn` (the caller's
/// transaction). Returns it.
pub fn write_checkpoint(conn: &Connection, key: &CaKey) -> Result<SignedCheckpoint, AuditError> {
    let fp = ca_fingerprint(conn)?;
    let t = tree(conn, None)?;
    let c =
        Checkpoint::new(&fp, t.len(), t.root()).map_err(|e| AuditError::Corrupt(e.to_string()))?;
    let signed = c
        .sign(|m| sign_checkpoint_bytes(key, m))
        .map_err(|e| AuditError::Corrupt(e.to_string()))?;
    db::checkpoints::insert(
        conn,
        &db::checkpoints::StoredCheckpoint {
            size: i64::try_from(c.size).unwrap_or(i64::MAX),
            root: crate::crypto::b64_encode(&c.root),
            text: signed.text.clone(),
            signature: crate::crypto::b64_encode(&signed.signature_der),
            created_at: super::now_rfc3339(),
        },
    )?;
    Ok(signed)
}

fn parse_stored(s: &db::checkpoints::StoredCheckpoint) -> Result<SignedCheckpoint, AuditError> {
    let checkpoint = Checkpoint::parse(s.text.as_bytes())
        .map_err(|e| AuditError::Corrupt(format!("stored checkpoint of size {}: {e}", s.size)))?;
    let signature_der = crate::crypto::b64_decode(&s.signature).map_err(|_| {
        AuditError::Corrupt(format!(
            "stored checkpoint of size {}: bad signature",
            s.size
        ))
    })?;
    Ok(SignedCheckpoint {
        checkpoint,
        text: s.text.clone(),
        signature_der,
    })
}

/// The newest stored checkpoint (`None` before the first one: an old `ca.db` not yet opened
/// by a command that holds the key).
pub fn newest(conn: &Connection) -> Result<Option<SignedCheckpoint>, AuditError> {
    db::checkpoints::newest(conn)?
        .map(|s| parse_stored(&s))
        .transpose()
}

/// The first stored checkpoint covering at least `size` records.
pub fn first_covering(
    conn: &Connection,
    size: u64,
) -> Result<Option<SignedCheckpoint>, AuditError> {
    db::checkpoints::first_covering(conn, i64::try_from(size).unwrap_or(i64::MAX))?
        .map(|s| parse_stored(&s))
        .transpose()
}

/// Every stored checkpoint, smallest first (unverified).
pub fn all(conn: &Connection) -> Result<Vec<SignedCheckpoint>, AuditError> {
    db::checkpoints::all(conn)?
        .iter()
        .map(parse_stored)
        .collect()
}
