//! Admission: what runs on every write between decoding and storage, in the reference's order.
//!
//! Two phases, as in the reference apiserver: [`mutate`] may change the object (defaults from
//! LimitRanges, the service account mount, …) and runs before validation; [`validate`] may only
//! refuse it (quota, pod security, …) and runs after the object is valid, right before the
//! commit. Each plugin is one module with a `mutate` and/or `validate` function over a
//! [`Request`]; it decides for itself which kinds and operations concern it. A plugin adds
//! `Warning` headers through [`Request::warn`].
//!
//! Always-on pieces that are not plugins of the chain live here too: NamespaceLifecycle
//! (checked before anything else) and the Service address and port allocators.

pub(crate) mod cached;
mod default_storage_class;
pub(crate) mod limit_ranger;
mod namespace_lifecycle;
mod pod_security;
pub(crate) mod priority;
mod pvc_resize;
mod ranges;
pub(crate) mod resource_quota;
pub(crate) mod storage_protection;
mod stored;
mod validating_policy;

pub use namespace_lifecycle::{check_namespace, SYSTEM_NAMESPACES};
pub use ranges::{allocation_keys, Reallocation, ServiceRanges};

use serde_json::Value;

use super::server::{ApiServer, Call};
use super::serviceaccount;
use super::status::ApiResult;

/// What a write does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
}

/// One write as admission sees it.
pub(crate) struct Request<'a> {
    pub call: &'a Call,
    pub operation: Operation,
    /// The object's name (generated names are already filled in).
    pub name: &'a str,
    /// The stored object, on update.
    pub old: Option<&'a Value>,
    /// `status`, `scale`, … for writes to a subresource.
    pub subresource: Option<&'a str>,
    /// A dry run must not charge quota or change anything else.
    pub dry_run: bool,
    /// What earlier attempts of this update charged to quotas (set by the update's retry loop).
    pub quota_charged: Option<&'a resource_quota::Charged>,
    warnings: Vec<String>,
}

impl<'a> Request<'a> {
    pub fn new(
        call: &'a Call,
        operation: Operation,
        name: &'a str,
        old: Option<&'a Value>,
        dry_run: bool,
    ) -> Request<'a> {
        let subresource = call.path.subresource.as_deref();
        let (quota_charged, warnings) = (None, Vec::new());
        Request { call, operation, name, old, subresource, dry_run, quota_charged, warnings }
    }

    /// Whether the write is to `group`/`kind` itself (not one of its subresources).
    pub fn is_main(&self, group: &str, kind: &str) -> bool {
        self.subresource.is_none() && self.call.info.group == group && self.call.info.kind == kind
    }

    /// Adds a `Warning` header to the response.
    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// The warnings the plugins added.
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }
}

/// The mutating plugins, in the reference's order.
pub(crate) async fn mutate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &mut Value,
) -> ApiResult<()> {
    limit_ranger::mutate(server, request, obj).await?;
    if request.operation == Operation::Create {
        serviceaccount::admission::admit(server, request.call, request.name, obj).await?;
    }
    priority::mutate(server, request, obj).await?;
    default_storage_class::mutate(server, request, obj).await?;
    storage_protection::mutate(server, request, obj).await?;
    Ok(())
}

/// The validating plugins, in the reference's order; the last step before the commit.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    limit_ranger::validate(server, request, obj).await?;
    pod_security::validate(server, request, obj).await?;
    priority::validate(server, request, obj).await?;
    pvc_resize::validate(server, request, obj).await?;
    // The reference runs ResourceQuota after ValidatingAdmissionPolicy: it charges the quota.
    validating_policy::validate(server, request, obj).await?;
    resource_quota::validate(server, request, obj).await?;
    Ok(())
}
