//! The conductor's periodic work, each task under one [`supervise`]or: today, keeping the
//! static mirror in `[deploy] http_root` current, and re-reading the Swift account's
//! temp-URL keys when `[swift]` credentials are set, and cleaning the master image cache
//! (cache mode, every `[conductor] cache_clean_up_interval`). Membership, the hash ring and takeover
//! come with multi-conductor support.
//!
//! A supervised task that fails or panics is logged, counted in
//! `ironboot_task_runs_total{result="failed"|"panicked"}` and
//! `ironboot_task_restarts_total`, reported unhealthy in `/healthz`, and restarted after a
//! back-off that doubles up to a ceiling. It never dies silently.
//!
//! This module serves no requests; it calls the service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{TaskLabels, TaskRunLabels};
use crate::service::Service;

/// How often the mirror is rewritten: at half the TempURL lifetime, so a file fetched just
/// before a rewrite still has half its lifetime left; hourly without Swift.
pub fn mirror_refresh_interval(url_lifetime: Duration) -> Duration {
    if url_lifetime.is_zero() {
        Duration::from_secs(3600)
    } else {
        (url_lifetime / 2).max(Duration::from_secs(1))
    }
}

/// The back-off between restarts of a failed task.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// One run of a periodic task: `Ok` to run again after its interval, `Err` to be restarted
/// after the back-off.
pub type Run = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs `run` every `every` until `stop` turns true. Each run is a spawned task, so a panic
/// is caught as a failure. Failures are logged, counted and restarted with back-off; the
/// task's health is recorded in the service for `/healthz`.
pub async fn supervise(
    service: Arc<Service>,
    task: &'static str,
    every: Duration,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
    run: impl Fn(Arc<Service>) -> Run + Send + Sync + 'static,
) {
    let mut delay = backoff.first;
    service.task_status(task, |s| s.healthy = true);
    loop {
        if *stop.borrow() {
            return;
        }
        let handle: JoinHandle<Result<(), String>> = tokio::spawn(run(service.clone()));
        let outcome = tokio::select! {
            r = handle => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(("failed", e)),
            Err(join) if join.is_panic() => Some(("panicked", panic_message(join))),
            Err(join) => Some(("failed", join.to_string())),
        };
        let (result, wait) = match failure {
            None => {
                delay = backoff.first;
                service.task_status(task, |s| {
                    s.healthy = true;
                    s.last_error = None;
                });
                ("ok", every)
            }
            Some((result, message)) => {
                tracing::error!(
                    task,
                    "periodic task {result}: {message}; restarting in {:.1}s",
                    delay.as_secs_f32()
                );
                service
                    .metrics()
                    .task_restarts
                    .get_or_create(&TaskLabels { task })
                    .inc();
                service.task_status(task, |s| {
                    s.healthy = false;
                    s.restarts += 1;
                    s.last_error = Some(message);
                });
                let wait = delay;
                delay = (delay * 2).min(backoff.max);
                (result, wait)
            }
        };
        service
            .metrics()
            .task_runs
            .get_or_create(&TaskRunLabels { task, result })
            .inc();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Spawns every periodic task of this conductor; they stop when `stop` turns true.
pub fn spawn(service: Arc<Service>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let every = mirror_refresh_interval(service.boot().url_lifetime());
    let mut tasks = Vec::new();
    if let Some(keys) = service.boot().swift_keys().filter(|k| k.discovers()) {
        tasks.push(tokio::spawn(supervise(
            service.clone(),
            "swift_key_refresh",
            keys.refresh_interval(),
            Backoff {
                first: Duration::from_secs(1),
                max: keys.refresh_interval(),
            },
            stop.clone(),
            |service| {
                Box::pin(async move {
                    service
                        .refresh_swift_key()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            },
        )));
    }
    tasks.push(tokio::spawn(supervise(
        service.clone(),
        "heartbeat",
        service.heartbeat_interval(),
        Backoff {
            first: Duration::from_secs(1),
            max: service.heartbeat_interval(),
        },
        stop.clone(),
        |service| Box::pin(async move { service.heartbeat().await.map_err(|e| e.to_string()) }),
    )));
    let clean_every = service.cache_clean_interval();
    if service.boot().cache().is_some() && !clean_every.is_zero() {
        tasks.push(tokio::spawn(supervise(
            service.clone(),
            "cache_clean",
            clean_every,
            Backoff::default(),
            stop.clone(),
            |service| {
                Box::pin(async move {
                    if let Some(r) = service.clean_cache().await.map_err(|e| e.to_string())?
                        && r.files_removed > 0
                    {
                        tracing::info!(
                            evicted = r.evicted.len(),
                            files = r.files_removed,
                            bytes = r.bytes_freed,
                            "image cache cleaned"
                        );
                    }
                    Ok(())
                })
            },
        )));
    }
    tasks.push(tokio::spawn(supervise(
        service,
        "mirror_refresh",
        every,
        Backoff::default(),
        stop,
        |service| {
            Box::pin(async move {
                let n = service.refresh_mirror().await.map_err(|e| e.to_string())?;
                tracing::debug!(nodes = n, "static mirror refreshed");
                Ok(())
            })
        },
    )));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_half_the_url_lifetime() {
        assert_eq!(
            mirror_refresh_interval(Duration::from_secs(1200)),
            Duration::from_secs(600)
        );
        assert_eq!(
            mirror_refresh_interval(Duration::ZERO),
            Duration::from_secs(3600)
        );
        assert_eq!(
            mirror_refresh_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
