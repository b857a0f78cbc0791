//! The crash test hook of `sign`: with `NRFCA_CRASH_AT=<point>[:<n>]` the process aborts (or
//! raises a signal) at that point of the batch, so `tests/crash.rs` can check SPEC §5 at exact
//! instants.

/// Environment variable of the crash test hook (see `crash_point`).
pub const CRASH_ENV: &str = "NRFCA_CRASH_AT";

/// The named points `crash_point` knows, in the order a batch passes them. `checked` and
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
/// `NRFCA_CRASH_SIGNAL=INT|TERM|HUP|KILL|STOP`, the point named by [`CRASH_ENV`] sends that signal
/// to the process itself instead of aborting (test hook; see `crash_point`).
pub const CRASH_SIGNAL_ENV: &str = "NRFCA_CRASH_SIGNAL";

/// Test hook: with `NRFCA_CRASH_AT=<point>` (or `<point>:<n>`) the process aborts at that
/// point of the batch, as a power cut or `kill -9` would stop it (no destructor runs, no
/// buffer is flushed, no core file once the key was unlocked). It can only make nrfca die —
/// which anyone who can set its environment can do anyway — and `tests/crash.rs` uses it to
/// check SPEC §5 at exact instants. Documented in docs/threat-model.md.
/// The parsed crash hook: point, optional count, optional signal to send instead of aborting.
type CrashAt = Option<(String, Option<u64>, Option<nix::sys::signal::Signal>)>;

pub(crate) fn crash_point(point: &str, n: u64) {
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
                // Pauses the batch at that point (a test resumes it with SIGCONT after
                // changing the world, e.g. removing the PKCS#11 token).
                "STOP" => Some(Signal::SIGSTOP),
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
