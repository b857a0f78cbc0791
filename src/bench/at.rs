//! Pure AT framing: a byte-in / event-out response parser and the command encoders.
//!
//! No I/O happens here. [`Parser::feed`] takes whatever bytes the serial port produced (in
//! any chunking) and returns the complete lines it could classify: information lines, final
//! result codes, URCs, log/boot noise and the echo of the command in flight. Quoted strings
//! may span physical lines (a `%CMNG: …,"-----BEGIN …` read); lines are bounded so a device
//! that never ends a line cannot make the host grow without limit.

use std::fmt;

/// Longest physical line (or quoted multi-line value) the parser keeps, in bytes. The AT host
/// buffer on the device is 4096 bytes, so anything longer is noise or a broken device.
pub const MAX_LINE: usize = 16 * 1024;

/// Longest AT command the modem accepts, from `AT` to the last byte before the terminator.
pub const MAX_COMMAND: usize = 4095;

/// A `+CME ERROR` number, with the names Nordic documents for the provisioning commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CmeCode(pub u16);

impl CmeCode {
    /// Not found (read/delete of an absent credential).
    pub const NOT_FOUND: CmeCode = CmeCode(513);
    /// No access / not allowed (reserved tag or type).
    pub const NOT_ALLOWED: CmeCode = CmeCode(514);
    /// Credential storage full.
    pub const MEMORY_FULL: CmeCode = CmeCode(515);
    /// Not allowed while LTE is active (CFUN=1).
    pub const LTE_ACTIVE: CmeCode = CmeCode(518);
    /// Already exists.
    pub const ALREADY_EXISTS: CmeCode = CmeCode(519);
    /// Key generation failed.
    pub const KEYGEN_FAILED: CmeCode = CmeCode(523);
    /// Invalid certificate content (mfw 2.x).
    pub const INVALID_CONTENT: CmeCode = CmeCode(527);
    /// Not allowed while a power-off warning is active.
    pub const POWER_OFF_WARNING: CmeCode = CmeCode(528);

    /// Short name of the code (Nordic's wording), or `None` for codes we do not name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "phone failure / not supported by this firmware",
            23 => "memory failure",
            50 => "incorrect parameters",
            60 => "system error",
            513 => "not found",
            514 => "not allowed",
            515 => "memory full",
            518 => "not allowed while LTE is active",
            519 => "already exists",
            520 => "authentication failed",
            523 => "key generation failed",
            527 => "invalid certificate content",
            528 => "not allowed while a power-off warning is active",
            529 => "failed to create response",
            _ => return None,
        })
    }

    /// What the operator should do about this code.
    pub fn next_step(self) -> &'static str {
        match self.0 {
            0 => "the modem firmware does not support this command: update the modem firmware",
            513 => "the credential is not in the slot: nothing to delete/read there",
            514 => "the sec_tag or credential type is reserved: use a sec_tag in 0..2147483647",
            515 => "the credential storage is full: delete unused credentials (AT%CMNG=1 lists them) and re-run",
            518 => "the device was online: it must be in CFUN=4; re-run (the bench sets CFUN=4 itself), and if it persists check that the application does not reconnect",
            519 => "the slot already holds this credential: re-run (the bench checks the slot), or use --force to replace a key",
            523 => "the modem could not generate a key: power-cycle the device and re-run",
            527 => "the modem refused the certificate content: check the PEM (LF line ends, no quotes) and re-run",
            528 => "the modem reports a low-power warning: power the device properly and re-run",
            _ => "see the nRF91 AT Commands Reference Guide for this code; power-cycle and re-run",
        }
    }
}

impl fmt::Display for CmeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "+CME ERROR: {} ({n})", self.0),
            None => write!(f, "+CME ERROR: {}", self.0),
        }
    }
}

/// The line that ends a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// `OK`.
    Ok,
    /// `ERROR` (also a `+CME ERROR:` whose number cannot be read).
    Error,
    /// `+CME ERROR: <n>`.
    Cme(CmeCode),
    /// `+CMS ERROR: <n>` (SMS; not used in provisioning but possible).
    Cms(u16),
}

impl fmt::Display for Final {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Final::Ok => f.write_str("OK"),
            Final::Error => f.write_str("ERROR"),
            Final::Cme(c) => write!(f, "{c}"),
            Final::Cms(n) => write!(f, "+CMS ERROR: {n}"),
        }
    }
}

/// One classified line from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An information line of the response in flight (a quoted value may contain `\n`).
    Info(String),
    /// The final result code of the response in flight.
    Final(Final),
    /// An unsolicited result code (`+CEREG: …`, `%XMODEMSLEEP: …`, …).
    Urc(String),
    /// A boot banner or `Ready`: the device (re)started; a command in flight is lost.
    Boot(String),
    /// A log line, a shell prompt, the echo of the command, or unreadable bytes.
    Noise(String),
    /// A line longer than [`MAX_LINE`] was dropped.
    Overflow,
}

/// URC prefixes the nRF91 family emits (only when subscribed, but applications subscribe).
const URC_PREFIXES: &[&str] = &[
    "+CEREG:",
    "+CSCON:",
    "+CGEV:",
    "+CNEC",
    "+CIREGU:",
    "+CESQ:",
    "+CRING",
    "+CMT",
    "+CDS",
    "%XMODEMSLEEP:",
    "%MDMEV:",
    "%XSIM:",
    "%XTIME:",
    "%CESQ:",
    "%NCELLMEAS:",
    "%XVBATLOWLVL:",
    "%XPOFWARN:",
    "%XT3412:",
    "%XDATAPRFL:",
    "%REL14FEAT:",
    "%XRAIURC",
    "%CONEVAL:",
    "#XMODEM:",
    "#XNRFCLOUD:",
    "#XPPP:",
];

/// Boot banners: the device restarted.
const BOOT_MARKERS: &[&str] = &[
    "*** Booting",
    "*** Using Zephyr",
    "***** Booting",
    "The AT host sample started",
];

/// Pure, incremental response parser for one port.
#[derive(Debug, Clone)]
pub struct Parser {
    line: Vec<u8>,
    in_quotes: bool,
    /// The current physical line may open a multi-line quoted value.
    quote_aware: bool,
    dropping: bool,
    prev_cr: bool,
    echo: Option<String>,
    expect_prefix: Option<String>,
    seen_line: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser with no command in flight.
    pub fn new() -> Parser {
        Parser {
            line: Vec::new(),
            in_quotes: false,
            quote_aware: false,
            dropping: false,
            prev_cr: false,
            echo: None,
            expect_prefix: None,
            seen_line: false,
        }
    }

    /// Announce the command just sent: a first line equal to it is dropped as echo, and a
    /// URC-looking line with the command's own prefix (`AT+CEREG?` → `+CEREG: …`) is
    /// information, not a URC.
    pub fn begin(&mut self, command: &str) {
        let cmd = command.trim();
        self.echo = Some(cmd.to_string());
        self.seen_line = false;
        self.expect_prefix = response_prefix(cmd);
    }

    /// Forget partial input (after a timeout, before resynchronising).
    pub fn reset(&mut self) {
        self.line.clear();
        self.in_quotes = false;
        self.quote_aware = false;
        self.dropping = false;
        self.prev_cr = false;
        self.echo = None;
        self.expect_prefix = None;
        self.seen_line = false;
    }

    /// True while a line (or quoted value) is partly received.
    pub fn pending(&self) -> bool {
        !self.line.is_empty() || self.in_quotes
    }

    /// Feed bytes; get every line they complete, classified.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            self.push(b, &mut out);
        }
        out
    }

    fn push(&mut self, b: u8, out: &mut Vec<Event>) {
        let is_eol = b == b'\r' || b == b'\n';
        if !is_eol {
            self.prev_cr = false;
        }
        if self.dropping {
            // After an overflow, skip to the next line end outside quotes.
            if is_eol {
                self.dropping = false;
                self.in_quotes = false;
                self.line.clear();
            }
            return;
        }
        if is_eol && self.in_quotes {
            // A line break inside a quoted value is content, unless what came since the
            // previous break is a final result code: a PEM line is never exactly `OK` or
            // `ERROR`, so the quote was stray (garbage, a log line) and the response ended.
            let start = self
                .line
                .iter()
                .rposition(|&c| c == b'\n')
                .map(|p| p + 1)
                .unwrap_or(0);
            let tail = clean(&self.line[start..]);
            if start > 0 && parse_final(tail.trim()).is_some() {
                let head = self.line[..start.saturating_sub(1)].to_vec();
                self.line.clear();
                self.in_quotes = false;
                self.quote_aware = false;
                self.emit(&head, out);
                self.emit(tail.trim().as_bytes(), out);
                return;
            }
            // Keep LF as the in-value line separator; the LF of a CRLF pair is dropped.
            if !(b == b'\n' && self.prev_cr) {
                self.line.push(b'\n');
            }
            self.prev_cr = b == b'\r';
            self.check_len(out);
            return;
        }
        if is_eol {
            let line = std::mem::take(&mut self.line);
            self.quote_aware = false;
            self.emit(&line, out);
            return;
        }
        if b == b'"' {
            if self.line.is_empty() || (!self.in_quotes && !self.quote_aware) {
                // Only a line that starts like an information response (`%CMNG: …`) may
                // carry a multi-line quoted value; decide once, at the first quote.
                self.quote_aware = looks_like_response(&self.line);
            }
            if self.quote_aware {
                self.in_quotes = !self.in_quotes;
            }
        }
        self.line.push(b);
        self.check_len(out);
    }

    fn check_len(&mut self, out: &mut Vec<Event>) {
        if self.line.len() > MAX_LINE {
            self.line.clear();
            self.in_quotes = false;
            self.quote_aware = false;
            self.dropping = true;
            out.push(Event::Overflow);
        }
    }

    fn emit(&mut self, raw: &[u8], out: &mut Vec<Event>) {
        let text = clean(raw);
        let line = text.trim();
        if line.is_empty() {
            return;
        }
        let first = !self.seen_line;
        self.seen_line = true;
        let not_found = line.ends_with(": command not found");
        if let Some(f) = parse_final(line).or(not_found.then_some(Final::Error)) {
            self.echo = None;
            self.expect_prefix = None;
            out.push(Event::Final(f));
            return;
        }
        if first {
            if let Some(echo) = &self.echo {
                if line.eq_ignore_ascii_case(echo)
                    || strip_prompt(line).eq_ignore_ascii_case(echo)
                    || strip_prompt(line).eq_ignore_ascii_case(shell_argument(echo))
                {
                    out.push(Event::Noise(line.to_string()));
                    return;
                }
            }
        }
        if line == "Ready" || BOOT_MARKERS.iter().any(|m| line.starts_with(m)) {
            out.push(Event::Boot(line.to_string()));
            return;
        }
        if is_log_line(line) {
            out.push(Event::Noise(line.to_string()));
            return;
        }
        let own = self
            .expect_prefix
            .as_deref()
            .map(|p| line.starts_with(p))
            .unwrap_or(false);
        if !own && URC_PREFIXES.iter().any(|p| line.starts_with(p)) {
            out.push(Event::Urc(line.to_string()));
            return;
        }
        if raw.iter().any(|&c| c >= 0x80) && !own {
            // Bytes that are not ASCII never belong to an nRF91 response: line noise.
            out.push(Event::Noise(line.to_string()));
            return;
        }
        out.push(Event::Info(line.to_string()));
    }
}

/// The response prefix a command's information lines carry (`AT%CMNG=1` → `%CMNG:`).
fn response_prefix(cmd: &str) -> Option<String> {
    let body = cmd.get(2..)?;
    if !cmd.get(..2)?.eq_ignore_ascii_case("AT") {
        return None;
    }
    let end = body.find(['=', '?', ';']).unwrap_or(body.len());
    let name = body.get(..end)?;
    if name.len() < 2 {
        return None;
    }
    Some(format!("{}:", name.to_ascii_uppercase()))
}

/// `%CMNG:`-style start: a sigil, a name, a colon.
fn looks_like_response(line: &[u8]) -> bool {
    let s = match std::str::from_utf8(line) {
        Ok(s) => s.trim_start(),
        Err(_) => return false,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some('%') | Some('+') | Some('#') => {}
        _ => return false,
    }
    let rest = chars.as_str();
    match rest.find(':') {
        Some(i) => {
            i > 0
                && rest
                    .get(..i)
                    .map(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(false)
        }
        None => false,
    }
}

/// Parse a final result line.
pub fn parse_final(line: &str) -> Option<Final> {
    if line == "OK" {
        return Some(Final::Ok);
    }
    if line == "ERROR" {
        return Some(Final::Error);
    }
    if let Some(rest) = line.strip_prefix("+CME ERROR:") {
        return Some(match rest.trim().parse::<u16>() {
            Ok(n) => Final::Cme(CmeCode(n)),
            Err(_) => Final::Error,
        });
    }
    if let Some(rest) = line.strip_prefix("+CMS ERROR:") {
        return Some(match rest.trim().parse::<u16>() {
            Ok(n) => Final::Cms(n),
            Err(_) => Final::Error,
        });
    }
    None
}

/// Zephyr log lines (`[00:00:28.460,540] <inf> …`), `<inf>`-style lines, TF-M lines, prompts.
fn is_log_line(line: &str) -> bool {
    if line.starts_with('[') {
        return true;
    }
    for tag in ["<inf>", "<wrn>", "<err>", "<dbg>"] {
        if line.contains(tag) {
            return true;
        }
    }
    line.ends_with(":~$") || line.starts_with("uart:~$") || line.starts_with("mosh:~$")
}

/// The AT command inside a shell line `at '<command>'` (the line itself otherwise).
fn shell_argument(line: &str) -> &str {
    line.strip_prefix("at '")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or(line)
}

fn strip_prompt(line: &str) -> &str {
    for p in ["uart:~$ ", "mosh:~$ "] {
        if let Some(rest) = line.strip_prefix(p) {
            let rest = rest.strip_prefix("at ").unwrap_or(rest);
            return rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .unwrap_or(rest);
        }
    }
    line
}

/// Bytes → text: drop ANSI escape sequences and control bytes except LF/TAB, map other
/// non-ASCII to U+FFFD (lossy).
fn clean(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw.get(i).copied().unwrap_or(0);
        if b == 0x1b {
            // ESC [ params final-byte
            i += 1;
            if raw.get(i) == Some(&b'[') {
                i += 1;
                while let Some(&c) = raw.get(i) {
                    i += 1;
                    if (0x40..=0x7e).contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if b == b'\n' || b == b'\t' || b >= 0x20 && b != 0x7f {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a command could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The content holds a `"` (the AT syntax has no escaping).
    #[error("the PEM contains a double quote, which an AT command cannot carry: check the file")]
    Quote,
    /// The content holds a byte the modem's receiver would mangle (NUL, BS, DEL, non-ASCII, CR
    /// alone) .
    #[error("the PEM contains byte 0x{0:02x}, which the modem's AT receiver would mangle: use plain ASCII PEM with LF line ends")]
    BadByte(u8),
    /// The content is empty.
    #[error("the PEM is empty")]
    Empty,
    /// The whole command would exceed [`MAX_COMMAND`] bytes.
    #[error("the command would be {0} bytes, over the modem's {MAX_COMMAND}-byte limit: use a smaller root CA bundle")]
    TooLong(usize),
    /// The command holds a `'` or `\\`, which the shell's `at '<command>'` cannot carry.
    #[error("the command contains ' or \\, which the shell's at '<command>' form cannot carry: check the file, or use --dialect at with AT Client firmware")]
    ShellQuote,
}

/// How AT commands travel to the modem (`--dialect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Plain AT commands, one per line (AT Client, Serial LTE Modem, applications with the AT
    /// host library).
    #[default]
    At,
    /// The nRF Connect SDK shell (`uart:~$ `): each command goes as `at '<command>'` with CRs
    /// removed and every LF written as the two characters `\n`, as Nordic's
    /// `nrfcredstore --cmd-type shell` sends it; the firmware's AT shell
    /// (`CONFIG_AT_SHELL_UNESCAPE_LF`) turns each `\n` back into CR LF before the modem sees
    /// the command, so a credential is stored with CRLF line ends. The shell echoes the line
    /// and prints a prompt; both are dropped by the [`Parser`].
    Shell,
}

impl Dialect {
    /// The `--dialect` name.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::At => "at",
            Dialect::Shell => "shell",
        }
    }

    /// The line to send for AT command `cmd` (without the terminator).
    pub fn wire(self, cmd: &str) -> Result<String, EncodeError> {
        match self {
            Dialect::At => Ok(cmd.to_string()),
            Dialect::Shell => {
                if cmd.contains(['\'', '\\']) {
                    return Err(EncodeError::ShellQuote);
                }
                let escaped = cmd.replace('\r', "").replace('\n', "\\n");
                // The modem sees the command after the shell turned `\n` into CR LF: the
                // same length as the escaped text.
                if escaped.len() > MAX_COMMAND {
                    return Err(EncodeError::TooLong(escaped.len()));
                }
                Ok(format!("at '{escaped}'"))
            }
        }
    }

    /// The bytes the modem stores for credential `content` sent in this dialect (what its
    /// `%CMNG` listing hashes): as sent over AT; with CR LF line ends over the shell.
    pub fn stored(self, content: &str) -> String {
        match self {
            Dialect::At => content.to_string(),
            Dialect::Shell => content.replace('\r', "").replace('\n', "\r\n"),
        }
    }
}

/// Normalise a PEM for the modem: CRLF → LF, exactly one final LF. The SHA-256 the modem
/// lists is over exactly these bytes.
pub fn normalize_pem(pem: &str) -> String {
    let mut s = pem.replace("\r\n", "\n");
    while s.ends_with('\n') {
        s.pop();
    }
    s.push('\n');
    s
}

/// `AT%CMNG=0,<tag>,<type>,"<content>"`, content exactly as given (see [`normalize_pem`]).
pub fn cmng_write_command(sec_tag: u32, kind: u8, content: &str) -> Result<String, EncodeError> {
    if content.trim().is_empty() {
        return Err(EncodeError::Empty);
    }
    for &b in content.as_bytes() {
        if b == b'"' {
            return Err(EncodeError::Quote);
        }
        if !(b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(EncodeError::BadByte(b));
        }
    }
    let cmd = format!("AT%CMNG=0,{sec_tag},{kind},\"{content}\"");
    if cmd.len() > MAX_COMMAND {
        return Err(EncodeError::TooLong(cmd.len()));
    }
    Ok(cmd)
}

/// One line of an `AT%CMNG=1` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmngEntry {
    /// The sec_tag.
    pub sec_tag: u64,
    /// The credential type (0 root CA, 1 client cert, 2 client key, …).
    pub kind: u8,
    /// The SHA-256 as listed (normalised to uppercase; empty if the firmware gives none).
    pub sha256: String,
}

/// Parse `%CMNG: 16842753,0,"2C43…"` (spaces after commas tolerated, as in the docs).
pub fn parse_cmng_line(line: &str) -> Option<CmngEntry> {
    let rest = line.strip_prefix("%CMNG:")?.trim();
    let mut parts = rest.splitn(3, ',');
    let sec_tag = parts.next()?.trim().parse::<u64>().ok()?;
    let kind = parts.next()?.trim().parse::<u8>().ok()?;
    let sha = match parts.next() {
        Some(s) => {
            let s = s.trim();
            let s = s.strip_prefix('"').unwrap_or(s);
            let end = s.find('"').unwrap_or(s.len());
            s.get(..end).unwrap_or("").trim().to_ascii_uppercase()
        }
        None => String::new(),
    };
    if !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(CmngEntry {
        sec_tag,
        kind,
        sha256: sha,
    })
}

/// The text between the quotes of `%KEYGEN: "<text>"` (or `%ATTESTTOKEN: "…"`).
pub fn parse_quoted_reply<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(prefix)?.trim();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    rest.get(..end)
}

/// A modem firmware version, from an `AT+CGMR` string such as `mfw_nrf9160_1.3.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FwVersion(pub u32, pub u32, pub u32);

impl fmt::Display for FwVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Extract `x.y.z` delimited by `_`/`-` or the string ends (nrfcloud-utils' rule); `None`
/// unless exactly one such version is present.
pub fn parse_fw_version(cgmr: &str) -> Option<FwVersion> {
    let mut found = None;
    let mut count = 0;
    for (i, token) in cgmr.split(['_', '-']).enumerate() {
        let _ = i;
        let nums: Vec<&str> = token.split('.').collect();
        if nums.len() != 3 {
            continue;
        }
        let mut v = [0u32; 3];
        let mut ok = true;
        for (slot, n) in v.iter_mut().zip(nums.iter()) {
            if n.is_empty() || n.len() > 3 || !n.chars().all(|c| c.is_ascii_digit()) {
                ok = false;
                break;
            }
            *slot = n.parse().unwrap_or(0);
        }
        if ok {
            count += 1;
            found = Some(FwVersion(v[0], v[1], v[2]));
        }
    }
    if count == 1 {
        found
    } else {
        None
    }
}

/// Does this modem firmware support `AT%KEYGEN`? `Ok(())` or a reason the operator can act on.
/// nRF9160 needs mfw ≥ 1.3.0, nRF91x1 (9161/9151/9131) ≥ 2.0.0; NTN builds are accepted
/// unchecked (as Nordic's installer does).
pub fn keygen_supported(cgmr: &str, model: &str) -> Result<(), String> {
    let fw = cgmr.to_ascii_lowercase();
    if fw.contains("ntn") {
        return Ok(());
    }
    let family_9160 = if fw.contains("nrf9160") {
        true
    } else if fw.contains("nrf91x1")
        || fw.contains("nrf9161")
        || fw.contains("nrf9151")
        || fw.contains("nrf9131")
    {
        false
    } else {
        model.to_ascii_lowercase().contains("9160")
    };
    let need = if family_9160 {
        FwVersion(1, 3, 0)
    } else {
        FwVersion(2, 0, 0)
    };
    match parse_fw_version(cgmr) {
        Some(v) if v >= need => Ok(()),
        Some(v) => Err(format!(
            "modem firmware {v} ({cgmr}) is too old for AT%KEYGEN, which needs {need} or later on {}: update the modem firmware",
            if family_9160 { "nRF9160" } else { "nRF91x1" }
        )),
        None => Err(format!(
            "cannot read a version from the modem firmware string {cgmr:?}: check the port is an nRF91 AT interface"
        )),
    }
}

/// Luhn check of a 15-digit IMEI.
pub fn imei_valid(imei: &str) -> bool {
    if imei.len() != 15 || !imei.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in imei.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// Summarise a command for logs and error messages: never more than ~120 characters, quoted
/// payloads (PEMs) replaced by their length.
pub fn summarize_command(cmd: &str) -> String {
    let mut out = String::new();
    let mut rest = cmd;
    while let Some(start) = rest.find('"') {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 1..).unwrap_or("");
        match after.find('"') {
            Some(end) => {
                let inner = after.get(..end).unwrap_or("");
                if inner.len() > 40 || inner.contains('\n') {
                    out.push_str(&format!("\"<{} bytes>\"", inner.len()));
                } else {
                    out.push('"');
                    out.push_str(inner);
                    out.push('"');
                }
                rest = after.get(end + 1..).unwrap_or("");
            }
            None => {
                out.push_str(&format!("\"<{} bytes, unterminated>", after.len()));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if out.len() > 120 {
        let mut cut = 117;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn finals(ev: &[Event]) -> Vec<Final> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Final(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }
    fn infos(ev: &[Event]) -> Vec<String> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Info(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    const KEYGEN_LINE: &str = "%KEYGEN: \"MIIBCjCBrwIBADAvMS0wKwYDVQQDDCQ1MDUwMzY0Mi0zMjM5LTRmODYtODBjNC0wNjEyMmUyOTk2MjMwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ.0oRDoQEmoQRBIVhP2dn3hQlQUFA2QjI5T4aAxAYSLimWI0QaAQEAAVggg\"";

    /// Recorded-style transcripts: (command, device bytes, expected infos, expected final).
    fn transcripts() -> Vec<(&'static str, String, Vec<String>, Final)> {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\nOK0=\n-----END CERTIFICATE-----\n";
        vec![
            (
                "AT+CGSN",
                "352656109480783\r\nOK\r\n".into(),
                vec!["352656109480783".into()],
                Final::Ok,
            ),
            (
                "AT+CGSN",
                "\r\n352656109480783\r\n\r\nOK\r\n".into(),
                vec!["352656109480783".into()],
                Final::Ok,
            ),
            (
                "AT%CMNG=2,4567,0",
                "+CME ERROR: 513\r\n".into(),
                vec![],
                Final::Cme(CmeCode(513)),
            ),
            (
                "AT+CFUN=4",
                "+CSCON: 1\r\n[00:00:28.460,540] <inf> asset_tracker: RRC mode: Connected\r\n+CEREG: 0\r\n\x1b[1;32m[00:00:28.467,834] <inf> x\x1b[0m\r\n+CSCON: 0\r\nOK\r\n".into(),
                vec![],
                Final::Ok,
            ),
            (
                "AT+CGMR",
                "AT+CGMR\r\nmfw_nrf9160_1.3.7\r\nOK\r\n".into(),
                vec!["mfw_nrf9160_1.3.7".into()],
                Final::Ok,
            ),
            (
                "AT%KEYGEN=16842753,2,0",
                format!("%XMODEMSLEEP: 1, 5000\r\n{KEYGEN_LINE}\r\nOK\r\n"),
                vec![KEYGEN_LINE.into()],
                Final::Ok,
            ),
            (
                "AT%CMNG=2,16842753,0",
                format!("%CMNG: 16842753,0,\"ABCD\",\"{}\"\r\nOK\r\n", pem.replace('\n', "\r\n")),
                vec![format!("%CMNG: 16842753,0,\"ABCD\",\"{pem}\"")],
                Final::Ok,
            ),
            (
                "AT+CEREG?",
                "+CEREG: 5,\"0001\",\"01A2\",7\r\nOK\r\n".into(),
                vec!["+CEREG: 5,\"0001\",\"01A2\",7".into()],
                Final::Ok,
            ),
            (
                "AT",
                "*** Booting nRF Connect SDK v2.6.0 ***\r\nThe AT host sample started\r\nReady\r\nERROR\r\n".into(),
                vec![],
                Final::Error,
            ),
            (
                "AT%CMNG=1,16842753",
                "%CMNG: 16842753,0,\"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1\"\r\n%CMNG: 16842753, 2, \"00\"\r\nOK\r\n".into(),
                vec![
                    "%CMNG: 16842753,0,\"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1\"".into(),
                    "%CMNG: 16842753, 2, \"00\"".into(),
                ],
                Final::Ok,
            ),
            (
                "AT+CMEE=1",
                "\x00\u{ff}\u{fe} garbage\r\nOK\r\n".into(),
                vec![],
                Final::Ok,
            ),
            (
                "AT%KEYGEN=1,2,0",
                "[00:01] <err> \"unbalanced\r\n+CME ERROR: 523\r\n".into(),
                vec![],
                Final::Cme(CmeCode(523)),
            ),
            (
                "AT+CGSN=1",
                "+CGSN: \"352656100367872\"\r\n+CMS ERROR: 500\r\n".into(),
                vec!["+CGSN: \"352656100367872\"".into()],
                Final::Cms(500),
            ),
        ]
    }

    fn run(cmd: &str, bytes: &[u8], splits: &[usize]) -> Vec<Event> {
        let mut p = Parser::new();
        p.begin(cmd);
        let mut ev = Vec::new();
        let mut last = 0;
        for &s in splits {
            let s = s.min(bytes.len()).max(last);
            ev.extend(p.feed(&bytes[last..s]));
            last = s;
        }
        ev.extend(p.feed(&bytes[last..]));
        ev
    }

    #[test]
    fn transcripts_whole_and_bytewise() {
        for (cmd, bytes, want_info, want_final) in transcripts() {
            let b = bytes.as_bytes();
            let whole = run(cmd, b, &[]);
            assert_eq!(infos(&whole), want_info, "{cmd}: {whole:?}");
            assert_eq!(finals(&whole), vec![want_final.clone()], "{cmd}");
            let splits: Vec<usize> = (1..b.len()).collect();
            let bytewise = run(cmd, b, &splits);
            assert_eq!(whole, bytewise, "{cmd} byte by byte");
        }
    }

    #[test]
    fn garbage_as_raw_bytes() {
        let mut p = Parser::new();
        p.begin("AT");
        let ev = p.feed(b"\x00\x01\x7f\x08\xc3\x28\r\nOK\r\n");
        assert_eq!(finals(&ev), vec![Final::Ok]);
        assert!(infos(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn stray_quote_does_not_swallow_final() {
        let mut p = Parser::new();
        p.begin("AT%CMNG=1,1");
        let ev = p.feed(b"%CMNG: 1,0,\"ABC\r\nOK\r\n");
        assert_eq!(finals(&ev), vec![Final::Ok]);
        // The next response parses normally.
        p.begin("AT");
        assert_eq!(finals(&p.feed(b"OK\r\n")), vec![Final::Ok]);
    }

    #[test]
    fn overflow_is_bounded() {
        let mut p = Parser::new();
        p.begin("AT");
        let big = vec![b'A'; MAX_LINE + 10];
        let ev = p.feed(&big);
        assert_eq!(ev, vec![Event::Overflow]);
        let ev = p.feed(b"more\r\nOK\r\n");
        assert_eq!(finals(&ev), vec![Final::Ok]);
        // An unterminated quote also ends in overflow, not unbounded growth.
        let mut p = Parser::new();
        p.begin("AT%CMNG=2,1,0");
        let mut data = b"%CMNG: 1,0,\"".to_vec();
        data.extend(
            std::iter::repeat(b"ABCDEFGH\n".iter().copied())
                .take(3000)
                .flatten(),
        );
        let ev = p.feed(&data);
        assert!(ev.contains(&Event::Overflow));
        assert!(!p.pending() || p.line.len() <= MAX_LINE);
    }

    #[test]
    fn echo_only_first_line() {
        let mut p = Parser::new();
        p.begin("AT+CGMM");
        let ev = p.feed(b"AT+CGMM\r\nnRF9160-SICA\r\nOK\r\n");
        assert_eq!(infos(&ev), vec!["nRF9160-SICA".to_string()]);
    }

    #[test]
    fn cmng_lines() {
        let e = parse_cmng_line("%CMNG: 16842753,0,\"2c43\"").unwrap();
        assert_eq!(
            (e.sec_tag, e.kind, e.sha256.as_str()),
            (16842753, 0, "2C43")
        );
        let e = parse_cmng_line("%CMNG: 12345678, 0, \"978C02C4\"").unwrap();
        assert_eq!(e.sha256, "978C02C4");
        let e = parse_cmng_line("%CMNG: 4294967292,11").unwrap();
        assert_eq!((e.sec_tag, e.kind), (4294967292, 11));
        assert!(parse_cmng_line("%CMNG: x,0,\"AA\"").is_none());
        assert!(parse_cmng_line("%CMNG: 1,0,\"ZZ\"").is_none());
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_fw_version("mfw_nrf9160_1.3.7"),
            Some(FwVersion(1, 3, 7))
        );
        assert_eq!(
            parse_fw_version("mfw_nrf9160_1.3.0-FOTA-TEST"),
            Some(FwVersion(1, 3, 0))
        );
        assert_eq!(
            parse_fw_version("mfw_nrf91x1_2.0.2"),
            Some(FwVersion(2, 0, 2))
        );
        assert_eq!(parse_fw_version("garbage"), None);
        assert!(keygen_supported("mfw_nrf9160_1.3.7", "nRF9160-SICA").is_ok());
        assert!(keygen_supported("mfw_nrf9160_1.2.3", "nRF9160-SICA").is_err());
        assert!(keygen_supported("mfw_nrf91x1_2.0.2", "nRF9161-LACA").is_ok());
        assert!(keygen_supported("mfw_nrf91x1_1.9.9", "nRF9161-LACA").is_err());
        assert!(keygen_supported("mfw_nrf9151-ntn_1.0.0-1.alpha", "").is_ok());
        assert!(keygen_supported("???", "").is_err());
    }

    #[test]
    fn encode() {
        let pem = normalize_pem("-----BEGIN X-----\r\nAAAA\r\n-----END X-----\r\n\r\n");
        assert_eq!(pem, "-----BEGIN X-----\nAAAA\n-----END X-----\n");
        let cmd = cmng_write_command(16842753, 1, &pem).unwrap();
        assert_eq!(cmd, format!("AT%CMNG=0,16842753,1,\"{pem}\""));
        assert_eq!(cmng_write_command(1, 1, "a\"b"), Err(EncodeError::Quote));
        assert_eq!(
            cmng_write_command(1, 1, "a\x08b"),
            Err(EncodeError::BadByte(8))
        );
        assert_eq!(cmng_write_command(1, 1, " \n"), Err(EncodeError::Empty));
        let big = "A".repeat(4096);
        assert!(matches!(
            cmng_write_command(1, 1, &big),
            Err(EncodeError::TooLong(_))
        ));
        let s = summarize_command(&cmd);
        assert!(s.starts_with("AT%CMNG=0,16842753,1,\"<"), "{s}");
        assert!(!s.contains("BEGIN"));
    }

    #[test]
    fn imei_luhn() {
        assert!(imei_valid("352656109480783"));
        assert!(imei_valid("359404230026529"));
        assert!(!imei_valid("355025930000000"));
        assert!(!imei_valid("35265610948078"));
    }

    #[test]
    fn cme_names() {
        assert_eq!(
            CmeCode(518).to_string(),
            "+CME ERROR: 518 (not allowed while LTE is active)"
        );
        assert!(CmeCode(518).next_step().contains("CFUN=4"));
        assert_eq!(CmeCode(9999).to_string(), "+CME ERROR: 9999");
    }

    proptest! {
        #[test]
        fn any_chunking_gives_same_events(idx in 0usize..13, cuts in proptest::collection::vec(0usize..2000, 0..12)) {
            let t = transcripts();
            let (cmd, bytes, _, _) = &t[idx % t.len()];
            let b = bytes.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (b.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(run(cmd, b, &[]), run(cmd, b, &cuts));
        }

        #[test]
        fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), cmd in "[ -~]{0,40}") {
            let mut p = Parser::new();
            p.begin(&cmd);
            let ev = p.feed(&data);
            for e in ev {
                if let Event::Info(s) | Event::Urc(s) | Event::Noise(s) | Event::Boot(s) = e {
                    prop_assert!(s.len() <= 3 * MAX_LINE);
                }
            }
            let _ = summarize_command(&cmd);
            let _ = parse_cmng_line(&cmd);
            let _ = parse_fw_version(&cmd);
            let _ = keygen_supported(&cmd, &cmd);
        }

        #[test]
        fn hostile_bytes_then_final_is_seen(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Whatever noise came first, an `OK` on its own line after a line end outside
            // quotes is always recognised (or the noise overflowed, which also resyncs).
            let mut p = Parser::new();
            p.begin("AT");
            let mut ev = p.feed(&data);
            ev.extend(p.feed(b"\r\nOK\r\n"));
            prop_assert!(finals(&ev).contains(&Final::Ok));
        }
    }
}
