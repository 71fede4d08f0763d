//! The master image cache: images downloaded once into a master directory (Ironic's
//! `[pxe] tftp_master_path`) and hardlinked to where nodes fetch them
//! (`http_root/<node uuid>/<label>`), as Ironic's `ImageCache` does
//! (`ironic/drivers/modules/image_cache.py`), closing the gaps Ironic leaves.
//!
//! ```text
//! master/<key>                  a master file: complete and verified, or absent
//! master/<key>.meta             JSON: source, size, digests, validator, fetched_at, last_used
//! master/<key>.lock             the per-key flock (see below)
//! master/.tmp-<key>-<random>    a download or a meta file being written
//! ```
//!
//! * **Keys** ([`CacheKey`]): a Glance image by its id, anything else by
//!   `uuid5(NAMESPACE_URL, reference)`, Ironic's names; only safe file names.
//! * **Writing**: the body streams into a temporary file while it is hashed (one pass),
//!   is verified, fsync'd, renamed to its final name, and the directory fsync'd; a partial
//!   file is never visible under a final name. Temporary files whose key nobody has locked
//!   (left by a crash or `kill -9`) are swept by [`MasterCache::open`] and
//!   [`MasterCache::clean`]: whoever writes a temporary file holds its key's lock, so a
//!   free lock proves it is abandoned, whatever its age.
//! * **Single flight**: concurrent fetches of one key in a process share one task and one
//!   result (or error); the task runs to the end even if every caller goes away. Across
//!   processes (and [`MasterCache`]s) an exclusive `flock` on `<key>.lock` serialises the
//!   work, and a fetcher that had to wait for the lock uses what the holder just stored
//!   instead of asking the origin again (Ironic's locks are in-process only).
//! * **Freshness**: an existing entry is revalidated by its [`Origin`] (HTTP
//!   `If-None-Match`/`If-Modified-Since`, a file's size and mtime). A new version is
//!   downloaded into a new master file renamed over the old one: nodes already prepared keep
//!   their hardlink to the old inode until they are prepared again.
//! * **Space**: before a download of known size, expired unlinked entries and then the
//!   least recently used unlinked ones are evicted until the cache stays under `max_bytes`
//!   and the filesystem has room (`statvfs`), or the fetch fails with
//!   [`CacheError::CacheFull`] before reading the body. A master file with another link
//!   (a node's file) is never evicted (Ironic's rule), nor one whose lock is held.
//!
//! Time is a parameter (Unix seconds): the cache reads no clock.
#![warn(missing_docs)]

mod digest;
mod key;
mod link;
mod lock;
mod origin;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;

pub use digest::{Algo, Digest, Expected};
pub use key::{CacheKey, MAX_KEY_LEN};
pub use link::{Linked, copy_atomic, link};
pub use origin::{
    BodyStream, FileOrigin, HttpOrigin, OpenFuture, Opened, Origin, OriginBody, Validator,
    redact_url,
};

/// Prefix of temporary files in the master directory: `.tmp-<key>-<random>`.
const TMP_PREFIX: &str = ".tmp-";
const META_SUFFIX: &str = ".meta";
const LOCK_SUFFIX: &str = ".lock";
/// Bytes read at a time when hashing a master file.
const HASH_CHUNK: usize = 1024 * 1024;
/// Chunks of a body queued for the thread that writes them: hashing (on the task) and
/// writing (on that thread) overlap, and a slow disk holds at most this many chunks in
/// memory before it slows the download down.
const WRITE_QUEUE: usize = 16;
/// The writer flushes what it wrote every this many bytes, so the disk writes while the
/// body is still arriving and the fsync before the rename has little left to do.
const SYNC_EVERY: u64 = 32 * 1024 * 1024;

/// Why the cache could not provide an image. Messages name the origin without secrets
/// (no query string, no user info, no header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A key that is not a safe file name.
    #[error("invalid image cache key {key}: it {reason}")]
    InvalidKey {
        /// The key, quoted and shortened.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An origin that cannot be used (not an http(s) URL, a relative path).
    #[error("invalid image origin {origin}: it {reason}")]
    InvalidOrigin {
        /// The origin, quoted, without query string or user info.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The expected checksum cannot be used; the message says why.
    #[error("{0}")]
    InvalidChecksum(String),
    /// The bytes do not have the expected digest; they were discarded.
    #[error(
        "{origin} does not have the expected {algo} checksum: expected {expected}, got \
         {actual}; the download was discarded"
    )]
    ChecksumMismatch {
        /// [`Origin::describe`].
        origin: String,
        /// The algorithm compared.
        algo: Algo,
        /// The expected digest, hex.
        expected: String,
        /// The digest of the bytes received, hex.
        actual: String,
    },
    /// Not enough room even after evicting every unused master image.
    #[error(
        "the image cache has no room for {needed} bytes: {available} bytes are available \
         after evicting every master image no node uses ([pxe] image_cache_size, free disk \
         space)"
    )]
    CacheFull {
        /// The image's size (or the bytes received so far, when it was not announced).
        needed: u64,
        /// The most the cache could make room for.
        available: u64,
    },
    /// The origin could not be reached, or the connection broke.
    #[error("{origin} cannot be reached: {detail}")]
    Unreachable {
        /// [`Origin::describe`].
        origin: String,
        /// The cause, without the URL.
        detail: String,
    },
    /// The origin stopped answering.
    #[error("{origin} timed out: {detail}")]
    Timeout {
        /// [`Origin::describe`].
        origin: String,
        /// Which timeout.
        detail: String,
    },
    /// The origin answered with an unexpected status.
    #[error("{origin} answered HTTP {status}")]
    Status {
        /// [`Origin::describe`].
        origin: String,
        /// The HTTP status.
        status: u16,
    },
    /// The origin has no such image (HTTP 404/410, no such file).
    #[error("{origin} was not found ({detail})")]
    NotFound {
        /// [`Origin::describe`].
        origin: String,
        /// The status or the file error.
        detail: String,
    },
    /// The origin sent another number of bytes than it announced.
    #[error("{origin} sent {got} bytes where it announced {announced}")]
    Length {
        /// [`Origin::describe`].
        origin: String,
        /// The announced length.
        announced: u64,
        /// The bytes received (up to the first one too many).
        got: u64,
    },
    /// The master file went away between `fetch` and `link` (evicted by another process).
    #[error("master image {key} was evicted before it could be linked; fetch it again")]
    Evicted {
        /// The entry's key.
        key: String,
    },
    /// A file operation of the cache failed.
    #[error("image cache: {what}: {detail}")]
    Io {
        /// What the cache was doing, with the path.
        what: String,
        /// The system's error.
        detail: String,
    },
}

impl CacheError {
    /// The stable code of the error's kind.
    pub fn code(&self) -> ErrorCode {
        match self {
            CacheError::InvalidKey { .. } | CacheError::InvalidOrigin { .. } => {
                ErrorCode::InvalidImageRef
            }
            CacheError::InvalidChecksum(_) => ErrorCode::InvalidChecksum,
            CacheError::ChecksumMismatch { .. } => ErrorCode::ImageChecksumMismatch,
            CacheError::CacheFull { .. } => ErrorCode::CacheFull,
            CacheError::Unreachable { .. } => ErrorCode::ImageSourceUnreachable,
            CacheError::Timeout { .. } => ErrorCode::ImageSourceTimeout,
            CacheError::Status { .. } | CacheError::Length { .. } => ErrorCode::ImageSourceError,
            CacheError::NotFound { .. } => ErrorCode::ImageNotFound,
            CacheError::Evicted { .. } | CacheError::Io { .. } => ErrorCode::CacheIo,
        }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, e: &io::Error) -> CacheError {
        CacheError::Io {
            what: what.into(),
            detail: e.to_string(),
        }
    }

    fn joined(e: &tokio::task::JoinError) -> CacheError {
        CacheError::Io {
            what: "a cache task failed".into(),
            detail: e.to_string(),
        }
    }
}

/// Progress of a fetch, shared with whoever shows it: bytes received and the total when
/// known. Cheap to read at any time; a fetch that finds the image cached sets both to its
/// size at once.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    /// `u64::MAX`: unknown.
    total: AtomicU64,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }
}

impl Progress {
    /// A new handle at zero, total unknown.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Bytes received so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The total, when the origin announced it.
    pub fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            t => Some(t),
        }
    }

    fn set(&self, done: u64, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }
}

/// The progress of one flight, fanned out to the handles of every caller that joined it.
#[derive(Debug, Default)]
struct Fanout(Mutex<FanoutState>);

#[derive(Debug, Default)]
struct FanoutState {
    done: u64,
    total: Option<u64>,
    watchers: Vec<Arc<Progress>>,
}

impl Fanout {
    fn state(&self) -> std::sync::MutexGuard<'_, FanoutState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, p: Arc<Progress>) {
        let mut s = self.state();
        p.set(s.done, s.total);
        s.watchers.push(p);
    }

    fn set(&self, done: u64, total: Option<u64>) {
        let mut s = self.state();
        s.done = done;
        s.total = total;
        for w in &s.watchers {
            w.set(done, total);
        }
    }

    fn add(&self, n: u64) {
        let mut s = self.state();
        s.done += n;
        for w in &s.watchers {
            w.done.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// What the cache knows about one master image (`ironboot cache list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's key (the master file's name).
    pub key: CacheKey,
    /// The master file.
    pub path: PathBuf,
    /// The master file's size in bytes.
    pub size: u64,
    /// The digests computed over the file: the first one at download (the expected
    /// algorithm's, or sha256), others when a later fetch expected another algorithm.
    pub digests: Vec<Digest>,
    /// Where it came from ([`Origin::describe`]); `None` when its metadata is missing or
    /// unreadable (such an entry is downloaded again by the next fetch).
    pub source: Option<String>,
    /// What the origin said identifies this version (ETag, Last-Modified, a file's stamp).
    pub validator: Option<Validator>,
    /// Unix seconds of the download.
    pub fetched_at: Option<i64>,
    /// Unix seconds of the last fetch that used it (the file's mtime without metadata).
    pub last_used: i64,
    /// Links besides the master's own name: nodes' files. An entry with links is never
    /// evicted.
    pub links: u64,
}

/// How a fetch got its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The bytes were downloaded into a new master file.
    Downloaded,
    /// The origin sent the bytes again (it gave no validator, or they changed) and they
    /// were the same as the master's: the master file was kept.
    Unchanged,
    /// The origin said the cached version is current.
    NotModified,
    /// Another fetcher (another process, or another cache on the directory) stored or
    /// revalidated it while this one waited for the key's lock.
    Shared,
}

/// The result of [`MasterCache::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The entry as it is now.
    pub entry: Entry,
    /// Whether bytes were downloaded.
    pub outcome: Outcome,
}

/// What [`MasterCache::clean`] (or the sweep at open) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Master images evicted.
    pub evicted: Vec<CacheKey>,
    /// The files removed, in order: masters, metadata, locks and abandoned temporary
    /// files (`ironboot cache clean` prints them).
    pub files: Vec<PathBuf>,
    /// How many files were removed (`files.len()`).
    pub files_removed: usize,
    /// Bytes of the files removed.
    pub bytes_freed: u64,
}

impl CleanReport {
    /// Counts `path` when it was removed (`bytes` is `Some`).
    fn removed(&mut self, path: &Path, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.files.push(path.to_path_buf());
            self.files_removed += 1;
            self.bytes_freed += bytes;
        }
    }

    /// Adds what another sweep removed (the one at open, before a clean).
    pub fn merge(&mut self, other: CleanReport) {
        self.evicted.extend(other.evicted);
        self.files.extend(other.files);
        self.files_removed += other.files_removed;
        self.bytes_freed += other.bytes_freed;
    }
}

/// The metadata sidecar `<key>.meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    source: String,
    size: u64,
    digests: Vec<Digest>,
    #[serde(default)]
    validator: Option<Validator>,
    fetched_at: i64,
    last_used: i64,
    /// The master file's inode: metadata of another file (a crash between the master's
    /// rename and the metadata's) is not believed.
    ino: u64,
    /// New at every write: a fetcher that waited for the lock sees whether the holder
    /// stored or revalidated the entry meanwhile.
    nonce: String,
}

/// A master file as a directory scan finds it.
#[derive(Debug)]
struct Scanned {
    key: CacheKey,
    size: u64,
    nlink: u64,
    last_used: i64,
}

type SharedResult = Shared<BoxFuture<'static, Result<Fetched, CacheError>>>;

/// One fetch in progress in this process.
#[derive(Clone)]
struct Flight {
    fanout: Arc<Fanout>,
    result: SharedResult,
}

/// How free space is measured; a parameter so tests can make a disk look full.
type FreeSpace = dyn Fn(&Path) -> io::Result<u64> + Send + Sync;

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    ttl: Duration,
    flights: Mutex<HashMap<CacheKey, Flight>>,
    /// Room is made by one task at a time in this process, so two downloads do not count
    /// the same free bytes.
    evicting: tokio::sync::Mutex<()>,
    free_space: Box<FreeSpace>,
}

/// The master image cache of one directory. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MasterCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MasterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterCache")
            .field("dir", &self.inner.dir)
            .field("max_bytes", &self.inner.max_bytes)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn tmp_name(key: &CacheKey) -> String {
    format!("{TMP_PREFIX}{key}-{}", uuid::Uuid::new_v4().simple())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes a file; its size when it existed, `None` when it did not.
fn remove_if_exists(path: &Path) -> io::Result<Option<u64>> {
    let size = match fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(Some(size)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn mtime(m: &fs::Metadata) -> i64 {
    m.mtime()
}

impl MasterCache {
    /// Opens (creating it if needed) the master directory `dir`, holding at most
    /// `max_bytes` of master files (`[pxe] image_cache_size` MiB), keeping unused ones for
    /// `ttl` (`[pxe] image_cache_ttl` minutes), and sweeps temporary files nobody is
    /// writing. Blocking (a few file operations): call at start.
    pub fn open(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<(MasterCache, CleanReport), CacheError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| CacheError::io(format!("cannot create {}", dir.display()), &e))?;
        let cache = MasterCache {
            inner: Arc::new(Inner {
                dir,
                max_bytes,
                ttl,
                flights: Mutex::new(HashMap::new()),
                evicting: tokio::sync::Mutex::new(()),
                free_space: Box::new(|p: &Path| fs4::available_space(p)),
            }),
        };
        let mut report = CleanReport::default();
        cache.sweep_temps(&mut report)?;
        if report.files_removed > 0 {
            tracing::info!(
                dir = %cache.inner.dir.display(),
                files = report.files_removed,
                bytes = report.bytes_freed,
                "removed abandoned temporary files from the image cache"
            );
        }
        Ok((cache, report))
    }

    /// Replaces the free-space probe (tests make a disk look full with it).
    #[cfg(test)]
    fn with_free_space(
        self,
        probe: impl Fn(&Path) -> io::Result<u64> + Send + Sync + 'static,
    ) -> MasterCache {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_free_space on a shared cache"));
        MasterCache {
            inner: Arc::new(Inner {
                free_space: Box::new(probe),
                ..inner
            }),
        }
    }

    /// The master directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The path of a key's master file (which may not exist).
    pub fn master_path(&self, key: &CacheKey) -> PathBuf {
        self.inner.dir.join(key.as_str())
    }

    fn meta_path(&self, key: &CacheKey) -> PathBuf {
        self.inner.dir.join(format!("{key}{META_SUFFIX}"))
    }

    fn lock_path(&self, key: &CacheKey) -> PathBuf {
        self.inner.dir.join(format!("{key}{LOCK_SUFFIX}"))
    }

    /// Makes sure the image of `key` is in the cache and current, and returns its entry.
    ///
    /// Missing: downloaded from `origin`, verified against `expected` when given. Present:
    /// revalidated by the origin (a conditional request) and downloaded again if it
    /// changed; checked against `expected` (a mismatch downloads it again). Concurrent
    /// fetches of one key share one download and its result: the first caller's
    /// `origin` and `expected` are used for all. `progress`, when given, follows the
    /// bytes. `now` is Unix seconds (`last_used`, `fetched_at`, the TTL of evictions).
    pub async fn fetch(
        &self,
        key: &CacheKey,
        origin: Arc<dyn Origin>,
        expected: Option<Expected>,
        progress: Option<Arc<Progress>>,
        now: i64,
    ) -> Result<Fetched, CacheError> {
        let flight = {
            let mut flights = self
                .inner
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match flights.get(key) {
                Some(f) => f.clone(),
                None => {
                    let fanout = Arc::new(Fanout::default());
                    let cache = self.clone();
                    let task_key = key.clone();
                    let task_fanout = fanout.clone();
                    let task = tokio::spawn(async move {
                        let result = cache
                            .fetch_locked(&task_key, origin, expected, &task_fanout, now)
                            .await;
                        let mut flights = cache
                            .inner
                            .flights
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        if flights
                            .get(&task_key)
                            .is_some_and(|f| Arc::ptr_eq(&f.fanout, &task_fanout))
                        {
                            flights.remove(&task_key);
                        }
                        result
                    });
                    let result =
                        async move { task.await.unwrap_or_else(|e| Err(CacheError::joined(&e))) }
                            .boxed()
                            .shared();
                    let flight = Flight { fanout, result };
                    flights.insert(key.clone(), flight.clone());
                    flight
                }
            }
        };
        if let Some(p) = progress {
            flight.fanout.join(p);
        }
        flight.result.await
    }

    /// One fetch, under the key's lock.
    async fn fetch_locked(
        &self,
        key: &CacheKey,
        origin: Arc<dyn Origin>,
        expected: Option<Expected>,
        fanout: &Fanout,
        now: i64,
    ) -> Result<Fetched, CacheError> {
        let nonce_before = self.read_meta(key).map(|m| m.nonce);
        let lock_path = self.lock_path(key);
        let lock_err = |e: io::Error| CacheError::io(format!("cannot lock {key}"), &e);
        let (_lock, waited) = match lock::try_lock(&lock_path, false).map_err(lock_err)? {
            Some(l) => (l, false),
            None => {
                let path = lock_path.clone();
                let l = tokio::task::spawn_blocking(move || lock::lock(&path, false))
                    .await
                    .map_err(|e| CacheError::joined(&e))?
                    .map_err(lock_err)?;
                (l, true)
            }
        };
        let current = self.load(key);
        let Some((mut meta, nlink)) = current else {
            let body = open_body(&*origin, None).await?;
            return self
                .download(key, &*origin, body, expected.as_ref(), None, fanout, now)
                .await;
        };
        // Does the master have the expected digest?
        let matches = match &expected {
            None => true,
            Some(e) => match meta.digests.iter().find(|d| d.algo == e.algo()) {
                Some(d) => d.hex == e.hex(),
                None => {
                    let path = self.master_path(key);
                    let algo = e.algo();
                    let d = tokio::task::spawn_blocking(move || hash_file(&path, algo))
                        .await
                        .map_err(|e| CacheError::joined(&e))?
                        .map_err(|e| CacheError::io(format!("cannot read master {key}"), &e))?;
                    let same = d.hex == e.hex();
                    meta.digests.push(d);
                    same
                }
            },
        };
        if waited && matches && nonce_before.as_ref() != Some(&meta.nonce) {
            fanout.set(meta.size, Some(meta.size));
            return Ok(Fetched {
                entry: self.entry(key, &meta, nlink),
                outcome: Outcome::Shared,
            });
        }
        let known = if matches {
            meta.validator.clone()
        } else {
            None
        };
        // the digest names the bytes: nothing to ask the origin
        let settled = matches && expected.is_some() && origin.immutable();
        let opened = if settled {
            Opened::NotModified(None)
        } else {
            origin.open(known.as_ref()).await?
        };
        let body = match opened {
            Opened::NotModified(validator) => {
                if validator.is_some() {
                    meta.validator = validator;
                }
                meta.last_used = now;
                meta.nonce = new_nonce();
                self.write_meta(key, &meta, false)
                    .map_err(|e| CacheError::io(format!("cannot write {key}{META_SUFFIX}"), &e))?;
                fanout.set(meta.size, Some(meta.size));
                return Ok(Fetched {
                    entry: self.entry(key, &meta, nlink),
                    outcome: Outcome::NotModified,
                });
            }
            Opened::Body(body) => body,
        };
        let keep = matches.then_some(meta);
        self.download(key, &*origin, body, expected.as_ref(), keep, fanout, now)
            .await
    }

    /// Streams a body into a temporary file, verifies it and renames it into place.
    /// `current`: the master's metadata, when the master holds the expected bytes (it is
    /// kept if the body turns out to be the same).
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        key: &CacheKey,
        origin: &dyn Origin,
        body: OriginBody,
        expected: Option<&Expected>,
        current: Option<Meta>,
        fanout: &Fanout,
        now: i64,
    ) -> Result<Fetched, CacheError> {
        let OriginBody {
            len,
            validator,
            mut stream,
        } = body;
        fanout.set(0, len);
        if let Some(needed) = len {
            self.make_room(key, needed, true, now).await?;
        }
        let dir = &self.inner.dir;
        let tmp_path = dir.join(tmp_name(key));
        let write_err = |e: io::Error| CacheError::io(format!("cannot write {key}"), &e);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp_path)
            .await
            .map_err(write_err)?
            .into_std()
            .await;
        let mut tmp = TempFile(Some(tmp_path.clone()));
        // The chunks go to a blocking thread that writes them as they are (no copy); this
        // task checks and hashes them meanwhile.
        let (queue, mut queued) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<fs::File> {
            let mut file = file;
            let mut unsynced: u64 = 0;
            while let Some(chunk) = queued.blocking_recv() {
                io::Write::write_all(&mut file, &chunk)?;
                unsynced += chunk.len() as u64;
                if unsynced >= SYNC_EVERY {
                    file.sync_data()?;
                    unsynced = 0;
                }
            }
            Ok(file)
        });
        let algo = expected.map_or(Algo::Sha256, Expected::algo);
        let mut hasher = digest::Hasher::new(algo);
        let mut got: u64 = 0;
        let describe = || origin.describe();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            got += chunk.len() as u64;
            if let Some(announced) = len
                && got > announced
            {
                return Err(CacheError::Length {
                    origin: describe(),
                    announced,
                    got,
                });
            }
            if got > self.inner.max_bytes {
                return Err(CacheError::CacheFull {
                    needed: got,
                    available: self.inner.max_bytes,
                });
            }
            hasher.update(&chunk);
            let n = chunk.len() as u64;
            if queue.send(chunk).await.is_err() {
                break; // the writer failed: its error is below
            }
            fanout.add(n);
        }
        drop(queue);
        let file = writer
            .await
            .map_err(|e| CacheError::joined(&e))?
            .map_err(write_err)?;
        drop(stream);
        if let Some(announced) = len
            && got != announced
        {
            return Err(CacheError::Length {
                origin: describe(),
                announced,
                got,
            });
        }
        let digest = hasher.finish();
        if let Some(e) = expected
            && digest.hex != e.hex()
        {
            return Err(CacheError::ChecksumMismatch {
                origin: describe(),
                algo,
                expected: e.hex().to_string(),
                actual: digest.hex,
            });
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| CacheError::joined(&e))?
            .map_err(write_err)?;
        if len.is_none() {
            // The size is known only now; the bytes are already on disk.
            self.make_room(key, got, false, now).await?;
        }
        let master = self.master_path(key);
        let meta_err =
            |e: io::Error| CacheError::io(format!("cannot write {key}{META_SUFFIX}"), &e);
        if let Some(mut meta) = current
            && meta.digests.contains(&digest)
        {
            drop(tmp);
            meta.validator = validator;
            meta.last_used = now;
            meta.nonce = new_nonce();
            self.write_meta(key, &meta, false).map_err(meta_err)?;
            let nlink = fs::metadata(&master).map(|m| m.nlink()).unwrap_or(1);
            fanout.set(meta.size, Some(meta.size));
            return Ok(Fetched {
                entry: self.entry(key, &meta, nlink),
                outcome: Outcome::Unchanged,
            });
        }
        let dir_err =
            |e: io::Error| CacheError::io(format!("cannot rename into {}", dir.display()), &e);
        let tmp_for_rename = tmp_path.clone();
        let master_for_rename = master.clone();
        let m = tokio::task::spawn_blocking(move || {
            fs::rename(&tmp_for_rename, &master_for_rename)?;
            fs::metadata(&master_for_rename)
        })
        .await
        .map_err(|e| CacheError::joined(&e))?
        .map_err(dir_err)?;
        tmp.keep();
        let meta = Meta {
            source: describe(),
            size: got,
            digests: vec![digest],
            validator,
            fetched_at: now,
            last_used: now,
            ino: m.ino(),
            nonce: new_nonce(),
        };
        self.write_meta(key, &meta, true).map_err(meta_err)?;
        sync_dir(dir).map_err(dir_err)?;
        fanout.set(got, Some(got));
        tracing::info!(key = %key, source = %meta.source, bytes = got, "image cached");
        Ok(Fetched {
            entry: self.entry(key, &meta, m.nlink()),
            outcome: Outcome::Downloaded,
        })
    }

    fn entry(&self, key: &CacheKey, meta: &Meta, nlink: u64) -> Entry {
        Entry {
            key: key.clone(),
            path: self.master_path(key),
            size: meta.size,
            digests: meta.digests.clone(),
            source: Some(meta.source.clone()),
            validator: meta.validator.clone(),
            fetched_at: Some(meta.fetched_at),
            last_used: meta.last_used,
            links: nlink.saturating_sub(1),
        }
    }

    /// The metadata, if it exists and can be read.
    fn read_meta(&self, key: &CacheKey) -> Option<Meta> {
        let text = fs::read(self.meta_path(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The master's metadata and link count when both exist and agree.
    fn load(&self, key: &CacheKey) -> Option<(Meta, u64)> {
        let m = fs::symlink_metadata(self.master_path(key)).ok()?;
        let meta = self.read_meta(key)?;
        (m.is_file() && m.len() == meta.size && m.ino() == meta.ino).then_some((meta, m.nlink()))
    }

    /// Writes `<key>.meta` atomically, durably (fsync of file and directory) when asked.
    fn write_meta(&self, key: &CacheKey, meta: &Meta, durable: bool) -> io::Result<()> {
        let tmp = self.inner.dir.join(tmp_name(key));
        let mut guard = TempFile(Some(tmp.clone()));
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            io::Write::write_all(&mut f, &json)?;
            if durable {
                f.sync_all()?;
            }
        }
        fs::rename(&tmp, self.meta_path(key))?;
        guard.keep();
        if durable {
            sync_dir(&self.inner.dir)?;
        }
        Ok(())
    }

    /// Evicts unlinked entries until `needed` more bytes fit (in `max_bytes`, and on the
    /// filesystem when `check_fs`), or fails without evicting anything when even evicting
    /// them all would not make room.
    async fn make_room(
        &self,
        key: &CacheKey,
        needed: u64,
        check_fs: bool,
        now: i64,
    ) -> Result<(), CacheError> {
        let _one_at_a_time = self.inner.evicting.lock().await;
        let cache = self.clone();
        let key = key.clone();
        let report = tokio::task::spawn_blocking(move || {
            cache.make_room_blocking(&key, needed, check_fs, now)
        })
        .await
        .map_err(|e| CacheError::joined(&e))??;
        if !report.evicted.is_empty() {
            tracing::info!(
                evicted = ?report.evicted,
                bytes = report.bytes_freed,
                "evicted master images to make room"
            );
        }
        Ok(())
    }

    fn expired(&self, last_used: i64, now: i64) -> bool {
        let ttl = i64::try_from(self.inner.ttl.as_secs()).unwrap_or(i64::MAX);
        last_used < now.saturating_sub(ttl)
    }

    fn make_room_blocking(
        &self,
        key: &CacheKey,
        needed: u64,
        check_fs: bool,
        now: i64,
    ) -> Result<CleanReport, CacheError> {
        let dir = &self.inner.dir;
        let free = || -> Result<u64, CacheError> {
            if check_fs {
                (self.inner.free_space)(dir).map_err(|e| {
                    CacheError::io(
                        format!("cannot measure free space in {}", dir.display()),
                        &e,
                    )
                })
            } else {
                Ok(u64::MAX)
            }
        };
        let scanned = self.scan()?;
        let others: Vec<&Scanned> = scanned.iter().filter(|s| s.key != *key).collect();
        let mut total: u64 = others.iter().map(|s| s.size).sum();
        let mut candidates: Vec<&Scanned> = others.into_iter().filter(|s| s.nlink == 1).collect();
        // Ironic's order: expired entries first, then the least recently used.
        candidates.sort_by_key(|s| (!self.expired(s.last_used, now), s.last_used));
        let evictable: u64 = candidates.iter().map(|s| s.size).sum();
        let max = self.inner.max_bytes;
        let mut space = free()?;
        let best_case = max
            .saturating_sub(total - evictable)
            .min(space.saturating_add(evictable));
        if needed > best_case {
            return Err(CacheError::CacheFull {
                needed,
                available: best_case,
            });
        }
        let mut report = CleanReport::default();
        let mut candidates = candidates.into_iter();
        while total + needed > max || space < needed {
            let Some(c) = candidates.next() else {
                return Err(CacheError::CacheFull {
                    needed,
                    available: max.saturating_sub(total).min(space),
                });
            };
            if self.evict(&c.key, &mut report)? {
                total -= c.size;
                space = free()?;
            }
        }
        Ok(report)
    }

    /// Removes an entry's files if its lock is free and its master has no other link.
    /// Returns whether it did.
    fn evict(&self, key: &CacheKey, report: &mut CleanReport) -> Result<bool, CacheError> {
        let err = |e: io::Error| CacheError::io(format!("cannot evict {key}"), &e);
        let Some(lock) = lock::try_lock(&self.lock_path(key), false).map_err(err)? else {
            return Ok(false);
        };
        let master = self.master_path(key);
        match fs::symlink_metadata(&master) {
            // Linked since the scan (under its lock, by `link`).
            Ok(m) if m.nlink() > 1 => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let freed = remove_if_exists(&master).map_err(err)?;
        report.removed(&master, freed);
        let meta_path = self.meta_path(key);
        let meta = remove_if_exists(&meta_path).map_err(err)?;
        report.removed(&meta_path, meta);
        if lock.remove_file().map_err(err)? {
            report.removed(&self.lock_path(key), Some(0));
        }
        report.evicted.push(key.clone());
        let freed = freed.unwrap_or(0);
        tracing::info!(key = %key, bytes = freed, "evicted master image");
        Ok(true)
    }

    /// The master files in the directory.
    fn scan(&self) -> Result<Vec<Scanned>, CacheError> {
        let dir = &self.inner.dir;
        let err = |e: io::Error| CacheError::io(format!("cannot read {}", dir.display()), &e);
        let mut out = Vec::new();
        for item in fs::read_dir(dir).map_err(err)? {
            let item = item.map_err(err)?;
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(key) = CacheKey::parse(&name) else {
                continue;
            };
            let m = match fs::symlink_metadata(item.path()) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            let last_used = self
                .read_meta(&key)
                .filter(|meta| meta.ino == m.ino())
                .map_or_else(|| mtime(&m), |meta| meta.last_used);
            out.push(Scanned {
                key,
                size: m.len(),
                nlink: m.nlink(),
                last_used,
            });
        }
        Ok(out)
    }

    /// Removes temporary files whose key nobody has locked.
    fn sweep_temps(&self, report: &mut CleanReport) -> Result<(), CacheError> {
        let dir = &self.inner.dir;
        let err = |e: io::Error| CacheError::io(format!("cannot sweep {}", dir.display()), &e);
        for item in fs::read_dir(dir).map_err(err)? {
            let item = item.map_err(err)?;
            let name = item.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
                continue;
            };
            let Some(key) = rest
                .rsplit_once('-')
                .and_then(|(k, _)| CacheKey::parse(k).ok())
            else {
                continue;
            };
            let Some(lock) = lock::try_lock(&self.lock_path(&key), false).map_err(err)? else {
                continue; // being written
            };
            let freed = remove_if_exists(&item.path()).map_err(err)?;
            report.removed(&item.path(), freed);
            tracing::debug!(file = ?name, "removed an abandoned temporary file");
            // A lock file made only by this sweep would stay behind.
            if !self.master_path(&key).exists() && !self.meta_path(&key).exists() {
                lock.remove_file().map_err(err)?;
            }
        }
        Ok(())
    }

    /// The periodic cleanup (Ironic's `clean_up`): removes abandoned temporary files and
    /// metadata or lock files without a master, evicts every expired unlinked entry, then
    /// the least recently used unlinked ones while the cache is over `max_bytes`. Entries
    /// being fetched or linked (their lock is held) are left alone.
    pub async fn clean(&self, now: i64) -> Result<CleanReport, CacheError> {
        let _one_at_a_time = self.inner.evicting.lock().await;
        let cache = self.clone();
        tokio::task::spawn_blocking(move || cache.clean_blocking(now))
            .await
            .map_err(|e| CacheError::joined(&e))?
    }

    fn clean_blocking(&self, now: i64) -> Result<CleanReport, CacheError> {
        let mut report = CleanReport::default();
        self.sweep_temps(&mut report)?;
        self.sweep_orphans(&mut report)?;
        let scanned = self.scan()?;
        let mut total: u64 = scanned.iter().map(|s| s.size).sum();
        let mut candidates: Vec<&Scanned> = scanned.iter().filter(|s| s.nlink == 1).collect();
        candidates.sort_by_key(|s| (!self.expired(s.last_used, now), s.last_used));
        for c in candidates {
            if !self.expired(c.last_used, now) && total <= self.inner.max_bytes {
                break;
            }
            if self.evict(&c.key, &mut report)? {
                total -= c.size;
            }
        }
        if total > self.inner.max_bytes {
            tracing::warn!(
                total,
                max = self.inner.max_bytes,
                "the image cache is over [pxe] image_cache_size with images that nodes use"
            );
        }
        Ok(report)
    }

    /// Removes `<key>.meta` and `<key>.lock` files whose master is gone.
    fn sweep_orphans(&self, report: &mut CleanReport) -> Result<(), CacheError> {
        let dir = &self.inner.dir;
        let err = |e: io::Error| CacheError::io(format!("cannot sweep {}", dir.display()), &e);
        let mut keys = Vec::new();
        for item in fs::read_dir(dir).map_err(err)? {
            let item = item.map_err(err)?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let base = name
                .strip_suffix(META_SUFFIX)
                .or_else(|| name.strip_suffix(LOCK_SUFFIX));
            if let Some(key) = base.and_then(|b| CacheKey::parse(b).ok())
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
        for key in keys {
            if self.master_path(&key).exists() {
                continue;
            }
            let Some(lock) = lock::try_lock(&self.lock_path(&key), false).map_err(err)? else {
                continue;
            };
            if self.master_path(&key).exists() {
                continue;
            }
            let meta_path = self.meta_path(&key);
            let meta = remove_if_exists(&meta_path).map_err(err)?;
            report.removed(&meta_path, meta);
            if lock.remove_file().map_err(err)? {
                report.removed(&self.lock_path(&key), Some(0));
            }
        }
        Ok(())
    }

    /// Every master image, sorted by key (`ironboot cache list`).
    pub async fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || cache.list_blocking())
            .await
            .map_err(|e| CacheError::joined(&e))?
    }

    fn list_blocking(&self) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        for s in self.scan()? {
            let path = self.master_path(&s.key);
            let entry = match self.load(&s.key) {
                Some((meta, nlink)) => self.entry(&s.key, &meta, nlink),
                None => Entry {
                    path,
                    size: s.size,
                    digests: Vec::new(),
                    source: None,
                    validator: None,
                    fetched_at: None,
                    last_used: s.last_used,
                    links: s.nlink.saturating_sub(1),
                    key: s.key,
                },
            };
            out.push(entry);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Hardlinks (or copies, across filesystems) the master of `key` to `dest`, replacing
    /// `dest` atomically, under a shared lock of the key so an eviction cannot remove the
    /// master in between. Fails with [`CacheError::Evicted`] when the master is gone.
    pub async fn link(&self, key: &CacheKey, dest: &Path) -> Result<Linked, CacheError> {
        let lock_path = self.lock_path(key);
        let master = self.master_path(key);
        let dest = dest.to_path_buf();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = lock::lock(&lock_path, true)
                .map_err(|e| CacheError::io(format!("cannot lock {key}"), &e))?;
            let mut linked = link::link(&master, &dest);
            // the node's directory can be removed meanwhile (its mirror config went, and
            // the directory was empty): make it again
            for _ in 0..3 {
                match &linked {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && master.exists() => {
                        if let Some(dir) = dest.parent() {
                            std::fs::create_dir_all(dir).map_err(|e| {
                                CacheError::io(format!("cannot create {}", dir.display()), &e)
                            })?;
                        }
                        linked = link::link(&master, &dest);
                    }
                    _ => break,
                }
            }
            match linked {
                Ok(l) => Ok(l),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !master.exists() => {
                    Err(CacheError::Evicted {
                        key: key.to_string(),
                    })
                }
                Err(e) => Err(CacheError::io(
                    format!("cannot link {key} to {}", dest.display()),
                    &e,
                )),
            }
        })
        .await
        .map_err(|e| CacheError::joined(&e))?
    }
}

fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Opens the origin for a full download: an answer without bytes is the origin's error.
async fn open_body(
    origin: &dyn Origin,
    known: Option<&Validator>,
) -> Result<OriginBody, CacheError> {
    match origin.open(known).await? {
        Opened::Body(b) => Ok(b),
        Opened::NotModified(_) => Err(CacheError::Status {
            origin: origin.describe(),
            status: 304,
        }),
    }
}

/// The digest of a file (blocking).
fn hash_file(path: &Path, algo: Algo) -> io::Result<Digest> {
    let mut f = fs::File::open(path)?;
    let mut h = digest::Hasher::new(algo);
    let mut buf = vec![0; HASH_CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
