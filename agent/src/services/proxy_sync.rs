//! Driving the nftables [`ServiceProxy`] from Services and EndpointSlices: a full `sync` after
//! (re-)lists, incremental `update_service`/`remove_service` for the services touched since the
//! last flush, and `repair` when the table has gone. The proxy blocks on netlink, so every call
//! runs on `spawn_blocking` with the proxy behind a mutex.
//!
//! The cluster DNS Service: kube-dns's ClusterIP (`--cluster-dns`, 10.43.0.10) is the address
//! the node-local DNS answers on, bound on the node itself. If the proxy DNATed that address
//! too, a pod's queries would go to whatever endpoints the Service lists (or be rejected when it
//! lists none) instead of the resolver next to it, and offline nodes would lose DNS. So a
//! Service any of whose ClusterIPs is the node-local DNS address is never given to the proxy.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skerry_netproxy::proxy::model::SERVICE_NAME_LABEL;
use skerry_netproxy::proxy::{ProxyError, ServiceProxy};

use super::ServicesError;

/// `(namespace, name)` of a Service.
pub type ServiceKey = (String, String);

/// The namespace and name of an object's metadata (a missing namespace is `default`).
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    (namespace, meta.name.clone().unwrap_or_default())
}

/// Whether the proxy should program `svc`: not when it fronts the node-local DNS address.
pub fn proxied(svc: &Service, cluster_dns: IpAddr) -> bool {
    let Some(spec) = &svc.spec else { return true };
    let ips = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter());
    !ips.filter_map(|ip| ip.parse::<IpAddr>().ok()).any(|ip| ip == cluster_dns)
}

/// One service's new state for an incremental update.
pub enum ServiceChange {
    /// Program the service with its slices.
    Update(Box<Service>, Vec<EndpointSlice>),
    /// The service is gone (or no longer proxied).
    Remove(ServiceKey),
}

/// The proxy, shared with the blocking tasks that program it.
pub struct ProxySync {
    proxy: Arc<Mutex<ServiceProxy>>,
    cluster_dns: IpAddr,
}

fn lock(proxy: &Mutex<ServiceProxy>) -> MutexGuard<'_, ServiceProxy> {
    // A panic in a previous call leaves the proxy's own state consistent enough for a full
    // resync, which is what follows any error here.
    proxy.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServicesError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServicesError::Worker(format!("service proxy task: {e}")))
}

impl ProxySync {
    /// Wraps the proxy; programs nothing yet.
    pub fn new(proxy: ServiceProxy, cluster_dns: IpAddr) -> Self {
        ProxySync { proxy: Arc::new(Mutex::new(proxy)), cluster_dns }
    }

    /// Whether `svc` is programmed (see [`proxied`]).
    pub fn proxies(&self, svc: &Service) -> bool {
        proxied(svc, self.cluster_dns)
    }

    /// Replaces the whole table with `services` (minus the DNS Service) and their slices.
    pub async fn full_sync(
        &self,
        mut services: Vec<Service>,
        slices: Vec<EndpointSlice>,
    ) -> Result<Result<(), ProxyError>, ServicesError> {
        services.retain(|s| self.proxies(s));
        let proxy = self.proxy.clone();
        blocking(move || {
            let stats = lock(&proxy).sync(&services, &slices)?;
            tracing::debug!(
                service_ports = stats.service_ports,
                commands = stats.commands,
                "proxy synced"
            );
            Ok(())
        })
        .await
    }

    /// Applies the changes one service at a time (each its own transaction); stops at the
    /// first error, which the caller answers with a full sync.
    pub async fn apply(
        &self,
        changes: Vec<ServiceChange>,
    ) -> Result<Result<(), ProxyError>, ServicesError> {
        let proxy = self.proxy.clone();
        blocking(move || {
            let mut proxy = lock(&proxy);
            for change in changes {
                match change {
                    ServiceChange::Update(svc, slices) => proxy.update_service(&svc, &slices)?,
                    ServiceChange::Remove((ns, name)) => proxy.remove_service(&ns, &name)?,
                }
            }
            Ok(())
        })
        .await
    }

    /// The incremental changes for `keys`, given the current services and slices.
    pub fn changes_for<'a>(
        &self,
        keys: &BTreeSet<ServiceKey>,
        service: impl Fn(&ServiceKey) -> Option<Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Vec<ServiceChange> {
        let mut own: std::collections::BTreeMap<ServiceKey, Vec<EndpointSlice>> =
            Default::default();
        for slice in slices {
            let label = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            let Some(owner) = label else { continue };
            let namespace = slice.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let key = (namespace, owner.clone());
            if keys.contains(&key) {
                own.entry(key).or_default().push(slice.clone());
            }
        }
        keys.iter()
            .map(|key| match service(key).filter(|s| self.proxies(s)) {
                Some(svc) => {
                    ServiceChange::Update(Box::new(svc), own.remove(key).unwrap_or_default())
                }
                None => ServiceChange::Remove(key.clone()),
            })
            .collect()
    }

    /// Resyncs if the table has disappeared; returns whether it had to.
    pub async fn repair(&self) -> Result<Result<bool, ProxyError>, ServicesError> {
        let proxy = self.proxy.clone();
        blocking(move || lock(&proxy).repair()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"namespace": "kube-system", "name": "kube-dns"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn the_service_on_the_node_local_dns_address_is_not_proxied() {
        let dns: IpAddr = "10.43.0.10".parse().unwrap();
        assert!(!proxied(&service(json!({"clusterIP": "10.43.0.10"})), dns));
        assert!(!proxied(&service(json!({"clusterIPs": ["fd43::a", "10.43.0.10"]})), dns));
        assert!(proxied(&service(json!({"clusterIP": "10.43.0.11"})), dns));
        assert!(proxied(&service(json!({"clusterIP": "None"})), dns));
        assert!(proxied(&service(json!({"type": "ExternalName", "externalName": "x.y"})), dns));
    }
}
