//! `nrfca crl`: the CA's revocations as an X.509 v2 CRL (RFC 5280 §5), built with
//! `x509-cert`'s CRL types, with `revoked.csv` (the nRF Cloud removal list: nRF Cloud has no
//! CRL) and a signed manifest, written atomically (a temporary directory renamed into place).
//!
//! **CRL numbers never go back.** The number is `max(last stored + 1, Unix time now in
//! milliseconds)`: the stored number makes it increase within one `ca.db` whatever the clock
//! does, the clock makes it increase across a `ca.db` restored from an old backup (whose stored
//! number is behind CRLs already published). A run holds `ca.db`'s write lock from taking the
//! number through several fsyncs, so two runs are always more than a millisecond apart and
//! every number is at most its issue time: a later run's clock is past every number issued
//! before, restored database or not (as long as the signer's clock is not set back). It stays
//! below 2^63, far inside RFC 5280's 20 octets. The issuance is audited
//! (`crl-issued`, with the number) and checkpointed with the CA key, which also signs any
//! `certificate-revoked` records written since the last checkpoint.
//!
//! The output directory holds `crl.der`, `crl.pem`, `revoked.csv`
//! (`device_id,serial,reason,revoked_at`), `manifest.json` (format [`MANIFEST_FORMAT`]) and
//! `manifest.sig` (base64 DER ECDSA-SHA256 over `manifest.json` by the CA key, like a
//! bundle's); [`verify_dir`] checks it against a trusted CA certificate.

use super::{io_err, x509_time, LifecycleError};
use crate::bundle::FileDigest;
use crate::oid;
use crate::signer::audit::{self, AuditWriter};
use crate::signer::ca::{self, CaCert};
use crate::signer::db::revocations;
use crate::signer::lifecycle::revoke::Reason;
use crate::signer::secret::Unlock;
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// `manifest.json`'s `format` in a CRL directory.
pub const MANIFEST_FORMAT: &str = "nrfca-crl/1";
/// Header of `revoked.csv`.
pub const REVOKED_HEADER: &str = "device_id,serial,reason,revoked_at";
/// Default `--next-update-days`.
pub const DEFAULT_NEXT_UPDATE_DAYS: u32 = 30;
/// Longest accepted `--next-update-days`.
pub const MAX_NEXT_UPDATE_DAYS: u32 = 3660;
const FILES: [&str; 3] = ["crl.der", "crl.pem", "revoked.csv"];

/// Options of [`issue_crl`].
#[derive(Debug, Clone)]
pub struct CrlOptions {
    /// The directory to create (must not exist).
    pub out: PathBuf,
    /// nextUpdate = thisUpdate + this many days.
    pub next_update_days: u32,
    /// Recorded in the audit log.
    pub operator: String,
}

/// The signed manifest of a CRL directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The CRL number (decimal).
    pub crl_number: String,
    /// thisUpdate, RFC 3339 UTC.
    pub this_update: String,
    /// nextUpdate, RFC 3339 UTC.
    pub next_update: String,
    /// SHA-256 fingerprint of the issuing CA certificate DER.
    pub ca_sha256: String,
    /// Number of revoked certificates listed.
    pub revoked: u64,
    /// crl.der, crl.pem, revoked.csv with their SHA-256, sorted by name.
    pub files: Vec<FileDigest>,
}

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial, lowercase hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: Reason,
}

/// The CA key's DER ECDSA-SHA256 signer, as [`build_crl`] takes it (e.g.
/// `|m| signer.sign_der(m).map_err(|e| error_chain(&e))` for any `CaSigner`).
pub type SignFn<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// Build and sign a CRL (DER). `sign` is the CA key's DER ECDSA-SHA256 signer over the
/// TBSCertList. Reason codes are written except for `unspecified` (RFC 5280 §5.3.1: SHOULD
/// be absent rather than unspecified).
pub fn build_crl(
    ca: &CaCert,
    entries: &[CrlEntry],
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    sign: &mut SignFn<'_>,
) -> Result<Vec<u8>, LifecycleError> {
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    use x509_cert::ext::pkix::{CrlNumber, CrlReason};
    use x509_cert::ext::Extension;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::AlgorithmIdentifierOwned;
    let bad = |e: der::Error| LifecycleError::Build(format!("building the CRL failed: {e}"));
    let ext = |id: oid::Oid, value: Vec<u8>| -> Result<Extension, LifecycleError> {
        Ok(Extension {
            extn_id: id,
            critical: false,
            extn_value: OctetString::new(value).map_err(bad)?,
        })
    };
    let alg = AlgorithmIdentifierOwned {
        oid: oid::ECDSA_WITH_SHA256,
        parameters: None,
    };
    let mut revoked = Vec::with_capacity(entries.len());
    for e in entries {
        let bytes = hex::decode(if e.serial.len() % 2 == 1 {
            format!("0{}", e.serial)
        } else {
            e.serial.clone()
        })
        .map_err(|_| LifecycleError::Build(format!("serial {} in ca.db is not hex", e.serial)))?;
        let reason = match e.reason {
            Reason::Unspecified => None,
            Reason::KeyCompromise => Some(CrlReason::KeyCompromise),
            Reason::AffiliationChanged => Some(CrlReason::AffiliationChanged),
            Reason::Superseded => Some(CrlReason::Superseded),
            Reason::CessationOfOperation => Some(CrlReason::CessationOfOperation),
        };
        let crl_entry_extensions = match reason {
            None => None,
            Some(r) => Some(vec![ext(oid::CRL_REASON, r.to_der().map_err(bad)?)?]),
        };
        revoked.push(RevokedCert {
            serial_number: SerialNumber::new(&bytes).map_err(bad)?,
            revocation_date: x509_time(e.revoked_at)?,
            crl_entry_extensions,
        });
    }
    let number_bytes = number.to_be_bytes();
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: alg.clone(),
        issuer: Name::from_der(&ca.subject_der).map_err(bad)?,
        this_update: x509_time(this_update)?,
        next_update: Some(x509_time(next_update)?),
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: Some(vec![
            ext(
                oid::AUTHORITY_KEY_IDENTIFIER,
                crate::signer::issue::aki_der(&ca.ski).map_err(bad)?,
            )?,
            ext(
                oid::CRL_NUMBER,
                CrlNumber(der::asn1::Uint::new(&number_bytes).map_err(bad)?)
                    .to_der()
                    .map_err(bad)?,
            )?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(bad)?;
    let sig = sign(&tbs_der)
        .map_err(|e| LifecycleError::Build(format!("signing the CRL failed: {e}")))?;
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

/// The next CRL number: `max(last + 1, now_unix_ms)` (see the module docs).
pub fn next_crl_number(last: u64, now_unix_ms: i128) -> u64 {
    last.saturating_add(1)
        .max(u64::try_from(now_unix_ms).unwrap_or(0))
}

/// What [`issue_crl`] made.
#[derive(Debug, Clone, Serialize)]
pub struct CrlInfo {
    /// The directory written.
    pub out: PathBuf,
    /// The manifest as signed.
    pub manifest: CrlManifest,
}

fn parse_time(s: &str) -> Result<OffsetDateTime, LifecycleError> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| LifecycleError::Build(format!("time {s:?} in ca.db is not RFC 3339")))
}

/// Unlock the CA key (audited like every unlock), number, build and sign the CRL, write the
/// output directory atomically, and record `crl-issued` + a checkpoint, in one `ca.db`
/// transaction that commits before the directory is renamed into place.
pub fn issue_crl(
    ca_dir: &Path,
    unlock: &Unlock,
    opts: &CrlOptions,
) -> Result<CrlInfo, LifecycleError> {
    if !(1..=MAX_NEXT_UPDATE_DAYS).contains(&opts.next_update_days) {
        return Err(LifecycleError::BadInput(format!(
            "--next-update-days {} is out of range; give 1 to {MAX_NEXT_UPDATE_DAYS} (default {DEFAULT_NEXT_UPDATE_DAYS})",
            opts.next_update_days
        )));
    }
    let (parent, name) = super::new_out_dir(&opts.out)?;
    let (cert, mut conn) = super::open_signing_ca(ca_dir)?;
    let tx = ca::begin_immediate(&mut conn)?;
    let (tx, opened) = super::unlock_in(tx, ca_dir, &cert, unlock, &opts.operator)?;
    let key = &opened.key;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    let next = now + time::Duration::days(i64::from(opts.next_update_days));
    let number = next_crl_number(
        revocations::last_crl_number(&tx)?,
        OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000,
    );
    let rows = revocations::all(&tx)?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut csv = Vec::new();
    csv.extend_from_slice(REVOKED_HEADER.as_bytes());
    csv.push(b'\n');
    for r in &rows {
        let reason = Reason::parse(&r.reason).ok_or_else(|| {
            LifecycleError::Build(format!(
                "reason {:?} of serial {} in ca.db is unknown",
                r.reason, r.serial
            ))
        })?;
        entries.push(CrlEntry {
            serial: r.serial.clone(),
            revoked_at: parse_time(&r.revoked_at)?,
            reason,
        });
        csv.extend_from_slice(&crate::bundle::csv_record(&[
            &crate::bundle::safe_cell(&r.device_id),
            &r.serial,
            &r.reason,
            &r.revoked_at,
        ]));
    }
    let mut sign = |m: &[u8]| key.sign_der(m).map_err(|e| crate::error::error_chain(&e));
    let der = build_crl(&cert, &entries, number, now, next, &mut sign)?;
    let pem = crate::util::pem_encode("X509 CRL", &der);

    // The directory, under a temporary name beside --out.
    let tmp = parent.join(format!(
        "{name}{}{}",
        crate::bundle::PARTIAL_MARK,
        hex::encode(crate::crypto::random_bytes::<6>())
    ));
    let result = (|| -> Result<CrlManifest, LifecycleError> {
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let mut files = Vec::new();
        for (n, data) in FILES.iter().zip([&der[..], pem.as_bytes(), &csv[..]]) {
            write_file(&tmp.join(n), data)?;
            files.push(FileDigest {
                name: n.to_string(),
                sha256: crate::crypto::sha256_hex(data),
            });
        }
        let manifest = CrlManifest {
            format: MANIFEST_FORMAT.to_string(),
            crl_number: number.to_string(),
            this_update: audit::format_time(now),
            next_update: audit::format_time(next),
            ca_sha256: cert.fingerprint.clone(),
            revoked: rows.len() as u64,
            files,
        };
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| LifecycleError::Build(e.to_string()))?;
        json.push(b'\n');
        write_file(&tmp.join("manifest.json"), &json)?;
        let sig = sign(&json).map_err(LifecycleError::Build)?;
        let mut b64 = crate::crypto::b64_encode(&sig);
        b64.push('\n');
        write_file(&tmp.join("manifest.sig"), b64.as_bytes())?;
        ca::sync_dir(&tmp)?;
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let committed = (|| -> Result<(), LifecycleError> {
        revocations::set_crl_number(&tx, number)?;
        let mut w = AuditWriter::new(&tx, &opts.operator)?;
        w.append(
            &tx,
            "crl-issued",
            &serde_json::json!({
                "crl_number": number.to_string(),
                "revoked": rows.len(),
                "this_update": manifest.this_update,
                "next_update": manifest.next_update,
                "crl_sha256": crate::crypto::sha256_hex(&der),
                "out": opts.out.display().to_string(),
            }),
        )?;
        w.checkpoint(&tx, key)?;
        drop(w);
        Ok(())
    })()
    .and_then(|()| tx.commit().map_err(LifecycleError::from));
    if let Err(e) = committed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Recorded: publish. A crash here leaves the temporary directory (named as partial) and a
    // used number, never a reused one.
    if opts.out.symlink_metadata().is_ok() {
        return Err(LifecycleError::Exists(opts.out.clone()));
    }
    std::fs::rename(&tmp, &opts.out).map_err(io_err(&opts.out))?;
    ca::sync_dir(&parent)?;
    Ok(CrlInfo {
        out: opts.out.clone(),
        manifest,
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), LifecycleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Check a CRL directory against a trusted CA certificate (PEM): `manifest.sig` verifies
/// with its key, the manifest names that CA, every listed file has its SHA-256, nothing is
/// unlisted, and `crl.der` is signed by that CA. Returns the manifest.
pub fn verify_dir(dir: &Path, trusted_ca_pem: &[u8]) -> Result<CrlManifest, LifecycleError> {
    let bad = |m: String| LifecycleError::BadInput(format!("{}: {m}", dir.display()));
    let trusted_der = std::str::from_utf8(trusted_ca_pem)
        .ok()
        .and_then(crate::util::first_cert_der)
        .ok_or_else(|| LifecycleError::BadInput("--trust holds no CERTIFICATE PEM block".into()))?;
    let key = crate::bundle::cert_public_key(&trusted_der)
        .map_err(|e| LifecycleError::BadInput(format!("--trust: {e}")))?;
    let read = |n: &str| {
        let p = dir.join(n);
        std::fs::read(&p).map_err(io_err(&p))
    };
    let json = read("manifest.json")?;
    let sig = read("manifest.sig")?;
    let sig = std::str::from_utf8(&sig)
        .ok()
        .and_then(|s| crate::crypto::b64_decode(s.trim()).ok())
        .ok_or_else(|| bad("manifest.sig is not base64".into()))?;
    if !crate::crypto::verify_p256_sha256(&key, &json, &sig) {
        return Err(bad(
            "manifest.sig does not verify with the trusted CA: altered, or another CA's CRL".into(),
        ));
    }
    let m: CrlManifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if m.format != MANIFEST_FORMAT || m.ca_sha256 != crate::crypto::sha256_hex(&trusted_der) {
        return Err(bad(
            "manifest.json is not a CRL manifest of the trusted CA".into()
        ));
    }
    let listed: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    if listed != FILES {
        return Err(bad(format!(
            "manifest lists {listed:?}, expected {FILES:?}"
        )));
    }
    for f in &m.files {
        if crate::crypto::sha256_hex(&read(&f.name)?) != f.sha256 {
            return Err(bad(format!(
                "{} does not match the signed manifest",
                f.name
            )));
        }
    }
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let n = e
            .map_err(io_err(dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if n != "manifest.json" && n != "manifest.sig" && !FILES.contains(&n.as_str()) {
            return Err(bad(format!("{n} is not in the signed manifest")));
        }
    }
    let crl = x509_cert::crl::CertificateList::from_der(&read("crl.der")?)
        .map_err(|e| bad(format!("crl.der: {e}")))?;
    let tbs = crl.tbs_cert_list.to_der().map_err(|e| bad(e.to_string()))?;
    let crl_sig = crl.signature.as_bytes().unwrap_or_default();
    if !crate::crypto::verify_p256_sha256(&key, &tbs, crl_sig) {
        return Err(bad("crl.der is not signed by the trusted CA".into()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_numbers_move_forward_after_a_restore() {
        // Normal: one more than the last.
        assert_eq!(
            next_crl_number(2_000_000_000_000, 1_900_000_000_000),
            2_000_000_000_001
        );
        // ca.db restored from a backup whose stored number is behind: the clock wins.
        assert_eq!(next_crl_number(5, 1_900_000_000_000), 1_900_000_000_000);
        assert_eq!(next_crl_number(u64::MAX, 0), u64::MAX);
    }
}
