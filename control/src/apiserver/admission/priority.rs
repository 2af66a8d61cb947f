//! Priority admission, as the reference's `Priority` plugin and PriorityClass registry:
//!
//! - a new pod's `priorityClassName` is resolved to `spec.priority` and
//!   `spec.preemptionPolicy`; a pod without a class gets the global default class (the
//!   lowest-valued one should several claim it) or priority 0. An unknown class, or a priority
//!   or preemption policy in the pod that differs from what the class gives, is refused (403);
//!   an update keeps the priority the pod was created with;
//! - PriorityClasses: names starting with `system-` are reserved for the two built-in classes
//!   ([`system_classes`], created at start), user classes may not exceed 1 000 000 000, the
//!   value and preemption policy are immutable (422), and only one class may be the global
//!   default (403).

use serde_json::{json, Value};

use super::super::server::ApiServer;
use super::super::status::{ApiError, ApiResult};
use super::super::validation::Errors;
use super::{cached, Operation, Request};

const PRIORITY_CLASSES: (&str, &str, &str) = ("scheduling.k8s.io", "v1", "priorityclasses");
/// Names with this prefix are reserved for the built-in classes.
const SYSTEM_PREFIX: &str = "system-";
/// The highest value of a user-defined class.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
/// A pod's priority when no class applies.
const DEFAULT_PRIORITY: i64 = 0;
const PREEMPT_LOWER: &str = "PreemptLowerPriority";

/// The built-in classes: name, value, description.
const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to \
         another node if necessary.",
    ),
];

/// The built-in PriorityClasses, created at start when missing.
pub fn system_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": name}, "value": value, "description": description,
                   "globalDefault": false, "preemptionPolicy": PREEMPT_LOWER})
        })
        .collect()
}

/// Resolves a new pod's priority; keeps an updated pod's.
pub(crate) async fn mutate(
    server: &ApiServer,
    request: &mut Request<'_>,
    pod: &mut Value,
) -> ApiResult<()> {
    if !request.is_main("", "Pod") {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    match request.operation {
        Operation::Update => {
            // Validation refuses changes to the priority; restore what an update left out.
            for field in ["priority", "preemptionPolicy"] {
                let old = request.old.and_then(|o| o.pointer(&format!("/spec/{field}")));
                if let (None, Some(old)) = (spec.get(field).filter(|v| !v.is_null()), old) {
                    spec.insert(field.to_string(), old.clone());
                }
            }
            Ok(())
        }
        Operation::Create => {
            let named = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            let (priority, policy) = match &named {
                Some(name) => {
                    let class = cached::get(server, PRIORITY_CLASSES, None, name).await?;
                    let Some(class) = class else {
                        let why = format!("no PriorityClass with name {name} was found");
                        return Err(ApiError::forbidden(&request.call.info, request.name, &why));
                    };
                    (value_of(&class), policy_of(&class))
                }
                None => match default_class(cached::values(
                    &cached::list(server, PRIORITY_CLASSES, None).await?,
                )) {
                    Some(class) => {
                        let name = class.pointer("/metadata/name").cloned();
                        spec.insert("priorityClassName".into(), name.unwrap_or(Value::Null));
                        (value_of(class), policy_of(class))
                    }
                    None => (DEFAULT_PRIORITY, Some(PREEMPT_LOWER.to_string())),
                },
            };
            if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
                if given != priority {
                    let why = format!(
                        "the integer value of priority ({given}) must not be provided in pod \
                         spec; priority admission controller computed {priority} from the given \
                         PriorityClass name"
                    );
                    return Err(ApiError::forbidden(&request.call.info, request.name, &why));
                }
            }
            spec.insert("priority".into(), json!(priority));
            if let Some(policy) = policy {
                if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
                    if given != policy {
                        let why = format!(
                            "the string value of PreemptionPolicy ({given}) must not be provided \
                             in pod spec; priority admission controller computed {policy} from \
                             the given PriorityClass name"
                        );
                        return Err(ApiError::forbidden(&request.call.info, request.name, &why));
                    }
                }
                spec.insert("preemptionPolicy".into(), json!(policy));
            }
            Ok(())
        }
    }
}

fn value_of(class: &Value) -> i64 {
    class.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn policy_of(class: &Value) -> Option<String> {
    class.get("preemptionPolicy").and_then(Value::as_str).map(str::to_string)
}

fn is_global_default(class: &Value) -> bool {
    class.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// The global default class; should several claim it (a race), the lowest-valued one.
fn default_class<'a>(classes: impl IntoIterator<Item = &'a Value>) -> Option<&'a Value> {
    classes.into_iter().filter(|c| is_global_default(c)).min_by_key(|c| value_of(c))
}

/// Validates a PriorityClass: the registry's field rules (422), then the single default (403).
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    class: &Value,
) -> ApiResult<()> {
    if !request.is_main("scheduling.k8s.io", "PriorityClass") {
        return Ok(());
    }
    if let Err(causes) = field_errors(class, request.old).into_result() {
        return Err(ApiError::invalid(&request.call.info, request.name, causes));
    }
    if !is_global_default(class) {
        return Ok(());
    }
    let classes = cached::list(server, PRIORITY_CLASSES, None).await?;
    if let Some(existing) = default_class(cached::values(&classes)) {
        let existing_name = existing.pointer("/metadata/name").and_then(Value::as_str);
        if request.operation == Operation::Create || existing_name != Some(request.name) {
            let why = format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                existing_name.unwrap_or("")
            );
            return Err(ApiError::forbidden(&request.call.info, request.name, &why));
        }
    }
    Ok(())
}

/// The reference's `ValidatePriorityClass` (and `…Update` when `old` is given).
fn field_errors(class: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::default();
    let name = class.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let value = value_of(class);
    if name.starts_with(SYSTEM_PREFIX) {
        if let Err(why) = known_system_class(name, value, is_global_default(class)) {
            errors.forbidden(
                "metadata.name",
                &format!(
                    "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system \
                     use only. error: {why}"
                ),
            );
        }
    } else if value > HIGHEST_USER_PRIORITY {
        errors.forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        );
    }
    if let Some(policy) = class.get("preemptionPolicy").filter(|p| !p.is_null()) {
        if !matches!(policy.as_str(), Some("Never" | PREEMPT_LOWER)) {
            errors.not_supported("preemptionPolicy", policy, &[PREEMPT_LOWER, "Never"]);
        }
    }
    if let Some(old) = old {
        if value_of(old) != value {
            errors.forbidden("value", "may not be changed in an update.");
        }
        let policy = class.get("preemptionPolicy").cloned().unwrap_or(Value::Null);
        if old.get("preemptionPolicy").cloned().unwrap_or(Value::Null) != policy {
            errors.immutable("preemptionPolicy", &policy);
        }
    }
    errors
}

/// Whether `name` is a built-in class with its built-in value and default flag.
fn known_system_class(name: &str, value: i64, global_default: bool) -> Result<(), String> {
    let Some((_, expected, _)) = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!("{name} is not a known system priority class"));
    };
    if *expected != value {
        return Err(format!("value of {name} PriorityClass must be {expected}"));
    }
    if global_default {
        return Err(format!("globalDefault of {name} PriorityClass must be false"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(class: Value, old: Option<Value>) -> Vec<String> {
        match field_errors(&class, old.as_ref()).into_result() {
            Ok(()) => Vec::new(),
            Err(causes) => {
                causes.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
            }
        }
    }

    fn class(name: &str, value: i64) -> Value {
        json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": PREEMPT_LOWER})
    }

    #[test]
    fn the_system_classes_are_valid() {
        for class in system_classes() {
            assert_eq!(messages(class, None), Vec::<String>::new());
        }
    }

    #[test]
    fn system_prefix_is_reserved() {
        assert_eq!(
            messages(class("system-mine", 5), None),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved \
              for system use only. error: system-mine is not a known system priority class"]
        );
        assert_eq!(
            messages(class("system-node-critical", 5), None),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved \
              for system use only. error: value of system-node-critical PriorityClass must be \
              2000001000"]
        );
    }

    #[test]
    fn user_classes_are_capped_and_immutable() {
        assert_eq!(
            messages(class("huge", 1_000_000_001), None),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert!(messages(class("top", 1_000_000_000), None).is_empty());
        let mut never = class("c", 10);
        never["preemptionPolicy"] = json!("Never");
        assert_eq!(
            messages(never, Some(class("c", 5))),
            [
                "value: Forbidden: may not be changed in an update.",
                "preemptionPolicy: Invalid value: \"Never\": field is immutable"
            ]
        );
    }

    #[test]
    fn the_lowest_default_wins() {
        let mut a = class("a", 10);
        a["globalDefault"] = json!(true);
        let mut b = class("b", 5);
        b["globalDefault"] = json!(true);
        let classes = [a, b, class("c", 1)];
        assert_eq!(default_class(&classes).unwrap()["metadata"]["name"], "b");
        assert!(default_class(&[class("c", 1)]).is_none());
    }
}
