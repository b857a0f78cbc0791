//! The bench's side of the evidence (SPEC §10, §11): at `bench import`, the bundle's
//! `checkpoint` must be signed by the trusted CA and, with `checkpoint.proofs`, extend the
//! newest checkpoint this bench holds for that CA (else the CA's log was rolled back or
//! forked); at `bench export`, `requests.csv.sig` is written beside the requests file, signed
//! by the bench key and quoting the newest checkpoint held per CA.
//!
//! Decisions only read the bundle and the state; adopting a checkpoint is the import's, after
//! the run ([`super::state::State::adopt_checkpoint`]).

use super::identity::{BenchIdentity, IdentityError};
use super::state::{HeldCheckpoint, State, StateError};
use crate::checkpoint::{
    self, Checkpoint, CheckpointError, ProofFile, SignedCheckpoint, CHECKPOINT_FILE,
    CHECKPOINT_SIG_FILE, PROOFS_FILE,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why the bundle's evidence was refused, or the statement could not be written. Display is
/// this layer's sentence, with its stable code in brackets where the bench prints it to the
/// technician; the cause is the `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// `checkpoint`, `checkpoint.sig` or `checkpoint.proofs` is malformed, or the signature
    /// does not verify with the trusted CA.
    #[error("[{}] the bundle's checkpoint is refused; do not install the bundle: if a fresh copy from the signer is refused too, contact the CA officer", .0.code())]
    Invalid(#[source] CheckpointError),
    /// Only one of `checkpoint` and `checkpoint.sig` is in the bundle.
    #[error("[checkpoint-incomplete] the bundle has a checkpoint without its {0}: copy the bundle again from the signer, whole; do not install it as it is")]
    Incomplete(&'static str),
    /// The bundle carries no checkpoint but the bench holds one for this CA.
    #[error("[checkpoint-missing] the bundle carries no checkpoint of the CA's log, but this bench holds one ({}): a bundle of this CA must prove its log extends it. It was made by an nrfca that writes no checkpoint, or the checkpoint was removed. Do not install it; ask the CA officer to sign the requests again with the current nrfca", held_line(.0))]
    MissingCheckpoint(Box<HeldCheckpoint>),
    /// The bundle's proofs start from other checkpoints than the one the bench holds.
    #[error("[checkpoint-proof-missing] the bundle has no consistency proof from the checkpoint this bench holds ({}): its requests file was signed by this bench before that import, or by another bench. Run `nrfca bench export` again into the requests file (its requests.csv.sig then quotes the checkpoint) and have the officer sign it again: the same certificates come back", held_line(.0))]
    MissingProof(Box<HeldCheckpoint>),
    /// The bundle's log does not extend the checkpoint the bench holds.
    #[error("[log-rolled-back] the CA's log was rolled back or forked: the bundle's checkpoint (size {}) does not extend the one this bench verified before ({}; {why}). The CA's ca.db was restored from an older backup, cut short, or is not the same log, so certificates may have been issued that this log no longer shows. Do not install this bundle; keep it, and contact the CA officer, who must find out what happened to ca.db (`nrfca audit verify --checkpoint`) before anything more is signed", found.size, held_line(held))]
    RolledBack {
        /// What the bench holds.
        held: Box<HeldCheckpoint>,
        /// The bundle's checkpoint.
        found: Checkpoint,
        /// What failed.
        why: String,
    },
    /// The bench state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The bench identity could not be loaded or used.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl EvidenceError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            EvidenceError::Invalid(e) => e.code(),
            EvidenceError::Incomplete(_) => "checkpoint-incomplete",
            EvidenceError::MissingCheckpoint(_) => "checkpoint-missing",
            EvidenceError::MissingProof(_) => "checkpoint-proof-missing",
            EvidenceError::RolledBack { .. } => "log-rolled-back",
            EvidenceError::State(_) => "bench-state",
            EvidenceError::Identity(e) => e.code(),
            EvidenceError::Io { .. } => "evidence-io",
        }
    }
}

fn held_line(h: &HeldCheckpoint) -> String {
    format!(
        "size {} verified {} from bundle {} (batch {})",
        h.checkpoint.size, h.adopted_at, h.bundle, h.batch
    )
}

/// What the bundle's checkpoint means for this bench.
#[derive(Debug, Clone)]
pub enum CheckpointVerdict {
    /// No checkpoint in the bundle and none held for this CA: import, with a warning.
    Unverified,
    /// The checkpoint is the newest held, or an older one held before (an older bundle of
    /// the same log, imported again): nothing new to keep.
    AlreadyHeld(Checkpoint),
    /// A checkpoint signed by the trusted CA that extends what is held (or the first one of
    /// this CA): to keep after the import.
    Extends {
        /// The new checkpoint.
        signed: SignedCheckpoint,
        /// The checkpoint held before, which the proof started from (`None`: the first).
        from: Option<Checkpoint>,
    },
}

impl CheckpointVerdict {
    /// The warning to show, if any.
    pub fn warning(&self) -> Option<String> {
        match self {
            CheckpointVerdict::Unverified => Some(
                "warning: the bundle carries no checkpoint of the CA's log, so this bench cannot check that the log was not rolled back; it is imported because this bench holds no checkpoint of this CA yet. Once it holds one, a bundle without a checkpoint is refused: ask the officer to sign with the current nrfca".into(),
            ),
            _ => None,
        }
    }

    /// One line for the operator.
    pub fn describe(&self) -> String {
        match self {
            CheckpointVerdict::Unverified => "no checkpoint".into(),
            CheckpointVerdict::AlreadyHeld(c) => {
                format!("checkpoint size {} (already held)", c.size)
            }
            CheckpointVerdict::Extends { signed, from: None } => format!(
                "checkpoint size {} signed by the CA (the first this bench holds of this CA)",
                signed.checkpoint.size
            ),
            CheckpointVerdict::Extends {
                signed,
                from: Some(f),
            } => format!(
                "checkpoint size {} signed by the CA, extends the size {} held",
                signed.checkpoint.size, f.size
            ),
        }
    }
}

/// Read at most `limit` bytes of `path`; `None` when it does not exist. A larger file is read
/// only that far: the parsers refuse it as too large.
fn read_bounded(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, EvidenceError> {
    let io = |source| EvidenceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut buf = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut buf).map_err(io)?;
    Ok(Some(buf))
}

/// Check the bundle in `dir` (already verified by `bundle::verify`) against the newest
/// checkpoint `state` holds for the CA with certificate `ca_cert_der`.
pub fn check_bundle(
    dir: &Path,
    ca_cert_der: &[u8],
    state: &State,
) -> Result<CheckpointVerdict, EvidenceError> {
    let ca_sha = crate::crypto::sha256_hex(ca_cert_der);
    let held = state.newest_checkpoint(&ca_sha)?;
    let body = read_bounded(&dir.join(CHECKPOINT_FILE), checkpoint::MAX_CHECKPOINT)?;
    let sig = read_bounded(&dir.join(CHECKPOINT_SIG_FILE), checkpoint::MAX_CHECKPOINT)?;
    let proofs = read_bounded(&dir.join(PROOFS_FILE), checkpoint::MAX_PROOFS)?;
    let (body, sig) = match (body, sig) {
        (None, None) => {
            return match held {
                Some(h) => Err(EvidenceError::MissingCheckpoint(Box::new(h))),
                None => Ok(CheckpointVerdict::Unverified),
            }
        }
        (Some(_), None) => return Err(EvidenceError::Incomplete(CHECKPOINT_SIG_FILE)),
        (None, Some(_)) => return Err(EvidenceError::Incomplete(CHECKPOINT_FILE)),
        (Some(b), Some(s)) => (b, s),
    };
    let signed = SignedCheckpoint::verify_with_ca_cert(&body, &sig, ca_cert_der)
        .map_err(EvidenceError::Invalid)?;
    let new = signed.checkpoint.clone();
    let proofs = match proofs {
        Some(p) => Some(ProofFile::parse(&p).map_err(EvidenceError::Invalid)?),
        None => None,
    };
    // Every proof the bundle carries must hold, whoever quoted its starting point.
    if let Some(p) = &proofs {
        p.verify_all(&new).map_err(|e| match (&held, e) {
            (Some(h), e @ CheckpointError::NotAnExtension { .. }) => EvidenceError::RolledBack {
                held: Box::new(h.clone()),
                found: new.clone(),
                why: e.to_string(),
            },
            (_, e) => EvidenceError::Invalid(e),
        })?;
    }
    let Some(h) = held else {
        return Ok(CheckpointVerdict::Extends { signed, from: None });
    };
    if h.checkpoint == new {
        return Ok(CheckpointVerdict::AlreadyHeld(new));
    }
    let rolled_back = |why: String| EvidenceError::RolledBack {
        held: Box::new(h.clone()),
        found: new.clone(),
        why,
    };
    if new.size <= h.checkpoint.size {
        // An older bundle of the same log imported again carries a checkpoint the bench
        // adopted before; any other smaller or equal-size checkpoint is not this log.
        if new.size < h.checkpoint.size && state.holds_checkpoint(&new)? {
            return Ok(CheckpointVerdict::AlreadyHeld(new));
        }
        return Err(rolled_back(if new.size == h.checkpoint.size {
            "same size, another root: a different log".into()
        } else {
            "the log is shorter than what this bench saw".into()
        }));
    }
    let Some(proofs) = proofs else {
        return Err(EvidenceError::MissingProof(Box::new(h)));
    };
    match proofs.verify_from(&h.checkpoint, &new) {
        Ok(()) => Ok(CheckpointVerdict::Extends {
            signed,
            from: Some(h.checkpoint),
        }),
        Err(CheckpointError::MissingProof { .. }) => {
            // A verified proof from the held size with another root shows the CA's log had
            // other records at that size: a fork, not a missing proof.
            if proofs
                .proofs
                .iter()
                .any(|p| p.old_size == h.checkpoint.size)
            {
                return Err(rolled_back(format!(
                    "the log's first {} records differ from those this bench verified",
                    h.checkpoint.size
                )));
            }
            Err(EvidenceError::MissingProof(Box::new(h)))
        }
        Err(e @ CheckpointError::NotAnExtension { .. }) => Err(rolled_back(e.to_string())),
        Err(e) => Err(EvidenceError::Invalid(e)),
    }
}

/// What writing `F.sig` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatementReport {
    /// The `F.sig` written.
    pub path: PathBuf,
    /// The bench name in it.
    pub bench: String,
    /// The checkpoints quoted (one per CA).
    pub checkpoints: usize,
}

/// Write `requests.sig` for the requests file `requests` as it stands now: the bench's
/// statement over its exact bytes, quoting the newest checkpoint held per CA. Atomic: a
/// temporary file beside it, fsync'd, renamed over the old statement, directory fsync'd.
pub fn write_statement(
    identity: &BenchIdentity,
    state: &State,
    requests: &Path,
) -> Result<StatementReport, EvidenceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvidenceError::Io { path, source }
    };
    let bytes = std::fs::read(requests).map_err(io(requests))?;
    let checkpoints: Vec<Checkpoint> = state
        .newest_checkpoints()?
        .into_iter()
        .map(|h| h.checkpoint)
        .collect();
    let count = checkpoints.len();
    let text = identity.sign_statement(&bytes, checkpoints)?;
    let sig_path = crate::provenance::sig_path_for(requests);
    let dir = sig_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = sig_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "requests.sig".into());
    let nonce = hex::encode(crate::crypto::random_bytes::<8>());
    let tmp = dir.join(format!(".{name}.{}.{nonce}.tmp", std::process::id()));
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &sig_path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&sig_path)(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(StatementReport {
        path: sig_path,
        bench: identity.name().to_string(),
        checkpoints: count,
    })
}

/// What `bench init` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// The bench name.
    pub name: String,
    /// `S/bench.pem`: what the officer passes to `ca trust-bench --key`.
    pub public_key_file: PathBuf,
    /// Its text.
    pub public_key_pem: String,
    /// SHA-256 (hex) of the key's DER SubjectPublicKeyInfo.
    pub fingerprint: String,
}

/// `bench init`: create the bench's identity in `state_dir` (refused when it has one) and the
/// bench state beside it, and journal the enrolment. The name must also be a valid `bench`
/// cell of a requests row (printable ASCII, no formula character first), since every row
/// this bench exports carries it.
pub fn init(
    state_dir: &Path,
    name: &str,
    operator: Option<&str>,
) -> Result<InitReport, EvidenceError> {
    crate::provenance::check_name(name).map_err(IdentityError::from)?;
    if !crate::requests::is_plain_text_cell(name) {
        return Err(
            IdentityError::from(crate::provenance::ProvenanceError::BadName(
                "not printable ASCII, or starts with = + - @ (every requests row carries the name)"
                    .into(),
            ))
            .into(),
        );
    }
    let id = BenchIdentity::create(state_dir, name)?;
    let state = State::open(state_dir)?;
    let who = super::state::Actor::resolve(operator, Some(name));
    state.journal(
        &who,
        "-",
        None,
        "init",
        "bench init",
        &format!("bench key created, fingerprint {}", id.fingerprint()),
    )?;
    Ok(InitReport {
        name: id.name().to_string(),
        public_key_file: state_dir.join(super::identity::PUBLIC_FILE),
        public_key_pem: id.public_pem().to_string(),
        fingerprint: id.fingerprint().to_string(),
    })
}

/// The bench's identity for `bench status`: `None` when `bench init` was not run.
pub fn identity_summary(state_dir: &Path) -> Result<Option<(String, String)>, EvidenceError> {
    if !BenchIdentity::exists(state_dir) {
        return Ok(None);
    }
    let id = BenchIdentity::load(state_dir)?;
    Ok(Some((id.name().to_string(), id.fingerprint().to_string())))
}

#[cfg(test)]
mod tests {
    /// `bundle::verify` tolerates these names unlisted; they must stay the checkpoint files.
    #[test]
    fn bundle_tolerates_exactly_the_checkpoint_files() {
        use crate::checkpoint::{CHECKPOINT_FILE, CHECKPOINT_SIG_FILE, PROOFS_FILE};
        assert_eq!(
            [CHECKPOINT_FILE, CHECKPOINT_SIG_FILE, PROOFS_FILE],
            ["checkpoint", "checkpoint.sig", "checkpoint.proofs"]
        );
    }
}
