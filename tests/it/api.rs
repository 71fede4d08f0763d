//! The REST API and the boot listener, on SQLite and on PostgreSQL, with http(s) image
//! references (Swift-backed boots are in `swift_boot.rs`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::server::{Db, TestServer, assert_error, random_mac};

/// Runs an async test body against both databases.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                super::$name(Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(Db::Postgres).await
            }
        }
    )*};
}

on_both_databases!(
    node_lifecycle,
    bad_input_gets_clear_errors,
    boot_targets_and_scripts,
    failed_preparation_records_last_error_and_keeps_the_previous_target,
    static_mirror_follows_the_nodes,
    regression_node_list_is_unpaged,
);

fn http_node(mac: &str) -> Value {
    json!({
        "name": format!("n-{}", &mac[9..].replace(':', "")),
        "macs": [mac],
        "boot_mode": "bios",
        "driver_info": {"deploy_kernel": "http://10.0.2.2:8080/deploy/vmlinuz", "deploy_ramdisk": "http://10.0.2.2:8080/deploy/initrd.img?v=1&x=2"},
        "instance_info": {"kernel": "https://images.example.com/k", "ramdisk": "https://images.example.com/r", "kernel_append_params": "root=/dev/ram0 console=ttyS0"},
    })
}

async fn node_lifecycle(db: Db) {
    let s = TestServer::start(db, "").await;
    let mac = random_mac();
    let (status, node) = s
        .call(Method::POST, "/v1/nodes", Some(http_node(&mac)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let name = node["name"].as_str().unwrap().to_string();
    assert_eq!(node["macs"], json!([mac]));
    assert_eq!(
        (node["target"].as_str(), node["state"].as_str()),
        (Some("none"), Some("idle"))
    );
    assert_eq!(node["last_error"], Value::Null);

    // by uuid and by name
    for ident in [&uuid, &name] {
        let (st, got) = s
            .call(Method::GET, &format!("/v1/nodes/{ident}"), None)
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(got["uuid"], uuid.as_str());
    }
    // list with filters
    let other = random_mac();
    s.call(
        Method::POST,
        "/v1/nodes",
        Some(json!({"macs": [other], "boot_mode": "uefi"})),
    )
    .await;
    let (_, all) = s.call(Method::GET, "/v1/nodes", None).await;
    assert_eq!(all["nodes"].as_array().unwrap().len(), 2);
    let (_, by_mac) = s
        .call(
            Method::GET,
            &format!("/v1/nodes?mac={}", mac.to_uppercase().replace(':', "-")),
            None,
        )
        .await;
    assert_eq!(by_mac["nodes"][0]["uuid"], uuid.as_str());
    assert_eq!(by_mac["nodes"].as_array().unwrap().len(), 1);
    let (_, by_name) = s
        .call(Method::GET, &format!("/v1/nodes?name={name}"), None)
        .await;
    assert_eq!(by_name["nodes"].as_array().unwrap().len(), 1);
    let (_, idle) = s
        .call(Method::GET, "/v1/nodes?target=none&state=idle", None)
        .await;
    assert_eq!(idle["nodes"].as_array().unwrap().len(), 2);

    // merge patch: rename, drop a key with null, add a MAC, keep the rest
    let added = random_mac();
    let patch = json!({"name": "renamed", "macs": [mac, added], "instance_info": {"kernel_append_params": null}, "driver_info": {"site": "rack-7"}});
    s.clock.advance_secs(1);
    let (st, patched) = s
        .call(Method::PATCH, &format!("/v1/nodes/{uuid}"), Some(patch))
        .await;
    assert_eq!(st, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["macs"].as_array().unwrap().len(), 2);
    assert_eq!(patched["instance_info"].get("kernel_append_params"), None);
    assert_eq!(
        patched["instance_info"]["kernel"],
        "https://images.example.com/k"
    );
    assert_eq!(patched["driver_info"]["site"], "rack-7");
    assert_eq!(
        patched["driver_info"]["deploy_kernel"],
        "http://10.0.2.2:8080/deploy/vmlinuz"
    );
    assert_ne!(patched["updated_at"], node["updated_at"]);

    // delete
    let (st, _) = s.call(Method::DELETE, "/v1/nodes/renamed", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let gone = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "node_not_found", None);
    // its MACs are free again
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac, added]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s.stop().await;
}

async fn bad_input_gets_clear_errors(db: Db) {
    let s = TestServer::start(db, "").await;
    // malformed bodies
    let r = s
        .request(Method::POST, "/v1/nodes", Some("{\"macs\": [".into()), None)
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!(["not", "an", "object"])),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", None);
    let r = s
        .call(Method::POST, "/v1/nodes", Some(json!({"mcas": []})))
        .await;
    let m = assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", None);
    assert!(m.contains("unknown field `mcas`"), "{m}");
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"driver_info": {"deploy_kernel": 42}})),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("driver_info.deploy_kernel"),
    );

    // bad and duplicate MACs
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac(), "52:54:00:zz:00:01"]})),
        )
        .await;
    let m = assert_error(&r, StatusCode::BAD_REQUEST, "invalid_mac", Some("macs[1]"));
    assert!(
        m.contains("\"52:54:00:zz:00:01\" is not a MAC address"),
        "{m}"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": ["01:00:5e:00:00:01"]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_mac", Some("macs[0]"));
    let mac = random_mac();
    let (_, first) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"name": "first", "macs": [mac]})),
        )
        .await;
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac.replace(':', "-").to_uppercase()]})),
        )
        .await;
    let m = assert_error(&r, StatusCode::CONFLICT, "duplicate_mac", Some("macs"));
    assert!(
        m.contains(first["uuid"].as_str().unwrap()),
        "names the owner: {m}"
    );
    let r = s
        .call(Method::POST, "/v1/nodes", Some(json!({"name": "first"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "duplicate_name", Some("name"));
    // nothing was half-written: still exactly one node
    let (_, all) = s.call(Method::GET, "/v1/nodes", None).await;
    assert_eq!(all["nodes"].as_array().unwrap().len(), 1);

    // other fields
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"boot_mode": "legacy"})),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("boot_mode"),
    );
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"name": "has space"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("name"));
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"instance_info": {"kernel_append_params": "a ${x}"}})),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("instance_info.kernel_append_params"),
    );
    let r = s
        .call(
            Method::PATCH,
            "/v1/nodes/first",
            Some(json!({"target": "deploy"})),
        )
        .await;
    let m = assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "read_only_field",
        Some("target"),
    );
    assert!(m.contains("PUT /v1/nodes/{node}/boot"), "{m}");
    let r = s
        .call(
            Method::PUT,
            "/v1/nodes/first/boot",
            Some(json!({"target": "rescue"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("target"));
    let r = s
        .call(Method::PUT, "/v1/nodes/first/boot", Some(json!({})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", None);
    let r = s.call(Method::GET, "/v1/nodes/nope", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "node_not_found", None);
    let r = s.call(Method::GET, "/v1/nodes?state=weird", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("state"));
    let r = s.call(Method::GET, "/v2/nothing", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);

    // errors are counted by code
    assert_eq!(
        s.metric("ironboot_errors_total{reason=\"duplicate_mac\"}")
            .await,
        Some(1.0)
    );
    assert!(
        s.metric("ironboot_errors_total{reason=\"invalid_mac\"}")
            .await
            >= Some(2.0)
    );
    s.stop().await;
}

async fn boot_targets_and_scripts(db: Db) {
    let s = TestServer::start(
        db,
        "[pxe]\nipxe_timeout = 30\nkernel_append_params = nofb vga=normal console=ttyS0\n",
    )
    .await;
    let mac = random_mac();
    let hexhyp = mac.replace(':', "-");
    let (_, node) = s
        .call(Method::POST, "/v1/nodes", Some(http_node(&mac)))
        .await;
    let uuid = node["uuid"].as_str().unwrap();
    let path = format!("/pxelinux.cfg/{hexhyp}");

    // no target: 404, so the master script moves on
    assert_eq!(s.boot_get(&path).await.0, StatusCode::NOT_FOUND);

    let (st, ready) = s.set_target(uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ready}");
    assert_eq!(
        (ready["target"].as_str(), ready["state"].as_str()),
        (Some("deploy"), Some("ready"))
    );
    let (st, script) = s.boot_get(&path).await;
    assert_eq!(st, StatusCode::OK);
    assert!(script.starts_with("#!ipxe\n"));
    assert!(
        script.contains("kernel --name deploy_kernel --timeout 30000 http://10.0.2.2:8080/deploy/vmlinuz nofb vga=normal console=ttyS0 initrd=deploy_ramdisk "),
        "{script}"
    );
    assert!(
        script.contains(&format!("BOOTIF=01-{hexhyp} || goto retry")),
        "{script}"
    );
    assert!(script.contains("initrd --name deploy_ramdisk --timeout 30000 http://10.0.2.2:8080/deploy/initrd.img?v=1&x=2 || goto retry"), "{script}");
    // PXE-style and colon spellings of the MAC reach the same script
    assert_eq!(
        s.boot_get(&format!("/pxelinux.cfg/01-{hexhyp}")).await,
        (StatusCode::OK, script.clone())
    );
    // the API preview is the same script
    let preview = s
        .request(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None, None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(preview, script);

    // instance: the node's kernel_append_params win over the config's
    let (st, _) = s.set_target(uuid, "instance").await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (_, script) = s.boot_get(&path).await;
    assert!(script.contains("kernel --name kernel --timeout 30000 https://images.example.com/k root=/dev/ram0 console=ttyS0 initrd=ramdisk "), "{script}");
    assert!(!script.contains("nofb"), "{script}");

    // local: exit (and sanboot on BIOS), no image
    s.set_target(uuid, "local").await;
    let (_, script) = s.boot_get(&path).await;
    assert!(
        script
            .contains("sanboot --no-describe --drive 0x80 || goto local_exit\n:local_exit\nexit 0"),
        "{script}"
    );
    assert!(!script.contains("kernel "), "{script}");

    // none: 404 again
    let (_, idle) = s.set_target(uuid, "none").await;
    assert_eq!(
        (idle["target"].as_str(), idle["state"].as_str()),
        (Some("none"), Some("idle"))
    );
    assert_eq!(s.boot_get(&path).await.0, StatusCode::NOT_FOUND);
    let r = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "no_boot_target", None);

    // unknown MAC and junk names: 404
    assert_eq!(
        s.boot_get(&format!("/pxelinux.cfg/{}", random_mac().replace(':', "-")))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.boot_get("/pxelinux.cfg/not-a-mac").await.0,
        StatusCode::NOT_FOUND
    );

    // the master script
    let (st, master) = s.boot_get("/boot.ipxe").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        master.contains("chain pxelinux.cfg/${net${netid}/mac:hexhyp} || goto loop"),
        "{master}"
    );
    assert!(
        s.metric("ironboot_script_renders_total{kind=\"node\",result=\"ok\"}")
            .await
            >= Some(4.0)
    );
    assert!(
        s.metric("ironboot_script_renders_total{kind=\"node\",result=\"not_found\"}")
            .await
            >= Some(3.0)
    );
    s.stop().await;
}

async fn failed_preparation_records_last_error_and_keeps_the_previous_target(db: Db) {
    let s = TestServer::start(db, "").await;
    let mac = random_mac();
    let (_, node) = s.call(Method::POST, "/v1/nodes", Some(json!({"macs": [mac], "driver_info": {"deploy_kernel": "http://h/k", "deploy_ramdisk": "http://h/r"}}))).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let path = format!("/pxelinux.cfg/{}", mac.replace(':', "-"));

    // target instance without instance images
    let r = s.set_target(&uuid, "instance").await;
    let m = assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "missing_image",
        Some("instance_info.kernel"),
    );
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(n["state"], "failed");
    assert!(n["last_error"].as_str().unwrap().contains(&m), "{n}");

    // deploy works; then a bad edit and a failed re-prepare leave the working deploy in force
    let (st, _) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (_, good) = s.boot_get(&path).await;
    s.patch(
        &uuid,
        json!({"driver_info": {"deploy_kernel": "ftp://h/k"}}),
    )
    .await;
    let r = s.set_target(&uuid, "deploy").await;
    let m = assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_image_ref",
        Some("driver_info.deploy_kernel"),
    );
    assert!(
        m.contains("unknown image reference scheme") && m.contains("\"ftp\""),
        "{m}"
    );
    let (_, n) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(
        (n["target"].as_str(), n["state"].as_str()),
        (Some("deploy"), Some("failed"))
    );
    assert_eq!(
        s.boot_get(&path).await,
        (StatusCode::OK, good.clone()),
        "the prepared snapshot is still served"
    );

    // references this mode cannot serve yet, and swift:// without use_swift
    for (kernel, field_fragment) in [
        (
            "glance://757274c4-2856-4bd2-bb20-9a4a231e187b",
            "glance references are not supported in this mode",
        ),
        ("swift://images/k", "with [ipxe] use_swift = true"),
    ] {
        s.patch(&uuid, json!({"driver_info": {"deploy_kernel": kernel}}))
            .await;
        let r = s.set_target(&uuid, "deploy").await;
        let m = assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "unsupported_image_ref",
            Some("driver_info.deploy_kernel"),
        );
        assert!(m.contains(field_fragment), "{m}");
    }
    // a successful prepare clears the error
    s.patch(
        &uuid,
        json!({"driver_info": {"deploy_kernel": "http://h/k2"}}),
    )
    .await;
    let (st, n) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(
        (n["state"].as_str(), &n["last_error"]),
        (Some("ready"), &Value::Null)
    );
    assert!(s.boot_get(&path).await.1.contains("http://h/k2 "));
    assert!(
        s.metric("ironboot_boot_prepares_total{target=\"deploy\",result=\"failed\"}")
            .await
            >= Some(3.0)
    );
    s.stop().await;
}

async fn static_mirror_follows_the_nodes(db: Db) {
    let s = TestServer::start(db, "").await;
    let root = s.http_root();
    let (a, b) = (random_mac(), random_mac());
    let mut body = http_node(&a);
    body["macs"] = json!([a, b]);
    let (_, node) = s.call(Method::POST, "/v1/nodes", Some(body)).await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    s.set_target(&uuid, "deploy").await;

    let config = root.join(&uuid).join("config");
    let link = root.join("pxelinux.cfg").join(a.replace(':', "-"));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::Path::new("..").join(&uuid).join("config")
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("BOOTIF=01-${mac:hexhyp}"),
        "the shared config lets iPXE fill in the MAC: {text}"
    );
    assert!(text.contains("http://10.0.2.2:8080/deploy/vmlinuz"));
    assert!(root.join("boot.ipxe").exists());
    assert!(root.join("pxelinux.cfg").join(b.replace(':', "-")).exists());

    // dropping a MAC drops its link
    s.patch(&uuid, json!({"macs": [a]})).await;
    assert!(
        std::fs::symlink_metadata(root.join("pxelinux.cfg").join(b.replace(':', "-"))).is_err()
    );

    // target none removes the files; so does deletion
    s.set_target(&uuid, "none").await;
    assert!(!config.exists() && std::fs::symlink_metadata(&link).is_err());
    s.set_target(&uuid, "local").await;
    assert!(config.exists());
    s.call(Method::DELETE, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert!(!config.exists() && std::fs::symlink_metadata(&link).is_err());

    // a leftover directory of an unknown node is removed by the periodic refresh
    let orphan = root.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("config"), "#!ipxe\n").unwrap();
    s.service.refresh_mirror().await.unwrap();
    assert!(!orphan.exists());
    s.stop().await;
}

#[tokio::test]
async fn token_auth_guards_the_api_but_not_metrics_or_boot() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "s3cret-token\n").unwrap();
    let s = TestServer::start(
        Db::Sqlite,
        &format!(
            "[api]\nauth_strategy = token\ntoken_file = {}\n",
            token_file.path().display()
        ),
    )
    .await;
    let anon = s.request(Method::GET, "/v1/nodes", None, None).await;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anon.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(!body.to_string().contains("s3cret"));
    assert_eq!(
        s.request(Method::GET, "/v1/nodes", None, Some("wrong-token!"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.request(Method::GET, "/v1/nodes", None, Some("s3cret-token"))
            .await
            .status(),
        StatusCode::OK
    );
    let x_auth = s
        .http
        .get(format!("{}/v1/nodes", s.api))
        .header("X-Auth-Token", "s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(x_auth.status(), StatusCode::OK);
    assert_eq!(
        s.request(Method::GET, "/metrics", None, None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.request(Method::GET, "/healthz", None, None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(s.boot_get("/boot.ipxe").await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn fallback_script_is_served_from_http_root() {
    let s = TestServer::start(Db::Sqlite, "[ipxe]\nfallback_script = inspector.ipxe\n").await;
    let (_, master) = s.boot_get("/boot.ipxe").await;
    assert!(
        master.contains("chain inspector.ipxe || goto boot_failed"),
        "{master}"
    );
    assert_eq!(
        s.boot_get("/inspector.ipxe").await.0,
        StatusCode::NOT_FOUND,
        "missing file"
    );
    std::fs::write(
        s.http_root().join("inspector.ipxe"),
        "#!ipxe\necho inspect\n",
    )
    .unwrap();
    assert_eq!(
        s.boot_get("/inspector.ipxe").await,
        (StatusCode::OK, "#!ipxe\necho inspect\n".to_string())
    );
    s.stop().await;
}

/// Regression: this test used to sleep 50 ms before stopping, so the request had always
/// finished before the stop and a broken graceful shutdown went unnoticed. Now the request
/// is provably in flight (its body half sent, the in-flight gauge at 1) when the stop
/// begins, and it is finished only after the listener has stopped accepting.
#[tokio::test]
async fn shutdown_is_graceful_for_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(Db::Sqlite, "").await;
    let addr = s.api.trim_start_matches("http://").to_string();
    let body = br#"{"name": "in-flight"}"#;
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..5]).await.unwrap();
    let in_flight = s
        .service
        .metrics()
        .in_flight
        .get_or_create(&ironboot::metrics::ListenerLabels { listener: "api" })
        .clone();
    crate::support::wait_for("the request to be in flight", || async {
        in_flight.get() == 1
    })
    .await;
    let stopping = tokio::spawn(s.stop());
    crate::support::wait_for("the API listener to stop accepting", || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.is_err() }
    })
    .await;
    assert!(!stopping.is_finished(), "the server waits for the request");
    conn.write_all(&body[5..]).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the request in flight is answered: {response}"
    );
    stopping.await.unwrap();
}

/// Follows a listing's `next` links from `first` to the end; returns the pages. Checks that
/// every `next` is a full link to this server with `limit` and the page's last uuid as
/// `marker`.
async fn all_pages(s: &TestServer, first: &str) -> Vec<Vec<Value>> {
    let mut path = first.to_string();
    let mut pages = Vec::new();
    loop {
        let (st, body) = s.call(Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
        let nodes = body["nodes"].as_array().unwrap().clone();
        let Some(next) = body.get("next") else {
            pages.push(nodes);
            return pages;
        };
        let next = url::Url::parse(next.as_str().unwrap()).expect("next is a full URL");
        assert_eq!(&next[..url::Position::BeforePath], s.api, "{next}");
        assert_eq!(next.path(), "/v1/nodes");
        let query: std::collections::HashMap<String, String> =
            next.query_pairs().into_owned().collect();
        assert_eq!(
            Some(&query["marker"]),
            nodes.last().unwrap()["uuid"]
                .as_str()
                .map(str::to_string)
                .as_ref(),
            "{next}"
        );
        assert!(query.contains_key("limit"), "{next}");
        path = format!("/v1/nodes?{}", next.query().unwrap());
        pages.push(nodes);
        assert!(pages.len() < 100, "no end to the pages");
    }
}

/// The value a listing is sorted by, as the API shows it (RFC 3339 times of one width sort
/// as text; a node without a name sorts as the empty name).
fn sort_value(node: &Value, key: &str) -> String {
    node[key].as_str().unwrap_or_default().to_string()
}

/// Regression: `GET /v1/nodes` answered every node in one response, however many there
/// were. It pages now as Ironic's API does (`limit`, `marker`, `sort_key`, `sort_dir`, a
/// `next` link), with keyset conditions in SQL.
async fn regression_node_list_is_unpaged(db: Db) {
    use ironboot::clock::Clock;
    use ironboot::node::Target;
    const TOTAL: usize = 2_537;
    let s = TestServer::start(db, "").await;
    let start = s.clock.now_ms();
    // Names that byte order and a natural-language collation order differently, and
    // nodes without a name.
    let prefixes = ["a", "A", "a-", "a.", "a_", "a~", "Z", "z", "0", "B-x", "b"];
    let mut uuids = Vec::with_capacity(TOTAL);
    for (batch, first) in (0..TOTAL).step_by(50).enumerate() {
        // batches share a creation time: ties are broken by uuid
        s.clock.set_ms(start + 3 * batch as i64);
        let mut tasks = tokio::task::JoinSet::new();
        for i in first..TOTAL.min(first + 50) {
            let service = s.service.clone();
            let name = (i % 3 != 0).then(|| format!("{}{i}", prefixes[i % prefixes.len()]));
            let body = json!({
                "name": name,
                "macs": [format!("52:54:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)],
            });
            tasks.spawn(async move { service.create_node(&body).await.unwrap().uuid });
        }
        uuids.extend(tasks.join_all().await);
    }
    // updates move updated_at; some nodes boot locally, for a filter
    let mut locals = 0;
    for (batch, chunk) in uuids.chunks(40).enumerate() {
        s.clock.set_ms(start + 100_000 + 7 * batch as i64);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, uuid) in chunk.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
            let (service, uuid) = (s.service.clone(), uuid.to_string());
            let local = i == 0;
            locals += usize::from(local);
            tasks.spawn(async move {
                if local {
                    service.set_boot(&uuid, Target::Local).await.unwrap();
                } else {
                    service
                        .update_node(&uuid, &json!({"driver_info": {"site": "r1"}}))
                        .await
                        .unwrap();
                }
            });
        }
        tasks.join_all().await;
    }
    let all: std::collections::HashSet<String> = uuids.iter().map(|u| u.to_string()).collect();
    assert_eq!(all.len(), TOTAL);

    for key in ["created_at", "updated_at", "uuid", "name"] {
        for dir in ["asc", "desc"] {
            let pages = all_pages(&s, &format!("/v1/nodes?sort_key={key}&sort_dir={dir}")).await;
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            assert_eq!(sizes, [1000, 1000, TOTAL - 2000], "{key} {dir}");
            let nodes: Vec<&Value> = pages.iter().flatten().collect();
            let seen: std::collections::HashSet<String> = nodes
                .iter()
                .map(|n| n["uuid"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(seen, all, "{key} {dir}: every node exactly once");
            for pair in nodes.windows(2) {
                let a = (sort_value(pair[0], key), sort_value(pair[0], "uuid"));
                let b = (sort_value(pair[1], key), sort_value(pair[1], "uuid"));
                match dir {
                    "asc" => assert!(a < b, "{key} {dir}: {a:?} then {b:?}"),
                    _ => assert!(a > b, "{key} {dir}: {a:?} then {b:?}"),
                }
            }
        }
    }
    // the defaults: created_at, ascending, pages of [api] max_limit
    let pages = all_pages(&s, "/v1/nodes").await;
    let by_default: Vec<&Value> = pages.iter().flatten().collect();
    let explicit = all_pages(&s, "/v1/nodes?sort_key=created_at&sort_dir=asc&limit=1000").await;
    assert_eq!(by_default, explicit.iter().flatten().collect::<Vec<_>>());
    assert_eq!(pages.len(), 3);

    // filters keep working across pages, and the next links keep them
    let (_, first) = s
        .call(
            Method::GET,
            "/v1/nodes?target=local&sort_key=name&sort_dir=desc&limit=7",
            None,
        )
        .await;
    let next = first["next"].as_str().unwrap();
    assert!(
        next.contains("target=local")
            && next.contains("sort_key=name")
            && next.contains("sort_dir=desc")
            && next.contains("limit=7"),
        "{next}"
    );
    let pages = all_pages(
        &s,
        "/v1/nodes?target=local&sort_key=name&sort_dir=desc&limit=7",
    )
    .await;
    assert_eq!(pages.len(), locals.div_ceil(7));
    let local: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(local.len(), locals);
    assert!(local.iter().all(|n| n["target"] == "local"));
    // a page that ends exactly at the last node has no next
    let (_, exact) = s
        .call(
            Method::GET,
            &format!("/v1/nodes?target=local&limit={locals}"),
            None,
        )
        .await;
    assert_eq!(exact["nodes"].as_array().unwrap().len(), locals);
    assert_eq!(exact.get("next"), None, "{exact}");

    // bad paging parameters
    for (query, field) in [
        (format!("marker={}", uuid::Uuid::new_v4()), "marker"),
        ("marker=not-a-node".to_string(), "marker"),
        ("limit=0".to_string(), "limit"),
        ("limit=1001".to_string(), "limit"),
        ("limit=-1".to_string(), "limit"),
        ("limit=ten".to_string(), "limit"),
        ("sort_key=state".to_string(), "sort_key"),
        ("sort_dir=up".to_string(), "sort_dir"),
    ] {
        let r = s
            .call(Method::GET, &format!("/v1/nodes?{query}"), None)
            .await;
        let m = assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query", Some(field));
        assert!(m.starts_with(&format!("{field}: ")), "{query}: {m}");
    }

    // `ironboot node list` follows the pages, for tables and JSON
    let api = s.api.clone();
    let cli = move |args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::support::ironboot_bin());
        cmd.env_remove("IRONBOOT_CONFIG")
            .env_remove("IRONBOOT_TOKEN_FILE")
            .args(["node", "--url", &api])
            .args(args);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (json_out, table, local_table) = tokio::task::spawn_blocking(move || {
        (
            cli(&["list", "--json"]),
            cli(&["list"]),
            cli(&["list", "--target", "local"]),
        )
    })
    .await
    .unwrap();
    let listed: Value = serde_json::from_str(&json_out).unwrap();
    let listed: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = by_default
        .iter()
        .map(|n| n["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(table.lines().count(), TOTAL + 1);
    assert!(table.starts_with("UUID"));
    assert_eq!(local_table.lines().count(), locals + 1);
    s.stop().await;
}
