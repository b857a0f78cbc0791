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

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Header of `certs.csv`.
pub const CERTS_HEADER: &str =
    "device_uuid,imei,sec_tag,serial,not_before,not_after,sha256,certificate";
/// Header of `rejects.csv`.
pub const REJECTS_HEADER: &str = "source,line,device_uuid,code,detail";
/// nRF Cloud's bulk onboarding limit: rows per `onboard-NNNN.csv` chunk.
pub const ONBOARD_CHUNK_ROWS: usize = 1000;
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

/// What the bundle writer or verifier refused.
#[derive(Debug)]
pub enum BundleError {
    /// A file could not be read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The output directory already exists.
    Exists(PathBuf),
    /// A device id that cannot be a file name (for `--pem-files`).
    BadDeviceId(String),
    /// The trusted CA PEM is not a usable P-256 certificate.
    BadTrustedCa(String),
    /// A required file is missing (`manifest.json`, `manifest.sig`, or a listed file).
    MissingFile(String),
    /// `manifest.sig` does not verify with the trusted CA key.
    BadSignature,
    /// The bundle was signed by another CA (its own `ca.pem` verifies the manifest).
    WrongSigner {
        /// SHA-256 fingerprint of the bundle's CA.
        bundle_ca: String,
        /// SHA-256 fingerprint of the trusted CA.
        trusted_ca: String,
    },
    /// The bundle's `ca.pem` is not the trusted CA.
    CaMismatch,
    /// A file's SHA-256 differs from the manifest.
    HashMismatch(String),
    /// A file in the bundle that the manifest does not list.
    ExtraFile(String),
    /// `manifest.json` is not a manifest of this format.
    MalformedManifest(String),
    /// A bad row in a bundle CSV.
    MalformedRow {
        /// File name.
        file: String,
        /// 1-based line where the record starts.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// Signing the manifest failed.
    Sign(String),
    /// The directory is a `sign` run's unfinished temporary directory, never a bundle.
    Partial(PathBuf),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Io { path, source } => write!(f, "cannot access {}: {source}; check the path, disk and permissions", path.display()),
            BundleError::Partial(p) => write!(f, "{} is an unfinished temporary directory of `nrfca sign` (its batch was interrupted or is still running), not a bundle; use the bundle directory that sign printed, or run the same sign again", p.display()),
            BundleError::Exists(p) => write!(f, "{} already exists; give a new --out directory (bundles are never overwritten)", p.display()),
            BundleError::BadDeviceId(id) => write!(f, "device id {id:?} cannot be used as a file name; sign without --pem-files"),
            BundleError::BadTrustedCa(why) => write!(f, "the trusted CA certificate is unusable: {why}; pass the CA's ca.pem with --trust"),
            BundleError::MissingFile(n) => write!(f, "bundle file {n} is missing; copy the whole bundle directory again"),
            BundleError::BadSignature => f.write_str("manifest.sig does not verify with the trusted CA: the bundle was altered; copy it again from the signer, or check --trust"),
            BundleError::WrongSigner { bundle_ca, trusted_ca } => write!(f, "the bundle is signed by CA {bundle_ca}, not the trusted CA {trusted_ca}; use the right --trust or the right bundle"),
            BundleError::CaMismatch => f.write_str("the bundle's ca.pem is not the trusted CA; use the right --trust or the right bundle"),
            BundleError::HashMismatch(n) => write!(f, "{n} does not match its SHA-256 in the signed manifest: the bundle was altered; copy it again from the signer"),
            BundleError::ExtraFile(n) => write!(f, "{n} is in the bundle but not in the signed manifest; remove it or copy the bundle again"),
            BundleError::MalformedManifest(why) => write!(f, "manifest.json is malformed: {why}; copy the bundle again"),
            BundleError::MalformedRow { file, line, why } => write!(f, "{file} line {line}: {why}; copy the bundle again"),
            BundleError::Sign(why) => write!(f, "signing manifest.json failed: {why}"),
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Append one CSV field, quoted as Python's QUOTE_MINIMAL does it.
pub fn push_csv_field(out: &mut Vec<u8>, s: &str) {
    if s.as_bytes()
        .iter()
        .any(|&b| b == b',' || b == b'"' || b == b'\r' || b == b'\n')
    {
        out.push(b'"');
        if !s.contains('"') {
            // A PEM: one copy (`contains` is a fast byte search).
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            return;
        }
        // Copy runs between quotes.
        let mut parts = s.as_bytes().split(|&b| b == b'"');
        if let Some(first) = parts.next() {
            out.extend_from_slice(first);
        }
        for part in parts {
            out.extend_from_slice(b"\"\"");
            out.extend_from_slice(part);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
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

/// One `rejects.csv` row, every cell through [`safe_cell`].
fn reject_record_into(
    out: &mut Vec<u8>,
    source: &str,
    line: u64,
    device_uuid: &str,
    code: &str,
    detail: &str,
) {
    let line = line.to_string();
    csv_record_into(
        out,
        &[
            &safe_cell(source),
            &line,
            &safe_cell(device_uuid),
            &safe_cell(code),
            &safe_cell(detail),
        ],
    );
}

fn csv_record_into(out: &mut Vec<u8>, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_csv_field(out, f);
    }
    out.push(b'\n');
}

/// A file being written and hashed; fsync'd on finish.
struct HashedFile {
    name: String,
    path: PathBuf,
    w: BufWriter<File>,
    ctx: ring::digest::Context,
}

impl HashedFile {
    fn create(dir: &Path, name: &str) -> Result<HashedFile, BundleError> {
        let path = dir.join(name);
        // An explicit mode: a permissive umask must not make bundle files group-writable.
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(HashedFile {
            name: name.to_string(),
            path,
            w: BufWriter::with_capacity(256 * 1024, f),
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        })
    }

    fn write(&mut self, b: &[u8]) -> Result<(), BundleError> {
        self.ctx.update(b);
        self.w.write_all(b).map_err(io_err(&self.path))
    }

    fn finish(self, sync: bool) -> Result<FileDigest, BundleError> {
        let HashedFile { name, path, w, ctx } = self;
        let f = w.into_inner().map_err(|e| BundleError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        if sync {
            f.sync_all().map_err(io_err(&path))?;
        }
        Ok(FileDigest {
            name,
            sha256: hex::encode(ctx.finish()),
        })
    }
}

/// Write `data` as a new file `dir/name` (fsync'd when `sync`), return its digest.
fn write_whole(dir: &Path, name: &str, data: &[u8], sync: bool) -> Result<FileDigest, BundleError> {
    let mut f = HashedFile::create(dir, name)?;
    f.write(data)?;
    f.finish(sync)
}

/// Make many small unsynced files in `dir` durable: one `syncfs(2)` of the filesystem, which
/// costs about as much as one fsync (no subprocess: nothing is resolved from `PATH` while the
/// key is unlocked); if the call fails, fsync each file (slow on real disks: ms each).
fn sync_many(dir: &Path, files: &[PathBuf]) -> Result<(), BundleError> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(io_err(dir))?;
    if nix::unistd::syncfs(d.as_raw_fd()).is_err() {
        for p in files {
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(io_err(p))?;
        }
    }
    sync_dir(dir)
}

/// fsync a directory (so created / renamed entries survive power loss).
pub fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    let d = File::open(dir).map_err(io_err(dir))?;
    d.sync_all().map_err(io_err(dir))
}

/// Options for the onboarding rows.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// nRF Cloud subType column (may be empty).
    pub sub_type: String,
    /// Tags, joined with `|`.
    pub tags: Vec<String>,
    /// Firmware types, joined with `|` (default `APP|MODEM`).
    pub fw_types: Vec<String>,
    /// Also write `certs/<deviceId>_crt.pem`.
    pub pem_files: bool,
}

/// Whether `id` is safe as the stem of a file name.
pub fn is_safe_file_stem(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The first half of a bundle, streamed while the batch is still open: the partial directory
/// (`.<B>.nrfca-partial-<batch>`, mode 0700) with `rejects.csv` only. Rejects carry no
/// signature, so a crash or a signal here leaves nothing that a CA signed (SPEC §5). After the
/// batch commits, [`RejectsWriter::into_bundle`] starts the certificate files, written from
/// `ca.db`.
pub struct RejectsWriter {
    dir: PathBuf,
    rejects: HashedFile,
    rejected: u64,
    scratch: Vec<u8>,
}

impl fmt::Debug for RejectsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RejectsWriter({}, {} rejects)",
            self.dir.display(),
            self.rejected
        )
    }
}

impl RejectsWriter {
    /// Create `dir` (must not exist, mode 0700) with `rejects.csv` (header only).
    pub fn create(dir: &Path) -> Result<RejectsWriter, BundleError> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BundleError::Exists(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
        let mut rejects = HashedFile::create(dir, "rejects.csv")?;
        rejects.write(REJECTS_HEADER.as_bytes())?;
        rejects.write(b"\n")?;
        Ok(RejectsWriter {
            dir: dir.to_path_buf(),
            rejects,
            rejected: 0,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// The directory being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add one `rejects.csv` row.
    pub fn add_reject(
        &mut self,
        source: &str,
        line: u64,
        device_uuid: &str,
        code: &str,
        detail: &str,
    ) -> Result<(), BundleError> {
        self.scratch.clear();
        reject_record_into(&mut self.scratch, source, line, device_uuid, code, detail);
        self.rejects.write(&self.scratch)?;
        self.rejected += 1;
        Ok(())
    }

    /// Start the certificate files (`ca.pem`, `certs.csv`, `onboard.csv`): call only once the
    /// batch whose certificates they will hold is committed.
    pub fn into_bundle(
        self,
        ca_pem: &[u8],
        opts: BundleOptions,
    ) -> Result<BundleWriter, BundleError> {
        let RejectsWriter {
            dir,
            rejects,
            scratch,
            ..
        } = self;
        if opts.pem_files {
            let c = dir.join("certs");
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(&c)
                .map_err(io_err(&c))?;
        }
        let done = vec![write_whole(&dir, "ca.pem", ca_pem, false)?];
        let mut certs = HashedFile::create(&dir, "certs.csv")?;
        certs.write(CERTS_HEADER.as_bytes())?;
        certs.write(b"\n")?;
        let onboard = HashedFile::create(&dir, "onboard.csv")?;
        let fw = if opts.fw_types.is_empty() {
            "APP|MODEM".to_string()
        } else {
            opts.fw_types.join("|")
        };
        let tags = safe_cell(&opts.tags.join("|")).into_owned();
        let fw_types = safe_cell(&fw).into_owned();
        let sub_type = safe_cell(&opts.sub_type).into_owned();
        Ok(BundleWriter {
            dir: dir.clone(),
            pem_files: opts.pem_files,
            done,
            certs: CertsPart {
                file: certs,
                scratch: Vec::with_capacity(4096),
            },
            onboard: OnboardPart {
                dir,
                pem_files: opts.pem_files,
                sub_type,
                tags,
                fw_types,
                onboard,
                first_chunk: Vec::new(),
                chunk: None,
                chunk_no: 0,
                rows: 0,
                scratch,
                done: Vec::new(),
            },
            rejects,
        })
    }
}

/// The number of files a finished bundle lists in its manifest for `rows` certificates
/// (`ca.pem`, `certs.csv`, `onboard.csv`, `rejects.csv`, the onboarding chunks above 1000
/// rows, and one PEM per row with `--pem-files`).
pub fn file_count(rows: u64, pem_files: bool) -> u64 {
    let chunks = if rows > ONBOARD_CHUNK_ROWS as u64 {
        rows.div_ceil(ONBOARD_CHUNK_ROWS as u64)
    } else {
        0
    };
    4 + chunks + if pem_files { rows } else { 0 }
}

/// The certificate half of a bundle: started from a [`RejectsWriter`] after the commit, fed
/// from `ca.db`, closed by [`BundleWriter::finish`], which signs the manifest last. The caller
/// renames the directory into place afterwards.
pub struct BundleWriter {
    dir: PathBuf,
    pem_files: bool,
    done: Vec<FileDigest>,
    certs: CertsPart,
    onboard: OnboardPart,
    rejects: HashedFile,
}

/// `certs.csv` of a [`BundleWriter`], writable on its own thread ([`BundleWriter::parts`]).
pub struct CertsPart {
    file: HashedFile,
    scratch: Vec<u8>,
}

/// `onboard.csv`, its chunks and `certs/*.pem` of a [`BundleWriter`], writable on its own
/// thread ([`BundleWriter::parts`]).
pub struct OnboardPart {
    dir: PathBuf,
    pem_files: bool,
    sub_type: String,
    tags: String,
    fw_types: String,
    onboard: HashedFile,
    /// Rows of the first chunk, kept until we know there are more than 1000 rows.
    first_chunk: Vec<u8>,
    chunk: Option<HashedFile>,
    chunk_no: u32,
    rows: u64,
    scratch: Vec<u8>,
    done: Vec<FileDigest>,
}

impl CertsPart {
    /// Add one `certs.csv` row.
    pub fn add(&mut self, row: &CertRow) -> Result<(), BundleError> {
        let sec_tag = row.sec_tag.to_string();
        self.scratch.clear();
        csv_record_into(
            &mut self.scratch,
            &[
                &safe_cell(&row.device_uuid),
                &safe_cell(&row.imei),
                &sec_tag,
                &safe_cell(&row.serial),
                &safe_cell(&row.not_before),
                &safe_cell(&row.not_after),
                &safe_cell(&row.sha256),
                &row.certificate_pem,
            ],
        );
        self.file.write(&self.scratch)
    }
}

impl OnboardPart {
    /// Add one onboarding row (deviceId = `device_id`, the certificate CN) and, with
    /// `pem_files`, `certs/<device_id>_crt.pem`.
    pub fn add(&mut self, device_id: &str, certificate_pem: &str) -> Result<(), BundleError> {
        if self.pem_files && !is_safe_file_stem(device_id) {
            return Err(BundleError::BadDeviceId(device_id.to_string()));
        }
        self.scratch.clear();
        csv_record_into(
            &mut self.scratch,
            &[
                &safe_cell(device_id),
                &self.sub_type,
                &self.tags,
                &self.fw_types,
                certificate_pem,
            ],
        );
        self.onboard.write(&self.scratch)?;
        self.rows += 1;
        let in_chunk = ((self.rows - 1) % ONBOARD_CHUNK_ROWS as u64) as usize;
        if self.rows <= ONBOARD_CHUNK_ROWS as u64 {
            self.first_chunk.extend_from_slice(&self.scratch);
        } else {
            if self.rows == ONBOARD_CHUNK_ROWS as u64 + 1 {
                // More than one chunk: flush the first one from memory.
                let first = std::mem::take(&mut self.first_chunk);
                self.done
                    .push(write_whole(&self.dir, "onboard-0001.csv", &first, false)?);
                self.chunk_no = 1;
            }
            if in_chunk == 0 {
                if let Some(c) = self.chunk.take() {
                    self.done.push(c.finish(false)?);
                }
                self.chunk_no += 1;
                let name = format!("onboard-{:04}.csv", self.chunk_no);
                self.chunk = Some(HashedFile::create(&self.dir, &name)?);
            }
            if let Some(c) = self.chunk.as_mut() {
                c.write(&self.scratch)?;
            }
        }
        if self.pem_files {
            let name = format!("certs/{device_id}_crt.pem");
            self.done.push(write_whole(
                &self.dir,
                &name,
                certificate_pem.as_bytes(),
                false,
            )?);
        }
        Ok(())
    }
}

impl fmt::Debug for BundleWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BundleWriter({}, {} rows)",
            self.dir.display(),
            self.onboard.rows
        )
    }
}

impl BundleWriter {
    /// Create `dir` (must not exist) and start a whole bundle at once, writing `ca.pem`: for
    /// writers that have no batch to commit (tests, tools). `sign` uses [`RejectsWriter`].
    pub fn create(
        dir: &Path,
        ca_pem: &[u8],
        opts: BundleOptions,
    ) -> Result<BundleWriter, BundleError> {
        RejectsWriter::create(dir)?.into_bundle(ca_pem, opts)
    }

    /// The directory being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Add one certificate: a `certs.csv` row, an onboarding row (deviceId = `device_id`,
    /// the certificate CN) and, with `pem_files`, `certs/<device_id>_crt.pem`.
    pub fn add_cert(&mut self, device_id: &str, row: &CertRow) -> Result<(), BundleError> {
        if self.pem_files && !is_safe_file_stem(device_id) {
            return Err(BundleError::BadDeviceId(device_id.to_string()));
        }
        self.certs.add(row)?;
        self.onboard.add(device_id, &row.certificate_pem)
    }

    /// The two halves of the certificate files, to be fed from two threads (each row to both,
    /// in the same order): `certs.csv`, and the onboarding files with the PEM files.
    pub fn parts(&mut self) -> (&mut CertsPart, &mut OnboardPart) {
        (&mut self.certs, &mut self.onboard)
    }

    /// Certificate rows written so far.
    pub fn rows(&self) -> u64 {
        self.onboard.rows
    }

    /// Close every file (fsync'd), write `manifest.json` (with `files` filled in) and
    /// `manifest.sig` signed by `sign` (DER ECDSA-SHA256), fsync the directory.
    pub fn finish<E: fmt::Display>(
        self,
        mut manifest: Manifest,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Finished, BundleError> {
        let BundleWriter {
            dir,
            mut done,
            certs,
            onboard,
            rejects,
            pem_files,
        } = self;
        done.push(certs.file.finish(false)?);
        done.push(onboard.onboard.finish(false)?);
        done.push(rejects.finish(false)?);
        done.extend(onboard.done);
        if let Some(c) = onboard.chunk {
            done.push(c.finish(false)?);
        }
        // Every file durable before the manifest that lists them is signed: one syncfs(2) for
        // the lot (a 100 000-row bundle has ~104 files; an fsync each cost ~0.2 s).
        let paths: Vec<PathBuf> = done.iter().map(|f| dir.join(&f.name)).collect();
        sync_many(&dir, &paths)?;
        if pem_files {
            sync_dir(&dir.join("certs"))?;
        }
        let mut files = done;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        manifest.format = MANIFEST_FORMAT.to_string();
        manifest.files = files;
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BundleError::MalformedManifest(e.to_string()))?;
        json.push(b'\n');
        let manifest_sha256 = write_whole(&dir, "manifest.json", &json, true)?.sha256;
        let sig = sign(&json).map_err(|e| BundleError::Sign(e.to_string()))?;
        let mut b64 = crate::crypto::b64_encode(&sig);
        b64.push('\n');
        write_whole(&dir, "manifest.sig", b64.as_bytes(), true)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(&dir))?;
        sync_dir(&dir)?;
        Ok(Finished {
            manifest,
            manifest_sha256,
        })
    }
}

/// A finished bundle: its manifest, and the SHA-256 of the `manifest.json` bytes written.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The manifest as signed.
    pub manifest: Manifest,
    /// SHA-256 (lowercase hex) of `manifest.json` as written.
    pub manifest_sha256: String,
}

// ---------------------------------------------------------------------------------------
// verify

/// A bundle whose signature, CA and file digests all checked out.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The signed manifest.
    pub manifest: Manifest,
    /// Every row of `certs.csv`, in file order.
    pub certs: Vec<CertRow>,
}

/// The DER of the first CERTIFICATE block of a PEM text.
fn pem_cert_der(pem: &[u8]) -> Option<Vec<u8>> {
    crate::util::first_cert_der(std::str::from_utf8(pem).ok()?)
}

/// The uncompressed P-256 public key of a certificate DER.
pub(crate) fn cert_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key has unused bits")?;
    if key.len() != 65 || key.first() != Some(&4) {
        return Err("not an uncompressed P-256 key".into());
    }
    Ok(key.to_vec())
}

/// Open a bundle file for reading, refusing anything but a regular file (after following
/// symlinks): opening a FIFO blocks forever and a device such as `/dev/zero` never ends.
fn open_regular(path: &Path, name: &str) -> Result<File, BundleError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(io_err(path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BundleError::MissingFile(name.to_string()))
        }
        Err(e) => return Err(io_err(path)(e)),
    }
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(BundleError::MissingFile(name.to_string()))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_limited(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
    let f = open_regular(path, name)?;
    let mut out = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    if out.len() as u64 > limit {
        return Err(BundleError::MalformedManifest(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    Ok(out)
}

fn hash_file(path: &Path, name: &str) -> Result<String, BundleError> {
    let mut f = open_regular(path, name)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if let Some(b) = buf.get(..n) {
            ctx.update(b);
        }
    }
    Ok(hex::encode(ctx.finish()))
}

/// A bundle-relative file name is a plain relative path: no `..`, no absolute path, no
/// backslash, no empty component.
fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// Every file under `dir`, as relative `/`-joined names (directories descended, depth ≤ 4).
fn list_files(
    dir: &Path,
    prefix: &str,
    depth: u32,
    out: &mut Vec<String>,
) -> Result<(), BundleError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(io_err(&entry.path()))?;
        if ft.is_dir() && depth < 4 {
            list_files(&entry.path(), &rel, depth + 1, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Check a bundle against the CA the bench trusts: `manifest.sig` verifies with the trusted
/// CA's key, the bundle's `ca.pem` is that CA, every listed file has its SHA-256, nothing is
/// unlisted, `certs.csv` parses and each row's `sha256` is the SHA-256 of its PEM.
pub fn verify(dir: &Path, trusted_ca_pem: &[u8]) -> Result<VerifiedBundle, BundleError> {
    // Partial directories are refused by name, whatever they hold (SPEC §5); the name is
    // looked at after resolving `.`/`..`/symlinks so another name for one does not pass.
    let resolved = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for p in [dir, resolved.as_path()] {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(PARTIAL_MARK))
        {
            return Err(BundleError::Partial(dir.to_path_buf()));
        }
    }
    let trusted_der = pem_cert_der(trusted_ca_pem)
        .ok_or_else(|| BundleError::BadTrustedCa("no CERTIFICATE PEM block".into()))?;
    let trusted_key = cert_public_key(&trusted_der).map_err(BundleError::BadTrustedCa)?;
    let trusted_fp = crate::crypto::sha256_hex(&trusted_der);

    let manifest_bytes = read_limited(&dir.join("manifest.json"), "manifest.json", MAX_MANIFEST)?;
    let sig_text = read_limited(&dir.join("manifest.sig"), "manifest.sig", MAX_SIG)?;
    let sig = std::str::from_utf8(&sig_text)
        .ok()
        .and_then(|s| crate::crypto::b64_decode(s.trim()).ok())
        .ok_or(BundleError::BadSignature)?;
    if !crate::crypto::verify_p256_sha256(&trusted_key, &manifest_bytes, &sig) {
        // Explain: signed by the CA the bundle carries, but not the trusted one?
        if let Ok(bundle_ca) = read_limited(&dir.join("ca.pem"), "ca.pem", MAX_MANIFEST) {
            if let Some(der) = pem_cert_der(&bundle_ca) {
                if let Ok(k) = cert_public_key(&der) {
                    if k != trusted_key
                        && crate::crypto::verify_p256_sha256(&k, &manifest_bytes, &sig)
                    {
                        return Err(BundleError::WrongSigner {
                            bundle_ca: crate::crypto::sha256_hex(&der),
                            trusted_ca: trusted_fp,
                        });
                    }
                }
            }
        }
        return Err(BundleError::BadSignature);
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::MalformedManifest(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(BundleError::MalformedManifest(format!(
            "format {:?}, expected {MANIFEST_FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.ca_sha256 != trusted_fp {
        return Err(BundleError::CaMismatch);
    }

    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !safe_relative(&f.name) || f.name == "manifest.json" || f.name == "manifest.sig" {
            return Err(BundleError::MalformedManifest(format!(
                "bad file name {:?}",
                f.name
            )));
        }
        if !listed.insert(f.name.clone()) {
            return Err(BundleError::MalformedManifest(format!(
                "{} listed twice",
                f.name
            )));
        }
    }
    for required in ["ca.pem", "certs.csv", "onboard.csv", "rejects.csv"] {
        if !listed.contains(required) {
            return Err(BundleError::MalformedManifest(format!(
                "{required} is not listed"
            )));
        }
    }
    // certs.csv is read once: the rows returned are parsed from exactly the bytes whose
    // SHA-256 was checked (a storage device may answer a second read differently).
    let mut certs_csv: Option<Vec<u8>> = None;
    for f in &manifest.files {
        let h = if f.name == "certs.csv" {
            let bytes = read_limited(&dir.join(&f.name), &f.name, MAX_READ)?;
            let h = crate::crypto::sha256_hex(&bytes);
            certs_csv = Some(bytes);
            h
        } else {
            hash_file(&dir.join(&f.name), &f.name)?
        };
        if h != f.sha256 {
            return Err(BundleError::HashMismatch(f.name.clone()));
        }
    }
    let mut present = Vec::new();
    list_files(dir, "", 0, &mut present)?;
    present.sort();
    // The checkpoint files (`checkpoint::CHECKPOINT_FILE` …, named here: `checkpoint` uses
    // this module, not the reverse) are signed on their own (SPEC §11) and checked by the
    // bench's import (`bench::evidence`); listed or not, they are not extra.
    let evidence = ["checkpoint", "checkpoint.sig", "checkpoint.proofs"];
    for p in present {
        if p != "manifest.json"
            && p != "manifest.sig"
            && !evidence.contains(&p.as_str())
            && !listed.contains(&p)
        {
            return Err(BundleError::ExtraFile(p));
        }
    }
    let bundle_ca = read_limited(&dir.join("ca.pem"), "ca.pem", MAX_MANIFEST)?;
    if pem_cert_der(&bundle_ca).as_deref() != Some(&trusted_der[..]) {
        return Err(BundleError::CaMismatch);
    }

    let certs_csv = certs_csv.ok_or_else(|| BundleError::MissingFile("certs.csv".into()))?;
    let certs = parse_certs_csv(&certs_csv)?;
    Ok(VerifiedBundle { manifest, certs })
}

/// Split CSV text into records: (start line, fields). Quoted fields may span lines.
pub fn parse_csv(text: &str) -> Vec<(u64, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    let mut line = 1u64;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut in_quotes = false;
        let mut was_quoted = false;
        let mut err: Option<String> = None;
        loop {
            let Some(c) = chars.next() else {
                if in_quotes {
                    err.get_or_insert_with(|| "unterminated quoted field".into());
                }
                break;
            };
            if c == '\n' {
                line += 1;
            }
            if in_quotes {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        cur.push('"');
                    } else {
                        in_quotes = false;
                    }
                } else {
                    cur.push(c);
                }
                continue;
            }
            match c {
                '\n' => break,
                ',' => {
                    fields.push(std::mem::take(&mut cur));
                    was_quoted = false;
                }
                '"' if cur.is_empty() && !was_quoted => {
                    in_quotes = true;
                    was_quoted = true;
                }
                '"' => {
                    err.get_or_insert_with(|| "stray quote".into());
                }
                _ if was_quoted => {
                    err.get_or_insert_with(|| "text after a closing quote".into());
                }
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        out.push((start, err.map_or(Ok(fields), Err)));
    }
    out
}

/// Parse and check `certs.csv` bytes.
pub fn parse_certs_csv(data: &[u8]) -> Result<Vec<CertRow>, BundleError> {
    let bad = |line: u64, why: String| BundleError::MalformedRow {
        file: "certs.csv".into(),
        line,
        why,
    };
    let text = std::str::from_utf8(data).map_err(|_| bad(1, "not UTF-8".into()))?;
    let mut rows = Vec::new();
    let mut records = parse_csv(text).into_iter();
    match records.next() {
        Some((_, Ok(h))) if h.join(",") == CERTS_HEADER => {}
        _ => return Err(bad(1, format!("header is not {CERTS_HEADER}"))),
    }
    for (line, rec) in records {
        let fields = rec.map_err(|why| bad(line, why))?;
        let [device_uuid, imei, sec_tag, serial, not_before, not_after, sha256, pem]: [String; 8] =
            fields
                .try_into()
                .map_err(|f: Vec<String>| bad(line, format!("{} columns, expected 8", f.len())))?;
        let sec_tag = sec_tag
            .parse::<u32>()
            .map_err(|_| bad(line, format!("sec_tag {sec_tag:?} is not a number")))?;
        if crate::crypto::sha256_hex(pem.as_bytes()) != sha256 {
            return Err(bad(
                line,
                "sha256 column is not the SHA-256 of the certificate".into(),
            ));
        }
        if pem_cert_der(pem.as_bytes()).is_none() {
            return Err(bad(
                line,
                "certificate column is not a PEM certificate".into(),
            ));
        }
        rows.push(CertRow {
            device_uuid,
            imei,
            sec_tag,
            serial,
            not_before,
            not_after,
            sha256,
            certificate_pem: pem,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::P256Key;

    #[test]
    fn oversized_manifest_and_signature_are_refused_before_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::fs::read("keys/nrf-cloud-coap-ca.pem").unwrap();
        std::fs::write(
            dir.path().join("manifest.json"),
            vec![b' '; (MAX_MANIFEST + 1) as usize],
        )
        .unwrap();
        std::fs::write(dir.path().join("manifest.sig"), "AAAA").unwrap();
        match verify(dir.path(), &ca) {
            Err(BundleError::MalformedManifest(m)) => assert!(m.contains("manifest.json"), "{m}"),
            other => panic!("expected an oversized-manifest refusal, got {other:?}"),
        }
        std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
        std::fs::write(
            dir.path().join("manifest.sig"),
            vec![b'A'; (MAX_SIG + 1) as usize],
        )
        .unwrap();
        match verify(dir.path(), &ca) {
            Err(BundleError::MalformedManifest(m)) => assert!(m.contains("manifest.sig"), "{m}"),
            other => panic!("expected an oversized-signature refusal, got {other:?}"),
        }
    }

    #[test]
    fn quoting_matches_python_minimal() {
        assert_eq!(csv_record(&["a", "b c", ""]), b"a,b c,\n");
        assert_eq!(
            csv_record(&["a,b", "x\"y", "l\nm", "r\rs"]),
            b"\"a,b\",\"x\"\"y\",\"l\nm\",\"r\rs\"\n"
        );
    }

    #[test]
    fn parse_csv_round_trips() {
        let mut data = Vec::new();
        data.extend(csv_record(&["a,b", "x\"y", "l\nm", ""]));
        data.extend(csv_record(&["1", "2"]));
        let recs = parse_csv(std::str::from_utf8(&data).unwrap());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0, 1);
        assert_eq!(
            recs[0].1.as_ref().unwrap(),
            &vec!["a,b", "x\"y", "l\nm", ""]
        );
        assert_eq!(recs[1].0, 3);
        assert!(parse_csv("\"abc").pop().unwrap().1.is_err());
        assert!(parse_csv("a\"b").pop().unwrap().1.is_err());
    }

    #[test]
    fn safe_names() {
        assert!(is_safe_file_stem("50503041-3539-47eb-807b-102dbb423b9a"));
        assert!(is_safe_file_stem("nrf-352656100000001"));
        assert!(!is_safe_file_stem("../x"));
        assert!(!is_safe_file_stem(".hidden"));
        assert!(!is_safe_file_stem("a/b"));
        assert!(safe_relative("certs/a_crt.pem"));
        assert!(!safe_relative("../a"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative("a//b"));
    }

    fn self_signed_ca(key: &P256Key) -> String {
        // A CA certificate good enough for verify(): our own issue() with a self-issuer.
        use crate::signer::issue::*;
        let name = vec![
            0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'T',
            b'e', b's', b't',
        ];
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let prof = IssuerProfile {
            subject_der: name,
            ski: key_identifier(&key.public_key()).to_vec(),
            not_after: now + time::Duration::days(100),
        };
        let iss = Issuance {
            device_id: "Test".into(),
            public_key: key.public_key(),
            serial: Serial::random().unwrap(),
            not_before: now,
            not_after: now + time::Duration::days(10),
        };
        issue(&prof, &iss, |t| key.sign_der(t)).unwrap().pem
    }

    fn make_bundle(dir: &Path, key: &P256Key, ca_pem: &str, n: usize, pem_files: bool) -> Manifest {
        let opts = BundleOptions {
            pem_files,
            ..Default::default()
        };
        // As sign does: rejects first, then the certificate files.
        let mut r = RejectsWriter::create(dir).unwrap();
        r.add_reject("r.csv", 7, "", "bad-base64", "detail, with \"quotes\"")
            .unwrap();
        let mut w = r.into_bundle(ca_pem.as_bytes(), opts).unwrap();
        for i in 0..n {
            let pem = ca_pem.to_string();
            w.add_cert(
                &format!("dev-{i}"),
                &CertRow {
                    device_uuid: format!("u{i}"),
                    imei: String::new(),
                    sec_tag: 16842753,
                    serial: format!("{i:040x}"),
                    not_before: "2025-01-01T00:00:00Z".into(),
                    not_after: "2035-01-01T00:00:00Z".into(),
                    sha256: crate::crypto::sha256_hex(pem.as_bytes()),
                    certificate_pem: pem,
                },
            )
            .unwrap();
        }
        let ca_der = pem_cert_der(ca_pem.as_bytes()).unwrap();
        let m = Manifest {
            format: String::new(),
            batch: "b1".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            ca_sha256: crate::crypto::sha256_hex(&ca_der),
            inputs: vec![],
            files: vec![],
            counts: Counts {
                requests: n as u64 + 1,
                issued: n as u64,
                returned: 0,
                rejected: 1,
            },
        };
        w.finish(m, |b| key.sign_der(b)).unwrap().manifest
    }

    #[test]
    fn chunks_only_above_1000() {
        let (key, _) = P256Key::generate().unwrap();
        let ca = self_signed_ca(&key);
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("b");
        let m = make_bundle(&d, &key, &ca, 1000, false);
        assert!(!d.join("onboard-0001.csv").exists());
        assert_eq!(m.files.len(), 4);
        let d2 = t.path().join("b2");
        let m = make_bundle(&d2, &key, &ca, 2001, true);
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"onboard-0003.csv") && !names.contains(&"onboard-0004.csv"));
        let all = fs::read(d2.join("onboard.csv")).unwrap();
        let mut cat = Vec::new();
        for i in 1..=3 {
            cat.extend(fs::read(d2.join(format!("onboard-{i:04}.csv"))).unwrap());
        }
        assert_eq!(all, cat);
        let c3 = fs::read_to_string(d2.join("onboard-0003.csv")).unwrap();
        assert_eq!(c3.matches("BEGIN CERTIFICATE").count(), 1);
        let v = verify(&d2, ca.as_bytes()).unwrap();
        assert_eq!(v.certs.len(), 2001);
        assert_eq!(v.certs[5].device_uuid, "u5");
    }

    #[test]
    fn verify_refuses_tampering() {
        let (key, _) = P256Key::generate().unwrap();
        let ca = self_signed_ca(&key);
        let t = tempfile::tempdir().unwrap();
        let fresh = |name: &str| {
            let d = t.path().join(name);
            make_bundle(&d, &key, &ca, 3, true);
            d
        };
        let d = fresh("ok");
        assert!(verify(&d, ca.as_bytes()).is_ok());

        let d = fresh("hash");
        fs::write(d.join("rejects.csv"), "x").unwrap();
        assert!(
            matches!(verify(&d, ca.as_bytes()), Err(BundleError::HashMismatch(n)) if n == "rejects.csv")
        );

        let d = fresh("extra");
        fs::write(d.join("certs/evil_crt.pem"), "x").unwrap();
        assert!(
            matches!(verify(&d, ca.as_bytes()), Err(BundleError::ExtraFile(n)) if n == "certs/evil_crt.pem")
        );

        let d = fresh("missing");
        fs::remove_file(d.join("onboard.csv")).unwrap();
        assert!(
            matches!(verify(&d, ca.as_bytes()), Err(BundleError::MissingFile(n)) if n == "onboard.csv")
        );

        let d = fresh("manifest");
        let mut m = fs::read(d.join("manifest.json")).unwrap();
        m[20] ^= 1;
        fs::write(d.join("manifest.json"), m).unwrap();
        assert!(matches!(
            verify(&d, ca.as_bytes()),
            Err(BundleError::BadSignature)
        ));

        let d = fresh("nosig");
        fs::remove_file(d.join("manifest.sig")).unwrap();
        assert!(matches!(
            verify(&d, ca.as_bytes()),
            Err(BundleError::MissingFile(_))
        ));

        // Signed by another CA that the bundle carries.
        let (other, _) = P256Key::generate().unwrap();
        let other_ca = self_signed_ca(&other);
        let d = t.path().join("other");
        make_bundle(&d, &other, &other_ca, 1, false);
        assert!(matches!(
            verify(&d, ca.as_bytes()),
            Err(BundleError::WrongSigner { .. })
        ));

        // A row whose sha256 column lies (re-signed so only the row check can catch it).
        let d = t.path().join("row");
        make_bundle(&d, &key, &ca, 1, false);
        let csv = fs::read_to_string(d.join("certs.csv")).unwrap();
        let bad = csv.replacen(",2035-01-01T00:00:00Z,", ",2035-01-01T00:00:00Z,00", 1);
        fs::write(d.join("certs.csv"), &bad).unwrap();
        let mut m: Manifest =
            serde_json::from_slice(&fs::read(d.join("manifest.json")).unwrap()).unwrap();
        for f in &mut m.files {
            if f.name == "certs.csv" {
                f.sha256 = crate::crypto::sha256_hex(bad.as_bytes());
            }
        }
        let json = serde_json::to_vec_pretty(&m).unwrap();
        fs::write(d.join("manifest.json"), &json).unwrap();
        fs::write(
            d.join("manifest.sig"),
            crate::crypto::b64_encode(&key.sign_der(&json).unwrap()),
        )
        .unwrap();
        assert!(matches!(
            verify(&d, ca.as_bytes()),
            Err(BundleError::MalformedRow { line: 2, .. })
        ));

        assert!(matches!(
            verify(&d, b"nope"),
            Err(BundleError::BadTrustedCa(_))
        ));
        assert!(matches!(
            BundleWriter::create(&d, ca.as_bytes(), BundleOptions::default()),
            Err(BundleError::Exists(_))
        ));
    }
}
