//! A tiny bounded CBOR (RFC 8949) reader and writer for the modem's COSE messages.
//!
//! Reader: definite lengths only, nesting depth ≤ [`MAX_DEPTH`], at most [`MAX_ITEMS`] items per
//! decode, every length checked against the bytes actually left before anything is sliced or
//! allocated. Byte and text strings borrow from the input. Writer: the few heads we emit.

/// Deepest nesting the reader follows (arrays, maps and tags each count one level).
pub const MAX_DEPTH: usize = 16;
/// Most data items one [`decode`] call will visit.
pub const MAX_ITEMS: usize = 4096;

/// Why CBOR bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ended inside an item.
    #[error("CBOR ends in the middle of an item")]
    Truncated,
    /// A claimed length is larger than the bytes left.
    #[error("CBOR length runs past the end of the data")]
    TooLong,
    /// Nesting deeper than [`MAX_DEPTH`] or more than `MAX_ITEMS` items.
    #[error("CBOR nested too deeply or has too many items")]
    TooDeep,
    /// Indefinite lengths, reserved additional info, or a break outside a container.
    #[error("unsupported CBOR: {0}")]
    Unsupported(&'static str),
    /// A text string is not UTF-8.
    #[error("CBOR text string is not UTF-8")]
    BadUtf8,
    /// Bytes left after the top-level item.
    #[error("{0} unexpected bytes after the CBOR item")]
    TrailingBytes(usize),
    /// An item has the wrong type for where it sits.
    #[error("expected CBOR {wanted}, found {found}")]
    Unexpected {
        /// What the caller wanted.
        wanted: &'static str,
        /// What was there.
        found: &'static str,
    },
}

/// A decoded CBOR data item borrowing strings from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Major type 0: unsigned integer.
    Uint(u64),
    /// Major type 1: the value is `-1 - n`, stored as that `n`.
    NegInt(u64),
    /// Major type 2.
    Bytes(&'a [u8]),
    /// Major type 3.
    Text(&'a str),
    /// Major type 4.
    Array(Vec<Value<'a>>),
    /// Major type 5, pairs in input order.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// Major type 6.
    Tag(u64, Box<Value<'a>>),
    /// `false` / `true`.
    Bool(bool),
    /// `null` (0xF6).
    Null,
    /// `undefined` (0xF7).
    Undefined,
    /// Another simple value.
    Simple(u8),
    /// A float (half, single or double), widened.
    Float(f64),
}

impl<'a> Value<'a> {
    /// The item's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Uint(_) => "unsigned integer",
            Value::NegInt(_) => "negative integer",
            Value::Bytes(_) => "byte string",
            Value::Text(_) => "text string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Tag(..) => "tag",
            Value::Bool(_) => "bool",
            Value::Null => "null",
            Value::Undefined => "undefined",
            Value::Simple(_) => "simple value",
            Value::Float(_) => "float",
        }
    }

    /// The integer value if this is a major type 0 or 1 that fits in i128.
    pub fn as_int(&self) -> Option<i128> {
        match *self {
            Value::Uint(n) => Some(i128::from(n)),
            Value::NegInt(n) => Some(-1 - i128::from(n)),
            _ => None,
        }
    }

    /// Diagnostic notation (RFC 8949 §8), bounded to about `max` characters.
    pub fn diag(&self, max: usize) -> String {
        let mut s = String::new();
        self.diag_into(&mut s, max);
        if s.len() > max {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s
    }

    fn diag_into(&self, s: &mut String, max: usize) {
        use std::fmt::Write as _;
        if s.len() > max {
            return;
        }
        match self {
            Value::Uint(n) => {
                let _ = write!(s, "{n}");
            }
            Value::NegInt(n) => {
                let _ = write!(s, "{}", -1 - i128::from(*n));
            }
            Value::Bytes(b) => {
                let _ = write!(s, "h'{}'", hex::encode(b));
            }
            Value::Text(t) => {
                let _ = write!(s, "{t:?}");
            }
            Value::Array(items) => {
                s.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    v.diag_into(s, max);
                }
                s.push(']');
            }
            Value::Map(pairs) => {
                s.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    k.diag_into(s, max);
                    s.push_str(": ");
                    v.diag_into(s, max);
                }
                s.push('}');
            }
            Value::Tag(t, v) => {
                let _ = write!(s, "{t}(");
                v.diag_into(s, max);
                s.push(')');
            }
            Value::Bool(b) => {
                let _ = write!(s, "{b}");
            }
            Value::Null => s.push_str("null"),
            Value::Undefined => s.push_str("undefined"),
            Value::Simple(n) => {
                let _ = write!(s, "simple({n})");
            }
            Value::Float(f) => {
                let _ = write!(s, "{f}");
            }
        }
    }
}

/// A cursor over CBOR bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    items: usize,
}

/// The initial byte of an item and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Major type 0–7.
    pub major: u8,
    /// Additional information (low 5 bits).
    pub info: u8,
    /// The argument (length, value, tag number or simple value); 0 for floats' raw bits
    /// beyond 64 never happen.
    pub arg: u64,
}

impl<'a> Reader<'a> {
    /// Start reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            items: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Whether all input is consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fail unless all input was consumed.
    pub fn finish(&self) -> Result<(), CborError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CborError::TrailingBytes(n)),
        }
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let n = usize::try_from(n).map_err(|_| CborError::TooLong)?;
        if n > self.remaining() {
            return Err(CborError::TooLong);
        }
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(CborError::TooLong)?;
        self.pos += n;
        Ok(s)
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Read one item head. Indefinite lengths (info 31) and reserved infos (28–30) fail.
    pub fn head(&mut self) -> Result<Head, CborError> {
        let ib = self.byte()?;
        let major = ib >> 5;
        let info = ib & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => {
                let b = self.take(2)?;
                u64::from(u16::from_be_bytes([b[0], b[1]]))
            }
            26 => {
                let b = self.take(4)?;
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_be_bytes(a)
            }
            28..=30 => return Err(CborError::Unsupported("reserved additional information")),
            _ => {
                return Err(if major == 7 {
                    CborError::Unsupported("break outside an indefinite-length item")
                } else {
                    CborError::Unsupported("indefinite-length item")
                })
            }
        };
        Ok(Head { major, info, arg })
    }

    fn count(&mut self) -> Result<(), CborError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(CborError::TooDeep);
        }
        Ok(())
    }

    /// Decode one complete item (with depth and item-count limits).
    pub fn value(&mut self) -> Result<Value<'a>, CborError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value<'a>, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        self.count()?;
        let h = self.head()?;
        Ok(match h.major {
            0 => Value::Uint(h.arg),
            1 => Value::NegInt(h.arg),
            2 => Value::Bytes(self.take(h.arg)?),
            3 => {
                let b = self.take(h.arg)?;
                Value::Text(std::str::from_utf8(b).map_err(|_| CborError::BadUtf8)?)
            }
            4 => {
                // Every item takes at least one byte: a claimed count above the bytes left
                // is a lie, refused before allocating.
                if h.arg > self.remaining() as u64 {
                    return Err(CborError::TooLong);
                }
                let mut v = Vec::with_capacity(h.arg as usize);
                for _ in 0..h.arg {
                    v.push(self.value_at(depth + 1)?);
                }
                Value::Array(v)
            }
            5 => {
                if h.arg.saturating_mul(2) > self.remaining() as u64 {
                    return Err(CborError::TooLong);
                }
                let mut v = Vec::with_capacity(h.arg as usize);
                for _ in 0..h.arg {
                    let k = self.value_at(depth + 1)?;
                    let val = self.value_at(depth + 1)?;
                    v.push((k, val));
                }
                Value::Map(v)
            }
            6 => Value::Tag(h.arg, Box::new(self.value_at(depth + 1)?)),
            _ => match h.info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                23 => Value::Undefined,
                24 => Value::Simple(h.arg as u8),
                25 => Value::Float(half_to_f64(h.arg as u16)),
                26 => Value::Float(f64::from(f32::from_bits(h.arg as u32))),
                27 => Value::Float(f64::from_bits(h.arg)),
                n => Value::Simple(n),
            },
        })
    }

    /// Read a byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let h = self.head()?;
        if h.major != 2 {
            return Err(unexpected("byte string", h));
        }
        self.take(h.arg)
    }

    /// Read an array head and return its length.
    pub fn array(&mut self) -> Result<u64, CborError> {
        let h = self.head()?;
        if h.major != 4 {
            return Err(unexpected("array", h));
        }
        Ok(h.arg)
    }

    /// Read an integer (major 0 or 1) as i128.
    pub fn int(&mut self) -> Result<i128, CborError> {
        let h = self.head()?;
        match h.major {
            0 => Ok(i128::from(h.arg)),
            1 => Ok(-1 - i128::from(h.arg)),
            _ => Err(unexpected("integer", h)),
        }
    }

    /// If the next item is tag `tag`, consume its head and return true.
    pub fn opt_tag(&mut self, tag: u64) -> Result<bool, CborError> {
        let save = self.pos;
        match self.peek() {
            Some(b) if b >> 5 == 6 => {
                let h = self.head()?;
                if h.arg == tag {
                    Ok(true)
                } else {
                    self.pos = save;
                    Ok(false)
                }
            }
            _ => Ok(false),
        }
    }
}

fn unexpected(wanted: &'static str, h: Head) -> CborError {
    let found = match h.major {
        0 => "unsigned integer",
        1 => "negative integer",
        2 => "byte string",
        3 => "text string",
        4 => "array",
        5 => "map",
        6 => "tag",
        _ => "simple value or float",
    };
    CborError::Unexpected { wanted, found }
}

fn half_to_f64(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1f;
    let mant = f64::from(h & 0x3ff);
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (mant + 1024.0) * 2f64.powi(i32::from(e) - 25),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// Decode exactly one item filling all of `buf`.
pub fn decode(buf: &[u8]) -> Result<Value<'_>, CborError> {
    let mut r = Reader::new(buf);
    let v = r.value()?;
    r.finish()?;
    Ok(v)
}

/// Append an item head (shortest form) to `out`.
pub fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.push(m | 24);
        out.push(arg as u8);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Append a byte string.
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Append a text string.
pub fn write_text(out: &mut Vec<u8>, t: &str) {
    write_head(out, 3, t.len() as u64);
    out.extend_from_slice(t.as_bytes());
}

/// Append an integer.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_head(out, 0, v as u64);
    } else {
        write_head(out, 1, (-1 - v) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_items() {
        let v = decode(&[0x83, 0x01, 0x20, 0x43, 1, 2, 3]).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Uint(1),
                Value::NegInt(0),
                Value::Bytes(&[1, 2, 3])
            ])
        );
        assert_eq!(
            decode(&[0xa1, 0x01, 0x26]).unwrap(),
            Value::Map(vec![(Value::Uint(1), Value::NegInt(6))])
        );
        assert_eq!(decode(&[0xf6]).unwrap(), Value::Null);
        assert_eq!(decode(&[0xf9, 0x3c, 0x00]).unwrap(), Value::Float(1.0));
        assert_eq!(
            decode(&[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap(),
            Value::Uint(1 << 32)
        );
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        // bstr claiming 2^64-1 bytes.
        assert_eq!(
            decode(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(CborError::TooLong)
        );
        // array claiming 4 billion items.
        assert_eq!(
            decode(&[0x9a, 0xff, 0xff, 0xff, 0xff]),
            Err(CborError::TooLong)
        );
        // map claiming 2^64-1 pairs.
        assert_eq!(
            decode(&[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(CborError::TooLong)
        );
        // text with bad utf-8.
        assert_eq!(decode(&[0x62, 0xff, 0xfe]), Err(CborError::BadUtf8));
    }

    #[test]
    fn truncation_at_every_boundary() {
        let full = [
            0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x04, 0x41, 0x21, 0x42, 0xd9, 0xd9, 0x58,
            0x02, 1, 2,
        ];
        assert!(decode(&full).is_ok());
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut more = full.to_vec();
        more.push(0);
        assert_eq!(decode(&more), Err(CborError::TrailingBytes(1)));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = vec![0x81u8; 10_000];
        deep.push(0);
        assert_eq!(decode(&deep), Err(CborError::TooDeep));
        let mut tags = vec![0xc6u8; 10_000];
        tags.push(0);
        assert_eq!(decode(&tags), Err(CborError::TooDeep));
        let mut ok = vec![0x81u8; MAX_DEPTH];
        ok.push(0);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn too_many_items_is_refused() {
        let mut buf = Vec::new();
        write_head(&mut buf, 4, 10_000);
        buf.extend(std::iter::repeat(0u8).take(10_000));
        assert_eq!(decode(&buf), Err(CborError::TooDeep));
    }

    #[test]
    fn indefinite_and_reserved_are_refused() {
        assert!(matches!(
            decode(&[0x9f, 0x01, 0xff]),
            Err(CborError::Unsupported(_))
        ));
        assert!(matches!(decode(&[0x1c]), Err(CborError::Unsupported(_))));
        assert!(matches!(decode(&[0xff]), Err(CborError::Unsupported(_))));
    }

    #[test]
    fn writer_round_trips() {
        for v in [
            0i64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            1 << 40,
            -1,
            -24,
            -25,
            -2147483648,
        ] {
            let mut b = Vec::new();
            write_int(&mut b, v);
            assert_eq!(decode(&b).unwrap().as_int(), Some(i128::from(v)), "{v}");
        }
        let mut b = Vec::new();
        write_text(&mut b, "Signature1");
        assert_eq!(b[0], 0x6a);
        assert_eq!(decode(&b).unwrap(), Value::Text("Signature1"));
    }

    #[test]
    fn diag_is_bounded() {
        let v = decode(&[0x82, 0x41, 0xab, 0x61, 0x61]).unwrap();
        assert_eq!(v.diag(100), "[h'ab', \"a\"]");
        assert!(v.diag(3).chars().count() <= 4);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&data);
            let mut r = Reader::new(&data);
            let _ = r.array();
            let _ = r.int();
            let _ = r.bytes();
        }
    }
}
