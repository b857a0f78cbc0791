//! `nrfca bench ports | export | import | status`.

use super::common::{not_yet, CliResult};
use clap::Subcommand;

/// Bench subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// List serial ports; Nordic/SEGGER kits are marked.
    Ports {},
    /// Run AT%KEYGEN on every device in parallel and write a requests file.
    Export {},
    /// Install root CAs and device certificates from a signed bundle, verified by SHA-256.
    Import {},
    /// Every device the bench has seen and its state.
    Status {},
}

/// Run a bench subcommand.
pub fn run(_cmd: BenchCmd) -> CliResult {
    not_yet("bench")
}
