//! `nrfca ca init | import | show`.

use super::common::{not_yet, CliResult};
use clap::Subcommand;

/// CA subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create a new P-256 CA: D/ca.pem, D/ca.key.age (0600), D/ca.db.
    Init {},
    /// Adopt a CA made by Nordic's create_ca_cert (plaintext key), encrypting its key.
    Import {},
    /// Show subject, fingerprint, validity, key protection, counts.
    Show {},
}

/// Run a CA subcommand.
pub fn run(_cmd: CaCmd) -> CliResult {
    not_yet("ca")
}
