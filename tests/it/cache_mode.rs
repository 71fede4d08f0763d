//! Cache mode (`[ipxe] use_swift = false`, the default): images are fetched once into the
//! master cache in the background, hardlinked into `http_root/<uuid>/<label>`, and scripts
//! point at `[deploy] http_url`. Sources: a real HTTP server (`support::origin`) and the
//! real Glance whose store is a local directory.

use std::os::unix::fs::MetadataExt;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::glance_env::glance_env;
use crate::support::origin::Origin;
use crate::support::server::{Db, TestServer, random_mac};
use crate::support::{required_env, wait_for};

const HTTP_URL: &str = "http://10.0.2.2:8080";

fn config(extra: &str) -> String {
    format!("[pxe]\nhttp_passthrough = false\n[deploy]\nhttp_url = {HTTP_URL}\n{extra}")
}

async fn node(s: &TestServer, driver_info: Value) -> (String, String) {
    let mac = random_mac();
    let (st, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac], "driver_info": driver_info})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{n}");
    (n["uuid"].as_str().unwrap().to_string(), mac)
}

/// Waits until the node leaves `preparing`; returns it.
async fn settled(s: &TestServer, uuid: &str) -> Value {
    let path = format!("/v1/nodes/{uuid}");
    wait_for("the preparation to end", || async {
        s.call(Method::GET, &path, None).await.1["state"] != "preparing"
    })
    .await;
    s.call(Method::GET, &path, None).await.1
}

fn kernel_url(script: &str) -> String {
    script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http")))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn http_images_are_fetched_once_linked_and_offered_at_http_url() {
    let origin = Origin::start().await;
    origin.put("vmlinuz", b"kernel bytes from the origin");
    origin.put("initrd", b"initrd bytes");
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let (uuid, mac) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("vmlinuz"), "deploy_ramdisk": origin.url_of("initrd")}),
    )
    .await;

    let (st, n) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    let n = settled(&s, &uuid).await;
    assert_eq!(n["state"], "ready", "{n}");
    assert!(n.get("progress").is_none(), "no progress once ready: {n}");
    assert_eq!(
        n["prepared"]["kernel"]["location"],
        format!("{uuid}/deploy_kernel")
    );

    // the script points at http_url; the files are hardlinks of the master files
    let (_, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
        .await;
    assert_eq!(
        kernel_url(&script),
        format!("{HTTP_URL}/{uuid}/deploy_kernel")
    );
    let linked = s.http_root().join(&uuid).join("deploy_kernel");
    assert_eq!(
        std::fs::read(&linked).unwrap(),
        b"kernel bytes from the origin"
    );
    assert_eq!(
        std::fs::metadata(&linked).unwrap().nlink(),
        2,
        "master + link"
    );
    assert_eq!(origin.full_gets(), 2, "one download per image");

    // a second node with the same images: revalidated (304), not downloaded again
    let (uuid2, _) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("vmlinuz"), "deploy_ramdisk": origin.url_of("initrd")}),
    )
    .await;
    s.set_target(&uuid2, "deploy").await;
    assert_eq!(settled(&s, &uuid2).await["state"], "ready");
    assert_eq!(origin.full_gets(), 2);
    assert_eq!(origin.conditional_gets(), (2, 2));
    assert_eq!(std::fs::metadata(&linked).unwrap().nlink(), 3);

    // a changed source is fetched again; the prepared node keeps its file until it is
    // prepared again
    origin.put("vmlinuz", b"a new kernel");
    let (uuid3, _) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("vmlinuz"), "deploy_ramdisk": origin.url_of("initrd")}),
    )
    .await;
    s.set_target(&uuid3, "deploy").await;
    assert_eq!(settled(&s, &uuid3).await["state"], "ready");
    assert_eq!(origin.full_gets(), 3);
    assert_eq!(
        origin.conditional_gets(),
        (4, 3),
        "the kernel's ETag changed"
    );
    assert_eq!(
        std::fs::read(s.http_root().join(&uuid3).join("deploy_kernel")).unwrap(),
        b"a new kernel"
    );
    assert_eq!(
        std::fs::read(&linked).unwrap(),
        b"kernel bytes from the origin"
    );

    // teardown: target none and delete remove the node's files
    let (st, n) = s.set_target(&uuid, "none").await;
    assert_eq!(
        (st, n["state"].as_str()),
        (StatusCode::ACCEPTED, Some("idle"))
    );
    assert!(!linked.exists());
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/nodes/{uuid2}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!s.http_root().join(&uuid2).join("deploy_kernel").exists());
    s.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_prepares_of_one_missing_image_download_it_once() {
    let origin = Origin::start().await;
    origin.put("big-kernel", &vec![7u8; 3 << 20]);
    origin.put("big-initrd", &vec![9u8; 1 << 20]);
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let mut uuids = Vec::new();
    for _ in 0..100 {
        uuids.push(
            node(
                &s,
                json!({"deploy_kernel": origin.url_of("big-kernel"), "deploy_ramdisk": origin.url_of("big-initrd")}),
            )
            .await
            .0,
        );
    }
    let gate = origin.close_gate().await;
    let mut set = tokio::task::JoinSet::new();
    for uuid in uuids.clone() {
        let (http, url) = (s.http.clone(), format!("{}/v1/nodes/{uuid}/boot", s.api));
        set.spawn(async move {
            let r = http
                .put(url)
                .json(&json!({"target": "deploy"}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    while let Some(r) = set.join_next().await {
        let (st, n) = r.unwrap();
        assert_eq!(st, StatusCode::ACCEPTED, "{n}");
        assert_eq!(n["state"], "preparing", "the answer does not wait: {n}");
    }
    // while the download is held, the node shows its progress
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{}", uuids[0]), None)
        .await;
    assert_eq!(n["state"], "preparing");
    assert_eq!(n["progress"]["target"], "deploy", "{n}");
    drop(gate);
    for uuid in &uuids {
        assert_eq!(settled(&s, uuid).await["state"], "ready");
    }
    assert_eq!(
        origin.full_gets(),
        2,
        "one download per image for 100 nodes (conditional GETs: {:?})",
        origin.conditional_gets()
    );
    s.stop().await;
}

#[tokio::test]
async fn unreachable_and_missing_sources_fail_the_node_with_last_error() {
    let origin = Origin::start().await;
    origin.put("initrd", b"initrd");
    let (_held, refusing) = crate::support::proxy::refusing_port();
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    for (kernel, code_text) in [
        (format!("{refusing}/vmlinuz"), "cannot be reached"),
        (origin.url_of("missing"), "404"),
        ("file:///nonexistent/vmlinuz".to_string(), "no such file"),
    ] {
        let (uuid, _) = node(
            &s,
            json!({"deploy_kernel": kernel, "deploy_ramdisk": origin.url_of("initrd")}),
        )
        .await;
        let (st, _) = s.set_target(&uuid, "deploy").await;
        assert_eq!(st, StatusCode::ACCEPTED);
        let n = settled(&s, &uuid).await;
        assert_eq!(n["state"], "failed", "{n}");
        assert_eq!(n["target"], "none", "the previous target stays: {n}");
        let e = n["last_error"].as_str().unwrap();
        assert!(
            e.contains("preparing target deploy failed") && e.contains(code_text),
            "{kernel}: {e}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn file_references_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("vmlinuz");
    std::fs::write(&k, b"a local kernel").unwrap();
    let r = dir.path().join("initrd");
    std::fs::write(&r, b"a local initrd").unwrap();
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": format!("file://{}", k.display()), "deploy_ramdisk": format!("file://{}", r.display())}),
    )
    .await;
    s.set_target(&uuid, "deploy").await;
    assert_eq!(settled(&s, &uuid).await["state"], "ready");
    assert_eq!(
        std::fs::read(s.http_root().join(&uuid).join("deploy_ramdisk")).unwrap(),
        b"a local initrd"
    );
    s.stop().await;
}

#[tokio::test]
async fn glance_file_store_images_are_cached_verified_and_a_corrupt_one_is_refused() {
    let env = glance_env().await;
    let file_env = crate::support::glance_env::GlanceEnv {
        glance_url: env.file_glance_url.clone(),
        ..env.clone()
    };
    let token = env.token(&env.service).await;
    let kernel = b"a kernel in Glance's file store".repeat(1000);
    let initrd = b"an initrd".repeat(500);
    let kid = file_env.image_with(&token, &kernel, json!({})).await;
    let rid = file_env.image_with(&token, &initrd, json!({})).await;
    let proxy = crate::support::proxy::Proxy::start(&env.file_glance_url, None).await;
    let conf = format!(
        "[pxe]\nhttp_passthrough = false\n[deploy]\nhttp_url = {HTTP_URL}\n[glance]\nauth_type = password\n\
         auth_url = {}\nusername = {}\npassword = {}\nproject_name = {}\nregion_name = {}\n\
         endpoint_override = {}\n",
        env.keystone_url,
        env.service.name,
        env.service.password,
        env.service.project,
        env.region,
        proxy.url
    );
    let s = TestServer::start(Db::Sqlite, &conf).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": kid, "deploy_ramdisk": format!("glance://{rid}")}),
    )
    .await;
    let (st, n) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    let n = settled(&s, &uuid).await;
    assert_eq!(n["state"], "ready", "{n}");
    let checksum = n["prepared"]["kernel"]["checksum"].as_str().unwrap();
    assert!(
        checksum.starts_with("sha512:"),
        "Glance's os_hash: {checksum}"
    );
    assert_eq!(
        std::fs::read(s.http_root().join(&uuid).join("deploy_kernel")).unwrap(),
        kernel
    );
    assert_eq!(proxy.count("GET", "/file"), 2, "one download per image");

    // regression: every prepare downloaded a cached Glance image again (Glance's answer has
    // no validator); an active image's os_hash names its bytes, so the master is used
    let (again, _) = node(
        &s,
        json!({"deploy_kernel": kid, "deploy_ramdisk": format!("glance://{rid}")}),
    )
    .await;
    s.set_target(&again, "deploy").await;
    assert_eq!(settled(&s, &again).await["state"], "ready");
    assert_eq!(proxy.count("GET", "/file"), 2, "no second download");

    // the same image corrupted in Glance's store: the checksum refuses it
    let bad = file_env.image_with(&token, &kernel, json!({})).await;
    let stored = std::path::Path::new(&required_env("GLANCE_AIO_DIR"))
        .join("file/data/images")
        .join(&bad);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let (uuid2, _) = node(&s, json!({"deploy_kernel": bad, "deploy_ramdisk": rid})).await;
    s.set_target(&uuid2, "deploy").await;
    let n = settled(&s, &uuid2).await;
    assert_eq!(n["state"], "failed", "{n}");
    let e = n["last_error"].as_str().unwrap();
    assert!(e.contains("sha512") && e.contains("expected"), "{e}");
    assert!(
        !s.dir.path().join("master_images").join(&bad).exists(),
        "the corrupt bytes are not kept"
    );
    s.stop().await;
    file_env.delete_images(&token, &[&kid, &rid, &bad]).await;
}

#[tokio::test]
async fn a_preparation_left_by_a_stopped_process_is_marked_failed() {
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": "http://h/k", "deploy_ramdisk": "http://h/r"}),
    )
    .await;
    let mut stored = s.service.store().get_node(&uuid).await.unwrap();
    stored.state = ironboot::node::State::Preparing;
    s.service.store().update_node(&stored).await.unwrap();
    assert_eq!(s.service.fail_interrupted_prepares().await.unwrap(), 1);
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(n["state"], "failed");
    assert!(
        n["last_error"].as_str().unwrap().contains("interrupted"),
        "{n}"
    );
    assert_eq!(s.service.fail_interrupted_prepares().await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test]
async fn the_conductor_evicts_expired_unused_images_and_keeps_linked_ones() {
    let origin = Origin::start().await;
    origin.put("k", b"kernel");
    origin.put("r", b"ramdisk");
    let s = TestServer::start(
        Db::Sqlite,
        &config("[pxe]\nimage_cache_ttl = 1\n[conductor]\ncache_clean_up_interval = 1\n"),
    )
    .await;
    let master = |name: &str| {
        s.dir
            .path()
            .join("master_images")
            .join(ironboot::cache::CacheKey::url(&origin.url_of(name)).as_str())
    };
    let (a, _) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r")}),
    )
    .await;
    s.set_target(&a, "deploy").await;
    assert_eq!(settled(&s, &a).await["state"], "ready");
    let (b, _) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r")}),
    )
    .await;
    s.set_target(&b, "deploy").await;
    assert_eq!(settled(&s, &b).await["state"], "ready");
    assert!(master("k").exists() && master("r").exists());

    // node a lets go; node b still links both: nothing is evicted, however old
    s.set_target(&a, "none").await;
    s.clock.advance_secs(3600);
    let runs = || async {
        s.metric("ironboot_task_runs_total{task=\"cache_clean\",result=\"ok\"}")
            .await
            .unwrap_or(0.0)
    };
    let before = runs().await;
    wait_for("two more cleanups", || async {
        runs().await >= before + 2.0
    })
    .await;
    assert!(
        master("k").exists() && master("r").exists(),
        "still linked by b"
    );

    // b lets go too: both are expired and unused, and go
    s.set_target(&b, "none").await;
    wait_for("the expired images to be evicted", || async {
        !master("k").exists() && !master("r").exists()
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_node_chooses_passthrough_or_cache_for_its_http_references() {
    let origin = Origin::start().await;
    origin.put("k", b"kernel");
    origin.put("r", b"ramdisk");
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let mac = random_mac();
    let (_, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac],
                "instance_info": {"kernel": origin.url_of("k"), "ramdisk": origin.url_of("r"), "http_passthrough": true}})),
        )
        .await;
    let uuid = n["uuid"].as_str().unwrap().to_string();
    let (st, n) = s.set_target(&uuid, "instance").await;
    assert_eq!(
        (st, n["state"].as_str()),
        (StatusCode::ACCEPTED, Some("ready")),
        "{n}"
    );
    let (_, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
        .await;
    assert_eq!(kernel_url(&script), origin.url_of("k"), "passed through");
    assert_eq!(origin.full_gets(), 0);

    // a value that is not true or false is refused, naming the field
    s.patch(&uuid, json!({"instance_info": {"http_passthrough": "yes"}}))
        .await;
    let got = s.set_target(&uuid, "instance").await;
    crate::support::server::assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_image_ref",
        Some("instance_info.http_passthrough"),
    );
    s.stop().await;
}

#[tokio::test]
async fn swift_mode_caches_file_references() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("vmlinuz");
    std::fs::write(&k, b"a local kernel").unwrap();
    let keys = crate::support::swift::account_with_keys().await;
    let s = TestServer::start(
        Db::Sqlite,
        &format!(
            "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = {}\nswift_account = AUTH_test\n\
             swift_temp_url_key = {}\n[deploy]\nhttp_url = {HTTP_URL}\n",
            crate::support::swift::proxy_url(),
            keys.key1
        ),
    )
    .await;
    let file = format!("file://{}", k.display());
    let (uuid, mac) = node(&s, json!({"deploy_kernel": file, "deploy_ramdisk": file})).await;
    s.set_target(&uuid, "deploy").await;
    assert_eq!(settled(&s, &uuid).await["state"], "ready");
    let (_, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
        .await;
    assert_eq!(
        kernel_url(&script),
        format!("{HTTP_URL}/{uuid}/deploy_kernel")
    );
    s.stop().await;
}

#[tokio::test]
async fn an_operators_checksum_is_checked_for_http_images() {
    use sha2::Digest as _;
    let origin = Origin::start().await;
    origin.put("k", b"the kernel the operator meant");
    origin.put("r", b"ramdisk");
    let good = format!(
        "sha256:{}",
        sha2::Sha256::digest(b"the kernel the operator meant")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let with = |sum: Value| {
        json!({"deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r"),
               "deploy_kernel_checksum": sum})
    };
    let (a, _) = node(&s, with(json!(good))).await;
    s.set_target(&a, "deploy").await;
    let n = settled(&s, &a).await;
    assert_eq!(n["state"], "ready", "{n}");
    assert_eq!(n["prepared"]["kernel"]["checksum"], good.as_str());

    // the same bytes against another digest: refused, nothing kept
    origin.put("k", b"something else at the same URL");
    let (b, _) = node(&s, with(json!(good))).await;
    s.set_target(&b, "deploy").await;
    let n = settled(&s, &b).await;
    assert_eq!(n["state"], "failed", "{n}");
    assert!(n["last_error"].as_str().unwrap().contains("sha256"), "{n}");
    assert!(!s.http_root().join(&b).join("deploy_kernel").exists());

    // a malformed digest is refused before anything is fetched, naming the field
    let (c, _) = node(&s, with(json!("sha256:xyz"))).await;
    let got = s.set_target(&c, "deploy").await;
    crate::support::server::assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_image_ref",
        Some("driver_info.deploy_kernel_checksum"),
    );
    s.stop().await;
}

/// Regression: on SIGTERM a cache-mode conductor waited for other conductors to take over
/// the images it serves, for the whole `graceful_shutdown_timeout` (60 s), even when there
/// was no other conductor (SQLite has only one): every restart of a standalone server
/// took a minute. With nobody to hand over to, the drain ends at once.
#[tokio::test]
async fn regression_a_lone_cache_mode_conductor_waits_for_a_takeover_that_never_comes() {
    let origin = Origin::start().await;
    origin.put("k", b"kernel");
    origin.put("r", b"ramdisk");
    let s = TestServer::start(Db::Sqlite, &config("")).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r")}),
    )
    .await;
    s.set_target(&uuid, "deploy").await;
    assert_eq!(settled(&s, &uuid).await["state"], "ready");
    s.service.leave().await.unwrap();
    // it would wait the hour if it waited for a takeover
    let held = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        s.service.drain(std::time::Duration::from_secs(3600)),
    )
    .await
    .expect("the drain ends without another conductor");
    assert_eq!(held, 1, "the node's images are still this conductor's");
    s.stop().await;
}
