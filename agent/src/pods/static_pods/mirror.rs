//! Mirror pods: the API server's view of this node's static pods, as the kubelet keeps them.
//!
//! For each static pod the server holds a pod of the same namespace and name, annotated
//! `kubernetes.io/config.mirror: <hash of the static pod>` and owned by this node's Node (a
//! controller reference, so the garbage collector removes it with the Node). [`plan`] compares
//! the static pods with the mirror pods the pod watch saw on this node, level-triggered:
//! - a static pod without a mirror pod gets one (created, then its latest status written);
//! - a mirror pod being deleted (`kubectl delete`), or mirroring another version of the
//!   manifest, is deleted for good (grace 0, UID precondition) and made again on the next
//!   pass — deleting a mirror pod never touches the static pod's containers;
//! - a mirror pod whose static pod is gone (file removed) is deleted.
//!
//! [`MirrorSync::run`] executes the plan whenever either side changes, and every [`RETRY`]
//! while something failed (the server away): the static pods keep running regardless.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::watch;

use super::{mirror_hash, static_hash, CONFIG_MIRROR};
use crate::pods::status_writer::StatusWriter;

/// How often a failed or pending plan is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// `(namespace, name)` of a pod.
pub type PodKey = (String, String);

/// The mirror pods on this node as the pod watch saw them; `None` until the first list.
pub type Observed = Option<BTreeMap<PodKey, Pod>>;

/// One step towards the desired mirror pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the mirror pod of this static pod.
    Create(Box<Pod>),
    /// Delete this mirror pod (grace 0, preconditioned on its UID).
    Delete {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its UID on the server.
        uid: String,
        /// Why (for the log).
        why: &'static str,
    },
}

/// `(namespace, name)` of `pod`.
pub fn key_of(pod: &Pod) -> PodKey {
    let m = &pod.metadata;
    (m.namespace.clone().unwrap_or_else(|| "default".into()), m.name.clone().unwrap_or_default())
}

/// What to do so that `observed` (this node's mirror pods) mirrors `desired` (its static pods).
pub fn plan(desired: &[Pod], observed: &BTreeMap<PodKey, Pod>) -> Vec<Action> {
    let delete = |mirror: &Pod, why| Action::Delete {
        namespace: key_of(mirror).0,
        name: key_of(mirror).1,
        uid: mirror.metadata.uid.clone().unwrap_or_default(),
        why,
    };
    let mut actions = Vec::new();
    let mut wanted = HashSet::new();
    for pod in desired {
        let key = key_of(pod);
        wanted.insert(key.clone());
        match observed.get(&key) {
            None => actions.push(Action::Create(Box::new(pod.clone()))),
            Some(m) if m.metadata.deletion_timestamp.is_some() => {
                actions.push(delete(m, "the mirror pod is being deleted; it will be recreated"))
            }
            Some(m) if mirror_hash(m) != static_hash(pod) => {
                actions.push(delete(m, "the mirror pod mirrors another version of the manifest"))
            }
            Some(_) => {}
        }
    }
    for (key, mirror) in observed {
        if !wanted.contains(key) {
            actions.push(delete(mirror, "its static pod is gone"));
        }
    }
    actions
}

/// The mirror pod of `static_pod` for the Node with UID `node_uid`: the static pod with the
/// mirror annotation and the Node as controller owner, without server-assigned fields.
/// `None` when `static_pod` is not a static pod.
pub fn mirror_pod(static_pod: &Pod, node_uid: &str) -> Option<Pod> {
    let hash = static_hash(static_pod)?.to_string();
    let node = static_pod.spec.as_ref()?.node_name.clone()?;
    let mut pod = static_pod.clone();
    let m = &mut pod.metadata;
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.deletion_timestamp = None;
    m.generation = None;
    m.managed_fields = None;
    m.annotations.get_or_insert_with(Default::default).insert(CONFIG_MIRROR.into(), hash);
    // NodeRestriction admits exactly this owner: the node itself, as controller, and no
    // blockOwnerDeletion.
    m.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node,
        uid: node_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    pod.status = None;
    Some(pod)
}

/// Keeps the server's mirror pods in line with the static pods.
pub struct MirrorSync {
    client: kube::Client,
    node_name: String,
    status: StatusWriter,
    node_uid: Option<String>,
}

impl MirrorSync {
    /// A sync for node `node_name`; statuses of recreated mirror pods go through `status`.
    pub fn new(client: kube::Client, node_name: String, status: StatusWriter) -> MirrorSync {
        MirrorSync { client, node_name, status, node_uid: None }
    }

    /// Runs until `shutdown` flips or the pod manager drops its senders.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Vec<Pod>>,
        mut observed: watch::Receiver<Observed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry = false;
        loop {
            let statics = desired.borrow_and_update().clone();
            let mirrors = observed.borrow_and_update().clone();
            // Before the first list nothing is known about the server's side: creating now
            // would only collide with mirror pods that exist.
            if let Some(mirrors) = mirrors {
                retry = false;
                for action in plan(&statics, &mirrors) {
                    if let Err(err) = self.execute(action).await {
                        tracing::debug!(%err, "mirror pod; will retry");
                        retry = true;
                    }
                }
            }
            let tick = async {
                if retry {
                    tokio::time::sleep(RETRY).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                r = desired.changed() => if r.is_err() { return },
                r = observed.changed() => if r.is_err() { return },
                _ = tick => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn execute(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Create(pod) => {
                let node_uid = self.node_uid().await?;
                let Some(mirror) = mirror_pod(&pod, &node_uid) else { return Ok(()) };
                let (namespace, name) = key_of(&mirror);
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
                match api.create(&PostParams::default(), &mirror).await {
                    Ok(_) => {
                        tracing::info!(pod = %format!("{namespace}/{name}"), "created a mirror pod");
                        self.status.resend(&namespace, &name);
                        Ok(())
                    }
                    // A pod of that name that is not our mirror (or not yet seen): the watch
                    // shows it, and the plan decides again.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        tracing::debug!(pod = %name, "mirror pod: {}", e.message);
                        Ok(())
                    }
                    Err(err) => Err(format!("creating mirror pod {namespace}/{name}: {err}")),
                }
            }
            Action::Delete { namespace, name, uid, why } => {
                tracing::info!(pod = %format!("{namespace}/{name}"), why, "deleting a mirror pod");
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(()),
                    Err(err) => Err(format!("deleting mirror pod {namespace}/{name}: {err}")),
                }
            }
        }
    }

    /// The Node's UID (for the owner reference), read once.
    async fn node_uid(&mut self) -> Result<String, String> {
        if let Some(uid) = &self.node_uid {
            return Ok(uid.clone());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let node = api
            .get(&self.node_name)
            .await
            .map_err(|e| format!("reading Node {}: {e}", self.node_name))?;
        let uid = node.metadata.uid.ok_or_else(|| "the Node has no uid".to_string())?;
        self.node_uid = Some(uid.clone());
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::static_pods::manifest;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::path::Path;

    fn static_pod(name: &str, arg: &str) -> Pod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n\
             spec: {{containers: [{{name: c, image: i, args: ['{arg}']}}]}}\n"
        );
        let seen = Time(Timestamp::now());
        manifest::parse(Path::new(&format!("/m/{name}.yaml")), &text, "n", &seen).unwrap()
    }

    fn observed_mirror(of: &Pod, uid: &str) -> (PodKey, Pod) {
        let mut m = mirror_pod(of, "node-uid").unwrap();
        m.metadata.uid = Some(uid.into());
        (key_of(&m), m)
    }

    #[test]
    fn the_mirror_pod_is_owned_by_the_node_and_names_the_hash() {
        let pod = static_pod("web", "1");
        let m = mirror_pod(&pod, "node-uid").unwrap();
        assert_eq!(m.metadata.name, pod.metadata.name);
        assert_eq!(m.metadata.uid, None, "the server assigns the mirror's uid");
        let a = m.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get(CONFIG_MIRROR), pod.metadata.uid.as_ref());
        assert_eq!(a.get(super::super::CONFIG_SOURCE).map(String::as_str), Some("file"));
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "n"));
        assert_eq!((owner.uid.as_str(), owner.controller), ("node-uid", Some(true)));
        assert_eq!(owner.block_owner_deletion, None);
        assert_eq!(m.spec, pod.spec);
        assert!(mirror_pod(&Pod::default(), "x").is_none());
    }

    #[test]
    fn missing_mirror_pods_are_created_and_matching_ones_left_alone() {
        let a = static_pod("a", "1");
        let b = static_pod("b", "1");
        let observed = BTreeMap::from([observed_mirror(&a, "m-a")]);
        assert_eq!(plan(&[a.clone(), b.clone()], &observed), [Action::Create(Box::new(b))]);
        assert!(plan(&[a], &observed).is_empty());
    }

    #[test]
    fn deleted_stale_and_orphaned_mirror_pods_are_deleted() {
        let a = static_pod("a", "1");
        let (key, mut deleting) = observed_mirror(&a, "m-a");
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let actions = plan(std::slice::from_ref(&a), &BTreeMap::from([(key, deleting)]));
        assert!(
            matches!(&actions[..], [Action::Delete { uid, .. }] if uid == "m-a"),
            "{actions:?}"
        );

        let a2 = static_pod("a", "2");
        let old = BTreeMap::from([observed_mirror(&a, "m-a")]);
        let actions = plan(std::slice::from_ref(&a2), &old);
        assert!(
            matches!(&actions[..], [Action::Delete { uid, name, .. }] if uid == "m-a" && name == "a-n"),
            "{actions:?}"
        );

        let actions = plan(&[], &old);
        assert!(
            matches!(&actions[..], [Action::Delete { uid, .. }] if uid == "m-a"),
            "{actions:?}"
        );
    }
}
