//! `kubescheduler.config.k8s.io/v1` KubeSchedulerConfiguration: profiles (scheduler names with
//! their plugins per extension point, weights and plugin args), merged over upstream's
//! defaults the way kube-scheduler merges them.

use crate::framework::{Framework, Handle, Plugins};
use crate::interface::Plugin;
use crate::plugins::{Registry, DEFAULT_PLUGINS};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be parsed.
    #[error("parsing the scheduler configuration: {0}")]
    Parse(String),
    /// The configuration is not valid.
    #[error("invalid scheduler configuration: {0}")]
    Invalid(String),
}

/// A plugin named in a plugin set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PluginRef {
    /// The plugin's name (`*` in `disabled` means every default plugin).
    pub name: String,
    /// The score weight.
    #[serde(default)]
    pub weight: Option<i64>,
}

/// Plugins enabled and disabled at one extension point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PluginSet {
    /// Enabled, appended after the defaults that stay.
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Disabled defaults.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// Plugin sets per extension point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct PluginsConfig {
    pub multi_point: Option<PluginSet>,
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
}

/// Arguments for one plugin.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PluginConfig {
    /// The plugin.
    pub name: String,
    /// Its args object.
    #[serde(default)]
    pub args: Value,
}

/// One profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The scheduler name pods select with `spec.schedulerName` (default `default-scheduler`).
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// Overrides the global percentage for this profile.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Plugin sets.
    #[serde(default)]
    pub plugins: Option<PluginsConfig>,
    /// Plugin args.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

/// Leader election settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElection {
    /// Whether to elect a leader (default true).
    #[serde(default)]
    pub leader_elect: Option<bool>,
    /// The Lease name (default `kube-scheduler`).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// The Lease namespace (default `kube-system`).
    #[serde(default)]
    pub resource_namespace: Option<String>,
}

/// How to reach the API server.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ClientConnection {
    /// A kubeconfig path.
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// `kubescheduler.config.k8s.io/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `KubeSchedulerConfiguration`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Workers for node-parallel work (default 16, capped at the machine's cores).
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Percentage of nodes to score (0 or unset: adaptive).
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// First backoff (default 1).
    #[serde(default)]
    pub pod_initial_backoff_seconds: Option<u64>,
    /// Longest backoff (default 10).
    #[serde(default)]
    pub pod_max_backoff_seconds: Option<u64>,
    /// Leader election.
    #[serde(default)]
    pub leader_election: Option<LeaderElection>,
    /// API server connection.
    #[serde(default)]
    pub client_connection: Option<ClientConnection>,
    /// Profiles (default: one `default-scheduler` profile).
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

impl SchedulerConfig {
    /// Parses YAML or JSON and checks apiVersion and kind.
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let v =
            bosun_api_types::yaml::to_json(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let c: SchedulerConfig =
            serde_json::from_value(v).map_err(|e| ConfigError::Parse(e.to_string()))?;
        match c.api_version.as_deref() {
            Some("kubescheduler.config.k8s.io/v1") => {}
            other => {
                return Err(ConfigError::Invalid(format!(
                    "apiVersion {other:?} is not supported (want kubescheduler.config.k8s.io/v1)"
                )))
            }
        }
        if c.kind.as_deref() != Some("KubeSchedulerConfiguration") {
            return Err(ConfigError::Invalid(format!(
                "kind {:?} is not KubeSchedulerConfiguration",
                c.kind
            )));
        }
        if c.percentage_of_nodes_to_score.is_some_and(|p| p > 100) {
            return Err(ConfigError::Invalid(
                "percentageOfNodesToScore must be 0-100".into(),
            ));
        }
        Ok(c)
    }

    /// The profiles, defaulted.
    pub fn profiles(&self) -> Vec<Profile> {
        if self.profiles.is_empty() {
            vec![Profile::default()]
        } else {
            self.profiles.clone()
        }
    }

    /// Builds one framework per profile.
    pub fn build(
        &self,
        registry: &Registry,
        handle: &Handle,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Vec<Framework>, ConfigError> {
        let mut names = HashSet::new();
        let mut out: Vec<Framework> = Vec::new();
        for p in self.profiles() {
            let name = p
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".into());
            if !names.insert(name.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "duplicate profile with schedulerName {name:?}"
                )));
            }
            let plugins = build_plugins(&p, registry, handle)?;
            let pct = p
                .percentage_of_nodes_to_score
                .or(self.percentage_of_nodes_to_score);
            out.push(Framework::new(
                name,
                plugins,
                pct,
                pool.clone(),
                handle.waiting_pods.clone(),
            ));
        }
        let sorts: HashSet<Vec<String>> = out
            .iter()
            .map(|f| {
                f.plugins()
                    .queue_sort
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect()
            })
            .collect();
        if sorts.len() > 1 {
            return Err(ConfigError::Invalid(
                "every profile must use the same queueSort plugin".into(),
            ));
        }
        Ok(out)
    }
}

type Point = fn(&dyn Plugin) -> bool;

/// The extension points: config field, and whether a plugin implements it.
fn points(c: &PluginsConfig) -> [(&'static str, Option<&PluginSet>, Point); 12] {
    [
        ("preEnqueue", c.pre_enqueue.as_ref(), |p| {
            p.as_pre_enqueue().is_some()
        }),
        ("queueSort", c.queue_sort.as_ref(), |p| {
            p.as_queue_sort().is_some()
        }),
        ("preFilter", c.pre_filter.as_ref(), |p| {
            p.as_pre_filter().is_some()
        }),
        ("filter", c.filter.as_ref(), |p| p.as_filter().is_some()),
        ("postFilter", c.post_filter.as_ref(), |p| {
            p.as_post_filter().is_some()
        }),
        ("preScore", c.pre_score.as_ref(), |p| {
            p.as_pre_score().is_some()
        }),
        ("score", c.score.as_ref(), |p| p.as_score().is_some()),
        ("reserve", c.reserve.as_ref(), |p| p.as_reserve().is_some()),
        ("permit", c.permit.as_ref(), |p| p.as_permit().is_some()),
        ("preBind", c.pre_bind.as_ref(), |p| {
            p.as_pre_bind().is_some()
        }),
        ("bind", c.bind.as_ref(), |p| p.as_bind().is_some()),
        ("postBind", c.post_bind.as_ref(), |p| {
            p.as_post_bind().is_some()
        }),
    ]
}

fn build_plugins(
    p: &Profile,
    registry: &Registry,
    handle: &Handle,
) -> Result<Plugins, ConfigError> {
    let cfg = p.plugins.clone().unwrap_or_default();
    let args: HashMap<&str, &Value> = p
        .plugin_config
        .iter()
        .map(|c| (c.name.as_str(), &c.args))
        .collect();
    // Multi-point: the defaults, minus disabled ones, plus enabled ones (which replace a
    // default of the same name, weight included).
    let mut multi: Vec<(String, i64)> = DEFAULT_PLUGINS
        .iter()
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    if let Some(mp) = &cfg.multi_point {
        apply(&mut multi, mp);
    }
    let mut instances: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
    let mut instance = |name: &str| -> Result<Arc<dyn Plugin>, ConfigError> {
        if let Some(p) = instances.get(name) {
            return Ok(p.clone());
        }
        let p = registry.build(name, args.get(name).copied(), handle)?;
        instances.insert(name.to_string(), p.clone());
        Ok(p)
    };
    let mut out = Plugins::default();
    for (point, set, implements) in points(&cfg) {
        // Defaults for this point: the multi-point plugins that implement it.
        let mut list: Vec<(String, i64)> = Vec::new();
        for (name, w) in &multi {
            if implements(instance(name)?.as_ref()) {
                list.push((name.clone(), *w));
            }
        }
        if let Some(set) = set {
            apply(&mut list, set);
        }
        for (name, w) in list {
            let plugin = instance(&name)?;
            if !implements(plugin.as_ref()) {
                return Err(ConfigError::Invalid(format!(
                    "plugin {name:?} does not implement the {point} extension point"
                )));
            }
            let target = match point {
                "preEnqueue" => &mut out.pre_enqueue,
                "queueSort" => &mut out.queue_sort,
                "preFilter" => &mut out.pre_filter,
                "filter" => &mut out.filter,
                "postFilter" => &mut out.post_filter,
                "preScore" => &mut out.pre_score,
                "score" => {
                    out.score.push((plugin, if w <= 0 { 1 } else { w }));
                    continue;
                }
                "reserve" => &mut out.reserve,
                "permit" => &mut out.permit,
                "preBind" => &mut out.pre_bind,
                "bind" => &mut out.bind,
                _ => &mut out.post_bind,
            };
            target.push(plugin);
        }
    }
    if out.queue_sort.len() != 1 {
        return Err(ConfigError::Invalid(
            "exactly one queueSort plugin must be enabled".into(),
        ));
    }
    if out.bind.is_empty() {
        return Err(ConfigError::Invalid(
            "at least one bind plugin must be enabled".into(),
        ));
    }
    Ok(out)
}

fn apply(list: &mut Vec<(String, i64)>, set: &PluginSet) {
    for d in &set.disabled {
        if d.name == "*" {
            list.clear();
        } else {
            list.retain(|(n, _)| *n != d.name);
        }
    }
    for e in &set.enabled {
        let old = list.iter().position(|(n, _)| *n == e.name);
        let w = e.weight.or_else(|| old.map(|i| list[i].1)).unwrap_or(1);
        if let Some(i) = old {
            list[i].1 = w;
        } else {
            list.push((e.name.clone(), w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Listers, MemoryCluster};

    fn handle() -> Handle {
        Handle {
            cluster: Arc::new(MemoryCluster::default()),
            listers: Arc::new(Listers::default()),
            waiting_pods: Default::default(),
        }
    }

    fn pool() -> Arc<rayon::ThreadPool> {
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        )
    }

    fn names(v: &[Arc<dyn Plugin>]) -> Vec<&str> {
        v.iter().map(|p| p.name()).collect()
    }

    #[test]
    fn the_default_profile_is_upstreams() {
        let c = SchedulerConfig::default();
        let f = c.build(&Registry::default(), &handle(), pool()).unwrap();
        assert_eq!(f.len(), 1);
        let p = f[0].plugins();
        assert_eq!(f[0].name(), "default-scheduler");
        assert_eq!(
            names(&p.filter),
            [
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "VolumeRestrictions",
                "NodeVolumeLimits",
                "VolumeBinding",
                "PodTopologySpread",
                "InterPodAffinity"
            ]
        );
        let weights: Vec<(&str, i64)> = p.score.iter().map(|(p, w)| (p.name(), *w)).collect();
        assert_eq!(
            weights,
            [
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("NodeResourcesBalancedAllocation", 1),
                ("ImageLocality", 1)
            ]
        );
        assert_eq!(names(&p.post_filter), ["DefaultPreemption"]);
        assert_eq!(names(&p.bind), ["DefaultBinder"]);
        assert_eq!(names(&p.pre_enqueue), ["SchedulingGates"]);
    }

    #[test]
    fn profiles_merge_over_the_defaults() {
        let yaml = br#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    score:
      disabled:
      - name: NodeResourcesBalancedAllocation
      - name: ImageLocality
      enabled:
      - name: NodeResourcesFit
        weight: 5
    multiPoint:
      disabled:
      - name: DefaultPreemption
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#;
        let c = SchedulerConfig::parse(yaml).unwrap();
        let f = c.build(&Registry::default(), &handle(), pool()).unwrap();
        assert_eq!(f[1].name(), "bin-packer");
        let p = f[1].plugins();
        let weights: Vec<(&str, i64)> = p.score.iter().map(|(p, w)| (p.name(), *w)).collect();
        assert!(weights.contains(&("NodeResourcesFit", 5)));
        assert!(!weights.iter().any(|(n, _)| *n == "ImageLocality"));
        assert!(p.post_filter.is_empty());
        assert_eq!(f[0].plugins().post_filter.len(), 1);
        assert_eq!(f[1].num_feasible_nodes_to_find(1000), 300);
    }

    #[test]
    fn bad_configurations_are_rejected_with_a_reason() {
        for (yaml, want) in [
            ("apiVersion: v1\nkind: KubeSchedulerConfiguration\n", "apiVersion"),
            ("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Nope\n", "does not exist"),
            ("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: a\n- schedulerName: a\n", "duplicate"),
            ("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    score:\n      enabled:\n      - name: DefaultBinder\n", "does not implement"),
        ] {
            let err = SchedulerConfig::parse(yaml.as_bytes())
                .and_then(|c| c.build(&Registry::default(), &handle(), pool()).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
