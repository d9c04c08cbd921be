//! Request routing: what a URL path addresses, and the query parameters of the API.

use crate::error::ApiError;
use crate::resources::ResourceTable;

/// What a path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their sub-checks).
    Health,
    /// `/api`.
    CoreGroup,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`.
    GroupVersion(String, String),
    /// A resource, a collection or a subresource.
    Resource(Target),
    /// `/metrics`.
    Metrics,
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiV3Index,
    /// `/openapi/v3/{path}`: one group version's document (`api/v1`, `apis/apps/v1`).
    OpenApiV3(String),
}

/// A resource URL, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// API group (empty for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Resource (plural).
    pub plural: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// The path after a `proxy` subresource (`nodes/NAME/proxy/PATH`), if any.
    pub proxy_path: Option<String>,
}

/// Percent-decodes one path segment (or header-borne key).
pub(crate) fn decode_segment(s: &str) -> String {
    // Object names cannot contain '%' or '/', so percent-decoding is only for robustness.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits after '%' (checked as bytes: what follows may be any UTF-8).
        let hex = |b: u8| char::from(b).to_digit(16);
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            bytes[i],
            bytes.get(i + 1).map(|b| hex(*b)),
            bytes.get(i + 2).map(|b| hex(*b)),
        ) {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Routes a path against the served resources.
///
/// As upstream's router (go-restful with `TrimRightSlashEnabled`), trailing slashes are
/// dropped (`…/configmaps/` is the collection, under the collection's verbs and RBAC), but an
/// empty segment anywhere else (`/api/v1//namespaces/…`, `//api`) matches nothing.
pub fn route(path: &str, table: &ResourceTable) -> Option<Route> {
    let inner = path.strip_prefix('/')?.trim_end_matches('/');
    if inner.is_empty() {
        return None;
    }
    let segs: Vec<String> = inner.split('/').map(decode_segment).collect();
    if segs.iter().any(String::is_empty) {
        return None;
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Some(Route::Version),
        ["metrics"] => Some(Route::Metrics),
        ["openapi", "v2"] => Some(Route::OpenApiV2),
        ["openapi", "v3"] => Some(Route::OpenApiV3Index),
        ["openapi", "v3", rest @ ..] => Some(Route::OpenApiV3(rest.join("/"))),
        ["healthz" | "livez" | "readyz", ..] => Some(Route::Health),
        ["api"] => Some(Route::CoreGroup),
        ["api", v] => Some(Route::GroupVersion(String::new(), (*v).to_owned())),
        ["api", v, rest @ ..] => resource("", v, rest, table),
        ["apis"] => Some(Route::Groups),
        ["apis", g] => Some(Route::Group((*g).to_owned())),
        ["apis", g, v] => Some(Route::GroupVersion((*g).to_owned(), (*v).to_owned())),
        ["apis", g, v, rest @ ..] => resource(g, v, rest, table),
        _ => None,
    }
}

fn resource(group: &str, version: &str, rest: &[&str], table: &ResourceTable) -> Option<Route> {
    let target = |namespace: Option<&str>, rest: &[&str]| -> Option<Route> {
        let proxy_path = match rest {
            [_, _, "proxy", path @ ..] if !path.is_empty() => Some(path.join("/")),
            _ if rest.is_empty() || rest.len() > 3 => return None,
            _ => None,
        };
        Some(Route::Resource(Target {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace: namespace.map(str::to_owned),
            plural: rest[0].to_owned(),
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource: rest.get(2).map(|s| (*s).to_owned()),
            proxy_path,
        }))
    };
    if let ["namespaces", ns, plural, ..] = rest {
        if table
            .get(group, version, plural)
            .is_some_and(|r| r.namespaced)
        {
            return target(Some(ns), &rest[2..]);
        }
    }
    target(None, rest)
}

/// The query parameters the API understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `watch=true`.
    pub watch: bool,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `propagationPolicy` (deletes).
    pub propagation_policy: Option<String>,
    /// `gracePeriodSeconds` (deletes).
    pub grace_period_seconds: Option<i64>,
    /// `force` (apply).
    pub force: bool,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid boolean value {v:?} for parameter {key}"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for parameter {key}")))
}

impl Query {
    /// Parses a query string.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Query::default();
        let Some(query) = query else {
            return Ok(q);
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let some = || Some(v.to_string()).filter(|s| !s.is_empty());
            match k.as_ref() {
                "watch" => q.watch = parse_bool(&k, &v)?,
                "resourceVersion" => q.resource_version = some(),
                "resourceVersionMatch" => q.resource_version_match = some(),
                "limit" => {
                    let n: i64 = parse_num(&k, &v)?;
                    q.limit = usize::try_from(n).ok().filter(|n| *n > 0);
                }
                "continue" => q.continue_token = some(),
                "labelSelector" => q.label_selector = some(),
                "fieldSelector" => q.field_selector = some(),
                "timeoutSeconds" => q.timeout_seconds = Some(parse_num(&k, &v)?),
                "dryRun" => {
                    if !v.is_empty() && v != "All" {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dry run value {v:?}: the only supported value is \"All\""
                        )));
                    }
                    q.dry_run = v == "All";
                }
                "fieldManager" => q.field_manager = some(),
                "fieldValidation" => q.field_validation = some(),
                "allowWatchBookmarks" => q.allow_watch_bookmarks = parse_bool(&k, &v)?,
                "sendInitialEvents" => q.send_initial_events = Some(parse_bool(&k, &v)?),
                "propagationPolicy" => q.propagation_policy = some(),
                "gracePeriodSeconds" => q.grace_period_seconds = Some(parse_num(&k, &v)?),
                "force" => q.force = parse_bool(&k, &v)?,
                _ => {}
            }
        }
        Ok(q)
    }
}

impl Query {
    /// Checks the options of a write (`kind` is `CreateOptions`, `UpdateOptions` or
    /// `PatchOptions`) as upstream does: a `fieldManager` of at most 128 bytes, all printable.
    pub fn validate_write(&self, kind: &str) -> Result<(), ApiError> {
        use bosun_api_types::validation::{FieldError, FieldPath};
        let Some(manager) = self.field_manager.as_deref() else {
            return Ok(());
        };
        let path = FieldPath::new("fieldManager");
        let mut errs = Vec::new();
        if manager.len() > 128 {
            errs.push(FieldError::too_long(&path, 128));
        }
        for (i, c) in manager.char_indices() {
            if c.is_control() {
                errs.push(FieldError::invalid(
                    &path,
                    manager,
                    &format!("invalid character U+{:04X} (at position {i})", u32::from(c)),
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_kind("meta.k8s.io", kind, "", &errs))
        }
    }

    /// Checks the list and watch options as upstream's `ValidateListOptions` does (with
    /// watch-list served): 422 `ListOptions.meta.k8s.io` with a cause per problem.
    pub fn validate_list(&self) -> Result<(), ApiError> {
        use bosun_api_types::validation::{FieldError, FieldPath};
        let rvm = FieldPath::new("resourceVersionMatch");
        let mut errs = Vec::new();
        let m = self.resource_version_match.as_deref();
        if self.watch {
            if self.send_initial_events.is_some() && m != Some("NotOlderThan") {
                errs.push(FieldError::forbidden(
                    &rvm,
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if let Some(m) = m {
                if self.send_initial_events.is_none() {
                    errs.push(FieldError::forbidden(
                        &rvm,
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if m != "NotOlderThan" {
                    errs.push(FieldError::not_supported(&rvm, m, &["NotOlderThan"]));
                }
                if self.continue_token.is_some() {
                    errs.push(FieldError::forbidden(
                        &rvm,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if let Some(m) = m {
                if self.resource_version.is_none() {
                    errs.push(FieldError::forbidden(
                        &rvm,
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if self.continue_token.is_some() {
                    errs.push(FieldError::forbidden(
                        &rvm,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if m != "Exact" && m != "NotOlderThan" {
                    errs.push(FieldError::not_supported(
                        &rvm,
                        m,
                        &["Exact", "NotOlderThan", ""],
                    ));
                }
                if m == "Exact" && self.resource_version.as_deref() == Some("0") {
                    errs.push(FieldError::forbidden(
                        &rvm,
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if self.send_initial_events.is_some() {
                errs.push(FieldError::forbidden(
                    &FieldPath::new("sendInitialEvents"),
                    "sendInitialEvents is forbidden for list",
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_kind(
                "meta.k8s.io",
                "ListOptions",
                "",
                &errs,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let t = ResourceTable::builtin();
        let r = route("/api/v1/namespaces/default/pods/web/status", &t).unwrap();
        let Route::Resource(t1) = r else { panic!() };
        assert_eq!(t1.namespace.as_deref(), Some("default"));
        assert_eq!(t1.plural, "pods");
        assert_eq!(t1.name.as_deref(), Some("web"));
        assert_eq!(t1.subresource.as_deref(), Some("status"));
        let Route::Resource(ns) = route("/api/v1/namespaces/kube-system/status", &t).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                ns.plural.as_str(),
                ns.name.as_deref(),
                ns.subresource.as_deref()
            ),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        let Route::Resource(all) = route("/apis/apps/v1/deployments", &t).unwrap() else {
            panic!()
        };
        assert_eq!(all.namespace, None);
        assert_eq!(route("/apis/apps", &t), Some(Route::Group("apps".into())));
        assert_eq!(route("/nope", &t), None);
    }

    #[test]
    fn empty_segments_match_nothing_and_trailing_slashes_are_dropped() {
        let t = ResourceTable::builtin();
        let collection = route("/api/v1/namespaces/ns/configmaps", &t);
        assert!(matches!(&collection, Some(Route::Resource(r)) if r.name.is_none()));
        assert_eq!(route("/api/v1/namespaces/ns/configmaps/", &t), collection);
        assert_eq!(route("/api/v1/namespaces/ns/configmaps//", &t), collection);
        for path in [
            "/api/v1//namespaces/ns/configmaps",
            "/api/v1/namespaces//configmaps",
            "/api//v1/pods",
            "//api/v1/pods",
            "/api/v1/namespaces/ns/configmaps//x",
            "",
            "/",
            "api/v1/pods",
        ] {
            assert_eq!(route(path, &t), None, "{path}");
        }
    }

    #[test]
    fn percent_decoding_takes_any_utf8() {
        // Found by the request_line fuzz target: '%' followed by a multi-byte character.
        assert_eq!(decode_segment("%a\u{393}"), "%a\u{393}");
        assert_eq!(decode_segment("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(decode_segment("%41%e2%80%94"), "A\u{2014}");
        assert!(route(
            "/api/v1/namespaces/%a\u{393}/pods",
            &ResourceTable::builtin()
        )
        .is_some());
    }

    #[test]
    fn parses_query() {
        let q = Query::parse(Some("watch=1&limit=500&labelSelector=a%3Db&dryRun=All")).unwrap();
        assert!(q.watch && q.dry_run);
        assert_eq!(q.limit, Some(500));
        assert_eq!(q.label_selector.as_deref(), Some("a=b"));
        assert!(Query::parse(Some("dryRun=Some")).is_err());
        assert!(Query::parse(Some("limit=x")).is_err());
    }

    #[test]
    fn list_options_are_checked_as_upstream() {
        let check = |q: &str| {
            Query::parse(Some(q))
                .unwrap()
                .validate_list()
                .map_err(|e| (e.code, e.message))
        };
        assert!(check("resourceVersion=5&resourceVersionMatch=Exact").is_ok());
        assert!(check("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan").is_ok());
        let (code, msg) = check("resourceVersionMatch=NotOlderThan").unwrap_err();
        assert_eq!(code, 422);
        assert_eq!(msg, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided");
        let (code, msg) = check("sendInitialEvents=true").unwrap_err();
        assert_eq!(code, 422);
        assert!(
            msg.contains("sendInitialEvents is forbidden for list"),
            "{msg}"
        );
        assert!(check("watch=1&sendInitialEvents=true").is_err());
        assert!(check("resourceVersion=0&resourceVersionMatch=Exact").is_err());
        assert!(check("resourceVersion=1&resourceVersionMatch=Newest").is_err());
    }

    #[test]
    fn field_managers_are_short_and_printable() {
        let check = |q: &str| {
            Query::parse(Some(q))
                .unwrap()
                .validate_write("CreateOptions")
        };
        assert!(check(&format!("fieldManager={}", "m".repeat(128))).is_ok());
        let e = check(&format!("fieldManager={}", "m".repeat(129))).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .starts_with("CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long"),
            "{}",
            e.message
        );
        assert_eq!(check("fieldManager=a%0Ab").unwrap_err().code, 422);
    }
}
