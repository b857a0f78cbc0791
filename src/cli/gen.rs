//! `nrfca gen` (hidden): realistic KEYGEN requests for tests and benchmarks.

use super::common::{is_broken_pipe, CliResult, Outcome};
use clap::{Args, ValueEnum};
use nrfca::sim::generate::{write_requests, BatchFormat, BatchOptions, GenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Output format of `nrfca gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A requests CSV with the SPEC header (like `bench export`).
    Csv,
    /// One bare KEYGEN string per line.
    Lines,
}

/// Arguments of `nrfca gen`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every request comes from a distinct simulated modem (random UUID, IMEI \
and P-256 key; modems share identity keys in groups of 512) and passes `nrfca sign`'s checks.

Example:
  nrfca gen --count 100000 --out requests.csv
  nrfca gen --count 10 --format lines --sec-tag 42 --out keygen.txt"
)]
pub struct GenArgs {
    /// Number of requests.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u64,
    /// Output file (`-` for stdout). Refuses to overwrite an existing file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// csv (requests file with header) or lines (bare KEYGEN strings).
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// sec_tag the keys are generated in.
    #[arg(long, default_value_t = nrfca::keygen::DEFAULT_SEC_TAG)]
    pub sec_tag: u32,
    /// Worker threads (default: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Subject attributes instead of CN=<uuid>, e.g. "CN=nrf-355025930000000".
    #[arg(long)]
    pub attributes: Option<String>,
    /// Encode the CSR signature algorithm without the modem's NULL parameter.
    #[arg(long)]
    pub no_null: bool,
}

/// Run `gen`.
pub fn run(args: GenArgs) -> CliResult {
    let opts = BatchOptions {
        count: args.count,
        sec_tag: args.sec_tag,
        threads: args.threads,
        format: match args.format {
            Format::Csv => BatchFormat::Csv,
            Format::Lines => BatchFormat::Lines,
        },
        gen: GenOptions {
            null_param: !args.no_null,
            attributes: args.attributes,
            response_content: 0,
        },
    };
    let start = Instant::now();
    let mut last = Instant::now();
    let mut progress = |n: u64| {
        if last.elapsed().as_millis() >= 1000 {
            say!("gen: {n}/{} requests", args.count);
            last = Instant::now();
        }
    };
    let n = if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        // `gen - | head`: a closed pipe ends the output, it is not an error.
        match write_requests(&mut w, &opts, &mut progress).and_then(|n| {
            w.flush()?;
            Ok(n)
        }) {
            Ok(n) => n,
            Err(e) if is_broken_pipe(&e) => return Ok(Outcome::Done),
            Err(e) => return Err(e.into()),
        }
    } else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&args.out)
            .map_err(|e| {
                format!(
                    "cannot create {}: {e} (gen never overwrites; pick a new name)",
                    args.out.display()
                )
            })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let n = write_requests(&mut w, &opts, &mut progress)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        n
    };
    let secs = start.elapsed().as_secs_f64();
    say!(
        "gen: wrote {n} requests to {} in {secs:.2} s ({:.0}/s)",
        args.out.display(),
        n as f64 / secs.max(1e-9)
    );
    Ok(Outcome::Done)
}
