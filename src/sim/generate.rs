//! The simulated modem's side of KEYGEN and ATTESTTOKEN: real P-256 keys, a CSR shaped like
//! the nRF91's (`CN=<uuid>`, keyUsage request, NULL quirk), and a COSE_Sign1 signed by a
//! simulated identity key. Used by tests, `nrfca gen` and the simulator. The low-level
//! builders are public so tests can craft every kind of bad request.

use crate::crypto::{self, CryptoError, P256Key};
use crate::keygen::cose::{self, MSG_TYPE_CSR, MSG_TYPE_PUBLIC_KEY};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

use crate::keygen::tlv::{self, tag};
use crate::oid;

/// Options of [`ModemIdentity::keygen`], mirroring `AT%KEYGEN`'s optional arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Encode the CSR signature algorithm with the NULL parameter like mfw 1.3.7 / 2.0.2.
    pub null_param: bool,
    /// `<attributes>`, e.g. `CN=nrf-355025930000000` or `O=x,CN=y`: replaces the subject.
    pub attributes: Option<String>,
    /// `<response_content>`: 0 CSR, 1 public key (SubjectPublicKeyInfo, msg type 8), 2 a
    /// self-signed certificate (what `AT%KEYGEN=<tag>,14,2` answers on nRF91x1 mfw ≥ 2.0.2).
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
        self.keygen_with(key, pkcs8, sec_tag, opts)
    }

    /// The KEYGEN string for a key the modem already holds (`AT%KEYGEN=<tag>,8,…` builds its
    /// reply from the endorsement key if one exists) or has just made.
    pub fn keygen_with(
        &self,
        key: P256Key,
        pkcs8: Zeroizing<Vec<u8>>,
        sec_tag: u32,
        opts: &GenOptions,
    ) -> Result<Generated, CryptoError> {
        let subject = || match &opts.attributes {
            Some(a) => subject_from_attributes(a),
            None => Ok(vec![SubjectAttr::cn(&self.uuid_string())]),
        };
        let (first, msg_type) = match opts.response_content {
            0 => (build_csr(&key, &subject()?, opts.null_param)?, MSG_TYPE_CSR),
            1 => (spki_p256_der(&key.public_key()), MSG_TYPE_PUBLIC_KEY),
            // The attestation of a key_type 14 reply is not documented; the simulator signs the
            // certificate's digest under the CSR message type, so the string reaches the CSR
            // check, where nrfca refuses it by name (docs/simulator.md).
            2 => (build_self_signed(&key, &subject()?)?, MSG_TYPE_CSR),
            n => {
                return Err(CryptoError::InvalidInput(format!(
                    "response_content {n} is not supported (0 CSR, 1 public key, 2 certificate)"
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

/// Why [`write_requests`] stopped. Display is this layer's sentence; the cause is the
/// `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Writing the output failed.
    #[error("could not write the requests; check the output path and free space")]
    Io(#[from] std::io::Error),
    /// Key generation or signing failed.
    #[error("could not generate a request")]
    Crypto(#[from] CryptoError),
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

// ---------------------------------------------------------------------------------------
// The modem's CSR, built byte for byte as the nRF91 writes it (NULL quirk included) with the
// project's DER writer (`keygen::tlv`): public so tests can craft every kind of bad request.

/// The string type a subject attribute is written with when building: PrintableString for
/// countryName and serialNumber (RFC 5280 Appendix A), IA5String for emailAddress and
/// domainComponent, UTF8String (RFC 5280 §4.1.2.6) for the rest.
fn attr_string_tag(o: &oid::Oid) -> u8 {
    if *o == oid::COUNTRY || *o == oid::SERIAL_NUMBER {
        tag::PRINTABLE_STRING
    } else if *o == oid::EMAIL_ADDRESS || *o == oid::DOMAIN_COMPONENT {
        tag::IA5_STRING
    } else {
        tag::UTF8_STRING
    }
}

/// One subject attribute to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAttr {
    /// OID content bytes.
    pub oid: Vec<u8>,
    /// String tag for the value.
    pub tag: u8,
    /// The value.
    pub value: String,
}

impl SubjectAttr {
    /// `CN=<value>` as UTF8String, the way the modem writes it.
    pub fn cn(value: &str) -> Self {
        SubjectAttr {
            oid: oid::CN.as_bytes().to_vec(),
            tag: tag::UTF8_STRING,
            value: value.to_string(),
        }
    }
}

/// Parse a KEYGEN `<attributes>` argument such as `O=Nordic Semiconductor,L=Trondheim,C=no,
/// CN=mydevice` into subject attributes (one RDN each, in order). Keys are the usual short
/// names (CN, O, OU, L, ST, C, SN, serialNumber, emailAddress, DC, …), case-insensitive.
pub fn subject_from_attributes(s: &str) -> Result<Vec<SubjectAttr>, CryptoError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| {
            CryptoError::InvalidInput(format!("attribute `{part}` is not KEY=value"))
        })?;
        let (k, v) = (k.trim(), v.trim());
        let (_, o) = oid::attribute_by_name(k)
            .ok_or_else(|| CryptoError::InvalidInput(format!("unknown attribute `{k}`")))?;
        if v.is_empty() {
            return Err(CryptoError::InvalidInput(format!(
                "attribute `{k}` is empty"
            )));
        }
        out.push(SubjectAttr {
            oid: o.as_bytes().to_vec(),
            tag: attr_string_tag(&o),
            value: v.to_string(),
        });
    }
    if out.is_empty() {
        return Err(CryptoError::InvalidInput(
            "no subject attributes given".into(),
        ));
    }
    Ok(out)
}

/// Encode a Name with one attribute per RDN.
pub fn name_der(attrs: &[SubjectAttr]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for a in attrs {
        let atv = tlv::cons(
            tag::SEQUENCE,
            &[
                &tlv::tlv(tag::OID, &a.oid),
                &tlv::tlv(a.tag, a.value.as_bytes()),
            ],
        );
        tlv::write_tlv(&mut rdns, tag::SET, &atv);
    }
    tlv::tlv(tag::SEQUENCE, &rdns)
}

/// SubjectPublicKeyInfo of an uncompressed P-256 point (91 bytes).
pub fn spki_p256_der(point: &[u8; 65]) -> Vec<u8> {
    let alg = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::OID, oid::EC_PUBLIC_KEY.as_bytes()),
            &tlv::tlv(tag::OID, oid::SECP256R1.as_bytes()),
        ],
    );
    let mut bits = Vec::with_capacity(66);
    bits.push(0);
    bits.extend_from_slice(point);
    tlv::cons(tag::SEQUENCE, &[&alg, &tlv::tlv(tag::BIT_STRING, &bits)])
}

/// The modem's `[0]` attributes: extensionRequest with keyUsage digitalSignature,
/// nonRepudiation, keyEncipherment, keyAgreement (`03 02 03 E8`, non-critical).
pub fn modem_extension_request() -> Vec<u8> {
    let ku = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::OID, oid::KEY_USAGE.as_bytes()),
            &tlv::tlv(tag::OCTET_STRING, &[0x03, 0x02, 0x03, 0xe8]),
        ],
    );
    let exts = tlv::cons(tag::SEQUENCE, &[&ku]);
    let attr = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(tag::OID, oid::EXTENSION_REQUEST.as_bytes()),
            &tlv::tlv(tag::SET, &exts),
        ],
    );
    tlv::tlv(tag::CONTEXT_0, &attr)
}

/// A CertificationRequestInfo from encoded parts (version 0).
pub fn info_der(name: &[u8], spki: &[u8], attributes: &[u8]) -> Vec<u8> {
    tlv::cons(
        tag::SEQUENCE,
        &[&tlv::tlv(tag::INTEGER, &[0]), name, spki, attributes],
    )
}

/// The signatureAlgorithm `SEQUENCE { ecdsa-with-SHA256 [, NULL] }`.
pub fn ecdsa_sha256_alg(null_param: bool) -> Vec<u8> {
    let oid = tlv::tlv(tag::OID, oid::ECDSA_WITH_SHA256.as_bytes());
    if null_param {
        tlv::cons(tag::SEQUENCE, &[&oid, &[0x05, 0x00]])
    } else {
        tlv::cons(tag::SEQUENCE, &[&oid])
    }
}

/// Assemble a CSR from an already-encoded info, signature algorithm and signature bytes
/// (tests use this to craft bad requests).
pub fn assemble(info: &[u8], sig_alg: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(signature);
    tlv::cons(
        tag::SEQUENCE,
        &[info, sig_alg, &tlv::tlv(tag::BIT_STRING, &bits)],
    )
}

/// Sign an encoded CertificationRequestInfo with `key` and assemble the CSR.
pub fn build_csr_from_info(
    key: &P256Key,
    info: &[u8],
    null_param: bool,
) -> Result<Vec<u8>, CryptoError> {
    let sig = key.sign_der(info)?;
    Ok(assemble(info, &ecdsa_sha256_alg(null_param), &sig))
}

/// A CSR like the modem's: `subject`, `key`'s public key, the modem's keyUsage
/// extensionRequest, ecdsa-with-SHA256 (with the NULL quirk when `null_param`).
pub fn build_csr(
    key: &P256Key,
    subject: &[SubjectAttr],
    null_param: bool,
) -> Result<Vec<u8>, CryptoError> {
    let info = info_der(
        &name_der(subject),
        &spki_p256_der(&key.public_key()),
        &modem_extension_request(),
    );
    build_csr_from_info(key, &info, null_param)
}

/// A self-signed X.509 v3 certificate for `key` with `subject` as subject and issuer, one
/// year from 2024-01-01, as `AT%KEYGEN=<tag>,14,2` answers (nRF91x1 mfw ≥ 2.0.2).
pub fn build_self_signed(key: &P256Key, subject: &[SubjectAttr]) -> Result<Vec<u8>, CryptoError> {
    let name = name_der(subject);
    let mut serial = crypto::random_bytes::<8>();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let validity = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::tlv(0x17, b"240101000000Z"),
            &tlv::tlv(0x17, b"250101000000Z"),
        ],
    );
    let tbs = tlv::cons(
        tag::SEQUENCE,
        &[
            &tlv::cons(0xa0, &[&tlv::tlv(tag::INTEGER, &[2])]),
            &tlv::tlv(tag::INTEGER, &serial),
            &ecdsa_sha256_alg(false),
            &name,
            &validity,
            &name,
            &spki_p256_der(&key.public_key()),
        ],
    );
    let sig = key.sign_der(&tbs)?;
    Ok(assemble(&tbs, &ecdsa_sha256_alg(false), &sig))
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
        // 2: a self-signed certificate (key_type 14), which x509-cert reads and
        // whose self-signature verifies; 3 is not a response the firmware knows.
        let g = m
            .keygen(
                7,
                &GenOptions {
                    response_content: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        let p = parse(&g.keygen).unwrap();
        {
            use der::{Decode, Encode};
            let cert = x509_cert::Certificate::from_der(&p.der).unwrap();
            let tbs = cert.tbs_certificate.to_der().unwrap();
            let sig = cert.signature.raw_bytes();
            assert!(crypto::verify_p256_sha256(&g.public_key, &tbs, sig));
            assert_eq!(cert.tbs_certificate.subject, cert.tbs_certificate.issuer);
        }
        assert!(m
            .keygen(
                7,
                &GenOptions {
                    response_content: 3,
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

    #[test]
    fn builder_reproduces_the_seed_csr() {
        use crate::keygen::csr::Csr;
        let der_bytes = hex::decode("3082010b3081af020100302f312d302b06035504030c2435303530333034312d333533392d343765622d383037622d3130326462623432336239613059301306072a8648ce3d020106082a8648ce3d03010703420004612a4b62ff71157d2132ee80f26aaaa3d9c4e695f9a1b8c75c30e1fdc64217de891d3c816b019d2c239c6de96758e7a2324128fc09ee52c46ccc294b8fe6e783a01e301c06092a864886f70d01090e310f300d300b0603551d0f0404030203e8300c06082a8648ce3d04030205000349003046022100dc065c230abad4cecf463740d38cfceb71665bb9af6e06f7941ed85346e2d7a40221008c6ea76cf67c5dab45cbeb5431cae2948198cf73a65adbed4e50f0955f3f6b9e").unwrap();
        let c = Csr::parse(&der_bytes).unwrap();
        let pt = c.spki.p256_point().unwrap();
        // The builder reproduces the seed's structure byte for byte up to the key/signature.
        let info = info_der(
            c.subject_raw,
            &spki_p256_der(&pt),
            &modem_extension_request(),
        );
        assert_eq!(info, c.info);
        assert_eq!(
            ecdsa_sha256_alg(true),
            &der_bytes[0xaf + 3 + 4..0xaf + 3 + 4 + 14]
        );
    }

    #[test]
    fn build_round_trip_with_and_without_null() {
        let (k, _) = P256Key::generate().unwrap();
        for null in [true, false] {
            let subj = subject_from_attributes("O=Nordic Semiconductor,C=no,CN=mydevice").unwrap();
            let d = build_csr(&k, &subj, null).unwrap();
            let c = crate::keygen::csr::Csr::parse(&d).unwrap();
            assert_eq!(c.null_param(), null);
            assert!(c.is_ecdsa_sha256());
            assert_eq!(c.common_names(), vec![Some("mydevice")]);
            // DER order O, C, CN; RFC 4514 prints the last RDN first.
            assert_eq!(
                crate::keygen::csr::name_to_string(&c.subject),
                "CN=mydevice,C=no,O=Nordic Semiconductor"
            );
            assert_eq!(c.spki.p256_point().unwrap(), k.public_key());
            assert!(crate::crypto::verify_p256_sha256(
                &k.public_key(),
                c.info,
                c.signature
            ));
        }
    }

    #[test]
    fn attributes_errors() {
        assert!(subject_from_attributes("").is_err());
        assert!(subject_from_attributes("XX=1").is_err());
        assert!(subject_from_attributes("CN").is_err());
        assert!(subject_from_attributes("CN=").is_err());
        assert_eq!(
            subject_from_attributes("cn=a").unwrap(),
            vec![SubjectAttr::cn("a")]
        );
    }
}
