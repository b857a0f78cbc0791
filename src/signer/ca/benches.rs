//! `ca trust-bench` / `ca distrust-bench` (SPEC §10): the benches whose signed requests this
//! CA accepts, kept in `ca.db` (`benches`), each change audited and followed by a checkpoint.

use super::{unlock, CaError};
use crate::signer::audit::AuditWriter;
use crate::signer::ca_files::CA_DB;
use crate::signer::db;
use crate::signer::secret::Unlock;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// A trusted bench, as `ca show` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrustedBench {
    /// Its name.
    pub name: String,
    /// SHA-256 (hex) of its public key's DER SubjectPublicKeyInfo.
    pub fingerprint: String,
    /// When it was trusted (RFC 3339 UTC).
    pub since: String,
}

/// The benches this CA trusts, by name (no secret needed).
pub fn trusted_benches(conn: &db::Connection) -> Result<Vec<TrustedBench>, CaError> {
    Ok(db::benches::all(conn)?
        .into_iter()
        .map(|b| TrustedBench {
            name: b.name,
            fingerprint: b.fingerprint,
            since: b.since,
        })
        .collect())
}

/// Trust the bench `name` with public key `key_pem` (the `bench.pem` of `bench init`): unlock
/// the key, record `bench-trusted` and a checkpoint in one transaction.
pub fn trust_bench(
    ca_dir: &Path,
    name: &str,
    key_pem: &str,
    unlock_with: &Unlock,
    operator: &str,
) -> Result<TrustedBench, CaError> {
    let bad = |e: crate::provenance::ProvenanceError| CaError::Protect(e.to_string());
    crate::provenance::check_name(name).map_err(bad)?;
    let public = crate::provenance::public_key_from_pem(key_pem).map_err(bad)?;
    let fingerprint = crate::provenance::key_fingerprint(&public).map_err(bad)?;
    let unlocked = unlock(ca_dir, unlock_with, operator)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB)).map_err(CaError::Db)?;
    let tx = unlock::begin_immediate(&mut conn)?;
    let since = crate::signer::audit::now_rfc3339();
    let replaced = db::benches::get(&tx, name)?.map(|b| b.fingerprint);
    db::benches::insert(
        &tx,
        &db::benches::Bench {
            name: name.to_string(),
            public_key: public.to_vec(),
            fingerprint: fingerprint.clone(),
            since: since.clone(),
        },
    )?;
    let mut w = AuditWriter::new(&tx, operator)?;
    w.append(
        &tx,
        "bench-trusted",
        &json!({"bench": name, "key": fingerprint, "replaced_key": replaced}),
    )?;
    w.checkpoint(&tx, &unlocked.key)?;
    drop(w);
    tx.commit()?;
    Ok(TrustedBench {
        name: name.to_string(),
        fingerprint,
        since,
    })
}

/// Stop trusting the bench `name`: unlock, record `bench-distrusted` and a checkpoint.
pub fn distrust_bench(
    ca_dir: &Path,
    name: &str,
    unlock_with: &Unlock,
    operator: &str,
) -> Result<TrustedBench, CaError> {
    {
        let conn = db::open_existing(&ca_dir.join(CA_DB)).map_err(CaError::Db)?;
        if db::benches::get(&conn, name)?.is_none() {
            return Err(CaError::Protect(format!(
                "this CA does not trust a bench named {name:?}; `nrfca ca show` lists the trusted benches"
            )));
        }
    }
    let unlocked = unlock(ca_dir, unlock_with, operator)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB)).map_err(CaError::Db)?;
    let tx = unlock::begin_immediate(&mut conn)?;
    let Some(b) = db::benches::get(&tx, name)? else {
        return Err(CaError::Protect(format!(
            "this CA does not trust a bench named {name:?}"
        )));
    };
    db::benches::delete(&tx, name)?;
    let mut w = AuditWriter::new(&tx, operator)?;
    w.append(
        &tx,
        "bench-distrusted",
        &json!({"bench": name, "key": b.fingerprint}),
    )?;
    w.checkpoint(&tx, &unlocked.key)?;
    drop(w);
    tx.commit()?;
    Ok(TrustedBench {
        name: b.name,
        fingerprint: b.fingerprint,
        since: b.since,
    })
}
