//! `ca show`: describe the CA (no secret needed), from its files and the chained audit records.

use super::unlock::{key_kind, read_key_uri, read_manifest, KeyKind};
use super::{CaError, CaInfo};
use crate::signer::audit;
use crate::signer::ca_files::{load_cert, rfc3339, CA_DB, CA_KEY};
use crate::signer::db;
use crate::signer::key::age::custody_of_file;
use crate::signer::key::Custody;
use crate::signer::secret::{self, FileProtection};
use std::path::Path;

/// Describe the CA in `ca_dir` (no secret needed).
pub fn show(ca_dir: &Path) -> Result<CaInfo, CaError> {
    let cert = load_cert(ca_dir)?;
    let kind = key_kind(ca_dir);
    if kind == KeyKind::Pkcs11 {
        return show_with(ca_dir, &cert, kind);
    }
    let key_path = ca_dir.join(CA_KEY);
    if !key_path.exists() {
        return Err(CaError::Missing(key_path));
    }
    show_with(ca_dir, &cert, kind)
}

fn show_with(
    ca_dir: &Path,
    cert: &crate::signer::ca_files::CaCert,
    kind: KeyKind,
) -> Result<CaInfo, CaError> {
    let key_path = ca_dir.join(CA_KEY);
    let key_file = secret::read_limited(&key_path);
    let file_protection = match kind {
        KeyKind::Age => key_file
            .as_ref()
            .map_err(|_| ())
            .and_then(|ct| secret::file_protection(ct).map_err(|_| ())),
        _ => Err(()),
    };
    let (unlock_with, custody) = match kind {
        KeyKind::Pkcs11 => {
            let uri = read_key_uri(ca_dir)?;
            let mut bare = uri.clone();
            bare.module_path = None;
            (
                "pin",
                Some(Custody::Pkcs11 {
                    module: uri
                        .module_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    token_label: uri.token.clone().unwrap_or_default(),
                    token_serial: uri.serial.clone().unwrap_or_default(),
                    key_id: hex::encode(&uri.id),
                    uri: bare.format(),
                }),
            )
        }
        KeyKind::Quorum => (
            "shares",
            Some(read_manifest(ca_dir, &cert.fingerprint)?.custody(Vec::new())),
        ),
        KeyKind::Age => (
            match file_protection {
                Ok(FileProtection::Passphrase) => "passphrase",
                Ok(FileProtection::Recipients) => "identity",
                Err(_) => "unreadable key file",
            },
            key_file.ok().and_then(|ct| custody_of_file(&ct).ok()),
        ),
    };
    let conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let key_protection: String =
        db::meta::get(&conn, db::meta::KEY_PROTECTION)?.unwrap_or_else(|| "unknown".to_string());
    // The current file decides: the recorded description only stands when it names the
    // same kind of protection as the key file's header (it lists the recipients, which the
    // header does not).
    let key_protection = match (&file_protection, &custody) {
        // As recorded; the work factor read from the file is in `custody` (and the table).
        (Ok(FileProtection::Passphrase), _) if !key_protection.starts_with("passphrase") => {
            "passphrase (age scrypt)".to_string()
        }
        (Ok(FileProtection::Recipients), _) if !key_protection.starts_with("age X25519") => {
            "age X25519 recipients (not recorded)".to_string()
        }
        (Err(()), Some(c)) => c.describe(),
        _ => key_protection,
    };
    // For recipients, the recorded list names them (the file does not).
    let custody = match custody {
        Some(Custody::Recipients { count, .. }) => Some(Custody::Recipients {
            count,
            recipients: key_protection
                .strip_prefix("age X25519 recipients: ")
                .map(|r| r.split(", ").map(str::to_string).collect())
                .unwrap_or_default(),
        }),
        c => c,
    };
    let head = db::audit::head(&conn)?.map(|(_, hash)| hash);
    let first = db::audit::first(&conn)?;
    let warnings = first
        .filter(|(event, _)| event == "ca-imported")
        .and_then(|(_, d)| serde_json::from_str::<serde_json::Value>(&d).ok())
        .and_then(|d| {
            d.get("warnings").and_then(|w| w.as_array()).map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut warnings: Vec<String> = warnings;
    let retired_key_files = crate::signer::protect::retired_files(ca_dir);
    for name in &retired_key_files {
        let recorded = db::audit::count_retired(&conn, name)?;
        let mut w = format!(
            "a retired key file is still present: {path}; it opens with the old secret: remove it (shred -u {path}) once you no longer need the old passphrase/identity",
            path = ca_dir.join(name).display()
        );
        if recorded == 0 {
            w.push_str(" (no key-protection-changed record names it: an interrupted `nrfca ca protect`? check `nrfca ca verify-key` with the new and the old secret)");
        }
        warnings.push(w);
    }
    Ok(CaInfo {
        ca_dir: ca_dir.to_path_buf(),
        subject: cert.subject.clone(),
        serial: cert.serial.clone(),
        fingerprint: cert.fingerprint.clone(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        key_protection,
        unlock_with: unlock_with.to_string(),
        custody,
        // Counted from the chained audit records (what `audit verify` checks), not from the
        // certificates/rejects/batches tables, which an edit could change unnoticed.
        issued: db::audit::count(&conn, Some("certificate-issued"))?,
        rejected: db::audit::rejected_total(&conn)?,
        batches: db::audit::count(&conn, Some("batch-committed"))?,
        revoked: db::audit::count(&conn, Some("certificate-revoked"))?,
        crls: db::audit::count(&conn, Some("crl-issued"))?,
        audit_records: db::audit::count(&conn, None)?,
        audit_head_hash: head.unwrap_or_else(|| audit::GENESIS_HASH.to_string()),
        warnings,
        retired_key_files,
        trusted_benches: super::trusted_benches(&conn)?,
    })
}
