//! The OpenAPI v2 (Swagger 2.0) document, `/openapi/v2`: every served path and definition in
//! one document, derived from the same paths and schemas as v3 (references under
//! `#/definitions/`, body parameters, `consumes`/`produces`). kubectl ≤ 1.26 validates objects
//! against it on the client side and reads it in protobuf ([`super::gnostic`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::super::resource::ResourceInfo;
use super::super::server::KUBERNETES_VERSION;
use super::catalogue::{for_each_subschema, REF_PREFIX};
use super::document::Sources;

/// Where references point in OpenAPI v2.
pub const V2_REF_PREFIX: &str = "#/definitions/";

/// The v2 document of every resource in `resources`.
pub fn document(resources: &[Arc<ResourceInfo>]) -> Value {
    let sources = Sources::new(resources);
    let paths = sources.paths(resources);
    let closure = sources.closure(&Value::Object(paths.clone()));
    let mut definitions = Map::new();
    for (name, mut schema) in closure {
        schema_to_v2(&mut schema);
        definitions.insert(name, schema);
    }
    let paths: Map<String, Value> =
        paths.into_iter().map(|(path, item)| (path, path_item(&item))).collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {
            "type": "apiKey", "name": "authorization", "in": "header",
            "description": "Bearer Token authentication"}},
        "security": [{"BearerToken": []}],
    })
}

/// Rewrites references to `#/definitions/` and drops what Swagger 2.0 cannot say (`nullable`,
/// `oneOf`, `anyOf`, `not`), as the reference does for custom resource schemas.
pub fn schema_to_v2(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        for key in ["nullable", "oneOf", "anyOf", "not"] {
            map.remove(key);
        }
        if let Some(Value::String(reference)) = map.get_mut("$ref") {
            if let Some(name) = reference.strip_prefix(REF_PREFIX) {
                *reference = format!("{V2_REF_PREFIX}{name}");
            }
        }
    }
    for_each_subschema(schema, &mut schema_to_v2);
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        let converted = match key.as_str() {
            "parameters" => {
                Value::Array(value.as_array().into_iter().flatten().map(parameter).collect())
            }
            _ => operation(value),
        };
        out.insert(key.clone(), converted);
    }
    Value::Object(out)
}

/// A v3 query or path parameter in v2 form (the schema's type inline).
fn parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if let Some(v) = p.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for key in ["type", "uniqueItems"] {
        if let Some(v) = p.pointer(&format!("/schema/{key}")) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn with_v2_refs(schema: &Value) -> Value {
    let mut schema = schema.clone();
    schema_to_v2(&mut schema);
    schema
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in op.as_object().into_iter().flatten() {
        if matches!(key.as_str(), "tags" | "description" | "operationId") || key.starts_with("x-") {
            out.insert(key.clone(), value.clone());
        }
    }
    let mut params: Vec<Value> =
        op["parameters"].as_array().into_iter().flatten().map(parameter).collect();
    if let Some(content) = op.pointer("/requestBody/content").and_then(Value::as_object) {
        out.insert("consumes".into(), json!(content.keys().collect::<Vec<_>>()));
        if let Some(schema) = content.values().next().and_then(|c| c.get("schema")) {
            params.insert(0, json!({"name": "body", "in": "body", "required": true, "schema": with_v2_refs(schema)}));
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    let mut produces = BTreeSet::new();
    let mut responses = Map::new();
    for (code, response) in op["responses"].as_object().into_iter().flatten() {
        let mut converted = Map::new();
        converted.insert("description".into(), response["description"].clone());
        if let Some(content) = response.get("content").and_then(Value::as_object) {
            produces.extend(content.keys().cloned());
            if let Some(schema) = content.values().next().and_then(|c| c.get("schema")) {
                converted.insert("schema".into(), with_v2_refs(schema));
            }
        }
        responses.insert(code.clone(), Value::Object(converted));
    }
    out.insert("produces".into(), json!(produces));
    out.insert("responses".into(), Value::Object(responses));
    out.insert("schemes".into(), json!(["https"]));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    #[test]
    fn v2_has_every_kind_with_definitions_references() {
        let doc = document(&Registry::builtin().all());
        let deployment = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(deployment["properties"]["spec"]["description"].is_string());
        let create = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
        assert_eq!(create["parameters"][0]["in"], "body");
        assert_eq!(
            create["parameters"][0]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(
            create["responses"]["201"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("#/components/"));
    }
}
