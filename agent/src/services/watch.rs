//! The three watches (Services, EndpointSlices and Nodes across the cluster), each a
//! kube-runtime `watcher` feeding a reflector `Store`, merged into one stream of [`Change`]s.
//!
//! Pods are not watched: the node-local DNS answers pod names from the name itself (`pods
//! insecure`, see `skerry_dns::PodRecords`), and service endpoints come from EndpointSlices. A
//! node's credentials may list only the pods bound to it, so a cluster-wide pod watch would
//! need an RBAC grant that undoes the Node authorizer.
//!
//! The watcher lists, then watches from the list's resourceVersion; on `410 Gone` (the server
//! compacted past us) or a broken connection it re-lists, which shows up here as
//! `Init`/`InitApply`/`InitDone` again. The reflector swaps its contents only at `InitDone`,
//! so the stores keep the last complete view during a re-list or an outage. Errors are logged
//! and retried with kube's default backoff (0.8 s doubling to 30 s); they never end the stream.
//!
//! Objects are stripped before they are stored: `managedFields` and annotations of every kind,
//! and everything but the name, pod CIDR and addresses of a Node.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

/// One event of one of the watches (sizes differ a lot, but there is one in flight at a time).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// A Service event.
    Service(Event<Service>),
    /// An EndpointSlice event.
    Slice(Event<EndpointSlice>),
    /// A Node event.
    Node(Event<Node>),
}

/// The reflector stores: the last complete view of each kind (empty until its first list).
#[derive(Clone)]
pub struct Stores {
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Nodes (stripped).
    pub nodes: Store<Node>,
}

/// The merged event stream of all watches.
pub type Changes = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// Starts nothing by itself: the watches run as the returned stream is polled.
pub fn watch_all(client: &Client) -> (Stores, Changes) {
    let (services, s1) = watch::<Service>(client, strip_meta_of);
    let (slices, s2) = watch::<EndpointSlice>(client, strip_meta_of);
    let (nodes, s3) = watch::<Node>(client, strip_node);
    let merged = futures::stream::select_all([
        s1.map(Change::Service).boxed(),
        s2.map(Change::Slice).boxed(),
        s3.map(Change::Node).boxed(),
    ]);
    (Stores { services, slices, nodes }, merged.boxed())
}

/// One kind's reflector over all namespaces; errors are logged here and left to the backoff.
fn watch<K>(
    client: &Client,
    strip: fn(&mut K),
) -> (Store<K>, impl Stream<Item = Event<K>> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .filter_map(|item| async move {
            match item {
                Ok(event) => Some(event),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff");
                    None
                }
            }
        });
    (reader, stream)
}

/// Drops the metadata no consumer here reads (and that can be most of an object's size).
fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

fn strip_meta_of<K: kube::Resource>(object: &mut K) {
    strip_meta(object.meta_mut());
}

/// Keeps a Node's name, pod CIDRs and addresses (what `peers` reads).
pub fn strip_node(node: &mut Node) {
    let spec = node.spec.take().unwrap_or_default();
    let addresses = node.status.take().and_then(|s| s.addresses);
    *node = Node {
        metadata: ObjectMeta {
            name: node.metadata.name.take(),
            resource_version: node.metadata.resource_version.take(),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: spec.pod_cidr,
            pod_cidrs: spec.pod_cidrs,
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus { addresses, ..NodeStatus::default() }),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stripped_nodes_keep_name_pod_cidr_and_addresses() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"], "unschedulable": true},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}],
                       "capacity": {"cpu": "4"}, "images": [{"names": ["a"], "sizeBytes": 1}]},
        }))
        .unwrap();
        strip_node(&mut node);
        let expected = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]},
        });
        assert_eq!(serde_json::to_value(&node).unwrap(), expected);
    }
}
