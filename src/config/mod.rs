//! Configuration: `ironboot.conf`, an oslo.config-style INI file, in two phases.
//!
//! 1. [`ini`] reads the text into sections and raw strings, keeping line numbers.
//! 2. [`options`] (the table, one entry per option) types and checks each option, and
//!    [`validate`] applies the rules that span options and derives [`Settings`].
//!
//! Every problem is collected and reported at once; each names the file and line, the option
//! as `section.option`, the bad value (never a secret) and the fix. Unknown sections and
//! options, deprecated names and sha1 produce warnings. Nothing here touches the network; the
//! only files read are the config itself and the key, token and template files it names.
//! Whatever `serve` would refuse at start (a template that does not compile, a fallback
//! script its boot listener cannot route) is refused here, so `config check` finds it.

pub mod error;
pub mod ini;
pub(crate) mod macros;
pub mod options;
mod resolve;
pub mod secret;
pub mod validate;
pub mod value;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors, Locations};
pub use options::{Options, option_specs};
pub use secret::{Secret, SecretFile, read_secret_file};
pub use validate::{
    CaBundle, DatabaseUrl, GlanceAuth, GlanceSettings, PasswordAuth, Settings, SwiftAuth,
    SwiftDiscovery, SwiftSettings, TemplateSources,
};
pub use value::{AuthStrategy, GlanceAuthType, Interface, Interfaces, SwiftAuthType};

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ironboot/ironboot.conf";

/// A validated configuration and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

/// Loads `explicit`, or [`DEFAULT_CONFIG_PATH`] if it exists, or the built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return from_str("", None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: Some(path.display().to_string()),
            option: None,
            message: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    from_str(&text, Some(&path))
}

/// Parses and validates configuration text. `path` is only used in messages.
pub fn from_str(text: &str, path: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let shown = path.map(|p| p.display().to_string());
    let raw = ini::RawConfig::parse(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: Some(match &shown {
                Some(p) => format!("{p}:{}", e.line),
                None => format!("line {}", e.line),
            }),
            option: None,
            message: e.message,
        }])
    })?;
    let mut resolver = resolve::Resolver::new(&raw, shown.as_deref(), option_specs());
    let options = Options::resolve(&mut resolver);
    resolver.warn_unknown();
    let locations = resolver.locations();
    let mut errors = std::mem::take(&mut resolver.errors);
    let mut warnings = std::mem::take(&mut resolver.warnings);
    let settings = validate::validate(
        options,
        path.map(Path::to_path_buf),
        &locations,
        &mut errors,
        &mut warnings,
    );
    match settings {
        Some(settings) if errors.is_empty() => Ok(Loaded { settings, warnings }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn wrap_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 79 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// `ironboot config sample`: every option, commented out, with its help and default.
pub fn sample() -> String {
    let mut out = String::from(
        "# ironboot.conf: every option with its default. Lines starting with # are comments;\n\
         # uncomment an option to change it. Values may refer to [DEFAULT] options as $name.\n",
    );
    let mut section = "";
    for spec in option_specs() {
        if spec.section != section {
            section = spec.section;
            let _ = write!(out, "\n[{section}]\n");
        }
        out.push('\n');
        wrap_comment(
            &mut out,
            &format!("{} ({})", spec.help.replace('\n', " "), spec.type_name),
        );
        for alias in spec.aliases {
            let (s, n) = alias.split_once('.').expect("section.name");
            let _ = writeln!(out, "# Deprecated name: [{s}] {n}");
        }
        let default = spec.default.sample();
        if default == "<None>" {
            let _ = writeln!(out, "#{} =", spec.name);
        } else {
            let _ = writeln!(out, "#{} = {default}", spec.name);
        }
    }
    out
}

/// `ironboot config check`: the effective settings, secrets redacted.
pub fn render_effective(settings: &Settings) -> String {
    let mut out = match &settings.source {
        Some(p) => format!("# effective configuration from {}\n", p.display()),
        None => {
            "# effective configuration: built-in defaults (no configuration file)\n".to_string()
        }
    };
    let mut section = "";
    for (sec, name, value) in settings.options.effective() {
        if sec != section {
            section = sec;
            let _ = write!(out, "\n[{sec}]\n");
        }
        let value = if (sec, name) == ("database", "connection") {
            settings.database.redacted()
        } else {
            value
        };
        let _ = writeln!(out, "{name} = {value}");
    }
    if let Some(swift) = &settings.swift {
        let _ = write!(
            out,
            "\n# derived: node-facing Swift endpoint {}, conductor-facing {}, image path /{}/{}/{}[_<seed chars>]/<image id>\n",
            swift.public_endpoint,
            swift.internal_endpoint,
            swift.api_version,
            swift
                .configured_account
                .as_deref()
                .unwrap_or("<the account [swift] signs in to>"),
            swift.container
        );
    }
    if let Some(glance) = &settings.glance {
        let endpoint = match &glance.endpoint_override {
            Some(url) => url.clone(),
            None => format!(
                "the catalog's image endpoint (interfaces {}{})",
                glance
                    .interfaces
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                glance
                    .region_name
                    .as_deref()
                    .map(|r| format!(", region {r}"))
                    .unwrap_or_default()
            ),
        };
        let auth = match &glance.auth {
            GlanceAuth::None => "without Keystone".to_string(),
            GlanceAuth::Password(p) => format!(
                "as {}@{} ({} / {}) through Keystone {}",
                p.username, p.project_name, p.user_domain_name, p.project_domain_name, p.auth_url
            ),
        };
        let _ = writeln!(
            out,
            "# derived: Glance images from {endpoint}, {auth}; metadata reused for {} s",
            glance.metadata_cache_ttl
        );
    }
    out
}

#[cfg(test)]
mod tests;
