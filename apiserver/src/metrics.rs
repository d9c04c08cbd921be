//! `/metrics` in the Prometheus text format, with upstream's metric names:
//! `apiserver_request_total` and `apiserver_request_duration_seconds` by verb, group, version,
//! resource, subresource, scope and code; `apiserver_current_inflight_requests`;
//! `apiserver_registered_watchers` by group, version and kind; and the store's latency as
//! `apiserver_storage_request_duration_seconds` by operation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request duration histogram, as upstream's.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// Upper bounds (seconds) of the storage latency histogram.
const STORAGE_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// The labels of one request series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RequestLabels {
    pub(crate) verb: &'static str,
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) resource: String,
    pub(crate) subresource: String,
    pub(crate) scope: &'static str,
}

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], secs: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if secs <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// The server's metrics.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(RequestLabels, u16), u64>>,
    durations: Mutex<BTreeMap<RequestLabels, Histogram>>,
    storage: Mutex<BTreeMap<&'static str, Histogram>>,
    watchers: Mutex<BTreeMap<(String, String, String), i64>>,
    pub(crate) inflight: AtomicI64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl RequestLabels {
    fn render(&self) -> String {
        format!(
            "component=\"apiserver\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"",
            escape(&self.group),
            escape(&self.resource),
            self.scope,
            escape(&self.subresource),
            self.verb,
            escape(&self.version)
        )
    }
}

impl Metrics {
    /// Counts a finished request.
    pub(crate) fn request(&self, labels: RequestLabels, code: u16, took: Duration) {
        let mut h = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        h.entry(labels.clone())
            .or_default()
            .observe(REQUEST_BUCKETS, took.as_secs_f64());
        drop(h);
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((labels, code))
            .or_default() += 1;
    }

    /// Records one store call.
    pub(crate) fn storage(&self, operation: &'static str, took: Duration) {
        self.storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_default()
            .observe(STORAGE_BUCKETS, took.as_secs_f64());
    }

    /// A watcher of a kind started (`+1`) or ended (`-1`).
    pub(crate) fn watcher(&self, group: &str, version: &str, kind: &str, delta: i64) {
        *self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((group.to_owned(), version.to_owned(), kind.to_owned()))
            .or_default() += delta;
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((l, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "apiserver_request_total{{code=\"{code}\",{},dry_run=\"\"}} {n}",
                l.render()
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for (l, h) in self
            .durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            h.render(
                &mut out,
                "apiserver_request_duration_seconds",
                &l.render(),
                REQUEST_BUCKETS,
            );
        }
        out.push_str("# HELP apiserver_current_inflight_requests Maximal number of currently used inflight request limit of this apiserver per request kind in last second.\n# TYPE apiserver_current_inflight_requests gauge\n");
        let _ = writeln!(
            out,
            "apiserver_current_inflight_requests{{request_kind=\"readOnly\"}} {}",
            self.inflight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP apiserver_registered_watchers Number of currently registered watchers for a given resources\n# TYPE apiserver_registered_watchers gauge\n");
        for ((g, v, k), n) in self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "apiserver_registered_watchers{{group=\"{}\",kind=\"{}\",version=\"{}\"}} {n}",
                escape(g),
                escape(k),
                escape(v)
            );
        }
        out.push_str("# HELP apiserver_storage_request_duration_seconds Latency of the store's operations in seconds.\n# TYPE apiserver_storage_request_duration_seconds histogram\n");
        for (op, h) in self
            .storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            h.render(
                &mut out,
                "apiserver_storage_request_duration_seconds",
                &format!("operation=\"{op}\""),
                STORAGE_BUCKETS,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        let l = RequestLabels {
            verb: "GET",
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            subresource: String::new(),
            scope: "resource",
        };
        m.request(l.clone(), 200, Duration::from_millis(3));
        m.request(l, 404, Duration::from_millis(30));
        m.storage("get", Duration::from_micros(20));
        m.watcher("", "v1", "Pod", 1);
        let text = m.render();
        assert!(text.contains("apiserver_request_total{code=\"200\",component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\",dry_run=\"\"} 1"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket{component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\",le=\"0.005\"} 1"));
        assert!(text.contains("apiserver_request_duration_seconds_count{component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 2"));
        assert!(text
            .contains("apiserver_registered_watchers{group=\"\",kind=\"Pod\",version=\"v1\"} 1"));
        assert!(
            text.contains("apiserver_storage_request_duration_seconds_count{operation=\"get\"} 1")
        );
    }
}
