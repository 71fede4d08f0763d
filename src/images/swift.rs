//! The conductor's own requests to Swift: a HEAD of each object through a freshly signed
//! TempURL, on the internal endpoint, before a node is told to boot from it.
//!
//! The HEAD uses a GET signature (Swift accepts HEAD for GET, PUT and POST signatures), so a
//! 200 proves exactly what the node will need: the object exists and the key, digest and
//! path rules are right.

use std::sync::Arc;
use std::time::Duration;

use super::swift_keys::SwiftKeys;
use super::{CheckFuture, ImageDetails, ImageError, ImageRef, ImageSource, InspectFuture};
use crate::code::ErrorCode;
use crate::config::SwiftSettings;
use crate::node::{PreparedImage, SourceKind};
use crate::tempurl::{Method, Request};

/// What Swift said about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// Why an object could not be checked. Messages name the object, never the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwiftError {
    #[error("Swift is unreachable at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("object {path} does not exist in Swift (404)")]
    NotFound { path: String },
    #[error(
        "Swift refused the temporary URL for {path} (401): glance.swift_temp_url_key does not match the \
         account's or container's Temp-URL-Key, or Swift does not allow the {digest} digest"
    )]
    Refused { path: String, digest: String },
    #[error("Swift answered {status} for {path}")]
    Status { path: String, status: u16 },
    #[error("no Swift temp-URL key is known yet: {detail}")]
    KeyUnknown { detail: String },
    #[error(
        "Swift account {account} has neither Temp-URL-Key-2 nor Temp-URL-Key; set one (swift \
         post -m Temp-URL-Key:<key>), or set [glance] swift_temp_url_key"
    )]
    NoKey { account: String },
    #[error(
        "{url} refused the credentials of {user:?} with {status}: check [swift] username and \
         password (or password_file)"
    )]
    AuthRefused {
        url: String,
        user: String,
        status: u16,
    },
    #[error("Swift's auth at {url}: {detail}")]
    AuthProtocol { url: String, detail: String },
    #[error("[swift] Keystone: {0}")]
    Keystone(Box<super::keystone::KeystoneError>),
}

impl SwiftError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SwiftError::Unreachable { .. } => ErrorCode::SwiftUnreachable,
            SwiftError::NotFound { .. } => ErrorCode::ImageNotFound,
            SwiftError::Refused { .. } => ErrorCode::SwiftRefusedTempurl,
            SwiftError::Status { .. } | SwiftError::AuthProtocol { .. } => ErrorCode::SwiftError,
            SwiftError::KeyUnknown { .. } | SwiftError::NoKey { .. } => {
                ErrorCode::SwiftKeyUnavailable
            }
            SwiftError::AuthRefused { .. } => ErrorCode::SwiftAuthFailed,
            SwiftError::Keystone(e) => match e.code() {
                ErrorCode::KeystoneAuthFailed => ErrorCode::SwiftAuthFailed,
                other => other,
            },
        }
    }

    pub(crate) fn keystone(e: super::keystone::KeystoneError) -> SwiftError {
        SwiftError::Keystone(Box::new(e))
    }
}

/// A Swift client bound to the internal endpoint and the signing key.
#[derive(Debug, Clone)]
pub struct SwiftClient {
    http: reqwest::Client,
    settings: SwiftSettings,
    keys: Arc<SwiftKeys>,
}

impl SwiftClient {
    pub fn new(settings: SwiftSettings, keys: Arc<SwiftKeys>, timeout: Duration) -> SwiftClient {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with rustls builds");
        SwiftClient {
            http,
            settings,
            keys,
        }
    }

    /// The unencoded object path of `CONTAINER/OBJECT` in `account`.
    pub fn object_path(
        settings: &SwiftSettings,
        account: &str,
        container: &str,
        object: &str,
    ) -> String {
        format!("/{}/{account}/{container}/{object}", settings.api_version)
    }

    /// HEADs an object through a GET TempURL valid for a minute.
    pub async fn head(&self, path: &str, now: i64) -> Result<ObjectInfo, SwiftError> {
        let get = Method::get();
        let mut req = Request::new(&get, path, now + 60);
        req.ip_range = None; // the conductor is not on the nodes' network
        let keys = self.keys.current()?;
        let url = keys
            .signer
            .sign(&req)
            .map_err(|e| SwiftError::Status {
                path: format!("{path} ({e})"),
                status: 0,
            })?
            .to_url(&self.settings.internal_endpoint);
        let resp = self
            .http
            .head(&url)
            .send()
            .await
            .map_err(|e| SwiftError::Unreachable {
                endpoint: self.settings.internal_endpoint.to_string(),
                detail: describe(&e),
            })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(ObjectInfo {
                size: resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok()),
                etag: resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim_matches('"').to_string()),
            }),
            404 => Err(SwiftError::NotFound { path: path.into() }),
            401 | 403 => Err(SwiftError::Refused {
                path: path.into(),
                digest: self.settings.digest.to_string(),
            }),
            _ => Err(SwiftError::Status {
                path: path.into(),
                status,
            }),
        }
    }
}

/// A reqwest error without the URL (which holds a signature).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// `swift://CONTAINER/OBJECT` references in `[glance] swift_account`: prepare HEADs the
/// object through a fresh TempURL on the internal endpoint; render signs a GET TempURL on
/// the node-facing endpoint.
#[derive(Debug)]
pub struct SwiftSource {
    settings: SwiftSettings,
    keys: Arc<SwiftKeys>,
    client: SwiftClient,
}

impl SwiftSource {
    pub fn new(settings: SwiftSettings, keys: Arc<SwiftKeys>, timeout: Duration) -> SwiftSource {
        SwiftSource {
            client: SwiftClient::new(settings.clone(), keys.clone(), timeout),
            keys,
            settings,
        }
    }

    /// The key and account in use.
    pub fn keys(&self) -> &Arc<SwiftKeys> {
        &self.keys
    }

    /// The account images are in: configured, or read from Swift.
    pub fn account(&self, field: &str) -> Result<String, ImageError> {
        match &self.settings.configured_account {
            Some(a) => Ok(a.clone()),
            None => self
                .keys
                .current()
                .map(|k| k.account.clone())
                .map_err(|source| ImageError::Swift {
                    field: field.into(),
                    source,
                }),
        }
    }

    /// The client of the conductor's own checks (HEAD on the internal endpoint).
    pub fn client(&self) -> &SwiftClient {
        &self.client
    }

    pub fn settings(&self) -> &SwiftSettings {
        &self.settings
    }
}

impl ImageSource for SwiftSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Swift
    }

    fn accepts(&self, image: &ImageRef) -> bool {
        matches!(image, ImageRef::Swift { .. })
    }

    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let path = self.locate(field, image)?;
            self.client
                .head(&path, now)
                .await
                .map_err(|source| ImageError::Swift {
                    field: field.into(),
                    source,
                })?;
            Ok(PreparedImage {
                reference: text.to_string(),
                source: SourceKind::Swift,
                location: path,
                checksum: None,
            })
        })
    }

    fn inspect<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> InspectFuture<'a> {
        Box::pin(async move {
            let path = self.locate(field, image)?;
            let info = self
                .client
                .head(&path, now)
                .await
                .map_err(|source| ImageError::Swift {
                    field: field.into(),
                    source,
                })?;
            Ok(ImageDetails {
                prepared: PreparedImage {
                    reference: text.to_string(),
                    source: SourceKind::Swift,
                    location: path,
                    checksum: None,
                },
                resolved: "swift".into(),
                size: info.size,
                checksum: info.etag.map(|e| format!("{e} (Swift ETag)")),
                hash: None,
                facts: Vec::new(),
            })
        })
    }

    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError> {
        match image {
            ImageRef::Swift { container, object } => Ok(SwiftClient::object_path(
                &self.settings,
                &self.account(field)?,
                container,
                object,
            )),
            other => Err(ImageError::not_mine(field, other, "swift://")),
        }
    }

    fn url(
        &self,
        field: &str,
        location: &str,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        let keys = self.keys.current().map_err(|source| ImageError::Swift {
            field: field.into(),
            source,
        })?;
        keys.signer
            .write_get_url(
                out,
                &self.settings.public_endpoint,
                location,
                expires,
                self.settings.ip_range.as_deref(),
            )
            .map_err(|e| ImageError::Invalid(crate::node::FieldError::new(field, e.to_string())))?;
        Ok(true)
    }
}
