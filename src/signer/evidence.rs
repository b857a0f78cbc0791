//! `sign`'s evidence checks before the key is unlocked (SPEC §10, §11): which bench signed
//! each input (`F.sig`), whether that bench is trusted, whether the rows name it, and whether
//! the checkpoint it quotes for this CA is a prefix of this CA's log; and the trusted benches
//! themselves (`ca trust-bench` / `ca distrust-bench`).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::checkpoint::{check_prefix, Checkpoint, CheckpointError};
use crate::provenance::{self, ProvenanceError, SignedStatement};
use crate::signer::audit::{tree, AuditError, AuditWriter};
use crate::signer::db::{self, Connection};

/// Largest `F.sig` read.
const MAX_SIG: u64 = 64 * 1024;

/// Why `sign` refused an input before unlocking. [`Refusal::code`] is stable kebab-case.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Benches are trusted and the input has no `F.sig`.
    #[error("{} has no signature file {} and this CA only signs requests from trusted benches; copy requests.csv.sig from the bench with it, or, if you have checked its origin another way, sign with --unsigned (recorded in the audit log)", input.display(), sig.display())]
    Unsigned {
        /// The input.
        input: PathBuf,
        /// Where the signature was looked for.
        sig: PathBuf,
    },
    /// A plain-text KEYGEN file while benches are trusted.
    #[error("{} is a plain-text KEYGEN file: it carries no bench signature; sign it with --unsigned if you have checked its origin (recorded in the audit log)", .0.display())]
    PlainText(PathBuf),
    /// The statement is bad, does not verify, or the file changed after signing.
    #[error("{}", input.display())]
    Statement {
        /// The input.
        input: PathBuf,
        /// What was wrong.
        #[source]
        source: ProvenanceError,
    },
    /// Signed by a bench this CA does not trust (or by another key than the trusted one).
    #[error("{} is signed by bench {bench:?} (key {key}), which this CA does not trust; if it is yours, trust it with `nrfca ca trust-bench --name {bench:?} --key bench.pem` (check the fingerprint with the technician), else do not sign these requests", input.display())]
    Untrusted {
        /// The input.
        input: PathBuf,
        /// The stated bench name.
        bench: String,
        /// The stated key fingerprint.
        key: String,
    },
    /// A row names another bench than the one that signed the file.
    #[error("{} is signed by bench {bench:?} but its row at line {line} names bench {other:?}: rows were added from elsewhere; do not sign it, export the requests again on the bench", input.display())]
    OtherBench {
        /// The input.
        input: PathBuf,
        /// The signing bench.
        bench: String,
        /// The row's bench column.
        other: String,
        /// The row's line.
        line: u64,
    },
    /// The quoted checkpoint of this CA is not a prefix of its log.
    #[error("{} quotes a checkpoint of this CA ({quoted}) that this ca.db's audit log ({size} records) does not extend: {why}. The bench has seen a longer or different log than this ca.db holds, so ca.db was restored from an older backup, truncated, or is another CA's log. Do not sign: find the newest ca.db (the one the last bundle came from), restore it, and run `nrfca audit verify --ca-dir D --checkpoint FILE` with the bench's checkpoint before signing again", input.display())]
    RolledBack {
        /// The input.
        input: PathBuf,
        /// The quoted checkpoint.
        quoted: Checkpoint,
        /// The log's size.
        size: u64,
        /// What differs.
        why: String,
    },
    /// The input could not be read.
    #[error("cannot read {}", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
}

impl Refusal {
    /// The stable code (also in the `input-refused` audit record).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unsigned { .. } => "input-unsigned",
            Refusal::PlainText(_) => "input-plain-text",
            Refusal::Statement { source, .. } => source.code(),
            Refusal::Untrusted { .. } => "bench-not-trusted",
            Refusal::OtherBench { .. } => "rows-of-another-bench",
            Refusal::RolledBack { .. } => "log-not-extended",
            Refusal::Io(..) => "input-unreadable",
        }
    }

    fn input(&self) -> Option<&Path> {
        match self {
            Refusal::Unsigned { input, .. }
            | Refusal::Statement { input, .. }
            | Refusal::Untrusted { input, .. }
            | Refusal::OtherBench { input, .. }
            | Refusal::RolledBack { input, .. } => Some(input),
            Refusal::PlainText(p) | Refusal::Io(p, _) => Some(p),
        }
    }
}

/// What the checks established, for the batch's records and the bundle's proofs.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// `provenance` for `batch-started` (None when no bench is trusted and not `--unsigned`).
    pub provenance: Option<Value>,
    /// The checkpoints of this CA quoted by the inputs (each a prefix of the log).
    pub quoted: Vec<Checkpoint>,
    /// Each signed input's SHA-256 as its statement names it (checked again after the batch).
    pub signed_sha256: Vec<(PathBuf, String)>,
}

fn is_csv(bytes: &[u8]) -> bool {
    let b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    b.starts_with(crate::requests::HEADER.as_bytes())
}

/// The first row (line, bench) whose `bench` column is not empty and not `name`.
fn other_bench_row(bytes: &[u8], name: &str) -> Option<(u64, String)> {
    let b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(b);
    for rec in r.byte_records() {
        let Ok(rec) = rec else { continue };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if let Some(cell) = rec.get(6) {
            if !cell.is_empty() && cell != name.as_bytes() {
                return Some((line, String::from_utf8_lossy(cell).into_owned()));
            }
        }
    }
    None
}

/// Check every input of a batch of the CA `ca_sha256` (SPEC §10, §11). Once a bench is
/// trusted, every input needs a `F.sig` by a trusted bench, unless `unsigned`. Whatever the
/// trust, a statement beside an input must match the file (when its bench is trusted), its
/// rows must not name another bench, and the checkpoint it quotes for this CA must be a prefix
/// of the log.
pub fn check_inputs(
    conn: &Connection,
    ca_sha256: &str,
    inputs: &[PathBuf],
    unsigned: bool,
) -> Result<Evidence, Refusal> {
    let benches = db::benches::all(conn)
        .map_err(|e| Refusal::Io(PathBuf::from("ca.db"), std::io::Error::other(e.to_string())))?;
    let required = !benches.is_empty() && !unsigned;
    let mut ev = Evidence::default();
    let mut records = Vec::new();
    let mut log: Option<tree::LogNodes<'_>> = None;
    for input in inputs {
        let sig_path = provenance::sig_path_for(input);
        let has_sig = sig_path.is_file();
        if !has_sig {
            if required {
                return Err(Refusal::Unsigned {
                    input: input.clone(),
                    sig: sig_path,
                });
            }
            records.push(json!({"input": input.display().to_string(), "unsigned": true}));
            continue;
        }
        let bytes = std::fs::read(input).map_err(|e| Refusal::Io(input.clone(), e))?;
        if required && !is_csv(&bytes) {
            return Err(Refusal::PlainText(input.clone()));
        }
        let sig = read_limited(&sig_path).map_err(|e| Refusal::Io(sig_path.clone(), e))?;
        let st = SignedStatement::parse(&sig).map_err(|source| Refusal::Statement {
            input: input.clone(),
            source,
        })?;
        let name = &st.statement.bench;
        let trusted = benches
            .iter()
            .find(|b| &b.name == name && b.fingerprint == st.statement.key_sha256);
        match trusted {
            Some(b) => {
                st.verify(&b.public_key, &bytes)
                    .map_err(|source| Refusal::Statement {
                        input: input.clone(),
                        source,
                    })?;
            }
            _ if required => {
                return Err(Refusal::Untrusted {
                    input: input.clone(),
                    bench: name.clone(),
                    key: st.statement.key_sha256.clone(),
                })
            }
            // No bench trusted, or `--unsigned`: the statement cannot be verified; it is only
            // recorded (`verified: false`), and its quoted checkpoint still checked.
            _ => {}
        }
        if let Some((line, other)) = other_bench_row(&bytes, name) {
            return Err(Refusal::OtherBench {
                input: input.clone(),
                bench: name.clone(),
                other,
                line,
            });
        }
        if let Some(q) = st.statement.checkpoint_for(ca_sha256) {
            if log.is_none() {
                log = Some(tree::LogNodes::open(conn, None).map_err(|e| {
                    Refusal::Io(PathBuf::from("ca.db"), std::io::Error::other(e.to_string()))
                })?);
            }
            let t = log.as_ref().expect("built above");
            let origin = crate::checkpoint::origin_for(ca_sha256);
            check_prefix(t, &origin, q).map_err(|e| match e {
                CheckpointError::Unreadable(m) => {
                    Refusal::Io(PathBuf::from("ca.db"), std::io::Error::other(m))
                }
                e => Refusal::RolledBack {
                    input: input.clone(),
                    quoted: q.clone(),
                    size: crate::merkle::Nodes::size(t),
                    why: match e {
                        CheckpointError::NotAnExtension { why, .. } => why,
                        other => other.to_string(),
                    },
                },
            })?;
            ev.quoted.push(q.clone());
        }
        ev.signed_sha256
            .push((input.clone(), st.statement.requests_sha256.clone()));
        records.push(json!({
            "input": input.display().to_string(),
            "bench": name,
            "key": st.statement.key_sha256,
            "verified": trusted.is_some(),
        }));
    }
    if !benches.is_empty() || unsigned {
        ev.provenance = Some(Value::Array(records));
    }
    Ok(ev)
}

fn read_limited(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    std::fs::File::open(p)?
        .take(MAX_SIG + 1)
        .read_to_end(&mut v)?;
    if v.len() as u64 > MAX_SIG {
        return Err(std::io::Error::other(
            "larger than a requests signature file",
        ));
    }
    Ok(v)
}

/// Record an `input-refused` event (no key needed; the next checkpoint covers it).
pub fn record_refusal(
    conn: &mut Connection,
    operator: &str,
    r: &Refusal,
) -> Result<(), AuditError> {
    let tx = db::begin_immediate(conn)?;
    let mut w = AuditWriter::new(&tx, operator)?;
    w.append(
        &tx,
        "input-refused",
        &json!({
            "input": r.input().map(|p| p.display().to_string()),
            "code": r.code(),
            "detail": crate::error::error_chain(r),
        }),
    )?;
    drop(w);
    tx.commit()?;
    Ok(())
}
