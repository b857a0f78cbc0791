//! The temporary directory a `sign` run writes its bundle into (`.<B>.nrfca-partial-<batch>`,
//! a sibling of `--out`): creating it, proving its owner is alive, and removing the ones that
//! crashed or were interrupted runs left behind, whatever their `--out` was.
//!
//! Each directory is created, locked and registered in `ca.db`'s `meta` table
//! (`staging:<batch>` = its absolute path) inside one short transaction of its own, which
//! holds `ca.db`'s write lock: every cleaner takes that lock first, so no cleaner ever sees a
//! directory that is created but not yet locked. A later run of the same CA finds it even in
//! another directory. Its owner holds an exclusive
//! `flock` on it for as long as it runs: a directory whose lock can be taken belongs to a dead
//! run and is removed; one whose lock is held belongs to a live run and is left alone. Before
//! its batch commits, such a directory holds only `rejects.csv` (no signature, no certificate);
//! see [`crate::signer::sign`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::signer::db::{self, Connection};
use nix::fcntl::{Flock, FlockArg};

use crate::bundle::{BundleError, RejectsWriter, PARTIAL_MARK};

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
/// named exactly `.<name>.nrfca-partial-<32 hex digits>`. A `meta` row edited to name any
/// other path is ignored, so `ca.db` cannot be used to delete arbitrary directories.
fn is_staging_dir(path: &Path) -> bool {
    let named = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.starts_with('.')
            && n.rsplit_once(PARTIAL_MARK).is_some_and(|(head, batch)| {
                head.len() > 1 && batch.len() == 32 && batch.bytes().all(|b| b.is_ascii_hexdigit())
            })
    });
    named
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

/// Why a staging directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// `ca.db` failed (or is locked by another command).
    #[error("registering the temporary bundle directory in ca.db failed; nothing was signed, run sign again")]
    Db(#[from] rusqlite::Error),
    /// The directory could not be created or written.
    #[error(transparent)]
    Bundle(BundleError),
    /// The new directory could not be locked.
    #[error("cannot lock the temporary bundle directory {}; the file system of --out must support flock; nothing was signed", .0.display())]
    Lock(PathBuf, #[source] std::io::Error),
}

impl Staging {
    /// In one short transaction holding `ca.db`'s write lock: remove every abandoned staging
    /// directory (the registered ones, any `--out`, and the unregistered siblings sharing
    /// `prefix` in `parent`), then create `path` with an empty `rejects.csv`, lock it and
    /// register it. Returns the staging directory, its rejects writer and the removed
    /// directories.
    pub fn create(
        conn: &mut Connection,
        path: &Path,
        batch: &str,
        parent: &Path,
        prefix: &str,
    ) -> Result<(Staging, RejectsWriter, Vec<PathBuf>), StagingError> {
        let key = format!("{META_PREFIX}{batch}");
        let tx = db::begin_immediate(conn)?;
        let mut removed = Vec::new();
        let registered = db::meta::with_prefix(&tx, META_PREFIX)?;
        for (k, p) in registered {
            let p = PathBuf::from(p);
            let existed = p.exists();
            if remove_if_abandoned(&p) {
                if existed {
                    removed.push(p);
                }
                db::meta::delete(&tx, &k)?;
            }
        }
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                let p = e.path();
                let ours = e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(prefix));
                if ours && remove_if_abandoned(&p) {
                    removed.push(p);
                }
            }
        }
        let rejects = RejectsWriter::create(path).map_err(StagingError::Bundle)?;
        let lock = match try_lock(path) {
            Ok(Some(l)) => l,
            Ok(None) => {
                let _ = std::fs::remove_dir_all(path);
                return Err(StagingError::Lock(
                    path.to_path_buf(),
                    std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "locked by another process",
                    ),
                ));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(path);
                return Err(StagingError::Lock(path.to_path_buf(), e));
            }
        };
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let registered =
            db::meta::set(&tx, &key, &abs.to_string_lossy()).and_then(|()| tx.commit());
        if let Err(e) = registered {
            let _ = std::fs::remove_dir_all(path);
            return Err(e.into());
        }
        Ok((
            Staging {
                path: path.to_path_buf(),
                key,
                _lock: lock,
            },
            rejects,
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
        db::meta::delete(conn, &self.key)
    }

    /// The batch committed and the bundle is complete, but it could not be renamed to `out`:
    /// move it to `<out>.nrfca-unplaced-<batch>` (no partial marker, so no cleaner removes it)
    /// and drop the registration. Returns where it is now (None: it stays where it was).
    pub fn keep(&self, conn: &Connection, out: &Path, batch: &str) -> Option<PathBuf> {
        let _ = self.unregister_in(conn);
        let name = format!(
            "{}.nrfca-unplaced-{batch}",
            out.file_name()?.to_string_lossy()
        );
        let kept = self.path.with_file_name(name);
        std::fs::rename(&self.path, &kept).ok().map(|_| kept)
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
    Ok(db::meta::with_prefix(conn, META_PREFIX)?
        .into_iter()
        .map(|(_, v)| PathBuf::from(v))
        .collect())
}

/// Whether `batch` is registered (for tests).
#[cfg(test)]
fn is_registered(conn: &Connection, batch: &str) -> Result<bool, rusqlite::Error> {
    Ok(db::meta::get(conn, &format!("{META_PREFIX}{batch}"))?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B1: &str = "0123456789abcdef0123456789abcdef";
    const B2: &str = "fedcba9876543210fedcba9876543210";

    fn db(dir: &Path) -> Connection {
        crate::signer::db::open(&dir.join("ca.db")).unwrap()
    }

    #[test]
    fn only_exact_staging_names_are_removable() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join(format!(".bundle.nrfca-partial-{B1}"));
        std::fs::create_dir(&ok).unwrap();
        assert!(is_staging_dir(&ok));
        for bad in [
            format!("bundle.nrfca-partial-{B1}"),    // not hidden
            format!(".nrfca-partial-{B1}"),          // no bundle name
            ".bundle.nrfca-partial-xyz".to_string(), // not a batch id
            format!(".bundle.nrfca-partial-{B1}0"),  // too long
            format!(".bundle.nrfca-unplaced-{B1}"),  // a kept bundle
        ] {
            let p = d.path().join(&bad);
            std::fs::create_dir(&p).unwrap();
            assert!(!is_staging_dir(&p), "{bad}");
        }
        // A symlink with a staging name is not a directory to remove.
        let link = d.path().join(format!(".link.nrfca-partial-{B2}"));
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(!is_staging_dir(&link));
        assert!(!remove_if_abandoned(&link));
        assert!(d.path().exists());
    }

    #[test]
    fn live_staging_is_kept_dead_one_removed_kept_bundle_survives() {
        let d = tempfile::tempdir().unwrap();
        let mut conn = db(d.path());
        let out = d.path().join("bundle");
        let (p1, parent, prefix) = paths(&out, B1).unwrap();
        let (s1, _w1, removed) = Staging::create(&mut conn, &p1, B1, &parent, &prefix).unwrap();
        assert!(removed.is_empty());
        assert!(is_registered(&conn, B1).unwrap());
        // A second run while the first is alive: the first's directory stays.
        let mut conn2 = db(d.path());
        let (p2, _, _) = paths(&out, B2).unwrap();
        let (s2, _w2, removed) = Staging::create(&mut conn2, &p2, B2, &parent, &prefix).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(p1.is_dir());
        // The first dies (its lock goes with it): the next run removes its directory.
        drop(s1);
        let (p3, _, _) = paths(&d.path().join("elsewhere"), B1).unwrap();
        let other_prefix = ".elsewhere.nrfca-partial-";
        let (_s3, _w3, removed) =
            Staging::create(&mut conn, &p3, B1, &parent, other_prefix).unwrap();
        assert_eq!(
            removed,
            vec![std::fs::canonicalize(d.path())
                .unwrap()
                .join(p1.file_name().unwrap())]
        );
        assert!(!p1.exists());
        // A committed bundle that could not be renamed is kept under a name no cleaner takes.
        let kept = s2.keep(&conn2, &out, B2).unwrap();
        assert!(kept.is_dir() && !p2.exists());
        assert!(!is_registered(&conn2, B2).unwrap());
        drop(s2);
        let (p4, _, _) = paths(&out, "00000000000000000000000000000000").unwrap();
        let (_s4, _w4, removed) = Staging::create(
            &mut conn2,
            &p4,
            "00000000000000000000000000000000",
            &parent,
            &prefix,
        )
        .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(kept.is_dir());
    }
}
