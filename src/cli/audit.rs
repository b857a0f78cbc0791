//! `nrfca audit verify | show | export`.

use super::common::{not_yet, CliResult};
use clap::Subcommand;

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain and CA-signed checkpoints.
    Verify {},
    /// Review the log.
    Show {},
    /// Write a standalone, verifiable copy.
    Export {},
}

/// Run an audit subcommand.
pub fn run(_cmd: AuditCmd) -> CliResult {
    not_yet("audit")
}
