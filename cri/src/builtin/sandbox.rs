//! A pod sandbox's shared namespaces, held open without a pause process: util-linux's
//! `unshare --net=FILE --uts=FILE --ipc=FILE` creates the namespaces and bind-mounts each onto
//! a file, so they live as long as the mounts do. The sandbox's hostname is set inside the new
//! UTS namespace; CNI gets the network namespace's file as `CNI_NETNS`; containers join the
//! three by path in their OCI spec.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The namespaces of one sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespaces {
    /// The directory holding the three namespace files.
    pub dir: PathBuf,
}

const KINDS: [&str; 3] = ["net", "uts", "ipc"];

impl Namespaces {
    /// The network namespace file.
    pub fn net(&self) -> PathBuf {
        self.dir.join("net")
    }

    /// The UTS namespace file.
    pub fn uts(&self) -> PathBuf {
        self.dir.join("uts")
    }

    /// The IPC namespace file.
    pub fn ipc(&self) -> PathBuf {
        self.dir.join("ipc")
    }

    /// Creates new network, UTS and IPC namespaces held by files in `dir` (created), with
    /// `hostname` set in the UTS one.
    pub fn create(dir: &Path, hostname: &str) -> Result<Self> {
        if hostname.is_empty() || hostname.len() > 64 || hostname.starts_with('-') {
            return Err(Error::InvalidArgument(format!(
                "invalid sandbox hostname {hostname:?}"
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
        let ns = Namespaces {
            dir: dir.to_path_buf(),
        };
        for k in KINDS {
            std::fs::File::create(dir.join(k))
                .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.join(k).display())))?;
        }
        let out = Command::new("unshare")
            .arg(format!("--net={}", ns.net().display()))
            .arg(format!("--uts={}", ns.uts().display()))
            .arg(format!("--ipc={}", ns.ipc().display()))
            .args(["hostname", hostname])
            .output()
            .map_err(|e| Error::Internal(format!("running unshare (util-linux): {e}")))?;
        if !out.status.success() {
            let _ = ns.remove();
            return Err(Error::Internal(format!(
                "creating the sandbox namespaces: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // The loopback interface starts down in a new network namespace.
        let up = Command::new("nsenter")
            .arg(format!("--net={}", ns.net().display()))
            .args(["ip", "link", "set", "lo", "up"])
            .output();
        if !up.is_ok_and(|o| o.status.success()) {
            let _ = ns.remove();
            return Err(Error::Internal(
                "bringing up the sandbox's loopback interface".into(),
            ));
        }
        Ok(ns)
    }

    /// Whether the namespace files are still mounted (the namespaces alive).
    pub fn alive(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let net = self.net().display().to_string();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(net.as_str()))
    }

    /// Releases the namespaces (once no process is in them, the kernel frees them) and
    /// removes the directory. Idempotent.
    pub fn remove(&self) -> Result<()> {
        for k in KINDS {
            let f = self.dir.join(k);
            match rustix::mount::unmount(&f, rustix::mount::UnmountFlags::DETACH) {
                Ok(()) => {}
                // Not mounted (or already gone).
                Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(Error::Internal(format!("unmounting {}: {e}", f.display()))),
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Internal(format!(
                "removing {}: {e}",
                self.dir.display()
            ))),
        }
    }
}
