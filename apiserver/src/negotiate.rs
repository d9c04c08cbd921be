//! Response negotiation: which encoding (JSON or the Kubernetes protobuf) and which view (the
//! object, a `Table`, or `PartialObjectMetadata`) a client's `Accept` header asks for, and the
//! conversions from the JSON the handlers build.

use crate::error::ApiError;
use crate::object::Object;
use bosun_api_types::meta::v1::{ListMeta, ObjectMeta, Status};
use bosun_api_types::proto::{self, Message};
use bosun_api_types::{KindVisitor, List, Resource};
use serde_json::{json, Value};

/// What a response shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum View {
    /// The objects themselves.
    #[default]
    Object,
    /// `meta.k8s.io/v1` `Table` (server-side printing).
    Table,
    /// `meta.k8s.io/v1` `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// The negotiated form of a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) view: View,
    /// `application/vnd.kubernetes.protobuf`.
    pub(crate) protobuf: bool,
}

/// The first media range of `accept` the server can produce for a resource (`builtin` kinds have
/// a protobuf form; custom resources do not). An empty header means JSON; a header naming
/// nothing producible is a 406.
pub(crate) fn negotiate(accept: &str, builtin: bool) -> Result<Output, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Output::default());
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut as_kind, mut group, mut version) = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", v)) => as_kind = Some(v.to_owned()),
                Some(("g", v)) => group = Some(v.to_owned()),
                Some(("v", v)) => version = Some(v.to_owned()),
                _ => {}
            }
        }
        let protobuf = match media.as_str() {
            "application/json" | "application/yaml" | "application/*" | "*/*" => false,
            "application/vnd.kubernetes.protobuf" => true,
            _ => continue,
        };
        let view = match as_kind.as_deref() {
            None => View::Object,
            Some(kind) => {
                let meta_group = group.as_deref() == Some("meta.k8s.io")
                    && matches!(version.as_deref(), Some("v1") | Some("v1beta1"));
                match kind {
                    _ if !meta_group => continue,
                    // Tables have no protobuf form upstream.
                    "Table" if !protobuf => View::Table,
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => View::Metadata,
                    _ => continue,
                }
            }
        };
        if protobuf && !builtin && view == View::Object {
            continue;
        }
        return Ok(Output { view, protobuf });
    }
    Err(ApiError::not_acceptable(accept))
}

/// An object's `PartialObjectMetadata`.
/// Whether `accept` (empty: anything) allows JSON, YAML or protobuf, whatever its parameters.
pub(crate) fn accepts_json_or_protobuf(accept: &str) -> bool {
    accept.trim().is_empty()
        || accept.split(',').any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            matches!(
                media.to_ascii_lowercase().as_str(),
                "application/json"
                    | "application/yaml"
                    | "application/*"
                    | "*/*"
                    | "application/vnd.kubernetes.protobuf"
                    | "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
                    | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        })
}

pub(crate) fn partial(obj: &Object) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `PartialObjectMetadataList` of a list's items.
pub(crate) fn partial_list(metadata: serde_json::Map<String, Value>, items: &[Object]) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "items": items.iter().map(partial).collect::<Vec<_>>(),
    })
}

struct ToProto(Value);

impl KindVisitor for ToProto {
    type Output = Option<Vec<u8>>;
    fn visit<K: Resource + Message + PartialEq>(self) -> Option<Vec<u8>> {
        let obj: K = serde_json::from_value(self.0).ok()?;
        proto::encode_object(&obj).ok()
    }
}

struct ListToProto(Value);

impl KindVisitor for ListToProto {
    type Output = Option<Vec<u8>>;
    fn visit<K: Resource + Message + PartialEq>(self) -> Option<Vec<u8>> {
        let list: List<K> = serde_json::from_value(self.0).ok()?;
        proto::encode_list(&list).ok()
    }
}

/// The protobuf body of a JSON response body (an object, a list, a `Status` or partial
/// metadata); `None` for what has no protobuf form (Tables, custom kinds), which stays JSON.
pub(crate) fn to_protobuf(v: Value) -> Option<Vec<u8>> {
    let api_version = v.get("apiVersion")?.as_str()?.to_owned();
    let kind = v.get("kind")?.as_str()?.to_owned();
    match (api_version.as_str(), kind.as_str()) {
        ("meta.k8s.io/v1", "PartialObjectMetadata") => {
            let meta: ObjectMeta = serde_json::from_value(v.get("metadata")?.clone()).ok()?;
            Some(proto::encode_partial_object(&meta))
        }
        ("meta.k8s.io/v1", "PartialObjectMetadataList") => {
            let meta: ListMeta = serde_json::from_value(v.get("metadata")?.clone()).ok()?;
            let items = v
                .get("items")?
                .as_array()?
                .iter()
                .map(|i| serde_json::from_value(i.get("metadata")?.clone()).ok())
                .collect::<Option<Vec<ObjectMeta>>>()?;
            Some(proto::encode_partial_list(&meta, &items))
        }
        (_, "Status") => {
            let status: Status = serde_json::from_value(v).ok()?;
            Some(proto::encode_unknown("v1", "Status", status.encode()))
        }
        (_, list) if list.ends_with("List") => {
            let item = &list[..list.len() - 4];
            bosun_api_types::visit_kind(&api_version, item, ListToProto(v)).flatten()
        }
        _ => bosun_api_types::visit_kind(&api_version, &kind, ToProto(v)).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let o = |a: &str| negotiate(a, true).unwrap();
        assert_eq!(o(""), Output::default());
        assert_eq!(o("application/json"), Output::default());
        assert_eq!(o("*/*"), Output::default());
        assert_eq!(
            o("application/vnd.kubernetes.protobuf, application/json"),
            Output {
                view: View::Object,
                protobuf: true
            }
        );
        assert_eq!(
            o("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").view,
            View::Table
        );
        // Tables have no protobuf form: the next range wins.
        assert_eq!(
            o("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"),
            Output::default()
        );
        assert_eq!(
            o("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"),
            Output {
                view: View::Metadata,
                protobuf: true
            }
        );
        assert_eq!(
            o("application/json;as=Unknown;g=x;v=v1, application/json"),
            Output::default()
        );
        // Custom kinds have no protobuf form.
        assert_eq!(
            negotiate(
                "application/vnd.kubernetes.protobuf,application/json",
                false
            )
            .unwrap(),
            Output::default()
        );
        assert_eq!(negotiate("text/html", true).unwrap_err().code, 406);
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf", false)
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn json_bodies_become_protobuf() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let body = to_protobuf(cm).unwrap();
        let back: bosun_api_types::core::v1::ConfigMap = proto::decode_object(&body).unwrap();
        assert_eq!(back.metadata.name.as_deref(), Some("a"));
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "7"},
            "items": [{"metadata": {"name": "a"}}]});
        let body = to_protobuf(list).unwrap();
        let back: List<bosun_api_types::core::v1::ConfigMap> = proto::decode_list(&body).unwrap();
        assert_eq!(back.items.len(), 1);
        let status =
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}});
        assert!(to_protobuf(status).is_some());
        let table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": []});
        assert!(to_protobuf(table).is_none());
        let crd_kind = json!({"kind": "Widget", "apiVersion": "example.com/v1"});
        assert!(to_protobuf(crd_kind).is_none());
    }
}
