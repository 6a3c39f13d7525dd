//! An error told with its causes, for a log line or an operator's message: the cause is
//! often what says what to fix ("invalid peer certificate: UnknownIssuer" under "error
//! sending request"). The one place that walks `Error::source`.

use std::error::Error;

/// The messages of an error's causes, nearest first (the error's own message left out).
pub fn causes<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = String> + 'a {
    std::iter::successors(error.source(), |&cause| cause.source()).map(ToString::to_string)
}

/// The error's message followed by each cause's, joined by ": ". A cause whose message
/// the text already holds (an error that prints its source too) is not repeated.
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    for cause in causes(error) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn the_chain_is_told_once_outermost_first() {
        let error = Outer(Middle(Inner));
        assert_eq!(
            causes(&error).collect::<Vec<_>>(),
            ["middle: inner", "inner"]
        );
        assert_eq!(with_causes(&error), "outer: middle: inner");
        assert_eq!(with_causes(&Inner), "inner");
    }
}
