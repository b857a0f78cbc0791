//! Small crypto helpers over `ring`: SHA-256, P-256 ECDSA (verify, sign, generate), randomness,
//! base64url, and conversion of PEM private keys into ring-loadable PKCS#8.
//!
//! `ring` is the hot path (≈ 3× faster than RustCrypto `p256` for sign and verify); `p256` is
//! only used for the rare conversions ring cannot do (SEC1 keys, PKCS#8 without the public key)
//! and for point validation when a signature already failed to verify.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use std::fmt;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Why a crypto operation failed. Messages say what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The operating system's random generator failed.
    #[error("the system random number generator failed; check /dev/urandom is readable")]
    Rng,
    /// A private key was not accepted (wrong format, curve, or inconsistent public key).
    #[error("private key rejected ({0}); give an EC P-256 key in PKCS#8 or SEC1 form")]
    KeyRejected(String),
    /// Signing failed.
    #[error("ECDSA signing failed")]
    Sign,
    /// A PEM input had no usable block or a bad body.
    #[error("{0}; expected a PEM block `EC PRIVATE KEY` or `PRIVATE KEY`")]
    Pem(String),
    /// An argument was not usable (e.g. an unknown subject attribute).
    #[error("{0}")]
    InvalidInput(String),
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Verify a DER (ASN.1) ECDSA-P256-SHA256 signature with an uncompressed SEC1 public key.
/// Returns false for any malformed input.
pub fn verify_p256_sha256(public_key_sec1: &[u8], msg: &[u8], der_sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, public_key_sec1)
        .verify(msg, der_sig)
        .is_ok()
}

/// Verify a fixed-size (raw r‖s, 64 bytes, COSE ES256) ECDSA-P256-SHA256 signature.
pub fn verify_p256_sha256_fixed(public_key_sec1: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key_sec1)
        .verify(msg, sig)
        .is_ok()
}

/// Whether `sec1` is a valid P-256 public point (uncompressed or compressed, on the curve,
/// not the identity). Slower than a verify; use it to explain failures, not on the hot path.
pub fn is_valid_p256_point(sec1: &[u8]) -> bool {
    p256::PublicKey::from_sec1_bytes(sec1).is_ok()
}

fn rng() -> &'static SystemRandom {
    static RNG: OnceLock<SystemRandom> = OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// Fill `buf` with random bytes from the system generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    rng().fill(buf).map_err(|_| CryptoError::Rng)
}

/// `N` random bytes from the system generator. A failing OS generator is not recoverable
/// (and never caused by input data): this panics rather than return predictable bytes.
/// Use [`fill_random`] where the failure must be handled.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if fill_random(&mut out).is_err() {
        panic!("the system random number generator failed");
    }
    out
}

/// A P-256 private key for ECDSA-SHA256 signatures (ring). Holds the PKCS#8 in zeroizing
/// memory; no `Clone`, redacted `Debug`. `Send + Sync`: one key can be shared by threads.
pub struct P256Key {
    asn1: EcdsaKeyPair,
    fixed: OnceLock<EcdsaKeyPair>,
    pkcs8: Zeroizing<Vec<u8>>,
    public: [u8; 65],
}

impl fmt::Debug for P256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P256Key(..)")
    }
}

impl P256Key {
    /// Load a ring-compatible PKCS#8 (v1 or v2, with the public key inside the
    /// ECPrivateKey). Use `pkcs8_from_pem_any` / `pkcs8_normalize` for other forms.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let asn1 =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, rng())
                .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
        let mut public = [0u8; 65];
        let pk = asn1.public_key().as_ref();
        if pk.len() != 65 {
            return Err(CryptoError::KeyRejected(
                "public key is not 65 bytes".into(),
            ));
        }
        public.copy_from_slice(pk);
        Ok(P256Key {
            asn1,
            fixed: OnceLock::new(),
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            public,
        })
    }

    /// A fresh random key; also returns its PKCS#8 (zeroized on drop).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, rng())
            .map_err(|_| CryptoError::Rng)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let key = P256Key::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// ECDSA-SHA256 signature of `msg`, DER (ASN.1) encoded, as in X.509 and PKCS#10.
    pub fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.asn1
            .sign(rng(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| CryptoError::Sign)
    }

    /// ECDSA-SHA256 signature of `msg` as raw r‖s (64 bytes), as in COSE ES256.
    pub fn sign_fixed(&self, msg: &[u8]) -> Result<[u8; 64], CryptoError> {
        let fixed = match self.fixed.get() {
            Some(k) => k,
            None => {
                let k = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.pkcs8,
                    rng(),
                )
                .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
                // Another thread may have won the race; either key is the same key.
                let _ = self.fixed.set(k);
                self.fixed.get().ok_or(CryptoError::Sign)?
            }
        };
        let sig = fixed.sign(rng(), msg).map_err(|_| CryptoError::Sign)?;
        let mut out = [0u8; 64];
        if sig.as_ref().len() != 64 {
            return Err(CryptoError::Sign);
        }
        out.copy_from_slice(sig.as_ref());
        Ok(out)
    }

    /// The uncompressed SEC1 public key (`04 || X || Y`).
    pub fn public_key(&self) -> [u8; 65] {
        self.public
    }

    /// The PKCS#8 this key was loaded from (secret; zeroized on drop of the key).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// Turn any P-256 private key DER (PKCS#8 with or without the embedded public key, or SEC1
/// `ECPrivateKey`) into a PKCS#8 that ring loads. Uses the `p256` crate for the conversion.
pub fn pkcs8_normalize(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    let secret = match p256::SecretKey::from_pkcs8_der(der) {
        Ok(k) => k,
        Err(pkcs8_err) => p256::SecretKey::from_sec1_der(der).map_err(|_| {
            CryptoError::KeyRejected(format!("not a P-256 PKCS#8 or SEC1 key: {pkcs8_err}"))
        })?,
    };
    let doc = secret
        .to_pkcs8_der()
        .map_err(|e| CryptoError::KeyRejected(e.to_string()))?;
    let out = Zeroizing::new(doc.as_bytes().to_vec());
    // Make sure ring accepts what we produce.
    P256Key::from_pkcs8(&out)?;
    Ok(out)
}

/// Read a PEM private key, `EC PRIVATE KEY` (SEC1, as written by `openssl ecparam -genkey`
/// and Nordic's `create_ca_cert`) or `PRIVATE KEY` (PKCS#8), and return a ring-loadable
/// PKCS#8. Other blocks in the text (e.g. `EC PARAMETERS`, certificates) are skipped.
/// Encrypted keys are refused with a message.
pub fn pkcs8_from_pem_any(pem: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    // Not `util::pem_blocks`: that collects every body into ordinary growing `String`s, which
    // would leave copies of the plaintext key's base64 in freed heap memory. Here the key's
    // body goes into one zeroizing buffer sized up front (never reallocated), and so does its
    // DER.
    let mut labels: Vec<String> = Vec::new();
    let mut in_block: Option<&str> = None;
    let mut body = Zeroizing::new(String::with_capacity(pem.len()));
    for raw in pem.lines() {
        let line = raw.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            in_block = Some(label);
            body.clear();
            continue;
        }
        if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if in_block.take() != Some(label) {
                body.clear();
                continue;
            }
            match label {
                "EC PRIVATE KEY" | "PRIVATE KEY" => {
                    let der = b64_decode_secret(&body).map_err(|e| {
                        CryptoError::Pem(format!("bad base64 in {label}: {e}"))
                    })?;
                    return pkcs8_normalize(&der);
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(CryptoError::Pem(
                        "the key is passphrase-encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)"
                            .into(),
                    ))
                }
                other => {
                    if labels.len() < 16 {
                        labels.push(other.to_string());
                    }
                    body.clear();
                }
            }
            continue;
        }
        if in_block.is_some() {
            body.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    if labels.is_empty() {
        return Err(CryptoError::Pem("no PEM block found".into()));
    }
    Err(CryptoError::Pem(format!(
        "no private key block (found: {})",
        labels.join(", ")
    )))
}

/// Standard base64 decoded straight into a zeroizing buffer reserved up front (no
/// reallocation, so no stray copy of secret bytes is left behind).
pub fn b64_decode_secret(s: &str) -> Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
    base64::engine::general_purpose::STANDARD.decode_vec(s, &mut out)?;
    Ok(out)
}

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// base64url without padding (RFC 4648 §5), as the modem writes it.
pub fn b64url_encode(data: &[u8]) -> String {
    B64URL.encode(data)
}

/// Decode base64url; padding is optional, the standard alphabet (`+/`) is refused.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64URL.decode(s)
}

/// Standard base64 with padding (PEM bodies, `manifest.sig`).
pub fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decode standard base64 with padding.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let (k, pkcs8) = P256Key::generate().unwrap();
        let sig = k.sign_der(b"hello").unwrap();
        assert!(verify_p256_sha256(&k.public_key(), b"hello", &sig));
        assert!(!verify_p256_sha256(&k.public_key(), b"hellp", &sig));
        let f = k.sign_fixed(b"hello").unwrap();
        assert!(verify_p256_sha256_fixed(&k.public_key(), b"hello", &f));
        let k2 = P256Key::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(k2.public_key(), k.public_key());
        assert_eq!(format!("{k:?}"), "P256Key(..)");
        assert!(is_valid_p256_point(&k.public_key()));
        let mut bad = k.public_key();
        bad[64] ^= 1;
        assert!(!is_valid_p256_point(&bad));
    }

    #[test]
    fn key_is_send_sync() {
        fn assert_ss<T: Send + Sync>() {}
        assert_ss::<P256Key>();
    }

    #[test]
    fn b64url_round_trip_and_alphabet() {
        let data: Vec<u8> = (0u8..=255).collect();
        let s = b64url_encode(&data);
        assert!(!s.contains('=') && !s.contains('+') && !s.contains('/'));
        assert_eq!(b64url_decode(&s).unwrap(), data);
        assert!(b64url_decode("ab+/").is_err());
        assert_eq!(b64url_decode("YQ==").unwrap(), b"a");
        assert_eq!(b64url_decode("YQ").unwrap(), b"a");
    }

    #[test]
    fn pem_sec1_and_pkcs8_are_normalized() {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let sec1 = sk.to_sec1_pem(LineEnding::LF).unwrap();
        let pk8 = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
        let a = pkcs8_from_pem_any(&format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            &*sec1
        ))
        .unwrap();
        let b = pkcs8_from_pem_any(&pk8).unwrap();
        let ka = P256Key::from_pkcs8(&a).unwrap();
        let kb = P256Key::from_pkcs8(&b).unwrap();
        assert_eq!(ka.public_key(), kb.public_key());
        assert!(pkcs8_from_pem_any("nothing").is_err());
        assert!(pkcs8_from_pem_any(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }
}
