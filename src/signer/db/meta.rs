//! The `meta` table of `ca.db`: key/value settings (schema version, CA fingerprint, key
//! protection, the last audit checkpoint, registered staging directories).

use rusqlite::{Connection, OptionalExtension};

/// The schema version ([`super::SCHEMA_VERSION`]).
pub const SCHEMA_VERSION: &str = "schema_version";
/// The CA certificate's SHA-256 fingerprint.
pub const CA_FINGERPRINT: &str = "ca_fingerprint";
/// How `ca.key.age` is protected, in words.
pub const KEY_PROTECTION: &str = "key_protection";
/// When the CA was created.
pub const CREATED_AT: &str = "created_at";
/// The right edge of the audit log's Merkle tree at the last checkpoint:
/// `"<size> <hex>,<hex>,…"` (one hash per complete subtree, largest first), so the next
/// checkpoint hashes only the records added since (SPEC §11).
pub const MERKLE_FRONTIER: &str = "merkle_frontier";
/// `"<seq> <hash>"` of the last checkpoint (catches a truncated log).
pub const AUDIT_CHECKPOINT: &str = "audit_checkpoint";

/// The value of `key`, if set.
pub fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Set `key` to `value` (insert or replace).
pub fn set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)")?
        .execute([key, value])?;
    Ok(())
}

/// Remove `key`.
pub fn delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Every `(key, value)` whose key starts with `prefix`, in key order.
pub fn with_prefix(conn: &Connection, prefix: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare(
        "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
    )?;
    let rows = st.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
