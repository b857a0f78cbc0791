//! Signed checkpoints of the audit log (SPEC §11) and the bundle's consistency proofs: the
//! `checkpoint` body (C2SP tlog-checkpoint: origin, tree size, base64 root, each line ending
//! in LF), `checkpoint.sig` (base64 DER ECDSA-SHA256 over the exact body bytes, as
//! `manifest.sig`), and `checkpoint.proofs` (a consistency proof from each checkpoint a
//! bench quoted to the bundle's checkpoint). Pure: parse, format, verify; no I/O. Signing is
//! the caller's (a closure), so any CA key custody fits.
//!
//! ```text
//! checkpoint                      checkpoint.proofs
//! nrfca/<CA sha256, hex>          nrfca-consistency-proofs v1
//! <tree size, decimal>            origin nrfca/<CA sha256, hex>
//! <root, standard base64>         to <new size> <new root b64>
//!                                 from <old size> <old root b64> <k>
//!                                 <hash b64>            (k lines, RFC 9162 §2.1.4 order)
//!                                 from ...
//! ```

use crate::merkle::{self, Hash};
pub use crate::merkle::{MerkleError, Nodes, Tree};
use std::fmt;

/// Prefix of a checkpoint's origin line; the rest is the CA certificate's SHA-256 (hex).
pub const ORIGIN_PREFIX: &str = "nrfca/";
/// First line of `checkpoint.proofs`.
pub const PROOFS_HEADER: &str = "nrfca-consistency-proofs v1";
/// File names in a bundle.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Signature of [`CHECKPOINT_FILE`].
pub const CHECKPOINT_SIG_FILE: &str = "checkpoint.sig";
/// Consistency proofs to [`CHECKPOINT_FILE`].
pub const PROOFS_FILE: &str = "checkpoint.proofs";
/// Largest `checkpoint` / `checkpoint.sig` accepted (bytes): a body is under 200.
pub const MAX_CHECKPOINT: usize = 1024;
/// Largest `checkpoint.proofs` accepted (bytes): 64 quoted checkpoints of 65 hashes fit.
pub const MAX_PROOFS: usize = 64 * 1024 * 4;
/// Most proofs one `checkpoint.proofs` may carry.
pub const MAX_PROOF_ENTRIES: usize = 64;

/// Why a checkpoint, a signature or a proof file was refused. [`CheckpointError::code`] is a
/// stable kebab-case code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The `checkpoint` text is not the three-line body.
    #[error("the checkpoint is malformed ({0}); copy the file again from the signer")]
    Malformed(String),
    /// `checkpoint.sig` is not base64 or does not verify with the CA key.
    #[error("checkpoint.sig does not verify with the CA key: the checkpoint was altered or signed by another key; copy it again from the signer")]
    BadSignature,
    /// The checkpoint names another CA than the one trusted.
    #[error("the checkpoint is for {found:?}, not for the trusted CA ({expected:?}); use the checkpoint of this CA")]
    WrongOrigin {
        /// Origin in the checkpoint.
        found: String,
        /// Origin of the trusted CA.
        expected: String,
    },
    /// `checkpoint.proofs` is not in the documented format.
    #[error("checkpoint.proofs is malformed ({0}); copy the bundle again from the signer")]
    MalformedProofs(String),
    /// No proof in `checkpoint.proofs` starts from the given checkpoint.
    #[error("the bundle has no consistency proof from the checkpoint of size {size} this bench holds; sign the requests again with the requests.csv.sig this bench wrote")]
    MissingProof {
        /// Size of the checkpoint looked for.
        size: u64,
    },
    /// The log does not extend the older checkpoint: restored from an older copy, truncated,
    /// or another log.
    #[error("the log of size {new_size} does not extend the checkpoint of size {old_size} ({why}): the CA's ca.db was restored from an older copy, truncated, or is another log; stop and have the officer investigate before signing or importing")]
    NotAnExtension {
        /// The older checkpoint's size.
        old_size: u64,
        /// The newer checkpoint's size.
        new_size: u64,
        /// What failed.
        why: String,
    },
    /// Signing failed.
    #[error("signing the checkpoint failed: {0}")]
    Sign(String),
    /// The log's hashes could not be read (e.g. `ca.db` failed).
    #[error("the log's hashes could not be read ({0}); check that ca.db is readable and not open elsewhere")]
    Unreadable(String),
}

impl CheckpointError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointError::Malformed(_) => "checkpoint-malformed",
            CheckpointError::BadSignature => "checkpoint-bad-signature",
            CheckpointError::WrongOrigin { .. } => "checkpoint-wrong-ca",
            CheckpointError::MalformedProofs(_) => "checkpoint-proofs-malformed",
            CheckpointError::MissingProof { .. } => "checkpoint-proof-missing",
            CheckpointError::NotAnExtension { .. } => "log-not-extended",
            CheckpointError::Sign(_) => "checkpoint-sign-failed",
            CheckpointError::Unreadable(_) => "log-unreadable",
        }
    }
}

/// The origin line for the CA whose certificate has SHA-256 `ca_sha256_hex` (lowercase hex).
pub fn origin_for(ca_sha256_hex: &str) -> String {
    format!("{ORIGIN_PREFIX}{ca_sha256_hex}")
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parse a decimal tree size: digits only, no sign, no leading zero (but `0` itself).
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Decode a standard, padded base64 hash of exactly 32 bytes that re-encodes to the same text.
fn parse_hash(s: &str) -> Option<Hash> {
    let v = crate::crypto::b64_decode(s).ok()?;
    let h: Hash = v.try_into().ok()?;
    (crate::crypto::b64_encode(&h) == s).then_some(h)
}

fn b64(h: &Hash) -> String {
    crate::crypto::b64_encode(h)
}

/// A checkpoint: the log of the CA named by `origin` had `size` records with Merkle root
/// `root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// `nrfca/<CA sha256 hex>`.
    pub origin: String,
    /// Tree size (number of audit records).
    pub size: u64,
    /// Merkle root of the first `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint of the CA with certificate SHA-256 `ca_sha256_hex` at `size` / `root`.
    pub fn new(ca_sha256_hex: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        if !is_lower_hex64(ca_sha256_hex) {
            return Err(CheckpointError::Malformed(
                "the CA fingerprint is not 64 lowercase hex digits".into(),
            ));
        }
        Ok(Checkpoint {
            origin: origin_for(ca_sha256_hex),
            size,
            root,
        })
    }

    /// The CA fingerprint in the origin (lowercase hex).
    pub fn ca_sha256(&self) -> &str {
        self.origin.strip_prefix(ORIGIN_PREFIX).unwrap_or("")
    }

    /// The exact bytes of the `checkpoint` file and of the signing input.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, b64(&self.root))
    }

    /// Parse a `checkpoint` body strictly: three lines each ending in LF, nothing else.
    pub fn parse(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_string());
        if bytes.len() > MAX_CHECKPOINT {
            return Err(bad("larger than a checkpoint"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the last line does not end in LF"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root] = lines[..] else {
            return Err(bad(&format!("{} lines, expected 3", lines.len())));
        };
        let fp = origin
            .strip_prefix(ORIGIN_PREFIX)
            .filter(|fp| is_lower_hex64(fp))
            .ok_or_else(|| bad("the first line is not nrfca/<64 lowercase hex digits>"))?;
        let size = parse_size(size).ok_or_else(|| bad("the second line is not a tree size"))?;
        let root = parse_hash(root)
            .ok_or_else(|| bad("the third line is not a base64 SHA-256 root hash"))?;
        Checkpoint::new(fp, size, root)
    }

    /// Sign with the CA key: `sign` gets the exact `checkpoint` bytes and returns a DER
    /// ECDSA-SHA256 signature.
    pub fn sign<E: fmt::Display>(
        &self,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let text = self.to_text();
        let signature_der =
            sign(text.as_bytes()).map_err(|e| CheckpointError::Sign(e.to_string()))?;
        Ok(SignedCheckpoint {
            checkpoint: self.clone(),
            text,
            signature_der,
        })
    }

    /// Whether `self` (older) is extended by `new` through `proof` (RFC 9162 §2.1.4.2); both
    /// must have the same origin.
    pub fn verify_extends(&self, new: &Checkpoint, proof: &[Hash]) -> Result<(), CheckpointError> {
        verify_extends(self, new, proof)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} size {} root {}",
            self.origin,
            self.size,
            b64(&self.root)
        )
    }
}

/// A checkpoint with its signature: what `sign` writes as `checkpoint` + `checkpoint.sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The exact `checkpoint` file bytes (the signed bytes).
    pub text: String,
    /// DER ECDSA-SHA256 signature of `text`.
    pub signature_der: Vec<u8>,
}

impl SignedCheckpoint {
    /// The `checkpoint.sig` file: standard base64 of the DER signature and LF.
    pub fn sig_file(&self) -> String {
        let mut s = crate::crypto::b64_encode(&self.signature_der);
        s.push('\n');
        s
    }

    /// Parse `checkpoint` and `checkpoint.sig` and check the signature with the CA public key
    /// (uncompressed SEC1) and the origin against the CA fingerprint (lowercase hex).
    pub fn verify(
        checkpoint_bytes: &[u8],
        sig_file: &[u8],
        ca_public_sec1: &[u8],
        ca_sha256_hex: &str,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let checkpoint = Checkpoint::parse(checkpoint_bytes)?;
        let signature_der = parse_sig_file(sig_file)?;
        if !crate::crypto::verify_p256_sha256(ca_public_sec1, checkpoint_bytes, &signature_der) {
            return Err(CheckpointError::BadSignature);
        }
        let expected = origin_for(ca_sha256_hex);
        if checkpoint.origin != expected {
            return Err(CheckpointError::WrongOrigin {
                found: checkpoint.origin,
                expected,
            });
        }
        Ok(SignedCheckpoint {
            text: checkpoint.to_text(),
            checkpoint,
            signature_der,
        })
    }

    /// [`SignedCheckpoint::verify`] with the CA certificate (DER): its key and fingerprint.
    pub fn verify_with_ca_cert(
        checkpoint_bytes: &[u8],
        sig_file: &[u8],
        ca_cert_der: &[u8],
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let key = crate::bundle::cert_public_key(ca_cert_der)
            .map_err(|e| CheckpointError::Malformed(format!("the CA certificate: {e}")))?;
        SignedCheckpoint::verify(
            checkpoint_bytes,
            sig_file,
            &key,
            &crate::crypto::sha256_hex(ca_cert_der),
        )
    }
}

/// The DER signature in a `checkpoint.sig` (or `manifest.sig`) file: standard base64, one
/// line, an optional final LF.
pub fn parse_sig_file(bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    if bytes.len() > MAX_CHECKPOINT {
        return Err(CheckpointError::BadSignature);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CheckpointError::BadSignature)?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.is_empty() || line.contains(['\n', '\r', ' ']) {
        return Err(CheckpointError::BadSignature);
    }
    crate::crypto::b64_decode(line).map_err(|_| CheckpointError::BadSignature)
}

/// Check that `new` extends `old` (same origin; `proof` is PROOF(old.size, new) of RFC 9162
/// §2.1.4). A shorter `new`, another origin or a failing proof is [`CheckpointError::NotAnExtension`]
/// (or [`CheckpointError::WrongOrigin`]).
pub fn verify_extends(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[Hash],
) -> Result<(), CheckpointError> {
    if old.origin != new.origin {
        return Err(CheckpointError::WrongOrigin {
            found: old.origin.clone(),
            expected: new.origin.clone(),
        });
    }
    merkle::verify_consistency(old.size, &old.root, new.size, &new.root, proof).map_err(|e| {
        CheckpointError::NotAnExtension {
            old_size: old.size,
            new_size: new.size,
            why: match e {
                MerkleError::OutOfRange { .. } => "the log is shorter than the checkpoint".into(),
                MerkleError::Mismatch(w) => w.to_string(),
                MerkleError::Source(w) => w,
            },
        }
    })
}

/// Check, on the signer, that `quoted` is a prefix of the log in `tree`: same origin as
/// `origin`, size not beyond the log, and the root of that prefix equal to the quoted root.
pub fn check_prefix(
    tree: &impl merkle::Nodes,
    origin: &str,
    quoted: &Checkpoint,
) -> Result<(), CheckpointError> {
    if quoted.origin != origin {
        return Err(CheckpointError::WrongOrigin {
            found: quoted.origin.clone(),
            expected: origin.to_string(),
        });
    }
    let root = merkle::root_at(tree, quoted.size).map_err(|e| match e {
        merkle::MerkleError::OutOfRange { .. } => CheckpointError::NotAnExtension {
            old_size: quoted.size,
            new_size: tree.size(),
            why: "the log is shorter than the checkpoint".into(),
        },
        other => CheckpointError::Unreadable(other.to_string()),
    })?;
    if root != quoted.root {
        return Err(CheckpointError::NotAnExtension {
            old_size: quoted.size,
            new_size: tree.size(),
            why: "the log's first records differ from the checkpoint's".into(),
        });
    }
    Ok(())
}

/// `audit verify --checkpoint`: stream a log's leaves (the chain hashes, in order) once,
/// with O(log n) memory, and check that the log extends every checkpoint in `checkpoints`
/// (all of `origin`): the root of its first `size` leaves is the checkpoint's root. Returns
/// the log's own size and root.
pub fn verify_log_extends<L: AsRef<[u8]>>(
    origin: &str,
    leaves: impl IntoIterator<Item = L>,
    checkpoints: &[Checkpoint],
) -> Result<(u64, Hash), CheckpointError> {
    for c in checkpoints {
        if c.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                found: c.origin.clone(),
                expected: origin.to_string(),
            });
        }
    }
    let mut pending: Vec<&Checkpoint> = checkpoints.iter().collect();
    pending.sort_by_key(|c| c.size);
    let mut pending = pending.into_iter().peekable();
    let mut f = merkle::Frontier::new();
    let check = |c: &Checkpoint, f: &merkle::Frontier| {
        if f.root() == c.root {
            Ok(())
        } else {
            Err(CheckpointError::NotAnExtension {
                old_size: c.size,
                new_size: f.size(),
                why: "the log's first records differ from the checkpoint's".into(),
            })
        }
    };
    while let Some(c) = pending.next_if(|c| c.size == 0) {
        check(c, &f)?;
    }
    for leaf in leaves {
        f.push(leaf.as_ref());
        while let Some(c) = pending.next_if(|c| c.size == f.size()) {
            check(c, &f)?;
        }
    }
    if let Some(c) = pending.next() {
        return Err(CheckpointError::NotAnExtension {
            old_size: c.size,
            new_size: f.size(),
            why: "the log is shorter than the checkpoint".into(),
        });
    }
    Ok((f.size(), f.root()))
}

// ------------------------------------------------------------------------- proof file

/// One consistency proof in `checkpoint.proofs`: from the checkpoint (`old_size`,
/// `old_root`) of the file's origin to the file's `to` checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older tree size (as quoted by a bench).
    pub old_size: u64,
    /// The older root.
    pub old_root: Hash,
    /// PROOF(old_size, D\[new_size\]), RFC 9162 §2.1.4.1 order.
    pub hashes: Vec<Hash>,
}

/// `checkpoint.proofs`: consistency proofs from older checkpoints to one new checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    /// The new checkpoint (same as the bundle's `checkpoint`).
    pub to: Checkpoint,
    /// One proof per older checkpoint, in the order given.
    pub proofs: Vec<ConsistencyProof>,
}

impl ProofFile {
    /// Build, on the signer, the proofs from each `quoted` checkpoint to the tree's current
    /// size, after checking each is a prefix of the log ([`check_prefix`]). Duplicates are
    /// kept once.
    pub fn build(
        tree: &impl merkle::Nodes,
        to: &Checkpoint,
        quoted: &[Checkpoint],
    ) -> Result<ProofFile, CheckpointError> {
        let root = merkle::root_at(tree, tree.size())
            .map_err(|e| CheckpointError::Unreadable(e.to_string()))?;
        if to.size != tree.size() || to.root != root {
            return Err(CheckpointError::Malformed(
                "the checkpoint is not the tree's current head".into(),
            ));
        }
        let mut proofs: Vec<ConsistencyProof> = Vec::new();
        for q in quoted {
            check_prefix(tree, &to.origin, q)?;
            if proofs
                .iter()
                .any(|p| p.old_size == q.size && p.old_root == q.root)
            {
                continue;
            }
            let hashes = merkle::consistency_proof(tree, q.size, to.size)
                .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
            proofs.push(ConsistencyProof {
                old_size: q.size,
                old_root: q.root,
                hashes,
            });
        }
        if proofs.len() > MAX_PROOF_ENTRIES {
            return Err(CheckpointError::MalformedProofs(format!(
                "more than {MAX_PROOF_ENTRIES} quoted checkpoints"
            )));
        }
        Ok(ProofFile {
            to: to.clone(),
            proofs,
        })
    }

    /// The exact file text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{PROOFS_HEADER}\norigin {}\nto {} {}\n",
            self.to.origin,
            self.to.size,
            b64(&self.to.root)
        );
        for p in &self.proofs {
            s.push_str(&format!(
                "from {} {} {}\n",
                p.old_size,
                b64(&p.old_root),
                p.hashes.len()
            ));
            for h in &p.hashes {
                s.push_str(&b64(h));
                s.push('\n');
            }
        }
        s
    }

    /// Parse strictly (every line ends in LF; nothing but the documented lines).
    pub fn parse(bytes: &[u8]) -> Result<ProofFile, CheckpointError> {
        let bad = |why: String| CheckpointError::MalformedProofs(why);
        if bytes.len() > MAX_PROOFS {
            return Err(bad("too large".into()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the last line does not end in LF".into()))?;
        let mut lines = body.split('\n').enumerate().map(|(i, l)| (i + 1, l));
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| bad(format!("ends before {what}")))
        };
        let (_, header) = next("the header")?;
        if header != PROOFS_HEADER {
            return Err(bad(format!("the first line is not {PROOFS_HEADER:?}")));
        }
        let (n, origin_line) = next("the origin line")?;
        let fp = origin_line
            .strip_prefix("origin ")
            .and_then(|o| o.strip_prefix(ORIGIN_PREFIX))
            .filter(|fp| is_lower_hex64(fp))
            .ok_or_else(|| bad(format!("line {n} is not `origin nrfca/<CA sha256>`")))?;
        let (n, to_line) = next("the to line")?;
        let (size, root) = to_line
            .strip_prefix("to ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(s, r)| Some((parse_size(s)?, parse_hash(r)?)))
            .ok_or_else(|| bad(format!("line {n} is not `to <size> <root base64>`")))?;
        let to = Checkpoint::new(fp, size, root).map_err(|_| bad("bad origin".into()))?;
        let mut proofs = Vec::new();
        while let Some((n, line)) = lines.next() {
            let parts: Vec<&str> = line.split(' ').collect();
            let ["from", old_size, old_root, count] = parts[..] else {
                return Err(bad(format!(
                    "line {n} is not `from <size> <root base64> <count>`"
                )));
            };
            let (Some(old_size), Some(old_root), Some(count)) = (
                parse_size(old_size),
                parse_hash(old_root),
                parse_size(count),
            ) else {
                return Err(bad(format!(
                    "line {n} is not `from <size> <root base64> <count>`"
                )));
            };
            if count > merkle::MAX_PROOF_HASHES as u64 {
                return Err(bad(format!(
                    "line {n}: more than {} hashes",
                    merkle::MAX_PROOF_HASHES
                )));
            }
            let mut hashes = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (n, h) = lines
                    .next()
                    .ok_or_else(|| bad(format!("line {n}: fewer hashes than announced")))?;
                hashes.push(
                    parse_hash(h).ok_or_else(|| bad(format!("line {n} is not a base64 hash")))?,
                );
            }
            proofs.push(ConsistencyProof {
                old_size,
                old_root,
                hashes,
            });
            if proofs.len() > MAX_PROOF_ENTRIES {
                return Err(bad(format!("more than {MAX_PROOF_ENTRIES} proofs")));
            }
        }
        Ok(ProofFile { to, proofs })
    }

    /// The proof starting from `old`, if the file has one.
    pub fn proof_from(&self, old: &Checkpoint) -> Option<&ConsistencyProof> {
        (old.origin == self.to.origin)
            .then(|| {
                self.proofs
                    .iter()
                    .find(|p| p.old_size == old.size && p.old_root == old.root)
            })
            .flatten()
    }

    /// On the bench: the file's `to` must be the signed checkpoint `new`, and a proof from
    /// `held` (the newest checkpoint this bench holds for the CA) must show `new` extends it.
    pub fn verify_from(&self, held: &Checkpoint, new: &Checkpoint) -> Result<(), CheckpointError> {
        if self.to != *new {
            return Err(CheckpointError::MalformedProofs(
                "its `to` line is not the bundle's signed checkpoint".into(),
            ));
        }
        if held.origin != new.origin {
            return Err(CheckpointError::WrongOrigin {
                found: new.origin.clone(),
                expected: held.origin.clone(),
            });
        }
        if held == new {
            return Ok(());
        }
        if held.size >= new.size {
            // A same-size checkpoint with another root, or a shorter log: no proof can help.
            return verify_extends(held, new, &[]);
        }
        let proof = self
            .proof_from(held)
            .ok_or(CheckpointError::MissingProof { size: held.size })?;
        verify_extends(held, new, &proof.hashes)
    }

    /// Verify every proof of the file against the signed checkpoint `new` (what an auditor
    /// or the independent verifier does).
    pub fn verify_all(&self, new: &Checkpoint) -> Result<(), CheckpointError> {
        if self.to != *new {
            return Err(CheckpointError::MalformedProofs(
                "its `to` line is not the bundle's signed checkpoint".into(),
            ));
        }
        for p in &self.proofs {
            let old = Checkpoint {
                origin: new.origin.clone(),
                size: p.old_size,
                root: p.old_root,
            };
            verify_extends(&old, new, &p.hashes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::P256Key;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn tree(n: u64) -> merkle::Tree {
        let mut t = merkle::Tree::new();
        for i in 0..n {
            t.push(&crate::crypto::sha256(&i.to_be_bytes()));
        }
        t
    }

    fn cp(t: &merkle::Tree, size: u64) -> Checkpoint {
        Checkpoint::new(FP, size, t.root_at(size).unwrap()).unwrap()
    }

    #[test]
    fn text_round_trip_and_strictness() {
        let t = tree(5);
        let c = cp(&t, 5);
        let text = c.to_text();
        assert!(text.starts_with(&format!("nrfca/{FP}\n5\n")));
        assert_eq!(text.lines().count(), 3);
        assert_eq!(Checkpoint::parse(text.as_bytes()).unwrap(), c);
        let root = crate::crypto::b64_encode(&c.root);
        for bad in [
            format!("nrfca/{FP}\n5\n{root}"),
            format!("nrfca/{FP}\n5\n{root}\n\n"),
            format!("nrfca/{FP}\r\n5\n{root}\n"),
            format!("nrfca/{}\n5\n{root}\n", FP.to_uppercase()),
            format!("other/{FP}\n5\n{root}\n"),
            format!("nrfca/{FP}\n05\n{root}\n"),
            format!("nrfca/{FP}\n+5\n{root}\n"),
            format!("nrfca/{FP}\n5\n{}\n", root.trim_end_matches('=')),
            format!("nrfca/{FP}\n5\n{root}\nextension line\n"),
            format!("nrfca/{FP}\n18446744073709551616\n{root}\n"),
        ] {
            assert!(Checkpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(
            Checkpoint::parse(b"x").unwrap_err().code(),
            "checkpoint-malformed"
        );
    }

    #[test]
    fn signature_verifies_and_refuses_tampering() {
        let (key, _) = P256Key::generate().unwrap();
        let (other, _) = P256Key::generate().unwrap();
        let c = cp(&tree(3), 3);
        let s = c.sign(|m| key.sign_der(m)).unwrap();
        let sig = s.sig_file();
        let ok = SignedCheckpoint::verify(s.text.as_bytes(), sig.as_bytes(), &key.public_key(), FP)
            .unwrap();
        assert_eq!(ok.checkpoint, c);
        assert_eq!(
            SignedCheckpoint::verify(s.text.as_bytes(), sig.as_bytes(), &other.public_key(), FP),
            Err(CheckpointError::BadSignature)
        );
        let mut altered = s.text.clone().into_bytes();
        altered[FP.len() + 7] = b'4';
        assert!(SignedCheckpoint::verify(&altered, sig.as_bytes(), &key.public_key(), FP).is_err());
        let other_fp = "f".repeat(64);
        assert_eq!(
            SignedCheckpoint::verify(
                s.text.as_bytes(),
                sig.as_bytes(),
                &key.public_key(),
                &other_fp
            )
            .unwrap_err()
            .code(),
            "checkpoint-wrong-ca"
        );
        assert!(parse_sig_file(b"not base64!\n").is_err());
        assert!(parse_sig_file(b"").is_err());
        let failing: Result<SignedCheckpoint, _> = c.sign(|_| Err::<Vec<u8>, _>("token removed"));
        assert_eq!(failing.unwrap_err().code(), "checkpoint-sign-failed");
    }

    #[test]
    fn proof_file_round_trip_and_verification() {
        let t = tree(40);
        let new = cp(&t, 40);
        let quoted = [cp(&t, 1), cp(&t, 17), cp(&t, 32), cp(&t, 40), cp(&t, 17)];
        let pf = ProofFile::build(&t, &new, &quoted).unwrap();
        assert_eq!(pf.proofs.len(), 4);
        let text = pf.to_text();
        let back = ProofFile::parse(text.as_bytes()).unwrap();
        assert_eq!(back, pf);
        back.verify_all(&new).unwrap();
        for q in &quoted {
            back.verify_from(q, &new).unwrap();
        }
        // A checkpoint the file has no proof from.
        assert_eq!(
            back.verify_from(&cp(&t, 5), &new).unwrap_err().code(),
            "checkpoint-proof-missing"
        );
        // The file for another checkpoint than the bundle's.
        assert!(back.verify_from(&cp(&t, 1), &cp(&t, 39)).is_err());
        // An altered hash.
        let mut altered = back.clone();
        altered.proofs[1].hashes[0][0] ^= 1;
        assert_eq!(
            altered.verify_from(&cp(&t, 17), &new).unwrap_err().code(),
            "log-not-extended"
        );
        assert!(altered.verify_all(&new).is_err());
        // Empty list of proofs is a valid file.
        let empty = ProofFile::build(&t, &new, &[]).unwrap();
        assert_eq!(ProofFile::parse(empty.to_text().as_bytes()).unwrap(), empty);
        // A held checkpoint of a longer log, or same size with another root.
        let longer = cp(&tree(41), 41);
        assert_eq!(
            back.verify_from(&longer, &new).unwrap_err().code(),
            "log-not-extended"
        );
        let mut forked = new.clone();
        forked.root[0] ^= 1;
        assert!(back.verify_from(&forked, &new).is_err());
    }

    #[test]
    fn prefix_check_catches_rollback_fork_and_other_ca() {
        let t = tree(10);
        check_prefix(&t, &origin_for(FP), &cp(&t, 7)).unwrap();
        // The bench saw 12 records; the CA's log has 10 (restored from an older copy).
        let seen = cp(&tree(12), 12);
        assert_eq!(
            check_prefix(&t, &origin_for(FP), &seen).unwrap_err().code(),
            "log-not-extended"
        );
        // Another log of the same length.
        let mut fork = merkle::Tree::new();
        for i in 0..10u64 {
            fork.push(&crate::crypto::sha256(&(i + 100).to_be_bytes()));
        }
        assert!(check_prefix(&t, &origin_for(FP), &cp(&fork, 6)).is_err());
        assert!(ProofFile::build(&t, &cp(&t, 10), &[cp(&fork, 6)]).is_err());
        // Another CA.
        let other = Checkpoint::new(&"a".repeat(64), 3, t.root_at(3).unwrap()).unwrap();
        assert_eq!(
            check_prefix(&t, &origin_for(FP), &other)
                .unwrap_err()
                .code(),
            "checkpoint-wrong-ca"
        );
    }

    #[test]
    fn streaming_log_check() {
        let leaves: Vec<[u8; 32]> = (0..50u64)
            .map(|i| crate::crypto::sha256(&i.to_be_bytes()))
            .collect();
        let t = tree(50);
        let o = origin_for(FP);
        let cps = [cp(&t, 50), cp(&t, 0), cp(&t, 7), cp(&t, 7), cp(&t, 32)];
        assert_eq!(
            verify_log_extends(&o, &leaves, &cps).unwrap(),
            (50, t.root())
        );
        // Tail cut: 40 records left, the checkpoint of 50 is not covered.
        assert_eq!(
            verify_log_extends(&o, &leaves[..40], &cps)
                .unwrap_err()
                .code(),
            "log-not-extended"
        );
        // One record changed inside the prefix of a checkpoint.
        let mut edited = leaves.clone();
        edited[3][0] ^= 1;
        assert!(verify_log_extends(&o, &edited, &[cp(&t, 7)]).is_err());
        // ... or after it: the old checkpoint still holds.
        assert!(verify_log_extends(&o, &edited, &[cp(&t, 2)]).is_ok());
        let other = Checkpoint::new(&"e".repeat(64), 1, t.root_at(1).unwrap()).unwrap();
        assert_eq!(
            verify_log_extends(&o, &leaves, &[other])
                .unwrap_err()
                .code(),
            "checkpoint-wrong-ca"
        );
    }

    #[test]
    fn proof_file_parse_is_strict() {
        let t = tree(9);
        let new = cp(&t, 9);
        let good = ProofFile::build(&t, &new, &[cp(&t, 3)]).unwrap().to_text();
        let lines: Vec<&str> = good.lines().collect();
        let with = |i: usize, l: &str| {
            let mut v = lines.clone();
            v[i] = l;
            v.join("\n") + "\n"
        };
        for bad in [
            good.trim_end().to_string(),
            with(0, "nrfca-consistency-proofs v2"),
            with(1, "origin nrfca/xyz"),
            with(2, "to 9"),
            with(3, "from 3 AAAA 2"),
            with(3, &lines[3].replace(" 3 ", " 03 ")),
            with(3, &format!("{} ", lines[3])),
            with(4, "not-base64"),
            good.clone() + "from 1\n",
            good.clone() + "\n",
            lines[..lines.len() - 1].join("\n") + "\n",
        ] {
            assert!(ProofFile::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(ProofFile::parse(good.as_bytes()).is_ok());
    }
}
