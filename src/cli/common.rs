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
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(2)
        }
    }
}

/// Placeholder for a command whose library half is not written yet.
#[allow(dead_code)]
pub fn not_yet(what: &str) -> CliResult {
    Err(format!("`{what}` is not implemented yet").into())
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
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
}

impl UnlockArgs {
    /// Resolve the unlock secret (see [`resolve_unlock`]).
    pub fn unlock(&self) -> Result<Unlock, Box<dyn std::error::Error>> {
        resolve_unlock(self.passphrase_file.as_deref(), self.identity.as_deref())
    }

    /// The operator name (see [`operator`]).
    pub fn operator(&self) -> String {
        operator(self.operator.clone())
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
    if let Some(id) = identity {
        return Ok(Unlock::Identity(id.to_path_buf()));
    }
    if let Some(p) = non_prompt_passphrase(passphrase_file)? {
        return Ok(Unlock::Passphrase(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(NO_PASSPHRASE.into());
    }
    let p = prompt("CA passphrase: ")?;
    Ok(Unlock::Passphrase(p))
}

/// The passphrase for a new key (`ca init`, `ca import`): `--passphrase-file`, else
/// `NRFCA_PASSPHRASE`, else asked twice on a terminal.
pub fn resolve_new_passphrase(
    passphrase_file: Option<&Path>,
) -> Result<SecretString, Box<dyn std::error::Error>> {
    if let Some(p) = non_prompt_passphrase(passphrase_file)? {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(NO_PASSPHRASE.into());
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
    if let Some(f) = passphrase_file {
        return Ok(Some(secret::read_passphrase_file(f)?));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(v) if !v.is_empty() => Ok(Some(SecretString::from(v))),
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

/// The operator recorded in the audit log: `--operator`, else `$USER`, else `unknown`.
pub fn operator(flag: Option<String>) -> String {
    flag.filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Print a value as pretty JSON on stdout (machine output).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Box<dyn std::error::Error>> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}
