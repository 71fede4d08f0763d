//! Prometheus metrics, served at `/metrics` on the API listener.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `ironboot_http_requests_total` | listener, route, status | requests answered |
//! | `ironboot_http_request_duration_seconds` | listener, route | time to answer |
//! | `ironboot_script_renders_total` | kind (master, node), result (ok, not_found, error) | scripts served to machines |
//! | `ironboot_tempurls_minted_total` | | TempURLs signed for scripts |
//! | `ironboot_boot_prepares_total` | target, result (ok, failed) | `PUT …/boot` outcomes |
//! | `ironboot_errors_total` | reason | errors, by stable error code |
//! | `ironboot_mirror_writes_total` | result (ok, error) | static mirror files written |
//! | `ironboot_task_runs_total` | task, result (ok, failed, panicked) | runs of periodic tasks |
//! | `ironboot_task_restarts_total` | task | periodic tasks restarted by the supervisor after a failure |
//! | `ironboot_http_requests_in_flight` | listener | requests being answered now |
//! | `ironboot_connections_open` | listener | open client connections |
//! | `ironboot_connections_refused_total` | listener | connections closed at once because the listener was at its limit |
//! | `ironboot_task_duration_seconds` | task | time a run of a periodic task took |
//! | `ironboot_takeover_nodes_total` | direction (gained, lost) | nodes this conductor took from others or gave to them |
//! | `ironboot_takeover_duration_seconds` | | time a pass of the ring refresh and takeover took |
//! | `ironboot_index_changes_total` | kind (node, conductors, resync) | changes of other conductors applied to the boot index (PostgreSQL) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub listener: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenderLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrepareLabels {
    pub target: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConductorLabels {
    pub conductor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AliveLabels {
    /// `alive` or `dead`.
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `glance` (image metadata GETs), `keystone` (token requests), `swift_auth` (reads of
    /// the account's temp-URL keys).
    pub service: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskRunLabels {
    pub task: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub renders: Family<RenderLabels, Counter>,
    pub tempurls: Counter,
    pub prepares: Family<PrepareLabels, Counter>,
    pub errors: Family<ReasonLabels, Counter>,
    pub mirror_writes: Family<ResultLabels, Counter>,
    pub in_flight: Family<ListenerLabels, Gauge>,
    pub task_runs: Family<TaskRunLabels, Counter>,
    pub task_restarts: Family<TaskLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<ListenerLabels, Counter>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub conductors: Family<AliveLabels, Gauge>,
    pub nodes_owned: Family<ConductorLabels, Gauge>,
    pub task_duration: Family<TaskLabels, Histogram, fn() -> Histogram>,
    pub takeover_nodes: Family<DirectionLabels, Counter>,
    pub takeover_duration: Histogram,
    pub index_changes: Family<KindLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn task_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ironboot");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let renders = Family::<RenderLabels, Counter>::default();
        let tempurls = Counter::default();
        let prepares = Family::<PrepareLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let mirror_writes = Family::<ResultLabels, Counter>::default();
        let task_runs = Family::<TaskRunLabels, Counter>::default();
        let in_flight = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered now",
            in_flight.clone(),
        );
        let task_restarts = Family::<TaskLabels, Counter>::default();
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "task_runs",
            "Runs of periodic tasks, by result",
            task_runs.clone(),
        );
        registry.register(
            "task_restarts",
            "Periodic tasks restarted by the supervisor after a failure or panic",
            task_restarts.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections, by listener",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener was at its connection limit",
            connections_refused.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            http_duration.clone(),
        );
        registry.register(
            "script_renders",
            "iPXE scripts served to machines",
            renders.clone(),
        );
        registry.register(
            "tempurls_minted",
            "Swift TempURLs signed for scripts",
            tempurls.clone(),
        );
        registry.register(
            "boot_prepares",
            "Boot preparations (PUT /v1/nodes/{node}/boot)",
            prepares.clone(),
        );
        registry.register("errors", "Errors by stable error code", errors.clone());
        registry.register(
            "mirror_writes",
            "Static mirror files written to [deploy] http_root",
            mirror_writes.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests ironboot sent to Glance (image metadata) and Keystone (tokens), and \
             reads of the Swift account's temp-URL keys",
            upstream_requests.clone(),
        );
        let conductors = Family::<AliveLabels, Gauge>::default();
        registry.register(
            "conductors",
            "Registered conductors, alive or dead (silent for longer than [conductor] heartbeat_timeout)",
            conductors.clone(),
        );
        let nodes_owned = Family::<ConductorLabels, Gauge>::default();
        registry.register(
            "nodes_owned",
            "Nodes the hash ring of the live conductors gives each conductor",
            nodes_owned.clone(),
        );
        let task_duration =
            Family::<TaskLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                task_histogram as fn() -> Histogram,
            );
        registry.register(
            "task_duration_seconds",
            "Time a run of a periodic task took",
            task_duration.clone(),
        );
        let takeover_nodes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "takeover_nodes",
            "Nodes this conductor took from other conductors (gained) or gave to them (lost)",
            takeover_nodes.clone(),
        );
        let takeover_duration = task_histogram();
        registry.register(
            "takeover_duration_seconds",
            "Time a pass of the ring refresh and takeover took",
            takeover_duration.clone(),
        );
        let index_changes = Family::<KindLabels, Counter>::default();
        registry.register(
            "index_changes",
            "Changes made by other conductors applied to the boot index (PostgreSQL)",
            index_changes.clone(),
        );
        Metrics {
            registry,
            task_duration,
            takeover_nodes,
            takeover_duration,
            index_changes,
            upstream_requests,
            conductors,
            nodes_owned,
            http_requests,
            http_duration,
            renders,
            tempurls,
            prepares,
            errors,
            mirror_writes,
            in_flight,
            task_runs,
            task_restarts,
            connections_open,
            connections_refused,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Raises the `upstream_requests` counter of `service` to `total`, a count kept by the
    /// client that sends them.
    pub fn observe_upstream(&self, service: &'static str, total: u64) {
        let c = self
            .upstream_requests
            .get_or_create(&UpstreamLabels { service });
        let seen = c.get();
        if total > seen {
            c.inc_by(total - seen);
        }
    }

    /// Sets the membership gauges from `(conductor, alive, nodes owned)`.
    pub fn observe_conductors<'a>(&self, conductors: impl Iterator<Item = (&'a str, bool, usize)>) {
        self.nodes_owned.clear();
        let (mut alive, mut dead) = (0, 0);
        for (name, is_alive, nodes) in conductors {
            if is_alive {
                alive += 1;
            } else {
                dead += 1;
            }
            self.nodes_owned
                .get_or_create(&ConductorLabels {
                    conductor: name.to_string(),
                })
                .set(i64::try_from(nodes).unwrap_or(i64::MAX));
        }
        self.conductors
            .get_or_create(&AliveLabels { state: "alive" })
            .set(alive);
        self.conductors
            .get_or_create(&AliveLabels { state: "dead" })
            .set(dead);
    }

    /// Counts a pass of the takeover.
    pub fn observe_takeover(&self, gained: usize, lost: usize, took: std::time::Duration) {
        for (direction, n) in [("gained", gained), ("lost", lost)] {
            self.takeover_nodes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(n as u64);
        }
        self.takeover_duration.observe(took.as_secs_f64());
    }

    /// Counts static mirror writes.
    pub fn count_mirror_writes(&self, ok: u64, failed: u64) {
        self.mirror_writes
            .get_or_create(&ResultLabels { result: "ok" })
            .inc_by(ok);
        if failed > 0 {
            self.mirror_writes
                .get_or_create(&ResultLabels { result: "error" })
                .inc_by(failed);
        }
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a script served (or not) to a machine.
    pub fn render(&self, kind: &'static str, result: &'static str) {
        self.renders
            .get_or_create(&RenderLabels { kind, result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.renders
            .get_or_create(&RenderLabels {
                kind: "node",
                result: "ok",
            })
            .inc();
        m.tempurls.inc_by(2);
        m.error("swift_unreachable");
        let text = m.encode();
        assert!(
            text.contains("ironboot_script_renders_total{kind=\"node\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("ironboot_tempurls_minted_total 2"), "{text}");
        assert!(
            text.contains("ironboot_errors_total{reason=\"swift_unreachable\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
