//! Is this a requests file at all? Pure: bytes in, a verdict out, before the CA key is
//! unlocked.

use super::*;
use std::io::{BufRead, BufReader, Read};

/// What a file given as requests looks like when it is not a requests file ([`sniff`]).
/// Display is the phrase [`RequestsError::NotRequests`] puts after "is not a requests file:".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRequests {
    /// No bytes, or only blank and `#` lines.
    #[error("it is empty (no request in it)")]
    Empty,
    /// The requests CSV header and no row.
    #[error("it holds the CSV header and no request")]
    HeaderOnly,
    /// NUL bytes: a binary file.
    #[error("it looks like a binary file (NUL bytes)")]
    Binary,
    /// Bytes that are not UTF-8 text, and no line that could be a KEYGEN string.
    #[error("it is not UTF-8 text")]
    NotUtf8,
    /// An SQLite database (e.g. `ca.db`).
    #[error("it looks like an SQLite database (such as ca.db)")]
    Sqlite,
    /// An executable program (ELF).
    #[error("it looks like an executable program (ELF)")]
    Executable,
    /// A compressed file or archive (gzip, zip, xz, zstd).
    #[error("it looks like a compressed file or an archive")]
    Archive,
    /// PEM (a certificate, key or CSR); the label.
    #[error("it looks like PEM ({0:?}: a certificate, key or CSR, such as ca.pem)")]
    Pem(String),
    /// JSON or JSON lines (a bundle manifest, an exported audit log).
    #[error("it looks like JSON (a bundle's manifest.json or an exported audit log)")]
    Json,
    /// nRF Cloud onboarding CSV (a bundle's `onboard.csv`).
    #[error("it looks like an nRF Cloud onboarding CSV (a bundle's onboard.csv)")]
    OnboardCsv,
    /// A bundle's `certs.csv`.
    #[error("it looks like a bundle's certs.csv")]
    CertsCsv,
    /// A bundle's `rejects.csv`.
    #[error("it looks like a bundle's rejects.csv")]
    RejectsCsv,
    /// A CSV with another header (its first line, truncated), e.g. an exported audit log, an
    /// `--expect` list, or a requests file from another tool.
    #[error("it looks like a CSV with the header {0:?}, not the requests header {HEADER:?}")]
    OtherCsv(String),
    /// Text, but no line that could be a KEYGEN string (its first line, truncated).
    #[error("no line in it could be a KEYGEN string (it starts with {0:?})")]
    NoKeygen(String),
}

fn keygen_like(t: &str) -> bool {
    t.len() >= 16
        && t.len() <= MAX_LINE
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
        && !t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The KEYGEN string a plain-text line would hold.
fn unwrap_keygen_line(t: &str) -> &str {
    match t.strip_prefix("%KEYGEN:") {
        Some(rest) => {
            let rest = rest.trim();
            rest.strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(rest)
        }
        None => t,
    }
}

fn shown(t: &str) -> String {
    quote_trunc(t.trim())
}

/// Read one line (without LF) into `buf`, keeping at most [`MAX_LINE`] + 1 bytes; `None` at
/// the end of the input.
fn sniff_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    buf.clear();
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(()));
        }
        any = true;
        let (take, consume, end) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (avail.len(), avail.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        if let Some(part) = avail.get(..take.min(room)) {
            buf.extend_from_slice(part);
        }
        r.consume(consume);
        if end {
            return Ok(Some(()));
        }
    }
}

/// Decide whether the bytes of `input` can be a requests file (SPEC §2) at all: `Ok(())` as
/// soon as one line could be a KEYGEN string (usually the first or second line, so this
/// reads a few KiB of a good file), else what the file looks like. Known other files (PEM,
/// SQLite, ELF, archives, JSON, a bundle's CSVs, onboarding CSV) are recognised by their
/// first bytes or first line; a NUL byte before any KEYGEN-like line means binary; otherwise
/// the scan goes on to the end (one pass, at most [`MAX_LINE`] + 1 bytes held). Pure: bytes
/// in, verdict out.
pub fn sniff_reader<R: Read>(input: R) -> io::Result<Result<(), NotRequests>> {
    let mut r = BufReader::with_capacity(64 * 1024, input);
    let mut buf = Vec::with_capacity(1024);
    let mut first: Option<NotRequests> = None;
    let mut csv = false;
    let mut line_no = 0u64;
    while sniff_line(&mut r, &mut buf)?.is_some() {
        line_no += 1;
        if line_no == 1 {
            const MAGIC: [(&[u8], NotRequests); 7] = [
                (b"SQLite format 3\0", NotRequests::Sqlite),
                (b"\x7fELF", NotRequests::Executable),
                (b"\x1f\x8b", NotRequests::Archive),
                (b"PK\x03\x04", NotRequests::Archive),
                (b"\xfd7zXZ\0", NotRequests::Archive),
                (b"\x28\xb5\x2f\xfd", NotRequests::Archive),
                (b"BZh", NotRequests::Archive),
            ];
            for (magic, what) in MAGIC {
                if buf.starts_with(magic) {
                    return Ok(Err(what));
                }
            }
            if buf.starts_with(&[0xef, 0xbb, 0xbf]) {
                buf.drain(..3);
            }
        }
        if buf.contains(&0) {
            return Ok(Err(NotRequests::Binary));
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            // An overlong line cut in the middle of a character is still text.
            Err(e) if e.error_len().is_none() && buf.len() > MAX_LINE => {
                std::str::from_utf8(buf.get(..e.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default()
            }
            Err(_) => {
                first.get_or_insert(NotRequests::NotUtf8);
                continue;
            }
        };
        let t = text.trim();
        if t.is_empty() || (!csv && t.starts_with('#')) {
            continue;
        }
        if first.is_none() && !csv {
            // The first line that says something: a known other file is refused right away.
            if t == HEADER {
                csv = true;
                continue;
            }
            if t.starts_with("device_uuid,imei,sec_tag,serial") {
                return Ok(Err(NotRequests::CertsCsv));
            }
            if t == "source,line,device_uuid,code,detail" {
                return Ok(Err(NotRequests::RejectsCsv));
            }
            if t.starts_with("device_uuid") {
                return Ok(Err(NotRequests::OtherCsv(shown(t))));
            }
            if let Some(label) = t
                .strip_prefix("-----BEGIN ")
                .map(|l| l.trim_end_matches('-'))
            {
                return Ok(Err(NotRequests::Pem(shown(label))));
            }
            if t.starts_with(['{', '[']) {
                return Ok(Err(NotRequests::Json));
            }
            if t.contains("\"-----BEGIN ") {
                return Ok(Err(NotRequests::OnboardCsv));
            }
        }
        let found = if csv {
            t.split(',')
                .any(|f| keygen_like(f.trim().trim_matches('"')))
        } else {
            keygen_like(unwrap_keygen_line(t))
        };
        if found {
            return Ok(Ok(()));
        }
        if first.is_none() {
            first = Some(if csv {
                NotRequests::NoKeygen(shown(t))
            } else if t.contains(',') {
                NotRequests::OtherCsv(shown(t))
            } else {
                NotRequests::NoKeygen(shown(t))
            });
        }
    }
    Ok(Err(first.unwrap_or(if csv {
        NotRequests::HeaderOnly
    } else {
        NotRequests::Empty
    })))
}
