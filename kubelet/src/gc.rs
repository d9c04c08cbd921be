//! Garbage collection of unused images, as upstream's image GC manager: when the image
//! filesystem is more than `high` percent full (85 by default), images no container uses
//! (running or dead) and older than the minimum age are removed, least recently used first,
//! until it would be under `low` percent (80).
//!
//! Dead containers need no separate pass: the pod worker keeps one dead instance per
//! container (for `lastState` and `logs --previous`, upstream's `MaxPerPodContainer=1`) and
//! removes the older ones at each restart; a removed pod's sandbox goes with its containers.

use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects unused images.
pub struct ImageGc<R> {
    rt: Arc<R>,
    dir: PathBuf,
    /// Usage (percent) above which collection starts.
    pub high: u64,
    /// Usage (percent) collection brings the filesystem under.
    pub low: u64,
    /// Images seen for less than this stay.
    pub min_age: Duration,
    /// Image ID → (first seen, last used).
    seen: Mutex<HashMap<String, (Instant, Instant)>>,
}

impl<R> ImageGc<R>
where
    R: RuntimeService + ImageService + 'static,
{
    /// A collector for `rt`'s images; `dir` is on the image filesystem (the kubelet's data
    /// directory). Upstream's defaults: 85 %, 80 %, 2 minutes.
    pub fn new(rt: Arc<R>, dir: PathBuf) -> Self {
        ImageGc {
            rt,
            dir,
            high: 85,
            low: 80,
            min_age: Duration::from_secs(120),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// One pass: `(capacity, available)` bytes of the image filesystem; the removed images'
    /// IDs.
    pub async fn collect(&self, capacity: u64, available: u64) -> Result<Vec<String>, String> {
        let images = self
            .rt
            .list_images(ListImagesRequest::default())
            .await
            .map_err(|e| format!("listing images: {e}"))?
            .images;
        let containers = self
            .rt
            .list_containers(ListContainersRequest::default())
            .await
            .map_err(|e| format!("listing containers: {e}"))?
            .containers;
        let now = Instant::now();
        let in_use = |i: &Image| {
            containers.iter().any(|c| {
                let spec = c.image.as_ref().map(|s| s.image.as_str()).unwrap_or("");
                [c.image_ref.as_str(), spec].iter().any(|r| {
                    !r.is_empty()
                        && (i.id == *r
                            || i.repo_tags.iter().any(|t| t == r)
                            || i.repo_digests.iter().any(|d| d == r))
                })
            })
        };
        let mut candidates = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|id, _| images.iter().any(|i| i.id == *id));
            for i in &images {
                let entry = seen.entry(i.id.clone()).or_insert((now, now));
                if in_use(i) {
                    entry.1 = now;
                } else if now.duration_since(entry.0) >= self.min_age {
                    candidates.push((entry.1, i.id.clone(), i.size));
                }
            }
        }
        if capacity == 0 {
            return Ok(Vec::new());
        }
        let used = capacity.saturating_sub(available);
        if used * 100 < capacity * self.high {
            return Ok(Vec::new());
        }
        let mut to_free = used.saturating_sub(capacity * self.low / 100);
        candidates.sort();
        let mut removed = Vec::new();
        for (_, id, size) in candidates {
            if to_free == 0 {
                break;
            }
            match self
                .rt
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: id.clone(),
                        ..Default::default()
                    }),
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(image = %id, bytes = size, "removed an unused image");
                    to_free = to_free.saturating_sub(size);
                    removed.push(id);
                }
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "removing an unused image failed")
                }
            }
        }
        Ok(removed)
    }

    /// Collects every `interval` (upstream: 5 minutes) until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let fs = rustix::fs::statvfs(&self.dir).ok();
            let capacity = fs.as_ref().map_or(0, |s| s.f_blocks * s.f_frsize);
            let available = fs.as_ref().map_or(0, |s| s.f_bavail * s.f_frsize);
            if let Err(e) = self.collect(capacity, available).await {
                tracing::warn!(error = %e, "image garbage collection failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_cri::simulated::SimulatedRuntime;

    #[tokio::test]
    async fn removes_unused_images_least_recently_used_first() {
        let rt = Arc::new(SimulatedRuntime::default());
        let spec = |image: &str| {
            Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            })
        };
        for name in ["a", "b", "c"] {
            rt.pull_image(PullImageRequest {
                image: spec(name),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let sb = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "p".into(),
                        uid: "u".into(),
                        namespace: "ns".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: sb,
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: spec("a"),
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await
        .unwrap();
        let mut gc = ImageGc::new(rt.clone(), "/".into());
        // Too young to go.
        assert!(gc.collect(100, 0).await.unwrap().is_empty());
        gc.min_age = Duration::ZERO;
        // Under the high mark: nothing goes.
        assert!(gc.collect(100, 50).await.unwrap().is_empty());
        // 90 % used: 10 bytes bring it to 80 %; one unused image is enough.
        assert_eq!(gc.collect(100, 10).await.unwrap().len(), 1);
        // Far over: every unused image goes; the one a container uses stays.
        assert_eq!(gc.collect(100 << 30, 0).await.unwrap().len(), 1);
        let left: Vec<String> = rt
            .list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect();
        assert_eq!(left, ["a"]);
    }
}
