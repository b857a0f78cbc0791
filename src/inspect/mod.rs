//! `nrfca inspect`: recognise and decode any input the toolchain meets — a KEYGEN or
//! ATTESTTOKEN string, a CSR or certificate (PEM or DER), a requests file (CSV or lines) —
//! and judge it with the same checks `sign` runs. Pure: bytes in, a serialisable [`Report`]
//! out. Replaces Nordic's `modem_credentials_parser`.
//!
//! Layout: `modem` (KEYGEN / ATTESTTOKEN strings and bare CSRs, through
//! `crate::keygen`'s byte-exact CSR reader), `cert` (X.509 certificates through `x509-cert`),
//! `keys` (public keys, signature checks and extension text shared by both), `requests`
//! (requests files, judged as `sign` would without a database) and `render` (the text form).

mod cert;
mod keys;
mod modem;
mod render;
mod requests;

pub use self::cert::inspect_certificates;
pub use self::modem::{csr_info, inspect_attesttoken, inspect_csr, inspect_keygen};
pub use self::render::render_text;
pub use self::requests::inspect_requests;

use crate::crypto;
use crate::keygen::{self, CheckOptions, Csr};
use crate::reject::{Reject, RejectCode};
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
        if cert::parse_cert(input).is_ok() {
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

#[cfg(all(test, feature = "bench"))]
mod tests;
