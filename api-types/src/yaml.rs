//! YAML to JSON, as Kubernetes reads YAML (request bodies, kubeconfig files): one document,
//! map keys become strings, at most a few aliases (each expands by copying, so a handful of
//! nested ones would make an exponentially large document).

use serde_json::{Map, Value};

/// Aliases a document may use.
pub const MAX_ALIASES: usize = 16;

/// Why YAML could not be read as JSON; the message says where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

/// Parses one YAML document into JSON (an empty document is an empty object).
pub fn to_json(body: &[u8]) -> Result<Value, YamlError> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn convert(y: Yaml) -> Result<Value, String> {
        Ok(match y {
            Yaml::Null | Yaml::BadValue => Value::Null,
            Yaml::Boolean(b) => Value::Bool(b),
            Yaml::Integer(i) => Value::from(i),
            Yaml::Real(r) => {
                let f: f64 = r.parse().map_err(|_| format!("invalid number {r:?}"))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("the number {r} cannot be represented in JSON"))?
            }
            Yaml::String(s) => Value::String(s),
            Yaml::Array(a) => Value::Array(a.into_iter().map(convert).collect::<Result<_, _>>()?),
            Yaml::Hash(h) => {
                let mut m = Map::new();
                for (k, v) in h {
                    let key = match k {
                        Yaml::String(s) => s,
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Real(r) => r,
                        Yaml::Boolean(b) => b.to_string(),
                        Yaml::Null => "null".into(),
                        other => return Err(format!("unsupported map key {other:?}")),
                    };
                    m.insert(key, convert(v)?);
                }
                Value::Object(m)
            }
            Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
        })
    }
    let err = |m: String| YamlError(m);
    let text = std::str::from_utf8(body)
        .map_err(|e| err(format!("the YAML request body is not UTF-8: {e}")))?;
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut aliases = 0;
    loop {
        match parser.next_token() {
            Ok((yaml_rust2::Event::StreamEnd, _)) => break,
            Ok((yaml_rust2::Event::Alias(_), _)) => {
                aliases += 1;
                if aliases > MAX_ALIASES {
                    return Err(err(format!(
                        "the YAML request body uses more than {MAX_ALIASES} aliases"
                    )));
                }
            }
            Ok(_) => {}
            Err(e) => return Err(err(format!("the request body is not valid YAML: {e}"))),
        }
    }
    let mut docs = YamlLoader::load_from_str(text)
        .map_err(|e| err(format!("the request body is not valid YAML: {e}")))?;
    if docs.len() > 1 {
        return Err(err(
            "the YAML request body has more than one document".into()
        ));
    }
    match docs.pop() {
        None => Ok(Value::Object(Map::new())),
        Some(doc) => convert(doc)
            .map_err(|e| err(format!("the YAML request body cannot be read as JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_json() {
        let v = to_json(b"a: 1\nb: [x, true]\n3: null\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", true], "3": null}));
        assert_eq!(to_json(b"").unwrap(), serde_json::json!({}));
        assert!(to_json(b"a: 1\n---\nb: 2\n").is_err());
        assert!(to_json(b"a: [").is_err());
    }
}
