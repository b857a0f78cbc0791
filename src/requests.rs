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

/// Longest `modem_fw`, `model`, `bench` or `port` value (SPEC §3).
pub const MAX_TEXT_COLUMN: usize = 64;

/// Column names, in file order.
const NAMES: [&str; COLUMNS] = [
    "device_uuid",
    "imei",
    "sec_tag",
    "keygen",
    "modem_fw",
    "model",
    "bench",
    "port",
    "exported_at",
];

const KEYGEN_COLUMN: usize = 3;

/// Whether a cell would be taken for a formula by a spreadsheet (or starts with a tab or CR,
/// which some spreadsheets strip before looking): first character `=`, `+`, `-`, `@`, TAB or
/// CR (SPEC §3).
pub fn starts_like_formula(s: &str) -> bool {
    s.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Whether `v` is a plain text cell of SPEC §3: printable ASCII of at most 64 characters that
/// does not start like a spreadsheet formula (the shape of `modem_fw`, `model`, `bench`,
/// `port`, and of `sign`'s onboarding options).
pub fn is_plain_text_cell(v: &str) -> bool {
    v.len() <= MAX_TEXT_COLUMN
        && v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !starts_like_formula(v)
}

/// A value for a detail message: at most 64 characters (Rust `{:?}` escaping is applied by
/// the caller).
fn quote_trunc(s: &str) -> String {
    let mut t: String = s.chars().take(64).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// Why column `i` holding `v` is not of its shape, or None. Empty is always fine.
fn column_shape_error(i: usize, v: &str) -> Option<&'static str> {
    if v.is_empty() {
        return None;
    }
    if starts_like_formula(v) {
        return Some("starts with a spreadsheet formula character (= + - @ tab CR)");
    }
    match i {
        0 => (crate::util::parse_uuid(v).is_none() || v.trim() != v).then_some("is not a UUID"),
        1 => (!crate::util::is_imei_luhn(v))
            .then_some("is not an IMEI (15 digits with a valid Luhn check digit)"),
        2 => {
            (!(v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u32>().is_ok()))
                .then_some("is not a sec_tag (a decimal integer up to 4294967295)")
        }
        8 => (v.len() > MAX_TEXT_COLUMN
            || time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .is_err())
        .then_some("is not an RFC 3339 time (like 2025-06-01T12:00:00Z)"),
        _ => (!is_plain_text_cell(v)).then_some("is not printable ASCII of at most 64 characters"),
    }
}

/// One row of a requests CSV, as text (empty = not known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRow {
    /// Device UUID as the bench read it (`AT%DEVICEUUID` or the attestation token; not `AT%XMODEMUUID`, the firmware build UUID).
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
    /// Set by the reader when a column is not of its SPEC §3 shape ([`RequestRow::check_shapes`]):
    /// the `metadata-mismatch` reject the row earns, whose detail names the first such column
    /// and quotes its value with escapes. The reader empties every such cell, so nothing
    /// unchecked travels further; the batch policy reports this reject once the KEYGEN checks
    /// pass. Not a column: never written. (Boxed: rows travel by value through `sign`.)
    pub bad_shape: Option<Box<Reject>>,
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
            bad_shape: None,
        })
    }

    /// Every column against its SPEC §3 shape (`metadata-mismatch`), in column order:
    /// `device_uuid` a UUID, `imei` 15 digits with a valid Luhn check digit, `sec_tag` a
    /// decimal integer (u32), `modem_fw`/`model`/`bench`/`port` printable ASCII of at most
    /// [`MAX_TEXT_COLUMN`] characters, `exported_at` an RFC 3339 time; each may be empty, and
    /// none may start with a spreadsheet formula character ([`starts_like_formula`]). The
    /// `keygen` column is judged by the KEYGEN checks and never written anywhere. `Err` holds
    /// the problems as (column index, detail) — details quote the value with Rust escapes
    /// and start with the column name, never with a formula character.
    pub fn check_shapes(&self) -> Result<(), Vec<(usize, String)>> {
        let mut bad = Vec::new();
        for (i, (name, value)) in NAMES.iter().zip(self.fields()).enumerate() {
            if i == KEYGEN_COLUMN {
                continue;
            }
            if let Some(why) = column_shape_error(i, value) {
                bad.push((i, format!("{name} column {:?} {why}", quote_trunc(value))));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// The row with every cell that fails its shape emptied and [`RequestRow::bad_shape`]
    /// set to the first problem (what the reader yields).
    pub fn neutralised(mut self) -> RequestRow {
        if let Err(bad) = self.check_shapes() {
            for (i, _) in &bad {
                if let Some(cell) = self.field_mut(*i) {
                    cell.clear();
                }
            }
            let n = bad.len();
            let mut why = bad.into_iter().next().map(|(_, d)| d).unwrap_or_default();
            if n > 1 {
                why.push_str(&format!(
                    " (and {} more column(s) not of their shape)",
                    n - 1
                ));
            }
            self.bad_shape = Some(Box::new(Reject::new(RejectCode::MetadataMismatch, why)));
        }
        self
    }

    fn field_mut(&mut self, i: usize) -> Option<&mut String> {
        Some(match i {
            0 => &mut self.device_uuid,
            1 => &mut self.imei,
            2 => &mut self.sec_tag,
            3 => &mut self.keygen,
            4 => &mut self.modem_fw,
            5 => &mut self.model,
            6 => &mut self.bench,
            7 => &mut self.port,
            8 => &mut self.exported_at,
            _ => return None,
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
    /// The file is not a requests file at all (checked by [`sniff`] before the CA key is
    /// unlocked): binary, not UTF-8, empty, only a header, no line that could be a KEYGEN
    /// string, or a known other file (PEM, SQLite, onboarding CSV, …).
    NotRequests {
        /// The path.
        path: PathBuf,
        /// What it looks like.
        looks: NotRequests,
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
            RequestsError::NotRequests { path, looks } => write!(
                f,
                "{} is not a requests file: {looks}; nothing was signed. Give the requests.csv \
                 written by `nrfca bench export`, or a text file with one KEYGEN string per line",
                crate::util::term_escape(&path.display().to_string())
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
            RequestsError::BadHeader { .. } | RequestsError::NotRequests { .. } => None,
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

/// How an input is named in entries (`source` in rejects.csv, ca.db and the manifest): the
/// path as given, with control characters escaped ([`crate::util::term_escape`]) and `./`
/// put in front of a relative path that would start with a spreadsheet formula character.
pub fn source_name(path: &Path) -> String {
    let shown = path.display().to_string();
    let escaped = crate::util::term_escape(&shown).into_owned();
    if starts_like_formula(&escaped) {
        format!("./{escaped}")
    } else {
        escaped
    }
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
                let name = source_name(&path);
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

// ---------------------------------------------------------------------------------------
// sniffing: is this a requests file at all? (before the CA key is unlocked)

/// What a file given as requests looks like when it is not a requests file ([`sniff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRequests {
    /// No bytes, or only blank and `#` lines.
    Empty,
    /// The requests CSV header and no row.
    HeaderOnly,
    /// NUL bytes: a binary file.
    Binary,
    /// Bytes that are not UTF-8 text, and no line that could be a KEYGEN string.
    NotUtf8,
    /// An SQLite database (e.g. `ca.db`).
    Sqlite,
    /// An executable program (ELF).
    Executable,
    /// A compressed file or archive (gzip, zip, xz, zstd).
    Archive,
    /// PEM (a certificate, key or CSR); the label.
    Pem(String),
    /// JSON or JSON lines (a bundle manifest, an exported audit log).
    Json,
    /// nRF Cloud onboarding CSV (a bundle's `onboard.csv`).
    OnboardCsv,
    /// A bundle's `certs.csv`.
    CertsCsv,
    /// A bundle's `rejects.csv`.
    RejectsCsv,
    /// A CSV with another header (its first line, truncated), e.g. an exported audit log, an
    /// `--expect` list, or a requests file from another tool.
    OtherCsv(String),
    /// Text, but no line that could be a KEYGEN string (its first line, truncated).
    NoKeygen(String),
}

impl fmt::Display for NotRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotRequests::Empty => f.write_str("it is empty (no request in it)"),
            NotRequests::HeaderOnly => f.write_str("it holds the CSV header and no request"),
            NotRequests::Binary => f.write_str("it looks like a binary file (NUL bytes)"),
            NotRequests::NotUtf8 => f.write_str("it is not UTF-8 text"),
            NotRequests::Sqlite => f.write_str("it looks like an SQLite database (such as ca.db)"),
            NotRequests::Executable => f.write_str("it looks like an executable program (ELF)"),
            NotRequests::Archive => f.write_str("it looks like a compressed file or an archive"),
            NotRequests::Pem(label) => write!(
                f,
                "it looks like PEM ({label:?}: a certificate, key or CSR, such as ca.pem)"
            ),
            NotRequests::Json => f.write_str(
                "it looks like JSON (a bundle's manifest.json or an exported audit log)",
            ),
            NotRequests::OnboardCsv => {
                f.write_str("it looks like an nRF Cloud onboarding CSV (a bundle's onboard.csv)")
            }
            NotRequests::CertsCsv => f.write_str("it looks like a bundle's certs.csv"),
            NotRequests::RejectsCsv => f.write_str("it looks like a bundle's rejects.csv"),
            NotRequests::OtherCsv(h) => write!(
                f,
                "it looks like a CSV with the header {h:?}, not the requests header {HEADER:?}"
            ),
            NotRequests::NoKeygen(first) => write!(
                f,
                "no line in it could be a KEYGEN string (it starts with {first:?})"
            ),
        }
    }
}

/// Whether `t` (one line, trimmed, `%KEYGEN: "..."` unwrapped) could be a KEYGEN string or
/// a damaged one worth a reject: at least 16 characters of the base64url alphabet (and `.`,
/// `=`), not only hex digits and hyphens (a UUID, a digest, an IMEI).
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

/// [`sniff_reader`] on the file at `path`: refuse (with what it looks like) a file that is
/// not a requests file, so `sign` stops before the CA key is unlocked and nothing is
/// committed. Reads until the first line that could be a KEYGEN string.
pub fn sniff(path: &Path) -> Result<(), RequestsError> {
    let file = File::open(path).map_err(|source| RequestsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match sniff_reader(file) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(looks)) => Err(RequestsError::NotRequests {
            path: path.to_path_buf(),
            looks,
        }),
        Err(source) => Err(RequestsError::Read {
            path: path.to_path_buf(),
            source,
        }),
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

    const U1: &str = "50503041-3539-47eb-807b-102dbb423b9a";

    #[test]
    fn csv_rows_and_errors() {
        let mut data = format!("{HEADER}\r\n");
        data.push_str(&format!(
            "{U1},490154203237518,16842753,K1.C1,mfw,nRF9160,b,/dev/ttyACM0,2025-06-01T10:00:00Z\n"
        ));
        data.push_str(&format!(
            "{},,,K2.C2,\"fw, with comma\",\"quo\"\"te\",\"multi\nline\",p,\n",
            U1.to_uppercase()
        ));
        data.push_str("too,few\n");
        data.push('\n');
        data.push_str(&format!("{U1},,notanumber,K3,a,b,c,d,\n"));
        data.push_str(&format!("{},i,1,,a,b,c,d,e\n", U1.to_uppercase()));
        data.push_str("u5,i,1,K5,a,b\"x,c,d,e\n");
        data.push_str("u6,i,1,K6,a,b,c,d,e");
        let (e, err) = entries("r.csv", data.as_bytes());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(e.len(), 7);
        let r = req(&e[0]);
        assert_eq!((r.line, r.keygen.as_str()), (2, "K1.C1"));
        let row = r.row.as_ref().unwrap();
        assert_eq!(row.port, "/dev/ttyACM0");
        assert_eq!(row.bad_shape, None);
        let r = req(&e[1]);
        assert_eq!(r.line, 3);
        let row = r.row.as_ref().unwrap();
        assert_eq!(row.modem_fw, "fw, with comma");
        assert_eq!(row.model, "quo\"te");
        // An embedded newline is not printable ASCII: the cell is emptied and flagged.
        assert_eq!(row.bench, "");
        assert_eq!(
            row.bad_shape.as_ref().map(|r| r.detail.as_str()),
            Some("bench column \"multi\\nline\" is not printable ASCII of at most 64 characters")
        );
        assert_eq!(bad(&e[2]).line, 5);
        assert!(bad(&e[2]).reject.detail.contains("found 2"));
        assert_eq!(bad(&e[2]).device_uuid, None);
        // A sec_tag that is not a number is a shape (metadata-mismatch), not malformed-input.
        let r = req(&e[3]);
        assert_eq!(r.line, 7);
        let row = r.row.as_ref().unwrap();
        assert_eq!(row.sec_tag, "");
        let flag = row.bad_shape.as_ref().unwrap();
        assert_eq!(flag.code, RejectCode::MetadataMismatch);
        assert!(flag.detail.starts_with("sec_tag column \"notanumber\""));
        // A malformed row names its device by the canonical UUID only.
        assert_eq!(bad(&e[4]).line, 8);
        assert_eq!(bad(&e[4]).device_uuid.as_deref(), Some(U1));
        assert_eq!(bad(&e[5]).line, 9);
        assert_eq!(bad(&e[5]).device_uuid, None);
        let r = req(&e[6]);
        assert_eq!(r.line, 10);
        assert!(r.row.as_ref().unwrap().bad_shape.is_some());
    }

    #[test]
    fn shapes_of_spec_section_3() {
        let good = RequestRow {
            device_uuid: U1.into(),
            imei: "490154203237518".into(),
            sec_tag: "16842753".into(),
            keygen: "K.C".into(),
            modem_fw: "mfw_nrf9160_1.3.7".into(),
            model: "nRF9160-SICA".into(),
            bench: "bench one, \"east\"".into(),
            port: "/dev/ttyACM0".into(),
            exported_at: "2025-06-01T10:00:00Z".into(),
            bad_shape: None,
        };
        assert_eq!(good.check_shapes(), Ok(()));
        assert_eq!(good.clone().neutralised(), good);
        assert_eq!(RequestRow::default().check_shapes(), Ok(()));
        type Set = fn(&mut RequestRow, &str);
        let cases: &[(Set, &str)] = &[
            (|r, v| r.device_uuid = v.into(), "not-a-uuid"),
            (
                |r, v| r.device_uuid = v.into(),
                " 50503041-3539-47eb-807b-102dbb423b9a",
            ),
            (|r, v| r.imei = v.into(), "490154203237519"),
            (|r, v| r.imei = v.into(), "49015420323751"),
            (|r, v| r.sec_tag = v.into(), "+16842753"),
            (|r, v| r.sec_tag = v.into(), "-1"),
            (|r, v| r.sec_tag = v.into(), "4294967296"),
            (
                |r, v| r.modem_fw = v.into(),
                "=HYPERLINK(\"http://x\",\"fw\")",
            ),
            (|r, v| r.model = v.into(), "@SUM(1+1)*cmd|' /C calc'!A0"),
            (|r, v| r.bench = v.into(), "+1"),
            (|r, v| r.port = v.into(), "-2+3"),
            (|r, v| r.port = v.into(), "\t=1"),
            (|r, v| r.port = v.into(), "\r=1"),
            (|r, v| r.model = v.into(), "a\x1b]0;owned\x07"),
            (|r, v| r.model = v.into(), "caf\u{e9}"),
            (|r, v| r.bench = v.into(), "line\nbreak"),
            (|r, v| r.bench = v.into(), "\u{202e}gpj.exe"),
            (|r, v| r.port = v.into(), "x"),
            (|r, v| r.exported_at = v.into(), "yesterday"),
            (|r, v| r.exported_at = v.into(), "=NOW()"),
        ];
        for (set, value) in cases {
            let mut row = good.clone();
            set(&mut row, value);
            if *value == "x" {
                // 65 characters: one too many.
                row.port = "x".repeat(MAX_TEXT_COLUMN + 1);
            }
            let bad = row.check_shapes().expect_err(value);
            assert_eq!(bad.len(), 1, "{value:?}");
            let n = row.clone().neutralised();
            assert!(n.check_shapes().is_ok());
            let why = n.bad_shape.unwrap().detail;
            assert!(
                !starts_like_formula(&why) && !why.chars().any(char::is_control),
                "{why}"
            );
        }
        let mut row = good.clone();
        row.port = "x".repeat(MAX_TEXT_COLUMN);
        assert!(row.check_shapes().is_ok());
        assert!(source_name(Path::new("=cmd.csv")) == "./=cmd.csv");
        assert_eq!(source_name(Path::new("a\x1bb.csv")), "a\\x1bb.csv");
        assert_eq!(
            source_name(Path::new("/media/usb/r.csv")),
            "/media/usb/r.csv"
        );
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
            device_uuid: U1.into(),
            imei: "490154203237518".into(),
            sec_tag: "16842753".into(),
            keygen: "K.C".into(),
            modem_fw: "mfw,1".into(),
            model: "m\"x".into(),
            bench: "b c".into(),
            port: "p".into(),
            exported_at: "2025-06-01T10:00:00Z".into(),
            bad_shape: None,
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

    fn looks(data: &[u8]) -> Result<(), NotRequests> {
        sniff_reader(data).unwrap()
    }

    #[test]
    fn sniff_tells_requests_from_other_files() {
        let kg = "MIIBCzCBrwIBADAvMS0wKwYDVQQDDCQ1MDUw.0oRDoQEmoQRBIVhP2dn3hQlQUFAw";
        // Requests: plain lines (bare, %KEYGEN form, after comments), CSV with a row.
        assert_eq!(looks(format!("{kg}\n").as_bytes()), Ok(()));
        assert_eq!(
            looks(format!("# x\n\n%KEYGEN: \"{kg}\"\r\n").as_bytes()),
            Ok(())
        );
        assert_eq!(
            looks(format!("\u{feff}{HEADER}\n{U1},,,{kg},,,,,\n").as_bytes()),
            Ok(())
        );
        // A damaged string is still worth a reject (missing-attestation etc.), and a junk
        // first line does not hide a request further down.
        assert_eq!(looks(b"# pasted\nthis-is-not-a-keygen-string\n"), Ok(()));
        assert_eq!(looks(format!("hello, world\n{kg}\n").as_bytes()), Ok(()));
        // Not requests.
        assert_eq!(looks(b""), Err(NotRequests::Empty));
        assert_eq!(looks(b"\n# only a comment\n  \n"), Err(NotRequests::Empty));
        assert_eq!(
            looks(format!("{HEADER}\n").as_bytes()),
            Err(NotRequests::HeaderOnly)
        );
        assert_eq!(
            looks(format!("{HEADER}\r\n\r\n").as_bytes()),
            Err(NotRequests::HeaderOnly)
        );
        assert_eq!(
            looks(b"SQLite format 3\0\x10\x00"),
            Err(NotRequests::Sqlite)
        );
        assert_eq!(looks(b"\x7fELF\x02\x01\x01"), Err(NotRequests::Executable));
        assert_eq!(looks(b"\x1f\x8b\x08\x00"), Err(NotRequests::Archive));
        assert_eq!(looks(b"abc\0def\n"), Err(NotRequests::Binary));
        assert_eq!(looks(b"\xff\xfe junk\n"), Err(NotRequests::NotUtf8));
        assert_eq!(
            looks(
                b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\n-----END CERTIFICATE-----\n"
            ),
            Err(NotRequests::Pem("CERTIFICATE".into()))
        );
        assert_eq!(looks(b"{\"batch\":\"x\"}\n"), Err(NotRequests::Json));
        assert_eq!(
            looks(format!("{U1},,,APP|MODEM,\"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\"\n").as_bytes()),
            Err(NotRequests::OnboardCsv)
        );
        assert_eq!(
            looks(b"device_uuid,imei,sec_tag,serial,not_before,not_after,sha256,certificate\n"),
            Err(NotRequests::CertsCsv)
        );
        assert_eq!(
            looks(b"source,line,device_uuid,code,detail\nx.csv,2,,bad-base64,y\n"),
            Err(NotRequests::RejectsCsv)
        );
        assert!(matches!(
            looks(b"device_uuid,imei\nx,y\n"),
            Err(NotRequests::OtherCsv(_))
        ));
        assert!(matches!(
            looks(b"seq,time,operator,event\n1,2,3,4\n"),
            Err(NotRequests::OtherCsv(_))
        ));
        // UUIDs, IMEIs, hex digests and prose are not KEYGEN strings.
        assert!(matches!(
            looks(format!("{U1}\n490154203237518\n{}\nhello world\n", "ab".repeat(32)).as_bytes()),
            Err(NotRequests::NoKeygen(_))
        ));
        assert!(matches!(
            looks(format!("{HEADER}\n{U1},,,,,,,,\n").as_bytes()),
            Err(NotRequests::NoKeygen(_))
        ));
        // The message names the file and what it looks like, escaped.
        let e = RequestsError::NotRequests {
            path: PathBuf::from("ca\x1b]0;x\x07.pem"),
            looks: NotRequests::Pem("CERTIFICATE".into()),
        }
        .to_string();
        assert!(
            e.starts_with("ca\\x1b]0;x\\x07.pem is not a requests file: it looks like PEM"),
            "{e}"
        );
        assert!(!e.chars().any(char::is_control));
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
