//! Glance images (`glance://UUID`, a bare UUID) in swift mode.
//!
//! [`GlanceClient`] reads an image's metadata (`GET /v2/images/{id}`) with a Keystone token
//! ([`super::keystone`]) or without one (`auth_type = none`), retrying 5xx answers and
//! connection errors `[glance] num_retries` times with exponential back-off, renewing the
//! token once on a 401, and reusing the answer about an active image for
//! `[glance] metadata_cache_ttl` seconds by the service's clock. Concurrent prepares of
//! the same image share one request, so a thousand nodes sharing a deploy image cost one
//! Glance request per period instead of one each (Ironic asks once per node).
//!
//! [`GlanceSource`] turns an active image that Glance keeps in Swift into the object path
//! Ironic computes (`tempurl::glance`: `[glance] swift_container`,
//! `swift_store_multiple_containers_seed`, `swift_account`, `swift_api_version`) and proves
//! it with a HEAD through a fresh TempURL on the internal endpoint, like
//! [`super::swift::SwiftSource`]. The snapshot it returns is an ordinary Swift one
//! (`source: Swift`, the object path as `location`), so the boot path never calls Glance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde_json::Value;

use super::keystone::{KeystoneClient, KeystoneError, Token, describe};
use super::swift::{SwiftError, SwiftSource};
use super::{
    BootImages, BootImagesFuture, CheckFuture, ImageDetails, ImageError, ImageRef, ImageSource,
    InspectFuture, ProbeFuture,
};
use crate::clock::Clock;
use crate::code::ErrorCode;
use crate::config::{GlanceAuth, GlanceSettings};
use crate::node::{FieldError, PreparedImage, SourceKind};
use crate::tempurl::glance as paths;

/// First wait before a retry; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Cache entries beyond which stale ones are dropped.
const CACHE_PRUNE_AT: usize = 1024;

/// The wait before retry number `attempt` (0 for the first retry).
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

/// Why an image could not be read or used. Every message names the image; none holds a
/// token or the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlanceError {
    #[error(
        "Glance has no image {id} that {who} may see (404): check the UUID. Glance answers 404 \
         also for another project's private image, which ironboot's user cannot read: make \
         it public, community, or shared with ironboot's project"
    )]
    NotFound { id: String, who: String },
    #[error(
        "Glance refused to show image {id} to {who} (403): its policy denies ironboot's user; \
         give the user a role (reader or member) that may read the image, or share it"
    )]
    Forbidden { id: String, who: String },
    #[error("Glance image {id} is {status}, not active: {}", not_active_hint(.status))]
    NotActive { id: String, status: String },
    #[error(
        "Glance image {id} is not stored in Swift ({detail}): swift mode serves only images \
         that Glance keeps in Swift; upload it to Glance's Swift store, or give an http(s) URL"
    )]
    NotInSwift { id: String, detail: String },
    #[error(
        "Glance image {id} is active, but Swift has no object {object:?} in container \
         {container:?} of account {account} (404 for {path}): the likely cause is that \
         [glance] swift_container ({base:?}) or swift_store_multiple_containers_seed ({seed}) \
         differs from Glance's swift_store_container or swift_store_multiple_containers_seed, \
         or that swift_account is not the account Glance stores images in{hint}"
    )]
    ObjectMissing {
        id: String,
        account: String,
        container: String,
        object: String,
        path: String,
        base: String,
        seed: u8,
        hint: String,
    },
    #[error("Glance is unreachable at {endpoint} for image {id}{}: {detail}", attempts_text(*.attempts))]
    Unreachable {
        id: String,
        endpoint: String,
        detail: String,
        attempts: u32,
    },
    #[error(
        "Glance at {endpoint} did not answer within {secs} s for image {id} ([glance] timeout)"
    )]
    Timeout {
        id: String,
        endpoint: String,
        secs: u64,
    },
    #[error("Glance at {endpoint} answered {status} for image {id}{}", attempts_text(*.attempts))]
    Status {
        id: String,
        endpoint: String,
        status: u16,
        attempts: u32,
    },
    #[error(
        "Glance at {endpoint} refused a new Keystone token for image {id} (401 twice): check \
         that Glance validates tokens with the Keystone of [glance] auth_url"
    )]
    Refused { id: String, endpoint: String },
    #[error("Glance's answer about image {id} cannot be read: {detail}")]
    Invalid { id: String, detail: String },
    #[error("cannot ask Glance about image {id}: {source}")]
    Keystone { id: String, source: KeystoneError },
}

fn attempts_text(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn not_active_hint(status: &str) -> &'static str {
    match status {
        "queued" => "it has no data yet; upload the image, then prepare again",
        "saving" | "uploading" | "importing" => {
            "its data is being uploaded; prepare again when it is active"
        }
        "deactivated" => "an administrator deactivated it; reactivate it or use another image",
        "killed" => "its upload failed; upload it again as a new image",
        "deleted" | "pending_delete" => "it was deleted; use another image",
        _ => "only active images can be booted",
    }
}

impl GlanceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GlanceError::NotFound { .. } => ErrorCode::GlanceImageNotFound,
            GlanceError::Forbidden { .. } => ErrorCode::GlanceImageForbidden,
            GlanceError::NotActive { .. } => ErrorCode::GlanceImageNotActive,
            GlanceError::NotInSwift { .. } => ErrorCode::GlanceImageNotInSwift,
            GlanceError::ObjectMissing { .. } => ErrorCode::GlanceObjectNotFound,
            GlanceError::Unreachable { .. } => ErrorCode::GlanceUnreachable,
            GlanceError::Timeout { .. } => ErrorCode::GlanceTimeout,
            GlanceError::Status { .. }
            | GlanceError::Refused { .. }
            | GlanceError::Invalid { .. } => ErrorCode::GlanceError,
            GlanceError::Keystone { source, .. } => source.code(),
        }
    }
}

/// What ironboot reads of a Glance image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub size: Option<u64>,
    /// md5 hex.
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// Multi-store ids (`stores`, comma-separated in Glance's answer).
    pub stores: Vec<String>,
    /// `direct_url`, when Glance shows it (`show_image_direct_url`).
    pub direct_url: Option<String>,
    /// `locations[].url`, when Glance shows them (`show_multiple_locations`).
    pub locations: Vec<String>,
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub owner: Option<String>,
    pub visibility: Option<String>,
}

/// Where an image's data is, as far as Glance tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Swift,
    /// Glance shows locations, none in Swift.
    Elsewhere(String),
    /// Glance hides its locations and its store names do not say Swift; the HEAD decides.
    Unknown(String),
}

impl ImageInfo {
    /// Reads `GET /v2/images/{id}`'s body.
    pub fn from_json(v: &Value) -> Result<ImageInfo, String> {
        let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let id = text("id").ok_or("no id")?;
        let status = text("status").ok_or("no status")?;
        let size = match &v["size"] {
            Value::Null => None,
            n => Some(
                n.as_u64()
                    .ok_or_else(|| format!("size {n} is not a byte count"))?,
            ),
        };
        let stores = text("stores")
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let locations = v["locations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["url"].as_str().map(str::to_string))
            .collect();
        Ok(ImageInfo {
            id,
            name: text("name"),
            status,
            size,
            checksum: text("checksum"),
            os_hash_algo: text("os_hash_algo"),
            os_hash_value: text("os_hash_value"),
            stores,
            direct_url: text("direct_url"),
            locations,
            kernel_id: text("kernel_id"),
            ramdisk_id: text("ramdisk_id"),
            owner: text("owner"),
            visibility: text("visibility"),
        })
    }

    /// Whether Glance keeps the data in Swift: its locations say so when it shows them
    /// (`swift://`, `swift+https://`, `swift+config://`, …), else its store names.
    pub fn storage(&self) -> Storage {
        let urls: Vec<&str> = self
            .direct_url
            .iter()
            .chain(self.locations.iter())
            .map(String::as_str)
            .collect();
        if !urls.is_empty() {
            if urls.iter().any(|u| u.starts_with("swift")) {
                return Storage::Swift;
            }
            let mut schemes: Vec<&str> = urls
                .iter()
                .map(|u| u.split_once("://").map(|(s, _)| s).unwrap_or("?"))
                .collect();
            schemes.dedup();
            return Storage::Elsewhere(format!(
                "Glance keeps it at {}{}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://…"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if self.stores.is_empty() {
                    String::new()
                } else {
                    format!(", store {}", self.stores.join(", "))
                }
            ));
        }
        if self
            .stores
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("swift"))
        {
            return Storage::Swift;
        }
        Storage::Unknown(if self.stores.is_empty() {
            "Glance shows neither the image's locations nor its stores".into()
        } else {
            format!(
                "Glance lists the image in store {} and hides its locations",
                self.stores.join(", ")
            )
        })
    }
}

/// How requests reach Glance.
#[derive(Debug)]
enum Access {
    Keystone(Box<KeystoneClient>),
    /// `auth_type = none`: no token.
    Direct {
        endpoint: String,
    },
}

/// The cached answer about one image.
#[derive(Debug, Default)]
struct CacheEntry {
    /// Requests finished for this image, so a caller that waited for another's request
    /// takes its answer instead of asking again.
    fetches: AtomicU64,
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    outcome: Option<Result<Arc<ImageInfo>, GlanceError>>,
    /// Clock time (Unix ms) of the outcome.
    at_ms: i64,
}

/// Glance's v2 images API, for image metadata.
#[derive(Debug)]
pub struct GlanceClient {
    http: reqwest::Client,
    access: Access,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    num_retries: u32,
    ttl_ms: i64,
    cache: Mutex<HashMap<String, Arc<CacheEntry>>>,
    /// `GET /v2/images/{id}` requests sent.
    requests: AtomicU64,
}

impl GlanceClient {
    /// A client for the validated settings. Fails only if the TLS settings cannot be used.
    pub fn new(settings: &GlanceSettings, clock: Arc<dyn Clock>) -> Result<GlanceClient, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &settings.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&ca.pem)
                .map_err(|e| format!("glance.cafile {}: {e}", ca.path.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        if settings.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the Glance HTTP client: {e}"))?;
        let access = match &settings.auth {
            GlanceAuth::None => Access::Direct {
                endpoint: super::keystone::normalize_image_endpoint(
                    settings.endpoint_override.as_deref().unwrap_or_default(),
                ),
            },
            GlanceAuth::Password(auth) => Access::Keystone(Box::new(KeystoneClient::new(
                super::keystone::IMAGE,
                http.clone(),
                auth.clone(),
                settings.interfaces.clone(),
                settings.region_name.clone(),
                settings.endpoint_override.clone(),
                clock.clone(),
            ))),
        };
        Ok(GlanceClient {
            http,
            access,
            clock,
            timeout: settings.timeout,
            num_retries: settings.num_retries,
            ttl_ms: i64::try_from(settings.metadata_cache_ttl)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
            cache: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// `GET /v2/images/{id}` requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The Keystone client, when there is one.
    pub fn keystone(&self) -> Option<&KeystoneClient> {
        match &self.access {
            Access::Keystone(k) => Some(k),
            Access::Direct { .. } => None,
        }
    }

    /// Who Glance sees: `project service (user ironboot)`, for messages.
    fn who(&self) -> String {
        match &self.access {
            Access::Keystone(k) => format!("project {} (ironboot's user)", k.project_name()),
            Access::Direct { .. } => "an unauthenticated client".into(),
        }
    }

    /// Checks at start that ironboot can authenticate; returns what it found.
    pub async fn probe(&self) -> Result<String, String> {
        match &self.access {
            Access::Direct { endpoint } => Ok(format!("Glance at {endpoint}, without Keystone")),
            Access::Keystone(k) => match k.token().await {
                Ok(t) => Ok(format!(
                    "Glance at {} as {}; the Keystone token expires at {}",
                    t.endpoint,
                    k.identity(),
                    t.expires_at
                )),
                Err(e) => Err(format!(
                    "Glance images cannot be prepared until this is fixed: {e}"
                )),
            },
        }
    }

    /// The image's metadata: a recent enough answer about an active image, the answer of a
    /// request that was in flight when this call came, or a new request.
    pub async fn show(&self, id: &str) -> Result<Arc<ImageInfo>, GlanceError> {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CACHE_PRUNE_AT && !cache.contains_key(id) {
                let now = self.clock.now_ms();
                let ttl = self.ttl_ms;
                cache.retain(|_, e| match e.slot.try_lock() {
                    Ok(slot) => now.saturating_sub(slot.at_ms) < ttl,
                    Err(_) => true, // in use
                });
            }
            cache.entry(id.to_string()).or_default().clone()
        };
        let seen = entry.fetches.load(Ordering::SeqCst);
        let mut slot = entry.slot.lock().await;
        if entry.fetches.load(Ordering::SeqCst) != seen
            && let Some(outcome) = &slot.outcome
        {
            return outcome.clone();
        }
        let now = self.clock.now_ms();
        if let Some(Ok(info)) = &slot.outcome
            && info.status == "active"
            && now.saturating_sub(slot.at_ms) < self.ttl_ms
        {
            return Ok(info.clone());
        }
        let outcome = self.fetch(id).await.map(Arc::new);
        slot.outcome = Some(outcome.clone());
        slot.at_ms = now;
        entry.fetches.fetch_add(1, Ordering::SeqCst);
        outcome
    }

    /// The endpoint and token for the next request.
    async fn session(&self, id: &str) -> Result<(String, Option<Arc<Token>>), GlanceError> {
        match &self.access {
            Access::Direct { endpoint } => Ok((endpoint.clone(), None)),
            Access::Keystone(k) => {
                let t = k.token().await.map_err(|source| GlanceError::Keystone {
                    id: id.into(),
                    source,
                })?;
                Ok((t.endpoint.clone(), Some(t)))
            }
        }
    }

    /// Where the image's bytes are (`GET /v2/images/{id}/file`) and the `X-Auth-Token`
    /// header to send (marked sensitive), for a download.
    pub async fn file_request(
        &self,
        id: &str,
    ) -> Result<(String, Option<reqwest::header::HeaderValue>), GlanceError> {
        let (endpoint, token) = self.session(id).await?;
        Ok((
            format!("{endpoint}/v2/images/{id}/file"),
            token.and_then(|t| t.header()),
        ))
    }

    /// One `GET /v2/images/{id}`, with retries and one token renewal.
    async fn fetch(&self, id: &str) -> Result<ImageInfo, GlanceError> {
        let (mut endpoint, mut token) = self.session(id).await?;
        let mut attempts = 0u32;
        let mut renewed = false;
        loop {
            attempts += 1;
            let retry_left = attempts <= self.num_retries;
            let mut req = self
                .http
                .get(format!("{endpoint}/v2/images/{id}"))
                .header(ACCEPT, "application/json");
            if let Some(t) = &token
                && let Some(h) = t.header()
            {
                req = req.header("x-auth-token", h);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() && retry_left => {
                    tracing::debug!(image = %id, %endpoint, attempt = attempts, "Glance connection failed ({}); retrying", describe(&e));
                    tokio::time::sleep(backoff(attempts - 1)).await;
                    continue;
                }
                Err(e) if e.is_timeout() && !e.is_connect() => {
                    return Err(GlanceError::Timeout {
                        id: id.into(),
                        endpoint,
                        secs: self.timeout.as_secs(),
                    });
                }
                Err(e) => {
                    return Err(GlanceError::Unreachable {
                        id: id.into(),
                        endpoint,
                        detail: describe(&e),
                        attempts,
                    });
                }
            };
            let status = resp.status();
            match status {
                StatusCode::OK => {
                    let bytes = resp.bytes().await.map_err(|e| {
                        if e.is_timeout() {
                            GlanceError::Timeout {
                                id: id.into(),
                                endpoint: endpoint.clone(),
                                secs: self.timeout.as_secs(),
                            }
                        } else {
                            GlanceError::Unreachable {
                                id: id.into(),
                                endpoint: endpoint.clone(),
                                detail: describe(&e),
                                attempts,
                            }
                        }
                    })?;
                    let body: Value =
                        serde_json::from_slice(&bytes).map_err(|e| GlanceError::Invalid {
                            id: id.into(),
                            detail: format!("not JSON ({e})"),
                        })?;
                    return ImageInfo::from_json(&body).map_err(|detail| GlanceError::Invalid {
                        id: id.into(),
                        detail,
                    });
                }
                StatusCode::UNAUTHORIZED => {
                    let (Access::Keystone(k), Some(rejected), false) =
                        (&self.access, &token, renewed)
                    else {
                        return Err(match &self.access {
                            Access::Keystone(_) => GlanceError::Refused {
                                id: id.into(),
                                endpoint,
                            },
                            Access::Direct { .. } => GlanceError::Status {
                                id: id.into(),
                                endpoint,
                                status: 401,
                                attempts,
                            },
                        });
                    };
                    renewed = true;
                    attempts -= 1; // a renewal is not a retry
                    let fresh = k.renew_after_401(rejected).await.map_err(|source| {
                        GlanceError::Keystone {
                            id: id.into(),
                            source,
                        }
                    })?;
                    endpoint = fresh.endpoint.clone();
                    token = Some(fresh);
                }
                StatusCode::NOT_FOUND => {
                    return Err(GlanceError::NotFound {
                        id: id.into(),
                        who: self.who(),
                    });
                }
                StatusCode::FORBIDDEN => {
                    return Err(GlanceError::Forbidden {
                        id: id.into(),
                        who: self.who(),
                    });
                }
                s if s.is_server_error() && retry_left => {
                    tracing::debug!(image = %id, %endpoint, attempt = attempts, status = s.as_u16(), "Glance answered a server error; retrying");
                    tokio::time::sleep(backoff(attempts - 1)).await;
                }
                s => {
                    return Err(GlanceError::Status {
                        id: id.into(),
                        endpoint,
                        status: s.as_u16(),
                        attempts,
                    });
                }
            }
        }
    }
}

/// Glance references in swift mode.
#[derive(Debug)]
pub struct GlanceSource {
    client: Arc<GlanceClient>,
    /// Signs and checks the objects Glance keeps in Swift.
    swift: SwiftSource,
    /// Takes the images Glance keeps elsewhere (a file store): they are cached and served.
    elsewhere: Option<Arc<super::cached::CachedSource>>,
}

/// The canonical id (lowercase, hyphenated) of a Glance reference, or why it is not one.
pub(crate) fn image_id(field: &str, image: &ImageRef) -> Result<String, ImageError> {
    let ImageRef::Glance(text) = image else {
        return Err(ImageError::Unsupported {
            field: field.into(),
            message: format!("{} is not a Glance reference", image.scheme()),
        });
    };
    let t = text.trim();
    let t = t.strip_prefix("urn:uuid:").unwrap_or(t);
    let t = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(t);
    uuid::Uuid::try_parse(t)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            ImageError::Invalid(FieldError::new(
                field,
                format!(
                    "{text:?} is not a Glance image id; write glance://<UUID> or the bare UUID"
                ),
            ))
        })
}

impl GlanceSource {
    pub fn new(
        client: Arc<GlanceClient>,
        swift: SwiftSource,
        elsewhere: Option<Arc<super::cached::CachedSource>>,
    ) -> GlanceSource {
        GlanceSource {
            client,
            swift,
            elsewhere,
        }
    }

    pub fn client(&self) -> &Arc<GlanceClient> {
        &self.client
    }

    fn error(field: &str, source: GlanceError) -> ImageError {
        ImageError::Glance {
            field: field.into(),
            source: Box::new(source),
        }
    }

    /// Everything `check` and `inspect` do.
    async fn resolve(
        &self,
        field: &str,
        text: &str,
        image: &ImageRef,
        now: i64,
    ) -> Result<ImageDetails, ImageError> {
        let id = image_id(field, image)?;
        let info = self
            .client
            .show(&id)
            .await
            .map_err(|e| Self::error(field, e))?;
        if info.status != "active" {
            return Err(Self::error(
                field,
                GlanceError::NotActive {
                    id: info.id.clone(),
                    status: info.status.clone(),
                },
            ));
        }
        let storage = info.storage();
        if let Storage::Elsewhere(detail) = &storage {
            return Err(Self::error(
                field,
                GlanceError::NotInSwift {
                    id: info.id.clone(),
                    detail: detail.clone(),
                },
            ));
        }
        let s = self.swift.settings();
        let account = self.swift.account(field)?;
        let path = paths::image_path(&s.api_version, &account, &s.container, s.seed, &info.id)
            .ok_or_else(|| {
                Self::error(
                    field,
                    GlanceError::Invalid {
                        id: info.id.clone(),
                        detail: "its id is not a UUID, so it has no Swift object name".into(),
                    },
                )
            })?;
        let object = self
            .swift
            .client()
            .head(&path, now)
            .await
            .map_err(|e| match e {
                SwiftError::NotFound { .. } => Self::error(
                    field,
                    GlanceError::ObjectMissing {
                        id: info.id.clone(),
                        account: account.clone(),
                        container: paths::container_for(&s.container, s.seed, &info.id),
                        object: info.id.clone(),
                        path: path.clone(),
                        base: s.container.clone(),
                        seed: s.seed,
                        hint: match &storage {
                            Storage::Unknown(d) => {
                                format!("; also, {d}, so it may not be in Swift")
                            }
                            _ => String::new(),
                        },
                    },
                ),
                other => ImageError::Swift {
                    field: field.into(),
                    source: other,
                },
            })?;
        if let (Some(seen), Some(expected)) = (object.size, info.size)
            && seen != expected
        {
            tracing::warn!(image = %info.id, %path, swift_bytes = seen, glance_bytes = expected, "the Swift object's size differs from Glance's");
        }
        let mut facts = vec![(
            "image",
            format!(
                "{} (name {:?}, status {}, visibility {}, owner {})",
                info.id,
                info.name.as_deref().unwrap_or(""),
                info.status,
                info.visibility.as_deref().unwrap_or("?"),
                info.owner.as_deref().unwrap_or("?")
            ),
        )];
        if !info.stores.is_empty() {
            facts.push(("stores", info.stores.join(", ")));
        }
        if let Some(size) = object.size {
            facts.push(("swift size", format!("{size} bytes")));
        }
        Ok(ImageDetails {
            prepared: PreparedImage {
                reference: text.to_string(),
                source: SourceKind::Swift,
                location: path,
                checksum: None,
            },
            resolved: "glance → swift".into(),
            size: info.size,
            checksum: info.checksum.as_ref().map(|c| format!("{c} (md5)")),
            hash: info.os_hash_algo.clone().zip(info.os_hash_value.clone()),
            facts,
        })
    }
}

impl ImageSource for GlanceSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Swift
    }

    fn accepts(&self, image: &ImageRef) -> bool {
        matches!(image, ImageRef::Glance(_))
    }

    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            match self.resolve(field, text, image, now).await {
                Ok(d) => Ok(d.prepared),
                // not in Swift: cached and served, where a cache is configured
                Err(ImageError::Glance { source, .. })
                    if matches!(*source, GlanceError::NotInSwift { .. })
                        && self.elsewhere.is_some() =>
                {
                    let cached = self.elsewhere.as_ref().expect("checked above");
                    cached.check(field, text, image, now).await
                }
                Err(e) => Err(e),
            }
        })
    }

    fn inspect<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> InspectFuture<'a> {
        Box::pin(self.resolve(field, text, image, now))
    }

    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError> {
        let id = image_id(field, image)?;
        let s = self.swift.settings();
        let account = self.swift.account(field)?;
        Ok(
            paths::image_path(&s.api_version, &account, &s.container, s.seed, &id)
                .expect("a parsed UUID is UUID-like"),
        )
    }

    fn url(
        &self,
        field: &str,
        location: &str,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        self.swift.url(field, location, expires, out)
    }

    fn boot_images<'a>(&'a self, field: &'a str, image: &'a ImageRef) -> BootImagesFuture<'a> {
        Box::pin(async move {
            let id = image_id(field, image)?;
            let info = self
                .client
                .show(&id)
                .await
                .map_err(|e| Self::error(field, e))?;
            Ok(Some(BootImages {
                kernel: info.kernel_id.clone(),
                ramdisk: info.ramdisk_id.clone(),
                about: format!("Glance image {}", info.id),
            }))
        })
    }

    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(self.client.probe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "9fe391b1-e902-4a31-bba2-467d06c78c41";

    /// Glance 32's answer for an image in its Swift store, as the test services give it.
    fn swift_image() -> Value {
        json!({"name": "probe", "disk_format": "raw", "container_format": "bare", "visibility": "shared",
            "size": 12, "virtual_size": 12, "status": "active", "checksum": "d666f6a13506e48002b9f8a2fec5d3e1",
            "owner": "19de24b4ed2b4925b2f198433793639f", "os_hash_algo": "sha512", "os_hash_value": "4b20",
            "id": ID, "locations": [{"url": format!("swift+config://ref1/glance/{ID}"), "metadata": {"store": "swift"}}],
            "direct_url": format!("swift+config://ref1/glance/{ID}"), "tags": [], "stores": "swift"})
    }

    #[test]
    fn image_metadata_is_read() {
        let info = ImageInfo::from_json(&swift_image()).unwrap();
        assert_eq!(info.id, ID);
        assert_eq!(info.status, "active");
        assert_eq!(info.size, Some(12));
        assert_eq!(
            info.checksum.as_deref(),
            Some("d666f6a13506e48002b9f8a2fec5d3e1")
        );
        assert_eq!(
            (info.os_hash_algo.as_deref(), info.os_hash_value.as_deref()),
            (Some("sha512"), Some("4b20"))
        );
        assert_eq!(info.stores, vec!["swift"]);
        assert_eq!(info.locations.len(), 1);
        assert_eq!(info.storage(), Storage::Swift);
        // a queued image: nulls and no locations
        let queued = ImageInfo::from_json(&json!({"id": ID, "status": "queued", "size": null,
            "checksum": null, "locations": [], "kernel_id": "k", "ramdisk_id": ""}))
        .unwrap();
        assert_eq!((queued.size, queued.checksum), (None, None));
        assert_eq!(queued.kernel_id.as_deref(), Some("k"));
        assert_eq!(queued.ramdisk_id, None, "an empty property is no property");
        assert!(ImageInfo::from_json(&json!({"status": "active"})).is_err());
        assert!(
            ImageInfo::from_json(&json!({"id": ID, "status": "active", "size": "12"})).is_err()
        );
    }

    #[test]
    fn storage_is_told_by_locations_then_stores() {
        let mut info = ImageInfo::from_json(&swift_image()).unwrap();
        for url in [
            "swift://u:k@h/c/o",
            "swift+https://h/v1/c/o",
            "swift+config://ref1/c/o",
        ] {
            info.direct_url = Some(url.into());
            info.locations = vec![];
            assert_eq!(info.storage(), Storage::Swift, "{url}");
        }
        info.direct_url = Some(format!("file:///var/lib/glance/images/{ID}"));
        info.locations = vec![format!("file:///var/lib/glance/images/{ID}")];
        info.stores = vec!["fs".into()];
        let Storage::Elsewhere(d) = info.storage() else {
            panic!()
        };
        assert_eq!(d, "Glance keeps it at file://…, store fs");
        assert!(!d.contains("/var/lib"), "no paths of Glance's host");
        // hidden locations: the store names decide, or nothing does
        info.direct_url = None;
        info.locations.clear();
        info.stores = vec!["fs".into(), "Swift-east".into()];
        assert_eq!(info.storage(), Storage::Swift);
        info.stores = vec!["fs".into()];
        assert!(matches!(info.storage(), Storage::Unknown(d) if d.contains("store fs")));
        info.stores.clear();
        assert!(matches!(info.storage(), Storage::Unknown(_)));
    }

    #[test]
    fn ids_are_canonical_uuids() {
        let f = "driver_info.deploy_kernel";
        let upper = ImageRef::Glance(ID.to_uppercase());
        assert_eq!(image_id(f, &upper).unwrap(), ID);
        let braced = ImageRef::Glance(format!("{{{ID}}}"));
        assert_eq!(image_id(f, &braced).unwrap(), ID);
        let simple = ImageRef::Glance(ID.replace('-', ""));
        assert_eq!(image_id(f, &simple).unwrap(), ID);
        let e = image_id(f, &ImageRef::Glance("kernel".into())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidImageRef);
        assert!(
            e.to_string()
                .starts_with("driver_info.deploy_kernel: \"kernel\" is not a Glance image id"),
            "{e}"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(4), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn errors_name_the_image_and_have_their_own_codes() {
        let cases: Vec<(GlanceError, ErrorCode, &str)> = vec![
            (
                GlanceError::NotFound {
                    id: ID.into(),
                    who: "project service (ironboot's user)".into(),
                },
                ErrorCode::GlanceImageNotFound,
                "another project's private image",
            ),
            (
                GlanceError::Forbidden {
                    id: ID.into(),
                    who: "x".into(),
                },
                ErrorCode::GlanceImageForbidden,
                "(403)",
            ),
            (
                GlanceError::NotActive {
                    id: ID.into(),
                    status: "queued".into(),
                },
                ErrorCode::GlanceImageNotActive,
                "is queued, not active: it has no data yet",
            ),
            (
                GlanceError::NotActive {
                    id: ID.into(),
                    status: "deactivated".into(),
                },
                ErrorCode::GlanceImageNotActive,
                "is deactivated, not active: an administrator deactivated it",
            ),
            (
                GlanceError::NotInSwift {
                    id: ID.into(),
                    detail: "Glance keeps it at file://…".into(),
                },
                ErrorCode::GlanceImageNotInSwift,
                "is not stored in Swift (Glance keeps it at file://…)",
            ),
            (
                GlanceError::ObjectMissing {
                    id: ID.into(),
                    account: "AUTH_test".into(),
                    container: "glance_9fe".into(),
                    object: ID.into(),
                    path: format!("/v1/AUTH_test/glance_9fe/{ID}"),
                    base: "glance".into(),
                    seed: 3,
                    hint: String::new(),
                },
                ErrorCode::GlanceObjectNotFound,
                "no object \"9fe391b1-e902-4a31-bba2-467d06c78c41\" in container \"glance_9fe\"",
            ),
            (
                GlanceError::Unreachable {
                    id: ID.into(),
                    endpoint: "http://g".into(),
                    detail: "connection failed".into(),
                    attempts: 3,
                },
                ErrorCode::GlanceUnreachable,
                "(after 3 attempts): connection failed",
            ),
            (
                GlanceError::Timeout {
                    id: ID.into(),
                    endpoint: "http://g".into(),
                    secs: 2,
                },
                ErrorCode::GlanceTimeout,
                "did not answer within 2 s",
            ),
            (
                GlanceError::Status {
                    id: ID.into(),
                    endpoint: "http://g".into(),
                    status: 503,
                    attempts: 1,
                },
                ErrorCode::GlanceError,
                "answered 503 for image",
            ),
            (
                GlanceError::Refused {
                    id: ID.into(),
                    endpoint: "http://g".into(),
                },
                ErrorCode::GlanceError,
                "401 twice",
            ),
            (
                GlanceError::Keystone {
                    id: ID.into(),
                    source: KeystoneError::Unreachable {
                        url: "http://ks".into(),
                        detail: "timed out".into(),
                    },
                },
                ErrorCode::KeystoneUnreachable,
                "Keystone is unreachable at http://ks",
            ),
        ];
        for (e, code, fragment) in cases {
            let text = e.to_string();
            assert_eq!(e.code(), code, "{text}");
            assert!(text.contains(ID), "names the image: {text}");
            assert!(text.contains(fragment), "{fragment:?} in {text}");
        }
    }
}
