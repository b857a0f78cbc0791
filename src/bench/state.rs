//! The bench state directory `S/` (default `./nrfca-bench`): `S/bench.db`, SQLite with every
//! device the bench has seen and an append-only journal of what was sent to which device on
//! which port, by whom.
//!
//! Devices are keyed by (IMEI, sec_tag). The journal refuses UPDATE and DELETE (triggers).
//! `checkpoints` keeps every CA checkpoint (SPEC §11) the bench verified at `bench import`,
//! also append-only: the newest per CA is what the next bundle must extend and what
//! `bench export` quotes in `requests.csv.sig`.

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default state directory, relative to the working directory.
pub const DEFAULT_DIR: &str = "nrfca-bench";
/// Database file name inside the state directory.
pub const DB_FILE: &str = "bench.db";
/// Version 1 had no `ca_sha256` column (no CA pinned per device); version 2 no
/// `checkpoints` table. [`State::open`] migrates both.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    imei          TEXT NOT NULL,
    sec_tag       INTEGER NOT NULL,
    uuid          TEXT,
    public_key    TEXT,             -- uncompressed SEC1 point, lowercase hex
    keygen        TEXT,             -- the KEYGEN string (public: CSR + attestation)
    keygen_sha256 TEXT,
    key_sha256    TEXT,             -- SHA-256 the modem lists for the type-2 key
    model         TEXT,
    firmware      TEXT,
    port          TEXT,
    cfun_before   INTEGER,          -- functional mode found before the first export
    state         TEXT NOT NULL,
    error_code    TEXT,
    last_error    TEXT,
    requests_file TEXT,
    exported_at   TEXT,
    imported_at   TEXT,
    cert_serial   TEXT,
    cert_sha256   TEXT,
    root_sha256   TEXT,
    bundle        TEXT,
    updated_at    TEXT NOT NULL,
    ca_sha256     TEXT,             -- pinned CA: SHA-256 of the DER of the CA that issued the
                                    -- installed certificate (lowercase hex)
    PRIMARY KEY (imei, sec_tag)
);
CREATE TABLE IF NOT EXISTS journal (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    operator TEXT NOT NULL,
    bench    TEXT NOT NULL,
    port     TEXT NOT NULL,
    imei     TEXT,
    action   TEXT NOT NULL,
    command  TEXT NOT NULL,
    outcome  TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the bench journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the bench journal is append-only'); END;
CREATE TABLE IF NOT EXISTS checkpoints (
    origin     TEXT NOT NULL,       -- nrfca/<CA sha256 hex>
    size       INTEGER NOT NULL,    -- tree size
    checkpoint TEXT NOT NULL,       -- the exact signed `checkpoint` text (origin, size, root)
    signature  TEXT NOT NULL,       -- `checkpoint.sig` (base64 DER ECDSA by the CA key)
    bundle     TEXT NOT NULL,       -- the bundle it came in
    batch      TEXT NOT NULL,       -- that bundle's batch id
    adopted_at TEXT NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the bench checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the bench checkpoints are append-only'); END;
"#;

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    /// KEYGEN done, request row written: sign the requests file, then import.
    Exported,
    /// KEYGEN was in flight when contact was lost: a key may exist. Re-run export.
    ExportUnknown,
    /// Export did not complete or was refused (see the error): fix the cause, re-run export.
    ExportFailed,
    /// Root CAs and certificate written and verified by SHA-256. Done.
    Imported,
    /// A write was in flight when contact was lost. Re-run import.
    ImportUnknown,
    /// Import refused or failed (see the error): fix the cause, re-run import.
    ImportFailed,
}

impl DeviceState {
    /// Every state.
    pub const ALL: [DeviceState; 6] = [
        DeviceState::Exported,
        DeviceState::ExportUnknown,
        DeviceState::ExportFailed,
        DeviceState::Imported,
        DeviceState::ImportUnknown,
        DeviceState::ImportFailed,
    ];

    /// The stable kebab-case name stored in the database and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Exported => "exported",
            DeviceState::ExportUnknown => "export-unknown",
            DeviceState::ExportFailed => "export-failed",
            DeviceState::Imported => "imported",
            DeviceState::ImportUnknown => "import-unknown",
            DeviceState::ImportFailed => "import-failed",
        }
    }

    /// Parse [`DeviceState::as_str`].
    pub fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// What to do next with a device in this state.
    pub fn next_step(self) -> &'static str {
        match self {
            DeviceState::Exported => {
                "sign the requests file (`nrfca sign`), then `nrfca bench import`"
            }
            DeviceState::ExportUnknown => {
                "re-run `nrfca bench export` on its port: the slot is re-checked"
            }
            DeviceState::ExportFailed => "fix the reported cause, then re-run `nrfca bench export`",
            DeviceState::Imported => "done: the device can connect to nRF Cloud once onboarded",
            DeviceState::ImportUnknown => {
                "re-run `nrfca bench import` on its port: every write is re-verified"
            }
            DeviceState::ImportFailed => "fix the reported cause, then re-run `nrfca bench import`",
        }
    }

    /// Whether the key recorded at export is the device's current key.
    pub fn has_exported_key(self) -> bool {
        matches!(
            self,
            DeviceState::Exported
                | DeviceState::Imported
                | DeviceState::ImportUnknown
                | DeviceState::ImportFailed
        )
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device (IMEI + sec_tag) as the bench knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceRecord {
    /// 15-digit IMEI.
    pub imei: String,
    /// The sec_tag the key lives in.
    pub sec_tag: u32,
    /// Device UUID (nRF Cloud device id), from the attestation.
    pub uuid: Option<String>,
    /// Public key recorded at export (uncompressed SEC1, hex).
    pub public_key: Option<String>,
    /// The KEYGEN string (public data). Also kept for a timed-out KEYGEN whose reply arrived.
    pub keygen: Option<String>,
    /// SHA-256 of the KEYGEN string (hex).
    pub keygen_sha256: Option<String>,
    /// SHA-256 the modem lists for the type-2 key slot after KEYGEN.
    pub key_sha256: Option<String>,
    /// `AT+CGMM`.
    pub model: Option<String>,
    /// `AT+CGMR`.
    pub firmware: Option<String>,
    /// Last port the device was seen on.
    pub port: Option<String>,
    /// Functional mode found before the first export; import restores it.
    pub cfun_before: Option<u8>,
    /// Where it stands.
    pub state: DeviceState,
    /// Short machine-readable failure code (e.g. `old-firmware`, `slot-occupied`, `cme-515`).
    pub error_code: Option<String>,
    /// Last error, with what to do.
    pub last_error: Option<String>,
    /// Requests file the row was written to.
    pub requests_file: Option<String>,
    /// When the request was exported (RFC 3339 UTC).
    pub exported_at: Option<String>,
    /// When the certificate was imported.
    pub imported_at: Option<String>,
    /// Certificate serial (lowercase hex).
    pub cert_serial: Option<String>,
    /// SHA-256 of the certificate PEM written (lowercase hex).
    pub cert_sha256: Option<String>,
    /// SHA-256 of the root CA bundle written (lowercase hex).
    pub root_sha256: Option<String>,
    /// Bundle directory the certificate came from.
    pub bundle: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// The pinned CA: SHA-256 (lowercase hex) of the DER of the CA certificate that issued the
    /// certificate installed and verified on the device. Import refuses a certificate of
    /// another CA unless `--force` (journaled). `None`: nothing installed yet, or installed
    /// by an nrfca that did not pin (state schema 1).
    pub ca_sha256: Option<String>,
}

impl DeviceRecord {
    /// Note a failure seen on `port`: its code and the message saying what to do.
    pub fn note_error(&mut self, port: &str, code: &str, detail: &str) {
        self.error_code = Some(code.to_string());
        self.last_error = Some(detail.to_string());
        self.port = Some(port.to_string());
    }

    /// A fresh record in `state`.
    pub fn new(imei: &str, sec_tag: u32, state: DeviceState) -> DeviceRecord {
        DeviceRecord {
            imei: imei.to_string(),
            sec_tag,
            uuid: None,
            public_key: None,
            keygen: None,
            keygen_sha256: None,
            key_sha256: None,
            model: None,
            firmware: None,
            port: None,
            cfun_before: None,
            state,
            error_code: None,
            last_error: None,
            requests_file: None,
            exported_at: None,
            imported_at: None,
            cert_serial: None,
            cert_sha256: None,
            root_sha256: None,
            bundle: None,
            updated_at: now(),
            ca_sha256: None,
        }
    }
}

/// One journal row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JournalEntry {
    /// Sequence number (assigned by the database; 0 before insertion).
    pub seq: i64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Who ran the bench (`--operator`, else `$USER`).
    pub operator: String,
    /// Bench machine name.
    pub bench: String,
    /// Serial port.
    pub port: String,
    /// IMEI once known.
    pub imei: Option<String>,
    /// `export`, `import`, …
    pub action: String,
    /// The AT command (summarised, never a secret) or a step name.
    pub command: String,
    /// `OK`, an error, a decision.
    pub outcome: String,
}

/// The bench state could not be read or written. Display is this layer's sentence; the OS or
/// SQLite error is the `source()` (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Creating the directory failed.
    #[error("cannot create the bench state directory {} (check permissions or pass --state)", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `status` on a directory without `bench.db`.
    #[error("no bench state in {} (no {DB_FILE}): pass --state with the directory export used", path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// SQLite failed (unreadable, locked, corrupt).
    #[error("bench state {} is unreadable (is another nrfca running? restore the directory from backup if it is corrupt)", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A row holds a value this version does not understand.
    #[error("bench state {} is corrupt: {detail} (restore the directory from backup)", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What.
        detail: String,
    },
}

/// Current time, RFC 3339 UTC, second precision.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The open bench state; shareable between port threads.
#[derive(Debug)]
pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const COLUMNS: &str = "imei, sec_tag, uuid, public_key, keygen, keygen_sha256, key_sha256, model, \
    firmware, port, cfun_before, state, error_code, last_error, requests_file, exported_at, \
    imported_at, cert_serial, cert_sha256, root_sha256, bundle, updated_at, ca_sha256";

impl State {
    /// Open (creating if needed) the state in `dir`.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::open_db(dir.join(DB_FILE))
    }

    /// Open an existing state (for `status`); an absent database is an error.
    pub fn open_existing(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StateError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Self::open_db(path)
    }

    fn open_db(path: PathBuf) -> Result<State, StateError> {
        let db = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )
                .map_err(db)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) if v == "1" || v == "2" => migrate(&conn).map_err(db)?,
            Some(v) => {
                return Err(StateError::Corrupt {
                    path,
                    detail: format!("schema version {v}, this nrfca understands {SCHEMA_VERSION}"),
                })
            }
        }
        Ok(State {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error>,
    ) -> Result<R, StateError> {
        let conn = match self.conn.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&conn).map_err(|source| StateError::Db {
            path: self.path.clone(),
            source,
        })
    }

    /// The record of (imei, sec_tag).
    pub fn device(&self, imei: &str, sec_tag: u32) -> Result<Option<DeviceRecord>, StateError> {
        let rows = self.query(
            &format!("SELECT {COLUMNS} FROM devices WHERE imei = ?1 AND sec_tag = ?2"),
            params![imei, sec_tag],
        )?;
        Ok(rows.into_iter().next())
    }

    /// Every record of one IMEI (one per sec_tag).
    pub fn devices_by_imei(&self, imei: &str) -> Result<Vec<DeviceRecord>, StateError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM devices WHERE imei = ?1 ORDER BY sec_tag"),
            params![imei],
        )
    }

    /// Every device, by IMEI.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StateError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM devices ORDER BY imei, sec_tag"),
            params![],
        )
    }

    fn query(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DeviceRecord>, StateError> {
        let raw = self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                    ),
                    (
                        r.get::<_, String>(11)?,
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, Option<String>>(13)?,
                        r.get::<_, Option<String>>(14)?,
                        r.get::<_, Option<String>>(15)?,
                        r.get::<_, Option<String>>(16)?,
                        r.get::<_, Option<String>>(17)?,
                        r.get::<_, Option<String>>(18)?,
                        r.get::<_, Option<String>>(19)?,
                        r.get::<_, Option<String>>(20)?,
                        r.get::<_, String>(21)?,
                        r.get::<_, Option<String>>(22)?,
                    ),
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        let mut out = Vec::with_capacity(raw.len());
        for (a, b) in raw {
            let corrupt = |detail: String| StateError::Corrupt {
                path: self.path.clone(),
                detail,
            };
            let state = DeviceState::parse(&b.0)
                .ok_or_else(|| corrupt(format!("unknown device state {:?}", b.0)))?;
            let sec_tag =
                u32::try_from(a.1).map_err(|_| corrupt(format!("sec_tag {} out of range", a.1)))?;
            let cfun_before = match a.10 {
                Some(v) => Some(
                    u8::try_from(v)
                        .map_err(|_| corrupt(format!("cfun_before {v} out of range")))?,
                ),
                None => None,
            };
            out.push(DeviceRecord {
                imei: a.0,
                sec_tag,
                uuid: a.2,
                public_key: a.3,
                keygen: a.4,
                keygen_sha256: a.5,
                key_sha256: a.6,
                model: a.7,
                firmware: a.8,
                port: a.9,
                cfun_before,
                state,
                error_code: b.1,
                last_error: b.2,
                requests_file: b.3,
                exported_at: b.4,
                imported_at: b.5,
                cert_serial: b.6,
                cert_sha256: b.7,
                root_sha256: b.8,
                bundle: b.9,
                updated_at: b.10,
                ca_sha256: b.11,
            });
        }
        Ok(out)
    }

    /// Insert or replace the record (the caller read it first and changed what it knows).
    pub fn put(&self, rec: &DeviceRecord) -> Result<(), StateError> {
        self.with(|c| put_rec(c, rec))
    }

    /// Insert or replace the record and append journal rows `(command, outcome)`, in one
    /// transaction.
    pub fn put_with_journal(
        &self,
        rec: &DeviceRecord,
        who: &Actor,
        port: &str,
        imei: Option<&str>,
        action: &str,
        rows: &[(String, String)],
    ) -> Result<(), StateError> {
        let t = now();
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for (command, outcome) in rows {
                insert_journal(&tx, &t, who, port, imei, action, command, outcome)?;
            }
            put_rec(&tx, rec)?;
            tx.commit()
        })
    }

    /// Append several journal rows `(command, outcome)` in one transaction.
    pub fn journal_many(
        &self,
        who: &Actor,
        port: &str,
        imei: Option<&str>,
        action: &str,
        rows: &[(String, String)],
    ) -> Result<(), StateError> {
        let t = now();
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for (command, outcome) in rows {
                insert_journal(&tx, &t, who, port, imei, action, command, outcome)?;
            }
            tx.commit()
        })
    }

    /// Append one journal row (never updated or deleted).
    pub fn journal(
        &self,
        who: &Actor,
        port: &str,
        imei: Option<&str>,
        action: &str,
        command: &str,
        outcome: &str,
    ) -> Result<(), StateError> {
        let t = now();
        self.with(|c| {
            c.execute(
                "INSERT INTO journal(time, operator, bench, port, imei, action, command, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t,
                    who.operator,
                    who.bench,
                    port,
                    imei,
                    action,
                    command,
                    outcome
                ],
            )
            .map(|_| ())
        })
    }

    /// Journal rows, oldest first; only those of `imei` when given.
    pub fn journal_entries(&self, imei: Option<&str>) -> Result<Vec<JournalEntry>, StateError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, time, operator, bench, port, imei, action, command, outcome \
                 FROM journal WHERE ?1 IS NULL OR imei = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![imei], |r| {
                Ok(JournalEntry {
                    seq: r.get(0)?,
                    time: r.get(1)?,
                    operator: r.get(2)?,
                    bench: r.get(3)?,
                    port: r.get(4)?,
                    imei: r.get(5)?,
                    action: r.get(6)?,
                    command: r.get(7)?,
                    outcome: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Keep a checkpoint verified at `bench import` (signature by the trusted CA, consistency
    /// with [`AdoptCheckpoint::from`], the newest one held then) and journal its adoption
    /// (action `checkpoint`), in one IMMEDIATE transaction. Adopting a checkpoint already held
    /// (same origin, size and root) changes nothing. When the newest held checkpoint is no
    /// longer `from` (another import adopted one meanwhile), the new one was not checked
    /// against it and is not kept ([`Adoption::Superseded`], journaled). A held checkpoint of
    /// the same size with another root is refused (`Corrupt`): the caller must have refused it
    /// as not extending the log.
    pub fn adopt_checkpoint(
        &self,
        adopted: &AdoptCheckpoint<'_>,
        who: &Actor,
    ) -> Result<Adoption, StateError> {
        let cp = &adopted.signed.checkpoint;
        let size = i64::try_from(cp.size).map_err(|_| StateError::Corrupt {
            path: self.path.clone(),
            detail: format!("tree size {} out of range", cp.size),
        })?;
        let from_text = adopted.from.map(Checkpoint::to_text);
        let t = now();
        let outcome = self.with(|c| {
            let tx = rusqlite::Transaction::new_unchecked(
                c,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT checkpoint FROM checkpoints WHERE origin = ?1 AND size = ?2",
                    params![cp.origin, size],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(text) = existing {
                return Ok(if text == adopted.signed.text {
                    Adoption::AlreadyHeld
                } else {
                    Adoption::Conflict
                });
            }
            let newest: Option<(String, i64)> = tx
                .query_row(
                    "SELECT checkpoint, size FROM checkpoints WHERE origin = ?1 \
                     ORDER BY size DESC LIMIT 1",
                    params![cp.origin],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (adoption, outcome) = match newest {
                Some((text, n)) if Some(&text) != from_text.as_ref() => (
                    Adoption::Superseded(u64::try_from(n).unwrap_or(0)),
                    format!(
                        "not adopted: {cp} was checked against another checkpoint than the newest held now (size {n}, adopted meanwhile); import the bundle again to check it against that"
                    ),
                ),
                _ => {
                    tx.execute(
                        "INSERT INTO checkpoints(origin, size, checkpoint, signature, bundle, batch, adopted_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            cp.origin,
                            size,
                            adopted.signed.text,
                            adopted.signed.sig_file().trim_end(),
                            adopted.bundle,
                            adopted.batch,
                            t
                        ],
                    )?;
                    (
                        Adoption::Adopted,
                        format!("adopted {cp} from bundle {}", adopted.bundle),
                    )
                }
            };
            insert_journal(
                &tx,
                &t,
                who,
                "-",
                None,
                "checkpoint",
                &format!("verify {}", adopted.verified),
                &outcome,
            )?;
            tx.commit()?;
            Ok(adoption)
        })?;
        if outcome == Adoption::Conflict {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "a checkpoint of {} at size {} with another root is already held",
                    cp.origin, cp.size
                ),
            });
        }
        Ok(outcome)
    }

    /// The newest (largest) checkpoint held for the CA with certificate SHA-256
    /// `ca_sha256_hex`, if the bench ever verified one.
    pub fn newest_checkpoint(
        &self,
        ca_sha256_hex: &str,
    ) -> Result<Option<HeldCheckpoint>, StateError> {
        let origin = crate::checkpoint::origin_for(ca_sha256_hex);
        Ok(self
            .query_checkpoints(
                "SELECT checkpoint, signature, bundle, batch, adopted_at FROM checkpoints \
                 WHERE origin = ?1 ORDER BY size DESC LIMIT 1",
                params![origin],
            )?
            .into_iter()
            .next())
    }

    /// The newest checkpoint held per CA, sorted by origin: what `bench export` quotes in
    /// `requests.csv.sig`.
    pub fn newest_checkpoints(&self) -> Result<Vec<HeldCheckpoint>, StateError> {
        self.query_checkpoints(
            "SELECT c.checkpoint, c.signature, c.bundle, c.batch, c.adopted_at FROM checkpoints c \
             WHERE c.size = (SELECT MAX(size) FROM checkpoints d WHERE d.origin = c.origin) \
             ORDER BY c.origin",
            params![],
        )
    }

    /// Whether exactly `cp` (origin, size and root) was adopted at some time: an older
    /// bundle of the same log, imported again.
    pub fn holds_checkpoint(&self, cp: &Checkpoint) -> Result<bool, StateError> {
        let size = i64::try_from(cp.size).unwrap_or(i64::MAX);
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT checkpoint FROM checkpoints WHERE origin = ?1 AND size = ?2",
                params![cp.origin, size],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(text.is_some_and(|t| t == cp.to_text()))
    }

    fn query_checkpoints(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<HeldCheckpoint>, StateError> {
        let raw = self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        raw.into_iter()
            .map(|(text, signature, bundle, batch, adopted_at)| {
                let checkpoint =
                    Checkpoint::parse(text.as_bytes()).map_err(|e| StateError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("a held checkpoint is unreadable: {e}"),
                    })?;
                Ok(HeldCheckpoint {
                    checkpoint,
                    signature,
                    bundle,
                    batch,
                    adopted_at,
                })
            })
            .collect()
    }
}

/// A checkpoint to keep: verified, with where it came from.
#[derive(Debug, Clone)]
pub struct AdoptCheckpoint<'a> {
    /// The checkpoint with its CA signature (verified by the caller).
    pub signed: &'a SignedCheckpoint,
    /// The bundle directory it came in.
    pub bundle: &'a str,
    /// That bundle's batch id.
    pub batch: &'a str,
    /// What was verified, for the journal (e.g. `consistency from size 12`).
    pub verified: &'a str,
    /// The newest checkpoint held when it was verified (`None`: none was held).
    pub from: Option<&'a Checkpoint>,
}

/// What [`State::adopt_checkpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adoption {
    /// Kept: it is now the newest held for its CA.
    Adopted,
    /// Already held: nothing changed.
    AlreadyHeld,
    /// Not kept: another checkpoint (of this size) was adopted after the verification.
    Superseded(u64),
    /// Internal: a held checkpoint of the same size has another root.
    Conflict,
}

/// A checkpoint the bench verified and keeps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldCheckpoint {
    /// The checkpoint.
    #[serde(serialize_with = "ser_checkpoint")]
    pub checkpoint: Checkpoint,
    /// Its `checkpoint.sig` (base64 DER ECDSA by the CA key).
    pub signature: String,
    /// The bundle it came in.
    pub bundle: String,
    /// That bundle's batch id.
    pub batch: String,
    /// When it was adopted (RFC 3339 UTC).
    pub adopted_at: String,
}

fn ser_checkpoint<S: serde::Serializer>(cp: &Checkpoint, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Checkpoint", 3)?;
    st.serialize_field("origin", &cp.origin)?;
    st.serialize_field("size", &cp.size)?;
    st.serialize_field("root", &crate::crypto::b64_encode(&cp.root))?;
    st.end()
}

/// State schema 1 or 2 → 3, in one transaction. 1 → 2: the `ca_sha256` column (the CA
/// pinned per device). Devices imported before it have none: their CA is unknown, and import
/// treats a different certificate for them as a change of CA (`ca-unpinned`, `--force` to
/// accept). 2 → 3: the `checkpoints` table (created empty by the schema itself): until the
/// bench has verified a checkpoint of a CA, a bundle without one still imports, with a warning.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    // IMMEDIATE: another nrfca opening the same state waits instead of failing to upgrade.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let version: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if !matches!(version.as_deref(), Some("1") | Some("2")) {
        return Ok(());
    }
    let has_column: bool = tx
        .prepare("SELECT 1 FROM pragma_table_info('devices') WHERE name = 'ca_sha256'")?
        .exists([])?;
    if !has_column {
        tx.execute_batch("ALTER TABLE devices ADD COLUMN ca_sha256 TEXT;")?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema'",
        params![SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()
}

fn put_rec(c: &Connection, rec: &DeviceRecord) -> Result<(), rusqlite::Error> {
    let now = now();
    c.execute(
        &format!(
            "INSERT OR REPLACE INTO devices ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
        ),
        params![
            rec.imei,
            rec.sec_tag,
            rec.uuid,
            rec.public_key,
            rec.keygen,
            rec.keygen_sha256,
            rec.key_sha256,
            rec.model,
            rec.firmware,
            rec.port,
            rec.cfun_before,
            rec.state.as_str(),
            rec.error_code,
            rec.last_error,
            rec.requests_file,
            rec.exported_at,
            rec.imported_at,
            rec.cert_serial,
            rec.cert_sha256,
            rec.root_sha256,
            rec.bundle,
            now,
            rec.ca_sha256,
        ],
    )
    .map(|_| ())
}

#[allow(clippy::too_many_arguments)]
fn insert_journal(
    c: &Connection,
    t: &str,
    who: &Actor,
    port: &str,
    imei: Option<&str>,
    action: &str,
    command: &str,
    outcome: &str,
) -> Result<(), rusqlite::Error> {
    c.execute(
        "INSERT INTO journal(time, operator, bench, port, imei, action, command, outcome) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t,
            who.operator,
            who.bench,
            port,
            imei,
            action,
            command,
            outcome
        ],
    )
    .map(|_| ())
}

/// Who is running the bench, for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Operator name.
    pub operator: String,
    /// Bench machine name.
    pub bench: String,
}

impl Actor {
    /// `operator` by the audit log's rule ([`crate::util::operator_name`]: the flag, `$USER`,
    /// `$LOGNAME`, the login name of the user id, `unknown`); `bench` if given, else the host name.
    pub fn resolve(operator: Option<&str>, bench: Option<&str>) -> Actor {
        let operator = crate::util::operator_name(operator);
        let bench = bench
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "bench".into());
        Actor { operator, bench }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_append_only_journal() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join("S")).unwrap();
        let mut r = DeviceRecord::new("352656109480783", 16842753, DeviceState::Exported);
        r.cfun_before = Some(1);
        r.public_key = Some("04ab".into());
        s.put(&r).unwrap();
        let got = s.device("352656109480783", 16842753).unwrap().unwrap();
        assert_eq!(got.state, DeviceState::Exported);
        assert_eq!(got.cfun_before, Some(1));
        assert_eq!(got.public_key.as_deref(), Some("04ab"));
        assert!(s.device("352656109480783", 1).unwrap().is_none());

        let who = Actor {
            operator: "alice".into(),
            bench: "b1".into(),
        };
        s.journal(
            &who,
            "/dev/ttyACM0",
            Some("352656109480783"),
            "export",
            "AT+CFUN=4",
            "OK",
        )
        .unwrap();
        s.journal(&who, "/dev/ttyACM0", None, "export", "AT", "timeout")
            .unwrap();
        assert_eq!(s.journal_entries(None).unwrap().len(), 2);
        assert_eq!(s.journal_entries(Some("352656109480783")).unwrap().len(), 1);

        // Append-only: the database itself refuses edits.
        let conn = Connection::open(s.path()).unwrap();
        assert!(conn
            .execute("UPDATE journal SET outcome = 'x'", [])
            .is_err());
        assert!(conn.execute("DELETE FROM journal", []).is_err());
        drop(s);
        // Reopen works and keeps everything.
        let s = State::open_existing(&dir.path().join("S")).unwrap();
        assert_eq!(s.devices().unwrap().len(), 1);
    }

    #[test]
    fn missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let e = State::open_existing(dir.path()).unwrap_err();
        assert!(e.to_string().contains("--state"));
        std::fs::write(
            dir.path().join(DB_FILE),
            b"this is not sqlite at all, not at all....",
        )
        .unwrap();
        let e = State::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Db { .. }), "{e}");
        let dir2 = tempfile::tempdir().unwrap();
        let s = State::open(dir2.path()).unwrap();
        let conn = Connection::open(s.path()).unwrap();
        conn.execute(
            "INSERT INTO devices(imei, sec_tag, state, updated_at) VALUES ('1', 1, 'bogus', 'x')",
            [],
        )
        .unwrap();
        assert!(matches!(s.devices(), Err(StateError::Corrupt { .. })));
    }

    /// A state written by nrfca before CA pinning (schema 1, no `ca_sha256`) opens, gains
    /// the column (empty: the CA of what it installed is unknown) and keeps every row.
    #[test]
    fn schema_1_gains_the_ca_pin_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let c = Connection::open(&path).unwrap();
            let v1 = SCHEMA.replace(
                "    ca_sha256     TEXT,             -- pinned CA: SHA-256 of the DER of the CA that issued the\n                                    -- installed certificate (lowercase hex)\n",
                "",
            );
            assert!(!v1.contains("ca_sha256"));
            c.execute_batch(&v1).unwrap();
            c.execute_batch(
                "INSERT INTO meta(key, value) VALUES ('schema', '1');
                 INSERT INTO devices(imei, sec_tag, state, cert_sha256, updated_at)
                 VALUES ('352656109480783', 16842753, 'imported', 'ab', 't');",
            )
            .unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        let r = s.device("352656109480783", 16842753).unwrap().unwrap();
        assert_eq!(r.state, DeviceState::Imported);
        assert_eq!(r.cert_sha256.as_deref(), Some("ab"));
        assert_eq!(r.ca_sha256, None);
        let mut r2 = r.clone();
        r2.ca_sha256 = Some("cd".into());
        s.put(&r2).unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        let r = s.device("352656109480783", 16842753).unwrap().unwrap();
        assert_eq!(r.ca_sha256.as_deref(), Some("cd"));
        let v: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION.to_string());
    }

    fn signed(fp: &str, size: u64, salt: u8) -> SignedCheckpoint {
        let cp = Checkpoint::new(fp, size, crate::crypto::sha256(&[salt, size as u8])).unwrap();
        cp.sign(|m| Ok::<_, String>(m.to_vec())).unwrap()
    }

    /// Checkpoints: the newest per CA, the history, idempotent adoption, a different root at
    /// a held size refused, append-only, adoption journaled.
    #[test]
    fn checkpoints_held_per_ca() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        assert!(s.newest_checkpoint(&a).unwrap().is_none());
        assert!(s.newest_checkpoints().unwrap().is_empty());
        let who = Actor {
            operator: "t".into(),
            bench: "b".into(),
        };
        let adopt_from = |c: &SignedCheckpoint, from: Option<Checkpoint>| {
            s.adopt_checkpoint(
                &AdoptCheckpoint {
                    signed: c,
                    bundle: "bundle1",
                    batch: "batch1",
                    verified: "test",
                    from: from.as_ref(),
                },
                &who,
            )
        };
        let (a5, a9, b3) = (signed(&a, 5, 1), signed(&a, 9, 1), signed(&b, 3, 2));
        let adopt = |c: &SignedCheckpoint, from: Option<&SignedCheckpoint>| {
            let from = from.map(|f| f.checkpoint.clone());
            adopt_from(c, from)
        };
        assert_eq!(adopt(&a5, None).unwrap(), Adoption::Adopted);
        // Checked against nothing while a5 was already held: not kept.
        assert_eq!(adopt(&a9, None).unwrap(), Adoption::Superseded(5));
        assert_eq!(adopt(&a9, Some(&a5)).unwrap(), Adoption::Adopted);
        assert_eq!(adopt(&a9, Some(&a5)).unwrap(), Adoption::AlreadyHeld);
        assert_eq!(adopt(&b3, None).unwrap(), Adoption::Adopted);
        assert!(matches!(
            adopt(&signed(&a, 9, 7), Some(&a9)),
            Err(StateError::Corrupt { .. })
        ));
        let newest = s.newest_checkpoint(&a).unwrap().unwrap();
        assert_eq!(newest.checkpoint, a9.checkpoint);
        assert_eq!(newest.bundle, "bundle1");
        let all: Vec<Checkpoint> = s
            .newest_checkpoints()
            .unwrap()
            .into_iter()
            .map(|h| h.checkpoint)
            .collect();
        assert_eq!(all, [a9.checkpoint.clone(), b3.checkpoint.clone()]);
        assert!(s.holds_checkpoint(&a5.checkpoint).unwrap());
        assert!(!s.holds_checkpoint(&signed(&a, 5, 3).checkpoint).unwrap());
        assert!(!s.holds_checkpoint(&signed(&a, 6, 1).checkpoint).unwrap());
        let j = s.journal_entries(None).unwrap();
        assert_eq!(j.len(), 4);
        assert!(j[1].outcome.starts_with("not adopted"), "{:?}", j[1]);
        assert!(j.iter().all(|e| e.action == "checkpoint"));
        let conn = Connection::open(s.path()).unwrap();
        assert!(conn.execute("DELETE FROM checkpoints", []).is_err());
        assert!(conn.execute("UPDATE checkpoints SET size = 1", []).is_err());
    }

    /// A state of schema 2 (no checkpoints table) opens as schema 3 with no checkpoint held.
    #[test]
    fn schema_2_gains_the_checkpoints_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let c = Connection::open(&path).unwrap();
            let v2 = &SCHEMA[..SCHEMA
                .find("CREATE TABLE IF NOT EXISTS checkpoints")
                .unwrap()];
            c.execute_batch(v2).unwrap();
            c.execute_batch(
                "INSERT INTO meta(key, value) VALUES ('schema', '2');
                 INSERT INTO devices(imei, sec_tag, state, updated_at, ca_sha256)
                 VALUES ('352656109480783', 16842753, 'imported', 't', 'cd');",
            )
            .unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        assert!(s.newest_checkpoints().unwrap().is_empty());
        let r = s.device("352656109480783", 16842753).unwrap().unwrap();
        assert_eq!(r.ca_sha256.as_deref(), Some("cd"));
        let v: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, "3");
    }

    #[test]
    fn states_round_trip() {
        for s in DeviceState::ALL {
            assert_eq!(DeviceState::parse(s.as_str()), Some(s));
            assert!(!s.next_step().is_empty());
        }
    }
}
