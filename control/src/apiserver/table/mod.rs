//! Server-side printing: objects rendered as `meta.k8s.io/v1` Tables with the columns kubectl
//! shows against the reference apiserver (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`).
//!
//! Every row carries all columns, wide ones included (priority 1): like the reference, the server
//! always prints "wide" and the client hides priority > 0 columns unless `-o wide`. Each kind's
//! printer is a pure function of the object and "now", in [`pod`], [`workloads`], [`core`] and
//! [`cluster`]; custom resources use their CRD's `additionalPrinterColumns` ([`custom`]); kinds
//! without a printer get the reference's default `Name` / `Created At` columns.

mod cluster;
mod core;
mod custom;
pub mod format;
mod pod;
mod workloads;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::resource::ResourceInfo;

/// What each Table row carries in its `object` field (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the reference default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// Options of a Table request.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// What each row's `object` holds.
    pub include_object: IncludeObject,
}

/// One column definition: name, OpenAPI type, format, priority (0 default, 1 wide) and
/// description.
pub(crate) type Col = (&'static str, &'static str, &'static str, i64, &'static str);

/// Cells of one row, given the object and the current time in Unix seconds.
pub(crate) type Printer = fn(&Value, i64) -> Vec<Value>;

/// The `Name` column every printer starts with.
pub(crate) const NAME: Col =
    ("Name", "string", "name", 0, "Name must be unique within a namespace. Cannot be updated.");
/// The `Age` column.
pub(crate) const AGE: Col =
    ("Age", "string", "", 0, "CreationTimestamp is when this object was created, in UTC.");
/// The wide `Containers` column of workload printers.
pub(crate) const CONTAINERS: Col =
    ("Containers", "string", "", 1, "Names of each container in the template.");
/// The wide `Images` column of workload printers.
pub(crate) const IMAGES: Col =
    ("Images", "string", "", 1, "Images referenced by each container in the template.");

/// Renders objects of one resource as a Table.
pub fn to_table(info: &ResourceInfo, objects: &[Value], opts: &TableOptions) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    to_table_at(info, objects, opts, now)
}

/// [`to_table`] at a given time (Unix seconds), so ages are deterministic in tests.
pub fn to_table_at(info: &ResourceInfo, objects: &[Value], opts: &TableOptions, now: i64) -> Value {
    let (columns, rows): (Vec<Value>, Vec<Value>) = if info.custom {
        custom::table(info, objects, now)
    } else {
        let (cols, printer) = printer_for(&info.group, &info.kind);
        let columns = cols.iter().map(column_json).collect();
        let rows = objects.iter().map(|o| json!({"cells": printer(o, now)})).collect();
        (columns, rows)
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(objects)
        .map(|(mut row, obj)| {
            if info.kind == "Pod" && info.group.is_empty() {
                if let Some(conditions) = pod::row_conditions(obj) {
                    row["conditions"] = conditions;
                }
            }
            match opts.include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(obj),
                IncludeObject::Object => row["object"] = obj.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The column definitions and printer for a built-in kind.
fn printer_for(group: &str, kind: &str) -> (&'static [Col], Printer) {
    pod::printer(group, kind)
        .or_else(|| workloads::printer(group, kind))
        .or_else(|| core::printer(group, kind))
        .or_else(|| cluster::printer(group, kind))
        .unwrap_or((DEFAULT_COLUMNS, default_row))
}

/// The reference's default Table (`rest.NewDefaultTableConvertor`) for kinds without a printer.
const DEFAULT_COLUMNS: &[Col] = &[
    NAME,
    ("Created At", "date", "", 0, "CreationTimestamp is when this object was created, in UTC."),
];

fn default_row(obj: &Value, _now: i64) -> Vec<Value> {
    let created = format::get(obj, &["metadata", "creationTimestamp"])
        .and_then(Value::as_str)
        .and_then(format::parse_time)
        .map(format::format_time);
    vec![json!(format::text(obj, &["metadata", "name"])), json!(created)]
}

pub(crate) fn column_json(col: &Col) -> Value {
    let (name, type_, format, priority, description) = *col;
    json!({
        "name": name,
        "type": type_,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// The `PartialObjectMetadata` a row carries for `includeObject=Metadata`.
fn partial_metadata(obj: &Value) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    pub(crate) const NOW: &str = "2024-05-01T12:00:00Z";

    pub(crate) fn now() -> i64 {
        format::parse_time(NOW).unwrap()
    }

    /// The table of `objects` for resource `plural` in `group`, at [`NOW`].
    pub(crate) fn table(group: &str, plural: &str, objects: &[Value]) -> Value {
        let info = Registry::builtin()
            .all()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap();
        to_table_at(&info, objects, &TableOptions::default(), now())
    }

    /// The cells of row `i`.
    pub(crate) fn row(table: &Value, i: usize) -> Vec<Value> {
        table["rows"][i]["cells"].as_array().unwrap().clone()
    }

    /// Column names of a table.
    pub(crate) fn headers(table: &Value) -> Vec<String> {
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Headers with priority 0, as plain `kubectl get` shows them.
    pub(crate) fn default_headers(table: &Value) -> Vec<String> {
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn kinds_without_a_printer_get_name_and_created_at() {
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        let t = table("rbac.authorization.k8s.io", "roles", &[role]);
        assert_eq!(headers(&t), ["Name", "Created At"]);
        assert_eq!(t["rows"][0]["cells"], json!(["r", "2024-05-01T11:00:00Z"]));
    }

    #[test]
    fn rows_carry_partial_object_metadata_by_default() {
        let cm =
            json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"}, "data": {"a": "b"}});
        let t = table("", "configmaps", std::slice::from_ref(&cm));
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let object = &t["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["metadata"]["uid"], "u1");
        assert!(object.get("data").is_none());

        let info = Registry::builtin().resolve("", "v1", "configmaps").unwrap();
        let opts = TableOptions { include_object: IncludeObject::None };
        let t = to_table_at(&info, std::slice::from_ref(&cm), &opts, now());
        assert!(t["rows"][0].get("object").is_none());
        let opts = TableOptions { include_object: IncludeObject::Object };
        let t = to_table_at(&info, std::slice::from_ref(&cm), &opts, now());
        assert_eq!(t["rows"][0]["object"], cm);
    }

    #[test]
    fn every_builtin_kind_prints_any_json_without_panicking() {
        let shapes = [
            json!(null),
            json!(7),
            json!({"metadata": 1, "spec": "x", "status": []}),
            json!({"metadata": {"name": 5, "creationTimestamp": "junk"},
                   "spec": {"containers": 3, "ports": [1, {"port": "x"}], "selector": 2},
                   "status": {"containerStatuses": [null, {"state": 3}], "conditions": "no"}}),
        ];
        let registry = Registry::builtin();
        for info in registry.all() {
            let t = to_table_at(&info, &shapes, &TableOptions::default(), now());
            let columns = t["columnDefinitions"].as_array().unwrap().len();
            for row in t["rows"].as_array().unwrap() {
                assert_eq!(row["cells"].as_array().unwrap().len(), columns, "{}", info.plural);
            }
        }
    }
}
