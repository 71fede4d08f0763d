//! What a hostile client or a careless operator found, one regression test each.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::server::{Db, TestServer, assert_error, random_mac};

/// Regression: `Authorization: bearer <token>` was refused; the scheme is case-insensitive
/// (RFC 9110 §11.1).
#[tokio::test]
async fn regression_bearer_scheme_is_case_sensitive() {
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
    for (header, ok) in [
        ("Bearer s3cret-token", true),
        ("bearer s3cret-token", true),
        ("BEARER s3cret-token", true),
        ("Bearer  s3cret-token", true),
        ("Basic s3cret-token", false),
        ("bearer s3cret-tokeN", false),
        ("bearer s3cret-token2", false),
        ("bearers3cret-token", false),
        ("s3cret-token", false),
    ] {
        let status = s
            .http
            .get(format!("{}/v1/nodes", s.api))
            .header("authorization", header)
            .send()
            .await
            .unwrap()
            .status();
        let want = if ok {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, want, "{header:?}");
    }
    s.stop().await;
}

/// Regression: `swift://images/../images/k` reached Swift as `/images/k` (HTTP clients
/// remove dot segments), so the signature did not match and the error blamed the
/// temp-URL key. Dot segments are refused before Swift is asked.
#[tokio::test]
async fn regression_swift_dot_segments_blame_the_temp_url_key() {
    let s = TestServer::start(
        Db::Sqlite,
        "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = http://127.0.0.1:9\n\
         swift_account = AUTH_test\nswift_temp_url_key = k\n",
    )
    .await;
    for reference in [
        "swift://images/../images/k",
        "swift://images/./k",
        "swift://images/a/..",
        "swift://images/a/./b",
    ] {
        let (_, node) = s
            .call(
                Method::POST,
                "/v1/nodes",
                Some(json!({"macs": [random_mac()], "driver_info": {
                    "deploy_kernel": reference, "deploy_ramdisk": "http://h/r"}})),
            )
            .await;
        let uuid = node["uuid"].as_str().unwrap();
        let r = s.set_target(uuid, "deploy").await;
        let m = assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_image_ref",
            Some("driver_info.deploy_kernel"),
        );
        assert!(
            m.contains(". or .. path segment") && !m.contains("key"),
            "{m}"
        );
    }
    s.stop().await;
}

/// Regression: a body over the limit got axum's plain-text 413; it is the JSON error
/// every other error is.
#[tokio::test]
async fn regression_413_is_plain_text() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let resp = s.request(Method::POST, "/v1/nodes", Some(big), None).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_size")
    );
    assert_eq!(
        s.metric("ironboot_errors_total{reason=\"body_too_large\"}")
            .await,
        Some(1.0)
    );
    s.stop().await;
}

/// Regression: 100 nodes with 1.9 MB of driver_info each made concurrent listings use
/// gigabytes; driver_info and instance_info are capped, and the error names the field.
#[tokio::test]
async fn regression_unbounded_driver_info() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let blob = "x".repeat(70 * 1024);
    for (field, body) in [
        (
            "driver_info",
            json!({"macs": [random_mac()], "driver_info": {"blob": blob}}),
        ),
        (
            "instance_info",
            json!({"macs": [random_mac()], "instance_info": {"blob": blob}}),
        ),
    ] {
        let r = s.call(Method::POST, "/v1/nodes", Some(body)).await;
        let m = assert_error(
            &r,
            StatusCode::PAYLOAD_TOO_LARGE,
            "document_too_large",
            Some(field),
        );
        assert!(m.contains("max_document_size"), "{m}");
    }
    // the same through PATCH
    let (_, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    let r = s
        .patch(
            node["uuid"].as_str().unwrap(),
            json!({"driver_info": {"blob": blob}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "document_too_large",
        Some("driver_info"),
    );
    s.stop().await;
}

/// An API request is bounded by `[api] request_timeout`: a prepare against a Swift that
/// accepts connections and never answers gets a 503 `request_timeout`, not a hang.
#[tokio::test]
async fn api_requests_are_bounded_by_request_timeout() {
    // accepts (the kernel's backlog) and never answers
    let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = TestServer::start(
        Db::Sqlite,
        &format!(
            "[api]\nrequest_timeout = 1\n[ipxe]\nuse_swift = true\n[glance]\n\
             swift_endpoint_url = http://{}\nswift_account = AUTH_test\nswift_temp_url_key = k\n",
            frozen.local_addr().unwrap()
        ),
    )
    .await;
    let (_, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()], "driver_info": {
                "deploy_kernel": "swift://images/k", "deploy_ramdisk": "swift://images/r"}})),
        )
        .await;
    let started = std::time::Instant::now();
    let r = s.set_target(node["uuid"].as_str().unwrap(), "deploy").await;
    let m = assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "request_timeout", None);
    assert!(m.contains("request_timeout"), "{m}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    s.stop().await;
}

/// Regression (found by the script fuzzer): axum's own rejections were plain text: a node
/// identifier that is not UTF-8, or a method a route lacks. Every API error is JSON.
#[tokio::test]
async fn regression_axum_rejections_are_plain_text() {
    let s = TestServer::start(Db::Sqlite, "").await;
    for (method, path, status, code) in [
        (
            Method::GET,
            "/v1/nodes/%FF/ipxe",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/nodes/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::DELETE,
            "/v1/nodes",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v2/nothing",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let r = s.call(method.clone(), path, None).await;
        assert_error(&r, status, code, None);
    }
    s.stop().await;
}
