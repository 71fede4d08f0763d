//! Swift mode (`[ipxe] use_swift = true`) against a real Swift: prepare HEAD-checks the
//! objects on the internal endpoint, scripts carry TempURLs on the node-facing endpoint that
//! are signed per request and accepted by Swift, and every failure is reported.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::server::{Db, TestServer, assert_error, random_mac};
use crate::support::swift::{account_with_keys, proxy_url};
use crate::support::unique;

struct Images {
    container: String,
    key: String,
}

const KERNEL: &str = "kernels/vmlinuz 6.1 (test)+&.bin";
const INITRD: &str = "initrd.img";

async fn images() -> Images {
    let keys = account_with_keys().await;
    let container = unique("it-boot");
    keys.account.put_container(&container, &[]).await;
    keys.account
        .put_object(&container, KERNEL, b"kernel bytes".to_vec())
        .await;
    keys.account
        .put_object(&container, INITRD, b"initrd bytes".to_vec())
        .await;
    Images {
        container,
        key: keys.key1.clone(),
    }
}

/// The Swift port; nodes reach the host as 10.0.2.2 (QEMU's slirp), the conductor as
/// 127.0.0.1.
fn swift_port() -> u16 {
    proxy_url().rsplit(':').next().unwrap().parse().unwrap()
}

fn swift_config(key: &str, internal: &str, extra: &str) -> String {
    let account = "AUTH_test";
    format!(
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = http://10.0.2.2:{}\nswift_internal_endpoint_url = {internal}\n\
         swift_account = {account}\nswift_temp_url_key = {key}\n{extra}",
        swift_port()
    )
}

fn swift_node(img: &Images, mac: &str) -> Value {
    json!({
        "macs": [mac],
        "driver_info": {"deploy_kernel": format!("swift://{}/{KERNEL}", img.container), "deploy_ramdisk": format!("swift://{}/{INITRD}", img.container)},
        "instance_info": {"kernel": format!("swift://{}/{KERNEL}", img.container), "ramdisk": "http://10.0.2.2:8080/plain-http-initrd"},
    })
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

/// A node-facing URL fetched from this host: the signature covers only the path.
async fn fetch_as_node(http: &reqwest::Client, url: &str) -> (StatusCode, Vec<u8>) {
    let local = url.replace(&format!("http://10.0.2.2:{}", swift_port()), &proxy_url());
    let r = http.get(local).send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn swift_mode_prepares_and_serves_fresh_tempurls() {
    for db in [Db::Sqlite, Db::Postgres] {
        let img = images().await;
        let s = TestServer::start(db, &swift_config(&img.key, &proxy_url(), "")).await;
        let mac = random_mac();
        let (_, node) = s
            .call(Method::POST, "/v1/nodes", Some(swift_node(&img, &mac)))
            .await;
        let uuid = node["uuid"].as_str().unwrap().to_string();
        let (st, ready) = s.set_target(&uuid, "deploy").await;
        assert_eq!(st, StatusCode::ACCEPTED, "{ready}");
        assert_eq!(ready["state"], "ready");

        let path = format!("/pxelinux.cfg/{}", mac.replace(':', "-"));
        let (st, script) = s.boot_get(&path).await;
        assert_eq!(st, StatusCode::OK);
        let urls = image_urls(&script);
        assert_eq!(urls.len(), 2, "{script}");
        for url in &urls {
            assert!(
                url.starts_with(&format!(
                    "http://10.0.2.2:{}/v1/AUTH_test/{}/",
                    swift_port(),
                    img.container
                )),
                "node-facing endpoint: {url}"
            );
            assert!(
                url.contains("?temp_url_sig=") && url.contains("&temp_url_expires="),
                "{url}"
            );
        }
        assert!(
            urls[0].contains("/kernels/vmlinuz%206.1%20%28test%29%2B%26.bin?"),
            "encoded path: {}",
            urls[0]
        );
        assert_eq!(
            fetch_as_node(&s.http, &urls[0]).await,
            (StatusCode::OK, b"kernel bytes".to_vec())
        );
        assert_eq!(
            fetch_as_node(&s.http, &urls[1]).await,
            (StatusCode::OK, b"initrd bytes".to_vec())
        );

        // a later request gets newly signed URLs with a later expiry
        s.clock.advance_secs(2);
        let (_, again) = s.boot_get(&path).await;
        let later = image_urls(&again);
        let expires = |u: &str| {
            u.rsplit("temp_url_expires=")
                .next()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        assert!(
            expires(&later[0]) > expires(&urls[0]),
            "{} vs {}",
            later[0],
            urls[0]
        );
        use ironboot::clock::Clock;
        let now = s.clock.now();
        assert_eq!(
            expires(&later[0]),
            now + 1200,
            "valid for [glance] swift_temp_url_duration"
        );
        assert_eq!(s.metric("ironboot_tempurls_minted_total").await, Some(4.0));

        // instance: a Swift kernel and a plain http ramdisk
        s.set_target(&uuid, "instance").await;
        let (_, script) = s.boot_get(&path).await;
        let urls = image_urls(&script);
        assert!(urls[0].contains("temp_url_sig="));
        assert_eq!(urls[1], "http://10.0.2.2:8080/plain-http-initrd");
        assert_eq!(fetch_as_node(&s.http, &urls[0]).await.0, StatusCode::OK);

        // the key appears nowhere the API answers
        let (_, shown) = s
            .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await;
        assert!(!shown.to_string().contains(&img.key));
        assert!(!script.contains(&img.key));
        s.stop().await;
    }
}

#[tokio::test]
async fn swift_failures_are_reported_and_recorded() {
    let img = images().await;
    // A port with nothing behind it: bound but never listening, so it stays ours and
    // connections are refused (a port freed after binding could be reused by another test).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap().port();
    for (config, kernel, status, code, fragment) in [
        (
            swift_config(&img.key, &proxy_url(), ""),
            "does/not/exist",
            StatusCode::BAD_REQUEST,
            "image_not_found",
            "does not exist in Swift (404)",
        ),
        (
            swift_config(&img.key, &format!("http://127.0.0.1:{closed}"), ""),
            KERNEL,
            StatusCode::BAD_GATEWAY,
            "swift_unreachable",
            "Swift is unreachable",
        ),
        (
            swift_config("not-the-key", &proxy_url(), ""),
            KERNEL,
            StatusCode::BAD_GATEWAY,
            "swift_refused_tempurl",
            "refused the temporary URL",
        ),
    ] {
        let s = TestServer::start(Db::Sqlite, &config).await;
        let mac = random_mac();
        let mut body = swift_node(&img, &mac);
        body["driver_info"]["deploy_kernel"] = json!(format!("swift://{}/{kernel}", img.container));
        let (_, node) = s.call(Method::POST, "/v1/nodes", Some(body)).await;
        let uuid = node["uuid"].as_str().unwrap();
        let r = s.set_target(uuid, "deploy").await;
        let message = assert_error(&r, status, code, Some("driver_info.deploy_kernel"));
        assert!(message.contains(fragment), "{message}");
        assert!(
            !message.contains("temp_url_sig") && !message.contains("not-the-key"),
            "no signature or key in errors: {message}"
        );
        let (_, n) = s
            .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await;
        assert_eq!(n["state"], "failed");
        assert!(n["last_error"].as_str().unwrap().contains(fragment), "{n}");
        assert_eq!(n["target"], "none", "the failed target is not served");
        assert_eq!(
            s.boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            s.metric(&format!("ironboot_errors_total{{reason=\"{code}\"}}"))
                .await,
            Some(1.0)
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn digest_ip_range_and_key_file_options_reach_the_urls() {
    let img = images().await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{}\n", img.key)).unwrap();
    let config = swift_config(
        "",
        &proxy_url(),
        "swift_temp_url_digest = sha512\nswift_temp_url_ip_range = 127.0.0.0/8\n",
    )
    .replace(
        "swift_temp_url_key = \n",
        &format!("swift_temp_url_key_file = {}\n", key_file.path().display()),
    );
    let s = TestServer::start(Db::Sqlite, &config).await;
    let mac = random_mac();
    let (_, node) = s
        .call(Method::POST, "/v1/nodes", Some(swift_node(&img, &mac)))
        .await;
    let uuid = node["uuid"].as_str().unwrap();
    let (st, r) = s.set_target(uuid, "deploy").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let (_, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
        .await;
    for url in image_urls(&script) {
        assert!(
            url.contains("temp_url_sig=sha512:") && url.ends_with("&temp_url_ip_range=127.0.0.0/8"),
            "{url}"
        );
        assert_eq!(
            fetch_as_node(&s.http, &url).await.0,
            StatusCode::OK,
            "{url}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_static_mirror_carries_tempurls_and_is_refreshed() {
    let img = images().await;
    let s = TestServer::start(
        Db::Sqlite,
        &swift_config(&img.key, &proxy_url(), "swift_temp_url_duration = 60\n"),
    )
    .await;
    let mac = random_mac();
    let (_, node) = s
        .call(Method::POST, "/v1/nodes", Some(swift_node(&img, &mac)))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    s.set_target(&uuid, "deploy").await;
    let config = s.http_root().join(&uuid).join("config");
    let first = std::fs::read_to_string(&config).unwrap();
    let urls = image_urls(&first);
    assert_eq!(fetch_as_node(&s.http, &urls[0]).await.0, StatusCode::OK);
    assert_eq!(
        ironboot::conductor::mirror_refresh_interval(s.service.boot().url_lifetime()),
        std::time::Duration::from_secs(30)
    );
    s.clock.advance_secs(2);
    s.service.refresh_mirror().await.unwrap();
    let second = std::fs::read_to_string(&config).unwrap();
    assert_ne!(first, second, "rewritten with new URLs");
    assert_eq!(
        fetch_as_node(&s.http, &image_urls(&second)[1]).await.0,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn tempurl_redirect_signs_when_the_node_follows_and_keeps_signatures_out_of_scripts() {
    let img = images().await;
    let s = TestServer::start(
        Db::Sqlite,
        &swift_config(
            &img.key,
            &proxy_url(),
            "[ipxe]\ntempurl_redirect = true\n[deploy]\nhttp_url = http://10.0.2.2:8080\n",
        ),
    )
    .await;
    let mac = random_mac();
    let (_, node) = s
        .call(Method::POST, "/v1/nodes", Some(swift_node(&img, &mac)))
        .await;
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let (st, ready) = s.set_target(&uuid, "deploy").await;
    assert_eq!(
        (st, ready["state"].as_str()),
        (StatusCode::ACCEPTED, Some("ready"))
    );

    // the script and the static mirror name ironboot, with no signature in them
    let (_, script) = s
        .boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
        .await;
    let urls = image_urls(&script);
    assert_eq!(
        urls,
        vec![
            format!("http://10.0.2.2:8080/{uuid}/deploy_kernel"),
            format!("http://10.0.2.2:8080/{uuid}/deploy_ramdisk")
        ]
    );
    assert!(!script.contains("temp_url_sig"), "{script}");
    let mirrored = std::fs::read_to_string(s.http_root().join(&uuid).join("config")).unwrap();
    assert!(!mirrored.contains("temp_url_sig"), "{mirrored}");

    // following it: a 302 to a TempURL signed at that moment, which Swift accepts
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |at: i64| {
        let no_follow = no_follow.clone();
        let url = format!("{}/{uuid}/deploy_kernel", s.boot);
        async move {
            let r = no_follow.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FOUND, "at {at}");
            r.headers()["location"].to_str().unwrap().to_string()
        }
    };
    let first = location(0).await;
    assert!(first.contains("temp_url_sig="), "{first}");
    assert_eq!(
        fetch_as_node(&s.http, &first).await,
        (StatusCode::OK, b"kernel bytes".to_vec())
    );
    // an hour later the script is the same, and the redirect is signed anew
    s.clock.advance_secs(3600);
    let later = location(3600).await;
    let expires = |u: &str| {
        u.rsplit("temp_url_expires=")
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(expires(&later), expires(&first) + 3600);
    assert_eq!(
        image_urls(
            &s.boot_get(&format!("/pxelinux.cfg/{}", mac.replace(':', "-")))
                .await
                .1
        ),
        urls
    );
    // a label the node does not have is not redirected
    let r = no_follow
        .get(format!("{}/{uuid}/kernel", s.boot))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
