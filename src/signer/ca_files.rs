//! The CA directory's files: their names, and the CA certificate loaded and checked against
//! what nrfca can sign with (P-256, ecdsa-with-SHA256, a self-signed CA with keyCertSign). No
//! secret and no database here: `ca` (custody), `audit` and `report` all read the certificate
//! through this module, so none of them depends on another for it.

use crate::crypto;
use der::Decode;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// File name of the CA certificate in the CA directory.
pub const CA_PEM: &str = "ca.pem";
/// File name of the age-encrypted CA key.
pub const CA_KEY: &str = "ca.key.age";
/// File name of the RFC 7512 reference to a CA key held in a PKCS#11 token (then there is no
/// `ca.key.age`).
pub const CA_KEY_PKCS11: &str = "ca.key.pkcs11";
/// File name of the quorum description (M, custodians, share set) of a quorum-held key.
pub const QUORUM_MANIFEST: &str = "quorum.json";
/// Directory of the custodians' share files, as `ca init --quorum` writes them.
pub const SHARES_DIR: &str = "shares";
/// File name of the CA database.
pub const CA_DB: &str = "ca.db";
/// Largest certificate / plaintext key file read by `ca import`.
pub const MAX_PEM_FILE: u64 = 1 << 20;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_SKI: &str = "2.5.29.14";

/// Why the CA certificate (or another CA file) could not be read. Messages say what to do
/// next.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// A CA file is missing.
    #[error("{} does not exist; check --ca-dir (create a CA with `nrfca ca init`; an interrupted init leaves no ca.db: remove that directory and run init again)", .0.display())]
    Missing(PathBuf),
    /// Reading a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The certificate is not a usable P-256 CA certificate (or the file is not one).
    #[error("{0}")]
    BadCert(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaFileError + '_ {
    move |source| CaFileError::Io {
        path: path.to_path_buf(),
        source,
    }
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

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Raw TBS bytes, raw issuer Name and raw subject Name of a certificate DER, exactly as
/// encoded (never re-encoded: the issuer of device certificates is these bytes), walked with
/// the `der` crate's reader.
fn raw_parts(cert_der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    use der::{Reader, SliceReader, Tag, TagNumber, Tagged};
    fn value_of(tlv: &[u8]) -> Option<&[u8]> {
        let any = der::asn1::AnyRef::from_der(tlv).ok()?;
        (any.tag() == Tag::Sequence).then(|| any.value())
    }
    let mut outer = SliceReader::new(cert_der).ok()?;
    let cert = value_of(outer.tlv_bytes().ok()?)?;
    let tbs = SliceReader::new(cert).ok()?.tlv_bytes().ok()?;
    let mut r = SliceReader::new(value_of(tbs)?).ok()?;
    let version = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    if r.peek_tag().ok()? == version {
        r.tlv_bytes().ok()?;
    }
    r.tlv_bytes().ok()?; // serial
    r.tlv_bytes().ok()?; // signature algorithm
    let issuer = r.tlv_bytes().ok()?;
    r.tlv_bytes().ok()?; // validity
    let subject = r.tlv_bytes().ok()?;
    Some((tbs, issuer, subject))
}

fn time_of(t: &x509_cert::time::Time) -> Result<OffsetDateTime, CaFileError> {
    let secs = i64::try_from(t.to_unix_duration().as_secs())
        .map_err(|_| CaFileError::BadCert("certificate time out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| CaFileError::BadCert("certificate time out of range".into()))
}

/// Parse and check a CA certificate; returns it and warnings (things nrfca's own profile
/// does differently but that still work). Refuses what cannot work: not P-256, not
/// ecdsa-with-SHA256, not a CA, not self-signed, no keyCertSign, expired.
pub(crate) fn analyze_cert(
    der: &[u8],
    now: OffsetDateTime,
) -> Result<(CaCert, Vec<String>), CaFileError> {
    analyze_cert_issued_by(der, now, None)
}

/// [`analyze_cert`] for a CA certificate issued by `parent` (an intermediate made by
/// `nrfca ca issue-intermediate`): its issuer must be the parent's subject and its signature
/// the parent key's, instead of self-signed. `None`: self-signed, as [`analyze_cert`].
///
/// One check per property, in this order (the first refusal wins; warnings in this order):
/// key and curve, signature algorithm, version, issuer link, CA extensions, validity, subject
/// and serial.
pub(crate) fn analyze_cert_issued_by(
    der: &[u8],
    now: OffsetDateTime,
    parent: Option<&CaCert>,
) -> Result<(CaCert, Vec<String>), CaFileError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        CaFileError::BadCert(format!(
            "the CA certificate cannot be parsed ({e}); give a PEM X.509 certificate"
        ))
    })?;
    let (tbs_raw, issuer_raw, subject_raw) =
        raw_parts(der).ok_or_else(|| bad("the certificate DER is malformed"))?;
    let tbs = &cert.tbs_certificate;

    let public_key = check_key(&tbs.subject_public_key_info)?;
    check_signature_algorithm(&cert.signature_algorithm.oid, &tbs.signature.oid)?;
    check_version(tbs.version)?;
    check_issuer_link(
        &Signed {
            tbs: tbs_raw,
            issuer: issuer_raw,
            subject: subject_raw,
            signature: cert.signature.as_bytes(),
        },
        &public_key,
        parent,
    )?;
    let (ski, mut warnings) =
        check_ca_extensions(tbs.extensions.as_deref().unwrap_or_default(), &public_key)?;
    let not_before = time_of(&tbs.validity.not_before)?;
    let not_after = time_of(&tbs.validity.not_after)?;
    warnings.extend(check_validity(not_before, not_after, now)?);
    warnings.extend(subject_finding(&tbs.subject));
    let serial_bytes = tbs.serial_number.as_bytes();
    warnings.extend(serial_finding(serial_bytes));

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
        subject: tbs.subject.to_string(),
    };
    Ok((ca, warnings))
}

/// A certificate that cannot be what it claims: say which CA certificate to give instead.
fn bad(m: &str) -> CaFileError {
    CaFileError::BadCert(format!(
        "{m}; give the CA certificate (PEM) made for this CA"
    ))
}

/// Key and curve: an EC key on P-256 (a valid point, uncompressed); the key itself.
fn check_key(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<[u8; 65], CaFileError> {
    let curve_ok = spki.algorithm.oid.to_string() == OID_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .map(|o| o.to_string() == OID_P256)
            .unwrap_or(false);
    let pk = spki.subject_public_key.raw_bytes();
    match <[u8; 65]>::try_from(pk) {
        Ok(key) if curve_ok && crypto::is_valid_p256_point(pk) => Ok(key),
        _ => Err(CaFileError::BadCert(
            "the CA key is not EC P-256; nrfca signs with P-256 only (as nRF Cloud and Nordic's create_ca_cert do)".into(),
        )),
    }
}

/// Signature algorithm: ecdsa-with-SHA256, both outside and inside the signed part.
fn check_signature_algorithm(
    outer: &der::asn1::ObjectIdentifier,
    inner: &der::asn1::ObjectIdentifier,
) -> Result<(), CaFileError> {
    if outer.to_string() != OID_ECDSA_SHA256 || inner.to_string() != OID_ECDSA_SHA256 {
        return Err(CaFileError::BadCert(
            "the CA certificate is not signed with ecdsa-with-SHA256".into(),
        ));
    }
    Ok(())
}

/// Version: v3 (a CA needs extensions).
fn check_version(v: x509_cert::certificate::Version) -> Result<(), CaFileError> {
    if v != x509_cert::certificate::Version::V3 {
        return Err(CaFileError::BadCert(
            "the CA certificate is not X.509 v3 (no extensions); it cannot be a CA".into(),
        ));
    }
    Ok(())
}

/// The parts of a certificate that link it to its issuer, as encoded.
struct Signed<'a> {
    /// The signed TBSCertificate.
    tbs: &'a [u8],
    /// Its issuer Name.
    issuer: &'a [u8],
    /// Its subject Name.
    subject: &'a [u8],
    /// The signature (`None`: the BIT STRING has unused bits).
    signature: Option<&'a [u8]>,
}

/// Issuer link: a root names itself and verifies with its own key (`public_key`); an
/// intermediate names its parent and verifies with the parent's key.
fn check_issuer_link(
    c: &Signed<'_>,
    public_key: &[u8; 65],
    parent: Option<&CaCert>,
) -> Result<(), CaFileError> {
    let expected_issuer = parent.map_or(c.subject, |p| p.subject_der.as_slice());
    if c.issuer != expected_issuer {
        return Err(CaFileError::BadCert(if parent.is_some() {
            "the CA certificate's issuer is not the subject of its parent (parent.pem)".into()
        } else {
            "the certificate is not self-signed (issuer ≠ subject); nrfca adopts root CAs only (for an intermediate made by `ca issue-intermediate`, give a bundle's chain.pem: the CA, then its root)"
                .into()
        }));
    }
    let sig = c
        .signature
        .ok_or_else(|| bad("the signature BIT STRING has unused bits"))?;
    if let Some(p) = parent {
        if !crypto::verify_p256_sha256(&p.public_key, c.tbs, sig) {
            return Err(CaFileError::BadCert(
                "the CA certificate is not signed by its parent (parent.pem); restore both from the same backup".into(),
            ));
        }
    } else if !crypto::verify_p256_sha256(public_key, c.tbs, sig) {
        return Err(CaFileError::BadCert(
            "the certificate's self-signature does not verify; the file is damaged or not a root CA".into(),
        ));
    }
    Ok(())
}

/// CA extensions: basicConstraints CA:TRUE, keyCertSign when keyUsage is present, no unknown
/// critical extension. Gives the subject key identifier (SHA-1 of the key when the
/// certificate has none) and the warnings.
fn check_ca_extensions(
    extensions: &[x509_cert::ext::Extension],
    public_key: &[u8; 65],
) -> Result<(Vec<u8>, Vec<String>), CaFileError> {
    let mut warnings = Vec::new();
    let mut is_ca = false;
    let mut ski: Option<Vec<u8>> = None;
    let mut ku_seen = false;
    for ext in extensions {
        let oid = ext.extn_id.to_string();
        let value = ext.extn_value.as_bytes();
        match oid.as_str() {
            OID_BASIC_CONSTRAINTS => {
                let bc = x509_cert::ext::pkix::BasicConstraints::from_der(value)
                    .map_err(|_| bad("basicConstraints cannot be parsed"))?;
                is_ca = bc.ca;
                warnings.extend(basic_constraints_findings(&bc, ext.critical));
            }
            OID_KEY_USAGE => {
                ku_seen = true;
                let ku = x509_cert::ext::pkix::KeyUsage::from_der(value)
                    .map_err(|_| bad("keyUsage cannot be parsed"))?;
                warnings.extend(key_usage_findings(&ku, ext.critical)?);
            }
            OID_SKI => {
                let s = x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(value)
                    .map_err(|_| bad("subjectKeyIdentifier cannot be parsed"))?;
                ski = Some(s.0.as_bytes().to_vec());
            }
            _ if ext.critical => {
                return Err(CaFileError::BadCert(format!(
                    "the CA certificate has an unknown critical extension {oid}"
                )));
            }
            _ => {}
        }
    }
    if !is_ca {
        return Err(CaFileError::BadCert(
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
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public_key)
                .as_ref()
                .to_vec()
        }
    };
    Ok((ski, warnings))
}

/// What nrfca's own profile does differently in basicConstraints (critical, pathLen 0).
fn basic_constraints_findings(
    bc: &x509_cert::ext::pkix::BasicConstraints,
    critical: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !critical {
        warnings.push("basicConstraints is not critical".to_string());
    }
    match bc.path_len_constraint {
        None => warnings.push(
            "no pathLenConstraint (nrfca's own CAs use pathLen 0: device certificates only)"
                .to_string(),
        ),
        Some(0) => {}
        Some(n) => warnings.push(format!(
            "pathLenConstraint is {n}, not 0: this CA could certify sub-CAs"
        )),
    }
    warnings
}

/// keyUsage must allow keyCertSign; what else differs from nrfca's profile is a warning.
fn key_usage_findings(
    ku: &x509_cert::ext::pkix::KeyUsage,
    critical: bool,
) -> Result<Vec<String>, CaFileError> {
    if !ku.key_cert_sign() {
        return Err(CaFileError::BadCert(
            "keyUsage of the CA certificate lacks keyCertSign; it cannot sign certificates".into(),
        ));
    }
    let mut warnings = Vec::new();
    if !ku.digital_signature() {
        warnings.push("keyUsage lacks digitalSignature: strict verifiers may refuse manifest.sig and audit checkpoints made with this key".to_string());
    }
    if !ku.crl_sign() {
        warnings.push("keyUsage lacks cRLSign".to_string());
    }
    if ku.key_encipherment() {
        warnings
            .push("keyUsage has keyEncipherment, which means nothing for an EC key".to_string());
    }
    if !critical {
        warnings.push("keyUsage is not critical".to_string());
    }
    Ok(warnings)
}

/// Validity: refused once expired; warned when not yet valid or expiring within a year.
fn check_validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Vec<String>, CaFileError> {
    if not_after <= now {
        return Err(CaFileError::BadCert(format!(
            "the CA certificate expired on {}; create a new CA with `nrfca ca init`",
            rfc3339(not_after)
        )));
    }
    let mut warnings = Vec::new();
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
    Ok(warnings)
}

/// Subject: empty attributes (as Nordic's create_ca_cert writes them) are named.
fn subject_finding(subject: &x509_cert::name::Name) -> Option<String> {
    let mut empty_attrs = Vec::new();
    for rdn in subject.0.iter() {
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
    (!empty_attrs.is_empty()).then(|| {
        format!(
            "the subject has {} empty attribute(s) ({}), as Nordic's create_ca_cert writes them; strict X.509 linters flag this and device certificates carry the same issuer name",
            empty_attrs.len(),
            empty_attrs.join(", ")
        )
    })
}

/// Serial: a positive, non-zero INTEGER (its DER content bytes).
fn serial_finding(serial: &[u8]) -> Option<String> {
    (serial.iter().all(|b| *b == 0) || serial.first().map(|b| b & 0x80 != 0).unwrap_or(true))
        .then(|| "the serial number is zero or negative".to_string())
}

pub(crate) fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, CaFileError> {
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CaFileError::Missing(path.to_path_buf())
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
        return Err(CaFileError::BadCert(format!(
            "{} is larger than 1 MiB; is it the right file?",
            path.display()
        )));
    }
    Ok(buf)
}

pub(crate) fn cert_der_from_pem_file(path: &Path) -> Result<Vec<u8>, CaFileError> {
    let bytes = read_limited(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CaFileError::BadCert(format!("{} is not a PEM text file", path.display())))?;
    let certs: Vec<_> = crate::util::pem_blocks(text)
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .collect();
    match certs.as_slice() {
        [one] => one.decode().map_err(|e| {
            CaFileError::BadCert(format!(
                "{}: bad base64 in the certificate: {e}",
                path.display()
            ))
        }),
        [] => Err(CaFileError::BadCert(format!(
            "{} holds no CERTIFICATE PEM block",
            path.display()
        ))),
        _ => Err(CaFileError::BadCert(format!(
            "{} holds {} certificates; give the CA certificate alone",
            path.display(),
            certs.len()
        ))),
    }
}

/// DER of a CA certificate and of its issuer.
type ChainDers = (Vec<u8>, Vec<u8>);

/// The two certificates of a chain file (CA, then its issuer), `None` for anything else.
fn two_cert_chain(path: &Path) -> Result<Option<ChainDers>, CaFileError> {
    let bytes = read_limited(path)?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    let certs: Vec<Vec<u8>> = crate::util::pem_blocks(text)
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .filter_map(|b| b.decode().ok())
        .collect();
    Ok(match <[Vec<u8>; 2]>::try_from(certs) {
        Ok([ca, root]) if ca != root => Some((ca, root)),
        _ => None,
    })
}

/// Load and check a CA certificate from any PEM file (e.g. `--ca-cert` of `audit verify`,
/// `--trust` of `bench import`). Fails on anything that is not a P-256 self-signed CA, except
/// a chain of exactly two certificates (an intermediate's `chain.pem`: the CA, then the root
/// that issued it), which gives the intermediate, checked against the root.
pub fn load_cert_file(path: &Path) -> Result<CaCert, CaFileError> {
    if let Some((ca_der, root_der)) = two_cert_chain(path)? {
        let (root, _) = analyze_cert(&root_der, OffsetDateTime::UNIX_EPOCH)
            .map_err(|e| prefix_path(e, path))?;
        let (cert, _) = analyze_cert_issued_by(&ca_der, OffsetDateTime::UNIX_EPOCH, Some(&root))
            .map_err(|e| prefix_path(e, path))?;
        return Ok(cert);
    }
    let der = cert_der_from_pem_file(path)?;
    // Expiry is not a reason to refuse reading an existing CA (audit of an old log).
    let (cert, _) =
        analyze_cert(&der, OffsetDateTime::UNIX_EPOCH).map_err(|e| prefix_path(e, path))?;
    Ok(cert)
}

pub(crate) fn prefix_path(e: CaFileError, path: &Path) -> CaFileError {
    match e {
        CaFileError::BadCert(m) => CaFileError::BadCert(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// The parent's certificate in an intermediate CA's directory (`ca issue-intermediate`).
pub const PARENT_PEM: &str = "parent.pem";

/// Load `ca_dir/ca.pem` (no secret needed). An intermediate CA's directory also holds
/// `parent.pem` (the root that issued it): then `ca.pem` must be issued and signed by it.
pub fn load_cert(ca_dir: &Path) -> Result<CaCert, CaFileError> {
    let parent_path = ca_dir.join(PARENT_PEM);
    if !parent_path.exists() {
        return load_cert_file(&ca_dir.join(CA_PEM));
    }
    let parent = load_cert_file(&parent_path)?;
    let path = ca_dir.join(CA_PEM);
    let der = cert_der_from_pem_file(&path)?;
    let (cert, _) = analyze_cert_issued_by(&der, OffsetDateTime::UNIX_EPOCH, Some(&parent))
        .map_err(|e| prefix_path(e, &path))?;
    Ok(cert)
}

/// The parent (root) certificate of an intermediate CA, if `ca_dir` is one.
pub fn load_parent(ca_dir: &Path) -> Result<Option<CaCert>, CaFileError> {
    let p = ca_dir.join(PARENT_PEM);
    if !p.exists() {
        return Ok(None);
    }
    load_cert_file(&p).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(r: Result<Vec<String>, CaFileError>) -> String {
        match r {
            Ok(w) => w.join(" | "),
            Err(e) => format!("refused: {e}"),
        }
    }

    fn spki(
        alg: &str,
        curve: Option<&str>,
        pk: &[u8],
    ) -> x509_cert::spki::SubjectPublicKeyInfoOwned {
        use der::asn1::ObjectIdentifier as Oid;
        x509_cert::spki::SubjectPublicKeyInfoOwned {
            algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: Oid::new(alg).unwrap(),
                parameters: curve.map(|c| der::Any::encode_from(&Oid::new(c).unwrap()).unwrap()),
            },
            subject_public_key: der::asn1::BitString::from_bytes(pk).unwrap(),
        }
    }

    #[test]
    fn check_key_table() {
        let (key, _) = crypto::P256Key::generate().unwrap();
        let good = key.public_key();
        let mut off_curve = good;
        off_curve[64] ^= 1;
        const P384: &str = "1.3.132.0.34";
        const RSA: &str = "1.2.840.113549.1.1.1";
        /// (case, key algorithm, curve, key bytes, accepted)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], bool);
        let cases: [Case; 6] = [
            (
                "P-256 point",
                OID_EC_PUBLIC_KEY,
                Some(OID_P256),
                &good,
                true,
            ),
            ("other curve", OID_EC_PUBLIC_KEY, Some(P384), &good, false),
            ("no curve", OID_EC_PUBLIC_KEY, None, &good, false),
            ("RSA", RSA, Some(OID_P256), &good, false),
            (
                "not on the curve",
                OID_EC_PUBLIC_KEY,
                Some(OID_P256),
                &off_curve,
                false,
            ),
            (
                "compressed",
                OID_EC_PUBLIC_KEY,
                Some(OID_P256),
                &good[..33],
                false,
            ),
        ];
        for (name, alg, curve, pk, ok) in cases {
            match check_key(&spki(alg, curve, pk)) {
                Ok(k) => {
                    assert!(ok, "case: {name}");
                    assert_eq!(k, good, "case: {name}");
                }
                Err(e) => {
                    assert!(!ok, "case: {name}");
                    assert!(e.to_string().contains("not EC P-256"), "case: {name}: {e}");
                }
            }
        }
    }

    #[test]
    fn signature_algorithm_and_version_table() {
        use der::asn1::ObjectIdentifier as Oid;
        const SHA384: &str = "1.2.840.10045.4.3.3";
        for (outer, inner, ok) in [
            (OID_ECDSA_SHA256, OID_ECDSA_SHA256, true),
            (SHA384, OID_ECDSA_SHA256, false),
            (OID_ECDSA_SHA256, SHA384, false),
        ] {
            let got =
                check_signature_algorithm(&Oid::new(outer).unwrap(), &Oid::new(inner).unwrap());
            assert_eq!(got.is_ok(), ok, "{outer} {inner}");
        }
        use x509_cert::certificate::Version;
        for (v, ok) in [
            (Version::V1, false),
            (Version::V2, false),
            (Version::V3, true),
        ] {
            assert_eq!(check_version(v).is_ok(), ok, "{v:?}");
        }
    }

    #[test]
    fn check_issuer_link_table() {
        let (root_key, _) = crypto::P256Key::generate().unwrap();
        let (own_key, _) = crypto::P256Key::generate().unwrap();
        let tbs = b"tbs bytes".as_slice();
        let by_root = root_key.sign_der(tbs).unwrap();
        let by_own = own_key.sign_der(tbs).unwrap();
        let parent = CaCert {
            der: Vec::new(),
            pem: String::new(),
            subject_der: b"ROOT".to_vec(),
            ski: Vec::new(),
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH,
            fingerprint: String::new(),
            public_key: root_key.public_key(),
            serial: String::new(),
            subject: String::new(),
        };
        let own = own_key.public_key();
        // (case, issuer, signature, parent, error text or "" for accepted)
        type Case<'a> = (
            &'a str,
            &'a [u8],
            Option<&'a [u8]>,
            Option<&'a CaCert>,
            &'a str,
        );
        let cases: [Case; 8] = [
            ("self-signed root", b"CA", Some(&by_own), None, ""),
            (
                "root naming another issuer",
                b"ROOT",
                Some(&by_own),
                None,
                "not self-signed",
            ),
            (
                "root signed by another key",
                b"CA",
                Some(&by_root),
                None,
                "self-signature does not verify",
            ),
            (
                "signature with unused bits",
                b"CA",
                None,
                None,
                "unused bits",
            ),
            (
                "intermediate of its parent",
                b"ROOT",
                Some(&by_root),
                Some(&parent),
                "",
            ),
            (
                "intermediate naming itself",
                b"CA",
                Some(&by_own),
                Some(&parent),
                "not the subject of its parent",
            ),
            (
                "intermediate signed by itself",
                b"ROOT",
                Some(&by_own),
                Some(&parent),
                "not signed by its parent",
            ),
            (
                "intermediate, unused bits",
                b"ROOT",
                None,
                Some(&parent),
                "unused bits",
            ),
        ];
        for (name, issuer, signature, parent, want) in cases {
            let c = Signed {
                tbs,
                issuer,
                subject: b"CA",
                signature,
            };
            match check_issuer_link(&c, &own, parent) {
                Ok(()) => assert_eq!(want, "", "case: {name}"),
                Err(e) => {
                    assert!(!want.is_empty(), "case: {name}: {e}");
                    assert!(e.to_string().contains(want), "case: {name}: {e}");
                }
            }
        }
    }

    #[test]
    fn basic_constraints_and_key_usage_table() {
        use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages as K};
        let bc = |path_len| BasicConstraints {
            ca: true,
            path_len_constraint: path_len,
        };
        for (path_len, critical, want) in [
            (Some(0), true, ""),
            (Some(0), false, "basicConstraints is not critical"),
            (
                None,
                true,
                "no pathLenConstraint (nrfca's own CAs use pathLen 0: device certificates only)",
            ),
            (
                Some(2),
                true,
                "pathLenConstraint is 2, not 0: this CA could certify sub-CAs",
            ),
        ] {
            assert_eq!(
                basic_constraints_findings(&bc(path_len), critical).join(" | "),
                want
            );
        }
        let profile = K::KeyCertSign | K::CRLSign | K::DigitalSignature;
        let cases = [
            (KeyUsage(profile), true, ""),
            (KeyUsage(profile), false, "keyUsage is not critical"),
            (KeyUsage(K::KeyCertSign | K::CRLSign), true, "keyUsage lacks digitalSignature: strict verifiers may refuse manifest.sig and audit checkpoints made with this key"),
            (KeyUsage(K::KeyCertSign | K::DigitalSignature), true, "keyUsage lacks cRLSign"),
            (KeyUsage(profile | K::KeyEncipherment), true, "keyUsage has keyEncipherment, which means nothing for an EC key"),
            (KeyUsage(K::CRLSign | K::DigitalSignature), true, "refused: keyUsage of the CA certificate lacks keyCertSign; it cannot sign certificates"),
        ];
        for (ku, critical, want) in cases {
            assert_eq!(
                finding(key_usage_findings(&ku, critical)),
                want,
                "{ku:?} {critical}"
            );
        }
    }

    #[test]
    fn check_validity_table() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let day = time::Duration::days(1);
        let cases = [
            (now - day, now + 3650 * day, ""),
            (now - day, now, "refused: the CA certificate expired on 2027-01-15T08:00:00Z; create a new CA with `nrfca ca init`"),
            (now + day, now + 3650 * day, "the CA certificate is not valid before 2027-01-16T08:00:00Z"),
            (now - day, now + 100 * day, "the CA certificate expires within a year (2027-04-25T08:00:00Z)"),
        ];
        for (nb, na, want) in cases {
            assert_eq!(finding(check_validity(nb, na, now)), want);
        }
    }

    #[test]
    fn subject_and_serial_findings() {
        use std::str::FromStr;
        use x509_cert::attr::AttributeTypeAndValue;
        use x509_cert::name::{Name, RelativeDistinguishedName};
        let empty = |oid: &str| {
            let atv = AttributeTypeAndValue {
                oid: der::asn1::ObjectIdentifier::new(oid).unwrap(),
                value: der::Any::new(der::Tag::Utf8String, Vec::<u8>::new()).unwrap(),
            };
            RelativeDistinguishedName::try_from(vec![atv]).unwrap()
        };
        let mut name = Name::from_str("CN=Device CA").unwrap();
        assert_eq!(subject_finding(&name), None);
        name.0.push(empty("2.5.4.6"));
        name.0.push(empty("1.2.3.4"));
        assert_eq!(
            subject_finding(&name).as_deref(),
            Some("the subject has 2 empty attribute(s) (C, 1.2.3.4), as Nordic's create_ca_cert writes them; strict X.509 linters flag this and device certificates carry the same issuer name")
        );
        for (serial, warned) in [
            (&[0x01][..], false),
            (&[0x00, 0x80], false),
            (&[0x00], true),
            (&[0x00, 0x00], true),
            (&[0x80, 0x01], true),
            (&[], true),
        ] {
            assert_eq!(serial_finding(serial).is_some(), warned, "{serial:02x?}");
        }
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
}
