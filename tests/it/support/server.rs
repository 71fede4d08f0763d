//! An in-process `ironboot serve` for tests: listeners on 127.0.0.1:0, a private state
//! directory, and a private database (a fresh SQLite file, or a fresh PostgreSQL database on
//! the server `scripts/test.sh` starts).

use std::sync::Arc;

use ironboot::clock::ManualClock;
use ironboot::server::App;
use ironboot::service::Service;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::required_env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub api: String,
    pub boot: String,
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub service: Arc<Service>,
    /// The service's clock; tests move it instead of waiting.
    pub clock: Arc<ManualClock>,
    pub http: Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    stop_tasks: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The PostgreSQL database to drop at stop.
    pg_db: Option<String>,
}

/// Drops a database made by [`fresh_postgres_db`].
pub async fn drop_postgres_db(url: &str) {
    let base = required_env("IRONBOOT_TEST_PG_URL");
    let name = url.rsplit('/').next().unwrap();
    assert!(name.starts_with("it_"), "only test databases are dropped");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect to IRONBOOT_TEST_PG_URL");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
    )
    .await
    .unwrap();
}

/// A new, empty PostgreSQL database on the test server; returns its URL.
pub async fn fresh_postgres_db() -> String {
    let base = required_env("IRONBOOT_TEST_PG_URL");
    let name = format!("it_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect to IRONBOOT_TEST_PG_URL");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

impl TestServer {
    /// Starts a server with `extra` appended to a config whose state lives in a temp dir.
    pub async fn start(db: Db, extra: &str) -> TestServer {
        let pg_db = match db {
            Db::Postgres => Some(fresh_postgres_db().await),
            Db::Sqlite => None,
        };
        Self::start_with(pg_db, true, extra).await
    }

    /// Starts a server on the PostgreSQL database `url`, which another server may share
    /// (another conductor); the caller drops the database.
    pub async fn start_on(url: &str, extra: &str) -> TestServer {
        Self::start_with(Some(url.to_string()), false, extra).await
    }

    async fn start_with(pg: Option<String>, owns_db: bool, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("[DEFAULT]\nstate_path = {}\n", dir.path().display());
        let mut pg_db = None;
        if let Some(url) = pg {
            text.push_str(&format!("[database]\nconnection = {url}\n"));
            if owns_db {
                pg_db = Some(url);
            }
        }
        // Tests of the API and of swift mode hand nodes http(s) URLs as they are; the tests
        // of cache mode say `http_passthrough = false`.
        if !extra.contains("http_passthrough") {
            text.push_str("[pxe]\nhttp_passthrough = true\n");
        }
        text.push_str(extra);
        let loaded = ironboot::config::from_str(&text, None)
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let clock = Arc::new(ManualClock::starting_now());
        let service = ironboot::cli::serve::build_service(&loaded.settings, clock.clone())
            .await
            .unwrap_or_else(|e| panic!("build_service: {e}"));
        let app = ironboot::cli::serve::app(&loaded.settings, service.clone());
        let (stop_tasks, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = ironboot::conductor::spawn(service.clone(), stop_rx);
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let boot = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api_url, boot_url) = (
            format!("http://{}", api.local_addr().unwrap()),
            format!("http://{}", boot.local_addr().unwrap()),
        );
        let (tx, rx) = oneshot::channel();
        let listeners = ironboot::cli::serve::listener_settings(&loaded.settings, 4096);
        let handle = tokio::spawn(ironboot::server::run(
            api,
            boot,
            app.clone(),
            listeners,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            api: api_url,
            boot: boot_url,
            dir,
            app,
            service,
            clock,
            stop_tasks,
            tasks,
            pg_db,
            http: Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server and waits for it (graceful shutdown).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.handle.take().unwrap(),
        )
        .await
        .expect("the server stops within 10 s of its shutdown signal");
        result.unwrap().unwrap();
        let _ = self.stop_tasks.send(true);
        for t in std::mem::take(&mut self.tasks) {
            t.await.unwrap();
        }
        // as `serve` does on a clean stop
        let _ = self.service.unregister().await;
        self.service.close().await;
        if let Some(db) = self.pg_db.take() {
            drop_postgres_db(&db).await;
        }
    }

    pub fn http_root(&self) -> std::path::PathBuf {
        self.dir.path().join("httpboot")
    }

    /// An API request with an optional JSON body; returns status and parsed body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self
            .request(method, path, body.map(|b| b.to_string()), None)
            .await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    /// `PUT /v1/nodes/{node}/boot {"target": target}`.
    pub async fn set_target(&self, node: &str, target: &str) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/v1/nodes/{node}/boot"),
            Some(serde_json::json!({ "target": target })),
        )
        .await
    }

    /// `PATCH /v1/nodes/{node}` with a merge patch.
    pub async fn patch(&self, node: &str, patch: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, &format!("/v1/nodes/{node}"), Some(patch))
            .await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> Response {
        let mut req = self.http.request(method, format!("{}{path}", self.api));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// GET on the boot listener; returns status and text.
    pub async fn boot_get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.boot))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The value of a metric line, e.g. `ironboot_tempurls_minted_total`.
    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// Asserts an API error's status, code and (optionally) field, and returns its message.
#[track_caller]
pub fn assert_error(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    if let Some(f) = field {
        assert_eq!(got.1["error"]["field"], f, "{}", got.1);
    }
    got.1["error"]["message"].as_str().unwrap().to_string()
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> String {
    let b = uuid::Uuid::new_v4();
    let b = b.as_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}
