//! Network configuration lists (`.conflist`), single network configurations (`.conf`,
//! `.json`, wrapped into a list of one), and loading the first one from a directory in
//! lexical order, as container runtimes do.

use crate::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One plugin's configuration inside a list.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConf {
    /// The plugin binary's name (`type`).
    pub plugin_type: String,
    /// The capabilities the plugin declares it accepts as `runtimeConfig`.
    pub capabilities: Vec<String>,
    /// The whole object as written, handed to the plugin on stdin.
    pub raw: Map<String, Value>,
}

/// A network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    /// The spec version of the list (`cniVersion`).
    pub cni_version: String,
    /// The network's name.
    pub name: String,
    /// `disableCheck`: CHECK always succeeds without running plugins.
    pub disable_check: bool,
    /// `disableGC`: GC does nothing.
    pub disable_gc: bool,
    /// The plugins, in ADD order.
    pub plugins: Vec<PluginConf>,
}

/// A spec version as numbers, for comparisons (`"0.4.0"` → `(0, 4, 0)`); `None` when it is
/// not `MAJOR.MINOR.PATCH`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Whether `name` is a valid network name (spec: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl NetworkConfigList {
    /// Parses a configuration list, or a single network configuration (wrapped into a list of
    /// one plugin); `origin` names the source in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self> {
        let err = |msg: String| Error::Config {
            path: origin.to_string(),
            msg,
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let Value::Object(top) = v else {
            return Err(err("not a JSON object".into()));
        };
        let str_field = |m: &Map<String, Value>, k: &str| -> Result<String> {
            match m.get(k) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) | None => Err(err(format!("{k} is required"))),
                Some(_) => Err(err(format!("{k} must be a string"))),
            }
        };
        let bool_field = |m: &Map<String, Value>, k: &str| -> Result<bool> {
            match m.get(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                // Older runtimes accepted the string forms.
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
                Some(_) => Err(err(format!("{k} must be a boolean"))),
            }
        };
        let name = str_field(&top, "name")?;
        if !valid_name(&name) {
            return Err(err(format!(
                "invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
            )));
        }
        let cni_version = str_field(&top, "cniVersion")?;
        if parse_version(&cni_version).is_none() {
            return Err(err(format!("invalid cniVersion {cni_version:?}")));
        }
        let raws: Vec<Map<String, Value>> = match top.get("plugins") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| match p {
                    Value::Object(m) => Ok(m.clone()),
                    _ => Err(err("each entry of plugins must be an object".into())),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(err("plugins must be an array".into())),
            // A single network configuration.
            None if top.contains_key("type") => vec![top.clone()],
            None => return Err(err("plugins is required".into())),
        };
        if raws.is_empty() {
            return Err(err("plugins must not be empty".into()));
        }
        let plugins = raws
            .into_iter()
            .map(|raw| {
                let plugin_type = str_field(&raw, "type")?;
                if plugin_type.contains('/') || plugin_type.starts_with('.') {
                    return Err(err(format!("invalid plugin type {plugin_type:?}")));
                }
                let capabilities = match raw.get("capabilities") {
                    None => Vec::new(),
                    Some(Value::Object(c)) => c
                        .iter()
                        .filter(|(_, on)| on.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    Some(_) => return Err(err("capabilities must be an object".into())),
                };
                Ok(PluginConf {
                    plugin_type,
                    capabilities,
                    raw,
                })
            })
            .collect::<Result<_>>()?;
        Ok(NetworkConfigList {
            disable_check: bool_field(&top, "disableCheck")?,
            disable_gc: bool_field(&top, "disableGC")?,
            cni_version,
            name,
            plugins,
        })
    }

    /// Reads one configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Config {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Loads the first valid configuration (`.conflist`, `.conf` or `.json`, in lexical order
    /// of file name) from `dir`; invalid files are skipped with a warning.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let origin = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Config {
            path: origin.clone(),
            msg: e.to_string(),
        })?;
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"))
            })
            .collect();
        files.sort();
        for f in &files {
            match Self::from_file(f) {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(error = %e, "skipping invalid CNI configuration"),
            }
        }
        Err(Error::Config {
            path: origin,
            msg: "no valid network configuration (.conflist, .conf, .json)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_list_with_capabilities() {
        let c = NetworkConfigList::parse(
            br#"{"cniVersion":"1.0.0","name":"pods","plugins":[
                {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},
                {"type":"portmap","capabilities":{"portMappings":true,"other":false}}]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.name, "pods");
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.plugins[1].capabilities, ["portMappings"]);
        assert_eq!(c.plugins[0].raw["bridge"], "cni0");
    }

    #[test]
    fn wraps_a_single_configuration() {
        let c = NetworkConfigList::parse(
            br#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.plugins[0].plugin_type, "loopback");
    }

    #[test]
    fn rejects_bad_configurations_with_the_reason() {
        for (json, want) in [
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                "name is required",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"-x","plugins":[{"type":"x"}]}"#,
                "invalid network name",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"x"}]}"#,
                "cniVersion is required",
            ),
            (
                r#"{"cniVersion":"1.0","name":"n","plugins":[{"type":"x"}]}"#,
                "invalid cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "must not be empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "type is required",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]}"#,
                "invalid plugin type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "plugins is required",
            ),
            ("[1]", "not a JSON object"),
            ("{", "invalid JSON"),
        ] {
            let e = NetworkConfigList::parse(json.as_bytes(), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn load_dir_takes_the_first_valid_file_in_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"1.0.0","name":"a","type":"x"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("00-ignored.txt"), "x").unwrap();
        assert_eq!(NetworkConfigList::load_dir(d.path()).unwrap().name, "a");
        let empty = tempfile::tempdir().unwrap();
        assert!(NetworkConfigList::load_dir(empty.path()).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = NetworkConfigList::parse(&bytes, "fuzz");
        }

        #[test]
        fn versions_round_trip(a in 0u32..100, b in 0u32..100, c in 0u32..100) {
            prop_assert_eq!(parse_version(&format!("{a}.{b}.{c}")), Some((a, b, c)));
            prop_assert_eq!(parse_version(&format!("{a}.{b}")), None);
        }
    }
}
