//! The service when its surroundings misbehave: the database file deleted under it, rows
//! that cannot be read, a database that refuses connections. Each test starts a server in
//! this process and checks what clients, `/healthz` and the log see.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ironboot::clock::ManualClock;
use ironboot::service::Service;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::PgDb;
use crate::support::server::{Db, TestServer, assert_error, random_mac};

/// Log lines written in this thread while the guard lives. The in-process server runs on the
/// test's current-thread runtime, so its request handling logs here too.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An in-process `ironboot serve` on a state directory that outlives it (a `TestServer`
/// always makes a new one), so a test can stop it, change the database and start again.
struct Server {
    api: String,
    boot: String,
    service: Arc<Service>,
    http: reqwest::Client,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(state: &Path, pg: Option<&PgDb>) -> Server {
        let mut text = format!("[DEFAULT]\nstate_path = {}\n", state.display());
        if let Some(pg) = pg {
            text.push_str(&format!("[database]\nconnection = {}\n", pg.url));
        }
        let loaded = ironboot::config::from_str(&text, None).unwrap();
        let service = ironboot::cli::serve::build_service(
            &loaded.settings,
            Arc::new(ManualClock::starting_now()),
        )
        .await
        .unwrap_or_else(|e| panic!("the service does not start: {e}"));
        let app = ironboot::cli::serve::app(&loaded.settings, service.clone());
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let boot = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api_url, boot_url) = (
            format!("http://{}", api.local_addr().unwrap()),
            format!("http://{}", boot.local_addr().unwrap()),
        );
        let (stop, rx) = oneshot::channel();
        let listeners = ironboot::cli::serve::listener_settings(&loaded.settings, 4096);
        let handle = tokio::spawn(ironboot::server::run(
            api,
            boot,
            app,
            listeners,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            api: api_url,
            boot: boot_url,
            service,
            http: reqwest::Client::new(),
            stop,
            handle,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.api));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn boot_status(&self, mac: &str) -> StatusCode {
        let url = format!("{}/pxelinux.cfg/{}", self.boot, mac.replace(':', "-"));
        self.http.get(url).send().await.unwrap().status()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
        self.service.close().await;
    }
}

/// Runs SQL on a stopped (or running) server's database, behind its back.
async fn raw_sql(state: &Path, pg: Option<&PgDb>, sql: &str) {
    use sqlx::Connection;
    match pg {
        Some(pg) => {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        None => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(state.join("ironboot.sqlite"));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// One column of one node, read behind the server's back.
async fn raw_text(state: &Path, pg: Option<&PgDb>, column: &str, uuid: &str) -> Option<String> {
    use sqlx::Connection;
    let sql = format!("SELECT {column} FROM nodes WHERE uuid = '{uuid}'");
    match pg {
        Some(pg) => {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        None => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(state.join("ironboot.sqlite"));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }
}

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

/// Regression: one node row with invalid JSON in `driver_info` (or an unknown target) made
/// the boot index load fail, so the whole service refused to start (SQLite); and
/// `GET /v1/nodes` failed as a whole (both).
async fn regression_one_corrupt_node_row_stops_the_whole_service(db: Db) {
    let (logs, _guard) = Logs::capture();
    let state = tempfile::tempdir().unwrap();
    let pg = match db {
        Db::Postgres => Some(PgDb::new().await),
        Db::Sqlite => None,
    };
    let s = Server::start(state.path(), pg.as_ref()).await;
    let mut macs = Vec::new();
    let mut uuids = Vec::new();
    for name in ["good-1", "bad-json", "good-2", "bad-target", "bad-mac"] {
        let mac = random_mac();
        let (st, node) = s
            .call(
                Method::POST,
                "/v1/nodes",
                Some(json!({"name": name, "macs": [mac]})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{node}");
        let uuid = node["uuid"].as_str().unwrap().to_string();
        let (st, n) = s
            .call(
                Method::PUT,
                &format!("/v1/nodes/{uuid}/boot"),
                Some(json!({"target": "local"})),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{n}");
        macs.push(mac);
        uuids.push(uuid);
    }
    s.stop().await;

    raw_sql(
        state.path(),
        pg.as_ref(),
        &format!(
            "UPDATE nodes SET driver_info = '{{\"deploy_kernel\": ' WHERE uuid = '{}';
             UPDATE nodes SET target = 'rescue' WHERE uuid = '{}';
             UPDATE node_macs SET mac = 'not-a-mac' WHERE node_uuid = '{}';",
            uuids[1], uuids[3], uuids[4]
        ),
    )
    .await;

    let s = Server::start(state.path(), pg.as_ref()).await;
    let (st, list) = s.call(Method::GET, "/v1/nodes", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let listed: Vec<&str> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap())
        .collect();
    // the test clock stands still: equal creation times list by uuid
    let mut good = vec![uuids[0].as_str(), uuids[2].as_str()];
    good.sort();
    assert_eq!(listed, good);
    // page by page, the corrupt rows are skipped too, and do not end the listing early
    let mut paged = Vec::new();
    let mut path = "/v1/nodes?limit=1".to_string();
    loop {
        let (st, page) = s.call(Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        for n in page["nodes"].as_array().unwrap() {
            paged.push(n["uuid"].as_str().unwrap().to_string());
        }
        let Some(next) = page.get("next") else { break };
        let next = url::Url::parse(next.as_str().unwrap()).unwrap();
        path = format!("{}?{}", next.path(), next.query().unwrap());
    }
    assert_eq!(paged, good);

    // the others are served
    assert_eq!(s.boot_status(&macs[0]).await, StatusCode::OK);
    assert_eq!(s.boot_status(&macs[2]).await, StatusCode::OK);
    let (st, _) = s
        .call(Method::GET, &format!("/v1/nodes/{}", uuids[2]), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = s
        .call(Method::GET, &format!("/v1/nodes/{}", uuids[1]), None)
        .await;
    assert_error(
        &r,
        StatusCode::INTERNAL_SERVER_ERROR,
        "corrupt_record",
        None,
    );

    // healthz stays 200 and names them
    let (st, health) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "{health}");
    let check = health["checks"]["database"].as_str().unwrap();
    assert!(
        check.starts_with("ok, but 3 stored node records are corrupt"),
        "{check}"
    );
    for bad in [&uuids[1], &uuids[3], &uuids[4]] {
        assert!(check.contains(bad.as_str()), "{check}");
    }
    let h = s.service.health(std::time::Duration::from_secs(2)).await;
    assert!(h.healthy);
    assert_eq!(h.corrupt_nodes, 3);

    // each is marked, and logged with its uuid and column
    for (bad, column) in [
        (&uuids[1], "driver_info"),
        (&uuids[3], "target"),
        (&uuids[4], "node_macs.mac"),
    ] {
        let last_error = raw_text(state.path(), pg.as_ref(), "last_error", bad)
            .await
            .unwrap_or_default();
        assert!(
            last_error.contains("stored record of this node is corrupt")
                && last_error.contains(&format!("({column}: ")),
            "{last_error}"
        );
        let logged = logs.text();
        assert!(
            logged.lines().any(|l| l.contains("ERROR")
                && l.contains("stored node record is corrupt")
                && l.contains(&format!("node={bad}"))
                && l.contains(&format!("column={column}"))),
            "{logged}"
        );
    }
    // a good node is not marked
    assert_eq!(
        raw_text(state.path(), pg.as_ref(), "last_error", &uuids[0]).await,
        None
    );
    // /healthz has the count as a field, and a corrupt node can be deleted by its UUID
    assert_eq!(health["checks"]["corrupt_nodes"], 3, "{health}");
    let (st, body) = s
        .call(Method::DELETE, &format!("/v1/nodes/{}", uuids[1]), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    s.stop().await;
}

mod regression_one_corrupt_node_row_stops_the_whole_service {
    use super::*;
    #[tokio::test]
    async fn sqlite() {
        super::regression_one_corrupt_node_row_stops_the_whole_service(Db::Sqlite).await
    }
    #[tokio::test]
    async fn postgres() {
        super::regression_one_corrupt_node_row_stops_the_whole_service(Db::Postgres).await
    }
}

/// Regression: a database error that became a 503 was logged without its cause. sqlx
/// retries a connection the server refuses ("too many connections", "starting up",
/// connection refused) until the pool times out, and reported only "pool timed out". Also
/// checks that an SQL error reaches the log line with the route.
async fn regression_database_errors_are_never_logged(db: Db) {
    let (logs, _guard) = Logs::capture();
    let state = tempfile::tempdir().unwrap();
    let pg = match db {
        Db::Postgres => Some(PgDb::new().await),
        Db::Sqlite => None,
    };
    let s = Server::start(state.path(), pg.as_ref()).await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let cause = match &pg {
        Some(pg) => {
            // The database now refuses every new connection, and the pool's are gone.
            raw_sql(
                state.path(),
                Some(pg),
                &format!(
                    "ALTER DATABASE {name} CONNECTION LIMIT 0;
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE datname = '{name}' AND pid <> pg_backend_pid();",
                    name = pg.name()
                ),
            )
            .await;
            "too many connections"
        }
        None => {
            raw_sql(
                state.path(),
                None,
                "ALTER TABLE node_macs RENAME TO node_macs_moved",
            )
            .await;
            "no such table: node_macs"
        }
    };
    let r = s
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()]})),
        )
        .await;
    let m = assert_error(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        None,
    );
    assert!(!m.contains(cause), "the cause is logged, not sent: {m}");
    let logged = logs.text();
    assert!(
        logged.lines().any(|l| l.contains("ERROR")
            && l.contains("route=\"/v1/nodes\"")
            && l.contains("code=database_unavailable")
            && l.contains(cause)),
        "{logged}"
    );
    if pg.is_some() {
        // /healthz says why, too (within its own 2 s it can only say there was no answer,
        // so ask the service with time for the pool to give up)
        let h = s.service.health(std::time::Duration::from_secs(30)).await;
        assert!(!h.healthy && h.database.contains(cause), "{}", h.database);
    }
    s.stop().await;
}

mod regression_database_errors_are_never_logged {
    use super::*;
    #[tokio::test]
    async fn sqlite() {
        super::regression_database_errors_are_never_logged(Db::Sqlite).await
    }
    #[tokio::test]
    async fn postgres() {
        super::regression_database_errors_are_never_logged(Db::Postgres).await
    }
}
