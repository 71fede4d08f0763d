//! The supervisor of periodic tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ironboot::conductor::{Backoff, Schedule, supervise, supervise_with};
use ironboot::metrics::TaskLabels;
use reqwest::{Method, StatusCode};

use crate::support::server::{Db, TestServer};
use crate::support::wait_for;

/// Regression: the periodic mirror refresh ran as one task whose handle was awaited only at
/// shutdown; when it panicked, TempURLs in the static mirror stopped being refreshed and
/// nothing reported it. Now a failing or panicking task is logged, counted, reported by
/// /healthz and restarted.
#[tokio::test]
async fn regression_periodic_task_dies_silently() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = {
        let (runs, failing) = (runs.clone(), failing.clone());
        tokio::spawn(supervise(
            s.service.clone(),
            "test_task",
            Duration::from_millis(5),
            Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(4),
            },
            stop_rx,
            move |_service| {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                let failing = failing.load(Ordering::SeqCst);
                Box::pin(async move {
                    if failing && n % 2 == 0 {
                        panic!("boom {n}");
                    }
                    if failing {
                        return Err(format!("failed {n}"));
                    }
                    Ok(())
                })
            },
        ))
    };
    let restarts = s
        .service
        .metrics()
        .task_restarts
        .get_or_create(&TaskLabels { task: "test_task" })
        .clone();
    wait_for("two restarts", || async { restarts.get() >= 2 }).await;
    let (status, body) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["checks"]["tasks"]["test_task"]["healthy"], false,
        "{body}"
    );
    let last = body["checks"]["tasks"]["test_task"]["last_error"]
        .as_str()
        .unwrap();
    assert!(last.contains("boom") || last.contains("failed"), "{body}");
    assert!(
        s.metric("ironboot_task_runs_total{task=\"test_task\",result=\"panicked\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    failing.store(false, Ordering::SeqCst);
    wait_for("the task to be healthy again", || async {
        s.call(Method::GET, "/healthz", None).await.0 == StatusCode::OK
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();
    s.stop().await;
}

/// The server's own periodic task is supervised and healthy.
#[tokio::test]
async fn periodic_tasks_run_under_the_supervisor() {
    let s = TestServer::start(
        Db::Sqlite,
        "[conductor]\nheartbeat_interval = 1\nheartbeat_timeout = 3\n",
    )
    .await;
    // the mirror was written at start; its periodic refresh waits one interval
    for task in ["heartbeat", "takeover"] {
        wait_for(&format!("a run of {task}"), || async {
            s.metric(&format!(
                "ironboot_task_runs_total{{task=\"{task}\",result=\"ok\"}}"
            ))
            .await
            .is_some()
        })
        .await;
        assert!(
            s.metric(&format!(
                "ironboot_task_duration_seconds_count{{task=\"{task}\"}}"
            ))
            .await
            .is_some(),
            "every run is timed"
        );
    }
    let (status, body) = s.call(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    for task in ["mirror_refresh", "heartbeat", "takeover"] {
        assert_eq!(body["checks"]["tasks"][task]["healthy"], true, "{body}");
    }
    s.stop().await;
}

/// A run that outlives its time limit is stopped, counted as `timed_out` and restarted;
/// the next run starts.
#[tokio::test]
async fn a_run_longer_than_its_limit_is_stopped_and_counted() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = {
        let runs = runs.clone();
        tokio::spawn(supervise_with(
            s.service.clone(),
            Schedule {
                task: "stuck_task",
                every: Duration::from_millis(1),
                first_after: Duration::ZERO,
                limit: Some(Duration::from_millis(20)),
                backoff: Backoff {
                    first: Duration::from_millis(1),
                    max: Duration::from_millis(2),
                },
            },
            stop_rx,
            move |_service| {
                runs.fetch_add(1, Ordering::SeqCst);
                // never finishes by itself
                Box::pin(std::future::pending())
            },
        ))
    };
    wait_for("two runs stopped at their limit", || async {
        s.metric("ironboot_task_runs_total{task=\"stuck_task\",result=\"timed_out\"}")
            .await
            .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    assert!(runs.load(Ordering::SeqCst) >= 2);
    let (_, body) = s.call(Method::GET, "/healthz", None).await;
    let last = body["checks"]["tasks"]["stuck_task"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("limit"), "{body}");
    let _ = stop.send(true);
    task.await.unwrap();
    s.stop().await;
}
