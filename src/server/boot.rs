//! The boot listener that iPXE talks to (default 127.0.0.1:8080). Read-only and hot: it
//! never writes to the store and never calls Swift.
//!
//! * `GET /boot.ipxe`: the master script.
//! * `GET /pxelinux.cfg/{mac}`: the script of the node that owns the MAC, rendered now
//!   with fresh TempURLs; 404 for an unknown MAC or a node without a target, so the master
//!   script moves on to the next NIC. `aa-bb-…`, `01-aa-bb-…` and `aa:bb:…` are accepted.
//! * `GET /{fallback}`: `[ipxe] fallback_script`, when it is a file name, read from
//!   `[deploy] http_root`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::App;
use crate::node::Mac;

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

/// A boot-path failure: counted by reason, logged by the caller, a short text for iPXE.
fn failure(app: &App, reason: &'static str, status: StatusCode, body: &'static str) -> Response {
    app.metrics.error(reason);
    app.metrics.render("node", "error");
    (status, body).into_response()
}

fn not_found(app: &App, why: &'static str) -> Response {
    app.metrics.render("node", "not_found");
    tracing::debug!("per-MAC script not served: {why}");
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

pub(super) async fn master(State(app): State<Arc<App>>) -> Response {
    app.metrics.render("master", "ok");
    script(app.boot.master_script().to_string())
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
        return not_found(&app, "not a MAC address");
    };
    let record = match app.store.boot_record(&mac).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(&app, "no node has this MAC"),
        Err(e) => {
            tracing::error!(%mac, "boot record lookup failed: {e}");
            return failure(
                &app,
                "database_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable
",
            );
        }
    };
    match app
        .boot
        .render(&record, &mac, &mac.hexhyp(), super::unix_now())
    {
        Ok(Some(rendered)) => {
            app.metrics.tempurls.inc_by(u64::from(rendered.tempurls));
            app.metrics.render("node", "ok");
            script(rendered.script)
        }
        Ok(None) => not_found(&app, "the node has no boot target"),
        Err(e) => {
            tracing::error!(node = %record.uuid, %mac, "rendering failed: {e}");
            failure(
                &app,
                "render_failed",
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the script
",
            )
        }
    }
}

pub(super) async fn fallback_file(State(app): State<Arc<App>>) -> Response {
    let Some(path) = app.fallback_file.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read_to_string(path).await {
        Ok(text) => {
            app.metrics.render("fallback", "ok");
            script(text)
        }
        Err(e) => {
            tracing::warn!("fallback script {} unreadable: {e}", path.display());
            app.metrics.error("fallback_missing");
            (StatusCode::NOT_FOUND, "fallback script missing\n").into_response()
        }
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
