//! `ca init` (a new P-256 CA) and `ca import` (adopt an existing one): the CA's files written
//! once, each published without replacing anything, with the first audit records.

use super::profile::{parse_subject, Attr};
use super::show::show;
use super::{io_err, CaError, CaInfo, InitOptions, MAX_DAYS};
use crate::crypto::{self, P256Key};
use crate::signer::audit::{self, AuditWriter};
use crate::signer::ca_files::{
    analyze_cert, analyze_cert_issued_by, cert_der_from_pem_file, prefix_path, read_limited,
    rfc3339, CaCert, CA_DB, CA_KEY, CA_KEY_PKCS11, CA_PEM, PARENT_PEM, QUORUM_MANIFEST, SHARES_DIR,
};
use crate::signer::db;
use crate::signer::key::age::{custody_of_file, AgeKey};
use crate::signer::key::pkcs11::{Pin, Pkcs11Key, TokenSelector};
use crate::signer::key::quorum::{self, Custodian};
use crate::signer::key::{CaSigner, Custody, KeyError, RcgenSigner};
use crate::signer::secret::{self, CaKey, Protection};
use serde_json::json;
use std::io;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

fn refuse_existing(ca_dir: &Path) -> Result<(), CaError> {
    for name in [
        CA_PEM,
        CA_KEY,
        CA_DB,
        CA_KEY_PKCS11,
        QUORUM_MANIFEST,
        SHARES_DIR,
    ] {
        let p = ca_dir.join(name);
        if p.symlink_metadata().is_ok() {
            return Err(CaError::Exists(p));
        }
    }
    Ok(())
}

fn ensure_dir(ca_dir: &Path) -> Result<(), CaError> {
    if ca_dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(ca_dir).map_err(io_err(ca_dir))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ca_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(ca_dir))?;
    Ok(())
}

pub(crate) fn tmp_name(ca_dir: &Path, name: &str) -> PathBuf {
    let r: [u8; 6] = crypto::random_bytes();
    ca_dir.join(format!(".{name}.tmp-{}", hex::encode(r)))
}

/// Publish `tmp` as `final_path` without ever replacing an existing file (link + unlink).
fn publish(tmp: &Path, final_path: &Path) -> Result<(), CaError> {
    let res = std::fs::hard_link(tmp, final_path);
    let _ = std::fs::remove_file(tmp);
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(CaError::Exists(final_path.to_path_buf()))
        }
        Err(e) => Err(io_err(final_path)(e)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Write the three CA files. On failure, removes whatever this call created.
#[allow(clippy::too_many_arguments)]
fn write_ca_files(
    ca_dir: &Path,
    cert: &CaCert,
    key: &dyn CaSigner,
    key_files: &[KeyFile],
    protection_desc: &str,
    event: &str,
    extra_details: serde_json::Value,
    operator: &str,
    role: Option<&str>,
) -> Result<(), CaError> {
    // What every CA record says, then what is particular to `event`.
    let mut details = json!({
        "subject": cert.subject,
        "serial": cert.serial,
        "fingerprint": cert.fingerprint,
        "not_before": rfc3339(cert.not_before),
        "not_after": rfc3339(cert.not_after),
        "key_protection": protection_desc,
        "custody": key.custody(),
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra_details) {
        d.extend(extra);
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), CaError> {
        // Key first: once a certificate exists, its key must too.
        for f in key_files {
            let target = ca_dir.join(&f.name);
            if let Some(parent) = target.parent().filter(|p| *p != ca_dir) {
                if !parent.is_dir() {
                    ensure_dir(parent)?;
                    created.push(parent.to_path_buf());
                }
            }
            let dir = target.parent().unwrap_or(ca_dir);
            let tmp = tmp_name(
                dir,
                target.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
            );
            secret::write_secret_file(&tmp, &f.bytes)?;
            publish(&tmp, &target)?;
            created.push(target);
        }

        let tmp = tmp_name(ca_dir, CA_PEM);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(cert.pem.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io_err(&tmp))?;
        }
        publish(&tmp, &ca_dir.join(CA_PEM))?;
        created.push(ca_dir.join(CA_PEM));

        let tmp = tmp_name(ca_dir, CA_DB);
        let fill = (|| -> Result<(), CaError> {
            let mut conn = db::open(&tmp)?;
            let tx = db::begin_immediate(&mut conn)?;
            let now = audit::now_rfc3339();
            for (k, v) in [
                (db::meta::CA_FINGERPRINT, cert.fingerprint.as_str()),
                (db::meta::KEY_PROTECTION, protection_desc),
                (db::meta::CREATED_AT, now.as_str()),
            ] {
                db::meta::set(&tx, k, v)?;
            }
            if let Some(r) = role {
                db::meta::set(&tx, META_ROLE, r)?;
            }
            let mut w = AuditWriter::new(&tx, operator)?;
            w.append(&tx, event, &details)?;
            w.checkpoint(&tx, key)?;
            drop(w);
            tx.commit()?;
            // Leave a single self-contained file: fold the WAL back in before closing.
            db::close(conn).map_err(CaError::Sqlite)?;
            Ok(())
        })();
        if let Err(e) = fill {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
            }
            return Err(e);
        }
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        publish(&tmp, &ca_dir.join(CA_DB))?;
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        created.push(ca_dir.join(CA_DB));
        sync_dir(ca_dir)
    })();
    if result.is_err() {
        for p in created.iter().rev() {
            if p.is_dir() {
                let _ = std::fs::remove_dir(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    result
}

/// The recorded `key_protection` text: as before for an age file (so `ca show` reads the
/// same), the custody's description otherwise.
fn describe(custody: &NewCustody, protection: &Protection, key: &dyn CaSigner) -> String {
    match custody {
        NewCustody::Age { scrypt_log_n } => match protection {
            Protection::Passphrase(_) => {
                format!("passphrase (age scrypt, work factor 2^{scrypt_log_n})")
            }
            Protection::Recipients(_) => protection.describe(),
        },
        _ => key.custody().describe(),
    }
}

fn log_n_of(custody: &NewCustody) -> Option<u8> {
    match custody {
        NewCustody::Age { scrypt_log_n } | NewCustody::Quorum { scrypt_log_n, .. } => {
            Some(*scrypt_log_n)
        }
        NewCustody::Pkcs11 { .. } => None,
    }
}

/// One file of the key's custody, relative to the CA directory (written 0600, never over an
/// existing file).
pub(crate) struct KeyFile {
    /// Path relative to the CA directory.
    pub(crate) name: String,
    /// Contents.
    pub(crate) bytes: Vec<u8>,
}

/// How `ca init` / `ca import` hold the new key (SPEC §13). With [`NewCustody::Age`] the
/// key is encrypted to [`InitOptions::protection`]; the other kinds ignore it.
pub enum NewCustody {
    /// `ca.key.age`, a passphrase (scrypt 2^`scrypt_log_n`) or age recipients.
    Age {
        /// scrypt work factor for a passphrase.
        scrypt_log_n: u8,
    },
    /// `ca.key.age` encrypted to an identity split M-of-N: `quorum.json`,
    /// `shares/NAME.share.age`.
    Quorum {
        /// M.
        threshold: u8,
        /// The custodians and how their shares are locked.
        custodians: Vec<Custodian>,
        /// scrypt work factor of passphrase-locked shares.
        scrypt_log_n: u8,
    },
    /// The key in a PKCS#11 token (generated there, or imported), `ca.key.pkcs11`.
    Pkcs11 {
        /// The module (shared library).
        module: PathBuf,
        /// Which token.
        token: TokenSelector,
        /// The user PIN.
        pin: Pin,
        /// CKA_LABEL of the key objects.
        label: String,
    },
}

impl std::fmt::Debug for NewCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewCustody::Age { scrypt_log_n } => write!(f, "Age(2^{scrypt_log_n})"),
            NewCustody::Quorum {
                threshold,
                custodians,
                ..
            } => {
                write!(f, "Quorum({threshold}-of-{})", custodians.len())
            }
            NewCustody::Pkcs11 { module, .. } => write!(f, "Pkcs11({})", module.display()),
        }
    }
}

impl NewCustody {
    fn check(&self, protection: &Protection) -> Result<(), CaError> {
        match self {
            NewCustody::Age { scrypt_log_n } => {
                secret::check_scrypt_log_n(*scrypt_log_n)?;
                if let Protection::Recipients(r) = protection {
                    secret::parse_recipients(r)?;
                }
            }
            NewCustody::Quorum { scrypt_log_n, .. } => secret::check_scrypt_log_n(*scrypt_log_n)?,
            NewCustody::Pkcs11 { .. } => {}
        }
        Ok(())
    }
}

/// Hold the new CA's key as `custody` says, once its certificate `cert` exists: the files to
/// write and the signer (with its custody) for the first checkpoint. `pkcs8` is the key in
/// memory (None: generated in the token, `token` holds it). `protection` is what an age
/// custody encrypts to (`ca init`/`import`); `ca protect` moves keys to a quorum or a token
/// only, and passes None. Shared by both, so a custody's files are made in one place.
pub(crate) fn hold_key(
    custody: &NewCustody,
    protection: Option<&Protection>,
    cert: &CaCert,
    pkcs8: Option<&[u8]>,
    token: Option<Pkcs11Key>,
) -> Result<(Vec<KeyFile>, Box<dyn CaSigner>), CaError> {
    if let Some(t) = token {
        let mut line = t.uri().format();
        line.push('\n');
        let files = vec![KeyFile {
            name: CA_KEY_PKCS11.to_string(),
            bytes: line.into_bytes(),
        }];
        return Ok((files, Box::new(t)));
    }
    let pkcs8 = pkcs8.ok_or_else(|| CaError::Protect("no key to hold".into()))?;
    let key = CaKey::from_pkcs8(pkcs8)?;
    match custody {
        NewCustody::Age { scrypt_log_n } => {
            let protection = protection.ok_or_else(|| {
                CaError::Protect("no passphrase or recipients to encrypt the key to".into())
            })?;
            let ciphertext = secret::encrypt_with_log_n(pkcs8, protection, *scrypt_log_n)?;
            let c = custody_of_file(&ciphertext)?;
            let c = match (c, protection) {
                (Custody::Recipients { count, .. }, Protection::Recipients(r)) => {
                    Custody::Recipients {
                        count,
                        recipients: r.clone(),
                    }
                }
                (c, _) => c,
            };
            Ok((
                vec![KeyFile {
                    name: CA_KEY.to_string(),
                    bytes: ciphertext,
                }],
                Box::new(AgeKey::new(key, c)),
            ))
        }
        NewCustody::Quorum {
            threshold,
            custodians,
            scrypt_log_n,
        } => {
            let setup = quorum::create(
                pkcs8,
                &cert.fingerprint,
                *threshold,
                custodians,
                *scrypt_log_n,
            )?;
            let mut files = vec![
                KeyFile {
                    name: CA_KEY.to_string(),
                    bytes: setup.key_file,
                },
                KeyFile {
                    name: QUORUM_MANIFEST.to_string(),
                    bytes: setup.manifest.to_json().into_bytes(),
                },
            ];
            for sh in setup.shares {
                files.push(KeyFile {
                    name: format!("{SHARES_DIR}/{}", sh.file_name),
                    bytes: sh.bytes,
                });
            }
            Ok((
                files,
                Box::new(AgeKey::new(key, setup.manifest.custody(Vec::new()))),
            ))
        }
        NewCustody::Pkcs11 {
            module,
            token,
            pin,
            label,
        } => {
            let t = Pkcs11Key::import(module, token, pin, pkcs8, label).map_err(KeyError::from)?;
            hold_key(custody, protection, cert, None, Some(t))
        }
    }
}

pub(super) fn random_serial() -> [u8; 20] {
    // 158 random bits; top bits 01 so the value is positive, exactly 20 DER bytes, < 2^159.
    let mut s: [u8; 20] = crypto::random_bytes();
    if let Some(b) = s.first_mut() {
        *b = (*b & 0x3f) | 0x40;
    }
    s
}

/// RFC 7093 method 1: the leftmost 160 bits of SHA-256 of the subjectPublicKey bits.
pub fn key_identifier(public_key: &[u8]) -> Vec<u8> {
    crypto::sha256(public_key)
        .get(..20)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Create a new CA in `ca_dir` (SPEC §4): `ca.pem`, `ca.key.age` (0600), `ca.db` with the
/// `ca-created` record and a signed checkpoint. Refuses if any of the three exists.
pub fn init(ca_dir: &Path, opts: &InitOptions) -> Result<CaInfo, CaError> {
    init_with(
        ca_dir,
        opts,
        &NewCustody::Age {
            scrypt_log_n: secret::DEFAULT_SCRYPT_LOG_N,
        },
    )
}

/// `meta` key of the CA's role: `root` (made by `ca init --root`), `intermediate` (made by
/// `ca issue-intermediate`); absent for a signing CA made by `ca init`/`ca import`.
pub const META_ROLE: &str = "ca_role";

/// What kind of CA [`init_as`] makes.
pub(crate) enum Role<'a> {
    /// Self-signed, pathLen 0: signs devices (`ca init`).
    Signing,
    /// Self-signed, no pathLen limit: signs CAs and CRLs only (`ca init --root`).
    Root,
    /// Issued by `parent` with its key, pathLen 0: signs devices (`ca issue-intermediate`).
    Intermediate {
        /// The root's certificate.
        parent: &'a CaCert,
        /// The root's key, unlocked (any custody).
        parent_key: &'a dyn CaSigner,
    },
}

/// Create an offline root CA in `ca_dir` (`ca init --root`): as [`init_with`] but without the
/// pathLen 0 limit, and recorded as a root (`ca_role` = `root`), which `sign` refuses: a
/// root signs CAs (`ca issue-intermediate`) and CRLs only.
pub fn init_root(
    ca_dir: &Path,
    opts: &InitOptions,
    custody: &NewCustody,
) -> Result<CaInfo, CaError> {
    init_as(ca_dir, opts, custody, Role::Root)
}

/// An intermediate CA in `ca_dir`, issued by `parent` with `parent_key` (the body of
/// `ca issue-intermediate`, [`crate::signer::lifecycle::hierarchy::issue_intermediate`]).
pub(crate) fn init_intermediate(
    ca_dir: &Path,
    opts: &InitOptions,
    custody: &NewCustody,
    parent: &CaCert,
    parent_key: &dyn CaSigner,
) -> Result<CaInfo, CaError> {
    init_as(
        ca_dir,
        opts,
        custody,
        Role::Intermediate { parent, parent_key },
    )
}

/// [`init`] with the key held as `custody` says: an age file (with `opts.protection` and an
/// explicit scrypt work factor), a quorum of custodians, or a PKCS#11 token (the key is
/// generated in the token and never leaves it).
pub fn init_with(
    ca_dir: &Path,
    opts: &InitOptions,
    custody: &NewCustody,
) -> Result<CaInfo, CaError> {
    init_as(ca_dir, opts, custody, Role::Signing)
}

/// The body of [`init_with`], [`init_root`] and `ca issue-intermediate`.
pub(crate) fn init_as(
    ca_dir: &Path,
    opts: &InitOptions,
    custody: &NewCustody,
    role: Role<'_>,
) -> Result<CaInfo, CaError> {
    secret::harden_process()?;
    if opts.days == 0 || opts.days > MAX_DAYS {
        return Err(CaError::BadDays(opts.days));
    }
    let attrs = parse_subject(&opts.subject)?;
    custody.check(&opts.protection)?;
    ensure_dir(ca_dir)?;
    refuse_existing(ca_dir)?;

    let (token, pkcs8) = match custody {
        NewCustody::Pkcs11 {
            module,
            token,
            pin,
            label,
        } => (
            Some(Pkcs11Key::generate(module, token, pin, label).map_err(KeyError::from)?),
            None,
        ),
        _ => {
            let (_, pkcs8) = P256Key::generate()?;
            (None, Some(pkcs8))
        }
    };
    let mem_key = match &pkcs8 {
        Some(p) => Some(AgeKey::new(
            CaKey::from_pkcs8(p)?,
            Custody::Passphrase { scrypt_log_n: None },
        )),
        None => None,
    };
    let signer: &dyn CaSigner = match (&token, &mem_key) {
        (Some(t), _) => t,
        (None, Some(k)) => k,
        (None, None) => return Err(CaError::Protect("no key".into())),
    };
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let not_after = now + time::Duration::days(i64::from(opts.days));
    if let Role::Intermediate { parent, .. } = &role {
        if not_after > parent.not_after {
            return Err(CaError::BadCert(format!(
                "the intermediate would be valid until {}, past its root's notAfter {}; give --days of at most {}",
                rfc3339(not_after),
                rfc3339(parent.not_after),
                (parent.not_after - now).whole_days()
            )));
        }
    }

    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
    params.not_before = now;
    params.not_after = not_after;
    params.distinguished_name = distinguished_name(&attrs)?;
    params.is_ca = match role {
        Role::Root => rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        _ => rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0)),
    };
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.key_identifier_method =
        rcgen::KeyIdMethod::PreSpecified(key_identifier(&signer.public_key()));
    params.use_authority_key_identifier_extension = false;
    let (cert, role_name, parent_fp) = match &role {
        Role::Signing | Role::Root => {
            let built = params
                .self_signed(&RcgenSigner::new(signer))
                .map_err(CaError::Build)?;
            let (cert, _) = analyze_cert(built.der(), now)?;
            let name = matches!(role, Role::Root).then_some("root");
            (cert, name, None)
        }
        Role::Intermediate { parent, parent_key } => {
            params.use_authority_key_identifier_extension = true;
            let issuer = rcgen::Issuer::new(issuer_params(parent)?, RcgenSigner::new(*parent_key));
            let built = params
                .signed_by(&RcgenSigner::new(signer), &issuer)
                .map_err(CaError::Build)?;
            let (cert, _) = analyze_cert_issued_by(built.der(), now, Some(parent))?;
            (cert, Some("intermediate"), Some(parent.fingerprint.clone()))
        }
    };
    drop(mem_key);

    let (key_files, key) = hold_key(
        custody,
        Some(&opts.protection),
        &cert,
        pkcs8.as_deref().map(|p| &p[..]),
        token,
    )?;
    drop(pkcs8);
    let protection_desc = describe(custody, &opts.protection, key.as_ref());
    let mut details = json!({ "days": opts.days, "scrypt_log_n": log_n_of(custody) });
    if let (Some(d), Some(r)) = (details.as_object_mut(), role_name) {
        d.insert("role".into(), json!(r));
        if let Some(fp) = &parent_fp {
            d.insert("parent_fingerprint".into(), json!(fp));
        }
    }
    if let Role::Intermediate { parent, .. } = &role {
        // The parent first: a SUB directory with ca.pem always has the root to check it by.
        let tmp = tmp_name(ca_dir, PARENT_PEM);
        std::fs::write(&tmp, parent.pem.as_bytes()).map_err(io_err(&tmp))?;
        publish(&tmp, &ca_dir.join(PARENT_PEM))?;
    }
    let written = write_ca_files(
        ca_dir,
        &cert,
        key.as_ref(),
        &key_files,
        &protection_desc,
        "ca-created",
        details,
        &opts.operator,
        role_name,
    );
    if let Err(e) = written {
        if matches!(role, Role::Intermediate { .. }) {
            let _ = std::fs::remove_file(ca_dir.join(PARENT_PEM));
        }
        return Err(e);
    }
    show(ca_dir)
}

/// The parent as an rcgen issuer: its subject (re-built from its RFC 4514 text the way
/// `ca init` builds one; the result is checked against the parent's subject bytes by
/// [`analyze_cert_issued_by`]), its SKI, keyCertSign.
fn issuer_params(parent: &CaCert) -> Result<rcgen::CertificateParams, CaError> {
    let attrs = parse_subject(&parent.subject).map_err(|_| {
        CaError::BadCert("the root's subject cannot be re-created; issue the intermediate from a root made by `nrfca ca init --root`".into())
    })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = distinguished_name(&attrs)?;
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(parent.ski.clone());
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

fn distinguished_name(attrs: &[(Attr, String)]) -> Result<rcgen::DistinguishedName, CaError> {
    let mut dn = rcgen::DistinguishedName::new();
    // RFC 4514 strings list the most specific attribute first; DER order is the reverse.
    for (attr, value) in attrs.iter().rev() {
        let v = if *attr == Attr::C {
            rcgen::DnValue::PrintableString(
                rcgen::string::PrintableString::try_from(value.as_str())
                    .map_err(|e| CaError::BadSubject(e.to_string()))?,
            )
        } else {
            rcgen::DnValue::Utf8String(value.clone())
        };
        dn.push(attr.dn_type(), v);
    }
    Ok(dn)
}

/// Adopt a CA made by Nordic's `create_ca_cert` (or any self-signed P-256 CA with a
/// plaintext SEC1 or PKCS#8 PEM key): checks that the key matches the certificate, encrypts
/// the key into `ca.key.age`, copies the certificate to `ca.pem`, and records `ca-imported`
/// with its warnings. The plaintext key file is left untouched: destroy it afterwards.
pub fn import(
    ca_dir: &Path,
    cert_pem: &Path,
    key_pem: &Path,
    protection: &Protection,
    operator: &str,
) -> Result<CaInfo, CaError> {
    import_with(
        ca_dir,
        cert_pem,
        key_pem,
        protection,
        operator,
        &NewCustody::Age {
            scrypt_log_n: secret::DEFAULT_SCRYPT_LOG_N,
        },
    )
}

/// [`import`] with the key held as `custody` says (for a token: imported into it as
/// sensitive and not extractable).
pub fn import_with(
    ca_dir: &Path,
    cert_pem: &Path,
    key_pem: &Path,
    protection: &Protection,
    operator: &str,
    custody: &NewCustody,
) -> Result<CaInfo, CaError> {
    secret::harden_process()?;
    custody.check(protection)?;
    let der = cert_der_from_pem_file(cert_pem)?;
    let (cert, mut warnings) =
        analyze_cert(&der, OffsetDateTime::now_utc()).map_err(|e| prefix_path(e, cert_pem))?;

    let key_bytes = read_limited(key_pem)?;
    let key_text = std::str::from_utf8(&key_bytes).map_err(|_| {
        CaError::KeyMismatch(format!("{} is not a PEM text file", key_pem.display()))
    })?;
    let pkcs8 = crypto::pkcs8_from_pem_any(key_text).map_err(|e| {
        CaError::KeyMismatch(format!(
            "{}: {e}; give the CA's plaintext private key (create_ca_cert's <prefix>_prv.pem)",
            key_pem.display()
        ))
    })?;
    drop(key_bytes);
    let key = CaKey::from_pkcs8(&pkcs8)?;
    if key.public_key() != cert.public_key {
        return Err(CaError::KeyMismatch(format!(
            "the private key in {} does not belong to the certificate in {}; give the _prv.pem written together with that _ca.pem",
            key_pem.display(),
            cert_pem.display()
        )));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(key_pem) {
            if m.permissions().mode() & 0o077 != 0 {
                warnings.push(format!(
                    "the plaintext key file {} was readable by group or others",
                    key_pem.display()
                ));
            }
        }
    }

    ensure_dir(ca_dir)?;
    refuse_existing(ca_dir)?;
    drop(key);
    let (key_files, key) = hold_key(custody, Some(protection), &cert, Some(&pkcs8), None)?;
    drop(pkcs8);
    let protection_desc = describe(custody, protection, key.as_ref());
    let details = json!({
        "source_cert": cert_pem.display().to_string(),
        "source_key": key_pem.display().to_string(),
        "warnings": warnings,
        "scrypt_log_n": log_n_of(custody),
    });
    write_ca_files(
        ca_dir,
        &cert,
        key.as_ref(),
        &key_files,
        &protection_desc,
        "ca-imported",
        details,
        operator,
        None,
    )?;
    show(ca_dir)
}
