//! The PersistentVolume binder (the reference's `persistentvolume-binder` in
//! kube-controller-manager): two level-triggered loops, one over claims and one over volumes.
//!
//! - A claim without a class gets the default class (the reference's retroactive default
//!   assignment). An unbound claim binds to the volume [`matching::best_volume`] picks; claims
//!   of `WaitForFirstConsumer` classes wait until a pod using them is on a node, and then only
//!   take volumes that node may use. Failing a match, a class with a provisioner gets asked
//!   through the `volume.kubernetes.io/storage-provisioner` annotation. A claim whose volume
//!   vanished after binding is `Lost`.
//! - A volume without a claim is `Available`; one whose claim is gone (confirmed by a fresh
//!   read, not just the cache) is `Released` and then reclaimed: `Retain` keeps it, `Delete`
//!   deletes it (volumes a provisioner made are left to that provisioner, which also cleans up
//!   their storage), `Recycle` is unsupported and marks it `Failed`.
//!
//! Binding writes the volume's `claimRef` first and the claim's `volumeName` second, each with
//! the cached `resourceVersion`, so two claims racing for one volume cannot both win.
//!
//! The reference scheduler's VolumeBinding PreBind annotates a delayed claim with the node it
//! chose (`volume.kubernetes.io/selected-node`) before binding the pod. Here that is done by the
//! claim loop instead, from the pod once it is bound: the annotation then always names the node
//! the pod really runs on, and a failed pod binding leaves no stale choice behind.

mod claim;
mod matching;
mod volume;

pub use matching::{
    annotation, best_volume, claim_class, claim_volume, is_delayed, volume_phase,
    BETA_STORAGE_PROVISIONER, BIND_COMPLETED, DEFAULT_CLASS, PROVISIONED_BY, SELECTED_NODE,
    STORAGE_PROVISIONER,
};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Context, Informer, ObjectKey, WorkQueue};
use crate::scheduler::filters::volume_binding::claim_names;

/// The name `--disable-controllers` takes.
pub const NAME: &str = "persistentvolume-binder";
/// The component name in Events.
pub const COMPONENT: &str = "persistentvolume-controller";

/// The binder's client and caches.
#[derive(Clone)]
struct Binder {
    ctx: Context<ControllerOptions>,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
}

impl Binder {
    /// The claim's StorageClass, if it has one that exists.
    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<std::sync::Arc<StorageClass>> {
        let name = claim_class(claim);
        (!name.is_empty()).then(|| self.classes.get(None, name)).flatten()
    }
}

/// Subscribes the claim and volume loops and starts their workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let informers = &ctx.informers;
    let binder = Binder {
        claims: informers.get(),
        volumes: informers.get(),
        classes: informers.get(),
        pods: informers.get(),
        nodes: informers.get(),
        ctx: ctx.clone(),
    };
    let claim_queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let volume_queue: WorkQueue<ObjectKey> = WorkQueue::new();

    binder.claims.feed(claim_queue.clone(), |c: &PersistentVolumeClaim| vec![ObjectKey::of(c)]);
    binder.claims.feed(volume_queue.clone(), |c: &PersistentVolumeClaim| {
        let volume = claim_volume(c);
        if volume.is_empty() {
            Vec::new()
        } else {
            vec![ObjectKey::cluster(volume)]
        }
    });
    binder.volumes.feed(volume_queue.clone(), |pv: &PersistentVolume| vec![ObjectKey::of(pv)]);
    // A volume wakes its claim; a volume free for the taking wakes every claim still looking
    // (it may have been created after the claim's last look).
    let volumes_to_claims = binder.claims.clone();
    binder.volumes.feed(claim_queue.clone(), move |pv: &PersistentVolume| {
        let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        match reference.and_then(|r| Some((r.namespace.clone()?, r.name.clone()?))) {
            Some((namespace, name)) => vec![ObjectKey::new(namespace, name)],
            None => unbound_claims(&volumes_to_claims),
        }
    });
    // A pod placed on a node settles its delayed claims' node.
    binder.pods.feed(claim_queue.clone(), |p: &Pod| {
        let placed =
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        if !placed {
            return Vec::new();
        }
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        claim_names(p).into_iter().map(|name| ObjectKey::new(namespace.clone(), name)).collect()
    });
    // A new class may be the default unclassed claims wait for, or a new mode.
    let classes_to_claims = binder.claims.clone();
    binder
        .classes
        .feed(claim_queue.clone(), move |_: &StorageClass| unbound_claims(&classes_to_claims));

    let workers = ctx.options.workers;
    let claim_binder = binder.clone();
    run_workers("persistentvolume-claims", claim_queue, workers, move |key: ObjectKey| {
        let binder = claim_binder.clone();
        async move { binder.sync_claim(&key).await }
    });
    run_workers("persistentvolume-volumes", volume_queue, workers, move |key: ObjectKey| {
        let binder = binder.clone();
        async move { binder.sync_volume(&key.name).await }
    });
}

/// The keys of the claims not bound to a volume yet.
fn unbound_claims(claims: &Informer<PersistentVolumeClaim>) -> Vec<ObjectKey> {
    claims
        .list()
        .iter()
        .filter(|c| claim_volume(c).is_empty())
        .map(|c| ObjectKey::of(c.as_ref()))
        .collect()
}
