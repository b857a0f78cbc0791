//! Fault injection: the faults a real bench produces (modem-at-protocol.md §10.3), how they are
//! named on the command line (`NAME[:COMMAND][@MODEM]`), and when each one fires.
//!
//! Two kinds:
//! - **one-shot** (`disconnect`, `lost-final`, `keygen-fail`): fire once, on the first eligible
//!   command after being switched on (at start or by [`crate::sim::Simulator::set_faults`]),
//!   then stay quiet, so a re-run of the same job succeeds.
//! - **standing** (`garbage`, `urcs`, `slow`, `cme-on-write`, `storage-full`,
//!   `first-command-fails`, `keygen-no-attributes`, `shell-truncate`): fire on every eligible event while switched on
//!   (`first-command-fails`: on the first command after every boot).
//!
//! With a fault probability `p` (`--fault-probability`), every fault of either kind instead
//! fires on each eligible event with probability `p`, drawn from the modem's seeded generator.

use super::rng::SimRng;
use std::fmt;
use std::str::FromStr;

/// A fault a simulated modem can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// USB unplugged mid-reply: part of the reply is written, then the pty master closes (reads
    /// and writes on the port fail with EIO); the command's side effects are kept. The modem
    /// comes back after a short delay on a new pty (boot banner, CFUN and CMEE reset; the
    /// `--link-dir` symlink is re-pointed, [`crate::sim::Simulator::ports`] reports the new path).
    /// One-shot. Default trigger: the first successful storage-changing command (`%KEYGEN`,
    /// `%CMNG=0`, `%CMNG=3`).
    Disconnect,
    /// A line of line-noise (random bytes incl. NUL, 0x7F, invalid UTF-8; never CR, LF or `"`)
    /// before every reply and after boot. Standing.
    Garbage,
    /// URCs (`+CSCON`, `+CEREG`, `%XMODEMSLEEP`) and Zephyr log lines before, between and after
    /// the information lines of every reply (never inside a quoted string). Standing.
    Urcs,
    /// Every reply takes ten times its latency plus 250 ms and trickles out in 16-byte pieces.
    /// Standing.
    Slow,
    /// The final result line (`OK`/`ERROR`/`+CME ERROR`) of a command is not sent; its
    /// information lines and side effects are. One-shot. Default trigger as for `disconnect`.
    LostFinal,
    /// `%CMNG=0` writes answer `+CME ERROR: 528` (power-off warning active) and store nothing.
    /// Standing.
    CmeOnWrite,
    /// `%CMNG=0` writes and `%KEYGEN` answer `+CME ERROR: 515` (memory full). Standing.
    StorageFull,
    /// The next `%KEYGEN` that would succeed answers `+CME ERROR: 523` and stores no key.
    /// One-shot.
    KeygenFail,
    /// The first command after every boot answers a plain `ERROR` (the AT host not ready yet).
    /// Standing (once per boot).
    FirstCommandFails,
    /// `%KEYGEN` with subject attributes (`AT%KEYGEN=<tag>,2,0,"CN=…"`) answers a plain
    /// `ERROR`, as firmware that takes none does. Standing.
    KeygenNoAttributes,
    /// `--profile shell`: the shell keeps only the first 256 bytes of a line (Zephyr's default
    /// command buffer), so a certificate write reaches the modem cut short. Standing.
    ShellTruncate,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 11] = [
        Fault::Disconnect,
        Fault::Garbage,
        Fault::Urcs,
        Fault::Slow,
        Fault::LostFinal,
        Fault::CmeOnWrite,
        Fault::StorageFull,
        Fault::KeygenFail,
        Fault::FirstCommandFails,
        Fault::KeygenNoAttributes,
        Fault::ShellTruncate,
    ];

    /// The kebab-case `--fault` name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Disconnect => "disconnect",
            Fault::Garbage => "garbage",
            Fault::Urcs => "urcs",
            Fault::Slow => "slow",
            Fault::LostFinal => "lost-final",
            Fault::CmeOnWrite => "cme-on-write",
            Fault::StorageFull => "storage-full",
            Fault::KeygenFail => "keygen-fail",
            Fault::FirstCommandFails => "first-command-fails",
            Fault::KeygenNoAttributes => "keygen-no-attributes",
            Fault::ShellTruncate => "shell-truncate",
        }
    }

    /// One line for `--help` and the docs.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Disconnect => "port vanishes mid-reply, comes back rebooted (one-shot)",
            Fault::Garbage => "a line of noise bytes before every reply",
            Fault::Urcs => "URCs and log lines interleaved with every reply",
            Fault::Slow => "replies 10x slower (+250 ms), trickled in 16-byte pieces",
            Fault::LostFinal => "the final result of a command is not sent (one-shot)",
            Fault::CmeOnWrite => "%CMNG writes answer +CME ERROR: 528",
            Fault::StorageFull => "%CMNG writes and %KEYGEN answer +CME ERROR: 515",
            Fault::KeygenFail => "the next %KEYGEN answers +CME ERROR: 523 (one-shot)",
            Fault::FirstCommandFails => "the first command after each boot answers ERROR",
            Fault::KeygenNoAttributes => "%KEYGEN with subject attributes answers ERROR",
            Fault::ShellTruncate => "the shell cuts lines at 256 bytes (profile shell)",
        }
    }

    /// True for faults that fire once per switch-on (without a probability).
    pub fn is_one_shot(self) -> bool {
        matches!(
            self,
            Fault::Disconnect | Fault::LostFinal | Fault::KeygenFail
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.trim().to_ascii_lowercase().replace('_', "-");
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name() == want)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault `{s}`; use one of {}", names.join(", "))
            })
    }
}

/// A fault with its optional trigger command and target modem, as given to `--fault`:
/// `NAME[:COMMAND][@MODEM]`, e.g. `garbage`, `disconnect@2`, `lost-final:%KEYGEN@0`,
/// `lost-final:*` (any command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// The fault.
    pub fault: Fault,
    /// Only commands starting with this text (after `AT`, case-insensitive) trigger it;
    /// `*` means any command; `None` means the fault's default trigger. A suffix `#N` limits
    /// it to the N-th command the trigger accepts (e.g. `%CMNG=1#2`).
    pub command: Option<String>,
    /// Only this modem (0-based); `None` means every modem.
    pub modem: Option<usize>,
}

impl FaultSpec {
    /// The fault on every modem with its default trigger.
    pub fn all(fault: Fault) -> FaultSpec {
        FaultSpec {
            fault,
            command: None,
            modem: None,
        }
    }

    /// The fault on modem `index` only.
    pub fn on(index: usize, fault: Fault) -> FaultSpec {
        FaultSpec {
            fault,
            command: None,
            modem: Some(index),
        }
    }

    /// Restrict the trigger to commands starting with `command` (e.g. `%KEYGEN`).
    pub fn when(mut self, command: &str) -> FaultSpec {
        self.command = Some(command.to_string());
        self
    }

    /// Does the trigger accept command text `cmd` (uppercase, after `AT`)? `default` is the
    /// answer when no command was given.
    fn accepts(&self, cmd: &str, default: bool) -> bool {
        match self.command.as_deref().map(split_nth) {
            None => default,
            Some(("*", _)) => true,
            Some((c, _)) => {
                let c = c.to_ascii_uppercase();
                let c = c.strip_prefix("AT").unwrap_or(&c);
                cmd.starts_with(c)
            }
        }
    }

    /// `COMMAND#N`: only the N-th command the trigger accepts (1-based) may fire.
    fn nth(&self) -> Option<u32> {
        self.command.as_deref().and_then(|c| split_nth(c).1)
    }
}

/// Split a trigger `COMMAND#N` into the command prefix and N (a test hook: e.g.
/// `lost-final:%CMNG=1#2` hits the second slot listing of an export, not the first).
fn split_nth(c: &str) -> (&str, Option<u32>) {
    match c.rsplit_once('#') {
        Some((cmd, n)) => match n.trim().parse::<u32>() {
            Ok(n) if n > 0 => (cmd, Some(n)),
            _ => (c, None),
        },
        None => (c, None),
    }
}

impl From<Fault> for FaultSpec {
    fn from(fault: Fault) -> FaultSpec {
        FaultSpec::all(fault)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.fault.name())?;
        if let Some(c) = &self.command {
            write!(f, ":{c}")?;
        }
        if let Some(m) = self.modem {
            write!(f, "@{m}")?;
        }
        Ok(())
    }
}

impl FromStr for FaultSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, modem) = match s.rsplit_once('@') {
            Some((r, m)) => {
                let m = m.trim().parse::<usize>().map_err(|_| {
                    format!("bad modem index in fault `{s}`; write NAME[:COMMAND][@INDEX], e.g. disconnect@1")
                })?;
                (r, Some(m))
            }
            None => (s, None),
        };
        let (name, command) = match rest.split_once(':') {
            Some((n, c)) if !c.trim().is_empty() => (n, Some(c.trim().to_string())),
            Some((n, _)) => (n, None),
            None => (rest, None),
        };
        Ok(FaultSpec {
            fault: name.parse()?,
            command,
            modem,
        })
    }
}

#[derive(Debug, Clone)]
struct Armed {
    spec: FaultSpec,
    spent: bool,
    /// Commands the trigger accepted so far (for `COMMAND#N`).
    seen: u32,
}

/// The faults switched on for one modem and their one-shot state.
#[derive(Debug, Clone)]
pub struct FaultSet {
    armed: Vec<Armed>,
    probability: Option<f64>,
    rng: SimRng,
}

impl FaultSet {
    /// Faults `specs` (the `modem` field is ignored here), with an optional per-event
    /// probability, drawing from `rng`.
    pub fn new(specs: Vec<FaultSpec>, probability: Option<f64>, rng: SimRng) -> FaultSet {
        let mut s = FaultSet {
            armed: Vec::new(),
            probability,
            rng,
        };
        s.set(specs);
        s
    }

    /// Replace the faults (re-arms one-shot faults).
    pub fn set(&mut self, specs: Vec<FaultSpec>) {
        self.armed = specs
            .into_iter()
            .map(|spec| Armed {
                spec,
                spent: false,
                seen: 0,
            })
            .collect();
    }

    /// The faults switched on.
    pub fn specs(&self) -> Vec<FaultSpec> {
        self.armed.iter().map(|a| a.spec.clone()).collect()
    }

    /// Is `fault` switched on at all?
    pub fn has(&self, fault: Fault) -> bool {
        self.armed.iter().any(|a| a.spec.fault == fault)
    }

    /// Decide whether `fault` fires for command text `cmd` (uppercase, after `AT`).
    /// `default_trigger` says whether this command is eligible when the fault names no
    /// command. A one-shot fault that fires is spent.
    pub fn fire(&mut self, fault: Fault, cmd: &str, default_trigger: bool) -> bool {
        let probability = self.probability;
        let mut fired = false;
        for a in self.armed.iter_mut() {
            if a.spec.fault != fault || !a.spec.accepts(cmd, default_trigger) {
                continue;
            }
            if let Some(n) = a.spec.nth() {
                a.seen = a.seen.saturating_add(1);
                if a.seen != n {
                    continue;
                }
            }
            match probability {
                Some(p) => {
                    if self.rng.chance(p) {
                        fired = true;
                    }
                }
                None => {
                    if fault.is_one_shot() {
                        if !a.spent {
                            a.spent = true;
                            fired = true;
                        }
                    } else {
                        fired = true;
                    }
                }
            }
            if fired {
                break;
            }
        }
        fired
    }

    /// The generator faults draw from (garbage bytes, jitter).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
            assert_eq!(f.to_string().parse::<FaultSpec>(), Ok(FaultSpec::all(f)));
        }
        let s: FaultSpec = "lost-final:%KEYGEN@3".parse().unwrap();
        assert_eq!(s.fault, Fault::LostFinal);
        assert_eq!(s.command.as_deref(), Some("%KEYGEN"));
        assert_eq!(s.modem, Some(3));
        assert_eq!(s.to_string(), "lost-final:%KEYGEN@3");
        assert!("nope".parse::<FaultSpec>().is_err());
        assert!("garbage@x".parse::<FaultSpec>().is_err());
        assert_eq!("Keygen_Fail".parse::<Fault>(), Ok(Fault::KeygenFail));
    }

    #[test]
    fn one_shot_and_standing() {
        let mut s = FaultSet::new(
            vec![Fault::LostFinal.into(), Fault::Garbage.into()],
            None,
            SimRng::from_seed(1),
        );
        assert!(!s.fire(Fault::LostFinal, "+CGSN", false));
        assert!(s.fire(Fault::LostFinal, "%KEYGEN=1,2,0", true));
        assert!(!s.fire(Fault::LostFinal, "%KEYGEN=1,2,0", true));
        assert!(s.fire(Fault::Garbage, "", true));
        assert!(s.fire(Fault::Garbage, "", true));
        s.set(vec![FaultSpec::all(Fault::LostFinal).when("at+cgsn")]);
        assert!(!s.fire(Fault::LostFinal, "%KEYGEN=1,2,0", true));
        assert!(s.fire(Fault::LostFinal, "+CGSN", false));
        assert!(!s.has(Fault::Garbage));
    }

    #[test]
    fn nth_matching_command() {
        let spec: FaultSpec = "lost-final:%CMNG=1#2@0".parse().unwrap();
        assert_eq!(spec.command.as_deref(), Some("%CMNG=1#2"));
        assert_eq!(spec.modem, Some(0));
        let mut s = FaultSet::new(vec![spec], None, SimRng::from_seed(1));
        assert!(!s.fire(Fault::LostFinal, "+CGSN", true));
        assert!(!s.fire(Fault::LostFinal, "%CMNG=1,16842753", true));
        assert!(s.fire(Fault::LostFinal, "%CMNG=1,16842753", true));
        assert!(!s.fire(Fault::LostFinal, "%CMNG=1,16842753", true));
        // A standing fault with #N fires on that occurrence only.
        let mut s = FaultSet::new(
            vec![FaultSpec::all(Fault::Garbage).when("+CFUN#3")],
            None,
            SimRng::from_seed(1),
        );
        let fired: Vec<bool> = (0..5)
            .map(|_| s.fire(Fault::Garbage, "+CFUN?", true))
            .collect();
        assert_eq!(fired, [false, false, true, false, false]);
    }

    #[test]
    fn probability() {
        let mut s = FaultSet::new(
            vec![Fault::KeygenFail.into()],
            Some(0.5),
            SimRng::from_seed(9),
        );
        let n = (0..1000)
            .filter(|_| s.fire(Fault::KeygenFail, "%KEYGEN", true))
            .count();
        assert!((300..700).contains(&n), "{n}");
    }
}
