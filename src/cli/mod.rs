//! The command tree. Each subcommand lives in its own file, parses its flags, makes one
//! library call and prints; exit codes follow SPEC §1 (0 done, 1 some rejected/failed, 2
//! could not run). Output rule: the data a user asked for (tables, `--json`, `--csv`) goes to
//! stdout; progress, narration, summaries and errors go to stderr.
//!
//! Nothing here uses `print!`/`eprint!`/`println!`/`eprintln!`: they panic when the stream is
//! a closed pipe (`nrfca ca init … 2>&1 | true` exited 101 after creating the CA; Rust ignores
//! SIGPIPE). Messages go through [`say!`]/[`say_raw!`] (stderr, a write error is ignored: the
//! command still finishes its work and exits with its own code) and data through
//! [`common::print_stdout`] (a closed pipe is not an error). Clippy enforces it.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// `eprintln!` that never panics: a line on stderr; a closed or failing stderr is ignored
/// (what the command does, and its exit code, must not depend on whether anyone reads its
/// messages).
macro_rules! say {
    () => {
        $crate::cli::common::stderr_write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::common::stderr_write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::cli::common::stderr_write(format_args!($($arg)*))
    };
}

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod audit;
pub mod ca;
pub mod ca_lifecycle;
pub mod common;
pub mod completions;
pub mod crl;
#[cfg(feature = "bench")]
pub mod gen;
pub mod inspect;
pub mod man;
pub mod revoke;
pub mod sign;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod demo;
#[cfg(feature = "bench")]
pub mod sim;

/// The text after the top-level help: exit codes, where output goes, examples.
#[cfg(not(feature = "bench"))]
const TOP_AFTER_HELP: &str = "\
This is the air-gapped signer build: no serial code. `bench`, `sim` and `demo` are in the
bench build (default features).

Exit status (every command):
  0  everything done
  1  ran to the end, but some requests were rejected (listed)
  2  could not run: bad usage, wrong passphrase, unreadable or tampered input, corrupt state
     (nothing was issued)

Output: what you asked for (tables, --json, --csv) goes to stdout; progress and messages go
to stderr. Progress bars appear only when stderr is a terminal.

Example:
  nrfca ca init --ca-dir ca --subject \"CN=Acme Fleet CA,O=Acme\"
  nrfca sign --ca-dir ca --out bundle-001 requests.csv
  nrfca audit report --ca-dir ca --out batch-001-report.txt
  nrfca help sign                                       # more about one command

Guides: docs/officer-guide.md, docs/audit.md; `nrfca man --out DIR` writes a manual page for
every command.";

/// The text after the top-level help: exit codes, where output goes, examples.
#[cfg(feature = "bench")]
const TOP_AFTER_HELP: &str = "\
Exit status (every command):
  0  everything done
  1  ran to the end, but some requests were rejected or some devices failed (listed)
  2  could not run: bad usage, wrong passphrase, unreadable or tampered input, corrupt state
     (nothing was issued or written to a modem)

Output: what you asked for (tables, --json, --csv) goes to stdout; progress and messages go
to stderr. Progress bars appear only when stderr is a terminal.

Example:
  nrfca demo                                            # the whole flow, simulated modems
  nrfca ca init --ca-dir ca --subject \"CN=Acme Fleet CA,O=Acme\"
  nrfca bench export --port /dev/ttyACM0 --out requests.csv
  nrfca sign --ca-dir ca --out bundle-001 requests.csv
  nrfca bench import --port /dev/ttyACM0 --bundle bundle-001 --trust ca.pem
  nrfca help sign                                       # more about one command

Guides: docs/officer-guide.md, docs/technician-guide.md, docs/audit.md; `nrfca man --out DIR`
writes a manual page for every command.";

/// Offline certificate authority for provisioning Nordic nRF91 modems for nRF Cloud.
///
/// The bench machine exports KEYGEN requests from modems (`nrfca bench export`), the
/// air-gapped signer issues certificates (`nrfca sign`), the bench installs them
/// (`nrfca bench import`), and every event lands in a CA-signed audit log (`nrfca audit`).
/// Try `nrfca demo` to see the whole flow on simulated modems.
#[derive(Debug, Parser)]
#[cfg_attr(
    not(feature = "bench"),
    command(
        long_about = "Offline certificate authority for provisioning Nordic nRF91 modems for nRF Cloud.\n\n\
The bench machine exports KEYGEN requests from modems (`nrfca bench export`), this air-gapped \
signer issues certificates (`nrfca sign`), the bench installs them (`nrfca bench import`), and \
every event lands in a CA-signed audit log (`nrfca audit`)."
    )
)]
#[command(
    name = "nrfca",
    version,
    max_term_width = 100,
    after_help = TOP_AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole flow (CA, export, sign, import, audit) on simulated modems, narrated.
    #[cfg(feature = "bench")]
    Demo(demo::DemoArgs),
    /// Create, adopt, describe or test-unlock the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// Decode and judge a KEYGEN/ATTESTTOKEN string, CSR, certificate or requests file.
    Inspect(inspect::InspectArgs),
    /// Check every request and issue certificates in one atomic batch; write a signed bundle.
    Sign(sign::SignArgs),
    /// Revoke certificates (by device, serial, batch or list); recorded in ca.db and the audit
    /// log, no key needed.
    #[command(
        after_help = "Example:\n  nrfca revoke --ca-dir /media/ca --device nrf-352656100000009 --reason keyCompromise\n  nrfca revoke --ca-dir /media/ca --file returned.csv --reason cessationOfOperation\n\nRevoking again is a no-op. Exit 1: some serials/devices are unknown (listed; the others are\nrevoked). Then publish: nrfca crl --ca-dir /media/ca --out crl-001"
    )]
    Revoke(revoke::RevokeArgs),
    /// Sign a CRL of every revoked certificate; write crl.pem/crl.der, revoked.csv (the nRF
    /// Cloud removal list) and a signed manifest.
    #[command(
        after_help = "Example:\n  nrfca crl --ca-dir /media/ca --out crl-2025-06 --next-update-days 30\n\nThe CRL number never repeats, even after ca.db is restored from a backup. nRF Cloud has no\nCRL: delete the devices in revoked.csv from nRF Cloud."
    )]
    Crl(crl::CrlArgs),
    /// Verify, review, export and report on the hash-chained, CA-signed audit log.
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
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Gen(gen::GenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one for every command into a directory.
    Man(man::ManArgs),
}

/// The clap command tree (for completions and manual pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parse arguments, run the command, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Inspect(args) => inspect::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Revoke(args) => revoke::run(args),
        Command::Crl(args) => crl::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => bench::run(cmd),
        #[cfg(feature = "bench")]
        Command::Sim(args) => sim::run(args),
        #[cfg(feature = "bench")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "bench")]
        Command::Gen(args) => gen::run(args),
    };
    common::finish(result)
}
