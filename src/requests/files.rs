//! The file-system side of the requests file: inputs opened one at a time for the parser,
//! the sniff of a path, and the appending writer `bench export` uses (flush + fsync per row).

use super::*;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

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
