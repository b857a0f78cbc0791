//! The lifecycle subcommands of `nrfca ca` (issue 14): `verification-cert`,
//! `issue-intermediate`.

use super::ca::{encrypt_message, render, ProtectArgs};
use super::common::{
    check_out_parent, operator, print_json, resolve_unlock, with_spinner, CliResult, Outcome,
    UnlockArgs,
};
use clap::Args;
use nrfca::signer::ca::InitOptions;
use nrfca::signer::lifecycle::hierarchy;
use nrfca::signer::lifecycle::verification::{self, VerificationOptions};
use std::path::PathBuf;

/// Arguments of `ca verification-cert`.
#[derive(Debug, Args)]
pub struct VerificationCertArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The registration code from `aws iot get-registration-code` (the certificate's CN).
    #[arg(long, value_name = "CODE")]
    pub cn: String,
    /// Directory to create (must not exist): verification.pem and verification.key (0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `ca verification-cert`.
pub fn verification_cert(a: VerificationCertArgs) -> CliResult {
    check_out_parent(&a.out)?;
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let info = verification::verification_cert(
        &a.ca_dir,
        &unlock,
        &VerificationOptions {
            cn: a.cn,
            out: a.out,
            operator: a.unlock.operator(),
        },
    )?;
    if a.json {
        print_json(&info)?;
    }
    say!(
        "wrote {} (serial {}, valid until {}) and its key {} (mode 0600)",
        info.cert.display(),
        info.serial,
        info.not_after,
        info.key.display()
    );
    say!("the key is AWS's throwaway proof-of-possession key: delete it (shred -u) once the CA is registered");
    Ok(Outcome::Done)
}

/// Arguments of `ca issue-intermediate`.
#[derive(Debug, Args)]
pub struct IssueIntermediateArgs {
    /// The root CA directory (made by `ca init --root`).
    #[arg(long, value_name = "ROOT")]
    pub ca_dir: PathBuf,
    /// The new CA directory to create (must not exist).
    #[arg(long, value_name = "SUB")]
    pub new_ca_dir: PathBuf,
    /// Subject of the new CA, most specific first: "CN=Acme Device CA 2026,O=Acme".
    #[arg(long, value_name = "DN")]
    pub subject: String,
    /// Validity of the new CA in days (default: 7300, or up to the root's notAfter if sooner;
    /// more than the root has left is refused).
    #[arg(long)]
    pub days: Option<u32>,
    /// File whose first line is the root's passphrase (else $NRFCA_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE", conflicts_with = "root_identity")]
    pub root_passphrase_file: Option<PathBuf>,
    /// age identity file of one of the root key's recipients.
    #[arg(long, value_name = "FILE")]
    pub root_identity: Option<PathBuf>,
    #[command(flatten)]
    pub protect: ProtectArgs,
}

/// Run `ca issue-intermediate`.
pub fn issue_intermediate(a: IssueIntermediateArgs) -> CliResult {
    let days = match a.days {
        Some(d) => d,
        None => hierarchy::default_days(&a.ca_dir)?,
    };
    let unlock = resolve_unlock(
        a.root_passphrase_file.as_deref(),
        a.root_identity.as_deref(),
    )?;
    let custody = a.protect.custody()?;
    let protection = a.protect.protection_for(&custody)?;
    let opts = InitOptions {
        subject: a.subject,
        days,
        protection,
        operator: operator(a.protect.operator.clone()),
    };
    let info = with_spinner(encrypt_message(&opts.protection), || {
        hierarchy::issue_intermediate(&a.ca_dir, &unlock, &a.new_ca_dir, &opts, &custody)
    })?;
    if a.protect.json {
        print_json(&info)?;
    } else {
        say!(
            "intermediate CA created in {} (issued by the root in {})",
            a.new_ca_dir.display(),
            a.ca_dir.display()
        );
        say_raw!("{}", render(&info));
        say!(
            "Next: sign with --ca-dir {}; bundles carry chain.pem, and the bench may trust the root's ca.pem",
            a.new_ca_dir.display()
        );
    }
    Ok(Outcome::Done)
}
