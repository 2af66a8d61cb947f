//! The built-in resources of Kubernetes v1.33 that Skerry serves, with the names, scopes, verbs
//! and subresources the reference apiserver's discovery reports.

use super::resource::ResourceInfo;

const ALL_VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn info(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short_names: &[&str],
    subresources: &[&str],
) -> ResourceInfo {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ResourceInfo {
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: strings(short_names),
        categories: Vec::new(),
        verbs: strings(ALL_VERBS),
        subresources: strings(subresources),
        storage_prefix: format!("/registry/{plural}/"),
        custom: false,
    }
}

/// Every built-in resource.
pub fn resources() -> Vec<ResourceInfo> {
    vec![
        info("", "v1", "Namespace", "namespaces", false, &["ns"], &["status", "finalize"]),
        info("", "v1", "Pod", "pods", true, &["po"], &["status", "binding"]),
    ]
}
