//! Keystone v3 password authentication, as keystoneauth's `password` plugin does it for
//! Ironic's `[glance]` group: one project-scoped token, kept and renewed before it expires,
//! and the image endpoint chosen from the token's catalog.
//!
//! * `auth_url` may name the v3 API (`http://ks:5000/v3`) or Keystone's root
//!   (`http://ks:5000`); the root answers `300 Multiple Choices` with its versions, and the
//!   v3 one's `self` link is used ([`parse_versions`]).
//! * `POST {v3}/auth/tokens` with the user and project by name and domain name; the token is
//!   the `X-Subject-Token` header, its lifetime `expires_at - issued_at` of the body.
//! * The token is renewed when the service's [`Clock`] reaches
//!   `received + lifetime - margin`, the margin being `min(120 s, lifetime / 4)`
//!   (keystoneauth renews 120 s before expiry, which would renew a 60 s token on every use).
//!   Measuring the lifetime on our own clock from the moment the token arrived makes a skew
//!   between the two clocks harmless.
//! * A 401 from Glance renews the token once ([`KeystoneClient::renew_after_401`]); callers
//!   that saw the same rejected token share one renewal.
//! * The image endpoint is `endpoint_override`, else the catalog's `image` service endpoint
//!   of the first of `valid_interfaces` that has one, in `region_name` ([`select_endpoint`]).
//!
//! The password and tokens are [`Secret`]s: they appear in no error, log line or `Debug`
//! output. Request bodies that hold the password are never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::code::ErrorCode;
use crate::config::{Interface, PasswordAuth, Secret};

/// Longest margin before expiry at which a token is renewed (keystoneauth's).
const MAX_RENEW_MARGIN_SECS: i64 = 120;

/// Why no token (or no image endpoint) could be had. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoneError {
    #[error("Keystone is unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "Keystone at {url} refused the credentials of user {user:?} (domain {user_domain:?}) for \
         project {project:?} (domain {project_domain:?}) with {status}: check [{section}] username, \
         password (or password_file), project_name, user_domain_name and project_domain_name, \
         and that the user has a role in the project"
    )]
    AuthFailed {
        section: &'static str,
        url: String,
        user: String,
        user_domain: String,
        project: String,
        project_domain: String,
        status: u16,
    },
    #[error("Keystone at {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("no {service_type} endpoint in Keystone's catalog: {detail}")]
    NoEndpoint {
        service_type: &'static str,
        detail: String,
    },
}

impl KeystoneError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KeystoneError::Unreachable { .. } => ErrorCode::KeystoneUnreachable,
            KeystoneError::AuthFailed { .. } => ErrorCode::KeystoneAuthFailed,
            KeystoneError::Protocol { .. } | KeystoneError::NoEndpoint { .. } => {
                ErrorCode::KeystoneError
            }
        }
    }
}

/// A project-scoped token and what came with it.
#[derive(Debug)]
pub struct Token {
    pub value: Secret,
    /// The project it is scoped to (for messages and Swift account names).
    pub project_id: String,
    /// The service's URL: `endpoint_override` or the catalog's; Glance's without a trailing
    /// `/` or `/v2`.
    pub endpoint: String,
    /// Keystone's `expires_at`, as Keystone wrote it.
    pub expires_at: String,
    /// Our clock's time (Unix ms) from which the token is renewed before it is used.
    pub renew_at_ms: i64,
}

impl Token {
    /// The `X-Auth-Token` header value, marked sensitive so it is never printed.
    pub fn header(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(self.value.expose()).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// The kept token, or why the last request for one failed.
#[derive(Debug, Default)]
struct TokenSlot {
    token: Option<Arc<Token>>,
    failure: Option<KeystoneError>,
}

/// One catalog endpoint, as `select_endpoint` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEndpoint {
    pub service_type: String,
    pub interface: String,
    pub region: Option<String>,
    pub url: String,
}

/// Reads the `catalog` array of a token body.
pub fn parse_catalog(catalog: &Value) -> Vec<CatalogEndpoint> {
    let mut out = Vec::new();
    for service in catalog.as_array().into_iter().flatten() {
        let Some(service_type) = service["type"].as_str() else {
            continue;
        };
        for ep in service["endpoints"].as_array().into_iter().flatten() {
            let (Some(interface), Some(url)) = (ep["interface"].as_str(), ep["url"].as_str())
            else {
                continue;
            };
            let region = ep["region_id"]
                .as_str()
                .or_else(|| ep["region"].as_str())
                .map(str::to_string);
            out.push(CatalogEndpoint {
                service_type: service_type.to_string(),
                interface: interface.to_string(),
                region,
                url: url.to_string(),
            });
        }
    }
    out
}

/// A Glance URL without a trailing `/` or API version (`…/v2`), so `/v2/images/…` can be
/// appended.
pub fn normalize_image_endpoint(url: &str) -> String {
    let mut u = url.trim_end_matches('/');
    for suffix in ["/v2", "/v2.0"] {
        if let Some(stripped) = u.strip_suffix(suffix) {
            u = stripped.trim_end_matches('/');
        }
    }
    u.to_string()
}

/// The endpoint of `service_type` for the first of `interfaces` that has one, in `region`
/// when one is given. Without a region, several different URLs for the chosen interface
/// are ambiguous.
pub fn select_endpoint(
    catalog: &[CatalogEndpoint],
    service: &CatalogService,
    interfaces: &[Interface],
    region: Option<&str>,
) -> Result<String, String> {
    let service_type = service.service_type;
    let section = service.section;
    let normalize = |url: &str| {
        if service.strip_version {
            normalize_image_endpoint(url)
        } else {
            url.trim_end_matches('/').to_string()
        }
    };
    let of_type: Vec<&CatalogEndpoint> = catalog
        .iter()
        .filter(|e| e.service_type == service_type)
        .collect();
    if of_type.is_empty() {
        return Err(format!(
            "the catalog has no {service_type:?} service; register {} in Keystone{}",
            service.name,
            if service.strip_version {
                ", or set [glance] endpoint_override"
            } else {
                ""
            }
        ));
    }
    for interface in interfaces {
        let matches: Vec<&CatalogEndpoint> = of_type
            .iter()
            .copied()
            .filter(|e| e.interface == interface.as_str())
            .filter(|e| region.is_none_or(|r| e.region.as_deref() == Some(r)))
            .collect();
        let Some(first) = matches.first() else {
            continue;
        };
        let url = normalize(&first.url);
        if region.is_none() && matches.iter().any(|e| normalize(&e.url) != url) {
            let regions: Vec<String> = matches
                .iter()
                .map(|e| e.region.clone().unwrap_or_else(|| "<none>".into()))
                .collect();
            return Err(format!(
                "the catalog has {} {interface} {service_type} endpoints (regions {}); set \
                 [{section}] region_name",
                matches.len(),
                regions.join(", ")
            ));
        }
        return Ok(url);
    }
    let have: Vec<String> = of_type
        .iter()
        .map(|e| {
            format!(
                "{} in {}",
                e.interface,
                e.region.as_deref().unwrap_or("<no region>")
            )
        })
        .collect();
    Err(format!(
        "none of the {service_type} endpoints matches [{section}] valid_interfaces = {}{} (the \
         catalog has: {})",
        interfaces
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(","),
        region
            .map(|r| format!(" and region_name = {r}"))
            .unwrap_or_default(),
        have.join("; ")
    ))
}

/// The v3 URL in a version document: `{"versions": {"values": [...]}}` (the root's `300`),
/// `{"versions": [...]}` or `{"version": {...}}` (`GET /v3`). Takes the `self` link of the
/// first `v3…` version that is not deprecated, without its trailing `/`.
pub fn parse_versions(body: &Value) -> Result<String, String> {
    let list: Vec<&Value> = if let Some(values) = body["versions"]["values"].as_array() {
        values.iter().collect()
    } else if let Some(values) = body["versions"].as_array() {
        values.iter().collect()
    } else if body["version"].is_object() {
        vec![&body["version"]]
    } else {
        return Err("the answer is not a Keystone version document".into());
    };
    let mut seen = Vec::new();
    for v in &list {
        let id = v["id"].as_str().unwrap_or_default();
        let status = v["status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        seen.push(format!("{id} ({status})"));
        if !(id == "v3" || id.starts_with("v3.")) || status == "deprecated" {
            continue;
        }
        let href = v["links"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["rel"] == "self")
            .and_then(|l| l["href"].as_str());
        if let Some(href) = href {
            return Ok(href.trim_end_matches('/').to_string());
        }
    }
    Err(format!(
        "Keystone offers no usable v3 API (versions: {}); ironboot speaks Identity v3 only",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}

/// Whether `auth_url` already names a version: its last path segment is `v3`, `v3.x` or
/// `v2.0`.
fn versioned(auth_url: &str) -> Option<&str> {
    let last = auth_url.trim_end_matches('/').rsplit('/').next()?;
    let is_version = last.len() >= 2
        && last.starts_with('v')
        && last[1..].chars().all(|c| c.is_ascii_digit() || c == '.');
    is_version.then_some(last)
}

/// Keystone's timestamps, `2026-11-30T11:10:51.000000Z` (also without the fraction, or
/// with `+00:00`), as Unix seconds.
pub fn parse_keystone_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .unwrap_or(t);
    let t = t.split_once('.').map(|(whole, _)| whole).unwrap_or(t);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let dt = time::PrimitiveDateTime::parse(t, format).ok()?;
    Some(dt.assume_utc().unix_timestamp())
}

/// When to renew a token received at `now_ms` with a lifetime of `lifetime` seconds.
pub fn renew_at_ms(now_ms: i64, lifetime: i64) -> i64 {
    let lifetime = lifetime.max(0);
    let margin = (lifetime / 4).min(MAX_RENEW_MARGIN_SECS);
    now_ms.saturating_add((lifetime - margin).saturating_mul(1000))
}

/// A reqwest error without the URL, as `describe` in `swift` does.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    super::swift::describe(e)
}

/// The service a [`KeystoneClient`] finds in the catalog, and the config section its
/// options live in (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogService {
    pub section: &'static str,
    pub service_type: &'static str,
    /// Its name in messages.
    pub name: &'static str,
    /// Glance's URLs lose their version; Swift's keep their account.
    pub strip_version: bool,
}

/// Glance, for `[glance]`.
pub const IMAGE: CatalogService = CatalogService {
    section: "glance",
    service_type: "image",
    name: "Glance",
    strip_version: true,
};

/// Swift, for `[swift]`.
pub const OBJECT_STORE: CatalogService = CatalogService {
    section: "swift",
    service_type: "object-store",
    name: "Swift",
    strip_version: false,
};

/// Keystone v3 password authentication with one kept token.
#[derive(Debug)]
pub struct KeystoneClient {
    service: CatalogService,
    http: reqwest::Client,
    auth: PasswordAuth,
    interfaces: Vec<Interface>,
    region: Option<String>,
    endpoint_override: Option<String>,
    clock: Arc<dyn Clock>,
    /// The token in use; its lock is held while a new one is fetched, so concurrent
    /// callers wait for one request instead of making their own.
    token: tokio::sync::Mutex<TokenSlot>,
    /// Authentications finished (or failed), so that callers that waited for another's
    /// take its outcome instead of asking Keystone again.
    attempts: AtomicU64,
    /// The v3 URL, discovered once.
    v3: tokio::sync::OnceCell<String>,
    /// Token requests made (sent, whatever the answer).
    requests: AtomicU64,
}

impl KeystoneClient {
    pub fn new(
        service: CatalogService,
        http: reqwest::Client,
        auth: PasswordAuth,
        interfaces: Vec<Interface>,
        region: Option<String>,
        endpoint_override: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> KeystoneClient {
        KeystoneClient {
            service,
            http,
            auth,
            interfaces,
            region,
            endpoint_override,
            clock,
            token: tokio::sync::Mutex::new(TokenSlot::default()),
            attempts: AtomicU64::new(0),
            v3: tokio::sync::OnceCell::new(),
            requests: AtomicU64::new(0),
        }
    }

    /// Who ironboot authenticates as, for messages: `user@project`.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.auth.username, self.auth.project_name)
    }

    pub fn project_name(&self) -> &str {
        &self.auth.project_name
    }

    /// How many token requests were sent.
    pub fn token_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A valid token: the kept one until its renewal time, else a new one. Callers that
    /// waited while another caller asked Keystone share its answer, error included.
    pub async fn token(&self) -> Result<Arc<Token>, KeystoneError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slot = self.token.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen
            && let Some(e) = &slot.failure
        {
            return Err(e.clone());
        }
        if let Some(t) = slot.token.as_ref()
            && self.clock.now_ms() < t.renew_at_ms
        {
            return Ok(t.clone());
        }
        self.renew(&mut slot).await
    }

    /// Asks Keystone for a token and keeps the outcome.
    async fn renew(&self, slot: &mut TokenSlot) -> Result<Arc<Token>, KeystoneError> {
        let outcome = self.authenticate().await.map(Arc::new);
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match &outcome {
            Ok(t) => {
                slot.token = Some(t.clone());
                slot.failure = None;
            }
            Err(e) => {
                slot.token = None;
                slot.failure = Some(e.clone());
            }
        }
        outcome
    }

    /// A new token after Glance refused `rejected` (401): renews once, unless another
    /// caller already replaced that token.
    pub async fn renew_after_401(
        &self,
        rejected: &Arc<Token>,
    ) -> Result<Arc<Token>, KeystoneError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slot = self.token.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen
            && let Some(e) = &slot.failure
        {
            return Err(e.clone());
        }
        if let Some(t) = slot.token.as_ref()
            && !Arc::ptr_eq(t, rejected)
            && self.clock.now_ms() < t.renew_at_ms
        {
            return Ok(t.clone());
        }
        tracing::info!(
            user = %self.identity(),
            "{} refused the Keystone token (401); getting a new one",
            self.service.name
        );
        self.renew(&mut slot).await
    }

    /// The v3 URL: `auth_url` when it names v3, else found by version discovery.
    async fn v3_url(&self) -> Result<String, KeystoneError> {
        self.v3
            .get_or_try_init(|| async {
                let url = self.auth.auth_url.trim_end_matches('/').to_string();
                match versioned(&url) {
                    Some(v) if v == "v3" || v.starts_with("v3.") => return Ok(url),
                    Some(v) => {
                        return Err(KeystoneError::Protocol {
                            url: url.clone(),
                            detail: format!(
                                "[{}] auth_url names Identity {v}; ironboot speaks v3 only: \
                                 give the v3 URL or Keystone's root URL",
                                self.service.section
                            ),
                        });
                    }
                    None => {}
                }
                self.discover(&url).await
            })
            .await
            .cloned()
    }

    async fn discover(&self, root: &str) -> Result<String, KeystoneError> {
        let resp = self
            .http
            .get(format!("{root}/"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| KeystoneError::Unreachable {
                url: root.to_string(),
                detail: describe(&e),
            })?;
        let status = resp.status();
        if !(status == StatusCode::MULTIPLE_CHOICES || status.is_success()) {
            return Err(KeystoneError::Protocol {
                url: root.to_string(),
                detail: format!(
                    "version discovery answered {status}, not 300 with Keystone's versions: is \
                     [{}] auth_url Keystone's URL?",
                    self.service.section
                ),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| KeystoneError::Unreachable {
            url: root.to_string(),
            detail: describe(&e),
        })?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| KeystoneError::Protocol {
            url: root.to_string(),
            detail: format!("version discovery did not answer JSON ({e})"),
        })?;
        let v3 = parse_versions(&body).map_err(|detail| KeystoneError::Protocol {
            url: root.to_string(),
            detail,
        })?;
        tracing::debug!(auth_url = %root, v3 = %v3, "Keystone version discovery");
        Ok(v3)
    }

    /// Asks Keystone for a new token.
    async fn authenticate(&self) -> Result<Token, KeystoneError> {
        let v3 = self.v3_url().await?;
        let url = format!("{v3}/auth/tokens");
        let a = &self.auth;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": a.username,
                "domain": {"name": a.user_domain_name},
                "password": a.password.expose(),
            }}},
            "scope": {"project": {"name": a.project_name, "domain": {"name": a.project_domain_name}}},
        }});
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent_at = self.clock.now_ms();
        let resp = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| KeystoneError::Unreachable {
                url: v3.clone(),
                detail: describe(&e),
            })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            tracing::debug!(url = %v3, %status, user = %self.identity(), "Keystone refused the credentials");
            return Err(KeystoneError::AuthFailed {
                section: self.service.section,
                url: v3,
                user: a.username.clone(),
                user_domain: a.user_domain_name.clone(),
                project: a.project_name.clone(),
                project_domain: a.project_domain_name.clone(),
                status: status.as_u16(),
            });
        }
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(KeystoneError::Protocol {
                url: v3,
                detail: format!("POST /auth/tokens answered {status}"),
            });
        }
        let protocol = |detail: String| KeystoneError::Protocol {
            url: v3.clone(),
            detail,
        };
        let value = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                protocol("the answer to POST /auth/tokens has no X-Subject-Token header".into())
            })?;
        let bytes = resp.bytes().await.map_err(|e| KeystoneError::Unreachable {
            url: v3.clone(),
            detail: describe(&e),
        })?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| protocol(format!("the token body is not JSON ({e})")))?;
        let token = &body["token"];
        let expires_at = token["expires_at"]
            .as_str()
            .ok_or_else(|| protocol("the token has no expires_at".into()))?
            .to_string();
        let expires = parse_keystone_time(&expires_at)
            .ok_or_else(|| protocol(format!("cannot read expires_at {expires_at:?}")))?;
        // The lifetime by Keystone's own clock; without issued_at, by ours.
        let lifetime = match token["issued_at"].as_str().and_then(parse_keystone_time) {
            Some(issued) => expires - issued,
            None => expires - sent_at.div_euclid(1000),
        };
        let project_id = token["project"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let endpoint = match &self.endpoint_override {
            Some(url) => normalize_image_endpoint(url),
            None => select_endpoint(
                &parse_catalog(&token["catalog"]),
                &self.service,
                &self.interfaces,
                self.region.as_deref(),
            )
            .map_err(|detail| KeystoneError::NoEndpoint {
                service_type: self.service.service_type,
                detail,
            })?,
        };
        let renew_at_ms = renew_at_ms(sent_at, lifetime);
        tracing::info!(
            user = %self.identity(),
            project_id = %project_id,
            expires_at = %expires_at,
            lifetime_s = lifetime,
            endpoint = %endpoint,
            service = self.service.name,
            "Keystone token obtained"
        );
        Ok(Token {
            value,
            project_id,
            endpoint,
            expires_at,
            renew_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(t: &str, i: &str, r: Option<&str>, url: &str) -> CatalogEndpoint {
        CatalogEndpoint {
            service_type: t.into(),
            interface: i.into(),
            region: r.map(str::to_string),
            url: url.into(),
        }
    }

    #[test]
    fn versions_from_the_root_300_and_from_v3() {
        // Keystone 30's root, as it answers with 300
        let root: Value = serde_json::from_str(
            r#"{"versions": {"values": [{"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
               "links": [{"rel": "self", "href": "http://127.0.0.1:29357/v3/"}],
               "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(parse_versions(&root).unwrap(), "http://127.0.0.1:29357/v3");
        // GET /v3
        let v3 = json!({"version": {"id": "v3.14", "status": "stable",
            "links": [{"rel": "self", "href": "https://ks.example.com/identity/v3/"}]}});
        assert_eq!(
            parse_versions(&v3).unwrap(),
            "https://ks.example.com/identity/v3"
        );
        // an old Keystone with v2.0 first, and a deprecated v3 before a current one
        let mixed = json!({"versions": {"values": [
            {"id": "v2.0", "status": "deprecated", "links": [{"rel": "self", "href": "http://ks/v2.0/"}]},
            {"id": "v3.0", "status": "deprecated", "links": [{"rel": "self", "href": "http://ks/old/"}]},
            {"id": "v3.10", "status": "CURRENT", "links": [{"rel": "describedby", "href": "http://docs"}, {"rel": "self", "href": "http://ks/v3/"}]},
        ]}});
        assert_eq!(parse_versions(&mixed).unwrap(), "http://ks/v3");
        let only_v2 = json!({"versions": [{"id": "v2.0", "status": "stable", "links": [{"rel": "self", "href": "http://ks/v2.0/"}]}]});
        let e = parse_versions(&only_v2).unwrap_err();
        assert!(e.contains("v2.0 (stable)") && e.contains("v3 only"), "{e}");
        assert!(parse_versions(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn auth_urls_that_name_a_version() {
        assert_eq!(versioned("http://ks:5000/v3"), Some("v3"));
        assert_eq!(versioned("http://ks:5000/identity/v3/"), Some("v3"));
        assert_eq!(versioned("http://ks:5000/v3.14"), Some("v3.14"));
        assert_eq!(versioned("http://ks:5000/v2.0"), Some("v2.0"));
        assert_eq!(versioned("http://ks:5000"), None);
        assert_eq!(versioned("http://ks:5000/identity"), None);
        assert_eq!(versioned("http://ks:5000/vault"), None);
    }

    #[test]
    fn catalog_endpoints_in_interface_order_and_region() {
        let token: Value = json!({"catalog": [
            {"type": "identity", "name": "keystone", "endpoints": [
                {"interface": "internal", "region_id": "RegionOne", "url": "http://ks/v3"}]},
            {"type": "image", "name": "glance", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://public:9292/"},
                {"interface": "internal", "region_id": "RegionOne", "url": "http://internal:9292/v2/"},
                {"interface": "internal", "region_id": "RegionTwo", "url": "http://two:9292"},
                {"interface": "admin", "region": "RegionOne", "url": "http://admin:9292"}]}]});
        let catalog = parse_catalog(&token["catalog"]);
        assert_eq!(catalog.len(), 5);
        assert_eq!(
            catalog[1],
            ep("image", "public", Some("RegionOne"), "http://public:9292/")
        );
        assert_eq!(
            catalog[4],
            ep("image", "admin", Some("RegionOne"), "http://admin:9292")
        );
        use Interface::*;
        let pick = |i: &[Interface], r: Option<&str>| select_endpoint(&catalog, &IMAGE, i, r);
        assert_eq!(
            pick(&[Internal, Public], Some("RegionOne")).unwrap(),
            "http://internal:9292"
        );
        assert_eq!(
            pick(&[Public, Internal], Some("RegionOne")).unwrap(),
            "http://public:9292"
        );
        assert_eq!(
            pick(&[Internal], Some("RegionTwo")).unwrap(),
            "http://two:9292"
        );
        // the deprecated `region` key counts when region_id is missing
        assert_eq!(
            pick(&[Admin], Some("RegionOne")).unwrap(),
            "http://admin:9292"
        );
        // no region: two different internal URLs are ambiguous; public is unique
        let e = pick(&[Internal, Public], None).unwrap_err();
        assert!(
            e.contains("2 internal image endpoints") && e.contains("region_name"),
            "{e}"
        );
        assert_eq!(pick(&[Public], None).unwrap(), "http://public:9292");
        // nothing matches: the message lists what there is
        let e = pick(&[Public], Some("RegionTwo")).unwrap_err();
        assert!(
            e.contains("valid_interfaces = public and region_name = RegionTwo")
                && e.contains("internal in RegionTwo"),
            "{e}"
        );
        let e = select_endpoint(&catalog, &OBJECT_STORE, &[Public], None).unwrap_err();
        assert!(e.contains("no \"object-store\" service"), "{e}");
    }

    #[test]
    fn image_endpoints_lose_their_version() {
        assert_eq!(normalize_image_endpoint("http://g:9292"), "http://g:9292");
        assert_eq!(normalize_image_endpoint("http://g:9292/"), "http://g:9292");
        assert_eq!(
            normalize_image_endpoint("http://g/image/v2/"),
            "http://g/image"
        );
        assert_eq!(normalize_image_endpoint("http://g/v2.0"), "http://g");
        assert_eq!(normalize_image_endpoint("http://g/v21"), "http://g/v21");
    }

    #[test]
    fn keystone_times_and_the_renewal_margin() {
        assert_eq!(
            parse_keystone_time("2026-11-30T11:10:51.000000Z"),
            Some(1_796_037_051)
        );
        assert_eq!(
            parse_keystone_time("2026-11-30T11:10:51Z"),
            Some(1_796_037_051)
        );
        assert_eq!(
            parse_keystone_time("2026-11-30T11:10:51+00:00"),
            Some(1_796_037_051)
        );
        assert_eq!(parse_keystone_time("yesterday"), None);
        // an hour: renewed 120 s early; a minute: a quarter early; never negative
        assert_eq!(renew_at_ms(1_000, 3600), 1_000 + 3_480_000);
        assert_eq!(renew_at_ms(1_000, 60), 1_000 + 45_000);
        assert_eq!(renew_at_ms(1_000, 480), 1_000 + 360_000);
        assert_eq!(renew_at_ms(1_000, -5), 1_000);
    }

    #[test]
    fn errors_name_the_user_and_never_hold_the_password() {
        let e = KeystoneError::AuthFailed {
            section: "glance",
            url: "http://ks/v3".into(),
            user: "ironboot".into(),
            user_domain: "Default".into(),
            project: "service".into(),
            project_domain: "Default".into(),
            status: 401,
        };
        let text = e.to_string();
        assert!(
            text.contains("refused the credentials of user \"ironboot\"")
                && text.contains("project \"service\"")
                && text.contains("with 401"),
            "{text}"
        );
        assert_eq!(e.code(), ErrorCode::KeystoneAuthFailed);
        let auth = PasswordAuth {
            auth_url: "http://ks".into(),
            username: "u".into(),
            password: Secret::new("hunter2"),
            project_name: "p".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        };
        let client = KeystoneClient::new(
            IMAGE,
            reqwest::Client::new(),
            auth,
            vec![Interface::Public],
            None,
            None,
            Arc::new(crate::clock::ManualClock::new(0)),
        );
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let token = Token {
            value: Secret::new("gAAAAAtoken"),
            project_id: "p".into(),
            endpoint: "http://g".into(),
            expires_at: String::new(),
            renew_at_ms: 0,
        };
        assert!(!format!("{token:?}").contains("gAAAAA"));
        assert!(!format!("{:?}", token.header().unwrap()).contains("gAAAAA"));
    }
}
