//! Field sets: which fields of an object a manager owns, in the FieldsV1 encoding of
//! `metadata.managedFields[].fieldsV1` (structured-merge-diff's `fieldpath.Set`). A path is a
//! list of segments: `f:<field>` for a struct or map field, `k:{"name":"x"}` for the element of
//! a list keyed by its map keys, `v:<json>` for a member of a set; in the JSON tree `.` marks
//! that the element itself is in the set, not only fields below it. [`FieldSet::of`] derives
//! the set an object's content implies, using the list types of the [`Schema`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::schema::{ListType, Schema};

/// One path from the object root, e.g. `["f:spec", "f:containers", "k:{\"name\":\"a\"}"]`.
pub type FieldPath = Vec<String>;

/// A set of owned field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<FieldPath>);

/// Why an object's content cannot be turned into a field set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldSetError {
    /// Where, in the `.spec.ports[0]` style.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Fields never owned by anyone: identity and server-maintained metadata (the reference's
/// managedfields `stripMeta`).
const STRIPPED_META: &[&str] = &[
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

impl FieldSet {
    /// The fields `object` sets: every leaf, every atomic value, every list element.
    pub fn of(object: &Value, schema: Schema) -> Result<FieldSet, FieldSetError> {
        let mut out = BTreeSet::new();
        if let Value::Object(map) = object {
            for (k, v) in map {
                if k == "apiVersion" || k == "kind" {
                    continue;
                }
                if k == "metadata" {
                    if let Value::Object(meta) = v {
                        let meta: Map<String, Value> = meta
                            .iter()
                            .filter(|(k, _)| !STRIPPED_META.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        if !meta.is_empty() {
                            collect(&Value::Object(meta), schema, k, vec![seg_field(k)], &mut out)?;
                        }
                    }
                    continue;
                }
                collect(v, schema, k, vec![seg_field(k)], &mut out)?;
            }
        }
        Ok(FieldSet(out))
    }

    /// Decodes a `fieldsV1` tree; malformed parts are ignored (the reference rejects the whole
    /// update, which the caller does by comparing round-trips if it wants to).
    pub fn from_fields_v1(tree: &Value) -> FieldSet {
        fn walk(tree: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
            let Value::Object(map) = tree else { return };
            for (k, child) in map {
                if k == "." {
                    if !prefix.is_empty() {
                        out.insert(prefix.clone());
                    }
                    continue;
                }
                prefix.push(k.clone());
                if child.as_object().is_some_and(Map::is_empty) {
                    out.insert(prefix.clone());
                } else {
                    walk(child, prefix, out);
                }
                prefix.pop();
            }
        }
        let mut out = BTreeSet::new();
        walk(tree, &mut Vec::new(), &mut out);
        FieldSet(out)
    }

    /// Encodes the set as a `fieldsV1` tree.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<String, Node>,
        }
        fn encode(node: &Node) -> Value {
            let mut map: Map<String, Value> =
                node.children.iter().map(|(k, n)| (k.clone(), encode(n))).collect();
            // A member that also has children is marked with "."; a leaf member is just `{}`.
            if node.member && !map.is_empty() {
                map.insert(".".to_string(), Value::Object(Map::new()));
            }
            Value::Object(map)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for seg in path {
                node = node.children.entry(seg.clone()).or_default();
            }
            node.member = true;
        }
        encode(&root)
    }

    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `path` or a path below it is in the set.
    pub fn covers_below(&self, path: &[String]) -> bool {
        self.0.range(path.to_vec()..).next().is_some_and(|p| p.starts_with(path))
    }
}

fn collect(
    value: &Value,
    parent: Schema,
    name: &str,
    path: FieldPath,
    out: &mut BTreeSet<FieldPath>,
) -> Result<(), FieldSetError> {
    match value {
        Value::Object(map) if !map.is_empty() && !parent.atomic(name) => {
            let schema = parent.child(name);
            for (k, v) in map {
                let mut p = path.clone();
                p.push(seg_field(k));
                collect(v, schema, k, p, out)?;
            }
        }
        Value::Array(items) if !items.is_empty() => match parent.list(name).ssa {
            ListType::Atomic => {
                out.insert(path);
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(seg_value(item));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                let schema = parent.child(name);
                for (i, item) in items.iter().enumerate() {
                    let seg = seg_key(item, keys).map_err(|reason| FieldSetError {
                        path: format!("{}[{i}]", display(&path)),
                        reason,
                    })?;
                    let mut p = path.clone();
                    p.push(seg);
                    out.insert(p.clone());
                    if let Value::Object(map) = item {
                        for (k, v) in map {
                            let mut q = p.clone();
                            q.push(seg_field(k));
                            collect(v, schema, k, q, out)?;
                        }
                    }
                }
            }
        },
        _ => {
            out.insert(path);
        }
    }
    Ok(())
}

/// `f:<name>`.
pub fn seg_field(name: &str) -> String {
    format!("f:{name}")
}

/// `v:<json>` for a set member.
pub fn seg_value(value: &Value) -> String {
    format!("v:{value}")
}

/// `k:{...}` for a list-map element: its key fields, in key-name order, as compact JSON.
/// A missing `protocol` key takes its API default `TCP`, as the reference does for ports.
pub fn seg_key(item: &Value, keys: &[&str]) -> Result<String, String> {
    let Value::Object(map) = item else {
        return Err("associative list element is not an object".to_string());
    };
    let mut id = Map::new();
    for key in keys {
        match map.get(*key) {
            Some(v) if !v.is_null() => {
                id.insert(key.to_string(), v.clone());
            }
            _ if *key == "protocol" => {
                id.insert(key.to_string(), Value::String("TCP".to_string()));
            }
            _ => {
                return Err(format!(
                    "associative list with keys has an element that omits key field {key:?}"
                ))
            }
        }
    }
    Ok(format!("k:{}", Value::Object(id)))
}

/// The value at `path` in `object`, navigating lists by the schema's list types.
pub fn value_at<'a>(object: &'a Value, schema: Schema, path: &[String]) -> Option<&'a Value> {
    let mut cur = object;
    let mut parent = schema;
    let mut name = String::new();
    for seg in path {
        if let Some(field) = seg.strip_prefix("f:") {
            if !name.is_empty() {
                parent = parent.child(&name);
            }
            cur = cur.get(field)?;
            name = field.to_string();
        } else {
            let items = cur.as_array()?;
            cur = find_item(items, parent.list(&name).ssa, seg)?;
        }
    }
    Some(cur)
}

/// The index of the element of `items` that segment `seg` names.
pub fn item_index(items: &[Value], list: ListType, seg: &str) -> Option<usize> {
    items.iter().position(|item| match list {
        ListType::Map(keys) => seg_key(item, keys).is_ok_and(|k| k == seg),
        _ => seg_value(item) == seg,
    })
}

fn find_item<'a>(items: &'a [Value], list: ListType, seg: &str) -> Option<&'a Value> {
    item_index(items, list, seg).map(|i| &items[i])
}

/// A path in the reference's conflict-message style: `.spec.containers[name="a"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_else(|_| vec![k.to_string()]);
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else {
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Schema {
        Schema::for_kind("apps", "Deployment")
    }

    #[test]
    fn list_map_elements_get_k_keys_and_a_dot_marker() {
        // The managedFields of `kubectl apply --server-side` on a Deployment (reference output):
        // containers are `k:{"name":...}` with ".", leaves are `{}`, identity metadata is absent.
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let set = FieldSet::of(&obj, deployment()).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let tree = json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {".": {}, "f:x": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}});
        assert_eq!(FieldSet::from_fields_v1(&tree).to_fields_v1(), tree);
    }

    #[test]
    fn ports_are_keyed_by_port_and_defaulted_protocol() {
        // ServiceSpec.ports listMapKey=port,protocol; protocol defaults to TCP.
        let svc = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        let set = FieldSet::of(&svc, Schema::for_kind("", "Service")).unwrap();
        let keys: Vec<&String> = set.0.iter().filter(|p| p.len() == 3).map(|p| &p[2]).collect();
        assert_eq!(
            keys,
            ["k:{\"port\":53,\"protocol\":\"UDP\"}", "k:{\"port\":80,\"protocol\":\"TCP\"}"]
        );
    }

    #[test]
    fn atomic_lists_and_selectors_are_owned_whole() {
        // tolerations listType=atomic, LabelSelector structType=atomic, finalizers listType=set.
        let obj = json!({"metadata": {"finalizers": ["f"]},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"spec": {"tolerations": [{"key": "k"}]}}}});
        let set = FieldSet::of(&obj, deployment()).unwrap();
        let want: BTreeSet<FieldPath> = [
            vec!["f:metadata", "f:finalizers", "v:\"f\""],
            vec!["f:spec", "f:selector"],
            vec!["f:spec", "f:template", "f:spec", "f:tolerations"],
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect())
        .collect();
        assert_eq!(set.0, want);
    }

    #[test]
    fn keyed_element_without_its_key_is_an_error() {
        // structured-merge-diff: "associative list with keys has an element that omits key field".
        let obj = json!({"spec": {"template": {"spec": {"containers": [{"image": "i"}]}}}});
        let err = FieldSet::of(&obj, deployment()).unwrap_err();
        assert_eq!(err.path, ".spec.template.spec.containers[0]");
        assert!(err.reason.contains("omits key field \"name\""));
    }

    #[test]
    fn value_at_follows_keys_and_paths_display_like_the_reference() {
        let obj =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let path: FieldPath =
            ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]
                .into_iter()
                .map(String::from)
                .collect();
        assert_eq!(value_at(&obj, deployment(), &path), Some(&json!("i")));
        assert_eq!(display(&path), ".spec.template.spec.containers[name=\"c\"].image");
    }
}
