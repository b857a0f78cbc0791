//! The modem's KEYGEN string `base64url(DER).base64url(COSE_Sign1)`: pure parsing with size
//! limits, the per-string checks of SPEC §3 in order (shared by `sign` and `bench export`),
//! and the ATTESTTOKEN string. The simulated modem that produces both lives in `sim::generate`
//! (bench build only: the air-gapped signer ships no request generator).
//!
//! Layout: `cbor` (bounded CBOR reader/writer), `tlv` (byte-exact DER walker/writer),
//! `csr` (PKCS#10 with the NULL quirk), `cose` (COSE_Sign1 and payloads).
//! Format reference: `docs/keygen-format.md`.

pub(crate) mod cbor;
pub(crate) mod cose;
pub(crate) mod csr;
pub(crate) mod tlv;

use crate::crypto;
use crate::reject::{Reject, RejectCode};
pub use crate::util::uuid_string;
pub use cose::{AttestPayload, CoseSign1, KeygenPayload};
pub use csr::{Csr, NameAttr, Spki};
pub use tlv::{DerError, Reader as TlvReader, Tlv};

/// Longest accepted input line (bytes, before trimming): longer is `malformed-input`.
pub const MAX_LINE: usize = 16 * 1024;

/// The sec_tag `sign` and `bench export` expect unless told otherwise (nRF Cloud's).
pub const DEFAULT_SEC_TAG: u32 = 16842753;

/// What the certificate's device id (CN) is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceIdMode {
    /// The CSR CN must be the attested UUID (default).
    #[default]
    Uuid,
    /// The CSR CN may be `nrf-<IMEI>` (15 digits) or the UUID.
    Cn,
}

/// Options of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The required sec_tag; `None` accepts any (`--any-sec-tag`).
    pub sec_tag: Option<u32>,
    /// How the CSR CN is checked.
    pub device_id: DeviceIdMode,
    /// The IMEI the CN must carry under [`DeviceIdMode::Cn`] (e.g. from the requests row).
    pub imei: Option<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            sec_tag: Some(DEFAULT_SEC_TAG),
            device_id: DeviceIdMode::Uuid,
            imei: None,
        }
    }
}

/// A KEYGEN string that passed every per-string check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The device id to put in the certificate CN (the UUID, or the CN under `--device-id cn`).
    pub device_id: String,
    /// The attested UUID, lowercase with hyphens.
    pub uuid: String,
    /// The attested sec_tag.
    pub sec_tag: u32,
    /// The CSR's public key, uncompressed SEC1.
    pub public_key: [u8; 65],
    /// The CSR DER exactly as the modem made it.
    pub csr_der: Vec<u8>,
    /// SHA-256 of the KEYGEN text (after trimming and removing a `%KEYGEN: "…"` wrapper), so
    /// the same modem output hashes the same whether given bare or wrapped.
    pub keygen_sha256: [u8; 32],
    /// The CSR subject CN.
    pub subject_cn: String,
    /// Whether the CSR has the NULL signature-algorithm parameter (nRF91 firmware quirk).
    pub null_param: bool,
}

fn reject(code: RejectCode, detail: impl Into<String>) -> Reject {
    Reject::new(code, detail)
}

/// Remove surrounding whitespace and an optional `%KEYGEN: "…"` (or `%ATTESTTOKEN: "…"`, or
/// just `"…"`) wrapper. Refuses lines over [`MAX_LINE`] and unbalanced quotes.
pub fn unwrap_line(input: &str) -> Result<&str, Reject> {
    if input.len() > MAX_LINE {
        return Err(reject(
            RejectCode::MalformedInput,
            format!(
                "line is {} bytes, over the {MAX_LINE}-byte limit",
                input.len()
            ),
        ));
    }
    let mut s = input.trim();
    for prefix in ["%KEYGEN:", "%ATTESTTOKEN:"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim_start();
            if !s.starts_with('"') {
                return Err(reject(
                    RejectCode::MalformedInput,
                    format!("`{prefix}` is not followed by a quoted string"),
                ));
            }
            break;
        }
    }
    if let Some(rest) = s.strip_prefix('"') {
        s = rest.strip_suffix('"').ok_or_else(|| {
            reject(
                RejectCode::MalformedInput,
                "the opening quote is never closed",
            )
        })?;
        s = s.trim();
    }
    Ok(s)
}

/// The two decoded halves of a KEYGEN-like string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halves<'a> {
    /// The text after [`unwrap_line`].
    pub text: &'a str,
    /// The decoded first half.
    pub first: Vec<u8>,
    /// The decoded second half (COSE); never None when returned by [`decode_halves`] (a
    /// missing half is `missing-attestation`), kept optional for [`decode_halves_lenient`].
    pub cose: Option<Vec<u8>>,
}

/// Unwrap, shape-check and base64url-decode both halves. Codes: `malformed-input` (empty,
/// too long, not printable ASCII, more than one `.`), `bad-base64`, `missing-attestation`.
pub fn decode_halves(input: &str) -> Result<Halves<'_>, Reject> {
    let h = decode_halves_lenient(input)?;
    if h.cose.is_none() {
        return Err(reject(
            RejectCode::MissingAttestation,
            "no COSE half after the CSR (expected `<csr>.<cose>`)",
        ));
    }
    Ok(h)
}

/// Like [`decode_halves`], but a missing second half is not an error (for `inspect`).
pub fn decode_halves_lenient(input: &str) -> Result<Halves<'_>, Reject> {
    let text = unwrap_line(input)?;
    if text.is_empty() {
        return Err(reject(RejectCode::MalformedInput, "empty input"));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(reject(
            RejectCode::MalformedInput,
            format!("not a KEYGEN string: contains {c:?}"),
        ));
    }
    let mut parts = text.split('.');
    let first_txt = parts.next().unwrap_or_default();
    let cose_txt = parts.next();
    if parts.next().is_some() {
        return Err(reject(
            RejectCode::MalformedInput,
            "not a KEYGEN string: more than two `.`-separated parts",
        ));
    }
    let first = crypto::b64url_decode(first_txt).map_err(|e| {
        reject(
            RejectCode::BadBase64,
            format!("first half is not base64url: {e}"),
        )
    })?;
    let cose = match cose_txt {
        None | Some("") => None,
        Some(t) => Some(crypto::b64url_decode(t).map_err(|e| {
            reject(
                RejectCode::BadBase64,
                format!("second half is not base64url: {e}"),
            )
        })?),
    };
    Ok(Halves { text, first, cose })
}

/// Decode the COSE half of a KEYGEN string: the COSE_Sign1 and its payload.
pub fn parse_attestation(cose_bytes: &[u8]) -> Result<(CoseSign1, KeygenPayload), Reject> {
    let c =
        cose::parse_sign1(cose_bytes).map_err(|e| reject(RejectCode::MalformedAttestation, e))?;
    let payload = c.payload.as_deref().ok_or_else(|| {
        reject(
            RejectCode::MalformedAttestation,
            "COSE_Sign1 payload is nil (detached); a KEYGEN attestation carries it",
        )
    })?;
    let p = cose::parse_keygen_payload(payload)
        .map_err(|e| reject(RejectCode::MalformedAttestation, e))?;
    Ok((c, p))
}

/// A KEYGEN string decoded down to the attestation payload (structure only, nothing judged
/// past `malformed-attestation`). The first half is decoded on demand with [`Parsed::csr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The KEYGEN text after unwrapping.
    pub text: String,
    /// The first half: CSR DER (msg_type 9) or SubjectPublicKeyInfo DER (msg_type 8).
    pub der: Vec<u8>,
    /// The COSE half bytes.
    pub cose_bytes: Vec<u8>,
    /// The decoded COSE_Sign1.
    pub cose: CoseSign1,
    /// The decoded attestation payload.
    pub payload: KeygenPayload,
}

impl Parsed {
    /// Parse the first half as a CSR.
    pub fn csr(&self) -> Result<Csr<'_>, tlv::DerError> {
        Csr::parse(&self.der)
    }

    /// Parse the first half as a SubjectPublicKeyInfo (response_content 1).
    pub fn spki(&self) -> Result<csr::Spki<'_>, tlv::DerError> {
        csr::Spki::parse(&self.der)
    }

    /// The attested UUID as text.
    pub fn uuid(&self) -> String {
        uuid_string(&self.payload.uuid)
    }

    /// Whether the payload digest is the SHA-256 of the first half.
    pub fn digest_ok(&self) -> bool {
        crypto::sha256(&self.der) == self.payload.digest
    }
}

/// Decode a KEYGEN string (bare or as a whole `%KEYGEN: "…"` line) without judging the
/// first half. Codes: `malformed-input`, `bad-base64`, `missing-attestation`,
/// `malformed-attestation`.
pub fn parse(keygen: &str) -> Result<Parsed, Reject> {
    let h = decode_halves(keygen)?;
    let cose_bytes = h.cose.unwrap_or_default();
    let (cose, payload) = parse_attestation(&cose_bytes)?;
    Ok(Parsed {
        text: h.text.to_string(),
        der: h.first,
        cose_bytes,
        cose,
        payload,
    })
}

/// True when `der` is an X.509 certificate (what `AT%KEYGEN=<tag>,14,2` puts where the CSR
/// goes). Only asked after the CSR parse failed, so the common path pays nothing.
fn is_certificate(der: &[u8]) -> bool {
    use der::Decode;
    x509_cert::Certificate::from_der(der).is_ok()
}

/// Run SPEC §3's per-string checks in order and return the verified request or the first
/// reject: malformed-input, bad-base64, missing-attestation, malformed-attestation,
/// wrong-message-type, malformed-csr, unsupported-key, bad-csr-signature, digest-mismatch,
/// identity-mismatch, sec-tag-mismatch. The COSE signature itself cannot be checked offline.
pub fn check(keygen: &str, opts: &CheckOptions) -> Result<Verified, Reject> {
    let h = decode_halves(keygen)?;
    let cose_bytes = h.cose.as_deref().unwrap_or_default();
    let (_cose, p) = parse_attestation(cose_bytes)?;
    if p.msg_type != cose::MSG_TYPE_CSR {
        let what = if p.msg_type == cose::MSG_TYPE_PUBLIC_KEY {
            " (a public key without CSR: AT%KEYGEN response_content 1)"
        } else {
            ""
        };
        return Err(reject(
            RejectCode::WrongMessageType,
            format!("message type is {}, not 9 (CSR){what}", p.msg_type),
        ));
    }
    let csr = Csr::parse(&h.first).map_err(|e| {
        if is_certificate(&h.first) {
            reject(
                RejectCode::MalformedCsr,
                "first half is an X.509 certificate, not a PKCS#10 CSR: the modem answered \
                 AT%KEYGEN key_type 14 (a self-signed certificate); nrfca certifies client \
                 keys, requested with key_type 2 (`nrfca bench export` does)",
            )
        } else {
            reject(
                RejectCode::MalformedCsr,
                format!("first half is not a PKCS#10 CSR: {e}"),
            )
        }
    })?;
    if csr.sig_alg_oid == crate::oid::ECDSA_WITH_SHA256.as_bytes() && !csr.is_ecdsa_sha256() {
        return Err(reject(
            RejectCode::MalformedCsr,
            "ecdsa-with-SHA256 carries parameters other than NULL",
        ));
    }
    let point = csr
        .spki
        .p256_point()
        .map_err(|e| reject(RejectCode::UnsupportedKey, e))?;
    if !csr.is_ecdsa_sha256() {
        return Err(reject(
            RejectCode::UnsupportedKey,
            format!(
                "CSR signature algorithm is {}, not ecdsa-with-SHA256",
                csr::oid_name(csr.sig_alg_oid)
            ),
        ));
    }
    if !crypto::verify_p256_sha256(&point, csr.info, csr.signature) {
        if !crypto::is_valid_p256_point(&point) {
            return Err(reject(
                RejectCode::UnsupportedKey,
                "the public key is not a valid P-256 point",
            ));
        }
        return Err(reject(
            RejectCode::BadCsrSignature,
            "the CSR self-signature does not verify with its own public key",
        ));
    }
    let digest = crypto::sha256(&h.first);
    if digest != p.digest {
        return Err(reject(
            RejectCode::DigestMismatch,
            format!(
                "attested digest {} is not the CSR's SHA-256 {}",
                hex::encode(p.digest),
                hex::encode(digest)
            ),
        ));
    }
    let uuid = uuid_string(&p.uuid);
    let cns = csr.common_names();
    let cn = match cns.as_slice() {
        [Some(cn)] => (*cn).to_string(),
        [] => {
            return Err(reject(
                RejectCode::IdentityMismatch,
                format!("the CSR subject has no CN (attested UUID {uuid})"),
            ))
        }
        [None] => {
            return Err(reject(
                RejectCode::IdentityMismatch,
                "the CSR CN is not a text string",
            ))
        }
        _ => {
            return Err(reject(
                RejectCode::IdentityMismatch,
                format!("the CSR subject has {} CNs", cns.len()),
            ))
        }
    };
    let device_id = match opts.device_id {
        DeviceIdMode::Uuid => {
            if cn != uuid {
                return Err(reject(
                    RejectCode::IdentityMismatch,
                    format!("CSR CN {:?} is not the attested UUID {uuid}", trunc(&cn)),
                ));
            }
            uuid.clone()
        }
        DeviceIdMode::Cn => {
            if cn == uuid {
                cn.clone()
            } else if let Some(imei) = cn.strip_prefix("nrf-").filter(|i| crate::util::is_imei(i)) {
                if let Some(want) = opts.imei.as_deref() {
                    if want != imei {
                        return Err(reject(
                            RejectCode::IdentityMismatch,
                            format!("CSR CN {cn} does not carry the device IMEI {}", trunc(want)),
                        ));
                    }
                }
                cn.clone()
            } else {
                return Err(reject(
                    RejectCode::IdentityMismatch,
                    format!(
                        "CSR CN {:?} is neither nrf-<15-digit IMEI> nor the attested UUID {uuid}",
                        trunc(&cn)
                    ),
                ));
            }
        }
    };
    if let Some(want) = opts.sec_tag {
        if p.sec_tag != want {
            return Err(reject(
                RejectCode::SecTagMismatch,
                format!("attested sec_tag is {}, expected {want}", p.sec_tag),
            ));
        }
    }
    Ok(Verified {
        device_id,
        uuid,
        sec_tag: p.sec_tag,
        public_key: point,
        csr_der: h.first.clone(),
        keygen_sha256: crypto::sha256(h.text.as_bytes()),
        subject_cn: cn,
        null_param: csr.null_param(),
    })
}

/// Cut long untrusted text for messages.
fn trunc(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// A decoded `AT%ATTESTTOKEN` string `base64url(message).base64url(COSE_Sign1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestToken {
    /// The text after unwrapping.
    pub text: String,
    /// The message bytes (first half).
    pub message_bytes: Vec<u8>,
    /// The decoded message.
    pub message: AttestPayload,
    /// The COSE_Sign1 (payload nil: it signs the message).
    pub cose: CoseSign1,
}

impl AttestToken {
    /// The UUID as text.
    pub fn uuid(&self) -> String {
        uuid_string(&self.message.uuid)
    }
}

/// Decode an ATTESTTOKEN string (bare or as a whole `%ATTESTTOKEN: "…"` line). Codes:
/// `malformed-input`, `bad-base64`, `missing-attestation`, `malformed-attestation`.
pub fn parse_attesttoken(s: &str) -> Result<AttestToken, Reject> {
    let h = decode_halves(s)?;
    let message = cose::parse_attest_payload(&h.first)
        .map_err(|e| reject(RejectCode::MalformedAttestation, e))?;
    let cose = cose::parse_sign1(h.cose.as_deref().unwrap_or_default())
        .map_err(|e| reject(RejectCode::MalformedAttestation, e))?;
    Ok(AttestToken {
        text: h.text.to_string(),
        message_bytes: h.first,
        message,
        cose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real modem output in the seed tutorial (nRF9160, mfw 1.3.x).
    pub const SEED: &str = crate::util::SEED_KEYGEN_FOR_TESTS;

    #[test]
    fn seed_passes_with_defaults() {
        let v = check(SEED, &CheckOptions::default()).unwrap();
        assert_eq!(v.uuid, "50503041-3539-47eb-807b-102dbb423b9a");
        assert_eq!(v.device_id, v.uuid);
        assert_eq!(v.subject_cn, v.uuid);
        assert_eq!(v.sec_tag, 16842753);
        assert!(v.null_param);
        assert_eq!(v.csr_der.len(), 271);
        // Wrapped forms give the same result and the same hash.
        let wrapped = format!("  %KEYGEN: \"{SEED}\"\r\n");
        assert_eq!(check(&wrapped, &CheckOptions::default()).unwrap(), v);
        assert_eq!(
            check(&format!("\"{SEED}\""), &CheckOptions::default()).unwrap(),
            v
        );
    }

    #[test]
    fn seed_parse() {
        let p = parse(SEED).unwrap();
        assert_eq!(p.payload.msg_type, 9);
        assert!(p.digest_ok());
        assert_eq!(p.cose.alg, Some(-7));
        assert!(p.csr().unwrap().null_param());
        assert_eq!(
            hex::encode(p.payload.nonce),
            "7d0a163755af2d610209368b7d9647d4"
        );
    }

    #[test]
    fn seed_cn_mode_and_sec_tag_options() {
        let mut o = CheckOptions {
            device_id: DeviceIdMode::Cn,
            ..Default::default()
        };
        assert!(check(SEED, &o).is_ok());
        o.sec_tag = Some(42);
        assert_eq!(
            check(SEED, &o).unwrap_err().code,
            RejectCode::SecTagMismatch
        );
        o.sec_tag = None;
        assert!(check(SEED, &o).is_ok());
    }

    #[test]
    fn early_codes() {
        let c = |s: &str| check(s, &CheckOptions::default()).unwrap_err().code;
        assert_eq!(c(""), RejectCode::MalformedInput);
        assert_eq!(c("   \r\n"), RejectCode::MalformedInput);
        assert_eq!(c(&"A".repeat(MAX_LINE + 1)), RejectCode::MalformedInput);
        assert_eq!(c("a b"), RejectCode::MalformedInput);
        assert_eq!(c("a.b.c"), RejectCode::MalformedInput);
        assert_eq!(c("%KEYGEN: abc"), RejectCode::MalformedInput);
        assert_eq!(c("%KEYGEN: \"abc"), RejectCode::MalformedInput);
        assert_eq!(c("ab+/"), RejectCode::BadBase64);
        assert_eq!(c("abcde.abcd"), RejectCode::BadBase64);
        assert_eq!(c("abcd.ab*d"), RejectCode::BadBase64);
        assert_eq!(c("abcd"), RejectCode::MissingAttestation);
        assert_eq!(c("abcd."), RejectCode::MissingAttestation);
        assert_eq!(c("abcd.abcd"), RejectCode::MalformedAttestation);
        let (first, _) = SEED.split_once('.').unwrap();
        assert_eq!(c(first), RejectCode::MissingAttestation);
    }

    proptest::proptest! {
        #[test]
        fn check_never_panics_on_strings(s in ".{0,400}") {
            let _ = check(&s, &CheckOptions::default());
            let _ = parse(&s);
            let _ = parse_attesttoken(&s);
        }

        #[test]
        fn check_never_panics_on_base64_noise(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let s = format!("{}.{}", crypto::b64url_encode(&a), crypto::b64url_encode(&b));
            let r = check(&s, &CheckOptions::default());
            proptest::prop_assert!(r.is_err());
        }

        #[test]
        fn mutated_seed_never_panics(pos in 0usize..SEED.len(), ch in "[A-Za-z0-9_.=-]") {
            let mut s = SEED.as_bytes().to_vec();
            if let (Some(b), Some(c)) = (s.get_mut(pos), ch.bytes().next()) { *b = c; }
            let s = String::from_utf8(s).unwrap_or_default();
            let _ = check(&s, &CheckOptions::default());
            let _ = parse(&s);
        }
    }
}
