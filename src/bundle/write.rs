//! Writing a bundle: the rejects file before the commit, then certs.csv, onboard.csv (and its
//! chunks), the PEM files and the signed manifest, every file hashed as it is written.

use super::*;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

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
    /// `chain.pem` (an intermediate CA's certificate then its root's), when the CA is one.
    pub chain_pem: Option<Vec<u8>>,
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
        let mut done = vec![write_whole(&dir, "ca.pem", ca_pem, false)?];
        if let Some(chain) = &opts.chain_pem {
            done.push(write_whole(&dir, "chain.pem", chain, false)?);
        }
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

    /// Write a whole extra file at the top of the bundle (`checkpoint`, `checkpoint.sig`,
    /// `checkpoint.proofs`); it is listed in the manifest like the others.
    pub fn add_file(&mut self, name: &str, data: &[u8]) -> Result<(), BundleError> {
        let f = write_whole(&self.dir, name, data, false)?;
        self.done.push(f);
        Ok(())
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
