//! Which resources the API server serves, for the controllers that act on every kind
//! (the garbage collector and the namespace controller): discovery through the in-process
//! client, the preferred version of each group, custom resources included.

use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::Client;

/// One served resource (its preferred version) and what may be done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ServedResource {
    /// Whether the resource supports `verb` (`list`, `watch`, `delete`, `deletecollection`).
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether objects of this resource can be listed, watched and deleted (what the garbage
    /// collector and the namespace controller need).
    pub fn is_deletable(&self) -> bool {
        self.supports(verbs::LIST) && self.supports(verbs::WATCH) && self.supports(verbs::DELETE)
    }

    /// `plural.group` (`pods.`, `deployments.apps`), the reference's way of naming a resource
    /// in messages.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }
}

/// Every resource the server serves, in its group's preferred version. Aggregated discovery
/// first (two requests); the per-group walk if the server does not answer it.
pub async fn served_resources(client: &Client) -> Result<Vec<ServedResource>, kube::Error> {
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(discovery) => discovery,
        Err(error) => {
            tracing::debug!(%error, "aggregated discovery failed; walking the groups");
            Discovery::new(client.clone()).run().await?
        }
    };
    let mut served = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            served.push(ServedResource {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
                verbs: caps.operations.clone(),
            });
        }
    }
    Ok(served)
}
