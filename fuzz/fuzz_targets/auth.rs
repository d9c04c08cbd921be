//! Authentication input never panics: arbitrary `Authorization` header bytes through the
//! bearer-token extraction, the static token file parser, the bootstrap-token shape check, the
//! client-certificate subject reader, and the service-account JWT verifier (on the raw string
//! and on three base64url parts built from the input, so the header and claims parsers are
//! reached too).
#![no_main]

use base64::Engine;
use bosun_apiserver::auth::Credentials;
use bosun_apiserver::serviceaccount::TokenIssuer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        TokenIssuer::from_pkcs8_pem(&key.serialize_pem(), "https://kubernetes.default.svc")
            .expect("issuer")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let creds = Credentials::headers(&headers);
    if let Some(token) = creds.bearer_token() {
        let _ = bosun_apiserver::certificates::is_bootstrap_token(token);
        let _ = issuer().verify(token);
    }
    let _ = bosun_apiserver::pki::certificate_user(data);
    let text = String::from_utf8_lossy(data);
    let _ = bosun_apiserver::auth::TokenFile::parse(&text);
    let _ = issuer().verify(&text);
    // Three parts from the input: header JSON, claims JSON, signature bytes.
    let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
    let third = data.len() / 3;
    let (h, rest) = data.split_at(third);
    let (p, s) = rest.split_at(third.min(rest.len()));
    let _ = issuer().verify(&format!("{}.{}.{}", b64(h), b64(p), b64(s)));
    let _ = issuer().verify(&format!(
        "{}.{}.{}",
        b64(br#"{"alg":"ES256"}"#),
        b64(p),
        b64(s)
    ));
});
