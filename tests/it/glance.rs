//! Glance references in swift mode against a real Keystone, a real Glance whose store is a
//! real Swift, and that Swift (`support::glance_env` says where): nodes whose images are
//! Glance UUIDs prepare and boot from TempURLs that fetch the image's bytes; every bad
//! input gets its own error and `last_error`; tokens are renewed by the clock and once on
//! a 401; Glance is asked once per image per cache period; secrets never leak.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::glance_env::{GlanceEnv, glance_env};
use crate::support::proxy::{FixedStatus, Hook, Proxy, Silent, refusing_port};
use crate::support::server::{Db, TestServer, assert_error, random_mac};
use crate::support::unique;

/// Two active images in Glance's Swift store, with distinct bytes.
struct Images {
    env: GlanceEnv,
    /// The service user's token, for setting up and cleaning up.
    token: String,
    kernel: String,
    ramdisk: String,
    kernel_bytes: Vec<u8>,
    ramdisk_bytes: Vec<u8>,
}

async fn images() -> Images {
    let env = glance_env().await;
    let token = env.token(&env.service).await;
    let kernel_bytes = format!("kernel {}", unique("k")).repeat(100).into_bytes();
    let ramdisk_bytes = format!("ramdisk {}", unique("r")).repeat(50).into_bytes();
    let kernel = env
        .image_with(
            &token,
            &kernel_bytes,
            json!({"disk_format": "aki", "container_format": "aki"}),
        )
        .await;
    let ramdisk = env
        .image_with(
            &token,
            &ramdisk_bytes,
            json!({"disk_format": "ari", "container_format": "ari"}),
        )
        .await;
    Images {
        env,
        token,
        kernel,
        ramdisk,
        kernel_bytes,
        ramdisk_bytes,
    }
}

impl Images {
    async fn delete(&self, more: &[&str]) {
        let mut ids = vec![self.kernel.as_str(), self.ramdisk.as_str()];
        ids.extend_from_slice(more);
        self.env.delete_images(&self.token, &ids).await;
    }

    /// The unencoded object path ironboot must find the image at.
    fn path(&self, id: &str) -> String {
        ironboot::tempurl::glance::image_path(
            "v1",
            &self.env.swift_account,
            &self.env.container,
            self.env.seed,
            id,
        )
        .unwrap()
    }
}

/// Creates a node; returns its UUID and the path of its per-MAC script.
async fn node(s: &TestServer, driver_info: Value, instance_info: Value) -> (String, String) {
    let mac = random_mac();
    let (st, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(
                json!({"macs": [mac], "driver_info": driver_info, "instance_info": instance_info}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{node}");
    (
        node["uuid"].as_str().unwrap().to_string(),
        format!("/pxelinux.cfg/{}", mac.replace(':', "-")),
    )
}

/// The URLs of the kernel and initrd lines of a script.
fn image_urls(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http"))
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn fetch(s: &TestServer, url: &str) -> (StatusCode, Vec<u8>) {
    let r = s.http.get(url).send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

/// The script's two URLs, after checking they are TempURLs of `ids` on the node-facing
/// endpoint.
async fn script_urls(
    s: &TestServer,
    img: &Images,
    script_path: &str,
    ids: [&str; 2],
) -> Vec<String> {
    let (st, script) = s.boot_get(script_path).await;
    assert_eq!(st, StatusCode::OK, "{script}");
    let urls = image_urls(&script);
    assert_eq!(urls.len(), 2, "{script}");
    for (url, id) in urls.iter().zip(ids) {
        let expected = format!("{}{}?temp_url_sig=", img.env.swift_url, img.path(id));
        assert!(url.starts_with(&expected), "{url} is not {expected}…");
    }
    urls
}

#[tokio::test]
async fn glance_uuids_prepare_and_serve_tempurls_that_fetch_the_image_bytes() {
    let img = images().await;
    let s = TestServer::start(Db::Sqlite, &img.env.ironboot_config("")).await;
    // a bare UUID and glance://UUID, in driver_info and in instance_info
    let (uuid, path) = node(
        &s,
        json!({"deploy_kernel": img.kernel, "deploy_ramdisk": format!("glance://{}", img.ramdisk)}),
        json!({"kernel": format!("glance://{}", img.kernel), "ramdisk": img.ramdisk.to_uppercase()}),
    )
    .await;
    let (st, ready) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ready}");
    assert_eq!(ready["state"], "ready");
    let (_, shown) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(
        shown["prepared"]["kernel"],
        json!({"reference": img.kernel, "source": "swift", "location": img.path(&img.kernel)}),
        "{shown}"
    );
    let urls = script_urls(&s, &img, &path, [&img.kernel, &img.ramdisk]).await;
    assert_eq!(
        fetch(&s, &urls[0]).await,
        (StatusCode::OK, img.kernel_bytes.clone())
    );
    assert_eq!(
        fetch(&s, &urls[1]).await,
        (StatusCode::OK, img.ramdisk_bytes.clone())
    );

    // a minute later: new signatures on the same objects
    s.clock.advance_secs(60);
    let again = script_urls(&s, &img, &path, [&img.kernel, &img.ramdisk]).await;
    assert_ne!(again[0], urls[0], "signed anew for each request");
    assert_eq!(fetch(&s, &again[0]).await.1, img.kernel_bytes);

    let (st, r) = s.set_target(&uuid, "instance").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let urls = script_urls(&s, &img, &path, [&img.kernel, &img.ramdisk]).await;
    assert_eq!(fetch(&s, &urls[1]).await.1, img.ramdisk_bytes);
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn the_boot_path_never_calls_glance() {
    let img = images().await;
    let glance = Proxy::start(&img.env.glance_url, None).await;
    let s = TestServer::start(
        Db::Sqlite,
        &img.env
            .ironboot_config(&format!("endpoint_override = {}\n", glance.url)),
    )
    .await;
    let (uuid, path) = node(
        &s,
        json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
        json!({}),
    )
    .await;
    assert_eq!(s.set_target(&uuid, "deploy").await.0, StatusCode::ACCEPTED);
    let after_prepare = glance.seen().len();
    assert_eq!(after_prepare, 2, "{:?}", glance.seen());
    for _ in 0..3 {
        s.clock.advance_secs(600);
        script_urls(&s, &img, &path, [&img.kernel, &img.ramdisk]).await;
    }
    assert_eq!(glance.seen().len(), after_prepare, "rendering asked Glance");
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn a_partition_image_source_boots_its_kernel_id_and_ramdisk_id() {
    let img = images().await;
    let env = &img.env;
    let partition = env
        .image_with(
            &img.token,
            b"root filesystem",
            json!({"kernel_id": img.kernel, "ramdisk_id": img.ramdisk}),
        )
        .await;
    let whole_disk = env.image_with(&img.token, b"whole disk", json!({})).await;
    let s = TestServer::start(Db::Sqlite, &env.ironboot_config("")).await;

    let (uuid, path) = node(
        &s,
        json!({}),
        json!({"image_source": format!("glance://{partition}")}),
    )
    .await;
    let (st, r) = s.set_target(&uuid, "instance").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    assert_eq!(
        r["prepared"]["kernel"]["reference"],
        json!(img.kernel),
        "{r}"
    );
    let urls = script_urls(&s, &img, &path, [&img.kernel, &img.ramdisk]).await;
    assert_eq!(fetch(&s, &urls[0]).await.1, img.kernel_bytes);
    assert_eq!(fetch(&s, &urls[1]).await.1, img.ramdisk_bytes);

    // an explicit instance_info.kernel wins over kernel_id
    let (uuid, path) = node(
        &s,
        json!({}),
        json!({"image_source": partition, "kernel": "http://10.0.2.2/explicit-kernel"}),
    )
    .await;
    assert_eq!(
        s.set_target(&uuid, "instance").await.0,
        StatusCode::ACCEPTED
    );
    let (_, script) = s.boot_get(&path).await;
    let urls = image_urls(&script);
    assert_eq!(urls[0], "http://10.0.2.2/explicit-kernel");
    assert!(
        urls[1].contains(&img.ramdisk) && urls[1].contains("temp_url_sig="),
        "{script}"
    );

    // a whole-disk image names no kernel: the error says so and suggests target local
    let (uuid, _) = node(&s, json!({}), json!({"image_source": whole_disk})).await;
    let r = s.set_target(&uuid, "instance").await;
    let message = assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "missing_image",
        Some("instance_info.kernel"),
    );
    assert!(
        message.contains(&format!("Glance image {whole_disk}"))
            && message.contains("has no kernel_id property")
            && message.contains("target local"),
        "{message}"
    );
    // an image_source Glance does not know
    let (uuid, _) = node(
        &s,
        json!({}),
        json!({"image_source": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    let r = s.set_target(&uuid, "instance").await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "glance_image_not_found",
        Some("instance_info.image_source"),
    );
    s.stop().await;
    img.delete(&[&partition, &whole_disk]).await;
}

/// Prepares target deploy with `kernel` as deploy_kernel and checks the error, the field
/// and `last_error`; returns the message.
async fn refused(
    s: &TestServer,
    kernel: &str,
    ramdisk: &str,
    status: StatusCode,
    code: &str,
) -> String {
    let (uuid, path) = node(
        s,
        json!({"deploy_kernel": kernel, "deploy_ramdisk": ramdisk}),
        json!({}),
    )
    .await;
    let r = s.set_target(&uuid, "deploy").await;
    let message = assert_error(&r, status, code, Some("driver_info.deploy_kernel"));
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(n["state"], "failed", "{n}");
    let last = n["last_error"].as_str().unwrap();
    assert!(
        last.contains(&message),
        "last_error {last:?} lacks {message:?}"
    );
    assert_eq!(
        s.boot_get(&path).await.0,
        StatusCode::NOT_FOUND,
        "nothing is served"
    );
    message
}

#[tokio::test]
async fn bad_glance_images_get_their_own_errors_and_last_error() {
    let img = images().await;
    let env = &img.env;
    let s = TestServer::start(Db::Sqlite, &env.ironboot_config("")).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let m = refused(
        &s,
        &unknown,
        &img.ramdisk,
        StatusCode::BAD_REQUEST,
        "glance_image_not_found",
    )
    .await;
    assert!(m.contains(&unknown) && m.contains("(404)"), "{m}");

    let queued = env.create_image(&img.token, json!({})).await;
    let m = refused(
        &s,
        &queued,
        &img.ramdisk,
        StatusCode::CONFLICT,
        "glance_image_not_active",
    )
    .await;
    assert!(
        m.contains(&format!("Glance image {queued} is queued, not active")) && m.contains("upload"),
        "{m}"
    );
    // not cached while it is not active: uploaded, it prepares at once
    env.upload(&img.token, &queued, b"now active".to_vec(), None)
        .await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": queued, "deploy_ramdisk": img.ramdisk}),
        json!({}),
    )
    .await;
    let (st, r) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");

    let deactivated = env.image_with(&img.token, b"deactivated", json!({})).await;
    env.deactivate(&img.token, &deactivated).await;
    let m = refused(
        &s,
        &deactivated,
        &img.ramdisk,
        StatusCode::CONFLICT,
        "glance_image_not_active",
    )
    .await;
    assert!(m.contains("is deactivated, not active"), "{m}");

    let m = refused(
        &s,
        "glance://kernel-image",
        &img.ramdisk,
        StatusCode::BAD_REQUEST,
        "invalid_image_ref",
    )
    .await;
    assert!(m.contains("is not a Glance image id"), "{m}");
    s.stop().await;

    // an image in a Glance whose store is a file system, not Swift
    let file_env = crate::support::glance_env::GlanceEnv {
        glance_url: env.file_glance_url.clone(),
        ..env.clone()
    };
    let in_file_store = file_env
        .image_with(&img.token, b"on a file system", json!({}))
        .await;
    // swift mode caches it and serves it itself (Ironic answers 404 here)
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!(
            "endpoint_override = {}\n[deploy]\nhttp_url = http://10.0.2.2:8080\n",
            env.file_glance_url
        )),
    )
    .await;
    let (_, n) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [crate::support::server::random_mac()],
                "driver_info": {"deploy_kernel": in_file_store, "deploy_ramdisk": format!("glance://{in_file_store}")}})),
        )
        .await;
    let uuid = n["uuid"].as_str().unwrap().to_string();
    let (st, n) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    crate::support::wait_for("the image in the cache", || async {
        s.call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await
            .1["state"]
            != "preparing"
    })
    .await;
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(n["state"], "ready", "{n}");
    assert_eq!(n["prepared"]["kernel"]["source"], "cache", "{n}");
    assert_eq!(
        std::fs::read(s.http_root().join(&uuid).join("deploy_kernel")).unwrap(),
        b"on a file system"
    );
    let (_, preview) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None)
        .await;
    assert!(
        preview
            .as_str()
            .unwrap_or_default()
            .contains(&format!("http://10.0.2.2:8080/{uuid}/deploy_kernel")),
        "{preview}"
    );
    s.stop().await;
    file_env.delete_images(&img.token, &[&in_file_store]).await;
    img.delete(&[&queued, &deactivated]).await;
}

#[tokio::test]
async fn another_projects_private_image_is_not_found_for_a_user_outside_it() {
    let env = glance_env().await;
    let demo = env.token(&env.demo).await;
    let service = env.token(&env.service).await;
    // demo's private image, and a private image of ironboot's project
    let demos = env
        .image_with(&demo, b"demo's kernel", json!({"visibility": "private"}))
        .await;
    let services = env
        .image_with(
            &service,
            b"service's kernel",
            json!({"visibility": "private"}),
        )
        .await;
    let ramdisk = env
        .image_with(&demo, b"demo's ramdisk", json!({"visibility": "private"}))
        .await;

    // ironboot as demo: its own images prepare, the other project's is "not found"
    let s = TestServer::start(Db::Sqlite, &env.ironboot_config_as(&env.demo, None, "")).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": demos, "deploy_ramdisk": ramdisk}),
        json!({}),
    )
    .await;
    let (st, r) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let m = refused(
        &s,
        &services,
        &ramdisk,
        StatusCode::BAD_REQUEST,
        "glance_image_not_found",
    )
    .await;
    assert!(
        m.contains(&services)
            && m.contains(&format!("project {}", env.demo.project))
            && m.contains("another project's private image"),
        "{m}"
    );
    s.stop().await;

    // ironboot's own user (a member of another project) does not see demo's private image
    let s = TestServer::start(Db::Sqlite, &env.ironboot_config("")).await;
    let m = refused(
        &s,
        &demos,
        &services,
        StatusCode::BAD_REQUEST,
        "glance_image_not_found",
    )
    .await;
    assert!(m.contains(&demos), "{m}");
    s.stop().await;
    env.delete_images(&demo, &[&demos, &ramdisk]).await;
    env.delete_images(&service, &[&services]).await;
}

#[tokio::test]
async fn a_wrong_keystone_password_fails_prepare_clearly() {
    let img = images().await;
    let env = &img.env;
    let wrong = unique("wrong-password");
    let keystone = Proxy::start(&env.keystone_url, None).await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config_as(
            &env.service,
            Some(&format!("{}/v3", keystone.url)),
            &format!("password = {wrong}\n"),
        ),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "keystone_auth_failed",
    )
    .await;
    assert!(
        m.contains(&format!(
            "refused the credentials of user \"{}\"",
            env.service.name
        )) && m.contains(&img.kernel)
            && m.contains("check [glance] username, password"),
        "{m}"
    );
    assert!(
        !m.contains(&wrong) && !m.contains(&env.service.password),
        "{m}"
    );
    // the kernel's and the ramdisk's lookups waited for one refusal, not two
    assert_eq!(keystone.token_requests(), 1);
    // a refusal is not kept: the next prepare asks again
    refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "keystone_auth_failed",
    )
    .await;
    assert_eq!(keystone.token_requests(), 2);
    s.stop().await;
    img.delete(&[]).await;
}

#[test]
fn serve_with_a_wrong_keystone_password_starts_and_warns() {
    let env = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(glance_env());
    let wrong = unique("wrong-password");
    let (serving, _dir) =
        crate::cli::serve_with(None, &env.ironboot_config(&format!("password = {wrong}\n")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = serving.log.lock().unwrap().clone();
        if log.contains("refused the credentials") {
            assert!(
                log.lines().any(|l| l.contains("WARN")
                    && l.contains("Glance images cannot be prepared until this is fixed")),
                "{log}"
            );
            assert!(!log.contains(&wrong), "the password is in the log:\n{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no warning within 30 s:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = reqwest::blocking::get(format!("http://{}/healthz", serving.api)).unwrap();
    assert_eq!(health.status(), StatusCode::OK, "serve keeps running");
    crate::cli::sigterm(&serving.child);
    let (status, log) = serving.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test]
async fn glance_or_keystone_down_slow_or_failing_fails_fast_with_its_code() {
    let img = images().await;
    let env = &img.env;
    let (_closed, closed) = refusing_port();

    // Glance down: refused connections, retried num_retries times
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!("endpoint_override = {closed}\nnum_retries = 1\n")),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "glance_unreachable",
    )
    .await;
    assert!(
        m.contains(&format!(
            "Glance is unreachable at {closed} for image {}",
            img.kernel
        )) && m.contains("(after 2 attempts)"),
        "{m}"
    );
    s.stop().await;

    // Glance hangs: prepare ends after [glance] timeout, with its own code
    let silent = Silent::start().await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!(
            "endpoint_override = {}\ntimeout = 1\nnum_retries = 3\n",
            silent.url
        )),
    )
    .await;
    let started = Instant::now();
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::GATEWAY_TIMEOUT,
        "glance_timeout",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        m.contains("did not answer within 1 s") && m.contains(&img.kernel),
        "{m}"
    );
    s.stop().await;

    // Glance answers 503: retried with back-off, then reported
    let failing = FixedStatus::start(StatusCode::SERVICE_UNAVAILABLE).await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!(
            "endpoint_override = {}\nnum_retries = 2\n",
            failing.url
        )),
    )
    .await;
    let started = Instant::now();
    let m = refused(
        &s,
        &img.kernel,
        &img.kernel,
        StatusCode::BAD_GATEWAY,
        "glance_error",
    )
    .await;
    assert!(
        m.contains("answered 503 for image") && m.contains("(after 3 attempts)"),
        "{m}"
    );
    // two references to one image share the requests: 3 in all, 0.5 s + 1 s apart
    assert_eq!(failing.requests(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;

    // a 4xx other than 401/403/404 is not retried
    let teapot = FixedStatus::start(StatusCode::IM_A_TEAPOT).await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!(
            "endpoint_override = {}\nnum_retries = 2\n",
            teapot.url
        )),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.kernel,
        StatusCode::BAD_GATEWAY,
        "glance_error",
    )
    .await;
    assert!(m.contains("answered 418"), "{m}");
    assert_eq!(teapot.requests(), 1);
    s.stop().await;

    // Keystone down
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config_as(&env.service, Some(&format!("{closed}/v3")), ""),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "keystone_unreachable",
    )
    .await;
    assert!(
        m.contains(&format!("Keystone is unreachable at {closed}/v3")),
        "{m}"
    );
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn a_seed_that_differs_from_glances_names_the_container_and_object_tried() {
    let img = images().await;
    let env = &img.env;
    let seed = if env.seed == 3 { 4 } else { 3 };
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!("swift_store_multiple_containers_seed = {seed}\n")),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "glance_object_not_found",
    )
    .await;
    let container = ironboot::tempurl::glance::container_for(&env.container, seed, &img.kernel);
    assert!(
        m.contains(&format!(
            "no object \"{}\" in container \"{container}\"",
            img.kernel
        )) && m.contains(&format!("swift_store_multiple_containers_seed ({seed})"))
            && m.contains("differs from Glance's"),
        "{m}"
    );
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn bare_and_v3_auth_urls_both_work() {
    let img = images().await;
    let env = &img.env;
    for auth_url in [
        env.keystone_url.clone(),
        format!("{}/", env.keystone_url),
        format!("{}/v3", env.keystone_url),
        format!("{}/v3/", env.keystone_url),
    ] {
        let s = TestServer::start(
            Db::Sqlite,
            &env.ironboot_config_as(&env.service, Some(&auth_url), ""),
        )
        .await;
        let (uuid, _) = node(
            &s,
            json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
            json!({}),
        )
        .await;
        let (st, r) = s.set_target(&uuid, "deploy").await;
        assert_eq!(st, StatusCode::ACCEPTED, "auth_url = {auth_url}: {r}");
        s.stop().await;
    }
    // Glance's root also answers 300, with image API versions: not Keystone
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config_as(&env.service, Some(&env.glance_url), ""),
    )
    .await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "keystone_error",
    )
    .await;
    assert!(
        m.contains("offers no usable v3 API") && m.contains("v2."),
        "{m}"
    );
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires_by_the_services_clock() {
    let img = images().await;
    let env = &img.env;
    let keystone = Proxy::start(&env.keystone_url, None).await;
    // every prepare asks Glance, and so needs the token (the suite's tokens live 60 s)
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config_as(
            &env.service,
            Some(&format!("{}/v3", keystone.url)),
            "metadata_cache_ttl = 0\n",
        ),
    )
    .await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
        json!({}),
    )
    .await;
    let prepare =
        || async { assert_eq!(s.set_target(&uuid, "deploy").await.0, StatusCode::ACCEPTED) };
    prepare().await;
    assert_eq!(keystone.token_requests(), 1);
    prepare().await;
    assert_eq!(keystone.token_requests(), 1, "the token is kept");

    // Keystone's token lifetime, and the margin ironboot renews at: min(120 s, a quarter)
    let (_, body) = env.token_and_body(&env.service).await;
    let at = |k: &str| {
        ironboot::images::keystone::parse_keystone_time(body["token"][k].as_str().unwrap()).unwrap()
    };
    let lifetime = at("expires_at") - at("issued_at");
    let renew_after = lifetime - (lifetime / 4).min(120);
    assert!(
        renew_after > 10,
        "token lifetime {lifetime} s is too short for this test"
    );

    s.clock.advance_secs(renew_after - 5);
    prepare().await;
    assert_eq!(keystone.token_requests(), 1, "5 s before the renewal time");
    s.clock.advance_secs(10);
    prepare().await;
    assert_eq!(keystone.token_requests(), 2, "renewed before expires_at");
    prepare().await;
    assert_eq!(keystone.token_requests(), 2);
    let tokens = keystone.issued_tokens();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    // /metrics counts what the proxy saw: 2 tokens, one Glance GET per prepare (no cache)
    assert_eq!(
        s.metric("ironboot_upstream_requests_total{service=\"keystone\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        s.metric("ironboot_upstream_requests_total{service=\"glance\"}")
            .await,
        Some(10.0),
        "5 prepares of 2 images with metadata_cache_ttl = 0"
    );
    s.stop().await;
    img.delete(&[]).await;
}

/// A Keystone proxy that revokes the first `n` tokens it hands out before ironboot gets
/// them, so Glance (which has never seen them) answers 401.
async fn revoking_keystone(env: &GlanceEnv, n: usize) -> Proxy {
    let revoked = Arc::new(AtomicUsize::new(0));
    let for_hook = env.clone();
    let hook: Hook = Arc::new(move |seen| {
        let env = for_hook.clone();
        let revoked = revoked.clone();
        Box::pin(async move {
            if let (Some(token), 201) = (seen.subject_token, seen.status)
                && revoked.fetch_add(1, Ordering::SeqCst) < n
            {
                env.revoke(&token).await;
            }
        })
    });
    Proxy::start(&env.keystone_url, Some(hook)).await
}

#[tokio::test]
async fn a_token_glance_refuses_is_renewed_once() {
    let img = images().await;
    let env = &img.env;
    let glance = Proxy::start(&env.glance_url, None).await;
    let config = |keystone: &Proxy| {
        env.ironboot_config_as(
            &env.service,
            Some(&format!("{}/v3", keystone.url)),
            &format!("endpoint_override = {}\n", glance.url),
        )
    };

    // the first token is revoked: one 401, one renewal, then success
    let keystone = revoking_keystone(env, 1).await;
    let s = TestServer::start(Db::Sqlite, &config(&keystone)).await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
        json!({}),
    )
    .await;
    let (st, r) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    assert_eq!(
        keystone.token_requests(),
        2,
        "renewed once, for both images"
    );
    let statuses: Vec<u16> = glance.seen().iter().map(|g| g.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&st| st == 401).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&st| st == 200).count(),
        2,
        "{statuses:?}"
    );
    let tokens = keystone.issued_tokens();
    assert!(
        glance
            .seen()
            .iter()
            .filter(|g| g.status == 200)
            .all(|g| g.auth_token.as_ref() == Some(&tokens[1])),
        "the retries carry the new token"
    );
    s.stop().await;

    // every token is revoked: renewed once only, then an error
    let keystone = revoking_keystone(env, usize::MAX).await;
    let s = TestServer::start(Db::Sqlite, &config(&keystone)).await;
    let m = refused(
        &s,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "glance_error",
    )
    .await;
    assert!(
        m.contains("refused a new Keystone token") && m.contains(&img.kernel),
        "{m}"
    );
    assert_eq!(keystone.token_requests(), 2, "one renewal, not a loop");
    s.stop().await;
    img.delete(&[]).await;
}

#[tokio::test]
async fn nodes_sharing_an_image_cost_one_glance_request_per_cache_period() {
    let img = images().await;
    let env = &img.env;
    let glance = Proxy::start(&env.glance_url, None).await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!(
            "endpoint_override = {}\nmetadata_cache_ttl = 30\n",
            glance.url
        )),
    )
    .await;
    let gets = |id: &str| glance.count("GET", &format!("/v2/images/{id}"));
    const NODES: usize = 40;
    let mut uuids = Vec::new();
    for _ in 0..NODES {
        uuids.push(
            node(
                &s,
                json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
                json!({}),
            )
            .await
            .0,
        );
    }
    // all prepared at once
    let mut set = tokio::task::JoinSet::new();
    for uuid in &uuids {
        let (http, url) = (s.http.clone(), format!("{}/v1/nodes/{uuid}/boot", s.api));
        set.spawn(async move {
            http.put(url)
                .json(&json!({"target": "deploy"}))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        (gets(&img.kernel), gets(&img.ramdisk)),
        (1, 1),
        "{} prepares",
        NODES
    );

    // within the period: no request; after it: one more per image
    s.clock.advance_secs(29);
    assert_eq!(
        s.set_target(&uuids[0], "deploy").await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!((gets(&img.kernel), gets(&img.ramdisk)), (1, 1));
    s.clock.advance_secs(2);
    for uuid in &uuids[..5] {
        assert_eq!(s.set_target(uuid, "deploy").await.0, StatusCode::ACCEPTED);
    }
    assert_eq!((gets(&img.kernel), gets(&img.ramdisk)), (2, 2));
    s.stop().await;

    // the client alone: 1,000 concurrent lookups of one image, one request
    let settings = ironboot::config::from_str(
        &env.ironboot_config(&format!("endpoint_override = {}\n", glance.url)),
        None,
    )
    .unwrap()
    .settings;
    let clock = Arc::new(ironboot::clock::ManualClock::starting_now());
    let client = Arc::new(
        ironboot::images::glance::GlanceClient::new(
            settings.glance.as_ref().unwrap(),
            clock.clone(),
        )
        .unwrap(),
    );
    let before = gets(&img.kernel);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (client, id) = (client.clone(), img.kernel.clone());
        set.spawn(async move { client.show(&id).await.map(|i| i.status.clone()) });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap(), "active");
    }
    assert_eq!(client.requests(), 1);
    assert_eq!(gets(&img.kernel), before + 1);
    assert_eq!(client.keystone().unwrap().token_requests(), 1);
    clock.advance_secs(31);
    client.show(&img.kernel).await.unwrap();
    assert_eq!(client.requests(), 2, "stale after the TTL");
    img.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_errors_logs_metrics_or_debug() {
    let img = images().await;
    let env = &img.env;
    let wrong = unique("wrong-password");

    // in process: the API's answers, /metrics, Debug of the whole service
    let keystone = revoking_keystone(env, 1).await;
    let s = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config_as(&env.service, Some(&format!("{}/v3", keystone.url)), ""),
    )
    .await;
    let (uuid, _) = node(
        &s,
        json!({"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}),
        json!({}),
    )
    .await;
    assert_eq!(s.set_target(&uuid, "deploy").await.0, StatusCode::ACCEPTED);
    let (_, shown) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    let metrics = s
        .http
        .get(format!("{}/metrics", s.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let debug = format!("{:?}", s.service);
    assert!(
        debug.contains("KeystoneClient"),
        "Debug shows the client: {debug}"
    );
    s.stop().await;
    let w = TestServer::start(
        Db::Sqlite,
        &env.ironboot_config(&format!("password = {wrong}\n")),
    )
    .await;
    let m = refused(
        &w,
        &img.kernel,
        &img.ramdisk,
        StatusCode::BAD_GATEWAY,
        "keystone_auth_failed",
    )
    .await;
    let wrong_debug = format!("{:?}", w.service);
    w.stop().await;

    // the binary's log at trace level, through a token renewal on a 401
    let logging = revoking_keystone(env, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    let config = env.ironboot_config_as(&env.service, Some(&format!("{}/v3", logging.url)), "");
    let state = dir.path().join("state");
    let serving = tokio::task::spawn_blocking(move || {
        crate::cli::start_serve(|api, boot| {
            std::fs::write(
                &conf,
                format!(
                    "[DEFAULT]\nstate_path = {}\n[api]\nport = {api}\n[httpboot]\nport = {boot}\n{config}",
                    state.display()
                ),
            )
            .unwrap();
            let mut cmd = std::process::Command::new(crate::support::ironboot_bin());
            cmd.env_remove("IRONBOOT_CONFIG")
                .env_remove("IRONBOOT_LOG")
                .arg("--config")
                .arg(&conf)
                .args(["--log", "trace", "serve"]);
            cmd
        })
    })
    .await
    .unwrap();
    let api = format!("http://{}", serving.api);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{api}/v1/nodes"))
        .json(&json!({"macs": [random_mac()], "driver_info": {"deploy_kernel": img.kernel, "deploy_ramdisk": img.ramdisk}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = http
        .put(format!(
            "{api}/v1/nodes/{}/boot",
            created["uuid"].as_str().unwrap()
        ))
        .json(&json!({"target": "deploy"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);
    crate::cli::sigterm(&serving.child);
    let (_, logs) = tokio::task::spawn_blocking(move || serving.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(
        logs.contains("Keystone token obtained"),
        "the log is complete:\n{logs}"
    );
    assert!(
        logs.contains("Glance refused the Keystone token (401)"),
        "{logs}"
    );

    let tokens: Vec<String> = keystone
        .issued_tokens()
        .into_iter()
        .chain(logging.issued_tokens())
        .collect();
    assert_eq!(
        tokens.len(),
        4,
        "a revoked and a good token went through each proxy"
    );
    for (what, text) in [
        ("log", &logs),
        ("node", &shown.to_string()),
        ("metrics", &metrics),
        ("Debug", &debug),
        ("Debug (wrong password)", &wrong_debug),
        ("error", &m),
    ] {
        for secret in tokens
            .iter()
            .chain([&env.service.password, &wrong, &env.swift_key])
        {
            assert!(
                !text.contains(secret.as_str()),
                "a secret is in the {what}:\n{text}"
            );
        }
    }
    img.delete(&[]).await;
}

#[tokio::test]
async fn image_show_prints_the_resolved_source_and_a_redacted_tempurl() {
    let img = images().await;
    let env = &img.env;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nstate_path = {}\n{}",
            dir.path().display(),
            env.ironboot_config("")
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let conf = conf.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::support::ironboot_bin())
                .env_remove("IRONBOOT_CONFIG")
                .arg("--config")
                .arg(&conf)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = run(vec![
        "image".into(),
        "show".into(),
        format!("glance://{}", img.kernel),
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}: in\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("source"), "glance → swift");
    assert_eq!(field("size"), format!("{} bytes", img.kernel_bytes.len()));
    let body = env.show(&img.token, &img.kernel).await;
    assert_eq!(
        field("checksum"),
        format!("{} (md5)", body["checksum"].as_str().unwrap())
    );
    assert_eq!(
        field("hash"),
        format!("sha512 {}", body["os_hash_value"].as_str().unwrap())
    );
    assert_eq!(field("location"), img.path(&img.kernel));
    assert!(
        field("url").contains("temp_url_sig=<redacted>&temp_url_expires="),
        "{text}"
    );

    let out = run(vec![
        "image".into(),
        "show".into(),
        img.kernel.clone(),
        "--show-url".into(),
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("url:"))
        .unwrap()
        .trim()
        .to_string();
    let bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.to_vec(), img.kernel_bytes);

    let unknown = uuid::Uuid::new_v4().to_string();
    let out = run(vec!["image".into(), "show".into(), unknown.clone()])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&unknown) && err.contains("glance_image_not_found"),
        "{err}"
    );
    img.delete(&[]).await;
}

/// Both Glances of the suite, seed 0 (container `glance`) and seed 3 (containers
/// `glance3_<first 3 characters>`), with a kernel large enough to be stored in segments (a
/// manifest): prepare finds each object where Ironic's rule puts it, and the TempURL
/// fetches the whole image.
#[tokio::test]
async fn seed_0_and_seed_3_glances_with_a_segmented_image() {
    let base = glance_env().await;
    for (url, container, seed) in [
        (
            base.glance_url.clone(),
            crate::support::required_env("IRONBOOT_TEST_GLANCE_CONTAINER"),
            crate::support::required_env("IRONBOOT_TEST_GLANCE_SEED"),
        ),
        (
            crate::support::required_env("IRONBOOT_TEST_GLANCE3_URL"),
            crate::support::required_env("IRONBOOT_TEST_GLANCE3_CONTAINER"),
            crate::support::required_env("IRONBOOT_TEST_GLANCE3_SEED"),
        ),
    ] {
        let env = GlanceEnv {
            glance_url: url.trim_end_matches('/').to_string(),
            container,
            seed: seed.parse().unwrap(),
            ..base.clone()
        };
        let token = env.token(&env.service).await;
        // above the suite's 1 "MB" (1,024,000 bytes) large-object size
        let kernel_bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let ramdisk_bytes = unique("small ramdisk").into_bytes();
        let kernel = env.image_with(&token, &kernel_bytes, json!({})).await;
        let ramdisk = env.image_with(&token, &ramdisk_bytes, json!({})).await;
        let config = env.ironboot_config(&format!(
            "endpoint_override = {}\nswift_container = {}\nswift_store_multiple_containers_seed = {}\n",
            env.glance_url, env.container, env.seed
        ));
        let s = TestServer::start(Db::Sqlite, &config).await;
        let (uuid, path) = node(
            &s,
            json!({"deploy_kernel": kernel, "deploy_ramdisk": format!("glance://{ramdisk}")}),
            json!({}),
        )
        .await;
        let (st, r) = s.set_target(&uuid, "deploy").await;
        assert_eq!(st, StatusCode::ACCEPTED, "seed {}: {r}", env.seed);
        let (_, script) = s.boot_get(&path).await;
        let urls = image_urls(&script);
        let object = ironboot::tempurl::glance::image_path(
            "v1",
            &env.swift_account,
            &env.container,
            env.seed,
            &kernel,
        )
        .unwrap();
        assert!(
            urls[0].contains(&object),
            "seed {}: {} vs {object}",
            env.seed,
            urls[0]
        );
        let (st, bytes) = fetch(&s, &urls[0]).await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            bytes == kernel_bytes,
            "seed {}: the whole segmented kernel",
            env.seed
        );
        assert_eq!(fetch(&s, &urls[1]).await, (StatusCode::OK, ramdisk_bytes));
        s.stop().await;
        env.delete_images(&token, &[&kernel, &ramdisk]).await;
    }
}
