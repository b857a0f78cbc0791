//! [`CaSigner`](super::CaSigner) for a CA key held in a PKCS#11 token (an HSM, a smart card, SoftHSM2), with
//! the `cryptoki` crate: load a module, find the token (by label or serial, or the only
//! initialised one), log in with a PIN, generate a P-256 key pair in the token or import an
//! existing PKCS#8 key into it — always `CKA_SENSITIVE` and not `CKA_EXTRACTABLE` — and sign
//! (SHA-256 on the host, `CKM_ECDSA` in the token, raw `r || s` turned into DER). Also the
//! RFC 7512 URI that names the key in `ca.key.pkcs11` (format and parse, no I/O) and the choice
//! of where the PIN comes from (no prompting here).
//!
//! A token serialises the operations of one session, so each worker thread gets its own
//! session through [`CaSigner::worker`](super::CaSigner::worker). Module contexts are loaded and initialised once per
//! process and never finalised (finalising would log out every other user of the module).

mod keys;
mod session;
mod signer;
mod uri;

pub use session::{
    find_token, module, pin_source, read_pin_file, PinSource, TokenDesc, TokenSelector,
};
pub use uri::KeyUri;

use crate::signer::secret;
use cryptoki::context::Pkcs11;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

/// A token PIN (a `secrecy` secret string: never printed, wiped on drop).
pub type Pin = cryptoki::types::AuthPin;

/// The environment variable a PIN may come from.
pub const PIN_ENV: &str = "NRFCA_PKCS11_PIN";

/// File name of the key reference in the CA directory.
pub const KEY_REF_FILE: &str = "ca.key.pkcs11";

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the value of `CKA_EC_PARAMS`.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Why a PKCS#11 operation failed. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The module file does not exist.
    #[error("PKCS#11 module {module} not found; give the path of the vendor's module (e.g. /usr/lib/softhsm/libsofthsm2.so, yubihsm_pkcs11.so, opensc-pkcs11.so) with --pkcs11")]
    ModuleMissing {
        /// The path given.
        module: PathBuf,
    },
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {module} cannot be loaded ({why}); check it is a PKCS#11 module for this machine and that its configuration is in place")]
    ModuleLoad {
        /// The module.
        module: PathBuf,
        /// What the loader or C_Initialize said.
        why: String,
    },
    /// No initialised token matches.
    #[error("no initialised PKCS#11 token {wanted} in {module} (tokens seen: {seen}); plug the token in, or give --token-label")]
    TokenNotFound {
        /// The module.
        module: PathBuf,
        /// What was looked for.
        wanted: String,
        /// Labels of the initialised tokens seen.
        seen: String,
    },
    /// Several tokens and nothing to choose one.
    #[error("{module} has several initialised tokens ({seen}); choose one with --token-label")]
    AmbiguousToken {
        /// The module.
        module: PathBuf,
        /// Their labels.
        seen: String,
    },
    /// The token refused the PIN.
    #[error("wrong PIN for token \"{token}\"{}; check --pin-file / NRFCA_PKCS11_PIN and retry", tries.hint())]
    WrongPin {
        /// Token label.
        token: String,
        /// What the token says about the tries left.
        tries: PinTries,
    },
    /// The user PIN is locked.
    #[error("the user PIN of token \"{token}\" is locked after too many wrong PINs; unlock it with the security officer PIN (the token vendor's tool) before retrying")]
    PinLocked {
        /// Token label.
        token: String,
    },
    /// No key with the recorded id in the token.
    #[error("token \"{token}\" has no private key with id {id}; is this the CA's token? (check {KEY_REF_FILE})")]
    KeyNotFound {
        /// Token label.
        token: String,
        /// CKA_ID, hex.
        id: String,
    },
    /// The token or its key went away (removed, session closed, device error, key deleted).
    #[error("the PKCS#11 token \"{token}\" or its key went away during {op} ({why}); reconnect the token and rerun: nothing was issued from the interrupted batch")]
    TokenGone {
        /// Token label.
        token: String,
        /// What was being done.
        op: &'static str,
        /// The PKCS#11 return value.
        why: String,
    },
    /// The module returned an error.
    #[error("PKCS#11 {op} failed on token \"{token}\": {why}")]
    Module {
        /// Token label (or the module when no token yet).
        token: String,
        /// What was being done.
        op: &'static str,
        /// The error.
        why: String,
    },
    /// A key to import is not a P-256 PKCS#8, or the token's key is not P-256.
    #[error("{0}; only EC P-256 keys are supported")]
    BadKey(String),
    /// A `pkcs11:` URI could not be read.
    #[error("bad PKCS#11 URI: {0}; expected pkcs11:token=...;serial=...;id=%..;type=private?module-path=...")]
    BadUri(String),
    /// No PIN source.
    #[error(
        "no PKCS#11 PIN: give --pin-file F, set NRFCA_PKCS11_PIN, or run on a terminal to be asked"
    )]
    NoPin,
    /// The PIN file cannot be used.
    #[error(transparent)]
    PinFile(#[from] secret::SecretError),
}

impl Pkcs11Error {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Pkcs11Error::ModuleMissing { .. } => "pkcs11-module-missing",
            Pkcs11Error::ModuleLoad { .. } => "pkcs11-module-unloadable",
            Pkcs11Error::TokenNotFound { .. } => "pkcs11-token-not-found",
            Pkcs11Error::AmbiguousToken { .. } => "pkcs11-token-ambiguous",
            Pkcs11Error::WrongPin { .. } => "pkcs11-wrong-pin",
            Pkcs11Error::PinLocked { .. } => "pkcs11-pin-locked",
            Pkcs11Error::KeyNotFound { .. } => "pkcs11-key-not-found",
            Pkcs11Error::TokenGone { .. } => "pkcs11-token-gone",
            Pkcs11Error::Module { .. } => "pkcs11-module-error",
            Pkcs11Error::BadKey(_) => "pkcs11-bad-key",
            Pkcs11Error::BadUri(_) => "pkcs11-bad-uri",
            Pkcs11Error::NoPin => "pkcs11-no-pin",
            Pkcs11Error::PinFile(_) => "pkcs11-pin-file",
        }
    }
}

/// What a token says about the user PIN's remaining tries (its `CKF_USER_PIN_*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinTries {
    /// The token does not say.
    Unknown,
    /// `CKF_USER_PIN_COUNT_LOW`: a wrong PIN was entered since the last success.
    Low,
    /// `CKF_USER_PIN_FINAL_TRY`: one more wrong PIN locks it.
    FinalTry,
}

impl PinTries {
    fn hint(&self) -> &'static str {
        match self {
            PinTries::Unknown => "",
            PinTries::Low => " (the token reports few tries left)",
            PinTries::FinalTry => " (the token reports ONE try left: the next wrong PIN locks it)",
        }
    }
}

/// The protection attributes of the key as the token reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttributes {
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
    /// CKA_TOKEN (persistent).
    pub token: bool,
    /// CKA_PRIVATE (needs login).
    pub private: bool,
}

/// A CA key in a PKCS#11 token, logged in, with one session of its own (for
/// [`CaSigner::sign_der`](super::CaSigner::sign_der) on the caller's thread); workers get their own sessions.
pub struct Pkcs11Key {
    ctx: Pkcs11,
    slot: Slot,
    module_path: PathBuf,
    token: TokenDesc,
    uri: KeyUri,
    public: [u8; 65],
    session: Mutex<(Session, ObjectHandle)>,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Key({})", self.uri.format())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_tries_hint_says_what_the_token_reports() {
        let e = |tries| {
            Pkcs11Error::WrongPin {
                token: "t".into(),
                tries,
            }
            .to_string()
        };
        assert!(!e(PinTries::Unknown).contains("left"));
        assert!(e(PinTries::Low).contains("few tries left"));
        assert!(e(PinTries::FinalTry).contains("ONE try left"));
    }
}
