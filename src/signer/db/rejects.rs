//! The `rejects` table of `ca.db`: the rejected requests recorded one by one (the first
//! `sign::MAX_RECORDED_REJECTS` of a batch).

use rusqlite::Connection;

/// One rejected request.
#[derive(Debug, Clone, Copy)]
pub struct NewReject<'a> {
    /// The batch.
    pub batch_id: &'a str,
    /// Input file name.
    pub source: &'a str,
    /// Line in it.
    pub line: u64,
    /// Device UUID, when known.
    pub device_uuid: Option<&'a str>,
    /// Reject code (kebab-case).
    pub code: &'a str,
    /// Detail in words.
    pub detail: &'a str,
    /// SHA-256 of the KEYGEN string, when there was one.
    pub keygen_sha256: Option<&'a str>,
}

/// Insert one reject (cached statement: the per-request path).
pub fn insert(conn: &Connection, r: &NewReject<'_>) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO rejects(batch_id, source, line, device_uuid, code, detail, keygen_sha256) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    st.execute(rusqlite::params![
        r.batch_id,
        r.source,
        r.line as i64,
        r.device_uuid,
        r.code,
        r.detail,
        r.keygen_sha256
    ])?;
    Ok(())
}
