//! JSON objects as CEL values, the way the reference hands unstructured objects to CEL: objects
//! become maps with string keys, arrays lists, integers `int` (`uint` only beyond `i64`), other
//! numbers `double`, and `null` stays `null`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value as Cel;
use serde_json::Value;

/// The CEL value of a JSON value.
pub(super) fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => map(fields.iter().map(|(k, v)| (k.as_str(), to_cel(v)))),
    }
}

/// A CEL map with string keys.
pub(super) fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Cel)>) -> Cel {
    let map: HashMap<Key, Cel> =
        entries.into_iter().map(|(k, v)| (Key::String(Arc::new(k.to_string())), v)).collect();
    Cel::Map(Map { map: Arc::new(map) })
}

/// The value of `value` when it is a CEL string.
pub(super) fn as_str(value: &Cel) -> Option<&str> {
    match value {
        Cel::String(s) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_numbers_keep_their_cel_types() {
        assert_eq!(to_cel(&json!(3)), Cel::Int(3));
        assert_eq!(to_cel(&json!(u64::MAX)), Cel::UInt(u64::MAX));
        assert_eq!(to_cel(&json!(1.5)), Cel::Float(1.5));
        assert_eq!(to_cel(&json!(null)), Cel::Null);
        assert_eq!(to_cel(&json!("x")), Cel::String(Arc::new("x".into())));
        let Cel::Map(m) = to_cel(&json!({"a": [true]})) else { panic!("not a map") };
        assert_eq!(
            m.get(&Key::String(Arc::new("a".into()))),
            Some(&Cel::List(Arc::new(vec![Cel::Bool(true)])))
        );
    }
}
