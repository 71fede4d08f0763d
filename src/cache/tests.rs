//! The cache against a real HTTP server (axum on 127.0.0.1) and real files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;

use super::*;

/// How the test server sends an object's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Half the body, then nothing for 30 s.
    Stall,
    /// Half the body, then the connection is closed (Content-Length announces all).
    Cut,
    /// Chunked, no Content-Length.
    NoLength,
}

#[derive(Debug)]
struct Object {
    body: Bytes,
    etag: String,
    mode: Mode,
}

#[derive(Debug, Default)]
struct ServerState {
    objects: Mutex<HashMap<String, Object>>,
    /// Every GET.
    gets: AtomicUsize,
    /// GETs with If-None-Match.
    conditional: AtomicUsize,
    /// 304 answers.
    not_modified: AtomicUsize,
    /// Held (written) by a test, answers wait until it lets go.
    gate: tokio::sync::RwLock<()>,
}

/// Polls `ready` every 10 ms; fails after 10 s with `what`.
async fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether this process waits for a `flock` of `path` (a `->` line of /proc/locks).
fn flock_waiter(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = fs::metadata(path).map(|m| m.ino().to_string()) else {
        return false;
    };
    let pid = std::process::id().to_string();
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(1) == Some(&"->")
                && w.get(2) == Some(&"FLOCK")
                && w.get(5) == Some(&pid.as_str())
                && w.get(6).and_then(|d| d.rsplit(':').next()) == Some(ino.as_str())
        })
}

struct Server {
    base: String,
    state: Arc<ServerState>,
    client: reqwest::Client,
}

const READ_TIMEOUT: Duration = Duration::from_millis(1500);

impl Server {
    async fn start() -> Server {
        let state = Arc::new(ServerState::default());
        let app = Router::new()
            .route("/{*path}", get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = HttpOrigin::client(Duration::from_secs(2), READ_TIMEOUT).unwrap();
        Server {
            base,
            state,
            client,
        }
    }

    fn put(&self, path: &str, body: &[u8], etag: &str, mode: Mode) {
        self.state.objects.lock().unwrap().insert(
            path.to_string(),
            Object {
                body: Bytes::copy_from_slice(body),
                etag: format!("\"{etag}\""),
                mode,
            },
        );
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn origin(&self, path: &str) -> Arc<dyn Origin> {
        Arc::new(HttpOrigin::new(self.client.clone(), &self.url(path), Some(READ_TIMEOUT)).unwrap())
    }

    fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// Holds every answer until the guard is dropped.
    async fn close_gate(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.state.gate.write().await
    }
}

async fn serve(
    State(st): State<Arc<ServerState>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    st.gets.fetch_add(1, Ordering::SeqCst);
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if inm.is_some() {
        st.conditional.fetch_add(1, Ordering::SeqCst);
    }
    drop(st.gate.read().await);
    let (body, etag, mode) = {
        let objects = st.objects.lock().unwrap();
        let Some(o) = objects.get(&path) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        (o.body.clone(), o.etag.clone(), o.mode)
    };
    if inm.as_deref() == Some(etag.as_str()) {
        st.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let len = body.len();
    let half = body.slice(..len / 2);
    let rest = body.slice(len / 2..);
    let stream_body = match mode {
        Mode::Normal => Body::from(body),
        Mode::NoLength => Body::from_stream(futures_util::stream::iter([
            Ok::<_, io::Error>(half),
            Ok(rest),
        ])),
        Mode::Cut => Body::from_stream(futures_util::stream::iter([
            Ok::<_, io::Error>(half),
            Err(io::Error::other("cut")),
        ])),
        Mode::Stall => Body::from_stream(
            futures_util::stream::iter([Ok::<_, io::Error>(half)]).chain(
                // never sends the rest: the client's read timeout must end it
                futures_util::stream::once(async move {
                    std::future::pending::<()>().await;
                    Ok(rest)
                }),
            ),
        ),
    };
    let mut resp = Response::new(stream_body);
    resp.headers_mut()
        .insert(header::ETAG, etag.parse().unwrap());
    if mode != Mode::NoLength {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
    }
    resp
}

const DAY: Duration = Duration::from_secs(86_400);
const NOW: i64 = 1_800_000_000;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn temp_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(TMP_PREFIX))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    let mut h = digest::Hasher::new(Algo::Sha256);
    h.update(bytes);
    h.finish().hex
}

fn open(dir: &Path, max_bytes: u64) -> MasterCache {
    MasterCache::open(dir, max_bytes, DAY).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_fetches_make_one_download() {
    let server = Server::start().await;
    let body = vec![7u8; 300_000];
    server.put("deploy.kernel", &body, "v1", Mode::Normal);
    let gate = server.close_gate().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("deploy.kernel"));
    let expected = Expected::new(Algo::Sha256, &sha256(&body)).unwrap();
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    // a fetch joins (or starts) the key's flight on its first poll, in the same step as
    // the count: at 20, all twenty are in the one flight, held by the closed gate
    let entered = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let p = Progress::new();
        progress.push(p.clone());
        let (cache, key, origin, expected, entered) = (
            cache.clone(),
            key.clone(),
            server.origin("deploy.kernel"),
            expected.clone(),
            entered.clone(),
        );
        tasks.push(tokio::spawn(async move {
            entered.fetch_add(1, Ordering::SeqCst);
            cache
                .fetch(&key, origin, Some(expected), Some(p), NOW)
                .await
        }));
    }
    wait_until(
        "twenty fetches in flight and the download asked for",
        || entered.load(Ordering::SeqCst) == 20 && server.gets() == 1,
    )
    .await;
    drop(gate);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(server.gets(), 1, "one download for twenty fetches");
    assert!(
        results.iter().all(|r| *r == results[0]),
        "one shared result"
    );
    assert_eq!(results[0].outcome, Outcome::Downloaded);
    assert_eq!(fs::read(&results[0].entry.path).unwrap(), body);
    assert_eq!(results[0].entry.digests[0].hex, expected.hex());
    for p in progress {
        assert_eq!((p.done(), p.total()), (300_000, Some(300_000)));
    }
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_on_one_directory_download_once() {
    let server = Server::start().await;
    server.put("ramdisk", b"initramfs bytes", "r1", Mode::Normal);
    let gate = server.close_gate().await;
    let dir = tempfile::tempdir().unwrap();
    // Two caches: separate in-process flights, so only the file lock can join them.
    let a = open(dir.path(), 1 << 30);
    let b = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("ramdisk"));
    let fetch = |c: &MasterCache| {
        let (c, key, origin) = (c.clone(), key.clone(), server.origin("ramdisk"));
        tokio::spawn(async move { c.fetch(&key, origin, None, None, NOW).await })
    };
    let (ta, tb) = (fetch(&a), fetch(&b));
    // one downloads (held by the gate) while the other waits on the key's flock
    let lock = dir.path().join(format!("{key}.lock"));
    wait_until("one download and one fetch blocked on the lock", || {
        server.gets() == 1 && flock_waiter(&lock)
    })
    .await;
    drop(gate);
    let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
    assert_eq!(
        server.gets(),
        1,
        "the second waited for the lock and reused the file"
    );
    let mut outcomes = [ra.outcome, rb.outcome];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Outcome::Downloaded, Outcome::Shared]);
    assert_eq!(ra.entry.digests, rb.entry.digests);
}

#[tokio::test]
async fn a_checksum_mismatch_discards_the_download() {
    let server = Server::start().await;
    server.put("k", b"the real kernel", "e", Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("k"));
    let wrong = sha256(b"another kernel");
    let err = cache
        .fetch(
            &key,
            server.origin("k"),
            Some(Expected::new(Algo::Sha256, &wrong).unwrap()),
            None,
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageChecksumMismatch);
    let text = err.to_string();
    assert!(
        text.contains(&wrong) && text.contains(&sha256(b"the real kernel")),
        "{text}"
    );
    assert!(
        names(dir.path()).iter().all(|n| n.ends_with(LOCK_SUFFIX)),
        "{:?}",
        names(dir.path())
    );
    // The right sha512 (Glance's usual algorithm) is accepted.
    let mut h = digest::Hasher::new(Algo::Sha512);
    h.update(b"the real kernel");
    let right = Expected::from_glance(Some("sha512"), Some(&h.finish().hex), None)
        .unwrap()
        .unwrap();
    let ok = cache
        .fetch(&key, server.origin("k"), Some(right), None, NOW)
        .await
        .unwrap();
    assert_eq!(ok.outcome, Outcome::Downloaded);
    assert_eq!(ok.entry.digests[0].algo, Algo::Sha512);
}

#[tokio::test]
async fn a_body_cut_or_stalled_midway_leaves_no_file() {
    let server = Server::start().await;
    let body = vec![1u8; 1 << 20];
    server.put("cut", &body, "c", Mode::Cut);
    server.put("stall", &body, "s", Mode::Stall);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("cut"));
    let progress = Progress::new();
    let err = cache
        .fetch(
            &key,
            server.origin("cut"),
            None,
            Some(progress.clone()),
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageSourceUnreachable, "{err}");
    assert_eq!(progress.total(), Some(1 << 20));
    assert!(progress.done() < 1 << 20);
    let key2 = CacheKey::url(&server.url("stall"));
    let err = cache
        .fetch(&key2, server.origin("stall"), None, None, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageSourceTimeout, "{err}");
    assert!(err.to_string().contains("1500 ms"), "{err}");
    for n in names(dir.path()) {
        assert!(n.ends_with(LOCK_SUFFIX), "{n} left behind");
    }
    assert!(!cache.master_path(&key).exists() && !cache.master_path(&key2).exists());
}

#[tokio::test]
async fn leftover_temp_files_are_swept_on_open_and_by_clean() {
    let dir = tempfile::tempdir().unwrap();
    let key = CacheKey::url("http://h/k");
    let busy = CacheKey::url("http://h/busy");
    let abandoned = dir.path().join(format!(".tmp-{key}-0123abcd"));
    let in_flight = dir.path().join(format!(".tmp-{busy}-4567ef01"));
    let foreign = dir.path().join("notes.txt");
    fs::write(&abandoned, vec![0u8; 1000]).unwrap();
    fs::write(&in_flight, b"being written").unwrap();
    fs::write(&foreign, b"not the cache's").unwrap();
    // Another process writing `busy` holds its lock.
    let held = lock::try_lock(&dir.path().join(format!("{busy}.lock")), false)
        .unwrap()
        .unwrap();
    let (cache, report) = MasterCache::open(dir.path(), 1 << 30, DAY).unwrap();
    assert!(!abandoned.exists());
    assert!(
        in_flight.exists(),
        "a file whose key is locked is being written"
    );
    assert!(foreign.exists());
    assert_eq!(report.files_removed, 1, "{report:?}");
    assert_eq!(report.bytes_freed, 1000);
    // Its writer died: clean removes it and the lock file.
    drop(held);
    let report = cache.clean(NOW).await.unwrap();
    assert!(!in_flight.exists());
    assert_eq!(report.bytes_freed, 13);
    assert_eq!(names(dir.path()), ["notes.txt"]);
}

#[tokio::test]
async fn revalidation_reuses_or_refetches_and_old_links_keep_old_bytes() {
    let server = Server::start().await;
    server.put("k", b"version one", "v1", Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("k"));
    let first = cache
        .fetch(&key, server.origin("k"), None, None, NOW)
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Downloaded);
    assert_eq!(
        first
            .entry
            .validator
            .as_ref()
            .and_then(|v| v.etag.as_deref()),
        Some("\"v1\"")
    );
    let second = cache
        .fetch(&key, server.origin("k"), None, None, NOW + 60)
        .await
        .unwrap();
    assert_eq!(second.outcome, Outcome::NotModified);
    assert_eq!(second.entry.last_used, NOW + 60);
    assert_eq!(server.gets(), 2);
    assert_eq!(server.state.conditional.load(Ordering::SeqCst), 1);
    assert_eq!(server.state.not_modified.load(Ordering::SeqCst), 1);

    // A node prepared with version one.
    let node = dir.path().join("http_root").join("node-1");
    fs::create_dir_all(&node).unwrap();
    let dest = node.join("deploy_kernel");
    assert_eq!(cache.link(&key, &dest).await.unwrap(), Linked::Hardlink);
    assert_eq!(cache.list().await.unwrap()[0].links, 1);

    server.put("k", b"version two!", "v2", Mode::Normal);
    let third = cache
        .fetch(&key, server.origin("k"), None, None, NOW + 120)
        .await
        .unwrap();
    assert_eq!(third.outcome, Outcome::Downloaded);
    assert_eq!(server.gets(), 3);
    assert_eq!(fs::read(&third.entry.path).unwrap(), b"version two!");
    assert_eq!(
        fs::read(&dest).unwrap(),
        b"version one",
        "the node keeps its file"
    );
    assert_eq!(third.entry.links, 0, "a new inode");
    // Reading back what is stored.
    let listed = cache.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], third.entry);
    assert_eq!(listed[0].source.as_deref(), Some(server.url("k").as_str()));
    assert_eq!(listed[0].fetched_at, Some(NOW + 120));
}

#[tokio::test]
async fn a_changed_expected_checksum_downloads_again() {
    let server = Server::start().await;
    server.put("k", b"old", "same-etag", Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = CacheKey::url(&server.url("k"));
    cache
        .fetch(&key, server.origin("k"), None, None, NOW)
        .await
        .unwrap();
    // Same ETag (a server that lies), but the caller now expects other bytes.
    server.put("k", b"new", "same-etag", Mode::Normal);
    let want = Expected::new(Algo::Sha256, &sha256(b"new")).unwrap();
    let r = cache
        .fetch(&key, server.origin("k"), Some(want), None, NOW)
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Downloaded);
    assert_eq!(fs::read(&r.entry.path).unwrap(), b"new");
    assert_eq!(server.state.conditional.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn file_origins_revalidate_by_size_and_mtime() {
    let src = tempfile::tempdir().unwrap();
    let image = src.path().join("ipa.kernel");
    fs::write(&image, b"kernel one").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let url = format!("file://{}", image.display());
    let key = CacheKey::url(&url);
    let origin: Arc<dyn Origin> = Arc::new(FileOrigin::from_url(&url).unwrap());
    let a = cache
        .fetch(&key, origin.clone(), None, None, NOW)
        .await
        .unwrap();
    assert_eq!(a.outcome, Outcome::Downloaded);
    let b = cache
        .fetch(&key, origin.clone(), None, None, NOW)
        .await
        .unwrap();
    assert_eq!(b.outcome, Outcome::NotModified);
    fs::write(&image, b"kernel number two").unwrap();
    let c = cache.fetch(&key, origin, None, None, NOW).await.unwrap();
    assert_eq!(c.outcome, Outcome::Downloaded);
    assert_eq!(fs::read(&c.entry.path).unwrap(), b"kernel number two");
    let missing: Arc<dyn Origin> = Arc::new(FileOrigin::new("/nonexistent/k").unwrap());
    let err = cache
        .fetch(
            &CacheKey::url("file:///nonexistent/k"),
            missing,
            None,
            None,
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageNotFound);
}

/// Files of `size` bytes as file origins, fetched at the given times.
async fn fetch_file(
    cache: &MasterCache,
    src: &Path,
    name: &str,
    size: usize,
    now: i64,
) -> CacheKey {
    let path = src.join(name);
    fs::write(&path, vec![b'x'; size]).unwrap();
    let key = CacheKey::glance(name).unwrap();
    cache
        .fetch(
            &key,
            Arc::new(FileOrigin::new(&path).unwrap()),
            None,
            None,
            now,
        )
        .await
        .unwrap();
    key
}

fn keys(cache: &MasterCache) -> Vec<String> {
    let mut v: Vec<String> = names(cache.dir())
        .into_iter()
        .filter(|n| CacheKey::parse(n).is_ok())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn eviction_takes_expired_then_oldest_and_never_linked_files() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = MasterCache::open(dir.path(), 40, Duration::from_secs(1500))
        .unwrap()
        .0;
    fetch_file(&cache, src.path(), "a", 10, 1000).await;
    fetch_file(&cache, src.path(), "b", 10, 2000).await;
    fetch_file(&cache, src.path(), "c", 10, 2600).await;
    // 30 + 20 > 40: one must go; "a" expired (1000 < 3000 - 1500).
    fetch_file(&cache, src.path(), "big", 20, 3000).await;
    assert_eq!(keys(&cache), ["b", "big", "c"]);
    // "b" is the oldest, but a node uses it.
    let node = src.path().join("node");
    fs::create_dir(&node).unwrap();
    cache
        .link(&CacheKey::glance("b").unwrap(), &node.join("k"))
        .await
        .unwrap();
    fetch_file(&cache, src.path(), "d", 10, 3100).await;
    assert_eq!(keys(&cache), ["b", "big", "d"], "c went, not the linked b");
    assert!(!dir.path().join("c.meta").exists() && !dir.path().join("c.lock").exists());
    // Too big even after evicting all unlinked entries: refused, nothing evicted.
    let path = src.path().join("huge");
    fs::write(&path, vec![0u8; 31]).unwrap();
    let err = cache
        .fetch(
            &CacheKey::glance("huge").unwrap(),
            Arc::new(FileOrigin::new(&path).unwrap()),
            None,
            None,
            3200,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CacheError::CacheFull {
            needed: 31,
            available: 30
        }
    );
    assert_eq!(err.code(), ErrorCode::CacheFull);
    assert_eq!(keys(&cache), ["b", "big", "d"]);
    // clean, much later: every expired unlinked entry goes; the linked one stays.
    let report = cache.clean(10_000).await.unwrap();
    let mut evicted: Vec<String> = report.evicted.iter().map(|k| k.to_string()).collect();
    evicted.sort();
    assert_eq!(evicted, ["big", "d"]);
    assert_eq!(keys(&cache), ["b"]);
    assert!(report.bytes_freed >= 30, "{report:?}");
    // Once the node's file is gone, "b" can go too.
    fs::remove_file(node.join("k")).unwrap();
    cache.clean(10_000).await.unwrap();
    assert!(names(cache.dir()).is_empty(), "{:?}", names(cache.dir()));
}

#[tokio::test]
async fn clean_enforces_max_bytes_oldest_first() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100);
    for (i, name) in ["p", "q", "r"].iter().enumerate() {
        fetch_file(&cache, src.path(), name, 30, NOW + i as i64).await;
    }
    // Another cache with a smaller limit on the same directory (a changed config).
    let small = open(dir.path(), 65);
    let report = small.clean(NOW + 10).await.unwrap();
    assert_eq!(report.evicted, [CacheKey::glance("p").unwrap()]);
    assert_eq!(keys(&small), ["q", "r"]);
}

#[tokio::test]
async fn a_full_cache_fails_before_the_body_is_read() {
    let server = Server::start().await;
    server.put("big", &[5u8; 5000], "b", Mode::Normal);
    server.put("chunked", &[5u8; 5000], "c", Mode::NoLength);
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 4096);
    let progress = Progress::new();
    let key = CacheKey::url(&server.url("big"));
    let err = cache
        .fetch(
            &key,
            server.origin("big"),
            None,
            Some(progress.clone()),
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CacheError::CacheFull {
            needed: 5000,
            available: 4096
        }
    );
    assert_eq!(progress.done(), 0, "no byte of the body was read");
    assert!(temp_files(dir.path()).is_empty());
    // Without a length, the limit stops the download once it is passed.
    let err = cache
        .fetch(
            &CacheKey::url(&server.url("chunked")),
            server.origin("chunked"),
            None,
            None,
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CacheFull);
    assert!(temp_files(dir.path()).is_empty());
    assert!(keys(&cache).is_empty());
}

#[tokio::test]
async fn a_full_disk_evicts_then_refuses() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The disk has 15 bytes free, plus whatever the cache's own files free.
    let cache = open(dir.path(), 1 << 30);
    fetch_file(&cache, src.path(), "old", 10, NOW).await;
    let d = dir.path().to_path_buf();
    let cache = MasterCache::open(dir.path(), 1 << 30, DAY)
        .unwrap()
        .0
        .with_free_space(move |_| {
            // Master files only: metadata and locks are small enough to ignore.
            let used: u64 = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| CacheKey::parse(&e.file_name().to_string_lossy()).is_ok())
                .map(|e| e.metadata().unwrap().len())
                .sum();
            Ok(25u64.saturating_sub(used))
        });
    // 20 bytes: 15 free, evicting "old" frees 10 more.
    let new = fetch_file(&cache, src.path(), "new", 20, NOW + 1).await;
    assert_eq!(keys(&cache), ["new"]);
    // A node uses "new": 5 bytes free and nothing to evict.
    cache
        .link(&new, &src.path().join("node-file"))
        .await
        .unwrap();
    let path = src.path().join("more");
    fs::write(&path, vec![0u8; 20]).unwrap();
    let err = cache
        .fetch(
            &CacheKey::glance("more").unwrap(),
            Arc::new(FileOrigin::new(&path).unwrap()),
            None,
            None,
            NOW + 2,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CacheError::CacheFull {
            needed: 20,
            available: 5
        }
    );
    assert_eq!(keys(&cache), ["new"]);
}

#[tokio::test]
async fn messages_hold_no_query_string_or_header() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let url = server.url("missing?temp_url_sig=SECRETSIG&temp_url_expires=1");
    let client = reqwest::Client::new();
    let origin = HttpOrigin::new(client, &url, None).unwrap().header(
        header::HeaderName::from_static("x-auth-token"),
        header::HeaderValue::from_static("SECRETTOKEN"),
    );
    assert!(!format!("{origin:?}").contains("SECRET"));
    let err = cache
        .fetch(&CacheKey::url(&url), Arc::new(origin), None, None, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageNotFound);
    assert!(!err.to_string().contains("SECRET"), "{err}");
    // Unreachable: reqwest's own message names the URL; ours does not.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}/k?sig=SECRETSIG");
    let origin = HttpOrigin::new(reqwest::Client::new(), &url, None).unwrap();
    let err = cache
        .fetch(&CacheKey::url(&url), Arc::new(origin), None, None, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ImageSourceUnreachable);
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[tokio::test]
async fn link_reports_an_evicted_master() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let key = fetch_file(&cache, src.path(), "gone", 10, NOW).await;
    cache.clean(NOW + 2 * 86_400).await.unwrap();
    let err = cache
        .link(&key, &dir.path().join("dest"))
        .await
        .unwrap_err();
    assert_eq!(err, CacheError::Evicted { key: "gone".into() });
    assert_eq!(err.code(), ErrorCode::CacheIo);
}
