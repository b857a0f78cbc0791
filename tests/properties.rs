//! Property tests for every parser that reads input from a file, a string or a serial port:
//! "never panics" on hostile and mutated input, "round-trips" where a writer exists, the size
//! limits, and the regressions the fuzz targets in `fuzz/` found (see docs/fuzzing.md).
//! The whole file runs in a few seconds in the normal `cargo test`.

use std::io::Read;
use std::path::Path;

use nrfca::bundle;
use nrfca::inspect::{self, InspectOptions};
use nrfca::internal::crypto;
use nrfca::internal::keygen::{cbor, cose, csr, tlv};
use nrfca::keygen::{self, CheckOptions, DeviceIdMode};
use nrfca::reject::RejectCode;
use nrfca::requests::{self, Entry, RequestRow, SourceReader};
use nrfca::sim::generate::{GenOptions, ModemIdentity};
use proptest::prelude::*;

mod common;
use common::SEED;

fn seed_halves() -> (Vec<u8>, Vec<u8>) {
    let (a, b) = SEED.split_once('.').unwrap();
    (
        crypto::b64url_decode(a).unwrap(),
        crypto::b64url_decode(b).unwrap(),
    )
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A mutation of `base`: flip, insert, delete or truncate at fuzzer-chosen places.
fn mutate(base: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(op, pos, byte) in ops {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = pos % v.len();
        match op % 4 {
            0 => v[i] ^= byte | 1,
            1 => v.insert(i, byte),
            2 => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
    v
}

fn ops() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
}

fn all_check_options() -> [CheckOptions; 3] {
    [
        CheckOptions::default(),
        CheckOptions {
            sec_tag: None,
            device_id: DeviceIdMode::Cn,
            imei: Some("352656100000002".into()),
        },
        CheckOptions {
            sec_tag: Some(1),
            device_id: DeviceIdMode::Cn,
            imei: None,
        },
    ]
}

// ---- KEYGEN strings -------------------------------------------------------------------

#[test]
fn seed_is_accepted_bare_and_wrapped() {
    let v = keygen::check(SEED, &CheckOptions::default()).unwrap();
    assert_eq!(v.uuid, "50503041-3539-47eb-807b-102dbb423b9a");
    let w = keygen::check(
        &format!("  %KEYGEN: \"{SEED}\"\r\n"),
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(v, w);
}

#[test]
fn keygen_size_limit() {
    // One byte over MAX_LINE is malformed-input, whatever it holds; exactly MAX_LINE is read.
    let long = "A".repeat(keygen::MAX_LINE + 1);
    assert_eq!(
        keygen::check(&long, &CheckOptions::default())
            .unwrap_err()
            .code,
        RejectCode::MalformedInput
    );
    let at_limit = format!("{SEED}{}", " ".repeat(keygen::MAX_LINE - SEED.len()));
    assert!(keygen::check(&at_limit, &CheckOptions::default()).is_ok());
    let huge = format!("{SEED}.{}", "A".repeat(10 << 20));
    assert_eq!(
        keygen::parse(&huge).unwrap_err().code,
        RejectCode::MalformedInput
    );
}

/// Check `s` with every option set: never panics, agrees with `parse` up to
/// malformed-attestation, and accepted strings are consistent.
fn check_consistent(s: &str) {
    let parsed = keygen::parse(s);
    for o in all_check_options() {
        match keygen::check(s, &o) {
            Ok(v) => {
                let p = parsed.as_ref().expect("check accepted what parse refused");
                assert_eq!(p.der, v.csr_der);
                assert!(p.digest_ok());
                let text = keygen::unwrap_line(s).unwrap();
                assert_eq!(v.keygen_sha256, crypto::sha256(text.as_bytes()));
            }
            Err(r) => {
                if r.code <= RejectCode::MalformedAttestation {
                    assert_eq!(parsed.as_ref().err().map(|e| e.code), Some(r.code), "{s:?}");
                }
            }
        }
    }
    let _ = keygen::parse_attesttoken(s);
    let _ = inspect::render_text(&inspect::inspect_keygen(s, &CheckOptions::default()));
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn keygen_any_text_never_panics(s in "\\PC{0,300}") {
        check_consistent(&s);
    }

    #[test]
    fn keygen_base64ish_text_never_panics(s in "[A-Za-z0-9_\\-.=\"% :]{0,400}") {
        check_consistent(&s);
    }

    #[test]
    fn keygen_mutated_seed_text_never_panics(ops in ops()) {
        let m = mutate(SEED.as_bytes(), &ops);
        check_consistent(&String::from_utf8_lossy(&m));
    }

    /// Mutate the decoded halves (so the damage lands in the DER and CBOR, not the base64).
    #[test]
    fn keygen_mutated_halves_never_panic(csr_ops in ops(), cose_ops in ops(), which in 0u8..3) {
        let (csr0, cose0) = seed_halves();
        let c = if which != 1 { mutate(&csr0, &csr_ops) } else { csr0.clone() };
        let k = if which != 0 { mutate(&cose0, &cose_ops) } else { cose0 };
        let s = format!("{}.{}", crypto::b64url_encode(&c), crypto::b64url_encode(&k));
        check_consistent(&s);
        if let Ok(v) = keygen::check(&s, &CheckOptions::default()) {
            // Only changes outside the signed CertificationRequestInfo can keep it valid.
            let p = keygen::Csr::parse(&v.csr_der).unwrap();
            prop_assert!(crypto::verify_p256_sha256(&v.public_key, p.info, p.signature));
        }
    }
}

proptest! {
    #![proptest_config(cfg(24))]

    /// Generator → checker round trip with any sec_tag, NULL quirk on or off, CN or
    /// `nrf-<IMEI>` subjects.
    #[test]
    fn generated_keygen_round_trips(sec_tag in any::<u32>(), null_param in any::<bool>(),
                                    imei_cn in any::<bool>(), wrapped in any::<bool>()) {
        let m = ModemIdentity::random().unwrap();
        let opts = GenOptions {
            null_param,
            attributes: imei_cn.then(|| "CN=nrf-352656100000002".to_string()),
            response_content: 0,
        };
        let g = m.keygen(sec_tag, &opts).unwrap();
        let s = if wrapped { format!("%KEYGEN: \"{}\"", g.keygen) } else { g.keygen.clone() };
        let o = CheckOptions {
            sec_tag: Some(sec_tag),
            device_id: if imei_cn { DeviceIdMode::Cn } else { DeviceIdMode::Uuid },
            imei: None,
        };
        let v = keygen::check(&s, &o).unwrap();
        prop_assert_eq!(v.sec_tag, sec_tag);
        prop_assert_eq!(v.public_key, g.public_key);
        prop_assert_eq!(v.uuid, m.uuid_string());
        prop_assert_eq!(v.null_param, null_param);
        prop_assert_eq!(
            v.device_id,
            if imei_cn { "nrf-352656100000002".to_string() } else { m.uuid_string() }
        );
        let p = keygen::parse(&s).unwrap();
        prop_assert_eq!(p.payload.msg_type, cose::MSG_TYPE_CSR);
        prop_assert_eq!(keygen::Csr::parse(&p.der).unwrap().der, &v.csr_der[..]);
    }
}

// ---- CBOR / COSE ----------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn cbor_any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = cbor::decode(&b) {
            prop_assert!(v.diag(100).len() <= 104);
        }
        let _ = cose::parse_sign1(&b);
        let _ = cose::parse_keygen_payload(&b);
        let _ = cose::parse_attest_payload(&b);
        let _ = cose::decode_sec_tag(&b);
        let _ = keygen::parse_attestation(&b);
    }

    #[test]
    fn cbor_mutated_cose_never_panics(ops in ops()) {
        let (_, cose0) = seed_halves();
        let b = mutate(&cose0, &ops);
        let _ = keygen::parse_attestation(&b);
        if let Ok(c) = cose::parse_sign1(&b) {
            let _ = (c.alg_name(), c.kid_name());
        }
    }

    #[test]
    fn keygen_payload_round_trips(msg_type in any::<i64>(), uuid in any::<[u8; 16]>(),
                                  sec_tag in any::<u32>(), digest in any::<[u8; 32]>(),
                                  nonce in any::<[u8; 16]>()) {
        let b = cose::keygen_payload(msg_type, &uuid, sec_tag, &digest, &nonce);
        let p = cose::parse_keygen_payload(&b).unwrap();
        prop_assert_eq!((p.msg_type, p.uuid, p.sec_tag, p.digest, p.nonce),
                        (msg_type, uuid, sec_tag, digest, nonce));
        prop_assert_eq!(cose::decode_sec_tag(&cose::encode_sec_tag(sec_tag)), Ok(sec_tag));
    }

    #[test]
    fn attest_payload_round_trips(uuid in any::<[u8; 16]>(), device_type in any::<i64>(),
                                  fw in any::<[u8; 16]>(), nonce in any::<[u8; 16]>()) {
        let b = cose::attest_payload(&uuid, device_type, &fw, &nonce);
        let p = cose::parse_attest_payload(&b).unwrap();
        prop_assert_eq!((p.uuid, p.device_type, p.fw_uuid, p.nonce), (uuid, device_type, fw, nonce));
    }
}

#[test]
fn cbor_limits() {
    // Nesting over MAX_DEPTH, a count claiming more items than bytes, indefinite lengths and
    // a 2^64-1 byte string are refused without allocating.
    let deep = [vec![0x81u8; cbor::MAX_DEPTH + 2], vec![0]].concat();
    assert_eq!(cbor::decode(&deep), Err(cbor::CborError::TooDeep));
    assert_eq!(
        cbor::decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(cbor::CborError::TooLong)
    );
    assert_eq!(
        cbor::decode(&[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(cbor::CborError::TooLong)
    );
    assert_eq!(
        cbor::decode(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(cbor::CborError::TooLong)
    );
    assert!(matches!(
        cbor::decode(&[0x9f, 0x00, 0xff]),
        Err(cbor::CborError::Unsupported(_))
    ));
    // MAX_ITEMS: a flat array of 5000 zeros.
    let mut many = vec![0x99, 0x13, 0x88];
    many.extend(std::iter::repeat(0).take(5000));
    assert_eq!(cbor::decode(&many), Err(cbor::CborError::TooDeep));
}

// ---- DER / CSR ------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn der_any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(t) = tlv::parse_one(&b) {
            prop_assert_eq!(t.raw, &b[..]);
            prop_assert!(t.raw.ends_with(t.value));
        }
        let _ = csr::Csr::parse(&b).map(|c| (c.common_names(), c.requested_extensions()));
        let _ = csr::Spki::parse(&b).map(|s| s.describe());
        let _ = csr::parse_name_der(&b).map(|n| csr::name_to_string(&n));
        let _ = tlv::oid_string(&b);
        let _ = inspect::render_text(&inspect::inspect_csr(&b, &b));
    }

    #[test]
    fn csr_mutated_seed_never_panics(ops in ops()) {
        let (csr0, _) = seed_halves();
        let b = mutate(&csr0, &ops);
        if let Ok(c) = csr::Csr::parse(&b) {
            let _ = (c.common_names(), c.requested_extensions(), c.spki.p256_point());
            let _ = serde_json::to_string(&inspect::csr_info(&c)).unwrap();
        }
        let _ = inspect::render_text(&inspect::inspect_csr(&b, &b));
    }

    #[test]
    fn der_tlv_round_trips(tag in any::<u8>().prop_filter("low tag", |t| t & 0x1f != 0x1f),
                           value in proptest::collection::vec(any::<u8>(), 0..600)) {
        let enc = tlv::tlv(tag, &value);
        let t = tlv::parse_one(&enc).unwrap();
        prop_assert_eq!((t.tag, t.value, t.raw), (tag, &value[..], &enc[..]));
    }
}

#[test]
fn der_limits() {
    // Length fields over 4 bytes, indefinite lengths and lengths past the end are refused.
    assert!(tlv::parse_one(&[0x30, 0x85, 1, 0, 0, 0, 0]).is_err());
    assert!(tlv::parse_one(&[0x30, 0x80, 0, 0]).is_err());
    assert!(tlv::parse_one(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    // More than MAX_SUBJECT_ATTRS attributes in a subject.
    let atv = tlv::cons(
        tlv::tag::SEQUENCE,
        &[
            &tlv::tlv(tlv::tag::OID, nrfca::internal::oid::CN.as_bytes()),
            &tlv::tlv(tlv::tag::UTF8_STRING, b"x"),
        ],
    );
    let rdn = tlv::cons(tlv::tag::SET, &[&atv]);
    let many: Vec<&[u8]> = std::iter::repeat(&rdn[..])
        .take(csr::MAX_SUBJECT_ATTRS + 1)
        .collect();
    let name = tlv::cons(tlv::tag::SEQUENCE, &many);
    assert!(csr::parse_name_der(&name).is_err());
}

// ---- requests files -------------------------------------------------------------------

/// A reader returning at most `n` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    i: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self
            .sizes
            .get(self.i % self.sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        self.i += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every entry of `data` read with chunk sizes `sizes`; checks line order, sizes and digest.
fn read_all(data: &[u8], sizes: Vec<usize>) -> Vec<Result<Entry, String>> {
    let mut r = SourceReader::new("p", Chunked { data, sizes, i: 0 });
    let mut out = Vec::new();
    let mut last = 0;
    for _ in 0..=data.len() + 1 {
        match r.next_entry() {
            Ok(Some(e)) => {
                let line = match &e {
                    Entry::Request(q) => {
                        assert!(!q.keygen.is_empty() && q.keygen.len() <= requests::MAX_LINE);
                        q.line
                    }
                    Entry::Malformed(m) => {
                        assert_eq!(m.reject.code, RejectCode::MalformedInput);
                        m.line
                    }
                };
                assert!(line > last, "line {line} after {last}");
                last = line;
                out.push(Ok(e));
            }
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    let d = r.finish().unwrap();
    assert_eq!(d.bytes, data.len() as u64);
    assert_eq!(d.sha256, crypto::sha256(data));
    out
}

fn requests_seed() -> Vec<u8> {
    let row = RequestRow {
        device_uuid: "50503041-3539-47eb-807b-102dbb423b9a".into(),
        imei: "352656100000002".into(),
        sec_tag: "16842753".into(),
        keygen: SEED.into(),
        modem_fw: "mfw_nrf9160_1.3.7".into(),
        model: "nRF9160-SICA".into(),
        bench: "bench, \"one\"".into(),
        port: "/dev/ttyACM0".into(),
        exported_at: "2025-01-01T00:00:00Z".into(),
        bad_shape: None,
    };
    let mut f = format!("{}\n", requests::HEADER);
    f.push_str(&requests::format_row(&row));
    f.push_str(&requests::format_row(&row));
    f.push_str("\n,,,,\n\"open,\nstill open\n");
    f.into_bytes()
}

fn field() -> impl Strategy<Value = String> {
    // Any text without CR (see `requests_crlf_inside_quotes`), commas, quotes and LFs included.
    "[^\r]{0,40}"
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn requests_any_bytes_never_panic_and_chunking_is_invisible(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        header in any::<bool>(),
        sizes in proptest::collection::vec(1usize..40, 1..5),
    ) {
        let mut d = if header { format!("{}\n", requests::HEADER).into_bytes() } else { vec![] };
        d.extend(&data);
        prop_assert_eq!(read_all(&d, vec![]), read_all(&d, sizes));
    }

    /// `sign`'s pre-unlock check: never panics, the same verdict however the bytes arrive,
    /// and an input it calls empty or header-only yields no request to the reader.
    #[test]
    fn requests_sniff_never_panics_and_agrees_with_the_reader(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        header in any::<bool>(),
        seed in any::<bool>(),
        sizes in proptest::collection::vec(1usize..40, 1..5),
    ) {
        let mut d = if header { format!("{}\n", requests::HEADER).into_bytes() } else { vec![] };
        d.extend(&data);
        if seed {
            d.extend(format!("\n{SEED}\n").as_bytes());
        }
        let whole = requests::sniff_reader(&d[..]).unwrap();
        let chunked = requests::sniff_reader(Chunked { data: &d, sizes, i: 0 }).unwrap();
        prop_assert_eq!(&whole, &chunked);
        if matches!(whole, Err(requests::NotRequests::Empty | requests::NotRequests::HeaderOnly)) {
            let any_request = read_all(&d, vec![])
                .iter()
                .any(|e| matches!(e, Ok(Entry::Request(_))));
            prop_assert!(!any_request);
        }
        // A real KEYGEN line after text is found (unless binary or a known other file
        // was recognised before it).
        if seed && !header && !d.contains(&0) && std::str::from_utf8(&data).is_ok_and(|t| {
            t.lines().all(|l| { let l = l.trim(); l.is_empty() || l.starts_with('#') })
        }) {
            prop_assert_eq!(whole, Ok(()));
        }
    }

    #[test]
    fn requests_mutated_csv_never_panics(ops in ops(), sizes in proptest::collection::vec(1usize..64, 1..4)) {
        let d = mutate(&requests_seed(), &ops);
        prop_assert_eq!(read_all(&d, vec![]), read_all(&d, sizes));
    }

    #[test]
    fn requests_rows_round_trip(f in proptest::collection::vec(field(), 9), crlf in any::<bool>()) {
        let row = RequestRow {
            device_uuid: f[0].clone(), imei: f[1].clone(), sec_tag: "7".into(),
            keygen: format!("k{}", f[3]), modem_fw: f[4].clone(), model: f[5].clone(),
            bench: f[6].clone(), port: f[7].clone(), exported_at: f[8].clone(),
            bad_shape: None,
        };
        let mut file = format!("{}\n{}", requests::HEADER, requests::format_row(&row));
        if crlf {
            file = file.replace('\n', "\r\n");
        }
        let got = read_all(file.as_bytes(), vec![3]);
        match got.as_slice() {
            [Ok(Entry::Request(q))] => {
                // With CRLF line ends, a CRLF inside a quoted field is read as LF: the
                // fields (which hold no CR) come back exactly as written either way, except
                // that cells not of their SPEC §3 shape are emptied and flagged.
                let back = q.row.clone().unwrap();
                prop_assert_eq!(&back, &row.clone().neutralised());
                prop_assert_eq!(back.bad_shape.is_some(), row.check_shapes().is_err());
                assert_row_inert(&back);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Rows of the SPEC §3 shapes (what `bench export` and `nrfca gen` write) come back
    /// exactly and unflagged; one poisoned cell (formula start, control character, too
    /// long, bad Luhn digit) is flagged, emptied, and the others stay.
    #[test]
    fn requests_shapes_valid_rows_pass_and_poisoned_cells_are_emptied(
        uuid in any::<[u8; 16]>(),
        imei14 in "[0-9]{14}",
        sec_tag in any::<u32>(),
        text in proptest::collection::vec("[ -~]{0,64}", 4),
        secs in 0i64..4_000_000_000,
        poison_col in prop_oneof![Just(0usize), Just(1), Just(2), Just(4), Just(5), Just(6), Just(7), Just(8)],
        poison in prop_oneof![
            "[=+@\t\r-][ -~]{0,20}".boxed(),
            "[a-z]{0,5}[\x00-\x1f\x7f\u{80}-\u{9f}\u{202e}][a-z]{0,5}".boxed(),
            "[a-z]{65,80}".boxed(),
        ],
    ) {
        let text: Vec<String> = text
            .into_iter()
            .map(|t| t.trim_start_matches(['=', '+', '-', '@']).to_string())
            .collect();
        let d = nrfca::internal::util::luhn_digit(&imei14).unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let row = RequestRow {
            device_uuid: nrfca::internal::util::uuid_string(&uuid),
            imei: format!("{imei14}{d}"),
            sec_tag: sec_tag.to_string(),
            keygen: SEED.into(),
            modem_fw: text[0].clone(),
            model: text[1].clone(),
            bench: text[2].clone(),
            port: text[3].clone(),
            exported_at: at,
            bad_shape: None,
        };
        prop_assert_eq!(row.check_shapes(), Ok(()));
        let file = format!("{}\n{}", requests::HEADER, requests::format_row(&row));
        match read_all(file.as_bytes(), vec![7]).as_slice() {
            [Ok(Entry::Request(q))] => prop_assert_eq!(q.row.as_ref(), Some(&row)),
            other => prop_assert!(false, "{:?}", other),
        }
        let mut bad = row.clone();
        let cell = match poison_col {
            0 => &mut bad.device_uuid, 1 => &mut bad.imei, 2 => &mut bad.sec_tag,
            4 => &mut bad.modem_fw, 5 => &mut bad.model, 6 => &mut bad.bench,
            7 => &mut bad.port, _ => &mut bad.exported_at,
        };
        *cell = poison.clone();
        let file = format!("{}\n{}", requests::HEADER, requests::format_row(&bad));
        match read_all(file.as_bytes(), vec![5]).as_slice() {
            [Ok(Entry::Request(q))] => {
                let back = q.row.clone().unwrap();
                prop_assert!(back.bad_shape.is_some(), "{:?} passed in column {}", poison, poison_col);
                let mut want = row.clone();
                match poison_col {
                    0 => want.device_uuid.clear(), 1 => want.imei.clear(), 2 => want.sec_tag.clear(),
                    4 => want.modem_fw.clear(), 5 => want.model.clear(), 6 => want.bench.clear(),
                    7 => want.port.clear(), _ => want.exported_at.clear(),
                }
                want.bad_shape = back.bad_shape.clone();
                prop_assert_eq!(&back, &want);
                assert_row_inert(&back);
            }
            // A bare CR inside a cell can end the record early: then it is not a request.
            [Ok(Entry::Malformed(_)), ..] if poison.contains('\r') => {}
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// A row the reader yields: every cell (but the KEYGEN, judged by its own checks) is of its
/// shape, none is a formula or holds a control character, and the flag's text is inert too.
fn assert_row_inert(row: &RequestRow) {
    assert_eq!(row.check_shapes(), Ok(()), "{row:?}");
    for cell in [
        &row.device_uuid,
        &row.imei,
        &row.sec_tag,
        &row.modem_fw,
        &row.model,
        &row.bench,
        &row.port,
        &row.exported_at,
    ] {
        assert!(!requests::starts_like_formula(cell), "{cell:?}");
        assert!(!cell.chars().any(char::is_control), "{cell:?}");
    }
    if let Some(r) = &row.bad_shape {
        assert_eq!(r.code, RejectCode::MetadataMismatch);
        let why = &r.detail;
        assert!(
            !requests::starts_like_formula(why) && !why.chars().any(char::is_control),
            "{why:?}"
        );
    }
}

#[test]
fn requests_size_limit_and_recovery() {
    // An over-long line is one malformed entry; the reader goes on with the next line and
    // never keeps more than MAX_LINE + 1 bytes of it.
    let mut d = vec![b'A'; 5 * requests::MAX_LINE];
    d.push(b'\n');
    d.extend(SEED.as_bytes());
    d.push(b'\n');
    let got = read_all(&d, vec![1000]);
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0], Ok(Entry::Malformed(m)) if m.line == 1));
    assert!(matches!(&got[1], Ok(Entry::Request(q)) if q.line == 2 && q.keygen == SEED));
    // A quoted CSV field that never closes stops at MAX_LINE too.
    let mut c = format!("{}\n\"", requests::HEADER).into_bytes();
    c.extend(std::iter::repeat(b"x\n").take(requests::MAX_LINE).flatten());
    c.extend(format!("\n{}\n", "a,b").as_bytes());
    let got = read_all(&c, vec![]);
    assert!(
        matches!(&got[0], Ok(Entry::Malformed(m)) if m.line == 2),
        "{:?}",
        got.first()
    );
}

// ---- bundle files ---------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn bundle_csv_round_trips(rows in proptest::collection::vec(proptest::collection::vec("\\PC{0,20}|[,\"\r\n ]{0,4}", 1..6), 0..5)) {
        let mut data = Vec::new();
        for r in &rows {
            let f: Vec<&str> = r.iter().map(String::as_str).collect();
            data.extend(bundle::csv_record(&f));
        }
        let got: Vec<Vec<String>> = bundle::parse_csv(std::str::from_utf8(&data).unwrap())
            .into_iter().map(|(_, r)| r.unwrap()).collect();
        prop_assert_eq!(got, rows);
    }

    #[test]
    fn bundle_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
        let mut d = if header { format!("{}\n", bundle::CERTS_HEADER).into_bytes() } else { vec![] };
        d.extend(&data);
        let _ = bundle::parse_csv(&String::from_utf8_lossy(&d));
        if let Ok(rows) = bundle::parse_certs_csv(&d) {
            for r in rows {
                prop_assert_eq!(r.sha256, crypto::sha256_hex(r.certificate_pem.as_bytes()));
            }
        }
        let _ = serde_json::from_slice::<bundle::Manifest>(&d);
    }
}

/// A bundle whose listed file is a FIFO (or a symlink to a device) must be refused, not read
/// forever. Runs verify on a thread and fails if it has not returned within 10 s.
#[cfg(unix)]
#[test]
fn bundle_verify_does_not_hang_on_special_files() {
    use std::time::Duration;
    let t = tempfile::tempdir().unwrap();
    for (i, special) in ["fifo", "dev-zero"].iter().enumerate() {
        let dir = t.path().join(format!("b{i}"));
        std::fs::create_dir(&dir).unwrap();
        let (key, _) = crypto::P256Key::generate().unwrap();
        let ca_pem = test_ca_pem(&key);
        let ca_der = nrfca::internal::util::pem_blocks(&ca_pem)[0]
            .decode()
            .unwrap();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("onboard.csv"), "").unwrap();
        std::fs::write(
            dir.join("rejects.csv"),
            format!("{}\n", bundle::REJECTS_HEADER),
        )
        .unwrap();
        let certs = dir.join("certs.csv");
        match *special {
            "fifo" => {
                let ok = std::process::Command::new("mkfifo")
                    .arg(&certs)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !ok {
                    eprintln!("note: mkfifo unavailable, skipping the FIFO case");
                    continue;
                }
            }
            _ => std::os::unix::fs::symlink("/dev/zero", &certs).unwrap(),
        }
        let manifest = serde_json::json!({
            "format": bundle::MANIFEST_FORMAT, "batch": "b", "created_at": "2025-01-01T00:00:00Z",
            "ca_sha256": crypto::sha256_hex(&ca_der), "inputs": [],
            "files": [
                {"name": "ca.pem", "sha256": crypto::sha256_hex(ca_pem.as_bytes())},
                {"name": "certs.csv", "sha256": "00"},
                {"name": "onboard.csv", "sha256": crypto::sha256_hex(b"")},
                {"name": "rejects.csv", "sha256": crypto::sha256_hex(format!("{}\n", bundle::REJECTS_HEADER).as_bytes())},
            ],
            "counts": {"requests": 0, "issued": 0, "returned": 0, "rejected": 0},
        });
        let m = serde_json::to_vec(&manifest).unwrap();
        std::fs::write(dir.join("manifest.json"), &m).unwrap();
        std::fs::write(
            dir.join("manifest.sig"),
            crypto::b64_encode(&key.sign_der(&m).unwrap()),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = dir.clone();
        let pem2 = ca_pem.clone();
        std::thread::spawn(move || {
            let r = bundle::verify(&d2, pem2.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = tx.send(r);
        });
        let r = rx.recv_timeout(Duration::from_secs(10));
        if r.is_err() && *special == "fifo" {
            // Unblock the reader so the thread can end, then fail.
            let _ = std::fs::OpenOptions::new().write(true).open(&certs);
        }
        let r = r.unwrap_or_else(|_| panic!("bundle::verify hangs on a {special} certs.csv"));
        assert!(r.is_err(), "a {special} certs.csv was accepted");
    }
}

/// A P-256 certificate for `key` (our device profile, self-issued): enough for
/// `bundle::verify`, which only needs the trusted CA's key and DER.
fn test_ca_pem(key: &crypto::P256Key) -> String {
    use nrfca::internal::signer::issue::*;
    let name = tlv::cons(
        tlv::tag::SEQUENCE,
        &[&tlv::cons(
            tlv::tag::SET,
            &[&tlv::cons(
                tlv::tag::SEQUENCE,
                &[
                    &tlv::tlv(tlv::tag::OID, nrfca::internal::oid::CN.as_bytes()),
                    &tlv::tlv(tlv::tag::UTF8_STRING, b"Prop CA"),
                ],
            )],
        )],
    );
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let prof = IssuerProfile {
        subject_der: name,
        ski: key_identifier(&key.public_key()).to_vec(),
        not_after: now + time::Duration::days(100),
    };
    let iss = Issuance {
        device_id: "Prop CA".into(),
        public_key: key.public_key(),
        serial: Serial::random().unwrap(),
        not_before: now,
        not_after: now + time::Duration::days(10),
    };
    issue(&prof, &iss, |t| key.sign_der(t)).unwrap().pem
}

// ---- AT: bench parser and simulator receiver/engine -----------------------------------

#[cfg(feature = "bench")]
mod at_props {
    use super::*;
    use nrfca::internal::bench::at::{self, Event, Final, Parser};
    use nrfca::internal::sim::engine::Modem;
    use nrfca::internal::sim::fault::FaultSet;
    use nrfca::internal::sim::framing::{self, Received, Receiver};
    use nrfca::internal::sim::identity::SimIdentity;
    use nrfca::internal::sim::rng::SimRng;
    use nrfca::internal::sim::storage::Storage;
    use nrfca::sim::Profile;

    fn modem(profile: Profile) -> Modem {
        let mut rng = SimRng::from_seed(42);
        let id = SimIdentity::generate(profile.tac(), &mut rng, true).unwrap();
        let st = Storage::new(&id.uuid);
        let mut m = Modem::new(
            profile,
            id,
            st,
            FaultSet::new(vec![], None, SimRng::from_seed(1)),
            0,
        );
        m.boot();
        m
    }

    fn same(a: &framing::Final, b: &Final) -> bool {
        match (a, b) {
            (framing::Final::Ok, Final::Ok) | (framing::Final::Error, Final::Error) => true,
            (framing::Final::Cme(n), Final::Cme(c)) => *n == c.0,
            _ => false,
        }
    }

    /// Commands in the simulator's grammar, with hostile parameters.
    fn command() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("AT+CMEE=1".to_string()),
            Just("AT+CFUN=4".to_string()),
            Just("AT+CGSN=1".to_string()),
            Just("AT%XMODEMUUID".to_string()),
            Just("AT%ATTESTTOKEN".to_string()),
            Just("AT%CMNG=1".to_string()),
            (any::<u32>(), 0u8..4).prop_map(|(t, k)| format!("AT%KEYGEN={t},2,{k}")),
            (any::<u32>(), 0u8..7, "[ -!#-~\n]{0,60}")
                .prop_map(|(t, k, c)| format!("AT%CMNG=0,{t},{k},\"{c}\"")),
            (0u8..4, any::<u32>(), 0u8..7).prop_map(|(o, t, k)| format!("AT%CMNG={o},{t},{k}")),
            "AT[+%#][A-Z]{1,10}[=?]{0,2}[0-9,\"]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(cfg(48))]

        /// What the simulator answers, framed for the wire, is read by the bench parser as
        /// the same final result.
        #[test]
        fn sim_replies_parse_in_the_bench(p in 0usize..3, cmds in proptest::collection::vec(command(), 1..6)) {
            let profile = Profile::ALL[p];
            let mut m = modem(profile);
            for c in cmds {
                let r = m.execute(c.as_bytes());
                let Some(fin) = r.final_result else { continue };
                let bytes = framing::frame(&r.pieces(), profile.is_slm());
                let mut parser = Parser::new();
                parser.begin(&c);
                let seen: Vec<Final> = parser.feed(&bytes).into_iter().filter_map(|e| match e {
                    Event::Final(f) => Some(f),
                    _ => None,
                }).collect();
                prop_assert!(seen.iter().any(|f| same(&fin, f)), "{:?}: sent {:?}, saw {:?}", c, fin, seen);
            }
        }
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn receiver_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000), cut in 0usize..3000) {
            let mut a = Receiver::new();
            let whole = a.push_all(&data);
            let mut b = Receiver::new();
            let cut = cut.min(data.len());
            let mut parts = b.push_all(&data[..cut]);
            parts.extend(b.push_all(&data[cut..]));
            prop_assert_eq!(&whole, &parts);
            for r in &whole {
                if let Received::Command(c) = r {
                    prop_assert!(!c.is_empty() && c.len() < framing::COMMAND_BUFFER);
                }
            }
        }

        #[test]
        fn engine_any_command_never_panics(p in 0usize..3, cmd in proptest::collection::vec(any::<u8>(), 0..200),
                                           head in proptest::sample::select(vec!["AT", "AT%CMNG=0,1,", "AT%KEYGEN=", "AT+CFUN=", "AT+CGSN=", "AT%ATTESTTOKEN=", "AT#XSLMVER", "AT%CMNG=2,", "AT+CMEE="])) {
            let mut m = modem(Profile::ALL[p]);
            let mut c = head.as_bytes().to_vec();
            c.extend(&cmd);
            let r = m.execute(&c);
            prop_assert!(r.final_result.is_some() || r.info.iter().any(|l| l.len() >= nrfca::internal::sim::engine::MAX_REPLY));
            let _ = framing::frame(&r.pieces(), true);
        }

        #[test]
        fn at_parser_any_bytes(cmd in "[ -~]{0,30}", data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut p = Parser::new();
            p.begin(&cmd);
            for e in p.feed(&data) {
                if let Event::Info(s) | Event::Urc(s) | Event::Noise(s) | Event::Boot(s) = e {
                    let _ = at::parse_cmng_line(&s);
                    let _ = at::parse_quoted_reply(&s, "%KEYGEN:");
                    let _ = at::parse_fw_version(&s);
                    let _ = at::keygen_supported(&s, &s);
                    prop_assert!(at::summarize_command(&s).len() <= 120);
                }
            }
            p.reset();
            p.begin("AT");
            prop_assert!(p.feed(b"\r\nOK\r\n").contains(&Event::Final(Final::Ok)));
        }
    }

    #[test]
    fn at_and_receiver_size_limits() {
        // Bench parser: a line over MAX_LINE is one Overflow and the parser resynchronises.
        let mut p = Parser::new();
        p.begin("AT%CMNG=2,1,0");
        let mut d = b"%CMNG: 1,0,\"".to_vec();
        d.extend(std::iter::repeat(b'A').take(at::MAX_LINE * 3));
        d.extend(b"\r\nOK\r\n");
        let ev = p.feed(&d);
        assert_eq!(
            ev.iter().filter(|e| **e == Event::Overflow).count(),
            1,
            "{:?}",
            &ev
        );
        // Simulator receiver: 4095 bytes is a command, 4096 an overflow.
        let mut r = Receiver::new();
        let mut ok = b"AT".to_vec();
        ok.extend(std::iter::repeat(b'X').take(4093));
        ok.push(b'\r');
        assert!(matches!(r.push_all(&ok).as_slice(), [Received::Command(c)] if c.len() == 4095));
        let mut over = b"AT".to_vec();
        over.extend(std::iter::repeat(b'X').take(4094));
        over.push(b'\r');
        assert_eq!(r.push_all(&over), vec![Received::Overflow]);
    }
}

// ---- audit log import -----------------------------------------------------------------

mod audit_props {
    use super::*;
    use nrfca::signer::audit::{self, Record};
    use nrfca::signer::ca;
    use nrfca::signer::secret::Protection;
    use std::sync::OnceLock;

    /// A real CA (age X25519 recipient, so no scrypt) and its exported logs (JSONL, then CSV,
    /// which has one record more: the first export's), made once.
    struct Fixture {
        dir: tempfile::TempDir,
        jsonl: Vec<u8>,
        csv: Vec<u8>,
    }

    fn fixture_all() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let t = tempfile::tempdir().unwrap();
            let id = age::x25519::Identity::generate();
            let opts = ca::InitOptions {
                subject: "CN=Prop CA,O=nrfca".into(),
                days: 365,
                protection: Protection::Recipients(vec![id.to_public().to_string()]),
                operator: "prop".into(),
            };
            let dir = t.path().join("ca");
            ca::init(&dir, &opts).unwrap();
            let out = t.path().join("log.jsonl");
            audit::export(&dir, &out, audit::ExportFormat::Jsonl, "prop").unwrap();
            let out_csv = t.path().join("log.csv");
            audit::export(&dir, &out_csv, audit::ExportFormat::Csv, "prop").unwrap();
            Fixture {
                jsonl: std::fs::read(&out).unwrap(),
                csv: std::fs::read(&out_csv).unwrap(),
                dir: t,
            }
        })
    }

    fn verify_bytes(log: &[u8]) -> Result<audit::VerifyReport, String> {
        let t = &fixture_all().dir;
        let mut f = tempfile::NamedTempFile::new_in(t.path()).unwrap();
        std::io::Write::write_all(&mut f, log).unwrap();
        audit::verify_file(f.path(), &t.path().join("ca").join("ca.pem")).map_err(|e| e.to_string())
    }

    /// Recompute prev_hash/hash of every record line so the chain holds after a mutation.
    fn rechain(log: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = audit::GENESIS_HASH.to_string();
        for line in log.split_inclusive(|&b| b == b'\n') {
            match serde_json::from_slice::<Record>(line.strip_suffix(b"\n").unwrap_or(line)) {
                Ok(mut r) => {
                    r.prev_hash = prev.clone();
                    r.hash = r.compute_hash().unwrap();
                    prev = r.hash.clone();
                    out.extend(r.to_export_json().as_bytes());
                    out.push(b'\n');
                }
                Err(_) => out.extend(line),
            }
        }
        out
    }

    #[test]
    fn exported_log_verifies() {
        let log = &fixture_all().jsonl;
        let r = verify_bytes(log).unwrap();
        assert!(r.first_bad.is_none(), "{:?}", r.first_bad);
        assert!(r.records >= 1);
        // Re-chaining an intact log changes nothing.
        assert_eq!(&rechain(log), log);
    }

    #[test]
    fn exported_csv_log_verifies_and_long_csv_lines_are_refused() {
        let f = fixture_all();
        let r = verify_bytes(&f.csv).unwrap();
        assert!(r.first_bad.is_none(), "{:?}", r.first_bad);
        assert_eq!(r.records, verify_bytes(&f.jsonl).unwrap().records + 1);
        // A 5 MiB line (quoted, so the csv reader would keep it all) is a finding, read
        // through a bounded reader; so is a 5 MiB line without any LF at the end.
        for tail in [b"\n".to_vec(), vec![]] {
            let mut d = f.csv.clone();
            d.extend(b"\"");
            d.extend(std::iter::repeat(b'x').take(5 << 20));
            d.extend(&tail);
            let r = verify_bytes(&d).unwrap();
            let bad = r.first_bad.expect("finding");
            assert!(bad.problem.contains("longer than"), "{}", bad.problem);
        }
    }

    /// Regression: a JSONL line of exactly MAX_LINE bytes (plus LF) used to be judged too
    /// long and the record after it was skipped unread; an over-long line was read whole into
    /// memory to skip it.
    #[test]
    fn audit_long_lines_are_bounded_and_skip_nothing() {
        let log = &fixture_all().jsonl;
        let good = verify_bytes(log).unwrap().records;
        for (len, lf) in [
            (audit::MAX_LINE, true),
            (audit::MAX_LINE + 1, true),
            (3 * audit::MAX_LINE, true),
        ] {
            let mut d = vec![b'{'; len];
            if lf {
                d.push(b'\n');
            }
            d.extend(log);
            let r = verify_bytes(&d).unwrap();
            assert_eq!(r.records, good + 1, "line of {len} bytes");
            assert!(r.first_bad.is_some());
        }
        // An over-long last line without LF.
        let mut d = log.clone();
        d.extend(vec![b'{'; 2 * audit::MAX_LINE]);
        let r = verify_bytes(&d).unwrap();
        assert_eq!(r.records, good + 1);
    }

    proptest! {
        #![proptest_config(cfg(96))]

        #[test]
        fn audit_mutated_csv_log_never_panics(ops in ops()) {
            let _ = verify_bytes(&mutate(&fixture_all().csv, &ops));
        }

        #[test]
        fn audit_mutated_log_never_panics(ops in ops(), re in any::<bool>()) {
            let log = &fixture_all().jsonl;
            let mut m = mutate(log, &ops);
            if re {
                m = rechain(&m);
            }
            if let Ok(r) = verify_bytes(&m) {
                if m != *log {
                    // Any change to a signed log is found (or it is a JSON-equivalent rewrite).
                    let same = rechain(&m) == *log;
                    prop_assert!(r.first_bad.is_some() || same || re, "altered log verified: {:?}", String::from_utf8_lossy(&m));
                }
            }
        }

        #[test]
        fn audit_any_lines_never_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..6), csv in any::<bool>()) {
            let mut d = if csv { b"seq,time,operator,event,details,prev_hash,hash\n".to_vec() } else { vec![] };
            for l in lines {
                d.extend(l.as_bytes());
                d.push(b'\n');
            }
            let _ = verify_bytes(&d);
        }
    }
}

// ---- inspect --------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn inspect_any_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), prefix in proptest::sample::select(vec!["", "-----BEGIN CERTIFICATE-----\n", "-----BEGIN CERTIFICATE REQUEST-----\n", "device_uuid,imei,sec_tag,keygen,modem_fw,model,bench,port,exported_at\n", "%KEYGEN: \"", "%ATTESTTOKEN: \"", "0"])) {
        let mut d = prefix.as_bytes().to_vec();
        d.extend(&data);
        let r = inspect::inspect(&d, &InspectOptions::default());
        let _ = inspect::render_text(&r);
        serde_json::to_string(&r).unwrap();
    }
}

#[test]
fn inspect_seed_and_requests() {
    let r = inspect::inspect(SEED.as_bytes(), &InspectOptions::default());
    let j = serde_json::to_value(&r).unwrap();
    assert!(j
        .to_string()
        .contains("50503041-3539-47eb-807b-102dbb423b9a"));
    let r = inspect::inspect(&requests_seed(), &InspectOptions::default());
    let _ = inspect::render_text(&r);
}

// ---- fuzz regressions -----------------------------------------------------------------

/// Inputs the fuzz targets found that once crashed, hung or broke a property (none is
/// expected to fail now). Each entry: target, input.
#[test]
fn fuzz_regressions() {
    // The folder is in git (tests/fuzz-regressions/README.md): a missing or empty folder, or a
    // file for a target this test does not know, is a failure, not a silent pass.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let entries = std::fs::read_dir(&dir).expect("tests/fuzz-regressions is in the repository");
    let mut fed = std::collections::BTreeMap::<String, usize>::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        let target = name.split('-').next().unwrap_or("").to_string();
        match target.as_str() {
            "keygen" => check_consistent(&String::from_utf8_lossy(&data)),
            "requests" => {
                let _ = read_all(&data, vec![]);
            }
            "inspect" => {
                let _ = inspect::render_text(&inspect::inspect(&data, &InspectOptions::default()));
            }
            other => panic!("{name}: unknown fuzz target `{other}`"),
        }
        *fed.entry(target).or_default() += 1;
    }
    for target in ["keygen", "requests", "inspect"] {
        assert!(
            fed.get(target).copied().unwrap_or(0) > 0,
            "no regression input for {target}: {fed:?}"
        );
    }
}
