//! Text read from an untrusted file (a tensor name, a metadata key, a library's message about
//! it), made fit for the one `error: ...` line the CLI prints: control characters escaped, so a
//! name holding a newline cannot split or forge lines, and anything longer than
//! [`MAX_SHOWN_CHARS`] cut, so a megabyte-long key does not become a megabyte-long error.

use std::borrow::Cow;

pub const MAX_SHOWN_CHARS: usize = 500;

/// `s` as it should appear inside an error message.
pub fn shown(s: &str) -> Cow<'_, str> {
    let plain = s.len() <= MAX_SHOWN_CHARS && !s.chars().any(char::is_control);
    if plain {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push_str(&format!("... ({} bytes in all)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
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
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            shown("blk.0.attn_q.weight"),
            Cow::Borrowed("blk.0.attn_q.weight")
        ));
        assert_eq!(shown("héllo ✓"), "héllo ✓");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("general.arch\n   itec"), "general.arch\\n   itec");
        assert_eq!(shown("a\tb\u{0}c\u{1b}[31m"), "a\\tb\\u{0}c\\u{1b}[31m");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.starts_with(&"x".repeat(MAX_SHOWN_CHARS)));
        assert!(s.ends_with("... (10000 bytes in all)"), "{s}");
        assert!(s.len() < MAX_SHOWN_CHARS + 40);
    }
}
