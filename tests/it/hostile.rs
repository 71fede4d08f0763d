//! The service when its surroundings misbehave: the database file deleted under it. Each
//! test starts a server in this process and checks what clients and `/healthz` see.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::server::{Db, TestServer, assert_error, random_mac};

/// Regression: deleting the SQLite file under a running server went unnoticed: creates
/// answered 201 and were gone at the next start, and `/healthz` said ok.
#[tokio::test]
async fn regression_a_deleted_database_goes_unnoticed() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let db = s.dir.path().join("ironboot.sqlite");
    let (st, node) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        s.call(Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );

    std::fs::remove_file(&db).unwrap();
    let (st, health) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "unhealthy");
    let check = health["checks"]["database"].as_str().unwrap();
    assert!(
        check.contains("was deleted") && check.contains(&db.display().to_string()),
        "{check}"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    let m = assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database_gone", None);
    assert!(m.contains("deleted or replaced"), "{m}");
    let r = s.patch(&uuid, json!({"name": "renamed"})).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database_gone", None);
    let r = s
        .call(Method::DELETE, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database_gone", None);

    // a new file at the path is not the database either
    std::fs::write(&db, b"").unwrap();
    let (st, health) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert!(
        health["checks"]["database"]
            .as_str()
            .unwrap()
            .contains("was replaced"),
        "{health}"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database_gone", None);
    assert_eq!(
        s.metric("ironboot_errors_total{reason=\"database_gone\"}")
            .await,
        Some(4.0)
    );
    s.stop().await;
}
