//! Discovery documents built from the resource catalogue: the legacy forms (`/api` APIVersions,
//! `/apis` APIGroupList, `/apis/<group>` APIGroup, `/api/v1` and `/apis/<group>/<version>`
//! APIResourceList) and the aggregated `apidiscovery.k8s.io/v2` APIGroupDiscoveryList that
//! kubectl ≥1.30 asks for first. Every document is derived from [`Registry::all`], so a CRD shows
//! up everywhere as soon as it is inserted.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::builtin::GROUP_ORDER;
use super::resource::{Registry, ResourceInfo, Subresource};

/// The `/api` APIVersions document.
pub fn api_versions() -> Value {
    // The reference also fills serverAddressByClientCIDRs with its advertised address; clients
    // accept an empty list, and the server address is not known to this pure module.
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// The `/apis` APIGroupList document.
pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> =
        groups(registry).iter().map(|(name, versions)| group_json(name, versions)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `/apis/<group>` APIGroup document, or `None` when the group is not served.
pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    let groups = groups(registry);
    let (name, versions) = groups.iter().find(|(name, _)| name == group)?;
    let mut doc = group_json(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// The APIResourceList of one group version (`/api/v1` when `group` is empty), or `None` when
/// it is not served.
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos: Vec<Arc<ResourceInfo>> =
        served(registry).into_iter().filter(|r| r.group == group && r.version == version).collect();
    if infos.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for info in &infos {
        entries.push(resource_entry(info));
        for sub in &info.subresource_info {
            entries.push(subresource_entry(info, sub));
        }
    }
    // The reference sorts by name, so a resource's subresources follow it.
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let group_version = infos[0].api_version();
    let mut doc = json!({"kind": "APIResourceList", "groupVersion": group_version});
    if !group.is_empty() {
        doc["apiVersion"] = json!("v1");
    }
    doc["resources"] = Value::Array(entries);
    Some(doc)
}

/// The aggregated discovery document (`APIGroupDiscoveryList`, apidiscovery.k8s.io/v2) for
/// `/api` when `legacy`, for `/apis` otherwise.
pub fn aggregated(registry: &Registry, legacy: bool) -> Value {
    let items: Vec<Value> = by_group(registry)
        .into_iter()
        .filter(|(name, _)| name.is_empty() == legacy)
        .map(|(name, versions)| discovery_group(&name, versions))
        .collect();
    json!({
        "apiVersion": "apidiscovery.k8s.io/v2",
        "kind": "APIGroupDiscoveryList",
        "metadata": {},
        "items": items,
    })
}

/// Every resource discovery lists: the registry's and the computed `metrics.k8s.io` ones.
fn served(registry: &Registry) -> Vec<Arc<ResourceInfo>> {
    let mut all = registry.all();
    all.extend(super::resource_metrics::infos());
    all
}

/// Resources by group then version; groups in the reference order (the core group first).
type Grouped = Vec<(String, BTreeMap<String, Vec<Arc<ResourceInfo>>>)>;

fn by_group(registry: &Registry) -> Grouped {
    let mut map: BTreeMap<String, BTreeMap<String, Vec<Arc<ResourceInfo>>>> = BTreeMap::new();
    for info in served(registry) {
        map.entry(info.group.clone())
            .or_default()
            .entry(info.version.clone())
            .or_default()
            .push(info);
    }
    let rank = |g: &str| match GROUP_ORDER.iter().position(|o| *o == g) {
        _ if g.is_empty() => 0,
        Some(i) => i + 1,
        None => GROUP_ORDER.len() + 1,
    };
    let mut groups: Grouped = map.into_iter().collect();
    groups.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    groups
}

/// Named groups in the reference order, each with its versions, preferred version first.
fn groups(registry: &Registry) -> Vec<(String, Vec<String>)> {
    by_group(registry)
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, versions)| {
            let mut versions: Vec<String> = versions.into_keys().collect();
            versions.sort_by(|a, b| compare_versions(a, b));
            (name, versions)
        })
        .collect()
}

/// The legacy APIGroup shape (also each item of APIGroupList).
fn group_json(name: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    let listed: Vec<Value> = versions.iter().map(gv).collect();
    let preferred = listed.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": listed, "preferredVersion": preferred})
}

/// One APIResource of a legacy APIResourceList.
fn resource_entry(info: &ResourceInfo) -> Value {
    let mut entry = Map::new();
    entry.insert("name".into(), json!(info.plural));
    entry.insert("singularName".into(), json!(info.singular));
    entry.insert("namespaced".into(), json!(info.namespaced));
    entry.insert("kind".into(), json!(info.kind));
    entry.insert("verbs".into(), json!(info.verbs));
    if !info.short_names.is_empty() {
        entry.insert("shortNames".into(), json!(info.short_names));
    }
    if !info.categories.is_empty() {
        entry.insert("categories".into(), json!(info.categories));
    }
    Value::Object(entry)
}

/// A subresource's APIResource entry (`pods/status`): empty singularName, like the reference.
fn subresource_entry(info: &ResourceInfo, sub: &Subresource) -> Value {
    let mut entry = json!({
        "name": format!("{}/{}", info.plural, sub.name),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": sub.kind,
        "verbs": sub.verbs,
    });
    if !sub.group.is_empty() || !sub.version.is_empty() {
        entry["group"] = json!(sub.group);
        entry["version"] = json!(sub.version);
    }
    entry
}

/// One APIGroupDiscovery: a group with its versions, preferred first.
fn discovery_group(name: &str, by_version: BTreeMap<String, Vec<Arc<ResourceInfo>>>) -> Value {
    let mut versions: Vec<(String, Vec<Arc<ResourceInfo>>)> = by_version.into_iter().collect();
    versions.sort_by(|(a, _), (b, _)| compare_versions(a, b));
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|(version, mut infos)| {
            infos.sort_by(|a, b| a.plural.cmp(&b.plural));
            let resources: Vec<Value> = infos.iter().map(|i| discovery_resource(i)).collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

/// One APIResourceDiscovery.
fn discovery_resource(info: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": info.plural,
        "responseKind": {"group": "", "version": "", "kind": info.kind},
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        entry["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        entry["categories"] = json!(info.categories);
    }
    if !info.subresource_info.is_empty() {
        let mut subs: Vec<&Subresource> = info.subresource_info.iter().collect();
        subs.sort_by(|a, b| a.name.cmp(&b.name));
        let subs: Vec<Value> = subs
            .into_iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
        entry["subresources"] = Value::Array(subs);
    }
    entry
}

/// Kubernetes version priority (as for CRD versions): GA before beta before alpha, higher major
/// then higher minor first; versions that are not Kubernetes-like come last, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `v<major>[(alpha|beta)<minor>]` → a key that sorts ascending by priority.
fn parse_version(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let major: u64 = rest[..digits].parse().ok()?;
    if major == 0 {
        return None;
    }
    let suffix = &rest[digits..];
    if suffix.is_empty() {
        return Some((2, major, 0));
    }
    let (stability, minor) = if let Some(m) = suffix.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = suffix.strip_prefix("alpha") {
        (0, m)
    } else {
        return None;
    };
    if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stability, major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()
    }

    #[test]
    fn api_v1_lists_pods_with_short_names_categories_and_subresources() {
        let doc = api_resource_list(&Registry::builtin(), "", "v1").unwrap();
        assert_eq!(doc["kind"], "APIResourceList");
        assert_eq!(doc["groupVersion"], "v1");
        let pods = find(&doc, "pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["kind"], "Pod");
        let status = find(&doc, "pods/status");
        assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
        assert_eq!(status["singularName"], "");
        let eviction = find(&doc, "pods/eviction");
        assert_eq!((&eviction["group"], &eviction["version"]), (&json!("policy"), &json!("v1")));
        // A resource without short names carries no shortNames field (omitempty).
        assert!(find(&doc, "secrets").get("shortNames").is_none());
        assert_eq!(find(&doc, "namespaces/finalize")["verbs"], json!(["update"]));
    }

    #[test]
    fn resource_list_is_sorted_by_name() {
        let doc = api_resource_list(&Registry::builtin(), "apps", "v1").unwrap();
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"deployments/scale"));
        assert!(api_resource_list(&Registry::builtin(), "apps", "v1beta9").is_none());
    }

    #[test]
    fn group_list_orders_groups_like_the_reference() {
        let doc = api_group_list(&Registry::builtin());
        let groups: Vec<&str> =
            doc["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(&groups[..3], ["apps", "events.k8s.io", "authentication.k8s.io"]);
        assert!(!groups.contains(&""));
        let apps = api_group(&Registry::builtin(), "apps").unwrap();
        assert_eq!(apps["kind"], "APIGroup");
        assert_eq!(apps["preferredVersion"], json!({"groupVersion": "apps/v1", "version": "v1"}));
        assert!(api_group(&Registry::builtin(), "nope.example.com").is_none());
    }

    #[test]
    fn aggregated_discovery_has_the_v2_shape() {
        let registry = Registry::builtin();
        let legacy = aggregated(&registry, true);
        assert_eq!(legacy["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(legacy["kind"], "APIGroupDiscoveryList");
        let items = legacy["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "");
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pods =
            v1["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"], json!({"group": "", "version": "", "kind": "Pod"}));
        assert_eq!(pods["shortNames"], json!(["po"]));
        let subs = pods["subresources"].as_array().unwrap();
        assert!(subs.iter().any(
            |s| s["subresource"] == "status" && s["verbs"] == json!(["get", "patch", "update"])
        ));

        let apis = aggregated(&registry, false);
        let apps = &apis["items"][0];
        assert_eq!(apps["metadata"]["name"], "apps");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert!(apis["items"].as_array().unwrap().iter().all(|g| g["metadata"]["name"] != ""));
    }

    #[test]
    fn custom_groups_appear_with_the_preferred_version_first() {
        let registry = Registry::builtin();
        let crd = json!({"spec": {"group": "stable.example.com", "scope": "Cluster",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [
                {"name": "v1beta1", "served": true},
                {"name": "v1", "served": true, "storage": true},
                {"name": "v2alpha1", "served": true}]}});
        for info in ResourceInfo::from_crd(&crd).unwrap() {
            registry.insert(info);
        }
        let group = api_group(&registry, "stable.example.com").unwrap();
        assert_eq!(group["preferredVersion"]["version"], "v1");
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v1", "v1beta1", "v2alpha1"]);
        let agg = aggregated(&registry, false);
        let item = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "stable.example.com")
            .unwrap();
        assert_eq!(item["versions"][0]["resources"][0]["scope"], "Cluster");
    }

    #[test]
    fn version_priority_matches_kubernetes_ordering() {
        let mut v = vec!["v1alpha1", "foo", "v2", "v1beta2", "v1", "v11alpha2", "v1beta10", "bar"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["v2", "v1", "v1beta10", "v1beta2", "v11alpha2", "v1alpha1", "bar", "foo"]);
    }
}
