//! The store under concurrency, on SQLite and PostgreSQL.

use ironboot::config::DatabaseUrl;
use ironboot::config::Secret;
use ironboot::node::{BootMode, DriverInfo, InstanceInfo, Mac};
use ironboot::store::{NewNode, Store, StoreError};

use crate::support::required_env;
use crate::support::server::{drop_postgres_db, fresh_postgres_db, random_mac};

fn clock() -> std::sync::Arc<dyn ironboot::clock::Clock> {
    std::sync::Arc::new(ironboot::clock::SystemClock)
}

/// A fresh PostgreSQL database, dropped when this is dropped: at the end of the test, and
/// also when the test panics.
pub struct PgDb {
    pub url: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        PgDb {
            url: fresh_postgres_db().await,
        }
    }

    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs on the test's runtime, which cannot block on a future; a thread with a
        // runtime of its own can.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_postgres_db(&url))
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("cannot drop the test database {}", self.url);
        }
    }
}

/// Whether a database of that name exists on the test server.
pub async fn postgres_db_exists(name: &str) -> bool {
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&required_env("IRONBOOT_TEST_PG_URL"))
            .await
            .unwrap();
    sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .is_some()
}

/// What a store under test leaves behind, removed when this is dropped: the SQLite
/// directory or the PostgreSQL database.
struct Cleanup {
    dir: Option<tempfile::TempDir>,
    pg: Option<PgDb>,
}

async fn open(postgres: bool) -> (Store, Cleanup) {
    if postgres {
        let pg = PgDb::new().await;
        (
            Store::open(
                &DatabaseUrl::Postgres(Secret::new(pg.url.clone())),
                16,
                clock(),
            )
            .await
            .unwrap(),
            Cleanup {
                dir: None,
                pg: Some(pg),
            },
        )
    } else {
        let dir = tempfile::tempdir().unwrap();
        (
            Store::open(
                &DatabaseUrl::Sqlite(dir.path().join("db.sqlite")),
                16,
                clock(),
            )
            .await
            .unwrap(),
            Cleanup {
                dir: Some(dir),
                pg: None,
            },
        )
    }
}

fn new_node(mac: &str) -> NewNode {
    NewNode {
        name: None,
        macs: vec![Mac::parse(mac).unwrap()],
        boot_mode: BootMode::Bios,
        driver_info: DriverInfo::default(),
        instance_info: InstanceInfo::default(),
    }
}

/// Regression: concurrent writes on SQLite failed at once with "database is locked"
/// (SQLITE_BUSY and SQLITE_BUSY_SNAPSHOT), because pooled connections raced to switch the
/// journal mode and write transactions began as readers. Found by seeding 10,000 nodes for
/// the boot-path benchmark.
#[tokio::test]
async fn regression_sqlite_concurrent_writes_database_is_locked() {
    for postgres in [false, true] {
        let (store, _dir) = open(postgres).await;
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut node = store.create_node(new_node(&random_mac())).await?;
                    node.name = Some(format!("n-{}", node.uuid.simple()));
                    store.update_node(&node).await
                })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("postgres={postgres}: {e}"));
        }
        assert_eq!(
            store.list_nodes(&Default::default()).await.unwrap().len(),
            200
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_stale_version_is_a_conflict_not_a_lost_update() {
    for postgres in [false, true] {
        let (store, _dir) = open(postgres).await;
        let node = store.create_node(new_node(&random_mac())).await.unwrap();
        let mut first = node.clone();
        first.name = Some("first".into());
        store.update_node(&first).await.unwrap();
        let mut second = node.clone();
        second.name = Some("second".into());
        assert!(
            matches!(store.update_node(&second).await, Err(StoreError::Conflict(u)) if u == node.uuid)
        );
        assert_eq!(
            store
                .get_node(&node.uuid.to_string())
                .await
                .unwrap()
                .name
                .as_deref(),
            Some("first")
        );
        store.close().await;
    }
}

#[tokio::test]
async fn racing_creates_with_one_mac_leave_exactly_one_owner() {
    for postgres in [false, true] {
        let (store, _dir) = open(postgres).await;
        let mac = random_mac();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                let mac = mac.clone();
                tokio::spawn(async move { store.create_node(new_node(&mac)).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::DuplicateMac { .. }) => {}
                Err(other) => panic!("postgres={postgres}: {other}"),
            }
        }
        assert_eq!(ok, 1, "postgres={postgres}");
        assert_eq!(
            store.list_nodes(&Default::default()).await.unwrap().len(),
            1,
            "no half-written node"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_boot_index_follows_every_write() {
    use ironboot::node::{PreparedBoot, Target};
    for postgres in [false, true] {
        let (store, cleanup) = open(postgres).await;
        let (a, b) = (random_mac(), random_mac());
        let (ma, mb) = (Mac::parse(&a).unwrap(), Mac::parse(&b).unwrap());
        let mut node = store.create_node(new_node(&a)).await.unwrap();
        assert_eq!(
            store.boot_record(&ma).await.unwrap().unwrap().target,
            Target::None
        );

        node.target = Target::Local;
        node.prepared = Some(PreparedBoot {
            target: Target::Local,
            boot_mode: BootMode::Bios,
            kernel: None,
            ramdisk: None,
            kernel_args: String::new(),
            http_url: None,
        });
        let node = store.update_node(&node).await.unwrap();
        let record = store.boot_record(&ma).await.unwrap().unwrap();
        assert_eq!(
            (record.target, record.prepared.as_ref().map(|p| p.target)),
            (Target::Local, Some(Target::Local))
        );

        // a conflicting (stale) update changes nothing
        let mut stale = node.clone();
        stale.version -= 1;
        stale.target = Target::None;
        assert!(store.update_node(&stale).await.is_err());
        assert_eq!(
            store.boot_record(&ma).await.unwrap().unwrap().target,
            Target::Local
        );

        // the MAC moves: the old one is gone at once, the new one answers
        let mut moved = node.clone();
        moved.macs = vec![mb];
        store.update_node(&moved).await.unwrap();
        assert!(store.boot_record(&ma).await.unwrap().is_none());
        assert_eq!(
            store.boot_record(&mb).await.unwrap().unwrap().uuid,
            node.uuid
        );

        // what a new process sees is what was committed
        if let Some(dir) = &cleanup.dir {
            store.close().await;
            drop(store);
            let reopened = Store::open(
                &DatabaseUrl::Sqlite(dir.path().join("db.sqlite")),
                4,
                clock(),
            )
            .await
            .unwrap();
            assert_eq!(
                reopened.boot_record(&mb).await.unwrap().unwrap().target,
                Target::Local
            );
            reopened.delete_node(node.uuid).await.unwrap();
            assert!(reopened.boot_record(&mb).await.unwrap().is_none());
            reopened.close().await;
        } else {
            store.delete_node(node.uuid).await.unwrap();
            assert!(store.boot_record(&mb).await.unwrap().is_none());
            store.close().await;
        }
    }
}

#[tokio::test]
async fn a_second_process_cannot_share_an_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseUrl::Sqlite(dir.path().join("db.sqlite"));
    let first = Store::open(&db, 2, clock()).await.unwrap();
    let err = Store::open(&db, 2, clock()).await.unwrap_err().to_string();
    assert!(
        err.contains("is in use by another ironboot process")
            && err.contains("use PostgreSQL for several"),
        "{err}"
    );
    first.close().await;
    drop(first);
    Store::open(&db, 2, clock())
        .await
        .expect("free again once the first store is gone");
}

/// The files in a directory, sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Regression: the single-owner lock was a separate file, `<database>.lock`. Deleting it
/// while a server ran let a second `serve` run on the same database, each with its own
/// in-memory boot index, and a machine kept getting a deploy script after its target was
/// set to `none`.
#[tokio::test]
async fn regression_deleting_the_lock_file_lets_a_second_server_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseUrl::Sqlite(dir.path().join("db.sqlite"));
    let first = Store::open(&db, 2, clock()).await.unwrap();
    // every file next to the database but the database and SQLite's own goes
    for name in files_in(dir.path()) {
        if name != "db.sqlite" && !name.starts_with("db.sqlite-") {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
    let err = Store::open(&db, 2, clock()).await.unwrap_err().to_string();
    assert!(
        err.contains("is in use by another ironboot process")
            && err.contains("use PostgreSQL for several"),
        "{err}"
    );
    // the lock is the database file's own: there is no other file to delete
    for name in files_in(dir.path()) {
        assert!(
            ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"].contains(&name.as_str()),
            "{name}"
        );
    }
    // the owner carries on
    let node = first.create_node(new_node(&random_mac())).await.unwrap();
    let mac = node.macs[0];
    assert_eq!(
        first.boot_record(&mac).await.unwrap().unwrap().uuid,
        node.uuid
    );
    first.close().await;
}

/// Regression: `Store::open` switched SQLite to WAL and ran the migrations before it took
/// the single-owner lock, so a second `serve` changed a live database before it learned
/// that it was not the owner.
#[tokio::test]
async fn regression_a_second_server_migrates_a_live_database_before_learning_it_is_not_the_owner() {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    // a database in rollback-journal mode without ironboot's tables
    let sqlite = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&sqlite).await.unwrap();
    sqlx::raw_sql("CREATE TABLE owner_data (x INTEGER); INSERT INTO owner_data VALUES (1);")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // its owner holds the lock: on the database file, and also on `<database>.lock`, where
    // an ironboot before this fix took it (so that this test shows the old order)
    let owner = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    owner.try_lock().unwrap();
    let old_lock = std::fs::File::create(dir.path().join("db.sqlite.lock")).unwrap();
    old_lock.try_lock().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let files = files_in(dir.path());

    let err = Store::open(&DatabaseUrl::Sqlite(path.clone()), 2, clock())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is in use by another ironboot process"),
        "{err}"
    );
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "the loser changed the database file"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(files_in(dir.path()), files, "no -wal or -shm file appeared");
    drop((owner, old_lock));
    let mut conn = SqliteConnection::connect_with(&sqlite).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "delete");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, ["owner_data"], "no migration ran");
    conn.close().await.unwrap();
}

/// Regression: the SQLite URL was percent-encoded by hand (`%`, `?`, `#` and spaces only),
/// so a state path with other characters the URL parser drops (a tab) opened, or failed to
/// open, some other file.
#[tokio::test]
async fn regression_sqlite_url_is_percent_encoded_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let state_name = "st ate 100%41%2F?x=1&mode=ro#frag\tab\there é";
    let state = dir.path().join(state_name);
    let path = state.join("db.sqlite");
    let db = DatabaseUrl::Sqlite(path.clone());
    let store = Store::open(&db, 2, clock()).await.unwrap();
    let node = store.create_node(new_node(&random_mac())).await.unwrap();
    store.close().await;
    drop(store);
    assert!(path.is_file(), "{}", path.display());
    assert_eq!(
        files_in(dir.path()),
        [state_name],
        "nothing was created elsewhere"
    );
    let reopened = Store::open(&db, 2, clock()).await.unwrap();
    let nodes = reopened.list_nodes(&Default::default()).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].uuid, node.uuid);
    reopened.close().await;
}

/// Regression: these tests made a PostgreSQL database each and never dropped it.
#[tokio::test]
async fn regression_store_tests_leave_postgres_databases_behind() {
    let (store, cleanup) = open(true).await;
    let name = cleanup.pg.as_ref().unwrap().name().to_string();
    assert!(postgres_db_exists(&name).await);
    store.create_node(new_node(&random_mac())).await.unwrap();
    store.close().await;
    drop((store, cleanup));
    assert!(!postgres_db_exists(&name).await, "{name} is still there");
}
