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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Metrics {
            registry,
            http_requests,
            http_duration,
            renders,
            tempurls,
            prepares,
            errors,
            mirror_writes,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
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
