//! The scheduler: binds pods with an empty `spec.nodeName` to a node through `pods/binding`,
//! acting as `system:kube-scheduler` through the in-process client.

mod affinity_terms;
pub mod filters;
pub mod framework;
pub mod node_info;
pub mod resources;
pub mod scores;
mod selectors;

use crate::machinery::Context;

/// The component name in Events and the `schedulerName`s this scheduler serves.
pub const COMPONENT: &str = "default-scheduler";

/// Scheduler settings.
#[derive(Debug, Clone, Default)]
pub struct SchedulerOptions {}

/// Subscribes the scheduler to the informers and spawns its loop.
pub fn start(_ctx: Context<SchedulerOptions>) {}
