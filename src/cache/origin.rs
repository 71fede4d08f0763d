//! Where a master file's bytes come from: the [`Origin`] trait, [`HttpOrigin`] (reqwest,
//! conditional GETs) and [`FileOrigin`] (a local file, compared by size and mtime).
//!
//! A Glance origin is an [`HttpOrigin`] of the image's `/v2/images/{id}/file` URL with an
//! `X-Auth-Token` header ([`HttpOrigin::header`]); Glance images are immutable, so it may
//! also answer every revalidation with [`Opened::NotModified`] without a request.

use std::fmt;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_LENGTH, ETAG, HeaderMap, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::CacheError;

/// What identifies one version of an origin's bytes: an HTTP `ETag` and/or `Last-Modified`
/// (as the server sent them), or for a file a stamp of its size and mtime in `etag`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// The `ETag` header (sent back as `If-None-Match`), or a file's size-mtime stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` header (sent back as `If-Modified-Since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A body being received.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, CacheError>> + Send>>;

/// An origin's answer with bytes.
pub struct OriginBody {
    /// The length announced (`Content-Length`, a file's size), if any. The cache checks
    /// free space and its limit with it before reading the body, and refuses a body of
    /// another length.
    pub len: Option<u64>,
    /// The version of these bytes, kept for the next revalidation.
    pub validator: Option<Validator>,
    /// The bytes.
    pub stream: BodyStream,
}

impl fmt::Debug for OriginBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginBody")
            .field("len", &self.len)
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

/// An origin's answer to [`Origin::open`].
#[derive(Debug)]
pub enum Opened {
    /// The version the caller holds is current (HTTP 304, an unchanged file). The
    /// validator, when given, replaces the stored one.
    NotModified(Option<Validator>),
    /// The bytes of the current version.
    Body(OriginBody),
}

/// The future [`Origin::open`] returns.
pub type OpenFuture<'a> = Pin<Box<dyn Future<Output = Result<Opened, CacheError>> + Send + 'a>>;

/// Where the bytes of one image come from.
pub trait Origin: Send + Sync + fmt::Debug {
    /// Names the origin in messages and in the cache's listing: never a secret (no
    /// token, no password, no query string).
    fn describe(&self) -> String;

    /// Opens the image. With `known` (the validator of the bytes the cache holds), the
    /// origin may answer [`Opened::NotModified`] when they are still current; without it
    /// it must answer with the bytes.
    fn open<'a>(&'a self, known: Option<&'a Validator>) -> OpenFuture<'a>;

    /// Whether the expected digest alone identifies the bytes (an active Glance image's
    /// data never changes): a master with that digest is used without asking the origin.
    fn immutable(&self) -> bool {
        false
    }
}

/// The URL without user info, query or fragment: what messages may say about it.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A reqwest error without its URL, with the innermost cause.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let e = e.to_string();
    let e = e
        .split(" for url (")
        .next()
        .unwrap_or("request failed")
        .to_string();
    if detail.is_empty() || detail == e {
        e
    } else {
        format!("{e}: {detail}")
    }
}

/// An http(s) URL, fetched with GET; revalidated with `If-None-Match` and
/// `If-Modified-Since`.
#[derive(Clone)]
pub struct HttpOrigin {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    description: String,
    read_timeout: Option<Duration>,
    immutable: bool,
}

impl fmt::Debug for HttpOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOrigin")
            .field("url", &self.description)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpOrigin {
    /// A client for origins: rustls, at most 5 redirects (reqwest drops `Authorization`
    /// and cookies on a redirect to another host, but not custom headers such as
    /// `X-Auth-Token`: an origin with credentials in headers should use a client without
    /// redirects), `connect` to connect and `read` between two reads of the body, so a
    /// stalled body fails instead of hanging a prepare.
    pub fn client(connect: Duration, read: Duration) -> Result<reqwest::Client, CacheError> {
        reqwest::Client::builder()
            .connect_timeout(connect)
            .read_timeout(read)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| CacheError::Io {
                what: "cannot build the HTTP client".into(),
                detail: describe_reqwest(&e),
            })
    }

    /// An origin for an http(s) URL. `read_timeout` is only used to word timeout errors:
    /// give the one the client was built with.
    pub fn new(
        client: reqwest::Client,
        url: &str,
        read_timeout: Option<Duration>,
    ) -> Result<HttpOrigin, CacheError> {
        let description = redact_url(url);
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| CacheError::InvalidOrigin {
                origin: format!("{description:?}"),
                reason: "is not an http(s) URL with a host",
            })?;
        Ok(HttpOrigin {
            client,
            url: parsed,
            headers: HeaderMap::new(),
            description,
            read_timeout,
            immutable: false,
        })
    }

    /// Marks the origin's bytes as identified by their digest (see [`Origin::immutable`]).
    pub fn immutable(mut self) -> HttpOrigin {
        self.immutable = true;
        self
    }

    /// Adds a header to every request (e.g. Glance's `X-Auth-Token`). The value is marked
    /// sensitive and never printed.
    pub fn header(mut self, name: HeaderName, mut value: HeaderValue) -> HttpOrigin {
        value.set_sensitive(true);
        self.headers.insert(name, value);
        self
    }

    fn unreachable(&self, e: &reqwest::Error) -> CacheError {
        if e.is_timeout() {
            CacheError::Timeout {
                origin: self.description.clone(),
                detail: match self.read_timeout {
                    Some(t) => format!("no data for {} ms", t.as_millis()),
                    None => describe_reqwest(e),
                },
            }
        } else {
            CacheError::Unreachable {
                origin: self.description.clone(),
                detail: describe_reqwest(e),
            }
        }
    }
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .map(str::to_string)
}

impl Origin for HttpOrigin {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn immutable(&self) -> bool {
        self.immutable
    }

    fn open<'a>(&'a self, known: Option<&'a Validator>) -> OpenFuture<'a> {
        Box::pin(async move {
            let mut req = self
                .client
                .get(self.url.clone())
                .headers(self.headers.clone());
            if let Some(v) = known {
                if let Some(etag) = &v.etag {
                    req = req.header(IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &v.last_modified {
                    req = req.header(IF_MODIFIED_SINCE, lm);
                }
            }
            let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
            let status = resp.status();
            let validator = {
                let h = resp.headers();
                let v = Validator {
                    etag: header_text(h, ETAG),
                    last_modified: header_text(h, LAST_MODIFIED),
                };
                (v != Validator::default()).then_some(v)
            };
            match status {
                StatusCode::NOT_MODIFIED if known.is_some() => Ok(Opened::NotModified(validator)),
                StatusCode::OK => {
                    let len = header_text(resp.headers(), CONTENT_LENGTH)
                        .and_then(|l| l.parse::<u64>().ok());
                    let me = self.clone();
                    let stream = resp
                        .bytes_stream()
                        .map(move |r| r.map_err(|e| me.unreachable(&e)));
                    Ok(Opened::Body(OriginBody {
                        len,
                        validator,
                        stream: Box::pin(stream),
                    }))
                }
                StatusCode::NOT_FOUND | StatusCode::GONE => Err(CacheError::NotFound {
                    origin: self.description.clone(),
                    detail: format!("HTTP {}", status.as_u16()),
                }),
                _ => Err(CacheError::Status {
                    origin: self.description.clone(),
                    status: status.as_u16(),
                }),
            }
        })
    }
}

/// A local file (`file:///path`), read with tokio; "modified" means another size or
/// mtime.
#[derive(Debug, Clone)]
pub struct FileOrigin {
    path: PathBuf,
}

/// Bytes read at a time from a file.
const FILE_CHUNK: usize = 256 * 1024;

impl FileOrigin {
    /// An origin for an absolute path.
    pub fn new(path: impl Into<PathBuf>) -> Result<FileOrigin, CacheError> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(CacheError::InvalidOrigin {
                origin: format!("{:?}", path.display().to_string()),
                reason: "is not an absolute path",
            });
        }
        Ok(FileOrigin { path })
    }

    /// An origin for a `file:///path` reference (no percent-decoding, as Ironic).
    pub fn from_url(url: &str) -> Result<FileOrigin, CacheError> {
        let path = url
            .strip_prefix("file://")
            .ok_or(CacheError::InvalidOrigin {
                origin: format!("{:?}", redact_url(url)),
                reason: "is not a file:// reference",
            })?;
        FileOrigin::new(path)
    }

    fn io(&self, what: &str, e: &std::io::Error) -> CacheError {
        if e.kind() == std::io::ErrorKind::NotFound {
            CacheError::NotFound {
                origin: self.describe(),
                detail: "no such file".into(),
            }
        } else {
            CacheError::Unreachable {
                origin: self.describe(),
                detail: format!("cannot {what}: {e}"),
            }
        }
    }
}

impl Origin for FileOrigin {
    fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn open<'a>(&'a self, known: Option<&'a Validator>) -> OpenFuture<'a> {
        Box::pin(async move {
            let file = tokio::fs::File::open(&self.path)
                .await
                .map_err(|e| self.io("open it", &e))?;
            let meta = file.metadata().await.map_err(|e| self.io("stat it", &e))?;
            if !meta.is_file() {
                return Err(CacheError::NotFound {
                    origin: self.describe(),
                    detail: "not a regular file".into(),
                });
            }
            let stamp = Validator {
                etag: Some(format!(
                    "{}-{}.{:09}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec()
                )),
                last_modified: None,
            };
            if known == Some(&stamp) {
                return Ok(Opened::NotModified(Some(stamp)));
            }
            let me = self.clone();
            let stream = futures_util::stream::unfold(Some(file), move |file| {
                let me = me.clone();
                async move {
                    let mut file = file?;
                    let mut buf = vec![0; FILE_CHUNK];
                    match file.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), Some(file)))
                        }
                        Err(e) => Some((Err(me.io("read it", &e)), None)),
                    }
                }
            });
            Ok(Opened::Body(OriginBody {
                len: Some(meta.len()),
                validator: Some(stamp),
                stream: Box::pin(stream),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries_in_messages() {
        assert_eq!(
            redact_url("https://user:pw@h.example:8443/v1/AUTH_a/c/o?temp_url_sig=abc&x=1#f"),
            "https://h.example:8443/v1/AUTH_a/c/o"
        );
        assert_eq!(redact_url("not a url?secret"), "not a url");
    }

    #[test]
    fn origins_refuse_what_they_cannot_open() {
        let client = reqwest::Client::new();
        assert!(HttpOrigin::new(client.clone(), "ftp://h/k", None).is_err());
        assert!(HttpOrigin::new(client, "http://", None).is_err());
        assert!(FileOrigin::from_url("file://relative/k").is_err());
        assert!(FileOrigin::from_url("http://h/k").is_err());
    }
}
