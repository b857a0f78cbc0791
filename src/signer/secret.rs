//! Secrets of the signer: where the CA passphrase or age identity comes from ([`Unlock`]), how
//! the CA key is protected at rest ([`Protection`]), the in-memory CA key ([`CaKey`]), age
//! encryption/decryption of the PKCS#8, and the only file helpers allowed to touch secret files
//! (create-new with mode 0600; refuse group/world-readable key files).
//!
//! Nothing here prints, prompts or logs. Plaintext key bytes only ever live in
//! [`zeroize::Zeroizing`] buffers or inside [`CaKey`]; they are never written to disk.

use crate::crypto::{CryptoError, P256Key};
use age::secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest scrypt work factor (log2 N) accepted when decrypting a passphrase-protected key.
/// age calibrates encryption to about one second (log_n 18–20 on current machines); a file
/// asking for more than 2^22 (4 GiB of scrypt memory) is refused, so a hostile `ca.key.age`
/// cannot hang the signer.
pub const MAX_SCRYPT_LOG_N: u8 = 22;

/// Smallest scrypt work factor (log2 N) accepted when encrypting with an explicit
/// `--scrypt-log-n`. 2^10 is only for tests and throw-away demos; real keys use
/// [`DEFAULT_SCRYPT_LOG_N`] or more.
pub const MIN_SCRYPT_LOG_N: u8 = 10;

/// The scrypt work factor (log2 N) new passphrase-protected files get unless told otherwise:
/// 2^18 needs about 256 MiB and well under a second to open, where age's own calibration
/// (2^20 on current machines) needs about 1 GiB, too much for a small air-gapped laptop
/// (SPEC §13). Accepted explicit values: [`MIN_SCRYPT_LOG_N`]`..=`[`MAX_SCRYPT_LOG_N`].
pub const DEFAULT_SCRYPT_LOG_N: u8 = 18;

/// Largest secret file (age-encrypted key, identity file, passphrase file) we read.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Where the secret that opens `ca.key.age` comes from.
pub enum Unlock {
    /// The passphrase of a scrypt-protected key.
    Passphrase(SecretString),
    /// An age identity file (`AGE-SECRET-KEY-1...` lines) for an X25519-protected key.
    Identity(PathBuf),
    /// Custodians' share files for a quorum-held key (`quorum.json` in the CA directory):
    /// at least M of them, each with what opens it.
    Shares(Vec<ShareInput>),
    /// The user PIN of the PKCS#11 token holding the key (`ca.key.pkcs11`).
    Pin(crate::signer::key::pkcs11::Pin),
}

/// One custodian's share file given to unlock a quorum-held key.
pub struct ShareInput {
    /// The share file (`NAME.share.age`).
    pub path: PathBuf,
    /// What opens it.
    pub secret: ShareSecret,
}

/// What opens one share file.
pub enum ShareSecret {
    /// The custodian's passphrase.
    Passphrase(SecretString),
    /// The custodian's age identity file.
    Identity(PathBuf),
}

impl fmt::Debug for ShareInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.secret {
            ShareSecret::Passphrase(_) => write!(f, "Share({}, passphrase)", self.path.display()),
            ShareSecret::Identity(i) => write!(
                f,
                "Share({}, identity {})",
                self.path.display(),
                i.display()
            ),
        }
    }
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase(..)"),
            Unlock::Identity(p) => write!(f, "Unlock::Identity({})", p.display()),
            Unlock::Shares(s) => write!(f, "Unlock::Shares({s:?})"),
            Unlock::Pin(_) => f.write_str("Unlock::Pin(..)"),
        }
    }
}

impl Unlock {
    /// Short name of the method for audit records: `passphrase`, `identity`, `shares` or
    /// `pin`.
    pub fn method(&self) -> &'static str {
        match self {
            Unlock::Passphrase(_) => "passphrase",
            Unlock::Identity(_) => "identity",
            Unlock::Shares(_) => "shares",
            Unlock::Pin(_) => "pin",
        }
    }
}

/// How the CA key is encrypted at rest.
pub enum Protection {
    /// age scrypt passphrase recipient.
    Passphrase(SecretString),
    /// age X25519 recipients (`age1...`); any one of them can decrypt.
    Recipients(Vec<String>),
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::Passphrase(_) => f.write_str("Protection::Passphrase(..)"),
            Protection::Recipients(r) => write!(f, "Protection::Recipients({r:?})"),
        }
    }
}

impl Protection {
    /// Human/audit description, e.g. `passphrase (age scrypt)` or
    /// `age X25519 recipients: age1..., age1...`. Holds no secret.
    pub fn describe(&self) -> String {
        match self {
            Protection::Passphrase(_) => "passphrase (age scrypt)".to_string(),
            Protection::Recipients(r) => format!("age X25519 recipients: {}", r.join(", ")),
        }
    }
}

/// Errors of secret handling. Display is this layer's sentence (what happened, what to do
/// next); an OS error is the `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file already exists; secret files are never overwritten.
    #[error("{} already exists; nrfca never overwrites a key file: choose an empty --ca-dir", .0.display())]
    Exists(PathBuf),
    /// A secret file is readable by group or others.
    #[error("{} has mode {:o} and is readable by group or others; run `chmod 600 {}` and retry", path.display(), mode & 0o777, path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A secret file is larger than [`MAX_SECRET_FILE`].
    #[error("{} is larger than {MAX_SECRET_FILE} bytes; is it the right file?", .0.display())]
    TooLarge(PathBuf),
    /// The passphrase or identity does not open the key.
    #[error("wrong passphrase or identity; {0}")]
    WrongSecret(String),
    /// The key file is not an age file we can read, or its plaintext is not a P-256 PKCS#8.
    #[error("the CA key file cannot be read: {0}; restore ca.key.age from your backup")]
    BadKeyFile(String),
    /// The key file asks for an scrypt work factor above [`MAX_SCRYPT_LOG_N`] (a tampered or
    /// foreign file: decrypting it would take too long).
    #[error("the CA key file cannot be read: scrypt work factor 2^{required} exceeds the limit 2^{MAX_SCRYPT_LOG_N}; restore ca.key.age from your backup")]
    WorkFactorTooHigh {
        /// The work factor the file asks for (log2 N).
        required: u8,
    },
    /// An `--recipient` is not an age X25519 public key.
    #[error("`{0}` is not an age X25519 recipient; give public keys of the form age1...")]
    BadRecipient(String),
    /// The identity file holds no usable identity.
    #[error("identity file not usable: {0}; give a file with AGE-SECRET-KEY-1... lines")]
    BadIdentity(String),
    /// An empty passphrase was given.
    #[error("the passphrase is empty; give a non-empty passphrase")]
    EmptyPassphrase,
    /// Encryption failed.
    #[error("encrypting the CA key failed: {0}")]
    Encrypt(String),
    /// The key was rejected by the crypto layer.
    #[error(transparent)]
    Crypto(CryptoError),
    /// Core dumps could not be switched off before handling a secret.
    #[error("cannot switch off core dumps before unlocking the CA key ({0}); run nrfca where prctl(PR_SET_DUMPABLE) and setrlimit(RLIMIT_CORE) are allowed")]
    Harden(String),
    /// An scrypt work factor outside the accepted range was asked for.
    #[error("scrypt work factor 2^{0} is outside {MIN_SCRYPT_LOG_N}..={MAX_SCRYPT_LOG_N}; give --scrypt-log-n in that range (default {DEFAULT_SCRYPT_LOG_N})")]
    BadWorkFactor(u8),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The unlocked CA private key. No `Clone`; `Debug` prints `CaKey(..)`; the key material is
/// wiped when it is dropped. Implements rcgen's [`rcgen::SigningKey`] so certificates can be
/// signed with it directly.
pub struct CaKey {
    key: P256Key,
    public: [u8; 65],
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaKey(..)")
    }
}

impl CaKey {
    /// Wrap a loaded P-256 key.
    pub fn new(key: P256Key) -> Self {
        let public = key.public_key();
        CaKey { key, public }
    }

    /// Load from a ring-compatible PKCS#8 (see `crate::crypto::pkcs8_normalize`).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SecretError> {
        P256Key::from_pkcs8(pkcs8)
            .map(CaKey::new)
            .map_err(SecretError::Crypto)
    }

    /// ECDSA-SHA256 signature of `msg`, DER encoded.
    pub fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.sign_der(msg)
    }

    /// The uncompressed SEC1 public key (65 bytes).
    pub fn public_key(&self) -> [u8; 65] {
        self.public
    }

    /// The underlying ring key (for callers that sign many certificates in parallel).
    pub fn p256(&self) -> &P256Key {
        &self.key
    }
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign_der(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// Keep secrets out of core dumps and away from same-user debuggers, before any secret is
/// read: `prctl(PR_SET_DUMPABLE, 0)` (no core file, no `ptrace` attach or `/proc/<pid>/mem`
/// read by other processes of the same user) and `setrlimit(RLIMIT_CORE, 0, 0)` (no core
/// file even if something makes the process dumpable again, e.g. an `execve`; the hard
/// limit cannot be raised back without privilege). Idempotent; the settings last until the
/// process exits. Called by every function that handles the CA key or its passphrase
/// ([`crate::signer::ca::init`], [`crate::signer::ca::import`],
/// [`crate::signer::ca::unlock`]) and by the CLI before it reads a passphrase.
pub fn harden_process() -> Result<(), SecretError> {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| SecretError::Harden(format!("setrlimit(RLIMIT_CORE): {e}")))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| SecretError::Harden(format!("prctl(PR_SET_DUMPABLE): {e}")))?;
    Ok(())
}

/// Whether [`harden_process`] is in effect: not dumpable and both core limits 0.
pub fn process_hardened() -> bool {
    use nix::sys::resource::{getrlimit, Resource};
    let dumpable = nix::sys::prctl::get_dumpable().unwrap_or(true);
    let core = getrlimit(Resource::RLIMIT_CORE).unwrap_or((1, 1));
    !dumpable && core == (0, 0)
}

/// Create `path` as a new file with mode 0600 (`O_CREAT|O_EXCL`): never overwrites, never
/// follows a symlink planted at `path`. Fails with [`SecretError::Exists`] if it exists.
pub fn create_secret_file(path: &Path) -> Result<File, SecretError> {
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    match opts.open(path) {
        Ok(f) => {
            // The umask can only remove bits; make sure it is exactly 0600.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(SecretError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Write `bytes` to a new secret file (mode 0600, never overwriting) and fsync it.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    let mut f = create_secret_file(path)?;
    let res = f.write_all(bytes).and_then(|_| f.sync_all());
    if let Err(e) = res {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// Refuse a key file whose mode lets group or others read or write it.
pub fn check_private_mode(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Read a whole file of at most [`MAX_SECRET_FILE`] bytes into zeroizing memory.
pub fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let f = File::open(path).map_err(io_err(path))?;
    // Sized up front so the buffer never reallocates: a reallocation would leave an unwiped
    // copy of the secret in freed memory.
    let cap = f
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0)
        .min(MAX_SECRET_FILE + 1);
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(cap).unwrap_or(0) + 1));
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretError::TooLarge(path.to_path_buf()));
    }
    Ok(buf)
}

/// Read a key file (e.g. `ca.key.age`, an age identity file): refuses group/world access.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    check_private_mode(path)?;
    read_limited(path)
}

/// Read a passphrase file: the first line, without its line ending. Leading/trailing spaces
/// are kept (they are part of the passphrase). An empty passphrase is refused, and so is a
/// file that group or others may read or write (as for key and identity files: `chmod 600`).
pub fn read_passphrase_file(path: &Path) -> Result<SecretString, SecretError> {
    check_private_mode(path)?;
    let bytes = read_limited(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, "passphrase file is not UTF-8"),
    })?;
    let line = text.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(SecretError::EmptyPassphrase);
    }
    Ok(SecretString::from(line.to_string()))
}

/// Parse and validate age X25519 recipients.
pub fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>, SecretError> {
    if recipients.is_empty() {
        return Err(SecretError::BadRecipient(String::new()));
    }
    recipients
        .iter()
        .map(|r| {
            r.trim()
                .parse::<age::x25519::Recipient>()
                .map_err(|_| SecretError::BadRecipient(r.clone()))
        })
        .collect()
}

/// Encrypt `plaintext` (the CA's PKCS#8) with age, ASCII-armored. Passphrases use scrypt at
/// 2^[`DEFAULT_SCRYPT_LOG_N`]; see [`encrypt_with_log_n`] for an explicit work factor.
pub fn encrypt(plaintext: &[u8], protection: &Protection) -> Result<Vec<u8>, SecretError> {
    encrypt_with_log_n(plaintext, protection, DEFAULT_SCRYPT_LOG_N)
}

/// Encrypt `plaintext` with age, ASCII-armored; a passphrase uses scrypt with work factor
/// 2^`log_n`, recorded in the file's header (read back with [`scrypt_log_n`]). `log_n` must be
/// in [`MIN_SCRYPT_LOG_N`]`..=`[`MAX_SCRYPT_LOG_N`] (the decryption limit, so every file we
/// write can be opened again); it is ignored for recipients.
pub fn encrypt_with_log_n(
    plaintext: &[u8],
    protection: &Protection,
    log_n: u8,
) -> Result<Vec<u8>, SecretError> {
    match protection {
        Protection::Passphrase(p) => {
            check_scrypt_log_n(log_n)?;
            if p.expose_secret().is_empty() {
                return Err(SecretError::EmptyPassphrase);
            }
            let mut r = age::scrypt::Recipient::new(p.clone());
            r.set_work_factor(log_n);
            encrypt_to(plaintext, &[&r as &dyn age::Recipient])
        }
        Protection::Recipients(list) => {
            let parsed = parse_recipients(list)?;
            let refs: Vec<&dyn age::Recipient> =
                parsed.iter().map(|r| r as &dyn age::Recipient).collect();
            encrypt_to(plaintext, &refs)
        }
    }
}

/// Refuse a scrypt work factor outside [`MIN_SCRYPT_LOG_N`]`..=`[`MAX_SCRYPT_LOG_N`].
pub fn check_scrypt_log_n(log_n: u8) -> Result<(), SecretError> {
    if (MIN_SCRYPT_LOG_N..=MAX_SCRYPT_LOG_N).contains(&log_n) {
        Ok(())
    } else {
        Err(SecretError::BadWorkFactor(log_n))
    }
}

fn encrypt_to(
    plaintext: &[u8],
    recipients: &[&dyn age::Recipient],
) -> Result<Vec<u8>, SecretError> {
    let enc = |e: &dyn std::fmt::Display| SecretError::Encrypt(e.to_string());
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().copied()).map_err(|e| enc(&e))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| enc(&e))?;
    let mut w = encryptor.wrap_output(armor).map_err(|e| enc(&e))?;
    w.write_all(plaintext).map_err(|e| enc(&e))?;
    let armor = w.finish().map_err(|e| enc(&e))?;
    armor.finish().map_err(|e| enc(&e))?;
    Ok(out)
}

/// The scrypt work factor (log2 N) in an age file's header, if it has an scrypt stanza.
pub fn scrypt_log_n(ciphertext: &[u8]) -> Option<u8> {
    // Read the binary header through the armor.
    let mut r = age::armor::ArmoredReader::new(ciphertext);
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(head.get_mut(n..)?) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let text = String::from_utf8_lossy(head.get(..n)?);
    text.lines()
        .find_map(|l| l.strip_prefix("-> scrypt "))
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|v| v.trim().parse::<u8>().ok())
}

/// What kind of recipient an age file is encrypted to (read from its header, no secret needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileProtection {
    /// scrypt passphrase.
    Passphrase,
    /// Public-key recipients (X25519).
    Recipients,
}

fn decryptor(ciphertext: &[u8]) -> Result<age::Decryptor<impl io::Read + '_>, SecretError> {
    let armored = age::armor::ArmoredReader::new(ciphertext);
    age::Decryptor::new(armored).map_err(|e| SecretError::BadKeyFile(e.to_string()))
}

/// Which protection an age file uses.
pub fn file_protection(ciphertext: &[u8]) -> Result<FileProtection, SecretError> {
    let d = decryptor(ciphertext)?;
    Ok(if d.is_scrypt() {
        FileProtection::Passphrase
    } else {
        FileProtection::Recipients
    })
}

/// Decrypt an age file with `unlock`. A wrong passphrase / non-matching identity is
/// [`SecretError::WrongSecret`]. The scrypt work factor is bounded by [`MAX_SCRYPT_LOG_N`].
pub fn decrypt(ciphertext: &[u8], unlock: &Unlock) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let d = decryptor(ciphertext)?;
    let scrypt = d.is_scrypt();
    let reader = match unlock {
        Unlock::Passphrase(p) => {
            if !scrypt {
                return Err(SecretError::WrongSecret(
                    "this CA key is encrypted to age recipients, not a passphrase: unlock it with --identity FILE".into(),
                ));
            }
            let mut id = age::scrypt::Identity::new(p.clone());
            id.set_max_work_factor(MAX_SCRYPT_LOG_N);
            d.decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(map_decrypt_err(true))?
        }
        Unlock::Identity(path) => {
            if scrypt {
                return Err(SecretError::WrongSecret(
                    "this CA key is protected by a passphrase, not an age identity: use --passphrase-file, NRFCA_PASSPHRASE or the prompt".into(),
                ));
            }
            let ids = load_identities(path)?;
            d.decrypt(ids.iter().map(|i| i as &dyn age::Identity))
                .map_err(map_decrypt_err(false))?
        }
        Unlock::Shares(_) | Unlock::Pin(_) => {
            return Err(SecretError::WrongSecret(
                "this CA key file is opened with a passphrase or an age identity, not custodians' shares or a PIN".into(),
            ))
        }
    };
    read_payload(reader)
}

/// Decrypt an age file encrypted to X25519 recipients with identities already in memory
/// (e.g. the quorum identity rebuilt from custodians' shares). A non-matching identity is
/// [`SecretError::WrongSecret`]; a passphrase-protected file is refused the same way.
pub fn decrypt_with_identities(
    ciphertext: &[u8],
    identities: &[age::x25519::Identity],
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let d = decryptor(ciphertext)?;
    if d.is_scrypt() {
        return Err(SecretError::WrongSecret(
            "this file is protected by a passphrase, not an age identity".into(),
        ));
    }
    let reader = d
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(map_decrypt_err(false))?;
    read_payload(reader)
}

fn read_payload(reader: impl Read) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut out = Zeroizing::new(Vec::new());
    let mut reader = reader.take(MAX_SECRET_FILE + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| SecretError::BadKeyFile(format!("payload does not decrypt: {e}")))?;
    if out.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretError::BadKeyFile("payload too large".into()));
    }
    Ok(out)
}

fn map_decrypt_err(passphrase: bool) -> impl FnOnce(age::DecryptError) -> SecretError {
    move |e| match e {
        age::DecryptError::DecryptionFailed
        | age::DecryptError::KeyDecryptionFailed
        | age::DecryptError::NoMatchingKeys => SecretError::WrongSecret(if passphrase {
            "check the passphrase (file, NRFCA_PASSPHRASE or prompt) and retry".into()
        } else {
            "the identity file does not hold a key this CA was encrypted to; try another --identity"
                .into()
        }),
        age::DecryptError::ExcessiveWork { required, .. } => {
            SecretError::WorkFactorTooHigh { required }
        }
        other => SecretError::BadKeyFile(other.to_string()),
    }
}

/// Load the X25519 identities of an age identity file (mode must not allow group/world access).
/// Comment lines (`#`) and blank lines are skipped.
pub fn load_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, SecretError> {
    let bytes = read_key_file(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| SecretError::BadIdentity(format!("{} is not UTF-8", path.display())))?;
    let mut ids = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<age::x25519::Identity>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Err(SecretError::BadIdentity(format!(
                    "{} has a line that is not an X25519 identity (plugins and SSH keys are not supported)",
                    path.display()
                )))
            }
        }
    }
    if ids.is_empty() {
        return Err(SecretError::BadIdentity(format!(
            "{} holds no identity",
            path.display()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excessive_work_factor_is_its_own_kind_not_words() {
        let e = map_decrypt_err(true)(age::DecryptError::ExcessiveWork {
            required: 30,
            target: 18,
        });
        assert!(
            matches!(e, SecretError::WorkFactorTooHigh { required: 30 }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("the CA key file cannot be read: scrypt work factor 2^30 exceeds the limit 2^{MAX_SCRYPT_LOG_N}; restore ca.key.age from your backup")
        );
        let code = crate::signer::ca::unlock_error_code(&crate::signer::ca::CaError::Secret(e));
        assert_eq!(code, "scrypt-work-factor-too-high");
        // Other key-file problems keep their own code.
        let other = SecretError::BadKeyFile("payload too large".into());
        let code = crate::signer::ca::unlock_error_code(&crate::signer::ca::CaError::Secret(other));
        assert_eq!(code, "key-file-unreadable");
    }

    #[test]
    fn an_io_error_is_the_source_and_printed_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        let e = read_limited(&p).unwrap_err();
        assert!(matches!(e, SecretError::Io { .. }), "{e:?}");
        assert_eq!(e.to_string(), p.display().to_string());
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("No such file"), "{cause}");
        assert_eq!(
            crate::error::error_chain(&e),
            format!("{}: {cause}", p.display())
        );
    }

    #[test]
    fn create_secret_file_is_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_secret_file(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            write_secret_file(&p, b"y"),
            Err(SecretError::Exists(_))
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn group_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_key_file(&p),
            Err(SecretError::Permissions { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&read_key_file(&p).unwrap()[..], b"x");
    }

    #[test]
    fn recipients_roundtrip_and_wrong_identity() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let prot = Protection::Recipients(vec![id.to_public().to_string()]);
        let ct = encrypt(b"secret pkcs8", &prot).unwrap();
        assert_eq!(file_protection(&ct).unwrap(), FileProtection::Recipients);
        let good = dir.path().join("good");
        write_secret_file(&good, id.to_string().expose_secret().as_bytes()).unwrap();
        let bad = dir.path().join("bad");
        write_secret_file(&bad, other.to_string().expose_secret().as_bytes()).unwrap();
        let pt = decrypt(&ct, &Unlock::Identity(good)).unwrap();
        assert_eq!(&pt[..], b"secret pkcs8");
        assert!(matches!(
            decrypt(&ct, &Unlock::Identity(bad)),
            Err(SecretError::WrongSecret(_))
        ));
        assert!(matches!(
            decrypt(
                &ct,
                &Unlock::Passphrase(SecretString::from("x".to_string()))
            ),
            Err(SecretError::WrongSecret(_))
        ));
    }

    #[test]
    fn new_passphrase_file_records_the_default_work_factor() {
        let pass = Protection::Passphrase(SecretString::from("pw".to_string()));
        let ct = encrypt(b"pkcs8", &pass).unwrap();
        assert_eq!(scrypt_log_n(&ct), Some(DEFAULT_SCRYPT_LOG_N));
        assert_eq!(DEFAULT_SCRYPT_LOG_N, 18);
        let pt = decrypt(
            &ct,
            &Unlock::Passphrase(SecretString::from("pw".to_string())),
        )
        .unwrap();
        assert_eq!(&pt[..], b"pkcs8");
    }

    #[test]
    fn explicit_work_factor_is_recorded_and_bounded() {
        let pass = Protection::Passphrase(SecretString::from("pw".to_string()));
        let ct = encrypt_with_log_n(b"pkcs8", &pass, 12).unwrap();
        assert_eq!(scrypt_log_n(&ct), Some(12));
        for bad in [MIN_SCRYPT_LOG_N - 1, MAX_SCRYPT_LOG_N + 1, 0, 40] {
            assert!(matches!(
                encrypt_with_log_n(b"x", &pass, bad),
                Err(SecretError::BadWorkFactor(n)) if n == bad
            ));
        }
    }

    #[test]
    fn bad_recipient_is_refused() {
        assert!(matches!(
            encrypt(b"x", &Protection::Recipients(vec!["age1nope".into()])),
            Err(SecretError::BadRecipient(_))
        ));
    }

    #[test]
    fn garbage_key_file_is_bad_key_file() {
        assert!(matches!(
            decrypt(
                b"not age at all",
                &Unlock::Passphrase(SecretString::from("x".to_string()))
            ),
            Err(SecretError::BadKeyFile(_))
        ));
    }
}
