//! JSON merge patch (RFC 7386): the `application/merge-patch+json` content type, and the
//! fallback for strategic merge on objects without patch metadata. Objects merge key by key,
//! `null` deletes a key, anything else (lists included) replaces the target value.

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target`, returning the patched document.
pub fn apply(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        // RFC 7386 §2: a non-object patch replaces the whole target.
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            out.remove(key);
        } else {
            let merged = apply(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_appendix_a_examples() {
        // RFC 7386 Appendix A, every row: (target, patch, result).
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, want) in cases {
            assert_eq!(apply(&target, &patch), want, "{target} + {patch}");
        }
    }

    #[test]
    fn merge_patch_replaces_lists_of_containers_whole() {
        // Unlike strategic merge, a merge patch has no merge keys: the list is replaced.
        let target = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(apply(&target, &patch), json!({"spec": {"containers": [{"name": "c"}]}}));
    }
}
