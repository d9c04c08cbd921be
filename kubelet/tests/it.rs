//! The node agent against an in-process API server: registration, status, conditions and the
//! Lease heartbeat.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_api_types::coordination::v1::Lease;
use bosun_api_types::core::v1::Node;
use bosun_apiserver::ApiServer;
use bosun_client::{Api, Client, Config};
use bosun_kubelet::machine::Machine;
use bosun_kubelet::node::{NodeAgent, NodeConfig, KUBELET_VERSION};
use bosun_store::memory::MemoryStore;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn client() -> Client {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.serve(listener, std::future::pending()));
    Client::try_from_config(Config::new(url.parse().unwrap())).unwrap()
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast(name: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(name);
    cfg.status_interval = Duration::from_millis(200);
    cfg.lease_interval = Duration::from_millis(200);
    cfg.labels.insert("example.com/pool".into(), "a".into());
    cfg
}

fn condition(node: &Node, t: &str) -> Value {
    let v = serde_json::to_value(node).unwrap();
    v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_node_and_keeps_its_lease_and_status() {
    let client = client().await;
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::detect(dir.path());
    let ready: Arc<Mutex<Result<(), String>>> = Arc::new(Mutex::new(Ok(())));
    let r = ready.clone();
    let agent = NodeAgent::new(client.clone(), machine.clone(), fast("node-a"));
    let task = tokio::spawn(agent.run(move || r.lock().unwrap().clone(), std::future::pending()));

    let nodes: Api<Node> = Api::all(client.clone());
    // Registered, with its status written (the Node exists a moment before its status does).
    let node = eventually("the node registers with a status", async || {
        nodes
            .get_opt("node-a")
            .await
            .unwrap()
            .filter(|n| !serde_json::to_value(n).unwrap()["status"]["capacity"].is_null())
    })
    .await;
    let v = serde_json::to_value(&node).unwrap();
    let labels = &v["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["example.com/pool"], "a");
    let status = &v["status"];
    assert_eq!(status["capacity"]["cpu"], machine.cores.to_string());
    assert_eq!(status["capacity"]["pods"], "110");
    assert_eq!(
        status["capacity"]["memory"],
        format!("{}Ki", machine.memory_bytes / 1024)
    );
    // Allocatable memory is capacity less the 100Mi hard eviction threshold.
    assert_eq!(
        status["allocatable"]["memory"],
        format!("{}Ki", (machine.memory_bytes - (100 << 20)) / 1024)
    );
    assert_eq!(status["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
    assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    assert!(status["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["type"] == "Hostname" && a["address"] == "node-a"));
    let ready_cond = condition(&node, "Ready");
    assert_eq!(
        (ready_cond["status"].as_str(), ready_cond["reason"].as_str()),
        (Some("True"), Some("KubeletReady"))
    );
    for (t, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = condition(&node, t);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some(reason))
        );
    }

    // The Lease: owned by the Node, renewed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = eventually("the lease", async || {
        leases.get_opt("node-a").await.unwrap()
    })
    .await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(
        lease.metadata.owner_references[0].uid,
        node.metadata.uid.clone().unwrap()
    );
    let first = serde_json::to_value(spec.renew_time).unwrap();
    eventually("the lease is renewed", async || {
        let l = leases.get("node-a").await.unwrap();
        (serde_json::to_value(l.spec.unwrap().renew_time).unwrap() != first).then_some(())
    })
    .await;

    // Heartbeats move; the transition time stays while Ready holds.
    let transition = ready_cond["lastTransitionTime"].clone();
    let heartbeat = ready_cond["lastHeartbeatTime"].clone();
    let later = eventually("a later heartbeat", async || {
        let c = condition(&nodes.get("node-a").await.unwrap(), "Ready");
        (c["lastHeartbeatTime"] != heartbeat).then_some(c)
    })
    .await;
    assert_eq!(later["lastTransitionTime"], transition);

    // Not ready: the condition says why.
    *ready.lock().unwrap() = Err("container runtime is down".into());
    let not_ready = eventually("Ready=False", async || {
        let c = condition(&nodes.get("node-a").await.unwrap(), "Ready");
        (c["status"] == "False").then_some(c)
    })
    .await;
    assert_eq!(not_ready["reason"], "KubeletNotReady");
    assert_eq!(not_ready["message"], "container runtime is down");
    task.abort();

    // A restarted agent re-registers the existing Node, updating its labels.
    let mut cfg = fast("node-a");
    cfg.labels.insert("example.com/pool".into(), "b".into());
    let again = NodeAgent::new(client.clone(), machine, cfg);
    let uid = again.register().await.unwrap();
    assert_eq!(uid, node.metadata.uid.unwrap());
    let n = nodes.get("node-a").await.unwrap();
    assert_eq!(
        n.metadata
            .labels
            .get("example.com/pool")
            .map(String::as_str),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_nodes_pods_reports_them_and_finishes_their_deletion() {
    use bosun_api_types::core::v1::Pod;
    use bosun_client::{DeleteParams, PostParams};
    use bosun_cri::simulated::SimulatedRuntime;
    use bosun_cri::RuntimeService;
    use bosun_kubelet::pods::PodWorker;
    let client = client().await;
    let rt = Arc::new(SimulatedRuntime::new([10, 244, 1]));
    // A back-off long enough that a crash-looping container stays in it for the test.
    let worker = Arc::new(
        PodWorker::new(
            client.clone(),
            "node-a".into(),
            "192.0.2.2".into(),
            rt.clone(),
            "/var/log/pods".into(),
        )
        .with_backoff(Duration::from_secs(3600), Duration::from_secs(7200)),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, node: &str, annotations: Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                     "env": [{"name": "A", "value": "1"}]}]},
        }))
        .unwrap()
    };
    pods.create(
        &PostParams::default(),
        &pod("web", "node-a", serde_json::json!({})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("elsewhere", "node-b", serde_json::json!({})),
    )
    .await
    .unwrap();
    let exits = serde_json::json!({"simulated.bosun.dev/run-seconds": "0", "simulated.bosun.dev/exit-code": "3"});
    let mut fails = serde_json::to_value(pod("fails", "node-a", exits.clone())).unwrap();
    fails["spec"]["restartPolicy"] = serde_json::json!("Never");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(fails).unwrap(),
    )
    .await
    .unwrap();
    // The same container under the default policy (Always): restarted once at once, then
    // held in crash-loop back-off.
    pods.create(&PostParams::default(), &pod("crashes", "node-a", exits))
        .await
        .unwrap();
    // Init containers run first, in order; each must succeed.
    let mut init = serde_json::to_value(pod(
        "init",
        "node-a",
        serde_json::json!({"simulated.bosun.dev/run-seconds": "0"}),
    ))
    .unwrap();
    init["spec"]["restartPolicy"] = serde_json::json!("OnFailure");
    init["spec"]["initContainers"] = serde_json::json!([
        {"name": "first", "image": "busybox"},
        {"name": "second", "image": "busybox"},
    ]);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(init).unwrap(),
    )
    .await
    .unwrap();
    worker.sync().await.unwrap();
    let web = serde_json::to_value(pods.get("web").await.unwrap()).unwrap();
    assert_eq!(web["status"]["phase"], "Running", "{web}");
    assert!(web["status"]["podIP"]
        .as_str()
        .unwrap()
        .starts_with("10.244.1."));
    assert_eq!(web["status"]["hostIP"], "192.0.2.2");
    let cs = &web["status"]["containerStatuses"][0];
    assert_eq!(
        (cs["name"].as_str(), cs["ready"].as_bool()),
        (Some("c"), Some(true))
    );
    assert!(cs["state"]["running"]["startedAt"].is_string());
    let ready = web["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    // Only this node's pods run here.
    let other = serde_json::to_value(pods.get("elsewhere").await.unwrap()).unwrap();
    assert!(other["status"]["phase"].is_null() || other["status"]["phase"] == "Pending");
    assert_eq!(
        rt.list_pod_sandbox(Default::default())
            .await
            .unwrap()
            .items
            .len(),
        4,
        "web, fails, crashes and init run here"
    );

    // A container that exits with 3 under restartPolicy Never: the pod fails.
    let failed = eventually("the failing pod's phase", async || {
        worker.sync().await.unwrap();
        let v = serde_json::to_value(pods.get("fails").await.unwrap()).unwrap();
        (v["status"]["phase"] == "Failed").then_some(v)
    })
    .await;
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(failed["status"]["containerStatuses"][0]["restartCount"], 0);
    // Under Always: one restart, then CrashLoopBackOff with the last exit as lastState; the
    // pod stays Running, as upstream's.
    let crashing = eventually("the crash loop", async || {
        worker.sync().await.unwrap();
        let v = serde_json::to_value(pods.get("crashes").await.unwrap()).unwrap();
        (v["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(v)
    })
    .await;
    let cs = &crashing["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 1, "{crashing}");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert!(cs["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .starts_with("back-off 1h0m0s restarting failed container=c pod=crashes_default("));
    assert_eq!(crashing["status"]["phase"], "Running");
    // Init containers, then the container; all succeed under OnFailure: Succeeded.
    let done = eventually("the init pod's end", async || {
        worker.sync().await.unwrap();
        let v = serde_json::to_value(pods.get("init").await.unwrap()).unwrap();
        (v["status"]["phase"] == "Succeeded").then_some(v)
    })
    .await;
    let inits = done["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2, "{done}");
    for (s, name) in inits.iter().zip(["first", "second"]) {
        assert_eq!(s["name"], name);
        assert_eq!(s["state"]["terminated"]["exitCode"], 0);
        assert_eq!(s["ready"], true);
    }
    let first = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(
        first <= second,
        "the second init container started after the first ended"
    );
    let initialized = done["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .unwrap()
        .clone();
    assert_eq!(initialized["status"], "True");
    assert_eq!(done["status"]["qosClass"], "BestEffort");

    // Deleting: the kubelet stops the pod, removes its sandbox and finishes the deletion.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(
        pods.get_opt("web").await.unwrap().is_some(),
        "graceful deletion waits for the kubelet"
    );
    worker.sync().await.unwrap();
    assert!(pods.get_opt("web").await.unwrap().is_none());
    // Finished pods keep their sandboxes until they are deleted; the web pod's is gone.
    assert_eq!(
        rt.list_pod_sandbox(Default::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    // A pod that cannot start says why, and leaves no sandbox behind.
    let mut v = serde_json::to_value(pod("never", "node-a", serde_json::json!({}))).unwrap();
    v["spec"]["containers"][0]["image"] = serde_json::json!("not-here:1");
    v["spec"]["containers"][0]["imagePullPolicy"] = serde_json::json!("Never");
    let never: Pod = serde_json::from_value(v).unwrap();
    pods.create(&PostParams::default(), &never).await.unwrap();
    worker.sync().await.unwrap();
    let v = serde_json::to_value(pods.get("never").await.unwrap()).unwrap();
    assert_eq!(v["status"]["phase"], "Pending");
    let waiting = &v["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ErrImageNeverPull", "{v}");
    assert!(waiting["message"].as_str().unwrap().contains("not-here:1"));
    assert_eq!(
        rt.list_pod_sandbox(Default::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

/// GETs `path` from the server at `addr`; the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_usage_and_evicts_under_pressure() {
    use bosun_api_types::core::v1::Pod;
    use bosun_client::PostParams;
    use bosun_cri::simulated::{SimulatedRuntime, MEMORY_BYTES};
    use bosun_cri::v1::{ListPodSandboxRequest, PodSandboxState};
    use bosun_cri::RuntimeService;
    use bosun_kubelet::eviction::{EvictionManager, Thresholds};
    use bosun_kubelet::pods::PodWorker;
    use bosun_kubelet::server::KubeletServer;
    use bosun_kubelet::stats::NodeUsage;
    let client = client().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(SimulatedRuntime::new([10, 244, 1]));
    let worker = Arc::new(PodWorker::new(
        client.clone(),
        "node-a".into(),
        "192.0.2.2".into(),
        rt.clone(),
        dir.path().join("logs"),
    ));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, mib: u64, requests: Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {MEMORY_BYTES: (mib << 20).to_string()}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox",
                     "resources": {"requests": requests}}]},
        }))
        .unwrap()
    };
    pods.create(
        &PostParams::default(),
        &pod("hog", 200, serde_json::json!({})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("modest", 10, serde_json::json!({"memory": "100Mi"})),
    )
    .await
    .unwrap();
    worker.sync().await.unwrap();

    // The kubelet server reports the usage.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rt_dyn: Arc<dyn RuntimeService> = rt.clone();
    tokio::spawn(
        KubeletServer::new(
            client.clone(),
            "node-a".into(),
            rt_dyn,
            dir.path().to_path_buf(),
        )
        .serve(listener, std::future::pending()),
    );
    let summary: Value = serde_json::from_str(&get(addr, "/stats/summary").await).unwrap();
    assert_eq!(summary["node"]["nodeName"], "node-a");
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    let hog = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "hog")
        .unwrap();
    assert_eq!(hog["podRef"]["namespace"], "default");
    assert_eq!(hog["memory"]["workingSetBytes"], 200u64 << 20);
    assert_eq!(hog["containers"][0]["name"], "c");
    let resource = get(addr, "/metrics/resource").await;
    assert!(
        resource.contains(&format!(
            "pod_memory_working_set_bytes{{namespace=\"default\",pod=\"hog\"}} {} ",
            200u64 << 20
        )),
        "{resource}"
    );
    assert!(resource.contains("container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"modest\"}"), "{resource}");
    assert!(
        resource.contains("\nresource_scrape_error 0\n"),
        "{resource}"
    );
    let metrics = get(addr, "/metrics").await;
    assert!(metrics.contains("\nkubelet_running_pods 2\n"), "{metrics}");
    assert!(
        metrics.contains("kubelet_running_containers{container_state=\"running\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );

    // Short of memory: the pod furthest above its request goes first, and only it.
    let eviction = EvictionManager::new(
        client.clone(),
        "node-a".into(),
        worker.clone(),
        rt.clone(),
        dir.path().to_path_buf(),
        Thresholds::default(),
    )
    .with_transition_period(Duration::from_millis(300));
    let pressure = eviction.pressure();
    let starved = NodeUsage {
        memory_capacity: 1 << 30,
        memory_working_set: (1 << 30) - (50 << 20),
        fs_capacity: 100,
        fs_available: 50,
        ..Default::default()
    };
    assert_eq!(
        eviction.check(&starved).await.unwrap().as_deref(),
        Some("default/hog")
    );
    assert!(pressure.memory() && !pressure.disk());
    let hog = serde_json::to_value(pods.get("hog").await.unwrap()).unwrap();
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
    assert_eq!(hog["status"]["reason"], "Evicted");
    assert!(
        hog["status"]["message"].as_str().unwrap().starts_with(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi."
        ),
        "{hog}"
    );
    assert!(hog["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "TerminationByKubelet"));
    let hog_uid = hog["metadata"]["uid"].as_str().unwrap().to_string();
    let sandboxes = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items;
    let state_of = |uid: &str| {
        sandboxes
            .iter()
            .find(|s| s.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid))
            .map(|s| s.state)
    };
    assert_eq!(
        state_of(&hog_uid),
        Some(PodSandboxState::SandboxNotready as i32)
    );
    // The pod worker leaves an evicted pod alone.
    worker.sync().await.unwrap();
    let hog = serde_json::to_value(pods.get("hog").await.unwrap()).unwrap();
    assert_eq!(hog["status"]["phase"], "Failed");
    let modest = serde_json::to_value(pods.get("modest").await.unwrap()).unwrap();
    assert_eq!(modest["status"]["phase"], "Running");
    // The pressure holds for the transition period after the memory comes back.
    let fine = NodeUsage {
        memory_working_set: 100 << 20,
        ..starved
    };
    assert_eq!(eviction.check(&fine).await.unwrap(), None);
    assert!(pressure.memory());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(eviction.check(&fine).await.unwrap(), None);
    assert!(!pressure.memory());
    // The node reports what the manager found.
    let conds =
        bosun_kubelet::node::conditions(&[], Ok(()), (true, false), &bosun_api_types::Time::now());
    let mem = conds
        .iter()
        .find(|c| c["type"] == "MemoryPressure")
        .unwrap();
    assert_eq!(
        (mem["status"].as_str(), mem["reason"].as_str()),
        (Some("True"), Some("KubeletHasInsufficientMemory"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_static_pods_with_mirror_pods() {
    use bosun_api_types::core::v1::{Node, Pod};
    use bosun_client::{DeleteParams, PostParams};
    use bosun_cri::simulated::SimulatedRuntime;
    use bosun_cri::v1::ListPodSandboxRequest;
    use bosun_cri::RuntimeService;
    use bosun_kubelet::pods::PodWorker;
    let client = client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}})).unwrap();
    let node_uid = nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\nspec:\n  containers: [{name: c, image: busybox:1}]\n",
    )
    .unwrap();
    let rt = Arc::new(SimulatedRuntime::new([10, 244, 1]));
    let worker = Arc::new(
        PodWorker::new(
            client.clone(),
            "node-a".into(),
            "192.0.2.2".into(),
            rt.clone(),
            "/var/log/pods".into(),
        )
        .with_static_pods(dir.path().to_path_buf()),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    // First pass: the pod runs and its mirror is made; the next writes the status to it.
    worker.sync().await.unwrap();
    worker.sync().await.unwrap();
    let mirror = serde_json::to_value(pods.get("web-node-a").await.unwrap()).unwrap();
    let hash = mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].clone();
    assert!(hash.is_string(), "{mirror}");
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["uid"], node_uid);
    assert_eq!(mirror["status"]["phase"], "Running", "{mirror}");
    let sandboxes = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sandboxes.len(), 1);
    // The sandbox is the static pod's (its UID is the hash), not the mirror's.
    assert_eq!(
        sandboxes[0]
            .labels
            .get("io.kubernetes.pod.uid")
            .map(String::as_str),
        hash.as_str()
    );
    // Deleting the mirror does not stop the pod; a new mirror comes.
    pods.delete("web-node-a", &DeleteParams::default())
        .await
        .unwrap();
    let first = mirror["metadata"]["uid"].clone();
    eventually("a new mirror", async || {
        worker.sync().await.unwrap();
        let m = serde_json::to_value(pods.get_opt("web-node-a").await.unwrap()?).unwrap();
        (m["metadata"]["uid"] != first && m["metadata"]["deletionTimestamp"].is_null())
            .then_some(())
    })
    .await;
    let after = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, sandboxes[0].id, "the static pod kept running");
    // Without its manifest the pod stops and its mirror goes.
    std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
    worker.sync().await.unwrap();
    assert!(pods.get_opt("web-node-a").await.unwrap().is_none());
    assert!(rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_private_images_with_the_pods_pull_secrets() {
    use base64::Engine as _;
    use bosun_api_types::core::v1::{Pod, Secret};
    use bosun_client::PostParams;
    use bosun_cri::simulated::{SimulatedRuntime, PRIVATE_REGISTRY};
    use bosun_kubelet::pods::PodWorker;
    let client = client().await;
    let rt = Arc::new(SimulatedRuntime::new([10, 244, 1]));
    let worker = Arc::new(PodWorker::new(
        client.clone(),
        "node-a".into(),
        "192.0.2.2".into(),
        rt.clone(),
        "/var/log/pods".into(),
    ));
    let config = |user: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret"));
        let json = serde_json::json!({"auths": {PRIVATE_REGISTRY: {"auth": auth}}});
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for (name, user) in [("wrong", "nobody"), ("right", "bosun")] {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": config(user)},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, pull_secrets: Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "imagePullSecrets": pull_secrets,
                     "containers": [{"name": "c", "image": format!("{PRIVATE_REGISTRY}/app:1")}]},
        }))
        .unwrap()
    };
    // Without the right credentials the pull fails; with them (after a wrong one and a
    // missing one) it works.
    // One after the other: once the image is on the node, IfNotPresent would not pull again.
    pods.create(
        &PostParams::default(),
        &pod("denied", serde_json::json!([{"name": "wrong"}])),
    )
    .await
    .unwrap();
    let _ = worker.sync().await;
    let denied = serde_json::to_value(pods.get("denied").await.unwrap()).unwrap();
    assert_eq!(
        denied["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull",
        "{denied}"
    );
    pods.create(
        &PostParams::default(),
        &pod(
            "allowed",
            serde_json::json!([{"name": "missing"}, {"name": "wrong"}, {"name": "right"}]),
        ),
    )
    .await
    .unwrap();
    let _ = worker.sync().await;
    let allowed = serde_json::to_value(pods.get("allowed").await.unwrap()).unwrap();
    assert_eq!(allowed["status"]["phase"], "Running", "{allowed}");
}

/// A GET over TLS with `tls`'s trust and client certificate, and an optional bearer token:
/// (status, body).
async fn tls_get(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// A TLS client trusting `ca_pem`, presenting `identity` (cert, key PEM) if any.
fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                rustls_pemfile::certs(&mut cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls_pemfile::private_key(&mut key.as_bytes())
                    .unwrap()
                    .unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// The kubelet's server over TLS, as a joined node runs it: its serving certificate comes
/// through the CSR API (approved and signed for the node itself), the API server's kubelet
/// client certificate gets in, and everyone else is authenticated (TokenReview) and authorized
/// (SubjectAccessReview on nodes/…) by the API server. Certificates are renewed through the
/// CSR API with the node's own credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_server_speaks_tls_and_asks_the_api_server_who_may_do_what() {
    use bosun_apiserver::auth::{self, Pipeline};
    use bosun_apiserver::pki::Pki;
    use bosun_apiserver::rbac::{keep_current, RbacAuthorizer};
    use bosun_cri::simulated::SimulatedRuntime;
    use bosun_kubelet::auth::{server_config, KubeletAuth, ServingCertificate};
    use bosun_kubelet::bootstrap::{
        keep_renewed, renewal_time, request_certificate, validity, CertificateRequest,
        KUBELET_SIGNER,
    };
    use bosun_kubelet::server::KubeletServer;
    let dir = tempfile::tempdir().unwrap();
    let pki = Arc::new(Pki::load_or_create(&dir.path().join("pki")).unwrap());
    let store: Arc<dyn bosun_store::Store> = Arc::new(MemoryStore::new());
    let rbac = RbacAuthorizer::default();
    let nodes = bosun_apiserver::node::NodeAuthorizer::keep_current(Arc::clone(&store))
        .await
        .unwrap();
    let authorizer: Arc<dyn auth::Authorizer> = Arc::new(auth::FirstOpinion(vec![
        Arc::new(nodes),
        Arc::new(rbac.clone()),
    ]));
    let tokens = auth::TokenFile::parse("alice-token,alice,alice-uid\n").unwrap();
    let server = ApiServer::build(
        Arc::clone(&store),
        bosun_apiserver::ResourceTable::builtin(),
        bosun_apiserver::Config::default(),
        Pipeline {
            authenticator: Arc::new(auth::Union(vec![Arc::new(auth::X509), Arc::new(tokens)])),
            authorizer: authorizer.clone(),
            ..Pipeline::default()
        },
    );
    server.bootstrap().await.unwrap();
    keep_current(Arc::clone(&store), rbac).await.unwrap();
    bosun_apiserver::certificates::run_signer(server.clone(), pki.clone(), authorizer);
    let serving = pki
        .issue_serving("kube-apiserver", &["127.0.0.1".into()])
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(server.clone().serve_tls(
        listener,
        pki.server_config(&serving).unwrap(),
        std::future::pending(),
    ));
    let client_as = |user: &str, group: &str| {
        let cert = pki.issue_client(user, &[group.into()]).unwrap();
        let mut c = Config::new(url.parse().unwrap());
        c.tls.ca = Some(pki.ca_pem().as_bytes().to_vec());
        c.tls.identity = Some((cert.cert_pem.into_bytes(), cert.key_pem.into_bytes()));
        Client::try_from_config(c).unwrap()
    };
    let node = client_as("system:node:node-a", "system:nodes");
    let admin = client_as("kubernetes-admin", "system:masters");

    // The node asks for its serving certificate; the cluster approves and signs it.
    let wait = Duration::from_secs(20);
    let issued = request_certificate(
        &node,
        &CertificateRequest::kubelet_serving("node-a", vec!["127.0.0.1".into(), "node-a".into()]),
        wait,
    )
    .await
    .unwrap();
    // Not for another node's name.
    let mut other = CertificateRequest::kubelet_serving("node-b", vec!["127.0.0.1".into()]);
    other.user = "system:node:node-b".into();
    let err = request_certificate(&node, &other, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, bosun_kubelet::bootstrap::Error::Timeout(_)),
        "{err}"
    );

    let serving = Arc::new(
        ServingCertificate::new(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap(),
    );
    let kubelet_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = kubelet_listener.local_addr().unwrap();
    let rt: Arc<dyn bosun_cri::RuntimeService> = Arc::new(SimulatedRuntime::new([10, 244, 1]));
    tokio::spawn(
        KubeletServer::new(node.clone(), "node-a".into(), rt, dir.path().to_path_buf())
            .with_auth(KubeletAuth::new(node.clone(), "node-a"))
            .serve_tls(
                kubelet_listener,
                server_config(pki.ca_pem().as_bytes(), serving.clone()).unwrap(),
                std::future::pending(),
            ),
    );

    // The API server's kubelet client certificate (system:masters) may do anything; its TLS
    // configuration checks the kubelet's certificate against the cluster CA.
    let apiserver_client = pki
        .issue_client("kube-apiserver-kubelet-client", &["system:masters".into()])
        .unwrap();
    let as_apiserver = pki.kubelet_client_config(&apiserver_client).unwrap();
    assert_eq!(
        tls_get(addr, as_apiserver.clone(), "/healthz", None)
            .await
            .unwrap(),
        (200, "ok".into())
    );
    let (code, body) = tls_get(addr, as_apiserver.clone(), "/stats/summary", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");

    // Nobody: 401.
    let anonymous = tls_client(pki.ca_pem(), None);
    assert_eq!(
        tls_get(addr, anonymous.clone(), "/pods", None)
            .await
            .unwrap(),
        (401, "Unauthorized".into())
    );
    assert_eq!(
        tls_get(addr, anonymous.clone(), "/pods", Some("forged"))
            .await
            .unwrap()
            .0,
        401
    );
    // alice (by token, through a TokenReview) is someone, but may not read the node's stats.
    assert_eq!(
        tls_get(
            addr,
            anonymous.clone(),
            "/stats/summary",
            Some("alice-token")
        )
        .await
        .unwrap(),
        (
            403,
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)".into()
        )
    );
    // Another node (a client certificate) may not exec on this one.
    let node_b = pki
        .issue_client("system:node:node-b", &["system:nodes".into()])
        .unwrap();
    let as_node_b = tls_client(pki.ca_pem(), Some((&node_b.cert_pem, &node_b.key_pem)));
    assert_eq!(
        tls_get(addr, as_node_b, "/exec/default/p/c?command=ls", None)
            .await
            .unwrap()
            .0,
        403
    );
    // Bound to a role over nodes/proxy, alice gets in.
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "node-proxier"},
        "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}],
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-node-proxier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-proxier"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    });
    for (path, body) in [
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            binding,
        ),
    ] {
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let _: Value = admin.request(req).await.unwrap();
    }
    // Once the API server has the binding (the kubelet keeps a refusal for 30 s, so it is
    // asked only then), the kubelet lets her in.
    eventually("the binding in force", async || {
        let review = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "alice", "resourceAttributes": {
                "verb": "get", "resource": "nodes", "subresource": "proxy", "name": "node-a"}},
        });
        let req = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                review.to_string(),
            )))
            .unwrap();
        let answer: Value = admin.request(req).await.unwrap();
        (answer["status"]["allowed"] == true).then_some(())
    })
    .await;
    assert_eq!(
        tls_get(addr, anonymous.clone(), "/healthz", Some("alice-token"))
            .await
            .unwrap(),
        (200, "ok".into())
    );

    // A client certificate from another CA does not get through the handshake, and a client
    // trusting another CA does not trust the kubelet.
    let stranger = Pki::load_or_create(&dir.path().join("stranger")).unwrap();
    let forged = stranger
        .issue_client("kube-apiserver-kubelet-client", &["system:masters".into()])
        .unwrap();
    let forger = tls_client(pki.ca_pem(), Some((&forged.cert_pem, &forged.key_pem)));
    assert!(tls_get(addr, forger, "/healthz", None).await.is_err());
    assert!(
        tls_get(addr, tls_client(stranger.ca_pem(), None), "/healthz", None)
            .await
            .is_err()
    );

    // Renewal: a certificate past 80% of its life (here, past all of it) is renewed through the CSR API with the
    // node's own credentials (selfnodeclient), handed over, and then waited on again.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut old = rcgen::CertificateParams::default();
    old.not_before = rcgen::date_time_ymd(2020, 1, 1);
    old.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let aging = old.self_signed(&key).unwrap().pem();
    assert!(renewal_time(&aging).unwrap() < std::time::SystemTime::now());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(keep_renewed(
        node.clone(),
        CertificateRequest::client("system:node:node-a", Some("system:nodes"), KUBELET_SIGNER),
        aging,
        move |issued| tx.send(issued.clone()).map_err(|e| e.to_string()),
    ));
    let renewed = tokio::time::timeout(wait, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let (from, to) = validity(&renewed.cert_pem).unwrap();
    assert!(to.duration_since(from).unwrap() > Duration::from_secs(300 * 86400));
    assert!(renewal_time(&renewed.cert_pem).unwrap() > std::time::SystemTime::now());
    // The renewed certificate is the node's, and the next one is not asked for yet.
    let user = bosun_kubelet::auth::certificate_user(
        rustls_pemfile::certs(&mut renewed.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    assert_eq!(user.name, "system:node:node-a");
    assert_eq!(user.groups[0], "system:nodes");
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv())
        .await
        .is_err());
    // A replaced serving certificate is served from the next connection on.
    let again = request_certificate(
        &node,
        &CertificateRequest::kubelet_serving("node-a", vec!["127.0.0.1".into()]),
        wait,
    )
    .await
    .unwrap();
    serving
        .replace(again.cert_pem.as_bytes(), again.key_pem.as_bytes())
        .unwrap();
    assert_eq!(
        tls_get(addr, as_apiserver, "/healthz", None)
            .await
            .unwrap()
            .0,
        200
    );
}
