//! CA custody: `ca init` (new P-256 CA per SPEC §4) and `ca import` (adopt a CA made by
//! Nordic's `create_ca_cert`) in [`init`], `ca show` in [`show`], and [`unlock`] (decrypt
//! `ca.key.age` into a [`CaKey`](crate::signer::secret::CaKey), checked against `ca.pem`, recorded in the audit log: the one
//! place the key is unlocked). The subject syntax is `profile`'s; the CA's files and its
//! certificate are `crate::signer::ca_files`'s.
//!
//! The CA directory holds exactly `ca.pem`, `ca.key.age` (age-encrypted PKCS#8, mode 0600),
//! `parent.pem` for an intermediate (its root's certificate: `ca issue-intermediate`) and
//! `ca.db` (plus `ca.key.age.retired-*` files that `ca protect` leaves until the officer
//! removes them). None of them is ever overwritten, except `ca.key.age` by
//! [`crate::signer::protect::protect`], atomically, after the new file is proven; the
//! plaintext key never touches disk.

mod benches;
mod init;
mod profile;
mod reshare;
mod show;
mod unlock;

pub use crate::signer::ca_files::{
    load_cert, load_cert_file, load_parent, CaCert, CaFileError, CA_DB, CA_KEY, CA_KEY_PKCS11,
    CA_PEM, MAX_PEM_FILE, PARENT_PEM, QUORUM_MANIFEST, SHARES_DIR,
};
pub use benches::{distrust_bench, trust_bench, trusted_benches, TrustedBench};
pub(crate) use init::init_intermediate;
pub(crate) use init::{hold_key, sync_dir, tmp_name};
pub use init::{
    import, import_with, init, init_root, init_with, key_identifier, NewCustody, META_ROLE,
};
pub use reshare::{reshare, ReshareReport};
pub use show::show;
pub(crate) use unlock::{begin_immediate, check_ca_files, unlock_keeping_record, Opened};
pub use unlock::{
    key_kind, open_shares, read_key_uri, read_manifest, unlock, unlock_error_code, KeyKind,
};

use crate::crypto::CryptoError;
use crate::signer::audit::AuditError;
use crate::signer::db::DbError;
use crate::signer::secret::{Protection, SecretError};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// Default CA validity in days (20 years).
pub const DEFAULT_DAYS: u32 = 7300;
/// Longest accepted CA validity in days (100 years).
pub const MAX_DAYS: u32 = 36500;

/// Errors of CA custody. Display is this layer's sentence (what happened, what to do next);
/// the cause, when there is one, is the `source()` (the CLI prints the chain).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file already exists; nothing is overwritten.
    #[error("{} already exists; nrfca never overwrites a CA: use an empty --ca-dir", .0.display())]
    Exists(PathBuf),
    /// A CA file is missing.
    #[error("{} does not exist; check --ca-dir (create a CA with `nrfca ca init`; an interrupted init leaves no ca.db: remove that directory and run init again)", .0.display())]
    Missing(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `--subject` is not usable.
    #[error("bad --subject: {0}; write it like \"CN=Acme Device CA,O=Acme,C=NO\" (attributes CN, O, OU, L, ST, C; escape a comma as \\,)")]
    BadSubject(String),
    /// `--days` is out of range.
    #[error("--days {0} is out of range; give 1 to {MAX_DAYS} (default {DEFAULT_DAYS})")]
    BadDays(u32),
    /// The passphrase or identity does not open the key (CLI: exit 2).
    #[error("wrong passphrase or identity; {0}")]
    WrongSecret(String),
    /// The private key does not belong to the certificate.
    #[error("{0}")]
    KeyMismatch(String),
    /// The certificate is not a usable P-256 CA certificate.
    #[error("{0}")]
    BadCert(String),
    /// Key file, recipient or identity problems.
    #[error(transparent)]
    Secret(SecretError),
    /// Opening ca.db failed.
    #[error(transparent)]
    Db(DbError),
    /// SQLite failed.
    #[error("CA database error (check that ca.db is not in use by another nrfca)")]
    Sqlite(#[from] rusqlite::Error),
    /// Writing the audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A crypto primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Building the certificate failed.
    #[error("building the CA certificate failed")]
    Build(#[source] rcgen::Error),
    /// `ca.db` is locked by another command: nothing was decrypted.
    #[error("ca.db is in use by another nrfca command; the key was not unlocked: wait for that command to finish (or find it with `fuser ca.db`) and run this again")]
    Busy(#[source] rusqlite::Error),
    /// The key could not be opened or used (quorum shares refused, PKCS#11 token errors, a
    /// signature failed). [`crate::signer::key::KeyError::code`] is its stable code.
    #[error(transparent)]
    Key(#[from] crate::signer::key::KeyError),
    /// `ca protect` refused or could not complete; the message says what happened to
    /// `ca.key.age` and what to do next.
    #[error("{0}")]
    Protect(String),
}

impl From<SecretError> for CaError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::WrongSecret(hint) => CaError::WrongSecret(hint),
            other => CaError::Secret(other),
        }
    }
}

impl From<DbError> for CaError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Missing(p) => CaError::Missing(p),
            other => CaError::Db(other),
        }
    }
}

impl From<CaFileError> for CaError {
    fn from(e: CaFileError) -> Self {
        match e {
            CaFileError::Missing(p) => CaError::Missing(p),
            CaFileError::Io { path, source } => CaError::Io { path, source },
            CaFileError::BadCert(m) => CaError::BadCert(m),
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of [`init`].
#[derive(Debug)]
pub struct InitOptions {
    /// Subject, RFC 4514 style: `"CN=Acme Device CA,O=Acme,C=NO"` (first attribute = most
    /// specific; DER order is the reverse, as OpenSSL prints it: `C=NO, O=Acme, CN=...`).
    pub subject: String,
    /// Validity in days from now ([`DEFAULT_DAYS`]).
    pub days: u32,
    /// How to encrypt the key.
    pub protection: Protection,
    /// Operator recorded in the audit log.
    pub operator: String,
}

/// The CA key, unlocked, with its certificate.
pub struct UnlockedCa {
    /// The certificate.
    pub cert: CaCert,
    /// The CA key behind the signing trait, however it is held (an age key in zeroizing
    /// memory, or a PKCS#11 token session).
    pub key: Box<dyn crate::signer::key::CaSigner>,
    /// How the key is held, as recorded in `key-unlocked`.
    pub custody: crate::signer::key::Custody,
}

impl std::fmt::Debug for UnlockedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UnlockedCa({}, {})",
            self.cert.fingerprint,
            self.custody.kind()
        )
    }
}

/// What `ca show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CaInfo {
    /// The CA directory.
    pub ca_dir: PathBuf,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// How the key is protected, as recorded at init/import, e.g. `passphrase (age scrypt)`.
    pub key_protection: String,
    /// How to unlock, read from the CA's files: `passphrase`, `identity` (ca.key.age),
    /// `shares` (quorum.json) or `pin` (ca.key.pkcs11).
    pub unlock_with: String,
    /// How the key is held (kind and its fields; `None` when the key file is unreadable).
    pub custody: Option<crate::signer::key::Custody>,
    /// Certificates issued.
    pub issued: u64,
    /// Requests rejected.
    pub rejected: u64,
    /// Batches signed.
    pub batches: u64,
    /// Certificates revoked (`nrfca revoke`).
    pub revoked: u64,
    /// CRLs issued (`nrfca crl`).
    pub crls: u64,
    /// Records in the audit log.
    pub audit_records: u64,
    /// Hash of the last audit record.
    pub audit_head_hash: String,
    /// Warnings: those recorded when the CA was imported, and one per retired key file still
    /// in the CA directory.
    pub warnings: Vec<String>,
    /// Retired key files (`ca.key.age.retired-*`, left by `ca protect`) still in the CA
    /// directory.
    pub retired_key_files: Vec<String>,
    /// The benches this CA trusts (SPEC §10), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_benches: Vec<TrustedBench>,
}

#[cfg(test)]
mod tests {
    use super::init::random_serial;
    use super::profile::{parse_subject, Attr};
    use super::*;
    use crate::signer::audit;
    use crate::signer::secret::{self, Unlock};

    #[test]
    fn subject_parsing() {
        let a = parse_subject("CN=Acme Device CA,O=Acme\\, Inc.,C=NO").unwrap();
        assert_eq!(
            a,
            vec![
                (Attr::Cn, "Acme Device CA".to_string()),
                (Attr::O, "Acme, Inc.".to_string()),
                (Attr::C, "NO".to_string())
            ]
        );
        for bad in [
            "",
            "CN=",
            "CN=a,CN=b",
            "X=1",
            "CN",
            "C=norway",
            "CN=a+O=b",
            "CN=a\\",
            "CN=a\u{1}",
        ] {
            assert!(
                matches!(parse_subject(bad), Err(CaError::BadSubject(_))),
                "{bad:?}"
            );
        }
        let long = format!("CN={}", "x".repeat(65));
        assert!(parse_subject(&long).is_err());
    }

    #[test]
    fn serial_is_positive_20_bytes() {
        for _ in 0..100 {
            let s = random_serial();
            assert!(s[0] >= 0x40 && s[0] < 0x80);
        }
    }

    #[test]
    fn init_recipients_show_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let id = age::x25519::Identity::generate();
        let info = init(
            &ca_dir,
            &InitOptions {
                subject: "CN=Test CA,O=Test".into(),
                days: 30,
                protection: Protection::Recipients(vec![id.to_public().to_string()]),
                operator: "tester".into(),
            },
        )
        .unwrap();
        assert_eq!(info.subject, "CN=Test CA,O=Test");
        assert_eq!(info.audit_records, 2);
        assert_eq!(info.unlock_with, "identity");
        let idf = dir.path().join("id.txt");
        use age::secrecy::ExposeSecret;
        secret::write_secret_file(&idf, id.to_string().expose_secret().as_bytes()).unwrap();
        let u = unlock(&ca_dir, &Unlock::Identity(idf), "tester").unwrap();
        assert_eq!(u.cert.fingerprint, info.fingerprint);
        assert_eq!(u.cert.ski, key_identifier(&u.cert.public_key));
        assert_eq!(u.custody.kind(), "recipients");
        let report = audit::verify_db(&ca_dir).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.records, 4);
        assert_eq!(report.unsigned_tail, 0);
        // Never overwrite.
        assert!(matches!(
            init(
                &ca_dir,
                &InitOptions {
                    subject: "CN=Other".into(),
                    days: 30,
                    protection: Protection::Recipients(vec![id.to_public().to_string()]),
                    operator: "tester".into(),
                }
            ),
            Err(CaError::Exists(_))
        ));
    }
}
