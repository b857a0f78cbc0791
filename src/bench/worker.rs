//! What export and import share: per-port results and progress events, the bench error type,
//! and the per-port runner (open, sync, journal every command, reconnect after an unplug).

use super::code::BenchCode;
use super::modem::{CommandRecord, DialectChoice, Modem, ModemError, Timeouts};
use super::state::{Actor, State, StateError};
use super::transport::{self, SerialSettings, Transport};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Done in this run (exported / imported).
    Done,
    /// Nothing to do: already done in an earlier run (nothing was written).
    AlreadyDone,
    /// Failed or refused; nothing half-done is assumed (see the detail).
    Failed,
    /// Contact was lost while a change was in flight: the device state is unknown until the
    /// next run re-checks it.
    Unknown,
}

impl Status {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::AlreadyDone => "already-done",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }
    /// Done now or earlier.
    pub fn ok(self) -> bool {
        matches!(self, Status::Done | Status::AlreadyDone)
    }
}

/// The result for one port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceResult {
    /// The port as given.
    pub port: String,
    /// IMEI, once read.
    pub imei: Option<String>,
    /// Device UUID, once known.
    pub uuid: Option<String>,
    /// The sec_tag worked on.
    pub sec_tag: u32,
    /// How it ended.
    pub status: Status,
    /// Short machine-readable failure code (`old-firmware`, `slot-occupied`, `timeout`, …).
    pub code: Option<String>,
    /// What happened, for the operator.
    pub detail: String,
    /// What to do next (failed/unknown devices).
    pub next_step: Option<String>,
}

/// A progress event from one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEvent {
    /// The port.
    pub port: String,
    /// What happened.
    pub kind: PortEventKind,
}

/// Kinds of progress events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEventKind {
    /// A step started (`identify`, `KEYGEN`, `write certificate`, …), with the IMEI once known.
    Step {
        /// What is being done.
        step: String,
        /// The IMEI, once known.
        imei: Option<String>,
    },
    /// The port finished.
    Finished(DeviceResult),
}

/// Progress callback type.
pub type Progress<'a> = &'a (dyn Fn(PortEvent) + Sync);

/// Why a bench command could not run at all (exit 2). Display is this layer's sentence; the
/// cause is the error's `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The bench state is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The requests file cannot be opened/written.
    #[error(transparent)]
    Requests(crate::requests::RequestsError),
    /// The bundle failed verification (tampered, wrong CA, missing files).
    #[error("the bundle was refused before touching any modem")]
    Bundle(#[source] crate::bundle::BundleError),
    /// A file given on the command line is unusable.
    #[error("{}: {detail}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The bundle's checkpoint was refused (forged, rolled back, missing): before any modem.
    #[error("the bundle was refused before touching any modem")]
    Evidence(#[source] super::evidence::EvidenceError),
    /// The bench identity is unusable (checked before any modem).
    #[error("the bench identity is unusable; nothing was sent to any modem")]
    Identity(#[source] super::identity::IdentityError),
    /// The requests were exported but their `requests.csv.sig` could not be written.
    #[error(
        "the requests were written, but their signed statement was not; run the same `nrfca bench export` again to write it (devices already exported are not touched again)"
    )]
    Statement(#[source] super::evidence::EvidenceError),
}

/// Settings every port worker needs.
#[derive(Debug, Clone)]
pub struct PortSettings {
    /// Serial settings.
    pub serial: SerialSettings,
    /// Command timeouts.
    pub timeouts: Timeouts,
    /// How long to wait for an unplugged port to come back before giving up on the device for
    /// this run.
    pub reconnect_wait: Duration,
    /// How many times the whole device flow is retried after contact was lost.
    pub retries: u32,
    /// How AT commands travel: plain AT, the nRF Connect SDK shell, or found at connect.
    pub dialect: DialectChoice,
}

impl Default for PortSettings {
    fn default() -> Self {
        PortSettings {
            serial: SerialSettings::default(),
            timeouts: Timeouts::default(),
            reconnect_wait: Duration::from_secs(10),
            retries: 2,
            dialect: DialectChoice::Auto,
        }
    }
}

/// A journal row not yet committed.
#[derive(Debug, Clone)]
pub(crate) struct PendingRow {
    pub command: String,
    pub outcome: String,
}

/// Per-port journal: commands are buffered by the modem observer and committed with the
/// state change they led to (one transaction), and at the end of the port's work.
#[derive(Clone)]
pub(crate) struct Journal {
    pub state: Arc<State>,
    pub actor: Actor,
    pub port: String,
    pub action: &'static str,
    pub imei: Arc<Mutex<Option<String>>>,
    pub pending: Arc<Mutex<Vec<PendingRow>>>,
}

impl Journal {
    pub fn new(state: Arc<State>, actor: Actor, port: &str, action: &'static str) -> Journal {
        Journal {
            state,
            actor,
            port: port.to_string(),
            action,
            imei: Arc::new(Mutex::new(None)),
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn set_imei(&self, imei: &str) {
        if let Ok(mut g) = self.imei.lock() {
            *g = Some(imei.to_string());
        }
    }

    pub fn imei(&self) -> Option<String> {
        self.imei.lock().ok().and_then(|g| g.clone())
    }

    /// Record a decision or step (not an AT command).
    pub fn note(&self, what: &str, outcome: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(PendingRow {
                command: what.to_string(),
                outcome: outcome.to_string(),
            });
        }
    }

    pub fn observer(&self) -> impl FnMut(&CommandRecord) + Send + 'static {
        let pending = self.pending.clone();
        move |r: &CommandRecord| {
            if let Ok(mut p) = pending.lock() {
                p.push(PendingRow {
                    command: r.command.clone(),
                    outcome: format!("{} ({} ms)", r.outcome, r.elapsed.as_millis()),
                });
            }
        }
    }

    /// Commit buffered rows.
    pub fn flush(&self) -> Result<(), StateError> {
        let rows: Vec<PendingRow> = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        if rows.is_empty() {
            return Ok(());
        }
        let imei = self.imei();
        let entries: Vec<(String, String)> =
            rows.into_iter().map(|r| (r.command, r.outcome)).collect();
        self.state.journal_many(
            &self.actor,
            &self.port,
            imei.as_deref(),
            self.action,
            &entries,
        )
    }

    /// Commit buffered rows and a device record in one transaction.
    pub fn commit(&self, rec: &super::state::DeviceRecord) -> Result<(), StateError> {
        let rows: Vec<PendingRow> = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        let imei = self.imei();
        let entries: Vec<(String, String)> =
            rows.into_iter().map(|r| (r.command, r.outcome)).collect();
        self.state.put_with_journal(
            rec,
            &self.actor,
            &self.port,
            imei.as_deref(),
            self.action,
            &entries,
        )
    }
}

/// Why a device did not finish (shared by export and import).
pub(crate) enum Fail {
    /// The modem or the link failed.
    Modem(ModemError),
    /// The bench refused to go on with this device.
    Refused {
        code: BenchCode,
        detail: String,
        next: String,
    },
    /// The bench itself failed (state database, requests file).
    Internal(String),
}

impl From<ModemError> for Fail {
    fn from(e: ModemError) -> Self {
        Fail::Modem(e)
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Self {
        Fail::Internal(format!("bench state: {}", crate::error::error_chain(&e)))
    }
}

impl Fail {
    /// (code, detail, next step, outcome unknown).
    pub(crate) fn parts(self) -> (String, String, String, bool) {
        match self {
            Fail::Modem(e) => (
                error_code(&e).to_string(),
                crate::error::error_chain(&e),
                e.next_step(),
                e.outcome_unknown(),
            ),
            Fail::Refused { code, detail, next } => (code.to_string(), detail, next, false),
            Fail::Internal(d) => (
                BenchCode::InternalError.to_string(),
                d,
                "check the bench state directory and re-run".to_string(),
                false,
            ),
        }
    }
}

/// A refusal with a code, a detail and what to do next.
pub(crate) fn refused(code: BenchCode, detail: impl Into<String>, next: impl Into<String>) -> Fail {
    Fail::Refused {
        code,
        detail: detail.into(),
        next: next.into(),
    }
}

/// Report a step of one port.
pub(crate) fn emit_step(progress: Progress<'_>, port: &str, imei: Option<&str>, what: &str) {
    progress(PortEvent {
        port: port.to_string(),
        kind: PortEventKind::Step {
            step: what.to_string(),
            imei: imei.map(str::to_string),
        },
    });
}

/// What a device flow learned so far: enough to put the device back and to record a failure.
#[derive(Debug, Default)]
pub(crate) struct Track {
    /// The IMEI, once read.
    pub imei: Option<String>,
    /// The device UUID, once known.
    pub uuid: Option<String>,
    /// The sec_tag worked on, once known.
    pub sec_tag: Option<u32>,
    /// The functional mode to restore (found before the first export).
    pub restore_to: Option<u8>,
    /// Whether this run changed the functional mode.
    pub cfun_changed: bool,
}

impl Track {
    /// The functional mode to put back after a definite failure, if the flow changed it.
    fn restore_cfun(&self) -> Option<u8> {
        self.restore_to.filter(|&m| self.cfun_changed && m != 4)
    }
}

/// Run one device flow on one port: connect, run `device`, put the functional mode back after
/// a definite failure, reconnect and start over after contact was lost (up to
/// `settings.retries`), record a final failure with `on_fail`, report the result.
pub(crate) fn run_port(
    port: &str,
    settings: &PortSettings,
    opener: Opener<'_>,
    journal: &Journal,
    progress: Progress<'_>,
    mut device: impl FnMut(&mut Modem<Box<dyn Transport>>, &mut Track) -> Result<DeviceResult, Fail>,
    mut on_fail: impl FnMut(&Track, Fail) -> DeviceResult,
) -> DeviceResult {
    let mut attempt = 0;
    let mut wait = Duration::ZERO;
    let result = loop {
        let mut track = Track::default();
        emit_step(progress, port, None, "connect");
        let outcome = match connect(port, settings, opener, journal, wait) {
            Ok(mut m) => {
                let r = device(&mut m, &mut track);
                if let Err(f) = &r {
                    // A definite failure after we took the device offline: put it back.
                    let definite = match f {
                        Fail::Modem(e) => !e.outcome_unknown(),
                        _ => true,
                    };
                    if definite {
                        if let Some(mode) = track.restore_cfun() {
                            let _ = m.set_cfun(mode);
                        }
                    }
                }
                r
            }
            Err(e) => Err(Fail::Modem(e)),
        };
        match outcome {
            Ok(res) => break res,
            Err(Fail::Modem(e)) if retryable(&e) && attempt < settings.retries => {
                attempt += 1;
                wait = settings.reconnect_wait;
                journal.note(
                    "retry",
                    &format!("contact lost ({}); reconnecting", e.outcome_text()),
                );
                emit_step(
                    progress,
                    port,
                    track.imei.as_deref(),
                    "contact lost; reconnecting",
                );
            }
            Err(f) => break on_fail(&track, f),
        }
    };
    let _ = journal.flush();
    progress(PortEvent {
        port: port.to_string(),
        kind: PortEventKind::Finished(result.clone()),
    });
    result
}

/// Run `device` on every port (duplicates naming the same device removed) at once, one
/// thread each; results in the order of the ports. A worker that panicked is reported as an
/// unknown outcome of `action` on its port, never taken for a result.
pub(crate) fn run_ports(
    ports: &[String],
    sec_tag: u32,
    action: &str,
    device: impl Fn(&str) -> DeviceResult + Sync,
) -> Vec<DeviceResult> {
    let ports = unique_ports(ports);
    let device = &device;
    std::thread::scope(|s| {
        let handles: Vec<_> = ports.iter().map(|p| s.spawn(move || device(p))).collect();
        handles
            .into_iter()
            .zip(ports.iter())
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| DeviceResult {
                    port: p.clone(),
                    imei: None,
                    uuid: None,
                    sec_tag,
                    status: Status::Unknown,
                    code: Some(BenchCode::InternalError.to_string()),
                    detail: "the worker for this port stopped unexpectedly".into(),
                    next_step: Some(format!("re-run {action} on this port; report the problem")),
                })
            })
            .collect()
    })
}

/// The transport opener (the real serial port; tests may substitute).
pub(crate) type Opener<'a> =
    &'a (dyn Fn(&str, &SerialSettings) -> Result<Box<dyn Transport>, ModemError> + Sync);

/// Open a real serial port as a boxed transport.
pub(crate) fn open_serial(
    port: &str,
    settings: &SerialSettings,
) -> Result<Box<dyn Transport>, ModemError> {
    transport::open(port, settings)
        .map(|t| Box::new(t) as Box<dyn Transport>)
        .map_err(ModemError::Open)
}

/// Open the port and synchronise, waiting up to `wait` for it to appear (after an unplug).
pub(crate) fn connect(
    port: &str,
    settings: &PortSettings,
    opener: Opener<'_>,
    journal: &Journal,
    wait: Duration,
) -> Result<Modem<Box<dyn Transport>>, ModemError> {
    let deadline = Instant::now() + wait;
    loop {
        match opener(port, &settings.serial) {
            Ok(t) => {
                let mut m = Modem::new(t, settings.timeouts);
                m.set_dialect(settings.dialect);
                m.set_observer(journal.observer());
                match m.sync() {
                    Ok(()) => return Ok(m),
                    Err(e @ ModemError::Disconnected { .. }) if Instant::now() < deadline => {
                        let _ = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// De-duplicate ports that name the same device (symlinks, repeated flags), keeping order.
pub(crate) fn unique_ports(ports: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in ports {
        let key = std::fs::canonicalize(p)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.clone());
        if seen.insert(key) {
            out.push(p.clone());
        }
    }
    out
}

/// A short code for a modem error (for status and JSON).
pub(crate) fn error_code(e: &ModemError) -> BenchCode {
    match e {
        ModemError::Open(o) => match o.kind {
            transport::OpenErrorKind::NotFound => BenchCode::PortNotFound,
            transport::OpenErrorKind::Permission => BenchCode::PortPermission,
            transport::OpenErrorKind::Busy => BenchCode::PortBusy,
            transport::OpenErrorKind::Other => BenchCode::PortOpenFailed,
        },
        ModemError::NotResponding { .. } => BenchCode::NotResponding,
        ModemError::Timeout { .. } => BenchCode::Timeout,
        ModemError::Disconnected { .. } => BenchCode::Disconnected,
        ModemError::Reset { .. } => BenchCode::DeviceReset,
        ModemError::Error { .. } => BenchCode::AtError,
        ModemError::Cme { code, .. } => BenchCode::Cme(code.0),
        ModemError::Cms { code, .. } => BenchCode::Cms(*code),
        ModemError::Unexpected { .. } => BenchCode::UnexpectedReply,
        ModemError::Encode { .. } => BenchCode::BadContent,
    }
}

/// Should the whole device flow be tried again (after reconnecting)?
pub(crate) fn retryable(e: &ModemError) -> bool {
    matches!(
        e,
        ModemError::Disconnected { .. } | ModemError::Reset { .. } | ModemError::Timeout { .. }
    )
}
