//! The conductor's periodic work, each task under one [`supervise`]or:
//!
//! | task | every | bounded by | does |
//! |---|---|---|---|
//! | `heartbeat` | `[conductor] heartbeat_interval` | the interval | records that this conductor is alive |
//! | `takeover` | `heartbeat_interval` | `heartbeat_timeout` | rebuilds the ring from the live conductors, takes nodes over and hands them on ([`Service::rebalance`]) |
//! | `index_follow` | (runs until an error) | — | PostgreSQL: applies other conductors' changes to the boot index (LISTEN/NOTIFY), resyncing every `[conductor] index_resync_interval` |
//! | `index_changes` | (runs until an error) | — | PostgreSQL: brings mirror files and work in line with those changes |
//! | `mirror_refresh` | half the TempURL lifetime | the interval | rewrites the static mirror in `[deploy] http_root` |
//! | `swift_key_refresh` | `[swift] temp_url_key_refresh_interval` | the interval | re-reads the Swift account's temp-URL keys |
//! | `cache_clean` | `[conductor] cache_clean_up_interval` | the interval | cleans the master image cache (cache mode) |
//!
//! A run that takes longer than its bound is stopped and counted as failed
//! (`ironboot_task_runs_total{result="timed_out"}`); every run's time is in
//! `ironboot_task_duration_seconds{task}`.
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
    stop: watch::Receiver<bool>,
    run: impl Fn(Arc<Service>) -> Run + Send + Sync + 'static,
) {
    supervise_with(
        service,
        Schedule {
            task,
            every,
            first_after: Duration::ZERO,
            limit: None,
            backoff,
        },
        stop,
        run,
    )
    .await
}

/// When and for how long a supervised task runs.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub task: &'static str,
    /// Between the end of a run and the start of the next.
    pub every: Duration,
    /// Before the first run.
    pub first_after: Duration,
    /// A run that takes longer is stopped and counted as failed.
    pub limit: Option<Duration>,
    pub backoff: Backoff,
}

/// [`supervise`] with a first delay and a time limit per run.
pub async fn supervise_with(
    service: Arc<Service>,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    run: impl Fn(Arc<Service>) -> Run + Send + Sync + 'static,
) {
    let Schedule {
        task,
        every,
        first_after,
        limit,
        backoff,
    } = schedule;
    let mut delay = backoff.first;
    service.task_status(task, |s| s.healthy = true);
    if !first_after.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(first_after) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let handle: JoinHandle<Result<(), String>> = tokio::spawn(run(service.clone()));
        let abort = handle.abort_handle();
        let bounded = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, handle).await.ok(),
                None => Some(handle.await),
            }
        };
        let outcome = tokio::select! {
            r = bounded => r,
            _ = stop.wait_for(|s| *s) => { abort.abort(); return }
        };
        service
            .metrics()
            .task_duration
            .get_or_create(&TaskLabels { task })
            .observe(started.elapsed().as_secs_f64());
        let failure = match outcome {
            None => {
                abort.abort();
                Some((
                    "timed_out",
                    format!(
                        "the run took longer than its limit of {:.1}s and was stopped",
                        limit.unwrap_or_default().as_secs_f32()
                    ),
                ))
            }
            Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(("failed", e)),
            Some(Err(join)) if join.is_panic() => Some(("panicked", panic_message(join))),
            Some(Err(join)) => Some(("failed", join.to_string())),
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
    let beat = service.heartbeat_interval();
    tasks.push(tokio::spawn(supervise_with(
        service.clone(),
        Schedule {
            task: "heartbeat",
            every: beat,
            first_after: Duration::ZERO,
            limit: Some(beat),
            backoff: Backoff {
                first: Duration::from_secs(1),
                max: beat,
            },
        },
        stop.clone(),
        |service| Box::pin(async move { service.heartbeat().await.map_err(|e| e.to_string()) }),
    )));
    tasks.push(tokio::spawn(supervise_with(
        service.clone(),
        Schedule {
            task: "takeover",
            every: beat,
            // build_service ran the first pass
            first_after: beat,
            limit: Some(service.heartbeat_timeout()),
            backoff: Backoff {
                first: Duration::from_secs(1),
                max: beat,
            },
        },
        stop.clone(),
        |service| {
            Box::pin(async move {
                service
                    .rebalance()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        },
    )));
    if service.follows_others() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        tasks.push(tokio::spawn(supervise(
            service.clone(),
            "index_follow",
            Duration::from_secs(1),
            Backoff::default(),
            stop.clone(),
            move |service| {
                let tx = tx.clone();
                Box::pin(async move {
                    service
                        .follow_others(&tx)
                        .await
                        .map_err(|e| e.to_string())?;
                    Err("the listener stopped".into())
                })
            },
        )));
        tasks.push(tokio::spawn(supervise(
            service.clone(),
            "index_changes",
            Duration::from_secs(1),
            Backoff::default(),
            stop.clone(),
            move |service| {
                let rx = rx.clone();
                Box::pin(async move {
                    let mut rx = rx.lock().await;
                    while let Some(change) = rx.recv().await {
                        service.apply_change(change).await;
                    }
                    Ok(())
                })
            },
        )));
    }
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
    tasks.push(tokio::spawn(supervise_with(
        service,
        Schedule {
            task: "mirror_refresh",
            every,
            // build_service wrote the mirror
            first_after: every,
            limit: Some(every),
            backoff: Backoff::default(),
        },
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
