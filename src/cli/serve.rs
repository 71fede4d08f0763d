//! `ironboot serve`: load and validate everything, open the database, bind both listeners,
//! then serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Cli, CliError};
use crate::boot::BootService;
use crate::config::{ConfigError, ConfigErrors, Settings};
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::server::{self, App};
use crate::store::Store;

fn config_error(option: &str, message: impl Into<String>) -> CliError {
    CliError::Config(ConfigErrors(vec![ConfigError::option(option, message)]))
}

fn read_template(option: &str, path: Option<&std::path::Path>) -> Result<Option<String>, CliError> {
    path.map(|p| {
        std::fs::read_to_string(p)
            .map_err(|e| config_error(option, format!("cannot read {}: {e}", p.display())))
    })
    .transpose()
}

/// `[ipxe] fallback_script` is served by ironboot when it is a plain file name.
fn fallback_route(settings: &Settings) -> Option<(String, std::path::PathBuf)> {
    let name = settings.options.ipxe.fallback_script.as_deref()?;
    let plain =
        !name.contains("://") && !name.contains('/') && !name.starts_with('.') && !name.is_empty();
    plain.then(|| {
        (
            format!("/{name}"),
            settings.options.deploy.http_root.join(name),
        )
    })
}

/// Everything `serve` does before it binds a port; also used by tests.
pub async fn build_app(settings: &Settings) -> Result<Arc<App>, CliError> {
    let o = &settings.options;
    let boot_script = read_template("pxe.ipxe_boot_script", o.pxe.ipxe_boot_script.as_deref())?;
    let node_template = read_template(
        "pxe.ipxe_config_template",
        o.pxe.ipxe_config_template.as_deref(),
    )?;
    let boot = BootService::new(settings, boot_script, node_template).map_err(|e| {
        let option =
            match &e {
                crate::boot::BootError::Render(crate::ipxe::IpxeError::Template {
                    name, ..
                }) if name == "boot.ipxe" => "pxe.ipxe_boot_script",
                crate::boot::BootError::Render(crate::ipxe::IpxeError::Template { .. }) => {
                    "pxe.ipxe_config_template"
                }
                crate::boot::BootError::Render(crate::ipxe::IpxeError::UnsafeUrl { .. }) => {
                    "ipxe.fallback_script"
                }
                _ => "pxe.kernel_append_params",
            };
        config_error(option, e.to_string())
    })?;
    let mirror = Mirror::new(&o.deploy.http_root);
    let root = mirror.root().to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&root))
        .await
        .expect("no panic")
        .map_err(|e| {
            CliError::Runtime(format!(
                "cannot create deploy.http_root {}: {e}",
                o.deploy.http_root.display()
            ))
        })?;
    let store = Store::open(&settings.database, o.database.max_pool_size)
        .await
        .map_err(|e| {
            CliError::Runtime(format!("database {}: {e}", settings.database.redacted()))
        })?;
    let (fallback_route, fallback_file) = fallback_route(settings).unzip();
    Ok(Arc::new(App {
        store,
        boot,
        mirror,
        metrics: Metrics::new(),
        api_token: settings.api_token.clone(),
        fallback_route,
        fallback_file,
    }))
}

/// Pending connections the kernel queues for each listener (capped by
/// net.core.somaxconn). A boot storm opens connections by the thousand at once; with
/// tokio's default of 128 the overflow waits for TCP retransmissions.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, option: &str) -> Result<tokio::net::TcpListener, CliError> {
    let fail = |e: std::io::Error| {
        CliError::Runtime(format!(
            "cannot listen on {addr}: {e}; change [{option}] host_ip or port"
        ))
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

pub(super) fn run(cli: &Cli, err: &mut dyn std::io::Write) -> Result<(), CliError> {
    let loaded = super::load_config(cli, err)?;
    super::init_tracing(cli)?;
    let settings = loaded.settings;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    runtime.block_on(async {
        let app = build_app(&settings).await?;
        let o = &settings.options;
        let api = bind(SocketAddr::new(o.api.host_ip, o.api.port), "api").await?;
        let boot = bind(SocketAddr::new(o.httpboot.host_ip, o.httpboot.port), "httpboot").await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            api = %api.local_addr().map_err(CliError::Io)?,
            boot = %boot.local_addr().map_err(CliError::Io)?,
            mode = if o.ipxe.use_swift { "swift" } else { "cache" },
            database = %settings.database.redacted(),
            http_root = %o.deploy.http_root.display(),
            auth = ?o.api.auth_strategy,
            "ironboot serving"
        );
        if let Some(swift) = &settings.swift {
            tracing::info!(endpoint = %swift.public_endpoint, internal = %swift.internal_endpoint, account = %swift.account, digest = %swift.digest, duration = swift.duration, "Swift TempURLs");
        }
        let store = app.store.clone();
        let result = server::run(api, boot, app, shutdown_signal()).await;
        store.close().await;
        tracing::info!("stopped");
        result.map_err(|e| CliError::Runtime(format!("server failed: {e}")))
    })
}
