//! [`CaSigner`] for a CA key held in an age file (`ca.key.age`): opened with a passphrase or an
//! age identity into [`CaKey`] (ring, in zeroizing memory), with its [`Custody`] read from the
//! file's header. The quorum custody ([`super::quorum`]) ends here too, once the custodians'
//! shares rebuilt the identity.

use super::{CaSigner, Custody, KeyError};
use crate::signer::secret::{self, CaKey, FileProtection, SecretError, Unlock};

/// An unlocked age-held CA key and how it was held.
#[derive(Debug)]
pub struct AgeKey {
    key: CaKey,
    custody: Custody,
}

impl AgeKey {
    /// Wrap an unlocked key with its custody.
    pub fn new(key: CaKey, custody: Custody) -> Self {
        AgeKey { key, custody }
    }

    /// Decrypt `ciphertext` (the bytes of `ca.key.age`) with `unlock` and load the P-256 key.
    /// The custody is read from the file: the scrypt work factor for a passphrase, the number
    /// of recipient stanzas for age recipients.
    pub fn open(ciphertext: &[u8], unlock: &Unlock) -> Result<Self, KeyError> {
        let custody = custody_of_file(ciphertext)?;
        let pkcs8 = secret::decrypt(ciphertext, unlock)?;
        let key = CaKey::from_pkcs8(&pkcs8)?;
        Ok(AgeKey { key, custody })
    }

    /// The unlocked key (for code that still takes a [`CaKey`]).
    pub fn ca_key(&self) -> &CaKey {
        &self.key
    }

    /// Give up the wrapper and keep the key.
    pub fn into_ca_key(self) -> CaKey {
        self.key
    }
}

/// How an age file is protected, read from its header (needs no secret). X25519 recipients are
/// not named in an age file, so [`Custody::Recipients`] carries only their count.
pub fn custody_of_file(ciphertext: &[u8]) -> Result<Custody, SecretError> {
    Ok(match secret::file_protection(ciphertext)? {
        FileProtection::Passphrase => Custody::Passphrase {
            scrypt_log_n: secret::scrypt_log_n(ciphertext),
        },
        FileProtection::Recipients => Custody::Recipients {
            count: recipient_stanzas(ciphertext),
            recipients: Vec::new(),
        },
    })
}

/// Number of `-> X25519` stanzas in an age file's header.
fn recipient_stanzas(ciphertext: &[u8]) -> usize {
    use std::io::Read;
    let mut r = age::armor::ArmoredReader::new(ciphertext);
    let mut head = vec![0u8; 4096];
    let mut n = 0;
    while n < head.len() {
        match head.get_mut(n..).map(|b| r.read(b)) {
            Some(Ok(k)) if k > 0 => n += k,
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(head.get(..n).unwrap_or_default());
    text.lines()
        .take_while(|l| !l.starts_with("---"))
        .filter(|l| l.starts_with("-> X25519 "))
        .count()
}

impl CaSigner for AgeKey {
    fn public_key(&self) -> [u8; 65] {
        self.key.public_key()
    }

    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.key.sign_der(msg)?)
    }

    fn custody(&self) -> Custody {
        self.custody.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{verify_p256_sha256, P256Key};
    use crate::signer::secret::Protection;
    use age::secrecy::{ExposeSecret, SecretString};

    #[test]
    fn passphrase_key_signs_and_reports_its_work_factor() {
        let (_, pkcs8) = P256Key::generate().unwrap();
        let pw = || SecretString::from("correct horse".to_string());
        let ct = secret::encrypt_with_log_n(&pkcs8, &Protection::Passphrase(pw()), 12).unwrap();
        let key = AgeKey::open(&ct, &Unlock::Passphrase(pw())).unwrap();
        assert_eq!(
            key.custody(),
            Custody::Passphrase {
                scrypt_log_n: Some(12)
            }
        );
        let sig = key.sign_der(b"manifest").unwrap();
        assert!(verify_p256_sha256(&key.public_key(), b"manifest", &sig));
        // A worker is the same key.
        let w = key.worker().unwrap();
        assert_eq!(w.public_key(), key.public_key());
        assert!(verify_p256_sha256(
            &w.public_key(),
            b"x",
            &w.sign_der(b"x").unwrap()
        ));
        let wrong = AgeKey::open(
            &ct,
            &Unlock::Passphrase(SecretString::from("wrong".to_string())),
        )
        .unwrap_err();
        assert_eq!(wrong.code(), "wrong-secret");
    }

    #[test]
    fn recipients_key_counts_its_stanzas() {
        let (_, pkcs8) = P256Key::generate().unwrap();
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let ct = secret::encrypt(
            &pkcs8,
            &Protection::Recipients(vec![a.to_public().to_string(), b.to_public().to_string()]),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let idf = dir.path().join("id");
        secret::write_secret_file(&idf, a.to_string().expose_secret().as_bytes()).unwrap();
        let key = AgeKey::open(&ct, &Unlock::Identity(idf)).unwrap();
        assert_eq!(
            key.custody(),
            Custody::Recipients {
                count: 2,
                recipients: vec![]
            }
        );
        let rc = super::super::RcgenSigner::new(&key);
        let sig = rcgen::SigningKey::sign(&rc, b"tbs").unwrap();
        assert!(verify_p256_sha256(&key.public_key(), b"tbs", &sig));
    }
}
