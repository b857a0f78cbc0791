//! The modem effects of importing one device: read its identity and slots, carry out the
//! decided plan, verify the listing, restore the functional mode.

use super::decide::{
    cert_pem_for_modem, cfun_to_restore, check_ca_pin, check_cert, check_modem_uuid, done_detail,
    mark_imported, plan, select, verify_listing, Plan, Slots, Target, Writes,
};
use super::{step, Ctx};
use crate::bench::code::BenchCode;
use crate::bench::modem::Modem;
use crate::bench::state::{DeviceRecord, DeviceState};
use crate::bench::transport::Transport;
use crate::bench::worker::{refused, DeviceResult, Fail, Journal, Status, Track};
use crate::bundle::CertRow;

/// One port's run of [`import_device`]: where its steps are reported and journaled.
struct PortRun<'r, 'c> {
    ctx: &'r Ctx<'c>,
    port: &'r str,
    journal: &'r Journal,
}

impl PortRun<'_, '_> {
    fn step(&self, imei: Option<&str>, what: &str) {
        step(self.ctx, self.port, imei, what);
    }
}

pub(super) fn import_device(
    ctx: &Ctx<'_>,
    port: &str,
    m: &mut Modem<Box<dyn Transport>>,
    journal: &Journal,
    track: &mut Track,
) -> Result<DeviceResult, Fail> {
    let run = PortRun { ctx, port, journal };
    run.step(None, "identify");
    let cfun_now = m.cfun()?;
    let imei = m.imei()?;
    journal.set_imei(&imei);
    track.imei = Some(imei.clone());
    let imei_s = Some(imei.as_str());
    let records = ctx.state.devices_by_imei(&imei)?;
    let (mut rec, row) = choose(ctx, &imei, &records, track)?;
    track.restore_to = Some(rec.cfun_before.unwrap_or(cfun_now));

    run.step(imei_s, "check certificate");
    check_cert(&ctx.ca, row, &rec)?;
    check_modem_uuid(&rec, reported_uuid(m)?.as_deref())?;
    let target = target(ctx, m, &rec, row);
    check_ca_pin(&ctx.ca, &records, &target.cert_sha, ctx.opts.force, journal)?;

    run.step(imei_s, "check slot");
    let (key_sha256, writes) = match plan(&rec, &target, &list_slots(m, &target)?)? {
        Plan::AlreadyImported => return already_imported(&run, rec, &target),
        Plan::Write { key_sha256, writes } => (key_sha256, writes),
    };
    // Write-ahead: from here on the slot may change.
    rec.state = DeviceState::ImportUnknown;
    rec.port = Some(port.to_string());
    rec.bundle = Some(ctx.opts.bundle.display().to_string());
    journal.commit(&rec)?;
    write_missing(&run, m, track, &target, writes, cfun_now)?;

    run.step(imei_s, "verify");
    verify_listing(&target, &key_sha256, &list_slots(m, &target)?)?;
    let note = restore_cfun(&run, m, track, cfun_now, &imei);
    mark_imported(&mut rec, &target, &ctx.ca.sha256, &note);
    journal.note("result", &format!("imported certificate {}", target.serial));
    journal.commit(&rec)?;
    Ok(DeviceResult {
        port: port.to_string(),
        imei: Some(imei),
        uuid: rec.uuid.clone(),
        sec_tag: target.tag,
        status: Status::Done,
        code: None,
        detail: done_detail(&target, &note),
        next_step: None,
    })
}

/// The record to import for this IMEI and its bundle row ([`select`]), noting what is known
/// of the device in `track` either way.
fn choose<'c>(
    ctx: &'c Ctx<'_>,
    imei: &str,
    records: &[DeviceRecord],
    track: &mut Track,
) -> Result<(DeviceRecord, &'c CertRow), Fail> {
    if records.is_empty() {
        return Err(refused(
            BenchCode::NotExportedHere,
            format!(
                "IMEI {imei} was never exported on this bench (state {})",
                ctx.state.path().display()
            ),
            "import on the bench that exported it, or pass its --state directory; with simulated modems, the likely cause is an `nrfca sim` restarted without its `--state FILE` (a new simulator has new IMEIs and keys): restart it with the same --state, or export again",
        ));
    }
    let chosen = select(records, &ctx.certs, &ctx.rejects);
    let rec = match &chosen {
        Ok((rec, _)) => Some(rec),
        Err(_) => records.first(),
    };
    track.sec_tag = rec.map(|r| r.sec_tag);
    track.uuid = rec.and_then(|r| r.uuid.clone());
    chosen
}

/// The UUID the modem reports, if it answers; only a lost contact is an error here.
fn reported_uuid(m: &mut Modem<Box<dyn Transport>>) -> Result<Option<String>, Fail> {
    match m.device_uuid() {
        Ok(u) => Ok(u),
        Err(e) if e.outcome_unknown() => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// What goes where for this device; the SHA-256 values are what the modem will list for the
/// bytes it stores (over the shell dialect those have CR LF line ends).
fn target(
    ctx: &Ctx<'_>,
    m: &Modem<Box<dyn Transport>>,
    rec: &DeviceRecord,
    row: &CertRow,
) -> Target {
    let cert_pem = cert_pem_for_modem(&row.certificate_pem);
    Target {
        tag: rec.sec_tag,
        ca_tag: ctx.opts.ca_sec_tag.unwrap_or(rec.sec_tag),
        cert_sha: m.stored_sha256(&cert_pem).to_ascii_lowercase(),
        root_sha: m.stored_sha256(&ctx.root).to_ascii_lowercase(),
        cert_pem,
        serial: row.serial.clone(),
    }
}

fn list_slots(m: &mut Modem<Box<dyn Transport>>, t: &Target) -> Result<Slots, Fail> {
    let tag = m.cmng_list(t.tag)?;
    let ca = if t.ca_tag == t.tag {
        None
    } else {
        Some(m.cmng_list(t.ca_tag)?)
    };
    Ok(Slots { tag, ca })
}

/// Nothing to write: say so, and pin the CA of a device imported before CA pinning (the
/// certificate in place is this CA's).
fn already_imported(
    run: &PortRun<'_, '_>,
    mut rec: DeviceRecord,
    t: &Target,
) -> Result<DeviceResult, Fail> {
    let detail = format!(
        "already imported on {} (certificate {})",
        rec.imported_at.as_deref().unwrap_or("?"),
        t.serial
    );
    run.journal.note("decision", &detail);
    if rec.ca_sha256.is_none() {
        rec.ca_sha256 = Some(run.ctx.ca.sha256.clone());
        run.journal.commit(&rec)?;
    }
    Ok(DeviceResult {
        port: run.port.to_string(),
        imei: Some(rec.imei.clone()),
        uuid: rec.uuid.clone(),
        sec_tag: t.tag,
        status: Status::AlreadyDone,
        code: None,
        detail,
        next_step: None,
    })
}

/// Write the root CAs and the certificate where [`plan`] found them missing, in CFUN=4.
fn write_missing(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &mut Track,
    t: &Target,
    writes: Writes,
    cfun_now: u8,
) -> Result<(), Fail> {
    let imei = track.imei.clone();
    let imei_s = imei.as_deref();
    if (writes.root || writes.cert) && cfun_now != 4 {
        run.step(imei_s, "CFUN=4");
        track.cfun_changed = true;
        m.set_cfun(4)?;
    }
    if writes.root {
        run.step(imei_s, "write root CAs");
        m.cmng_write(t.ca_tag, 0, &run.ctx.root)?;
    } else {
        run.journal
            .note("skip", "root CA bundle already in place (SHA-256 matches)");
    }
    if writes.cert {
        run.step(imei_s, "write certificate");
        m.cmng_write(t.tag, 1, &t.cert_pem)?;
    } else {
        run.journal
            .note("skip", "certificate already in place (SHA-256 matches)");
    }
    Ok(())
}

/// Put back the functional mode found before export; a failure to do so is only noted (the
/// import itself is verified): the note to append to the result, or empty.
fn restore_cfun(
    run: &PortRun<'_, '_>,
    m: &mut Modem<Box<dyn Transport>>,
    track: &Track,
    cfun_now: u8,
    imei: &str,
) -> String {
    let target = track.restore_to.unwrap_or(cfun_now);
    let Some(mode) = cfun_to_restore(target, cfun_now, track.cfun_changed) else {
        return String::new();
    };
    run.step(Some(imei), &format!("CFUN={mode}"));
    match m.set_cfun(mode) {
        Ok(()) => String::new(),
        Err(e) => format!(
            " (could not restore CFUN={mode}: {}; set it by hand)",
            e.outcome_text()
        ),
    }
}
