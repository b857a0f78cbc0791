//! The `audit` table of `ca.db`: appending chained records and reading them back (all, a
//! filtered selection, one batch's, counts). The chain itself (canonical form, hashes,
//! checkpoints, verification) is `signer::audit`'s.

use rusqlite::{Connection, OptionalExtension};

/// One record as stored (the details as the stored text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Sequence number as stored (may be out of range in a tampered table).
    pub seq: i64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Operator.
    pub operator: String,
    /// Event name.
    pub event: String,
    /// Details, the stored (canonical JSON) text.
    pub details: String,
    /// Previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    // seq and details first: what a reader checks first.
    let seq = r.get(0)?;
    let details = r.get(4)?;
    Ok(RawRecord {
        seq,
        time: r.get(1)?,
        operator: r.get(2)?,
        event: r.get(3)?,
        details,
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
    })
}

const COLS: &str = "seq, time, operator, event, details, prev_hash, hash";

/// Seq and hash of the last record, if any.
pub fn head(conn: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// The hash of record `seq`, if there is one.
pub fn hash_at(conn: &Connection, seq: i64) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
        .optional()
}

/// A record to append (borrowed: the per-certificate path copies nothing).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Sequence number.
    pub seq: i64,
    /// RFC 3339 UTC.
    pub time: &'a str,
    /// Operator.
    pub operator: &'a str,
    /// Event name.
    pub event: &'a str,
    /// Canonical details.
    pub details: &'a str,
    /// Previous record's hash.
    pub prev_hash: &'a str,
    /// This record's hash.
    pub hash: &'a str,
}

/// Insert one record (cached statement: the per-certificate path).
pub fn insert(conn: &Connection, r: &NewRecord<'_>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit(seq, time, operator, event, details, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    stmt.execute(rusqlite::params![
        r.seq,
        r.time,
        r.operator,
        r.event,
        r.details,
        r.prev_hash,
        r.hash
    ])?;
    Ok(())
}

/// Call `each` with every record in seq order; a row that does not read as a record (a
/// column of the wrong type) is passed as its error.
pub fn for_each<E: From<rusqlite::Error>>(
    conn: &Connection,
    mut each: impl FnMut(rusqlite::Result<RawRecord>) -> Result<(), E>,
) -> Result<(), E> {
    for_each_where(conn, "1=1", &[], &mut each)
}

fn for_each_where<E: From<rusqlite::Error>>(
    conn: &Connection,
    condition: &str,
    params: &[String],
    each: &mut dyn FnMut(rusqlite::Result<RawRecord>) -> Result<(), E>,
) -> Result<(), E> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM audit WHERE {condition} ORDER BY seq"
    ))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        each(raw(row))?;
    }
    Ok(())
}

/// What [`select`] keeps (all conditions together).
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// Records naming this device (CN, attested UUID, IMEI, or a serial issued to it).
    pub device: Option<&'a str>,
    /// Records of this batch.
    pub batch: Option<&'a str>,
    /// Records of this event.
    pub event: Option<&'a str>,
    /// Records at or after this time (the stored fixed-width form).
    pub since: Option<&'a str>,
    /// Records at or before this time (the stored fixed-width form).
    pub until: Option<&'a str>,
}

/// The records matching `sel`, in seq order, to `each` (as [`for_each`]).
pub fn select<E: From<rusqlite::Error>>(
    conn: &Connection,
    sel: &Selection<'_>,
    mut each: impl FnMut(rusqlite::Result<RawRecord>) -> Result<(), E>,
) -> Result<(), E> {
    let mut sql = String::from("1=1");
    let mut params: Vec<String> = Vec::new();
    if let Some(d) = sel.device {
        params.push(d.to_string());
        let n = params.len();
        sql.push_str(&format!(
            " AND (json_extract(details, '$.device_id') = ?{n} OR json_extract(details, '$.uuid') = ?{n} OR json_extract(details, '$.device_uuid') = ?{n} OR json_extract(details, '$.imei') = ?{n} \
               OR json_extract(details, '$.serial') IN (SELECT serial FROM certificates WHERE uuid = ?{n} OR imei = ?{n}))"
        ));
    }
    if let Some(b) = sel.batch {
        params.push(b.to_string());
        sql.push_str(&format!(
            " AND json_extract(details, '$.batch') = ?{}",
            params.len()
        ));
    }
    if let Some(e) = sel.event {
        params.push(e.to_string());
        sql.push_str(&format!(" AND event = ?{}", params.len()));
    }
    // Times are stored fixed-width (YYYY-MM-DDTHH:MM:SS.mmmZ), so text order is time order.
    if let Some(t) = sel.since {
        params.push(t.to_string());
        sql.push_str(&format!(" AND time >= ?{}", params.len()));
    }
    if let Some(t) = sel.until {
        params.push(t.to_string());
        sql.push_str(&format!(" AND time <= ?{}", params.len()));
    }
    for_each_where(conn, &sql, &params, &mut each)
}

/// The records of the events `events`, in seq order.
pub fn of_events(conn: &Connection, events: &[&str]) -> rusqlite::Result<Vec<RawRecord>> {
    let marks: Vec<String> = (1..=events.len()).map(|i| format!("?{i}")).collect();
    let params: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    collect(conn, &format!("event IN ({})", marks.join(", ")), &params)
}

/// The records whose details name `batch`, in seq order.
pub fn of_batch(conn: &Connection, batch: &str) -> rusqlite::Result<Vec<RawRecord>> {
    collect(
        conn,
        "json_extract(details, '$.batch') = ?1",
        &[batch.to_string()],
    )
}

fn collect(
    conn: &Connection,
    condition: &str,
    params: &[String],
) -> rusqlite::Result<Vec<RawRecord>> {
    let mut out = Vec::new();
    for_each_where::<rusqlite::Error>(conn, condition, params, &mut |r| {
        out.push(r?);
        Ok(())
    })?;
    Ok(out)
}

/// The last `event` record before `seq`.
pub fn last_before(
    conn: &Connection,
    event: &str,
    seq: i64,
) -> rusqlite::Result<Option<RawRecord>> {
    conn.query_row(
        &format!(
            "SELECT {COLS} FROM audit WHERE event = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT 1"
        ),
        rusqlite::params![event, seq],
        raw,
    )
    .optional()
}

/// The first `event` record after `seq`.
pub fn first_after(
    conn: &Connection,
    event: &str,
    seq: i64,
) -> rusqlite::Result<Option<RawRecord>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM audit WHERE event = ?1 AND seq > ?2 ORDER BY seq LIMIT 1"),
        rusqlite::params![event, seq],
        raw,
    )
    .optional()
}

/// Seq and hash of record `seq`, or of the checkpoint right after it when there is one.
pub fn head_after(conn: &Connection, seq: i64) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT seq, hash FROM audit WHERE (seq = ?1 + 1 AND event = 'checkpoint') OR seq = ?1 \
         ORDER BY seq DESC LIMIT 1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Event and details text of record 1, if any.
pub fn first(conn: &Connection) -> rusqlite::Result<Option<(String, String)>> {
    conn.query_row("SELECT event, details FROM audit WHERE seq = 1", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

fn count_sql(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(sql, params, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Number of records (of `event`, when given).
pub fn count(conn: &Connection, event: Option<&str>) -> rusqlite::Result<u64> {
    match event {
        None => count_sql(conn, "SELECT count(*) FROM audit", []),
        Some(e) => count_sql(conn, "SELECT count(*) FROM audit WHERE event = ?1", [e]),
    }
}

/// The sum of `rejected` over the `batch-committed` records.
pub fn rejected_total(conn: &Connection) -> rusqlite::Result<u64> {
    count_sql(
        conn,
        "SELECT CAST(coalesce(sum(json_extract(details, '$.rejected')), 0) AS INTEGER) \
         FROM audit WHERE event = 'batch-committed'",
        [],
    )
}

/// Number of `key-protection-changed` records naming `file` as the retired key file.
pub fn count_retired(conn: &Connection, file: &str) -> rusqlite::Result<u64> {
    count_sql(
        conn,
        "SELECT count(*) FROM audit WHERE event = 'key-protection-changed' \
         AND json_extract(details, '$.retired_file') = ?1",
        [file],
    )
}
