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

use super::at;
use super::code::BenchCode;
use super::evidence::{self, CheckpointVerdict};
use super::modem::Modem;
use super::state::{now, Actor, AdoptCheckpoint, Adoption, DeviceRecord, DeviceState, State};
use super::transport::Transport;
use super::worker::{
    emit_step, open_serial, refused, run_port, run_ports, BenchError, DeviceResult, Fail, Journal,
    Opener, PortSettings, Progress, Status, Track,
};
use crate::bundle::{self, CertRow};
use crate::util::first_cert_der;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Amazon Root CA 1 (nRF Cloud MQTT/HTTPS), as shipped in `keys/`.
pub const AMAZON_ROOT_CA1: &str = include_str!("../../../keys/AmazonRootCA1.pem");
/// nRF Cloud CoAP CA, as shipped in `keys/`.
pub const NRF_CLOUD_COAP_CA: &str = include_str!("../../../keys/nrf-cloud-coap-ca.pem");

/// The default root CA bundle written as type 0: Amazon Root CA 1 then the nRF Cloud CoAP CA,
/// LF line ends.
pub fn default_root_bundle() -> String {
    let mut s = at::normalize_pem(AMAZON_ROOT_CA1);
    s.push_str(&at::normalize_pem(NRF_CLOUD_COAP_CA));
    s
}

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

/// A certificate authority the bench trusts: what is needed to check a device certificate.
#[derive(Debug, Clone)]
struct TrustedCa {
    subject_der: Vec<u8>,
    public_key: Vec<u8>,
    /// SHA-256 of the CA certificate DER (lowercase hex): what a device is pinned to.
    sha256: String,
}

fn read_file(path: &Path, what: &str) -> Result<String, BenchError> {
    let meta = std::fs::metadata(path).map_err(|e| BenchError::File {
        path: path.to_path_buf(),
        detail: format!("cannot read the {what}: {e}"),
    })?;
    if meta.len() > 1 << 20 {
        return Err(BenchError::File {
            path: path.to_path_buf(),
            detail: format!("the {what} is larger than 1 MiB; is this the right file?"),
        });
    }
    std::fs::read_to_string(path).map_err(|e| BenchError::File {
        path: path.to_path_buf(),
        detail: format!("cannot read the {what}: {e}"),
    })
}

fn parse_cert_der(der: &[u8]) -> Result<x509_cert::Certificate, String> {
    use der::Decode;
    x509_cert::Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))
}

fn trusted_ca(pem: &str, path: &Path) -> Result<TrustedCa, BenchError> {
    use der::Encode;
    let bad = |detail: String| BenchError::File {
        path: path.to_path_buf(),
        detail,
    };
    let der = first_cert_der(pem).ok_or_else(|| {
        bad("no CERTIFICATE in the --trust file; pass the signer's ca.pem".into())
    })?;
    let cert = parse_cert_der(&der).map_err(bad)?;
    let subject_der = cert
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let public_key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| bad("the CA public key is malformed".into()))?;
    Ok(TrustedCa {
        subject_der,
        public_key,
        sha256: crate::crypto::sha256_hex(&der),
    })
}

/// Device → intermediate → root: when `--trust` is the root of the bundle's CA,
/// [`bundle::verify`] checked the intermediate in `chain.pem` against it; the device
/// certificates are then checked against that intermediate. Otherwise the trusted CA itself.
fn issuing_ca(
    trusted: TrustedCa,
    verified: &bundle::VerifiedBundle,
    path: &Path,
) -> Result<TrustedCa, BenchError> {
    match &verified.via_chain {
        None => Ok(trusted),
        Some(pem) => trusted_ca(pem, path),
    }
}

/// `--trust` must not come from the bundle it is to check: whoever can write the bundle could
/// then put their own CA beside their own certificates. Refused when the trust file, with
/// symlinks resolved, lies inside the bundle directory, or is a hard link to a file in it.
/// `--bundle` must be a directory holding a `manifest.json`: say so before the bundle's own
/// checks report a missing file, which reads as a damaged bundle.
fn check_bundle_dir(dir: &Path) -> Result<(), BenchError> {
    let usage = |why: &str| {
        Err(BenchError::Usage(format!(
            "--bundle {}: {why}; refused before touching any modem: give the bundle directory \
             `nrfca sign --out` wrote, copied whole from the signer",
            dir.display()
        )))
    };
    match std::fs::metadata(dir) {
        Err(_) => usage("no such directory"),
        Ok(m) if !m.is_dir() => usage("not a directory"),
        Ok(_) if !dir.join("manifest.json").exists() && !dir.join("manifest.sig").exists() => {
            usage("not a bundle (it has no manifest.json)")
        }
        Ok(_) => Ok(()),
    }
}

fn trust_outside_bundle(trust: &Path, bundle_dir: &Path) -> Result<(), BenchError> {
    // A bundle or trust file that does not resolve is reported by the checks that read it.
    let (Ok(t), Ok(b)) = (
        std::fs::canonicalize(trust),
        std::fs::canonicalize(bundle_dir),
    ) else {
        return Ok(());
    };
    let inside = || {
        BenchError::Usage(format!(
            "--trust {} is inside the bundle {}: a bundle cannot vouch for itself (whoever \
             wrote it could have put their own CA there). Pass the signer's ca.pem as the bench \
             received it separately (checked against the fingerprint the officer wrote down), \
             from outside the bundle directory",
            trust.display(),
            bundle_dir.display()
        ))
    };
    if t.starts_with(&b) {
        return Err(inside());
    }
    // The same file under another name (hard link): compare device and inode with the
    // bundle's files (its top level and one level of sub-directories, e.g. certs/).
    use std::os::unix::fs::MetadataExt;
    let Ok(tm) = std::fs::metadata(&t) else {
        return Ok(());
    };
    if tm.nlink() < 2 {
        return Ok(());
    }
    let same = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.dev() == tm.dev() && m.ino() == tm.ino())
    };
    for e in std::fs::read_dir(&b).into_iter().flatten().flatten() {
        let p = e.path();
        if same(&p) {
            return Err(inside());
        }
        if e.file_type().is_ok_and(|ft| ft.is_dir()) {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if same(&e.path()) {
                    return Err(inside());
                }
            }
        }
    }
    Ok(())
}

/// Root CA bundle from files (each must hold at least one parseable certificate).
fn root_bundle(files: &[PathBuf]) -> Result<String, BenchError> {
    if files.is_empty() {
        return Ok(default_root_bundle());
    }
    let mut out = String::new();
    for f in files {
        let text = read_file(f, "root CA file")?;
        let blocks = crate::util::pem_blocks(&text);
        let certs: Vec<_> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
        if certs.is_empty() || blocks.len() != certs.len() {
            return Err(BenchError::File {
                path: f.clone(),
                detail: "a --root-ca file must hold only PEM certificates".into(),
            });
        }
        for b in certs {
            let der = b.decode().map_err(|e| BenchError::File {
                path: f.clone(),
                detail: format!("bad base64 in a certificate: {e}"),
            })?;
            parse_cert_der(&der).map_err(|detail| BenchError::File {
                path: f.clone(),
                detail,
            })?;
        }
        out.push_str(&at::normalize_pem(&text));
    }
    // Refuse early what the modem could not take (quotes, > 4095-byte command).
    at::cmng_write_command(2_147_483_647, 0, &out).map_err(|e| BenchError::File {
        path: files.first().cloned().unwrap_or_default(),
        detail: format!("the root CA bundle cannot be written to a modem: {e}"),
    })?;
    Ok(out)
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

/// Which of the device's bench records to import, with its certificate from the bundle (pure:
/// no modem, no state). A device with none is refused with the reason: its export is not
/// complete, the signer rejected its request (`rejects` = (uuid, code, detail) rows of the
/// verified rejects.csv), or the bundle simply has no certificate for it.
fn select<'c>(
    records: &[DeviceRecord],
    certs: &'c [CertRow],
    rejects: &[(String, String, String)],
) -> Result<(DeviceRecord, &'c CertRow), Fail> {
    if let Some(c) = records
        .iter()
        .filter(|r| r.state.has_exported_key())
        .find_map(|r| find_row(certs, r).map(|row| (r.clone(), row)))
    {
        return Ok(c);
    }
    let uuid = records
        .first()
        .and_then(|r| r.uuid.clone())
        .unwrap_or_default();
    if let Some(r) = records.iter().find(|r| !r.state.has_exported_key()) {
        return Err(refused(
            BenchCode::NotExported,
            format!("the device's export is not complete (state {})", r.state),
            r.state.next_step(),
        ));
    }
    if let Some((_, code, detail)) = rejects.iter().find(|(u, _, _)| *u == uuid) {
        return Err(refused(
            BenchCode::RequestRejected,
            format!("the signer rejected this device's request: {code}: {detail}"),
            "see rejects.csv in the bundle; fix the cause, export again if needed, and sign again",
        ));
    }
    Err(refused(
        BenchCode::NoCertificate,
        "the bundle has no certificate for this device",
        "check that its request was in the signed requests file, or use the bundle that has it",
    ))
}

fn find_row<'c>(certs: &'c [CertRow], rec: &DeviceRecord) -> Option<&'c CertRow> {
    let uuid = rec.uuid.as_deref().unwrap_or("").to_ascii_lowercase();
    let matches = |r: &&CertRow| {
        r.sec_tag == rec.sec_tag
            && ((!r.imei.is_empty() && r.imei == rec.imei)
                || (!uuid.is_empty() && r.device_uuid.to_ascii_lowercase() == uuid))
    };
    // Prefer the row carrying the recorded key; fall back to any row of the device (it will
    // then fail the key check with a clear reason).
    let key = rec.public_key.as_deref().unwrap_or("");
    certs
        .iter()
        .filter(matches)
        .find(|r| cert_key_hex(&r.certificate_pem).as_deref() == Some(key))
        .or_else(|| certs.iter().find(matches))
}

fn cert_key_hex(pem: &str) -> Option<String> {
    let der = first_cert_der(pem)?;
    bundle::cert_public_key(&der).ok().map(hex::encode)
}

/// The checks of SPEC §6 on one certificate: chains to the trusted CA, carries the key
/// recorded at export, names the device, is still valid.
fn check_cert(ca: &TrustedCa, row: &CertRow, rec: &DeviceRecord) -> Result<(), Fail> {
    use der::Encode;
    let next_resign =
        "sign this device's request again with the trusted CA and import the new bundle";
    let der = first_cert_der(&row.certificate_pem).ok_or_else(|| {
        refused(
            BenchCode::CertMalformed,
            "the bundle row holds no certificate PEM",
            next_resign,
        )
    })?;
    let cert =
        parse_cert_der(&der).map_err(|d| refused(BenchCode::CertMalformed, d, next_resign))?;
    let tbs = &cert.tbs_certificate;
    let issuer = tbs
        .issuer
        .to_der()
        .map_err(|e| refused(BenchCode::CertMalformed, e.to_string(), next_resign))?;
    if issuer != ca.subject_der {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate's issuer is not the trusted CA",
            next_resign,
        ));
    }
    const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    if cert.signature_algorithm.oid.to_string() != ECDSA_SHA256 {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate is not signed with ecdsa-with-SHA256",
            next_resign,
        ));
    }
    let tbs_der = tbs
        .to_der()
        .map_err(|e| refused(BenchCode::CertMalformed, e.to_string(), next_resign))?;
    let sig = cert.signature.as_bytes().unwrap_or(&[]);
    if !crate::crypto::verify_p256_sha256(&ca.public_key, &tbs_der, sig) {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate's signature does not verify with the trusted CA key",
            next_resign,
        ));
    }
    let key = tbs
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(hex::encode)
        .unwrap_or_default();
    if Some(key.as_str()) != rec.public_key.as_deref() {
        return Err(refused(
            BenchCode::CertKeyMismatch,
            "the certificate's public key is not the key this device exported",
            "the bundle holds a certificate for an older or other key: export the device again if its key changed, sign, and import the new bundle",
        ));
    }
    check_names_device(&tbs.subject, rec)?;
    let not_after = tbs.validity.not_after.to_unix_duration();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    if not_after <= now_unix {
        return Err(refused(
            BenchCode::CertExpired,
            format!("the certificate expired ({})", row.not_after),
            next_resign,
        ));
    }
    Ok(())
}

/// The certificate's subject must be exactly one CN naming this device: the UUID recorded at
/// export (any case) or `nrf-<IMEI>` with the device's IMEI (SPEC §4: nRF Cloud reads only
/// the CN, so a certificate for another name would connect the device as someone else).
fn check_names_device(subject: &x509_cert::name::Name, rec: &DeviceRecord) -> Result<(), Fail> {
    const CN: &str = "2.5.4.3";
    let next = "the bundle's certificate names another device: get a bundle signed for this device (its UUID, or nrf-<IMEI> with --device-id cn) and import it";
    let mut cns = Vec::new();
    for rdn in subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid.to_string() == CN {
                // UTF8String or PrintableString: the content bytes are the text.
                cns.push(String::from_utf8_lossy(atv.value.value()).into_owned());
            }
        }
    }
    let [cn] = cns.as_slice() else {
        return Err(refused(
            BenchCode::CertWrongDevice,
            format!(
                "the certificate's subject has {} CN attributes, not one naming the device",
                cns.len()
            ),
            next,
        ));
    };
    let by_uuid = rec
        .uuid
        .as_deref()
        .is_some_and(|u| !u.is_empty() && cn.eq_ignore_ascii_case(u));
    let by_imei = cn.strip_prefix("nrf-") == Some(rec.imei.as_str());
    if by_uuid || by_imei {
        return Ok(());
    }
    Err(refused(
        BenchCode::CertWrongDevice,
        format!(
            "the certificate is for CN {}, not this device (UUID {}, IMEI {})",
            crate::util::term_escape(cn),
            rec.uuid.as_deref().unwrap_or("unknown"),
            rec.imei
        ),
        next,
    ))
}

/// The CA pin (SPEC §6, issue 10): a device whose installed certificate came from one CA is
/// not re-provisioned from another without `--force`. Every record of the IMEI counts (all
/// its sec_tags). A record imported before pins existed (no `ca_sha256`) but holding another
/// certificate than this one has an unknown CA: refused the same way (`ca-unpinned`).
/// With `force`, the change is accepted and noted in the journal.
fn check_ca_pin(
    ca: &TrustedCa,
    records: &[DeviceRecord],
    cert_sha: &str,
    force: bool,
    journal: &Journal,
) -> Result<(), Fail> {
    for r in records {
        let (code, detail) = match &r.ca_sha256 {
            Some(pinned) if !pinned.eq_ignore_ascii_case(&ca.sha256) => (
                BenchCode::CaChanged,
                format!(
                    "sec_tag {} holds a certificate from CA {pinned}; this bundle is from CA {}",
                    r.sec_tag, ca.sha256
                ),
            ),
            None if r
                .cert_sha256
                .as_deref()
                .is_some_and(|c| !c.eq_ignore_ascii_case(cert_sha)) =>
            (
                BenchCode::CaUnpinned,
                format!(
                    "sec_tag {} holds certificate {} installed before nrfca pinned CAs (its CA is unknown); this bundle is from CA {}",
                    r.sec_tag,
                    r.cert_serial.as_deref().unwrap_or("?"),
                    ca.sha256
                ),
            ),
            _ => continue,
        };
        if !force {
            return Err(refused(
                code,
                detail,
                "if the device is to move to this CA on purpose, re-run import with --force (the change is journaled); otherwise use the trusted CA of its current certificate",
            ));
        }
        journal.note("forced", &format!("{code} accepted with --force: {detail}"));
    }
    Ok(())
}

/// One port's run of [`import_device`]: where its steps are reported and journaled.
struct PortRun<'r, 'c> {
    ctx: &'r Ctx<'c>,
    port: &'r str,
    journal: &'r Journal,
}

impl PortRun<'_, '_> {
    fn step(&self, imei: Option<&str>, what: &str) {
        step(self.ctx, self.port, imei, what);
    }
}

/// What one device's slots must hold at the end, fixed before anything is written.
#[derive(Debug, Clone)]
struct Target {
    /// The sec_tag of the exported key: the certificate goes beside it.
    tag: u32,
    /// Where the root CAs go: `--ca-sec-tag`, else `tag`.
    ca_tag: u32,
    /// The certificate as written (LF line ends, final newline).
    cert_pem: String,
    /// SHA-256 the modem will list for the certificate (lowercase hex).
    cert_sha: String,
    /// SHA-256 the modem will list for the root CA bundle (lowercase hex).
    root_sha: String,
    /// The certificate's serial, as the bundle lists it.
    serial: String,
}

/// The slot listings of a device: its sec_tag, and the root CAs' sec_tag when that differs.
#[derive(Debug, Clone, Default)]
struct Slots {
    tag: Vec<at::CmngEntry>,
    ca: Option<Vec<at::CmngEntry>>,
}

impl Slots {
    /// The listing that holds (or should hold) the root CAs.
    fn roots(&self) -> &[at::CmngEntry] {
        self.ca.as_deref().unwrap_or(&self.tag)
    }
}

/// What to do with a device's slots once the certificate passed its checks.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// The slots hold this certificate and the root CAs and the record says imported.
    AlreadyImported,
    /// Write what the slots lack (possibly nothing, when only the record is behind), then
    /// verify that the exported key, listed now as `key_sha256`, is still there.
    Write { key_sha256: String, writes: Writes },
}

/// Which of the two credentials to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Writes {
    /// The root CA bundle (type 0).
    root: bool,
    /// The device certificate (type 1).
    cert: bool,
}

/// The certificate text to write: LF line ends and a final newline (the bundle's PEM as is
/// when it already has both).
fn cert_pem_for_modem(pem: &str) -> String {
    if pem.contains('\r') || !pem.ends_with('\n') {
        at::normalize_pem(pem)
    } else {
        pem.to_string()
    }
}

/// The UUID the modem reports must be the one recorded at export for this IMEI (pure; `None`:
/// the modem did not say, nothing to compare).
fn check_modem_uuid(rec: &DeviceRecord, reported: Option<&str>) -> Result<(), Fail> {
    match reported {
        Some(u)
            if rec
                .uuid
                .as_deref()
                .is_some_and(|r| !r.eq_ignore_ascii_case(u)) =>
        {
            Err(refused(
                BenchCode::IdentityMismatch,
                format!(
                    "the modem reports UUID {u}, but IMEI {} was exported as {}",
                    rec.imei,
                    rec.uuid.as_deref().unwrap_or("?")
                ),
                "the IMEI/UUID pairing changed: investigate the device before importing",
            ))
        }
        _ => Ok(()),
    }
}

/// Decide from the device's record and its slot listings what to write (pure: no modem, no
/// state). The exported key (type 2) must still be there, unchanged; the root CAs and the
/// certificate are written unless the listing shows them with the expected SHA-256.
fn plan(rec: &DeviceRecord, t: &Target, slots: &Slots) -> Result<Plan, Fail> {
    let tag = t.tag;
    let Some(key) = slots.tag.iter().find(|e| e.kind == 2) else {
        if slots.tag.iter().any(|e| e.kind == 8) {
            return Err(refused(
                BenchCode::KeyMissing,
                format!("sec_tag {tag} holds an endorsement key (type 8, from AT%KEYGEN key_type 8), not the client key (type 2) a device certificate pairs with"),
                "delete the slot's type 8 key only if it is not used for anything else, then run `nrfca bench export --force` on this device (it asks for key_type 2), sign, and import again",
            ));
        }
        return Err(refused(
            BenchCode::KeyMissing,
            format!("sec_tag {tag} no longer holds the key exported on {}", rec.exported_at.as_deref().unwrap_or("?")),
            "the certificate is useless without its key: run `nrfca bench export --force` on this device, sign, and import again",
        ));
    };
    if let Some(recorded) = &rec.key_sha256 {
        if !recorded.eq_ignore_ascii_case(&key.sha256) {
            return Err(refused(
                BenchCode::KeyChanged,
                format!("sec_tag {tag} holds a different key than the one exported"),
                "run `nrfca bench export --force` on this device, sign, and import again",
            ));
        }
    }
    let has = |l: &[at::CmngEntry], kind: u8, sha: &str| {
        l.iter()
            .any(|e| e.kind == kind && e.sha256.eq_ignore_ascii_case(sha))
    };
    let root_ok = has(slots.roots(), 0, &t.root_sha);
    let cert_ok = has(&slots.tag, 1, &t.cert_sha);
    if root_ok && cert_ok && rec.state == DeviceState::Imported {
        return Ok(Plan::AlreadyImported);
    }
    Ok(Plan::Write {
        key_sha256: key.sha256.clone(),
        writes: Writes {
            root: !root_ok,
            cert: !cert_ok,
        },
    })
}

/// After writing, the listing must show the root CAs, the certificate and the key exactly as
/// intended (pure). Every mismatch is named in the one refusal.
fn verify_listing(t: &Target, key_sha256: &str, after: &Slots) -> Result<(), Fail> {
    let listed_in =
        |l: &[at::CmngEntry], kind: u8| l.iter().find(|e| e.kind == kind).map(|e| e.sha256.clone());
    let listed = |kind: u8| listed_in(&after.tag, kind);
    let mut problems = Vec::new();
    match listed_in(after.roots(), 0) {
        Some(s) if s.eq_ignore_ascii_case(&t.root_sha) => {}
        Some(s) => problems.push(format!(
            "type 0 lists {s}, expected {}",
            t.root_sha.to_uppercase()
        )),
        None => problems.push("type 0 (root CAs) is not listed".to_string()),
    }
    match listed(1) {
        Some(s) if s.eq_ignore_ascii_case(&t.cert_sha) => {}
        Some(s) => problems.push(format!(
            "type 1 lists {s}, expected {}",
            t.cert_sha.to_uppercase()
        )),
        None => problems.push("type 1 (certificate) is not listed".to_string()),
    }
    match listed(2) {
        Some(s) if s.eq_ignore_ascii_case(key_sha256) => {}
        _ => problems.push("type 2 (the key) changed or vanished during import".to_string()),
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(refused(
        BenchCode::VerifyFailed,
        format!("after writing, the modem's listing does not match: {}", problems.join("; ")),
        "re-run import; if it persists the modem stores credentials differently (check its firmware)",
    ))
}

/// The functional mode to set after a verified import (pure): the one found before export,
/// unless that is 4 (where the writes leave the modem) or the modem is already in it.
fn cfun_to_restore(target: u8, cfun_now: u8, changed: bool) -> Option<u8> {
    (target != 4 && (changed || cfun_now != target)).then_some(target)
}

/// The record of a verified import (`note`: what could not be done afterwards, or empty).
fn mark_imported(rec: &mut DeviceRecord, t: &Target, ca_sha256: &str, note: &str) {
    rec.state = DeviceState::Imported;
    rec.imported_at = Some(now());
    rec.cert_serial = Some(t.serial.clone());
    rec.cert_sha256 = Some(t.cert_sha.clone());
    rec.root_sha256 = Some(t.root_sha.clone());
    rec.ca_sha256 = Some(ca_sha256.to_string());
    rec.error_code = None;
    rec.last_error = if note.is_empty() {
        None
    } else {
        Some(note.trim().to_string())
    };
}

/// What a verified import reports.
fn done_detail(t: &Target, note: &str) -> String {
    let serial = &t.serial;
    if t.ca_tag == t.tag {
        format!("certificate {serial} and root CAs installed and verified by SHA-256{note}")
    } else {
        format!(
            "certificate {serial} and root CAs (sec_tag {}) installed and verified by SHA-256{note}",
            t.ca_tag
        )
    }
}

fn import_device(
    ctx: &Ctx<'_>,
    port: &str,
    m: &mut Modem<Box<dyn Transport>>,
    journal: &Journal,
    track: &mut Track,
) -> Result<DeviceResult, Fail> {
    let run = PortRun { ctx, port, journal };
    run.step(None, "identify");
    let cfun_now = m.cfun()?;
    let imei = m.imei()?;
    journal.set_imei(&imei);
    track.imei = Some(imei.clone());
    let imei_s = Some(imei.as_str());
    let records = ctx.state.devices_by_imei(&imei)?;
    let (mut rec, row) = choose(ctx, &imei, &records, track)?;
    track.restore_to = Some(rec.cfun_before.unwrap_or(cfun_now));

    run.step(imei_s, "check certificate");
    check_cert(&ctx.ca, row, &rec)?;
    check_modem_uuid(&rec, reported_uuid(m)?.as_deref())?;
    let target = target(ctx, m, &rec, row);
    check_ca_pin(&ctx.ca, &records, &target.cert_sha, ctx.opts.force, journal)?;

    run.step(imei_s, "check slot");
    let (key_sha256, writes) = match plan(&rec, &target, &list_slots(m, &target)?)? {
        Plan::AlreadyImported => return already_imported(&run, rec, &target),
        Plan::Write { key_sha256, writes } => (key_sha256, writes),
    };
    // Write-ahead: from here on the slot may change.
    rec.state = DeviceState::ImportUnknown;
    rec.port = Some(port.to_string());
    rec.bundle = Some(ctx.opts.bundle.display().to_string());
    journal.commit(&rec)?;
    write_missing(&run, m, track, &target, writes, cfun_now)?;

    run.step(imei_s, "verify");
    verify_listing(&target, &key_sha256, &list_slots(m, &target)?)?;
    let note = restore_cfun(&run, m, track, cfun_now, &imei);
    mark_imported(&mut rec, &target, &ctx.ca.sha256, &note);
    journal.note("result", &format!("imported certificate {}", target.serial));
    journal.commit(&rec)?;
    Ok(DeviceResult {
        port: port.to_string(),
        imei: Some(imei),
        uuid: rec.uuid.clone(),
        sec_tag: target.tag,
        status: Status::Done,
        code: None,
        detail: done_detail(&target, &note),
        next_step: None,
    })
}

/// The record to import for this IMEI and its bundle row ([`select`]), noting what is known
/// of the device in `track` either way.
fn choose<'c>(
    ctx: &'c Ctx<'_>,
    imei: &str,
    records: &[DeviceRecord],
    track: &mut Track,
) -> Result<(DeviceRecord, &'c CertRow), Fail> {
    if records.is_empty() {
        return Err(refused(
            BenchCode::NotExportedHere,
            format!(
                "IMEI {imei} was never exported on this bench (state {})",
                ctx.state.path().display()
            ),
            "import on the bench that exported it, or pass its --state directory; with simulated modems, the likely cause is an `nrfca sim` restarted without its `--state FILE` (a new simulator has new IMEIs and keys): restart it with the same --state, or export again",
        ));
    }
    let chosen = select(records, &ctx.certs, &ctx.rejects);
    let rec = match &chosen {
        Ok((rec, _)) => Some(rec),
        Err(_) => records.first(),
    };
    track.sec_tag = rec.map(|r| r.sec_tag);
    track.uuid = rec.and_then(|r| r.uuid.clone());
    chosen
}

/// The UUID the modem reports, if it answers; only a lost contact is an error here.
fn reported_uuid(m: &mut Modem<Box<dyn Transport>>) -> Result<Option<String>, Fail> {
    match m.device_uuid() {
        Ok(u) => Ok(u),
        Err(e) if e.outcome_unknown() => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// What goes where for this device; the SHA-256 values are what the modem will list for the
/// bytes it stores (over the shell dialect those have CR LF line ends).
fn target(
    ctx: &Ctx<'_>,
    m: &Modem<Box<dyn Transport>>,
    rec: &DeviceRecord,
    row: &CertRow,
) -> Target {
    let cert_pem = cert_pem_for_modem(&row.certificate_pem);
    Target {
        tag: rec.sec_tag,
        ca_tag: ctx.opts.ca_sec_tag.unwrap_or(rec.sec_tag),
        cert_sha: m.stored_sha256(&cert_pem).to_ascii_lowercase(),
        root_sha: m.stored_sha256(&ctx.root).to_ascii_lowercase(),
        cert_pem,
        serial: row.serial.clone(),
    }
}

fn list_slots(m: &mut Modem<Box<dyn Transport>>, t: &Target) -> Result<Slots, Fail> {
    let tag = m.cmng_list(t.tag)?;
    let ca = if t.ca_tag == t.tag {
        None
    } else {
        Some(m.cmng_list(t.ca_tag)?)
    };
    Ok(Slots { tag, ca })
}

/// Nothing to write: say so, and pin the CA of a device imported before CA pinning (the
/// certificate in place is this CA's).
fn already_imported(
    run: &PortRun<'_, '_>,
    mut rec: DeviceRecord,
    t: &Target,
) -> Result<DeviceResult, Fail> {
    let detail = format!(
        "already imported on {} (certificate {})",
        rec.imported_at.as_deref().unwrap_or("?"),
        t.serial
    );
    run.journal.note("decision", &detail);
    if rec.ca_sha256.is_none() {
        rec.ca_sha256 = Some(run.ctx.ca.sha256.clone());
        run.journal.commit(&rec)?;
    }
    Ok(DeviceResult {
        port: run.port.to_string(),
        imei: Some(rec.imei.clone()),
        uuid: rec.uuid.clone(),
        sec_tag: t.tag,
        status: Status::AlreadyDone,
        code: None,
        detail,
        next_step: None,
    })
}

/// Write the root CAs and the certificate where [`plan`] found them missing, in CFUN=4.
fn write_missing(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &mut Track,
    t: &Target,
    writes: Writes,
    cfun_now: u8,
) -> Result<(), Fail> {
    let imei = track.imei.clone();
    let imei_s = imei.as_deref();
    if (writes.root || writes.cert) && cfun_now != 4 {
        run.step(imei_s, "CFUN=4");
        track.cfun_changed = true;
        m.set_cfun(4)?;
    }
    if writes.root {
        run.step(imei_s, "write root CAs");
        m.cmng_write(t.ca_tag, 0, &run.ctx.root)?;
    } else {
        run.journal
            .note("skip", "root CA bundle already in place (SHA-256 matches)");
    }
    if writes.cert {
        run.step(imei_s, "write certificate");
        m.cmng_write(t.tag, 1, &t.cert_pem)?;
    } else {
        run.journal
            .note("skip", "certificate already in place (SHA-256 matches)");
    }
    Ok(())
}

/// Put back the functional mode found before export; a failure to do so is only noted (the
/// import itself is verified): the note to append to the result, or empty.
fn restore_cfun(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &Track,
    cfun_now: u8,
    imei: &str,
) -> String {
    let target = track.restore_to.unwrap_or(cfun_now);
    let Some(mode) = cfun_to_restore(target, cfun_now, track.cfun_changed) else {
        return String::new();
    };
    run.step(Some(imei), &format!("CFUN={mode}"));
    match m.set_cfun(mode) {
        Ok(()) => String::new(),
        Err(e) => format!(
            " (could not restore CFUN={mode}: {}; set it by hand)",
            e.outcome_text()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which record and certificate `select` takes, or why it refuses, by case.
    #[test]
    fn select_table() {
        let rec = |imei: &str, tag: u32, state: DeviceState, uuid: &str| {
            let mut r = DeviceRecord::new(imei, tag, state);
            r.uuid = Some(uuid.to_string());
            r
        };
        let row = |uuid: &str, imei: &str, tag: u32, serial: &str| CertRow {
            device_uuid: uuid.into(),
            imei: imei.into(),
            sec_tag: tag,
            serial: serial.into(),
            not_before: String::new(),
            not_after: String::new(),
            sha256: String::new(),
            certificate_pem: String::new(),
        };
        const A: &str = "355025930000001";
        const U: &str = "50503041-3539-47eb-8000-000000000001";
        let rejects = [(
            U.to_string(),
            "bad-csr-signature".to_string(),
            "x".to_string(),
        )];
        use DeviceState::*;
        let cases: Vec<(&str, Vec<DeviceRecord>, Vec<CertRow>, &str)> = vec![
            (
                "by IMEI",
                vec![rec(A, 7, Exported, U)],
                vec![row("", A, 7, "s1")],
                "7 s1",
            ),
            (
                "by UUID, any case",
                vec![rec(A, 7, Exported, U)],
                vec![row(&U.to_uppercase(), "", 7, "s2")],
                "7 s2",
            ),
            (
                "other sec_tag only",
                vec![rec(A, 7, Exported, U)],
                vec![row(U, A, 8, "s3")],
                "no-certificate",
            ),
            (
                "imported before: again",
                vec![rec(A, 7, Imported, U)],
                vec![row(U, A, 7, "s4")],
                "7 s4",
            ),
            (
                "the tag that has one",
                vec![rec(A, 7, Exported, U), rec(A, 8, Exported, U)],
                vec![row(U, A, 8, "s5")],
                "8 s5",
            ),
            (
                "export not complete",
                vec![rec(A, 7, ExportFailed, U)],
                vec![row(U, A, 7, "s6")],
                "not-exported",
            ),
            (
                "rejected by the signer",
                vec![rec(A, 7, Exported, U)],
                vec![],
                "request-rejected",
            ),
        ];
        for (name, records, certs, want) in cases {
            let r = if name == "rejected by the signer" {
                &rejects[..]
            } else {
                &[][..]
            };
            let got = match select(&records, &certs, r) {
                Ok((rec, row)) => format!("{} {}", rec.sec_tag, row.serial),
                Err(f) => f.parts().0,
            };
            assert_eq!(got, want, "case: {name}");
        }
    }

    fn entry(tag: u64, kind: u8, sha: &str) -> at::CmngEntry {
        at::CmngEntry {
            sec_tag: tag,
            kind,
            sha256: sha.into(),
        }
    }

    /// A target at sec_tag 7, root CAs at `ca_tag`; the modem lists uppercase hex.
    fn target(ca_tag: u32) -> Target {
        Target {
            tag: 7,
            ca_tag,
            cert_pem: String::new(),
            cert_sha: "cc".into(),
            root_sha: "aa".into(),
            serial: "01".into(),
        }
    }

    /// What `plan` decides, as a short string the table can name.
    fn planned(r: Result<Plan, Fail>) -> String {
        match r {
            Ok(Plan::AlreadyImported) => "already-imported".into(),
            Ok(Plan::Write { key_sha256, writes }) => format!(
                "write key {key_sha256} root {} cert {}",
                writes.root, writes.cert
            ),
            Err(f) => {
                let (code, detail, _, _) = f.parts();
                format!("refuse {code}: {detail}")
            }
        }
    }

    #[test]
    fn plan_table() {
        use DeviceState::*;
        let rec = |state: DeviceState, key: Option<&str>| {
            let mut r = DeviceRecord::new("355025930000001", 7, state);
            r.key_sha256 = key.map(str::to_string);
            r.exported_at = Some("T".into());
            r
        };
        let (root, cert, key) = (entry(7, 0, "AA"), entry(7, 1, "CC"), entry(7, 2, "KK"));
        let full = || vec![root.clone(), cert.clone(), key.clone()];
        /// (case, record, listing of sec_tag 7, listing of the CA tag 9 if apart, decision)
        type Case = (
            &'static str,
            DeviceRecord,
            Vec<at::CmngEntry>,
            Option<Vec<at::CmngEntry>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "fresh slot with the key",
                rec(Exported, Some("kk")),
                vec![key.clone()],
                None,
                "write key KK root true cert true",
            ),
            (
                "no key recorded: any type 2 will do",
                rec(Exported, None),
                vec![key.clone()],
                None,
                "write key KK root true cert true",
            ),
            (
                "root CAs in place",
                rec(Exported, Some("KK")),
                vec![root.clone(), key.clone()],
                None,
                "write key KK root false cert true",
            ),
            (
                "root CAs of another bundle",
                rec(Exported, Some("KK")),
                vec![entry(7, 0, "AB"), cert.clone(), key.clone()],
                None,
                "write key KK root true cert false",
            ),
            (
                "everything in place, imported",
                rec(Imported, Some("KK")),
                full(),
                None,
                "already-imported",
            ),
            (
                "everything in place, not recorded as imported",
                rec(ImportUnknown, Some("KK")),
                full(),
                None,
                "write key KK root false cert false",
            ),
            (
                "imported but the certificate differs",
                rec(Imported, Some("KK")),
                vec![root.clone(), entry(7, 1, "CD"), key.clone()],
                None,
                "write key KK root false cert true",
            ),
            (
                "CA tag apart: roots beside the certificate do not count",
                rec(Imported, Some("KK")),
                full(),
                Some(vec![]),
                "write key KK root true cert false",
            ),
            (
                "CA tag apart, roots there",
                rec(Imported, Some("KK")),
                vec![cert.clone(), key.clone()],
                Some(vec![entry(9, 0, "AA")]),
                "already-imported",
            ),
            (
                "key gone",
                rec(Exported, Some("KK")),
                vec![root.clone(), cert.clone()],
                None,
                "refuse key-missing: sec_tag 7 no longer holds the key exported on T",
            ),
            (
                "endorsement key instead",
                rec(Exported, Some("KK")),
                vec![entry(7, 8, "EE")],
                None,
                "refuse key-missing: sec_tag 7 holds an endorsement key (type 8, from AT%KEYGEN key_type 8), not the client key (type 2) a device certificate pairs with",
            ),
            (
                "key replaced",
                rec(Imported, Some("KA")),
                full(),
                None,
                "refuse key-changed: sec_tag 7 holds a different key than the one exported",
            ),
        ];
        for (name, rec, tag, ca, want) in cases {
            let t = target(if ca.is_some() { 9 } else { 7 });
            let got = planned(plan(&rec, &t, &Slots { tag, ca }));
            assert_eq!(got, want, "case: {name}");
        }
    }

    #[test]
    fn verify_listing_table() {
        let ok = || vec![entry(7, 0, "AA"), entry(7, 1, "CC"), entry(7, 2, "KK")];
        type Case = (
            &'static str,
            Vec<at::CmngEntry>,
            Option<Vec<at::CmngEntry>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("all as written", ok(), None, "ok"),
            (
                "CA tag apart",
                vec![entry(7, 1, "CC"), entry(7, 2, "KK")],
                Some(vec![entry(9, 0, "aa")]),
                "ok",
            ),
            (
                "CA tag apart, roots only beside the certificate",
                ok(),
                Some(vec![]),
                "type 0 (root CAs) is not listed",
            ),
            (
                "other root CAs",
                vec![entry(7, 0, "AB"), entry(7, 1, "CC"), entry(7, 2, "KK")],
                None,
                "type 0 lists AB, expected AA",
            ),
            (
                "certificate missing, key changed",
                vec![entry(7, 0, "AA"), entry(7, 2, "KL")],
                None,
                "type 1 (certificate) is not listed; type 2 (the key) changed or vanished during import",
            ),
            (
                "nothing listed",
                vec![],
                None,
                "type 0 (root CAs) is not listed; type 1 (certificate) is not listed; type 2 (the key) changed or vanished during import",
            ),
        ];
        for (name, tag, ca, want) in cases {
            let t = target(if ca.is_some() { 9 } else { 7 });
            let got = match verify_listing(&t, "kk", &Slots { tag, ca }) {
                Ok(()) => "ok".to_string(),
                Err(f) => {
                    let (code, detail, _, _) = f.parts();
                    assert_eq!(code, "verify-failed", "case: {name}");
                    detail
                        .strip_prefix("after writing, the modem's listing does not match: ")
                        .unwrap_or(&detail)
                        .to_string()
                }
            };
            assert_eq!(got, want, "case: {name}");
        }
    }

    #[test]
    fn check_modem_uuid_table() {
        const U: &str = "50503041-3539-47eb-8000-000000000001";
        let cases: [(&str, Option<&str>, Option<&str>, bool); 5] = [
            ("same", Some(U), Some(U), true),
            (
                "same, other case",
                Some(U),
                Some("50503041-3539-47EB-8000-000000000001"),
                true,
            ),
            ("modem does not say", Some(U), None, true),
            ("nothing recorded", None, Some(U), true),
            (
                "other device",
                Some(U),
                Some("50503041-3539-47eb-8000-000000000002"),
                false,
            ),
        ];
        for (name, recorded, reported, ok) in cases {
            let mut rec = DeviceRecord::new("355025930000001", 7, DeviceState::Exported);
            rec.uuid = recorded.map(str::to_string);
            let got = check_modem_uuid(&rec, reported);
            assert_eq!(got.is_ok(), ok, "case: {name}");
            if let Err(f) = got {
                assert_eq!(f.parts().0, "identity-mismatch", "case: {name}");
            }
        }
    }

    #[test]
    fn cfun_to_restore_table() {
        // (mode found before export, mode now, changed by this run, mode to set)
        let cases = [
            (1, 1, false, None),
            (1, 4, false, Some(1)),
            (1, 1, true, Some(1)),
            (4, 1, true, None),
            (4, 4, false, None),
            (0, 4, true, Some(0)),
        ];
        for (target, now, changed, want) in cases {
            assert_eq!(
                cfun_to_restore(target, now, changed),
                want,
                "case: {target} {now} {changed}"
            );
        }
    }

    #[test]
    fn cert_pem_for_modem_normalizes_only_when_needed() {
        let lf = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(cert_pem_for_modem(lf), lf);
        assert_eq!(cert_pem_for_modem(&lf.replace('\n', "\r\n")), lf);
        assert_eq!(cert_pem_for_modem(lf.trim_end()), lf);
    }

    #[test]
    fn default_root_bundle_fits_and_parses() {
        let b = default_root_bundle();
        assert!(b.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(crate::util::pem_blocks(&b).len(), 2);
        assert!(!b.contains('\r'));
        let cmd = at::cmng_write_command(16842753, 0, &b).unwrap();
        assert!(cmd.len() <= at::MAX_COMMAND);
        assert!(root_bundle(&[]).is_ok());
    }
}
