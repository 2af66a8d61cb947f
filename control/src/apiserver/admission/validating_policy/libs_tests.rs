//! The Kubernetes CEL libraries, the `authorizer` variable, the cost budget and audit
//! annotations, evaluated through whole policies.

use std::sync::Arc;

use serde_json::json;

use super::authorizer::{self, Chain};
use super::evaluate::{evaluate, evaluate_all, evaluate_with_budget, Decision};
use super::tests::{inputs, policy};
use crate::apiserver::authn::User;
use crate::apiserver::authz::Decision as Authz;

/// The decision of each expression, as validations of one policy.
fn check(expressions: &[&str]) -> Vec<Decision> {
    let validations: Vec<_> = expressions.iter().map(|e| json!({"expression": e})).collect();
    evaluate(&policy(json!({"validations": validations})), &inputs(3), None)
}

fn all_admit(expressions: &[&str]) {
    for (expression, decision) in expressions.iter().zip(check(expressions)) {
        assert_eq!(decision, Decision::Admit, "{expression}");
    }
}

fn error_of(expression: &str) -> String {
    match check(&[expression]).pop() {
        Some(Decision::Deny { message, reason: None }) => message,
        other => panic!("{expression}: expected an error, got {other:?}"),
    }
}

#[test]
fn quantities() {
    all_admit(&[
        "quantity('1Gi').isGreaterThan(quantity('1000Mi'))",
        "quantity('500m').isLessThan(quantity('1'))",
        "quantity('1') == quantity('1000m')",
        "quantity('2Ki').compareTo(quantity('2048')) == 0",
        "quantity('1.5').compareTo(quantity('2')) == -1",
        "quantity('3k').asInteger() == 3000",
        "quantity('1500m').asApproximateFloat() == 1.5",
        "quantity('1').add(quantity('500m')) == quantity('1500m')",
        "quantity('1').add(2) == quantity('3')",
        "quantity('1').sub(2).sign() == -1",
        "!quantity('1500m').isInteger() && quantity('2').isInteger()",
        "isQuantity('10Gi') && !isQuantity('ten')",
    ]);
    assert!(error_of("quantity('ten') == quantity('1')").contains("quantities must match"));
    assert!(error_of("quantity('1500m').asInteger() == 1").contains("cannot convert"));
}

#[test]
fn urls() {
    all_admit(&[
        "url('https://example.com:8443/a/b?x=1&x=2&y=z').getScheme() == 'https'",
        "url('https://example.com:8443/a/b').getHost() == 'example.com:8443'",
        "url('https://example.com:8443/a/b').getHostname() == 'example.com'",
        "url('https://example.com:8443/a/b').getPort() == '8443'",
        "url('https://[::1]/a').getHostname() == '::1' && url('https://[::1]/a').getPort() == ''",
        "url('https://example.com/a%20b').getEscapedPath() == '/a%20b'",
        "url('https://e.com/?x=1&x=2&y=z').getQuery() == {'x': ['1', '2'], 'y': ['z']}",
        "url('/absolute/path').getScheme() == ''",
        "isURL('https://example.com') && !isURL('example.com')",
    ]);
}

#[test]
fn ips_and_cidrs() {
    all_admit(&[
        "ip('10.0.0.1').family() == 4 && ip('2001:db8::1').family() == 6",
        "ip('127.0.0.1').isLoopback() && ip('::1').isLoopback()",
        "ip('0.0.0.0').isUnspecified()",
        "ip('169.254.1.1').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()",
        "ip('224.0.0.1').isLinkLocalMulticast() && ip('ff02::1').isLinkLocalMulticast()",
        "ip('8.8.8.8').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()",
        "string(ip('2001:db8:0:0::1')) == '2001:db8::1'",
        "ip.isCanonical('2001:db8::1') && !ip.isCanonical('2001:DB8::1')",
        "isIP('1.2.3.4') && !isIP('1.2.3') && !isIP('::ffff:1.2.3.4')",
        "cidr('10.0.0.0/8').containsIP(ip('10.1.2.3')) && cidr('10.0.0.0/8').containsIP('10.9.9.9')",
        "!cidr('10.0.0.0/8').containsIP('11.0.0.1')",
        "cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16') && !cidr('10.1.0.0/16').containsCIDR('10.0.0.0/8')",
        "cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')",
        "cidr('10.1.2.3/8').ip() == ip('10.1.2.3') && cidr('10.1.2.3/8').prefixLength() == 8",
        "string(cidr('2001:db8::/32')) == '2001:db8::/32'",
        "isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0/33')",
    ]);
    assert!(error_of("ip('fe80::1%eth0').family() == 6").contains("zone"));
}

#[test]
fn strings_lists_sets_and_regexes() {
    all_admit(&[
        "'HeLLo'.lowerAscii() == 'hello' && 'a'.upperAscii() == 'A'",
        "'a,b,c'.split(',') == ['a', 'b', 'c'] && ['a', 'b'].join('-') == 'a-b'",
        "'  x '.trim() == 'x' && 'aXa'.replace('X', 'y') == 'aya'",
        "'hello'.indexOf('l') == 2 && 'hello'.substring(1, 3) == 'el'",
        "'abc 123 def 456'.find('[0-9]+') == '123' && 'abc'.find('[0-9]+') == ''",
        "'abc 123 def 456'.findAll('[0-9]+') == ['123', '456']",
        "'a1b2c3'.findAll('[0-9]', 2) == ['1', '2']",
        "'prod-web'.matches('^prod-')",
        "[1, 2, 3].isSorted() && !['b', 'a'].isSorted()",
        "[1, 2, 3].sum() == 6 && [1.5, 2.5].sum() == 4.0 && [].sum() == 0",
        "[3, 1, 2].min() == 1 && [3, 1, 2].max() == 3 && ['b', 'a'].max() == 'b'",
        "[1, 2, 1].indexOf(1) == 0 && [1, 2, 1].lastIndexOf(1) == 2 && [1].indexOf(5) == -1",
        "sets.contains([1, 2, 3], [2, 3]) && !sets.contains([1], [2])",
        "sets.equivalent([1, 2], [2, 1, 1]) && sets.intersects([1, 2], [2, 9])",
        "[quantity('2'), quantity('1')].min() == quantity('1')",
    ]);
    assert!(error_of("[].min() == 1").contains("empty list"));
}

fn fake_chain() -> Chain {
    Arc::new(|attrs| {
        let user = &attrs.user.name;
        match (user.as_str(), attrs.verb.as_str(), attrs.resource.as_str(), attrs.path.as_str()) {
            ("alice", "update", "deployments", _) if attrs.namespace == "prod" => {
                Authz::Allow("RBAC: allowed".into())
            }
            ("alice", "get", "", "/healthz") => Authz::Allow(String::new()),
            ("system:serviceaccount:kube-system:ctl", "delete", "pods", _) => {
                Authz::Allow(String::new())
            }
            _ => Authz::NoOpinion,
        }
    })
}

#[test]
fn the_authorizer_asks_the_chain() {
    let mut inputs = inputs(3);
    let alice = User::new("alice", vec![]);
    inputs.authorizer = authorizer::authorizer(fake_chain(), alice.clone());
    inputs.request_resource = authorizer::request_resource(
        fake_chain(),
        alice,
        ["apps", "deployments", "", "prod", "web"],
    );
    let expressions = [
        "authorizer.group('apps').resource('deployments').namespace('prod').name('web').check('update').allowed()",
        "!authorizer.group('apps').resource('deployments').namespace('dev').check('update').allowed()",
        "authorizer.group('apps').resource('deployments').namespace('prod').check('update').reason() == 'RBAC: allowed'",
        "authorizer.path('/healthz').check('get').allowed() && !authorizer.path('/metrics').check('get').allowed()",
        "authorizer.serviceAccount('kube-system', 'ctl').group('').resource('pods').check('delete').allowed()",
        "authorizer.requestResource.check('update').allowed()",
        "!authorizer.requestResource.subresource('scale').namespace('dev').check('update').allowed()",
        "!authorizer.group('').resource('pods').check('get').errored()",
    ];
    let validations: Vec<_> = expressions.iter().map(|e| json!({"expression": e})).collect();
    let decisions = evaluate(&policy(json!({"validations": validations})), &inputs, None);
    for (expression, decision) in expressions.iter().zip(decisions) {
        assert_eq!(decision, Decision::Admit, "{expression}");
    }
}

#[test]
fn a_pathological_expression_is_stopped_by_the_cost_limit() {
    // 1000³ steps: far beyond the per-expression limit; stopped well before.
    let expression = "lists.range(1000).all(a, lists.range(1000).all(b, \
                      lists.range(1000).all(c, a + b + c >= 0)))";
    let message = error_of(expression);
    assert_eq!(
        message,
        format!("expression '{expression}' resulted in error: operation cancelled: actual cost limit exceeded")
    );
    // Under the limit, loops run to the end.
    all_admit(&["lists.range(100).all(a, lists.range(100).all(b, a + b >= 0))"]);
    all_admit(&["lists.range(300).map(a, a * 2).filter(x, x > 10).size() == 294"]);
}

#[test]
fn a_spent_evaluation_budget_stops_later_expressions() {
    let p = policy(json!({"validations": [
        {"expression": "lists.range(100).all(a, lists.range(100).all(b, a + b >= 0))"},
        {"expression": "true"},
    ]}));
    let decisions = evaluate_with_budget(&p, &inputs(1), None, 12_500);
    let out_of_budget = Decision::Deny {
        message: "validation failed due to running out of cost budget, no further validation \
                  rules will be run"
            .into(),
        reason: None,
    };
    assert_eq!(decisions.decisions, vec![out_of_budget.clone(), out_of_budget]);
    let full = evaluate_with_budget(&p, &inputs(1), None, 10_000_000);
    assert_eq!(full.decisions, vec![Decision::Admit; 2]);
}

#[test]
fn audit_annotations_are_keyed_by_policy() {
    let p = policy(json!({
    "validations": [{"expression": "true"}],
    "auditAnnotations": [
        {"key": "replicas", "valueExpression": "'replicas: ' + string(object.spec.replicas)"},
        {"key": "empty", "valueExpression": "''"},
        {"key": "none", "valueExpression": "null"},
    ]}));
    let outcome = evaluate_all(&p, &inputs(4), None);
    assert_eq!(outcome.annotations, vec![("p/replicas".to_string(), "replicas: 4".to_string())]);
}
