//! Scheduler metrics under upstream's names, rendered in the Prometheus text format.

use crate::queue::PendingPods;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    10.0, 30.0, 60.0,
];

/// A histogram of durations in seconds with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count()
        );
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// The scheduler's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Attempts that bound the pod.
    pub scheduled: AtomicU64,
    /// Attempts where the pod fit nowhere.
    pub unschedulable: AtomicU64,
    /// Attempts that failed with an error.
    pub errors: AtomicU64,
    /// Preemption attempts.
    pub preemption_attempts: AtomicU64,
    /// Scheduling attempt duration (scheduling cycle only).
    pub attempt_duration: Histogram,
    /// From the pod's first entry into the queue to a successful bind.
    pub e2e_latency: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self, pending: PendingPods) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE scheduler_schedule_attempts_total counter");
        for (result, v) in [
            ("scheduled", &self.scheduled),
            ("unschedulable", &self.unschedulable),
            ("error", &self.errors),
        ] {
            let _ = writeln!(
                out,
                "scheduler_schedule_attempts_total{{result=\"{result}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE scheduler_preemption_attempts_total counter");
        let _ = writeln!(
            out,
            "scheduler_preemption_attempts_total {}",
            self.preemption_attempts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE scheduler_scheduling_attempt_duration_seconds histogram"
        );
        self.attempt_duration.render(
            &mut out,
            "scheduler_scheduling_attempt_duration_seconds",
            "",
        );
        let _ = writeln!(
            out,
            "# TYPE scheduler_pod_scheduling_sli_duration_seconds histogram"
        );
        self.e2e_latency.render(
            &mut out,
            "scheduler_pod_scheduling_sli_duration_seconds",
            "",
        );
        let _ = writeln!(out, "# TYPE scheduler_pending_pods gauge");
        for (q, n) in [
            ("active", pending.active),
            ("backoff", pending.backoff),
            ("unschedulable", pending.unschedulable),
            ("gated", pending.gated),
        ] {
            let _ = writeln!(out, "scheduler_pending_pods{{queue=\"{q}\"}} {n}");
        }
        out
    }
}
