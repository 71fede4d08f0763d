//! A real HTTP image source for cache mode: serves named objects with an ETag, answers
//! `If-None-Match` with 304, counts every GET (full and conditional), and can hold
//! answers until the test opens a gate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Objects {
    /// name → (bytes, etag)
    files: Mutex<HashMap<String, (Vec<u8>, String)>>,
    full: AtomicUsize,
    conditional: AtomicUsize,
    not_modified: AtomicUsize,
    gate: tokio::sync::RwLock<()>,
}

/// The source; dropped, it stops.
pub struct Origin {
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
    let Some((bytes, etag)) = found else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        o.conditional.fetch_add(1, Ordering::SeqCst);
        if inm.to_str().unwrap_or_default() == etag {
            o.not_modified.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
        }
    }
    o.full.fetch_add(1, Ordering::SeqCst);
    // held while the test keeps the gate closed
    let _open = o.gate.read().await;
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_LENGTH, bytes.len().to_string()),
        ],
        Body::from(bytes),
    )
        .into_response()
}

impl Origin {
    pub async fn start() -> Origin {
        let objects = Arc::new(Objects::default());
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(get))
            .with_state(objects.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Origin { url, objects, task }
    }

    /// Serves `bytes` at `/<name>` with a new ETag.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let etag = format!("\"{}\"", uuid::Uuid::new_v4().simple());
        self.objects
            .files
            .lock()
            .unwrap()
            .insert(name.into(), (bytes.to_vec(), etag));
    }

    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// GETs answered with the object's bytes (downloads).
    pub fn full_gets(&self) -> usize {
        self.objects.full.load(Ordering::SeqCst)
    }

    /// GETs with `If-None-Match` (revalidations), and how many of them got 304.
    pub fn conditional_gets(&self) -> (usize, usize) {
        (
            self.objects.conditional.load(Ordering::SeqCst),
            self.objects.not_modified.load(Ordering::SeqCst),
        )
    }

    /// Holds every answer with a body until the guard is dropped.
    pub async fn close_gate(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.objects.gate.write().await
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
