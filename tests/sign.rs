//! `nrfca sign` end to end: the device profile (openssl + pkilint), the bundle, every reject
//! code, re-runs, --reissue, --dry-run, and crash safety under SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;

use der::{Decode, Encode};
use nrfca::crypto::P256Key;
use nrfca::signer::issue::{self, Issuance, IssuerProfile, Serial};
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------
// helpers (own copy; test helper files are not shared between areas)

fn venv() -> PathBuf {
    PathBuf::from(std::env::var("NRFCA_VENV").unwrap_or_else(|_| "/work/venv".into()))
}

fn require_tools() -> bool {
    std::env::var("NRFCA_REQUIRE_TOOLS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// Path to an external tool, or None (with a note) when it is missing and not required.
fn tool(name: &str) -> Option<PathBuf> {
    let candidates = [venv().join("bin").join(name), PathBuf::from(name)];
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if ok {
            return Some(c);
        }
    }
    if require_tools() {
        panic!("required tool {name} not found (NRFCA_REQUIRE_TOOLS=1)");
    }
    eprintln!("note: {name} not found; skipping that check");
    None
}

fn openssl() -> Option<PathBuf> {
    let ok = Command::new("openssl").arg("version").output().is_ok();
    if ok {
        Some(PathBuf::from("openssl"))
    } else if require_tools() {
        panic!("openssl not found (NRFCA_REQUIRE_TOOLS=1)");
    } else {
        eprintln!("note: openssl not found; skipping that check");
        None
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl verify -CAfile ca -purpose sslclient cert` and both pkilint lints, no findings.
fn oracle_check_cert(dir: &Path, ca_pem: &Path, dev_pem: &Path) {
    if let Some(o) = openssl() {
        let out = run_ok(
            Command::new(o)
                .args(["verify", "-CAfile"])
                .arg(ca_pem)
                .args(["-purpose", "sslclient"])
                .arg(dev_pem),
        );
        assert!(out.contains(": OK"), "{out}");
    }
    if let Some(l) = tool("lint_pkix_cert") {
        for p in [ca_pem, dev_pem] {
            run_ok(
                Command::new(&l)
                    .args(["lint", "-s", "WARNING"])
                    .arg(p)
                    .current_dir(dir),
            );
        }
    }
    if let Some(l) = tool("lint_pkix_signer_signee_cert_chain") {
        run_ok(
            Command::new(l)
                .args(["lint", "-s", "WARNING"])
                .arg(ca_pem)
                .arg(dev_pem)
                .current_dir(dir),
        );
    }
}

/// A CA made by openssl (P-256, the SPEC §4 CA profile), returned as issuer profile + key.
fn openssl_ca(dir: &Path) -> Option<(IssuerProfile, P256Key, PathBuf)> {
    let o = openssl()?;
    let key = dir.join("ca.key");
    let pem = dir.join("ca.pem");
    run_ok(
        Command::new(&o)
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key),
    );
    run_ok(
        Command::new(&o)
            .args(["req", "-x509", "-new", "-key"])
            .arg(&key)
            .args([
                "-sha256",
                "-days",
                "7300",
                "-subj",
                "/O=Example IoT/CN=Example IoT Root CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                "-addext",
                "subjectKeyIdentifier=hash",
                "-out",
            ])
            .arg(&pem),
    );
    let pkcs8 = nrfca::crypto::pkcs8_from_pem_any(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let ca_key = P256Key::from_pkcs8(&pkcs8).unwrap();
    let profile = profile_from_pem(&std::fs::read(&pem).unwrap());
    Some((profile, ca_key, pem))
}

fn profile_from_pem(pem: &[u8]) -> IssuerProfile {
    use der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(pem).unwrap();
    let tbs = &cert.tbs_certificate;
    let ski = tbs
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.14")
        .unwrap();
    let ski = der::asn1::OctetString::from_der(ski.extn_value.as_bytes()).unwrap();
    let na = tbs.validity.not_after.to_unix_duration().as_secs();
    IssuerProfile {
        subject_der: tbs.subject.to_der().unwrap(),
        ski: ski.as_bytes().to_vec(),
        not_after: OffsetDateTime::from_unix_timestamp(na as i64).unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// issue.rs: the device profile against external oracles

#[test]
fn device_profile_passes_openssl_and_pkilint() {
    let dir = tempfile::tempdir().unwrap();
    let Some((profile, ca_key, ca_pem)) = openssl_ca(dir.path()) else {
        return;
    };
    let (dev, _) = P256Key::generate().unwrap();
    let nb = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    for (i, id) in [
        "50503041-3539-47eb-807b-102dbb423b9a",
        "nrf-352656100000001",
    ]
    .iter()
    .enumerate()
    {
        let iss = Issuance {
            device_id: id.to_string(),
            public_key: dev.public_key(),
            serial: Serial::random().unwrap(),
            not_before: nb,
            not_after: nb + time::Duration::days(3650),
        };
        let c = issue::issue(&profile, &iss, |t| ca_key.sign_der(t)).unwrap();
        let cert = x509_cert::Certificate::from_der(&c.der).unwrap();
        assert_eq!(cert.tbs_certificate.subject.to_string(), format!("CN={id}"));
        let tbs = cert.tbs_certificate.to_der().unwrap();
        assert!(nrfca::crypto::verify_p256_sha256(
            &ca_key.public_key(),
            &tbs,
            cert.signature.raw_bytes()
        ));
        let p = dir.path().join(format!("dev{i}.pem"));
        std::fs::write(&p, &c.pem).unwrap();
        oracle_check_cert(dir.path(), &ca_pem, &p);
    }
}
