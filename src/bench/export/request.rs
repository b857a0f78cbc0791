//! Finishing a device into the requests file: the KEYGEN reply checked as `sign` checks it,
//! the key confirmed in the slot, the row appended once (fsync'd), and the refusal of a file
//! whose rows name another bench.

use super::decide::mark_exported;
use super::device::PortRun;
use crate::bench::at;
use crate::bench::code::BenchCode;
use crate::bench::modem::Modem;
use crate::bench::state::{now, DeviceRecord, DeviceState};
use crate::bench::transport::Transport;
use crate::bench::worker::{BenchError, DeviceResult, Fail, Status, Track};
use crate::keygen::{self, CheckOptions};
use crate::requests::RequestRow;

/// An enrolled bench signs the whole requests file it appends to: refuse (before any modem is
/// touched) a file holding rows written under another bench name, which `sign` would refuse.
pub(super) fn rows_name_bench(out: &std::path::Path, name: &str) -> Result<(), BenchError> {
    if !out.exists() {
        return Ok(());
    }
    let mut reader = crate::requests::RequestReader::open(&[out.to_path_buf()]);
    while let Some(entry) = reader.next_entry() {
        let Ok(crate::requests::Entry::Request(req)) = entry else {
            continue;
        };
        if let Some(row) = req.row.filter(|r| r.bench != name) {
            return Err(BenchError::Usage(format!(
                "{} line {} was written by bench {:?}, but this bench is enrolled as {name:?}: its signed statement would cover rows naming another bench, which `nrfca sign` refuses. Export into a new requests file (--out NEW.csv); the rows already in {} can only be accepted by the officer with `nrfca sign --unsigned`",
                out.display(),
                req.line,
                crate::util::term_escape(&row.bench),
                out.display()
            )));
        }
    }
    Ok(())
}

/// After KEYGEN (now, or adopted from an interrupted run): the reply passes the signer's
/// check, the key is in the slot, the request is appended once, the record says exported.
pub(super) fn finish(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &mut Track,
    mut rec: DeviceRecord,
    keygen_text: &str,
    listing: Option<Vec<at::CmngEntry>>,
) -> Result<DeviceResult, Fail> {
    let tag = run.ctx.opts.sec_tag;
    let imei = rec.imei.clone();
    run.step(Some(&imei), "check request");
    let verified = check_request(run, &mut rec, keygen_text)?;
    track.uuid = Some(verified.uuid.clone());
    let listing = match listing {
        Some(l) => l,
        None => {
            run.step(Some(&imei), "confirm key");
            m.cmng_list(tag)?
        }
    };
    let Some(key) = listing.iter().find(|e| e.kind == 2) else {
        rec.state = DeviceState::ExportFailed;
        rec.keygen = None;
        rec.note_error(
            run.port,
            "no-key-stored",
            "KEYGEN answered but the slot lists no key (type 2)",
        );
        run.journal.commit(&rec)?;
        return Err(Fail::Refused {
            code: BenchCode::NoKeyStored,
            detail: format!("KEYGEN answered but sec_tag {tag} lists no key"),
            next: "re-run export: a new key is generated".into(),
        });
    };
    let out_name = run.ctx.opts.out.display().to_string();
    run.step(Some(&imei), "write request");
    append_request(run, &rec, &verified, keygen_text)?;
    mark_exported(&mut rec, &verified, keygen_text, &key.sha256, &out_name);
    run.journal
        .note("result", &format!("exported {}", verified.uuid));
    run.journal.commit(&rec)?;
    Ok(DeviceResult {
        port: run.port.to_string(),
        imei: Some(imei),
        uuid: Some(verified.uuid),
        sec_tag: tag,
        status: Status::Done,
        code: None,
        detail: format!("request written to {out_name}"),
        next_step: Some("sign the requests file, then `nrfca bench import`".into()),
    })
}

/// The KEYGEN reply checked exactly as `sign` will check it; a reply `sign` would reject is
/// recorded as export-failed (the key stays in the slot).
fn check_request(
    run: &PortRun<'_, '_>,
    rec: &mut DeviceRecord,
    keygen_text: &str,
) -> Result<keygen::Verified, Fail> {
    let checked = keygen::check(
        keygen_text,
        &CheckOptions {
            sec_tag: Some(run.ctx.opts.sec_tag),
            device_id: run.ctx.opts.device_id.check_mode(),
            imei: Some(rec.imei.clone()),
        },
    );
    let rej = match checked {
        Ok(v) => return Ok(v),
        Err(rej) => rej,
    };
    rec.state = DeviceState::ExportFailed;
    rec.note_error(
        run.port,
        &BenchCode::Keygen(rej.code).to_string(),
        &format!(
            "the modem's KEYGEN reply fails the signer's check ({rej}); the key stays in the slot"
        ),
    );
    run.journal
        .note("check", &format!("rejected: {}", rej.code));
    run.journal.commit(rec)?;
    Err(Fail::Refused {
        code: BenchCode::Keygen(rej.code),
        detail: format!("the KEYGEN reply would be rejected by `nrfca sign`: {rej}"),
        next: format!(
            "{}; then re-run with --force to replace the key",
            rej.code.next_step()
        ),
    })
}

/// Append the request row to the requests file (fsync'd), unless the file already holds
/// this KEYGEN reply (a re-run after the row was written).
fn append_request(
    run: &PortRun<'_, '_>,
    rec: &DeviceRecord,
    verified: &keygen::Verified,
    keygen_text: &str,
) -> Result<(), Fail> {
    let ctx = run.ctx;
    let mut w = match ctx.writer.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    let already = std::fs::read_to_string(&ctx.opts.out)
        .map(|t| t.contains(keygen_text))
        .unwrap_or(false);
    if already {
        return Ok(());
    }
    let row = RequestRow {
        device_uuid: verified.uuid.clone(),
        imei: rec.imei.clone(),
        sec_tag: ctx.opts.sec_tag.to_string(),
        keygen: keygen_text.to_string(),
        modem_fw: rec.firmware.clone().unwrap_or_default(),
        model: rec.model.clone().unwrap_or_default(),
        bench: ctx.actor.bench.clone(),
        port: run.port.to_string(),
        exported_at: now(),
        bad_shape: None,
    };
    w.append(&row)
        .map_err(|e| Fail::Internal(format!("requests file: {}", crate::error::error_chain(&e))))
}
