//! Configuration errors: each names where (file and line), which option (`section.option`),
//! the bad value (secrets redacted) and what to do about it.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `path:line`, or just the path, when the problem is in a file.
    pub location: Option<String>,
    /// `section.option`.
    pub option: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            location: None,
            option: Some(option.into()),
            message: message.into(),
        }
    }
}

/// Where each option was set in the file, so that the checks that run after every option is
/// typed (`validate.rs`) can name `file:line` like the per-option ones do.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// The file, as shown in messages; `None` for text without a file.
    pub(crate) file: Option<String>,
    /// `section.option` → line of the value that was used (the option's own line, or its
    /// deprecated name's).
    pub(crate) lines: BTreeMap<String, usize>,
}

impl Locations {
    /// The line that sets `option` (`section.option`), if the file sets it.
    pub fn line(&self, option: &str) -> Option<usize> {
        self.lines.get(option).copied()
    }

    /// `file:line` of the first of `options` that the file sets; just the file when it sets
    /// none of them; `None` without a file.
    pub fn of(&self, options: &[&str]) -> Option<String> {
        let file = self.file.as_deref()?;
        Some(match options.iter().find_map(|o| self.line(o)) {
            Some(line) => format!("{file}:{line}"),
            None => file.to_string(),
        })
    }

    /// An error about `option`, located at its line.
    pub fn error(&self, option: &str, message: impl Into<String>) -> ConfigError {
        self.error_near(option, &[], message)
    }

    /// An error about `option`, located at its line or, when the file does not set it, at
    /// the line of the first of `near` that it sets (e.g. "required when X": X's line).
    pub fn error_near(
        &self,
        option: &str,
        near: &[&str],
        message: impl Into<String>,
    ) -> ConfigError {
        let mut options = vec![option];
        options.extend_from_slice(near);
        ConfigError {
            location: self.of(&options),
            option: Some(option.to_string()),
            message: message.into(),
        }
    }

    /// A warning about `option`, in the same form as an error.
    pub fn warning(&self, option: &str, message: impl fmt::Display) -> String {
        match self.of(&[option]) {
            Some(loc) => format!("{loc}: {option}: {message}"),
            None => format!("{option}: {message}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if let Some(opt) = &self.option {
            write!(f, "{opt}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
