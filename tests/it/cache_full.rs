//! A full disk in cache mode: the master directory and http_root on a real 8 MiB tmpfs.
//! An image that cannot fit fails its node clearly, evicts nothing that a node links, and
//! the server goes on serving. Needs root (the suite runs as root); a failed mount fails
//! the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::origin::Origin;
use crate::support::server::{Db, TestServer, random_mac};
use crate::support::stream_origin::StreamOrigin;
use crate::support::wait_for;

const MIB: usize = 1 << 20;

/// A tmpfs mounted for the test; unmounted (lazily) when dropped, even after a failure.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={size} tmpfs {} failed ({}): {}; this test needs root and \
             permission to mount",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // before the TempDir field removes the (then empty) mount point
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn node(s: &TestServer, kernel: &str, ramdisk: &str) -> (String, String) {
    let mac = random_mac();
    let (st, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac], "driver_info": {"deploy_kernel": kernel, "deploy_ramdisk": ramdisk}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{n}");
    (n["uuid"].as_str().unwrap().to_string(), mac)
}

async fn prepared(s: &TestServer, uuid: &str) -> Value {
    let (st, n) = s.set_target(uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    let path = format!("/v1/nodes/{uuid}");
    wait_for("the preparation to end", || async {
        s.call(Method::GET, &path, None).await.1["state"] != "preparing"
    })
    .await;
    s.call(Method::GET, &path, None).await.1
}

#[tokio::test]
async fn an_image_that_cannot_fit_fails_its_node_evicts_nothing_linked_and_serving_goes_on() {
    let fs = Tmpfs::mount("8m");
    let master = fs.path().join("master");
    let http_root = fs.path().join("httpboot");
    let origin = Origin::start().await;
    let kernel: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let ramdisk: Vec<u8> = (0..MIB).map(|i| (i % 241) as u8).collect();
    origin.put("kernel", &kernel);
    origin.put("ramdisk", &ramdisk);
    origin.put("big", &vec![5u8; 6 * MIB]);
    origin.put("small", b"a small kernel");
    // a source that does not announce the size: the disk fills while it is written
    let chunked = StreamOrigin::start(256 << 10, Duration::ZERO).await;
    chunked.put_unsized("big", bytes::Bytes::from(vec![6u8; 6 * MIB]));
    let s = TestServer::start(
        Db::Sqlite,
        &format!(
            "[pxe]\nhttp_passthrough = false\ntftp_master_path = {}\n[deploy]\nhttp_root = {}\n\
             http_url = http://10.0.2.2:8080\n",
            master.display(),
            http_root.display()
        ),
    )
    .await;

    // 4 MiB of images fit in 8 MiB
    let (first, first_mac) = node(&s, &origin.url_of("kernel"), &origin.url_of("ramdisk")).await;
    let n = prepared(&s, &first).await;
    assert_eq!(n["state"], "ready", "{n}");
    let linked = |label: &str| http_root.join(&first).join(label);
    assert_eq!(std::fs::read(linked("deploy_kernel")).unwrap(), kernel);

    // 6 MiB more cannot fit, and nothing unlinked could be evicted to make room
    let (second, _) = node(&s, &origin.url_of("big"), &origin.url_of("ramdisk")).await;
    let n = prepared(&s, &second).await;
    assert_eq!(n["state"], "failed", "{n}");
    assert_eq!(n["target"], "none", "{n}");
    let e = n["last_error"].as_str().unwrap();
    assert!(
        e.contains("deploy_kernel")
            && e.contains(&format!("no room for {} bytes", 6 * MIB))
            && e.contains("image_cache_size, free disk space"),
        "the cause is clear: {e}"
    );
    assert_eq!(
        origin.full_gets(),
        3,
        "one GET of the big image, refused at its Content-Length"
    );

    // the same without Content-Length: the disk fills while the body is written; the
    // write error fails the node and the partial file goes
    s.patch(
        &second,
        json!({"driver_info": {"deploy_kernel": chunked.url_of("big")}}),
    )
    .await;
    let n = prepared(&s, &second).await;
    assert_eq!(n["state"], "failed", "{n}");
    let e = n["last_error"].as_str().unwrap();
    assert!(
        e.contains("deploy_kernel") && e.contains("No space left on device"),
        "the cause is clear: {e}"
    );
    assert_eq!(chunked.full_gets(), 1);

    // the first node's files and the master files are intact
    assert_eq!(std::fs::read(linked("deploy_kernel")).unwrap(), kernel);
    assert_eq!(std::fs::read(linked("deploy_ramdisk")).unwrap(), ramdisk);
    let masters: Vec<String> = std::fs::read_dir(&master)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.contains('.'))
        .collect();
    assert_eq!(
        masters.len(),
        2,
        "both masters are still there: {masters:?}"
    );
    for m in &masters {
        assert!(
            [kernel.len(), ramdisk.len()]
                .contains(&(std::fs::metadata(master.join(m)).unwrap().len() as usize)),
            "{m}"
        );
    }
    assert!(
        !std::fs::read_dir(&master).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")),
        "no temporary file is left"
    );

    // the server keeps serving: the first node's script, and a prepare that fits
    let (st, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", first_mac.replace(':', "-")))
        .await;
    assert_eq!(st, StatusCode::OK, "{script}");
    assert!(
        script.contains(&format!("http://10.0.2.2:8080/{first}/deploy_kernel")),
        "{script}"
    );
    let (st, _) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(st, StatusCode::OK);
    s.patch(
        &second,
        json!({"driver_info": {"deploy_kernel": origin.url_of("small")}}),
    )
    .await;
    let n = prepared(&s, &second).await;
    assert_eq!(n["state"], "ready", "{n}");
    assert_eq!(
        std::fs::read(http_root.join(&second).join("deploy_kernel")).unwrap(),
        b"a small kernel"
    );
    s.stop().await;
}
