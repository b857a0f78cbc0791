//! `sign`: one batch, all or nothing. Stream the requests, check them in parallel, decide in
//! input order, issue in parallel, record everything in one SQLite transaction with its audit
//! records, write the signed bundle into a temporary sibling and rename it into place.
//!
//! Pipeline (all threads inside one `std::thread::scope`):
//!
//! ```text
//! reader ──Check(i)──► task queue ◄──Sign(i)── coordinator (this thread)
//!   │                     │ N workers: keygen::check / issue::issue     ▲
//!   │                     └──────────Checked(i) / Signed(i)─────────────┤
//!   └──────────────Malformed(i)─────────────────────────────────────────┘
//! ```
//!
//! The coordinator runs the batch policy in input order (reorder buffer), sends accepted
//! requests back to the workers for signing, and writes results in input order (second
//! reorder buffer): `ca.db` rows + audit records in the open transaction, bundle rows to the
//! temporary directory. A credit channel bounds the items in flight, so memory stays flat
//! whatever the batch size; nothing is fsync'd per certificate.
//!
//! Crash safety (SPEC §5: nothing signed exists outside `ca.db` before its batch commits):
//! before the commit, the only file written is `rejects.csv`, in a staging directory
//! `.<B>.nrfca-partial-<batch>` ([`crate::signer::staging`]: locked, registered in `ca.db`).
//! Certificates exist only in memory and in the open transaction. After the commit the bundle
//! is written *from `ca.db`* (the batch's audit records, in input order, joined to their
//! certificate rows), the manifest is signed last, the directory is renamed to `B`, and a
//! small follow-up transaction records `bundle-written`. A crash or signal before the commit
//! leaves nothing in `ca.db` and no signed file anywhere (the staging directory is removed by
//! the next run, whatever its `--out`); a crash after it is repaired by re-running the same
//! `sign`: identical KEYGEN strings give back the stored certificates. SIGINT, SIGTERM and
//! SIGHUP (with [`crate::interrupt::install`]) roll the batch back at the next request; once
//! the commit is done they are ignored until the bundle is in place.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::bundle::{
    self, BundleError, BundleOptions, CertRow, Counts, FileDigest, Manifest, RejectsWriter,
};
use crate::keygen::{self, CheckOptions, DeviceIdMode, Verified};
use crate::reject::Reject;
use crate::requests::{Entry, RequestReader, RequestRow, RequestsError};
use crate::signer::audit::{AuditError, AuditWriter, Details};
use crate::signer::ca::{self, CaCert, CaError};
use crate::signer::db::{self, Connection, DbError};
use crate::signer::issue::{self, Issuance, IssueError, IssuedCert, IssuerProfile, Serial};
use crate::signer::policy::{
    self, BatchPolicy, DbLookup, Decision, FilteredLookup, KnownFilter, PreHashedState, Stored,
};
use crate::signer::secret::{CaKey, Unlock};
use crate::signer::staging::{self, Staging, StagingError};

/// Default certificate validity in days.
pub const DEFAULT_DAYS: u32 = 3650;

/// Items in flight between the reader and the writer (bounds memory).
const IN_FLIGHT: usize = 2048;

/// Chunks in flight (the credit channel's capacity).
const CHUNKS_IN_FLIGHT: usize = IN_FLIGHT / CHUNK;

/// Requests per pool task.
const CHUNK: usize = 32;

/// Progress events are sent every this many requests.
const PROGRESS_EVERY: u64 = 500;

/// Rejects recorded one by one per batch (a `rejects` row and a `request-rejected` audit
/// record each); past it, rejects are only counted (by code, in `batch-committed`) and listed
/// in the bundle's `rejects.csv`, so a junk input cannot fill the CA's disk.
pub const MAX_RECORDED_REJECTS: u64 = 1000;

/// Environment variable of the crash test hook (see [`crash_point`]).
pub const CRASH_ENV: &str = "NRFCA_CRASH_AT";

/// The named points [`crash_point`] knows, in the order a batch passes them. `checked` and
/// `written` take a count: `checked:500` is the 500th request checked, `written:500` the 500th
/// result written to `ca.db` and the bundle.
pub const CRASH_POINTS: [&str; 9] = [
    "unlocked",
    "started",
    "checked",
    "written",
    "before-commit",
    "after-commit",
    "bundle-finished",
    "after-rename",
    "bundle-audited",
];

/// Environment variable that turns the crash hook into an interrupt: with
/// `NRFCA_CRASH_SIGNAL=INT|TERM|HUP|KILL`, the point named by [`CRASH_ENV`] sends that signal
/// to the process itself instead of aborting (test hook; see [`crash_point`]).
pub const CRASH_SIGNAL_ENV: &str = "NRFCA_CRASH_SIGNAL";

/// Test hook: with `NRFCA_CRASH_AT=<point>` (or `<point>:<n>`) the process aborts at that
/// point of the batch, as a power cut or `kill -9` would stop it (no destructor runs, no
/// buffer is flushed, no core file once the key was unlocked). It can only make nrfca die —
/// which anyone who can set its environment can do anyway — and `tests/crash.rs` uses it to
/// check SPEC §5 at exact instants. Documented in docs/threat-model.md.
/// The parsed crash hook: point, optional count, optional signal to send instead of aborting.
type CrashAt = Option<(String, Option<u64>, Option<nix::sys::signal::Signal>)>;

fn crash_point(point: &str, n: u64) {
    static AT: std::sync::OnceLock<CrashAt> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let v = std::env::var(CRASH_ENV).ok()?;
        let sig = std::env::var(CRASH_SIGNAL_ENV).ok().and_then(|s| {
            use nix::sys::signal::Signal;
            match s.trim_start_matches("SIG") {
                "INT" => Some(Signal::SIGINT),
                "TERM" => Some(Signal::SIGTERM),
                "HUP" => Some(Signal::SIGHUP),
                "KILL" => Some(Signal::SIGKILL),
                _ => None,
            }
        });
        Some(match v.split_once(':') {
            Some((p, k)) => (p.to_string(), k.parse().ok(), sig),
            None => (v, None, sig),
        })
    });
    if let Some((p, k, sig)) = at {
        if p == point && k.map_or(true, |k| k == n) {
            match sig {
                Some(s) => {
                    let _ = nix::sys::signal::raise(*s);
                }
                None => std::process::abort(),
            }
        }
    }
}

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
    /// The batch committed, but writing its bundle from `ca.db` failed.
    #[error("the batch is committed, but its bundle could not be written; fix the cause below and run the same sign again with a new --out: it gives back the same certificates")]
    BundleAfterCommit(#[source] BundleError),
}

impl From<rusqlite::Error> for SignError {
    fn from(e: rusqlite::Error) -> Self {
        SignError::Db(DbError::from(e))
    }
}

// ---------------------------------------------------------------------------------------
// pipeline messages

/// A request as it moves through the pipeline.
struct Item {
    source: String,
    line: u64,
    keygen: String,
    row: Option<RequestRow>,
}

/// Work for the pool, in chunks of up to [`CHUNK`] requests (fewer wake-ups).
enum Task {
    Check(Vec<(u64, Checked)>),
    Sign(Vec<(u64, Issuance)>),
}

enum Checked {
    Malformed {
        source: String,
        line: u64,
        device_uuid: Option<String>,
        reject: Reject,
    },
    /// Read, not yet checked.
    Pending(Item),
    Done(Item, Result<Box<Verified>, Reject>),
}

enum Msg {
    Checked(Vec<(u64, Checked)>),
    Signed(Vec<(u64, Result<IssuedCert, IssueError>)>),
    ReaderDone(u64, Vec<crate::requests::InputDigest>),
    ReaderFailed(RequestsError),
    WorkerFailed(String),
}

/// What the writer stage does with one request, in input order.
enum Outcome {
    Reject {
        source: String,
        line: u64,
        device_uuid: Option<String>,
        keygen_sha256: Option<String>,
        reject: Reject,
    },
    Return {
        stored: Box<Stored>,
    },
    /// Decided "issue", waiting for the worker's signature.
    Issue {
        item: Item,
        verified: Box<Verified>,
        reissue: bool,
        serial: Serial,
    },
}

/// SHA-256 of the KEYGEN text as `keygen::check` computes it (unwrapped), for rejects.
fn keygen_hash(s: &str) -> Option<String> {
    keygen::unwrap_line(s)
        .ok()
        .map(|t| crate::crypto::sha256_hex(t.as_bytes()))
}

fn imei_of(row: Option<&RequestRow>, device_id: &str) -> Option<String> {
    if let Some(r) = row {
        let i = r.imei.trim();
        if !i.is_empty() {
            return Some(i.to_string());
        }
    }
    device_id
        .strip_prefix("nrf-")
        .filter(|i| crate::util::is_imei(i))
        .map(str::to_string)
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

fn profile_of(cert: &CaCert) -> IssuerProfile {
    IssuerProfile {
        subject_der: cert.subject_der.clone(),
        ski: cert.ski.clone(),
        not_after: cert.not_after,
    }
}

/// Checks shared by [`sign`] and [`dry_run`]; returns the CA certificate, a new batch id and
/// the validity of the certificates.
fn prepare(
    ca_dir: &Path,
    opts: &SignOptions,
) -> Result<(CaCert, String, OffsetDateTime, OffsetDateTime), SignError> {
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
    let now = OffsetDateTime::now_utc();
    let not_before = now.replace_nanosecond(0).unwrap_or(now);
    let not_after = not_before + time::Duration::days(i64::from(opts.days));
    issue::check_validity(not_before, not_after, cert.not_after)?;
    Ok((cert, random_batch_id()?, not_before, not_after))
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
    let (cert, batch, not_before, not_after) = prepare(ca_dir, &opts)?;
    let conn = db::open_existing(&ca_dir.join(ca::CA_DB))?;
    run(
        &conn, None, &cert, &opts, &batch, not_before, not_after, None, progress, started,
    )
    .map(|r| r.report)
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
    let (cert, batch, not_before, not_after) = prepare(ca_dir, opts)?;
    let (temp, parent, prefix) = partial_paths(&opts.out, &batch)?;
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
    let (staging, rejects, removed) = Staging::create(&mut conn, &temp, &batch, &parent, &prefix)
        .map_err(|e| match e {
        StagingError::Bundle(b) => SignError::Bundle(b),
        other => SignError::Staging(other),
    })?;
    let outcome = run_and_commit(
        &mut conn,
        &unlocked.key,
        &cert,
        opts,
        &batch,
        (not_before, not_after),
        rejects,
        progress,
        started,
    );
    let (mut report, rejects, seqs, first_rowid) = match outcome {
        Ok(r) => r,
        Err(e) => {
            staging.discard(&conn);
            return Err(e);
        }
    };
    report.removed_stale = removed;
    crash_point("after-commit", 0);
    progress(SignEvent::WritingBundle);

    // Committed: the bundle, from ca.db, manifest signed last.
    let finished = match write_bundle(
        &conn,
        &unlocked.key,
        &cert,
        opts,
        &report,
        rejects,
        seqs,
        first_rowid,
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
        let kept = staging.keep(&conn, &opts.out, &batch);
        return Err(SignError::Rename {
            temp: kept.unwrap_or(temp),
            out: opts.out.clone(),
            source,
        });
    }
    // The batch is committed and the bundle complete: what follows only records where the
    // bundle went, so a failure here is a warning, not "could not run".
    if let Err(e) = bundle::sync_dir(&parent) {
        report.warnings.push(crate::error_chain(&e));
    }
    crash_point("after-rename", 0);
    match record_bundle(&mut conn, &unlocked.key, opts, &batch, &finished, &staging) {
        Ok(head) => report.audit_head = Some(head),
        Err(e) => report.warnings.push(format!(
            "the batch is committed and the bundle complete, but recording bundle-written in the audit log failed: {}",
            crate::error_chain(&e)
        )),
    }
    drop(staging);
    report.bundle = Some(opts.out.clone());
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    progress(SignEvent::Done);
    Ok(report)
}

/// The batch transaction: run the batch with its rejects streamed to `rejects`, commit.
/// Returns the report, the rejects writer and the audit seqs that bound the batch's records.
#[allow(clippy::too_many_arguments)]
fn run_and_commit(
    conn: &mut Connection,
    key: &CaKey,
    cert: &CaCert,
    opts: &SignOptions,
    batch: &str,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    rejects: RejectsWriter,
    progress: &mut dyn FnMut(SignEvent),
    started: Instant,
) -> Result<(SignReport, RejectsWriter, (u64, u64), i64), SignError> {
    let tx = db::begin_immediate(conn)?;
    if opts.out.symlink_metadata().is_ok() {
        return Err(SignError::OutExists(opts.out.clone()));
    }
    crash_point("started", 0);
    let ran = run(
        &tx,
        Some(key),
        cert,
        opts,
        batch,
        not_before,
        not_after,
        Some(rejects),
        progress,
        started,
    )?;
    let rejects = ran
        .rejects
        .ok_or_else(|| SignError::Internal("the rejects writer went missing".into()))?;
    crash_point("before-commit", 0);
    // The last moment a signal can still roll the batch back; after the commit it waits.
    if let Some(sig) = crate::interrupt::requested() {
        return Err(SignError::Interrupted(sig));
    }
    tx.commit()?;
    Ok((ran.report, rejects, ran.seqs, ran.first_rowid))
}

/// Write the certificate half of the bundle of the committed `batch` from `ca.db`: the
/// batch's `certificate-issued` / `certificate-returned` audit records between `seqs`, in
/// order (= input order), each resolved to its certificate row; every PEM is re-derived from
/// the stored DER and checked against the recorded SHA-256. Then sign the manifest, last.
///
/// This thread reads `ca.db` and builds the rows; two more format, hash and write
/// `certs.csv` and the onboarding files, so the three overlap (serial, the phase took 0.8 s
/// at 100 000 requests on the 2-core bench machine).
#[allow(clippy::too_many_arguments)]
fn write_bundle(
    conn: &Connection,
    key: &CaKey,
    cert: &CaCert,
    opts: &SignOptions,
    report: &SignReport,
    rejects: RejectsWriter,
    (first, last): (u64, u64),
    first_rowid: i64,
) -> Result<bundle::Finished, BundleError> {
    let mut b = rejects.into_bundle(
        cert.pem.as_bytes(),
        BundleOptions {
            sub_type: opts.sub_type.clone(),
            tags: opts.tags.clone(),
            fw_types: opts.fw_types.clone(),
            pem_files: opts.pem_files,
        },
    )?;
    const ROWS_PER_MSG: usize = 256;
    type Chunk = std::sync::Arc<Vec<(String, CertRow)>>;
    let (certs_part, onboard_part) = b.parts();
    let n = std::thread::scope(|s| -> Result<u64, BundleError> {
        let (certs_tx, certs_rx) = mpsc::sync_channel::<Chunk>(8);
        let (onboard_tx, onboard_rx) = mpsc::sync_channel::<Chunk>(8);
        let certs_writer = s.spawn(move || -> Result<(), BundleError> {
            for chunk in certs_rx {
                for (_, row) in chunk.iter() {
                    certs_part.add(row)?;
                }
            }
            Ok(())
        });
        let onboard_writer = s.spawn(move || -> Result<(), BundleError> {
            for chunk in onboard_rx {
                for (device_id, row) in chunk.iter() {
                    onboard_part.add(device_id, &row.certificate_pem)?;
                }
            }
            Ok(())
        });
        let send = |chunk: Vec<(String, CertRow)>| -> bool {
            let chunk = std::sync::Arc::new(chunk);
            // A send fails only when a writer stopped on an error, reported below.
            certs_tx.send(std::sync::Arc::clone(&chunk)).is_ok() && onboard_tx.send(chunk).is_ok()
        };
        let mut chunk = Vec::with_capacity(ROWS_PER_MSG);
        let mut n = 0u64;
        let read = read_batch_certs(conn, (first, last), first_rowid, |device_id, row| {
            chunk.push((device_id, row));
            n += 1;
            if chunk.len() == ROWS_PER_MSG {
                return send(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(ROWS_PER_MSG),
                ));
            }
            true
        });
        if !chunk.is_empty() {
            send(chunk);
        }
        drop((certs_tx, onboard_tx));
        for w in [certs_writer, onboard_writer] {
            w.join()
                .map_err(|_| BundleError::Sign("a bundle writer thread panicked".into()))??;
        }
        read?;
        Ok(n)
    })?;
    let expected = report.issued + report.returned;
    if n != expected {
        return Err(BundleError::MalformedManifest(format!(
            "ca.db holds {n} certificates for batch {}, its report {expected}",
            report.batch
        )));
    }
    b.finish(
        Manifest {
            format: String::new(),
            batch: report.batch.clone(),
            created_at: crate::signer::audit::now_rfc3339(),
            ca_sha256: cert.fingerprint.clone(),
            inputs: report.inputs.clone(),
            files: Vec::new(),
            counts: Counts {
                requests: report.requests,
                issued: report.issued,
                returned: report.returned,
                rejected: report.rejected,
            },
        },
        |bytes| key.sign_der(bytes),
    )
}

/// Call `each(device_id, row)` for every certificate of the committed batch, in input order:
/// walk the batch's audit records (seq between `seqs`); a `certificate-issued` record takes
/// the next row of the certificates inserted by the batch (rowid from `first_rowid` on, the
/// same order: the batch held the write lock), a `certificate-returned` record looks its
/// serial up. Every issued row must carry the serial its record names. `each` returns false
/// to stop early.
fn read_batch_certs(
    conn: &Connection,
    (first, last): (u64, u64),
    first_rowid: i64,
    mut each: impl FnMut(String, CertRow) -> bool,
) -> Result<(), BundleError> {
    db::certificates::for_each_in_batch(conn, (first, last), first_rowid, |c| {
        let pem = crate::util::pem_encode("CERTIFICATE", &c.der);
        if crate::crypto::sha256_hex(pem.as_bytes()) != c.cert_sha256 {
            return Err(BundleError::HashMismatch(format!(
                "certificate of {} in ca.db (its cert_sha256 does not match its DER)",
                c.device_id
            )));
        }
        if c.serial != c.recorded_serial {
            return Err(BundleError::MalformedManifest(format!(
                "ca.db's certificate rows of the batch are not in the order of its audit records (serial {} where the record names {})",
                c.serial, c.recorded_serial
            )));
        }
        let row = CertRow {
            device_uuid: c.uuid,
            imei: c.imei.unwrap_or_default(),
            sec_tag: c.sec_tag,
            serial: c.serial,
            not_before: c.not_before,
            not_after: c.not_after,
            sha256: c.cert_sha256,
            certificate_pem: pem,
        };
        Ok(each(c.device_id, row))
    })
}

impl From<db::certificates::BatchReadError> for BundleError {
    fn from(e: db::certificates::BatchReadError) -> Self {
        match e {
            db::certificates::BatchReadError::Sqlite(e) => BundleError::Sign(format!(
                "reading the committed batch from ca.db failed: {e}"
            )),
            db::certificates::BatchReadError::NoRow { serial, issued } => {
                BundleError::MalformedManifest(format!(
                    "ca.db has no certificate row for the {} serial {serial}",
                    if issued { "issued" } else { "returned" }
                ))
            }
        }
    }
}

/// The follow-up transaction after the rename: `bundle-written`, the staging directory
/// unregistered, and a checkpoint.
fn record_bundle(
    conn: &mut Connection,
    key: &CaKey,
    opts: &SignOptions,
    batch: &str,
    finished: &bundle::Finished,
    staging: &Staging,
) -> Result<AuditHead, SignError> {
    let tx = db::begin_immediate(conn)?;
    let mut audit = AuditWriter::new(&tx, &opts.operator)?;
    audit.append(
        &tx,
        "bundle-written",
        &json!({
            "batch": batch,
            "path": opts.out.display().to_string(),
            "manifest_sha256": finished.manifest_sha256,
            "files": finished.manifest.files.len(),
        }),
    )?;
    staging.unregister_in(&tx)?;
    audit.checkpoint(&tx, key)?;
    crash_point("bundle-audited", 0);
    let (seq, hash) = audit.head();
    let head = AuditHead {
        seq,
        hash: hash.to_string(),
    };
    drop(audit);
    tx.commit()?;
    Ok(head)
}

/// What [`run`] hands back: the report, the rejects writer it was given, and the audit seqs
/// of `batch-started` and `batch-committed` (0, 0 for a dry run).
struct Ran {
    report: SignReport,
    rejects: Option<RejectsWriter>,
    seqs: (u64, u64),
    /// The rowid the batch's first certificate row got (rows follow in input order).
    first_rowid: i64,
}

/// The batch proper, inside the caller's transaction (`key` None = dry run).
#[allow(clippy::too_many_arguments)]
fn run(
    conn: &Connection,
    key: Option<&CaKey>,
    cert: &CaCert,
    opts: &SignOptions,
    batch: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    mut rejects: Option<RejectsWriter>,
    progress: &mut dyn FnMut(SignEvent),
    started: Instant,
) -> Result<Ran, SignError> {
    let nb_text = issue::rfc3339(not_before);
    let na_text = issue::rfc3339(not_after);
    let total_bytes = RequestReader::total_bytes(&opts.inputs);
    progress(SignEvent::Started {
        batch: batch.to_string(),
        total_bytes,
        dry_run: opts.dry_run,
    });

    let mut audit = match key {
        Some(_) => Some(AuditWriter::new(conn, &opts.operator)?),
        None => None,
    };
    let input_names: Vec<String> = opts
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut first_seq = 0;
    if let Some(a) = audit.as_mut() {
        db::batches::start(
            conn,
            batch,
            &crate::signer::audit::now_rfc3339(),
            &opts.operator,
        )?;
        first_seq = a.append(
            conn,
            "batch-started",
            &json!({
                "batch": batch,
                "inputs": input_names,
                "days": opts.days,
                "not_before": nb_text,
                "not_after": na_text,
                "sec_tag": opts.sec_tag,
                "device_id": match opts.device_id { DeviceIdMode::Uuid => "uuid", DeviceIdMode::Cn => "cn" },
                "reissue": opts.reissue,
                "ca_fingerprint": cert.fingerprint,
            }),
        )?;
    }

    let profile = profile_of(cert);
    let check_opts = CheckOptions {
        sec_tag: opts.sec_tag,
        device_id: opts.device_id,
        imei: None,
    };
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 64);

    let (task_tx, task_rx) = mpsc::channel::<Task>();
    let task_rx = Mutex::new(task_rx);
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(CHUNKS_IN_FLIGHT);
    let bytes_read = std::sync::atomic::AtomicU64::new(0);

    // About 570 bytes per request line: the batch size, as a hint for the in-memory sets
    // (capped so a wrong guess costs little memory) and for the prefilter below.
    let expected = ((total_bytes / 512) as usize).clamp(1, policy::MAX_PRESIZE);
    // What ca.db already holds, as a prefilter for the policy's lookups (see KnownFilter).
    let db_rows = db::certificates::max_rowid(conn)?;
    let first_rowid = db_rows
        .max(0)
        .checked_add(1)
        .ok_or_else(|| SignError::Internal("ca.db's certificate rowids are exhausted".into()))?;
    let filter = if KnownFilter::worth_it(db_rows.max(0) as u64, expected as u64) {
        Some(KnownFilter::load(conn)?)
    } else {
        None
    };

    let mut state = Coordinator {
        conn,
        filter,
        db_empty: db_rows == 0,
        key,
        audit: audit.as_mut(),
        rejects: rejects.as_mut(),
        batch,
        nb_text: &nb_text,
        na_text: &na_text,
        not_before,
        not_after,
        policy: BatchPolicy::with_capacity(opts.reissue, expected),
        serials: HashSet::with_capacity_and_hasher(expected, PreHashedState::default()),
        random_pool: Vec::new(),
        counts: Counts::default(),
        reissued: 0,
        by_code: BTreeMap::new(),
        dry_run: opts.dry_run,
        decided: 0,
        first_rowid,
        pem_names: opts.pem_files.then(HashSet::new),
    };

    let inputs = std::thread::scope(
        |s| -> Result<Vec<crate::requests::InputDigest>, SignError> {
            // reader: chunks of CHUNK requests, one credit per chunk
            {
                let task_tx = task_tx.clone();
                let msg_tx = msg_tx.clone();
                let inputs = opts.inputs.clone();
                let bytes_read = &bytes_read;
                s.spawn(move || {
                    let mut reader = RequestReader::open(&inputs);
                    let mut idx = 0u64;
                    let mut chunk: Vec<(u64, Checked)> = Vec::with_capacity(CHUNK);
                    loop {
                        let entry = reader.next_entry();
                        let end = entry.is_none();
                        match entry {
                            None => {}
                            Some(Err(e)) => {
                                let _ = msg_tx.send(Msg::ReaderFailed(e));
                                return;
                            }
                            Some(Ok(Entry::Malformed(m))) => chunk.push((
                                idx,
                                Checked::Malformed {
                                    source: m.source,
                                    line: m.line,
                                    device_uuid: m.device_uuid,
                                    reject: m.reject,
                                },
                            )),
                            Some(Ok(Entry::Request(r))) => chunk.push((
                                idx,
                                Checked::Pending(Item {
                                    source: r.source,
                                    line: r.line,
                                    keygen: r.keygen,
                                    row: r.row,
                                }),
                            )),
                        }
                        if !end {
                            idx += 1;
                        }
                        if chunk.len() == CHUNK || (end && !chunk.is_empty()) {
                            // Blocks while too many chunks are in flight; fails when the
                            // coordinator stopped.
                            if credit_tx.send(()).is_err() {
                                return;
                            }
                            bytes_read
                                .store(reader.bytes_read(), std::sync::atomic::Ordering::Relaxed);
                            let c = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            if task_tx.send(Task::Check(c)).is_err() {
                                return;
                            }
                        }
                        if end {
                            break;
                        }
                    }
                    bytes_read.store(reader.bytes_read(), std::sync::atomic::Ordering::Relaxed);
                    let _ = msg_tx.send(Msg::ReaderDone(idx, reader.digests().to_vec()));
                });
            }
            // workers
            for _ in 0..threads {
                let msg_tx = msg_tx.clone();
                let task_rx = &task_rx;
                let check_opts = &check_opts;
                let profile = &profile;
                s.spawn(move || loop {
                    let task = match task_rx.lock() {
                        Ok(rx) => match rx.recv() {
                            Ok(t) => t,
                            Err(_) => return,
                        },
                        Err(_) => return,
                    };
                    // A panic in a worker (a bug: parsers never panic on input) must not
                    // leave the coordinator waiting for a chunk forever.
                    let work = std::panic::AssertUnwindSafe(|| match task {
                        Task::Check(chunk) => Msg::Checked(
                            chunk
                                .into_iter()
                                .map(|(i, c)| (i, check_one(c, check_opts)))
                                .collect(),
                        ),
                        Task::Sign(chunk) => Msg::Signed(
                            chunk
                                .into_iter()
                                .map(|(i, iss)| {
                                    let r = match key {
                                        Some(k) => issue::issue(profile, &iss, |t| k.sign_der(t)),
                                        None => Err(IssueError::Sign("no key (dry run)".into())),
                                    };
                                    (i, r)
                                })
                                .collect(),
                        ),
                    });
                    let msg = std::panic::catch_unwind(work).unwrap_or_else(|_| {
                        Msg::WorkerFailed("a worker thread panicked; please report this".into())
                    });
                    if msg_tx.send(msg).is_err() {
                        return;
                    }
                });
            }
            drop(msg_tx);
            // coordinator (this thread); dropping its channel ends on return stops the others.
            state.drive(msg_rx, task_tx, credit_rx, &bytes_read, progress)
        },
    )?;

    progress(SignEvent::Committing);
    let counts = state.counts.clone();
    let reissued = state.reissued;
    let by_code = std::mem::take(&mut state.by_code);
    drop(state);

    let input_digests: Vec<FileDigest> = inputs
        .iter()
        .map(|d| FileDigest {
            name: d.name.clone(),
            sha256: hex::encode(d.sha256),
        })
        .collect();

    if counts.requests == 0 {
        return Err(SignError::EmptyBatch);
    }
    let mut last_seq = 0;
    if let (Some(a), Some(k)) = (audit.as_mut(), key) {
        let inputs_json = serde_json::to_string(&input_digests).unwrap_or_else(|_| "[]".into());
        db::batches::commit(
            conn,
            batch,
            &db::batches::Committed {
                committed_at: &crate::signer::audit::now_rfc3339(),
                inputs_json: &inputs_json,
                issued: counts.issued,
                returned: counts.returned,
                rejected: counts.rejected,
            },
        )?;
        let unrecorded = counts.rejected.saturating_sub(MAX_RECORDED_REJECTS);
        last_seq = a.append(
            conn,
            "batch-committed",
            &json!({
                "batch": batch,
                "requests": counts.requests,
                "issued": counts.issued,
                "returned": counts.returned,
                "rejected": counts.rejected,
                "rejected_by_code": by_code,
                "rejects_unrecorded": unrecorded,
                "inputs": input_digests,
                "manifest_files": bundle::file_count(counts.issued + counts.returned, opts.pem_files),
            }),
        )?;
        a.checkpoint(conn, k)?;
    }
    let audit_head = audit.as_ref().map(|a| {
        let (seq, hash) = a.head();
        AuditHead {
            seq,
            hash: hash.to_string(),
        }
    });

    let report = SignReport {
        batch: batch.to_string(),
        dry_run: opts.dry_run,
        requests: counts.requests,
        issued: counts.issued,
        returned: counts.returned,
        reissued,
        rejected: counts.rejected,
        rejects_by_code: by_code,
        bundle: None,
        ca_fingerprint: cert.fingerprint.clone(),
        audit_head,
        inputs: input_digests,
        not_before: nb_text.clone(),
        not_after: na_text.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        removed_stale: Vec::new(),
        warnings: Vec::new(),
    };
    Ok(Ran {
        report,
        rejects,
        seqs: (first_seq, last_seq),
        first_rowid,
    })
}

/// Details of `certificate-issued` (canonical: keys in byte order).
/// `imei`, `sec_tag` and `uuid` let `audit verify` check those `certificates` columns too
/// (records written before they were added are not checked for them).
#[allow(clippy::too_many_arguments)]
fn issued_details(
    batch: &str,
    serial: &str,
    device_id: &str,
    keygen_sha256: &str,
    cert_sha256: &str,
    reissue: bool,
    uuid: &str,
    imei: Option<&str>,
    sec_tag: u32,
) -> String {
    Details::with_capacity(400)
        .str("batch", batch)
        .str("cert_sha256", cert_sha256)
        .str("device_id", device_id)
        .opt_str("imei", imei)
        .str("keygen_sha256", keygen_sha256)
        .bool("reissue", reissue)
        .uint("sec_tag", u64::from(sec_tag))
        .str("serial", serial)
        .str("uuid", uuid)
        .finish()
}

/// Details of `certificate-returned` (canonical).
fn returned_details(batch: &str, stored: &Stored) -> String {
    Details::with_capacity(320)
        .str("batch", batch)
        .str("cert_sha256", &stored.cert_sha256)
        .str("device_id", &stored.device_id)
        .str("keygen_sha256", &stored.keygen_sha256)
        .str("serial", &stored.serial)
        .finish()
}

/// Details of `request-rejected` (canonical).
fn rejected_details(
    batch: &str,
    source: &str,
    line: u64,
    device_uuid: &str,
    code: &str,
    detail: &str,
    keygen_sha256: Option<&str>,
) -> String {
    Details::with_capacity(320)
        .str("batch", batch)
        .str("code", code)
        .str("detail", detail)
        .str("device_uuid", device_uuid)
        .opt_str("keygen_sha256", keygen_sha256)
        .uint("line", line)
        .str("source", source)
        .finish()
}

/// A worker's per-string check of one read request.
fn check_one(c: Checked, opts: &CheckOptions) -> Checked {
    let Checked::Pending(item) = c else {
        return c;
    };
    let imei = item
        .row
        .as_ref()
        .map(|r| r.imei.trim())
        .filter(|s| !s.is_empty());
    let result = match imei {
        Some(imei) if opts.device_id == DeviceIdMode::Cn => {
            let o = CheckOptions {
                imei: Some(imei.to_string()),
                ..opts.clone()
            };
            keygen::check(&item.keygen, &o)
        }
        _ => keygen::check(&item.keygen, opts),
    };
    Checked::Done(item, result.map(Box::new))
}

/// The coordinator's state: policy in order, writes in order.
struct Coordinator<'a> {
    conn: &'a Connection,
    filter: Option<KnownFilter>,
    db_empty: bool,
    key: Option<&'a CaKey>,
    audit: Option<&'a mut AuditWriter>,
    rejects: Option<&'a mut RejectsWriter>,
    batch: &'a str,
    nb_text: &'a str,
    na_text: &'a str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    policy: BatchPolicy,
    serials: HashSet<Serial, PreHashedState>,
    /// Unused random bytes for serials (not secret: serials are public).
    random_pool: Vec<u8>,
    counts: Counts,
    reissued: u64,
    by_code: BTreeMap<String, u64>,
    dry_run: bool,
    /// Requests decided so far (for the `checked` crash point).
    decided: u64,
    /// The rowid the batch's first certificate row must get (the bundle is read back in
    /// rowid order after the commit; checked per insert, before the commit).
    first_rowid: i64,
    /// `--pem-files`: the device ids seen, so a name the bundle cannot hold (unsafe, or twice)
    /// fails the batch before the commit, not its bundle after it.
    pem_names: Option<HashSet<String>>,
}

impl Coordinator<'_> {
    fn drive(
        &mut self,
        msg_rx: mpsc::Receiver<Msg>,
        task_tx: mpsc::Sender<Task>,
        credit_rx: mpsc::Receiver<()>,
        bytes_read: &std::sync::atomic::AtomicU64,
        progress: &mut dyn FnMut(SignEvent),
    ) -> Result<Vec<crate::requests::InputDigest>, SignError> {
        let mut checked: BTreeMap<u64, Checked> = BTreeMap::new();
        let mut next_policy = 0u64;
        let mut decided: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut signed: BTreeMap<u64, IssuedCert> = BTreeMap::new();
        let mut next_write = 0u64;
        let mut total: Option<(u64, Vec<crate::requests::InputDigest>)> = None;
        loop {
            if let Some((n, _)) = &total {
                if next_write == *n {
                    break;
                }
            }
            let msg = msg_rx.recv().map_err(|_| {
                SignError::Internal(
                    "a pipeline thread stopped before the batch was complete".into(),
                )
            })?;
            if let Some(sig) = crate::interrupt::requested() {
                return Err(SignError::Interrupted(sig));
            }
            match msg {
                Msg::ReaderFailed(e) => return Err(SignError::Requests(e)),
                Msg::WorkerFailed(m) => return Err(SignError::Internal(m)),
                Msg::ReaderDone(n, d) => total = Some((n, d)),
                Msg::Checked(chunk) => {
                    checked.extend(chunk);
                    let mut to_sign = Vec::new();
                    while let Some(c) = checked.remove(&next_policy) {
                        let outcome = self.decide(c)?;
                        if let Outcome::Issue {
                            verified, serial, ..
                        } = &outcome
                        {
                            if !self.dry_run {
                                to_sign.push((
                                    next_policy,
                                    Issuance {
                                        device_id: verified.device_id.clone(),
                                        public_key: verified.public_key,
                                        serial: *serial,
                                        not_before: self.not_before,
                                        not_after: self.not_after,
                                    },
                                ));
                            }
                        }
                        decided.insert(next_policy, outcome);
                        next_policy += 1;
                    }
                    // Hand the signatures out in pieces so every worker gets some.
                    while !to_sign.is_empty() {
                        let rest = to_sign.split_off(to_sign.len().min(CHUNK / 2));
                        let piece = std::mem::replace(&mut to_sign, rest);
                        task_tx.send(Task::Sign(piece)).map_err(|_| {
                            SignError::Internal("the signing workers stopped".into())
                        })?;
                    }
                }
                Msg::Signed(chunk) => {
                    for (i, r) in chunk {
                        signed.insert(i, r?);
                    }
                }
            }
            // Write everything that is ready, in order.
            loop {
                let ready = match decided.get(&next_write) {
                    None => false,
                    Some(Outcome::Issue { .. }) => self.dry_run || signed.contains_key(&next_write),
                    Some(_) => true,
                };
                if !ready {
                    break;
                }
                let Some(outcome) = decided.remove(&next_write) else {
                    break;
                };
                let cert = signed.remove(&next_write);
                self.write(outcome, cert)?;
                next_write += 1;
                // The reader sent one credit per full chunk.
                if next_write % CHUNK as u64 == 0 {
                    let _ = credit_rx.recv();
                }
                if next_write % PROGRESS_EVERY == 0 {
                    progress(SignEvent::Progress {
                        requests: next_write,
                        issued: self.counts.issued,
                        returned: self.counts.returned,
                        rejected: self.counts.rejected,
                        bytes_read: bytes_read.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
            }
        }
        drop(task_tx);
        progress(SignEvent::Progress {
            requests: next_write,
            issued: self.counts.issued,
            returned: self.counts.returned,
            rejected: self.counts.rejected,
            bytes_read: bytes_read.load(std::sync::atomic::Ordering::Relaxed),
        });
        Ok(total.map(|(_, d)| d).unwrap_or_default())
    }

    /// Run the batch policy on one checked request (in input order).
    fn decide(&mut self, c: Checked) -> Result<Outcome, SignError> {
        if !self.dry_run {
            self.decided += 1;
            crash_point("checked", self.decided);
        }
        match c {
            Checked::Pending(_) => Err(SignError::Internal(
                "a request reached the policy unchecked".into(),
            )),
            Checked::Malformed {
                source,
                line,
                device_uuid,
                reject,
            } => Ok(Outcome::Reject {
                source,
                line,
                device_uuid,
                keygen_sha256: None,
                reject,
            }),
            Checked::Done(item, Err(reject)) => Ok(Outcome::Reject {
                keygen_sha256: keygen_hash(&item.keygen),
                // The attested UUID when the attestation parses (rejects are rare, so the
                // second parse costs nothing), else the row's column.
                device_uuid: keygen::parse(&item.keygen)
                    .ok()
                    .map(|p| p.uuid())
                    .or_else(|| {
                        // The column passed the reader's shape check (a UUID or empty);
                        // written in the canonical form.
                        item.row
                            .as_ref()
                            .and_then(|r| crate::util::parse_uuid(&r.device_uuid))
                            .map(|u| crate::util::uuid_string(&u))
                    }),
                source: item.source,
                line: item.line,
                reject,
            }),
            Checked::Done(item, Ok(v)) => {
                let mut lookup = FilteredLookup {
                    filter: self.filter.as_ref(),
                    empty: self.db_empty,
                    db: DbLookup::new(self.conn),
                };
                let d = self.policy.decide(&v, item.row.as_ref(), &mut lookup)?;
                match d {
                    Decision::Reject(reject) => Ok(Outcome::Reject {
                        source: item.source,
                        line: item.line,
                        device_uuid: Some(v.uuid.clone()),
                        keygen_sha256: Some(hex::encode(v.keygen_sha256)),
                        reject,
                    }),
                    Decision::Return(stored) => Ok(Outcome::Return { stored }),
                    Decision::Issue { reissue } => {
                        let serial = self.new_serial()?;
                        Ok(Outcome::Issue {
                            item,
                            verified: v,
                            reissue,
                            serial,
                        })
                    }
                }
            }
        }
    }

    /// A random serial unused in `ca.db` and in this batch.
    fn new_serial(&mut self) -> Result<Serial, SignError> {
        loop {
            // Random bytes come from the OS in blocks (one getrandom per 200 serials).
            if self.random_pool.len() < 20 {
                let mut block = vec![0u8; 20 * 200];
                crate::crypto::fill_random(&mut block)
                    .map_err(|_| SignError::Issue(IssueError::Rng))?;
                self.random_pool = block;
            }
            let mut b = [0u8; 20];
            let at = self.random_pool.len() - 20;
            b.copy_from_slice(&self.random_pool[at..]);
            self.random_pool.truncate(at);
            let Some(s) = Serial::from_random(b) else {
                continue;
            };
            if self.serials.contains(&s) {
                continue;
            }
            let hex = s.to_hex();
            let maybe_in_db = !self.db_empty
                && self
                    .filter
                    .as_ref()
                    .map_or(true, |f| f.may_have_serial(&hex));
            if maybe_in_db && db::certificates::serial_exists(self.conn, &hex)? {
                continue;
            }
            self.serials.insert(s);
            return Ok(s);
        }
    }

    /// With `--pem-files`, `certs/<device_id>_crt.pem` must be a safe, new name.
    fn check_pem_name(&mut self, device_id: &str) -> Result<(), SignError> {
        let Some(names) = self.pem_names.as_mut() else {
            return Ok(());
        };
        if !bundle::is_safe_file_stem(device_id) || !names.insert(device_id.to_string()) {
            return Err(SignError::Bundle(BundleError::BadDeviceId(
                device_id.to_string(),
            )));
        }
        Ok(())
    }

    /// Record one decided request: ca.db rows, audit record, bundle rows.
    fn write(&mut self, outcome: Outcome, cert: Option<IssuedCert>) -> Result<(), SignError> {
        self.counts.requests += 1;
        if !self.dry_run {
            crash_point("written", self.counts.requests);
        }
        match outcome {
            Outcome::Reject {
                source,
                line,
                device_uuid,
                keygen_sha256,
                reject,
            } => {
                self.counts.rejected += 1;
                *self
                    .by_code
                    .entry(reject.code.as_str().to_string())
                    .or_insert(0) += 1;
                let uuid = device_uuid.unwrap_or_default();
                // The first MAX_RECORDED_REJECTS rejects are recorded one by one; the rest
                // are counted in batch-committed (rejects.csv still lists every one).
                let record = self.counts.rejected <= MAX_RECORDED_REJECTS;
                if let (Some(a), true) = (self.audit.as_deref_mut(), record) {
                    db::rejects::insert(
                        self.conn,
                        &db::rejects::NewReject {
                            batch_id: self.batch,
                            source: &source,
                            line,
                            device_uuid: Some(uuid.as_str()).filter(|u| !u.is_empty()),
                            code: reject.code.as_str(),
                            detail: &reject.detail,
                            keygen_sha256: keygen_sha256.as_deref(),
                        },
                    )?;
                    a.append_canonical(
                        self.conn,
                        "request-rejected",
                        &rejected_details(
                            self.batch,
                            &source,
                            line,
                            &uuid,
                            reject.code.as_str(),
                            &reject.detail,
                            keygen_sha256.as_deref(),
                        ),
                    )?;
                }
                if let Some(b) = self.rejects.as_deref_mut() {
                    b.add_reject(&source, line, &uuid, reject.code.as_str(), &reject.detail)?;
                }
            }
            Outcome::Return { stored } => {
                // The bundle row is written after the commit, from this audit record.
                self.counts.returned += 1;
                self.check_pem_name(&stored.device_id)?;
                if let Some(a) = self.audit.as_deref_mut() {
                    a.append_canonical(
                        self.conn,
                        "certificate-returned",
                        &returned_details(self.batch, &stored),
                    )?;
                }
            }
            Outcome::Issue {
                item,
                verified,
                reissue,
                serial,
            } => {
                self.counts.issued += 1;
                if reissue {
                    self.reissued += 1;
                }
                let Some(cert) = cert else {
                    // Dry run: counted, nothing written.
                    return Ok(());
                };
                self.check_pem_name(&verified.device_id)?;
                let (Some(a), Some(_)) = (self.audit.as_deref_mut(), self.key) else {
                    return Ok(());
                };
                let serial_hex = serial.to_hex();
                let keygen_hex = hex::encode(verified.keygen_sha256);
                let cert_hex = hex::encode(cert.pem_sha256);
                let imei = imei_of(item.row.as_ref(), &verified.device_id);
                let rowid = db::certificates::insert(
                    self.conn,
                    &db::certificates::NewCertificate {
                        serial: &serial_hex,
                        device_id: &verified.device_id,
                        uuid: &verified.uuid,
                        imei: imei.as_deref(),
                        sec_tag: verified.sec_tag,
                        public_key: &verified.public_key[..],
                        keygen_sha256: &keygen_hex,
                        cert_sha256: &cert_hex,
                        der: &cert.der,
                        not_before: self.nb_text,
                        not_after: self.na_text,
                        batch_id: self.batch,
                        reissue,
                    },
                )?;
                // The bundle is read back after the commit in rowid order: the rows of the
                // batch must follow one another from first_rowid, or the batch rolls back now.
                let want = self.first_rowid + self.counts.issued as i64 - 1;
                if rowid != want {
                    return Err(SignError::Internal(format!(
                        "certificate row {serial_hex} got rowid {rowid}, not {want}; ca.db's certificates table is not as nrfca made it (run audit verify)"
                    )));
                }
                a.append_canonical(
                    self.conn,
                    "certificate-issued",
                    &issued_details(
                        self.batch,
                        &serial_hex,
                        &verified.device_id,
                        &keygen_hex,
                        &cert_hex,
                        reissue,
                        &verified.uuid,
                        imei.as_deref(),
                        verified.sec_tag,
                    ),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::audit::canonical_json;

    /// The hand-built details are byte-equal to the canonical JSON of the same object, so
    /// records written by `sign` hash and verify like any other (tricky strings included).
    #[test]
    fn hand_built_details_are_canonical() {
        let odd = "a \"quoted\", back\\slash, tab\t, nl\n, ctrl \u{1}, é, 😀";
        for (s, b) in [("b1", "plain"), (odd, odd), ("", "")] {
            assert_eq!(
                issued_details(b, s, s, s, s, true, s, Some(s), 16842753),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": s,
                    "keygen_sha256": s, "cert_sha256": s, "reissue": true, "uuid": s,
                    "imei": s, "sec_tag": 16842753}))
            );
            assert_eq!(
                issued_details(b, s, s, s, s, false, s, None, 0),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": s,
                    "keygen_sha256": s, "cert_sha256": s, "reissue": false, "uuid": s,
                    "imei": null, "sec_tag": 0}))
            );
            let stored = Stored {
                serial: s.into(),
                device_id: b.into(),
                uuid: s.into(),
                imei: None,
                sec_tag: 1,
                keygen_sha256: s.into(),
                cert_sha256: b.into(),
                pem: String::new(),
                not_before: String::new(),
                not_after: String::new(),
            };
            assert_eq!(
                returned_details(b, &stored),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": b,
                    "keygen_sha256": s, "cert_sha256": b}))
            );
            for kg in [Some(s), None] {
                assert_eq!(
                    rejected_details(b, s, 7, s, "bad-base64", odd, kg),
                    canonical_json(&json!({"batch": b, "source": s, "line": 7,
                        "device_uuid": s, "code": "bad-base64", "detail": odd,
                        "keygen_sha256": kg}))
                );
            }
        }
    }
}
