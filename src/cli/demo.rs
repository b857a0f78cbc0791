//! `nrfca demo`.

use super::common::{not_yet, CliResult};
use clap::Args;

/// Arguments of `nrfca demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Run `demo`.
pub fn run(_args: DemoArgs) -> CliResult {
    not_yet("demo")
}
