//! The per-request costs security adds: an RBAC decision over the bootstrap roles plus 1,000
//! namespaces' bindings, verifying a service-account JWT, sealing and opening a 4 KiB Secret
//! with each at-rest provider, and the Node authorizer's Secret check on a node with 100 pods.
//!
//! `cargo bench -p bosun-apiserver --bench security`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bosun_api_types::rbac::v1::{ClusterRole, RoleBinding};
use bosun_apiserver::auth::{Authorizer, RequestInfo, UserInfo};
use bosun_apiserver::encryption::EncryptionConfig;
use bosun_apiserver::rbac::{Access, RbacState};
use bosun_apiserver::serviceaccount::{TokenIssuer, DEFAULT_ISSUER};
use bosun_store::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use std::sync::Arc;

fn rbac(c: &mut Criterion) {
    let roles: Vec<ClusterRole> = bosun_apiserver::bootstrap_policy::cluster_roles()
        .into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect();
    let bindings: Vec<RoleBinding> = (0..1000)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": "view", "namespace": format!("ns{i}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": format!("user{i}")}],
            }))
            .unwrap()
        })
        .collect();
    let state = RbacState::new(&[], &roles, &bindings, &[]);
    let user = UserInfo {
        name: "user500".into(),
        groups: vec!["system:authenticated".into()],
        ..Default::default()
    };
    let mut g = c.benchmark_group("security");
    g.bench_function("rbac_allow_1000_namespaces", |b| {
        b.iter(|| {
            assert!(state.allows(
                &user,
                &Access::resource("list", "apps", "deployments", Some("ns500"))
            ));
        })
    });
    g.bench_function("rbac_deny_1000_namespaces", |b| {
        b.iter(|| {
            assert!(!state.allows(
                &user,
                &Access::resource("get", "", "secrets", Some("ns500"))
            ));
        })
    });
    g.bench_function("rbac_snapshot_build", |b| {
        b.iter(|| RbacState::new(&[], &roles, &bindings, &[]))
    });
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = TokenIssuer::from_pkcs8_pem(&key.serialize_pem(), DEFAULT_ISSUER).unwrap();
    let claims = issuer.bound_claims(
        "default",
        ("builder", "uid"),
        Some(("Pod", "p", "pod-uid")),
        &[DEFAULT_ISSUER.to_owned()],
        3600,
    );
    let token = issuer.sign(&claims).unwrap();
    g.bench_function("jwt_sign_es256", |b| {
        b.iter(|| issuer.sign(&claims).unwrap())
    });
    g.bench_function("jwt_verify_es256", |b| {
        b.iter(|| issuer.verify(&token).unwrap())
    });
    let secret = vec![b'x'; 4096];
    g.throughput(Throughput::Bytes(4096));
    for (name, provider) in [
        (
            "aesgcm",
            "aesgcm: {keys: [{name: k, secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8=}]}",
        ),
        (
            "secretbox",
            "secretbox: {keys: [{name: k, secret: dGhpcnR5LXR3by1ieXRlLXNlY3JldGJveC1rZXkhISE=}]}",
        ),
    ] {
        let config = EncryptionConfig::parse(
            format!("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - {provider}\n").as_bytes(),
        )
        .unwrap();
        let k = "/registry/core/secrets/default/s";
        let sealed = config.encrypt(k, &secret).unwrap();
        g.bench_function(format!("seal_4k_{name}"), |b| {
            b.iter(|| config.encrypt(k, &secret).unwrap())
        });
        g.bench_function(format!("open_4k_{name}"), |b| {
            b.iter(|| config.decrypt(k, &sealed).unwrap())
        });
    }
    g.finish();
}

fn node_authorizer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(bosun_store::memory::MemoryStore::new());
    rt.block_on(async {
        for i in 0..100 {
            let pod = json!({"metadata": {"name": format!("p{i}"), "namespace": "default"},
                "spec": {"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": format!("s{i}")}}],
                         "containers": [{"name": "c", "image": "x"}]}});
            store
                .create(&format!("/registry/core/pods/default/p{i}"), serde_json::to_vec(&pod).unwrap().into())
                .await
                .unwrap();
        }
    });
    let node = rt
        .block_on(bosun_apiserver::node::NodeAuthorizer::keep_current(
            Arc::clone(&store),
        ))
        .unwrap();
    let user = UserInfo {
        name: "system:node:n1".into(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
        ..Default::default()
    };
    let req = RequestInfo {
        verb: "get",
        group: "",
        version: "v1",
        resource: "secrets",
        subresource: None,
        namespace: Some("default"),
        name: Some("s99"),
        path: None,
    };
    c.bench_function("security/node_authorizer_secret_100_pods", |b| {
        b.iter(|| rt.block_on(node.authorize(&user, &req)))
    });
}

criterion_group!(benches, rbac, node_authorizer);
criterion_main!(benches);
