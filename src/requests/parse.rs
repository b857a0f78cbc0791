//! The requests parser: one input (any `Read`) in, entries out, in file order. It does no
//! I/O of its own (`files` opens the files), holds at most one record and hashes every byte.

use super::*;
use std::io::{BufRead, BufReader, Read};

/// A `Read` that hashes and counts what passes through.
struct HashRead<R> {
    inner: R,
    ctx: ring::digest::Context,
    bytes: u64,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = buf.get(..n) {
            self.ctx.update(b);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Unknown,
    Csv,
    Lines,
}

enum LineRead {
    Eof,
    Line,
    TooLong,
}

/// A pure, streaming parser of one input (any `Read`): yields entries in file order.
pub struct SourceReader<R: Read> {
    name: String,
    inner: BufReader<HashRead<R>>,
    line_no: u64,
    format: Format,
    done: bool,
    buf: Vec<u8>,
}

impl<R: Read> fmt::Debug for SourceReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceReader({}, line {})", self.name, self.line_no)
    }
}

/// A fatal problem in one source (the caller adds the path).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading failed.
    #[error("read error")]
    Io(#[source] io::Error),
    /// The first line looks like a header but is not [`HEADER`].
    #[error("unexpected CSV header {0:?}")]
    BadHeader(String),
}

fn malformed(source: &str, line: u64, uuid: Option<String>, detail: impl Into<String>) -> Entry {
    Entry::Malformed(Malformed {
        source: source.to_string(),
        line,
        device_uuid: uuid,
        reject: Reject::new(RejectCode::MalformedInput, detail),
    })
}

impl<R: Read> SourceReader<R> {
    /// Parse `inner`, naming it `name` in entries.
    pub fn new(name: impl Into<String>, inner: R) -> Self {
        SourceReader {
            name: name.into(),
            inner: BufReader::with_capacity(
                64 * 1024,
                HashRead {
                    inner,
                    ctx: ring::digest::Context::new(&ring::digest::SHA256),
                    bytes: 0,
                },
            ),
            line_no: 0,
            format: Format::Unknown,
            done: false,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.get_ref().bytes
    }

    /// Finish: drain whatever is left (so the digest covers the whole input) and return it.
    pub fn finish(mut self) -> io::Result<InputDigest> {
        io::copy(&mut self.inner, &mut io::sink())?;
        let h = self.inner.into_inner();
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(h.ctx.finish().as_ref());
        Ok(InputDigest {
            name: self.name,
            sha256,
            bytes: h.bytes,
        })
    }

    /// Read one line into `self.buf` (without the LF), keeping at most [`MAX_LINE`] bytes
    /// (+1 so an overlong line is detected) and discarding the rest of an overlong line.
    fn read_line(&mut self, append: bool) -> io::Result<LineRead> {
        if !append {
            self.buf.clear();
        }
        let mut any = false;
        let mut too_long = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !any {
                    return Ok(LineRead::Eof);
                }
                break;
            }
            any = true;
            let (take, consume, end) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1, true),
                None => (avail.len(), avail.len(), false),
            };
            let room = (MAX_LINE + 1).saturating_sub(self.buf.len());
            if take > room {
                too_long = true;
            }
            if let Some(part) = avail.get(..take.min(room)) {
                self.buf.extend_from_slice(part);
            }
            self.inner.consume(consume);
            if end {
                break;
            }
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if too_long || self.buf.len() > MAX_LINE {
            return Ok(LineRead::TooLong);
        }
        Ok(LineRead::Line)
    }

    /// The next entry, `Ok(None)` at the end of the input.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.read_line(false).map_err(SourceError::Io)? {
                LineRead::Eof => {
                    self.done = true;
                    return Ok(None);
                }
                LineRead::TooLong => {
                    if self.format == Format::Unknown {
                        self.format = Format::Lines;
                    }
                    return Ok(Some(malformed(
                        &self.name,
                        self.line_no,
                        None,
                        format!("line longer than {MAX_LINE} bytes"),
                    )));
                }
                LineRead::Line => {}
            }
            let start = self.line_no;
            if self.format == Format::Unknown {
                // Strip a UTF-8 byte order mark.
                if self.buf.starts_with(&[0xef, 0xbb, 0xbf]) {
                    self.buf.drain(..3);
                }
                let first = String::from_utf8_lossy(&self.buf);
                let first_trim = first.trim();
                if first_trim == HEADER {
                    self.format = Format::Csv;
                    continue;
                }
                if first_trim.starts_with("device_uuid") {
                    let found: String = first_trim.chars().take(200).collect();
                    return Err(SourceError::BadHeader(found));
                }
                self.format = Format::Lines;
            }
            match self.format {
                Format::Lines => {
                    if let Some(e) = self.plain_line(start) {
                        return Ok(Some(e));
                    }
                }
                _ => {
                    if let Some(e) = self.csv_record(start)? {
                        return Ok(Some(e));
                    }
                }
            }
        }
    }

    fn plain_line(&mut self, line: u64) -> Option<Entry> {
        let text = match std::str::from_utf8(&self.buf) {
            Ok(t) => t.trim(),
            Err(_) => return Some(malformed(&self.name, line, None, "line is not UTF-8")),
        };
        if text.is_empty() || text.starts_with('#') {
            return None;
        }
        let keygen = if let Some(rest) = text.strip_prefix("%KEYGEN:") {
            let rest = rest.trim();
            match rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .filter(|inner| !inner.contains('"'))
            {
                Some(inner) => inner.to_string(),
                None => {
                    return Some(malformed(
                        &self.name,
                        line,
                        None,
                        "a %KEYGEN line must be %KEYGEN: \"<string>\"",
                    ))
                }
            }
        } else {
            text.to_string()
        };
        if keygen.is_empty() {
            return Some(malformed(&self.name, line, None, "empty KEYGEN string"));
        }
        Some(Entry::Request(Request {
            source: self.name.clone(),
            line,
            keygen,
            row: None,
        }))
    }

    /// Parse the CSV record starting in `self.buf` (reading more lines while a quoted field
    /// is open). `Ok(None)` for a blank line.
    fn csv_record(&mut self, line: u64) -> Result<Option<Entry>, SourceError> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        loop {
            match parse_csv_record(&self.buf) {
                CsvParse::Fields(fields) => {
                    return Ok(Some(self.csv_row(line, fields)));
                }
                CsvParse::Bad(why) => return Ok(Some(malformed(&self.name, line, None, why))),
                CsvParse::OpenQuote => {
                    // The record continues on the next line.
                    self.buf.push(b'\n');
                    match self.read_line(true).map_err(SourceError::Io)? {
                        LineRead::Eof => {
                            self.done = true;
                            return Ok(Some(malformed(
                                &self.name,
                                line,
                                None,
                                "unterminated quoted field at end of file",
                            )));
                        }
                        LineRead::TooLong => {
                            return Ok(Some(malformed(
                                &self.name,
                                line,
                                None,
                                format!("record longer than {MAX_LINE} bytes"),
                            )))
                        }
                        LineRead::Line => {}
                    }
                }
            }
        }
    }

    fn csv_row(&self, line: u64, fields: Vec<Vec<u8>>) -> Entry {
        // A malformed row names its device only by a column that is a UUID (written in the
        // canonical form): nothing unchecked goes into rejects.csv or ca.db.
        let uuid_guess = fields
            .first()
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(crate::util::parse_uuid)
            .map(|u| crate::util::uuid_string(&u));
        let mut strings = Vec::with_capacity(fields.len());
        for f in fields {
            match String::from_utf8(f) {
                Ok(s) => strings.push(s),
                Err(_) => return malformed(&self.name, line, uuid_guess, "row is not UTF-8"),
            }
        }
        let n = strings.len();
        let Some(row) = RequestRow::from_fields(strings) else {
            return malformed(
                &self.name,
                line,
                uuid_guess,
                format!("expected {COLUMNS} columns ({HEADER}), found {n}"),
            );
        };
        let keygen = row.keygen.trim().to_string();
        if keygen.is_empty() {
            return malformed(&self.name, line, uuid_guess, "empty keygen column");
        }
        // Columns not of their shape are emptied here and flagged (`metadata-mismatch` once
        // the KEYGEN checks pass): no unchecked cell travels further.
        Entry::Request(Request {
            source: self.name.clone(),
            line,
            keygen,
            row: Some(row.neutralised()),
        })
    }
}

pub(super) enum CsvParse {
    Fields(Vec<Vec<u8>>),
    OpenQuote,
    Bad(&'static str),
}

/// RFC 4180 record parser over bytes (quotes doubled inside quoted fields).
///
/// Hand-written on purpose, unlike the writer ([`super::format_row`], the `csv` crate): a
/// requests row that is not well-formed CSV is a `malformed-input` reject naming its line,
/// while the `csv` crate reads `a"b` and `"a"b` as fields without an error, and a record is
/// cut at [`MAX_LINE`] bytes as it streams in (the test `csv_crate_accepts_what_we_reject`).
pub(super) fn parse_csv_record(b: &[u8]) -> CsvParse {
    let mut fields = Vec::with_capacity(COLUMNS);
    let mut cur = Vec::new();
    let mut i = 0;
    let mut quoted_field = false;
    let mut in_quotes = false;
    while let Some(&c) = b.get(i) {
        if in_quotes {
            if c == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    cur.push(b'"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == b',' {
            fields.push(std::mem::take(&mut cur));
            quoted_field = false;
        } else if c == b'"' {
            if !cur.is_empty() || quoted_field {
                return CsvParse::Bad("stray quote inside a CSV field");
            }
            in_quotes = true;
            quoted_field = true;
        } else {
            if quoted_field {
                return CsvParse::Bad("text after a closing quote in a CSV field");
            }
            cur.push(c);
        }
        i += 1;
    }
    if in_quotes {
        return CsvParse::OpenQuote;
    }
    fields.push(cur);
    CsvParse::Fields(fields)
}
