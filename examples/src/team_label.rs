//! An admission plugin: every Pod outside `kube-system` must name its owning team in the
//! `example.com/team` label. The mutating half tidies the value (trimmed, lower case) and, when
//! the label is missing but the namespace's name says `team-NAME`, fills it in with a warning;
//! the validating half refuses a Pod still without one, with a 403 worded as upstream's
//! admission plugins word theirs.
//!
//! Added to the server's pipeline after upstream's default plugins:
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<dyn bosun_store::Store>) {
//! use bosun_apiserver::{auth::Pipeline, ApiServer, Config, ResourceTable};
//! use std::sync::Arc;
//! let mut pipeline = Pipeline::default();
//! pipeline.admission.push(Arc::new(bosun_examples::team_label::RequireTeam));
//! let server = ApiServer::build(store, ResourceTable::builtin(), Config::default(), pipeline);
//! # let _ = server; }
//! ```

use bosun_apiserver::auth::{AdmissionPlugin, AdmissionRequest, Operation};
use bosun_apiserver::object::Object;
use bosun_apiserver::ApiError;
use serde_json::{json, Value};

/// The label naming a Pod's team.
pub const TEAM: &str = "example.com/team";

/// The plugin (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequireTeam;

/// Whether this plugin looks at the write: Pods created or updated outside `kube-system`.
fn applies(req: &AdmissionRequest<'_>) -> bool {
    req.resource.group.is_empty()
        && req.resource.kind == "Pod"
        && req.subresource.is_none()
        && matches!(req.operation, Operation::Create | Operation::Update)
        && req.namespace != Some("kube-system")
}

fn team(obj: &Object) -> Option<&str> {
    obj.get("metadata")?
        .get("labels")?
        .get(TEAM)?
        .as_str()
        .filter(|t| !t.trim().is_empty())
}

#[async_trait::async_trait]
impl AdmissionPlugin for RequireTeam {
    fn name(&self) -> &str {
        "example.com/RequireTeam"
    }

    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if !applies(req) {
            return Ok(());
        }
        let wanted = match team(obj) {
            Some(t) => t.to_lowercase(),
            None => match req.namespace.and_then(|ns| ns.strip_prefix("team-")) {
                Some(t) if !t.is_empty() => {
                    req.warn(format!("{TEAM} set to {t:?} from the namespace's name"));
                    t.to_owned()
                }
                _ => return Ok(()),
            },
        };
        let metadata = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Value::Object(metadata) = metadata {
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[TEAM] = Value::String(wanted);
        }
        Ok(())
    }

    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        if !applies(req) || team(obj).is_some() {
            return Ok(());
        }
        Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "pods \"{}\" is forbidden: the {TEAM} label is required outside kube-system",
                req.name
            ),
            details: None,
        })
    }
}
