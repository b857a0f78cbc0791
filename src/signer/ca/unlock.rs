//! Unlocking the CA key: the one place the key is opened behind [`CaSigner`] (checked against
//! `ca.pem`), always inside `ca.db`'s write lock and always recorded (`key-unlocked` with the
//! custody + a checkpoint signed with the key, or `unlock-failed` with the error's code).
//!
//! The custody is chosen by which file the CA directory holds: `ca.key.pkcs11` (a PKCS#11
//! token, opened with [`Unlock::Pin`]), else `quorum.json` (custodians' shares,
//! [`Unlock::Shares`]), else `ca.key.age` alone (a passphrase or an age identity).

use super::{CaError, UnlockedCa};
use crate::signer::audit::AuditWriter;
use crate::signer::ca_files::{load_cert, CaCert, CA_DB, CA_KEY, CA_KEY_PKCS11, QUORUM_MANIFEST};
use crate::signer::db;
use crate::signer::key::age::{custody_of_file, AgeKey};
use crate::signer::key::pkcs11::{KeyUri, Pkcs11Key};
use crate::signer::key::quorum::{self, OpenedShare, QuorumManifest, ShareKey};
use crate::signer::key::{CaSigner, Custody, KeyError};
use crate::signer::secret::{self, CaKey, SecretError, ShareSecret, Unlock};
use serde_json::json;
use std::path::Path;
use zeroize::Zeroizing;

pub(crate) fn record_unlock(
    tx: &db::Transaction<'_>,
    operator: &str,
    event: &str,
    details: serde_json::Value,
    key: Option<&dyn CaSigner>,
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
                custody: opened.custody,
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

/// The key (`ca.key.pkcs11` or `ca.key.age`) and `ca.db` exist.
pub(crate) fn check_ca_files(ca_dir: &Path) -> Result<(), CaError> {
    let key_path = ca_dir.join(CA_KEY);
    if !key_path.exists() && !ca_dir.join(CA_KEY_PKCS11).exists() {
        return Err(CaError::Missing(key_path));
    }
    if !ca_dir.join(CA_DB).is_file() {
        return Err(CaError::Missing(ca_dir.join(CA_DB)));
    }
    Ok(())
}

/// How the CA directory holds its key (by which file exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `ca.key.pkcs11`: a PKCS#11 token.
    Pkcs11,
    /// `quorum.json` beside `ca.key.age`: custodians' shares.
    Quorum,
    /// `ca.key.age` alone: a passphrase or age identities.
    Age,
}

/// Which custody the CA in `ca_dir` uses: `ca.key.pkcs11`, then `quorum.json`, then
/// `ca.key.age` (no I/O beyond checking that the files exist).
pub fn key_kind(ca_dir: &Path) -> KeyKind {
    if ca_dir.join(CA_KEY_PKCS11).exists() {
        KeyKind::Pkcs11
    } else if ca_dir.join(QUORUM_MANIFEST).exists() {
        KeyKind::Quorum
    } else {
        KeyKind::Age
    }
}

/// The key as [`unlock_in_tx`] opened it: the signer, its custody and, for a key held in an
/// age file, the decrypted PKCS#8 (wiped on drop; `None` for a token-held key).
pub(crate) struct Opened {
    pub(crate) key: Box<dyn CaSigner>,
    pub(crate) custody: Custody,
    pub(crate) pkcs8: Option<Zeroizing<Vec<u8>>>,
}

/// A failed [`unlock_in_tx`]: the error, and whether `unlock-failed` was appended to the
/// transaction (then the caller commits it).
pub(crate) struct UnlockFailed {
    pub(crate) error: CaError,
    pub(crate) recorded: bool,
}

fn wrong_kind(kind: KeyKind, unlock: &Unlock) -> CaError {
    let want = match kind {
        KeyKind::Pkcs11 => "the key of this CA is in a PKCS#11 token (ca.key.pkcs11): give its user PIN with --pin-file F, NRFCA_PKCS11_PIN or the prompt",
        KeyKind::Quorum => "the key of this CA is held by a quorum of custodians (quorum.json): give --share FILE once per custodian taking part (M of them), each with its custodian's passphrase or --share-identity",
        KeyKind::Age => "the key of this CA is in ca.key.age: give --passphrase-file, NRFCA_PASSPHRASE, the prompt or --identity",
    };
    CaError::WrongSecret(format!("{want} (got {})", unlock.method()))
}

/// Open an age-held key (passphrase or identity).
fn open_age(ca_dir: &Path, unlock: &Unlock) -> Result<Opened, CaError> {
    let ciphertext = secret::read_key_file(&ca_dir.join(CA_KEY))?;
    let custody = custody_of_file(&ciphertext)?;
    let pkcs8 = secret::decrypt(&ciphertext, unlock)?;
    let key = CaKey::from_pkcs8(&pkcs8).map_err(|_| {
        CaError::Secret(SecretError::BadKeyFile(
            "it decrypts, but not to a P-256 PKCS#8 key".into(),
        ))
    })?;
    Ok(Opened {
        key: Box::new(AgeKey::new(key, custody.clone())),
        custody,
        pkcs8: Some(pkcs8),
    })
}

/// Read and check `quorum.json` of the CA with fingerprint `fingerprint`.
pub fn read_manifest(ca_dir: &Path, fingerprint: &str) -> Result<QuorumManifest, CaError> {
    let path = ca_dir.join(QUORUM_MANIFEST);
    let bytes = std::fs::read(&path).map_err(super::io_err(&path))?;
    let m = QuorumManifest::from_json(&bytes).map_err(KeyError::from)?;
    if !m.ca_sha256.eq_ignore_ascii_case(fingerprint) {
        return Err(CaError::KeyMismatch(
            "quorum.json describes the key of another CA; the CA directory was mixed up: restore it from one backup".into(),
        ));
    }
    Ok(m)
}

/// Open the share files `shares` (each with its custodian's secret).
pub fn open_shares(shares: &[secret::ShareInput]) -> Result<Vec<OpenedShare>, CaError> {
    let mut opened = Vec::with_capacity(shares.len());
    for s in shares {
        let label = s.path.display().to_string();
        let bytes = secret::read_limited(&s.path).map_err(|e| {
            KeyError::from(quorum::QuorumError::BadShare {
                share: label.clone(),
                why: crate::error::error_chain(&e),
            })
        })?;
        let share = match &s.secret {
            ShareSecret::Passphrase(p) => {
                quorum::open_share(&label, &bytes, &ShareKey::Passphrase(p.clone()))
            }
            ShareSecret::Identity(f) => {
                let ids = secret::load_identities(f)?;
                quorum::open_share(&label, &bytes, &ShareKey::Identities(&ids))
            }
        }
        .map_err(KeyError::from)?;
        opened.push(share);
    }
    Ok(opened)
}

/// Open a quorum-held key from custodians' shares.
fn open_quorum(
    ca_dir: &Path,
    cert: &CaCert,
    shares: &[secret::ShareInput],
) -> Result<Opened, CaError> {
    let manifest = read_manifest(ca_dir, &cert.fingerprint)?;
    let key_file = secret::read_key_file(&ca_dir.join(CA_KEY))?;
    let opened = open_shares(shares)?;
    let id = quorum::combine(&manifest, &opened).map_err(KeyError::from)?;
    let pkcs8 = id.open_pkcs8(&key_file)?;
    let key = CaKey::from_pkcs8(&pkcs8)?;
    let custody = manifest.custody(id.participants().to_vec());
    Ok(Opened {
        key: Box::new(AgeKey::new(key, custody.clone())),
        custody,
        pkcs8: Some(pkcs8),
    })
}

/// Read `ca.key.pkcs11` (one RFC 7512 URI line).
pub fn read_key_uri(ca_dir: &Path) -> Result<KeyUri, CaError> {
    let path = ca_dir.join(CA_KEY_PKCS11);
    let text = std::fs::read_to_string(&path).map_err(super::io_err(&path))?;
    Ok(KeyUri::parse(text.trim()).map_err(KeyError::from)?)
}

/// Open a token-held key with the user PIN.
fn open_pkcs11(ca_dir: &Path, pin: &crate::signer::key::pkcs11::Pin) -> Result<Opened, CaError> {
    let uri = read_key_uri(ca_dir)?;
    let key = Pkcs11Key::open(&uri, None, pin).map_err(KeyError::from)?;
    let custody = key.custody();
    Ok(Opened {
        key: Box::new(key),
        custody,
        pkcs8: None,
    })
}

/// Open the CA key in `ca_dir` with `unlock` (by the custody the directory's files say) and
/// check it against `cert`. Records nothing (see [`unlock_in_tx`]).
pub(crate) fn open_key(ca_dir: &Path, cert: &CaCert, unlock: &Unlock) -> Result<Opened, CaError> {
    let kind = key_kind(ca_dir);
    let opened = match (kind, unlock) {
        (KeyKind::Pkcs11, Unlock::Pin(pin)) => open_pkcs11(ca_dir, pin)?,
        (KeyKind::Quorum, Unlock::Shares(shares)) => open_quorum(ca_dir, cert, shares)?,
        (KeyKind::Age, Unlock::Passphrase(_) | Unlock::Identity(_)) => open_age(ca_dir, unlock)?,
        (kind, unlock) => return Err(wrong_kind(kind, unlock)),
    };
    if opened.key.public_key() != cert.public_key {
        return Err(CaError::KeyMismatch(format!(
            "{} does not hold the key of ca.pem; the CA directory was mixed up: restore both from the same backup",
            if kind == KeyKind::Pkcs11 { "the token named by ca.key.pkcs11" } else { "ca.key.age" }
        )));
    }
    Ok(opened)
}

/// Stable code of an unlock failure, for `unlock-failed` records and `--json` errors.
pub fn unlock_error_code(e: &CaError) -> &'static str {
    match e {
        CaError::WrongSecret(_) => "wrong-secret",
        CaError::KeyMismatch(_) => "key-mismatch",
        CaError::Key(k) => k.code(),
        CaError::Secret(SecretError::Permissions { .. }) => "key-file-permissions",
        CaError::Secret(SecretError::WorkFactorTooHigh { .. }) => "scrypt-work-factor-too-high",
        CaError::Secret(SecretError::BadIdentity(_)) => "identity-unusable",
        CaError::Secret(SecretError::Io { .. }) => "identity-unreadable",
        _ => "key-file-unreadable",
    }
}

/// [`unlock_in_tx`] for a caller that goes on in the same transaction: on success the
/// transaction comes back with the opened key; on failure a recorded `unlock-failed` is
/// committed (the attempt stays in the log) and the error returned.
pub(crate) fn unlock_keeping_record<'c>(
    tx: db::Transaction<'c>,
    ca_dir: &Path,
    cert: &CaCert,
    unlock: &Unlock,
    operator: &str,
) -> Result<(db::Transaction<'c>, Opened), CaError> {
    match unlock_in_tx(&tx, ca_dir, cert, unlock, operator) {
        Ok(o) => Ok((tx, o)),
        Err(failed) => {
            if failed.recorded {
                let _ = tx.commit();
            }
            Err(failed.error)
        }
    }
}

/// The body of [`unlock`], inside the caller's IMMEDIATE transaction: open the key (by its
/// custody), check against `cert`, and append `key-unlocked` (with the custody) + checkpoint,
/// or `unlock-failed` (with the error's code). Commits nothing.
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
        _ => None,
    };
    let share_files: Option<Vec<String>> = match unlock {
        Unlock::Shares(s) => Some(s.iter().map(|s| s.path.display().to_string()).collect()),
        _ => None,
    };
    let kind = key_kind(ca_dir);
    // Inside the attempt so that a key file readable by others is an audited failure.
    let attempt = open_key(ca_dir, cert, unlock);
    match attempt {
        Ok(opened) => {
            let mut details = json!({
                "method": method,
                "identity_file": identity_file,
                "fingerprint": cert.fingerprint,
                "custody": opened.custody,
            });
            if let Some(files) = &share_files {
                details["share_files"] = json!(files);
            }
            record_unlock(
                tx,
                operator,
                "key-unlocked",
                details,
                Some(opened.key.as_ref()),
            )
            .map_err(|error| UnlockFailed {
                error,
                recorded: false,
            })?;
            Ok(opened)
        }
        Err(e) => {
            let reason = match &e {
                CaError::WrongSecret(_) => "wrong passphrase or identity".to_string(),
                CaError::KeyMismatch(_) => "key does not match ca.pem".to_string(),
                CaError::Secret(SecretError::Permissions { path, .. }) if *path == key_path => {
                    "ca.key.age readable by group or others".to_string()
                }
                CaError::Secret(SecretError::Permissions { .. }) => {
                    "identity file readable by group or others".to_string()
                }
                CaError::Secret(SecretError::WorkFactorTooHigh { .. }) => {
                    "scrypt work factor of ca.key.age above the limit".to_string()
                }
                CaError::Secret(SecretError::BadIdentity(_)) => {
                    "identity file unusable".to_string()
                }
                CaError::Secret(SecretError::Io { .. }) => "identity file unreadable".to_string(),
                // Quorum and token errors name no secret: their sentence is the reason.
                CaError::Key(k) => crate::error::error_chain(k),
                _ => "key file unreadable".to_string(),
            };
            let mut details = json!({
                "method": method,
                "identity_file": identity_file,
                "reason": reason,
                "code": unlock_error_code(&e),
                "custody_kind": match kind {
                    KeyKind::Pkcs11 => "pkcs11",
                    KeyKind::Quorum => "quorum",
                    KeyKind::Age => "age",
                },
                "fingerprint": cert.fingerprint,
            });
            if let Some(files) = &share_files {
                details["share_files"] = json!(files);
            }
            // Best effort: a failure to record must not hide the unlock error.
            let recorded = record_unlock(tx, operator, "unlock-failed", details, None);
            Err(UnlockFailed {
                error: e,
                recorded: recorded.is_ok(),
            })
        }
    }
}
