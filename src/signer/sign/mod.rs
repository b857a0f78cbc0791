//! `sign`: one batch, all or nothing. Stream the requests, check them in parallel, decide in
//! input order, issue in parallel, record everything in one SQLite transaction with its audit
//! records, write the signed bundle into a temporary sibling and rename it into place.
//!
//! The stages, over one `pipeline::Batch` context: `plan` (options, CA, batch id,
//! validity), the unlock ([`crate::signer::ca::unlock`]), the staging directory, the batch in
//! one transaction (`pipeline::run`: reader, workers, coordinator, into a `sink::Sink`:
//! `sink::Recording`, or `sink::DryRun` for `--dry-run`), then the bundle from `ca.db`
//! (`output`) and its `bundle-written` record. The crash test hook is `crash`.
//!
//! The coordinator runs the batch policy in input order (reorder buffer), sends accepted
//! requests back to the workers for signing, and writes results in input order (second
//! reorder buffer): `ca.db` rows + audit records in the open transaction, bundle rows to the
//! temporary directory. A credit channel bounds the items in flight, so memory stays flat
//! whatever the batch size; nothing is fsync'd per certificate.
//!
//! Crash safety (SPEC §5: nothing signed exists outside `ca.db` before its batch commits):
//! before the commit, the only file written is `rejects.csv`, in a staging directory
//! `.<B>.nrfca-partial-<batch>` (`crate::signer::staging`: locked, registered in `ca.db`).
//! Certificates exist only in memory and in the open transaction. After the commit the bundle
//! is written *from `ca.db`* (the batch's audit records, in input order, joined to their
//! certificate rows), the manifest is signed last, the directory is renamed to `B`, and a
//! small follow-up transaction records `bundle-written`. A crash or signal before the commit
//! leaves nothing in `ca.db` and no signed file anywhere (the staging directory is removed by
//! the next run, whatever its `--out`); a crash after it is repaired by re-running the same
//! `sign`: identical KEYGEN strings give back the stored certificates. SIGINT, SIGTERM and
//! SIGHUP (with [`crate::interrupt::install`]) roll the batch back at the next request; once
//! the commit is done they are ignored until the bundle is in place.

pub(crate) mod crash;
mod output;
mod pipeline;
mod sink;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;

use crate::bundle::{self, BundleError, FileDigest, RejectsWriter};
use crate::keygen::{self, DeviceIdMode};
use crate::requests::RequestsError;
use crate::signer::audit::AuditError;
use crate::signer::ca::{self, CaCert, CaError};
use crate::signer::db::{self, Connection, DbError};
use crate::signer::evidence;
use crate::signer::issue::{self, IssueError};
use crate::signer::key::{CaSigner, KeyError};
use crate::signer::policy::ExpectedDevices;
use crate::signer::secret::Unlock;
use crate::signer::staging::{self, Staging, StagingError};

pub use crate::signer::db::certificates::BatchReadError;
pub use crate::signer::evidence::{Evidence, Refusal};
use crash::crash_point;
use sink::{DryRun, Recording};

/// Default certificate validity in days.
pub const DEFAULT_DAYS: u32 = 3650;

/// Items in flight between the reader and the writer (bounds memory).
const IN_FLIGHT: usize = 2048;

/// Chunks in flight (the credit channel's capacity).
pub(crate) const CHUNKS_IN_FLIGHT: usize = IN_FLIGHT / CHUNK;

/// Requests per pool task.
pub(crate) const CHUNK: usize = 32;

/// Progress events are sent every this many requests.
pub(crate) const PROGRESS_EVERY: u64 = 500;

/// Rejects recorded one by one per batch (a `rejects` row and a `request-rejected` audit
/// record each); past it, rejects are only counted (by code, in `batch-committed`) and listed
/// in the bundle's `rejects.csv`, so a junk input cannot fill the CA's disk.
pub const MAX_RECORDED_REJECTS: u64 = 1000;

/// What `sign` does.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Bundle directory to create (must not exist).
    pub out: PathBuf,
    /// Requests files (CSV or KEYGEN lines), one batch.
    pub inputs: Vec<PathBuf>,
    /// Certificate validity in days from now.
    pub days: u32,
    /// Required sec_tag; `None` = `--any-sec-tag`.
    pub sec_tag: Option<u32>,
    /// How the device id (CN) is checked.
    pub device_id: DeviceIdMode,
    /// Allow a new certificate for a device that already has one.
    pub reissue: bool,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// Also write `certs/<deviceId>_crt.pem`.
    pub pem_files: bool,
    /// Onboarding fwTypes (default `APP|MODEM`).
    pub fw_types: Vec<String>,
    /// Onboarding tags.
    pub tags: Vec<String>,
    /// Onboarding subType.
    pub sub_type: String,
    /// Operator recorded in the audit log.
    pub operator: String,
    /// Worker threads (default: available cores).
    pub threads: Option<usize>,
    /// Catch SIGINT, SIGTERM and SIGHUP once the key is unlocked, rolling the batch back
    /// before its commit (the CLI sets it; see [`crate::interrupt`]).
    pub catch_signals: bool,
    /// `--unsigned`: accept inputs without a trusted bench's signature (recorded).
    pub unsigned: bool,
    /// `--expect FILE`: the devices that may be signed (`not-expected` otherwise).
    pub expect: Option<PathBuf>,
}

impl SignOptions {
    /// Defaults of the CLI for `out` and `inputs`.
    pub fn new(out: PathBuf, inputs: Vec<PathBuf>, operator: String) -> Self {
        SignOptions {
            out,
            inputs,
            days: DEFAULT_DAYS,
            sec_tag: Some(keygen::DEFAULT_SEC_TAG),
            device_id: DeviceIdMode::Uuid,
            reissue: false,
            dry_run: false,
            pem_files: false,
            fw_types: vec!["APP".into(), "MODEM".into()],
            tags: Vec::new(),
            sub_type: String::new(),
            operator,
            threads: None,
            catch_signals: false,
            unsigned: false,
            expect: None,
        }
    }
}

/// Progress of a batch, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignEvent {
    /// The batch started.
    Started {
        /// Batch id.
        batch: String,
        /// Total size of the inputs in bytes.
        total_bytes: u64,
        /// Dry run.
        dry_run: bool,
    },
    /// Requests done so far.
    Progress {
        /// Requests written (decided) so far.
        requests: u64,
        /// Newly issued so far.
        issued: u64,
        /// Returned so far.
        returned: u64,
        /// Rejected so far.
        rejected: u64,
        /// Input bytes read so far.
        bytes_read: u64,
    },
    /// Every request is decided; the batch is being committed.
    Committing,
    /// The batch is committed; its bundle is being written from `ca.db` and signed.
    WritingBundle,
    /// The batch is committed and the bundle is in place.
    Done,
}

/// Audit head after the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// What a batch did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SignReport {
    /// Batch id.
    pub batch: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Records read.
    pub requests: u64,
    /// Certificates newly issued (with `--dry-run`: that would be issued).
    pub issued: u64,
    /// Certificates given back for identical re-submitted KEYGEN strings.
    pub returned: u64,
    /// Of `issued`, how many were re-issues under `--reissue`.
    pub reissued: u64,
    /// Rejected requests.
    pub rejected: u64,
    /// Rejects by code.
    pub rejects_by_code: BTreeMap<String, u64>,
    /// The bundle directory (None for a dry run).
    pub bundle: Option<PathBuf>,
    /// SHA-256 fingerprint of the CA certificate.
    pub ca_fingerprint: String,
    /// Audit head after the batch (None for a dry run).
    pub audit_head: Option<AuditHead>,
    /// The inputs and their SHA-256.
    pub inputs: Vec<FileDigest>,
    /// Validity of the certificates issued.
    pub not_before: String,
    /// Validity of the certificates issued.
    pub not_after: String,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// Stale temporary bundle directories of crashed runs that were removed.
    pub removed_stale: Vec<PathBuf>,
    /// Problems after the commit that did not stop the batch (the bundle is complete).
    pub warnings: Vec<String>,
}

impl SignReport {
    /// Whether every request got a certificate (exit 0) or some were rejected (exit 1).
    pub fn all_ok(&self) -> bool {
        self.rejected == 0
    }
}

/// Why a batch could not run (exit 2). Nothing of the batch is in `ca.db`, except for
/// [`SignError::Rename`] and [`SignError::BundleAfterCommit`]: the batch committed, its bundle
/// did not land where it should (re-running the same `sign` gives the same certificates).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The `--out` directory exists.
    #[error("{} already exists; give a new --out directory (bundles are never overwritten)", .0.display())]
    OutExists(PathBuf),
    /// The CA could not be loaded or unlocked.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The inputs could not be read.
    #[error(transparent)]
    Requests(RequestsError),
    /// Writing the bundle failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The staging directory could not be set up (nothing was signed).
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// A certificate could not be built (e.g. validity past the CA's notAfter).
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The batch committed but the bundle could not be moved into place.
    #[error("the batch is committed and its bundle complete, but it could not be moved to {}; it is kept in {} (no later sign removes it): move it to a name of your choice, or remove it and run the same sign again to get the same certificates", out.display(), temp.display())]
    Rename {
        /// Where the complete bundle is.
        temp: PathBuf,
        /// Where it should be.
        out: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CA key failed mid-batch (a PKCS#11 token removed or failing): the batch was rolled
    /// back whole, as a crash does.
    #[error("the CA key failed during the batch ({code}): the batch was rolled back, no certificate was issued and no bundle was written; fix the cause and run the same sign again", code = .0.code())]
    Key(#[source] KeyError),
    /// An internal pipeline failure (a worker stopped).
    #[error("internal error: {0}; nothing was committed, run sign again")]
    Internal(String),
    /// SIGINT, SIGTERM or SIGHUP arrived before the commit: the batch was rolled back.
    #[error("interrupted by {} before the batch committed: it was rolled back, no certificate was issued and no bundle was written (the key unlock is in the audit log); run the same sign again to do it", crate::interrupt::name(*.0))]
    Interrupted(i32),
    /// The inputs held no request at all: nothing to commit.
    #[error("the inputs hold no request (only blank, comment or header lines); nothing was committed; give the requests file that bench export wrote")]
    EmptyBatch,
    /// `--out` lies inside the CA directory.
    #[error("--out {} is inside the CA directory {}; write bundles somewhere else (e.g. the USB stick), never next to ca.db", out.display(), ca_dir.display())]
    OutInsideCa {
        /// `--out` as given.
        out: PathBuf,
        /// The CA directory (resolved).
        ca_dir: PathBuf,
    },
    /// An input was refused by the evidence checks (bench signature, checkpoint), before
    /// the unlock; recorded as `input-refused`.
    #[error(transparent)]
    Refused(#[from] crate::signer::evidence::Refusal),
    /// The batch committed, but writing its bundle from `ca.db` failed.
    #[error("the batch is committed, but its bundle could not be written; fix the cause below and run the same sign again with a new --out: it gives back the same certificates")]
    BundleAfterCommit(#[source] BundleError),
}

impl From<rusqlite::Error> for SignError {
    fn from(e: rusqlite::Error) -> Self {
        SignError::Db(DbError::from(e))
    }
}

fn random_batch_id() -> Result<String, SignError> {
    let mut b = [0u8; 16];
    crate::crypto::fill_random(&mut b)
        .map_err(|_| SignError::Internal("random generator failed".into()))?;
    Ok(hex::encode(b))
}

/// The staging directory of `out` for `batch` (see [`staging::paths`]).
fn partial_paths(out: &Path, batch: &str) -> Result<(PathBuf, PathBuf, String), SignError> {
    staging::paths(out, batch).ok_or_else(|| {
        SignError::Usage(format!(
            "--out {} has no usable directory name",
            out.display()
        ))
    })
}

/// Refuse an `--out` inside the CA directory (after resolving symlinks): a bundle or its
/// staging directory there could take names SQLite uses (`ca.db-journal`) and brick the CA.
pub fn check_out_outside_ca(ca_dir: &Path, out: &Path) -> Result<(), SignError> {
    let Ok(ca) = std::fs::canonicalize(ca_dir) else {
        return Ok(()); // load_cert reports a missing CA directory
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(parent) = std::fs::canonicalize(&parent) else {
        return Ok(()); // reported as a missing --out parent
    };
    if parent.starts_with(&ca) {
        return Err(SignError::OutInsideCa {
            out: out.to_path_buf(),
            ca_dir: ca,
        });
    }
    Ok(())
}

/// `--tags`, `--fw-types` and `--sub-type` go into every `onboard.csv` row: plain printable
/// ASCII of at most 64 characters each, no spreadsheet formula start (SPEC §3's shapes).
fn check_onboarding_options(opts: &SignOptions) -> Result<(), SignError> {
    let named = opts
        .tags
        .iter()
        .map(|v| ("--tags", v))
        .chain(opts.fw_types.iter().map(|v| ("--fw-types", v)))
        .chain(std::iter::once(("--sub-type", &opts.sub_type)));
    for (flag, v) in named {
        if !crate::requests::is_plain_text_cell(v) || v.contains('|') {
            return Err(SignError::Usage(format!(
                "{flag} value {:?} is not a plain onboarding value: use printable ASCII of at most 64 characters, no `|` inside one value, not starting with = + - @",
                crate::util::term_escape(v)
            )));
        }
    }
    Ok(())
}

/// Refuse an input that is not a regular file, saying what it is (a FIFO, a directory, …).
pub fn check_input_path(p: &Path) -> Result<(), SignError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(SignError::Requests(not_a_file(p)))
    }
}

/// What an input path is when it is not a regular file, for the error message.
fn not_a_file(p: &Path) -> RequestsError {
    use std::os::unix::fs::FileTypeExt;
    let why = match std::fs::metadata(p) {
        Err(e) => return RequestsError::Open {
            path: p.to_path_buf(),
            source: e,
        },
        Ok(m) if m.is_dir() => "is a directory, not a requests file",
        Ok(m) if m.file_type().is_fifo() => {
            "is a named pipe (FIFO), not a regular file: sign reads requests only from regular files (it hashes and records each input); copy it to a file first"
        }
        Ok(m) if m.file_type().is_socket() => "is a socket, not a requests file",
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => {
            "is a device, not a requests file"
        }
        Ok(_) => "is not a regular file",
    };
    RequestsError::Open {
        path: p.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    }
}

/// What [`plan`] settles before anything is unlocked or written.
pub(crate) struct Plan {
    /// The CA certificate.
    pub(crate) cert: CaCert,
    /// `chain.pem` of the bundle (an intermediate CA: its certificate and its root's).
    pub(crate) chain_pem: Option<Vec<u8>>,
    /// What the evidence checks established (bench, quoted checkpoints).
    pub(crate) evidence: Evidence,
    /// `--expect`: the listed devices, and the `expect` details of `batch-started`.
    pub(crate) expected: Option<(std::sync::Arc<ExpectedDevices>, serde_json::Value)>,
    /// A new batch id.
    pub(crate) batch: String,
    /// Validity of the certificates.
    pub(crate) not_before: OffsetDateTime,
    /// Validity of the certificates.
    pub(crate) not_after: OffsetDateTime,
}

/// Checks shared by [`sign`] and [`dry_run`]; returns the CA certificate, a new batch id and
/// the validity of the certificates.
fn plan(ca_dir: &Path, opts: &SignOptions) -> Result<Plan, SignError> {
    if opts.inputs.is_empty() {
        return Err(SignError::Usage(
            "no requests files given; name at least one".into(),
        ));
    }
    if opts.days == 0 || opts.days > ca::MAX_DAYS {
        return Err(SignError::Usage(format!(
            "--days {} is out of range (1 to {})",
            opts.days,
            ca::MAX_DAYS
        )));
    }
    check_onboarding_options(opts)?;
    for p in &opts.inputs {
        check_input_path(p)?;
        // Not a requests file (PEM, SQLite, onboarding CSV, empty, …): exit 2, before unlocking.
        crate::requests::sniff(p).map_err(SignError::Requests)?;
    }
    if !opts.dry_run {
        check_out_outside_ca(ca_dir, &opts.out)?;
        if opts.out.to_string_lossy().contains(bundle::PARTIAL_MARK) {
            return Err(SignError::Usage(format!(
                "--out {} contains {:?}, the mark of sign's temporary directories; choose another name",
                opts.out.display(),
                bundle::PARTIAL_MARK
            )));
        }
    }
    let cert = ca::load_cert(ca_dir).map_err(CaError::from)?;
    crate::signer::lifecycle::hierarchy::refuse_root(ca_dir).map_err(SignError::Usage)?;
    let chain_pem =
        crate::signer::lifecycle::hierarchy::chain_pem(ca_dir).map_err(CaError::from)?;
    let now = OffsetDateTime::now_utc();
    let not_before = now.replace_nanosecond(0).unwrap_or(now);
    let not_after = not_before + time::Duration::days(i64::from(opts.days));
    issue::check_validity(not_before, not_after, cert.not_after)?;
    let expected = match &opts.expect {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| {
                SignError::Usage(format!("cannot read --expect {}: {e}", p.display()))
            })?;
            let list = ExpectedDevices::parse(&bytes).map_err(|why| {
                SignError::Usage(format!(
                    "--expect {} is not a device list: {why}; give a CSV whose first line names a device_uuid and/or an imei column",
                    p.display()
                ))
            })?;
            let details = serde_json::json!({
                "file": p.display().to_string(),
                "sha256": crate::crypto::sha256_hex(&bytes),
                "devices": list.len(),
            });
            Some((std::sync::Arc::new(list), details))
        }
    };
    let evidence = check_evidence(ca_dir, opts, &cert.fingerprint)?;
    Ok(Plan {
        cert,
        chain_pem,
        evidence,
        expected,
        batch: random_batch_id()?,
        not_before,
        not_after,
    })
}

/// The evidence checks of SPEC §10/§11 before anything is unlocked: see
/// `crate::signer::evidence::check_inputs`. A refusal is recorded (`input-refused`).
pub fn check_evidence(
    ca_dir: &Path,
    opts: &SignOptions,
    ca_sha256: &str,
) -> Result<Evidence, SignError> {
    let mut conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    match evidence::check_inputs(&conn, ca_sha256, &opts.inputs, opts.unsigned) {
        Ok(e) => Ok(e),
        Err(r) => {
            if !opts.dry_run {
                evidence::record_refusal(&mut conn, &opts.operator, &r)?;
            }
            Err(SignError::Refused(r))
        }
    }
}

/// [`check_evidence`] for the CLI, before it asks for any secret.
pub fn precheck_evidence(ca_dir: &Path, opts: &SignOptions) -> Result<(), SignError> {
    let cert = ca::load_cert(ca_dir).map_err(CaError::from)?;
    check_evidence(ca_dir, opts, &cert.fingerprint).map(|_| ())
}

/// `sign --dry-run`: every check (per-string and batch policy against `ca.db`), no key
/// needed, nothing written: no database rows, no audit records, no bundle.
pub fn dry_run(
    ca_dir: &Path,
    opts: &SignOptions,
    progress: &mut dyn FnMut(SignEvent),
) -> Result<SignReport, SignError> {
    let started = Instant::now();
    let mut opts = opts.clone();
    opts.dry_run = true;
    let plan = plan(ca_dir, &opts)?;
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    let b = pipeline::Batch::new(&conn, &plan, &opts, started);
    pipeline::run(&b, &mut DryRun, progress).map(|r| r.report)
}

/// Run one batch. See the module docs. `progress` is called on the calling thread.
pub fn sign(
    ca_dir: &Path,
    unlock: &Unlock,
    opts: &SignOptions,
    progress: &mut dyn FnMut(SignEvent),
) -> Result<SignReport, SignError> {
    let started = Instant::now();
    if opts.dry_run {
        return dry_run(ca_dir, opts, progress);
    }
    if opts.out.symlink_metadata().is_ok() {
        return Err(SignError::OutExists(opts.out.clone()));
    }
    let plan = plan(ca_dir, opts)?;
    let (cert, batch) = (&plan.cert, &plan.batch);
    let (temp, parent, prefix) = partial_paths(&opts.out, batch)?;
    if !parent.is_dir() {
        return Err(SignError::Usage(format!(
            "the directory {} for --out does not exist; create it first",
            parent.display()
        )));
    }

    let unlocked = ca::unlock(ca_dir, unlock, &opts.operator)?;
    // Signals are caught from here on: during the unlock their default action is safe (its
    // transaction is not committed, nothing is signed) and keeps a stuck prompt or identity
    // read interruptible.
    if opts.catch_signals {
        crate::interrupt::install()
            .map_err(|e| SignError::Internal(format!("cannot catch signals: {e}")))?;
    }
    crash_point("unlocked", 0);
    if let Some(sig) = crate::interrupt::requested() {
        return Err(SignError::Interrupted(sig));
    }
    if unlocked.cert.fingerprint != cert.fingerprint {
        return Err(SignError::Usage(
            "ca.pem changed while signing; run sign again".into(),
        ));
    }
    let mut conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    // Room for the batch's index pages (bounded: peak memory must not grow with N).
    db::set_cache_kib(&conn, 32768)?;
    // The staging directory: created, locked and registered before the batch starts, so
    // whatever happens next, a later run finds and removes it.
    let (staging, rejects, removed) = Staging::create(&mut conn, &temp, batch, &parent, &prefix)
        .map_err(|e| match e {
            StagingError::Bundle(b) => SignError::Bundle(b),
            other => SignError::Staging(other),
        })?;
    let outcome = run_and_commit(
        &mut conn,
        unlocked.key.as_ref(),
        &plan,
        opts,
        rejects,
        progress,
        started,
    );
    let (mut report, rejects, records) = match outcome {
        Ok(r) => r,
        Err(e) => {
            staging.discard(&conn);
            if let Some(k) = key_failure(&e) {
                // The batch rolled back whole; the failure itself is recorded (unsigned: the
                // key is what failed).
                let _ = record_batch_failed(&mut conn, &opts.operator, batch, k);
            }
            return Err(e);
        }
    };
    report.removed_stale = removed;
    crash_point("after-commit", 0);
    progress(SignEvent::WritingBundle);

    // Committed: the bundle, from ca.db, manifest signed last.
    let finished = match output::write_bundle(
        &conn,
        unlocked.key.as_ref(),
        cert,
        opts,
        &report,
        rejects,
        records,
        plan.chain_pem.clone(),
        &plan.evidence.quoted,
    ) {
        Ok(m) => m,
        Err(e) => {
            staging.discard(&conn);
            return Err(SignError::BundleAfterCommit(e));
        }
    };
    crash_point("bundle-finished", 0);
    if let Err(source) = std::fs::rename(staging.path(), &opts.out) {
        // Keep the complete bundle out of the cleaners' way: a name without the partial
        // marker, and no registration.
        let kept = staging.keep(&conn, &opts.out, batch);
        return Err(SignError::Rename {
            temp: kept.unwrap_or(temp),
            out: opts.out.clone(),
            source,
        });
    }
    // The batch is committed and the bundle complete: what follows only records where the
    // bundle went, so a failure here is a warning, not "could not run".
    if let Err(e) = bundle::sync_dir(&parent) {
        report.warnings.push(crate::error::error_chain(&e));
    }
    crash_point("after-rename", 0);
    match output::record_bundle(&mut conn, unlocked.key.as_ref(), opts, batch, &finished, &staging) {
        Ok(head) => report.audit_head = Some(head),
        Err(e) => report.warnings.push(format!(
            "the batch is committed and the bundle complete, but recording bundle-written in the audit log failed: {}",
            crate::error::error_chain(&e)
        )),
    }
    drop(staging);
    report.bundle = Some(opts.out.clone());
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    progress(SignEvent::Done);
    Ok(report)
}

/// The key failure behind a batch error, if that is what stopped it.
fn key_failure(e: &SignError) -> Option<&KeyError> {
    match e {
        SignError::Key(k) | SignError::Audit(AuditError::Sign(k)) => Some(k),
        _ => None,
    }
}

/// Record `batch-failed` (the batch was rolled back because the CA key failed).
fn record_batch_failed(
    conn: &mut Connection,
    operator: &str,
    batch: &str,
    e: &KeyError,
) -> Result<(), SignError> {
    let tx = db::begin_immediate(conn)?;
    let mut w = crate::signer::audit::AuditWriter::new(&tx, operator)?;
    w.append(
        &tx,
        "batch-failed",
        &serde_json::json!({
            "batch": batch,
            "code": e.code(),
            "reason": crate::error::error_chain(e),
            "rolled_back": true,
        }),
    )?;
    drop(w);
    tx.commit()?;
    Ok(())
}

/// The batch transaction: run the batch into a [`Recording`] sink, its rejects streamed to
/// `rejects`, then commit. Returns the report, the rejects writer and the audit seqs that
/// bound the batch's records.
fn run_and_commit(
    conn: &mut Connection,
    key: &dyn CaSigner,
    plan: &Plan,
    opts: &SignOptions,
    rejects: RejectsWriter,
    progress: &mut dyn FnMut(SignEvent),
    started: Instant,
) -> Result<(SignReport, RejectsWriter, pipeline::Records), SignError> {
    let tx = db::begin_immediate(conn)?;
    if opts.out.symlink_metadata().is_ok() {
        return Err(SignError::OutExists(opts.out.clone()));
    }
    crash_point("started", 0);
    let b = pipeline::Batch::new(&tx, plan, opts, started);
    let mut sink = Recording::new(&tx, key, rejects, &opts.operator)?;
    let ran = pipeline::run(&b, &mut sink, progress)?;
    let rejects = sink.into_rejects();
    // The files read are the ones the benches signed (not swapped since the check).
    for (path, sha) in &plan.evidence.signed_sha256 {
        let name = path.display().to_string();
        if let Some(d) = ran.report.inputs.iter().find(|d| d.name == name) {
            if &d.sha256 != sha {
                return Err(SignError::Usage(format!(
                    "{name} changed while it was being signed; nothing was committed: copy it and its .sig again and run sign again"
                )));
            }
        }
    }
    crash_point("before-commit", 0);
    // The last moment a signal can still roll the batch back; after the commit it waits.
    if let Some(sig) = crate::interrupt::requested() {
        return Err(SignError::Interrupted(sig));
    }
    tx.commit()?;
    Ok((ran.report, rejects, ran.records))
}
