//! Query strings: each parameter at most once, and numbers written plainly.

use std::ops::RangeInclusive;

use crate::error::{ApiError, ApiResult};

/// The query's (name, value) pairs, refusing a malformed string or a name
/// given twice.
pub fn pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::invalid("query", "is not a valid query string"))?;
    for (at, (name, _)) in pairs.iter().enumerate() {
        if pairs[..at].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::invalid(name, "is given more than once"));
        }
    }
    Ok(pairs)
}

/// A whole number in `range`, digits only (no sign, no spaces).
pub fn whole_number(name: &str, value: &str, range: RangeInclusive<usize>) -> ApiResult<usize> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<usize>().ok())
        .flatten()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_once_and_plain_numbers() {
        assert_eq!(pairs("a=1&b=x%20y").unwrap().len(), 2);
        assert!(pairs("a=1&a=2").is_err());
        assert_eq!(whole_number("limit", "1000", 1..=1000).unwrap(), 1000);
        for bad in [
            "",
            "0",
            "1001",
            "+5",
            " 5",
            "5.0",
            "99999999999999999999999",
        ] {
            assert!(whole_number("limit", bad, 1..=1000).is_err(), "{bad:?}");
        }
    }
}
