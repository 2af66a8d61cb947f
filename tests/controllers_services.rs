//! The endpoint controllers end to end: the real `skerry server` (scheduler and controllers
//! in it, no agent), a Service and pods whose status the test writes as an agent would, and the
//! core/v1 Endpoints and discovery.k8s.io/v1 EndpointSlices the controllers keep for it:
//! ready and not-ready addresses, named target ports resolved per pod, removal of deleted
//! pods, services without a selector left alone, and cleanup when the Service goes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::SkerryServer;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Bounds a failing test only: the controllers react in milliseconds.
const CONVERGE: Duration = Duration::from_secs(30);

async fn kube_client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// Polls `probe` until it returns Ok, or panics with the last state after `CONVERGE`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A pod on node-a labelled app=web whose container names port 8080 `http`.
async fn create_pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "c", "image": "busybox",
                            "ports": [{"name": "http", "containerPort": 8080}]}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// Writes the pod's status as its agent would: running with `ip`, Ready or not.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": ready}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// `ip -> ready` of the endpoints in the service's managed slices, and the slices.
async fn slice_state(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> (Vec<(String, bool)>, Vec<EndpointSlice>) {
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let list = slices.list(&params).await.unwrap().items;
    let mut state: Vec<(String, bool)> = list
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            (e.addresses[0].clone(), ready)
        })
        .collect();
    state.sort();
    (state, list)
}

/// (ready, not ready) addresses and ports of the service's Endpoints.
async fn endpoints_state(
    endpoints: &Api<Endpoints>,
    service: &str,
) -> Option<(Vec<String>, Vec<String>, Vec<i32>)> {
    let ep = endpoints.get_opt(service).await.unwrap()?;
    let (mut ready, mut not_ready, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for subset in ep.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(subset.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
        ports.extend(subset.ports.iter().flatten().map(|p| p.port));
    }
    ready.sort();
    not_ready.sort();
    Some((ready, not_ready, ports))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoints_and_slices_that_follow_their_pods() {
    let server = SkerryServer::start();
    let client = kube_client(&server.kubeconfig).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    // A service without a selector: its endpoints are the user's.
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &manual).await.unwrap();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    let web = services.create(&PostParams::default(), &web).await.unwrap();
    create_pod(&pods, "a").await;
    create_pod(&pods, "b").await;
    set_status(&pods, "a", "10.42.0.2", true).await;
    set_status(&pods, "b", "10.42.0.3", false).await;

    let expected = (vec!["10.42.0.2".to_string()], vec!["10.42.0.3".to_string()], vec![8080]);
    eventually("Endpoints with a ready and a not-ready address", async || {
        match endpoints_state(&endpoints, "web").await {
            Some(state) if state == expected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let want = vec![("10.42.0.2".to_string(), true), ("10.42.0.3".to_string(), false)];
    let list = eventually("an EndpointSlice with a ready and a not-ready endpoint", async || {
        match slice_state(&slices, "web").await {
            (state, list) if state == want => Ok(list),
            (state, _) => Err(format!("{state:?}")),
        }
    })
    .await;
    assert_eq!(list.len(), 1);
    let slice = &list[0];
    assert!(slice.name_any().starts_with("web-"), "{}", slice.name_any());
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.labels();
    assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert_eq!(labels["team"], "a");
    let owner = &slice.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Service", web.uid().unwrap().as_str()));
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), Some(8080)));
    let b = slice.endpoints.iter().find(|e| e.addresses[0] == "10.42.0.3").unwrap();
    let conditions = b.conditions.as_ref().unwrap();
    assert_eq!((conditions.serving, conditions.terminating), (Some(false), Some(false)));
    assert_eq!(b.node_name.as_deref(), Some("node-a"));
    assert_eq!(b.target_ref.as_ref().unwrap().name.as_deref(), Some("b"));

    // b becomes ready; a goes.
    set_status(&pods, "b", "10.42.0.3", true).await;
    pods.delete("a", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    let expected = (vec!["10.42.0.3".to_string()], vec![], vec![8080]);
    eventually("Endpoints without the deleted pod", async || {
        match endpoints_state(&endpoints, "web").await {
            Some(state) if state == expected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let want = vec![("10.42.0.3".to_string(), true)];
    eventually("the slice without the deleted pod", async || {
        match slice_state(&slices, "web").await {
            (state, _) if state == want => Ok(()),
            (state, _) => Err(format!("{state:?}")),
        }
    })
    .await;

    // By now the controllers have long seen `manual`: they wrote nothing for it.
    assert!(endpoints.get_opt("manual").await.unwrap().is_none());
    assert!(slice_state(&slices, "manual").await.1.is_empty());

    // The service goes, and so do its Endpoints and slices.
    services.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("Endpoints and slices of the deleted service gone", async || {
        let ep = endpoints.get_opt("web").await.unwrap();
        let (_, list) = slice_state(&slices, "web").await;
        if ep.is_none() && list.is_empty() {
            Ok(())
        } else {
            Err(format!("endpoints {ep:?}, {} slices", list.len()))
        }
    })
    .await;
}
