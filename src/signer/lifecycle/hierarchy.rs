//! The CA hierarchy (SPEC §12): an offline root (`ca init --root`) issues the signing CA
//! (`ca issue-intermediate`). The intermediate's directory is a CA directory like any other
//! (its key protected the same way, through `ca init`'s own code path) plus `parent.pem`, the
//! root's certificate, from which bundles get `chain.pem`. A root signs CAs and CRLs only:
//! `sign` refuses it before unlocking anything.

use super::LifecycleError;
use crate::signer::audit::AuditWriter;
use crate::signer::ca::{self, CaInfo, InitOptions};
use crate::signer::db;
use crate::signer::secret::Unlock;
use serde_json::json;
use std::path::Path;

/// The role recorded in `ca.db` (`meta` `ca_role`): `root`, `intermediate`, or `None` for a
/// signing CA made by `ca init`/`ca import`.
pub fn role(ca_dir: &Path) -> Result<Option<String>, LifecycleError> {
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    Ok(db::meta::get(&conn, ca::META_ROLE)?)
}

/// `Err` with the sentence `sign` prints when `ca_dir` is a root CA.
pub fn refuse_root(ca_dir: &Path) -> Result<(), String> {
    match role(ca_dir) {
        Ok(Some(r)) if r == "root" => Err(format!(
            "{} is a root CA: a root CA signs CAs and CRLs only; sign device batches with an intermediate (`nrfca ca issue-intermediate --ca-dir {} --new-ca-dir SUB --subject ...`)",
            ca_dir.display(),
            ca_dir.display()
        )),
        // Other failures (no ca.db...) are reported by the caller's own checks.
        _ => Ok(()),
    }
}

/// `chain.pem` for bundles of the CA in `ca_dir`: its certificate then its root's, when it
/// is an intermediate; `None` for a self-signed CA.
pub fn chain_pem(ca_dir: &Path) -> Result<Option<Vec<u8>>, ca::CaFileError> {
    let Some(parent) = ca::load_parent(ca_dir)? else {
        return Ok(None);
    };
    let cert = ca::load_cert(ca_dir)?;
    Ok(Some(format!("{}{}", cert.pem, parent.pem).into_bytes()))
}

/// The default validity of an intermediate under the root in `root_dir`: the usual CA
/// validity, or the whole days the root has left if fewer.
pub fn default_days(root_dir: &Path) -> Result<u32, LifecycleError> {
    let root = ca::load_cert(root_dir).map_err(ca::CaError::from)?;
    let left = (root.not_after - time::OffsetDateTime::now_utc()).whole_days();
    Ok(u32::try_from(left.max(1))
        .unwrap_or(ca::DEFAULT_DAYS)
        .min(ca::DEFAULT_DAYS))
}

/// Make a new intermediate CA in `new_ca_dir` (must not exist) under the root in `root_dir`:
/// the root key is unlocked (audited) and stays under `ca.db`'s write lock until the
/// `intermediate-issued` record and its checkpoint commit; the new CA is made by `ca init`'s
/// code path (key generated and protected as `opts.protection` says; its `ca-created` record
/// names the root's fingerprint) with a certificate from the root (pathLen 0, AKI = the
/// root's SKI), never valid past the root's notAfter (refused before unlocking).
pub fn issue_intermediate(
    root_dir: &Path,
    unlock: &Unlock,
    new_ca_dir: &Path,
    opts: &InitOptions,
    custody: &ca::NewCustody,
) -> Result<CaInfo, LifecycleError> {
    if new_ca_dir.symlink_metadata().is_ok() {
        return Err(LifecycleError::BadInput(format!(
            "{} already exists; issue-intermediate creates a new CA directory: give a new --new-ca-dir",
            new_ca_dir.display()
        )));
    }
    let root = ca::load_cert(root_dir).map_err(ca::CaError::from)?;
    if role(root_dir)?.as_deref() != Some("root") {
        return Err(LifecycleError::BadInput(format!(
            "{} is not a root CA (made by `nrfca ca init --root`); only a root issues intermediates",
            root_dir.display()
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    if now + time::Duration::days(i64::from(opts.days)) > root.not_after {
        return Err(LifecycleError::BadInput(format!(
            "--days {} would make the intermediate outlive its root (valid until {}); give --days of at most {}",
            opts.days,
            crate::signer::issue::rfc3339(root.not_after),
            (root.not_after - now).whole_days()
        )));
    }
    ca::check_ca_files(root_dir)?;
    let mut conn = db::open_existing(&root_dir.join(ca::CA_DB))?;
    let tx = ca::begin_immediate(&mut conn)?;
    let (tx, opened) = super::unlock_in(tx, root_dir, &root, unlock, &opts.operator)?;
    let made = ca::init_intermediate(new_ca_dir, opts, custody, &root, opened.key.as_ref());
    let info = match made {
        Ok(info) => info,
        Err(e) => {
            // The unlock stays recorded; no intermediate exists.
            let _ = tx.commit();
            return Err(e.into());
        }
    };
    let mut w = AuditWriter::new(&tx, &opts.operator)?;
    w.append(
        &tx,
        "intermediate-issued",
        &json!({
            "subject": info.subject,
            "serial": info.serial,
            "fingerprint": info.fingerprint,
            "not_before": info.not_before,
            "not_after": info.not_after,
            "new_ca_dir": new_ca_dir.display().to_string(),
            "key_protection": info.key_protection,
        }),
    )?;
    w.checkpoint(&tx, &opened.key)?;
    drop(w);
    tx.commit()?;
    Ok(info)
}
