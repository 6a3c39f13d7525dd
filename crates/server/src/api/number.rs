//! Whole numbers in JSON bodies as JSON Schema (and so the OpenAPI document) reads them:
//! `998` and `998.0` are the same integer. serde's integers refuse the second; a field
//! with `#[serde(deserialize_with = "number::integer")]` takes both, and refuses a
//! fraction (`2.5`) or a number no `i64` holds. The bounds are the domain's to check.

use serde::de::{Deserializer, Error, Visitor};

/// Values of an `f64` that are exactly integers an `i64` can hold: below 2^63 in
/// magnitude (every float of that size is whole).
const I64_RANGE: f64 = 9_223_372_036_854_775_808.0;

pub(super) fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() != 0.0 || !(-I64_RANGE..I64_RANGE).contains(&v) {
                return Err(E::custom(format!("{v} is not a whole number an i64 holds")));
            }
            Ok(v as i64)
        }
    }
    deserializer.deserialize_any(Whole)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::integer")]
        n: i64,
    }

    fn parse(json: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| b.n)
    }

    #[test]
    fn a_whole_number_is_one_written_either_way() {
        assert_eq!(parse(r#"{"n": 998}"#).unwrap(), 998);
        assert_eq!(parse(r#"{"n": 998.0}"#).unwrap(), 998);
        assert_eq!(parse(r#"{"n": 1e3}"#).unwrap(), 1000);
        assert_eq!(parse(r#"{"n": -0.0}"#).unwrap(), 0);
        assert_eq!(parse(r#"{"n": -5}"#).unwrap(), -5);
    }

    #[test]
    fn fractions_strings_and_giants_are_refused() {
        for json in [
            r#"{"n": 2.5}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": null}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
