//! `bundle::verify` on a real directory built from the input, against a CA made by the target.
//!
//! Input: sections `@@@ <name>\n<content>`; each becomes a file (names sanitised to plain
//! relative paths). Fix-ups so the fuzzer gets past the signature and digests: a file whose
//! content is `auto` becomes the CA PEM; in `manifest.json`, `ca_sha256: "auto"` becomes the
//! CA fingerprint and `files[].sha256: "auto"` the digest of that file; `manifest.sig` is the
//! CA's signature of the final manifest unless the input gives one. Properties: never panics;
//! a bundle that verifies has every listed file on disk with the listed digest and only rows
//! whose sha256 is that of their PEM.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use nrfca::bundle;
use nrfca::internal::crypto;

fn sections(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = data;
    let mut out = Vec::new();
    let marker = b"@@@ ";
    let mut starts = Vec::new();
    let mut i = 0;
    while i + marker.len() <= text.len() {
        if &text[i..i + marker.len()] == marker && (i == 0 || text[i - 1] == b'\n') {
            starts.push(i);
        }
        i += 1;
    }
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let body = &text[s + marker.len()..end];
        let (name, content) = match body.iter().position(|&b| b == b'\n') {
            Some(n) => (&body[..n], &body[n + 1..]),
            None => (body, &[][..]),
        };
        // The newline before the next marker belongs to the marker.
        let content = if k + 1 < starts.len() {
            content.strip_suffix(b"\n").unwrap_or(content)
        } else {
            content
        };
        out.push((
            String::from_utf8_lossy(name).trim().to_string(),
            content.to_vec(),
        ));
        if out.len() >= 64 {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let ca = common::test_ca();
    let Ok(tmp) = tempfile::tempdir() else { return };
    let dir = tmp.path().join("b");
    let _ = std::fs::create_dir(&dir);
    let mut manifest: Option<Vec<u8>> = None;
    let mut sig: Option<Vec<u8>> = None;
    for (name, content) in sections(data) {
        let content = if content == b"auto" || content == b"auto\n" {
            ca.pem.clone().into_bytes()
        } else {
            content
        };
        match name.as_str() {
            "manifest.json" => manifest = Some(content),
            "manifest.sig" => sig = Some(content),
            n => {
                if let Some(rel) = common::safe_name(n) {
                    common::write_at(&dir, &rel, &content);
                }
            }
        }
    }
    if let Some(m) = manifest.as_mut() {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(m) {
            let mut changed = false;
            if v.get("ca_sha256").and_then(|x| x.as_str()) == Some("auto") {
                v["ca_sha256"] = crypto::sha256_hex(&ca.der).into();
                changed = true;
            }
            if let Some(files) = v.get_mut("files").and_then(|f| f.as_array_mut()) {
                for f in files {
                    if f.get("sha256").and_then(|x| x.as_str()) == Some("auto") {
                        let name = f.get("name").and_then(|x| x.as_str()).unwrap_or("");
                        if let Some(rel) = common::safe_name(name) {
                            if let Ok(b) = std::fs::read(dir.join(rel)) {
                                f["sha256"] = crypto::sha256_hex(&b).into();
                                changed = true;
                            }
                        }
                    }
                }
            }
            if changed {
                *m = serde_json::to_vec_pretty(&v).expect("json");
            }
        }
        let _ = std::fs::write(dir.join("manifest.json"), &m);
        let s = match sig {
            Some(s) if s != b"auto" => s,
            _ => crypto::b64_encode(&ca.key.sign_der(m).expect("sign")).into_bytes(),
        };
        let _ = std::fs::write(dir.join("manifest.sig"), s);
    } else if let Some(s) = sig {
        let _ = std::fs::write(dir.join("manifest.sig"), s);
    }

    if let Ok(v) = bundle::verify(&dir, ca.pem.as_bytes()) {
        for f in &v.manifest.files {
            let b = std::fs::read(dir.join(&f.name)).expect("listed file exists");
            assert_eq!(crypto::sha256_hex(&b), f.sha256);
        }
        for r in &v.certs {
            assert_eq!(r.sha256, crypto::sha256_hex(r.certificate_pem.as_bytes()));
        }
    }
    // Against a CA certificate that is itself fuzzed.
    let _ = bundle::verify(&dir, data);
});
