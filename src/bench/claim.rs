//! `bench export --claim-tokens FILE`: the attestation-token CSV that nRF Cloud's claiming
//! tools read, written byte for byte as `nrfcloud-utils`' `gather_attestation_tokens` writes
//! it: no header, one row `<imei>,<uuid>,<token>,<UTC time, Python isoformat>` + LF per device.
//! The rows hold no character that needs CSV quoting (IMEI digits, a UUID, a base64url token
//! with one `.`), which is why Nordic's writer formats them by hand.

use std::io::Write;
use std::path::Path;

/// One row, LF-terminated, as Nordic's `save_attestation_csv` formats it.
pub fn token_row(imei: &str, uuid: &str, token: &str, when: time::OffsetDateTime) -> String {
    format!("{imei},{uuid},{token},{}\n", python_isoformat(when))
}

/// `datetime.now(timezone.utc).isoformat()`: `2026-12-05T00:33:04.123456+00:00`, the
/// fraction left out when the microseconds are 0.
pub fn python_isoformat(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.microsecond() != 0 {
        s.push_str(&format!(".{:06}", t.microsecond()));
    }
    s.push_str("+00:00");
    s
}

/// Does the CSV text already hold a row for `uuid` (second column, as Nordic's tool checks)?
pub fn has_uuid(text: &str, uuid: &str) -> bool {
    text.lines().any(|l| {
        l.split(',')
            .nth(1)
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
    })
}

/// A token fit for the file: printable ASCII without a comma, quote or line break.
pub fn token_ok(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',' && b != b'"')
}

/// Append `row` for `uuid` unless the file already has one (a re-run finishes only what is
/// unfinished); flushed and fsync'd. True if written.
pub fn append_once(path: &Path, uuid: &str, row: &str) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if has_uuid(&text, uuid) {
        return Ok(false);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(row.as_bytes())?;
    f.flush()?;
    f.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_like_python() {
        let t = time::macros::datetime!(2026-12-05 00:33:04.123456 UTC);
        assert_eq!(python_isoformat(t), "2026-12-05T00:33:04.123456+00:00");
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(python_isoformat(t), "2026-01-02T03:04:05+00:00");
        let t = time::macros::datetime!(2026-01-02 03:04:05.000007 +02:00);
        assert_eq!(python_isoformat(t), "2026-01-02T01:04:05.000007+00:00");
    }

    #[test]
    fn rows_and_duplicates() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.5 UTC);
        let row = token_row(
            "352656100000001",
            "50503041-3539-47eb-807b-102dbb423b9a",
            "a.b",
            t,
        );
        assert_eq!(
            row,
            "352656100000001,50503041-3539-47eb-807b-102dbb423b9a,a.b,2026-01-02T03:04:05.500000+00:00\n"
        );
        assert!(has_uuid(&row, "50503041-3539-47EB-807B-102DBB423B9A"));
        assert!(!has_uuid(&row, "352656100000001"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        assert!(append_once(&p, "50503041-3539-47eb-807b-102dbb423b9a", &row).unwrap());
        assert!(!append_once(&p, "50503041-3539-47eb-807b-102dbb423b9a", &row).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), row);
        for (t, ok) in [
            ("a.b", true),
            ("", false),
            ("a,b", false),
            ("a\nb", false),
            ("a\"b", false),
        ] {
            assert_eq!(token_ok(t), ok, "{t:?}");
        }
    }
}
