//! `signer::audit::verify_file` on an exported audit log (JSONL or CSV) written to a file.
//!
//! The CA certificate is `$NRFCA_FUZZ_AUDIT_CA`, else `fuzz/corpus/audit-ca.pem` (written by
//! `fuzz/seed-corpora.sh` next to the exported seed log, so unmodified seeds verify), else
//! none (every input then fails at the certificate: a warning is printed once).
//!
//! First input byte: bit 0 set = "re-chain" mode: every JSONL line that parses as a record
//! gets its `prev_hash`/`hash` recomputed so the chain holds and the verifier's content
//! checks (event names, times, details, checkpoints) are reached. The rest is the log.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nrfca::signer::audit::{self, Record};

fn ca_path() -> Option<&'static PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| {
        let p = std::env::var_os("NRFCA_FUZZ_AUDIT_CA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/audit-ca.pem"))
            });
        if p.exists() {
            Some(p)
        } else {
            eprintln!(
                "warning: no audit CA at {} (run fuzz/seed-corpora.sh)",
                p.display()
            );
            None
        }
    })
    .as_ref()
}

fn rechain(log: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(log.len());
    let mut prev = audit::GENESIS_HASH.to_string();
    for line in log.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        match serde_json::from_slice::<Record>(body) {
            Ok(mut r) => {
                r.prev_hash = prev.clone();
                if let Some(h) = r.compute_hash() {
                    r.hash = h;
                }
                prev = r.hash.clone();
                out.extend_from_slice(r.to_export_json().as_bytes());
                if line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            Err(_) => out.extend_from_slice(line),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, log)) = data.split_first() else {
        return;
    };
    let log = if mode & 1 == 1 {
        rechain(log)
    } else {
        log.to_vec()
    };
    let Some(ca) = ca_path() else { return };
    let Ok(mut f) = tempfile::NamedTempFile::new() else {
        return;
    };
    if f.write_all(&log).is_err() || f.flush().is_err() {
        return;
    }
    if let Ok(rep) = audit::verify_file(f.path(), ca) {
        // CSV also ends records at a bare CR; every record takes at least one line.
        let lines = log.split(|&b| b == b'\n' || b == b'\r').count() as u64;
        assert!(
            rep.records <= lines + 1,
            "{} records from {lines} lines",
            rep.records
        );
        assert!(rep.last_checkpoint_seq <= rep.records || rep.first_bad.is_some());
    }
});
