//! The REST API, JSON under `/v1`, on its own listener (default 127.0.0.1:6385).
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
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::error::{ApiError, parse_json};
use crate::metrics::PrepareLabels;
use crate::node::{
    self, BootMode, DriverInfo, InstanceInfo, Mac, Node, State as NodeState, Target,
};
use crate::store::{NewNode, NodeFilter, StoreError};

fn parse_enum<T: std::str::FromStr<Err = String>>(field: &str, text: &str) -> Result<T, ApiError> {
    text.parse().map_err(|e: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {e}"),
        )
        .field(field)
    })
}

/// The writable fields of a node, as sent by clients.
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

fn refuse_read_only(body: &Value) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    for (field, why) in READ_ONLY {
        if obj.contains_key(*field) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "read_only_field",
                format!("{field} cannot be written: {why}"),
            )
            .field(*field));
        }
    }
    Ok(())
}

fn validate_fields(f: &NodeFields) -> Result<(Option<String>, Vec<Mac>, BootMode), ApiError> {
    if let Some(name) = &f.name {
        node::validate_name(name)?;
    }
    let macs = node::parse_macs(&f.macs)?;
    let boot_mode = match &f.boot_mode {
        Some(m) => parse_enum("boot_mode", m)?,
        None => BootMode::Bios,
    };
    if let Some(args) = f
        .instance_info
        .as_ref()
        .and_then(|i| i.kernel_append_params.as_deref())
    {
        node::validate_kernel_args("instance_info.kernel_append_params", args)?;
    }
    Ok((f.name.clone(), macs, boot_mode))
}

fn created(node: Node) -> Response {
    let location = format!("/v1/nodes/{}", node.uuid);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(node),
    )
        .into_response()
}

pub(super) async fn create_node(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = parse_json(&body)?;
    refuse_read_only(&value)?;
    let fields: NodeFields = parse_json(&body)?;
    let (name, macs, boot_mode) = validate_fields(&fields)?;
    let node = app
        .store
        .create_node(NewNode {
            name,
            macs,
            boot_mode,
            driver_info: fields.driver_info.unwrap_or_default(),
            instance_info: fields.instance_info.unwrap_or_default(),
        })
        .await?;
    tracing::info!(node = %node.uuid, name = ?node.name, "node created");
    Ok(created(node))
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
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
        mac: q
            .mac
            .as_deref()
            .map(|m| {
                Mac::parse(m).map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_mac", format!("mac: {e}"))
                        .field("mac")
                })
            })
            .transpose()?,
        name: q.name,
    };
    let nodes = app.store.list_nodes(&filter).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

pub(super) async fn get_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<Json<Node>, ApiError> {
    Ok(Json(app.store.get_node(&ident).await?))
}

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

pub(super) async fn patch_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    body: Bytes,
) -> Result<Json<Node>, ApiError> {
    let patch: Value = parse_json(&body)?;
    refuse_read_only(&patch)?;
    let mut node = app.store.get_node(&ident).await?;
    let mut doc = json!({
        "name": node.name,
        "macs": node.macs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "boot_mode": node.boot_mode,
        "driver_info": node.driver_info,
        "instance_info": node.instance_info,
    });
    merge_patch(&mut doc, &patch);
    let fields: NodeFields = parse_json(doc.to_string().as_bytes())?;
    let (name, macs, boot_mode) = validate_fields(&fields)?;
    node.name = name;
    node.macs = macs;
    node.boot_mode = boot_mode;
    node.driver_info = fields.driver_info.unwrap_or_default();
    node.instance_info = fields.instance_info.unwrap_or_default();
    let node = app.store.update_node(&node).await?;
    // MAC changes move the mirror's links at once; image changes wait for the next prepare.
    app.sync_mirror(node.uuid).await;
    tracing::info!(node = %node.uuid, "node updated");
    Ok(Json(node))
}

pub(super) async fn delete_node(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node = app.store.get_node(&ident).await?;
    app.store.delete_node(node.uuid).await?;
    app.sync_mirror(node.uuid).await;
    tracing::info!(node = %node.uuid, "node deleted");
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
    let mut node = app.store.get_node(&ident).await?;
    let now = super::unix_now();
    let outcome = app.boot.prepare(&node, target, now).await;
    let labels = PrepareLabels {
        target: target.as_str(),
        result: if outcome.is_ok() { "ok" } else { "failed" },
    };
    app.metrics.prepares.get_or_create(&labels).inc();
    match outcome {
        Ok(prepared) => {
            node.target = target;
            node.prepared = prepared;
            node.state = if target == Target::None {
                NodeState::Idle
            } else {
                NodeState::Ready
            };
            node.last_error = None;
            let node = app.store.update_node(&node).await?;
            app.sync_mirror(node.uuid).await;
            tracing::info!(node = %node.uuid, %target, "boot prepared");
            Ok(Json(node))
        }
        Err(e) => {
            let err = ApiError::from(e);
            tracing::warn!(node = %node.uuid, %target, code = err.code, "boot preparation failed: {}", err.message);
            // Record the failure; the previous target stays in force.
            let message = format!("preparing target {target} failed: {}", err.message);
            for _ in 0..3 {
                node.state = NodeState::Failed;
                node.last_error = Some(message.clone());
                match app.store.update_node(&node).await {
                    Err(StoreError::Conflict(_)) => {
                        node = app.store.get_node(&node.uuid.to_string()).await?
                    }
                    Err(other) => {
                        tracing::error!(node = %node.uuid, "cannot record the failure: {other}")
                    }
                    Ok(_) => break,
                }
            }
            Err(err)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IpxeQuery {
    mac: Option<String>,
}

pub(super) async fn preview_ipxe(
    State(app): State<Arc<App>>,
    Path(ident): Path<String>,
    Query(q): Query<IpxeQuery>,
) -> Result<Response, ApiError> {
    let node = app.store.get_node(&ident).await?;
    let mac = match q.mac {
        Some(m) => Mac::parse(&m).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_mac", format!("mac: {e}")).field("mac")
        })?,
        None => *node.macs.first().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_macs",
                format!("node {} has no MACs; add one with PATCH", node.uuid),
            )
        })?,
    };
    let record = crate::store::BootRecord {
        uuid: node.uuid,
        name: node.name.clone(),
        target: node.target,
        prepared: node.prepared.clone(),
    };
    let rendered = app
        .boot
        .render(&record, &mac, &mac.hexhyp(), super::unix_now())?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_boot_target",
                format!(
                    "node {} has no boot target; PUT /v1/nodes/{}/boot first",
                    node.uuid, node.uuid
                ),
            )
        })?;
    app.metrics.tempurls.inc_by(u64::from(rendered.tempurls));
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
    Json(json!({"name": "ironboot", "version": env!("CARGO_PKG_VERSION"), "links": links}))
}
