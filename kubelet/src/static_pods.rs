//! Static pods: pods the node runs from manifest files in a directory (`--pod-manifest-path`),
//! without the API server, as upstream's file source. Each file (`*.yaml`, `*.yml`, `*.json`;
//! dotfiles ignored) holds a Pod or a PodList. A static pod is named `NAME-NODE`, lives in
//! its manifest's namespace (`default` without one), is bound to the node, tolerates every
//! `NoExecute` taint, and has a UID hashed from its manifest and the node: an edited
//! manifest is a new pod; a removed one stops.
//!
//! Each static pod has a *mirror pod* in the API server (annotation
//! `kubernetes.io/config.mirror`, owned by the Node) so `kubectl get pods` shows it and its
//! status; deleting the mirror does not stop the static pod — the kubelet makes a new
//! mirror. The pod worker runs the static pods and writes their status to their mirrors.

use bosun_api_types::Time;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Annotation: where the pod came from (`file` for static pods, `api` otherwise).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Annotation: the static pod's hash (its UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Annotation: when the kubelet first saw the pod.
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// Annotation on a mirror pod: the hash of the static pod it mirrors.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// The pod is a mirror of a static pod.
pub fn is_mirror(pod: &Value) -> bool {
    pod["metadata"]["annotations"][CONFIG_MIRROR].is_string()
}

/// The pod is a static pod (from a file, not the API).
pub fn is_static(pod: &Value) -> bool {
    pod["metadata"]["annotations"][CONFIG_SOURCE]
        .as_str()
        .is_some_and(|s| s != "api")
}

/// Reads one manifest (a Pod or a PodList, YAML or JSON) as static pods of `node`.
pub fn from_manifest(text: &[u8], node: &str) -> Result<Vec<Value>, String> {
    let doc = bosun_api_types::yaml::to_json(text).map_err(|e| e.to_string())?;
    let pods = match doc["kind"].as_str() {
        Some("Pod") => vec![doc],
        Some("PodList") => doc["items"].as_array().cloned().unwrap_or_default(),
        other => {
            return Err(format!(
                "a static pod manifest holds a Pod or a PodList, not {other:?}"
            ))
        }
    };
    pods.into_iter().map(|p| static_pod(p, node)).collect()
}

/// Upstream's defaults the pod worker relies on, for a pod that never went through the API
/// server.
fn defaulted(mut pod: Value) -> Value {
    let spec = &mut pod["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    for c in ["initContainers", "containers"] {
        for c in spec[c].as_array_mut().into_iter().flatten() {
            if c["imagePullPolicy"].is_null() {
                let image = c["image"].as_str().unwrap_or_default();
                let tag = image.rsplit('/').next().unwrap_or_default();
                let latest = !tag.contains(':') && !image.contains('@') || tag.ends_with(":latest");
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c["terminationMessagePath"].is_null() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
            }
        }
    }
    pod
}

fn static_pod(pod: Value, node: &str) -> Result<Value, String> {
    if pod["apiVersion"].as_str().is_some_and(|v| v != "v1") {
        return Err(format!("apiVersion {} is not v1", pod["apiVersion"]));
    }
    let name = pod["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("a static pod needs metadata.name")?
        .to_string();
    if pod["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        return Err(format!("pod {name}: spec.containers is required"));
    }
    let mut pod = defaulted(pod);
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    // The UID: a hash of the manifest's pod, the node and the source, as upstream's.
    let mut h = Sha256::new();
    h.update(pod.to_string().as_bytes());
    h.update(node.as_bytes());
    h.update(b"file");
    let uid: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = &mut pod["metadata"];
    meta["name"] = json!(format!("{name}-{}", node.to_lowercase()));
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uid);
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][CONFIG_SOURCE] = json!("file");
    meta["annotations"][CONFIG_HASH] = json!(uid);
    let spec = &mut pod["spec"];
    spec["nodeName"] = json!(node);
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    if !tolerations
        .iter()
        .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"] == "NoExecute")
    {
        let mut t = tolerations;
        t.push(json!({"operator": "Exists", "effect": "NoExecute"}));
        spec["tolerations"] = json!(t);
    }
    pod["status"] = json!({});
    Ok(pod)
}

/// The static pods of `node` from the manifests in `dir` (a file that cannot be read is
/// skipped, with a warning).
pub fn read_dir(dir: &Path, node: &str) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
                && p.is_file()
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match std::fs::read(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| from_manifest(&t, node))
        {
            Ok(pods) => out.extend(pods),
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "static pod manifest skipped")
            }
        }
    }
    out
}

/// The mirror pod of `pod` (a static pod), owned by the Node (`node_uid`).
pub fn mirror_of(pod: &Value, node_uid: &str) -> Value {
    let meta = &pod["metadata"];
    let mut annotations = meta["annotations"].clone();
    annotations[CONFIG_MIRROR] = meta["uid"].clone();
    annotations[CONFIG_SEEN] = json!(Time::now());
    let node = pod["spec"]["nodeName"].clone();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "labels": meta["labels"],
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node,
                                 "uid": node_uid, "controller": true}],
        },
        "spec": pod["spec"],
    })
}

/// The mirror `mirror` is current for `pod`: not being deleted, and of the same hash.
pub fn mirror_matches(mirror: &Value, pod: &Value) -> bool {
    mirror["metadata"]["deletionTimestamp"].is_null()
        && mirror["metadata"]["annotations"][CONFIG_MIRROR] == pod["metadata"]["uid"]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";

    #[test]
    fn reads_manifests_as_upstream() {
        let pods = from_manifest(MANIFEST.as_bytes(), "Node-1").unwrap();
        let p = &pods[0];
        assert_eq!(p["metadata"]["name"], "web-node-1");
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["spec"]["nodeName"], "Node-1");
        assert_eq!(p["metadata"]["annotations"][CONFIG_SOURCE], "file");
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(p["metadata"]["annotations"][CONFIG_HASH], uid);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            p["spec"]["tolerations"],
            json!([{"operator": "Exists", "effect": "NoExecute"}])
        );
        assert!(is_static(p) && !is_mirror(p));
        // The same manifest, the same UID; an edit, another; another node, another.
        let again = from_manifest(MANIFEST.as_bytes(), "Node-1").unwrap();
        assert_eq!(again[0]["metadata"]["uid"], uid);
        let edited = MANIFEST.replace("1.36", "1.37");
        let edited = from_manifest(edited.as_bytes(), "Node-1").unwrap();
        assert_ne!(edited[0]["metadata"]["uid"], uid);
        let other = from_manifest(MANIFEST.as_bytes(), "node-2").unwrap();
        assert_ne!(other[0]["metadata"]["uid"], uid);
        // A PodList; errors.
        let list = r#"{"kind":"PodList","items":[{"metadata":{"name":"a","namespace":"kube-system"},"spec":{"containers":[{"name":"c","image":"x"}]}}]}"#;
        let pods = from_manifest(list.as_bytes(), "n").unwrap();
        assert_eq!(pods[0]["metadata"]["namespace"], "kube-system");
        assert_eq!(
            pods[0]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert!(from_manifest(b"kind: Service\nmetadata: {name: s}\n", "n").is_err());
        assert!(from_manifest(b"kind: Pod\nspec: {containers: [{name: c}]}\n", "n").is_err());
        assert!(from_manifest(b"kind: Pod\nmetadata: {name: p}\n", "n").is_err());
        assert!(from_manifest(b"{not yaml", "n").is_err());
    }

    #[test]
    fn mirrors_carry_the_hash_and_the_node_owner() {
        let p = &from_manifest(MANIFEST.as_bytes(), "n1").unwrap()[0];
        let m = mirror_of(p, "node-uid");
        assert!(is_mirror(&m));
        assert_eq!(
            m["metadata"]["annotations"][CONFIG_MIRROR],
            p["metadata"]["uid"]
        );
        assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(m["metadata"]["ownerReferences"][0]["uid"], "node-uid");
        assert_eq!(m["metadata"]["labels"]["app"], "web");
        assert!(
            m["metadata"]["uid"].is_null(),
            "the API server gives the mirror its own UID"
        );
        assert!(mirror_matches(&m, p));
        let mut deleting = m.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!mirror_matches(&deleting, p));
    }

    #[test]
    fn reads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let pods = read_dir(dir.path(), "n");
        assert_eq!(pods.len(), 1);
        assert!(read_dir(&dir.path().join("missing"), "n").is_empty());
    }
}
