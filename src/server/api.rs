//! The REST API, JSON under `/v1`, on its own listener (default 127.0.0.1:6385). Each
//! handler extracts the request, calls one service operation and maps its error.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/nodes` | create a node |
//! | `GET /v1/nodes?target=&state=&mac=&name=&limit=&marker=&sort_key=&sort_dir=` | list nodes, a page at a time (`next` links the next page) |
//! | `GET /v1/nodes/{node}` | a node by UUID or name |
//! | `PATCH /v1/nodes/{node}` | JSON merge patch (RFC 7396) of name, macs, boot_mode, driver_info, instance_info |
//! | `DELETE /v1/nodes/{node}` | delete a node and its mirror files |
//! | `PUT /v1/nodes/{node}/boot` | `{"target": "none|deploy|instance|local"}`: prepare and set the boot target |
//! | `GET /v1/nodes/{node}/ipxe[?mac=]` | the script the node would get now |
//! | `GET /v1/conductors[?limit=&marker=]` | the registered conductors, alive or not, and the nodes the ring gives each |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::error::{ApiError, parse_json};
use crate::code::ErrorCode;
use crate::node::{FieldError, Mac, Node, Target};
use crate::store::{NodeFilter, Paging};

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

/// Filters and Ironic's paging parameters. `limit` defaults to, and may not exceed,
/// `[api] max_limit`; `marker` is the uuid of the last node of the previous page;
/// `sort_key` is `created_at` (default), `updated_at`, `uuid` or `name`; `sort_dir` is
/// `asc` (default) or `desc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    target: Option<String>,
    state: Option<String>,
    mac: Option<String>,
    name: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
}

fn invalid_query(field: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, format!("{field}: {message}")).field(field)
}

fn parse_query<T: std::str::FromStr<Err = String>>(
    field: &str,
    text: Option<&str>,
) -> Result<Option<T>, ApiError> {
    text.map(|t| t.parse().map_err(|e| invalid_query(field, e)))
        .transpose()
}

/// The link to the next page, as Ironic writes it: the same query with `limit` and
/// `marker`, as a full URL on the host the client addressed (a relative one when the
/// request named no usable host).
fn next_link(headers: &HeaderMap, q: &ListQuery, limit: usize, marker: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("target", &q.target),
        ("state", &q.state),
        ("mac", &q.mac),
        ("name", &q.name),
        ("sort_key", &q.sort_key),
        ("sort_dir", &q.sort_dir),
    ] {
        if let Some(v) = value {
            query.append_pair(key, v);
        }
    }
    query.append_pair("limit", &limit.to_string());
    query.append_pair("marker", marker);
    let path_and_query = format!("/v1/nodes?{}", query.finish());
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| url::Url::parse(&format!("http://{host}/")).ok())
        .filter(|u| {
            u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
        });
    match base.and_then(|b| b.join(&path_and_query).ok()) {
        Some(url) => url.to_string(),
        None => path_and_query,
    }
}

pub(super) async fn list_nodes(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q
        .limit
        .as_deref()
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                invalid_query("limit", format!("{l:?} is not a whole number of nodes"))
            })
        })
        .transpose()?;
    let paging = Paging {
        limit,
        marker: q.marker.clone(),
        sort_key: parse_query("sort_key", q.sort_key.as_deref())?.unwrap_or_default(),
        sort_dir: parse_query("sort_dir", q.sort_dir.as_deref())?.unwrap_or_default(),
    };
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
        name: q.name.clone(),
        uuids: None,
    };
    let page = app.service.list_nodes(&filter, &paging).await?;
    let mut body = json!({ "nodes": page.nodes });
    if let (Some(marker), Some(limit)) = (&page.next_marker, page.limit) {
        body["next"] = json!(next_link(&headers, &q, limit, marker));
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConductorQuery {
    limit: Option<String>,
    marker: Option<String>,
}

/// `GET /v1/conductors`: every registered conductor by hostname, paged like nodes
/// (`limit` up to `[api] max_limit`, `marker` = the last hostname of the previous page).
pub(super) async fn list_conductors(
    State(app): State<Arc<App>>,
    q: Result<Query<ConductorQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q
        .limit
        .as_deref()
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                invalid_query(
                    "limit",
                    format!("{l:?} is not a whole number of conductors"),
                )
            })
        })
        .transpose()?;
    let (conductors, next) = app
        .service
        .list_conductors(limit, q.marker.as_deref())
        .await?;
    let mut body = json!({ "conductors": conductors });
    if let Some(marker) = next {
        let marker =
            percent_encoding::utf8_percent_encode(&marker, percent_encoding::NON_ALPHANUMERIC);
        body["next"] = json!(match limit {
            Some(l) => format!("/v1/conductors?limit={l}&marker={marker}"),
            None => format!("/v1/conductors?marker={marker}"),
        });
    }
    Ok(Json(body))
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
) -> Result<(StatusCode, Json<Node>), ApiError> {
    let req: BootRequest = parse_json(&body)?;
    let target: Target = parse_enum("target", &req.target)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(app.service.set_boot(&ident, target).await?),
    ))
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
    links.insert("conductors", "/v1/conductors");
    links.insert("metrics", "/metrics");
    links.insert("health", "/healthz");
    Json(json!({"name": "ironboot", "version": env!("CARGO_PKG_VERSION"), "links": links}))
}
