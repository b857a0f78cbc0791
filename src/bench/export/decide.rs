//! The pure per-device decisions of export (no modem, no state): what to do with the slot
//! (skip, adopt, generate), whether the firmware can, the record a run starts from, what a
//! KEYGEN refusal means, and the record of a completed export. Table-driven tests beside them.

use crate::bench::at;
use crate::bench::code::BenchCode;
use crate::bench::modem::ModemError;
use crate::bench::state::{now, DeviceRecord, DeviceState};
use crate::bench::worker::{error_code, Fail};
use crate::keygen;

/// What to do with a device after listing its slot.
pub(super) enum Plan {
    Skip(String),
    Adopt(String),
    Keygen { delete: Vec<u8>, why: String },
}

/// Decide what to do with a device from its bench record and its slot listing (pure: no
/// modem, no state). A refusal comes back as the [`Fail`] to report.
pub(super) fn plan(
    tag: u32,
    force: bool,
    existing: Option<&DeviceRecord>,
    listing: &[at::CmngEntry],
) -> Result<Plan, Fail> {
    let key = listing.iter().find(|e| e.kind == 2).cloned();
    let cert = listing.iter().find(|e| e.kind == 1).cloned();
    let occupied = key.is_some() || cert.is_some();
    let when = |r: &DeviceRecord| r.exported_at.clone().unwrap_or_else(|| "?".into());

    let plan = if force && occupied {
        Plan::Keygen {
            delete: vec![0, 1, 2],
            why: "--force: replacing what the slot holds".into(),
        }
    } else {
        match existing {
            None if occupied => {
                return Err(Fail::Refused {
                    code: BenchCode::SlotOccupied,
                    detail: format!(
                        "sec_tag {tag} already holds a client {} this bench did not export",
                        if key.is_some() { "key" } else { "certificate" }
                    ),
                    next: "if the device may be replaced, re-run with --force (deletes types 0, 1, 2 of the sec_tag and generates a new key; any certificate for the old key becomes useless), or use another --sec-tag".into(),
                });
            }
            None => Plan::Keygen {
                delete: vec![],
                why: "new device".into(),
            },
            Some(r) if r.state.has_exported_key() => match &key {
                Some(k)
                    if r.key_sha256.as_deref().map_or(true, |s| s.eq_ignore_ascii_case(&k.sha256)) =>
                {
                    Plan::Skip(if r.state == DeviceState::Imported {
                        format!("already exported on {} and imported", when(r))
                    } else {
                        format!(
                            "already exported on {} (request in {})",
                            when(r),
                            r.requests_file.as_deref().unwrap_or("?")
                        )
                    })
                }
                Some(_) => {
                    return Err(Fail::Refused {
                        code: BenchCode::KeyChanged,
                        detail: format!(
                            "sec_tag {tag} holds a different key than the one exported on {}",
                            when(r)
                        ),
                        next: "someone replaced the key outside this bench; re-run with --force to generate a new key and request".into(),
                    })
                }
                None if cert.is_some() => {
                    return Err(Fail::Refused {
                        code: BenchCode::SlotOccupied,
                        detail: format!("sec_tag {tag} holds a certificate but not the key exported on {}", when(r)),
                        next: "re-run with --force to clear the slot and generate a new key".into(),
                    })
                }
                None => Plan::Keygen {
                    delete: vec![],
                    why: format!(
                        "the key exported on {} is no longer on the device; its request is void",
                        when(r)
                    ),
                },
            },
            Some(r) if r.state == DeviceState::ExportUnknown => match (&key, &r.keygen) {
                (Some(_), Some(candidate)) => Plan::Adopt(candidate.clone()),
                (Some(_), None) if cert.is_none() => Plan::Keygen {
                    // The key came from our interrupted KEYGEN (the slot was empty or cleared
                    // when it was sent) and its CSR never reached the host, so no certificate
                    // can exist for it: replacing it loses nothing.
                    delete: vec![2],
                    why: "replacing the key of an interrupted KEYGEN whose reply was lost".into(),
                },
                (Some(_), None) | (None, _) if occupied => {
                    return Err(Fail::Refused {
                        code: BenchCode::SlotOccupied,
                        detail: format!("sec_tag {tag} holds a certificate after an interrupted export"),
                        next: "re-run with --force to clear the slot and generate a new key".into(),
                    })
                }
                _ => Plan::Keygen {
                    delete: vec![],
                    why: "the interrupted KEYGEN left no key; generating".into(),
                },
            },
            Some(r) => {
                // export-failed
                if occupied {
                    return Err(Fail::Refused {
                        code: r.error_code.clone().map_or(BenchCode::SlotOccupied, BenchCode::Recorded),
                        detail: format!(
                            "sec_tag {tag} holds a key or certificate and the last export failed: {}",
                            r.last_error.as_deref().unwrap_or("no detail")
                        ),
                        next: "re-run with --force to delete it and generate a new key".into(),
                    });
                }
                Plan::Keygen {
                    delete: vec![],
                    why: "retrying a failed export".into(),
                }
            }
        }
    };
    Ok(plan)
}

/// The firmware must know `AT%KEYGEN` as export uses it (pure).
pub(super) fn check_firmware(firmware: &str, model: &str) -> Result<(), Fail> {
    at::keygen_supported(firmware, model).map_err(|reason| Fail::Refused {
        code: BenchCode::OldFirmware,
        detail: reason,
        next: "update the modem firmware (nRF9160: mfw 1.3.0 or later; nRF91x1: 2.0.0 or later), then re-run".into(),
    })
}

/// What the modem said about itself, for the bench record.
pub(super) struct Identity {
    pub(super) imei: String,
    pub(super) firmware: String,
    pub(super) model: String,
}

/// The device's bench record as this run starts it (pure): the existing one, or a new one in
/// export-unknown; with the model, firmware and port seen now, and the functional mode to
/// restore unless one is recorded already.
pub(super) fn device_record(
    existing: Option<&DeviceRecord>,
    id: &Identity,
    tag: u32,
    port: &str,
    restore_to: Option<u8>,
) -> DeviceRecord {
    let mut rec = existing.cloned().unwrap_or_else(|| {
        let mut r = DeviceRecord::new(&id.imei, tag, DeviceState::ExportUnknown);
        r.cfun_before = restore_to;
        r
    });
    rec.model = Some(id.model.clone());
    rec.firmware = Some(id.firmware.clone());
    rec.port = Some(port.to_string());
    if rec.cfun_before.is_none() {
        rec.cfun_before = restore_to;
    }
    rec
}

/// A definite refusal of KEYGEN (no key was made): the code to record and what to do next
/// (pure). `attributes`: whether subject attributes were asked for (`--device-id imei`).
pub(super) fn keygen_refused(e: &ModemError, attributes: bool) -> (BenchCode, String) {
    if attributes && matches!(e, ModemError::Error { .. }) {
        return (
            BenchCode::KeygenAttributesRefused,
            "this firmware does not take subject attributes in %KEYGEN: update the modem firmware, or export this device with --device-id uuid (and sign without --device-id cn)".to_string(),
        );
    }
    let next = if e.cme() == Some(at::CmeCode::ALREADY_EXISTS) {
        "the modem says the slot already holds a key: re-run (the slot is listed again) or use --force".to_string()
    } else {
        e.next_step()
    };
    (error_code(e), next)
}

/// The record of a completed export (pure but for the time stamp): what was exported, and
/// nothing left of an earlier import or error.
pub(super) fn mark_exported(
    rec: &mut DeviceRecord,
    verified: &keygen::Verified,
    keygen_text: &str,
    key_sha256: &str,
    requests_file: &str,
) {
    rec.state = DeviceState::Exported;
    rec.uuid = Some(verified.uuid.clone());
    rec.public_key = Some(hex::encode(verified.public_key));
    rec.keygen = Some(keygen_text.to_string());
    rec.keygen_sha256 = Some(hex::encode(verified.keygen_sha256));
    rec.key_sha256 = Some(key_sha256.to_string());
    rec.exported_at = Some(now());
    rec.requests_file = Some(requests_file.to_string());
    rec.error_code = None;
    rec.last_error = None;
    rec.imported_at = None;
    rec.cert_serial = None;
    rec.cert_sha256 = None;
    rec.root_sha256 = None;
    rec.bundle = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: u8, sha: &str) -> at::CmngEntry {
        at::CmngEntry {
            sec_tag: 7,
            kind,
            sha256: sha.into(),
        }
    }

    fn record(state: DeviceState, key: Option<&str>, keygen: Option<&str>) -> DeviceRecord {
        let mut r = DeviceRecord::new("355025930000000", 7, state);
        r.key_sha256 = key.map(str::to_string);
        r.keygen = keygen.map(str::to_string);
        r.error_code = (state == DeviceState::ExportFailed).then(|| "cme-523".to_string());
        r
    }

    /// What `plan` decides, as a short string the table can name.
    fn outcome(r: Result<Plan, Fail>) -> String {
        match r {
            Ok(Plan::Skip(_)) => "skip".into(),
            Ok(Plan::Adopt(k)) => format!("adopt {k}"),
            Ok(Plan::Keygen { delete, .. }) => format!("keygen delete {delete:?}"),
            Err(f) => format!("refuse {}", f.parts().0),
        }
    }

    #[test]
    fn keygen_refused_table() {
        let error = || ModemError::Error {
            command: "AT%KEYGEN".into(),
        };
        let cme = |n| ModemError::Cme {
            command: "AT%KEYGEN".into(),
            code: at::CmeCode(n),
        };
        // (case, error, attributes asked for, code, next step starts with)
        let cases = [
            (
                "ERROR with attributes",
                error(),
                true,
                "keygen-attributes-refused",
                "this firmware does not take subject attributes",
            ),
            (
                "ERROR without attributes",
                error(),
                false,
                "at-error",
                "the modem refused the command (plain ERROR)",
            ),
            (
                "slot already holds a key",
                cme(519),
                false,
                "cme-519",
                "the modem says the slot already holds a key",
            ),
            (
                "CME with attributes is not about them",
                cme(519),
                true,
                "cme-519",
                "the modem says the slot already holds a key",
            ),
        ];
        for (name, e, attributes, code, next) in cases {
            let (c, n) = keygen_refused(&e, attributes);
            assert_eq!(c.to_string(), code, "case: {name}");
            assert!(n.starts_with(next), "case: {name}: {n}");
        }
        let other = cme(514);
        assert_eq!(keygen_refused(&other, false).1, other.next_step());
    }

    #[test]
    fn device_record_table() {
        let id = Identity {
            imei: "355025930000000".into(),
            firmware: "mfw_nrf9160_1.3.5".into(),
            model: "nRF9160-SICA".into(),
        };
        let with_cfun = |cfun: Option<u8>| {
            let mut r = record(DeviceState::Exported, Some("AA"), None);
            r.cfun_before = cfun;
            r.port = Some("/dev/old".into());
            r
        };
        // (case, existing record, mode to restore, state, cfun_before, key kept)
        let cases = [
            (
                "new device",
                None,
                Some(1),
                DeviceState::ExportUnknown,
                Some(1),
                None,
            ),
            (
                "known, mode recorded",
                Some(with_cfun(Some(0))),
                Some(1),
                DeviceState::Exported,
                Some(0),
                Some("AA"),
            ),
            (
                "known, no mode recorded",
                Some(with_cfun(None)),
                Some(4),
                DeviceState::Exported,
                Some(4),
                Some("AA"),
            ),
        ];
        for (name, existing, restore_to, state, cfun, key) in cases {
            let r = device_record(existing.as_ref(), &id, 7, "/dev/new", restore_to);
            assert_eq!(r.state, state, "case: {name}");
            assert_eq!(r.cfun_before, cfun, "case: {name}");
            assert_eq!(r.key_sha256.as_deref(), key, "case: {name}");
            assert_eq!(r.port.as_deref(), Some("/dev/new"), "case: {name}");
            assert_eq!(
                r.firmware.as_deref(),
                Some("mfw_nrf9160_1.3.5"),
                "case: {name}"
            );
            assert_eq!(r.model.as_deref(), Some("nRF9160-SICA"), "case: {name}");
        }
    }

    #[test]
    fn check_firmware_table() {
        for (fw, model, ok) in [
            ("mfw_nrf9160_1.3.5", "nRF9160-SICA", true),
            ("mfw_nrf9160_1.2.7", "nRF9160-SICA", false),
            ("mfw_nrf91x1_2.0.1", "nRF9151-LACA", true),
            ("mfw_nrf91x1_1.9.0", "nRF9151-LACA", false),
            ("garbage", "nRF9160-SICA", false),
        ] {
            let got = check_firmware(fw, model);
            assert_eq!(got.is_ok(), ok, "{fw}");
            if let Err(f) = got {
                assert_eq!(f.parts().0, "old-firmware", "{fw}");
            }
        }
    }

    #[test]
    fn plan_table() {
        use DeviceState::*;
        let key_a = || entry(2, "AA");
        let key_b = || entry(2, "BB");
        let cert = || entry(1, "CC");
        /// (case, --force, bench record, slot listing, decision)
        type Case = (
            &'static str,
            bool,
            Option<DeviceRecord>,
            Vec<at::CmngEntry>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("new, empty slot", false, None, vec![], "keygen delete []"),
            (
                "new, foreign key",
                false,
                None,
                vec![key_a()],
                "refuse slot-occupied",
            ),
            (
                "new, foreign cert",
                false,
                None,
                vec![cert()],
                "refuse slot-occupied",
            ),
            (
                "new, foreign key, --force",
                true,
                None,
                vec![key_a(), cert()],
                "keygen delete [0, 1, 2]",
            ),
            (
                "--force on an empty slot",
                true,
                None,
                vec![],
                "keygen delete []",
            ),
            (
                "exported, same key",
                false,
                Some(record(Exported, Some("aa"), None)),
                vec![key_a()],
                "skip",
            ),
            (
                "imported, same key",
                false,
                Some(record(Imported, Some("AA"), None)),
                vec![key_a(), cert()],
                "skip",
            ),
            (
                "exported, other key",
                false,
                Some(record(Exported, Some("AA"), None)),
                vec![key_b()],
                "refuse key-changed",
            ),
            (
                "exported, key gone, cert left",
                false,
                Some(record(Exported, Some("AA"), None)),
                vec![cert()],
                "refuse slot-occupied",
            ),
            (
                "exported, slot empty",
                false,
                Some(record(Exported, Some("AA"), None)),
                vec![],
                "keygen delete []",
            ),
            (
                "unknown, key and reply kept",
                false,
                Some(record(ExportUnknown, None, Some("K.C"))),
                vec![key_a()],
                "adopt K.C",
            ),
            (
                "unknown, key, reply lost",
                false,
                Some(record(ExportUnknown, None, None)),
                vec![key_a()],
                "keygen delete [2]",
            ),
            (
                "unknown, key and cert, reply lost",
                false,
                Some(record(ExportUnknown, None, None)),
                vec![key_a(), cert()],
                "refuse slot-occupied",
            ),
            (
                "unknown, cert only",
                false,
                Some(record(ExportUnknown, None, Some("K.C"))),
                vec![cert()],
                "refuse slot-occupied",
            ),
            (
                "unknown, nothing",
                false,
                Some(record(ExportUnknown, None, None)),
                vec![],
                "keygen delete []",
            ),
            (
                "failed, empty",
                false,
                Some(record(ExportFailed, None, None)),
                vec![],
                "keygen delete []",
            ),
            (
                "failed, occupied: the recorded code",
                false,
                Some(record(ExportFailed, None, None)),
                vec![key_a()],
                "refuse cme-523",
            ),
            (
                "failed, occupied, --force",
                true,
                Some(record(ExportFailed, None, None)),
                vec![key_a()],
                "keygen delete [0, 1, 2]",
            ),
        ];
        for (name, force, existing, listing, want) in cases {
            let got = outcome(plan(7, force, existing.as_ref(), &listing));
            assert_eq!(got, want, "case: {name}");
        }
    }
}
