//! Phase two, across options: rules that involve several options, files the config points
//! at (key and token files), and the derived, typed settings the rest of ironboot uses.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::options::Options;
use super::secret::Secret;
use super::value::AuthStrategy;
use crate::tempurl::{self, Digest, Endpoint};

/// Everything needed to sign and check Swift temporary URLs.
#[derive(Debug, Clone)]
pub struct SwiftSettings {
    /// What goes into URLs handed to nodes.
    pub public_endpoint: Endpoint,
    /// What this conductor uses for its own requests (HEAD checks).
    pub internal_endpoint: Endpoint,
    pub api_version: String,
    pub account: String,
    pub container: String,
    pub seed: u8,
    pub key: Secret,
    pub digest: Digest,
    pub duration: u64,
    pub start_delay: u64,
    pub ip_range: Option<String>,
}

/// Where nodes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file, created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL in sqlx's form (`postgres://…`). Contains the password.
    Postgres(Secret),
}

impl DatabaseUrl {
    /// Parses oslo.db/SQLAlchemy spellings: `sqlite:///<path>` (four slashes for an absolute
    /// path after interpolation), `postgresql://`, `postgresql+psycopg2://`, `postgres://`.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite:///") {
            if path.is_empty() {
                return Err("sqlite:/// needs a file path, e.g. sqlite:////var/lib/ironboot/ironboot.sqlite".into());
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("sqlite:") {
            return Err(
                "SQLite URLs are sqlite:///<path>; in-memory databases are not supported".into(),
            );
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected a URL such as postgresql://user:password@host/ironboot")?;
        match scheme {
            "postgresql"
            | "postgres"
            | "postgresql+psycopg2"
            | "postgresql+psycopg"
            | "postgresql+asyncpg" => {
                if rest.is_empty() {
                    return Err("the PostgreSQL URL has no host or database".into());
                }
                Ok(DatabaseUrl::Postgres(Secret::new(format!(
                    "postgres://{rest}"
                ))))
            }
            s if s.starts_with("mysql") => {
                Err("MySQL is not supported; use PostgreSQL or SQLite".into())
            }
            _ => Err(format!(
                "unsupported database scheme {scheme:?}; use sqlite:///<path> or postgresql://…"
            )),
        }
    }

    /// The URL with any password replaced, for logs and `config check`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite:///{}", p.display()),
            DatabaseUrl::Postgres(url) => redact_url_password(url.expose()),
        }
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:<redacted>@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:{}@{host}{tail}", super::secret::REDACTED)
            } else {
                url.to_string()
            }
        }
        None => {
            // libpq also takes password=… as a query parameter.
            if tail.contains("password=") {
                let cleaned: Vec<String> = tail
                    .split(['?', '&'])
                    .map(|p| {
                        if p.starts_with("password=") {
                            format!("password={}", super::secret::REDACTED)
                        } else {
                            p.to_string()
                        }
                    })
                    .collect();
                format!("{scheme}://{authority}{}", rebuild_query(&cleaned))
            } else {
                url.to_string()
            }
        }
    }
}

fn rebuild_query(parts: &[String]) -> String {
    let mut out = parts[0].clone();
    for (i, p) in parts[1..].iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(p);
    }
    out
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every option, typed.
    pub options: Options,
    /// The file it came from; `None` for built-in defaults.
    pub source: Option<PathBuf>,
    /// Swift settings; always present when `[ipxe] use_swift` is true.
    pub swift: Option<SwiftSettings>,
    pub database: DatabaseUrl,
    /// The API token when `[api] auth_strategy = token`.
    pub api_token: Option<Secret>,
}

/// Reads a key or token file by [`super::secret::read_secret_file`]'s rule; its warning
/// (whitespace kept at an end) names the option.
fn read_secret_file(
    option: &str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    let file = super::secret::read_secret_file(path).map_err(|e| ConfigError::option(option, e))?;
    if let Some(w) = file.warning {
        warnings.push(format!("{option}: {w}"));
    }
    Ok(file.secret)
}

fn endpoint(option: &str, url: &str, prefix: &str) -> Result<Endpoint, ConfigError> {
    let stripped = tempurl::glance::strip_account_suffix(url, prefix);
    Endpoint::parse(stripped)
        .map_err(|e| ConfigError::option(option, format!("invalid value {url:?}: {e}")))
}

fn path_segment(option: &str, value: &str, errors: &mut Vec<ConfigError>) {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_whitespace) {
        errors.push(ConfigError::option(
            option,
            format!(
                "invalid value {value:?}: must be one non-empty path segment without '/' or spaces"
            ),
        ));
    }
}

/// Applies the rules that involve several options.
pub(crate) fn validate(
    options: Options,
    source: Option<PathBuf>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Settings> {
    let g = &options.glance;

    if g.swift_temp_url_duration < g.swift_temp_url_expected_download_start_delay {
        errors.push(ConfigError::option(
            "glance.swift_temp_url_duration",
            format!(
                "{} is less than glance.swift_temp_url_expected_download_start_delay ({}); the URLs would expire \
                 before downloads start. Raise the duration or lower the delay",
                g.swift_temp_url_duration, g.swift_temp_url_expected_download_start_delay
            ),
        ));
    }
    if g.swift_temp_url_digest == Digest::Sha1 {
        warnings.push(
            "glance.swift_temp_url_digest = sha1 is deprecated by Swift; prefer sha256 or sha512"
                .into(),
        );
    }

    let key = match (&g.swift_temp_url_key, &g.swift_temp_url_key_file) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::option(
                "glance.swift_temp_url_key_file",
                "is set together with glance.swift_temp_url_key; keep only one of them",
            ));
            None
        }
        (Some(k), None) if k.expose().is_empty() => None,
        (Some(k), None) => Some(k.clone()),
        (None, Some(path)) => {
            match read_secret_file("glance.swift_temp_url_key_file", path, warnings) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        }
        (None, None) => None,
    };

    for (opt, value) in [
        ("glance.swift_api_version", &g.swift_api_version),
        ("glance.swift_container", &g.swift_container),
    ] {
        path_segment(opt, value, errors);
    }
    if let Some(account) = &g.swift_account {
        path_segment("glance.swift_account", account, errors);
    }

    let public = g
        .swift_endpoint_url
        .as_deref()
        .map(|u| endpoint("glance.swift_endpoint_url", u, &g.swift_account_prefix));
    let internal = g.swift_internal_endpoint_url.as_deref().map(|u| {
        endpoint(
            "glance.swift_internal_endpoint_url",
            u,
            &g.swift_account_prefix,
        )
    });
    let mut endpoint_ok = |r: Option<Result<Endpoint, ConfigError>>| match r {
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let public = endpoint_ok(public);
    let internal = endpoint_ok(internal);

    let swift = match (&public, &g.swift_account, &key) {
        (Some(public), Some(account), Some(key)) => Some(SwiftSettings {
            internal_endpoint: internal.clone().unwrap_or_else(|| public.clone()),
            public_endpoint: public.clone(),
            api_version: g.swift_api_version.clone(),
            account: account.clone(),
            container: g.swift_container.clone(),
            seed: g.swift_store_multiple_containers_seed,
            key: key.clone(),
            digest: g.swift_temp_url_digest,
            duration: g.swift_temp_url_duration,
            start_delay: g.swift_temp_url_expected_download_start_delay,
            ip_range: g.swift_temp_url_ip_range.clone(),
        }),
        _ => None,
    };
    if options.ipxe.use_swift {
        if g.swift_endpoint_url.is_none() {
            errors.push(ConfigError::option(
                "glance.swift_endpoint_url",
                "is required when ipxe.use_swift = true: set the Swift endpoint nodes reach, e.g. http://swift.example.com:8080",
            ));
        }
        if g.swift_account.is_none() {
            errors.push(ConfigError::option(
                "glance.swift_account",
                "is required when ipxe.use_swift = true: set the account that holds the images, e.g. AUTH_<project id>",
            ));
        }
        if key.is_none() && g.swift_temp_url_key_file.is_none() {
            errors.push(ConfigError::option(
                "glance.swift_temp_url_key",
                "is required when ipxe.use_swift = true: set it, or glance.swift_temp_url_key_file, to the \
                 account's or container's Temp-URL-Key",
            ));
        }
    }

    let database = match DatabaseUrl::parse(options.database.connection.expose()) {
        Ok(db) => Some(db),
        Err(reason) => {
            errors.push(ConfigError::option(
                "database.connection",
                format!("invalid value: {reason}"),
            ));
            None
        }
    };

    let api = &options.api;
    let api_token = match api.auth_strategy {
        AuthStrategy::Token => match &api.token_file {
            Some(path) => match read_secret_file("api.token_file", path, warnings) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => {
                errors.push(ConfigError::option(
                    "api.token_file",
                    "is required when api.auth_strategy = token: point it at a file holding the token",
                ));
                None
            }
        },
        AuthStrategy::Noauth => {
            if !api.host_ip.is_loopback() {
                if api.allow_insecure_noauth {
                    warnings.push(format!(
                        "api.auth_strategy = noauth on {}: anyone who reaches this address can change what machines boot",
                        api.host_ip
                    ));
                } else {
                    errors.push(ConfigError::option(
                        "api.auth_strategy",
                        format!(
                            "noauth on the non-loopback address {} would let anyone who reaches it change what \
                             machines boot; use auth_strategy = token, bind api.host_ip to 127.0.0.1, or set \
                             api.allow_insecure_noauth = true",
                            api.host_ip
                        ),
                    ));
                }
            }
            None
        }
    };
    if api.host_ip == options.httpboot.host_ip && api.port == options.httpboot.port {
        errors.push(ConfigError::option(
            "httpboot.port",
            format!(
                "{} is also api.port on the same address; give the boot server its own port",
                api.port
            ),
        ));
    }

    let database = database?;
    if !errors.is_empty() {
        return None;
    }
    Some(Settings {
        options,
        source,
        swift,
        database,
        api_token,
    })
}
