//! Label and field selectors: the string syntax and `LabelSelector` structs compile to one matcher.
//!
//! ```
//! use bosun_api_types::selector::{FieldSelector, LabelSelectorExt, Selector};
//! use std::collections::BTreeMap;
//!
//! let sel: Selector = "app=web,tier in (front, back),!canary".parse().unwrap();
//! let labels = BTreeMap::from([("app".to_string(), "web".to_string()), ("tier".into(), "front".into())]);
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.to_string(), "app=web,!canary,tier in (back,front)");
//!
//! let err = "app in (web".parse::<Selector>().unwrap_err();
//! assert_eq!(err.position, 11);
//!
//! let f: FieldSelector = "status.phase!=Running,spec.nodeName=n1".parse().unwrap();
//! assert!(f.matches(|k| match k { "status.phase" => Some("Pending"), "spec.nodeName" => Some("n1"), _ => None }));
//! ```

use crate::meta::v1::LabelSelector;
use crate::validation::{is_qualified_name, is_valid_label_value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A selector that does not parse or does not validate; `position` is a byte offset in the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {message} (at position {position})")]
pub struct SelectorError {
    /// Byte offset in the selector string where the problem was found.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value` (also true when the key is absent).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N` (integer comparison; node affinity `Gt`).
    GreaterThan,
    /// `key<N` (node affinity `Lt`).
    LessThan,
}

/// One requirement of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values, sorted and deduplicated (one for `=`, `!=`, `>`, `<`; none for existence).
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a validated requirement.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        Self::at(key, operator, values, (0, 0))
    }

    /// Validates; `key_pos` and `position` locate the key and the operator for errors.
    fn at(
        key: &str,
        operator: Operator,
        mut values: Vec<String>,
        (key_pos, position): (usize, usize),
    ) -> Result<Self, SelectorError> {
        let fail = |message: String| SelectorError { position, message };
        if let Err(errs) = is_qualified_name(key) {
            return Err(SelectorError {
                position: key_pos,
                message: format!("invalid label key {key:?}: {}", errs.join("; ")),
            });
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(fail(
                    "for 'in', 'notin' operators, values set can't be empty".into(),
                ))
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(fail(
                    "exact-match compatibility requires one single value".into(),
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(fail(
                    "values set must be empty for exists and does not exist".into(),
                ))
            }
            Operator::GreaterThan | Operator::LessThan
                if values.len() != 1 || values[0].parse::<i64>().is_err() =>
            {
                return Err(fail(
                    "for 'Gt', 'Lt' operators, exactly one integer value is required".into(),
                ));
            }
            _ => {}
        }
        if !matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for v in &values {
                if let Err(errs) = is_valid_label_value(v) {
                    return Err(fail(format!(
                        "invalid label value: {v:?}: {}",
                        errs.join("; ")
                    )));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|w| w.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        let one = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => write!(f, "{k}={one}"),
            Operator::NotEquals => write!(f, "{k}!={one}"),
            Operator::In => write!(f, "{k} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{k} notin ({})", self.values.join(",")),
            Operator::Exists => write!(f, "{k}"),
            Operator::DoesNotExist => write!(f, "!{k}"),
            Operator::GreaterThan => write!(f, "{k}>{one}"),
            Operator::LessThan => write!(f, "{k}<{one}"),
        }
    }
}

/// A label selector: all requirements must hold. The empty selector matches everything.
///
/// ```
/// use bosun_api_types::selector::Selector;
/// use std::collections::BTreeMap;
///
/// let selector: Selector = "app=web,tier in (front,edge),!canary".parse().expect("a selector");
/// let labels = BTreeMap::from([("app".to_string(), "web".to_string()), ("tier".to_string(), "edge".to_string())]);
/// assert!(selector.matches(&labels));
/// assert_eq!(selector.to_string(), "app=web,!canary,tier in (edge,front)");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
    /// A selector that matches nothing (a `None` selector in some contexts).
    nothing: bool,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// The selector that matches no label set.
    pub fn nothing() -> Self {
        Selector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// A selector from requirements (sorted by key, as upstream does).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector {
            requirements,
            nothing: false,
        }
    }

    /// `key=value` for every entry of a map (a Service or ReplicationController selector).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        Selector::from_requirements(
            labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        )
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector matches every label set.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    End,
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn is_special(c: char) -> bool {
        matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
    }

    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> (Token, usize) {
        let rest = &self.s[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (Token::End, start);
        };
        let two = |l: &mut Self, t| {
            l.pos += 2;
            (t, start)
        };
        let one = |l: &mut Self, t| {
            l.pos += 1;
            (t, start)
        };
        match c {
            '=' if trimmed.starts_with("==") => two(self, Token::DoubleEq),
            '=' => one(self, Token::Eq),
            '!' if trimmed.starts_with("!=") => two(self, Token::NotEq),
            '!' => one(self, Token::Not),
            '(' => one(self, Token::Open),
            ')' => one(self, Token::Close),
            ',' => one(self, Token::Comma),
            '>' => one(self, Token::Gt),
            '<' => one(self, Token::Lt),
            _ => {
                let len = trimmed
                    .find(|c: char| c.is_whitespace() || Self::is_special(c))
                    .unwrap_or(trimmed.len());
                self.pos += len;
                let word = &trimmed[..len];
                let tok = match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    w => Token::Ident(w.to_owned()),
                };
                (tok, start)
            }
        }
    }

    fn peek(&mut self) -> (Token, usize) {
        let save = self.pos;
        let t = self.next();
        self.pos = save;
        t
    }
}

fn err(position: usize, message: impl Into<String>) -> SelectorError {
    SelectorError {
        position,
        message: message.into(),
    }
}

fn parse_values(lx: &mut Lexer<'_>) -> Result<Vec<String>, SelectorError> {
    let (t, p) = lx.next();
    if t != Token::Open {
        return Err(err(p, format!("found {t:?}, expected '('")));
    }
    let mut values = Vec::new();
    loop {
        let (t, p) = lx.next();
        // In a value list `in` and `notin` are values, not keywords (as upstream's parser reads
        // them in its Values context).
        let t = match t {
            Token::In => Token::Ident("in".into()),
            Token::NotIn => Token::Ident("notin".into()),
            other => other,
        };
        match t {
            Token::Ident(v) => {
                values.push(v);
                match lx.next() {
                    (Token::Comma, _) => continue,
                    (Token::Close, _) => return Ok(values),
                    (_, p) => return Err(err(p, "expected ',' or ')' in a value list")),
                }
            }
            // An empty value: `(a,)` or `()`.
            Token::Comma => values.push(String::new()),
            Token::Close => {
                if !values.is_empty() {
                    values.push(String::new());
                }
                return Ok(values);
            }
            _ => return Err(err(p, "expected a value, ',' or ')' in a value list")),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let mut lx = Lexer { s, pos: 0 };
        let mut reqs = Vec::new();
        if lx.peek().0 == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            let (t, start) = lx.next();
            let (negated, key, start) = match t {
                Token::Not => match lx.next() {
                    (Token::Ident(k), key_pos) => (true, k, key_pos),
                    (_, p) => return Err(err(p, "expected a label key after '!'")),
                },
                Token::Ident(k) => (false, k, start),
                _ => return Err(err(start, "expected a label key")),
            };
            let req = if negated {
                Requirement::at(&key, Operator::DoesNotExist, vec![], (start, start))?
            } else {
                let (op_tok, op_pos) = lx.peek();
                match op_tok {
                    Token::Comma | Token::End => {
                        Requirement::at(&key, Operator::Exists, vec![], (start, start))?
                    }
                    Token::Eq | Token::DoubleEq | Token::NotEq | Token::Gt | Token::Lt => {
                        lx.next();
                        let value = match lx.peek() {
                            (Token::Ident(v), _) => {
                                lx.next();
                                v
                            }
                            (Token::Comma | Token::End, _) => String::new(),
                            (_, p) => return Err(err(p, "expected a value after the operator")),
                        };
                        let op = match op_tok {
                            Token::NotEq => Operator::NotEquals,
                            Token::Gt => Operator::GreaterThan,
                            Token::Lt => Operator::LessThan,
                            _ => Operator::Equals,
                        };
                        Requirement::at(&key, op, vec![value], (start, op_pos))?
                    }
                    Token::In | Token::NotIn => {
                        lx.next();
                        let values = parse_values(&mut lx)?;
                        let op = if op_tok == Token::In {
                            Operator::In
                        } else {
                            Operator::NotIn
                        };
                        Requirement::at(&key, op, values, (start, op_pos))?
                    }
                    _ => return Err(err(
                        op_pos,
                        "expected one of '=', '==', '!=', '>', '<', 'in', 'notin', ',' after a key",
                    )),
                }
            };
            reqs.push(req);
            match lx.next() {
                (Token::End, _) => break,
                (Token::Comma, p) => {
                    if lx.peek().0 == Token::End {
                        return Err(err(p + 1, "expected a requirement after ','"));
                    }
                }
                (_, p) => return Err(err(p, "expected ',' or the end of the selector")),
            }
        }
        Ok(Selector::from_requirements(reqs))
    }
}

/// Compiling the `LabelSelector` struct (`matchLabels` + `matchExpressions`) into a [`Selector`].
pub trait LabelSelectorExt {
    /// The matcher for this selector; an empty `LabelSelector` matches everything.
    fn to_selector(&self) -> Result<Selector, SelectorError>;
}

impl LabelSelectorExt for LabelSelector {
    fn to_selector(&self) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in &self.match_labels {
            reqs.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for e in &self.match_expressions {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(err(
                        0,
                        format!("{other:?} is not a valid label selector operator"),
                    ))
                }
            };
            reqs.push(Requirement::new(&e.key, op, e.values.clone())?);
        }
        Ok(Selector::from_requirements(reqs))
    }
}

/// One term of a [`FieldSelector`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// Field path, e.g. `spec.nodeName`.
    pub field: String,
    /// `true` for `!=`, `false` for `=`/`==`.
    pub negated: bool,
    /// The value compared with.
    pub value: String,
}

/// A field selector (`metadata.name=web,status.phase!=Running`): all terms must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value required for `field` by an `=` term, if any (to serve a query from an index).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// Whether an object whose fields `get` returns satisfies every term; a missing field is `""`.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements
            .iter()
            .all(|r| (get(&r.field).unwrap_or("") == r.value) != r.negated)
    }
}

fn unescape_field(s: &str, base: usize) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, e @ ('\\' | ',' | '=' | '!'))) => out.push(e),
                _ => return Err(err(base + i, "invalid escape sequence in a field selector")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        // Split on unescaped commas.
        let mut terms = Vec::new();
        let (mut start, mut escaped) = (0, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                ',' => {
                    terms.push((start, &s[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push((start, &s[start..]));
        for (base, term) in terms {
            // Find the first unescaped operator.
            let b = term.as_bytes();
            let mut i = 0;
            let mut found = None;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 1,
                    b'!' if b.get(i + 1) == Some(&b'=') => {
                        found = Some((i, 2, true));
                        break;
                    }
                    b'=' if b.get(i + 1) == Some(&b'=') => {
                        found = Some((i, 2, false));
                        break;
                    }
                    b'=' => {
                        found = Some((i, 1, false));
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let Some((at, len, negated)) = found else {
                return Err(err(
                    base,
                    format!("invalid selector: '{term}'; can't understand '{term}'"),
                ));
            };
            let field = unescape_field(term[..at].trim(), base)?;
            if field.is_empty() {
                return Err(err(base, "a field selector term needs a field name"));
            }
            let value = unescape_field(&term[at + len..], base + at + len)?;
            requirements.push(FieldRequirement {
                field,
                negated,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=")
                .replace('!', "\\!")
        };
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{}{}{}",
                esc(&r.field),
                if r.negated { "!=" } else { "=" },
                esc(&r.value)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_upstream() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("gen", "3")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("gen>2", true),
            ("gen<3", false),
            ("app=web,tier=back", false),
            ("app=", false),
            ("x in (a,)", false),
            // Keywords are values inside a value list.
            ("app in (in, notin, web)", true),
        ] {
            let s: Selector = sel.parse().unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
        assert!(!Selector::nothing().matches(&l));
    }

    #[test]
    fn errors_name_the_position() {
        for (sel, pos) in [
            ("app in web", 7),
            ("app=web,", 8),
            ("app=web tier", 8),
            ("in", 0),
            ("app ~ web", 4),
            ("Bad Key=x", 4),
            ("app in (a b)", 10),
            ("-bad=x", 0),
            ("app=bad value", 8),
        ] {
            let e = sel.parse::<Selector>().expect_err(sel);
            assert_eq!(e.position, pos, "{sel}: {e}");
        }
        assert!("app=".repeat(2).parse::<Selector>().is_err());
    }

    #[test]
    fn label_selector_struct_compiles_to_the_same_matcher() {
        let ls = LabelSelector {
            match_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            match_expressions: vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: vec!["front".into(), "back".into()],
            }],
        };
        let from_struct = ls.to_selector().unwrap();
        let from_text: Selector = "tier in (back,front),app=web".parse().unwrap();
        assert_eq!(from_struct, from_text);
        assert_eq!(from_struct.to_string(), "app=web,tier in (back,front)");
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Maybe".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        assert!(bad.to_selector().is_err());
        assert!(LabelSelector::default()
            .to_selector()
            .unwrap()
            .is_everything());
    }

    #[test]
    fn field_selectors_parse_escape_and_match() {
        let f: FieldSelector = r"metadata.name=a\,b,spec.nodeName!=".parse().unwrap();
        assert_eq!(f.requirements().len(), 2);
        assert_eq!(f.requirements()[0].value, "a,b");
        assert!(f.matches(|k| if k == "metadata.name" {
            Some("a,b")
        } else {
            Some("n1")
        }));
        assert!(!f.matches(|k| if k == "metadata.name" {
            Some("a,b")
        } else {
            None
        }));
        assert_eq!(f.to_string(), r"metadata.name=a\,b,spec.nodeName!=");
        assert_eq!(f.required_value("metadata.name"), Some("a,b"));
        assert!("nooperator".parse::<FieldSelector>().is_err());
        assert!("=x".parse::<FieldSelector>().is_err());
        assert!("".parse::<FieldSelector>().unwrap().is_empty());
    }
}
