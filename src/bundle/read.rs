//! Reading a bundle: [`verify`] (CA, signature, every file digest) and the `certs.csv` rows
//! `bench import` installs.

use super::*;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;

/// A bundle whose signature, CA and file digests all checked out.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The signed manifest.
    pub manifest: Manifest,
    /// Every row of `certs.csv`, in file order.
    pub certs: Vec<CertRow>,
    /// The bundle's CA (PEM) when it was trusted through `chain.pem` (the trusted certificate
    /// is its root): the device certificates' issuer. `None`: the trusted CA itself.
    pub via_chain: Option<String>,
}

/// The DER of the first CERTIFICATE block of a PEM text.
pub(super) fn pem_cert_der(pem: &[u8]) -> Option<Vec<u8>> {
    crate::util::first_cert_der(std::str::from_utf8(pem).ok()?)
}

/// The uncompressed P-256 public key of a certificate DER.
pub(crate) fn cert_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key has unused bits")?;
    if key.len() != 65 || key.first() != Some(&4) {
        return Err("not an uncompressed P-256 key".into());
    }
    Ok(key.to_vec())
}

/// Open a bundle file for reading, refusing anything but a regular file (after following
/// symlinks): opening a FIFO blocks forever and a device such as `/dev/zero` never ends.
fn open_regular(path: &Path, name: &str) -> Result<File, BundleError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(io_err(path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BundleError::MissingFile(name.to_string()))
        }
        Err(e) => return Err(io_err(path)(e)),
    }
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(BundleError::MissingFile(name.to_string()))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_limited(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
    let f = open_regular(path, name)?;
    let mut out = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    if out.len() as u64 > limit {
        return Err(BundleError::MalformedManifest(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    Ok(out)
}

fn hash_file(path: &Path, name: &str) -> Result<String, BundleError> {
    let mut f = open_regular(path, name)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if let Some(b) = buf.get(..n) {
            ctx.update(b);
        }
    }
    Ok(hex::encode(ctx.finish()))
}

/// A bundle-relative file name is a plain relative path: no `..`, no absolute path, no
/// backslash, no empty component.
pub(super) fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// Every file under `dir`, as relative `/`-joined names (directories descended, depth ≤ 4).
fn list_files(
    dir: &Path,
    prefix: &str,
    depth: u32,
    out: &mut Vec<String>,
) -> Result<(), BundleError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(io_err(&entry.path()))?;
        if ft.is_dir() && depth < 4 {
            list_files(&entry.path(), &rel, depth + 1, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// When `trusted_ca_pem` is the root of the bundle's CA: the bundle's `chain.pem` (its CA's
/// certificate, then the root's) ends with exactly the trusted certificate, and its first
/// certificate is a CA certificate issued and signed by the trusted one. Returns that CA's
/// certificate as PEM, to be trusted in place of the root (device → CA → root); `None` when
/// there is no chain.pem or the trusted certificate is not its root (then the bundle must be
/// signed by the trusted CA itself, as without a hierarchy).
fn trust_through_chain(dir: &Path, trusted_ca_pem: &[u8]) -> Result<Option<Vec<u8>>, BundleError> {
    use der::{Decode, Encode};
    let path = dir.join("chain.pem");
    if !path.is_file() {
        return Ok(None);
    }
    let Some(trusted_der) = pem_cert_der(trusted_ca_pem) else {
        return Ok(None);
    };
    let chain = read_limited(&path, "chain.pem", MAX_MANIFEST)?;
    let text = String::from_utf8_lossy(&chain);
    let ders: Vec<Vec<u8>> = crate::util::pem_blocks(&text)
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .filter_map(|b| b.decode().ok())
        .collect();
    if ders.len() != 2 || ders[1] != trusted_der {
        return Ok(None);
    }
    let bad = |m: &str| BundleError::BadTrustedCa(format!("chain.pem: {m}"));
    let root = x509_cert::Certificate::from_der(&trusted_der)
        .map_err(|_| bad("the root cannot be parsed"))?;
    let sub = x509_cert::Certificate::from_der(&ders[0])
        .map_err(|_| bad("the CA certificate cannot be parsed"))?;
    if sub.tbs_certificate.issuer != root.tbs_certificate.subject {
        return Err(bad("the CA certificate is not issued by the trusted root"));
    }
    let root_key = cert_public_key(&trusted_der).map_err(|e| bad(&e))?;
    let tbs = sub
        .tbs_certificate
        .to_der()
        .map_err(|_| bad("the CA certificate cannot be encoded"))?;
    let sig = sub.signature.as_bytes().unwrap_or_default();
    if !crate::crypto::verify_p256_sha256(&root_key, &tbs, sig) {
        return Err(bad("the CA certificate is not signed by the trusted root"));
    }
    let is_ca = sub
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == crate::oid::BASIC_CONSTRAINTS)
        .filter_map(|e| {
            x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()
        })
        .any(|bc| bc.ca);
    if !is_ca {
        return Err(bad("the first certificate is not a CA certificate"));
    }
    Ok(Some(
        crate::util::pem_encode("CERTIFICATE", &ders[0]).into_bytes(),
    ))
}

/// Check a bundle against the CA the bench trusts: `manifest.sig` verifies with the trusted
/// CA's key, the bundle's `ca.pem` is that CA, every listed file has its SHA-256, nothing is
/// unlisted, `certs.csv` parses and each row's `sha256` is the SHA-256 of its PEM.
pub fn verify(dir: &Path, trusted_ca_pem: &[u8]) -> Result<VerifiedBundle, BundleError> {
    // Partial directories are refused by name, whatever they hold (SPEC §5); the name is
    // looked at after resolving `.`/`..`/symlinks so another name for one does not pass.
    let resolved = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for p in [dir, resolved.as_path()] {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(PARTIAL_MARK))
        {
            return Err(BundleError::Partial(dir.to_path_buf()));
        }
    }
    // Trusting the root of an intermediate: the bundle's chain.pem makes its CA trusted.
    let through_chain = trust_through_chain(dir, trusted_ca_pem)?;
    let trusted_ca_pem = through_chain.as_deref().unwrap_or(trusted_ca_pem);
    let trusted_der = pem_cert_der(trusted_ca_pem)
        .ok_or_else(|| BundleError::BadTrustedCa("no CERTIFICATE PEM block".into()))?;
    let trusted_key = cert_public_key(&trusted_der).map_err(BundleError::BadTrustedCa)?;
    let trusted_fp = crate::crypto::sha256_hex(&trusted_der);

    let manifest_bytes = read_limited(&dir.join("manifest.json"), "manifest.json", MAX_MANIFEST)?;
    let sig_text = read_limited(&dir.join("manifest.sig"), "manifest.sig", MAX_SIG)?;
    let sig = std::str::from_utf8(&sig_text)
        .ok()
        .and_then(|s| crate::crypto::b64_decode(s.trim()).ok())
        .ok_or(BundleError::BadSignature)?;
    if !crate::crypto::verify_p256_sha256(&trusted_key, &manifest_bytes, &sig) {
        // Explain: signed by the CA the bundle carries, but not the trusted one?
        if let Ok(bundle_ca) = read_limited(&dir.join("ca.pem"), "ca.pem", MAX_MANIFEST) {
            if let Some(der) = pem_cert_der(&bundle_ca) {
                if let Ok(k) = cert_public_key(&der) {
                    if k != trusted_key
                        && crate::crypto::verify_p256_sha256(&k, &manifest_bytes, &sig)
                    {
                        return Err(BundleError::WrongSigner {
                            bundle_ca: crate::crypto::sha256_hex(&der),
                            trusted_ca: trusted_fp,
                        });
                    }
                }
            }
        }
        return Err(BundleError::BadSignature);
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::MalformedManifest(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(BundleError::MalformedManifest(format!(
            "format {:?}, expected {MANIFEST_FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.ca_sha256 != trusted_fp {
        return Err(BundleError::CaMismatch);
    }

    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !safe_relative(&f.name) || f.name == "manifest.json" || f.name == "manifest.sig" {
            return Err(BundleError::MalformedManifest(format!(
                "bad file name {:?}",
                f.name
            )));
        }
        if !listed.insert(f.name.clone()) {
            return Err(BundleError::MalformedManifest(format!(
                "{} listed twice",
                f.name
            )));
        }
    }
    for required in ["ca.pem", "certs.csv", "onboard.csv", "rejects.csv"] {
        if !listed.contains(required) {
            return Err(BundleError::MalformedManifest(format!(
                "{required} is not listed"
            )));
        }
    }
    // certs.csv is read once: the rows returned are parsed from exactly the bytes whose
    // SHA-256 was checked (a storage device may answer a second read differently).
    let mut certs_csv: Option<Vec<u8>> = None;
    for f in &manifest.files {
        let h = if f.name == "certs.csv" {
            let bytes = read_limited(&dir.join(&f.name), &f.name, MAX_READ)?;
            let h = crate::crypto::sha256_hex(&bytes);
            certs_csv = Some(bytes);
            h
        } else {
            hash_file(&dir.join(&f.name), &f.name)?
        };
        if h != f.sha256 {
            return Err(BundleError::HashMismatch(f.name.clone()));
        }
    }
    let mut present = Vec::new();
    list_files(dir, "", 0, &mut present)?;
    present.sort();
    // The checkpoint files (`checkpoint::CHECKPOINT_FILE` …, named here: `checkpoint` uses
    // this module, not the reverse) are signed on their own (SPEC §11) and checked by the
    // bench's import (`bench::evidence`); listed or not, they are not extra.
    let evidence = ["checkpoint", "checkpoint.sig", "checkpoint.proofs"];
    for p in present {
        if p != "manifest.json"
            && p != "manifest.sig"
            && !evidence.contains(&p.as_str())
            && !listed.contains(&p)
        {
            return Err(BundleError::ExtraFile(p));
        }
    }
    let bundle_ca = read_limited(&dir.join("ca.pem"), "ca.pem", MAX_MANIFEST)?;
    if pem_cert_der(&bundle_ca).as_deref() != Some(&trusted_der[..]) {
        return Err(BundleError::CaMismatch);
    }

    let certs_csv = certs_csv.ok_or_else(|| BundleError::MissingFile("certs.csv".into()))?;
    let certs = parse_certs_csv(&certs_csv)?;
    Ok(VerifiedBundle {
        manifest,
        certs,
        via_chain: through_chain.map(|p| String::from_utf8_lossy(&p).into_owned()),
    })
}

/// Split CSV text into records: (start line, fields). Quoted fields may span lines.
///
/// Hand-written on purpose (the writer is the `csv` crate): a tampered or damaged bundle row
/// must be refused with its line, and the `csv` crate reads a stray quote or text after a
/// closing quote as field text without an error (the test `parse_csv_refuses_what_csv_accepts`).
pub fn parse_csv(text: &str) -> Vec<(u64, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    let mut line = 1u64;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut in_quotes = false;
        let mut was_quoted = false;
        let mut err: Option<String> = None;
        loop {
            let Some(c) = chars.next() else {
                if in_quotes {
                    err.get_or_insert_with(|| "unterminated quoted field".into());
                }
                break;
            };
            if c == '\n' {
                line += 1;
            }
            if in_quotes {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        cur.push('"');
                    } else {
                        in_quotes = false;
                    }
                } else {
                    cur.push(c);
                }
                continue;
            }
            match c {
                '\n' => break,
                ',' => {
                    fields.push(std::mem::take(&mut cur));
                    was_quoted = false;
                }
                '"' if cur.is_empty() && !was_quoted => {
                    in_quotes = true;
                    was_quoted = true;
                }
                '"' => {
                    err.get_or_insert_with(|| "stray quote".into());
                }
                _ if was_quoted => {
                    err.get_or_insert_with(|| "text after a closing quote".into());
                }
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        out.push((start, err.map_or(Ok(fields), Err)));
    }
    out
}

/// Parse and check `certs.csv` bytes.
pub fn parse_certs_csv(data: &[u8]) -> Result<Vec<CertRow>, BundleError> {
    let bad = |line: u64, why: String| BundleError::MalformedRow {
        file: "certs.csv".into(),
        line,
        why,
    };
    let text = std::str::from_utf8(data).map_err(|_| bad(1, "not UTF-8".into()))?;
    let mut rows = Vec::new();
    let mut records = parse_csv(text).into_iter();
    match records.next() {
        Some((_, Ok(h))) if h.join(",") == CERTS_HEADER => {}
        _ => return Err(bad(1, format!("header is not {CERTS_HEADER}"))),
    }
    for (line, rec) in records {
        let fields = rec.map_err(|why| bad(line, why))?;
        let [device_uuid, imei, sec_tag, serial, not_before, not_after, sha256, pem]: [String; 8] =
            fields
                .try_into()
                .map_err(|f: Vec<String>| bad(line, format!("{} columns, expected 8", f.len())))?;
        let sec_tag = sec_tag
            .parse::<u32>()
            .map_err(|_| bad(line, format!("sec_tag {sec_tag:?} is not a number")))?;
        if crate::crypto::sha256_hex(pem.as_bytes()) != sha256 {
            return Err(bad(
                line,
                "sha256 column is not the SHA-256 of the certificate".into(),
            ));
        }
        if pem_cert_der(pem.as_bytes()).is_none() {
            return Err(bad(
                line,
                "certificate column is not a PEM certificate".into(),
            ));
        }
        rows.push(CertRow {
            device_uuid,
            imei,
            sec_tag,
            serial,
            not_before,
            not_after,
            sha256,
            certificate_pem: pem,
        });
    }
    Ok(rows)
}
