//! The lifecycle of issued certificates and of the CA (SPEC §12): [`revoke`] records
//! revocations in `ca.db` and the audit log, [`crl`] publishes them as a signed X.509 v2 CRL
//! with the nRF Cloud removal list, [`verification`] makes the AWS IoT verification
//! certificate, [`hierarchy`] the offline root above the signing CA. Nothing here prints.

pub mod crl;
pub mod hierarchy;
pub mod revoke;
pub mod verification;

use crate::signer::audit::AuditError;
use crate::signer::ca::CaError;
use crate::signer::db::DbError;
use std::path::PathBuf;

/// Errors of the lifecycle commands ("could not run": exit 2). Display is this layer's
/// sentence; the cause is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The CA could not be opened or unlocked.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Opening ca.db failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// SQLite failed.
    #[error("CA database error (check that ca.db is not open elsewhere and the disk is writable)")]
    Sqlite(#[from] rusqlite::Error),
    /// Writing the audit record failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The output already exists; nothing is overwritten.
    #[error("{} already exists; nrfca never overwrites: choose another --out", .0.display())]
    Exists(PathBuf),
    /// Bad input (a file, a value): the message says what to fix.
    #[error("{0}")]
    BadInput(String),
    /// Building or signing a structure failed.
    #[error("{0}")]
    Build(String),
}

impl LifecycleError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            LifecycleError::Ca(_) => "ca-unusable",
            LifecycleError::Db(_) | LifecycleError::Sqlite(_) => "database-error",
            LifecycleError::Audit(_) => "audit-error",
            LifecycleError::Io { .. } => "io-error",
            LifecycleError::Exists(_) => "output-exists",
            LifecycleError::BadInput(_) => "bad-input",
            LifecycleError::Build(_) => "build-failed",
        }
    }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LifecycleError + '_ {
    move |source| LifecycleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An X.509 `Time` for `t` ([`crate::signer::issue::x509_time`]).
pub(crate) fn x509_time(t: time::OffsetDateTime) -> Result<x509_cert::time::Time, LifecycleError> {
    crate::signer::issue::x509_time(t)
        .ok_or_else(|| LifecycleError::Build("time out of range".into()))
}

/// Refuse to sign with a CA past its notAfter (checked before the key is unlocked): what it
/// signs would not verify.
pub(crate) fn refuse_expired(cert: &crate::signer::ca::CaCert) -> Result<(), LifecycleError> {
    if time::OffsetDateTime::now_utc() > cert.not_after {
        return Err(LifecycleError::BadInput(format!(
            "the CA expired on {}: nothing it signs would verify; use its successor (see \"Rotate\" in docs/officer-guide.md)",
            crate::signer::issue::rfc3339(cert.not_after)
        )));
    }
    Ok(())
}

/// The CA a lifecycle command signs with, before its key is unlocked: the process hardened,
/// `ca.pem` loaded and not expired, the CA files checked, `ca.db` opened.
pub(crate) fn open_signing_ca(
    ca_dir: &std::path::Path,
) -> Result<(crate::signer::ca::CaCert, crate::signer::db::Connection), LifecycleError> {
    use crate::signer::ca;
    crate::signer::secret::harden_process().map_err(CaError::from)?;
    let cert = ca::load_cert(ca_dir).map_err(CaError::from)?;
    refuse_expired(&cert)?;
    ca::check_ca_files(ca_dir)?;
    let conn = crate::signer::db::open_existing(&ca_dir.join(ca::CA_DB))?;
    Ok((cert, conn))
}

/// `--out` of a command that creates a new directory: refused if it exists; its parent
/// (`.` for a bare name) and its file name, for the temporary sibling renamed into place.
pub(crate) fn new_out_dir(out: &std::path::Path) -> Result<(PathBuf, String), LifecycleError> {
    if out.symlink_metadata().is_ok() {
        return Err(LifecycleError::Exists(out.to_path_buf()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| LifecycleError::BadInput("--out must name a directory".into()))?
        .to_string_lossy()
        .into_owned();
    Ok((parent, name))
}

/// Unlock the CA key inside `tx` (audited), keeping a recorded failure
/// ([`crate::signer::ca::unlock_keeping_record`]).
pub(crate) fn unlock_in<'c>(
    tx: crate::signer::db::Transaction<'c>,
    ca_dir: &std::path::Path,
    cert: &crate::signer::ca::CaCert,
    unlock: &crate::signer::secret::Unlock,
    operator: &str,
) -> Result<
    (
        crate::signer::db::Transaction<'c>,
        crate::signer::ca::Opened,
    ),
    LifecycleError,
> {
    Ok(crate::signer::ca::unlock_keeping_record(
        tx, ca_dir, cert, unlock, operator,
    )?)
}
