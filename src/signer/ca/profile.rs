//! The CA subject as `--subject` spells it (RFC 4514 style, most specific first) and the
//! attributes nrfca accepts in it.

use super::CaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    C,
    St,
    L,
    O,
    Ou,
    Cn,
}

impl Attr {
    fn parse(key: &str) -> Option<Attr> {
        Some(match key.to_ascii_uppercase().as_str() {
            "C" => Attr::C,
            "ST" => Attr::St,
            "L" => Attr::L,
            "O" => Attr::O,
            "OU" => Attr::Ou,
            "CN" => Attr::Cn,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Attr::C => "C",
            Attr::St => "ST",
            Attr::L => "L",
            Attr::O => "O",
            Attr::Ou => "OU",
            Attr::Cn => "CN",
        }
    }
    /// X.520 upper bounds.
    fn max_len(self) -> usize {
        match self {
            Attr::C => 2,
            Attr::St | Attr::L => 128,
            Attr::O | Attr::Ou | Attr::Cn => 64,
        }
    }
    pub(crate) fn dn_type(self) -> rcgen::DnType {
        match self {
            Attr::C => rcgen::DnType::CountryName,
            Attr::St => rcgen::DnType::StateOrProvinceName,
            Attr::L => rcgen::DnType::LocalityName,
            Attr::O => rcgen::DnType::OrganizationName,
            Attr::Ou => rcgen::DnType::OrganizationalUnitName,
            Attr::Cn => rcgen::DnType::CommonName,
        }
    }
}

/// Parse `--subject` (RFC 4514 style) into (attribute, value) pairs in string order.
pub(crate) fn parse_subject(s: &str) -> Result<Vec<(Attr, String)>, CaError> {
    let bad = |m: String| CaError::BadSubject(m);
    if s.trim().is_empty() {
        return Err(bad("it is empty".into()));
    }
    if s.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes".into()));
    }
    // Split on unescaped commas, resolving backslash escapes.
    let mut parts: Vec<(String, Vec<bool>)> = vec![(String::new(), Vec::new())];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    if let Some(last) = parts.last_mut() {
                        last.0.push(n);
                        last.1.push(true);
                    }
                }
                None => return Err(bad("it ends with a lone backslash".into())),
            },
            ',' => parts.push((String::new(), Vec::new())),
            '+' => {
                return Err(bad(
                    "multi-valued RDNs (`+`) are not supported; escape a literal plus as \\+"
                        .into(),
                ))
            }
            c if c.is_control() => return Err(bad("it contains a control character".into())),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.0.push(c);
                    last.1.push(false);
                }
            }
        }
    }
    let mut out: Vec<(Attr, String)> = Vec::new();
    for (text, escaped) in parts {
        // Find the first unescaped '='.
        let chars: Vec<char> = text.chars().collect();
        let Some(eq) = chars
            .iter()
            .zip(escaped.iter())
            .position(|(c, e)| *c == '=' && !*e)
        else {
            return Err(bad(format!("`{text}` is not of the form KEY=value")));
        };
        let key: String = chars.get(..eq).unwrap_or_default().iter().collect();
        let value: String = chars.get(eq + 1..).unwrap_or_default().iter().collect();
        let key = key.trim();
        let value = value.trim().to_string();
        let attr = Attr::parse(key).ok_or_else(|| {
            bad(format!(
                "unknown attribute `{key}` (use CN, O, OU, L, ST or C)"
            ))
        })?;
        if value.is_empty() {
            return Err(bad(format!(
                "{} is empty; leave it out instead",
                attr.name()
            )));
        }
        if value.chars().count() > attr.max_len() {
            return Err(bad(format!(
                "{} is longer than {} characters",
                attr.name(),
                attr.max_len()
            )));
        }
        if attr == Attr::C && !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(bad(format!(
                "C must be a two-letter country code in capitals (e.g. NO), not `{value}`"
            )));
        }
        if out.iter().any(|(a, _)| *a == attr) {
            return Err(bad(format!("{} is given twice", attr.name())));
        }
        out.push((attr, value));
    }
    Ok(out)
}
