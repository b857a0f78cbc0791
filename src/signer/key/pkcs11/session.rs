//! Reaching the key's token: where the PIN comes from, loading the module once per process,
//! finding the token, logging in, opening sessions and finding objects in them.

use super::{Pin, PinTries, Pkcs11Error};
use crate::signer::secret;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `--pin-file F`: its first line.
    File(PathBuf),
    /// [`PIN_ENV`](super::PIN_ENV).
    Env,
    /// A prompt on the terminal (done by the CLI).
    Prompt,
}

/// Choose the PIN source: `--pin-file`, else [`PIN_ENV`](super::PIN_ENV) (when set and not empty), else a
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

pub(super) fn module_err<'a>(
    token: &'a str,
    op: &'static str,
) -> impl FnOnce(CkError) -> Pkcs11Error + 'a {
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
pub(super) fn login(
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

pub(super) fn open_session(
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

pub(super) fn find_one(
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

#[cfg(test)]
mod tests {
    use super::*;

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
