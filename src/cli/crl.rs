//! `nrfca crl`: sign and write the CRL, revoked.csv and the signed manifest.

use super::common::{check_out_parent, print_json, CliResult, Outcome, UnlockArgs};
use clap::Args;
use nrfca::signer::lifecycle::crl::{self, CrlOptions, DEFAULT_NEXT_UPDATE_DAYS};
use std::path::PathBuf;

/// Arguments of `crl`.
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Directory to create (must not exist): crl.der, crl.pem, revoked.csv, manifest.json,
    /// manifest.sig.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// nextUpdate is this many days after thisUpdate: issue the next CRL before then.
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_NEXT_UPDATE_DAYS)]
    pub next_update_days: u32,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `crl`.
pub fn run(a: CrlArgs) -> CliResult {
    check_out_parent(&a.out)?;
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let info = crl::issue_crl(
        &a.ca_dir,
        &unlock,
        &CrlOptions {
            out: a.out.clone(),
            next_update_days: a.next_update_days,
            operator: a.unlock.operator(),
        },
    )?;
    if a.json {
        print_json(&info.manifest)?;
    }
    say!(
        "CRL number {} with {} revoked certificates written to {} (next update {})",
        info.manifest.crl_number,
        info.manifest.revoked,
        info.out.display(),
        info.manifest.next_update
    );
    say!("nRF Cloud has no CRL: delete the devices listed in revoked.csv from nRF Cloud");
    Ok(Outcome::Done)
}
