//! The simulated modem's side of KEYGEN and ATTESTTOKEN: real P-256 keys, a CSR shaped like
//! the nRF91's (CN=<uuid>, keyUsage request, NULL quirk), and a COSE_Sign1 signed by a
//! simulated identity key. Used by tests, `nrfca gen` and the simulator. The low-level
//! builders are public so tests can craft every kind of bad request.

use crate::crypto::{self, CryptoError, P256Key};
use crate::keygen::cose::{self, MSG_TYPE_CSR, MSG_TYPE_PUBLIC_KEY};
use crate::keygen::csr;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

pub use crate::keygen::csr::{
    build_csr, build_csr_from_info, subject_from_attributes, SubjectAttr,
};

/// Options of [`ModemIdentity::keygen`], mirroring `AT%KEYGEN`'s optional arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Encode the CSR signature algorithm with the NULL parameter like mfw 1.3.7 / 2.0.2.
    pub null_param: bool,
    /// `<attributes>`, e.g. `CN=nrf-355025930000000` or `O=x,CN=y`: replaces the subject.
    pub attributes: Option<String>,
    /// `<response_content>`: 0 CSR, 1 public key (SubjectPublicKeyInfo, msg type 8).
    pub response_content: u8,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            null_param: true,
            attributes: None,
            response_content: 0,
        }
    }
}

/// A KEYGEN reply and the key it certifies.
pub struct Generated {
    /// The KEYGEN string (what goes between the quotes of `%KEYGEN: "…"`).
    pub keygen: String,
    /// The new private key (secret; the simulator stores it as %CMNG type 2).
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// The new public key.
    pub public_key: [u8; 65],
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("keygen", &self.keygen)
            .field("private_key_pkcs8", &"(redacted)")
            .field("public_key", &hex::encode(self.public_key))
            .finish()
    }
}

/// A simulated modem's identity: its UUID and its device identity key (the key whose public
/// half only Nordic knows for a real modem; here the simulator can print it).
pub struct ModemIdentity {
    uuid: [u8; 16],
    identity: Arc<P256Key>,
}

impl fmt::Debug for ModemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModemIdentity({})", crate::util::uuid_string(&self.uuid))
    }
}

impl ModemIdentity {
    /// A new modem: random version-4 UUID and a fresh identity key.
    pub fn random() -> Result<Self, CryptoError> {
        let (identity, _) = P256Key::generate()?;
        Ok(ModemIdentity {
            uuid: random_uuid()?,
            identity: Arc::new(identity),
        })
    }

    /// Another modem with a new random UUID that shares this one's identity key (cheap;
    /// for bulk generation, where the identity signature is not what is being tested).
    pub fn sibling(&self) -> Result<Self, CryptoError> {
        Ok(ModemIdentity {
            uuid: random_uuid()?,
            identity: Arc::clone(&self.identity),
        })
    }

    /// A modem from stored parts (the simulator's state file).
    pub fn from_parts(uuid: [u8; 16], identity_pkcs8: &[u8]) -> Result<Self, CryptoError> {
        Ok(ModemIdentity {
            uuid,
            identity: Arc::new(P256Key::from_pkcs8(identity_pkcs8)?),
        })
    }

    /// The device UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The device UUID as lowercase hyphenated text.
    pub fn uuid_string(&self) -> String {
        crate::util::uuid_string(&self.uuid)
    }

    /// The identity public key (verifies this modem's COSE signatures).
    pub fn identity_public_key(&self) -> [u8; 65] {
        self.identity.public_key()
    }

    /// The identity key PKCS#8, to persist the simulated modem (secret).
    pub fn identity_pkcs8(&self) -> &[u8] {
        self.identity.pkcs8()
    }

    /// The identity key itself (to sign crafted payloads in tests).
    pub fn identity_key(&self) -> &P256Key {
        &self.identity
    }

    /// `AT%KEYGEN=<sec_tag>,2,<response_content>[,"<attributes>"]`: a new P-256 key and the
    /// KEYGEN string for it.
    pub fn keygen(&self, sec_tag: u32, opts: &GenOptions) -> Result<Generated, CryptoError> {
        let (key, pkcs8) = P256Key::generate()?;
        let (first, msg_type) = match opts.response_content {
            0 => {
                let subject = match &opts.attributes {
                    Some(a) => subject_from_attributes(a)?,
                    None => vec![SubjectAttr::cn(&self.uuid_string())],
                };
                (build_csr(&key, &subject, opts.null_param)?, MSG_TYPE_CSR)
            }
            1 => (csr::spki_p256_der(&key.public_key()), MSG_TYPE_PUBLIC_KEY),
            n => {
                return Err(CryptoError::InvalidInput(format!(
                    "response_content {n} is not supported (0 CSR, 1 public key)"
                )))
            }
        };
        let mut nonce = [0u8; 16];
        crypto::fill_random(&mut nonce)?;
        let payload = cose::keygen_payload(
            msg_type,
            &self.uuid,
            sec_tag,
            &crypto::sha256(&first),
            &nonce,
        );
        let cose = cose_sign1(&self.identity, &payload)?;
        Ok(Generated {
            keygen: encode(&first, &cose),
            private_key_pkcs8: pkcs8,
            public_key: key.public_key(),
        })
    }

    /// `AT%ATTESTTOKEN[="<challenge>"]`: the identity message (random nonce unless a
    /// challenge is given) and a detached COSE_Sign1 over it.
    pub fn attesttoken(
        &self,
        challenge: Option<[u8; 16]>,
        device_type: u8,
        fw_uuid: [u8; 16],
    ) -> Result<String, CryptoError> {
        let nonce = match challenge {
            Some(c) => c,
            None => {
                let mut n = [0u8; 16];
                crypto::fill_random(&mut n)?;
                n
            }
        };
        let msg = cose::attest_payload(&self.uuid, i64::from(device_type), &fw_uuid, &nonce);
        let c = cose::sign1(&self.identity, &msg, true)?;
        Ok(encode(&msg, &c))
    }
}

/// A random version-4 UUID.
pub fn random_uuid() -> Result<[u8; 16], CryptoError> {
    let mut uuid = [0u8; 16];
    crypto::fill_random(&mut uuid)?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Ok(uuid)
}

/// A modem-shaped COSE_Sign1 carrying `payload`, ES256-signed by `identity`.
pub fn cose_sign1(identity: &P256Key, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
    cose::sign1(identity, payload, false)
}

/// `base64url(first).base64url(cose)`.
pub fn encode(first_der: &[u8], cose: &[u8]) -> String {
    let mut s = crypto::b64url_encode(first_der);
    s.push('.');
    s.push_str(&crypto::b64url_encode(cose));
    s
}

/// Output format of [`write_requests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchFormat {
    /// A requests CSV with the SPEC header (what `bench export` writes).
    #[default]
    Csv,
    /// One bare KEYGEN string per line.
    Lines,
}

/// Options of [`write_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// How many requests (each from a different simulated modem).
    pub count: u64,
    /// The sec_tag every key is generated in.
    pub sec_tag: u32,
    /// Worker threads (0 = one per CPU).
    pub threads: usize,
    /// CSV or bare lines.
    pub format: BatchFormat,
    /// KEYGEN options of every request.
    pub gen: GenOptions,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            count: 1,
            sec_tag: crate::keygen::DEFAULT_SEC_TAG,
            threads: 0,
            format: BatchFormat::Csv,
            gen: GenOptions::default(),
        }
    }
}

/// Why [`write_requests`] stopped.
#[derive(Debug)]
pub enum BatchError {
    /// Writing the output failed.
    Io(std::io::Error),
    /// Key generation or signing failed.
    Crypto(CryptoError),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Io(e) => write!(
                f,
                "could not write the requests: {e}; check the output path and free space"
            ),
            BatchError::Crypto(e) => write!(f, "could not generate a request: {e}"),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Io(e) => Some(e),
            BatchError::Crypto(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for BatchError {
    fn from(e: std::io::Error) -> Self {
        BatchError::Io(e)
    }
}

impl From<CryptoError> for BatchError {
    fn from(e: CryptoError) -> Self {
        BatchError::Crypto(e)
    }
}

/// The requests CSV header (SPEC §2), identical to `requests::HEADER`.
pub const REQUESTS_HEADER: &str =
    "device_uuid,imei,sec_tag,keygen,modem_fw,model,bench,port,exported_at";

/// A plausible random IMEI: `35`, 12 random digits, Luhn check digit.
pub fn random_imei() -> Result<String, CryptoError> {
    let mut r = [0u8; 12];
    crypto::fill_random(&mut r)?;
    let mut s = String::with_capacity(15);
    s.push_str("35");
    for b in r {
        // 250 = 25 * 10: reduce the (tiny) modulo bias by folding into 0..250 first.
        s.push(char::from(b'0' + (b % 250) % 10));
    }
    let d = crate::util::luhn_digit(&s).unwrap_or(0);
    s.push(char::from(b'0' + d));
    Ok(s)
}

const CHUNK: u64 = 512;

fn gen_chunk(n: u64, opts: &BatchOptions, exported_at: &str) -> Result<Vec<u8>, BatchError> {
    let mut buf = Vec::with_capacity(n as usize * 700);
    // The modems of one chunk share a simulated identity key (each has its own UUID and
    // device key): nobody offline can check that signature, and it halves the cost.
    let base = ModemIdentity::random()?;
    match opts.format {
        BatchFormat::Lines => {
            for _ in 0..n {
                let m = base.sibling()?;
                let g = m.keygen(opts.sec_tag, &opts.gen)?;
                buf.extend_from_slice(g.keygen.as_bytes());
                buf.push(b'\n');
            }
        }
        BatchFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(&mut buf);
            let sec_tag = opts.sec_tag.to_string();
            for _ in 0..n {
                let m = base.sibling()?;
                let g = m.keygen(opts.sec_tag, &opts.gen)?;
                let imei = random_imei()?;
                w.write_record([
                    m.uuid_string().as_str(),
                    &imei,
                    &sec_tag,
                    &g.keygen,
                    "mfw_nrf9160_1.3.7",
                    "nRF9160-SICA",
                    "gen",
                    "",
                    exported_at,
                ])
                .map_err(|e| BatchError::Io(std::io::Error::other(e)))?;
            }
            w.flush()?;
        }
    }
    Ok(buf)
}

/// Write `opts.count` realistic requests (each from a distinct simulated modem: own UUID,
/// IMEI and key; up to 512 share an identity key) to `out`, in
/// parallel over `opts.threads` workers. `progress` is called with the number written so
/// far after each chunk. Returns the number written. Row order is not meaningful.
pub fn write_requests<W: std::io::Write>(
    out: &mut W,
    opts: &BatchOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, BatchError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;

    let exported_at = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    if opts.format == BatchFormat::Csv {
        out.write_all(REQUESTS_HEADER.as_bytes())?;
        out.write_all(b"\n")?;
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<Result<(u64, Vec<u8>), BatchError>>(threads * 2);
    let mut written = 0u64;
    let mut first_err: Option<BatchError> = None;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, exported_at) = (&next, &stop, &exported_at);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= opts.count {
                    return;
                }
                let n = CHUNK.min(opts.count - start);
                let r = gen_chunk(n, opts, exported_at).map(|b| (n, b));
                if tx.send(r).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for r in rx {
            match r {
                Ok((n, buf)) if first_err.is_none() => {
                    if let Err(e) = out.write_all(&buf) {
                        first_err = Some(e.into());
                        stop.store(true, Ordering::Relaxed);
                    } else {
                        written += n;
                        progress(written);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::{check, parse, parse_attesttoken, CheckOptions, DeviceIdMode};

    #[test]
    fn generated_keygen_is_accepted_and_round_trips() {
        let m = ModemIdentity::random().unwrap();
        let g = m.keygen(16842753, &GenOptions::default()).unwrap();
        let v = check(&g.keygen, &CheckOptions::default()).unwrap();
        assert_eq!(v.uuid, m.uuid_string());
        assert_eq!(v.public_key, g.public_key);
        assert!(v.null_param);
        let p = parse(&g.keygen).unwrap();
        assert!(cose::verify_sign1(&m.identity_public_key(), &p.cose, None));
        assert_eq!(
            &p.cose_bytes[..12],
            &[0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x04, 0x41, 0x21, 0x58, 0x4f]
        );
        let k = P256Key::from_pkcs8(&g.private_key_pkcs8).unwrap();
        assert_eq!(k.public_key(), g.public_key);
        let len = g.keygen.len();
        assert!((560..=580).contains(&len), "{len}");
        assert!(!format!("{g:?}").contains(&hex::encode(&*g.private_key_pkcs8)));
    }

    #[test]
    fn imei_cn_and_public_key_variants() {
        let m = ModemIdentity::random().unwrap();
        let g = m
            .keygen(
                42,
                &GenOptions {
                    attributes: Some("CN=nrf-355025930000000".into()),
                    null_param: false,
                    ..Default::default()
                },
            )
            .unwrap();
        let o = CheckOptions {
            sec_tag: Some(42),
            device_id: DeviceIdMode::Cn,
            imei: Some("355025930000000".into()),
        };
        let v = check(&g.keygen, &o).unwrap();
        assert_eq!(v.device_id, "nrf-355025930000000");
        assert!(!v.null_param);
        let e = check(
            &g.keygen,
            &CheckOptions {
                sec_tag: Some(42),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.code, crate::reject::RejectCode::IdentityMismatch);

        let g = m
            .keygen(
                7,
                &GenOptions {
                    response_content: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        let e = check(&g.keygen, &CheckOptions::default()).unwrap_err();
        assert_eq!(e.code, crate::reject::RejectCode::WrongMessageType);
        let p = parse(&g.keygen).unwrap();
        assert_eq!(p.spki().unwrap().p256_point().unwrap(), g.public_key);
        assert!(p.digest_ok());
        assert!(m
            .keygen(
                7,
                &GenOptions {
                    response_content: 2,
                    ..Default::default()
                }
            )
            .is_err());
    }

    #[test]
    fn batch_csv_and_lines() {
        assert_eq!(REQUESTS_HEADER, crate::requests::HEADER);
        let mut out = Vec::new();
        let opts = BatchOptions {
            count: 5,
            threads: 2,
            ..Default::default()
        };
        let mut calls = 0;
        assert_eq!(
            write_requests(&mut out, &opts, &mut |_| calls += 1).unwrap(),
            5
        );
        assert!(calls >= 1);
        let text = String::from_utf8(out).unwrap();
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>().join(","),
            REQUESTS_HEADER
        );
        let mut n = 0;
        for rec in rdr.records() {
            let rec = rec.unwrap();
            let v = check(&rec[3], &CheckOptions::default()).unwrap();
            assert_eq!(v.uuid, &rec[0]);
            assert!(crate::util::is_imei_luhn(&rec[1]));
            n += 1;
        }
        assert_eq!(n, 5);
        let mut out = Vec::new();
        let opts = BatchOptions {
            count: 3,
            format: BatchFormat::Lines,
            sec_tag: 42,
            ..Default::default()
        };
        write_requests(&mut out, &opts, &mut |_| {}).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        for l in text.lines() {
            assert_eq!(
                check(
                    l,
                    &CheckOptions {
                        sec_tag: Some(42),
                        ..Default::default()
                    }
                )
                .unwrap()
                .sec_tag,
                42
            );
        }
    }

    #[test]
    fn attesttoken_round_trip() {
        let m = ModemIdentity::random().unwrap();
        let t = m.attesttoken(Some([9; 16]), 3, [5; 16]).unwrap();
        let a = parse_attesttoken(&t).unwrap();
        assert_eq!(a.message.msg_type, 1);
        assert_eq!(a.message.uuid, m.uuid());
        assert_eq!(a.message.device_type, 3);
        assert_eq!(a.message.nonce, [9; 16]);
        assert_eq!(a.cose.payload, None);
        assert!(cose::verify_sign1(
            &m.identity_public_key(),
            &a.cose,
            Some(&a.message_bytes)
        ));
        let again = ModemIdentity::from_parts(m.uuid(), m.identity_pkcs8()).unwrap();
        assert_eq!(again.identity_public_key(), m.identity_public_key());
    }
}
