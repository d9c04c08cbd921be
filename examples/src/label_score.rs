//! An out-of-tree Score plugin: nodes with a higher value of a numeric label (by default
//! `example.com/green-energy`, 0–100) score higher, in a profile of its own.
//!
//! ```
//! use bosun_examples::label_score;
//! let config = label_score::config("green-scheduler", 5).unwrap();
//! let registry = label_score::registry();
//! # let _ = (config, registry);
//! ```

use bosun_scheduler_framework::config::ConfigError;
use bosun_scheduler_framework::plugins::{default_normalize, Registry};
use bosun_scheduler_framework::{
    extension_points, CycleState, NodeInfo, NodeScore, Plugin, PodInfo, SchedulerConfig,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use serde::Deserialize;
use std::sync::Arc;

/// The plugin's name in configuration.
pub const NAME: &str = "LabelScore";

/// `pluginConfig` args.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Args {
    /// The label holding the score.
    #[serde(default = "default_key")]
    pub label_key: String,
}

fn default_key() -> String {
    "example.com/green-energy".into()
}

/// Scores a node by the integer value of a label (0 when missing or not a number).
pub struct LabelScore {
    key: String,
}

impl Plugin for LabelScore {
    fn name(&self) -> &str {
        NAME
    }
    extension_points!(score);
}

impl ScorePlugin for LabelScore {
    fn score(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(node
            .labels()
            .get(&self.key)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(0, 1_000_000))
    }
    fn normalize_scores(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

/// The in-tree plugins plus this one.
pub fn registry() -> Registry {
    let mut r = Registry::in_tree();
    r.register(
        NAME,
        Arc::new(|args, _handle| {
            let args: Args = match args {
                Some(v) if !v.is_null() => serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("{NAME} args: {e}")))?,
                _ => Args {
                    label_key: default_key(),
                },
            };
            Ok(Arc::new(LabelScore {
                key: args.label_key,
            }) as Arc<dyn Plugin>)
        }),
    );
    r
}

/// A configuration with the default profile and `scheduler_name`, which adds this plugin
/// with `weight` to upstream's scores.
pub fn config(scheduler_name: &str, weight: i64) -> Result<SchedulerConfig, ConfigError> {
    let yaml = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: {scheduler_name}
  plugins:
    score:
      enabled:
      - name: {NAME}
        weight: {weight}
"
    );
    SchedulerConfig::parse(yaml.as_bytes())
}
