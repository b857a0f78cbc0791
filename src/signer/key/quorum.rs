//! Quorum custody (SPEC §13): the CA key is age-encrypted to a fresh X25519 identity whose
//! secret is split M-of-N (Shamir over GF(256), the `blahaj` crate) among named custodians.
//! Each share is age-encrypted to its custodian's passphrase or age recipient
//! (`shares/NAME.share.age`). Here: parse custodian arguments, create a share set, open one
//! share, combine M opened shares (every refusal typed), unlock the key, and `reshare` (a new
//! identity and a new set, so the old shares no longer open anything).
//!
//! Share plaintext (inside the age file), UTF-8 lines `key: value`, in this order:
//! `nrfca share v1`, `ca-sha256`, `set`, `custodian`, `threshold`, `shares`, `index`,
//! `recipient` (the quorum identity's public key), `share` (base64 of the Shamir share).
//! Parsing does no I/O. Nothing here prints, prompts or logs; the rebuilt identity lives only in
//! zeroizing memory.

use super::age::AgeKey;
use super::{Custody, KeyError};
use crate::signer::secret::{self, CaKey, Protection, SecretError};
use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Fewest custodians and smallest threshold.
pub const MIN_SHARES: u8 = 2;
/// Most custodians.
pub const MAX_SHARES: u8 = 16;
/// Longest custodian name.
pub const MAX_NAME: usize = 32;
/// First line of a share's plaintext.
pub const SHARE_MAGIC: &str = "nrfca share v1";
/// Suffix of a share file name: `NAME.share.age`.
pub const SHARE_SUFFIX: &str = ".share.age";

/// Why a quorum operation was refused. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// M or N outside 2 ≤ M ≤ N ≤ 16.
    #[error("a quorum needs 2 <= M <= N <= {MAX_SHARES}; got M={threshold} with N={count} custodians: change --quorum or the --custodian list")]
    BadThreshold {
        /// M.
        threshold: u8,
        /// N.
        count: usize,
    },
    /// A custodian name is not usable or repeated.
    #[error("custodian `{name}`: {why}")]
    BadCustodian {
        /// The name as given.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Fewer than M distinct shares.
    #[error("{have} of the {need} shares needed were given; also bring a share of: {missing}")]
    TooFew {
        /// Distinct shares given.
        have: usize,
        /// M.
        need: u8,
        /// Custodians of this set whose shares were not given, comma-separated.
        missing: String,
    },
    /// The same custodian's share, or the same share index, twice.
    #[error("share of `{custodian}` given twice (same custodian or share index {index}); give M shares of different custodians")]
    Duplicate {
        /// The custodian named in the repeated share.
        custodian: String,
        /// Its share index.
        index: u8,
    },
    /// A share made for another CA.
    #[error("the share of `{custodian}` belongs to another CA (fingerprint {ca}); give this CA's shares")]
    OtherCa {
        /// Custodian named in the share.
        custodian: String,
        /// The CA fingerprint in the share.
        ca: String,
    },
    /// A share of this CA from another share set (retired by `ca reshare`).
    #[error("the share of `{custodian}` is from share set {set}, not the current set {current} (retired by `ca reshare`); give shares of the current set")]
    OtherSet {
        /// Custodian named in the share.
        custodian: String,
        /// Its set id.
        set: String,
        /// The current set id.
        current: String,
    },
    /// The custodian's passphrase or identity does not open the share file.
    #[error("wrong passphrase or identity for share {share}; ask its custodian to retry")]
    WrongSecret {
        /// The share file (name or path).
        share: String,
    },
    /// The share file is not a readable share.
    #[error("share {share} is not a readable nrfca share: {why}")]
    BadShare {
        /// The share file.
        share: String,
        /// What is wrong.
        why: String,
    },
    /// The shares decrypted but do not rebuild this CA's quorum identity.
    #[error("the shares do not rebuild this CA's key identity (a share is corrupt or forged); try other custodians' shares")]
    DoNotCombine,
    /// The quorum description (`quorum.json`) is unreadable.
    #[error("quorum description unreadable: {0}; restore it from the CA directory's backup")]
    BadManifest(String),
    /// Encrypting or decrypting with age failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl QuorumError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            QuorumError::BadThreshold { .. } => "quorum-bad-threshold",
            QuorumError::BadCustodian { .. } => "quorum-bad-custodian",
            QuorumError::TooFew { .. } => "quorum-too-few-shares",
            QuorumError::Duplicate { .. } => "quorum-duplicate-share",
            QuorumError::OtherCa { .. } => "quorum-share-other-ca",
            QuorumError::OtherSet { .. } => "quorum-share-old-set",
            QuorumError::WrongSecret { .. } => "quorum-wrong-share-secret",
            QuorumError::BadShare { .. } => "quorum-bad-share",
            QuorumError::DoNotCombine => "quorum-shares-do-not-combine",
            QuorumError::BadManifest(_) => "quorum-bad-manifest",
            QuorumError::Secret(_) => "quorum-secret",
        }
    }
}

/// How one custodian's share file is locked.
pub enum ShareLock {
    /// age scrypt passphrase of the custodian.
    Passphrase(SecretString),
    /// age X25519 recipient (`age1...`) of the custodian.
    Recipient(String),
}

impl fmt::Debug for ShareLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareLock::Passphrase(_) => f.write_str("ShareLock::Passphrase(..)"),
            ShareLock::Recipient(r) => write!(f, "ShareLock::Recipient({r})"),
        }
    }
}

/// A custodian of a new share set.
#[derive(Debug)]
pub struct Custodian {
    /// Name (letters, digits, `.`, `_`, `-`; at most [`MAX_NAME`]).
    pub name: String,
    /// How the share file is locked.
    pub lock: ShareLock,
}

/// Split a `--custodian` argument: `NAME` (a passphrase will be asked for) or
/// `NAME=AGE_RECIPIENT`. Checks the name and the recipient's form.
pub fn parse_custodian_arg(arg: &str) -> Result<(String, Option<String>), QuorumError> {
    let (name, recipient) = match arg.split_once('=') {
        Some((n, r)) => (n.trim(), Some(r.trim().to_string())),
        None => (arg.trim(), None),
    };
    check_name(name)?;
    if let Some(r) = &recipient {
        secret::parse_recipients(std::slice::from_ref(r)).map_err(|_| {
            QuorumError::BadCustodian {
                name: name.to_string(),
                why: format!("`{r}` is not an age X25519 recipient (age1...)"),
            }
        })?;
    }
    Ok((name.to_string(), recipient))
}

/// Refuse an unusable custodian name (it becomes a file name).
pub fn check_name(name: &str) -> Result<(), QuorumError> {
    let bad = |why: &str| QuorumError::BadCustodian {
        name: name.to_string(),
        why: why.to_string(),
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("give a name of 1 to 32 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || name.starts_with(['.', '-'])
    {
        return Err(bad(
            "use letters, digits, `.`, `_` and `-` only, not starting with `.` or `-`",
        ));
    }
    Ok(())
}

/// The custodian a share file name announces (`alice.share.age` → `alice`), for the prompt
/// that names the custodian before the share is opened. The share's own content is what
/// counts once it is open.
pub fn custodian_from_file_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(SHARE_SUFFIX)
        .filter(|n| check_name(n).is_ok())
}

/// The non-secret description of the current share set, kept in the CA directory
/// (suggested name `quorum.json`) so `ca show` and `unlock` know M, the custodians and the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumManifest {
    /// Format version (1).
    pub version: u32,
    /// SHA-256 fingerprint (lowercase hex) of the CA certificate the key belongs to.
    pub ca_sha256: String,
    /// Share set id (lowercase hex, 16 bytes); new on every reshare.
    pub set: String,
    /// M.
    pub threshold: u8,
    /// The custodians, in share order (N = its length).
    pub custodians: Vec<String>,
    /// The quorum identity's public key (`age1...`); `ca.key.age` is encrypted to it.
    pub recipient: String,
}

impl QuorumManifest {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parse and check (no I/O).
    pub fn from_json(bytes: &[u8]) -> Result<Self, QuorumError> {
        let m: QuorumManifest =
            serde_json::from_slice(bytes).map_err(|e| QuorumError::BadManifest(e.to_string()))?;
        if m.version != 1 {
            return Err(QuorumError::BadManifest(format!(
                "version {} is not supported",
                m.version
            )));
        }
        check_threshold(m.threshold, m.custodians.len())
            .map_err(|e| QuorumError::BadManifest(e.to_string()))?;
        Ok(m)
    }

    /// The custody this set describes; `participants` are the custodians who opened it.
    pub fn custody(&self, participants: Vec<String>) -> Custody {
        Custody::Quorum {
            threshold: self.threshold,
            custodians: self.custodians.clone(),
            set_id: self.set.clone(),
            participants,
        }
    }
}

fn check_threshold(threshold: u8, count: usize) -> Result<(), QuorumError> {
    if threshold < MIN_SHARES || count < usize::from(threshold) || count > usize::from(MAX_SHARES) {
        return Err(QuorumError::BadThreshold { threshold, count });
    }
    Ok(())
}

/// One encrypted share file to write (mode 0600) as `shares/<file_name>`.
pub struct ShareFile {
    /// The custodian.
    pub custodian: String,
    /// `NAME.share.age`.
    pub file_name: String,
    /// The ASCII-armored age file.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareFile({})", self.file_name)
    }
}

/// A new quorum custody: the key file, its description and the share files.
#[derive(Debug)]
pub struct QuorumSetup {
    /// The new `ca.key.age` (encrypted to the quorum identity).
    pub key_file: Vec<u8>,
    /// The description to keep beside it.
    pub manifest: QuorumManifest,
    /// One share file per custodian, in custodian order.
    pub shares: Vec<ShareFile>,
}

/// Put a CA key (its PKCS#8) under quorum custody: a fresh age X25519 identity encrypts the
/// key; its secret is split into one share per custodian, any `threshold` of which rebuild it.
/// Passphrase-locked shares use scrypt 2^`scrypt_log_n`. Before returning, proves that the
/// identity opens the key file and that the first `threshold` shares rebuild the identity.
pub fn create(
    pkcs8: &[u8],
    ca_sha256: &str,
    threshold: u8,
    custodians: &[Custodian],
    scrypt_log_n: u8,
) -> Result<QuorumSetup, KeyError> {
    check_threshold(threshold, custodians.len())?;
    secret::check_scrypt_log_n(scrypt_log_n)?;
    let mut seen = std::collections::HashSet::new();
    for c in custodians {
        check_name(&c.name)?;
        if !seen.insert(c.name.to_ascii_lowercase()) {
            return Err(QuorumError::BadCustodian {
                name: c.name.clone(),
                why: "named twice; give each custodian once".into(),
            }
            .into());
        }
    }
    let key = CaKey::from_pkcs8(pkcs8)?;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key_file = secret::encrypt(pkcs8, &Protection::Recipients(vec![recipient.clone()]))?;
    // Prove the key file opens to the same key.
    let back = secret::decrypt_with_identities(&key_file, std::slice::from_ref(&identity))?;
    if CaKey::from_pkcs8(&back)?.public_key() != key.public_key() {
        return Err(QuorumError::DoNotCombine.into());
    }

    let id_text: SecretString = identity.to_string();
    let secret_bytes = id_text.expose_secret().as_bytes();
    let raw: Vec<blahaj::Share> = blahaj::Sharks(threshold)
        .dealer(secret_bytes)
        .take(custodians.len())
        .collect();
    // Prove the first M shares rebuild the identity.
    let rebuilt = Zeroizing::new(
        blahaj::Sharks(threshold)
            .recover(raw.iter().take(usize::from(threshold)))
            .map_err(|_| QuorumError::DoNotCombine)?,
    );
    if rebuilt.as_slice() != secret_bytes {
        return Err(QuorumError::DoNotCombine.into());
    }

    let set = hex::encode(crate::crypto::random_bytes::<16>());
    let manifest = QuorumManifest {
        version: 1,
        ca_sha256: ca_sha256.to_ascii_lowercase(),
        set,
        threshold,
        custodians: custodians.iter().map(|c| c.name.clone()).collect(),
        recipient,
    };
    let mut shares = Vec::with_capacity(custodians.len());
    for (c, share) in custodians.iter().zip(raw.iter()) {
        let data = Zeroizing::new(Vec::<u8>::from(share));
        let plain = share_plaintext(&manifest, &c.name, share.x.0, &data);
        let bytes = match &c.lock {
            ShareLock::Passphrase(p) => secret::encrypt_with_log_n(
                plain.as_bytes(),
                &Protection::Passphrase(p.clone()),
                scrypt_log_n,
            )?,
            ShareLock::Recipient(r) => {
                secret::encrypt(plain.as_bytes(), &Protection::Recipients(vec![r.clone()]))?
            }
        };
        shares.push(ShareFile {
            custodian: c.name.clone(),
            file_name: format!("{}{SHARE_SUFFIX}", c.name),
            bytes,
        });
    }
    Ok(QuorumSetup {
        key_file,
        manifest,
        shares,
    })
}

fn share_plaintext(
    m: &QuorumManifest,
    custodian: &str,
    index: u8,
    data: &[u8],
) -> Zeroizing<String> {
    let share = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(data));
    let head = format!(
        "{SHARE_MAGIC}\nca-sha256: {}\nset: {}\ncustodian: {custodian}\nthreshold: {}\nshares: {}\nindex: {index}\nrecipient: {}\nshare: ",
        m.ca_sha256,
        m.set,
        m.threshold,
        m.custodians.len(),
        m.recipient,
    );
    // Sized up front so the buffer holding the share never reallocates (no unwiped copies).
    let mut out = Zeroizing::new(String::with_capacity(head.len() + share.len() + 1));
    out.push_str(&head);
    out.push_str(&share);
    out.push('\n');
    out
}

/// What opens one share file.
pub enum ShareKey<'a> {
    /// The custodian's passphrase.
    Passphrase(SecretString),
    /// The custodian's age identities.
    Identities(&'a [age::x25519::Identity]),
}

/// One opened share. `Debug` shows no share data; the data is wiped on drop.
pub struct OpenedShare {
    /// The custodian named inside the share.
    pub custodian: String,
    /// CA fingerprint inside the share.
    pub ca_sha256: String,
    /// Share set id.
    pub set: String,
    /// M.
    pub threshold: u8,
    /// N.
    pub count: u8,
    /// Share index (the Shamir x coordinate, 1..=N).
    pub index: u8,
    /// The quorum identity's public key.
    pub recipient: String,
    data: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for OpenedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OpenedShare({} #{} of set {})",
            self.custodian, self.index, self.set
        )
    }
}

/// Open one share file (`label` names it in errors, e.g. its path) with its custodian's
/// passphrase or identities, and parse its content.
pub fn open_share(
    label: &str,
    bytes: &[u8],
    key: &ShareKey<'_>,
) -> Result<OpenedShare, QuorumError> {
    let res = match key {
        ShareKey::Passphrase(p) => secret::decrypt(bytes, &secret::Unlock::Passphrase(p.clone())),
        ShareKey::Identities(ids) => secret::decrypt_with_identities(bytes, ids),
    };
    let plain = res.map_err(|e| match e {
        SecretError::WrongSecret(_) => QuorumError::WrongSecret {
            share: label.to_string(),
        },
        other => QuorumError::BadShare {
            share: label.to_string(),
            why: crate::error::error_chain(&other),
        },
    })?;
    parse_share(label, &plain)
}

/// Parse a share's plaintext (no I/O).
pub fn parse_share(label: &str, plain: &[u8]) -> Result<OpenedShare, QuorumError> {
    let bad = |why: &str| QuorumError::BadShare {
        share: label.to_string(),
        why: why.to_string(),
    };
    let text = std::str::from_utf8(plain).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(SHARE_MAGIC) {
        return Err(bad("it does not start with `nrfca share v1`"));
    }
    const KEYS: [&str; 8] = [
        "ca-sha256",
        "set",
        "custodian",
        "threshold",
        "shares",
        "index",
        "recipient",
        "share",
    ];
    let mut vals: Vec<&str> = Vec::with_capacity(KEYS.len());
    for k in KEYS {
        let line = lines
            .next()
            .ok_or_else(|| bad(&format!("`{k}` is missing")))?;
        let v = line
            .strip_prefix(k)
            .and_then(|r| r.strip_prefix(": "))
            .ok_or_else(|| bad(&format!("expected `{k}: ...`")))?;
        vals.push(v);
    }
    if lines.any(|l| !l.is_empty()) {
        return Err(bad("unexpected lines after `share`"));
    }
    let num = |i: usize, what: &str| -> Result<u8, QuorumError> {
        vals.get(i)
            .and_then(|v| v.parse::<u8>().ok())
            .ok_or_else(|| bad(&format!("`{what}` is not a number")))
    };
    let get = |i: usize| vals.get(i).copied().unwrap_or_default().to_string();
    let threshold = num(3, "threshold")?;
    let count = num(4, "shares")?;
    let index = num(5, "index")?;
    check_threshold(threshold, usize::from(count)).map_err(|e| bad(&e.to_string()))?;
    let custodian = get(2);
    check_name(&custodian).map_err(|e| bad(&e.to_string()))?;
    let data = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(vals.get(7).copied().unwrap_or_default())
            .map_err(|_| bad("`share` is not base64"))?,
    );
    if data.len() < 2 || data.first() != Some(&index) || index == 0 || index > count {
        return Err(bad("the share data does not match its index"));
    }
    Ok(OpenedShare {
        custodian,
        ca_sha256: get(0),
        set: get(1),
        threshold,
        count,
        index,
        recipient: get(6),
        data,
    })
}

/// The quorum identity rebuilt from M shares, and who gave them. `Debug` is redacted; the
/// identity's secret is wiped on drop.
pub struct QuorumIdentity {
    identity: age::x25519::Identity,
    participants: Vec<String>,
}

impl fmt::Debug for QuorumIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QuorumIdentity(opened by {})",
            self.participants.join(", ")
        )
    }
}

impl QuorumIdentity {
    /// The custodians whose shares were combined, in the order given.
    pub fn participants(&self) -> &[String] {
        &self.participants
    }

    /// Decrypt the quorum-held key file to the CA's PKCS#8 (zeroizing), e.g. for `ca protect`.
    pub fn open_pkcs8(&self, key_file: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        Ok(secret::decrypt_with_identities(
            key_file,
            std::slice::from_ref(&self.identity),
        )?)
    }

    /// Decrypt the quorum-held key file and load the CA key.
    pub fn open_key(&self, manifest: &QuorumManifest, key_file: &[u8]) -> Result<AgeKey, KeyError> {
        let pkcs8 =
            secret::decrypt_with_identities(key_file, std::slice::from_ref(&self.identity))?;
        let key = CaKey::from_pkcs8(&pkcs8)?;
        Ok(AgeKey::new(
            key,
            manifest.custody(self.participants.clone()),
        ))
    }
}

/// Combine opened shares of the current set described by `manifest`. Refuses, in this order:
/// a share of another CA, a share of another set, the same custodian or index twice, fewer
/// than M shares, shares that do not rebuild the identity `manifest.recipient`.
pub fn combine(
    manifest: &QuorumManifest,
    shares: &[OpenedShare],
) -> Result<QuorumIdentity, QuorumError> {
    let mut custodians = std::collections::HashSet::new();
    let mut indexes = std::collections::HashSet::new();
    for s in shares {
        if !s.ca_sha256.eq_ignore_ascii_case(&manifest.ca_sha256) {
            return Err(QuorumError::OtherCa {
                custodian: s.custodian.clone(),
                ca: s.ca_sha256.clone(),
            });
        }
        if s.set != manifest.set {
            return Err(QuorumError::OtherSet {
                custodian: s.custodian.clone(),
                set: s.set.clone(),
                current: manifest.set.clone(),
            });
        }
        if !custodians.insert(s.custodian.to_ascii_lowercase()) || !indexes.insert(s.index) {
            return Err(QuorumError::Duplicate {
                custodian: s.custodian.clone(),
                index: s.index,
            });
        }
        if s.threshold != manifest.threshold
            || usize::from(s.count) != manifest.custodians.len()
            || s.recipient != manifest.recipient
            || usize::from(s.index)
                .checked_sub(1)
                .and_then(|i| manifest.custodians.get(i))
                != Some(&s.custodian)
        {
            return Err(QuorumError::BadShare {
                share: s.custodian.clone(),
                why: "its threshold, count, index or custodian differ from this CA's share set"
                    .into(),
            });
        }
    }
    if shares.len() < usize::from(manifest.threshold) {
        let missing: Vec<&str> = manifest
            .custodians
            .iter()
            .filter(|c| !custodians.contains(&c.to_ascii_lowercase()))
            .map(String::as_str)
            .collect();
        return Err(QuorumError::TooFew {
            have: shares.len(),
            need: manifest.threshold,
            missing: missing.join(", "),
        });
    }
    let parsed: Vec<blahaj::Share> = shares
        .iter()
        .map(|s| blahaj::Share::try_from(s.data.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| QuorumError::DoNotCombine)?;
    let secret = Zeroizing::new(
        blahaj::Sharks(manifest.threshold)
            .recover(parsed.iter())
            .map_err(|_| QuorumError::DoNotCombine)?,
    );
    let text = std::str::from_utf8(&secret).map_err(|_| QuorumError::DoNotCombine)?;
    let identity: age::x25519::Identity = text.parse().map_err(|_| QuorumError::DoNotCombine)?;
    if identity.to_public().to_string() != manifest.recipient {
        return Err(QuorumError::DoNotCombine);
    }
    Ok(QuorumIdentity {
        identity,
        participants: shares.iter().map(|s| s.custodian.clone()).collect(),
    })
}

/// Unlock a quorum-held CA key: combine the shares, decrypt `key_file`.
pub fn unlock(
    manifest: &QuorumManifest,
    key_file: &[u8],
    shares: &[OpenedShare],
) -> Result<AgeKey, KeyError> {
    combine(manifest, shares)?.open_key(manifest, key_file)
}

/// `ca reshare`: from M shares of the current set, put the same CA key under a new identity
/// split among `custodians` with `threshold`. The old key file and old shares are retired:
/// the old identity opens nothing the new setup writes. The caller replaces `ca.key.age`,
/// `quorum.json` and `shares/` atomically after proving the new files (see [`create`]).
pub fn reshare(
    manifest: &QuorumManifest,
    key_file: &[u8],
    old_shares: &[OpenedShare],
    threshold: u8,
    custodians: &[Custodian],
    scrypt_log_n: u8,
) -> Result<QuorumSetup, KeyError> {
    let id = combine(manifest, old_shares)?;
    let pkcs8 = secret::decrypt_with_identities(key_file, std::slice::from_ref(&id.identity))?;
    create(
        &pkcs8,
        &manifest.ca_sha256,
        threshold,
        custodians,
        scrypt_log_n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{verify_p256_sha256, P256Key};
    use crate::signer::key::CaSigner;

    const LOG_N: u8 = 10; // the lowest accepted: these tests run many scrypt openings
    const CA: &str = "aa11";

    fn pw(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn custodians(names: &[&str]) -> Vec<Custodian> {
        names
            .iter()
            .map(|n| Custodian {
                name: n.to_string(),
                lock: ShareLock::Passphrase(pw(&format!("{n}-pass"))),
            })
            .collect()
    }

    fn open_all(setup: &QuorumSetup) -> Vec<OpenedShare> {
        setup
            .shares
            .iter()
            .map(|f| {
                open_share(
                    &f.file_name,
                    &f.bytes,
                    &ShareKey::Passphrase(pw(&format!("{}-pass", f.custodian))),
                )
                .unwrap()
            })
            .collect()
    }

    fn take(shares: &[OpenedShare], idx: &[usize]) -> Vec<OpenedShare> {
        idx.iter()
            .map(|&i| {
                let s = &shares[i];
                OpenedShare {
                    custodian: s.custodian.clone(),
                    ca_sha256: s.ca_sha256.clone(),
                    set: s.set.clone(),
                    threshold: s.threshold,
                    count: s.count,
                    index: s.index,
                    recipient: s.recipient.clone(),
                    data: s.data.clone(),
                }
            })
            .collect()
    }

    fn new_ca() -> (P256Key, Zeroizing<Vec<u8>>) {
        P256Key::generate().unwrap()
    }

    #[test]
    fn any_m_of_n_unlock_and_sign_and_name_the_participants() {
        let (key, pkcs8) = new_ca();
        let setup = create(
            &pkcs8,
            CA,
            2,
            &custodians(&["alice", "bob", "carol"]),
            LOG_N,
        )
        .unwrap();
        assert_eq!(setup.shares.len(), 3);
        assert_eq!(setup.shares[1].file_name, "bob.share.age");
        assert_eq!(secret::scrypt_log_n(&setup.shares[0].bytes), Some(LOG_N));
        let all = open_all(&setup);
        assert_eq!(all[2].custodian, "carol");
        assert_eq!((all[2].threshold, all[2].count, all[2].index), (2, 3, 3));
        for pick in [[0, 1], [1, 2], [2, 0]] {
            let k = unlock(&setup.manifest, &setup.key_file, &take(&all, &pick)).unwrap();
            assert_eq!(k.public_key(), key.public_key());
            assert!(verify_p256_sha256(
                &key.public_key(),
                b"m",
                &k.sign_der(b"m").unwrap()
            ));
            let Custody::Quorum {
                participants,
                threshold,
                custodians,
                ..
            } = k.custody()
            else {
                panic!("not a quorum custody");
            };
            assert_eq!(threshold, 2);
            assert_eq!(custodians, ["alice", "bob", "carol"]);
            assert_eq!(participants.len(), 2);
            assert_eq!(participants[0], all[pick[0]].custodian);
        }
        // The manifest round-trips through its JSON.
        let back = QuorumManifest::from_json(setup.manifest.to_json().as_bytes()).unwrap();
        assert_eq!(back, setup.manifest);
    }

    #[test]
    fn too_few_shares_name_the_missing_custodians() {
        let (_, pkcs8) = new_ca();
        let setup = create(&pkcs8, CA, 3, &custodians(&["a", "b", "c", "d"]), LOG_N).unwrap();
        let all = open_all(&setup);
        let e = combine(&setup.manifest, &take(&all, &[0, 2])).unwrap_err();
        assert_eq!(e.code(), "quorum-too-few-shares");
        assert!(
            matches!(&e, QuorumError::TooFew { have: 2, need: 3, missing } if missing == "b, d"),
            "{e}"
        );
        let e = combine(&setup.manifest, &[]).unwrap_err();
        assert!(matches!(e, QuorumError::TooFew { have: 0, .. }));
        assert!(combine(&setup.manifest, &take(&all, &[0, 2, 3])).is_ok());
    }

    #[test]
    fn duplicate_shares_are_refused() {
        let (_, pkcs8) = new_ca();
        let setup = create(
            &pkcs8,
            CA,
            2,
            &custodians(&["alice", "bob", "carol"]),
            LOG_N,
        )
        .unwrap();
        let all = open_all(&setup);
        let e = combine(&setup.manifest, &take(&all, &[1, 1])).unwrap_err();
        assert!(
            matches!(&e, QuorumError::Duplicate { custodian, index: 2 } if custodian == "bob"),
            "{e}"
        );
        assert_eq!(e.code(), "quorum-duplicate-share");
        // Same index under another custodian's name (a copied share re-labelled).
        let mut two = take(&all, &[0, 1]);
        two[1].index = two[0].index;
        assert!(matches!(
            combine(&setup.manifest, &two).unwrap_err(),
            QuorumError::Duplicate { .. }
        ));
    }

    #[test]
    fn share_of_another_ca_is_refused() {
        let (_, pkcs8) = new_ca();
        let mine = create(&pkcs8, CA, 2, &custodians(&["alice", "bob"]), LOG_N).unwrap();
        let (_, other_pkcs8) = new_ca();
        let other = create(
            &other_pkcs8,
            "bb22",
            2,
            &custodians(&["alice", "bob"]),
            LOG_N,
        )
        .unwrap();
        let mut shares = open_all(&mine);
        shares.truncate(1);
        shares.extend(take(&open_all(&other), &[1]));
        let e = combine(&mine.manifest, &shares).unwrap_err();
        assert!(
            matches!(&e, QuorumError::OtherCa { ca, .. } if ca == "bb22"),
            "{e}"
        );
        assert_eq!(e.code(), "quorum-share-other-ca");
    }

    #[test]
    fn wrong_custodian_passphrase_and_garbage_are_refused() {
        let (_, pkcs8) = new_ca();
        let setup = create(&pkcs8, CA, 2, &custodians(&["alice", "bob"]), LOG_N).unwrap();
        let f = &setup.shares[0];
        let e = open_share(
            "alice.share.age",
            &f.bytes,
            &ShareKey::Passphrase(pw("bob-pass")),
        )
        .unwrap_err();
        assert!(matches!(&e, QuorumError::WrongSecret { share } if share == "alice.share.age"));
        assert_eq!(e.code(), "quorum-wrong-share-secret");
        let e = open_share("x", b"not an age file", &ShareKey::Passphrase(pw("p"))).unwrap_err();
        assert_eq!(e.code(), "quorum-bad-share");
        // A share plaintext with a field missing.
        let e = parse_share("x", b"nrfca share v1\nca-sha256: aa\n").unwrap_err();
        assert_eq!(e.code(), "quorum-bad-share");
    }

    #[test]
    fn recipient_locked_share_opens_with_the_custodian_identity_only() {
        let (_, pkcs8) = new_ca();
        let carol = age::x25519::Identity::generate();
        let mut cs = custodians(&["alice", "bob"]);
        let (name, r) = parse_custodian_arg(&format!("carol={}", carol.to_public())).unwrap();
        cs.push(Custodian {
            name,
            lock: ShareLock::Recipient(r.unwrap()),
        });
        let setup = create(&pkcs8, CA, 2, &cs, LOG_N).unwrap();
        let f = &setup.shares[2];
        let s = open_share(
            &f.file_name,
            &f.bytes,
            &ShareKey::Identities(std::slice::from_ref(&carol)),
        )
        .unwrap();
        assert_eq!(s.custodian, "carol");
        let stranger = age::x25519::Identity::generate();
        assert!(matches!(
            open_share(
                &f.file_name,
                &f.bytes,
                &ShareKey::Identities(std::slice::from_ref(&stranger))
            ),
            Err(QuorumError::WrongSecret { .. })
        ));
        let a = open_all_passphrase_only(&setup, "alice");
        assert!(unlock(&setup.manifest, &setup.key_file, &[a, s]).is_ok());
    }

    fn open_all_passphrase_only(setup: &QuorumSetup, who: &str) -> OpenedShare {
        let f = setup.shares.iter().find(|f| f.custodian == who).unwrap();
        open_share(
            &f.file_name,
            &f.bytes,
            &ShareKey::Passphrase(pw(&format!("{who}-pass"))),
        )
        .unwrap()
    }

    #[test]
    fn reshare_retires_the_old_set() {
        let (key, pkcs8) = new_ca();
        let old = create(
            &pkcs8,
            CA,
            2,
            &custodians(&["alice", "bob", "carol"]),
            LOG_N,
        )
        .unwrap();
        let old_open = open_all(&old);
        let new = reshare(
            &old.manifest,
            &old.key_file,
            &take(&old_open, &[0, 2]),
            3,
            &custodians(&["dave", "erin", "frank", "gina"]),
            LOG_N,
        )
        .unwrap();
        assert_ne!(new.manifest.set, old.manifest.set);
        assert_ne!(new.manifest.recipient, old.manifest.recipient);
        assert_eq!(new.manifest.threshold, 3);
        let new_open = open_all(&new);
        // M shares of the new set open the key.
        let k = unlock(&new.manifest, &new.key_file, &take(&new_open, &[1, 2, 3])).unwrap();
        assert_eq!(k.public_key(), key.public_key());
        // The old set is refused against the new set ...
        let e = combine(&new.manifest, &take(&old_open, &[0, 1, 2])).unwrap_err();
        assert!(matches!(e, QuorumError::OtherSet { .. }), "{e}");
        assert_eq!(e.code(), "quorum-share-old-set");
        // ... and even rebuilt by hand the old identity does not open the new key file.
        let old_id = combine(&old.manifest, &take(&old_open, &[0, 1])).unwrap();
        assert!(old_id.open_key(&old.manifest, &new.key_file).is_err());
        // Mixing sets is refused too.
        let mut mixed = take(&new_open, &[0, 1]);
        mixed.extend(take(&old_open, &[0]));
        assert!(matches!(
            combine(&new.manifest, &mixed).unwrap_err(),
            QuorumError::OtherSet { .. }
        ));
        // Reshare needs M good shares of the current set.
        assert!(matches!(
            reshare(
                &new.manifest,
                &new.key_file,
                &take(&new_open, &[0, 1]),
                2,
                &custodians(&["x", "y"]),
                LOG_N
            ),
            Err(KeyError::Quorum(QuorumError::TooFew { .. }))
        ));
    }

    #[test]
    fn forged_share_data_does_not_combine() {
        let (_, pkcs8) = new_ca();
        let setup = create(&pkcs8, CA, 2, &custodians(&["alice", "bob"]), LOG_N).unwrap();
        let mut two = open_all(&setup);
        if let Some(b) = two[1].data.get_mut(5) {
            *b ^= 0x55;
        }
        let e = combine(&setup.manifest, &two).unwrap_err();
        assert_eq!(e.code(), "quorum-shares-do-not-combine");
        // A share whose index was tampered with after opening: refused, no panic.
        let mut two = open_all(&setup);
        two[0].index = 0;
        assert_eq!(
            combine(&setup.manifest, &two).unwrap_err().code(),
            "quorum-bad-share"
        );
        // A share claiming another custodian's slot in the set.
        let mut two = open_all(&setup);
        two[0].custodian = "mallory".into();
        assert_eq!(
            combine(&setup.manifest, &two).unwrap_err().code(),
            "quorum-bad-share"
        );
    }

    #[test]
    fn thresholds_and_names_are_checked() {
        let (_, pkcs8) = new_ca();
        for (m, names) in [(1u8, vec!["a", "b"]), (3, vec!["a", "b"]), (2, vec!["a"])] {
            let e = create(&pkcs8, CA, m, &custodians(&names), LOG_N).unwrap_err();
            assert_eq!(e.code(), "quorum-bad-threshold", "M={m} N={}", names.len());
        }
        let seventeen: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = seventeen.iter().map(String::as_str).collect();
        assert_eq!(
            create(&pkcs8, CA, 2, &custodians(&refs), LOG_N)
                .unwrap_err()
                .code(),
            "quorum-bad-threshold"
        );
        assert_eq!(
            create(&pkcs8, CA, 2, &custodians(&["al", "AL"]), LOG_N)
                .unwrap_err()
                .code(),
            "quorum-bad-custodian"
        );
        for bad in ["", "../x", "-a", "a b", "a/b", &"x".repeat(33)] {
            assert!(parse_custodian_arg(bad).is_err(), "{bad:?}");
        }
        assert!(parse_custodian_arg("alice=age1nope").is_err());
        assert_eq!(
            parse_custodian_arg("alice").unwrap(),
            ("alice".into(), None)
        );
        assert_eq!(custodian_from_file_name("bob.share.age"), Some("bob"));
        assert_eq!(custodian_from_file_name("bob.age"), None);
        assert!(QuorumManifest::from_json(b"{}").is_err());
    }
}
