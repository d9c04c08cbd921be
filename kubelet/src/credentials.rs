//! Image pull credentials from a pod's `imagePullSecrets`, as upstream's credential keyring
//! finds them: each secret (`kubernetes.io/dockerconfigjson` or the legacy
//! `kubernetes.io/dockercfg`) maps registries to credentials; an entry matches an image when
//! its host is the image's registry (`*.` globs allowed; Docker Hub's aliases are one host)
//! and its path, if any, is a prefix of the image's repository. More specific entries come
//! first; the pull tries each until one works.

use base64::Engine as _;
use bosun_cri::v1::AuthConfig;
use serde_json::Value;

/// The registry host and repository path of `image` (`busybox` → `docker.io`,
/// `library/busybox`).
pub fn registry_of(image: &str) -> (String, String) {
    let full = bosun_cri::builtin::images::normalize(image);
    let name = full.split(['@']).next().unwrap_or(&full);
    // Drop the tag (after the last colon of the last path segment).
    let cut = name.rfind('/').unwrap_or(0);
    let name = match name[cut..].rfind(':') {
        Some(i) => &name[..cut + i],
        None => name,
    };
    match name.split_once('/') {
        Some((host, path)) => (host.to_string(), path.to_string()),
        None => (name.to_string(), String::new()),
    }
}

fn docker_hub(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// How specifically `key` (a docker config's registry key) matches the image's `host` and
/// `repo`; `None` when it does not.
fn matches(key: &str, host: &str, repo: &str) -> Option<usize> {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2");
    let (khost, kpath) = key.split_once('/').unwrap_or((key, ""));
    let khost = docker_hub(khost);
    let host_ok = match khost.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|h| h.ends_with('.') && !h[..h.len() - 1].contains('.')),
        None => khost == docker_hub(host),
    };
    let path_ok = kpath.is_empty()
        || repo == kpath
        || repo
            .strip_prefix(kpath)
            .is_some_and(|rest| rest.starts_with('/'));
    (host_ok && path_ok).then_some(key.len())
}

/// The registry map of a pull secret (its `.dockerconfigjson`'s `auths`, or its legacy
/// `.dockercfg`), from the Secret's JSON.
pub fn docker_config(secret: &Value) -> Option<Value> {
    let decode = |k: &str| -> Option<Value> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str()?)
            .ok()?;
        serde_json::from_slice(&b).ok()
    };
    if let Some(v) = decode(".dockerconfigjson") {
        return Some(v["auths"].clone()).filter(Value::is_object);
    }
    decode(".dockercfg").filter(Value::is_object)
}

/// The credentials for `image` in `configs` (registry maps), most specific first.
pub fn credentials_for(image: &str, configs: &[Value]) -> Vec<AuthConfig> {
    let (host, repo) = registry_of(image);
    let mut found: Vec<(usize, AuthConfig)> = Vec::new();
    for config in configs {
        for (key, entry) in config.as_object().into_iter().flatten() {
            let Some(rank) = matches(key, &host, &repo) else {
                continue;
            };
            let s = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
            let (mut username, mut password) = (s("username"), s("password"));
            if username.is_empty() {
                // `auth` is base64("user:password").
                if let Some((u, p)) = base64::engine::general_purpose::STANDARD
                    .decode(s("auth"))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|t| {
                        t.split_once(':')
                            .map(|(u, p)| (u.to_string(), p.to_string()))
                    })
                {
                    (username, password) = (u, p);
                }
            }
            found.push((
                rank,
                AuthConfig {
                    username,
                    password,
                    auth: s("auth"),
                    server_address: host.clone(),
                    identity_token: s("identitytoken"),
                    registry_token: s("registrytoken"),
                },
            ));
        }
    }
    found.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
    found.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_registry() {
        assert_eq!(
            registry_of("busybox"),
            ("docker.io".into(), "library/busybox".into())
        );
        assert_eq!(
            registry_of("registry.example.com:5000/team/app:1.2"),
            ("registry.example.com:5000".into(), "team/app".into())
        );
        assert_eq!(
            registry_of("ghcr.io/org/app@sha256:abc"),
            ("ghcr.io".into(), "org/app".into())
        );
    }

    #[test]
    fn matches_like_the_keyring() {
        let configs = [json!({
            "https://index.docker.io/v1/": {"username": "hub", "password": "p"},
            "registry.example.com": {"auth": base64::engine::general_purpose::STANDARD.encode("all:pw")},
            "registry.example.com/team": {"username": "team", "password": "t"},
            "*.corp.example": {"username": "glob", "password": "g"},
        })];
        let users = |image: &str| -> Vec<String> {
            credentials_for(image, &configs)
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(users("busybox"), ["hub"]);
        assert_eq!(users("registry.example.com/team/app:1"), ["team", "all"]);
        assert_eq!(users("registry.example.com/other/app"), ["all"]);
        assert_eq!(users("registry.example.com/teamx/app"), ["all"]);
        assert_eq!(users("a.corp.example/app"), ["glob"]);
        assert!(users("a.b.corp.example/app").is_empty());
        assert!(users("quay.io/app").is_empty());
        let all = &credentials_for("registry.example.com/x", &configs)[0];
        assert_eq!(
            (all.username.as_str(), all.password.as_str()),
            ("all", "pw")
        );
        assert_eq!(all.server_address, "registry.example.com");
    }

    #[test]
    fn reads_both_secret_types() {
        let b64 = |v: Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
        let json = json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(json!({"auths": {"r.io": {"username": "u"}}}))}});
        assert_eq!(docker_config(&json).unwrap()["r.io"]["username"], "u");
        let legacy = json!({"type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": b64(json!({"r.io": {"username": "old"}}))}});
        assert_eq!(docker_config(&legacy).unwrap()["r.io"]["username"], "old");
        assert!(docker_config(&json!({"data": {"x": "eA=="}})).is_none());
    }
}
