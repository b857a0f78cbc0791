//! The signed bundle (signer → bench, SPEC §2): the streaming [`BundleWriter`] `sign` uses
//! and the [`verify`] reader `bench import` uses.
//!
//! Layout of a bundle directory:
//!
//! ```text
//! ca.pem            the issuing CA certificate
//! certs.csv         device_uuid,imei,sec_tag,serial,not_before,not_after,sha256,certificate
//! onboard.csv       nRF Cloud bulk onboarding rows (no header), all of them
//! onboard-0001.csv  … chunks of ≤ 1000 rows, only when there are more than 1000 rows
//! rejects.csv       source,line,device_uuid,code,detail (always present)
//! certs/<id>_crt.pem  with --pem-files
//! manifest.json     batch, created_at, ca_sha256, inputs, files (name + sha256), counts
//! manifest.sig      base64 of the DER ECDSA-SHA256 signature of manifest.json by the CA key
//! ```
//!
//! CSV quoting is byte-compatible with Python's `csv.writer(f, lineterminator="\n")`
//! (QUOTE_MINIMAL): a field is quoted iff it holds `,` `"` CR or LF, inner quotes doubled.
//!
//! Layout: the formats here (headers, rows, manifest, errors, CSV cells); `write` (the
//! writers `sign` uses), `read` (verification and `certs.csv` for `bench import`).

mod read;
mod write;

pub(crate) use read::cert_public_key;
pub use read::{parse_certs_csv, parse_csv, verify, VerifiedBundle};
pub use write::{
    file_count, is_safe_file_stem, sync_dir, BundleOptions, BundleWriter, CertsPart, Finished,
    OnboardPart, RejectsWriter,
};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Header of `certs.csv`.
pub const CERTS_HEADER: &str =
    "device_uuid,imei,sec_tag,serial,not_before,not_after,sha256,certificate";
/// Header of `rejects.csv`.
pub const REJECTS_HEADER: &str = "source,line,device_uuid,code,detail";
/// nRF Cloud's bulk onboarding limit: rows per `onboard-NNNN.csv` chunk.
pub const ONBOARD_CHUNK_ROWS: usize = 1000;
/// The bundle's signed checkpoint of the CA's audit log (SPEC §11).
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Its signature (base64 DER ECDSA-SHA256 by the CA key).
pub const CHECKPOINT_SIG_FILE: &str = "checkpoint.sig";
/// Consistency proofs from the checkpoints the inputs quoted to [`CHECKPOINT_FILE`].
pub const CHECKPOINT_PROOFS_FILE: &str = "checkpoint.proofs";
/// Format tag written into `manifest.json`.
pub const MANIFEST_FORMAT: &str = "nrfca-bundle/1";
/// Largest `certs.csv` [`verify`] reads (bytes).
pub const MAX_READ: u64 = 1 << 30;
/// Largest `manifest.json` / `ca.pem` [`verify`] reads before the signature is checked (bytes):
/// a manifest lists a few dozen files, so anything bigger is not one of ours.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Largest `manifest.sig` (bytes): base64 of a DER ECDSA signature is under 100.
pub const MAX_SIG: u64 = 4096;
/// Marker in the name of a bundle directory still being written (`.<B>.nrfca-partial-<batch>`):
/// such a directory is never a bundle, whatever it holds, and [`verify`] refuses it.
pub const PARTIAL_MARK: &str = ".nrfca-partial-";
/// Mode of every bundle file (before the umask): certificates are public, never writable by others.
pub const FILE_MODE: u32 = 0o644;
/// Mode of a finished bundle directory (a partial one is 0700 until [`BundleWriter::finish`]).
pub const DIR_MODE: u32 = 0o755;

/// One certificate row of `certs.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRow {
    /// Attested device UUID (lowercase, hyphenated).
    pub device_uuid: String,
    /// IMEI from the requests file or the CN (may be empty).
    pub imei: String,
    /// The attested sec_tag.
    pub sec_tag: u32,
    /// Serial, lowercase hex.
    pub serial: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// SHA-256 (lowercase hex) of `certificate_pem` as written.
    pub sha256: String,
    /// The PEM, LF line ends, final LF.
    pub certificate_pem: String,
}

/// Name and SHA-256 of one input or bundle file in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// File name (inputs: the path as given; bundle files: relative path with `/`).
    pub name: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Counts in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests read (every record, good or bad).
    pub requests: u64,
    /// Newly issued certificates.
    pub issued: u64,
    /// Certificates given back for a re-submitted identical KEYGEN string.
    pub returned: u64,
    /// Rejected requests (rows of rejects.csv).
    pub rejected: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Batch id (as in `ca.db` and the audit log).
    pub batch: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// SHA-256 fingerprint of the CA certificate DER, lowercase hex.
    pub ca_sha256: String,
    /// The requests files signed.
    pub inputs: Vec<FileDigest>,
    /// Every file of the bundle but manifest.json / manifest.sig, sorted by name.
    pub files: Vec<FileDigest>,
    /// Counts.
    pub counts: Counts,
}

/// What the bundle writer or verifier refused. Display is this layer's sentence; an OS error
/// is the `source()` (docs/architecture.md, "Errors"). The `String` payloads are words (a
/// file name, what is malformed); the kinds a caller acts on are variants.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("cannot access {}; check the path, disk and permissions", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The output directory already exists.
    #[error("{} already exists; give a new --out directory (bundles are never overwritten)", .0.display())]
    Exists(PathBuf),
    /// A device id that cannot be a file name (for `--pem-files`).
    #[error("device id {0:?} cannot be used as a file name; sign without --pem-files")]
    BadDeviceId(String),
    /// The trusted CA PEM is not a usable P-256 certificate.
    #[error("the trusted CA certificate is unusable: {0}; pass the CA's ca.pem with --trust")]
    BadTrustedCa(String),
    /// A required file is missing (`manifest.json`, `manifest.sig`, or a listed file).
    #[error("bundle file {0} is missing; copy the whole bundle directory again")]
    MissingFile(String),
    /// `manifest.sig` does not verify with the trusted CA key.
    #[error("manifest.sig does not verify with the trusted CA: the bundle was altered; copy it again from the signer, or check --trust")]
    BadSignature,
    /// The bundle was signed by another CA (its own `ca.pem` verifies the manifest).
    #[error("the bundle is signed by CA {bundle_ca}, not the trusted CA {trusted_ca}; use the right --trust or the right bundle")]
    WrongSigner {
        /// SHA-256 fingerprint of the bundle's CA.
        bundle_ca: String,
        /// SHA-256 fingerprint of the trusted CA.
        trusted_ca: String,
    },
    /// The bundle's `ca.pem` is not the trusted CA.
    #[error(
        "the bundle's ca.pem is not the trusted CA; use the right --trust or the right bundle"
    )]
    CaMismatch,
    /// A file's SHA-256 differs from the manifest.
    #[error("{0} does not match its SHA-256 in the signed manifest: the bundle was altered; copy it again from the signer")]
    HashMismatch(String),
    /// A file in the bundle that the manifest does not list.
    #[error(
        "{0} is in the bundle but not in the signed manifest; remove it or copy the bundle again"
    )]
    ExtraFile(String),
    /// `manifest.json` is not a manifest of this format.
    #[error("manifest.json is malformed: {0}; copy the bundle again")]
    MalformedManifest(String),
    /// A bad row in a bundle CSV.
    #[error("{file} line {line}: {why}; copy the bundle again")]
    MalformedRow {
        /// File name.
        file: String,
        /// 1-based line where the record starts.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// Signing the manifest failed.
    #[error("signing manifest.json failed: {0}")]
    Sign(String),
    /// The directory is a `sign` run's unfinished temporary directory, never a bundle.
    #[error("{} is an unfinished temporary directory of `nrfca sign` (its batch was interrupted or is still running), not a bundle; use the bundle directory that sign printed, or run the same sign again", .0.display())]
    Partial(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One CSV record with LF.
pub fn csv_record(fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum::<usize>() + 8);
    csv_record_into(&mut out, fields);
    out
}

/// Defence in depth for a CSV cell that is not a certificate PEM (SPEC §3: "CSV cells are only
/// values that passed the shapes"): every value reaching here is already checked or our own,
/// but should one slip through, control characters are made visible ([`crate::util::term_escape`])
/// and a leading spreadsheet formula character (`=`, `+`, `-`, `@`) gets a `'` in front, so no
/// spreadsheet evaluates it. Checked values are borrowed unchanged.
pub fn safe_cell(s: &str) -> std::borrow::Cow<'_, str> {
    let t = crate::util::term_escape(s);
    if crate::requests::starts_like_formula(&t) {
        std::borrow::Cow::Owned(format!("'{t}"))
    } else {
        t
    }
}

/// One CSV record with LF into `out`, written by the `csv` crate the way Python's
/// `csv.writer(f, lineterminator="\n")` does (QUOTE_MINIMAL): a field is quoted iff it holds
/// `,` `"` CR or LF, inner quotes doubled. `onboard.csv` must stay byte-identical (the test
/// `csv_records_match_python` pins the bytes).
fn csv_record_into(out: &mut Vec<u8>, fields: &[&str]) {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    // Writing into a Vec cannot fail.
    let _ = w.write_record(fields);
    let _ = w.flush();
}

#[cfg(test)]
mod tests;
