//! The catalogue of served resources: for each group/version/resource, its kind, scope, names,
//! verbs and subresources. Built-in resources are fixed at start; custom resources are added and
//! removed as CustomResourceDefinitions come and go. Discovery, routing, storage keys, Tables,
//! defaulting and validation all look resources up here, so this is the one list of what exists.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// One served resource in one group version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core ("legacy") group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The list kind, e.g. `PodList`.
    pub list_kind: String,
    /// URL segment, e.g. `pods`.
    pub plural: String,
    /// e.g. `pod`.
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Verbs on the main resource as discovery lists them.
    pub verbs: Vec<String>,
    /// Subresource names served, e.g. `status`, `scale`, `binding`.
    pub subresources: Vec<String>,
    /// Store key prefix, ending in `/`: objects live at `<prefix><namespace>/<name>` (namespaced)
    /// or `<prefix><name>` (cluster-scoped), like the reference apiserver's `/registry/...`.
    pub storage_prefix: String,
    /// True for resources defined by a CustomResourceDefinition.
    pub custom: bool,
    /// Each subresource in `subresources`, with the kind it returns and its verbs.
    pub subresource_info: Vec<Subresource>,
    /// A CRD version's `additionalPrinterColumns` (empty for built-in resources).
    pub printer_columns: Vec<PrinterColumn>,
    /// A CRD version's `schema.openAPIV3Schema`, for validation and defaulting.
    pub schema: Option<Value>,
    /// A CRD version's `subresources.scale` paths.
    pub scale: Option<CustomScale>,
    /// True for the version a CRD stores its objects in (built-ins: the only version served).
    pub storage_version: bool,
}

/// One subresource of a resource, e.g. `pods/status` or `deployments/scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    /// The name after the slash, e.g. `status`.
    pub name: String,
    /// Group of the returned kind; empty with an empty `version` means the parent's group.
    pub group: String,
    /// Version of the returned kind; empty means the parent's version.
    pub version: String,
    /// The kind the subresource takes and returns, e.g. `Scale` or `PodExecOptions`.
    pub kind: String,
    /// Verbs served on the subresource.
    pub verbs: Vec<String>,
}

/// One column a CRD asks `kubectl get` to show (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    /// OpenAPI format, e.g. `int32` or `byte`; may be empty.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 shows in the default view; higher only with `-o wide`.
    pub priority: i64,
    /// A simple JSONPath into the object, e.g. `.spec.replicas`.
    pub json_path: String,
}

impl PrinterColumn {
    /// One entry of a CRD version's `additionalPrinterColumns`; `None` without name or jsonPath.
    fn from_crd(col: &Value) -> Option<PrinterColumn> {
        let text = |k: &str| col.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let column = PrinterColumn {
            name: text("name"),
            type_: text("type"),
            format: text("format"),
            description: text("description"),
            priority: col.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: text("jsonPath"),
        };
        (!column.name.is_empty() && !column.json_path.is_empty()).then_some(column)
    }
}

/// Where a custom resource keeps the fields of its `scale` subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomScale {
    /// JSONPath of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas_path: String,
    /// JSONPath of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas_path: String,
    /// JSONPath of the label selector string, if any.
    pub label_selector_path: Option<String>,
}

impl ResourceInfo {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resources a CustomResourceDefinition defines: one per served version. The error names
    /// the first missing or malformed field of the CRD.
    pub fn from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, String> {
        let spec = crd.get("spec").ok_or("spec is required")?;
        let text = |v: Option<&Value>, field: &str| -> Result<String, String> {
            match v.and_then(Value::as_str) {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(format!("{field} is required")),
            }
        };
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let group = text(spec.get("group"), "spec.group")?;
        let names = spec.get("names").ok_or("spec.names is required")?;
        let plural = text(names.get("plural"), "spec.names.plural")?;
        let kind = text(names.get("kind"), "spec.names.kind")?;
        // The reference defaults singular to the lowercased kind and listKind to `<kind>List`.
        let singular = text(names.get("singular"), "").unwrap_or_else(|_| kind.to_lowercase());
        let list_kind = text(names.get("listKind"), "").unwrap_or_else(|_| format!("{kind}List"));
        let namespaced = match spec.get("scope").and_then(Value::as_str) {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            _ => return Err("spec.scope must be Namespaced or Cluster".to_string()),
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions must list at least one version")?;
        let mut out = Vec::new();
        for (i, version) in versions.iter().enumerate() {
            let name = text(version.get("name"), &format!("spec.versions[{i}].name"))?;
            if version.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let subs = version.get("subresources");
            let mut subresource_info = Vec::new();
            if subs.and_then(|s| s.get("status")).is_some() {
                subresource_info.push(super::builtin::subresource(&kind, "status"));
            }
            let scale = subs.and_then(|s| s.get("scale")).map(|scale| CustomScale {
                spec_replicas_path: text(scale.get("specReplicasPath"), "")
                    .unwrap_or_else(|_| ".spec.replicas".to_string()),
                status_replicas_path: text(scale.get("statusReplicasPath"), "")
                    .unwrap_or_else(|_| ".status.replicas".to_string()),
                label_selector_path: text(scale.get("labelSelectorPath"), "").ok(),
            });
            if scale.is_some() {
                subresource_info.push(super::builtin::subresource(&kind, "scale"));
            }
            let printer_columns = version
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| cols.iter().filter_map(PrinterColumn::from_crd).collect())
                .unwrap_or_default();
            out.push(ResourceInfo {
                group: group.clone(),
                version: name,
                kind: kind.clone(),
                list_kind: list_kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                short_names: strings(names.get("shortNames")),
                categories: strings(names.get("categories")),
                verbs: [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ]
                .iter()
                .map(|v| v.to_string())
                .collect(),
                subresources: subresource_info.iter().map(|s| s.name.clone()).collect(),
                subresource_info,
                // Every version shares one prefix: objects are stored in the storage version.
                storage_prefix: format!("/registry/{group}/{plural}/"),
                custom: true,
                printer_columns,
                schema: version.get("schema").and_then(|s| s.get("openAPIV3Schema")).cloned(),
                scale,
                storage_version: version.get("storage").and_then(Value::as_bool) == Some(true),
            });
        }
        Ok(out)
    }

    /// The subresource named `name`, if served.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresource_info.iter().find(|s| s.name == name)
    }

    /// The store key of one object.
    pub fn storage_key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{}/{}", self.storage_prefix, ns, name),
            _ => format!("{}{}", self.storage_prefix, name),
        }
    }
}

/// Every served resource, keyed by (group, version, plural).
#[derive(Debug, Default)]
pub struct Registry {
    resources: RwLock<BTreeMap<(String, String, String), Arc<ResourceInfo>>>,
}

impl Registry {
    /// A registry with every built-in resource of the Kubernetes API level Skerry serves.
    pub fn builtin() -> Registry {
        let registry = Registry::default();
        for info in super::builtin::resources() {
            registry.insert(info);
        }
        registry
    }

    /// Adds or replaces a resource.
    pub fn insert(&self, info: ResourceInfo) {
        let key = (info.group.clone(), info.version.clone(), info.plural.clone());
        self.write().insert(key, Arc::new(info));
    }

    /// Removes every version of a custom resource `plural.group`.
    pub fn remove_custom(&self, group: &str, plural: &str) {
        self.write().retain(|(g, _, p), info| !(info.custom && g == group && p == plural));
    }

    /// The resource served at `/apis/<group>/<version>/<plural>` (or `/api/v1/<plural>`).
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.read().get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// The resource of a kind in a group version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .values()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// Every served resource, ordered by group, version, plural.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().values().cloned().collect()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String, String), Arc<ResourceInfo>>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts), so
        // a poisoned lock is still consistent.
        self.resources.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String, String), Arc<ResourceInfo>>>
    {
        self.resources.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab_crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com",
                "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}, "scale": {
                         "specReplicasPath": ".spec.replicas",
                         "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [
                         {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                         {"name": "Broken", "type": "string"}]},
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1alpha1", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn crd_yields_one_resource_per_served_version() {
        let infos = ResourceInfo::from_crd(&crontab_crd()).unwrap();
        assert_eq!(infos.len(), 2);
        let v1 = &infos[0];
        assert_eq!(v1.api_version(), "stable.example.com/v1");
        // singular and listKind default like the reference apiserver's CRD defaulting.
        assert_eq!((v1.singular.as_str(), v1.list_kind.as_str()), ("crontab", "CronTabList"));
        assert_eq!(v1.short_names, ["ct"]);
        assert_eq!(v1.subresources, ["status", "scale"]);
        assert_eq!(v1.subresource("scale").unwrap().kind, "Scale");
        assert_eq!(v1.printer_columns.len(), 1, "a column without jsonPath is dropped");
        assert_eq!(v1.schema, Some(json!({"type": "object"})));
        assert!(v1.storage_version && !infos[1].storage_version);
        assert!(infos[1].subresources.is_empty());
        assert_eq!(v1.storage_key(Some("ns1"), "a"), "/registry/stable.example.com/crontabs/ns1/a");
    }

    #[test]
    fn malformed_crds_are_errors_not_panics() {
        for bad in [json!(null), json!({"spec": 3}), json!({"spec": {"group": "g"}})] {
            assert!(ResourceInfo::from_crd(&bad).is_err());
        }
        let mut crd = crontab_crd();
        crd["spec"]["scope"] = json!("Galaxy");
        assert_eq!(
            ResourceInfo::from_crd(&crd).unwrap_err(),
            "spec.scope must be Namespaced or Cluster"
        );
    }

    #[test]
    fn registry_adds_and_removes_custom_resources() {
        let registry = Registry::builtin();
        for info in ResourceInfo::from_crd(&crontab_crd()).unwrap() {
            registry.insert(info);
        }
        assert!(registry.resolve("stable.example.com", "v1beta1", "crontabs").is_some());
        assert_eq!(registry.by_kind("apps", "v1", "Deployment").unwrap().plural, "deployments");
        registry.remove_custom("stable.example.com", "crontabs");
        assert!(registry.resolve("stable.example.com", "v1", "crontabs").is_none());
        assert!(registry.resolve("", "v1", "pods").is_some());
    }
}
