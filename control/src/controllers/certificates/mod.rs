//! The certificate controllers (the reference's `csrapproving` and `csrsigning`) for the two
//! client signers of the cluster CA:
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: node client certificates. A request for
//!   `CN=system:node:<name>, O=system:nodes` with client usages is approved automatically when
//!   a bootstrap token (an agent joining) or that same node (renewing) asked for it, and the
//!   requester may `create` `certificatesigningrequests/nodeclient` (joining) or
//!   `…/selfnodeclient` (renewing) — asked with a SubjectAccessReview as the reference's
//!   approver does, so the bootstrap RBAC bindings (groups `system:bootstrappers` and
//!   `system:nodes`) are what turns automatic approval on and off.
//! - `kubernetes.io/kube-apiserver-client`: user certificates, signed once someone approved them
//!   (`kubectl certificate approve`).
//!
//! An approved request is signed with the cluster CA (its subject kept verbatim, every `O`
//! included; valid for `spec.expirationSeconds` when set) and gets `status.certificate`; one that
//! cannot be signed gets the `Failed` condition. Level-triggered: each pass looks at the
//! request's conditions and certificate only.

mod policy;

use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use self::policy::{approval_permission, auto_approves, has_condition, signs, Verdict};
use super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, ObjectKey, WorkQueue};
use crate::pki::ClusterCa;

/// The name `--disable-controllers` takes.
pub const NAME: &str = "csrsigning";
/// The component in its Events.
pub const COMPONENT: &str = "certificate-controller";

/// Subscribes to CertificateSigningRequests and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let Some(ca) = ctx.options.ca.clone() else {
        tracing::info!("no cluster CA key: certificate signing requests are left alone");
        return;
    };
    let queue = WorkQueue::new();
    ctx.informers
        .get::<CertificateSigningRequest>()
        .feed(queue.clone(), |csr: &CertificateSigningRequest| vec![ObjectKey::of(csr)]);
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |key: ObjectKey| {
        let ctx = ctx.clone();
        let ca = ca.clone();
        async move { reconcile(&ctx, &ca, &key).await }
    });
}

fn condition(type_: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    ca: &Arc<ClusterCa>,
    key: &ObjectKey,
) -> Result<Action, ControlError> {
    let Some(csr) = ctx.informers.get::<CertificateSigningRequest>().get(None, &key.name) else {
        return Ok(Action::Done);
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let finished = has_condition(&csr, "Denied") || has_condition(&csr, "Failed");
    if finished || csr.status.as_ref().is_some_and(|s| s.certificate.is_some()) {
        return Ok(Action::Done);
    }
    if !has_condition(&csr, "Approved") {
        if let Verdict::Approve(message) = auto_approves(&csr) {
            if !may_request(ctx, &csr, approval_permission(&csr)).await? {
                // Left pending for a person, as the reference leaves it.
                return Ok(Action::Done);
            }
            let mut approved = (*csr).clone();
            let status = approved.status.get_or_insert_with(Default::default);
            status.conditions.get_or_insert_with(Vec::new).push(condition(
                "Approved",
                "AutoApproved",
                &message,
            ));
            api.replace_subresource("approval", &key.name, &Default::default(), &approved).await?;
        }
        // Signing follows when the informer sees the approval.
        return Ok(Action::Done);
    }
    let patch = match signs(&csr) {
        Verdict::Approve(_) => {
            let request = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
            // `spec.expirationSeconds` shortens the certificate (never below ten minutes nor
            // beyond the signer's year), as the reference's signer honours it.
            let ttl = csr.spec.expiration_seconds.and_then(|s| u64::try_from(s).ok());
            let ttl = ttl.map(std::time::Duration::from_secs);
            match ca.sign_client_request_for(&request, ttl) {
                Ok(cert_pem) => {
                    let cert = base64::engine::general_purpose::STANDARD.encode(cert_pem);
                    json!({"status": {"certificate": cert}})
                }
                Err(err) => failed(&csr, &err.to_string()),
            }
        }
        Verdict::Refuse(reason) => failed(&csr, &reason),
        Verdict::NotOurs => return Ok(Action::Done),
    };
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(Action::Done)
}

/// Whether the requester of `csr` may `create` `certificatesigningrequests/<subresource>`.
async fn may_request(
    ctx: &Context<ControllerOptions>,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, ControlError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                verb: Some("create".into()),
                subresource: Some(subresource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The status patch adding the `Failed` condition (a merge patch replaces the list whole).
fn failed(csr: &CertificateSigningRequest, message: &str) -> serde_json::Value {
    let mut conditions = csr.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.push(condition("Failed", "SignerValidationFailure", message));
    json!({"status": {"conditions": conditions}})
}
