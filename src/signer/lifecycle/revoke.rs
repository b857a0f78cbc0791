//! `nrfca revoke`: record revocations in `ca.db` (`revocations` table) and the audit chain
//! (`certificate-revoked`, one per certificate), in one transaction.
//!
//! Recording a revocation needs no key: a lost device is reported when it is lost, and the
//! officer may not hold the key then. The records are hash-chained like every other; the
//! next `nrfca crl` (which needs the key anyway, to sign the CRL) appends the CA-signed
//! checkpoint that covers them. Revoking a certificate twice is a no-op (reported as
//! "already revoked", nothing written). Unknown serials and devices are listed; the known ones
//! are still revoked.

use super::{io_err, LifecycleError};
use crate::signer::audit::{self, AuditWriter};
use crate::signer::ca;
pub use crate::signer::db::revocations::{Expiring, Revoked};
use crate::signer::db::{self, revocations};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// RFC 5280 §5.3.1 reason codes nrfca accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// unspecified (0): no reasonCode extension is written for it (RFC 5280 §5.3.1).
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
}

impl Reason {
    /// Every accepted reason.
    pub const ALL: [Reason; 5] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
    ];

    /// The RFC 5280 name (`keyCompromise`), as stored, audited and written to revoked.csv.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }

    /// The CRLReason value.
    pub fn code(self) -> u8 {
        match self {
            Reason::Unspecified => 0,
            Reason::KeyCompromise => 1,
            Reason::AffiliationChanged => 3,
            Reason::Superseded => 4,
            Reason::CessationOfOperation => 5,
        }
    }

    /// Parse an RFC 5280 name (as [`Reason::name`]).
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Devices by CN or attested UUID (every certificate issued to each).
    Devices(Vec<String>),
    /// Certificates by serial (hex; `:` and a `0x` prefix are ignored).
    Serials(Vec<String>),
    /// Every certificate of a batch.
    Batch(String),
    /// A CSV file with a `serial` or a `device_id` column (certs.csv, revoked.csv, or a list).
    File(PathBuf),
}

/// Options of [`revoke`].
#[derive(Debug, Clone)]
pub struct RevokeOptions {
    /// What to revoke.
    pub targets: Targets,
    /// Why.
    pub reason: Reason,
    /// Recorded in the audit log.
    pub operator: String,
}

/// One certificate in a [`RevokeReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedCert {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The certificate CN.
    pub device_id: String,
    /// The reason recorded (for an already revoked one: the first reason, unchanged).
    pub reason: String,
    /// When it was revoked (RFC 3339 UTC).
    pub revoked_at: String,
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RevokeReport {
    /// Revoked by this run.
    pub revoked: Vec<RevokedCert>,
    /// Already revoked before (nothing written for them).
    pub already_revoked: Vec<RevokedCert>,
    /// Serials, devices or the batch that `ca.db` does not know (nothing revoked for them).
    pub unknown: Vec<String>,
}

/// One line of a revocation list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    /// A serial.
    Serial(String),
    /// A device (CN or UUID).
    Device(String),
}

/// Parse a revocation list (CSV with a header naming a `serial` or a `device_id` column;
/// `serial` wins when both are there). Empty cells are skipped. No I/O.
pub fn parse_list(data: &[u8]) -> Result<Vec<ListEntry>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let headers = rdr
        .headers()
        .map_err(|e| format!("not a CSV file ({e})"))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (idx, serial) = match (col("serial"), col("device_id")) {
        (Some(i), _) => (i, true),
        (None, Some(i)) => (i, false),
        (None, None) => {
            return Err(
                "no `serial` or `device_id` column in the header line; give a CSV such as certs.csv or revoked.csv".into(),
            )
        }
    };
    let mut out = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("line {}: {e}", n + 2))?;
        let v = rec.get(idx).unwrap_or("").trim();
        if v.is_empty() {
            continue;
        }
        out.push(if serial {
            ListEntry::Serial(v.to_string())
        } else {
            ListEntry::Device(v.to_string())
        });
    }
    if out.is_empty() {
        return Err("the list names no certificate".into());
    }
    Ok(out)
}

/// A serial as `ca.db` stores it: lowercase hex without `:` or `0x`. `None` if not hex.
pub fn normalize_serial(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    (!hex.is_empty() && hex.len() <= 42 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Revoke the certificates named by `opts.targets` in the CA at `ca_dir` (see the module
/// docs). Everything this run records is one transaction.
pub fn revoke(ca_dir: &Path, opts: &RevokeOptions) -> Result<RevokeReport, LifecycleError> {
    let cert = ca::load_cert(ca_dir).map_err(ca::CaError::from)?;
    let entries: Vec<ListEntry> = match &opts.targets {
        Targets::Devices(d) => d.iter().cloned().map(ListEntry::Device).collect(),
        Targets::Serials(s) => s.iter().cloned().map(ListEntry::Serial).collect(),
        Targets::Batch(_) => Vec::new(),
        Targets::File(p) => {
            let data = std::fs::read(p).map_err(io_err(p))?;
            parse_list(&data)
                .map_err(|e| LifecycleError::BadInput(format!("{}: {e}", p.display())))?
        }
    };
    let mut conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let tx = db::begin_immediate(&mut conn)?;
    let mut report = RevokeReport::default();
    let mut targets = Vec::new();
    if let Targets::Batch(b) = &opts.targets {
        let found = revocations::by_batch(&tx, b)?;
        if found.is_empty() {
            report.unknown.push(format!("batch {b}"));
        }
        targets.extend(found);
    }
    for e in &entries {
        match e {
            ListEntry::Serial(s) => match normalize_serial(s) {
                Some(hex) => match revocations::by_serial(&tx, &hex)? {
                    Some(t) => targets.push(t),
                    None => report.unknown.push(format!("serial {s}")),
                },
                None => report.unknown.push(format!("serial {s} (not hex)")),
            },
            ListEntry::Device(d) => {
                let found = revocations::by_device(&tx, d)?;
                if found.is_empty() {
                    report.unknown.push(format!("device {d}"));
                }
                targets.extend(found);
            }
        }
    }
    let mut audit = AuditWriter::new(&tx, &opts.operator)?;
    let now = audit::now_rfc3339();
    let mut seen = std::collections::BTreeSet::new();
    for t in targets {
        if !seen.insert(t.serial.clone()) {
            continue;
        }
        if let Some(r) = revocations::get(&tx, &t.serial)? {
            report.already_revoked.push(RevokedCert {
                serial: r.serial,
                device_id: r.device_id,
                reason: r.reason,
                revoked_at: r.revoked_at,
            });
            continue;
        }
        revocations::insert(
            &tx,
            &revocations::Revoked {
                serial: t.serial.clone(),
                device_id: t.device_id.clone(),
                reason: opts.reason.name().to_string(),
                revoked_at: now.clone(),
                operator: opts.operator.clone(),
                not_after: String::new(),
            },
        )?;
        audit.append(
            &tx,
            "certificate-revoked",
            &serde_json::json!({
                "serial": t.serial,
                "device_id": t.device_id,
                "uuid": t.uuid,
                "batch": t.batch_id,
                "reason": opts.reason.name(),
                "fingerprint": cert.fingerprint,
            }),
        )?;
        report.revoked.push(RevokedCert {
            serial: t.serial,
            device_id: t.device_id,
            reason: opts.reason.name().to_string(),
            revoked_at: now.clone(),
        });
    }
    drop(audit);
    tx.commit()?;
    Ok(report)
}

/// Every revoked certificate of the CA at `ca_dir`, oldest revocation first (no secret).
pub fn list_revoked(ca_dir: &Path) -> Result<Vec<revocations::Revoked>, LifecycleError> {
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    Ok(revocations::all(&conn)?)
}

/// Certificates (not revoked) of the CA at `ca_dir` whose notAfter is within `days` days from
/// now (or already past), soonest first (no secret).
pub fn list_expiring(
    ca_dir: &Path,
    days: u32,
) -> Result<Vec<revocations::Expiring>, LifecycleError> {
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let before = time::OffsetDateTime::now_utc().unix_timestamp() + i64::from(days) * 86_400;
    Ok(revocations::expiring(&conn, before)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.name()), Some(r));
        }
        assert_eq!(Reason::parse("caCompromise"), None);
        assert_eq!(Reason::KeyCompromise.code(), 1);
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("0x0A:1b").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("zz"), None);
        assert_eq!(normalize_serial(""), None);
    }

    #[test]
    fn lists_parse_by_column() {
        let l = parse_list(b"device_id,serial,reason\nd1,0a,x\n,,\nd2,0B,y\n").unwrap();
        assert_eq!(
            l,
            vec![
                ListEntry::Serial("0a".into()),
                ListEntry::Serial("0B".into())
            ]
        );
        let l = parse_list(b"device_id\nd1\n").unwrap();
        assert_eq!(l, vec![ListEntry::Device("d1".into())]);
        assert!(parse_list(b"imei\n1\n").unwrap_err().contains("serial"));
        assert!(parse_list(b"serial\n").is_err());
    }
}
