//! Phase two, across options: rules that involve several options, files the config points
//! at (key and token files, iPXE templates), and the derived, typed settings the rest of
//! ironboot uses. Every error names the `file:line` of the option it is about
//! ([`Locations`]).

use std::path::{Path, PathBuf};

use url::{Position, Url};

use super::error::{ConfigError, Locations};
use super::options::Options;
use super::secret::{self, REDACTED, Secret};
use super::value::{AuthStrategy, GlanceAuthType, Interface, SwiftAuthType};
use crate::ipxe::{IpxeError, MasterContext, Templates};
use crate::tempurl::{self, Digest, Endpoint};

/// Everything needed to sign and check Swift temporary URLs.
#[derive(Debug, Clone)]
pub struct SwiftSettings {
    /// What goes into URLs handed to nodes.
    pub public_endpoint: Endpoint,
    /// What this conductor uses for its own requests (HEAD checks).
    pub internal_endpoint: Endpoint,
    pub api_version: String,
    /// `[glance] swift_account_prefix` with its `_`.
    pub account_prefix: String,
    pub container: String,
    pub seed: u8,
    /// `[glance] swift_temp_url_key`; `None`: read from the account by `discovery`.
    pub key: Option<Secret>,
    /// `[glance] swift_account`; `None`: learned by `discovery`.
    pub configured_account: Option<String>,
    /// How the key (and the account) are read from Swift; `Some` when `[swift] auth_type`
    /// is set.
    pub discovery: Option<SwiftDiscovery>,
    pub digest: Digest,
    pub duration: u64,
    pub start_delay: u64,
    pub ip_range: Option<String>,
}

/// How ironboot reads the account's temp-URL keys: `[swift]`.
#[derive(Debug, Clone)]
pub struct SwiftDiscovery {
    pub auth: SwiftAuth,
    /// Each request to Keystone or Swift, connection included.
    pub timeout: std::time::Duration,
    /// Between two reads of the keys.
    pub refresh: std::time::Duration,
}

/// The credentials of `[swift]`.
#[derive(Debug, Clone)]
pub enum SwiftAuth {
    /// Keystone v3; Swift is the catalog's object-store endpoint.
    Keystone {
        auth: PasswordAuth,
        region_name: Option<String>,
        interfaces: Vec<Interface>,
    },
    /// Swift's v1 auth (tempauth, swauth).
    V1 {
        auth_url: String,
        /// `account:user`.
        username: String,
        password: Secret,
    },
}

/// How ironboot reads image metadata from Glance: present when `[glance] auth_type` is set.
#[derive(Debug, Clone)]
pub struct GlanceSettings {
    pub auth: GlanceAuth,
    /// The catalog's region of the image endpoint; `None`: any.
    pub region_name: Option<String>,
    /// Catalog interfaces, in the order they are tried.
    pub interfaces: Vec<Interface>,
    /// Glance's URL instead of the catalog's.
    pub endpoint_override: Option<String>,
    /// The CA bundle of `[glance] cafile`, read and parsed.
    pub ca: Option<CaBundle>,
    pub insecure: bool,
    /// Each request to Keystone or Glance, connection included.
    pub timeout: std::time::Duration,
    /// Retries of a Glance request after a 5xx or a connection error.
    pub num_retries: u32,
    /// Seconds an active image's metadata is reused; 0: never.
    pub metadata_cache_ttl: u64,
}

/// The Keystone credentials, or none.
#[derive(Debug, Clone)]
pub enum GlanceAuth {
    /// No Keystone; Glance is at `endpoint_override`.
    None,
    Password(PasswordAuth),
}

/// Keystone v3 password authentication, scoped to a project by name.
#[derive(Debug, Clone)]
pub struct PasswordAuth {
    /// As configured: with `/v3` or bare (then discovered).
    pub auth_url: String,
    pub username: String,
    pub password: Secret,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
}

/// The PEM certificates of `[glance] cafile`.
#[derive(Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({})", self.path.display())
    }
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

/// `scheme://user:secret@host/db` → `scheme://user:<redacted>@host/db`; a libpq
/// `password=` query parameter is redacted too. Text that is not a URL is returned as it is
/// when it has no `://`, else only its scheme is kept: whatever follows could be a password.
pub fn redact_url_password(text: &str) -> String {
    let Ok(url) = Url::parse(text) else {
        return match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{REDACTED}"),
            None => text.to_string(),
        };
    };
    let redact_query = url
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("password=")));
    if url.password().is_none() && !redact_query {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    if url.password().is_some() {
        out.push_str(&url[..Position::BeforePassword]);
        out.push_str(REDACTED);
        out.push_str(&url[Position::AfterPassword..Position::AfterPath]);
    } else {
        out.push_str(&url[..Position::AfterPath]);
    }
    if let Some(query) = url.query() {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            if pair.starts_with("password=") {
                out.push_str("password=");
                out.push_str(REDACTED);
            } else {
                out.push_str(pair);
            }
        }
    }
    out.push_str(&url[Position::AfterQuery..]);
    out
}

/// The iPXE template sources named by `[pxe] ipxe_boot_script` and
/// `[pxe] ipxe_config_template`, read and checked (they compile, and the master script
/// renders with `[ipxe] fallback_script`). `None`: the built-in template.
#[derive(Debug, Clone, Default)]
pub struct TemplateSources {
    pub boot_script: Option<String>,
    pub node_template: Option<String>,
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
    /// Glance settings; present when `[glance] auth_type` is set.
    pub glance: Option<GlanceSettings>,
    pub database: DatabaseUrl,
    /// The API token when `[api] auth_strategy = token`.
    pub api_token: Option<Secret>,
    /// The template files' contents; pass them to `ipxe::Templates::new`.
    pub templates: TemplateSources,
    /// `[deploy] http_url` without a trailing `/`, or the boot listener's own URL.
    pub http_url: String,
}

/// Reads a key or token file by [`secret::read_secret_file`]'s rule; its warning (whitespace
/// kept at an end) is reported with the option's `file:line`.
fn secret_file(
    at: &Locations,
    option: &str,
    path: &Path,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    match secret::read_secret_file(path) {
        Ok(file) => {
            if let Some(w) = file.warning {
                warnings.push(at.warning(option, w));
            }
            Some(file.secret)
        }
        Err(e) => {
            errors.push(at.error(option, e));
            None
        }
    }
}

/// Reads one template file; `Err` after recording the error.
fn template_file(
    at: &Locations,
    option: &str,
    path: Option<&Path>,
    errors: &mut Vec<ConfigError>,
) -> Result<Option<String>, ()> {
    let Some(path) = path else { return Ok(None) };
    std::fs::read_to_string(path).map(Some).map_err(|e| {
        errors.push(at.error(
            option,
            format!(
                "cannot read the template {}: {e}; check the path and its permissions, or \
                 remove the option to use the built-in template",
                path.display()
            ),
        ));
    })
}

/// Compiles the templates as `serve` will, and renders the master script with
/// `[ipxe] fallback_script`, so that `config check` refuses what `serve` would.
fn templates(
    options: &Options,
    at: &Locations,
    errors: &mut Vec<ConfigError>,
) -> Option<TemplateSources> {
    const BOOT: &str = "pxe.ipxe_boot_script";
    const NODE: &str = "pxe.ipxe_config_template";
    let pxe = &options.pxe;
    let boot_script = template_file(at, BOOT, pxe.ipxe_boot_script.as_deref(), errors);
    let node_template = template_file(at, NODE, pxe.ipxe_config_template.as_deref(), errors);
    let (Ok(boot_script), Ok(node_template)) = (boot_script, node_template) else {
        return None;
    };
    let file = |option: &str| {
        let path = if option == BOOT {
            &pxe.ipxe_boot_script
        } else {
            &pxe.ipxe_config_template
        };
        match path {
            Some(p) => format!("the template {}", p.display()),
            None => "the built-in template".to_string(),
        }
    };
    let compiled = Templates::new(boot_script.clone(), node_template.clone()).and_then(|t| {
        t.master(&MasterContext {
            fallback_script: options.ipxe.fallback_script.clone(),
        })
    });
    let error = match compiled {
        Ok(_) => {
            return Some(TemplateSources {
                boot_script,
                node_template,
            });
        }
        Err(e) => e,
    };
    errors.push(match &error {
        IpxeError::Template { name, .. } if name == "boot.ipxe" => at.error(
            BOOT,
            format!(
                "{} does not compile, or does not render with ipxe.fallback_script = {}: {error}; \
                 fix the template, or remove the option to use the built-in one",
                file(BOOT),
                options.ipxe.fallback_script.as_deref().unwrap_or("<None>")
            ),
        ),
        IpxeError::Template { .. } => at.error(
            NODE,
            format!(
                "{} does not compile or render: {error}; fix the template, or remove the option \
                 to use the built-in one",
                file(NODE)
            ),
        ),
        IpxeError::Unsafe { reason, .. } => at.error(
            "ipxe.fallback_script",
            format!(
                "cannot go into the master script: {reason}; name a file in deploy.http_root \
                 or give an absolute http(s):// URL"
            ),
        ),
    });
    None
}

fn endpoint(
    at: &Locations,
    option: &str,
    url: &str,
    prefix: &str,
) -> Result<Endpoint, ConfigError> {
    let stripped = tempurl::glance::strip_account_suffix(url, prefix);
    Endpoint::parse(stripped).map_err(|e| at.error(option, format!("invalid value {url:?}: {e}")))
}

fn path_segment(at: &Locations, option: &str, value: &str, errors: &mut Vec<ConfigError>) {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_whitespace) {
        errors.push(at.error(
            option,
            format!(
                "invalid value {value:?}: must be one non-empty path segment without '/' or spaces"
            ),
        ));
    }
}

/// Reads and parses `[glance] cafile`.
fn ca_bundle(at: &Locations, path: &Path, errors: &mut Vec<ConfigError>) -> Option<CaBundle> {
    const OPT: &str = "glance.cafile";
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            errors.push(at.error(
                OPT,
                format!(
                    "cannot read {}: {e}; check the path and its permissions",
                    path.display()
                ),
            ));
            return None;
        }
    };
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Some(CaBundle {
            path: path.to_path_buf(),
            pem,
        }),
        Ok(_) => {
            errors.push(at.error(
                OPT,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA bundle that signs Keystone's and Glance's certificates",
                    path.display()
                ),
            ));
            None
        }
        Err(e) => {
            errors.push(at.error(
                OPT,
                format!("{} is not a valid PEM bundle: {e}", path.display()),
            ));
            None
        }
    }
}

/// The `[glance]` options for Keystone and Glance: required combinations, the password
/// file, the CA bundle. `None` when `auth_type` is not set (or on error).
fn glance_settings(
    options: &Options,
    at: &Locations,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<GlanceSettings> {
    let g = &options.glance;
    let set_without_auth_type: Vec<&str> = [
        ("auth_url", g.auth_url.is_some()),
        ("username", g.username.is_some()),
        ("password", g.password.is_some()),
        ("password_file", g.password_file.is_some()),
        ("project_name", g.project_name.is_some()),
        ("endpoint_override", g.endpoint_override.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| name)
    .collect();
    let Some(auth_type) = g.auth_type else {
        if !set_without_auth_type.is_empty() {
            warnings.push(at.warning(
                &format!("glance.{}", set_without_auth_type[0]),
                format!(
                    "is ignored because glance.auth_type is not set ({} set); set auth_type = password \
                     (or none) to serve Glance images",
                    set_without_auth_type.join(", ")
                ),
            ));
        }
        return None;
    };
    let before = errors.len();
    let password = match (&g.password, &g.password_file) {
        (Some(_), Some(_)) => {
            errors.push(at.error(
                "glance.password_file",
                "is set together with glance.password; keep only one of them",
            ));
            None
        }
        (Some(p), None) if !p.expose().is_empty() => Some(p.clone()),
        (None, Some(path)) => secret_file(at, "glance.password_file", path, errors, warnings),
        _ => None,
    };
    let auth = match auth_type {
        GlanceAuthType::None => {
            if g.endpoint_override.is_none() {
                errors.push(at.error_near(
                    "glance.endpoint_override",
                    &["glance.auth_type"],
                    "is required when glance.auth_type = none: without Keystone there is no catalog; \
                     set Glance's URL, e.g. http://glance.example.com:9292",
                ));
            }
            GlanceAuth::None
        }
        GlanceAuthType::Password => {
            let mut required = |option: &str, value: Option<&String>, example: &str| {
                if value.is_none_or(|v| v.trim().is_empty()) {
                    errors.push(at.error_near(
                        option,
                        &["glance.auth_type"],
                        format!("is required when glance.auth_type = password: {example}"),
                    ));
                }
            };
            required(
                "glance.auth_url",
                g.auth_url.as_ref(),
                "set Keystone's URL, e.g. http://keystone.example.com:5000/v3",
            );
            required(
                "glance.username",
                g.username.as_ref(),
                "set the Keystone user ironboot reads images as",
            );
            required(
                "glance.project_name",
                g.project_name.as_ref(),
                "set the project the token is scoped to, e.g. service",
            );
            if password.is_none() && g.password_file.is_none() {
                errors.push(at.error_near(
                    "glance.password",
                    &["glance.auth_type"],
                    "is required when glance.auth_type = password: set it, or glance.password_file",
                ));
            }
            GlanceAuth::Password(PasswordAuth {
                auth_url: g.auth_url.clone().unwrap_or_default(),
                username: g.username.clone().unwrap_or_default(),
                password: password.clone().unwrap_or_else(|| Secret::new("")),
                project_name: g.project_name.clone().unwrap_or_default(),
                user_domain_name: g.user_domain_name.clone(),
                project_domain_name: g.project_domain_name.clone(),
            })
        }
    };
    let ca = g.cafile.as_deref().and_then(|p| ca_bundle(at, p, errors));
    if g.insecure {
        warnings.push(at.warning(
            "glance.insecure",
            "TLS certificates of Keystone and Glance are not verified: anyone on the path can \
             read the password and tokens",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(GlanceSettings {
        auth,
        region_name: g.region_name.clone(),
        interfaces: g.valid_interfaces.0.clone(),
        endpoint_override: g.endpoint_override.clone(),
        ca,
        insecure: g.insecure,
        timeout: std::time::Duration::from_secs(g.timeout),
        num_retries: g.num_retries,
        metadata_cache_ttl: g.metadata_cache_ttl,
    })
}

/// `[swift]`: the credentials ironboot reads the account's temp-URL keys with.
fn swift_discovery(
    options: &Options,
    at: &Locations,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<SwiftDiscovery> {
    let w = &options.swift;
    let Some(auth_type) = w.auth_type else {
        let set: Vec<&str> = [
            ("auth_url", w.auth_url.is_some()),
            ("username", w.username.is_some()),
            ("password", w.password.is_some()),
            ("password_file", w.password_file.is_some()),
            ("project_name", w.project_name.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect();
        if let Some(first) = set.first() {
            warnings.push(at.warning(
                &format!("swift.{first}"),
                format!(
                    "is ignored because swift.auth_type is not set ({} set); set auth_type = \
                     password (Keystone) or v1password (tempauth) to read the temp-URL key from \
                     the account",
                    set.join(", ")
                ),
            ));
        }
        return None;
    };
    let before = errors.len();
    let password = match (&w.password, &w.password_file) {
        (Some(_), Some(_)) => {
            errors.push(at.error(
                "swift.password_file",
                "is set together with swift.password; keep only one of them",
            ));
            None
        }
        (Some(p), None) if !p.expose().is_empty() => Some(p.clone()),
        (None, Some(path)) => secret_file(at, "swift.password_file", path, errors, warnings),
        _ => None,
    };
    let type_name = match auth_type {
        SwiftAuthType::Password => "password",
        SwiftAuthType::V1Password => "v1password",
    };
    let mut required = |option: &str, value: Option<&String>, example: &str| {
        if value.is_none_or(|v| v.trim().is_empty()) {
            errors.push(at.error_near(
                option,
                &["swift.auth_type"],
                format!("is required when swift.auth_type = {type_name}: {example}"),
            ));
        }
    };
    match auth_type {
        SwiftAuthType::Password => {
            required(
                "swift.auth_url",
                w.auth_url.as_ref(),
                "set Keystone's URL, e.g. http://keystone.example.com:5000/v3",
            );
            required(
                "swift.username",
                w.username.as_ref(),
                "set the Keystone user that may read the account's metadata",
            );
            required(
                "swift.project_name",
                w.project_name.as_ref(),
                "set the project whose Swift account holds the images, e.g. service",
            );
        }
        SwiftAuthType::V1Password => {
            required(
                "swift.auth_url",
                w.auth_url.as_ref(),
                "set Swift's v1 auth URL, e.g. http://swift.example.com:8080/auth/v1.0",
            );
            required(
                "swift.username",
                w.username.as_ref(),
                "set the tempauth user as account:user, e.g. glance:glance",
            );
        }
    }
    if password.is_none() && w.password_file.is_none() {
        errors.push(at.error_near(
            "swift.password",
            &["swift.auth_type"],
            format!(
                "is required when swift.auth_type = {type_name}: set it, or swift.password_file"
            ),
        ));
    }
    if errors.len() > before {
        return None;
    }
    let password = password?;
    let auth = match auth_type {
        SwiftAuthType::Password => SwiftAuth::Keystone {
            auth: PasswordAuth {
                auth_url: w.auth_url.clone().unwrap_or_default(),
                username: w.username.clone().unwrap_or_default(),
                password,
                project_name: w.project_name.clone().unwrap_or_default(),
                user_domain_name: w.user_domain_name.clone(),
                project_domain_name: w.project_domain_name.clone(),
            },
            region_name: w.region_name.clone(),
            interfaces: w.valid_interfaces.0.clone(),
        },
        SwiftAuthType::V1Password => SwiftAuth::V1 {
            auth_url: w.auth_url.clone().unwrap_or_default(),
            username: w.username.clone().unwrap_or_default(),
            password,
        },
    };
    Some(SwiftDiscovery {
        auth,
        timeout: std::time::Duration::from_secs(w.timeout),
        refresh: std::time::Duration::from_secs(w.temp_url_key_refresh_interval),
    })
}

/// Applies the rules that involve several options.
pub(crate) fn validate(
    options: Options,
    source: Option<PathBuf>,
    at: &Locations,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Settings> {
    let g = &options.glance;

    if g.swift_temp_url_duration < g.swift_temp_url_expected_download_start_delay {
        errors.push(at.error_near(
            "glance.swift_temp_url_duration",
            &["glance.swift_temp_url_expected_download_start_delay"],
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
            errors.push(at.error(
                "glance.swift_temp_url_key_file",
                "is set together with glance.swift_temp_url_key; keep only one of them",
            ));
            None
        }
        (Some(k), None) if k.expose().is_empty() => None,
        (Some(k), None) => Some(k.clone()),
        (None, Some(path)) => {
            secret_file(at, "glance.swift_temp_url_key_file", path, errors, warnings)
        }
        (None, None) => None,
    };

    for (opt, value) in [
        ("glance.swift_api_version", &g.swift_api_version),
        ("glance.swift_container", &g.swift_container),
    ] {
        path_segment(at, opt, value, errors);
    }
    if let Some(account) = &g.swift_account {
        path_segment(at, "glance.swift_account", account, errors);
    }

    let public = g
        .swift_endpoint_url
        .as_deref()
        .map(|u| endpoint(at, "glance.swift_endpoint_url", u, &g.swift_account_prefix));
    let internal = g.swift_internal_endpoint_url.as_deref().map(|u| {
        endpoint(
            at,
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

    let discovery = swift_discovery(&options, at, errors, warnings);
    let prefix = if g.swift_account_prefix.ends_with('_') {
        g.swift_account_prefix.clone()
    } else {
        format!("{}_", g.swift_account_prefix)
    };
    let key_known = key.is_some() || discovery.is_some();
    let account_known = g.swift_account.is_some() || discovery.is_some();
    let swift = match &public {
        Some(public) if key_known && account_known => Some(SwiftSettings {
            internal_endpoint: internal.clone().unwrap_or_else(|| public.clone()),
            public_endpoint: public.clone(),
            api_version: g.swift_api_version.clone(),
            account_prefix: prefix,
            container: g.swift_container.clone(),
            seed: g.swift_store_multiple_containers_seed,
            key: key.clone(),
            configured_account: g.swift_account.clone(),
            discovery: discovery.clone(),
            digest: g.swift_temp_url_digest,
            duration: g.swift_temp_url_duration,
            start_delay: g.swift_temp_url_expected_download_start_delay,
            ip_range: g.swift_temp_url_ip_range.clone(),
        }),
        _ => None,
    };
    if options.ipxe.use_swift {
        if g.swift_endpoint_url.is_none() {
            errors.push(at.error_near(
                "glance.swift_endpoint_url",
                &["ipxe.use_swift"],
                "is required when ipxe.use_swift = true: set the Swift endpoint nodes reach, e.g. http://swift.example.com:8080",
            ));
        }
        if !account_known {
            errors.push(at.error_near(
                "glance.swift_account",
                &["ipxe.use_swift"],
                "is required when ipxe.use_swift = true: set the account that holds the images, e.g. AUTH_<project id>, \
                 or set [swift] auth_type and its credentials to learn it from Swift",
            ));
        }
        if key.is_none() && g.swift_temp_url_key_file.is_none() && discovery.is_none() {
            errors.push(at.error_near(
                "glance.swift_temp_url_key",
                &["ipxe.use_swift"],
                "is required when ipxe.use_swift = true: set it, or glance.swift_temp_url_key_file, to the \
                 account's or container's Temp-URL-Key, or set [swift] auth_type and its credentials to \
                 read the account's key from Swift",
            ));
        }
    } else if options.ipxe.tempurl_redirect {
        warnings.push(at.warning(
            "ipxe.tempurl_redirect",
            "is set, but only swift mode ([ipxe] use_swift = true) signs URLs; it has no effect",
        ));
    }
    if !options.ipxe.use_swift && discovery.is_some() {
        warnings.push(at.warning(
            "swift.auth_type",
            "is set, but temp-URL keys are used only in swift mode ([ipxe] use_swift = true)",
        ));
    }
    if key.is_some() && discovery.is_some() {
        warnings.push(at.warning(
            "swift.auth_type",
            "is set together with glance.swift_temp_url_key: the configured key is used and the \
             account's keys are not read",
        ));
    }

    let glance = glance_settings(&options, at, errors, warnings);

    let database = match DatabaseUrl::parse(options.database.connection.expose()) {
        Ok(db) => Some(db),
        Err(reason) => {
            errors.push(at.error("database.connection", format!("invalid value: {reason}")));
            None
        }
    };

    let api = &options.api;
    let api_token = match api.auth_strategy {
        AuthStrategy::Token => match &api.token_file {
            Some(path) => secret_file(at, "api.token_file", path, errors, warnings),
            None => {
                errors.push(at.error_near(
                    "api.token_file",
                    &["api.auth_strategy"],
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
                    errors.push(at.error_near(
                        "api.auth_strategy",
                        &["api.host_ip"],
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
    let c = &options.conductor;
    if c.heartbeat_timeout <= c.heartbeat_interval {
        errors.push(at.error_near(
            "conductor.heartbeat_timeout",
            &["conductor.heartbeat_interval"],
            format!(
                "{} is not more than conductor.heartbeat_interval ({}): a live conductor would \
                 look dead between two heartbeats. Raise the timeout (3 to 6 intervals is usual)",
                c.heartbeat_timeout, c.heartbeat_interval
            ),
        ));
    }
    if api.max_body_size < api.max_document_size {
        errors.push(at.error_near(
            "api.max_body_size",
            &["api.max_document_size"],
            format!(
                "{} is less than api.max_document_size ({}): a node whose driver_info is as large \
                 as allowed could not be sent. Raise max_body_size or lower max_document_size",
                api.max_body_size, api.max_document_size
            ),
        ));
    }
    if api.host_ip == options.httpboot.host_ip && api.port == options.httpboot.port {
        errors.push(at.error_near(
            "httpboot.port",
            &["httpboot.host_ip", "api.port", "api.host_ip"],
            format!(
                "{} is also api.port on the same address; give the boot server its own port",
                api.port
            ),
        ));
    }

    if !options.ipxe.use_swift {
        // the master cache is created at start: refuse a path that cannot be a directory
        let path = &options.pxe.tftp_master_path;
        let mut probe: Option<&Path> = Some(path.as_path());
        while let Some(p) = probe {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    errors.push(at.error(
                        "pxe.tftp_master_path",
                        format!(
                            "{} cannot be the image cache's directory: {} is not a directory",
                            path.display(),
                            p.display()
                        ),
                    ));
                    break;
                }
                Err(_) => probe = p.parent(),
            }
        }
    }
    let templates = templates(&options, at, errors);

    let database = database?;
    let templates = templates?;
    if !errors.is_empty() {
        return None;
    }
    let http_url = match &options.deploy.http_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let b = &options.httpboot;
            format!("http://{}", std::net::SocketAddr::new(b.host_ip, b.port))
        }
    };
    Some(Settings {
        options,
        source,
        swift,
        glance,
        database,
        api_token,
        templates,
        http_url,
    })
}
