//! Small pure helpers shared by several modules: PEM block scanning, IMEI / Luhn, UUID text,
//! terminal-safe text.

use std::borrow::Cow;

/// One PEM block found in a text: its label and base64 body (whitespace removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label between `BEGIN ` and `-----`, e.g. `CERTIFICATE`.
    pub label: String,
    /// The base64 body with line breaks removed.
    pub body: String,
}

impl PemBlock {
    /// Decode the body (standard base64).
    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        crate::crypto::b64_decode(&self.body)
    }
}

/// The DER of the first `CERTIFICATE` block of `text`, if any decodes.
pub fn first_cert_der(text: &str) -> Option<Vec<u8>> {
    pem_blocks(text)
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")?
        .decode()
        .ok()
}

/// Upper bound on the number of PEM blocks [`pem_blocks`] returns.
pub const MAX_PEM_BLOCKS: usize = 1024;

/// A PEM block `label` of `der`, as nrfca writes every PEM: LF line ends, 64-column base64
/// and a final LF (the bytes `cert_sha256` and the bundle digests are taken over), written by
/// `pem-rfc7468`. `label` is one of nrfca's own constants (`CERTIFICATE`, …), all valid
/// RFC 7468 labels; the test `pem_encode_layout` pins the bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    if der.is_empty() {
        // pem-rfc7468 writes an empty body line here; nrfca always wrote none.
        return format!("-----BEGIN {label}-----\n-----END {label}-----\n");
    }
    // An invalid label (never one of nrfca's) gives an empty string, not a panic.
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

/// Every `-----BEGIN X-----` … `-----END X-----` block of `text`, in order.
///
/// Hand-written on purpose: `pem-rfc7468` decodes one strictly formed block (64-column
/// lines, nothing around it), while nrfca reads files people assemble — several blocks with
/// explanatory text or OpenSSL "Bag Attributes" between them, other line widths, CRLF (the
/// test `pem_blocks_scan` has each case). Lines outside blocks are ignored (OpenSSL's "Bag Attributes", comments); an unterminated block or a
/// block whose END label differs is dropped; headers (`Proc-Type:`) make a block's body
/// invalid base64, which `PemBlock::decode` reports. Never panics.
pub fn pem_blocks(text: &str) -> Vec<PemBlock> {
    let mut out = Vec::new();
    let mut current: Option<PemBlock> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some(PemBlock {
                label: label.to_string(),
                body: String::new(),
            });
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some(b) = current.take() {
                if b.label == label {
                    out.push(b);
                    if out.len() >= MAX_PEM_BLOCKS {
                        return out;
                    }
                }
            }
        } else if let Some(b) = current.as_mut() {
            b.body.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    out
}

/// Luhn check digit (0–9) for a string of ASCII digits (the IMEI's first 14 digits).
/// Returns None if `digits` contains anything but ASCII digits.
pub fn luhn_digit(digits: &str) -> Option<u8> {
    let mut sum = 0u32;
    // Double every second digit counting from the right of the payload.
    for (i, c) in digits.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some(((10 - (sum % 10)) % 10) as u8)
}

/// Whether `s` looks like an IMEI: exactly 15 ASCII digits (the Luhn digit is not required:
/// test and development modems do not always carry a valid one).
pub fn is_imei(s: &str) -> bool {
    s.len() == 15 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is an IMEI with a correct Luhn check digit.
pub fn is_imei_luhn(s: &str) -> bool {
    is_imei(s)
        && match (s.get(..14).and_then(luhn_digit), s.as_bytes().get(14)) {
            (Some(d), Some(last)) => *last == b'0' + d,
            _ => false,
        }
}

/// A UUID as lowercase 8-4-4-4-12 text (how the modem writes it in the CSR CN).
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let h = hex::encode(uuid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse a UUID written as 32 hex digits with or without the four hyphens (any case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    let compact: String = if s.len() == 36 {
        let b = s.as_bytes();
        if [8usize, 13, 18, 23]
            .iter()
            .any(|&i| b.get(i) != Some(&b'-'))
        {
            return None;
        }
        s.chars().filter(|&c| c != '-').collect()
    } else {
        s.to_string()
    };
    if compact.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(&compact, &mut out).ok()?;
    Some(out)
}

/// Text safe to show on a terminal (SPEC §3: nothing from a request reaches a terminal
/// unchecked): every control character (C0, DEL, C1 — ESC, BEL, CR, LF, TAB included) and the
/// Unicode bidi overrides/isolates become visible escapes (`\x1b`, `\r`, `\u{202e}`). A
/// backslash stays as it is (RFC 4514 names use it), so a literal `\x1b` in the text reads the
/// same as an escaped ESC: harmless, it is only text. Text without any of these is borrowed.
pub fn term_escape(s: &str) -> Cow<'_, str> {
    fn needs(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    }
    // Fast path (hex, UUIDs, times, details): printable ASCII needs nothing.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The operator name recorded in the CA audit log and the bench journal (one rule for
/// both): `flag` (`--operator`), else `$USER`, else `$LOGNAME`, else the login name of the
/// process's real user id from `/etc/passwd` (a root shell under `sudo -i` or tmux often has
/// no `$USER`), else `unknown`. Blank values count as not given.
pub fn operator_name(flag: Option<&str>) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.trim().is_empty());
    flag.filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".to_string())
}

/// The user name of the real user id, from the password database (`/etc/passwd`).
fn login_name() -> Option<String> {
    // Read /etc/passwd instead of calling getpwuid, so no unsafe code is needed. Not the
    // owner of /proc/self: once a command that unlocks the key made the process
    // non-dumpable, /proc/self belongs to root.
    let uid = nix::unistd::getuid().as_raw();
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let id: u32 = f.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The real modem output of the seed tutorial (nRF9160, mfw 1.3.x), for unit tests: the string
/// between the quotes of `tests/data/seed-keygen-reply.txt`, the one copy in the repository.
#[cfg(test)]
pub(crate) const SEED_KEYGEN_FOR_TESTS: &str = {
    let reply = include_str!("../tests/data/seed-keygen-reply.txt").as_bytes();
    // `%KEYGEN: "` … `"\n`
    let (_, rest) = reply.split_at(10);
    let (inner, _) = rest.split_at(rest.len() - 2);
    match std::str::from_utf8(inner) {
        Ok(s) => s,
        Err(_) => panic!("seed fixture is not UTF-8"),
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known() {
        // 49015420323751 8 is the classic IMEI example.
        assert_eq!(luhn_digit("49015420323751"), Some(8));
        assert!(is_imei_luhn("490154203237518"));
        assert!(!is_imei_luhn("490154203237519"));
        assert!(is_imei("355025930000000"));
        assert!(!is_imei("35502593000000"));
        assert!(!is_imei("35502593000000x"));
        assert_eq!(luhn_digit("12a"), None);
    }

    #[test]
    fn uuid_text_round_trip() {
        let u = [
            0x50, 0x50, 0x30, 0x41, 0x35, 0x39, 0x47, 0xeb, 0x80, 0x7b, 0x10, 0x2d, 0xbb, 0x42,
            0x3b, 0x9a,
        ];
        let s = uuid_string(&u);
        assert_eq!(s, "50503041-3539-47eb-807b-102dbb423b9a");
        assert_eq!(parse_uuid(&s), Some(u));
        assert_eq!(parse_uuid(&s.to_uppercase()), Some(u));
        assert_eq!(parse_uuid(&s.replace('-', "")), Some(u));
        assert_eq!(parse_uuid("50503041-3539-47eb-807b-102dbb423b9"), None);
        assert_eq!(parse_uuid("5050304113539-47eb-807b-102dbb423b9a"), None);
        assert_eq!(parse_uuid("é"), None);
    }

    #[test]
    fn pem_blocks_scan() {
        let t = "junk\n-----BEGIN A-----\nQUJD\nREVG\n-----END A-----\n-----BEGIN B-----\nx\n-----END C-----\n-----BEGIN D-----\nRA==\n";
        let b = pem_blocks(t);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].label, "A");
        assert_eq!(b[0].decode().unwrap(), b"ABCDEF");
        // What pem-rfc7468 refuses and nrfca must read: text and Bag Attributes around two
        // blocks, CRLF, a 76-column body.
        let der: Vec<u8> = (0..=255u8).collect();
        let wide = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&der)
        };
        let wide: Vec<&str> = wide
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let t = format!(
            "Bag Attributes\r\n    localKeyID: 01\r\n{}subject=CN=x\r\n-----BEGIN CERTIFICATE-----\r\n{}\r\n-----END CERTIFICATE-----\r\n",
            pem_encode("CERTIFICATE", b"first"),
            wide.join("\r\n")
        );
        assert!(pem_rfc7468::decode_vec(t.as_bytes()).is_err());
        let b = pem_blocks(&t);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].decode().unwrap(), b"first");
        assert_eq!(b[1].decode().unwrap(), der);
    }

    #[test]
    fn pem_encode_layout() {
        use base64::Engine as _;
        // The layout cert_sha256 is taken over: LF, 64 columns, final LF, nothing else.
        for n in [0usize, 1, 2, 3, 47, 48, 49, 95, 96, 97, 300, 1000] {
            let der: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            let mut want = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                want.push_str(std::str::from_utf8(line).unwrap());
                want.push('\n');
            }
            want.push_str("-----END CERTIFICATE-----\n");
            assert_eq!(pem_encode("CERTIFICATE", &der), want, "{n} bytes");
        }
        assert_eq!(pem_encode("not\na label", b"x"), "");
        assert_eq!(pem_encode("X", b""), "-----BEGIN X-----\n-----END X-----\n");
    }

    #[test]
    fn term_escape_neutralises_controls() {
        assert!(matches!(term_escape("plain text é"), Cow::Borrowed(_)));
        assert_eq!(term_escape("a\x1b]0;owned\x07b"), "a\\x1b]0;owned\\x07b");
        assert_eq!(term_escape("x\ry\nz\t"), "x\\ry\\nz\\t");
        assert_eq!(term_escape("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(term_escape("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
        assert!(matches!(term_escape("CN=a\\, b"), Cow::Borrowed(_)));
        for s in ["\x1b[2J", "\u{7f}", "\r\n", "\u{85}"] {
            assert!(!term_escape(s).chars().any(|c| c.is_control()), "{s:?}");
        }
    }
}
