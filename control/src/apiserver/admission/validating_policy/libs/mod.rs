//! The Kubernetes CEL libraries the `cel` crate does not bring, registered on the plugin's
//! environment as the reference's `k8s.io/apiserver/pkg/cel/library` declares them:
//! [`quantity`] (`quantity()`, `isQuantity()`, comparisons and arithmetic), [`url`] (`url()`,
//! `getHost()`, …), [`net`] (`ip()`, `cidr()`, …) and [`collections`] (the lists library's
//! `isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`, the sets library, and regex
//! `find`/`findAll`). The crate's own `strings`, `lists` and `math` extensions and its regex
//! `matches` cover the rest.
//!
//! Overloads are plain functions over [`cel::Value`]s: [`value_fn!`] adapts one to the
//! crate's `Function` shape, converting the arguments in and the result out. Kubernetes types
//! (`Quantity`, `URL`, `IP`, `CIDR`) are opaque values whose Rust type is downcast back.

pub(super) mod collections;
pub(super) mod net;
pub(super) mod quantity;
pub(super) mod url;

use std::sync::Arc;

use cel::common::types::Type;
use cel::common::value::{CowVal, Val};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError, Value};

/// What a library function returns.
pub(super) type Out = Result<Value, ExecutionError>;

/// Runs `f` over the arguments as [`Value`]s and hands its result back as a CEL value.
pub(super) fn call<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    f: fn(&[Value]) -> Out,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let args = args.iter().map(|a| Value::try_from(a.as_ref())).collect::<Result<Vec<_>, _>>()?;
    let out: Box<dyn Val> = f(&args)?.try_into()?;
    Ok(CowVal::Owned(out))
}

/// The crate's `Function` for a `fn(&[Value]) -> Out`.
macro_rules! value_fn {
    ($f:path) => {{
        fn adapted<'b, 'v>(
            args: Vec<cel::common::value::CowVal<'b, 'v>>,
        ) -> Result<cel::common::value::CowVal<'b, 'v>, cel::ExecutionError> {
            $crate::apiserver::admission::validating_policy::libs::call(args, $f)
        }
        adapted as cel::common::functions::Function
    }};
}
pub(super) use value_fn;

/// Registers every library on `env`.
pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    quantity::register(env)?;
    url::register(env)?;
    net::register(env)?;
    collections::register(env)?;
    Ok(())
}

/// The CEL type of the opaque values named `name`.
pub(super) fn opaque_type(name: &'static str) -> Type {
    Type::new_opaque_type(name)
}

/// A function's error, as the crate words them (`function 'f' failed: …`… ).
pub(super) fn error(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

/// The string argument `i`.
pub(super) fn str_arg<'a>(
    args: &'a [Value],
    i: usize,
    function: &str,
) -> Result<&'a str, ExecutionError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.as_str()),
        other => Err(error(function, format!("expected a string argument, got {other:?}"))),
    }
}

/// The int argument `i`.
pub(super) fn int_arg(args: &[Value], i: usize, function: &str) -> Result<i64, ExecutionError> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        other => Err(error(function, format!("expected an int argument, got {other:?}"))),
    }
}

/// The opaque argument `i` as a `T`.
pub(super) fn opaque_arg<'a, T: Opaque>(
    args: &'a [Value],
    i: usize,
    function: &str,
) -> Result<&'a T, ExecutionError> {
    match args.get(i) {
        Some(Value::Opaque(o)) => o
            .downcast_ref::<T>()
            .ok_or_else(|| error(function, format!("unexpected {}", o.runtime_type_name()))),
        other => Err(error(function, format!("unexpected argument {other:?}"))),
    }
}

/// An opaque CEL value.
pub(super) fn opaque<T: Opaque>(value: T) -> Value {
    Value::Opaque(Arc::new(value))
}

/// A CEL string.
pub(super) fn string(s: impl Into<String>) -> Value {
    Value::String(Arc::new(s.into()))
}
