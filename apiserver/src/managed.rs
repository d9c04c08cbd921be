//! Field management: `metadata.managedFields` and server-side apply.
//!
//! Every write records which manager set which fields (`FieldsV1` sets of paths, as upstream's
//! structured-merge-diff writes them: `f:name` for fields, `k:{"name":"web"}` for items of
//! keyed lists, `v:"x"` for items of sets). An apply (`PATCH` with
//! `application/apply-patch+yaml`) merges the manager's configuration into the object, removes
//! the fields the manager applied before and no longer does (unless someone else manages
//! them), and reports conflicts with other managers' fields whose values it would change,
//! unless forced.

use crate::object::Object;
use bosun_api_types::patch_meta::{type_info, FieldInfo, Shape};
use bosun_api_types::Time;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// A path to a managed field, one encoded element per step (`f:spec`, `k:{"name":"a"}`).
pub(crate) type FieldPath = Vec<String>;

/// A set of managed field paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields that are the server's, never managed.
const RESET_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// What part of an object a write manages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Part {
    /// Everything but status (resources with a status subresource) or everything.
    Main { status_is_separate: bool },
    /// Only status (writes through `/status`).
    Status,
}

#[derive(Clone, Copy)]
enum Kind {
    Struct(&'static str),
    Shape(Shape),
}

fn kind_of(shape: Shape) -> Kind {
    match shape {
        Shape::Object(name) => Kind::Struct(name),
        other => Kind::Shape(other),
    }
}

/// How a list field's items are identified.
enum ListKind {
    Atomic,
    Set,
    Map(Vec<&'static str>),
}

fn list_kind(field: Option<&FieldInfo>, item: Shape) -> ListKind {
    let Some(f) = field else {
        return ListKind::Atomic;
    };
    match f.list_type {
        Some("atomic") => ListKind::Atomic,
        Some("set") => ListKind::Set,
        Some("map") => {
            if f.list_map_keys.is_empty() {
                f.patch_merge_key
                    .map_or(ListKind::Atomic, |k| ListKind::Map(vec![k]))
            } else {
                ListKind::Map(f.list_map_keys.to_vec())
            }
        }
        _ => {
            let merge = f
                .patch_strategy
                .is_some_and(|s| s.split(',').any(|p| p == "merge"));
            match (merge, f.patch_merge_key, item) {
                (true, Some(k), _) => ListKind::Map(vec![k]),
                (true, None, Shape::String | Shape::Integer | Shape::Number | Shape::Boolean) => {
                    ListKind::Set
                }
                _ => ListKind::Atomic,
            }
        }
    }
}

fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m: Vec<(&str, &Value)> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|v| (*k, v)))
        .collect();
    if m.is_empty() {
        return None;
    }
    m.sort_by(|a, b| a.0.cmp(b.0));
    let obj: Map<String, Value> = m
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    Some(format!("k:{}", Value::Object(obj)))
}

struct Walker<'a> {
    out: &'a mut FieldSet,
    path: FieldPath,
}

impl Walker<'_> {
    fn member(&mut self) {
        self.out.insert(self.path.clone());
    }

    fn value(&mut self, v: &Value, kind: Kind, field: Option<&FieldInfo>) {
        match (kind, v) {
            (Kind::Struct(name), Value::Object(m)) => {
                let info = type_info(name);
                if info.is_some_and(|t| t.map_type == Some("atomic")) || m.is_empty() {
                    self.member();
                    return;
                }
                for (k, x) in m {
                    let f = info.and_then(|t| t.field(k));
                    self.path.push(format!("f:{k}"));
                    match f {
                        Some(f) => self.value(x, kind_of(f.shape), Some(f)),
                        None => {
                            self.value(x, Kind::Shape(Shape::Any), None);
                            self.member();
                        }
                    }
                    self.path.pop();
                }
            }
            (Kind::Shape(Shape::Map(inner)), Value::Object(m)) => {
                if field.is_some_and(|f| f.map_type == Some("atomic")) {
                    self.member();
                    return;
                }
                for (k, x) in m {
                    self.path.push(format!("f:{k}"));
                    self.value(x, kind_of(*inner), None);
                    self.member();
                    self.path.pop();
                }
            }
            (Kind::Shape(Shape::Any), Value::Object(m)) if !m.is_empty() => {
                for (k, x) in m {
                    self.path.push(format!("f:{k}"));
                    self.value(x, Kind::Shape(Shape::Any), None);
                    self.member();
                    self.path.pop();
                }
            }
            (Kind::Shape(Shape::Array(inner)), Value::Array(items)) => {
                match list_kind(field, *inner) {
                    ListKind::Atomic => self.member(),
                    ListKind::Set => {
                        for x in items {
                            self.path.push(format!("v:{x}"));
                            self.member();
                            self.path.pop();
                        }
                    }
                    ListKind::Map(keys) => {
                        for x in items {
                            let Some(k) = item_key(x, &keys) else {
                                continue;
                            };
                            self.path.push(k);
                            let item_kind = kind_of(*inner);
                            let atomic = matches!(item_kind, Kind::Struct(n) if type_info(n).is_some_and(|t| t.map_type == Some("atomic")));
                            if !atomic {
                                self.value(x, item_kind, None);
                            }
                            self.member();
                            self.path.pop();
                        }
                    }
                }
            }
            _ => self.member(),
        }
    }
}

/// The fields an object (or an apply configuration) sets, as managed-field paths.
pub(crate) fn fieldset(obj: &Object, type_name: Option<&str>, part: Part) -> FieldSet {
    let mut out = FieldSet::new();
    let info = type_name.and_then(type_info);
    let mut w = Walker {
        out: &mut out,
        path: Vec::new(),
    };
    for (k, v) in obj {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let is_status = k == "status";
        match part {
            Part::Status if !is_status => continue,
            Part::Main {
                status_is_separate: true,
            } if is_status => continue,
            _ => {}
        }
        w.path.push(format!("f:{k}"));
        if k == "metadata" {
            if let Value::Object(meta) = v {
                let meta_info = type_info("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
                for (mk, mv) in meta {
                    if RESET_META.contains(&mk.as_str()) {
                        continue;
                    }
                    let f = meta_info.and_then(|t| t.field(mk));
                    w.path.push(format!("f:{mk}"));
                    match f {
                        Some(f) => w.value(mv, kind_of(f.shape), Some(f)),
                        None => w.value(mv, Kind::Shape(Shape::Any), None),
                    }
                    w.path.pop();
                }
            }
        } else {
            match info.and_then(|t| t.field(k)) {
                Some(f) => w.value(v, kind_of(f.shape), Some(f)),
                None => {
                    w.value(v, Kind::Shape(Shape::Any), None);
                    w.member();
                }
            }
        }
        w.path.pop();
    }
    out
}

/// The value at a managed-field path, if the object has it.
pub(crate) fn value_at<'a>(root: &'a Object, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = root.get(first.strip_prefix("f:")?)?;
    for el in rest {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(name) = el.strip_prefix("f:") {
        return cur.get(name);
    }
    if let Some(key) = el.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(key).ok()?;
        return cur
            .as_array()?
            .iter()
            .find(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    if let Some(v) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return cur.as_array()?.iter().find(|x| **x == want);
    }
    None
}

/// Removes the field or item at a managed-field path.
pub(crate) fn remove_at(root: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for el in parents {
        let next = if let Some(name) = el.strip_prefix("f:") {
            cur.get_mut(name)
        } else if let Some(key) = el.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.shift_remove(name);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(want), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(key),
            cur.as_array_mut(),
        ) {
            a.retain(|item| !want.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            a.retain(|x| *x != want);
        }
    }
}

/// A set as `fieldsV1` JSON: nested objects, `"."` marking a node that is itself a member.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: std::collections::BTreeMap<String, Node>,
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            cur = cur.children.entry(el.clone()).or_default();
        }
        cur.member = true;
    }
    render(&root)
}

/// A `fieldsV1` JSON object as a set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            if child.as_object().is_some_and(Map::is_empty) {
                out.insert(path.clone());
            } else {
                walk(child, path, out);
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: Option<Value>,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The entries of an object's `metadata.managedFields`.
pub(crate) fn entries(obj: &Object) -> Vec<Entry> {
    obj.get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    Some(Entry {
                        manager: e.get("manager")?.as_str()?.to_owned(),
                        operation: e
                            .get("operation")
                            .and_then(Value::as_str)
                            .unwrap_or("Update")
                            .to_owned(),
                        api_version: e
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        time: e.get("time").cloned(),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes entries back into `metadata.managedFields` (dropping empty ones).
pub(crate) fn set_entries(obj: &mut Object, list: &[Entry]) {
    let values: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            if let Some(t) = &e.time {
                m.insert("time".into(), t.clone());
            }
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), to_fields_v1(&e.fields));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), json!(s));
            }
            Value::Object(m)
        })
        .collect();
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        if values.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(values));
        }
    }
}

/// Who is writing, and what.
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) type_name: Option<&'a str>,
    pub(crate) part: Part,
}

impl Writer<'_> {
    fn subresource(&self) -> Option<&'static str> {
        (self.part == Part::Status).then_some("status")
    }
}

/// Records an update (create, replace or patch) by `w`: the manager gains the fields whose
/// values it set or changed; every manager loses fields the new object no longer has.
pub(crate) fn track_update(old: Option<&Object>, new: &mut Object, w: &Writer<'_>) {
    let mut list = old.map(entries).unwrap_or_default();
    // One walk: every field the object has, and of those the ones this write manages.
    let present = fieldset(
        new,
        w.type_name,
        Part::Main {
            status_is_separate: false,
        },
    );
    let in_status = |p: &FieldPath| p.first().is_some_and(|f| f == "f:status");
    let all_new: FieldSet = match w.part {
        Part::Status => present.iter().filter(|p| in_status(p)).cloned().collect(),
        Part::Main {
            status_is_separate: true,
        } => present.iter().filter(|p| !in_status(p)).cloned().collect(),
        Part::Main {
            status_is_separate: false,
        } => present.clone(),
    };
    let changed: FieldSet = all_new
        .iter()
        .filter(|p| {
            let before = old.and_then(|o| value_at(o, p));
            let after = value_at(new, p);
            match (before, after) {
                (None, _) => true,
                (Some(b), Some(a)) => !has_children(&all_new, p) && a != b,
                (Some(_), None) => false,
            }
        })
        .cloned()
        .collect();
    for e in &mut list {
        e.fields.retain(|p| present.contains(p));
    }
    let sub = w.subresource();
    if !changed.is_empty() {
        let now = json!(Time::now());
        match list
            .iter_mut()
            .find(|e| e.same_owner(w.manager, "Update", sub))
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = Some(now);
                e.api_version = w.api_version.to_owned();
            }
            None => list.push(Entry {
                manager: w.manager.to_owned(),
                operation: "Update".into(),
                api_version: w.api_version.to_owned(),
                time: Some(now),
                subresource: sub.map(str::to_owned),
                fields: changed,
            }),
        }
    }
    // A field has one updater: the latest one takes it from other updaters (appliers keep
    // theirs, which is how conflicts arise on their next apply).
    let latest: FieldSet = list
        .iter()
        .find(|e| e.same_owner(w.manager, "Update", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for e in &mut list {
        if e.operation == "Update" && !e.same_owner(w.manager, "Update", sub) {
            e.fields.retain(|p| !latest.contains(p));
        }
    }
    set_entries(new, &list);
}

fn has_children(set: &FieldSet, p: &FieldPath) -> bool {
    set.range(p.clone()..)
        .nth(1)
        .is_some_and(|next| next.len() > p.len() && next.starts_with(p))
}

/// A field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) manager: String,
    pub(crate) api_version: String,
    pub(crate) path: String,
}

/// `.spec.containers[name="web"].image`, as upstream names conflicting fields.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// The result of merging an apply configuration.
pub(crate) struct Applied {
    pub(crate) object: Object,
}

/// Applies `config` for `w` to `current` (`None` when creating): conflicts with other managers
/// are errors unless `force`, which takes the fields from them.
pub(crate) fn apply(
    current: Option<&Object>,
    config: &Object,
    w: &Writer<'_>,
    force: bool,
) -> Result<Applied, Vec<Conflict>> {
    let mut list = current.map(entries).unwrap_or_default();
    let sub = w.subresource();
    let applied = fieldset(config, w.type_name, w.part);
    let mut conflicts = Vec::new();
    if let Some(cur) = current {
        for e in list
            .iter()
            .filter(|e| !e.same_owner(w.manager, "Apply", sub))
        {
            for p in applied.intersection(&e.fields) {
                if has_children(&applied, p) {
                    continue;
                }
                if value_at(cur, p) != value_at(config, p) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        path: display_path(p),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in list
            .iter_mut()
            .filter(|e| !e.same_owner(w.manager, "Apply", sub))
        {
            e.fields.retain(|p| {
                has_children(&applied, p) || !applied.contains(p) || {
                    let cur = current.and_then(|c| value_at(c, p));
                    cur == value_at(config, p)
                }
            });
        }
    }
    // Merge the configuration into the live object.
    let config_value = Value::Object(
        config
            .iter()
            .filter(|(_, x)| !x.is_null())
            .map(|(k, x)| (k.clone(), strip_nulls(x)))
            .collect(),
    );
    let base = current.cloned().unwrap_or_default();
    let mut merged = match w.type_name {
        Some(t) => bosun_api_types::patch::apply_merge(&Value::Object(base), &config_value, t)
            .unwrap_or_else(|_| config_value.clone()),
        None => {
            let mut b = Value::Object(base);
            bosun_api_types::patch::merge_patch(&mut b, &config_value);
            b
        }
    };
    // Fields this manager applied before and no longer does, and nobody else manages, go.
    let previous = list
        .iter()
        .find(|e| e.same_owner(w.manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = list
        .iter()
        .filter(|e| !e.same_owner(w.manager, "Apply", sub))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut removed: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied.contains(*p))
        .filter(|p| !others.iter().any(|o| o.starts_with(p)))
        .collect();
    // Deepest first, so removing an item does not disturb the paths of its fields.
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removed {
        remove_at(&mut merged, p);
    }
    let Value::Object(mut object) = merged else {
        return Ok(Applied {
            object: config.clone(),
        });
    };
    let now = json!(Time::now());
    match list
        .iter_mut()
        .find(|e| e.same_owner(w.manager, "Apply", sub))
    {
        Some(e) => {
            if e.fields != applied {
                e.time = Some(now);
            }
            e.fields = applied;
            e.api_version = w.api_version.to_owned();
        }
        None => list.push(Entry {
            manager: w.manager.to_owned(),
            operation: "Apply".into(),
            api_version: w.api_version.to_owned(),
            time: Some(now),
            subresource: sub.map(str::to_owned),
            fields: applied,
        }),
    }
    set_entries(&mut object, &list);
    Ok(Applied { object })
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), strip_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => Object::new(),
        }
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1",
            type_name: Some(DEPLOY),
            part: Part::Main {
                status_is_separate: true,
            },
        }
    }

    #[test]
    fn fieldsets_follow_list_and_map_types() {
        let d = obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
            "status": {"replicas": 1}}));
        let set = fieldset(
            &d,
            Some(DEPLOY),
            Part::Main {
                status_is_separate: true,
            },
        );
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:selector": {},
                              "f:template": {"f:spec": {"f:containers": {
                                  "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_conflicts_removes_and_forces() {
        let config = obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2}}));
        let created = apply(None, &config, &writer("alice"), false)
            .ok()
            .unwrap()
            .object;
        assert_eq!(created["spec"]["replicas"], 2);
        // bob updates replicas: he now manages it.
        let mut bumped = created.clone();
        bumped["spec"]["replicas"] = json!(5);
        track_update(Some(&created), &mut bumped, &writer("bob"));
        let es = entries(&bumped);
        assert!(es
            .iter()
            .any(|e| e.manager == "bob" && e.operation == "Update"));
        // alice re-applies replicas 2: conflict with bob.
        let err = apply(Some(&bumped), &config, &writer("alice"), false)
            .err()
            .unwrap();
        assert_eq!(err[0].manager, "bob");
        assert_eq!(err[0].path, ".spec.replicas");
        // Forced, alice takes it; bob no longer manages it.
        let forced = apply(Some(&bumped), &config, &writer("alice"), true)
            .ok()
            .unwrap()
            .object;
        assert_eq!(forced["spec"]["replicas"], 2);
        assert!(!entries(&forced).iter().any(|e| e.manager == "bob"));
        // alice drops label b from her config: it is removed.
        let mut smaller = config.clone();
        smaller["metadata"]["labels"] = json!({"a": "1"});
        let out = apply(Some(&forced), &smaller, &writer("alice"), false)
            .ok()
            .unwrap()
            .object;
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
        // Re-applying the same values another manager holds is no conflict.
        let same = apply(
            Some(&bumped),
            &obj(json!({"spec": {"replicas": 5}})),
            &writer("carol"),
            false,
        );
        assert!(same.is_ok());
    }

    #[test]
    fn display_paths_read_like_upstream() {
        let p = vec![
            "f:spec".to_owned(),
            "f:containers".to_owned(),
            "k:{\"name\":\"web\"}".to_owned(),
            "f:image".to_owned(),
        ];
        assert_eq!(display_path(&p), ".spec.containers[name=\"web\"].image");
    }
}
