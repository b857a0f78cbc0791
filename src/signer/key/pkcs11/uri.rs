//! The RFC 7512 URI that names the CA key in `ca.key.pkcs11`: format and parse (no I/O).

use super::Pkcs11Error;
use std::path::PathBuf;

/// The RFC 7512 reference to the CA's private key, with the module path as the
/// `module-path` query attribute: one line in `ca.key.pkcs11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUri {
    /// Token label (`token=`).
    pub token: Option<String>,
    /// Token serial (`serial=`).
    pub serial: Option<String>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
    /// CKA_ID (`id=`).
    pub id: Vec<u8>,
    /// CKA_LABEL (`object=`).
    pub object: Option<String>,
    /// The PKCS#11 module (`?module-path=`).
    pub module_path: Option<PathBuf>,
}

/// Characters left as they are in URI attribute values (RFC 3986 unreserved, plus the
/// characters RFC 7512's `pk11-pchar`/`pk11-qchar` allow that are harmless in both).
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'@' | b':')
}

fn pct(value: &[u8], all: bool) -> String {
    let mut s = String::with_capacity(value.len() * 3);
    for &b in value {
        if !all && keep(b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn unpct(v: &str) -> Result<Vec<u8>, Pkcs11Error> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Pkcs11Error::BadUri(format!("bad percent escape in `{v}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

fn unpct_text(v: &str) -> Result<String, Pkcs11Error> {
    String::from_utf8(unpct(v)?).map_err(|_| Pkcs11Error::BadUri(format!("`{v}` is not UTF-8")))
}

impl KeyUri {
    /// `pkcs11:token=…;serial=…;id=%..;object=…;type=private?module-path=…` (the id always
    /// percent-encoded byte by byte, other values where needed).
    pub fn format(&self) -> String {
        let text = |k: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| format!("{k}={}", pct(v.as_bytes(), false)))
        };
        let parts: Vec<String> = [
            text("token", &self.token),
            text("manufacturer", &self.manufacturer),
            text("model", &self.model),
            text("serial", &self.serial),
            Some(format!("id={}", pct(&self.id, true))),
            text("object", &self.object),
            Some("type=private".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut s = format!("pkcs11:{}", parts.join(";"));
        if let Some(m) = &self.module_path {
            s.push_str("?module-path=");
            s.push_str(&pct(m.as_os_str().as_encoded_bytes(), false));
        }
        s
    }

    /// Parse a URI as written by [`KeyUri::format`] (or by other RFC 7512 tools). Needs an
    /// `id`; `type`, if present, must be `private`; a PIN in the URI (`pin-value`,
    /// `pin-source`) is refused; other attributes are ignored.
    pub fn parse(uri: &str) -> Result<Self, Pkcs11Error> {
        let uri = uri.trim();
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Pkcs11Error::BadUri("it does not start with `pkcs11:`".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut k = KeyUri {
            token: None,
            serial: None,
            manufacturer: None,
            model: None,
            id: Vec::new(),
            object: None,
            module_path: None,
        };
        let mut have_id = false;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Pkcs11Error::BadUri(format!("`{attr}` has no `=`")))?;
            match name {
                "token" => k.token = Some(unpct_text(value)?),
                "serial" => k.serial = Some(unpct_text(value)?),
                "manufacturer" => k.manufacturer = Some(unpct_text(value)?),
                "model" => k.model = Some(unpct_text(value)?),
                "object" => k.object = Some(unpct_text(value)?),
                "id" => {
                    k.id = unpct(value)?;
                    have_id = true;
                }
                "type" if value != "private" => {
                    return Err(Pkcs11Error::BadUri(format!(
                        "type={value}: the URI must name the private key"
                    )))
                }
                _ => {}
            }
        }
        for attr in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            match name {
                "module-path" => {
                    let bytes = unpct(value)?;
                    k.module_path =
                        Some(PathBuf::from(String::from_utf8(bytes).map_err(|_| {
                            Pkcs11Error::BadUri("module-path is not UTF-8".into())
                        })?));
                }
                "pin-value" | "pin-source" => return Err(Pkcs11Error::BadUri(
                    "a PIN in the URI is not accepted; give it with --pin-file or NRFCA_PKCS11_PIN"
                        .into(),
                )),
                _ => {}
            }
        }
        if !have_id || k.id.is_empty() {
            return Err(Pkcs11Error::BadUri("it has no `id=` of the key".into()));
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips_with_escaping() {
        let k = KeyUri {
            token: Some("CA token; #1 ?%".into()),
            serial: Some("a1b2c3".into()),
            manufacturer: None,
            model: None,
            id: vec![0x00, 0xab, 0x7f],
            object: Some("nrfca CA/2026".into()),
            module_path: Some(PathBuf::from("/opt/my hsm/lib;x.so")),
        };
        let s = k.format();
        assert_eq!(
            s,
            "pkcs11:token=CA%20token%3B%20%231%20%3F%25;serial=a1b2c3;id=%00%AB%7F;object=nrfca%20CA/2026;type=private?module-path=/opt/my%20hsm/lib%3Bx.so"
        );
        assert_eq!(KeyUri::parse(&s).unwrap(), k);
        // Lowercase escapes and unknown attributes from other tools are fine.
        let other =
            KeyUri::parse("pkcs11:token=t;id=%0a;library-version=1?module-path=/m.so&x=y").unwrap();
        assert_eq!(other.id, vec![0x0a]);
        assert_eq!(other.module_path, Some(PathBuf::from("/m.so")));
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for bad in [
            "pkcs12:id=%01",
            "pkcs11:token=t",
            "pkcs11:id=%zz",
            "pkcs11:id=%0",
            "pkcs11:id=%01;type=public",
            "pkcs11:id=%01?pin-value=1234",
            "pkcs11:id",
        ] {
            let e = KeyUri::parse(bad).unwrap_err();
            assert_eq!(e.code(), "pkcs11-bad-uri", "{bad}");
        }
    }
}
