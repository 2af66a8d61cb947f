//! Escalation prevention, as the reference's RBAC storage enforces it: nobody grants a
//! permission they do not hold.
//!
//! - Creating or changing the rules of a Role or ClusterRole requires holding every permission
//!   it grants (in the role's namespace, or cluster-wide), or the `escalate` verb on it.
//!   Setting an `aggregationRule` (which may gather anything) requires full authority.
//! - Creating or changing a RoleBinding or ClusterRoleBinding requires holding every permission
//!   of the role it refers to (in the binding's namespace), or the `bind` verb on that role.
//!
//! `system:masters` is exempt. The refusal is the reference's 403, listing what is missing:
//! `user "alice" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not
//! currently held:` followed by one compact rule per line.

use std::collections::BTreeSet;

use serde_json::Value;

use super::rbac::GROUP;
use super::rules::{compact, compact_string, covers, go_quote_list, PolicyRule};
use super::{authorize, forbidden_status, Attributes, Decision, PRIVILEGED_GROUP};
use crate::apiserver::authn::User;
use crate::apiserver::server::{ApiServer, Call};
use crate::apiserver::status::ApiError;

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Checks a create (`old` is `None`) or update of an RBAC object; other resources pass.
pub(crate) async fn check(
    server: &ApiServer,
    call: &Call,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let info = &call.info;
    if info.group != GROUP || call.user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
        return Ok(());
    }
    let namespace = call.namespace().unwrap_or("");
    let name = text(new, "/metadata/name");
    match info.plural.as_str() {
        "roles" | "clusterroles" => {
            let unchanged = old.is_some_and(|old| {
                old.get("rules") == new.get("rules")
                    && old.get("aggregationRule") == new.get("aggregationRule")
            });
            if unchanged {
                return Ok(());
            }
            let escalate = Attributes::resource(&call.user, "escalate", GROUP, &info.plural)
                .in_namespace(namespace)
                .named(name);
            if matches!(authorize(server, &escalate).await, Decision::Allow(_)) {
                return Ok(());
            }
            let refuse = |why: String| forbidden_status(GROUP, &info.plural, name, &why);
            confirm_no_escalation(server, &call.user, namespace, &PolicyRule::of_role(new))
                .await
                .map_err(refuse)?;
            if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let full = [
                    PolicyRule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Default::default()
                    },
                    PolicyRule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                        ..Default::default()
                    },
                ];
                confirm_no_escalation(server, &call.user, namespace, &full).await.map_err(
                    |_| {
                        refuse(
                            "must have cluster-admin privileges to use the aggregationRule".into(),
                        )
                    },
                )?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let unchanged = old.is_some_and(|old| {
                old.get("roleRef") == new.get("roleRef")
                    && old.get("subjects") == new.get("subjects")
            });
            if unchanged {
                return Ok(());
            }
            let role_kind = text(new, "/roleRef/kind");
            let role_name = text(new, "/roleRef/name");
            let role_resource = if role_kind == "ClusterRole" { "clusterroles" } else { "roles" };
            let bind = Attributes::resource(&call.user, "bind", GROUP, role_resource)
                .in_namespace(namespace)
                .named(role_name);
            if matches!(authorize(server, &bind).await, Decision::Allow(_)) {
                return Ok(());
            }
            let policy = server.inner.authz.current(server);
            let rules = match policy.referenced_rules(role_kind, role_name, namespace) {
                Ok(rules) => rules,
                Err(_) => {
                    // Maybe the role was written a moment ago.
                    server.inner.authz.catch_up(server).await;
                    server
                        .inner
                        .authz
                        .current(server)
                        .referenced_rules(role_kind, role_name, namespace)
                        .map_err(ApiError::bad_request)?
                }
            };
            confirm_no_escalation(server, &call.user, namespace, &rules)
                .await
                .map_err(|why| forbidden_status(GROUP, &info.plural, name, &why))
        }
        _ => Ok(()),
    }
}

/// Ok when `user` holds every permission of `rules` in `namespace`; otherwise the reference's
/// message listing the missing ones.
async fn confirm_no_escalation(
    server: &ApiServer,
    user: &User,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let held = server.inner.authz.current(server).rules_for(user, namespace);
    if covers(&held, rules).0 {
        return Ok(());
    }
    // A grant written a moment ago may not have reached the index yet.
    server.inner.authz.catch_up(server).await;
    let held = server.inner.authz.current(server).rules_for(user, namespace);
    let (ok, missing) = covers(&held, rules);
    if ok {
        return Ok(());
    }
    Err(missing_message(user, &missing))
}

/// `user "alice" (groups=[…]) is attempting to grant RBAC permissions not currently held:` and
/// the missing rules, compacted, one per line in sorted order.
pub fn missing_message(user: &User, missing: &[PolicyRule]) -> String {
    let lines: BTreeSet<String> = compact(missing).iter().map(compact_string).collect();
    format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        go_quote_list(&user.groups),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_permissions_message_matches_the_reference() {
        let alice = User::new("alice", vec![]);
        let missing = [
            PolicyRule {
                verbs: vec!["get".into()],
                api_groups: vec!["".into()],
                resources: vec!["secrets".into()],
                ..Default::default()
            },
            PolicyRule {
                verbs: vec!["list".into()],
                api_groups: vec!["".into()],
                resources: vec!["secrets".into()],
                ..Default::default()
            },
            PolicyRule {
                verbs: vec!["get".into()],
                non_resource_urls: vec!["/metrics".into()],
                ..Default::default()
            },
        ];
        assert_eq!(
            missing_message(&alice, &missing),
            "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}\n\
             {NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        );
    }
}
