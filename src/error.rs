//! How an error reads on one line: each layer's own sentence, then its causes.

/// An error and its causes on one line, `display: cause: cause…`: what the CLI prints after
/// `error: `, and how the library words an error inside another message (a warning). Each
/// layer's Display is its own sentence and leaves its cause to `source()` (see
/// docs/architecture.md, "Errors"); a cause whose text the line already holds is left out, for
/// the errors that still spell their cause into their own message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
