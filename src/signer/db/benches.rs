//! The `benches` table of `ca.db`: the benches the officer trusts (SPEC §10,
//! `ca trust-bench` / `ca distrust-bench`).

use rusqlite::{Connection, OptionalExtension};

/// A trusted bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    /// Its name (`bench init --name`).
    pub name: String,
    /// 65-byte uncompressed P-256 public key.
    pub public_key: Vec<u8>,
    /// SHA-256 (hex) of its DER SubjectPublicKeyInfo.
    pub fingerprint: String,
    /// When it was trusted (RFC 3339 UTC).
    pub since: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Bench> {
    Ok(Bench {
        name: r.get(0)?,
        public_key: r.get(1)?,
        fingerprint: r.get(2)?,
        since: r.get(3)?,
    })
}

/// Trust `b` (replacing a bench of the same name).
pub fn insert(conn: &Connection, b: &Bench) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO benches(name, public_key, fingerprint, since) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![b.name, b.public_key, b.fingerprint, b.since],
    )?;
    Ok(())
}

/// Stop trusting the bench `name`; whether it was trusted.
pub fn delete(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM benches WHERE name = ?1", [name])? > 0)
}

/// The trusted bench `name`.
pub fn get(conn: &Connection, name: &str) -> rusqlite::Result<Option<Bench>> {
    conn.query_row(
        "SELECT name, public_key, fingerprint, since FROM benches WHERE name = ?1",
        [name],
        row,
    )
    .optional()
}

/// Every trusted bench, by name.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<Bench>> {
    let mut st =
        conn.prepare("SELECT name, public_key, fingerprint, since FROM benches ORDER BY name")?;
    let rows = st.query_map([], row)?;
    rows.collect()
}
