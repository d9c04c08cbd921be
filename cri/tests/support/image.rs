//! Test images built at test time: an OCI image layout archive holding one layer with
//! Debian's static busybox and its applets as symlinks. Nothing binary is committed.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where Debian's busybox-static installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

const APPLETS: &[&str] = &[
    "sh", "sleep", "httpd", "wget", "cat", "echo", "ls", "true", "false", "head", "dd", "nc", "id",
    "hostname", "ps", "kill", "mkdir", "env", "grep", "tail", "stty", "tty", "seq",
];

/// A GNU tar header owned by root (as image layers are).
fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for d in ["bin/", "tmp/", "etc/", "proc/", "sys/", "dev/", "www/"] {
        dir(&mut b, d);
    }
    let busybox = std::fs::read(BUSYBOX).expect("busybox-static is installed");
    let mut h = header();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for a in APPLETS {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    let index = b"hello from bosun\n";
    let mut h = header();
    h.set_mode(0o644);
    h.set_size(index.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "www/index.html", &index[..]).unwrap();
    b.into_inner().unwrap()
}

/// Writes `name` (e.g. `docker.io/bosun/busybox:1`) as an OCI image layout archive into `dir`,
/// with `cmd` as the image's command; returns the archive's path.
pub fn busybox_archive(dir: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    oci_archive(dir, name, cmd, vec![layer()])
}

fn config_for(cmd: &[&str], layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// The busybox image's config and its one layer (an uncompressed tar).
pub fn busybox_parts(cmd: &[&str]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let layers = vec![layer()];
    (config_for(cmd, &layers), layers)
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An OCI image layout archive of `layers` (uncompressed tars, bottom first).
pub fn oci_archive(dir: &Path, name: &str, cmd: &[&str], layers: Vec<Vec<u8>>) -> PathBuf {
    let config = config_for(cmd, &layers);
    let config_digest = digest(&config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = digest(&manifest);
    let tag = name.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}],
    }))
    .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
    ];
    for blob in layers.iter().chain([&config, &manifest]) {
        files.push((
            format!(
                "blobs/sha256/{}",
                digest(blob).trim_start_matches("sha256:")
            ),
            blob.clone(),
        ));
    }
    write_tar(dir, name, files)
}

/// The busybox image as `docker save` writes it.
pub fn busybox_docker_archive(dir: &Path, name: &str) -> PathBuf {
    let layers = vec![layer()];
    let config = config_for(&["sh"], &layers);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": [name], "Layers": ["l0/layer.tar"]}
    ]))
    .unwrap();
    write_tar(
        dir,
        &format!("{name}-docker"),
        vec![
            ("manifest.json".into(), manifest),
            ("config.json".into(), config),
            ("l0/layer.tar".into(), layers[0].clone()),
        ],
    )
}

fn write_tar(dir: &Path, name: &str, files: Vec<(String, Vec<u8>)>) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = header();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    let out = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    std::fs::write(&out, b.into_inner().unwrap()).unwrap();
    out
}

/// A layer of regular files (`path`, contents) and whiteout markers (paths as given).
pub fn files_layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = header();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}
