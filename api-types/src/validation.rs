//! Validation helpers with upstream's rules and messages, and field errors with upstream paths.
//!
//! ```
//! use bosun_api_types::validation::{is_dns1123_subdomain, FieldError, FieldPath};
//!
//! let path = FieldPath::new("spec").child("containers").index(0).child("name");
//! assert_eq!(path.to_string(), "spec.containers[0].name");
//! let errs = is_dns1123_subdomain("Web_1").unwrap_err();
//! let e = FieldError::invalid(&FieldPath::new("metadata").child("name"), "Web_1", &errs[0]);
//! assert!(e.to_string().starts_with("metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum length of a label value and of the name part of a qualified name.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Maximum total size of an object's annotations (keys and values), in bytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (");
    if !examples.is_empty() {
        s.push_str("e.g. ");
        for (i, e) in examples.iter().enumerate() {
            if i > 0 {
                s.push_str(" or ");
            }
            s.push_str(&format!("'{e}', "));
        }
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && alnum_lower(b[0])
        && alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| alnum_lower(c) || c == b'-')
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// Upstream `IsDNS1123Label`: a lowercase RFC 1123 label (namespace names, container names, …).
pub fn is_dns1123_label(value: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !is_label_shape(value) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Upstream `IsDNS1123Subdomain`: a lowercase RFC 1123 subdomain (most object names).
pub fn is_dns1123_subdomain(value: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if value.is_empty() || !value.split('.').all(is_label_shape) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Upstream `IsQualifiedName`: label and annotation keys, `[prefix/]name`.
pub fn is_qualified_name(value: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else if let Err(e) = is_dns1123_subdomain(prefix) {
                errs.extend(e.into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return Err(vec![regex_error(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            ) + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]);
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(LABEL_VALUE_MAX_LENGTH)
        ));
    }
    if !name.is_empty() && !is_qualified_shape(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            )
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Upstream `IsValidLabelValue`: empty, or a qualified-name-shaped string of at most 63 characters.
pub fn is_valid_label_value(value: &str) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_shape(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// A path to a field, rendered as upstream does: `spec.containers[0].name`, `metadata.labels[app]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at a top-level field.
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    /// The path of a child field.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry.
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kinds of field errors, with the `reason` a `StatusCause` carries for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    /// A required value is missing.
    Required,
    /// The value is malformed.
    Invalid,
    /// The value repeats another that must be unique.
    Duplicate,
    /// The value is not one of the supported values.
    NotSupported,
    /// The value is not allowed (policy, immutability).
    Forbidden,
    /// The value is too long.
    TooLong,
    /// Too many items.
    TooMany,
    /// An internal error.
    Internal,
    /// The field was not found (unknown field in strict decoding).
    NotFound,
}

impl FieldErrorType {
    /// The `StatusCause.reason` for this type (`FieldValueRequired`, …).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::Internal => "InternalError",
            FieldErrorType::NotFound => "FieldValueNotFound",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
            FieldErrorType::Internal => "Internal error",
            FieldErrorType::NotFound => "Not found",
        }
    }
}

/// One validation error of one field, printed as upstream prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldError {
    /// What kind of error.
    pub error_type: FieldErrorType,
    /// The field, e.g. `spec.containers[0].name`.
    pub field: String,
    /// The offending value, rendered (quoted for strings), if the message shows one.
    pub bad_value: Option<String>,
    /// Detail of what is wrong.
    pub detail: String,
}

impl FieldError {
    fn new(t: FieldErrorType, path: &FieldPath, bad: Option<String>, detail: &str) -> Self {
        FieldError {
            error_type: t,
            field: path.to_string(),
            bad_value: bad,
            detail: detail.to_owned(),
        }
    }

    /// `Required value`.
    pub fn required(path: &FieldPath, detail: &str) -> Self {
        Self::new(FieldErrorType::Required, path, None, detail)
    }

    /// `Invalid value: "v": detail`.
    pub fn invalid(path: &FieldPath, value: impl fmt::Debug, detail: &str) -> Self {
        Self::new(
            FieldErrorType::Invalid,
            path,
            Some(format!("{value:?}")),
            detail,
        )
    }

    /// `Invalid value: V: detail` with the value already rendered as upstream prints it (Go's
    /// `%#v` of maps and structs: `map[string]string{"app":"web"}`).
    pub fn invalid_rendered(path: &FieldPath, value: impl Into<String>, detail: &str) -> Self {
        Self::new(FieldErrorType::Invalid, path, Some(value.into()), detail)
    }

    /// `Duplicate value: "v"`.
    pub fn duplicate(path: &FieldPath, value: impl fmt::Debug) -> Self {
        Self::new(
            FieldErrorType::Duplicate,
            path,
            Some(format!("{value:?}")),
            "",
        )
    }

    /// `Unsupported value: "v": supported values: "a", "b"`.
    pub fn not_supported(path: &FieldPath, value: impl fmt::Debug, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = if list.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", list.join(", "))
        };
        Self::new(
            FieldErrorType::NotSupported,
            path,
            Some(format!("{value:?}")),
            &detail,
        )
    }

    /// `Forbidden: detail`.
    pub fn forbidden(path: &FieldPath, detail: &str) -> Self {
        Self::new(FieldErrorType::Forbidden, path, None, detail)
    }

    /// `Too long: may not be more than N bytes`.
    pub fn too_long(path: &FieldPath, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooLong,
            path,
            None,
            &format!("may not be more than {max} bytes"),
        )
    }

    /// `Too many: N: must have at most M items`.
    pub fn too_many(path: &FieldPath, actual: usize, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooMany,
            path,
            Some(actual.to_string()),
            &format!("must have at most {max} items"),
        )
    }

    /// The message without the field path (what `StatusCause.message` carries).
    pub fn message(&self) -> String {
        let mut s = self.error_type.label().to_owned();
        if let Some(v) = &self.bad_value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

impl std::error::Error for FieldError {}

/// Validates an object name with `check` (a DNS-1123 subdomain for most kinds).
pub fn validate_name(
    name: &str,
    path: &FieldPath,
    check: fn(&str) -> Result<(), Vec<String>>,
) -> Vec<FieldError> {
    match check(name) {
        Ok(()) => Vec::new(),
        Err(msgs) => msgs
            .iter()
            .map(|m| FieldError::invalid(path, name, m))
            .collect(),
    }
}

/// Upstream `ValidateLabels`: every key a qualified name, every value a valid label value.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        if let Err(msgs) = is_qualified_name(k) {
            errs.extend(msgs.iter().map(|m| FieldError::invalid(path, k, m)));
        }
        if let Err(msgs) = is_valid_label_value(v) {
            errs.extend(msgs.iter().map(|m| FieldError::invalid(&path.key(k), v, m)));
        }
    }
    errs
}

/// Upstream `ValidateAnnotations`: every key a qualified name (lower-cased), total size ≤ 256 KiB
/// (v1.32 wording: `Too long: may not be more than 262144 bytes`).
pub fn validate_annotations(
    annotations: &BTreeMap<String, String>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        if let Err(msgs) = is_qualified_name(&k.to_lowercase()) {
            errs.extend(msgs.iter().map(|m| FieldError::invalid(path, k, m)));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("my-name").is_ok());
        assert!(is_dns1123_label("123-abc").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(is_dns1123_label(bad).is_err(), "{bad}");
        }
        assert!(is_dns1123_subdomain("example.com").is_ok());
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "Example.com",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(is_dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert_eq!(
            is_dns1123_label("A").unwrap_err()[0],
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in ["app", "app.kubernetes.io/name", "A_b-c.d", "x/y"] {
            assert!(is_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "Ex.com/a",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(is_qualified_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            is_qualified_name("/a").unwrap_err(),
            vec!["prefix part must be non-empty"]
        );
        assert!(is_valid_label_value("").is_ok());
        assert!(is_valid_label_value("v1.2_x-Y").is_ok());
        assert!(is_valid_label_value("-x").is_err());
        assert!(is_valid_label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn field_errors_print_like_upstream() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("ports")
            .index(0)
            .child("protocol");
        let e = FieldError::not_supported(&p, "tcp", &["SCTP", "TCP", "UDP"]);
        assert_eq!(
            e.to_string(),
            "spec.containers[0].ports[0].protocol: Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(
            FieldError::required(&FieldPath::new("spec").child("selector"), "").to_string(),
            "spec.selector: Required value"
        );
        assert_eq!(
            FieldError::forbidden(&FieldPath::new("x"), "disallowed by cluster policy").to_string(),
            "x: Forbidden: disallowed by cluster policy"
        );
        assert_eq!(e.error_type.reason(), "FieldValueNotSupported");
        let labels = BTreeMap::from([("app".to_owned(), "-bad".to_owned())]);
        let errs = validate_labels(&labels, &FieldPath::new("metadata").child("labels"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.labels[app]");
        let big = BTreeMap::from([("a".to_owned(), "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT))]);
        let errs = validate_annotations(&big, &FieldPath::new("metadata").child("annotations"));
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }
}
