//! Crash safety of the master cache across processes: `ironboot cache fetch <url>` is
//! killed with SIGKILL at random points while a slow source streams an 8 MiB image, and
//! after every kill the directory must hold no master file that is not complete and
//! correct, no partial metadata, and the next `ironboot` run must sweep the leftovers and
//! complete the fetch. Replay a failure with the `IRONBOOT_TEST_SEED` it prints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::stream_origin::StreamOrigin;
use crate::support::{Rng, ironboot_bin};

const LEN: usize = 8 << 20;
const KILLS: usize = 50;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `ironboot --config <conf> cache <args>`.
fn ironboot(conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(ironboot_bin());
    c.env_remove("IRONBOOT_CONFIG")
        .arg("--config")
        .arg(conf)
        .arg("cache")
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs to the end (within 60 s); returns stdout, or fails with the output.
async fn run_ok(conf: &Path, args: &[&str]) -> String {
    let mut cmd = ironboot(conf, args);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("ironboot cache {args:?} did not finish within 60 s"))
    .unwrap();
    assert!(
        out.status.success(),
        "ironboot cache {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The names in the master directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn temps(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// The size of the largest temporary file (the download; metadata is written through a
/// small one too).
fn largest_temp(dir: &Path) -> u64 {
    temps(dir)
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Where a kill landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Point {
    /// Right after the process was started.
    AtStart,
    /// While the body was arriving, after at least this many bytes were written.
    MidBody,
    /// Once the whole body was in the temporary file: hashing, fsync, rename, metadata.
    BodyComplete,
    /// The process had finished before the kill.
    Finished,
}

/// Waits until `ready` says so or the child exits; returns whether the child is still
/// running.
async fn until(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            return true;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cache_fetch_leaves_no_partial_master_and_the_next_run_recovers() {
    let (mut rng, seed) = Rng::from_env();
    eprintln!("IRONBOOT_TEST_SEED={seed}");
    // 8 MiB in 32 KiB chunks, 1 ms apart: a download takes about 300 ms.
    let origin = StreamOrigin::start(32 << 10, Duration::from_millis(1)).await;
    let versions: [Bytes; 2] = std::array::from_fn(|_| {
        let mut v = Vec::with_capacity(LEN);
        while v.len() < LEN {
            v.extend_from_slice(&rng.next().to_le_bytes());
        }
        Bytes::from(v)
    });
    let digests = versions.each_ref().map(|v| sha256(v));
    let url = origin.url_of("image");
    let key = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, url.as_bytes()).to_string();

    let dir = tempfile::tempdir().unwrap();
    let master_dir: PathBuf = dir.path().join("master");
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nstate_path = {}\n[pxe]\ntftp_master_path = {}\n",
            dir.path().display(),
            master_dir.display()
        ),
    )
    .unwrap();
    let master = master_dir.join(&key);
    let meta = master_dir.join(format!("{key}.meta"));

    let mut current: Option<usize> = None; // the version complete in the cache
    let mut serving = 0usize;
    origin.put("image", versions[0].clone());
    let mut points = std::collections::BTreeMap::<Point, usize>::new();
    let mut swept_by = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..KILLS {
        // Half the time from an empty cache, half the time replacing the cached version
        // with a new one (the master is renamed over).
        if current.is_none() || rng.chance(50) {
            for name in [key.clone(), format!("{key}.meta"), format!("{key}.lock")] {
                let _ = std::fs::remove_file(master_dir.join(name));
            }
            current = None;
        } else {
            serving = 1 - serving;
            origin.put("image", versions[serving].clone());
        }

        let mut child = ironboot(&conf, &["fetch", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let roll = rng.below(100);
        let mut point = if roll < 10 {
            Point::AtStart
        } else if roll < 85 {
            Point::MidBody
        } else {
            Point::BodyComplete
        };
        let running = match point {
            Point::AtStart => true,
            Point::MidBody => {
                let threshold = 1 + rng.below(LEN as u64 - 1);
                until(&mut child, "the download to start", || {
                    largest_temp(&master_dir) > 0
                })
                .await
                    && until(&mut child, "the download to pass the threshold", || {
                        largest_temp(&master_dir) >= threshold
                    })
                    .await
            }
            Point::BodyComplete => {
                until(&mut child, "the whole body", || {
                    largest_temp(&master_dir) >= LEN as u64
                })
                .await
            }
            Point::Finished => unreachable!(),
        };
        if !running {
            point = Point::Finished;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        *points.entry(point).or_default() += 1;

        // After the kill: a master file is complete and correct (the old version or the
        // new one), metadata is whole JSON describing a complete version, and nothing else
        // of this key's is there but temporary files and the lock.
        let ctx = format!("kill {i} ({point:?}, seed {seed})");
        let allowed: Vec<usize> = current.into_iter().chain([serving]).collect();
        if master.exists() {
            let bytes = std::fs::read(&master).unwrap();
            let d = sha256(&bytes);
            assert!(
                bytes.len() == LEN && allowed.iter().any(|&v| digests[v] == d),
                "{ctx}: the master file is not a complete version ({} bytes)",
                bytes.len()
            );
        }
        if meta.exists() {
            let text = std::fs::read(&meta).unwrap();
            let m: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{ctx}: partial metadata ({e}): {text:?}"));
            assert_eq!(m["size"], LEN as u64, "{ctx}: {m}");
            let hex = m["digests"][0]["hex"].as_str().unwrap_or_default();
            assert!(
                allowed.iter().any(|&v| digests[v] == hex),
                "{ctx}: the metadata names another digest: {m}"
            );
        }
        for name in names(&master_dir) {
            assert!(
                name.starts_with(".tmp-")
                    || [key.clone(), format!("{key}.meta"), format!("{key}.lock")].contains(&name),
                "{ctx}: unexpected file {name}"
            );
        }
        let left = temps(&master_dir);

        // Recovery: `cache clean` or the next fetch sweeps the temporary files, and the
        // fetch completes with the bytes the source serves now.
        if !left.is_empty() && rng.chance(50) {
            let report: Value =
                serde_json::from_str(&run_ok(&conf, &["clean", "--json"]).await).unwrap();
            assert!(
                temps(&master_dir).is_empty(),
                "{ctx}: clean left {:?}",
                temps(&master_dir)
            );
            let files: Vec<&str> = report["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            for t in &left {
                assert!(
                    files.iter().any(|f| f.ends_with(t.as_str())),
                    "{ctx}: clean does not report {t}: {report}"
                );
            }
            *swept_by.entry("clean").or_default() += 1;
        } else if !left.is_empty() {
            *swept_by.entry("fetch").or_default() += 1;
        }
        let fetched: Value =
            serde_json::from_str(&run_ok(&conf, &["fetch", &url, "--json"]).await).unwrap();
        assert_eq!(fetched["key"], key.as_str(), "{ctx}");
        assert_eq!(
            fetched["digests"][0]["hex"], digests[serving],
            "{ctx}: {fetched}"
        );
        assert_eq!(
            std::fs::read(&master).unwrap(),
            versions[serving],
            "{ctx}: the recovered master"
        );
        assert_eq!(
            names(&master_dir),
            [key.clone(), format!("{key}.lock"), format!("{key}.meta")],
            "{ctx}: temporary files are swept"
        );
        current = Some(serving);
    }
    eprintln!(
        "{KILLS} kills: {points:?}; leftovers swept by {swept_by:?}; {} full GETs",
        origin.full_gets()
    );
    // The kills must really have hit downloads in progress.
    let mid = points.get(&Point::MidBody).copied().unwrap_or(0);
    assert!(
        mid >= KILLS / 3,
        "only {mid} of {KILLS} kills landed mid-body: {points:?}"
    );
    assert!(
        swept_by.values().sum::<usize>() >= KILLS / 3,
        "too few kills left temporary files to sweep: {swept_by:?}"
    );
    assert!(swept_by.contains_key("clean") && swept_by.contains_key("fetch"));
}
