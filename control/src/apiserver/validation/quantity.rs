//! Resource quantities (`500m`, `1.5Gi`, `2e3`): the reference's `resource.Quantity` syntax,
//! parsed to a float for validation's comparisons (requests against limits).

/// The reference's message for a malformed quantity.
pub const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// The value of a quantity string, or `None` when it is not one.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let sign_len = usize::from(s.starts_with(['+', '-']));
    let digits_end = s[sign_len..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |i| i + sign_len);
    let (number, suffix) = s.split_at(digits_end);
    let magnitude = &number[sign_len..];
    if magnitude.is_empty() || magnitude == "." || magnitude.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let power: i32 = exp[1..].parse().ok()?;
            10f64.powi(power)
        }
        _ => return None,
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_every_notation() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("1.5k"), Some(1500.0));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("-1"), Some(-1.0));
        for bad in ["", "abc", "1.2.3", "5Gb", "m", "1e"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
