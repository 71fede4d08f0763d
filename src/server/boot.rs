//! The boot listener that iPXE talks to (default 127.0.0.1:8080). Read-only and hot: it
//! never writes to the store and never calls Swift.
//!
//! * `GET /boot.ipxe`: the master script.
//! * `GET /pxelinux.cfg/{mac}`: the script of the node that owns the MAC, rendered now
//!   with fresh TempURLs; 404 for an unknown MAC or a node without a target, so the master
//!   script moves on to the next NIC. `aa-bb-…`, `01-aa-bb-…` and `aa:bb:…` are accepted.
//! * `GET /{fallback}`: `[ipxe] fallback_script`, when it is a file name, read from
//!   `[deploy] http_root`.
//! * `GET`/`HEAD /<node uuid>/<label>`: an image the cache linked into
//!   `[deploy] http_root/<node uuid>/<label>` (Ironic's `[deploy] http_url` layout), with
//!   `Content-Length`, `ETag`, `Last-Modified`, `Accept-Ranges`, 304 for `If-None-Match` /
//!   `If-Modified-Since`, 206 for one `Range` (`If-Range` honoured), 416 for an
//!   unsatisfiable one; streamed in flat memory. Only a raw path of exactly that shape is
//!   served (canonical lowercase UUID, label `[A-Za-z0-9_.-]{1,64}` not starting with `.`,
//!   nothing percent-encoded); no symlink is followed, no directory is listed. Every other
//!   path gets the fallback or 404 as before. The mechanics, and why not `tower-http`, are
//!   in [`super::files`].
//!
//! Errors are short texts for iPXE; their code and detail go to the error report like the
//! API's.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ErrorReport, status_of};
use super::{App, files};
use crate::node::Mac;
use crate::service::{NodeScript, ServiceError};

fn script(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn not_found(why: &'static str) -> Response {
    tracing::debug!("per-MAC script not served: {why}");
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// A boot-path failure: a short text for iPXE; the report carries the code and detail.
fn failure(e: ServiceError) -> Response {
    let code = e.code();
    let mut response = (
        status_of(code),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", e.client_message()),
    )
        .into_response();
    response.extensions_mut().insert(ErrorReport {
        code,
        detail: Some(e.detail().unwrap_or_else(|| e.to_string())),
    });
    response
}

pub(super) async fn master(State(app): State<Arc<App>>) -> Response {
    script(app.service.master_script().to_string())
}

/// `52-54-00-12-34-56`, `01-52-54-00-12-34-56` (PXE's hardware-type prefix) or colons.
fn parse_config_name(name: &str) -> Option<Mac> {
    let name = if name.len() == 20 {
        name.strip_prefix("01-")?
    } else {
        name
    };
    Mac::parse(name).ok()
}

pub(super) async fn node_script(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let Some(mac) = parse_config_name(&name) else {
        app.service.metrics().render("node", "not_found");
        return not_found("not a MAC address");
    };
    match app.service.node_script(&mac).await {
        Ok(NodeScript::Script(rendered)) => script(rendered.script),
        Ok(NodeScript::UnknownMac) => not_found("no node has this MAC"),
        Ok(NodeScript::NoTarget) => not_found("the node has no boot target"),
        Err(e) => failure(e),
    }
}

/// `GET`/`HEAD /<node uuid>/<label>`: an image from `[deploy] http_root` (see
/// [`super::files`]). A path of another shape is not an image: the fallback or 404, as for
/// any other path.
pub(super) async fn image(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some((node, label)) = files::image_path(req.uri().path()) else {
        return super::boot_other(State(app), req).await;
    };
    // [ipxe] tempurl_redirect: a Swift image is a 302 to a TempURL signed now
    if app.service.boot().redirects()
        && let Ok(uuid) = uuid::Uuid::try_parse(node)
    {
        match app.service.redirect_url(uuid, label).await {
            Ok(Some(url)) => {
                return (
                    StatusCode::FOUND,
                    [
                        (header::LOCATION, url),
                        (header::CACHE_CONTROL, "no-store".to_string()),
                    ],
                )
                    .into_response();
            }
            Ok(None) => {}
            Err(e) => return failure(e),
        }
    }
    files::serve(
        app.service.mirror().root(),
        node,
        label,
        req.method(),
        req.headers(),
    )
    .await
}

pub(super) async fn fallback_file(State(app): State<Arc<App>>) -> Response {
    match app.service.fallback_script().await {
        Ok(text) => script(text),
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_accept_ironic_and_pxe_spellings() {
        let m = Mac::parse("52:54:00:12:34:56").unwrap();
        assert_eq!(parse_config_name("52-54-00-12-34-56"), Some(m));
        assert_eq!(parse_config_name("01-52-54-00-12-34-56"), Some(m));
        assert_eq!(parse_config_name("52:54:00:12:34:56"), Some(m));
        assert_eq!(parse_config_name("02-52-54-00-12-34-56"), None);
        assert_eq!(parse_config_name("boot.ipxe"), None);
    }
}
