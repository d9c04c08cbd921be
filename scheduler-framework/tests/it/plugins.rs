//! Table tests of the default plugins through the in-memory simulator: upstream's semantics
//! observed as placements.

use bosun_api_types::core::v1::{Node, Pod};
use bosun_scheduler_framework::sim::Simulator;
use bosun_scheduler_framework::Attempt;
use serde_json::{json, Value};

fn node(name: &str, cpu: &str, extra: Value) -> Node {
    let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
    super::merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "d", "uid": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}]}});
    super::merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

async fn place(nodes: Vec<Node>, existing: Vec<Pod>, incoming: Pod) -> Result<String, String> {
    let mut sim = Simulator::new().unwrap();
    for n in nodes {
        sim.add_node(n);
    }
    for p in existing {
        sim.add_pod(p);
    }
    let uid = incoming.metadata.uid.clone().unwrap();
    sim.add_pod(incoming);
    match sim.scheduler.try_schedule_one().await {
        Some(Attempt::Assumed(n)) => {
            assert_eq!(sim.node_of(&uid), None, "bound later, by the binding cycle");
            Ok(n)
        }
        Some(Attempt::Unschedulable(m)) => Err(m),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unschedulable_nodes_and_host_ports() {
    let nodes = || {
        vec![
            node("a", "4", json!({"metadata": {"labels": {"pool": "x"}}})),
            node(
                "b",
                "4",
                json!({"metadata": {"labels": {"pool": "y"}}, "spec": {"unschedulable": true}}),
            ),
        ]
    };
    assert_eq!(
        place(nodes(), vec![], pod("p", json!({}))).await,
        Ok("a".into())
    );
    let err = place(
        nodes(),
        vec![],
        pod("p", json!({"spec": {"nodeSelector": {"pool": "y"}}})),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("1 node(s) didn't match Pod's node affinity/selector"),
        "{err}"
    );
    assert!(err.contains("1 node(s) were unschedulable"), "{err}");
    // A pod tolerating the unschedulable taint may go to the cordoned node.
    let tolerant = pod(
        "p",
        json!({"spec": {"nodeSelector": {"pool": "y"}, "tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(place(nodes(), vec![], tolerant).await, Ok("b".into()));
    let with_port = |n: &str, at: Option<&str>| {
        pod(
            n,
            json!({"spec": {"nodeName": at, "containers": [{"name": "c", "image": "x",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    };
    let err = place(
        vec![node("a", "4", json!({}))],
        vec![with_port("old", Some("a"))],
        with_port("new", None),
    )
    .await
    .unwrap_err();
    assert_eq!(err, "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
}

#[tokio::test]
async fn resources_fit_and_least_allocated_scoring() {
    let nodes = vec![node("small", "1", json!({})), node("big", "8", json!({}))];
    // LeastAllocated prefers the emptier node.
    assert_eq!(
        place(nodes.clone(), vec![], pod("p", json!({}))).await,
        Ok("big".into())
    );
    let huge = pod(
        "p",
        json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "16", "example.com/gpu": "1"}}}]}}),
    );
    let err = place(nodes, vec![], huge).await.unwrap_err();
    assert!(
        err.starts_with(
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient example.com/gpu."
        ),
        "{err}"
    );
}

#[tokio::test]
async fn prefer_no_schedule_taints_lower_the_score() {
    let nodes = vec![
        node(
            "tainted",
            "4",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        ),
        node("clean", "4", json!({})),
    ];
    assert_eq!(
        place(nodes, vec![], pod("p", json!({}))).await,
        Ok("clean".into())
    );
}

#[tokio::test]
async fn pod_affinity_follows_existing_pods_and_admits_the_first() {
    let zone = |n: &str, z: &str| node(n, "4", json!({"metadata": {"labels": {"zone": z}}}));
    let affinity = json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}}});
    let existing = pod(
        "db",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeName": "z2a"}}),
    );
    let nodes = vec![zone("z1a", "1"), zone("z2a", "2"), zone("z2b", "2")];
    for _ in 0..5 {
        let n = place(
            nodes.clone(),
            vec![existing.clone()],
            pod("p", affinity.clone()),
        )
        .await
        .unwrap();
        assert!(n.starts_with("z2"), "{n}");
    }
    // The first pod of a group that selects itself is admitted anywhere.
    assert!(place(nodes, vec![], pod("p", affinity)).await.is_ok());
}

#[tokio::test]
async fn existing_pods_anti_affinity_is_symmetric() {
    let guard = pod(
        "guard",
        json!({"metadata": {"labels": {"app": "guard"}}, "spec": {"nodeName": "a", "affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    let nodes = vec![node("a", "8", json!({})), node("b", "1", json!({}))];
    for _ in 0..5 {
        assert_eq!(
            place(nodes.clone(), vec![guard.clone()], pod("p", json!({}))).await,
            Ok("b".into())
        );
    }
}

#[tokio::test]
async fn scheduling_gates_hold_pods_until_removed() {
    let mut sim = Simulator::new().unwrap();
    sim.add_node(node("a", "4", json!({})));
    sim.add_pod(pod(
        "gated",
        json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}}),
    ));
    assert_eq!(sim.scheduler.try_schedule_one().await, None);
    assert_eq!(
        sim.scheduler.shared().queue.location("gated"),
        Some("gated")
    );
    let stats = sim.run().await;
    assert_eq!(stats.bound, 0);
    // Removing the gate (an update) lets it in.
    let old = std::sync::Arc::new(pod(
        "gated",
        json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}}),
    ));
    let new = std::sync::Arc::new(pod("gated", json!({})));
    sim.scheduler.events().pod_updated(old, new);
    assert_eq!(
        sim.scheduler.shared().queue.location("gated"),
        Some("active")
    );
    assert_eq!(
        sim.scheduler.try_schedule_one().await,
        Some(Attempt::Assumed("a".into()))
    );
}

#[tokio::test]
async fn the_simulator_schedules_and_preempts_to_completion() {
    let mut sim = Simulator::new().unwrap();
    for i in 0..10 {
        sim.add_node(node(&format!("n{i}"), "1", json!({})));
    }
    for i in 0..10 {
        sim.add_pod(pod(&format!("low{i}"), json!({"spec": {"priority": 1, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "700m"}}}]}})));
    }
    assert_eq!(sim.run().await.bound, 10);
    for i in 0..3 {
        sim.add_pod(pod(&format!("high{i}"), json!({"spec": {"priority": 100, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "700m"}}}]}})));
    }
    let stats = sim.run().await;
    assert_eq!((stats.bound, stats.preempted), (3, 3));
    for i in 0..3 {
        assert!(sim.node_of(&format!("high{i}")).is_some());
    }
}

fn listers_with_storage() -> std::sync::Arc<bosun_scheduler_framework::cluster::Listers> {
    use bosun_api_types::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use bosun_api_types::storage::v1::StorageClass;
    let l = std::sync::Arc::new(bosun_scheduler_framework::cluster::Listers::default());
    let sc = |name: &str, provisioner: &str| -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "provisioner": provisioner,
            "volumeBindingMode": "WaitForFirstConsumer"}),
        )
        .unwrap()
    };
    l.storage_classes.insert(
        "local-path",
        std::sync::Arc::new(sc("local-path", "bosun.dev/local-path")),
    );
    l.storage_classes.insert(
        "manual",
        std::sync::Arc::new(sc("manual", "kubernetes.io/no-provisioner")),
    );
    let pvc = |name: &str, class: &str| -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "d", "uid": name},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .unwrap()
    };
    l.pvcs.insert(
        "d/dynamic",
        std::sync::Arc::new(pvc("dynamic", "local-path")),
    );
    l.pvcs
        .insert("d/static", std::sync::Arc::new(pvc("static", "manual")));
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv-b"},
        "spec": {"storageClassName": "manual", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "5Gi"},
            "hostPath": {"path": "/data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}},
        "status": {"phase": "Available"}}))
    .unwrap();
    l.pvs.insert("pv-b", std::sync::Arc::new(pv));
    l
}

fn with_claim(name: &str, claim: &str) -> Pod {
    pod(
        name,
        json!({"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}),
    )
}

#[tokio::test]
async fn volume_binding_follows_static_pvs_and_provisions_dynamic_ones() {
    use bosun_scheduler_framework::cluster::Recorded;
    use bosun_scheduler_framework::config::SchedulerConfig;
    use bosun_scheduler_framework::plugins::Registry;
    let listers = listers_with_storage();
    let config = SchedulerConfig::parse(
        b"apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- pluginConfig:\n  - name: VolumeBinding\n    args:\n      bindTimeoutSeconds: 5\n",
    )
    .unwrap();
    let mut sim = Simulator::with(config, Registry::default(), listers.clone()).unwrap();
    for n in ["a", "b", "c"] {
        sim.add_node(node(n, "4", json!({})));
    }
    // The only PV for the static claim is pinned to node b.
    sim.add_pod(with_claim("s", "static"));
    assert_eq!(
        sim.scheduler.try_schedule_one().await,
        Some(Attempt::Assumed("b".into()))
    );
    // A missing claim is unresolvable.
    sim.add_pod(with_claim("m", "missing"));
    match sim.scheduler.try_schedule_one().await {
        Some(Attempt::Unschedulable(m)) => assert!(
            m.contains("persistentvolumeclaim \"missing\" not found"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // A dynamic claim goes anywhere; PreBind marks the chosen node for the provisioner, then
    // waits for the claim to be bound.
    sim.add_pod(with_claim("d", "dynamic"));
    let Some(Attempt::Assumed(node)) = sim.scheduler.try_schedule_one().await else {
        panic!("not assumed")
    };
    let annotated = || {
        sim.cluster().log().into_iter().any(|r| {
            r == Recorded::AnnotatedPvc(
                "d/dynamic".into(),
                "volume.kubernetes.io/selected-node".into(),
                node.clone(),
            )
        })
    };
    for _ in 0..50 {
        if annotated() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(annotated(), "{:?}", sim.cluster().log());
    assert!(sim
        .cluster()
        .log()
        .contains(&Recorded::BoundPv("pv-b".into(), "d/static".into())));
    let bound_d = || {
        sim.cluster()
            .log()
            .iter()
            .any(|r| matches!(r, Recorded::Bound(p, _) if p == "d/d"))
    };
    assert!(!bound_d(), "binding waits for the claim");
    // The provisioner binds the claim; the pod binds.
    let mut pvc = (*listers.pvcs.get("d/dynamic").unwrap()).clone();
    pvc.spec.as_mut().unwrap().volume_name = Some("pvc-dynamic".into());
    listers.pvcs.insert("d/dynamic", std::sync::Arc::new(pvc));
    for _ in 0..50 {
        if bound_d() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(bound_d());
}

#[tokio::test]
async fn system_default_spreading_follows_the_owning_service() {
    use bosun_api_types::core::v1::Service;
    let listers = std::sync::Arc::new(bosun_scheduler_framework::cluster::Listers::default());
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d"},
        "spec": {"selector": {"app": "x"}}}))
        .unwrap();
    listers.services.insert("d/web", std::sync::Arc::new(svc));
    let mut sim = Simulator::with(Default::default(), Default::default(), listers).unwrap();
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        sim.add_node(node(
            n,
            "64",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}}),
        ));
    }
    for i in 0..8 {
        sim.add_pod(pod(&format!("w{i}"), json!({})));
    }
    assert_eq!(sim.run().await.bound, 8);
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..8 {
        *per_node
            .entry(sim.node_of(&format!("w{i}")).unwrap())
            .or_insert(0) += 1;
    }
    // Hostname skew ≤ 3 and zones balanced: every node gets two.
    assert!(per_node.values().all(|c| *c == 2), "{per_node:?}");
}

#[tokio::test]
async fn preferred_pod_affinity_and_image_locality_score() {
    let cache = pod(
        "cache",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeName": "c"}}),
    );
    let pref = json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}});
    let nodes = vec![
        node("a", "4", json!({})),
        node("b", "4", json!({})),
        node("c", "4", json!({})),
    ];
    for _ in 0..5 {
        assert_eq!(
            place(nodes.clone(), vec![cache.clone()], pod("p", pref.clone())).await,
            Ok("c".into())
        );
    }
    // The only node holding the pod's (large) image wins.
    let with_image = node(
        "img",
        "4",
        json!({"status": {"images": [{"names": ["docker.io/library/big:1"], "sizeBytes": 900_000_000}]}}),
    );
    let nodes = vec![
        node("a", "4", json!({})),
        with_image,
        node("b", "4", json!({})),
    ];
    let p = pod(
        "p",
        json!({"spec": {"containers": [{"name": "c", "image": "big:1", "resources": {"requests": {"cpu": "100m"}}}]}}),
    );
    for _ in 0..5 {
        assert_eq!(
            place(nodes.clone(), vec![], p.clone()).await,
            Ok("img".into())
        );
    }
}

#[tokio::test]
async fn preemption_prefers_victims_without_a_disruption_budget() {
    use bosun_api_types::policy::v1::PodDisruptionBudget;
    let listers = std::sync::Arc::new(bosun_scheduler_framework::cluster::Listers::default());
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "guarded", "namespace": "d"},
        "spec": {"selector": {"matchLabels": {"app": "guarded"}}}, "status": {"disruptionsAllowed": 0,
            "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
    .unwrap();
    listers.pdbs.insert("d/guarded", std::sync::Arc::new(pdb));
    let mut sim = Simulator::with(Default::default(), Default::default(), listers).unwrap();
    sim.add_node(node("n1", "1", json!({})));
    sim.add_node(node("n2", "1", json!({})));
    let big = |name: &str, app: &str, prio: i32, at: Option<&str>| {
        pod(
            name,
            json!({"metadata": {"labels": {"app": app}}, "spec": {"priority": prio, "nodeName": at,
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "800m"}}}]}}),
        )
    };
    sim.add_pod(big("guarded", "guarded", 1, Some("n1")));
    sim.add_pod(big("free", "free", 1, Some("n2")));
    sim.add_pod(big("vip", "vip", 100, None));
    let stats = sim.run().await;
    assert_eq!((stats.bound, stats.preempted), (1, 1));
    assert!(sim.exists("guarded") && !sim.exists("free"));
    assert_eq!(sim.node_of("vip").as_deref(), Some("n2"));
    // The preemptor was nominated to the node it freed.
    assert!(sim.cluster().log().contains(
        &bosun_scheduler_framework::cluster::Recorded::Nominated("d/vip".into(), Some("n2".into()))
    ));
}
