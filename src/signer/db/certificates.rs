//! The `certificates` table of `ca.db`: the issued certificates, their lookups (by key, by
//! attested device UUID, by serial, by the identical KEYGEN), the batch insert, and reading
//! a committed batch back in input order.

use rusqlite::{Connection, OptionalExtension};

/// A certificate already in `ca.db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The certificate CN.
    pub device_id: String,
    /// Attested UUID.
    pub uuid: String,
    /// IMEI, when known.
    pub imei: Option<String>,
    /// Attested sec_tag.
    pub sec_tag: u32,
    /// SHA-256 of the KEYGEN string it was issued for, hex.
    pub keygen_sha256: String,
    /// SHA-256 of the PEM, hex.
    pub cert_sha256: String,
    /// The PEM.
    pub pem: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
}

/// The certificate issued for exactly this KEYGEN string (by SHA-256, hex) and key, if any.
pub fn by_key_and_keygen(
    conn: &Connection,
    public_key: &[u8; 65],
    keygen_sha256_hex: &str,
) -> rusqlite::Result<Option<Stored>> {
    let mut st = conn.prepare_cached(
        "SELECT serial, device_id, uuid, imei, sec_tag, keygen_sha256, cert_sha256, der, \
         not_before, not_after FROM certificates WHERE public_key = ?1 AND keygen_sha256 = ?2",
    )?;
    st.query_row(rusqlite::params![&public_key[..], keygen_sha256_hex], |r| {
        let der: Vec<u8> = r.get(7)?;
        Ok(Stored {
            serial: r.get(0)?,
            device_id: r.get(1)?,
            uuid: r.get(2)?,
            imei: r.get(3)?,
            sec_tag: r.get(4)?,
            keygen_sha256: r.get(5)?,
            cert_sha256: r.get(6)?,
            pem: crate::util::pem_encode("CERTIFICATE", &der),
            not_before: r.get(8)?,
            not_after: r.get(9)?,
        })
    })
    .optional()
}

/// Whether a certificate was issued for the attested device `uuid`.
pub fn uuid_exists(conn: &Connection, uuid: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM certificates WHERE uuid = ?1 LIMIT 1")?
        .exists([uuid])
}

/// The device (CN) a certificate for `public_key` was issued to, if any.
pub fn device_by_key(conn: &Connection, public_key: &[u8; 65]) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT device_id FROM certificates WHERE public_key = ?1 LIMIT 1")?
        .query_row([&public_key[..]], |r| r.get(0))
        .optional()
}

/// Whether the serial (lowercase hex) is taken.
pub fn serial_exists(conn: &Connection, serial_hex: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM certificates WHERE serial = ?1")?
        .exists([serial_hex])
}

/// The largest rowid of `certificates` (0 when empty).
pub fn max_rowid(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(rowid), 0) FROM certificates",
        [],
        |r| r.get(0),
    )
}

/// A column the policy's prefilter scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupColumn {
    /// The attested device UUID.
    Uuid,
    /// The public key.
    PublicKey,
    /// The serial.
    Serial,
}

/// Call `each` with the bytes of `column` of every certificate (from its covering index);
/// values neither text nor blob are skipped.
pub fn scan(
    conn: &Connection,
    column: LookupColumn,
    mut each: impl FnMut(&[u8]),
) -> rusqlite::Result<()> {
    let sql = match column {
        LookupColumn::Uuid => "SELECT uuid FROM certificates",
        LookupColumn::PublicKey => "SELECT public_key FROM certificates",
        LookupColumn::Serial => "SELECT serial FROM certificates",
    };
    let mut st = conn.prepare(sql)?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        match r.get_ref(0)? {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => each(b),
            _ => {}
        }
    }
    Ok(())
}

/// A certificate row to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewCertificate<'a> {
    /// Serial, lowercase hex.
    pub serial: &'a str,
    /// The CN.
    pub device_id: &'a str,
    /// Attested UUID.
    pub uuid: &'a str,
    /// IMEI, when known.
    pub imei: Option<&'a str>,
    /// Attested sec_tag.
    pub sec_tag: u32,
    /// 65-byte uncompressed P-256 point.
    pub public_key: &'a [u8],
    /// SHA-256 of the KEYGEN string, hex.
    pub keygen_sha256: &'a str,
    /// SHA-256 of the PEM, hex.
    pub cert_sha256: &'a str,
    /// The certificate.
    pub der: &'a [u8],
    /// RFC 3339.
    pub not_before: &'a str,
    /// RFC 3339.
    pub not_after: &'a str,
    /// The batch.
    pub batch_id: &'a str,
    /// Issued under `--reissue`.
    pub reissue: bool,
}

/// Insert one certificate (cached statement: the per-certificate path); returns its rowid.
pub fn insert(conn: &Connection, c: &NewCertificate<'_>) -> rusqlite::Result<i64> {
    let mut st = conn.prepare_cached(
        "INSERT INTO certificates(serial, device_id, uuid, imei, sec_tag, public_key, keygen_sha256, \
         cert_sha256, der, not_before, not_after, batch_id, reissue) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    st.execute(rusqlite::params![
        c.serial,
        c.device_id,
        c.uuid,
        c.imei,
        c.sec_tag,
        c.public_key,
        c.keygen_sha256,
        c.cert_sha256,
        c.der,
        c.not_before,
        c.not_after,
        c.batch_id,
        c.reissue as i64
    ])?;
    Ok(conn.last_insert_rowid())
}

/// One certificate of a committed batch, as the bundle needs it.
#[derive(Debug, Clone)]
pub struct BatchCert {
    /// The serial the audit record names.
    pub recorded_serial: String,
    /// The CN.
    pub device_id: String,
    /// Attested UUID.
    pub uuid: String,
    /// IMEI, when known.
    pub imei: Option<String>,
    /// Attested sec_tag.
    pub sec_tag: u32,
    /// The row's serial.
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// SHA-256 of the PEM, hex.
    pub cert_sha256: String,
    /// The certificate.
    pub der: Vec<u8>,
}

/// Why a committed batch could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BatchReadError {
    /// SQLite said no.
    #[error("reading the committed batch from ca.db failed")]
    Sqlite(#[from] rusqlite::Error),
    /// An audit record names a serial with no certificate row (`issued`: a
    /// `certificate-issued` record, else `certificate-returned`).
    #[error("ca.db has no certificate row for the {} serial {serial}", if *issued { "issued" } else { "returned" })]
    NoRow {
        /// The serial the record names.
        serial: String,
        /// Which record.
        issued: bool,
    },
}

/// Call `each` for every certificate of the committed batch, in input order: walk the batch's
/// audit records (seq strictly between `seqs`); a `certificate-issued` record takes the next
/// row of the certificates inserted by the batch (rowid from `first_rowid` on, the same
/// order: the batch held the write lock), a `certificate-returned` record looks its serial
/// up. `each` returns `Ok(false)` to stop early, or an error of its own to stop with it.
pub fn for_each_in_batch<E: From<BatchReadError>>(
    conn: &Connection,
    (first, last): (u64, u64),
    first_rowid: i64,
    mut each: impl FnMut(BatchCert) -> Result<bool, E>,
) -> Result<(), E> {
    let sq = |e: rusqlite::Error| E::from(BatchReadError::Sqlite(e));
    const COLS: &str =
        "device_id, uuid, imei, sec_tag, serial, not_before, not_after, cert_sha256, der";
    let mut events = conn
        .prepare(
            "SELECT event, json_extract(details, '$.serial') FROM audit \
             WHERE seq > ?1 AND seq < ?2 \
             AND event IN ('certificate-issued', 'certificate-returned') ORDER BY seq",
        )
        .map_err(sq)?;
    let mut issued = conn
        .prepare(&format!(
            "SELECT {COLS} FROM certificates WHERE rowid >= ?1 ORDER BY rowid"
        ))
        .map_err(sq)?;
    let mut by_serial = conn
        .prepare(&format!(
            "SELECT {COLS} FROM certificates WHERE serial = ?1"
        ))
        .map_err(sq)?;
    let mut events = events.query([first as i64, last as i64]).map_err(sq)?;
    let mut issued = issued.query([first_rowid]).map_err(sq)?;
    let to_cert = |r: &rusqlite::Row<'_>, recorded_serial: String| -> rusqlite::Result<BatchCert> {
        Ok(BatchCert {
            recorded_serial,
            device_id: r.get(0)?,
            uuid: r.get(1)?,
            imei: r.get(2)?,
            sec_tag: r.get(3)?,
            serial: r.get(4)?,
            not_before: r.get(5)?,
            not_after: r.get(6)?,
            cert_sha256: r.get(7)?,
            der: r.get(8)?,
        })
    };
    while let Some(e) = events.next().map_err(sq)? {
        let event: String = e.get(0).map_err(sq)?;
        let serial: Option<String> = e.get(1).map_err(sq)?;
        let serial = serial.unwrap_or_default();
        let no_row = |issued: bool, serial: &str| {
            E::from(BatchReadError::NoRow {
                serial: serial.to_string(),
                issued,
            })
        };
        let cert = if event == "certificate-issued" {
            let r = issued
                .next()
                .map_err(sq)?
                .ok_or_else(|| no_row(true, &serial))?;
            to_cert(r, serial).map_err(sq)?
        } else {
            let mut q = by_serial.query([&serial]).map_err(sq)?;
            let r = q
                .next()
                .map_err(sq)?
                .ok_or_else(|| no_row(false, &serial))?;
            to_cert(r, serial).map_err(sq)?
        };
        if !each(cert)? {
            break;
        }
    }
    Ok(())
}

/// A certificate row as `audit verify` checks it against its `certificate-issued` record.
#[derive(Debug, Clone)]
pub struct Row {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The CN.
    pub device_id: String,
    /// SHA-256 of the KEYGEN string, hex.
    pub keygen_sha256: String,
    /// SHA-256 of the PEM, hex.
    pub cert_sha256: String,
    /// The batch.
    pub batch_id: String,
    /// 1 when issued under `--reissue`.
    pub reissue: i64,
    /// The certificate (empty when the column is not a blob).
    pub der: Vec<u8>,
    /// Attested UUID.
    pub uuid: String,
    /// IMEI, when known.
    pub imei: Option<String>,
    /// sec_tag.
    pub sec_tag: i64,
    /// The public key (empty when the column is not a blob).
    pub public_key: Vec<u8>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
}

/// Call `each` with every certificate row (table order).
pub fn for_each(conn: &Connection, mut each: impl FnMut(Row)) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT serial, device_id, keygen_sha256, cert_sha256, batch_id, reissue, der, \
         uuid, imei, sec_tag, public_key, not_before, not_after FROM certificates",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        each(Row {
            serial: row.get(0)?,
            device_id: row.get(1)?,
            keygen_sha256: row.get(2)?,
            cert_sha256: row.get(3)?,
            batch_id: row.get(4)?,
            reissue: row.get(5)?,
            der: row.get_ref(6)?.as_blob().unwrap_or_default().to_vec(),
            uuid: row.get(7)?,
            imei: row.get(8)?,
            sec_tag: row.get(9)?,
            public_key: row.get_ref(10)?.as_blob().unwrap_or_default().to_vec(),
            not_before: row.get(11)?,
            not_after: row.get(12)?,
        });
    }
    Ok(())
}
