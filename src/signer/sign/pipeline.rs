//! The batch proper, inside the caller's transaction, in stages over one [`Batch`] context:
//! **start** (the sink records `batch-started`; what `ca.db` already holds is read, [`Known`]),
//! the **reader** thread (requests in chunks, bounded by credits), the **workers** (per-string
//! checks, then signatures), the **coordinator** on this thread (policy in input order,
//! results in input order into the [`Sink`]), and **finish** (the sink records
//! `batch-committed` and a checkpoint; the report).
//!
//! ```text
//! reader ──Check(i)──► task queue ◄──Sign(i)── coordinator (this thread) ──► sink
//!   │                     │ N workers: keygen::check / issue::issue     ▲
//!   │                     └──────────Checked(i) / Signed(i)─────────────┤
//!   └──────────────Malformed(i)─────────────────────────────────────────┘
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::Scope;
use std::time::Instant;

use time::OffsetDateTime;

use super::crash::crash_point;
use super::sink::{IssuedOut, RejectOut, Sink, Summary};
use super::{
    SignError, SignEvent, SignOptions, SignReport, CHUNK, CHUNKS_IN_FLIGHT, MAX_RECORDED_REJECTS,
    PROGRESS_EVERY,
};
use crate::bundle::{self, BundleError, Counts, FileDigest};
use crate::keygen::{self, CheckOptions, DeviceIdMode, Verified};
use crate::reject::Reject;
use crate::requests::{Entry, InputDigest, RequestReader, RequestRow, RequestsError};
use crate::signer::ca::CaCert;
use crate::signer::db::{self, Connection};
use crate::signer::issue::{self, Issuance, IssueError, IssuedCert, IssuerProfile, Serial};
use crate::signer::key::{CaSigner, KeyError};
use crate::signer::policy::{
    self, BatchPolicy, DbLookup, Decision, FilteredLookup, KnownFilter, PreHashedState, Stored,
};

/// What every stage of one batch reads: the database (the batch transaction, or a plain
/// connection for a dry run), the CA, the options, the batch id and the validity.
pub(super) struct Batch<'a> {
    pub conn: &'a Connection,
    pub cert: &'a CaCert,
    pub opts: &'a SignOptions,
    pub id: &'a str,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `not_before` as stored (RFC 3339).
    pub nb_text: String,
    /// `not_after` as stored (RFC 3339).
    pub na_text: String,
    pub started: Instant,
    /// `provenance` for `batch-started` (SPEC §10), when benches are trusted or `--unsigned`.
    pub provenance: Option<&'a serde_json::Value>,
    /// `--expect`: the listed devices and the `expect` details of `batch-started`.
    pub expected: Option<&'a (
        std::sync::Arc<crate::signer::policy::ExpectedDevices>,
        serde_json::Value,
    )>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(
        conn: &'a Connection,
        plan: &'a super::Plan,
        opts: &'a SignOptions,
        started: Instant,
    ) -> Self {
        Batch {
            conn,
            cert: &plan.cert,
            opts,
            id: &plan.batch,
            not_before: plan.not_before,
            not_after: plan.not_after,
            nb_text: issue::rfc3339(plan.not_before),
            na_text: issue::rfc3339(plan.not_after),
            started,
            provenance: plan.evidence.provenance.as_ref(),
            expected: plan.expected.as_ref(),
        }
    }
}

/// What `ca.db` held when the batch started.
struct Known {
    /// No certificate at all: every lookup is a miss.
    empty: bool,
    /// A prefilter for the policy's lookups (see [`KnownFilter`]), when worth loading.
    filter: Option<KnownFilter>,
    /// The rowid the batch's first certificate row must get (the bundle is read back in
    /// rowid order after the commit; checked per insert, before the commit).
    first_rowid: i64,
}

impl Known {
    /// `expected`: the batch size guessed from the input size.
    fn load(conn: &Connection, expected: usize) -> Result<Known, SignError> {
        let db_rows = db::certificates::max_rowid(conn)?;
        let first_rowid = db_rows.max(0).checked_add(1).ok_or_else(|| {
            SignError::Internal("ca.db's certificate rowids are exhausted".into())
        })?;
        let filter = if KnownFilter::worth_it(db_rows.max(0) as u64, expected as u64) {
            Some(KnownFilter::load(conn)?)
        } else {
            None
        };
        Ok(Known {
            empty: db_rows == 0,
            filter,
            first_rowid,
        })
    }
}

/// What [`run`] hands back: the report, and where the batch's records are.
pub(super) struct Ran {
    pub report: SignReport,
    pub records: Records,
}

/// Where a batch's records are in `ca.db`, to read it back after the commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Records {
    /// The audit seqs of `batch-started` and `batch-committed` (0, 0 for a dry run).
    pub seqs: (u64, u64),
    /// The rowid the batch's first certificate row got (rows follow in input order).
    pub first_rowid: i64,
}

/// Run the batch into `sink`: start, stream (reader, workers, coordinator), finish.
pub(super) fn run<'k, S: Sink<'k>>(
    b: &Batch<'_>,
    sink: &mut S,
    progress: &mut dyn FnMut(SignEvent),
) -> Result<Ran, SignError> {
    let total_bytes = RequestReader::total_bytes(&b.opts.inputs);
    progress(SignEvent::Started {
        batch: b.id.to_string(),
        total_bytes,
        dry_run: b.opts.dry_run,
    });
    let first_seq = sink.start(b)?;
    // About 570 bytes per request line: the batch size, as a hint for the in-memory sets
    // (capped so a wrong guess costs little memory) and for the prefilter.
    let expected = ((total_bytes / 512) as usize).clamp(1, policy::MAX_PRESIZE);
    let known = Known::load(b.conn, expected)?;
    let first_rowid = known.first_rowid;
    let signing = sink.key().is_some();
    let mut coordinator = Coordinator {
        b,
        sink,
        signing,
        known,
        policy: BatchPolicy::with_capacity(b.opts.reissue, expected)
            .with_expected(b.expected.map(|(e, _)| std::sync::Arc::clone(e))),
        serials: HashSet::with_capacity_and_hasher(expected, PreHashedState::default()),
        random_pool: Vec::new(),
        counts: Counts::default(),
        reissued: 0,
        by_code: BTreeMap::new(),
        decided: 0,
        pem_names: b.opts.pem_files.then(HashSet::new),
        _key: std::marker::PhantomData,
    };
    let inputs = stream(b, &mut coordinator, progress)?;
    progress(SignEvent::Committing);
    finish(b, coordinator, &inputs, (first_seq, first_rowid))
}

/// The threads: one reader, the workers, and the coordinator on this thread. Returns the
/// digests of the inputs once every request is written.
fn stream<'k, S: Sink<'k>>(
    b: &Batch<'_>,
    coordinator: &mut Coordinator<'_, 'k, S>,
    progress: &mut dyn FnMut(SignEvent),
) -> Result<Vec<InputDigest>, SignError> {
    let profile = profile_of(b.cert);
    let check_opts = CheckOptions {
        sec_tag: b.opts.sec_tag,
        device_id: b.opts.device_id,
        imei: None,
    };
    let threads = b
        .opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 64);
    let key = coordinator.sink.key();
    let (task_tx, task_rx) = mpsc::channel::<Task>();
    let task_rx = Mutex::new(task_rx);
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(CHUNKS_IN_FLIGHT);
    let bytes_read = AtomicU64::new(0);
    std::thread::scope(|s| {
        spawn_reader(
            s,
            b.opts.inputs.clone(),
            task_tx.clone(),
            msg_tx.clone(),
            credit_tx,
            &bytes_read,
        );
        for _ in 0..threads {
            spawn_worker(s, &task_rx, msg_tx.clone(), &check_opts, &profile, key);
        }
        drop(msg_tx);
        // Dropping its channel ends on return stops the others.
        coordinator.drive(msg_rx, task_tx, credit_rx, &bytes_read, progress)
    })
}

/// The reader: chunks of [`CHUNK`] requests, one credit per chunk.
fn spawn_reader<'scope>(
    s: &'scope Scope<'scope, '_>,
    inputs: Vec<PathBuf>,
    task_tx: mpsc::Sender<Task>,
    msg_tx: mpsc::Sender<Msg>,
    credit_tx: mpsc::SyncSender<()>,
    bytes_read: &'scope AtomicU64,
) {
    s.spawn(move || {
        let mut reader = RequestReader::open(&inputs);
        let mut idx = 0u64;
        let mut chunk: Vec<(u64, Checked)> = Vec::with_capacity(CHUNK);
        loop {
            let entry = reader.next_entry();
            let end = entry.is_none();
            match entry {
                None => {}
                Some(Err(e)) => {
                    let _ = msg_tx.send(Msg::ReaderFailed(e));
                    return;
                }
                Some(Ok(Entry::Malformed(m))) => chunk.push((
                    idx,
                    Checked::Malformed {
                        source: m.source,
                        line: m.line,
                        device_uuid: m.device_uuid,
                        reject: m.reject,
                    },
                )),
                Some(Ok(Entry::Request(r))) => chunk.push((
                    idx,
                    Checked::Pending(Item {
                        source: r.source,
                        line: r.line,
                        keygen: r.keygen,
                        row: r.row,
                    }),
                )),
            }
            if !end {
                idx += 1;
            }
            if chunk.len() == CHUNK || (end && !chunk.is_empty()) {
                // Blocks while too many chunks are in flight; fails when the coordinator
                // stopped.
                if credit_tx.send(()).is_err() {
                    return;
                }
                bytes_read.store(reader.bytes_read(), Ordering::Relaxed);
                let c = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                if task_tx.send(Task::Check(c)).is_err() {
                    return;
                }
            }
            if end {
                break;
            }
        }
        bytes_read.store(reader.bytes_read(), Ordering::Relaxed);
        let _ = msg_tx.send(Msg::ReaderDone(idx, reader.digests().to_vec()));
    });
}

/// One worker: checks and signs whatever task comes next. `key` None: a dry run, which sends
/// no signing task. The worker asks the key for its own signer ([`CaSigner::worker`]) once, at
/// its first signing task (a PKCS#11 key opens one session per worker); a key failure stops
/// the worker and is sent as [`Msg::KeyFailed`] (the batch rolls back).
fn spawn_worker<'scope>(
    s: &'scope Scope<'scope, '_>,
    task_rx: &'scope Mutex<mpsc::Receiver<Task>>,
    msg_tx: mpsc::Sender<Msg>,
    check_opts: &'scope CheckOptions,
    profile: &'scope IssuerProfile,
    key: Option<&'scope dyn CaSigner>,
) {
    s.spawn(move || {
        let mut signer: Option<Box<dyn CaSigner + 'scope>> = None;
        loop {
            let task = match task_rx.lock() {
                Ok(rx) => match rx.recv() {
                    Ok(t) => t,
                    Err(_) => return,
                },
                Err(_) => return,
            };
            if let (Task::Sign(_), None, Some(k)) = (&task, &signer, key) {
                match k.worker() {
                    Ok(w) => signer = Some(w),
                    Err(e) => {
                        let _ = msg_tx.send(Msg::KeyFailed(e));
                        return;
                    }
                }
            }
            let signer = signer.as_deref();
            // A panic in a worker (a bug: parsers never panic on input) must not leave the
            // coordinator waiting for a chunk forever.
            let work = std::panic::AssertUnwindSafe(|| match task {
                Task::Check(chunk) => Msg::Checked(
                    chunk
                        .into_iter()
                        .map(|(i, c)| (i, check_one(c, check_opts)))
                        .collect(),
                ),
                Task::Sign(chunk) => sign_chunk(profile, chunk, signer),
            });
            let msg = std::panic::catch_unwind(work).unwrap_or_else(|_| {
                Msg::WorkerFailed("a worker thread panicked; please report this".into())
            });
            let stop = matches!(msg, Msg::KeyFailed(_));
            if msg_tx.send(msg).is_err() || stop {
                return;
            }
        }
    });
}

/// Sign one chunk with the worker's signer; the first key failure ends the chunk as
/// [`Msg::KeyFailed`].
fn sign_chunk(
    profile: &IssuerProfile,
    chunk: Vec<(u64, Issuance)>,
    signer: Option<&dyn CaSigner>,
) -> Msg {
    let mut out = Vec::with_capacity(chunk.len());
    for (i, iss) in chunk {
        let mut key_err: Option<KeyError> = None;
        let r = match signer {
            Some(k) => issue::issue(profile, &iss, |t| {
                k.sign_der(t).map_err(|e| {
                    let text = crate::error::error_chain(&e);
                    key_err = Some(e);
                    text
                })
            }),
            None => Err(IssueError::Sign("no key (dry run)".into())),
        };
        if let Some(e) = key_err {
            return Msg::KeyFailed(e);
        }
        out.push((i, r));
    }
    Msg::Signed(out)
}

/// Every request is written: the sink commits the batch's records; the report.
fn finish<'k, S: Sink<'k>>(
    b: &Batch<'_>,
    coordinator: Coordinator<'_, 'k, S>,
    inputs: &[InputDigest],
    (first_seq, first_rowid): (u64, i64),
) -> Result<Ran, SignError> {
    let Coordinator {
        sink,
        counts,
        reissued,
        by_code,
        ..
    } = coordinator;
    let input_digests: Vec<FileDigest> = inputs
        .iter()
        .map(|d| FileDigest {
            name: d.name.clone(),
            sha256: hex::encode(d.sha256),
        })
        .collect();
    if counts.requests == 0 {
        return Err(SignError::EmptyBatch);
    }
    let committed = sink.commit(
        b,
        &Summary {
            counts: &counts,
            by_code: &by_code,
            inputs: &input_digests,
        },
    )?;
    let report = SignReport {
        batch: b.id.to_string(),
        dry_run: b.opts.dry_run,
        requests: counts.requests,
        issued: counts.issued,
        returned: counts.returned,
        reissued,
        rejected: counts.rejected,
        rejects_by_code: by_code,
        bundle: None,
        ca_fingerprint: b.cert.fingerprint.clone(),
        audit_head: committed.head,
        inputs: input_digests,
        not_before: b.nb_text.clone(),
        not_after: b.na_text.clone(),
        elapsed_ms: b.started.elapsed().as_millis() as u64,
        removed_stale: Vec::new(),
        warnings: Vec::new(),
    };
    Ok(Ran {
        report,
        records: Records {
            seqs: (first_seq, committed.last_seq),
            first_rowid,
        },
    })
}

/// A request as it moves through the pipeline.
struct Item {
    source: String,
    line: u64,
    keygen: String,
    row: Option<RequestRow>,
}

/// Work for the pool, in chunks of up to [`CHUNK`] requests (fewer wake-ups).
enum Task {
    Check(Vec<(u64, Checked)>),
    Sign(Vec<(u64, Issuance)>),
}

enum Checked {
    Malformed {
        source: String,
        line: u64,
        device_uuid: Option<String>,
        reject: Reject,
    },
    /// Read, not yet checked.
    Pending(Item),
    Done(Item, Result<Box<Verified>, Reject>),
}

enum Msg {
    Checked(Vec<(u64, Checked)>),
    Signed(Vec<(u64, Result<IssuedCert, IssueError>)>),
    ReaderDone(u64, Vec<crate::requests::InputDigest>),
    ReaderFailed(RequestsError),
    WorkerFailed(String),
    /// The CA key failed in a worker (token removed, module error): the batch rolls back.
    KeyFailed(KeyError),
}

/// What the writer stage does with one request, in input order.
enum Outcome {
    Reject {
        source: String,
        line: u64,
        device_uuid: Option<String>,
        keygen_sha256: Option<String>,
        reject: Reject,
    },
    Return {
        stored: Box<Stored>,
    },
    /// Decided "issue", waiting for the worker's signature.
    Issue {
        item: Item,
        verified: Box<Verified>,
        reissue: bool,
        serial: Serial,
    },
}

/// SHA-256 of the KEYGEN text as `keygen::check` computes it (unwrapped), for rejects.
fn keygen_hash(s: &str) -> Option<String> {
    keygen::unwrap_line(s)
        .ok()
        .map(|t| crate::crypto::sha256_hex(t.as_bytes()))
}

fn imei_of(row: Option<&RequestRow>, device_id: &str) -> Option<String> {
    if let Some(r) = row {
        let i = r.imei.trim();
        if !i.is_empty() {
            return Some(i.to_string());
        }
    }
    device_id
        .strip_prefix("nrf-")
        .filter(|i| crate::util::is_imei(i))
        .map(str::to_string)
}

fn profile_of(cert: &CaCert) -> IssuerProfile {
    IssuerProfile {
        subject_der: cert.subject_der.clone(),
        ski: cert.ski.clone(),
        not_after: cert.not_after,
    }
}

/// A worker's per-string check of one read request.
fn check_one(c: Checked, opts: &CheckOptions) -> Checked {
    let Checked::Pending(item) = c else {
        return c;
    };
    let imei = item
        .row
        .as_ref()
        .map(|r| r.imei.trim())
        .filter(|s| !s.is_empty());
    let result = match imei {
        Some(imei) if opts.device_id == DeviceIdMode::Cn => {
            let o = CheckOptions {
                imei: Some(imei.to_string()),
                ..opts.clone()
            };
            keygen::check(&item.keygen, &o)
        }
        _ => keygen::check(&item.keygen, opts),
    };
    Checked::Done(item, result.map(Box::new))
}

/// The coordinator's state: policy in order, writes in order, into the sink.
struct Coordinator<'a, 'k, S: Sink<'k>> {
    b: &'a Batch<'a>,
    sink: &'a mut S,
    /// Whether accepted requests are signed (false: dry run).
    signing: bool,
    known: Known,
    policy: BatchPolicy,
    serials: HashSet<Serial, PreHashedState>,
    /// Unused random bytes for serials (not secret: serials are public).
    random_pool: Vec<u8>,
    counts: Counts,
    reissued: u64,
    by_code: BTreeMap<String, u64>,
    /// Requests decided so far (for the `checked` crash point).
    decided: u64,
    /// `--pem-files`: the device ids seen, so a name the bundle cannot hold (unsafe, or twice)
    /// fails the batch before the commit, not its bundle after it.
    pem_names: Option<HashSet<String>>,
    _key: std::marker::PhantomData<&'k ()>,
}

impl<'k, S: Sink<'k>> Coordinator<'_, 'k, S> {
    fn drive(
        &mut self,
        msg_rx: mpsc::Receiver<Msg>,
        task_tx: mpsc::Sender<Task>,
        credit_rx: mpsc::Receiver<()>,
        bytes_read: &std::sync::atomic::AtomicU64,
        progress: &mut dyn FnMut(SignEvent),
    ) -> Result<Vec<crate::requests::InputDigest>, SignError> {
        let mut checked: BTreeMap<u64, Checked> = BTreeMap::new();
        let mut next_policy = 0u64;
        let mut decided: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut signed: BTreeMap<u64, IssuedCert> = BTreeMap::new();
        let mut next_write = 0u64;
        let mut total: Option<(u64, Vec<crate::requests::InputDigest>)> = None;
        loop {
            if let Some((n, _)) = &total {
                if next_write == *n {
                    break;
                }
            }
            let msg = msg_rx.recv().map_err(|_| {
                SignError::Internal(
                    "a pipeline thread stopped before the batch was complete".into(),
                )
            })?;
            if let Some(sig) = crate::interrupt::requested() {
                return Err(SignError::Interrupted(sig));
            }
            match msg {
                Msg::ReaderFailed(e) => return Err(SignError::Requests(e)),
                Msg::WorkerFailed(m) => return Err(SignError::Internal(m)),
                Msg::KeyFailed(e) => return Err(SignError::Key(e)),
                Msg::ReaderDone(n, d) => total = Some((n, d)),
                Msg::Checked(chunk) => {
                    checked.extend(chunk);
                    let mut to_sign = Vec::new();
                    while let Some(c) = checked.remove(&next_policy) {
                        let outcome = self.decide(c)?;
                        if let Outcome::Issue {
                            verified, serial, ..
                        } = &outcome
                        {
                            if self.signing {
                                to_sign.push((
                                    next_policy,
                                    Issuance {
                                        device_id: verified.device_id.clone(),
                                        public_key: verified.public_key,
                                        serial: *serial,
                                        not_before: self.b.not_before,
                                        not_after: self.b.not_after,
                                    },
                                ));
                            }
                        }
                        decided.insert(next_policy, outcome);
                        next_policy += 1;
                    }
                    // Hand the signatures out in pieces so every worker gets some.
                    while !to_sign.is_empty() {
                        let rest = to_sign.split_off(to_sign.len().min(CHUNK / 2));
                        let piece = std::mem::replace(&mut to_sign, rest);
                        task_tx.send(Task::Sign(piece)).map_err(|_| {
                            SignError::Internal("the signing workers stopped".into())
                        })?;
                    }
                }
                Msg::Signed(chunk) => {
                    for (i, r) in chunk {
                        signed.insert(i, r?);
                    }
                }
            }
            // Write everything that is ready, in order.
            loop {
                let ready = match decided.get(&next_write) {
                    None => false,
                    Some(Outcome::Issue { .. }) => {
                        !self.signing || signed.contains_key(&next_write)
                    }
                    Some(_) => true,
                };
                if !ready {
                    break;
                }
                let Some(outcome) = decided.remove(&next_write) else {
                    break;
                };
                let cert = signed.remove(&next_write);
                self.write(outcome, cert)?;
                next_write += 1;
                // The reader sent one credit per full chunk.
                if next_write % CHUNK as u64 == 0 {
                    let _ = credit_rx.recv();
                }
                if next_write % PROGRESS_EVERY == 0 {
                    progress(SignEvent::Progress {
                        requests: next_write,
                        issued: self.counts.issued,
                        returned: self.counts.returned,
                        rejected: self.counts.rejected,
                        bytes_read: bytes_read.load(std::sync::atomic::Ordering::Relaxed),
                    });
                }
            }
        }
        drop(task_tx);
        progress(SignEvent::Progress {
            requests: next_write,
            issued: self.counts.issued,
            returned: self.counts.returned,
            rejected: self.counts.rejected,
            bytes_read: bytes_read.load(std::sync::atomic::Ordering::Relaxed),
        });
        Ok(total.map(|(_, d)| d).unwrap_or_default())
    }

    /// Run the batch policy on one checked request (in input order).
    fn decide(&mut self, c: Checked) -> Result<Outcome, SignError> {
        if self.signing {
            self.decided += 1;
            crash_point("checked", self.decided);
        }
        match c {
            Checked::Pending(_) => Err(SignError::Internal(
                "a request reached the policy unchecked".into(),
            )),
            Checked::Malformed {
                source,
                line,
                device_uuid,
                reject,
            } => Ok(Outcome::Reject {
                source,
                line,
                device_uuid,
                keygen_sha256: None,
                reject,
            }),
            Checked::Done(item, Err(reject)) => Ok(Outcome::Reject {
                keygen_sha256: keygen_hash(&item.keygen),
                // The attested UUID when the attestation parses (rejects are rare, so the
                // second parse costs nothing), else the row's column.
                device_uuid: keygen::parse(&item.keygen)
                    .ok()
                    .map(|p| p.uuid())
                    .or_else(|| {
                        // The column passed the reader's shape check (a UUID or empty);
                        // written in the canonical form.
                        item.row
                            .as_ref()
                            .and_then(|r| crate::util::parse_uuid(&r.device_uuid))
                            .map(|u| crate::util::uuid_string(&u))
                    }),
                source: item.source,
                line: item.line,
                reject,
            }),
            Checked::Done(item, Ok(v)) => {
                let mut lookup = FilteredLookup {
                    filter: self.known.filter.as_ref(),
                    empty: self.known.empty,
                    db: DbLookup::new(self.b.conn),
                };
                let d = self.policy.decide(&v, item.row.as_ref(), &mut lookup)?;
                match d {
                    Decision::Reject(reject) => Ok(Outcome::Reject {
                        source: item.source,
                        line: item.line,
                        device_uuid: Some(v.uuid.clone()),
                        keygen_sha256: Some(hex::encode(v.keygen_sha256)),
                        reject,
                    }),
                    Decision::Return(stored) => Ok(Outcome::Return { stored }),
                    Decision::Issue { reissue } => {
                        let serial = self.new_serial()?;
                        Ok(Outcome::Issue {
                            item,
                            verified: v,
                            reissue,
                            serial,
                        })
                    }
                }
            }
        }
    }

    /// A random serial unused in `ca.db` and in this batch.
    fn new_serial(&mut self) -> Result<Serial, SignError> {
        loop {
            // Random bytes come from the OS in blocks (one getrandom per 200 serials).
            if self.random_pool.len() < 20 {
                let mut block = vec![0u8; 20 * 200];
                crate::crypto::fill_random(&mut block)
                    .map_err(|_| SignError::Issue(IssueError::Rng))?;
                self.random_pool = block;
            }
            let mut b = [0u8; 20];
            let at = self.random_pool.len() - 20;
            b.copy_from_slice(&self.random_pool[at..]);
            self.random_pool.truncate(at);
            let Some(s) = Serial::from_random(b) else {
                continue;
            };
            if self.serials.contains(&s) {
                continue;
            }
            let hex = s.to_hex();
            let maybe_in_db = !self.known.empty
                && self
                    .known
                    .filter
                    .as_ref()
                    .map_or(true, |f| f.may_have_serial(&hex));
            if maybe_in_db && db::certificates::serial_exists(self.b.conn, &hex)? {
                continue;
            }
            self.serials.insert(s);
            return Ok(s);
        }
    }

    /// With `--pem-files`, `certs/<device_id>_crt.pem` must be a safe, new name.
    fn check_pem_name(&mut self, device_id: &str) -> Result<(), SignError> {
        let Some(names) = self.pem_names.as_mut() else {
            return Ok(());
        };
        if !bundle::is_safe_file_stem(device_id) || !names.insert(device_id.to_string()) {
            return Err(SignError::Bundle(BundleError::BadDeviceId(
                device_id.to_string(),
            )));
        }
        Ok(())
    }

    /// Record one decided request: ca.db rows, audit record, bundle rows.
    fn write(&mut self, outcome: Outcome, cert: Option<IssuedCert>) -> Result<(), SignError> {
        self.counts.requests += 1;
        if self.signing {
            crash_point("written", self.counts.requests);
        }
        match outcome {
            Outcome::Reject {
                source,
                line,
                device_uuid,
                keygen_sha256,
                reject,
            } => {
                self.counts.rejected += 1;
                *self
                    .by_code
                    .entry(reject.code.as_str().to_string())
                    .or_insert(0) += 1;
                let uuid = device_uuid.unwrap_or_default();
                // The first MAX_RECORDED_REJECTS rejects are recorded one by one; the rest
                // are counted in batch-committed (rejects.csv still lists every one).
                self.sink.reject(
                    self.b,
                    &RejectOut {
                        source: &source,
                        line,
                        device_uuid: &uuid,
                        code: reject.code.as_str(),
                        detail: &reject.detail,
                        keygen_sha256: keygen_sha256.as_deref(),
                        one_by_one: self.counts.rejected <= MAX_RECORDED_REJECTS,
                    },
                )?;
            }
            Outcome::Return { stored } => {
                self.counts.returned += 1;
                self.check_pem_name(&stored.device_id)?;
                self.sink.returned(self.b, &stored)?;
            }
            Outcome::Issue {
                item,
                verified,
                reissue,
                serial,
            } => {
                self.counts.issued += 1;
                if reissue {
                    self.reissued += 1;
                }
                let Some(cert) = cert else {
                    // Dry run: counted, nothing written.
                    return Ok(());
                };
                self.check_pem_name(&verified.device_id)?;
                let serial_hex = serial.to_hex();
                let keygen_hex = hex::encode(verified.keygen_sha256);
                let cert_hex = hex::encode(cert.pem_sha256);
                let imei = imei_of(item.row.as_ref(), &verified.device_id);
                self.sink.issued(
                    self.b,
                    &IssuedOut {
                        serial_hex: &serial_hex,
                        device_id: &verified.device_id,
                        uuid: &verified.uuid,
                        imei: imei.as_deref(),
                        sec_tag: verified.sec_tag,
                        public_key: &verified.public_key[..],
                        keygen_sha256: &keygen_hex,
                        cert_sha256: &cert_hex,
                        der: &cert.der,
                        reissue,
                        want_rowid: self.known.first_rowid + self.counts.issued as i64 - 1,
                    },
                )?;
            }
        }
        Ok(())
    }
}
