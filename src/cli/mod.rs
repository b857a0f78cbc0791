//! The command tree. Each subcommand lives in its own file, parses its flags, makes one
//! library call and prints; exit codes follow SPEC §1 (0 done, 1 some rejected/failed, 2
//! could not run).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod audit;
pub mod ca;
pub mod common;
pub mod gen;
pub mod inspect;
pub mod sign;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod demo;
#[cfg(feature = "bench")]
pub mod sim;

/// Offline certificate authority for provisioning Nordic nRF91 modems for nRF Cloud.
///
/// The bench machine exports KEYGEN requests from modems (`nrfca bench export`), the
/// air-gapped signer issues certificates (`nrfca sign`), the bench installs them
/// (`nrfca bench import`), and every event lands in a CA-signed audit log (`nrfca audit`).
/// Try `nrfca demo` to see the whole flow on simulated modems.
#[derive(Debug, Parser)]
#[command(
    name = "nrfca",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, adopt or describe the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// Decode and judge a KEYGEN/ATTESTTOKEN string, CSR, certificate or requests file.
    Inspect(inspect::InspectArgs),
    /// Check every request and issue certificates in one atomic batch; write a signed bundle.
    Sign(sign::SignArgs),
    /// Verify, review and export the hash-chained, CA-signed audit log.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Talk to modems over serial: list ports, export requests, import certificates.
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run simulated nRF91 modems on pseudo-terminals until interrupted.
    #[cfg(feature = "bench")]
    Sim(sim::SimArgs),
    /// Generate realistic KEYGEN requests from simulated modem keys (tests, benchmarks).
    #[command(hide = true)]
    Gen(gen::GenArgs),
    /// Run the whole flow (CA, export, sign, import, audit) on simulated modems, narrated.
    #[cfg(feature = "bench")]
    Demo(demo::DemoArgs),
}

/// Parse arguments, run the command, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Gen(args) => gen::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => bench::run(cmd),
        #[cfg(feature = "bench")]
        Command::Sim(args) => sim::run(args),
        #[cfg(feature = "bench")]
        Command::Demo(args) => demo::run(args),
    };
    common::finish(result)
}
