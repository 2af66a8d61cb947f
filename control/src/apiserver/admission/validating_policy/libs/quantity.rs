//! The reference's quantity library: `quantity(s)` makes a `Quantity` (an error for a string
//! that is not one), `isQuantity(s)` tests, and a quantity has `sign()`, `isInteger()`,
//! `asInteger()`, `asApproximateFloat()`, `add()`/`sub()` (of a quantity or an int),
//! `isLessThan()`, `isGreaterThan()`, `compareTo()` and `==`.
//!
//! A quantity is held exactly as a count of nano-units (`i128`): every suffix the reference
//! accepts (`n` … `E`, `Ki` … `Ei`, `e<exp>`) is a whole number of nano-units, and a value
//! finer than that is rounded up, as the reference rounds what it cannot represent. Values
//! beyond the range (±1.7e29) are refused rather than approximated.

use std::cmp::Ordering;

use cel::common::functions::Function;
use cel::common::types::{Type, INT_TYPE, STRING_TYPE};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, Value};

use super::{error, int_arg, opaque, opaque_arg, opaque_type, str_arg, value_fn, Out};

/// The CEL type name of quantities.
pub(in super::super) const TYPE_NAME: &str = "kubernetes.Quantity";

const NANO: i128 = 1_000_000_000;

/// An exact quantity, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(in super::super) struct Quantity(pub i128);

impl Opaque for Quantity {
    fn runtime_type_name(&self) -> &str {
        TYPE_NAME
    }
}

/// Parses a quantity as the reference's `resource.ParseQuantity`; the error is its message.
pub(in super::super) fn parse(s: &str) -> Result<Quantity, &'static str> {
    const INVALID: &str = "quantities must match the regular expression \
                           '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
    const TOO_LARGE: &str = "quantity is too large";
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(INVALID);
    }
    // (decimal exponent, binary exponent) of the suffix.
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp if exp.starts_with(['e', 'E']) => {
            let digits = exp[1..].trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(INVALID);
            }
            (exp[1..].parse::<i32>().map_err(|_| TOO_LARGE)?, 0)
        }
        _ => return Err(INVALID),
    };
    // mantissa × 10^(exp10 + 9 − fraction digits) × 2^exp2 nano-units.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mantissa: i128 = if digits.is_empty() {
        0
    } else if digits.len() > 36 {
        return Err(TOO_LARGE);
    } else {
        digits.parse().map_err(|_| INVALID)?
    };
    let scale = exp10 + 9 - fraction.len() as i32;
    let mut nanos = mantissa;
    if scale >= 0 {
        for _ in 0..scale {
            nanos = nanos.checked_mul(10).ok_or(TOO_LARGE)?;
        }
    } else {
        // Round up what is finer than a nano-unit (mantissa < 10^36, divisor < 10^39: no
        // overflow); a divisor beyond the range leaves the smallest unit.
        nanos = match 10i128.checked_pow(scale.unsigned_abs()) {
            Some(divisor) => (nanos + divisor - 1) / divisor,
            None => i128::from(nanos != 0),
        };
    }
    nanos = nanos.checked_mul(1i128 << exp2).ok_or(TOO_LARGE)?;
    Ok(Quantity(if negative { -nanos } else { nanos }))
}

fn quantity(args: &[Value]) -> Out {
    let s = str_arg(args, 0, "quantity")?;
    parse(s).map(opaque).map_err(|e| error("quantity", e))
}

fn is_quantity(args: &[Value]) -> Out {
    Ok(Value::Bool(parse(str_arg(args, 0, "isQuantity")?).is_ok()))
}

fn this(args: &[Value], function: &str) -> Result<Quantity, cel::ExecutionError> {
    opaque_arg::<Quantity>(args, 0, function).copied()
}

fn sign(args: &[Value]) -> Out {
    Ok(Value::Int(this(args, "sign")?.0.signum() as i64))
}

fn is_integer(args: &[Value]) -> Out {
    Ok(Value::Bool(this(args, "isInteger")?.0 % NANO == 0))
}

fn as_integer(args: &[Value]) -> Out {
    let q = this(args, "asInteger")?;
    if q.0 % NANO != 0 {
        return Err(error("asInteger", "cannot convert value to integer"));
    }
    i64::try_from(q.0 / NANO).map(Value::Int).map_err(|_| error("asInteger", "integer overflow"))
}

fn as_approximate_float(args: &[Value]) -> Out {
    Ok(Value::Float(this(args, "asApproximateFloat")?.0 as f64 / NANO as f64))
}

/// The other operand of `add`/`sub`: a quantity or an int.
fn other(args: &[Value], function: &str) -> Result<i128, cel::ExecutionError> {
    match args.get(1) {
        Some(Value::Int(_)) => Ok(int_arg(args, 1, function)? as i128 * NANO),
        _ => Ok(opaque_arg::<Quantity>(args, 1, function)?.0),
    }
}

fn add(args: &[Value]) -> Out {
    let sum = this(args, "add")?.0.checked_add(other(args, "add")?);
    sum.map(|n| opaque(Quantity(n))).ok_or_else(|| error("add", "quantity overflow"))
}

fn sub(args: &[Value]) -> Out {
    let diff = this(args, "sub")?.0.checked_sub(other(args, "sub")?);
    diff.map(|n| opaque(Quantity(n))).ok_or_else(|| error("sub", "quantity overflow"))
}

fn compare(args: &[Value], function: &str) -> Result<Ordering, cel::ExecutionError> {
    Ok(this(args, function)?.cmp(opaque_arg::<Quantity>(args, 1, function)?))
}

fn is_less_than(args: &[Value]) -> Out {
    Ok(Value::Bool(compare(args, "isLessThan")? == Ordering::Less))
}

fn is_greater_than(args: &[Value]) -> Out {
    Ok(Value::Bool(compare(args, "isGreaterThan")? == Ordering::Greater))
}

fn compare_to(args: &[Value]) -> Out {
    Ok(Value::Int(compare(args, "compareTo")? as i64))
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let q = || opaque_type(TYPE_NAME);
    env.add_type(q())?;
    env.add_overload("quantity", "string_to_quantity", vec![STRING_TYPE], value_fn!(quantity))?;
    env.add_overload(
        "isQuantity",
        "is_quantity_string",
        vec![STRING_TYPE],
        value_fn!(is_quantity),
    )?;
    let unary: [(&str, Function); 4] = [
        ("sign", value_fn!(sign)),
        ("isInteger", value_fn!(is_integer)),
        ("asInteger", value_fn!(as_integer)),
        ("asApproximateFloat", value_fn!(as_approximate_float)),
    ];
    for (name, f) in unary {
        env.add_member_overload(name, &format!("quantity_{name}"), q(), vec![], f)?;
    }
    let binary: [(&str, Vec<Type>, Function); 7] = [
        ("add", vec![q()], value_fn!(add)),
        ("add", vec![INT_TYPE], value_fn!(add)),
        ("sub", vec![q()], value_fn!(sub)),
        ("sub", vec![INT_TYPE], value_fn!(sub)),
        ("isLessThan", vec![q()], value_fn!(is_less_than)),
        ("isGreaterThan", vec![q()], value_fn!(is_greater_than)),
        ("compareTo", vec![q()], value_fn!(compare_to)),
    ];
    for (name, args, f) in binary {
        let id = format!("quantity_{name}_{}", args[0].name());
        env.add_member_overload(name, &id, q(), args, f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_exactly() {
        let nanos = |s: &str| parse(s).map(|q| q.0);
        assert_eq!(nanos("1"), Ok(NANO));
        assert_eq!(nanos("1500m"), Ok(1_500_000_000));
        assert_eq!(nanos("1.5"), Ok(1_500_000_000));
        assert_eq!(nanos("1Ki"), Ok(1024 * NANO));
        assert_eq!(nanos("1Gi"), Ok(1024 * 1024 * 1024 * NANO));
        assert_eq!(nanos("2e3"), Ok(2000 * NANO));
        assert_eq!(nanos("-5n"), Ok(-5));
        assert_eq!(nanos("0.5n"), Ok(1), "finer than a nano-unit rounds up");
        assert_eq!(nanos("1e-50"), Ok(1));
        assert!(parse("1e40").is_err(), "beyond the range");
        assert_eq!(nanos("+.5k"), Ok(500 * NANO));
        for bad in ["", "abc", "1.2.3", "1Qi", "1e", ".", "1 Gi"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
