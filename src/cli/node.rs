//! `ironboot node …`: manage nodes through the REST API. Tables for people, `--json` for
//! scripts.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::CliError;
use super::client::ApiClient;
use super::progress::Display;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// URL of the ironboot API.
    #[arg(
        long,
        global = true,
        env = "IRONBOOT_URL",
        default_value = "http://127.0.0.1:6385"
    )]
    url: String,
    /// File holding the API token ([api] auth_strategy = token).
    #[arg(long, global = true, env = "IRONBOOT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: NodeCommand,
}

/// Fields shared by create and update.
#[derive(Debug, Args, Default)]
struct NodeFieldArgs {
    /// Unique name (letters, digits, -._~).
    #[arg(long)]
    name: Option<String>,
    /// A MAC address of the node; repeat for several. On update, replaces the list.
    #[arg(long = "mac", value_name = "MAC")]
    macs: Vec<String>,
    /// bios or uefi.
    #[arg(long)]
    boot_mode: Option<String>,
    /// driver_info.deploy_kernel: swift://CONTAINER/OBJECT or an http(s) URL.
    #[arg(long, value_name = "REF")]
    deploy_kernel: Option<String>,
    /// driver_info.deploy_ramdisk.
    #[arg(long, value_name = "REF")]
    deploy_ramdisk: Option<String>,
    /// instance_info.kernel.
    #[arg(long, value_name = "REF")]
    kernel: Option<String>,
    /// instance_info.ramdisk.
    #[arg(long, value_name = "REF")]
    ramdisk: Option<String>,
    /// instance_info.kernel_append_params (overrides [pxe] kernel_append_params).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    kernel_append_params: Option<String>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Register a node.
    Create(NodeFieldArgs),
    /// List nodes (every page: the API's `next` links are followed).
    List {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a node (by UUID or name).
    Show { node: String },
    /// Change a node's fields.
    Update {
        node: String,
        #[command(flatten)]
        fields: NodeFieldArgs,
        /// Remove a field: name, deploy_kernel, deploy_ramdisk, kernel, ramdisk or
        /// kernel_append_params. Repeatable.
        #[arg(long, value_name = "FIELD")]
        unset: Vec<String>,
    },
    /// Delete a node.
    Delete { node: String },
    /// Prepare and set what the node boots next: none, deploy, instance or local.
    Boot {
        node: String,
        #[arg(long)]
        target: String,
        /// Follow a preparation that continues in the background (cache mode) until the
        /// node is ready or failed, with its progress on stderr; exit 1 when it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Print the iPXE script the node gets now.
    Ipxe {
        node: String,
        #[arg(long)]
        mac: Option<String>,
    },
}

fn fields_json(f: &NodeFieldArgs, unset: &[String]) -> Result<Value, CliError> {
    let mut body = Map::new();
    let mut driver = Map::new();
    let mut instance = Map::new();
    if let Some(n) = &f.name {
        body.insert("name".into(), json!(n));
    }
    if !f.macs.is_empty() {
        body.insert("macs".into(), json!(f.macs));
    }
    if let Some(m) = &f.boot_mode {
        body.insert("boot_mode".into(), json!(m));
    }
    for (in_driver, key, value) in [
        (true, "deploy_kernel", &f.deploy_kernel),
        (true, "deploy_ramdisk", &f.deploy_ramdisk),
        (false, "kernel", &f.kernel),
        (false, "ramdisk", &f.ramdisk),
        (false, "kernel_append_params", &f.kernel_append_params),
    ] {
        if let Some(v) = value {
            let map = if in_driver {
                &mut driver
            } else {
                &mut instance
            };
            map.insert(key.into(), json!(v));
        }
    }
    for field in unset {
        match field.as_str() {
            "name" => {
                body.insert("name".into(), Value::Null);
            }
            "deploy_kernel" | "deploy_ramdisk" => {
                driver.insert(field.clone(), Value::Null);
            }
            "kernel" | "ramdisk" | "kernel_append_params" => {
                instance.insert(field.clone(), Value::Null);
            }
            other => {
                return Err(CliError::Usage(format!(
                    "--unset {other}: use name, deploy_kernel, deploy_ramdisk, kernel, ramdisk or kernel_append_params"
                )));
            }
        }
    }
    if !driver.is_empty() {
        body.insert("driver_info".into(), Value::Object(driver));
    }
    if !instance.is_empty() {
        body.insert("instance_info".into(), Value::Object(instance));
    }
    Ok(Value::Object(body))
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(super) fn table(
    out: &mut dyn Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row.clone()))?;
    }
    Ok(())
}

fn show(out: &mut dyn Write, node: &Value) -> std::io::Result<()> {
    let fields = [
        "uuid",
        "name",
        "macs",
        "boot_mode",
        "target",
        "state",
        "last_error",
        "created_at",
        "updated_at",
    ];
    for f in fields {
        writeln!(out, "{f:<34}{}", text(&node[f]))?;
    }
    for doc in ["driver_info", "instance_info"] {
        if let Some(map) = node[doc].as_object() {
            for (k, v) in map {
                writeln!(out, "{:<34}{}", format!("{doc}.{k}"), text(v))?;
            }
        }
    }
    if let Some(p) = node.get("prepared").and_then(Value::as_object) {
        for (k, v) in p {
            writeln!(out, "{:<34}{}", format!("prepared.{k}"), text(v))?;
        }
    }
    Ok(())
}

/// How often `node boot --wait` asks for the node.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Polls the node (by UUID) while it is `preparing`, showing its `progress` on stderr;
/// returns the node as it ended.
async fn follow_preparation(client: &ApiClient, mut node: Value) -> Result<Value, CliError> {
    let uuid = text(&node["uuid"]);
    let path = node_path(&uuid);
    let mut display: Option<Display> = None;
    while node["state"] == "preparing" {
        let shown = display.get_or_insert_with(|| Display::stderr(format!("node {uuid}")));
        let progress = &node["progress"];
        let phase = match progress["target"].as_str() {
            Some(t) => format!("preparing {t}"),
            None => "preparing".into(),
        };
        let bytes = progress["bytes_done"]
            .as_u64()
            .map(|done| (done, progress["bytes_total"].as_u64()));
        shown.update(std::time::Instant::now(), &phase, bytes);
        tokio::time::sleep(POLL).await;
        node = client.json(Method::GET, &path, &[], None).await?;
    }
    if let Some(d) = display {
        d.finish(&text(&node["state"]));
    }
    Ok(node)
}

fn node_path(node: &str) -> String {
    format!(
        "/v1/nodes/{}",
        percent_encoding::utf8_percent_encode(node, percent_encoding::NON_ALPHANUMERIC)
    )
}

pub(super) fn run(args: NodeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = ApiClient::from_args(&args.url, args.token_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    let io = |e: std::io::Error| CliError::Io(e);
    runtime.block_on(async {
        let print_node = |out: &mut dyn Write, v: &Value| -> Result<(), CliError> {
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap()).map_err(io)
            } else {
                show(out, v).map_err(io)
            }
        };
        match &args.command {
            NodeCommand::Create(fields) => {
                let body = fields_json(fields, &[])?;
                let node = client
                    .json(Method::POST, "/v1/nodes", &[], Some(&body))
                    .await?;
                print_node(out, &node)
            }
            NodeCommand::List {
                target,
                state,
                mac,
                name,
            } => {
                let mut q = Vec::new();
                for (k, v) in [
                    ("target", target),
                    ("state", state),
                    ("mac", mac),
                    ("name", name),
                ] {
                    if let Some(v) = v {
                        q.push((k, v.clone()));
                    }
                }
                let nodes = client.list_all("/v1/nodes", q).await?;
                if args.json {
                    let list = json!({ "nodes": nodes });
                    return writeln!(out, "{}", serde_json::to_string_pretty(&list).unwrap())
                        .map_err(io);
                }
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        ["uuid", "name", "macs", "boot_mode", "target", "state"]
                            .iter()
                            .map(|f| text(&n[*f]))
                            .collect()
                    })
                    .collect();
                table(
                    out,
                    &["UUID", "NAME", "MACS", "MODE", "TARGET", "STATE"],
                    &rows,
                )
                .map_err(io)
            }
            NodeCommand::Show { node } => {
                let v = client
                    .json(Method::GET, &node_path(node), &[], None)
                    .await?;
                print_node(out, &v)
            }
            NodeCommand::Update {
                node,
                fields,
                unset,
            } => {
                let body = fields_json(fields, unset)?;
                if body.as_object().is_some_and(Map::is_empty) {
                    return Err(CliError::Usage(
                        "nothing to update: give a field option or --unset".into(),
                    ));
                }
                let v = client
                    .json(Method::PATCH, &node_path(node), &[], Some(&body))
                    .await?;
                print_node(out, &v)
            }
            NodeCommand::Delete { node } => {
                client
                    .send(Method::DELETE, &node_path(node), &[], None)
                    .await?;
                if !args.json {
                    writeln!(out, "deleted {node}").map_err(io)?;
                }
                Ok(())
            }
            NodeCommand::Boot { node, target, wait } => {
                let v = client
                    .json(
                        Method::PUT,
                        &format!("{}/boot", node_path(node)),
                        &[],
                        Some(&json!({ "target": target })),
                    )
                    .await?;
                if !*wait {
                    return print_node(out, &v);
                }
                let v = follow_preparation(&client, v).await?;
                print_node(out, &v)?;
                match v["state"].as_str() {
                    Some("failed") => Err(CliError::Runtime(format!(
                        "node {}: {}",
                        text(&v["uuid"]),
                        v["last_error"]
                            .as_str()
                            .unwrap_or("the preparation failed (no last_error)")
                    ))),
                    _ => Ok(()),
                }
            }
            NodeCommand::Ipxe { node, mac } => {
                let q: Vec<(&str, String)> = mac.iter().map(|m| ("mac", m.clone())).collect();
                let (_, script) = client
                    .send(Method::GET, &format!("{}/ipxe", node_path(node)), &q, None)
                    .await?;
                out.write_all(script.as_bytes()).map_err(io)
            }
        }
    })
}
