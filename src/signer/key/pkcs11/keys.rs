//! The CA key pair in the token: generate it there or import a PKCS#8 key into it (always
//! sensitive, never extractable), open it by its URI, and read its public point and
//! protection attributes.

use super::session::{
    find_one, find_token, login, module, module_err, open_session, TokenDesc, TokenSelector,
};
use super::uri::KeyUri;
use super::{KeyAttributes, Pin, Pkcs11Error, Pkcs11Key, P256_PARAMS};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Decode CKA_EC_POINT: a DER OCTET STRING around the uncompressed point (or, from some
/// tokens, the bare point).
fn ec_point(raw: &[u8]) -> Result<[u8; 65], Pkcs11Error> {
    let point = match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        _ => raw,
    };
    let out: [u8; 65] = point.try_into().map_err(|_| {
        Pkcs11Error::BadKey("the token's public key is not an uncompressed P-256 point".into())
    })?;
    if out[0] != 0x04 || !crate::crypto::is_valid_p256_point(&out) {
        return Err(Pkcs11Error::BadKey(
            "the token's public key is not a P-256 point".into(),
        ));
    }
    Ok(out)
}

fn public_of(session: &Session, token: &TokenDesc, id: &[u8]) -> Result<[u8; 65], Pkcs11Error> {
    let handle = find_one(session, token, ObjectClass::PUBLIC_KEY, id)?.ok_or_else(|| {
        Pkcs11Error::KeyNotFound {
            token: token.label.clone(),
            id: hex::encode(id),
        }
    })?;
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint, AttributeType::EcParams])
        .map_err(module_err(&token.label, "reading the public key"))?;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::EcParams(p) if p != P256_PARAMS => {
                return Err(Pkcs11Error::BadKey(
                    "the token's key is not on curve P-256".into(),
                ))
            }
            _ => {}
        }
    }
    ec_point(&point.ok_or_else(|| Pkcs11Error::BadKey("the token gave no EC point".into()))?)
}

fn new_key_id(session: &Session, token: &TokenDesc) -> Result<Vec<u8>, Pkcs11Error> {
    // Two bytes: YubiHSM 2 maps CKA_ID onto its 16-bit object ids; other tokens accept any.
    for _ in 0..64 {
        let id = crate::crypto::random_bytes::<2>().to_vec();
        if id != [0, 0]
            && find_one(session, token, ObjectClass::PRIVATE_KEY, &id)?.is_none()
            && find_one(session, token, ObjectClass::PUBLIC_KEY, &id)?.is_none()
        {
            return Ok(id);
        }
    }
    Err(Pkcs11Error::Module {
        token: token.label.clone(),
        op: "choosing a key id",
        why: "no free id found".into(),
    })
}

fn private_template(id: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn public_template(id: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Pkcs11Key {
    fn start(
        module_path: &Path,
        sel: &TokenSelector,
        pin: &Pin,
    ) -> Result<(Pkcs11, Slot, TokenDesc, Session), Pkcs11Error> {
        let ctx = module(module_path)?;
        let (slot, token) = find_token(&ctx, module_path, sel)?;
        let session = open_session(&ctx, slot, &token, true)?;
        login(&ctx, slot, &session, &token, pin)?;
        Ok((ctx, slot, token, session))
    }

    fn finish(
        ctx: Pkcs11,
        slot: Slot,
        module_path: &Path,
        token: TokenDesc,
        session: Session,
        id: Vec<u8>,
        label: Option<String>,
    ) -> Result<Self, Pkcs11Error> {
        let handle =
            find_one(&session, &token, ObjectClass::PRIVATE_KEY, &id)?.ok_or_else(|| {
                Pkcs11Error::KeyNotFound {
                    token: token.label.clone(),
                    id: hex::encode(&id),
                }
            })?;
        let public = public_of(&session, &token, &id)?;
        let uri = KeyUri {
            token: Some(token.label.clone()),
            serial: Some(token.serial.clone()),
            manufacturer: None,
            model: None,
            id,
            object: label,
            module_path: Some(module_path.to_path_buf()),
        };
        Ok(Pkcs11Key {
            ctx,
            slot,
            module_path: module_path.to_path_buf(),
            token,
            uri,
            public,
            session: Mutex::new((session, handle)),
        })
    }

    /// Generate a new P-256 key pair in the token (`CKA_TOKEN`, `CKA_PRIVATE`,
    /// `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, `CKA_SIGN`), labelled `label`, with a fresh id.
    pub fn generate(
        module_path: &Path,
        sel: &TokenSelector,
        pin: &Pin,
        label: &str,
    ) -> Result<Self, Pkcs11Error> {
        let (ctx, slot, token, session) = Self::start(module_path, sel, pin)?;
        let id = new_key_id(&session, &token)?;
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template(&id, label),
                &private_template(&id, label),
            )
            .map_err(module_err(&token.label, "generating the key"))?;
        Self::finish(
            ctx,
            slot,
            module_path,
            token,
            session,
            id,
            Some(label.to_string()),
        )
    }

    /// Import an existing P-256 key (PKCS#8 DER) into the token as sensitive and not
    /// extractable, with its public key beside it. The plaintext scalar only passes through
    /// zeroizing memory.
    pub fn import(
        module_path: &Path,
        sel: &TokenSelector,
        pin: &Pin,
        pkcs8: &[u8],
        label: &str,
    ) -> Result<Self, Pkcs11Error> {
        use p256::pkcs8::DecodePrivateKey;
        let sk = p256::SecretKey::from_pkcs8_der(pkcs8).map_err(|e| {
            Pkcs11Error::BadKey(format!("the key to import is not a P-256 PKCS#8 ({e})"))
        })?;
        let scalar = Zeroizing::new(sk.to_bytes());
        let point = sk.public_key().to_sec1_bytes();
        let mut ec_point = vec![0x04, 0x41];
        ec_point.extend_from_slice(&point);
        let (ctx, slot, token, session) = Self::start(module_path, sel, pin)?;
        let id = new_key_id(&session, &token)?;
        let mut private = private_template(&id, label);
        private.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Value(scalar.to_vec()),
        ]);
        let created = session.create_object(&private);
        // The template's copy of the scalar is wiped before anything else happens.
        for a in private.iter_mut() {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        created.map_err(module_err(&token.label, "importing the key"))?;
        let mut public = public_template(&id, label);
        public.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcPoint(ec_point),
        ]);
        session
            .create_object(&public)
            .map_err(module_err(&token.label, "importing the public key"))?;
        let key = Self::finish(
            ctx,
            slot,
            module_path,
            token,
            session,
            id,
            Some(label.to_string()),
        )?;
        if key.public.as_slice() != point.as_ref() {
            return Err(Pkcs11Error::BadKey(
                "the token's public key differs from the imported key".into(),
            ));
        }
        Ok(key)
    }

    /// Open the key named by `uri` (its `module-path`, or `module_path` when given).
    pub fn open(uri: &KeyUri, module_path: Option<&Path>, pin: &Pin) -> Result<Self, Pkcs11Error> {
        let module_path = module_path
            .map(Path::to_path_buf)
            .or_else(|| uri.module_path.clone())
            .ok_or_else(|| Pkcs11Error::BadUri("no module-path; give --pkcs11 MODULE".into()))?;
        let sel = TokenSelector {
            label: uri.token.clone(),
            serial: uri.serial.clone(),
        };
        let (ctx, slot, token, session) = Self::start(&module_path, &sel, pin)?;
        Self::finish(
            ctx,
            slot,
            &module_path,
            token,
            session,
            uri.id.clone(),
            uri.object.clone(),
        )
    }

    /// The key's URI (with `module-path`), the content of `ca.key.pkcs11`.
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// The token the key lives in.
    pub fn token(&self) -> &TokenDesc {
        &self.token
    }

    /// Read the key's protection attributes from the token.
    pub fn key_attributes(&self) -> Result<KeyAttributes, Pkcs11Error> {
        let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let (session, handle) = &*guard;
        let attrs = session
            .get_attributes(
                *handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                    AttributeType::Private,
                ],
            )
            .map_err(module_err(&self.token.label, "reading key attributes"))?;
        let mut k = KeyAttributes {
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            token: false,
            private: false,
        };
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => k.sensitive = v,
                Attribute::Extractable(v) => k.extractable = v,
                Attribute::AlwaysSensitive(v) => k.always_sensitive = v,
                Attribute::NeverExtractable(v) => k.never_extractable = v,
                Attribute::Token(v) => k.token = v,
                Attribute::Private(v) => k.private = v,
                _ => {}
            }
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_accepts_der_and_bare_points_only_on_the_curve() {
        let (k, _) = crate::crypto::P256Key::generate().unwrap();
        let p = k.public_key();
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&p);
        assert_eq!(ec_point(&der).unwrap(), p);
        assert_eq!(ec_point(&p).unwrap(), p);
        let mut off = p;
        off[64] ^= 1;
        assert!(ec_point(&off).is_err());
        assert!(ec_point(&p[..33]).is_err());
    }
}
