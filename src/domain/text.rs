//! Which characters foreign text may hold, and how text is shown when it holds others. A member
//! State's subject or body reaches an officer's terminal and browser: control characters could
//! rewrite the terminal (`ESC ] 0 ; … BEL`) and bidi overrides could reorder what is read.
//!
//! Refused on input (`validation`): C0 controls and DEL (in multi-line texts tab, newline and the
//! carriage return of a CRLF pair are allowed), C1 controls (U+0080–U+009F) and the bidi
//! embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069). The bidi marks
//! (U+200E, U+200F, U+061C) are allowed: they only set the direction of neutral characters next
//! to them, cannot reorder text they do not touch, and right-to-left languages need them.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A character foreign text may not hold: a control (C0, DEL, C1) or a bidi override, embedding
/// or isolate. Tab, newline and carriage return are included: callers allow them where they fit.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The first character of `text` not allowed in it, with its char index: every [`is_unsafe`]
/// character on one line; in a multi-line text, tab, newline and CRLF are allowed.
pub fn first_unsafe(text: &str, multiline: bool) -> Option<(usize, char)> {
    let mut chars = text.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        let allowed = multiline
            && (c == '\t' || c == '\n' || (c == '\r' && chars.peek().is_some_and(|(_, next)| *next == '\n')));
        if is_unsafe(c) && !allowed {
            return Some((i, c));
        }
    }
    None
}

/// `text` safe to print on a terminal or a page: every character [`first_unsafe`] would refuse
/// written as `\u{…}` (with `\` itself doubled only when something was escaped, so plain text is
/// shown as it is). Stored data from older versions may still hold such characters.
pub fn printable(text: &str, multiline: bool) -> Cow<'_, str> {
    if first_unsafe(text, multiline).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let allowed = multiline
            && (c == '\t' || c == '\n' || (c == '\r' && chars.peek().is_some_and(|next| *next == '\n')));
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) && !allowed {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_overrides_are_refused_and_escaped() {
        let osc = "Urgent \u{1b}]0;pwned\u{7}";
        assert_eq!(first_unsafe(osc, true), Some((7, '\u{1b}')));
        assert_eq!(printable(osc, false), "Urgent \\u{1b}]0;pwned\\u{7}");
        assert_eq!(first_unsafe("a\u{202E}b", true), Some((1, '\u{202E}')));
        assert_eq!(first_unsafe("x\u{85}", true), Some((1, '\u{85}')));
        assert_eq!(first_unsafe("a\tb\r\nc", true), None);
        assert_eq!(first_unsafe("a\rb", true), Some((1, '\r')));
        assert_eq!(first_unsafe("a\tb", false), Some((1, '\t')));
        assert_eq!(first_unsafe("שלום \u{200F}ok", false), None);
        assert_eq!(printable("line\nnext", true), "line\nnext");
        assert_eq!(printable("a\\b", false), "a\\b");
        assert_eq!(printable("a\\b\n", false), "a\\\\b\\u{a}");
    }
}
