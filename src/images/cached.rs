//! Cache mode (`[ipxe] use_swift = false`): Glance images, `http(s)://` and `file://`
//! references are fetched once into the master cache (`[pxe] tftp_master_path`),
//! hardlinked into `[deploy] http_root/<node uuid>/<label>`, and served by ironboot's boot
//! listener at `[deploy] http_url/<node uuid>/<label>`.
//!
//! `check` (inside the API request) only validates the reference and, for Glance, reads the
//! image's metadata (it must be active; its `os_hash_algo`/`os_hash_value`, or its md5
//! `checksum`, become the digest the bytes must have). [`CachedSource::fetch`] (after the
//! request, in the background) downloads, verifies and links. Render needs no I/O: the URL
//! is `http_url` + the snapshot's location.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::glance::{GlanceClient, GlanceError, image_id};
use super::{CheckFuture, ImageError, ImageRef, ImageSource};
use crate::cache::{
    Algo, CacheError, CacheKey, Expected, FileOrigin, HttpOrigin, MasterCache, Origin, Progress,
};
use crate::node::{FieldError, PreparedImage, SourceKind};

/// How long a download may go without a byte before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache-mode image source.
#[derive(Debug)]
pub struct CachedSource {
    cache: MasterCache,
    http_root: PathBuf,
    http_url: String,
    glance: Option<Arc<GlanceClient>>,
    /// Follows redirects (http sources); Glance downloads use `no_redirects`.
    http: reqwest::Client,
    no_redirects: reqwest::Client,
    /// `http(s)://` references stay with the http source (`[pxe] http_passthrough`).
    passthrough: bool,
    /// Whether it takes Glance references itself (cache mode), or only those that the
    /// swift-mode Glance source hands over because they are not in Swift.
    accept_glance: bool,
}

impl CachedSource {
    /// Why this source does not take `image` (for `ironboot cache fetch`), when it does not.
    pub fn refusal(&self, reference: &str, image: &ImageRef) -> Option<String> {
        if super::ImageSource::accepts(self, image) {
            return None;
        }
        Some(match image {
            ImageRef::Swift { .. } => format!(
                "{reference}: swift:// objects are served from Swift, not cached; give an \
                 http(s)://, file:// or Glance reference"
            ),
            ImageRef::Http(_) => {
                format!("{reference}: http(s) references are passed through here, not cached")
            }
            _ => format!(
                "{reference}: Glance images need [glance] auth_type and its options in the \
                 configuration"
            ),
        })
    }

    pub fn new(
        cache: MasterCache,
        http_root: PathBuf,
        http_url: String,
        glance: Option<Arc<GlanceClient>>,
        passthrough: bool,
        accept_glance: bool,
    ) -> Result<CachedSource, String> {
        let http = HttpOrigin::client(CONNECT_TIMEOUT, READ_TIMEOUT).map_err(|e| e.to_string())?;
        let no_redirects = reqwest::Client::builder()
            .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CachedSource {
            cache,
            http_root,
            http_url: http_url.trim_end_matches('/').to_string(),
            glance,
            http,
            no_redirects,
            passthrough,
            accept_glance,
        })
    }

    pub fn cache(&self) -> &MasterCache {
        &self.cache
    }

    fn cache_error(field: &str, source: CacheError) -> ImageError {
        ImageError::Cache {
            field: field.into(),
            source: Box::new(source),
        }
    }

    /// The cache key of a reference: a Glance image's id, else uuid5 of the reference.
    pub fn key(field: &str, reference: &str) -> Result<CacheKey, ImageError> {
        let image = ImageRef::parse(field, reference).map_err(ImageError::Invalid)?;
        match &image {
            ImageRef::Glance(_) => {
                CacheKey::glance(&image_id(field, &image)?).map_err(|e| Self::cache_error(field, e))
            }
            _ => Ok(CacheKey::url(reference)),
        }
    }

    /// Where the bytes of `reference` come from (for `ironboot cache fetch` too).
    pub async fn origin(
        &self,
        field: &str,
        reference: &str,
    ) -> Result<Arc<dyn Origin>, ImageError> {
        let image = ImageRef::parse(field, reference).map_err(ImageError::Invalid)?;
        let origin: Arc<dyn Origin> = match &image {
            ImageRef::Http(url) => Arc::new(
                HttpOrigin::new(self.http.clone(), url, Some(READ_TIMEOUT))
                    .map_err(|e| Self::cache_error(field, e))?,
            ),
            ImageRef::File(_) => {
                Arc::new(FileOrigin::from_url(reference).map_err(|e| Self::cache_error(field, e))?)
            }
            ImageRef::Glance(_) => {
                let id = image_id(field, &image)?;
                let client = self.glance_client(field)?;
                let (url, token) = client
                    .file_request(&id)
                    .await
                    .map_err(|e| glance(field, e))?;
                // an active image's data never changes: its os_hash names it
                let mut origin =
                    HttpOrigin::new(self.no_redirects.clone(), &url, Some(READ_TIMEOUT))
                        .map_err(|e| Self::cache_error(field, e))?
                        .immutable();
                if let Some(t) = token {
                    origin =
                        origin.header(reqwest::header::HeaderName::from_static("x-auth-token"), t);
                }
                Arc::new(origin)
            }
            other => return Err(ImageError::not_mine(field, other, "cached")),
        };
        Ok(origin)
    }

    fn glance_client(&self, field: &str) -> Result<&Arc<GlanceClient>, ImageError> {
        self.glance.as_ref().ok_or_else(|| ImageError::Unsupported {
            field: field.into(),
            message: "Glance images need [glance] auth_type and its options".into(),
        })
    }

    /// Downloads (or revalidates) the image of `prepared` into the cache and links it at
    /// `http_root/<location>`. `now` is Unix seconds.
    pub async fn fetch(
        &self,
        field: &str,
        prepared: &PreparedImage,
        progress: Option<Arc<Progress>>,
        now: i64,
    ) -> Result<(), ImageError> {
        let key = Self::key(field, &prepared.reference)?;
        let origin = self.origin(field, &prepared.reference).await?;
        let expected = match &prepared.checksum {
            Some(text) => Some(parse_checksum(field, text)?),
            None => None,
        };
        self.cache
            .fetch(&key, origin, expected, progress, now)
            .await
            .map_err(|e| Self::cache_error(field, e))?;
        let dest = self.dest(field, &prepared.location)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                Self::cache_error(
                    field,
                    CacheError::io(format!("cannot create {}", dir.display()), &e),
                )
            })?;
        }
        self.cache
            .link(&key, &dest)
            .await
            .map_err(|e| Self::cache_error(field, e))?;
        Ok(())
    }

    /// `http_root/<uuid>/<label>`, refusing anything else.
    fn dest(&self, field: &str, location: &str) -> Result<PathBuf, ImageError> {
        let ok = location.split('/').count() == 2
            && location.split('/').all(|s| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !ok {
            return Err(ImageError::Invalid(FieldError::new(
                field,
                format!("{location:?} is not <node uuid>/<label>"),
            )));
        }
        Ok(self.http_root.join(location))
    }

    /// The node's directory under `http_root`, which teardown removes.
    pub fn node_dir(&self, uuid: &uuid::Uuid) -> PathBuf {
        self.http_root.join(uuid.to_string())
    }

    pub fn http_root(&self) -> &Path {
        &self.http_root
    }
}

fn glance(field: &str, e: GlanceError) -> ImageError {
    ImageError::Glance {
        field: field.into(),
        source: Box::new(e),
    }
}

/// `algo:hex` as stored in a snapshot.
pub fn parse_checksum(field: &str, text: &str) -> Result<Expected, ImageError> {
    let bad = || {
        ImageError::Invalid(FieldError::new(
            field,
            format!("the stored checksum {text:?} is not algo:hex"),
        ))
    };
    let (algo, hex) = text.split_once(':').ok_or_else(bad)?;
    let algo = Algo::parse(algo).ok_or_else(bad)?;
    Expected::new(algo, hex).map_err(|e| CachedSource::cache_error(field, e))
}

impl ImageSource for CachedSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Cache
    }

    fn accepts(&self, image: &ImageRef) -> bool {
        match image {
            ImageRef::Http(_) => !self.passthrough,
            ImageRef::File(_) => true,
            ImageRef::Glance(_) => self.accept_glance && self.glance.is_some(),
            ImageRef::Swift { .. } => false,
        }
    }

    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        _now: i64,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let checksum = match image {
                ImageRef::Glance(_) => {
                    let id = image_id(field, image)?;
                    let info = self
                        .glance_client(field)?
                        .show(&id)
                        .await
                        .map_err(|e| glance(field, e))?;
                    if info.status != "active" {
                        return Err(glance(
                            field,
                            GlanceError::NotActive {
                                id: info.id.clone(),
                                status: info.status.clone(),
                            },
                        ));
                    }
                    Expected::from_glance(
                        info.os_hash_algo.as_deref(),
                        info.os_hash_value.as_deref(),
                        info.checksum.as_deref(),
                    )
                    .map_err(|e| Self::cache_error(field, e))?
                    .map(|e| format!("{}:{}", e.algo().as_str(), e.hex()))
                }
                ImageRef::File(_) => {
                    FileOrigin::from_url(text).map_err(|e| Self::cache_error(field, e))?;
                    None
                }
                _ => None,
            };
            Self::key(field, text)?;
            Ok(PreparedImage {
                reference: text.to_string(),
                source: SourceKind::Cache,
                // `prepare` sets `<node uuid>/<label>`
                location: String::new(),
                checksum,
            })
        })
    }

    fn boot_images<'a>(
        &'a self,
        field: &'a str,
        image: &'a ImageRef,
    ) -> super::BootImagesFuture<'a> {
        Box::pin(async move {
            let ImageRef::Glance(_) = image else {
                return Ok(None);
            };
            let id = image_id(field, image)?;
            let info = self
                .glance_client(field)?
                .show(&id)
                .await
                .map_err(|e| glance(field, e))?;
            Ok(Some(super::BootImages {
                kernel: info.kernel_id.clone(),
                ramdisk: info.ramdisk_id.clone(),
                about: format!("Glance image {}", info.id),
            }))
        })
    }

    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError> {
        match image {
            ImageRef::Http(_) | ImageRef::File(_) | ImageRef::Glance(_) => Ok(String::new()),
            other => Err(ImageError::not_mine(field, other, "cached")),
        }
    }

    fn url(
        &self,
        _field: &str,
        location: &str,
        _expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        self.url_at(_field, location, None, _expires, out)
    }

    fn url_at(
        &self,
        _field: &str,
        location: &str,
        base: Option<&str>,
        _expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        out.push_str(base.unwrap_or(&self.http_url).trim_end_matches('/'));
        out.push('/');
        out.push_str(location);
        Ok(false)
    }
}
