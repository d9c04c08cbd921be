// Shared by api-types/benches/codec.rs and bench-peers/k8s-openapi (via include!): a pod as a
// controller-managed workload looks after scheduling (two containers, probes, resources,
// volumes, tolerations, affinity, running status), made unique 100 times, as a PodList.
fn pod_list_json() -> serde_json::Value {
    let template: serde_json::Value =
        serde_json::from_str(include_str!("pod.json")).expect("pod.json is valid JSON");
    let items: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            let mut p = template.clone();
            p["metadata"]["name"] = format!("web-7d4b9c8f6d-{i:05}").into();
            p["metadata"]["uid"] = format!("0c7f1e2a-5b1d-4f8e-9a3c-{i:012}").into();
            p["metadata"]["resourceVersion"] = (1000 + i).to_string().into();
            p["spec"]["nodeName"] = format!("node-{}", i % 7).into();
            p["status"]["podIP"] = format!("10.244.{}.{}", i / 250, i % 250 + 2).into();
            p
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "123456"}, "items": items
    })
}
