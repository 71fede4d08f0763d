//! Temp-URL keys read from the Swift account with `[swift]` credentials (Swift's v1 auth,
//! as the suite's tempauth Swift has it), and a key rotation against the real Swift that
//! never breaks a boot. Only these tests use the account AUTH_keyrot and change its keys.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::server::{Db, TestServer, assert_error, random_mac};
use crate::support::swift::{Account, proxy_url};
use crate::support::{required_env, unique, wait_for};

const USER: &str = "keyrot:rotator";
const PASSWORD: &str = "rotating";
const KEY1: &str = "X-Account-Meta-Temp-URL-Key";
const KEY2: &str = "X-Account-Meta-Temp-URL-Key-2";

fn config(password: &str, extra: &str) -> String {
    format!(
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = {}\n\
         [swift]\nauth_type = v1password\nauth_url = {}\nusername = {USER}\npassword = {password}\n{extra}",
        proxy_url(),
        required_env("SWIFT_AIO_AUTH_URL"),
    )
}

/// The kernel and initrd URLs of a script.
fn image_urls(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http"))
                .map(str::to_string)
        })
        .collect()
}

async fn status_of(s: &TestServer, url: &str) -> StatusCode {
    s.http.get(url).send().await.unwrap().status()
}

/// Every URL answers `expected`.
async fn assert_all(s: &TestServer, urls: &[String], expected: StatusCode, when: &str) {
    for url in urls {
        assert_eq!(status_of(s, url).await, expected, "{when}: {url}");
    }
}

#[tokio::test]
async fn the_key_and_account_are_read_from_swift_and_a_rotation_never_breaks_a_boot() {
    let account = Account::login(USER, PASSWORD).await;
    let (key_a, key_b, key_c) = (unique("key-a"), unique("key-b"), unique("key-c"));
    account.post_account(&[(KEY1, &key_a), (KEY2, "")]).await;
    let container = unique("keyrot");
    account.put_container(&container, &[]).await;
    account
        .put_object(&container, "vmlinuz", b"kernel".to_vec())
        .await;
    account
        .put_object(&container, "initrd", b"initrd".to_vec())
        .await;

    let s = TestServer::start(Db::Sqlite, &config(PASSWORD, "")).await;
    // the conductor's task reads the key at start, without being asked
    let keys = s.service.boot().swift_keys().unwrap().clone();
    wait_for("the key read at start", || {
        let ok = keys.current().is_ok();
        async move { ok }
    })
    .await;
    let state = keys.current().unwrap();
    assert_eq!(state.account, "AUTH_keyrot", "the storage URL's account");
    assert_eq!(state.slot.as_str(), "Temp-URL-Key");

    let mac = random_mac();
    let (st, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac], "driver_info": {
                "deploy_kernel": format!("swift://{container}/vmlinuz"),
                "deploy_ramdisk": format!("swift://{container}/initrd")}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let (st, ready) = s.set_target(&uuid, "deploy").await;
    assert_eq!(
        st,
        StatusCode::ACCEPTED,
        "prepare HEADs through key A: {ready}"
    );
    let script_path = format!("/pxelinux.cfg/{}", mac.replace(':', "-"));
    let script = || async { s.boot_get(&script_path).await.1 };
    let mirror = s.http_root().join(&uuid).join("config");

    let signed_a = image_urls(&script().await);
    assert_eq!(signed_a.len(), 2);
    assert!(
        signed_a[0].contains("/v1/AUTH_keyrot/"),
        "the account read from Swift: {}",
        signed_a[0]
    );
    assert_all(&s, &signed_a, StatusCode::OK, "signed with key A").await;

    // 1. the operator sets key 2: ironboot signs with it from the next read on, and the
    //    static mirror is rewritten with it at once
    account.post_account(&[(KEY2, &key_b)]).await;
    let r = s.service.refresh_swift_key().await.unwrap().unwrap();
    assert!(r.changed);
    assert_eq!(r.slot.as_str(), "Temp-URL-Key-2");
    let signed_b = image_urls(&script().await);
    assert_all(&s, &signed_b, StatusCode::OK, "signed with key B").await;
    assert_all(&s, &signed_a, StatusCode::OK, "key A is still there").await;

    // 2. the operator replaces key 1: URLs signed with A stop working (Swift's rule), every
    //    URL ironboot handed out since the read keeps working, and so does the mirror
    account.post_account(&[(KEY1, &key_c)]).await;
    let r = s.service.refresh_swift_key().await.unwrap().unwrap();
    assert!(!r.changed, "still key 2");
    assert_all(&s, &signed_a, StatusCode::UNAUTHORIZED, "key A is gone").await;
    assert_all(&s, &signed_b, StatusCode::OK, "key B, handed out earlier").await;
    assert_all(&s, &image_urls(&script().await), StatusCode::OK, "now").await;
    let mirrored = image_urls(&std::fs::read_to_string(&mirror).unwrap());
    assert_eq!(mirrored.len(), 2);
    assert_all(&s, &mirrored, StatusCode::OK, "the static mirror").await;

    // 3. key 2 removed: back to key 1 (C)
    account.post_account(&[(KEY2, "")]).await;
    let r = s.service.refresh_swift_key().await.unwrap().unwrap();
    assert!(r.changed);
    assert_eq!(r.slot.as_str(), "Temp-URL-Key");
    assert_all(&s, &image_urls(&script().await), StatusCode::OK, "key C").await;

    // 4. no key at all: the read fails with a clear error and the last key stays in use
    account.post_account(&[(KEY1, "")]).await;
    let e = s.service.refresh_swift_key().await.unwrap_err();
    assert_eq!(e.code().as_str(), "swift_key_unavailable");
    assert!(e.to_string().contains("AUTH_keyrot"), "{e}");
    assert_eq!(keys.current().unwrap().slot.as_str(), "Temp-URL-Key");
    assert_eq!(image_urls(&script().await).len(), 2);
    // the read at start and the four above
    assert_eq!(
        s.metric("ironboot_upstream_requests_total{service=\"swift_auth\"}")
            .await,
        Some(5.0)
    );

    s.stop().await;
}

#[tokio::test]
async fn a_wrong_swift_password_is_reported_without_stopping_the_service() {
    let s = TestServer::start(Db::Sqlite, &config("not-the-password", "")).await;
    // the start-up read failed, and the task says so in /healthz
    wait_for("the failed start-up read in /healthz", || async {
        let (_, health) = s.call(Method::GET, "/healthz", None).await;
        health.to_string().contains("swift_key_refresh")
            && health.to_string().contains("refused the credentials")
    })
    .await;
    let e = s.service.refresh_swift_key().await.unwrap_err();
    assert_eq!(e.code().as_str(), "swift_auth_failed");
    let message = e.to_string();
    assert!(message.contains("keyrot:rotator"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");

    // a prepare fails clearly (no key, no account yet) and records why on the node
    let (_, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()], "driver_info": {
                "deploy_kernel": "swift://c/vmlinuz", "deploy_ramdisk": "swift://c/initrd"}})),
        )
        .await;
    let uuid = node["uuid"].as_str().unwrap();
    let got = s.set_target(uuid, "deploy").await;
    let message = assert_error(
        &got,
        StatusCode::SERVICE_UNAVAILABLE,
        "swift_key_unavailable",
        Some("driver_info.deploy_kernel"),
    );
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    let (_, shown) = s
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no Swift temp-URL key is known yet")),
        "{shown}"
    );
    // the API's other work goes on
    let (st, _) = s.call(Method::GET, "/v1/nodes", None).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}

/// `[swift] auth_type = password`: a Keystone token for the `service` project, HEAD of its
/// account `AUTH_<project id>` at the catalog's object-store endpoint (the suite's Swift
/// proxy that takes Keystone tokens), the account's key, and TempURLs Swift accepts.
#[tokio::test]
async fn the_key_is_read_through_keystone_and_the_catalogs_object_store() {
    use crate::support::glance::{User, keystone_url, token};
    let swift = required_env("SWIFT_AIO_KEYSTONE_PROXY_URL");
    let user = User::ironboot();
    let t = token(&user).await;
    let account = format!("AUTH_{}", t.project_id);
    let http = reqwest::Client::new();
    let send = |method: Method, path: String, headers: Vec<(&'static str, String)>| {
        let mut req = http
            .request(method, format!("{swift}/v1/{account}{path}"))
            .header("X-Auth-Token", &t.id);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let st = req.send().await.unwrap().status();
            assert!(st.is_success(), "{st}");
        }
    };
    let key1 = unique("ks-key1");
    send(
        Method::POST,
        String::new(),
        vec![(KEY1, key1.clone()), (KEY2, String::new())],
    )
    .await;
    let container = unique("ks-keys");
    send(Method::PUT, format!("/{container}"), vec![]).await;
    for name in ["vmlinuz", "initrd"] {
        let st = http
            .put(format!("{swift}/v1/{account}/{container}/{name}"))
            .header("X-Auth-Token", &t.id)
            .body(format!("{name} bytes"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(st, StatusCode::CREATED);
    }

    // the bare Keystone URL (version discovery), no account, no key
    let conf = format!(
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = {swift}\n\
         [swift]\nauth_type = password\nauth_url = {}\nusername = {}\npassword = {}\n\
         project_name = {}\n",
        keystone_url(),
        user.name,
        user.password,
        user.project
    );
    let s = TestServer::start(Db::Sqlite, &conf).await;
    let keys = s.service.boot().swift_keys().unwrap().clone();
    wait_for("the key read at start", || {
        let ok = keys.current().is_ok();
        async move { ok }
    })
    .await;
    assert_eq!(keys.current().unwrap().account, account);
    assert_eq!(keys.current().unwrap().slot.as_str(), "Temp-URL-Key");

    let mac = random_mac();
    let (_, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [mac], "driver_info": {
                "deploy_kernel": format!("swift://{container}/vmlinuz"),
                "deploy_ramdisk": format!("swift://{container}/initrd")}})),
        )
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let (st, ready) = s.set_target(&uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ready}");
    let path = format!("/pxelinux.cfg/{}", mac.replace(':', "-"));
    let urls = image_urls(&s.boot_get(&path).await.1);
    assert_eq!(urls.len(), 2);
    assert!(
        urls[0].starts_with(&format!("{swift}/v1/{account}/")),
        "{}",
        urls[0]
    );
    let body = s.http.get(&urls[0]).send().await.unwrap();
    assert_eq!(body.status(), StatusCode::OK);
    assert_eq!(body.text().await.unwrap(), "vmlinuz bytes");

    // key 2 appears: signed with it after the next read
    let key2 = unique("ks-key2");
    send(Method::POST, String::new(), vec![(KEY2, key2)]).await;
    let r = s.service.refresh_swift_key().await.unwrap().unwrap();
    assert!(r.changed && r.slot.as_str() == "Temp-URL-Key-2", "{r:?}");
    let after = image_urls(&s.boot_get(&path).await.1);
    assert_all(&s, &after, StatusCode::OK, "signed with key 2").await;
    send(Method::POST, String::new(), vec![(KEY1, unique("other"))]).await;
    assert_all(&s, &after, StatusCode::OK, "key 1 replaced").await;
    s.stop().await;
}
