//! The dependency graph the garbage collector keeps: every object it watches, by uid, with its
//! ownerReferences and deletion state, and the reverse index owner uid → dependents. Owners
//! need not be present: a reference to an unseen uid is just an edge to nobody yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::util::discovery::ServedResource;

/// The finalizer that makes a deleted owner wait for its blocking dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that makes the collector strip the owner from its dependents first.
pub const ORPHAN: &str = "orphan";

/// What the collector knows of one object.
#[derive(Debug, Clone)]
pub struct Node {
    pub uid: String,
    pub resource: Arc<ServedResource>,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
}

impl Node {
    /// The node of an object's metadata, if it has a uid and name.
    pub fn from_meta(resource: Arc<ServedResource>, meta: &ObjectMeta) -> Option<Node> {
        Some(Node {
            uid: meta.uid.clone().filter(|u| !u.is_empty())?,
            resource,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone()?,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            being_deleted: meta.deletion_timestamp.is_some(),
        })
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Deleted in the foreground: it waits for its dependents.
    pub fn is_deleting_dependents(&self) -> bool {
        self.being_deleted && self.has_finalizer(FOREGROUND)
    }

    /// Deleted with the Orphan policy: its dependents lose the reference to it first.
    pub fn is_orphaning(&self) -> bool {
        self.being_deleted && self.has_finalizer(ORPHAN)
    }

    /// Which (group, version, plural) the object was seen through.
    pub fn resource_key(&self) -> (String, String, String) {
        let r = &self.resource.resource;
        (r.group.clone(), r.version.clone(), r.plural.clone())
    }

    /// `kind namespace/name` for logs.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.resource.resource.kind, self.name)
        } else {
            format!("{} {}/{}", self.resource.resource.kind, self.namespace, self.name)
        }
    }
}

/// The objects by uid and the reverse ownerReference index.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Records `node`, replacing what was known of its uid; returns the previous state.
    pub fn upsert(&mut self, node: Node) -> Option<Node> {
        let previous = self.remove(&node.uid);
        for owner in &node.owners {
            self.dependents.entry(owner.uid.clone()).or_default().insert(node.uid.clone());
        }
        self.nodes.insert(node.uid.clone(), node);
        previous
    }

    /// Forgets the object `uid` (its edges to owners too); returns its last state.
    pub fn remove(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
        Some(node)
    }

    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The objects with an ownerReference to `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d)).collect()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The uids of every object seen through resource `key`.
    pub fn uids_of(&self, key: &(String, String, String)) -> Vec<String> {
        self.nodes.values().filter(|n| &n.resource_key() == key).map(|n| n.uid.clone()).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// The dependents of `owner_uid` that block its Foreground deletion: those whose reference to
/// it carries `blockOwnerDeletion: true`.
pub fn blocking_dependents<'a>(graph: &'a Graph, owner_uid: &str) -> Vec<&'a Node> {
    graph
        .dependents(owner_uid)
        .into_iter()
        .filter(|d| {
            d.owners.iter().any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::discovery::ApiResource;

    pub fn resource() -> Arc<ServedResource> {
        Arc::new(ServedResource {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            namespaced: true,
            verbs: vec!["list".into(), "watch".into(), "delete".into()],
        })
    }

    pub fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: Some(block),
        }
    }

    pub fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            uid: uid.into(),
            resource: resource(),
            namespace: "default".into(),
            name: format!("n-{uid}"),
            resource_version: "1".into(),
            owners,
            finalizers: vec![],
            being_deleted: false,
        }
    }

    #[test]
    fn reverse_index_follows_updates_and_removals() {
        let mut g = Graph::default();
        g.upsert(node("a", vec![]));
        g.upsert(node("b", vec![owner_ref("a", true)]));
        g.upsert(node("c", vec![owner_ref("a", false), owner_ref("x", false)]));
        assert_eq!(g.dependents("a").len(), 2);
        // An edge to an owner never seen is kept (it may appear, or be dangling).
        assert!(g.has_dependents("x"));
        // Dropping the reference drops the edge.
        g.upsert(node("c", vec![owner_ref("x", false)]));
        assert_eq!(g.dependents("a").len(), 1);
        g.remove("b");
        assert!(!g.has_dependents("a"));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn only_block_owner_deletion_references_block() {
        let mut g = Graph::default();
        g.upsert(node("b", vec![owner_ref("a", true)]));
        g.upsert(node("c", vec![owner_ref("a", false)]));
        let blocking: Vec<_> = blocking_dependents(&g, "a").iter().map(|n| n.uid.clone()).collect();
        assert_eq!(blocking, vec!["b".to_string()]);
    }

    #[test]
    fn deletion_modes_come_from_finalizers_and_timestamp() {
        let mut n = node("a", vec![]);
        n.finalizers = vec![FOREGROUND.into()];
        assert!(!n.is_deleting_dependents(), "a finalizer alone is not a deletion");
        n.being_deleted = true;
        assert!(n.is_deleting_dependents());
        assert!(!n.is_orphaning());
        n.finalizers = vec![ORPHAN.into()];
        assert!(n.is_orphaning());
    }
}
