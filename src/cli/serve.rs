//! `ironboot serve`, the composition root: load and validate everything, build the
//! service, bind both listeners, spawn the conductor's periodic tasks next to the servers,
//! then serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Cli, CliError};
use crate::boot::BootService;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::ipxe::Templates;
use crate::mirror::Mirror;
use crate::server::{self, App, ListenerSettings, listen};
use crate::service::{Identity, Limits, Service};
use crate::store::Store;

/// `[ipxe] fallback_script` is served by ironboot when it is a plain file name.
fn fallback_file(settings: &Settings) -> Option<(String, std::path::PathBuf)> {
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

/// Everything `serve` builds before it binds a port: the store, the boot service, the
/// mirror and the service that owns them. Also used by tests and the benchmark seeder.
pub async fn build_service(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<Service>, CliError> {
    let o = &settings.options;
    // Config validation compiled these already (so `config check` refuses what serve
    // would); a failure here is a bug, reported as a runtime error.
    let templates = Templates::new(
        settings.templates.boot_script.clone(),
        settings.templates.node_template.clone(),
    )
    .map_err(|e| CliError::Runtime(format!("templates: {e}")))?;
    let boot = BootService::new(settings, templates, clock.clone())
        .map_err(|e| CliError::Runtime(format!("boot service: {e}")))?;
    let mirror = Mirror::new(&o.deploy.http_root);
    let root = mirror.root().to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&root))
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?
        .map_err(|e| {
            CliError::Runtime(format!(
                "cannot create deploy.http_root {}: {e}",
                o.deploy.http_root.display()
            ))
        })?;
    let store = Store::open(&settings.database, o.database.max_pool_size, clock.clone())
        .await
        .map_err(|e| {
            CliError::Runtime(format!("database {}: {e}", settings.database.redacted()))
        })?;
    let service = Arc::new(
        Service::new(
            store,
            boot,
            mirror,
            clock,
            fallback_file(settings).map(|(_, path)| path),
            Limits {
                max_document_size: o.api.max_document_size as usize,
                max_limit: o.api.max_limit as usize,
                cache_clean_interval: std::time::Duration::from_secs(
                    o.conductor.cache_clean_up_interval,
                ),
            },
        )
        .with_identity(Identity {
            host: o.default.host.clone(),
            http_url: settings.http_url.clone(),
            heartbeat_interval: std::time::Duration::from_secs(o.conductor.heartbeat_interval),
            heartbeat_timeout: std::time::Duration::from_secs(o.conductor.heartbeat_timeout),
            index_resync_interval: std::time::Duration::from_secs(
                o.conductor.index_resync_interval,
            ),
        }),
    );
    service
        .register()
        .await
        .map_err(|e| CliError::Runtime(format!("cannot register this conductor: {e}")))?;
    // this conductor's share of the nodes: their mirror files, and the stored
    // preparations it resumes (the periodic mirror refresh comes later)
    match service.rebalance().await {
        Ok(r) => tracing::info!(
            alive = ?r.alive,
            nodes = r.gained,
            resumed = r.started,
            elapsed_ms = r.elapsed_ms,
            "this conductor's nodes"
        ),
        Err(e) => {
            return Err(CliError::Runtime(format!(
                "cannot read the conductors and nodes: {e}"
            )));
        }
    }
    match service.refresh_mirror().await {
        Ok(n) => tracing::info!(nodes = n, "static mirror written"),
        Err(e) => tracing::warn!("static mirror not written: {e}"),
    }
    // preparations of an older version, which stored no request, cannot resume: each
    // such node is marked failed, with the previous target served
    match service.fail_interrupted_prepares().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(nodes = n, "marked interrupted preparations failed"),
        Err(e) => {
            return Err(CliError::Runtime(format!(
                "cannot check for interrupted preparations: {e}"
            )));
        }
    }
    Ok(service)
}

/// The listeners' shared state around the service.
pub fn app(settings: &Settings, service: Arc<Service>) -> Arc<App> {
    Arc::new(App {
        service,
        api_token: settings.api_token.clone(),
        fallback_route: fallback_file(settings).map(|(route, _)| route),
        request_timeout: Duration::from_secs(settings.options.api.request_timeout),
        max_body_size: settings.options.api.max_body_size as usize,
    })
}

/// The listeners' timeouts and connection caps, the caps split from the open-file limit.
pub fn listener_settings(settings: &Settings, nofile: u64) -> ListenerSettings {
    let o = &settings.options;
    let (api_cap, boot_cap) = listen::connection_caps(
        nofile,
        o.api.max_connections as usize,
        o.httpboot.max_connections as usize,
    );
    let warn_clamped = |option: &str, asked: u32, got: usize| {
        if asked != 0 && got < asked as usize {
            tracing::warn!(
                "{option} = {asked} does not fit the open-file limit {nofile}; using {got}. Raise the hard limit (LimitNOFILE= in systemd) to allow more"
            );
        }
    };
    warn_clamped("api.max_connections", o.api.max_connections, api_cap);
    warn_clamped(
        "httpboot.max_connections",
        o.httpboot.max_connections,
        boot_cap,
    );
    ListenerSettings {
        api: listen::ListenerLimits {
            name: "api",
            header_timeout: Duration::from_secs(o.api.header_timeout),
            keepalive_timeout: Duration::from_secs(o.api.keepalive_timeout),
            max_connections: api_cap,
        },
        boot: listen::ListenerLimits {
            name: "boot",
            header_timeout: Duration::from_secs(o.httpboot.header_timeout),
            keepalive_timeout: Duration::from_secs(o.httpboot.keepalive_timeout),
            max_connections: boot_cap,
        },
        grace: Duration::from_secs(o.default.graceful_shutdown_timeout),
    }
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
        let files = listen::raise_nofile_limit();
        let listeners = listener_settings(&settings, files.soft);
        tracing::info!(
            soft = files.soft,
            hard = files.hard,
            api_connections = listeners.api.max_connections,
            boot_connections = listeners.boot.max_connections,
            "open-file limit"
        );
        let service = build_service(&settings, Arc::new(SystemClock)).await?;
        let app = app(&settings, service.clone());
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
            tracing::info!(endpoint = %swift.public_endpoint, internal = %swift.internal_endpoint, account = swift.configured_account.as_deref().unwrap_or("(read from Swift)"), key = if swift.key.is_some() { "configured" } else { "read from the account" }, digest = %swift.digest, duration = swift.duration, "Swift TempURLs");
        }
        // Keystone credentials are checked now, but a failure only warns: Keystone may come
        // up later, and nodes with other images still boot.
        let probing = service.clone();
        tokio::spawn(async move {
            for result in probing.boot().probe_sources().await {
                match result {
                    Ok(what) => tracing::info!("{what}"),
                    Err(why) => tracing::warn!("{why}"),
                }
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = crate::conductor::spawn(service.clone(), stop_rx);
        let leaving = service.clone();
        let drain = Duration::from_secs(o.default.graceful_shutdown_timeout);
        let stopping = async move {
            shutdown_signal().await;
            // a clean stop: the others take this conductor's nodes at once, and it serves
            // the images it holds until they have fetched them
            if let Err(e) = leaving.leave().await {
                tracing::warn!("cannot leave the ring cleanly: {e}");
            }
            leaving.drain(drain).await;
        };
        let result = server::run(api, boot, app, listeners, stopping).await;
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        // a clean stop hands this conductor's nodes to the others at once
        if let Err(e) = service.unregister().await {
            tracing::warn!("cannot unregister this conductor: {e}");
        }
        service.close().await;
        tracing::info!("stopped");
        result.map_err(|e| CliError::Runtime(format!("server failed: {e}")))
    })
}
