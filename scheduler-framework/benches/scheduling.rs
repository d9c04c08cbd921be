//! Scheduling throughput in the spirit of upstream's scheduler_perf, in process and without an
//! API server: `cargo bench -p bosun-scheduler-framework --bench scheduling`.
//!
//! Workloads (nodes / pods already placed / pods measured): SchedulingBasic 5000/1000/10000,
//! SchedulingPodAntiAffinity 5000/1000/1000, SchedulingTopologySpreading 5000/1000/5000 and
//! PreemptionBasic 500/2000/500. Each reports pods/s. A criterion benchmark times one
//! scheduling cycle on 5,000 nodes.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use bosun_api_types::core::v1::{Node, Pod};
use bosun_scheduler_framework::sim::Simulator;
use criterion::Criterion;
use serde_json::{json, Value};
use std::time::Duration;

fn node(i: usize, zones: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % zones.max(1))}},
        "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}}}))
    .unwrap()
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "perf"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

struct Workload {
    name: &'static str,
    nodes: usize,
    init: usize,
    measure: usize,
    init_pod: fn(usize) -> Pod,
    measure_pod: fn(usize) -> Pod,
}

fn basic(i: usize) -> Pod {
    pod(&format!("p-{i}"), json!({}))
}

fn init_basic(i: usize) -> Pod {
    pod(&format!("init-{i}"), json!({}))
}

fn anti_affinity(i: usize) -> Pod {
    pod(
        &format!("anti-{i}"),
        json!({"metadata": {"labels": {"color": "green"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": "green"}},
                "topologyKey": "kubernetes.io/hostname"}]}}}}),
    )
}

fn spread(i: usize) -> Pod {
    pod(
        &format!("spread-{i}"),
        json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 5,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "perf"}}}]}}),
    )
}

fn low_priority(i: usize) -> Pod {
    // Four of these fill a 4-CPU node.
    pod(
        &format!("low-{i}"),
        json!({"spec": {"priority": 1, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "900m", "memory": "500Mi"}}}]}}),
    )
}

fn high_priority(i: usize) -> Pod {
    pod(
        &format!("high-{i}"),
        json!({"spec": {"priority": 10, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "900m", "memory": "500Mi"}}}]}}),
    )
}

fn run(rt: &tokio::runtime::Runtime, w: &Workload) {
    let mut sim = Simulator::new().unwrap();
    let zones = 3;
    for i in 0..w.nodes {
        sim.add_node(node(i, zones));
    }
    for i in 0..w.init {
        sim.add_pod((w.init_pod)(i));
    }
    rt.block_on(sim.run());
    for i in 0..w.measure {
        sim.add_pod((w.measure_pod)(i));
    }
    let stats = rt.block_on(sim.run());
    println!(
        "{:<32} nodes={:<5} init={:<5} measured={:<5} bound={:<5} preempted={:<4} {:>8.0} pods/s ({:.2} s)",
        w.name,
        w.nodes,
        w.init,
        w.measure,
        stats.bound,
        stats.preempted,
        stats.pods_per_second(),
        stats.elapsed.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let workloads = [
        Workload {
            name: "SchedulingBasic",
            nodes: 5000 / scale,
            init: 1000 / scale,
            measure: 10000 / scale,
            init_pod: init_basic,
            measure_pod: basic,
        },
        Workload {
            name: "SchedulingPodAntiAffinity",
            nodes: 5000 / scale,
            init: 1000 / scale,
            measure: 1000 / scale,
            init_pod: init_basic,
            measure_pod: anti_affinity,
        },
        Workload {
            name: "SchedulingTopologySpreading",
            nodes: 5000 / scale,
            init: 1000 / scale,
            measure: 5000 / scale,
            init_pod: init_basic,
            measure_pod: spread,
        },
        Workload {
            name: "PreemptionBasic",
            nodes: 500 / scale,
            init: 2000 / scale,
            measure: 500 / scale,
            init_pod: low_priority,
            measure_pod: high_priority,
        },
    ];
    // `--only NAME` runs one workload (and skips the criterion part).
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    for w in workloads
        .iter()
        .filter(|w| only.as_deref().is_none_or(|o| o == w.name))
    {
        run(&rt, w);
    }
    if only.is_some() {
        return;
    }

    // One scheduling cycle of a plain pod on 5,000 nodes (nothing is bound, so every cycle
    // sees the same cluster).
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut sim = Simulator::new().unwrap();
    for i in 0..5000 / scale {
        sim.add_node(node(i, 3));
    }
    let mut n = 0;
    c.bench_function("schedule_one/5000_nodes", |b| {
        b.iter(|| {
            n += 1;
            sim.add_pod(basic(n));
            let r = rt.block_on(sim.scheduler.try_schedule_one());
            assert!(matches!(
                r,
                Some(bosun_scheduler_framework::Attempt::Assumed(_))
            ));
        })
    });
    c.final_summary();
}
