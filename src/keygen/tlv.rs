//! A minimal DER walker and writer: borrowed TLVs with their exact byte ranges, no copies,
//! no re-encoding. Only definite lengths of at most 4 length bytes; single-byte tags only
//! (high tag numbers are refused), which is all PKCS#10 and X.509 need.
//!
//! Kept beside the `der` crate for the modem's CSR only (`keygen::csr`: zero-copy on the
//! per-request hot path, and the NULL-quirk bytes the simulator writes; the measurement is
//! in that module's doc). Certificates are read with `x509-cert` (`inspect`).

/// Deepest nesting [`Tlv::children`] walkers are expected to follow; callers walking
/// recursively must stop there.
pub const MAX_DEPTH: usize = 32;

/// Why DER bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// Input ended inside a tag, length or value.
    #[error("DER ends in the middle of an element")]
    Truncated,
    /// Indefinite length (BER), over-long length field or high-tag-number form.
    #[error("unsupported DER: {0}")]
    Unsupported(&'static str),
    /// An element with another tag than the one required.
    #[error("expected DER tag 0x{wanted:02x}, found 0x{found:02x}")]
    UnexpectedTag {
        /// Expected tag byte.
        wanted: u8,
        /// Found tag byte.
        found: u8,
    },
    /// Bytes left over where the structure should have ended.
    #[error("{0} unexpected bytes after a DER element")]
    TrailingBytes(usize),
    /// A value that is not what its type requires.
    #[error("invalid DER: {0}")]
    Invalid(&'static str),
}

/// DER tag bytes used here.
pub mod tag {
    /// BOOLEAN
    pub const BOOLEAN: u8 = 0x01;
    /// INTEGER
    pub const INTEGER: u8 = 0x02;
    /// BIT STRING
    pub const BIT_STRING: u8 = 0x03;
    /// OCTET STRING
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER
    pub const OID: u8 = 0x06;
    /// UTF8String
    pub const UTF8_STRING: u8 = 0x0c;
    /// PrintableString
    pub const PRINTABLE_STRING: u8 = 0x13;
    /// TeletexString (T61String)
    pub const T61_STRING: u8 = 0x14;
    /// IA5String
    pub const IA5_STRING: u8 = 0x16;
    /// UTCTime
    pub const UTC_TIME: u8 = 0x17;
    /// GeneralizedTime
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// BMPString
    pub const BMP_STRING: u8 = 0x1e;
    /// SEQUENCE (constructed)
    pub const SEQUENCE: u8 = 0x30;
    /// SET (constructed)
    pub const SET: u8 = 0x31;
    /// \[0\] constructed
    pub const CONTEXT_0: u8 = 0xa0;
    /// \[3\] constructed
    pub const CONTEXT_3: u8 = 0xa3;
}

/// One element: its tag, its value bytes and the whole encoding (tag + length + value),
/// all borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag byte.
    pub tag: u8,
    /// Value bytes.
    pub value: &'a [u8],
    /// The complete encoding, byte-exact.
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// A reader over this element's value (for constructed types).
    pub fn children(&self) -> Reader<'a> {
        Reader::new(self.value)
    }
}

/// A cursor over a sequence of DER elements.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read elements from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether everything is consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Offset of the cursor within the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fail unless everything is consumed.
    pub fn finish(&self) -> Result<(), DerError> {
        match self.buf.len().saturating_sub(self.pos) {
            0 => Ok(()),
            n => Err(DerError::TrailingBytes(n)),
        }
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Read the next element.
    pub fn read(&mut self) -> Result<Tlv<'a>, DerError> {
        let start = self.pos;
        let rest = self.buf.get(start..).ok_or(DerError::Truncated)?;
        let (&t, after_tag) = rest.split_first().ok_or(DerError::Truncated)?;
        if t & 0x1f == 0x1f {
            return Err(DerError::Unsupported("high tag number"));
        }
        let (&l0, mut after_len) = after_tag.split_first().ok_or(DerError::Truncated)?;
        let len = if l0 < 0x80 {
            usize::from(l0)
        } else if l0 == 0x80 {
            return Err(DerError::Unsupported("indefinite length"));
        } else {
            let n = usize::from(l0 & 0x7f);
            if n > 4 {
                return Err(DerError::Unsupported("length field over 4 bytes"));
            }
            let lb = after_len.get(..n).ok_or(DerError::Truncated)?;
            let mut len = 0usize;
            for &b in lb {
                len = (len << 8) | usize::from(b);
            }
            after_len = after_len.get(n..).ok_or(DerError::Truncated)?;
            len
        };
        let value = after_len.get(..len).ok_or(DerError::Truncated)?;
        let header = rest.len() - after_len.len();
        let total = header + len;
        let raw = rest.get(..total).ok_or(DerError::Truncated)?;
        self.pos = start + total;
        Ok(Tlv { tag: t, value, raw })
    }

    /// Read the next element and require its tag.
    pub fn expect(&mut self, wanted: u8) -> Result<Tlv<'a>, DerError> {
        let t = self.read()?;
        if t.tag != wanted {
            return Err(DerError::UnexpectedTag {
                wanted,
                found: t.tag,
            });
        }
        Ok(t)
    }

    /// Read the next element if it has tag `t`.
    pub fn optional(&mut self, t: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(t) {
            self.read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Parse exactly one element filling all of `buf`.
pub fn parse_one(buf: &[u8]) -> Result<Tlv<'_>, DerError> {
    let mut r = Reader::new(buf);
    let t = r.read()?;
    r.finish()?;
    Ok(t)
}

/// The content bytes of a BIT STRING with zero unused bits.
pub fn bit_string_bytes<'a>(t: &Tlv<'a>) -> Result<&'a [u8], DerError> {
    match t.value.split_first() {
        Some((0, rest)) => Ok(rest),
        Some(_) => Err(DerError::Invalid("BIT STRING with unused bits")),
        None => Err(DerError::Invalid("empty BIT STRING")),
    }
}

/// Dotted text of an OBJECT IDENTIFIER's content bytes (e.g. `1.2.840.10045.2.1`); None if
/// malformed or an arc is over 64 bits.
pub fn oid_string(content: &[u8]) -> Option<String> {
    use std::fmt::Write as _;
    if content.is_empty() || content.len() > 64 {
        return None;
    }
    let mut out = String::new();
    let mut acc: u64 = 0;
    let mut first = true;
    let mut in_arc = false;
    for &b in content {
        if !in_arc && b == 0x80 {
            return None; // non-minimal
        }
        acc = acc.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        in_arc = b & 0x80 != 0;
        if !in_arc {
            if first {
                let (a, b2) = if acc < 40 {
                    (0, acc)
                } else if acc < 80 {
                    (1, acc - 40)
                } else {
                    (2, acc - 80)
                };
                let _ = write!(out, "{a}.{b2}");
                first = false;
            } else {
                let _ = write!(out, ".{acc}");
            }
            acc = 0;
        }
    }
    if in_arc {
        return None;
    }
    Some(out)
}

/// Append a TLV with `tag` and `value` (definite, minimal length) to `out`.
pub fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0x81, n as u8]);
    } else if n <= 0xffff {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    } else if n <= 0xff_ffff {
        out.extend_from_slice(&[0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    } else {
        out.extend_from_slice(&[
            0x84,
            (n >> 24) as u8,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ]);
    }
    out.extend_from_slice(value);
}

/// A TLV as a new vector.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    write_tlv(&mut out, tag, value);
    out
}

/// A constructed element (SEQUENCE, SET, \[n\]) over already-encoded children.
pub fn cons(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    let inner: Vec<u8> = children.concat();
    tlv(tag, &inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_with_exact_ranges() {
        let inner = tlv(tag::INTEGER, &[5]);
        let seq = cons(tag::SEQUENCE, &[&inner, &tlv(tag::NULL, &[])]);
        let t = parse_one(&seq).unwrap();
        assert_eq!(t.raw, &seq[..]);
        let mut c = t.children();
        let i = c.expect(tag::INTEGER).unwrap();
        assert_eq!(i.raw, &inner[..]);
        assert_eq!(i.value, &[5]);
        assert!(c.optional(tag::OID).unwrap().is_none());
        c.expect(tag::NULL).unwrap();
        c.finish().unwrap();
    }

    #[test]
    fn long_lengths() {
        for n in [127usize, 128, 255, 256, 70000] {
            let v = vec![0xabu8; n];
            let t = tlv(tag::OCTET_STRING, &v);
            let p = parse_one(&t).unwrap();
            assert_eq!(p.value.len(), n);
            assert_eq!(p.raw.len(), t.len());
        }
    }

    #[test]
    fn hostile() {
        // Claimed 4 GiB.
        assert_eq!(
            parse_one(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(DerError::Truncated)
        );
        // 8-byte length field.
        assert!(matches!(
            parse_one(&[0x30, 0x88, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(DerError::Unsupported(_))
        ));
        assert!(matches!(
            parse_one(&[0x30, 0x80, 0, 0]),
            Err(DerError::Unsupported(_))
        ));
        assert!(matches!(
            parse_one(&[0x1f, 0x01, 0]),
            Err(DerError::Unsupported(_))
        ));
        assert_eq!(parse_one(&[]), Err(DerError::Truncated));
        assert_eq!(parse_one(&[0x30]), Err(DerError::Truncated));
        assert_eq!(parse_one(&[0x30, 0x82, 0x01]), Err(DerError::Truncated));
        assert_eq!(
            parse_one(&[0x05, 0x00, 0x00]),
            Err(DerError::TrailingBytes(1))
        );
        let seq = cons(tag::SEQUENCE, &[&tlv(tag::INTEGER, &[1, 2, 3])]);
        for cut in 0..seq.len() {
            assert!(parse_one(&seq[..cut]).is_err());
        }
    }

    #[test]
    fn oids() {
        assert_eq!(
            oid_string(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]).as_deref(),
            Some("1.2.840.10045.2.1")
        );
        assert_eq!(oid_string(&[0x55, 0x04, 0x03]).as_deref(), Some("2.5.4.3"));
        assert_eq!(oid_string(&[0x2a, 0x86]), None);
        assert_eq!(oid_string(&[]), None);
        assert_eq!(oid_string(&[0xff; 20]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut r = Reader::new(&data);
            while let Ok(t) = r.read() {
                let _ = t.children().read();
                let _ = bit_string_bytes(&t);
                let _ = oid_string(t.value);
            }
        }
    }
}
