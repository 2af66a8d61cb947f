//! Counting a namespace's usage for one quota: each hard resource goes to the evaluator that
//! tracks it, each evaluator lists its objects through the API server (any resource, custom
//! ones included, for `count/<resource>.<group>`) and sums what those in the quota's scopes use.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use serde_json::Value;

use crate::apiserver::admission::resource_quota::quantity::Quantity;
use crate::apiserver::admission::resource_quota::usage::{self, Evaluator, ResourceList};
use crate::machinery::ControlError;

/// Lists objects for the recount; remembers each group's preferred version.
pub struct Counter {
    client: Client,
    versions: Mutex<HashMap<String, String>>,
}

impl Counter {
    pub fn new(client: Client) -> Counter {
        Counter { client, versions: Mutex::default() }
    }

    /// What the objects of `namespace` use of each hard resource of `quota` that an evaluator
    /// tracks (zero when none uses it).
    pub async fn count(
        &self,
        namespace: &str,
        quota: &Value,
    ) -> Result<ResourceList, ControlError> {
        let hard = usage::from_json_map(quota.pointer("/spec/hard"));
        let mut evaluators: Vec<Evaluator> = Vec::new();
        for name in hard.keys() {
            if let Some(evaluator) = Evaluator::tracking(name) {
                if !evaluators.contains(&evaluator) {
                    evaluators.push(evaluator);
                }
            }
        }
        let mut total = ResourceList::new();
        for evaluator in evaluators {
            let mut sum: ResourceList =
                evaluator.matching(hard.keys()).into_iter().map(|n| (n, Quantity::ZERO)).collect();
            let Some(objects) = self.list(namespace, &evaluator).await? else {
                // Not a served resource (yet): leave its previous usage alone.
                continue;
            };
            for object in objects.iter().filter(|o| evaluator.matches_scopes(quota, o)) {
                for (name, amount) in evaluator.usage(object) {
                    if let Some(entry) = sum.get_mut(&name) {
                        *entry = entry.add(amount);
                    }
                }
            }
            total.extend(sum);
        }
        Ok(total)
    }

    /// The objects an evaluator counts in `namespace`; `None` when the server does not serve
    /// that resource.
    async fn list(
        &self,
        namespace: &str,
        evaluator: &Evaluator,
    ) -> Result<Option<Vec<Value>>, ControlError> {
        let (group, plural) = evaluator.resource();
        let base = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            match self.version(group).await? {
                Some(version) => format!("/apis/{group}/{version}"),
                None => return Ok(None),
            }
        };
        let path = format!("{base}/namespaces/{namespace}/{plural}");
        match self.get(&path).await? {
            Some(list) => {
                let items = list.get("items").and_then(Value::as_array).cloned();
                Ok(Some(items.unwrap_or_default()))
            }
            None => Ok(None),
        }
    }

    /// The preferred version of `group`, from discovery (cached).
    async fn version(&self, group: &str) -> Result<Option<String>, ControlError> {
        if let Some(version) = self.versions.lock().unwrap_or_else(|p| p.into_inner()).get(group) {
            return Ok(Some(version.clone()));
        }
        let Some(discovered) = self.get(&format!("/apis/{group}")).await? else {
            return Ok(None);
        };
        let version = discovered.pointer("/preferredVersion/version").and_then(Value::as_str);
        let Some(version) = version.map(String::from) else { return Ok(None) };
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.insert(group.to_string(), version.clone());
        Ok(Some(version))
    }

    /// GETs `path`; `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, ControlError> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| ControlError::Other(format!("building GET {path}: {e}")))?;
        match self.client.request::<Value>(request).await {
            Ok(value) => Ok(Some(value)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}
