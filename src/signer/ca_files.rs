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
pub(crate) fn analyze_cert_issued_by(
    der: &[u8],
    now: OffsetDateTime,
    parent: Option<&CaCert>,
) -> Result<(CaCert, Vec<String>), CaFileError> {
    let bad = |m: &str| {
        CaFileError::BadCert(format!(
            "{m}; give the CA certificate (PEM) made for this CA"
        ))
    };
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        CaFileError::BadCert(format!(
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
        return Err(CaFileError::BadCert(
            "the CA key is not EC P-256; nrfca signs with P-256 only (as nRF Cloud and Nordic's create_ca_cert do)".into(),
        ));
    }
    let mut public_key = [0u8; 65];
    public_key.copy_from_slice(pk);

    if cert.signature_algorithm.oid.to_string() != OID_ECDSA_SHA256
        || tbs.signature.oid.to_string() != OID_ECDSA_SHA256
    {
        return Err(CaFileError::BadCert(
            "the CA certificate is not signed with ecdsa-with-SHA256".into(),
        ));
    }
    if tbs.version != x509_cert::certificate::Version::V3 {
        return Err(CaFileError::BadCert(
            "the CA certificate is not X.509 v3 (no extensions); it cannot be a CA".into(),
        ));
    }
    let expected_issuer = parent.map_or(subject_raw, |p| p.subject_der.as_slice());
    if issuer_raw != expected_issuer {
        return Err(CaFileError::BadCert(if parent.is_some() {
            "the CA certificate's issuer is not the subject of its parent (parent.pem)".into()
        } else {
            "the certificate is not self-signed (issuer ≠ subject); nrfca adopts root CAs only (for an intermediate made by `ca issue-intermediate`, give a bundle's chain.pem: the CA, then its root)"
                .into()
        }));
    }
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the signature BIT STRING has unused bits"))?;
    if let Some(p) = parent {
        if !crypto::verify_p256_sha256(&p.public_key, tbs_raw, sig) {
            return Err(CaFileError::BadCert(
                "the CA certificate is not signed by its parent (parent.pem); restore both from the same backup".into(),
            ));
        }
    } else if !crypto::verify_p256_sha256(&public_key, tbs_raw, sig) {
        return Err(CaFileError::BadCert(
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
                    return Err(CaFileError::BadCert(
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
                    return Err(CaFileError::BadCert(format!(
                        "the CA certificate has an unknown critical extension {oid}"
                    )));
                }
            }
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
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &public_key)
                .as_ref()
                .to_vec()
        }
    };

    let not_before = time_of(&tbs.validity.not_before)?;
    let not_after = time_of(&tbs.validity.not_after)?;
    if not_after <= now {
        return Err(CaFileError::BadCert(format!(
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
