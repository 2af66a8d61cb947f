//! Kubernetes resource quantities (`500m`, `1Gi`, `2e3`) as exact numbers, for the downward
//! API's `resourceFieldRef` and emptyDir `sizeLimit`.
//!
//! Only what the agent needs: parse the canonical forms and round up like apimachinery's
//! `Quantity.Value()` / `MilliValue()` (ceiling), without floating point.

/// A parsed quantity: `mantissa × 10^exp10 × 2^shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    shift: u32,
}

/// Why a quantity string does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

impl Quantity {
    /// Zero.
    pub const ZERO: Self = Self { mantissa: 0, exp10: 0, shift: 0 };
    /// One unit.
    pub const ONE: Self = Self { mantissa: 1, exp10: 0, shift: 0 };

    /// `n` units.
    pub fn from_units(n: i64) -> Self {
        Self { mantissa: n.into(), exp10: 0, shift: 0 }
    }

    /// `n` thousandths.
    pub fn from_millis(n: i64) -> Self {
        Self { mantissa: n.into(), exp10: -3, shift: 0 }
    }

    /// Parses `text` (`"100m"`, `"1.5Gi"`, `"1e3"`, `"0"`).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let text = text.trim();
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError);
        }
        let digits = format!("{int_part}{frac_part}");
        // Trailing precision beyond i128 is irrelevant for resource sizes; refuse it.
        let mut mantissa: i128 = digits.parse().map_err(|_| QuantityError)?;
        if negative {
            mantissa = -mantissa;
        }
        let mut exp10 = -(frac_part.len() as i32);
        let mut shift = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => shift = 10,
            "Mi" => shift = 20,
            "Gi" => shift = 30,
            "Ti" => shift = 40,
            "Pi" => shift = 50,
            "Ei" => shift = 60,
            other => {
                let exp = other.strip_prefix(['e', 'E']).ok_or(QuantityError)?;
                let exp: i32 = exp.parse().map_err(|_| QuantityError)?;
                if !(-100..=100).contains(&exp) {
                    return Err(QuantityError);
                }
                exp10 += exp;
            }
        }
        Ok(Self { mantissa, exp10, shift })
    }

    /// True when the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value in units, rounded up (apimachinery's `Value()`); saturates at the i64 range.
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// The value in thousandths, rounded up (apimachinery's `MilliValue()`).
    pub fn milli_value(&self) -> i64 {
        self.scaled_ceil(3)
    }

    /// `ceil(self × 10^k)`.
    fn scaled_ceil(&self, k: i32) -> i64 {
        let exp = self.exp10 + k;
        let pow = |e: i32| 10i128.checked_pow(e.unsigned_abs());
        let numerator = pow(exp.max(0))
            .and_then(|p| self.mantissa.checked_mul(p))
            .and_then(|n| n.checked_mul(1i128 << self.shift));
        let Some(numerator) = numerator else {
            return if self.mantissa < 0 { i64::MIN } else { i64::MAX };
        };
        let Some(denominator) = pow((-exp).max(0)) else {
            // Smaller than any representable unit: rounds up to 1 when positive.
            return i64::from(numerator > 0);
        };
        let value = div_ceil(numerator, denominator);
        value.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// Ceiling division for a positive divisor.
pub fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && (n > 0) == (d > 0) {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn parses_the_canonical_forms_and_rounds_up_like_apimachinery() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("500m").value(), 1, "Value() rounds 0.5 up");
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("100n").milli_value(), 1, "MilliValue() rounds up");
        assert_eq!(q("0").value(), 0);
        assert!(q("0").is_zero());
        assert_eq!(q("-1k").value(), -1000);
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in ["", "abc", "1Qi", "1..2", "Mi", "1e"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError), "{bad:?}");
        }
    }
}
