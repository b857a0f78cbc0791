//! The `checkpoints` table of `ca.db`: the CA-signed Merkle checkpoints of the audit log
//! (SPEC §11), one per tree size, the leaf data (chain hashes) the tree is built from, and
//! the `merkle_tiles` table (the hash of every complete 256-record block).

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

/// Call `each` with the chain hash (hex) of every audit record after `after`, in order: the
/// leaves to append to a stored frontier. Streams: a batch of 100 000 records collected as
/// strings first cost ~10 MB of peak memory.
pub fn for_each_leaf_after<E: From<rusqlite::Error>>(
    conn: &Connection,
    after: i64,
    mut each: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    let mut st = conn.prepare_cached("SELECT hash FROM audit WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = st.query([after])?;
    while let Some(r) = rows.next()? {
        each(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?;
    }
    Ok(())
}

/// The chain hashes (hex) of the audit records `from + 1 ..= to` (leaves `from .. to`), in
/// order.
pub fn leaves_between(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<Vec<String>> {
    let mut st =
        conn.prepare_cached("SELECT hash FROM audit WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")?;
    let rows = st.query_map([from, to], |r| r.get(0))?;
    rows.collect()
}

/// The stored tiles with `idx < below`, in order: (idx, 32-byte hash).
pub fn tiles(conn: &Connection, below: i64) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
    let mut st =
        conn.prepare_cached("SELECT idx, hash FROM merkle_tiles WHERE idx < ?1 ORDER BY idx")?;
    let rows = st.query_map([below], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The tile with the largest index: (idx, chain hash of its last record).
pub fn newest_tile(conn: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT idx, last_hash FROM merkle_tiles ORDER BY idx DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Store a tile (replacing one of the same index).
pub fn insert_tile(
    conn: &Connection,
    idx: i64,
    hash: &[u8],
    last_hash: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO merkle_tiles(idx, hash, last_hash) VALUES (?1, ?2, ?3)",
    )?
    .execute(rusqlite::params![idx, hash, last_hash])?;
    Ok(())
}

/// Forget every tile (they are rebuilt from the log).
pub fn clear_tiles(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM merkle_tiles", [])?;
    Ok(())
}
