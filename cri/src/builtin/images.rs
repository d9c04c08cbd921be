//! The built-in image store: OCI content kept by digest on disk, images imported from OCI
//! image-layout and docker-archive tarballs, and each layer unpacked once into a snapshot
//! directory ready to be an overlayfs lower layer (whiteouts become overlay whiteouts:
//! `.wh.NAME` a 0:0 character device, `.wh..wh..opq` the `trusted.overlay.opaque` xattr).
//!
//! Layout under the root: `blobs/sha256/HEX` (manifests, configs, layers as received),
//! `snapshots/HEX/` (one per layer chain ID), `images.json` (the index, replaced atomically).

use crate::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, ListImagesRequest, ListImagesResponse,
    PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse, UInt64Value,
};
use crate::{Error, ImageService, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What a container needs from its image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `User`.
    pub user: String,
    /// `Env` (`K=V`).
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
}

/// One stored image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: its config's digest.
    pub id: String,
    /// Names (`docker.io/library/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Names by manifest digest (`docker.io/library/busybox@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Layer diff IDs, bottom first.
    pub diff_ids: Vec<String>,
    /// Layer chain IDs, bottom first (snapshot names).
    pub chain_ids: Vec<String>,
    /// Total size of the layers as stored.
    pub size: u64,
    /// The config's process defaults.
    pub config: ImageConfig,
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// The store. Several processes may share one (a running node and `bosun images import`):
/// every change takes a lock file, re-reads the index and writes it back whole, and readers
/// re-read the index when its file changed, so an import reaches a running node at once and
/// concurrent writers lose nothing.
pub struct ImageStore {
    root: PathBuf,
    index: Mutex<Cached>,
}

/// The index as last read, and the file's modification time and length then.
struct Cached {
    index: Index,
    stamp: Option<(std::time::SystemTime, u64)>,
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    // tar's errors carry the cause as their source.
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Internal(msg)
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn hex(digest: &str) -> Result<&str> {
    let h = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::InvalidArgument(format!("unsupported digest {digest:?}")))?;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "malformed digest {digest:?}"
        )));
    }
    Ok(h)
}

/// A reference as the CRI and kubelet use it: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(name: &str) -> String {
    if name.starts_with("sha256:") {
        return name.to_string();
    }
    let (repo, suffix) = match name.find('@') {
        Some(i) => (&name[..i], &name[i..]),
        None => {
            let last = name.rsplit('/').next().unwrap_or(name);
            match last.rfind(':') {
                Some(j) => {
                    let cut = name.len() - last.len() + j;
                    (&name[..cut], &name[cut..])
                }
                None => (name, ":latest"),
            }
        }
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}{suffix}")
}

/// Chain IDs from diff IDs, as the OCI image spec defines them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => digest_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn image_config(config: &Value) -> ImageConfig {
    let c = config.get("config").cloned().unwrap_or(Value::Null);
    ImageConfig {
        user: c
            .get("User")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        env: strs(&c, "Env"),
        entrypoint: strs(&c, "Entrypoint"),
        cmd: strs(&c, "Cmd"),
        working_dir: c
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }
}

/// A layer entry's path inside the layer, or None if it would leave the root.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks one layer (a tar stream, gzip or not) into `dir`, turning whiteouts into overlay
/// whiteouts.
pub fn unpack_layer(layer: impl Read, dir: &Path) -> Result<()> {
    let mut buf = BufReader::new(layer);
    let gz = {
        use std::io::BufRead;
        let head = buf.fill_buf().map_err(|e| io("reading a layer", e))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    std::fs::create_dir_all(dir).map_err(|e| io(dir.display(), e))?;
    for entry in archive.entries().map_err(|e| io("reading a layer", e))? {
        let mut entry = entry.map_err(|e| io("reading a layer entry", e))?;
        let raw = entry
            .path()
            .map_err(|e| io("a layer entry's path", e))?
            .into_owned();
        let Some(path) = clean(&raw) else {
            return Err(Error::InvalidArgument(format!(
                "layer entry {} leaves the root",
                raw.display()
            )));
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(target) = name.strip_prefix(".wh.") {
            let parent = dir.join(path.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(|e| io(parent.display(), e))?;
            if target == ".wh..opq" {
                xattr::set(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(|e| io(format!("marking {} opaque", parent.display()), e))?;
            } else {
                let at = parent.join(target);
                let _ = std::fs::remove_file(&at);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &at,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| io(format!("whiteout {}", at.display()), e.into()))?;
            }
            continue;
        }
        entry
            .unpack_in(dir)
            .map_err(|e| io(format!("unpacking {}", path.display()), e))?;
    }
    Ok(())
}

impl ImageStore {
    /// Opens (or creates) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in ["blobs/sha256", "snapshots", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| io(root.join(d).display(), e))?;
        }
        let store = ImageStore {
            index: Mutex::new(Cached {
                index: Index::default(),
                stamp: None,
            }),
            root,
        };
        {
            let mut cached = store.cached();
            cached.stamp = store.stamp();
            cached.index = store.read_index()?;
        }
        Ok(store)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn cached(&self) -> MutexGuard<'_, Cached> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index file's modification time and length (`None` while there is none).
    fn stamp(&self) -> Option<(std::time::SystemTime, u64)> {
        let meta = std::fs::metadata(self.index_path()).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("reading {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io(path.display(), e)),
        }
    }

    /// The index, re-read first if another process changed it.
    fn lock(&self) -> MutexGuard<'_, Cached> {
        let mut cached = self.cached();
        let stamp = self.stamp();
        if stamp != cached.stamp {
            match self.read_index() {
                Ok(index) => {
                    cached.index = index;
                    cached.stamp = stamp;
                }
                Err(e) => tracing::warn!(error = %e, "re-reading the image index"),
            }
        }
        cached
    }

    /// Changes the index: under the store's lock file (other processes wait), on the index as
    /// it is on disk, written back before the lock is let go.
    fn update<T>(&self, change: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("images.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(lock_path.display(), e))?;
        lock.lock().map_err(|e| io(lock_path.display(), e))?;
        let mut cached = self.cached();
        cached.index = self.read_index()?;
        let out = change(&mut cached.index)?;
        self.save(&cached.index)?;
        cached.stamp = self.stamp();
        Ok(out)
    }

    fn save(&self, index: &Index) -> Result<()> {
        let path = self.index_path();
        let tmp = self
            .root
            .join(format!("images.json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| io(tmp.display(), e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(tmp.display(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(path.display(), e))
    }

    /// Imports the image tarballs (`*.tar`: docker archives or OCI layouts) put in the store's
    /// directory, as k3s imports its air-gap images directory at start; each once (a tarball
    /// replaced by a newer one is imported again). Returns what was imported; a tarball that
    /// fails is logged and skipped.
    pub fn import_dropped(&self) -> Vec<ImageRecord> {
        let done_path = self.root.join("imported.json");
        let mut done: BTreeMap<String, String> = std::fs::read(&done_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut tarballs: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar") && p.is_file())
            .collect();
        tarballs.sort();
        for t in tarballs {
            let name = t
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let stamp = std::fs::metadata(&t)
                .ok()
                .and_then(|m| Some(format!("{:?} {}", m.modified().ok()?, m.len())))
                .unwrap_or_default();
            if done.get(&name) == Some(&stamp) {
                continue;
            }
            match self.import(&t) {
                Ok(images) => {
                    tracing::info!(tarball = %t.display(), images = images.len(), "imported");
                    out.extend(images);
                    done.insert(name, stamp);
                }
                Err(e) => tracing::warn!(tarball = %t.display(), error = %e, "importing"),
            }
        }
        if let Ok(bytes) = serde_json::to_vec_pretty(&done) {
            if let Err(e) = std::fs::write(&done_path, bytes) {
                tracing::warn!(path = %done_path.display(), error = %e, "recording imports");
            }
        }
        out
    }

    /// A blob's path.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex(digest)?))
    }

    /// A snapshot's directory (for a chain ID).
    pub fn snapshot_path(&self, chain_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(hex(chain_id)?))
    }

    /// Stores `bytes` under their digest, checking it against `expected` when given.
    fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String> {
        let d = digest_of(bytes);
        if let Some(want) = expected {
            if want != d {
                return Err(Error::InvalidArgument(format!(
                    "blob digest mismatch: expected {want}, got {d}"
                )));
            }
        }
        let path = self.blob_path(&d)?;
        if !path.exists() {
            let tmp = self
                .root
                .join("tmp")
                .join(format!("{}-{}", hex(&d)?, std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| io(tmp.display(), e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(path.display(), e))?;
        }
        Ok(d)
    }

    /// The diff ID (digest of the uncompressed tar) of a stored layer.
    fn diff_id(&self, layer: &[u8]) -> Result<String> {
        if layer.starts_with(&[0x1f, 0x8b]) {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(layer)
                .read_to_end(&mut raw)
                .map_err(|e| io("decompressing a layer", e))?;
            Ok(digest_of(&raw))
        } else {
            Ok(digest_of(layer))
        }
    }

    /// Adds an image from its config and layers (bytes as stored), under `names`.
    fn add(
        &self,
        names: &[String],
        manifest_digest: Option<&str>,
        config: &[u8],
        layers: &[Vec<u8>],
    ) -> Result<ImageRecord> {
        let config_digest = self.put_blob(config, None)?;
        let config_json: Value = serde_json::from_slice(config)
            .map_err(|e| Error::InvalidArgument(format!("image config: {e}")))?;
        let mut diff_ids = Vec::new();
        let mut size = 0u64;
        for l in layers {
            self.put_blob(l, None)?;
            diff_ids.push(self.diff_id(l)?);
            size += l.len() as u64;
        }
        let declared = strs(
            config_json.get("rootfs").unwrap_or(&Value::Null),
            "diff_ids",
        );
        if !declared.is_empty() && declared != diff_ids {
            return Err(Error::InvalidArgument(format!(
                "layers do not match the config's diff_ids ({declared:?} vs {diff_ids:?})"
            )));
        }
        let chains = chain_ids(&diff_ids);
        for (layer, chain) in layers.iter().zip(&chains) {
            let dir = self.snapshot_path(chain)?;
            if dir.exists() {
                continue;
            }
            // Unpacked apart, then moved in whole; another process may do the same layer at
            // the same time, and whoever is second keeps the first one's.
            let tmp =
                self.root
                    .join("tmp")
                    .join(format!("snap-{}-{}", hex(chain)?, std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            unpack_layer(layer.as_slice(), &tmp)?;
            if let Err(e) = std::fs::rename(&tmp, &dir) {
                let _ = std::fs::remove_dir_all(&tmp);
                if !dir.exists() {
                    return Err(io(dir.display(), e));
                }
            }
        }
        let repo_tags: Vec<String> = names.iter().map(|n| normalize(n)).collect();
        let repo_digests = match manifest_digest {
            Some(md) => repo_tags
                .iter()
                .map(|t| {
                    let repo = t.rsplit_once(':').map(|(r, _)| r).unwrap_or(t);
                    format!("{repo}@{md}")
                })
                .collect(),
            None => Vec::new(),
        };
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags: repo_tags.clone(),
            repo_digests,
            diff_ids,
            chain_ids: chains,
            size,
            config: image_config(&config_json),
        };
        self.update(|index| {
            // A name moves to the new image.
            for img in index.images.values_mut() {
                img.repo_tags.retain(|t| !repo_tags.contains(t));
            }
            let entry = index
                .images
                .entry(config_digest)
                .or_insert_with(|| record.clone());
            for t in &record.repo_tags {
                if !entry.repo_tags.contains(t) {
                    entry.repo_tags.push(t.clone());
                }
            }
            for d in &record.repo_digests {
                if !entry.repo_digests.contains(d) {
                    entry.repo_digests.push(d.clone());
                }
            }
            Ok(entry.clone())
        })
    }

    /// Stores an image fetched from a registry as `name`, with the manifest (or index)
    /// digest it was resolved to; layers as fetched (compressed or not).
    pub fn add_pulled(
        &self,
        name: &str,
        repo_digest: &str,
        config: &[u8],
        layers: &[Vec<u8>],
    ) -> Result<ImageRecord> {
        self.add(&[name.to_string()], Some(repo_digest), config, layers)
    }

    /// A stored blob's bytes, if it is here and intact.
    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest).ok()?).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    /// Imports every image in an OCI image-layout or docker-archive tarball.
    pub fn import(&self, archive: &Path) -> Result<Vec<ImageRecord>> {
        let tmp = tempdir_in(&self.root.join("tmp"))?;
        let file = std::fs::File::open(archive).map_err(|e| io(archive.display(), e))?;
        let mut a = tar::Archive::new(BufReader::new(file));
        a.unpack(tmp.path())
            .map_err(|e| io(format!("unpacking {}", archive.display()), e))?;
        let read = |rel: &str| -> Result<Vec<u8>> {
            let p = clean(Path::new(rel))
                .ok_or_else(|| Error::InvalidArgument(format!("{rel:?} leaves the archive")))?;
            std::fs::read(tmp.path().join(&p))
                .map_err(|e| io(format!("{} in {}", p.display(), archive.display()), e))
        };
        let json = |bytes: &[u8]| -> Result<Value> {
            serde_json::from_slice(bytes)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", archive.display())))
        };
        let mut out = Vec::new();
        if tmp.path().join("index.json").exists() {
            // OCI image layout.
            let index = json(&read("index.json")?)?;
            for m in index
                .get("manifests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let digest = m.get("digest").and_then(Value::as_str).unwrap_or("");
                let manifest_bytes = read(&format!("blobs/sha256/{}", hex(digest)?))?;
                if digest_of(&manifest_bytes) != digest {
                    return Err(Error::InvalidArgument(format!(
                        "manifest {digest} does not match its digest"
                    )));
                }
                let manifest = json(&manifest_bytes)?;
                let ann = m.get("annotations");
                let name = ann
                    .and_then(|a| a.get("io.containerd.image.name"))
                    .and_then(Value::as_str)
                    .map(String::from)
                    .or_else(|| {
                        ann.and_then(|a| a.get("org.opencontainers.image.ref.name"))
                            .and_then(Value::as_str)
                            .filter(|r| r.contains('/') || r.contains(':'))
                            .map(String::from)
                    });
                let blob = |d: &Value| -> Result<Vec<u8>> {
                    let dg = d.get("digest").and_then(Value::as_str).unwrap_or("");
                    let bytes = read(&format!("blobs/sha256/{}", hex(dg)?))?;
                    if digest_of(&bytes) != dg {
                        return Err(Error::InvalidArgument(format!(
                            "blob {dg} does not match its digest"
                        )));
                    }
                    Ok(bytes)
                };
                let config = blob(manifest.get("config").unwrap_or(&Value::Null))?;
                let layers = manifest
                    .get("layers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(blob)
                    .collect::<Result<Vec<_>>>()?;
                self.put_blob(&manifest_bytes, Some(digest))?;
                let names: Vec<String> = name.into_iter().collect();
                out.push(self.add(&names, Some(digest), &config, &layers)?);
            }
        } else if tmp.path().join("manifest.json").exists() {
            // docker save.
            let manifest = json(&read("manifest.json")?)?;
            for m in manifest.as_array().into_iter().flatten() {
                let config = read(m.get("Config").and_then(Value::as_str).unwrap_or(""))?;
                let layers = strs(m, "Layers")
                    .iter()
                    .map(|l| read(l))
                    .collect::<Result<Vec<_>>>()?;
                out.push(self.add(&strs(m, "RepoTags"), None, &config, &layers)?);
            }
        } else {
            return Err(Error::InvalidArgument(format!(
                "{} is neither an OCI image layout nor a docker archive",
                archive.display()
            )));
        }
        Ok(out)
    }

    /// An image by name, repo digest or ID.
    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        let n = normalize(name);
        self.lock()
            .index
            .images
            .values()
            .find(|i| {
                i.id == name
                    || i.repo_tags.contains(&n)
                    || i.repo_digests.contains(&n)
                    || i.id.ends_with(name) && name.len() >= 12
            })
            .cloned()
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock().index.images.values().cloned().collect()
    }

    /// The snapshot directories of an image, top layer first (overlayfs `lowerdir` order).
    pub fn lower_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.snapshot_path(c))
            .collect()
    }

    /// Removes an image, and the snapshots and blobs no other image uses.
    pub fn remove(&self, name: &str) -> Result<()> {
        let Some(img) = self.resolve(name) else {
            return Ok(());
        };
        self.update(|index| {
            index.images.remove(&img.id);
            let used: HashSet<&String> = index
                .images
                .values()
                .flat_map(|i| i.chain_ids.iter())
                .collect();
            for c in img.chain_ids.iter().filter(|c| !used.contains(c)) {
                let _ = std::fs::remove_dir_all(self.snapshot_path(c)?);
            }
            Ok(())
        })
    }

    /// Bytes used by blobs.
    pub fn used_bytes(&self) -> u64 {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn to_cri(&self, i: &ImageRecord) -> Image {
        Image {
            id: i.id.clone(),
            repo_tags: i.repo_tags.clone(),
            repo_digests: i.repo_digests.clone(),
            size: i.size,
            username: i.config.user.clone(),
            spec: Some(ImageSpec {
                image: i.id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir_in(parent: &Path) -> Result<TempDir> {
    for n in 0.. {
        let p = parent.join(format!("import-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(p.display(), e)),
        }
    }
    Err(Error::Internal("no temporary directory".into()))
}

#[async_trait]
impl ImageService for ImageStore {
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse> {
        let want = req
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = self
            .list()
            .iter()
            .filter(|i| {
                want.as_ref()
                    .is_none_or(|w| i.repo_tags.contains(&normalize(w)) || &i.id == w)
            })
            .map(|i| self.to_cri(i))
            .collect();
        Ok(ListImagesResponse { images })
    }

    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
        let name = req.image.map(|i| i.image).unwrap_or_default();
        Ok(ImageStatusResponse {
            image: self.resolve(&name).map(|i| self.to_cri(&i)),
            ..Default::default()
        })
    }

    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse> {
        let name = req.image.map(|i| i.image).unwrap_or_default();
        match self.resolve(&name) {
            Some(i) => Ok(PullImageResponse { image_ref: i.id }),
            // The store alone does not reach registries: `BuiltinRuntime` (or
            // `registry::pull`) does.
            None => Err(Error::Unimplemented(format!(
                "{name} is not stored and this image service does not pull; pull through the built-in runtime, `bosun images pull`, or load it with `bosun images import FILE`"
            ))),
        }
    }

    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        self.remove(&req.image.map(|i| i.image).unwrap_or_default())?;
        Ok(RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0),
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.root.display().to_string(),
                }),
                used_bytes: Some(UInt64Value {
                    value: self.used_bytes(),
                }),
                inodes_used: None,
            }],
            container_filesystems: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_containerd_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("bosun/x:1"), "docker.io/bosun/x:1");
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            normalize("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        let d = format!("nginx@sha256:{}", "a".repeat(64));
        assert_eq!(normalize(&d), format!("docker.io/library/{d}"));
    }

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], digest_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn entries_cannot_leave_the_root() {
        assert_eq!(clean(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(
            clean(Path::new("/etc/passwd")),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(clean(Path::new("a/../../x")), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn name_part() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,6}"
    }

    proptest! {
        /// Normalizing is idempotent, and always yields a tag or a digest.
        #[test]
        fn normalize_is_idempotent(
            registry in proptest::option::of(prop_oneof![Just("localhost:5000".to_string()), Just("registry.example.com".to_string())]),
            path in proptest::collection::vec(name_part(), 1..3),
            tag in proptest::option::of("[a-z0-9][a-z0-9.]{0,5}"),
        ) {
            let mut name = path.join("/");
            if let Some(r) = registry { name = format!("{r}/{name}"); }
            if let Some(t) = tag { name = format!("{name}:{t}"); }
            let once = normalize(&name);
            prop_assert_eq!(normalize(&once), once.clone());
            let last = once.rsplit('/').next().unwrap_or("");
            prop_assert!(last.contains(':') || last.contains('@'));
        }

        /// Any tree of files packed into a layer unpacks to the same files, and nothing lands
        /// outside the target (entries with `..` are refused).
        #[test]
        fn layers_round_trip_and_stay_inside(
            files in proptest::collection::btree_map("[a-z]{1,4}(/[a-z]{1,4}){0,2}", "[ -~]{0,40}", 1..12),
            evil in any::<bool>(),
        ) {
            let mut b = tar::Builder::new(Vec::new());
            let mut paths: Vec<&String> = files.keys().collect();
            // A path that is also a directory of another entry cannot be a file too.
            paths.retain(|p| !files.keys().any(|q| q.starts_with(&format!("{p}/"))));
            for p in &paths {
                let data = files[*p].as_bytes();
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p.as_str(), data).unwrap();
            }
            if evil {
                // Written raw: the builder itself refuses `..`.
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(1);
                let name = b"../escape";
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
            let layer = b.into_inner().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("t");
            let r = unpack_layer(layer.as_slice(), &target);
            prop_assert!(!dir.path().join("escape").exists());
            if evil {
                prop_assert!(r.is_err());
            } else {
                prop_assert!(r.is_ok(), "{:?}", r);
                for p in &paths {
                    let got = std::fs::read_to_string(target.join(p.as_str())).unwrap();
                    prop_assert_eq!(&got, &files[*p]);
                }
            }
        }
    }
}
