//! Hostile clients against the real binary: impersonation through kubectl, private data on
//! disk, and descriptor exhaustion under a low open-file limit.

use super::{
    bare_server, bosun_bin, free_port, kubeconfig_as, kubectl_dir, output_text, server_flags,
    spawn_server, wait_for_kubeconfig, Cluster, Kubectl,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `kubectl --as` and `--as-group` impersonate only with the `impersonate` verb on each user
/// and group, the impersonated user's own rights then apply, and the audit log names both.
#[test]
fn impersonation_through_kubectl_as() {
    let data = tempfile::tempdir().unwrap();
    let audit = data.path().join("audit.log");
    let audit_flag = audit.to_str().unwrap().to_owned();
    let cluster = bare_server(&["--audit-log-path", &audit_flag]);
    let admin = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    admin.ok(&["create", "namespace", "imp"]);
    admin.ok(&[
        "create",
        "configmap",
        "c",
        "--from-literal=k=v",
        "-n",
        "imp",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "imp",
    ]);
    let alice = kubeconfig_as(&cluster, "alice", "\n    token: alice-token");
    let as_alice = |args: &[&str]| admin.run_as(&alice, args);

    // Without the impersonate verb, --as is refused (it used to be ignored). kubectl's
    // discovery shows a refusal as "Forbidden: unknown"; a raw request shows upstream's words.
    let out = as_alice(&["--as=bob", "get", "configmaps", "-n", "imp"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("Forbidden"),
        "{}",
        output_text(&out)
    );
    let out = as_alice(&[
        "--as=bob",
        "get",
        "--raw",
        "/api/v1/namespaces/imp/configmaps",
    ]);
    assert!(
        output_text(&out).contains(
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{}",
        output_text(&out)
    );
    // With impersonate on user bob (only), alice acts as bob, with bob's rights.
    admin.ok(&[
        "create",
        "clusterrole",
        "impersonate-bob",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=bob",
    ]);
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "alice-impersonates-bob",
        "--clusterrole=impersonate-bob",
        "--user=alice",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = as_alice(&["--as=bob", "get", "configmaps", "-n", "imp", "-o", "name"]);
        if out.status.success() {
            assert!(output_text(&out).contains("configmap/c"));
            break;
        }
        assert!(Instant::now() < deadline, "{}", output_text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    // bob may only view: a write as bob is refused in bob's name.
    let out = as_alice(&["--as=bob", "delete", "configmap", "c", "-n", "imp"]);
    assert!(
        output_text(&out).contains("User \"bob\" cannot delete"),
        "{}",
        output_text(&out)
    );
    // Another user, or a group, needs its own permission.
    let out = as_alice(&["--as=carol", "get", "configmaps", "-n", "imp"]);
    assert!(!out.status.success());
    let out = as_alice(&[
        "--as=bob",
        "--as-group=system:masters",
        "get",
        "--raw",
        "/api/v1/secrets",
    ]);
    assert!(
        output_text(&out).contains("cannot impersonate resource \"groups\""),
        "{}",
        output_text(&out)
    );
    // The admin (system:masters) may impersonate anyone; whoami says who the server sees.
    let who = admin.ok(&[
        "--as=bob",
        "--as-group=devs",
        "auth",
        "whoami",
        "-o",
        "json",
    ]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "bob", "{who}");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );
    // The audit log records the sender and whom it acted as.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| {
                e["user"]["username"] == "alice"
                    && e["impersonatedUser"]["username"] == "bob"
                    && e["objectRef"]["resource"] == "configmaps"
            });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit event names alice acting as bob"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(cluster);
}

/// Every file and directory under `dir` whose mode lets group or others in.
fn open_to_others(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode & 0o077 != 0 {
                found.push(format!("{} {mode:o}", p.display()));
            }
            stack.extend(
                std::fs::read_dir(&p)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .map(|e| e.path()),
            );
        } else if meta.is_file() && mode & 0o077 != 0 {
            found.push(format!("{} {mode:o}", p.display()));
        }
    }
    found
}

/// The data directory (keys, tokens, the store with every Secret) is the owner's alone, and a
/// directory an older bosun left open is tightened at start.
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (child, kubeconfig) = spawn_server(data.path(), free_port());
    let mut cluster = Cluster {
        child,
        kubeconfig,
        home: tempfile::tempdir().unwrap(),
        _data: tempfile::tempdir().unwrap(),
    };
    let admin = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    admin.ok(&["create", "secret", "generic", "s", "--from-literal=k=hush"]);
    drop(admin);
    let mode = std::fs::metadata(data.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory");
    let store = data.path().join("store");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store");
    let _ = cluster.child.kill();
    let _ = cluster.child.wait();
    // A restart finds every file of the store private too.
    cluster.child = spawn_server(data.path(), free_port()).0;
    assert_eq!(open_to_others(&store), Vec::<String>::new());
}

/// CPU ticks (user + system) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clients that open connections and never finish a request, more than the process has
/// descriptors: the server neither spins nor floods its log, and once they go, ordinary
/// clients are served again. Runs with a 256-descriptor limit and a connection cap above it,
/// so that `accept` itself fails.
#[test]
fn descriptor_exhaustion_under_a_low_open_file_limit() {
    let data = tempfile::tempdir().unwrap();
    let kubeconfig = data.path().join("kubeconfig");
    let log_path = data.path().join("stderr.log");
    let port = free_port();
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(bosun_bin())
        .arg("server")
        .args(server_flags(data.path()))
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--no-controllers",
            "--no-scheduler",
            "--max-connections",
            "5000",
        ])
        .args(["--port", &port.to_string(), "--write-kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("prlimit (util-linux) and the bosun binary");
    wait_for_kubeconfig(&kubeconfig, &mut child, Instant::now());
    let cluster = Cluster {
        child,
        kubeconfig,
        home: tempfile::tempdir().unwrap(),
        _data: data,
    };
    let admin = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    admin.ok(&["get", "namespaces"]);
    let pid = cluster.child.id();
    // 400 connections that never speak TLS.
    let attackers: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        attackers.len() > 300,
        "only {} connections opened",
        attackers.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log_before = std::fs::metadata(&log_path).unwrap().len();
    let ticks_before = cpu_ticks(pid);
    let watched = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let ticks = cpu_ticks(pid) - ticks_before;
    let seconds = watched.elapsed().as_secs_f64();
    let log_growth = std::fs::metadata(&log_path).unwrap().len() - log_before;
    // Spinning on accept used 76–160 % of a core and wrote 48 MB/s of log.
    let cpu = ticks as f64 / 100.0 / seconds;
    assert!(
        cpu < 0.5,
        "the server used {:.0} % of a core while out of descriptors",
        cpu * 100.0
    );
    assert!(
        log_growth < 16 * 1024,
        "the log grew {log_growth} bytes in {seconds:.1} s"
    );
    assert!(cluster.child.id() == pid);
    drop(attackers);
    // Clients are served again once the attackers are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = admin.run(&["get", "namespaces", "--request-timeout=5s"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served again: {}",
            output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("accept failed"),
        "the exhaustion was never noticed: {log}"
    );
}

/// The inodes of the TCP connections `pid` holds to `port` (established, IPv4 and IPv6).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && remote_port == Some(port) && inodes.contains(*inode) {
                n += 1;
            }
        }
    }
    n
}

/// The server's own controllers and scheduler reach it over a few multiplexed connections,
/// however many objects they work on at once: 300 pods created together used to open about a
/// connection per request under way (~10,000 with 10,000 pods stored).
#[test]
fn the_servers_own_clients_hold_few_connections_whatever_the_load() {
    let cluster = bare_server(&[]);
    let admin = Kubectl {
        bin: kubectl_dir().join("kubectl.1.33"),
        cluster: &cluster,
    };
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let port: u16 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let pid = cluster.child.id();
    admin.ok(&[
        "create",
        "deployment",
        "many",
        "--image=busybox:1.36",
        "--replicas=300",
    ]);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        most = most.max(connections_to(pid, port));
        let out = admin.run(&["get", "pods", "-l", "app=many", "-o", "name"]);
        let pods = String::from_utf8_lossy(&out.stdout).lines().count();
        if pods >= 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {pods} pods after two minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    most = most.max(connections_to(pid, port));
    eprintln!("at most {most} connections from the server to itself");
    assert!(most > 0, "no connection of the server to itself was seen");
    // One HTTP/2 connection per in-process identity (each controller, the scheduler).
    assert!(most <= 40, "{most} connections from the server to itself");
}
