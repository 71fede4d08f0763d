//! Three `ironboot serve` processes sharing one real PostgreSQL database, with 300 nodes:
//! the ring splits them, a write on one conductor is served by the others within the
//! stated bound, a conductor killed with SIGKILL has its nodes taken over within
//! `heartbeat_timeout` plus one ring refresh, and a clean stop hands its nodes over while a
//! client polling every node's script never sees a failure. Once in swift mode and once in
//! cache mode, where scripts name the live owner's `http_url`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::cli::{Serving, sigterm, start_serve};
use crate::support::origin::Origin;
use crate::support::server::{drop_postgres_db, fresh_postgres_db, random_mac};
use crate::support::swift::{account_with_keys, proxy_url};
use crate::support::{ironboot_bin, unique};

const NODES: usize = 300;
/// `[conductor] heartbeat_interval` and `heartbeat_timeout` of the test conductors.
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// The stated bound on how stale a conductor's boot index is after another conductor's
/// write (docs/operations.md, "Several conductors").
const STALENESS_BOUND: Duration = Duration::from_secs(1);

struct Conductor {
    host: String,
    serving: Option<Serving>,
    api: String,
    boot: String,
    http_root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Conductor {
    fn start(host: &str, db: &str, extra: &str) -> Conductor {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("ironboot.conf");
        let state = dir.path().join("state");
        let http_root = state.join("httpboot");
        let serving = start_serve(|api, boot| {
            std::fs::write(
                &conf,
                format!(
                    "[DEFAULT]\nhost = {host}\nstate_path = {state}\n\
                     [database]\nconnection = {db}\n\
                     [api]\nport = {api}\n[httpboot]\nport = {boot}\n\
                     [deploy]\nhttp_root = {root}\n\
                     [conductor]\nheartbeat_interval = {hb}\nheartbeat_timeout = {ht}\nindex_resync_interval = 5\n{extra}",
                    state = state.display(),
                    root = http_root.display(),
                    hb = HEARTBEAT.as_secs(),
                    ht = HEARTBEAT_TIMEOUT.as_secs(),
                ),
            )
            .unwrap();
            let mut cmd = Command::new(ironboot_bin());
            cmd.env_remove("IRONBOOT_CONFIG")
                .env("RUST_LOG", "info")
                .arg("--config")
                .arg(&conf)
                .arg("serve");
            cmd
        });
        Conductor {
            host: host.to_string(),
            api: format!("http://{}", serving.api),
            boot: format!("http://{}", serving.boot),
            serving: Some(serving),
            http_root,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.serving
            .as_ref()
            .map(|s| s.log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// SIGKILL: no unregistering, no cleanup.
    fn kill(&mut self) {
        let mut serving = self.serving.take().unwrap();
        serving.child.kill().unwrap();
        serving.child.wait().unwrap();
    }

    /// The nodes whose config this conductor's static mirror holds.
    fn mirror(&self) -> HashSet<String> {
        mirror_nodes(&self.http_root)
    }
}

impl Drop for Conductor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.host, self.log());
        }
        if let Some(mut s) = self.serving.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

fn mirror_nodes(root: &Path) -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| uuid::Uuid::try_parse(n).is_ok())
        .collect()
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Polls `check` every 20 ms until it returns `Ok`; fails after `within` with the last
/// `Err`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return start.elapsed(),
            Err(why) if start.elapsed() > within => {
                panic!("{what}: not within {within:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Every node, as `GET /v1/nodes` on `api` lists them (one page: fewer than max_limit).
async fn nodes(http: &Client, api: &str) -> Vec<Value> {
    let body: Value = http
        .get(format!("{api}/v1/nodes?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("next").is_none(), "one page");
    body["nodes"].as_array().unwrap().clone()
}

/// uuid → owner (`conductor`) of every node, as `api` reports it.
async fn owners(http: &Client, api: &str) -> BTreeMap<String, String> {
    nodes(http, api)
        .await
        .iter()
        .map(|n| {
            (
                n["uuid"].as_str().unwrap().to_string(),
                n["conductor"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Checks that the live conductors agree on the owners, that every owner is live, that
/// each live conductor's mirror holds exactly its nodes, and that no reservation is held.
async fn settled(http: &Client, live: &[&Conductor], all: &HashSet<String>) -> Result<(), String> {
    let names: HashSet<&str> = live.iter().map(|c| c.host.as_str()).collect();
    let list = nodes(http, &live[0].api).await;
    if let Some(n) = list
        .iter()
        .find(|n| n.get("reservation").is_some_and(|r| !r.is_null()))
    {
        return Err(format!("a reservation is held: {n}"));
    }
    let first = owners(http, &live[0].api).await;
    for c in &live[1..] {
        if owners(http, &c.api).await != first {
            return Err(format!(
                "{} and {} disagree on owners",
                live[0].host, c.host
            ));
        }
    }
    if first.keys().cloned().collect::<HashSet<_>>() != *all {
        return Err("the node list is not the 300 nodes".into());
    }
    if let Some((u, o)) = first.iter().find(|(_, o)| !names.contains(o.as_str())) {
        return Err(format!("node {u} is owned by {o:?}, not a live conductor"));
    }
    for c in live {
        let mine: HashSet<String> = first
            .iter()
            .filter(|(_, o)| **o == c.host)
            .map(|(u, _)| u.clone())
            .collect();
        if mine.is_empty() {
            return Err(format!("{} owns nothing", c.host));
        }
        let mirror = c.mirror();
        if mirror != mine {
            return Err(format!(
                "{}'s mirror has {} configs; it owns {} nodes ({} missing, {} extra)",
                c.host,
                mirror.len(),
                mine.len(),
                mine.difference(&mirror).count(),
                mirror.difference(&mine).count()
            ));
        }
    }
    Ok(())
}

/// The script conductor `boot` serves for `mac`.
async fn script(http: &Client, boot: &str, mac: &str) -> (StatusCode, String) {
    let r = http
        .get(format!("{boot}/pxelinux.cfg/{}", mac.replace(':', "-")))
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The kernel URL of a script.
fn kernel_url(script: &str) -> Option<String> {
    script
        .lines()
        .find(|l| l.starts_with("kernel "))?
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .map(str::to_string)
}

/// Creates `NODES` nodes through the conductors in turn, each with `driver_info`, and
/// sets their target to deploy; returns uuid → MAC.
async fn create_nodes(
    http: &Client,
    cs: &[&Conductor],
    driver_info: Value,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for chunk in (0..NODES).collect::<Vec<_>>().chunks(25) {
        let jobs = chunk.iter().map(|i| {
            let api = cs[i % cs.len()].api.clone();
            let http = http.clone();
            let driver_info = driver_info.clone();
            async move {
                let mac = random_mac();
                let r = http
                    .post(format!("{api}/v1/nodes"))
                    .json(&json!({"macs": [mac], "driver_info": driver_info}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                let n: Value = r.json().await.unwrap();
                let uuid = n["uuid"].as_str().unwrap().to_string();
                let r = http
                    .put(format!("{api}/v1/nodes/{uuid}/boot"))
                    .json(&json!({"target": "deploy"}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                assert!(status.is_success(), "{status}: {}", r.text().await.unwrap());
                (uuid, mac)
            }
        });
        out.extend(futures_util::future::join_all(jobs).await);
    }
    out
}

/// A client polling every node's script on `boot` (and, with `fetch_kernels`, the
/// kernel each names) until stopped; counts rounds and failures.
struct Poller {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(http: Client, boot: String, macs: Vec<String>, fetch_kernels: bool) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (stop, rounds, failures) = (stop.clone(), rounds.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    for chunk in macs.chunks(30) {
                        let jobs = chunk.iter().map(|mac| {
                            let (http, boot) = (http.clone(), boot.clone());
                            async move {
                                let (st, text) = script(&http, &boot, mac).await;
                                if st != StatusCode::OK {
                                    return Err(format!("{mac}: script {st}"));
                                }
                                if fetch_kernels {
                                    let url =
                                        kernel_url(&text).ok_or(format!("{mac}: no kernel"))?;
                                    match http.get(&url).send().await {
                                        Ok(r) if r.status() == StatusCode::OK => {}
                                        Ok(r) => {
                                            return Err(format!("{mac}: {url}: {}", r.status()));
                                        }
                                        Err(e) => return Err(format!("{mac}: {url}: {e}")),
                                    }
                                }
                                Ok(())
                            }
                        });
                        for r in futures_util::future::join_all(jobs).await {
                            if let Err(e) = r {
                                failures.lock().unwrap().push(e);
                            }
                        }
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Poller {
            stop,
            rounds,
            failures,
            task,
        }
    }

    fn rounds(&self) -> usize {
        self.rounds.load(Ordering::SeqCst)
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.rounds.load(Ordering::SeqCst), failures)
    }
}

impl Conductor {
    /// SIGTERM, and waits for a clean exit; returns the log.
    fn stop_cleanly(&mut self) -> String {
        let serving = self.serving.take().unwrap();
        sigterm(&serving.child);
        let (status, log) = serving.wait(Duration::from_secs(30));
        assert!(status.success(), "{log}");
        log
    }
}

impl Poller {
    /// Stops polling after one more round, and asserts that no poll failed.
    async fn finish_clean(self, what: &str) {
        more_rounds(&self, 1).await;
        let (rounds, failures) = self.finish().await;
        assert!(
            failures.is_empty(),
            "{what}: {} failures in {rounds} rounds: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
}

/// Waits for `poller` to finish `n` more rounds.
async fn more_rounds(poller: &Poller, n: usize) {
    let target = poller.rounds() + n;
    wait_until(Duration::from_secs(60), "poll rounds", || async {
        if poller.rounds() >= target {
            Ok(())
        } else {
            Err("polling".into())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_conductors_share_300_nodes_in_swift_mode() {
    let keys = account_with_keys().await;
    let container = unique("it-multi");
    keys.account.put_container(&container, &[]).await;
    keys.account
        .put_object(&container, "k", b"kernel".to_vec())
        .await;
    keys.account
        .put_object(&container, "r", b"ramdisk".to_vec())
        .await;
    let db = fresh_postgres_db().await;
    let swift = format!(
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = {p}\nswift_internal_endpoint_url = {p}\n\
         swift_account = AUTH_test\nswift_temp_url_key = {key}\n",
        p = proxy_url(),
        key = keys.key1
    );
    let http = http();
    let c1 = Conductor::start("multi-1", &db, &swift);
    let mut c2 = Conductor::start("multi-2", &db, &swift);
    let mut c3 = Conductor::start("multi-3", &db, &swift);
    let macs = create_nodes(
        &http,
        &[&c1, &c2, &c3],
        json!({"deploy_kernel": format!("swift://{container}/k"), "deploy_ramdisk": format!("swift://{container}/r")}),
    )
    .await;
    let all: HashSet<String> = macs.keys().cloned().collect();
    wait_until(
        Duration::from_secs(20),
        "the ring splits the nodes",
        || async { settled(&http, &[&c1, &c2, &c3], &all).await },
    )
    .await;

    // any conductor serves any node's script, signed for Swift
    for (i, mac) in macs.values().enumerate() {
        let c = [&c1, &c2, &c3][i % 3];
        let (st, text) = script(&http, &c.boot, mac).await;
        assert_eq!(st, StatusCode::OK, "{text}");
        assert!(
            text.contains(&format!("/{container}/k?temp_url_sig=")),
            "{text}"
        );
    }

    // staleness: a write on one conductor is served by another within the stated bound;
    // each node goes to local boot (no kernel line) and back to deploy
    let mut worst = Duration::ZERO;
    for (n, (uuid, mac)) in macs.iter().take(20).enumerate() {
        let (writer, reader) = if n % 2 == 0 { (&c1, &c2) } else { (&c3, &c1) };
        for (target, kernel) in [("local", false), ("deploy", true)] {
            let r = http
                .put(format!("{}/v1/nodes/{uuid}/boot", writer.api))
                .json(&json!({"target": target}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let took = wait_until(
                STALENESS_BOUND,
                "another conductor serves the write",
                || async {
                    let (_, text) = script(&http, &reader.boot, mac).await;
                    if kernel_url(&text).is_some() == kernel {
                        Ok(())
                    } else {
                        Err(format!("old script for {target}"))
                    }
                },
            )
            .await;
            worst = worst.max(took);
        }
    }
    eprintln!("staleness after a write on another conductor: worst of 40 = {worst:?}");

    // kill -9: within heartbeat_timeout plus one ring refresh (and the 20 ms poll), the
    // dead conductor's nodes are owned, mirrored and served by the live ones
    let killed = Instant::now();
    c3.kill();
    let took = wait_until(
        HEARTBEAT_TIMEOUT + HEARTBEAT + Duration::from_secs(2),
        "the live conductors take over the dead one's nodes",
        || async { settled(&http, &[&c1, &c2], &all).await },
    )
    .await;
    eprintln!(
        "takeover after kill -9: {:?} after the kill ({took:?} of polling)",
        killed.elapsed()
    );
    for mac in macs.values() {
        for c in [&c1, &c2] {
            let (st, text) = script(&http, &c.boot, mac).await;
            assert_eq!(st, StatusCode::OK, "{text}");
            assert!(
                text.contains(&format!("/{container}/k?temp_url_sig=")),
                "{text}"
            );
        }
    }
    assert!(
        c1.log().contains("takeover done") || c2.log().contains("takeover done"),
        "{}",
        c1.log()
    );

    // a clean stop: c2 leaves at once, and no poll of c1 fails meanwhile
    let poller = Poller::start(
        http.clone(),
        c1.boot.clone(),
        macs.values().cloned().collect(),
        false,
    );
    more_rounds(&poller, 1).await;
    c2.stop_cleanly();
    wait_until(
        Duration::from_secs(5),
        "c1 takes every node at once",
        || async { settled(&http, &[&c1], &all).await },
    )
    .await;
    poller.finish_clean("clean stop").await;
    drop((c1, c2, c3));
    drop_postgres_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_conductors_cache_mode_scripts_name_the_live_owner() {
    let origin = Origin::start().await;
    origin.put("k", b"the kernel bytes");
    origin.put("r", b"the ramdisk bytes");
    let db = fresh_postgres_db().await;
    let cache = "[pxe]\nhttp_passthrough = false\n";
    let http = http();
    let c1 = Conductor::start("cache-1", &db, cache);
    let mut c2 = Conductor::start("cache-2", &db, cache);
    let mut c3 = Conductor::start("cache-3", &db, cache);
    let macs = create_nodes(
        &http,
        &[&c1, &c2, &c3],
        json!({"deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r")}),
    )
    .await;
    let all: HashSet<String> = macs.keys().cloned().collect();
    let ready = |api: String| {
        let http = http.clone();
        async move {
            let list = nodes(&http, &api).await;
            match list.iter().find(|n| n["state"] != "ready") {
                Some(n) => Err(format!("not ready: {n}")),
                None => Ok(()),
            }
        }
    };
    wait_until(Duration::from_secs(60), "every node ready", || {
        ready(c1.api.clone())
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "the ring splits the nodes",
        || async { settled(&http, &[&c1, &c2, &c3], &all).await },
    )
    .await;
    // each conductor fetched each image once, into its own cache
    assert!(origin.full_gets() <= 6, "{} GETs", origin.full_gets());

    // scripts, from any conductor, name the owner's http_url, which serves the bytes
    let boots: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(
        [&c1, &c2, &c3]
            .iter()
            .map(|c| (c.host.clone(), c.boot.clone()))
            .collect(),
    );
    let boot_of = |host: &str| -> String { boots.lock().unwrap()[host].clone() };
    let roots: std::sync::Mutex<BTreeMap<String, PathBuf>> = std::sync::Mutex::new(
        [&c1, &c2, &c3]
            .iter()
            .map(|c| (c.boot.clone(), c.http_root.clone()))
            .collect(),
    );
    let names_owner = |live: Vec<String>| {
        let http = http.clone();
        let macs = macs.clone();
        let api = c1.api.clone();
        let roots = roots.lock().unwrap().clone();
        let boots: Vec<(String, String)> = live.iter().map(|h| (h.clone(), boot_of(h))).collect();
        async move {
            let owners = owners(&http, &api).await;
            for (uuid, mac) in &macs {
                let owner = &owners[uuid];
                let Some((_, owner_boot)) = boots.iter().find(|(h, _)| h == owner) else {
                    return Err(format!("{uuid} owned by {owner}, not live"));
                };
                for (_, boot) in &boots {
                    let (st, text) = script(&http, boot, mac).await;
                    if st != StatusCode::OK {
                        return Err(format!("{mac}: {st}"));
                    }
                    let url = kernel_url(&text).unwrap_or_default();
                    if url != format!("{owner_boot}/{uuid}/deploy_kernel") {
                        return Err(format!(
                            "{uuid}: the script names {url}, the owner is {owner} at {owner_boot}"
                        ));
                    }
                }
                let r = http
                    .get(format!("{owner_boot}/{uuid}/deploy_kernel"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let bytes = r.bytes().await.unwrap();
                if &bytes[..] != b"the kernel bytes" {
                    let dir = roots[owner_boot].join(uuid);
                    let listing: Vec<_> = std::fs::read_dir(&dir)
                        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "{uuid}: the owner answers {status}: {}; {} has {listing:?}",
                        String::from_utf8_lossy(&bytes),
                        dir.display()
                    ));
                }
            }
            Ok(())
        }
    };
    wait_until(Duration::from_secs(10), "scripts name the owner", || {
        names_owner(vec!["cache-1".into(), "cache-2".into(), "cache-3".into()])
    })
    .await;

    // kill -9: the new owners fetch the images, then their scripts name them
    c3.kill();
    wait_until(
        HEARTBEAT_TIMEOUT + HEARTBEAT + Duration::from_secs(10),
        "the live conductors take over and serve the dead one's nodes",
        || async {
            settled(&http, &[&c1, &c2], &all).await?;
            names_owner(vec!["cache-1".into(), "cache-2".into()]).await
        },
    )
    .await;

    // a clean stop: c2 serves its images until c1 has them; no poll of a script or of
    // the kernel it names fails meanwhile
    let poller = Poller::start(
        http.clone(),
        c1.boot.clone(),
        macs.values().cloned().collect(),
        true,
    );
    more_rounds(&poller, 1).await;
    let log = c2.stop_cleanly();
    assert!(log.contains("conductor unregistered"), "{log}");
    wait_until(
        Duration::from_secs(10),
        "c1 owns and serves every node",
        || async {
            settled(&http, &[&c1], &all).await?;
            names_owner(vec!["cache-1".into()]).await
        },
    )
    .await;
    poller.finish_clean("clean stop").await;
    // a conductor joins: it takes its share, and c1 serves each node it gives up until
    // the joiner has the images; again no poll fails
    let c4 = Conductor::start("cache-4", &db, cache);
    boots
        .lock()
        .unwrap()
        .insert(c4.host.clone(), c4.boot.clone());
    roots
        .lock()
        .unwrap()
        .insert(c4.boot.clone(), c4.http_root.clone());
    let poller = Poller::start(
        http.clone(),
        c1.boot.clone(),
        macs.values().cloned().collect(),
        true,
    );
    wait_until(
        Duration::from_secs(20),
        "cache-4 takes its share and serves it",
        || async {
            settled(&http, &[&c1, &c4], &all).await?;
            names_owner(vec!["cache-1".into(), "cache-4".into()]).await
        },
    )
    .await;
    poller.finish_clean("joining").await;
    drop(c4);
    drop((c1, c2, c3));
    drop_postgres_db(&db).await;
}
