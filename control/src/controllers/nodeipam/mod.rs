//! The node IPAM controller (the reference's range allocator): every Node without
//! `spec.podCIDR` gets the lowest free subnet of `--cluster-cidr` of the node mask size, written
//! as `spec.podCIDR` and `spec.podCIDRs`; the agent builds its pod bridge on it. Ranges already
//! on nodes are taken from the nodes when the controller starts, before anything is handed out,
//! so a restart never hands out a range twice; a deleted node's range becomes free again.
//! Allocation runs on one worker, since ranges are one shared pool.

mod cidrset;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use self::cidrset::CidrSet;
use super::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, EventType, Informer, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "nodeipam";
/// The component in its Events.
pub const COMPONENT: &str = "node-ipam-controller";

/// The pool and which node holds which range.
struct Allocator {
    set: CidrSet,
    by_node: HashMap<String, String>,
}

impl Allocator {
    /// Records the range `node` already has (a range outside the pool is the node's own
    /// business and is left alone).
    fn observe(&mut self, node: &str, cidr: &str) {
        if self.by_node.get(node).map(String::as_str) == Some(cidr) {
            return;
        }
        if let Some(previous) = self.by_node.remove(node) {
            self.set.release(&previous);
        }
        match self.set.occupy(cidr) {
            Ok(()) => _ = self.by_node.insert(node.to_string(), cidr.to_string()),
            Err(error) => tracing::warn!(node, %error, "node has a podCIDR outside the pool"),
        }
    }

    fn release(&mut self, node: &str) {
        if let Some(cidr) = self.by_node.remove(node) {
            self.set.release(&cidr);
        }
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref().filter(|c| !c.is_empty())
}

/// Recovers the ranges on existing nodes, then starts the (single) worker.
pub fn start(ctx: Context<ControllerOptions>) {
    let (base, prefix) = ctx.options.cluster_cidr;
    let allocator = Arc::new(Mutex::new(Allocator {
        set: CidrSet::new(base, prefix, ctx.options.node_cidr_mask_size),
        by_node: HashMap::new(),
    }));
    let nodes = ctx.informers.get::<Node>();
    tokio::spawn(async move {
        nodes.ready().await;
        {
            let mut allocator = allocator.lock().unwrap_or_else(|p| p.into_inner());
            for node in nodes.list() {
                if let (Some(name), Some(cidr)) = (node.metadata.name.as_deref(), pod_cidr(&node)) {
                    allocator.observe(name, cidr);
                }
            }
        }
        let queue = WorkQueue::new();
        nodes.feed(queue.clone(), |n: &Node| n.metadata.name.clone().into_iter().collect());
        run_workers(NAME, queue, 1, move |name: String| {
            let (ctx, nodes, allocator) = (ctx.clone(), nodes.clone(), allocator.clone());
            async move { reconcile(&ctx, &nodes, &allocator, &name).await }
        });
    });
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    nodes: &Informer<Node>,
    allocator: &Mutex<Allocator>,
    name: &str,
) -> Result<Action, ControlError> {
    let lock = || allocator.lock().unwrap_or_else(|p| p.into_inner());
    let Some(node) = nodes.get(None, name) else {
        lock().release(name);
        return Ok(Action::Done);
    };
    if let Some(cidr) = pod_cidr(&node) {
        lock().observe(name, cidr);
        return Ok(Action::Done);
    }
    // A range handed out by an earlier pass whose write the cache has not shown yet is
    // written again, never replaced by a second one.
    let existing = lock().by_node.get(name).cloned();
    let cidr = match existing {
        Some(cidr) => cidr,
        None => {
            let allocated = lock().set.allocate();
            match allocated {
                Ok(cidr) => {
                    lock().by_node.insert(name.to_string(), cidr.clone());
                    cidr
                }
                Err(error) => {
                    let message = format!("Node {name} status is now: CIDRNotAvailable ({error})");
                    ctx.events
                        .record(node.as_ref(), EventType::Normal, "CIDRNotAvailable", &message)
                        .await;
                    return Err(ControlError::Other(error.to_string()));
                }
            }
        }
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({
        "metadata": {"uid": node.metadata.uid},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    });
    match api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => {
            tracing::info!(node = name, %cidr, "assigned podCIDR");
            Ok(Action::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            // Gone, or replaced by a namesake: the range is free again.
            lock().release(name);
            Ok(Action::Done)
        }
        Err(error) => {
            let message = format!("Node {name} status is now: CIDRAssignmentFailed ({error})");
            ctx.events
                .record(node.as_ref(), EventType::Warning, "CIDRAssignmentFailed", &message)
                .await;
            lock().release(name);
            Err(error.into())
        }
    }
}
