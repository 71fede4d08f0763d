//! The per-key lock: an exclusive (or shared) `flock` on `<key>.lock` in the master
//! directory, shared by every process (and every [`super::MasterCache`]) using the
//! directory. flock locks belong to an open file description, so two opens in one process
//! exclude each other too.
//!
//! The lock file may be deleted by whoever holds it exclusively (eviction removes an
//! entry's three files). A locker that opened the old file before the deletion would then
//! hold a lock on an unlinked inode while a third party locks a new file at the same path,
//! so after acquiring, a locker checks that the path still names the file it locked, and
//! starts again if not.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held key lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct KeyLock {
    file: File,
    path: PathBuf,
}

impl KeyLock {
    /// Deletes the lock file (while holding the lock; see the module's doc). Returns
    /// whether it was there.
    pub(crate) fn remove_file(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
}

/// Whether `path` still names the open file.
fn still_named(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok((now.dev(), now.ino()) == (held.dev(), held.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes the lock, waiting for it (call from a blocking thread).
pub(crate) fn lock(path: &Path, shared: bool) -> io::Result<KeyLock> {
    loop {
        let file = open(path)?;
        if shared {
            file.lock_shared()?;
        } else {
            file.lock()?;
        }
        if still_named(&file, path)? {
            return Ok(KeyLock {
                file,
                path: path.to_path_buf(),
            });
        }
    }
}

/// Takes the lock if nobody holds it; `None` when someone does.
pub(crate) fn try_lock(path: &Path, shared: bool) -> io::Result<Option<KeyLock>> {
    loop {
        let file = open(path)?;
        let r = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match r {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        if still_named(&file, path)? {
            return Ok(Some(KeyLock {
                file,
                path: path.to_path_buf(),
            }));
        }
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock; unlocking first is only explicit.
        let _ = self.file.unlock();
    }
}
