//! The example scheduler plugins in their custom profiles, on the in-memory simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_api_types::core::v1::{Node, Pod};
use bosun_examples::{coscheduling, label_score};
use bosun_scheduler_framework::cluster::{Listers, Recorded};
use bosun_scheduler_framework::sim::Simulator;
use bosun_scheduler_framework::Attempt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn node(name: &str, green: &str) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"example.com/green-energy": green}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
    )
    .unwrap()
}

fn pod(name: &str, scheduler: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "d", "uid": name, "labels": labels},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "100m"}}}]}}),
    )
    .unwrap()
}

#[tokio::test]
async fn the_label_score_profile_prefers_greener_nodes() {
    let mut sim = Simulator::with(
        label_score::config("green-scheduler", 5).unwrap(),
        label_score::registry(),
        Arc::new(Listers::default()),
    )
    .unwrap();
    sim.add_node(node("coal", "5"));
    sim.add_node(node("wind", "90"));
    sim.add_node(node("gas", "30"));
    for i in 0..5 {
        sim.add_pod(pod(&format!("g{i}"), "green-scheduler", json!({})));
    }
    assert_eq!(sim.run().await.bound, 5);
    for i in 0..5 {
        assert_eq!(sim.node_of(&format!("g{i}")).as_deref(), Some("wind"));
    }
    // The default profile, without the plugin, spreads by free resources instead.
    for i in 0..3 {
        sim.add_pod(pod(&format!("d{i}"), "default-scheduler", json!({})));
    }
    sim.run().await;
    assert_ne!(sim.node_of("d0").as_deref(), Some("wind"));
}

#[tokio::test]
async fn coscheduling_binds_a_group_only_once_it_is_complete() {
    let mut sim = Simulator::with(
        coscheduling::config("gang").unwrap(),
        coscheduling::registry(Duration::from_secs(30)),
        Arc::new(Listers::default()),
    )
    .unwrap();
    for i in 0..3 {
        sim.add_node(node(&format!("n{i}"), "0"));
    }
    let member = |i: usize| {
        pod(
            &format!("m{i}"),
            "gang",
            json!({coscheduling::GROUP: "train", coscheduling::MIN_AVAILABLE: "3"}),
        )
    };
    let bound = |sim: &Simulator| {
        sim.cluster()
            .log()
            .iter()
            .filter(|r| matches!(r, Recorded::Bound(..)))
            .count()
    };
    for i in 0..2 {
        sim.add_pod(member(i));
        assert!(matches!(
            sim.scheduler.try_schedule_one().await,
            Some(Attempt::Assumed(_))
        ));
    }
    // Both sit at Permit (they are registered as waiting before their binding task runs) …
    assert_eq!(sim.scheduler.shared().handle.waiting_pods.list().len(), 2);
    // … and no bind happens while the group is incomplete.
    tokio::task::yield_now().await;
    assert_eq!(bound(&sim), 0, "two of three: everyone waits at Permit");
    sim.add_pod(member(2));
    assert!(matches!(
        sim.scheduler.try_schedule_one().await,
        Some(Attempt::Assumed(_))
    ));
    for _ in 0..100 {
        if bound(&sim) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bound(&sim), 3);
}

#[tokio::test]
async fn an_incomplete_group_gives_its_nodes_back_after_the_timeout() {
    let mut sim = Simulator::with(
        coscheduling::config("gang").unwrap(),
        coscheduling::registry(Duration::from_millis(200)),
        Arc::new(Listers::default()),
    )
    .unwrap();
    sim.add_node(node("n0", "0"));
    sim.add_pod(pod(
        "lonely",
        "gang",
        json!({coscheduling::GROUP: "big", coscheduling::MIN_AVAILABLE: "2"}),
    ));
    assert!(matches!(
        sim.scheduler.try_schedule_one().await,
        Some(Attempt::Assumed(_))
    ));
    // Wait (with a deadline) for the Permit timeout to reject it.
    let rejected = |log: &[Recorded]| {
        log.iter()
            .any(|r| matches!(r, Recorded::Unschedulable(_, m) if m.contains("timeout")))
    };
    for _ in 0..250 {
        if rejected(&sim.cluster().log()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = sim.cluster().log();
    assert!(!log.iter().any(|r| matches!(r, Recorded::Bound(..))));
    assert!(
        log.iter()
            .any(|r| matches!(r, Recorded::Unschedulable(_, m) if m.contains("timeout"))),
        "{log:?}"
    );
    // The node is free again in the scheduler's cache.
    assert_eq!(sim.scheduler.shared().handle.waiting_pods.list().len(), 0);
}
