//! The `nrfca` command line: argument parsing and printing only; the library does the work.
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
