//! Policies and bindings as the plugin uses them: read from their stored JSON once, with every
//! CEL expression compiled, and kept per object generation so a request compiles nothing.
//!
//! Compiling never fails a policy as a whole: an expression that does not parse keeps its
//! error, and evaluating it yields `compilation error: …`, which the policy's `failurePolicy`
//! then decides on (as the reference does). Parsing is wrapped in `catch_unwind`, so a parser
//! bug on a hostile expression costs a compilation error, not the request. Each expression is
//! instrumented for the cost budget ([`cost`](super::cost)). There is no type checking against
//! the objects' schemas (the reference's `status.typeChecking`): a misspelt field is a runtime
//! error instead.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock, Mutex};

use cel::{Env, IdedExpr};
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, ParamKind, ParamRef, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec,
};
use serde_json::Value;

use crate::apiserver::watch_cache::CachedObject;

/// The CEL environment every expression is compiled and run in: the standard library, the
/// strings, lists and math extensions that Kubernetes also enables, the Kubernetes libraries
/// ([`libs`](super::libs)), the `authorizer` functions and the cost meter.
pub(super) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    for (name, result) in [
        ("strings", env.add_extension(cel::extensions::strings)),
        ("lists", env.add_extension(cel::extensions::lists)),
        ("math", env.add_extension(cel::extensions::math)),
        ("kubernetes", env.add_extension(super::libs::register)),
        ("authorizer", env.add_extension(super::authorizer::register)),
        ("cost", env.add_extension(super::cost::register)),
    ] {
        if let Err(e) = result {
            tracing::warn!(extension = name, error = %e, "CEL extension not available");
        }
    }
    Arc::new(env)
});

/// One CEL expression and its instrumented syntax tree, or why it did not compile.
pub(super) struct Expr {
    pub source: String,
    pub program: Result<IdedExpr, String>,
    /// Its node count: what one evaluation costs before any loop.
    pub size: u64,
}

impl Expr {
    pub fn compile(source: &str) -> Expr {
        let source = source.to_string();
        let program = match catch_unwind(AssertUnwindSafe(|| ENV.parser().parse(&source))) {
            Ok(Ok(expr)) => Ok(super::cost::instrument(expr)),
            Ok(Err(errors)) => Err(errors.to_string().replace('\n', "; ")),
            Err(_) => Err("the CEL parser failed on this expression".to_string()),
        };
        let size = program.as_ref().map_or(1, super::cost::size);
        Expr { source, program, size }
    }

    /// Whether the expression uses the `authorizer` variable.
    pub fn uses_authorizer(&self) -> bool {
        self.source.contains("authorizer")
    }
}

/// One `spec.validations` item.
pub(super) struct Validation {
    pub expr: Expr,
    pub message: Option<String>,
    pub message_expression: Option<Expr>,
    /// `Unauthorized`, `Forbidden`, `Invalid` or `RequestEntityTooLarge`; `Invalid` if unset.
    pub reason: Option<String>,
}

/// A ValidatingAdmissionPolicy, compiled.
pub(super) struct Policy {
    pub name: String,
    /// `failurePolicy: Ignore` (the default is `Fail`).
    pub ignore_failures: bool,
    pub param_kind: Option<ParamKind>,
    pub constraints: Option<MatchResources>,
    pub match_conditions: Vec<(String, Expr)>,
    pub variables: Vec<(String, Expr)>,
    pub validations: Vec<Validation>,
    /// `spec.auditAnnotations`: each key and its value expression.
    pub audit_annotations: Vec<(String, Expr)>,
    /// Why the spec could not be read at all (then nothing else is set).
    pub config_error: Option<String>,
}

impl Policy {
    /// Whether any expression uses the `authorizer` variable.
    pub fn uses_authorizer(&self) -> bool {
        let named =
            self.variables.iter().chain(&self.match_conditions).chain(&self.audit_annotations);
        named.map(|(_, e)| e).any(Expr::uses_authorizer)
            || self.validations.iter().any(|v| {
                v.expr.uses_authorizer()
                    || v.message_expression.as_ref().is_some_and(Expr::uses_authorizer)
            })
    }

    /// Compiles a stored policy. Never fails: a spec that does not decode becomes a
    /// configuration error that the policy's failure policy (`Fail`) applies to every request.
    pub fn compile(obj: &Value) -> Policy {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let spec: ValidatingAdmissionPolicySpec = match serde_json::from_value(spec) {
            Ok(spec) => spec,
            Err(e) => {
                return Policy {
                    name: name.to_string(),
                    ignore_failures: false,
                    param_kind: None,
                    constraints: None,
                    match_conditions: Vec::new(),
                    variables: Vec::new(),
                    validations: Vec::new(),
                    audit_annotations: Vec::new(),
                    config_error: Some(format!("invalid spec: {e}")),
                }
            }
        };
        let named = |items: Vec<(String, String)>| {
            items.into_iter().map(|(n, e)| (n, Expr::compile(&e))).collect::<Vec<_>>()
        };
        Policy {
            name: name.to_string(),
            ignore_failures: spec.failure_policy.as_deref() == Some("Ignore"),
            param_kind: spec.param_kind,
            constraints: spec.match_constraints,
            match_conditions: named(
                spec.match_conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (c.name, c.expression))
                    .collect(),
            ),
            variables: named(
                spec.variables
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| (v.name, v.expression))
                    .collect(),
            ),
            validations: spec
                .validations
                .unwrap_or_default()
                .into_iter()
                .map(|v| Validation {
                    expr: Expr::compile(&v.expression),
                    message: v.message,
                    message_expression: v.message_expression.as_deref().map(Expr::compile),
                    reason: v.reason,
                })
                .collect(),
            audit_annotations: named(
                spec.audit_annotations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| (a.key, a.value_expression))
                    .collect(),
            ),
            config_error: None,
        }
    }
}

/// A ValidatingAdmissionPolicyBinding, decoded.
pub(super) struct Binding {
    pub name: String,
    pub policy_name: String,
    pub param_ref: Option<ParamRef>,
    pub match_resources: Option<MatchResources>,
    /// `Deny`, `Warn`, `Audit`.
    pub actions: Vec<String>,
}

impl Binding {
    /// Decodes a stored binding; `None` when its spec does not decode (it binds nothing).
    pub fn decode(obj: &Value) -> Option<Binding> {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let spec: ValidatingAdmissionPolicyBindingSpec = match serde_json::from_value(spec) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(binding = %name, error = %e, "ignoring an undecodable binding");
                return None;
            }
        };
        Some(Binding {
            name,
            policy_name: spec.policy_name.unwrap_or_default(),
            param_ref: spec.param_ref,
            match_resources: spec.match_resources,
            actions: spec.validation_actions.unwrap_or_default(),
        })
    }
}

/// Compiled objects by uid, each with the version it was made from.
type Memo<T> = Mutex<HashMap<String, (String, Arc<T>)>>;

static POLICIES: LazyLock<Memo<Policy>> = LazyLock::new(Default::default);
static BINDINGS: LazyLock<Memo<Option<Binding>>> = LazyLock::new(Default::default);

/// The uid of an object and the version of it that `make` depends on (`generation` for the
/// spec of a policy, else the resourceVersion).
fn identity(obj: &Value, by_generation: bool) -> (String, String) {
    let meta = |field: &str| obj.pointer(&format!("/metadata/{field}")).cloned();
    let uid = meta("uid").and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let version = match (by_generation, meta("generation")) {
        (true, Some(generation)) => format!("g{generation}"),
        _ => format!("rv{}", meta("resourceVersion").unwrap_or(Value::Null)),
    };
    // The name is part of the identity too: objects without a uid (never stored) stay apart.
    let name = meta("name").unwrap_or(Value::Null);
    (format!("{uid}/{name}"), version)
}

/// The made form of each object, reusing what was made for the same uid and version. Entries
/// of objects that are gone are dropped once the memo has grown well past the current set.
fn made<T>(
    memo: &Memo<T>,
    objects: &[Arc<CachedObject>],
    by_generation: bool,
    make: impl Fn(&Value) -> T,
) -> Vec<Arc<T>> {
    let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(objects.len());
    let mut current = Vec::with_capacity(objects.len());
    for obj in objects {
        let (uid, version) = identity(obj, by_generation);
        let item = match memo.get(&uid) {
            Some((v, item)) if *v == version => item.clone(),
            _ => {
                let item = Arc::new(make(obj));
                memo.insert(uid.clone(), (version, item.clone()));
                item
            }
        };
        out.push(item);
        current.push(uid);
    }
    // Several servers may share the process (tests); dropping another's entries only costs a
    // recompile, so the bound is loose.
    if memo.len() > 2 * current.len() + 64 {
        memo.retain(|uid, _| current.contains(uid));
    }
    out
}

/// The compiled policies of `objects`.
pub(super) fn policies(objects: &[Arc<CachedObject>]) -> Vec<Arc<Policy>> {
    made(&POLICIES, objects, true, Policy::compile)
}

/// The decoded bindings of `objects` (undecodable ones left out).
pub(super) fn bindings(objects: &[Arc<CachedObject>]) -> Vec<Arc<Option<Binding>>> {
    made(&BINDINGS, objects, false, Binding::decode)
}
