//! The nRF Connect SDK shell personality, with no I/O: the Zephyr shell's line editor (echo,
//! BS/DEL, a fixed command buffer, the `uart:~$ ` prompt), its argument splitter, and the AT
//! shell command `at <command>` with `CONFIG_AT_SHELL_UNESCAPE_LF` (each two-character `\n`
//! becomes CR LF before the modem sees the command), as Nordic's
//! `nrfcredstore --cmd-type shell` expects it.

/// The prompt the shell prints when it is ready for a line.
pub const PROMPT: &[u8] = b"uart:~$ ";

/// Command buffer of the shell (`CONFIG_SHELL_CMD_BUFF_SIZE`, raised in the cloud samples so
/// that a certificate fits): a longer line is cut at this many bytes.
pub const SHELL_BUFFER: usize = 4096;

/// Zephyr's default `CONFIG_SHELL_CMD_BUFF_SIZE`: what a shell built without the cloud
/// samples' larger buffer keeps of a line (the `shell-truncate` fault).
pub const DEFAULT_SHELL_BUFFER: usize = 256;

/// A line the shell read, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellLine {
    /// `at <command>`: the AT command for the modem (after unescaping).
    At(Vec<u8>),
    /// `at` with no command.
    AtUsage,
    /// An empty line.
    Empty,
    /// Another shell command: the shell does not know it.
    Unknown(String),
}

/// The shell's line editor: bytes in, complete lines out (with what to echo).
#[derive(Debug, Clone)]
pub struct ShellReceiver {
    buf: Vec<u8>,
    limit: usize,
    prev_cr: bool,
}

impl Default for ShellReceiver {
    fn default() -> Self {
        ShellReceiver::new(SHELL_BUFFER)
    }
}

impl ShellReceiver {
    /// A line editor that keeps at most `limit` bytes of a line (the rest is dropped, as the
    /// shell does once its buffer is full).
    pub fn new(limit: usize) -> ShellReceiver {
        ShellReceiver {
            buf: Vec::new(),
            limit: limit.max(1),
            prev_cr: false,
        }
    }

    /// Forget a partial line (reboot).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.prev_cr = false;
    }

    /// Feed one byte; a complete line comes back as its raw text (the echo). CR, LF and CR LF
    /// each end one line; the shell knows no quoting at this level.
    pub fn push(&mut self, b: u8) -> Option<Vec<u8>> {
        let was_cr = std::mem::replace(&mut self.prev_cr, b == b'\r');
        match b {
            b'\n' if was_cr => None,
            b'\r' | b'\n' => Some(std::mem::take(&mut self.buf)),
            0x08 | 0x7F => {
                self.buf.pop();
                None
            }
            0 => None,
            _ => {
                if self.buf.len() < self.limit {
                    self.buf.push(b);
                }
                None
            }
        }
    }
}

/// Split a shell line into arguments as Zephyr's shell does: whitespace separates, `"…"` or
/// `'…'` groups (the quotes are removed), a backslash before the closing quote character
/// keeps it. Other backslashes stay as they are (so `\n` reaches the AT shell untouched).
pub fn split_args(line: &[u8]) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        match quote {
            Some(q) => {
                if c == b'\\' && line.get(i + 1) == Some(&q) {
                    cur.get_or_insert_with(Vec::new).push(q);
                    i += 2;
                    continue;
                }
                if c == q {
                    quote = None;
                } else {
                    cur.get_or_insert_with(Vec::new).push(c);
                }
            }
            None => {
                if c == b'"' || c == b'\'' {
                    quote = Some(c);
                    cur.get_or_insert_with(Vec::new);
                } else if c.is_ascii_whitespace() {
                    if let Some(a) = cur.take() {
                        args.push(a);
                    }
                } else {
                    cur.get_or_insert_with(Vec::new).push(c);
                }
            }
        }
        i += 1;
    }
    if let Some(a) = cur {
        args.push(a);
    }
    args
}

/// `CONFIG_AT_SHELL_UNESCAPE_LF`: every two-character `\n` becomes CR LF.
pub fn unescape_lf(cmd: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmd.len());
    let mut i = 0;
    while i < cmd.len() {
        if cmd[i] == b'\\' && cmd.get(i + 1) == Some(&b'n') {
            out.extend_from_slice(b"\r\n");
            i += 2;
        } else {
            out.push(cmd[i]);
            i += 1;
        }
    }
    out
}

/// What a line asks of the shell.
pub fn interpret(line: &[u8]) -> ShellLine {
    let args = split_args(line);
    match args.first().map(Vec::as_slice) {
        None => ShellLine::Empty,
        Some(b"at") => match args.get(1) {
            Some(cmd) => ShellLine::At(unescape_lf(cmd)),
            None => ShellLine::AtUsage,
        },
        Some(other) => ShellLine::Unknown(String::from_utf8_lossy(other).into_owned()),
    }
}

/// The echo of a line as the shell prints it while it is typed, then the line end.
pub fn echo(line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(b"\r\n");
    out
}

/// What the shell prints after the AT shell command's reply (`shell_print("%s", reply)` adds
/// a line end after the modem's own), then the prompt.
pub fn after_reply() -> Vec<u8> {
    let mut out = b"\r\n".to_vec();
    out.extend_from_slice(PROMPT);
    out
}

/// The shell's answer to a line that is not an AT command, ending with the prompt.
pub fn answer(line: &ShellLine) -> Vec<u8> {
    let mut out = match line {
        ShellLine::Unknown(name) => format!("{name}: command not found\r\n").into_bytes(),
        ShellLine::AtUsage => b"at: wrong parameter count\r\n".to_vec(),
        ShellLine::Empty | ShellLine::At(_) => Vec::new(),
    };
    out.extend_from_slice(PROMPT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_editing() {
        let mut r = ShellReceiver::new(8);
        let mut got = Vec::new();
        for &b in b"at AT\r\nx\x08y\n\r0123456789\r" {
            if let Some(l) = r.push(b) {
                got.push(l);
            }
        }
        assert_eq!(
            got,
            vec![
                b"at AT".to_vec(),
                b"y".to_vec(),
                b"".to_vec(),
                b"01234567".to_vec()
            ]
        );
    }

    #[test]
    fn arguments_and_unescaping() {
        let cases: &[(&[u8], ShellLine)] = &[
            (b"at AT+CGSN", ShellLine::At(b"AT+CGSN".to_vec())),
            (
                b"  at   'AT%CMNG=1'  ",
                ShellLine::At(b"AT%CMNG=1".to_vec()),
            ),
            (
                b"at 'AT%CMNG=0,1,0,\"-----BEGIN\\nAB\\n-----END\"'",
                ShellLine::At(b"AT%CMNG=0,1,0,\"-----BEGIN\r\nAB\r\n-----END\"".to_vec()),
            ),
            (
                b"at \"AT%KEYGEN=1,2,0,\\\"CN=x\\\"\"",
                ShellLine::At(b"AT%KEYGEN=1,2,0,\"CN=x\"".to_vec()),
            ),
            (b"at", ShellLine::AtUsage),
            (b"", ShellLine::Empty),
            (b"   ", ShellLine::Empty),
            (b"AT+CGSN", ShellLine::Unknown("AT+CGSN".into())),
            (b"kernel reboot warm", ShellLine::Unknown("kernel".into())),
        ];
        for (line, want) in cases {
            assert_eq!(&interpret(line), want, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            answer(&ShellLine::Unknown("AT".into())),
            b"AT: command not found\r\nuart:~$ ".to_vec()
        );
    }
}
