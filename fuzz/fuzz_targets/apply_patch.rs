//! Patch application never panics: JSON merge patch, JSON patch and strategic merge patch of
//! arbitrary JSON documents, against a built-in kind's patch metadata.
#![no_main]

use bosun_api_types::patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const TYPES: &[&str] = &[
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.ConfigMap",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "document\u{0}patch"
    let Some((doc, p)) = text.split_once('\u{0}') else {
        return;
    };
    let (Ok(doc), Ok(p)) = (serde_json::from_str::<Value>(doc), serde_json::from_str::<Value>(p))
    else {
        return;
    };
    let mut merged = doc.clone();
    patch::merge_patch(&mut merged, &p);
    let _ = patch::json_patch(&doc, &p);
    let t = TYPES[data.len() % TYPES.len()];
    let _ = patch::strategic_merge(&doc, &p, t);
});
