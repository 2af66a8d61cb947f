//! The node lifecycle controller (the reference's node lifecycle controller with taint-based
//! eviction): a node whose agent stops renewing its Lease in `kube-node-lease` (and stops
//! posting its Ready heartbeat) for longer than `--node-monitor-grace-period` gets its agent
//! conditions set to Unknown and the `node.kubernetes.io/unreachable` taints; the NoExecute one
//! evicts its pods once their tolerationSeconds run out. When the node reports again the taints
//! go. Staleness is timed with the controller's own clock from the moment it saw a heartbeat
//! change (as the reference does), so agents' clock skew does not matter, and a restarted
//! controller gives every node a fresh grace period. Evictions are held back in a zone where
//! most nodes dropped off at once (a site losing its link), and new NoExecute taints are
//! rate-limited per zone, so a mass disconnection never evicts everything at once. The
//! `node.kubernetes.io/{memory,disk,pid}-pressure` NoSchedule taints follow the agent's
//! pressure conditions (the reference's TaintNodeByCondition).

mod decide;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;

use self::decide::{Eviction, ZONE_LABEL};
use super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, EventType, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "nodelifecycle";
/// The component in its Events.
pub const COMPONENT: &str = "node-controller";
/// Where agents keep their Leases (named after the node).
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often an unreachable node is looked at again at the latest (the reference's node
/// monitor period): zone disruption depends on other nodes, whose changes do not wake it.
const MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Minimum gap between two nodes of one zone getting the NoExecute taint (0.1 nodes/s, the
/// reference's `--node-eviction-rate`).
const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

type Heartbeat = (Option<Timestamp>, Option<Timestamp>);

/// What the controller remembers between passes: when it last saw each node alive, and when
/// each zone may next get a NoExecute taint.
#[derive(Default)]
struct Monitor {
    seen: HashMap<String, (Heartbeat, Instant)>,
    next_taint: HashMap<String, Instant>,
}

impl Monitor {
    /// Records `heartbeat` of `node` and answers how long ago it last changed.
    fn observe(&mut self, node: &str, heartbeat: Heartbeat, now: Instant) -> Duration {
        match self.seen.get(node) {
            Some((last, at)) if *last == heartbeat => now.saturating_duration_since(*at),
            _ => {
                self.seen.insert(node.to_string(), (heartbeat, now));
                Duration::ZERO
            }
        }
    }

    /// Whether `node` (as already observed) has outlived `grace`.
    fn stale(&self, node: &str, grace: Duration, now: Instant) -> bool {
        self.seen
            .get(node)
            .is_some_and(|(_, at)| decide::is_stale(now.saturating_duration_since(*at), grace))
    }

    /// Takes the zone's eviction slot, or answers how long until the next one.
    fn take_slot(&mut self, zone: &str, now: Instant) -> Result<(), Duration> {
        match self.next_taint.get(zone) {
            Some(next) if *next > now => Err(*next - now),
            _ => {
                self.next_taint.insert(zone.to_string(), now + EVICTION_INTERVAL);
                Ok(())
            }
        }
    }
}

type Shared = Arc<Mutex<Monitor>>;

fn lock(monitor: &Shared) -> std::sync::MutexGuard<'_, Monitor> {
    monitor.lock().unwrap_or_else(|p| p.into_inner())
}

/// Subscribes to nodes and their leases, and starts the workers once both caches are filled.
pub fn start(ctx: Context<ControllerOptions>) {
    let nodes = ctx.informers.get::<Node>();
    let leases = ctx.informers.get::<Lease>();
    let _ = ctx.informers.get::<Pod>();
    tokio::spawn(async move {
        nodes.ready().await;
        leases.ready().await;
        let queue = WorkQueue::new();
        nodes.feed(queue.clone(), |n: &Node| n.metadata.name.clone().into_iter().collect());
        leases.feed(queue.clone(), |l: &Lease| {
            if l.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) {
                l.metadata.name.clone().into_iter().collect()
            } else {
                Vec::new()
            }
        });
        let monitor = Shared::default();
        let workers = ctx.options.workers;
        run_workers(NAME, queue, workers, move |name: String| {
            let (ctx, monitor) = (ctx.clone(), monitor.clone());
            async move { reconcile(&ctx, &monitor, &name).await }
        });
    });
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    monitor: &Shared,
    name: &str,
) -> Result<Action, ControlError> {
    let nodes = ctx.informers.get::<Node>();
    let Some(cached) = nodes.get(None, name) else {
        lock(monitor).seen.remove(name);
        return Ok(Action::Done);
    };
    let lease = ctx.informers.get::<Lease>().get(Some(LEASE_NAMESPACE), name);
    let grace = ctx.options.node_monitor_grace_period;
    let since_alive =
        lock(monitor).observe(name, decide::heartbeat(&cached, lease.as_deref()), Instant::now());
    let stale = decide::is_stale(since_alive, grace);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    let mut node = (*cached).clone();
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if let Some(taints) = decide::pressure_taints(&node, &current) {
        node = patch_taints(&api, &node, &taints).await?;
        tracing::info!(node = name, "pressure taints follow the node's conditions");
    }

    if stale {
        let current = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        if let Some(conditions) = decide::unknown_conditions(&current, now) {
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": conditions},
            });
            node = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            tracing::info!(node = name, "node stopped reporting; conditions set to Unknown");
            let message = format!("Node {name} status is now: NodeNotReady");
            ctx.events.record(&node, EventType::Normal, "NodeNotReady", &message).await;
        }
    }
    // Unknown until the agent posts again, even once the lease is renewed.
    let unreachable = stale || decide::ready_status(&node) == Some("Unknown");
    if !unreachable {
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if let Some(taints) = decide::desired_taints(&current, false, false, now) {
            patch_taints(&api, &node, &taints).await?;
            tracing::info!(node = name, "node reachable again; unreachable taints removed");
        }
        // Look again when the grace period would run out without a new heartbeat.
        return Ok(Action::RequeueAfter(
            grace.saturating_sub(since_alive) + Duration::from_millis(100),
        ));
    }

    let mut next = MONITOR_PERIOD;
    let zone = decide::zone_of(&node);
    let disrupted = zone_disrupted(&nodes.list(), &zone, name, grace, monitor);
    let has_no_execute = decide::no_execute_taint(&node).is_some();
    let may_add = !has_no_execute
        && !disrupted
        && match lock(monitor).take_slot(&zone, Instant::now()) {
            Ok(()) => true,
            Err(wait) => {
                next = next.min(wait);
                false
            }
        };
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if let Some(taints) = decide::desired_taints(&current, true, may_add, now) {
        node = patch_taints(&api, &node, &taints).await?;
        tracing::info!(node = name, no_execute = may_add, "node unreachable; tainted");
    }
    if disrupted {
        tracing::debug!(node = name, zone, "zone disrupted; evictions held back");
    } else if let Some(taint) = decide::no_execute_taint(&node) {
        for pod in ctx.informers.get::<Pod>().list() {
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name);
            if !on_node || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match decide::eviction(&pod, taint, now) {
                Eviction::Now => evict(ctx, &pod).await?,
                Eviction::After(wait) => next = next.min(wait),
                Eviction::Never => {}
            }
        }
    }
    Ok(Action::RequeueAfter(next))
}

/// Whether `zone` is disrupted, counting `this` node as unreachable (the caller decided so)
/// and every other node unreachable when its Ready is not True or it outlived the grace.
fn zone_disrupted(
    nodes: &[Arc<Node>],
    zone: &str,
    this: &str,
    grace: Duration,
    monitor: &Shared,
) -> bool {
    let monitor = lock(monitor);
    let now = Instant::now();
    let in_zone = nodes.iter().filter(|n| {
        n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).map_or("", String::as_str)
            == zone
    });
    let (mut total, mut unreachable) = (0, 0);
    for node in in_zone {
        total += 1;
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == this
            || decide::ready_status(node) != Some("True")
            || monitor.stale(name, grace, now)
        {
            unreachable += 1;
        }
    }
    decide::zone_disrupted(total, unreachable)
}

/// Writes `taints` as the node's taints, pinned to the version the decision was made on.
async fn patch_taints(
    api: &Api<Node>,
    node: &Node,
    taints: &[k8s_openapi::api::core::v1::Taint],
) -> Result<Node, ControlError> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": taints},
    });
    Ok(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// Deletes a pod whose toleration of the unreachable taint ran out (only that very pod: a
/// namesake created meanwhile is left alone).
async fn evict(ctx: &Context<ControllerOptions>, pod: &Pod) -> Result<(), ControlError> {
    let (Some(namespace), Some(name)) =
        (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref())
    else {
        return Ok(());
    };
    let message = format!("Marking for deletion Pod {namespace}/{name}");
    ctx.events.record(pod, EventType::Normal, "TaintManagerEviction", &message).await;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), "evicted from unreachable node");
            Ok(())
        }
        // Gone already, or replaced by a namesake.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_times_staleness_from_the_last_heartbeat_change() {
        let mut monitor = Monitor::default();
        let t0 = Instant::now();
        let beat = (Some(Timestamp::from_second(1).unwrap()), None);
        assert_eq!(monitor.observe("n", beat, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(monitor.observe("n", beat, later), Duration::from_secs(30));
        assert!(monitor.stale("n", Duration::from_secs(20), later));
        // A renewed lease resets the clock.
        let renewed = (Some(Timestamp::from_second(2).unwrap()), None);
        assert_eq!(monitor.observe("n", renewed, later), Duration::ZERO);
        assert!(!monitor.stale("n", Duration::from_secs(20), later));
    }

    #[test]
    fn noexecute_taints_are_rate_limited_per_zone() {
        let mut monitor = Monitor::default();
        let t0 = Instant::now();
        assert_eq!(monitor.take_slot("a", t0), Ok(()));
        assert_eq!(
            monitor.take_slot("a", t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        // Another zone has its own budget.
        assert_eq!(monitor.take_slot("b", t0), Ok(()));
        assert_eq!(monitor.take_slot("a", t0 + EVICTION_INTERVAL), Ok(()));
    }
}
