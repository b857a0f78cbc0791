//! The `checkpoints` table of `ca.db`: the CA-signed Merkle checkpoints of the audit log
//! (SPEC §11), one per tree size, and the leaf data (chain hashes) the tree is built from.

use rusqlite::{Connection, OptionalExtension};

/// One stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size (audit records covered).
    pub size: i64,
    /// Base64 root.
    pub root: String,
    /// The exact signed `checkpoint` body.
    pub text: String,
    /// Base64 DER ECDSA-SHA256 signature over `text`.
    pub signature: String,
    /// When it was signed (RFC 3339 UTC).
    pub created_at: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.get(0)?,
        root: r.get(1)?,
        text: r.get(2)?,
        signature: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const COLS: &str = "size, root, text, signature, created_at";

/// Store a checkpoint (a second one of the same size replaces the first: same log, same root).
pub fn insert(conn: &Connection, c: &StoredCheckpoint) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO checkpoints({COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(rusqlite::params![
        c.size,
        c.root,
        c.text,
        c.signature,
        c.created_at
    ])?;
    Ok(())
}

/// The checkpoint with the largest size.
pub fn newest(conn: &Connection) -> rusqlite::Result<Option<StoredCheckpoint>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM checkpoints ORDER BY size DESC LIMIT 1"),
        [],
        row,
    )
    .optional()
}

/// The `limit` largest stored checkpoints, largest first.
pub fn recent(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<StoredCheckpoint>> {
    let mut st = conn.prepare(&format!(
        "SELECT {COLS} FROM checkpoints ORDER BY size DESC LIMIT ?1"
    ))?;
    let rows = st.query_map([limit], row)?;
    rows.collect()
}

/// Every stored checkpoint, smallest first.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<StoredCheckpoint>> {
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM checkpoints ORDER BY size"))?;
    let rows = st.query_map([], row)?;
    rows.collect()
}

/// The smallest checkpoint covering at least `size` records.
pub fn first_covering(conn: &Connection, size: i64) -> rusqlite::Result<Option<StoredCheckpoint>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM checkpoints WHERE size >= ?1 ORDER BY size LIMIT 1"),
        [size],
        row,
    )
    .optional()
}

/// The chain hashes (hex) of audit records 1..=`upto` (all records with `None`), in order: the
/// leaves of the tree.
pub fn leaves(conn: &Connection, upto: Option<i64>) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT hash FROM audit WHERE seq <= ?1 ORDER BY seq")?;
    let rows = st.query_map([upto.unwrap_or(i64::MAX)], |r| r.get(0))?;
    rows.collect()
}

/// The chain hashes (hex) of the audit records after `after`, in order: the leaves to append
/// to a stored frontier.
pub fn leaves_after(conn: &Connection, after: i64) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT hash FROM audit WHERE seq > ?1 ORDER BY seq")?;
    let rows = st.query_map([after], |r| r.get(0))?;
    rows.collect()
}
