//! The CA key behind one signing trait ([`CaSigner`]): however the key is held — an age file
//! opened with a passphrase or identity (`age`), an age file whose identity is split among
//! custodians ([`quorum`]), or a PKCS#11 token ([`pkcs11`]) — the rest of the signer only asks
//! for the public key, a DER signature and a description of the custody ([`Custody`]) for
//! `ca show` and the audit log.
//!
//! Nothing here prints, prompts or logs; secrets stay in zeroizing types.

pub(crate) mod age;
pub mod pkcs11;
pub mod quorum;

use crate::crypto::CryptoError;
use crate::signer::secret::SecretError;
pub use age::AgeKey;
use serde::Serialize;

/// Why signing with (or opening) the CA key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The in-memory ECDSA signature failed (ring).
    #[error("signing with the CA key failed")]
    Sign(#[from] CryptoError),
    /// Opening or decrypting an age file failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The PKCS#11 token refused or failed.
    #[error(transparent)]
    Pkcs11(#[from] pkcs11::Pkcs11Error),
    /// Combining custodians' shares failed.
    #[error(transparent)]
    Quorum(#[from] quorum::QuorumError),
}

impl KeyError {
    /// Stable kebab-case code for audit records and `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Sign(_) => "key-sign-failed",
            KeyError::Secret(SecretError::WrongSecret(_)) => "wrong-secret",
            KeyError::Secret(_) => "key-file-unusable",
            KeyError::Pkcs11(e) => e.code(),
            KeyError::Quorum(e) => e.code(),
        }
    }
}

/// How the CA key is held. Holds no secret: it is what `ca show` prints and what the audit
/// log records (`kind` plus the fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Custody {
    /// `ca.key.age` encrypted to a passphrase (age scrypt).
    Passphrase {
        /// The scrypt work factor (log2 N) recorded in the file, if readable.
        scrypt_log_n: Option<u8>,
    },
    /// `ca.key.age` encrypted to age X25519 recipients; any one identity opens it.
    Recipients {
        /// Number of recipient stanzas in the file.
        count: usize,
        /// The recipients (`age1...`) where they are known (an age file does not name them).
        recipients: Vec<String>,
    },
    /// `ca.key.age` encrypted to an age identity split M-of-N among custodians.
    Quorum {
        /// M: shares needed.
        threshold: u8,
        /// The custodians of the current share set, in share order (N = its length).
        custodians: Vec<String>,
        /// The share set id (hex); changes on every `ca reshare`.
        set_id: String,
        /// The custodians whose shares opened the key this time (empty when not unlocked).
        participants: Vec<String>,
    },
    /// The key lives in a PKCS#11 token and never leaves it.
    Pkcs11 {
        /// The PKCS#11 module (shared library) path.
        module: String,
        /// The token's label.
        token_label: String,
        /// The token's serial number.
        token_serial: String,
        /// CKA_ID of the key, lowercase hex.
        key_id: String,
        /// The RFC 7512 URI of the private key (no PIN, no module path).
        uri: String,
    },
}

impl Custody {
    /// Short kind name: `passphrase`, `recipients`, `quorum` or `pkcs11`.
    pub fn kind(&self) -> &'static str {
        match self {
            Custody::Passphrase { .. } => "passphrase",
            Custody::Recipients { .. } => "recipients",
            Custody::Quorum { .. } => "quorum",
            Custody::Pkcs11 { .. } => "pkcs11",
        }
    }

    /// One human line for `ca show` and audit details.
    pub fn describe(&self) -> String {
        match self {
            Custody::Passphrase { scrypt_log_n } => match scrypt_log_n {
                Some(n) => format!("passphrase (age scrypt, work factor 2^{n})"),
                None => "passphrase (age scrypt)".to_string(),
            },
            Custody::Recipients { count, recipients } => {
                if recipients.is_empty() {
                    format!("age X25519 recipients ({count})")
                } else {
                    format!("age X25519 recipients: {}", recipients.join(", "))
                }
            }
            Custody::Quorum {
                threshold,
                custodians,
                set_id,
                participants,
            } => {
                let mut s = format!(
                    "quorum {threshold}-of-{} (custodians: {}; share set {set_id})",
                    custodians.len(),
                    custodians.join(", ")
                );
                if !participants.is_empty() {
                    s.push_str(&format!("; opened by {}", participants.join(", ")));
                }
                s
            }
            Custody::Pkcs11 {
                module,
                token_label,
                token_serial,
                key_id,
                ..
            } => format!(
                "PKCS#11 token \"{token_label}\" (serial {token_serial}), key id {key_id}, module {module}"
            ),
        }
    }
}

/// The CA's signing key, however it is held. `Send + Sync`: one signer is shared by the
/// worker threads of a batch; a token-backed signer hands each worker its own session through
/// [`CaSigner::worker`].
pub trait CaSigner: Send + Sync {
    /// The uncompressed SEC1 P-256 public key (`04 || X || Y`).
    fn public_key(&self) -> [u8; 65];

    /// ECDSA-SHA256 signature of `msg`, DER (ASN.1) encoded, as in X.509, CRLs and
    /// `manifest.sig`.
    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// How the key is held.
    fn custody(&self) -> Custody;

    /// A signer for one worker thread. In-memory keys return themselves (ring signs from any
    /// number of threads); a PKCS#11 key opens a new session on the token, because a token
    /// serialises the operations of one session.
    fn worker(&self) -> Result<Box<dyn CaSigner + '_>, KeyError> {
        Ok(Box::new(Borrowed(self)))
    }
}

/// A borrowed signer used as a worker (the default of [`CaSigner::worker`]).
struct Borrowed<'a, S: ?Sized>(&'a S);

impl<S: CaSigner + ?Sized> CaSigner for Borrowed<'_, S> {
    fn public_key(&self) -> [u8; 65] {
        self.0.public_key()
    }
    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.0.sign_der(msg)
    }
    fn custody(&self) -> Custody {
        self.0.custody()
    }
    fn worker(&self) -> Result<Box<dyn CaSigner + '_>, KeyError> {
        self.0.worker()
    }
}

/// A boxed signer (as [`crate::signer::ca::UnlockedCa`] holds it) is a signer, so
/// `&unlocked.key` can be passed where a `&dyn CaSigner` is wanted.
impl<S: CaSigner + ?Sized> CaSigner for Box<S> {
    fn public_key(&self) -> [u8; 65] {
        (**self).public_key()
    }
    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        (**self).sign_der(msg)
    }
    fn custody(&self) -> Custody {
        (**self).custody()
    }
    fn worker(&self) -> Result<Box<dyn CaSigner + '_>, KeyError> {
        (**self).worker()
    }
}

/// Adapter so rcgen can sign certificates and CRLs with any [`CaSigner`].
pub struct RcgenSigner<'a> {
    signer: &'a dyn CaSigner,
    public: [u8; 65],
}

impl<'a> RcgenSigner<'a> {
    /// Wrap a signer for rcgen.
    pub fn new(signer: &'a dyn CaSigner) -> Self {
        RcgenSigner {
            public: signer.public_key(),
            signer,
        }
    }
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign_der(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// Turn a raw PKCS#11 / COSE ECDSA P-256 signature (`r || s`, 64 bytes) into DER.
pub fn raw_signature_to_der(raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| CryptoError::Sign)?;
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_to_der_roundtrips_through_ring_verify() {
        let (key, _) = crate::crypto::P256Key::generate().unwrap();
        let raw = key.sign_fixed(b"msg").unwrap();
        let der = raw_signature_to_der(&raw).unwrap();
        assert!(crate::crypto::verify_p256_sha256(
            &key.public_key(),
            b"msg",
            &der
        ));
        assert!(!crate::crypto::verify_p256_sha256(
            &key.public_key(),
            b"other",
            &der
        ));
        assert!(raw_signature_to_der(&[0u8; 64]).is_err());
        assert!(raw_signature_to_der(&raw[..63]).is_err());
    }

    #[test]
    fn custody_describes_and_serialises_without_secrets() {
        let q = Custody::Quorum {
            threshold: 2,
            custodians: vec!["alice".into(), "bob".into(), "carol".into()],
            set_id: "ab12".into(),
            participants: vec!["alice".into(), "carol".into()],
        };
        assert_eq!(q.kind(), "quorum");
        assert_eq!(
            q.describe(),
            "quorum 2-of-3 (custodians: alice, bob, carol; share set ab12); opened by alice, carol"
        );
        let j = serde_json::to_value(&q).unwrap();
        assert_eq!(j["kind"], "quorum");
        assert_eq!(j["threshold"], 2);
        let p = Custody::Passphrase {
            scrypt_log_n: Some(18),
        };
        assert_eq!(p.describe(), "passphrase (age scrypt, work factor 2^18)");
        assert_eq!(serde_json::to_value(&p).unwrap()["kind"], "passphrase");
    }
}
