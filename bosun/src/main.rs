//! `bosun`: the reference binary.
//!
//! - `bosun server`: the API server on the embedded store (or etcd, or memory), writing a
//!   kubeconfig kubectl uses as is.
//! - `bosun up`: a cluster on the embedded defaults (for now the API server alone).

// A command-line program reports its fatal errors on stderr.
#![allow(clippy::print_stderr)]

use bosun_apiserver::allocator::Ranges;
use bosun_apiserver::{ApiServer, Config, ResourceTable};
use bosun_store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// jemalloc, not glibc's malloc: after a load, freed memory goes back to the system. Measured
/// with 32 clients creating and deleting 28,636 ConfigMaps: glibc's malloc stayed at 509 MiB
/// RSS (live heap 57 MiB); see docs/SECURITY.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "bosun",
    version,
    about = "A Kubernetes-compatible cluster in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs are written to stderr: `text` for people, `json` (one object a line) for
    /// log collectors. The level comes from RUST_LOG (default `info,fjall=warn,hickory_server=warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
    Memory,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AuthorizationMode {
    #[value(name = "RBAC")]
    Rbac,
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Directory for the embedded store and generated files.
    #[arg(long, default_value = "/var/lib/bosun")]
    data_dir: PathBuf,
    /// Address to listen on (TLS; with --insecure-http only a loopback address).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// Serve plain HTTP without authentication (every request is the cluster admin). Only on
    /// a loopback address; for development and tests that want no TLS.
    #[arg(long)]
    insecure_http: bool,
    /// Extra names and addresses for the serving certificate (the bind address, 127.0.0.1,
    /// localhost, the host name and the `kubernetes` Service's names are always in it).
    #[arg(long = "tls-san", value_name = "NAME|IP", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Users from a static token file (upstream's format: `token,user,uid[,"group1,group2"]`).
    #[arg(long, value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    /// How requests are authorized: RBAC (roles and bindings, upstream's bootstrap roles
    /// included) or AlwaysAllow (any authenticated user may do anything).
    #[arg(long, value_enum, default_value = "RBAC")]
    authorization_mode: AuthorizationMode,
    /// Treat requests without credentials as `system:anonymous` (group
    /// `system:unauthenticated`) instead of refusing them with 401.
    #[arg(long)]
    anonymous_auth: bool,
    /// Port to listen on.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Write a kubeconfig for this server to FILE.
    #[arg(long, value_name = "FILE")]
    write_kubeconfig: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd endpoints (comma-separated URLs) for `--store etcd`.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Compaction interval in seconds (0 disables).
    #[arg(long, default_value_t = 300)]
    compaction_interval: u64,
    /// CIDR that Services get cluster IPs from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Range (`LOW-HIGH`) that NodePort Services get ports from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Append an audit record (`audit.k8s.io/v1` Event) per request to FILE.
    #[arg(long, value_name = "FILE")]
    audit_log_path: Option<PathBuf>,
    /// Connections the API server keeps open at once; more are closed as they arrive
    /// (default: three quarters of the open-file limit).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// An `audit.k8s.io/v1` Policy choosing each request's audit level (None, Metadata,
    /// Request, RequestResponse); without one every request is logged at Metadata.
    #[arg(long, value_name = "FILE")]
    audit_policy_file: Option<PathBuf>,
    /// Encrypt resources at rest as this `apiserver.config.k8s.io/v1` EncryptionConfiguration
    /// says (aesgcm, secretbox and identity providers).
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// Do not run the built-in controllers in this process.
    #[arg(long)]
    no_controllers: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    no_scheduler: bool,
}

#[derive(clap::Args, Clone)]
struct SchedulerArgs {
    /// Kubeconfig of the cluster (default: the configuration's clientConnection.kubeconfig,
    /// $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// A kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration (profiles, plugins,
    /// weights, percentageOfNodesToScore, leaderElection).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run only while holding the `kube-system/kube-scheduler` Lease (overrides the
    /// configuration's leaderElection.leaderElect).
    #[arg(long, action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// Serve `/metrics` (Prometheus text) and `/healthz` over plain HTTP on this address,
    /// e.g. 127.0.0.1:10259.
    #[arg(long, value_name = "ADDR")]
    metrics_bind_address: Option<std::net::SocketAddr>,
}

#[derive(clap::Args, Clone)]
struct ControllerManagerArgs {
    /// Kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Run only while holding the `kube-system/kube-controller-manager` Lease, so several
    /// replicas can run and one works.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Seconds a node's kubelet may stay silent before its node is marked Unknown and tainted.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// The pod network cut into one /24 per node (node IPAM).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the agent's arguments does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the API server.
    Server(ServerArgs),
    /// Run the built-in controllers against a cluster (with leader election).
    ControllerManager(ControllerManagerArgs),
    /// Run the scheduler against a cluster (with leader election).
    Scheduler(SchedulerArgs),
    /// Start a whole cluster on this machine, on the embedded defaults: the API server, the
    /// scheduler and controllers, and a node agent joined to it (pods on runc, the CNI bridge,
    /// the service proxy, cluster DNS). Data in ~/.local/share/bosun unless --data-dir; the
    /// kubeconfig is DATA/kubeconfig.
    Up(UpArgs),
    /// Run the node agent: register this machine as a Node and keep its status and Lease
    /// current (running pods comes next).
    Agent(AgentArgs),
    /// Manage the node's images (the built-in runtime's image store).
    #[command(subcommand)]
    Images(ImagesCommand),
    /// The built-in runtime's per-container monitor (started by the runtime, not by hand).
    #[command(hide = true)]
    CriShim {
        /// The shim's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    /// Directory for the cluster's data (the node's images and volumes in DATA/node).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API server's port.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Run only the control plane, no node (for machines without root or runc).
    #[arg(long)]
    no_agent: bool,
    /// Install what the node needs (runc, the CNI plugins, nftables) with apt-get when
    /// missing.
    #[arg(long)]
    install_missing: bool,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The Linux bridge of the pod network.
    #[arg(long, default_value = "bosun0")]
    bridge: String,
    /// The node's volatile state (namespaces, runc state, sockets).
    #[arg(long, default_value = "/run/bosun")]
    state_dir: PathBuf,
    /// Where container logs go.
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// The kubelet server's port.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// On Ctrl-C, the most seconds a pod gets to stop (its own
    /// terminationGracePeriodSeconds when shorter).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace_period: u64,
}

/// Parses an agent's arguments from flags (as `bosun agent FLAGS` would).
#[derive(clap::Parser)]
struct AgentCli {
    #[command(flatten)]
    args: AgentArgs,
}

#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// The API server's URL (with --token); otherwise --kubeconfig or the usual lookup.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// A bearer token for --server. A bootstrap token (`ID.SECRET`, the server's
    /// DATA/node-token) joins the node: it asks for the node's own client certificate and the
    /// service proxy's, kept in DATA/pki.
    #[arg(long)]
    token: Option<String>,
    /// The cluster CA to trust with --server (the server's DATA/pki/ca.crt).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Accept the server's certificate without checking it (with --server).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// Kubeconfig of the cluster.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Extra node labels, `key=value`; repeatable.
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// The data directory (default ~/.local/share/bosun): images, containers' layers.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The volatile state directory (namespaces, runc state, sockets).
    #[arg(long, default_value = "/run/bosun")]
    state_dir: PathBuf,
    /// The container runtime: `builtin` (runc driven directly) or `remote` (a CRI socket).
    #[arg(long, default_value = "builtin")]
    runtime: String,
    /// Where container logs go (`NAMESPACE_NAME_UID/CONTAINER/0.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// The Linux bridge the built-in runtime's pod network uses.
    #[arg(long, default_value = "bosun0")]
    bridge: String,
    /// The CRI socket for `--runtime remote`.
    #[arg(long, value_name = "PATH")]
    cri_socket: Option<PathBuf>,
    /// The address the kubelet server (logs, exec, attach, port-forward) listens on.
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// The kubelet server's port (the Node's daemonEndpoints tell the API server).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Hard eviction thresholds: under one, the node reports pressure and evicts pods.
    #[arg(
        long,
        value_name = "SIGNAL<QUANTITY,…",
        default_value = "memory.available<100Mi,nodefs.available<10%"
    )]
    eviction_hard: String,
    /// Resources held back for the system, out of the Node's allocatable:
    /// `cpu=500m,memory=1Gi`.
    #[arg(long, value_name = "cpu=Q,memory=Q", default_value = "")]
    system_reserved: String,
    /// The most pods this node runs (the Node's `pods` capacity).
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Stop the node's pods when the agent stops (a node shutting down); otherwise they
    /// keep running and the next start takes them over, as upstream's kubelet.
    #[arg(long)]
    stop_pods_on_exit: bool,
    /// With --stop-pods-on-exit, the most seconds a pod gets to stop (its own
    /// terminationGracePeriodSeconds when shorter).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace_period: u64,
    /// The cluster DNS Service's address, for pods with `dnsPolicy: ClusterFirst`;
    /// repeatable. Without it such pods use the node's resolv.conf.
    #[arg(long = "cluster-dns", value_name = "IP")]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The port this node's cluster DNS server listens on, at the node's address (UDP and
    /// TCP); with `--cluster-dns`, the agent serves the cluster's names there and publishes
    /// itself as the `kube-dns` Service in `kube-system` at that address. 0: no DNS server.
    #[arg(long, default_value_t = 10053)]
    dns_port: u16,
    /// The Service proxy: `nftables` (rules in the kernel, table `ip bosun-proxy`),
    /// `userspace` (a TCP/UDP proxy in the agent, for machines without nftables) or `none`.
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// Enforce NetworkPolicies for this node's pods (nftables table `ip bosun-netpol`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    network_policy: bool,
    /// The pods' address range (traffic to a Service from outside it is masqueraded).
    #[arg(long = "cluster-cidr", default_value = "10.244.0.0/16")]
    proxy_cluster_cidr: String,
    /// A directory of static pod manifests (Pods or PodLists, YAML or JSON) this node runs
    /// on its own; each gets a mirror pod in the API server.
    #[arg(long, value_name = "DIR")]
    pod_manifest_path: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Load the images of an OCI image-layout or docker-archive tarball (air-gapped nodes).
    Import {
        /// The tarball.
        file: PathBuf,
        /// The data directory (images live in DIR/images; default ~/.local/share/bosun).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Pull an image from its registry (anonymously, or with --username/--password).
    Pull {
        /// The image (`busybox`, `ghcr.io/org/app:1`, `127.0.0.1:5000/app@sha256:…`).
        name: String,
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A registry (`host:port`) to reach over plain HTTP; repeatable.
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
        /// Registry user name.
        #[arg(long)]
        username: Option<String>,
        /// Registry password.
        #[arg(long)]
        password: Option<String>,
    },
    /// List the stored images.
    List {
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn default_data_dir(data_dir: Option<PathBuf>) -> PathBuf {
    data_dir.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/bosun")
    })
}

/// `bosun images …`: prints what it did, one line per image.
fn images(cmd: ImagesCommand) -> Result<(), String> {
    use bosun_cri::builtin::images::ImageStore;
    let open = |data_dir: Option<PathBuf>| {
        let dir = default_data_dir(data_dir).join("images");
        ImageStore::open(&dir)
            .map_err(|e| format!("opening the image store in {}: {e}", dir.display()))
    };
    let out = match cmd {
        ImagesCommand::Import { file, data_dir } => open(data_dir)?
            .import(&file)
            .map_err(|e| format!("importing {}: {e}", file.display()))?,
        ImagesCommand::List { data_dir } => open(data_dir)?.list(),
        ImagesCommand::Pull {
            name,
            data_dir,
            insecure_registries,
            username,
            password,
        } => {
            let store = std::sync::Arc::new(open(data_dir)?);
            let config = bosun_cri::builtin::registry::RegistryConfig {
                insecure: insecure_registries,
            };
            let auth = username.map(|u| bosun_cri::v1::AuthConfig {
                username: u,
                password: password.unwrap_or_default(),
                ..Default::default()
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting the async runtime: {e}"))?;
            let image = rt
                .block_on(bosun_cri::builtin::registry::pull(
                    &store,
                    &config,
                    &name,
                    auth.as_ref(),
                ))
                .map_err(|e| e.to_string())?;
            vec![image]
        }
    };
    let mut text = String::new();
    for i in out {
        let name = i
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| "<none>".into());
        text.push_str(&format!("{name}\t{}\t{} bytes\n", i.id, i.size));
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing the list: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,hickory_server=warn")
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let args = match cli.command {
        Command::Server(a) => a,
        Command::ControllerManager(a) => return run(controller_manager(a)),
        Command::Scheduler(a) => return run(scheduler(a)),
        Command::Agent(a) => return run(agent(a)),
        Command::CriShim { args } => {
            return std::process::ExitCode::from(
                u8::try_from(bosun_cri::builtin::shim::run(&args)).unwrap_or(1),
            )
        }
        Command::Images(c) => {
            return match images(c) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bosun: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Up(up_args) => return run(up(up_args)),
    };
    run(server(args))
}

/// The server `bosun up` runs: TLS and RBAC on the embedded store, on loopback.
fn up_server_args(data_dir: PathBuf, port: u16) -> ServerArgs {
    ServerArgs {
        write_kubeconfig: Some(data_dir.join("kubeconfig")),
        data_dir,
        bind_address: std::net::Ipv4Addr::LOCALHOST.into(),
        insecure_http: false,
        tls_sans: Vec::new(),
        token_auth_file: None,
        authorization_mode: AuthorizationMode::Rbac,
        anonymous_auth: false,
        port,
        store: StoreKind::Embedded,
        etcd_endpoints: Vec::new(),
        compaction_interval: 300,
        service_cluster_ip_range: "10.96.0.0/12".into(),
        service_node_port_range: "30000-32767".into(),
        audit_log_path: None,
        max_connections: None,
        audit_policy_file: None,
        encryption_provider_config: None,
        no_controllers: false,
        no_scheduler: false,
    }
}

/// Makes `dir` if missing, private to this user (0700: it holds keys, tokens, Secrets and the
/// volumes that carry them; a looser one is tightened, and the change logged), and checks this
/// process may write there; otherwise one line with the fix.
fn writable_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let probe = dir.join(".bosun-write-check");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                tracing::warn!(dir = %dir.display(), was = format!("{mode:o}"), "the data directory was open to other users; made it 0700");
            }
            Ok(())
        })
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "the data directory {} is not writable ({e}): pass --data-dir with a directory this user may write, or run as one who may",
                dir.display()
            )
        })
}

/// One line for a listener that could not be opened, with the fix when the port is taken.
fn bind_error(what: &str, flag: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen for {what}: the port is in use (another bosun, or another cluster, still running?); stop it or pick another port with {flag}"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot listen for {what}: permission denied (ports below 1024 need root); pick another port with {flag}"
        ),
        _ => format!("cannot listen for {what}: {e}"),
    }
}

/// Whether this process runs as root (uid 0, from /proc/self/status).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// What the node agent needs on this machine and is missing, each with what provides it.
fn missing_for_agent() -> Vec<(&'static str, &'static str)> {
    let found = |paths: &[&str]| paths.iter().any(|p| Path::new(p).exists());
    let mut missing = Vec::new();
    if !found(&["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]) {
        missing.push(("runc", "runc"));
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let paths = [
            format!("/usr/lib/cni/{plugin}"),
            format!("/opt/cni/bin/{plugin}"),
        ];
        if !paths.iter().any(|p| Path::new(p).exists()) {
            missing.push((
                "the CNI plugins (bridge, host-local, loopback, portmap)",
                "containernetworking-plugins",
            ));
            break;
        }
    }
    if !found(&["/usr/sbin/nft", "/usr/bin/nft"]) {
        missing.push(("nft", "nftables"));
    }
    missing
}

/// `bosun up`: the API server, then a node agent joined to it with the node token, in one
/// process. Each missing prerequisite is one line saying what to install.
async fn up(args: UpArgs) -> Result<(), String> {
    let data_dir = default_data_dir(args.data_dir.clone());
    writable_dir(&data_dir)?;
    if !args.no_agent {
        if !running_as_root() {
            return Err("bosun up runs pods, which needs root: run it with sudo, or pass --no-agent for the control plane only".into());
        }
        let mut missing = missing_for_agent();
        if !missing.is_empty() && args.install_missing {
            let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
            tracing::info!(?packages, "installing what the node needs");
            let status = std::process::Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("running apt-get: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "apt-get install {} failed ({status})",
                    packages.join(" ")
                ));
            }
            missing = missing_for_agent();
        }
        if !missing.is_empty() {
            let what: Vec<&str> = missing.iter().map(|(w, _)| *w).collect();
            let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
            return Err(format!(
                "the node needs {} : install with `apt-get install {}`, or run `bosun up --install-missing`, or `bosun up --no-agent` for the control plane only",
                what.join(", "),
                packages.join(" ")
            ));
        }
    }
    let server_args = up_server_args(data_dir.clone(), args.port);
    let kubeconfig = data_dir.join("kubeconfig");
    let token_file = data_dir.join("node-token");
    // A kubeconfig from an earlier start must not be mistaken for this one's.
    let _ = std::fs::remove_file(&kubeconfig);
    let node = if args.no_agent {
        String::new()
    } else {
        format!(
            "; a node: pods on runc (state in {}, logs in {}), pod network on bridge {}, Services in nftables, cluster DNS at 10.96.0.10, kubelet on port {}",
            args.state_dir.display(),
            args.pod_log_dir.display(),
            args.bridge,
            args.kubelet_port
        )
    };
    tracing::info!(
        "bosun up: data in {}; the API server on https://127.0.0.1:{} with the scheduler and controllers{node}",
        data_dir.display(),
        args.port
    );
    let signal = Stop::on_signal();
    if args.no_agent {
        return server_until(server_args, signal).await;
    }
    // On Ctrl-C the node stops its pods first, while the API server still answers; then the
    // API server stops.
    let (stop_server, server_stop) = Stop::manual();
    let control_plane = server_until(server_args, server_stop);
    let node = async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !kubeconfig.exists() || !token_file.exists() {
            if tokio::time::Instant::now() > deadline {
                return Err("the API server did not come up within a minute".to_string());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("reading {}: {e}", token_file.display()))?;
        let node_dir = data_dir.join("node");
        let mut flags: Vec<std::ffi::OsString> = vec![
            "agent".into(),
            "--server".into(),
            format!("https://127.0.0.1:{}", args.port).into(),
            "--token".into(),
            token.trim().into(),
            "--ca-cert".into(),
            data_dir.join("pki/ca.crt").into(),
            "--data-dir".into(),
            node_dir.into(),
            "--state-dir".into(),
            args.state_dir.clone().into(),
            "--pod-log-dir".into(),
            args.pod_log_dir.clone().into(),
            "--bridge".into(),
            args.bridge.clone().into(),
            "--port".into(),
            args.kubelet_port.to_string().into(),
            "--cluster-dns".into(),
            "10.96.0.10".into(),
            // As kind does for a cluster on a developer's machine: no eviction for a full
            // disk (a laptop's is often over 90%), only for memory.
            "--eviction-hard".into(),
            "memory.available<100Mi,nodefs.available<0%".into(),
            "--stop-pods-on-exit".into(),
            "--shutdown-grace-period".into(),
            args.shutdown_grace_period.to_string().into(),
        ];
        if let Some(name) = &args.node_name {
            flags.push("--node-name".into());
            flags.push(name.into());
        }
        let cli = <AgentCli as clap::Parser>::try_parse_from(flags)
            .map_err(|e| format!("the node agent's arguments: {e}"))?;
        tracing::info!(
            kubeconfig = %kubeconfig.display(),
            "cluster starting; use it with: export KUBECONFIG={}",
            kubeconfig.display()
        );
        agent_until(cli.args, signal).await
    };
    tokio::pin!(control_plane, node);
    tokio::select! {
        r = &mut control_plane => r.and(Err("the API server stopped".into())),
        r = &mut node => {
            let _ = stop_server.send(true);
            let served = control_plane.await;
            tracing::info!("bosun stopped");
            r.and(served)
        }
    }
}

/// Runs `main` on a multi-threaded runtime; an error is one line on stderr.
fn run(main: impl std::future::Future<Output = Result<(), String>>) -> std::process::ExitCode {
    // A server of many clients needs more descriptors than the customary soft limit of 1,024
    // (Go programs raise it at start too); the API server's connection cap follows it.
    let files = bosun_apiserver::connection::raise_open_file_limit();
    tracing::debug!(?files, "open-file limit");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bosun: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bosun: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `bosun controller-manager`: the built-in controllers as a client of a cluster, working
/// only while it holds the leader Lease (and exiting if it loses it, as upstream does).
async fn controller_manager(args: ControllerManagerArgs) -> Result<(), String> {
    let config = config_from(args.kubeconfig.as_deref())?;
    let root_ca = config
        .tls
        .ca
        .as_ref()
        .and_then(|ca| String::from_utf8(ca.clone()).ok());
    let client = bosun_client::Client::try_from_config(config).map_err(|e| e.to_string())?;
    let cidr = bosun_controllers::builtin::nodelifecycle::parse_cidr(&args.cluster_cidr)
        .ok_or_else(|| {
            format!(
                "--cluster-cidr {:?} is not an IPv4 CIDR (a.b.c.d/n)",
                args.cluster_cidr
            )
        })?;
    let options = bosun_controllers::builtin::manager::Options {
        node_lifecycle: bosun_controllers::builtin::nodelifecycle::Config {
            grace_period: std::time::Duration::from_secs(args.node_monitor_grace_period),
            cluster_cidr: Some(cidr),
            ..Default::default()
        },
        root_ca,
        // Every controller acts with the kubeconfig's identity (upstream's default without
        // --use-service-account-credentials): give it the rights they all need.
        credentials: None,
    };
    if !args.leader_elect {
        tokio::select! {
            () = bosun_controllers::builtin::manager::run_with(client, options) => {}
            () = shutdown_signal() => {}
        }
        return Ok(());
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bosun".into());
    let identity = format!("{host}_{}", uuid::Uuid::new_v4());
    let election = bosun_controllers::leader::LeaderElection::new(
        client.clone(),
        "kube-system",
        "kube-controller-manager",
        &identity,
    );
    tracing::info!(%identity, "waiting to lead kube-system/kube-controller-manager");
    let leadership = tokio::select! {
        l = election.acquire() => l,
        () = shutdown_signal() => return Ok(()),
    };
    tokio::select! {
        () = bosun_controllers::builtin::manager::run_with(client, options) => Ok(()),
        () = leadership.lost() => Err("leadership lost; exiting".into()),
        () = shutdown_signal() => {
            leadership.release().await;
            Ok(())
        }
    }
}

async fn open_store(args: &ServerArgs) -> Result<Arc<dyn Store>, String> {
    let store = open_backend(args).await?;
    let Some(path) = &args.encryption_provider_config else {
        return Ok(store);
    };
    let text = std::fs::read(path)
        .map_err(|e| format!("--encryption-provider-config {}: {e}", path.display()))?;
    let config = bosun_apiserver::encryption::EncryptionConfig::parse(&text)
        .map_err(|e| format!("--encryption-provider-config {}: {e}", path.display()))?;
    Ok(Arc::new(bosun_apiserver::encryption::EncryptingStore::new(
        store, config,
    )))
}

async fn open_backend(args: &ServerArgs) -> Result<Arc<dyn Store>, String> {
    match args.store {
        StoreKind::Memory => Ok(Arc::new(bosun_store::memory::MemoryStore::new())),
        StoreKind::Embedded => {
            let dir = args.data_dir.join("store");
            let store = bosun_store::embedded::EmbeddedStore::open(&dir)
                .map_err(|e| format!("opening the store in {}: {e}", dir.display()))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "etcd")]
        StoreKind::Etcd => {
            let endpoints: Vec<&str> = args.etcd_endpoints.iter().map(String::as_str).collect();
            let store = bosun_store::etcd::EtcdStore::connect(&endpoints)
                .await
                .map_err(|e| format!("connecting to etcd {:?}: {e}", args.etcd_endpoints))?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "etcd"))]
        StoreKind::Etcd => Err("this bosun was built without the etcd feature".into()),
    }
}

/// The admin's credentials a kubeconfig carries.
enum KubeconfigUser<'a> {
    /// None (plain HTTP on loopback).
    Nobody,
    /// The cluster CA and a client certificate, embedded.
    Certificate {
        ca_pem: &'a str,
        client: &'a bosun_apiserver::pki::Issued,
    },
}

fn write_kubeconfig(path: &Path, server: &str, user: &KubeconfigUser<'_>) -> Result<(), String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let (ca, creds) = match user {
        KubeconfigUser::Nobody => (String::new(), "{}".to_owned()),
        KubeconfigUser::Certificate { ca_pem, client } => (
            format!("\n    certificate-authority-data: {}", b64(ca_pem)),
            format!(
                "\n    client-certificate-data: {}\n    client-key-data: {}",
                b64(&client.cert_pem),
                b64(&client.key_pem)
            ),
        ),
    };
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: bosun
  cluster:
    server: {server}{ca}
contexts:
- name: bosun
  context:
    cluster: bosun
    user: admin
    namespace: default
current-context: bosun
users:
- name: admin
  user: {creds}
"
    );
    // It holds the admin's key: readable by its owner only.
    bosun_apiserver::pki::write_private(path, config.as_bytes()).map_err(|e| e.to_string())
}

/// The names and addresses the API server's certificate is good for.
fn serving_sans(args: &ServerArgs) -> Vec<String> {
    let mut sans: Vec<String> = vec![
        "127.0.0.1".into(),
        "::1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    if !args.bind_address.is_unspecified() {
        sans.push(args.bind_address.to_string());
    }
    // The `kubernetes` Service's cluster IP: the service range's first address.
    if let Some(ip) = args
        .service_cluster_ip_range
        .split_once('/')
        .and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok())
    {
        sans.push(std::net::Ipv4Addr::from(u32::from(ip).wrapping_add(1)).to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            sans.push(host.to_owned());
        }
    }
    for san in &args.tls_sans {
        if !san.is_empty() && !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

/// The cluster's join token: read from `path` (made, 0600, on first start) and kept as a
/// bootstrap-token Secret in `kube-system` (made again if someone deleted it).
async fn ensure_node_token(api: &ApiServer, path: &Path) -> Result<String, String> {
    use bosun_apiserver::certificates::{is_bootstrap_token, new_bootstrap_token};
    let token = match std::fs::read_to_string(path) {
        Ok(t) if is_bootstrap_token(t.trim()) => t.trim().to_owned(),
        Ok(_) => {
            return Err(format!(
                "{}: not a bootstrap token (ID.SECRET)",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = new_bootstrap_token();
            bosun_apiserver::pki::write_private(path, format!("{t}\n").as_bytes())
                .map_err(|e| e.to_string())?;
            t
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    bosun_apiserver::certificates::store_bootstrap_token(
        api.store().as_ref(),
        &token,
        "bosun agents join with this token",
    )
    .await
    .map_err(|e| format!("storing the join token: {e}"))?;
    Ok(token)
}

/// A random bearer token (256 bits).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The in-process components' clients: each its own identity, a token only this process knows.
#[derive(Clone)]
struct LoopbackClients {
    url: String,
    ca_pem: Option<String>,
    tokens: Vec<(String, String)>,
}

impl LoopbackClients {
    fn client(&self, user: &str) -> Result<bosun_client::Client, String> {
        let url = self.url.parse().map_err(|e| format!("{}: {e}", self.url))?;
        let mut config = bosun_client::Config::new(url);
        if let Some(ca) = &self.ca_pem {
            config.tls.ca = Some(ca.as_bytes().to_vec());
        }
        if let Some((_, token)) = self.tokens.iter().find(|(u, _)| *u == user) {
            config.auth = bosun_client::config::Auth::Bearer(token.clone());
        }
        bosun_client::Client::try_from_config(config).map_err(|e| e.to_string())
    }
}

async fn server(args: ServerArgs) -> Result<(), String> {
    server_until(args, Stop::on_signal()).await
}

/// The API server (with the controllers and scheduler unless told not to) until `stop`.
async fn server_until(args: ServerArgs, stop: Stop) -> Result<(), String> {
    use bosun_apiserver::auth;
    if args.insecure_http && !args.bind_address.is_loopback() {
        return Err(format!(
            "refusing to bind {} with --insecure-http: plain HTTP without authentication is only served on loopback (drop --insecure-http to serve TLS)",
            args.bind_address
        ));
    }
    writable_dir(&args.data_dir)?;
    let store = open_store(&args).await?;
    let addr = SocketAddr::new(args.bind_address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(&format!("the API server on {addr}"), "--port", &e))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let ports = args
        .service_node_port_range
        .split_once('-')
        .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)))
        .ok_or_else(|| {
            format!(
                "--service-node-port-range {:?}: expected LOW-HIGH",
                args.service_node_port_range
            )
        })?;
    let service_ranges = Ranges::new(&args.service_cluster_ip_range, ports)
        .map_err(|e| format!("--service-cluster-ip-range: {e}"))?;
    if let Some(path) = &args.audit_log_path {
        // Fail now, clearly, rather than run without the audit log asked for.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--audit-log-path {}: {e}", path.display()))?;
    }
    // The address clients are given: loopback when listening everywhere.
    let reach = if local.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
    } else {
        local
    };
    let audit_policy = match &args.audit_policy_file {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))?;
            Some(Arc::new(
                bosun_apiserver::audit::AuditPolicy::parse(&text)
                    .map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))?,
            ))
        }
        None => None,
    };
    let mut config = Config {
        advertise_address: reach.to_string(),
        service_ranges,
        audit_log_path: args.audit_log_path.clone(),
        audit_policy,
        limits: bosun_apiserver::connection::Limits {
            max_connections: args.max_connections,
            ..Default::default()
        },
        ..Config::default()
    };
    // Who may do what: TLS with client certificates, tokens, RBAC; or, asked for, plain HTTP on
    // loopback where every request is the admin.
    let mut tls = None;
    let mut loopback = LoopbackClients {
        url: format!("http://{reach}"),
        ca_pem: None,
        tokens: Vec::new(),
    };
    let mut kubeconfig_user = None;
    let mut rbac = None;
    let mut signer = None;
    let pipeline = if args.insecure_http {
        auth::Pipeline::default()
    } else {
        let pki_dir = args.data_dir.join("pki");
        let pki = bosun_apiserver::pki::Pki::load_or_create(&pki_dir)
            .map_err(|e| format!("the cluster's certificates in {}: {e}", pki_dir.display()))?;
        let serving = pki
            .issue_serving("kube-apiserver", &serving_sans(&args))
            .map_err(|e| e.to_string())?;
        pki.issue_to_files("apiserver", &serving)
            .map_err(|e| e.to_string())?;
        let admin = pki
            .issue_client("kubernetes-admin", &["system:masters".into()])
            .map_err(|e| e.to_string())?;
        pki.issue_to_files("admin", &admin)
            .map_err(|e| e.to_string())?;
        // The API server's identity towards kubelets (kubeadm's apiserver-kubelet-client);
        // kubelets' serving certificates are checked against the same CA.
        let kubelet_client = pki
            .issue_client("kube-apiserver-kubelet-client", &["system:masters".into()])
            .map_err(|e| e.to_string())?;
        pki.issue_to_files("apiserver-kubelet-client", &kubelet_client)
            .map_err(|e| e.to_string())?;
        config.kubelet_tls = Some(
            pki.kubelet_client_config(&kubelet_client)
                .map_err(|e| e.to_string())?,
        );
        tls = Some(pki.server_config(&serving).map_err(|e| e.to_string())?);
        let mut tokens = match &args.token_auth_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
                auth::TokenFile::parse(&text)
                    .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?
            }
            None => auth::TokenFile::default(),
        };
        for user in ["system:kube-controller-manager", "system:kube-scheduler"] {
            let token = random_token();
            tokens.insert(
                token.clone(),
                auth::UserInfo {
                    name: user.into(),
                    groups: Vec::new(),
                    ..Default::default()
                },
            );
            loopback.tokens.push((user.to_owned(), token));
        }
        // Each controller acts as its own service account, with only its own role.
        for account in bosun_controllers::builtin::manager::ACCOUNTS {
            let token = random_token();
            let user = bosun_apiserver::bootstrap_policy::controller_user(account);
            tokens.insert(
                token.clone(),
                auth::UserInfo {
                    name: user.clone(),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        "system:serviceaccounts:kube-system".into(),
                    ],
                    ..Default::default()
                },
            );
            loopback.tokens.push((user, token));
        }
        loopback.url = format!("https://{reach}");
        loopback.ca_pem = Some(pki.ca_pem().to_owned());
        let sa_key = pki.service_account_key_pem().map_err(|e| e.to_string())?;
        let issuer = Arc::new(
            bosun_apiserver::serviceaccount::TokenIssuer::from_pkcs8_pem(
                &sa_key,
                bosun_apiserver::serviceaccount::DEFAULT_ISSUER,
            )
            .map_err(|e| format!("{}: {e}", pki_dir.join("sa.key").display()))?,
        );
        config.service_account_issuer = Some(Arc::clone(&issuer));
        config.root_ca_pem = Some(pki.ca_pem().to_owned());
        let service_accounts = bosun_apiserver::serviceaccount::ServiceAccountAuthenticator::new(
            issuer,
            vec![bosun_apiserver::serviceaccount::DEFAULT_ISSUER.to_owned()],
            Arc::clone(&store),
        );
        let mut authenticators: Vec<Arc<dyn auth::Authenticator>> = vec![
            Arc::new(auth::X509),
            Arc::new(tokens),
            Arc::new(service_accounts),
            Arc::new(bosun_apiserver::certificates::BootstrapTokens::new(
                Arc::clone(&store),
            )),
        ];
        if args.anonymous_auth {
            authenticators.push(Arc::new(auth::Anonymous));
        }
        let mut admission = auth::default_admission();
        let authorizer: Arc<dyn auth::Authorizer> = match args.authorization_mode {
            AuthorizationMode::AlwaysAllow => Arc::new(auth::AlwaysAllow),
            AuthorizationMode::Rbac => {
                let r = bosun_apiserver::rbac::RbacAuthorizer::default();
                rbac = Some(r.clone());
                admission.push(Arc::new(bosun_apiserver::rbac::EscalationCheck::new(
                    r.clone(),
                )));
                // Upstream's `--authorization-mode Node,RBAC`.
                let node = bosun_apiserver::node::NodeAuthorizer::keep_current(Arc::clone(&store))
                    .await
                    .map_err(|e| format!("reading the pods for the node authorizer: {e}"))?;
                Arc::new(auth::FirstOpinion(vec![Arc::new(node), Arc::new(r)]))
            }
        };
        kubeconfig_user = Some((pki.ca_pem().to_owned(), admin));
        signer = Some((Arc::new(pki), Arc::clone(&authorizer)));
        auth::Pipeline {
            authenticator: Arc::new(auth::Union(authenticators)),
            authorizer,
            admission,
        }
    };
    let api = ApiServer::build(
        Arc::clone(&store),
        ResourceTable::builtin(),
        config,
        pipeline,
    );
    api.bootstrap()
        .await
        .map_err(|e| format!("creating the system objects: {e}"))?;
    if let Some(rbac) = rbac {
        bosun_apiserver::rbac::keep_current(Arc::clone(&store), rbac)
            .await
            .map_err(|e| format!("reading the RBAC roles and bindings: {e}"))?;
    }
    if let Some((pki, authorizer)) = signer {
        bosun_apiserver::certificates::run_signer(api.clone(), pki, authorizer);
        let path = args.data_dir.join("node-token");
        ensure_node_token(&api, &path).await?;
        tracing::info!(
            "nodes join with: bosun agent --server {url} --token $(cat {}) --ca-cert {}",
            path.display(),
            args.data_dir.join("pki/ca.crt").display(),
            url = loopback.url
        );
    }
    if args.compaction_interval > 0 {
        bosun_store::compactor::spawn_compactor(
            Arc::clone(&store),
            std::time::Duration::from_secs(args.compaction_interval),
        );
    }
    let url = loopback.url.clone();
    if let Some(path) = &args.write_kubeconfig {
        let user = match &kubeconfig_user {
            Some((ca_pem, client)) => KubeconfigUser::Certificate { ca_pem, client },
            None => KubeconfigUser::Nobody,
        };
        write_kubeconfig(path, &url, &user)
            .map_err(|e| format!("writing the kubeconfig {}: {e}", path.display()))?;
        tracing::info!(kubeconfig = %path.display(), "kubeconfig written");
    }
    tracing::info!(%url, tls = tls.is_some(), "bosun API server ready");
    if !args.no_controllers {
        match loopback.client("system:kube-controller-manager") {
            Ok(client) => {
                let accounts = loopback.clone();
                let fallback = client.clone();
                let credentials = bosun_controllers::builtin::manager::Credentials(Arc::new(
                    move |account: &str| {
                        let user = bosun_apiserver::bootstrap_policy::controller_user(account);
                        accounts.client(&user).unwrap_or_else(|e| {
                            tracing::error!(account, error = %e, "a controller's client; using the manager's");
                            fallback.clone()
                        })
                    },
                ));
                let options = bosun_controllers::builtin::manager::Options {
                    root_ca: loopback.ca_pem.clone(),
                    credentials: (!loopback.tokens.is_empty()).then_some(credentials),
                    ..Default::default()
                };
                tokio::spawn(bosun_controllers::builtin::manager::run_with(
                    client, options,
                ));
            }
            Err(e) => tracing::error!(error = %e, "controllers not started"),
        }
    }
    if !args.no_scheduler {
        match loopback.client("system:kube-scheduler") {
            Ok(client) => {
                tokio::spawn(async move {
                    if let Err(e) =
                        bosun_scheduler_framework::runner::run(client, Default::default()).await
                    {
                        tracing::error!(error = %e, "scheduler stopped");
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "scheduler not started"),
        }
    }
    let served = match tls {
        Some(tls) => api.serve_tls(listener, tls, stop.wait()).await,
        None => api.serve(listener, stop.wait()).await,
    };
    served.map_err(|e| format!("serving: {e}"))?;
    tracing::info!("bosun API server stopped");
    Ok(())
}

/// A client from `--kubeconfig FILE`, or the usual places.
fn client_from(kubeconfig: Option<&Path>) -> Result<bosun_client::Client, String> {
    bosun_client::Client::try_from_config(config_from(kubeconfig)?).map_err(|e| e.to_string())
}

/// The client configuration of `--kubeconfig FILE`, or of the usual places.
fn config_from(kubeconfig: Option<&Path>) -> Result<bosun_client::Config, String> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = bosun_client::config::Kubeconfig::read(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            bosun_client::Config::from_kubeconfig(&kubeconfig, &Default::default())
                .map_err(|e| format!("using {}: {e}", path.display()))?
        }
        None => bosun_client::Config::infer().map_err(|e| format!("finding a cluster: {e}"))?,
    })
}

/// Runs the node's pods through `rt` (a pass a second; static pods from
/// `--pod-manifest-path`), the eviction manager (a check every 10 s) and image garbage
/// collection (every 5 min) until `stop`; returns the pressure conditions the eviction
/// manager keeps and the task that ends once the pods are stopped (--stop-pods-on-exit).
/// `node` is the node's name and address.
fn spawn_pod_worker<R>(
    client: &bosun_client::Client,
    (node, host_ip): (&str, &str),
    rt: Arc<R>,
    data_dir: &Path,
    machine: &bosun_kubelet::machine::Machine,
    args: &AgentArgs,
    stop: &Stop,
) -> (
    Arc<bosun_kubelet::eviction::Pressure>,
    tokio::task::JoinHandle<()>,
)
where
    R: bosun_cri::RuntimeService + bosun_cri::ImageService + 'static,
{
    let dirs = (data_dir, args.pod_log_dir.as_path());
    // Checked by the caller.
    let thresholds =
        bosun_kubelet::eviction::Thresholds::parse(&args.eviction_hard).unwrap_or_default();
    let mut worker = bosun_kubelet::pods::PodWorker::new(
        client.clone(),
        node.to_string(),
        host_ip.to_string(),
        rt.clone(),
        dirs.1.to_path_buf(),
    )
    .with_pods_dir(dirs.0.join("pods"))
    .with_allocatable(machine.cores.to_string(), machine.memory_bytes.to_string());
    if let Some(dir) = &args.pod_manifest_path {
        worker = worker.with_static_pods(dir.clone());
    }
    worker = worker.with_cluster_dns(bosun_kubelet::dns::ClusterDns {
        servers: args.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
        domain: args.cluster_domain.clone(),
    });
    let worker = Arc::new(worker);
    let images = bosun_kubelet::gc::ImageGc::new(rt.clone(), dirs.0.to_path_buf());
    tokio::spawn(images.run(std::time::Duration::from_secs(300), std::future::pending()));
    let eviction = bosun_kubelet::eviction::EvictionManager::new(
        client.clone(),
        node.to_string(),
        worker.clone(),
        rt,
        dirs.0.to_path_buf(),
        thresholds,
    );
    let pressure = eviction.pressure();
    tokio::spawn(eviction.run(std::time::Duration::from_secs(10), std::future::pending()));
    // On `stop` the passes end; with --stop-pods-on-exit the pods stop too (the returned
    // task ends when they have).
    let (stop_pods, grace) = (args.stop_pods_on_exit, args.shutdown_grace_period);
    let stopped = stop.wait();
    let worked = tokio::spawn(async move {
        worker
            .clone()
            .run(std::time::Duration::from_secs(1), stopped)
            .await;
        if stop_pods {
            tracing::info!(grace_seconds = grace, "stopping the node's pods");
            if let Err(e) = worker.stop_all(std::time::Duration::from_secs(grace)).await {
                tracing::warn!(error = %e, "stopping the node's pods");
            }
        }
    });
    (pressure, worked)
}

/// `bosun agent`: the node agent. The runtime's readiness (its RuntimeReady condition, asked
/// every 5 s) is the Node's Ready condition.
async fn agent(args: AgentArgs) -> Result<(), String> {
    agent_until(args, Stop::on_signal()).await
}

/// The node agent until `stop`; then, with `--stop-pods-on-exit`, its pods stop.
async fn agent_until(args: AgentArgs, stop: Stop) -> Result<(), String> {
    use bosun_cri::RuntimeService;
    use bosun_kubelet::{machine::Machine, node::NodeAgent, node::NodeConfig};
    let data_dir = default_data_dir(args.data_dir.clone());
    writable_dir(&data_dir)?;
    let machine = Machine::detect(&data_dir);
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(|| machine.hostname.clone());
    let host_ip = machine
        .internal_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    // The kubelet's client, and the one the service proxy, network policy and DNS use.
    let identity = agent_clients(&args, &node_name, &data_dir).await?;
    let (client, net_client) = (identity.kubelet.clone(), identity.network.clone());
    let thresholds = bosun_kubelet::eviction::Thresholds::parse(&args.eviction_hard)
        .map_err(|e| format!("--eviction-hard: {e}"))?;
    let (pressure, pods_done);
    let runtime: Arc<dyn RuntimeService> = match args.runtime.as_str() {
        "builtin" => {
            // Images live in DATA/images, as `bosun images` keeps them.
            let mut cfg = bosun_cri::builtin::runtime::BuiltinConfig::new(
                data_dir.clone(),
                args.state_dir.join("cri"),
            );
            let exe = std::env::current_exe().map_err(|e| format!("finding bosun: {e}"))?;
            cfg.shim = vec![exe, PathBuf::from("cri-shim")];
            cfg.cni = Some(bosun_cri::builtin::runtime::CniSetup {
                conf_dir: data_dir.join("cni/net.d"),
                bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
                cache_dir: data_dir.join("cni"),
                name: "bosun".into(),
                bridge: args.bridge.clone(),
            });
            let rt = Arc::new(
                bosun_cri::builtin::runtime::BuiltinRuntime::open(cfg)
                    .map_err(|e| format!("opening the built-in runtime: {e}"))?,
            );
            rt.serve_streaming(([127, 0, 0, 1], 0).into())
                .await
                .map_err(|e| e.to_string())?;
            (pressure, pods_done) = spawn_pod_worker(
                &client,
                (&node_name, &host_ip),
                rt.clone(),
                &data_dir,
                &machine,
                &args,
                &stop,
            );
            rt
        }
        "remote" => {
            let socket = args
                .cri_socket
                .clone()
                .ok_or("--runtime remote needs --cri-socket")?;
            let rt = Arc::new(
                bosun_cri::remote::RemoteRuntime::connect(&socket)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", socket.display()))?,
            );
            (pressure, pods_done) = spawn_pod_worker(
                &client,
                (&node_name, &host_ip),
                rt.clone(),
                &data_dir,
                &machine,
                &args,
                &stop,
            );
            rt
        }
        other => return Err(format!("--runtime {other}: use builtin or remote")),
    };
    let version = runtime
        .version(bosun_cri::v1::VersionRequest {
            version: bosun_cri::API_VERSION.into(),
        })
        .await
        .map_err(|e| format!("asking the container runtime its version: {e}"))?;
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .map_err(|e| {
            bind_error(
                &format!("the kubelet server on {}:{}", args.address, args.port),
                "--port",
                &e,
            )
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("kubelet server address: {e}"))?
        .port();
    // The names the API server may dial the kubelet by: its address and host names.
    let mut names: Vec<String> = [host_ip.clone(), node_name.clone(), machine.hostname.clone()]
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    names.dedup();
    spawn_kubelet_server(
        bosun_kubelet::server::KubeletServer::new(
            client.clone(),
            node_name.clone(),
            runtime.clone(),
            data_dir.clone(),
        ),
        listener,
        &identity,
        &node_name,
        names,
        &data_dir,
    );
    let mut cfg = NodeConfig::new(node_name.clone());
    cfg.kubelet_port = port;
    cfg.max_pods = args.max_pods;
    (cfg.system_reserved_cpu_millis, cfg.system_reserved_memory) =
        bosun_kubelet::node::parse_system_reserved(&args.system_reserved)
            .map_err(|e| format!("--system-reserved: {e}"))?;
    cfg.eviction_hard_memory = thresholds.memory_available;
    cfg.eviction_hard_nodefs_percent = thresholds.nodefs_available_percent;
    cfg.runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    for l in &args.node_labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("--node-label {l}: use KEY=VALUE"))?;
        cfg.labels.insert(k.into(), v.into());
    }
    // The runtime's readiness (runtime and network), refreshed in the background.
    let ready: Arc<std::sync::Mutex<Result<(), String>>> =
        Arc::new(std::sync::Mutex::new(Err("not checked yet".into())));
    let (r, rt) = (ready.clone(), runtime.clone());
    tokio::spawn(async move {
        loop {
            let state = bosun_kubelet::runtime::readiness(&*rt).await;
            // Not ready yet (a new node waiting for its pod network): look again soon.
            let again = if state.is_ok() { 2000 } else { 200 };
            if let Ok(mut g) = r.lock() {
                *g = state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(again)).await;
        }
    });
    // The node's pod CIDR goes to the runtime, which configures the pod network from it.
    tokio::spawn(bosun_kubelet::runtime::sync_pod_cidr(
        client.clone(),
        cfg.name.clone(),
        runtime.clone(),
        std::time::Duration::from_secs(2),
        std::future::pending(),
    ));
    // Routes to the other nodes' pods (host-gw).
    tokio::spawn(bosun_kubelet::network::sync_routes(
        client.clone(),
        cfg.name.clone(),
        std::time::Duration::from_secs(2),
        std::future::pending(),
    ));
    // Services: the proxy, fed by Services and EndpointSlices.
    match args.proxy_mode.as_str() {
        "nftables" => {
            let mut pcfg = bosun_proxy::nftables::NftConfig::new(cfg.name.clone());
            pcfg.cluster_cidr = Some(args.proxy_cluster_cidr.clone());
            let dataplane = Arc::new(bosun_proxy::nftables::NftDataplane::new(pcfg));
            tokio::spawn(bosun_proxy::runner::run(
                net_client.clone(),
                dataplane,
                Default::default(),
                stop.wait(),
            ));
        }
        "userspace" => {
            let dataplane = Arc::new(bosun_proxy::userspace::UserspaceDataplane::new(
                bosun_proxy::userspace::UserspaceConfig::new(cfg.name.clone()),
            ));
            tokio::spawn(bosun_proxy::runner::run(
                net_client.clone(),
                dataplane,
                Default::default(),
                stop.wait(),
            ));
        }
        "none" => {}
        other => {
            return Err(format!(
                "--proxy-mode {other}: use nftables, userspace or none"
            ))
        }
    }
    if args.network_policy {
        tokio::spawn(bosun_proxy::netpol::run(
            net_client.clone(),
            cfg.name.clone(),
            Arc::new(bosun_proxy::netpol::NftPolicies::new()),
            Default::default(),
            stop.wait(),
        ));
    }
    // The cluster DNS, on the node's address, published as kube-dns.
    let mut dns_published = false;
    if let (Some(cluster_ip), Ok(node_ip), true) = (
        args.cluster_dns.first(),
        host_ip.parse::<std::net::IpAddr>(),
        args.dns_port != 0,
    ) {
        use bosun_proxy::dns;
        let upstreams = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| dns::upstreams_from_resolv_conf(&t))
            .unwrap_or_default();
        let server = dns::ClusterDns::new(dns::DnsConfig {
            domain: args.cluster_domain.clone(),
            upstreams,
            ..Default::default()
        });
        match dns::serve(server.clone(), (node_ip, args.dns_port).into()).await {
            Ok((mut running, addr)) => {
                tracing::info!(%addr, "cluster DNS serving");
                tokio::spawn(dns::run(net_client.clone(), server, stop.wait()));
                tokio::spawn(async move {
                    let _ = running.block_until_done().await;
                });
                dns_published = true;
                tokio::spawn(dns::publish(
                    net_client.clone(),
                    *cluster_ip,
                    cfg.name.clone(),
                    node_ip,
                    args.dns_port,
                    stop.wait(),
                ));
            }
            // Another agent on this address serves it already.
            Err(e) => tracing::warn!(error = %e, "cluster DNS not started"),
        }
    }
    tracing::info!(node = %cfg.name, runtime = %cfg.runtime_version, "node agent starting");
    let agent = NodeAgent::new(client.clone(), machine, cfg).with_pressure(pressure);
    agent
        .run(
            move || ready.lock().map_or(Ok(()), |g| g.clone()),
            stop.wait(),
        )
        .await;
    // The pods (with --stop-pods-on-exit) stop while the API server may still be asked.
    if let Err(e) = pods_done.await {
        tracing::warn!(error = %e, "the pod worker");
    }
    if dns_published {
        // Withdrawn here too: the process may end before the publishing task sees the signal.
        if let Err(e) = bosun_proxy::dns::unregister(&net_client, &node_name).await {
            tracing::warn!(error = %e, "withdrawing the cluster DNS");
        }
    }
    Ok(())
}

/// The agent's credentials: the kubelet's client, the one the service proxy, network policy
/// and DNS use, and the cluster CA the kubelet's server checks clients against.
struct AgentIdentity {
    kubelet: bosun_client::Client,
    network: bosun_client::Client,
    /// The cluster CA (PEM) when the cluster speaks TLS.
    ca: Option<Vec<u8>>,
    /// Whether the node joined with its own certificates (it renews them, and the cluster
    /// approves its serving certificate); otherwise its kubeconfig's credentials approve it.
    joined: bool,
}

/// The agent's credentials (see [`AgentIdentity`]). With `--server` and a bootstrap token the
/// node joins: it asks for `system:node:NAME` (approved by the cluster for bootstrap tokens)
/// and, as that node, for `system:kube-proxy`; both are kept in DATA/pki (0600), reused on
/// later starts and renewed with the node's own credentials at 80% of their lifetime.
/// Otherwise both clients are the one of `--server` (with `--token`) or of the kubeconfig.
async fn agent_clients(
    args: &AgentArgs,
    node_name: &str,
    data_dir: &Path,
) -> Result<AgentIdentity, String> {
    use bosun_kubelet::bootstrap::{
        keep_renewed, CertificateRequest, CLIENT_SIGNER, KUBELET_SIGNER,
    };
    let Some(server) = &args.server else {
        let config = config_from(args.kubeconfig.as_deref())?;
        let ca = config.tls.ca.clone();
        let c = bosun_client::Client::try_from_config(config).map_err(|e| e.to_string())?;
        return Ok(AgentIdentity {
            kubelet: c.clone(),
            network: c,
            ca,
            joined: false,
        });
    };
    let url: http::Uri = server
        .parse()
        .map_err(|e| format!("--server {server}: {e}"))?;
    let ca = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("--ca-cert {}: {e}", path.display()))?)
        }
        None => None,
    };
    let config = |auth: bosun_client::config::Auth,
                  identity: Option<bosun_client::tls::RotatingIdentity>| {
        let mut c = bosun_client::Config::new(url.clone());
        c.auth = auth;
        c.tls.ca = ca.clone();
        c.tls.insecure = args.insecure_skip_tls_verify;
        c.tls.rotating = identity;
        bosun_client::Client::try_from_config(c).map_err(|e| e.to_string())
    };
    let token = args.token.clone().unwrap_or_default();
    if !bosun_apiserver::certificates::is_bootstrap_token(&token) {
        let auth = if token.is_empty() {
            bosun_client::config::Auth::None
        } else {
            bosun_client::config::Auth::Bearer(token)
        };
        let c = config(auth, None)?;
        return Ok(AgentIdentity {
            kubelet: c.clone(),
            network: c,
            ca,
            joined: false,
        });
    }
    if ca.is_none() && !args.insecure_skip_tls_verify {
        return Err(
            "--token joins over TLS: pass --ca-cert FILE (the server's DATA/pki/ca.crt)".into(),
        );
    }
    let dir = data_dir.join("pki");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let kubelet_want = CertificateRequest::client(
        &format!("system:node:{node_name}"),
        Some("system:nodes"),
        KUBELET_SIGNER,
    );
    let bootstrap = config(bosun_client::config::Auth::Bearer(token), None)?;
    let (cert, kubelet_identity) = kept_or_requested(
        &dir,
        "kubelet",
        &bootstrap,
        &kubelet_want,
        &format!("joining as system:node:{node_name}"),
    )
    .await?;
    let node_client = config(
        bosun_client::config::Auth::None,
        Some(kubelet_identity.clone()),
    )?;
    let proxy_want = CertificateRequest::client("system:kube-proxy", None, CLIENT_SIGNER);
    let (proxy_cert, proxy_identity) = kept_or_requested(
        &dir,
        "kube-proxy",
        &node_client,
        &proxy_want,
        "getting the service proxy's identity",
    )
    .await?;
    let proxy_client = config(
        bosun_client::config::Auth::None,
        Some(proxy_identity.clone()),
    )?;
    // Both certificates are renewed with the node's own credentials before they expire.
    for (name, want, current, identity) in [
        ("kubelet", kubelet_want, cert, kubelet_identity),
        ("kube-proxy", proxy_want, proxy_cert, proxy_identity),
    ] {
        let dir = dir.clone();
        tokio::spawn(keep_renewed(
            node_client.clone(),
            want,
            current,
            move |issued| {
                keep_pair(&dir, name, issued)?;
                identity
                    .replace(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                    .map_err(|e| e.to_string())
            },
        ));
    }
    tracing::info!(
        node = node_name,
        "joined: the kubelet is system:node:{node_name}, the network parts system:kube-proxy"
    );
    Ok(AgentIdentity {
        kubelet: node_client,
        network: proxy_client,
        ca,
        joined: true,
    })
}

/// The certificate `NAME` of `dir` (see [`load_pair`]), or, when there is none, one asked for
/// as `want` through `client` (`what` says why, in the log and errors) and kept there; with
/// a replaceable identity of it for the clients that use it.
async fn kept_or_requested(
    dir: &Path,
    name: &str,
    client: &bosun_client::Client,
    want: &bosun_kubelet::bootstrap::CertificateRequest,
    what: &str,
) -> Result<(String, bosun_client::tls::RotatingIdentity), String> {
    let (cert, key) = match load_pair(dir, name) {
        Some(pair) => pair,
        None => {
            tracing::info!("{what}: asking for a certificate");
            let wait = std::time::Duration::from_secs(300);
            let issued = bosun_kubelet::bootstrap::request_certificate(client, want, wait)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            keep_pair(dir, name, &issued)?;
            (issued.cert_pem, issued.key_pem)
        }
    };
    let identity = bosun_client::tls::RotatingIdentity::new(cert.as_bytes(), key.as_bytes())
        .map_err(|e| format!("{}: {e}", dir.join(format!("{name}.crt")).display()))?;
    Ok((cert, identity))
}

/// `NAME.crt` and `NAME.key` (PEM) from `dir`, if both are there.
fn load_pair(dir: &Path, name: &str) -> Option<(String, String)> {
    let cert = std::fs::read_to_string(dir.join(format!("{name}.crt"))).ok()?;
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?;
    Some((cert, key))
}

/// Keeps an issued certificate and its key as `NAME.crt`/`NAME.key` in `dir`, mode 0600.
fn keep_pair(
    dir: &Path,
    name: &str,
    issued: &bosun_kubelet::bootstrap::Issued,
) -> Result<(), String> {
    bosun_apiserver::pki::write_private(&dir.join(format!("{name}.key")), issued.key_pem.as_bytes())
        .and_then(|()| {
            bosun_apiserver::pki::write_private(
                &dir.join(format!("{name}.crt")),
                issued.cert_pem.as_bytes(),
            )
        })
        .map_err(|e| format!("keeping {name}'s certificate in {}: {e}", dir.display()))
}

/// Serves the kubelet's API on `listener`: over TLS when the cluster has a CA (a serving
/// certificate for the node's names from the CSR API, kept in DATA/pki and renewed; every
/// request authenticated and authorized through the API server), else plain HTTP.
fn spawn_kubelet_server(
    server: Arc<bosun_kubelet::server::KubeletServer>,
    listener: tokio::net::TcpListener,
    identity: &AgentIdentity,
    node_name: &str,
    names: Vec<String>,
    data_dir: &Path,
) {
    use bosun_kubelet::auth::{server_config, KubeletAuth, ServingCertificate};
    use bosun_kubelet::bootstrap::{
        keep_renewed, renewal_time, request_certificate, CertificateRequest,
    };
    let Some(ca) = identity.ca.clone() else {
        tracing::warn!(
            "the cluster has no CA: the kubelet's server speaks plain HTTP without authentication"
        );
        tokio::spawn(server.serve(listener, std::future::pending()));
        return;
    };
    let client = identity.kubelet.clone();
    let node = node_name.to_owned();
    let dir = data_dir.join("pki");
    let mut want = CertificateRequest::kubelet_serving(node_name, names);
    want.approve = !identity.joined;
    tokio::spawn(async move {
        let names_file = dir.join("kubelet-server.names");
        let names = want.names.join(",");
        let kept = load_pair(&dir, "kubelet-server").filter(|(cert, _)| {
            std::fs::read_to_string(&names_file).is_ok_and(|n| n == names)
                && renewal_time(cert).is_some_and(|t| t > std::time::SystemTime::now())
        });
        let (cert, key) = match kept {
            Some(pair) => pair,
            None => loop {
                match request_certificate(&client, &want, std::time::Duration::from_secs(300)).await
                {
                    Ok(issued) => {
                        if let Err(e) = std::fs::create_dir_all(&dir)
                            .map_err(|e| e.to_string())
                            .and_then(|()| keep_pair(&dir, "kubelet-server", &issued))
                            .and_then(|()| {
                                std::fs::write(&names_file, &names).map_err(|e| e.to_string())
                            })
                        {
                            tracing::warn!(error = %e, "the kubelet's serving certificate is not kept");
                        }
                        break (issued.cert_pem, issued.key_pem);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no serving certificate for the kubelet yet; asking again in 10 s");
                        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    }
                }
            },
        };
        let serving = match ServingCertificate::new(cert.as_bytes(), key.as_bytes()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "the kubelet's serving certificate is unusable");
                return;
            }
        };
        let tls = match server_config(&ca, serving.clone()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "the kubelet's TLS configuration");
                return;
            }
        };
        let renewing = serving.clone();
        tokio::spawn(keep_renewed(client.clone(), want, cert, move |issued| {
            keep_pair(&dir, "kubelet-server", issued)?;
            renewing
                .replace(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                .map_err(|e| e.to_string())
        }));
        tracing::info!(
            node,
            "the kubelet's server speaks TLS and checks every request with the API server"
        );
        server
            .with_auth(KubeletAuth::new(client, &node))
            .serve_tls(listener, tls, std::future::pending())
            .await;
    });
}

/// `bosun scheduler`: the scheduler as a client of a cluster, working only while it holds
/// the leader Lease when leader election is on (the default, as upstream).
async fn scheduler(args: SchedulerArgs) -> Result<(), String> {
    use bosun_scheduler_framework::{runner, SchedulerConfig};
    let config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            SchedulerConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => SchedulerConfig::default(),
    };
    let kubeconfig = args.kubeconfig.clone().or_else(|| {
        config
            .client_connection
            .as_ref()
            .and_then(|c| c.kubeconfig.clone())
            .filter(|k| !k.is_empty())
            .map(PathBuf::from)
    });
    let client = client_from(kubeconfig.as_deref())?;
    let le = config.leader_election.clone().unwrap_or_default();
    let leader_elect = args.leader_elect.or(le.leader_elect).unwrap_or(true);
    let scheduler = bosun_scheduler_framework::Scheduler::builder(Arc::new(
        runner::ApiCluster::new(client.clone()),
    ))
    .config(config)
    .build()
    .map_err(|e| e.to_string())?;
    if let Some(addr) = args.metrics_bind_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics-bind-address {addr}: {e}"))?;
        tokio::spawn(serve_metrics(listener, scheduler.shared().clone()));
    }
    if !leader_elect {
        tokio::select! {
            () = runner::run_scheduler(client, scheduler) => {}
            () = shutdown_signal() => {}
        }
        return Ok(());
    }
    let namespace = le
        .resource_namespace
        .unwrap_or_else(|| "kube-system".into());
    let name = le.resource_name.unwrap_or_else(|| "kube-scheduler".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bosun".into());
    let identity = format!("{host}_{}", uuid::Uuid::new_v4());
    let election = bosun_controllers::leader::LeaderElection::new(
        client.clone(),
        &namespace,
        &name,
        &identity,
    );
    tracing::info!(%identity, "waiting to lead {namespace}/{name}");
    let leadership = tokio::select! {
        l = election.acquire() => l,
        () = shutdown_signal() => return Ok(()),
    };
    tokio::select! {
        () = runner::run_scheduler(client, scheduler) => Ok(()),
        () = leadership.lost() => Err("leadership lost; exiting".into()),
        () = shutdown_signal() => {
            leadership.release().await;
            Ok(())
        }
    }
}

/// Serves the scheduler's `/metrics` and `/healthz`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shared: Arc<bosun_scheduler_framework::scheduler::Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (
                            hyper::StatusCode::OK,
                            shared.metrics.render(shared.queue.pending()),
                        ),
                        "/healthz" => (hyper::StatusCode::OK, "ok".to_string()),
                        _ => (hyper::StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    let mut resp =
                        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                    *resp.status_mut() = status;
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

/// When a command stops: on Ctrl-C or SIGTERM ([`Stop::on_signal`]), or when `bosun up`
/// says so ([`Stop::manual`]), which stops the node's pods before the API server.
#[derive(Clone)]
struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Stops on Ctrl-C or SIGTERM.
    fn on_signal() -> Self {
        let (tx, stop) = Self::manual();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        stop
    }

    /// Stops when `true` is sent (or the sender is dropped).
    fn manual() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Stop(rx))
    }

    /// Resolves once stopping.
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
