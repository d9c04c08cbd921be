//! The README, run as written: its first command (`bosun up` on a clean data directory) and
//! its five-minute tour with kubectl; then Ctrl-C and the first command again, after which
//! everything is still there and running.

use super::*;

/// The README's first command (`… && sudo ./target/release/bosun up --data-dir /var/lib/bosun
/// …`) as arguments of this bosun, with `data` for `/var/lib/bosun`.
fn readme_up_args(readme: &str, data: &Path) -> Vec<String> {
    let line = readme
        .lines()
        .find(|l| l.contains("bosun up ") && !l.trim_start().starts_with('#'))
        .expect("the README's first command runs `bosun up`");
    let command = line.rsplit("&&").next().unwrap_or(line).trim();
    let command = command.strip_prefix("sudo ").unwrap_or(command);
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("./target/release/bosun"), "{line}");
    words
        .map(|w| match w {
            "/var/lib/bosun" => data.display().to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// The kubectl commands of the README's five-minute tour, in order.
fn tour_commands(readme: &str) -> Vec<String> {
    let tour = readme
        .split("## Five-minute tour")
        .nth(1)
        .expect("the README has a five-minute tour");
    let block = tour
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the tour is a sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl "))
        .map(str::to_string)
        .collect()
}

/// Runs one tour line in `sh` (from the repository's root, kubectl 1.32 on PATH, the
/// cluster's kubeconfig); gives it three minutes. Returns its output.
fn shell(line: &str, path: &str, cluster: &Cluster) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("sh")
        .args(["-c", line])
        .current_dir(root)
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The processes left in the node's pod cgroups.
fn pod_processes() -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            "for f in $(find /sys/fs/cgroup/*/bosun -mindepth 2 -name cgroup.procs 2>/dev/null); do cat $f; done",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The mount points under `dir` (the pods' tmpfs volumes, say) this machine still has.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// Sends `signal` to `child` and waits (at most 90 s) for it to exit; its status.
fn stop_with(child: &mut std::process::Child, signal: &str) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(90),
            "bosun up did not stop after {signal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("bosun up stopped {:?} after {signal}", stopped.elapsed());
    status
}

/// The web pods that are not being deleted: name → (phase, ready, restarts, image).
fn web_pods(k: &Kubectl<'_>) -> Vec<(String, String, bool, i64, String)> {
    let list = k.json(&["get", "pods", "-l", "app=web"]);
    let mut pods: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
                ready,
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap_or(-1),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    pods.sort();
    pods
}

#[test]
fn agent_up_runs_the_readme_tour_and_resumes_after_ctrl_c() {
    if !root_with_runc("bosun up needs root and runc") {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = readme_up_args(&readme, data.path());
    assert_eq!(up.first().map(String::as_str), Some("up"), "{up:?}");
    let _cleanup = HostNetworkCleanup("bosun0");
    // No internet here: the tour's two busybox versions come from the host's busybox.
    for tag in ["busybox:1.36", "busybox:1.37"] {
        let archive = busybox_archive_tagged(data.path(), tag);
        import_busybox(&archive, &data.path().join("node"));
    }
    // kubectl 1.32 as `kubectl` on PATH.
    let bin = data.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(kubectl_dir().join("kubectl.1.32"), bin.join("kubectl")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let kubeconfig = data.path().join("kubeconfig");
    let child = start_up(&up, &kubeconfig);
    let data_dir = data.path().to_path_buf();
    let mut cluster = Cluster {
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
        k.run(&["get", "nodes"]).status.success()
            && String::from_utf8_lossy(&k.run(&["get", "nodes"]).stdout).contains(" Ready ")
    });

    // The tour, line by line; each must succeed. A request through the Service may come
    // before the proxy and DNS have the new Service: tried again for up to a minute, as a
    // person would.
    let mut outputs = Vec::new();
    for line in tour_commands(&readme) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let out = loop {
            let out = shell(&line, &path, &cluster);
            if out.status.success() || !line.contains("wget") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let text = output_text(&out);
        eprintln!("$ {line}\n{text}");
        assert!(out.status.success(), "the tour's `{line}` failed:\n{text}");
        outputs.push((line, text));
    }
    let said = |needle: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.contains(needle))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("the tour has no `{needle}`"))
    };
    // Through the Service, from another pod: one of the web pods answered.
    assert!(
        said("exec client").contains("hello from web-"),
        "{outputs:?}"
    );
    // Into a pod of the new version, and its log shows the request.
    assert!(said("exec deployment/web").contains("hello from web-"));
    assert!(said("logs -l app=web").contains("response:200"));
    // Two revisions: the first image and the rolled-out one.
    let history = said("rollout history");
    assert!(history.lines().any(|l| l.starts_with("2 ")), "{history}");
    assert!(said("get greetings").contains("hello"));

    // Five pods of the new version, running and ready.
    within(60, "five ready web pods of busybox:1.37", || {
        let pods = web_pods(&k);
        pods.len() == 5
            && pods.iter().all(|(_, phase, ready, _, image)| {
                phase == "Running" && *ready && image == "busybox:1.37"
            })
    });
    let before: Vec<String> = web_pods(&k).into_iter().map(|p| p.0).collect();
    assert!(!pod_processes().is_empty(), "no pod processes seen running");

    // An image imported while the node runs is used at once (the store's index is shared).
    let late = busybox_archive_tagged(&data_dir, "busybox:late");
    import_busybox(&late, &data_dir.join("node"));
    k.ok(&[
        "run",
        "late",
        "--image=busybox:late",
        "--image-pull-policy=Never",
        "--",
        "sleep",
        "3600",
    ]);
    wait_running(&k, "late");
    k.ok(&["delete", "pod", "late", "--grace-period=0", "--force"]);

    // Ctrl-C: the pods stop, then bosun exits cleanly; nothing of the pods is left running.
    drop(k);
    assert!(
        !mounts_under(&data_dir).is_empty(),
        "the pods' token volumes are tmpfs mounts"
    );
    let status = stop_with(&mut cluster.child, "-INT");
    assert!(status.success(), "bosun up exited with {status}");
    assert_eq!(pod_processes(), "", "pod processes left after Ctrl-C");
    assert_eq!(
        mounts_under(&data_dir),
        Vec::<String>::new(),
        "mounts left after Ctrl-C"
    );

    // The same command again: the same cluster, the same pods running again.
    cluster.child = start_up(&up, &cluster.kubeconfig);
    let k = Kubectl {
        bin: kubectl_dir().join("kubectl.1.32"),
        cluster: &cluster,
    };
    within(60, "the node Ready again", || {
        String::from_utf8_lossy(&k.run(&["get", "nodes"]).stdout).contains(" Ready ")
    });
    within(90, "the same five web pods running again", || {
        let pods = web_pods(&k);
        pods.iter().map(|p| &p.0).eq(before.iter())
            && pods.iter().all(|(_, phase, ready, restarts, image)| {
                phase == "Running" && *ready && *restarts >= 1 && image == "busybox:1.37"
            })
    });
    let deployment = k.json(&["get", "deployment", "web"]);
    assert_eq!(deployment["status"]["readyReplicas"], 5, "{deployment}");
    assert_eq!(
        k.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
    within(60, "the Service answering again", || {
        k.run(&["exec", "client", "--", "wget", "-qO-", "http://web"])
            .stdout
            .starts_with(b"hello from web-")
    });
    assert!(k.ok(&["get", "greetings"]).contains("hello"));
    // systemd stops a service with SIGTERM: the same clean stop.
    drop(k);
    let status = stop_with(&mut cluster.child, "-TERM");
    assert!(
        status.success(),
        "bosun up exited with {status} after SIGTERM"
    );
    assert_eq!(pod_processes(), "", "pod processes left after SIGTERM");
    assert_eq!(
        mounts_under(&data_dir),
        Vec::<String>::new(),
        "mounts left after SIGTERM"
    );
}
