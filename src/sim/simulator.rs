//! [`Simulator`]: N modems, one thread and one pty each; applies latency and the output
//! faults (garbage, URCs, slow, lost final, disconnect) to what the engine answers; keeps the
//! `--link-dir` symlinks and the `--state` file.

use super::engine::{Modem, Reply};
use super::fault::{Fault, FaultSet, FaultSpec};
use super::framing::{frame, Piece, Received, Receiver};
use super::identity::SimIdentity;
use super::profile::{Latency, Profile};
use super::pty::Pty;
use super::rng::SimRng;
use super::shell::{self, ShellLine, ShellReceiver};
use super::state;
use super::storage::{Origin, Storage};
use super::SimError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many received commands each modem remembers for [`ModemSnapshot::commands`].
const HISTORY: usize = 10_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of modems (at least 1).
    pub count: usize,
    /// What every modem imitates.
    pub profile: Profile,
    /// Faults switched on for every modem at start.
    pub faults: Vec<Fault>,
    /// Faults with a target modem and/or trigger command (`--fault NAME[:CMD][@INDEX]`).
    pub fault_specs: Vec<FaultSpec>,
    /// `None`: one-shot faults fire once, standing faults always. `Some(p)`: every fault fires
    /// on each eligible event with probability `p` (seeded).
    pub fault_probability: Option<f64>,
    /// JSON file with every modem's identity and storage, loaded at start (if it exists) and
    /// written at shutdown.
    pub state_file: Option<PathBuf>,
    /// Directory for stable symlinks `modem0`, `modem1`, … to the ptys.
    pub link_dir: Option<PathBuf>,
    /// Response latency model.
    pub latency: Latency,
    /// Seed for identities (IMEI, UUID, identity key), fault probabilities and jitter.
    pub seed: Option<u64>,
    /// Functional mode after boot (0, 1 or 4; default 0).
    pub boot_cfun: u8,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 1,
            profile: Profile::Nrf9160,
            faults: Vec::new(),
            fault_specs: Vec::new(),
            fault_probability: None,
            state_file: None,
            link_dir: None,
            latency: Latency::Test,
            seed: None,
            boot_cfun: 0,
        }
    }
}

/// A stored credential as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Security tag.
    pub sec_tag: u32,
    /// %CMNG type.
    pub kind: u8,
    /// Uppercase SHA-256 as `%CMNG=1` lists it.
    pub sha256_upper: String,
    /// The stored text for types 0 and 1 (certificates), when UTF-8.
    pub content: Option<String>,
    /// Public key of a `%KEYGEN` key.
    pub public_key: Option<[u8; 65]>,
    /// Who stored it.
    pub origin: Origin,
}

/// A copy of one modem's state.
#[derive(Debug, Clone)]
pub struct ModemSnapshot {
    /// Index (0-based).
    pub index: usize,
    /// The port clients open now (link if `link_dir`, else the pty).
    pub port: PathBuf,
    /// IMEI.
    pub imei: String,
    /// Device UUID (lowercase, hyphenated).
    pub uuid: String,
    /// `AT+CGMR`.
    pub firmware: String,
    /// `AT+CGMM`.
    pub model: String,
    /// Functional mode.
    pub cfun: u8,
    /// `AT+CMEE` state.
    pub cmee: bool,
    /// Boots so far (1 after start; +1 per disconnect or reset).
    pub boots: u32,
    /// User credentials in storage order (modem-owned entries left out).
    pub credentials: Vec<Credential>,
    /// Identity public key (verifies the COSE signatures of this modem).
    pub identity_public_key: [u8; 65],
    /// Commands received so far (lossy UTF-8, each cut at 200 bytes).
    pub commands: Vec<String>,
    /// Disconnects simulated so far.
    pub disconnects: u32,
    /// Whether it is answering a command now (read, reply not yet fully written): a test that
    /// killed its host mid-command waits for `false` before the next session.
    pub busy: bool,
}

impl ModemSnapshot {
    /// The credential at (`sec_tag`, `kind`).
    pub fn credential(&self, sec_tag: u32, kind: u8) -> Option<&Credential> {
        self.credentials
            .iter()
            .find(|c| c.sec_tag == sec_tag && c.kind == kind)
    }
}

struct Shared {
    index: usize,
    modem: Mutex<Modem>,
    pty_path: Mutex<PathBuf>,
    link: Option<PathBuf>,
    history: Mutex<Vec<String>>,
    disconnects: Mutex<u32>,
    /// A command is being answered: set when it is read, cleared once its reply is written.
    busy: AtomicBool,
}

/// Marks a modem busy while one command is answered (cleared however the answer ends).
struct Answering<'a>(&'a AtomicBool);

impl<'a> Answering<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::SeqCst);
        Answering(flag)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Running simulated modems. Dropping it stops them (and saves the state file, ignoring
/// errors); [`Simulator::shutdown`] does the same and reports errors.
pub struct Simulator {
    shared: Vec<Arc<Shared>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    state_file: Option<PathBuf>,
    profile: Profile,
    stopped: bool,
    /// Modems in the state file beyond `count`: written back unchanged.
    extra_state: Vec<state::Loaded>,
    /// The `--link-dir` lock, held while the simulator runs (one simulator per link dir).
    _link_lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("modems", &self.shared.len())
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Create the modems (from the state file where it has them), open one pty each, boot
    /// them and start one thread per modem.
    pub fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        if cfg.count == 0 || cfg.count > 256 {
            return Err(SimError::Config(format!(
                "--count must be 1..=256, got {}",
                cfg.count
            )));
        }
        if let Some(p) = cfg.fault_probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::Config(format!(
                    "fault probability must be between 0 and 1, got {p}"
                )));
            }
        }
        for s in &cfg.fault_specs {
            if let Some(m) = s.modem {
                if m >= cfg.count {
                    return Err(SimError::Config(format!(
                        "fault `{s}` targets modem {m}, but there are only {} (0..={})",
                        cfg.count,
                        cfg.count - 1
                    )));
                }
            }
        }
        let link_lock = match &cfg.link_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| SimError::LinkDir {
                    path: dir.clone(),
                    msg: e.to_string(),
                })?;
                Some(lock_link_dir(dir)?)
            }
            None => None,
        };
        let mut loaded = match &cfg.state_file {
            Some(p) => state::load(p)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let extra: Vec<state::Loaded> = if loaded.len() > cfg.count {
            loaded.split_off(cfg.count)
        } else {
            Vec::new()
        };
        let mut loaded = loaded.into_iter();
        let mut os_rng = SimRng::from_os();
        let stop = Arc::new(AtomicBool::new(false));
        let mut shared = Vec::with_capacity(cfg.count);
        let mut ptys = Vec::with_capacity(cfg.count);
        for i in 0..cfg.count {
            let mut rng = match cfg.seed {
                Some(s) => SimRng::derive(s, i as u64),
                None => SimRng::from_seed(os_rng.next_u64()),
            };
            let (identity, storage) = match loaded.next() {
                Some(l) => (l.identity, l.storage),
                None => {
                    let id =
                        SimIdentity::generate(cfg.profile.tac(), &mut rng, cfg.seed.is_some())?;
                    let st = Storage::new(&id.uuid);
                    (id, st)
                }
            };
            let mut specs: Vec<FaultSpec> =
                cfg.faults.iter().copied().map(FaultSpec::all).collect();
            specs.extend(
                cfg.fault_specs
                    .iter()
                    .filter(|s| s.modem.map_or(true, |m| m == i))
                    .cloned(),
            );
            let fault_rng = SimRng::from_seed(rng.next_u64());
            let faults = FaultSet::new(specs, cfg.fault_probability, fault_rng);
            let modem = Modem::new(cfg.profile, identity, storage, faults, cfg.boot_cfun);
            let pty = Pty::open()?;
            let link = cfg.link_dir.as_ref().map(|d| d.join(format!("modem{i}")));
            if let Some(l) = &link {
                relink(l, pty.path())?;
            }
            shared.push(Arc::new(Shared {
                index: i,
                modem: Mutex::new(modem),
                pty_path: Mutex::new(pty.path().to_path_buf()),
                link,
                history: Mutex::new(Vec::new()),
                disconnects: Mutex::new(0),
                busy: AtomicBool::new(false),
            }));
            ptys.push((pty, rng));
        }
        // Modems beyond --count stay in the state file untouched.
        let mut sim = Simulator {
            shared,
            threads: Vec::new(),
            stop: stop.clone(),
            state_file: cfg.state_file.clone(),
            profile: cfg.profile,
            stopped: false,
            extra_state: extra,
            _link_lock: link_lock,
        };
        for (sh, (pty, rng)) in sim.shared.clone().into_iter().zip(ptys) {
            let stop = stop.clone();
            let latency = cfg.latency;
            let handle = std::thread::Builder::new()
                .name(format!("sim-modem{}", sh.index))
                .spawn(move || run_modem(sh, pty, rng, latency, stop))
                .map_err(|e| SimError::Config(format!("cannot start a thread: {e}")))?;
            sim.threads.push(handle);
        }
        Ok(sim)
    }

    /// Number of modems.
    pub fn count(&self) -> usize {
        self.shared.len()
    }

    /// The port of every modem: the `link_dir` symlink if configured, else the pty slave
    /// path (which changes after a simulated disconnect).
    pub fn ports(&self) -> Vec<PathBuf> {
        self.shared.iter().map(|s| port_of(s)).collect()
    }

    /// The pty slave paths (never the symlinks).
    pub fn pty_paths(&self) -> Vec<PathBuf> {
        self.shared
            .iter()
            .map(|s| lock(&s.pty_path).clone())
            .collect()
    }

    /// A copy of modem `i`'s state, or `None` if there is no modem `i`.
    pub fn try_snapshot(&self, i: usize) -> Option<ModemSnapshot> {
        let sh = self.shared.get(i)?;
        let port = port_of(sh);
        let commands = lock(&sh.history).clone();
        let disconnects = *lock(&sh.disconnects);
        let busy = sh.busy.load(Ordering::SeqCst);
        let m = lock(&sh.modem);
        Some(ModemSnapshot {
            index: i,
            port,
            imei: m.identity.imei.clone(),
            uuid: m.identity.uuid_string(),
            firmware: m.profile.firmware().to_string(),
            model: m.profile.model().to_string(),
            cfun: m.cfun,
            cmee: m.cmee,
            boots: m.boots(),
            credentials: m
                .storage
                .user_entries()
                .map(|e| Credential {
                    sec_tag: e.sec_tag,
                    kind: e.kind,
                    sha256_upper: e.sha256_upper(),
                    content: if e.kind <= 1 {
                        std::str::from_utf8(&e.content).ok().map(str::to_string)
                    } else {
                        None
                    },
                    public_key: e.public_key,
                    origin: e.origin,
                })
                .collect(),
            identity_public_key: m.identity.identity_public_key(),
            commands,
            disconnects,
            busy,
        })
    }

    /// A copy of modem `i`'s state.
    ///
    /// # Panics
    /// If there is no modem `i` (a bug in the caller, like an out-of-range slice index).
    pub fn snapshot(&self, i: usize) -> ModemSnapshot {
        match self.try_snapshot(i) {
            Some(s) => s,
            None => panic!("no simulated modem {i} (there are {})", self.shared.len()),
        }
    }

    /// Replace modem `i`'s faults (their default triggers); one-shot faults are re-armed.
    /// Ignored if there is no modem `i`.
    pub fn set_faults(&self, i: usize, faults: Vec<Fault>) {
        self.set_fault_specs(i, faults.into_iter().map(FaultSpec::all).collect());
    }

    /// Replace modem `i`'s faults with trigger-command specs (the `modem` field is ignored).
    pub fn set_fault_specs(&self, i: usize, specs: Vec<FaultSpec>) {
        if let Some(sh) = self.shared.get(i) {
            lock(&sh.modem).faults.set(specs);
        }
    }

    /// Modem `i`'s identity public key (uncompressed SEC1).
    ///
    /// # Panics
    /// If there is no modem `i`.
    pub fn identity_public_key(&self, i: usize) -> [u8; 65] {
        self.snapshot(i).identity_public_key
    }

    /// Write the state file now (if configured).
    pub fn save_state(&self) -> Result<(), SimError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let guards: Vec<MutexGuard<'_, Modem>> =
            self.shared.iter().map(|s| lock(&s.modem)).collect();
        let mut parts: Vec<(&SimIdentity, &Storage)> =
            guards.iter().map(|m| (&m.identity, &m.storage)).collect();
        parts.extend(self.extra_state.iter().map(|l| (&l.identity, &l.storage)));
        state::save(path, self.profile.name(), &parts)
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stop every modem, save the state file, remove the symlinks.
    pub fn shutdown(mut self) -> Result<(), SimError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), SimError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.stop_threads();
        let saved = self.save_state();
        for sh in &self.shared {
            if let Some(l) = &sh.link {
                if std::fs::symlink_metadata(l).is_ok_and(|m| m.file_type().is_symlink()) {
                    let _ = std::fs::remove_file(l);
                }
            }
        }
        saved
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn port_of(sh: &Shared) -> PathBuf {
    match &sh.link {
        Some(l) => l.clone(),
        None => lock(&sh.pty_path).clone(),
    }
}

/// Name of the lock file a running simulator holds in its `--link-dir`.
pub const LINK_LOCK: &str = ".nrfca-sim.lock";

/// Take the link directory for this simulator: an exclusive `flock` on `dir/.nrfca-sim.lock`
/// (holding our pid), so a second simulator on the same directory is refused instead of
/// taking over the first one's links and deleting them when it stops.
fn lock_link_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, SimError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LINK_LOCK);
    let err = |msg: String| SimError::LinkDir {
        path: dir.to_path_buf(),
        msg,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut l) => {
            let _ = l.set_len(0);
            let _ = l.rewind();
            let _ = writeln!(l, "{}", std::process::id());
            Ok(l)
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let who = match pid.trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            Err(err(format!(
                "is in use by another running nrfca sim{who}; stop it, or give this one another --link-dir"
            )))
        }
        Err((_, e)) => Err(err(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Point symlink `link` at `target` atomically (replacing whatever symlink is there).
fn relink(link: &Path, target: &Path) -> Result<(), SimError> {
    let err = |e: std::io::Error| SimError::LinkDir {
        path: link.to_path_buf(),
        msg: e.to_string(),
    };
    if let Ok(m) = std::fs::symlink_metadata(link) {
        if !m.file_type().is_symlink() {
            return Err(SimError::LinkDir {
                path: link.to_path_buf(),
                msg: "exists and is not a symlink; remove it or choose another --link-dir".into(),
            });
        }
    }
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "modem".into());
    let tmp = link.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(err)?;
    std::fs::rename(&tmp, link).map_err(err)
}

/// What to write for one reply, after faults.
struct Plan {
    bytes: Vec<u8>,
    /// Disconnect after this many bytes.
    cut: Option<usize>,
    slow: bool,
}

fn garbage_line(rng: &mut SimRng) -> Vec<u8> {
    let n = 4 + rng.below(20) as usize;
    let mut out: Vec<u8> = (0..n)
        .map(|_| loop {
            let b = rng.below(256) as u8;
            if !matches!(b, b'\r' | b'\n' | b'"') {
                break b;
            }
        })
        .collect();
    out.extend_from_slice(b"\r\n");
    out
}

/// A Zephyr log line from the application (never from `at_host`, which does not log on the
/// AT UART): `asset_tracker` as in the real capture EX-03, `multi_service` behind the shell.
fn log_line(uptime: Duration, module: &str, text: &str) -> Vec<u8> {
    let us = uptime.as_micros();
    let (h, m, s) = (
        us / 3_600_000_000,
        (us / 60_000_000) % 60,
        (us / 1_000_000) % 60,
    );
    let (ms, rest) = ((us / 1000) % 1000, us % 1000);
    format!("[{h:02}:{m:02}:{s:02}.{ms:03},{rest:03}] <inf> {module}: {text}").into_bytes()
}

fn plan_reply(modem: &mut Modem, reply: &Reply, uptime: Duration) -> Plan {
    let name = reply.name.as_str();
    let mut pieces = reply.pieces();
    if modem
        .faults
        .fire(Fault::LostFinal, name, reply.changed_storage)
    {
        pieces.retain(|p| !matches!(p, Piece::Final(_)));
    }
    if modem.faults.fire(Fault::Urcs, name, true) {
        // Between the command and its reply, and between the reply's information block and
        // its final result; never inside the block (the application forwards one modem reply
        // as a whole, as in the real capture EX-03).
        let module = if modem.profile.is_shell() {
            "multi_service"
        } else {
            "asset_tracker"
        };
        let mut with: Vec<Piece> = vec![
            Piece::Urc(b"+CSCON: 1".to_vec()),
            Piece::Urc(log_line(uptime, module, "RRC mode: Connected")),
            Piece::Urc(b"%XMODEMSLEEP: 1,36000".to_vec()),
        ];
        for p in pieces {
            if let Piece::Final(_) = &p {
                with.push(Piece::Urc(b"+CEREG: 0".to_vec()));
                with.push(Piece::Urc(log_line(
                    uptime,
                    module,
                    "LTE cell changed: Cell ID: -1, Tracking area: -1",
                )));
            }
            with.push(p);
        }
        with.push(Piece::Urc(b"+CSCON: 0".to_vec()));
        pieces = with;
    }
    if modem.faults.fire(Fault::Garbage, name, true) {
        let g = garbage_line(modem.faults.rng());
        pieces.insert(0, Piece::Raw(g));
    }
    let bytes = frame(&pieces, modem.profile.is_slm());
    let cut = if modem
        .faults
        .fire(Fault::Disconnect, name, reply.changed_storage)
    {
        Some((bytes.len() / 2).max(1).min(bytes.len()))
    } else {
        None
    };
    let slow = modem.faults.fire(Fault::Slow, name, true);
    Plan { bytes, cut, slow }
}

fn boot_bytes(modem: &mut Modem) -> Vec<u8> {
    let mut pieces = modem.boot();
    if modem.faults.fire(Fault::Garbage, "", true) {
        let g = garbage_line(modem.faults.rng());
        pieces.insert(0, Piece::Raw(g));
    }
    let mut bytes = frame(&pieces, modem.profile.is_slm());
    if modem.profile.is_shell() {
        bytes.extend_from_slice(shell::PROMPT);
    }
    bytes
}

/// What the port's reader assembled: a command for the modem (with the shell's echo before
/// its reply and the prompt after it), or a shell line the shell answers itself.
enum Work {
    Modem { echo: Vec<u8>, received: Received },
    Shell(Vec<u8>),
}

/// The port's input side: the AT host's receiver, or the shell's line editor.
enum Input {
    At(Receiver),
    Shell(ShellReceiver),
}

impl Input {
    fn new(profile: Profile) -> Input {
        if profile.is_shell() {
            Input::Shell(ShellReceiver::default())
        } else {
            Input::At(Receiver::new())
        }
    }

    fn reset(&mut self) {
        match self {
            Input::At(r) => r.reset(),
            Input::Shell(r) => r.reset(),
        }
    }

    /// Feed one byte; `truncate` is asked, for every complete shell line, whether the
    /// `shell-truncate` fault cuts it (the shell's buffer then ends the line).
    fn push(&mut self, b: u8, truncate: &mut dyn FnMut(&[u8]) -> bool) -> Option<Work> {
        match self {
            Input::At(r) => r.push(b).map(|received| Work::Modem {
                echo: Vec::new(),
                received,
            }),
            Input::Shell(r) => {
                let mut line = r.push(b)?;
                if line.len() > shell::DEFAULT_SHELL_BUFFER && truncate(&line) {
                    line.truncate(shell::DEFAULT_SHELL_BUFFER);
                }
                let echo = shell::echo(&line);
                Some(match shell::interpret(&line) {
                    ShellLine::At(cmd) => Work::Modem {
                        echo,
                        received: Received::Command(cmd),
                    },
                    other => {
                        let mut bytes = echo;
                        bytes.extend(shell::answer(&other));
                        Work::Shell(bytes)
                    }
                })
            }
        }
    }
}

/// Sleep up to `d`, waking early when asked to stop. False if stopped.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Write `bytes` at the pace of the latency model (or trickled when slow).
fn send(pty: &mut Pty, bytes: &[u8], latency: Latency, slow: bool, stop: &AtomicBool) {
    let (chunk, pause) = if slow {
        (16usize, Duration::from_millis(5))
    } else if let Some(per_ms) = latency.bytes_per_ms() {
        (per_ms * 4, Duration::from_millis(4))
    } else {
        (bytes.len().max(1), Duration::ZERO)
    };
    for piece in bytes.chunks(chunk) {
        if pty.write_timeout(piece, WRITE_TIMEOUT).is_err() {
            return;
        }
        if !pause.is_zero() && !nap(pause, stop) {
            return;
        }
    }
}

fn record(sh: &Shared, cmd: &[u8]) {
    let mut h = lock(&sh.history);
    if h.len() >= HISTORY {
        h.remove(0);
    }
    let cut = cmd.get(..cmd.len().min(200)).unwrap_or_default();
    h.push(String::from_utf8_lossy(cut).into_owned());
}

fn run_modem(
    sh: Arc<Shared>,
    mut pty: Pty,
    mut rng: SimRng,
    latency: Latency,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let profile = lock(&sh.modem).profile;
    let mut rx = Input::new(profile);
    let banner = boot_bytes(&mut lock(&sh.modem));
    send(&mut pty, &banner, latency, false, &stop);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let n = match pty.read_timeout(&mut buf, Duration::from_millis(50)) {
            Ok(n) => n,
            Err(_) => {
                if !nap(Duration::from_millis(50), &stop) {
                    break;
                }
                continue;
            }
        };
        let data = buf.get(..n).unwrap_or_default();
        let mut received = Vec::new();
        let mut truncate = |line: &[u8]| {
            let name = String::from_utf8_lossy(line.get(..40).unwrap_or(line)).to_uppercase();
            let name = name.trim_start_matches("AT '").trim_start_matches("AT ");
            let name = name.strip_prefix("AT").unwrap_or(name);
            lock(&sh.modem)
                .faults
                .fire(Fault::ShellTruncate, name, true)
        };
        for &b in data {
            if let Some(r) = rx.push(b, &mut truncate) {
                received.push(r);
            }
        }
        for work in received {
            let (echo, r) = match work {
                Work::Shell(bytes) => {
                    send(&mut pty, &bytes, latency, false, &stop);
                    continue;
                }
                Work::Modem { echo, received } => (echo, received),
            };
            let _answering = Answering::start(&sh.busy);
            let (plan, class, reset) = {
                let mut m = lock(&sh.modem);
                let reply = match &r {
                    Received::Command(c) => {
                        record(&sh, c);
                        m.execute(c)
                    }
                    Received::Overflow => {
                        record(&sh, b"<overflow: command longer than 4095 bytes>");
                        m.overflow()
                    }
                };
                let mut plan = plan_reply(&mut m, &reply, started.elapsed());
                if m.profile.is_shell() && !reply.reset {
                    plan.bytes.extend(shell::after_reply());
                }
                (plan, reply.class, reply.reset)
            };
            if !echo.is_empty() {
                // The shell echoes while the line is typed, before the modem is asked.
                send(&mut pty, &echo, latency, false, &stop);
            }
            let (min, spread) = latency.delay_range(class);
            let mut delay = min + Duration::from_micros(rng.below(spread.as_micros() as u64 + 1));
            if plan.slow {
                delay = delay * 10 + Duration::from_millis(250);
            }
            if !nap(delay, &stop) {
                return;
            }
            match plan.cut {
                Some(cut) => {
                    let part = plan.bytes.get(..cut).unwrap_or_default();
                    send(&mut pty, part, latency, plan.slow, &stop);
                    match reconnect(&sh, pty, latency, &stop) {
                        Some(p) => pty = p,
                        None => return,
                    }
                    rx.reset();
                    break; // bytes already received for the old port are lost
                }
                None => send(&mut pty, &plan.bytes, latency, plan.slow, &stop),
            }
            if reset {
                rx.reset();
                if !nap(latency.replug_delay() / 2, &stop) {
                    return;
                }
                let banner = boot_bytes(&mut lock(&sh.modem));
                send(&mut pty, &banner, latency, false, &stop);
                break;
            }
        }
    }
}

/// Unplug: close the pty, wait, plug a new one in, boot. `None` if asked to stop.
fn reconnect(sh: &Shared, old: Pty, latency: Latency, stop: &AtomicBool) -> Option<Pty> {
    // The link goes first, like /dev/serial/by-id on a real unplug: while the modem is
    // away the link resolves to nothing (never to a pty number the kernel hands out again).
    if let Some(l) = &sh.link {
        let _ = std::fs::remove_file(l);
    }
    drop(old);
    *lock(&sh.disconnects) += 1;
    if !nap(latency.replug_delay(), stop) {
        return None;
    }
    let mut pty = loop {
        match Pty::open() {
            Ok(p) => break p,
            Err(_) => {
                if !nap(Duration::from_millis(200), stop) {
                    return None;
                }
            }
        }
    };
    *lock(&sh.pty_path) = pty.path().to_path_buf();
    if let Some(l) = &sh.link {
        let _ = relink(l, pty.path());
    }
    let banner = boot_bytes(&mut lock(&sh.modem));
    send(&mut pty, &banner, latency, false, stop);
    Some(pty)
}
