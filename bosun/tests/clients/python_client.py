"""Drives a bosun server with the official Python `kubernetes` client, unchanged.

Usage: python_client.py KUBECONFIG NAMESPACE
Exits non-zero (with a message) on the first behaviour that differs from Kubernetes.
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    # CRUD. The client posts bodies without apiVersion/kind for typed models it builds itself.
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "demo"}), data={"k": "v"})
    created = core.create_namespaced_config_map(ns, cm)
    check(created.metadata.uid, "create returns a uid")
    got = core.read_namespaced_config_map("cfg", ns)
    check(got.data == {"k": "v"}, "read returns the data")
    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("cfg", ns, got)
    check(replaced.data["k"] == "w", "replace")
    check(int(replaced.metadata.resource_version) > int(created.metadata.resource_version), "rv grows")
    patched = core.patch_namespaced_config_map("cfg", ns, {"data": {"extra": "1"}})
    check(patched.data == {"k": "w", "extra": "1"}, "strategic merge patch (the client's default)")
    try:
        core.replace_namespaced_config_map("cfg", ns, got)  # stale resourceVersion
        check(False, "a stale update must fail")
    except ApiException as e:
        check(e.status == 409, f"stale update is 409 Conflict, got {e.status}")
    try:
        core.read_namespaced_config_map("missing", ns)
        check(False, "reading a missing object must fail")
    except ApiException as e:
        check(e.status == 404, f"missing object is 404, got {e.status}")

    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")]),
            ),
        ),
    )
    d = apps.create_namespaced_deployment(ns, dep)
    check(d.spec.strategy.type == "RollingUpdate", "deployment defaults applied")
    check(d.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent", "container defaults")

    # Lists with selectors and pagination.
    for i in range(7):
        labels = {"app": "demo", "tier": "even" if i % 2 == 0 else "odd"}
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}", labels=labels), data={"i": str(i)})
        )
    evens = core.list_namespaced_config_map(ns, label_selector="tier=even")
    check(sorted(c.metadata.name for c in evens.items) == ["c0", "c2", "c4", "c6"], "label selector")
    named = core.list_namespaced_config_map(ns, field_selector="metadata.name=c3")
    check([c.metadata.name for c in named.items] == ["c3"], "field selector")
    names, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, label_selector="app=demo", limit=3, _continue=token)
        pages += 1
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    check(pages == 3 and len(names) == 8, f"pagination: {pages} pages, {names}")

    # Watch, resumed from a resourceVersion: sees exactly what happened after it.
    start_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late1")))
    core.delete_namespaced_config_map("c0", ns)
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 2:
            w.stop()
    check(seen == [("ADDED", "late1"), ("DELETED", "c0")], f"watch from rv: {seen}")

    # A live watch sees a change made while it runs (started from the object's creation, so
    # whether the thread connects before or after the patch, the MODIFIED event is seen).
    live = []
    created = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late2")))

    def watcher():
        w2 = watch.Watch()
        for ev in w2.stream(core.list_namespaced_config_map, ns, field_selector="metadata.name=late2",
                            resource_version=created.metadata.resource_version, timeout_seconds=10):
            live.append(ev["type"])
            if ev["type"] == "MODIFIED":
                w2.stop()

    t = threading.Thread(target=watcher)
    t.start()
    core.patch_namespaced_config_map("late2", ns, {"data": {"x": "y"}})
    t.join(15)
    check(live == ["MODIFIED"], f"live watch: {live}")

    core.delete_namespaced_config_map("cfg", ns)
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")
    core.delete_namespace(ns)
    print("python client: ok")


if __name__ == "__main__":
    main()
