//! Stand-ins in front of (or instead of) Keystone and Glance: a recording reverse proxy,
//! a server that answers every request with one status, a listener that never answers, and
//! a port that refuses connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
    /// `X-Subject-Token` of the answer (Keystone's new tokens).
    pub subject_token: Option<String>,
    /// `X-Auth-Token` of the request.
    pub auth_token: Option<String>,
}

/// Runs on each answer before the client gets it (e.g. to revoke a new token first).
pub type Hook = Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct ProxyState {
    upstream: String,
    own: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    hook: Option<Hook>,
}

/// A reverse proxy to `upstream` that records every request. URLs of the upstream in
/// answers (Keystone's version links) are rewritten to the proxy's.
pub struct Proxy {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let auth_token = parts
        .headers
        .get("x-auth-token")
        .map(|v| v.to_str().unwrap().to_string());
    // The proxy's own connection to the upstream is not what a test examines: a send that
    // fails is retried twice (printed, so a failing test shows it), then answered with 502.
    let mut failures = Vec::new();
    let resp = loop {
        let mut out = state
            .http
            .request(method.clone(), format!("{}{path}", state.upstream))
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                out = out.header(name.as_str(), value.as_bytes());
            }
        }
        match out.send().await {
            Ok(r) => break r,
            Err(e) => {
                let e = format!("{e:?}");
                eprintln!(
                    "proxy: {} {}{path} failed: {e}",
                    parts.method, state.upstream
                );
                failures.push(e);
                if failures.len() == 3 {
                    return Response::builder()
                        .status(StatusCode::BAD_GATEWAY)
                        .body(Body::from(format!("proxy: {}", failures.join("; "))))
                        .unwrap();
                }
            }
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path,
        status,
        subject_token: headers
            .get("x-subject-token")
            .map(|v| v.to_str().unwrap().to_string()),
        auth_token,
    };
    state.seen.lock().unwrap().push(seen.clone());
    if let Some(hook) = &state.hook {
        hook(seen).await;
    }
    let text = String::from_utf8_lossy(&bytes);
    let body = if text.contains(&state.upstream) {
        Bytes::from(text.replace(&state.upstream, &state.own))
    } else {
        bytes
    };
    let mut builder = Response::builder().status(status);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    builder.body(Body::from(body)).unwrap()
}

impl Proxy {
    pub async fn start(upstream: &str, hook: Option<Hook>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let own = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            own: own.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // a fresh connection per request: no race with an upstream that closes
                // an idle kept-alive connection just as the proxy reuses it
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            seen: seen.clone(),
            hook,
        });
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy {
            url: own,
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests with this method whose path (without the query) ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.split('?').next().unwrap().ends_with(suffix))
            .count()
    }

    /// Keystone token requests (`POST …/auth/tokens`).
    pub fn token_requests(&self) -> usize {
        self.count("POST", "/auth/tokens")
    }

    /// The tokens Keystone issued through this proxy, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.status == 201)
            .filter_map(|s| s.subject_token)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that answers every request with `status`, counting them.
pub struct FixedStatus {
    pub url: String,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FixedStatus {
    pub async fn start(status: StatusCode) -> FixedStatus {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let app = axum::Router::new().fallback(move |_m: Method, _u: Uri, _h: HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (status, "fixed answer")
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FixedStatus {
            url,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FixedStatus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener that accepts connections and never answers (a hung Glance).
pub struct Silent {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Silent { url, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port that refuses connections while the socket lives: bound, not listening.
pub fn refusing_port() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    (socket, url)
}
