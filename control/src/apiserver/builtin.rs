//! The built-in resources of Kubernetes v1.33 that Skerry serves, with the names, scopes, verbs,
//! subresources and storage prefixes the reference apiserver uses. One row of [`TABLE`] per
//! resource; subresource kinds and verbs come from [`subresource`], so nothing is spelled twice.

use super::resource::{ResourceInfo, Subresource};

/// The verbs of an ordinary stored resource.
const ALL: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// Namespaces: no `deletecollection` (the reference apiserver does not serve it).
const NO_COLLECTION: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
/// Virtual resources that only accept a POST (bindings, reviews).
const CREATE: &[&str] = &["create"];
/// componentstatuses: read-only.
const READ: &[&str] = &["get", "list"];
/// The verbs of status-like subresources.
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
/// The verbs of streaming subresources (exec, attach, portforward).
const CREATE_GET: &[&str] = &["create", "get"];
/// The verbs of proxy subresources.
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];

/// One built-in resource: what discovery shows and where it is stored.
struct Row {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Comma-separated short names.
    short: &'static str,
    /// Comma-separated categories.
    categories: &'static str,
    verbs: &'static [&'static str],
    /// Comma-separated subresources.
    subresources: &'static str,
    /// The store prefix when it is not `/registry/<plural>/`.
    storage: Option<&'static str>,
}

// A table row constructor: positional arguments keep each row of TABLE on one or two lines.
#[allow(clippy::too_many_arguments)]
const fn row(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static str,
    categories: &'static str,
    subresources: &'static str,
) -> Row {
    Row {
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        categories,
        verbs: ALL,
        subresources,
        storage: None,
    }
}

impl Row {
    const fn verbs(mut self, verbs: &'static [&'static str]) -> Row {
        self.verbs = verbs;
        self
    }

    const fn storage(mut self, prefix: &'static str) -> Row {
        self.storage = Some(prefix);
        self
    }
}

const NS: bool = true;
const CLUSTER: bool = false;
const RBAC: &str = "rbac.authorization.k8s.io";
const ADM: &str = "admissionregistration.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// Every built-in resource, in the reference discovery order within each group version.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    // Core group: storage prefixes follow pkg/registry/core/*/storage in the reference.
    row("", "v1", "Binding", "bindings", NS, "", "", "").verbs(CREATE),
    row("", "v1", "ComponentStatus", "componentstatuses", CLUSTER, "cs", "", "").verbs(READ),
    row("", "v1", "ConfigMap", "configmaps", NS, "cm", "", ""),
    row("", "v1", "Endpoints", "endpoints", NS, "ep", "", "")
        .storage("/registry/services/endpoints/"),
    row("", "v1", "Event", "events", NS, "ev", "", ""),
    row("", "v1", "LimitRange", "limitranges", NS, "limits", "", ""),
    row("", "v1", "Namespace", "namespaces", CLUSTER, "ns", "", "finalize,status")
        .verbs(NO_COLLECTION),
    row("", "v1", "Node", "nodes", CLUSTER, "no", "", "proxy,status").storage("/registry/minions/"),
    row("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS, "pvc", "", "status"),
    row("", "v1", "PersistentVolume", "persistentvolumes", CLUSTER, "pv", "", "status"),
    row("", "v1", "Pod", "pods", NS, "po", "all",
        "attach,binding,ephemeralcontainers,eviction,exec,log,portforward,proxy,resize,status"),
    row("", "v1", "PodTemplate", "podtemplates", NS, "", "", ""),
    row("", "v1", "ReplicationController", "replicationcontrollers", NS, "rc", "all",
        "scale,status")
        .storage("/registry/controllers/"),
    row("", "v1", "ResourceQuota", "resourcequotas", NS, "quota", "", "status"),
    row("", "v1", "Secret", "secrets", NS, "", "", ""),
    row("", "v1", "ServiceAccount", "serviceaccounts", NS, "sa", "", "token"),
    row("", "v1", "Service", "services", NS, "svc", "all", "proxy,status")
        .storage("/registry/services/specs/"),
    // Named groups.
    row(ADM, "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", CLUSTER, "",
        "api-extensions", ""),
    row(ADM, "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", CLUSTER, "",
        "api-extensions", "status"),
    row(ADM, "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", CLUSTER,
        "", "api-extensions", ""),
    row(ADM, "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", CLUSTER, "",
        "api-extensions", ""),
    row("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        CLUSTER, "crd,crds", "api-extensions", "status")
        .storage("/registry/apiextensions.k8s.io/customresourcedefinitions/"),
    row("apps", "v1", "ControllerRevision", "controllerrevisions", NS, "", "", ""),
    row("apps", "v1", "DaemonSet", "daemonsets", NS, "ds", "all", "status"),
    row("apps", "v1", "Deployment", "deployments", NS, "deploy", "all", "scale,status"),
    row("apps", "v1", "ReplicaSet", "replicasets", NS, "rs", "all", "scale,status"),
    row("apps", "v1", "StatefulSet", "statefulsets", NS, "sts", "all", "scale,status"),
    row(AUTHN, "v1", "SelfSubjectReview", "selfsubjectreviews", CLUSTER, "", "", "").verbs(CREATE),
    row(AUTHN, "v1", "TokenReview", "tokenreviews", CLUSTER, "", "", "").verbs(CREATE),
    row(AUTHZ, "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", NS, "", "", "")
        .verbs(CREATE),
    row(AUTHZ, "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", CLUSTER, "", "", "")
        .verbs(CREATE),
    row(AUTHZ, "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", CLUSTER, "", "", "")
        .verbs(CREATE),
    row(AUTHZ, "v1", "SubjectAccessReview", "subjectaccessreviews", CLUSTER, "", "", "")
        .verbs(CREATE),
    row("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS, "hpa",
        "all", "status"),
    row("batch", "v1", "CronJob", "cronjobs", NS, "cj", "all", "status"),
    row("batch", "v1", "Job", "jobs", NS, "", "all", "status"),
    row("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
        CLUSTER, "csr", "", "approval,status"),
    row("coordination.k8s.io", "v1", "Lease", "leases", NS, "", "", ""),
    row("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS, "", "", ""),
    // events.k8s.io/v1 events share the core events' storage in the reference apiserver.
    row("events.k8s.io", "v1", "Event", "events", NS, "ev", "", ""),
    row("networking.k8s.io", "v1", "IngressClass", "ingressclasses", CLUSTER, "", "", ""),
    row("networking.k8s.io", "v1", "Ingress", "ingresses", NS, "ing", "", "status")
        .storage("/registry/ingress/"),
    row("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", NS, "netpol", "", ""),
    row("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", CLUSTER, "", "", ""),
    row("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS, "pdb", "", "status"),
    row(RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", CLUSTER, "", "", ""),
    row(RBAC, "v1", "ClusterRole", "clusterroles", CLUSTER, "", "", ""),
    row(RBAC, "v1", "RoleBinding", "rolebindings", NS, "", "", ""),
    row(RBAC, "v1", "Role", "roles", NS, "", "", ""),
    row("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CLUSTER, "pc", "", ""),
    row("storage.k8s.io", "v1", "CSIDriver", "csidrivers", CLUSTER, "", "", ""),
    row("storage.k8s.io", "v1", "CSINode", "csinodes", CLUSTER, "", "", ""),
    row("storage.k8s.io", "v1", "StorageClass", "storageclasses", CLUSTER, "sc", "", ""),
    row("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", CLUSTER, "", "", "status"),
];

/// The order the reference apiserver lists groups in `/apis` (its group priorities); groups not
/// named here (custom resources) follow, alphabetically.
pub const GROUP_ORDER: &[&str] = &[
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

/// The kind and verbs of subresource `name` of a resource of kind `parent` (as the reference's
/// discovery reports them: e.g. `pods/eviction` takes a policy/v1 Eviction).
pub fn subresource(parent: &str, name: &str) -> Subresource {
    let (group, version, kind, verbs): (&str, &str, String, &[&str]) = match name {
        "scale" => ("autoscaling", "v1", "Scale".into(), GET_PATCH_UPDATE),
        "binding" => ("", "", "Binding".into(), CREATE),
        "eviction" => ("policy", "v1", "Eviction".into(), CREATE),
        "token" => (AUTHN, "v1", "TokenRequest".into(), CREATE),
        "log" => ("", "", parent.into(), &["get"]),
        "exec" | "attach" | "portforward" => {
            let options = match name {
                "exec" => "PodExecOptions",
                "attach" => "PodAttachOptions",
                _ => "PodPortForwardOptions",
            };
            ("", "", options.into(), CREATE_GET)
        }
        "proxy" => ("", "", format!("{parent}ProxyOptions"), PROXY),
        "finalize" => ("", "", parent.into(), &["update"]),
        // status, approval, ephemeralcontainers, resize: the parent object itself.
        _ => ("", "", parent.into(), GET_PATCH_UPDATE),
    };
    Subresource {
        name: name.to_string(),
        group: group.to_string(),
        version: version.to_string(),
        kind,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Row {
    fn to_info(&self) -> ResourceInfo {
        let subresources = split(self.subresources);
        ResourceInfo {
            group: self.group.to_string(),
            version: self.version.to_string(),
            kind: self.kind.to_string(),
            list_kind: format!("{}List", self.kind),
            plural: self.plural.to_string(),
            singular: self.kind.to_lowercase(),
            namespaced: self.namespaced,
            short_names: split(self.short),
            categories: split(self.categories),
            verbs: self.verbs.iter().map(|v| v.to_string()).collect(),
            subresource_info: subresources.iter().map(|s| subresource(self.kind, s)).collect(),
            subresources,
            storage_prefix: match self.storage {
                Some(prefix) => prefix.to_string(),
                None => format!("/registry/{}/", self.plural),
            },
            custom: false,
            printer_columns: Vec::new(),
            schema: None,
            scale: None,
            storage_version: true,
        }
    }
}

/// Every built-in resource.
pub fn resources() -> Vec<ResourceInfo> {
    TABLE.iter().map(Row::to_info).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(group: &str, plural: &str) -> ResourceInfo {
        resources().into_iter().find(|r| r.group == group && r.plural == plural).unwrap()
    }

    #[test]
    fn pods_have_reference_names_and_subresources() {
        let pods = find("", "pods");
        assert_eq!(pods.short_names, ["po"]);
        assert_eq!(pods.categories, ["all"]);
        assert_eq!(pods.singular, "pod");
        assert_eq!(pods.list_kind, "PodList");
        assert_eq!(pods.storage_key(Some("default"), "web"), "/registry/pods/default/web");
        let status = pods.subresource("status").unwrap();
        assert_eq!((status.kind.as_str(), status.verbs.len()), ("Pod", 3));
        let eviction = pods.subresource("eviction").unwrap();
        assert_eq!((eviction.group.as_str(), eviction.kind.as_str()), ("policy", "Eviction"));
        assert_eq!(pods.subresource("exec").unwrap().verbs, ["create", "get"]);
        assert_eq!(pods.subresource("binding").unwrap().verbs, ["create"]);
    }

    #[test]
    fn storage_prefixes_follow_the_reference_layout() {
        assert_eq!(find("", "services").storage_prefix, "/registry/services/specs/");
        assert_eq!(find("", "endpoints").storage_prefix, "/registry/services/endpoints/");
        assert_eq!(find("", "nodes").storage_key(None, "n1"), "/registry/minions/n1");
        assert_eq!(find("apps", "deployments").storage_prefix, "/registry/deployments/");
        assert_eq!(
            find("apiextensions.k8s.io", "customresourcedefinitions").storage_prefix,
            "/registry/apiextensions.k8s.io/customresourcedefinitions/"
        );
    }

    #[test]
    fn virtual_resources_only_accept_their_verbs() {
        assert_eq!(find("", "bindings").verbs, ["create"]);
        assert_eq!(find("", "componentstatuses").verbs, ["get", "list"]);
        assert!(!find("", "namespaces").verbs.contains(&"deletecollection".to_string()));
        assert_eq!(find(AUTHZ, "selfsubjectaccessreviews").verbs, ["create"]);
    }

    #[test]
    fn scale_subresources_return_autoscaling_v1_scale() {
        for (group, plural) in
            [("apps", "deployments"), ("apps", "statefulsets"), ("", "replicationcontrollers")]
        {
            let scale = find(group, plural).subresource("scale").cloned().unwrap();
            assert_eq!(
                (scale.group, scale.version, scale.kind),
                ("autoscaling".into(), "v1".into(), "Scale".into())
            );
        }
    }

    #[test]
    fn serves_every_resource_of_issue_3() {
        let expected: &[(&str, &str)] = &[
            ("", "namespaces"),
            ("", "pods"),
            ("", "services"),
            ("", "endpoints"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("", "nodes"),
            ("", "events"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("", "resourcequotas"),
            ("", "limitranges"),
            ("", "replicationcontrollers"),
            ("", "podtemplates"),
            ("", "bindings"),
            ("", "componentstatuses"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("apps", "controllerrevisions"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
            ("coordination.k8s.io", "leases"),
            ("discovery.k8s.io", "endpointslices"),
            ("events.k8s.io", "events"),
            (RBAC, "roles"),
            (RBAC, "rolebindings"),
            (RBAC, "clusterroles"),
            (RBAC, "clusterrolebindings"),
            ("certificates.k8s.io", "certificatesigningrequests"),
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("storage.k8s.io", "storageclasses"),
            ("storage.k8s.io", "csidrivers"),
            ("storage.k8s.io", "csinodes"),
            ("storage.k8s.io", "volumeattachments"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "ingressclasses"),
            ("networking.k8s.io", "networkpolicies"),
            ("node.k8s.io", "runtimeclasses"),
            (ADM, "validatingwebhookconfigurations"),
            (ADM, "mutatingwebhookconfigurations"),
            (ADM, "validatingadmissionpolicies"),
            (ADM, "validatingadmissionpolicybindings"),
            (AUTHZ, "selfsubjectaccessreviews"),
            (AUTHZ, "subjectaccessreviews"),
            (AUTHZ, "selfsubjectrulesreviews"),
            (AUTHZ, "localsubjectaccessreviews"),
            (AUTHN, "tokenreviews"),
            (AUTHN, "selfsubjectreviews"),
        ];
        let all = resources();
        for (group, plural) in expected {
            assert!(
                all.iter().any(|r| r.group == *group && r.plural == *plural),
                "{group}/{plural}"
            );
        }
        assert_eq!(all.len(), expected.len());
        // The workloads `kubectl get all` shows.
        let mut all_category: Vec<&str> = all
            .iter()
            .filter(|r| r.categories.contains(&"all".to_string()))
            .map(|r| r.plural.as_str())
            .collect();
        all_category.sort_unstable();
        assert_eq!(
            all_category,
            [
                "cronjobs",
                "daemonsets",
                "deployments",
                "horizontalpodautoscalers",
                "jobs",
                "pods",
                "replicasets",
                "replicationcontrollers",
                "services",
                "statefulsets"
            ]
        );
    }

    #[test]
    fn no_duplicate_resources() {
        let all = resources();
        let mut keys: Vec<_> = all.iter().map(|r| (&r.group, &r.version, &r.plural)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), all.len());
    }
}
