//! The audit log: one `audit.k8s.io/v1` `Event` per resource request, as JSON lines in a file,
//! like upstream's `--audit-log-path` with the log backend. Without a policy every request is
//! logged at `Metadata` (who, what, which object, the outcome; no bodies); with an
//! `audit.k8s.io/v1` [`AuditPolicy`] (`--audit-policy-file`) the first rule matching a request
//! sets its level: `None` (not logged), `Metadata`, `Request` (plus the request body) or
//! `RequestResponse` (plus the response body).
//!
//! A background thread owns the file: requests hand their record over a channel and never wait
//! for the disk. The thread flushes whenever the channel runs empty.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// How much an audit record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Not logged.
    None,
    /// Who, what, which object, the outcome.
    Metadata,
    /// And the request body.
    Request,
    /// And the response body.
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Level::None),
            "Metadata" => Some(Level::Metadata),
            "Request" => Some(Level::Request),
            "RequestResponse" => Some(Level::RequestResponse),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// One rule of a policy.
#[derive(Clone, Debug)]
struct PolicyRule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    /// (group, resources, resourceNames); a resource may be `pods/log`, `*/status`, `*`.
    resources: Vec<(String, Vec<String>, Vec<String>)>,
    namespaces: Vec<String>,
}

/// An `audit.k8s.io/v1` `Policy`: the first matching rule decides a request's level; a request
/// no rule matches is not logged.
#[derive(Clone, Debug)]
pub struct AuditPolicy {
    rules: Vec<PolicyRule>,
}

/// What a request is, for matching policy rules.
pub struct Subject<'a> {
    /// Who.
    pub user: &'a crate::auth::UserInfo,
    /// Kubernetes verb.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource.
    pub subresource: Option<&'a str>,
    /// Namespace.
    pub namespace: Option<&'a str>,
    /// Object name.
    pub name: Option<&'a str>,
}

impl AuditPolicy {
    /// Parses a policy (YAML or JSON); the error names the rule at fault.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let doc = bosun_api_types::yaml::to_json(text).map_err(|e| e.to_string())?;
        if doc["kind"] != "Policy" {
            return Err(format!("kind: want Policy, got {}", doc["kind"]));
        }
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let mut rules = Vec::new();
        for (i, r) in doc["rules"].as_array().into_iter().flatten().enumerate() {
            let level = r["level"].as_str().and_then(Level::parse).ok_or_else(|| {
                format!("rules[{i}].level: want None, Metadata, Request or RequestResponse")
            })?;
            let resources = r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    (
                        g["group"].as_str().unwrap_or("").to_owned(),
                        strings(&g["resources"]),
                        strings(&g["resourceNames"]),
                    )
                })
                .collect();
            rules.push(PolicyRule {
                level,
                users: strings(&r["users"]),
                user_groups: strings(&r["userGroups"]),
                verbs: strings(&r["verbs"]),
                resources,
                namespaces: strings(&r["namespaces"]),
            });
        }
        Ok(AuditPolicy { rules })
    }

    /// The level of a request.
    pub fn level(&self, req: &Subject<'_>) -> Level {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        for r in &self.rules {
            if !any(&r.users, &req.user.name)
                || !(r.user_groups.is_empty()
                    || req.user.groups.iter().any(|g| r.user_groups.contains(g)))
                || !any(&r.verbs, req.verb)
                || !any(&r.namespaces, req.namespace.unwrap_or(""))
            {
                continue;
            }
            let resource_ok = r.resources.is_empty()
                || r.resources.iter().any(|(group, resources, names)| {
                    group == req.group
                        && (resources.is_empty()
                            || resources.iter().any(|res| match req.subresource {
                                None => res == "*" || res == req.resource,
                                Some(sub) => {
                                    res == "*"
                                        || *res == format!("{}/{sub}", req.resource)
                                        || *res == format!("*/{sub}")
                                        || *res == format!("{}/*", req.resource)
                                }
                            }))
                        && (names.is_empty()
                            || req.name.is_some_and(|n| names.iter().any(|x| x == n)))
                });
            if resource_ok {
                return r.level;
            }
        }
        Level::None
    }
}

/// Where audit records go.
pub(crate) struct AuditLog {
    tx: mpsc::Sender<Vec<u8>>,
}

/// What an audit record says about one request.
pub(crate) struct Record<'a> {
    pub(crate) request_uri: &'a str,
    pub(crate) verb: &'a str,
    pub(crate) user: &'a crate::auth::UserInfo,
    /// Whom `user` acted as, when impersonating.
    pub(crate) impersonated_user: Option<&'a crate::auth::UserInfo>,
    pub(crate) source_ip: Option<std::net::IpAddr>,
    pub(crate) user_agent: &'a str,
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) code: u16,
    pub(crate) received: bosun_api_types::MicroTime,
    pub(crate) level: Level,
    /// The request body, for `Request` and above.
    pub(crate) request_object: Option<serde_json::Value>,
    /// The response body, for `RequestResponse`.
    pub(crate) response_object: Option<serde_json::Value>,
}

impl AuditLog {
    /// Opens (appending) or creates the log file and starts its writer thread.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Records may carry request bodies (Secrets at `Request` level): owner only.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let path: PathBuf = path.to_owned();
        std::thread::Builder::new()
            .name("bosun-audit".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut ok = out.write_all(&line).is_ok();
                    while let Ok(more) = rx.try_recv() {
                        ok &= out.write_all(&more).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        tracing::warn!(path = %path.display(), "writing the audit log failed");
                    }
                }
            })?;
        Ok(AuditLog { tx })
    }

    /// Queues one record.
    pub(crate) fn record(&self, r: &Record<'_>) {
        let mut object_ref = serde_json::Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                object_ref.insert(k.into(), v.into());
            }
        };
        put("resource", Some(r.resource));
        put("namespace", r.namespace);
        put("name", r.name);
        put("apiGroup", Some(r.group));
        put("apiVersion", Some(r.version));
        put("subresource", r.subresource);
        let mut event = serde_json::json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": r.level.name(),
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "ResponseComplete",
            "requestURI": r.request_uri,
            "verb": r.verb,
            "user": r.user.to_json(),
            "sourceIPs": r.source_ip.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
            "userAgent": r.user_agent,
            "objectRef": object_ref,
            "responseStatus": {"metadata": {}, "code": r.code},
            "requestReceivedTimestamp": r.received,
            "stageTimestamp": bosun_api_types::MicroTime::now(),
        });
        if let Some(u) = r.impersonated_user {
            event["impersonatedUser"] = u.to_json();
        }
        if let Some(o) = &r.request_object {
            event["requestObject"] = o.clone();
        }
        if let Some(o) = &r.response_object {
            event["responseObject"] = o.clone();
        }
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        // The writer thread ends only with the log; a send error means it is gone.
        let _ = self.tx.send(line);
    }
}
