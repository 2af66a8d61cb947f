//! The machinery every control loop shares: shared informers (one watch per resource type for
//! the scheduler and all controllers), rate-limited work queues, the worker loop that runs a
//! level-triggered `reconcile(key)`, and the event recorder. Everything talks to the API server
//! through an in-process `kube::Client` over [`ApiServer::service`], so authentication,
//! admission and validation apply to the control loops as to any other client.

mod context;
mod events;
mod informer;
mod queue;
mod worker;

pub use context::{in_process_client, Context, Identity};
pub use events::{object_reference, EventRecorder, EventType};
pub use informer::{Change, Informer, Informers};
pub use queue::WorkQueue;
pub use worker::{run_workers, Action, ControlError, ObjectKey};
