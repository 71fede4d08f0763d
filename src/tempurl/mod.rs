//! Swift temporary URLs, exactly as Swift 2.38's `tempurl` middleware checks them and as
//! python-swiftclient 4.11's `generate_temp_url` writes them.
//!
//! This module does no I/O and never reads the clock: callers pass the expiry as a Unix time
//! (see [`expiry::Expiry::resolve`]). The rules it follows:
//!
//! * The HMAC message is `[ip=<range>\n]<METHOD>\n<expires>\n[prefix:]<path>`, joined with
//!   `\n` and UTF-8 encoded. `<path>` is the **unencoded** path `/v1/<account>/<container>/<object>`;
//!   Swift rebuilds it from the decoded request path, so a signature over a percent-encoded
//!   path gets 401. `<expires>` is always the integer, even when the URL carries ISO-8601.
//! * sha1 and sha256 signatures are lowercase hex; sha512 is `sha512:` followed by URL-safe
//!   base64 without padding (swiftclient's choice; Swift accepts all of these).
//! * A URL has two renderings. [`TempUrl::swiftclient_form`] is `path?query` with the raw path,
//!   byte for byte what `generate_temp_url` returns. [`TempUrl::to_url`] is the absolute URL
//!   that goes into iPXE scripts: the path is percent-encoded, the signature is unchanged.
//! * `filename` and `inline` are not signed; Swift honours them on any valid URL.
//!
//! Submodules: [`expiry`] parses and formats expiry times, [`glance`] builds Ironic's URL
//! for a Glance image stored in Swift.

pub mod expiry;
pub mod glance;

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use expiry::{Expiry, ExpiryError};

/// The HMAC digest of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Digest {
    /// Deprecated by Swift; still accepted by its default configuration.
    Sha1,
    /// python-swiftclient's default.
    #[default]
    Sha256,
    Sha512,
}

impl Digest {
    pub const ALL: [Digest; 3] = [Digest::Sha1, Digest::Sha256, Digest::Sha512];

    pub fn as_str(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha256 => "sha256",
            Digest::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Digest {
    type Err = TempUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha1" => Ok(Digest::Sha1),
            "sha256" => Ok(Digest::Sha256),
            "sha512" => Ok(Digest::Sha512),
            other => Err(TempUrlError::Digest(other.to_string())),
        }
    }
}

/// An HTTP method for a temp URL: an uppercase token. Swift's default `methods` are the
/// five [`Method::STANDARD`] ones; others are signed (as swiftclient does) but flagged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(String);

impl Method {
    pub const STANDARD: [&'static str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];

    pub fn get() -> Method {
        Method("GET".into())
    }

    pub fn head() -> Method {
        Method("HEAD".into())
    }

    /// Parses a method case-insensitively, as swiftclient's `method.upper()` does.
    pub fn parse(s: &str) -> Result<Method, TempUrlError> {
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(is_tchar) {
            return Err(TempUrlError::Method(s.to_string()));
        }
        Ok(Method(s.to_ascii_uppercase()))
    }

    /// Whether Swift's default tempurl configuration allows this method.
    pub fn is_standard(&self) -> bool {
        Self::STANDARD.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a temp URL could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TempUrlError {
    #[error("path must be full path to an object e.g. /v1/a/c/o (got {0:?})")]
    ObjectPath(String),
    #[error("path must at least contain /v1/a/c/ (got {0:?})")]
    PrefixPath(String),
    #[error("method {0:?} is not an HTTP method token (use GET, HEAD, PUT, POST or DELETE)")]
    Method(String),
    #[error("digest must be one of sha1, sha256, or sha512 (got {0:?})")]
    Digest(String),
    #[error(
        "ip range {0:?} is not an IP address or a network without host bits \
         (Swift's ip_network is strict: use 10.0.0.0/8, not 10.0.0.1/8)"
    )]
    IpRange(String),
    #[error(
        "endpoint {0:?} must be an http:// or https:// URL with a host and no query, \
         fragment or whitespace, e.g. http://swift.example.com:8080"
    )]
    Endpoint(String),
    #[error(transparent)]
    Expiry(#[from] ExpiryError),
}

/// What a path names, after swiftclient's validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    /// `/info`, signed with `swiftinfo_sig`/`swiftinfo_expires`.
    Info,
    /// `/v1/<account>/<container>/<object>`.
    Object,
    /// `/v1/<account>/<container>/<prefix>`; the prefix starts at this byte offset.
    Prefix(usize),
}

/// Validates a path the way `generate_temp_url` does: `split('/', 4)` must give five parts,
/// the first empty and the rest non-empty (the object part may be empty for a prefix URL).
/// `/info` is special and never takes a prefix or ip range.
fn classify(path: &str, prefix: bool) -> Result<PathKind, TempUrlError> {
    if path == "/info" {
        return Ok(PathKind::Info);
    }
    // The five parts of `path.split('/', 4)`: "", version, account, container, rest.
    let bad = || {
        if prefix {
            TempUrlError::PrefixPath(path.to_string())
        } else {
            TempUrlError::ObjectPath(path.to_string())
        }
    };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let mut start = 1;
    let mut remaining = rest;
    for _ in 0..3 {
        let slash = remaining.find('/').ok_or_else(bad)?;
        if slash == 0 {
            return Err(bad());
        }
        start += slash + 1;
        remaining = &remaining[slash + 1..];
    }
    if prefix {
        Ok(PathKind::Prefix(start))
    } else if remaining.is_empty() {
        Err(bad())
    } else {
        Ok(PathKind::Object)
    }
}

/// Checks a `temp_url_ip_range` value as Swift does: `ipaddress.ip_network(value)`, which is
/// strict about host bits.
pub fn validate_ip_range(range: &str) -> Result<(), TempUrlError> {
    let ok = range.parse::<std::net::IpAddr>().is_ok()
        || range
            .parse::<ipnet::IpNet>()
            .is_ok_and(|net| net.trunc() == net);
    if ok {
        Ok(())
    } else {
        Err(TempUrlError::IpRange(range.to_string()))
    }
}

/// A Swift endpoint: scheme, host, optional port and optional path prefix (RADOS GW uses
/// `/swift`), never a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

impl Endpoint {
    /// Checks an endpoint with the `url` crate: `http://` or `https://`, a host, an optional
    /// port and path, no user info, query or fragment. The endpoint is kept as written, less
    /// trailing slashes.
    pub fn parse(s: &str) -> Result<Endpoint, TempUrlError> {
        let bad = || TempUrlError::Endpoint(s.to_string());
        // iPXE splits words on whitespace, and the url crate would silently drop tabs and
        // newlines; it would also read `\` as `/`.
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) || s.contains('\\') {
            return Err(bad());
        }
        let url = url::Url::parse(s).map_err(|_| bad())?;
        // The url crate also accepts `HTTP://h`, `http:h` and `http:///h` (all as http://h/)
        // and drops an empty `@`; the endpoint is kept as written, so it must be written
        // plainly: the scheme in lower case, `//`, then the host.
        let prefix = &url[..url::Position::BeforeUsername];
        let authority = s.strip_prefix(prefix).map(|rest| {
            let end = rest.find('/').unwrap_or(rest.len());
            &rest[..end]
        });
        let plain = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|h| !h.is_empty())
            && authority.is_some_and(|a| !a.is_empty() && !a.contains('@'))
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        if !plain {
            return Err(bad());
        }
        Ok(Endpoint(s.trim_end_matches('/').to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes kept as they are in a path: RFC 3986 unreserved characters and `/`.
const PATH_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// Bytes kept as they are in a query value: unreserved characters, `/` and `:`.
const QUERY_SET: &AsciiSet = &PATH_SET.remove(b':');

/// Percent-encodes an object path for a URL. Every byte outside the unreserved set and `/`
/// is encoded, so `?`, `#`, `%`, `&`, `+`, spaces and `${` can never change the URL's meaning
/// nor be expanded by iPXE.
pub fn encode_path(path: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(path, PATH_SET)
}

/// Percent-encodes a query value.
pub fn encode_query_value(value: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(value, QUERY_SET)
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The unencoded path, `/v1/<account>/<container>/<object or prefix>` or `/info`.
    pub path: &'a str,
    /// The Unix time at which the URL stops working.
    pub expires: i64,
    /// Sign `prefix:<path>` and add `temp_url_prefix` (everything after the container).
    pub prefix: bool,
    /// Restrict the URL to clients in this address or network.
    pub ip_range: Option<&'a str>,
    /// Write the expiry as `%Y-%m-%dT%H:%M:%SZ` instead of an integer.
    pub iso8601: bool,
    /// Unsigned: ask Swift for `Content-Disposition` with this file name.
    pub filename: Option<&'a str>,
    /// Unsigned: ask Swift for `Content-Disposition: inline`.
    pub inline: bool,
}

impl<'a> Request<'a> {
    /// A plain object URL with an integer expiry.
    pub fn new(method: &'a Method, path: &'a str, expires: i64) -> Self {
        Request {
            method,
            path,
            expires,
            prefix: false,
            ip_range: None,
            iso8601: false,
            filename: None,
            inline: false,
        }
    }
}

#[derive(Clone)]
enum Keyed {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

/// A signing key prepared for one digest. The HMAC key schedule is computed once here, so
/// each signature costs only the message blocks. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Signer {
    digest: Digest,
    keyed: Keyed,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("digest", &self.digest)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn keyed<M: KeyInit>(key: &[u8]) -> M {
    // HMAC accepts keys of any length.
    <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

impl Signer {
    pub fn new(key: &[u8], digest: Digest) -> Signer {
        let keyed = match digest {
            Digest::Sha1 => Keyed::Sha1(keyed(key)),
            Digest::Sha256 => Keyed::Sha256(keyed(key)),
            Digest::Sha512 => Keyed::Sha512(keyed(key)),
        };
        Signer { digest, keyed }
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The signature of an HMAC message, in swiftclient's encoding.
    fn compute(
        &self,
        method: &str,
        expires: i64,
        signed_path: (&str, &str),
        ip: Option<&str>,
    ) -> Signature {
        let mut num = itoa::Buffer::new();
        let expires = num.format(expires).as_bytes();
        fn feed<M: Mac>(
            m: &mut M,
            method: &str,
            expires: &[u8],
            path: (&str, &str),
            ip: Option<&str>,
        ) {
            if let Some(ip) = ip {
                m.update(b"ip=");
                m.update(ip.as_bytes());
                m.update(b"\n");
            }
            m.update(method.as_bytes());
            m.update(b"\n");
            m.update(expires);
            m.update(b"\n");
            m.update(path.0.as_bytes());
            m.update(path.1.as_bytes());
        }
        match &self.keyed {
            Keyed::Sha1(k) => {
                let mut m = k.clone();
                feed(&mut m, method, expires, signed_path, ip);
                Signature::hex(&m.finalize().into_bytes())
            }
            Keyed::Sha256(k) => {
                let mut m = k.clone();
                feed(&mut m, method, expires, signed_path, ip);
                Signature::hex(&m.finalize().into_bytes())
            }
            Keyed::Sha512(k) => {
                let mut m = k.clone();
                feed(&mut m, method, expires, signed_path, ip);
                Signature::sha512_b64(&m.finalize().into_bytes())
            }
        }
    }

    /// The signature alone, for a message built from its parts. Used by tests that compare
    /// against Swift's own `get_hmac`.
    pub fn signature(
        &self,
        method: &Method,
        expires: i64,
        path: &str,
        prefix: bool,
        ip_range: Option<&str>,
    ) -> String {
        let signed = if prefix {
            ("prefix:", path)
        } else {
            ("", path)
        };
        self.compute(method.as_str(), expires, signed, ip_range)
            .as_str()
            .to_string()
    }

    /// Signs a request. Validates the path as swiftclient does; an empty `ip_range` is
    /// ignored, as swiftclient ignores it.
    pub fn sign<'a>(&self, req: &Request<'a>) -> Result<TempUrl<'a>, TempUrlError> {
        let kind = classify(req.path, req.prefix)?;
        let (prefix, ip_range) = match kind {
            PathKind::Info => (false, None),
            _ => (req.prefix, req.ip_range.filter(|r| !r.is_empty())),
        };
        let signed = if prefix {
            ("prefix:", req.path)
        } else {
            ("", req.path)
        };
        let signature = self.compute(req.method.as_str(), req.expires, signed, ip_range);
        Ok(TempUrl {
            path: req.path,
            kind,
            signature,
            expires: req.expires,
            iso8601: req.iso8601,
            ip_range,
            filename: req.filename,
            inline: req.inline,
        })
    }

    /// The hot path of the boot server: validates an object path, signs a GET for it and
    /// appends the absolute, percent-encoded URL to `out`. Equivalent to
    /// `sign(..)?.to_url(endpoint)` without the intermediate allocations.
    pub fn write_get_url(
        &self,
        out: &mut String,
        endpoint: &Endpoint,
        path: &str,
        expires: i64,
        ip_range: Option<&str>,
    ) -> Result<(), TempUrlError> {
        if classify(path, false)? != PathKind::Object {
            return Err(TempUrlError::ObjectPath(path.to_string()));
        }
        let ip_range = ip_range.filter(|r| !r.is_empty());
        out.push_str(endpoint.as_str());
        fmt::Write::write_fmt(out, format_args!("{}", encode_path(path)))
            .expect("writing to a String");
        out.push_str("?temp_url_sig=");
        out.push_str(self.compute("GET", expires, ("", path), ip_range).as_str());
        out.push_str("&temp_url_expires=");
        out.push_str(itoa::Buffer::new().format(expires));
        if let Some(ip) = ip_range {
            out.push_str("&temp_url_ip_range=");
            fmt::Write::write_fmt(out, format_args!("{}", encode_query_value(ip)))
                .expect("writing to a String");
        }
        Ok(())
    }
}

/// A signature in swiftclient's text form, kept inline: hex for sha1/sha256 (40/64 bytes),
/// `sha512:` + unpadded URL-safe base64 for sha512 (93 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Signature {
    buf: [u8; 96],
    len: u8,
}

impl Signature {
    fn hex(bytes: &[u8]) -> Signature {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 96];
        for (pair, &b) in buf.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        Signature {
            buf,
            len: (bytes.len() * 2) as u8,
        }
    }

    fn sha512_b64(bytes: &[u8]) -> Signature {
        let mut buf = [0u8; 96];
        buf[..7].copy_from_slice(b"sha512:");
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut buf[7..])
            .expect("86 bytes of base64 fit");
        Signature {
            buf,
            len: (7 + n) as u8,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).expect("signatures are ASCII")
    }
}

/// A signed temp URL, ready to be rendered. It borrows the request's strings.
#[derive(Clone, PartialEq, Eq)]
pub struct TempUrl<'a> {
    path: &'a str,
    kind: PathKind,
    signature: Signature,
    expires: i64,
    iso8601: bool,
    ip_range: Option<&'a str>,
    filename: Option<&'a str>,
    inline: bool,
}

impl fmt::Debug for TempUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A temp URL is a bearer credential until it expires: show where it points, not the
        // signature.
        f.debug_struct("TempUrl")
            .field("path", &self.path)
            .field("expires", &self.expires)
            .field("signature", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TempUrl<'_> {
    /// The Unix time at which Swift starts refusing the URL.
    pub fn expires(&self) -> i64 {
        self.expires
    }

    /// The unencoded path that was signed.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The `temp_url_sig` value.
    pub fn signature(&self) -> &str {
        self.signature.as_str()
    }

    fn write_query(&self, out: &mut String, encode: bool) {
        let (sig, exp) = match self.kind {
            PathKind::Info => ("swiftinfo_sig", "swiftinfo_expires"),
            _ => ("temp_url_sig", "temp_url_expires"),
        };
        let put = |out: &mut String, v: &str| {
            if encode {
                let _ = fmt::Write::write_fmt(out, format_args!("{}", encode_query_value(v)));
            } else {
                out.push_str(v);
            }
        };
        out.push('?');
        out.push_str(sig);
        out.push('=');
        out.push_str(self.signature.as_str());
        out.push('&');
        out.push_str(exp);
        out.push('=');
        if self.iso8601 {
            expiry::write_iso8601(out, self.expires);
        } else {
            out.push_str(itoa::Buffer::new().format(self.expires));
        }
        if let Some(ip) = self.ip_range {
            out.push_str("&temp_url_ip_range=");
            put(out, ip);
        }
        if let PathKind::Prefix(start) = self.kind {
            out.push_str("&temp_url_prefix=");
            put(out, &self.path[start..]);
        }
        if let Some(name) = self.filename {
            out.push_str("&filename=");
            // Not part of swiftclient's output: always encoded so it cannot break the query.
            let _ = fmt::Write::write_fmt(out, format_args!("{}", encode_query_value(name)));
        }
        if self.inline {
            out.push_str("&inline");
        }
    }

    /// `path?query` with the raw path and raw query values, exactly as python-swiftclient's
    /// `generate_temp_url` returns it (plus `filename`/`inline` when asked for).
    pub fn swiftclient_form(&self) -> String {
        let mut out = String::with_capacity(self.path.len() + 160);
        out.push_str(self.path);
        self.write_query(&mut out, false);
        out
    }

    /// The absolute URL for scripts and HTTP clients: `endpoint` + the percent-encoded path
    /// + the query with percent-encoded values. The signature still covers the raw path.
    pub fn to_url(&self, endpoint: &Endpoint) -> String {
        let mut out = String::with_capacity(endpoint.as_str().len() + self.path.len() * 2 + 160);
        out.push_str(endpoint.as_str());
        let _ = fmt::Write::write_fmt(&mut out, format_args!("{}", encode_path(self.path)));
        self.write_query(&mut out, true);
        out
    }
}

#[cfg(test)]
mod tests;
