//! Phase two, per option: take each option's text from the raw file (or its deprecated name,
//! or its default), interpolate `$name`, parse it into its type and run its check. Errors
//! and warnings are collected so that one run reports every problem.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{ConfigError, Locations};
use super::ini::RawConfig;
use super::macros::OptionSpec;
use super::value::OptionValue;

/// A per-value check of one option.
pub(crate) type Check<T> = fn(&T) -> Result<(), String>;

pub(crate) struct Resolver<'a> {
    raw: &'a RawConfig,
    file: Option<&'a str>,
    specs: BTreeMap<(&'static str, &'static str), OptionSpec>,
    /// Effective text of each [DEFAULT] option, for `$name` interpolation.
    defaults: BTreeMap<&'static str, String>,
    /// Raw (section, name) pairs consumed by some option.
    used: BTreeSet<(String, String)>,
    /// `section.option` → line of the value used, for [`Locations`].
    lines: BTreeMap<String, usize>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub fn new(raw: &'a RawConfig, file: Option<&'a str>, specs: Vec<OptionSpec>) -> Self {
        let mut defaults = BTreeMap::new();
        for spec in specs.iter().filter(|s| s.section == "DEFAULT") {
            let text = raw
                .get("DEFAULT", spec.name)
                .map(|v| v.value.clone())
                .or_else(|| spec.default.text());
            if let Some(text) = text {
                defaults.insert(spec.name, text);
            }
        }
        Resolver {
            raw,
            file,
            specs: specs
                .into_iter()
                .map(|s| ((s.section, s.name), s))
                .collect(),
            defaults,
            used: BTreeSet::new(),
            lines: BTreeMap::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Where every option that the file sets was set, for the checks across options.
    pub fn locations(&self) -> Locations {
        Locations {
            file: self.file.map(str::to_string),
            lines: self.lines.clone(),
        }
    }

    fn location(&self, line: Option<usize>) -> Option<String> {
        match (self.file, line) {
            (Some(f), Some(l)) => Some(format!("{f}:{l}")),
            (Some(f), None) => Some(f.to_string()),
            (None, _) => None,
        }
    }

    /// The typed value of one option. On any error the error is recorded and the default is
    /// returned, so that resolution goes on and reports everything at once.
    pub fn take<T: OptionValue>(
        &mut self,
        section: &'static str,
        name: &'static str,
        check: Option<Check<T>>,
    ) -> T {
        let spec = self.specs[&(section, name)].clone();
        let key = spec.key();
        let main = self.raw.get(section, name).cloned();
        self.used.insert((section.to_string(), name.to_string()));
        if let Some(v) = &main {
            for earlier in &v.overridden {
                self.warnings.push(format!(
                    "{}: {key} is set again on line {}; the earlier value on line {earlier} is ignored",
                    self.location(Some(*earlier)).unwrap_or_default(),
                    v.line
                ));
            }
        }

        // Deprecated spellings.
        let mut chosen = main
            .as_ref()
            .map(|v| (v.value.clone(), v.line, key.clone()));
        for alias in spec.aliases {
            let (asec, aname) = alias.split_once('.').expect("aliases are section.name");
            let Some(old) = self.raw.get(asec, aname).cloned() else {
                continue;
            };
            self.used.insert((asec.to_string(), aname.to_string()));
            self.warnings.push(format!(
                "{}: [{asec}] {aname} is deprecated; use [{section}] {name} instead",
                self.location(Some(old.line)).unwrap_or_default()
            ));
            match &chosen {
                None => chosen = Some((old.value.clone(), old.line, alias.to_string())),
                Some((value, line, _)) => {
                    let same = match (T::parse(value), T::parse(&old.value)) {
                        (Ok(a), Ok(b)) => {
                            a.render() == b.render() && !T::SECRET || value == &old.value
                        }
                        _ => value == &old.value,
                    };
                    if !same {
                        self.errors.push(ConfigError {
                            location: self.location(Some(*line)),
                            option: Some(key.clone()),
                            message: format!(
                                "conflicts with its deprecated name {alias} (line {}), which is set to a \
                                 different value; remove [{asec}] {aname}",
                                old.line
                            ),
                        });
                    }
                }
            }
        }

        let fallback = || -> T {
            spec.default
                .text()
                .and_then(|t| T::parse(&t).ok())
                .or_else(T::unset)
                .unwrap_or_else(|| panic!("option {key} has no valid default"))
        };
        let (text, line, shown_key) = match chosen {
            Some((text, line, k)) => {
                self.lines.insert(key.clone(), line);
                (text, Some(line), k)
            }
            None => match spec.default.text() {
                Some(text) => (text, None, key.clone()),
                None => return T::unset().expect("options without a default are Option<_>"),
            },
        };
        let text = match self.interpolate(&text) {
            Ok(t) => t,
            Err(message) => {
                self.errors.push(ConfigError {
                    location: self.location(line),
                    option: Some(shown_key),
                    message,
                });
                return fallback();
            }
        };
        let shown_value = if T::SECRET {
            super::secret::REDACTED.to_string()
        } else {
            format!("{text:?}")
        };
        let value = match T::parse(&text) {
            Ok(v) => v,
            Err(reason) => {
                self.errors.push(ConfigError {
                    location: self.location(line),
                    option: Some(shown_key),
                    message: format!("invalid value {shown_value}: {reason}"),
                });
                return fallback();
            }
        };
        if let Some(check) = check
            && let Err(reason) = check(&value)
        {
            self.errors.push(ConfigError {
                location: self.location(line),
                option: Some(shown_key),
                message: format!("invalid value {shown_value}: {reason}"),
            });
            return fallback();
        }
        value
    }

    /// oslo.config interpolation: `$name` and `${name}` refer to [DEFAULT] options, `$$` is a
    /// literal `$`.
    fn interpolate(&self, text: &str) -> Result<String, String> {
        if !text.contains('$') {
            return Ok(text.to_string());
        }
        self.interpolate_depth(text, 0)
    }

    fn interpolate_depth(&self, text: &str, depth: usize) -> Result<String, String> {
        if depth > 8 {
            return Err("$name references nest too deeply (is there a loop?)".into());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or("unterminated ${ in value; write $$ for a literal $")?;
                (&inner[..end], &inner[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(
                    "a $ must be followed by an option name; write $$ for a literal $".into(),
                );
            }
            let value = self.defaults.get(name).ok_or_else(|| {
                format!("${name} does not name a [DEFAULT] option (such as $state_path); write $$ for a literal $")
            })?;
            out.push_str(&self.interpolate_depth(value, depth + 1)?);
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Warns about every section and option in the file that nothing read.
    pub fn warn_unknown(&mut self) {
        let known_sections: BTreeSet<&str> = self
            .specs
            .values()
            .flat_map(|s| {
                std::iter::once(s.section)
                    .chain(s.aliases.iter().map(|a| a.split_once('.').unwrap().0))
            })
            .collect();
        for (section, options) in &self.raw.sections {
            if !known_sections.contains(section.as_str()) {
                let hint = did_you_mean(section, known_sections.iter().copied())
                    .map(|s| format!("; did you mean [{s}]?"))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "{}: unknown section [{section}] is ignored{hint}",
                    self.location(self.raw.section_lines.get(section).copied())
                        .unwrap_or_default()
                ));
                continue;
            }
            for (name, value) in options {
                if self.used.contains(&(section.clone(), name.clone())) {
                    continue;
                }
                let candidates = self
                    .specs
                    .values()
                    .filter(|s| s.section == section)
                    .map(|s| s.name)
                    .chain(self.specs.values().flat_map(|s| {
                        s.aliases
                            .iter()
                            .filter_map(|a| a.strip_prefix(&format!("{section}.")))
                    }));
                let hint = did_you_mean(name, candidates)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "{}: unknown option [{section}] {name} is ignored{hint}",
                    self.location(Some(value.line)).unwrap_or_default()
                ));
            }
        }
    }
}

/// The closest known name, when it is close enough to be a typo.
pub(crate) fn did_you_mean<'n>(
    input: &str,
    known: impl Iterator<Item = &'n str>,
) -> Option<&'n str> {
    let lower = input.to_ascii_lowercase();
    known
        .map(|k| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= (k.len() / 4).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
