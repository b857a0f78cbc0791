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

mod decide;
mod device;
mod request;

use super::evidence::{self, StatementReport};
use super::identity::BenchIdentity;
use super::state::{Actor, DeviceRecord, DeviceState, State};
use super::worker::{
    emit_step, open_serial, run_port, run_ports, BenchError, DeviceResult, Fail, Journal, Opener,
    PortSettings, Progress, Status, Track,
};
use crate::keygen::{self, DeviceIdMode};
use crate::requests::RequestWriter;
use device::{claim_token, export_device};
use request::rows_name_bench;
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
