//! JWT `NumericDate` values (`exp`, `nbf`, `iat`): seconds since the Unix
//! epoch, read without any arithmetic that could overflow.

use serde_json::Value;

/// The latest instant a date claim may name: 9999-12-31T23:59:59Z. Anything
/// later (or negative, fractional beyond range, not a number) is refused
/// with a typed error rather than clamped, so that no later computation
/// (milliseconds, adding leeway) can overflow.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Seconds since the epoch, or `None` for anything that is not a
/// non-negative number not after [`MAX_NUMERIC_DATE`]. Fractions are
/// truncated (RFC 7519 allows non-integer dates).
pub(crate) fn seconds(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    let secs = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u,
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= MAX_NUMERIC_DATE as f64 => {
            // In range and finite: the conversion is exact after truncation.
            f.trunc() as u64
        }
        _ => return None,
    };
    (secs <= MAX_NUMERIC_DATE).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_in_range_numbers_are_dates() {
        assert_eq!(seconds(&json!(0)), Some(0));
        assert_eq!(seconds(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(seconds(&json!(1_700_000_000.9)), Some(1_700_000_000));
        assert_eq!(seconds(&json!(MAX_NUMERIC_DATE)), Some(MAX_NUMERIC_DATE));
        for bad in [
            json!(MAX_NUMERIC_DATE + 1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(-0.5),
            json!(1e300),
            json!(f64::MAX),
            json!("1700000000"),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(seconds(&bad), None, "{bad}");
        }
    }
}
