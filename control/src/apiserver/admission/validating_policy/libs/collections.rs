//! The reference's lists library (`isSorted()`, `sum()`, `min()`, `max()`, `indexOf(x)`,
//! `lastIndexOf(x)` on lists of comparable values), its sets library (`sets.contains`,
//! `sets.equivalent`, `sets.intersects`) and its regex library (`s.find(re)`,
//! `s.findAll(re)`, `s.findAll(re, n)`). `matches` is the crate's own.

use std::cmp::Ordering;
use std::sync::Arc;

use cel::common::functions::Function;
use cel::common::types::{INT_TYPE, LIST_TYPE, STRING_TYPE};
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::quantity::Quantity;
use super::{error, int_arg, str_arg, string, value_fn, Out};

fn list<'a>(args: &'a [Value], i: usize, function: &str) -> Result<&'a [Value], ExecutionError> {
    match args.get(i) {
        Some(Value::List(items)) => Ok(items.as_slice()),
        other => Err(error(function, format!("expected a list, got {other:?}"))),
    }
}

/// The order of two list elements of one comparable type.
fn compare(a: &Value, b: &Value, function: &str) -> Result<Ordering, ExecutionError> {
    let ordering = match (a, b) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::UInt(a), Value::UInt(b)) => Some(a.cmp(b)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
        (Value::Opaque(a), Value::Opaque(b)) => {
            match (a.downcast_ref::<Quantity>(), b.downcast_ref::<Quantity>()) {
                (Some(a), Some(b)) => Some(a.cmp(b)),
                _ => None,
            }
        }
        _ => None,
    };
    ordering
        .ok_or_else(|| error(function, format!("no such overload: {a:?} and {b:?} do not compare")))
}

fn is_sorted(args: &[Value]) -> Out {
    let items = list(args, 0, "isSorted")?;
    for pair in items.windows(2) {
        if compare(&pair[0], &pair[1], "isSorted")? == Ordering::Greater {
            return Ok(Value::Bool(false));
        }
    }
    Ok(Value::Bool(true))
}

fn sum(args: &[Value]) -> Out {
    let items = list(args, 0, "sum")?;
    let overflow = || error("sum", "integer overflow");
    match items.first() {
        None => Ok(Value::Int(0)),
        Some(Value::Int(_)) => items
            .iter()
            .try_fold(0i64, |acc, v| match v {
                Value::Int(n) => acc.checked_add(*n).ok_or_else(overflow),
                _ => Err(error("sum", "mixed element types")),
            })
            .map(Value::Int),
        Some(Value::UInt(_)) => items
            .iter()
            .try_fold(0u64, |acc, v| match v {
                Value::UInt(n) => acc.checked_add(*n).ok_or_else(overflow),
                _ => Err(error("sum", "mixed element types")),
            })
            .map(Value::UInt),
        Some(Value::Float(_)) => items
            .iter()
            .try_fold(0f64, |acc, v| match v {
                Value::Float(n) => Ok(acc + n),
                _ => Err(error("sum", "mixed element types")),
            })
            .map(Value::Float),
        Some(other) => Err(error("sum", format!("no such overload for a list of {other:?}"))),
    }
}

fn extreme(args: &[Value], function: &str, keep: Ordering) -> Out {
    let items = list(args, 0, function)?;
    let mut best =
        items.first().ok_or_else(|| error(function, format!("{function} called on empty list")))?;
    for item in &items[1..] {
        if compare(item, best, function)? == keep {
            best = item;
        }
    }
    Ok(best.clone())
}

fn min(args: &[Value]) -> Out {
    extreme(args, "min", Ordering::Less)
}

fn max(args: &[Value]) -> Out {
    extreme(args, "max", Ordering::Greater)
}

fn index_of(args: &[Value]) -> Out {
    let items = list(args, 0, "indexOf")?;
    let wanted = args.get(1).unwrap_or(&Value::Null);
    Ok(Value::Int(items.iter().position(|v| v == wanted).map_or(-1, |i| i as i64)))
}

fn last_index_of(args: &[Value]) -> Out {
    let items = list(args, 0, "lastIndexOf")?;
    let wanted = args.get(1).unwrap_or(&Value::Null);
    Ok(Value::Int(items.iter().rposition(|v| v == wanted).map_or(-1, |i| i as i64)))
}

fn sets_contains(args: &[Value]) -> Out {
    let (all, sub) = (list(args, 0, "sets.contains")?, list(args, 1, "sets.contains")?);
    Ok(Value::Bool(sub.iter().all(|v| all.contains(v))))
}

fn sets_equivalent(args: &[Value]) -> Out {
    let (a, b) = (list(args, 0, "sets.equivalent")?, list(args, 1, "sets.equivalent")?);
    Ok(Value::Bool(a.iter().all(|v| b.contains(v)) && b.iter().all(|v| a.contains(v))))
}

fn sets_intersects(args: &[Value]) -> Out {
    let (a, b) = (list(args, 0, "sets.intersects")?, list(args, 1, "sets.intersects")?);
    Ok(Value::Bool(a.iter().any(|v| b.contains(v))))
}

fn regex(args: &[Value], function: &str) -> Result<regex::Regex, ExecutionError> {
    let pattern = str_arg(args, 1, function)?;
    regex::Regex::new(pattern).map_err(|e| error(function, format!("invalid regex: {e}")))
}

fn find(args: &[Value]) -> Out {
    let re = regex(args, "find")?;
    let s = str_arg(args, 0, "find")?;
    Ok(string(re.find(s).map_or("", |m| m.as_str())))
}

fn find_all(args: &[Value]) -> Out {
    let re = regex(args, "findAll")?;
    let s = str_arg(args, 0, "findAll")?;
    let limit = match args.get(2) {
        Some(_) => int_arg(args, 2, "findAll")?,
        None => -1,
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let found = re.find_iter(s).take(limit).map(|m| string(m.as_str())).collect();
    Ok(Value::List(Arc::new(found)))
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let unary: [(&str, Function); 4] = [
        ("isSorted", value_fn!(is_sorted)),
        ("sum", value_fn!(sum)),
        ("min", value_fn!(min)),
        ("max", value_fn!(max)),
    ];
    for (name, f) in unary {
        env.add_member_overload(name, &format!("list_{name}"), LIST_TYPE, vec![], f)?;
    }
    let dyn_t = || cel::common::types::DYN_TYPE;
    env.add_member_overload(
        "indexOf",
        "list_indexOf",
        LIST_TYPE,
        vec![dyn_t()],
        value_fn!(index_of),
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_lastIndexOf",
        LIST_TYPE,
        vec![dyn_t()],
        value_fn!(last_index_of),
    )?;
    let sets: [(&str, Function); 3] = [
        ("sets.contains", value_fn!(sets_contains)),
        ("sets.equivalent", value_fn!(sets_equivalent)),
        ("sets.intersects", value_fn!(sets_intersects)),
    ];
    for (name, f) in sets {
        env.add_overload(name, name, vec![LIST_TYPE, LIST_TYPE], f)?;
    }
    env.add_member_overload(
        "find",
        "string_find",
        STRING_TYPE,
        vec![STRING_TYPE],
        value_fn!(find),
    )?;
    env.add_member_overload(
        "findAll",
        "string_findAll",
        STRING_TYPE,
        vec![STRING_TYPE],
        value_fn!(find_all),
    )?;
    env.add_member_overload(
        "findAll",
        "string_findAll_int",
        STRING_TYPE,
        vec![STRING_TYPE, INT_TYPE],
        value_fn!(find_all),
    )?;
    Ok(())
}
