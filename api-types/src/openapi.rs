//! Upstream's OpenAPI definitions of every generated type, for serving `/openapi/v2` and
//! `/openapi/v3` (descriptions included: `kubectl explain` prints them).
//!
//! ```
//! let defs: serde_json::Value =
//!     serde_json::from_str(bosun_api_types::openapi::definitions_json()).unwrap();
//! let pod = &defs["io.k8s.api.core.v1.Pod"];
//! assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
//! ```

/// The definitions as one minified JSON object, keyed by upstream definition name
/// (`io.k8s.api.core.v1.Pod`); references are `#/definitions/NAME`.
pub fn definitions_json() -> &'static str {
    include_str!("api/definitions.json")
}
