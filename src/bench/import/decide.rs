//! The pure per-device decisions of import (no modem, no state): which record and certificate
//! to take, the certificate and CA-pin checks, what to write, and whether the modem's listing
//! proves the writes. Table-driven tests beside them.

use super::trust::{parse_cert_der, TrustedCa};
use crate::bench::at;
use crate::bench::code::BenchCode;
use crate::bench::state::{now, DeviceRecord, DeviceState};
use crate::bench::worker::{refused, Fail, Journal};
use crate::bundle::{self, CertRow};
use crate::util::first_cert_der;

/// Which of the device's bench records to import, with its certificate from the bundle (pure:
/// no modem, no state). A device with none is refused with the reason: its export is not
/// complete, the signer rejected its request (`rejects` = (uuid, code, detail) rows of the
/// verified rejects.csv), or the bundle simply has no certificate for it.
pub(super) fn select<'c>(
    records: &[DeviceRecord],
    certs: &'c [CertRow],
    rejects: &[(String, String, String)],
) -> Result<(DeviceRecord, &'c CertRow), Fail> {
    if let Some(c) = records
        .iter()
        .filter(|r| r.state.has_exported_key())
        .find_map(|r| find_row(certs, r).map(|row| (r.clone(), row)))
    {
        return Ok(c);
    }
    let uuid = records
        .first()
        .and_then(|r| r.uuid.clone())
        .unwrap_or_default();
    if let Some(r) = records.iter().find(|r| !r.state.has_exported_key()) {
        return Err(refused(
            BenchCode::NotExported,
            format!("the device's export is not complete (state {})", r.state),
            r.state.next_step(),
        ));
    }
    if let Some((_, code, detail)) = rejects.iter().find(|(u, _, _)| *u == uuid) {
        return Err(refused(
            BenchCode::RequestRejected,
            format!("the signer rejected this device's request: {code}: {detail}"),
            "see rejects.csv in the bundle; fix the cause, export again if needed, and sign again",
        ));
    }
    Err(refused(
        BenchCode::NoCertificate,
        "the bundle has no certificate for this device",
        "check that its request was in the signed requests file, or use the bundle that has it",
    ))
}

fn find_row<'c>(certs: &'c [CertRow], rec: &DeviceRecord) -> Option<&'c CertRow> {
    let uuid = rec.uuid.as_deref().unwrap_or("").to_ascii_lowercase();
    let matches = |r: &&CertRow| {
        r.sec_tag == rec.sec_tag
            && ((!r.imei.is_empty() && r.imei == rec.imei)
                || (!uuid.is_empty() && r.device_uuid.to_ascii_lowercase() == uuid))
    };
    // Prefer the row carrying the recorded key; fall back to any row of the device (it will
    // then fail the key check with a clear reason).
    let key = rec.public_key.as_deref().unwrap_or("");
    certs
        .iter()
        .filter(matches)
        .find(|r| cert_key_hex(&r.certificate_pem).as_deref() == Some(key))
        .or_else(|| certs.iter().find(matches))
}

fn cert_key_hex(pem: &str) -> Option<String> {
    let der = first_cert_der(pem)?;
    bundle::cert_public_key(&der).ok().map(hex::encode)
}

/// The checks of SPEC §6 on one certificate: chains to the trusted CA, carries the key
/// recorded at export, names the device, is still valid.
pub(super) fn check_cert(ca: &TrustedCa, row: &CertRow, rec: &DeviceRecord) -> Result<(), Fail> {
    use der::Encode;
    let next_resign =
        "sign this device's request again with the trusted CA and import the new bundle";
    let der = first_cert_der(&row.certificate_pem).ok_or_else(|| {
        refused(
            BenchCode::CertMalformed,
            "the bundle row holds no certificate PEM",
            next_resign,
        )
    })?;
    let cert =
        parse_cert_der(&der).map_err(|d| refused(BenchCode::CertMalformed, d, next_resign))?;
    let tbs = &cert.tbs_certificate;
    let issuer = tbs
        .issuer
        .to_der()
        .map_err(|e| refused(BenchCode::CertMalformed, e.to_string(), next_resign))?;
    if issuer != ca.subject_der {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate's issuer is not the trusted CA",
            next_resign,
        ));
    }
    const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    if cert.signature_algorithm.oid.to_string() != ECDSA_SHA256 {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate is not signed with ecdsa-with-SHA256",
            next_resign,
        ));
    }
    let tbs_der = tbs
        .to_der()
        .map_err(|e| refused(BenchCode::CertMalformed, e.to_string(), next_resign))?;
    let sig = cert.signature.as_bytes().unwrap_or(&[]);
    if !crate::crypto::verify_p256_sha256(&ca.public_key, &tbs_der, sig) {
        return Err(refused(
            BenchCode::CertUntrusted,
            "the certificate's signature does not verify with the trusted CA key",
            next_resign,
        ));
    }
    let key = tbs
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(hex::encode)
        .unwrap_or_default();
    if Some(key.as_str()) != rec.public_key.as_deref() {
        return Err(refused(
            BenchCode::CertKeyMismatch,
            "the certificate's public key is not the key this device exported",
            "the bundle holds a certificate for an older or other key: export the device again if its key changed, sign, and import the new bundle",
        ));
    }
    check_names_device(&tbs.subject, rec)?;
    let not_after = tbs.validity.not_after.to_unix_duration();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    if not_after <= now_unix {
        return Err(refused(
            BenchCode::CertExpired,
            format!("the certificate expired ({})", row.not_after),
            next_resign,
        ));
    }
    Ok(())
}

/// The certificate's subject must be exactly one CN naming this device: the UUID recorded at
/// export (any case) or `nrf-<IMEI>` with the device's IMEI (SPEC §4: nRF Cloud reads only
/// the CN, so a certificate for another name would connect the device as someone else).
fn check_names_device(subject: &x509_cert::name::Name, rec: &DeviceRecord) -> Result<(), Fail> {
    const CN: &str = "2.5.4.3";
    let next = "the bundle's certificate names another device: get a bundle signed for this device (its UUID, or nrf-<IMEI> with --device-id cn) and import it";
    let mut cns = Vec::new();
    for rdn in subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid.to_string() == CN {
                // UTF8String or PrintableString: the content bytes are the text.
                cns.push(String::from_utf8_lossy(atv.value.value()).into_owned());
            }
        }
    }
    let [cn] = cns.as_slice() else {
        return Err(refused(
            BenchCode::CertWrongDevice,
            format!(
                "the certificate's subject has {} CN attributes, not one naming the device",
                cns.len()
            ),
            next,
        ));
    };
    let by_uuid = rec
        .uuid
        .as_deref()
        .is_some_and(|u| !u.is_empty() && cn.eq_ignore_ascii_case(u));
    let by_imei = cn.strip_prefix("nrf-") == Some(rec.imei.as_str());
    if by_uuid || by_imei {
        return Ok(());
    }
    Err(refused(
        BenchCode::CertWrongDevice,
        format!(
            "the certificate is for CN {}, not this device (UUID {}, IMEI {})",
            crate::util::term_escape(cn),
            rec.uuid.as_deref().unwrap_or("unknown"),
            rec.imei
        ),
        next,
    ))
}

/// The CA pin (SPEC §6, issue 10): a device whose installed certificate came from one CA is
/// not re-provisioned from another without `--force`. Every record of the IMEI counts (all
/// its sec_tags). A record imported before pins existed (no `ca_sha256`) but holding another
/// certificate than this one has an unknown CA: refused the same way (`ca-unpinned`).
/// With `force`, the change is accepted and noted in the journal.
pub(super) fn check_ca_pin(
    ca: &TrustedCa,
    records: &[DeviceRecord],
    cert_sha: &str,
    force: bool,
    journal: &Journal,
) -> Result<(), Fail> {
    for r in records {
        let (code, detail) = match &r.ca_sha256 {
            Some(pinned) if !pinned.eq_ignore_ascii_case(&ca.sha256) => (
                BenchCode::CaChanged,
                format!(
                    "sec_tag {} holds a certificate from CA {pinned}; this bundle is from CA {}",
                    r.sec_tag, ca.sha256
                ),
            ),
            None if r
                .cert_sha256
                .as_deref()
                .is_some_and(|c| !c.eq_ignore_ascii_case(cert_sha)) =>
            (
                BenchCode::CaUnpinned,
                format!(
                    "sec_tag {} holds certificate {} installed before nrfca pinned CAs (its CA is unknown); this bundle is from CA {}",
                    r.sec_tag,
                    r.cert_serial.as_deref().unwrap_or("?"),
                    ca.sha256
                ),
            ),
            _ => continue,
        };
        if !force {
            return Err(refused(
                code,
                detail,
                "if the device is to move to this CA on purpose, re-run import with --force (the change is journaled); otherwise use the trusted CA of its current certificate",
            ));
        }
        journal.note("forced", &format!("{code} accepted with --force: {detail}"));
    }
    Ok(())
}

/// What one device's slots must hold at the end, fixed before anything is written.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The sec_tag of the exported key: the certificate goes beside it.
    pub(super) tag: u32,
    /// Where the root CAs go: `--ca-sec-tag`, else `tag`.
    pub(super) ca_tag: u32,
    /// The certificate as written (LF line ends, final newline).
    pub(super) cert_pem: String,
    /// SHA-256 the modem will list for the certificate (lowercase hex).
    pub(super) cert_sha: String,
    /// SHA-256 the modem will list for the root CA bundle (lowercase hex).
    pub(super) root_sha: String,
    /// The certificate's serial, as the bundle lists it.
    pub(super) serial: String,
}

/// The slot listings of a device: its sec_tag, and the root CAs' sec_tag when that differs.
#[derive(Debug, Clone, Default)]
pub(super) struct Slots {
    pub(super) tag: Vec<at::CmngEntry>,
    pub(super) ca: Option<Vec<at::CmngEntry>>,
}

impl Slots {
    /// The listing that holds (or should hold) the root CAs.
    fn roots(&self) -> &[at::CmngEntry] {
        self.ca.as_deref().unwrap_or(&self.tag)
    }
}

/// What to do with a device's slots once the certificate passed its checks.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// The slots hold this certificate and the root CAs and the record says imported.
    AlreadyImported,
    /// Write what the slots lack (possibly nothing, when only the record is behind), then
    /// verify that the exported key, listed now as `key_sha256`, is still there.
    Write { key_sha256: String, writes: Writes },
}

/// Which of the two credentials to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Writes {
    /// The root CA bundle (type 0).
    pub(super) root: bool,
    /// The device certificate (type 1).
    pub(super) cert: bool,
}

/// The certificate text to write: LF line ends and a final newline (the bundle's PEM as is
/// when it already has both).
pub(super) fn cert_pem_for_modem(pem: &str) -> String {
    if pem.contains('\r') || !pem.ends_with('\n') {
        at::normalize_pem(pem)
    } else {
        pem.to_string()
    }
}

/// The UUID the modem reports must be the one recorded at export for this IMEI (pure; `None`:
/// the modem did not say, nothing to compare).
pub(super) fn check_modem_uuid(rec: &DeviceRecord, reported: Option<&str>) -> Result<(), Fail> {
    match reported {
        Some(u)
            if rec
                .uuid
                .as_deref()
                .is_some_and(|r| !r.eq_ignore_ascii_case(u)) =>
        {
            Err(refused(
                BenchCode::IdentityMismatch,
                format!(
                    "the modem reports UUID {u}, but IMEI {} was exported as {}",
                    rec.imei,
                    rec.uuid.as_deref().unwrap_or("?")
                ),
                "the IMEI/UUID pairing changed: investigate the device before importing",
            ))
        }
        _ => Ok(()),
    }
}

/// Decide from the device's record and its slot listings what to write (pure: no modem, no
/// state). The exported key (type 2) must still be there, unchanged; the root CAs and the
/// certificate are written unless the listing shows them with the expected SHA-256.
pub(super) fn plan(rec: &DeviceRecord, t: &Target, slots: &Slots) -> Result<Plan, Fail> {
    let tag = t.tag;
    let Some(key) = slots.tag.iter().find(|e| e.kind == 2) else {
        if slots.tag.iter().any(|e| e.kind == 8) {
            return Err(refused(
                BenchCode::KeyMissing,
                format!("sec_tag {tag} holds an endorsement key (type 8, from AT%KEYGEN key_type 8), not the client key (type 2) a device certificate pairs with"),
                "delete the slot's type 8 key only if it is not used for anything else, then run `nrfca bench export --force` on this device (it asks for key_type 2), sign, and import again",
            ));
        }
        return Err(refused(
            BenchCode::KeyMissing,
            format!("sec_tag {tag} no longer holds the key exported on {}", rec.exported_at.as_deref().unwrap_or("?")),
            "the certificate is useless without its key: run `nrfca bench export --force` on this device, sign, and import again",
        ));
    };
    if let Some(recorded) = &rec.key_sha256 {
        if !recorded.eq_ignore_ascii_case(&key.sha256) {
            return Err(refused(
                BenchCode::KeyChanged,
                format!("sec_tag {tag} holds a different key than the one exported"),
                "run `nrfca bench export --force` on this device, sign, and import again",
            ));
        }
    }
    let has = |l: &[at::CmngEntry], kind: u8, sha: &str| {
        l.iter()
            .any(|e| e.kind == kind && e.sha256.eq_ignore_ascii_case(sha))
    };
    let root_ok = has(slots.roots(), 0, &t.root_sha);
    let cert_ok = has(&slots.tag, 1, &t.cert_sha);
    if root_ok && cert_ok && rec.state == DeviceState::Imported {
        return Ok(Plan::AlreadyImported);
    }
    Ok(Plan::Write {
        key_sha256: key.sha256.clone(),
        writes: Writes {
            root: !root_ok,
            cert: !cert_ok,
        },
    })
}

/// After writing, the listing must show the root CAs, the certificate and the key exactly as
/// intended (pure). Every mismatch is named in the one refusal.
pub(super) fn verify_listing(t: &Target, key_sha256: &str, after: &Slots) -> Result<(), Fail> {
    let listed_in =
        |l: &[at::CmngEntry], kind: u8| l.iter().find(|e| e.kind == kind).map(|e| e.sha256.clone());
    let listed = |kind: u8| listed_in(&after.tag, kind);
    let mut problems = Vec::new();
    match listed_in(after.roots(), 0) {
        Some(s) if s.eq_ignore_ascii_case(&t.root_sha) => {}
        Some(s) => problems.push(format!(
            "type 0 lists {s}, expected {}",
            t.root_sha.to_uppercase()
        )),
        None => problems.push("type 0 (root CAs) is not listed".to_string()),
    }
    match listed(1) {
        Some(s) if s.eq_ignore_ascii_case(&t.cert_sha) => {}
        Some(s) => problems.push(format!(
            "type 1 lists {s}, expected {}",
            t.cert_sha.to_uppercase()
        )),
        None => problems.push("type 1 (certificate) is not listed".to_string()),
    }
    match listed(2) {
        Some(s) if s.eq_ignore_ascii_case(key_sha256) => {}
        _ => problems.push("type 2 (the key) changed or vanished during import".to_string()),
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(refused(
        BenchCode::VerifyFailed,
        format!("after writing, the modem's listing does not match: {}", problems.join("; ")),
        "re-run import; if it persists the modem stores credentials differently (check its firmware)",
    ))
}

/// The functional mode to set after a verified import (pure): the one found before export,
/// unless that is 4 (where the writes leave the modem) or the modem is already in it.
pub(super) fn cfun_to_restore(target: u8, cfun_now: u8, changed: bool) -> Option<u8> {
    (target != 4 && (changed || cfun_now != target)).then_some(target)
}

/// The record of a verified import (`note`: what could not be done afterwards, or empty).
pub(super) fn mark_imported(rec: &mut DeviceRecord, t: &Target, ca_sha256: &str, note: &str) {
    rec.state = DeviceState::Imported;
    rec.imported_at = Some(now());
    rec.cert_serial = Some(t.serial.clone());
    rec.cert_sha256 = Some(t.cert_sha.clone());
    rec.root_sha256 = Some(t.root_sha.clone());
    rec.ca_sha256 = Some(ca_sha256.to_string());
    rec.error_code = None;
    rec.last_error = if note.is_empty() {
        None
    } else {
        Some(note.trim().to_string())
    };
}

/// What a verified import reports.
pub(super) fn done_detail(t: &Target, note: &str) -> String {
    let serial = &t.serial;
    if t.ca_tag == t.tag {
        format!("certificate {serial} and root CAs installed and verified by SHA-256{note}")
    } else {
        format!(
            "certificate {serial} and root CAs (sec_tag {}) installed and verified by SHA-256{note}",
            t.ca_tag
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which record and certificate `select` takes, or why it refuses, by case.
    #[test]
    fn select_table() {
        let rec = |imei: &str, tag: u32, state: DeviceState, uuid: &str| {
            let mut r = DeviceRecord::new(imei, tag, state);
            r.uuid = Some(uuid.to_string());
            r
        };
        let row = |uuid: &str, imei: &str, tag: u32, serial: &str| CertRow {
            device_uuid: uuid.into(),
            imei: imei.into(),
            sec_tag: tag,
            serial: serial.into(),
            not_before: String::new(),
            not_after: String::new(),
            sha256: String::new(),
            certificate_pem: String::new(),
        };
        const A: &str = "355025930000001";
        const U: &str = "50503041-3539-47eb-8000-000000000001";
        let rejects = [(
            U.to_string(),
            "bad-csr-signature".to_string(),
            "x".to_string(),
        )];
        use DeviceState::*;
        let cases: Vec<(&str, Vec<DeviceRecord>, Vec<CertRow>, &str)> = vec![
            (
                "by IMEI",
                vec![rec(A, 7, Exported, U)],
                vec![row("", A, 7, "s1")],
                "7 s1",
            ),
            (
                "by UUID, any case",
                vec![rec(A, 7, Exported, U)],
                vec![row(&U.to_uppercase(), "", 7, "s2")],
                "7 s2",
            ),
            (
                "other sec_tag only",
                vec![rec(A, 7, Exported, U)],
                vec![row(U, A, 8, "s3")],
                "no-certificate",
            ),
            (
                "imported before: again",
                vec![rec(A, 7, Imported, U)],
                vec![row(U, A, 7, "s4")],
                "7 s4",
            ),
            (
                "the tag that has one",
                vec![rec(A, 7, Exported, U), rec(A, 8, Exported, U)],
                vec![row(U, A, 8, "s5")],
                "8 s5",
            ),
            (
                "export not complete",
                vec![rec(A, 7, ExportFailed, U)],
                vec![row(U, A, 7, "s6")],
                "not-exported",
            ),
            (
                "rejected by the signer",
                vec![rec(A, 7, Exported, U)],
                vec![],
                "request-rejected",
            ),
        ];
        for (name, records, certs, want) in cases {
            let r = if name == "rejected by the signer" {
                &rejects[..]
            } else {
                &[][..]
            };
            let got = match select(&records, &certs, r) {
                Ok((rec, row)) => format!("{} {}", rec.sec_tag, row.serial),
                Err(f) => f.parts().0,
            };
            assert_eq!(got, want, "case: {name}");
        }
    }

    fn entry(tag: u64, kind: u8, sha: &str) -> at::CmngEntry {
        at::CmngEntry {
            sec_tag: tag,
            kind,
            sha256: sha.into(),
        }
    }

    /// A target at sec_tag 7, root CAs at `ca_tag`; the modem lists uppercase hex.
    fn target(ca_tag: u32) -> Target {
        Target {
            tag: 7,
            ca_tag,
            cert_pem: String::new(),
            cert_sha: "cc".into(),
            root_sha: "aa".into(),
            serial: "01".into(),
        }
    }

    /// What `plan` decides, as a short string the table can name.
    fn planned(r: Result<Plan, Fail>) -> String {
        match r {
            Ok(Plan::AlreadyImported) => "already-imported".into(),
            Ok(Plan::Write { key_sha256, writes }) => format!(
                "write key {key_sha256} root {} cert {}",
                writes.root, writes.cert
            ),
            Err(f) => {
                let (code, detail, _, _) = f.parts();
                format!("refuse {code}: {detail}")
            }
        }
    }

    #[test]
    fn plan_table() {
        use DeviceState::*;
        let rec = |state: DeviceState, key: Option<&str>| {
            let mut r = DeviceRecord::new("355025930000001", 7, state);
            r.key_sha256 = key.map(str::to_string);
            r.exported_at = Some("T".into());
            r
        };
        let (root, cert, key) = (entry(7, 0, "AA"), entry(7, 1, "CC"), entry(7, 2, "KK"));
        let full = || vec![root.clone(), cert.clone(), key.clone()];
        /// (case, record, listing of sec_tag 7, listing of the CA tag 9 if apart, decision)
        type Case = (
            &'static str,
            DeviceRecord,
            Vec<at::CmngEntry>,
            Option<Vec<at::CmngEntry>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "fresh slot with the key",
                rec(Exported, Some("kk")),
                vec![key.clone()],
                None,
                "write key KK root true cert true",
            ),
            (
                "no key recorded: any type 2 will do",
                rec(Exported, None),
                vec![key.clone()],
                None,
                "write key KK root true cert true",
            ),
            (
                "root CAs in place",
                rec(Exported, Some("KK")),
                vec![root.clone(), key.clone()],
                None,
                "write key KK root false cert true",
            ),
            (
                "root CAs of another bundle",
                rec(Exported, Some("KK")),
                vec![entry(7, 0, "AB"), cert.clone(), key.clone()],
                None,
                "write key KK root true cert false",
            ),
            (
                "everything in place, imported",
                rec(Imported, Some("KK")),
                full(),
                None,
                "already-imported",
            ),
            (
                "everything in place, not recorded as imported",
                rec(ImportUnknown, Some("KK")),
                full(),
                None,
                "write key KK root false cert false",
            ),
            (
                "imported but the certificate differs",
                rec(Imported, Some("KK")),
                vec![root.clone(), entry(7, 1, "CD"), key.clone()],
                None,
                "write key KK root false cert true",
            ),
            (
                "CA tag apart: roots beside the certificate do not count",
                rec(Imported, Some("KK")),
                full(),
                Some(vec![]),
                "write key KK root true cert false",
            ),
            (
                "CA tag apart, roots there",
                rec(Imported, Some("KK")),
                vec![cert.clone(), key.clone()],
                Some(vec![entry(9, 0, "AA")]),
                "already-imported",
            ),
            (
                "key gone",
                rec(Exported, Some("KK")),
                vec![root.clone(), cert.clone()],
                None,
                "refuse key-missing: sec_tag 7 no longer holds the key exported on T",
            ),
            (
                "endorsement key instead",
                rec(Exported, Some("KK")),
                vec![entry(7, 8, "EE")],
                None,
                "refuse key-missing: sec_tag 7 holds an endorsement key (type 8, from AT%KEYGEN key_type 8), not the client key (type 2) a device certificate pairs with",
            ),
            (
                "key replaced",
                rec(Imported, Some("KA")),
                full(),
                None,
                "refuse key-changed: sec_tag 7 holds a different key than the one exported",
            ),
        ];
        for (name, rec, tag, ca, want) in cases {
            let t = target(if ca.is_some() { 9 } else { 7 });
            let got = planned(plan(&rec, &t, &Slots { tag, ca }));
            assert_eq!(got, want, "case: {name}");
        }
    }

    #[test]
    fn verify_listing_table() {
        let ok = || vec![entry(7, 0, "AA"), entry(7, 1, "CC"), entry(7, 2, "KK")];
        type Case = (
            &'static str,
            Vec<at::CmngEntry>,
            Option<Vec<at::CmngEntry>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("all as written", ok(), None, "ok"),
            (
                "CA tag apart",
                vec![entry(7, 1, "CC"), entry(7, 2, "KK")],
                Some(vec![entry(9, 0, "aa")]),
                "ok",
            ),
            (
                "CA tag apart, roots only beside the certificate",
                ok(),
                Some(vec![]),
                "type 0 (root CAs) is not listed",
            ),
            (
                "other root CAs",
                vec![entry(7, 0, "AB"), entry(7, 1, "CC"), entry(7, 2, "KK")],
                None,
                "type 0 lists AB, expected AA",
            ),
            (
                "certificate missing, key changed",
                vec![entry(7, 0, "AA"), entry(7, 2, "KL")],
                None,
                "type 1 (certificate) is not listed; type 2 (the key) changed or vanished during import",
            ),
            (
                "nothing listed",
                vec![],
                None,
                "type 0 (root CAs) is not listed; type 1 (certificate) is not listed; type 2 (the key) changed or vanished during import",
            ),
        ];
        for (name, tag, ca, want) in cases {
            let t = target(if ca.is_some() { 9 } else { 7 });
            let got = match verify_listing(&t, "kk", &Slots { tag, ca }) {
                Ok(()) => "ok".to_string(),
                Err(f) => {
                    let (code, detail, _, _) = f.parts();
                    assert_eq!(code, "verify-failed", "case: {name}");
                    detail
                        .strip_prefix("after writing, the modem's listing does not match: ")
                        .unwrap_or(&detail)
                        .to_string()
                }
            };
            assert_eq!(got, want, "case: {name}");
        }
    }

    #[test]
    fn check_modem_uuid_table() {
        const U: &str = "50503041-3539-47eb-8000-000000000001";
        let cases: [(&str, Option<&str>, Option<&str>, bool); 5] = [
            ("same", Some(U), Some(U), true),
            (
                "same, other case",
                Some(U),
                Some("50503041-3539-47EB-8000-000000000001"),
                true,
            ),
            ("modem does not say", Some(U), None, true),
            ("nothing recorded", None, Some(U), true),
            (
                "other device",
                Some(U),
                Some("50503041-3539-47eb-8000-000000000002"),
                false,
            ),
        ];
        for (name, recorded, reported, ok) in cases {
            let mut rec = DeviceRecord::new("355025930000001", 7, DeviceState::Exported);
            rec.uuid = recorded.map(str::to_string);
            let got = check_modem_uuid(&rec, reported);
            assert_eq!(got.is_ok(), ok, "case: {name}");
            if let Err(f) = got {
                assert_eq!(f.parts().0, "identity-mismatch", "case: {name}");
            }
        }
    }

    #[test]
    fn cfun_to_restore_table() {
        // (mode found before export, mode now, changed by this run, mode to set)
        let cases = [
            (1, 1, false, None),
            (1, 4, false, Some(1)),
            (1, 1, true, Some(1)),
            (4, 1, true, None),
            (4, 4, false, None),
            (0, 4, true, Some(0)),
        ];
        for (target, now, changed, want) in cases {
            assert_eq!(
                cfun_to_restore(target, now, changed),
                want,
                "case: {target} {now} {changed}"
            );
        }
    }

    #[test]
    fn cert_pem_for_modem_normalizes_only_when_needed() {
        let lf = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(cert_pem_for_modem(lf), lf);
        assert_eq!(cert_pem_for_modem(&lf.replace('\n', "\r\n")), lf);
        assert_eq!(cert_pem_for_modem(lf.trim_end()), lf);
    }
}
