//! The bundle tamper matrix (SPEC §2, §6, §9 "tampered bundles are refused").
//!
//! Real parts only: simulated modems on ptys, `nrfca bench export`, `nrfca ca init
//! --recipient`, `nrfca sign --pem-files`, then every tampering of the bundle a USB stick (or
//! whoever holds it) can do. Each tampered copy must be refused by `bundle::verify` with the
//! expected error AND by `nrfca bench import` with exit 2 before any byte reaches a modem (the
//! simulator records every command it receives).
//!
//! "Replay" is decided here as follows (docs/threat-model.md):
//! - an authentic bundle is not tampering: it can only ever install a certificate that the
//!   trusted CA issued for the key the bench recorded at export for that very device;
//! - the same bundle imported twice is a no-op (no write, no CFUN change, exit 0);
//! - batch 1's bundle presented to batch 2's devices installs nothing: each device is refused
//!   (`no-certificate`, exit 1) after read-only identification, no write, no CFUN change;
//! - an older bundle for a device whose key changed since (`bench export --force`, re-signed
//!   with `--reissue`) is refused per device (`cert-key-mismatch`), before and after the new
//!   bundle was imported, and never replaces the newer certificate.
//!
//! Signed-but-malformed manifests (made with the real CA key, taken from `ca.key.age`) check
//! that the verifier's structure checks hold even when the signature is valid, and a FIFO
//! that serves different bytes on each open checks that the rows `verify` returns are the
//! bytes it hashed (a USB device can answer a second read differently).
#![cfg(feature = "bench")]

use nrfca::bench::state::{DeviceState, State};
use nrfca::bench::{export, ExportOptions, PortSettings, Status};
use nrfca::bundle::{self, BundleError, Manifest};
use nrfca::sim::{Latency, SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{bin, changes_modem, copy_dir, run, stderr, TAG};

// ---------------------------------------------------------------------------------- helpers

fn settings() -> PortSettings {
    common::port_settings(1500, 600, 3)
}

/// A bench with `n` simulated modems, a CA (age recipient) and helpers for export / sign /
/// import through the real binary.
struct World {
    dir: tempfile::TempDir,
    sim: Simulator,
    ports: Vec<String>,
}

impl World {
    fn new(n: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(SimConfig {
            count: n,
            latency: Latency::Test,
            link_dir: Some(dir.path().join("modems")),
            boot_cfun: 1,
            ..SimConfig::default()
        })
        .expect("simulator starts");
        let ports = common::port_names(&sim);
        let w = World { dir, sim, ports };
        w.make_ca("ca", "CN=Tamper Test CA,O=Test");
        w
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> PathBuf {
        self.p("S")
    }

    fn trust(&self) -> PathBuf {
        self.p("ca").join("ca.pem")
    }

    /// `ca init` into `name` with a fresh age identity `name.agekey`.
    fn make_ca(&self, name: &str, subject: &str) {
        common::ca_init_age(
            &self.p(name),
            &self.p(&format!("{name}.agekey")),
            subject,
            &["--operator", "officer"],
        );
    }

    /// The CA key of CA `name`, decrypted with its identity (to forge "validly signed" bundles).
    fn ca_key(&self, name: &str) -> nrfca::internal::crypto::P256Key {
        use nrfca::signer::secret::{decrypt, Unlock};
        let ct = std::fs::read(self.p(name).join("ca.key.age")).unwrap();
        let pkcs8 = decrypt(&ct, &Unlock::Identity(self.p(&format!("{name}.agekey")))).unwrap();
        nrfca::internal::crypto::P256Key::from_pkcs8(&pkcs8).unwrap()
    }

    /// Library `bench export` of the modems `idx` into `out`.
    fn export(&self, idx: &[usize], out: &str, force: bool) {
        let ports = idx.iter().map(|&i| self.ports[i].clone()).collect();
        let mut o = ExportOptions::new(ports, self.p(out));
        o.state_dir = self.state();
        o.force = force;
        o.operator = Some("tech".into());
        o.settings = settings();
        let r = export(&o, &|_| {}).expect("export runs");
        for d in &r.devices {
            assert_eq!(d.status, Status::Done, "{d:#?}");
        }
    }

    /// `nrfca sign --pem-files` with CA `ca` into a new bundle `out`.
    fn sign(&self, ca: &str, requests: &str, out: &str, extra: &[&str]) -> PathBuf {
        let b = self.p(out);
        let mut args: Vec<String> = vec![
            "sign".into(),
            "--ca-dir".into(),
            self.p(ca).to_string_lossy().into_owned(),
            "--identity".into(),
            self.p(&format!("{ca}.agekey"))
                .to_string_lossy()
                .into_owned(),
            "--out".into(),
            b.to_string_lossy().into_owned(),
            "--operator".into(),
            "officer".into(),
            "--pem-files".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.p(requests).to_string_lossy().into_owned());
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));
        b
    }

    /// `nrfca bench import --json` on the modems `idx`.
    fn import(&self, idx: &[usize], bundle: &Path, trust: &Path) -> Output {
        let mut args: Vec<String> = vec!["bench".into(), "import".into()];
        for &i in idx {
            args.push("--port".into());
            args.push(self.ports[i].clone());
        }
        for a in [
            "--bundle",
            bundle.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
            "--state",
            self.state().to_str().unwrap(),
            "--operator",
            "tech",
            "--timeout",
            "1.5",
            "--slow-timeout",
            "2",
            "--reconnect-wait",
            "2",
            "--json",
        ] {
            args.push(a.into());
        }
        run(bin().args(&args))
    }

    fn commands(&self) -> Vec<Vec<String>> {
        (0..self.sim.count())
            .map(|i| self.sim.snapshot(i).commands)
            .collect()
    }
}

/// Commands that change a modem: credential writes/deletes, KEYGEN, CFUN writes.
fn writes(cmds: &[String]) -> Vec<String> {
    cmds.iter().filter(|c| changes_modem(c)).cloned().collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// Records of certs.csv as raw text chunks (header, then one chunk per row; rows span lines
/// because the PEM is quoted).
fn csv_chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quotes = 0usize;
    for line in text.split_inclusive('\n') {
        cur.push_str(line);
        quotes += line.matches('"').count();
        if quotes % 2 == 0 {
            out.push(std::mem::take(&mut cur));
            quotes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn pem_files(b: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(b.join("certs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Flip one base64 character inside the first certificate of `text`.
fn flip_in_cert(text: &str) -> String {
    let pos = text.find("-----BEGIN CERTIFICATE-----\n").unwrap() + 28 + 40;
    let mut b = text.as_bytes().to_vec();
    b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

type Check = fn(&BundleError) -> bool;
type Tamper = Box<dyn Fn(&Path, &Path, &Path)>;

struct Case {
    name: &'static str,
    /// Make the tampered copy (given the copy, the genuine bundle of batch 2 and the evil
    /// CA's bundle of batch 1).
    tamper: Tamper,
    expect: Check,
}

fn case(name: &'static str, expect: Check, tamper: impl Fn(&Path, &Path, &Path) + 'static) -> Case {
    Case {
        name,
        tamper: Box::new(tamper),
        expect,
    }
}

fn hash_mismatch(e: &BundleError) -> bool {
    matches!(e, BundleError::HashMismatch(_))
}
fn bad_sig(e: &BundleError) -> bool {
    matches!(e, BundleError::BadSignature)
}
fn wrong_signer(e: &BundleError) -> bool {
    matches!(e, BundleError::WrongSigner { .. })
}
fn missing(e: &BundleError) -> bool {
    matches!(e, BundleError::MissingFile(_))
}
fn extra(e: &BundleError) -> bool {
    matches!(e, BundleError::ExtraFile(_))
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "certs.csv: one base64 byte of a certificate",
            hash_mismatch,
            |d, _, _| {
                let t = read(&d.join("certs.csv"));
                std::fs::write(d.join("certs.csv"), flip_in_cert(&t)).unwrap();
            },
        ),
        case(
            "certs.csv: certificates of two rows exchanged, sha256 columns recomputed",
            hash_mismatch,
            |d, _, _| {
                let t = read(&d.join("certs.csv"));
                let rows = bundle::parse_certs_csv(t.as_bytes()).unwrap();
                let mut out = format!("{}\n", bundle::CERTS_HEADER);
                for (i, r) in rows.iter().enumerate() {
                    let other = &rows[(i + 1) % rows.len()];
                    let pem = &other.certificate_pem;
                    let sec = r.sec_tag.to_string();
                    let sha = nrfca::internal::crypto::sha256_hex(pem.as_bytes());
                    let rec = bundle::csv_record(&[
                        &r.device_uuid,
                        &r.imei,
                        &sec,
                        &r.serial,
                        &r.not_before,
                        &r.not_after,
                        &sha,
                        pem,
                    ]);
                    out.push_str(std::str::from_utf8(&rec).unwrap());
                }
                std::fs::write(d.join("certs.csv"), out).unwrap();
            },
        ),
        case("certs.csv: row dropped", hash_mismatch, |d, _, _| {
            let c = csv_chunks(&read(&d.join("certs.csv")));
            assert_eq!(c.len(), 3);
            std::fs::write(d.join("certs.csv"), format!("{}{}", c[0], c[1])).unwrap();
        }),
        case(
            "certs.csv: row added (a row of batch 2's genuine bundle)",
            hash_mismatch,
            |d, b2, _| {
                let mine = read(&d.join("certs.csv"));
                let theirs = csv_chunks(&read(&b2.join("certs.csv")));
                std::fs::write(d.join("certs.csv"), format!("{mine}{}", theirs[1])).unwrap();
            },
        ),
        case("certs.csv: rows swapped", hash_mismatch, |d, _, _| {
            let c = csv_chunks(&read(&d.join("certs.csv")));
            std::fs::write(d.join("certs.csv"), format!("{}{}{}", c[0], c[2], c[1])).unwrap();
        }),
        case("certs.csv: truncated mid-row", hash_mismatch, |d, _, _| {
            let t = read(&d.join("certs.csv"));
            std::fs::write(d.join("certs.csv"), &t[..t.len() / 2]).unwrap();
        }),
        case(
            "certs.csv: CRLF line ends (a copy tool)",
            hash_mismatch,
            |d, _, _| {
                let t = read(&d.join("certs.csv"));
                std::fs::write(d.join("certs.csv"), t.replace('\n', "\r\n")).unwrap();
            },
        ),
        case(
            "certs.csv: replaced by batch 2's certs.csv",
            hash_mismatch,
            |d, b2, _| {
                std::fs::copy(b2.join("certs.csv"), d.join("certs.csv")).unwrap();
            },
        ),
        case("certs/*.pem: one byte changed", hash_mismatch, |d, _, _| {
            let f = &pem_files(d)[0];
            std::fs::write(f, flip_in_cert(&read(f))).unwrap();
        }),
        case(
            "certs/*.pem: two devices' files exchanged",
            hash_mismatch,
            |d, _, _| {
                let f = pem_files(d);
                let (a, b) = (read(&f[0]), read(&f[1]));
                std::fs::write(&f[0], b).unwrap();
                std::fs::write(&f[1], a).unwrap();
            },
        ),
        case("onboard.csv: row dropped", hash_mismatch, |d, _, _| {
            let c = csv_chunks(&read(&d.join("onboard.csv")));
            std::fs::write(d.join("onboard.csv"), &c[0]).unwrap();
        }),
        case("rejects.csv: row added", hash_mismatch, |d, _, _| {
            let mut t = read(&d.join("rejects.csv"));
            t.push_str("x.csv,1,,bad-base64,forged\n");
            std::fs::write(d.join("rejects.csv"), t).unwrap();
        }),
        case(
            "ca.pem: replaced by the evil CA",
            hash_mismatch,
            |d, _, evil| {
                std::fs::copy(evil.join("ca.pem"), d.join("ca.pem")).unwrap();
            },
        ),
        case("manifest.json: a count edited", bad_sig, |d, _, _| {
            let t = read(&d.join("manifest.json"));
            let t = t.replacen("\"issued\": 2", "\"issued\": 3", 1);
            assert!(t.contains("\"issued\": 3"));
            std::fs::write(d.join("manifest.json"), t).unwrap();
        }),
        case(
            "manifest.json: file digests updated to match an edited certs.csv",
            bad_sig,
            |d, _, _| {
                let t = read(&d.join("certs.csv"));
                let bad = flip_in_cert(&t);
                std::fs::write(d.join("certs.csv"), &bad).unwrap();
                let mut m: Manifest =
                    serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap())
                        .unwrap();
                for f in &mut m.files {
                    if f.name == "certs.csv" {
                        f.sha256 = nrfca::internal::crypto::sha256_hex(bad.as_bytes());
                    }
                }
                let mut json = serde_json::to_vec_pretty(&m).unwrap();
                json.push(b'\n');
                std::fs::write(d.join("manifest.json"), json).unwrap();
            },
        ),
        case(
            "manifest.json: whitespace only (re-formatted)",
            bad_sig,
            |d, _, _| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap())
                        .unwrap();
                std::fs::write(d.join("manifest.json"), serde_json::to_vec(&v).unwrap()).unwrap();
            },
        ),
        case(
            "manifest.json + manifest.sig: batch 2's (same CA, other batch)",
            hash_mismatch,
            |d, b2, _| {
                for f in ["manifest.json", "manifest.sig"] {
                    std::fs::copy(b2.join(f), d.join(f)).unwrap();
                }
            },
        ),
        case(
            "manifest.sig: batch 2's signature (same CA, other manifest)",
            bad_sig,
            |d, b2, _| {
                std::fs::copy(b2.join("manifest.sig"), d.join("manifest.sig")).unwrap();
            },
        ),
        case(
            "manifest.sig: the evil CA's signature over this manifest",
            bad_sig,
            |d, _, evil| {
                // What an attacker with another CA key can make: sign the genuine bytes.
                let sig_of_other = read(&evil.join("manifest.sig"));
                assert!(!sig_of_other.is_empty());
                let key = EVIL_KEY.with(|k| {
                    k.borrow().as_ref().map(|k| {
                        k.sign_der(&std::fs::read(d.join("manifest.json")).unwrap())
                            .unwrap()
                    })
                });
                let sig = key.expect("evil key set");
                std::fs::write(
                    d.join("manifest.sig"),
                    format!("{}\n", nrfca::internal::crypto::b64_encode(&sig)),
                )
                .unwrap();
            },
        ),
        case("manifest.sig: not base64", bad_sig, |d, _, _| {
            std::fs::write(d.join("manifest.sig"), "!!!not base64!!!\n").unwrap();
        }),
        case("manifest.sig: empty", bad_sig, |d, _, _| {
            std::fs::write(d.join("manifest.sig"), "").unwrap();
        }),
        case(
            "whole bundle from another CA (same requests, evil CA)",
            wrong_signer,
            |d, _, evil| {
                std::fs::remove_dir_all(d).unwrap();
                copy_dir(evil, d);
            },
        ),
        case(
            "manifest.json + manifest.sig + ca.pem from the evil CA over genuine files",
            wrong_signer,
            |d, _, evil| {
                for f in ["manifest.json", "manifest.sig", "ca.pem"] {
                    std::fs::copy(evil.join(f), d.join(f)).unwrap();
                }
            },
        ),
        case("extra file at the top", extra, |d, _, _| {
            std::fs::write(d.join("install.sh"), "#!/bin/sh\n").unwrap();
        }),
        case("extra certificate file in certs/", extra, |d, _, _| {
            let f = &pem_files(d)[0];
            std::fs::copy(
                f,
                d.join("certs/ffffffff-0000-0000-0000-000000000000_crt.pem"),
            )
            .unwrap();
        }),
        case("extra hidden file", extra, |d, _, _| {
            std::fs::write(d.join(".DS_Store"), "x").unwrap();
        }),
        case("extra symlink", extra, |d, _, _| {
            std::os::unix::fs::symlink("/etc/hostname", d.join("link")).unwrap();
        }),
        case("extra file in a new sub-directory", extra, |d, _, _| {
            std::fs::create_dir(d.join("more")).unwrap();
            std::fs::write(d.join("more/certs.csv"), "x").unwrap();
        }),
        case("missing certs.csv", missing, |d, _, _| {
            std::fs::remove_file(d.join("certs.csv")).unwrap();
        }),
        case("missing onboard.csv", missing, |d, _, _| {
            std::fs::remove_file(d.join("onboard.csv")).unwrap();
        }),
        case("missing rejects.csv", missing, |d, _, _| {
            std::fs::remove_file(d.join("rejects.csv")).unwrap();
        }),
        case("missing ca.pem", missing, |d, _, _| {
            std::fs::remove_file(d.join("ca.pem")).unwrap();
        }),
        case("missing one certs/*.pem", missing, |d, _, _| {
            std::fs::remove_file(&pem_files(d)[1]).unwrap();
        }),
        case("missing manifest.json", missing, |d, _, _| {
            std::fs::remove_file(d.join("manifest.json")).unwrap();
        }),
        case("missing manifest.sig", missing, |d, _, _| {
            std::fs::remove_file(d.join("manifest.sig")).unwrap();
        }),
        case("empty directory", missing, |d, _, _| {
            std::fs::remove_dir_all(d).unwrap();
            std::fs::create_dir(d).unwrap();
        }),
    ]
}

thread_local! {
    static EVIL_KEY: std::cell::RefCell<Option<nrfca::internal::crypto::P256Key>> =
        const { std::cell::RefCell::new(None) };
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn tamper_matrix_refused_by_verify_and_by_import_before_any_modem_is_touched() {
    let w = World::new(4);
    w.export(&[0, 1], "requests1.csv", false);
    w.export(&[2, 3], "requests2.csv", false);
    let b1 = w.sign("ca", "requests1.csv", "bundle1", &[]);
    let b2 = w.sign("ca", "requests2.csv", "bundle2", &[]);
    w.make_ca("evil", "CN=Tamper Test CA,O=Test");
    let evil = w.sign("evil", "requests1.csv", "evil1", &[]);
    EVIL_KEY.with(|k| *k.borrow_mut() = Some(w.ca_key("evil")));

    let trust_pem = std::fs::read(w.trust()).unwrap();
    assert!(bundle::verify(&b1, &trust_pem).is_ok(), "genuine bundle 1");
    assert!(bundle::verify(&b2, &trust_pem).is_ok(), "genuine bundle 2");

    let before = w.commands();
    let mut table = Vec::new();
    for (i, c) in cases().into_iter().enumerate() {
        let d = w.p(&format!("t{i:02}"));
        copy_dir(&b1, &d);
        (c.tamper)(&d, &b2, &evil);
        let lib = bundle::verify(&d, &trust_pem);
        let err = match lib {
            Ok(_) => panic!("{}: bundle::verify accepted the tampered bundle", c.name),
            Err(e) => e,
        };
        assert!((c.expect)(&err), "{}: unexpected error {err:?}", c.name);
        let o = w.import(&[0, 1, 2, 3], &d, &w.trust());
        assert_eq!(o.status.code(), Some(2), "{}: {}", c.name, stderr(&o));
        assert!(
            stderr(&o).contains("refused before touching any modem"),
            "{}: {}",
            c.name,
            stderr(&o)
        );
        table.push(format!("{:<75} {err}", c.name));
    }

    // The genuine bundle with the evil CA as the trust anchor.
    let evil_trust = w.p("evil").join("ca.pem");
    let e = bundle::verify(&b1, &std::fs::read(&evil_trust).unwrap()).unwrap_err();
    assert!(
        matches!(e, BundleError::WrongSigner { .. }),
        "wrong --trust: {e:?}"
    );
    let o = w.import(&[0, 1], &b1, &evil_trust);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    table.push(format!(
        "{:<75} {e}",
        "genuine bundle, --trust of another CA"
    ));

    // A bundle path that is a file, and one that does not exist.
    let o = w.import(&[0], &w.p("requests1.csv"), &w.trust());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = w.import(&[0], &w.p("nowhere"), &w.trust());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Not one byte reached any modem during all of that.
    assert_eq!(w.commands(), before, "a refused bundle reached a modem");

    eprintln!("tamper matrix ({} rows):", table.len());
    for row in &table {
        eprintln!("  {row}");
    }

    // The test can fail: the genuine bundles still import on their devices.
    let o = w.import(&[0, 1], &b1, &w.trust());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = w.import(&[2, 3], &b2, &w.trust());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Bundles signed by the real CA key whose structure is wrong: the signature alone is not
/// trusted to make a bundle well-formed.
#[test]
fn validly_signed_but_malformed_manifests_are_refused() {
    let w = World::new(2);
    w.export(&[0, 1], "requests1.csv", false);
    let b1 = w.sign("ca", "requests1.csv", "bundle1", &[]);
    let key = w.ca_key("ca");
    let trust_pem = std::fs::read(w.trust()).unwrap();
    let genuine: Manifest =
        serde_json::from_slice(&std::fs::read(b1.join("manifest.json")).unwrap()).unwrap();

    type Edit = Box<dyn Fn(&mut Manifest, &Path)>;
    let cases: Vec<(&str, Edit, Check)> = vec![
        (
            "file name with ..",
            Box::new(|m, _| m.files[0].name = "../bundle1/ca.pem".into()),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "absolute file name",
            Box::new(|m, _| m.files[0].name = "/etc/passwd".into()),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "manifest.json listed",
            Box::new(|m, _| {
                m.files.push(bundle::FileDigest {
                    name: "manifest.json".into(),
                    sha256: "00".repeat(32),
                })
            }),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "a file listed twice",
            Box::new(|m, _| {
                let f = m.files[0].clone();
                m.files.push(f)
            }),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "certs.csv not listed (and removed)",
            Box::new(|m, d| {
                m.files.retain(|f| f.name != "certs.csv");
                std::fs::remove_file(d.join("certs.csv")).unwrap();
            }),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "ca_sha256 of another CA",
            Box::new(|m, _| m.ca_sha256 = "ab".repeat(32)),
            |e| matches!(e, BundleError::CaMismatch),
        ),
        (
            "unknown format",
            Box::new(|m, _| m.format = "nrfca-bundle/99".into()),
            |e| matches!(e, BundleError::MalformedManifest(_)),
        ),
        (
            "certs.csv row whose sha256 column lies (digest re-listed)",
            Box::new(|m, d| {
                let t = read(&d.join("certs.csv"));
                let rows = bundle::parse_certs_csv(t.as_bytes()).unwrap();
                let bad = t.replacen(&rows[0].sha256, &"0".repeat(64), 1);
                std::fs::write(d.join("certs.csv"), &bad).unwrap();
                for f in &mut m.files {
                    if f.name == "certs.csv" {
                        f.sha256 = nrfca::internal::crypto::sha256_hex(bad.as_bytes());
                    }
                }
            }),
            |e| matches!(e, BundleError::MalformedRow { .. }),
        ),
        (
            "certs.csv with another header (digest re-listed)",
            Box::new(|m, d| {
                let t = read(&d.join("certs.csv"));
                let bad = t.replacen("device_uuid,", "uuid,", 1);
                std::fs::write(d.join("certs.csv"), &bad).unwrap();
                for f in &mut m.files {
                    if f.name == "certs.csv" {
                        f.sha256 = nrfca::internal::crypto::sha256_hex(bad.as_bytes());
                    }
                }
            }),
            |e| matches!(e, BundleError::MalformedRow { .. }),
        ),
    ];
    let before = w.commands();
    for (i, (name, edit, expect)) in cases.into_iter().enumerate() {
        let d = w.p(&format!("m{i}"));
        copy_dir(&b1, &d);
        let mut m = genuine.clone();
        edit(&mut m, &d);
        let mut json = serde_json::to_vec_pretty(&m).unwrap();
        json.push(b'\n');
        std::fs::write(d.join("manifest.json"), &json).unwrap();
        let sig = key.sign_der(&json).unwrap();
        std::fs::write(
            d.join("manifest.sig"),
            format!("{}\n", nrfca::internal::crypto::b64_encode(&sig)),
        )
        .unwrap();
        let e = match bundle::verify(&d, &trust_pem) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => e,
        };
        assert!(expect(&e), "{name}: {e:?}");
        let o = w.import(&[0, 1], &d, &w.trust());
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        eprintln!("  signed but malformed: {name:<55} {e}");
    }
    assert_eq!(w.commands(), before);
    // Control: re-signing the genuine manifest unchanged is accepted.
    let d = w.p("resigned");
    copy_dir(&b1, &d);
    let json = std::fs::read(d.join("manifest.json")).unwrap();
    std::fs::write(
        d.join("manifest.sig"),
        nrfca::internal::crypto::b64_encode(&key.sign_der(&json).unwrap()),
    )
    .unwrap();
    assert!(bundle::verify(&d, &trust_pem).is_ok());
}

/// A storage device can answer two reads of one file differently. Here certs.csv is a FIFO
/// that serves the genuine bytes on the first open and a forged row set on every later open:
/// whatever `verify` returns must be the bytes whose SHA-256 it checked.
#[test]
fn verify_returns_exactly_the_bytes_it_hashed() {
    let w = World::new(3);
    w.export(&[0, 1], "requests1.csv", false);
    w.export(&[2], "requests2.csv", false);
    let b1 = w.sign("ca", "requests1.csv", "bundle1", &[]);
    let b2 = w.sign("ca", "requests2.csv", "bundle2", &[]);
    let trust_pem = std::fs::read(w.trust()).unwrap();
    let genuine = read(&b1.join("certs.csv"));
    let genuine_rows = bundle::parse_certs_csv(genuine.as_bytes()).unwrap();
    // Forged: a well-formed certs.csv whose rows are another batch's (same CA).
    let forged = read(&b2.join("certs.csv"));

    let d = w.p("fifo");
    copy_dir(&b1, &d);
    std::fs::remove_file(d.join("certs.csv")).unwrap();
    let fifo = d.join("certs.csv");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let writer_path = fifo.clone();
    let (g, f) = (genuine.clone(), forged.clone());
    std::thread::spawn(move || {
        use std::io::Write;
        for round in 0..16 {
            // Blocks until a reader opens the FIFO.
            let Ok(mut fh) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
                return;
            };
            let data = if round == 0 { &g } else { &f };
            let _ = fh.write_all(data.as_bytes());
            drop(fh);
            // Let this reader see EOF and close before the next open can succeed (an open
            // for writing succeeds at once while a reader still holds the FIFO).
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let dd = d.clone();
    let tp = trust_pem.clone();
    std::thread::spawn(move || {
        let _ = tx.send(bundle::verify(&dd, &tp));
    });
    let res = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("verify finished");
    // Refusing a FIFO outright is fine; returning rows other than the bytes hashed is not.
    // (The first open served the genuine bytes, so a verifier that reads once and accepts
    // a FIFO returns exactly them.)
    match res {
        Ok(v) => assert_eq!(
            v.certs, genuine_rows,
            "verify returned rows it never hashed (it read certs.csv twice)"
        ),
        // Refused as what it is (verify opens regular files only), not for any other reason.
        Err(e) => {
            let chain = nrfca::error_chain(&e);
            assert!(
                chain.contains("certs.csv") && chain.contains("not a regular file"),
                "a FIFO certs.csv must be refused as not a regular file: {chain}"
            );
        }
    }
}

#[test]
fn replay_matrix() {
    let w = World::new(4);
    w.export(&[0, 1], "requests1.csv", false);
    w.export(&[2, 3], "requests2.csv", false);
    let b1 = w.sign("ca", "requests1.csv", "bundle1", &[]);
    let b2 = w.sign("ca", "requests2.csv", "bundle2", &[]);

    // R1: batch 1's bundle where batch 2 is expected: read-only identification, then each
    // device refused with no-certificate; exit 1; nothing written.
    let before = w.commands();
    let o = w.import(&[2, 3], &b1, &w.trust());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for d in report["devices"].as_array().unwrap() {
        assert_eq!(d["code"], "no-certificate", "{d}");
    }
    let after = w.commands();
    for i in 0..4 {
        let new = &after[i][before[i].len()..];
        assert!(writes(new).is_empty(), "modem {i}: {new:?}");
        assert!(w.sim.snapshot(i).credential(TAG, 1).is_none());
    }
    eprintln!("  replay: batch 1 bundle on batch 2 devices -> no-certificate, exit 1, no write");

    // The right bundles import.
    let o = w.import(&[0, 1], &b1, &w.trust());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = w.import(&[2, 3], &b2, &w.trust());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // R2: the same bundle imported twice: already-done, no write, no CFUN change, exit 0.
    let before = w.commands();
    let o = w.import(&[0, 1], &b1, &w.trust());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for d in report["devices"].as_array().unwrap() {
        assert_eq!(d["status"], "already-done", "{d}");
    }
    let after = w.commands();
    for i in 0..4 {
        assert!(writes(&after[i][before[i].len()..]).is_empty());
    }
    eprintln!("  replay: same bundle twice -> already-done, exit 0, no write");

    // R3: device 0 gets a new key (--force), is re-signed with --reissue; the old bundle is
    // refused for it before and after the new one is imported, and never overwrites it.
    w.export(&[0], "requests3.csv", true);
    let b3 = w.sign("ca", "requests3.csv", "bundle3", &["--reissue"]);
    for round in 0..2 {
        let before = w.commands();
        let o = w.import(&[0], &b1, &w.trust());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            report["devices"][0]["code"], "cert-key-mismatch",
            "{report}"
        );
        let after = w.commands();
        assert!(
            writes(&after[0][before[0].len()..]).is_empty(),
            "{:?}",
            &after[0][before[0].len()..]
        );
        if round == 0 {
            let o = w.import(&[0], &b3, &w.trust());
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        }
    }
    let new_cert = bundle::verify(&b3, &std::fs::read(w.trust()).unwrap())
        .unwrap()
        .certs
        .remove(0)
        .certificate_pem;
    let snap = w.sim.snapshot(0);
    assert_eq!(
        snap.credential(TAG, 1).and_then(|c| c.content.clone()),
        Some(new_cert),
        "the newer certificate stays"
    );
    let st = State::open_existing(&w.state()).unwrap();
    let rec = st.device(&snap.imei, TAG).unwrap().unwrap();
    assert_eq!(
        rec.state,
        DeviceState::Imported,
        "a refused replay keeps imported"
    );
    eprintln!(
        "  replay: old bundle after --force re-export -> cert-key-mismatch, exit 1, no write"
    );
}
