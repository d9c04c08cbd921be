//! The embedded backend: conformance, restart with history, and crash safety under SIGKILL.

use bosun_store::embedded::EmbeddedStore;
use bosun_store::{EventKind, RangeRequest, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    bosun_store::conformance::run_all(|| {
        let path = dir.path().join(format!(
            "db{}",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        async move { Arc::new(EmbeddedStore::open(path).unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_watches_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/store");
    let (r1, r2) = {
        let s = EmbeddedStore::open(&path).unwrap();
        let r1 = s.create("/a", "1".into()).await.unwrap();
        let r2 = s.update("/a", "2".into(), r1).await.unwrap();
        s.create("/b", "x".into()).await.unwrap();
        (r1, r2)
    };
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), r2 + 1);
    assert_eq!(s.get("/a", Some(r1)).await.unwrap().unwrap().value, "1");
    let mut w = s.watch("/", r1).await.unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!((e.kind, e.revision()), (EventKind::Put, r2));
    assert_eq!(e.prev_kv.as_ref().unwrap().value, "1");
    assert_eq!(w.next().await.unwrap().unwrap().kv.key, "/b");
    let r4 = s.create("/c", "new".into()).await.unwrap();
    assert_eq!(
        w.next().await.unwrap().unwrap().revision(),
        r4,
        "live events follow the backlog"
    );
    assert!(s.db_size().await.unwrap() > 0);
    // Keys are arbitrary UTF-8, NUL included (as in etcd).
    let r = s.create("/odd\0key", "x".into()).await.unwrap();
    assert_eq!(
        s.get("/odd\0key", None)
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
}

/// Role of the child process: write until killed, printing each acknowledged revision.
#[test]
fn crash_writer_child() {
    let Some(path) = std::env::var_os("BOSUN_STORE_CRASH_CHILD") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(path).unwrap());
        let start = store.current_revision().await.unwrap();
        // Four concurrent writers so that batches hold several writes (group commit).
        let mut tasks = Vec::new();
        for t in 0..4 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/crash/{start}/{t}/{i}");
                    let value = format!("{key}={}", "x".repeat((i % 64) as usize));
                    let rev = store.create(&key, value.into()).await.unwrap();
                    println!("ACK {rev} {key}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash-store");
    let exe = std::env::current_exe().unwrap();
    let kills = if std::env::var_os("CI").is_some() {
        25
    } else {
        20
    };
    let mut acked: Vec<(i64, String)> = Vec::new();
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "embedded::crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BOSUN_STORE_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a pseudo-random number of acknowledgements (varies the moment).
        let target = 5 + (round * 37 + 11) % 120;
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < target {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("ACK ") {
                        let (rev, key) = rest.split_once(' ').unwrap();
                        acked.push((rev.parse().unwrap(), key.to_owned()));
                        seen += 1;
                    }
                }
                _ => panic!("round {round}: the writer exited before it was killed"),
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Acknowledgements already written to the pipe count too.
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (rev, key) = rest.split_once(' ').unwrap();
                acked.push((rev.parse().unwrap(), key.to_owned()));
            }
        }
        let _ = child.wait();
        // Reopen: every acknowledged write is there; the store is internally consistent.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = EmbeddedStore::open(&path).unwrap();
            let current = store.current_revision().await.unwrap();
            for (rev, key) in &acked {
                let kv = store
                    .get(key, None)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
                assert_eq!(kv.mod_revision, *rev, "round {round}: {key}");
                assert!(
                    kv.value.starts_with(key.as_bytes()),
                    "round {round}: {key} has a torn value"
                );
                assert!(*rev <= current);
            }
            // Nothing half-visible: every revision up to the current one replays as an event
            // whose key holds a complete value.
            let all = store.range(RangeRequest::prefix("/crash/")).await.unwrap();
            let mut w = store.watch("/crash/", 1).await.unwrap();
            for _ in 0..all.kvs.len() {
                let e = w.next().await.unwrap().unwrap();
                assert!(e.kv.value.starts_with(e.kv.key.as_bytes()));
            }
            assert_eq!(all.revision, current);
            assert_eq!(
                all.kvs.len() as i64,
                current - 1,
                "round {round}: revisions without a visible write"
            );
        });
    }
    assert!(acked.len() >= kills, "too few acknowledged writes");
}

/// Every file under `dir` whose mode lets group or others read it (empty: all private).
fn readable_by_others(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let private = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode & !private != 0 {
            found.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_directory_is_private_and_a_loose_one_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.create(
            "/registry/secrets/default/s",
            "{\"data\":{\"k\":\"c2VjcmV0\"}}".into(),
        )
        .await
        .unwrap();
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new store directory");
    drop(EmbeddedStore::open(&path).unwrap());
    assert_eq!(
        readable_by_others(&path),
        Vec::<String>::new(),
        "after a restart"
    );
    // A directory an older version left world-readable, with world-readable files.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut loose = Vec::new();
    let mut stack = vec![path.clone()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            loose.push(p);
        }
    }
    assert!(!loose.is_empty());
    assert!(!readable_by_others(&path).is_empty());
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(readable_by_others(&path), Vec::<String>::new());
    assert!(s
        .get("/registry/secrets/default/s", None)
        .await
        .unwrap()
        .is_some());
}
