//! The domain's operations, one method each: create, update and delete a node, set its
//! boot target, render its script, keep the static mirror in line, report health. The HTTP
//! edge (`server`), the periodic tasks (`conductor`), the CLI, the tests and the benchmark
//! seeder all call these, never copies of them.
//!
//! [`Service`] owns the shared state: the store, the boot service, the static mirror, the
//! metrics, the health of the periodic tasks and the clock. It reads the time only from its
//! clock, which tests set. It knows nothing about HTTP: its errors carry a stable
//! [`ErrorCode`], a message for the client and, separately, the detail to log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::boot::{BootError, BootService, Rendered};
use crate::cache::Progress;
use crate::clock::Clock;
use crate::code::ErrorCode;
use crate::images::swift::SwiftError;
use crate::images::swift_keys::Refreshed;
use crate::metrics::{Metrics, PrepareLabels, ResultLabels};
use crate::mirror::Mirror;
use crate::node::{
    self, BootMode, BootRecord, DriverInfo, FieldError, InstanceInfo, Mac, Node, Pending,
    PrepareProgress, State, Target,
};
use crate::store::{NewNode, NodeFilter, NodePage, Paging, Store, StoreError};

mod takeover;
pub use takeover::Rebalance;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is invalid; the field is named.
    #[error("{0}")]
    Field(#[from] FieldError),
    /// The request is not a JSON object of the expected shape.
    #[error("{0}")]
    InvalidBody(String),
    /// A query parameter is invalid; the parameter is named.
    #[error("{field}: {message}")]
    InvalidQuery {
        field: &'static str,
        message: String,
    },
    #[error("{field} cannot be written: {why}")]
    ReadOnly {
        field: &'static str,
        why: &'static str,
    },
    #[error(
        "{field} is {size} bytes of JSON; the limit is {max} bytes ([api] max_document_size): keep large data elsewhere"
    )]
    DocumentTooLarge {
        field: &'static str,
        size: usize,
        max: usize,
    },
    #[error("node {0} has no MACs; add one with PATCH /v1/nodes/{0}")]
    NoMacs(Uuid),
    #[error("node {0} has no boot target; PUT /v1/nodes/{0}/boot first")]
    NoBootTarget(Uuid),
    #[error("the fallback script {path} cannot be read: {detail}")]
    FallbackMissing { path: PathBuf, detail: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Boot(#[from] BootError),
}

impl ServiceError {
    /// The stable code, from the kind of the error alone.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Field(f) if f.field.starts_with("macs") => ErrorCode::InvalidMac,
            ServiceError::Field(_) => ErrorCode::InvalidField,
            ServiceError::InvalidBody(_) => ErrorCode::InvalidBody,
            ServiceError::InvalidQuery { .. } => ErrorCode::InvalidQuery,
            ServiceError::ReadOnly { .. } => ErrorCode::ReadOnlyField,
            ServiceError::DocumentTooLarge { .. } => ErrorCode::DocumentTooLarge,
            ServiceError::NoMacs(_) => ErrorCode::NoMacs,
            ServiceError::NoBootTarget(_) => ErrorCode::NoBootTarget,
            ServiceError::FallbackMissing { .. } => ErrorCode::FallbackMissing,
            ServiceError::Store(e) => e.code(),
            ServiceError::Boot(e) => e.code(),
        }
    }

    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ServiceError::Field(f) => Some(&f.field),
            ServiceError::ReadOnly { field, .. }
            | ServiceError::DocumentTooLarge { field, .. }
            | ServiceError::InvalidQuery { field, .. } => Some(field),
            ServiceError::Store(StoreError::UnknownMarker(_)) => Some("marker"),
            ServiceError::Store(StoreError::DuplicateMac { .. }) => Some("macs"),
            ServiceError::Store(StoreError::DuplicateName(_)) => Some("name"),
            ServiceError::Boot(e) => e.field(),
            _ => None,
        }
    }

    /// What the client is told: never a secret, never internal detail.
    pub fn client_message(&self) -> String {
        match self {
            ServiceError::Store(StoreError::DatabaseGone(_)) => {
                "the database file was deleted or replaced while ironboot ran; changes are \
                 refused until an operator restores it and restarts ironboot (see the server log)"
                    .into()
            }
            ServiceError::Store(e) if e.is_internal() => {
                "the database is unavailable; retry later".into()
            }
            ServiceError::Store(StoreError::Corrupt { uuid, .. }) => {
                format!("the stored record of node {uuid} is corrupt; see the server log")
            }
            ServiceError::FallbackMissing { .. } => "fallback script missing".into(),
            other => other.to_string(),
        }
    }

    /// What is logged and not sent: the cause behind a generic client message.
    pub fn detail(&self) -> Option<String> {
        match self {
            ServiceError::Store(e) if e.is_internal() => Some(e.to_string()),
            ServiceError::Store(e @ StoreError::Corrupt { .. }) => Some(e.to_string()),
            ServiceError::FallbackMissing { .. } => Some(self.to_string()),
            _ => None,
        }
    }

    /// Whether this is the service's fault (logged as an error) rather than the client's.
    pub fn is_internal(&self) -> bool {
        self.detail().is_some() || matches!(self, ServiceError::Boot(BootError::Render(_)))
    }
}

/// The writable fields of a node, as clients send them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    macs: Vec<String>,
    #[serde(default)]
    boot_mode: Option<String>,
    #[serde(default)]
    driver_info: Option<DriverInfo>,
    #[serde(default)]
    instance_info: Option<InstanceInfo>,
}

/// A node's writable fields after validation.
struct Checked {
    name: Option<String>,
    macs: Vec<Mac>,
    boot_mode: BootMode,
    driver_info: DriverInfo,
    instance_info: InstanceInfo,
}

/// Fields a client may read but not write, and where to change them instead.
const READ_ONLY: &[(&str, &str)] = &[
    ("uuid", "it is assigned by ironboot"),
    ("target", "use PUT /v1/nodes/{node}/boot"),
    ("state", "it is set by PUT /v1/nodes/{node}/boot"),
    ("last_error", "it is set by PUT /v1/nodes/{node}/boot"),
    ("prepared", "it is set by PUT /v1/nodes/{node}/boot"),
    ("created_at", "it is set by ironboot"),
    ("updated_at", "it is set by ironboot"),
];

/// RFC 7396: objects merge recursively, `null` removes.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Deserializes a JSON value; errors name the field path.
pub fn from_value<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ServiceError::InvalidBody(format!("invalid body: {inner}"))
        } else {
            ServiceError::Field(FieldError::new(path, inner.to_string()))
        }
    })
}

/// The state of one supervised periodic task, for `/healthz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TaskStatus {
    pub healthy: bool,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What `/healthz` reports.
///
/// Corrupt node records do not make the service unhealthy: every other node is served, and
/// a 503 would take the whole service out of a load balancer for one bad row. They make the
/// database check say so instead of `"ok"`, which monitoring that compares it with `"ok"`
/// notices, and [`Health::corrupt_nodes`] counts them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// The database answers (and, with SQLite, its file is still the one opened) and every
    /// supervised task is running.
    pub healthy: bool,
    /// `"ok"`; why the database check failed; or, when the database is fine but some
    /// stored node records cannot be read, `"ok, but N stored node records are corrupt …"`
    /// with their uuids.
    pub database: String,
    /// How many stored node records cannot be read (they are skipped; see the log).
    pub corrupt_nodes: usize,
    pub tasks: BTreeMap<&'static str, TaskStatus>,
}

/// How a per-MAC script request was answered.
#[derive(Debug)]
pub enum NodeScript {
    Script(Rendered),
    /// No node has this MAC.
    UnknownMac,
    /// The node has no boot target.
    NoTarget,
}

/// Limits on what clients may store and read at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON size of driver_info or instance_info.
    pub max_document_size: usize,
    /// The default and largest page of a listing (Ironic's `[api] max_limit`).
    pub max_limit: usize,
    /// `[conductor] cache_clean_up_interval`; zero: no periodic cleanup.
    pub cache_clean_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_size: 64 * 1024,
            max_limit: 1000,
            cache_clean_interval: Duration::from_secs(3600),
        }
    }
}

/// The shared state and the operations on it.
#[derive(Debug)]
pub struct Service {
    store: Store,
    boot: BootService,
    /// The static mirror in `[deploy] http_root`.
    mirror: Mirror,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// `[ipxe] fallback_script` when it names a file in http_root.
    fallback_file: Option<PathBuf>,
    limits: Limits,
    tasks: Mutex<BTreeMap<&'static str, TaskStatus>>,
    /// Preparations whose images are being fetched, by node.
    preparing: Mutex<std::collections::HashMap<Uuid, InFlight>>,
    identity: Identity,
    /// Who owns which node: the hash ring of the live conductors.
    takeover: takeover::Takeover,
}

/// Who this conductor is, for the membership table.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `[DEFAULT] host`.
    pub host: String,
    /// `[deploy] http_url`.
    pub http_url: String,
    /// `[conductor] heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// `[conductor] heartbeat_timeout`.
    pub heartbeat_timeout: Duration,
    /// `[conductor] index_resync_interval` (PostgreSQL).
    pub index_resync_interval: Duration,
}

/// A conductor, whether it is alive, and how many nodes the ring gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConductorInfo {
    pub hostname: String,
    pub http_url: String,
    /// RFC 3339.
    pub started_at: String,
    pub heartbeat_at: String,
    pub alive: bool,
    /// Nodes the hash ring of the live conductors gives it (0 when dead).
    pub nodes: usize,
}

/// A preparation that continues after its request: the cache is filling.
#[derive(Debug, Clone)]
struct InFlight {
    /// The request ([`Pending::id`]): tells a preparation from a later one of the node.
    id: Uuid,
    target: Target,
    /// Kernel and ramdisk.
    progress: [Arc<Progress>; 2],
}

/// Runs blocking file work off the async threads; a panic in it becomes an I/O error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("file task failed: {e}"))))
}

impl Service {
    pub fn new(
        store: Store,
        boot: BootService,
        mirror: Mirror,
        clock: Arc<dyn Clock>,
        fallback_file: Option<PathBuf>,
        limits: Limits,
    ) -> Service {
        Service {
            store,
            boot,
            mirror,
            metrics: Metrics::new(),
            clock,
            fallback_file,
            limits,
            tasks: Mutex::default(),
            preparing: Mutex::default(),
            takeover: takeover::Takeover::new("localhost"),
            identity: Identity {
                host: "localhost".into(),
                http_url: String::new(),
                heartbeat_interval: Duration::from_secs(10),
                heartbeat_timeout: Duration::from_secs(60),
                index_resync_interval: Duration::from_secs(60),
            },
        }
    }

    /// Names this conductor for the membership table.
    pub fn with_identity(mut self, identity: Identity) -> Service {
        self.takeover = takeover::Takeover::new(&identity.host);
        self.identity = identity;
        self
    }

    /// `[conductor] heartbeat_interval`.
    pub fn heartbeat_interval(&self) -> Duration {
        self.identity.heartbeat_interval
    }

    /// `[conductor] heartbeat_timeout`.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.identity.heartbeat_timeout
    }

    /// Whether other conductors may write the database (PostgreSQL): their changes must
    /// be followed ([`Service::follow_others`]).
    pub fn follows_others(&self) -> bool {
        self.store.backend() == crate::store::Backend::Postgres
    }

    /// Applies other conductors' changes to the boot index until an error, passing each
    /// to `changes` for [`Service::apply_change`].
    pub async fn follow_others(
        &self,
        changes: &tokio::sync::mpsc::UnboundedSender<crate::store::Change>,
    ) -> Result<(), ServiceError> {
        Ok(self
            .store
            .follow(changes, self.identity.index_resync_interval)
            .await?)
    }

    /// Brings this conductor in line with a change another conductor made.
    pub async fn apply_change(self: &Arc<Self>, change: crate::store::Change) {
        use crate::metrics::KindLabels;
        use crate::store::Change;
        let kind = match &change {
            Change::Node(_) => "node",
            Change::Conductors => "conductors",
            Change::All { .. } => "resync",
        };
        self.metrics
            .index_changes
            .get_or_create(&KindLabels { kind })
            .inc();
        match change {
            Change::Node(uuid) => self.node_changed(uuid).await,
            Change::Conductors => {
                if let Err(e) = self.rebalance().await {
                    tracing::warn!("ring refresh after a membership change failed: {e}");
                }
            }
            Change::All { changed } => {
                if !changed.is_empty() {
                    tracing::debug!(nodes = changed.len(), "the resync changed index entries");
                }
                for uuid in changed {
                    self.node_changed(uuid).await;
                }
            }
        }
    }

    /// This conductor's name.
    pub fn host(&self) -> &str {
        &self.identity.host
    }

    /// Registers this conductor (at start).
    pub async fn register(&self) -> Result<(), ServiceError> {
        let i = &self.identity;
        self.store
            .register_conductor(&i.host, &i.http_url, self.clock.now_ms())
            .await?;
        tracing::info!(host = %i.host, http_url = %i.http_url, "conductor registered");
        Ok(())
    }

    /// One heartbeat (registering again if this conductor's row is gone), then the
    /// membership gauges brought up to date.
    pub async fn heartbeat(&self) -> Result<(), ServiceError> {
        if self.is_leaving() {
            return Ok(());
        }
        if !self
            .store
            .heartbeat(&self.identity.host, self.clock.now_ms())
            .await?
        {
            tracing::warn!(host = %self.identity.host, "this conductor was not registered; registering again");
            self.register().await?;
        }
        let conductors = self.conductors().await?;
        self.metrics.observe_conductors(
            conductors
                .iter()
                .map(|c| (c.hostname.as_str(), c.alive, c.nodes)),
        );
        Ok(())
    }

    /// Unregisters this conductor (a clean stop): the others take its nodes at once.
    pub async fn unregister(&self) -> Result<(), ServiceError> {
        self.store.unregister_conductor(&self.identity.host).await?;
        tracing::info!(host = %self.identity.host, "conductor unregistered");
        Ok(())
    }

    /// One page of [`Service::conductors`]: at most `limit` (default and largest
    /// `[api] max_limit`) after the hostname `marker`, and the marker of the next page.
    pub async fn list_conductors(
        &self,
        limit: Option<usize>,
        marker: Option<&str>,
    ) -> Result<(Vec<ConductorInfo>, Option<String>), ServiceError> {
        let max = self.limits.max_limit;
        let limit = match limit {
            None => max,
            Some(0) => {
                return Err(ServiceError::InvalidQuery {
                    field: "limit",
                    message: "must be at least 1".into(),
                });
            }
            Some(l) if l > max => {
                return Err(ServiceError::InvalidQuery {
                    field: "limit",
                    message: format!("{l} is more than [api] max_limit ({max})"),
                });
            }
            Some(l) => l,
        };
        let all = self.conductors().await?;
        let start = match marker {
            None => 0,
            Some(m) => match all.iter().position(|c| c.hostname == m) {
                Some(i) => i + 1,
                None => {
                    return Err(ServiceError::InvalidQuery {
                        field: "marker",
                        message: format!(
                            "no conductor is named {m:?}; pass the hostname of the last conductor of the previous page"
                        ),
                    });
                }
            },
        };
        let page: Vec<ConductorInfo> = all.iter().skip(start).take(limit).cloned().collect();
        let next = (start + page.len() < all.len())
            .then(|| page.last().map(|c| c.hostname.clone()))
            .flatten();
        Ok((page, next))
    }

    /// Every registered conductor, alive or dead, with the nodes the ring gives it.
    pub async fn conductors(&self) -> Result<Vec<ConductorInfo>, ServiceError> {
        let now = self.clock.now_ms();
        let timeout =
            i64::try_from(self.identity.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
        let rows = self.store.conductors().await?;
        let alive = |r: &crate::store::ConductorRow| now.saturating_sub(r.heartbeat_at) <= timeout;
        let ring = crate::ring::Ring::new(
            rows.iter()
                .filter(|r| alive(r))
                .map(|r| r.hostname.as_str()),
        );
        let mut owned: BTreeMap<String, usize> = BTreeMap::new();
        if !ring.is_empty() {
            for uuid in self.store.node_uuids().await? {
                if let Some(owner) = ring.owner(&uuid) {
                    *owned.entry(owner.to_string()).or_default() += 1;
                }
            }
        }
        Ok(rows
            .iter()
            .map(|r| ConductorInfo {
                hostname: r.hostname.clone(),
                http_url: r.http_url.clone(),
                started_at: crate::store::rfc3339(r.started_at),
                heartbeat_at: crate::store::rfc3339(r.heartbeat_at),
                alive: alive(r),
                nodes: owned.get(&r.hostname).copied().unwrap_or(0),
            })
            .collect())
    }

    /// How often the conductor cleans the master image cache (zero: never).
    pub fn cache_clean_interval(&self) -> Duration {
        self.limits.cache_clean_interval
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn boot(&self) -> &BootService {
        &self.boot
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn check_fields(&self, f: NodeFields) -> Result<Checked, ServiceError> {
        if let Some(name) = &f.name {
            node::validate_name(name)?;
        }
        let macs = node::parse_macs(&f.macs)?;
        let boot_mode = match &f.boot_mode {
            Some(m) => m
                .parse()
                .map_err(|e: String| FieldError::new("boot_mode", e))?,
            None => BootMode::Bios,
        };
        let driver_info = f.driver_info.unwrap_or_default();
        let instance_info = f.instance_info.unwrap_or_default();
        if let Some(args) = &instance_info.kernel_append_params {
            node::validate_kernel_args("instance_info.kernel_append_params", args)?;
        }
        let max = self.limits.max_document_size;
        for (field, size) in [
            ("driver_info", json_size(&driver_info)),
            ("instance_info", json_size(&instance_info)),
        ] {
            if size > max {
                return Err(ServiceError::DocumentTooLarge { field, size, max });
            }
        }
        Ok(Checked {
            name: f.name,
            macs,
            boot_mode,
            driver_info,
            instance_info,
        })
    }

    fn refuse_read_only(body: &Value) -> Result<(), ServiceError> {
        let Some(obj) = body.as_object() else {
            return Err(ServiceError::InvalidBody(
                "the body must be a JSON object".into(),
            ));
        };
        for (field, why) in READ_ONLY {
            if obj.contains_key(*field) {
                return Err(ServiceError::ReadOnly { field, why });
            }
        }
        Ok(())
    }

    /// Creates a node from a client's JSON object.
    pub async fn create_node(&self, body: &Value) -> Result<Node, ServiceError> {
        Self::refuse_read_only(body)?;
        let c = self.check_fields(from_value(body)?)?;
        let node = self
            .store
            .create_node(NewNode {
                name: c.name,
                macs: c.macs,
                boot_mode: c.boot_mode,
                driver_info: c.driver_info,
                instance_info: c.instance_info,
            })
            .await?;
        tracing::info!(node = %node.uuid, name = ?node.name, "node created");
        let mut node = node;
        node.conductor = self.owner_of(&node.uuid);
        Ok(node)
    }

    /// A node by UUID or name.
    pub async fn get_node(&self, ident: &str) -> Result<Node, ServiceError> {
        let mut node = self.store.get_node(ident).await?;
        node.progress = self.progress_of(node.uuid);
        node.conductor = self.owner_of(&node.uuid);
        Ok(node)
    }

    /// The progress of a preparation in flight in this process.
    fn progress_of(&self, uuid: Uuid) -> Option<PrepareProgress> {
        let map = self
            .preparing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&uuid).map(|f| {
            let totals: Vec<Option<u64>> = f.progress.iter().map(|p| p.total()).collect();
            PrepareProgress {
                target: f.target,
                bytes_done: f.progress.iter().map(|p| p.done()).sum(),
                bytes_total: totals
                    .iter()
                    .copied()
                    .try_fold(0u64, |a, t| t.map(|t| a + t)),
            }
        })
    }

    /// Marks every node left `preparing` without a stored request (by a version before
    /// requests were stored) as failed: its preparation died with the process. Nodes with a
    /// stored request are resumed by their conductor ([`Service::rebalance`]). Called once
    /// at start; returns how many there were.
    pub async fn fail_interrupted_prepares(&self) -> Result<usize, ServiceError> {
        let filter = NodeFilter {
            state: Some(State::Preparing),
            ..NodeFilter::default()
        };
        let nodes: Vec<Node> = self
            .store
            .list_nodes(&filter)
            .await?
            .into_iter()
            // a stored request is resumed by the node's conductor instead
            .filter(|n| n.pending.is_none())
            .collect();
        let n = nodes.len();
        for node in nodes {
            tracing::warn!(node = %node.uuid, "a preparation was interrupted when ironboot stopped; marking the node failed");
            self.record_failure(
                node,
                "the preparation was interrupted: ironboot stopped before the images were in \
                 place; the previous target is still served; PUT the target again"
                    .into(),
            )
            .await?;
        }
        Ok(n)
    }

    /// One page of the nodes matching a filter, as Ironic's API pages: at most
    /// `paging.limit` nodes (by default [`Limits::max_limit`]) after the node
    /// `paging.marker`, by `sort_key` and `sort_dir`, ties broken by uuid.
    ///
    /// A limit of 0, or above `max_limit`, is refused with `invalid_query` rather than
    /// clamped as Ironic does: a client that stops at the first page shorter than the limit
    /// it asked for (instead of following `next`) would take a clamped page for the last
    /// one. A marker that is not a node is refused too. Stored records that cannot be read are skipped (and logged), so a page
    /// can be shorter than its limit and still be followed by another.
    pub async fn list_nodes(
        &self,
        filter: &NodeFilter,
        paging: &Paging,
    ) -> Result<NodePage, ServiceError> {
        let max = self.limits.max_limit;
        let limit = match paging.limit {
            None => max,
            Some(0) => {
                return Err(ServiceError::InvalidQuery {
                    field: "limit",
                    message: "must be at least 1".into(),
                });
            }
            Some(n) if n > max => {
                return Err(ServiceError::InvalidQuery {
                    field: "limit",
                    message: format!(
                        "{n} is above the largest page, {max} ([api] max_limit); follow `next` for more"
                    ),
                });
            }
            Some(n) => n,
        };
        let paging = Paging {
            limit: Some(limit),
            ..paging.clone()
        };
        let mut page = self.store.list_nodes_page(filter, &paging).await?;
        for node in &mut page.nodes {
            node.conductor = self.owner_of(&node.uuid);
        }
        Ok(page)
    }

    /// Applies a JSON merge patch (RFC 7396) to a node's writable fields.
    pub async fn update_node(&self, ident: &str, patch: &Value) -> Result<Node, ServiceError> {
        Self::refuse_read_only(patch)?;
        let mut node = self.store.get_node(ident).await?;
        let mut doc = json!({
            "name": node.name,
            "macs": node.macs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "boot_mode": node.boot_mode,
            "driver_info": node.driver_info,
            "instance_info": node.instance_info,
        });
        merge_patch(&mut doc, patch);
        let c = self.check_fields(from_value(&doc)?)?;
        node.name = c.name;
        node.macs = c.macs;
        node.boot_mode = c.boot_mode;
        node.driver_info = c.driver_info;
        node.instance_info = c.instance_info;
        let node = self.store.update_node(&node).await?;
        // MAC changes move the mirror's links at once; image changes wait for the next
        // prepare.
        self.sync_mirror(node.uuid).await;
        tracing::info!(node = %node.uuid, "node updated");
        let mut node = node;
        node.conductor = self.owner_of(&node.uuid);
        Ok(node)
    }

    /// Deletes a node and its mirror files.
    /// A node whose stored record is corrupt can still be deleted by its UUID.
    pub async fn delete_node(&self, ident: &str) -> Result<(), ServiceError> {
        let uuid = match self.store.get_node(ident).await {
            Ok(node) => node.uuid,
            Err(StoreError::Corrupt { uuid, .. }) => match Uuid::try_parse(&uuid) {
                Ok(u) => u,
                Err(_) => return Err(self.store.get_node(ident).await.unwrap_err().into()),
            },
            Err(e) => return Err(e.into()),
        };
        self.store.delete_node(uuid).await?;
        self.forget_prepare(uuid, None);
        self.boot.remove_images(uuid).await;
        self.sync_mirror(uuid).await;
        tracing::info!(node = %uuid, "node deleted");
        Ok(())
    }

    /// Prepares `target` and, only if that succeeds, makes it the node's boot target. A
    /// failure sets `state = failed` and `last_error`, and leaves the previous target in
    /// force.
    pub async fn set_boot(
        self: &Arc<Self>,
        ident: &str,
        target: Target,
    ) -> Result<Node, ServiceError> {
        let mut node = self.store.get_node(ident).await?;
        let uuid = node.uuid;
        let outcome = self.boot.prepare(&node, target, self.clock.now()).await;
        let prepared = match outcome {
            Ok(p) => p,
            Err(e) => {
                self.count_prepare(target, false);
                self.forget_prepare(uuid, None);
                tracing::warn!(node = %uuid, %target, code = %e.code(), "boot preparation failed: {e}");
                let message = format!("preparing target {target} failed: {e}");
                self.record_failure(node, message).await?;
                return Err(e.into());
            }
        };
        if let Some(p) = prepared.as_ref().filter(|p| p.needs_fetch()) {
            // The images go into the owner's cache after the answer; the previous target is
            // served until they are in place. The request is stored, so that another
            // conductor finishes it if the owner dies.
            let pending = Pending {
                id: Uuid::new_v4(),
                target,
                prepared: p.clone(),
            };
            let owner = self.is_owner(&uuid);
            let progress = [Progress::new(), Progress::new()];
            if owner {
                self.preparing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        uuid,
                        InFlight {
                            id: pending.id,
                            target,
                            progress: progress.clone(),
                        },
                    );
            }
            node.state = State::Preparing;
            node.last_error = None;
            node.pending = Some(pending.clone());
            let mut node = match self.store.update_node(&node).await {
                Ok(n) => n,
                Err(e) => {
                    self.forget_prepare(uuid, Some(pending.id));
                    return Err(e.into());
                }
            };
            if owner {
                self.start_work(uuid);
                tracing::info!(node = %uuid, %target, "boot preparation continues: fetching images into the cache");
            } else {
                tracing::info!(node = %uuid, %target, owner = ?self.owner_of(&uuid), "boot preparation continues on the node's conductor");
            }
            node.progress = self.progress_of(uuid);
            node.conductor = self.owner_of(&uuid);
            return Ok(node);
        }
        self.count_prepare(target, true);
        self.forget_prepare(uuid, None);
        node.target = target;
        node.prepared = prepared;
        // supersedes a preparation still fetching
        node.pending = None;
        node.state = if target == Target::None {
            State::Idle
        } else {
            State::Ready
        };
        node.last_error = None;
        let node = self.store.update_node(&node).await?;
        if target == Target::None {
            self.boot.remove_images(uuid).await;
        }
        self.sync_mirror(node.uuid).await;
        tracing::info!(node = %node.uuid, %target, "boot prepared");
        let mut node = node;
        node.conductor = self.owner_of(&uuid);
        Ok(node)
    }

    fn count_prepare(&self, target: Target, ok: bool) {
        let labels = PrepareLabels {
            target: target.as_str(),
            result: if ok { "ok" } else { "failed" },
        };
        self.metrics.prepares.get_or_create(&labels).inc();
    }

    /// Drops the in-flight record of a node (only request `id`'s, when given).
    fn forget_prepare(&self, uuid: Uuid, id: Option<Uuid>) {
        let mut map = self
            .preparing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if id.is_none_or(|g| map.get(&uuid).is_some_and(|f| f.id == g)) {
            map.remove(&uuid);
        }
    }

    /// Sets `state = failed` and `last_error`, retrying when another write came between.
    async fn record_failure(&self, mut node: Node, message: String) -> Result<(), ServiceError> {
        for _ in 0..3 {
            node.state = State::Failed;
            node.last_error = Some(message.clone());
            match self.store.update_node(&node).await {
                Err(StoreError::Conflict(_)) => {
                    node = self.store.get_node(&node.uuid.to_string()).await?
                }
                Err(other) => {
                    tracing::error!(node = %node.uuid, "cannot record the failure: {other}");
                    return Ok(());
                }
                Ok(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// `[ipxe] tempurl_redirect`: where `http_url/<uuid>/<label>` sends the node, a TempURL
    /// signed now; `None` when the node has no such signed image. Reads the store only.
    pub async fn redirect_url(
        &self,
        uuid: Uuid,
        label: &str,
    ) -> Result<Option<String>, ServiceError> {
        let node = match self.store.get_node(&uuid.to_string()).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let url = self
            .boot
            .redirect_url(&BootRecord::of(&node), label, self.clock.now())?;
        if url.is_some() {
            self.metrics.tempurls.inc();
        }
        Ok(url)
    }

    /// The master script, rendered at start.
    pub fn master_script(&self) -> &str {
        self.metrics.render("master", "ok");
        self.boot.master_script()
    }

    /// The script of the node that owns `mac`, rendered now: the boot path. It reads only
    /// the store's boot record and signs URLs; nothing is written.
    pub async fn node_script(&self, mac: &Mac) -> Result<NodeScript, ServiceError> {
        let record = match self.store.boot_record(mac).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.metrics.render("node", "not_found");
                return Ok(NodeScript::UnknownMac);
            }
            Err(e) => {
                self.metrics.render("node", "error");
                return Err(e.into());
            }
        };
        match self
            .boot
            .render(&record, mac, &mac.hexhyp(), self.clock.now())
        {
            Ok(Some(rendered)) => {
                self.metrics.tempurls.inc_by(u64::from(rendered.tempurls));
                self.metrics.render("node", "ok");
                Ok(NodeScript::Script(rendered))
            }
            Ok(None) => {
                self.metrics.render("node", "not_found");
                Ok(NodeScript::NoTarget)
            }
            Err(e) => {
                self.metrics.render("node", "error");
                Err(e.into())
            }
        }
    }

    /// The script a node would get now, for `mac` or its first MAC.
    pub async fn preview_script(
        &self,
        ident: &str,
        mac: Option<Mac>,
    ) -> Result<Rendered, ServiceError> {
        let node = self.store.get_node(ident).await?;
        let mac = match mac {
            Some(m) => m,
            None => *node.macs.first().ok_or(ServiceError::NoMacs(node.uuid))?,
        };
        let rendered = self
            .boot
            .render(
                &BootRecord::of(&node),
                &mac,
                &mac.hexhyp(),
                self.clock.now(),
            )?
            .ok_or(ServiceError::NoBootTarget(node.uuid))?;
        self.metrics.tempurls.inc_by(u64::from(rendered.tempurls));
        Ok(rendered)
    }

    /// `[ipxe] fallback_script`, read from http_root.
    pub async fn fallback_script(&self) -> Result<String, ServiceError> {
        let Some(path) = self.fallback_file.clone() else {
            return Err(ServiceError::FallbackMissing {
                path: PathBuf::new(),
                detail: "no fallback file is configured".into(),
            });
        };
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => {
                self.metrics.render("fallback", "ok");
                Ok(text)
            }
            Err(e) => Err(ServiceError::FallbackMissing {
                path,
                detail: e.to_string(),
            }),
        }
    }

    /// Brings a node's files in the static mirror in line with the store: written when it
    /// has a target, removed when it has none or is gone. Failures are logged and counted;
    /// the periodic refresh repairs them.
    ///
    /// Only the node's owner keeps its files: another conductor removes any it has (it
    /// owned the node before the ring changed).
    pub async fn sync_mirror(&self, uuid: Uuid) {
        match self.store.indexed_node(uuid) {
            Some((record, macs)) if self.is_owner(&uuid) => {
                self.takeover.set_owned(uuid, true);
                self.write_mirror(&record, &macs).await
            }
            Some((record, _)) => {
                if self.takeover.set_owned(uuid, false) {
                    self.remove_mirror(uuid).await;
                }
                self.release_images(&record).await;
            }
            None => {
                // The index may lag behind the database (another conductor's change not
                // yet applied): only a node the database no longer has is gone.
                if let Err(e) = self.store.refresh(uuid).await {
                    tracing::warn!(node = %uuid, "mirror not updated: {e}");
                    return;
                }
                if self.store.indexed_node(uuid).is_some() {
                    return Box::pin(self.sync_mirror(uuid)).await;
                }
                // a node deleted (maybe while ironboot was down): its images go too
                self.takeover.set_owned(uuid, false);
                self.boot.remove_images(uuid).await;
                self.remove_mirror(uuid).await
            }
        }
    }

    /// Writes one node's mirror files from a record already read (or removes them when the
    /// node has nothing to boot or no MAC).
    async fn write_mirror(&self, record: &BootRecord, macs: &[Mac]) {
        let rendered = match macs.first() {
            Some(mac) if record.target != Target::None => {
                match self
                    .boot
                    .render(record, mac, "${mac:hexhyp}", self.clock.now())
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(node = %record.uuid, "mirror config not rendered: {e}");
                        return;
                    }
                }
            }
            _ => None,
        };
        let Some(rendered) = rendered else {
            return self.remove_mirror(record.uuid).await;
        };
        let (mirror, uuid, macs) = (self.mirror.clone(), record.uuid, macs.to_vec());
        let result = blocking(move || mirror.write_node(uuid, &macs, &rendered.script)).await;
        self.count_mirror_write(uuid, result);
    }

    async fn remove_mirror(&self, uuid: Uuid) {
        let mirror = self.mirror.clone();
        let result = blocking(move || mirror.remove_node(uuid)).await;
        self.count_mirror_write(uuid, result);
    }

    fn count_mirror_write(&self, uuid: Uuid, result: std::io::Result<()>) {
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .mirror_writes
            .get_or_create(&ResultLabels { result: label })
            .inc();
        if let Err(e) = result {
            tracing::error!(node = %uuid, "cannot write the static mirror in {}: {e}", self.mirror.root().display());
        }
    }

    /// The metrics in the text exposition format, with the upstream request counts of the
    /// image clients brought up to date.
    pub fn metrics_text(&self) -> String {
        for (service, total) in self.boot.upstream_requests() {
            self.metrics.observe_upstream(service, total);
        }
        self.metrics.encode()
    }

    /// One cleanup of the master image cache (cache mode): abandoned temporary files,
    /// expired unused images, then the oldest unused ones over the size limit. `Ok(None)`:
    /// no cache in this mode.
    pub async fn clean_cache(&self) -> Result<Option<crate::cache::CleanReport>, ServiceError> {
        let Some(cache) = self.boot.cache() else {
            return Ok(None);
        };
        cache.clean(self.clock.now()).await.map(Some).map_err(|e| {
            ServiceError::Boot(BootError::Image(crate::images::ImageError::Cache {
                field: "pxe.tftp_master_path".into(),
                source: Box::new(e),
            }))
        })
    }

    /// Re-reads the Swift account's temp-URL keys (`[swift]` credentials). When the key or
    /// the account changed, the static mirror is rewritten at once, so its URLs are signed
    /// with the key in use. `Ok(None)`: nothing to read (the key is configured).
    pub async fn refresh_swift_key(self: &Arc<Self>) -> Result<Option<Refreshed>, SwiftError> {
        let Some(keys) = self.boot.swift_keys().filter(|k| k.discovers()) else {
            return Ok(None);
        };
        let refreshed = keys.refresh().await?;
        if refreshed.changed
            && let Err(e) = self.refresh_mirror().await
        {
            tracing::warn!("static mirror not rewritten after the key change: {e}");
        }
        Ok(Some(refreshed))
    }

    /// Rewrites boot.ipxe and every node's config, and removes files of nodes that are gone
    /// or have no target. Returns the number of node configs written.
    pub async fn refresh_mirror(self: &Arc<Self>) -> Result<usize, ServiceError> {
        let master = self.boot.master_script().to_string();
        let mirror = self.mirror.clone();
        if let Err(e) = blocking(move || mirror.write_master(&master)).await {
            tracing::error!(
                "cannot write {}/boot.ipxe: {e}",
                self.mirror.root().display()
            );
            self.metrics
                .mirror_writes
                .get_or_create(&ResultLabels { result: "error" })
                .inc();
        }
        let records: Vec<_> = self
            .store
            .boot_records_with_target()
            .await?
            .into_iter()
            .filter(|(r, _)| self.is_owner(&r.uuid))
            .collect();
        let live: std::collections::HashSet<_> = records.iter().map(|(r, _)| r.uuid).collect();
        let written = records.len();
        self.write_mirrors(records).await;
        let mirror = self.mirror.clone();
        let dirs = blocking(move || mirror.node_dirs())
            .await
            .unwrap_or_default();
        for uuid in dirs.into_iter().filter(|u| !live.contains(u)) {
            match self.store.indexed_node(uuid) {
                // another conductor's node, or one without a target: no config here
                Some((record, _)) => {
                    self.takeover.set_owned(uuid, false);
                    self.remove_mirror(uuid).await;
                    if !self.is_owner(&uuid) {
                        self.release_images(&record).await;
                    }
                }
                None => self.sync_mirror(uuid).await,
            }
        }
        let mirror = self.mirror.clone();
        match blocking(move || mirror.sweep_dangling_links()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} dangling links from the static mirror"),
            Err(e) => tracing::warn!("cannot sweep the static mirror: {e}"),
        }
        Ok(written)
    }

    /// Records the state of a supervised task (the conductor calls this).
    pub fn task_status(&self, task: &'static str, update: impl FnOnce(&mut TaskStatus)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        update(tasks.entry(task).or_default());
    }

    /// The database answers a cheap query within `timeout` (with SQLite, through the file
    /// that was opened: a deleted or replaced file fails the check), and every supervised
    /// task is running. Corrupt node records are reported, not counted as unhealthy (see
    /// [`Health`]).
    pub async fn health(&self, timeout: Duration) -> Health {
        let corrupt = self.store.corrupt_nodes();
        let (database_ok, database) = match tokio::time::timeout(timeout, self.store.health()).await
        {
            Ok(Ok(())) if corrupt.is_empty() => (true, "ok".to_string()),
            Ok(Ok(())) => {
                let n = corrupt.len();
                let mut uuids: Vec<&str> =
                    corrupt.iter().take(5).map(|(u, _)| u.as_str()).collect();
                if n > uuids.len() {
                    uuids.push("…");
                }
                let records = if n == 1 { "record is" } else { "records are" };
                (
                    true,
                    format!(
                        "ok, but {n} stored node {records} corrupt and skipped (see the log): {}",
                        uuids.join(", ")
                    ),
                )
            }
            Ok(Err(e)) => {
                tracing::error!("health check: database: {e}");
                (false, e.to_string())
            }
            Err(_) => {
                tracing::error!("health check: the database did not answer within {timeout:?}");
                (
                    false,
                    format!("no answer within {} ms", timeout.as_millis()),
                )
            }
        };
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Health {
            healthy: database_ok && tasks.values().all(|t| t.healthy),
            database,
            corrupt_nodes: corrupt.len(),
            tasks,
        }
    }

    /// Stops using the database (waits for connections in use).
    pub async fn close(&self) {
        self.store.close().await;
    }
}

fn json_size<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map(|v| v.len()).unwrap_or(usize::MAX)
}
