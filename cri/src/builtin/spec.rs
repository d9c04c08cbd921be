//! OCI runtime specs (runc's `config.json`) from CRI configs: process (command and args over
//! the image's entrypoint and cmd, env, working dir, user), capabilities, privileged,
//! read-only rootfs, mounts, resources as cgroup limits, the sandbox's namespaces by path,
//! sysctls, and upstream's masked and read-only paths. The result is checked by
//! deserializing it into `oci_spec::runtime::Spec`.

use super::images::ImageConfig;
use super::sandbox::Namespaces;
use crate::v1::{
    ContainerConfig, Mount as CriMount, MountPropagation, NamespaceMode, PodSandboxConfig,
};
use crate::{Error, Result};
use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use std::path::Path;

/// The capabilities a container gets by default (containerd's and Docker's set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn cap_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The process arguments: CRI `command` replaces the image's entrypoint and CRI `args` its
/// cmd; if only `command` is given, the image's cmd is not used (Kubernetes' rule).
pub fn process_args(c: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    match (c.command.is_empty(), c.args.is_empty()) {
        (false, false) => c.command.iter().chain(&c.args).cloned().collect(),
        (false, true) => c.command.clone(),
        (true, false) => image.entrypoint.iter().chain(&c.args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The environment: the image's, overridden by the container's, in order.
fn env(c: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    for kv in &c.envs {
        set(&kv.key, &kv.value);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// uid and gid: the security context's, else the image's numeric `USER` (`uid[:gid]`).
fn user(c: &ContainerConfig, image: &ImageConfig) -> Result<(i64, i64)> {
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let (mut uid, mut gid) = (0i64, 0i64);
    if !image.user.is_empty() {
        let (u, g) = image.user.split_once(':').unwrap_or((&image.user, ""));
        uid = u.parse().map_err(|_| {
            Error::InvalidArgument(format!(
                "image user {:?} is not numeric (named users need the image's /etc/passwd, not read yet)",
                image.user
            ))
        })?;
        if !g.is_empty() {
            gid = g
                .parse()
                .map_err(|_| Error::InvalidArgument(format!("image group {g:?} is not numeric")))?;
        }
    }
    if let Some(u) = sc.and_then(|s| s.run_as_user.as_ref()) {
        uid = u.value;
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        gid = g.value;
    }
    Ok((uid, gid))
}

fn mount(m: &CriMount) -> Value {
    let mut options = vec!["rbind".to_string()];
    options.push(if m.readonly { "ro" } else { "rw" }.into());
    let prop = match MountPropagation::try_from(m.propagation)
        .unwrap_or(MountPropagation::PropagationPrivate)
    {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    };
    options.push(prop.into());
    json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": options})
}

/// The spec for `c` in the sandbox `sb` (namespaces `ns`), on the root filesystem `rootfs`,
/// in the cgroup `cgroups_path`.
pub fn generate(
    sb: &PodSandboxConfig,
    ns: &Namespaces,
    c: &ContainerConfig,
    image: &ImageConfig,
    rootfs: &Path,
    cgroups_path: &str,
) -> Result<Spec> {
    let linux = c.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let (uid, gid) = user(c, image)?;
    let mut caps: Vec<String> = if privileged {
        // Everything the kernel knows; runc ignores names it does not.
        ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if let Some(cs) = sc.and_then(|s| s.capabilities.as_ref()) {
        if cs
            .add_capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL"))
        {
            caps = ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        } else {
            for a in &cs.add_capabilities {
                let n = cap_name(a);
                if !caps.contains(&n) {
                    caps.push(n);
                }
            }
        }
        if cs
            .drop_capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL"))
        {
            caps.clear();
        } else {
            for d in &cs.drop_capabilities {
                let n = cap_name(d);
                caps.retain(|c| *c != n);
            }
        }
    }
    let cwd = if c.working_dir.is_empty() {
        if image.working_dir.is_empty() {
            "/".to_string()
        } else {
            image.working_dir.clone()
        }
    } else {
        c.working_dir.clone()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
    ];
    mounts.extend(c.mounts.iter().map(mount));
    let res = linux.and_then(|l| l.resources.as_ref());
    let mut resources = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
    if let Some(r) = res {
        let mut cpu = serde_json::Map::new();
        if r.cpu_shares > 0 {
            cpu.insert("shares".into(), json!(r.cpu_shares));
        }
        if r.cpu_quota > 0 {
            cpu.insert("quota".into(), json!(r.cpu_quota));
        }
        if r.cpu_period > 0 {
            cpu.insert("period".into(), json!(r.cpu_period));
        }
        if !r.cpuset_cpus.is_empty() {
            cpu.insert("cpus".into(), json!(r.cpuset_cpus));
        }
        if !r.cpuset_mems.is_empty() {
            cpu.insert("mems".into(), json!(r.cpuset_mems));
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        if r.memory_limit_in_bytes > 0 {
            resources["memory"] = json!({"limit": r.memory_limit_in_bytes});
        }
    }
    let sysctls: serde_json::Map<String, Value> = sb
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    let readonly_root = sc.is_some_and(|s| s.readonly_rootfs);
    // Namespaces: NODE mode shares the host's; a host-network pod also keeps the host's UTS
    // namespace (and so its hostname), as upstream runtimes do.
    let opts = sb
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let node = |mode: Option<i32>| mode == Some(NamespaceMode::Node as i32);
    let host_net = node(opts.map(|o| o.network));
    let mut namespaces = vec![json!({"type": "mount"})];
    if !node(opts.map(|o| o.pid)) {
        namespaces.push(json!({"type": "pid"}));
    }
    if !host_net {
        namespaces.push(json!({"type": "network", "path": ns.net()}));
        namespaces.push(json!({"type": "uts", "path": ns.uts()}));
    }
    if !node(opts.map(|o| o.ipc)) {
        namespaces.push(json!({"type": "ipc", "path": ns.ipc()}));
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": c.tty,
            "user": {"uid": uid, "gid": gid,
                     "additionalGids": sc.map(|s| s.supplemental_groups.clone()).unwrap_or_default()},
            "args": process_args(c, image),
            "env": env(c, image),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sc.is_some_and(|s| s.no_new_privs),
        },
        "root": {"path": rootfs, "readonly": readonly_root},
        "hostname": if host_net { Value::Null } else { json!(sb.hostname) },
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "sysctl": sysctls,
            "namespaces": namespaces,
            "maskedPaths": if privileged { Vec::new() } else { MASKED.to_vec() },
            "readonlyPaths": if privileged { Vec::new() } else { READONLY.to_vec() },
        },
    });
    serde_json::from_value(spec).map_err(|e| Error::Internal(format!("building the OCI spec: {e}")))
}

/// Every Linux capability (for privileged containers and `add: [ALL]`).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::*;

    fn ns() -> Namespaces {
        Namespaces {
            dir: "/run/bosun/sandboxes/abc".into(),
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            user: "1000:1000".into(),
            env: vec!["PATH=/bin".into(), "A=image".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            working_dir: "/app".into(),
        }
    }

    fn container() -> ContainerConfig {
        ContainerConfig {
            envs: vec![KeyValue {
                key: "A".into(),
                value: "container".into(),
            }],
            mounts: vec![CriMount {
                container_path: "/data".into(),
                host_path: "/var/lib/x".into(),
                readonly: true,
                ..Default::default()
            }],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_quota: 50_000,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: vec!["NET_ADMIN".into()],
                        drop_capabilities: vec!["KILL".into()],
                        ..Default::default()
                    }),
                    readonly_rootfs: true,
                    run_as_user: Some(Int64Value { value: 42 }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    fn spec_json(c: &ContainerConfig) -> Value {
        let sb = PodSandboxConfig {
            hostname: "web-0".into(),
            ..Default::default()
        };
        let s = generate(&sb, &ns(), c, &image(), Path::new("/rootfs"), "/kubepods/x").unwrap();
        serde_json::to_value(s).unwrap()
    }

    #[test]
    fn kubernetes_command_rules() {
        let img = image();
        let mut c = ContainerConfig::default();
        assert_eq!(process_args(&c, &img), ["/entry", "serve"]);
        c.args = vec!["--port=1".into()];
        assert_eq!(process_args(&c, &img), ["/entry", "--port=1"]);
        c.command = vec!["sh".into()];
        assert_eq!(process_args(&c, &img), ["sh", "--port=1"]);
        c.args.clear();
        assert_eq!(process_args(&c, &img), ["sh"]);
    }

    #[test]
    fn the_spec_carries_the_cri_config() {
        let v = spec_json(&container());
        let p = &v["process"];
        assert_eq!(p["args"], json!(["/entry", "serve"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=container"]));
        assert_eq!(p["cwd"], "/app");
        assert_eq!(
            (p["user"]["uid"].as_i64(), p["user"]["gid"].as_i64()),
            (Some(42), Some(1000))
        );
        let caps: Vec<&str> = p["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            caps.contains(&"CAP_NET_ADMIN")
                && !caps.contains(&"CAP_KILL")
                && caps.contains(&"CAP_CHOWN")
        );
        assert_eq!(v["root"], json!({"path": "/rootfs", "readonly": true}));
        assert_eq!(v["hostname"], "web-0");
        let l = &v["linux"];
        assert_eq!(l["cgroupsPath"], "/kubepods/x");
        assert_eq!(l["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(l["resources"]["cpu"]["quota"], 50_000);
        let nss = l["namespaces"].as_array().unwrap();
        assert!(nss
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/bosun/sandboxes/abc/net"));
        assert!(nss
            .iter()
            .any(|n| n["type"] == "pid" && n.get("path").is_none()));
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap()
            .clone();
        assert_eq!(data["options"], json!(["rbind", "ro", "rprivate"]));
        assert!(l["maskedPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/kcore"));
    }

    #[test]
    fn privileged_containers_get_everything() {
        let mut c = container();
        if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.privileged = true;
            sc.capabilities = None;
        }
        let v = spec_json(&c);
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .is_none_or(|a| a.is_empty()));
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn named_image_users_are_refused_clearly() {
        let mut img = image();
        img.user = "nginx".into();
        let c = ContainerConfig::default();
        let err = generate(
            &PodSandboxConfig::default(),
            &ns(),
            &c,
            &img,
            Path::new("/r"),
            "/x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not numeric"), "{err}");
    }
}
