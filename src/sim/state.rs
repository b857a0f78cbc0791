//! The `--state FILE` of `nrfca sim`: every modem's identity (IMEI, UUID, identity key) and
//! credential storage as JSON, so the same file gives the same modems on the next run.
//!
//! The file holds **simulated** secret material (identity keys, generated private keys) in
//! plain text: it is a test fixture, never a real modem's secrets. It is written 0600 via a
//! temporary file and a rename.

use super::identity::SimIdentity;
use super::storage::{Entry, Origin, Storage};
use super::SimError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

/// Format tag written in the file.
pub const FORMAT: &str = "nrfca-sim-state/1";
const WARNING: &str = "SIMULATED modems for tests: identity keys and generated private keys are stored here in plain text. Never put real secrets in this file.";
const MAX_FILE: u64 = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    warning: String,
    profile: String,
    modems: Vec<ModemRecord>,
}

#[derive(Serialize, Deserialize)]
struct ModemRecord {
    imei: String,
    uuid: String,
    /// base64 PKCS#8 of the simulated identity key.
    identity_key_pkcs8: String,
    credentials: Vec<CredRecord>,
}

#[derive(Serialize, Deserialize)]
struct CredRecord {
    sec_tag: u32,
    #[serde(rename = "type")]
    kind: u8,
    origin: String,
    /// Content when it is UTF-8 text (the usual case: PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// Content as base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_base64: Option<String>,
    /// Uncompressed public key of a generated key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// One modem as loaded from a state file.
pub struct Loaded {
    /// Identity.
    pub identity: SimIdentity,
    /// Storage (modem-owned entries re-created, user entries in their stored order).
    pub storage: Storage,
}

fn bad(path: &Path, msg: impl Into<String>) -> SimError {
    SimError::State {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Load `path`; `Ok(None)` when it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Vec<Loaded>>, SimError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(path, e.to_string())),
    };
    if meta.len() > MAX_FILE {
        return Err(bad(path, "file is larger than 64 MiB"));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?);
    let file: StateFile = serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
    if file.format != FORMAT {
        return Err(bad(
            path,
            format!("format is `{}`, expected `{FORMAT}`", file.format),
        ));
    }
    let mut out = Vec::with_capacity(file.modems.len());
    for (i, m) in file.modems.into_iter().enumerate() {
        let ctx = |msg: String| bad(path, format!("modem {i}: {msg}"));
        let uuid = crate::util::parse_uuid(&m.uuid).ok_or_else(|| ctx("bad uuid".into()))?;
        if !crate::util::is_imei(&m.imei) {
            return Err(ctx("bad imei".into()));
        }
        let pkcs8 = Zeroizing::new(
            crate::crypto::b64_decode(&m.identity_key_pkcs8)
                .map_err(|e| ctx(format!("identity key: {e}")))?,
        );
        let identity =
            SimIdentity::from_parts(m.imei, uuid, pkcs8).map_err(|e| ctx(e.to_string()))?;
        let mut storage = Storage::new(&uuid);
        for c in m.credentials {
            let origin = Origin::parse(&c.origin)
                .filter(|o| *o != Origin::Modem)
                .ok_or_else(|| ctx(format!("bad origin `{}`", c.origin)))?;
            let content = match (c.content, c.content_base64) {
                (Some(s), None) => s.into_bytes(),
                (None, Some(b)) => crate::crypto::b64_decode(&b)
                    .map_err(|e| ctx(format!("content_base64: {e}")))?,
                _ => return Err(ctx("each credential needs content or content_base64".into())),
            };
            let public_key = match c.public_key {
                None => None,
                Some(h) => {
                    let mut pk = [0u8; 65];
                    hex::decode_to_slice(&h, &mut pk)
                        .map_err(|e| ctx(format!("public_key: {e}")))?;
                    Some(pk)
                }
            };
            storage.restore(Entry {
                sec_tag: c.sec_tag,
                kind: c.kind,
                content: Zeroizing::new(content),
                origin,
                public_key,
            });
        }
        out.push(Loaded { identity, storage });
    }
    Ok(Some(out))
}

/// Write the state of `modems` (identity and storage each) to `path`.
pub fn save(
    path: &Path,
    profile: &str,
    modems: &[(&SimIdentity, &Storage)],
) -> Result<(), SimError> {
    let records = modems
        .iter()
        .map(|(id, st)| ModemRecord {
            imei: id.imei.clone(),
            uuid: id.uuid_string(),
            identity_key_pkcs8: crate::crypto::b64_encode(id.identity_pkcs8()),
            credentials: st
                .user_entries()
                .map(|e| {
                    let (content, content_base64) = match std::str::from_utf8(&e.content) {
                        Ok(s) => (Some(s.to_string()), None),
                        Err(_) => (None, Some(crate::crypto::b64_encode(&e.content))),
                    };
                    CredRecord {
                        sec_tag: e.sec_tag,
                        kind: e.kind,
                        origin: e.origin.name().to_string(),
                        content,
                        content_base64,
                        public_key: e.public_key.map(hex::encode),
                    }
                })
                .collect(),
        })
        .collect();
    let file = StateFile {
        format: FORMAT.to_string(),
        warning: WARNING.to_string(),
        profile: profile.to_string(),
        modems: records,
    };
    let text =
        Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| bad(path, e.to_string()))?);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".nrfca-sim-state")
        .tempfile_in(&dir)
        .map_err(|e| {
            bad(
                path,
                format!("cannot create a file in {}: {e}", dir.display()),
            )
        })?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.write_all(b"\n"))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| bad(path, e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| bad(path, e.error.to_string()))?;
    Ok(())
}
