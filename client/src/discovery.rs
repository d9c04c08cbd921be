//! Discovery: which resources the server serves, found with two requests (aggregated
//! discovery of `/api` and `/apis`), for addressing kinds known only at run time through
//! `Api<DynamicObject>`.
//!
//! ```no_run
//! use bosun_client::discovery::Discovery;
//! use bosun_client::Api;
//! use bosun_api_types::DynamicObject;
//! # async fn run(client: bosun_client::Client) -> bosun_client::Result<()> {
//! let discovery = Discovery::run(&client).await?;
//! let widgets = discovery.resolve("example.com", "Widget").expect("served");
//! let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &widgets);
//! for w in api.list(&Default::default()).await?.items {
//!     tracing::info!(name = ?w.metadata.name, "widget");
//! }
//! # Ok(()) }
//! ```

use crate::client::Client;
use crate::error::{Error, Result};
use bosun_api_types::apidiscovery::v2::APIGroupDiscoveryList;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;

/// A resource as the server serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiResource {
    /// API group (empty for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// `group/version` (or `version` for core).
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Plural name in URLs.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// The verbs it serves (`get`, `list`, `watch`, …).
    pub verbs: Vec<String>,
}

impl ApiResource {
    /// Whether it serves `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The served resources.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// Every served resource (subresources excluded), preferred versions first per group.
    pub resources: Vec<ApiResource>,
}

impl Discovery {
    /// Asks the server (two requests).
    pub async fn run(client: &Client) -> Result<Self> {
        let mut resources = Vec::new();
        for path in ["/api", "/apis"] {
            let req = Request::get(path)
                .header(
                    header::ACCEPT,
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                )
                .body(Full::<Bytes>::default())
                .map_err(|e| Error::Request(e.to_string()))?;
            let list: APIGroupDiscoveryList = client.request(req).await?;
            for group in list.items {
                let name = group.metadata.name.clone().unwrap_or_default();
                for v in group.versions {
                    for r in v.resources {
                        let kind = r
                            .response_kind
                            .as_ref()
                            .map(|k| k.kind.clone())
                            .unwrap_or_default();
                        let api_version = if name.is_empty() {
                            v.version.clone()
                        } else {
                            format!("{name}/{}", v.version)
                        };
                        resources.push(ApiResource {
                            group: name.clone(),
                            version: v.version.clone(),
                            api_version,
                            kind,
                            plural: r.resource,
                            namespaced: r.scope == "Namespaced",
                            verbs: r.verbs,
                        });
                    }
                }
            }
        }
        Ok(Discovery { resources })
    }

    /// The preferred version of `kind` in `group`.
    pub fn resolve(&self, group: &str, kind: &str) -> Option<ApiResource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// `kind` in exactly `group/version`.
    pub fn resolve_gvk(&self, group: &str, version: &str, kind: &str) -> Option<ApiResource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }
}
