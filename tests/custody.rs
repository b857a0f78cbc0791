//! Key custody against a real PKCS#11 token: SoftHSM2 with tokens this test process creates in
//! a temporary `SOFTHSM2_CONF` + token directory. In-token generation and import, signatures
//! checked by ring and openssl, the key's CKA_SENSITIVE / CKA_EXTRACTABLE read through PKCS#11
//! and with OpenSC's `pkcs11-tool`, wrong PIN, missing token and key, per-worker sessions.
//! Skips (with a note) where SoftHSM2 is absent; fails under `NRFCA_REQUIRE_TOOLS=1`.

mod common;

use common::{have_openssl, softhsm_module, tool_missing};
use nrfca::signer::key::pkcs11::{KeyUri, Pin, Pkcs11Error, Pkcs11Key, TokenSelector};
use nrfca::signer::key::{CaSigner, Custody};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SO_PIN: &str = "87654321";
/// Tokens made once per test process, each used by one test, with its user PIN.
const TOKENS: [(&str, &str); 6] = [
    ("gen", "1111"),
    ("import", "2222"),
    ("wrongpin", "3333"),
    ("workers", "4444"),
    ("lookup", "5555"),
    ("gone", "6666"),
];

struct Hsm {
    module: PathBuf,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

/// Tests share the module in this process: the one that deletes a token under a live key
/// takes this for writing, the others for reading, so no test sees a token half gone.
static TOKEN_DIR: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    TOKEN_DIR.read().unwrap_or_else(|p| p.into_inner())
}

fn hsm() -> Option<&'static Hsm> {
    static HSM: OnceLock<Option<Hsm>> = OnceLock::new();
    let h = HSM.get_or_init(|| {
        let module = softhsm_module()?;
        let util_ok = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !util_ok {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Before the module is loaded in this process: SoftHSM2 reads it at C_Initialize.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for (label, pin) in TOKENS {
            let o = Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    SO_PIN,
                    "--pin",
                    pin,
                ])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Some(Hsm {
            module,
            conf,
            _dir: dir,
        })
    });
    if h.is_none() {
        tool_missing(
            "SoftHSM2 (softhsm2-util and libsofthsm2.so, Debian package softhsm2) not found",
        );
    }
    h.as_ref()
}

fn pin(p: &str) -> Pin {
    Pin::from(p.to_string())
}

fn sel(label: &str) -> TokenSelector {
    TokenSelector {
        label: Some(label.to_string()),
        serial: None,
    }
}

/// Verify a DER signature with openssl (`dgst -sha256 -verify`) against the SEC1 public key.
fn openssl_verifies(public: &[u8; 65], msg: &[u8], der: &[u8]) -> bool {
    use p256::pkcs8::EncodePublicKey;
    let dir = tempfile::tempdir().unwrap();
    let pem = p256::PublicKey::from_sec1_bytes(public)
        .unwrap()
        .to_public_key_pem(Default::default())
        .unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    std::fs::write(dir.path().join("msg"), msg).unwrap();
    std::fs::write(dir.path().join("sig"), der).unwrap();
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "msg",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap()
        .status
        .success()
}

/// `pkcs11-tool --list-objects --type privkey` on `token`, logged in; None if OpenSC is absent.
fn pkcs11_tool_private_keys(h: &Hsm, token: &str, user_pin: &str) -> Option<String> {
    let o = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &h.conf)
        .arg("--module")
        .arg(&h.module)
        .args(["--token-label", token, "--login", "--pin", user_pin])
        .args(["--list-objects", "--type", "privkey"])
        .output();
    match o {
        Ok(o) => {
            assert!(
                o.status.success(),
                "pkcs11-tool: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Err(_) => {
            tool_missing("pkcs11-tool (Debian package opensc) not found");
            None
        }
    }
}

/// The `Access:` line of the private key with `id_hex` in pkcs11-tool's listing.
fn access_of(listing: &str, id_hex: &str) -> String {
    let block = listing
        .split("Private Key Object")
        .find(|b| {
            b.lines()
                .any(|l| l.trim() == format!("ID:         {id_hex}"))
        })
        .unwrap_or_else(|| panic!("no key {id_hex} in:\n{listing}"));
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("Access:"))
        .unwrap_or_else(|| panic!("no Access line in:\n{block}"))
        .trim()
        .to_string()
}

/// Access flags as a list, e.g. ["sensitive", "always sensitive", "never extractable", "local"].
fn flags(access: &str) -> Vec<String> {
    access.split(',').map(|s| s.trim().to_string()).collect()
}

#[test]
fn generated_key_signs_in_the_token_and_never_leaves_it() {
    let _shared = shared();
    let Some(h) = hsm() else { return };
    let key = Pkcs11Key::generate(&h.module, &sel("gen"), &pin("1111"), "nrfca CA").unwrap();
    let public = key.public_key();
    let msg = b"manifest.json bytes";
    let sig = key.sign_der(msg).unwrap();
    assert!(nrfca::internal::crypto::verify_p256_sha256(
        &public, msg, &sig
    ));
    assert!(!nrfca::internal::crypto::verify_p256_sha256(
        &public, b"other", &sig
    ));
    if have_openssl() {
        assert!(openssl_verifies(&public, msg, &sig));
    }

    // The protection attributes, through PKCS#11 ...
    let a = key.key_attributes().unwrap();
    assert!(a.sensitive, "{a:?}");
    assert!(!a.extractable, "{a:?}");
    assert!(
        a.never_extractable && a.always_sensitive && a.token && a.private,
        "{a:?}"
    );
    // ... and through OpenSC's pkcs11-tool.
    let id_hex = hex::encode(&key.uri().id);
    if let Some(listing) = pkcs11_tool_private_keys(h, "gen", "1111") {
        let f = flags(&access_of(&listing, &id_hex));
        assert!(f.contains(&"sensitive".to_string()), "{f:?}");
        assert!(f.contains(&"never extractable".to_string()), "{f:?}");
        assert!(!f.contains(&"extractable".to_string()), "{f:?}");
    }

    // The custody names the token and key; the URI reopens the same key.
    let Custody::Pkcs11 {
        token_label,
        token_serial,
        key_id,
        uri,
        ..
    } = key.custody()
    else {
        panic!("not a PKCS#11 custody");
    };
    assert_eq!(token_label, "gen");
    assert_eq!(token_serial, key.token().serial);
    assert!(!token_serial.is_empty());
    assert_eq!(key_id, id_hex);
    assert!(
        uri.starts_with("pkcs11:token=gen;serial=") && !uri.contains("module-path"),
        "{uri}"
    );
    let line = key.uri().format();
    assert!(line.contains("?module-path="), "{line}");
    let again = Pkcs11Key::open(&KeyUri::parse(&line).unwrap(), None, &pin("1111")).unwrap();
    assert_eq!(again.public_key(), public);
    let sig2 = again.sign_der(msg).unwrap();
    assert!(nrfca::internal::crypto::verify_p256_sha256(
        &public, msg, &sig2
    ));

    // rcgen signs through the trait too.
    let rc = nrfca::signer::key::RcgenSigner::new(&key);
    let s = rcgen::SigningKey::sign(&rc, b"tbs").unwrap();
    assert!(nrfca::internal::crypto::verify_p256_sha256(
        &public, b"tbs", &s
    ));
}

#[test]
fn imported_key_is_the_same_key_and_not_extractable() {
    let _shared = shared();
    let Some(h) = hsm() else { return };
    let (orig, pkcs8) = nrfca::internal::crypto::P256Key::generate().unwrap();
    let key = Pkcs11Key::import(
        &h.module,
        &sel("import"),
        &pin("2222"),
        &pkcs8,
        "imported CA",
    )
    .unwrap();
    assert_eq!(key.public_key(), orig.public_key());
    let sig = key.sign_der(b"cert tbs").unwrap();
    assert!(nrfca::internal::crypto::verify_p256_sha256(
        &orig.public_key(),
        b"cert tbs",
        &sig
    ));
    if have_openssl() {
        assert!(openssl_verifies(&orig.public_key(), b"cert tbs", &sig));
    }
    let a = key.key_attributes().unwrap();
    assert!(
        a.sensitive && !a.extractable && a.token && a.private,
        "{a:?}"
    );
    if let Some(listing) = pkcs11_tool_private_keys(h, "import", "2222") {
        let f = flags(&access_of(&listing, &hex::encode(&key.uri().id)));
        assert!(f.contains(&"sensitive".to_string()), "{f:?}");
        assert!(!f.contains(&"extractable".to_string()), "{f:?}");
    }
    // Not a P-256 PKCS#8: refused before touching the token.
    let e = Pkcs11Key::import(&h.module, &sel("import"), &pin("2222"), b"junk", "x").unwrap_err();
    assert_eq!(e.code(), "pkcs11-bad-key");
}

#[test]
fn wrong_pin_is_refused_and_says_what_the_token_reports() {
    let _shared = shared();
    let Some(h) = hsm() else { return };
    let e = Pkcs11Key::generate(&h.module, &sel("wrongpin"), &pin("0000"), "x").unwrap_err();
    assert_eq!(e.code(), "pkcs11-wrong-pin", "{e}");
    let text = e.to_string();
    assert!(text.contains("wrong PIN for token \"wrongpin\""), "{text}");
    assert!(text.contains("--pin-file"), "{text}");
    // SoftHSM2 raises CKF_USER_PIN_COUNT_LOW after a failed login; the message passes it on.
    match &e {
        Pkcs11Error::WrongPin { tries, .. } => {
            assert_ne!(
                *tries,
                nrfca::signer::key::pkcs11::PinTries::Unknown,
                "{text}"
            );
            assert!(
                text.contains("tries left") || text.contains("try left"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The right PIN still works.
    assert!(Pkcs11Key::generate(&h.module, &sel("wrongpin"), &pin("3333"), "x").is_ok());
}

#[test]
fn missing_token_and_missing_key_are_named() {
    let _shared = shared();
    let Some(h) = hsm() else { return };
    let e = Pkcs11Key::generate(&h.module, &sel("no-such-token"), &pin("5555"), "x").unwrap_err();
    assert_eq!(e.code(), "pkcs11-token-not-found");
    assert!(e.to_string().contains("\"lookup\""), "{e}");
    // Several tokens and no label: the operator must choose.
    let e =
        Pkcs11Key::generate(&h.module, &TokenSelector::default(), &pin("5555"), "x").unwrap_err();
    assert_eq!(e.code(), "pkcs11-token-ambiguous");
    let uri = KeyUri {
        token: Some("lookup".into()),
        serial: None,
        manufacturer: None,
        model: None,
        id: vec![0xde, 0xad],
        object: None,
        module_path: Some(h.module.clone()),
    };
    let e = Pkcs11Key::open(&uri, None, &pin("5555")).unwrap_err();
    assert_eq!(e.code(), "pkcs11-key-not-found");
    assert!(e.to_string().contains("dead"), "{e}");
    let e = Pkcs11Key::open(&uri, Some(Path::new("no-such-module.so")), &pin("5555")).unwrap_err();
    assert_eq!(e.code(), "pkcs11-module-missing");
}

#[test]
fn each_worker_signs_on_its_own_session() {
    let _shared = shared();
    let Some(h) = hsm() else { return };
    let key = Pkcs11Key::generate(&h.module, &sel("workers"), &pin("4444"), "nrfca CA").unwrap();
    let public = key.public_key();
    let signer: &dyn CaSigner = &key;
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                let w = signer.worker().unwrap();
                assert_eq!(w.public_key(), public);
                assert_eq!(w.custody(), signer.custody());
                for i in 0..16u8 {
                    let msg = [t, i];
                    let sig = w.sign_der(&msg).unwrap();
                    assert!(nrfca::internal::crypto::verify_p256_sha256(
                        &public, &msg, &sig
                    ));
                }
            });
        }
    });
}

#[test]
fn token_deleted_mid_batch_fails_the_signature_not_the_process() {
    let _excl = TOKEN_DIR.write().unwrap_or_else(|p| p.into_inner());
    let Some(h) = hsm() else { return };
    let key = Pkcs11Key::generate(&h.module, &sel("gone"), &pin("6666"), "nrfca CA").unwrap();
    let w = key.worker().unwrap();
    assert!(w.sign_der(b"before").is_ok());
    // Another process deletes the token (as near to pulling it out as SoftHSM2 gets).
    let o = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &h.conf)
        .args(["--delete-token", "--token", "gone"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = w.sign_der(b"after").unwrap_err();
    assert_eq!(e.code(), "pkcs11-token-gone", "{e}");
    assert!(e.to_string().contains("reconnect the token"), "{e}");
}

#[test]
fn quorum_share_files_on_disk_and_readable_by_stock_age() {
    use nrfca::signer::key::quorum::{self, Custodian, ShareKey, ShareLock};
    use nrfca::signer::secret;
    let dir = tempfile::tempdir().unwrap();
    let (ca, pkcs8) = nrfca::internal::crypto::P256Key::generate().unwrap();
    let carol_id = dir.path().join("carol.id");
    let carol = common::age_identity(&carol_id);
    let pw = |s: &str| age::secrecy::SecretString::from(s.to_string());
    let custodians = vec![
        Custodian {
            name: "alice".into(),
            lock: ShareLock::Passphrase(pw("alice pass")),
        },
        Custodian {
            name: "bob".into(),
            lock: ShareLock::Passphrase(pw("bob pass")),
        },
        Custodian {
            name: "carol".into(),
            lock: ShareLock::Recipient(carol),
        },
    ];
    let setup = quorum::create(&pkcs8, "ab".repeat(32).as_str(), 2, &custodians, 10).unwrap();
    let shares = dir.path().join("shares");
    std::fs::create_dir(&shares).unwrap();
    for f in &setup.shares {
        secret::write_secret_file(&shares.join(&f.file_name), &f.bytes).unwrap();
    }
    let read = |name: &str| secret::read_key_file(&shares.join(name)).unwrap();
    let alice = quorum::open_share(
        "alice.share.age",
        &read("alice.share.age"),
        &ShareKey::Passphrase(pw("alice pass")),
    )
    .unwrap();
    let ids = secret::load_identities(&carol_id).unwrap();
    let carol_share = quorum::open_share(
        "carol.share.age",
        &read("carol.share.age"),
        &ShareKey::Identities(&ids),
    )
    .unwrap();
    let manifest = quorum::QuorumManifest::from_json(setup.manifest.to_json().as_bytes()).unwrap();
    let key = quorum::unlock(&manifest, &setup.key_file, &[alice, carol_share]).unwrap();
    assert_eq!(key.public_key(), ca.public_key());
    let Custody::Quorum { participants, .. } = key.custody() else {
        panic!("not quorum")
    };
    assert_eq!(participants, ["alice", "carol"]);

    // A custodian can check their share with the stock age tool.
    match Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&carol_id)
        .arg(shares.join("carol.share.age"))
        .output()
    {
        Ok(o) => {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let text = String::from_utf8(o.stdout).unwrap();
            assert!(text.starts_with("nrfca share v1\n"), "{text}");
            assert!(text.contains("\ncustodian: carol\n"), "{text}");
        }
        Err(_) => tool_missing("age (Debian package age) not on PATH"),
    }
}
