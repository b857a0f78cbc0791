//! [`CaSigner`] for a CA key held in a PKCS#11 token (an HSM, a smart card, SoftHSM2), with
//! the `cryptoki` crate: load a module, find the token (by label or serial, or the only
//! initialised one), log in with a PIN, generate a P-256 key pair in the token or import an
//! existing PKCS#8 key into it — always `CKA_SENSITIVE` and not `CKA_EXTRACTABLE` — and sign
//! (SHA-256 on the host, `CKM_ECDSA` in the token, raw `r || s` turned into DER). Also the
//! RFC 7512 URI that names the key in `ca.key.pkcs11` (format and parse, no I/O) and the choice
//! of where the PIN comes from (no prompting here).
//!
//! A token serialises the operations of one session, so each worker thread gets its own
//! session through [`CaSigner::worker`]. Module contexts are loaded and initialised once per
//! process and never finalised (finalising would log out every other user of the module).

use super::{raw_signature_to_der, CaSigner, Custody, KeyError};
use crate::signer::secret;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

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

/// Where the PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `--pin-file F`: its first line.
    File(PathBuf),
    /// [`PIN_ENV`].
    Env,
    /// A prompt on the terminal (done by the CLI).
    Prompt,
}

/// Choose the PIN source: `--pin-file`, else [`PIN_ENV`] (when set and not empty), else a
/// prompt when stdin is a terminal; otherwise [`Pkcs11Error::NoPin`].
pub fn pin_source(
    pin_file: Option<&Path>,
    env_value: Option<&str>,
    stdin_is_terminal: bool,
) -> Result<PinSource, Pkcs11Error> {
    if let Some(f) = pin_file {
        return Ok(PinSource::File(f.to_path_buf()));
    }
    if env_value.is_some_and(|v| !v.is_empty()) {
        return Ok(PinSource::Env);
    }
    if stdin_is_terminal {
        return Ok(PinSource::Prompt);
    }
    Err(Pkcs11Error::NoPin)
}

/// Read a PIN file: its first line (mode must not allow group/world access).
pub fn read_pin_file(path: &Path) -> Result<Pin, Pkcs11Error> {
    let s = secret::read_passphrase_file(path)?;
    use age::secrecy::ExposeSecret;
    Ok(Pin::from(s.expose_secret().to_string()))
}

/// The RFC 7512 reference to the CA's private key, with the module path as the
/// `module-path` query attribute: one line in `ca.key.pkcs11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUri {
    /// Token label (`token=`).
    pub token: Option<String>,
    /// Token serial (`serial=`).
    pub serial: Option<String>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
    /// CKA_ID (`id=`).
    pub id: Vec<u8>,
    /// CKA_LABEL (`object=`).
    pub object: Option<String>,
    /// The PKCS#11 module (`?module-path=`).
    pub module_path: Option<PathBuf>,
}

/// Characters left as they are in URI attribute values (RFC 3986 unreserved, plus the
/// characters RFC 7512's `pk11-pchar`/`pk11-qchar` allow that are harmless in both).
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'@' | b':')
}

fn pct(value: &[u8], all: bool) -> String {
    let mut s = String::with_capacity(value.len() * 3);
    for &b in value {
        if !all && keep(b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn unpct(v: &str) -> Result<Vec<u8>, Pkcs11Error> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Pkcs11Error::BadUri(format!("bad percent escape in `{v}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

fn unpct_text(v: &str) -> Result<String, Pkcs11Error> {
    String::from_utf8(unpct(v)?).map_err(|_| Pkcs11Error::BadUri(format!("`{v}` is not UTF-8")))
}

impl KeyUri {
    /// `pkcs11:token=…;serial=…;id=%..;object=…;type=private?module-path=…` (the id always
    /// percent-encoded byte by byte, other values where needed).
    pub fn format(&self) -> String {
        let text = |k: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| format!("{k}={}", pct(v.as_bytes(), false)))
        };
        let parts: Vec<String> = [
            text("token", &self.token),
            text("manufacturer", &self.manufacturer),
            text("model", &self.model),
            text("serial", &self.serial),
            Some(format!("id={}", pct(&self.id, true))),
            text("object", &self.object),
            Some("type=private".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut s = format!("pkcs11:{}", parts.join(";"));
        if let Some(m) = &self.module_path {
            s.push_str("?module-path=");
            s.push_str(&pct(m.as_os_str().as_encoded_bytes(), false));
        }
        s
    }

    /// Parse a URI as written by [`KeyUri::format`] (or by other RFC 7512 tools). Needs an
    /// `id`; `type`, if present, must be `private`; a PIN in the URI (`pin-value`,
    /// `pin-source`) is refused; other attributes are ignored.
    pub fn parse(uri: &str) -> Result<Self, Pkcs11Error> {
        let uri = uri.trim();
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Pkcs11Error::BadUri("it does not start with `pkcs11:`".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut k = KeyUri {
            token: None,
            serial: None,
            manufacturer: None,
            model: None,
            id: Vec::new(),
            object: None,
            module_path: None,
        };
        let mut have_id = false;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Pkcs11Error::BadUri(format!("`{attr}` has no `=`")))?;
            match name {
                "token" => k.token = Some(unpct_text(value)?),
                "serial" => k.serial = Some(unpct_text(value)?),
                "manufacturer" => k.manufacturer = Some(unpct_text(value)?),
                "model" => k.model = Some(unpct_text(value)?),
                "object" => k.object = Some(unpct_text(value)?),
                "id" => {
                    k.id = unpct(value)?;
                    have_id = true;
                }
                "type" if value != "private" => {
                    return Err(Pkcs11Error::BadUri(format!(
                        "type={value}: the URI must name the private key"
                    )))
                }
                _ => {}
            }
        }
        for attr in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            match name {
                "module-path" => {
                    let bytes = unpct(value)?;
                    k.module_path =
                        Some(PathBuf::from(String::from_utf8(bytes).map_err(|_| {
                            Pkcs11Error::BadUri("module-path is not UTF-8".into())
                        })?));
                }
                "pin-value" | "pin-source" => return Err(Pkcs11Error::BadUri(
                    "a PIN in the URI is not accepted; give it with --pin-file or NRFCA_PKCS11_PIN"
                        .into(),
                )),
                _ => {}
            }
        }
        if !have_id || k.id.is_empty() {
            return Err(Pkcs11Error::BadUri("it has no `id=` of the key".into()));
        }
        Ok(k)
    }
}

/// The token a key lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDesc {
    /// Label (trailing blanks removed).
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
}

/// Which token to use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// Token label (`--token-label`).
    pub label: Option<String>,
    /// Token serial.
    pub serial: Option<String>,
}

/// The module's process-wide context: loaded and `C_Initialize`d once, never finalised.
pub fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    if !path.exists() {
        return Err(Pkcs11Error::ModuleMissing {
            module: path.to_path_buf(),
        });
    }
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut map = CONTEXTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&canon) {
        return Ok(ctx.clone());
    }
    let load = |why: String| Pkcs11Error::ModuleLoad {
        module: path.to_path_buf(),
        why,
    };
    let ctx = Pkcs11::new(&canon).map_err(|e| load(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load(e.to_string())),
    }
    map.insert(canon, ctx.clone());
    Ok(ctx)
}

fn module_err<'a>(token: &'a str, op: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error + 'a {
    move |e| match e {
        CkError::Pkcs11(
            rv @ (RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceError
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid),
            _,
        ) => Pkcs11Error::TokenGone {
            token: token.to_string(),
            op,
            why: rv.to_string(),
        },
        other => Pkcs11Error::Module {
            token: token.to_string(),
            op,
            why: other.to_string(),
        },
    }
}

/// Find the initialised token matching `sel` (by serial, then label); with neither, the only
/// initialised token.
pub fn find_token(
    ctx: &Pkcs11,
    module_path: &Path,
    sel: &TokenSelector,
) -> Result<(Slot, TokenDesc), Pkcs11Error> {
    let mname = module_path.display().to_string();
    let slots = ctx
        .get_slots_with_token()
        .map_err(module_err(&mname, "listing slots"))?;
    let mut found = Vec::new();
    for slot in slots {
        // A slot whose token cannot be read (being removed, broken) does not hide the others.
        let info = match ctx.get_token_info(slot) {
            Ok(i) if i.token_initialized() => i,
            _ => continue,
        };
        found.push((
            slot,
            TokenDesc {
                label: info.label().trim_end().to_string(),
                serial: info.serial_number().trim_end().to_string(),
                manufacturer: info.manufacturer_id().trim_end().to_string(),
                model: info.model().trim_end().to_string(),
            },
        ));
    }
    let seen = found
        .iter()
        .map(|(_, t)| format!("\"{}\" serial {}", t.label, t.serial))
        .collect::<Vec<_>>()
        .join(", ");
    let matching: Vec<&(Slot, TokenDesc)> = found
        .iter()
        .filter(|(_, t)| {
            sel.label.as_ref().map_or(true, |l| *l == t.label)
                && sel.serial.as_ref().map_or(true, |s| *s == t.serial)
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok((one.0, one.1.clone())),
        [] => Err(Pkcs11Error::TokenNotFound {
            module: module_path.to_path_buf(),
            wanted: match (&sel.label, &sel.serial) {
                (Some(l), Some(s)) => format!("labelled \"{l}\" with serial {s}"),
                (Some(l), None) => format!("labelled \"{l}\""),
                (None, Some(s)) => format!("with serial {s}"),
                (None, None) => String::new(),
            },
            seen: if seen.is_empty() { "none".into() } else { seen },
        }),
        _ => Err(Pkcs11Error::AmbiguousToken {
            module: module_path.to_path_buf(),
            seen,
        }),
    }
}

/// Log the user in on `session`; a wrong PIN reports the token's remaining-tries flags.
/// Already logged in (another session of this process) counts as success.
fn login(
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    token: &TokenDesc,
    pin: &Pin,
) -> Result<(), Pkcs11Error> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            let info = ctx.get_token_info(slot).ok();
            if info.as_ref().is_some_and(|i| i.user_pin_locked()) {
                return Err(Pkcs11Error::PinLocked {
                    token: token.label.clone(),
                });
            }
            let tries = match info {
                Some(i) if i.user_pin_final_try() => PinTries::FinalTry,
                Some(i) if i.user_pin_count_low() => PinTries::Low,
                _ => PinTries::Unknown,
            };
            Err(Pkcs11Error::WrongPin {
                token: token.label.clone(),
                tries,
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
            token: token.label.clone(),
        }),
        Err(e) => Err(module_err(&token.label, "login")(e)),
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
/// [`CaSigner::sign_der`] on the caller's thread); workers get their own sessions.
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

fn open_session(
    ctx: &Pkcs11,
    slot: Slot,
    token: &TokenDesc,
    rw: bool,
) -> Result<Session, Pkcs11Error> {
    let s = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    };
    s.map_err(module_err(&token.label, "opening a session"))
}

fn find_one(
    session: &Session,
    token: &TokenDesc,
    class: ObjectClass,
    id: &[u8],
) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .map_err(module_err(&token.label, "finding the key"))?;
    Ok(found.into_iter().next())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips_with_escaping() {
        let k = KeyUri {
            token: Some("CA token; #1 ?%".into()),
            serial: Some("a1b2c3".into()),
            manufacturer: None,
            model: None,
            id: vec![0x00, 0xab, 0x7f],
            object: Some("nrfca CA/2026".into()),
            module_path: Some(PathBuf::from("/opt/my hsm/lib;x.so")),
        };
        let s = k.format();
        assert_eq!(
            s,
            "pkcs11:token=CA%20token%3B%20%231%20%3F%25;serial=a1b2c3;id=%00%AB%7F;object=nrfca%20CA/2026;type=private?module-path=/opt/my%20hsm/lib%3Bx.so"
        );
        assert_eq!(KeyUri::parse(&s).unwrap(), k);
        // Lowercase escapes and unknown attributes from other tools are fine.
        let other =
            KeyUri::parse("pkcs11:token=t;id=%0a;library-version=1?module-path=/m.so&x=y").unwrap();
        assert_eq!(other.id, vec![0x0a]);
        assert_eq!(other.module_path, Some(PathBuf::from("/m.so")));
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for bad in [
            "pkcs12:id=%01",
            "pkcs11:token=t",
            "pkcs11:id=%zz",
            "pkcs11:id=%0",
            "pkcs11:id=%01;type=public",
            "pkcs11:id=%01?pin-value=1234",
            "pkcs11:id",
        ] {
            let e = KeyUri::parse(bad).unwrap_err();
            assert_eq!(e.code(), "pkcs11-bad-uri", "{bad}");
        }
    }

    #[test]
    fn pin_source_order() {
        let f = Path::new("pin.txt");
        assert_eq!(
            pin_source(Some(f), Some("1234"), true).unwrap(),
            PinSource::File(f.to_path_buf())
        );
        assert_eq!(
            pin_source(None, Some("1234"), true).unwrap(),
            PinSource::Env
        );
        assert_eq!(pin_source(None, Some(""), true).unwrap(), PinSource::Prompt);
        assert_eq!(pin_source(None, None, true).unwrap(), PinSource::Prompt);
        assert_eq!(
            pin_source(None, None, false).unwrap_err().code(),
            "pkcs11-no-pin"
        );
    }

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

    #[test]
    fn token_errors_map_to_gone_or_module_error() {
        use cryptoki::context::Function;
        for rv in [
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::DeviceError,
            RvError::KeyHandleInvalid,
            RvError::ObjectHandleInvalid,
        ] {
            let e = module_err("ca", "signing")(CkError::Pkcs11(rv, Function::Sign));
            assert_eq!(e.code(), "pkcs11-token-gone", "{rv:?}");
            assert!(e.to_string().contains("reconnect the token"), "{e}");
        }
        let e =
            module_err("ca", "signing")(CkError::Pkcs11(RvError::FunctionFailed, Function::Sign));
        assert_eq!(e.code(), "pkcs11-module-error");
        assert!(
            e.to_string().contains("signing failed on token \"ca\""),
            "{e}"
        );
    }

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

    #[test]
    fn missing_module_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = module(&dir.path().join("nope.so")).unwrap_err();
        assert_eq!(e.code(), "pkcs11-module-missing");
        let not_a_lib = dir.path().join("fake.so");
        std::fs::write(&not_a_lib, b"not an ELF").unwrap();
        let e = module(&not_a_lib).unwrap_err();
        assert_eq!(e.code(), "pkcs11-module-unloadable");
    }
}
