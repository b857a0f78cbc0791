//! The batch-level checks of SPEC §3, after the per-string ones of [`crate::keygen::check`]:
//! metadata-mismatch, duplicate-in-batch, already-issued (or `--reissue`), key-reuse, and
//! the identical re-submitted KEYGEN that gives back the stored certificate.
//!
//! [`BatchPolicy::decide`] is called in input order (first one wins) and asks the CA
//! database through the [`Lookup`] trait, so it is testable with an in-memory table and runs
//! on the batch's own SQLite transaction in `sign`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::signer::db::{self, Connection};

use crate::keygen::Verified;
use crate::reject::{Reject, RejectCode};
use crate::requests::RequestRow;

pub use crate::signer::db::certificates::Stored;

/// What the policy needs to know about `ca.db`.
pub trait Lookup {
    /// Error of the store.
    type Error;
    /// The certificate issued for exactly this KEYGEN string (by SHA-256, hex), if any.
    /// `public_key` is the one in that string: an identical string carries the identical key.
    fn by_keygen(
        &mut self,
        keygen_sha256_hex: &str,
        public_key: &[u8; 65],
    ) -> Result<Option<Stored>, Self::Error>;
    /// Whether any certificate was issued to this attested device: `uuid` is the UUID of the
    /// attestation (lowercase, hyphenated), whatever CN the certificate carries (`uuid` or
    /// `nrf-<IMEI>` under `--device-id cn`), so a change of CN is not a new device.
    fn device_has_certificate(&mut self, uuid: &str) -> Result<bool, Self::Error>;
    /// The CN of a certificate for this public key, if any.
    fn key_owner(&mut self, public_key: &[u8; 65]) -> Result<Option<String>, Self::Error>;
    /// The CN of a certificate for this key including those issued earlier in the running
    /// batch (only used to name the device in a key-reuse message).
    fn key_owner_in_batch(&mut self, public_key: &[u8; 65]) -> Result<Option<String>, Self::Error> {
        self.key_owner(public_key)
    }
}

/// The policy's verdict on one verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue a certificate (`reissue`: the device already had one, allowed by `--reissue`).
    Issue {
        /// Issued under `--reissue` for a device that already had a certificate.
        reissue: bool,
    },
    /// The identical KEYGEN string was already signed: give back the stored certificate.
    Return(Box<Stored>),
    /// Refused.
    Reject(Reject),
}

/// `metadata-mismatch`: a requests-file column that is not of its SPEC §3 shape (flagged by
/// the reader, [`RequestRow::bad_shape`], or found here by [`RequestRow::check_shapes`] for a
/// row built elsewhere), or a column (device_uuid, sec_tag) that disagrees with the
/// attestation. Empty columns are not compared.
pub fn check_metadata(row: Option<&RequestRow>, v: &Verified) -> Result<(), Reject> {
    let Some(row) = row else {
        return Ok(());
    };
    if let Some(r) = &row.bad_shape {
        return Err(Reject::clone(r));
    }
    if let Err(bad) = row.check_shapes() {
        let why = bad.into_iter().next().map(|(_, d)| d).unwrap_or_default();
        return Err(Reject::new(RejectCode::MetadataMismatch, why));
    }
    let col = row.device_uuid.trim();
    if !col.is_empty() {
        let same = match (
            crate::util::parse_uuid(col),
            crate::util::parse_uuid(&v.uuid),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err(Reject::new(
                RejectCode::MetadataMismatch,
                format!(
                    "device_uuid column {:?} is not the attested UUID {}",
                    col.chars().take(64).collect::<String>(),
                    v.uuid
                ),
            ));
        }
    }
    match row.sec_tag_value() {
        Ok(Some(t)) if t != v.sec_tag => Err(Reject::new(
            RejectCode::MetadataMismatch,
            format!(
                "sec_tag column {t} is not the attested sec_tag {}",
                v.sec_tag
            ),
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(Reject::new(
            RejectCode::MetadataMismatch,
            format!("sec_tag column {:?} is not a number", row.sec_tag),
        )),
    }
}

/// 128-bit keyed fingerprints (two SipHash-1-3 with random keys): the in-batch sets hold
/// these instead of the ids and keys themselves, so memory per request stays small (a false
/// match needs ~2^64 requests, and the random keys make it unforgeable).
#[derive(Debug, Default)]
struct Fingerprint(RandomState, RandomState);

impl Fingerprint {
    fn of(&self, tag: u8, bytes: &[u8]) -> u128 {
        let mut a = self.0.build_hasher();
        let mut b = self.1.build_hasher();
        for h in [&mut a, &mut b] {
            h.write_u8(tag);
            h.write(bytes);
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }
}

/// A [`Hasher`] for keys that are uniformly random already and that nobody outside can
/// choose: the keyed [`Fingerprint`]s and the CA's random serials. It takes their first 8
/// bytes instead of hashing them a second time (SipHash of every key was a visible part of
/// `sign`'s single-threaded stage). Length prefixes are ignored: such keys have one length.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= v as u64;
    }
    fn write_usize(&mut self, _: usize) {}
}

/// Largest number of requests the in-batch sets are sized for up front.
pub const MAX_PRESIZE: usize = 1 << 20;

/// Hash-set/map state for [`PreHashed`] keys.
pub type PreHashedState = BuildHasherDefault<PreHashed>;

/// In-batch state of the policy. Feed requests in input order.
#[derive(Debug, Default)]
pub struct BatchPolicy {
    reissue: bool,
    fp: Fingerprint,
    /// Device ids (tag 0) and UUIDs (tag 1) seen in the batch.
    devices: HashSet<u128, PreHashedState>,
    /// Public key → device id of the request that got a certificate for it in this batch.
    keys: HashMap<u128, u128, PreHashedState>,
    /// `sign --expect`: the devices that may be signed.
    expected: Option<std::sync::Arc<ExpectedDevices>>,
}

/// The devices of `sign --expect FILE` (SPEC §10): a CSV with a `device_uuid` and/or an
/// `imei` column (other columns ignored), e.g. the manufacturer's shipping list. A request
/// is expected when its attested UUID or its requests-row IMEI is listed.
#[derive(Debug, Default, Clone)]
pub struct ExpectedDevices {
    uuids: HashSet<String>,
    imeis: HashSet<String>,
}

impl ExpectedDevices {
    /// Parse the CSV text (a parser: no I/O). Refuses a file with neither column or no rows.
    pub fn parse(text: &[u8]) -> Result<ExpectedDevices, String> {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text);
        let headers = r.byte_headers().map_err(|e| e.to_string())?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim_ascii() == name.as_bytes())
        };
        let (u, i) = (col("device_uuid"), col("imei"));
        if u.is_none() && i.is_none() {
            return Err("its first line has neither a device_uuid nor an imei column".into());
        }
        let mut e = ExpectedDevices::default();
        for rec in r.byte_records() {
            let rec = rec.map_err(|e| e.to_string())?;
            let cell = |c: Option<usize>| {
                c.and_then(|c| rec.get(c))
                    .map(|v| String::from_utf8_lossy(v.trim_ascii()).to_ascii_lowercase())
                    .filter(|v| !v.is_empty())
            };
            if let Some(v) = cell(u) {
                e.uuids.insert(v);
            }
            if let Some(v) = cell(i) {
                e.imeis.insert(v);
            }
        }
        if e.uuids.is_empty() && e.imeis.is_empty() {
            return Err("it lists no device".into());
        }
        Ok(e)
    }

    /// Devices listed.
    pub fn len(&self) -> usize {
        self.uuids.len() + self.imeis.len()
    }

    /// Whether the device with attested `uuid` and requests-row `imei` is listed.
    pub fn contains(&self, uuid: &str, imei: &str) -> bool {
        self.uuids.contains(&uuid.to_ascii_lowercase())
            || (!imei.is_empty() && self.imeis.contains(imei))
    }
}

impl BatchPolicy {
    /// A policy for one batch; `reissue` is `--reissue`.
    pub fn new(reissue: bool) -> Self {
        BatchPolicy {
            reissue,
            ..Default::default()
        }
    }

    /// As [`BatchPolicy::new`], with room for about `requests` requests (a hint: the sets
    /// grow past it; capped at [`MAX_PRESIZE`] so a wrong guess costs little memory).
    pub fn with_capacity(reissue: bool, requests: usize) -> Self {
        let n = requests.min(MAX_PRESIZE);
        BatchPolicy {
            reissue,
            fp: Fingerprint::default(),
            devices: HashSet::with_capacity_and_hasher(2 * n, PreHashedState::default()),
            keys: HashMap::with_capacity_and_hasher(n, PreHashedState::default()),
            expected: None,
        }
    }

    /// Only devices in `expected` may be signed (`not-expected` otherwise).
    pub fn with_expected(mut self, expected: Option<std::sync::Arc<ExpectedDevices>>) -> Self {
        self.expected = expected;
        self
    }

    /// Decide on a request that passed [`crate::keygen::check`], in SPEC §3 order:
    /// metadata-mismatch, not-expected, duplicate-in-batch, (identical KEYGEN already signed → return),
    /// already-issued, key-reuse. An issued or returned request's key is remembered for
    /// key-reuse within the batch.
    pub fn decide<L: Lookup>(
        &mut self,
        v: &Verified,
        row: Option<&RequestRow>,
        db: &mut L,
    ) -> Result<Decision, L::Error> {
        if let Err(r) = check_metadata(row, v) {
            return Ok(Decision::Reject(r));
        }
        if let Some(e) = &self.expected {
            let imei = row.map(|r| r.imei.as_str()).unwrap_or("");
            if !e.contains(&v.uuid, imei) {
                return Ok(Decision::Reject(Reject::new(
                    RejectCode::NotExpected,
                    format!("device {} is not on the --expect list", v.uuid),
                )));
            }
        }
        let device = self.fp.of(0, v.device_id.as_bytes());
        let new_device = self.devices.insert(device);
        let new_uuid = self.devices.insert(self.fp.of(1, v.uuid.as_bytes()));
        if !new_device || !new_uuid {
            return Ok(Decision::Reject(Reject::new(
                RejectCode::DuplicateInBatch,
                format!(
                    "device {} already has a request earlier in this batch",
                    v.device_id
                ),
            )));
        }
        let key = self.fp.of(2, &v.public_key);
        if let Some(stored) = db.by_keygen(&hex::encode(v.keygen_sha256), &v.public_key)? {
            let owner = self.fp.of(0, stored.device_id.as_bytes());
            self.keys.entry(key).or_insert(owner);
            return Ok(Decision::Return(Box::new(stored)));
        }
        let mut reissue = false;
        // Keyed on the attested UUID, not the CN: the same modem asked for CN=<uuid> in one
        // batch and CN=nrf-<IMEI> in the next is the same device.
        if db.device_has_certificate(&v.uuid)? {
            if !self.reissue {
                let cn = if v.device_id == v.uuid {
                    String::new()
                } else {
                    format!(" (requested CN {})", v.device_id)
                };
                return Ok(Decision::Reject(Reject::new(
                    RejectCode::AlreadyIssued,
                    format!(
                        "this CA already issued a certificate to device {}{cn} for another key; \
                         sign with --reissue to issue a new one",
                        v.uuid
                    ),
                )));
            }
            reissue = true;
        }
        if let Some(owner) = self.keys.get(&key) {
            if *owner != device {
                let name = db
                    .key_owner_in_batch(&v.public_key)?
                    .unwrap_or_else(|| "another device".into());
                return Ok(Decision::Reject(Reject::new(
                    RejectCode::KeyReuse,
                    format!("the public key is certified for {name} earlier in this batch"),
                )));
            }
        }
        if let Some(owner) = db.key_owner(&v.public_key)? {
            if owner != v.device_id {
                return Ok(Decision::Reject(Reject::new(
                    RejectCode::KeyReuse,
                    format!("the public key is already certified for {owner}"),
                )));
            }
        }
        self.keys.insert(key, device);
        Ok(Decision::Issue { reissue })
    }
}

/// [`Lookup`] over `ca.db` (any connection or transaction), with cached statements.
pub struct DbLookup<'c> {
    conn: &'c Connection,
}

impl fmt::Debug for DbLookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbLookup")
    }
}

impl<'c> DbLookup<'c> {
    /// Look things up through `conn`.
    pub fn new(conn: &'c Connection) -> Self {
        DbLookup { conn }
    }
}

impl Lookup for DbLookup<'_> {
    type Error = rusqlite::Error;

    fn by_keygen(
        &mut self,
        keygen_sha256_hex: &str,
        public_key: &[u8; 65],
    ) -> Result<Option<Stored>, rusqlite::Error> {
        db::certificates::by_key_and_keygen(self.conn, public_key, keygen_sha256_hex)
    }

    fn device_has_certificate(&mut self, uuid: &str) -> Result<bool, rusqlite::Error> {
        db::certificates::uuid_exists(self.conn, uuid)
    }

    fn key_owner(&mut self, public_key: &[u8; 65]) -> Result<Option<String>, rusqlite::Error> {
        db::certificates::device_by_key(self.conn, public_key)
    }
}

/// Largest `ca.db` (certificates) for which a [`KnownFilter`] is built (32 MB of
/// fingerprints); beyond it every lookup goes to SQLite's indexes.
pub const MAX_FILTER_ROWS: u64 = 1_000_000;

/// 64-bit fingerprint of a lookup key (a prefilter, not an identity: hits are confirmed in
/// SQLite).
fn fp(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn sorted_fps(
    conn: &Connection,
    column: db::certificates::LookupColumn,
) -> Result<Vec<u64>, rusqlite::Error> {
    let mut out = Vec::new();
    db::certificates::scan(conn, column, |b| out.push(fp(b)))?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Fingerprints of what `ca.db` held when the batch started (attested device UUIDs, public
/// keys, serials), read from the covering indexes in one scan each. A miss answers a lookup
/// without touching SQLite; a hit (or a 1-in-2^64 collision) is confirmed with the real query.
/// Entries added during the batch are covered by [`BatchPolicy`]'s own sets.
#[derive(Debug, Default, Clone)]
pub struct KnownFilter {
    /// Attested UUIDs (`certificates.uuid`), the key of already-issued.
    devices: Vec<u64>,
    keys: Vec<u64>,
    serials: Vec<u64>,
}

impl KnownFilter {
    /// Scan `ca.db`'s certificate indexes.
    pub fn load(conn: &Connection) -> Result<KnownFilter, rusqlite::Error> {
        Ok(KnownFilter {
            devices: sorted_fps(conn, db::certificates::LookupColumn::Uuid)?,
            keys: sorted_fps(conn, db::certificates::LookupColumn::PublicKey)?,
            serials: sorted_fps(conn, db::certificates::LookupColumn::Serial)?,
        })
    }

    /// Whether it is worth loading, with `rows` certificates in `ca.db`, for a batch of about
    /// `batch` requests: the scan reads every certificate once, a lookup costs a few index
    /// seeks per request.
    pub fn worth_it(rows: u64, batch: u64) -> bool {
        rows > 0 && rows <= batch.saturating_mul(4).min(MAX_FILTER_ROWS)
    }

    /// Whether a serial (hex) may be in `ca.db`.
    pub fn may_have_serial(&self, serial_hex: &str) -> bool {
        self.serials
            .binary_search(&fp(serial_hex.as_bytes()))
            .is_ok()
    }
}

/// A [`Lookup`] that answers misses of a [`KnownFilter`] (or of an empty database) from
/// memory and the rest from `ca.db`.
#[derive(Debug)]
pub struct FilteredLookup<'a, 'c> {
    /// The filter; `None` = ask SQLite every time.
    pub filter: Option<&'a KnownFilter>,
    /// True when `ca.db` had no certificate at the start of the batch.
    pub empty: bool,
    /// The database.
    pub db: DbLookup<'c>,
}

impl FilteredLookup<'_, '_> {
    fn skip(&self, set: impl Fn(&KnownFilter) -> &Vec<u64>, key: &[u8]) -> bool {
        if self.empty {
            return true;
        }
        match self.filter {
            Some(f) => set(f).binary_search(&fp(key)).is_err(),
            None => false,
        }
    }
}

impl Lookup for FilteredLookup<'_, '_> {
    type Error = rusqlite::Error;

    fn by_keygen(
        &mut self,
        keygen_sha256_hex: &str,
        public_key: &[u8; 65],
    ) -> Result<Option<Stored>, rusqlite::Error> {
        if self.skip(|f| &f.keys, public_key) {
            return Ok(None);
        }
        self.db.by_keygen(keygen_sha256_hex, public_key)
    }

    fn device_has_certificate(&mut self, uuid: &str) -> Result<bool, rusqlite::Error> {
        if self.skip(|f| &f.devices, uuid.as_bytes()) {
            return Ok(false);
        }
        self.db.device_has_certificate(uuid)
    }

    fn key_owner(&mut self, public_key: &[u8; 65]) -> Result<Option<String>, rusqlite::Error> {
        if self.skip(|f| &f.keys, public_key) {
            return Ok(None);
        }
        self.db.key_owner(public_key)
    }

    fn key_owner_in_batch(
        &mut self,
        public_key: &[u8; 65],
    ) -> Result<Option<String>, rusqlite::Error> {
        self.db.key_owner(public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem {
        certs: Vec<(Stored, [u8; 65])>,
    }

    impl Lookup for Mem {
        type Error = ();
        fn by_keygen(&mut self, k: &str, key: &[u8; 65]) -> Result<Option<Stored>, ()> {
            Ok(self
                .certs
                .iter()
                .find(|(s, pk)| s.keygen_sha256 == k && pk == key)
                .map(|(s, _)| s.clone()))
        }
        fn device_has_certificate(&mut self, u: &str) -> Result<bool, ()> {
            Ok(self.certs.iter().any(|(s, _)| s.uuid == u))
        }
        fn key_owner(&mut self, k: &[u8; 65]) -> Result<Option<String>, ()> {
            Ok(self
                .certs
                .iter()
                .find(|(_, pk)| pk == k)
                .map(|(s, _)| s.device_id.clone()))
        }
    }

    fn verified(uuid: &str, key: u8, keygen: u8) -> Verified {
        let mut pk = [key; 65];
        pk[0] = 4;
        Verified {
            device_id: uuid.into(),
            uuid: uuid.into(),
            sec_tag: 16842753,
            public_key: pk,
            csr_der: vec![],
            keygen_sha256: [keygen; 32],
            subject_cn: uuid.into(),
            null_param: false,
        }
    }

    fn stored(v: &Verified) -> (Stored, [u8; 65]) {
        (
            Stored {
                serial: "01".into(),
                device_id: v.device_id.clone(),
                uuid: v.uuid.clone(),
                imei: None,
                sec_tag: v.sec_tag,
                keygen_sha256: hex::encode(v.keygen_sha256),
                cert_sha256: "00".into(),
                pem: "PEM".into(),
                not_before: "a".into(),
                not_after: "b".into(),
            },
            v.public_key,
        )
    }

    const U1: &str = "50503041-3539-47eb-807b-102dbb423b9a";
    const U2: &str = "11111111-2222-4333-8444-555555555555";
    const U3: &str = "11111111-2222-4333-8444-666666666666";

    fn code(d: Decision) -> Option<RejectCode> {
        match d {
            Decision::Reject(r) => Some(r.code),
            _ => None,
        }
    }

    #[test]
    fn table() {
        let mut db = Mem::default();
        let old = verified(U3, 9, 9);
        db.certs.push(stored(&old));
        let mut p = BatchPolicy::new(false);
        // fresh device: issue
        assert_eq!(
            p.decide(&verified(U1, 1, 1), None, &mut db).unwrap(),
            Decision::Issue { reissue: false }
        );
        // same device again: duplicate (first wins)
        assert_eq!(
            code(p.decide(&verified(U1, 2, 2), None, &mut db).unwrap()),
            Some(RejectCode::DuplicateInBatch)
        );
        // another device with U1's key: key-reuse (earlier in batch)
        assert_eq!(
            code(p.decide(&verified(U2, 1, 3), None, &mut db).unwrap()),
            Some(RejectCode::KeyReuse)
        );
        // identical KEYGEN already in ca.db: returned
        assert!(matches!(
            p.decide(&old, None, &mut db).unwrap(),
            Decision::Return(_)
        ));
        // device in ca.db, new key: already-issued; with --reissue: issue(reissue)
        let mut p = BatchPolicy::new(false);
        assert_eq!(
            code(p.decide(&verified(U3, 5, 5), None, &mut db).unwrap()),
            Some(RejectCode::AlreadyIssued)
        );
        let mut p = BatchPolicy::new(true);
        assert_eq!(
            p.decide(&verified(U3, 5, 5), None, &mut db).unwrap(),
            Decision::Issue { reissue: true }
        );
        // the same attested device under another CN (nrf-<IMEI>): still already-issued
        let mut p = BatchPolicy::new(false);
        let mut cn = verified(U3, 6, 6);
        cn.device_id = "nrf-352656100000009".into();
        cn.subject_cn = cn.device_id.clone();
        assert_eq!(
            code(p.decide(&cn, None, &mut db).unwrap()),
            Some(RejectCode::AlreadyIssued)
        );
        // key certified for another device in ca.db: key-reuse even with --reissue
        let mut p = BatchPolicy::new(true);
        assert_eq!(
            code(p.decide(&verified(U2, 9, 7), None, &mut db).unwrap()),
            Some(RejectCode::KeyReuse)
        );
    }

    #[test]
    fn metadata() {
        let v = verified(U1, 1, 1);
        let mut row = RequestRow {
            device_uuid: U1.to_uppercase(),
            sec_tag: "16842753".into(),
            ..Default::default()
        };
        assert!(check_metadata(Some(&row), &v).is_ok());
        row.device_uuid = U2.into();
        assert_eq!(
            check_metadata(Some(&row), &v).unwrap_err().code,
            RejectCode::MetadataMismatch
        );
        row.device_uuid = String::new();
        row.sec_tag = "7".into();
        assert_eq!(
            check_metadata(Some(&row), &v).unwrap_err().code,
            RejectCode::MetadataMismatch
        );
        row.sec_tag = String::new();
        assert!(check_metadata(Some(&row), &v).is_ok());
        assert!(check_metadata(None, &v).is_ok());
        // Shapes (SPEC §3): a formula cell or a bad IMEI is metadata-mismatch, whether the
        // reader flagged it or the row was built elsewhere.
        let mut shaped = row.clone();
        shaped.model = "=HYPERLINK(\"http://x\")".into();
        let r = check_metadata(Some(&shaped), &v).unwrap_err();
        assert_eq!(r.code, RejectCode::MetadataMismatch);
        assert!(r.detail.starts_with("model column "), "{}", r.detail);
        let flagged = shaped.neutralised();
        assert_eq!(flagged.model, "");
        assert_eq!(
            check_metadata(Some(&flagged), &v).unwrap_err().detail,
            r.detail
        );
        shaped = row.clone();
        shaped.imei = "490154203237519".into();
        assert_eq!(
            check_metadata(Some(&shaped), &v).unwrap_err().code,
            RejectCode::MetadataMismatch
        );
        // metadata is checked before duplicate-in-batch
        let mut p = BatchPolicy::new(false);
        let mut db = Mem::default();
        row.device_uuid = U2.into();
        assert_eq!(
            code(p.decide(&v, Some(&row), &mut db).unwrap()),
            Some(RejectCode::MetadataMismatch)
        );
        assert_eq!(
            p.decide(&v, None, &mut db).unwrap(),
            Decision::Issue { reissue: false }
        );
    }

    #[test]
    fn filtered_lookup_agrees_with_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("ca.db")).unwrap();
        db::batches::start(&conn, "b", "t", "o").unwrap();
        let v = verified(U1, 3, 4);
        let row =
            |serial, device_id, uuid, public_key, keygen_sha256| db::certificates::NewCertificate {
                serial,
                device_id,
                uuid,
                imei: None,
                sec_tag: 1,
                public_key,
                keygen_sha256,
                cert_sha256: "c",
                der: &[0x30, 0],
                not_before: "a",
                not_after: "b",
                batch_id: "b",
                reissue: false,
            };
        let kg = hex::encode(v.keygen_sha256);
        db::certificates::insert(&conn, &row("0102", U1, U1, &v.public_key[..], &kg)).unwrap();
        let f = KnownFilter::load(&conn).unwrap();
        assert!(f.may_have_serial("0102") && !f.may_have_serial("0103"));
        assert!(KnownFilter::worth_it(1, 1));
        assert!(!KnownFilter::worth_it(0, 1) && !KnownFilter::worth_it(5, 1));
        let mut l = FilteredLookup {
            filter: Some(&f),
            empty: false,
            db: DbLookup::new(&conn),
        };
        assert!(l.device_has_certificate(U1).unwrap());
        assert!(!l.device_has_certificate(U2).unwrap());
        // Keyed on the attested UUID, not the CN: a certificate with CN nrf-<IMEI> counts
        // for its UUID, in the filter and in SQLite.
        db::certificates::insert(&conn, &row("0104", "nrf-352656100000009", U3, &[4], "k"))
            .unwrap();
        let f = KnownFilter::load(&conn).unwrap();
        for filter in [Some(&f), None] {
            let mut l = FilteredLookup {
                filter,
                empty: false,
                db: DbLookup::new(&conn),
            };
            assert!(l.device_has_certificate(U3).unwrap());
            assert!(!l.device_has_certificate("nrf-352656100000009").unwrap());
        }
        let mut l = FilteredLookup {
            filter: Some(&f),
            empty: false,
            db: DbLookup::new(&conn),
        };
        assert_eq!(l.key_owner(&v.public_key).unwrap().as_deref(), Some(U1));
        assert_eq!(l.key_owner(&verified(U2, 9, 9).public_key).unwrap(), None);
        let stored = l
            .by_keygen(&hex::encode(v.keygen_sha256), &v.public_key)
            .unwrap()
            .expect("the identical KEYGEN is found");
        assert_eq!(
            stored.pem,
            crate::util::pem_encode("CERTIFICATE", &[0x30, 0])
        );
        assert!(l
            .by_keygen(&hex::encode([1u8; 32]), &v.public_key)
            .unwrap()
            .is_none());
        // Same KEYGEN hash with another key: not the same string.
        assert!(l
            .by_keygen(
                &hex::encode(v.keygen_sha256),
                &verified(U2, 9, 9).public_key
            )
            .unwrap()
            .is_none());
    }

    #[test]
    fn expected_devices_parse_and_match() {
        let e = ExpectedDevices::parse(
            b"\xef\xbb\xbforder,device_uuid,imei\n1,C97D58E0-0B17-4432-A7B6-5E270363572D,\n2,,490154203237518\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert!(e.contains("c97d58e0-0b17-4432-a7b6-5e270363572d", ""));
        assert!(e.contains("00000000-0000-0000-0000-000000000000", "490154203237518"));
        assert!(!e.contains("00000000-0000-0000-0000-000000000000", ""));
        assert!(!e.contains("00000000-0000-0000-0000-000000000000", "490154203237519"));
        let only_imei = ExpectedDevices::parse(b"imei\n490154203237518\n").unwrap();
        assert!(only_imei.contains("x", "490154203237518"));
        assert!(ExpectedDevices::parse(b"serial,order\n1,2\n")
            .unwrap_err()
            .contains("neither"));
        assert!(ExpectedDevices::parse(b"device_uuid\n")
            .unwrap_err()
            .contains("no device"));
    }
}
