//! The scheduler: binds pods with an empty `spec.nodeName` to a node through `pods/binding`,
//! acting as `system:kube-scheduler` through the in-process client. Pods are scheduled one at
//! a time, as the reference does: [`feed`] keeps the [`cache`] and the [`queue`] in step with
//! the shared informers, [`cycle`] decides ([`algorithm`] over the [`filters`] and [`scores`])
//! and binds, and [`failure`] reports pods that fit nowhere and runs [`preemption`].

mod affinity_terms;
pub mod algorithm;
pub mod cache;
mod cycle;
mod failure;
mod feed;
pub mod filters;
pub mod framework;
pub mod node_info;
pub mod preemption;
mod queue;
pub mod resources;
pub mod scores;
pub mod selectors;

use std::sync::Arc;

use crate::machinery::{run_workers, Context};

/// The component name in Events and the `schedulerName`s this scheduler serves.
pub const COMPONENT: &str = "default-scheduler";

/// Scheduler settings.
#[derive(Debug, Clone, Default)]
pub struct SchedulerOptions {}

/// Subscribes the scheduler to the informers and spawns its loop.
pub fn start(ctx: Context<SchedulerOptions>) {
    let scheduler = Arc::new(cycle::Scheduler::new(ctx));
    tokio::spawn(feed::run(scheduler.clone()));
    let queue = scheduler.queue.work.clone();
    // One worker: each decision must see the previous one (assumed in the cache).
    run_workers("scheduler", queue, 1, move |key| scheduler.clone().schedule_one(key));
}
