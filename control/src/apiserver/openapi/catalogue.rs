//! The component schemas of the built-in kinds. They are generated from the k8s-openapi types,
//! whose `schemars` impls carry the reference names (`io.k8s.api.apps.v1.Deployment`) and the
//! descriptions `kubectl explain` prints, then completed with what the reference adds from Go
//! tags: `x-kubernetes-group-version-kind` on every kind and list kind, the list kinds
//! themselves, and the patch/list extensions taken from [`patch::schema`](super::super::patch::schema)
//! (the one place that knowledge lives). Built once, on first use.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::super::builtin;
use super::super::patch::schema::{list_fields, ListMeta, ListType, Smp};

/// Where component references point in OpenAPI v3 (`#/components/schemas/<name>`).
pub const REF_PREFIX: &str = "#/components/schemas/";

/// Group, version and kind.
pub type Gvk = (String, String, String);

/// The schema name of the meta types every document refers to.
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";

/// The reference descriptions of the type-meta fields.
pub const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
pub const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
pub const OBJECT_META_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_META_DESCRIPTION: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// Component schemas by name, and the kinds they describe.
#[derive(Debug, Default, Clone)]
pub struct Catalogue {
    /// Every component schema, keyed by its reference name. References inside point to
    /// [`REF_PREFIX`] and may have siblings (a `description`), as in OpenAPI v2.
    pub schemas: Map<String, Value>,
    /// The component name of each kind (list kinds included).
    pub kinds: BTreeMap<Gvk, String>,
}

impl Catalogue {
    /// The component describing a kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds.get(&(group.into(), version.into(), kind.into())).map(String::as_str)
    }
}

/// The schemas of every built-in kind (built on first use, then shared).
pub fn builtin() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(build)
}

fn kind<T: k8s_openapi::Resource + JsonSchema>(
    gen: &mut SchemaGenerator,
    kinds: &mut BTreeMap<Gvk, String>,
) {
    gen.subschema_for::<T>();
    kinds.insert(
        (T::GROUP.into(), T::VERSION.into(), T::KIND.into()),
        T::schema_name().into_owned(),
    );
}

/// Registers the schema of each listed type under its kind.
macro_rules! kinds {
    ($gen:expr, $kinds:expr; $($t:ty),* $(,)?) => { $( kind::<$t>($gen, $kinds); )* };
}

fn build() -> Catalogue {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.meta_schema = None;
        s.transforms = Vec::new();
    });
    let mut gen = SchemaGenerator::new(settings);
    let mut kinds = BTreeMap::new();
    {
        use api::core::v1 as core;
        let (g, k) = (&mut gen, &mut kinds);
        kinds!(g, k;
            core::Binding, core::ComponentStatus, core::ConfigMap, core::Endpoints, core::Event,
            core::LimitRange, core::Namespace, core::Node, core::PersistentVolumeClaim,
            core::PersistentVolume, core::Pod, core::PodTemplate, core::ReplicationController,
            core::ResourceQuota, core::Secret, core::ServiceAccount, core::Service,
            api::admissionregistration::v1::MutatingWebhookConfiguration,
            api::admissionregistration::v1::ValidatingAdmissionPolicy,
            api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            api::admissionregistration::v1::ValidatingWebhookConfiguration,
            apiextensions::CustomResourceDefinition,
            api::apps::v1::ControllerRevision, api::apps::v1::DaemonSet, api::apps::v1::Deployment,
            api::apps::v1::ReplicaSet, api::apps::v1::StatefulSet,
            api::authentication::v1::SelfSubjectReview, api::authentication::v1::TokenReview,
            api::authentication::v1::TokenRequest,
            api::authorization::v1::LocalSubjectAccessReview,
            api::authorization::v1::SelfSubjectAccessReview,
            api::authorization::v1::SelfSubjectRulesReview,
            api::authorization::v1::SubjectAccessReview,
            api::autoscaling::v1::Scale, api::autoscaling::v2::HorizontalPodAutoscaler,
            api::batch::v1::CronJob, api::batch::v1::Job,
            api::certificates::v1::CertificateSigningRequest,
            api::coordination::v1::Lease,
            api::discovery::v1::EndpointSlice,
            api::events::v1::Event,
            api::networking::v1::IngressClass, api::networking::v1::Ingress,
            api::networking::v1::NetworkPolicy,
            api::node::v1::RuntimeClass,
            api::policy::v1::PodDisruptionBudget, api::policy::v1::Eviction,
            api::rbac::v1::ClusterRoleBinding, api::rbac::v1::ClusterRole,
            api::rbac::v1::RoleBinding, api::rbac::v1::Role,
            api::scheduling::v1::PriorityClass,
            api::storage::v1::CSIDriver, api::storage::v1::CSINode, api::storage::v1::StorageClass,
            api::storage::v1::VolumeAttachment,
        );
    }
    // The meta types every path refers to.
    gen.subschema_for::<meta::Status>();
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::ListMeta>();
    gen.subschema_for::<meta::WatchEvent<api::core::v1::Pod>>();
    let mut catalogue = Catalogue { schemas: gen.take_definitions(false), kinds };
    add_list_kinds(&mut catalogue);
    for ((group, version, kind), name) in &catalogue.kinds {
        if let Some(schema) = catalogue.schemas.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk_extension(group, version, kind),
            );
        }
    }
    let roots: Vec<(String, String, String)> = catalogue
        .kinds
        .iter()
        .map(|((group, _, kind), name)| (group.clone(), kind.clone(), name.clone()))
        .collect();
    for (group, kind, name) in roots {
        for (path, meta) in list_fields(&group, &kind) {
            annotate_list(&mut catalogue.schemas, &name, &path, meta);
        }
    }
    fix_int_or_string(&mut catalogue.schemas);
    catalogue
}

/// The `x-kubernetes-group-version-kind` value of a schema.
pub fn gvk_extension(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "kind": kind, "version": version}])
}

/// A `<Kind>List` schema for every built-in kind that is listed (named like the reference:
/// the kind's component name plus `List`).
fn add_list_kinds(catalogue: &mut Catalogue) {
    for info in builtin::resources() {
        if !info.verbs.iter().any(|v| v == "list") {
            continue;
        }
        let Some(item) = catalogue.kind(&info.group, &info.version, &info.kind) else { continue };
        let name = format!("{item}List");
        let schema = list_schema(&info.kind, item);
        catalogue.schemas.insert(name.clone(), schema);
        catalogue
            .kinds
            .insert((info.group.clone(), info.version.clone(), info.list_kind.clone()), name);
    }
}

/// The schema of a list of `kind` objects whose schema is the component `item`.
pub fn list_schema(kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DESCRIPTION, "type": "string"},
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item}")},
            },
            "kind": {"description": KIND_DESCRIPTION, "type": "string"},
            "metadata": {"$ref": format!("{REF_PREFIX}{LIST_META}"), "description": LIST_META_DESCRIPTION},
        },
    })
}

/// Calls `f` on each direct subschema of a schema (properties, items, additionalProperties,
/// allOf/oneOf/anyOf/not), leaving data such as `enum`, `default` and `example` alone.
pub fn for_each_subschema(schema: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    let Some(map) = schema.as_object_mut() else { return };
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                value.as_object_mut().into_iter().flat_map(|m| m.values_mut()).for_each(&mut *f)
            }
            "items" | "additionalProperties" | "not" => f(value),
            "allOf" | "oneOf" | "anyOf" => {
                value.as_array_mut().into_iter().flatten().for_each(&mut *f)
            }
            _ => {}
        }
    }
}

/// The component a schema refers to (`$ref`, or a single-entry `allOf` of one).
pub fn ref_name(schema: &Value) -> Option<&str> {
    let reference = schema.get("$ref").or_else(|| schema.pointer("/allOf/0/$ref"))?;
    reference.as_str()?.strip_prefix(REF_PREFIX)
}

/// Puts the patch extensions of one list field (a dotted path from the kind's root, `[]` after
/// a list's name to step into its elements) on the property that declares it.
fn annotate_list(schemas: &mut Map<String, Value>, root: &str, path: &str, meta: ListMeta) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    let mut component = root.to_string();
    for (i, segment) in segments.iter().enumerate() {
        let (name, elements) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*segment, false),
        };
        if i + 1 == segments.len() {
            let Some(property) = schemas
                .get_mut(&component)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(name))
                .and_then(Value::as_object_mut)
            else {
                return false;
            };
            for (key, value) in list_extensions(meta) {
                property.insert(key.into(), value);
            }
            return true;
        }
        let Some(property) =
            schemas.get(&component).and_then(|s| s.pointer(&format!("/properties/{name}")))
        else {
            return false;
        };
        let target = if elements { property.get("items") } else { Some(property) };
        match target.and_then(ref_name) {
            Some(next) => component = next.to_string(),
            None => return false,
        }
    }
    false
}

/// The `x-kubernetes-*` extensions of a list field, as the reference's OpenAPI shows them.
pub fn list_extensions(meta: ListMeta) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    match meta.smp {
        Smp::Replace => {}
        Smp::MergeByKey(key) => {
            out.push(("x-kubernetes-patch-merge-key", json!(key)));
            out.push(("x-kubernetes-patch-strategy", json!("merge")));
        }
        Smp::MergeScalars => out.push(("x-kubernetes-patch-strategy", json!("merge"))),
    }
    match meta.ssa {
        ListType::Atomic => out.push(("x-kubernetes-list-type", json!("atomic"))),
        ListType::Set => out.push(("x-kubernetes-list-type", json!("set"))),
        ListType::Map(keys) => {
            out.push(("x-kubernetes-list-map-keys", json!(keys)));
            out.push(("x-kubernetes-list-type", json!("map")));
        }
    }
    out
}

/// The types that accept more than one JSON type: a `string` in OpenAPI v2 (with this format),
/// a `oneOf` of these types in v3 (kube-openapi's `OpenAPIV3OneOfTypes`).
pub const ONE_OF_TYPES: &[(&str, Option<&str>, &[&str])] = &[
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        Some("int-or-string"),
        &["integer", "string"],
    ),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", None, &["string", "number"]),
];

/// IntOrString and Quantity in their OpenAPI v2 form (see [`ONE_OF_TYPES`]).
fn fix_int_or_string(schemas: &mut Map<String, Value>) {
    for (name, format, _) in ONE_OF_TYPES {
        if let Some(schema) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
            schema.insert("type".into(), json!("string"));
            if let Some(format) = format {
                schema.insert("format".into(), json!(format));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_reference_names_and_group_version_kind() {
        let catalogue = builtin();
        assert_eq!(
            catalogue.kind("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(catalogue.kind("", "v1", "PodList"), Some("io.k8s.api.core.v1.PodList"));
        let deployment = &catalogue.schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let replicas =
            &catalogue.schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
        assert!(replicas["description"].as_str().unwrap().starts_with("Number of desired pods."));
        let pod_list = &catalogue.schemas["io.k8s.api.core.v1.PodList"];
        assert_eq!(
            pod_list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
    }

    #[test]
    fn every_built_in_resource_has_a_schema() {
        let catalogue = builtin();
        for info in builtin::resources() {
            assert!(
                catalogue.kind(&info.group, &info.version, &info.kind).is_some(),
                "{}",
                info.kind
            );
        }
        for name in [STATUS, DELETE_OPTIONS, PATCH, OBJECT_META, LIST_META, WATCH_EVENT] {
            assert!(catalogue.schemas.contains_key(name), "{name}");
        }
    }

    #[test]
    fn pod_spec_containers_carry_the_merge_key_and_list_type() {
        // k8s.io/api core/v1 PodSpec.containers: patchStrategy=merge, patchMergeKey=name,
        // listType=map, listMapKey=name.
        let containers =
            &builtin().schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let ports = &builtin().schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["containerPort", "protocol"]));
        let finalizers = &builtin().schemas[OBJECT_META]["properties"]["finalizers"];
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    }
}
