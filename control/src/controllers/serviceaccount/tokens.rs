//! The tokens controller, as the reference's `serviceaccount-token` controller: a Secret of type
//! `kubernetes.io/service-account-token` that names a service account (annotation
//! `kubernetes.io/service-account.name`) gets a non-expiring legacy token in `data.token`
//! (signed with the API server's service account key), the cluster CA in `data["ca.crt"]`, its
//! namespace in `data.namespace`, and the account's uid in the
//! `kubernetes.io/service-account.uid` annotation. A token Secret whose service account is gone
//! (or was recreated with another uid) is deleted, which also revokes its token.
//!
//! Level-triggered per Secret: a service account's change wakes the token Secrets naming it.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;

use crate::apiserver::serviceaccount::jwt::SigningKey;
use crate::apiserver::serviceaccount::legacy::{
    LegacyClaims, NAME_ANNOTATION, SECRET_TYPE, UID_ANNOTATION,
};
use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "serviceaccount-token";
/// The component in its Events.
pub const COMPONENT: &str = "tokens-controller";

/// (namespace, name) of a Secret.
type Key = (String, String);

fn is_token_secret(secret: &Secret) -> bool {
    secret.type_.as_deref() == Some(SECRET_TYPE)
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret.metadata.annotations.as_ref()?.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

fn key_of(secret: &Secret) -> Vec<Key> {
    match (&secret.metadata.namespace, &secret.metadata.name) {
        (Some(ns), Some(name)) if is_token_secret(secret) => vec![(ns.clone(), name.clone())],
        _ => Vec::new(),
    }
}

/// Subscribes to Secrets and ServiceAccounts, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let Some(key) = ctx.options.service_account_key.clone() else {
        tracing::warn!(controller = NAME, "no service account signing key: not started");
        return;
    };
    let ca = ctx.options.ca.as_ref().map(|ca| ca.cert_pem.clone());
    let queue = WorkQueue::new();
    ctx.informers.get::<Secret>().feed(queue.clone(), key_of);
    // A service account's change (its deletion above all) wakes the Secrets that name it.
    let secrets = ctx.informers.get::<Secret>();
    ctx.informers.get::<ServiceAccount>().feed(queue.clone(), move |sa: &ServiceAccount| {
        let (Some(ns), Some(name)) = (&sa.metadata.namespace, &sa.metadata.name) else {
            return Vec::new();
        };
        secrets
            .list_namespace(ns)
            .iter()
            .filter(|s| annotation(s, NAME_ANNOTATION) == Some(name.as_str()))
            .flat_map(|s| key_of(s))
            .collect()
    });
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |(namespace, name): Key| {
        let (ctx, key, ca) = (ctx.clone(), key.clone(), ca.clone());
        async move { reconcile(&ctx, &key, ca.as_deref(), &namespace, &name).await }
    });
}

/// The service account, from the cache or (when the cache may lag behind a new one) the API.
async fn account(
    ctx: &Context<ControllerOptions>,
    namespace: &str,
    name: &str,
) -> Result<Option<ServiceAccount>, ControlError> {
    if let Some(cached) = ctx.informers.get::<ServiceAccount>().get(Some(namespace), name) {
        return Ok(Some((*cached).clone()));
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// What the Secret still lacks: its `data` with the token, CA and namespace filled in and the
/// uid annotation set, or `None` when it is complete. The token is signed only when missing.
pub fn completed(
    secret: &Secret,
    account: &ServiceAccount,
    ca: Option<&str>,
    sign: impl FnOnce(&LegacyClaims) -> Result<String, String>,
) -> Result<Option<Secret>, String> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let uid = account.metadata.uid.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let has = |key: &str, want: &[u8]| data.get(key).is_some_and(|v| v.0 == want);
    let needs_token = data.get("token").is_none_or(|t| t.0.is_empty());
    let needs_ca = ca.is_some_and(|ca| !has("ca.crt", ca.as_bytes()));
    let needs_namespace = !has("namespace", namespace.as_bytes());
    let needs_uid = annotation(secret, UID_ANNOTATION) != Some(uid.as_str());
    if !(needs_token || needs_ca || needs_namespace || needs_uid) {
        return Ok(None);
    }
    let mut out = secret.clone();
    let data = out.data.get_or_insert_with(Default::default);
    if needs_token {
        let account_name = account.metadata.name.clone().unwrap_or_default();
        let token = sign(&LegacyClaims::new(&namespace, &account_name, &uid, &name))?;
        data.insert("token".into(), ByteString(token.into_bytes()));
    }
    if let Some(ca) = ca {
        data.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
    }
    data.insert("namespace".into(), ByteString(namespace.into_bytes()));
    out.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(UID_ANNOTATION.into(), uid);
    Ok(Some(out))
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    key: &SigningKey,
    ca: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<Action, ControlError> {
    let Some(secret) = ctx.informers.get::<Secret>().get(Some(namespace), name) else {
        return Ok(Action::Done);
    };
    if !is_token_secret(&secret) || secret.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    // Validation requires the annotation; without it there is nothing to fill in.
    let Some(account_name) = annotation(&secret, NAME_ANNOTATION) else {
        return Ok(Action::Done);
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let wanted_uid = annotation(&secret, UID_ANNOTATION);
    let account = account(ctx, namespace, account_name)
        .await?
        .filter(|sa| wanted_uid.is_none_or(|uid| sa.metadata.uid.as_deref() == Some(uid)));
    let Some(account) = account else {
        // The account is gone (or is another one by now): the token must not live on.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        return match api.delete(name, &params).await {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
            Err(error) => Err(error.into()),
        };
    };
    let sign = |claims: &LegacyClaims| claims.sign(key).map_err(|e| e.to_string());
    let Some(filled) = completed(&secret, &account, ca, sign).map_err(ControlError::Other)? else {
        return Ok(Action::Done);
    };
    // The cached copy's resourceVersion makes this a compare-and-swap: a conflict is retried
    // against the newer Secret.
    match api.replace(name, &PostParams::default(), &filled).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(annotations: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
        let mut s = Secret { type_: Some(SECRET_TYPE.into()), ..Default::default() };
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some("sa-token".into());
        s.metadata.annotations =
            Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let data: BTreeMap<String, ByteString> =
            data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
        s.data = Some(data);
        s
    }

    fn account() -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("sa".into());
        sa.metadata.uid = Some("u1".into());
        sa
    }

    #[test]
    fn a_new_token_secret_is_filled_in() {
        let new = secret(&[(NAME_ANNOTATION, "sa")], &[]);
        let mut signed = None;
        let filled = completed(&new, &account(), Some("CA"), |c| {
            signed = Some(c.clone());
            Ok("jwt".into())
        })
        .unwrap()
        .unwrap();
        assert_eq!(signed.unwrap(), LegacyClaims::new("ns", "sa", "u1", "sa-token"));
        let data = filled.data.unwrap();
        assert_eq!(data["token"].0, b"jwt");
        assert_eq!(data["ca.crt"].0, b"CA");
        assert_eq!(data["namespace"].0, b"ns");
        assert_eq!(filled.metadata.annotations.unwrap()[UID_ANNOTATION], "u1");
    }

    #[test]
    fn a_complete_secret_is_left_alone_and_a_token_is_never_replaced() {
        let annotations = [(NAME_ANNOTATION, "sa"), (UID_ANNOTATION, "u1")];
        let done = secret(&annotations, &[("token", "t"), ("ca.crt", "CA"), ("namespace", "ns")]);
        let never = |_: &LegacyClaims| -> Result<String, String> { panic!("signed again") };
        assert!(completed(&done, &account(), Some("CA"), never).unwrap().is_none());
        // A new CA is written, the token kept.
        let filled = completed(&done, &account(), Some("CA2"), never).unwrap().unwrap();
        let data = filled.data.unwrap();
        assert_eq!(
            (data["token"].0.as_slice(), data["ca.crt"].0.as_slice()),
            (&b"t"[..], &b"CA2"[..])
        );
    }
}
