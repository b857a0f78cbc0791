//! Tests of the bundle writer and reader.

use super::read::{pem_cert_der, safe_relative};
use super::*;
use crate::crypto::P256Key;
use std::fs;

#[test]
fn oversized_manifest_and_signature_are_refused_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = std::fs::read("keys/nrf-cloud-coap-ca.pem").unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        vec![b' '; (MAX_MANIFEST + 1) as usize],
    )
    .unwrap();
    std::fs::write(dir.path().join("manifest.sig"), "AAAA").unwrap();
    match verify(dir.path(), &ca) {
        Err(BundleError::MalformedManifest(m)) => assert!(m.contains("manifest.json"), "{m}"),
        other => panic!("expected an oversized-manifest refusal, got {other:?}"),
    }
    std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
    std::fs::write(
        dir.path().join("manifest.sig"),
        vec![b'A'; (MAX_SIG + 1) as usize],
    )
    .unwrap();
    match verify(dir.path(), &ca) {
        Err(BundleError::MalformedManifest(m)) => assert!(m.contains("manifest.sig"), "{m}"),
        other => panic!("expected an oversized-signature refusal, got {other:?}"),
    }
}

#[test]
fn quoting_matches_python_minimal() {
    assert_eq!(csv_record(&["a", "b c", ""]), b"a,b c,\n");
    assert_eq!(
        csv_record(&["a,b", "x\"y", "l\nm", "r\rs"]),
        b"\"a,b\",\"x\"\"y\",\"l\nm\",\"r\rs\"\n"
    );
}

#[test]
fn parse_csv_round_trips() {
    let mut data = Vec::new();
    data.extend(csv_record(&["a,b", "x\"y", "l\nm", ""]));
    data.extend(csv_record(&["1", "2"]));
    let recs = parse_csv(std::str::from_utf8(&data).unwrap());
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].0, 1);
    assert_eq!(
        recs[0].1.as_ref().unwrap(),
        &vec!["a,b", "x\"y", "l\nm", ""]
    );
    assert_eq!(recs[1].0, 3);
    assert!(parse_csv("\"abc").pop().unwrap().1.is_err());
    assert!(parse_csv("a\"b").pop().unwrap().1.is_err());
}

#[test]
fn safe_names() {
    assert!(is_safe_file_stem("50503041-3539-47eb-807b-102dbb423b9a"));
    assert!(is_safe_file_stem("nrf-352656100000001"));
    assert!(!is_safe_file_stem("../x"));
    assert!(!is_safe_file_stem(".hidden"));
    assert!(!is_safe_file_stem("a/b"));
    assert!(safe_relative("certs/a_crt.pem"));
    assert!(!safe_relative("../a"));
    assert!(!safe_relative("/etc/passwd"));
    assert!(!safe_relative("a//b"));
}

fn self_signed_ca(key: &P256Key) -> String {
    // A CA certificate good enough for verify(): our own issue() with a self-issuer.
    use crate::signer::issue::*;
    let name = vec![
        0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'T', b'e',
        b's', b't',
    ];
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let prof = IssuerProfile {
        subject_der: name,
        ski: key_identifier(&key.public_key()).to_vec(),
        not_after: now + time::Duration::days(100),
    };
    let iss = Issuance {
        device_id: "Test".into(),
        public_key: key.public_key(),
        serial: Serial::random().unwrap(),
        not_before: now,
        not_after: now + time::Duration::days(10),
    };
    issue(&prof, &iss, |t| key.sign_der(t)).unwrap().pem
}

fn make_bundle(dir: &Path, key: &P256Key, ca_pem: &str, n: usize, pem_files: bool) -> Manifest {
    let opts = BundleOptions {
        pem_files,
        ..Default::default()
    };
    // As sign does: rejects first, then the certificate files.
    let mut r = RejectsWriter::create(dir).unwrap();
    r.add_reject("r.csv", 7, "", "bad-base64", "detail, with \"quotes\"")
        .unwrap();
    let mut w = r.into_bundle(ca_pem.as_bytes(), opts).unwrap();
    for i in 0..n {
        let pem = ca_pem.to_string();
        w.add_cert(
            &format!("dev-{i}"),
            &CertRow {
                device_uuid: format!("u{i}"),
                imei: String::new(),
                sec_tag: 16842753,
                serial: format!("{i:040x}"),
                not_before: "2025-01-01T00:00:00Z".into(),
                not_after: "2035-01-01T00:00:00Z".into(),
                sha256: crate::crypto::sha256_hex(pem.as_bytes()),
                certificate_pem: pem,
            },
        )
        .unwrap();
    }
    let ca_der = pem_cert_der(ca_pem.as_bytes()).unwrap();
    let m = Manifest {
        format: String::new(),
        batch: "b1".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        ca_sha256: crate::crypto::sha256_hex(&ca_der),
        inputs: vec![],
        files: vec![],
        counts: Counts {
            requests: n as u64 + 1,
            issued: n as u64,
            returned: 0,
            rejected: 1,
        },
    };
    w.finish(m, |b| key.sign_der(b)).unwrap().manifest
}

#[test]
fn chunks_only_above_1000() {
    let (key, _) = P256Key::generate().unwrap();
    let ca = self_signed_ca(&key);
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("b");
    let m = make_bundle(&d, &key, &ca, 1000, false);
    assert!(!d.join("onboard-0001.csv").exists());
    assert_eq!(m.files.len(), 4);
    let d2 = t.path().join("b2");
    let m = make_bundle(&d2, &key, &ca, 2001, true);
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"onboard-0003.csv") && !names.contains(&"onboard-0004.csv"));
    let all = fs::read(d2.join("onboard.csv")).unwrap();
    let mut cat = Vec::new();
    for i in 1..=3 {
        cat.extend(fs::read(d2.join(format!("onboard-{i:04}.csv"))).unwrap());
    }
    assert_eq!(all, cat);
    let c3 = fs::read_to_string(d2.join("onboard-0003.csv")).unwrap();
    assert_eq!(c3.matches("BEGIN CERTIFICATE").count(), 1);
    let v = verify(&d2, ca.as_bytes()).unwrap();
    assert_eq!(v.certs.len(), 2001);
    assert_eq!(v.certs[5].device_uuid, "u5");
}

#[test]
fn verify_refuses_tampering() {
    let (key, _) = P256Key::generate().unwrap();
    let ca = self_signed_ca(&key);
    let t = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = t.path().join(name);
        make_bundle(&d, &key, &ca, 3, true);
        d
    };
    let d = fresh("ok");
    assert!(verify(&d, ca.as_bytes()).is_ok());

    let d = fresh("hash");
    fs::write(d.join("rejects.csv"), "x").unwrap();
    assert!(
        matches!(verify(&d, ca.as_bytes()), Err(BundleError::HashMismatch(n)) if n == "rejects.csv")
    );

    let d = fresh("extra");
    fs::write(d.join("certs/evil_crt.pem"), "x").unwrap();
    assert!(
        matches!(verify(&d, ca.as_bytes()), Err(BundleError::ExtraFile(n)) if n == "certs/evil_crt.pem")
    );

    let d = fresh("missing");
    fs::remove_file(d.join("onboard.csv")).unwrap();
    assert!(
        matches!(verify(&d, ca.as_bytes()), Err(BundleError::MissingFile(n)) if n == "onboard.csv")
    );

    let d = fresh("manifest");
    let mut m = fs::read(d.join("manifest.json")).unwrap();
    m[20] ^= 1;
    fs::write(d.join("manifest.json"), m).unwrap();
    assert!(matches!(
        verify(&d, ca.as_bytes()),
        Err(BundleError::BadSignature)
    ));

    let d = fresh("nosig");
    fs::remove_file(d.join("manifest.sig")).unwrap();
    assert!(matches!(
        verify(&d, ca.as_bytes()),
        Err(BundleError::MissingFile(_))
    ));

    // Signed by another CA that the bundle carries.
    let (other, _) = P256Key::generate().unwrap();
    let other_ca = self_signed_ca(&other);
    let d = t.path().join("other");
    make_bundle(&d, &other, &other_ca, 1, false);
    assert!(matches!(
        verify(&d, ca.as_bytes()),
        Err(BundleError::WrongSigner { .. })
    ));

    // A row whose sha256 column lies (re-signed so only the row check can catch it).
    let d = t.path().join("row");
    make_bundle(&d, &key, &ca, 1, false);
    let csv = fs::read_to_string(d.join("certs.csv")).unwrap();
    let bad = csv.replacen(",2035-01-01T00:00:00Z,", ",2035-01-01T00:00:00Z,00", 1);
    fs::write(d.join("certs.csv"), &bad).unwrap();
    let mut m: Manifest =
        serde_json::from_slice(&fs::read(d.join("manifest.json")).unwrap()).unwrap();
    for f in &mut m.files {
        if f.name == "certs.csv" {
            f.sha256 = crate::crypto::sha256_hex(bad.as_bytes());
        }
    }
    let json = serde_json::to_vec_pretty(&m).unwrap();
    fs::write(d.join("manifest.json"), &json).unwrap();
    fs::write(
        d.join("manifest.sig"),
        crate::crypto::b64_encode(&key.sign_der(&json).unwrap()),
    )
    .unwrap();
    assert!(matches!(
        verify(&d, ca.as_bytes()),
        Err(BundleError::MalformedRow { line: 2, .. })
    ));

    assert!(matches!(
        verify(&d, b"nope"),
        Err(BundleError::BadTrustedCa(_))
    ));
    assert!(matches!(
        BundleWriter::create(&d, ca.as_bytes(), BundleOptions::default()),
        Err(BundleError::Exists(_))
    ));
}

#[test]
fn csv_records_match_python() {
    // Python: csv.writer(f, lineterminator="\n").writerow([...]) gives these bytes (a CR
    // is quoted here as before; no cell nrfca writes holds one: safe_cell escapes it).
    let pem = "-----BEGIN CERTIFICATE-----\nAB\n-----END CERTIFICATE-----\n";
    assert_eq!(
        csv_record(&["plain", "a,b", "say \"hi\"", pem, "", " sp ", "#h"]),
        b"plain,\"a,b\",\"say \"\"hi\"\"\",\"-----BEGIN CERTIFICATE-----\nAB\n-----END CERTIFICATE-----\n\",, sp ,#h\n"
    );
    assert_eq!(csv_record(&["cr\r"]), b"\"cr\r\"\n");
    assert_eq!(csv_record(&[""]), b"\"\"\n");
}

#[test]
fn parse_csv_refuses_what_csv_accepts() {
    for bad in ["a\"b,c\n", "\"a\"b,c\n"] {
        assert!(parse_csv(bad)[0].1.is_err(), "{bad:?}");
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bad.as_bytes());
        assert!(
            r.records().all(|rec| rec.is_ok()),
            "csv crate now rejects {bad:?}"
        );
    }
}
