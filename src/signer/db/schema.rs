//! The schema of `ca.db` (DDL, version) and the migrations from older versions.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::DbError;

/// Current schema version, stored in `meta`. Version 1 (nrfca before the speed work) kept
/// the certificate as PEM text and a UNIQUE index on `keygen_sha256`; version 2 indexed
/// certificates by CN (`device_id`) where already-issued now looks them up by attested UUID
/// (`uuid`); version 3 had neither the evidence tables nor `revocations`; [`super::open`]
/// migrates all of them. Version 5 holds the `checkpoints` table (signed Merkle checkpoints
/// of the audit log, SPEC §11), the `benches` table (trusted benches, SPEC §10) and the
/// `revocations` table (SPEC §12): all new tables, so the migrations from 3 and 4 (a
/// development version that had one or the other) only create what is missing; the first
/// command that holds the key then signs the first checkpoint over the whole existing log.
/// Version 6 adds `merkle_tiles` (the hash of every complete 256-record block of the log, so
/// a consistency proof reads O(n/256) rows instead of the whole log); the first checkpoint
/// after the migration fills it.
pub const SCHEMA_VERSION: i64 = 6;

/// The DDL of `ca.db`, version [`SCHEMA_VERSION`].
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id            TEXT PRIMARY KEY,          -- batch id (UUID-like, lowercase hex)
    started_at    TEXT NOT NULL,             -- RFC 3339 UTC
    committed_at  TEXT,                      -- RFC 3339 UTC, set in the committing transaction
    operator      TEXT NOT NULL,
    inputs        TEXT NOT NULL,             -- JSON array of {path, sha256}
    issued        INTEGER NOT NULL DEFAULT 0,
    returned      INTEGER NOT NULL DEFAULT 0,-- identical KEYGEN re-submitted: certificate given back
    rejected      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS certificates (
    serial        TEXT PRIMARY KEY,          -- lowercase hex, no leading zeros beyond DER
    device_id     TEXT NOT NULL,             -- the certificate CN
    uuid          TEXT NOT NULL,             -- attested device UUID (lowercase, hyphenated)
    imei          TEXT,
    sec_tag       INTEGER NOT NULL,
    public_key    BLOB NOT NULL,             -- 65-byte uncompressed P-256 point
    keygen_sha256 TEXT NOT NULL,             -- SHA-256 of the KEYGEN string as submitted
    cert_sha256   TEXT NOT NULL,             -- SHA-256 of the PEM bytes (as in the bundle)
    der           BLOB NOT NULL,             -- the certificate; its PEM is util::pem_encode(der)
    not_before    TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    reissue       INTEGER NOT NULL DEFAULT 0 -- 1 when issued under --reissue
);
-- Lookups: already-issued by attested device (the UUID, whatever the CN), key-reuse by key,
-- and the identical re-submitted KEYGEN by key + keygen_sha256 (an identical KEYGEN string
-- carries the identical key, so it needs no index of its own: every index costs a random
-- B-tree insert per certificate). Nothing looks certificates up by CN (`device_id`).
CREATE INDEX IF NOT EXISTS certificates_uuid ON certificates(uuid);
CREATE INDEX IF NOT EXISTS certificates_key ON certificates(public_key);
CREATE TABLE IF NOT EXISTS rejects (
    batch_id      TEXT NOT NULL REFERENCES batches(id),
    source        TEXT NOT NULL,
    line          INTEGER NOT NULL,
    device_uuid   TEXT,
    code          TEXT NOT NULL,
    detail        TEXT NOT NULL,
    keygen_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,           -- 1, 2, 3, ... no gaps
    time      TEXT NOT NULL,                 -- RFC 3339 UTC
    operator  TEXT NOT NULL,
    event     TEXT NOT NULL,                 -- kebab-case, see docs/audit.md
    details   TEXT NOT NULL,                 -- canonical JSON object
    prev_hash TEXT NOT NULL,                 -- lowercase hex; 64 zeros for seq 1
    hash      TEXT NOT NULL                  -- SHA-256(prev_hash || canonical record), lowercase hex
);
CREATE TABLE IF NOT EXISTS revocations (
    serial     TEXT PRIMARY KEY REFERENCES certificates(serial), -- revoked once, never undone
    device_id  TEXT NOT NULL,                -- the certificate CN (nRF Cloud's device id)
    reason     TEXT NOT NULL,                -- RFC 5280 reason name: keyCompromise, superseded...
    revoked_at TEXT NOT NULL,                -- RFC 3339 UTC
    operator   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size      INTEGER PRIMARY KEY,           -- tree size = audit records covered
    root      TEXT NOT NULL,                 -- base64 Merkle root of the first `size` chain hashes
    text      TEXT NOT NULL,                 -- the exact signed `checkpoint` body (3 lines)
    signature TEXT NOT NULL,                 -- base64 DER ECDSA-SHA256 by the CA key over `text`
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merkle_tiles (
    idx       INTEGER PRIMARY KEY,           -- block number: audit records idx*256+1 ..= idx*256+256
    hash      BLOB NOT NULL,                 -- 32-byte Merkle hash of the block's 256 leaves
    last_hash TEXT NOT NULL                  -- chain hash of its last record (a stale tile shows)
);
CREATE TABLE IF NOT EXISTS benches (
    name        TEXT PRIMARY KEY,            -- bench name (bench init --name)
    public_key  BLOB NOT NULL,               -- 65-byte uncompressed P-256 point
    fingerprint TEXT NOT NULL,               -- SHA-256 hex of its DER SubjectPublicKeyInfo
    since       TEXT NOT NULL                -- RFC 3339 UTC time of ca trust-bench
);
"#;

pub(super) fn schema_version(conn: &Connection) -> Result<Option<i64>, DbError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse::<i64>().ok()))
}

/// Schema 1 → 2, in one transaction: the certificate moves from PEM text to DER (the PEM is
/// re-created byte for byte by `util::pem_encode`, which is checked for every row, so
/// `cert_sha256` and the audit records stay valid) and the UNIQUE index on `keygen_sha256`
/// goes. A row whose PEM would not come back identical stops the migration (nothing changes).
pub(super) fn migrate_v1(conn: &mut Connection) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated while this one waited for the lock.
    if schema_version(&tx)? != Some(1) {
        return Ok(());
    }
    // The old table keeps its index names, so re-running SCHEMA creates only the new table;
    // after the old one is dropped, a second run creates the indexes on the new one.
    tx.execute_batch("ALTER TABLE certificates RENAME TO certificates_v1;")?;
    tx.execute_batch(SCHEMA)?;
    {
        let mut read = tx.prepare(
            "SELECT serial, device_id, uuid, imei, sec_tag, public_key, keygen_sha256, cert_sha256, \
             pem, not_before, not_after, batch_id, reissue FROM certificates_v1 ORDER BY rowid",
        )?;
        let mut write = tx.prepare(
            "INSERT INTO certificates(serial, device_id, uuid, imei, sec_tag, public_key, keygen_sha256, \
             cert_sha256, der, not_before, not_after, batch_id, reissue) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let serial: String = r.get(0)?;
            let pem: String = r.get(8)?;
            let der = crate::util::first_cert_der(&pem)
                .filter(|der| crate::util::pem_encode("CERTIFICATE", der) == pem)
                .ok_or_else(|| {
                    DbError::Migration(format!(
                    "the certificate with serial {serial} is not stored in nrfca's own PEM form"
                ))
                })?;
            write.execute(rusqlite::params![
                serial,
                r.get::<_, Value>(1)?,
                r.get::<_, Value>(2)?,
                r.get::<_, Value>(3)?,
                r.get::<_, Value>(4)?,
                r.get::<_, Value>(5)?,
                r.get::<_, Value>(6)?,
                r.get::<_, Value>(7)?,
                der,
                r.get::<_, Value>(9)?,
                r.get::<_, Value>(10)?,
                r.get::<_, Value>(11)?,
                r.get::<_, Value>(12)?,
            ])?;
        }
    }
    tx.execute_batch("DROP TABLE certificates_v1;")?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(())
}

/// Schemas 2 to 5 → current, in one transaction. Every step since version 1 only adds
/// (tables, indexes: [`SCHEMA`] is all `IF NOT EXISTS`), except 2 → 3: already-issued is keyed
/// on the attested UUID, so the index on `device_id` (the CN) gives way to one on `uuid`; the
/// number of indexes, each a B-tree insert per certificate, stays three. Version 4 was a
/// development version with either the evidence tables (`checkpoints`, `benches`) or
/// `revocations`; the missing ones are created.
pub(super) fn migrate_additive(conn: &mut Connection, from: i64) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if schema_version(&tx)? != Some(from) {
        return Ok(());
    }
    tx.execute_batch(SCHEMA)?;
    if from == 2 {
        tx.execute_batch("DROP INDEX IF EXISTS certificates_device;")?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::db::open;
    use std::path::Path;

    #[test]
    fn open_creates_schema_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.db");
        let c = open(&p).unwrap();
        drop(c);
        let c = open(&p).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM certificates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(certificate_indexes(&c), CERTIFICATE_INDEXES);
        c.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(c);
        assert!(matches!(open(&p), Err(DbError::NewerSchema(99))));
    }

    /// The indexes of `certificates`: serial (primary key), key, attested UUID. Each one is a
    /// random B-tree insert per issued certificate, the largest cost of `sign` after ECDSA
    /// (docs/performance.md): a new one must earn its place there first.
    const CERTIFICATE_INDEXES: [&str; 3] = [
        "certificates_key",
        "certificates_uuid",
        "sqlite_autoindex_certificates_1",
    ];

    fn certificate_indexes(c: &Connection) -> Vec<String> {
        c.prepare(
            "SELECT name FROM sqlite_schema WHERE tbl_name = 'certificates' AND type = 'index' \
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// `ca.db` as nrfca 0.1 (schema 1) created it.
    const SCHEMA_V1_CERTIFICATES: &str = "
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY, device_id TEXT NOT NULL, uuid TEXT NOT NULL, imei TEXT,
            sec_tag INTEGER NOT NULL, public_key BLOB NOT NULL,
            keygen_sha256 TEXT NOT NULL UNIQUE, cert_sha256 TEXT NOT NULL, pem TEXT NOT NULL,
            not_before TEXT NOT NULL, not_after TEXT NOT NULL,
            batch_id TEXT NOT NULL REFERENCES batches(id), reissue INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX certificates_device ON certificates(device_id);
        CREATE INDEX certificates_key ON certificates(public_key);";

    fn v1_db(dir: &Path, pems: &[String]) -> std::path::PathBuf {
        let p = dir.join("ca.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(SCHEMA_V1_CERTIFICATES).unwrap();
        // The rest of schema 1 is the same as today's.
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(
            "INSERT INTO meta(key, value) VALUES ('schema_version', '1');
             INSERT INTO batches(id, started_at, operator, inputs) VALUES ('b', 't', 'o', '[]');",
        )
        .unwrap();
        for (i, pem) in pems.iter().enumerate() {
            c.execute(
                "INSERT INTO certificates(serial, device_id, uuid, sec_tag, public_key, keygen_sha256, \
                 cert_sha256, pem, not_before, not_after, batch_id, reissue) \
                 VALUES (?1, ?2, ?2, 16842753, ?3, ?4, ?5, ?6, 'nb', 'na', 'b', ?7)",
                rusqlite::params![
                    format!("{:02x}", i + 1),
                    format!("dev-{i}"),
                    vec![4u8, i as u8],
                    format!("kg{i}"),
                    crate::crypto::sha256_hex(pem.as_bytes()),
                    pem,
                    (i % 2) as i64
                ],
            )
            .unwrap();
        }
        p
    }

    #[test]
    fn schema_1_is_migrated_row_for_row() {
        let dir = tempfile::tempdir().unwrap();
        let ders: Vec<Vec<u8>> = (0..300u16)
            .map(|i| (0..(i % 200 + 1)).map(|b| (b ^ i) as u8).collect())
            .collect();
        let pems: Vec<String> = ders
            .iter()
            .map(|d| crate::util::pem_encode("CERTIFICATE", d))
            .collect();
        let p = v1_db(dir.path(), &pems);
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        let rows: Vec<(String, Vec<u8>, String, i64)> = c
            .prepare("SELECT serial, der, cert_sha256, reissue FROM certificates ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), ders.len());
        for (i, (serial, der, sha, reissue)) in rows.iter().enumerate() {
            assert_eq!(serial, &format!("{:02x}", i + 1));
            assert_eq!(der, &ders[i]);
            assert_eq!(sha, &crate::crypto::sha256_hex(pems[i].as_bytes()));
            assert_eq!(*reissue, (i % 2) as i64);
        }
        // The UNIQUE keygen index is gone, the lookup indexes are on the new table, the
        // old table is gone.
        assert_eq!(certificate_indexes(&c), CERTIFICATE_INDEXES);
        let old: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'certificates_v1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        drop(c);
        // Opening again is a no-op.
        let c = open(&p).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM certificates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 300);
    }

    /// Schema 2 indexed certificates by CN; schema 3 by attested UUID (already-issued).
    #[test]
    fn schema_2_is_migrated_to_the_uuid_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.db");
        let c = open(&p).unwrap();
        c.execute_batch(
            "DROP INDEX certificates_uuid;
             CREATE INDEX certificates_device ON certificates(device_id);
             UPDATE meta SET value = '2' WHERE key = 'schema_version';
             INSERT INTO batches(id, started_at, operator, inputs) VALUES ('b', 't', 'o', '[]');
             INSERT INTO certificates(serial, device_id, uuid, sec_tag, public_key, keygen_sha256,
                 cert_sha256, der, not_before, not_after, batch_id)
             VALUES ('01', 'nrf-352656100000009', '50503041-3539-47eb-807b-102dbb423b9a', 1,
                 x'04', 'k', 'c', x'3000', 'a', 'b', 'b');",
        )
        .unwrap();
        drop(c);
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(certificate_indexes(&c), CERTIFICATE_INDEXES);
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT 1 FROM certificates WHERE uuid = 'x' LIMIT 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("certificates_uuid"), "{plan}");
        let n: i64 = c
            .query_row("SELECT count(*) FROM certificates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(c);
        let c = open(&p).unwrap();
        assert_eq!(certificate_indexes(&c), CERTIFICATE_INDEXES);
    }

    /// Schema 3 had no `revocations` table.
    #[test]
    fn schema_3_gains_the_revocations_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.db");
        let c = open(&p).unwrap();
        c.execute_batch(
            "DROP TABLE revocations; UPDATE meta SET value = '3' WHERE key = 'schema_version';",
        )
        .unwrap();
        drop(c);
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        let n: i64 = c
            .query_row("SELECT count(*) FROM revocations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn schema_1_with_a_foreign_pem_is_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let good = crate::util::pem_encode("CERTIFICATE", b"abc");
        // Same certificate, CRLF line ends: not nrfca's PEM, so cert_sha256 could not be kept.
        let crlf = good.replace('\n', "\r\n");
        let p = v1_db(dir.path(), &[good, crlf]);
        let e = open(&p).unwrap_err();
        assert!(matches!(e, DbError::Migration(_)), "{e}");
        assert!(e.to_string().contains("serial 02"), "{e}");
        let c = Connection::open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), Some(1));
        let pems: i64 = c
            .query_row("SELECT count(pem) FROM certificates", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pems, 2);
    }
}
