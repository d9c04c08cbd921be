//! RBAC rule matching and escalation coverage never panic on arbitrary rules and requests, and
//! a rule always covers itself; the encryption configuration parser and the at-rest decoder
//! take arbitrary bytes.
#![no_main]

use bosun_api_types::rbac::v1::PolicyRule;
use bosun_apiserver::rbac::{covers, rule_allows, Access};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{0}');
    let rule = parts
        .next()
        .and_then(|r| serde_json::from_str::<PolicyRule>(r).ok())
        .unwrap_or_default();
    let field = |p: Option<&str>| p.unwrap_or("").to_owned();
    let (verb, group, resource, sub, ns, name, path) = (
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
    );
    let access = Access {
        verb: &verb,
        group: &group,
        resource: &resource,
        subresource: Some(sub.as_str()).filter(|s| !s.is_empty()),
        namespace: Some(ns.as_str()).filter(|s| !s.is_empty()),
        name: Some(name.as_str()).filter(|s| !s.is_empty()),
        path: Some(path.as_str()).filter(|s| !s.is_empty()),
    };
    let _ = rule_allows(&rule, &access);
    // A rule holds what it grants (when it names no resource names, which narrow it).
    if rule.resource_names.is_empty() {
        assert!(covers(&[&rule], &rule), "{rule:?} does not cover itself");
    }
    if let Ok(config) = bosun_apiserver::encryption::EncryptionConfig::parse(data) {
        let _ = config.decrypt("/registry/core/secrets/a/b", &bytes::Bytes::copy_from_slice(data));
    }
});
