//! COSE_Sign1 (RFC 8152) as the nRF91 modem writes it, and the two payloads it carries:
//! the KEYGEN attestation `[msg_type, uuid, bstr(cbor(sec_tag)), digest, nonce]` and the
//! ATTESTTOKEN identity message `[1, uuid, device_type, fw_uuid, nonce]`.

use super::cbor::{self, CborError, Reader, Value};
use crate::crypto::{CryptoError, P256Key};

/// CBOR tag of COSE_Sign1.
pub const TAG_COSE_SIGN1: u64 = 18;
/// CBOR self-describe tag wrapping the payload arrays.
pub const TAG_SELF_DESCRIBE: u64 = 55799;
/// The modem's protected header: `{1: -7}` (alg ES256).
pub const PROTECTED_ES256: [u8; 3] = [0xa1, 0x01, 0x26];
/// The modem's unprotected header: `{4: h'21'}` (kid = CBOR -2, "identity_key").
pub const UNPROTECTED_IDENTITY_KID: [u8; 4] = [0xa1, 0x04, 0x41, 0x21];
/// KEYGEN payload message type: CSR.
pub const MSG_TYPE_CSR: i64 = 9;
/// KEYGEN payload message type: public key (response_content 1).
pub const MSG_TYPE_PUBLIC_KEY: i64 = 8;
/// ATTESTTOKEN message type: device identity v1.
pub const MSG_TYPE_IDENTITY: i64 = 1;

/// A decoded COSE_Sign1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseSign1 {
    /// Whether it carried tag 18.
    pub tagged: bool,
    /// The protected header bstr contents, as given.
    pub protected: Vec<u8>,
    /// `alg` (label 1) from the protected header, if an integer.
    pub alg: Option<i64>,
    /// `kid` (label 4) from the unprotected header, if a byte string.
    pub kid: Option<Vec<u8>>,
    /// The payload bstr contents; None when `nil` (detached).
    pub payload: Option<Vec<u8>>,
    /// The signature bytes (raw r‖s for ES256).
    pub signature: Vec<u8>,
}

impl CoseSign1 {
    /// Name of the `alg` value.
    pub fn alg_name(&self) -> String {
        match self.alg {
            Some(-7) => "ES256".into(),
            Some(-35) => "ES384".into(),
            Some(-8) => "EdDSA".into(),
            Some(n) => format!("alg {n}"),
            None => "none".into(),
        }
    }

    /// The kid interpreted the way Nordic's parser does: a bstr holding a CBOR integer.
    pub fn kid_name(&self) -> String {
        let Some(kid) = &self.kid else {
            return "none".into();
        };
        match cbor::decode(kid).ok().and_then(|v| v.as_int()) {
            Some(-2) => "identity_key (-2)".into(),
            Some(-4) => "nordic_base_production_key (-4)".into(),
            Some(-5) => "nordic_base_rd_key (-5)".into(),
            Some(n) => format!("{n}"),
            None => format!("h'{}'", hex::encode(kid)),
        }
    }
}

fn int_i64(v: &Value<'_>) -> Option<i64> {
    v.as_int().and_then(|n| i64::try_from(n).ok())
}

/// Parse a COSE_Sign1 (tag 18 optional). The protected header must be a bstr holding a map
/// (or empty), the unprotected header a map, the payload a bstr or nil, the signature a bstr
/// of 1–132 bytes; nothing may follow.
pub fn parse_sign1(bytes: &[u8]) -> Result<CoseSign1, String> {
    let mut r = Reader::new(bytes);
    let tagged = r.opt_tag(TAG_COSE_SIGN1).map_err(|e| e.to_string())?;
    let n = r.array().map_err(|e| format!("COSE_Sign1: {e}"))?;
    if n != 4 {
        return Err(format!("COSE_Sign1 is an array of {n}, not 4"));
    }
    let protected = r
        .bytes()
        .map_err(|e| format!("protected header: {e}"))?
        .to_vec();
    let mut alg = None;
    if !protected.is_empty() {
        match cbor::decode(&protected) {
            Ok(Value::Map(pairs)) => {
                for (k, v) in &pairs {
                    if k.as_int() == Some(1) {
                        alg = int_i64(v);
                    }
                }
            }
            Ok(other) => return Err(format!("protected header is a {}, not a map", other.kind())),
            Err(e) => return Err(format!("protected header: {e}")),
        }
    }
    let unprotected = r.value().map_err(|e| format!("unprotected header: {e}"))?;
    let mut kid = None;
    match unprotected {
        Value::Map(pairs) => {
            for (k, v) in &pairs {
                if k.as_int() == Some(4) {
                    if let Value::Bytes(b) = v {
                        kid = Some(b.to_vec());
                    }
                }
            }
        }
        other => {
            return Err(format!(
                "unprotected header is a {}, not a map",
                other.kind()
            ))
        }
    }
    let payload = match r.peek() {
        Some(0xf6) => {
            let _ = r.value();
            None
        }
        _ => Some(r.bytes().map_err(|e| format!("payload: {e}"))?.to_vec()),
    };
    let signature = r.bytes().map_err(|e| format!("signature: {e}"))?.to_vec();
    if signature.is_empty() || signature.len() > 132 {
        return Err(format!("signature is {} bytes", signature.len()));
    }
    r.finish().map_err(|e| format!("COSE_Sign1: {e}"))?;
    Ok(CoseSign1 {
        tagged,
        protected,
        alg,
        kid,
        payload,
        signature,
    })
}

/// The decoded KEYGEN attestation payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenPayload {
    /// 9 CSR, 8 public key.
    pub msg_type: i64,
    /// The device UUID.
    pub uuid: [u8; 16],
    /// The sec_tag (negative CBOR values mapped to unsigned 32-bit).
    pub sec_tag: u32,
    /// SHA-256 of the first half's DER.
    pub digest: [u8; 32],
    /// Per-call random nonce.
    pub nonce: [u8; 16],
}

fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("{what} is {} bytes, not {N}", b.len()))
}

fn cbor_err(what: &str) -> impl Fn(CborError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Decode a sec_tag bstr: a CBOR integer; negatives are int32 two's complement.
pub fn decode_sec_tag(b: &[u8]) -> Result<u32, String> {
    let mut r = Reader::new(b);
    let v = r.int().map_err(cbor_err("sec_tag"))?;
    r.finish().map_err(cbor_err("sec_tag"))?;
    if v >= 0 {
        u32::try_from(v).map_err(|_| format!("sec_tag {v} does not fit 32 bits"))
    } else {
        i32::try_from(v)
            .map(|n| n as u32)
            .map_err(|_| format!("sec_tag {v} does not fit 32 bits"))
    }
}

/// Encode a sec_tag as the modem does: tags ≥ 2^31 become negative int32.
pub fn encode_sec_tag(sec_tag: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    // Reinterpreting as i32 leaves tags below 2^31 unchanged and makes larger ones negative.
    cbor::write_int(&mut out, i64::from(sec_tag as i32));
    out
}

/// Parse the KEYGEN payload: optional tag 55799, then exactly
/// `[int, bstr(16), bstr(cbor int), bstr(32), bstr(16)]`.
pub fn parse_keygen_payload(bytes: &[u8]) -> Result<KeygenPayload, String> {
    let mut r = Reader::new(bytes);
    r.opt_tag(TAG_SELF_DESCRIBE).map_err(cbor_err("payload"))?;
    let n = r.array().map_err(cbor_err("payload"))?;
    if n != 5 {
        return Err(format!("payload is an array of {n}, not 5"));
    }
    let msg_type = r.int().map_err(cbor_err("message type"))?;
    let msg_type =
        i64::try_from(msg_type).map_err(|_| format!("message type {msg_type} out of range"))?;
    let uuid = fixed::<16>(r.bytes().map_err(cbor_err("device UUID"))?, "device UUID")?;
    let sec_tag = decode_sec_tag(r.bytes().map_err(cbor_err("sec_tag"))?)?;
    let digest = fixed::<32>(r.bytes().map_err(cbor_err("digest"))?, "digest")?;
    let nonce = fixed::<16>(r.bytes().map_err(cbor_err("nonce"))?, "nonce")?;
    r.finish().map_err(cbor_err("payload"))?;
    Ok(KeygenPayload {
        msg_type,
        uuid,
        sec_tag,
        digest,
        nonce,
    })
}

/// The decoded ATTESTTOKEN identity message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestPayload {
    /// 1 = device identity message v1.
    pub msg_type: i64,
    /// The device UUID.
    pub uuid: [u8; 16],
    /// 1 nRF9160 SIAA, 2 SIBA, 3 SICA, 4 nRF9161 LACA, 5 nRF9131 LACA, 6 nRF9151 LACA.
    pub device_type: i64,
    /// Modem firmware UUID.
    pub fw_uuid: [u8; 16],
    /// Device nonce, or the host's challenge.
    pub nonce: [u8; 16],
}

/// Parse the ATTESTTOKEN message: optional tag 55799, then
/// `[int, bstr(16), int, bstr(16), bstr(16)]`.
pub fn parse_attest_payload(bytes: &[u8]) -> Result<AttestPayload, String> {
    let mut r = Reader::new(bytes);
    r.opt_tag(TAG_SELF_DESCRIBE).map_err(cbor_err("message"))?;
    let n = r.array().map_err(cbor_err("message"))?;
    if n != 5 {
        return Err(format!("message is an array of {n}, not 5"));
    }
    let msg_type = r.int().map_err(cbor_err("message type"))?;
    let msg_type =
        i64::try_from(msg_type).map_err(|_| format!("message type {msg_type} out of range"))?;
    let uuid = fixed::<16>(r.bytes().map_err(cbor_err("device UUID"))?, "device UUID")?;
    let device_type = r.int().map_err(cbor_err("device type"))?;
    let device_type = i64::try_from(device_type)
        .map_err(|_| format!("device type {device_type} out of range"))?;
    let fw_uuid = fixed::<16>(
        r.bytes().map_err(cbor_err("firmware UUID"))?,
        "firmware UUID",
    )?;
    let nonce = fixed::<16>(r.bytes().map_err(cbor_err("nonce"))?, "nonce")?;
    r.finish().map_err(cbor_err("message"))?;
    Ok(AttestPayload {
        msg_type,
        uuid,
        device_type,
        fw_uuid,
        nonce,
    })
}

/// Name of an ATTESTTOKEN device type.
pub fn device_type_name(t: i64) -> &'static str {
    match t {
        1 => "nRF9160 SIAA",
        2 => "nRF9160 SIBA",
        3 => "nRF9160 SICA",
        4 => "nRF9161 LACA",
        5 => "nRF9131 LACA",
        6 => "nRF9151 LACA",
        _ => "unknown",
    }
}

/// The KEYGEN payload bytes: `D9 D9 F7 85 <type> 50 <uuid> 4x <sec_tag> 58 20 <digest> 50
/// <nonce>`.
pub fn keygen_payload(
    msg_type: i64,
    uuid: &[u8; 16],
    sec_tag: u32,
    digest: &[u8; 32],
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(80);
    cbor::write_head(&mut p, 6, TAG_SELF_DESCRIBE);
    cbor::write_head(&mut p, 4, 5);
    cbor::write_int(&mut p, msg_type);
    cbor::write_bytes(&mut p, uuid);
    cbor::write_bytes(&mut p, &encode_sec_tag(sec_tag));
    cbor::write_bytes(&mut p, digest);
    cbor::write_bytes(&mut p, nonce);
    p
}

/// The ATTESTTOKEN message bytes.
pub fn attest_payload(
    uuid: &[u8; 16],
    device_type: i64,
    fw_uuid: &[u8; 16],
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    cbor::write_head(&mut p, 6, TAG_SELF_DESCRIBE);
    cbor::write_head(&mut p, 4, 5);
    cbor::write_int(&mut p, MSG_TYPE_IDENTITY);
    cbor::write_bytes(&mut p, uuid);
    cbor::write_int(&mut p, device_type);
    cbor::write_bytes(&mut p, fw_uuid);
    cbor::write_bytes(&mut p, nonce);
    p
}

/// The COSE Sig_structure `["Signature1", protected, h'', payload]` that ES256 signs.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(payload.len() + protected.len() + 20);
    cbor::write_head(&mut s, 4, 4);
    cbor::write_text(&mut s, "Signature1");
    cbor::write_bytes(&mut s, protected);
    cbor::write_bytes(&mut s, &[]);
    cbor::write_bytes(&mut s, payload);
    s
}

/// A COSE_Sign1 exactly like the modem's (`D2 84 43 A1 01 26 A1 04 41 21 …`), signed with
/// ES256 by `identity`. With `detached`, the payload is signed but written as `nil`
/// (ATTESTTOKEN).
pub fn sign1(identity: &P256Key, payload: &[u8], detached: bool) -> Result<Vec<u8>, CryptoError> {
    let sig = identity.sign_fixed(&sig_structure(&PROTECTED_ES256, payload))?;
    let mut c = Vec::with_capacity(payload.len() + 90);
    cbor::write_head(&mut c, 6, TAG_COSE_SIGN1);
    cbor::write_head(&mut c, 4, 4);
    cbor::write_bytes(&mut c, &PROTECTED_ES256);
    c.extend_from_slice(&UNPROTECTED_IDENTITY_KID);
    if detached {
        c.push(0xf6);
    } else {
        cbor::write_bytes(&mut c, payload);
    }
    cbor::write_bytes(&mut c, &sig);
    Ok(c)
}

/// Verify a COSE_Sign1 ES256 signature with a known identity public key (only possible
/// with a simulated modem; real identity keys are held by Nordic). `detached_payload` is
/// used when the COSE payload is nil.
pub fn verify_sign1(
    identity_public_key: &[u8],
    cose: &CoseSign1,
    detached_payload: Option<&[u8]>,
) -> bool {
    let Some(payload) = cose.payload.as_deref().or(detached_payload) else {
        return false;
    };
    crate::crypto::verify_p256_sha256_fixed(
        identity_public_key,
        &sig_structure(&cose.protected, payload),
        &cose.signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec_tag_encoding() {
        assert_eq!(encode_sec_tag(16842753), vec![0x1a, 0x01, 0x01, 0x00, 0x01]);
        assert_eq!(encode_sec_tag(42), vec![0x18, 0x2a]);
        assert_eq!(encode_sec_tag(1235), vec![0x19, 0x04, 0xd3]);
        for t in [
            0u32,
            17,
            42,
            1235,
            16842753,
            2147483647,
            2147483648,
            4294967294,
            u32::MAX,
        ] {
            assert_eq!(decode_sec_tag(&encode_sec_tag(t)), Ok(t), "{t}");
        }
        assert_eq!(encode_sec_tag(u32::MAX), vec![0x20]);
        assert!(decode_sec_tag(&[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(decode_sec_tag(&[0x3b, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(decode_sec_tag(&[0x41, 0]).is_err());
        assert!(decode_sec_tag(&[0x01, 0x01]).is_err());
    }

    #[test]
    fn sign1_shape_and_round_trip() {
        let (id, _) = P256Key::generate().unwrap();
        let p = keygen_payload(9, &[1; 16], 16842753, &[2; 32], &[3; 16]);
        assert_eq!(p.len(), 79);
        let c = sign1(&id, &p, false).unwrap();
        assert_eq!(
            &c[..16],
            &[
                0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x04, 0x41, 0x21, 0x58, 0x4f, 0xd9, 0xd9,
                0xf7, 0x85
            ]
        );
        assert_eq!(c.len(), 157);
        let s = parse_sign1(&c).unwrap();
        assert!(s.tagged);
        assert_eq!(s.alg, Some(-7));
        assert_eq!(s.kid_name(), "identity_key (-2)");
        assert!(verify_sign1(&id.public_key(), &s, None));
        let kp = parse_keygen_payload(s.payload.as_deref().unwrap()).unwrap();
        assert_eq!(kp.sec_tag, 16842753);
        assert_eq!(kp.uuid, [1; 16]);
        for cut in 0..c.len() {
            assert!(parse_sign1(&c[..cut]).is_err());
        }
        let d = sign1(&id, &p, true).unwrap();
        let s = parse_sign1(&d).unwrap();
        assert_eq!(s.payload, None);
        assert!(verify_sign1(&id.public_key(), &s, Some(&p)));
    }

    #[test]
    fn payload_shape_errors() {
        // 4 elements.
        let mut p = Vec::new();
        cbor::write_head(&mut p, 4, 4);
        assert!(parse_keygen_payload(&p).unwrap_err().contains("array of 4"));
        // Wrong uuid length.
        let mut p = Vec::new();
        cbor::write_head(&mut p, 4, 5);
        cbor::write_int(&mut p, 9);
        cbor::write_bytes(&mut p, &[0; 15]);
        assert!(parse_keygen_payload(&p).unwrap_err().contains("15 bytes"));
    }
}
