//! Every object identifier nrfca reads or writes, once, with the document that defines it, as
//! [`const_oid::ObjectIdentifier`]s; and the one table of names each kind is shown with
//! (subject attributes, algorithms and curves, certificate extensions, key purposes).
//!
//! Code compares DER content bytes with `oid::X.as_bytes()` and writes them the same way; no
//! other module spells an OID as bytes or dotted text.

pub use const_oid::ObjectIdentifier as Oid;

// ---- Public keys and curves -------------------------------------------------------------

/// id-ecPublicKey (RFC 5480 §2.1.1).
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / prime256v1, "P-256" (RFC 5480 §2.1.1.1).
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1, "P-384" (RFC 5480 §2.1.1.1).
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
/// secp521r1, "P-521" (RFC 5480 §2.1.1.1).
pub const SECP521R1: Oid = Oid::new_unwrap("1.3.132.0.35");
/// secp256k1 (SEC 2 §A.2).
pub const SECP256K1: Oid = Oid::new_unwrap("1.3.132.0.10");
/// rsaEncryption (RFC 8017 Appendix C).
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// id-Ed25519 (RFC 8410 §3).
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");

// ---- Signature algorithms ---------------------------------------------------------------

/// ecdsa-with-SHA256 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
/// sha256WithRSAEncryption (RFC 8017 Appendix C).
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// sha384WithRSAEncryption (RFC 8017 Appendix C).
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
/// sha512WithRSAEncryption (RFC 8017 Appendix C).
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");

// ---- Name attributes (RFC 4519, RFC 5280 Appendix A) ------------------------------------

/// commonName (RFC 4519 §2.3).
pub const CN: Oid = Oid::new_unwrap("2.5.4.3");
/// surname (RFC 4519 §2.32).
pub const SURNAME: Oid = Oid::new_unwrap("2.5.4.4");
/// serialNumber (RFC 4519 §2.31).
pub const SERIAL_NUMBER: Oid = Oid::new_unwrap("2.5.4.5");
/// countryName (RFC 4519 §2.2).
pub const COUNTRY: Oid = Oid::new_unwrap("2.5.4.6");
/// localityName (RFC 4519 §2.16).
pub const LOCALITY: Oid = Oid::new_unwrap("2.5.4.7");
/// stateOrProvinceName (RFC 4519 §2.33).
pub const STATE: Oid = Oid::new_unwrap("2.5.4.8");
/// street (RFC 4519 §2.34).
pub const STREET: Oid = Oid::new_unwrap("2.5.4.9");
/// organizationName (RFC 4519 §2.19).
pub const ORGANIZATION: Oid = Oid::new_unwrap("2.5.4.10");
/// organizationalUnitName (RFC 4519 §2.20).
pub const ORGANIZATIONAL_UNIT: Oid = Oid::new_unwrap("2.5.4.11");
/// title (RFC 4519 §2.38).
pub const TITLE: Oid = Oid::new_unwrap("2.5.4.12");
/// givenName (RFC 4519 §2.12).
pub const GIVEN_NAME: Oid = Oid::new_unwrap("2.5.4.42");
/// emailAddress (RFC 2985 §5.2.1; RFC 5280 Appendix A.1).
pub const EMAIL_ADDRESS: Oid = Oid::new_unwrap("1.2.840.113549.1.9.1");
/// domainComponent (RFC 4519 §2.4).
pub const DOMAIN_COMPONENT: Oid = Oid::new_unwrap("0.9.2342.19200300.100.1.25");

// ---- PKCS#10 attributes -----------------------------------------------------------------

/// PKCS#9 extensionRequest (RFC 2985 §5.4.2).
pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");

// ---- Certificate extensions (RFC 5280 §4.2) ---------------------------------------------

/// subjectKeyIdentifier (RFC 5280 §4.2.1.2).
pub const SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
/// keyUsage (RFC 5280 §4.2.1.3).
pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
/// subjectAltName (RFC 5280 §4.2.1.6).
pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
/// basicConstraints (RFC 5280 §4.2.1.9).
pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
/// cRLNumber (RFC 5280 §5.2.3), a CRL extension.
pub const CRL_NUMBER: Oid = Oid::new_unwrap("2.5.29.20");
/// reasonCode (RFC 5280 §5.3.1), a CRL entry extension.
pub const CRL_REASON: Oid = Oid::new_unwrap("2.5.29.21");
/// cRLDistributionPoints (RFC 5280 §4.2.1.13).
pub const CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
/// certificatePolicies (RFC 5280 §4.2.1.4).
pub const CERTIFICATE_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
/// authorityKeyIdentifier (RFC 5280 §4.2.1.1).
pub const AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
/// extKeyUsage (RFC 5280 §4.2.1.12).
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
/// authorityInfoAccess (RFC 5280 §4.2.2.1).
pub const AUTHORITY_INFO_ACCESS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.1");

// ---- Key purposes (RFC 5280 §4.2.1.12) --------------------------------------------------

/// id-kp-serverAuth.
pub const KP_SERVER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.1");
/// id-kp-clientAuth.
pub const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");

// ---- Names ------------------------------------------------------------------------------

/// Subject attributes by the short name RFC 4514 §3 (and OpenSSL, for the ones it adds)
/// prints them with, in the order `--subject` / KEYGEN `<attributes>` documents them.
pub const ATTRIBUTES: &[(&str, Oid)] = &[
    ("CN", CN),
    ("SN", SURNAME),
    ("serialNumber", SERIAL_NUMBER),
    ("C", COUNTRY),
    ("L", LOCALITY),
    ("ST", STATE),
    ("street", STREET),
    ("O", ORGANIZATION),
    ("OU", ORGANIZATIONAL_UNIT),
    ("title", TITLE),
    ("GN", GIVEN_NAME),
    ("emailAddress", EMAIL_ADDRESS),
    ("DC", DOMAIN_COMPONENT),
];

/// Key algorithms, curves and signature algorithms by their usual names.
pub const ALGORITHMS: &[(&str, Oid)] = &[
    ("id-ecPublicKey", EC_PUBLIC_KEY),
    ("P-256", SECP256R1),
    ("P-384", SECP384R1),
    ("P-521", SECP521R1),
    ("secp256k1", SECP256K1),
    ("rsaEncryption", RSA_ENCRYPTION),
    ("Ed25519", ED25519),
    ("ecdsa-with-SHA256", ECDSA_WITH_SHA256),
    ("ecdsa-with-SHA384", ECDSA_WITH_SHA384),
    ("sha256WithRSAEncryption", SHA256_WITH_RSA),
];

/// Certificate extensions by their RFC 5280 names.
pub const EXTENSIONS: &[(&str, Oid)] = &[
    ("keyUsage", KEY_USAGE),
    ("basicConstraints", BASIC_CONSTRAINTS),
    ("extKeyUsage", EXT_KEY_USAGE),
    ("subjectKeyIdentifier", SUBJECT_KEY_IDENTIFIER),
    ("authorityKeyIdentifier", AUTHORITY_KEY_IDENTIFIER),
    ("subjectAltName", SUBJECT_ALT_NAME),
    ("cRLDistributionPoints", CRL_DISTRIBUTION_POINTS),
    ("certificatePolicies", CERTIFICATE_POLICIES),
    ("authorityInfoAccess", AUTHORITY_INFO_ACCESS),
    ("cRLNumber", CRL_NUMBER),
    ("reasonCode", CRL_REASON),
];

/// Extended key usages by their RFC 5280 names.
pub const KEY_PURPOSES: &[(&str, Oid)] = &[
    ("serverAuth", KP_SERVER_AUTH),
    ("clientAuth", KP_CLIENT_AUTH),
];

/// The name `table` gives the OID whose DER content bytes are `oid`.
pub fn lookup(table: &[(&'static str, Oid)], oid: &[u8]) -> Option<&'static str> {
    table
        .iter()
        .find(|(_, o)| o.as_bytes() == oid)
        .map(|(n, _)| *n)
}

/// The OID a short attribute name stands for (case-insensitive, as `<attributes>` reads).
/// Only the request generator (`sim::generate`, feature `bench`) reads attribute names.
#[cfg(any(feature = "bench", test))]
pub fn attribute_by_name(name: &str) -> Option<(&'static str, Oid)> {
    ATTRIBUTES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_the_der_content_the_format_documents() {
        // docs/keygen-format.md shows these bytes in the modem's CSR.
        assert_eq!(
            EC_PUBLIC_KEY.as_bytes(),
            [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]
        );
        assert_eq!(
            ECDSA_WITH_SHA256.as_bytes(),
            [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        );
        assert_eq!(CN.as_bytes(), [0x55, 0x04, 0x03]);
        assert_eq!(KEY_USAGE.as_bytes(), [0x55, 0x1d, 0x0f]);
        assert_eq!(
            DOMAIN_COMPONENT.as_bytes(),
            [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19]
        );
    }

    #[test]
    fn every_oid_has_one_name_per_table() {
        for table in [ATTRIBUTES, ALGORITHMS, EXTENSIONS, KEY_PURPOSES] {
            for (i, (n, o)) in table.iter().enumerate() {
                assert_eq!(lookup(table, o.as_bytes()), Some(*n));
                assert!(table[i + 1..].iter().all(|(m, p)| m != n && p != o));
            }
        }
        assert_eq!(lookup(EXTENSIONS, CN.as_bytes()), None);
        assert_eq!(attribute_by_name("cn"), Some(("CN", CN)));
        assert_eq!(attribute_by_name("nope"), None);
    }
}
