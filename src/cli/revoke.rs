//! `nrfca revoke`: record revocations (no key needed; the next `nrfca crl` signs them).

use super::common::{operator, print_json, CliResult, Outcome};
use clap::{ArgGroup, Args, ValueEnum};
use nrfca::signer::lifecycle::revoke::{self, Reason, RevokeOptions, Targets};
use nrfca::term_escape;
use std::path::PathBuf;

/// RFC 5280 reason (the flag's values).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReasonArg {
    /// No reason given (no reasonCode in the CRL).
    #[value(name = "unspecified")]
    Unspecified,
    /// The device key leaked or the device was stolen.
    #[value(name = "keyCompromise")]
    KeyCompromise,
    /// Replaced by a new certificate (re-provisioned device).
    #[value(name = "superseded")]
    Superseded,
    /// The device is scrapped or out of service.
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
    /// The device changed owner (returned, resold).
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
}

impl From<ReasonArg> for Reason {
    fn from(r: ReasonArg) -> Reason {
        match r {
            ReasonArg::Unspecified => Reason::Unspecified,
            ReasonArg::KeyCompromise => Reason::KeyCompromise,
            ReasonArg::Superseded => Reason::Superseded,
            ReasonArg::CessationOfOperation => Reason::CessationOfOperation,
            ReasonArg::AffiliationChanged => Reason::AffiliationChanged,
        }
    }
}

/// Arguments of `revoke`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["device", "serial", "batch", "file"])))]
pub struct RevokeArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Device id (certificate CN) or attested UUID; every certificate issued to it (repeatable).
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub device: Vec<String>,
    /// Certificate serial in hex (repeatable).
    #[arg(long, value_name = "HEX", num_args = 1..)]
    pub serial: Vec<String>,
    /// Every certificate of this batch.
    #[arg(long, value_name = "ID")]
    pub batch: Option<String>,
    /// CSV with a `serial` or `device_id` column (certs.csv, revoked.csv or your own list).
    #[arg(long, value_name = "CSV")]
    pub file: Option<PathBuf>,
    /// Why (RFC 5280).
    #[arg(long, value_enum)]
    pub reason: ReasonArg,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `revoke`.
pub fn run(a: RevokeArgs) -> CliResult {
    let targets = if let Some(b) = a.batch {
        Targets::Batch(b)
    } else if let Some(f) = a.file {
        Targets::File(f)
    } else if !a.serial.is_empty() {
        Targets::Serials(a.serial)
    } else {
        Targets::Devices(a.device)
    };
    let r = revoke::revoke(
        &a.ca_dir,
        &RevokeOptions {
            targets,
            reason: a.reason.into(),
            operator: operator(a.operator),
        },
    )?;
    if a.json {
        print_json(&r)?;
    }
    for c in &r.revoked {
        say!(
            "revoked {} (device {}, {})",
            c.serial,
            term_escape(&c.device_id),
            c.reason
        );
    }
    for c in &r.already_revoked {
        say!(
            "already revoked {} (device {}, {} at {}): nothing to do",
            c.serial,
            term_escape(&c.device_id),
            c.reason,
            c.revoked_at
        );
    }
    for u in &r.unknown {
        say!("unknown: {}", term_escape(u));
    }
    say!(
        "{} revoked, {} already revoked, {} unknown; publish with `nrfca crl --ca-dir {} --out DIR` (it signs the audit checkpoint)",
        r.revoked.len(),
        r.already_revoked.len(),
        r.unknown.len(),
        a.ca_dir.display()
    );
    if r.unknown.is_empty() {
        Ok(Outcome::Done)
    } else {
        say!("nrfca does not know the serials/devices above (check for typos, or the right --ca-dir); the others were revoked");
        Ok(Outcome::Partial)
    }
}
