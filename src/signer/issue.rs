//! Device certificates from the profile of SPEC §4, built as DER by hand (the hot path).
//!
//! Why by hand: measured in `benches/micro.rs` (docs/performance.md, "Hand-written pieces kept
//! for speed"), this template builds the TBSCertificate in ≈ 0.8 µs where the same bytes from
//! `x509-cert`'s types take ≈ 4 µs — ≈ 3 µs more per certificate, a tenth of the CA
//! signature. [`build_tbs_x509_cert`] is the reference: the test `template_matches_x509_cert`
//! checks the two give identical bytes (which also checks the OIDs in the byte constants
//! against `crate::oid`).
//!
//! [`issue`] takes only an [`Issuance`] (device id, public key, serial, validity) plus the
//! issuing CA's [`IssuerProfile`]; it never sees the CSR, so nothing a modem asks for can reach
//! the certificate. The TBS layout is fixed:
//!
//! ```text
//! version v3, serial (20 bytes, first byte 0x01..=0x7f), ecdsa-with-SHA256,
//! issuer = CA subject DER, validity (UTCTime before 2050, GeneralizedTime after),
//! subject CN=<device id> (UTF8String), id-ecPublicKey P-256 SPKI,
//! extensions: basicConstraints critical CA:FALSE, keyUsage critical digitalSignature,
//!             extKeyUsage clientAuth, SKI (SHA-1 of the key, RFC 5280 method 1), AKI = CA SKI
//! ```

use std::fmt;
use time::OffsetDateTime;

/// Longest device id accepted as a CN (X.520 ub-common-name).
pub const MAX_CN_LEN: usize = 64;

/// ecdsa-with-SHA256 AlgorithmIdentifier (no parameters).
const ALG_ECDSA_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point (65 bytes follow).
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// basicConstraints critical CA:FALSE (empty SEQUENCE).
const EXT_BASIC_CONSTRAINTS: [u8; 14] = [
    0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00,
];

/// keyUsage critical digitalSignature.
const EXT_KEY_USAGE: [u8; 16] = [
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80,
];

/// extKeyUsage clientAuth (non-critical).
const EXT_EKU_CLIENT_AUTH: [u8; 21] = [
    0x30, 0x13, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01,
    0x05, 0x05, 0x07, 0x03, 0x02,
];

/// A certificate serial: 20 bytes, first byte in `0x01..=0x7f`, so it is positive, < 2^159,
/// has ≥ 152 random bits and its DER content is always exactly these 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(pub [u8; 20]);

impl Serial {
    /// A fresh random serial from the system generator.
    pub fn random() -> Result<Serial, IssueError> {
        let mut b = [0u8; 20];
        loop {
            crate::crypto::fill_random(&mut b).map_err(|_| IssueError::Rng)?;
            b[0] &= 0x7f;
            if b[0] != 0 {
                return Ok(Serial(b));
            }
        }
    }

    /// A serial from 20 random bytes (top bit cleared); `None` when the first byte is then
    /// zero (draw again).
    pub fn from_random(mut b: [u8; 20]) -> Option<Serial> {
        b[0] &= 0x7f;
        (b[0] != 0).then_some(Serial(b))
    }

    /// Lowercase hex (40 digits), as written to `certs.csv` and `ca.db`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the 40-digit hex form.
    pub fn from_hex(s: &str) -> Option<Serial> {
        let mut b = [0u8; 20];
        hex::decode_to_slice(s, &mut b).ok()?;
        if b[0] == 0 || b[0] > 0x7f {
            return None;
        }
        Some(Serial(b))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

/// What the policy decided to certify. Nothing else goes into the certificate.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The subject CN: the attested UUID, or the checked CN under `--device-id cn`.
    pub device_id: String,
    /// The device's P-256 public key, uncompressed SEC1 (`04 || X || Y`).
    pub public_key: [u8; 65],
    /// The serial, unique in `ca.db` (the caller checks).
    pub serial: Serial,
    /// Start of validity (issue time; sub-second part is dropped).
    pub not_before: OffsetDateTime,
    /// End of validity; must not be past the CA's notAfter.
    pub not_after: OffsetDateTime,
}

/// The issuing CA as far as a device certificate needs it.
#[derive(Debug, Clone)]
pub struct IssuerProfile {
    /// DER of the CA certificate's subject Name (the device certificate's issuer).
    pub subject_der: Vec<u8>,
    /// The CA's subjectKeyIdentifier (the device certificate's AKI keyIdentifier).
    pub ski: Vec<u8>,
    /// The CA certificate's notAfter: no device certificate may outlive it.
    pub not_after: OffsetDateTime,
}

/// A built and signed device certificate.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate DER.
    pub der: Vec<u8>,
    /// PEM with LF line ends, 64-column base64 and a final LF.
    pub pem: String,
    /// SHA-256 of the PEM bytes.
    pub pem_sha256: [u8; 32],
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedCert({} bytes)", self.der.len())
    }
}

/// Why a certificate could not be built. These stop the batch (they are not rejects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The requested notAfter is past the CA certificate's notAfter.
    #[error("certificates would be valid until {not_after}, past the CA certificate's notAfter {ca_not_after}; sign with a smaller --days or renew the CA")]
    PastCaExpiry {
        /// Requested end of validity.
        not_after: String,
        /// The CA's end of validity.
        ca_not_after: String,
    },
    /// notAfter is not after notBefore.
    #[error("notAfter is not after notBefore; give --days ≥ 1")]
    EmptyValidity,
    /// A time outside what X.509 can encode (years 0000–9999).
    #[error("validity time outside years 0000-9999; check the system clock and --days")]
    TimeOutOfRange,
    /// The device id is empty or longer than 64 characters.
    #[error("device id {0:?} cannot be a certificate CN (1 to 64 characters)")]
    BadDeviceId(String),
    /// The public key is not an uncompressed point.
    #[error("device public key is not an uncompressed P-256 point")]
    BadPublicKey,
    /// The CA's subject or SKI is unusable (the words say what; `IssueError` stays `Clone` +
    /// `Eq` for the pipeline, so no error object is kept).
    #[error("CA certificate unusable as issuer: {0}; check ca.pem")]
    BadIssuer(String),
    /// The random generator failed.
    #[error("the system random number generator failed; check /dev/urandom")]
    Rng,
    /// The CA key failed to sign (a key failure mid-batch is `SignError::Key`, typed; this
    /// carries the signer's words for [`issue`]'s generic signer).
    #[error("CA key failed to sign: {0}")]
    Sign(String),
}

/// Append a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len < 0x10000 {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// Append tag + length (content to follow).
fn push_hdr(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    push_len(out, len);
}

/// Size of a TLV with `len` bytes of content.
fn tlv_len(len: usize) -> usize {
    1 + if len < 0x80 {
        1
    } else if len < 0x100 {
        2
    } else if len < 0x10000 {
        3
    } else {
        4
    } + len
}

/// The DER Time for `t`: UTCTime for 1950–2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5).
fn encode_time(out: &mut Vec<u8>, t: OffsetDateTime) -> Result<(), IssueError> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let y = t.year();
    if !(0..=9999).contains(&y) {
        return Err(IssueError::TimeOutOfRange);
    }
    let two = |out: &mut Vec<u8>, v: u8| {
        out.push(b'0' + v / 10);
        out.push(b'0' + v % 10);
    };
    if (1950..2050).contains(&y) {
        out.extend_from_slice(&[0x17, 13]);
        two(out, (y % 100) as u8);
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, (y / 100) as u8);
        two(out, (y % 100) as u8);
    }
    two(out, u8::from(t.month()));
    two(out, t.day());
    two(out, t.hour());
    two(out, t.minute());
    two(out, t.second());
    out.push(b'Z');
    Ok(())
}

/// SHA-1 of the public key bits (RFC 5280 §4.2.1.2 method 1), the usual SKI.
pub fn key_identifier(public_key: &[u8]) -> [u8; 20] {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public_key);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// Validity check shared by [`build_tbs`] and the batch-level check in `sign`.
pub fn check_validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<(), IssueError> {
    if not_after <= not_before {
        return Err(IssueError::EmptyValidity);
    }
    if not_after > ca_not_after {
        return Err(IssueError::PastCaExpiry {
            not_after: rfc3339(not_after),
            ca_not_after: rfc3339(ca_not_after),
        });
    }
    Ok(())
}

/// RFC 3339 UTC with whole seconds (`2025-01-02T03:04:05Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The DER TBSCertificate for `iss` under `ca`.
pub fn build_tbs(ca: &IssuerProfile, iss: &Issuance) -> Result<Vec<u8>, IssueError> {
    check_validity(iss.not_before, iss.not_after, ca.not_after)?;
    let cn = iss.device_id.as_bytes();
    if cn.is_empty() || iss.device_id.chars().count() > MAX_CN_LEN {
        return Err(IssueError::BadDeviceId(iss.device_id.clone()));
    }
    if iss.public_key[0] != 0x04 {
        return Err(IssueError::BadPublicKey);
    }
    if ca.subject_der.first() != Some(&0x30) {
        return Err(IssueError::BadIssuer(
            "subject is not a DER SEQUENCE".into(),
        ));
    }
    if ca.ski.is_empty() || ca.ski.len() > 64 {
        return Err(IssueError::BadIssuer("subjectKeyIdentifier missing".into()));
    }

    // validity
    let mut validity = Vec::with_capacity(36);
    encode_time(&mut validity, iss.not_before)?;
    encode_time(&mut validity, iss.not_after)?;

    // subject: SEQUENCE { SET { SEQUENCE { OID cn, UTF8String } } }
    let atv_len = 5 + tlv_len(cn.len());
    let set_len = tlv_len(atv_len);
    let name_len = tlv_len(tlv_len(set_len));

    // extensions
    let ski = key_identifier(&iss.public_key);
    let ext_ski_len = tlv_len(5 + tlv_len(tlv_len(20)));
    let aki_inner = tlv_len(ca.ski.len()); // [0] keyIdentifier
    let aki_seq = tlv_len(aki_inner);
    let ext_aki_len = tlv_len(5 + tlv_len(aki_seq));
    let exts_content = EXT_BASIC_CONSTRAINTS.len()
        + EXT_KEY_USAGE.len()
        + EXT_EKU_CLIENT_AUTH.len()
        + ext_ski_len
        + ext_aki_len;
    let exts_seq = tlv_len(exts_content);

    let content = 5 // version
        + 22 // serial
        + ALG_ECDSA_SHA256.len()
        + ca.subject_der.len()
        + tlv_len(validity.len())
        + name_len
        + SPKI_P256_PREFIX.len() + 65
        + tlv_len(exts_seq);
    let mut out = Vec::with_capacity(tlv_len(content));
    push_hdr(&mut out, 0x30, content);
    out.extend_from_slice(&[0xa0, 0x03, 0x02, 0x01, 0x02]);
    out.extend_from_slice(&[0x02, 20]);
    out.extend_from_slice(&iss.serial.0);
    out.extend_from_slice(&ALG_ECDSA_SHA256);
    out.extend_from_slice(&ca.subject_der);
    push_hdr(&mut out, 0x30, validity.len());
    out.extend_from_slice(&validity);
    push_hdr(&mut out, 0x30, tlv_len(set_len));
    push_hdr(&mut out, 0x31, set_len);
    push_hdr(&mut out, 0x30, atv_len);
    out.extend_from_slice(&[0x06, 0x03, 0x55, 0x04, 0x03]);
    push_hdr(&mut out, 0x0c, cn.len());
    out.extend_from_slice(cn);
    out.extend_from_slice(&SPKI_P256_PREFIX);
    out.extend_from_slice(&iss.public_key);
    push_hdr(&mut out, 0xa3, exts_seq);
    push_hdr(&mut out, 0x30, exts_content);
    out.extend_from_slice(&EXT_BASIC_CONSTRAINTS);
    out.extend_from_slice(&EXT_KEY_USAGE);
    out.extend_from_slice(&EXT_EKU_CLIENT_AUTH);
    // SKI: Extension { OID, OCTET STRING { OCTET STRING ski } }
    push_hdr(&mut out, 0x30, 5 + tlv_len(tlv_len(20)));
    out.extend_from_slice(&[0x06, 0x03, 0x55, 0x1d, 0x0e]);
    push_hdr(&mut out, 0x04, tlv_len(20));
    push_hdr(&mut out, 0x04, 20);
    out.extend_from_slice(&ski);
    // AKI: Extension { OID, OCTET STRING { SEQUENCE { [0] keyid } } }
    push_hdr(&mut out, 0x30, 5 + tlv_len(aki_seq));
    out.extend_from_slice(&[0x06, 0x03, 0x55, 0x1d, 0x23]);
    push_hdr(&mut out, 0x04, aki_seq);
    push_hdr(&mut out, 0x30, aki_inner);
    push_hdr(&mut out, 0x80, ca.ski.len());
    out.extend_from_slice(&ca.ski);
    debug_assert_eq!(out.len(), tlv_len(content));
    Ok(out)
}

/// An X.509 `Time` for `t` (UTCTime 1950–2049, else GeneralizedTime, RFC 5280 §4.1.2.5),
/// whole seconds; `None` outside what DER can say. The one conversion for certificates and
/// CRLs built with `x509-cert`.
pub(crate) fn x509_time(t: OffsetDateTime) -> Option<x509_cert::time::Time> {
    use der::asn1::{GeneralizedTime, UtcTime};
    use x509_cert::time::Time;
    let t = t.to_offset(time::UtcOffset::UTC);
    let y = u16::try_from(t.year()).ok()?;
    let dt = der::DateTime::new(
        y,
        t.month().into(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
    .ok()?;
    Some(if (1950..2050).contains(&y) {
        Time::UtcTime(UtcTime::from_date_time(dt).ok()?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_date_time(dt))
    })
}

/// The DER of an AuthorityKeyIdentifier extension value naming the CA's key by `ski` (the
/// one encoding for certificates and CRLs).
pub(crate) fn aki_der(ski: &[u8]) -> Result<Vec<u8>, der::Error> {
    use der::Encode;
    x509_cert::ext::pkix::AuthorityKeyIdentifier {
        key_identifier: Some(der::asn1::OctetString::new(ski.to_vec())?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    }
    .to_der()
}

/// The same TBSCertificate as [`build_tbs`], built from `x509-cert`'s types and encoded by
/// `der`: the reference the hand template is tested against (`template_matches_x509_cert`)
/// and measured against (`cargo bench --bench micro`, docs/performance.md).
#[doc(hidden)]
pub fn build_tbs_x509_cert(ca: &IssuerProfile, iss: &Issuance) -> Result<Vec<u8>, IssueError> {
    use crate::oid;
    use der::asn1::{Any, BitString, OctetString, SetOfVec};
    use der::{Decode, Encode, Tag};
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::certificate::{TbsCertificate, Version};
    use x509_cert::ext::pkix::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
    };
    use x509_cert::ext::Extension;
    use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use x509_cert::time::Validity;

    check_validity(iss.not_before, iss.not_after, ca.not_after)?;
    if iss.device_id.is_empty() || iss.device_id.chars().count() > MAX_CN_LEN {
        return Err(IssueError::BadDeviceId(iss.device_id.clone()));
    }
    if iss.public_key[0] != 0x04 {
        return Err(IssueError::BadPublicKey);
    }
    let bad = |e: der::Error| IssueError::BadIssuer(e.to_string());
    let time = |t: OffsetDateTime| x509_time(t).ok_or(IssueError::TimeOutOfRange);
    let ext = |id: oid::Oid, critical: bool, value: Vec<u8>| -> Result<Extension, IssueError> {
        Ok(Extension {
            extn_id: id,
            critical,
            extn_value: OctetString::new(value).map_err(bad)?,
        })
    };
    let cn = AttributeTypeAndValue {
        oid: oid::CN,
        value: Any::new(Tag::Utf8String, iss.device_id.as_bytes()).map_err(bad)?,
    };
    let subject: Name = RdnSequence(vec![RelativeDistinguishedName(
        SetOfVec::try_from(vec![cn]).map_err(bad)?,
    )]);
    let ski = key_identifier(&iss.public_key);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&iss.serial.0).map_err(bad)?,
        signature: AlgorithmIdentifierOwned {
            oid: oid::ECDSA_WITH_SHA256,
            parameters: None,
        },
        issuer: Name::from_der(&ca.subject_der).map_err(bad)?,
        validity: Validity {
            not_before: time(iss.not_before)?,
            not_after: time(iss.not_after)?,
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: oid::EC_PUBLIC_KEY,
                parameters: Some(Any::from(oid::SECP256R1)),
            },
            subject_public_key: BitString::from_bytes(&iss.public_key).map_err(bad)?,
        },
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![
            ext(
                oid::BASIC_CONSTRAINTS,
                true,
                BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                }
                .to_der()
                .map_err(bad)?,
            )?,
            ext(
                oid::KEY_USAGE,
                true,
                KeyUsage(KeyUsages::DigitalSignature.into())
                    .to_der()
                    .map_err(bad)?,
            )?,
            ext(
                oid::EXT_KEY_USAGE,
                false,
                ExtendedKeyUsage(vec![oid::KP_CLIENT_AUTH])
                    .to_der()
                    .map_err(bad)?,
            )?,
            ext(
                oid::SUBJECT_KEY_IDENTIFIER,
                false,
                SubjectKeyIdentifier(OctetString::new(ski.to_vec()).map_err(bad)?)
                    .to_der()
                    .map_err(bad)?,
            )?,
            ext(
                oid::AUTHORITY_KEY_IDENTIFIER,
                false,
                aki_der(&ca.ski).map_err(bad)?,
            )?,
        ]),
    };
    tbs.to_der().map_err(bad)
}

/// Wrap a TBS and its DER ECDSA signature into a Certificate.
pub fn assemble(tbs: &[u8], sig_der: &[u8]) -> Vec<u8> {
    let bits = tlv_len(sig_der.len() + 1);
    let content = tbs.len() + ALG_ECDSA_SHA256.len() + bits;
    let mut out = Vec::with_capacity(tlv_len(content));
    push_hdr(&mut out, 0x30, content);
    out.extend_from_slice(tbs);
    out.extend_from_slice(&ALG_ECDSA_SHA256);
    push_hdr(&mut out, 0x03, sig_der.len() + 1);
    out.push(0);
    out.extend_from_slice(sig_der);
    out
}

/// Build, sign and encode one device certificate. `sign` is the CA key's DER ECDSA-SHA256
/// signer (e.g. `|tbs| ca_key.sign_der(tbs)`).
pub fn issue<E: fmt::Display>(
    ca: &IssuerProfile,
    iss: &Issuance,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<IssuedCert, IssueError> {
    let tbs = build_tbs(ca, iss)?;
    let sig = sign(&tbs).map_err(|e| IssueError::Sign(e.to_string()))?;
    let der = assemble(&tbs, &sig);
    let pem = crate::util::pem_encode("CERTIFICATE", &der);
    let pem_sha256 = crate::crypto::sha256(pem.as_bytes());
    Ok(IssuedCert {
        der,
        pem,
        pem_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{verify_p256_sha256, P256Key};
    use der::{Decode, Encode};
    use x509_cert::Certificate;

    fn test_ca(key: &P256Key, cn: &str) -> IssuerProfile {
        // A minimal issuer Name: SEQUENCE { SET { SEQUENCE { CN, UTF8String } } }.
        let mut name = Vec::new();
        let cnb = cn.as_bytes();
        let atv = 5 + tlv_len(cnb.len());
        push_hdr(&mut name, 0x30, tlv_len(tlv_len(atv)));
        push_hdr(&mut name, 0x31, tlv_len(atv));
        push_hdr(&mut name, 0x30, atv);
        name.extend_from_slice(&[0x06, 0x03, 0x55, 0x04, 0x03]);
        push_hdr(&mut name, 0x0c, cnb.len());
        name.extend_from_slice(cnb);
        IssuerProfile {
            subject_der: name,
            ski: key_identifier(&key.public_key()).to_vec(),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(7300),
        }
    }

    fn issuance(dev: &P256Key, days: i64) -> Issuance {
        let nb = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        Issuance {
            device_id: "50503041-3539-47eb-807b-102dbb423b9a".into(),
            public_key: dev.public_key(),
            serial: Serial::random().unwrap(),
            not_before: nb,
            not_after: nb + time::Duration::days(days),
        }
    }

    #[test]
    fn certificate_reparses_and_verifies() {
        let (ca_key, _) = P256Key::generate().unwrap();
        let (dev, _) = P256Key::generate().unwrap();
        let ca = test_ca(&ca_key, "Test CA");
        let iss = issuance(&dev, 3650);
        let c = issue(&ca, &iss, |t| ca_key.sign_der(t)).unwrap();
        let cert = Certificate::from_der(&c.der).unwrap();
        // Re-encoding is byte-identical: our DER is canonical.
        assert_eq!(cert.to_der().unwrap(), c.der);
        let tbs = cert.tbs_certificate.to_der().unwrap();
        assert!(verify_p256_sha256(
            &ca_key.public_key(),
            &tbs,
            cert.signature.raw_bytes()
        ));
        assert_eq!(
            cert.tbs_certificate.serial_number.as_bytes(),
            &iss.serial.0[..]
        );
        assert_eq!(
            cert.tbs_certificate.subject.to_string(),
            format!("CN={}", iss.device_id)
        );
        assert_eq!(
            cert.tbs_certificate.issuer.to_der().unwrap(),
            ca.subject_der
        );
        assert_eq!(
            cert.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
            &dev.public_key()[..]
        );
        let exts = cert.tbs_certificate.extensions.unwrap();
        assert_eq!(exts.len(), 5);
        assert!(exts[0].critical && exts[1].critical && !exts[2].critical);
        assert!(c.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(c.pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(!c.pem.contains('\r'));
        assert!(c.pem.lines().all(|l| l.len() <= 64));
        assert_eq!(c.pem_sha256, crate::crypto::sha256(c.pem.as_bytes()));
    }

    #[test]
    fn template_matches_x509_cert() {
        let (ca_key, _) = P256Key::generate().unwrap();
        let (dev, _) = P256Key::generate().unwrap();
        for (cn, days) in [("Test CA", 3650), (&*"L".repeat(300), 36500)] {
            let mut ca = test_ca(&ca_key, cn);
            ca.not_after = OffsetDateTime::now_utc() + time::Duration::days(40000);
            let mut iss = issuance(&dev, days);
            for id in ["50503041-3539-47eb-807b-102dbb423b9a", &"é".repeat(64), "x"] {
                iss.device_id = id.into();
                assert_eq!(
                    build_tbs(&ca, &iss).unwrap(),
                    build_tbs_x509_cert(&ca, &iss).unwrap(),
                    "{cn} {days} {id}"
                );
            }
        }
    }

    #[test]
    fn generalized_time_after_2049_and_cap() {
        let (ca_key, _) = P256Key::generate().unwrap();
        let (dev, _) = P256Key::generate().unwrap();
        let mut ca = test_ca(&ca_key, "CA");
        ca.not_after = OffsetDateTime::now_utc() + time::Duration::days(40000);
        let iss = issuance(&dev, 36500);
        let c = issue(&ca, &iss, |t| ca_key.sign_der(t)).unwrap();
        let cert = Certificate::from_der(&c.der).unwrap();
        assert!(matches!(
            cert.tbs_certificate.validity.not_after,
            x509_cert::time::Time::GeneralTime(_)
        ));
        assert!(matches!(
            cert.tbs_certificate.validity.not_before,
            x509_cert::time::Time::UtcTime(_)
        ));
        ca.not_after = OffsetDateTime::now_utc() + time::Duration::days(10);
        let e = issue(&ca, &iss, |t| ca_key.sign_der(t)).unwrap_err();
        assert!(matches!(e, IssueError::PastCaExpiry { .. }), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let (ca_key, _) = P256Key::generate().unwrap();
        let (dev, _) = P256Key::generate().unwrap();
        let ca = test_ca(&ca_key, "CA");
        let mut iss = issuance(&dev, 10);
        iss.device_id = "x".repeat(65);
        assert!(matches!(
            build_tbs(&ca, &iss),
            Err(IssueError::BadDeviceId(_))
        ));
        iss.device_id = String::new();
        assert!(matches!(
            build_tbs(&ca, &iss),
            Err(IssueError::BadDeviceId(_))
        ));
        iss.device_id = "é".repeat(64);
        assert!(build_tbs(&ca, &iss).is_ok());
        iss.public_key[0] = 2;
        assert_eq!(build_tbs(&ca, &iss), Err(IssueError::BadPublicKey));
        let iss = issuance(&dev, 0);
        assert_eq!(build_tbs(&ca, &iss), Err(IssueError::EmptyValidity));
    }

    #[test]
    fn serials_are_positive_and_round_trip() {
        for _ in 0..200 {
            let s = Serial::random().unwrap();
            assert!(s.0[0] >= 1 && s.0[0] <= 0x7f);
            assert_eq!(Serial::from_hex(&s.to_hex()), Some(s));
        }
        assert_eq!(Serial::from_hex("00"), None);
        assert_eq!(Serial::from_hex(&"8".repeat(40)), None);
    }

    #[test]
    fn long_issuer_uses_long_lengths() {
        let (ca_key, _) = P256Key::generate().unwrap();
        let (dev, _) = P256Key::generate().unwrap();
        let ca = test_ca(&ca_key, &"L".repeat(300));
        let c = issue(&ca, &issuance(&dev, 5), |t| ca_key.sign_der(t)).unwrap();
        let cert = Certificate::from_der(&c.der).unwrap();
        assert_eq!(cert.to_der().unwrap(), c.der);
    }
}
