//! `nrfca sign` end to end: the device profile (openssl + pkilint), the bundle, every reject
//! code, re-runs, --reissue, --dry-run, and crash safety under SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;

use der::{Decode, Encode};
use nrfca::internal::crypto::P256Key;
use nrfca::internal::signer::issue::{self, Issuance, IssuerProfile, Serial};
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------
// helpers

mod common;
use common::{bin_plain, explain, openssl, require_tools, tool_missing, venv, AgeCa, TAG};

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
    tool_missing(&format!(
        "{name} not found in {} or on PATH",
        venv().join("bin").display()
    ));
    None
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
    common::openssl_p256_key(dir, "ca.key");
    run_ok(
        Command::new(o)
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
    let pkcs8 =
        nrfca::internal::crypto::pkcs8_from_pem_any(&std::fs::read_to_string(&key).unwrap())
            .unwrap();
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
        "nrf-352656100000002",
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
        assert!(nrfca::internal::crypto::verify_p256_sha256(
            &ca_key.public_key(),
            &tbs,
            cert.signature.raw_bytes()
        ));
        let p = dir.path().join(format!("dev{i}.pem"));
        std::fs::write(&p, &c.pem).unwrap();
        oracle_check_cert(dir.path(), &ca_pem, &p);
    }
}

// ---------------------------------------------------------------------------------------
// a CA, requests and the binary

use nrfca::sim::generate::{self, GenOptions, ModemIdentity, SubjectAttr};
use std::process::Output;

/// The CA the tests sign with (`common::AgeCa`).
fn test_ca() -> AgeCa {
    AgeCa::new("CN=nrfca Test Device CA,O=nrfca tests")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(o)))
}

fn modem_keygen(m: &ModemIdentity) -> String {
    m.keygen(TAG, &GenOptions::default()).unwrap().keygen
}

fn good_requests(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| modem_keygen(&ModemIdentity::random().unwrap()))
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// A requests CSV row (the SPEC header's column order).
fn csv_row(uuid: &str, imei: &str, sec_tag: &str, keygen: &str) -> String {
    format!("{uuid},{imei},{sec_tag},{keygen},mfw_nrf9160_1.3.7,nRF9160-SICA,bench-1,/dev/ttyACM0,2025-06-01T10:00:00Z")
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    nrfca::bundle::parse_csv(&text)
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect()
}

/// A KEYGEN string with `csr` as first half and a correct modem COSE over `digest_of`.
fn wrap(m: &ModemIdentity, csr: &[u8], digest_of: &[u8], msg_type: i64, sec_tag: u32) -> String {
    let payload = nrfca::internal::keygen::cose::keygen_payload(
        msg_type,
        &m.uuid(),
        sec_tag,
        &nrfca::internal::crypto::sha256(digest_of),
        &[7u8; 16],
    );
    let cose = generate::cose_sign1(m.identity_key(), &payload).unwrap();
    generate::encode(csr, &cose)
}

fn modem_csr(key: &P256Key, cn: &str) -> Vec<u8> {
    generate::build_csr(key, &[SubjectAttr::cn(cn)], true).unwrap()
}

/// The seed's real modem KEYGEN reply line (`%KEYGEN: "..."`), from `tests/data/`.
fn seed_keygen() -> String {
    common::SEED_REPLY.trim().to_string()
}

fn check_bundle_with_oracles(ca: &AgeCa, bundle: &Path, expect_certs: usize) {
    let ca_pem = std::fs::read(ca.dir.join("ca.pem")).unwrap();
    let v = nrfca::bundle::verify(bundle, &ca_pem).unwrap();
    assert_eq!(v.certs.len(), expect_certs);
    assert_eq!(std::fs::read(bundle.join("ca.pem")).unwrap(), ca_pem);
    // manifest.sig with openssl dgst
    if let Some(o) = openssl() {
        let pubkey = bundle.parent().unwrap().join("ca_pub.pem");
        run_ok(
            Command::new(o)
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(ca.dir.join("ca.pem"))
                .arg("-out")
                .arg(&pubkey),
        );
        let sig_b64 = std::fs::read_to_string(bundle.join("manifest.sig")).unwrap();
        let sig = nrfca::internal::crypto::b64_decode(sig_b64.trim()).unwrap();
        let sig_path = bundle.parent().unwrap().join("manifest.sig.der");
        std::fs::write(&sig_path, sig).unwrap();
        let out = run_ok(
            Command::new(o)
                .args(["dgst", "-sha256", "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(&sig_path)
                .arg(bundle.join("manifest.json")),
        );
        assert!(out.contains("Verified OK"), "{out}");
    }
    // each certificate: x509-cert re-parse, signature with the CA key, openssl + pkilint for
    // the first few (pkilint is slow)
    let ca_cert = {
        use der::DecodePem;
        x509_cert::Certificate::from_pem(&ca_pem).unwrap()
    };
    let ca_key = ca_cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    for (i, row) in v.certs.iter().enumerate() {
        use der::DecodePem;
        let c = x509_cert::Certificate::from_pem(row.certificate_pem.as_bytes()).unwrap();
        let tbs = c.tbs_certificate.to_der().unwrap();
        assert!(nrfca::internal::crypto::verify_p256_sha256(
            &ca_key,
            &tbs,
            c.signature.raw_bytes()
        ));
        assert_eq!(
            c.tbs_certificate.issuer.to_der().unwrap(),
            ca_cert.tbs_certificate.subject.to_der().unwrap()
        );
        assert_eq!(
            hex::encode(c.tbs_certificate.serial_number.as_bytes()),
            row.serial
        );
        if i < 2 {
            let p = bundle.parent().unwrap().join(format!("dev-check-{i}.pem"));
            std::fs::write(&p, &row.certificate_pem).unwrap();
            oracle_check_cert(bundle.parent().unwrap(), &ca.dir.join("ca.pem"), &p);
        }
    }
}

// ---------------------------------------------------------------------------------------
// the batch

/// Every reject code, each triggered by one crafted request inside an otherwise good batch;
/// the good requests (and the seed's real modem string) are issued.
#[test]
fn every_reject_code_in_one_batch_and_the_rest_issued() {
    let ca = test_ca();

    // Batch 1: modem A (to make already-issued and key-reuse-in-ca.db possible later).
    let a = ModemIdentity::random().unwrap();
    let a_gen = a.keygen(TAG, &GenOptions::default()).unwrap();
    let a_key = P256Key::from_pkcs8(&a_gen.private_key_pkcs8).unwrap();
    let first = ca.path("first.txt");
    write_lines(&first, std::slice::from_ref(&a_gen.keygen));
    let o = ca.sign("b1", &["--json"], &[&first]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(report(&o)["issued"], 1);

    // Batch 2, plain-text file: good ones, one per per-string code.
    let mut lines: Vec<String> = Vec::new();
    let mut expect: Vec<(u64, &str)> = Vec::new(); // (line, code)
    let mut push = |lines: &mut Vec<String>, s: String, c: Option<&'static str>| {
        lines.push(s);
        if let Some(c) = c {
            expect.push((lines.len() as u64, c));
        }
    };
    let good = good_requests(3);
    push(&mut lines, "# batch 2".into(), None);
    push(&mut lines, good[0].clone(), None);
    push(&mut lines, "x".repeat(17 * 1024), Some("malformed-input"));
    push(&mut lines, "abc$%.def".into(), Some("bad-base64"));
    let m = ModemIdentity::random().unwrap();
    let k = P256Key::generate().unwrap().0;
    let csr = modem_csr(&k, &m.uuid_string());
    push(
        &mut lines,
        nrfca::internal::crypto::b64url_encode(&csr),
        Some("missing-attestation"),
    );
    push(
        &mut lines,
        generate::encode(&csr, b"\xa1\x01\x02not cose"),
        Some("malformed-attestation"),
    );
    let pk_only = m
        .keygen(
            TAG,
            &GenOptions {
                response_content: 1,
                ..GenOptions::default()
            },
        )
        .unwrap()
        .keygen;
    push(&mut lines, pk_only, Some("wrong-message-type"));
    push(
        &mut lines,
        wrap(&m, b"not a csr", b"not a csr", 9, TAG),
        Some("malformed-csr"),
    );
    // unsupported-key: a point that is not on the curve
    let mut bad_point = csr.clone();
    let pk = k.public_key();
    let pos = bad_point.windows(65).position(|w| w == pk).unwrap();
    bad_point[pos + 64] ^= 0x01;
    push(
        &mut lines,
        wrap(&m, &bad_point, &bad_point, 9, TAG),
        Some("unsupported-key"),
    );
    // bad-csr-signature: last byte of the signature flipped
    let mut bad_sig = csr.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    push(
        &mut lines,
        wrap(&m, &bad_sig, &bad_sig, 9, TAG),
        Some("bad-csr-signature"),
    );
    push(
        &mut lines,
        wrap(&m, &csr, b"other bytes", 9, TAG),
        Some("digest-mismatch"),
    );
    let other_cn = m
        .keygen(
            TAG,
            &GenOptions {
                attributes: Some("CN=not-the-uuid".into()),
                ..GenOptions::default()
            },
        )
        .unwrap()
        .keygen;
    push(&mut lines, other_cn, Some("identity-mismatch"));
    push(
        &mut lines,
        m.keygen(42, &GenOptions::default()).unwrap().keygen,
        Some("sec-tag-mismatch"),
    );
    // duplicate-in-batch: modem D twice (the first wins)
    let d = ModemIdentity::random().unwrap();
    push(&mut lines, modem_keygen(&d), None);
    push(&mut lines, modem_keygen(&d), Some("duplicate-in-batch"));
    // already-issued: modem A again with a new key
    push(&mut lines, modem_keygen(&a), Some("already-issued"));
    // key-reuse with ca.db: modem B presents A's key
    let b = ModemIdentity::random().unwrap();
    let b_csr = modem_csr(&a_key, &b.uuid_string());
    push(
        &mut lines,
        wrap(&b, &b_csr, &b_csr, 9, TAG),
        Some("key-reuse"),
    );
    // key-reuse within the batch: modem C presents good[1]'s... use E then F with E's key
    let e = ModemIdentity::random().unwrap();
    let e_gen = e.keygen(TAG, &GenOptions::default()).unwrap();
    let e_key = P256Key::from_pkcs8(&e_gen.private_key_pkcs8).unwrap();
    push(&mut lines, e_gen.keygen.clone(), None);
    let f = ModemIdentity::random().unwrap();
    let f_csr = modem_csr(&e_key, &f.uuid_string());
    push(
        &mut lines,
        wrap(&f, &f_csr, &f_csr, 9, TAG),
        Some("key-reuse"),
    );
    push(&mut lines, seed_keygen(), None);
    push(&mut lines, "".into(), None);
    push(&mut lines, good[1].clone(), None);
    let txt = ca.path("batch2.txt");
    write_lines(&txt, &lines);

    // A CSV file in the same batch: metadata-mismatch, a short row, two good rows.
    let g = ModemIdentity::random().unwrap();
    let h = ModemIdentity::random().unwrap();
    let csv = ca.path("batch2.csv");
    let mut c = String::from(nrfca::requests::HEADER);
    c.push('\n');
    c.push_str(&csv_row(
        &g.uuid_string(),
        "352656100000002",
        "16842753",
        &modem_keygen(&g),
    ));
    c.push('\n');
    c.push_str(&csv_row(
        &ModemIdentity::random().unwrap().uuid_string(),
        "",
        "",
        &modem_keygen(&h),
    ));
    c.push('\n');
    c.push_str("only,three,columns\n");
    c.push_str(&csv_row(&h.uuid_string(), "", "16842753", &good[2]));
    c.push('\n');
    std::fs::write(&csv, c).unwrap();
    // good[2] is another modem's string under h's uuid column: metadata-mismatch
    let csv_expect = [
        (2u64, None),
        (3, Some("metadata-mismatch")),
        (4, Some("malformed-input")),
        (5, Some("metadata-mismatch")),
    ];

    let o = ca.sign("b2", &["--json"], &[&txt, &csv]);
    assert_eq!(code(&o), 1, "{}", explain(&o));
    let r = report(&o);
    let rejects = read_csv(&ca.path("b2").join("rejects.csv"));
    assert_eq!(rejects[0].join(","), "source,line,device_uuid,code,detail");
    let got: Vec<(String, u64, String)> = rejects[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap(), r[3].clone()))
        .collect();
    let mut want: Vec<(String, u64, String)> = expect
        .iter()
        .map(|(l, c)| (txt.display().to_string(), *l, c.to_string()))
        .collect();
    for (l, c) in csv_expect {
        if let Some(c) = c {
            want.push((csv.display().to_string(), l, c.to_string()));
        }
    }
    assert_eq!(got, want);
    // every code of src/reject.rs was produced (not-expected needs `--expect`: it is
    // tests/evidence_sign.rs's)
    for c in nrfca::reject::RejectCode::ALL
        .into_iter()
        .filter(|c| *c != nrfca::reject::RejectCode::NotExpected)
    {
        assert!(
            got.iter().any(|(_, _, g)| g == c.as_str()),
            "code {c} not triggered"
        );
    }
    let n_good = 2 + 2 + 1 + 1; // good[0], good[1], d, e, seed, g
    assert_eq!(r["issued"], n_good as u64, "{r}");
    assert_eq!(r["rejected"], want.len() as u64);
    assert_eq!(r["rejects_by_code"]["key-reuse"], 2);
    assert_eq!(
        ca.count("SELECT count(*) FROM certificates"),
        1 + n_good as i64
    );
    assert_eq!(ca.count("SELECT count(*) FROM rejects"), want.len() as i64);
    // the seed (a real nRF9160 string with the NULL-parameter CSR) was issued
    assert_eq!(
        ca.count(
            "SELECT count(*) FROM certificates WHERE uuid = '50503041-3539-47eb-807b-102dbb423b9a'"
        ),
        1
    );
    // IMEI from the CSV row is carried into certs.csv
    let certs = read_csv(&ca.path("b2").join("certs.csv"));
    assert!(certs
        .iter()
        .any(|r| r[0] == g.uuid_string() && r[1] == "352656100000002"));
    // the order of certs.csv is the input order
    let order: Vec<&str> = certs[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        order.first().copied(),
        Some(
            nrfca::keygen::check(&good[0], &Default::default())
                .unwrap()
                .uuid
                .as_str()
        )
    );
    assert_eq!(order.last().copied(), Some(g.uuid_string().as_str()));
    check_bundle_with_oracles(&ca, &ca.path("b2"), n_good);
    ca.audit_verify();
    // For docs/reject-codes.md examples.
    if let Ok(keep) = std::env::var("NRFCA_KEEP_REJECTS") {
        std::fs::copy(ca.path("b2").join("rejects.csv"), keep).unwrap();
    }
}

/// onboard.csv is byte-identical to what Python's csv.writer (Nordic's writer) makes for the
/// same rows; 2 500 requests give onboard-0001..0003; re-running the identical batch gives
/// back the same certificates and issues nothing new.
#[test]
fn onboard_csv_chunks_python_bytes_and_identical_rerun() {
    let ca = test_ca();
    let reqs = good_requests(2500);
    let input = ca.path("r.txt");
    write_lines(&input, &reqs);
    let tags = "line 1|a,b|q\"3";
    let o = ca.sign(
        "b1",
        &[
            "--json",
            "--tags",
            tags,
            "--sub-type",
            "nrf-9160",
            "--fw-types",
            "APP|MODEM|BOOT",
        ],
        &[&input],
    );
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let b1 = ca.path("b1");
    for i in 1..=3 {
        assert!(b1.join(format!("onboard-{i:04}.csv")).is_file());
    }
    assert!(!b1.join("onboard-0004.csv").exists());
    let onboard = std::fs::read(b1.join("onboard.csv")).unwrap();
    let mut cat = Vec::new();
    for i in 1..=3 {
        cat.extend(std::fs::read(b1.join(format!("onboard-{i:04}.csv"))).unwrap());
    }
    assert_eq!(onboard, cat);
    let chunk3 = read_csv(&b1.join("onboard-0003.csv"));
    assert_eq!(chunk3.len(), 500);

    // Python's csv.writer on the same rows (from certs.csv).
    let py = Path::new("python3");
    let script = r#"
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))[1:]
w = csv.writer(sys.stdout, lineterminator="\n")
for r in rows:
    w.writerow([r[0], sys.argv[2], sys.argv[3], sys.argv[4], r[7]])
"#;
    match Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(b1.join("certs.csv"))
        .args(["nrf-9160", tags, "APP|MODEM|BOOT"])
        .output()
    {
        Ok(out) if out.status.success() => assert!(
            out.stdout == onboard,
            "onboard.csv differs from Python's csv.writer"
        ),
        _ if require_tools() => panic!("python3 not usable"),
        _ => eprintln!("note: python3 not usable; skipping the byte comparison"),
    }
    let text = String::from_utf8(onboard.clone()).unwrap();
    assert!(text.contains("\"line 1|a,b|q\"\"3\""));
    assert!(text.contains("-----END CERTIFICATE-----\n\"\n"));

    // Re-run the identical batch: same certificates, nothing new.
    let o = ca.sign("b2", &["--json"], &[&input]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let r = report(&o);
    assert_eq!(
        (r["issued"].as_u64(), r["returned"].as_u64()),
        (Some(0), Some(2500))
    );
    let c1 = std::fs::read(b1.join("certs.csv")).unwrap();
    let c2 = std::fs::read(ca.path("b2").join("certs.csv")).unwrap();
    assert_eq!(c1, c2);
    assert_eq!(ca.count("SELECT count(*) FROM certificates"), 2500);
    assert_eq!(
        ca.count("SELECT count(DISTINCT device_id) FROM certificates"),
        2500
    );
    assert_eq!(
        ca.count("SELECT count(*) FROM audit WHERE event = 'certificate-returned'"),
        2500
    );
    check_bundle_with_oracles(&ca, &ca.path("b2"), 2500);
    ca.audit_verify();
}

/// --reissue, --dry-run, an existing --out, --pem-files, --device-id cn.
#[test]
fn reissue_dry_run_existing_out_pem_files() {
    let ca = test_ca();
    let a = ModemIdentity::random().unwrap();
    let first = ca.path("a1.txt");
    write_lines(&first, &[modem_keygen(&a)]);
    let o = ca.sign("b1", &["--pem-files"], &[&first]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let pem = std::fs::read(
        ca.path("b1")
            .join(format!("certs/{}_crt.pem", a.uuid_string())),
    )
    .unwrap();
    let certs = read_csv(&ca.path("b1").join("certs.csv"));
    assert_eq!(pem, certs[1][7].as_bytes());
    assert_eq!(nrfca::internal::crypto::sha256_hex(&pem), certs[1][6]);
    check_bundle_with_oracles(&ca, &ca.path("b1"), 1);

    // existing --out: exit 2, nothing written
    let audit_before = ca.count("SELECT count(*) FROM audit");
    let o = ca.sign("b1", &[], &[&first]);
    assert_eq!(code(&o), 2, "{}", explain(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(ca.count("SELECT count(*) FROM audit"), audit_before);

    // a new key for A: already-issued, unless --reissue
    let second = ca.path("a2.txt");
    write_lines(&second, &[modem_keygen(&a)]);
    let tables = |ca: &AgeCa| {
        ["audit", "certificates", "rejects", "batches"]
            .map(|t| ca.count(&format!("SELECT count(*) FROM {t}")))
    };
    let before = tables(&ca);
    let o = bin_plain()
        .args(["sign", "--ca-dir"])
        .arg(&ca.dir)
        .arg("--out")
        .arg(ca.path("dry"))
        .args(["--dry-run", "--json", "--reissue"])
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let r = report(&o);
    assert_eq!(
        (
            r["dry_run"].as_bool(),
            r["issued"].as_u64(),
            r["reissued"].as_u64()
        ),
        (Some(true), Some(1), Some(1))
    );
    assert!(!ca.path("dry").exists());
    assert_eq!(tables(&ca), before, "dry run wrote to ca.db");
    let o = bin_plain()
        .args(["sign", "--ca-dir"])
        .arg(&ca.dir)
        .arg("--out")
        .arg(ca.path("dry"))
        .args(["--dry-run", "--json"])
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert_eq!(report(&o)["rejects_by_code"]["already-issued"], 1);
    assert_eq!(tables(&ca), before);

    let o = ca.sign("b2", &["--json"], &[&second]);
    assert_eq!(code(&o), 1);
    let o = ca.sign("b3", &["--json", "--reissue"], &[&second]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(report(&o)["reissued"], 1);
    assert_eq!(
        ca.count(&format!(
            "SELECT count(*) FROM certificates WHERE device_id = '{}'",
            a.uuid_string()
        )),
        2
    );
    assert_eq!(
        ca.count("SELECT count(*) FROM certificates WHERE reissue = 1"),
        1
    );
    ca.audit_verify();

    // --device-id cn: CN nrf-<IMEI>, checked against the row's IMEI
    let m = ModemIdentity::random().unwrap();
    let kg = m
        .keygen(
            TAG,
            &GenOptions {
                attributes: Some("CN=nrf-352656100000002".into()),
                ..GenOptions::default()
            },
        )
        .unwrap()
        .keygen;
    let csv = ca.path("cn.csv");
    std::fs::write(
        &csv,
        format!(
            "{}\n{}\n",
            nrfca::requests::HEADER,
            csv_row(&m.uuid_string(), "352656100000002", "", &kg)
        ),
    )
    .unwrap();
    let o = ca.sign("b4", &["--json"], &[&csv]);
    assert_eq!(report(&o)["rejects_by_code"]["identity-mismatch"], 1);
    let o = ca.sign(
        "b5",
        &["--json", "--device-id", "cn", "--pem-files"],
        &[&csv],
    );
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(ca
        .path("b5")
        .join("certs/nrf-352656100000002_crt.pem")
        .is_file());
    let onboard = std::fs::read_to_string(ca.path("b5").join("onboard.csv")).unwrap();
    assert!(onboard.starts_with("nrf-352656100000002,,,APP|MODEM,\"-----BEGIN CERTIFICATE-----\n"));
    check_bundle_with_oracles(&ca, &ca.path("b5"), 1);
    ca.audit_verify();
}

/// Issue 10 item 2: already-issued keys on the attested device (the COSE UUID), not on the
/// certificate CN. A device signed in a uuid-mode batch (CN=<uuid>) and then submitted with
/// a new key as CN=nrf-<IMEI> under `--device-id cn` is the same device: already-issued,
/// unless --reissue (then issued and recorded as a reissue). On 845129f it was issued.
#[test]
fn already_issued_keys_on_attested_uuid_across_cn_modes() {
    let ca = test_ca();
    let m = ModemIdentity::random().unwrap();
    let imei = "352656100000002"; // valid Luhn digit (SPEC §3 shapes)
                                  // A ca.db that holds another device too, so the prefilter (KnownFilter) is in play.
    let first = ca.path("uuid.txt");
    let mut lines = good_requests(3);
    lines.push(modem_keygen(&m));
    write_lines(&first, &lines);
    let o = ca.sign("b1", &["--json"], &[&first]);
    assert_eq!(code(&o), 0, "{}", explain(&o));

    let cn_request = |file: &str| {
        let kg = m
            .keygen(
                TAG,
                &GenOptions {
                    attributes: Some(format!("CN=nrf-{imei}")),
                    ..GenOptions::default()
                },
            )
            .unwrap()
            .keygen;
        let csv = ca.path(file);
        std::fs::write(
            &csv,
            format!(
                "{}\n{}\n",
                nrfca::requests::HEADER,
                csv_row(&m.uuid_string(), imei, "", &kg)
            ),
        )
        .unwrap();
        csv
    };
    let csv = cn_request("cn.csv");
    let o = ca.sign("b2", &["--json", "--device-id", "cn"], &[&csv]);
    assert_eq!(code(&o), 1, "{}", explain(&o));
    let r = report(&o);
    assert_eq!(r["issued"], 0, "{}", explain(&o));
    assert_eq!(r["rejects_by_code"]["already-issued"], 1, "{}", explain(&o));
    let rejects = read_csv(&ca.path("b2").join("rejects.csv"));
    assert_eq!(rejects[1][2], m.uuid_string());
    assert_eq!(rejects[1][3], "already-issued");
    assert!(rejects[1][4].contains("--reissue"), "{:?}", rejects[1]);
    let uuid_certs = format!(
        "SELECT count(*) FROM certificates WHERE uuid = '{}'",
        m.uuid_string()
    );
    assert_eq!(ca.count(&uuid_certs), 1);

    // With --reissue: issued, recorded as a reissue.
    let csv = cn_request("cn2.csv");
    let o = ca.sign("b3", &["--json", "--device-id", "cn", "--reissue"], &[&csv]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert_eq!(report(&o)["reissued"], 1, "{}", explain(&o));
    assert_eq!(ca.count(&uuid_certs), 2);
    assert_eq!(
        ca.count(&format!(
            "SELECT count(*) FROM certificates WHERE device_id = 'nrf-{imei}' AND reissue = 1"
        )),
        1
    );
    // The identical KEYGEN string still gives back the stored certificate (no reissue).
    let o = ca.sign("b4", &["--json", "--device-id", "cn"], &[&csv]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let r = report(&o);
    assert_eq!(
        (r["issued"].as_u64(), r["returned"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(ca.count(&uuid_certs), 2);
    ca.audit_verify();
}

/// `sign` killed with SIGKILL mid-batch: ca.db holds all of the batch or none of it, the
/// audit log verifies, no partial bundle at B, and the re-run completes without duplicates.
/// The kills land at named points of the batch (`NRFCA_CRASH_AT` with
/// `NRFCA_CRASH_SIGNAL=KILL`), so each lands in the same place on every machine: while
/// checking, while writing, just before and just after the commit, just after the rename.
#[test]
fn sigkill_mid_batch_loses_nothing() {
    let ca = test_ca();
    let n = 2000usize;
    let spawn = |out: &Path, input: &Path, point: &str| {
        bin_plain()
            .env("NRFCA_CRASH_AT", point)
            .env("NRFCA_CRASH_SIGNAL", "KILL")
            .arg("sign")
            .arg("--ca-dir")
            .arg(&ca.dir)
            .arg("--identity")
            .arg(&ca.identity)
            .arg("--out")
            .arg(out)
            .arg(input)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut base = 0i64;
    // (point, committed when killed there)
    let points = [
        (format!("checked:{}", n / 2), false),
        (format!("written:{}", n / 10), false),
        (format!("written:{}", n - 1), false),
        ("before-commit".to_string(), false),
        ("after-commit".to_string(), true),
        ("after-rename".to_string(), true),
    ];
    for (i, (point, committed)) in points.iter().enumerate() {
        let input = ca.path(&format!("r{i}.txt"));
        write_lines(&input, &good_requests(n));
        let out = ca.path(&format!("b{i}"));
        let status = spawn(&out, &input, point).wait().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "killed at {point}: {status}");
        }
        let certs = ca.count("SELECT count(*) FROM certificates");
        let added = if *committed { n as i64 } else { 0 };
        assert_eq!(certs, base + added, "after a kill at {point}");
        // A bundle at B only once it was renamed into place, and then complete.
        assert_eq!(
            out.exists(),
            point == "after-rename",
            "bundle after {point}"
        );
        if out.exists() {
            let ca_pem = std::fs::read(ca.dir.join("ca.pem")).unwrap();
            let v = nrfca::bundle::verify(&out, &ca_pem).expect("a bundle at B is complete");
            assert_eq!(v.certs.len(), n);
        }
        ca.audit_verify();
        // The re-run finishes the job: every device exactly once.
        // Run the same sign again (same --out unless the killed run completed its bundle).
        let again = if out.exists() {
            format!("again{i}")
        } else {
            format!("b{i}")
        };
        let o = ca.sign(&again, &["--json"], &[&input]);
        assert_eq!(code(&o), 0, "{}", explain(&o));
        let r = report(&o);
        assert_eq!(
            (
                r["issued"].as_u64().unwrap(),
                r["returned"].as_u64().unwrap()
            ),
            if *committed {
                (0, n as u64)
            } else {
                (n as u64, 0)
            },
            "re-run after a kill at {point}"
        );
        base += n as i64;
        assert_eq!(ca.count("SELECT count(*) FROM certificates"), base);
        assert_eq!(
            ca.count("SELECT count(DISTINCT device_id) FROM certificates"),
            base
        );
        let ca_pem = std::fs::read(ca.dir.join("ca.pem")).unwrap();
        assert_eq!(
            nrfca::bundle::verify(&ca.path(&again), &ca_pem)
                .unwrap()
                .certs
                .len(),
            n
        );
        // The killed run's temporary directory is gone once the same --out is used again.
        let stale: Vec<String> = std::fs::read_dir(&ca.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|s| s.starts_with(&format!(".{again}.nrfca-partial")))
            .collect();
        assert!(stale.is_empty(), "{stale:?}");
        ca.audit_verify();
    }
}

/// The library API: `sign()` with a progress callback, then `dry_run()`.
#[test]
fn library_sign_reports_progress_and_counts() {
    use nrfca::signer::sign::{self, SignEvent, SignOptions};
    let ca = test_ca();
    let input = ca.path("lib.txt");
    let mut lines = good_requests(1200);
    lines.push("not a keygen".into());
    write_lines(&input, &lines);
    let mut opts = SignOptions::new(ca.path("lib-b"), vec![input.clone()], "lib".into());
    opts.threads = Some(3);
    let unlock = nrfca::signer::secret::Unlock::Identity(ca.identity.clone());
    let mut events = Vec::new();
    let r = sign::sign(&ca.dir, &unlock, &opts, &mut |e| events.push(e)).unwrap();
    assert_eq!((r.requests, r.issued, r.rejected), (1201, 1200, 1));
    assert!(!r.all_ok());
    assert_eq!(r.rejects_by_code.get("malformed-input"), Some(&1));
    assert_eq!(r.bundle.as_deref(), Some(ca.path("lib-b").as_path()));
    assert_eq!(r.inputs.len(), 1);
    assert_eq!(
        r.inputs[0].sha256,
        nrfca::internal::crypto::sha256_hex(&std::fs::read(&input).unwrap())
    );
    let head = r.audit_head.clone().unwrap();
    let last: String = ca
        .db()
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert_eq!(head.hash, last);
    assert!(matches!(events.first(), Some(SignEvent::Started { .. })));
    assert!(matches!(events.last(), Some(SignEvent::Done)));
    assert!(events.iter().any(|e| matches!(e, SignEvent::Committing)));
    let progress: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SignEvent::Progress { requests, .. } => Some(*requests),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]) && progress.last() == Some(&1201));
    // certs.csv rows follow the input order
    let certs = read_csv(&ca.path("lib-b").join("certs.csv"));
    for (row, kg) in certs[1..].iter().zip(&lines) {
        let v = nrfca::keygen::check(kg, &Default::default()).unwrap();
        assert_eq!(row[0], v.uuid);
    }
    // a dry run of the same input: everything returned, nothing written
    let audit_n = ca.count("SELECT count(*) FROM audit");
    let r = sign::dry_run(&ca.dir, &opts, &mut |_| {}).unwrap();
    assert_eq!((r.returned, r.issued, r.rejected), (1200, 0, 1));
    assert!(r.bundle.is_none() && r.audit_head.is_none());
    assert_eq!(ca.count("SELECT count(*) FROM audit"), audit_n);
    // a --days past the CA's notAfter refuses the whole batch
    let mut long = opts.clone();
    long.out = ca.path("lib-long");
    long.days = 36500;
    let e = sign::sign(&ca.dir, &unlock, &long, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("notAfter"), "{e}");
    assert!(!ca.path("lib-long").exists());
    assert_eq!(ca.count("SELECT count(*) FROM audit"), audit_n);
}

// ---------------------------------------------------------------------------------------
// issue 10 (Hardening II), items 5 and 11

/// No cell of `text` (CSV) is a formula or holds a control character, except the PEM
/// certificate cells the SPEC fixes (our own, LF line ends).
fn assert_csv_cells_inert(what: &str, text: &str) {
    for (_, row) in nrfca::bundle::parse_csv(text) {
        for cell in row.unwrap() {
            if cell.starts_with("-----BEGIN CERTIFICATE-----\n") {
                continue;
            }
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{what}: formula cell {cell:?}"
            );
            assert!(
                !cell.chars().any(|c| c.is_control() && c != '\n'),
                "{what}: control character in {cell:?}"
            );
        }
    }
}

/// Issue 10 item 5: formula cells, embedded newlines and terminal escapes in requests.csv
/// columns are rejected `metadata-mismatch` (SPEC §3 shapes), and nothing unchecked reaches
/// certs.csv, rejects.csv, ca.db or the terminal (`inspect`).
#[test]
fn h10_item5_formula_and_escape_cells_are_rejected_and_never_written() {
    use nrfca::requests::{format_row, RequestRow, HEADER};
    let ca = test_ca();
    let good = ModemIdentity::random().unwrap();
    let row = |m: &ModemIdentity| RequestRow {
        device_uuid: m.uuid_string(),
        imei: "490154203237518".into(),
        sec_tag: TAG.to_string(),
        keygen: modem_keygen(m),
        modem_fw: "mfw_nrf9160_1.3.7".into(),
        model: "nRF9160-SICA".into(),
        bench: "bench-1".into(),
        port: "/dev/ttyACM0".into(),
        exported_at: "2025-06-01T10:00:00Z".into(),
        ..Default::default()
    };
    let mut text = format!("{HEADER}\n");
    text.push_str(&format_row(&row(&good)));
    type Poison = fn(&mut RequestRow);
    let poisons: [Poison; 7] = [
        |r| r.model = "=HYPERLINK(\"http://evil.example/\",\"click\")".into(),
        |r| r.port = "@SUM(1+1)*cmd|' /C calc'!A0".into(),
        |r| r.imei = "490154203237519".into(), // Luhn digit wrong
        |r| r.bench = "bench\n=1+1".into(),    // embedded newline
        |r| r.modem_fw = "mfw\x1b]0;owned\x07\r".into(),
        |r| r.exported_at = "+NOW()".into(),
        |r| r.sec_tag = "-16842753".into(),
    ];
    for p in poisons {
        let mut r = row(&ModemIdentity::random().unwrap());
        p(&mut r);
        text.push_str(&format_row(&r));
    }
    // A row whose KEYGEN does not even parse, with a formula + escape sequence as its UUID:
    // the reject records no device (old code wrote the cell into rejects.csv and ca.db).
    let mut r = row(&ModemIdentity::random().unwrap());
    r.device_uuid = "=HYPERLINK(\"http://x\")\x1b]0;owned\x07".into();
    r.keygen = "abc$%.def".into();
    text.push_str(&format_row(&r));
    let csv = ca.path("poison.csv");
    std::fs::write(&csv, &text).unwrap();

    let o = ca.sign("b", &["--json"], &[&csv]);
    assert_eq!(code(&o), 1, "{}", explain(&o));
    let rep = report(&o);
    assert_eq!(rep["issued"], 1, "{rep}");
    assert_eq!(rep["rejects_by_code"]["metadata-mismatch"], 7, "{rep}");
    assert_eq!(rep["rejects_by_code"]["bad-base64"], 1, "{rep}");
    for f in ["certs.csv", "rejects.csv", "onboard.csv"] {
        let t = std::fs::read_to_string(ca.path("b").join(f)).unwrap();
        assert_csv_cells_inert(f, &t);
        // The bad values appear only quoted inside rejects.csv details, never as cells.
        if f != "rejects.csv" {
            assert!(!t.contains("HYPERLINK") && !t.contains("SUM("), "{f}: {t}");
        }
    }
    let rejects = read_csv(&ca.path("b").join("rejects.csv"));
    assert_eq!(rejects.len(), 1 + 8);
    let last = rejects.last().unwrap();
    assert_eq!((last[2].as_str(), last[3].as_str()), ("", "bad-base64"));
    // ca.db: every recorded reject cell is a checked value or neutralised.
    let conn = ca.db();
    let mut st = conn
        .prepare("SELECT source, device_uuid, detail FROM rejects")
        .unwrap();
    let cells: Vec<String> = st
        .query_map([], |r| {
            Ok([
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get::<_, String>(2)?,
            ])
        })
        .unwrap()
        .flat_map(|r| r.unwrap())
        .collect();
    assert_eq!(cells.len(), 3 * 8);
    for c in &cells {
        assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "{c:?}");
        assert!(!c.chars().any(char::is_control), "{c:?}");
    }
    ca.audit_verify();

    // The terminal: inspect shows the verdicts with every control character escaped.
    let o = bin_plain().arg("inspect").arg(&csv).output().unwrap();
    assert_eq!(code(&o), 1, "{}", explain(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("metadata-mismatch"), "{out}");
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "control character reached the terminal: {out:?}"
    );
}

/// Issue 10 item 11: files that are not requests (ca.pem, ca.db, the executable, a bundle's
/// CSVs, empty or header-only files) are refused with exit 2 before the key is unlocked: no
/// batch, no audit record, no bundle.
#[test]
fn h10_item11_wrong_files_are_refused_before_unlocking() {
    let ca = test_ca();
    let input = ca.path("ok.txt");
    write_lines(&input, &good_requests(2));
    let o = ca.sign("b1", &[], &[&input]);
    assert_eq!(code(&o), 0, "{}", explain(&o));
    let empty = ca.path("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let header = ca.path("header.csv");
    std::fs::write(&header, format!("{}\n", nrfca::requests::HEADER)).unwrap();
    let comments = ca.path("comments.txt");
    std::fs::write(&comments, "# nothing here\n\n").unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (ca.dir.join("ca.pem"), "PEM"),
        (ca.dir.join("ca.db"), "SQLite"),
        (PathBuf::from(common::BIN), "executable"),
        (ca.path("b1").join("onboard.csv"), "onboarding CSV"),
        (ca.path("b1").join("certs.csv"), "certs.csv"),
        (ca.path("b1").join("rejects.csv"), "rejects.csv"),
        (ca.path("b1").join("manifest.json"), "JSON"),
        (empty, "empty"),
        (header, "header and no request"),
        (comments, "empty"),
    ];
    let records = ca.count("SELECT count(*) FROM audit");
    let batches = ca.count("SELECT count(*) FROM batches");
    for (i, (file, looks)) in cases.iter().enumerate() {
        for dry in [false, true] {
            let out = format!("wrong-{i}-{dry}");
            let args: &[&str] = if dry { &["--dry-run"] } else { &[] };
            // Alone, and after a good file: one wrong input refuses the whole batch.
            for inputs in [vec![file.as_path()], vec![input.as_path(), file.as_path()]] {
                let o = ca.sign(&out, args, &inputs);
                assert_eq!(code(&o), 2, "{}: {}", file.display(), explain(&o));
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains(&format!("{} is not a requests file", file.display()))
                        && err.contains(looks),
                    "{}: {err}",
                    file.display()
                );
                assert!(!ca.path(&out).exists());
            }
        }
    }
    // Nothing was unlocked, started or committed.
    assert_eq!(ca.count("SELECT count(*) FROM audit"), records);
    assert_eq!(ca.count("SELECT count(*) FROM batches"), batches);
    ca.audit_verify();

    // The library refuses too (callers other than the CLI), before unlocking.
    use nrfca::signer::sign::{self, SignOptions};
    let opts = SignOptions::new(ca.path("lib"), vec![ca.dir.join("ca.pem")], "lib".into());
    let unlock = nrfca::signer::secret::Unlock::Identity(ca.identity.clone());
    let e = sign::sign(&ca.dir, &unlock, &opts, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("looks like PEM"), "{e}");
    assert_eq!(ca.count("SELECT count(*) FROM audit"), records);
}
