//! `nrfca inspect`.

use super::common::{CliResult, Outcome};
use clap::{Args, ValueEnum};
use nrfca::inspect::{inspect, render_text, InspectOptions, MAX_INPUT};
use nrfca::keygen::{CheckOptions, DeviceIdMode, DEFAULT_SEC_TAG};
use std::io::{Read, Write};
use std::path::Path;

/// `--device-id` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceId {
    /// The CSR CN must be the attested UUID.
    Uuid,
    /// The CSR CN may be nrf-<IMEI> or the UUID.
    Cn,
}

/// Arguments of `nrfca inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Recognises a KEYGEN string (bare or the whole %KEYGEN: \"...\" line), an \
ATTESTTOKEN string, a CSR or certificate (PEM or DER file), or a requests file (CSV or KEYGEN \
lines, judged request by request as `nrfca sign` would, without the CA database checks).
Exit status: 0 valid, 1 judged bad (the reject code is printed), 2 unreadable.

Example:
  nrfca inspect requests.csv
  nrfca inspect --json 'MIIBCzCBrw...Hog'
  nrfca inspect bundle/certs/50503041-3539-47eb-807b-102dbb423b9a_crt.pem"
)]
pub struct InspectArgs {
    /// A KEYGEN or ATTESTTOKEN string, or a file (CSR, certificate, requests file); `-` reads
    /// standard input.
    pub input: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The sec_tag requests must attest (as for `sign`).
    #[arg(long, default_value_t = DEFAULT_SEC_TAG, conflicts_with = "any_sec_tag")]
    pub sec_tag: u32,
    /// Accept any sec_tag.
    #[arg(long)]
    pub any_sec_tag: bool,
    /// What the CSR CN is checked against (as for `sign`).
    #[arg(long, value_enum, default_value_t = DeviceId::Uuid)]
    pub device_id: DeviceId,
    /// IMEI the CN must carry with `--device-id cn`.
    #[arg(long)]
    pub imei: Option<String>,
}

fn read_input(arg: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    // The argument is echoed in messages: control characters made visible.
    let shown = nrfca::term_escape(arg);
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        if buf.len() as u64 > MAX_INPUT {
            return Err(format!("standard input is over {MAX_INPUT} bytes").into());
        }
        return Ok(buf);
    }
    let p = Path::new(arg);
    if p.is_file() {
        let f = std::fs::File::open(p).map_err(|e| format!("cannot read {shown}: {e}"))?;
        // Refuse by size before reading anything (a 2 GB file used to take 1.3 GB of memory
        // before it was refused), and read into a buffer of the known size.
        let len = f
            .metadata()
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .len();
        if len > MAX_INPUT {
            return Err(too_big(&shown, len).into());
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
        f.take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if buf.len() as u64 > MAX_INPUT {
            return Err(too_big(&shown, buf.len() as u64).into());
        }
        return Ok(buf);
    }
    if p.is_dir() {
        if p.join("manifest.json").is_file() {
            return Err(format!(
                "{shown} is a bundle directory; inspect takes one file: a certificate \
                 ({shown}/ca.pem, or {shown}/certs/<id>_crt.pem with --pem-files); `nrfca bench \
                 import` verifies the whole bundle before it touches a modem"
            )
            .into());
        }
        return Err(format!(
            "{shown} is a directory; give one file (a requests file, a CSR or a certificate) or a \
             KEYGEN string"
        )
        .into());
    }
    if p.exists() {
        return Err(format!("{shown} is not a regular file").into());
    }
    // A KEYGEN string never contains '/' (base64url); something with a slash or a file
    // extension is a path that does not exist.
    let lower = arg.to_ascii_lowercase();
    let looks_like_token = arg.len() > 100 && !arg.contains(char::is_whitespace);
    if (arg.contains('/') && !looks_like_token)
        || [".csv", ".txt", ".pem", ".der", ".crt", ".csr"]
            .iter()
            .any(|e| lower.ends_with(e))
    {
        return Err(
            format!("{shown}: no such file; give an existing file or a KEYGEN string").into(),
        );
    }
    Ok(arg.as_bytes().to_vec())
}

/// The refusal of a file over [`MAX_INPUT`].
fn too_big(shown: &str, len: u64) -> String {
    format!(
        "{shown} is {len} bytes, over the {MAX_INPUT}-byte limit of inspect; a requests file \
         that large is not from one bench: split it into smaller files and inspect each"
    )
}

/// Run `inspect`.
pub fn run(args: InspectArgs) -> CliResult {
    let input = read_input(&args.input)?;
    let opts = InspectOptions {
        check: CheckOptions {
            sec_tag: if args.any_sec_tag {
                None
            } else {
                Some(args.sec_tag)
            },
            device_id: match args.device_id {
                DeviceId::Uuid => DeviceIdMode::Uuid,
                DeviceId::Cn => DeviceIdMode::Cn,
            },
            imei: args.imei,
        },
    };
    let report = inspect(&input, &opts);
    let text = if args.json {
        let mut j = serde_json::to_string_pretty(&report)?;
        j.push('\n');
        j
    } else {
        render_text(&report)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is not an error of ours.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(format!("cannot write to standard output: {e}").into())
        }
        _ => {}
    }
    Ok(if report.valid {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}
