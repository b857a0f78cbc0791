//! [`CaSigner`] for a token key: SHA-256 on the host, `CKM_ECDSA` in the token, raw `r || s`
//! turned into DER; one session per worker thread.

use super::session::{find_one, module_err, open_session, TokenDesc};
use super::{Pkcs11Error, Pkcs11Key};
use crate::signer::key::{raw_signature_to_der, CaSigner, Custody, KeyError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::sync::Mutex;

fn sign_with(
    session: &Session,
    key: ObjectHandle,
    token: &TokenDesc,
    msg: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let digest = crate::crypto::sha256(msg);
    let raw = session
        .sign(&Mechanism::Ecdsa, key, &digest)
        .map_err(module_err(&token.label, "signing"))?;
    raw_signature_to_der(&raw).map_err(|_| {
        KeyError::Pkcs11(Pkcs11Error::Module {
            token: token.label.clone(),
            op: "signing",
            why: format!(
                "the token returned a {}-byte signature, not r||s",
                raw.len()
            ),
        })
    })
}

impl CaSigner for Pkcs11Key {
    fn public_key(&self) -> [u8; 65] {
        self.public
    }

    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        sign_with(&guard.0, guard.1, &self.token, msg)
    }

    fn custody(&self) -> Custody {
        let mut bare = self.uri.clone();
        bare.module_path = None;
        Custody::Pkcs11 {
            module: self.module_path.display().to_string(),
            token_label: self.token.label.clone(),
            token_serial: self.token.serial.clone(),
            key_id: hex::encode(&self.uri.id),
            uri: bare.format(),
        }
    }

    /// A new read-only session on the token (logged in through this key's session).
    fn worker(&self) -> Result<Box<dyn CaSigner + '_>, KeyError> {
        let session = open_session(&self.ctx, self.slot, &self.token, false)?;
        let handle = find_one(
            &session,
            &self.token,
            ObjectClass::PRIVATE_KEY,
            &self.uri.id,
        )?
        // The key was there when this key was opened: gone now means the token (or the key)
        // went away, which rolls the batch back.
        .ok_or_else(|| Pkcs11Error::TokenGone {
            token: self.token.label.clone(),
            op: "opening a worker session",
            why: format!(
                "the key with id {} is no longer found",
                hex::encode(&self.uri.id)
            ),
        })?;
        Ok(Box::new(Pkcs11Worker {
            key: self,
            session: Mutex::new((session, handle)),
        }))
    }
}

/// One worker's session on the token.
struct Pkcs11Worker<'a> {
    key: &'a Pkcs11Key,
    session: Mutex<(Session, ObjectHandle)>,
}

impl CaSigner for Pkcs11Worker<'_> {
    fn public_key(&self) -> [u8; 65] {
        self.key.public
    }

    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        sign_with(&guard.0, guard.1, &self.key.token, msg)
    }

    fn custody(&self) -> Custody {
        self.key.custody()
    }

    fn worker(&self) -> Result<Box<dyn CaSigner + '_>, KeyError> {
        self.key.worker()
    }
}
