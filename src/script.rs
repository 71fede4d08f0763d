//! The one place that decides what may go into an iPXE script.
//!
//! iPXE has no quoting. Its line parser splits a line into words at whitespace, expands
//! `${…}` before anything else, reads a word that starts with `#` as the start of a comment,
//! and treats the words `||`, `&&` and `;` as operators. Debian's 2019 iPXE also stops
//! reading a line at a NUL byte, which silently dropped `initrd=`, `BOOTIF=` and the
//! `|| goto retry` fallback of a node script. So every byte that reaches a script from a
//! node, an image reference, the configuration or a template variable passes one of these
//! checks:
//!
//! * [`check_word`]: one word (a URL, an image name, a node name, a file name);
//! * [`check_line`]: several words on one line (kernel arguments).
//!
//! Both refuse every control character (C0, DEL and C1), `${`, and any word that starts
//! with `#` or is an operator. Pure: no I/O.

use std::fmt;

/// Why a value cannot go into a script. The message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    Empty,
    /// A control character, with its code point.
    Control(u32),
    Whitespace,
    /// A `\n` or `\r` in what must be one line.
    LineBreak,
    Expansion,
    Comment,
    Operator(&'static str),
    TooLong(usize),
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::Empty => f.write_str("is empty"),
            Unsafe::Control(c) => write!(
                f,
                "contains the control character U+{c:04X}, which iPXE's line parser mangles (a NUL ends the line); remove it"
            ),
            Unsafe::Whitespace => f.write_str(
                "contains whitespace, which splits it into two words in iPXE; percent-encode it (%20)",
            ),
            Unsafe::LineBreak => f.write_str(
                "contains a line break; it must be a single line (iPXE would run the rest as a command)",
            ),
            Unsafe::Expansion => f.write_str(
                "contains ${, which iPXE would expand as a setting; percent-encode the $ (%24)",
            ),
            Unsafe::Comment => f.write_str(
                "has a word starting with #, which iPXE reads as the start of a comment",
            ),
            Unsafe::Operator(op) => write!(
                f,
                "contains {op} as a separate word, which iPXE reads as an operator"
            ),
            Unsafe::TooLong(max) => write!(f, "is longer than {max} bytes"),
        }
    }
}

const OPERATORS: [&str; 3] = ["||", "&&", ";"];

fn check_chars(text: &str) -> Result<(), Unsafe> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Unsafe::Control(c as u32));
    }
    if text.contains("${") {
        return Err(Unsafe::Expansion);
    }
    Ok(())
}

fn check_token(token: &str) -> Result<(), Unsafe> {
    if token.starts_with('#') {
        return Err(Unsafe::Comment);
    }
    if let Some(op) = OPERATORS.iter().find(|op| **op == token) {
        return Err(Unsafe::Operator(op));
    }
    Ok(())
}

/// One word: not empty, no whitespace (Unicode's, which includes iPXE's), no control
/// character, no `${`, no leading `#`, not an operator.
pub fn check_word(text: &str) -> Result<(), Unsafe> {
    if text.is_empty() {
        return Err(Unsafe::Empty);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(Unsafe::Whitespace);
    }
    check_chars(text)?;
    check_token(text)
}

/// Words on one line, at most `max_len` bytes: no control character (so no line break),
/// no `${`, and no word that starts with `#` or is an operator. May be empty.
pub fn check_line(text: &str, max_len: usize) -> Result<(), Unsafe> {
    if text.contains(['\n', '\r']) {
        return Err(Unsafe::LineBreak);
    }
    check_chars(text)?;
    if text.len() > max_len {
        return Err(Unsafe::TooLong(max_len));
    }
    text.split_whitespace().try_for_each(check_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_refuse_everything_the_parser_treats_specially() {
        assert_eq!(check_word("http://h/k?a=1&b=2#x"), Ok(()));
        assert_eq!(
            check_word("a&&b"),
            Ok(()),
            "only a whole word is an operator"
        );
        assert_eq!(check_word(""), Err(Unsafe::Empty));
        assert_eq!(check_word("a b"), Err(Unsafe::Whitespace));
        assert_eq!(check_word("a\u{a0}b"), Err(Unsafe::Whitespace));
        assert_eq!(check_word("a${x}"), Err(Unsafe::Expansion));
        assert_eq!(check_word("#x"), Err(Unsafe::Comment));
        assert_eq!(check_word("||"), Err(Unsafe::Operator("||")));
        assert_eq!(check_word(";"), Err(Unsafe::Operator(";")));
        assert_eq!(check_word("a\tb"), Err(Unsafe::Whitespace));
        for c in (0u32..0x09)
            .chain(0x0e..0x1c)
            .chain([0x7f, 0x80, 0x81, 0x9f])
        {
            let text = format!("a{}b", char::from_u32(c).unwrap());
            assert_eq!(check_word(&text), Err(Unsafe::Control(c)), "U+{c:04X}");
        }
    }

    #[test]
    fn lines_allow_words_but_not_operators_or_controls() {
        assert_eq!(check_line("", 10), Ok(()));
        assert_eq!(check_line("nofb vga=normal a=b&c x#y", 100), Ok(()));
        for (bad, why) in [
            ("a\nb", Unsafe::LineBreak),
            ("a\rb", Unsafe::LineBreak),
            ("a\u{0}b", Unsafe::Control(0)),
            ("a\u{1b}[31m", Unsafe::Control(0x1b)),
            ("a\u{7f}", Unsafe::Control(0x7f)),
            ("x=${foo}", Unsafe::Expansion),
            ("a #comment", Unsafe::Comment),
            ("a || b", Unsafe::Operator("||")),
            ("a && b", Unsafe::Operator("&&")),
            ("a ; b", Unsafe::Operator(";")),
        ] {
            assert_eq!(check_line(bad, 100), Err(why), "{bad:?}");
        }
        assert_eq!(check_line("abcdef", 5), Err(Unsafe::TooLong(5)));
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(Unsafe::Control(0).to_string().contains("U+0000"));
        assert!(Unsafe::Whitespace.to_string().contains("%20"));
        assert!(Unsafe::Expansion.to_string().contains("%24"));
    }
}
