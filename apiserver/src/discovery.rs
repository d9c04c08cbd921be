//! Discovery documents: legacy (`/api`, `/apis`, `/api/v1`, `/apis/G/V`) and aggregated
//! (`apidiscovery.k8s.io/v2`, and `v2beta1` for kubectl before 1.30), generated from the resource
//! table.

use crate::resources::{ApiResource, ResourceTable};
use bosun_api_types::apidiscovery::v2::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIResourceDiscovery, APISubresourceDiscovery,
    APIVersionDiscovery,
};
use bosun_api_types::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    GroupVersionKind, ObjectMeta, ServerAddressByClientCIDR,
};

/// What a subresource answers with, and its verbs (upstream's table).
fn subresource_kind(r: &ApiResource, sub: &str) -> (GroupVersionKind, &'static [&'static str]) {
    let same = |kind: &str| GroupVersionKind {
        kind: kind.to_owned(),
        ..Default::default()
    };
    let other = |group: &str, version: &str, kind: &str| GroupVersionKind {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
    };
    const RW: &[&str] = &["get", "patch", "update"];
    const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];
    match sub {
        "scale" => (other("autoscaling", "v1", "Scale"), RW),
        "eviction" => (other("policy", "v1", "Eviction"), &["create"]),
        "token" => (
            other("authentication.k8s.io", "v1", "TokenRequest"),
            &["create"],
        ),
        "binding" => (same("Binding"), &["create"]),
        "log" => (same(&r.kind), &["get"]),
        "finalize" => (same(&r.kind), &["update"]),
        "exec" => (same("PodExecOptions"), &["create", "get"]),
        "attach" => (same("PodAttachOptions"), &["create", "get"]),
        "portforward" => (same("PodPortForwardOptions"), &["create", "get"]),
        "proxy" => (same(&format!("{}ProxyOptions", r.kind)), PROXY),
        _ => (same(&r.kind), RW),
    }
}

/// `GET /api`.
pub fn api_versions(server_address: &str) -> APIVersions {
    APIVersions {
        api_version: String::new(),
        kind: "APIVersions".into(),
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: server_address.to_owned(),
        }],
    }
}

fn group(name: &str, versions: &[String]) -> APIGroup {
    let gvs: Vec<GroupVersionForDiscovery> = versions
        .iter()
        .map(|v| GroupVersionForDiscovery {
            group_version: format!("{name}/{v}"),
            version: v.clone(),
        })
        .collect();
    APIGroup {
        api_version: String::new(),
        kind: String::new(),
        name: name.to_owned(),
        preferred_version: gvs.first().cloned(),
        versions: gvs,
        ..Default::default()
    }
}

/// `GET /apis`.
pub fn api_group_list(table: &ResourceTable) -> APIGroupList {
    APIGroupList {
        api_version: "v1".into(),
        kind: "APIGroupList".into(),
        groups: table
            .groups()
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, vs)| group(g, vs))
            .collect(),
    }
}

/// `GET /apis/{group}`.
pub fn api_group(table: &ResourceTable, name: &str) -> Option<APIGroup> {
    let groups = table.groups();
    let (g, vs) = groups.iter().find(|(g, _)| g == name && !g.is_empty())?;
    Some(APIGroup {
        api_version: "v1".into(),
        kind: "APIGroup".into(),
        ..group(g, vs)
    })
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`.
pub fn api_resource_list(
    table: &ResourceTable,
    group: &str,
    version: &str,
) -> Option<APIResourceList> {
    let mut resources = Vec::new();
    for r in table.in_group_version(group, version) {
        resources.push(APIResource {
            kind: r.kind.clone(),
            name: r.plural.clone(),
            singular_name: r.singular.clone(),
            namespaced: r.namespaced,
            verbs: r.verbs.clone(),
            short_names: r.short_names.clone(),
            categories: r.categories.clone(),
            ..Default::default()
        });
        for sub in &r.subresources {
            let (gvk, verbs) = subresource_kind(r, sub);
            resources.push(APIResource {
                kind: gvk.kind,
                name: format!("{}/{sub}", r.plural),
                singular_name: String::new(),
                namespaced: r.namespaced,
                group: Some(gvk.group).filter(|g| !g.is_empty()),
                version: Some(gvk.version).filter(|v| !v.is_empty()),
                verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                ..Default::default()
            });
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(APIResourceList {
        api_version: "v1".into(),
        kind: "APIResourceList".into(),
        group_version,
        resources,
    })
}

/// Aggregated discovery of the core group (`/api`) or of every other group (`/apis`).
/// `api_version` is `apidiscovery.k8s.io/v2` or `…/v2beta1` (same shape).
pub fn aggregated(table: &ResourceTable, core: bool, api_version: &str) -> APIGroupDiscoveryList {
    let mut items = Vec::new();
    for (g, versions) in table.groups() {
        if g.is_empty() != core {
            continue;
        }
        let versions = versions
            .iter()
            .map(|v| APIVersionDiscovery {
                version: v.clone(),
                resources: table
                    .in_group_version(&g, v)
                    .map(|r| APIResourceDiscovery {
                        resource: r.plural.clone(),
                        response_kind: Some(GroupVersionKind {
                            kind: r.kind.clone(),
                            ..Default::default()
                        }),
                        scope: if r.namespaced {
                            "Namespaced"
                        } else {
                            "Cluster"
                        }
                        .into(),
                        singular_resource: r.singular.clone(),
                        verbs: r.verbs.clone(),
                        short_names: r.short_names.clone(),
                        categories: r.categories.clone(),
                        subresources: r
                            .subresources
                            .iter()
                            .map(|s| {
                                let (gvk, verbs) = subresource_kind(r, s);
                                APISubresourceDiscovery {
                                    subresource: s.clone(),
                                    response_kind: Some(gvk),
                                    verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                    })
                    .collect(),
                freshness: "Current".into(),
            })
            .collect();
        items.push(APIGroupDiscovery {
            metadata: ObjectMeta {
                name: Some(g.clone()).filter(|g| !g.is_empty()),
                ..Default::default()
            },
            versions,
            ..Default::default()
        });
    }
    APIGroupDiscoveryList {
        api_version: api_version.to_owned(),
        kind: "APIGroupDiscoveryList".into(),
        items,
        ..Default::default()
    }
}
