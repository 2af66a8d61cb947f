//! The runtime's network hook over the pod network: a new sandbox's namespace gets its veth,
//! address and routes from [`PodNetwork`]; a removed one gives them back. The runtime calls
//! the hook synchronously from a blocking thread, so the async netlink work runs on the
//! agent's tokio runtime through its handle.

use std::path::Path;
use std::sync::Arc;

use skerry_netproxy::podnet::PodNetwork;
use skerry_runtime::{NetworkStatus, SandboxNetwork};

/// [`SandboxNetwork`] backed by the node's [`PodNetwork`].
pub struct PodNetworkHook {
    network: Arc<PodNetwork>,
    handle: tokio::runtime::Handle,
}

impl PodNetworkHook {
    /// A hook over `network`, driving it on `handle`.
    pub fn new(network: Arc<PodNetwork>, handle: tokio::runtime::Handle) -> Self {
        PodNetworkHook { network, handle }
    }
}

impl SandboxNetwork for PodNetworkHook {
    fn setup(&self, sandbox_id: &str, netns: &Path) -> Result<NetworkStatus, String> {
        let address = self
            .handle
            .block_on(self.network.attach(sandbox_id, netns))
            .map_err(|e| e.to_string())?;
        Ok(NetworkStatus { ips: vec![address.ip.to_string()] })
    }

    fn teardown(&self, sandbox_id: &str, _netns: &Path) -> Result<(), String> {
        self.handle.block_on(self.network.detach(sandbox_id)).map_err(|e| e.to_string())
    }
}
