//! Lifecycle (SPEC §12) through the binary: `revoke`, `crl`, `audit show --revoked`,
//! `ca verification-cert`; the CRL checked by openssl and pkilint, CRL numbers across a
//! restored `ca.db`, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bin, have_openssl, run, stderr, venv_tool};

/// A CA (age identity) with one signed batch of `n` devices. Returns (tempdir, ca_dir,
/// identity file, certs.csv rows as (device_uuid, serial, pem)).
fn signed(
    n: usize,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    Vec<(String, String, String)>,
) {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let idf = root.path().join("officer.agekey");
    common::ca_init_age(
        &ca_dir,
        &idf,
        "CN=Lifecycle CA,O=Test",
        &["--days", "365", "--operator", "tester"],
    );
    let req = root.path().join("requests.csv");
    let o = run(bin()
        .args(["gen", "--count", &n.to_string(), "--out"])
        .arg(&req));
    assert!(o.status.success(), "gen: {}", stderr(&o));
    let o = run(&mut sign_cmd(&ca_dir, &idf, &root.path().join("b1"), &req));
    assert!(o.status.success(), "sign: {}", stderr(&o));
    let rows = certs(&root.path().join("b1"));
    assert_eq!(rows.len(), n);
    (root, ca_dir, idf, rows)
}

fn sign_cmd(ca: &Path, idf: &Path, out: &Path, req: &Path) -> Command {
    let mut c = bin();
    c.args(["sign", "--days", "30", "--ca-dir"])
        .arg(ca)
        .arg("--identity")
        .arg(idf)
        .arg("--out")
        .arg(out)
        .arg(req);
    c
}

fn certs(bundle: &Path) -> Vec<(String, String, String)> {
    let mut r = csv::Reader::from_path(bundle.join("certs.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (u, s, c) = (col("device_uuid"), col("serial"), col("certificate"));
    r.records()
        .map(|x| {
            let x = x.unwrap();
            (x[u].to_string(), x[s].to_string(), x[c].to_string())
        })
        .collect()
}

fn revoke(ca: &Path, args: &[&str], reason: &str) -> Output {
    run(bin().args(["revoke", "--ca-dir"]).arg(ca).args(args).args([
        "--reason",
        reason,
        "--operator",
        "tester",
    ]))
}

fn crl(ca: &Path, idf: &Path, out: &Path) -> Output {
    run(bin()
        .args(["crl", "--ca-dir"])
        .arg(ca)
        .arg("--identity")
        .arg(idf)
        .arg("--out")
        .arg(out)
        .arg("--json"))
}

fn crl_number(o: &Output) -> u64 {
    assert!(o.status.success(), "crl: {}", stderr(o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    m["crl_number"].as_str().unwrap().parse().unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn audit_ok(ca: &Path) {
    let o = run(bin().args(["audit", "verify", "--ca-dir"]).arg(ca));
    assert!(o.status.success(), "audit verify: {}", stderr(&o));
}

#[test]
fn revoke_crl_openssl_pkilint_and_numbers_across_a_restore() {
    let (root, ca, idf, rows) = signed(4);
    let r = root.path();

    // Two devices: one by attested UUID, one by serial; then the same again (no-op).
    let o = revoke(&ca, &["--device", &rows[0].0], "keyCompromise");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = revoke(&ca, &["--serial", &rows[1].1.to_uppercase()], "unspecified");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = revoke(&ca, &["--device", &rows[0].0], "superseded");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already revoked"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 revoked, 1 already revoked"),
        "{}",
        stderr(&o)
    );

    // Unknown serial: exit 1, listed, the known one in the same run still revoked.
    let o = revoke(
        &ca,
        &["--serial", "0badc0de", &rows[2].1],
        "cessationOfOperation",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown: serial 0badc0de"),
        "{}",
        stderr(&o)
    );
    let o = revoke(&ca, &["--device", "no-such-device"], "superseded");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown: device no-such-device"));

    // audit show --revoked lists three, with the first reason kept.
    let o = run(bin()
        .args(["audit", "show", "--revoked", "--json", "--ca-dir"])
        .arg(&ca));
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let by_serial = |s: &str| list.iter().find(|x| x["serial"] == s).unwrap()["reason"].clone();
    assert_eq!(by_serial(&rows[0].1), "keyCompromise");
    assert_eq!(by_serial(&rows[1].1), "unspecified");

    // The CRL.
    let o = crl(&ca, &idf, &r.join("crl1"));
    let n1 = crl_number(&o);
    let c1 = r.join("crl1");
    for f in [
        "crl.der",
        "crl.pem",
        "revoked.csv",
        "manifest.json",
        "manifest.sig",
    ] {
        assert!(c1.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(c1.join("revoked.csv")).unwrap();
    assert!(
        csv.starts_with("device_id,serial,reason,revoked_at\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains(&format!("{},{},keyCompromise,", rows[0].0, rows[0].1)));
    // The signed manifest verifies with ca.pem, and not once a file changes.
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    nrfca::signer::lifecycle::crl::verify_dir(&c1, &ca_pem).unwrap();
    audit_ok(&ca);
    let o = run(bin().args(["ca", "show", "--json", "--ca-dir"]).arg(&ca));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (info["revoked"].as_u64(), info["crls"].as_u64()),
        (Some(3), Some(1))
    );

    if have_openssl() {
        let o = openssl(
            r,
            &[
                "crl",
                "-in",
                "crl1/crl.pem",
                "-CAfile",
                "ca/ca.pem",
                "-noout",
                "-verify",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("verify OK"));
        let text = openssl(
            r,
            &[
                "crl",
                "-in",
                "crl1/crl.der",
                "-inform",
                "DER",
                "-noout",
                "-text",
            ],
        );
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.contains("Version 2"), "{text}");
        assert!(text.contains("Key Compromise"), "{text}");
        assert!(text.contains("Authority Key Identifier"), "{text}");
        assert!(
            text.contains(&format!("CRL Number: \n                {n1}"))
                || text.contains(&n1.to_string()),
            "{text}"
        );
        for (i, (_, _, pem)) in rows.iter().enumerate() {
            std::fs::write(r.join(format!("dev{i}.pem")), pem).unwrap();
        }
        let check = |i: usize| {
            openssl(
                r,
                &[
                    "verify",
                    "-crl_check",
                    "-CRLfile",
                    "crl1/crl.pem",
                    "-CAfile",
                    "ca/ca.pem",
                    &format!("dev{i}.pem"),
                ],
            )
        };
        for i in 0..3 {
            let o = check(i);
            assert!(!o.status.success(), "revoked dev{i} accepted");
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("certificate revoked")
                    || String::from_utf8_lossy(&o.stderr).contains("certificate revoked")
            );
        }
        let o = check(3);
        assert!(
            o.status.success(),
            "good device refused: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    if let Some(lint) = venv_tool("lint_crl") {
        let o = Command::new(lint)
            .args(["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING"])
            .arg(c1.join("crl.pem"))
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stdout.trim_ascii().is_empty(),
            "lint_crl: {:?} {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Backup of ca.db now; a second CRL; the backup restored; a third CRL: a new number.
    let backup = r.join("ca.db.backup");
    std::fs::copy(ca.join("ca.db"), &backup).unwrap();
    let n2 = crl_number(&crl(&ca, &idf, &r.join("crl2")));
    assert!(n2 > n1, "{n2} > {n1}");
    std::fs::copy(&backup, ca.join("ca.db")).unwrap();
    let n3 = crl_number(&crl(&ca, &idf, &r.join("crl3")));
    assert!(
        n3 > n2,
        "CRL number reused after a restore: {n3} after {n2}"
    );
    audit_ok(&ca);

    // An existing --out is refused, nothing written, no number used.
    let o = crl(&ca, &idf, &r.join("crl3"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    // No partial directory left behind by any run.
    let partial = std::fs::read_dir(r)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".nrfca-partial-")
        })
        .count();
    assert_eq!(partial, 0);
}

#[test]
fn crl_manifest_tampering_and_wrong_trust_are_refused() {
    let (root, ca, idf, rows) = signed(1);
    let r = root.path();
    assert!(
        revoke(&ca, &["--batch", "nope"], "superseded")
            .status
            .code()
            == Some(1)
    );
    let o = revoke(
        &ca,
        &["--file", r.join("b1/certs.csv").to_str().unwrap()],
        "cessationOfOperation",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&rows[0].1));
    crl_number(&crl(&ca, &idf, &r.join("crl")));
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    // Another CA's certificate does not verify it.
    let other = r.join("other");
    common::ca_init_age(&other, &r.join("other.agekey"), "CN=Other", &[]);
    let other_pem = std::fs::read(other.join("ca.pem")).unwrap();
    assert!(nrfca::signer::lifecycle::crl::verify_dir(&r.join("crl"), &other_pem).is_err());
    // An edited revoked.csv is found.
    let p = r.join("crl/revoked.csv");
    let mut t = std::fs::read_to_string(&p).unwrap();
    t.push_str("x,ff,superseded,2025-01-01T00:00:00Z\n");
    std::fs::write(&p, t).unwrap();
    let e = nrfca::signer::lifecycle::crl::verify_dir(&r.join("crl"), &ca_pem).unwrap_err();
    assert!(e.to_string().contains("revoked.csv"), "{e}");
}

#[test]
fn verification_cert_for_aws_iot() {
    let (root, ca, idf, _) = signed(1);
    let r = root.path();
    let code = "a".repeat(64);
    let o = run(bin()
        .args(["ca", "verification-cert", "--ca-dir"])
        .arg(&ca)
        .arg("--identity")
        .arg(&idf)
        .args(["--cn", &code, "--out"])
        .arg(r.join("aws")));
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(r.join("aws/verification.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read_to_string(r.join("aws/verification.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    audit_ok(&ca);
    let o = run(bin()
        .args([
            "audit",
            "show",
            "--event",
            "verification-cert-issued",
            "--json",
            "--ca-dir",
        ])
        .arg(&ca));
    let recs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(recs[0]["details"]["cn"], code.as_str());
    if have_openssl() {
        let o = openssl(
            r,
            &["verify", "-CAfile", "ca/ca.pem", "aws/verification.pem"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = openssl(
            r,
            &["x509", "-in", "aws/verification.pem", "-noout", "-subject"],
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(&code));
        // The key belongs to the certificate.
        let a = openssl(
            r,
            &["x509", "-in", "aws/verification.pem", "-noout", "-pubkey"],
        );
        let b = openssl(r, &["pkey", "-in", "aws/verification.key", "-pubout"]);
        assert_eq!(a.stdout, b.stdout);
    }
    // A bad code and an existing --out are refused (exit 2).
    for (cn, out) in [("has space", "aws2"), ("ok", "aws")] {
        let o = run(bin()
            .args(["ca", "verification-cert", "--ca-dir"])
            .arg(&ca)
            .arg("--identity")
            .arg(&idf)
            .args(["--cn", cn, "--out"])
            .arg(r.join(out)));
        assert_eq!(o.status.code(), Some(2), "{cn}: {}", stderr(&o));
    }
}

// ------------------------------------------------------------------ hierarchy (bench build)

#[cfg(feature = "bench")]
fn audit_events(ca: &Path) -> Vec<String> {
    let o = run(bin().args(["audit", "show", "--json", "--ca-dir"]).arg(ca));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect()
}

/// Root → intermediate → batch → `bench import --trust ROOT.pem` on simulated modems; the
/// root refuses to sign devices; revoke two devices of the intermediate and check its CRL;
/// pkilint on root → SUB and SUB → device; bad input.
#[cfg(feature = "bench")]
#[test]
fn root_intermediate_batch_import_trusting_the_root() {
    use nrfca::bench::{export, import, ExportOptions, ImportOptions, Status};
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let (sim, ports) = common::test_modems(r, 3);
    let settings = common::port_settings(1500, 600, 5);
    let req = r.join("requests.csv");
    let mut eo = ExportOptions::new(ports.clone(), req.clone());
    eo.state_dir = r.join("S");
    eo.operator = Some("tester".into());
    eo.settings = settings.clone();
    let er = export(&eo, &|_| {}).expect("export runs");
    assert!(er.devices.iter().all(|d| d.status == Status::Done));

    // The root.
    let root = r.join("root");
    let root_id = r.join("root.agekey");
    common::ca_init_age(
        &root,
        &root_id,
        "CN=Lifecycle Root,O=Test",
        &["--root", "--days", "3650"],
    );
    // It refuses device batches before unlocking: exit 2, no bundle, no unlock recorded.
    let before = audit_events(&root);
    let o = run(&mut sign_cmd(&root, &root_id, &r.join("b-root"), &req));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a root CA signs CAs and CRLs only"),
        "{}",
        stderr(&o)
    );
    assert!(!r.join("b-root").exists());
    assert_eq!(audit_events(&root), before);

    // The intermediate, its key protected like any CA key (an age recipient here).
    let sub = r.join("sub");
    let sub_id = r.join("sub.agekey");
    let sub_recipient = common::age_identity(&sub_id);
    let issue = |days: &str, into: &Path| {
        run(bin()
            .args(["ca", "issue-intermediate", "--ca-dir"])
            .arg(&root)
            .arg("--root-identity")
            .arg(&root_id)
            .arg("--new-ca-dir")
            .arg(into)
            .args(["--subject", "CN=Lifecycle Device CA,O=Test", "--days", days])
            .args(["--recipient", &sub_recipient, "--operator", "officer"]))
    };
    // Outliving the root is refused, nothing created.
    let o = issue("4000", &sub);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("outlive its root"), "{}", stderr(&o));
    assert!(!sub.exists());
    let o = issue("1000", &sub);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(audit_events(&root).contains(&"intermediate-issued".to_string()));
    // SUB's creation names its parent.
    let o = run(bin()
        .args([
            "audit",
            "show",
            "--json",
            "--event",
            "ca-created",
            "--ca-dir",
        ])
        .arg(&sub));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let root_fp = nrfca::signer::ca::load_cert(&root).unwrap().fingerprint;
    assert_eq!(
        created[0]["details"]["parent_fingerprint"],
        root_fp.as_str()
    );
    // Into an existing directory: refused.
    let o = issue("100", &sub);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    audit_ok(&root);
    audit_ok(&sub);

    // A batch from SUB carries chain.pem, listed in the signed manifest.
    let bundle = r.join("bundle");
    let o = run(&mut sign_cmd(&sub, &sub_id, &bundle, &req));
    assert!(o.status.success(), "{}", stderr(&o));
    let chain = std::fs::read_to_string(bundle.join("chain.pem")).unwrap();
    let sub_pem = std::fs::read_to_string(sub.join("ca.pem")).unwrap();
    let root_pem = std::fs::read_to_string(root.join("ca.pem")).unwrap();
    assert_eq!(chain, format!("{sub_pem}{root_pem}"));
    let manifest = std::fs::read_to_string(bundle.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"chain.pem\""));
    // The bundle verifies with SUB or ROOT, not with an unrelated root.
    nrfca::bundle::verify(&bundle, sub_pem.as_bytes()).unwrap();
    nrfca::bundle::verify(&bundle, root_pem.as_bytes()).unwrap();
    let other = r.join("other");
    common::ca_init_age(
        &other,
        &r.join("other.agekey"),
        "CN=Unrelated Root",
        &["--root"],
    );
    let other_pem = std::fs::read(other.join("ca.pem")).unwrap();
    let e = nrfca::bundle::verify(&bundle, &other_pem).unwrap_err();
    assert!(e.to_string().contains("not the trusted CA"), "{e}");

    // bench import trusting ROOT.pem installs every device.
    let mut io = ImportOptions::new(ports.clone(), bundle.clone(), root.join("ca.pem"));
    io.state_dir = r.join("S");
    io.operator = Some("tester".into());
    io.settings = settings.clone();
    let ir = import(&io, &|_| {}).expect("import runs");
    assert!(
        ir.devices.iter().all(|d| d.status == Status::Done),
        "{:?}",
        ir.devices
    );
    // The unrelated root is refused before any modem is touched.
    let mut io2 = ImportOptions::new(ports.clone(), bundle.clone(), other.join("ca.pem"));
    io2.state_dir = r.join("S");
    io2.settings = settings;
    assert!(import(&io2, &|_| {}).is_err());
    drop(sim);

    let rows = certs(&bundle);
    for (i, (_, _, pem)) in rows.iter().enumerate() {
        std::fs::write(r.join(format!("dev{i}.pem")), pem).unwrap();
    }
    if let Some(lint) = venv_tool("lint_pkix_signer_signee_cert_chain") {
        for (signer, signee) in [("root/ca.pem", "sub/ca.pem"), ("sub/ca.pem", "dev0.pem")] {
            let o = Command::new(&lint)
                .args(["lint", "-s", "WARNING", signer, signee])
                .current_dir(r)
                .output()
                .unwrap();
            assert!(
                o.status.success() && o.stdout.trim_ascii().is_empty(),
                "{signer} -> {signee}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }

    // Revoke two devices of SUB; SUB's CRL refuses them and accepts the third.
    let o = revoke(&sub, &["--device", &rows[0].0, &rows[1].0], "keyCompromise");
    assert!(o.status.success(), "{}", stderr(&o));
    crl_number(&crl(&sub, &sub_id, &r.join("crl")));
    if have_openssl() {
        let o = openssl(
            r,
            &[
                "crl",
                "-in",
                "crl/crl.pem",
                "-CAfile",
                "sub/ca.pem",
                "-noout",
                "-verify",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = |i: usize| {
            openssl(
                r,
                &[
                    "verify",
                    "-crl_check",
                    "-CRLfile",
                    "crl/crl.pem",
                    "-CAfile",
                    "root/ca.pem",
                    "-untrusted",
                    "sub/ca.pem",
                    &format!("dev{i}.pem"),
                ],
            )
        };
        assert!(!v(0).status.success());
        assert!(!v(1).status.success());
        let o = v(2);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    audit_ok(&sub);
    // SUB's exported log verifies alone against the bundle's chain.pem (SUB checked by ROOT);
    // SUB's ca.pem alone is not self-signed and says what to give instead.
    let log = r.join("sub.jsonl");
    let o = run(bin()
        .args(["audit", "export", "--ca-dir"])
        .arg(&sub)
        .arg("--out")
        .arg(&log));
    assert!(o.status.success(), "{}", stderr(&o));
    let verify_with = |pem: &Path| {
        run(bin()
            .args(["audit", "verify", "--file"])
            .arg(&log)
            .arg("--ca-cert")
            .arg(pem))
    };
    let o = verify_with(&bundle.join("chain.pem"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify_with(&sub.join("ca.pem"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chain.pem"), "{}", stderr(&o));
}
