//! `ca protect`: change how the CA key is protected at rest (new passphrase or new age
//! recipients) without ever leaving the CA directory without a `ca.key.age`; and
//! [`protect_custody`]: move the key to a quorum of custodians or into a PKCS#11 token.
//!
//! Steps, all under `ca.db`'s write lock (one IMMEDIATE transaction):
//! 1. unlock the current key exactly like [`ca::unlock`] (`key-unlocked` + checkpoint, or
//!    `unlock-failed`, which is committed and nothing else happens);
//! 2. encrypt the same PKCS#8 bytes to the new protection into a new 0600 temporary file in
//!    the CA directory (fsync'd);
//! 3. prove the temporary file opens with the *new* secret (the new passphrase, or every
//!    `--new-identity` file, each of which must belong to one of the new recipients) to the
//!    very same PKCS#8, whose public key is that of `ca.pem`;
//! 4. hard-link the current `ca.key.age` to `ca.key.age.retired-<UTC time>`, then `rename` the
//!    temporary file over `ca.key.age` (atomic: at every instant `ca.key.age` is the old or
//!    the new file), fsync the directory;
//! 5. append `key-protection-changed` and a checkpoint, update the recorded protection, commit.
//!
//! Order of the swap and the commit: the file is swapped *before* the record commits, so the
//! log never claims a change that did not happen. If the record cannot be written the swap is
//! undone (`rename` of the retired link back over `ca.key.age`) and only the run's
//! `key-unlocked` is committed (a savepoint is rolled back). A crash between the swap and
//! the commit leaves the new `ca.key.age`, the retired file, and no record of the run (neither
//! its unlock nor the change); [`crate::signer::ca::show`] then says that the retired file is
//! not named by any `key-protection-changed` record.
//!
//! Nothing here prints; secrets stay in zeroizing types.

use crate::crypto;
use crate::signer::audit::AuditWriter;
use crate::signer::ca::{self, CaError, CA_DB, CA_KEY};
use crate::signer::db;
use crate::signer::key::CaSigner;
use crate::signer::secret::{self, CaKey, FileProtection, Protection, Unlock};
use age::secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use std::io;
use std::path::{Path, PathBuf};

/// Prefix of retired key files in the CA directory: `ca.key.age.retired-<UTC time>`.
pub const RETIRED_PREFIX: &str = "ca.key.age.retired-";

/// What [`protect`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectReport {
    /// The CA directory.
    pub ca_dir: PathBuf,
    /// SHA-256 of the CA certificate, lowercase hex.
    pub fingerprint: String,
    /// The old protection (`passphrase` or `recipients`).
    pub old_method: String,
    /// The old protection as recorded (e.g. `passphrase (age scrypt)`).
    pub old_protection: String,
    /// The new protection (`passphrase` or `recipients`).
    pub new_method: String,
    /// The new protection, e.g. `age X25519 recipients: age1..., age1...`.
    pub new_protection: String,
    /// The retired copy of the old key file (a file name in the CA directory).
    pub retired_file: String,
    /// SHA-256 of the new `ca.key.age`, lowercase hex.
    pub new_key_sha256: String,
}

fn method_of(p: &Protection) -> &'static str {
    match p {
        Protection::Passphrase(_) => "passphrase",
        Protection::Recipients(_) => "recipients",
    }
}

/// Check the new protection before anything is unlocked: recipients parse, and for
/// recipients every `new_identities` file holds an identity of one of them (at least one
/// such file is required: without it the new file could not be proven to open). [`protect`]
/// calls it first; a CLI may call it before asking for the current passphrase.
pub fn check_new(new: &Protection, new_identities: &[PathBuf]) -> Result<(), CaError> {
    match new {
        Protection::Passphrase(p) => {
            if p.expose_secret().is_empty() {
                return Err(secret::SecretError::EmptyPassphrase.into());
            }
            if !new_identities.is_empty() {
                return Err(CaError::Protect(
                    "--new-identity goes with --new-recipient, not a new passphrase; drop it"
                        .into(),
                ));
            }
        }
        Protection::Recipients(list) => {
            let parsed = secret::parse_recipients(list)?;
            if new_identities.is_empty() {
                return Err(CaError::Protect(
                    "give --new-identity FILE: the identity file of one of the new recipients, so that the new ca.key.age can be proven to open before the old one is replaced".into(),
                ));
            }
            let wanted: Vec<String> = parsed.iter().map(ToString::to_string).collect();
            for path in new_identities {
                let ids = secret::load_identities(path)?;
                if !ids
                    .iter()
                    .any(|i| wanted.contains(&i.to_public().to_string()))
                {
                    return Err(CaError::Protect(format!(
                        "{} holds no identity of the new recipients ({}); nothing was changed: give the identity file of one of the --new-recipient keys",
                        path.display(),
                        wanted.join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Prove that `new_file` opens with the new secret to exactly `pkcs8`, the key of `ca.pem`.
fn prove(
    new_file: &Path,
    new: &Protection,
    new_identities: &[PathBuf],
    pkcs8: &[u8],
    public_key: &[u8; 65],
) -> Result<(), CaError> {
    let ciphertext = secret::read_key_file(new_file)?;
    let unlocks: Vec<Unlock> = match new {
        Protection::Passphrase(p) => vec![Unlock::Passphrase(p.clone())],
        Protection::Recipients(_) => new_identities
            .iter()
            .map(|p| Unlock::Identity(p.clone()))
            .collect(),
    };
    for u in &unlocks {
        let opened = secret::decrypt(&ciphertext, u).map_err(|e| {
            CaError::Protect(format!(
                "the new key file does not open with the new {}: {}; nothing was changed",
                match u {
                    Unlock::Passphrase(_) => "passphrase".to_string(),
                    Unlock::Identity(p) => format!("identity {}", p.display()),
                    other => other.method().to_string(),
                },
                crate::error::error_chain(&e)
            ))
        })?;
        let key = CaKey::from_pkcs8(&opened)?;
        if opened.as_slice() != pkcs8 || key.public_key() != *public_key {
            return Err(CaError::Protect(
                "the new key file opens to a different key than ca.pem's; nothing was changed"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The UTC time retired files are named by: `20260102T030405Z`.
fn retired_stamp() -> Result<String, CaError> {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|e| CaError::Protect(format!("cannot format the time: {e}")))
}

/// Link the current `ca.key.age` to a new `ca.key.age.retired-<UTC time>[-N]`.
fn link_retired(ca_dir: &Path) -> Result<String, CaError> {
    let stamp = retired_stamp()?;
    let key_path = ca_dir.join(CA_KEY);
    for n in 0..100u32 {
        let name = if n == 0 {
            format!("{RETIRED_PREFIX}{stamp}")
        } else {
            format!("{RETIRED_PREFIX}{stamp}-{n}")
        };
        match std::fs::hard_link(&key_path, ca_dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(CaError::Io {
                    path: ca_dir.join(name),
                    source: e,
                })
            }
        }
    }
    Err(CaError::Protect(format!(
        "too many {RETIRED_PREFIX}{stamp}* files in {}; remove the old ones and retry",
        ca_dir.display()
    )))
}

/// Replace the protection of the CA key in `ca_dir` (see the module documentation).
/// `unlock` opens the current key; `new` is the new protection; for recipients,
/// `new_identities` are identity files of some of the new recipients, used to prove that the
/// new file opens. On any error before the swap, `ca.key.age` is untouched and no temporary
/// file is left.
pub fn protect(
    ca_dir: &Path,
    unlock: &Unlock,
    new: &Protection,
    new_identities: &[PathBuf],
    operator: &str,
) -> Result<ProtectReport, CaError> {
    secret::harden_process()?;
    let cert = ca::load_cert(ca_dir)?;
    ca::check_ca_files(ca_dir)?;
    match ca::key_kind(ca_dir) {
        ca::KeyKind::Age => {}
        ca::KeyKind::Quorum => {
            return Err(CaError::Protect(
                "the key is held by a quorum of custodians: renew the share set with `nrfca ca reshare`, or move the key into a token with `ca protect --pkcs11`; nothing was changed".into(),
            ))
        }
        ca::KeyKind::Pkcs11 => {
            return Err(CaError::Protect(
                "the key is in a PKCS#11 token and never leaves it; nothing was changed".into(),
            ))
        }
    }
    check_new(new, new_identities)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let tx = ca::begin_immediate(&mut conn)?;
    let (tx, opened) = ca::unlock_keeping_record(tx, ca_dir, &cert, unlock, operator)?;
    // From here on a failure rolls back to this savepoint and still commits the run's
    // `key-unlocked` (no decryption goes unrecorded).
    db::savepoint(&tx, "protect")?;
    let result = change(ca_dir, &tx, &cert, &opened, new, new_identities, operator);
    if result.is_err() {
        let _ = db::savepoint_rollback(&tx, "protect").and_then(|()| tx.commit());
    }
    result
}

/// The part of [`protect`] after the unlock, inside its transaction; commits on success.
fn change(
    ca_dir: &Path,
    tx: &db::Transaction<'_>,
    cert: &ca::CaCert,
    opened: &ca::Opened,
    new: &Protection,
    new_identities: &[PathBuf],
    operator: &str,
) -> Result<ProtectReport, CaError> {
    let key_path = ca_dir.join(CA_KEY);
    let old_ciphertext = secret::read_key_file(&key_path)?;
    let old_method = match secret::file_protection(&old_ciphertext)? {
        FileProtection::Passphrase => "passphrase",
        FileProtection::Recipients => "recipients",
    };
    let old_protection: String =
        db::meta::get(tx, db::meta::KEY_PROTECTION)?.unwrap_or_else(|| old_method.to_string());

    // New file, proven, before anything is replaced.
    let pkcs8 = opened.pkcs8.as_deref().ok_or_else(|| {
        CaError::Protect(
            "the CA key is in a PKCS#11 token and never leaves it: it cannot be re-encrypted; nothing was changed".into(),
        )
    })?;
    let ciphertext = secret::encrypt(pkcs8, new)?;
    let tmp = ca::tmp_name(ca_dir, CA_KEY);
    secret::write_secret_file(&tmp, &ciphertext)?;
    if let Err(e) = prove(&tmp, new, new_identities, pkcs8, &cert.public_key) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let new_sha = crypto::sha256_hex(&ciphertext);

    // The swap: ca.key.age is the old or the new file at every instant.
    let retired = match link_retired(ca_dir) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &key_path) {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(ca_dir.join(&retired));
        return Err(CaError::Io {
            path: key_path,
            source: e,
        });
    }
    let undo = |why: CaError| -> CaError {
        let why = crate::error::error_chain(&why);
        let restored = std::fs::rename(ca_dir.join(&retired), &key_path)
            .and_then(|()| std::fs::File::open(ca_dir).and_then(|d| d.sync_all()));
        match restored {
            Ok(()) => CaError::Protect(format!(
                "completing the change failed after the new file was in place ({why}); the old ca.key.age was put back and nothing was recorded but this run's unlock: fix the cause and run `nrfca ca protect` again"
            )),
            Err(e) => CaError::Protect(format!(
                "completing the change failed after the new file was in place ({why}), and putting the old key file back failed too ({e}): ca.key.age is the NEW file (it opens with the new secret); the old one is {retired}. Run `nrfca ca verify-key` with the new secret, then `nrfca audit verify`"
            )),
        }
    };
    if let Err(e) = ca::sync_dir(ca_dir) {
        return Err(undo(e));
    }

    let details = json!({
        "fingerprint": cert.fingerprint,
        "old_method": old_method,
        "old_protection": old_protection,
        "new_method": method_of(new),
        "new_protection": new.describe(),
        "retired_file": retired,
        "new_key_sha256": new_sha,
    });
    let record = (|| -> Result<(), CaError> {
        let mut w = AuditWriter::new(tx, operator)?;
        w.append(tx, "key-protection-changed", &details)?;
        db::meta::set(tx, db::meta::KEY_PROTECTION, &new.describe())?;
        w.checkpoint(tx, opened.key.as_ref())?;
        db::savepoint_release_and_commit(tx, "protect")?;
        Ok(())
    })();
    if let Err(e) = record {
        return Err(undo(e));
    }
    Ok(ProtectReport {
        ca_dir: ca_dir.to_path_buf(),
        fingerprint: cert.fingerprint.clone(),
        old_method: old_method.to_string(),
        old_protection,
        new_method: method_of(new).to_string(),
        new_protection: new.describe(),
        retired_file: retired,
        new_key_sha256: new_sha,
    })
}

/// Move the CA key to another custody kind (SPEC §13): a passphrase- or recipients-held key
/// (or a quorum's) into a new quorum ([`ca::NewCustody::Quorum`]), or into a PKCS#11 token
/// ([`ca::NewCustody::Pkcs11`], imported as sensitive and not extractable). The current key is
/// unlocked as for `sign`; the new custody is proven (its signer's public key is that of
/// `ca.pem` and it signs the checkpoint of the change); the old files are kept as
/// `*.retired-<time>` (`ca show` warns until they are removed). A token-held key cannot move:
/// it never leaves the token.
///
/// Stages: `check_custody_move`, unlock (recorded whatever follows), then in a savepoint
/// `new_custody`, `retire_old`, `install_new`, `record_move`.
pub fn protect_custody(
    ca_dir: &Path,
    unlock: &Unlock,
    new: &ca::NewCustody,
    operator: &str,
) -> Result<ProtectReport, CaError> {
    secret::harden_process()?;
    let cert = ca::load_cert(ca_dir)?;
    ca::check_ca_files(ca_dir)?;
    let old_kind = ca::key_kind(ca_dir);
    check_custody_move(old_kind, new)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let tx = ca::begin_immediate(&mut conn)?;
    let (tx, opened) = ca::unlock_keeping_record(tx, ca_dir, &cert, unlock, operator)?;
    db::savepoint(&tx, "protect")?;
    let old_protection: String =
        db::meta::get(&tx, db::meta::KEY_PROTECTION)?.unwrap_or_else(|| opened.custody.describe());
    let m = CustodyMove {
        ca_dir,
        cert: &cert,
        opened: &opened,
        old_kind,
        old_protection,
        new,
        operator,
    };
    match move_custody(&tx, &m) {
        Ok(r) => {
            db::savepoint_release_and_commit(&tx, "protect")?;
            Ok(r)
        }
        Err(e) => {
            let _ = db::savepoint_rollback(&tx, "protect").and_then(|()| tx.commit());
            Err(CaError::Protect(format!(
                "moving the key to the new custody failed: {}; check the CA directory with `nrfca ca show` (retired files keep the old key) and run `nrfca ca verify-key`",
                crate::error::error_chain(&e)
            )))
        }
    }
}

/// Whether the key may move from `old` to `new` at all (pure): `ca protect --quorum/--pkcs11`
/// is not the way to a passphrase or recipients, and a quorum gets new custodians by
/// `ca reshare`.
fn check_custody_move(old: ca::KeyKind, new: &ca::NewCustody) -> Result<(), CaError> {
    match new {
        ca::NewCustody::Age { .. } => Err(CaError::Protect(
            "for a passphrase or recipients use --new-passphrase-file / --new-recipient".into(),
        )),
        ca::NewCustody::Quorum { .. } if old == ca::KeyKind::Quorum => Err(CaError::Protect(
            "the key is already held by a quorum: use `nrfca ca reshare` for new custodians or a new threshold".into(),
        )),
        _ => Ok(()),
    }
}

/// What the CA directory holds besides `ca.key.age` that the move retires (pure), in order:
/// an old quorum's `quorum.json` and `shares/`; before a new quorum, any `shares/` left over.
fn to_retire(old: ca::KeyKind, new: &ca::NewCustody) -> Vec<&'static str> {
    use crate::signer::ca::{QUORUM_MANIFEST, SHARES_DIR};
    if old == ca::KeyKind::Quorum {
        vec![QUORUM_MANIFEST, SHARES_DIR]
    } else if matches!(new, ca::NewCustody::Quorum { .. }) {
        vec![SHARES_DIR]
    } else {
        Vec::new()
    }
}

/// One run of [`protect_custody`] after the unlock.
struct CustodyMove<'a> {
    ca_dir: &'a Path,
    cert: &'a ca::CaCert,
    opened: &'a ca::Opened,
    old_kind: ca::KeyKind,
    old_protection: String,
    new: &'a ca::NewCustody,
    operator: &'a str,
}

/// The stages of [`protect_custody`] inside its savepoint; the caller commits or rolls back.
fn move_custody(tx: &db::Transaction<'_>, m: &CustodyMove<'_>) -> Result<ProtectReport, CaError> {
    let pkcs8 = m.opened.pkcs8.as_deref().ok_or_else(|| {
        CaError::Protect(
            "the CA key is in a PKCS#11 token and never leaves it: it cannot be moved; nothing was changed".into(),
        )
    })?;
    let stamp = retired_stamp()?;
    // New custody, proven, before anything is replaced.
    let (signer, new_files) = new_custody(pkcs8, m.cert, m.new)?;
    let retired = retire_old(m.ca_dir, m.old_kind, m.new, &stamp)?;
    let new_sha = install_new(m.ca_dir, &new_files, m.new)?;
    record_move(tx, m, signer.as_ref(), retired, new_sha)
}

/// The new custody's signer and files, holding the key of `pkcs8`; refused unless its public
/// key is the one of `ca.pem`.
fn new_custody(
    pkcs8: &[u8],
    cert: &ca::CaCert,
    new: &ca::NewCustody,
) -> Result<(Box<dyn CaSigner>, NewFiles), CaError> {
    if let ca::NewCustody::Age { .. } = new {
        return Err(CaError::Protect(
            "for a passphrase or recipients use --new-passphrase-file / --new-recipient".into(),
        ));
    }
    // The files `ca init` would write for this custody; the key file goes last, so an
    // interrupted move leaves the new manifest and shares beside the old key.
    let (files, signer) = ca::hold_key(new, None, cert, Some(pkcs8), None)?;
    let (mut new_files, key_file): (NewFiles, NewFiles) = files
        .into_iter()
        .map(|f| (f.name, f.bytes))
        .partition(|(name, _)| name != CA_KEY);
    new_files.extend(key_file);
    if signer.public_key() != cert.public_key {
        return Err(CaError::Protect(
            "the new custody holds a different key than ca.pem's; nothing was changed".into(),
        ));
    }
    Ok((signer, new_files))
}

/// The old custody's files as retired by [`retire_old`].
struct Retired {
    /// The link to the old `ca.key.age`.
    key: String,
    /// Every retired name, the key's first.
    all: Vec<String>,
}

/// Retire the old files: `ca.key.age` (linked: a quorum writes a new one over it; moved away
/// for a token), then [`to_retire`]; a new quorum gets an empty `shares/` (0700).
fn retire_old(
    ca_dir: &Path,
    old_kind: ca::KeyKind,
    new: &ca::NewCustody,
    stamp: &str,
) -> Result<Retired, CaError> {
    use crate::signer::ca::SHARES_DIR;
    let key = link_retired(ca_dir)?;
    let mut all = vec![key.clone()];
    for name in to_retire(old_kind, new) {
        let from = ca_dir.join(name);
        if from.exists() {
            let to = format!("{name}.retired-{stamp}");
            std::fs::rename(&from, ca_dir.join(&to)).map_err(|e| CaError::Io {
                path: from.clone(),
                source: e,
            })?;
            all.push(to);
        }
    }
    if matches!(new, ca::NewCustody::Quorum { .. }) {
        let shares = ca_dir.join(SHARES_DIR);
        std::fs::create_dir(&shares).map_err(|e| CaError::Io {
            path: shares.clone(),
            source: e,
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shares, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            CaError::Io {
                path: shares.clone(),
                source: e,
            }
        })?;
    }
    Ok(Retired { key, all })
}

/// Write the new custody's files (each through a 0600 temporary file and a rename), remove
/// `ca.key.age` for a token, sync the directory. Gives the SHA-256 of the new key file.
fn install_new(
    ca_dir: &Path,
    new_files: &NewFiles,
    new: &ca::NewCustody,
) -> Result<String, CaError> {
    use crate::signer::ca::CA_KEY_PKCS11;
    let mut new_sha = String::new();
    for (name, bytes) in new_files {
        let target = ca_dir.join(name);
        let dir = target.parent().unwrap_or(ca_dir);
        let tmp = ca::tmp_name(dir, "new");
        secret::write_secret_file(&tmp, bytes)?;
        std::fs::rename(&tmp, &target).map_err(|e| CaError::Io {
            path: target.clone(),
            source: e,
        })?;
        if name == CA_KEY || name == CA_KEY_PKCS11 {
            new_sha = crypto::sha256_hex(bytes);
        }
    }
    if matches!(new, ca::NewCustody::Pkcs11 { .. }) {
        // There is then no ca.key.age: its retired link keeps the old file.
        let key_path = ca_dir.join(CA_KEY);
        std::fs::remove_file(&key_path).map_err(|e| CaError::Io {
            path: key_path.clone(),
            source: e,
        })?;
    }
    ca::sync_dir(ca_dir)?;
    Ok(new_sha)
}

/// `key-protection-changed`, the new recorded protection, and a checkpoint signed by the new
/// custody (proof that it holds the key of ca.pem).
fn record_move(
    tx: &db::Transaction<'_>,
    m: &CustodyMove<'_>,
    signer: &dyn CaSigner,
    retired: Retired,
    new_sha: String,
) -> Result<ProtectReport, CaError> {
    let custody = signer.custody();
    let new_method = custody.kind().to_string();
    let details = json!({
        "fingerprint": m.cert.fingerprint,
        "old_method": m.opened.custody.kind(),
        "old_protection": m.old_protection,
        "new_method": new_method,
        "new_protection": custody.describe(),
        "custody": custody,
        "retired_file": retired.key,
        "retired": retired.all,
        "new_key_sha256": new_sha,
    });
    let mut w = AuditWriter::new(tx, m.operator)?;
    w.append(tx, "key-protection-changed", &details)?;
    db::meta::set(tx, db::meta::KEY_PROTECTION, &custody.describe())?;
    w.checkpoint(tx, signer)?;
    Ok(ProtectReport {
        ca_dir: m.ca_dir.to_path_buf(),
        fingerprint: m.cert.fingerprint.clone(),
        old_method: m.opened.custody.kind().to_string(),
        old_protection: m.old_protection.clone(),
        new_method,
        new_protection: custody.describe(),
        retired_file: retired.key,
        new_key_sha256: new_sha,
    })
}

/// Files of a new custody: (name relative to the CA directory, content).
type NewFiles = Vec<(String, Vec<u8>)>;

/// Retired key files (`ca.key.age.retired-*`) present in `ca_dir`, sorted by name.
pub fn retired_files(ca_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(ca_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(RETIRED_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::ca::{KeyKind, NewCustody, QUORUM_MANIFEST, SHARES_DIR};
    use crate::signer::key::pkcs11::{Pin, TokenSelector};

    fn age() -> NewCustody {
        NewCustody::Age { scrypt_log_n: 10 }
    }
    fn quorum() -> NewCustody {
        NewCustody::Quorum {
            threshold: 2,
            custodians: Vec::new(),
            scrypt_log_n: 10,
        }
    }
    fn token() -> NewCustody {
        NewCustody::Pkcs11 {
            module: PathBuf::from("libsofthsm2.so"),
            token: TokenSelector {
                label: None,
                serial: None,
            },
            pin: Pin::from("1234".to_string()),
            label: "nrfca CA".into(),
        }
    }

    /// Which moves `protect_custody` takes, and what each retires besides ca.key.age.
    #[test]
    fn custody_move_table() {
        use KeyKind::*;
        // (from, to, refusal mentioning, or "" with what is retired)
        let cases: Vec<(KeyKind, NewCustody, &str, Vec<&str>)> = vec![
            (Age, quorum(), "", vec![SHARES_DIR]),
            (Age, token(), "", vec![]),
            (Quorum, token(), "", vec![QUORUM_MANIFEST, SHARES_DIR]),
            (Quorum, quorum(), "`nrfca ca reshare`", vec![]),
            (Age, age(), "--new-passphrase-file", vec![]),
            (Quorum, age(), "--new-passphrase-file", vec![]),
            (Pkcs11, quorum(), "", vec![SHARES_DIR]),
        ];
        for (old, new, refused, retired) in cases {
            let name = format!("{old:?} -> {new:?}");
            match check_custody_move(old, &new) {
                Ok(()) => {
                    assert_eq!(refused, "", "{name}");
                    assert_eq!(to_retire(old, &new), retired, "{name}");
                }
                Err(e) => {
                    assert!(!refused.is_empty(), "{name}: {e}");
                    assert!(e.to_string().contains(refused), "{name}: {e}");
                }
            }
        }
    }
}
