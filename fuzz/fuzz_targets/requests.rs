//! The requests reader (`requests::SourceReader`) over input delivered in fuzzer-chosen chunk
//! sizes (a `Read` that returns short reads). Properties: never panics or loops; lines only
//! go forward; every KEYGEN handed on is at most `MAX_LINE` bytes; the finished digest is the
//! SHA-256 of every input byte; chunking never changes the entries; a CSV row written by
//! `format_row` reads back as the same row.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nrfca::requests::{self, Entry, SourceReader};

/// Returns at most `sizes[i]` bytes per read (cycling), never 0 before the end.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    i: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = match self.sizes.get(self.i % self.sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1) * 7,
            None => usize::MAX,
        };
        self.i += 1;
        let n = want.min(buf.len()).min(self.data.len());
        let (a, b) = self.data.split_at(n);
        buf[..n].copy_from_slice(a);
        self.data = b;
        Ok(n)
    }
}

fn run(data: &[u8], sizes: &[u8]) -> (Vec<Entry>, bool) {
    let mut r = SourceReader::new("fuzz", Chunked { data, sizes, i: 0 });
    let mut out = Vec::new();
    let mut last = 0u64;
    let mut bad_header = false;
    // Every entry consumes at least one line: more entries than bytes + 1 is a loop.
    for _ in 0..=data.len() + 1 {
        match r.next_entry() {
            Ok(Some(e)) => {
                let line = match &e {
                    Entry::Request(q) => {
                        assert!(q.keygen.len() <= requests::MAX_LINE);
                        assert!(!q.keygen.is_empty());
                        q.line
                    }
                    Entry::Malformed(m) => m.line,
                };
                assert!(
                    line > last,
                    "line numbers go backwards: {line} after {last}"
                );
                last = line;
                out.push(e);
            }
            Ok(None) => break,
            Err(requests::SourceError::BadHeader(h)) => {
                assert!(h.chars().count() <= 200);
                bad_header = true;
                break;
            }
            Err(e) => panic!("in-memory read failed: {e}"),
        }
    }
    let d = r.finish().expect("finish");
    assert_eq!(d.bytes, data.len() as u64);
    assert_eq!(d.sha256, nrfca::internal::crypto::sha256(data));
    (out, bad_header)
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many chunk-size bytes follow.
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, data) = rest.split_at(n);
    let whole = run(data, &[]);
    let chunked = run(data, sizes);
    assert_eq!(whole, chunked, "chunking changed the entries");

    // Round trip: each request row re-formatted reads back identically.
    for e in &whole.0 {
        if let Entry::Request(q) = e {
            if let Some(row) = &q.row {
                let mut file = String::from(requests::HEADER);
                file.push('\n');
                file.push_str(&requests::format_row(row));
                let (again, _) = run(file.as_bytes(), &[]);
                match again.as_slice() {
                    [Entry::Request(q2)] => {
                        let r2 = q2.row.as_ref().expect("row");
                        // A CR right before a line break inside a quoted field is read as
                        // the line end's CR (CRLF files); compare without those.
                        let norm = |s: &str| s.replace("\r\n", "\n");
                        assert_eq!(norm(&r2.keygen), norm(&row.keygen));
                        assert_eq!(norm(&r2.device_uuid), norm(&row.device_uuid));
                        assert_eq!(norm(&r2.exported_at), norm(&row.exported_at));
                    }
                    other => {
                        // Only an over-long re-encoding may differ.
                        assert!(file.len() > requests::MAX_LINE, "re-read gave {other:?}");
                    }
                }
            }
        }
    }
});
