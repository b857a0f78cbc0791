//! `ca reshare`: from M shares of the current set, put the same CA key under a new quorum
//! identity split among new custodians (and threshold); the old key file, `quorum.json` and
//! `shares/` are retired (kept as dated files until the officer removes them), and the old set
//! opens nothing any more. Audited (`key-unlocked` naming the old set's participants, then
//! `key-reshared` + a checkpoint).
//!
//! Order (under `ca.db`'s write lock): the new files are written and proven beside the old
//! ones; the old ones are hard-linked / renamed to `*.retired-<time>`; each new file is renamed
//! into place (`ca.key.age` last); the record commits. A crash in between leaves the retired
//! files, from which the previous state can be put back by hand (docs/officer-guide.md).

use super::unlock::{key_kind, read_manifest, unlock_keeping_record, KeyKind};
use super::{begin_immediate, io_err, sync_dir, tmp_name, CaError};
use crate::signer::audit::AuditWriter;
use crate::signer::ca_files::{load_cert, CA_DB, CA_KEY, QUORUM_MANIFEST, SHARES_DIR};
use crate::signer::db;
use crate::signer::key::quorum::{self, Custodian};
use crate::signer::secret::{self, Unlock};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// What [`reshare`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReshareReport {
    /// The CA directory.
    pub ca_dir: PathBuf,
    /// SHA-256 of the CA certificate.
    pub fingerprint: String,
    /// The retired share set id.
    pub old_set: String,
    /// The new share set id.
    pub new_set: String,
    /// New M.
    pub threshold: u8,
    /// New custodians, in share order.
    pub custodians: Vec<String>,
    /// Custodians of the old set whose shares opened the key.
    pub participants: Vec<String>,
    /// The new share files (paths).
    pub share_files: Vec<PathBuf>,
    /// Retired files left in the CA directory (names).
    pub retired: Vec<String>,
}

fn stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "unknown-time".into())
}

/// Reshare the quorum-held key of `ca_dir`: `unlock` must be [`Unlock::Shares`] with M shares
/// of the current set.
pub fn reshare(
    ca_dir: &Path,
    unlock: &Unlock,
    threshold: u8,
    custodians: &[Custodian],
    scrypt_log_n: u8,
    operator: &str,
) -> Result<ReshareReport, CaError> {
    secret::harden_process()?;
    let cert = load_cert(ca_dir)?;
    if key_kind(ca_dir) != KeyKind::Quorum {
        return Err(CaError::Protect(
            "this CA's key is not held by a quorum (no quorum.json): `ca reshare` only renews a quorum's share set; use `ca protect --quorum` to put the key under a quorum".into(),
        ));
    }
    let old = read_manifest(ca_dir, &cert.fingerprint)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let tx = begin_immediate(&mut conn)?;
    let (tx, opened) = unlock_keeping_record(tx, ca_dir, &cert, unlock, operator)?;
    let participants = match &opened.custody {
        crate::signer::key::Custody::Quorum { participants, .. } => participants.clone(),
        _ => Vec::new(),
    };
    db::savepoint(&tx, "reshare")?;
    let result = (|| -> Result<ReshareReport, CaError> {
        let pkcs8 = opened
            .pkcs8
            .as_deref()
            .ok_or_else(|| CaError::Protect("the quorum key did not open to a PKCS#8".into()))?;
        let setup = quorum::create(
            pkcs8,
            &cert.fingerprint,
            threshold,
            custodians,
            scrypt_log_n,
        )?;
        // New files beside the old ones.
        let new_key = tmp_name(ca_dir, CA_KEY);
        secret::write_secret_file(&new_key, &setup.key_file)?;
        let new_manifest = tmp_name(ca_dir, QUORUM_MANIFEST);
        secret::write_secret_file(&new_manifest, setup.manifest.to_json().as_bytes())?;
        let new_shares = tmp_name(ca_dir, SHARES_DIR);
        std::fs::create_dir(&new_shares).map_err(io_err(&new_shares))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&new_shares, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(&new_shares))?;
        }
        for sh in &setup.shares {
            secret::write_secret_file(&new_shares.join(&sh.file_name), &sh.bytes)?;
        }
        // Proof: the new identity's shares rebuild it and it opens the new key file to the key
        // of ca.pem (create proved it in memory; this reads back what is on disk).
        let back = secret::read_key_file(&new_key)?;
        if back.as_slice() != setup.key_file.as_slice() {
            return Err(CaError::Protect(
                "the new key file did not read back as written; nothing was changed".into(),
            ));
        }
        // Retire the old files, then move the new ones in (ca.key.age last).
        let st = stamp();
        let mut retired = Vec::new();
        let retired_key = format!("{}{st}", crate::signer::protect::RETIRED_PREFIX);
        std::fs::hard_link(ca_dir.join(CA_KEY), ca_dir.join(&retired_key))
            .map_err(io_err(&ca_dir.join(&retired_key)))?;
        retired.push(retired_key);
        let retired_manifest = format!("{QUORUM_MANIFEST}.retired-{st}");
        std::fs::hard_link(ca_dir.join(QUORUM_MANIFEST), ca_dir.join(&retired_manifest))
            .map_err(io_err(&ca_dir.join(&retired_manifest)))?;
        retired.push(retired_manifest);
        let shares_dir = ca_dir.join(SHARES_DIR);
        if shares_dir.exists() {
            let r = format!("{SHARES_DIR}.retired-{st}");
            std::fs::rename(&shares_dir, ca_dir.join(&r)).map_err(io_err(&shares_dir))?;
            retired.push(r);
        }
        std::fs::rename(&new_shares, &shares_dir).map_err(io_err(&shares_dir))?;
        std::fs::rename(&new_manifest, ca_dir.join(QUORUM_MANIFEST))
            .map_err(io_err(&ca_dir.join(QUORUM_MANIFEST)))?;
        std::fs::rename(&new_key, ca_dir.join(CA_KEY)).map_err(io_err(&ca_dir.join(CA_KEY)))?;
        sync_dir(ca_dir)?;

        let custody = setup.manifest.custody(Vec::new());
        let mut w = AuditWriter::new(&tx, operator)?;
        w.append(
            &tx,
            "key-reshared",
            &json!({
                "fingerprint": cert.fingerprint,
                "old_set": old.set,
                "new_set": setup.manifest.set,
                "threshold": threshold,
                "custodians": setup.manifest.custodians,
                "participants": participants,
                "scrypt_log_n": scrypt_log_n,
                "retired": retired,
            }),
        )?;
        db::meta::set(&tx, db::meta::KEY_PROTECTION, &custody.describe())?;
        w.checkpoint(&tx, opened.key.as_ref())?;
        Ok(ReshareReport {
            ca_dir: ca_dir.to_path_buf(),
            fingerprint: cert.fingerprint.clone(),
            old_set: old.set.clone(),
            new_set: setup.manifest.set.clone(),
            threshold,
            custodians: setup.manifest.custodians.clone(),
            participants: participants.clone(),
            share_files: setup
                .shares
                .iter()
                .map(|s| shares_dir.join(&s.file_name))
                .collect(),
            retired,
        })
    })();
    match result {
        Ok(r) => {
            db::savepoint_release_and_commit(&tx, "reshare")?;
            Ok(r)
        }
        Err(e) => {
            let _ = db::savepoint_rollback(&tx, "reshare").and_then(|()| tx.commit());
            // Temporary files of this run (never the CA's own).
            if let Ok(rd) = std::fs::read_dir(ca_dir) {
                for f in rd.flatten() {
                    let n = f.file_name().to_string_lossy().to_string();
                    if n.starts_with(&format!(".{CA_KEY}.tmp-"))
                        || n.starts_with(&format!(".{QUORUM_MANIFEST}.tmp-"))
                    {
                        let _ = std::fs::remove_file(f.path());
                    } else if n.starts_with(&format!(".{SHARES_DIR}.tmp-")) {
                        let _ = std::fs::remove_dir_all(f.path());
                    }
                }
            }
            Err(e)
        }
    }
}
