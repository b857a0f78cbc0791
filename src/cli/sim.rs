//! `nrfca sim`.

use super::common::{not_yet, CliResult};
use clap::Args;

/// Arguments of `nrfca sim`.
#[derive(Debug, Args)]
pub struct SimArgs {}

/// Run `sim`.
pub fn run(_args: SimArgs) -> CliResult {
    not_yet("sim")
}
