//! The temporary directory a `sign` run writes its bundle into (`.<B>.nrfca-partial-<batch>`,
//! a sibling of `--out`): creating it, proving its owner is alive, and removing the ones that
//! crashed or were interrupted runs left behind, whatever their `--out` was.
//!
//! Each directory is registered in `ca.db`'s `meta` table (`staging:<batch>` = its absolute
//! path) in a short transaction of its own, right after it is created and locked, so a later
//! run of the same CA finds it even in another directory. Its owner holds an exclusive
//! `flock` on it for as long as it runs: a directory whose lock can be taken belongs to a dead
//! run and is removed; one whose lock is held belongs to a live run and is left alone. Before
//! its batch commits, such a directory holds only `rejects.csv` (no signature, no certificate);
//! see [`crate::signer::sign`].

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::bundle::PARTIAL_MARK;

/// Prefix of the `meta` keys that register staging directories.
const META_PREFIX: &str = "staging:";

/// A staging directory this process created, locked and registered.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    key: String,
    _lock: Flock<File>,
}

/// The staging directory of `out` for `batch`, the directory it lives in, and the name
/// prefix every staging directory of `out` shares. `None` when `out` has no usable name.
pub fn paths(out: &Path, batch: &str) -> Option<(PathBuf, PathBuf, String)> {
    let name = out.file_name().and_then(|n| n.to_str())?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!(".{name}{PARTIAL_MARK}");
    Some((parent.join(format!("{prefix}{batch}")), parent, prefix))
}

/// Take an exclusive lock on the directory `path` without waiting.
fn try_lock(path: &Path) -> std::io::Result<Option<Flock<File>>> {
    let f = File::open(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Whether `path` is a staging directory we may remove: a real directory (not a symlink)
/// whose name carries the partial marker. A `meta` row edited to name any other path is
/// ignored, so `ca.db` cannot be used to delete arbitrary directories.
fn is_staging_dir(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.contains(PARTIAL_MARK))
        && path
            .symlink_metadata()
            .map(|m| m.file_type().is_dir())
            .unwrap_or(false)
}

/// Remove `path` if it is a staging directory whose owner is gone. Returns whether it is gone.
fn remove_if_abandoned(path: &Path) -> bool {
    if !is_staging_dir(path) {
        return !path.exists();
    }
    match try_lock(path) {
        Ok(Some(_lock)) => std::fs::remove_dir_all(path).is_ok(),
        _ => false,
    }
}

impl Staging {
    /// Lock the freshly created directory `path` and register it in `ca.db`; in the same short
    /// transaction, remove every abandoned staging directory: the registered ones (any
    /// `--out`) and the unregistered siblings sharing `prefix` in `parent`. Returns the removed
    /// directories.
    pub fn register(
        conn: &mut Connection,
        path: &Path,
        batch: &str,
        parent: &Path,
        prefix: &str,
    ) -> Result<(Staging, Vec<PathBuf>), rusqlite::Error> {
        let lock = try_lock(path)
            .ok()
            .flatten()
            .ok_or_else(|| rusqlite::Error::InvalidPath(path.to_path_buf()))?;
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let key = format!("{META_PREFIX}{batch}");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut removed = Vec::new();
        let registered: Vec<(String, String)> = {
            let mut st = tx.prepare("SELECT key, value FROM meta WHERE key LIKE 'staging:%'")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (k, p) in registered {
            let p = PathBuf::from(p);
            let existed = p.exists();
            if remove_if_abandoned(&p) {
                if existed {
                    removed.push(p);
                }
                tx.execute("DELETE FROM meta WHERE key = ?1", [&k])?;
            }
        }
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                let p = e.path();
                let ours = e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(prefix));
                if ours && p != path && remove_if_abandoned(&p) {
                    removed.push(p);
                }
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            rusqlite::params![key, abs.to_string_lossy()],
        )?;
        tx.commit()?;
        Ok((
            Staging {
                path: path.to_path_buf(),
                key,
                _lock: lock,
            },
            removed,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forget the registration inside the caller's transaction (the directory was renamed
    /// into place, or removed).
    pub fn unregister_in(&self, conn: &Connection) -> Result<(), rusqlite::Error> {
        conn.execute("DELETE FROM meta WHERE key = ?1", [&self.key])?;
        Ok(())
    }

    /// Remove the directory and its registration (best effort: a leftover is removed by the
    /// next run).
    pub fn discard(self, conn: &Connection) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = self.unregister_in(conn);
    }
}

/// Staging directories registered in `ca.db` (for `ca show` and the tests).
pub fn registered(conn: &Connection) -> Result<Vec<PathBuf>, rusqlite::Error> {
    let mut st = conn.prepare("SELECT value FROM meta WHERE key LIKE 'staging:%' ORDER BY key")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.map(PathBuf::from)).collect()
}

/// Whether `key` is registered (for tests).
pub fn is_registered(conn: &Connection, batch: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(
        "SELECT 1 FROM meta WHERE key = ?1",
        [format!("{META_PREFIX}{batch}")],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}
