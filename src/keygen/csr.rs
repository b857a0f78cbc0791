//! PKCS#10 certification requests: a byte-exact reader (keeps the DER as given, exposes the
//! exact CertificationRequestInfo bytes, accepts the modem's `SEQUENCE { ecdsa-with-SHA256,
//! NULL }` signature algorithm). The builder the modem simulator uses is in `sim::generate`.
//!
//! Why not `x509-cert`'s `CertReq`: this reader runs on every request of a batch and borrows
//! the signed bytes where they lie; measured in `benches/micro.rs` it takes 0.11 µs a CSR,
//! `CertReq::from_der` plus re-encoding the info for the signature check 5.2 µs (≈ 7 % of
//! the whole per-request check). The test `x509_cert_reads_the_same_csr` cross-checks the
//! reader against `x509-cert`.

use super::tlv::{self, tag, DerError, Tlv};
use crate::oid;

/// Most subject attributes a CSR may carry before it is judged malformed.
pub const MAX_SUBJECT_ATTRS: usize = 64;

/// One AttributeTypeAndValue of the subject, flattened in RDN order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAttr<'a> {
    /// OID content bytes.
    pub oid: &'a [u8],
    /// Tag of the value (0x0c UTF8String, 0x13 PrintableString, …).
    pub tag: u8,
    /// Value bytes.
    pub value: &'a [u8],
}

impl NameAttr<'_> {
    /// The value as text if it is a string type carrying valid UTF-8 (UTF8String,
    /// PrintableString, IA5String, TeletexString as far as it is ASCII).
    pub fn text(&self) -> Option<&str> {
        match self.tag {
            tag::UTF8_STRING | tag::PRINTABLE_STRING | tag::IA5_STRING | tag::T61_STRING => {
                std::str::from_utf8(self.value).ok()
            }
            _ => None,
        }
    }

    /// Short attribute name (`CN`, `O`, …) or the dotted OID.
    pub fn name(&self) -> String {
        attr_short_name(self.oid)
            .map(str::to_string)
            .or_else(|| tlv::oid_string(self.oid))
            .unwrap_or_else(|| "?".into())
    }
}

/// A SubjectPublicKeyInfo, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spki<'a> {
    /// The whole SPKI encoding.
    pub raw: &'a [u8],
    /// Algorithm OID content bytes.
    pub alg_oid: &'a [u8],
    /// Algorithm parameters (the curve OID for EC keys).
    pub params: Option<Tlv<'a>>,
    /// The subjectPublicKey BIT STRING contents (SEC1 point for EC keys).
    pub key: &'a [u8],
}

impl<'a> Spki<'a> {
    /// Parse an SPKI (the whole input must be one SEQUENCE).
    pub fn parse(der_bytes: &'a [u8]) -> Result<Self, DerError> {
        let t = tlv::parse_one(der_bytes)?;
        Self::from_tlv(t)
    }

    fn from_tlv(t: Tlv<'a>) -> Result<Self, DerError> {
        if t.tag != tag::SEQUENCE {
            return Err(DerError::UnexpectedTag {
                wanted: tag::SEQUENCE,
                found: t.tag,
            });
        }
        let mut s = t.children();
        let alg = s.expect(tag::SEQUENCE)?;
        let key = s.expect(tag::BIT_STRING)?;
        s.finish()?;
        let (alg_oid, params) = alg_id(alg)?;
        Ok(Spki {
            raw: t.raw,
            alg_oid,
            params,
            key: tlv::bit_string_bytes(&key)?,
        })
    }

    /// The uncompressed P-256 point if this is an id-ecPublicKey / prime256v1 key with a
    /// 65-byte `04 …` point; otherwise a description of what the key is.
    pub fn p256_point(&self) -> Result<[u8; 65], String> {
        if self.alg_oid != oid::EC_PUBLIC_KEY.as_bytes() {
            return Err(format!("key algorithm is {}", oid_name(self.alg_oid)));
        }
        let curve = match self.params {
            Some(p) if p.tag == tag::OID => p.value,
            _ => return Err("EC key without a named curve".into()),
        };
        if curve != oid::SECP256R1.as_bytes() {
            return Err(format!("EC key on curve {}", oid_name(curve)));
        }
        if self.key.len() != 65 || self.key.first() != Some(&0x04) {
            return Err(format!(
                "P-256 point is not a 65-byte uncompressed point ({} bytes)",
                self.key.len()
            ));
        }
        let mut out = [0u8; 65];
        out.copy_from_slice(self.key);
        Ok(out)
    }

    /// A short description of the key type, e.g. `EC P-256`.
    pub fn describe(&self) -> String {
        match self.p256_point() {
            Ok(_) => "EC P-256".into(),
            Err(e) => e,
        }
    }
}

/// A parsed PKCS#10 CSR borrowing the input DER, which stays byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr<'a> {
    /// The whole CSR DER as given.
    pub der: &'a [u8],
    /// The exact CertificationRequestInfo TLV: the bytes the signature covers.
    pub info: &'a [u8],
    /// The subject Name TLV.
    pub subject_raw: &'a [u8],
    /// The subject attributes in order.
    pub subject: Vec<NameAttr<'a>>,
    /// The subject public key.
    pub spki: Spki<'a>,
    /// The `[0]` attributes TLV, if present.
    pub attributes: Option<&'a [u8]>,
    /// signatureAlgorithm OID content bytes.
    pub sig_alg_oid: &'a [u8],
    /// signatureAlgorithm parameters (`NULL` from nRF91 modems, absent per RFC 5758).
    pub sig_alg_params: Option<Tlv<'a>>,
    /// The signature BIT STRING contents (DER ECDSA-Sig-Value for EC).
    pub signature: &'a [u8],
}

fn alg_id(t: Tlv<'_>) -> Result<(&[u8], Option<Tlv<'_>>), DerError> {
    let mut a = t.children();
    let oid = a.expect(tag::OID)?;
    let params = if a.is_empty() { None } else { Some(a.read()?) };
    a.finish()?;
    Ok((oid.value, params))
}

fn parse_name(t: Tlv<'_>) -> Result<Vec<NameAttr<'_>>, DerError> {
    let mut out = Vec::new();
    let mut rdns = t.children();
    while !rdns.is_empty() {
        let set = rdns.expect(tag::SET)?;
        let mut atvs = set.children();
        if atvs.is_empty() {
            return Err(DerError::Invalid("empty RDN in subject"));
        }
        while !atvs.is_empty() {
            let atv = atvs.expect(tag::SEQUENCE)?;
            let mut f = atv.children();
            let oid = f.expect(tag::OID)?;
            let value = f.read()?;
            f.finish()?;
            if out.len() >= MAX_SUBJECT_ATTRS {
                return Err(DerError::Invalid("too many subject attributes"));
            }
            out.push(NameAttr {
                oid: oid.value,
                tag: value.tag,
                value: value.value,
            });
        }
    }
    Ok(out)
}

/// Parse a Name (SEQUENCE OF RDN) into its attributes (for certificates in `inspect`).
pub fn parse_name_der(name: &[u8]) -> Result<Vec<NameAttr<'_>>, DerError> {
    let t = tlv::parse_one(name)?;
    if t.tag != tag::SEQUENCE {
        return Err(DerError::UnexpectedTag {
            wanted: tag::SEQUENCE,
            found: t.tag,
        });
    }
    parse_name(t)
}

/// A Name in DER as RFC 4514 text ([`parse_name_der`] then [`name_to_string`]): the one
/// renderer for subjects and issuers of CSRs and certificates.
pub fn name_der_to_string(name: &[u8]) -> Result<String, DerError> {
    parse_name_der(name).map(|a| name_to_string(&a))
}

/// Render attributes as an RFC 4514 string (`CN=x,O=y,C=z`, most specific first, values
/// escaped), the form `ca show` and `--subject` use.
pub fn name_to_string(attrs: &[NameAttr<'_>]) -> String {
    // RFC 4514: the last RDN (most specific) first, as `ca show` prints names.
    attrs
        .iter()
        .rev()
        .map(|a| {
            let v = match a.text() {
                Some(t) => rfc4514_escape(t),
                None => format!("#{}", hex::encode(a.value)),
            };
            format!("{}={}", a.name(), v)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Escape an attribute value as RFC 4514 §2.4 asks.
fn rfc4514_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

impl<'a> Csr<'a> {
    /// Parse a DER CSR. Structure only: the key type and signature are judged by the caller.
    pub fn parse(input: &'a [u8]) -> Result<Self, DerError> {
        let outer = tlv::parse_one(input)?;
        if outer.tag != tag::SEQUENCE {
            return Err(DerError::UnexpectedTag {
                wanted: tag::SEQUENCE,
                found: outer.tag,
            });
        }
        let mut r = outer.children();
        let info = r.expect(tag::SEQUENCE)?;
        let sig_alg = r.expect(tag::SEQUENCE)?;
        let sig = r.expect(tag::BIT_STRING)?;
        r.finish()?;

        let mut i = info.children();
        let version = i.expect(tag::INTEGER)?;
        if version.value != [0] {
            return Err(DerError::Invalid("CSR version is not 0 (v1)"));
        }
        let subject = i.expect(tag::SEQUENCE)?;
        let spki = i.expect(tag::SEQUENCE)?;
        let attributes = i.optional(tag::CONTEXT_0)?;
        i.finish()?;
        if let Some(a) = attributes {
            // SET OF Attribute: each a SEQUENCE { OID, SET }.
            let mut ar = a.children();
            while !ar.is_empty() {
                let attr = ar.expect(tag::SEQUENCE)?;
                let mut f = attr.children();
                f.expect(tag::OID)?;
                f.expect(tag::SET)?;
                f.finish()?;
            }
        }
        let (sig_alg_oid, sig_alg_params) = alg_id(sig_alg)?;
        Ok(Csr {
            der: input,
            info: info.raw,
            subject_raw: subject.raw,
            subject: parse_name(subject)?,
            spki: Spki::from_tlv(spki)?,
            attributes: attributes.map(|a| a.raw),
            sig_alg_oid,
            sig_alg_params,
            signature: tlv::bit_string_bytes(&sig)?,
        })
    }

    /// Whether the signature algorithm carries an explicit NULL (the nRF91 quirk).
    pub fn null_param(&self) -> bool {
        matches!(self.sig_alg_params, Some(t) if t.tag == tag::NULL && t.value.is_empty())
    }

    /// Whether the signature algorithm is ecdsa-with-SHA256 with no parameters or NULL.
    pub fn is_ecdsa_sha256(&self) -> bool {
        self.sig_alg_oid == oid::ECDSA_WITH_SHA256.as_bytes()
            && (self.sig_alg_params.is_none() || self.null_param())
    }

    /// Every commonName value (text), in order; a non-text CN yields None in its place.
    pub fn common_names(&self) -> Vec<Option<&'a str>> {
        self.subject
            .iter()
            .filter(|a| a.oid == oid::CN.as_bytes())
            .map(|a| {
                // Copy out so the lifetime is the input's, not the Vec's.
                let a: NameAttr<'a> = *a;
                match a.tag {
                    tag::UTF8_STRING
                    | tag::PRINTABLE_STRING
                    | tag::IA5_STRING
                    | tag::T61_STRING => std::str::from_utf8(a.value).ok(),
                    _ => None,
                }
            })
            .collect()
    }

    /// The requested extensions (from the extensionRequest attribute): `(oid, critical,
    /// value)`. Lenient: anything unreadable is skipped (requested extensions are ignored
    /// when issuing; this is for display).
    pub fn requested_extensions(&self) -> Vec<(&'a [u8], bool, &'a [u8])> {
        let mut out = Vec::new();
        let Some(attrs) = self.attributes else {
            return out;
        };
        let Ok(a) = tlv::parse_one(attrs) else {
            return out;
        };
        let mut ar = a.children();
        while let Ok(attr) = ar.read() {
            let mut f = attr.children();
            let (Ok(oid), Ok(set)) = (f.read(), f.read()) else {
                continue;
            };
            if oid.value != oid::EXTENSION_REQUEST.as_bytes() {
                continue;
            }
            let mut sr = set.children();
            while let Ok(exts) = sr.read() {
                let mut er = exts.children();
                while let Ok(ext) = er.read() {
                    let mut x = ext.children();
                    let Ok(eoid) = x.expect(tag::OID) else {
                        continue;
                    };
                    let crit = match x.optional(tag::BOOLEAN) {
                        Ok(Some(b)) => b.value == [0xff],
                        _ => false,
                    };
                    if let Ok(v) = x.expect(tag::OCTET_STRING) {
                        out.push((eoid.value, crit, v.value));
                    }
                }
            }
        }
        out
    }
}

/// Short names of the subject attributes we know.
pub fn attr_short_name(oid: &[u8]) -> Option<&'static str> {
    oid::lookup(oid::ATTRIBUTES, oid)
}

/// Readable name of an algorithm / curve OID.
pub fn oid_name(oid: &[u8]) -> String {
    oid::lookup(oid::ALGORITHMS, oid)
        .map(str::to_string)
        .or_else(|| tlv::oid_string(oid))
        .unwrap_or_else(|| format!("OID {}", hex::encode(oid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_CSR: &str = "3082010b3081af020100302f312d302b06035504030c2435303530333034312d333533392d343765622d383037622d3130326462623432336239613059301306072a8648ce3d020106082a8648ce3d03010703420004612a4b62ff71157d2132ee80f26aaaa3d9c4e695f9a1b8c75c30e1fdc64217de891d3c816b019d2c239c6de96758e7a2324128fc09ee52c46ccc294b8fe6e783a01e301c06092a864886f70d01090e310f300d300b0603551d0f0404030203e8300c06082a8648ce3d04030205000349003046022100dc065c230abad4cecf463740d38cfceb71665bb9af6e06f7941ed85346e2d7a40221008c6ea76cf67c5dab45cbeb5431cae2948198cf73a65adbed4e50f0955f3f6b9e";

    #[test]
    fn x509_cert_reads_the_same_csr() {
        // x509-cert is the cross-check of this reader (kept for speed on the hot path, see
        // the module doc): the same info bytes, subject, key and NULL parameter.
        use der::{Decode, Encode, Tagged};
        let der_bytes = hex::decode(SEED_CSR).unwrap();
        let ours = Csr::parse(&der_bytes).unwrap();
        let theirs = x509_cert::request::CertReq::from_der(&der_bytes).unwrap();
        assert_eq!(theirs.info.to_der().unwrap(), ours.info);
        assert_eq!(theirs.info.subject.to_der().unwrap(), ours.subject_raw);
        assert_eq!(theirs.info.public_key.to_der().unwrap(), ours.spki.raw);
        assert_eq!(theirs.algorithm.oid.as_bytes(), ours.sig_alg_oid);
        assert!(ours.null_param());
        assert_eq!(
            theirs.algorithm.parameters.map(|p| p.tag()),
            Some(der::Tag::Null)
        );
        assert_eq!(theirs.signature.raw_bytes(), ours.signature);
    }

    #[test]
    fn seed_csr_parses_and_verifies() {
        let der_bytes = hex::decode(SEED_CSR).unwrap();
        let c = Csr::parse(&der_bytes).unwrap();
        assert!(c.null_param());
        assert!(c.is_ecdsa_sha256());
        assert_eq!(
            c.common_names(),
            vec![Some("50503041-3539-47eb-807b-102dbb423b9a")]
        );
        let pt = c.spki.p256_point().unwrap();
        assert!(crate::crypto::verify_p256_sha256(&pt, c.info, c.signature));
        assert_eq!(c.info.len(), 0xaf + 3);
        let exts = c.requested_extensions();
        assert_eq!(
            exts,
            vec![(oid::KEY_USAGE.as_bytes(), false, &[3u8, 2, 3, 0xe8][..])]
        );
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(rfc4514_escape("plain text"), "plain text");
        assert_eq!(
            rfc4514_escape("a,b+c\"d\\e<f>g;h"),
            "a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h"
        );
        assert_eq!(rfc4514_escape("#lead"), "\\#lead");
        assert_eq!(rfc4514_escape("mid#"), "mid#");
        assert_eq!(rfc4514_escape(" pad "), "\\ pad\\ ");
        assert_eq!(rfc4514_escape("nul\0"), "nul\\00");
        assert_eq!(rfc4514_escape(""), "");
        assert_eq!(rfc4514_escape(" "), "\\ ");
    }

    #[test]
    fn truncated_seed_never_parses() {
        let der_bytes = hex::decode(SEED_CSR).unwrap();
        for cut in 0..der_bytes.len() {
            assert!(Csr::parse(&der_bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn mutated_seed_never_panics(pos in 0usize..271, byte in proptest::num::u8::ANY) {
            let mut d = hex::decode(SEED_CSR).unwrap();
            if let Some(b) = d.get_mut(pos) { *b = byte; }
            if let Ok(c) = Csr::parse(&d) {
                let _ = c.spki.p256_point();
                let _ = c.requested_extensions();
                let _ = c.common_names();
                let _ = name_to_string(&c.subject);
            }
        }
    }
}
