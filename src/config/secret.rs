//! A value that must never be printed: temp-URL keys, API tokens, database passwords; and
//! the one rule by which every secret file is read ([`read_secret_file`]).

use std::fmt;
use std::path::Path;

/// A secret string. `Debug` and `Display` print a redaction; only [`Secret::expose`] gives
/// the value, so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What secrets look like in logs, errors, API responses and `config check`.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Call it only where the value is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A secret read from a file by [`read_secret_file`].
#[derive(Debug, Clone)]
pub struct SecretFile {
    pub secret: Secret,
    /// Set when the secret starts or ends with whitespace: it is kept as it is, but it is
    /// probably a mistake. Names the file, never the secret; the caller adds the option.
    pub warning: Option<String>,
}

/// Reads a secret (temp-URL key, API token) from a file, by oslo's rule: exactly one
/// trailing newline (`\n` or `\r\n`) is removed, nothing else. Used for
/// `[glance] swift_temp_url_key_file`, `[api] token_file`, `tempurl --key-file` and
/// `node --token-file`, so that a file means the same secret everywhere.
///
/// * Whitespace left at either end (a file holding `secret\n\n`, `secret\r`, ` secret`) is
///   kept, because it may be part of the secret, and reported in [`SecretFile::warning`]:
///   a server would otherwise accept a token that no client sends.
/// * A file that is empty, or holds only whitespace, after that is an error.
///
/// Messages name the file, never the secret; callers prefix the option or flag.
pub fn read_secret_file(path: &Path) -> Result<SecretFile, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {shown}: {e}; check the path and its permissions"))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("{shown} is empty; put the secret in it"));
    }
    if value.trim().is_empty() {
        return Err(format!(
            "{shown} holds only whitespace; put the secret in it"
        ));
    }
    let at_start = value.trim_start() != value;
    let at_end = value.trim_end() != value;
    let warning = (at_start || at_end).then(|| {
        let place = match (at_start, at_end) {
            (true, true) => "at both ends",
            (true, false) => "at the start",
            _ => "at the end",
        };
        format!(
            "the secret in {shown} has whitespace {place} (only one trailing newline is \
             removed); it is used with that whitespace, so every client must send it too. \
             If it is not part of the secret, rewrite the file without it, e.g. \
             printf '%s\\n' \"$SECRET\" > {shown}"
        )
    });
    Ok(SecretFile {
        secret: Secret::new(value),
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8]) -> Result<SecretFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, content).unwrap();
        read_secret_file(&path)
    }

    #[test]
    fn exactly_one_trailing_newline_is_removed() {
        for (content, expected) in [
            (&b"tok"[..], "tok"),
            (b"tok\n", "tok"),
            (b"tok\r\n", "tok"),
            (b"t o k\n", "t o k"),
        ] {
            let f = read(content).unwrap();
            assert_eq!(f.secret.expose(), expected, "{content:?}");
            assert!(f.warning.is_none(), "{content:?}: {:?}", f.warning);
        }
    }

    #[test]
    fn regression_token_file_with_two_newlines_locks_everyone_out() {
        // `echo tok >> file` twice, or an editor adding a blank line: the token used to be
        // taken with a newline that no client sends. It is kept as it is (oslo's rule), and
        // said loudly.
        for (content, expected, place) in [
            (&b"tok\n\n"[..], "tok\n", "at the end"),
            (b"tok\r\n\r\n", "tok\r\n", "at the end"),
            (b"tok\r", "tok\r", "at the end"),
            (b"tok \n", "tok ", "at the end"),
            (b" tok\n", " tok", "at the start"),
            (b"\ttok\t", "\ttok\t", "at both ends"),
        ] {
            let f = read(content).unwrap();
            assert_eq!(f.secret.expose(), expected, "{content:?}");
            let w = f
                .warning
                .unwrap_or_else(|| panic!("{content:?}: no warning"));
            assert!(
                w.contains(place) && w.contains("/secret"),
                "{content:?}: {w}"
            );
            assert!(!w.contains("tok"), "the warning shows the secret: {w}");
        }
    }

    #[test]
    fn empty_or_blank_or_unreadable_files_are_errors() {
        for content in [&b""[..], b"\n", b"\r\n", b"\n\n", b"  \n"] {
            let e = read(content).unwrap_err();
            assert!(
                e.contains("is empty") || e.contains("only whitespace"),
                "{content:?}: {e}"
            );
        }
        let e = read_secret_file(Path::new("/nonexistent/secret")).unwrap_err();
        assert!(
            e.starts_with("cannot read /nonexistent/secret: ") && e.contains("permissions"),
            "{e}"
        );
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "hunter2");
    }
}
