//! What every subcommand shares: the outcome type, error printing and exit codes.

use std::process::ExitCode;

/// How a command ended when it could run: everything done, or done with some requests
/// rejected / devices failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 1: ran to the end but something was rejected or failed (already listed).
    Partial,
}

/// A command that could not run (exit 2). The message says what to do next.
pub type CliResult = Result<Outcome, Box<dyn std::error::Error>>;

/// Print the error chain and pick the exit code.
pub fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(Outcome::Done) => ExitCode::from(0),
        Ok(Outcome::Partial) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(2)
        }
    }
}

/// Placeholder for a command whose library half is not written yet.
pub fn not_yet(what: &str) -> CliResult {
    Err(format!("`{what}` is not implemented yet").into())
}
