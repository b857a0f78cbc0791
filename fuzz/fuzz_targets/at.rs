//! The bench's AT response parser (`bench::at::Parser`) and its line helpers.
//!
//! Input: first line = the command in flight (given to `begin`), the rest = bytes from the
//! device. Properties: never panics; events are the same however the bytes are chunked; no
//! event line is longer than `MAX_LINE`; after any input, `reset` + `\r\nOK\r\n` yields `OK`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::internal::bench::at::{self, Event, Final, Parser};

fn helpers(line: &str) {
    let _ = at::parse_final(line);
    if let Some(e) = at::parse_cmng_line(line) {
        assert!(e
            .sha256
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }
    let _ = at::parse_quoted_reply(line, "%KEYGEN:");
    let _ = at::parse_quoted_reply(line, "%ATTESTTOKEN:");
    let _ = at::parse_fw_version(line);
    let _ = at::keygen_supported(line, "nRF9160-SICA");
    let _ = at::keygen_supported(line, line);
    let _ = at::imei_valid(line);
    let s = at::summarize_command(line);
    assert!(s.len() <= 120, "summary of {} bytes", s.len());
    if let Ok(c) = at::cmng_write_command(16842753, 1, line) {
        assert!(c.len() <= at::MAX_COMMAND);
    }
    let _ = at::normalize_pem(line);
}

fuzz_target!(|data: &[u8]| {
    let (cmd, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let cmd = String::from_utf8_lossy(cmd);
    let mut p = Parser::new();
    p.begin(&cmd);
    let whole = p.feed(bytes);

    let mut q = Parser::new();
    q.begin(&cmd);
    let mut chunked = Vec::new();
    // Chunk sizes from the data itself (deterministic, varied).
    let mut rest = bytes;
    let mut k = 0usize;
    while !rest.is_empty() {
        let n = (usize::from(rest[0]) % 17 + k % 5).clamp(1, rest.len());
        k += 1;
        let (a, b) = rest.split_at(n);
        chunked.extend(q.feed(a));
        rest = b;
    }
    assert_eq!(whole, chunked, "chunking changed the events");

    for e in &whole {
        match e {
            Event::Info(s) | Event::Urc(s) | Event::Boot(s) | Event::Noise(s) => {
                assert!(s.len() <= 3 * at::MAX_LINE, "event of {} bytes", s.len());
                helpers(s);
            }
            Event::Final(_) | Event::Overflow => {}
        }
    }
    helpers(&cmd);

    // Resynchronising always works.
    p.reset();
    p.begin("AT");
    let ev = p.feed(b"\r\nOK\r\n");
    assert!(ev.contains(&Event::Final(Final::Ok)), "{ev:?}");
});
