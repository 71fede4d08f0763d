//! The REST API, JSON under `/v1`, on its own listener (default 127.0.0.1:6385). Each
//! handler extracts the request, calls one service operation and maps its error.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/nodes` | create a node |
//! | `GET /v1/nodes?target=&state=&mac=&name=` | list nodes |
//! | `GET /v1/nodes/{node}` | a node by UUID or name |
//! | `PATCH /v1/nodes/{node}` | JSON merge patch (RFC 7396) of name, macs, boot_mode, driver_info, instance_info |
//! | `DELETE /v1/nodes/{node}` | delete a node and its mirror files |
//! | `PUT /v1/nodes/{node}/boot` | `{"target": "none|deploy|instance|local"}`: prepare and set the boot target |
//! | `GET /v1/nodes/{node}/ipxe[?mac=]` | the script the node would get now |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::error::{ApiError, parse_json};
use crate::code::ErrorCode;
use crate::node::{FieldError, Mac, Node, Target};
use crate::store::NodeFilter;

fn parse_enum<T: std::str::FromStr<Err = String>>(field: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|e: String| FieldError::new(field, e).into())
}

fn parse_mac(text: &str) -> Result<Mac, ApiError> {
    Mac::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidMac, format!("mac: {e}")).field("mac"))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
}

pub(super) async fn create_node(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = parse_json(&body)?;
    let node = app.service.create_node(&value).await?;
    let location = format!("/v1/nodes/{}", node.uuid);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(node),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    target: Option<String>,
    state: Option<String>,
    mac: Option<String>,
    name: Option<String>,
}

pub(super) async fn list_nodes(
    State(app): State<Arc<App>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let filter = NodeFilter {
        target: q
            .target
            .as_deref()
            .map(|t| parse_enum("target", t))
            .transpose()?,
        state: q
            .state
            .as_deref()
            .map(|s| parse_enum("state", s))
            .transpose()?,
        mac: q.mac.as_deref().map(parse_mac).transpose()?,
        name: q.name,
    };
    let nodes = app.service.list_nodes(&filter).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

pub(super) async fn get_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<Json<Node>, ApiError> {
    Ok(Json(app.service.get_node(&ident).await?))
}

pub(super) async fn patch_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    body: Bytes,
) -> Result<Json<Node>, ApiError> {
    let patch: Value = parse_json(&body)?;
    Ok(Json(app.service.update_node(&ident, &patch).await?))
}

pub(super) async fn delete_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.service.delete_node(&ident).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootRequest {
    target: String,
}

pub(super) async fn set_boot(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    body: Bytes,
) -> Result<Json<Node>, ApiError> {
    let req: BootRequest = parse_json(&body)?;
    let target: Target = parse_enum("target", &req.target)?;
    Ok(Json(app.service.set_boot(&ident, target).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IpxeQuery {
    mac: Option<String>,
}

pub(super) async fn preview_ipxe(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    q: Result<Query<IpxeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mac = query(q)?.mac.as_deref().map(parse_mac).transpose()?;
    let rendered = app.service.preview_script(&ident, mac).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        rendered.script,
    )
        .into_response())
}

pub(super) async fn root() -> Json<Value> {
    let mut links = BTreeMap::new();
    links.insert("nodes", "/v1/nodes");
    links.insert("metrics", "/metrics");
    links.insert("health", "/healthz");
    Json(json!({"name": "ironboot", "version": env!("CARGO_PKG_VERSION"), "links": links}))
}
