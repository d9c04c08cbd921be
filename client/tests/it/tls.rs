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
