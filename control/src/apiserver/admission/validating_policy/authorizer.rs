//! The `authorizer` CEL variable, as the reference's authz library: an expression may ask the
//! server's authorization chain (privileged group, Node authorizer, RBAC) whether the
//! requesting user may do something else —
//! `authorizer.group('apps').resource('deployments').namespace('ns').name('n').check('update')`
//! (with an optional `.subresource(s)`), `authorizer.path('/healthz').check('get')`,
//! `authorizer.serviceAccount(ns, name)` to ask for a service account instead — and read the
//! answer with `allowed()`, `reason()`, `errored()` and `error()`.
//! `authorizer.requestResource` is the request's own resource, ready for `.check(verb)`.
//!
//! Each step is an opaque value that carries the user and the chain, so the overloads are
//! plain functions; a check calls the chain synchronously on the evaluating thread.

use std::fmt;
use std::sync::Arc;

use cel::common::functions::Function;
use cel::common::types::STRING_TYPE;
use cel::objects::Opaque;
use cel::{DeclarationError, Env, Value};

use super::libs::{opaque, opaque_arg, opaque_type, str_arg, string, value_fn, Out};
use crate::apiserver::authn::User;
use crate::apiserver::authz::{Attributes, Decision};

const AUTHORIZER: &str = "kubernetes.authorization.Authorizer";
const PATH_CHECK: &str = "kubernetes.authorization.PathCheck";
const GROUP_CHECK: &str = "kubernetes.authorization.GroupCheck";
const RESOURCE_CHECK: &str = "kubernetes.authorization.ResourceCheck";
const DECISION: &str = "kubernetes.authorization.Decision";

/// The server's authorization chain, asked synchronously.
pub(super) type Chain = Arc<dyn Fn(&Attributes) -> Decision + Send + Sync>;

/// One step of building a check: the user and the chain, and what is asked so far.
#[derive(Clone)]
pub(super) struct Step {
    chain: Chain,
    user: User,
    kind: &'static str,
    path: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}/{}/{})", self.kind, self.group, self.resource, self.name)
    }
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chain, &other.chain)
            && (self.kind, &self.user, &self.path, &self.group, &self.resource)
                == (other.kind, &other.user, &other.path, &other.group, &other.resource)
            && (&self.subresource, &self.namespace, &self.name)
                == (&other.subresource, &other.namespace, &other.name)
    }
}

impl Eq for Step {}

impl Opaque for Step {
    fn runtime_type_name(&self) -> &str {
        self.kind
    }
}

/// A check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    allowed: bool,
    reason: String,
}

impl Opaque for Answer {
    fn runtime_type_name(&self) -> &str {
        DECISION
    }
}

/// The `authorizer` value for `user`.
pub(super) fn authorizer(chain: Chain, user: User) -> Value {
    opaque(Step {
        chain,
        user,
        kind: AUTHORIZER,
        path: String::new(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
    })
}

/// `authorizer.requestResource` for a request to `group`/`resource`[/`subresource`] of
/// `namespace`/`name`.
pub(super) fn request_resource(
    chain: Chain,
    user: User,
    [group, resource, subresource, namespace, name]: [&str; 5],
) -> Value {
    opaque(Step {
        chain,
        user,
        kind: RESOURCE_CHECK,
        path: String::new(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
    })
}

fn step<'a>(args: &'a [Value], function: &str) -> Result<&'a Step, cel::ExecutionError> {
    opaque_arg::<Step>(args, 0, function)
}

/// The next step: `kind`, with `set` applied to a copy of the receiver.
fn next(args: &[Value], function: &str, kind: &'static str, set: fn(&mut Step, &str)) -> Out {
    let mut next = step(args, function)?.clone();
    set(&mut next, str_arg(args, 1, function)?);
    next.kind = kind;
    Ok(opaque(next))
}

fn path(args: &[Value]) -> Out {
    next(args, "path", PATH_CHECK, |s, v| s.path = v.into())
}

fn group(args: &[Value]) -> Out {
    next(args, "group", GROUP_CHECK, |s, v| s.group = v.into())
}

fn resource(args: &[Value]) -> Out {
    next(args, "resource", RESOURCE_CHECK, |s, v| s.resource = v.into())
}

fn subresource(args: &[Value]) -> Out {
    next(args, "subresource", RESOURCE_CHECK, |s, v| s.subresource = v.into())
}

fn namespace(args: &[Value]) -> Out {
    next(args, "namespace", RESOURCE_CHECK, |s, v| s.namespace = v.into())
}

fn name(args: &[Value]) -> Out {
    next(args, "name", RESOURCE_CHECK, |s, v| s.name = v.into())
}

fn service_account(args: &[Value]) -> Out {
    let mut next = step(args, "serviceAccount")?.clone();
    let namespace = str_arg(args, 1, "serviceAccount")?;
    let name = str_arg(args, 2, "serviceAccount")?;
    next.user = User::new(
        format!("system:serviceaccount:{namespace}:{name}"),
        vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")],
    );
    Ok(opaque(next))
}

fn check(args: &[Value]) -> Out {
    let step = step(args, "check")?;
    let verb = str_arg(args, 1, "check")?;
    let attrs = if step.kind == PATH_CHECK {
        Attributes::non_resource(&step.user, verb, &step.path)
    } else {
        let mut attrs = Attributes::resource(&step.user, verb, &step.group, &step.resource)
            .in_namespace(&step.namespace)
            .named(&step.name);
        attrs.subresource = step.subresource.clone();
        attrs
    };
    let answer = match (step.chain)(&attrs) {
        Decision::Allow(reason) => Answer { allowed: true, reason },
        Decision::Deny(reason) => Answer { allowed: false, reason },
        Decision::NoOpinion => Answer { allowed: false, reason: String::new() },
    };
    Ok(opaque(answer))
}

fn answer<'a>(args: &'a [Value], function: &str) -> Result<&'a Answer, cel::ExecutionError> {
    opaque_arg::<Answer>(args, 0, function)
}

fn allowed(args: &[Value]) -> Out {
    Ok(Value::Bool(answer(args, "allowed")?.allowed))
}

fn reason(args: &[Value]) -> Out {
    Ok(string(answer(args, "reason")?.reason.clone()))
}

/// The chain answers or says nothing; it never fails half-way.
fn errored(args: &[Value]) -> Out {
    answer(args, "errored").map(|_| Value::Bool(false))
}

fn error_text(args: &[Value]) -> Out {
    answer(args, "error").map(|_| string(""))
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    for kind in [AUTHORIZER, PATH_CHECK, GROUP_CHECK, RESOURCE_CHECK, DECISION] {
        env.add_type(opaque_type(kind))?;
    }
    let one_string: [(&str, &'static str, Function); 7] = [
        ("path", AUTHORIZER, value_fn!(path)),
        ("group", AUTHORIZER, value_fn!(group)),
        ("resource", GROUP_CHECK, value_fn!(resource)),
        ("subresource", RESOURCE_CHECK, value_fn!(subresource)),
        ("namespace", RESOURCE_CHECK, value_fn!(namespace)),
        ("name", RESOURCE_CHECK, value_fn!(name)),
        ("check", RESOURCE_CHECK, value_fn!(check)),
    ];
    for (function, receiver, f) in one_string {
        let id = format!("{receiver}_{function}");
        env.add_member_overload(function, &id, opaque_type(receiver), vec![STRING_TYPE], f)?;
    }
    env.add_member_overload(
        "check",
        "path_check",
        opaque_type(PATH_CHECK),
        vec![STRING_TYPE],
        value_fn!(check),
    )?;
    env.add_member_overload(
        "serviceAccount",
        "authorizer_serviceaccount",
        opaque_type(AUTHORIZER),
        vec![STRING_TYPE, STRING_TYPE],
        value_fn!(service_account),
    )?;
    let decision: [(&str, Function); 4] = [
        ("allowed", value_fn!(allowed)),
        ("reason", value_fn!(reason)),
        ("errored", value_fn!(errored)),
        ("error", value_fn!(error_text)),
    ];
    for (function, f) in decision {
        env.add_member_overload(
            function,
            &format!("decision_{function}"),
            opaque_type(DECISION),
            vec![],
            f,
        )?;
    }
    Ok(())
}
