//! Tests of the requests parser, sniffer and writer.

use super::*;
use std::io::{Read, Write};
use std::path::Path;

fn entries(name: &str, data: &[u8]) -> (Vec<Entry>, Option<String>) {
    let mut r = SourceReader::new(name, data);
    let mut out = Vec::new();
    loop {
        match r.next_entry() {
            Ok(Some(e)) => out.push(e),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

fn req(e: &Entry) -> &Request {
    match e {
        Entry::Request(r) => r,
        Entry::Malformed(m) => panic!("malformed: {m:?}"),
    }
}

fn bad(e: &Entry) -> &Malformed {
    match e {
        Entry::Malformed(m) => m,
        Entry::Request(r) => panic!("request: {r:?}"),
    }
}

#[test]
fn plain_lines_bare_and_at_form() {
    let data =
        b"# comment\n\nAAA.BBB\r\n%KEYGEN: \"CCC.DDD\"\n  \n%KEYGEN: CCC\n\xff\xfe\nlast.one";
    let (e, err) = entries("f.txt", data);
    assert!(err.is_none());
    assert_eq!(e.len(), 5);
    assert_eq!(req(&e[0]).keygen, "AAA.BBB");
    assert_eq!(req(&e[0]).line, 3);
    assert_eq!(req(&e[1]).keygen, "CCC.DDD");
    assert_eq!(req(&e[1]).line, 4);
    assert_eq!(bad(&e[2]).line, 6);
    assert_eq!(bad(&e[3]).line, 7);
    assert!(bad(&e[3]).reject.detail.contains("UTF-8"));
    assert_eq!(req(&e[4]).keygen, "last.one");
    assert_eq!(req(&e[4]).line, 8);
}

const U1: &str = "50503041-3539-47eb-807b-102dbb423b9a";

#[test]
fn csv_rows_and_errors() {
    let mut data = format!("{HEADER}\r\n");
    data.push_str(&format!(
        "{U1},490154203237518,16842753,K1.C1,mfw,nRF9160,b,/dev/ttyACM0,2025-06-01T10:00:00Z\n"
    ));
    data.push_str(&format!(
        "{},,,K2.C2,\"fw, with comma\",\"quo\"\"te\",\"multi\nline\",p,\n",
        U1.to_uppercase()
    ));
    data.push_str("too,few\n");
    data.push('\n');
    data.push_str(&format!("{U1},,notanumber,K3,a,b,c,d,\n"));
    data.push_str(&format!("{},i,1,,a,b,c,d,e\n", U1.to_uppercase()));
    data.push_str("u5,i,1,K5,a,b\"x,c,d,e\n");
    data.push_str("u6,i,1,K6,a,b,c,d,e");
    let (e, err) = entries("r.csv", data.as_bytes());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(e.len(), 7);
    let r = req(&e[0]);
    assert_eq!((r.line, r.keygen.as_str()), (2, "K1.C1"));
    let row = r.row.as_ref().unwrap();
    assert_eq!(row.port, "/dev/ttyACM0");
    assert_eq!(row.bad_shape, None);
    let r = req(&e[1]);
    assert_eq!(r.line, 3);
    let row = r.row.as_ref().unwrap();
    assert_eq!(row.modem_fw, "fw, with comma");
    assert_eq!(row.model, "quo\"te");
    // An embedded newline is not printable ASCII: the cell is emptied and flagged.
    assert_eq!(row.bench, "");
    assert_eq!(
        row.bad_shape.as_ref().map(|r| r.detail.as_str()),
        Some("bench column \"multi\\nline\" is not printable ASCII of at most 64 characters")
    );
    assert_eq!(bad(&e[2]).line, 5);
    assert!(bad(&e[2]).reject.detail.contains("found 2"));
    assert_eq!(bad(&e[2]).device_uuid, None);
    // A sec_tag that is not a number is a shape (metadata-mismatch), not malformed-input.
    let r = req(&e[3]);
    assert_eq!(r.line, 7);
    let row = r.row.as_ref().unwrap();
    assert_eq!(row.sec_tag, "");
    let flag = row.bad_shape.as_ref().unwrap();
    assert_eq!(flag.code, RejectCode::MetadataMismatch);
    assert!(flag.detail.starts_with("sec_tag column \"notanumber\""));
    // A malformed row names its device by the canonical UUID only.
    assert_eq!(bad(&e[4]).line, 8);
    assert_eq!(bad(&e[4]).device_uuid.as_deref(), Some(U1));
    assert_eq!(bad(&e[5]).line, 9);
    assert_eq!(bad(&e[5]).device_uuid, None);
    let r = req(&e[6]);
    assert_eq!(r.line, 10);
    assert!(r.row.as_ref().unwrap().bad_shape.is_some());
}

#[test]
fn shapes_of_spec_section_3() {
    let good = RequestRow {
        device_uuid: U1.into(),
        imei: "490154203237518".into(),
        sec_tag: "16842753".into(),
        keygen: "K.C".into(),
        modem_fw: "mfw_nrf9160_1.3.7".into(),
        model: "nRF9160-SICA".into(),
        bench: "bench one, \"east\"".into(),
        port: "/dev/ttyACM0".into(),
        exported_at: "2025-06-01T10:00:00Z".into(),
        bad_shape: None,
    };
    assert_eq!(good.check_shapes(), Ok(()));
    assert_eq!(good.clone().neutralised(), good);
    assert_eq!(RequestRow::default().check_shapes(), Ok(()));
    type Set = fn(&mut RequestRow, &str);
    let cases: &[(Set, &str)] = &[
        (|r, v| r.device_uuid = v.into(), "not-a-uuid"),
        (
            |r, v| r.device_uuid = v.into(),
            " 50503041-3539-47eb-807b-102dbb423b9a",
        ),
        (|r, v| r.imei = v.into(), "490154203237519"),
        (|r, v| r.imei = v.into(), "49015420323751"),
        (|r, v| r.sec_tag = v.into(), "+16842753"),
        (|r, v| r.sec_tag = v.into(), "-1"),
        (|r, v| r.sec_tag = v.into(), "4294967296"),
        (
            |r, v| r.modem_fw = v.into(),
            "=HYPERLINK(\"http://x\",\"fw\")",
        ),
        (|r, v| r.model = v.into(), "@SUM(1+1)*cmd|' /C calc'!A0"),
        (|r, v| r.bench = v.into(), "+1"),
        (|r, v| r.port = v.into(), "-2+3"),
        (|r, v| r.port = v.into(), "\t=1"),
        (|r, v| r.port = v.into(), "\r=1"),
        (|r, v| r.model = v.into(), "a\x1b]0;owned\x07"),
        (|r, v| r.model = v.into(), "caf\u{e9}"),
        (|r, v| r.bench = v.into(), "line\nbreak"),
        (|r, v| r.bench = v.into(), "\u{202e}gpj.exe"),
        (|r, v| r.port = v.into(), "x"),
        (|r, v| r.exported_at = v.into(), "yesterday"),
        (|r, v| r.exported_at = v.into(), "=NOW()"),
    ];
    for (set, value) in cases {
        let mut row = good.clone();
        set(&mut row, value);
        if *value == "x" {
            // 65 characters: one too many.
            row.port = "x".repeat(MAX_TEXT_COLUMN + 1);
        }
        let bad = row.check_shapes().expect_err(value);
        assert_eq!(bad.len(), 1, "{value:?}");
        let n = row.clone().neutralised();
        assert!(n.check_shapes().is_ok());
        let why = n.bad_shape.unwrap().detail;
        assert!(
            !starts_like_formula(&why) && !why.chars().any(char::is_control),
            "{why}"
        );
    }
    let mut row = good.clone();
    row.port = "x".repeat(MAX_TEXT_COLUMN);
    assert!(row.check_shapes().is_ok());
    assert!(source_name(Path::new("=cmd.csv")) == "./=cmd.csv");
    assert_eq!(source_name(Path::new("a\x1bb.csv")), "a\\x1bb.csv");
    assert_eq!(
        source_name(Path::new("/media/usb/r.csv")),
        "/media/usb/r.csv"
    );
}

#[test]
fn bad_header_is_fatal_and_bom_is_ok() {
    let (_, err) = entries("r.csv", b"device_uuid,imei\nx\n");
    assert!(err.unwrap().contains("header"));
    let data = format!("\u{feff}{HEADER}\nu,i,1,K,a,b,c,d,e\n");
    let (e, err) = entries("r.csv", data.as_bytes());
    assert!(err.is_none());
    assert_eq!(req(&e[0]).line, 2);
}

#[test]
fn overlong_lines_are_rejected_and_reading_goes_on() {
    let mut data = vec![b'A'; MAX_LINE + 1];
    data.extend_from_slice(b"\nok.line\n");
    data.extend(std::iter::repeat(b'B').take(MAX_LINE));
    data.extend_from_slice(b"\n");
    let (e, _) = entries("f", &data);
    assert_eq!(e.len(), 3);
    assert_eq!(bad(&e[0]).line, 1);
    assert_eq!(req(&e[1]).line, 2);
    assert_eq!(req(&e[2]).keygen.len(), MAX_LINE);
    // An unterminated quote in CSV is bounded too.
    let mut data = format!("{HEADER}\n\"u").into_bytes();
    for _ in 0..3000 {
        data.extend_from_slice(b"0123456789\n");
    }
    let (e, _) = entries("r.csv", &data);
    assert!(matches!(e[0], Entry::Malformed(_)));
    assert_eq!(bad(&e[0]).line, 2);
}

#[test]
fn digest_covers_whole_input() {
    let data = b"a.b\n# x\n";
    let mut r = SourceReader::new("f", &data[..]);
    while r.next_entry().unwrap().is_some() {}
    let d = r.finish().unwrap();
    assert_eq!(d.sha256, crate::crypto::sha256(data));
    assert_eq!(d.bytes, data.len() as u64);
}

#[test]
fn writer_round_trips_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("requests.csv");
    let row = RequestRow {
        device_uuid: U1.into(),
        imei: "490154203237518".into(),
        sec_tag: "16842753".into(),
        keygen: "K.C".into(),
        modem_fw: "mfw,1".into(),
        model: "m\"x".into(),
        bench: "b c".into(),
        port: "p".into(),
        exported_at: "2025-06-01T10:00:00Z".into(),
        bad_shape: None,
    };
    RequestWriter::open(&p).unwrap().append(&row).unwrap();
    // Simulate a torn row, then append again.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"torn")
        .unwrap();
    let mut w = RequestWriter::open(&p).unwrap();
    w.append(&row).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(text.matches(HEADER).count(), 1);
    let mut rr = RequestReader::open(std::slice::from_ref(&p));
    let all: Vec<Entry> = rr.by_ref().map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 3);
    assert_eq!(req(&all[0]).row.as_ref().unwrap(), &row);
    assert!(matches!(all[1], Entry::Malformed(_)));
    assert_eq!(req(&all[2]).row.as_ref().unwrap(), &row);
    assert_eq!(rr.digests().len(), 1);
    // A file that is not a requests CSV is refused.
    let other = dir.path().join("x.csv");
    std::fs::write(&other, "hello\n").unwrap();
    assert!(matches!(
        RequestWriter::open(&other),
        Err(RequestsError::BadHeader { .. })
    ));
}

#[test]
fn missing_file_is_an_error() {
    let mut r = RequestReader::open(&[PathBuf::from("/nonexistent/x")]);
    assert!(matches!(r.next(), Some(Err(RequestsError::Open { .. }))));
    assert!(r.next().is_none());
}

fn looks(data: &[u8]) -> Result<(), NotRequests> {
    sniff_reader(data).unwrap()
}

#[test]
fn sniff_tells_requests_from_other_files() {
    let kg = "MIIBCzCBrwIBADAvMS0wKwYDVQQDDCQ1MDUw.0oRDoQEmoQRBIVhP2dn3hQlQUFAw";
    // Requests: plain lines (bare, %KEYGEN form, after comments), CSV with a row.
    assert_eq!(looks(format!("{kg}\n").as_bytes()), Ok(()));
    assert_eq!(
        looks(format!("# x\n\n%KEYGEN: \"{kg}\"\r\n").as_bytes()),
        Ok(())
    );
    assert_eq!(
        looks(format!("\u{feff}{HEADER}\n{U1},,,{kg},,,,,\n").as_bytes()),
        Ok(())
    );
    // A damaged string is still worth a reject (missing-attestation etc.), and a junk
    // first line does not hide a request further down.
    assert_eq!(looks(b"# pasted\nthis-is-not-a-keygen-string\n"), Ok(()));
    assert_eq!(looks(format!("hello, world\n{kg}\n").as_bytes()), Ok(()));
    // Not requests.
    assert_eq!(looks(b""), Err(NotRequests::Empty));
    assert_eq!(looks(b"\n# only a comment\n  \n"), Err(NotRequests::Empty));
    assert_eq!(
        looks(format!("{HEADER}\n").as_bytes()),
        Err(NotRequests::HeaderOnly)
    );
    assert_eq!(
        looks(format!("{HEADER}\r\n\r\n").as_bytes()),
        Err(NotRequests::HeaderOnly)
    );
    assert_eq!(
        looks(b"SQLite format 3\0\x10\x00"),
        Err(NotRequests::Sqlite)
    );
    assert_eq!(looks(b"\x7fELF\x02\x01\x01"), Err(NotRequests::Executable));
    assert_eq!(looks(b"\x1f\x8b\x08\x00"), Err(NotRequests::Archive));
    assert_eq!(looks(b"abc\0def\n"), Err(NotRequests::Binary));
    assert_eq!(looks(b"\xff\xfe junk\n"), Err(NotRequests::NotUtf8));
    assert_eq!(
        looks(b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\n-----END CERTIFICATE-----\n"),
        Err(NotRequests::Pem("CERTIFICATE".into()))
    );
    assert_eq!(looks(b"{\"batch\":\"x\"}\n"), Err(NotRequests::Json));
    assert_eq!(
        looks(format!("{U1},,,APP|MODEM,\"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\"\n").as_bytes()),
        Err(NotRequests::OnboardCsv)
    );
    assert_eq!(
        looks(b"device_uuid,imei,sec_tag,serial,not_before,not_after,sha256,certificate\n"),
        Err(NotRequests::CertsCsv)
    );
    assert_eq!(
        looks(b"source,line,device_uuid,code,detail\nx.csv,2,,bad-base64,y\n"),
        Err(NotRequests::RejectsCsv)
    );
    assert!(matches!(
        looks(b"device_uuid,imei\nx,y\n"),
        Err(NotRequests::OtherCsv(_))
    ));
    assert!(matches!(
        looks(b"seq,time,operator,event\n1,2,3,4\n"),
        Err(NotRequests::OtherCsv(_))
    ));
    // UUIDs, IMEIs, hex digests and prose are not KEYGEN strings.
    assert!(matches!(
        looks(format!("{U1}\n490154203237518\n{}\nhello world\n", "ab".repeat(32)).as_bytes()),
        Err(NotRequests::NoKeygen(_))
    ));
    assert!(matches!(
        looks(format!("{HEADER}\n{U1},,,,,,,,\n").as_bytes()),
        Err(NotRequests::NoKeygen(_))
    ));
    // The message names the file and what it looks like, escaped.
    let e = RequestsError::NotRequests {
        path: PathBuf::from("ca\x1b]0;x\x07.pem"),
        looks: NotRequests::Pem("CERTIFICATE".into()),
    }
    .to_string();
    assert!(
        e.starts_with("ca\\x1b]0;x\\x07.pem is not a requests file: it looks like PEM"),
        "{e}"
    );
    assert!(!e.chars().any(char::is_control));
}

proptest::proptest! {
    #[test]
    fn never_panics_and_chunking_does_not_matter(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000), csv in proptest::bool::ANY) {
        let mut input = Vec::new();
        if csv { input.extend_from_slice(HEADER.as_bytes()); input.push(b'\n'); }
        input.extend_from_slice(&data);
        let (a, ea) = entries("x", &input);
        // Same bytes through a reader that returns one byte at a time.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(slot)) => { *slot = *b; self.0 = rest; Ok(1) }
                    _ => Ok(0),
                }
            }
        }
        let mut r = SourceReader::new("x", OneByte(&input));
        let mut b = Vec::new();
        let mut eb = None;
        loop { match r.next_entry() { Ok(Some(e)) => b.push(e), Ok(None) => break, Err(e) => { eb = Some(e.to_string()); break } } }
        proptest::prop_assert_eq!(a, b);
        proptest::prop_assert_eq!(ea, eb);
    }
}

#[test]
fn format_row_bytes() {
    let row = RequestRow {
        device_uuid: "plain".into(),
        imei: "a,b".into(),
        sec_tag: "say \"hi\"".into(),
        keygen: "line\nbreak".into(),
        modem_fw: "cr\r".into(),
        model: String::new(),
        bench: " spaced ".into(),
        port: "#hash".into(),
        exported_at: "'quote".into(),
        bad_shape: None,
    };
    assert_eq!(
        format_row(&row),
        "plain,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",\"cr\r\",, spaced ,#hash,'quote\n"
    );
}

#[test]
fn csv_crate_accepts_what_we_reject() {
    use super::parse::{parse_csv_record, CsvParse};
    for bad in [&b"a\"b,c"[..], b"\"a\"b,c"] {
        assert!(matches!(parse_csv_record(bad), CsvParse::Bad(_)));
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bad);
        assert!(
            r.records().all(|rec| rec.is_ok()),
            "csv crate now rejects {bad:?}"
        );
    }
}
