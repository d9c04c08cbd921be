//! Label and field selector parsing never panics, and a printed selector that parses again
//! is the same selector (the server echoes selectors in continue tokens and watches).
#![no_main]

use bosun_api_types::selector::{FieldSelector, Selector};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = text.parse::<Selector>() {
        // A printed selector need not parse again: `x in (,)` is the set {""}, printed
        // `x in ()`, which upstream's parser refuses too. What parses again is the same.
        if let Ok(again) = sel.to_string().parse::<Selector>() {
            assert_eq!(again.to_string(), sel.to_string());
        }
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "web".to_string())].into_iter().collect();
        let _ = sel.matches(&labels);
    }
    if let Ok(sel) = text.parse::<FieldSelector>() {
        let _ = sel.to_string().parse::<FieldSelector>();
        let _ = sel.matches(|f| (f == "metadata.name").then_some("x"));
    }
});
