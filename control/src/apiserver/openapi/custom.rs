//! Custom resources in OpenAPI: a CRD version's `openAPIV3Schema` becomes a component named
//! like the reference (`com.example.stable.v1.CronTab`: the group reversed, then version and
//! kind), with the type-meta fields, `metadata` as a reference to ObjectMeta, and its
//! group-version-kind; a `<Kind>List` component goes with it.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::super::resource::ResourceInfo;
use super::catalogue::{
    gvk_extension, list_schema, Catalogue, API_VERSION_DESCRIPTION, KIND_DESCRIPTION, OBJECT_META,
    OBJECT_META_DESCRIPTION, REF_PREFIX,
};

/// The component name of a custom kind: `stable.example.com/v1 CronTab` →
/// `com.example.stable.v1.CronTab`.
pub fn component_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The components of every custom resource among `resources`.
pub fn catalogue(resources: &[Arc<ResourceInfo>]) -> Catalogue {
    let mut out = Catalogue::default();
    for info in resources.iter().filter(|r| r.custom) {
        let name = component_name(&info.group, &info.version, &info.kind);
        out.schemas.insert(name.clone(), object_schema(info));
        let (group, version) = (info.group.clone(), info.version.clone());
        out.kinds.insert((group.clone(), version.clone(), info.kind.clone()), name.clone());
        let list_name = format!("{name}List");
        let mut list = list_schema(&info.kind, &name);
        list["x-kubernetes-group-version-kind"] =
            gvk_extension(&info.group, &info.version, &info.list_kind);
        out.schemas.insert(list_name.clone(), list);
        out.kinds.insert((group, version, info.list_kind.clone()), list_name);
    }
    out
}

fn object_schema(info: &ResourceInfo) -> Value {
    let mut schema = match &info.schema {
        Some(Value::Object(map)) => map.clone(),
        _ => {
            let mut map = Map::new();
            map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            map
        }
    };
    schema.insert("type".into(), json!("object"));
    let properties = schema.entry("properties").or_insert_with(|| json!({}));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION_DESCRIPTION, "type": "string"}),
        );
        properties
            .insert("kind".into(), json!({"description": KIND_DESCRIPTION, "type": "string"}));
        properties.insert(
            "metadata".into(),
            json!({"$ref": format!("{REF_PREFIX}{OBJECT_META}"), "description": OBJECT_META_DESCRIPTION}),
        );
    }
    schema.insert(
        "x-kubernetes-group-version-kind".into(),
        gvk_extension(&info.group, &info.version, &info.kind),
    );
    Value::Object(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_schemas_are_named_by_the_reversed_group() {
        assert_eq!(
            component_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
        let info = ResourceInfo {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            list_kind: "WidgetList".into(),
            custom: true,
            schema: Some(json!({"type": "object", "properties": {
                "spec": {"type": "object", "description": "The widget.",
                         "properties": {"size": {"type": "integer", "description": "How big."}}}}})),
            ..Default::default()
        };
        let catalogue = catalogue(&[Arc::new(info)]);
        let widget = &catalogue.schemas["com.example.v1.Widget"];
        assert_eq!(widget["properties"]["spec"]["properties"]["size"]["description"], "How big.");
        assert_eq!(
            widget["x-kubernetes-group-version-kind"],
            json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
        );
        assert_eq!(
            catalogue.kind("example.com", "v1", "WidgetList"),
            Some("com.example.v1.WidgetList")
        );
    }
}
