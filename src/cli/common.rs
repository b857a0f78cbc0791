//! What every subcommand shares: the outcome type, error printing and exit codes, unlock /
//! passphrase resolution and the operator name.

use age::secrecy::{ExposeSecret, SecretString};
use nrfca::signer::secret::{self, Unlock};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How a command ended when it could run: everything done, or done with some requests
/// rejected / devices failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 1: ran to the end but something was rejected or failed (already listed).
    Partial,
}

/// A command that could not run (exit 2). The message says what to do next.
pub type CliResult = Result<Outcome, Box<dyn std::error::Error>>;

/// Print the error chain and pick the exit code.
pub fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(Outcome::Done) => ExitCode::from(0),
        Ok(Outcome::Partial) => ExitCode::from(1),
        Err(e) => {
            say_raw!(
                "{}{}",
                error_text(e.as_ref()),
                wrong_secret_note(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

/// Write a message to stderr (what [`say!`] and [`say_raw!`] expand to). Errors are
/// ignored: a closed stderr (`2>&1 | true`, a terminal that went away) must neither panic
/// nor change what the command does or its exit code.
pub fn stderr_write(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// Whether `e` (anywhere in its chain) is a write to a closed pipe.
#[cfg(feature = "bench")]
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The text printed for an error that stopped a command: `error: <message>: <cause>: …` on
/// one line ([`nrfca::error_chain`]: each layer says its own sentence, the causes follow).
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    format!("error: {}\n", nrfca::error_chain(e))
}

// ------------------------------------------------------------------ secrets and operator

/// Environment variable holding the CA passphrase (after `--passphrase-file`, before the prompt).
pub const PASSPHRASE_ENV: &str = "NRFCA_PASSPHRASE";

/// How to unlock the CA key and who is operating; `sign` and other key-using commands
/// flatten this.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UnlockArgs {
    /// File whose first line is the CA passphrase (else $NRFCA_PASSPHRASE, else a prompt on
    /// a terminal).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// age identity file (AGE-SECRET-KEY-1...) for a CA created with --recipient.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
    pub identity: Option<PathBuf>,
    /// A custodian's share file (NAME.share.age) of a quorum-held key; give it once per
    /// custodian taking part (M times). Each is opened with its custodian's passphrase (asked
    /// naming the custodian, or --share-passphrase-file) or --share-identity.
    #[arg(long, value_name = "FILE")]
    pub share: Vec<PathBuf>,
    /// NAME=FILE: the first line of FILE is custodian NAME's share passphrase (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    pub share_passphrase_file: Vec<String>,
    /// NAME=FILE: custodian NAME's age identity file opens their share (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    pub share_identity: Vec<String>,
    /// File whose first line is the user PIN of the CA's PKCS#11 token (else
    /// $NRFCA_PKCS11_PIN, else a prompt on a terminal).
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
}

impl UnlockArgs {
    /// Resolve the unlock secret (see [`resolve_unlock`]).
    pub fn unlock(&self) -> Result<Unlock, Box<dyn std::error::Error>> {
        resolve_unlock(self.passphrase_file.as_deref(), self.identity.as_deref())
    }

    /// Resolve the unlock secret for the CA in `ca_dir`: as [`UnlockArgs::unlock`], except
    /// that when no secret was given at all, a CA whose key is encrypted to age identities
    /// asks for `--identity` (instead of prompting for a passphrase it could never use).
    pub fn unlock_for(&self, ca_dir: &Path) -> Result<Unlock, Box<dyn std::error::Error>> {
        match nrfca::signer::ca::key_kind(ca_dir) {
            nrfca::signer::ca::KeyKind::Pkcs11 => {
                return Ok(Unlock::Pin(resolve_pin(
                    self.pin_file.as_deref(),
                    "user PIN of the CA's PKCS#11 token: ",
                )?))
            }
            nrfca::signer::ca::KeyKind::Quorum => {
                return resolve_shares(
                    &self.share,
                    &self.share_passphrase_file,
                    &self.share_identity,
                )
            }
            nrfca::signer::ca::KeyKind::Age => {}
        }
        // Only where nothing was given: a passphrase that was given is tried (and a failure
        // recorded in the audit log as `unlock-failed`), prompting for one is pointless.
        let env_set = std::env::var_os(PASSPHRASE_ENV).is_some_and(|v| !v.is_empty());
        if self.identity.is_none() && self.passphrase_file.is_none() && !env_set {
            let key = ca_dir.join(nrfca::signer::ca::CA_KEY);
            if let Ok(secret::FileProtection::Recipients) =
                secret::read_limited(&key).and_then(|ct| secret::file_protection(&ct))
            {
                return Err(format!(
                    "the key of this CA is encrypted to age identities, not a passphrase: give \
                     --identity FILE (the identity file of one of the recipients `nrfca ca show \
                     --ca-dir {}` lists)",
                    ca_dir.display()
                )
                .into());
            }
        }
        self.unlock()
    }

    /// The operator name (see [`operator`]).
    pub fn operator(&self) -> String {
        operator(self.operator.clone())
    }
}

/// Where the passphrase of this run came from, and whether it starts or ends with
/// whitespace (never the passphrase itself): for the note under a wrong-passphrase error.
static PASSPHRASE_SOURCE: std::sync::Mutex<Option<(String, bool)>> = std::sync::Mutex::new(None);

fn note_source(source: String, passphrase: &SecretString) {
    let p = passphrase.expose_secret();
    let padded = p.trim() != p;
    if let Ok(mut s) = PASSPHRASE_SOURCE.lock() {
        *s = Some((source, padded));
    }
}

/// The lines added under a wrong-passphrase error: which source the passphrase came from,
/// and, when it starts or ends with whitespace, that whitespace counts. Empty otherwise.
fn wrong_secret_note(e: &(dyn std::error::Error + 'static)) -> String {
    if !error_text(e).contains("wrong passphrase or identity") {
        return String::new();
    }
    let Some((source, padded)) = PASSPHRASE_SOURCE.lock().ok().and_then(|s| s.clone()) else {
        return String::new();
    };
    let mut out = format!("  the passphrase came from {source}\n");
    if padded {
        out.push_str(
            "  it starts or ends with whitespace, which is part of the passphrase (nrfca never \
             trims it): remove the spaces or tabs if they are not part of it, and retry\n",
        );
    }
    out
}

/// A `--passphrase-file` / `--identity` path that does not exist: name the option, the path
/// and what to do.
fn check_secret_path(option: &str, path: &Path, what: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{option} {}: no such file; give the path of {what}",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// No way to get a passphrase without a terminal.
const NO_PASSPHRASE: &str =
    "no passphrase: use --passphrase-file, NRFCA_PASSPHRASE or run on a terminal";

/// Where the CA secret comes from, in this order: `--identity`, `--passphrase-file`, the
/// environment variable `NRFCA_PASSPHRASE`, a prompt (only when stdin is a terminal).
/// Otherwise an error (exit 2) saying so.
pub fn resolve_unlock(
    passphrase_file: Option<&Path>,
    identity: Option<&Path>,
) -> Result<Unlock, Box<dyn std::error::Error>> {
    // No core dumps and no same-user ptrace from before the first secret byte is read.
    secret::harden_process()?;
    if let Some(id) = identity {
        check_secret_path(
            "--identity",
            id,
            "the age identity file (AGE-SECRET-KEY-1... lines) of one of the recipients \
             `nrfca ca show` lists",
        )?;
        return Ok(Unlock::Identity(id.to_path_buf()));
    }
    if let Some(p) = non_prompt_passphrase(passphrase_file)? {
        return Ok(Unlock::Passphrase(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(NO_PASSPHRASE.into());
    }
    let p = prompt("CA passphrase: ")?;
    note_source("the prompt".to_string(), &p);
    Ok(Unlock::Passphrase(p))
}

/// Environment variable holding the PKCS#11 user PIN (after `--pin-file`, before the prompt).
pub const PIN_ENV: &str = "NRFCA_PKCS11_PIN";

/// The token's user PIN: `--pin-file`, else `NRFCA_PKCS11_PIN`, else a prompt on a terminal.
/// Never logged.
pub fn resolve_pin(
    pin_file: Option<&Path>,
    prompt_text: &str,
) -> Result<nrfca::signer::key::pkcs11::Pin, Box<dyn std::error::Error>> {
    use nrfca::signer::key::pkcs11::{self, PinSource};
    secret::harden_process()?;
    let env = std::env::var(PIN_ENV).ok();
    match pkcs11::pin_source(pin_file, env.as_deref(), std::io::stdin().is_terminal())? {
        PinSource::File(f) => {
            check_secret_path(
                "--pin-file",
                &f,
                "a file whose first line is the token's user PIN (mode 600)",
            )?;
            Ok(pkcs11::read_pin_file(&f)?)
        }
        PinSource::Env => {
            std::env::remove_var(PIN_ENV);
            Ok(pkcs11::Pin::from(env.unwrap_or_default()))
        }
        PinSource::Prompt => {
            let p = prompt(prompt_text)?;
            Ok(pkcs11::Pin::from(p.expose_secret().to_string()))
        }
    }
}

/// Split a `NAME=FILE` option value.
pub fn name_file(option: &str, v: &str) -> Result<(String, PathBuf), String> {
    match v.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => {
            Ok((n.trim().to_string(), PathBuf::from(f)))
        }
        _ => Err(format!(
            "{option} {v}: write it as NAME=FILE (the custodian's name, then the file)"
        )),
    }
}

/// The custodian a share file belongs to, by its name (`alice.share.age` → `alice`).
fn share_custodian(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(nrfca::signer::key::quorum::custodian_from_file_name)
        .map(str::to_string)
        .unwrap_or_else(|| path.display().to_string())
}

/// The custodians' shares for a quorum-held key: each `--share FILE` with
/// `--share-identity NAME=F`, else `--share-passphrase-file NAME=F`, else a prompt naming the
/// custodian.
pub fn resolve_shares(
    shares: &[PathBuf],
    passphrase_files: &[String],
    identities: &[String],
) -> Result<Unlock, Box<dyn std::error::Error>> {
    use nrfca::signer::secret::{ShareInput, ShareSecret};
    secret::harden_process()?;
    if shares.is_empty() {
        return Err("the key of this CA is held by a quorum of custodians: give --share FILE once per custodian taking part (M of them; `nrfca ca show` says M and who they are)".into());
    }
    let pw: Vec<(String, PathBuf)> = passphrase_files
        .iter()
        .map(|v| name_file("--share-passphrase-file", v))
        .collect::<Result<_, _>>()?;
    let ids: Vec<(String, PathBuf)> = identities
        .iter()
        .map(|v| name_file("--share-identity", v))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(shares.len());
    for path in shares {
        check_secret_path("--share", path, "a custodian's share file (NAME.share.age)")?;
        let name = share_custodian(path);
        let find = |list: &[(String, PathBuf)]| {
            list.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, f)| f.clone())
        };
        let secret = if let Some(f) = find(&ids) {
            check_secret_path("--share-identity", &f, "the custodian's age identity file")?;
            ShareSecret::Identity(f)
        } else if let Some(f) = find(&pw) {
            check_secret_path(
                "--share-passphrase-file",
                &f,
                "a file whose first line is the custodian's share passphrase",
            )?;
            ShareSecret::Passphrase(secret::read_passphrase_file(&f)?)
        } else if std::io::stdin().is_terminal() {
            ShareSecret::Passphrase(prompt(&format!(
                "custodian {name}: passphrase of your share {}: ",
                path.display()
            ))?)
        } else {
            return Err(format!(
                "no passphrase for custodian {name}'s share {}: give --share-passphrase-file {name}=FILE or --share-identity {name}=FILE, or run on a terminal to be asked",
                path.display()
            )
            .into());
        };
        out.push(ShareInput {
            path: path.clone(),
            secret,
        });
    }
    Ok(Unlock::Shares(out))
}

/// A new custodian's share passphrase (`ca init --quorum`, `ca reshare`):
/// `--share-passphrase-file NAME=F`, else asked twice on a terminal.
pub fn resolve_custodian_passphrase(
    name: &str,
    passphrase_files: &[String],
) -> Result<SecretString, Box<dyn std::error::Error>> {
    for v in passphrase_files {
        let (n, f) = name_file("--share-passphrase-file", v)?;
        if n.eq_ignore_ascii_case(name) {
            check_secret_path(
                "--share-passphrase-file",
                &f,
                "a file whose first line is the custodian's new share passphrase",
            )?;
            return Ok(secret::read_passphrase_file(&f)?);
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no passphrase for custodian {name}: give --share-passphrase-file {name}=FILE, --custodian {name}=AGE_RECIPIENT, or run on a terminal to be asked"
        )
        .into());
    }
    let first = prompt(&format!("custodian {name}: new share passphrase: "))?;
    let second = prompt(&format!("custodian {name}: repeat it: "))?;
    if first.expose_secret() != second.expose_secret() {
        return Err(format!(
            "the two passphrases of custodian {name} differ; run the command again"
        )
        .into());
    }
    Ok(first)
}

/// The passphrase for a new key (`ca init`, `ca import`): `--passphrase-file`, else
/// `NRFCA_PASSPHRASE`, else asked twice on a terminal.
pub fn resolve_new_passphrase(
    passphrase_file: Option<&Path>,
) -> Result<SecretString, Box<dyn std::error::Error>> {
    resolve_new_passphrase_from(passphrase_file, PASSPHRASE_ENV, NO_PASSPHRASE)
}

/// Environment variable holding the new passphrase of `ca protect` (after
/// `--new-passphrase-file`, before the prompt); `NRFCA_PASSPHRASE` is the current one there.
pub const NEW_PASSPHRASE_ENV: &str = "NRFCA_NEW_PASSPHRASE";

/// The new passphrase of `ca protect`: `--new-passphrase-file`, else `NRFCA_NEW_PASSPHRASE`,
/// else asked twice on a terminal.
pub fn resolve_protect_passphrase(
    passphrase_file: Option<&Path>,
) -> Result<SecretString, Box<dyn std::error::Error>> {
    resolve_new_passphrase_from(
        passphrase_file,
        NEW_PASSPHRASE_ENV,
        "no new passphrase: use --new-passphrase-file, NRFCA_NEW_PASSPHRASE or run on a terminal (or give --new-recipient)",
    )
}

fn resolve_new_passphrase_from(
    passphrase_file: Option<&Path>,
    env: &str,
    none: &str,
) -> Result<SecretString, Box<dyn std::error::Error>> {
    secret::harden_process()?;
    if let Some(p) = non_prompt_passphrase_from(passphrase_file, env)? {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(none.into());
    }
    let first = prompt("New CA passphrase: ")?;
    let second = prompt("Repeat the passphrase: ")?;
    if first.expose_secret() != second.expose_secret() {
        return Err("the two passphrases differ; run the command again".into());
    }
    Ok(first)
}

fn non_prompt_passphrase(
    passphrase_file: Option<&Path>,
) -> Result<Option<SecretString>, Box<dyn std::error::Error>> {
    non_prompt_passphrase_from(passphrase_file, PASSPHRASE_ENV)
}

fn non_prompt_passphrase_from(
    passphrase_file: Option<&Path>,
    env: &str,
) -> Result<Option<SecretString>, Box<dyn std::error::Error>> {
    // The unlock passphrase (NRFCA_PASSPHRASE) is noted for a wrong-passphrase message; a
    // new one (`ca protect`, NRFCA_NEW_PASSPHRASE) is not, and names its own option.
    let unlocking = env == PASSPHRASE_ENV;
    if let Some(f) = passphrase_file {
        let (option, what) = if unlocking {
            (
                "--passphrase-file",
                "a file whose first line is the CA passphrase (mode 600), or leave the option out \
                 to use NRFCA_PASSPHRASE or the prompt",
            )
        } else {
            (
                "--new-passphrase-file",
                "a file whose first line is the new CA passphrase (mode 600), or leave the option \
                 out to use NRFCA_NEW_PASSPHRASE or the prompt",
            )
        };
        check_secret_path(option, f, what)?;
        let p = secret::read_passphrase_file(f)?;
        if unlocking {
            note_source(
                format!(
                    "--passphrase-file {} (its first line, as written)",
                    f.display()
                ),
                &p,
            );
        }
        return Ok(Some(p));
    }
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => {
            // Not inherited by anything this process starts (e.g. `sync`). The copy in the
            // initial environment block stays until exit; prefer --passphrase-file.
            std::env::remove_var(env);
            let p = SecretString::from(v);
            if unlocking {
                note_source(env.to_string(), &p);
            }
            Ok(Some(p))
        }
        _ => Ok(None),
    }
}

fn prompt(text: &str) -> Result<SecretString, Box<dyn std::error::Error>> {
    let p = rpassword::prompt_password(text)
        .map_err(|e| format!("cannot read the passphrase from the terminal: {e}"))?;
    if p.is_empty() {
        return Err("empty passphrase; run the command again and type it".into());
    }
    Ok(SecretString::from(p))
}

/// The operator recorded in the audit log: `--operator`, else `$USER`, else `$LOGNAME`, else
/// the login name of the process's user id, else `unknown` — the same rule as the bench
/// journal's ([`nrfca::operator_name`]).
pub fn operator(flag: Option<String>) -> String {
    nrfca::operator_name(flag.as_deref())
}

/// Print a value as pretty JSON on stdout (machine output).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Box<dyn std::error::Error>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print_stdout(&text)
}

/// Write `text` to stdout: the data a user asked for (tables, JSON, CSV). A closed pipe
/// (`| head`) is not an error of ours.
pub fn print_stdout(text: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}").into())
        }
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------ progress

/// Whether progress bars and spinners are drawn: only when stderr is a terminal (never in
/// pipes, logs or CI) and `TERM` is not `dumb`.
pub fn progress_enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A spinner on stderr with `message` while something of unknown length runs (scrypt,
/// verifying a long log); `None` when progress is hidden. Finish it with
/// [`indicatif::ProgressBar::finish_and_clear`].
pub fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    if !progress_enabled() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.set_message(message.to_string());
    b.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(b)
}

/// Run `f` with a spinner showing `message` (hidden when stderr is not a terminal).
pub fn with_spinner<T>(message: &str, f: impl FnOnce() -> T) -> T {
    let s = spinner(message);
    let out = f();
    if let Some(s) = s {
        s.finish_and_clear();
    }
    out
}

/// Refuse an output file (`--out`) whose directory does not exist, naming it: the create
/// would fail with a bare "No such file or directory".
pub fn check_out_parent(path: &Path) -> Result<(), String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "--out {}: {} is not a directory; give a file in an existing directory",
            path.display(),
            parent.display()
        )),
        Err(_) => Err(format!(
            "--out {}: the directory {} does not exist; create it first (`mkdir -p {}`) or give \
             a file in an existing directory",
            path.display(),
            parent.display(),
            parent.display()
        )),
    }
}
