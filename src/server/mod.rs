//! The two HTTP listeners: the API (`api`, JSON under `/v1`, plus `/metrics` and
//! `/healthz`) and the boot server (`boot`, what iPXE talks to). A thin edge: each handler
//! extracts the request, calls one [`Service`] operation and maps its error. [`run`] takes
//! already-bound listeners and a shutdown future, so tests bind `127.0.0.1:0` and stop the
//! server when they are done.
//!
//! Only this module knows HTTP status codes ([`error::status_of`] maps every stable error
//! code to one).

mod api;
mod boot;
pub mod error;
mod files;
pub mod listen;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::code::ErrorCode;
use crate::config::Secret;
use crate::metrics::{HttpLabels, ListenerLabels, RouteLabels};
use crate::service::Service;
use error::{ApiError, ErrorReport};

/// How long `/healthz` waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared state of both listeners: the service and the edge's own settings.
#[derive(Debug)]
pub struct App {
    pub service: Arc<Service>,
    /// Required `Authorization: Bearer` token, when `[api] auth_strategy = token`.
    pub api_token: Option<Secret>,
    /// `/<name>` of `[ipxe] fallback_script` when it is a file in http_root.
    pub fallback_route: Option<String>,
    /// Longest time an API request may take.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_size: usize,
}

/// What [`observe`] needs per listener, looked up once when the router is built.
#[derive(Clone)]
struct Observed {
    app: Arc<App>,
    listener: &'static str,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Observed {
    fn new(app: &Arc<App>, listener: &'static str) -> Observed {
        let in_flight = app
            .service
            .metrics()
            .in_flight
            .get_or_create(&ListenerLabels { listener })
            .clone();
        Observed {
            app: app.clone(),
            listener,
            in_flight,
        }
    }
}

/// Counts and times every request by route and status, and reports its errors (see
/// [`report_errors`]). One middleware for both, because the boot path is hot.
async fn observe(State(o): State<Observed>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    o.in_flight.inc();
    // Decremented also when the client goes away and the future is dropped.
    struct Done(prometheus_client::metrics::gauge::Gauge);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _done = Done(o.in_flight.clone());
    let mut response = next.run(req).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let route = matched.as_ref().map_or(uri.path(), |m| m.as_str());
        response = report_errors(&o.app, o.listener, &method, route, response).await;
    }
    let route = matched
        .as_ref()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let metrics = o.app.service.metrics();
    let listener = o.listener;
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            listener,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { listener, route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The one place where errors are counted and their internal detail is logged, with the
/// route. Also turns axum's own plain-text rejections (413, a path segment that is not
/// UTF-8, 405) into the JSON error every other API error uses.
async fn report_errors(
    app: &App,
    listener: &'static str,
    method: &axum::http::Method,
    route: &str,
    mut response: Response,
) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if listener == "api"
        && (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<ErrorReport>().is_none()
        && !is_json
    {
        // A rejection by axum itself (body limit, a path segment that is not UTF-8, a
        // method the route lacks) becomes the JSON error every other answer has.
        let (code, message) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => (
                ErrorCode::BodyTooLarge,
                format!(
                    "the request body is larger than {} bytes ([api] max_body_size)",
                    app.max_body_size
                ),
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {route}"),
            ),
            StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such API path".to_string()),
            _ => {
                let body = axum::body::to_bytes(std::mem::take(response.body_mut()), 4096)
                    .await
                    .unwrap_or_default();
                (
                    ErrorCode::InvalidQuery,
                    format!("invalid request: {}", String::from_utf8_lossy(&body)),
                )
            }
        };
        response = ApiError::new(code, message).into_response();
    }
    if let Some(report) = response.extensions().get::<ErrorReport>() {
        app.service.metrics().error(report.code.as_str());
        let status = response.status().as_u16();
        match &report.detail {
            Some(detail) => {
                tracing::error!(listener, %method, route, status, code = %report.code, "{detail}")
            }
            None => {
                tracing::debug!(listener, %method, route, status, code = %report.code, "client error")
            }
        }
    }
    response
}

/// `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110) or
/// `X-Auth-Token`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim_start_matches(' '));
    let presented = bearer.or_else(|| headers.get("x-auth-token").and_then(|v| v.to_str().ok()));
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())))
}

async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.api_token
        && !bearer_matches(req.headers(), token)
    {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "send Authorization: Bearer <token> with the token in [api] token_file",
        )
        .into_response();
    }
    next.run(req).await
}

/// Bounds the time of an API request.
async fn request_timeout(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {} s ([api] request_timeout); retry later",
                app.request_timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.service.metrics_text(),
    )
        .into_response()
}

/// 200 when the database answers and every periodic task runs, else 503; the body says
/// which check failed.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let health = app.service.health(HEALTH_TIMEOUT).await;
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if health.healthy { "ok" } else { "unhealthy" },
        "checks": {
            "database": health.database,
            "corrupt_nodes": health.corrupt_nodes,
            "tasks": health.tasks,
        },
    });
    (status, axum::Json(body)).into_response()
}

async fn api_not_found() -> Response {
    ApiError::new(
        ErrorCode::NotFound,
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
        .route("/v1/conductors", get(api::list_conductors))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/", get(api::root))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(api_not_found)
        .layer(middleware::from_fn_with_state(app.clone(), request_timeout))
        .layer(DefaultBodyLimit::max(app.max_body_size))
        .layer(middleware::from_fn_with_state(
            Observed::new(&app, "api"),
            observe,
        ))
        .with_state(app)
}

/// Anything else on the boot listener: the fallback script when it is a file, else 404.
async fn boot_other(State(app): State<Arc<App>>, req: Request) -> Response {
    match &app.fallback_route {
        Some(route) if req.uri().path() == route => boot::fallback_file(State(app)).await,
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The boot router.
pub fn boot_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot::master))
        .route("/pxelinux.cfg/{mac}", get(boot::node_script))
        .route("/{node}/{label}", get(boot::image))
        .fallback(boot_other)
        .layer(middleware::from_fn_with_state(
            Observed::new(&app, "boot"),
            observe,
        ))
        .with_state(app)
}

/// The limits of both listeners and the shutdown grace period.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub api: listen::ListenerLimits,
    pub boot: listen::ListenerLimits,
    /// How long a graceful shutdown waits for requests in flight.
    pub grace: Duration,
}

/// Serves both listeners until `shutdown` completes, then stops accepting, lets requests in
/// flight finish for at most the grace period, and returns.
pub async fn run(
    api: TcpListener,
    boot: TcpListener,
    app: Arc<App>,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics = |listener: &'static str| {
        let m = app.service.metrics();
        let labels = ListenerLabels { listener };
        listen::ListenerMetrics {
            refused: m.connections_refused.get_or_create(&labels).clone(),
            open: m.connections_open.get_or_create(&labels).clone(),
        }
    };
    let api_server = listen::serve(
        api,
        api_router(app.clone()),
        settings.api,
        metrics("api"),
        wait(rx.clone()),
        settings.grace,
    );
    let boot_server = listen::serve(
        boot,
        boot_router(app.clone()),
        settings.boot,
        metrics("boot"),
        wait(rx.clone()),
        settings.grace,
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let (a, b) = tokio::join!(api_server, boot_server);
    a.and(b)
}
