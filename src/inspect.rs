//! `nrfca inspect`: recognise and decode any input the toolchain meets — a KEYGEN or
//! ATTESTTOKEN string, a CSR or certificate (PEM or DER), a requests file (CSV or lines) —
//! and judge it with the same checks `sign` runs. Pure: bytes in, a serialisable [`Report`]
//! out. Replaces Nordic's `modem_credentials_parser`.

use crate::crypto;
use crate::keygen::{self, cose, csr, tlv, CheckOptions, Csr};
use crate::reject::{Reject, RejectCode};
use crate::requests::{Entry, SourceReader};
use crate::signer::policy::{BatchPolicy, Decision, Lookup};
use serde::Serialize;

/// What kind of input was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// `base64url(CSR).base64url(COSE)` from `AT%KEYGEN`.
    Keygen,
    /// `base64url(message).base64url(COSE)` from `AT%ATTESTTOKEN`.
    Attesttoken,
    /// A PKCS#10 certification request.
    Csr,
    /// One or more X.509 certificates.
    Certificate,
    /// A requests file (CSV with the SPEC header, or KEYGEN lines).
    Requests,
}

/// The decoded input and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the input is.
    pub kind: InputKind,
    /// Whether it passes every check that applies.
    pub valid: bool,
    /// The reject code (or a check name for certificates) when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The verdict in words.
    pub detail: String,
    /// SHA-256 of the input bytes (for a PEM certificate, what `AT%CMNG=1` lists once written).
    pub input_sha256: String,
    /// KEYGEN details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keygen: Option<KeygenInfo>,
    /// ATTESTTOKEN details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attesttoken: Option<AttestInfo>,
    /// CSR details (a bare CSR input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrInfo>,
    /// Certificates in input order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertInfo>,
    /// Requests file summary and per-request verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestsInfo>,
}

/// A public key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// `EC P-256`, or what else it is.
    pub algorithm: String,
    /// The uncompressed point (hex) for P-256 keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Whether the P-256 point is on the curve.
    pub valid: bool,
}

/// A requested or present extension.
#[derive(Debug, Clone, Serialize)]
pub struct ExtInfo {
    /// Name (`keyUsage`, …) or dotted OID.
    pub name: String,
    /// The critical flag.
    pub critical: bool,
    /// Decoded value, or hex.
    pub value: String,
}

/// A decoded CSR.
#[derive(Debug, Clone, Serialize)]
pub struct CsrInfo {
    /// DER length.
    pub der_length: usize,
    /// SHA-256 of the DER as given.
    pub sha256: String,
    /// Subject in DER order.
    pub subject: String,
    /// The CN, if exactly one text CN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Subject public key.
    pub key: KeyInfo,
    /// Signature algorithm name.
    pub signature_algorithm: String,
    /// Whether the algorithm carries the nRF91 NULL parameter.
    pub null_param: bool,
    /// Whether the self-signature verifies over the exact CertificationRequestInfo bytes.
    pub signature_ok: bool,
    /// Requested extensions (ignored when signing).
    pub requested_extensions: Vec<ExtInfo>,
}

/// The COSE_Sign1 half.
#[derive(Debug, Clone, Serialize)]
pub struct CoseInfo {
    /// Tag 18 present.
    pub tagged: bool,
    /// Algorithm (ES256).
    pub alg: String,
    /// Key id (identity_key = -2).
    pub kid: String,
    /// Signature length in bytes.
    pub signature_length: usize,
    /// Why the signature is not checked.
    pub signature: String,
}

fn cose_info(c: &cose::CoseSign1) -> CoseInfo {
    CoseInfo {
        tagged: c.tagged,
        alg: c.alg_name(),
        kid: c.kid_name(),
        signature_length: c.signature.len(),
        signature: "not verifiable offline: made with the modem's identity key, whose public \
                    key only Nordic holds"
            .into(),
    }
}

/// A decoded KEYGEN string.
#[derive(Debug, Clone, Serialize)]
pub struct KeygenInfo {
    /// Characters of the (unwrapped) string.
    pub length: usize,
    /// SHA-256 of the unwrapped string (what `sign` records).
    pub keygen_sha256: String,
    /// Attested message type (9 CSR, 8 public key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_type: Option<i64>,
    /// Attested device UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Attested sec_tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_tag: Option<u32>,
    /// Attested digest (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether the digest is the SHA-256 of the first half.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_ok: Option<bool>,
    /// Nonce (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// COSE_Sign1 details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cose: Option<CoseInfo>,
    /// The CSR (msg type 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrInfo>,
    /// The bare public key (msg type 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<KeyInfo>,
    /// What could not be decoded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A decoded ATTESTTOKEN.
#[derive(Debug, Clone, Serialize)]
pub struct AttestInfo {
    /// Message type (1 = device identity).
    pub msg_type: i64,
    /// Device UUID.
    pub uuid: String,
    /// Device type number.
    pub device_type: i64,
    /// Device type name.
    pub device_type_name: String,
    /// Modem firmware UUID.
    pub fw_uuid: String,
    /// Nonce or challenge (hex).
    pub nonce: String,
    /// COSE_Sign1 details.
    pub cose: CoseInfo,
}

/// A decoded certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Subject in DER order.
    pub subject: String,
    /// Issuer in DER order.
    pub issuer: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Subject public key.
    pub key: KeyInfo,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Subject == issuer.
    pub self_signed: bool,
    /// Signature check against the issuer when the issuer is in the input (or self-signed);
    /// None when the issuer is not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_ok: Option<bool>,
    /// Extensions.
    pub extensions: Vec<ExtInfo>,
    /// SHA-256 of the DER (the certificate fingerprint).
    pub sha256: String,
}

/// One request of a requests file.
#[derive(Debug, Clone, Serialize)]
pub struct RequestVerdict {
    /// 1-based line where the request starts.
    pub line: u64,
    /// The attested UUID or the row's device_uuid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_uuid: Option<String>,
    /// `ok` or the reject code.
    pub verdict: String,
    /// Reject detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A requests file.
#[derive(Debug, Clone, Serialize)]
pub struct RequestsInfo {
    /// `csv` or `lines`.
    pub format: String,
    /// Requests and malformed records seen.
    pub total: u64,
    /// Requests that pass.
    pub ok: u64,
    /// Count per reject code.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Every request's verdict in file order.
    pub items: Vec<RequestVerdict>,
}

/// Options of [`inspect`]: the `sign` options that change verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InspectOptions {
    /// KEYGEN checks (sec_tag, device id mode).
    pub check: CheckOptions,
}

fn key_info_from_spki(s: &csr::Spki<'_>) -> KeyInfo {
    match s.p256_point() {
        Ok(p) => KeyInfo {
            algorithm: "EC P-256".into(),
            public_key: Some(hex::encode(p)),
            valid: crypto::is_valid_p256_point(&p),
        },
        Err(_) => KeyInfo {
            algorithm: key_algorithm_name(s),
            public_key: None,
            valid: false,
        },
    }
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// `EC P-384`, `RSA 2048-bit`, … for keys that are not P-256.
fn key_algorithm_name(s: &csr::Spki<'_>) -> String {
    if s.alg_oid == csr::OID_EC_PUBLIC_KEY {
        return match s.params {
            Some(p) if p.tag == tlv::tag::OID => format!("EC {}", csr::oid_name(p.value)),
            _ => "EC (no named curve)".into(),
        };
    }
    if s.alg_oid == OID_RSA {
        let bits = tlv::parse_one(s.key)
            .ok()
            .and_then(|t| t.children().expect(tlv::tag::INTEGER).ok())
            .map(|n| {
                let m = n.value.strip_prefix(&[0]).unwrap_or(n.value);
                m.len() * 8
            });
        return match bits {
            Some(b) => format!("RSA {b}-bit"),
            None => "RSA".into(),
        };
    }
    csr::oid_name(s.alg_oid)
}

/// Verify a certificate signature with the issuer's key for the algorithms ring knows
/// (ECDSA P-256/P-384 with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512). None when
/// the algorithm is not one of them.
fn verify_with_spki(
    sig_alg: &[u8],
    issuer: &csr::Spki<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Option<bool> {
    use ring::signature as rs;
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    let curve = issuer
        .params
        .filter(|p| p.tag == tlv::tag::OID)
        .map(|p| p.value);
    let alg: &dyn rs::VerificationAlgorithm = if issuer.alg_oid == csr::OID_EC_PUBLIC_KEY {
        match (sig_alg, curve) {
            (csr::OID_ECDSA_SHA256, Some(csr::OID_P256)) => &rs::ECDSA_P256_SHA256_ASN1,
            (ECDSA_SHA384, Some(csr::OID_P256)) => &rs::ECDSA_P256_SHA384_ASN1,
            (csr::OID_ECDSA_SHA256, Some(P384)) => &rs::ECDSA_P384_SHA256_ASN1,
            (ECDSA_SHA384, Some(P384)) => &rs::ECDSA_P384_SHA384_ASN1,
            _ => return None,
        }
    } else if issuer.alg_oid == OID_RSA {
        match sig_alg {
            RSA_SHA256 => &rs::RSA_PKCS1_2048_8192_SHA256,
            RSA_SHA384 => &rs::RSA_PKCS1_2048_8192_SHA384,
            RSA_SHA512 => &rs::RSA_PKCS1_2048_8192_SHA512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(
        rs::UnparsedPublicKey::new(alg, issuer.key)
            .verify(msg, sig)
            .is_ok(),
    )
}

fn ext_name(oid: &[u8]) -> String {
    const KNOWN: &[(&[u8], &str)] = &[
        (&[0x55, 0x1d, 0x0f], "keyUsage"),
        (&[0x55, 0x1d, 0x13], "basicConstraints"),
        (&[0x55, 0x1d, 0x25], "extKeyUsage"),
        (&[0x55, 0x1d, 0x0e], "subjectKeyIdentifier"),
        (&[0x55, 0x1d, 0x23], "authorityKeyIdentifier"),
        (&[0x55, 0x1d, 0x11], "subjectAltName"),
        (&[0x55, 0x1d, 0x1f], "cRLDistributionPoints"),
        (&[0x55, 0x1d, 0x20], "certificatePolicies"),
        (
            &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01],
            "authorityInfoAccess",
        ),
    ];
    KNOWN
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| (*n).to_string())
        .or_else(|| tlv::oid_string(oid))
        .unwrap_or_else(|| hex::encode(oid))
}

fn key_usage_text(bits: &[u8]) -> Option<String> {
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    let t = tlv::parse_one(bits).ok()?;
    if t.tag != tlv::tag::BIT_STRING {
        return None;
    }
    let (_, data) = t.value.split_first()?;
    let mut out = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let byte = data.get(i / 8).copied().unwrap_or(0);
        if byte & (0x80 >> (i % 8)) != 0 {
            out.push(*name);
        }
    }
    Some(out.join(", "))
}

fn ext_value_text(oid: &[u8], v: &[u8]) -> String {
    let decoded = match oid {
        [0x55, 0x1d, 0x0f] => key_usage_text(v),
        [0x55, 0x1d, 0x13] => tlv::parse_one(v).ok().and_then(|t| {
            let mut r = t.children();
            let ca = r
                .optional(tlv::tag::BOOLEAN)
                .ok()?
                .is_some_and(|b| b.value == [0xff]);
            let path = r.optional(tlv::tag::INTEGER).ok()?.map(|i| {
                format!(
                    ", pathlen {}",
                    i.value.iter().fold(0u64, |a, b| a
                        .saturating_mul(256)
                        .saturating_add(u64::from(*b)))
                )
            });
            Some(format!(
                "CA:{}{}",
                if ca { "TRUE" } else { "FALSE" },
                path.unwrap_or_default()
            ))
        }),
        [0x55, 0x1d, 0x25] => tlv::parse_one(v).ok().map(|t| {
            let mut r = t.children();
            let mut names = Vec::new();
            while let Ok(o) = r.read() {
                names.push(match o.value {
                    [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01] => "serverAuth".to_string(),
                    [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02] => "clientAuth".to_string(),
                    other => tlv::oid_string(other).unwrap_or_default(),
                });
            }
            names.join(", ")
        }),
        [0x55, 0x1d, 0x0e] => tlv::parse_one(v).ok().map(|t| hex::encode(t.value)),
        [0x55, 0x1d, 0x23] => tlv::parse_one(v).ok().and_then(|t| {
            let mut r = t.children();
            // keyIdentifier is [0] IMPLICIT OCTET STRING (primitive 0x80).
            r.optional(0x80)
                .ok()?
                .map(|k| format!("keyid {}", hex::encode(k.value)))
        }),
        _ => None,
    };
    decoded.unwrap_or_else(|| hex::encode(v))
}

/// Decode a CSR (no verdict).
pub fn csr_info(c: &Csr<'_>) -> CsrInfo {
    let key = key_info_from_spki(&c.spki);
    let signature_ok = c
        .spki
        .p256_point()
        .map(|p| c.is_ecdsa_sha256() && crypto::verify_p256_sha256(&p, c.info, c.signature))
        .unwrap_or(false);
    let cns = c.common_names();
    CsrInfo {
        der_length: c.der.len(),
        sha256: crypto::sha256_hex(c.der),
        subject: csr::name_to_string(&c.subject),
        cn: match cns.as_slice() {
            [Some(cn)] => Some((*cn).to_string()),
            _ => None,
        },
        key,
        signature_algorithm: csr::oid_name(c.sig_alg_oid),
        null_param: c.null_param(),
        signature_ok,
        requested_extensions: c
            .requested_extensions()
            .into_iter()
            .map(|(oid, critical, v)| ExtInfo {
                name: ext_name(oid),
                critical,
                value: ext_value_text(oid, v),
            })
            .collect(),
    }
}

/// Judge a bare CSR: malformed-csr, unsupported-key, bad-csr-signature.
fn csr_verdict(c: &Csr<'_>) -> Result<(), Reject> {
    if c.sig_alg_oid == csr::OID_ECDSA_SHA256 && !c.is_ecdsa_sha256() {
        return Err(Reject::new(
            RejectCode::MalformedCsr,
            "ecdsa-with-SHA256 carries parameters other than NULL",
        ));
    }
    let p = c
        .spki
        .p256_point()
        .map_err(|e| Reject::new(RejectCode::UnsupportedKey, e))?;
    if !c.is_ecdsa_sha256() {
        return Err(Reject::new(
            RejectCode::UnsupportedKey,
            format!("signature algorithm is {}", csr::oid_name(c.sig_alg_oid)),
        ));
    }
    if !crypto::is_valid_p256_point(&p) {
        return Err(Reject::new(
            RejectCode::UnsupportedKey,
            "the public key is not a valid P-256 point",
        ));
    }
    if !crypto::verify_p256_sha256(&p, c.info, c.signature) {
        return Err(Reject::new(
            RejectCode::BadCsrSignature,
            "the CSR self-signature does not verify",
        ));
    }
    Ok(())
}

fn base_report(kind: InputKind, input: &[u8]) -> Report {
    Report {
        kind,
        valid: true,
        code: None,
        detail: String::new(),
        input_sha256: crypto::sha256_hex(input),
        keygen: None,
        attesttoken: None,
        csr: None,
        certificates: Vec::new(),
        requests: None,
    }
}

fn set_verdict(r: &mut Report, v: Result<String, Reject>) {
    match v {
        Ok(d) => {
            r.valid = true;
            r.code = None;
            r.detail = d;
        }
        Err(rej) => {
            r.valid = false;
            r.code = Some(rej.code.as_str().to_string());
            r.detail = format!("{}; {}", rej.detail, rej.code.next_step());
        }
    }
}

/// Decode and judge a KEYGEN string with `opts`.
pub fn inspect_keygen(s: &str, opts: &CheckOptions) -> Report {
    let mut r = base_report(InputKind::Keygen, s.as_bytes());
    let text = keygen::unwrap_line(s).unwrap_or(s.trim());
    let mut info = KeygenInfo {
        length: text.len(),
        keygen_sha256: crypto::sha256_hex(text.as_bytes()),
        msg_type: None,
        uuid: None,
        sec_tag: None,
        digest: None,
        digest_ok: None,
        nonce: None,
        cose: None,
        csr: None,
        public_key: None,
        problems: Vec::new(),
    };
    match keygen::decode_halves_lenient(s) {
        Ok(h) => {
            let mut msg_type = None;
            match h.cose.as_deref() {
                None => info.problems.push("no COSE half".into()),
                Some(c) => match keygen::parse_attestation(c) {
                    Ok((c, p)) => {
                        msg_type = Some(p.msg_type);
                        info.msg_type = Some(p.msg_type);
                        info.uuid = Some(keygen::uuid_string(&p.uuid));
                        info.sec_tag = Some(p.sec_tag);
                        info.digest = Some(hex::encode(p.digest));
                        info.digest_ok = Some(crypto::sha256(&h.first) == p.digest);
                        info.nonce = Some(hex::encode(p.nonce));
                        info.cose = Some(cose_info(&c));
                    }
                    Err(e) => info.problems.push(e.detail),
                },
            }
            if msg_type == Some(cose::MSG_TYPE_PUBLIC_KEY) {
                match csr::Spki::parse(&h.first) {
                    Ok(s) => info.public_key = Some(key_info_from_spki(&s)),
                    Err(e) => info.problems.push(format!("public key: {e}")),
                }
            } else {
                match Csr::parse(&h.first) {
                    Ok(c) => info.csr = Some(csr_info(&c)),
                    Err(e) => info.problems.push(format!("CSR: {e}")),
                }
            }
        }
        Err(e) => info.problems.push(e.detail),
    }
    let verdict = keygen::check(s, opts).map(|v| {
        format!(
            "valid request for device {} (sec_tag {}); the COSE signature cannot be checked \
             offline",
            v.device_id, v.sec_tag
        )
    });
    r.keygen = Some(info);
    set_verdict(&mut r, verdict);
    r
}

/// Decode and judge an ATTESTTOKEN string.
pub fn inspect_attesttoken(s: &str) -> Report {
    let mut r = base_report(InputKind::Attesttoken, s.as_bytes());
    let v = keygen::parse_attesttoken(s).and_then(|t| {
        let m = &t.message;
        r.attesttoken = Some(AttestInfo {
            msg_type: m.msg_type,
            uuid: t.uuid(),
            device_type: m.device_type,
            device_type_name: cose::device_type_name(m.device_type).into(),
            fw_uuid: keygen::uuid_string(&m.fw_uuid),
            nonce: hex::encode(m.nonce),
            cose: cose_info(&t.cose),
        });
        if m.msg_type != cose::MSG_TYPE_IDENTITY {
            return Err(Reject::new(
                RejectCode::WrongMessageType,
                format!("message type {} is not 1 (device identity)", m.msg_type),
            ));
        }
        Ok(format!(
            "well-formed attestation token of device {}; the COSE signature cannot be checked \
             offline",
            t.uuid()
        ))
    });
    set_verdict(&mut r, v);
    r
}

/// A parsed certificate's raw parts (for signature checks).
struct RawCert<'a> {
    tbs: &'a [u8],
    sig_alg: &'a [u8],
    signature: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    spki: csr::Spki<'a>,
    info: CertInfo,
}

fn time_text(t: tlv::Tlv<'_>) -> String {
    let s = std::str::from_utf8(t.value).unwrap_or("");
    let (full, ok) = match (t.tag, s.len()) {
        (tlv::tag::UTC_TIME, 13) => {
            let yy: u32 = s.get(0..2).and_then(|y| y.parse().ok()).unwrap_or(0);
            let century = if yy >= 50 { "19" } else { "20" };
            (format!("{century}{s}"), true)
        }
        (tlv::tag::GENERALIZED_TIME, 15) => (s.to_string(), true),
        _ => (s.to_string(), false),
    };
    if !ok || !full.bytes().take(14).all(|b| b.is_ascii_digit()) {
        return format!("(unreadable time {s:?})");
    }
    let g = |a: usize, b: usize| full.get(a..b).unwrap_or("");
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        g(0, 4),
        g(4, 6),
        g(6, 8),
        g(8, 10),
        g(10, 12),
        g(12, 14)
    )
}

fn parse_cert(d: &[u8]) -> Result<RawCert<'_>, tlv::DerError> {
    let outer = tlv::parse_one(d)?;
    if outer.tag != tlv::tag::SEQUENCE {
        return Err(tlv::DerError::Invalid("not a SEQUENCE"));
    }
    let mut r = outer.children();
    let tbs = r.expect(tlv::tag::SEQUENCE)?;
    let sig_alg = r.expect(tlv::tag::SEQUENCE)?;
    let sig = r.expect(tlv::tag::BIT_STRING)?;
    r.finish()?;
    let mut t = tbs.children();
    t.optional(tlv::tag::CONTEXT_0)?;
    let serial = t.expect(tlv::tag::INTEGER)?;
    t.expect(tlv::tag::SEQUENCE)?;
    let issuer = t.expect(tlv::tag::SEQUENCE)?;
    let validity = t.expect(tlv::tag::SEQUENCE)?;
    let subject = t.expect(tlv::tag::SEQUENCE)?;
    let spki_t = t.expect(tlv::tag::SEQUENCE)?;
    let spki = csr::Spki::parse(spki_t.raw)?;
    let mut extensions = Vec::new();
    while !t.is_empty() {
        let x = t.read()?;
        if x.tag == tlv::tag::CONTEXT_3 {
            let seq = tlv::parse_one(x.value)?;
            let mut er = seq.children();
            while !er.is_empty() {
                let ext = er.expect(tlv::tag::SEQUENCE)?;
                let mut f = ext.children();
                let oid = f.expect(tlv::tag::OID)?;
                let critical = f
                    .optional(tlv::tag::BOOLEAN)?
                    .is_some_and(|b| b.value == [0xff]);
                let v = f.expect(tlv::tag::OCTET_STRING)?;
                extensions.push(ExtInfo {
                    name: ext_name(oid.value),
                    critical,
                    value: ext_value_text(oid.value, v.value),
                });
            }
        }
    }
    let mut v = validity.children();
    let nb = v.read()?;
    let na = v.read()?;
    let alg_oid = tlv::parse_one(sig_alg.raw)?
        .children()
        .expect(tlv::tag::OID)?
        .value;
    let name = |n: &[u8]| {
        csr::parse_name_der(n)
            .map(|a| csr::name_to_string(&a))
            .unwrap_or_else(|e| format!("(unreadable: {e})"))
    };
    let info = CertInfo {
        subject: name(subject.raw),
        issuer: name(issuer.raw),
        serial: hex::encode(serial.value.strip_prefix(&[0]).unwrap_or(serial.value)),
        not_before: time_text(nb),
        not_after: time_text(na),
        key: key_info_from_spki(&spki),
        signature_algorithm: csr::oid_name(alg_oid),
        self_signed: subject.raw == issuer.raw,
        signature_ok: None,
        extensions,
        sha256: crypto::sha256_hex(d),
    };
    Ok(RawCert {
        tbs: tbs.raw,
        sig_alg: alg_oid,
        signature: tlv::bit_string_bytes(&sig)?,
        issuer: issuer.raw,
        subject: subject.raw,
        spki,
        info,
    })
}

/// Decode certificates (DER each) and judge them: every one must parse, and where its issuer
/// is in the input (or it is self-signed) its signature must verify.
pub fn inspect_certificates(input: &[u8], ders: &[Vec<u8>]) -> Report {
    let mut r = base_report(InputKind::Certificate, input);
    let mut raws = Vec::new();
    for (i, d) in ders.iter().enumerate() {
        match parse_cert(d) {
            Ok(c) => raws.push(c),
            Err(e) => {
                r.valid = false;
                r.code = Some(RejectCode::MalformedInput.as_str().into());
                r.detail = format!(
                    "certificate {} is not a valid X.509 certificate: {e}",
                    i + 1
                );
                return r;
            }
        }
    }
    let mut bad = None;
    for i in 0..raws.len() {
        let issuer = raws
            .iter()
            .find(|c| c.subject == raws[i].issuer)
            .map(|c| c.spki);
        let ok = issuer
            .and_then(|s| verify_with_spki(raws[i].sig_alg, &s, raws[i].tbs, raws[i].signature));
        if ok == Some(false) && bad.is_none() {
            bad = Some(i);
        }
        let mut info = raws[i].info.clone();
        info.signature_ok = ok;
        r.certificates.push(info);
    }
    match bad {
        Some(i) => {
            r.valid = false;
            r.code = Some("bad-certificate-signature".into());
            r.detail = format!(
                "certificate {} ({}) does not verify with its issuer's key",
                i + 1,
                r.certificates
                    .get(i)
                    .map(|c| c.subject.as_str())
                    .unwrap_or("")
            );
        }
        None => {
            r.detail = format!(
                "{} certificate{} decoded{}",
                ders.len(),
                if ders.len() == 1 { "" } else { "s" },
                if r.certificates.iter().all(|c| c.signature_ok == Some(true)) {
                    "; every signature verifies"
                } else if r.certificates.iter().any(|c| c.signature_ok == Some(true)) {
                    "; signatures verify where the issuer is in the input"
                } else {
                    "; issuer not in the input, signature not checked"
                }
            );
        }
    }
    r
}

/// Decode and judge one CSR DER.
pub fn inspect_csr(input: &[u8], d: &[u8]) -> Report {
    let mut r = base_report(InputKind::Csr, input);
    match Csr::parse(d) {
        Ok(c) => {
            r.csr = Some(csr_info(&c));
            let v = csr_verdict(&c).map(|()| {
                format!(
                    "valid CSR{}",
                    if c.null_param() {
                        " (signature algorithm with the nRF91 NULL parameter)"
                    } else {
                        ""
                    }
                )
            });
            set_verdict(&mut r, v);
        }
        Err(e) => set_verdict(
            &mut r,
            Err(Reject::new(
                RejectCode::MalformedCsr,
                format!("not a PKCS#10 CSR: {e}"),
            )),
        ),
    }
    r
}

struct NoDb;

impl Lookup for NoDb {
    type Error = std::convert::Infallible;
    fn by_keygen(
        &mut self,
        _: &str,
        _: &[u8; 65],
    ) -> Result<Option<crate::signer::policy::Stored>, Self::Error> {
        Ok(None)
    }
    fn device_has_certificate(&mut self, _: &str) -> Result<bool, Self::Error> {
        Ok(false)
    }
    fn key_owner(&mut self, _: &[u8; 65]) -> Result<Option<String>, Self::Error> {
        Ok(None)
    }
}

/// Judge every request of a requests file as `sign` would (without a CA database: the
/// checks against earlier batches are left out).
pub fn inspect_requests(input: &[u8], opts: &CheckOptions) -> Report {
    let mut r = base_report(InputKind::Requests, input);
    let mut src = SourceReader::new("input", input);
    let mut policy = BatchPolicy::new(false);
    let mut info = RequestsInfo {
        format: "lines".into(),
        total: 0,
        ok: 0,
        rejected: Default::default(),
        items: Vec::new(),
    };
    loop {
        let entry = match src.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                set_verdict(
                    &mut r,
                    Err(Reject::new(RejectCode::MalformedInput, e.to_string())),
                );
                return r;
            }
        };
        info.total += 1;
        let item = match entry {
            Entry::Malformed(m) => RequestVerdict {
                line: m.line,
                device_uuid: m.device_uuid,
                verdict: m.reject.code.as_str().into(),
                detail: Some(m.reject.detail),
            },
            Entry::Request(q) => {
                if q.row.is_some() {
                    info.format = "csv".into();
                }
                let imei = q
                    .row
                    .as_ref()
                    .map(|row| row.imei.trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let o = CheckOptions {
                    imei: imei.or_else(|| opts.imei.clone()),
                    ..opts.clone()
                };
                let verdict = keygen::check(&q.keygen, &o).and_then(|v| {
                    match policy.decide(&v, q.row.as_ref(), &mut NoDb) {
                        Ok(Decision::Reject(rej)) => Err(rej),
                        _ => Ok(v),
                    }
                });
                match verdict {
                    Ok(v) => RequestVerdict {
                        line: q.line,
                        device_uuid: Some(v.uuid),
                        verdict: "ok".into(),
                        detail: None,
                    },
                    Err(rej) => RequestVerdict {
                        line: q.line,
                        device_uuid: q
                            .row
                            .as_ref()
                            .map(|row| row.device_uuid.clone())
                            .filter(|u| !u.is_empty()),
                        verdict: rej.code.as_str().into(),
                        detail: Some(rej.detail),
                    },
                }
            }
        };
        if item.verdict == "ok" {
            info.ok += 1;
        } else {
            *info.rejected.entry(item.verdict.clone()).or_insert(0) += 1;
        }
        info.items.push(item);
    }
    if info.total == 0 {
        set_verdict(
            &mut r,
            Err(Reject::new(
                RejectCode::MalformedInput,
                "no requests in the input",
            )),
        );
    } else if info.ok == info.total {
        r.detail = format!("all {} requests pass", info.total);
    } else {
        r.valid = false;
        let (code, _) = info
            .rejected
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(c, n)| (c.clone(), *n))
            .unwrap_or_default();
        r.code = Some(code);
        r.detail = format!(
            "{} of {} requests would be rejected",
            info.total - info.ok,
            info.total
        );
    }
    r.requests = Some(info);
    r
}

/// Largest file (or standard input) `nrfca inspect` reads, in bytes: a file known to be
/// larger is refused from its size before any byte is read (a 100 000-request CSV is about
/// 75 MB).
pub const MAX_INPUT: u64 = 256 * 1024 * 1024;

/// Recognise `input` and inspect it: PEM (certificates or a CSR), DER (CSR or certificate),
/// a single KEYGEN / ATTESTTOKEN string, or a requests file.
pub fn inspect(input: &[u8], opts: &InspectOptions) -> Report {
    let text = std::str::from_utf8(input).ok();
    if let Some(t) = text.filter(|t| t.contains("-----BEGIN ")) {
        let blocks = crate::util::pem_blocks(t);
        let certs: Vec<Vec<u8>> = blocks
            .iter()
            .filter(|b| b.label == "CERTIFICATE" || b.label == "TRUSTED CERTIFICATE")
            .filter_map(|b| b.decode().ok())
            .collect();
        if !certs.is_empty() {
            return inspect_certificates(input, &certs);
        }
        if let Some(b) = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE REQUEST" || b.label == "NEW CERTIFICATE REQUEST")
        {
            return match b.decode() {
                Ok(d) => inspect_csr(input, &d),
                Err(e) => {
                    let mut r = base_report(InputKind::Csr, input);
                    set_verdict(
                        &mut r,
                        Err(Reject::new(
                            RejectCode::MalformedCsr,
                            format!("bad PEM body: {e}"),
                        )),
                    );
                    r
                }
            };
        }
    }
    if input.first() == Some(&0x30) {
        if Csr::parse(input).is_ok() {
            return inspect_csr(input, input);
        }
        if parse_cert(input).is_ok() {
            return inspect_certificates(input, &[input.to_vec()]);
        }
        return inspect_csr(input, input);
    }
    let t = String::from_utf8_lossy(input);
    let meaningful: Vec<&str> = t
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let first_line = t
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches('\u{feff}')
        .trim();
    if meaningful.len() == 1 && !first_line.starts_with("device_uuid") {
        let s = meaningful.first().copied().unwrap_or("");
        if is_attesttoken(s) {
            return inspect_attesttoken(s);
        }
        return inspect_keygen(s, &opts.check);
    }
    inspect_requests(input, &opts.check)
}

/// Whether `s` looks like an ATTESTTOKEN (wrapper, or a first half that is CBOR tag 55799).
fn is_attesttoken(s: &str) -> bool {
    if s.trim_start().starts_with("%ATTESTTOKEN") {
        return true;
    }
    match keygen::decode_halves_lenient(s) {
        Ok(h) => h.first.starts_with(&[0xd9, 0xd9, 0xf7]) || h.first.first() == Some(&0x85),
        Err(_) => false,
    }
}

fn push_kv(out: &mut String, k: &str, v: &str) {
    out.push_str(&format!("  {k:<15} {v}\n"));
}

fn render_csr(out: &mut String, c: &CsrInfo) {
    out.push_str(&format!(
        "CSR ({} bytes, SHA-256 {})\n",
        c.der_length, c.sha256
    ));
    push_kv(out, "subject", &c.subject);
    push_kv(out, "key", &render_key(&c.key));
    push_kv(
        out,
        "signature",
        &format!(
            "{}{}, {}",
            c.signature_algorithm,
            if c.null_param {
                " with NULL parameter (nRF91 firmware quirk, accepted)"
            } else {
                ""
            },
            if c.signature_ok {
                "verifies"
            } else {
                "DOES NOT VERIFY"
            }
        ),
    );
    for e in &c.requested_extensions {
        push_kv(
            out,
            "requested ext",
            &format!(
                "{}{}: {} (ignored when signing)",
                e.name,
                if e.critical { " (critical)" } else { "" },
                e.value
            ),
        );
    }
}

fn render_key(k: &KeyInfo) -> String {
    match &k.public_key {
        Some(p) if k.valid => format!("{} {p}", k.algorithm),
        Some(p) => format!("{} {p} (NOT A VALID POINT)", k.algorithm),
        None => k.algorithm.clone(),
    }
}

fn render_cose(out: &mut String, c: &CoseInfo) {
    push_kv(
        out,
        "COSE_Sign1",
        &format!(
            "{}{}, kid {}, {}-byte signature",
            if c.tagged { "tag 18, " } else { "" },
            c.alg,
            c.kid,
            c.signature_length
        ),
    );
    push_kv(out, "COSE signature", &c.signature);
}

/// The report as human-readable text (what `nrfca inspect` prints without `--json`).
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if let Some(k) = &r.keygen {
        out.push_str(&format!("KEYGEN string ({} characters)\n", k.length));
        if let Some(u) = &k.uuid {
            push_kv(&mut out, "device UUID", u);
        }
        if let Some(t) = k.sec_tag {
            push_kv(&mut out, "sec_tag", &t.to_string());
        }
        if let Some(m) = k.msg_type {
            let name = match m {
                9 => " (CSR)",
                8 => " (public key)",
                _ => " (unknown)",
            };
            push_kv(&mut out, "message type", &format!("{m}{name}"));
        }
        if let (Some(d), Some(ok)) = (&k.digest, k.digest_ok) {
            push_kv(
                &mut out,
                "digest",
                &format!(
                    "{d} ({})",
                    if ok {
                        "matches the first half"
                    } else {
                        "DOES NOT MATCH the first half"
                    }
                ),
            );
        }
        if let Some(n) = &k.nonce {
            push_kv(&mut out, "nonce", n);
        }
        if let Some(c) = &k.cose {
            render_cose(&mut out, c);
        }
        push_kv(&mut out, "KEYGEN SHA-256", &k.keygen_sha256);
        for p in &k.problems {
            push_kv(&mut out, "problem", p);
        }
        if let Some(c) = &k.csr {
            render_csr(&mut out, c);
        }
        if let Some(pk) = &k.public_key {
            out.push_str("Public key (response_content 1)\n");
            push_kv(&mut out, "key", &render_key(pk));
        }
    }
    if let Some(a) = &r.attesttoken {
        out.push_str("ATTESTTOKEN\n");
        push_kv(&mut out, "message type", &a.msg_type.to_string());
        push_kv(&mut out, "device UUID", &a.uuid);
        push_kv(
            &mut out,
            "device type",
            &format!("{} ({})", a.device_type, a.device_type_name),
        );
        push_kv(&mut out, "firmware UUID", &a.fw_uuid);
        push_kv(&mut out, "nonce", &a.nonce);
        render_cose(&mut out, &a.cose);
    }
    if let Some(c) = &r.csr {
        render_csr(&mut out, c);
    }
    for (i, c) in r.certificates.iter().enumerate() {
        out.push_str(&format!("Certificate {} (SHA-256 {})\n", i + 1, c.sha256));
        push_kv(&mut out, "subject", &c.subject);
        push_kv(&mut out, "issuer", &c.issuer);
        push_kv(&mut out, "serial", &c.serial);
        push_kv(&mut out, "not before", &c.not_before);
        push_kv(&mut out, "not after", &c.not_after);
        push_kv(&mut out, "key", &render_key(&c.key));
        push_kv(
            &mut out,
            "signature",
            &format!(
                "{}{}",
                c.signature_algorithm,
                match c.signature_ok {
                    Some(true) => ", verifies",
                    Some(false) => ", DOES NOT VERIFY",
                    None => ", issuer not given",
                }
            ),
        );
        for e in &c.extensions {
            push_kv(
                &mut out,
                "extension",
                &format!(
                    "{}{}: {}",
                    e.name,
                    if e.critical { " (critical)" } else { "" },
                    e.value
                ),
            );
        }
    }
    if let Some(q) = &r.requests {
        out.push_str(&format!(
            "Requests file ({}): {} requests, {} pass\n",
            q.format, q.total, q.ok
        ));
        for (code, n) in &q.rejected {
            push_kv(&mut out, code, &n.to_string());
        }
        for it in q.items.iter().filter(|i| i.verdict != "ok") {
            out.push_str(&format!(
                "  line {}: {}{}{}\n",
                it.line,
                it.verdict,
                it.device_uuid
                    .as_deref()
                    .map(|u| format!(" [{u}]"))
                    .unwrap_or_default(),
                it.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    match &r.code {
        None => out.push_str(&format!("verdict: OK, {}\n", r.detail)),
        Some(c) => out.push_str(&format!("verdict: REJECTED ({c}): {}\n", r.detail)),
    }
    escape_lines(&out)
}

/// `text` with every control character (and bidi override) inside its lines made visible
/// ([`crate::util::term_escape`]); the LF line ends stay. Everything `render_text` prints
/// passes here, so nothing from the input (a CN, a requests-file cell, a detail quoting
/// them) can move the cursor, retitle the window or hide text on a terminal.
fn escape_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&crate::util::term_escape(line));
    }
    out
}

#[cfg(all(test, feature = "bench"))]
mod tests {
    use super::*;
    use crate::sim::generate::{GenOptions, ModemIdentity};

    const SEED: &str = "MIIBCzCBrwIBADAvMS0wKwYDVQQDDCQ1MDUwMzA0MS0zNTM5LTQ3ZWItODA3Yi0xMDJkYmI0MjNiOWEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARhKkti_3EVfSEy7oDyaqqj2cTmlfmhuMdcMOH9xkIX3okdPIFrAZ0sI5xt6WdY56IyQSj8Ce5SxGzMKUuP5ueDoB4wHAYJKoZIhvcNAQkOMQ8wDTALBgNVHQ8EBAMCA-gwDAYIKoZIzj0EAwIFAANJADBGAiEA3AZcIwq61M7PRjdA04z863FmW7mvbgb3lB7YU0bi16QCIQCMbqds9nxdq0XL61QxyuKUgZjPc6Za2-1OUPCVXz9rng.0oRDoQEmoQRBIVhP2dn3hQlQUFAwQTU5R-uAexAtu0I7mkUaAQEAAVgg5g6Cvkt1g0bATSADOVi0euYSuu-7bbBOGYZxgsDyI8tQfQoWN1WvLWECCTaLfZZH1FhAKXmhC0HEeHTZy7qAmgLFx0eRCrFHoHs7UmJ9nsgCgAwWTOEuMH0C6vaQ0OsUT-pDcEWP8tstbFsuvySeOEzHog";

    #[test]
    fn seed_keygen() {
        let r = inspect(SEED.as_bytes(), &InspectOptions::default());
        assert_eq!(r.kind, InputKind::Keygen);
        assert!(r.valid, "{}", r.detail);
        let k = r.keygen.unwrap();
        assert_eq!(
            k.uuid.as_deref(),
            Some("50503041-3539-47eb-807b-102dbb423b9a")
        );
        assert_eq!(k.digest_ok, Some(true));
        let c = k.csr.unwrap();
        assert!(c.null_param && c.signature_ok);
        assert_eq!(c.requested_extensions[0].name, "keyUsage");
        assert_eq!(
            c.requested_extensions[0].value,
            "digitalSignature, nonRepudiation, keyEncipherment, keyAgreement"
        );
        let text = render_text(&inspect(SEED.as_bytes(), &InspectOptions::default()));
        assert!(text.contains("verdict: OK"), "{text}");
        assert!(text.contains("NULL parameter"), "{text}");
        let wrapped = format!("%KEYGEN: \"{SEED}\"\n");
        assert!(inspect(wrapped.as_bytes(), &InspectOptions::default()).valid);
    }

    #[test]
    fn attesttoken_and_requests() {
        let m = ModemIdentity::random().unwrap();
        let t = m.attesttoken(None, 3, [1; 16]).unwrap();
        let r = inspect(t.as_bytes(), &InspectOptions::default());
        assert_eq!(r.kind, InputKind::Attesttoken);
        assert!(r.valid, "{}", r.detail);
        assert_eq!(r.attesttoken.unwrap().uuid, m.uuid_string());

        let g1 = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
        let g2 = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
        let lines = format!("# comment\n{SEED}\n\n{g1}\n{g2}\nnot-a-keygen\n");
        let r = inspect(lines.as_bytes(), &InspectOptions::default());
        assert_eq!(r.kind, InputKind::Requests);
        assert!(!r.valid);
        let q = r.requests.unwrap();
        assert_eq!(q.total, 4);
        assert_eq!(q.ok, 2);
        assert_eq!(q.items[2].verdict, "duplicate-in-batch");
        assert_eq!(q.items[2].line, 5);
        assert_eq!(q.items[3].verdict, "missing-attestation");
    }

    #[test]
    fn csr_pem_and_der() {
        let p = keygen::parse(SEED).unwrap();
        let r = inspect(&p.der, &InspectOptions::default());
        assert_eq!(r.kind, InputKind::Csr);
        assert!(r.valid);
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            crypto::b64_encode(&p.der)
        );
        let r = inspect(pem.as_bytes(), &InspectOptions::default());
        assert!(r.valid);
        let mut bad = p.der.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let r = inspect(&bad, &InspectOptions::default());
        assert_eq!(r.code.as_deref(), Some("bad-csr-signature"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = inspect(&data, &InspectOptions::default());
            let mut d = data.clone();
            d.insert(0, 0x30);
            let _ = inspect(&d, &InspectOptions::default());
        }

        #[test]
        fn never_panics_text(s in "(-----BEGIN CERTIFICATE-----\n)?[A-Za-z0-9+/=\n.%:\" -]{0,300}") {
            let _ = inspect(s.as_bytes(), &InspectOptions::default());
        }
    }
}
