//! The `batches` table of `ca.db`: one row per `sign` batch (not chained; the audit records
//! are the authority).

use rusqlite::Connection;

/// Insert the row of a starting batch (inputs are filled in at commit).
pub fn start(
    conn: &Connection,
    id: &str,
    started_at: &str,
    operator: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO batches(id, started_at, operator, inputs) VALUES (?1, ?2, ?3, '[]')",
        rusqlite::params![id, started_at, operator],
    )?;
    Ok(())
}

/// What a batch did, written in its committing transaction.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    /// RFC 3339 UTC.
    pub committed_at: &'a str,
    /// JSON array of `{name, sha256}`.
    pub inputs_json: &'a str,
    /// Certificates issued.
    pub issued: u64,
    /// Certificates given back (identical KEYGEN).
    pub returned: u64,
    /// Requests rejected.
    pub rejected: u64,
}

/// Record the end of batch `id`.
pub fn commit(conn: &Connection, id: &str, c: &Committed<'_>) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE batches SET committed_at = ?2, inputs = ?3, issued = ?4, returned = ?5, rejected = ?6 WHERE id = ?1",
        rusqlite::params![
            id,
            c.committed_at,
            c.inputs_json,
            c.issued as i64,
            c.returned as i64,
            c.rejected as i64
        ],
    )?;
    Ok(())
}
