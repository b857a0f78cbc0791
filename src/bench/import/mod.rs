//! `bench import`: verify the signed bundle first, then on every port in parallel install the
//! root CA bundle (type 0) and the device certificate (type 1), prove each write by the
//! SHA-256 the modem lists, and restore the functional mode found before export.
//!
//! Nothing touches a modem until the whole bundle verified (`manifest.sig` with `--trust`,
//! every file's SHA-256), and `--trust` must come from outside the bundle (a bundle cannot
//! vouch for itself). Per device the certificate must chain to the trusted CA, carry the
//! public key recorded at export and name the device (CN = its UUID or `nrf-<IMEI>`), and
//! come from the CA pinned for that device by its last verified import (another CA only with
//! `--force`, journaled). The private key (type 2) is never touched.
//!
//! The bundle's `checkpoint` must also be signed by the trusted CA and extend the newest
//! checkpoint this bench holds for it ([`super::evidence`]); after the run it is kept in the
//! bench state, journaled.

mod decide;
mod device;
mod trust;

use super::evidence::{self, CheckpointVerdict};
use super::state::{Actor, AdoptCheckpoint, Adoption, DeviceState, State};
use super::worker::{
    emit_step, open_serial, run_port, run_ports, BenchError, DeviceResult, Fail, Journal, Opener,
    PortSettings, Progress, Status, Track,
};
use crate::bundle::{self, CertRow};
use crate::util::first_cert_der;
use device::import_device;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use trust::{
    check_bundle_dir, issuing_ca, read_file, root_bundle, trust_outside_bundle, trusted_ca,
    TrustedCa,
};

pub use trust::default_root_bundle;

/// What `bench import` does.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Serial ports, one device each.
    pub ports: Vec<String>,
    /// The bundle directory from `nrfca sign`.
    pub bundle: PathBuf,
    /// The CA certificate the bench trusts (`ca.pem` of the signer, carried separately).
    pub trust: PathBuf,
    /// Root CA PEM files for type 0, concatenated in order; empty = the default bundle.
    pub root_ca: Vec<PathBuf>,
    /// Bench state directory (the one export used).
    pub state_dir: PathBuf,
    /// Operator name for the journal (default `$USER`).
    pub operator: Option<String>,
    /// Bench name for the journal (default: host name).
    pub bench_name: Option<String>,
    /// Serial settings, timeouts, reconnect policy.
    pub settings: PortSettings,
    /// Accept a certificate from another CA than the one pinned for the device (the CA of
    /// the certificate installed before); each such change is journaled.
    pub force: bool,
    /// Write the root CA bundle (type 0) to this sec_tag instead of the certificate's
    /// (`--ca-sec-tag`, as newer nRF Connect SDK CoAP configurations expect).
    pub ca_sec_tag: Option<u32>,
}

impl ImportOptions {
    /// Options with defaults for everything but ports, bundle and trust anchor.
    pub fn new(ports: Vec<String>, bundle: PathBuf, trust: PathBuf) -> ImportOptions {
        ImportOptions {
            ports,
            bundle,
            trust,
            root_ca: Vec::new(),
            state_dir: PathBuf::from(super::state::DEFAULT_DIR),
            operator: None,
            bench_name: None,
            settings: PortSettings::default(),
            force: false,
            ca_sec_tag: None,
        }
    }
}

/// What `bench import` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    /// The bundle.
    pub bundle: PathBuf,
    /// Batch id from the manifest.
    pub batch: String,
    /// SHA-256 (lowercase hex) of the root CA bundle written as type 0.
    pub root_sha256: String,
    /// One result per port.
    pub devices: Vec<DeviceResult>,
    /// Wall time.
    pub elapsed_ms: u128,
    /// What the bundle's checkpoint meant (see [`CheckpointVerdict::describe`]).
    pub checkpoint: String,
    /// Whether its checkpoint was kept (`None`: nothing new to keep).
    pub adoption: Option<Adoption>,
}

impl ImportReport {
    /// Every device imported now or before.
    pub fn all_ok(&self) -> bool {
        self.devices.iter().all(|d| d.status.ok())
    }
}

struct Ctx<'a> {
    opts: &'a ImportOptions,
    state: Arc<State>,
    actor: Actor,
    certs: Vec<CertRow>,
    rejects: Vec<(String, String, String)>,
    ca: TrustedCa,
    root: String,
    progress: Progress<'a>,
}

/// A bundle that passed every check of [`verify_bundle`], ready for [`import_verified`].
pub struct VerifiedImport {
    ca: TrustedCa,
    certs: Vec<CertRow>,
    rejects: Vec<(String, String, String)>,
    root: String,
    root_sha: String,
    start: Instant,
    /// Batch id of the bundle (from its signed manifest).
    pub batch: String,
    /// What the bundle's checkpoint means for this bench (kept after the run when new).
    pub evidence: CheckpointVerdict,
}

impl VerifiedImport {
    /// Certificates in the bundle.
    pub fn certificates(&self) -> usize {
        self.certs.len()
    }
}

impl std::fmt::Debug for VerifiedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifiedImport(batch {}, {} certificates)",
            self.batch,
            self.certificates()
        )
    }
}

/// Verify the bundle, then import on every port in parallel.
pub fn import(opts: &ImportOptions, progress: Progress<'_>) -> Result<ImportReport, BenchError> {
    let v = verify_bundle(opts)?;
    import_verified(opts, v, progress)
}

/// Everything that can refuse the whole run, before any port is opened: the ports given, the
/// trusted CA, the bundle's signature and every file digest, the root CAs to install.
pub fn verify_bundle(opts: &ImportOptions) -> Result<VerifiedImport, BenchError> {
    if opts.ports.is_empty() {
        return Err(BenchError::Usage(
            "no ports given: pass --port for every device (see `nrfca bench ports`)".into(),
        ));
    }
    if let Some(t) = opts.ca_sec_tag.filter(|&t| t > 2_147_483_647) {
        return Err(BenchError::Usage(format!(
            "--ca-sec-tag {t} is reserved for the modem: use 0..2147483647"
        )));
    }
    let start = Instant::now();
    check_bundle_dir(&opts.bundle)?;
    if !opts.trust.exists() {
        return Err(BenchError::Usage(format!(
            "--trust {}: no such file; give the signer's ca.pem as this bench received it, \
             carried separately from the bundle (compare its sha256 with the one the officer \
             wrote down at `nrfca ca init`)",
            opts.trust.display()
        )));
    }
    trust_outside_bundle(&opts.trust, &opts.bundle)?;
    let trust_pem = read_file(&opts.trust, "trusted CA certificate (--trust)")?;
    let ca = trusted_ca(&trust_pem, &opts.trust)?;
    let verified =
        bundle::verify(&opts.bundle, trust_pem.as_bytes()).map_err(BenchError::Bundle)?;
    let ca = issuing_ca(ca, &verified, &opts.trust)?;
    // The CA's log must extend what this bench saw before (SPEC §11). The log and its
    // checkpoints are the signing CA's: the intermediate of chain.pem when --trust is a root.
    let issuer_pem = verified.via_chain.as_deref().unwrap_or(&trust_pem);
    let trust_der = first_cert_der(issuer_pem).ok_or_else(|| BenchError::File {
        path: opts.trust.clone(),
        detail: "no CERTIFICATE in the --trust file; pass the signer's ca.pem".into(),
    })?;
    let state = State::open(&opts.state_dir)?;
    let evidence = match evidence::check_bundle(&opts.bundle, &trust_der, &state) {
        Ok(v) => v,
        Err(e) => {
            // A refused checkpoint is evidence too: journal it (best effort, the refusal
            // stands whatever happens to the journal).
            let who = Actor::resolve(opts.operator.as_deref(), opts.bench_name.as_deref());
            let _ = state.journal(
                &who,
                "-",
                None,
                "checkpoint",
                &format!("verify bundle {}", opts.bundle.display()),
                &format!("refused: {}", e.code()),
            );
            return Err(BenchError::Evidence(e));
        }
    };
    let root = root_bundle(&opts.root_ca)?;
    let root_sha = crate::crypto::sha256_hex(root.as_bytes());
    Ok(VerifiedImport {
        ca,
        batch: verified.manifest.batch.clone(),
        certs: verified.certs,
        rejects: read_rejects(&opts.bundle),
        root,
        root_sha,
        start,
        evidence,
    })
}

/// Import a bundle [`verify_bundle`] accepted on every port in parallel.
pub fn import_verified(
    opts: &ImportOptions,
    v: VerifiedImport,
    progress: Progress<'_>,
) -> Result<ImportReport, BenchError> {
    import_with(opts, v, progress, &open_serial)
}

pub(crate) fn import_with(
    opts: &ImportOptions,
    v: VerifiedImport,
    progress: Progress<'_>,
    opener: Opener<'_>,
) -> Result<ImportReport, BenchError> {
    let start = v.start;
    let root_sha = v.root_sha.clone();
    let batch = v.batch.clone();
    let state = Arc::new(State::open(&opts.state_dir)?);
    let ctx = Ctx {
        opts,
        state,
        actor: Actor::resolve(opts.operator.as_deref(), opts.bench_name.as_deref()),
        certs: v.certs,
        rejects: v.rejects,
        ca: v.ca,
        root: v.root,
        progress,
    };
    let devices = run_ports(&opts.ports, 0, "import", |p| import_port(&ctx, p, opener));
    // The bundle verified: keep its checkpoint, the one the next bundle must extend.
    let mut adoption = None;
    if let CheckpointVerdict::Extends { signed, from } = &v.evidence {
        let verified = match from {
            Some(f) => format!("signature by the CA, consistency from size {}", f.size),
            None => "signature by the CA (first checkpoint of this CA)".into(),
        };
        let bundle_name = opts.bundle.display().to_string();
        adoption = Some(ctx.state.adopt_checkpoint(
            &AdoptCheckpoint {
                signed,
                bundle: &bundle_name,
                batch: &batch,
                verified: &verified,
                from: from.as_ref(),
            },
            &ctx.actor,
        )?);
    }
    Ok(ImportReport {
        bundle: opts.bundle.clone(),
        batch,
        root_sha256: root_sha,
        devices,
        elapsed_ms: start.elapsed().as_millis(),
        checkpoint: v.evidence.describe(),
        adoption,
    })
}

/// (device_uuid, code, detail) of each row of the (verified) `rejects.csv`.
fn read_rejects(dir: &Path) -> Vec<(String, String, String)> {
    let text = match std::fs::read_to_string(dir.join("rejects.csv")) {
        Ok(t) => t,
        Err(_) => return Vec::new(),
    };
    bundle::parse_csv(&text)
        .into_iter()
        .skip(1)
        .filter_map(|(_, r)| r.ok())
        .filter_map(|f| {
            Some((
                f.get(2)?.to_ascii_lowercase(),
                f.get(3)?.clone(),
                f.get(4).cloned().unwrap_or_default(),
            ))
        })
        .collect()
}

fn step(ctx: &Ctx<'_>, port: &str, imei: Option<&str>, what: &str) {
    emit_step(ctx.progress, port, imei, what);
}

fn import_port(ctx: &Ctx<'_>, port: &str, opener: Opener<'_>) -> DeviceResult {
    let journal = Journal::new(ctx.state.clone(), ctx.actor.clone(), port, "import");
    run_port(
        port,
        &ctx.opts.settings,
        opener,
        &journal,
        ctx.progress,
        |m, track| import_device(ctx, port, m, &journal, track),
        |track, f| record_failure(ctx, port, &journal, track, f),
    )
}

fn record_failure(
    ctx: &Ctx<'_>,
    port: &str,
    journal: &Journal,
    track: &Track,
    f: Fail,
) -> DeviceResult {
    let (code, detail, next, unknown) = f.parts();
    let mut status = if unknown {
        Status::Unknown
    } else {
        Status::Failed
    };
    if let (Some(imei), Some(tag)) = (&track.imei, track.sec_tag) {
        if let Ok(Some(mut r)) = ctx.state.device(imei, tag) {
            match r.state {
                // Writes may have happened: stays unknown until a run verifies the slot.
                DeviceState::ImportUnknown if unknown => {}
                DeviceState::ImportUnknown => r.state = DeviceState::ImportFailed,
                // A later failed re-check does not undo a verified import.
                DeviceState::Imported => {}
                _ => r.state = DeviceState::ImportFailed,
            }
            if r.state == DeviceState::ImportFailed {
                status = Status::Failed;
            }
            r.note_error(port, &code, &detail);
            journal.note("result", &format!("{}: {code}", r.state));
            let _ = journal.commit(&r);
        }
    } else {
        journal.note("result", &format!("failed: {code}"));
    }
    DeviceResult {
        port: port.to_string(),
        imei: track.imei.clone(),
        uuid: track.uuid.clone(),
        sec_tag: track.sec_tag.unwrap_or(0),
        status,
        code: Some(code),
        detail,
        next_step: Some(next),
    }
}
