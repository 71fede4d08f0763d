//! A slow HTTP image source for crash tests: serves each object at `/{name}` in small
//! chunks with a pause between two chunks, so a client can be killed while the body is
//! arriving. Sends `Content-Length` (unless the object was put with
//! [`StreamOrigin::put_unsized`]: then the body is chunked) and an `ETag`, answers a
//! matching `If-None-Match` with 304, and counts full GETs. (`support::origin` is the
//! fast one.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

struct Objects {
    /// name → (bytes, etag, whether Content-Length is sent)
    files: Mutex<HashMap<String, (Bytes, String, bool)>>,
    chunk: usize,
    pause: Duration,
    full: AtomicUsize,
}

/// The source; dropped, it stops.
pub struct StreamOrigin {
    pub url: String,
    objects: Arc<Objects>,
    task: tokio::task::JoinHandle<()>,
}

async fn get(
    State(o): State<Arc<Objects>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = o.files.lock().unwrap().get(&name).cloned();
    let Some((bytes, etag, sized)) = found else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|inm| inm.to_str().unwrap_or_default() == etag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    o.full.fetch_add(1, Ordering::SeqCst);
    let (chunk, pause) = (o.chunk, o.pause);
    let len = bytes.len();
    let body = futures_util::stream::unfold(0usize, move |at| {
        let bytes = bytes.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            if at > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let end = (at + chunk).min(bytes.len());
            Some((Ok::<_, Infallible>(bytes.slice(at..end)), end))
        }
    });
    let mut response = (
        StatusCode::OK,
        [(header::ETAG, etag)],
        Body::from_stream(body),
    )
        .into_response();
    if sized {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, len.into());
    }
    response
}

impl StreamOrigin {
    /// Starts on 127.0.0.1, sending `chunk` bytes at a time with `pause` between chunks.
    pub async fn start(chunk: usize, pause: Duration) -> StreamOrigin {
        let objects = Arc::new(Objects {
            files: Mutex::default(),
            chunk,
            pause,
            full: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(get))
            .with_state(objects.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StreamOrigin { url, objects, task }
    }

    /// Serves `bytes` at `/<name>` with a new ETag.
    pub fn put(&self, name: &str, bytes: Bytes) {
        self.insert(name, bytes, true);
    }

    /// Serves `bytes` at `/<name>` without announcing their length (a chunked body).
    pub fn put_unsized(&self, name: &str, bytes: Bytes) {
        self.insert(name, bytes, false);
    }

    fn insert(&self, name: &str, bytes: Bytes, sized: bool) {
        let etag = format!("\"{}\"", uuid::Uuid::new_v4().simple());
        self.objects
            .files
            .lock()
            .unwrap()
            .insert(name.into(), (bytes, etag, sized));
    }

    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// GETs answered with the object's bytes (whether or not the client read them all).
    pub fn full_gets(&self) -> usize {
        self.objects.full.load(Ordering::SeqCst)
    }
}

impl Drop for StreamOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
