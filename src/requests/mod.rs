//! The requests file (bench → signer): a streaming reader over several files and the writer
//! `bench export` appends to (flush + fsync per row).
//!
//! Two formats (SPEC §2): CSV with the exact header [`HEADER`], or plain text with one KEYGEN
//! string per line, bare or as the whole `%KEYGEN: "..."` line (blank lines and `#` lines are
//! skipped). The reader never holds a whole file: it reads one line (at most [`MAX_LINE`]
//! bytes are kept) at a time, hashes every byte it reads (the SHA-256 goes in the bundle
//! manifest) and turns a bad line into a `malformed-input` entry, then goes on.
//!
//! Layout: the row and entry types here; `parse` (the streaming parser over any `Read`,
//! no I/O of its own), `sniff` (is this a requests file at all?), `files` (the only
//! part that touches the file system: opening inputs, the appending writer).

mod files;
mod parse;
mod sniff;

pub use files::{sniff, source_name, RequestReader, RequestWriter};
pub use parse::{SourceError, SourceReader};
pub use sniff::{sniff_reader, NotRequests};

use std::fmt;
use std::io;
use std::path::PathBuf;

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

/// Could not read the inputs at all (exit 2, not a reject). Display is this layer's sentence;
/// an OS error is the `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    /// Opening a file failed.
    #[error("cannot open requests file {}; check the path", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading failed mid-file.
    #[error("cannot read requests file {}; copy it again from the bench", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A CSV file whose first line looks like a header but is not [`HEADER`].
    #[error("{} has the CSV header {found:?}, expected {HEADER:?}; export it again with `nrfca bench export` or give one KEYGEN string per line", path.display())]
    BadHeader {
        /// The path.
        path: PathBuf,
        /// What the first line was (truncated).
        found: String,
    },
    /// The file is not a requests file at all (checked by [`sniff`] before the CA key is
    /// unlocked): binary, not UTF-8, empty, only a header, no line that could be a KEYGEN
    /// string, or a known other file (PEM, SQLite, onboarding CSV, …). `looks` is a typed
    /// verdict, not a cause: the sentence says it in the middle ("… is not a requests file:
    /// it looks like …; nothing was signed …"), so it is no `source()`.
    #[error(
        "{} is not a requests file: {looks}; nothing was signed. Give the requests.csv \
         written by `nrfca bench export`, or a text file with one KEYGEN string per line",
        crate::util::term_escape(&path.display().to_string())
    )]
    NotRequests {
        /// The path.
        path: PathBuf,
        /// What it looks like.
        looks: NotRequests,
    },
    /// Writing a requests file failed.
    #[error("cannot write requests file {}; check the disk and permissions", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
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

/// One requests-CSV line (with its LF) for `row`, written by the `csv` crate the way
/// Python's `csv.writer` does (a field is quoted iff it holds `,` `"` CR or LF; quotes
/// doubled; LF terminator) — the test `format_row_bytes` pins the bytes.
pub fn format_row(row: &RequestRow) -> String {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(row.keygen.len() + 200));
    // Writing to a Vec cannot fail, and every field is a `&str`, so the bytes are UTF-8.
    let _ = w.write_record(row.fields());
    match w.into_inner() {
        Ok(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests;
