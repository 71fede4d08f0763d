//! `ironboot cache list|fetch|clean` on a configured master directory, next to a running
//! server too, and `ironboot node boot --wait` following a preparation to its end. The
//! binary runs as a child process; its stderr is not a terminal, so progress comes as
//! plain lines.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::support::glance_env::{GlanceEnv, glance_env};
use crate::support::origin::Origin;
use crate::support::server::{Db, TestServer, random_mac};
use crate::support::stream_origin::StreamOrigin;
use crate::support::{ironboot_bin, required_env, wait_for};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ironboot() -> Command {
    let mut c = Command::new(ironboot_bin());
    c.env_remove("IRONBOOT_CONFIG")
        .env_remove("IRONBOOT_URL")
        .env_remove("IRONBOOT_TOKEN_FILE")
        .stdin(Stdio::null());
    c
}

/// `ironboot --config <conf> <args>`, run to the end off the async threads.
async fn run(conf: &Path, args: &[&str]) -> Output {
    let mut cmd = ironboot();
    cmd.arg("--config").arg(conf).args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

fn key_of(reference: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, reference.as_bytes()).to_string()
}

/// A config file in `dir` with the master directory `master` and `extra` lines.
fn write_conf(dir: &Path, name: &str, master: &Path, pxe_extra: &str, extra: &str) -> PathBuf {
    let conf = dir.join(name);
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nstate_path = {}\n[pxe]\ntftp_master_path = {}\n{pxe_extra}\n{extra}",
            dir.display(),
            master.display()
        ),
    )
    .unwrap();
    conf
}

#[tokio::test]
async fn cache_fetch_list_and_clean_work_on_the_configured_master_directory() {
    let origin = Origin::start().await;
    let kernel: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    origin.put("vmlinuz", &kernel);
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master");
    let conf = write_conf(
        dir.path(),
        "ironboot.conf",
        &master,
        "image_cache_size = 10",
        "",
    );
    let url = origin.url_of("vmlinuz");
    let key = key_of(&url);

    // fetch: downloaded, with plain progress lines on stderr
    let out = run(&conf, &["cache", "fetch", &url]).await;
    ok(&out);
    let text = stdout(&out);
    let sha = hex(&Sha256::digest(&kernel));
    assert!(
        text.contains(&format!("key:       {key}"))
            && text.contains("size:      1500000 bytes")
            && text.contains(&format!("sha256:    {sha}"))
            && text.contains("outcome:   downloaded"),
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{key}: fetching {url}"))
            && err.lines().last() == Some(&format!("{key}: downloaded (1.43 MiB)")),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no terminal codes off a terminal: {err:?}"
    );
    assert_eq!(std::fs::read(master.join(&key)).unwrap(), kernel);
    assert_eq!(origin.full_gets(), 1);

    // again: revalidated, not downloaded
    let out = run(&conf, &["cache", "fetch", &url, "--json"]).await;
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "not modified", "{v}");
    assert_eq!(v["digests"][0], json!({"algo": "sha256", "hex": sha}));
    assert_eq!(origin.full_gets(), 1);
    assert_eq!(origin.conditional_gets(), (1, 1));

    // a file:// reference, then a node's hardlink to it
    let local = dir.path().join("initrd");
    std::fs::write(&local, vec![3u8; 1 << 20]).unwrap();
    let file_ref = format!("file://{}", local.display());
    let file_key = key_of(&file_ref);
    ok(&run(&conf, &["cache", "fetch", &file_ref]).await);
    let node_file = dir.path().join("node-initrd");
    std::fs::hard_link(master.join(&file_key), &node_file).unwrap();

    // list: a table, and JSON
    let out = run(&conf, &["cache", "list"]).await;
    ok(&out);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("KEY")
            && lines[0].split_whitespace().collect::<Vec<_>>()
                == ["KEY", "SIZE", "DIGEST", "LINKS", "LAST", "USED", "SOURCE"],
        "{table}"
    );
    let row = |k: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no row {k}: {table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let http_row = row(&key);
    assert_eq!(http_row[1], "1500000");
    assert_eq!(http_row[2], format!("sha256:{sha}"));
    assert_eq!(http_row[3], "0");
    assert!(http_row[4].ends_with('Z'), "ISO 8601 UTC: {}", http_row[4]);
    assert_eq!(http_row[5], url);
    let file_row = row(&file_key);
    assert_eq!((file_row[3], file_row[5]), ("1", file_ref.as_str()));
    assert_eq!(
        *lines.last().unwrap(),
        "2 image(s), 2548576 bytes (2.43 MiB)"
    );
    let out = run(&conf, &["cache", "list", "--json"]).await;
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v}");
    let e = entries.iter().find(|e| e["key"] == key.as_str()).unwrap();
    assert_eq!(
        (&e["size"], &e["links"], &e["source"]),
        (&json!(1_500_000), &json!(0), &json!(url))
    );

    // failures: exit 1 with the error and its code; bad references exit 2
    let missing = origin.url_of("missing");
    let out = run(&conf, &["cache", "fetch", &missing]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was not found") && stderr(&out).contains("(image_not_found)"),
        "{}",
        stderr(&out)
    );
    assert!(!master.join(key_of(&missing)).exists());
    for bad in ["swift://container/object", "gopher://host/k", ""] {
        let out = run(&conf, &["cache", "fetch", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    let out = run(
        &conf,
        &[
            "cache",
            "fetch",
            "glance://6f4b4b5e-3c1a-4c1e-9a57-0b6f2bb8d9d4",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[glance] auth_type"),
        "{}",
        stderr(&out)
    );

    // clean with a 1 MiB limit: the abandoned temporary file and the failed fetch's lock
    // file go, the unlinked image is evicted, the linked one stays (it is over the limit,
    // but a node uses it)
    let abandoned = master.join(format!(".tmp-{key}-0123abcd"));
    std::fs::write(&abandoned, b"partial").unwrap();
    let small = write_conf(
        dir.path(),
        "small.conf",
        &master,
        "image_cache_size = 1",
        "",
    );
    let out = run(&small, &["cache", "clean"]).await;
    ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("evicted {key}\n"))
            && text.contains(&format!("removed {}\n", abandoned.display()))
            && text.contains(&format!("removed {}\n", master.join(&key).display()))
            && text.contains(&format!("removed {}.meta\n", master.join(&key).display()))
            // the lock file the failed fetch left
            && text.contains(&format!("removed {}.lock\n", master.join(key_of(&missing)).display()))
            && text.contains("1 image(s) evicted, 5 file(s) removed, "),
        "{text}"
    );
    let freed: u64 = text
        .rsplit(", ")
        .next()
        .and_then(|t| t.strip_suffix(" bytes freed\n"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1_500_007..1_500_007 + 4096).contains(&freed),
        "the image, the partial file and the metadata: {text}"
    );
    assert!(!abandoned.exists() && !master.join(&key).exists());
    assert_eq!(
        std::fs::read(master.join(&file_key)).unwrap(),
        vec![3u8; 1 << 20]
    );
    // nothing left to do; JSON
    let out = run(&small, &["cache", "clean", "--json"]).await;
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({"evicted": [], "files": [], "files_removed": 0, "bytes_freed": 0})
    );
}

/// Waits until process `pid` is blocked on a `flock` (a `->` line of /proc/locks).
async fn blocked_on_flock(pid: u32) {
    wait_for("the CLI to wait for the key's lock", || async move {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(1) == Some(&"->")
                    && w.get(2) == Some(&"FLOCK")
                    && w.get(5) == Some(&pid.to_string().as_str())
            })
    })
    .await;
}

#[tokio::test]
async fn cache_fetch_next_to_serve_waits_for_its_download_and_does_not_repeat_it() {
    let origin = Origin::start().await;
    origin.put("vmlinuz", &vec![1u8; 2 << 20]);
    origin.put("initrd", b"initrd");
    let s = TestServer::start(
        Db::Sqlite,
        "[pxe]\nhttp_passthrough = false\n[deploy]\nhttp_url = http://10.0.2.2:8080\n",
    )
    .await;
    let master = s.dir.path().join("master_images");
    let conf = write_conf(s.dir.path(), "cli.conf", &master, "", "");
    let (st, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()], "driver_info": {"deploy_kernel": origin.url_of("vmlinuz"), "deploy_ramdisk": origin.url_of("initrd")}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let uuid = n["uuid"].as_str().unwrap().to_string();

    // serve's download is held by the source; the CLI asks for the same image meanwhile
    let gate = origin.close_gate().await;
    let (st, _) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED);
    wait_for("serve's download to start", || async {
        origin.full_gets() == 2
    })
    .await;
    let mut cli = ironboot();
    let url = origin.url_of("vmlinuz");
    let child = cli
        .arg("--config")
        .arg(&conf)
        .args(["cache", "fetch", &url, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    blocked_on_flock(child.id()).await;
    drop(gate);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "fetched by another process", "{v}");
    assert_eq!(origin.full_gets(), 2, "one download of each image in all");
    assert_eq!(origin.conditional_gets(), (0, 0));
    wait_for("the node to be ready", || async {
        s.call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await
            .1["state"]
            == "ready"
    })
    .await;
    // the CLI's copy is the node's: one inode, linked once
    let linked = s.http_root().join(&uuid).join("deploy_kernel");
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        std::fs::metadata(master.join(key_of(&url))).unwrap().ino()
    );
    let out = run(&conf, &["cache", "list", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == url.as_str())
        .cloned()
        .unwrap();
    assert_eq!(e["links"], 1, "{e}");
    s.stop().await;
}

fn glance_conf(env: &GlanceEnv) -> String {
    format!(
        "[glance]\nauth_type = password\nauth_url = {}\nusername = {}\npassword = {}\n\
         project_name = {}\nregion_name = {}\nendpoint_override = {}\n",
        env.keystone_url,
        env.service.name,
        env.service.password,
        env.service.project,
        env.region,
        env.file_glance_url
    )
}

#[tokio::test]
async fn cache_fetch_of_glance_images_verifies_their_checksum() {
    let env = glance_env().await;
    let file_env = GlanceEnv {
        glance_url: env.file_glance_url.clone(),
        ..env.clone()
    };
    let token = env.token(&env.service).await;
    let bytes = b"a kernel the CLI caches from Glance".repeat(3000);
    let id = file_env.image_with(&token, &bytes, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master");
    let conf = write_conf(dir.path(), "ironboot.conf", &master, "", &glance_conf(&env));

    for reference in [format!("glance://{id}"), id.clone()] {
        let out = run(&conf, &["cache", "fetch", &reference, "--json"]).await;
        ok(&out);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["key"],
            id.as_str(),
            "a Glance image is cached under its id: {v}"
        );
        assert_eq!(
            v["digests"][0],
            json!({"algo": "sha512", "hex": hex(&Sha512::digest(&bytes))}),
            "Glance's os_hash_value verified: {v}"
        );
    }
    assert_eq!(std::fs::read(master.join(&id)).unwrap(), bytes);

    // corrupted in Glance's store: refused, nothing kept
    let bad = file_env.image_with(&token, &bytes, json!({})).await;
    let stored = Path::new(&required_env("GLANCE_AIO_DIR"))
        .join("file/data/images")
        .join(&bad);
    let mut corrupt = std::fs::read(&stored).unwrap();
    corrupt[7] ^= 0xff;
    std::fs::write(&stored, &corrupt).unwrap();
    let out = run(&conf, &["cache", "fetch", &bad]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("sha512 checksum") && err.contains("(image_checksum_mismatch)"),
        "{err}"
    );
    assert!(!master.join(&bad).exists());
    // an image Glance does not have
    let out = run(
        &conf,
        &["cache", "fetch", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    file_env.delete_images(&token, &[&id, &bad]).await;
}

/// `ironboot node boot NODE --target deploy --wait` as a child; its stderr lines are sent
/// as they come.
fn boot_wait(
    api: &str,
    node: &str,
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    std::thread::JoinHandle<()>,
) {
    let mut child = ironboot()
        .env("IRONBOOT_URL", api)
        .args(["node", "boot", node, "--target", "deploy", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (child, rx, reader)
}

async fn create(s: &TestServer, kernel: &str, ramdisk: &str) -> String {
    let (st, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()], "driver_info": {"deploy_kernel": kernel, "deploy_ramdisk": ramdisk}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{n}");
    n["uuid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_boot_wait_follows_the_progress_and_exits_1_when_the_node_fails() {
    // 4 MiB in 32 KiB chunks 25 ms apart: about 3 s, so a plain line with bytes comes
    let slow = StreamOrigin::start(32 << 10, Duration::from_millis(25)).await;
    slow.put("vmlinuz", bytes::Bytes::from(vec![4u8; 4 << 20]));
    slow.put("initrd", bytes::Bytes::from_static(b"initrd"));
    let s = TestServer::start(
        Db::Sqlite,
        "[pxe]\nhttp_passthrough = false\n[deploy]\nhttp_url = http://10.0.2.2:8080\n",
    )
    .await;
    let uuid = create(&s, &slow.url_of("vmlinuz"), &slow.url_of("initrd")).await;

    let (child, mut lines, reader) = boot_wait(&s.api, &uuid);
    let label = format!("node {uuid}: ");
    let mut seen = Vec::new();
    while let Some(line) = lines.recv().await {
        seen.push(line);
    }
    reader.join().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}: {seen:?}", out.status);
    assert!(
        seen.first()
            .is_some_and(|l| l.starts_with(&format!("{label}preparing deploy"))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("{label}preparing deploy "))
                && l.contains(" MiB of 4.00 MiB (")),
        "a line with the bytes so far: {seen:?}"
    );
    assert_eq!(seen.last().unwrap(), &format!("{label}ready"), "{seen:?}");
    let shown = stdout(&out);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("ready")),
        "{shown}"
    );
    assert_eq!(
        std::fs::read(s.http_root().join(&uuid).join("deploy_kernel"))
            .unwrap()
            .len(),
        4 << 20
    );

    // a ramdisk the source does not have: the node ends failed, exit 1 with last_error
    let bad = create(&s, &slow.url_of("initrd"), &slow.url_of("missing")).await;
    let (child, mut lines, reader) = boot_wait(&s.api, &bad);
    let mut seen = Vec::new();
    while let Some(line) = lines.recv().await {
        seen.push(line);
    }
    reader.join().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{seen:?}");
    assert_eq!(
        seen[seen.len() - 2],
        format!("node {bad}: failed"),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "ironboot: node {bad}: preparing target deploy failed:"
        )) && last.contains("was not found"),
        "{last}"
    );
    assert!(stdout(&out).contains("failed"));

    // without --wait the answer is the 202's node, still preparing
    let third = create(&s, &slow.url_of("initrd"), &slow.url_of("vmlinuz")).await;
    let mut cmd = ironboot();
    cmd.env("IRONBOOT_URL", &s.api)
        .args(["node", "boot", &third, "--target", "deploy", "--json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "preparing", "{v}");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    wait_for("the third node", || async {
        s.call(Method::GET, &format!("/v1/nodes/{third}"), None)
            .await
            .1["state"]
            == "ready"
    })
    .await;
    s.stop().await;
}
