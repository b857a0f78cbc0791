//! Public keys, certificate signature checks and extension text, shared by the CSR and
//! certificate views of `nrfca inspect`.

use super::KeyInfo;
use crate::keygen::{csr, tlv};
use crate::{crypto, oid};
use der::Decode;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};

pub(super) fn key_info_from_spki(s: &csr::Spki<'_>) -> KeyInfo {
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

/// `EC P-384`, `RSA 2048-bit`, … for keys that are not P-256.
pub(super) fn key_algorithm_name(s: &csr::Spki<'_>) -> String {
    if s.alg_oid == oid::EC_PUBLIC_KEY.as_bytes() {
        return match s.params {
            Some(p) if p.tag == tlv::tag::OID => format!("EC {}", csr::oid_name(p.value)),
            _ => "EC (no named curve)".into(),
        };
    }
    if s.alg_oid == oid::RSA_ENCRYPTION.as_bytes() {
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
pub(super) fn verify_with_spki(
    sig_alg: &[u8],
    issuer: &csr::Spki<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Option<bool> {
    use ring::signature as rs;
    let is = |o: &oid::Oid, b: &[u8]| o.as_bytes() == b;
    let curve = issuer
        .params
        .filter(|p| p.tag == tlv::tag::OID)
        .map(|p| p.value)
        .unwrap_or_default();
    let alg: &dyn rs::VerificationAlgorithm = if is(&oid::EC_PUBLIC_KEY, issuer.alg_oid) {
        let sha256 = is(&oid::ECDSA_WITH_SHA256, sig_alg);
        let sha384 = is(&oid::ECDSA_WITH_SHA384, sig_alg);
        match (is(&oid::SECP256R1, curve), is(&oid::SECP384R1, curve)) {
            (true, _) if sha256 => &rs::ECDSA_P256_SHA256_ASN1,
            (true, _) if sha384 => &rs::ECDSA_P256_SHA384_ASN1,
            (_, true) if sha256 => &rs::ECDSA_P384_SHA256_ASN1,
            (_, true) if sha384 => &rs::ECDSA_P384_SHA384_ASN1,
            _ => return None,
        }
    } else if is(&oid::RSA_ENCRYPTION, issuer.alg_oid) {
        if is(&oid::SHA256_WITH_RSA, sig_alg) {
            &rs::RSA_PKCS1_2048_8192_SHA256
        } else if is(&oid::SHA384_WITH_RSA, sig_alg) {
            &rs::RSA_PKCS1_2048_8192_SHA384
        } else if is(&oid::SHA512_WITH_RSA, sig_alg) {
            &rs::RSA_PKCS1_2048_8192_SHA512
        } else {
            return None;
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

/// An extension's RFC 5280 name, else its dotted OID.
pub(super) fn ext_name(o: &[u8]) -> String {
    oid::lookup(oid::EXTENSIONS, o)
        .map(str::to_string)
        .or_else(|| tlv::oid_string(o))
        .unwrap_or_else(|| hex::encode(o))
}

fn key_usage_text(ku: &KeyUsage) -> String {
    use x509_cert::ext::pkix::KeyUsages as K;
    [
        (K::DigitalSignature, "digitalSignature"),
        (K::NonRepudiation, "nonRepudiation"),
        (K::KeyEncipherment, "keyEncipherment"),
        (K::DataEncipherment, "dataEncipherment"),
        (K::KeyAgreement, "keyAgreement"),
        (K::KeyCertSign, "keyCertSign"),
        (K::CRLSign, "cRLSign"),
        (K::EncipherOnly, "encipherOnly"),
        (K::DecipherOnly, "decipherOnly"),
    ]
    .iter()
    .filter(|(k, _)| ku.0.contains(*k))
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join(", ")
}

/// An extension value (the extnValue OCTET STRING contents) in words for the extensions
/// nrfca's certificates and the modem's CSR carry, decoded with `x509-cert`; hex otherwise.
pub(super) fn ext_value_text(o: &[u8], v: &[u8]) -> String {
    let is = |x: &oid::Oid| x.as_bytes() == o;
    let decoded = if is(&oid::KEY_USAGE) {
        KeyUsage::from_der(v).ok().map(|k| key_usage_text(&k))
    } else if is(&oid::BASIC_CONSTRAINTS) {
        BasicConstraints::from_der(v).ok().map(|b| {
            format!(
                "CA:{}{}",
                if b.ca { "TRUE" } else { "FALSE" },
                b.path_len_constraint
                    .map(|p| format!(", pathlen {p}"))
                    .unwrap_or_default()
            )
        })
    } else if is(&oid::EXT_KEY_USAGE) {
        ExtendedKeyUsage::from_der(v).ok().map(|e| {
            e.0.iter()
                .map(|k| {
                    oid::lookup(oid::KEY_PURPOSES, k.as_bytes())
                        .map(str::to_string)
                        .unwrap_or_else(|| k.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    } else if is(&oid::SUBJECT_KEY_IDENTIFIER) {
        SubjectKeyIdentifier::from_der(v)
            .ok()
            .map(|k| hex::encode(k.0.as_bytes()))
    } else if is(&oid::AUTHORITY_KEY_IDENTIFIER) {
        AuthorityKeyIdentifier::from_der(v).ok().and_then(|a| {
            a.key_identifier
                .map(|k| format!("keyid {}", hex::encode(k.as_bytes())))
        })
    } else {
        None
    };
    decoded.unwrap_or_else(|| hex::encode(v))
}
