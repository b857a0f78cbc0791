//! `bench export`: KEYGEN on every port in parallel, each KEYGEN string checked like `sign`
//! checks it, appended to the requests file (fsync'd) and recorded in the bench state.
//!
//! Per device (SPEC §6): `AT+CFUN?` (remembered for import), IMEI, firmware, model, list the
//! sec_tag; decide (skip / refuse / generate); `AT+CFUN=4`; with `--force` delete types 0, 1,
//! 2; `AT%KEYGEN=<tag>,2,0`; check; append; record. The state is written *before* KEYGEN is
//! sent (export-unknown), so a timeout, an unplug or a crash of the bench itself can never be
//! mistaken for "no key was made". Export leaves the device in CFUN=4 on success; import
//! restores the mode found before export.
//!
//! On an enrolled bench (`bench init`), every row names the bench as enrolled and, after the
//! run, `F.sig` is written beside the requests file `F`: the bench's signed statement over
//! the file as it then stands, quoting the newest checkpoint held per CA ([`super::evidence`]).

use super::at;
use super::claim;
use super::code::BenchCode;
use super::evidence::{self, StatementReport};
use super::identity::BenchIdentity;
use super::modem::{keygen_from_lines, Modem, ModemError};
use super::state::{now, Actor, DeviceRecord, DeviceState, State};
use super::transport::Transport;
use super::worker::{
    emit_step, error_code, open_serial, run_port, run_ports, BenchError, DeviceResult, Fail,
    Journal, Opener, PortSettings, Progress, Status, Track,
};
use crate::keygen::{self, CheckOptions, DeviceIdMode};
use crate::requests::{RequestRow, RequestWriter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What `bench export` does.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Serial ports, one device each.
    pub ports: Vec<String>,
    /// Requests CSV to create or append to.
    pub out: PathBuf,
    /// sec_tag for the key (default 16842753, nRF Cloud's).
    pub sec_tag: u32,
    /// Replace whatever key/certificate the slot holds (deletes types 0, 1, 2 first).
    pub force: bool,
    /// Bench state directory.
    pub state_dir: PathBuf,
    /// Operator name for the journal (default `$USER`).
    pub operator: Option<String>,
    /// Bench name for the requests file and journal (default: host name).
    pub bench_name: Option<String>,
    /// Serial settings, timeouts, reconnect policy.
    pub settings: PortSettings,
    /// What the CSR's CN names: the device UUID (default) or `nrf-<IMEI>`.
    pub device_id: DeviceId,
    /// Also gather `AT%ATTESTTOKEN` of every exported device into this CSV (the file
    /// `nrfcloud-utils`' `gather_attestation_tokens` writes, for claiming in nRF Cloud).
    pub claim_tokens: Option<PathBuf>,
}

/// What the certificate request names the device by (`--device-id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceId {
    /// `CN=<device UUID>`: plain `AT%KEYGEN=<tag>,2,0` (nRF Cloud's default).
    #[default]
    Uuid,
    /// `CN=nrf-<IMEI>`: `AT%KEYGEN=<tag>,2,0,"CN=nrf-<IMEI>"`, for fleets whose firmware
    /// connects as `nrf-<IMEI>`; sign the requests with `nrfca sign --device-id cn`.
    Imei,
}

impl DeviceId {
    /// The subject attributes to ask KEYGEN for (none for the UUID).
    pub fn keygen_attributes(self, imei: &str) -> Option<String> {
        match self {
            DeviceId::Uuid => None,
            DeviceId::Imei => Some(format!("CN=nrf-{imei}")),
        }
    }

    /// How the KEYGEN reply is checked (as `sign` will check it).
    pub fn check_mode(self) -> DeviceIdMode {
        match self {
            DeviceId::Uuid => DeviceIdMode::Uuid,
            DeviceId::Imei => DeviceIdMode::Cn,
        }
    }
}

impl ExportOptions {
    /// Options with the defaults for everything but ports and output.
    pub fn new(ports: Vec<String>, out: PathBuf) -> ExportOptions {
        ExportOptions {
            ports,
            out,
            sec_tag: keygen::DEFAULT_SEC_TAG,
            force: false,
            state_dir: PathBuf::from(super::state::DEFAULT_DIR),
            operator: None,
            bench_name: None,
            settings: PortSettings::default(),
            device_id: DeviceId::Uuid,
            claim_tokens: None,
        }
    }
}

/// What `bench export` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// The requests file.
    pub out: PathBuf,
    /// One result per port, in the order given.
    pub devices: Vec<DeviceResult>,
    /// Wall time.
    pub elapsed_ms: u128,
    /// The `requests.csv.sig` written after the run; `None` when the bench has no identity
    /// (`bench init` not run): `sign` refuses the file once the CA trusts a bench.
    pub signature: Option<StatementReport>,
}

impl ExportReport {
    /// Every device exported now or before.
    pub fn all_ok(&self) -> bool {
        self.devices.iter().all(|d| d.status.ok())
    }
    /// Rows appended in this run.
    pub fn exported(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.status == Status::Done)
            .count()
    }
}

/// Run export on every port in parallel.
pub fn export(opts: &ExportOptions, progress: Progress<'_>) -> Result<ExportReport, BenchError> {
    export_with(opts, progress, &open_serial)
}

struct Ctx<'a> {
    opts: &'a ExportOptions,
    state: Arc<State>,
    actor: Actor,
    writer: Mutex<RequestWriter>,
    progress: Progress<'a>,
}

pub(crate) fn export_with(
    opts: &ExportOptions,
    progress: Progress<'_>,
    opener: Opener<'_>,
) -> Result<ExportReport, BenchError> {
    if opts.ports.is_empty() {
        return Err(BenchError::Usage(
            "no ports given: pass --port for every device (see `nrfca bench ports`)".into(),
        ));
    }
    if opts.sec_tag > 2_147_483_647 {
        return Err(BenchError::Usage(format!(
            "sec_tag {} is reserved for the modem: use 0..2147483647 (nRF Cloud uses 16842753)",
            opts.sec_tag
        )));
    }
    let start = Instant::now();
    // An enrolled bench signs what it exports: its key must load before any modem is touched,
    // and its name is the `bench` of every row (`sign` refuses rows naming another bench).
    let identity = if BenchIdentity::exists(&opts.state_dir) {
        Some(BenchIdentity::load(&opts.state_dir).map_err(BenchError::Identity)?)
    } else {
        None
    };
    let bench_name = match (&identity, opts.bench_name.as_deref()) {
        (Some(id), Some(given)) if given != id.name() => {
            return Err(BenchError::Usage(format!(
                "--bench {given:?}: this bench is enrolled as {:?} (`nrfca bench init`), and its requests must name it so; drop --bench or give --bench {:?}",
                crate::util::term_escape(id.name()),
                crate::util::term_escape(id.name())
            )))
        }
        (Some(id), _) => Some(id.name()),
        (None, given) => given,
    };
    if let Some(name) = bench_name.filter(|_| identity.is_some()) {
        rows_name_bench(&opts.out, name)?;
    }
    let state = Arc::new(State::open(&opts.state_dir)?);
    let writer = RequestWriter::open(&opts.out).map_err(BenchError::Requests)?;
    let ctx = Ctx {
        opts,
        state: state.clone(),
        actor: Actor::resolve(opts.operator.as_deref(), bench_name),
        writer: Mutex::new(writer),
        progress,
    };
    let devices = run_ports(&opts.ports, opts.sec_tag, "export", |p| {
        export_port(&ctx, p, opener)
    });
    // Every row is fsync'd; close the writer, then sign the file as it now stands.
    drop(ctx);
    let signature = match &identity {
        Some(id) => {
            Some(evidence::write_statement(id, &state, &opts.out).map_err(BenchError::Statement)?)
        }
        None => None,
    };
    Ok(ExportReport {
        out: opts.out.clone(),
        devices,
        elapsed_ms: start.elapsed().as_millis(),
        signature,
    })
}

/// An enrolled bench signs the whole requests file it appends to: refuse (before any modem is
/// touched) a file holding rows written under another bench name, which `sign` would refuse.
fn rows_name_bench(out: &std::path::Path, name: &str) -> Result<(), BenchError> {
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

fn step(ctx: &Ctx<'_>, port: &str, imei: Option<&str>, what: &str) {
    emit_step(ctx.progress, port, imei, what);
}

fn export_port(ctx: &Ctx<'_>, port: &str, opener: Opener<'_>) -> DeviceResult {
    let journal = Journal::new(ctx.state.clone(), ctx.actor.clone(), port, "export");
    run_port(
        port,
        &ctx.opts.settings,
        opener,
        &journal,
        ctx.progress,
        |m, track| {
            let done = export_device(ctx, port, m, &journal, track)?;
            match &ctx.opts.claim_tokens {
                Some(file) => claim_token(ctx, port, m, &journal, file, done),
                None => Ok(done),
            }
        },
        |track, f| record_failure(ctx, port, &journal, track, f),
    )
}

fn record_failure(
    ctx: &Ctx<'_>,
    port: &str,
    journal: &Journal,
    track: &Track,
    f: Fail,
) -> DeviceResult {
    let tag = ctx.opts.sec_tag;
    let (code, detail, next, unknown) = f.parts();
    let mut status = if unknown {
        Status::Unknown
    } else {
        Status::Failed
    };
    if let Some(imei) = &track.imei {
        let existing = ctx.state.device(imei, tag).ok().flatten();
        let mut rec = match existing {
            // A device that was exported (or whose KEYGEN is unresolved) keeps its state; the
            // error is noted. Only a device with nothing exported becomes export-failed.
            Some(r) if r.state.has_exported_key() || r.state == DeviceState::ExportUnknown => r,
            Some(mut r) => {
                r.state = DeviceState::ExportFailed;
                r
            }
            None => {
                let mut r = DeviceRecord::new(imei, tag, DeviceState::ExportFailed);
                r.cfun_before = track.restore_to;
                r
            }
        };
        rec.note_error(port, &code, &detail);
        // Contact lost while nothing that could make a key was in flight: the device is
        // known to be export-failed, so report it as failed (as import does), not unknown.
        if rec.state == DeviceState::ExportFailed {
            status = Status::Failed;
        }
        journal.note("result", &format!("{}: {code}", rec.state));
        let _ = journal.commit(&rec);
    } else {
        journal.note(
            "result",
            &format!("failed before the IMEI was read: {code}"),
        );
    }
    DeviceResult {
        port: port.to_string(),
        imei: track.imei.clone(),
        uuid: track.uuid.clone(),
        sec_tag: tag,
        status,
        code: Some(code),
        detail,
        next_step: Some(next),
    }
}

/// `--claim-tokens`: after the device is exported (now or before), `AT%ATTESTTOKEN` into the
/// claim-token CSV, once per device UUID. A token that does not arrive fails the device alone
/// (`claim-token-missing`); its request stays valid and a re-run only gathers the token.
fn claim_token(
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
    match super::modem::uuid_from_attest_token(&token) {
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

/// What to do with a device after listing its slot.
enum Plan {
    Skip(String),
    Adopt(String),
    Keygen { delete: Vec<u8>, why: String },
}

/// Decide what to do with a device from its bench record and its slot listing (pure: no
/// modem, no state). A refusal comes back as the [`Fail`] to report.
fn plan(
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

/// One port's run of [`export_device`]: where its steps are reported and journaled.
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

/// The firmware must know `AT%KEYGEN` as export uses it (pure).
fn check_firmware(firmware: &str, model: &str) -> Result<(), Fail> {
    at::keygen_supported(firmware, model).map_err(|reason| Fail::Refused {
        code: BenchCode::OldFirmware,
        detail: reason,
        next: "update the modem firmware (nRF9160: mfw 1.3.0 or later; nRF91x1: 2.0.0 or later), then re-run".into(),
    })
}

/// What the modem said about itself, for the bench record.
struct Identity {
    imei: String,
    firmware: String,
    model: String,
}

/// The device's bench record as this run starts it (pure): the existing one, or a new one in
/// export-unknown; with the model, firmware and port seen now, and the functional mode to
/// restore unless one is recorded already.
fn device_record(
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
fn keygen_refused(e: &ModemError, attributes: bool) -> (BenchCode, String) {
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

fn export_device(
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

/// After KEYGEN (now, or adopted from an interrupted run): the reply passes the signer's
/// check, the key is in the slot, the request is appended once, the record says exported.
fn finish(
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

/// The record of a completed export (pure but for the time stamp): what was exported, and
/// nothing left of an earlier import or error.
fn mark_exported(
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
