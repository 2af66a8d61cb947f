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
    /// The owning manager's name.
    pub manager: String,
    /// Its operation, `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion it wrote with.
    pub api_version: String,
    /// The subresource it wrote, if any.
    pub subresource: Option<String>,
    /// The field, e.g. `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    /// The owner as the reference prints it: `"m"`, `"m" with subresource "status"`, and for
    /// Update owners ` using apps/v1` after it.
    pub fn owner(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// The message of this conflict's `FieldManagerConflict` status cause.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.owner())
    }
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

/// The reference's 409 message: one conflict on one line, several grouped by owner.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.owner(), c.field);
    }
    let mut sorted: Vec<&Conflict> = conflicts.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(
            &b.manager,
            &b.operation,
            &b.api_version,
            &b.subresource,
        ))
    });
    let mut lines = Vec::new();
    let mut last = String::new();
    for c in sorted {
        if c.owner() != last {
            last = c.owner();
            lines.push(format!("conflicts with {last}:"));
        }
        lines.push(format!("- {}", c.field));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
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
    let list: Vec<Value> =
        entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::encode).collect();
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
    if live.is_some() && all.is_empty() {
        // An object nobody manages yet (written before field tracking, or with its managedFields
        // cleared): the reference gives its current fields to `before-first-apply` so that the
        // first apply conflicts with values it would silently overwrite.
        all.push(Entry {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: m.api_version.to_string(),
            time: m.time.to_string(),
            subresource: None,
            fields: FieldSet::of(live_obj, m.schema).unwrap_or_default(),
        });
    }

    // Conflicts: fields others own whose live value differs from the applied one.
    let mut conflicts = Vec::new();
    for e in all.iter_mut().filter(|e| !e.same_writer(m, "Apply")) {
        let taken: Vec<FieldPath> = e
            .fields
            .0
            .intersection(&applied_set.0)
            .filter(|p| {
                !is_item(p) && value_at(live_obj, m.schema, p) != value_at(&applied, m.schema, p)
            })
            .cloned()
            .collect();
        if force {
            for p in &taken {
                e.fields.0.remove(p);
            }
        } else {
            conflicts.extend(taken.iter().map(|p| Conflict {
                manager: e.manager.clone(),
                operation: e.operation.clone(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
                field: display(p),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }

    let mut merged = merge(live_obj, &applied, m.schema, "");
    // Fields this manager applied before and no longer applies, that nobody else owns, go.
    let previous = all
        .iter()
        .find(|e| e.same_writer(m, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: Vec<&Entry> = all.iter().filter(|e| !e.same_writer(m, "Apply")).collect();
    let stale: Vec<&FieldPath> = previous
        .0
        .iter()
        .filter(|p| !applied_set.0.contains(*p) && !others.iter().any(|e| e.fields.covers_below(p)))
        .collect();
    // A path under another stale path goes with it; removing it first would strip the key
    // fields that identify its list element.
    let roots: Vec<&FieldPath> = stale
        .iter()
        .filter(|p| !stale.iter().any(|q| q.len() < p.len() && p.starts_with(q)))
        .copied()
        .collect();
    for path in roots {
        remove_path(&mut merged, m.schema, path);
    }

    // A no-op apply (same content, same set) keeps the entry's time, like the reference's
    // managedFieldsUpdater, so the object stays byte-identical and the caller can skip the write.
    let unchanged = without_managed_fields(&merged) == without_managed_fields(live_obj);
    let time = match all.iter().find(|e| e.same_writer(m, "Apply")) {
        Some(e) if unchanged && e.fields == applied_set && e.api_version == m.api_version => {
            e.time.clone()
        }
        _ => m.time.to_string(),
    };
    all.retain(|e| !e.same_writer(m, "Apply"));
    all.push(Entry {
        manager: m.name.to_string(),
        operation: "Apply".into(),
        api_version: m.api_version.to_string(),
        time,
        subresource: m.subresource.map(str::to_string),
        fields: applied_set,
    });
    store_entries(&mut merged, all);
    Ok(merged)
}

/// The annotation client-side `kubectl apply` keeps its configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager whose applies take over from client-side apply (the reference limits the
/// upgrade to it; other managers opt out by their name).
const UPGRADING_MANAGER: &str = "kubectl";

/// [`server_side_apply`] with the reference's upgrade from client-side apply: when `kubectl`'s
/// apply conflicts only on fields the live object's last-applied configuration still holds at
/// their live values, the apply is forced; and an object that carries that annotation gets it
/// rewritten to the applied configuration, so a later client-side apply still computes the
/// right patch.
pub fn server_side_apply_upgrading(
    live: Option<&Value>,
    applied: &Value,
    m: &Manager,
    force: bool,
) -> Result<Value, ApplyError> {
    let mut result = match server_side_apply(live, applied, m, force) {
        Err(ApplyError::Conflicts(conflicts)) if m.name == UPGRADING_MANAGER => {
            let allowed = live.map(|l| last_applied_fields(l, m.schema)).unwrap_or_default();
            let remaining: Vec<Conflict> =
                conflicts.into_iter().filter(|c| !allowed.contains(&c.field)).collect();
            if !remaining.is_empty() {
                return Err(ApplyError::Conflicts(remaining));
            }
            server_side_apply(live, applied, m, true)?
        }
        other => other?,
    };
    let annotated = live
        .and_then(|l| l.pointer("/metadata/annotations"))
        .is_some_and(|a| a.get(LAST_APPLIED).is_some());
    if m.name == UPGRADING_MANAGER && annotated {
        let mut config = applied.clone();
        if let Some(Value::Object(a)) = config.pointer_mut("/metadata/annotations") {
            a.remove(LAST_APPLIED);
        }
        let text = serde_json::to_string(&config).unwrap_or_default();
        if let Some(Value::Object(a)) = result.pointer_mut("/metadata/annotations") {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    Ok(result)
}

/// The fields (as conflicts display them) of the live object's last-applied configuration
/// whose values are still the live ones.
fn last_applied_fields(live: &Value, schema: Schema) -> std::collections::BTreeSet<String> {
    let text = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str);
    let Some(config) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()) else {
        return Default::default();
    };
    let Ok(set) = FieldSet::of(&config, schema) else { return Default::default() };
    set.0
        .iter()
        .filter(|p| value_at(live, schema, p) == value_at(&config, schema, p))
        .map(|p| display(p))
        .collect()
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
    let mut all = initial_entries(old, new, m);
    for e in &mut all {
        // Removed fields are owned by nobody; changed fields now belong to the writer.
        e.fields.0.retain(|p| still_present(new, m.schema, p));
        if !e.same_writer(m, "Update") {
            e.fields.0.retain(|p| !changed.0.contains(p));
        }
    }
    match all.iter_mut().find(|e| e.same_writer(m, "Update")) {
        // The reference moves the time whenever this write changed a field.
        Some(e) if !changed.is_empty() => {
            e.fields.0.extend(changed.0);
            e.time = m.time.to_string();
        }
        Some(_) => {}
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

/// The entries an update starts from: those the client sent when it changed them on the main
/// resource (how kubectl moves `kubectl-client-side-apply` ownership to its apply manager), an
/// empty list when it sent only empty entries (`[{}]`, the documented way to clear them),
/// otherwise the stored ones.
fn initial_entries(old: Option<&Value>, new: &Value, m: &Manager) -> Vec<Entry> {
    let sent = new.pointer("/metadata/managedFields").and_then(Value::as_array);
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields")).and_then(Value::as_array);
    match sent {
        Some(list) if m.subresource.is_none() && !list.is_empty() && Some(list) != stored => {
            let decoded = entries(Some(new));
            if decoded.is_empty() && list.iter().all(|e| e.as_object().is_some_and(Map::is_empty)) {
                return Vec::new();
            }
            if !decoded.is_empty() {
                return decoded;
            }
            entries(old)
        }
        _ => entries(old),
    }
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

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        meta.remove("managedFields");
    }
    v
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(l) => Value::Array(l.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges `applied` into `live` field by field: structs and granular maps recursively, list
/// maps by key and sets by union (ordered by [`merge_items`]), the rest replaced.
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
            list => {
                let elem = parent.child(name);
                let seg = |v: &Value| match list {
                    ListType::Map(keys) => super::fieldset::seg_key(v, keys).ok(),
                    _ => Some(super::fieldset::seg_value(v)),
                };
                Value::Array(merge_items(l, a, seg, |live, applied| match (live, list) {
                    (Some(live), ListType::Map(_)) => merge(live, applied, elem, ""),
                    _ => applied.clone(),
                }))
            }
        },
        _ => applied.clone(),
    }
}

/// Interleaves the elements of a live and an applied set or list map as structured-merge-diff
/// does: elements in both follow the applied order, live-only elements keep their positions,
/// applied-only elements come where the applied list has them.
fn merge_items(
    live: &[Value],
    applied: &[Value],
    seg: impl Fn(&Value) -> Option<String>,
    merge_item: impl Fn(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    // Elements without an identity (malformed live data) get one that matches nothing.
    let ids = |list: &[Value], side: &str| -> Vec<String> {
        list.iter()
            .enumerate()
            .map(|(i, v)| seg(v).unwrap_or_else(|| format!("?{side}{i}")))
            .collect()
    };
    let (lhs, rhs) = (ids(live, "l"), ids(applied, "r"));
    let find = |ids: &[String], id: &str| ids.iter().position(|x| x == id);
    let mut shared = rhs.iter().filter(|id| lhs.contains(id));
    let mut next_shared = shared.next();
    let mut merged: Vec<&String> = Vec::new();
    let mut out = Vec::with_capacity(live.len().max(applied.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if lhs[li] == rhs[ri] {
                merged.push(&rhs[ri]);
                out.push(merge_item(Some(&live[li]), &applied[ri]));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            // A shared element that is not the next one in applied order waits for its turn.
            if rhs.contains(&lhs[li]) && next_shared.is_some_and(|n| *n != lhs[li]) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            if !rhs.contains(&lhs[li]) {
                out.push(live[li].clone());
                li += 1;
                continue;
            } else if merged.contains(&&lhs[li]) {
                li += 1;
            }
        }
        if ri < rhs.len() {
            let id = &rhs[ri];
            merged.push(id);
            out.push(merge_item(find(&lhs, id).map(|i| &live[i]), &applied[ri]));
            ri += 1;
            if next_shared == Some(id) {
                next_shared = shared.next();
            }
        }
    }
    out
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
