//! Evaluating one compiled policy for one request (and one param object), as the reference's
//! validator does: variables first (each may use the earlier ones as `variables.NAME`), then
//! the match conditions (any `false` skips the policy; otherwise an error applies the failure
//! policy), then every validation, then the audit annotations. A validation that is not `true`
//! denies with its `messageExpression` (when it yields a one-line, non-blank string), else its
//! `message`, else `failed expression: EXPR`; its `reason` (default `Invalid`) sets the
//! response code. An expression that fails to compile or to run denies under
//! `failurePolicy: Fail` and admits under `Ignore`.
//!
//! The CEL inputs are `object`, `oldObject`, `request`, `params`, `namespaceObject`,
//! `variables`, `authorizer` and `authorizer.requestResource`. Every expression runs under the
//! cost budget ([`cost`](super::cost)): one over its limit fails with the reference's
//! `operation cancelled: actual cost limit exceeded`, and once the evaluation's budget is
//! spent nothing more is evaluated.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cel::common::value::Val;
use cel::{Context, Value as Cel};
use serde_json::Value;

use super::cel_value::{self, to_cel};
use super::compile::{Expr, Policy, Validation, ENV};
use super::cost::{self, COST_EXCEEDED, PER_EVALUATION_BUDGET, PER_EXPRESSION_LIMIT};

/// The reference's cap on a message made by a `messageExpression`.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// The reference's error once a policy evaluation's budget is spent.
const OUT_OF_BUDGET: &str =
    "validation failed due to running out of cost budget, no further validation rules will be run";

/// The request-wide CEL inputs (everything but `params` and `variables`).
pub(super) struct Inputs {
    pub object: Cel,
    pub old_object: Cel,
    pub request: Cel,
    pub namespace_object: Cel,
    /// `authorizer` and `authorizer.requestResource` (`Null` when not provided).
    pub authorizer: Cel,
    pub request_resource: Cel,
}

/// What one validation (or an evaluation error) decided.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    Admit,
    /// `reason` is the validation's, `None` for evaluation errors (both mean `Invalid`).
    Deny {
        message: String,
        reason: Option<String>,
    },
}

/// Everything one evaluation produced: a decision per validation (one error decision instead
/// when the match conditions failed) and the audit annotations (`policy/key`, value).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub decisions: Vec<Decision>,
    pub annotations: Vec<(String, String)>,
}

fn add(ctx: &mut Context<'_, '_>, name: &str, value: Cel) {
    match Box::<dyn Val>::try_from(value) {
        Ok(value) => ctx.add_variable_as_val(name, value),
        // Values made from JSON always convert; anything else is left undeclared.
        Err(e) => tracing::warn!(variable = name, error = %e, "CEL input not converted"),
    }
}

/// The evaluation's remaining cost budget.
struct Meter {
    remaining: u64,
}

impl Meter {
    /// Runs `expr` under the budget; the error is the reference's text for a compile or
    /// runtime failure or a cost overrun.
    fn run(&mut self, expr: &Expr, ctx: &Context<'_, '_>) -> Result<Cel, String> {
        let program = expr.program.as_ref().map_err(|e| format!("compilation error: {e}"))?;
        if self.remaining == 0 {
            return Err(OUT_OF_BUDGET.to_string());
        }
        let failed = |why: &dyn std::fmt::Display| {
            format!("expression '{}' resulted in error: {why}", expr.source)
        };
        let limit = self.remaining.min(PER_EXPRESSION_LIMIT);
        let (result, spent) = cost::metered(limit, expr.size, || {
            catch_unwind(AssertUnwindSafe(|| ctx.resolve(program)))
        });
        self.remaining -= spent.cost.min(self.remaining);
        if spent.exceeded {
            if limit < PER_EXPRESSION_LIMIT {
                self.remaining = 0;
                return Err(OUT_OF_BUDGET.to_string());
            }
            return Err(failed(&COST_EXCEEDED));
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failed(&e)),
            Err(_) => Err(failed(&"the CEL interpreter failed")),
        }
    }
}

/// The reference's aggregate error text: one error alone, several in brackets.
fn aggregate(errors: Vec<String>) -> String {
    match errors.len() {
        1 => errors.into_iter().next().unwrap_or_default(),
        _ => format!("[{}]", errors.join(", ")),
    }
}

/// Evaluates `policy` for one request and param object: its decisions only.
#[cfg(test)]
pub(super) fn evaluate(policy: &Policy, inputs: &Inputs, params: Option<&Value>) -> Vec<Decision> {
    evaluate_all(policy, inputs, params).decisions
}

/// Evaluates `policy` for one request and param object (`params` is `null` without one).
pub(super) fn evaluate_all(policy: &Policy, inputs: &Inputs, params: Option<&Value>) -> Outcome {
    evaluate_with_budget(policy, inputs, params, PER_EVALUATION_BUDGET)
}

pub(super) fn evaluate_with_budget(
    policy: &Policy,
    inputs: &Inputs,
    params: Option<&Value>,
    budget: u64,
) -> Outcome {
    let on_error = |message: String| {
        if policy.ignore_failures {
            Decision::Admit
        } else {
            Decision::Deny { message, reason: None }
        }
    };
    let mut meter = Meter { remaining: budget };
    let mut root = Context::with_env(ENV.clone());
    add(&mut root, "object", inputs.object.clone());
    add(&mut root, "oldObject", inputs.old_object.clone());
    add(&mut root, "request", inputs.request.clone());
    add(&mut root, "namespaceObject", inputs.namespace_object.clone());
    add(&mut root, "params", params.map(to_cel).unwrap_or(Cel::Null));
    add(&mut root, "authorizer", inputs.authorizer.clone());
    add(&mut root, "authorizer.requestResource", inputs.request_resource.clone());

    // Variables are evaluated in order, each seeing the ones before it. One that fails is
    // left out; an expression that uses it reports the variable's error.
    let mut values: Vec<(String, Cel)> = Vec::new();
    let mut failed: HashMap<String, String> = HashMap::new();
    let variables = |values: &[(String, Cel)]| {
        cel_value::map(values.iter().map(|(k, v)| (k.as_str(), v.clone())))
    };
    for (name, expr) in &policy.variables {
        let mut scope = root.new_inner_scope();
        add(&mut scope, "variables", variables(&values));
        match meter.run(expr, &scope) {
            Ok(value) => values.push((name.clone(), value)),
            Err(e) => {
                failed.insert(name.clone(), e);
            }
        }
    }
    let mut ctx = root.new_inner_scope();
    add(&mut ctx, "variables", variables(&values));
    let mut run = |expr: &Expr| {
        meter.run(expr, &ctx).map_err(|e| {
            let used = failed.iter().find(|(name, _)| uses_variable(&expr.source, name));
            used.map(|(_, why)| why.clone()).unwrap_or(e)
        })
    };

    let mut errors = Vec::new();
    for (_, expr) in &policy.match_conditions {
        match run(expr) {
            Ok(Cel::Bool(false)) => return Outcome::default(),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Outcome { decisions: vec![on_error(aggregate(errors))], annotations: Vec::new() };
    }

    let decisions = policy
        .validations
        .iter()
        .map(|validation| match run(&validation.expr) {
            Ok(Cel::Bool(true)) => Decision::Admit,
            Ok(_) => Decision::Deny {
                message: message(validation, validation.message_expression.as_ref().map(&mut run)),
                reason: validation.reason.clone(),
            },
            Err(e) => on_error(e),
        })
        .collect();
    // An annotation whose expression fails or yields null or "" is left out.
    let annotations = policy
        .audit_annotations
        .iter()
        .filter_map(|(key, expr)| match run(expr) {
            Ok(Cel::String(value)) if !value.is_empty() => {
                Some((format!("{}/{key}", policy.name), value.to_string()))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(policy = %policy.name, %key, error = %e, "audit annotation failed");
                None
            }
        })
        .collect();
    Outcome { decisions, annotations }
}

/// Whether `source` refers to `variables.NAME`.
fn uses_variable(source: &str, name: &str) -> bool {
    let needle = format!("variables.{name}");
    source.match_indices(&needle).any(|(at, _)| {
        let next = source[at + needle.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The denial message of a failed validation.
fn message(validation: &Validation, from_expression: Option<Result<Cel, String>>) -> String {
    let made = match from_expression {
        Some(Ok(value)) => cel_value::as_str(&value).map(str::trim).unwrap_or_default().to_string(),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "messageExpression failed");
            String::new()
        }
        None => String::new(),
    };
    if !made.is_empty() && made.len() <= MAX_MESSAGE_BYTES && !made.contains('\n') {
        return made;
    }
    match validation.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(message) => message.to_string(),
        None => format!("failed expression: {}", validation.expr.source.trim()),
    }
}
