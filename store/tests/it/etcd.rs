//! The etcd backend against a real etcd (Debian's etcd-server, 3.4), started on free loopback
//! ports. A missing etcd binary fails these tests: `scripts/test-all` installs it.

use bosun_store::etcd::LocalCluster;
use bosun_store::{Error, Store};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_single_member_passes_conformance() {
    let cluster = LocalCluster::start(1).expect("etcd");
    let shared: Arc<dyn Store> = Arc::new(cluster.connect().await.expect("etcd ready"));
    // One etcd for every check: the suite's key prefixes are unique per check.
    bosun_store::conformance::run_all(|| {
        let s = Arc::clone(&shared);
        async move { s }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_survives_losing_a_member() {
    let mut cluster = LocalCluster::start(3).expect("etcd");
    let store = cluster.connect().await.expect("etcd ready");
    for i in 0..20 {
        store
            .create(&format!("/ha/before/{i}"), "v".into())
            .await
            .unwrap();
    }
    cluster.kill(0);
    for i in 0..50 {
        let key = format!("/ha/after/{i}");
        match store.create(&key, "v".into()).await {
            Ok(_) => {}
            Err(Error::Backend(first)) => {
                // While the client leaves the dead member, and while the others elect a new
                // leader if it led ("request timed out"), writes may fail; they must succeed
                // again within a bounded time (a timed-out write may have been applied).
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    match store.create(&key, "v".into()).await {
                        Ok(_) | Err(Error::AlreadyExists { .. }) => break,
                        Err(e) if std::time::Instant::now() < deadline => {
                            tracing::debug!(error = %e, "retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!(
                            "write {i} still failing 30 s after a member was killed: {first}; {e}"
                        ),
                    }
                }
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    let (n, _) = store.count("/ha/").await.unwrap();
    assert_eq!(n, 70);
}
