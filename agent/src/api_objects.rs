//! [`ApiObjects`]: the agent's [`ObjectSource`] — ConfigMaps and Secrets read from the API
//! server and written through to the local cache, which answers when the server does not
//! (offline autonomy); service account tokens by TokenRequest; a claim's host directory from
//! its bound PersistentVolume (both cached likewise).

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::LocalCache;
use crate::objects::{ObjectError, ObjectSource};

/// Objects from the API server, with the local cache as fallback.
#[derive(Clone)]
pub struct ApiObjects {
    client: kube::Client,
    cache: LocalCache,
}

impl std::fmt::Debug for ApiObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiObjects").finish_non_exhaustive()
    }
}

impl ApiObjects {
    /// A source over `client` writing through to `cache`.
    pub fn new(client: kube::Client, cache: LocalCache) -> Self {
        ApiObjects { client, cache }
    }

    async fn read<K>(
        &self,
        kind: &'static str,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, ObjectError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let (ns_owned, name_owned) = (ns.to_string(), name.to_string());
        match api.get_opt(name).await {
            Ok(found) => {
                let stored = found.clone();
                let result = self
                    .cache
                    .run(move |c| match &stored {
                        Some(obj) => c.put_object(kind, &ns_owned, &name_owned, obj),
                        None => c.remove_object(kind, &ns_owned, &name_owned),
                    })
                    .await;
                if let Err(err) = result {
                    tracing::warn!(%err, kind, "caching an object");
                }
                Ok(found)
            }
            Err(kube::Error::Api(e)) if e.code != 404 && e.code < 500 => {
                Err(ObjectError::Refused(e.message))
            }
            Err(err) => {
                // The server is away: what we last saw is the best answer.
                let cached = self
                    .cache
                    .run(move |c| c.object::<K>(kind, &ns_owned, &name_owned))
                    .await
                    .map_err(|e| ObjectError::Unavailable(e.to_string()))?;
                cached.map(Some).ok_or_else(|| {
                    ObjectError::Unavailable(format!("{kind} {ns}/{name}: {err} (and not cached)"))
                })
            }
        }
    }
}

impl ApiObjects {
    /// The PersistentVolume `name` (cluster-scoped), cached like [`Self::read`]'s objects.
    async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError> {
        const KIND: &str = "PersistentVolume";
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let owned = name.to_string();
        match api.get_opt(name).await {
            Ok(found) => {
                let stored = found.clone();
                let result = self
                    .cache
                    .run(move |c| match &stored {
                        Some(pv) => c.put_object(KIND, "", &owned, pv),
                        None => c.remove_object(KIND, "", &owned),
                    })
                    .await;
                if let Err(err) = result {
                    tracing::warn!(%err, "caching a PersistentVolume");
                }
                Ok(found)
            }
            Err(kube::Error::Api(e)) if e.code != 404 && e.code < 500 => {
                Err(ObjectError::Refused(e.message))
            }
            Err(err) => {
                let cached = self
                    .cache
                    .run(move |c| c.object::<PersistentVolume>(KIND, "", &owned))
                    .await
                    .map_err(|e| ObjectError::Unavailable(e.to_string()))?;
                cached.map(Some).ok_or_else(|| {
                    ObjectError::Unavailable(format!("{KIND} {name}: {err} (and not cached)"))
                })
            }
        }
    }
}

#[async_trait]
impl ObjectSource for ApiObjects {
    async fn persistent_volume(
        &self,
        pod: &Pod,
        claim_name: &str,
    ) -> Result<Option<HostPathVolumeSource>, ObjectError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let claim: Option<PersistentVolumeClaim> =
            self.read("PersistentVolumeClaim", &ns, claim_name).await?;
        let volume = claim.and_then(|c| c.spec?.volume_name).filter(|v| !v.is_empty());
        let Some(volume) = volume else { return Ok(None) };
        let Some(spec) = self.volume(&volume).await?.and_then(|pv| pv.spec) else {
            return Ok(None);
        };
        // Only node-local sources can be bind-mounted here.
        Ok(spec
            .host_path
            .or_else(|| spec.local.map(|l| HostPathVolumeSource { path: l.path, type_: None })))
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        self.read("ConfigMap", ns, name).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        self.read("Secret", ns, name).await
    }

    async fn service_account_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, ObjectError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(
                    k8s_openapi::api::authentication::v1::BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    },
                ),
            },
            status: None,
        };
        let answer: Result<TokenRequest, kube::Error> = api
            .create_subresource("token", service_account, &PostParams::default(), &request)
            .await;
        match answer {
            Ok(tr) => tr.status.map(|s| s.token).ok_or_else(|| {
                ObjectError::Refused("TokenRequest answered without a token".into())
            }),
            Err(kube::Error::Api(e)) => Err(ObjectError::Refused(e.message)),
            Err(err) => Err(ObjectError::Unavailable(err.to_string())),
        }
    }
}
