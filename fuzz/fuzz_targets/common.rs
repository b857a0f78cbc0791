//! Shared by the targets that need files: a throw-away CA (key + certificate) made once per
//! process, and safe handling of fuzzer-chosen file names.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nrfca::internal::crypto::P256Key;
use nrfca::internal::signer::issue::{self, Issuance, IssuerProfile, Serial};

/// A CA made once per process: its key, certificate PEM and DER.
pub struct TestCa {
    pub key: P256Key,
    pub pem: String,
    pub der: Vec<u8>,
}

/// `SEQUENCE { SET { SEQUENCE { CN, UTF8String "Fuzz CA" } } }`.
fn name() -> Vec<u8> {
    let cn = b"Fuzz CA";
    let mut v = vec![
        0x30, 16, 0x31, 14, 0x30, 12, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 7,
    ];
    v.extend_from_slice(cn);
    v
}

pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let (key, _) = P256Key::generate().expect("key");
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("time");
        let prof = IssuerProfile {
            subject_der: name(),
            ski: issue::key_identifier(&key.public_key()).to_vec(),
            not_after: now + time::Duration::days(100),
        };
        let iss = Issuance {
            device_id: "Fuzz CA".into(),
            public_key: key.public_key(),
            serial: Serial::random().expect("serial"),
            not_before: now,
            not_after: now + time::Duration::days(10),
        };
        let c = issue::issue(&prof, &iss, |t| key.sign_der(t)).expect("issue");
        TestCa {
            key,
            pem: c.pem,
            der: c.der,
        }
    })
}

/// A bundle-relative name the target may create: short, relative, no `.`/`..`, ≤ 4 levels.
pub fn safe_name(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.len() > 100 || name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 4
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(parts.iter().collect())
}

/// Write `content` at `dir/rel`, creating parent directories; false if that failed.
pub fn write_at(dir: &Path, rel: &Path, content: &[u8]) -> bool {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        if std::fs::create_dir_all(parent).is_err() {
            return false;
        }
    }
    std::fs::write(&p, content).is_ok()
}
