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

/// Leaves per tile: `merkle_tiles` holds the hash of every complete aligned block of this
/// many leaves (a subtree of height 8).
pub const TILE: u64 = 256;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The leaf hashes of leaves `start .. end` read from `ca.db`.
/// Also the chain hash (hex) of the last record read, which a tile keeps.
fn leaf_hashes(
    conn: &Connection,
    start: u64,
    end: u64,
) -> Result<(Vec<Hash>, Option<String>), AuditError> {
    let mut hexes = db::checkpoints::leaves_between(conn, to_i64(start), to_i64(end))?;
    let leaves = hexes
        .iter()
        .map(|h| leaf(h).map(|l| merkle::leaf_hash(&l)))
        .collect::<Result<_, _>>()?;
    Ok((leaves, hexes.pop()))
}

/// The log in `ca.db` as [`merkle::Nodes`] for roots and proofs: complete 256-leaf blocks
/// from `merkle_tiles`, the leaves of partial blocks read as needed. A root or a
/// consistency proof costs O(n/256) hashes and a few hundred rows, where rebuilding the tree
/// from every record cost ~3 µs and ~600 bytes of page cache per record (0.3 s and 57 MB per
/// batch at 100 000 records, growing with the log).
pub struct LogNodes<'c> {
    conn: &'c Connection,
    size: u64,
    tiles: Vec<Hash>,
}

impl std::fmt::Debug for LogNodes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LogNodes({} leaves, {} tiles)",
            self.size,
            self.tiles.len()
        )
    }
}

impl<'c> LogNodes<'c> {
    /// The tree of the first `size` records (the whole log with `None`). Only the tiles
    /// stored contiguously from block 0 are used; a block without one is read leaf by leaf.
    pub fn open(conn: &'c Connection, size: Option<u64>) -> Result<Self, AuditError> {
        let records = db::audit::head(conn)?.map_or(0, |(seq, _)| u64::try_from(seq).unwrap_or(0));
        let size = size.map_or(records, |s| s.min(records));
        let mut tiles = Vec::new();
        for (idx, h) in db::checkpoints::tiles(conn, to_i64(size / TILE))? {
            let (Ok(i), Ok(h)) = (u64::try_from(idx), <Hash>::try_from(h.as_slice())) else {
                break;
            };
            if i != tiles.len() as u64 {
                break;
            }
            tiles.push(h);
        }
        Ok(LogNodes { conn, size, tiles })
    }
}

impl merkle::Nodes for LogNodes<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, merkle::MerkleError> {
        let n = end - start;
        if n == 0 {
            return Ok(merkle::EMPTY_ROOT);
        }
        if n >= TILE
            && n.is_power_of_two()
            && start % n == 0
            && end / TILE <= self.tiles.len() as u64
        {
            let (a, b) = ((start / TILE) as usize, (end / TILE) as usize);
            return Ok(merkle::root_of_leaf_hashes(&self.tiles[a..b]));
        }
        if n > TILE {
            let k = merkle::split_point(n);
            return Ok(merkle::node_hash(
                &self.range_hash(start, start + k)?,
                &self.range_hash(start + k, end)?,
            ));
        }
        let (leaves, _) = leaf_hashes(self.conn, start, end)
            .map_err(|e| merkle::MerkleError::Source(crate::error::error_chain(&e)))?;
        if leaves.len() as u64 != n {
            return Err(merkle::MerkleError::Source(format!(
                "ca.db holds {} of the records {}..={end}",
                leaves.len(),
                start + 1
            )));
        }
        Ok(merkle::root_of_leaf_hashes(&leaves))
    }
}

/// Bring `merkle_tiles` up to the log's `size` records: a hash per complete 256-record block
/// not yet stored (O(new records)). Tiles are derived data: if the newest no longer matches
/// the log (a `ca.db` cut and regrown), all are dropped and rebuilt. A wrong tile can only
/// make a proof fail to verify, never make a bad log pass: roots are signed from the
/// frontier, and the bench checks every proof against them.
fn extend_tiles(conn: &Connection, size: u64) -> Result<(), AuditError> {
    let complete = size / TILE;
    let mut next = 0;
    if let Some((idx, last)) = db::checkpoints::newest_tile(conn)? {
        let idx = u64::try_from(idx).unwrap_or(u64::MAX);
        let still = idx < complete
            && db::audit::hash_at(conn, to_i64((idx + 1) * TILE))?.as_deref() == Some(&last);
        if still {
            next = idx + 1;
        } else {
            db::checkpoints::clear_tiles(conn)?;
        }
    }
    for idx in next..complete {
        let (leaves, last) = leaf_hashes(conn, idx * TILE, (idx + 1) * TILE)?;
        let Some(last) = last.filter(|_| leaves.len() as u64 == TILE) else {
            return Err(AuditError::Corrupt(format!(
                "the audit log has a gap in records {}..={}",
                idx * TILE + 1,
                (idx + 1) * TILE
            )));
        };
        db::checkpoints::insert_tile(
            conn,
            to_i64(idx),
            &merkle::root_of_leaf_hashes(&leaves),
            &last,
        )?;
    }
    Ok(())
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
    db::checkpoints::for_each_leaf_after(conn, after, |h| -> Result<(), AuditError> {
        f.push(&leaf(h)?);
        Ok(())
    })?;
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
    extend_tiles(conn, f.size())?;
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

/// Refuse a given checkpoint of another CA than the log's (`origin`) before anything is
/// checked against it: it says nothing about this log, and reporting it as a log that "does
/// not extend" it would send the officer to restore a good `ca.db` from a backup (a real
/// rollback). It is the wrong file, a usage error.
pub fn check_given_origins(origin: &str, given: &[GivenCheckpoint]) -> Result<(), AuditError> {
    match given.iter().find(|g| g.checkpoint.origin != origin) {
        Some(g) => Err(AuditError::Filter(format!(
            "--checkpoint {} is a checkpoint of another CA ({}), not of this log's CA ({origin}); nothing was checked against it. Give the `checkpoint` file of a bundle of this CA, or the three lines of its ceremony record",
            g.name, g.checkpoint.origin
        ))),
        None => Ok(()),
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
    db::checkpoints::leaves_between(conn, 0, i64::MAX)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{self, Nodes};

    /// A ca.db holding `n` audit records whose chain hashes are derived from `salt`.
    fn log(dir: &std::path::Path, n: u64, salt: u8) -> Connection {
        let conn = db::open(&dir.join("ca.db")).unwrap();
        append(&conn, 0, n, salt);
        conn
    }

    fn append(conn: &Connection, from: u64, to: u64, salt: u8) {
        for seq in from + 1..=to {
            let hash = hex::encode(crate::crypto::sha256(
                &[&seq.to_be_bytes()[..], &[salt]].concat(),
            ));
            db::audit::insert(
                conn,
                &db::audit::NewRecord {
                    seq: seq as i64,
                    time: "2026-01-01T00:00:00Z",
                    operator: "t",
                    event: "test",
                    details: "{}",
                    prev_hash: "",
                    hash: &hash,
                },
            )
            .unwrap();
        }
    }

    fn memory_tree(conn: &Connection) -> merkle::Tree {
        let mut t = merkle::Tree::new();
        for l in leaves(conn).unwrap() {
            t.push(&l);
        }
        t
    }

    /// Roots and consistency proofs read through the tiles equal the in-memory tree's, for
    /// sizes around tile and power-of-two edges, with no tiles, all tiles, and a prefix of them.
    #[test]
    fn log_nodes_match_the_in_memory_tree() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * TILE * 2 + 37; // 1573: six tiles and a partial block
        let conn = log(dir.path(), n, 1);
        let t = memory_tree(&conn);
        let sizes = [
            1,
            2,
            255,
            256,
            257,
            511,
            512,
            513,
            700,
            1024,
            1025,
            1536,
            n - 1,
            n,
        ];
        let check = |nodes: &LogNodes<'_>| {
            for &m in &sizes {
                assert_eq!(
                    merkle::root_at(nodes, m).unwrap(),
                    t.root_at(m).unwrap(),
                    "root {m}"
                );
                for &k in &sizes {
                    if k <= m {
                        assert_eq!(
                            merkle::consistency_proof(nodes, k, m).unwrap(),
                            t.consistency_proof(k, m).unwrap(),
                            "proof {k} -> {m}"
                        );
                    }
                }
            }
        };
        // No tiles yet: every block read leaf by leaf.
        let nodes = LogNodes::open(&conn, None).unwrap();
        assert_eq!(nodes.tiles.len(), 0);
        check(&nodes);
        // Tiles up to 700 records (two), then all six.
        extend_tiles(&conn, 700).unwrap();
        let nodes = LogNodes::open(&conn, None).unwrap();
        assert_eq!(nodes.tiles.len(), 2);
        check(&nodes);
        extend_tiles(&conn, n).unwrap();
        let nodes = LogNodes::open(&conn, None).unwrap();
        assert_eq!(nodes.tiles.len(), 6);
        check(&nodes);
        // A prefix view sees only its own records.
        let prefix = LogNodes::open(&conn, Some(600)).unwrap();
        assert_eq!(prefix.size(), 600);
        assert_eq!(
            merkle::root_at(&prefix, 600).unwrap(),
            t.root_at(600).unwrap()
        );
        assert!(merkle::root_at(&prefix, 601).is_err());
    }

    /// A log cut back and regrown with other records: the stale tiles are dropped and rebuilt,
    /// so roots and proofs follow the new records.
    #[test]
    fn stale_tiles_of_a_cut_and_regrown_log_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let conn = log(dir.path(), 4 * TILE, 1);
        extend_tiles(&conn, 4 * TILE).unwrap();
        conn.execute("DELETE FROM audit WHERE seq > 300", [])
            .unwrap();
        append(&conn, 300, 5 * TILE, 2);
        extend_tiles(&conn, 5 * TILE).unwrap();
        let t = memory_tree(&conn);
        let nodes = LogNodes::open(&conn, None).unwrap();
        assert_eq!(nodes.tiles.len(), 5);
        assert_eq!(merkle::root_at(&nodes, 5 * TILE).unwrap(), t.root());
        assert_eq!(
            merkle::consistency_proof(&nodes, 300, 5 * TILE).unwrap(),
            t.consistency_proof(300, 5 * TILE).unwrap()
        );
        // A gap in the log is an error, not a wrong root.
        conn.execute("DELETE FROM audit WHERE seq = 10", [])
            .unwrap();
        let nodes = LogNodes::open(&conn, None).unwrap();
        assert!(merkle::root_at(&nodes, 200).is_err());
    }
}
