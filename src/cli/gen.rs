//! `nrfca gen` (hidden): realistic KEYGEN requests for tests and benchmarks.

use super::common::{not_yet, CliResult};
use clap::Args;

/// Arguments of `nrfca gen`.
#[derive(Debug, Args)]
pub struct GenArgs {}

/// Run `gen`.
pub fn run(_args: GenArgs) -> CliResult {
    not_yet("gen")
}
