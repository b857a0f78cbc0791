//! The simulated modem's side of KEYGEN and ATTESTTOKEN: real P-256 keys, a CSR shaped like
//! the nRF91's (CN=<uuid>, keyUsage request, NULL quirk), and a COSE_Sign1 signed by a
//! simulated identity key. Used by tests, `nrfca gen` and the simulator. The low-level
//! builders are public so tests can craft every kind of bad request.

use super::cose::{self, MSG_TYPE_CSR, MSG_TYPE_PUBLIC_KEY};
use super::csr;
use crate::crypto::{self, CryptoError, P256Key};
use std::fmt;
use zeroize::Zeroizing;

pub use super::csr::{build_csr, build_csr_from_info, subject_from_attributes, SubjectAttr};

/// Options of [`ModemIdentity::keygen`], mirroring `AT%KEYGEN`'s optional arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Encode the CSR signature algorithm with the NULL parameter like mfw 1.3.7 / 2.0.2.
    pub null_param: bool,
    /// `<attributes>`, e.g. `CN=nrf-355025930000000` or `O=x,CN=y`: replaces the subject.
    pub attributes: Option<String>,
    /// `<response_content>`: 0 CSR, 1 public key (SubjectPublicKeyInfo, msg type 8).
    pub response_content: u8,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            null_param: true,
            attributes: None,
            response_content: 0,
        }
    }
}

/// A KEYGEN reply and the key it certifies.
pub struct Generated {
    /// The KEYGEN string (what goes between the quotes of `%KEYGEN: "…"`).
    pub keygen: String,
    /// The new private key (secret; the simulator stores it as %CMNG type 2).
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// The new public key.
    pub public_key: [u8; 65],
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("keygen", &self.keygen)
            .field("private_key_pkcs8", &"(redacted)")
            .field("public_key", &hex::encode(self.public_key))
            .finish()
    }
}

/// A simulated modem's identity: its UUID and its device identity key (the key whose public
/// half only Nordic knows for a real modem; here the simulator can print it).
pub struct ModemIdentity {
    uuid: [u8; 16],
    identity: P256Key,
}

impl fmt::Debug for ModemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModemIdentity({})", crate::util::uuid_string(&self.uuid))
    }
}

impl ModemIdentity {
    /// A new modem: random version-4 UUID and a fresh identity key.
    pub fn random() -> Result<Self, CryptoError> {
        let mut uuid = [0u8; 16];
        crypto::fill_random(&mut uuid)?;
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let (identity, _) = P256Key::generate()?;
        Ok(ModemIdentity { uuid, identity })
    }

    /// A modem from stored parts (the simulator's state file).
    pub fn from_parts(uuid: [u8; 16], identity_pkcs8: &[u8]) -> Result<Self, CryptoError> {
        Ok(ModemIdentity {
            uuid,
            identity: P256Key::from_pkcs8(identity_pkcs8)?,
        })
    }

    /// The device UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The device UUID as lowercase hyphenated text.
    pub fn uuid_string(&self) -> String {
        crate::util::uuid_string(&self.uuid)
    }

    /// The identity public key (verifies this modem's COSE signatures).
    pub fn identity_public_key(&self) -> [u8; 65] {
        self.identity.public_key()
    }

    /// The identity key PKCS#8, to persist the simulated modem (secret).
    pub fn identity_pkcs8(&self) -> &[u8] {
        self.identity.pkcs8()
    }

    /// The identity key itself (to sign crafted payloads in tests).
    pub fn identity_key(&self) -> &P256Key {
        &self.identity
    }

    /// `AT%KEYGEN=<sec_tag>,2,<response_content>[,"<attributes>"]`: a new P-256 key and the
    /// KEYGEN string for it.
    pub fn keygen(&self, sec_tag: u32, opts: &GenOptions) -> Result<Generated, CryptoError> {
        let (key, pkcs8) = P256Key::generate()?;
        let (first, msg_type) = match opts.response_content {
            0 => {
                let subject = match &opts.attributes {
                    Some(a) => subject_from_attributes(a)?,
                    None => vec![SubjectAttr::cn(&self.uuid_string())],
                };
                (build_csr(&key, &subject, opts.null_param)?, MSG_TYPE_CSR)
            }
            1 => (csr::spki_p256_der(&key.public_key()), MSG_TYPE_PUBLIC_KEY),
            n => {
                return Err(CryptoError::InvalidInput(format!(
                    "response_content {n} is not supported (0 CSR, 1 public key)"
                )))
            }
        };
        let mut nonce = [0u8; 16];
        crypto::fill_random(&mut nonce)?;
        let payload = cose_payload(
            msg_type,
            &self.uuid,
            sec_tag,
            &crypto::sha256(&first),
            &nonce,
        );
        let cose = cose_sign1(&self.identity, &payload)?;
        Ok(Generated {
            keygen: encode(&first, &cose),
            private_key_pkcs8: pkcs8,
            public_key: key.public_key(),
        })
    }

    /// `AT%ATTESTTOKEN[="<challenge>"]`: the identity message (random nonce unless a
    /// challenge is given) and a detached COSE_Sign1 over it.
    pub fn attesttoken(
        &self,
        challenge: Option<[u8; 16]>,
        device_type: u8,
        fw_uuid: [u8; 16],
    ) -> Result<String, CryptoError> {
        let nonce = match challenge {
            Some(c) => c,
            None => {
                let mut n = [0u8; 16];
                crypto::fill_random(&mut n)?;
                n
            }
        };
        let msg = cose::attest_payload(&self.uuid, i64::from(device_type), &fw_uuid, &nonce);
        let c = cose::sign1(&self.identity, &msg, true)?;
        Ok(encode(&msg, &c))
    }
}

/// The KEYGEN attestation payload bytes (see [`cose::keygen_payload`]).
pub fn cose_payload(
    msg_type: i64,
    uuid: &[u8; 16],
    sec_tag: u32,
    digest: &[u8; 32],
    nonce: &[u8; 16],
) -> Vec<u8> {
    cose::keygen_payload(msg_type, uuid, sec_tag, digest, nonce)
}

/// A modem-shaped COSE_Sign1 carrying `payload`, ES256-signed by `identity`.
pub fn cose_sign1(identity: &P256Key, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
    cose::sign1(identity, payload, false)
}

/// `base64url(first).base64url(cose)`.
pub fn encode(first_der: &[u8], cose: &[u8]) -> String {
    let mut s = crypto::b64url_encode(first_der);
    s.push('.');
    s.push_str(&crypto::b64url_encode(cose));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::{check, parse, parse_attesttoken, CheckOptions, DeviceIdMode};

    #[test]
    fn generated_keygen_is_accepted_and_round_trips() {
        let m = ModemIdentity::random().unwrap();
        let g = m.keygen(16842753, &GenOptions::default()).unwrap();
        let v = check(&g.keygen, &CheckOptions::default()).unwrap();
        assert_eq!(v.uuid, m.uuid_string());
        assert_eq!(v.public_key, g.public_key);
        assert!(v.null_param);
        let p = parse(&g.keygen).unwrap();
        assert!(cose::verify_sign1(&m.identity_public_key(), &p.cose, None));
        assert_eq!(
            &p.cose_bytes[..12],
            &[0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x04, 0x41, 0x21, 0x58, 0x4f]
        );
        let k = P256Key::from_pkcs8(&g.private_key_pkcs8).unwrap();
        assert_eq!(k.public_key(), g.public_key);
        let len = g.keygen.len();
        assert!((560..=580).contains(&len), "{len}");
        assert!(!format!("{g:?}").contains(&hex::encode(&*g.private_key_pkcs8)));
    }

    #[test]
    fn imei_cn_and_public_key_variants() {
        let m = ModemIdentity::random().unwrap();
        let g = m
            .keygen(
                42,
                &GenOptions {
                    attributes: Some("CN=nrf-355025930000000".into()),
                    null_param: false,
                    ..Default::default()
                },
            )
            .unwrap();
        let o = CheckOptions {
            sec_tag: Some(42),
            device_id: DeviceIdMode::Cn,
            imei: Some("355025930000000".into()),
        };
        let v = check(&g.keygen, &o).unwrap();
        assert_eq!(v.device_id, "nrf-355025930000000");
        assert!(!v.null_param);
        let e = check(
            &g.keygen,
            &CheckOptions {
                sec_tag: Some(42),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.code, crate::reject::RejectCode::IdentityMismatch);

        let g = m
            .keygen(
                7,
                &GenOptions {
                    response_content: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        let e = check(&g.keygen, &CheckOptions::default()).unwrap_err();
        assert_eq!(e.code, crate::reject::RejectCode::WrongMessageType);
        let p = parse(&g.keygen).unwrap();
        assert_eq!(p.spki().unwrap().p256_point().unwrap(), g.public_key);
        assert!(p.digest_ok());
        assert!(m
            .keygen(
                7,
                &GenOptions {
                    response_content: 2,
                    ..Default::default()
                }
            )
            .is_err());
    }

    #[test]
    fn attesttoken_round_trip() {
        let m = ModemIdentity::random().unwrap();
        let t = m.attesttoken(Some([9; 16]), 3, [5; 16]).unwrap();
        let a = parse_attesttoken(&t).unwrap();
        assert_eq!(a.message.msg_type, 1);
        assert_eq!(a.message.uuid, m.uuid());
        assert_eq!(a.message.device_type, 3);
        assert_eq!(a.message.nonce, [9; 16]);
        assert_eq!(a.cose.payload, None);
        assert!(cose::verify_sign1(
            &m.identity_public_key(),
            &a.cose,
            Some(&a.message_bytes)
        ));
        let again = ModemIdentity::from_parts(m.uuid(), m.identity_pkcs8()).unwrap();
        assert_eq!(again.identity_public_key(), m.identity_public_key());
    }
}
