//! `nrfca ca verification-cert`: the certificate AWS IoT asks for when a CA is registered
//! (`aws iot get-registration-code`, then `register-ca-certificate --verification-cert`):
//! CN = the registration code, a fresh P-256 key of its own, signed by the CA; audited
//! (`verification-cert-issued`). The key is AWS's throwaway proof-of-possession key: it
//! signs nothing nrfca trusts; it is written 0600 as PKCS#8 PEM so the AWS CLI can read it,
//! and can be deleted once the CA is registered. Built with the device profile of
//! `crate::signer::issue` (CA:FALSE, digitalSignature, clientAuth, SKI, AKI), which AWS
//! accepts: it checks only the CN and the CA's signature.

use super::{io_err, LifecycleError};
use crate::signer::audit::AuditWriter;
use crate::signer::ca;
use crate::signer::issue::{self, Issuance, IssuerProfile, Serial};
use crate::signer::secret::Unlock;
use serde::Serialize;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Validity of the verification certificate (days; never past the CA's notAfter).
pub const VERIFICATION_DAYS: i64 = 30;
/// The certificate file in `--out`.
pub const CERT_FILE: &str = "verification.pem";
/// The key file in `--out` (mode 0600).
pub const KEY_FILE: &str = "verification.key";

/// Options of [`verification_cert`].
#[derive(Debug, Clone)]
pub struct VerificationOptions {
    /// The registration code (the certificate's CN).
    pub cn: String,
    /// Directory to create (must not exist).
    pub out: PathBuf,
    /// Recorded in the audit log.
    pub operator: String,
}

/// What [`verification_cert`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationInfo {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the certificate PEM, hex.
    pub cert_sha256: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
}

/// Check a registration code: 1–64 printable ASCII characters (AWS gives 64 hex digits).
pub fn check_code(cn: &str) -> Result<(), LifecycleError> {
    if cn.is_empty() || cn.len() > issue::MAX_CN_LEN || !cn.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LifecycleError::BadInput(format!(
            "--cn {cn:?} is not a registration code: give the 1 to {} printable characters that `aws iot get-registration-code` prints",
            issue::MAX_CN_LEN
        )));
    }
    Ok(())
}

/// Unlock the CA (audited), issue the verification certificate and write it with its key to
/// a new directory (temporary directory renamed into place after the audit record commits).
pub fn verification_cert(
    ca_dir: &Path,
    unlock: &Unlock,
    opts: &VerificationOptions,
) -> Result<VerificationInfo, LifecycleError> {
    check_code(&opts.cn)?;
    let (parent, name) = super::new_out_dir(&opts.out)?;
    let (cert, mut conn) = super::open_signing_ca(ca_dir)?;
    let tx = ca::begin_immediate(&mut conn)?;
    let (tx, opened) = super::unlock_in(tx, ca_dir, &cert, unlock, &opts.operator)?;
    let (pair, pkcs8) = crate::crypto::P256Key::generate()
        .map_err(|e| LifecycleError::Build(format!("generating the key failed: {e}")))?;
    let now = OffsetDateTime::now_utc();
    let not_after = (now + time::Duration::days(VERIFICATION_DAYS)).min(cert.not_after);
    let serial = Serial::random().map_err(|e| LifecycleError::Build(e.to_string()))?;
    let issued = issue::issue(
        &IssuerProfile {
            subject_der: cert.subject_der.clone(),
            ski: cert.ski.clone(),
            not_after: cert.not_after,
        },
        &Issuance {
            device_id: opts.cn.clone(),
            public_key: pair.public_key(),
            serial,
            not_before: now,
            not_after,
        },
        |tbs| {
            opened
                .key
                .sign_der(tbs)
                .map_err(|e| crate::error::error_chain(&e))
        },
    )
    .map_err(|e| {
        LifecycleError::Build(format!("building the verification certificate failed: {e}"))
    })?;
    let key_pem = Zeroizing::new(crate::util::pem_encode("PRIVATE KEY", &pkcs8));
    let cert_sha256 = hex::encode(issued.pem_sha256);
    let tmp = parent.join(format!(
        "{name}{}{}",
        crate::bundle::PARTIAL_MARK,
        hex::encode(crate::crypto::random_bytes::<6>())
    ));
    let written = (|| -> Result<(), LifecycleError> {
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        crate::signer::secret::write_secret_file(&tmp.join(KEY_FILE), key_pem.as_bytes())
            .map_err(ca::CaError::from)?;
        std::fs::write(tmp.join(CERT_FILE), issued.pem.as_bytes())
            .map_err(io_err(&tmp.join(CERT_FILE)))?;
        ca::sync_dir(&tmp)?;
        let mut w = AuditWriter::new(&tx, &opts.operator)?;
        w.append(
            &tx,
            "verification-cert-issued",
            &serde_json::json!({
                "cn": opts.cn,
                "serial": serial.to_hex(),
                "cert_sha256": cert_sha256,
                "not_after": issue::rfc3339(not_after),
                "fingerprint": cert.fingerprint,
            }),
        )?;
        w.checkpoint(&tx, &opened.key)?;
        Ok(())
    })()
    .and_then(|()| tx.commit().map_err(LifecycleError::from));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &opts.out).map_err(io_err(&opts.out))?;
    ca::sync_dir(&parent)?;
    Ok(VerificationInfo {
        cert: opts.out.join(CERT_FILE),
        key: opts.out.join(KEY_FILE),
        serial: serial.to_hex(),
        cert_sha256,
        not_after: issue::rfc3339(not_after),
    })
}
