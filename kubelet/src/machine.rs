//! What the node is: cores, memory, disk, identity and addresses, read from the kernel and
//! the usual files (as cAdvisor does for the upstream kubelet).

use std::net::IpAddr;
use std::path::Path;

/// The machine's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: u64,
    /// Physical memory in bytes (`MemTotal`).
    pub memory_bytes: u64,
    /// Size of the filesystem holding the kubelet's directory, in bytes.
    pub ephemeral_bytes: u64,
    /// The host name.
    pub hostname: String,
    /// The address other nodes reach this one at.
    pub internal_ip: Option<IpAddr>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The DMI product UUID (empty when unreadable).
    pub system_uuid: String,
    /// This boot's ID.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
}

fn read_trimmed(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` from a `/proc/meminfo` text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `PRETTY_NAME` from an os-release text.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The source address of the route to the outside (no packet is sent).
fn outbound_ip() -> Option<IpAddr> {
    // Connecting a UDP socket only picks the route; nothing leaves the machine.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

impl Machine {
    /// Reads the facts; `dir` is the kubelet's data directory (its filesystem's size is the
    /// ephemeral storage).
    pub fn detect(dir: &Path) -> Machine {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_bytes = mem_total(&read_trimmed("/proc/meminfo")).unwrap_or(0);
        let ephemeral_bytes = rustix::fs::statvfs(dir)
            .map(|s| s.f_blocks * s.f_frsize)
            .unwrap_or(0);
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_lowercase();
        Machine {
            cores,
            memory_bytes,
            ephemeral_bytes,
            hostname,
            internal_ip: outbound_ip(),
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid").to_lowercase(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&std::fs::read_to_string("/etc/os-release").unwrap_or_default())
                .unwrap_or_else(|| "Linux".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_os_release() {
        assert_eq!(
            mem_total("MemTotal:       24589376 kB\nMemFree: 1 kB\n"),
            Some(24589376 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn detects_this_machine() {
        let d = tempfile::tempdir().unwrap();
        let m = Machine::detect(d.path());
        assert!(
            m.cores >= 1 && m.memory_bytes > 0 && m.ephemeral_bytes > 0,
            "{m:?}"
        );
        assert!(!m.hostname.is_empty() && !m.kernel_version.is_empty());
    }
}
