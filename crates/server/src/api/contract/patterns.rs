//! The rules of text and money as JSON Schema: patterns and bounds that say what the
//! domain's and the handlers' checks accept.

use cornershop_readmodels::ORDER_STATUSES;
use rust_decimal::Decimal;
use serde_json::{json, Value};

// ---- Text ------------------------------------------------------------------------------

/// The rule of `CountryCode::parse`: a string, one of the assigned ISO 3166-1 alpha-2
/// codes in either case (`GB`, `gb`, `Gb`).
pub(super) fn country_code() -> Value {
    let either_case = |c: char| format!("[{}{}]", c, c.to_ascii_lowercase());
    let codes: Vec<String> = cornershop_domain::CountryCode::all()
        .map(|code| code.as_str().chars().map(either_case).collect())
        .collect();
    json!({ "type": "string", "pattern": format!("^(?:{})$", codes.join("|")) })
}

/// Control characters, as Rust's `char::is_control` has them (U+0000 to U+001F, U+007F
/// to U+009F): refused in every text a person reads.
pub(super) const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

/// The white space `str::trim` removes that is not a control character (those are
/// refused anyway): what may pad a value, since the server trims it.
pub(super) const SPACE: &str = r" \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The rule of `require_text(field, value, max)`: no control character, and once trimmed
/// of white space, 1 to `max` characters. So: white space, then a character that is not
/// white space, then (up to `max - 2` of anything but a control character and a last
/// non-space character), then white space.
pub(super) fn text(max: usize) -> Value {
    assert!(max >= 2);
    let edge = format!("[^{CONTROL}{SPACE}]");
    let middle = format!("[^{CONTROL}]");
    // No `minLength` beside the pattern (which implies it): Schemathesis 4.32 cannot
    // generate valid values for the two together.
    json!({
        "pattern": format!("^[{SPACE}]*{edge}({middle}{{0,{}}}{edge})?[{SPACE}]*$", max - 2),
    })
}

/// An optional text that is stored as given: no control character, at most `max`
/// characters, possibly empty (`shippingAddress.line2`).
pub(super) fn plain_text(max: usize) -> Value {
    json!({ "maxLength": max, "pattern": format!("^[^{CONTROL}]*$") })
}

/// The control characters `extract::Path` refuses in a path segment (`%00` to `%1F`,
/// `%7F`).
pub(super) const PATH_CONTROL: &str = r"\u0000-\u001F\u007F";

/// All that `str::trim` removes: white space, control characters among it.
pub(super) const ANY_SPACE: &str =
    r"\u0009-\u000D\u0085 \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// A path segment: not empty, no control character.
pub(super) fn segment() -> Value {
    json!({ "minLength": 1, "pattern": format!("^[^{PATH_CONTROL}]*$") })
}

/// A path segment with a character that is not white space (`value.trim().is_empty()`
/// is refused).
pub(super) fn segment_not_blank() -> Value {
    json!({
        "pattern": format!("^[^{PATH_CONTROL}]*[^{PATH_CONTROL}{ANY_SPACE}][^{PATH_CONTROL}]*$"),
    })
}

/// A query value with a character that is not white space.
pub(super) fn not_blank() -> Value {
    json!({ "pattern": format!("[^{ANY_SPACE}]") })
}

/// `validate_email`: at most 254 characters; trimmed of white space (tabs and new lines
/// too), no white space or control character, one `@` after a non-empty local part, and
/// a domain with a dot that neither starts nor ends it.
pub(super) fn email() -> Value {
    let any = format!("[^@{CONTROL}{SPACE}]");
    let edge = format!("[^@.{CONTROL}{SPACE}]");
    json!({
        "minLength": 5,
        "maxLength": 254,
        "pattern": format!("^[{ANY_SPACE}]*{any}+@{edge}{any}*\\.{any}*{edge}[{ANY_SPACE}]*$"),
    })
}

/// `validate_phone`: digits, spaces and `+ - ( ) .`, with 7 to 15 digits.
pub(super) fn phone() -> Value {
    json!({ "pattern": r"^[ +().-]*([0-9][ +().-]*){7,15}$" })
}

/// A word matched without regard to ASCII case (`eq_ignore_ascii_case`).
pub(super) fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One of `words` in any ASCII case, as `AggregateType::parse` reads it.
pub(super) fn one_of_any_case(words: &[&str]) -> Value {
    let alternatives: Vec<String> = words.iter().map(|w| any_case(w)).collect();
    json!({ "pattern": format!("^({})$", alternatives.join("|")) })
}

/// A comma-separated list of order statuses, each trimmed and in any ASCII case.
pub(super) fn status_list() -> Value {
    let space = format!("[{ANY_SPACE}]*");
    let words: Vec<String> = ORDER_STATUSES.iter().map(|s| any_case(s)).collect();
    let one = format!("{space}({}){space}", words.join("|"));
    json!({ "pattern": format!("^{one}(,{one})*$") })
}

// ---- Money -----------------------------------------------------------------------------

/// An amount written as a decimal string: at most two decimal places, 0 to `max` (a
/// whole power of ten, as the shop's bounds are). With `max` = 10^n: up to n digits
/// before the point (n + 1 when the first is 0), or `max` itself.
pub(super) fn money_text(max: Decimal) -> Value {
    let digits = max.trunc().to_string();
    assert!(
        max.fract().is_zero() && digits.starts_with('1') && digits[1..].bytes().all(|b| b == b'0'),
        "a money bound is a power of ten"
    );
    let n = digits.len() - 1;
    json!({
        "type": "string",
        "pattern": format!(r"^(([0-9]{{1,{n}}}|0[0-9]{{{n}}})(\.[0-9]{{1,2}})?|{digits}(\.0{{1,2}})?)$"),
        "description": format!("A decimal with at most two places, 0 to {digits}.00, e.g. \"19.99\"."),
    })
}

/// A money field of a body: the decimal string, or a JSON number of at most two places.
pub(super) fn money(max: Decimal) -> Value {
    json!({
        "oneOf": [
            money_text(max),
            {
                "type": "number",
                "minimum": 0,
                "maximum": max.trunc().to_string().parse::<u64>().expect("a whole bound"),
                "multipleOf": 0.01,
            },
        ],
        "examples": ["19.99"],
    })
}
