//! The EndpointSlice controller: keeps the `discovery.k8s.io/v1` EndpointSlices of every Service
//! that has a selector equal to the pods it selects. The slices are named `<service>-<random>`,
//! carry the `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by` labels and
//! a controller ownerReference to the Service, and hold at most [`MAX_ENDPOINTS_PER_SLICE`]
//! endpoints of one port set each ([`desired`] computes what should exist, [`pack`] where each
//! endpoint goes with the least churn). A Service without endpoints keeps one empty placeholder
//! slice, as in the reference. Services without a selector are left alone: their slices belong
//! to whoever wrote them. The service proxy and DNS read these slices.

mod desired;
mod pack;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use self::desired::{ports_key, PortGroup};
use self::pack::Existing;
use super::util::{owner, service as svcutil};
use super::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, EventType, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "endpointslice";
/// The component in its Events.
pub const COMPONENT: &str = "endpointslice-controller";
/// The label naming a slice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The label the reference puts on the slices of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The reference's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address family slices are written for (pod IPs are IPv4 here).
const ADDRESS_TYPE: &str = "IPv4";
/// The zone label read from a pod's node.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Subscribes to services, pods, slices and nodes, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    let services = ctx.informers.get::<Service>();
    // Zones come from nodes; watching them keeps the cache warm for `zone_of`.
    let _ = ctx.informers.get::<Node>();
    services.feed(queue.clone(), |s: &Service| vec![ObjectKey::of(s)]);
    {
        // A pod change may concern every selecting service of its namespace (including one
        // its old labels matched), so all of them look again.
        let services = services.clone();
        ctx.informers.get::<Pod>().feed(queue.clone(), move |pod: &Pod| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            services
                .list_namespace(ns)
                .iter()
                .filter(|s| svcutil::selector(s).is_some())
                .map(|s| ObjectKey::of(s.as_ref()))
                .collect()
        });
    }
    // A slice we manage that changed (or went) wakes its service: someone else's edit is put
    // back, and a slice of a deleted service is removed.
    ctx.informers.get::<EndpointSlice>().feed(queue.clone(), |slice: &EndpointSlice| {
        managed_service(slice)
            .map(|name| ObjectKey::new(slice.namespace().unwrap_or_default(), name))
            .into_iter()
            .collect()
    });
    let controller = Arc::new(Controller { ctx, written: Mutex::default() });
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key: ObjectKey| {
        let controller = controller.clone();
        async move { controller.reconcile(&key).await }
    });
}

/// The service a slice belongs to, if this controller manages it.
fn managed_service(slice: &EndpointSlice) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    labels.get(SERVICE_NAME_LABEL).cloned()
}

/// The labels of a service's slices: the service's own, plus service name, manager and the
/// headless marker (the reference's `setEndpointSliceLabels`).
fn desired_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    for reserved in [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL] {
        labels.remove(reserved);
    }
    labels.insert(SERVICE_NAME_LABEL.into(), service.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if svcutil::is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// What this controller last wrote, per service: slice name → the resourceVersion it wrote
/// (`None`: deleted). A sync waits until the cache has caught up with these, so a slice just
/// created is not created twice (the reference's endpoint slice tracker).
type Written = HashMap<ObjectKey, HashMap<String, Option<u64>>>;

struct Controller {
    ctx: Context<ControllerOptions>,
    written: Mutex<Written>,
}

/// A slice write planned by a sync.
enum Write {
    Create(EndpointSlice),
    Update(EndpointSlice),
    Delete(String),
}

fn resource_version(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok())
}

impl Controller {
    /// Whether the cache holds at least what this controller last wrote for `key`.
    fn cache_caught_up(&self, key: &ObjectKey, cached: &[Arc<EndpointSlice>]) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(expected) = written.get(key) else { return true };
        let caught_up = expected.iter().all(|(name, rv)| {
            let seen = cached.iter().find(|s| s.name_any() == *name);
            match (rv, seen) {
                (None, seen) => seen.is_none(),
                (Some(rv), Some(seen)) => resource_version(seen).is_some_and(|s| s >= *rv),
                (Some(_), None) => false,
            }
        });
        if caught_up {
            written.remove(key);
        }
        caught_up
    }

    fn remember(&self, key: &ObjectKey, name: String, rv: Option<u64>) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.entry(key.clone()).or_default().insert(name, rv);
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControlError> {
        let slices = self.ctx.informers.get::<EndpointSlice>();
        let cached: Vec<Arc<EndpointSlice>> = slices
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|s| managed_service(s).as_deref() == Some(key.name.as_str()))
            .collect();
        if !self.cache_caught_up(key, &cached) {
            // The informer wakes us when our writes arrive; the delay is a safety net.
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        let service = self.ctx.informers.get::<Service>().get(key.namespace(), &key.name);
        let writes = match &service {
            // Gone: its slices go (the garbage collector would too, through the owner).
            None => cached.iter().map(|s| Write::Delete(s.name_any())).collect(),
            // Being deleted: its slices go with it.
            Some(service) if service.metadata.deletion_timestamp.is_some() => {
                return Ok(Action::Done)
            }
            Some(service) if svcutil::selector(service).is_none() => return Ok(Action::Done),
            Some(service) => self.plan(service, &cached),
        };
        self.apply(key, service.as_deref(), writes).await?;
        Ok(Action::Done)
    }

    /// The writes that make `cached` (the service's managed slices) what the pods say.
    fn plan(&self, service: &Service, cached: &[Arc<EndpointSlice>]) -> Vec<Write> {
        let pods = self
            .ctx
            .informers
            .get::<Pod>()
            .list_namespace(&service.namespace().unwrap_or_default());
        let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let nodes = self.ctx.informers.get::<Node>();
        let zone_of = |node: &str| {
            nodes.get(None, node).and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
        };
        let groups = desired::desired(service, &pods, zone_of);
        plan_slices(service, cached, &groups, MAX_ENDPOINTS_PER_SLICE)
    }

    async fn apply(
        &self,
        key: &ObjectKey,
        service: Option<&Service>,
        writes: Vec<Write>,
    ) -> Result<(), ControlError> {
        let api: Api<EndpointSlice> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        for write in writes {
            let result = match write {
                Write::Create(slice) => match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => {
                        self.remember(key, created.name_any(), resource_version(&created));
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
                Write::Update(slice) => {
                    match api.replace(&slice.name_any(), &PostParams::default(), &slice).await {
                        Ok(updated) => {
                            self.remember(key, updated.name_any(), resource_version(&updated));
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
                Write::Delete(name) => match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {
                        self.remember(key, name, None);
                        Ok(())
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = result {
                // Conflicts (a stale cache) and a terminating namespace are routine.
                let routine =
                    matches!(&error, kube::Error::Api(s) if s.code == 409 || s.code == 403);
                if let (Some(service), false) = (service, routine) {
                    let message =
                        format!("Error updating Endpoint Slices for Service {key}: {error}");
                    self.ctx
                        .events
                        .record(
                            service,
                            EventType::Warning,
                            "FailedToUpdateEndpointSlices",
                            &message,
                        )
                        .await;
                }
                return Err(error.into());
            }
        }
        Ok(())
    }
}

/// A new slice for `service` (the API server completes the generated name).
fn new_slice(service: &Service, labels: &BTreeMap<String, String>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", service.name_any())),
            namespace: service.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner::controller_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: ADDRESS_TYPE.into(),
        endpoints: Vec::new(),
        ports: Some(Vec::new()),
    }
}

/// Whether `slice` is one this sync may keep: owned by this very service (a namesake's old
/// slices go) and of the address type written here.
fn is_current(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.uid().unwrap_or_default();
    owner::controller_of(&slice.metadata).is_some_and(|r| r.uid == uid)
        && slice.address_type == ADDRESS_TYPE
}

/// The writes turning `cached` into slices holding `groups`, at most `max` endpoints each.
fn plan_slices(
    service: &Service,
    cached: &[Arc<EndpointSlice>],
    groups: &BTreeMap<String, PortGroup>,
    max: usize,
) -> Vec<Write> {
    let labels = desired_labels(service);
    let mut writes = Vec::new();
    let (current, stale): (Vec<&EndpointSlice>, Vec<&EndpointSlice>) =
        cached.iter().map(|s| s.as_ref()).partition(|s| is_current(s, service));
    writes.extend(stale.iter().map(|s| Write::Delete(s.name_any())));
    let mut by_ports: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &current {
        by_ports
            .entry(ports_key(slice.ports.as_deref().unwrap_or_default()))
            .or_default()
            .push(slice);
    }
    let total: usize = groups.values().map(|g| g.endpoints.len()).sum();
    if total == 0 {
        // No endpoints: one empty placeholder slice, reusing an existing one if there is any.
        let keep = current
            .iter()
            .find(|s| s.endpoints.is_empty() && s.ports.as_deref().unwrap_or_default().is_empty());
        match keep {
            Some(slice) => {
                if slice.metadata.labels.as_ref() != Some(&labels) {
                    let mut next = (*slice).clone();
                    next.metadata.labels = Some(labels.clone());
                    writes.push(Write::Update(next));
                }
            }
            None => writes.push(Write::Create(new_slice(service, &labels))),
        }
        let kept = keep.map(|s| s.name_any());
        writes.extend(
            current
                .iter()
                .filter(|s| Some(s.name_any()) != kept)
                .map(|s| Write::Delete(s.name_any())),
        );
        return writes;
    }
    for (ports, slices) in &by_ports {
        if !groups.contains_key(ports) {
            writes.extend(slices.iter().map(|s| Write::Delete(s.name_any())));
        }
    }
    for (ports, group) in groups {
        let slices = by_ports.get(ports).cloned().unwrap_or_default();
        let existing: Vec<Existing> = slices
            .iter()
            .map(|s| Existing {
                name: s.name_any(),
                keys: s.endpoints.iter().filter_map(|e| e.addresses.first().cloned()).collect(),
            })
            .collect();
        let keys: Vec<String> = group.endpoints.keys().cloned().collect();
        let plan = pack::pack(&existing, &keys, max);
        let endpoints_of = |keys: &[String]| -> Vec<Endpoint> {
            keys.iter().filter_map(|k| group.endpoints.get(k).cloned()).collect()
        };
        for (name, keys) in &plan.keep {
            let Some(slice) = slices.iter().find(|s| s.name_any() == *name) else { continue };
            let endpoints = endpoints_of(keys);
            let ports: Vec<EndpointPort> = group.ports.clone();
            let unchanged = slice.endpoints == endpoints
                && slice.ports.as_deref().unwrap_or_default() == ports.as_slice()
                && slice.metadata.labels.as_ref() == Some(&labels);
            if !unchanged {
                let mut next = (*slice).clone();
                next.endpoints = endpoints;
                next.ports = Some(ports);
                next.metadata.labels = Some(labels.clone());
                writes.push(Write::Update(next));
            }
        }
        for keys in &plan.create {
            let mut slice = new_slice(service, &labels);
            slice.endpoints = endpoints_of(keys);
            slice.ports = Some(group.ports.clone());
            writes.push(Write::Create(slice));
        }
        writes.extend(plan.delete.into_iter().map(Write::Delete));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};

    fn service() -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("default".into());
        s.metadata.uid = Some("svc-uid".into());
        s.spec = Some(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..ServiceSpec::default()
        });
        s
    }

    fn pod(i: usize) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("p{i}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{i}"));
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.spec = Some(PodSpec { node_name: Some("n1".into()), ..Default::default() });
        p.status = Some(PodStatus {
            pod_ip: Some(format!("10.42.{}.{}", i / 200, i % 200 + 2)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn groups(n: usize) -> BTreeMap<String, PortGroup> {
        let pods: Vec<Pod> = (0..n).map(pod).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        desired::desired(&service(), &refs, |_| None)
    }

    /// The slice a create would make, as the API server would store it.
    fn stored(write: &Write, name: &str) -> Arc<EndpointSlice> {
        let Write::Create(slice) = write else { panic!("not a create") };
        let mut slice = slice.clone();
        slice.metadata.name = Some(name.into());
        Arc::new(slice)
    }

    #[test]
    fn a_new_service_gets_slices_of_at_most_max_with_labels_and_owner() {
        let writes = plan_slices(&service(), &[], &groups(5), 2);
        assert_eq!(writes.len(), 3);
        let Write::Create(slice) = &writes[0] else { panic!("expected creates") };
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(owner::controller_of(&slice.metadata).unwrap().uid, "svc-uid");
        assert_eq!(slice.endpoints.len(), 2);
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(80));
    }

    #[test]
    fn an_up_to_date_service_needs_no_writes_and_a_removed_pod_updates_its_slice() {
        let writes = plan_slices(&service(), &[], &groups(3), 100);
        let cached = vec![stored(&writes[0], "web-abcde")];
        assert!(plan_slices(&service(), &cached, &groups(3), 100).is_empty());
        let writes = plan_slices(&service(), &cached, &groups(2), 100);
        assert_eq!(writes.len(), 1);
        let Write::Update(slice) = &writes[0] else { panic!("expected an update") };
        assert_eq!(slice.metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(slice.endpoints.len(), 2);
    }

    #[test]
    fn no_endpoints_keep_one_placeholder_and_a_namesakes_slices_go() {
        let writes = plan_slices(&service(), &[], &groups(0), 100);
        assert_eq!(writes.len(), 1);
        let placeholder = stored(&writes[0], "web-empty");
        assert!(placeholder.endpoints.is_empty());
        assert!(
            plan_slices(&service(), std::slice::from_ref(&placeholder), &groups(0), 100).is_empty()
        );
        // Endpoints arrive: a new slice for them, the placeholder goes (its port set differs).
        let writes = plan_slices(&service(), std::slice::from_ref(&placeholder), &groups(1), 100);
        assert!(matches!(&writes[..], [Write::Delete(n), Write::Create(_)] if n == "web-empty"));
        // A recreated service (new uid) does not keep the old one's slices.
        let mut recreated = service();
        recreated.metadata.uid = Some("other".into());
        let writes = plan_slices(&recreated, &[placeholder], &groups(0), 100);
        assert!(matches!(&writes[..], [Write::Delete(n), Write::Create(_)] if n == "web-empty"));
    }
}
