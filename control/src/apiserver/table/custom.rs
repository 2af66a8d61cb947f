//! Tables for custom resources: a Name column, then the CRD version's
//! `additionalPrinterColumns` (or just Age when it declares none), each cell read with a
//! simple JSONPath and typed per the column (`integer`, `number`, `boolean`, `date`, `string`),
//! like the reference's CRD table convertor.

use serde_json::{json, Value};

use super::format::{human_duration, parse_time, text};
use super::{column_json, AGE, NAME};
use crate::apiserver::resource::{PrinterColumn, ResourceInfo};

/// Column definitions and rows (without objects) for custom objects.
pub(super) fn table(info: &ResourceInfo, objects: &[Value], now: i64) -> (Vec<Value>, Vec<Value>) {
    let default_age = [PrinterColumn {
        name: "Age".to_string(),
        type_: "date".to_string(),
        format: String::new(),
        description: AGE.4.to_string(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".to_string(),
    }];
    let columns: &[PrinterColumn] =
        if info.printer_columns.is_empty() { &default_age } else { &info.printer_columns };
    let mut definitions = vec![column_json(&NAME)];
    definitions.extend(columns.iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        })
    }));
    let rows = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![json!(text(obj, &["metadata", "name"]))];
            cells.extend(columns.iter().map(|c| cell(c, obj, now)));
            json!({"cells": cells})
        })
        .collect();
    (definitions, rows)
}

/// One typed cell; `null` when the path finds nothing.
fn cell(column: &PrinterColumn, obj: &Value, now: i64) -> Value {
    let Some(value) = find(obj, &column.json_path) else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "integer" => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        "number" => value.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => match value.as_str().map(parse_time) {
            Some(Some(t)) => json!(human_duration(now - t)),
            Some(None) => json!("<invalid>"),
            None => Value::Null,
        },
        _ => match value {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// The first value a simple JSONPath selects: `.a.b`, `.a[0]`, `.a[*].b`, `.a['x.y']`,
/// `.a[?(@.type=="Ready")].status`, optionally wrapped in `{}`.
pub(crate) fn find<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let steps = parse_steps(path)?;
    select(obj, &steps).into_iter().next()
}

/// One step of a parsed path.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.a.b == "v")]`: the sub-path and the wanted value.
    Filter(Vec<Step>, Value),
}

fn parse_steps(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = matching_bracket(r)?;
            let inner = r[..close].trim();
            rest = &r[close + 1..];
            steps.push(parse_bracket(inner)?);
        } else {
            // A path may start with a bare field name.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(steps)
}

/// Index of the `]` closing a bracket, skipping quoted strings.
fn matching_bracket(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Some(key) = unquote(inner) {
        return Some(Step::Field(key.to_string()));
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(Step::Index(i));
    }
    let cond = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (lhs, rhs) = cond.split_once("==")?;
    let sub = parse_steps(lhs.trim().strip_prefix('@')?)?;
    let rhs = rhs.trim();
    let wanted = match unquote(rhs) {
        Some(s) => json!(s),
        None => serde_json::from_str(rhs).ok()?,
    };
    Some(Step::Filter(sub, wanted))
}

fn select<'a>(v: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return vec![v];
    };
    let next: Vec<&Value> = match step {
        Step::Field(name) => v.get(name.as_str()).into_iter().collect(),
        Step::Index(i) => v.get(*i).into_iter().collect(),
        Step::All => match v {
            Value::Array(a) => a.iter().collect(),
            Value::Object(m) => m.values().collect(),
            _ => Vec::new(),
        },
        Step::Filter(sub, wanted) => v
            .as_array()
            .map(|a| a.iter().filter(|item| select(item, sub).first() == Some(&wanted)).collect())
            .unwrap_or_default(),
    };
    next.into_iter().flat_map(|n| select(n, rest)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::tests::{headers, now};
    use crate::apiserver::table::{to_table_at, TableOptions};

    #[test]
    fn json_path_subset() {
        let obj = json!({"spec": {"replicas": 3, "a.b": "dotted", "list": [{"n": 1}, {"n": 2}]},
            "status": {"conditions": [{"type": "Synced", "status": "False"},
                                      {"type": "Ready", "status": "True"}]}});
        assert_eq!(find(&obj, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(find(&obj, "{.spec.list[1].n}"), Some(&json!(2)));
        assert_eq!(find(&obj, ".spec.list[*].n"), Some(&json!(1)));
        assert_eq!(find(&obj, ".spec['a.b']"), Some(&json!("dotted")));
        assert_eq!(
            find(&obj, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(find(&obj, ".spec.missing"), None);
        assert_eq!(find(&obj, ".spec[unterminated"), None);
    }

    fn crd_info(columns: Value) -> ResourceInfo {
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "additionalPrinterColumns": columns}]}});
        ResourceInfo::from_crd(&crd).unwrap().remove(0)
    }

    #[test]
    fn custom_resources_without_columns_show_name_and_age() {
        let info = crd_info(json!([]));
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        let t = to_table_at(&info, &[obj], &TableOptions::default(), now());
        assert_eq!(headers(&t), ["Name", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["w", "60m"]));
    }

    #[test]
    fn additional_printer_columns_are_typed() {
        let info = crd_info(json!([
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused", "priority": 1},
            {"name": "Since", "type": "date", "jsonPath": ".status.since"}]));
        let obj = json!({"metadata": {"name": "w"}, "spec": {"replicas": 2.0, "paused": "no"},
            "status": {"since": "2024-05-01T11:59:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        let t = to_table_at(&info, &[obj], &TableOptions::default(), now());
        assert_eq!(headers(&t), ["Name", "Replicas", "Ready", "Paused", "Since"]);
        assert_eq!(t["columnDefinitions"][3]["priority"], 1);
        assert_eq!(t["rows"][0]["cells"], json!(["w", 2, "True", null, "60s"]));
    }
}
