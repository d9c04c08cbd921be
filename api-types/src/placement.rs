//! Where a pod may run: node selectors, required node affinity and taint tolerations, with
//! upstream's matching rules. Shared by the scheduler's plugins and the DaemonSet controller.
//!
//! ```
//! use bosun_api_types::core::v1::{Taint, Toleration};
//! use bosun_api_types::placement::tolerates;
//! let taint = Taint { key: "gpu".into(), value: Some("yes".into()), effect: "NoSchedule".into(), ..Default::default() };
//! let exists = Toleration { key: Some("gpu".into()), operator: Some("Exists".into()), ..Default::default() };
//! assert!(tolerates(&exists, &taint));
//! ```

use crate::core::v1::{Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec};
use crate::core::v1::{Taint, Toleration};
use std::collections::BTreeMap;

/// Whether one node selector requirement holds for a label (or field) `value`.
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                r.values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node with these labels and name. An empty term
/// matches nothing, as upstream.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    (!term.match_expressions.is_empty() || !term.match_fields.is_empty())
        && term
            .match_expressions
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && term
            .match_fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

/// Whether a node selector (terms ORed) matches `node`.
pub fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, &node.metadata.labels, name))
}

/// Whether `spec.nodeSelector` and the required node affinity both admit `node`.
pub fn required_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = &node.metadata.labels;
    if !spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(sel) => selector_matches(sel, node),
        None => true,
    }
}

/// Whether one toleration tolerates one taint: the effect matches (or the toleration has
/// none), and the key matches with `Exists` or key and value match with `Equal`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match t.operator.as_deref() {
        Some("Exists") => t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    };
    effect_ok && key_ok
}

/// The first taint for which `filter` holds that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: "k".into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn operators() {
        assert!(requirement_matches(&req("In", &["a", "b"]), Some("b")));
        assert!(!requirement_matches(&req("In", &["a"]), None));
        assert!(requirement_matches(&req("NotIn", &["a"]), None));
        assert!(!requirement_matches(&req("NotIn", &["a"]), Some("a")));
        assert!(requirement_matches(&req("Gt", &["5"]), Some("6")));
        assert!(!requirement_matches(&req("Gt", &["5"]), Some("x")));
        assert!(requirement_matches(&req("Lt", &["5"]), Some("4")));
        assert!(requirement_matches(&req("DoesNotExist", &[]), None));
    }

    #[test]
    fn empty_term_matches_nothing() {
        assert!(!term_matches(
            &NodeSelectorTerm::default(),
            &BTreeMap::new(),
            "n"
        ));
    }

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let equal = |v: &str, e: Option<&str>| Toleration {
            key: Some("k".into()),
            value: Some(v.into()),
            effect: e.map(Into::into),
            ..Default::default()
        };
        assert!(tolerates(&equal("v", None), &taint));
        assert!(!tolerates(&equal("w", None), &taint));
        assert!(!tolerates(&equal("v", Some("NoSchedule")), &taint));
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&all, &taint));
        assert!(untolerated(std::slice::from_ref(&taint), &[], |_| true).is_some());
        assert!(untolerated(std::slice::from_ref(&taint), &[all], |_| true).is_none());
    }
}
