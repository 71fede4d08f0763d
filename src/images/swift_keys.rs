//! The temp-URL key ironboot signs with, and the Swift account the images live in.
//!
//! Either both are configured (`[glance] swift_temp_url_key` and `swift_account`), or they
//! are read from Swift with the `[swift]` credentials, as Ironic does: the account's
//! `Temp-URL-Key-2` when it is set, else its `Temp-URL-Key`; the account is the one of the
//! storage URL (v1 auth) or `swift_account_prefix` + the project id (Keystone).
//!
//! [`SwiftKeys`] is shared by every part that signs. [`SwiftKeys::refresh`] re-reads the
//! account; the conductor calls it every `[swift] temp_url_key_refresh_interval`, so an
//! operator who rotates the key (sets key 2, waits, replaces key 1) never breaks a boot:
//! URLs are signed with key 2 from the first refresh after it appears, and every URL signed
//! before stays valid while key 1 is kept.
//!
//! A failed refresh keeps the key in use; until a first read succeeds, signing fails with
//! [`SwiftError::KeyUnknown`].

use std::sync::{Arc, RwLock};

use reqwest::header::HeaderValue;

use super::keystone::{KeystoneClient, OBJECT_STORE};
use super::swift::{SwiftError, describe};
use crate::clock::Clock;
use crate::config::{Secret, SwiftAuth, SwiftSettings};
use crate::tempurl::Signer;

/// Which key ironboot signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// `[glance] swift_temp_url_key` (or its file).
    Configured,
    /// The account's `Temp-URL-Key-2`.
    Key2,
    /// The account's `Temp-URL-Key`.
    Key1,
}

impl KeySlot {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Configured => "glance.swift_temp_url_key",
            KeySlot::Key2 => "Temp-URL-Key-2",
            KeySlot::Key1 => "Temp-URL-Key",
        }
    }
}

/// The key in use and the account it belongs to.
#[derive(Debug)]
pub struct KeyState {
    pub signer: Signer,
    pub account: String,
    pub slot: KeySlot,
    key: Secret,
}

/// What one read of the account found.
#[derive(Debug)]
pub struct AccountKeys {
    /// The account named by the storage URL or the project id.
    pub account: String,
    pub key1: Option<Secret>,
    pub key2: Option<Secret>,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub account: String,
    pub slot: KeySlot,
    /// The key or the account differs from the one signed with before.
    pub changed: bool,
}

/// How the account's metadata is read.
#[derive(Debug)]
enum Reader {
    V1 {
        http: reqwest::Client,
        auth_url: String,
        username: String,
        password: Secret,
    },
    Keystone {
        http: reqwest::Client,
        client: Box<KeystoneClient>,
        prefix: String,
    },
}

/// The temp-URL key and account, shared by everything that signs.
#[derive(Debug)]
pub struct SwiftKeys {
    digest: crate::tempurl::Digest,
    configured_key: Option<Secret>,
    configured_account: Option<String>,
    current: RwLock<Option<Arc<KeyState>>>,
    /// Why the last read failed, while no key is known.
    last_error: RwLock<Option<SwiftError>>,
    reader: Option<Reader>,
    refresh: std::time::Duration,
    /// Reads of the account's keys started.
    reads: std::sync::atomic::AtomicU64,
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Secret> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

fn sensitive(value: &str) -> Result<HeaderValue, SwiftError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| SwiftError::AuthProtocol {
        url: String::new(),
        detail: "a credential holds characters that cannot be sent in a header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The last non-empty path segment of a storage URL (`…/v1/AUTH_test` → `AUTH_test`).
pub fn account_of_storage_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let segment = parsed.path_segments()?.rfind(|s| !s.is_empty())?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!decoded.is_empty() && !decoded.contains('/')).then_some(decoded)
}

impl SwiftKeys {
    /// From the settings: ready at once when key and account are configured, else empty
    /// until the first [`SwiftKeys::refresh`]. `clock` judges when Keystone tokens expire.
    pub fn new(settings: &SwiftSettings, clock: Arc<dyn Clock>) -> SwiftKeys {
        let static_state = match (&settings.key, &settings.configured_account) {
            (Some(key), Some(account)) => Some(Arc::new(KeyState {
                signer: Signer::new(key.expose().as_bytes(), settings.digest),
                account: account.clone(),
                slot: KeySlot::Configured,
                key: key.clone(),
            })),
            _ => None,
        };
        let reader = match (&static_state, &settings.discovery) {
            (None, Some(d)) => {
                let http = reqwest::Client::builder()
                    .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")))
                    .timeout(d.timeout)
                    .connect_timeout(d.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("a reqwest client with rustls builds");
                match &d.auth {
                    SwiftAuth::V1 {
                        auth_url,
                        username,
                        password,
                    } => Some(Reader::V1 {
                        http,
                        auth_url: auth_url.clone(),
                        username: username.clone(),
                        password: password.clone(),
                    }),
                    SwiftAuth::Keystone {
                        auth,
                        region_name,
                        interfaces,
                    } => Some(Reader::Keystone {
                        client: Box::new(KeystoneClient::new(
                            OBJECT_STORE,
                            http.clone(),
                            auth.clone(),
                            interfaces.clone(),
                            region_name.clone(),
                            None,
                            clock,
                        )),
                        http,
                        prefix: settings.account_prefix.clone(),
                    }),
                }
            }
            _ => None,
        };
        SwiftKeys {
            digest: settings.digest,
            configured_key: settings.key.clone(),
            configured_account: settings.configured_account.clone(),
            current: RwLock::new(static_state),
            last_error: RwLock::new(None),
            reader,
            reads: std::sync::atomic::AtomicU64::new(0),
            refresh: settings
                .discovery
                .as_ref()
                .map(|d| d.refresh)
                .unwrap_or(std::time::Duration::from_secs(3600)),
        }
    }

    /// Reads of the account's keys so far, and Keystone token requests they made.
    pub fn requests(&self) -> (u64, u64) {
        let tokens = match &self.reader {
            Some(Reader::Keystone { client, .. }) => client.token_requests(),
            _ => 0,
        };
        (
            self.reads.load(std::sync::atomic::Ordering::Relaxed),
            tokens,
        )
    }

    /// `[swift] temp_url_key_refresh_interval`.
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.refresh
    }

    /// Whether the key or the account is read from Swift (and so needs refreshing).
    pub fn discovers(&self) -> bool {
        self.reader.is_some()
    }

    /// The key and account to sign with now.
    pub fn current(&self) -> Result<Arc<KeyState>, SwiftError> {
        if let Some(state) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(state.clone());
        }
        let why = self
            .last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "it has not been read from Swift yet".into());
        Err(SwiftError::KeyUnknown { detail: why })
    }

    /// Reads the account's keys (and account) and switches to the key to use. On failure
    /// the key in use stays.
    pub async fn refresh(&self) -> Result<Refreshed, SwiftError> {
        let Some(reader) = &self.reader else {
            let state = self.current()?;
            return Ok(Refreshed {
                account: state.account.clone(),
                slot: state.slot,
                changed: false,
            });
        };
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = async {
            let found = reader.read().await?;
            let account = self
                .configured_account
                .clone()
                .unwrap_or_else(|| found.account.clone());
            let (key, slot) = match (&self.configured_key, found.key2, found.key1) {
                (Some(k), _, _) => (k.clone(), KeySlot::Configured),
                (None, Some(k), _) => (k, KeySlot::Key2),
                (None, None, Some(k)) => (k, KeySlot::Key1),
                (None, None, None) => {
                    return Err(SwiftError::NoKey {
                        account: found.account,
                    });
                }
            };
            Ok((account, key, slot))
        }
        .await;
        let (account, key, slot) = match outcome {
            Ok(v) => v,
            Err(e) => {
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                return Err(e);
            }
        };
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = current
            .as_ref()
            .is_none_or(|s| s.account != account || s.key.expose() != key.expose());
        if changed {
            tracing::info!(
                account = %account,
                key = slot.as_str(),
                "signing Swift temporary URLs with the account's {}",
                slot.as_str()
            );
            *current = Some(Arc::new(KeyState {
                signer: Signer::new(key.expose().as_bytes(), self.digest),
                account: account.clone(),
                slot,
                key,
            }));
        } else if let Some(state) = current.as_ref()
            && state.slot != slot
        {
            // the same key moved to the other slot
            *current = Some(Arc::new(KeyState {
                signer: Signer::new(key.expose().as_bytes(), self.digest),
                account: account.clone(),
                slot,
                key,
            }));
        }
        drop(current);
        *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(Refreshed {
            account,
            slot,
            changed,
        })
    }
}

impl Reader {
    async fn read(&self) -> Result<AccountKeys, SwiftError> {
        match self {
            Reader::V1 {
                http,
                auth_url,
                username,
                password,
            } => {
                let resp = http
                    .get(auth_url)
                    .header("X-Auth-User", sensitive(username)?)
                    .header("X-Auth-Key", sensitive(password.expose())?)
                    .send()
                    .await
                    .map_err(|e| SwiftError::Unreachable {
                        endpoint: auth_url.clone(),
                        detail: describe(&e),
                    })?;
                let status = resp.status();
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    return Err(SwiftError::AuthRefused {
                        url: auth_url.clone(),
                        user: username.clone(),
                        status: status.as_u16(),
                    });
                }
                if !status.is_success() {
                    return Err(SwiftError::AuthProtocol {
                        url: auth_url.clone(),
                        detail: format!("it answered {status}"),
                    });
                }
                let protocol = |detail: &str| SwiftError::AuthProtocol {
                    url: auth_url.clone(),
                    detail: detail.into(),
                };
                let storage = resp
                    .headers()
                    .get("x-storage-url")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| protocol("the answer has no X-Storage-Url header"))?;
                let token = header(resp.headers(), "x-auth-token")
                    .ok_or_else(|| protocol("the answer has no X-Auth-Token header"))?;
                let account = account_of_storage_url(&storage).ok_or_else(|| {
                    protocol("its X-Storage-Url does not end with an account name")
                })?;
                head_account(http, &storage, &account, &token, username).await
            }
            Reader::Keystone {
                http,
                client,
                prefix,
            } => {
                let mut token = client.token().await.map_err(SwiftError::keystone)?;
                let mut renewed = false;
                loop {
                    let account = format!("{prefix}{}", token.project_id);
                    match head_account(
                        http,
                        &token.endpoint,
                        &account,
                        &token.value,
                        &client.identity(),
                    )
                    .await
                    {
                        Err(SwiftError::AuthRefused { .. }) if !renewed => {
                            renewed = true;
                            token = client
                                .renew_after_401(&token)
                                .await
                                .map_err(SwiftError::keystone)?;
                        }
                        other => return other,
                    }
                }
            }
        }
    }
}

/// `HEAD` of the account: its temp-URL keys.
async fn head_account(
    http: &reqwest::Client,
    storage_url: &str,
    account: &str,
    token: &Secret,
    user: &str,
) -> Result<AccountKeys, SwiftError> {
    let resp = http
        .head(storage_url)
        .header("X-Auth-Token", sensitive(token.expose())?)
        .send()
        .await
        .map_err(|e| SwiftError::Unreachable {
            endpoint: storage_url.to_string(),
            detail: describe(&e),
        })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(SwiftError::AuthRefused {
            url: storage_url.to_string(),
            user: user.to_string(),
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        return Err(SwiftError::Status {
            path: format!("account {account}"),
            status: status.as_u16(),
        });
    }
    Ok(AccountKeys {
        account: account.to_string(),
        key1: header(resp.headers(), "x-account-meta-temp-url-key"),
        key2: header(resp.headers(), "x-account-meta-temp-url-key-2"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_of_storage_urls() {
        let a = |u: &str| account_of_storage_url(u);
        assert_eq!(
            a("http://127.0.0.1:8080/v1/AUTH_test").as_deref(),
            Some("AUTH_test")
        );
        assert_eq!(a("https://s/swift/v1/AUTH_x/").as_deref(), Some("AUTH_x"));
        assert_eq!(a("http://s/v1/AUTH_a%20b").as_deref(), Some("AUTH_a b"));
        assert_eq!(a("http://s/v1/AUTH_a%2Fb"), None);
        assert_eq!(a("http://s/"), None);
        assert_eq!(a("not a url"), None);
    }

    #[test]
    fn slots_are_named_as_swift_names_them() {
        assert_eq!(KeySlot::Key2.as_str(), "Temp-URL-Key-2");
        assert_eq!(KeySlot::Key1.as_str(), "Temp-URL-Key");
    }
}
