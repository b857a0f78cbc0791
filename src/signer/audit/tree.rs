//! The audit log as an RFC 9162 Merkle tree (SPEC §11): leaf *i* is the 32-byte chain hash of
//! record *i*; the CA-signed checkpoints kept in `ca.db`'s `checkpoints` table; and the
//! checks of a log against checkpoints (prefix, coverage).
//!
//! A Merkle checkpoint is signed by [`AuditWriter::checkpoint`](super::AuditWriter::checkpoint)
//! right after the chain's own `checkpoint` record, in the same transaction, so it covers the
//! whole log including that record; the chain records are unchanged.

use super::AuditError;
use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::merkle::{self, Hash};
use crate::signer::db::{self, Connection};
use crate::signer::key::CaSigner;

/// The one place a checkpoint body is signed with the CA key (DER ECDSA-SHA256 over `bytes`).
pub fn sign_checkpoint_bytes(key: &dyn CaSigner, bytes: &[u8]) -> Result<Vec<u8>, AuditError> {
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

/// `"<size> <hash of record size> <node hex>,<node hex>,…"`.
fn frontier_text(f: &merkle::Frontier, last_hash: &str) -> String {
    let nodes: Vec<String> = f.nodes().iter().map(hex::encode).collect();
    format!("{} {last_hash} {}", f.size(), nodes.join(","))
}

fn parse_frontier(s: &str) -> Option<(merkle::Frontier, &str)> {
    let mut it = s.splitn(3, ' ');
    let (size, last, nodes) = (it.next()?, it.next()?, it.next().unwrap_or(""));
    let size: u64 = size.parse().ok()?;
    let nodes: Option<Vec<Hash>> = nodes
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            let mut h = [0u8; 32];
            hex::decode_to_slice(n, &mut h).ok().map(|_| h)
        })
        .collect();
    Some((merkle::Frontier::from_parts(size, nodes?)?, last))
}

/// The frontier of the whole log: the one noted at the last checkpoint with the records
/// added since appended (a handful of hashes per record), or rebuilt from every record when
/// there is no usable note (a ca.db of schema 3, a log shorter than the note). A wrong note
/// signs a wrong root, which `audit verify` reports (a stored checkpoint that is not a
/// prefix of the log).
fn frontier(conn: &Connection) -> Result<merkle::Frontier, AuditError> {
    let note = db::meta::get(conn, db::meta::MERKLE_FRONTIER)?;
    let mut f = merkle::Frontier::new();
    if let Some((noted, last)) = note.as_deref().and_then(parse_frontier) {
        // Usable only if the log still holds the record the note ends at, unchanged.
        let seq = i64::try_from(noted.size()).unwrap_or(i64::MAX);
        let still = seq == 0 || db::audit::hash_at(conn, seq)?.as_deref() == Some(last);
        if still {
            f = noted;
        }
    }
    let after = i64::try_from(f.size()).unwrap_or(i64::MAX);
    for h in db::checkpoints::leaves_after(conn, after)? {
        f.push(&leaf(&h)?);
    }
    Ok(f)
}

/// Sign and store the checkpoint of the whole log as it stands in `conn` (the caller's
/// transaction). Returns it.
pub fn write_checkpoint(
    conn: &Connection,
    key: &dyn CaSigner,
) -> Result<SignedCheckpoint, AuditError> {
    let fp = ca_fingerprint(conn)?;
    let f = frontier(conn)?;
    let last = db::audit::head(conn)?.map(|(_, h)| h).unwrap_or_default();
    db::meta::set(conn, db::meta::MERKLE_FRONTIER, &frontier_text(&f, &last))?;
    let c =
        Checkpoint::new(&fp, f.size(), f.root()).map_err(|e| AuditError::Corrupt(e.to_string()))?;
    let signed = c
        .sign(|m| sign_checkpoint_bytes(key, m).map_err(|e| crate::error::error_chain(&e)))
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

/// The `limit` newest stored checkpoints, newest first (unverified).
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<SignedCheckpoint>, AuditError> {
    db::checkpoints::recent(conn, i64::try_from(limit).unwrap_or(i64::MAX))?
        .iter()
        .map(parse_stored)
        .collect()
}

/// Every stored checkpoint, smallest first (unverified).
pub fn all(conn: &Connection) -> Result<Vec<SignedCheckpoint>, AuditError> {
    db::checkpoints::all(conn)?
        .iter()
        .map(parse_stored)
        .collect()
}

/// A checkpoint given to `audit verify --checkpoint FILE`: the file's name (for messages)
/// and the checkpoint (the three-line body, as in a bundle or the ceremony record).
#[derive(Debug, Clone)]
pub struct GivenCheckpoint {
    /// Where it came from.
    pub name: String,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

impl GivenCheckpoint {
    /// Parse the bytes of a `checkpoint` file named `name` (a parser: no I/O).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<GivenCheckpoint, AuditError> {
        let checkpoint = Checkpoint::parse(bytes).map_err(|e| {
            AuditError::Filter(format!(
                "--checkpoint {name}: {e}; give the `checkpoint` file of a bundle, or the three lines of the ceremony record"
            ))
        })?;
        Ok(GivenCheckpoint {
            name: name.to_string(),
            checkpoint,
        })
    }
}

fn finding_for(g: &GivenCheckpoint, records: u64, e: CheckpointError) -> super::Finding {
    let why = match e {
        CheckpointError::WrongOrigin { found, expected } => {
            format!("is of another CA ({found}, this log is {expected})")
        }
        CheckpointError::NotAnExtension { why, .. } => why,
        other => other.to_string(),
    };
    super::Finding {
        seq: g.checkpoint.size.min(records) + 1,
        problem: format!(
            "the log does not extend the checkpoint {} (size {}): {why}; the log was truncated or rolled back (ca.db restored from an older backup), or is another log: find the newest ca.db and verify it against this checkpoint",
            g.name, g.checkpoint.size
        ),
    }
}

/// Check that the leaves (chain hashes, in order) extend every given checkpoint of `origin`:
/// one finding per checkpoint they do not.
pub fn check_given<L: AsRef<[u8]>>(
    origin: &str,
    leaves: impl Fn() -> Vec<L>,
    records: u64,
    given: &[GivenCheckpoint],
) -> Vec<super::Finding> {
    let mut out = Vec::new();
    for g in given {
        if let Err(e) = crate::checkpoint::verify_log_extends(
            origin,
            leaves(),
            std::slice::from_ref(&g.checkpoint),
        ) {
            out.push(finding_for(g, records, e));
        }
    }
    out
}

/// The leaves of the whole log in `ca.db` (the records' chain hashes, in order).
pub fn leaves(conn: &Connection) -> Result<Vec<Hash>, AuditError> {
    db::checkpoints::leaves(conn, None)?
        .iter()
        .map(|h| leaf(h))
        .collect()
}

/// `audit verify --ca-dir`'s checks of the Merkle checkpoints in `ca.db`: every stored one is
/// signed by the CA and is a prefix of the log, and the newest covers the last CA-signed chain
/// checkpoint (`last_chain_checkpoint`). Returns the newest stored checkpoint (None in an old
/// ca.db not yet opened with the key) and the findings.
pub fn check_db(
    conn: &Connection,
    ca_public: &[u8],
    ca_fingerprint: &str,
    last_chain_checkpoint: u64,
) -> Result<(Option<Checkpoint>, Vec<super::Finding>), AuditError> {
    let leaves = leaves(conn)?;
    let records = leaves.len() as u64;
    let origin = crate::checkpoint::origin_for(ca_fingerprint);
    let mut findings = Vec::new();
    let stored = all(conn)?;
    for s in &stored {
        let c = &s.checkpoint;
        let bad = |problem: String| super::Finding {
            seq: c.size.min(records) + 1,
            problem,
        };
        if !crate::crypto::verify_p256_sha256(ca_public, s.text.as_bytes(), &s.signature_der)
            || c.origin != origin
        {
            findings.push(bad(format!(
                "the stored checkpoint of size {} is not signed by this CA (ca.db was edited)",
                c.size
            )));
            continue;
        }
        if let Err(e) =
            crate::checkpoint::verify_log_extends(&origin, leaves.iter(), std::slice::from_ref(c))
        {
            findings.push(bad(format!(
                "the log does not extend its own stored checkpoint of size {}: {e}; records were removed or rewritten",
                c.size
            )));
        }
    }
    let newest = stored.last().map(|s| s.checkpoint.clone());
    if let Some(n) = &newest {
        if n.size < last_chain_checkpoint {
            findings.push(super::Finding {
                seq: n.size + 1,
                problem: format!(
                    "the newest Merkle checkpoint covers {} records but the log has a CA-signed checkpoint at record {last_chain_checkpoint}: Merkle checkpoints were removed from ca.db",
                    n.size
                ),
            });
        }
    }
    Ok((newest, findings))
}
