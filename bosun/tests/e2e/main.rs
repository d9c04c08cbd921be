//! End-to-end: the `bosun` binary (release build when `BOSUN_BIN` points at it, as
//! `scripts/test-all` does) driven by every real kubectl from 1.27 to 1.33.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod hostile;
mod kube_client;
mod memory;
mod release;
mod tour;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    child: Child,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bosun_bin() -> PathBuf {
    std::env::var_os("BOSUN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bosun")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Users of the token file every test server is started with (`--token-auth-file`), beside
/// the admin of the kubeconfig: `alice` (no groups, so no rights beyond signing in until a
/// test binds her a role).
const TOKENS: &str = "alice-token,alice,1001\n";

/// The API server's flags every test server gets: the test users' token file, and the relay
/// address the node agents of the agent test reach it at in its certificate.
fn server_flags(data: &Path) -> Vec<std::ffi::OsString> {
    let tokens = data.join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    vec![
        "--token-auth-file".into(),
        tokens.into(),
        "--tls-san".into(),
        "172.31.250.1".into(),
    ]
}

/// Starts `bosun server` with extra `flags` on a fresh data directory; the returned cluster
/// owns the process.
fn bare_server(flags: &[&str]) -> Cluster {
    let data = tempfile::tempdir().unwrap();
    let kubeconfig = data.path().join("kubeconfig");
    let port = free_port();
    let mut child = Command::new(bosun_bin())
        .arg("server")
        .args(server_flags(data.path()))
        .args(flags)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--port", &port.to_string(), "--write-kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bosun binary");
    let started = Instant::now();
    wait_for_kubeconfig(&kubeconfig, &mut child, started);
    Cluster {
        child,
        kubeconfig,
        home: tempfile::tempdir().unwrap(),
        _data: data,
    }
}

/// Starts `bosun server` on `data` and waits until it has written its kubeconfig (it does so
/// once it listens).
fn spawn_server(data: &Path, port: u16) -> (Child, PathBuf) {
    let kubeconfig = data.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let started = Instant::now();
    let mut child = Command::new(bosun_bin())
        .arg("server")
        .args(server_flags(data))
        .arg("--data-dir")
        .arg(data)
        .args(["--port", &port.to_string(), "--write-kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bosun binary");
    wait_for_kubeconfig(&kubeconfig, &mut child, started);
    eprintln!("bosun server ready in {:?}", started.elapsed());
    (child, kubeconfig)
}

/// Waits until `bosun` (`child`, started at `started`) has written `kubeconfig`, which it does
/// once it listens; fails if it exits first or takes a minute.
fn wait_for_kubeconfig(kubeconfig: &Path, child: &mut Child, started: Instant) {
    while !kubeconfig.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bosun exited before writing {}",
            kubeconfig.display()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bosun wrote no kubeconfig within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start() -> Cluster {
    let data = tempfile::tempdir().unwrap();
    let (child, kubeconfig) = spawn_server(data.path(), free_port());
    Cluster {
        child,
        kubeconfig,
        home: tempfile::tempdir().unwrap(),
        _data: data,
    }
}

/// The real kubectl binaries installed beside the dispatcher on PATH.
fn kubectl_dir() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .unwrap();
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = path.parent().expect("kubectl on PATH").to_path_buf();
    assert!(
        dir.join("kubectl.1.32").exists(),
        "real kubectl binaries not found beside {}",
        path.display()
    );
    dir
}

struct Kubectl<'a> {
    bin: PathBuf,
    cluster: &'a Cluster,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("HOME", self.cluster.home.path())
            .output()
            .unwrap()
    }

    /// Runs with another kubeconfig (another user of the same cluster).
    fn run_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.cluster.home.path())
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

fn scenario(k: &Kubectl<'_>, ns: &str, dir: &Path) {
    let version = k.json(&["version"]);
    assert_eq!(version["serverVersion"]["minor"], "32");
    assert_eq!(
        k.ok(&["create", "namespace", ns]).trim(),
        format!("namespace/{ns} created")
    );
    // The in-process ServiceAccount controller gives the namespace its default account.
    eventually(
        || {
            k.run(&["get", "serviceaccount", "default", "-n", ns])
                .status
                .success()
        },
        "the default service account",
    );
    // kubectl 1.32+ sends `create <generator>` bodies as protobuf.
    k.ok(&["create", "configmap", "cm", "--from-literal=a=b", "-n", ns]);
    let cm = k.json(&["get", "configmap", "cm", "-n", ns]);
    assert_eq!(cm["data"]["a"], "b");
    assert_eq!(cm["metadata"]["namespace"], ns);
    let table = k.ok(&["get", "configmaps", "-n", ns]);
    assert!(table.lines().any(|l| l.starts_with("cm ")), "{table}");
    k.ok(&["label", "configmap", "cm", "x=y", "-n", ns]);
    assert_eq!(
        k.ok(&["get", "cm", "-n", ns, "-l", "x=y", "-o", "name"])
            .trim(),
        "configmap/cm"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "-n",
            ns,
            "--field-selector",
            "metadata.name=cm",
            "-o",
            "jsonpath={.items[0].metadata.labels.x}"
        ]),
        "y"
    );
    k.ok(&["annotate", "configmap", "cm", "note=hello", "-n", ns]);
    k.ok(&[
        "patch",
        "configmap",
        "cm",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"c":"d"}}"#,
    ]);
    let cm = k.json(&["get", "configmap", "cm", "-n", ns]);
    assert_eq!(
        (
            cm["data"]["c"].as_str(),
            cm["metadata"]["annotations"]["note"].as_str()
        ),
        (Some("d"), Some("hello"))
    );
    k.ok(&["create", "deployment", "web", "--image=nginx", "-n", ns]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );
    apply(k, ns, dir);
    custom_resources(k, ns, dir);
    generators_scale_and_watch(k, ns);
    inspect_edit_wait_delete(k, ns, dir);
    // create -f with a file, validation off.
    let file = dir.join(format!("{ns}.json"));
    std::fs::write(
        &file,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": ns},
            "stringData": {"p": "q"}
        })
        .to_string(),
    )
    .unwrap();
    k.ok(&["create", "--validate=false", "-f", file.to_str().unwrap()]);
    let s = k.json(&["get", "secret", "s", "-n", ns]);
    assert_eq!(s["type"], "Opaque");
    assert!(k.ok(&["get", "cm", "-A"]).contains(ns));
    k.ok(&["delete", "configmap", "cm", "-n", ns]);
    let gone = k.run(&["get", "configmap", "cm", "-n", ns]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
    let resources = k.ok(&["api-resources", "-o", "name"]);
    assert!(resources.lines().any(|l| l == "pods"), "{resources}");
    assert!(
        resources.lines().any(|l| l == "deployments.apps"),
        "{resources}"
    );
    assert!(k.ok(&["api-versions"]).lines().any(|l| l == "apps/v1"));
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

/// A multi-document manifest for `kubectl apply`.
fn manifest(ns: &str, replicas: u32, image: &str, extra_label: bool) -> String {
    let label = if extra_label { "\n    tier: front" } else { "" };
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: {ns}
  labels:
    app: app{label}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: app}}
  template:
    metadata:
      labels: {{app: app}}
    spec:
      containers:
      - name: main
        image: {image}
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
stringData:
  user: admin
"#
    )
}

/// Client-side apply (OpenAPI-backed validation, last-applied annotation, strategic merge
/// patch on the second apply), patch types, explain, strict field validation.
fn apply(k: &Kubectl<'_>, ns: &str, dir: &Path) {
    let file = dir.join(format!("{ns}-app.yaml"));
    std::fs::write(&file, manifest(ns, 1, "nginx:1.26", false)).unwrap();
    let f = file.to_str().unwrap();
    let out = k.ok(&["apply", "-f", f]);
    assert!(out.contains("deployment.apps/app created"), "{out}");
    let out = k.ok(&["apply", "-f", f]);
    assert!(out.contains("deployment.apps/app unchanged"), "{out}");
    // Something else adds a container; the second apply must merge containers by name and
    // keep it, as a strategic merge patch does.
    k.ok(&[
        "patch",
        "deploy",
        "app",
        "-n",
        ns,
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"injected","image":"pause"}]}}}}"#,
    ]);
    std::fs::write(&file, manifest(ns, 3, "nginx:1.27", true)).unwrap();
    let out = k.ok(&["apply", "-f", f]);
    assert!(out.contains("deployment.apps/app configured"), "{out}");
    let d = k.json(&["get", "deploy", "app", "-n", ns]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["generation"], 3);
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "sidecar", "injected"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap()
            .contains("nginx:1.27")
    );
    k.ok(&[
        "patch",
        "deploy",
        "app",
        "-n",
        ns,
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "app",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
    let bad = k.run(&[
        "patch",
        "deploy",
        "app",
        "-n",
        ns,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nothing"}]"#,
    ]);
    assert!(!bad.status.success());
    // Unknown fields: rejected under kubectl's default strict validation, warned about with
    // --validate=warn.
    let typo = dir.join(format!("{ns}-typo.yaml"));
    std::fs::write(
        &typo,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: {ns}\n  labelz: {{a: b}}\n"),
    )
    .unwrap();
    let rejected = k.run(&["apply", "-f", typo.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(!rejected.status.success());
    assert!(
        stderr.contains("unknown field \"metadata.labelz\""),
        "{stderr}"
    );
    let warned = k.run(&["apply", "--validate=warn", "-f", typo.to_str().unwrap()]);
    assert!(warned.status.success());
    assert!(String::from_utf8_lossy(&warned.stderr).contains("unknown field"));
    let explain = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("FIELD: containers <[]Container>"),
        "{explain}"
    );
    k.ok(&["delete", "-f", f]);

    // Server-side apply: create, a conflict with another manager's change, forcing it.
    std::fs::write(&file, manifest(ns, 1, "nginx:1.26", false)).unwrap();
    let out = k.ok(&["apply", "--server-side", "-f", f]);
    assert!(
        out.contains("deployment.apps/app serverside-applied"),
        "{out}"
    );
    k.ok(&["scale", "deploy", "app", "-n", ns, "--replicas=5"]);
    std::fs::write(&file, manifest(ns, 3, "nginx:1.27", true)).unwrap();
    let conflict = k.run(&["apply", "--server-side", "-f", f]);
    assert!(!conflict.status.success());
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        stderr.contains("Apply failed with 1 conflict") && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", f]);
    let d = k.json(&["get", "deploy", "app", "-n", ns, "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    k.ok(&["delete", "-f", f]);
}

/// A CRD and an instance of it in one multi-document file: served, validated, printed with
/// its printer columns, explained, and no longer served once the CRD is deleted.
fn custom_resources(k: &Kubectl<'_>, ns: &str, dir: &Path) {
    let group = format!("{ns}.example.com");
    let crd = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    additionalPrinterColumns:
    - {{name: Size, type: integer, jsonPath: .spec.size}}
    - {{name: Age, type: date, jsonPath: .metadata.creationTimestamp}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size: {{type: integer, minimum: 1, description: How big the widget is.}}
              color: {{type: string, default: blue}}
"#
    );
    let instance = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: {ns}\nspec:\n  size: 3\n"
    );
    let crd_file = dir.join(format!("{ns}-crd.yaml"));
    std::fs::write(&crd_file, &crd).unwrap();
    let both = dir.join(format!("{ns}-crd-and-widget.yaml"));
    std::fs::write(&both, format!("{crd}---\n{instance}")).unwrap();
    k.ok(&["apply", "-f", crd_file.to_str().unwrap()]);
    // The CRD is served within a second.
    let kind = format!("widgets.{group}");
    eventually(
        || k.run(&["get", &kind, "-n", ns]).status.success(),
        "CRD served",
    );
    let out = k.ok(&["apply", "-f", both.to_str().unwrap()]);
    assert!(out.contains("w1 created"), "{out}");
    let table = k.ok(&["get", &format!("widgets.{group}"), "-n", ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("w1"), "{table}");
    let w = k.json(&["get", &format!("wd.{group}"), "w1", "-n", ns]);
    assert_eq!(w["spec"]["color"], "blue", "defaulted from the schema");
    let bad = dir.join(format!("{ns}-bad-widget.yaml"));
    std::fs::write(
        &bad,
        instance.replace("size: 3", "size: 0").replace("w1", "w2"),
    )
    .unwrap();
    let rejected = k.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("spec.size"));
    let explain = k.ok(&["explain", &format!("widgets.{group}.spec.size")]);
    assert!(explain.contains("How big the widget is."), "{explain}");
    k.ok(&["delete", "-f", crd_file.to_str().unwrap()]);
    eventually(
        || !k.run(&["get", &kind, "-n", ns]).status.success(),
        "deleted CRD no longer served",
    );
}

/// A key that orders strings as kubectl's `--sort-by` does: digit runs by their value.
fn natural(s: &str) -> Vec<(bool, u128, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        let digit = c.is_ascii_digit();
        let mut run = String::new();
        while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit() == digit) {
            run.push(c);
            chars.next();
        }
        let value = if digit {
            run.parse().unwrap_or(u128::MAX)
        } else {
            0
        };
        // Digits sort before other characters, as in sortorder.NaturalLess.
        out.push((!digit, value, if digit { String::new() } else { run }));
    }
    out
}

/// Waits (up to 10 s) for `cond`, failing with `what` otherwise.
fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
    }
}

/// describe, output formats, edit through $EDITOR, wait, delete variants, cluster-info.
fn inspect_edit_wait_delete(k: &Kubectl<'_>, ns: &str, dir: &Path) {
    let n = ["-n", ns];
    let run = |args: &[&str]| {
        let mut a = n.to_vec();
        a.extend(args);
        k.ok(&a)
    };
    run(&["create", "deployment", "ed", "--image=nginx:1.27"]);
    run(&[
        "run",
        "solo",
        "--image=busybox",
        "--labels=app=solo,tier=one",
    ]);
    let described = run(&["describe", "deployment", "ed"]);
    assert!(
        described.contains("Name:") && described.contains("ed"),
        "{described}"
    );
    assert!(
        described.contains("StrategyType:") && described.contains("RollingUpdate"),
        "{described}"
    );
    let pod = run(&["describe", "pod", "solo"]);
    assert!(pod.contains("Service Account:  default"), "{pod}");
    let labels = run(&["get", "pod", "solo", "--show-labels", "--no-headers"]);
    assert!(labels.contains("app=solo,tier=one"), "{labels}");
    let cols = run(&[
        "get",
        "pods,deployments",
        "-o",
        "custom-columns=NAME:.metadata.name,KIND:.kind",
        "--sort-by=.metadata.name",
    ]);
    let names: Vec<&str> = cols
        .lines()
        .filter(|l| !l.starts_with("NAME"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // kubectl does the sorting, mostly naturally (runs of digits compare as numbers, "9" <
    // "67"), but some versions order these rows bytewise; either way they come out sorted.
    let mut natural_order = names.clone();
    natural_order.sort_by_key(|a| natural(a));
    let mut byte_order = names.clone();
    byte_order.sort();
    assert!(names == natural_order || names == byte_order, "{cols}");
    let yaml = run(&["get", "deployment", "ed", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 1"),
        "{yaml}"
    );
    // kubectl edit with EDITOR set to a script that changes replicas.
    let editor = dir.join(format!("{ns}-editor.sh"));
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 1/replicas: 4/' \"$1\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&editor).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&editor, perms).unwrap();
    let out = Command::new(&k.bin)
        .args(["-n", ns, "edit", "deployment", "ed"])
        .env("KUBECONFIG", &k.cluster.kubeconfig)
        .env("HOME", k.cluster.home.path())
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        run(&["get", "deployment", "ed", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    // wait for a condition (a jsonpath one: no kubelet runs pods yet) and for a deletion.
    let waited = run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Pending",
        "pod/solo",
        "--timeout=10s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    // wait --for=condition: the deployment controller reports the rollout Progressing (no
    // kubelet runs its pods yet, so it is not Available).
    let waited = run(&[
        "wait",
        "--for=condition=Progressing",
        "deployment/ed",
        "--timeout=10s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    run(&["delete", "pod", "solo", "--wait=false"]);
    run(&["wait", "--for=delete", "pod/solo", "--timeout=10s"]);
    // delete variants.
    run(&["delete", "deployment", "ed", "--cascade=orphan"]);
    run(&["create", "deployment", "ed2", "--image=nginx"]);
    run(&[
        "delete",
        "deployment",
        "ed2",
        "--cascade=background",
        "--grace-period=0",
        "--force",
    ]);
    // Foreground: kubectl waits until the owner is gone (its dependents go with the garbage
    // collector, which is not running in this test).
    run(&["create", "deployment", "ed3", "--image=nginx"]);
    run(&[
        "delete",
        "deployment",
        "ed3",
        "--cascade=foreground",
        "--timeout=20s",
    ]);
    let left = run(&["get", "deployments", "-o", "name"]);
    assert!(
        !left.contains("deployment.apps/ed\n") && !left.contains("ed2") && !left.contains("ed3"),
        "{left}"
    );
    let info = k.ok(&["cluster-info"]);
    assert!(info.contains("is running at"), "{info}");
    // auth can-i (a protobuf SelfSubjectAccessReview on 1.32+), and NamespaceLifecycle.
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let refused = k.run(&["delete", "namespace", "kube-system"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("this namespace may not be deleted"),
        "{refused:?}"
    );
}

/// `kubectl create <generator>` for the common kinds (protobuf bodies on 1.32+), tables of
/// what they made, `kubectl scale`, and `kubectl get -w` seeing a later change.
fn generators_scale_and_watch(k: &Kubectl<'_>, ns: &str) {
    let n = ["-n", ns];
    let run = |args: &[&str]| {
        let mut a = n.to_vec();
        a.extend(args);
        k.ok(&a)
    };
    run(&["create", "secret", "generic", "s1", "--from-literal=a=b"]);
    // A cluster-scoped generator; pods naming the class get its priority.
    let pc = format!("{ns}-high");
    k.ok(&[
        "create",
        "priorityclass",
        &pc,
        "--value=1000",
        "--description=e2e",
    ]);
    let table = k.ok(&["get", "priorityclass", &pc, "--no-headers"]);
    assert!(table.contains("1000") && table.contains("false"), "{table}");
    let overrides = format!(r#"{{"spec":{{"priorityClassName":"{pc}"}}}}"#);
    run(&[
        "run",
        "prio",
        "--image=busybox",
        &format!("--overrides={overrides}"),
    ]);
    assert_eq!(
        run(&["get", "pod", "prio", "-o", "jsonpath={.spec.priority}"]),
        "1000"
    );
    k.ok(&["delete", "priorityclass", &pc]);
    run(&["create", "service", "nodeport", "svc1", "--tcp=80:8080"]);
    run(&["create", "job", "j1", "--image=busybox", "--", "echo", "hi"]);
    run(&[
        "create",
        "cronjob",
        "cj1",
        "--image=busybox",
        "--schedule=*/5 * * * *",
    ]);
    run(&["create", "role", "r1", "--verb=get", "--resource=pods"]);
    run(&["create", "rolebinding", "rb1", "--role=r1", "--user=alice"]);
    run(&["create", "serviceaccount", "sa1"]);
    run(&["create", "deployment", "scaled", "--image=nginx"]);
    let svc = run(&["get", "service", "svc1", "--no-headers"]);
    let cols: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!(cols[1], "NodePort", "{svc}");
    assert!(cols[2].starts_with("10."), "cluster IP allocated: {svc}");
    assert!(cols[4].starts_with("80:3"), "node port allocated: {svc}");
    let job = run(&["get", "job", "j1", "-o", "wide", "--no-headers"]);
    assert!(job.contains("batch.kubernetes.io/controller-uid="), "{job}");
    let cj = run(&["get", "cronjob", "cj1", "--no-headers"]);
    assert!(cj.starts_with("cj1") && cj.contains("*/5 * * * *"), "{cj}");
    let rb = run(&["get", "rolebinding", "rb1", "-o", "wide", "--no-headers"]);
    assert!(rb.contains("Role/r1") && rb.contains("alice"), "{rb}");
    run(&["scale", "deployment", "scaled", "--replicas=3"]);
    assert_eq!(
        run(&["get", "deploy", "scaled", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let table = run(&["get", "deploy", "scaled", "--no-headers"]);
    assert!(
        table.starts_with("scaled") && table.contains("0/3"),
        "{table}"
    );

    // get -w sees a change made after it started.
    let mut watch = Command::new(&k.bin)
        .args(["get", "configmaps", "-w", "-n", ns])
        .env("KUBECONFIG", &k.cluster.kubeconfig)
        .env("HOME", k.cluster.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial listing (its header first) arrives before the change is made.
    let header = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    assert!(
        header.starts_with("NAME"),
        "kubectl get -w printed {header:?}"
    );
    run(&["create", "configmap", "seen-by-watch", "--from-literal=x=y"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("seen-by-watch") => {
                seen = true;
                break;
            }
            _ => {}
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "kubectl get -w did not print the new configmap");
}

#[test]
fn every_kubectl_from_1_27_to_1_33_works() {
    let cluster = start();
    let dir = kubectl_dir();
    let work = tempfile::tempdir().unwrap();
    for minor in 27..=33 {
        let bin = dir.join(format!("kubectl.1.{minor}"));
        assert!(bin.exists(), "{} missing", bin.display());
        let k = Kubectl {
            bin,
            cluster: &cluster,
        };
        scenario(&k, &format!("e2e-{minor}"), work.path());
    }
}

/// A command's stdout and stderr, as text.
fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of the cluster's kubeconfig (same server and CA) whose user is `user_yaml`.
fn kubeconfig_as(cluster: &Cluster, name: &str, user_yaml: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let head = &text[..text.find("users:").unwrap()];
    let path = cluster.home.path().join(format!("kubeconfig-{name}"));
    std::fs::write(
        &path,
        format!("{head}users:\n- name: admin\n  user:{user_yaml}\n"),
    )
    .unwrap();
    path
}

/// Secure by default: TLS with the admin's client certificate in a private kubeconfig, 401
/// without credentials, RBAC with upstream's bootstrap roles, and `kubectl auth can-i`
/// telling the truth about what then happens.
#[test]
fn security_tls_authentication_and_rbac_with_kubectl() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = start();
    let bin = kubectl_dir().join("kubectl.1.32");
    let admin = Kubectl {
        bin: bin.clone(),
        cluster: &cluster,
    };
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    assert!(text.contains("server: https://127.0.0.1:"), "{text}");
    assert!(text.contains("client-certificate-data:"), "{text}");
    let mode = std::fs::metadata(&cluster.kubeconfig)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let as_user = |kubeconfig: &Path, args: &[&str]| admin.run_as(kubeconfig, args);
    let text_of = output_text;

    // No credentials: 401 with a Status, for resources and discovery alike (kubectl itself
    // would prompt for a password here, so curl asks, trusting only the cluster CA).
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    let ca = cluster._data.path().join("pki/ca.crt");
    for path in ["/api/v1/namespaces/default/pods", "/api", "/healthz"] {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&ca)
            .args(["-w", "\n%{http_code}", &format!("{server}{path}")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.ends_with("\n401"), "{path}: {body}{}", text_of(&out));
        assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");
    }
    // A token nobody issued is no better.
    let forged = kubeconfig_as(&cluster, "forged", "\n    token: not-a-token");
    let out = as_user(&forged, &["get", "pods"]);
    assert!(
        text_of(&out).contains("You must be logged in to the server"),
        "{}",
        text_of(&out)
    );

    // The admin sets the scene: two namespaces with a secret each; alice may view one.
    for ns in ["sec-a", "sec-b"] {
        admin.ok(&["create", "namespace", ns]);
        admin.ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=hush",
            "-n",
            ns,
        ]);
        admin.ok(&["create", "configmap", "c", "--from-literal=k=v", "-n", ns]);
    }
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "sec-a",
    ]);
    let alice = kubeconfig_as(&cluster, "alice", "\n    token: alice-token");
    assert_eq!(
        String::from_utf8_lossy(
            &as_user(
                &alice,
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}"
                ]
            )
            .stdout
        ),
        "alice"
    );
    // The binding reaches the authorizer through its watch.
    eventually(
        || {
            as_user(&alice, &["get", "configmaps", "-n", "sec-a"])
                .status
                .success()
        },
        "alice's view binding",
    );

    // What alice tries, what `kubectl auth can-i` says beforehand, and what happens.
    let cases: &[(&[&str], &[&str], bool)] = &[
        (
            &["get", "configmap", "c", "-n", "sec-a"],
            &["get", "configmaps", "-n", "sec-a"],
            true,
        ),
        (
            &["get", "pods", "-n", "sec-a"],
            &["list", "pods", "-n", "sec-a"],
            true,
        ),
        (
            &[
                "create",
                "configmap",
                "d",
                "--from-literal=k=v",
                "-n",
                "sec-a",
            ],
            &["create", "configmaps", "-n", "sec-a"],
            false,
        ),
        (
            &["delete", "configmap", "c", "-n", "sec-a"],
            &["delete", "configmaps", "-n", "sec-a"],
            false,
        ),
        (
            &["get", "secret", "s", "-n", "sec-a"],
            &["get", "secrets", "-n", "sec-a"],
            false,
        ),
        (
            &["get", "secrets", "-n", "sec-b"],
            &["list", "secrets", "-n", "sec-b"],
            false,
        ),
        (&["get", "secrets", "-A"], &["list", "secrets", "-A"], false),
        (
            &["get", "configmaps", "-n", "sec-b"],
            &["list", "configmaps", "-n", "sec-b"],
            false,
        ),
        (&["get", "nodes"], &["list", "nodes"], false),
    ];
    for (action, question, allowed) in cases {
        let mut can_i = vec!["auth", "can-i"];
        can_i.extend(*question);
        let answer = as_user(&alice, &can_i);
        let said = String::from_utf8_lossy(&answer.stdout).trim().to_owned();
        assert_eq!(
            said,
            if *allowed { "yes" } else { "no" },
            "can-i {question:?}"
        );
        let out = as_user(&alice, action);
        assert_eq!(
            out.status.success(),
            *allowed,
            "{action:?}: {}",
            text_of(&out)
        );
        if !allowed {
            assert!(
                text_of(&out).contains("forbidden"),
                "{action:?}: {}",
                text_of(&out)
            );
        }
    }
    // Refused writes wrote nothing; the secrets are untouched.
    assert!(!admin
        .run(&["get", "configmap", "d", "-n", "sec-a"])
        .status
        .success());
    admin.ok(&["get", "configmap", "c", "-n", "sec-a"]);
    // `can-i --list` shows view's rules, without secrets.
    let list = String::from_utf8_lossy(
        &as_user(&alice, &["auth", "can-i", "--list", "-n", "sec-a"]).stdout,
    )
    .into_owned();
    assert!(list.lines().any(|l| l.starts_with("configmaps ")), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets")), "{list}");
    // The admin is in system:masters.
    assert_eq!(admin.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    let who = admin.json(&["auth", "whoami"]);
    assert_eq!(who["status"]["userInfo"]["username"], "kubernetes-admin");
    // Escalation prevention: as `admin` of sec-c alice may bind `edit` there (she holds its
    // rights), but not grant what she lacks, in a Role or through a binding.
    admin.ok(&["create", "namespace", "sec-c"]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "sec-c",
    ]);
    eventually(
        || {
            as_user(
                &alice,
                &["auth", "can-i", "create", "rolebindings", "-n", "sec-c"],
            )
            .status
            .success()
        },
        "alice's admin binding",
    );
    let ok = as_user(
        &alice,
        &[
            "create",
            "rolebinding",
            "bob-edit",
            "--clusterrole=edit",
            "--user=bob",
            "-n",
            "sec-c",
        ],
    );
    assert!(ok.status.success(), "{}", text_of(&ok));
    for attempt in [
        &[
            "create",
            "rolebinding",
            "bob-root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "sec-c",
        ][..],
        &[
            "create",
            "role",
            "nodes",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "sec-c",
        ],
    ] {
        let out = as_user(&alice, attempt);
        assert!(!out.status.success(), "{attempt:?}");
        assert!(
            text_of(&out).contains("attempting to grant RBAC permissions not currently held"),
            "{attempt:?}: {}",
            text_of(&out)
        );
    }
    assert!(!admin
        .run(&["get", "rolebinding", "bob-root", "-n", "sec-c"])
        .status
        .success());

    // Pod Security Admission: a `restricted` namespace refuses a privileged pod, admits a
    // hardened one; `warn` lets a pod in with kubectl's warning.
    admin.ok(&["create", "namespace", "locked"]);
    admin.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let out = admin.run(&[
        "run",
        "priv",
        "--image=busybox",
        "--privileged",
        "-n",
        "locked",
    ]);
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains(r#"violates PodSecurity "restricted:latest": privileged (container "priv" must not set securityContext.privileged=true)"#),
        "{}",
        text_of(&out)
    );
    let hardened = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened"},
        "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "c", "image": "busybox",
                     "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}"#;
    let manifest = cluster.home.path().join("hardened.json");
    std::fs::write(&manifest, hardened).unwrap();
    admin.ok(&["create", "-n", "locked", "-f", manifest.to_str().unwrap()]);
    admin.ok(&["create", "namespace", "watched"]);
    admin.ok(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let out = admin.run(&[
        "run",
        "hostnet",
        "--image=busybox",
        "-n",
        "watched",
        "--overrides",
        r#"{"spec": {"hostNetwork": true}}"#,
    ]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text_of(&out).contains(r#"Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#),
        "{}",
        text_of(&out)
    );

    // Taking the binding away takes the access away.
    admin.ok(&["delete", "rolebinding", "alice-view", "-n", "sec-a"]);
    eventually(
        || {
            !as_user(&alice, &["get", "configmaps", "-n", "sec-a"])
                .status
                .success()
        },
        "alice's access revoked",
    );
}

/// Every file under `dir`, recursively, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// `--encryption-provider-config`: a Secret's value is nowhere in the store's files, in the
/// clear or base64, while kubectl reads it back; a ConfigMap (not configured) is found there,
/// which shows the scan would see the secret if it were stored in the clear.
#[test]
fn secrets_are_encrypted_at_rest_on_the_embedded_store() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("encryption.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm: {keys: [{name: key1, secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8=}]}
  - identity: {}
",
    )
    .unwrap();
    let cluster = bare_server(&["--encryption-provider-config", config.to_str().unwrap()]);
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    let secret = "plaintext-marker-8c1f0e";
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        &format!("--from-literal=password={secret}"),
    ]);
    k.ok(&[
        "create",
        "configmap",
        "control",
        "--from-literal=note=configmap-marker-8c1f0e",
    ]);
    assert_eq!(
        k.ok(&["get", "secret", "vault", "-o", "jsonpath={.data.password}"]),
        b64
    );
    let files = files_under(&cluster._data.path().join("store"));
    let found = |needle: &[u8]| {
        files
            .iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        !found(b"configmap-marker-8c1f0e").is_empty(),
        "the scan sees stored values"
    );
    assert_eq!(found(secret.as_bytes()), Vec::<String>::new());
    assert_eq!(found(b64.as_bytes()), Vec::<String>::new());
}

/// A minimal HTTPS admission webhook on a thread: at `/admit` it denies ConfigMaps labelled
/// `deny=yes` with a message; at `/mutate` it adds the label `mutated=yes` with a JSONPatch.
/// Returns its port; requests seen are counted.
fn webhook_server(
    cert_pem: String,
    key_pem: String,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> u16 {
    use std::io::{BufRead, Read, Write};
    let certs = rustls_pemfile_certs(&cert_pem);
    let key = rustls::pki_types::PrivateKeyDer::try_from(pem_body(&key_pem)).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
                let mut length = 0usize;
                let mut path = String::new();
                loop {
                    let mut line = String::new();
                    if tls.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if path.is_empty() {
                        path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; length];
                tls.read_exact(&mut body).unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let request = &review["request"];
                let labels = &request["object"]["metadata"]["labels"];
                let response = if path != "/mutate" {
                    if labels["deny"] == "yes" {
                        serde_json::json!({"uid": request["uid"], "allowed": false,
                            "status": {"code": 403, "message": "configmaps labelled deny=yes are not welcome here"}})
                    } else {
                        serde_json::json!({"uid": request["uid"], "allowed": true})
                    }
                } else {
                    use base64::Engine;
                    let op = if labels.is_object() {
                        serde_json::json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
                    } else {
                        serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
                    };
                    serde_json::json!({"uid": request["uid"], "allowed": true, "patchType": "JSONPatch",
                        "patch": base64::engine::general_purpose::STANDARD.encode(op.to_string())})
                };
                let answer = serde_json::json!({"apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview", "response": response})
                .to_string();
                let tls = tls.get_mut();
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

fn pem_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    pem.split("-----END CERTIFICATE-----")
        .filter(|p| p.contains("BEGIN CERTIFICATE"))
        .map(|p| rustls::pki_types::CertificateDer::from(pem_body(p)))
        .collect()
}

/// Validating and mutating admission webhooks, called over HTTPS trusting their caBundle: a
/// denial reaches kubectl with the webhook's message and nothing is stored; a patch is
/// applied; `failurePolicy` decides what an unreachable webhook does.
#[test]
fn admission_webhooks_deny_and_mutate_through_kubectl() {
    use base64::Engine;
    let cluster = start();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let pki = bosun_apiserver::pki::Pki::load_or_create(ca_dir.path()).unwrap();
    let serving = pki.issue_serving("webhook", &["127.0.0.1".into()]).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let port = webhook_server(serving.cert_pem, serving.key_pem, seen.clone());
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem());
    k.ok(&["create", "namespace", "hooked"]);
    k.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    let config = |kind: &str, name: &str, url: &str, policy: &str| {
        format!(
            r#"{{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "{kind}",
              "metadata": {{"name": "{name}"}},
              "webhooks": [{{"name": "{name}.bosun.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                 "failurePolicy": "{policy}", "timeoutSeconds": 5,
                 "clientConfig": {{"url": "{url}", "caBundle": "{ca_bundle}"}},
                 "namespaceSelector": {{"matchLabels": {{"webhooks": "on"}}}},
                 "rules": [{{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}}]}}]}}"#
        )
    };
    let url = format!("https://127.0.0.1:{port}/admit");
    let apply = |text: String| {
        let path = cluster
            .home
            .path()
            .join(format!("hook-{}.json", uuid_like()));
        std::fs::write(&path, text).unwrap();
        k.ok(&["apply", "-f", path.to_str().unwrap()]);
    };
    apply(config(
        "ValidatingWebhookConfiguration",
        "deny",
        &url,
        "Fail",
    ));
    apply(config(
        "MutatingWebhookConfiguration",
        "mutate",
        &format!("https://127.0.0.1:{port}/mutate"),
        "Fail",
    ));
    // The configurations reach the server's webhook cache through its watch.
    let bad = cluster.home.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad", "labels": {"deny": "yes"}}}"#,
    )
    .unwrap();
    let mut denied = None;
    eventually(
        || {
            let out = k.run(&["create", "-n", "hooked", "-f", bad.to_str().unwrap()]);
            if out.status.success() {
                k.ok(&["delete", "configmap", "bad", "-n", "hooked"]);
                return false;
            }
            denied = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            true
        },
        "the webhook configurations",
    );
    let denied = denied.unwrap();
    assert!(
        denied.contains(r#"admission webhook "deny.bosun.test" denied the request: configmaps labelled deny=yes are not welcome here"#),
        "{denied}"
    );
    assert!(!k
        .run(&["get", "configmap", "bad", "-n", "hooked"])
        .status
        .success());
    // Allowed ones are mutated by the patch.
    k.ok(&[
        "create",
        "configmap",
        "good",
        "-n",
        "hooked",
        "--from-literal=a=b",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "good",
            "-n",
            "hooked",
            "-o",
            "jsonpath={.metadata.labels.mutated}"
        ]),
        "yes"
    );
    // Outside the selected namespaces the webhooks are not called.
    let before = seen.load(std::sync::atomic::Ordering::SeqCst);
    k.ok(&["create", "configmap", "elsewhere", "--from-literal=a=b"]);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), before);
    // An unreachable webhook: Fail refuses the write, Ignore lets it through.
    let dead = format!("https://127.0.0.1:{}/admit", free_port());
    apply(config(
        "ValidatingWebhookConfiguration",
        "deny",
        &dead,
        "Fail",
    ));
    eventually(
        || {
            let out = k.run(&["create", "configmap", "probe", "-n", "hooked"]);
            if out.status.success() {
                k.ok(&["delete", "configmap", "probe", "-n", "hooked"]);
                return false;
            }
            String::from_utf8_lossy(&out.stderr)
                .contains(r#"failed calling webhook "deny.bosun.test""#)
        },
        "an unreachable webhook failing the write",
    );
    apply(config(
        "ValidatingWebhookConfiguration",
        "deny",
        &dead,
        "Ignore",
    ));
    eventually(
        || {
            k.run(&["create", "configmap", "ignored", "-n", "hooked"])
                .status
                .success()
        },
        "failurePolicy Ignore",
    );
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Service-account tokens: `kubectl create token` (the TokenRequest API) bound to a pod gives a
/// token that authenticates as the account, with the account's RBAC, until the pod is gone;
/// a token Secret gets a legacy token that works while the Secret exists; the namespace gets
/// `kube-root-ca.crt` with the cluster CA.
#[test]
fn service_account_tokens_are_bound_and_authorized() {
    let cluster = start();
    let bin = kubectl_dir().join("kubectl.1.32");
    let admin = Kubectl {
        bin: bin.clone(),
        cluster: &cluster,
    };
    let as_token = |token: &str, args: &[&str]| {
        admin.run_as(
            &kubeconfig_as(&cluster, "sa", &format!("\n    token: {token}")),
            args,
        )
    };
    admin.ok(&["create", "namespace", "robots"]);
    eventually(
        || {
            admin
                .run(&["get", "sa", "default", "-n", "robots"])
                .status
                .success()
        },
        "the default service account",
    );
    // The CA every pod's token volume mounts.
    eventually(
        || {
            admin
                .run(&[
                    "get",
                    "configmap",
                    "kube-root-ca.crt",
                    "-n",
                    "robots",
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ])
                .stdout
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        },
        "kube-root-ca.crt",
    );
    admin.ok(&["create", "sa", "builder", "-n", "robots"]);
    admin.ok(&[
        "create",
        "rolebinding",
        "builder-view",
        "--clusterrole=view",
        "--serviceaccount=robots:builder",
        "-n",
        "robots",
    ]);
    admin.ok(&[
        "run",
        "holder",
        "--image=busybox",
        "-n",
        "robots",
        "--overrides",
        r#"{"spec": {"serviceAccountName": "builder", "nodeName": "nowhere"}}"#,
    ]);
    let token = admin
        .ok(&[
            "create",
            "token",
            "builder",
            "-n",
            "robots",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
            "--duration",
            "15m",
        ])
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let who = as_token(
        &token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:serviceaccount:robots:builder"
    );
    eventually(
        || {
            as_token(&token, &["get", "pods", "-n", "robots"])
                .status
                .success()
        },
        "the account's view binding",
    );
    let out = as_token(&token, &["get", "secrets", "-n", "robots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(r#"User "system:serviceaccount:robots:builder" cannot list resource "secrets""#));
    // A token for another audience is not for the API server.
    let foreign = admin
        .ok(&[
            "create",
            "token",
            "builder",
            "-n",
            "robots",
            "--audience",
            "vault",
        ])
        .trim()
        .to_owned();
    assert!(!as_token(&foreign, &["get", "pods", "-n", "robots"])
        .status
        .success());
    // Too short a lifetime is refused as upstream.
    let out = admin.run(&[
        "create",
        "token",
        "builder",
        "-n",
        "robots",
        "--duration",
        "5m",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("may not specify a duration less than 10 minutes"));
    // Deleting the pod invalidates its token.
    admin.ok(&[
        "delete",
        "pod",
        "holder",
        "-n",
        "robots",
        "--grace-period=0",
        "--force",
    ]);
    eventually(
        || {
            !admin
                .run(&["get", "pod", "holder", "-n", "robots"])
                .status
                .success()
        },
        "the pod gone",
    );
    let out = as_token(&token, &["get", "pods", "-n", "robots"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("You must be logged in to the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token Secret gets a legacy token, valid while the Secret exists.
    let secret = cluster.home.path().join("token-secret.json");
    std::fs::write(
        &secret,
        r#"{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "builder-token", "annotations": {"kubernetes.io/service-account.name": "builder"}}}"#,
    )
    .unwrap();
    admin.ok(&["create", "-n", "robots", "-f", secret.to_str().unwrap()]);
    let encoded = admin.ok(&[
        "get",
        "secret",
        "builder-token",
        "-n",
        "robots",
        "-o",
        "jsonpath={.data.token}",
    ]);
    use base64::Engine;
    let legacy = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap(),
    )
    .unwrap();
    assert!(as_token(&legacy, &["get", "pods", "-n", "robots"])
        .status
        .success());
    admin.ok(&["delete", "secret", "builder-token", "-n", "robots"]);
    assert!(!as_token(&legacy, &["get", "pods", "-n", "robots"])
        .status
        .success());
}

/// A node's own credentials (`system:node:NAME` in `system:nodes`): through the Node
/// authorizer it reads the Secrets its pods use and no other, and NodeRestriction keeps its
/// writes to itself. A node joins as upstream's do: a bootstrap token (`DATA/node-token`)
/// sends a CSR, the server approves and signs it, and the certificate is that node.
#[test]
fn node_credentials_see_only_their_pods_secrets_and_join_by_csr() {
    use base64::Engine;
    let cluster = start();
    let bin = kubectl_dir().join("kubectl.1.32");
    let admin = Kubectl {
        bin: bin.clone(),
        cluster: &cluster,
    };
    let data = cluster._data.path();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let as_user = |kubeconfig: &Path, args: &[&str]| admin.run_as(kubeconfig, args);
    let text_of = output_text;
    // Join: the bootstrap token may create a CSR, which is approved and signed.
    let token = std::fs::read_to_string(data.join("node-token")).unwrap();
    let bootstrap = kubeconfig_as(
        &cluster,
        "bootstrap",
        &format!("\n    token: {}", token.trim()),
    );
    let who = as_user(
        &bootstrap,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
    );
    assert!(
        String::from_utf8_lossy(&who.stdout).contains("system:bootstrappers"),
        "{}",
        text_of(&who)
    );
    let (csr, key) =
        bosun_apiserver::pki::client_csr("system:node:n1", Some("system:nodes")).unwrap();
    let manifest = cluster.home.path().join("csr.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "node-csr-n1"},
            "spec": {"request": b64(&csr), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "usages": ["digital signature", "client auth"]},
        })
        .to_string(),
    )
    .unwrap();
    let out = as_user(&bootstrap, &["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text_of(&out));
    let mut cert = String::new();
    eventually(
        || {
            cert = String::from_utf8_lossy(
                &as_user(
                    &bootstrap,
                    &[
                        "get",
                        "csr",
                        "node-csr-n1",
                        "-o",
                        "jsonpath={.status.certificate}",
                    ],
                )
                .stdout,
            )
            .into_owned();
            !cert.is_empty()
        },
        "the node's certificate",
    );
    let table = admin.ok(&["get", "csr", "node-csr-n1"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    assert!(table.contains("system:bootstrap:"), "{table}");
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap(),
    )
    .unwrap();
    let node = kubeconfig_as(
        &cluster,
        "node",
        &format!(
            "\n    client-certificate-data: {}\n    client-key-data: {}",
            b64(&cert),
            b64(&key)
        ),
    );
    let who = as_user(
        &node,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:node:n1",
        "{}",
        text_of(&who)
    );
    // A bootstrap token cannot approve its own way to other certificates: an admin-only signer
    // stays pending.
    let (other, _) = bosun_apiserver::pki::client_csr("mallory", Some("system:masters")).unwrap();
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "sneaky"},
            "spec": {"request": b64(&other), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "usages": ["client auth"]},
        })
        .to_string(),
    )
    .unwrap();
    assert!(
        as_user(&bootstrap, &["create", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    );
    // The node may not approve it either. An administrator may approve (`kubectl certificate
    // approve`, the approval subresource), but the kubelet-client signer signs only node
    // subjects: the request fails.
    let out = as_user(&node, &["certificate", "approve", "sneaky"]);
    assert!(!out.status.success(), "{}", text_of(&out));
    assert!(text_of(&out).contains("forbidden"), "{}", text_of(&out));
    assert!(admin.ok(&["get", "csr", "sneaky"]).contains("Pending"));
    admin.ok(&["certificate", "approve", "sneaky"]);
    eventually(
        || {
            admin
                .ok(&["get", "csr", "sneaky"])
                .contains("Approved,Failed")
        },
        "the approved request refused by the signer",
    );

    // The scene: n1 runs a pod using `used`; `unused` belongs to no pod on n1.
    admin.ok(&["create", "namespace", "nodes-e2e"]);
    for s in ["used", "unused"] {
        admin.ok(&[
            "create",
            "secret",
            "generic",
            s,
            "--from-literal=k=v",
            "-n",
            "nodes-e2e",
        ]);
    }
    admin.ok(&[
        "run", "worker", "--image=busybox", "-n", "nodes-e2e", "--overrides",
        r#"{"spec": {"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "used"}}],
            "containers": [{"name": "worker", "image": "busybox", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}]}}"#,
    ]);
    eventually(
        || {
            as_user(&node, &["get", "secret", "used", "-n", "nodes-e2e"])
                .status
                .success()
        },
        "the node reading its pod's secret",
    );
    for args in [
        &["get", "secret", "unused", "-n", "nodes-e2e"][..],
        &["get", "secrets", "-n", "nodes-e2e"],
        &["get", "secrets", "-A"],
    ] {
        let out = as_user(&node, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text_of(&out).contains("forbidden"),
            "{args:?}: {}",
            text_of(&out)
        );
    }
    // The node reads pods and nodes; it may not create an ordinary pod, nor touch another node.
    assert!(as_user(&node, &["get", "pods", "-A"]).status.success());
    let out = as_user(
        &node,
        &["run", "intruder", "--image=busybox", "-n", "nodes-e2e"],
    );
    assert!(
        text_of(&out).contains("can only create mirror pods"),
        "{}",
        text_of(&out)
    );
    admin.ok(&["create", "-f", &write_node(&cluster, "n2")]);
    let out = as_user(&node, &["label", "node", "n2", "owned=yes"]);
    assert!(
        text_of(&out).contains("can only change its own node object"),
        "{}",
        text_of(&out)
    );
    // Once the pod is gone, so is the node's access to its secret.
    admin.ok(&[
        "delete",
        "pod",
        "worker",
        "-n",
        "nodes-e2e",
        "--grace-period=0",
        "--force",
    ]);
    eventually(
        || {
            !as_user(&node, &["get", "secret", "used", "-n", "nodes-e2e"])
                .status
                .success()
        },
        "access ending with the pod",
    );
    // The sneaky CSR was never signed.
    let sneaky = admin.ok(&[
        "get",
        "csr",
        "sneaky",
        "-o",
        "jsonpath={.status.certificate}",
    ]);
    assert!(sneaky.is_empty(), "{sneaky}");
}

/// A Node object manifest named `name`, written into the cluster's home; its path.
fn write_node(cluster: &Cluster, name: &str) -> String {
    let path = cluster.home.path().join(format!("node-{name}.json"));
    std::fs::write(
        &path,
        format!(r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}"}}}}"#),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The official Python `kubernetes` client, unchanged: CRUD, selectors, pagination, watch
/// resumed from a resourceVersion (`tests/clients/python_client.py`). `scripts/test-all`
/// installs the client and points `BOSUN_PYTHON` at it; without it this test fails.
#[test]
fn python_kubernetes_client_works() {
    let cluster = start();
    let python = std::env::var("BOSUN_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&cluster.kubeconfig)
        .arg("py-e2e")
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        out.status.success(),
        "python client failed (is the `kubernetes` package installed for {python}? scripts/test-all installs it): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn state_survives_a_restart_on_the_embedded_store() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let kubeconfig = data.path().join("kubeconfig");
    let spawn = || spawn_server(data.path(), port).0;
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home.path())
            .output()
            .unwrap()
    };
    let mut child = spawn();
    assert!(
        kubectl(&["create", "configmap", "keep", "--from-literal=a=b"])
            .status
            .success()
    );
    // SIGKILL: an acknowledged write survives.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn();
    let out = kubectl(&["get", "configmap", "keep", "-o", "jsonpath={.data.a}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b", "{out:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `bosun controller-manager`: two replicas against a server that runs no controllers; one
/// leads and works, and on SIGTERM hands the Lease over to the other.
#[test]
fn controller_manager_leads_and_hands_over() {
    let cluster = bare_server(&["--no-controllers"]);
    let kubeconfig = cluster.kubeconfig.clone();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    let manager = || {
        Command::new(bosun_bin())
            .args(["controller-manager", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bosun binary")
    };
    let mut managers = vec![manager(), manager()];
    let holder = || {
        let out = k.run(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("a leader", &|| !holder().is_empty());
    let first = holder();
    k.ok(&["create", "deployment", "one", "--image=nginx"]);
    wait("one's ReplicaSet", &|| {
        k.ok(&["get", "rs", "-l", "app=one", "-o", "name"])
            .contains("replicaset")
    });
    // SIGTERM to both, one at a time: the leader releases, the other takes over.
    for m in &mut managers {
        let _ = Command::new("kill")
            .args(["-TERM", &m.id().to_string()])
            .status();
        // It has released the Lease (if it held it) once it has exited.
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the manager did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if holder() != first {
            break;
        }
    }
    // Whoever is left (a fresh replica if both went) leads next.
    managers.push(manager());
    wait("a new leader", &|| {
        let h = holder();
        !h.is_empty() && h != first
    });
    k.ok(&["create", "deployment", "two", "--image=nginx"]);
    wait("two's ReplicaSet", &|| {
        k.ok(&["get", "rs", "-l", "app=two", "-o", "name"])
            .contains("replicaset")
    });
    for mut m in managers {
        let _ = m.kill();
        let _ = m.wait();
    }
}

/// `bosun scheduler --config`: a profile with its own schedulerName binds the pods that ask
/// for it (and only those), under leader election, with upstream's Scheduled event.
#[test]
fn scheduler_binds_pods_for_its_profile() {
    let cluster = bare_server(&["--no-controllers", "--no-scheduler"]);
    let kubeconfig = cluster.kubeconfig.clone();
    let data = tempfile::tempdir().unwrap();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    let config = data.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
profiles:
- schedulerName: my-scheduler
  plugins:
    score:
      disabled:
      - name: ImageLocality
",
    )
    .unwrap();
    let metrics_port = free_port();
    let mut sched = Command::new(bosun_bin())
        .args(["scheduler", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config)
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bosun binary");
    let node = data.path().join("node.yaml");
    std::fs::write(&node, "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    kubernetes.io/hostname: n1\n").unwrap();
    k.ok(&["create", "-f", node.to_str().unwrap()]);
    k.ok(&[
        "patch", "node", "n1", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"allocatable":{"cpu":"4","memory":"8Gi","pods":"110"},"capacity":{"cpu":"4","memory":"8Gi","pods":"110"}}}"#,
    ]);
    // No node lifecycle controller here to lift the not-ready taint admission added.
    let _ = k.run(&[
        "taint",
        "nodes",
        "n1",
        "node.kubernetes.io/not-ready:NoSchedule-",
    ]);
    let pods = data.path().join("pods.yaml");
    std::fs::write(
        &pods,
        "apiVersion: v1
kind: Pod
metadata:
  name: mine
spec:
  schedulerName: my-scheduler
  containers:
  - name: c
    image: busybox
---
apiVersion: v1
kind: Pod
metadata:
  name: theirs
spec:
  containers:
  - name: c
    image: busybox
",
    )
    .unwrap();
    k.ok(&["create", "-f", pods.to_str().unwrap()]);
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("mine to be bound to n1", &|| {
        k.ok(&["get", "pod", "mine", "-o", "jsonpath={.spec.nodeName}"]) == "n1"
    });
    wait("the Scheduled event", &|| {
        k.ok(&["describe", "pod", "mine"])
            .contains("Successfully assigned default/mine to n1")
    });
    let holder = k.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(!holder.is_empty());
    // No profile serves default-scheduler here.
    assert_eq!(
        k.ok(&["get", "pod", "theirs", "-o", "jsonpath={.spec.nodeName}"]),
        ""
    );
    // Upstream's metric names, over plain HTTP.
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("scheduler_schedule_attempts_total{result=\"scheduled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scheduler_pending_pods{queue=\"active\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scheduler_pod_scheduling_sli_duration_seconds_count{} 1"),
        "{metrics}"
    );
    let _ = sched.kill();
    let _ = sched.wait();
}

/// `bosun images import FILE` loads a `docker save` tarball into the node's image store, and
/// `bosun images list` shows it (air-gapped nodes).
#[test]
fn images_import_loads_a_docker_archive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rootfs/etc")).unwrap();
    std::fs::write(d.join("rootfs/etc/motd"), "hi\n").unwrap();
    let tar = |args: &[&str]| {
        let ok = Command::new("tar").args(args).status().unwrap().success();
        assert!(ok, "tar {args:?}");
    };
    let layer = d.join("archive/layer.tar");
    std::fs::create_dir_all(d.join("archive")).unwrap();
    tar(&[
        "--owner=0",
        "--group=0",
        "-cf",
        layer.to_str().unwrap(),
        "-C",
        d.join("rootfs").to_str().unwrap(),
        ".",
    ]);
    std::fs::write(
        d.join("archive/config.json"),
        r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/etc/motd"]},"rootfs":{"type":"layers"}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("archive/manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["hello:1"],"Layers":["layer.tar"]}]"#,
    )
    .unwrap();
    let archive = d.join("hello.tar");
    tar(&[
        "-cf",
        archive.to_str().unwrap(),
        "-C",
        d.join("archive").to_str().unwrap(),
        "manifest.json",
        "config.json",
        "layer.tar",
    ]);
    let data = d.join("data");
    let out = Command::new(bosun_bin())
        .args(["images", "import"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("docker.io/library/hello:1\tsha256:"));
    let list = Command::new(bosun_bin())
        .args(["images", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("docker.io/library/hello:1"));
    // A file that is not an image archive is one clear error.
    std::fs::write(d.join("junk.tar"), b"not a tar").unwrap();
    let bad = Command::new(bosun_bin())
        .args(["images", "import"])
        .arg(d.join("junk.tar"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("bosun: importing"), "{err}");
}

#[test]
fn agent_registers_a_node_and_runs_pods_with_logs_exec_and_probes() {
    if !root_with_runc("the agent test needs root and runc") {
        return;
    }
    let cluster = start();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = HostNetworkCleanup("bosune2e0");
    // A busybox image for the pods, loaded into the agent's store.
    let archive = busybox_archive(dir.path());
    import_busybox(&archive, &dir.path().join("data"));
    let mut agent = Command::new(bosun_bin())
        .arg("agent")
        // As kind does: the test machine's disk may be fuller than the default threshold.
        .arg("--eviction-hard=memory.available<100Mi,nodefs.available<0%")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args([
            "--node-name",
            "e2e-node-1",
            "--node-label",
            "example.com/pool=e2e",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--pod-log-dir")
        .arg(dir.path().join("logs"))
        .arg("--pod-manifest-path")
        .arg(dir.path().join("manifests"))
        .args(["--cluster-dns", "10.96.0.10"])
        .args(["--bridge", "bosune2e0", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_ready(&k, "e2e-node-1", &mut agent);
    // (Seen once: Ready, then NotReady for a moment as the pod CIDR arrives; the table is read
    // until it shows Ready.)
    let mut table = String::new();
    eventually(
        || {
            table = k.ok(&["get", "nodes"]);
            table
                .lines()
                .find(|l| l.starts_with("e2e-node-1"))
                .is_some_and(|row| row.contains(" Ready ") && row.contains("v1.32.0-bosun"))
        },
        "the node's row saying Ready",
    );
    let node = k.json(&["get", "node", "e2e-node-1"]);
    assert_eq!(node["metadata"]["labels"]["example.com/pool"], "e2e");
    // The kubelet's server speaks TLS with a certificate from the cluster CA and answers
    // nobody without credentials; the API server reaches it with its own client certificate.
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    // curl checks the certificate against the cluster CA and the node's name.
    let ca = cluster._data.path().join("pki/ca.crt");
    let kubelet_code = || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("e2e-node-1:{port}:127.0.0.1"))
            .arg(format!("https://e2e-node-1:{port}/pods"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(
        || kubelet_code() == "401",
        "the kubelet refusing a request without credentials",
    );
    assert_eq!(
        k.ok(&["get", "--raw", "/api/v1/nodes/e2e-node-1/proxy/healthz"]),
        "ok"
    );
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("bosun://"));
    let lease = k.json(&["get", "lease", "-n", "kube-node-lease", "e2e-node-1"]);
    assert_eq!(lease["spec"]["holderIdentity"], "e2e-node-1");
    // Ready came after the node's pod CIDR reached the runtime, which wrote its network.
    let cidr = node["spec"]["podCIDR"]
        .as_str()
        .expect("a pod CIDR from node IPAM");
    let conflist =
        std::fs::read_to_string(dir.path().join("data/cni/net.d/10-bosun.conflist")).unwrap();
    assert!(conflist.contains(cidr), "{conflist}");

    // A pod scheduled here runs, with an address from the node's pod CIDR.
    // $(GREETING) is expanded by the kubelet, $GREETING by the shell: the log shows both.
    k.ok(&[
        "run",
        "sleeper",
        "--image=docker.io/e2e/busybox:1",
        "--env=GREETING=hi",
        "--command",
        "--",
        "sh",
        "-c",
        "echo $GREETING $(GREETING); exec sleep 3600",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let p = k.json(&["get", "pod", "sleeper"]);
        if p["status"]["phase"] == "Running" {
            break p;
        }
        assert!(Instant::now() < deadline, "the pod did not run: {p}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(pod["spec"]["nodeName"], "e2e-node-1");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let prefix = cidr.trim_end_matches("0/24");
    assert!(
        cidr.ends_with(".0/24") && ip.starts_with(prefix),
        "{ip} not in {cidr}"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log = dir
        .path()
        .join(format!("logs/default_sleeper_{uid}/sleeper/0.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" stdout F hi hi")) {
        assert!(
            Instant::now() < deadline,
            "log: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sandboxes = std::fs::read_dir(dir.path().join("state/cri/sandboxes"))
        .unwrap()
        .count();
    assert_eq!(sandboxes, 1);

    // The kubelet's usage reports, through the API server's node proxy: the running pod's
    // container has a real memory figure from its cgroup.
    let summary: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/api/v1/nodes/e2e-node-1/proxy/stats/summary",
    ]))
    .unwrap();
    assert_eq!(summary["node"]["nodeName"], "e2e-node-1");
    let sleeper = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "sleeper")
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        sleeper["containers"][0]["memory"]["workingSetBytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{sleeper}"
    );
    let resource = k.ok(&[
        "get",
        "--raw",
        "/api/v1/nodes/e2e-node-1/proxy/metrics/resource",
    ]);
    assert!(
        resource.contains(
            "container_cpu_usage_seconds_total{container=\"sleeper\",namespace=\"default\",pod=\"sleeper\"}"
        ),
        "{resource}"
    );

    // The pod's resolv.conf follows dnsPolicy ClusterFirst.
    let resolv = k.ok(&["exec", "sleeper", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.96.0.10")
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );

    // kubectl logs, through the API server and the kubelet's server.
    assert_eq!(k.ok(&["logs", "sleeper"]), "hi hi\n");
    let stamped = k.ok(&["logs", "sleeper", "--timestamps"]);
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert!(ts.ends_with('Z') && rest == "hi hi\n", "{stamped}");
    let none = k.run(&["logs", "sleeper", "--previous"]);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("previous terminated container"),
        "{none:?}"
    );
    // kubectl exec returns the command's streams and exit code.
    let out = k.run(&[
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{out:?}"
    );
    // logs -f shows what the container writes later (here: through exec, to its stdout).
    let mut follow = Command::new(&k.bin)
        .args(["logs", "-f", "sleeper"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.home.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "hi hi");
    k.ok(&[
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo later > /proc/1/fd/1",
    ]);
    assert_eq!(lines.next().unwrap().unwrap(), "later");
    let _ = follow.kill();
    let _ = follow.wait();

    // kubectl port-forward reaches a server in a pod: through the WebSocket tunnel (1.32) and
    // plain SPDY (1.29, which also execs over SPDY).
    k.ok(&[
        "run",
        "web",
        "--image=docker.io/e2e/busybox:1",
        "--command",
        "--",
        "sh",
        "-c",
        "mkdir -p /www; echo hello-pf > /www/index.html; exec httpd -f -p 80 -h /www",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while k.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) != "Running" {
        assert!(Instant::now() < deadline, "the web pod did not run");
        std::thread::sleep(Duration::from_millis(200));
    }
    for version in ["1.32", "1.29"] {
        let bin = kubectl_dir().join(format!("kubectl.{version}"));
        let page = port_forward_get(&bin, &cluster, "web", 80);
        assert!(page.contains("hello-pf"), "kubectl {version}: {page}");
    }
    let old = Kubectl {
        bin: kubectl_dir().join("kubectl.1.29"),
        cluster: &cluster,
    };
    let out = old.run(&["exec", "web", "--", "sh", "-c", "echo spdy; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "spdy\n");

    // Services through the agent's proxy (nftables in the host's kernel): by ClusterIP from
    // another pod, from the pod itself (hairpin) and from the node; by NodePort on the node's
    // address.
    k.ok(&["expose", "pod", "web", "--port=80", "--name=web-svc"]);
    k.ok(&[
        "expose",
        "pod",
        "web",
        "--port=80",
        "--name=web-np",
        "--type=NodePort",
    ]);
    let cluster_ip = k.ok(&["get", "svc", "web-svc", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port: u16 = k
        .ok(&[
            "get",
            "svc",
            "web-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap();
    let in_pod = |pod: &str, ip: &str| {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
        let out = k.run(&["exec", pod, "--", "sh", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let from_host = |addr: String| {
        use std::io::{Read, Write};
        let Ok(mut c) =
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        else {
            return String::new();
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    let node_ip = k.ok(&[
        "get",
        "node",
        "e2e-node-1",
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !in_pod("sleeper", &cluster_ip).contains("hello-pf") {
        assert!(Instant::now() < deadline, "no answer through the Service");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(in_pod("web", &cluster_ip).contains("hello-pf"), "hairpin");
    // By name: the agent's cluster DNS, published as kube-dns at 10.96.0.10, answers the
    // Service's name through the pod's search path, and its full name.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !in_pod("sleeper", "web-svc").contains("hello-pf") {
        if Instant::now() > deadline {
            let lookup = k.run(&["exec", "sleeper", "--", "nslookup", "web-svc"]);
            let rules = Command::new("nft")
                .args(["list", "table", "ip", "bosun-proxy"])
                .output()
                .unwrap();
            panic!(
                "no answer through the Service's DNS name: nslookup: {lookup:?}\nkube-dns: {}\n{}",
                k.ok(&["get", "endpointslices", "-n", "kube-system", "-o", "yaml"]),
                String::from_utf8_lossy(&rules.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = k.run(&[
        "exec",
        "sleeper",
        "--",
        "nslookup",
        "web-svc.default.svc.cluster.local",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&cluster_ip), "{text} {out:?}");
    let kube_dns = k.ok(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(kube_dns, "10.96.0.10");

    // NetworkPolicy, enforced by the agent (nftables): a default deny blocks a connection and
    // an allow admits it, for ingress (into web) and for egress (out of sleeper).
    let web_ip = k.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let until = |want: bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_pod("sleeper", &web_ip).contains("hello-pf") != want {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    until(true, "sleeper reaches web before any policy");
    let policies = |name: &str, yaml: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        k.ok(&["apply", "-f", f.to_str().unwrap()]);
    };
    policies(
        "deny-in",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in}\n\
         spec: {podSelector: {matchLabels: {run: web}}}\n",
    );
    until(
        false,
        "the default-deny ingress policy did not block sleeper → web",
    );
    policies(
        "allow-in",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-in}\n\
         spec: {podSelector: {matchLabels: {run: web}}, ingress: [\
         {from: [{podSelector: {matchLabels: {run: sleeper}}}], ports: [{port: 80}]}]}\n",
    );
    until(true, "the allow rule did not admit sleeper → web");
    policies(
        "deny-out",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-out}\n\
         spec: {podSelector: {matchLabels: {run: sleeper}}, policyTypes: [Egress]}\n",
    );
    until(
        false,
        "the default-deny egress policy did not block sleeper → web",
    );
    policies(
        "allow-out",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-out}\n\
         spec: {podSelector: {matchLabels: {run: sleeper}}, policyTypes: [Egress], egress: [\
         {to: [{podSelector: {matchLabels: {run: web}}}]}]}\n",
    );
    until(true, "the egress allow did not admit sleeper → web");
    k.ok(&[
        "delete",
        "networkpolicy",
        "deny-in",
        "allow-in",
        "deny-out",
        "allow-out",
    ]);
    assert!(from_host(format!("{cluster_ip}:80")).contains("hello-pf"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !from_host(format!("{node_ip}:{node_port}")).contains("hello-pf") {
        assert!(Instant::now() < deadline, "no answer on the NodePort");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Three pods behind one Service: traffic from a pod spreads over all three; one that turns
    // unready (its readiness file removed) gets no more.
    let manifest = dir.path().join("spread.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 3
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: docker.io/e2e/busybox:1
        env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        command: [sh, -c, "mkdir -p /www; echo $POD > /www/index.html; touch /tmp/ready; exec httpd -f -p 80 -h /www"]
        readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}
"#,
    )
    .unwrap();
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    k.ok(&["expose", "deployment", "spread", "--port=80"]);
    let spread_ip = k.ok(&["get", "svc", "spread", "-o", "jsonpath={.spec.clusterIP}"]);
    let answers = || -> std::collections::BTreeSet<String> {
        let script = format!(
            "i=0; while [ $i -lt 30 ]; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {spread_ip} 80; i=$((i+1)); done"
        );
        let out = k.run(&["exec", "sleeper", "--", "sh", "-c", &script]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("spread-"))
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let all = loop {
        let seen = answers();
        if seen.len() == 3 {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "traffic never reached 3 endpoints: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let unready = all.iter().next().unwrap().clone();
    k.ok(&["exec", &unready, "--", "rm", "/tmp/ready"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = answers();
        if seen.len() == 2 && !seen.contains(&unready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unready pod still gets traffic: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    k.ok(&["delete", "svc", "spread"]);
    k.ok(&["delete", "deployment", "spread"]);

    // A deleted Service's rules go: the ClusterIP no longer answers.
    k.ok(&["delete", "svc", "web-svc", "web-np"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while from_host(format!("{cluster_ip}:80")).contains("hello-pf") {
        assert!(Instant::now() < deadline, "the Service's rules stayed");
        std::thread::sleep(Duration::from_millis(300));
    }
    k.ok(&["delete", "pod", "web", "--grace-period=1"]);

    // A failing liveness probe gets the container killed and restarted: RESTARTS counts it;
    // the readiness probe keeps the pod unready while its file is missing.
    let manifest = dir.path().join("prober.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Pod
metadata: {name: prober}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/e2e/busybox:1
    command: [sh, -c, "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"]
    livenessProbe:
      exec: {command: [test, -f, /tmp/healthy]}
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      exec: {command: [test, -f, /tmp/ready]}
      periodSeconds: 1
"#,
    )
    .unwrap();
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let restarted = loop {
        let p = k.json(&["get", "pod", "prober"]);
        if p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1) {
            break p;
        }
        assert!(Instant::now() < deadline, "no restart: {p}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let cs = &restarted["status"]["containerStatuses"][0];
    assert!(
        cs["lastState"]["terminated"]["exitCode"].as_i64().unwrap() != 0,
        "{cs}"
    );
    assert_eq!(cs["ready"], false, "not ready without /tmp/ready");
    let row = k.ok(&["get", "pod", "prober", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(cols[1] == "0/1" && cols[3].starts_with('1'), "{row}");
    // Once the readiness file exists, the pod turns ready.
    k.ok(&["exec", "prober", "--", "touch", "/tmp/ready"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while k.ok(&[
        "get",
        "pod",
        "prober",
        "-o",
        "jsonpath={.status.containerStatuses[0].ready}",
    ]) != "true"
    {
        assert!(Instant::now() < deadline, "the pod did not turn ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    k.ok(&["delete", "pod", "prober", "--grace-period=1"]);

    // Lifecycle hooks: postStart runs once the container started; preStop runs before the
    // stop (it leaves a file on the host through a hostPath volume); a failing postStart
    // gets the container killed and restarted.
    let hooks_dir = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    let manifest = dir.path().join("hooks.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: docker.io/e2e/busybox:1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo started > /tmp/poststart"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo stopping > /hooks/prestop"]}}}}
    volumeMounts: [{{name: hooks, mountPath: /hooks}}]
  volumes: [{{name: hooks, hostPath: {{path: {}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/e2e/busybox:1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "exit 1"]}}}}
"#,
            hooks_dir.display()
        ),
    )
    .unwrap();
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_running(&k, "hooks");
    assert_eq!(
        k.ok(&["exec", "hooks", "--", "cat", "/tmp/poststart"]),
        "started\n"
    );
    k.ok(&["delete", "pod", "hooks"]);
    assert_eq!(
        std::fs::read_to_string(hooks_dir.join("prestop")).unwrap(),
        "stopping\n"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = k.json(&["get", "pod", "badhook"]);
        if p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restart after the failed hook: {p}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    k.ok(&["delete", "pod", "badhook", "--grace-period=1"]);

    // A static pod from the manifest directory runs, shown in the API by its mirror pod;
    // deleting the mirror leaves it running (a new mirror comes); removing the manifest
    // stops it and its mirror goes.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        r#"apiVersion: v1
kind: Pod
metadata: {name: static-web, labels: {tier: static}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/e2e/busybox:1
    command: [sh, -c, "echo static; exec sleep 3600"]
"#,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !k
        .run(&["get", "pod", "static-web-e2e-node-1"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "no mirror pod");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mirror = wait_running(&k, "static-web-e2e-node-1");
    let annotations = &mirror["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert!(
        annotations["kubernetes.io/config.mirror"].is_string(),
        "{mirror}"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    let first_uid = mirror["metadata"]["uid"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let container = loop {
        let m = k.json(&["get", "pod", "static-web-e2e-node-1"]);
        if let Some(id) = m["status"]["containerStatuses"][0]["containerID"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(k.ok(&["logs", "static-web-e2e-node-1"]), "static\n");
    k.ok(&["delete", "pod", "static-web-e2e-node-1", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = k.run(&["get", "pod", "static-web-e2e-node-1", "-o", "json"]);
        if m.status.success() {
            let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
            if m["metadata"]["uid"] != first_uid
                && m["status"]["containerStatuses"][0]["containerID"].is_string()
            {
                assert_eq!(
                    m["status"]["containerStatuses"][0]["containerID"], container,
                    "the static pod kept running: {m}"
                );
                assert_eq!(m["status"]["containerStatuses"][0]["restartCount"], 0);
                break;
            }
        }
        assert!(Instant::now() < deadline, "no new mirror pod");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while k
        .run(&["get", "pod", "static-web-e2e-node-1"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the mirror pod stayed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Volumes and environment from configMaps, secrets, the downward API and resources; an
    // updated configMap reaches the running container.
    let manifest = dir.path().join("volumes.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {app: vols}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/e2e/busybox:1
    command: [sh, -c, "echo $COLOR $PASSWORD $MEM_MB; exec sleep 3600"]
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: settings, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: MEM_MB
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    resources: {limits: {memory: 64Mi}}
    securityContext: {runAsUser: 1000, allowPrivilegeEscalation: false}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: scratch, mountPath: /scratch}
    - {name: info, mountPath: /etc/info}
  volumes:
  - {name: cfg, configMap: {name: settings}}
  - {name: sec, secret: {secretName: creds}}
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
"#,
    )
    .unwrap();
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while k.ok(&["get", "pod", "volumes", "-o", "jsonpath={.status.phase}"]) != "Running" {
        assert!(
            Instant::now() < deadline,
            "{}",
            k.ok(&["get", "pod", "volumes", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.ok(&["logs", "volumes"]) != "blue s3cret 64\n" {
        assert!(Instant::now() < deadline, "{}", k.ok(&["logs", "volumes"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let cat = |path: &str| k.ok(&["exec", "volumes", "--", "cat", path]);
    assert_eq!(cat("/etc/cfg/greeting"), "hello");
    assert_eq!(cat("/etc/sec/password"), "s3cret");
    assert_eq!(cat("/etc/info/labels"), "app=\"vols\"");
    // The service-account volume every pod gets (its token and CA come with the security
    // work; the namespace is there).
    assert_eq!(
        cat("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
        "default"
    );
    let mounts = cat("/proc/mounts");
    assert!(
        mounts.lines().any(|l| l.contains(" /scratch tmpfs ")),
        "{mounts}"
    );
    // Resources and the security context reach the container.
    assert_eq!(k.ok(&["exec", "volumes", "--", "id", "-u"]).trim(), "1000");
    let limited = Command::new("sh")
        .args([
            "-c",
            "cat /sys/fs/cgroup/memory/bosun/*/*/memory.limit_in_bytes",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&limited.stdout)
            .lines()
            .any(|l| l == "67108864"),
        "no container with the 64Mi memory limit"
    );
    let write = k.run(&["exec", "volumes", "--", "sh", "-c", "echo x > /etc/cfg/new"]);
    assert!(!write.status.success(), "configMap volumes are read-only");
    k.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cat("/etc/cfg/greeting") != "bonjour" {
        assert!(
            Instant::now() < deadline,
            "the update did not reach the pod"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let uid = k.ok(&["get", "pod", "volumes", "-o", "jsonpath={.metadata.uid}"]);
    k.ok(&["delete", "pod", "volumes", "--grace-period=1"]);
    assert!(
        !dir.path().join("data/pods").join(&uid).exists(),
        "the pod's volumes are removed with it"
    );

    // Deleting it stops its processes (busybox sleep ignores SIGTERM: killed after the grace
    // period) and leaves no namespace or sandbox behind.
    k.ok(&["delete", "pod", "sleeper", "--grace-period=1"]);
    assert!(k.run(&["get", "pod", "sleeper"]).status.code() != Some(0));
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/cri/sandboxes"))
            .unwrap()
            .count(),
        0
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.path().to_str().unwrap()),
        "mounts left behind"
    );
    // The runtime removes a container's cgroup once its last process is reaped, which may
    // come a moment after the pod object is gone.
    let pod_cgroups = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup/memory/bosun")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod_cgroups().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = pod_cgroups();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Removes the test's bridge and the NAT rules the bridge and portmap plugins made for the
/// agent's network ("bosun"), even when the test fails.
/// Runs `kubectl port-forward pod/POD :PORT`, fetches `/` through it and returns the answer.
fn port_forward_get(bin: &Path, cluster: &Cluster, pod: &str, port: u16) -> String {
    use std::io::{BufRead, Read, Write};
    let mut child = Command::new(bin)
        .args(["port-forward", &format!("pod/{pod}"), &format!(":{port}")])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:43125 -> 80"
    let line = lines.next().unwrap().unwrap();
    let local: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    let _ = conn.read_to_string(&mut page);
    let _ = child.kill();
    let _ = child.wait();
    page
}

struct HostNetworkCleanup(&'static str);

impl Drop for HostNetworkCleanup {
    fn drop(&mut self) {
        // An agent left running by a failed test (it was on this bridge).
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("bosun agent .*--bridge {}", self.0)])
            .status();
        for table in ["bosun-proxy", "bosun-netpol"] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", table])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", self.0])
            .stderr(Stdio::null())
            .status();
        let script = r#"iptables -t nat -S | grep 'name: \"bosun\"' | sed 's/^-A/-D/' | while read -r l; do eval iptables -t nat $l; done"#;
        let _ = Command::new("sh").args(["-c", script]).status();
        // The agent's cgroup root, like upstream's kubepods: empty after a passing run; after
        // a failed one, whatever still runs in it is killed so the next run starts clean.
        let script = "for f in $(find /sys/fs/cgroup/*/bosun -name cgroup.procs 2>/dev/null); do \
                      xargs -r kill -9 < $f 2>/dev/null; done; sleep 0.2; \
                      find /sys/fs/cgroup/*/bosun -depth -type d -exec rmdir {} \\; 2>/dev/null";
        let _ = Command::new("sh").args(["-c", script]).status();
        // The host-gw side: FORWARD rules for pod traffic and routes to other nodes' pods.
        let script = "iptables -S FORWARD | grep 'bosun pod traffic' | sed 's/^-A/-D/' | \
                      while read -r l; do eval iptables $l; done; \
                      ip route flush proto 181 2>/dev/null; true";
        let _ = Command::new("sh").args(["-c", script]).status();
    }
}

/// Whether this run can drive real containers (root, runc); outside CI a test without them
/// is skipped, in CI it fails with `why`.
fn root_with_runc(why: &str) -> bool {
    let ok =
        Path::new("/usr/sbin/runc").exists() && !std::env::var("USER").is_ok_and(|u| u != "root");
    assert!(ok || std::env::var("CI").as_deref() != Ok("true"), "{why}");
    ok
}

/// Builds a busybox image archive (`e2e/busybox:1`) in `dir`; returns its path.
fn busybox_archive(dir: &Path) -> PathBuf {
    busybox_archive_tagged(dir, "e2e/busybox:1")
}

/// Builds an image archive of the host's busybox, named `tag`, in `dir`; returns its path.
fn busybox_archive_tagged(dir: &Path, tag: &str) -> PathBuf {
    let img = dir.join(format!("img-{}", tag.replace(['/', ':'], "-")));
    std::fs::create_dir_all(img.join("rootfs/bin")).unwrap();
    std::fs::create_dir_all(img.join("rootfs/tmp")).unwrap();
    std::fs::create_dir_all(img.join("archive")).unwrap();
    std::fs::copy("/bin/busybox", img.join("rootfs/bin/busybox")).unwrap();
    for a in [
        "sh", "sleep", "test", "touch", "rm", "cat", "httpd", "nc", "mkdir", "id", "nslookup",
        "wget", "hostname", "echo",
    ] {
        std::os::unix::fs::symlink("busybox", img.join("rootfs/bin").join(a)).unwrap();
    }
    let tar = |args: &[&str]| assert!(Command::new("tar").args(args).status().unwrap().success());
    let (root, arch) = (img.join("rootfs"), img.join("archive"));
    tar(&[
        "--owner=0",
        "--group=0",
        "-cf",
        arch.join("layer.tar").to_str().unwrap(),
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    std::fs::write(arch.join("config.json"), r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers"}}"#).unwrap();
    std::fs::write(
        arch.join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    let archive = img.join("busybox.tar");
    tar(&[
        "-cf",
        archive.to_str().unwrap(),
        "-C",
        arch.to_str().unwrap(),
        "manifest.json",
        "config.json",
        "layer.tar",
    ]);
    archive
}

/// Imports the busybox archive into an agent's data directory.
fn import_busybox(archive: &Path, data: &Path) {
    let imported = Command::new(bosun_bin())
        .args(["images", "import"])
        .arg(archive)
        .arg("--data-dir")
        .arg(data)
        .status()
        .unwrap();
    assert!(imported.success());
}

/// Waits until node `name` is Ready (or the agent exits).
fn wait_ready(k: &Kubectl<'_>, name: &str, agent: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k.run(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == "True" {
            return;
        }
        if Instant::now() > deadline || agent.try_wait().unwrap().is_some() {
            let _ = agent.kill();
            panic!("node {name} did not become Ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until pod `name` runs; returns it.
fn wait_running(k: &Kubectl<'_>, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = k.json(&["get", "pod", name]);
        if p["status"]["phase"] == "Running" {
            return p;
        }
        assert!(Instant::now() < deadline, "pod {name} did not run: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two network namespaces acting as two hosts on one bridge (172.31.250.0/24, the host at
/// .1); removed, with everything running in them, when dropped.
struct TwoHosts;

const HOST_BRIDGE: &str = "bosune2ebr";

impl TwoHosts {
    fn new() -> Self {
        let guard = TwoHosts;
        let script = format!(
            "set -e
             ip link add {HOST_BRIDGE} type bridge
             ip addr add 172.31.250.1/24 dev {HOST_BRIDGE}
             ip link set {HOST_BRIDGE} up
             for i in 1 2; do
               ip netns add bosun-e2e-n$i
               ip link add bosune2eh$i type veth peer name eth0 netns bosun-e2e-n$i
               ip link set bosune2eh$i master {HOST_BRIDGE} up
               ip netns exec bosun-e2e-n$i ip addr add 172.31.250.1$i/24 dev eth0
               ip netns exec bosun-e2e-n$i ip link set eth0 up
               ip netns exec bosun-e2e-n$i ip link set lo up
               ip netns exec bosun-e2e-n$i ip route add default via 172.31.250.1
             done"
        );
        let ok = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(ok.success(), "setting up the two hosts");
        guard
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        let script = format!(
            "for i in 1 2; do
               ip netns pids bosun-e2e-n$i 2>/dev/null | xargs -r kill -9
             done
             sleep 0.3
             for i in 1 2; do ip netns del bosun-e2e-n$i 2>/dev/null; done
             ip link del {HOST_BRIDGE} 2>/dev/null; true"
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

/// Relays TCP connections from `from` to `to` (the agents in their namespaces reach the API
/// server, which listens on loopback, through the host's bridge address).
fn relay(from: &str, to: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(from).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(upstream) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let (mut a, b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b.try_clone().unwrap());
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut c, d) = (upstream, conn);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut d.try_clone().unwrap());
                let _ = d.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn agent_pods_on_two_nodes_reach_each_other_by_pod_ip() {
    if !root_with_runc("the two-node test needs root and runc") {
        return;
    }
    let cluster = start();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = HostNetworkCleanup("bosun0");
    let _hosts = TwoHosts::new();
    let archive = busybox_archive(dir.path());
    // The agents' kubeconfig points at a relay on the bridge.
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let target: std::net::SocketAddr = server
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let relayed = relay("172.31.250.1:0", target);
    // The agents join as real nodes do: the server's join token and CA, no admin credentials.
    // Each becomes system:node:NAME (its kubelet) and system:kube-proxy (its proxy and DNS).
    let token = std::fs::read_to_string(cluster._data.path().join("node-token")).unwrap();
    let ca = cluster._data.path().join("pki/ca.crt");
    let mut agents = Vec::new();
    for i in 1..=2 {
        let data = dir.path().join(format!("n{i}"));
        import_busybox(&archive, &data.join("data"));
        // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/bosun-e2e-n{i}"))
            .arg(bosun_bin())
            .arg("agent")
            // As kind does: the test machine's disk may be fuller than the default threshold.
            .arg("--eviction-hard=memory.available<100Mi,nodefs.available<0%")
            .args([
                "--server",
                &format!("https://{relayed}"),
                "--token",
                token.trim(),
            ])
            .arg("--ca-cert")
            .arg(&ca)
            .args(["--node-name", &format!("e2e-n{i}")])
            .arg("--data-dir")
            .arg(data.join("data"))
            .arg("--state-dir")
            .arg(data.join("state"))
            .arg("--pod-log-dir")
            .arg(data.join("logs"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        agents.push(child);
    }
    for (i, agent) in agents.iter_mut().enumerate() {
        wait_ready(&k, &format!("e2e-n{}", i + 1), agent);
    }
    let node = k.json(&["get", "node", "e2e-n1"]);
    let address = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .clone();
    assert_eq!(address, "172.31.250.11", "the node's address is its host's");
    // One web server per node, each pinned to its node.
    for i in 1..=2 {
        k.ok(&[
            "run",
            &format!("web{i}"),
            "--image=docker.io/e2e/busybox:1",
            &format!("--overrides={{\"spec\":{{\"nodeName\":\"e2e-n{i}\"}}}}"),
            "--command",
            "--",
            "sh",
            "-c",
            &format!(
                "mkdir -p /www; echo from-n{i} > /www/index.html; exec httpd -f -p 80 -h /www"
            ),
        ]);
    }
    let ips: Vec<String> = (1..=2)
        .map(|i| {
            let p = wait_running(&k, &format!("web{i}"));
            assert_eq!(p["spec"]["nodeName"], format!("e2e-n{i}"));
            p["status"]["podIP"].as_str().unwrap().to_string()
        })
        .collect();
    assert_ne!(
        ips[0].rsplit_once('.').unwrap().0,
        ips[1].rsplit_once('.').unwrap().0,
        "each node has its own pod CIDR: {ips:?}"
    );
    // The token the kubelet (as its node) mounted into a pod works as the pod's service
    // account, with its RBAC, and stops working once the pod is gone.
    let token = k
        .ok(&[
            "exec",
            "web1",
            "--",
            "cat",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ])
        .trim()
        .to_owned();
    let mounted_ca = k.ok(&[
        "exec",
        "web1",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    ]);
    assert!(
        mounted_ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "{mounted_ca}"
    );
    let as_pod = kubeconfig_as(&cluster, "pod-sa", &format!("\n    token: {token}"));
    let as_pod_run = |args: &[&str]| k.run_as(&as_pod, args);
    let who = as_pod_run(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:serviceaccount:default:default"
    );
    assert!(
        !as_pod_run(&["get", "pods"]).status.success(),
        "no rights yet"
    );
    k.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    eventually(
        || as_pod_run(&["get", "pods"]).status.success(),
        "the pod's token with view",
    );
    // Each reaches the other across the nodes, by pod IP.
    for (from, to, want) in [("web1", &ips[1], "from-n2"), ("web2", &ips[0], "from-n1")] {
        // busybox's static wget crashes without NSS files in the image; nc does the job.
        let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {to} 80");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = k.run(&["exec", from, "--", "sh", "-c", &fetch]);
            if String::from_utf8_lossy(&out.stdout).contains(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{from} cannot reach {to}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for i in 1..=2 {
        k.ok(&["delete", "pod", &format!("web{i}"), "--grace-period=1"]);
    }
    eventually(
        || !as_pod_run(&["get", "pods"]).status.success(),
        "the pod's token ending with the pod",
    );
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
}

/// Pod startup latency (created → Running, image present) over 100 pods on one node, and
/// the agent's memory with them running. A measurement, not a check: run it with
/// `--run-ignored only` and read the figures it prints (docs/BENCHMARKS.md keeps them).
#[test]
#[ignore = "a benchmark: run on demand"]
fn agent_bench_pod_startup_100_pods() {
    use bosun_client::{Api, Client, PostParams};
    const PODS: usize = 100;
    let cluster = start();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = HostNetworkCleanup("bosunbench0");
    let archive = busybox_archive(dir.path());
    import_busybox(&archive, &dir.path().join("data"));
    let mut agent = Command::new(bosun_bin())
        .arg("agent")
        // As kind does: the test machine's disk may be fuller than the default threshold.
        .arg("--eviction-hard=memory.available<100Mi,nodefs.available<0%")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args([
            "--node-name",
            "bench-node",
            "--bridge",
            "bosunbench0",
            "--port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--pod-log-dir")
        .arg(dir.path().join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    wait_ready(&k, "bench-node", &mut agent);
    // The node's pod network is configured once its pod CIDR arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("data/cni/net.d/10-bosun.conflist").exists() {
        assert!(Instant::now() < deadline, "no pod network");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kubeconfig = bosun_client::config::Kubeconfig::read(&cluster.kubeconfig).unwrap();
    let config = bosun_client::Config::from_kubeconfig(&kubeconfig, &Default::default()).unwrap();
    let pods: Api<bosun_api_types::core::v1::Pod> =
        Api::namespaced(Client::try_from_config(config).unwrap(), "default");
    // Pods created `every` apart (all at once with zero); each one's time from its create
    // call to the first list that shows it Running.
    let measure = |prefix: &str, every: Duration| -> Vec<Duration> {
        rt.block_on(async {
            let created = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
            let creator = {
                let (pods, created, prefix) = (pods.clone(), created.clone(), prefix.to_string());
                tokio::spawn(async move {
                    for i in 0..PODS {
                        let name = format!("{prefix}-{i}");
                        let pod: bosun_api_types::core::v1::Pod =
                            serde_json::from_value(serde_json::json!({
                                "metadata": {"name": name},
                                "spec": {"nodeName": "bench-node", "terminationGracePeriodSeconds": 0,
                                         "automountServiceAccountToken": false,
                                         "containers": [{"name": "c", "image": "docker.io/e2e/busybox:1",
                                                         "command": ["sleep", "3600"]}]},
                            }))
                            .unwrap();
                        created.lock().unwrap().insert(name, Instant::now());
                        pods.create(&PostParams::default(), &pod).await.unwrap();
                        tokio::time::sleep(every).await;
                    }
                })
            };
            let mut running = std::collections::HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            while running.len() < PODS {
                assert!(Instant::now() < deadline, "{} of {PODS} pods running", running.len());
                let list = pods.list(&Default::default()).await.unwrap();
                let now = Instant::now();
                let created = created.lock().unwrap().clone();
                for p in list.items {
                    let v = serde_json::to_value(&p).unwrap();
                    let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    if let (true, Some(t)) = (v["status"]["phase"] == "Running", created.get(&name)) {
                        running.entry(name).or_insert(now - *t);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            creator.await.unwrap();
            let mut l: Vec<Duration> = running.into_values().collect();
            l.sort();
            l
        })
    };
    let report = |what: &str, l: &[Duration]| {
        let pct = |p: usize| l[(l.len() * p / 100).min(l.len() - 1)];
        eprintln!(
            "BENCH pod startup, {what}, {PODS} pods: p50 {:?} p90 {:?} p99 {:?} max {:?}",
            pct(50),
            pct(90),
            pct(99),
            l[l.len() - 1]
        );
    };
    let paced = measure("paced", Duration::from_millis(200));
    report("one every 200 ms", &paced);
    // Resident and proportional memory (PSS shares the pages processes have in common,
    // such as the shims' one binary, out among them).
    let mem = |pid: u32, field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let shims: Vec<u32> = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", &format!("cri-shim.*{}", dir.path().display())])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect();
    let n = shims.len().max(1) as u64;
    eprintln!(
        "BENCH memory with {PODS} pods running: agent RSS {} MiB (PSS {} MiB); {} shims, \
         RSS {} KiB / PSS {} KiB each on average",
        mem(agent.id(), "Rss:") / 1024,
        mem(agent.id(), "Pss:") / 1024,
        shims.len(),
        shims.iter().map(|p| mem(*p, "Rss:")).sum::<u64>() / n,
        shims.iter().map(|p| mem(*p, "Pss:")).sum::<u64>() / n,
    );
    k.ok(&["delete", "pods", "--all", "--grace-period=0", "--wait=true"]);
    // A burst: all at once; the last one's latency is the node's throughput.
    let burst = measure("burst", Duration::ZERO);
    report("all created at once", &burst);
    k.ok(&["delete", "pods", "--all", "--grace-period=0", "--wait=true"]);
    let _ = agent.kill();
    let _ = agent.wait();
}

/// `bosun up` runs the whole cluster in one process: the API server, scheduler, controllers
/// and a node agent joined with the node token; its node gets Ready and runs a pod that kubectl
/// can read the logs of and exec into.
#[test]
fn agent_up_runs_a_whole_cluster_in_one_process() {
    if !root_with_runc("bosun up needs root and runc") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let _cleanup = HostNetworkCleanup("bosune2e3");
    let archive = busybox_archive(data.path());
    import_busybox(&archive, &data.path().join("node"));
    let port = free_port().to_string();
    let dir = |sub: &str| data.path().join(sub).display().to_string();
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir(""),
        "--port",
        &port,
        "--node-name",
        "e2e-up",
        "--bridge",
        "bosune2e3",
        "--kubelet-port",
        "0",
        "--state-dir",
        &dir("state"),
        "--pod-log-dir",
        &dir("logs"),
    ]
    .map(String::from)
    .to_vec();
    let kubeconfig = data.path().join("kubeconfig");
    let started = Instant::now();
    let child = start_up(&args, &kubeconfig);
    let cluster = Cluster {
        child,
        kubeconfig,
        home: tempfile::tempdir().unwrap(),
        _data: data,
    };
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    within(60, "the node Ready", || {
        let out = k.run(&["get", "node", "e2e-up"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" Ready ")
    });
    eprintln!("bosun up: node Ready {:?} after start", started.elapsed());
    k.ok(&[
        "run",
        "hello",
        "--image=docker.io/e2e/busybox:1",
        "--command",
        "--",
        "sh",
        "-c",
        "echo hello from up; exec sleep 3600",
    ]);
    within(60, "the pod Running", || {
        k.ok(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    eventually(
        || k.ok(&["logs", "hello"]).contains("hello from up"),
        "the pod's log",
    );
    assert_eq!(
        k.ok(&["exec", "hello", "--", "sh", "-c", "echo inside"])
            .trim(),
        "inside"
    );
    k.ok(&["delete", "pod", "hello", "--grace-period=1"]);
}

/// Starts `bosun up` with `args`; returns it once it has written its kubeconfig.
fn start_up(args: &[String], kubeconfig: &Path) -> Child {
    let started = Instant::now();
    let mut child = Command::new(bosun_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for_kubeconfig(kubeconfig, &mut child, started);
    child
}

fn within(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A port in use and an unwritable data directory are each one line that says the fix.
#[test]
fn readable_errors_for_a_port_in_use_and_an_unwritable_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(bosun_bin())
            .arg("server")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = err.trim_end().lines().last().unwrap_or("").to_owned();
        assert!(last.starts_with("bosun: "), "{err}");
        last
    };
    let line = run(&["--port", &port, "--data-dir", data.path().to_str().unwrap()]);
    assert!(
        line.contains("the port is in use") && line.contains("--port"),
        "{line}"
    );
    let line = run(&["--port", "0", "--data-dir", "/proc/bosun-cannot-write-here"]);
    assert!(
        line.contains("not writable") && line.contains("--data-dir"),
        "{line}"
    );
}

/// Logs are for people by default and one JSON object a line with `--log-format json`.
#[test]
fn logs_are_json_lines_with_the_flag() {
    let data = tempfile::tempdir().unwrap();
    let kubeconfig = data.path().join("kubeconfig");
    let mut child = Command::new(bosun_bin())
        .args([
            "server",
            "--log-format",
            "json",
            "--port",
            "0",
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    wait_for_kubeconfig(&kubeconfig, &mut child, started);
    // SIGTERM: it stops (and says so) cleanly.
    assert!(Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said = |message: &str| {
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == message)
    };
    assert!(said("bosun API server ready"), "{stderr}");
    assert!(said("bosun API server stopped"), "{stderr}");
    let ready = lines
        .iter()
        .find(|l| l["fields"]["message"] == "bosun API server ready")
        .unwrap();
    assert!(ready["fields"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
}
