//! The signed statement `requests.csv.sig` (SPEC §10): which bench wrote a requests file, the
//! SHA-256 of its exact bytes, and the newest checkpoint the bench verified for each CA.
//! Pure: format, strict parse, verify with a given public key; bench keys as PEM and their
//! fingerprints. Signing is the caller's (a closure over the bench key).
//!
//! ```text
//! nrfca-requests-statement v1
//! bench <bench name>
//! key <SHA-256 of the bench key's DER SubjectPublicKeyInfo, hex>
//! requests <SHA-256 of the exact bytes of requests.csv, hex>
//! checkpoint nrfca/<CA sha256> <tree size> <root base64>     (0 or more, sorted by origin)
//! signature <base64 DER ECDSA-SHA256 over every line above, LFs included>
//! ```
//!
//! Checked by hand: `sed '$d' requests.csv.sig > stmt; sed -n '$s/^signature //p'
//! requests.csv.sig | base64 -d > stmt.der; openssl dgst -sha256 -verify bench.pem -signature
//! stmt.der stmt`.

use crate::checkpoint::{self, Checkpoint};
use std::fmt;
use std::path::{Path, PathBuf};

/// First line of a statement.
pub const HEADER: &str = "nrfca-requests-statement v1";
/// Largest statement file accepted (bytes).
pub const MAX_STATEMENT: usize = 16 * 1024;
/// Most checkpoint lines in one statement.
pub const MAX_CHECKPOINTS: usize = 64;
/// Longest bench name (characters).
pub const MAX_NAME: usize = 64;

/// Why a statement was refused. [`ProvenanceError::code`] is a stable kebab-case code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    /// Not in the documented format.
    #[error(
        "the requests signature file is malformed ({0}); export the requests again on the bench"
    )]
    Malformed(String),
    /// The bench name is unusable.
    #[error("bad bench name: {0}; use 1 to {max} printable characters, no leading or trailing space", max = MAX_NAME)]
    BadName(String),
    /// The statement names a key other than the one it is checked with.
    #[error("the requests were signed by bench key {stated}, not {given}; check which bench exported them")]
    WrongKey {
        /// Fingerprint in the statement.
        stated: String,
        /// Fingerprint of the key given.
        given: String,
    },
    /// The signature does not verify with the bench key.
    #[error("the requests signature does not verify with the bench key: the statement was altered or signed by another key; export the requests again on a trusted bench")]
    BadSignature,
    /// The requests file is not the one the statement covers (altered after export).
    #[error("the requests file was changed after the bench signed it (SHA-256 {actual}, signed {stated}); copy requests.csv and requests.csv.sig again from the bench, or export again")]
    RequestsAltered {
        /// SHA-256 in the statement.
        stated: String,
        /// SHA-256 of the file as read.
        actual: String,
    },
    /// A public key PEM could not be read.
    #[error("the bench public key is unusable ({0}); give the bench.pem that `nrfca bench init` printed")]
    BadPublicKey(String),
    /// Signing failed.
    #[error("signing the requests statement failed: {0}")]
    Sign(String),
}

impl ProvenanceError {
    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            ProvenanceError::Malformed(_) => "statement-malformed",
            ProvenanceError::BadName(_) => "bench-name-invalid",
            ProvenanceError::WrongKey { .. } => "statement-wrong-key",
            ProvenanceError::BadSignature => "statement-bad-signature",
            ProvenanceError::RequestsAltered { .. } => "requests-altered",
            ProvenanceError::BadPublicKey(_) => "bench-key-invalid",
            ProvenanceError::Sign(_) => "statement-sign-failed",
        }
    }
}

/// Where `sign` looks for the statement of a requests file: the same path with `.sig`
/// appended (`requests.csv` → `requests.csv.sig`).
pub fn sig_path_for(requests: &Path) -> PathBuf {
    let mut s = requests.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// Check a bench name: 1..=64 characters, no control characters, no leading or trailing
/// white space.
pub fn check_name(name: &str) -> Result<(), ProvenanceError> {
    let bad = |why: &str| Err(ProvenanceError::BadName(why.to_string()));
    if name.is_empty() {
        return bad("empty");
    }
    if name.chars().count() > MAX_NAME {
        return bad("too long");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if name.trim() != name {
        return bad("leading or trailing white space");
    }
    Ok(())
}

// ------------------------------------------------------------------------ bench keys

/// The DER SubjectPublicKeyInfo of an uncompressed P-256 public key.
pub fn public_key_spki_der(public_sec1: &[u8]) -> Result<Vec<u8>, ProvenanceError> {
    use p256::pkcs8::EncodePublicKey;
    let pk = p256::PublicKey::from_sec1_bytes(public_sec1)
        .map_err(|_| ProvenanceError::BadPublicKey("not a P-256 point".into()))?;
    let doc = pk
        .to_public_key_der()
        .map_err(|e| ProvenanceError::BadPublicKey(e.to_string()))?;
    Ok(doc.as_bytes().to_vec())
}

/// The key's fingerprint: SHA-256 (lowercase hex) of its DER SubjectPublicKeyInfo, as
/// `openssl pkey -pubin -in bench.pem -outform DER | sha256sum` prints it.
pub fn key_fingerprint(public_sec1: &[u8]) -> Result<String, ProvenanceError> {
    Ok(crate::crypto::sha256_hex(&public_key_spki_der(
        public_sec1,
    )?))
}

/// `bench.pem`: the public key as a `PUBLIC KEY` PEM (LF line ends).
pub fn public_key_pem(public_sec1: &[u8]) -> Result<String, ProvenanceError> {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let pk = p256::PublicKey::from_sec1_bytes(public_sec1)
        .map_err(|_| ProvenanceError::BadPublicKey("not a P-256 point".into()))?;
    pk.to_public_key_pem(LineEnding::LF)
        .map_err(|e| ProvenanceError::BadPublicKey(e.to_string()))
}

/// Read a `PUBLIC KEY` PEM (e.g. `bench.pem`) and return the uncompressed SEC1 point.
pub fn public_key_from_pem(pem: &str) -> Result<[u8; 65], ProvenanceError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    let pk = p256::PublicKey::from_public_key_pem(pem.trim())
        .map_err(|e| ProvenanceError::BadPublicKey(format!("not a P-256 PUBLIC KEY PEM ({e})")))?;
    let point = pk.to_encoded_point(false);
    point
        .as_bytes()
        .try_into()
        .map_err(|_| ProvenanceError::BadPublicKey("not an uncompressed point".into()))
}

// ------------------------------------------------------------------------- statement

/// What a bench states about a requests file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The bench name (`bench init --name`).
    pub bench: String,
    /// Fingerprint of the bench key ([`key_fingerprint`]).
    pub key_sha256: String,
    /// SHA-256 (lowercase hex) of the exact bytes of the requests file.
    pub requests_sha256: String,
    /// The newest verified checkpoint per CA, sorted by origin, one per origin.
    pub checkpoints: Vec<Checkpoint>,
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Statement {
    /// A statement over `requests` (the exact bytes written) by the bench `name` with key
    /// fingerprint `key_sha256`; `checkpoints` are sorted and must name distinct CAs.
    pub fn new(
        name: &str,
        key_sha256: &str,
        requests: &[u8],
        mut checkpoints: Vec<Checkpoint>,
    ) -> Result<Self, ProvenanceError> {
        check_name(name)?;
        if !is_lower_hex64(key_sha256) {
            return Err(ProvenanceError::Malformed(
                "the key fingerprint is not 64 lowercase hex digits".into(),
            ));
        }
        checkpoints.sort_by(|a, b| a.origin.cmp(&b.origin));
        if checkpoints.windows(2).any(|w| w[0].origin == w[1].origin) {
            return Err(ProvenanceError::Malformed(
                "two checkpoints for one CA".into(),
            ));
        }
        if checkpoints.len() > MAX_CHECKPOINTS {
            return Err(ProvenanceError::Malformed("too many checkpoints".into()));
        }
        Ok(Statement {
            bench: name.to_string(),
            key_sha256: key_sha256.to_string(),
            requests_sha256: crate::crypto::sha256_hex(requests),
            checkpoints,
        })
    }

    /// The signed bytes: every line but the signature, each ending in LF.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{HEADER}\nbench {}\nkey {}\nrequests {}\n",
            self.bench, self.key_sha256, self.requests_sha256
        );
        for c in &self.checkpoints {
            s.push_str(&format!(
                "checkpoint {} {} {}\n",
                c.origin,
                c.size,
                crate::crypto::b64_encode(&c.root)
            ));
        }
        s
    }

    /// The checkpoint quoted for the CA with fingerprint `ca_sha256_hex`.
    pub fn checkpoint_for(&self, ca_sha256_hex: &str) -> Option<&Checkpoint> {
        let origin = checkpoint::origin_for(ca_sha256_hex);
        self.checkpoints.iter().find(|c| c.origin == origin)
    }

    /// Sign: `sign` gets [`Statement::to_text`]'s bytes and returns a DER ECDSA-SHA256
    /// signature. Returns the whole `requests.csv.sig` text.
    pub fn sign<E: fmt::Display>(
        &self,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<String, ProvenanceError> {
        let mut text = self.to_text();
        let sig = sign(text.as_bytes()).map_err(|e| ProvenanceError::Sign(e.to_string()))?;
        text.push_str("signature ");
        text.push_str(&crate::crypto::b64_encode(&sig));
        text.push('\n');
        Ok(text)
    }
}

/// A parsed `requests.csv.sig` (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatement {
    /// The statement.
    pub statement: Statement,
    /// The exact signed bytes (every line before `signature`).
    pub signed: Vec<u8>,
    /// The DER signature.
    pub signature_der: Vec<u8>,
}

impl SignedStatement {
    /// Parse strictly: the lines in the documented order, each ending in LF, the signature
    /// last; the statement must re-format to exactly the signed bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProvenanceError> {
        let bad = |why: String| ProvenanceError::Malformed(why);
        if bytes.len() > MAX_STATEMENT {
            return Err(bad("too large".into()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the last line does not end in LF".into()))?;
        let (signed, sig_line) = match body.rfind('\n') {
            Some(i) => (&text[..=i], &body[i + 1..]),
            None => return Err(bad("no signature line".into())),
        };
        let sig_b64 = sig_line
            .strip_prefix("signature ")
            .ok_or_else(|| bad("the last line is not `signature <base64>`".into()))?;
        let signature_der =
            crate::crypto::b64_decode(sig_b64).map_err(|_| bad("bad base64 signature".into()))?;
        let lines: Vec<&str> = signed
            .strip_suffix('\n')
            .unwrap_or(signed)
            .split('\n')
            .collect();
        if lines.len() < 4 {
            return Err(bad("fewer lines than a statement has".into()));
        }
        if lines[0] != HEADER {
            return Err(bad(format!("the first line is not {HEADER:?}")));
        }
        let field = |i: usize, name: &str| {
            lines[i]
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| bad(format!("line {} is not `{name} ...`", i + 1)))
        };
        let bench = field(1, "bench")?;
        let key = field(2, "key")?;
        let requests = field(3, "requests")?;
        if !is_lower_hex64(requests) {
            return Err(bad(
                "the requests digest is not 64 lowercase hex digits".into()
            ));
        }
        let mut checkpoints = Vec::new();
        for (i, line) in lines.iter().enumerate().skip(4) {
            let parts: Vec<&str> = line.split(' ').collect();
            let ["checkpoint", origin, size, root] = parts[..] else {
                return Err(bad(format!(
                    "line {} is not `checkpoint <origin> <size> <root>`",
                    i + 1
                )));
            };
            let body = format!("{origin}\n{size}\n{root}\n");
            let c = Checkpoint::parse(body.as_bytes())
                .map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
            checkpoints.push(c);
        }
        let statement = Statement {
            bench: bench.to_string(),
            key_sha256: key.to_string(),
            requests_sha256: requests.to_string(),
            checkpoints,
        };
        check_name(bench)?;
        if !is_lower_hex64(key) {
            return Err(bad(
                "the key fingerprint is not 64 lowercase hex digits".into()
            ));
        }
        if statement.checkpoints.len() > MAX_CHECKPOINTS {
            return Err(bad("too many checkpoints".into()));
        }
        // Canonical form only: sorted, unique origins, so one statement has one text.
        if statement.to_text() != signed
            || statement
                .checkpoints
                .windows(2)
                .any(|w| w[0].origin >= w[1].origin)
        {
            return Err(bad("checkpoints not sorted by origin or repeated".into()));
        }
        Ok(SignedStatement {
            statement,
            signed: signed.as_bytes().to_vec(),
            signature_der,
        })
    }

    /// Verify with the bench public key (uncompressed SEC1) and the requests file's exact
    /// bytes: the key is the one the statement names, the signature verifies, and the file
    /// is the one signed.
    pub fn verify(&self, bench_public_sec1: &[u8], requests: &[u8]) -> Result<(), ProvenanceError> {
        let given = key_fingerprint(bench_public_sec1)?;
        if given != self.statement.key_sha256 {
            return Err(ProvenanceError::WrongKey {
                stated: self.statement.key_sha256.clone(),
                given,
            });
        }
        if !crate::crypto::verify_p256_sha256(bench_public_sec1, &self.signed, &self.signature_der)
        {
            return Err(ProvenanceError::BadSignature);
        }
        let actual = crate::crypto::sha256_hex(requests);
        if actual != self.statement.requests_sha256 {
            return Err(ProvenanceError::RequestsAltered {
                stated: self.statement.requests_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::P256Key;

    fn cp(fp_char: char, size: u64) -> Checkpoint {
        Checkpoint::new(&fp_char.to_string().repeat(64), size, [size as u8; 32]).unwrap()
    }

    #[test]
    fn sign_parse_verify_and_refusals() {
        let (key, _) = P256Key::generate().unwrap();
        let (other, _) = P256Key::generate().unwrap();
        let fp = key_fingerprint(&key.public_key()).unwrap();
        let requests = b"device_uuid,imei\nx,1\n";
        let st = Statement::new("line 3", &fp, requests, vec![cp('b', 9), cp('a', 4)]).unwrap();
        assert_eq!(
            st.checkpoints[0].origin,
            checkpoint::origin_for(&"a".repeat(64))
        );
        let file = st.sign(|m| key.sign_der(m)).unwrap();
        let parsed = SignedStatement::parse(file.as_bytes()).unwrap();
        assert_eq!(parsed.statement, st);
        parsed.verify(&key.public_key(), requests).unwrap();
        assert_eq!(
            parsed
                .statement
                .checkpoint_for(&"b".repeat(64))
                .unwrap()
                .size,
            9
        );
        assert!(parsed.statement.checkpoint_for(&"c".repeat(64)).is_none());

        // One byte of the requests file changed.
        let mut tampered = requests.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            parsed
                .verify(&key.public_key(), &tampered)
                .unwrap_err()
                .code(),
            "requests-altered"
        );
        // Another bench's key.
        assert_eq!(
            parsed
                .verify(&other.public_key(), requests)
                .unwrap_err()
                .code(),
            "statement-wrong-key"
        );
        // Signed by another key but naming this one.
        let forged = st.sign(|m| other.sign_der(m)).unwrap();
        assert_eq!(
            SignedStatement::parse(forged.as_bytes())
                .unwrap()
                .verify(&key.public_key(), requests)
                .unwrap_err()
                .code(),
            "statement-bad-signature"
        );
        // The statement edited (the bench name) after signing.
        let edited = file.replace("bench line 3", "bench line 4");
        assert_eq!(
            SignedStatement::parse(edited.as_bytes())
                .unwrap()
                .verify(&key.public_key(), requests)
                .unwrap_err()
                .code(),
            "statement-bad-signature"
        );
    }

    #[test]
    fn parse_is_strict() {
        let (key, _) = P256Key::generate().unwrap();
        let fp = key_fingerprint(&key.public_key()).unwrap();
        let st = Statement::new("b1", &fp, b"r", vec![cp('a', 1), cp('b', 2)]).unwrap();
        let good = st.sign(|m| key.sign_der(m)).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let with = |i: usize, l: &str| {
            let mut v = lines.clone();
            v[i] = l;
            v.join("\n") + "\n"
        };
        let swapped = {
            let mut v = lines.clone();
            v.swap(4, 5);
            v.join("\n") + "\n"
        };
        for bad in [
            good.trim_end().to_string(),
            good.replace('\n', "\r\n"),
            with(0, "nrfca-requests-statement v2"),
            with(1, "bench "),
            with(1, "bench  b1"),
            with(2, "key ABC"),
            with(3, &lines[3].to_uppercase()),
            with(4, "checkpoint nrfca/zz 1 AAAA"),
            with(6, "signature !!"),
            with(6, "sig AAAA"),
            swapped,
            lines[..6].join("\n") + "\n",
            good.clone() + "extra\n",
        ] {
            assert!(SignedStatement::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Statement::new("b1", &fp, b"r", vec![cp('a', 1), cp('a', 2)]).is_err());
        for name in ["", " x", "x ", "a\tb", &"n".repeat(65)] {
            assert_eq!(
                Statement::new(name, &fp, b"r", vec![]).unwrap_err().code(),
                "bench-name-invalid",
                "{name:?}"
            );
        }
    }

    #[test]
    fn public_key_pem_round_trip_and_fingerprint() {
        let (key, _) = P256Key::generate().unwrap();
        let pem = public_key_pem(&key.public_key()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(public_key_from_pem(&pem).unwrap(), key.public_key());
        let spki = public_key_spki_der(&key.public_key()).unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(
            key_fingerprint(&key.public_key()).unwrap(),
            crate::crypto::sha256_hex(&spki)
        );
        assert!(public_key_from_pem("nope").is_err());
        assert_eq!(
            sig_path_for(Path::new("out/requests.csv")),
            PathBuf::from("out/requests.csv.sig")
        );
    }
}
