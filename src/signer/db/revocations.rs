//! The `revocations` table of `ca.db` (one row per revoked certificate) and the lookups that
//! `revoke` and `crl` make: certificates by serial, device or batch, the revoked list, the CRL
//! number and certificates that expire soon.

use rusqlite::{Connection, OptionalExtension};

/// `meta` key of the last CRL number issued (decimal).
pub const CRL_NUMBER: &str = "crl_number";

/// An issued certificate as revocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Serial, lowercase hex (as stored).
    pub serial: String,
    /// The certificate CN.
    pub device_id: String,
    /// Attested UUID.
    pub uuid: String,
    /// The batch that issued it.
    pub batch_id: String,
}

fn target(r: &rusqlite::Row<'_>) -> rusqlite::Result<Target> {
    Ok(Target {
        serial: r.get(0)?,
        device_id: r.get(1)?,
        uuid: r.get(2)?,
        batch_id: r.get(3)?,
    })
}

const TARGET_COLUMNS: &str = "SELECT serial, device_id, uuid, batch_id FROM certificates";

/// The certificate with this serial (lowercase hex; leading zeros are ignored on both sides).
pub fn by_serial(conn: &Connection, serial_hex: &str) -> rusqlite::Result<Option<Target>> {
    conn.prepare_cached(&format!(
        "{TARGET_COLUMNS} WHERE serial = ?1 OR ltrim(serial, '0') = ltrim(?1, '0') LIMIT 1"
    ))?
    .query_row([serial_hex], target)
    .optional()
}

/// Every certificate issued to this device: by CN or by attested UUID.
pub fn by_device(conn: &Connection, device: &str) -> rusqlite::Result<Vec<Target>> {
    let mut st = conn.prepare_cached(&format!(
        "{TARGET_COLUMNS} WHERE uuid = ?1 OR device_id = ?1 ORDER BY rowid"
    ))?;
    let rows = st.query_map([device], target)?;
    rows.collect()
}

/// Every certificate of a batch, in issue order.
pub fn by_batch(conn: &Connection, batch_id: &str) -> rusqlite::Result<Vec<Target>> {
    let mut st = conn.prepare_cached(&format!(
        "{TARGET_COLUMNS} WHERE batch_id = ?1 ORDER BY rowid"
    ))?;
    let rows = st.query_map([batch_id], target)?;
    rows.collect()
}

/// A revocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revoked {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The certificate CN.
    pub device_id: String,
    /// RFC 5280 reason name (`keyCompromise`, ...).
    pub reason: String,
    /// RFC 3339 UTC.
    pub revoked_at: String,
    /// Who revoked it.
    pub operator: String,
    /// The certificate's notAfter (RFC 3339).
    pub not_after: String,
}

/// The revocation of `serial`, if any.
pub fn get(conn: &Connection, serial: &str) -> rusqlite::Result<Option<Revoked>> {
    conn.prepare_cached(
        "SELECT r.serial, r.device_id, r.reason, r.revoked_at, r.operator, c.not_after \
         FROM revocations r JOIN certificates c ON c.serial = r.serial WHERE r.serial = ?1",
    )?
    .query_row([serial], revoked)
    .optional()
}

fn revoked(r: &rusqlite::Row<'_>) -> rusqlite::Result<Revoked> {
    Ok(Revoked {
        serial: r.get(0)?,
        device_id: r.get(1)?,
        reason: r.get(2)?,
        revoked_at: r.get(3)?,
        operator: r.get(4)?,
        not_after: r.get(5)?,
    })
}

/// Record a revocation (the caller appends the audit record in the same transaction).
pub fn insert(conn: &Connection, r: &Revoked) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO revocations(serial, device_id, reason, revoked_at, operator) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute([
        &r.serial,
        &r.device_id,
        &r.reason,
        &r.revoked_at,
        &r.operator,
    ])?;
    Ok(())
}

/// Every revocation, oldest first.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<Revoked>> {
    let mut st = conn.prepare(
        "SELECT r.serial, r.device_id, r.reason, r.revoked_at, r.operator, c.not_after \
         FROM revocations r JOIN certificates c ON c.serial = r.serial \
         ORDER BY r.revoked_at, r.serial",
    )?;
    let rows = st.query_map([], revoked)?;
    rows.collect()
}

/// A certificate that expires soon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expiring {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The certificate CN.
    pub device_id: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// The batch.
    pub batch_id: String,
}

/// Certificates not revoked whose notAfter is before `before_unix` (seconds), soonest first.
/// Times are compared as instants (`unixepoch`), whatever their RFC 3339 spelling.
pub fn expiring(conn: &Connection, before_unix: i64) -> rusqlite::Result<Vec<Expiring>> {
    let mut st = conn.prepare(
        "SELECT c.serial, c.device_id, c.not_after, c.batch_id FROM certificates c \
         WHERE NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial) \
         AND unixepoch(c.not_after) < ?1 ORDER BY unixepoch(c.not_after), c.serial",
    )?;
    let rows = st.query_map([before_unix], |r| {
        Ok(Expiring {
            serial: r.get(0)?,
            device_id: r.get(1)?,
            not_after: r.get(2)?,
            batch_id: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The last CRL number issued (0 before the first CRL).
pub fn last_crl_number(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(super::meta::get(conn, CRL_NUMBER)?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0))
}

/// Store the last CRL number issued.
pub fn set_crl_number(conn: &Connection, n: u64) -> rusqlite::Result<()> {
    super::meta::set(conn, CRL_NUMBER, &n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_round_trip_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::signer::db::open(&dir.path().join("ca.db")).unwrap();
        c.execute_batch(
            "INSERT INTO batches(id, started_at, operator, inputs) VALUES ('b', 't', 'o', '[]');
             INSERT INTO certificates(serial, device_id, uuid, sec_tag, public_key, keygen_sha256,
                 cert_sha256, der, not_before, not_after, batch_id)
             VALUES ('0a1b', 'dev-1', 'u-1', 1, x'04', 'k', 'c', x'3000',
                 '2025-01-01T00:00:00Z', '2030-01-01T00:00:00Z', 'b'),
                    ('7f', 'dev-2', 'u-2', 1, x'0401', 'k2', 'c2', x'3000',
                 '2025-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'b');",
        )
        .unwrap();
        assert_eq!(by_serial(&c, "00a1b").unwrap().unwrap().device_id, "dev-1");
        assert!(by_serial(&c, "ff").unwrap().is_none());
        assert_eq!(by_device(&c, "u-2").unwrap()[0].serial, "7f");
        assert_eq!(by_device(&c, "dev-2").unwrap()[0].serial, "7f");
        assert_eq!(by_batch(&c, "b").unwrap().len(), 2);
        let r = Revoked {
            serial: "7f".into(),
            device_id: "dev-2".into(),
            reason: "keyCompromise".into(),
            revoked_at: "2025-06-01T00:00:00.000Z".into(),
            operator: "o".into(),
            not_after: "2026-01-01T00:00:00Z".into(),
        };
        insert(&c, &r).unwrap();
        assert!(insert(&c, &r).is_err(), "a serial is revoked once");
        assert_eq!(get(&c, "7f").unwrap().unwrap(), r);
        assert_eq!(all(&c).unwrap(), vec![r]);
        // dev-2 is revoked: only dev-1 expires, and only before 2030.
        let soon = expiring(&c, 1_900_000_000).unwrap();
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0].serial, "0a1b");
        assert!(expiring(&c, 1_800_000_000).unwrap().is_empty());
        assert_eq!(last_crl_number(&c).unwrap(), 0);
        set_crl_number(&c, 42).unwrap();
        assert_eq!(last_crl_number(&c).unwrap(), 42);
    }
}
