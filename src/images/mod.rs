//! Image references and where their bytes come from.
//!
//! A reference is a string in a node's `driver_info` or `instance_info`:
//!
//! | form | meaning |
//! |---|---|
//! | `swift://CONTAINER/OBJECT` | an object in `[glance] swift_account`; nodes get a TempURL signed when they ask. The object part is taken as it is (no percent-decoding) and may contain `/`, but no `.` or `..` segment. |
//! | `http://…`, `https://…` | passed to the node unchanged. |
//! | `glance://UUID` or a bare UUID | a Glance image; in swift mode with `[glance] auth_type` set, served by a TempURL of the object Glance keeps in Swift. |
//! | `file:///path` | a local file; not supported yet (cache mode). |
//!
//! Each kind of source implements [`ImageSource`]: an async `check` that `prepare` calls
//! (it may do I/O) and that returns a [`PreparedImage`], and a pure `url` that render calls
//! with that snapshot (no I/O). [`Sources`] holds the sources of the running mode and is
//! the only code that picks a source for a reference; nothing outside this module matches
//! on the kind of a reference.
//!
//! A source may also resolve an instance's `image_source` to a kernel and a ramdisk
//! ([`ImageSource::boot_images`]: Glance's `kernel_id` and `ramdisk_id` properties of a
//! partition image), describe an image for `ironboot image show` ([`ImageSource::inspect`])
//! and check its services at start ([`ImageSource::probe`]).

pub mod cached;
pub mod glance;
pub mod http;
pub mod keystone;
pub mod swift;
pub mod swift_keys;

use std::future::Future;
use std::pin::Pin;

use crate::code::ErrorCode;
use crate::node::{FieldError, PreparedImage, SourceKind};
use glance::GlanceError;
use swift::SwiftError;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Swift { container: String, object: String },
    Http(String),
    Glance(String),
    File(String),
}

impl ImageRef {
    /// Parses a reference; `field` names it in errors (`driver_info.deploy_kernel`).
    pub fn parse(field: &str, text: &str) -> Result<ImageRef, FieldError> {
        let err = |m: String| FieldError::new(field, m);
        if text.is_empty() {
            return Err(err(
                "is empty; give swift://CONTAINER/OBJECT or an http(s):// URL".into(),
            ));
        }
        if let Some(rest) = text.strip_prefix("swift://") {
            let (container, object) = rest.split_once('/').ok_or_else(|| {
                err(format!(
                    "{text:?} has no object; write swift://CONTAINER/OBJECT"
                ))
            })?;
            if container.is_empty() || object.is_empty() {
                return Err(err(format!(
                    "{text:?} needs both a container and an object: swift://CONTAINER/OBJECT"
                )));
            }
            if object.chars().any(char::is_control)
                || container
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(format!(
                    "{text:?} contains control characters or a container with spaces"
                )));
            }
            if object.split('/').any(|seg| seg == "." || seg == "..") {
                // HTTP clients remove dot segments before sending, so Swift would see
                // another path than the one signed.
                return Err(err(format!(
                    "{text:?} has a . or .. path segment, which HTTP clients remove before the \
                     request reaches Swift; name the object without it"
                )));
            }
            return Ok(ImageRef::Swift {
                container: container.into(),
                object: object.into(),
            });
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            check_http_url(text).map_err(err)?;
            return Ok(ImageRef::Http(text.into()));
        }
        if let Some(id) = text.strip_prefix("glance://") {
            return Ok(ImageRef::Glance(id.into()));
        }
        if crate::tempurl::glance::is_uuid_like(text) {
            return Ok(ImageRef::Glance(text.into()));
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(ImageRef::File(path.into()));
        }
        let scheme = text.split_once("://").map(|(s, _)| s).unwrap_or(text);
        Err(err(format!(
            "unknown image reference scheme in {text:?} ({scheme:?}); use swift://CONTAINER/OBJECT, \
             http(s)://…, glance://UUID or file:///path"
        )))
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            ImageRef::Swift { .. } => "swift",
            ImageRef::Http(_) => "http",
            ImageRef::Glance(_) => "glance",
            ImageRef::File(_) => "file",
        }
    }
}

/// An http(s) URL that can go into an iPXE script as it is: a host, script-safe
/// ([`crate::script::check_word`]), and no fragment.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    crate::script::check_word(url).map_err(|e| format!("{url:?} {e}"))?;
    if url.contains('#') {
        return Err(format!(
            "{url:?} has a fragment (#); iPXE drops it and a server never sees it"
        ));
    }
    Ok(())
}

/// Why an image could not be checked or its URL built. Messages name the field and the
/// object, never a signature.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A malformed reference.
    #[error("{0}")]
    Invalid(FieldError),
    /// A kind of reference that no source of this mode serves.
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
    /// Swift said no, or could not be reached.
    #[error("{field}: {source}")]
    Swift { field: String, source: SwiftError },
    /// Glance (or Keystone) said no, or could not be reached.
    #[error("{field}: {source}")]
    Glance {
        field: String,
        source: Box<GlanceError>,
    },
    /// The image could not be fetched into the cache or linked.
    #[error("{field}: {source}")]
    Cache {
        field: String,
        source: Box<crate::cache::CacheError>,
    },
}

impl ImageError {
    /// A source was asked about a reference it does not serve (a bug in `Sources`, or a
    /// snapshot of another mode).
    pub fn not_mine(field: &str, image: &ImageRef, source: &str) -> ImageError {
        ImageError::Unsupported {
            field: field.into(),
            message: format!("{} is not a {source} reference", image.scheme()),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ImageError::Invalid(_) => ErrorCode::InvalidImageRef,
            ImageError::Unsupported { .. } => ErrorCode::UnsupportedImageRef,
            ImageError::Swift { source, .. } => source.code(),
            ImageError::Glance { source, .. } => source.code(),
            ImageError::Cache { source, .. } => source.code(),
        }
    }

    pub fn field(&self) -> &str {
        match self {
            ImageError::Invalid(f) => &f.field,
            ImageError::Unsupported { field, .. }
            | ImageError::Swift { field, .. }
            | ImageError::Glance { field, .. }
            | ImageError::Cache { field, .. } => field,
        }
    }
}

/// The future an [`ImageSource`]'s check returns.
pub type CheckFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PreparedImage, ImageError>> + Send + 'a>>;

/// What `ironboot image show` prints about an image: what prepare would store, and what
/// the source learnt on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    pub prepared: PreparedImage,
    /// How the reference was resolved, e.g. `glance → swift`.
    pub resolved: String,
    pub size: Option<u64>,
    /// md5 (Glance's `checksum`) or Swift's ETag.
    pub checksum: Option<String>,
    /// Glance's `os_hash_algo` and `os_hash_value`.
    pub hash: Option<(String, String)>,
    /// Further facts, in order: `("image", "<id> (name …)")`, `("stores", "swift")`, …
    pub facts: Vec<(&'static str, String)>,
}

/// The kernel and ramdisk references an instance's image names (Glance's `kernel_id` and
/// `ramdisk_id`); either may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootImages {
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// Names the image, for messages: `Glance image <id>`.
    pub about: String,
}

/// The future of [`ImageSource::inspect`].
pub type InspectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ImageDetails, ImageError>> + Send + 'a>>;
/// The future of [`ImageSource::boot_images`].
pub type BootImagesFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<BootImages>, ImageError>> + Send + 'a>>;
/// The future of [`ImageSource::probe`]: `Ok(what was checked)` or `Err(why it failed)`.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// One kind of image source.
pub trait ImageSource: Send + Sync + std::fmt::Debug {
    /// The kind it records in the snapshots it makes.
    fn kind(&self) -> SourceKind;

    /// Whether this source serves the reference.
    fn accepts(&self, image: &ImageRef) -> bool;

    /// Checks, for `prepare`, that the image can be served (may do I/O), and returns what
    /// render needs. `field` names the reference in errors; `now` is Unix seconds.
    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> CheckFuture<'a>;

    /// Where the image is, from the reference alone, without I/O (used by `check`, and
    /// by render for snapshots of ironboot 0.1 that stored only the reference).
    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError>;

    /// Appends the URL a node fetches the image from, valid until `expires` (Unix
    /// seconds), to `out`. Pure: no I/O, no clock. Returns whether it signed a TempURL.
    fn url(
        &self,
        field: &str,
        location: &str,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError>;

    /// [`ImageSource::url`] for an image that the conductor at `base` (its `[deploy]
    /// http_url`) holds, when the snapshot names one: only the cache source, whose files
    /// live on one conductor, uses it.
    fn url_at(
        &self,
        field: &str,
        location: &str,
        _base: Option<&str>,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        self.url(field, location, expires, out)
    }

    /// What `check` finds, with the details the source learnt (`ironboot image show`).
    fn inspect<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> InspectFuture<'a> {
        Box::pin(async move {
            let prepared = self.check(field, text, image, now).await?;
            Ok(ImageDetails {
                resolved: image.scheme().to_string(),
                prepared,
                size: None,
                checksum: None,
                hash: None,
                facts: Vec::new(),
            })
        })
    }

    /// The kernel and ramdisk an instance image names (prepare, for an
    /// `instance_info.image_source` when `instance_info.kernel`/`ramdisk` are absent).
    /// `None`: this source knows of none.
    fn boot_images<'a>(&'a self, _field: &'a str, _image: &'a ImageRef) -> BootImagesFuture<'a> {
        Box::pin(async { Ok(None) })
    }

    /// Checks at start that the services behind the source answer (e.g. that Keystone
    /// accepts the credentials). Start never fails on it: the caller logs the result.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async { Ok(String::new()) })
    }
}

/// A shared source (one that other code also calls, like the cache's fetch) is a source.
impl<T: ImageSource + ?Sized> ImageSource for std::sync::Arc<T> {
    fn kind(&self) -> SourceKind {
        (**self).kind()
    }
    fn accepts(&self, image: &ImageRef) -> bool {
        (**self).accepts(image)
    }
    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> CheckFuture<'a> {
        (**self).check(field, text, image, now)
    }
    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError> {
        (**self).locate(field, image)
    }
    fn url(
        &self,
        field: &str,
        location: &str,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        (**self).url(field, location, expires, out)
    }
    fn url_at(
        &self,
        field: &str,
        location: &str,
        base: Option<&str>,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        (**self).url_at(field, location, base, expires, out)
    }
    fn inspect<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        now: i64,
    ) -> InspectFuture<'a> {
        (**self).inspect(field, text, image, now)
    }
    fn boot_images<'a>(&'a self, field: &'a str, image: &'a ImageRef) -> BootImagesFuture<'a> {
        (**self).boot_images(field, image)
    }
    fn probe(&self) -> ProbeFuture<'_> {
        (**self).probe()
    }
}

/// The image sources of this mode.
#[derive(Debug, Default)]
pub struct Sources {
    sources: Vec<Box<dyn ImageSource>>,
    /// Says what to use instead when no source accepts a reference.
    hint: String,
}

impl Sources {
    /// Whether `image`'s bytes are fetched into this conductor's cache and served by it
    /// (the cache-mode source).
    pub fn is_cached(image: &PreparedImage) -> bool {
        image.source == SourceKind::Cache
    }

    /// Whether `image`'s URL is a TempURL signed when it is rendered, which `[ipxe]
    /// tempurl_redirect` can sign at the redirect instead (Swift objects).
    pub fn is_signed(image: &PreparedImage) -> bool {
        image.source == SourceKind::Swift
    }

    /// The source of a node's http(s) references when it asks for them to be passed
    /// through (`true`) or cached (`false`), `instance_info.http_passthrough`.
    pub fn http_source(passthrough: bool) -> SourceKind {
        if passthrough {
            SourceKind::Http
        } else {
            SourceKind::Cache
        }
    }

    /// `hint` completes the message for a reference no source accepts.
    pub fn new(sources: Vec<Box<dyn ImageSource>>, hint: impl Into<String>) -> Sources {
        Sources {
            sources,
            hint: hint.into(),
        }
    }

    fn for_ref(&self, field: &str, image: &ImageRef) -> Result<&dyn ImageSource, ImageError> {
        self.sources
            .iter()
            .find(|s| s.accepts(image))
            .map(|s| s.as_ref())
            .ok_or_else(|| ImageError::Unsupported {
                field: field.into(),
                message: format!(
                    "{} references are not supported in this mode; {}",
                    image.scheme(),
                    self.hint
                ),
            })
    }

    fn of_kind(&self, field: &str, kind: SourceKind) -> Result<&dyn ImageSource, ImageError> {
        self.sources
            .iter()
            .find(|s| s.kind() == kind)
            .map(|s| s.as_ref())
            .ok_or_else(|| ImageError::Unsupported {
                field: field.into(),
                message: format!(
                    "the node was prepared for a {kind:?} source that this mode does not have; prepare it again"
                ),
            })
    }

    /// Parses and checks a reference (`prepare`).
    pub async fn check(
        &self,
        field: &str,
        text: &str,
        now: i64,
    ) -> Result<PreparedImage, ImageError> {
        let image = ImageRef::parse(field, text).map_err(ImageError::Invalid)?;
        self.for_ref(field, &image)?
            .check(field, text, &image, now)
            .await
    }

    /// Parses and checks a reference with the source of `kind`, whichever source would
    /// take it otherwise (a node's own `http_passthrough`).
    pub async fn check_as(
        &self,
        kind: SourceKind,
        field: &str,
        text: &str,
        now: i64,
    ) -> Result<PreparedImage, ImageError> {
        let image = ImageRef::parse(field, text).map_err(ImageError::Invalid)?;
        let source = self.of_kind(field, kind)?;
        if !matches!(image, ImageRef::Http(_)) {
            return self
                .for_ref(field, &image)?
                .check(field, text, &image, now)
                .await;
        }
        source.check(field, text, &image, now).await
    }

    /// Parses a reference and describes what prepare would use (`ironboot image show`).
    pub async fn inspect(
        &self,
        field: &str,
        text: &str,
        now: i64,
    ) -> Result<ImageDetails, ImageError> {
        let image = ImageRef::parse(field, text).map_err(ImageError::Invalid)?;
        self.for_ref(field, &image)?
            .inspect(field, text, &image, now)
            .await
    }

    /// The kernel and ramdisk references that an instance's `image_source` names, if its
    /// source knows them. A reference that does not parse, or that no source of this mode
    /// serves, names none, except a Glance reference, which is refused as unsupported.
    pub async fn boot_images(
        &self,
        field: &str,
        text: &str,
    ) -> Result<Option<BootImages>, ImageError> {
        let Ok(image) = ImageRef::parse(field, text) else {
            return Ok(None);
        };
        match self.for_ref(field, &image) {
            Ok(source) => source.boot_images(field, &image).await,
            Err(e) if matches!(image, ImageRef::Glance(_)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Probes every source's services (at start); one line per source that has any.
    pub async fn probe(&self) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        for s in &self.sources {
            match s.probe().await {
                Ok(what) if what.is_empty() => {}
                other => out.push(other),
            }
        }
        out
    }

    /// Appends the URL of a prepared image to `out` (render). Pure. Returns whether a
    /// TempURL was signed. `base`: the `http_url` of the conductor holding the snapshot's
    /// cached images, when it names one.
    pub fn url(
        &self,
        field: &str,
        image: &PreparedImage,
        base: Option<&str>,
        expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        if image.source == SourceKind::Unresolved {
            let parsed = ImageRef::parse(field, &image.reference).map_err(ImageError::Invalid)?;
            let source = self.for_ref(field, &parsed)?;
            let location = source.locate(field, &parsed)?;
            return source.url(field, &location, expires, out);
        }
        self.of_kind(field, image.source)?
            .url_at(field, &image.location, base, expires, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swift_refs_split_at_the_first_slash() {
        assert_eq!(
            ImageRef::parse("f", "swift://images/dir/naïve kernel?.img").unwrap(),
            ImageRef::Swift {
                container: "images".into(),
                object: "dir/naïve kernel?.img".into()
            }
        );
        for bad in [
            "swift://images/../images/k",
            "swift://images/a/./k",
            "swift://images/..",
            "swift://images/k\u{0}",
            "swift://images",
            "swift://images/",
            "swift:///obj",
            "swift://my images/o",
        ] {
            assert!(ImageRef::parse("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_refs_must_be_script_safe() {
        assert_eq!(
            ImageRef::parse("f", "http://10.0.2.2/k?a=1&b=2").unwrap(),
            ImageRef::Http("http://10.0.2.2/k?a=1&b=2".into())
        );
        assert!(
            ImageRef::parse("f", "https://h/a b")
                .unwrap_err()
                .message
                .contains("whitespace")
        );
        assert!(
            ImageRef::parse("f", "http://h/${x}")
                .unwrap_err()
                .message
                .contains("expand")
        );
        assert!(
            ImageRef::parse("f", "http://h/k#frag")
                .unwrap_err()
                .message
                .contains("fragment")
        );
        assert!(
            ImageRef::parse("f", "http:///k")
                .unwrap_err()
                .message
                .contains("no host")
        );
    }

    #[test]
    fn other_schemes_are_recognised_or_refused_by_name() {
        assert_eq!(
            ImageRef::parse("f", "glance://757274c4-2856-4bd2-bb20-9a4a231e187b")
                .unwrap()
                .scheme(),
            "glance"
        );
        assert_eq!(
            ImageRef::parse("f", "757274c4-2856-4bd2-bb20-9a4a231e187b")
                .unwrap()
                .scheme(),
            "glance"
        );
        assert_eq!(
            ImageRef::parse("f", "file:///srv/k").unwrap().scheme(),
            "file"
        );
        let e = ImageRef::parse("driver_info.deploy_kernel", "ftp://h/k").unwrap_err();
        assert_eq!(e.field, "driver_info.deploy_kernel");
        assert!(
            e.message.contains("unknown image reference scheme") && e.message.contains("\"ftp\""),
            "{e}"
        );
        assert!(ImageRef::parse("f", "").is_err());
    }
}
