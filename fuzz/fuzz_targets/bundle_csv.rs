//! Bundle file parsers: `bundle::parse_csv` (round trip through `csv_record`),
//! `bundle::parse_certs_csv` (with `sha256` columns reading `auto` filled in by the target so
//! rows get past the digest check), and `manifest.json` through serde into `bundle::Manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::bundle;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let recs = bundle::parse_csv(&text);
    let mut again = Vec::new();
    let mut good = Vec::new();
    let mut last = 0;
    for (line, r) in &recs {
        assert!(*line > last);
        last = *line;
        if let Ok(fields) = r {
            let f: Vec<&str> = fields.iter().map(String::as_str).collect();
            again.extend(bundle::csv_record(&f));
            good.push(fields.clone());
        }
    }
    let reparsed: Vec<Vec<String>> = bundle::parse_csv(std::str::from_utf8(&again).unwrap())
        .into_iter()
        .map(|(_, r)| r.expect("csv_record output parses"))
        .collect();
    assert_eq!(reparsed, good);

    let _ = bundle::parse_certs_csv(data);
    // Fill in `auto` digests and parse again.
    let mut fixed = Vec::new();
    for (_, r) in &recs {
        if let Ok(fields) = r {
            let mut f = fields.clone();
            if f.len() == 8 && f[6] == "auto" {
                f[6] = nrfca::internal::crypto::sha256_hex(f[7].as_bytes());
            }
            let refs: Vec<&str> = f.iter().map(String::as_str).collect();
            fixed.extend(bundle::csv_record(&refs));
        }
    }
    if let Ok(rows) = bundle::parse_certs_csv(&fixed) {
        for r in rows {
            assert_eq!(
                r.sha256,
                nrfca::internal::crypto::sha256_hex(r.certificate_pem.as_bytes())
            );
        }
    }
    if let Ok(m) = serde_json::from_slice::<bundle::Manifest>(data) {
        let back = serde_json::to_vec(&m).expect("serialize");
        let m2: bundle::Manifest = serde_json::from_slice(&back).expect("round trip");
        assert_eq!(m, m2);
    }
});
