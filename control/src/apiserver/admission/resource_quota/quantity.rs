//! Exact resource quantities for quota and limit arithmetic: the reference's `resource.Quantity`
//! held as an integer count of thousandths (its `MilliValue`, rounded up like the reference) and
//! the format its suffix chose, so sums stay exact (`100m` + `200m` is `300m`, never
//! `0.30000000000000004`) and print in the reference's canonical form (`1536Mi`, `1500m`, `2k`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// How a quantity prints, chosen by the suffix it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `m`, `k`, `M`, … or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, ….
    BinarySI,
    /// `1e3`.
    DecimalExponent,
}

/// A resource amount: `milli` thousandths of the unit.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    pub milli: i128,
    pub format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity { milli: 0, format: Format::DecimalSI };

    /// A whole count (`pods: 1`).
    pub fn count(n: i128) -> Quantity {
        Quantity { milli: n * 1000, format: Format::DecimalSI }
    }

    /// Parses the reference's quantity syntax; `None` when malformed.
    pub fn parse(text: &str) -> Option<Quantity> {
        let s = text.trim();
        let negative = s.starts_with('-');
        let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
        let end =
            unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        // digits / 10^scale is the number before the suffix.
        let digits: i128 = format!("{whole}{frac}").parse().ok()?;
        let scale = u32::try_from(frac.len()).ok()?;
        let (format, num, den): (Format, i128, i128) = match suffix {
            "" => (Format::DecimalSI, 1, 1),
            "n" => (Format::DecimalSI, 1, 1_000_000_000),
            "u" => (Format::DecimalSI, 1, 1_000_000),
            "m" => (Format::DecimalSI, 1, 1000),
            "k" => (Format::DecimalSI, 1000, 1),
            "M" => (Format::DecimalSI, 1_000_000, 1),
            "G" => (Format::DecimalSI, 1_000_000_000, 1),
            "T" => (Format::DecimalSI, 10i128.pow(12), 1),
            "P" => (Format::DecimalSI, 10i128.pow(15), 1),
            "E" => (Format::DecimalSI, 10i128.pow(18), 1),
            "Ki" => (Format::BinarySI, 1 << 10, 1),
            "Mi" => (Format::BinarySI, 1 << 20, 1),
            "Gi" => (Format::BinarySI, 1 << 30, 1),
            "Ti" => (Format::BinarySI, 1 << 40, 1),
            "Pi" => (Format::BinarySI, 1 << 50, 1),
            "Ei" => (Format::BinarySI, 1 << 60, 1),
            exp if exp.starts_with(['e', 'E']) => {
                let power: i32 = exp[1..].parse().ok()?;
                if !(-18..=18).contains(&power) {
                    return None;
                }
                let p = 10i128.pow(power.unsigned_abs());
                if power >= 0 {
                    (Format::DecimalExponent, p, 1)
                } else {
                    (Format::DecimalExponent, 1, p)
                }
            }
            _ => return None,
        };
        let numerator = digits.checked_mul(num)?.checked_mul(1000)?;
        let denominator = den.checked_mul(10i128.checked_pow(scale)?)?;
        // Thousandths, rounded up (the reference's MilliValue).
        let milli = (numerator + denominator - 1) / denominator;
        Some(Quantity { milli: if negative { -milli } else { milli }, format })
    }

    /// A quantity from a JSON string or number.
    pub fn from_json(value: &Value) -> Option<Quantity> {
        match value {
            Value::String(s) => Quantity::parse(s),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    /// `self + other`; a zero takes the other's format (as the reference's `Add`).
    pub fn add(self, other: Quantity) -> Quantity {
        let format = if self.milli == 0 { other.format } else { self.format };
        Quantity { milli: self.milli + other.milli, format }
    }

    /// The larger of the two (keeping the winner's format).
    pub fn larger(self, other: Quantity) -> Quantity {
        if other.milli > self.milli {
            other
        } else {
            self
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// The canonical text as JSON.
    pub fn to_json(self) -> Value {
        Value::String(self.to_string())
    }

    fn fmt_decimal(&self, f: &mut fmt::Formatter<'_>, exponent_style: bool) -> fmt::Result {
        if self.milli == 0 {
            return f.write_str("0");
        }
        // value = mantissa * 10^exp with exp a multiple of 3 (from -3), mantissa as small as
        // that allows.
        let mut mantissa = self.milli;
        let mut exp = -3i32;
        while mantissa % 1000 == 0 && exp < 18 {
            mantissa /= 1000;
            exp += 3;
        }
        if exponent_style {
            return match exp {
                0 => write!(f, "{mantissa}"),
                _ => write!(f, "{mantissa}e{exp}"),
            };
        }
        let suffix = match exp {
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{mantissa}{suffix}")
    }
}

impl fmt::Display for Quantity {
    /// The reference's canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Format::BinarySI if self.milli % 1000 == 0 && self.milli.abs() >= 1024 * 1000 => {
                let mut value = self.milli / 1000;
                let mut index = 0;
                while value % 1024 == 0 && index < 6 {
                    value /= 1024;
                    index += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][index];
                write!(f, "{value}{suffix}")
            }
            Format::DecimalExponent => self.fmt_decimal(f, true),
            _ => self.fmt_decimal(f, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_every_notation_exactly() {
        assert_eq!(q("500m").milli, 500);
        assert_eq!(q("1.5").milli, 1500);
        assert_eq!(q("1Gi").milli, 1_073_741_824_000);
        assert_eq!(q("1.5k").milli, 1_500_000);
        assert_eq!(q("2e3").milli, 2_000_000);
        assert_eq!(q("-1").milli, -1000);
        assert_eq!(q("1n").milli, 1, "sub-milli rounds up");
        assert_eq!(q("0.1").milli, 100);
        for bad in ["", "abc", "1.2.3", "5Gb", "m", "1e", "."] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn prints_the_canonical_form() {
        let cases = [
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1500", "1500"),
            ("0", "0"),
            ("128Mi", "128Mi"),
            ("1.5Gi", "1536Mi"),
            ("1024", "1024"),
            ("1000Ki", "1000Ki"),
            ("512", "512"),
            ("2e3", "2e3"),
            ("0.5", "500m"),
        ];
        for (input, canonical) in cases {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
        // Small binary amounts print as decimal, as in the reference.
        assert_eq!(Quantity { milli: 1_000_000, format: Format::BinarySI }.to_string(), "1k");
    }

    #[test]
    fn sums_are_exact_and_keep_the_first_format() {
        let sum = q("100m").add(q("200m"));
        assert_eq!(sum.to_string(), "300m");
        let memory = Quantity::ZERO.add(q("64Mi")).add(q("64Mi"));
        assert_eq!(memory.to_string(), "128Mi");
        assert_eq!(Quantity::ZERO.to_string(), "0");
        assert!(q("1") < q("1001m"));
        assert_eq!(q("1"), q("1000m"));
    }
}
