//! Phase one: the raw INI text, as oslo.config reads it, with line numbers kept for errors.
//!
//! * `[section]` headers; names are case-sensitive (`[DEFAULT]` is upper case).
//! * `name = value` or `name: value`; surrounding whitespace is trimmed.
//! * Lines starting with `#` or `;` are comments. An inline `#` is part of the value, as in
//!   oslo.config (so a key may contain `#`).
//! * An indented line continues the previous value (joined with `\n`).
//! * A UTF-8 byte order mark at the start is skipped.
//! * A repeated option keeps the last value (oslo.config does the same for single values);
//!   the earlier line is reported as a warning by the caller.

use std::collections::BTreeMap;

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    pub value: String,
    pub line: usize,
    /// Lines of earlier assignments of the same option, which this one overrides.
    pub overridden: Vec<usize>,
}

/// The parsed file: section → option → value. Nothing is validated here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConfig {
    pub sections: BTreeMap<String, BTreeMap<String, RawValue>>,
    /// Line of each section's first header.
    pub section_lines: BTreeMap<String, usize>,
}

/// A line that is not INI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl RawConfig {
    pub fn parse(text: &str) -> Result<RawConfig, SyntaxError> {
        // A UTF-8 byte order mark (Windows editors write one) is not text; oslo.config skips
        // it too.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut raw = RawConfig::default();
        let mut section: Option<String> = None;
        let mut last: Option<(String, String)> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let (Some((sec, name)), false) = (&last, trimmed.starts_with('[')) {
                    let entry = raw
                        .sections
                        .get_mut(sec)
                        .and_then(|s| s.get_mut(name))
                        .expect("continued option exists");
                    if !entry.value.is_empty() {
                        entry.value.push('\n');
                    }
                    entry.value.push_str(trimmed);
                    continue;
                }
                return Err(SyntaxError {
                    line: number,
                    message: format!(
                        "unexpected indented line {trimmed:?}: indentation continues the previous value, \
                         and there is none"
                    ),
                });
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| SyntaxError {
                    line: number,
                    message: format!("section header {trimmed:?} is missing its closing ']'"),
                })?;
                let name = name.trim();
                if name.is_empty() {
                    return Err(SyntaxError {
                        line: number,
                        message: "empty section name '[]'".into(),
                    });
                }
                raw.sections.entry(name.to_string()).or_default();
                raw.section_lines.entry(name.to_string()).or_insert(number);
                section = Some(name.to_string());
                last = None;
                continue;
            }
            let Some(sec) = &section else {
                return Err(SyntaxError {
                    line: number,
                    message: format!(
                        "{trimmed:?} comes before any [section] header; put it under [DEFAULT] or another section"
                    ),
                });
            };
            let split = trimmed.find(['=', ':']).ok_or_else(|| SyntaxError {
                line: number,
                message: format!("expected 'name = value', got {trimmed:?}"),
            })?;
            let name = trimmed[..split].trim();
            if name.is_empty() {
                return Err(SyntaxError {
                    line: number,
                    message: format!("missing option name before '=' in {trimmed:?}"),
                });
            }
            let value = trimmed[split + 1..].trim().to_string();
            let options = raw.sections.get_mut(sec).expect("section exists");
            let overridden = options
                .get(name)
                .map(|old| {
                    let mut lines = old.overridden.clone();
                    lines.push(old.line);
                    lines
                })
                .unwrap_or_default();
            options.insert(
                name.to_string(),
                RawValue {
                    value,
                    line: number,
                    overridden,
                },
            );
            last = Some((sec.clone(), name.to_string()));
        }
        Ok(raw)
    }

    pub fn get(&self, section: &str, name: &str) -> Option<&RawValue> {
        self.sections.get(section)?.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_values_comments_and_continuations() {
        let raw = RawConfig::parse(
            "# comment\n[DEFAULT]\nstate_path = /var/lib/x\n; other comment\n\n[glance]\n\
             swift_temp_url_key=abc#def\nswift_container : glance\nlong = first\n  second\n\tthird\n",
        )
        .unwrap();
        assert_eq!(
            raw.get("DEFAULT", "state_path").unwrap().value,
            "/var/lib/x"
        );
        assert_eq!(raw.get("DEFAULT", "state_path").unwrap().line, 3);
        assert_eq!(
            raw.get("glance", "swift_temp_url_key").unwrap().value,
            "abc#def"
        );
        assert_eq!(
            raw.get("glance", "swift_container").unwrap().value,
            "glance"
        );
        assert_eq!(
            raw.get("glance", "long").unwrap().value,
            "first\nsecond\nthird"
        );
        assert_eq!(raw.section_lines["glance"], 6);
    }

    #[test]
    fn repeated_options_keep_the_last_value_and_remember_the_others() {
        let raw = RawConfig::parse(
            "[ipxe]\nuse_swift = true\nuse_swift = false\n[ipxe]\nuse_swift = 1\n",
        )
        .unwrap();
        let v = raw.get("ipxe", "use_swift").unwrap();
        assert_eq!(v.value, "1");
        assert_eq!(v.overridden, vec![2, 3]);
    }

    #[test]
    fn empty_values_are_kept() {
        let raw = RawConfig::parse("[glance]\nswift_account =\n").unwrap();
        assert_eq!(raw.get("glance", "swift_account").unwrap().value, "");
    }

    #[test]
    fn regression_utf8_bom_is_skipped() {
        // A BOM used to make the first line "come before any [section] header".
        let raw = RawConfig::parse("\u{feff}[ipxe]\nuse_swift = true\n").unwrap();
        assert_eq!(raw.get("ipxe", "use_swift").unwrap().value, "true");
        assert_eq!(raw.get("ipxe", "use_swift").unwrap().line, 2);
        // only at the very start
        assert!(
            RawConfig::parse("[ipxe]\n\u{feff}use_swift = true\n")
                .is_ok_and(|r| r.get("ipxe", "use_swift").is_none())
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line, needle) in [
            ("use_swift = true\n", 1, "before any [section]"),
            ("[ipxe\n", 1, "closing ']'"),
            ("[]\n", 1, "empty section"),
            ("[ipxe]\njust words\n", 2, "expected 'name = value'"),
            ("[ipxe]\n= true\n", 2, "missing option name"),
            ("[ipxe]\n  indented\n", 2, "indented line"),
        ] {
            let err = RawConfig::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.message.contains(needle), "{text:?}: {}", err.message);
        }
    }
}
