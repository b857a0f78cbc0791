//! The checks after the walk (pure where they can be): `meta`'s note of the last checkpoint,
//! and the agreement of the `certificates` table with the `certificate-issued` records.

use super::*;
use std::collections::HashMap;

/// What `meta`'s note of the last checkpoint (`"<seq> <hash>"`) says about the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoteCheck {
    /// It shows the log is wrong.
    Found(Finding),
    /// It agrees so far; the record at `seq` must still have this hash.
    HashAt { seq: u64, hash: String },
    /// Nothing to check (no note, and no records).
    Nothing,
}

/// Check the note against the log as verified (pure): `records` read, whether the chain held
/// (`chain_ok`), and its last CA-signed checkpoint.
pub(super) fn check_note(
    noted: Option<&str>,
    records: u64,
    chain_ok: bool,
    last_checkpoint: u64,
) -> NoteCheck {
    let Some(noted) = noted else {
        if records == 0 {
            return NoteCheck::Nothing;
        }
        // Every checkpoint writes the note in its own transaction (ca init and import
        // included), so a log without one lost its tail together with the note.
        return NoteCheck::Found(Finding {
            seq: records + 1,
            problem: "ca.db has no note of its last checkpoint (meta audit_checkpoint), which every nrfca CA writes: the end of the log was deleted together with the note, or ca.db was edited".into(),
        });
    };
    let mut it = noted.splitn(2, ' ');
    let seq = it.next().and_then(|s| s.parse::<u64>().ok());
    let hash = it.next().unwrap_or_default().to_string();
    match seq {
        Some(seq) if seq > records => NoteCheck::Found(Finding {
            seq: records + 1,
            problem: format!(
                "log truncated: ca.db noted a checkpoint at record {seq} but the log ends at {records}"
            ),
        }),
        Some(seq) if chain_ok && seq != last_checkpoint => NoteCheck::Found(Finding {
            seq: seq.min(last_checkpoint) + 1,
            problem: format!(
                "ca.db noted its last checkpoint at record {seq}, but the last CA-signed checkpoint in the log is record {last_checkpoint}: records were removed, or the note was rewritten"
            ),
        }),
        Some(seq) => NoteCheck::HashAt { seq, hash },
        None => NoteCheck::Found(Finding {
            seq: 1,
            problem: "ca.db's note of the last checkpoint is unreadable".into(),
        }),
    }
}

/// certificates ↔ certificate-issued agreement: every row has its record and agrees with it,
/// every record has its row. `records`: the log's length (a row without a record is found
/// after its end).
pub(super) fn issued_agreement(
    conn: &Connection,
    mut issued: HashMap<String, IssuedRec>,
    records: u64,
) -> Result<Vec<Finding>, AuditError> {
    let mut findings = Vec::new();
    db::certificates::for_each(conn, |row| {
        findings.extend(row_finding(&mut issued, &row, records));
    })?;
    for (serial, rec) in issued {
        findings.push(Finding {
            seq: rec.seq,
            problem: format!(
                "certificate-issued record for serial {serial} has no row in ca.db's certificates"
            ),
        });
    }
    Ok(findings)
}

/// One `certificates` row against its `certificate-issued` record, which is taken out of
/// `issued` (pure).
fn row_finding(
    issued: &mut HashMap<String, IssuedRec>,
    row: &db::certificates::Row,
    records: u64,
) -> Option<Finding> {
    let (serial, device_id) = (&row.serial, &row.device_id);
    let Some(rec) = issued.remove(serial) else {
        return Some(Finding {
            seq: records + 1,
            problem: format!(
                "certificate {serial} (device {device_id}) is in ca.db but has no certificate-issued record: audit records are missing"
            ),
        });
    };
    let diffs = row_diffs(&rec, row);
    (!diffs.is_empty()).then(|| Finding {
        seq: rec.seq,
        problem: format!(
            "certificate {serial} in ca.db disagrees with its certificate-issued record ({})",
            diffs.join(", ")
        ),
    })
}

/// Where a `certificates` row disagrees with its `certificate-issued` record, then with its
/// own certificate (pure). Fields an older record does not carry are not compared.
fn row_diffs(rec: &IssuedRec, row: &db::certificates::Row) -> Vec<&'static str> {
    // The stored certificate must be the one whose PEM hash the audit log holds.
    let bytes_ok = crypto::sha256_hex(crate::util::pem_encode("CERTIFICATE", &row.der).as_bytes())
        == row.cert_sha256;
    let mut diffs = Vec::new();
    if rec.device_id != row.device_id {
        diffs.push("device_id");
    }
    if rec.keygen_sha256 != row.keygen_sha256 {
        diffs.push("keygen_sha256");
    }
    if rec.cert_sha256 != row.cert_sha256 {
        diffs.push("cert_sha256");
    }
    if !bytes_ok {
        diffs.push("certificate bytes");
    }
    if rec.batch != row.batch_id {
        diffs.push("batch");
    }
    if rec.reissue != (row.reissue != 0) {
        diffs.push("reissue");
    }
    if rec.uuid.as_ref().is_some_and(|u| *u != row.uuid) {
        diffs.push("uuid");
    }
    if rec.imei.as_ref().is_some_and(|i| *i != row.imei) {
        diffs.push("imei");
    }
    if rec
        .sec_tag
        .is_some_and(|t| i64::try_from(t).ok() != Some(row.sec_tag))
    {
        diffs.push("sec_tag");
    }
    // The columns the certificate itself states must be what it states (the DER is covered
    // by the chain through cert_sha256 when the bytes agree).
    if bytes_ok {
        diffs.extend(cert_column_diffs(
            &row.der,
            &CertColumns {
                serial: &row.serial,
                device_id: &row.device_id,
                public_key: &row.public_key,
                not_before: &row.not_before,
                not_after: &row.not_after,
            },
        ));
    }
    diffs
}

/// The `certificates` columns that the certificate DER states itself.
struct CertColumns<'a> {
    serial: &'a str,
    device_id: &'a str,
    public_key: &'a [u8],
    not_before: &'a str,
    not_after: &'a str,
}

/// Which of `cols` disagree with the certificate `der` (every column when it does not parse).
fn cert_column_diffs(der: &[u8], cols: &CertColumns<'_>) -> Vec<&'static str> {
    use der::Decode;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return vec!["certificate DER (does not parse)"];
    };
    let tbs = &cert.tbs_certificate;
    let mut diffs = Vec::new();
    if hex::encode(tbs.serial_number.as_bytes()) != cols.serial {
        diffs.push("serial");
    }
    if tbs.subject.to_string() != format!("CN={}", cols.device_id) {
        diffs.push("device_id (certificate CN)");
    }
    if tbs.subject_public_key_info.subject_public_key.as_bytes() != Some(cols.public_key) {
        diffs.push("public_key");
    }
    let same_time = |t: &x509_cert::time::Time, text: &str| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|c| u64::try_from(c.unix_timestamp()).ok())
            == Some(t.to_unix_duration().as_secs())
    };
    if !same_time(&tbs.validity.not_before, cols.not_before) {
        diffs.push("not_before");
    }
    if !same_time(&tbs.validity.not_after, cols.not_after) {
        diffs.push("not_after");
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_note_table() {
        let found = |seq: u64, start: &str| (Some(seq), start.to_string());
        // (case, note, records, chain ok, last checkpoint, finding seq and text start / hash)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            u64,
            bool,
            u64,
            (Option<u64>, String),
        );
        let cases: Vec<Case> = vec![
            ("empty log, no note", None, 0, true, 0, (None, "nothing".into())),
            ("records, no note", None, 5, true, 5, found(6, "ca.db has no note")),
            ("note agrees", Some("5 abc"), 5, true, 5, (None, "hash 5 abc".into())),
            (
                "note past the end",
                Some("9 abc"),
                5,
                true,
                5,
                found(6, "log truncated: ca.db noted a checkpoint at record 9 but the log ends at 5"),
            ),
            (
                "note before the last checkpoint",
                Some("3 abc"),
                5,
                true,
                5,
                found(4, "ca.db noted its last checkpoint at record 3, but the last CA-signed checkpoint in the log is record 5"),
            ),
            (
                "note after the last checkpoint",
                Some("4 abc"),
                5,
                true,
                2,
                found(3, "ca.db noted its last checkpoint at record 4"),
            ),
            (
                "broken chain: only the hash is compared",
                Some("3 abc"),
                5,
                false,
                5,
                (None, "hash 3 abc".into()),
            ),
            ("unreadable", Some("x abc"), 5, true, 5, found(1, "ca.db's note of the last checkpoint is unreadable")),
            ("no hash", Some("5"), 5, true, 5, (None, "hash 5 ".into())),
        ];
        for (name, noted, records, chain_ok, last, (seq, want)) in cases {
            match check_note(noted, records, chain_ok, last) {
                NoteCheck::Found(f) => {
                    assert_eq!(Some(f.seq), seq, "case: {name}");
                    assert!(f.problem.starts_with(&want), "case: {name}: {}", f.problem);
                }
                NoteCheck::HashAt { seq: s, hash } => {
                    assert_eq!(seq, None, "case: {name}");
                    assert_eq!(format!("hash {s} {hash}"), want, "case: {name}");
                }
                NoteCheck::Nothing => {
                    assert_eq!((seq, want.as_str()), (None, "nothing"), "case: {name}")
                }
            }
        }
    }

    fn issued(seq: u64) -> IssuedRec {
        IssuedRec {
            seq,
            device_id: "dev".into(),
            keygen_sha256: "kk".into(),
            cert_sha256: String::new(),
            batch: "b1".into(),
            reissue: false,
            uuid: Some("dev".into()),
            imei: Some(Some("355025930000001".into())),
            sec_tag: Some(16842753),
        }
    }

    /// A row agreeing with `issued`; its DER is not a certificate (so the certificate's own
    /// columns are reported as not parsing whenever the bytes match the recorded hash).
    fn row() -> db::certificates::Row {
        let der = b"not a certificate".to_vec();
        db::certificates::Row {
            serial: "01".into(),
            device_id: "dev".into(),
            keygen_sha256: "kk".into(),
            cert_sha256: crypto::sha256_hex(
                crate::util::pem_encode("CERTIFICATE", &der).as_bytes(),
            ),
            batch_id: "b1".into(),
            reissue: 0,
            der,
            uuid: "dev".into(),
            imei: Some("355025930000001".into()),
            sec_tag: 16842753,
            public_key: Vec::new(),
            not_before: String::new(),
            not_after: String::new(),
        }
    }

    #[test]
    fn row_diffs_table() {
        const DER: &str = "certificate DER (does not parse)";
        type Edit = fn(&mut IssuedRec, &mut db::certificates::Row);
        let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
            ("agrees", |_, _| {}, vec![]),
            (
                "device",
                |_, r| r.device_id = "other".into(),
                vec!["device_id"],
            ),
            (
                "keygen",
                |_, r| r.keygen_sha256 = "kl".into(),
                vec!["keygen_sha256"],
            ),
            ("batch", |i, _| i.batch = "b2".into(), vec!["batch"]),
            ("reissue", |_, r| r.reissue = 1, vec!["reissue"]),
            ("uuid", |_, r| r.uuid = "x".into(), vec!["uuid"]),
            (
                "uuid not recorded",
                |i, r| {
                    i.uuid = None;
                    r.uuid = "x".into();
                },
                vec![],
            ),
            ("imei", |_, r| r.imei = None, vec!["imei"]),
            (
                "imei recorded as null",
                |i, r| {
                    i.imei = Some(None);
                    r.imei = None;
                },
                vec![],
            ),
            (
                "imei not recorded",
                |i, r| {
                    i.imei = None;
                    r.imei = None;
                },
                vec![],
            ),
            ("sec_tag", |_, r| r.sec_tag = 7, vec!["sec_tag"]),
            (
                "sec_tag not recorded",
                |i, r| {
                    i.sec_tag = None;
                    r.sec_tag = 7;
                },
                vec![],
            ),
            (
                "other bytes",
                |_, r| r.der = b"other".to_vec(),
                vec!["certificate bytes"],
            ),
        ];
        for (name, edit, want) in cases {
            let (mut rec, mut row) = (issued(3), row());
            rec.cert_sha256 = row.cert_sha256.clone();
            edit(&mut rec, &mut row);
            let mut want = want;
            if !want.contains(&"certificate bytes") {
                want.push(DER);
            }
            assert_eq!(row_diffs(&rec, &row), want, "case: {name}");
        }
    }

    #[test]
    fn row_finding_takes_the_record_out() {
        let r = row();
        let mut rec = issued(3);
        rec.cert_sha256 = r.cert_sha256.clone();
        let mut map = HashMap::from([("01".to_string(), rec)]);
        let f = row_finding(&mut map, &r, 10).unwrap();
        assert_eq!(f.seq, 3);
        assert!(
            f.problem
                .ends_with("record (certificate DER (does not parse))"),
            "{}",
            f.problem
        );
        assert!(map.is_empty());
        let f = row_finding(&mut map, &r, 10).unwrap();
        assert_eq!(f.seq, 11);
        assert!(
            f.problem.contains("has no certificate-issued record"),
            "{}",
            f.problem
        );
    }
}
