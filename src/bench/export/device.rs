//! The modem steps of exporting one device: identity, slot listing, `AT%KEYGEN` (state written
//! first), and the claim token.

use super::decide::{check_firmware, device_record, keygen_refused, plan, Identity, Plan};
use super::request::finish;
use super::{step, Ctx};
use crate::bench::at;
use crate::bench::claim;
use crate::bench::code::BenchCode;
use crate::bench::modem::{keygen_from_lines, Modem, ModemError};
use crate::bench::state::{DeviceRecord, DeviceState};
use crate::bench::transport::Transport;
use crate::bench::worker::{DeviceResult, Fail, Journal, Status, Track};

/// `--claim-tokens`: after the device is exported (now or before), `AT%ATTESTTOKEN` into the
/// claim-token CSV, once per device UUID. A token that does not arrive fails the device alone
/// (`claim-token-missing`); its request stays valid and a re-run only gathers the token.
pub(super) fn claim_token(
    ctx: &Ctx<'_>,
    port: &str,
    m: &mut Modem<Box<dyn Transport>>,
    journal: &Journal,
    file: &std::path::Path,
    done: DeviceResult,
) -> Result<DeviceResult, Fail> {
    let imei = done.imei.clone().unwrap_or_default();
    let uuid = done.uuid.clone().unwrap_or_default();
    let have = std::fs::read_to_string(file)
        .map(|t| claim::has_uuid(&t, &uuid))
        .unwrap_or(false);
    if have {
        journal.note("claim token", "already in the claim-token file");
        return Ok(done);
    }
    step(ctx, port, Some(&imei), "claim token");
    let missing = |detail: String| {
        Fail::Refused {
        code: BenchCode::ClaimTokenMissing,
        detail,
        next: "the request is written; re-run export to gather the claim token (nothing else is sent again)".into(),
    }
    };
    let token = match m.attestation_token() {
        Ok(t) => t,
        Err(e @ ModemError::Disconnected { .. }) => return Err(e.into()),
        Err(e) => {
            return Err(missing(format!(
                "no attestation token: {}",
                e.outcome_text()
            )))
        }
    };
    if !claim::token_ok(&token) {
        return Err(missing(
            "the attestation token holds characters a CSV row cannot carry".into(),
        ));
    }
    match crate::bench::modem::uuid_from_attest_token(&token) {
        Some(u) if u.eq_ignore_ascii_case(&uuid) => {}
        Some(u) => {
            return Err(Fail::Refused {
                code: BenchCode::IdentityMismatch,
                detail: format!(
                "the attestation token names device {u}, but this device was exported as {uuid}"
            ),
                next: "investigate the device before claiming it".into(),
            })
        }
        None => return Err(missing("the attestation token cannot be decoded".into())),
    }
    let row = claim::token_row(&imei, &uuid, &token, time::OffsetDateTime::now_utc());
    {
        let _guard = match ctx.writer.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        claim::append_once(file, &uuid, &row)
            .map_err(|e| Fail::Internal(format!("claim-token file {}: {e}", file.display())))?;
    }
    journal.note("claim token", &format!("written to {}", file.display()));
    let mut done = done;
    done.detail = format!("{}; claim token written to {}", done.detail, file.display());
    Ok(done)
}

/// One port's run of [`export_device`]: where its steps are reported and journaled.
pub(super) struct PortRun<'r, 'c> {
    pub(super) ctx: &'r Ctx<'c>,
    pub(super) port: &'r str,
    pub(super) journal: &'r Journal,
}

impl PortRun<'_, '_> {
    pub(super) fn step(&self, imei: Option<&str>, what: &str) {
        step(self.ctx, self.port, imei, what);
    }
}

pub(super) fn export_device(
    ctx: &Ctx<'_>,
    port: &str,
    m: &mut Modem<Box<dyn Transport>>,
    journal: &Journal,
    track: &mut Track,
) -> Result<DeviceResult, Fail> {
    let run = PortRun { ctx, port, journal };
    let tag = ctx.opts.sec_tag;
    run.step(None, "identify");
    let cfun_now = m.cfun()?;
    let imei = m.imei()?;
    journal.set_imei(&imei);
    track.imei = Some(imei.clone());
    let id = Identity {
        imei,
        firmware: m.firmware()?,
        model: m.model()?,
    };
    let existing = ctx.state.device(&id.imei, tag)?;
    track.restore_to = existing
        .as_ref()
        .and_then(|r| r.cfun_before)
        .or(Some(cfun_now));
    track.uuid = existing.as_ref().and_then(|r| r.uuid.clone());
    check_firmware(&id.firmware, &id.model)?;

    run.step(Some(&id.imei), "check slot");
    let listing = m.cmng_list(tag)?;
    let plan = plan(tag, ctx.opts.force, existing.as_ref(), &listing)?;
    let mut rec = device_record(existing.as_ref(), &id, tag, port, track.restore_to);
    match plan {
        Plan::Skip(detail) => {
            journal.note("decision", &detail);
            Ok(DeviceResult {
                port: port.to_string(),
                imei: Some(id.imei),
                uuid: rec.uuid.clone(),
                sec_tag: tag,
                status: Status::AlreadyDone,
                code: None,
                detail,
                next_step: None,
            })
        }
        Plan::Adopt(candidate) => {
            journal.note(
                "decision",
                "adopting the KEYGEN reply of the interrupted export; the key is in the slot",
            );
            finish(&run, m, track, rec, &candidate, Some(listing))
        }
        Plan::Keygen { delete, why } => {
            journal.note("decision", &why);
            let keygen_text = keygen(&run, m, track, &mut rec, &delete, &listing, cfun_now)?;
            // Keep the reply before anything else can fail.
            rec.keygen = Some(keygen_text.clone());
            journal.commit(&rec)?;
            finish(&run, m, track, rec, &keygen_text, None)
        }
    }
}

/// CFUN=4, the write-ahead record (from here on a key may exist), the deletes [`plan`] asked
/// for, then `AT%KEYGEN`: its reply, also when only the final result code was lost. A
/// definite refusal is recorded as export-failed.
fn keygen(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &mut Track,
    rec: &mut DeviceRecord,
    delete: &[u8],
    listing: &[at::CmngEntry],
    cfun_now: u8,
) -> Result<String, Fail> {
    let tag = run.ctx.opts.sec_tag;
    let imei = rec.imei.clone();
    let imei_s = Some(imei.as_str());
    if cfun_now != 4 {
        run.step(imei_s, "CFUN=4");
        track.cfun_changed = true;
        m.set_cfun(4)?;
    }
    rec.state = DeviceState::ExportUnknown;
    rec.keygen = None;
    rec.keygen_sha256 = None;
    rec.key_sha256 = None;
    rec.public_key = None;
    rec.error_code = None;
    rec.last_error = None;
    run.journal.commit(rec)?;
    for &kind in delete {
        if listing.iter().any(|e| e.kind == kind) {
            run.step(imei_s, &format!("delete type {kind}"));
            m.cmng_delete(tag, kind)?;
        }
    }
    run.step(imei_s, "KEYGEN");
    let attributes = run.ctx.opts.device_id.keygen_attributes(&imei);
    match m.keygen(tag, attributes.as_deref()) {
        Ok(s) => Ok(s),
        Err(ModemError::Timeout {
            partial,
            command,
            waited,
        }) => match keygen_from_lines(&partial) {
            // The reply arrived but its final result code did not: keep the string; finish()
            // confirms the key is in the slot.
            Some(s) => {
                run.journal
                    .note("KEYGEN", "reply without final result; checking the slot");
                Ok(s)
            }
            None => Err(Fail::Modem(ModemError::Timeout {
                partial,
                command,
                waited,
            })),
        },
        Err(e) if e.outcome_unknown() => Err(e.into()),
        Err(e) => {
            // A definite refusal: no key was made.
            rec.state = DeviceState::ExportFailed;
            let (code, next) = keygen_refused(&e, attributes.is_some());
            rec.note_error(run.port, &code.to_string(), &crate::error::error_chain(&e));
            run.journal.commit(rec)?;
            Err(Fail::Refused {
                code,
                detail: crate::error::error_chain(&e),
                next,
            })
        }
    }
}
