//! What import trusts before any modem is touched: the trusted CA (`--trust`, kept outside
//! the bundle), the bundle directory itself, and the root CA bundle written as type 0.

use crate::bench::at;
use crate::bench::worker::BenchError;
use crate::bundle;
use crate::util::first_cert_der;
use std::path::{Path, PathBuf};

/// Amazon Root CA 1 (nRF Cloud MQTT/HTTPS), as shipped in `keys/`.
pub const AMAZON_ROOT_CA1: &str = include_str!("../../../keys/AmazonRootCA1.pem");
/// nRF Cloud CoAP CA, as shipped in `keys/`.
pub const NRF_CLOUD_COAP_CA: &str = include_str!("../../../keys/nrf-cloud-coap-ca.pem");

/// The default root CA bundle written as type 0: Amazon Root CA 1 then the nRF Cloud CoAP CA,
/// LF line ends.
pub fn default_root_bundle() -> String {
    let mut s = at::normalize_pem(AMAZON_ROOT_CA1);
    s.push_str(&at::normalize_pem(NRF_CLOUD_COAP_CA));
    s
}

/// A certificate authority the bench trusts: what is needed to check a device certificate.
#[derive(Debug, Clone)]
pub(super) struct TrustedCa {
    pub(super) subject_der: Vec<u8>,
    pub(super) public_key: Vec<u8>,
    /// SHA-256 of the CA certificate DER (lowercase hex): what a device is pinned to.
    pub(super) sha256: String,
}

pub(super) fn read_file(path: &Path, what: &str) -> Result<String, BenchError> {
    let meta = std::fs::metadata(path).map_err(|e| BenchError::File {
        path: path.to_path_buf(),
        detail: format!("cannot read the {what}: {e}"),
    })?;
    if meta.len() > 1 << 20 {
        return Err(BenchError::File {
            path: path.to_path_buf(),
            detail: format!("the {what} is larger than 1 MiB; is this the right file?"),
        });
    }
    std::fs::read_to_string(path).map_err(|e| BenchError::File {
        path: path.to_path_buf(),
        detail: format!("cannot read the {what}: {e}"),
    })
}

pub(super) fn parse_cert_der(der: &[u8]) -> Result<x509_cert::Certificate, String> {
    use der::Decode;
    x509_cert::Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))
}

pub(super) fn trusted_ca(pem: &str, path: &Path) -> Result<TrustedCa, BenchError> {
    use der::Encode;
    let bad = |detail: String| BenchError::File {
        path: path.to_path_buf(),
        detail,
    };
    let der = first_cert_der(pem).ok_or_else(|| {
        bad("no CERTIFICATE in the --trust file; pass the signer's ca.pem".into())
    })?;
    let cert = parse_cert_der(&der).map_err(bad)?;
    let subject_der = cert
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let public_key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| bad("the CA public key is malformed".into()))?;
    Ok(TrustedCa {
        subject_der,
        public_key,
        sha256: crate::crypto::sha256_hex(&der),
    })
}

/// Device → intermediate → root: when `--trust` is the root of the bundle's CA,
/// [`bundle::verify`] checked the intermediate in `chain.pem` against it; the device
/// certificates are then checked against that intermediate. Otherwise the trusted CA itself.
pub(super) fn issuing_ca(
    trusted: TrustedCa,
    verified: &bundle::VerifiedBundle,
    path: &Path,
) -> Result<TrustedCa, BenchError> {
    match &verified.via_chain {
        None => Ok(trusted),
        Some(pem) => trusted_ca(pem, path),
    }
}

/// `--trust` must not come from the bundle it is to check: whoever can write the bundle could
/// then put their own CA beside their own certificates. Refused when the trust file, with
/// symlinks resolved, lies inside the bundle directory, or is a hard link to a file in it.
/// `--bundle` must be a directory holding a `manifest.json`: say so before the bundle's own
/// checks report a missing file, which reads as a damaged bundle.
pub(super) fn check_bundle_dir(dir: &Path) -> Result<(), BenchError> {
    let usage = |why: &str| {
        Err(BenchError::Usage(format!(
            "--bundle {}: {why}; refused before touching any modem: give the bundle directory \
             `nrfca sign --out` wrote, copied whole from the signer",
            dir.display()
        )))
    };
    match std::fs::metadata(dir) {
        Err(_) => usage("no such directory"),
        Ok(m) if !m.is_dir() => usage("not a directory"),
        Ok(_) if !dir.join("manifest.json").exists() && !dir.join("manifest.sig").exists() => {
            usage("not a bundle (it has no manifest.json)")
        }
        Ok(_) => Ok(()),
    }
}

pub(super) fn trust_outside_bundle(trust: &Path, bundle_dir: &Path) -> Result<(), BenchError> {
    // A bundle or trust file that does not resolve is reported by the checks that read it.
    let (Ok(t), Ok(b)) = (
        std::fs::canonicalize(trust),
        std::fs::canonicalize(bundle_dir),
    ) else {
        return Ok(());
    };
    let inside = || {
        BenchError::Usage(format!(
            "--trust {} is inside the bundle {}: a bundle cannot vouch for itself (whoever \
             wrote it could have put their own CA there). Pass the signer's ca.pem as the bench \
             received it separately (checked against the fingerprint the officer wrote down), \
             from outside the bundle directory",
            trust.display(),
            bundle_dir.display()
        ))
    };
    if t.starts_with(&b) {
        return Err(inside());
    }
    // The same file under another name (hard link): compare device and inode with the
    // bundle's files (its top level and one level of sub-directories, e.g. certs/).
    use std::os::unix::fs::MetadataExt;
    let Ok(tm) = std::fs::metadata(&t) else {
        return Ok(());
    };
    if tm.nlink() < 2 {
        return Ok(());
    }
    let same = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.dev() == tm.dev() && m.ino() == tm.ino())
    };
    for e in std::fs::read_dir(&b).into_iter().flatten().flatten() {
        let p = e.path();
        if same(&p) {
            return Err(inside());
        }
        if e.file_type().is_ok_and(|ft| ft.is_dir()) {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if same(&e.path()) {
                    return Err(inside());
                }
            }
        }
    }
    Ok(())
}

/// Root CA bundle from files (each must hold at least one parseable certificate).
pub(super) fn root_bundle(files: &[PathBuf]) -> Result<String, BenchError> {
    if files.is_empty() {
        return Ok(default_root_bundle());
    }
    let mut out = String::new();
    for f in files {
        let text = read_file(f, "root CA file")?;
        let blocks = crate::util::pem_blocks(&text);
        let certs: Vec<_> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
        if certs.is_empty() || blocks.len() != certs.len() {
            return Err(BenchError::File {
                path: f.clone(),
                detail: "a --root-ca file must hold only PEM certificates".into(),
            });
        }
        for b in certs {
            let der = b.decode().map_err(|e| BenchError::File {
                path: f.clone(),
                detail: format!("bad base64 in a certificate: {e}"),
            })?;
            parse_cert_der(&der).map_err(|detail| BenchError::File {
                path: f.clone(),
                detail,
            })?;
        }
        out.push_str(&at::normalize_pem(&text));
    }
    // Refuse early what the modem could not take (quotes, > 4095-byte command).
    at::cmng_write_command(2_147_483_647, 0, &out).map_err(|e| BenchError::File {
        path: files.first().cloned().unwrap_or_default(),
        detail: format!("the root CA bundle cannot be written to a modem: {e}"),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_bundle_fits_and_parses() {
        let b = default_root_bundle();
        assert!(b.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(crate::util::pem_blocks(&b).len(), 2);
        assert!(!b.contains('\r'));
        let cmd = at::cmng_write_command(16842753, 0, &b).unwrap();
        assert!(cmd.len() <= at::MAX_COMMAND);
        assert!(root_bundle(&[]).is_ok());
    }
}
