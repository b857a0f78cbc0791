//! The AT client for one modem: one command in flight, per-command timeouts, typed commands.
//!
//! [`Modem`] drives a [`Transport`] with the pure [`at::Parser`]. Every command waits for its
//! final result code; a command that times out, loses its port or sees the device reboot is
//! reported with [`ModemError::outcome_unknown`] = true: the caller must treat the device
//! state as unknown, never as "not done".

use super::at::{self, CmeCode, CmngEntry, Dialect, Event, Final, Parser};
use super::transport::{OpenError, Transport};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// Per-command timeouts. Defaults follow Nordic's tools (reference §8): 15 s+ for KEYGEN and
/// CFUN, several seconds for writes, a couple for detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Ordinary commands (identification, list, delete).
    pub default: Duration,
    /// `AT+CFUN=<n>` (may need network detach).
    pub cfun: Duration,
    /// `AT%KEYGEN`.
    pub keygen: Duration,
    /// `AT%CMNG=0` writes.
    pub write: Duration,
    /// Each `AT` probe while synchronising with the device.
    pub sync: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            default: Duration::from_secs(5),
            cfun: Duration::from_secs(20),
            keygen: Duration::from_secs(30),
            write: Duration::from_secs(10),
            sync: Duration::from_secs(2),
        }
    }
}

impl Timeouts {
    /// Every timeout multiplied by `factor` (tests use a small factor to fail fast).
    pub fn scaled(self, factor: f64) -> Timeouts {
        let s = |d: Duration| Duration::from_secs_f64((d.as_secs_f64() * factor).max(0.001));
        Timeouts {
            default: s(self.default),
            cfun: s(self.cfun),
            keygen: s(self.keygen),
            write: s(self.write),
            sync: s(self.sync),
        }
    }
}

/// One command as it happened, for the bench journal: never secret, PEMs summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command, summarised ([`at::summarize_command`]).
    pub command: String,
    /// `OK`, `ERROR`, `+CME ERROR: n (...)`, `timeout after 5s`, `disconnected`, …
    pub outcome: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why a modem command failed. The message names the command and says what to do
/// ([`ModemError::next_step`]); an encoding error is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    /// The port could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The device never answered `AT` with `OK`.
    #[error("the device does not answer AT ({detail}); {}", self.next_step())]
    NotResponding {
        /// What was seen instead (summarised).
        detail: String,
    },
    /// No final result code within the timeout. The command may or may not have taken effect.
    #[error("{command}: no final result within {:.1}s{}; {}", waited.as_secs_f64(), partial_note(partial), self.next_step())]
    Timeout {
        /// The command in flight (summarised).
        command: String,
        /// How long we waited.
        waited: Duration,
        /// Information lines received before giving up (public data only, e.g. a KEYGEN line).
        partial: Vec<String>,
    },
    /// The port went away (cable pulled, power lost) while the command was in flight.
    #[error("{command}: the port went away ({detail}); {}", self.next_step())]
    Disconnected {
        /// The command in flight (summarised).
        command: String,
        /// The I/O error.
        detail: String,
    },
    /// The device printed a boot banner while the command was in flight: it restarted.
    #[error("{command}: the device restarted mid-command; {}", self.next_step())]
    Reset {
        /// The command in flight (summarised).
        command: String,
    },
    /// Plain `ERROR`.
    #[error("{command}: ERROR; {}", self.next_step())]
    Error {
        /// The command (summarised).
        command: String,
    },
    /// `+CME ERROR: <n>`.
    #[error("{command}: {code}; {}", self.next_step())]
    Cme {
        /// The command (summarised).
        command: String,
        /// The code.
        code: CmeCode,
    },
    /// `+CMS ERROR: <n>`.
    #[error("{command}: +CMS ERROR: {code}; {}", self.next_step())]
    Cms {
        /// The command (summarised).
        command: String,
        /// The code.
        code: u16,
    },
    /// `OK`, but without the information the command should have returned.
    #[error("{command}: {detail}; {}", self.next_step())]
    Unexpected {
        /// The command (summarised).
        command: String,
        /// What was missing or wrong.
        detail: String,
    },
    /// The command could not be encoded (a PEM with a quote, too long, …). Nothing was sent.
    #[error("{command}: not sent")]
    Encode {
        /// The command (summarised).
        command: String,
        /// Why.
        #[source]
        error: at::EncodeError,
    },
}

impl ModemError {
    /// True when the command may or may not have taken effect on the device (timeout,
    /// disconnect, reset): record the device state as unknown and re-check it next run.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ModemError::Timeout { .. } | ModemError::Disconnected { .. } | ModemError::Reset { .. }
        )
    }

    /// The CME code, if the device answered with one.
    pub fn cme(&self) -> Option<CmeCode> {
        match self {
            ModemError::Cme { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// One short phrase for the journal's outcome column.
    pub fn outcome_text(&self) -> String {
        match self {
            ModemError::Open(_) => "open failed".into(),
            ModemError::NotResponding { .. } => "not responding".into(),
            ModemError::Timeout { waited, .. } => {
                format!("timeout after {:.1}s", waited.as_secs_f64())
            }
            ModemError::Disconnected { .. } => "disconnected".into(),
            ModemError::Reset { .. } => "device restarted".into(),
            ModemError::Error { .. } => "ERROR".into(),
            ModemError::Cme { code, .. } => code.to_string(),
            ModemError::Cms { code, .. } => format!("+CMS ERROR: {code}"),
            ModemError::Unexpected { detail, .. } => format!("unexpected reply: {detail}"),
            ModemError::Encode { error, .. } => format!("not sent: {error}"),
        }
    }

    /// What the operator should do next.
    pub fn next_step(&self) -> String {
        match self {
            ModemError::Open(e) => e.to_string(),
            ModemError::NotResponding { .. } => "check that this is the modem's AT port (the first VCOM of a DK), that the device runs AT Client or Serial LTE Modem firmware and is powered; try --no-flow-control".into(),
            ModemError::Timeout { .. } => "check the cable and power, then re-run: the device state is re-checked first".into(),
            ModemError::Disconnected { .. } => "reconnect the device (cable, power), then re-run: the device state is re-checked first".into(),
            ModemError::Reset { .. } => "the device restarted (power or watchdog): check its supply, then re-run".into(),
            ModemError::Error { .. } => "the modem refused the command (plain ERROR): check the firmware supports it, power-cycle and re-run".into(),
            ModemError::Cme { code, .. } => code.next_step().into(),
            ModemError::Cms { .. } => "unexpected SMS error: power-cycle the device and re-run".into(),
            ModemError::Unexpected { .. } => "the port may not be an nRF91 AT interface: check the port and firmware, then re-run".into(),
            ModemError::Encode { error, .. } => error.to_string(),
        }
    }
}

/// ` (got N information line(s) first)` when a timed-out command had printed some.
fn partial_note(partial: &[String]) -> String {
    if partial.is_empty() {
        String::new()
    } else {
        format!(" (got {} information line(s) first)", partial.len())
    }
}

/// Total bytes of information lines kept for one response (a `%CMNG` listing of a full
/// store is a few KiB).
const MAX_RESPONSE: usize = 64 * 1024;

type Observer = Box<dyn FnMut(&CommandRecord) + Send>;

/// An AT client for one modem.
pub struct Modem<T: Transport> {
    io: T,
    parser: Parser,
    timeouts: Timeouts,
    observer: Option<Observer>,
    /// The previous command ended without a final result: resynchronise before the next.
    desync: bool,
    /// The device restarted (boot banner seen): `AT+CMEE=1` must be sent again.
    cmee_lost: bool,
    /// URCs and noise lines seen (for diagnostics).
    pub noise_lines: u64,
    /// How commands travel (found by [`Modem::sync`] under [`DialectChoice::Auto`]).
    dialect: Dialect,
    choice: DialectChoice,
}

/// The `--dialect` the operator chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialectChoice {
    /// Plain AT commands.
    At,
    /// The nRF Connect SDK shell (`at '<command>'`).
    Shell,
    /// Find out at `Modem::sync`: `AT` answered `OK` means AT; otherwise `at AT` answered
    /// `OK` means the shell (as Nordic's tools detect it).
    #[default]
    Auto,
}

impl DialectChoice {
    /// The dialects [`Modem::sync`] probes, in order.
    fn probes(self) -> &'static [Dialect] {
        match self {
            DialectChoice::At => &[Dialect::At; 4],
            DialectChoice::Shell => &[Dialect::Shell; 4],
            DialectChoice::Auto => &[
                Dialect::At,
                Dialect::Shell,
                Dialect::At,
                Dialect::Shell,
                Dialect::At,
                Dialect::Shell,
            ],
        }
    }
}

impl<T: Transport> fmt::Debug for Modem<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Modem")
            .field("timeouts", &self.timeouts)
            .field("desync", &self.desync)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Modem<T> {
    /// Wrap a transport. Call [`Modem::sync`] before anything else.
    pub fn new(io: T, timeouts: Timeouts) -> Modem<T> {
        Modem {
            io,
            parser: Parser::new(),
            timeouts,
            observer: None,
            desync: false,
            cmee_lost: false,
            noise_lines: 0,
            dialect: Dialect::At,
            choice: DialectChoice::At,
        }
    }

    /// Speak `choice` (before [`Modem::sync`]).
    pub fn set_dialect(&mut self, choice: DialectChoice) {
        self.choice = choice;
        self.dialect = match choice {
            DialectChoice::Shell => Dialect::Shell,
            _ => Dialect::At,
        };
    }

    /// SHA-256 (uppercase hex) of what the modem stores for credential `content` written
    /// with [`Modem::cmng_write`] in the dialect in use.
    pub fn stored_sha256(&self, content: &str) -> String {
        hex_upper(&sha256(self.dialect.stored(content).as_bytes()))
    }

    /// Call `f` after every command with what was sent and how it ended (for the journal).
    pub fn set_observer(&mut self, f: impl FnMut(&CommandRecord) + Send + 'static) {
        self.observer = Some(Box::new(f));
    }

    /// Get in step with the device: drop stale input, probe `AT` (a spurious `ERROR` right
    /// after a reset is tolerated, up to 3 tries), then `AT+CMEE=1` so errors carry numbers.
    pub fn sync(&mut self) -> Result<(), ModemError> {
        let _ = self.io.discard_input();
        self.parser.reset();
        let mut last: Option<ModemError> = None;
        let mut ok = false;
        for &dialect in self.choice.probes() {
            self.dialect = dialect;
            match self.probe(self.timeouts.sync) {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(e @ ModemError::Disconnected { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        if !ok {
            return Err(ModemError::NotResponding {
                detail: last
                    .map(|e| e.outcome_text())
                    .unwrap_or_else(|| "no reply".into()),
            });
        }
        self.desync = false;
        self.run("AT+CMEE=1", self.timeouts.default)?;
        self.cmee_lost = false;
        Ok(())
    }

    /// Send one command and wait for its final result. Returns the information lines.
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<String>, ModemError> {
        if self.desync {
            // A previous reply never finished: make sure its late bytes cannot be taken for
            // this command's reply.
            self.resync()?;
        }
        if self.cmee_lost {
            self.run("AT+CMEE=1", self.timeouts.default)?;
            self.cmee_lost = false;
        }
        self.run(cmd, timeout)
    }

    fn resync(&mut self) -> Result<(), ModemError> {
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.io.discard_input();
        self.parser.reset();
        self.desync = false;
        for _ in 0..3 {
            match self.probe(self.timeouts.sync) {
                Ok(_) => return Ok(()),
                Err(e @ ModemError::Disconnected { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        self.desync = true;
        Err(ModemError::NotResponding {
            detail: "no OK to AT after an unfinished reply".into(),
        })
    }

    fn run(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<String>, ModemError> {
        self.run_inner(cmd, timeout, true)
    }

    /// A probe while (re)synchronising: boot banners are expected, not errors.
    fn probe(&mut self, timeout: Duration) -> Result<Vec<String>, ModemError> {
        self.run_inner("AT", timeout, false)
    }

    fn run_inner(
        &mut self,
        cmd: &str,
        timeout: Duration,
        boot_is_error: bool,
    ) -> Result<Vec<String>, ModemError> {
        let start = Instant::now();
        let result = self.exchange(cmd, timeout, boot_is_error);
        let outcome = match &result {
            Ok(_) => "OK".to_string(),
            Err(e) => e.outcome_text(),
        };
        if let Err(e) = &result {
            if e.outcome_unknown() {
                self.desync = true;
            }
            if matches!(e, ModemError::Reset { .. }) {
                self.cmee_lost = true;
            }
        }
        if let Some(obs) = self.observer.as_mut() {
            obs(&CommandRecord {
                command: at::summarize_command(cmd),
                outcome,
                elapsed: start.elapsed(),
            });
        }
        result
    }

    fn exchange(
        &mut self,
        cmd: &str,
        timeout: Duration,
        boot_is_error: bool,
    ) -> Result<Vec<String>, ModemError> {
        let summary = || at::summarize_command(cmd);
        let wire = self.dialect.wire(cmd).map_err(|error| ModemError::Encode {
            command: summary(),
            error,
        })?;
        let mut line = Vec::with_capacity(wire.len() + 2);
        line.extend_from_slice(wire.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.parser.begin(&wire);
        if let Err(e) = self.io.write_all(&line) {
            return Err(if e.kind() == io::ErrorKind::TimedOut {
                ModemError::Timeout {
                    command: summary(),
                    waited: timeout,
                    partial: Vec::new(),
                }
            } else {
                ModemError::Disconnected {
                    command: summary(),
                    detail: e.to_string(),
                }
            });
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let mut info: Vec<String> = Vec::new();
        let mut kept = 0usize;
        let mut buf = [0u8; 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ModemError::Timeout {
                    command: summary(),
                    waited: timeout,
                    partial: info,
                });
            }
            let slice = (deadline - now).min(Duration::from_millis(250));
            if let Err(e) = self.io.set_timeout(slice) {
                return Err(ModemError::Disconnected {
                    command: summary(),
                    detail: e.to_string(),
                });
            }
            let n = match self.io.read(&mut buf) {
                Ok(0) => {
                    return Err(ModemError::Disconnected {
                        command: summary(),
                        detail: "end of file".into(),
                    })
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(ModemError::Disconnected {
                        command: summary(),
                        detail: e.to_string(),
                    })
                }
            };
            for ev in self.parser.feed(buf.get(..n).unwrap_or(&[])) {
                match ev {
                    Event::Info(s) => {
                        kept += s.len();
                        if kept <= MAX_RESPONSE {
                            info.push(s);
                        }
                    }
                    Event::Final(Final::Ok) => return Ok(info),
                    Event::Final(Final::Error) => {
                        return Err(ModemError::Error { command: summary() })
                    }
                    Event::Final(Final::Cme(code)) => {
                        return Err(ModemError::Cme {
                            command: summary(),
                            code,
                        })
                    }
                    Event::Final(Final::Cms(code)) => {
                        return Err(ModemError::Cms {
                            command: summary(),
                            code,
                        })
                    }
                    Event::Boot(_) => {
                        // CMEE is back to 0 after a restart.
                        self.cmee_lost = true;
                        if boot_is_error {
                            return Err(ModemError::Reset { command: summary() });
                        }
                        self.noise_lines += 1;
                    }
                    Event::Urc(_) | Event::Noise(_) | Event::Overflow => {
                        self.noise_lines += 1;
                    }
                }
            }
        }
    }

    /// `AT+CFUN?` → the functional mode (0, 1, 4, …).
    pub fn cfun(&mut self) -> Result<u8, ModemError> {
        let cmd = "AT+CFUN?";
        let lines = self.command(cmd, self.timeouts.default)?;
        lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("+CFUN:")
                    .and_then(|v| v.trim().parse::<u8>().ok())
            })
            .ok_or_else(|| ModemError::Unexpected {
                command: cmd.into(),
                detail: "no +CFUN: <n> line".into(),
            })
    }

    /// `AT+CFUN=<n>` (4 = offline, needed before KEYGEN and credential writes).
    pub fn set_cfun(&mut self, mode: u8) -> Result<(), ModemError> {
        self.command(&format!("AT+CFUN={mode}"), self.timeouts.cfun)
            .map(|_| ())
    }

    /// The IMEI: `AT+CGSN` (bare digits or `+CGSN: "…"`), falling back to `AT+CGSN=1`.
    pub fn imei(&mut self) -> Result<String, ModemError> {
        for cmd in ["AT+CGSN", "AT+CGSN=1"] {
            let lines = match self.command(cmd, self.timeouts.default) {
                Ok(l) => l,
                Err(e @ (ModemError::Error { .. } | ModemError::Cme { .. }))
                    if cmd == "AT+CGSN" =>
                {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(imei) = lines.iter().rev().find_map(|l| imei_from_line(l)) {
                return Ok(imei);
            }
        }
        Err(ModemError::Unexpected {
            command: "AT+CGSN".into(),
            detail: "no 15-digit IMEI in the reply".into(),
        })
    }

    /// `AT+CGMR` → the modem firmware string (`mfw_nrf9160_1.3.7`).
    pub fn firmware(&mut self) -> Result<String, ModemError> {
        let cmd = "AT+CGMR";
        let lines = self.command(cmd, self.timeouts.default)?;
        let pick = lines
            .iter()
            .find(|l| at::parse_fw_version(l).is_some() || l.to_ascii_lowercase().contains("mfw"))
            .or_else(|| lines.first());
        pick.map(|s| bare_value(s, "+CGMR:"))
            .ok_or_else(|| ModemError::Unexpected {
                command: cmd.into(),
                detail: "no firmware version line".into(),
            })
    }

    /// `AT+CGMM` → the model (`nRF9160-SICA`).
    pub fn model(&mut self) -> Result<String, ModemError> {
        let cmd = "AT+CGMM";
        let lines = self.command(cmd, self.timeouts.default)?;
        lines
            .iter()
            .rev()
            .find(|l| l.to_ascii_lowercase().contains("nrf"))
            .or_else(|| lines.last())
            .map(|s| bare_value(s, "+CGMM:"))
            .ok_or_else(|| ModemError::Unexpected {
                command: cmd.into(),
                detail: "no model line".into(),
            })
    }

    /// The device UUID (nRF Cloud device id), where the modem answers it: `AT%DEVICEUUID`
    /// (nRF91x1), else the UUID inside `AT%ATTESTTOKEN`. `Ok(None)` when neither is
    /// supported. (`%XMODEMUUID` is the firmware build UUID, not the device's.)
    pub fn device_uuid(&mut self) -> Result<Option<String>, ModemError> {
        match self.command("AT%DEVICEUUID", self.timeouts.default) {
            Ok(lines) => {
                if let Some(u) = lines.iter().find_map(|l| {
                    l.strip_prefix("%DEVICEUUID:")
                        .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
                }) {
                    if is_uuid(&u) {
                        return Ok(Some(u));
                    }
                }
            }
            Err(ModemError::Error { .. } | ModemError::Cme { .. }) => {}
            Err(e) => return Err(e),
        }
        match self.command("AT%ATTESTTOKEN", self.timeouts.default) {
            Ok(lines) => Ok(lines.iter().find_map(|l| {
                at::parse_quoted_reply(l, "%ATTESTTOKEN:").and_then(uuid_from_attest_token)
            })),
            Err(ModemError::Error { .. } | ModemError::Cme { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `AT%ATTESTTOKEN` → the token text between the quotes (`<message>.<COSE>`).
    pub fn attestation_token(&mut self) -> Result<String, ModemError> {
        let cmd = "AT%ATTESTTOKEN";
        let lines = self.command(cmd, self.timeouts.default)?;
        lines
            .iter()
            .find_map(|l| at::parse_quoted_reply(l, "%ATTESTTOKEN:"))
            .map(str::to_string)
            .ok_or_else(|| ModemError::Unexpected {
                command: cmd.into(),
                detail: "OK without a %ATTESTTOKEN: \"…\" line".into(),
            })
    }

    /// `AT%CMNG=1,<tag>` → the credentials stored under `tag`.
    pub fn cmng_list(&mut self, sec_tag: u32) -> Result<Vec<CmngEntry>, ModemError> {
        let lines = self.command(&format!("AT%CMNG=1,{sec_tag}"), self.timeouts.default)?;
        Ok(lines
            .iter()
            .filter_map(|l| at::parse_cmng_line(l))
            .filter(|e| e.sec_tag == u64::from(sec_tag))
            .collect())
    }

    /// `AT%CMNG=0,<tag>,<type>,"<content>"`; returns the uppercase SHA-256 of exactly the
    /// bytes the modem stores (those sent; over the shell, with CR LF line ends), which the
    /// listing must show afterwards.
    pub fn cmng_write(
        &mut self,
        sec_tag: u32,
        kind: u8,
        content: &str,
    ) -> Result<String, ModemError> {
        let cmd =
            at::cmng_write_command(sec_tag, kind, content).map_err(|error| ModemError::Encode {
                command: format!("AT%CMNG=0,{sec_tag},{kind},\"<{} bytes>\"", content.len()),
                error,
            })?;
        self.command(&cmd, self.timeouts.write)?;
        Ok(self.stored_sha256(content))
    }

    /// `AT%CMNG=3,<tag>,<type>`; `Ok(false)` when there was nothing to delete (513).
    pub fn cmng_delete(&mut self, sec_tag: u32, kind: u8) -> Result<bool, ModemError> {
        match self.command(
            &format!("AT%CMNG=3,{sec_tag},{kind}"),
            self.timeouts.default,
        ) {
            Ok(_) => Ok(true),
            Err(ModemError::Cme { code, .. }) if code == CmeCode::NOT_FOUND => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `AT%KEYGEN=<tag>,2,0` (with subject attributes: `AT%KEYGEN=<tag>,2,0,"<attributes>"`)
    /// → the text between the quotes of `%KEYGEN: "…"`.
    pub fn keygen(&mut self, sec_tag: u32, attributes: Option<&str>) -> Result<String, ModemError> {
        let cmd = match attributes {
            None => format!("AT%KEYGEN={sec_tag},2,0"),
            Some(a) => {
                if a.contains('"') {
                    return Err(ModemError::Encode {
                        command: format!("AT%KEYGEN={sec_tag},2,0,…"),
                        error: at::EncodeError::Quote,
                    });
                }
                format!("AT%KEYGEN={sec_tag},2,0,\"{a}\"")
            }
        };
        let lines = self.command(&cmd, self.timeouts.keygen)?;
        keygen_from_lines(&lines).ok_or_else(|| ModemError::Unexpected {
            command: cmd,
            detail: "OK without a %KEYGEN: \"…\" line".into(),
        })
    }
}

/// The KEYGEN string in a set of information lines (also used on the partial lines of a
/// timed-out KEYGEN).
pub fn keygen_from_lines(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| at::parse_quoted_reply(l, "%KEYGEN:"))
        .map(str::to_string)
}

fn bare_value(line: &str, prefix: &str) -> String {
    let v = line.strip_prefix(prefix).unwrap_or(line).trim();
    v.trim_matches('"').to_string()
}

fn imei_from_line(line: &str) -> Option<String> {
    let v = bare_value(line, "+CGSN:");
    if v.len() == 15 && v.bytes().all(|b| b.is_ascii_digit()) {
        Some(v)
    } else {
        None
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The device UUID in an `%ATTESTTOKEN` string (decoded with [`crate::keygen`]'s bounded
/// parser).
pub fn uuid_from_attest_token(token: &str) -> Option<String> {
    if token.len() > 4096 {
        return None;
    }
    crate::keygen::parse_attesttoken(token)
        .ok()
        .map(|t| t.uuid())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    crate::crypto::sha256(data)
}

fn hex_upper(b: &[u8]) -> String {
    hex::encode_upper(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// What a scripted device does with one command.
    #[derive(Clone)]
    pub enum Reply {
        /// Send these bytes (in `chunk`-sized pieces).
        Bytes(&'static str),
        /// Owned bytes.
        Owned(String),
        /// Say nothing.
        Silent,
        /// Close the port.
        Hangup,
    }

    /// An in-memory device: each written line (terminated by CR LF outside quotes) pops the
    /// next (expected prefix, reply) pair.
    pub struct Scripted {
        pub script: VecDeque<(String, Reply)>,
        pub sent: Arc<Mutex<Vec<String>>>,
        inbox: Vec<u8>,
        outbox: VecDeque<u8>,
        chunk: usize,
        closed: bool,
        timeout: Duration,
    }

    impl Scripted {
        pub fn new(script: Vec<(&str, Reply)>, chunk: usize) -> Scripted {
            Scripted {
                script: script
                    .into_iter()
                    .map(|(c, r)| (c.to_string(), r))
                    .collect(),
                sent: Arc::new(Mutex::new(Vec::new())),
                inbox: Vec::new(),
                outbox: VecDeque::new(),
                chunk: chunk.max(1),
                closed: false,
                timeout: Duration::from_millis(10),
            }
        }
    }

    impl Transport for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.outbox.is_empty() {
                if self.closed {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "hung up"));
                }
                std::thread::sleep(self.timeout.min(Duration::from_millis(2)));
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let n = self.chunk.min(buf.len()).min(self.outbox.len());
            for slot in buf.iter_mut().take(n) {
                *slot = self.outbox.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
        fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
            if self.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "hung up"));
            }
            self.inbox.extend_from_slice(data);
            while let Some(pos) = self.inbox.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.inbox.drain(..pos + 2).collect();
                let cmd = String::from_utf8_lossy(&line[..pos]).to_string();
                self.sent.lock().unwrap().push(cmd.clone());
                let (want, reply) = self
                    .script
                    .pop_front()
                    .unwrap_or_else(|| ("".into(), Reply::Bytes("ERROR\r\n")));
                assert!(
                    cmd.starts_with(&want),
                    "sent {cmd:?}, script expected {want:?}"
                );
                match reply {
                    Reply::Bytes(b) => self.outbox.extend(b.as_bytes()),
                    Reply::Owned(b) => self.outbox.extend(b.as_bytes()),
                    Reply::Silent => {}
                    Reply::Hangup => self.closed = true,
                }
            }
            Ok(())
        }
        fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
            self.timeout = t;
            Ok(())
        }
    }

    fn fast() -> Timeouts {
        Timeouts {
            default: Duration::from_millis(200),
            cfun: Duration::from_millis(200),
            keygen: Duration::from_millis(200),
            write: Duration::from_millis(200),
            sync: Duration::from_millis(100),
        }
    }

    fn modem(script: Vec<(&str, Reply)>, chunk: usize) -> Modem<Scripted> {
        Modem::new(Scripted::new(script, chunk), fast())
    }

    fn attest_reply() -> String {
        use base64::Engine;
        let mut msg = vec![0xD9, 0xD9, 0xF7, 0x85, 0x01, 0x50];
        msg.extend(hex::decode("50363154393144f08022121b6401627d").unwrap());
        msg.extend([0x03, 0x50]);
        msg.extend([0x1a; 16]);
        msg.push(0x50);
        msg.extend([0xd3; 16]);
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (key, _) = crate::crypto::P256Key::generate().unwrap();
        let cose = crate::keygen::cose::sign1(&key, &msg, true).unwrap();
        format!(
            "%ATTESTTOKEN: \"{}.{}\"\r\nOK\r\n",
            b.encode(&msg),
            b.encode(cose)
        )
    }

    #[test]
    fn identify_in_every_chunking() {
        for chunk in [1, 2, 3, 7, 64, 1024] {
            let mut m = modem(
                vec![
                    ("AT", Reply::Bytes("ERROR\r\n")), // first command after reset fails
                    ("AT", Reply::Bytes("OK\r\n")),
                    ("AT+CMEE=1", Reply::Bytes("\r\nOK\r\n")),
                    ("AT+CFUN?", Reply::Bytes("+CFUN: 1\r\nOK\r\n")),
                    (
                        "AT+CFUN=4",
                        Reply::Bytes(
                            "+CEREG: 0\r\n[00:00:01.000,000] <inf> x\r\n+CSCON: 0\r\nOK\r\n",
                        ),
                    ),
                    (
                        "AT+CGSN",
                        Reply::Bytes("AT+CGSN\r\n352656109480783\r\nOK\r\n"),
                    ),
                    ("AT+CGMR", Reply::Bytes("mfw_nrf9160_1.3.7\r\nOK\r\n")),
                    ("AT+CGMM", Reply::Bytes("\r\nnRF9160-SICA\r\n\r\nOK\r\n")),
                    ("AT%DEVICEUUID", Reply::Bytes("ERROR\r\n")),
                    ("AT%ATTESTTOKEN", Reply::Owned(attest_reply())),
                ],
                chunk,
            );
            m.sync().unwrap();
            assert_eq!(m.cfun().unwrap(), 1);
            m.set_cfun(4).unwrap();
            assert_eq!(m.imei().unwrap(), "352656109480783");
            assert_eq!(m.firmware().unwrap(), "mfw_nrf9160_1.3.7");
            assert_eq!(m.model().unwrap(), "nRF9160-SICA");
            assert_eq!(
                m.device_uuid().unwrap().as_deref(),
                Some("50363154-3931-44f0-8022-121b6401627d")
            );
        }
    }

    #[test]
    fn cgsn_quoted_form_and_deviceuuid() {
        let mut m = modem(
            vec![
                (
                    "AT+CGSN",
                    Reply::Bytes("+CGSN: \"352656100367872\"\r\nOK\r\n"),
                ),
                (
                    "AT%DEVICEUUID",
                    Reply::Bytes("%DEVICEUUID: 50363154-3931-44F0-8022-121B6401627D\r\nOK\r\n"),
                ),
            ],
            5,
        );
        assert_eq!(m.imei().unwrap(), "352656100367872");
        assert_eq!(
            m.device_uuid().unwrap().as_deref(),
            Some("50363154-3931-44f0-8022-121b6401627d")
        );
    }

    #[test]
    fn cmng_list_write_delete_keygen() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let sha = hex_upper(&sha256(pem.as_bytes()));
        let listing = format!(
            "%CMNG: 16842753,0,\"{sha}\"\r\n%CMNG: 16842753,2,\"{}\"\r\n%CMNG: 4294967292,11,\"{}\"\r\nOK\r\n",
            "A".repeat(64),
            "B".repeat(64)
        );
        let mut m = modem(
            vec![
                ("AT%CMNG=0,16842753,0,\"-----BEGIN", Reply::Bytes("OK\r\n")),
                ("AT%CMNG=1,16842753", Reply::Owned(listing)),
                ("AT%CMNG=3,16842753,1", Reply::Bytes("+CME ERROR: 513\r\n")),
                ("AT%CMNG=3,16842753,2", Reply::Bytes("OK\r\n")),
                (
                    "AT%KEYGEN=16842753,2,0",
                    Reply::Bytes("%KEYGEN: \"abc.def\"\r\nOK\r\n"),
                ),
                (
                    "AT%KEYGEN=16842753,2,0",
                    Reply::Bytes("+CME ERROR: 518\r\n"),
                ),
            ],
            3,
        );
        let sent = m.io.sent.clone();
        assert_eq!(m.cmng_write(16842753, 0, pem).unwrap(), sha);
        // The PEM went out with its real line breaks, inside the quotes, then CR LF.
        assert!(sent.lock().unwrap()[0].ends_with("-----END CERTIFICATE-----\n\""));
        let l = m.cmng_list(16842753).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].sha256, sha);
        assert!(!m.cmng_delete(16842753, 1).unwrap());
        assert!(m.cmng_delete(16842753, 2).unwrap());
        assert_eq!(m.keygen(16842753, None).unwrap(), "abc.def");
        let e = m.keygen(16842753, None).unwrap_err();
        assert_eq!(e.cme(), Some(CmeCode::LTE_ACTIVE));
        assert!(e.to_string().contains("AT%KEYGEN=16842753,2,0"));
        assert!(e.to_string().contains("CFUN=4"));
        assert!(!e.outcome_unknown());
    }

    #[test]
    fn refuses_bad_pem_without_sending() {
        let mut m = modem(vec![], 1);
        let e = m.cmng_write(1, 1, "a\"b").unwrap_err();
        assert!(matches!(e, ModemError::Encode { .. }));
        assert!(m.io.sent.lock().unwrap().is_empty());
    }

    #[test]
    fn timeout_is_unknown_and_keeps_partial_then_resyncs() {
        let mut m = modem(
            vec![
                ("AT%KEYGEN=7,2,0", Reply::Bytes("%KEYGEN: \"abc.def\"\r\n")), // final lost
                ("AT", Reply::Bytes("OK\r\n")),                                // resync
                ("AT+CFUN?", Reply::Bytes("+CFUN: 4\r\nOK\r\n")),
            ],
            4,
        );
        let e = m.keygen(7, None).unwrap_err();
        assert!(e.outcome_unknown(), "{e}");
        match &e {
            ModemError::Timeout { partial, .. } => {
                assert_eq!(keygen_from_lines(partial).as_deref(), Some("abc.def"))
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("check the cable"));
        assert_eq!(m.cfun().unwrap(), 4);
    }

    #[test]
    fn disconnect_and_reset_are_unknown() {
        let mut m = modem(vec![("AT+CFUN=4", Reply::Hangup)], 4);
        let e = m.set_cfun(4).unwrap_err();
        assert!(matches!(e, ModemError::Disconnected { .. }), "{e:?}");
        assert!(e.outcome_unknown());

        let mut m = modem(
            vec![
                (
                    "AT%CMNG=3,1,2",
                    Reply::Bytes("*** Booting nRF Connect SDK v2.6.0 ***\r\nReady\r\n"),
                ),
                ("AT", Reply::Bytes("OK\r\n")),
                ("AT+CMEE=1", Reply::Bytes("OK\r\n")),
                ("AT+CFUN?", Reply::Bytes("+CFUN: 0\r\nOK\r\n")),
            ],
            4,
        );
        let e = m.cmng_delete(1, 2).unwrap_err();
        assert!(matches!(e, ModemError::Reset { .. }), "{e:?}");
        assert!(e.outcome_unknown());
        // After a reset CMEE is sent again before the next command.
        assert_eq!(m.cfun().unwrap(), 0);
    }

    #[test]
    fn sync_gives_up_with_advice() {
        let mut m = modem(
            vec![
                ("AT", Reply::Silent),
                ("AT", Reply::Silent),
                ("AT", Reply::Silent),
                ("AT", Reply::Silent),
            ],
            4,
        );
        let e = m.sync().unwrap_err();
        assert!(matches!(e, ModemError::NotResponding { .. }));
        assert!(e.to_string().contains("AT port"));
    }

    #[test]
    fn observer_sees_every_command_without_pem() {
        let mut m = modem(
            vec![("AT%CMNG=0,1,1,", Reply::Bytes("+CME ERROR: 527\r\n"))],
            4,
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        m.set_observer(move |r| l2.lock().unwrap().push(r.clone()));
        let pem = "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n";
        let e = m.cmng_write(1, 1, pem).unwrap_err();
        assert_eq!(e.cme(), Some(CmeCode::INVALID_CONTENT));
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert!(!log[0].command.contains("BEGIN"));
        assert!(log[0].outcome.contains("527"));
    }

    #[test]
    fn attest_token_uuid_is_bounded() {
        assert_eq!(uuid_from_attest_token(""), None);
        assert_eq!(uuid_from_attest_token("!!!.x"), None);
        assert_eq!(uuid_from_attest_token(&"A".repeat(5000)), None);
    }

    proptest::proptest! {
        #[test]
        fn hostile_replies_never_panic(
            reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            chunk in 1usize..50,
        ) {
            let mut text = String::from_utf8_lossy(&reply).into_owned();
            text.push_str("\r\nOK\r\n");
            for call in 0..7 {
                let mut m = Modem::new(
                    Scripted::new(vec![("", Reply::Owned(text.clone())), ("", Reply::Owned(text.clone())), ("", Reply::Owned(text.clone()))], chunk),
                    Timeouts { default: Duration::from_millis(30), cfun: Duration::from_millis(30), keygen: Duration::from_millis(30), write: Duration::from_millis(30), sync: Duration::from_millis(30) },
                );
                let _ = match call {
                    0 => m.cfun().map(|_| ()),
                    1 => m.imei().map(|_| ()),
                    2 => m.firmware().map(|_| ()),
                    3 => m.model().map(|_| ()),
                    4 => m.device_uuid().map(|_| ()),
                    5 => m.cmng_list(16842753).map(|_| ()),
                    _ => m.keygen(16842753, None).map(|_| ()),
                };
            }
        }
    }
}
