//! Unlocking the CA key: the one place `ca.key.age` is decrypted into a [`CaKey`] (checked
//! against `ca.pem`), always inside `ca.db`'s write lock and always recorded
//! (`key-unlocked` + a checkpoint signed with the key, or `unlock-failed`).

use super::{CaError, UnlockedCa};
use crate::signer::audit::AuditWriter;
use crate::signer::ca_files::{load_cert, CaCert, CA_DB, CA_KEY};
use crate::signer::db;
use crate::signer::secret::{self, CaKey, SecretError, Unlock};
use serde_json::json;
use std::path::Path;
use zeroize::Zeroizing;

pub(crate) fn record_unlock(
    tx: &db::Transaction<'_>,
    operator: &str,
    event: &str,
    details: serde_json::Value,
    key: Option<&CaKey>,
) -> Result<(), CaError> {
    let mut w = AuditWriter::new(tx, operator)?;
    w.append(tx, event, &details)?;
    if let Some(key) = key {
        w.checkpoint(tx, key)?;
    }
    Ok(())
}

/// Begin an IMMEDIATE transaction on ca.db (takes the write lock now); a locked database is
/// [`CaError::Busy`].
pub(crate) fn begin_immediate(conn: &mut db::Connection) -> Result<db::Transaction<'_>, CaError> {
    db::begin_immediate(conn).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            CaError::Busy(e)
        }
        _ => CaError::Sqlite(e),
    })
}

/// Decrypt `ca_dir/ca.key.age` with `unlock`, check it matches `ca.pem`, and record
/// `key-unlocked` (followed by a checkpoint signed with the unlocked key) or `unlock-failed`
/// (reason only, never secret material). A wrong passphrase or identity is
/// [`CaError::WrongSecret`]. `ca.db`'s write lock is taken *before* the key file is touched
/// and held until the record commits, so no decryption ever goes unrecorded: with `ca.db`
/// locked by another command (after SQLite's busy timeout), nothing is decrypted.
pub fn unlock(ca_dir: &Path, unlock: &Unlock, operator: &str) -> Result<UnlockedCa, CaError> {
    secret::harden_process()?;
    let cert = load_cert(ca_dir)?;
    check_ca_files(ca_dir)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let tx = begin_immediate(&mut conn)?;
    match unlock_in_tx(&tx, ca_dir, &cert, unlock, operator) {
        Ok(opened) => {
            tx.commit()?;
            Ok(UnlockedCa {
                cert,
                key: opened.key,
            })
        }
        Err(failed) => {
            if failed.recorded {
                let _ = tx.commit();
            }
            Err(failed.error)
        }
    }
}

/// `ca.key.age` and `ca.db` exist.
pub(crate) fn check_ca_files(ca_dir: &Path) -> Result<(), CaError> {
    let key_path = ca_dir.join(CA_KEY);
    if !key_path.exists() {
        return Err(CaError::Missing(key_path));
    }
    if !ca_dir.join(CA_DB).is_file() {
        return Err(CaError::Missing(ca_dir.join(CA_DB)));
    }
    Ok(())
}

/// The key as [`unlock_in_tx`] opened it: the key and the decrypted PKCS#8 (wiped on drop).
pub(crate) struct Opened {
    pub(crate) key: CaKey,
    pub(crate) pkcs8: Zeroizing<Vec<u8>>,
}

/// A failed [`unlock_in_tx`]: the error, and whether `unlock-failed` was appended to the
/// transaction (then the caller commits it).
pub(crate) struct UnlockFailed {
    pub(crate) error: CaError,
    pub(crate) recorded: bool,
}

/// The body of [`unlock`], inside the caller's IMMEDIATE transaction: decrypt, check against
/// `cert`, and append `key-unlocked` + checkpoint or `unlock-failed`. Commits nothing.
pub(crate) fn unlock_in_tx(
    tx: &db::Transaction<'_>,
    ca_dir: &Path,
    cert: &CaCert,
    unlock: &Unlock,
    operator: &str,
) -> Result<Opened, UnlockFailed> {
    let key_path = ca_dir.join(CA_KEY);
    let method = unlock.method();
    let identity_file = match unlock {
        Unlock::Identity(p) => Some(p.display().to_string()),
        Unlock::Passphrase(_) => None,
    };
    let attempt = (|| -> Result<Opened, CaError> {
        // Inside the attempt so that a key file readable by others is an audited failure.
        let ciphertext = secret::read_key_file(&key_path)?;
        let pkcs8 = secret::decrypt(&ciphertext, unlock)?;
        let key = CaKey::from_pkcs8(&pkcs8).map_err(|_| {
            CaError::Secret(SecretError::BadKeyFile(
                "it decrypts, but not to a P-256 PKCS#8 key".into(),
            ))
        })?;
        if key.public_key() != cert.public_key {
            return Err(CaError::KeyMismatch(
                "ca.key.age does not hold the key of ca.pem; the CA directory was mixed up: restore both from the same backup".into(),
            ));
        }
        Ok(Opened { key, pkcs8 })
    })();
    match attempt {
        Ok(opened) => {
            record_unlock(
                tx,
                operator,
                "key-unlocked",
                json!({
                    "method": method,
                    "identity_file": identity_file,
                    "fingerprint": cert.fingerprint,
                }),
                Some(&opened.key),
            )
            .map_err(|error| UnlockFailed {
                error,
                recorded: false,
            })?;
            Ok(opened)
        }
        Err(e) => {
            let reason = match &e {
                CaError::WrongSecret(_) => "wrong passphrase or identity",
                CaError::KeyMismatch(_) => "key does not match ca.pem",
                CaError::Secret(SecretError::Permissions { path, .. }) if *path == key_path => {
                    "ca.key.age readable by group or others"
                }
                CaError::Secret(SecretError::Permissions { .. }) => {
                    "identity file readable by group or others"
                }
                CaError::Secret(SecretError::BadKeyFile(why)) if why.contains("work factor") => {
                    "scrypt work factor of ca.key.age above the limit"
                }
                CaError::Secret(SecretError::BadIdentity(_)) => "identity file unusable",
                CaError::Secret(SecretError::Io { .. }) => "identity file unreadable",
                _ => "key file unreadable",
            };
            // Best effort: a failure to record must not hide the unlock error.
            let recorded = record_unlock(
                tx,
                operator,
                "unlock-failed",
                json!({
                    "method": method,
                    "identity_file": identity_file,
                    "reason": reason,
                    "fingerprint": cert.fingerprint,
                }),
                None,
            );
            Err(UnlockFailed {
                error: e,
                recorded: recorded.is_ok(),
            })
        }
    }
}
