//! CA custody: `ca init` (new P-256 CA per SPEC §4), `ca import` (adopt a CA made by
//! Nordic's `create_ca_cert`), `ca show`, and [`unlock`] (decrypt `ca.key.age` into a
//! [`CaKey`], checked against `ca.pem`, recorded in the audit log).
//!
//! The CA directory holds exactly `ca.pem`, `ca.key.age` (age-encrypted PKCS#8, mode 0600) and
//! `ca.db` (plus `ca.key.age.retired-*` files that `ca protect` leaves until the officer
//! removes them). None of them is ever overwritten, except `ca.key.age` by
//! [`crate::signer::protect::protect`], atomically, after the new file is proven; the
//! plaintext key never touches disk.

use crate::crypto::{self, CryptoError, P256Key};
use crate::signer::audit::{self, AuditError, AuditWriter};
use crate::signer::db::{self, DbError};
use crate::signer::secret::{self, CaKey, FileProtection, Protection, SecretError, Unlock};
use der::Decode;
use serde::Serialize;
use serde_json::json;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// File name of the CA certificate in the CA directory.
pub const CA_PEM: &str = "ca.pem";
/// File name of the age-encrypted CA key.
pub const CA_KEY: &str = "ca.key.age";
/// File name of the CA database.
pub const CA_DB: &str = "ca.db";
/// Default CA validity in days (20 years).
pub const DEFAULT_DAYS: u32 = 7300;
/// Longest accepted CA validity in days (100 years).
pub const MAX_DAYS: u32 = 36500;
/// Largest certificate / plaintext key file read by `ca import`.
pub const MAX_PEM_FILE: u64 = 1 << 20;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_SKI: &str = "2.5.29.14";

/// Errors of CA custody. Messages say what to do next.
#[derive(Debug)]
pub enum CaError {
    /// A CA file already exists; nothing is overwritten.
    Exists(PathBuf),
    /// A CA file is missing.
    Missing(PathBuf),
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `--subject` is not usable.
    BadSubject(String),
    /// `--days` is out of range.
    BadDays(u32),
    /// The passphrase or identity does not open the key (CLI: exit 2).
    WrongSecret(String),
    /// The private key does not belong to the certificate.
    KeyMismatch(String),
    /// The certificate is not a usable P-256 CA certificate.
    BadCert(String),
    /// Key file, recipient or identity problems.
    Secret(SecretError),
    /// Opening ca.db failed.
    Db(DbError),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// Writing the audit log failed.
    Audit(AuditError),
    /// A crypto primitive failed.
    Crypto(CryptoError),
    /// Building the certificate failed.
    Build(String),
    /// `ca.db` is locked by another command: nothing was decrypted.
    Busy(String),
    /// `ca protect` refused or could not complete; the message says what happened to
    /// `ca.key.age` and what to do next.
    Protect(String),
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaError::Exists(p) => write!(
                f,
                "{} already exists; nrfca never overwrites a CA: use an empty --ca-dir",
                p.display()
            ),
            CaError::Missing(p) => write!(
                f,
                "{} does not exist; check --ca-dir (create a CA with `nrfca ca init`; an interrupted init leaves no ca.db: remove that directory and run init again)",
                p.display()
            ),
            CaError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CaError::BadSubject(why) => write!(
                f,
                "bad --subject: {why}; write it like \"CN=Acme Device CA,O=Acme,C=NO\" (attributes CN, O, OU, L, ST, C; escape a comma as \\,)"
            ),
            CaError::BadDays(d) => write!(
                f,
                "--days {d} is out of range; give 1 to {MAX_DAYS} (default {DEFAULT_DAYS})"
            ),
            CaError::WrongSecret(hint) => write!(f, "wrong passphrase or identity; {hint}"),
            CaError::KeyMismatch(why) => write!(f, "{why}"),
            CaError::BadCert(why) => write!(f, "{why}"),
            CaError::Secret(e) => write!(f, "{e}"),
            CaError::Db(e) => write!(f, "{e}"),
            CaError::Sqlite(e) => write!(
                f,
                "CA database error: {e}; check that ca.db is not in use by another nrfca"
            ),
            CaError::Audit(e) => write!(f, "{e}"),
            CaError::Crypto(e) => write!(f, "{e}"),
            CaError::Build(why) => write!(f, "building the CA certificate failed: {why}"),
            CaError::Protect(why) => write!(f, "{why}"),
            CaError::Busy(e) => write!(f, "ca.db is in use by another nrfca command ({e}); the key was not unlocked: wait for that command to finish (or find it with `fuser ca.db`) and run this again"),
        }
    }
}

impl std::error::Error for CaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Display already includes the wrapped error's text; forward only deeper causes.
            CaError::Secret(e) => e.source(),
            CaError::Db(e) => e.source(),
            CaError::Audit(e) => e.source(),
            CaError::Crypto(e) => e.source(),
            _ => None,
        }
    }
}

impl From<SecretError> for CaError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::WrongSecret(hint) => CaError::WrongSecret(hint),
            other => CaError::Secret(other),
        }
    }
}

impl From<DbError> for CaError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Missing(p) => CaError::Missing(p),
            other => CaError::Db(other),
        }
    }
}

impl From<rusqlite::Error> for CaError {
    fn from(e: rusqlite::Error) -> Self {
        CaError::Sqlite(e)
    }
}

impl From<AuditError> for CaError {
    fn from(e: AuditError) -> Self {
        CaError::Audit(e)
    }
}

impl From<CryptoError> for CaError {
    fn from(e: CryptoError) -> Self {
        CaError::Crypto(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of [`init`].
#[derive(Debug)]
pub struct InitOptions {
    /// Subject, RFC 4514 style: `"CN=Acme Device CA,O=Acme,C=NO"` (first attribute = most
    /// specific; DER order is the reverse, as OpenSSL prints it: `C=NO, O=Acme, CN=...`).
    pub subject: String,
    /// Validity in days from now ([`DEFAULT_DAYS`]).
    pub days: u32,
    /// How to encrypt the key.
    pub protection: Protection,
    /// Operator recorded in the audit log.
    pub operator: String,
}

/// The CA certificate and what signing needs from it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// PEM (LF line ends, final LF).
    pub pem: String,
    /// DER of the subject Name, exactly as in the certificate (use as the issuer of devices).
    pub subject_der: Vec<u8>,
    /// Subject key identifier (from the extension; computed as SHA-1 of the key when the
    /// certificate has none, as OpenSSL and Nordic do). Use as the devices' AKI.
    pub ski: Vec<u8>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity (device certificates must not outlive it).
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Uncompressed SEC1 public key.
    pub public_key: [u8; 65],
    /// Serial number, lowercase hex (as DER content bytes).
    pub serial: String,
    /// Subject as text (RFC 4514).
    pub subject: String,
}

/// The CA key, unlocked, with its certificate.
#[derive(Debug)]
pub struct UnlockedCa {
    /// The certificate.
    pub cert: CaCert,
    /// The private key (redacted Debug, wiped on drop).
    pub key: CaKey,
}

/// What `ca show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CaInfo {
    /// The CA directory.
    pub ca_dir: PathBuf,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// How the key is protected, as recorded at init/import, e.g. `passphrase (age scrypt)`.
    pub key_protection: String,
    /// How to unlock, read from the key file's header: `passphrase` or `identity`.
    pub unlock_with: String,
    /// Certificates issued.
    pub issued: u64,
    /// Requests rejected.
    pub rejected: u64,
    /// Batches signed.
    pub batches: u64,
    /// Records in the audit log.
    pub audit_records: u64,
    /// Hash of the last audit record.
    pub audit_head_hash: String,
    /// Warnings: those recorded when the CA was imported, and one per retired key file still
    /// in the CA directory.
    pub warnings: Vec<String>,
    /// Retired key files (`ca.key.age.retired-*`, left by `ca protect`) still in the CA
    /// directory.
    pub retired_key_files: Vec<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

// ---------------------------------------------------------------- subject parsing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    C,
    St,
    L,
    O,
    Ou,
    Cn,
}

impl Attr {
    fn parse(key: &str) -> Option<Attr> {
        Some(match key.to_ascii_uppercase().as_str() {
            "C" => Attr::C,
            "ST" => Attr::St,
            "L" => Attr::L,
            "O" => Attr::O,
            "OU" => Attr::Ou,
            "CN" => Attr::Cn,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Attr::C => "C",
            Attr::St => "ST",
            Attr::L => "L",
            Attr::O => "O",
            Attr::Ou => "OU",
            Attr::Cn => "CN",
        }
    }
    /// X.520 upper bounds.
    fn max_len(self) -> usize {
        match self {
            Attr::C => 2,
            Attr::St | Attr::L => 128,
            Attr::O | Attr::Ou | Attr::Cn => 64,
        }
    }
    fn dn_type(self) -> rcgen::DnType {
        match self {
            Attr::C => rcgen::DnType::CountryName,
            Attr::St => rcgen::DnType::StateOrProvinceName,
            Attr::L => rcgen::DnType::LocalityName,
            Attr::O => rcgen::DnType::OrganizationName,
            Attr::Ou => rcgen::DnType::OrganizationalUnitName,
            Attr::Cn => rcgen::DnType::CommonName,
        }
    }
}

/// Parse `--subject` (RFC 4514 style) into (attribute, value) pairs in string order.
fn parse_subject(s: &str) -> Result<Vec<(Attr, String)>, CaError> {
    let bad = |m: String| CaError::BadSubject(m);
    if s.trim().is_empty() {
        return Err(bad("it is empty".into()));
    }
    if s.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes".into()));
    }
    // Split on unescaped commas, resolving backslash escapes.
    let mut parts: Vec<(String, Vec<bool>)> = vec![(String::new(), Vec::new())];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    if let Some(last) = parts.last_mut() {
                        last.0.push(n);
                        last.1.push(true);
                    }
                }
                None => return Err(bad("it ends with a lone backslash".into())),
            },
            ',' => parts.push((String::new(), Vec::new())),
            '+' => {
                return Err(bad(
                    "multi-valued RDNs (`+`) are not supported; escape a literal plus as \\+"
                        .into(),
                ))
            }
            c if c.is_control() => return Err(bad("it contains a control character".into())),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.0.push(c);
                    last.1.push(false);
                }
            }
        }
    }
    let mut out: Vec<(Attr, String)> = Vec::new();
    for (text, escaped) in parts {
        // Find the first unescaped '='.
        let chars: Vec<char> = text.chars().collect();
        let Some(eq) = chars
            .iter()
            .zip(escaped.iter())
            .position(|(c, e)| *c == '=' && !*e)
        else {
            return Err(bad(format!("`{text}` is not of the form KEY=value")));
        };
        let key: String = chars.get(..eq).unwrap_or_default().iter().collect();
        let value: String = chars.get(eq + 1..).unwrap_or_default().iter().collect();
        let key = key.trim();
        let value = value.trim().to_string();
        let attr = Attr::parse(key).ok_or_else(|| {
            bad(format!(
                "unknown attribute `{key}` (use CN, O, OU, L, ST or C)"
            ))
        })?;
        if value.is_empty() {
            return Err(bad(format!(
                "{} is empty; leave it out instead",
                attr.name()
            )));
        }
        if value.chars().count() > attr.max_len() {
            return Err(bad(format!(
                "{} is longer than {} characters",
                attr.name(),
                attr.max_len()
            )));
        }
        if attr == Attr::C && !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(bad(format!(
                "C must be a two-letter country code in capitals (e.g. NO), not `{value}`"
            )));
        }
        if out.iter().any(|(a, _)| *a == attr) {
            return Err(bad(format!("{} is given twice", attr.name())));
        }
        out.push((attr, value));
    }
    Ok(out)
}

// ---------------------------------------------------------------- certificate analysis

/// One DER TLV at the start of `input`: (header length, total length). Short and long form
/// lengths up to 4 bytes; single-byte tags only (all we need for certificates).
fn der_tlv(input: &[u8]) -> Option<(usize, usize)> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let l0 = *input.get(1)? as usize;
    let (hlen, len) = if l0 < 0x80 {
        (2, l0)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (2 + n, len)
    };
    let total = hlen.checked_add(len)?;
    (total <= input.len()).then_some((hlen, total))
}

/// Raw TBS bytes, raw issuer Name and raw subject Name of a certificate DER, exactly as
/// encoded (never re-encoded).
fn raw_parts(cert_der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (h, t) = der_tlv(cert_der)?;
    let content = cert_der.get(h..t)?;
    let (_, tbs_len) = der_tlv(content)?;
    let tbs = content.get(..tbs_len)?;
    let (th, _) = der_tlv(tbs)?;
    let mut rest = tbs.get(th..)?;
    fn next<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (_, total) = der_tlv(rest)?;
        let (item, tail) = rest.split_at(total);
        *rest = tail;
        Some(item)
    }
    if rest.first() == Some(&0xa0) {
        next(&mut rest)?; // [0] version
    }
    next(&mut rest)?; // serial
    next(&mut rest)?; // signature algorithm
    let issuer = next(&mut rest)?;
    next(&mut rest)?; // validity
    let subject = next(&mut rest)?;
    Some((tbs, issuer, subject))
}

fn time_of(t: &x509_cert::time::Time) -> Result<OffsetDateTime, CaError> {
    let secs = i64::try_from(t.to_unix_duration().as_secs())
        .map_err(|_| CaError::BadCert("certificate time out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| CaError::BadCert("certificate time out of range".into()))
}

/// Parse and check a CA certificate; returns it and warnings (things nrfca's own profile
/// does differently but that still work). Refuses what cannot work: not P-256, not
/// ecdsa-with-SHA256, not a CA, not self-signed, no keyCertSign, expired.
fn analyze_cert(der: &[u8], now: OffsetDateTime) -> Result<(CaCert, Vec<String>), CaError> {
    let bad = |m: &str| {
        CaError::BadCert(format!(
            "{m}; give the CA certificate (PEM) made for this CA"
        ))
    };
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        CaError::BadCert(format!(
            "the CA certificate cannot be parsed ({e}); give a PEM X.509 certificate"
        ))
    })?;
    let (tbs_raw, issuer_raw, subject_raw) =
        raw_parts(der).ok_or_else(|| bad("the certificate DER is malformed"))?;
    let tbs = &cert.tbs_certificate;
    let mut warnings = Vec::new();

    let spki = &tbs.subject_public_key_info;
    let curve_ok = spki.algorithm.oid.to_string() == OID_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .map(|o| o.to_string() == OID_P256)
            .unwrap_or(false);
    let pk = spki.subject_public_key.raw_bytes();
    if !curve_ok || pk.len() != 65 || !crypto::is_valid_p256_point(pk) {
        return Err(CaError::BadCert(
            "the CA key is not EC P-256; nrfca signs with P-256 only (as nRF Cloud and Nordic's create_ca_cert do)".into(),
        ));
    }
    let mut public_key = [0u8; 65];
    public_key.copy_from_slice(pk);

    if cert.signature_algorithm.oid.to_string() != OID_ECDSA_SHA256
        || tbs.signature.oid.to_string() != OID_ECDSA_SHA256
    {
        return Err(CaError::BadCert(
            "the CA certificate is not signed with ecdsa-with-SHA256".into(),
        ));
    }
    if tbs.version != x509_cert::certificate::Version::V3 {
        return Err(CaError::BadCert(
            "the CA certificate is not X.509 v3 (no extensions); it cannot be a CA".into(),
        ));
    }
    if issuer_raw != subject_raw {
        return Err(CaError::BadCert(
            "the certificate is not self-signed (issuer ≠ subject); nrfca adopts root CAs only"
                .into(),
        ));
    }
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the signature BIT STRING has unused bits"))?;
    if !crypto::verify_p256_sha256(&public_key, tbs_raw, sig) {
        return Err(CaError::BadCert(
            "the certificate's self-signature does not verify; the file is damaged or not a root CA".into(),
        ));
    }

    let mut is_ca = false;
    let mut ski: Option<Vec<u8>> = None;
    let mut ku_seen = false;
    for ext in tbs.extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        let value = ext.extn_value.as_bytes();
        match oid.as_str() {
            OID_BASIC_CONSTRAINTS => {
                let bc = x509_cert::ext::pkix::BasicConstraints::from_der(value)
                    .map_err(|_| bad("basicConstraints cannot be parsed"))?;
                is_ca = bc.ca;
                if !ext.critical {
                    warnings.push("basicConstraints is not critical".to_string());
                }
                match bc.path_len_constraint {
                    None => warnings.push(
                        "no pathLenConstraint (nrfca's own CAs use pathLen 0: device certificates only)".to_string(),
                    ),
                    Some(0) => {}
                    Some(n) => warnings.push(format!(
                        "pathLenConstraint is {n}, not 0: this CA could certify sub-CAs"
                    )),
                }
            }
            OID_KEY_USAGE => {
                ku_seen = true;
                let ku = x509_cert::ext::pkix::KeyUsage::from_der(value)
                    .map_err(|_| bad("keyUsage cannot be parsed"))?;
                if !ku.key_cert_sign() {
                    return Err(CaError::BadCert(
                        "keyUsage of the CA certificate lacks keyCertSign; it cannot sign certificates".into(),
                    ));
                }
                if !ku.digital_signature() {
                    warnings.push("keyUsage lacks digitalSignature: strict verifiers may refuse manifest.sig and audit checkpoints made with this key".to_string());
                }
                if !ku.crl_sign() {
                    warnings.push("keyUsage lacks cRLSign".to_string());
                }
                if ku.key_encipherment() {
                    warnings.push(
                        "keyUsage has keyEncipherment, which means nothing for an EC key"
                            .to_string(),
                    );
                }
                if !ext.critical {
                    warnings.push("keyUsage is not critical".to_string());
                }
            }
            OID_SKI => {
                let s = x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(value)
                    .map_err(|_| bad("subjectKeyIdentifier cannot be parsed"))?;
                ski = Some(s.0.as_bytes().to_vec());
            }
            _ => {
                if ext.critical {
                    return Err(CaError::BadCert(format!(
                        "the CA certificate has an unknown critical extension {oid}"
                    )));
                }
            }
        }
    }
    if !is_ca {
        return Err(CaError::BadCert(
            "the certificate is not a CA certificate (basicConstraints CA:TRUE missing)".into(),
        ));
    }
    if !ku_seen {
        warnings.push("no keyUsage extension".to_string());
    }
    let ski = match ski {
        Some(s) => s,
        None => {
            warnings.push(
                "no subjectKeyIdentifier: device certificates get an AKI of SHA-1(public key) (RFC 5280 method 1)".to_string(),
            );
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &public_key)
                .as_ref()
                .to_vec()
        }
    };

    let not_before = time_of(&tbs.validity.not_before)?;
    let not_after = time_of(&tbs.validity.not_after)?;
    if not_after <= now {
        return Err(CaError::BadCert(format!(
            "the CA certificate expired on {}; create a new CA with `nrfca ca init`",
            rfc3339(not_after)
        )));
    }
    if not_before > now {
        warnings.push(format!(
            "the CA certificate is not valid before {}",
            rfc3339(not_before)
        ));
    }
    if not_after < now + time::Duration::days(365) {
        warnings.push(format!(
            "the CA certificate expires within a year ({})",
            rfc3339(not_after)
        ));
    }

    let subject_text = tbs.subject.to_string();
    let mut empty_attrs = Vec::new();
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.value.value().is_empty() {
                let oid = atv.oid.to_string();
                empty_attrs.push(
                    match oid.as_str() {
                        "2.5.4.6" => "C",
                        "2.5.4.8" => "ST",
                        "2.5.4.7" => "L",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "2.5.4.3" => "CN",
                        "1.2.840.113549.1.9.1" => "emailAddress",
                        other => other,
                    }
                    .to_string(),
                );
            }
        }
    }
    if !empty_attrs.is_empty() {
        warnings.push(format!(
            "the subject has {} empty attribute(s) ({}), as Nordic's create_ca_cert writes them; strict X.509 linters flag this and device certificates carry the same issuer name",
            empty_attrs.len(),
            empty_attrs.join(", ")
        ));
    }
    let serial_bytes = tbs.serial_number.as_bytes();
    if serial_bytes.iter().all(|b| *b == 0)
        || serial_bytes.first().map(|b| b & 0x80 != 0).unwrap_or(true)
    {
        warnings.push("the serial number is zero or negative".to_string());
    }

    let ca = CaCert {
        der: der.to_vec(),
        pem: crate::util::pem_encode("CERTIFICATE", der),
        subject_der: subject_raw.to_vec(),
        ski,
        not_before,
        not_after,
        fingerprint: crypto::sha256_hex(der),
        public_key,
        serial: hex::encode(serial_bytes),
        subject: subject_text,
    };
    Ok((ca, warnings))
}

fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, CaError> {
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CaError::Missing(path.to_path_buf())
        } else {
            io_err(path)(e)
        }
    })?;
    // Sized up front so the buffer never reallocates (this reads plaintext key PEMs in
    // `ca import`: a reallocation would leave an unwiped copy in freed memory).
    let cap = f
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0)
        .min(MAX_PEM_FILE + 1);
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(cap).unwrap_or(0) + 1));
    f.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(CaError::BadCert(format!(
            "{} is larger than 1 MiB; is it the right file?",
            path.display()
        )));
    }
    Ok(buf)
}

fn cert_der_from_pem_file(path: &Path) -> Result<Vec<u8>, CaError> {
    let bytes = read_limited(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CaError::BadCert(format!("{} is not a PEM text file", path.display())))?;
    let certs: Vec<_> = crate::util::pem_blocks(text)
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .collect();
    match certs.as_slice() {
        [one] => one.decode().map_err(|e| {
            CaError::BadCert(format!(
                "{}: bad base64 in the certificate: {e}",
                path.display()
            ))
        }),
        [] => Err(CaError::BadCert(format!(
            "{} holds no CERTIFICATE PEM block",
            path.display()
        ))),
        _ => Err(CaError::BadCert(format!(
            "{} holds {} certificates; give the CA certificate alone",
            path.display(),
            certs.len()
        ))),
    }
}

/// Load and check a CA certificate from any PEM file (e.g. `--ca-cert` of `audit verify`,
/// `--trust` of `bench import`). Fails on anything that is not a P-256 self-signed CA.
pub fn load_cert_file(path: &Path) -> Result<CaCert, CaError> {
    let der = cert_der_from_pem_file(path)?;
    // Expiry is not a reason to refuse reading an existing CA (audit of an old log).
    let (cert, _) =
        analyze_cert(&der, OffsetDateTime::UNIX_EPOCH).map_err(|e| prefix_path(e, path))?;
    Ok(cert)
}

fn prefix_path(e: CaError, path: &Path) -> CaError {
    match e {
        CaError::BadCert(m) => CaError::BadCert(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// Load `ca_dir/ca.pem` (no secret needed).
pub fn load_cert(ca_dir: &Path) -> Result<CaCert, CaError> {
    load_cert_file(&ca_dir.join(CA_PEM))
}

// ---------------------------------------------------------------- init / import

fn refuse_existing(ca_dir: &Path) -> Result<(), CaError> {
    for name in [CA_PEM, CA_KEY, CA_DB] {
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
    key: &CaKey,
    ciphertext: &[u8],
    protection_desc: &str,
    event: &str,
    extra_details: serde_json::Value,
    operator: &str,
) -> Result<(), CaError> {
    // What every CA record says, then what is particular to `event`.
    let mut details = json!({
        "subject": cert.subject,
        "serial": cert.serial,
        "fingerprint": cert.fingerprint,
        "not_before": rfc3339(cert.not_before),
        "not_after": rfc3339(cert.not_after),
        "key_protection": protection_desc,
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra_details) {
        d.extend(extra);
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), CaError> {
        // Key first: once a certificate exists, its key must too.
        let tmp = tmp_name(ca_dir, CA_KEY);
        secret::write_secret_file(&tmp, ciphertext)?;
        publish(&tmp, &ca_dir.join(CA_KEY))?;
        created.push(ca_dir.join(CA_KEY));

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
        for p in created {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn random_serial() -> [u8; 20] {
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
    secret::harden_process()?;
    if opts.days == 0 || opts.days > MAX_DAYS {
        return Err(CaError::BadDays(opts.days));
    }
    let attrs = parse_subject(&opts.subject)?;
    if let Protection::Recipients(r) = &opts.protection {
        secret::parse_recipients(r)?;
    }
    ensure_dir(ca_dir)?;
    refuse_existing(ca_dir)?;

    let (p256, pkcs8) = P256Key::generate()?;
    let key = CaKey::new(p256);
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let not_after = now + time::Duration::days(i64::from(opts.days));

    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
    params.not_before = now;
    params.not_after = not_after;
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
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.key_identifier_method =
        rcgen::KeyIdMethod::PreSpecified(key_identifier(&key.public_key()));
    params.use_authority_key_identifier_extension = false;
    let built = params
        .self_signed(&key)
        .map_err(|e| CaError::Build(e.to_string()))?;
    let (cert, _) = analyze_cert(built.der(), now)?;

    let ciphertext = secret::encrypt(&pkcs8, &opts.protection)?;
    drop(pkcs8);
    let protection_desc = opts.protection.describe();
    let details = json!({ "days": opts.days });
    write_ca_files(
        ca_dir,
        &cert,
        &key,
        &ciphertext,
        &protection_desc,
        "ca-created",
        details,
        &opts.operator,
    )?;
    show(ca_dir)
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
    secret::harden_process()?;
    if let Protection::Recipients(r) = protection {
        secret::parse_recipients(r)?;
    }
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
    let ciphertext = secret::encrypt(&pkcs8, protection)?;
    drop(pkcs8);
    let protection_desc = protection.describe();
    let details = json!({
        "source_cert": cert_pem.display().to_string(),
        "source_key": key_pem.display().to_string(),
        "warnings": warnings,
    });
    write_ca_files(
        ca_dir,
        &cert,
        &key,
        &ciphertext,
        &protection_desc,
        "ca-imported",
        details,
        operator,
    )?;
    show(ca_dir)
}

// ---------------------------------------------------------------- show / unlock

/// Describe the CA in `ca_dir` (no secret needed).
pub fn show(ca_dir: &Path) -> Result<CaInfo, CaError> {
    let cert = load_cert(ca_dir)?;
    let key_path = ca_dir.join(CA_KEY);
    if !key_path.exists() {
        return Err(CaError::Missing(key_path));
    }
    let file_protection =
        secret::read_limited(&key_path).and_then(|ct| secret::file_protection(&ct));
    let unlock_with = match file_protection {
        Ok(FileProtection::Passphrase) => "passphrase",
        Ok(FileProtection::Recipients) => "identity",
        Err(_) => "unreadable key file",
    };
    let conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let key_protection: String =
        db::meta::get(&conn, db::meta::KEY_PROTECTION)?.unwrap_or_else(|| "unknown".to_string());
    // The current file decides: the recorded description only stands when it names the
    // same kind of protection as the key file's header (it lists the recipients, which the
    // header does not).
    let key_protection = match file_protection {
        Ok(FileProtection::Passphrase) if !key_protection.starts_with("passphrase") => {
            "passphrase (age scrypt)".to_string()
        }
        Ok(FileProtection::Recipients) if !key_protection.starts_with("age X25519") => {
            "age X25519 recipients (not recorded)".to_string()
        }
        _ => key_protection,
    };
    let head = db::audit::head(&conn)?.map(|(_, hash)| hash);
    let first = db::audit::first(&conn)?;
    let warnings = first
        .filter(|(event, _)| event == "ca-imported")
        .and_then(|(_, d)| serde_json::from_str::<serde_json::Value>(&d).ok())
        .and_then(|d| {
            d.get("warnings").and_then(|w| w.as_array()).map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut warnings: Vec<String> = warnings;
    let retired_key_files = crate::signer::protect::retired_files(ca_dir);
    for name in &retired_key_files {
        let recorded = db::audit::count_retired(&conn, name)?;
        let mut w = format!(
            "a retired key file is still present: {path}; it opens with the old secret: remove it (shred -u {path}) once you no longer need the old passphrase/identity",
            path = ca_dir.join(name).display()
        );
        if recorded == 0 {
            w.push_str(" (no key-protection-changed record names it: an interrupted `nrfca ca protect`? check `nrfca ca verify-key` with the new and the old secret)");
        }
        warnings.push(w);
    }
    Ok(CaInfo {
        ca_dir: ca_dir.to_path_buf(),
        subject: cert.subject.clone(),
        serial: cert.serial.clone(),
        fingerprint: cert.fingerprint.clone(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        key_protection,
        unlock_with: unlock_with.to_string(),
        // Counted from the chained audit records (what `audit verify` checks), not from the
        // certificates/rejects/batches tables, which an edit could change unnoticed.
        issued: db::audit::count(&conn, Some("certificate-issued"))?,
        rejected: db::audit::rejected_total(&conn)?,
        batches: db::audit::count(&conn, Some("batch-committed"))?,
        audit_records: db::audit::count(&conn, None)?,
        audit_head_hash: head.unwrap_or_else(|| audit::GENESIS_HASH.to_string()),
        warnings,
        retired_key_files,
    })
}

pub(crate) fn record_unlock(
    tx: &db::Transaction<'_>,
    operator: &str,
    event: &str,
    details: serde_json::Value,
    key: Option<&CaKey>,
) -> Result<(), CaError> {
    let mut w = AuditWriter::new(tx, operator)?;
    w.append(tx, event, &details)?;
    if let Some(key) = key {
        w.checkpoint(tx, key)?;
    }
    Ok(())
}

/// Begin an IMMEDIATE transaction on ca.db (takes the write lock now); a locked database is
/// [`CaError::Busy`].
pub(crate) fn begin_immediate(conn: &mut db::Connection) -> Result<db::Transaction<'_>, CaError> {
    db::begin_immediate(conn).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            CaError::Busy(e.to_string())
        }
        _ => CaError::Sqlite(e),
    })
}

/// Decrypt `ca_dir/ca.key.age` with `unlock`, check it matches `ca.pem`, and record
/// `key-unlocked` (followed by a checkpoint signed with the unlocked key) or `unlock-failed`
/// (reason only, never secret material). A wrong passphrase or identity is
/// [`CaError::WrongSecret`]. `ca.db`'s write lock is taken *before* the key file is touched
/// and held until the record commits, so no decryption ever goes unrecorded: with `ca.db`
/// locked by another command (after SQLite's busy timeout), nothing is decrypted.
pub fn unlock(ca_dir: &Path, unlock: &Unlock, operator: &str) -> Result<UnlockedCa, CaError> {
    secret::harden_process()?;
    let cert = load_cert(ca_dir)?;
    check_ca_files(ca_dir)?;
    let mut conn = db::open_existing(&ca_dir.join(CA_DB))?;
    let tx = begin_immediate(&mut conn)?;
    match unlock_in_tx(&tx, ca_dir, &cert, unlock, operator) {
        Ok(opened) => {
            tx.commit()?;
            Ok(UnlockedCa {
                cert,
                key: opened.key,
            })
        }
        Err(failed) => {
            if failed.recorded {
                let _ = tx.commit();
            }
            Err(failed.error)
        }
    }
}

/// `ca.key.age` and `ca.db` exist.
pub(crate) fn check_ca_files(ca_dir: &Path) -> Result<(), CaError> {
    let key_path = ca_dir.join(CA_KEY);
    if !key_path.exists() {
        return Err(CaError::Missing(key_path));
    }
    if !ca_dir.join(CA_DB).is_file() {
        return Err(CaError::Missing(ca_dir.join(CA_DB)));
    }
    Ok(())
}

/// The key as [`unlock_in_tx`] opened it: the key and the decrypted PKCS#8 (wiped on drop).
pub(crate) struct Opened {
    pub(crate) key: CaKey,
    pub(crate) pkcs8: Zeroizing<Vec<u8>>,
}

/// A failed [`unlock_in_tx`]: the error, and whether `unlock-failed` was appended to the
/// transaction (then the caller commits it).
pub(crate) struct UnlockFailed {
    pub(crate) error: CaError,
    pub(crate) recorded: bool,
}

/// The body of [`unlock`], inside the caller's IMMEDIATE transaction: decrypt, check against
/// `cert`, and append `key-unlocked` + checkpoint or `unlock-failed`. Commits nothing.
pub(crate) fn unlock_in_tx(
    tx: &db::Transaction<'_>,
    ca_dir: &Path,
    cert: &CaCert,
    unlock: &Unlock,
    operator: &str,
) -> Result<Opened, UnlockFailed> {
    let key_path = ca_dir.join(CA_KEY);
    let method = unlock.method();
    let identity_file = match unlock {
        Unlock::Identity(p) => Some(p.display().to_string()),
        Unlock::Passphrase(_) => None,
    };
    let attempt = (|| -> Result<Opened, CaError> {
        // Inside the attempt so that a key file readable by others is an audited failure.
        let ciphertext = secret::read_key_file(&key_path)?;
        let pkcs8 = secret::decrypt(&ciphertext, unlock)?;
        let key = CaKey::from_pkcs8(&pkcs8).map_err(|_| {
            CaError::Secret(SecretError::BadKeyFile(
                "it decrypts, but not to a P-256 PKCS#8 key".into(),
            ))
        })?;
        if key.public_key() != cert.public_key {
            return Err(CaError::KeyMismatch(
                "ca.key.age does not hold the key of ca.pem; the CA directory was mixed up: restore both from the same backup".into(),
            ));
        }
        Ok(Opened { key, pkcs8 })
    })();
    match attempt {
        Ok(opened) => {
            record_unlock(
                tx,
                operator,
                "key-unlocked",
                json!({
                    "method": method,
                    "identity_file": identity_file,
                    "fingerprint": cert.fingerprint,
                }),
                Some(&opened.key),
            )
            .map_err(|error| UnlockFailed {
                error,
                recorded: false,
            })?;
            Ok(opened)
        }
        Err(e) => {
            let reason = match &e {
                CaError::WrongSecret(_) => "wrong passphrase or identity",
                CaError::KeyMismatch(_) => "key does not match ca.pem",
                CaError::Secret(SecretError::Permissions { path, .. }) if *path == key_path => {
                    "ca.key.age readable by group or others"
                }
                CaError::Secret(SecretError::Permissions { .. }) => {
                    "identity file readable by group or others"
                }
                CaError::Secret(SecretError::BadKeyFile(why)) if why.contains("work factor") => {
                    "scrypt work factor of ca.key.age above the limit"
                }
                CaError::Secret(SecretError::BadIdentity(_)) => "identity file unusable",
                CaError::Secret(SecretError::Io { .. }) => "identity file unreadable",
                _ => "key file unreadable",
            };
            // Best effort: a failure to record must not hide the unlock error.
            let recorded = record_unlock(
                tx,
                operator,
                "unlock-failed",
                json!({
                    "method": method,
                    "identity_file": identity_file,
                    "reason": reason,
                    "fingerprint": cert.fingerprint,
                }),
                None,
            );
            Err(UnlockFailed {
                error: e,
                recorded: recorded.is_ok(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_parsing() {
        let a = parse_subject("CN=Acme Device CA,O=Acme\\, Inc.,C=NO").unwrap();
        assert_eq!(
            a,
            vec![
                (Attr::Cn, "Acme Device CA".to_string()),
                (Attr::O, "Acme, Inc.".to_string()),
                (Attr::C, "NO".to_string())
            ]
        );
        for bad in [
            "",
            "CN=",
            "CN=a,CN=b",
            "X=1",
            "CN",
            "C=norway",
            "CN=a+O=b",
            "CN=a\\",
            "CN=a\u{1}",
        ] {
            assert!(
                matches!(parse_subject(bad), Err(CaError::BadSubject(_))),
                "{bad:?}"
            );
        }
        let long = format!("CN={}", "x".repeat(65));
        assert!(parse_subject(&long).is_err());
    }

    #[test]
    fn der_walker_never_panics() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0xff],
            &[0x1f, 0x01, 0x00],
        ] {
            assert!(raw_parts(input).is_none());
        }
    }

    #[test]
    fn serial_is_positive_20_bytes() {
        for _ in 0..100 {
            let s = random_serial();
            assert!(s[0] >= 0x40 && s[0] < 0x80);
        }
    }

    #[test]
    fn init_recipients_show_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let id = age::x25519::Identity::generate();
        let info = init(
            &ca_dir,
            &InitOptions {
                subject: "CN=Test CA,O=Test".into(),
                days: 30,
                protection: Protection::Recipients(vec![id.to_public().to_string()]),
                operator: "tester".into(),
            },
        )
        .unwrap();
        assert_eq!(info.subject, "CN=Test CA,O=Test");
        assert_eq!(info.audit_records, 2);
        assert_eq!(info.unlock_with, "identity");
        let idf = dir.path().join("id.txt");
        use age::secrecy::ExposeSecret;
        secret::write_secret_file(&idf, id.to_string().expose_secret().as_bytes()).unwrap();
        let u = unlock(&ca_dir, &Unlock::Identity(idf), "tester").unwrap();
        assert_eq!(u.cert.fingerprint, info.fingerprint);
        assert_eq!(u.cert.ski, key_identifier(&u.cert.public_key));
        assert_eq!(format!("{:?}", u.key), "CaKey(..)");
        let report = audit::verify_db(&ca_dir).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.records, 4);
        assert_eq!(report.unsigned_tail, 0);
        // Never overwrite.
        assert!(matches!(
            init(
                &ca_dir,
                &InitOptions {
                    subject: "CN=Other".into(),
                    days: 30,
                    protection: Protection::Recipients(vec![id.to_public().to_string()]),
                    operator: "tester".into(),
                }
            ),
            Err(CaError::Exists(_))
        ));
    }
}
