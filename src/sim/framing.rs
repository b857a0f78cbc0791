//! Bytes on the wire, both directions, with no I/O: the AT host's command receiver
//! (quote-aware, BS/DEL editing, 4096-byte buffer) and the reply framing of the AT Client
//! (`<line>\r\n … OK\r\n`) and of the Serial LTE Modem (`\r\n<info>\r\n\r\nOK\r\n`).

/// Size of the AT host's command buffer; one byte is kept for the NUL, so a command may be
/// at most `COMMAND_BUFFER - 1` = 4095 bytes from `AT` to the last byte before the terminator.
pub const COMMAND_BUFFER: usize = 4096;

/// What the receiver produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A complete command (terminator removed, leading whitespace removed, never empty).
    Command(Vec<u8>),
    /// A command longer than the buffer: it was discarded, the modem answers `ERROR`.
    Overflow,
}

/// The AT host receiver: assembles bytes into commands.
///
/// Rules (sdk-nrf `lib/at_host`, modem-at-protocol.md §2.2): a `"` toggles the inside-quotes
/// flag; CR, LF and NUL inside quotes are data. Outside quotes CR or LF ends a command (so CR,
/// LF and CRLF senders all work; the LF of a CRLF ends an empty line, which is dropped), NUL is
/// ignored. BS (0x08) and DEL (0x7F) delete the previous byte, even inside quotes (the quote
/// flag is not recomputed, as on the device). Whitespace-only commands are dropped. A command
/// longer than 4095 bytes is discarded up to its terminator and reported as [`Received::Overflow`]
/// (quotes are still tracked while discarding, so an overlong `%CMNG` write gives one `ERROR`).
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    buf: Vec<u8>,
    in_quotes: bool,
    overflow: bool,
}

impl Receiver {
    /// A receiver with an empty buffer.
    pub fn new() -> Receiver {
        Receiver::default()
    }

    /// Forget any partial command (reboot).
    pub fn reset(&mut self) {
        *self = Receiver::default();
    }

    /// True while inside an unterminated quoted string.
    pub fn in_quotes(&self) -> bool {
        self.in_quotes
    }

    /// Feed one byte.
    pub fn push(&mut self, b: u8) -> Option<Received> {
        match b {
            0x08 | 0x7F => {
                self.buf.pop();
                return None;
            }
            b'\r' | b'\n' if !self.in_quotes => return self.finish(),
            0 if !self.in_quotes => return None,
            _ => {}
        }
        if b == b'"' {
            self.in_quotes = !self.in_quotes;
        }
        if self.overflow {
            return None;
        }
        if self.buf.len() + 1 > COMMAND_BUFFER - 1 {
            self.overflow = true;
            self.buf.clear();
            return None;
        }
        self.buf.push(b);
        None
    }

    /// Feed many bytes; returns the commands completed, in order.
    pub fn push_all(&mut self, bytes: &[u8]) -> Vec<Received> {
        bytes.iter().filter_map(|&b| self.push(b)).collect()
    }

    fn finish(&mut self) -> Option<Received> {
        if self.overflow {
            self.overflow = false;
            self.buf.clear();
            return Some(Received::Overflow);
        }
        let start = self
            .buf
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        let cmd: Vec<u8> = self.buf.get(start..).unwrap_or_default().to_vec();
        self.buf.clear();
        if cmd.is_empty() {
            None
        } else {
            Some(Received::Command(cmd))
        }
    }
}

/// A final result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
    /// `+CME ERROR: <n>`.
    Cme(u16),
}

impl Final {
    /// The line's text.
    pub fn text(self) -> String {
        match self {
            Final::Ok => "OK".to_string(),
            Final::Error => "ERROR".to_string(),
            Final::Cme(n) => format!("+CME ERROR: {n}"),
        }
    }
}

/// One piece of output, before framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// An information line of the reply (may contain CR/LF inside quotes).
    Info(Vec<u8>),
    /// An unsolicited result code or a log line.
    Urc(Vec<u8>),
    /// The final result.
    Final(Final),
    /// Raw bytes written as they are (line noise).
    Raw(Vec<u8>),
    /// A boot banner line.
    Banner(Vec<u8>),
}

/// Frame `pieces` for the wire. AT Client: every line followed by CRLF, nothing else. Serial
/// LTE Modem (`slm`): the information block as `\r\n<line>\r\n<line>\r\n`, finals and URCs
/// as `\r\n<text>\r\n`, banner lines as `<text>\r\n`.
pub fn frame(pieces: &[Piece], slm: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_info = false;
    for p in pieces {
        match p {
            Piece::Info(line) => {
                if slm && !in_info {
                    out.extend_from_slice(b"\r\n");
                }
                in_info = true;
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            Piece::Urc(line) => {
                in_info = false;
                if slm {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            Piece::Final(f) => {
                in_info = false;
                if slm {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(f.text().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Piece::Raw(bytes) => {
                in_info = false;
                out.extend_from_slice(bytes);
            }
            Piece::Banner(line) => {
                in_info = false;
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmds(bytes: &[u8]) -> Vec<Received> {
        Receiver::new().push_all(bytes)
    }

    #[test]
    fn terminators() {
        let c = |s: &str| Received::Command(s.as_bytes().to_vec());
        assert_eq!(cmds(b"AT\r"), vec![c("AT")]);
        assert_eq!(cmds(b"AT\n"), vec![c("AT")]);
        assert_eq!(cmds(b"AT\r\nAT+CGSN\r\n"), vec![c("AT"), c("AT+CGSN")]);
        assert_eq!(cmds(b"\r\n \r\n\0"), vec![]);
        assert_eq!(cmds(b"ATX\x08+CGSN\r"), vec![c("AT+CGSN")]);
        assert_eq!(cmds(b"AT\0+CGSN\r"), vec![c("AT+CGSN")]);
        assert_eq!(
            cmds(b"AT%CMNG=0,1,0,\"a\r\nb\n\"\r\n"),
            vec![c("AT%CMNG=0,1,0,\"a\r\nb\n\"")]
        );
        let mut r = Receiver::new();
        assert!(r.push_all(b"AT%CMNG=0,1,0,\"abc\r\nAT\r\n").is_empty());
        assert!(r.in_quotes());
    }

    #[test]
    fn overflow() {
        let mut long = b"AT%CMNG=0,1,0,\"".to_vec();
        long.extend(std::iter::repeat(b'A').take(5000));
        long.extend_from_slice(b"\r\n\"\r\nAT\r\n");
        assert_eq!(
            cmds(&long),
            vec![Received::Overflow, Received::Command(b"AT".to_vec())]
        );
        let mut ok = b"AT".to_vec();
        ok.extend(std::iter::repeat(b'A').take(4093));
        assert_eq!(ok.len(), 4095);
        let mut line = ok.clone();
        line.push(b'\r');
        assert_eq!(cmds(&line), vec![Received::Command(ok.clone())]);
        let mut too = ok;
        too.extend_from_slice(b"A\r");
        assert_eq!(cmds(&too), vec![Received::Overflow]);
    }

    #[test]
    fn framing() {
        let p = vec![
            Piece::Info(b"352656109480783".to_vec()),
            Piece::Final(Final::Ok),
        ];
        assert_eq!(frame(&p, false), b"352656109480783\r\nOK\r\n");
        assert_eq!(frame(&p, true), b"\r\n352656109480783\r\n\r\nOK\r\n");
        let e = vec![Piece::Final(Final::Cme(513))];
        assert_eq!(frame(&e, false), b"+CME ERROR: 513\r\n");
        assert_eq!(frame(&e, true), b"\r\n+CME ERROR: 513\r\n");
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(data in proptest::collection::vec(any::<u8>(), 0..6000), split in 0usize..6000) {
            let whole = Receiver::new().push_all(&data);
            let mut r = Receiver::new();
            let at = split.min(data.len());
            let mut parts = r.push_all(&data[..at]);
            parts.extend(r.push_all(&data[at..]));
            prop_assert_eq!(whole, parts);
        }
    }
}
