//! `nrfca inspect`.

use super::common::{not_yet, CliResult};
use clap::Args;

/// Arguments of `nrfca inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A KEYGEN or ATTESTTOKEN string, or a file (CSR, certificate, requests file).
    pub input: String,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `inspect`.
pub fn run(_args: InspectArgs) -> CliResult {
    not_yet("inspect")
}
