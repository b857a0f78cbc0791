//! `ca.db`: the CA's SQLite database (issued certificates, batches, rejects, audit log), and
//! the only place in the signer that speaks SQL.
//!
//! [`open`] / [`open_existing`] give a connection with nrfca's pragmas and the current schema
//! ([`schema`]); the typed queries are grouped by what they touch: [`meta`], [`batches`],
//! [`certificates`], [`rejects`], [`revocations`], [`audit`]. Every function takes the connection or the
//! caller's transaction (`&Connection`; a `Transaction` derefs to one), so every write that
//! `sign` makes for one batch happens in one transaction together with its audit records
//! (SPEC §5), and a crash leaves either the whole batch or none of it. Queries on the
//! per-certificate path use SQLite's statement cache (`prepare_cached`).

pub mod audit;
pub mod batches;
pub mod benches;
pub mod certificates;
pub mod checkpoints;
pub mod meta;
pub mod rejects;
pub mod revocations;
pub mod schema;

use std::path::Path;

pub use rusqlite::{Connection, Transaction};
pub use schema::{SCHEMA, SCHEMA_VERSION};

/// Errors opening or migrating `ca.db`. Display is this layer's sentence; the SQLite error is
/// the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error("CA database error (check that ca.db is not open elsewhere and the disk is writable)")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer nrfca.
    #[error(
        "ca.db has schema version {0}, newer than this nrfca ({SCHEMA_VERSION}); upgrade nrfca"
    )]
    NewerSchema(i64),
    /// `ca.db` does not exist where an existing CA was expected.
    #[error("{} does not exist; check --ca-dir, or create a CA with `nrfca ca init`", .0.display())]
    Missing(std::path::PathBuf),
    /// An older `ca.db` could not be brought to the current schema (it is unchanged).
    #[error("ca.db could not be upgraded to schema {SCHEMA_VERSION} ({0}); it is unchanged: keep a copy and report this")]
    Migration(String),
}

/// Open (creating if needed) the database at `path` with the pragmas nrfca relies on:
/// rollback journal (`DELETE`), `synchronous=FULL` (a committed batch survives power loss),
/// 16 KiB pages, foreign keys. A batch is one big transaction of mostly new pages: a rollback
/// journal writes them once into `ca.db`, where WAL wrote them twice (WAL, then checkpoint);
/// 100 000 requests went from 12.1 s to 8.2 s. It also keeps `ca.db` one self-contained file.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Page size only takes effect on a new database (before the first table).
    conn.pragma_update(None, "page_size", 16384)?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    match schema::schema_version(&conn)? {
        None => meta::set(&conn, meta::SCHEMA_VERSION, &SCHEMA_VERSION.to_string())?,
        Some(v) if v > SCHEMA_VERSION => return Err(DbError::NewerSchema(v)),
        Some(1) => schema::migrate_v1(&mut conn)?,
        Some(v @ 2..=5) => schema::migrate_additive(&mut conn, v)?,
        Some(_) => {}
    }
    Ok(conn)
}

/// Open an existing `ca.db` (as [`open`]), refusing to create a new one.
pub fn open_existing(path: &Path) -> Result<Connection, DbError> {
    if !path.is_file() {
        return Err(DbError::Missing(path.to_path_buf()));
    }
    open(path)
}

/// Begin an IMMEDIATE transaction (takes the write lock now, or waits up to the busy timeout).
pub fn begin_immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// A read transaction (deferred) on a shared connection: what the caller reads inside it is
/// one snapshot.
pub fn begin_read(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.unchecked_transaction()
}

/// A larger page cache for a big batch (`cache_size` in KiB when negative).
pub fn set_cache_kib(conn: &Connection, kib: i64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -kib)
}

/// Fold a WAL back into the main file (best effort; `ca.db` uses a rollback journal, this
/// covers a database another tool switched to WAL) and close.
pub fn close(conn: Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").ok();
    conn.close().map_err(|(_, e)| e)
}

/// A savepoint inside the caller's transaction: [`savepoint_rollback`] undoes what came after
/// it, [`savepoint_release_and_commit`] keeps it and commits the outer transaction.
pub fn savepoint(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute_batch(&format!("SAVEPOINT {name}"))
}

/// Undo everything after the savepoint `name` and release it.
pub fn savepoint_rollback(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))
}

/// Release the savepoint `name` and commit the (unchecked) outer transaction.
pub fn savepoint_release_and_commit(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute_batch(&format!("RELEASE {name}; COMMIT"))
}
