//! Periodic work of a conductor. Today: keeping the static mirror in `[deploy] http_root`
//! current. Membership, the hash ring and takeover come with multi-conductor support.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::ResultLabels;
use crate::server::App;

/// How often the mirror is rewritten: at half the TempURL lifetime, so a file fetched just
/// before a rewrite still has half its lifetime left; hourly without Swift.
pub fn mirror_refresh_interval(url_lifetime: Duration) -> Duration {
    if url_lifetime.is_zero() {
        Duration::from_secs(3600)
    } else {
        (url_lifetime / 2).max(Duration::from_secs(1))
    }
}

/// Rewrites boot.ipxe and every node's config, and removes files of nodes that are gone
/// or have no target. Returns the number of node configs written.
pub async fn refresh_mirror(app: &Arc<App>) -> usize {
    let master = app.boot.master_script().to_string();
    let mirror = app.mirror.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || mirror.write_master(&master))
        .await
        .expect("no panic")
    {
        tracing::error!(
            "cannot write {}/boot.ipxe: {e}",
            app.mirror.root().display()
        );
        app.metrics
            .mirror_writes
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
    }
    let records = match app.store.boot_records_with_target().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("mirror refresh skipped: {e}");
            return 0;
        }
    };
    let live: HashSet<_> = records.iter().map(|(r, _)| r.uuid).collect();
    let mut written = 0;
    for (record, macs) in &records {
        app.write_mirror(record, macs).await;
        written += 1;
    }
    let mirror = app.mirror.clone();
    let stale = tokio::task::spawn_blocking(move || mirror.node_dirs())
        .await
        .expect("no panic")
        .unwrap_or_default();
    for uuid in stale.into_iter().filter(|u| !live.contains(u)) {
        app.sync_mirror(uuid).await;
    }
    let mirror = app.mirror.clone();
    match tokio::task::spawn_blocking(move || mirror.sweep_dangling_links())
        .await
        .expect("no panic")
    {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} dangling links from the static mirror"),
        Err(e) => tracing::warn!("cannot sweep the static mirror: {e}"),
    }
    written
}

/// Runs [`refresh_mirror`] at start and then every [`mirror_refresh_interval`], until
/// `stop` turns true.
pub async fn refresh_mirror_periodically(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let every = mirror_refresh_interval(app.boot.url_lifetime());
    loop {
        let n = refresh_mirror(&app).await;
        tracing::debug!(
            nodes = n,
            "static mirror refreshed; next in {}s",
            every.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
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
