//! The catalogue of served resources: for each group/version/resource, its kind, scope, names,
//! verbs and subresources. Built-in resources are fixed at start; custom resources are added and
//! removed as CustomResourceDefinitions come and go. Discovery, routing, storage keys, Tables,
//! defaulting and validation all look resources up here, so this is the one list of what exists.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One served resource in one group version.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String, String), Arc<ResourceInfo>>> {
        self.resources.write().unwrap_or_else(|e| e.into_inner())
    }
}
