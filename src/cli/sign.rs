//! `nrfca sign`.

use super::common::{not_yet, CliResult};
use clap::Args;

/// Arguments of `nrfca sign`.
#[derive(Debug, Args)]
pub struct SignArgs {}

/// Run `sign`.
pub fn run(_args: SignArgs) -> CliResult {
    not_yet("sign")
}
