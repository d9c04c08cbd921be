//! Sandbox namespaces held open by bind mounts, without a pause process.

use bosun_cri::builtin::sandbox::Namespaces;
use std::process::Command;

fn in_ns(flag: &str, ns: &std::path::Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("{flag}={}", ns.display()))
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn namespaces_live_without_a_process_and_go_away_cleanly() {
    if !crate::support::containerd::is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the sandbox test needs root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespaces::create(&dir.path().join("sb1"), "web-0").unwrap();
    assert!(ns.alive());
    // Its own network stack: loopback only, and up.
    let links = in_ns("--net", &ns.net(), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    // Its own hostname, while the host keeps its own.
    assert_eq!(in_ns("--uts", &ns.uts(), &["hostname"]).trim(), "web-0");
    assert_ne!(
        String::from_utf8_lossy(&Command::new("hostname").output().unwrap().stdout).trim(),
        "web-0"
    );
    // A second sandbox is a different network namespace.
    let other = Namespaces::create(&dir.path().join("sb2"), "db-0").unwrap();
    assert_ne!(
        in_ns("--net", &ns.net(), &["readlink", "/proc/self/ns/net"]),
        in_ns("--net", &other.net(), &["readlink", "/proc/self/ns/net"])
    );
    // Teardown: no mounts left, directory gone; idempotent.
    for n in [&ns, &other] {
        n.remove().unwrap();
        n.remove().unwrap();
        assert!(!n.alive());
        assert!(!n.dir.exists());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.path().display().to_string()));
    assert!(Namespaces::create(&dir.path().join("bad"), "-x").is_err());
}
