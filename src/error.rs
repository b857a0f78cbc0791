//! How an error reads on one line: each layer's own sentence, then its causes.

/// An error and its causes on one line, `display: cause: cause…`: what the CLI prints after
/// `error: `, and how the library words an error inside another message (a warning). Each
/// layer's Display is its own sentence and leaves its cause to `source()` (see
/// docs/architecture.md, "Errors"), so every cause is printed once, in order, and nothing is
/// compared by text. A cause with an empty Display adds nothing.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("inner says {0}")]
    struct Inner(&'static str);

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed; do this next")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("")]
    struct Silent(#[source] Inner);

    #[test]
    fn every_cause_once_in_order_even_when_its_text_repeats() {
        assert_eq!(
            error_chain(&Outer(Inner("x"))),
            "outer failed; do this next: inner says x"
        );
        // No de-duplication by text: a cause is printed even if the line already holds its
        // words (each layer says only its own sentence, so nothing is said twice).
        #[derive(Debug, thiserror::Error)]
        #[error("inner says x")]
        struct Same(#[source] Inner);
        assert_eq!(error_chain(&Same(Inner("x"))), "inner says x: inner says x");
        // A cause with an empty Display adds nothing.
        #[derive(Debug, thiserror::Error)]
        #[error("top")]
        struct Top(#[source] Silent);
        assert_eq!(error_chain(&Top(Silent(Inner("y")))), "top: inner says y");
    }
}
