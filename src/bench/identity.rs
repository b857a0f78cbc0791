//! The bench's identity (SPEC §10) in the bench state directory `S/`: its P-256 signing key
//! `S/bench.key` (PKCS#8 PEM, mode 0600), its public key `S/bench.pem` (what the officer
//! passes to `ca trust-bench`) and its name `S/bench.name`; create, load, and sign the
//! `requests.csv.sig` statement with it.

use crate::checkpoint::Checkpoint;
use crate::crypto::{self, P256Key};
use crate::provenance::{self, ProvenanceError, Statement};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The private key file in the state directory (PKCS#8 `PRIVATE KEY` PEM, mode 0600).
pub const KEY_FILE: &str = "bench.key";
/// The public key file (`PUBLIC KEY` PEM).
pub const PUBLIC_FILE: &str = "bench.pem";
/// The bench name (one line).
pub const NAME_FILE: &str = "bench.name";

/// Why the bench identity could not be created, loaded or used. Display is this layer's
/// sentence; the cause is the `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `bench init` was already run for this state directory.
    #[error("this bench already has a key ({}{}); keep it (the CA trusts that key), or use another --state for a new bench", path.display(), fingerprint_note(fingerprint))]
    Exists {
        /// The existing key file.
        path: PathBuf,
        /// Its public key fingerprint, if readable.
        fingerprint: Option<String>,
    },
    /// No identity: `bench init` has not been run.
    #[error("the bench state {} has no bench key; run `nrfca bench init --state {} --name NAME` and have the officer trust its bench.pem", .0.display(), .0.display())]
    Missing(PathBuf),
    /// The key file is readable by group or others.
    #[error("{} is readable by other users; run `chmod 600 {}` and check nobody copied it", .0.display(), .0.display())]
    Permissions(PathBuf),
    /// A file of the identity is unreadable or inconsistent.
    #[error("{} is unusable ({why}); restore the bench state from its backup, or make a new bench with `nrfca bench init` in a new --state and have the officer trust it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A name or statement problem.
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    /// Reading or writing failed.
    #[error("{}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl IdentityError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Exists { .. } => "bench-already-initialised",
            IdentityError::Missing(_) => "bench-not-initialised",
            IdentityError::Permissions(_) => "bench-key-permissions",
            IdentityError::Corrupt { .. } => "bench-identity-corrupt",
            IdentityError::Provenance(e) => e.code(),
            IdentityError::Io { .. } => "bench-identity-io",
        }
    }
}

/// `, fingerprint …` when the existing key's fingerprint is known.
fn fingerprint_note(fingerprint: &Option<String>) -> String {
    fingerprint
        .as_ref()
        .map(|fp| format!(", fingerprint {fp}"))
        .unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A loaded bench identity. The key stays in zeroizing memory; `Debug` shows no secret.
pub struct BenchIdentity {
    name: String,
    key: P256Key,
    fingerprint: String,
    public_pem: String,
}

impl fmt::Debug for BenchIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BenchIdentity({:?}, {})", self.name, self.fingerprint)
    }
}

/// PKCS#8 DER as a `PRIVATE KEY` PEM, built in zeroizing memory sized up front.
fn private_key_pem(pkcs8: &[u8]) -> Zeroizing<String> {
    use base64::Engine as _;
    let mut b64 = Zeroizing::new(String::with_capacity(pkcs8.len() * 4 / 3 + 4));
    base64::engine::general_purpose::STANDARD.encode_string(pkcs8, &mut b64);
    let mut pem = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII: every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Write `data` with `mode` to a new temporary file in `dir` (a name no other process uses)
/// and fsync it; the caller renames or links it into place.
fn write_tmp(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<PathBuf, IdentityError> {
    let nonce = hex::encode(crypto::random_bytes::<8>());
    let tmp = dir.join(format!(".{name}.{}.{nonce}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    Ok(tmp)
}

impl BenchIdentity {
    /// `bench init`: create the bench key, `bench.pem` and `bench.name` in `state_dir`
    /// (created if missing). Refuses when the directory already has a bench key.
    pub fn create(state_dir: &Path, name: &str) -> Result<BenchIdentity, IdentityError> {
        provenance::check_name(name)?;
        let key_path = state_dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(IdentityError::Exists {
                fingerprint: BenchIdentity::load(state_dir).ok().map(|i| i.fingerprint),
                path: key_path,
            });
        }
        fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let (key, pkcs8) = P256Key::generate().map_err(|e| IdentityError::Corrupt {
            path: key_path.clone(),
            why: e.to_string(),
        })?;
        let public_pem = provenance::public_key_pem(&key.public_key())?;
        let fingerprint = provenance::key_fingerprint(&key.public_key())?;
        let pem = private_key_pem(&pkcs8);
        let tmps = [
            write_tmp(state_dir, PUBLIC_FILE, public_pem.as_bytes(), 0o644)?,
            write_tmp(state_dir, NAME_FILE, format!("{name}\n").as_bytes(), 0o644)?,
            write_tmp(state_dir, KEY_FILE, pem.as_bytes(), 0o600)?,
        ];
        let [pub_tmp, name_tmp, key_tmp] = &tmps;
        // The key is linked into place, never renamed: linking fails rather than replace a
        // key another `bench init` put there meanwhile, and then nothing of ours lands.
        let linked = fs::hard_link(key_tmp, &key_path);
        let _ = fs::remove_file(key_tmp);
        if let Err(e) = linked {
            let _ = fs::remove_file(pub_tmp);
            let _ = fs::remove_file(name_tmp);
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(IdentityError::Exists {
                    path: key_path,
                    fingerprint: None,
                });
            }
            return Err(io_err(&key_path)(e));
        }
        for (tmp, file) in [(pub_tmp, PUBLIC_FILE), (name_tmp, NAME_FILE)] {
            let path = state_dir.join(file);
            fs::rename(tmp, &path).map_err(io_err(&path))?;
        }
        if let Ok(d) = fs::File::open(state_dir) {
            let _ = d.sync_all();
        }
        Ok(BenchIdentity {
            name: name.to_string(),
            key,
            fingerprint,
            public_pem,
        })
    }

    /// Whether `state_dir` holds a bench key.
    pub fn exists(state_dir: &Path) -> bool {
        state_dir.join(KEY_FILE).exists()
    }

    /// Load the identity of `state_dir`: the key (mode must not allow group or others), the
    /// name, and `bench.pem`, which must be the key's public half.
    pub fn load(state_dir: &Path) -> Result<BenchIdentity, IdentityError> {
        let key_path = state_dir.join(KEY_FILE);
        let meta = match fs::metadata(&key_path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(state_dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(&key_path)(e)),
        };
        if !meta.is_file() {
            return Err(IdentityError::Corrupt {
                path: key_path,
                why: "not a regular file".into(),
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(IdentityError::Permissions(key_path));
        }
        let pem = Zeroizing::new(fs::read_to_string(&key_path).map_err(io_err(&key_path))?);
        let corrupt = |path: &Path, why: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let pkcs8 =
            crypto::pkcs8_from_pem_any(&pem).map_err(|e| corrupt(&key_path, e.to_string()))?;
        let key = P256Key::from_pkcs8(&pkcs8).map_err(|e| corrupt(&key_path, e.to_string()))?;
        let name_path = state_dir.join(NAME_FILE);
        let name_text = fs::read_to_string(&name_path).map_err(io_err(&name_path))?;
        let name = name_text
            .strip_suffix('\n')
            .ok_or_else(|| corrupt(&name_path, "no final newline".into()))?;
        provenance::check_name(name).map_err(|e| corrupt(&name_path, e.to_string()))?;
        let pub_path = state_dir.join(PUBLIC_FILE);
        let public_pem = fs::read_to_string(&pub_path).map_err(io_err(&pub_path))?;
        let public = provenance::public_key_from_pem(&public_pem)
            .map_err(|e| corrupt(&pub_path, e.to_string()))?;
        if public != key.public_key() {
            return Err(corrupt(
                &pub_path,
                "not the public half of bench.key".into(),
            ));
        }
        let fingerprint = provenance::key_fingerprint(&public)?;
        Ok(BenchIdentity {
            name: name.to_string(),
            key,
            fingerprint,
            public_pem,
        })
    }

    /// The bench name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `bench.pem`'s text.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The uncompressed SEC1 public key.
    pub fn public_key(&self) -> [u8; 65] {
        self.key.public_key()
    }

    /// The `requests.csv.sig` text for `requests` (the exact bytes of the requests file as
    /// written) quoting `checkpoints` (the newest verified one per CA).
    pub fn sign_statement(
        &self,
        requests: &[u8],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<String, IdentityError> {
        let st = Statement::new(&self.name, &self.fingerprint, requests, checkpoints)?;
        Ok(st.sign(|m| self.key.sign_der(m))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::SignedStatement;

    #[test]
    fn create_load_sign_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("state");
        assert_eq!(
            BenchIdentity::load(&s).unwrap_err().code(),
            "bench-not-initialised"
        );
        let id = BenchIdentity::create(&s, "bench 1").unwrap();
        let mut files: Vec<String> = fs::read_dir(&s)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [KEY_FILE, NAME_FILE, PUBLIC_FILE]);
        let mode = fs::metadata(s.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(fs::read_to_string(s.join(KEY_FILE))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(
            fs::read_to_string(s.join(PUBLIC_FILE)).unwrap(),
            id.public_pem()
        );
        assert!(!format!("{id:?}").contains("PRIVATE"));

        let again = BenchIdentity::create(&s, "bench 1").unwrap_err();
        assert_eq!(again.code(), "bench-already-initialised");
        assert!(again.to_string().contains(id.fingerprint()));

        let loaded = BenchIdentity::load(&s).unwrap();
        assert_eq!(loaded.name(), "bench 1");
        assert_eq!(loaded.public_key(), id.public_key());
        assert_eq!(loaded.fingerprint(), id.fingerprint());

        let file = loaded.sign_statement(b"abc", vec![]).unwrap();
        let st = SignedStatement::parse(file.as_bytes()).unwrap();
        st.verify(&id.public_key(), b"abc").unwrap();
        assert_eq!(st.statement.bench, "bench 1");

        fs::set_permissions(s.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            BenchIdentity::load(&s).unwrap_err().code(),
            "bench-key-permissions"
        );
        fs::set_permissions(s.join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();

        // bench.pem replaced by another bench's key.
        let other = BenchIdentity::create(&dir.path().join("other"), "b2").unwrap();
        fs::write(s.join(PUBLIC_FILE), other.public_pem()).unwrap();
        assert_eq!(
            BenchIdentity::load(&s).unwrap_err().code(),
            "bench-identity-corrupt"
        );

        assert_eq!(
            BenchIdentity::create(&dir.path().join("x"), " bad")
                .unwrap_err()
                .code(),
            "bench-name-invalid"
        );
    }
}
