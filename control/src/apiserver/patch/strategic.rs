//! Strategic merge patch (`application/strategic-merge-patch+json`), as the reference apiserver
//! applies it (k8s.io/apimachinery `strategicpatch.StrategicMergePatch`): maps merge recursively
//! and `null` deletes; lists with a merge key merge element by element, lists of scalars with
//! merge strategy are sets, other lists are replaced. The directives `$patch`, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured and never stored.
//! The ordering rules (patched elements take the patch's order and are interleaved with the
//! untouched elements by their original positions; brand-new elements come first) follow the
//! reference so that `kubectl patch` output matches it element for element.

use serde_json::{Map, Value};

use super::schema::{Schema, Smp};
use super::PatchError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge `patch` to `original` using the patch metadata in `schema`.
pub fn apply(schema: Schema, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else { return Err(PatchError::NotAnObject) };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::NotAnObject),
    };
    merge_map(original, patch.clone(), schema).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            // `$patch: replace` on a map: the patch (without directives) is the new value.
            Some("replace") => Ok(strip_map(patch)),
            // `$patch: delete` on a map: the reference leaves an empty map, not a missing key.
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::BadDirective(directive.to_string())),
        };
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, schema)?;
    for (key, value) in patch {
        let (key, delete_list) = match key.strip_prefix(DELETE_PRIMITIVE) {
            Some(list) => (list.to_string(), true),
            None => (key, false),
        };
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            if !delete_list {
                if let Some(v) = new_value(value) {
                    original.insert(key, v);
                }
            }
            continue;
        };
        match (current, value) {
            (Value::Object(cur), Value::Object(p)) => {
                let merged = merge_map(std::mem::take(cur), p, schema.child(&key))?;
                *cur = merged;
            }
            (Value::Array(cur), Value::Array(p)) => {
                let strategy = schema.list(&key).smp;
                if strategy == Smp::Replace && !delete_list {
                    *cur = strip_list(p);
                } else {
                    let merged = merge_list(
                        std::mem::take(cur),
                        p,
                        strategy,
                        schema.child(&key),
                        delete_list,
                        &key,
                    )?;
                    *cur = merged;
                }
            }
            (current, value) => {
                // Different types or scalars: the patch value wins (a delete list does nothing).
                if delete_list {
                    continue;
                }
                match new_value(value) {
                    Some(v) => *current = v,
                    None => {
                        original.remove(&key);
                    }
                }
            }
        }
    }
    Ok(original)
}

/// `$retainKeys`: drop every original field not listed; the patch may set only listed fields.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(keys) = patch.remove(RETAIN_KEYS) else { return Ok(()) };
    let Value::Array(keys) = keys else { return Err(PatchError::BadRetainKeys(keys.to_string())) };
    let listed = |k: &str| keys.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        let directive = k.starts_with(DELETE_PRIMITIVE) || k.starts_with(SET_ORDER);
        if !v.is_null() && !directive && !listed(k) {
            return Err(PatchError::BadRetainKeys(format!("{k} is not in $retainKeys")));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$setElementOrder/<list>`: merge that list now and order it as the directive says.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ORDER)).cloned().collect();
    for directive in keys {
        let order = patch.remove(&directive).unwrap_or_default();
        let field = directive[SET_ORDER.len()..].to_string();
        let bad = || PatchError::BadSetElementOrder(field.clone());
        let Value::Array(order) = order else { return Err(bad()) };
        let orig_list = match original.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(_) => return Err(bad()),
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l),
            Some(_) => return Err(bad()),
        };
        let meta = schema.list(&field);
        let key = match meta.smp {
            Smp::MergeByKey(k) => Some(k),
            _ => None,
        };
        if let Some(p) = &patch_list {
            check_order(p, &order, key).map_err(|_| bad())?;
        }
        let merged = match (&orig_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => o.clone(),
            (None, Some(p)) => strip_list(p),
            (Some(_), Some(p)) if meta.smp == Smp::Replace => strip_list(p),
            (Some(o), Some(p)) => {
                merge_list(o.clone(), p, meta.smp, schema.child(&field), false, &field)?
            }
        };
        let server_order = orig_list.unwrap_or_default();
        let (in_order, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| position(&order, v, key).is_some());
        let sorted = normalize(in_order, server_only, &order, &server_order, key);
        original.insert(field, Value::Array(sorted));
    }
    Ok(())
}

/// The patch list's non-directive elements must appear in `order` in the same relative order.
fn check_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<(), ()> {
    let mut o = order.iter();
    for item in patch.iter().filter(|v| v.get(DIRECTIVE).is_none()) {
        if !o.any(|x| same_identity(x, item, key)) {
            return Err(());
        }
    }
    Ok(())
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    strategy: Smp,
    elem: Schema,
    delete_list: bool,
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let maps =
        element_kind(&original, &patch).ok_or_else(|| PatchError::MixedList(field.into()))?;
    let (merged, server_order, key, patch) = if !maps {
        if delete_list {
            // `$deleteFromPrimitiveList/<list>`: remove every listed value.
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|p| scalar_eq(p, v)))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.iter().any(|m| scalar_eq(m, v)) {
                merged.push(v.clone());
            }
        }
        (merged, original, None, patch)
    } else {
        let key = match strategy {
            Smp::MergeByKey(k) => k,
            // A list of maps with a scalar merge strategy (or a delete list of maps) cannot merge.
            _ => return Err(PatchError::MixedList(field.into())),
        };
        let (original, patch) = special_elements(original, patch, key)?;
        let mut merged = original.clone();
        for item in &patch {
            let Value::Object(p) = item else { continue };
            let id = p.get(key).ok_or_else(|| missing_key(item, key))?;
            match merged.iter().position(|m| m.get(key).is_some_and(|v| scalar_eq(v, id))) {
                Some(i) => {
                    let cur = match std::mem::take(&mut merged[i]) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    merged[i] = Value::Object(merge_map(cur, p.clone(), elem)?);
                }
                None => merged.extend(new_value(item.clone())),
            }
        }
        for m in &merged {
            if m.get(key).is_none() {
                return Err(missing_key(m, key));
            }
        }
        (merged, original, Some(key), patch)
    };
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| position(&patch, v, key).is_some());
    Ok(normalize(in_patch, server_only, &patch, &server_order, key))
}

/// Applies `$patch: delete` and `$patch: replace` elements; returns the original without the
/// deleted elements and the patch without directive elements (or, on replace, the patch as the
/// new original and nothing left to merge).
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        match item.get(DIRECTIVE) {
            None => plain.push(item),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let id = item.get(key).ok_or_else(|| missing_key(&item, key))?;
                    original.retain(|o| !o.get(key).is_some_and(|v| scalar_eq(v, id)));
                }
                Some("replace") => replace = true,
                // The reference: "merging lists cannot yet be specified in the patch".
                _ => return Err(PatchError::BadDirective(d.to_string())),
            },
        }
    }
    if replace {
        return Ok((plain.into_iter().filter_map(new_value).collect(), Vec::new()));
    }
    Ok((original, plain))
}

/// Orders the merged list: `patched` by `patch_order`, `server_only` by `server_order`, then
/// interleaves them; an untouched element goes before a patched one only when it came first in
/// the original, so elements new to the list come before the untouched ones that follow them.
fn normalize(
    mut patched: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    patched.sort_by_key(|v| position(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| position(server_order, v, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let (mut left, mut right) =
        (server_only.into_iter().peekable(), patched.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (position(server_order, l, key), position(server_order, r, key)) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// Index of the element of `list` with the same identity as `item` (merge key or value).
fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|v| same_identity(v, item, key))
}

fn same_identity(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(k) => match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => scalar_eq(x, y),
            _ => false,
        },
        None => scalar_eq(a, b),
    }
}

/// JSON equality where numbers compare by value (`80` equals `80.0`, as in Go's float64).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `Some(true)` when every element is a map, `Some(false)` when every one is a scalar of one
/// type, `None` for a mix or for lists of lists.
fn element_kind(a: &[Value], b: &[Value]) -> Option<bool> {
    let mut kind: Option<u8> = None;
    for v in a.iter().chain(b) {
        let k = match v {
            Value::Array(_) => return None,
            Value::Object(_) => 0,
            Value::String(_) => 1,
            Value::Number(_) => 2,
            Value::Bool(_) => 3,
            Value::Null => 4,
        };
        if kind.is_some_and(|prev| prev != k) {
            return None;
        }
        kind = Some(k);
    }
    kind.map(|k| k == 0)
}

fn missing_key(element: &Value, key: &str) -> PatchError {
    PatchError::MissingMergeKey { element: element.to_string(), key: key.to_string() }
}

/// A patch value taken as is (no original to merge with): without nulls, directives or maps
/// marked `$patch`; `None` when the value itself is such a marked map.
fn new_value(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(strip_map(map))),
        Value::Array(list) => Some(Value::Array(strip_list(list))),
        other => Some(other),
    }
}

fn strip_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| new_value(v).map(|v| (k, v)))
        .collect()
}

fn strip_list(list: Vec<Value>) -> Vec<Value> {
    list.into_iter().filter_map(new_value).collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ORDER)
        || key.starts_with(DELETE_PRIMITIVE)
}

#[cfg(test)]
#[path = "strategic_tests.rs"]
mod tests;
