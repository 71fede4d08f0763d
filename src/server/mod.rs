//! The two HTTP listeners: the API (`api`, JSON under `/v1`, plus `/metrics`) and the boot
//! server (`boot`, what iPXE talks to). [`run`] takes already-bound listeners and a
//! shutdown future, so tests bind `127.0.0.1:0` and stop the server when they are done.
//!
//! Only this module knows HTTP status codes ([`error`] maps every module's error to a
//! status and a stable code).

mod api;
mod boot;
pub mod error;
pub mod listen;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::boot::BootService;
use crate::config::Secret;
use crate::metrics::{HttpLabels, Metrics, ResultLabels, RouteLabels};
use crate::mirror::Mirror;
use crate::node::Target;
use crate::store::Store;
use error::{ApiError, ErrorCode};

/// Shared state of both listeners.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub boot: BootService,
    /// The static mirror in `[deploy] http_root`.
    pub mirror: Mirror,
    pub metrics: Metrics,
    /// Required `Authorization: Bearer` token, when `[api] auth_strategy = token`.
    pub api_token: Option<Secret>,
    /// `[ipxe] fallback_script` when it names a file in http_root: (route, path).
    pub fallback_route: Option<String>,
    pub fallback_file: Option<PathBuf>,
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl App {
    /// Brings a node's files in the static mirror in line with the store: written when it
    /// has a target, removed when it has none or is gone. Failures are logged and counted;
    /// the periodic refresh repairs them.
    pub async fn sync_mirror(self: &Arc<App>, uuid: Uuid) {
        match self.store.get_node(&uuid.to_string()).await {
            Ok(n) => {
                let record = crate::store::BootRecord {
                    uuid,
                    name: n.name.clone(),
                    target: n.target,
                    prepared: n.prepared.clone(),
                };
                self.write_mirror(&record, &n.macs).await
            }
            Err(crate::store::StoreError::NotFound(_)) => self.remove_mirror(uuid).await,
            Err(e) => tracing::warn!(node = %uuid, "mirror not updated: {e}"),
        }
    }

    /// Writes one node's mirror files from a record already read (or removes them when the
    /// node has nothing to boot or no MAC).
    pub async fn write_mirror(
        self: &Arc<App>,
        record: &crate::store::BootRecord,
        macs: &[crate::node::Mac],
    ) {
        let rendered = match macs.first() {
            Some(mac) if record.target != Target::None => {
                match self.boot.render(record, mac, "${mac:hexhyp}", unix_now()) {
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
        let (app, uuid, macs) = (Arc::clone(self), record.uuid, macs.to_vec());
        let result = tokio::task::spawn_blocking(move || {
            app.mirror.write_node(uuid, &macs, &rendered.script)
        })
        .await
        .expect("no panic");
        self.count_mirror_write(uuid, result);
    }

    async fn remove_mirror(self: &Arc<App>, uuid: Uuid) {
        let app = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || app.mirror.remove_node(uuid))
            .await
            .expect("no panic");
        self.count_mirror_write(uuid, result);
    }

    fn count_mirror_write(&self, uuid: Uuid, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                self.metrics
                    .mirror_writes
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
            }
            Err(e) => {
                self.metrics
                    .mirror_writes
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                tracing::error!(node = %uuid, "cannot write the static mirror in {}: {e}", self.mirror.root().display());
            }
        }
    }
}

/// Counts and times every request by route and status.
async fn observe(
    State((app, listener)): State<(Arc<App>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            listener,
            route: route.clone(),
            status,
        })
        .inc();
    app.metrics
        .http_duration
        .get_or_create(&RouteLabels { listener, route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Counts API errors by code (the body carries it).
async fn count_errors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        app.metrics.error(code.0);
    }
    response
}

fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-auth-token").and_then(|v| v.to_str().ok()));
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), token.expose().as_bytes());
    // Constant time for equal lengths; the length of the token is not a secret worth hiding.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.api_token
        && !bearer_matches(req.headers(), token)
    {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token> with the token in [api] token_file",
        )
        .into_response();
    }
    next.run(req).await
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!("health check: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn api_not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API path; see GET / for the links",
    )
    .into_response()
}

/// The API router.
pub fn api_router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/nodes", get(api::list_nodes).post(api::create_node))
        .route(
            "/v1/nodes/{node}",
            get(api::get_node)
                .patch(api::patch_node)
                .delete(api::delete_node),
        )
        .route("/v1/nodes/{node}/boot", axum::routing::put(api::set_boot))
        .route("/v1/nodes/{node}/ipxe", get(api::preview_ipxe))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/", get(api::root))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(api_not_found)
        .layer(middleware::from_fn_with_state(app.clone(), count_errors))
        .layer(middleware::from_fn_with_state(
            (app.clone(), "api"),
            observe,
        ))
        .with_state(app)
}

/// The boot router.
pub fn boot_router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/boot.ipxe", get(boot::master))
        .route("/pxelinux.cfg/{mac}", get(boot::node_script));
    if let Some(route) = &app.fallback_route {
        r = r.route(route, get(boot::fallback_file));
    }
    r.layer(middleware::from_fn_with_state(
        (app.clone(), "boot"),
        observe,
    ))
    .with_state(app)
}

/// Serves both listeners until `shutdown` completes, then stops accepting, lets requests in
/// flight finish, and returns.
pub async fn run(
    api: TcpListener,
    boot: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Scripts and API answers are small writes on keep-alive connections: with Nagle's
    // algorithm on, one could wait for the client's delayed ACK (40 ms on Linux).
    let nodelay = |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
    };
    let api_server = axum::serve(api.tap_io(nodelay), api_router(app.clone()))
        .with_graceful_shutdown(wait(rx.clone()));
    let boot_server = axum::serve(boot.tap_io(nodelay), boot_router(app.clone()))
        .with_graceful_shutdown(wait(rx.clone()));
    let refresher = tokio::spawn(crate::conductor::refresh_mirror_periodically(
        app.clone(),
        rx.clone(),
    ));
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let (a, b) = tokio::join!(api_server.into_future(), boot_server.into_future());
    let _ = refresher.await;
    a.and(b)
}
