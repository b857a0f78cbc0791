//! KEYGEN checks end to end: the real modem sample, one crafted string per reject code,
//! generator output judged by second implementations (OpenSSL, Python `cryptography` +
//! `cbor2`, Nordic's `modem_credentials_parser`), and `nrfca inspect` / `nrfca gen`.

use nrfca::internal::crypto::{self, P256Key};
use nrfca::internal::keygen::cbor;
use nrfca::internal::keygen::cose;
use nrfca::internal::keygen::tlv::{self, tag};
use nrfca::keygen::{self, check, CheckOptions, DeviceIdMode};
use nrfca::reject::RejectCode;
use nrfca::sim::generate::{self, GenOptions, ModemIdentity, SubjectAttr};
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::{bin_plain, openssl, tool_missing, venv, SEED};

const SEED_UUID: &str = "50503041-3539-47eb-807b-102dbb423b9a";

// ---- external tools -------------------------------------------------------------------

/// The venv's python if it has `modules`; None (with a note) otherwise.
fn python_with(modules: &str) -> Option<PathBuf> {
    let py = venv().join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    tool_missing(&format!("{} cannot import {modules}", py.display()));
    None
}

// ---- crafting helpers -----------------------------------------------------------------

fn opts() -> CheckOptions {
    CheckOptions::default()
}

fn code_of(s: &str, o: &CheckOptions) -> RejectCode {
    match check(s, o) {
        Ok(v) => panic!("expected a reject, got {v:?}"),
        Err(r) => {
            assert!(!r.detail.is_empty());
            r.code
        }
    }
}

/// A KEYGEN string over `first` with a correct digest, signed by `m`'s identity key.
fn wrap(m: &ModemIdentity, first: &[u8], msg_type: i64, sec_tag: u32) -> String {
    let payload = cose::keygen_payload(
        msg_type,
        &m.uuid(),
        sec_tag,
        &crypto::sha256(first),
        &[7; 16],
    );
    let c = generate::cose_sign1(m.identity_key(), &payload).unwrap();
    generate::encode(first, &c)
}

fn default_csr(m: &ModemIdentity, key: &P256Key) -> Vec<u8> {
    generate::build_csr(key, &[SubjectAttr::cn(&m.uuid_string())], true).unwrap()
}

/// A COSE_Sign1 over arbitrary payload bytes, with the modem's headers.
fn cose_with_payload(m: &ModemIdentity, payload: &[u8]) -> Vec<u8> {
    generate::cose_sign1(m.identity_key(), payload).unwrap()
}

// ---- the seed ---------------------------------------------------------------------------

#[test]
fn seed_is_accepted_with_defaults() {
    let v = check(SEED, &opts()).unwrap();
    assert_eq!(v.uuid, SEED_UUID);
    assert_eq!(v.device_id, SEED_UUID);
    assert_eq!(v.sec_tag, 16842753);
    assert!(v.null_param);
    assert_eq!(crypto::sha256(&v.csr_der), {
        let p = keygen::parse(SEED).unwrap();
        p.payload.digest
    });
    // The reply line exactly as the modem printed it (tests/data/seed-keygen-reply.txt).
    let line = common::SEED_REPLY.trim_end();
    assert!(line.starts_with("%KEYGEN: \""));
    assert_eq!(check(line, &opts()).unwrap(), v);
}

// ---- one crafted string per reject code ------------------------------------------------

#[test]
fn malformed_input() {
    assert_eq!(code_of("", &opts()), RejectCode::MalformedInput);
    assert_eq!(
        code_of(&format!("{SEED}{}", "A".repeat(17 * 1024)), &opts()),
        RejectCode::MalformedInput
    );
    assert_eq!(
        code_of(&format!("{SEED} trailing"), &opts()),
        RejectCode::MalformedInput
    );
    assert_eq!(
        code_of(&format!("{SEED}.AAAA"), &opts()),
        RejectCode::MalformedInput
    );
    assert_eq!(
        code_of("%KEYGEN: \"abc", &opts()),
        RejectCode::MalformedInput
    );
    assert_eq!(code_of("héllo.wörld", &opts()), RejectCode::MalformedInput);
}

#[test]
fn bad_base64() {
    let (a, b) = SEED.split_once('.').unwrap();
    // Standard alphabet instead of base64url.
    let std_alphabet = a.replace('-', "+").replace('_', "/");
    assert_eq!(
        code_of(&format!("{std_alphabet}.{b}"), &opts()),
        RejectCode::BadBase64
    );
    // One character cut off the end of the COSE half: an impossible length.
    let cut = &b[..b.len() - 3];
    assert_eq!(
        code_of(&format!("{a}.{cut}"), &opts()),
        RejectCode::BadBase64
    );
}

#[test]
fn missing_attestation() {
    let (a, _) = SEED.split_once('.').unwrap();
    assert_eq!(code_of(a, &opts()), RejectCode::MissingAttestation);
    assert_eq!(
        code_of(&format!("{a}."), &opts()),
        RejectCode::MissingAttestation
    );
}

#[test]
fn malformed_attestation() {
    let m = ModemIdentity::random().unwrap();
    let (key, _) = P256Key::generate().unwrap();
    let d = default_csr(&m, &key);
    let digest = crypto::sha256(&d);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("payload array of 4", {
            let mut p = vec![0xd9, 0xd9, 0xf7, 0x84, 0x09];
            cbor::write_bytes(&mut p, &m.uuid());
            cbor::write_bytes(&mut p, &[0x11]);
            cbor::write_bytes(&mut p, &digest);
            cose_with_payload(&m, &p)
        }),
        ("uuid of 15 bytes", {
            let mut p = vec![0xd9, 0xd9, 0xf7, 0x85, 0x09];
            cbor::write_bytes(&mut p, &m.uuid()[..15]);
            cbor::write_bytes(&mut p, &[0x11]);
            cbor::write_bytes(&mut p, &digest);
            cbor::write_bytes(&mut p, &[0; 16]);
            cose_with_payload(&m, &p)
        }),
        ("sec_tag not an int", {
            let mut p = vec![0xd9, 0xd9, 0xf7, 0x85, 0x09];
            cbor::write_bytes(&mut p, &m.uuid());
            cbor::write_bytes(&mut p, &[0x61, b'x']);
            cbor::write_bytes(&mut p, &digest);
            cbor::write_bytes(&mut p, &[0; 16]);
            cose_with_payload(&m, &p)
        }),
        ("sec_tag over 32 bits", {
            let mut p = vec![0xd9, 0xd9, 0xf7, 0x85, 0x09];
            cbor::write_bytes(&mut p, &m.uuid());
            cbor::write_bytes(&mut p, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]);
            cbor::write_bytes(&mut p, &digest);
            cbor::write_bytes(&mut p, &[0; 16]);
            cose_with_payload(&m, &p)
        }),
        ("payload not CBOR", cose_with_payload(&m, b"\xff\xff")),
        (
            "COSE array of 3",
            vec![0xd2, 0x83, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x40],
        ),
        ("nil payload", {
            let p = cose::keygen_payload(9, &m.uuid(), 1, &digest, &[0; 16]);
            cose::sign1(m.identity_key(), &p, true).unwrap()
        }),
        ("trailing byte", {
            let mut c = cose_with_payload(
                &m,
                &cose::keygen_payload(9, &m.uuid(), 1, &digest, &[0; 16]),
            );
            c.push(0);
            c
        }),
        ("indefinite array", vec![0xd2, 0x9f, 0xff]),
        ("claimed 4 GiB payload", {
            let mut c = vec![
                0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa0, 0x5a, 0xff, 0xff, 0xff, 0xff,
            ];
            c.extend_from_slice(&[0; 8]);
            c
        }),
        ("deep nesting in the header", {
            let mut c = vec![0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x01];
            c.extend(std::iter::repeat(0x81).take(5000));
            c.push(0);
            c
        }),
    ];
    for (what, c) in cases {
        let s = generate::encode(&d, &c);
        let r = check(&s, &opts()).unwrap_err();
        assert_eq!(r.code, RejectCode::MalformedAttestation, "{what}: {r}");
    }
}

#[test]
fn wrong_message_type() {
    let m = ModemIdentity::random().unwrap();
    let g = m
        .keygen(
            16842753,
            &GenOptions {
                response_content: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(code_of(&g.keygen, &opts()), RejectCode::WrongMessageType);
    let (key, _) = P256Key::generate().unwrap();
    let s = wrap(&m, &default_csr(&m, &key), 3, 16842753);
    assert_eq!(code_of(&s, &opts()), RejectCode::WrongMessageType);
}

#[test]
fn malformed_csr() {
    let m = ModemIdentity::random().unwrap();
    assert_eq!(
        code_of(&wrap(&m, b"not a csr", 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
    assert_eq!(
        code_of(&wrap(&m, &[], 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
    let (key, _) = P256Key::generate().unwrap();
    let good = default_csr(&m, &key);
    // Trailing byte after the CSR.
    let mut t = good.clone();
    t.push(0);
    assert_eq!(
        code_of(&wrap(&m, &t, 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
    // Truncated.
    assert_eq!(
        code_of(&wrap(&m, &good[..good.len() - 1], 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
    // Version 1.
    let name = generate::name_der(&[SubjectAttr::cn(&m.uuid_string())]);
    let spki = generate::spki_p256_der(&key.public_key());
    let info = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::INTEGER, &[1]),
            &name,
            &spki,
            &generate::modem_extension_request(),
        ],
    );
    let d = generate::build_csr_from_info(&key, &info, true).unwrap();
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
    // ecdsa-with-SHA256 with an INTEGER parameter.
    let info = generate::info_der(&name, &spki, &generate::modem_extension_request());
    let sig = key.sign_der(&info).unwrap();
    let alg = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::OID, nrfca::internal::oid::ECDSA_WITH_SHA256.as_bytes()),
            &tlv::tlv(tag::INTEGER, &[0]),
        ],
    );
    let d = generate::assemble(&info, &alg, &sig);
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 16842753), &opts()),
        RejectCode::MalformedCsr
    );
}

#[test]
fn unsupported_key() {
    let m = ModemIdentity::random().unwrap();
    let (key, _) = P256Key::generate().unwrap();
    let name = generate::name_der(&[SubjectAttr::cn(&m.uuid_string())]);
    let craft = |spki: &[u8]| {
        let info = generate::info_der(&name, spki, &generate::modem_extension_request());
        let d = generate::build_csr_from_info(&key, &info, true).unwrap();
        wrap(&m, &d, 9, 16842753)
    };
    // A real P-384 key (ring), its SPKI.
    let rng = ring::rand::SystemRandom::new();
    let p384 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        p384.as_ref(),
        &rng,
    )
    .unwrap();
    use ring::signature::KeyPair as _;
    let mut bits = vec![0u8];
    bits.extend_from_slice(kp.public_key().as_ref());
    let p384_spki = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::cons(
                tag::SEQUENCE,
                &[
                    &tlv::tlv(tag::OID, nrfca::internal::oid::EC_PUBLIC_KEY.as_bytes()),
                    &tlv::tlv(tag::OID, &[0x2b, 0x81, 0x04, 0x00, 0x22]),
                ],
            ),
            &tlv::tlv(tag::BIT_STRING, &bits),
        ],
    );
    let r = check(&craft(&p384_spki), &opts()).unwrap_err();
    assert_eq!(r.code, RejectCode::UnsupportedKey);
    assert!(r.detail.contains("P-384"), "{r}");
    // An RSA SPKI.
    let rsa_key = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::INTEGER, &[0x00, 0xc1, 0x02, 0x03]),
            &tlv::tlv(tag::INTEGER, &[1, 0, 1]),
        ],
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(&rsa_key);
    let rsa_spki = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::cons(
                tag::SEQUENCE,
                &[
                    &tlv::tlv(
                        tag::OID,
                        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                    ),
                    &[0x05, 0x00],
                ],
            ),
            &tlv::tlv(tag::BIT_STRING, &bits),
        ],
    );
    assert_eq!(
        code_of(&craft(&rsa_spki), &opts()),
        RejectCode::UnsupportedKey
    );
    // A point that is not on the curve.
    let mut bad_point = key.public_key();
    bad_point[64] ^= 1;
    assert_eq!(
        code_of(&craft(&generate::spki_p256_der(&bad_point)), &opts()),
        RejectCode::UnsupportedKey
    );
    // A compressed point (the modem never sends one).
    let mut compressed = vec![0x02 | (key.public_key()[64] & 1)];
    compressed.extend_from_slice(&key.public_key()[1..33]);
    let spki = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::cons(
                tag::SEQUENCE,
                &[
                    &tlv::tlv(tag::OID, nrfca::internal::oid::EC_PUBLIC_KEY.as_bytes()),
                    &tlv::tlv(tag::OID, nrfca::internal::oid::SECP256R1.as_bytes()),
                ],
            ),
            &tlv::tlv(tag::BIT_STRING, &[&[0u8][..], &compressed].concat()),
        ],
    );
    assert_eq!(code_of(&craft(&spki), &opts()), RejectCode::UnsupportedKey);
    // ecdsa-with-SHA384 signature algorithm on a P-256 key.
    let info = generate::info_der(&name, &generate::spki_p256_der(&key.public_key()), &[]);
    let alg = tlv::cons(
        tag::SEQUENCE,
        &[&tlv::tlv(
            tag::OID,
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        )],
    );
    let d = generate::assemble(&info, &alg, &key.sign_der(&info).unwrap());
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 16842753), &opts()),
        RejectCode::UnsupportedKey
    );
}

#[test]
fn bad_csr_signature() {
    let m = ModemIdentity::random().unwrap();
    let (key, _) = P256Key::generate().unwrap();
    let (other, _) = P256Key::generate().unwrap();
    // Signed by another key.
    let info = generate::info_der(
        &generate::name_der(&[SubjectAttr::cn(&m.uuid_string())]),
        &generate::spki_p256_der(&key.public_key()),
        &generate::modem_extension_request(),
    );
    let d = generate::build_csr_from_info(&other, &info, true).unwrap();
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 16842753), &opts()),
        RejectCode::BadCsrSignature
    );
    // Subject edited after signing (digest recomputed, so only the signature catches it).
    let good = default_csr(&m, &key);
    let pos = good
        .windows(4)
        .position(|w| w == &m.uuid_string().as_bytes()[..4])
        .unwrap();
    let mut edited = good.clone();
    edited[pos] ^= 0x01;
    assert_eq!(
        code_of(&wrap(&m, &edited, 9, 16842753), &opts()),
        RejectCode::BadCsrSignature
    );
    // Signature bytes garbled: not even DER.
    let mut g = good.clone();
    let n = g.len();
    g[n - 5] ^= 0xff;
    assert_eq!(
        code_of(&wrap(&m, &g, 9, 16842753), &opts()),
        RejectCode::BadCsrSignature
    );
}

#[test]
fn digest_mismatch_foreign_csr_glued_to_genuine_cose() {
    // The attack Nordic's parser only logs: a foreign CSR with a genuine device's COSE half.
    let m = ModemIdentity::random().unwrap();
    let genuine = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
    let (_, cose_half) = genuine.split_once('.').unwrap();
    let (evil_key, _) = P256Key::generate().unwrap();
    let evil = generate::build_csr(&evil_key, &[SubjectAttr::cn(&m.uuid_string())], true).unwrap();
    let s = format!("{}.{cose_half}", crypto::b64url_encode(&evil));
    assert_eq!(code_of(&s, &opts()), RejectCode::DigestMismatch);
    // Same with the seed's COSE half.
    let (_, seed_cose) = SEED.split_once('.').unwrap();
    let s = format!("{}.{seed_cose}", crypto::b64url_encode(&evil));
    assert_eq!(code_of(&s, &opts()), RejectCode::DigestMismatch);
}

#[test]
fn identity_mismatch() {
    let m = ModemIdentity::random().unwrap();
    let gen = |attrs: &str| {
        m.keygen(
            16842753,
            &GenOptions {
                attributes: Some(attrs.into()),
                ..Default::default()
            },
        )
        .unwrap()
        .keygen
    };
    assert_eq!(
        code_of(&gen("CN=evil"), &opts()),
        RejectCode::IdentityMismatch
    );
    assert_eq!(
        code_of(&gen("O=Nordic"), &opts()),
        RejectCode::IdentityMismatch
    );
    let two = gen(&format!("CN={},CN={}", m.uuid_string(), m.uuid_string()));
    assert_eq!(code_of(&two, &opts()), RejectCode::IdentityMismatch);
    let upper = gen(&format!("CN={}", m.uuid_string().to_uppercase()));
    assert_eq!(code_of(&upper, &opts()), RejectCode::IdentityMismatch);
    // Extra attributes with the right CN pass: only the CN identifies the device.
    assert!(check(
        &gen(&format!("O=Nordic Semiconductor,CN={}", m.uuid_string())),
        &opts()
    )
    .is_ok());

    // --device-id cn.
    let imei = gen("CN=nrf-355025930000000");
    assert_eq!(code_of(&imei, &opts()), RejectCode::IdentityMismatch);
    let cn = CheckOptions {
        device_id: DeviceIdMode::Cn,
        ..opts()
    };
    assert_eq!(check(&imei, &cn).unwrap().device_id, "nrf-355025930000000");
    let with_imei = CheckOptions {
        imei: Some("355025930000000".into()),
        ..cn.clone()
    };
    assert!(check(&imei, &with_imei).is_ok());
    let other_imei = CheckOptions {
        imei: Some("355025930000001".into()),
        ..cn.clone()
    };
    assert_eq!(code_of(&imei, &other_imei), RejectCode::IdentityMismatch);
    assert_eq!(
        code_of(&gen("CN=nrf-35502593000000"), &cn),
        RejectCode::IdentityMismatch
    );
    assert_eq!(code_of(&gen("CN=evil"), &cn), RejectCode::IdentityMismatch);
    // The UUID is fine in cn mode too, whatever the IMEI option says.
    let by_uuid = m.keygen(16842753, &GenOptions::default()).unwrap().keygen;
    assert_eq!(
        check(&by_uuid, &other_imei).unwrap().device_id,
        m.uuid_string()
    );
}

#[test]
fn sec_tag_mismatch_and_negative_tags() {
    let m = ModemIdentity::random().unwrap();
    let g = m.keygen(42, &GenOptions::default()).unwrap().keygen;
    assert_eq!(code_of(&g, &opts()), RejectCode::SecTagMismatch);
    let o42 = CheckOptions {
        sec_tag: Some(42),
        ..opts()
    };
    assert_eq!(check(&g, &o42).unwrap().sec_tag, 42);
    let any = CheckOptions {
        sec_tag: None,
        ..opts()
    };
    assert!(check(&g, &any).is_ok());
    // Tags ≥ 2^31 travel as negative CBOR integers and come back unsigned.
    let big = m.keygen(4294967294, &GenOptions::default()).unwrap().keygen;
    let p = keygen::parse(&big).unwrap();
    assert!(
        p.cose_bytes.windows(3).any(|w| w == [0x41, 0x21, 0x58]) || p.payload.sec_tag == 4294967294
    );
    assert_eq!(check(&big, &any).unwrap().sec_tag, 4294967294);
}

#[test]
fn checks_run_in_spec_order() {
    // A string wrong in several ways reports the earliest check.
    let m = ModemIdentity::random().unwrap();
    let (key, _) = P256Key::generate().unwrap();
    let (other, _) = P256Key::generate().unwrap();
    // Bad signature + wrong CN + wrong sec_tag → bad-csr-signature.
    let info = generate::info_der(
        &generate::name_der(&[SubjectAttr::cn("evil")]),
        &generate::spki_p256_der(&key.public_key()),
        &[],
    );
    let d = generate::build_csr_from_info(&other, &info, true).unwrap();
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 5), &opts()),
        RejectCode::BadCsrSignature
    );
    // Wrong message type + broken CSR → wrong-message-type.
    assert_eq!(
        code_of(&wrap(&m, b"junk", 8, 5), &opts()),
        RejectCode::WrongMessageType
    );
    // Wrong CN + wrong sec_tag → identity-mismatch.
    let d = generate::build_csr(&key, &[SubjectAttr::cn("evil")], true).unwrap();
    assert_eq!(
        code_of(&wrap(&m, &d, 9, 5), &opts()),
        RejectCode::IdentityMismatch
    );
}

// ---- generator output against second implementations ---------------------------------

fn write_tmp(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn openssl_verifies_generated_csrs() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = ModemIdentity::random().unwrap();
    for null_param in [true, false] {
        let g = m
            .keygen(
                16842753,
                &GenOptions {
                    null_param,
                    ..Default::default()
                },
            )
            .unwrap();
        let p = keygen::parse(&g.keygen).unwrap();
        let f = write_tmp(&dir, &format!("csr-{null_param}.der"), &p.der);
        let out = Command::new(openssl)
            .args(["req", "-inform", "DER", "-in"])
            .arg(&f)
            .args(["-verify", "-noout", "-text"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "null={null_param}: {text}");
        assert!(
            text.contains("verify OK")
                || text.contains("Certificate request self-signature verify OK"),
            "{text}"
        );
        assert!(
            text.contains(&format!("CN = {}", m.uuid_string()))
                || text.contains(&format!("CN={}", m.uuid_string())),
            "{text}"
        );
        assert!(
            text.contains("prime256v1") || text.contains("P-256"),
            "{text}"
        );
        assert!(
            text.contains("Digital Signature, Non Repudiation, Key Encipherment, Key Agreement"),
            "{text}"
        );
    }
    // And the seed, NULL quirk and all.
    let p = keygen::parse(SEED).unwrap();
    let f = write_tmp(&dir, "seed.der", &p.der);
    let out = Command::new(openssl)
        .args(["req", "-inform", "DER", "-in"])
        .arg(&f)
        .args(["-verify", "-noout"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PY_ORACLE: &str = r#"
import sys, base64, hashlib, cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives import hashes
def d(s): return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))
keygen, identity_hex, null_param = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
a, b = keygen.split('.')
der, cose = d(a), d(b)
outer = cbor2.loads(cose)
assert isinstance(outer, cbor2.CBORTag) and outer.tag == 18, outer
prot, unprot, payload, sig = outer.value
assert prot == bytes.fromhex('a10126'), prot
assert unprot == {4: b'\x21'}, unprot
assert payload[:3] == bytes.fromhex('d9d9f7'), payload[:3]
inner = cbor2.loads(payload)
# cbor2 strips the self-describe tag 55799 itself.
inner = inner.value if isinstance(inner, cbor2.CBORTag) else inner
msg_type, uuid, sec_tag, digest, nonce = inner
assert msg_type == 9 and len(uuid) == 16 and len(nonce) == 16
assert cbor2.loads(sec_tag) == int(sys.argv[4]) or (cbor2.loads(sec_tag) & 0xffffffff) == int(sys.argv[4])
assert digest == hashlib.sha256(der).digest()
# COSE ES256 over the standard Sig_structure, with the simulated identity key.
pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(identity_hex))
tbs = cbor2.dumps(['Signature1', prot, b'', payload])
r, s = int.from_bytes(sig[:32], 'big'), int.from_bytes(sig[32:], 'big')
pub.verify(utils.encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
if not null_param:
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    cn = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    import uuid as U
    assert cn == str(U.UUID(bytes=uuid)), cn
    assert isinstance(csr.public_key().curve, ec.SECP256R1)
print('ok')
"#;

#[test]
fn python_cryptography_and_cbor2_agree() {
    let Some(py) = python_with("cryptography, cbor2") else {
        return;
    };
    let m = ModemIdentity::random().unwrap();
    for (null_param, sec_tag) in [(false, 16842753u32), (true, 42), (false, 4294967294)] {
        let g = m
            .keygen(
                sec_tag,
                &GenOptions {
                    null_param,
                    ..Default::default()
                },
            )
            .unwrap();
        let out = Command::new(&py)
            .args([
                "-c",
                PY_ORACLE,
                &g.keygen,
                &hex::encode(m.identity_public_key()),
            ])
            .arg(if null_param { "1" } else { "0" })
            .arg(sec_tag.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "null={null_param} tag={sec_tag}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const PY_NORDIC: &str = r#"
import sys, logging, io
stream = io.StringIO()
logging.basicConfig(level=logging.INFO, stream=stream)
from nrfcloud_utils import modem_credentials_parser as p
p.logger.setLevel(logging.INFO)
csr_pem, pub, uuid, sec_tag = p.parse_keygen_output(sys.argv[1])
print(uuid, sec_tag)
print(stream.getvalue())
"#;

#[test]
fn nordic_parser_accepts_generated_keygen() {
    let Some(py) = python_with("nrfcloud_utils.modem_credentials_parser") else {
        return;
    };
    let m = ModemIdentity::random().unwrap();
    let g = m.keygen(16842753, &GenOptions::default()).unwrap();
    let out = Command::new(&py)
        .args(["-c", PY_NORDIC, &g.keygen])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("{} 16842753", m.uuid_string())),
        "{text}"
    );
    assert!(text.contains("COSE digest matches payload"), "{text}");
}

// ---- the binary -----------------------------------------------------------------------

#[test]
fn inspect_seed_human_and_json() {
    let out = bin_plain().args(["inspect", SEED]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(SEED_UUID), "{text}");
    assert!(text.contains("16842753"), "{text}");
    assert!(text.contains("NULL parameter"), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");

    let line = format!("%KEYGEN: \"{SEED}\"");
    let out = bin_plain()
        .args(["inspect", "--json", &line])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kind"], "keygen");
    assert_eq!(j["valid"], true);
    assert_eq!(j["keygen"]["uuid"], SEED_UUID);
    assert_eq!(j["keygen"]["sec_tag"], 16842753);
    assert_eq!(j["keygen"]["msg_type"], 9);
    assert_eq!(j["keygen"]["digest_ok"], true);
    assert_eq!(j["keygen"]["csr"]["null_param"], true);
    assert_eq!(j["keygen"]["csr"]["signature_ok"], true);
    assert_eq!(j["keygen"]["csr"]["cn"], SEED_UUID);
}

#[test]
fn inspect_help_names_example_and_exit_codes() {
    let out = bin_plain().args(["inspect", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Example:"), "{text}");
    assert!(text.contains("0 valid, 1 judged bad"), "{text}");
    // A standard-base64 string is judged (bad-base64), not mistaken for a missing file.
    let (a, b) = SEED.split_once('.').unwrap();
    let std_b64 = format!("{}/.{b}", a);
    let out = bin_plain().args(["inspect", &std_b64]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inspect_rejects_and_unreadable() {
    // Judged bad: exit 1 with the code.
    let out = bin_plain()
        .args(["inspect", "--sec-tag", "42", SEED])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sec-tag-mismatch"));
    let out = bin_plain()
        .args(["inspect", "--any-sec-tag", "--json", SEED])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (a, _) = SEED.split_once('.').unwrap();
    let out = bin_plain().args(["inspect", "--json", a]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["code"], "missing-attestation");
    // The CSR half still decodes.
    assert_eq!(j["keygen"]["csr"]["cn"], SEED_UUID);
    // Unreadable: exit 2.
    let out = bin_plain()
        .args(["inspect", "/nonexistent/requests.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn gen_then_inspect_requests_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let out = bin_plain()
        .args(["gen", "--count", "40", "--threads", "2", "--out"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().next(), Some(nrfca::requests::HEADER));
    assert_eq!(text.lines().count(), 41);
    // gen never overwrites.
    let again = bin_plain()
        .args(["gen", "--count", "1", "--out"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));

    let out = bin_plain()
        .args(["inspect", "--json"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kind"], "requests");
    assert_eq!(j["requests"]["total"], 40);
    assert_eq!(j["requests"]["ok"], 40);

    // Lines format, another sec_tag; one line edited.
    let lines = dir.path().join("keygen.txt");
    let out = bin_plain()
        .args([
            "gen",
            "--count",
            "3",
            "--format",
            "lines",
            "--sec-tag",
            "42",
            "--out",
        ])
        .arg(&lines)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut text = std::fs::read_to_string(&lines).unwrap();
    text.push_str(&format!("%KEYGEN: \"{SEED}\"\n"));
    std::fs::write(&lines, text).unwrap();
    let out = bin_plain()
        .args(["inspect", "--sec-tag", "42", "--json"])
        .arg(&lines)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["requests"]["ok"], 3);
    assert_eq!(j["requests"]["rejected"]["sec-tag-mismatch"], 1);
    assert_eq!(j["requests"]["items"][3]["line"], 4);
}

#[test]
fn inspect_certificate_and_csr_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys/nrf-cloud-coap-ca.pem");
    if root.exists() {
        let out = bin_plain()
            .args(["inspect", "--json"])
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["kind"], "certificate");
        assert_eq!(j["certificates"][0]["self_signed"], true);
        assert_eq!(j["certificates"][0]["signature_ok"], true);
        assert_eq!(
            j["input_sha256"],
            crypto::sha256_hex(&std::fs::read(&root).unwrap())
        );
    }
    let p = keygen::parse(SEED).unwrap();
    let der_file = write_tmp(&dir, "seed.csr.der", &p.der);
    let out = bin_plain()
        .args(["inspect", "--json"])
        .arg(&der_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kind"], "csr");
    assert_eq!(j["csr"]["null_param"], true);
}

#[test]
fn attesttoken_round_trip_through_inspect() {
    let m = ModemIdentity::random().unwrap();
    let t = m.attesttoken(Some([0xab; 16]), 3, [0x11; 16]).unwrap();
    let out = bin_plain()
        .args(["inspect", "--json", &format!("%ATTESTTOKEN: \"{t}\"")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kind"], "attesttoken");
    assert_eq!(j["attesttoken"]["uuid"], m.uuid_string());
    assert_eq!(j["attesttoken"]["device_type_name"], "nRF9160 SICA");
    assert_eq!(j["attesttoken"]["nonce"], "ab".repeat(16));
}
