//! ResourceQuota admission: a new object in a namespace with quotas is measured by its
//! evaluator ([`usage`]), checked against every quota whose resources and scopes it concerns,
//! and charged into those quotas' `status.used` before it is stored, as the reference does.
//! An update of a service or a claim is charged what it adds: the new object's usage less the
//! stored one's, each resource floored at zero (a claim grown by a resize, a service turned
//! into a NodePort or LoadBalancer); shrinking gives nothing back until the controller
//! recounts, as in the reference.
//!
//! The charge is a compare-and-swap on the quotas' mod revisions: two concurrent creates read
//! the same `used`, one wins the transaction, the other re-reads the new `used` and is checked
//! again, so the quota can never be exceeded. If the object's own write then fails, the quota
//! over-counts until the resourcequota controller recounts (the reference has the same gap).
//! Other objects are charged on create only: an object count never changes on update, and pod
//! updates (the reference's in-place resize, which goes through `pods/resize`) are not
//! evaluated. A dry run is checked but not charged.

pub mod quantity;
pub mod usage;

use std::time::Duration;

use serde_json::Value;

use super::{cached, Operation, Request};
use crate::apiserver::meta;
use crate::apiserver::rest;
use crate::apiserver::server::ApiServer;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::watch_cache::{prefix_end, CachedObject};
use crate::store::{KeyValue, RangeRequest, Revision, TxnRequest};
use usage::{Evaluator, ResourceList};

/// Charges tried before giving up under contention (each lost race means another write won).
const ATTEMPTS: usize = 100;

/// The store prefix of the quotas of `namespace`.
fn quota_prefix(server: &ApiServer, namespace: &str) -> String {
    let base = server
        .inner
        .registry
        .resolve("", "v1", "resourcequotas")
        .map(|info| info.storage_prefix.clone())
        .unwrap_or_else(|| "/registry/resourcequotas/".into());
    format!("{base}{namespace}/")
}

/// Checks a create, or an update of a service or claim, against the namespace's quotas and
/// charges it.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    let call = request.call;
    // As in the reference, writes to subresources (status, …) are never charged.
    if request.subresource.is_some() {
        return Ok(());
    }
    let Some(namespace) = call.namespace().filter(|_| call.info.namespaced) else {
        return Ok(());
    };
    let evaluator = Evaluator::of(&call.info.group, &call.info.plural);
    let old = match request.operation {
        Operation::Create => None,
        Operation::Update if evaluator.charges_updates() => request.old,
        Operation::Update => return Ok(()),
    };
    let prefix = quota_prefix(server, namespace);
    for attempt in 0..ATTEMPTS {
        // The first look is at the watch cache, as the reference's quota evaluator reads its
        // lister; after a lost race the winner's charge is read from the store.
        let quotas = if attempt == 0 {
            cached_quotas(server, namespace, &prefix).await?
        } else {
            read_quotas(server, &prefix).await?
        };
        if quotas.is_empty() {
            return Ok(());
        }
        let values: Vec<Value> = quotas.iter().map(|q| q.value.clone()).collect();
        let already = request.quota_charged.map(Charged::get).unwrap_or_default();
        let (charges, delta) = evaluate_charging(&evaluator, &values, obj, old, &already)
            .map_err(|why| ApiError::forbidden(&call.info, request.name, &why))?;
        if charges.is_empty() || request.dry_run {
            return Ok(());
        }
        let mut compare = Vec::new();
        let mut success = Vec::new();
        for (index, used) in charges {
            let quota = &quotas[index];
            let mut charged = quota.value.clone();
            charged["status"]["used"] = usage::to_json_map(&used);
            compare.push(rest::unchanged_since(&quota.key, quota.mod_revision));
            success.push(rest::put(&quota.key, meta::encode(&charged)));
        }
        let resp = server.inner.store.txn(TxnRequest { compare, success, failure: vec![] }).await?;
        if resp.succeeded {
            if let Some(charged) = request.quota_charged {
                charged.add(&delta);
            }
            return Ok(());
        }
        // Another write charged the quota first: back off a little (more after each loss)
        // and check again against the new usage.
        let jitter = u64::from(meta::name_suffix().as_bytes()[0] % 8);
        tokio::time::sleep(Duration::from_millis(1 + jitter + attempt as u64 / 4)).await;
    }
    Err(ApiError::internal("resource quota evaluation timed out: too many concurrent updates"))
}

/// A quota as read: its object, key, and the mod revision its charge is conditional on.
struct Quota {
    value: Value,
    key: String,
    mod_revision: Revision,
}

/// The quotas under `prefix` (those of `namespace`) as the watch cache has them.
async fn cached_quotas(server: &ApiServer, namespace: &str, prefix: &str) -> ApiResult<Vec<Quota>> {
    let quotas = cached::list(server, ("", "v1", "resourcequotas"), Some(namespace)).await?;
    let quota = |q: &CachedObject| -> Option<Quota> {
        let mod_revision = cached::mod_revision(q)?;
        let key = format!("{prefix}{}", quota_name(q));
        Some(Quota { value: Value::clone(q), key, mod_revision })
    };
    Ok(quotas.iter().filter_map(|q| quota(q)).collect())
}

/// The quotas under `prefix`, from the store.
async fn read_quotas(server: &ApiServer, prefix: &str) -> ApiResult<Vec<Quota>> {
    let resp = server
        .inner
        .store
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        })
        .await?;
    let quota = |kv: KeyValue| -> Option<Quota> {
        let value = meta::decode(&kv)?;
        let key = String::from_utf8(kv.key).ok()?;
        Some(Quota { value, key, mod_revision: kv.mod_revision })
    };
    Ok(resp.kvs.into_iter().filter_map(quota).collect())
}

fn quota_name(quota: &Value) -> &str {
    meta::meta_str(quota, "name").unwrap_or_default()
}

/// `list` restricted to `names`.
fn mask(list: &ResourceList, names: &[String]) -> ResourceList {
    list.iter().filter(|(k, _)| names.contains(k)).map(|(k, v)| (k.clone(), *v)).collect()
}

/// What earlier attempts of one update already charged: an update is tried again after a
/// conflicting write to its object, and the retry must not charge the same growth twice.
#[derive(Debug, Default)]
pub(crate) struct Charged(std::sync::Mutex<ResourceList>);

impl Charged {
    fn get(&self) -> ResourceList {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn add(&self, delta: &ResourceList) {
        if let Ok(mut charged) = self.0.lock() {
            for (name, amount) in delta {
                let sum = charged.get(name).map_or(*amount, |c| c.add(*amount));
                charged.insert(name.clone(), sum);
            }
        }
    }
}

/// The reference's quota check of one new object (or, with `old`, the stored object's update)
/// against the namespace's `quotas` (read from `status.hard` and `status.used`): the new `used`
/// of each quota it is charged to (by index), or the reason (after `is forbidden: `) it is
/// refused — less what earlier attempts of the same write charged (`already`). Also answers
/// the amounts charged now.
pub fn evaluate_charging(
    evaluator: &Evaluator,
    quotas: &[Value],
    obj: &Value,
    old: Option<&Value>,
    already: &ResourceList,
) -> Result<(Vec<(usize, ResourceList)>, ResourceList), String> {
    let mut interesting = Vec::new();
    for (index, quota) in quotas.iter().enumerate() {
        let hard = usage::from_json_map(quota.pointer("/status/hard"));
        let restricted = evaluator.matching(hard.keys());
        if restricted.is_empty() || !evaluator.matches_scopes(quota, obj) {
            continue;
        }
        if *evaluator == Evaluator::Pods {
            usage::pod_constraints(&restricted, obj)
                .map_err(|why| format!("failed quota: {}: {why}", quota_name(quota)))?;
        }
        let used = quota.pointer("/status/used").and_then(Value::as_object);
        if !restricted.iter().all(|r| used.is_some_and(|u| u.contains_key(r))) {
            let mut names = restricted.clone();
            names.sort();
            return Err(format!(
                "status unknown for quota: {}, resources: {}",
                quota_name(quota),
                names.join(",")
            ));
        }
        interesting.push(index);
    }
    if interesting.is_empty() {
        return Ok((Vec::new(), ResourceList::new()));
    }
    let mut delta = evaluator.usage(obj);
    let negative: Vec<&str> =
        delta.iter().filter(|(_, v)| v.milli < 0).map(|(k, _)| k.as_str()).collect();
    if !negative.is_empty() {
        return Err(format!("quota usage is negative for resource(s): {}", negative.join(",")));
    }
    if let Some(old) = old {
        delta = usage::subtract_non_negative(&delta, &evaluator.usage(old));
    }
    delta = usage::subtract_non_negative(&delta, already);
    // Resources the write does not add to are not charged (nor checked) at all.
    delta.retain(|_, v| !v.is_zero());
    if delta.is_empty() {
        return Ok((Vec::new(), delta));
    }
    let mut charges = Vec::new();
    for index in interesting {
        let quota = &quotas[index];
        let hard = usage::from_json_map(quota.pointer("/status/hard"));
        let used = usage::from_json_map(quota.pointer("/status/used"));
        let hard_names: Vec<String> = hard.keys().cloned().collect();
        let requested = mask(&delta, &hard_names);
        if requested.is_empty() {
            continue;
        }
        let mut new_used = used.clone();
        for (name, amount) in &requested {
            let sum = used.get(name).map_or(*amount, |u| u.add(*amount));
            new_used.insert(name.clone(), sum);
        }
        let exceeded: Vec<String> = requested
            .keys()
            .filter(|name| hard.get(*name).is_some_and(|limit| new_used[*name] > *limit))
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            return Err(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                quota_name(quota),
                usage::pretty(&mask(&requested, &exceeded)),
                usage::pretty(&mask(&used, &exceeded)),
                usage::pretty(&mask(&hard, &exceeded)),
            ));
        }
        charges.push((index, new_used));
    }
    Ok((charges, delta))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
