//! Assembling OpenAPI documents: the schemas a set of resources needs (the built-in catalogue
//! plus the custom resources' components, closed over `$ref`), and the OpenAPI v3 document of
//! one group version (`/openapi/v3/apis/<group>/<version>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::super::resource::ResourceInfo;
use super::super::server::KUBERNETES_VERSION;
use super::catalogue::{self, Catalogue, ONE_OF_TYPES, REF_PREFIX};
use super::{custom, paths};

/// Where the schemas of a document come from: the built-in catalogue, then custom resources.
pub struct Sources {
    builtin: &'static Catalogue,
    custom: Catalogue,
}

impl Sources {
    /// The sources for `resources` (custom resources among them get components).
    pub fn new(resources: &[Arc<ResourceInfo>]) -> Sources {
        Sources { builtin: catalogue::builtin(), custom: custom::catalogue(resources) }
    }

    /// The component name of a kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<String> {
        self.custom
            .kind(group, version, kind)
            .or_else(|| self.builtin.kind(group, version, kind))
            .map(str::to_string)
    }

    /// A component by name.
    pub fn schema(&self, name: &str) -> Option<&Value> {
        self.custom.schemas.get(name).or_else(|| self.builtin.schemas.get(name))
    }

    /// The `paths` of `resources`.
    pub fn paths(&self, resources: &[Arc<ResourceInfo>]) -> Map<String, Value> {
        let mut out = Map::new();
        let lookup = |g: &str, v: &str, k: &str| self.kind(g, v, k);
        for info in resources {
            paths::add_resource(&mut out, info, &lookup);
        }
        out
    }

    /// Every component reachable from the references in `root`, by name.
    pub fn closure(&self, root: &Value) -> BTreeMap<String, Value> {
        let mut found = BTreeMap::new();
        let mut pending: Vec<String> = Vec::new();
        collect_refs(root, &mut pending);
        while let Some(name) = pending.pop() {
            if found.contains_key(&name) {
                continue;
            }
            if let Some(schema) = self.schema(&name) {
                collect_refs(schema, &mut pending);
                found.insert(name, schema.clone());
            }
        }
        found
    }
}

/// Adds the component names `value` refers to.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A schema in OpenAPI v3 form: a `$ref` with siblings becomes `allOf: [{$ref}]` plus the
/// siblings (v3.0 ignores siblings of `$ref`), as the reference publishes it.
pub fn to_v3(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        if map.len() > 1 {
            if let Some(reference) = map.remove("$ref") {
                map.insert("allOf".into(), json!([{"$ref": reference}]));
            }
        }
    }
    catalogue::for_each_subschema(schema, &mut to_v3);
}

/// The OpenAPI v3 document of one group version.
pub fn group_version(resources: &[Arc<ResourceInfo>]) -> Value {
    let sources = Sources::new(resources);
    let paths = Value::Object(sources.paths(resources));
    let mut schemas = Map::new();
    for (name, mut schema) in sources.closure(&paths) {
        to_v3(&mut schema);
        if let Some((_, _, types)) = ONE_OF_TYPES.iter().find(|(n, _, _)| *n == name) {
            if let Some(map) = schema.as_object_mut() {
                map.remove("type");
                let one_of: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
                map.insert("oneOf".into(), Value::Array(one_of));
            }
        }
        schemas.insert(name, schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {
                "type": "apiKey", "name": "authorization", "in": "header",
                "description": "Bearer Token authentication"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// The index key of a group version: `api/v1` or `apis/<group>/<version>`.
pub fn index_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every served resource, grouped by the index key of its group version.
pub fn by_group_version(
    resources: Vec<Arc<ResourceInfo>>,
) -> BTreeMap<String, Vec<Arc<ResourceInfo>>> {
    let mut out: BTreeMap<String, Vec<Arc<ResourceInfo>>> = BTreeMap::new();
    for info in resources {
        out.entry(index_key(&info.group, &info.version)).or_default().push(info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    fn apps_v1() -> Value {
        let registry = Registry::builtin();
        let resources: Vec<_> = registry.all().into_iter().filter(|r| r.group == "apps").collect();
        group_version(&resources)
    }

    #[test]
    fn patch_of_a_deployment_declares_field_validation() {
        // kubectl's QueryParamVerifierV3 looks for this parameter on the PATCH operation whose
        // x-kubernetes-group-version-kind is the object's.
        let doc = apps_v1();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation"), "{params:?}");
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    }

    #[test]
    fn components_are_closed_over_references_in_v3_form() {
        let doc = apps_v1();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.core.v1.PodSpec",
            catalogue::OBJECT_META,
            catalogue::STATUS,
        ] {
            assert!(schemas.get(name).is_some(), "{name}");
        }
        // A reference with a description is wrapped in allOf.
        let selector = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["selector"];
        assert_eq!(
            selector["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
        );
        assert!(selector["description"].is_string());
        let int_or_string = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["oneOf"], json!([{"type": "integer"}, {"type": "string"}]));
        // Nothing from other groups' kinds.
        assert!(schemas.get("io.k8s.api.rbac.v1.Role").is_none());
    }
}
