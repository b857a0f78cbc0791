//! The requests file (bench → signer): a streaming reader over several files and the writer
//! `bench export` appends to (flush + fsync per row).
//!
//! Two formats (SPEC §2): CSV with the exact header [`HEADER`], or plain text with one KEYGEN
//! string per line, bare or as the whole `%KEYGEN: "..."` line (blank lines and `#` lines are
//! skipped). The reader never holds a whole file: it reads one line (at most [`MAX_LINE`]
//! bytes are kept) at a time, hashes every byte it reads (the SHA-256 goes in the bundle
//! manifest) and turns a bad line into a `malformed-input` entry, then goes on.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::reject::{Reject, RejectCode};

/// The exact CSV header of a requests file.
pub const HEADER: &str = "device_uuid,imei,sec_tag,keygen,modem_fw,model,bench,port,exported_at";

/// Number of CSV columns.
pub const COLUMNS: usize = 9;

/// Longest line (or multi-line CSV record) accepted, in bytes, without the line end.
pub const MAX_LINE: usize = 16 * 1024;

/// One row of a requests CSV, as text (empty = not known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRow {
    /// Device UUID as the bench read it (`AT%XMODEMUUID` / `%DEVICEUUID`).
    pub device_uuid: String,
    /// IMEI (`AT+CGSN`).
    pub imei: String,
    /// The sec_tag the key was generated in (decimal).
    pub sec_tag: String,
    /// The KEYGEN string: exactly the text between the quotes of `%KEYGEN: "..."`.
    pub keygen: String,
    /// Modem firmware (`AT+CGMR`).
    pub modem_fw: String,
    /// Model (`AT+CGMM`).
    pub model: String,
    /// Bench (host) name.
    pub bench: String,
    /// Serial port the device was on.
    pub port: String,
    /// When the row was written, RFC 3339 UTC.
    pub exported_at: String,
}

impl RequestRow {
    fn fields(&self) -> [&str; COLUMNS] {
        [
            &self.device_uuid,
            &self.imei,
            &self.sec_tag,
            &self.keygen,
            &self.modem_fw,
            &self.model,
            &self.bench,
            &self.port,
            &self.exported_at,
        ]
    }

    fn from_fields(mut f: Vec<String>) -> Option<RequestRow> {
        if f.len() != COLUMNS {
            return None;
        }
        let mut it = f.drain(..);
        Some(RequestRow {
            device_uuid: it.next()?,
            imei: it.next()?,
            sec_tag: it.next()?,
            keygen: it.next()?,
            modem_fw: it.next()?,
            model: it.next()?,
            bench: it.next()?,
            port: it.next()?,
            exported_at: it.next()?,
        })
    }

    /// The sec_tag column as a number; `Ok(None)` when empty.
    pub fn sec_tag_value(&self) -> Result<Option<u32>, std::num::ParseIntError> {
        let s = self.sec_tag.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<u32>().map(Some)
    }
}

/// One request read from an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The input it came from (the path as given).
    pub source: String,
    /// 1-based line where the request starts.
    pub line: u64,
    /// The KEYGEN string.
    pub keygen: String,
    /// The CSV row, for CSV inputs.
    pub row: Option<RequestRow>,
}

/// A line or row that is not a request (`malformed-input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The input it came from.
    pub source: String,
    /// 1-based line where the bad record starts.
    pub line: u64,
    /// The row's device_uuid column when it could be read.
    pub device_uuid: Option<String>,
    /// Always code `malformed-input`, with a detail.
    pub reject: Reject,
}

/// What the reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A request to check.
    Request(Request),
    /// A record that is not a request.
    Malformed(Malformed),
}

/// Could not read the inputs at all (exit 2, not a reject).
#[derive(Debug)]
pub enum RequestsError {
    /// Opening a file failed.
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading failed mid-file.
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A CSV file whose first line looks like a header but is not [`HEADER`].
    BadHeader {
        /// The path.
        path: PathBuf,
        /// What the first line was (truncated).
        found: String,
    },
    /// Writing a requests file failed.
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for RequestsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestsError::Open { path, .. } => {
                write!(f, "cannot open requests file {}; check the path", path.display())
            }
            RequestsError::Read { path, .. } => write!(
                f,
                "cannot read requests file {}; copy it again from the bench",
                path.display()
            ),
            RequestsError::BadHeader { path, found } => write!(
                f,
                "{} has the CSV header {found:?}, expected {HEADER:?}; export it again with `nrfca bench export` or give one KEYGEN string per line",
                path.display()
            ),
            RequestsError::Write { path, .. } => write!(
                f,
                "cannot write requests file {}; check the disk and permissions",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RequestsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestsError::Open { source, .. }
            | RequestsError::Read { source, .. }
            | RequestsError::Write { source, .. } => Some(source),
            RequestsError::BadHeader { .. } => None,
        }
    }
}

/// SHA-256 and size of one input, known once it has been read to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDigest {
    /// The path as given.
    pub name: String,
    /// SHA-256 of every byte of the file.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub bytes: u64,
}

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
#[derive(Debug)]
pub enum SourceError {
    /// Reading failed.
    Io(io::Error),
    /// The first line looks like a header but is not [`HEADER`].
    BadHeader(String),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Io(e) => write!(f, "read error: {e}"),
            SourceError::BadHeader(h) => write!(f, "unexpected CSV header {h:?}"),
        }
    }
}

impl std::error::Error for SourceError {}

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
        let uuid_guess = fields
            .first()
            .and_then(|f| std::str::from_utf8(f).ok())
            .filter(|s| crate::util::parse_uuid(s).is_some())
            .map(|s| s.to_string());
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
        let uuid = Some(row.device_uuid.clone()).filter(|s| !s.is_empty());
        if row.sec_tag_value().is_err() {
            return malformed(
                &self.name,
                line,
                uuid,
                format!("sec_tag column {:?} is not a number", row.sec_tag),
            );
        }
        let keygen = row.keygen.trim().to_string();
        if keygen.is_empty() {
            return malformed(&self.name, line, uuid, "empty keygen column");
        }
        Entry::Request(Request {
            source: self.name.clone(),
            line,
            keygen,
            row: Some(row),
        })
    }
}

enum CsvParse {
    Fields(Vec<Vec<u8>>),
    OpenQuote,
    Bad(&'static str),
}

/// RFC 4180 record parser over bytes (quotes doubled inside quoted fields).
fn parse_csv_record(b: &[u8]) -> CsvParse {
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

/// Streams entries from several files, in order, as one batch.
pub struct RequestReader {
    paths: Vec<PathBuf>,
    next_path: usize,
    current: Option<(PathBuf, SourceReader<File>)>,
    digests: Vec<InputDigest>,
    bytes_done: u64,
}

impl fmt::Debug for RequestReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestReader({} inputs done)", self.digests.len())
    }
}

impl RequestReader {
    /// Read `paths` in order. Files are opened one at a time as the reader gets to them.
    pub fn open(paths: &[PathBuf]) -> RequestReader {
        RequestReader {
            paths: paths.to_vec(),
            next_path: 0,
            current: None,
            digests: Vec::new(),
            bytes_done: 0,
        }
    }

    /// Total size of `paths` (for progress), 0 for unreadable ones.
    pub fn total_bytes(paths: &[PathBuf]) -> u64 {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Bytes read so far over all inputs.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_done + self.current.as_ref().map_or(0, |(_, r)| r.bytes_read())
    }

    /// SHA-256 of every input read to the end so far (all of them once `next` returned None).
    pub fn digests(&self) -> &[InputDigest] {
        &self.digests
    }

    /// The next entry over all inputs; `None` when every input is done.
    pub fn next_entry(&mut self) -> Option<Result<Entry, RequestsError>> {
        loop {
            if self.current.is_none() {
                let path = self.paths.get(self.next_path)?.clone();
                self.next_path += 1;
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(source) => return Some(Err(RequestsError::Open { path, source })),
                };
                let name = path.display().to_string();
                self.current = Some((path, SourceReader::new(name, file)));
            }
            let (path, reader) = self.current.as_mut()?;
            match reader.next_entry() {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {
                    let (path, reader) = self.current.take()?;
                    match reader.finish() {
                        Ok(d) => {
                            self.bytes_done += d.bytes;
                            self.digests.push(d);
                        }
                        Err(source) => return Some(Err(RequestsError::Read { path, source })),
                    }
                }
                Err(SourceError::Io(source)) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(RequestsError::Read { path, source }));
                }
                Err(SourceError::BadHeader(found)) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(RequestsError::BadHeader { path, found }));
                }
            }
        }
    }
}

impl Iterator for RequestReader {
    type Item = Result<Entry, RequestsError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry()
    }
}

/// Append one CSV field with minimal quoting (quoted iff it holds `,` `"` CR or LF).
fn push_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        for ch in s.chars() {
            if ch == '"' {
                out.push('"');
            }
            out.push(ch);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// One requests-CSV line (with its LF) for `row`.
pub fn format_row(row: &RequestRow) -> String {
    let mut s = String::with_capacity(row.keygen.len() + 200);
    for (i, f) in row.fields().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_field(&mut s, f);
    }
    s.push('\n');
    s
}

/// Appends rows to a requests CSV: writes the header once when the file is new, then one row
/// per call, flushed and fsync'd before returning (a crash never loses an acknowledged row).
#[derive(Debug)]
pub struct RequestWriter {
    path: PathBuf,
    file: File,
}

impl RequestWriter {
    /// Create `path` with the header, or open an existing requests CSV for appending (its
    /// first line must be [`HEADER`]; a torn last line from a crash is closed with an LF).
    pub fn open(path: &Path) -> Result<RequestWriter, RequestsError> {
        let werr = |source| RequestsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| RequestsError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let len = file.metadata().map_err(werr)?.len();
        if len == 0 {
            file.write_all(format!("{HEADER}\n").as_bytes())
                .map_err(werr)?;
            file.sync_all().map_err(werr)?;
            if let Some(parent) = path.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                if let Ok(d) = File::open(parent) {
                    let _ = d.sync_all();
                }
            }
        } else {
            let mut first = Vec::new();
            file.seek(SeekFrom::Start(0)).map_err(werr)?;
            let mut r = BufReader::new((&file).take(MAX_LINE as u64));
            r.read_until(b'\n', &mut first).map_err(werr)?;
            let text = String::from_utf8_lossy(&first);
            let text = text.trim_start_matches('\u{feff}').trim();
            if text != HEADER {
                return Err(RequestsError::BadHeader {
                    path: path.to_path_buf(),
                    found: text.chars().take(200).collect(),
                });
            }
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1)).map_err(werr)?;
            file.read_exact(&mut last).map_err(werr)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(werr)?;
                file.sync_data().map_err(werr)?;
            }
        }
        Ok(RequestWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one row; returns once it is on disk.
    pub fn append(&mut self, row: &RequestRow) -> Result<(), RequestsError> {
        let line = format_row(row);
        let werr = |source| RequestsError::Write {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(werr)?;
        self.file.flush().map_err(werr)?;
        self.file.sync_data().map_err(werr)?;
        Ok(())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(name: &str, data: &[u8]) -> (Vec<Entry>, Option<String>) {
        let mut r = SourceReader::new(name, data);
        let mut out = Vec::new();
        loop {
            match r.next_entry() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    fn req(e: &Entry) -> &Request {
        match e {
            Entry::Request(r) => r,
            Entry::Malformed(m) => panic!("malformed: {m:?}"),
        }
    }

    fn bad(e: &Entry) -> &Malformed {
        match e {
            Entry::Malformed(m) => m,
            Entry::Request(r) => panic!("request: {r:?}"),
        }
    }

    #[test]
    fn plain_lines_bare_and_at_form() {
        let data =
            b"# comment\n\nAAA.BBB\r\n%KEYGEN: \"CCC.DDD\"\n  \n%KEYGEN: CCC\n\xff\xfe\nlast.one";
        let (e, err) = entries("f.txt", data);
        assert!(err.is_none());
        assert_eq!(e.len(), 5);
        assert_eq!(req(&e[0]).keygen, "AAA.BBB");
        assert_eq!(req(&e[0]).line, 3);
        assert_eq!(req(&e[1]).keygen, "CCC.DDD");
        assert_eq!(req(&e[1]).line, 4);
        assert_eq!(bad(&e[2]).line, 6);
        assert_eq!(bad(&e[3]).line, 7);
        assert!(bad(&e[3]).reject.detail.contains("UTF-8"));
        assert_eq!(req(&e[4]).keygen, "last.one");
        assert_eq!(req(&e[4]).line, 8);
    }

    #[test]
    fn csv_rows_and_errors() {
        let mut data = format!("{HEADER}\r\n");
        data.push_str("u1,351234567890123,16842753,K1.C1,mfw,nRF9160,b,/dev/ttyACM0,2025\n");
        data.push_str("u2,,,K2.C2,\"fw, with comma\",\"quo\"\"te\",\"multi\nline\",p,t\n");
        data.push_str("too,few\n");
        data.push('\n');
        data.push_str("u3,i,notanumber,K3,a,b,c,d,e\n");
        data.push_str("u4,i,1,,a,b,c,d,e\n");
        data.push_str("u5,i,1,K5,a,b\"x,c,d,e\n");
        data.push_str("u6,i,1,K6,a,b,c,d,e");
        let (e, err) = entries("r.csv", data.as_bytes());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(e.len(), 7);
        let r = req(&e[0]);
        assert_eq!((r.line, r.keygen.as_str()), (2, "K1.C1"));
        assert_eq!(r.row.as_ref().unwrap().port, "/dev/ttyACM0");
        let r = req(&e[1]);
        assert_eq!(r.line, 3);
        let row = r.row.as_ref().unwrap();
        assert_eq!(row.modem_fw, "fw, with comma");
        assert_eq!(row.model, "quo\"te");
        assert_eq!(row.bench, "multi\nline");
        assert_eq!(bad(&e[2]).line, 5);
        assert!(bad(&e[2]).reject.detail.contains("found 2"));
        assert_eq!(bad(&e[3]).line, 7);
        assert_eq!(bad(&e[3]).device_uuid.as_deref(), Some("u3"));
        assert_eq!(bad(&e[2]).device_uuid, None);
        assert_eq!(bad(&e[4]).line, 8);
        assert_eq!(bad(&e[5]).line, 9);
        assert_eq!(req(&e[6]).line, 10);
    }

    #[test]
    fn bad_header_is_fatal_and_bom_is_ok() {
        let (_, err) = entries("r.csv", b"device_uuid,imei\nx\n");
        assert!(err.unwrap().contains("header"));
        let data = format!("\u{feff}{HEADER}\nu,i,1,K,a,b,c,d,e\n");
        let (e, err) = entries("r.csv", data.as_bytes());
        assert!(err.is_none());
        assert_eq!(req(&e[0]).line, 2);
    }

    #[test]
    fn overlong_lines_are_rejected_and_reading_goes_on() {
        let mut data = vec![b'A'; MAX_LINE + 1];
        data.extend_from_slice(b"\nok.line\n");
        data.extend(std::iter::repeat(b'B').take(MAX_LINE));
        data.extend_from_slice(b"\n");
        let (e, _) = entries("f", &data);
        assert_eq!(e.len(), 3);
        assert_eq!(bad(&e[0]).line, 1);
        assert_eq!(req(&e[1]).line, 2);
        assert_eq!(req(&e[2]).keygen.len(), MAX_LINE);
        // An unterminated quote in CSV is bounded too.
        let mut data = format!("{HEADER}\n\"u").into_bytes();
        for _ in 0..3000 {
            data.extend_from_slice(b"0123456789\n");
        }
        let (e, _) = entries("r.csv", &data);
        assert!(matches!(e[0], Entry::Malformed(_)));
        assert_eq!(bad(&e[0]).line, 2);
    }

    #[test]
    fn digest_covers_whole_input() {
        let data = b"a.b\n# x\n";
        let mut r = SourceReader::new("f", &data[..]);
        while r.next_entry().unwrap().is_some() {}
        let d = r.finish().unwrap();
        assert_eq!(d.sha256, crate::crypto::sha256(data));
        assert_eq!(d.bytes, data.len() as u64);
    }

    #[test]
    fn writer_round_trips_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("requests.csv");
        let row = RequestRow {
            device_uuid: "u".into(),
            imei: "1".into(),
            sec_tag: "16842753".into(),
            keygen: "K.C".into(),
            modem_fw: "mfw,1".into(),
            model: "m\"x".into(),
            bench: "b\nc".into(),
            port: "p".into(),
            exported_at: "t".into(),
        };
        RequestWriter::open(&p).unwrap().append(&row).unwrap();
        // Simulate a torn row, then append again.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        let mut w = RequestWriter::open(&p).unwrap();
        w.append(&row).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches(HEADER).count(), 1);
        let mut rr = RequestReader::open(std::slice::from_ref(&p));
        let all: Vec<Entry> = rr.by_ref().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(req(&all[0]).row.as_ref().unwrap(), &row);
        assert!(matches!(all[1], Entry::Malformed(_)));
        assert_eq!(req(&all[2]).row.as_ref().unwrap(), &row);
        assert_eq!(rr.digests().len(), 1);
        // A file that is not a requests CSV is refused.
        let other = dir.path().join("x.csv");
        std::fs::write(&other, "hello\n").unwrap();
        assert!(matches!(
            RequestWriter::open(&other),
            Err(RequestsError::BadHeader { .. })
        ));
    }

    #[test]
    fn missing_file_is_an_error() {
        let mut r = RequestReader::open(&[PathBuf::from("/nonexistent/x")]);
        assert!(matches!(r.next(), Some(Err(RequestsError::Open { .. }))));
        assert!(r.next().is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_chunking_does_not_matter(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000), csv in proptest::bool::ANY) {
            let mut input = Vec::new();
            if csv { input.extend_from_slice(HEADER.as_bytes()); input.push(b'\n'); }
            input.extend_from_slice(&data);
            let (a, ea) = entries("x", &input);
            // Same bytes through a reader that returns one byte at a time.
            struct OneByte<'a>(&'a [u8]);
            impl Read for OneByte<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    match (self.0.split_first(), buf.first_mut()) {
                        (Some((b, rest)), Some(slot)) => { *slot = *b; self.0 = rest; Ok(1) }
                        _ => Ok(0),
                    }
                }
            }
            let mut r = SourceReader::new("x", OneByte(&input));
            let mut b = Vec::new();
            let mut eb = None;
            loop { match r.next_entry() { Ok(Some(e)) => b.push(e), Ok(None) => break, Err(e) => { eb = Some(e.to_string()); break } } }
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(ea, eb);
        }
    }
}
