//! The lifecycle subcommands of `nrfca ca` (issue 14): `verification-cert`.

use super::common::{check_out_parent, print_json, CliResult, Outcome, UnlockArgs};
use clap::Args;
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
