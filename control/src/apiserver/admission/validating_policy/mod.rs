//! ValidatingAdmissionPolicy: the reference's in-process CEL admission (admissionregistration
//! v1), the last validating plugin of the chain.
//!
//! For a write, every policy that has bindings is matched against the request
//! ([`matching`]: `matchConstraints`, then each binding's `matchResources`); for each matching
//! binding the param objects are collected ([`sources::params`]) and the policy is evaluated
//! once per param ([`evaluate`]). A denial is acted on per the binding's `validationActions`:
//! `Deny` refuses the request, `Warn` adds the reference's `Warning`
//! (`Validation failed for ValidatingAdmissionPolicy 'P' with binding 'B': MSG`), `Audit` adds
//! the reference's `validation.policy.admission.k8s.io/validation_failure` annotation (a JSON
//! list of the failures) to the request's audit event, as `spec.auditAnnotations` add
//! `POLICY/KEY`. A misconfigured policy or binding (no
//! match constraints, an unknown paramKind, a missing param under `Deny`) refuses under the
//! policy's `failurePolicy: Fail` whatever the actions, as in the reference. The first denial
//! is the error: `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy 'P' with
//! binding 'B' denied request: MSG`, reason and code from the validation's `reason` (default
//! `Invalid`, 422).
//!
//! Policies and bindings come from the watch caches and are compiled once per generation
//! ([`compile`]). The CEL environment has the Kubernetes libraries ([`libs`]), the
//! `authorizer` variable backed by the server's authorization chain ([`authorizer`]) and a cost
//! budget ([`cost`]). Not done: `status.typeChecking`; DELETE and CONNECT requests do not pass
//! through this chain.

mod authorizer;
mod cel_value;
mod compile;
mod cost;
mod evaluate;
mod libs;
mod matching;
mod sources;

#[cfg(test)]
mod libs_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::Value as Cel;
use serde_json::{json, Value};

use super::{Operation, Request};
use crate::apiserver::audit;
use crate::apiserver::server::ApiServer;
use crate::apiserver::status::{qualified_resource, ApiError, ApiResult};
use crate::apiserver::watch_cache::CachedObject;
use cel_value::to_cel;
use compile::{Binding, Policy};
use evaluate::{Decision, Inputs};

/// The audit annotation of failed validations whose binding has the `Audit` action.
const VALIDATION_FAILURE_ANNOTATION: &str = "validation.policy.admission.k8s.io/validation_failure";
use matching::Attributes;

/// A denial to act on: the policy, the binding (none for a policy-level error), the message
/// and the validation's reason.
struct Denial {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: Option<String>,
}

/// Refuses (or warns about) a write that a bound ValidatingAdmissionPolicy denies.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    let policies = compile::policies(&sources::policies(server).await);
    if policies.is_empty() {
        return Ok(());
    }
    let bindings = compile::bindings(&sources::bindings(server).await);
    let mut bound: BTreeMap<&str, Vec<&Binding>> = BTreeMap::new();
    for binding in bindings.iter().filter_map(|b| b.as_ref().as_ref()) {
        bound.entry(binding.policy_name.as_str()).or_default().push(binding);
    }
    // Only policies with bindings are hooks at all; skip the rest of the work without them.
    let mut policies: Vec<&Arc<Policy>> =
        policies.iter().filter(|p| bound.contains_key(p.name.as_str())).collect();
    if policies.is_empty() {
        return Ok(());
    }
    policies.sort_by(|a, b| a.name.cmp(&b.name));

    let namespace = request.call.namespace().unwrap_or_default().to_string();
    let namespace_object = match namespace.as_str() {
        "" => None,
        ns => sources::namespace(server, ns).await,
    };
    let namespace_labels = namespace_object.as_ref().map(|ns| matching::labels(Some(ns)));
    let namespace_labels = namespace_labels.map(Option::unwrap_or_default);
    let info = &request.call.info;
    let equivalent_versions: Vec<String> = server
        .inner
        .registry
        .all()
        .iter()
        .filter(|r| r.group == info.group && r.plural == info.plural && r.version != info.version)
        .map(|r| r.version.clone())
        .collect();
    let attrs = Attributes {
        group: &info.group,
        version: &request.call.path.version,
        resource: &info.plural,
        subresource: request.subresource.unwrap_or_default(),
        operation: operation_name(request.operation),
        name: request.name,
        namespaced: info.namespaced,
        object: Some(obj),
        old_object: request.old,
        equivalent_versions: &equivalent_versions,
    };

    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    let mut audit_failures = Vec::new();
    let mut annotations = Vec::new();
    let mut inputs: Option<Inputs> = None;
    // The `authorizer` answers from the RBAC caches: let them catch up first, so a grant
    // written just before is seen (as the request's own authorization does).
    if policies.iter().any(|p| p.uses_authorizer()) {
        server.inner.authz.catch_up(server).await;
    }
    for policy in policies {
        let config_error = |message: String, binding: Option<&Binding>| Denial {
            policy: policy.name.clone(),
            binding: binding.map(|b| b.name.clone()),
            message: match binding {
                Some(_) => format!("failed to configure binding: {message}"),
                None => format!("failed to configure policy: {message}"),
            },
            reason: None,
        };
        let matched = match (&policy.config_error, &policy.constraints) {
            (Some(e), _) => Err(e.clone()),
            (None, None) => Err("policy contained no match constraints, a required field".into()),
            (None, Some(c)) => matching::matches(c, &attrs, namespace_labels.as_ref()),
        };
        match matched {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                if !policy.ignore_failures {
                    denials.push(config_error(e, None));
                }
                continue;
            }
        }
        let mut its_bindings = bound.get(policy.name.as_str()).cloned().unwrap_or_default();
        its_bindings.sort_by(|a, b| a.name.cmp(&b.name));
        for binding in its_bindings {
            let narrowed = match &binding.match_resources {
                None => Ok(true),
                Some(c) => matching::matches(c, &attrs, namespace_labels.as_ref()),
            };
            let params = match narrowed {
                Ok(false) => continue,
                Ok(true) => {
                    sources::params(
                        server,
                        policy.param_kind.as_ref(),
                        binding.param_ref.as_ref(),
                        &namespace,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let params = match params {
                Ok(params) => params,
                Err(e) => {
                    if !policy.ignore_failures {
                        denials.push(config_error(e, Some(binding)));
                    }
                    continue;
                }
            };
            let inputs = inputs.get_or_insert_with(|| {
                request_inputs(server, request, obj, namespace_object.as_deref())
            });
            for param in &params {
                let outcome =
                    evaluate::evaluate_all(policy, inputs, param.as_deref().map(|p| &**p));
                annotations.extend(outcome.annotations);
                for (index, decision) in outcome.decisions.into_iter().enumerate() {
                    let Decision::Deny { message, reason } = decision else { continue };
                    for action in &binding.actions {
                        match action.as_str() {
                            "Deny" => denials.push(Denial {
                                policy: policy.name.clone(),
                                binding: Some(binding.name.clone()),
                                message: message.clone(),
                                reason: reason.clone(),
                            }),
                            "Warn" => warnings.push(format!(
                                "Validation failed for ValidatingAdmissionPolicy '{}' with \
                                 binding '{}': {message}",
                                policy.name, binding.name
                            )),
                            "Audit" => audit_failures.push(json!({
                                "message": message,
                                "policy": policy.name,
                                "binding": binding.name,
                                "expressionIndex": index,
                                "validationActions": binding.actions,
                            })),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    for warning in warnings {
        request.warn(warning);
    }
    // The first annotation of a key is kept, as the reference does.
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in annotations {
        if seen.insert(key.clone()) {
            audit::annotate(&key, &value);
        }
    }
    if !audit_failures.is_empty() {
        audit::annotate(VALIDATION_FAILURE_ANNOTATION, &Value::Array(audit_failures).to_string());
    }
    match denials.into_iter().next() {
        Some(denial) => Err(refusal(request, &denial)),
        None => Ok(()),
    }
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
    }
}

/// The reference's refusal: a Forbidden-shaped error whose reason and code come from the
/// validation, with the message as the single cause.
fn refusal(request: &Request<'_>, denial: &Denial) -> ApiError {
    let message = match &denial.binding {
        Some(binding) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{binding}' denied request: {}",
            denial.policy, denial.message
        ),
        None => {
            format!(
                "ValidatingAdmissionPolicy '{}' denied request: {}",
                denial.policy, denial.message
            )
        }
    };
    let (reason, code) = match denial.reason.as_deref() {
        Some("Forbidden") => ("Forbidden", 403),
        Some("Unauthorized") => ("Unauthorized", 401),
        Some("RequestEntityTooLarge") => ("RequestEntityTooLarge", 413),
        _ => ("Invalid", 422),
    };
    let info = &request.call.info;
    let resource = qualified_resource(info);
    let name = request.name;
    ApiError {
        code,
        reason,
        message: format!("{resource} \"{name}\" is forbidden: {message}"),
        details: Some(json!({
            "name": name,
            "group": info.group,
            "kind": info.plural,
            "causes": [{"message": message}],
        })),
        retry_after: None,
    }
}

/// The request-wide CEL inputs: the objects and the reference's `AdmissionRequest` fields
/// (empty ones left out, as its JSON omits them).
fn request_inputs(
    server: &ApiServer,
    request: &Request<'_>,
    obj: &Value,
    namespace: Option<&CachedObject>,
) -> Inputs {
    let call = request.call;
    let info = &call.info;
    let kind = json!({
        "group": obj.get("apiVersion").and_then(Value::as_str)
            .and_then(|v| v.split_once('/')).map(|(g, _)| g).unwrap_or_default(),
        "version": obj.get("apiVersion").and_then(Value::as_str)
            .map(|v| v.rsplit('/').next().unwrap_or(v)).unwrap_or(&call.path.version),
        "kind": obj.get("kind").and_then(Value::as_str).unwrap_or(&info.kind),
    });
    let resource =
        json!({"group": info.group, "version": call.path.version, "resource": info.plural});
    let mut req = json!({
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "operation": operation_name(request.operation),
        "dryRun": request.dry_run,
        "options": {
            "kind": match request.operation {
                Operation::Create => "CreateOptions",
                Operation::Update => "UpdateOptions",
            },
            "apiVersion": "meta.k8s.io/v1",
        },
    });
    let user = &call.user;
    let mut user_info = json!({});
    for (field, value) in [
        ("username", json!(user.name)),
        ("uid", json!(user.uid)),
        ("groups", json!(user.groups)),
        ("extra", json!(user.extra)),
    ] {
        if !is_empty(&value) {
            user_info[field] = value;
        }
    }
    let subresource = request.subresource.unwrap_or_default();
    for (field, value) in [
        ("userInfo", user_info),
        ("name", json!(request.name)),
        ("namespace", json!(call.namespace().unwrap_or_default())),
        ("subResource", json!(subresource)),
        ("requestSubResource", json!(subresource)),
    ] {
        if !is_empty(&value) {
            req[field] = value;
        }
    }
    let chain: authorizer::Chain = {
        let server = server.clone();
        Arc::new(move |attrs| crate::apiserver::authz::decide_now(&server, attrs))
    };
    let target = [
        info.group.as_str(),
        info.plural.as_str(),
        subresource,
        call.namespace().unwrap_or_default(),
        request.name,
    ];
    Inputs {
        object: to_cel(obj),
        old_object: request.old.map(to_cel).unwrap_or(Cel::Null),
        request: to_cel(&req),
        namespace_object: namespace.map(|ns| to_cel(ns)).unwrap_or(Cel::Null),
        authorizer: authorizer::authorizer(chain.clone(), user.clone()),
        request_resource: authorizer::request_resource(chain, user.clone(), target),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => true,
        _ => false,
    }
}
