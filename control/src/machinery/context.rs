//! What a control loop is handed: its API client (acting as its own identity), the shared
//! informers, and an event recorder.

use std::sync::Arc;

use kube::Client;

use super::events::EventRecorder;
use super::informer::Informers;
use crate::apiserver::authn::User;
use crate::apiserver::ApiServer;

/// Who a control loop acts as (the reference components' user names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    ControllerManager,
    Scheduler,
}

impl Identity {
    /// The user the API server sees.
    pub fn user(self) -> User {
        let name = match self {
            Identity::ControllerManager => "system:kube-controller-manager",
            Identity::Scheduler => "system:kube-scheduler",
        };
        User::new(name, vec!["system:authenticated".to_string()])
    }
}

/// The API client and shared caches of one control loop.
#[derive(Clone)]
pub struct Context<O> {
    /// Writes go through this client, as the loop's own identity.
    pub client: kube::Client,
    /// Reads come from these shared caches.
    pub informers: Informers,
    /// Writes Events as the loop's component name.
    pub events: EventRecorder,
    /// The loop's settings (the `skerry server` flags that concern it).
    pub options: Arc<O>,
}

impl<O> Context<O> {
    /// A context whose client runs requests through `server` in-process as `identity`; reads
    /// share `informers`.
    pub fn new(
        server: &ApiServer,
        identity: Identity,
        informers: Informers,
        component: &str,
        options: Arc<O>,
    ) -> Context<O> {
        let client = in_process_client(server, identity);
        let events = EventRecorder::new(client.clone(), component);
        Context { client, informers, events, options }
    }
}

/// A kube client whose requests go straight into `server`'s handler as `identity` (must be
/// called inside a tokio runtime: the client's buffer spawns a task).
pub fn in_process_client(server: &ApiServer, identity: Identity) -> Client {
    Client::new(server.service(identity.user()), "default")
}
