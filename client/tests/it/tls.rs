//! The https transport: the cluster CA is trusted, another CA is not, and
//! insecure-skip-tls-verify skips the check.

use super::{cm, start_open};
use bosun_api_types::core::v1::ConfigMap;
use bosun_client::config::Tls;
use bosun_client::{Api, Client, Config, PostParams};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Serves the API server over TLS with `pki`'s certificate; returns the https URL.
async fn serve_tls(pki: &Pki) -> String {
    let (server, _) = start_open().await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(
                pki.cert_der.clone(),
            )],
            rustls::pki_types::PrivateKeyDer::try_from(pki.key_der.clone()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    url
}

fn config(url: &str, tls: Tls) -> Config {
    Config {
        tls,
        max_retries: 0,
        ..Config::new(url.parse().unwrap())
    }
}

#[tokio::test]
async fn https_with_the_cluster_ca() {
    let pki = pki();
    let url = serve_tls(&pki).await;
    let trusted = Client::try_from_config(config(
        &url,
        Tls {
            ca: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        },
    ))
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(trusted, "default");
    cms.create(&PostParams::default(), &cm("over-tls", &[]))
        .await
        .unwrap();
    assert!(cms.get_opt("over-tls").await.unwrap().is_some());

    // Another CA is not trusted.
    let other = pki_ca_only();
    let untrusted = Client::try_from_config(config(
        &url,
        Tls {
            ca: Some(other.into_bytes()),
            ..Default::default()
        },
    ))
    .unwrap();
    let err = Api::<ConfigMap>::namespaced(untrusted, "default")
        .get("over-tls")
        .await
        .unwrap_err();
    assert!(matches!(err, bosun_client::Error::Transport(_)), "{err}");

    // insecure-skip-tls-verify gets through without a CA.
    let insecure = Client::try_from_config(config(
        &url,
        Tls {
            insecure: true,
            ..Default::default()
        },
    ))
    .unwrap();
    assert!(Api::<ConfigMap>::namespaced(insecure, "default")
        .get_opt("over-tls")
        .await
        .unwrap()
        .is_some());
    // No CA and no skip: a clear configuration error.
    let err = Client::try_from_config(config(&url, Tls::default())).unwrap_err();
    assert!(err.to_string().contains("without a CA"), "{err}");
}

fn pki_ca_only() -> String {
    pki().ca_pem
}

/// The API server over TLS with the cluster's own PKI (`bosun_apiserver::pki`): client
/// certificates name users (CN) and groups (O), RBAC over the bootstrap roles decides, and the
/// server asks for credentials when none are presented.
#[tokio::test]
async fn client_certificates_authenticate_and_rbac_decides() {
    use bosun_api_types::rbac::v1::RoleBinding;
    use bosun_apiserver::auth::{self, Pipeline};
    use bosun_apiserver::pki::Pki;
    use bosun_apiserver::rbac::{keep_current, RbacAuthorizer};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path()).unwrap();
    let store: Arc<dyn bosun_store::Store> = Arc::new(bosun_store::memory::MemoryStore::new());
    let rbac = RbacAuthorizer::default();
    let server = bosun_apiserver::ApiServer::build(
        Arc::clone(&store),
        bosun_apiserver::ResourceTable::builtin(),
        bosun_apiserver::Config::default(),
        Pipeline {
            authenticator: Arc::new(auth::Union(vec![Arc::new(auth::X509)])),
            authorizer: Arc::new(rbac.clone()),
            ..Pipeline::default()
        },
    );
    server.bootstrap().await.unwrap();
    keep_current(Arc::clone(&store), rbac).await.unwrap();
    let serving = pki
        .issue_serving("kube-apiserver", &["127.0.0.1".into()])
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve_tls(
        listener,
        pki.server_config(&serving).unwrap(),
        std::future::pending(),
    ));
    let as_user = |user: &str, group: Option<&str>| {
        let groups: Vec<String> = group.into_iter().map(String::from).collect();
        let cert = pki.issue_client(user, &groups).unwrap();
        Client::try_from_config(config(
            &url,
            Tls {
                ca: Some(pki.ca_pem().as_bytes().to_vec()),
                identity: Some((cert.cert_pem.into_bytes(), cert.key_pem.into_bytes())),
                ..Default::default()
            },
        ))
        .unwrap()
    };
    let admin = as_user("kubernetes-admin", Some("system:masters"));
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    admin_cms
        .create(&PostParams::default(), &cm("by-admin", &[]))
        .await
        .unwrap();

    // alice is someone, but may do nothing yet.
    let alice: Api<ConfigMap> = Api::namespaced(as_user("alice", None), "default");
    let err = alice.get("by-admin").await.unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    assert!(err
        .to_string()
        .contains(r#"User "alice" cannot get resource "configmaps""#));

    // Bound to `view` (aggregated from system:aggregate-to-view), she can read, not write.
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "alice-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, "default")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alice.get("by-admin").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "binding not honoured");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let err = alice
        .create(&PostParams::default(), &cm("by-alice", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    assert!(admin_cms.get_opt("by-alice").await.unwrap().is_none());

    // No certificate: 401.
    let nobody = Client::try_from_config(config(
        &url,
        Tls {
            ca: Some(pki.ca_pem().as_bytes().to_vec()),
            ..Default::default()
        },
    ))
    .unwrap();
    let err = Api::<ConfigMap>::namespaced(nobody, "default")
        .get("by-admin")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");

    // A certificate from another CA does not get past the handshake.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = Pki::load_or_create(stranger_dir.path()).unwrap();
    let forged = stranger
        .issue_client("kubernetes-admin", &["system:masters".into()])
        .unwrap();
    let forger = Client::try_from_config(config(
        &url,
        Tls {
            ca: Some(pki.ca_pem().as_bytes().to_vec()),
            identity: Some((forged.cert_pem.into_bytes(), forged.key_pem.into_bytes())),
            ..Default::default()
        },
    ))
    .unwrap();
    let err = Api::<ConfigMap>::namespaced(forger, "default")
        .get("by-admin")
        .await
        .unwrap_err();
    assert!(matches!(err, bosun_client::Error::Transport(_)), "{err}");

    // A rotating identity: connections opened after a replacement present the new one.
    let alice_cert = pki.issue_client("alice", &[]).unwrap();
    let identity = bosun_client::tls::RotatingIdentity::new(
        alice_cert.cert_pem.as_bytes(),
        alice_cert.key_pem.as_bytes(),
    )
    .unwrap();
    let rotating = config(
        &url,
        Tls {
            ca: Some(pki.ca_pem().as_bytes().to_vec()),
            rotating: Some(identity.clone()),
            ..Default::default()
        },
    );
    let before: Api<ConfigMap> = Api::namespaced(
        Client::try_from_config(rotating.clone()).unwrap(),
        "default",
    );
    assert!(before.get_opt("by-admin").await.unwrap().is_some());
    let err = before
        .create(&PostParams::default(), &cm("by-rotated", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    let admin_cert = pki
        .issue_client("kubernetes-admin", &["system:masters".into()])
        .unwrap();
    identity
        .replace(
            admin_cert.cert_pem.as_bytes(),
            admin_cert.key_pem.as_bytes(),
        )
        .unwrap();
    let after: Api<ConfigMap> =
        Api::namespaced(Client::try_from_config(rotating).unwrap(), "default");
    after
        .create(&PostParams::default(), &cm("by-rotated", &[]))
        .await
        .unwrap();
    assert!(identity.replace(b"not pem", b"not pem").is_err());
}
