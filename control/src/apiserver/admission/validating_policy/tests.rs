//! Compiling and evaluating policies without a server.

use serde_json::{json, Value};

use super::cel_value::to_cel;
use super::compile::Policy;
use super::evaluate::{evaluate, Decision, Inputs};

pub(super) fn policy(spec: Value) -> Policy {
    Policy::compile(&json!({"metadata": {"name": "p"}, "spec": spec}))
}

pub(super) fn inputs(replicas: i64) -> Inputs {
    let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "prod"},
                        "spec": {"replicas": replicas}});
    Inputs {
        object: to_cel(&object),
        old_object: to_cel(&Value::Null),
        request: to_cel(&json!({"operation": "CREATE", "namespace": "prod",
                                "userInfo": {"username": "alice", "groups": ["dev"]}})),
        namespace_object: to_cel(&json!({"metadata": {"name": "prod", "labels": {"env": "p"}}})),
        authorizer: to_cel(&Value::Null),
        request_resource: to_cel(&Value::Null),
    }
}

fn deny(message: &str) -> Decision {
    Decision::Deny { message: message.into(), reason: None }
}

#[test]
fn a_false_validation_denies_with_the_expression() {
    let p = policy(json!({"validations": [{"expression": "object.spec.replicas <= 5"}]}));
    assert_eq!(evaluate(&p, &inputs(3), None), vec![Decision::Admit]);
    assert_eq!(
        evaluate(&p, &inputs(6), None),
        vec![deny("failed expression: object.spec.replicas <= 5")]
    );
}

#[test]
fn message_message_expression_and_reason() {
    let p = policy(json!({"validations": [
        {"expression": "object.spec.replicas <= 5", "message": "too many", "reason": "Forbidden"},
        {"expression": "false", "message": "fixed",
         "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5'"},
        {"expression": "false", "message": "fallback", "messageExpression": "'a\\nb'"},
        {"expression": "false", "message": "fallback too", "messageExpression": "1 / 0 == 1"},
    ]}));
    assert_eq!(
        evaluate(&p, &inputs(6), None),
        vec![
            Decision::Deny { message: "too many".into(), reason: Some("Forbidden".into()) },
            deny("replicas 6 > 5"),
            deny("fallback"),
            deny("fallback too"),
        ]
    );
}

#[test]
fn params_variables_and_request_fields_are_visible() {
    let p = policy(json!({
    "variables": [{"name": "max", "expression": "int(params.data.max)"},
                  {"name": "over", "expression": "object.spec.replicas > variables.max"}],
    "validations": [
        {"expression": "!variables.over"},
        {"expression": "request.userInfo.username == 'alice' && 'dev' in request.userInfo.groups"},
        {"expression": "request.operation == 'CREATE' && oldObject == null"},
        {"expression": "namespaceObject.metadata.labels.env == 'p'"},
        {"expression": "object.metadata.name.startsWith('w') && has(object.spec.replicas)"},
    ]}));
    let params = json!({"data": {"max": "4"}});
    let all_admit = vec![Decision::Admit; 5];
    assert_eq!(evaluate(&p, &inputs(4), Some(&params)), all_admit);
    let decisions = evaluate(&p, &inputs(5), Some(&params));
    assert_eq!(decisions[0], deny("failed expression: !variables.over"));
    assert_eq!(decisions[1..], all_admit[1..]);
}

#[test]
fn match_conditions_skip_the_policy_or_apply_the_failure_policy() {
    let skip = policy(json!({
        "matchConditions": [{"name": "big", "expression": "object.spec.replicas > 10"}],
        "validations": [{"expression": "false"}]}));
    assert_eq!(evaluate(&skip, &inputs(6), None), vec![]);
    assert_eq!(evaluate(&skip, &inputs(11), None), vec![deny("failed expression: false")]);

    let broken = json!({
        "matchConditions": [{"name": "bad", "expression": "object.spec.missing > 1"}],
        "validations": [{"expression": "false"}]});
    let decisions = evaluate(&policy(broken.clone()), &inputs(1), None);
    let [Decision::Deny { message, reason: None }] = decisions.as_slice() else {
        panic!("expected one error denial: {decisions:?}")
    };
    assert!(message.starts_with("expression 'object.spec.missing > 1' resulted in error: "));
    let mut ignored = broken;
    ignored["failurePolicy"] = json!("Ignore");
    assert_eq!(evaluate(&policy(ignored), &inputs(1), None), vec![Decision::Admit]);
}

#[test]
fn expressions_that_do_not_compile_or_fail_apply_the_failure_policy() {
    let spec = json!({"validations": [{"expression": "object.spec.replicas <= "},
                                      {"expression": "object.nope.deeper == 1"}]});
    let decisions = evaluate(&policy(spec.clone()), &inputs(1), None);
    let messages: Vec<&str> = decisions
        .iter()
        .map(|d| match d {
            Decision::Deny { message, reason: None } => message.as_str(),
            other => panic!("not an error denial: {other:?}"),
        })
        .collect();
    assert!(messages[0].starts_with("compilation error: "), "{messages:?}");
    assert!(messages[1].starts_with("expression 'object.nope.deeper == 1' resulted in error"));
    let mut ignored = spec;
    ignored["failurePolicy"] = json!("Ignore");
    assert_eq!(evaluate(&policy(ignored), &inputs(1), None), vec![Decision::Admit; 2]);
}

#[test]
fn a_failed_variable_is_the_error_of_the_expression_using_it() {
    let p = policy(json!({
        "variables": [{"name": "bad", "expression": "object.nope"}],
        "validations": [{"expression": "variables.bad == 1"}, {"expression": "true"}]}));
    let decisions = evaluate(&p, &inputs(1), None);
    let Decision::Deny { message, .. } = &decisions[0] else { panic!("{decisions:?}") };
    assert!(message.starts_with("expression 'object.nope' resulted in error"), "{message}");
    assert_eq!(decisions[1], Decision::Admit);
}

#[test]
fn an_undecodable_spec_is_a_configuration_error() {
    let p = policy(json!({"validations": "not a list"}));
    assert!(p.config_error.as_deref().is_some_and(|e| e.starts_with("invalid spec: ")));
    assert!(policy(json!({"validations": []})).config_error.is_none());
}
