//! Persistence of nodes in SQLite (embedded default) or PostgreSQL, through sqlx's `Any`
//! driver and one set of portable migrations (`migrations/`).
//!
//! Every change is one transaction. Updates are optimistic: a node carries a `version`, and
//! an update whose version no longer matches fails with [`StoreError::Conflict`] instead of
//! overwriting someone else's change. MACs live in their own table with a primary key, so a
//! MAC can belong to one node only, whatever the backend.
//!
//! With SQLite, one ironboot process owns the database: before anything touches the
//! database (no journal-mode switch, no migration, no pool), [`Store::open`] opens the
//! database file itself and takes an exclusive `flock` on it, held for the store's life. A
//! second process fails there, leaving the file as it was; deleting some other file cannot
//! release the lock, because there is no other file. (SQLite locks with POSIX `fcntl`
//! locks, which Linux keeps apart from `flock`.) Several conductors need PostgreSQL. The
//! file's identity (device and inode) is recorded at open: when the file is deleted or
//! replaced under a running store, [`Store::health`] says so and every write is refused
//! with [`StoreError::DatabaseGone`] instead of going into an unlinked file.
//!
//! One owner lets the store keep an in-memory index of committed boot records by MAC,
//! which the boot path reads instead of querying SQLite for every booting machine (sqlx
//! runs each SQLite connection on its own thread, and the round trip tripled the cost of a
//! boot request). Writes hold a mutex from `BEGIN IMMEDIATE` until the index reflects the
//! commit, so the index never lags or reorders committed state. With PostgreSQL every boot
//! request queries the database.
//!
//! A row that cannot be read as a node (invalid JSON, an unknown target, …) does not stop
//! the rest: at open it is left out of the index, logged, and its `last_error` says the
//! record is corrupt; listings skip it (and log it); [`Store::corrupt_nodes`] counts it for
//! `/healthz`. Reading that one node fails with [`StoreError::Corrupt`].
//!
//! Listings page the way Ironic's API does: `limit`, a `marker` (the uuid of the last node
//! of the previous page), `sort_key` and `sort_dir`, with keyset conditions in SQL (never
//! `OFFSET`), so a page costs the same wherever it is and concurrent writes neither repeat
//! nor skip the nodes that stay.
//!
//! This module holds no business rules: it stores what `boot` and the API decided.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
// A panic while a lock is held cannot leave the maps half-updated in a way that matters
// (each update replaces whole entries), so a poisoned lock is used as it is rather than
// failing every later boot request.
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, ConnectOptions, Row};
use uuid::Uuid;

use crate::clock::Clock;
use crate::code::ErrorCode;
use crate::config::DatabaseUrl;
use crate::node::{BootMode, BootRecord, DriverInfo, InstanceInfo, Mac, Node, State, Target};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a pool may wait for a connection before it gives up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the connection attempt that explains a pool timeout may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node {0} not found")]
    NotFound(String),
    #[error("MAC {mac} already belongs to node {owner}")]
    DuplicateMac { mac: Mac, owner: String },
    #[error("name {0:?} is already used by another node")]
    DuplicateName(String),
    #[error("node {0} was changed by another request; read it again and retry")]
    Conflict(Uuid),
    #[error("database error: {0}")]
    Database(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("cannot open the database: {0}")]
    Open(String),
    /// A stored row cannot be read as a node; `column` names what is wrong with it.
    #[error("stored node {uuid} is corrupt: {column}: {detail}")]
    Corrupt {
        uuid: String,
        column: String,
        detail: String,
    },
    /// The SQLite file was deleted or replaced while the store was open: writes would go
    /// into a file nobody will ever open again.
    #[error("{0}")]
    DatabaseGone(String),
    /// A listing's marker is not the uuid of a node.
    #[error(
        "marker: no node has the uuid {0:?}; pass the uuid of the last node of the previous page, or follow `next`"
    )]
    UnknownMarker(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound(_) => ErrorCode::NodeNotFound,
            StoreError::DuplicateMac { .. } => ErrorCode::DuplicateMac,
            StoreError::DuplicateName(_) => ErrorCode::DuplicateName,
            StoreError::Conflict(_) => ErrorCode::ConcurrentUpdate,
            StoreError::Database(_) | StoreError::Open(_) | StoreError::Migration(_) => {
                ErrorCode::DatabaseUnavailable
            }
            StoreError::Corrupt { .. } => ErrorCode::CorruptRecord,
            StoreError::DatabaseGone(_) => ErrorCode::DatabaseGone,
            StoreError::UnknownMarker(_) => ErrorCode::InvalidQuery,
        }
    }

    /// The database failed, not the request: the client gets a generic message and the
    /// cause is logged.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            StoreError::Database(_)
                | StoreError::Open(_)
                | StoreError::Migration(_)
                | StoreError::DatabaseGone(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The fields of a new node.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: Option<String>,
    pub macs: Vec<Mac>,
    pub boot_mode: BootMode,
    pub driver_info: DriverInfo,
    pub instance_info: InstanceInfo,
}

/// Filters for listing nodes; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub target: Option<Target>,
    pub state: Option<State>,
    pub mac: Option<Mac>,
    pub name: Option<String>,
    /// Only these nodes (at most 500).
    pub uuids: Option<Vec<Uuid>>,
}

/// A conductor as the database knows it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorRow {
    pub hostname: String,
    pub http_url: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// What a listing is ordered by (Ironic's `sort_key`). Ties are broken by uuid, in the
/// same direction. Text is compared byte by byte on both databases; a node without a name
/// sorts as the empty name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    CreatedAt,
    UpdatedAt,
    Uuid,
    Name,
}

impl SortKey {
    pub const ALL: &'static [SortKey] = &[
        SortKey::CreatedAt,
        SortKey::UpdatedAt,
        SortKey::Uuid,
        SortKey::Name,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
            SortKey::Uuid => "uuid",
            SortKey::Name => "name",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SortKey::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a sort key; use created_at (the default), updated_at, uuid or name")
            })
    }
}

/// Ironic's `sort_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDir {
    #[default]
    Asc,
    Desc,
}

impl SortDir {
    pub fn as_str(self) -> &'static str {
        match self {
            SortDir::Asc => "asc",
            SortDir::Desc => "desc",
        }
    }
}

impl FromStr for SortDir {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "asc" => Ok(SortDir::Asc),
            "desc" => Ok(SortDir::Desc),
            _ => Err(format!("{s:?} is not a sort direction; use asc or desc")),
        }
    }
}

/// Which part of a listing to read.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    /// At most this many rows; `None` reads every match.
    pub limit: Option<usize>,
    /// The uuid of the last node of the previous page: the page starts after it.
    pub marker: Option<String>,
    pub sort_key: SortKey,
    pub sort_dir: SortDir,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct NodePage {
    /// The readable nodes of the page, in order. Corrupt rows are skipped (and logged), so
    /// a page may hold fewer nodes than its limit and still have a next page.
    pub nodes: Vec<Node>,
    /// The limit the page was read with.
    pub limit: Option<usize>,
    /// When more rows follow: the marker of the next page (the uuid of this page's last
    /// row).
    pub next_marker: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The boot path's index of committed state (and, with SQLite, the locked file).
    index: Arc<BootIndex>,
    /// PostgreSQL: the URL [`Store::follow`] listens on (a secret: never printed).
    listen_url: Option<String>,
    /// Stored rows that cannot be read as nodes: uuid → what is wrong.
    corrupt: Arc<Mutex<BTreeMap<String, String>>>,
    /// The last explanation of a pool timeout, reused for a while so that an exhausted
    /// pool does not also get a connection attempt for every request that waited.
    timeout_cause: Arc<Mutex<Option<(std::time::Instant, String)>>>,
    /// Stamps created_at and updated_at.
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct IndexMaps {
    by_mac: HashMap<Mac, Arc<BootRecord>>,
    by_uuid: HashMap<Uuid, Indexed>,
    /// Counts changes to the maps; a resync keeps what changed after it began.
    seq: u64,
    /// Nodes removed, with the `seq` of the removal (kept until a resync that began later).
    removed: HashMap<Uuid, u64>,
}

struct Indexed {
    record: Arc<BootRecord>,
    macs: Vec<Mac>,
    version: i64,
    /// `IndexMaps::seq` when this entry was written.
    seq: u64,
}

impl IndexMaps {
    /// Puts a node read from the database, unless the index already has a later version.
    fn put(&mut self, node: &Node) {
        if self
            .by_uuid
            .get(&node.uuid)
            .is_some_and(|old| old.version > node.version)
        {
            return;
        }
        self.seq += 1;
        if let Some(old) = self.by_uuid.remove(&node.uuid) {
            for mac in &old.macs {
                self.by_mac.remove(mac);
            }
        }
        let record = Arc::new(BootRecord::of(node));
        for mac in &node.macs {
            self.by_mac.insert(*mac, record.clone());
        }
        self.by_uuid.insert(
            node.uuid,
            Indexed {
                record,
                macs: node.macs.clone(),
                version: node.version,
                seq: self.seq,
            },
        );
        self.removed.remove(&node.uuid);
    }

    fn remove(&mut self, uuid: Uuid) {
        self.seq += 1;
        if let Some(old) = self.by_uuid.remove(&uuid) {
            for mac in &old.macs {
                // another node may have taken the MAC since
                if self.by_mac.get(mac).is_some_and(|r| r.uuid == uuid) {
                    self.by_mac.remove(mac);
                }
            }
        }
        self.removed.insert(uuid, self.seq);
    }

    /// Brings the maps in line with `nodes`, every node read by a query that began when
    /// the maps were at `since`: entries put or removed after that are newer than the
    /// query and stay as they are.
    fn resync(&mut self, nodes: &[Node], since: u64) -> Vec<Uuid> {
        let mut changed = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(nodes.len());
        for node in nodes {
            seen.insert(node.uuid);
            if self.removed.get(&node.uuid).is_some_and(|s| *s > since)
                || self.by_uuid.get(&node.uuid).is_some_and(|e| e.seq > since)
            {
                continue;
            }
            let same = self
                .by_uuid
                .get(&node.uuid)
                .is_some_and(|e| e.version == node.version && e.macs == node.macs);
            if !same {
                self.put(node);
                changed.push(node.uuid);
            }
        }
        let gone: Vec<Uuid> = self
            .by_uuid
            .iter()
            .filter(|(u, e)| e.seq <= since && !seen.contains(*u))
            .map(|(u, _)| *u)
            .collect();
        for uuid in gone {
            self.remove(uuid);
            changed.push(uuid);
        }
        self.removed.retain(|_, s| *s > since);
        changed
    }
}

/// MAC → boot record of every committed node, which the boot path reads instead of the
/// database. With SQLite this process is the only writer, and the index is updated inside
/// the write's critical section. With PostgreSQL other conductors write too: their commits
/// reach the index through `LISTEN`/`NOTIFY` ([`Store::follow`]) and a periodic full resync.
struct BootIndex {
    maps: RwLock<IndexMaps>,
    /// SQLite: held from `BEGIN IMMEDIATE` until the index reflects the commit.
    write: tokio::sync::Mutex<()>,
    /// SQLite: the database file, locked as long as the store lives.
    file: Option<OwnedFile>,
    /// Woken by every change of the maps.
    changed: tokio::sync::Notify,
}

impl BootIndex {
    fn put(&self, node: &Node) {
        self.maps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .put(node);
        self.changed.notify_waiters();
    }

    fn remove(&self, uuid: Uuid) {
        self.maps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uuid);
        self.changed.notify_waiters();
    }

    fn get(&self, mac: &Mac) -> Option<Arc<BootRecord>> {
        self.maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_mac
            .get(mac)
            .cloned()
    }

    fn seq(&self) -> u64 {
        self.maps.read().unwrap_or_else(PoisonError::into_inner).seq
    }
}

/// The SQLite database file, open with an exclusive `flock` that makes this process its
/// only user, and its identity at open.
///
/// Closing any descriptor of a file drops every POSIX lock the process holds on it,
/// SQLite's included, so this descriptor lives exactly as long as the store, and nothing
/// else in the process opens the database file outside SQLite (the identity check is a
/// `stat` of the path, which opens nothing).
struct OwnedFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    _locked: std::fs::File,
}

impl OwnedFile {
    /// Opens (creating it empty when missing: an empty file is an empty SQLite database)
    /// and locks the database file.
    fn lock(path: &Path) -> Result<OwnedFile, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // SQLite's own default for files it creates.
            .mode(0o644)
            .open(path)
            .map_err(|e| StoreError::Open(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Open(format!(
                    "{} is in use by another ironboot process (it holds a lock on the file); \
                     SQLite serves one conductor, use PostgreSQL for several",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Open(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        let meta = file
            .metadata()
            .map_err(|e| StoreError::Open(format!("cannot stat {}: {e}", path.display())))?;
        Ok(OwnedFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            _locked: file,
        })
    }

    /// The path still names the file that was opened: one `stat`.
    fn check(&self) -> Result<(), StoreError> {
        let p = self.path.display();
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.ino) => Ok(()),
            Ok(_) => Err(StoreError::DatabaseGone(format!(
                "the database file {p} was replaced by another file while ironboot ran; \
                 writes are refused because nobody would read them: restart ironboot"
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::DatabaseGone(format!(
                    "the database file {p} was deleted while ironboot ran; writes are refused \
                     because they would be lost: restore the file (or accept an empty \
                     database) and restart ironboot"
                )))
            }
            Err(e) => Err(StoreError::DatabaseGone(format!(
                "the database file {p} cannot be checked: {e}"
            ))),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds → RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .expect("formatting a UTC time")
}

/// The `Any` driver's options for an SQLite file (an absolute path). The driver only takes
/// URLs, so the path is percent-encoded by the `url` crate as a file URL's path (every byte
/// that is not plainly safe, `%`, `?`, `#`, spaces and control characters included), and
/// the result is checked to name exactly that path when sqlx decodes it.
fn sqlite_options(absolute: &Path) -> Result<AnyConnectOptions, StoreError> {
    let open = |why: String| StoreError::Open(format!("{}: {why}", absolute.display()));
    if absolute.to_str().is_none() {
        return Err(open(
            "the path is not valid UTF-8, which SQLite through sqlx requires".into(),
        ));
    }
    let file_url = url::Url::from_file_path(absolute)
        .map_err(|()| open("the path cannot be written as a URL".into()))?;
    let url = url::Url::parse(&format!("sqlite://{}?mode=rwc", file_url.path()))
        .map_err(|e| open(format!("the path cannot be written as a URL: {e}")))?;
    let decoded = sqlx::sqlite::SqliteConnectOptions::from_url(&url)
        .map_err(|e| open(format!("the path cannot be written as a URL: {e}")))?;
    if decoded.get_filename() != absolute {
        return Err(open(format!(
            "the path cannot be written as a URL sqlx reads back (it reads {})",
            decoded.get_filename().display()
        )));
    }
    AnyConnectOptions::from_url(&url).map_err(|e| open(e.to_string()))
}

/// Error text without a password that a PostgreSQL URL might put in it.
fn redacted(e: &sqlx::Error) -> String {
    crate::config::validate::redact_url_password(&e.to_string())
}

/// What lies behind a pool timeout. sqlx retries a refused connection and a server that
/// says "too many connections" or "starting up" silently until the pool's deadline and then
/// reports only that it timed out; one direct connection attempt finds the cause.
async fn explain_pool_timeout(options: &AnyConnectOptions, max_connections: u32) -> String {
    let timed_out = format!(
        "pool timed out after {} s waiting for a connection",
        ACQUIRE_TIMEOUT.as_secs()
    );
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            format!(
                "{timed_out}: the database accepts new connections, so all {max_connections} \
                 of the pool's were busy ([database] max_pool_size)"
            )
        }
        Ok(Err(e)) => format!("{timed_out}; connecting fails with: {}", redacted(&e)),
        Err(_) => format!(
            "{timed_out}; a new connection did not succeed within {} s either",
            PROBE_TIMEOUT.as_secs()
        ),
    }
}

/// A value bound into a listing query.
enum Arg {
    Text(String),
    Int(i64),
}

/// What a listing query read: the nodes, the rows that could not be read, and the marker
/// of the next page.
struct Listed {
    nodes: Vec<Node>,
    bad: Vec<StoreError>,
    next_marker: Option<String>,
}

impl Store {
    /// Opens (creating it for SQLite) and migrates the database, then loads the boot index
    /// (SQLite) and finds the rows that cannot be read as nodes (both).
    ///
    /// With SQLite the database file is locked first; a database in use by another process
    /// is refused before anything touches it.
    pub async fn open(
        db: &DatabaseUrl,
        max_connections: u32,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (options, backend, owned) = match db {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Open(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let path = std::path::absolute(path)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
                let owned = OwnedFile::lock(&path)?;
                (sqlite_options(&path)?, Backend::Sqlite, Some(owned))
            }
            DatabaseUrl::Postgres(url) => (
                AnyConnectOptions::from_str(url.expose())
                    .map_err(|e| StoreError::Open(redacted(&e)))?,
                Backend::Postgres,
                None,
            ),
        };
        let failed = |e: sqlx::Error| StoreError::Open(redacted(&e));
        if backend == Backend::Sqlite {
            // WAL lets readers (the boot path) run while a write commits. Switching to it
            // takes an exclusive lock that the busy timeout cannot wait for, so it is done
            // once here, on a single connection, never by pooled connections racing.
            let mut conn = options.connect().await.map_err(failed)?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut conn)
                .await
                .map_err(failed)?;
            sqlx::Connection::close(conn).await.map_err(failed)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(StoreError::Open(
                    explain_pool_timeout(&options, max_connections).await,
                ));
            }
            Err(e) => return Err(failed(e)),
        };
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let store = Store {
            pool,
            backend,
            index: Arc::new(BootIndex {
                maps: RwLock::default(),
                write: tokio::sync::Mutex::new(()),
                file: owned,
                changed: tokio::sync::Notify::new(),
            }),
            listen_url: match db {
                DatabaseUrl::Postgres(url) => Some(url.expose().to_string()),
                DatabaseUrl::Sqlite(_) => None,
            },
            corrupt: Arc::default(),
            timeout_cause: Arc::default(),
            clock,
        };
        store.load().await?;
        Ok(store)
    }

    /// Reads every node once: fills the boot index (SQLite), and logs and marks each row
    /// that cannot be read, so that one bad row costs one node, not the service.
    async fn load(&self) -> Result<(), StoreError> {
        let listed = {
            let mut conn = self.conn().await?;
            self.select(&mut conn, &NodeFilter::default(), &Paging::default())
                .await?
        };
        for node in &listed.nodes {
            self.index.put(node);
        }
        self.note(&listed);
        for bad in &listed.bad {
            let StoreError::Corrupt {
                uuid,
                column,
                detail,
            } = bad
            else {
                continue;
            };
            let message = format!(
                "the stored record of this node is corrupt ({column}: {detail}); ironboot \
                 skips it: correct or delete the row in the database"
            );
            let marked = sqlx::query(
                "UPDATE nodes SET last_error = $1 WHERE uuid = $2 \
                 AND (last_error IS NULL OR last_error <> $1)",
            )
            .bind(message)
            .bind(uuid.clone())
            .execute(&self.pool)
            .await;
            if let Err(e) = marked {
                tracing::warn!(node = %uuid, "cannot set last_error of the corrupt node: {e}");
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection. When the pool times out, the error says why (see
    /// [`explain_pool_timeout`]), so the cause reaches the log.
    async fn conn(&self) -> Result<PoolConnection<Any>, StoreError> {
        match self.pool.acquire().await {
            Ok(conn) => Ok(conn),
            Err(sqlx::Error::PoolTimedOut) => {
                let recent = self
                    .timeout_cause
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .filter(|(at, _)| at.elapsed() < PROBE_TIMEOUT);
                let cause = match recent {
                    Some((_, cause)) => cause,
                    None => {
                        let cause = explain_pool_timeout(
                            &self.pool.connect_options(),
                            self.pool.options().get_max_connections(),
                        )
                        .await;
                        *self
                            .timeout_cause
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            Some((std::time::Instant::now(), cause.clone()));
                        cause
                    }
                };
                Err(StoreError::Database(cause))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later cannot
    /// wait for the lock in WAL mode and fails at once with SQLITE_BUSY_SNAPSHOT when another
    /// write committed in between.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Any>, StoreError> {
        let conn = self.conn().await?;
        let begin = match self.backend {
            Backend::Sqlite => Some(sqlx::SqlSafeStr::into_sql_str("BEGIN IMMEDIATE")),
            Backend::Postgres => None,
        };
        Ok(sqlx::Transaction::begin(conn, begin).await?)
    }

    /// SQLite: the database file is still the one this store locked (one `stat`).
    fn check_file(&self) -> Result<(), StoreError> {
        match &self.index.file {
            Some(file) => file.check(),
            None => Ok(()),
        }
    }

    /// Closes the pool (waits for connections in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates a node. Duplicate MACs and names are reported with the node that has them.
    pub async fn create_node(&self, new: NewNode) -> Result<Node, StoreError> {
        let uuid = Uuid::new_v4();
        let now = self.clock.now_ms();
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut tx = self.write_tx().await?;
        check_unique(&mut tx, uuid, new.name.as_deref(), &new.macs).await?;
        sqlx::query(
            "INSERT INTO nodes (uuid, name, boot_mode, driver_info, instance_info, target, state, last_error, \
             prepared, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8, $9, 1)",
        )
        .bind(uuid.to_string())
        .bind(new.name.clone())
        .bind(new.boot_mode.as_str())
        .bind(to_json(&new.driver_info))
        .bind(to_json(&new.instance_info))
        .bind(Target::None.as_str())
        .bind(State::Idle.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, new.name.as_deref()))?;
        insert_macs(&mut tx, uuid, &new.macs).await?;
        notify_node(&mut tx, self.backend, uuid).await?;
        tx.commit().await?;
        self.committed(uuid).await
    }

    /// A node by UUID or name.
    pub async fn get_node(&self, ident: &str) -> Result<Node, StoreError> {
        let mut conn = self.conn().await?;
        let row = match Uuid::try_parse(ident) {
            Ok(uuid) => {
                sqlx::query("SELECT * FROM nodes WHERE uuid = $1")
                    .bind(uuid.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
            }
            Err(_) => {
                sqlx::query("SELECT * FROM nodes WHERE name = $1")
                    .bind(ident.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        let row = row.ok_or_else(|| StoreError::NotFound(ident.to_string()))?;
        let node = match node_from_row(&row) {
            Ok(mut node) => {
                let macs =
                    sqlx::query("SELECT mac FROM node_macs WHERE node_uuid = $1 ORDER BY mac")
                        .bind(node.uuid.to_string())
                        .fetch_all(&mut *conn)
                        .await?;
                macs.iter()
                    .map(|r| parse_mac(&node.uuid.to_string(), r))
                    .collect::<Result<_, _>>()
                    .map(|macs| {
                        node.macs = macs;
                        node
                    })
            }
            Err(e) => Err(e),
        };
        match node {
            Ok(node) => {
                self.note_good(std::iter::once(&node));
                Ok(node)
            }
            Err(e @ StoreError::Corrupt { .. }) => {
                self.note_bad(&e);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Every readable node matching a filter, by creation time. Rows that cannot be read
    /// are skipped and logged.
    pub async fn list_nodes(&self, filter: &NodeFilter) -> Result<Vec<Node>, StoreError> {
        Ok(self
            .list_nodes_page(filter, &Paging::default())
            .await?
            .nodes)
    }

    /// One page of the readable nodes matching a filter. A marker that is no node's uuid
    /// is [`StoreError::UnknownMarker`]; rows that cannot be read are skipped and logged.
    pub async fn list_nodes_page(
        &self,
        filter: &NodeFilter,
        paging: &Paging,
    ) -> Result<NodePage, StoreError> {
        let listed = {
            let mut conn = self.conn().await?;
            self.select(&mut conn, filter, paging).await?
        };
        self.note(&listed);
        Ok(NodePage {
            nodes: listed.nodes,
            limit: paging.limit,
            next_marker: listed.next_marker,
        })
    }

    /// The SQL expression a sort key orders by, and the uuid tie-breaker (none when the key
    /// is the uuid). PostgreSQL compares text in the database's collation unless told
    /// otherwise; `COLLATE "C"` makes it compare bytes, as SQLite does.
    fn sort_exprs(&self, key: SortKey) -> (&'static str, Option<&'static str>) {
        let pg = self.backend == Backend::Postgres;
        let uuid = if pg { "uuid COLLATE \"C\"" } else { "uuid" };
        match key {
            SortKey::CreatedAt => ("created_at", Some(uuid)),
            SortKey::UpdatedAt => ("updated_at", Some(uuid)),
            SortKey::Uuid => (uuid, None),
            SortKey::Name if pg => ("COALESCE(name, '') COLLATE \"C\"", Some(uuid)),
            SortKey::Name => ("COALESCE(name, '')", Some(uuid)),
        }
    }

    /// The listing query: filters, the keyset condition after the marker, the order, and
    /// one row more than the limit to learn whether another page follows.
    async fn select(
        &self,
        conn: &mut sqlx::AnyConnection,
        filter: &NodeFilter,
        paging: &Paging,
    ) -> Result<Listed, StoreError> {
        let mut sql = String::from("SELECT * FROM nodes WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        fn arg(args: &mut Vec<Arg>, value: Arg) -> String {
            args.push(value);
            format!("${}", args.len())
        }
        if let Some(t) = filter.target {
            let p = arg(&mut args, Arg::Text(t.as_str().into()));
            sql.push_str(&format!(" AND target = {p}"));
        }
        if let Some(s) = filter.state {
            let p = arg(&mut args, Arg::Text(s.as_str().into()));
            sql.push_str(&format!(" AND state = {p}"));
        }
        if let Some(n) = &filter.name {
            let p = arg(&mut args, Arg::Text(n.clone()));
            sql.push_str(&format!(" AND name = {p}"));
        }
        if let Some(uuids) = &filter.uuids {
            let list: Vec<String> = uuids
                .iter()
                .map(|u| arg(&mut args, Arg::Text(u.to_string())))
                .collect();
            if list.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                sql.push_str(&format!(" AND uuid IN ({})", list.join(", ")));
            }
        }
        if let Some(m) = filter.mac {
            let p = arg(&mut args, Arg::Text(m.to_string()));
            sql.push_str(&format!(
                " AND uuid IN (SELECT node_uuid FROM node_macs WHERE mac = {p})"
            ));
        }
        let (key, tie) = self.sort_exprs(paging.sort_key);
        let (op, dir) = match paging.sort_dir {
            SortDir::Asc => (">", "ASC"),
            SortDir::Desc => ("<", "DESC"),
        };
        if let Some(marker) = &paging.marker {
            // The marker's own values, bound: the page continues after them even if the
            // marker node is deleted from now on.
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {key} AS k FROM nodes WHERE uuid = $1"
            )))
            .bind(marker.clone())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::UnknownMarker(marker.clone()))?;
            let value = match paging.sort_key {
                SortKey::CreatedAt | SortKey::UpdatedAt => Arg::Int(row.try_get("k")?),
                SortKey::Uuid | SortKey::Name => Arg::Text(row.try_get("k")?),
            };
            let v = arg(&mut args, value);
            match tie {
                Some(tie) => {
                    let u = arg(&mut args, Arg::Text(marker.clone()));
                    sql.push_str(&format!(" AND ({key}, {tie}) {op} ({v}, {u})"));
                }
                None => sql.push_str(&format!(" AND {key} {op} {v}")),
            }
        }
        sql.push_str(&format!(" ORDER BY {key} {dir}"));
        if let Some(tie) = tie {
            sql.push_str(&format!(", {tie} {dir}"));
        }
        if let Some(limit) = paging.limit {
            let more = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            let p = arg(&mut args, Arg::Int(more));
            sql.push_str(&format!(" LIMIT {p}"));
        }
        // Only static fragments and $n placeholders went into `sql`; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            query = match a {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        let mut rows = query.fetch_all(&mut *conn).await?;
        let next_marker = match paging.limit {
            Some(limit) if rows.len() > limit => {
                rows.truncate(limit);
                let last = rows.last().map(|r| r.try_get::<String, _>("uuid"));
                match last {
                    Some(Ok(uuid)) => Some(uuid),
                    Some(Err(e)) => return Err(corrupt("<unreadable>", "uuid", e)),
                    // A limit of 0 reads nothing and can never get further.
                    None => None,
                }
            }
            _ => None,
        };
        let mut nodes = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for row in &rows {
            match node_from_row(row) {
                Ok(node) => nodes.push(node),
                Err(e @ StoreError::Corrupt { .. }) => bad.push(e),
                Err(e) => return Err(e),
            }
        }
        let mut macs = self.macs_of(conn, filter, paging, &nodes).await?;
        nodes.retain_mut(|node| match macs.remove(&node.uuid.to_string()) {
            Some(Ok(m)) => {
                node.macs = m;
                true
            }
            Some(Err(e)) => {
                bad.push(e);
                false
            }
            None => true,
        });
        Ok(Listed {
            nodes,
            bad,
            next_marker,
        })
    }

    /// The MACs of listed nodes, by node uuid: all MACs in one query for a listing of
    /// everything, else those of the listed nodes. A MAC that does not parse makes its node
    /// corrupt.
    async fn macs_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        filter: &NodeFilter,
        paging: &Paging,
        nodes: &[Node],
    ) -> Result<HashMap<String, Result<Vec<Mac>, StoreError>>, StoreError> {
        let everything = paging.limit.is_none()
            && paging.marker.is_none()
            && filter.target.is_none()
            && filter.state.is_none()
            && filter.mac.is_none()
            && filter.name.is_none()
            && filter.uuids.is_none();
        let mut rows = Vec::new();
        if everything {
            rows = sqlx::query("SELECT node_uuid, mac FROM node_macs ORDER BY mac")
                .fetch_all(&mut *conn)
                .await?;
        } else {
            // Bounded by the parameter limits of both databases (SQLite: 32766).
            for chunk in nodes.chunks(500) {
                let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT node_uuid, mac FROM node_macs WHERE node_uuid IN ({}) ORDER BY mac",
                    list.join(", ")
                );
                // Only $n placeholders went into `sql`.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for node in chunk {
                    query = query.bind(node.uuid.to_string());
                }
                rows.extend(query.fetch_all(&mut *conn).await?);
            }
        }
        let mut macs: HashMap<String, Result<Vec<Mac>, StoreError>> = HashMap::new();
        for r in rows {
            let owner: String = r.try_get("node_uuid")?;
            let mac = parse_mac(&owner, &r);
            let entry = macs.entry(owner).or_insert_with(|| Ok(Vec::new()));
            match (entry.as_mut(), mac) {
                (Ok(list), Ok(mac)) => list.push(mac),
                (Ok(_), Err(e)) => *entry = Err(e),
                (Err(_), _) => {}
            }
        }
        Ok(macs)
    }

    /// Records what a listing found: corrupt rows are remembered (and logged as errors the
    /// first time, as warnings after), readable ones forgotten.
    fn note(&self, listed: &Listed) {
        self.note_good(listed.nodes.iter());
        for bad in &listed.bad {
            self.note_bad(bad);
        }
    }

    fn note_bad(&self, e: &StoreError) {
        let StoreError::Corrupt {
            uuid,
            column,
            detail,
        } = e
        else {
            return;
        };
        let first = self
            .corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uuid.clone(), format!("{column}: {detail}"))
            .is_none();
        if first {
            tracing::error!(node = %uuid, column = %column, "stored node record is corrupt; the node is skipped: {detail}");
        } else {
            tracing::warn!(node = %uuid, column = %column, "skipping the corrupt stored node record: {detail}");
        }
    }

    fn note_good<'a>(&self, nodes: impl Iterator<Item = &'a Node>) {
        let mut corrupt = self.corrupt.lock().unwrap_or_else(PoisonError::into_inner);
        if corrupt.is_empty() {
            return;
        }
        for node in nodes {
            if corrupt.remove(&node.uuid.to_string()).is_some() {
                tracing::info!(node = %node.uuid, "the stored node record is readable again");
            }
        }
    }

    /// The uuids of stored node records that cannot be read (found at open, by listings and
    /// by reads; forgotten once read successfully or deleted), with what is wrong.
    pub fn corrupt_nodes(&self) -> Vec<(String, String)> {
        self.corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(u, d)| (u.clone(), d.clone()))
            .collect()
    }

    /// Writes a changed node (every field but uuid and created_at), if nobody changed it
    /// since it was read (`node.version`). Returns the stored node.
    pub async fn update_node(&self, node: &Node) -> Result<Node, StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut tx = self.write_tx().await?;
        check_unique(&mut tx, node.uuid, node.name.as_deref(), &node.macs).await?;
        let done = sqlx::query(
            "UPDATE nodes SET name = $1, boot_mode = $2, driver_info = $3, instance_info = $4, target = $5, \
             state = $6, last_error = $7, prepared = $8, updated_at = $9, pending = $12, \
             version = version + 1 WHERE uuid = $10 AND version = $11",
        )
        .bind(node.name.clone())
        .bind(node.boot_mode.as_str())
        .bind(to_json(&node.driver_info))
        .bind(to_json(&node.instance_info))
        .bind(node.target.as_str())
        .bind(node.state.as_str())
        .bind(node.last_error.clone())
        .bind(node.prepared.as_ref().map(to_json))
        .bind(self.clock.now_ms())
        .bind(node.uuid.to_string())
        .bind(node.version)
        .bind(node.pending.as_ref().map(to_json))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, node.name.as_deref()))?;
        if done.rows_affected() != 1 {
            let exists = sqlx::query("SELECT 1 FROM nodes WHERE uuid = $1")
                .bind(node.uuid.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(node.uuid),
                None => StoreError::NotFound(node.uuid.to_string()),
            });
        }
        sqlx::query("DELETE FROM node_macs WHERE node_uuid = $1")
            .bind(node.uuid.to_string())
            .execute(&mut *tx)
            .await?;
        insert_macs(&mut tx, node.uuid, &node.macs).await?;
        notify_node(&mut tx, self.backend, node.uuid).await?;
        tx.commit().await?;
        self.committed(node.uuid).await
    }

    /// Deletes a node and its MACs.
    pub async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM node_macs WHERE node_uuid = $1")
            .bind(uuid.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM nodes WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(uuid.to_string()));
        }
        notify_node(&mut tx, self.backend, uuid).await?;
        tx.commit().await?;
        self.index.remove(uuid);
        self.corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&uuid.to_string());
        Ok(())
    }

    /// Registers (or re-registers, after a restart) conductor `hostname`, reachable by
    /// nodes at `http_url`; `now_ms` is its clock.
    pub async fn register_conductor(
        &self,
        hostname: &str,
        http_url: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        sqlx::query(
            "INSERT INTO conductors (hostname, http_url, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (hostname) DO UPDATE SET \
             http_url = excluded.http_url, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(hostname.to_string())
        .bind(http_url.to_string())
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        self.notify_conductors(&mut conn).await?;
        Ok(())
    }

    async fn notify_conductors(&self, conn: &mut PoolConnection<Any>) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CONDUCTORS_CHANNEL)
                .execute(&mut **conn)
                .await?;
        }
        Ok(())
    }

    /// Records that conductor `hostname` is alive at `now_ms`. `false`: it is not
    /// registered (another conductor removed it, or it never registered).
    pub async fn heartbeat(&self, hostname: &str, now_ms: i64) -> Result<bool, StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        let done = sqlx::query("UPDATE conductors SET heartbeat_at = $1 WHERE hostname = $2")
            .bind(now_ms)
            .bind(hostname.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes conductor `hostname` (a clean stop): the others take its nodes at once.
    pub async fn unregister_conductor(&self, hostname: &str) -> Result<(), StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        sqlx::query("DELETE FROM conductors WHERE hostname = $1")
            .bind(hostname.to_string())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE nodes SET reservation = NULL, reserved_at = NULL WHERE reservation = $1",
        )
        .bind(hostname.to_string())
        .execute(&mut *conn)
        .await?;
        self.notify_conductors(&mut conn).await?;
        Ok(())
    }

    /// Every registered conductor, by hostname.
    pub async fn conductors(&self) -> Result<Vec<ConductorRow>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query(
            "SELECT hostname, http_url, started_at, heartbeat_at FROM conductors ORDER BY hostname",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConductorRow {
                    hostname: r.try_get("hostname")?,
                    http_url: r.try_get("http_url")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The uuids of every node (the ring's input), in no particular order.
    pub async fn node_uuids(&self) -> Result<Vec<Uuid>, StoreError> {
        self.uuids("SELECT uuid FROM nodes").await
    }

    /// The uuids a static query selects (column `uuid`); unreadable ones are skipped.
    async fn uuids(&self, sql: &'static str) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("uuid").ok())
            .filter_map(|u| Uuid::try_parse(&u).ok())
            .collect())
    }

    /// The boot record of the node that owns a MAC: the boot path's only read (from the
    /// index with SQLite, a query with PostgreSQL).
    pub async fn boot_record(&self, mac: &Mac) -> Result<Option<Arc<BootRecord>>, StoreError> {
        Ok(self.index.get(mac))
    }

    /// Checks that the database answers and, with SQLite, that its file is still the one
    /// opened (for `/healthz`).
    pub async fn health(&self) -> Result<(), StoreError> {
        self.check_file()?;
        let mut conn = self.conn().await?;
        sqlx::query("SELECT 1").fetch_one(&mut *conn).await?;
        Ok(())
    }

    /// Serializes SQLite writes until the index reflects them; nothing for PostgreSQL.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.index.file {
            Some(_) => Some(self.index.write.lock().await),
            None => None,
        }
    }

    /// Reads a node back after its commit and puts it in the index.
    async fn committed(&self, uuid: Uuid) -> Result<Node, StoreError> {
        let node = self.get_node(&uuid.to_string()).await?;
        self.index.put(&node);
        Ok(node)
    }

    /// Boot records of every node with a target, for rewriting the static mirror: from
    /// the index, without a query.
    pub async fn boot_records_with_target(
        &self,
    ) -> Result<Vec<(Arc<BootRecord>, Vec<Mac>)>, StoreError> {
        Ok(self
            .indexed()
            .into_iter()
            .filter(|(r, _)| r.target != Target::None)
            .collect())
    }

    /// Resolves at the next change of the boot index after this call.
    pub fn index_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.index.changed.notified()
    }

    /// Every node in the boot index, with its MACs, in no particular order.
    pub fn indexed(&self) -> Vec<(Arc<BootRecord>, Vec<Mac>)> {
        self.index
            .maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uuid
            .values()
            .map(|e| (e.record.clone(), e.macs.clone()))
            .collect()
    }

    /// One node from the boot index.
    pub fn indexed_node(&self, uuid: Uuid) -> Option<(Arc<BootRecord>, Vec<Mac>)> {
        self.index
            .maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uuid
            .get(&uuid)
            .map(|e| (e.record.clone(), e.macs.clone()))
    }

    /// Reads one node again into the boot index (a change another conductor announced):
    /// put when it exists, removed when it is gone or cannot be read.
    pub async fn refresh(&self, uuid: Uuid) -> Result<(), StoreError> {
        match self.get_node(&uuid.to_string()).await {
            Ok(node) => self.index.put(&node),
            Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => self.index.remove(uuid),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Reads these nodes again into the boot index, in one query per 500: put when they
    /// exist, removed when they are gone or cannot be read.
    pub async fn refresh_many(&self, uuids: &[Uuid]) -> Result<(), StoreError> {
        for chunk in uuids.chunks(500) {
            let filter = NodeFilter {
                uuids: Some(chunk.to_vec()),
                ..NodeFilter::default()
            };
            let listed = {
                let mut conn = self.conn().await?;
                self.select(&mut conn, &filter, &Paging::default()).await?
            };
            let found: std::collections::HashSet<Uuid> =
                listed.nodes.iter().map(|n| n.uuid).collect();
            for node in &listed.nodes {
                self.index.put(node);
            }
            for uuid in chunk.iter().filter(|u| !found.contains(u)) {
                self.index.remove(*uuid);
            }
            self.note(&listed);
        }
        Ok(())
    }

    /// Reads every node and brings the boot index in line with them: what a lost
    /// notification missed. Returns the nodes whose entries changed. With PostgreSQL the nodes and
    /// their MACs are read in one snapshot (a repeatable-read transaction).
    pub async fn resync(&self) -> Result<Vec<Uuid>, StoreError> {
        let since = self.index.seq();
        let listed = {
            let conn = self.conn().await?;
            let begin = match self.backend {
                Backend::Postgres => Some(sqlx::SqlSafeStr::into_sql_str(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                )),
                Backend::Sqlite => None,
            };
            let mut tx = sqlx::Transaction::begin(conn, begin).await?;
            let listed = self
                .select(&mut tx, &NodeFilter::default(), &Paging::default())
                .await?;
            tx.commit().await?;
            listed
        };
        self.note(&listed);
        let changed = self
            .index
            .maps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .resync(&listed.nodes, since);
        if !changed.is_empty() {
            self.index.changed.notify_waiters();
        }
        Ok(changed)
    }

    /// PostgreSQL: follows the other conductors' commits until an error. It listens on
    /// the `ironboot_nodes` and `ironboot_conductors` channels, resyncs the index (the
    /// changes made before it listened), then puts each announced node into the index and
    /// passes every change to `changes`. When the listening connection is lost, it
    /// reconnects and resyncs, since notifications sent meanwhile are lost. Every
    /// `resync_every` it resyncs anyway. With SQLite there is nobody to follow: it returns
    /// at once.
    pub async fn follow(
        &self,
        changes: &tokio::sync::mpsc::UnboundedSender<Change>,
        resync_every: Duration,
    ) -> Result<(), StoreError> {
        let Some(url) = &self.listen_url else {
            return Ok(());
        };
        let mut listener = sqlx::postgres::PgListener::connect(url)
            .await
            .map_err(|e| StoreError::Database(redacted(&e)))?;
        listener
            .listen_all([NODES_CHANNEL, CONDUCTORS_CHANNEL])
            .await?;
        let resync = |why: &'static str| async move {
            let changed = self.resync().await?;
            tracing::debug!(changed = changed.len(), "boot index resynced ({why})");
            let _ = changes.send(Change::All { changed });
            Ok::<_, StoreError>(())
        };
        resync("listening").await?;
        let mut tick = tokio::time::interval(resync_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let first = tokio::select! {
                n = listener.try_recv() => n?,
                _ = tick.tick() => {
                    resync("periodic").await?;
                    continue;
                }
            };
            let Some(first) = first else {
                tracing::warn!(
                    "the connection that listens for other conductors' changes was lost; reconnecting and resyncing"
                );
                listener
                    .listen_all([NODES_CHANNEL, CONDUCTORS_CHANNEL])
                    .await?;
                resync("reconnected").await?;
                continue;
            };
            // what arrived together is handled together, each node once
            let mut nodes = std::collections::BTreeSet::new();
            let mut conductors = false;
            for n in std::iter::once(first).chain(std::iter::from_fn(|| listener.next_buffered())) {
                match n.channel() {
                    NODES_CHANNEL => match Uuid::try_parse(n.payload()) {
                        Ok(u) => {
                            nodes.insert(u);
                        }
                        Err(_) => tracing::warn!(
                            payload = n.payload(),
                            "ignoring a notification that names no node"
                        ),
                    },
                    _ => conductors = true,
                }
            }
            let nodes: Vec<Uuid> = nodes.into_iter().collect();
            self.refresh_many(&nodes).await?;
            for uuid in nodes {
                let _ = changes.send(Change::Node(uuid));
            }
            if conductors {
                let _ = changes.send(Change::Conductors);
            }
        }
    }

    /// Takes node `uuid`'s reservation for conductor `host`: free, already `host`'s, or
    /// held by a conductor not in `alive`. `false`: another live conductor holds it.
    pub async fn reserve(
        &self,
        uuid: Uuid,
        host: &str,
        alive: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        let mut sql = String::from(
            "UPDATE nodes SET reservation = $1, reserved_at = $2 WHERE uuid = $3 \
             AND (reservation IS NULL OR reservation = $1",
        );
        if !alive.is_empty() {
            let list: Vec<String> = (0..alive.len()).map(|i| format!("${}", i + 4)).collect();
            sql.push_str(&format!(" OR reservation NOT IN ({})", list.join(", ")));
        } else {
            sql.push_str(" OR TRUE");
        }
        sql.push(')');
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(host.to_string())
            .bind(now_ms)
            .bind(uuid.to_string());
        for h in alive {
            q = q.bind(h.clone());
        }
        Ok(q.execute(&mut *conn).await?.rows_affected() == 1)
    }

    /// Gives node `uuid`'s reservation back, if `host` holds it.
    pub async fn release(&self, uuid: Uuid, host: &str) -> Result<(), StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        sqlx::query(
            "UPDATE nodes SET reservation = NULL, reserved_at = NULL WHERE uuid = $1 AND reservation = $2",
        )
        .bind(uuid.to_string())
        .bind(host.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Frees every reservation held by a conductor that is not in `alive` (dead, or gone),
    /// or by `host` itself when `mine` (at start: this conductor's earlier run died).
    /// Returns how many were freed.
    pub async fn release_stale(
        &self,
        alive: &[String],
        host: &str,
        mine: bool,
    ) -> Result<u64, StoreError> {
        let _writing = self.write_guard().await;
        self.check_file()?;
        let mut conn = self.conn().await?;
        let mut sql = String::from(
            "UPDATE nodes SET reservation = NULL, reserved_at = NULL WHERE reservation IS NOT NULL AND (",
        );
        let list: Vec<String> = (0..alive.len()).map(|i| format!("${}", i + 2)).collect();
        if list.is_empty() {
            sql.push_str("TRUE");
        } else {
            sql.push_str(&format!("reservation NOT IN ({})", list.join(", ")));
        }
        if mine {
            sql.push_str(" OR reservation = $1");
        } else {
            sql.push_str(" OR reservation <> $1 AND FALSE");
        }
        sql.push(')');
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(host.to_string());
        for h in alive {
            q = q.bind(h.clone());
        }
        Ok(q.execute(&mut *conn).await?.rows_affected())
    }

    /// The uuids of the nodes with an unfinished preparation.
    pub async fn pending_nodes(&self) -> Result<Vec<Uuid>, StoreError> {
        self.uuids("SELECT uuid FROM nodes WHERE pending IS NOT NULL")
            .await
    }
}

/// The channel on which every committed change of a node is announced (payload: its uuid).
const NODES_CHANNEL: &str = "ironboot_nodes";
/// The channel on which conductors announce that they registered or left.
const CONDUCTORS_CHANNEL: &str = "ironboot_conductors";

/// What [`Store::follow`] saw change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This node changed (it may be gone).
    Node(Uuid),
    /// A conductor registered or left.
    Conductors,
    /// The index was resynced; these nodes' entries differed (their notifications were
    /// lost, or had not been applied yet).
    All { changed: Vec<Uuid> },
}

/// PostgreSQL: announces a node's change to the other conductors when `tx` commits.
async fn notify_node(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    uuid: Uuid,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NODES_CHANNEL)
            .bind(uuid.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn check_unique(
    tx: &mut sqlx::Transaction<'_, Any>,
    uuid: Uuid,
    name: Option<&str>,
    macs: &[Mac],
) -> Result<(), StoreError> {
    if let Some(name) = name {
        let other = sqlx::query("SELECT uuid FROM nodes WHERE name = $1 AND uuid <> $2")
            .bind(name.to_string())
            .bind(uuid.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        if other.is_some() {
            return Err(StoreError::DuplicateName(name.to_string()));
        }
    }
    for mac in macs {
        let owner =
            sqlx::query("SELECT node_uuid FROM node_macs WHERE mac = $1 AND node_uuid <> $2")
                .bind(mac.to_string())
                .bind(uuid.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(row) = owner {
            return Err(StoreError::DuplicateMac {
                mac: *mac,
                owner: row.try_get("node_uuid")?,
            });
        }
    }
    Ok(())
}

async fn insert_macs(
    tx: &mut sqlx::Transaction<'_, Any>,
    uuid: Uuid,
    macs: &[Mac],
) -> Result<(), StoreError> {
    for mac in macs {
        sqlx::query("INSERT INTO node_macs (mac, node_uuid) VALUES ($1, $2)")
            .bind(mac.to_string())
            .bind(uuid.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::DuplicateMac {
                    mac: *mac,
                    owner: "another node (created concurrently)".into(),
                },
                _ => e.into(),
            })?;
    }
    Ok(())
}

/// A unique violation that raced past `check_unique`.
fn unique_violation(e: sqlx::Error, name: Option<&str>) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::DuplicateName(name.unwrap_or_default().to_string())
        }
        _ => e.into(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("node documents serialize")
}

fn corrupt(uuid: &str, column: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        uuid: uuid.to_string(),
        column: column.to_string(),
        detail: detail.to_string(),
    }
}

/// A column of a row: a value that does not decode makes the row corrupt; a column that is
/// not there at all is the schema's problem, a database error.
fn column<'r, T>(row: &'r AnyRow, uuid: &str, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    labelled(row, uuid, name, name)
}

/// [`column`], naming the column `label` when the row is corrupt.
fn labelled<'r, T>(row: &'r AnyRow, uuid: &str, name: &str, label: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } => corrupt(uuid, label, e),
        other => other.into(),
    })
}

fn parse_mac(owner: &str, row: &AnyRow) -> Result<Mac, StoreError> {
    let text: String = labelled(row, owner, "mac", "node_macs.mac")?;
    Mac::parse(&text).map_err(|e| corrupt(owner, "node_macs.mac", e))
}

fn parse_field<T: FromStr<Err = String>>(
    uuid: &str,
    row: &AnyRow,
    name: &str,
) -> Result<T, StoreError> {
    let text: String = column(row, uuid, name)?;
    text.parse().map_err(|e| corrupt(uuid, name, e))
}

fn json_field<T: serde::de::DeserializeOwned>(
    uuid: &str,
    row: &AnyRow,
    name: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = column(row, uuid, name)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(uuid, name, e)))
        .transpose()
}

/// The uuid of a row, as text and parsed.
fn row_uuid(row: &AnyRow) -> Result<(String, Uuid), StoreError> {
    let text: String = column(row, "<unreadable>", "uuid")?;
    let uuid = Uuid::try_parse(&text).map_err(|e| corrupt(&text, "uuid", e))?;
    Ok((text, uuid))
}

fn node_from_row(row: &AnyRow) -> Result<Node, StoreError> {
    let (text, uuid) = row_uuid(row)?;
    let u = text.as_str();
    Ok(Node {
        progress: None,
        uuid,
        name: column(row, u, "name")?,
        macs: Vec::new(),
        boot_mode: parse_field(u, row, "boot_mode")?,
        driver_info: json_field(u, row, "driver_info")?.unwrap_or_default(),
        instance_info: json_field(u, row, "instance_info")?.unwrap_or_default(),
        target: parse_field(u, row, "target")?,
        state: parse_field(u, row, "state")?,
        last_error: column(row, u, "last_error")?,
        prepared: json_field(u, row, "prepared")?,
        created_at: rfc3339(column(row, u, "created_at")?),
        updated_at: rfc3339(column(row, u, "updated_at")?),
        version: column(row, u, "version")?,
        pending: json_field(u, row, "pending")?,
        reservation: column(row, u, "reservation")?,
        conductor: None,
    })
}

#[cfg(test)]
mod poison_tests {
    use super::*;

    /// Regression: a panic while the index lock was held poisoned it, and every later boot
    /// request panicked on `expect`. The maps are replaced entry by entry, so a poisoned lock
    /// is used as it is.
    #[tokio::test]
    async fn regression_a_poisoned_index_lock_panics_every_boot_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &DatabaseUrl::Sqlite(dir.path().join("db.sqlite")),
            2,
            Arc::new(crate::clock::SystemClock),
        )
        .await
        .unwrap();
        let mac = Mac::parse("52:54:00:aa:bb:cc").unwrap();
        let node = store
            .create_node(NewNode {
                name: None,
                macs: vec![mac],
                boot_mode: BootMode::Bios,
                driver_info: DriverInfo::default(),
                instance_info: InstanceInfo::default(),
            })
            .await
            .unwrap();
        let index = store.index.clone();
        let poisoner = std::thread::spawn(move || {
            let _guard = index.maps.write().unwrap();
            panic!("a panic while the index lock is held");
        });
        assert!(poisoner.join().is_err());
        assert!(store.index.maps.is_poisoned());
        assert_eq!(
            store.boot_record(&mac).await.unwrap().unwrap().uuid,
            node.uuid
        );
        store.delete_node(node.uuid).await.unwrap();
        assert!(store.boot_record(&mac).await.unwrap().is_none());
        store.close().await;
    }
}
