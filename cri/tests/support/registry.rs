//! Debian's `docker-registry` (the CNCF distribution registry) started by the test on a
//! loopback port with its storage in a temporary directory, and pushes into it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/bin/docker-registry";

/// Whether the registry tests can run; panics in CI when the package is missing.
pub fn available() -> bool {
    if Path::new(BINARY).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{BINARY} is missing (scripts/test-all installs docker-registry)"
    );
    eprintln!("skipping: {BINARY} is missing");
    false
}

pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !get(&r.addr, "/v2/")
            .is_some_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
        {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn client() -> oci_client::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        })
    }

    /// Pushes blobs and a manifest (raw bytes with its media type) as `repo:tag`; returns the
    /// manifest's digest.
    pub async fn push(
        &self,
        repo_tag: &str,
        blobs: &[Vec<u8>],
        manifest: &[u8],
        media_type: &str,
    ) -> String {
        let reference: oci_client::Reference = format!("{}/{repo_tag}", self.addr).parse().unwrap();
        let c = Self::client();
        for b in blobs {
            c.push_blob(&reference, b.clone(), &super::image::digest(b))
                .await
                .unwrap();
        }
        c.push_manifest_raw(&reference, manifest.to_vec(), media_type.parse().unwrap())
            .await
            .unwrap();
        super::image::digest(manifest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
