//! Benchmark P5: one conductor takes over the nodes of another that died, on PostgreSQL.
//!
//! Two conductors share the database: this process (`bench-survivor`) and `bench-dead`,
//! registered by hand. The nodes are split between them by the ring; then `bench-dead`
//! stops heartbeating, the clock moves past `[conductor] heartbeat_timeout`, and one
//! ring refresh ([`Service::rebalance`]) takes its nodes over. That pass is what is timed:
//! reading the conductors, rebuilding the ring, freeing the dead conductor's reservations,
//! and writing the static mirror files of every node taken over (rendered with freshly
//! signed TempURLs), plus, in cache mode, adopting the images: each node is reserved,
//! linked from the (warm) master cache into `http_root` and its snapshot rewritten to name
//! this conductor; the time until the last one is done is reported.
//!
//! Usage: bench_takeover PG_URL NODES MODE ROUNDS   (MODE: swift or cache)
//!
//! The database must be empty; `bench/takeover.sh` makes a fresh one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ironboot::clock::{Clock, ManualClock};
use ironboot::node::{PreparedImage, SourceKind, Target};
use serde_json::json;

const SURVIVOR: &str = "bench-survivor";
const DEAD: &str = "bench-dead";
const DEAD_URL: &str = "http://127.0.0.2:8080";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().expect("PG_URL");
    let n: usize = args
        .next()
        .expect("NODES")
        .parse()
        .expect("NODES is a number");
    let mode = args.next().expect("MODE");
    let rounds: usize = args.next().map_or(3, |r| r.parse().expect("ROUNDS"));
    let cache = match mode.as_str() {
        "swift" => false,
        "cache" => true,
        other => panic!("MODE is swift or cache, not {other}"),
    };
    // BENCH_DIR: where the state (http_root, master cache) lives; its file system counts
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let image = dir.path().join("image");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let conf = dir.path().join("ironboot.conf");
    let mode_conf = if cache {
        "[pxe]\nhttp_passthrough = false\n".to_string()
    } else {
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = http://127.0.0.1:8080\n\
         swift_account = AUTH_bench\nswift_temp_url_key = bench-secret-key\n"
            .to_string()
    };
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nhost = {SURVIVOR}\nstate_path = {}\n[database]\nconnection = {db}\nmax_pool_size = 16\n\
             [conductor]\nheartbeat_timeout = 60\n{mode_conf}",
            dir.path().display()
        ),
    )
    .unwrap();
    let loaded = ironboot::config::load(Some(&conf)).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(ManualClock::starting_now());
    let service = ironboot::cli::serve::build_service(&loaded.settings, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = service.store().clone();
    let register_dead = || {
        let store = store.clone();
        let now = clock.now_ms();
        async move { store.register_conductor(DEAD, DEAD_URL, now).await.unwrap() }
    };
    register_dead().await;
    service.rebalance().await.unwrap();

    // the nodes: prepared as a swift-mode (or cache-mode) prepare stores them
    let seeding = Instant::now();
    let image_ref = format!("file://{}", image.display());
    let account = "/v1/AUTH_bench";
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..n {
        let service = service.clone();
        let image_ref = image_ref.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = sem.acquire().await.unwrap();
            let b = (i as u32).to_be_bytes();
            let mac = format!("52:55:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
            let node = service
                .create_node(&json!({
                    "macs": [mac],
                    "driver_info": {"deploy_kernel": "http://127.0.0.1/k", "deploy_ramdisk": "http://127.0.0.1/r"},
                }))
                .await
                .unwrap();
            let uuid = node.uuid;
            let mut node = service.store().get_node(&uuid.to_string()).await.unwrap();
            let image = |label: &str, object: &str| {
                Some(if cache {
                    PreparedImage {
                        reference: image_ref.clone(),
                        source: SourceKind::Cache,
                        location: format!("{uuid}/{label}"),
                        checksum: None,
                    }
                } else {
                    PreparedImage {
                        reference: format!("swift://images/{object}"),
                        source: SourceKind::Swift,
                        location: format!("{account}/images/{object}"),
                        checksum: None,
                    }
                })
            };
            node.target = Target::Deploy;
            node.state = ironboot::node::State::Ready;
            node.prepared = Some(ironboot::node::PreparedBoot {
                target: Target::Deploy,
                boot_mode: node.boot_mode,
                kernel: image("deploy_kernel", "deploy/vmlinuz"),
                ramdisk: image("deploy_ramdisk", "deploy/initrd.img"),
                kernel_args: "nofb vga=normal console=ttyS0".into(),
                // cache mode: the dead conductor holds every node's images
                http_url: cache.then(|| DEAD_URL.to_string()),
            });
            service.store().update_node(&node).await.unwrap();
            service.sync_mirror(uuid).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "seeded {n} nodes in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    if cache {
        // warm the master cache: the first adoption copies the file in, the rest link it
        let first = service.rebalance().await.unwrap();
        wait_adopted(&service, DEAD_URL, None).await;
        eprintln!(
            "cache warmed (adopted {} nodes the ring already gave this conductor)",
            first.started
        );
    }

    for round in 1..=rounds {
        // bench-dead is alive: it owns its share again, and this conductor drops theirs
        register_dead().await;
        let back = Instant::now();
        let handback = service.rebalance().await.unwrap();
        let back = back.elapsed();
        if cache {
            // as if bench-dead had taken its nodes back: their snapshots name it again
            for (record, _) in service.store().indexed() {
                if service.owner_of(&record.uuid).as_deref() == Some(DEAD) {
                    let mut node = service
                        .store()
                        .get_node(&record.uuid.to_string())
                        .await
                        .unwrap();
                    if let Some(p) = node.prepared.as_mut() {
                        p.http_url = Some(DEAD_URL.into());
                    }
                    service.store().update_node(&node).await.unwrap();
                }
            }
        }
        // bench-dead falls silent: heartbeat_timeout passes, this conductor heartbeats
        clock.advance_secs(61);
        service.heartbeat().await.unwrap();
        let start = Instant::now();
        let report = service.rebalance().await.unwrap();
        let pass = start.elapsed();
        let adopted = if cache {
            Some(wait_adopted(&service, DEAD_URL, Some(start)).await)
        } else {
            None
        };
        let configs = std::fs::read_dir(dir.path().join("httpboot"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config").exists())
            .count();
        assert_eq!(
            configs, n,
            "every node has its mirror config after the takeover"
        );
        println!(
            "round {round}: mode={mode} nodes_total={n} handed_back={} handback_s={:.3} taken_over={} takeover_pass_s={:.3}{} mirror_configs={configs}",
            handback.lost,
            back.as_secs_f64(),
            report.gained,
            pass.as_secs_f64(),
            adopted.map_or(String::new(), |d| format!(
                " adopted_all_s={:.3}",
                d.as_secs_f64()
            )),
        );
    }
    println!(
        "file_system_floor_s={:.3} (mkdir, config, link, manifest for {} nodes on 2 threads, no rendering)",
        fs_floor(dir.path(), 10_000).as_secs_f64(),
        10_000
    );
    service.close().await;
}

/// The file-system operations a new node's mirror files take, alone, for `n` nodes on as
/// many threads as ironboot uses: what the disk costs whatever ironboot does.
fn fs_floor(root: &std::path::Path, n: usize) -> Duration {
    let root = root.join("floor");
    std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..cores {
            let root = root.clone();
            s.spawn(move || {
                for i in (t..n).step_by(cores) {
                    let dir = root.join(format!("node-{i}"));
                    std::fs::create_dir(&dir).unwrap();
                    std::fs::write(dir.join("config"), [b'x'; 900]).unwrap();
                    std::os::unix::fs::symlink(
                        format!("../node-{i}/config"),
                        root.join("pxelinux.cfg").join(format!("mac-{i}")),
                    )
                    .unwrap();
                    std::fs::write(dir.join("macs"), format!("mac-{i}")).unwrap();
                }
            });
        }
    });
    start.elapsed()
}

/// Waits until no node's snapshot names `url` (cache mode: every image adopted); returns
/// the time since `since`.
async fn wait_adopted(
    service: &Arc<ironboot::service::Service>,
    url: &str,
    since: Option<Instant>,
) -> Duration {
    let since = since.unwrap_or_else(Instant::now);
    loop {
        let left = service
            .store()
            .indexed()
            .iter()
            .filter(|(r, _)| {
                service.owner_of(&r.uuid).as_deref() == Some(SURVIVOR)
                    && r.prepared.as_ref().and_then(|p| p.http_url.as_deref()) == Some(url)
            })
            .count();
        if left == 0 {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
