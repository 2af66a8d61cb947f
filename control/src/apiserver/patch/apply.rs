//! Server-side apply and the managedFields bookkeeping of every write, after
//! structured-merge-diff as the reference apiserver uses it. [`server_side_apply`] merges an
//! applied configuration into the live object: the manager owns exactly the fields it applied,
//! fields it owned and no longer applies are removed (unless someone else owns them too), and a
//! field another manager owns with a different value is a [`Conflict`] unless `force` moves its
//! ownership. [`record_update`] does the bookkeeping for create/update/patch by other means: the
//! writer owns what it changed (operation `Update`), others lose it, removed fields go from all.
//! Both are pure: the caller passes the clock reading and stores the result.

use serde_json::{Map, Value};

use super::fieldset::{display, item_index, value_at, FieldPath, FieldSet, FieldSetError};
use super::schema::{ListType, Schema};

/// Who writes, and how the write is recorded in `metadata.managedFields`.
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    /// `fieldManager` (or the user agent's default, e.g. `kubectl-client-side-apply`).
    pub name: &'a str,
    /// The apiVersion the request used, e.g. `apps/v1`.
    pub api_version: &'a str,
    /// The subresource written (`status`, `scale`), if any.
    pub subresource: Option<&'a str>,
    /// The write time in RFC 3339 (`2024-01-02T03:04:05Z`).
    pub time: &'a str,
    /// Patch metadata of the kind.
    pub schema: Schema,
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager.
    pub manager: String,
    /// The field, e.g. `.spec.replicas`.
    pub field: String,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers (409 Conflict, `reason: Conflict`, one cause per field).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is not an object or breaks a list's keys (422).
    #[error("{0}")]
    Invalid(String),
}

impl From<FieldSetError> for ApplyError {
    fn from(e: FieldSetError) -> Self {
        ApplyError::Invalid(e.to_string())
    }
}

/// The reference's message: `Apply failed with 1 conflict: conflict with "m": .spec.replicas`.
fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let list: Vec<String> =
        conflicts.iter().map(|c| format!("conflict with \"{}\": {}", c.manager, c.field)).collect();
    format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, list.join("\n"))
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager")?,
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time").unwrap_or_default(),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        m.insert("time".into(), self.time.clone().into());
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(sub) = &self.subresource {
            m.insert("subresource".into(), sub.clone().into());
        }
        Value::Object(m)
    }

    /// The reference identifies Apply entries by manager and subresource, Update entries also
    /// by apiVersion.
    fn same_writer(&self, m: &Manager, operation: &str) -> bool {
        self.manager == m.name
            && self.operation == operation
            && self.subresource.as_deref() == m.subresource
            && (operation == "Apply" || self.api_version == m.api_version)
    }
}

fn entries(object: Option<&Value>) -> Vec<Entry> {
    object
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Entry::decode).collect())
        .unwrap_or_default()
}

fn store_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::encode).collect();
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Applies `applied` for manager `m` over `live` (`None`: the object is created), returning the
/// new object with its managedFields. Conflicts are returned unless `force`.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    m: &Manager,
    force: bool,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::Invalid("applied configuration must be an object".into()));
    }
    let applied = without_nulls(applied);
    let applied_set = FieldSet::of(&applied, m.schema)?;
    let mut all = entries(live);
    let empty = Value::Object(Map::new());
    let live_obj = live.unwrap_or(&empty);

    // Conflicts: fields others own whose live value differs from the applied one.
    let mut conflicts = Vec::new();
    for e in all.iter_mut().filter(|e| !e.same_writer(m, "Apply")) {
        let taken: Vec<FieldPath> = e
            .fields
            .0
            .intersection(&applied_set.0)
            .filter(|p| !is_item(p) && value_at(live_obj, m.schema, p) != value_at(&applied, m.schema, p))
            .cloned()
            .collect();
        if force {
            for p in &taken {
                e.fields.0.remove(p);
            }
        } else {
            conflicts.extend(taken.iter().map(|p| Conflict { manager: e.manager.clone(), field: display(p) }));
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }

    let mut merged = merge(live_obj, &applied, m.schema, "");
    // Fields this manager applied before and no longer applies, that nobody else owns, go.
    let previous = all.iter().find(|e| e.same_writer(m, "Apply")).map(|e| e.fields.clone()).unwrap_or_default();
    let others: Vec<&Entry> = all.iter().filter(|e| !e.same_writer(m, "Apply")).collect();
    let mut stale: Vec<&FieldPath> = previous
        .0
        .iter()
        .filter(|p| !applied_set.0.contains(*p) && !others.iter().any(|e| e.fields.covers_below(p)))
        .collect();
    // Deepest first, so removing an element never invalidates a later path.
    stale.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in stale {
        remove_path(&mut merged, m.schema, path);
    }

    all.retain(|e| !e.same_writer(m, "Apply"));
    all.push(Entry {
        manager: m.name.to_string(),
        operation: "Apply".into(),
        api_version: m.api_version.to_string(),
        time: m.time.to_string(),
        subresource: m.subresource.map(str::to_string),
        fields: applied_set,
    });
    store_entries(&mut merged, all);
    Ok(merged)
}

/// Records in `new.metadata.managedFields` that manager `m` wrote `new` over `old` with an
/// `Update` operation (create, PUT, or a JSON/merge/strategic patch).
pub fn record_update(old: Option<&Value>, new: &mut Value, m: &Manager) -> Result<(), ApplyError> {
    let empty = Value::Object(Map::new());
    let old_obj = old.unwrap_or(&empty);
    let new_set = FieldSet::of(new, m.schema)?;
    let old_set = FieldSet::of(old_obj, m.schema).unwrap_or_default();
    let changed: FieldSet = FieldSet(
        new_set
            .0
            .iter()
            .filter(|p| {
                // List elements count as changed only when they are new.
                if is_item(p) {
                    !old_set.0.contains(*p)
                } else {
                    value_at(old_obj, m.schema, p) != value_at(new, m.schema, p)
                }
            })
            .cloned()
            .collect(),
    );
    let mut all = entries(old);
    for e in &mut all {
        // Removed fields are owned by nobody; changed fields now belong to the writer.
        e.fields.0.retain(|p| new_set.0.contains(p) || still_present(new, m.schema, p));
        if !e.same_writer(m, "Update") {
            e.fields.0.retain(|p| !changed.0.contains(p));
        }
    }
    match all.iter_mut().find(|e| e.same_writer(m, "Update")) {
        Some(e) => {
            e.fields.0.extend(changed.0);
            e.time = m.time.to_string();
        }
        None if !changed.is_empty() => all.push(Entry {
            manager: m.name.to_string(),
            operation: "Update".into(),
            api_version: m.api_version.to_string(),
            time: m.time.to_string(),
            subresource: m.subresource.map(str::to_string),
            fields: changed,
        }),
        None => {}
    }
    store_entries(new, all);
    Ok(())
}

/// A path that is in no field set of `new` but still resolves (e.g. an owned map that became
/// empty) stays owned.
fn still_present(new: &Value, schema: Schema, path: &[String]) -> bool {
    value_at(new, schema, path).is_some()
}

/// True for a path naming a list element (`k:` or `v:`), whose value is its fields.
fn is_item(path: &[String]) -> bool {
    path.last().is_some_and(|s| s.starts_with("k:") || s.starts_with("v:"))
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(l) => Value::Array(l.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges `applied` into `live` field by field: structs and granular maps recursively, list
/// maps by key (live order kept, new elements appended), sets by union, the rest replaced.
fn merge(live: &Value, applied: &Value, parent: Schema, name: &str) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if name.is_empty() || !parent.atomic(name) => {
            let schema = if name.is_empty() { parent } else { parent.child(name) };
            let mut out = l.clone();
            for (k, v) in a {
                let merged = merge(l.get(k).unwrap_or(&Value::Null), v, schema, k);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match parent.list(name).ssa {
            ListType::Atomic => applied.clone(),
            ListType::Set => {
                let mut out = l.clone();
                out.extend(a.iter().filter(|v| !l.contains(v)).cloned());
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let elem = parent.child(name);
                let mut out = l.clone();
                for item in a {
                    let Ok(seg) = super::fieldset::seg_key(item, keys) else { continue };
                    match item_index(&out, ListType::Map(keys), &seg) {
                        Some(i) => out[i] = merge(&out[i], item, elem, ""),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

/// Removes the field or list element at `path` from `object`, if present.
fn remove_path(object: &mut Value, schema: Schema, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    // The schema of the container holding `last` and the name of the list field, if any.
    let mut cur = &mut *object;
    let mut parent = schema;
    let mut name = String::new();
    for seg in parent_path {
        if let Some(field) = seg.strip_prefix("f:") {
            if !name.is_empty() {
                parent = parent.child(&name);
            }
            let Some(next) = cur.get_mut(field) else { return };
            cur = next;
            name = field.to_string();
        } else {
            let list = parent.list(&name).ssa;
            let Some(items) = cur.as_array_mut() else { return };
            let Some(i) = item_index(items, list, seg) else { return };
            cur = &mut items[i];
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Value::Object(map) = cur {
            map.remove(field);
        }
    } else if let Value::Array(items) = cur {
        if let Some(i) = item_index(items, parent.list(&name).ssa, last) {
            items.remove(i);
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
