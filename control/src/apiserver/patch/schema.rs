//! Patch metadata of the built-in types: which lists merge and by which key under strategic
//! merge patch (`patchStrategy`/`patchMergeKey`), and how server-side apply treats each list,
//! map and struct (`x-kubernetes-list-type`, `list-map-keys`, `map-type`, `struct-type`).
//!
//! The entries are transcribed from the Go tags of k8s.io/api v0.33 (Kubernetes v1.33) and kept
//! as small type fragments ([`TypeDef`]) shared between kinds: `Container` is written once and
//! reached from every pod template. Anything not listed has the reference defaults: structs and
//! maps merge field by field, lists are replaced whole (SMP) and atomic (apply). A [`Schema`] is a
//! cursor into that tree; [`list_fields`] flattens it into the per-kind table of list fields keyed
//! by their path from the object root (`spec.template.spec.containers`).

/// How strategic merge patch combines a list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smp {
    /// No patch strategy: the patch's list replaces the original's.
    Replace,
    /// `patchStrategy: merge` on a list of objects, matched by this `patchMergeKey`.
    MergeByKey(&'static str),
    /// `patchStrategy: merge` on a list of scalars: a set union.
    MergeScalars,
}

/// How server-side apply tracks a list field (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole.
    Atomic,
    /// A set of scalars, each owned on its own (`v:<value>`).
    Set,
    /// Objects identified by these keys, each owned on its own (`k:{...}`).
    Map(&'static [&'static str]),
}

/// The patch metadata of one list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMeta {
    /// Strategic merge patch behaviour.
    pub smp: Smp,
    /// Server-side apply behaviour.
    pub ssa: ListType,
}

impl ListMeta {
    /// The reference default for a list without tags.
    pub const ATOMIC: ListMeta = ListMeta { smp: Smp::Replace, ssa: ListType::Atomic };
}

/// The shape of one field that differs from the defaults.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A nested struct with its own field metadata.
    Struct(&'static TypeDef),
    /// A `map[string]string` that apply owns as a whole (`mapType=atomic`).
    AtomicMap,
    /// A list; `elem` describes its elements when they are structs with metadata of their own.
    List(ListMeta, Option<&'static TypeDef>),
}

/// One field with non-default metadata.
#[derive(Debug)]
pub struct Field {
    /// The JSON field name.
    pub name: &'static str,
    /// Its shape.
    pub shape: Shape,
}

/// A Go API type, reduced to the fields whose patch metadata matters.
#[derive(Debug)]
pub struct TypeDef {
    /// The Go type name, for error messages and the flattened table.
    pub name: &'static str,
    /// `+structType=atomic`: apply owns the struct as a whole.
    pub atomic: bool,
    /// Fields with non-default metadata.
    pub fields: &'static [Field],
}

/// A position in the type tree; `Schema::UNKNOWN` (custom resources, unknown fields) has the
/// defaults everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schema(Option<&'static TypeDef>);

impl Schema {
    /// No metadata: maps merge, lists are replaced / atomic.
    pub const UNKNOWN: Schema = Schema(None);

    /// The schema of a built-in kind in an API group (`""` for core); unknown kinds get the
    /// metadata of `ObjectMeta` only.
    pub fn for_kind(group: &str, kind: &str) -> Schema {
        let root = match (group, kind) {
            ("", "Pod") => &POD,
            ("", "PodTemplate") => &POD_TEMPLATE,
            ("", "ReplicationController") => &REPLICATION_CONTROLLER,
            ("", "Service") => &SERVICE,
            ("", "Node") => &NODE,
            ("", "Namespace") => &NAMESPACE,
            ("", "ServiceAccount") => &SERVICE_ACCOUNT,
            ("", "PersistentVolumeClaim") => &PVC,
            ("apps", "Deployment") => &DEPLOYMENT,
            ("apps", "ReplicaSet") => &REPLICA_SET,
            ("apps", "StatefulSet") => &STATEFUL_SET,
            ("apps", "DaemonSet") => &DAEMON_SET,
            ("batch", "Job") => &JOB,
            ("batch", "CronJob") => &CRON_JOB,
            _ => &OBJECT,
        };
        Schema(Some(root))
    }

    /// The metadata of field `name` here, if it differs from the defaults.
    pub fn shape(&self, name: &str) -> Option<Shape> {
        self.0?.fields.iter().find(|f| f.name == name).map(|f| f.shape)
    }

    /// The list metadata of field `name` (defaults to atomic/replace).
    pub fn list(&self, name: &str) -> ListMeta {
        match self.shape(name) {
            Some(Shape::List(meta, _)) => meta,
            _ => ListMeta::ATOMIC,
        }
    }

    /// The schema of the struct in field `name`, or of the elements of the list in it.
    pub fn child(&self, name: &str) -> Schema {
        match self.shape(name) {
            Some(Shape::Struct(t)) | Some(Shape::List(_, Some(t))) => Schema(Some(t)),
            _ => Schema::UNKNOWN,
        }
    }

    /// True when apply owns the value of field `name` as a whole (atomic struct or map).
    pub fn atomic(&self, name: &str) -> bool {
        match self.shape(name) {
            Some(Shape::Struct(t)) => t.atomic,
            Some(Shape::AtomicMap) => true,
            _ => false,
        }
    }
}

/// Every list field with non-default metadata reachable from a kind's root, keyed by its dotted
/// path (`spec.template.spec.containers`): the per-kind table, derived from the fragments.
pub fn list_fields(group: &str, kind: &str) -> Vec<(String, ListMeta)> {
    fn walk(t: &'static TypeDef, prefix: &str, out: &mut Vec<(String, ListMeta)>) {
        for f in t.fields {
            let path =
                if prefix.is_empty() { f.name.to_string() } else { format!("{prefix}.{}", f.name) };
            match f.shape {
                Shape::Struct(child) => walk(child, &path, out),
                Shape::List(meta, elem) => {
                    out.push((path.clone(), meta));
                    if let Some(child) = elem {
                        walk(child, &format!("{path}[]"), out);
                    }
                }
                Shape::AtomicMap => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Some(root) = Schema::for_kind(group, kind).0 {
        walk(root, "", &mut out);
    }
    out
}

const fn merge_map(key: &'static str, keys: &'static [&'static str]) -> Shape {
    Shape::List(ListMeta { smp: Smp::MergeByKey(key), ssa: ListType::Map(keys) }, None)
}

const fn merge_map_of(
    key: &'static str,
    keys: &'static [&'static str],
    t: &'static TypeDef,
) -> Shape {
    Shape::List(ListMeta { smp: Smp::MergeByKey(key), ssa: ListType::Map(keys) }, Some(t))
}

const fn field(name: &'static str, shape: Shape) -> Field {
    Field { name, shape }
}

const fn strukt(name: &'static str, fields: &'static [Field]) -> TypeDef {
    TypeDef { name, atomic: false, fields }
}

/// Conditions lists: merge by `type` (SMP), map keyed by `type` (apply).
const CONDITIONS: Field = field("conditions", merge_map("type", &["type"]));

// --- meta/v1 ---------------------------------------------------------------------------------

static OBJECT_META: TypeDef = strukt(
    "ObjectMeta",
    &[
        field(
            "finalizers",
            Shape::List(ListMeta { smp: Smp::MergeScalars, ssa: ListType::Set }, None),
        ),
        // OwnerReference is `structType=atomic`; as a list element it is keyed by uid.
        field("ownerReferences", merge_map("uid", &["uid"])),
    ],
);

static LABEL_SELECTOR: TypeDef = TypeDef { name: "LabelSelector", atomic: true, fields: &[] };

static OBJECT: TypeDef = strukt("Object", &[field("metadata", Shape::Struct(&OBJECT_META))]);

// --- core/v1 ---------------------------------------------------------------------------------

/// `Container` and `EphemeralContainerCommon` carry the same tags.
static CONTAINER: TypeDef = strukt(
    "Container",
    &[
        // SMP merges ports on containerPort alone; apply keys them by (containerPort, protocol).
        field("ports", merge_map("containerPort", &["containerPort", "protocol"])),
        field("env", merge_map("name", &["name"])),
        field("volumeMounts", merge_map("mountPath", &["mountPath"])),
        field("volumeDevices", merge_map("devicePath", &["devicePath"])),
        field("resources", Shape::Struct(&RESOURCE_REQUIREMENTS)),
    ],
);

static RESOURCE_REQUIREMENTS: TypeDef = strukt(
    "ResourceRequirements",
    &[field(
        "claims",
        Shape::List(ListMeta { smp: Smp::Replace, ssa: ListType::Map(&["name"]) }, None),
    )],
);

static POD_SPEC: TypeDef = strukt(
    "PodSpec",
    &[
        // patchStrategy "merge,retainKeys": the retainKeys part only shapes generated patches.
        field("volumes", merge_map("name", &["name"])),
        field("initContainers", merge_map_of("name", &["name"], &CONTAINER)),
        field("containers", merge_map_of("name", &["name"], &CONTAINER)),
        field("ephemeralContainers", merge_map_of("name", &["name"], &CONTAINER)),
        field("nodeSelector", Shape::AtomicMap),
        field("imagePullSecrets", merge_map("name", &["name"])),
        field("hostAliases", merge_map("ip", &["ip"])),
        field(
            "topologySpreadConstraints",
            merge_map("topologyKey", &["topologyKey", "whenUnsatisfiable"]),
        ),
        field("schedulingGates", merge_map("name", &["name"])),
        field("resourceClaims", merge_map("name", &["name"])),
    ],
);

static POD_STATUS: TypeDef = strukt(
    "PodStatus",
    &[
        CONDITIONS,
        // hostIPs merge by ip under SMP but are atomic under apply.
        field(
            "hostIPs",
            Shape::List(ListMeta { smp: Smp::MergeByKey("ip"), ssa: ListType::Atomic }, None),
        ),
        field("podIPs", merge_map("ip", &["ip"])),
        field("resourceClaimStatuses", merge_map("name", &["name"])),
    ],
);

static POD_TEMPLATE_SPEC: TypeDef = strukt(
    "PodTemplateSpec",
    &[field("metadata", Shape::Struct(&OBJECT_META)), field("spec", Shape::Struct(&POD_SPEC))],
);

static POD: TypeDef = strukt(
    "Pod",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("spec", Shape::Struct(&POD_SPEC)),
        field("status", Shape::Struct(&POD_STATUS)),
    ],
);

static POD_TEMPLATE: TypeDef = strukt(
    "PodTemplate",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("template", Shape::Struct(&POD_TEMPLATE_SPEC)),
    ],
);

/// Status types whose only tagged field is `conditions`.
static CONDITIONS_STATUS: TypeDef = strukt("ConditionsStatus", &[CONDITIONS]);

static REPLICATION_CONTROLLER: TypeDef = strukt(
    "ReplicationController",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field(
            "spec",
            Shape::Struct(&strukt(
                "ReplicationControllerSpec",
                &[
                    field("selector", Shape::AtomicMap),
                    field("template", Shape::Struct(&POD_TEMPLATE_SPEC)),
                ],
            )),
        ),
        field("status", Shape::Struct(&CONDITIONS_STATUS)),
    ],
);

static SERVICE: TypeDef = strukt(
    "Service",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field(
            "spec",
            Shape::Struct(&strukt(
                "ServiceSpec",
                &[
                    // SMP merges on port alone; apply keys by (port, protocol).
                    field("ports", merge_map("port", &["port", "protocol"])),
                    field("selector", Shape::AtomicMap),
                ],
            )),
        ),
        field("status", Shape::Struct(&CONDITIONS_STATUS)),
    ],
);

static NODE: TypeDef = strukt(
    "Node",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        // taints have no patch strategy (`listType=atomic`): a patch replaces them all.
        field(
            "spec",
            Shape::Struct(&strukt(
                "NodeSpec",
                &[field(
                    "podCIDRs",
                    Shape::List(ListMeta { smp: Smp::MergeScalars, ssa: ListType::Set }, None),
                )],
            )),
        ),
        field(
            "status",
            Shape::Struct(&strukt(
                "NodeStatus",
                &[CONDITIONS, field("addresses", merge_map("type", &["type"]))],
            )),
        ),
    ],
);

static NAMESPACE: TypeDef = strukt(
    "Namespace",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("status", Shape::Struct(&CONDITIONS_STATUS)),
    ],
);

static SERVICE_ACCOUNT: TypeDef = strukt(
    "ServiceAccount",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("secrets", merge_map("name", &["name"])),
    ],
);

static PVC: TypeDef = strukt(
    "PersistentVolumeClaim",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("status", Shape::Struct(&CONDITIONS_STATUS)),
    ],
);

// --- apps/v1, batch/v1 -----------------------------------------------------------------------

/// Deployment, ReplicaSet, StatefulSet and DaemonSet specs: an atomic selector and a template.
static WORKLOAD_SPEC: TypeDef = strukt(
    "WorkloadSpec",
    &[
        field("selector", Shape::Struct(&LABEL_SELECTOR)),
        field("template", Shape::Struct(&POD_TEMPLATE_SPEC)),
    ],
);

/// The fields shared by the four workload kinds (their specs and statuses carry the same tags).
const WORKLOAD_FIELDS: &[Field] = &[
    field("metadata", Shape::Struct(&OBJECT_META)),
    field("spec", Shape::Struct(&WORKLOAD_SPEC)),
    field("status", Shape::Struct(&CONDITIONS_STATUS)),
];

const fn workload(name: &'static str) -> TypeDef {
    strukt(name, WORKLOAD_FIELDS)
}

static DEPLOYMENT: TypeDef = workload("Deployment");
static REPLICA_SET: TypeDef = workload("ReplicaSet");
static STATEFUL_SET: TypeDef = workload("StatefulSet");
static DAEMON_SET: TypeDef = workload("DaemonSet");

static JOB_SPEC: TypeDef = strukt(
    "JobSpec",
    &[
        field("selector", Shape::Struct(&LABEL_SELECTOR)),
        field("template", Shape::Struct(&POD_TEMPLATE_SPEC)),
    ],
);

static JOB: TypeDef = strukt(
    "Job",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field("spec", Shape::Struct(&JOB_SPEC)),
        // JobStatus.conditions: merge by type under SMP, but `listType=atomic` under apply.
        field(
            "status",
            Shape::Struct(&strukt(
                "JobStatus",
                &[field(
                    "conditions",
                    Shape::List(
                        ListMeta { smp: Smp::MergeByKey("type"), ssa: ListType::Atomic },
                        None,
                    ),
                )],
            )),
        ),
    ],
);

static CRON_JOB: TypeDef = strukt(
    "CronJob",
    &[
        field("metadata", Shape::Struct(&OBJECT_META)),
        field(
            "spec",
            Shape::Struct(&strukt(
                "CronJobSpec",
                &[field(
                    "jobTemplate",
                    Shape::Struct(&strukt(
                        "JobTemplateSpec",
                        &[
                            field("metadata", Shape::Struct(&OBJECT_META)),
                            field("spec", Shape::Struct(&JOB_SPEC)),
                        ],
                    )),
                )],
            )),
        ),
    ],
);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_at(group: &str, kind: &str, path: &str) -> Option<ListMeta> {
        list_fields(group, kind).into_iter().find(|(p, _)| p == path).map(|(_, m)| m)
    }

    #[test]
    fn every_pod_template_reaches_the_container_table() {
        // k8s.io/api v0.33 core/v1 PodSpec.containers: patchStrategy=merge, patchMergeKey=name.
        for (group, kind, path) in [
            ("apps", "Deployment", "spec.template.spec.containers"),
            ("apps", "StatefulSet", "spec.template.spec.containers"),
            ("apps", "DaemonSet", "spec.template.spec.containers"),
            ("apps", "ReplicaSet", "spec.template.spec.containers"),
            ("batch", "Job", "spec.template.spec.containers"),
            ("batch", "CronJob", "spec.jobTemplate.spec.template.spec.containers"),
            ("", "PodTemplate", "template.spec.containers"),
            ("", "ReplicationController", "spec.template.spec.containers"),
            ("", "Pod", "spec.containers"),
        ] {
            let meta = meta_at(group, kind, path).unwrap_or_else(|| panic!("{kind} {path}"));
            assert_eq!(meta.smp, Smp::MergeByKey("name"), "{kind} {path}");
            let env = meta_at(group, kind, &format!("{path}[].env")).unwrap();
            assert_eq!(env.ssa, ListType::Map(&["name"]), "{kind} {path}[].env");
        }
    }

    #[test]
    fn ports_merge_on_one_key_but_apply_keys_on_two() {
        // Container.ports: patchMergeKey=containerPort, listMapKey=containerPort,protocol.
        let ports = meta_at("", "Pod", "spec.containers[].ports").unwrap();
        assert_eq!(ports.smp, Smp::MergeByKey("containerPort"));
        assert_eq!(ports.ssa, ListType::Map(&["containerPort", "protocol"]));
        let svc = meta_at("", "Service", "spec.ports").unwrap();
        assert_eq!(
            (svc.smp, svc.ssa),
            (Smp::MergeByKey("port"), ListType::Map(&["port", "protocol"]))
        );
    }

    #[test]
    fn untagged_lists_are_atomic_and_replaced() {
        // PodSpec.tolerations, NodeSpec.taints, Container.envFrom, PolicyRule lists: listType=atomic.
        let pod_spec = Schema::for_kind("", "Pod").child("spec");
        assert_eq!(pod_spec.list("tolerations"), ListMeta::ATOMIC);
        assert_eq!(pod_spec.child("containers").list("envFrom"), ListMeta::ATOMIC);
        assert_eq!(Schema::for_kind("", "Node").child("spec").list("taints"), ListMeta::ATOMIC);
        assert_eq!(
            Schema::for_kind("rbac.authorization.k8s.io", "Role").list("rules"),
            ListMeta::ATOMIC
        );
        assert_eq!(Schema::UNKNOWN.list("anything"), ListMeta::ATOMIC);
    }

    #[test]
    fn finalizers_are_a_merged_set_on_every_kind() {
        // ObjectMeta.finalizers: patchStrategy=merge, listType=set.
        let meta = Schema::for_kind("example.com", "Widget").child("metadata").list("finalizers");
        assert_eq!(meta, ListMeta { smp: Smp::MergeScalars, ssa: ListType::Set });
    }

    #[test]
    fn selectors_and_node_selector_are_atomic_for_apply() {
        // LabelSelector is structType=atomic; PodSpec.nodeSelector is mapType=atomic.
        let spec = Schema::for_kind("apps", "Deployment").child("spec");
        assert!(spec.atomic("selector"));
        assert!(spec.child("template").child("spec").atomic("nodeSelector"));
        assert!(!spec.atomic("template"));
    }

    #[test]
    fn job_conditions_merge_under_smp_but_are_atomic_for_apply() {
        let meta = meta_at("batch", "Job", "status.conditions").unwrap();
        assert_eq!((meta.smp, meta.ssa), (Smp::MergeByKey("type"), ListType::Atomic));
    }
}
