//! The iPXE boot interface: what `PUT /v1/nodes/{node}/boot` checks
//! ([`BootService::prepare`]) and what a booting machine gets ([`BootService::render`]).
//!
//! `prepare` resolves the target's image references through the mode's [`Sources`] (in
//! swift mode, a HEAD of each object through a fresh TempURL on the internal endpoint) and
//! returns a [`PreparedBoot`] snapshot. The boot path renders only that snapshot, asking
//! each image's source for its URL at that moment (new TempURLs for every request), so a
//! node that reboots an hour later still gets working URLs, and an edit of `driver_info`
//! has no effect until the next prepare.
//!
//! This module speaks neither HTTP nor SQL, and `render` does no I/O. It never matches on
//! the kind of an image reference: that is the sources' business.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{MasterCache, Progress};
use crate::clock::Clock;
use crate::code::ErrorCode;
use crate::config::Settings;
use crate::images::cached::CachedSource;
use crate::images::glance::{GlanceClient, GlanceSource};
use crate::images::http::HttpSource;
use crate::images::swift::SwiftSource;
use crate::images::swift_keys::SwiftKeys;
use crate::images::{ImageError, ImageSource, Sources};
use crate::ipxe::{
    self, IpxeError, MasterContext, NodeContext, ScriptImage, ScriptNode, Templates,
};
use crate::node::{
    BootRecord, FieldError, Mac, Node, PreparedBoot, PreparedImage, Target, validate_kernel_args,
};
use crate::tempurl::expiry;

/// How long prepare waits for Swift before it reports the object unreachable.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The target needs a reference the node does not have.
    #[error("{field}: is required for target {target}{hint}: set it with PATCH /v1/nodes/{node}")]
    MissingImage {
        field: &'static str,
        target: Target,
        node: uuid::Uuid,
        /// Why the instance's image_source did not provide it, if it was asked.
        hint: String,
    },
    /// A source could not be set up from the settings (e.g. Glance's TLS settings).
    #[error("{0}")]
    Setup(String),
    /// A field that goes into the script is not script-safe.
    #[error("{0}")]
    Field(#[from] FieldError),
    /// An image reference is invalid, unsupported, or its source said no.
    #[error("{0}")]
    Image(#[from] ImageError),
    /// A script could not be rendered (a custom template, or a value that is not
    /// script-safe).
    #[error("{0}")]
    Render(#[from] IpxeError),
}

impl BootError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BootError::MissingImage { .. } => ErrorCode::MissingImage,
            BootError::Field(_) => ErrorCode::InvalidField,
            BootError::Image(e) => e.code(),
            BootError::Render(_) | BootError::Setup(_) => ErrorCode::RenderFailed,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            BootError::MissingImage { field, .. } => Some(field),
            BootError::Field(f) => Some(&f.field),
            BootError::Image(e) => Some(e.field()),
            BootError::Render(_) | BootError::Setup(_) => None,
        }
    }
}

/// `instance_info.image_source`, when it is set: a string, or an error naming the field.
fn image_source(node: &Node) -> Result<Option<String>, FieldError> {
    match node.instance_info.extra.get("image_source") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(FieldError::new(
            "instance_info.image_source",
            format!("must be a string (an image reference such as glance://UUID), not {other}"),
        )),
    }
}

/// The names of a target's kernel and ramdisk in scripts and under `http_root/<uuid>/`
/// (Ironic's labels).
fn labels(target: Target) -> (&'static str, &'static str) {
    match target {
        Target::Instance => ("kernel", "ramdisk"),
        _ => ("deploy_kernel", "deploy_ramdisk"),
    }
}

/// The digest an operator gives for the reference in `field`: the string value of
/// `<field>_checksum` (`driver_info.deploy_kernel` → `driver_info.deploy_kernel_checksum`),
/// `algo:hex` (md5, sha1, sha256, sha512) or bare hex (md5, sha256 or sha512 by its length).
/// Returns it as `algo:hex`.
fn companion_checksum(node: &Node, field: &str) -> Result<Option<String>, BootError> {
    let Some((doc, key)) = field.split_once('.') else {
        return Ok(None);
    };
    let name = format!("{key}_checksum");
    let extra = match doc {
        "driver_info" => &node.driver_info.extra,
        "instance_info" => &node.instance_info.extra,
        _ => return Ok(None),
    };
    let Some(value) = extra.get(&name) else {
        return Ok(None);
    };
    let full = format!("{doc}.{name}");
    let bad = |why: String| BootError::Image(ImageError::Invalid(FieldError::new(&full, why)));
    let text = value
        .as_str()
        .ok_or_else(|| {
            bad(format!(
                "{value} is not a string; write algo:hex, e.g. sha256:<64 hex digits>"
            ))
        })?
        .trim();
    let (algo, hex) = match text.split_once(':') {
        Some((a, h)) => (a.to_ascii_lowercase(), h.to_string()),
        None => {
            let algo = match text.len() {
                32 => "md5",
                64 => "sha256",
                128 => "sha512",
                n => {
                    return Err(bad(format!(
                        "{n} hex digits match no digest; write algo:hex"
                    )));
                }
            };
            (algo.to_string(), text.to_string())
        }
    };
    let parsed = crate::cache::Algo::parse(&algo)
        .ok_or_else(|| bad(format!("{algo:?} is not md5, sha1, sha256 or sha512")))?;
    let expected = crate::cache::Expected::new(parsed, &hex).map_err(|e| bad(e.to_string()))?;
    Ok(Some(format!(
        "{}:{}",
        expected.algo().as_str(),
        expected.hex()
    )))
}

/// A rendered node script.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub script: String,
    /// TempURLs signed for it.
    pub tempurls: u32,
}

/// Everything needed to prepare and render boots; built once from the settings.
#[derive(Debug)]
pub struct BootService {
    sources: Sources,
    /// The temp-URL key in use, in swift mode.
    swift_keys: Option<Arc<SwiftKeys>>,
    /// The Glance client, when Glance images are served.
    glance: Option<Arc<GlanceClient>>,
    /// The cache-mode source, which also fetches.
    cached: Option<Arc<CachedSource>>,
    /// Seconds a rendered URL stays valid (0 when no source signs URLs).
    url_lifetime: u64,
    /// `[ipxe] tempurl_redirect`: scripts name `http_url/<uuid>/<label>` for signed images.
    redirect: bool,
    /// `[deploy] http_url`.
    http_url: String,
    kernel_append_params: String,
    timeout_ms: u64,
    attempts: u32,
    max_delay: u32,
    templates: Templates,
    master: String,
}

impl BootService {
    /// Builds the service from validated settings and compiled templates. `clock` judges
    /// when Keystone tokens and Glance answers are too old.
    pub fn new(
        settings: &Settings,
        templates: Templates,
        clock: Arc<dyn Clock>,
    ) -> Result<BootService, BootError> {
        let o = &settings.options;
        validate_kernel_args("pxe.kernel_append_params", &o.pxe.kernel_append_params)?;
        let master = templates.master(&MasterContext {
            fallback_script: o.ipxe.fallback_script.clone(),
        })?;
        let mut list: Vec<Box<dyn ImageSource>> = vec![Box::new(HttpSource)];
        let mut url_lifetime = 0;
        let mut swift_keys = None;
        let glance_client = match &settings.glance {
            Some(g) => Some(Arc::new(
                GlanceClient::new(g, clock.clone()).map_err(BootError::Setup)?,
            )),
            None => None,
        };
        let glance = glance_client.clone();
        let swift_mode = o.ipxe.use_swift && settings.swift.is_some();
        // Both modes have the cache: in swift mode it serves file:// references and the
        // Glance images that are not in Swift.
        let (cache, _) = MasterCache::open(
            &o.pxe.tftp_master_path,
            o.pxe.image_cache_size.saturating_mul(1024 * 1024),
            Duration::from_secs(o.pxe.image_cache_ttl.saturating_mul(60)),
        )
        .map_err(|e| BootError::Setup(format!("pxe.tftp_master_path: {e}")))?;
        let source = Arc::new(
            CachedSource::new(
                cache,
                o.deploy.http_root.clone(),
                settings.http_url.clone(),
                glance_client.clone(),
                swift_mode || o.pxe.http_passthrough,
                !swift_mode,
            )
            .map_err(BootError::Setup)?,
        );
        let cached = Some(source.clone());
        let hint = match (&settings.swift, swift_mode) {
            (Some(s), true) => {
                url_lifetime = s.duration;
                let keys = Arc::new(SwiftKeys::new(s, clock.clone()));
                swift_keys = Some(keys.clone());
                list.push(Box::new(SwiftSource::new(
                    s.clone(),
                    keys.clone(),
                    SOURCE_TIMEOUT,
                )));
                let hint = match glance_client {
                    Some(client) => {
                        list.push(Box::new(GlanceSource::new(
                            client,
                            SwiftSource::new(s.clone(), keys, SOURCE_TIMEOUT),
                            Some(source.clone()),
                        )));
                        "use swift://CONTAINER/OBJECT, glance://UUID, file:///path or an http(s):// URL"
                    }
                    None => {
                        "use swift://CONTAINER/OBJECT, file:///path or an http(s):// URL, or set \
                         [glance] auth_type and its options to use Glance images"
                    }
                };
                list.push(Box::new(source));
                hint
            }
            _ => {
                // first: it takes http(s) references unless they pass through
                list.insert(0, Box::new(source));
                "use a Glance image (glance://UUID), an http(s):// URL or file:///path, or \
                 swift://CONTAINER/OBJECT with [ipxe] use_swift = true"
            }
        };
        Ok(BootService {
            sources: Sources::new(list, hint),
            swift_keys,
            glance,
            cached,
            redirect: o.ipxe.tempurl_redirect && o.ipxe.use_swift,
            http_url: settings.http_url.clone(),
            url_lifetime,
            kernel_append_params: o.pxe.kernel_append_params.clone(),
            timeout_ms: u64::from(o.pxe.ipxe_timeout) * 1000,
            attempts: o.ipxe.download_attempts,
            max_delay: o.ipxe.retry_max_delay,
            templates,
            master,
        })
    }

    /// `[deploy] http_url`: where nodes reach this conductor's boot listener.
    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    /// The master script, rendered once at start.
    pub fn master_script(&self) -> &str {
        &self.master
    }

    /// The temp-URL key and account in swift mode.
    pub fn swift_keys(&self) -> Option<&Arc<SwiftKeys>> {
        self.swift_keys.as_ref()
    }

    /// Requests sent so far to each upstream service: `(service, count)` for `glance`
    /// (image GETs), `keystone` (token requests) and `swift_auth` (key reads).
    pub fn upstream_requests(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        let mut tokens = 0;
        if let Some(g) = &self.glance {
            out.push(("glance", g.requests()));
            tokens += g.keystone().map_or(0, |k| k.token_requests());
        }
        if let Some(k) = self.swift_keys.as_ref().filter(|k| k.discovers()) {
            let (reads, t) = k.requests();
            out.push(("swift_auth", reads));
            tokens += t;
        }
        if tokens > 0 || out.iter().any(|(s, _)| *s == "glance") {
            out.push(("keystone", tokens));
        }
        out
    }

    /// The image sources of this mode (`ironboot image show`).
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Checks the sources' services (Keystone credentials) at start; for logging only.
    pub async fn probe_sources(&self) -> Vec<Result<String, String>> {
        self.sources.probe().await
    }

    /// Validates and checks what `target` needs, and returns the snapshot to store
    /// (`None` for target none). `now` is Unix seconds.
    pub async fn prepare(
        &self,
        node: &Node,
        target: Target,
        now: i64,
    ) -> Result<Option<PreparedBoot>, BootError> {
        let (mut kernel_field, mut ramdisk_field, kernel, ramdisk, kernel_args) = match target {
            Target::None => return Ok(None),
            Target::Local => {
                return Ok(Some(PreparedBoot {
                    target,
                    boot_mode: node.boot_mode,
                    kernel: None,
                    ramdisk: None,
                    kernel_args: String::new(),
                    http_url: None,
                }));
            }
            Target::Deploy => (
                "driver_info.deploy_kernel",
                "driver_info.deploy_ramdisk",
                &node.driver_info.deploy_kernel,
                &node.driver_info.deploy_ramdisk,
                self.kernel_append_params.clone(),
            ),
            Target::Instance => {
                let args = match &node.instance_info.kernel_append_params {
                    Some(a) => {
                        validate_kernel_args("instance_info.kernel_append_params", a)?;
                        a.clone()
                    }
                    None => self.kernel_append_params.clone(),
                };
                (
                    "instance_info.kernel",
                    "instance_info.ramdisk",
                    &node.instance_info.kernel,
                    &node.instance_info.ramdisk,
                    args,
                )
            }
        };
        let mut kernel = kernel.clone().filter(|v| !v.is_empty());
        let mut ramdisk = ramdisk.clone().filter(|v| !v.is_empty());
        let mut hint = String::new();
        // Ironic's partition images: the image names its kernel and ramdisk.
        if target == Target::Instance
            && (kernel.is_none() || ramdisk.is_none())
            && let Some(source) = image_source(node)?
        {
            const FIELD: &str = "instance_info.image_source";
            match self.sources.boot_images(FIELD, &source).await? {
                Some(found) => {
                    if kernel.is_none() && found.kernel.is_some() {
                        kernel = found.kernel;
                        kernel_field = "instance_info.image_source.kernel_id";
                    }
                    if ramdisk.is_none() && found.ramdisk.is_some() {
                        ramdisk = found.ramdisk;
                        ramdisk_field = "instance_info.image_source.ramdisk_id";
                    }
                    hint = format!(
                        ", and instance_info.image_source ({}) has no {} property (a \
                             whole-disk image boots with target local)",
                        found.about,
                        if kernel.is_none() {
                            "kernel_id"
                        } else {
                            "ramdisk_id"
                        }
                    );
                }
                None => {
                    hint = format!(
                        ", and instance_info.image_source {source:?} names no kernel and \
                             ramdisk (only a Glance image's kernel_id and ramdisk_id properties do)"
                    );
                }
            }
        }
        let required = |field: &'static str, value: Option<String>| {
            value.ok_or_else(|| BootError::MissingImage {
                field,
                target,
                node: node.uuid,
                hint: hint.clone(),
            })
        };
        let kernel = required(kernel_field, kernel)?;
        let ramdisk = required(ramdisk_field, ramdisk)?;
        // the node may choose for its http(s) references: passed through, or cached
        let http_kind = match node.instance_info.extra.get("http_passthrough") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(Sources::http_source(*b)),
            Some(serde_json::Value::String(v)) if v == "true" || v == "false" => {
                Some(Sources::http_source(v == "true"))
            }
            Some(other) => {
                return Err(BootError::Image(ImageError::Invalid(FieldError::new(
                    "instance_info.http_passthrough",
                    format!("{other} is not true or false"),
                ))));
            }
        };
        let check = |field: &'static str, text: String| async move {
            match http_kind {
                Some(kind) => self.sources.check_as(kind, field, &text, now).await,
                None => self.sources.check(field, &text, now).await,
            }
        };
        let (k, r) = tokio::join!(
            check(kernel_field, kernel.clone()),
            check(ramdisk_field, ramdisk.clone())
        );
        let (klabel, rlabel) = labels(target);
        // an operator's digest for an http(s) or file reference: `<field>_checksum`
        // next to it (`driver_info.deploy_kernel_checksum`, `instance_info.kernel_checksum`)
        let place = |mut image: PreparedImage,
                     label: &str,
                     field: &str|
         -> Result<PreparedImage, BootError> {
            if Sources::is_cached(&image) {
                image.location = format!("{}/{label}", node.uuid);
                if image.checksum.is_none() {
                    image.checksum = companion_checksum(node, field)?;
                }
            }
            Ok(image)
        };
        Ok(Some(PreparedBoot {
            target,
            boot_mode: node.boot_mode,
            kernel: Some(place(k?, klabel, kernel_field)?),
            ramdisk: Some(place(r?, rlabel, ramdisk_field)?),
            kernel_args,
            http_url: None,
        }))
    }

    /// The script for a node booting from `mac` (`bootif` is what follows `BOOTIF=01-`),
    /// or `None` when the node has nothing to boot. `now` is Unix seconds. No I/O.
    pub fn render(
        &self,
        record: &BootRecord,
        mac: &Mac,
        bootif: &str,
        now: i64,
    ) -> Result<Option<Rendered>, BootError> {
        let Some(prepared) = record
            .prepared
            .as_ref()
            .filter(|_| record.target != Target::None)
        else {
            return Ok(None);
        };
        let mut tempurls = 0;
        let expires = now.saturating_add(i64::try_from(self.url_lifetime).unwrap_or(i64::MAX));
        let (kname, rname) = labels(prepared.target);
        let mut image =
            |name: &str, image: &Option<PreparedImage>| -> Result<Option<ScriptImage>, BootError> {
                let Some(image) = image else { return Ok(None) };
                let mut url = String::with_capacity(image.location.len() * 2 + 160);
                if self.redirect && Sources::is_signed(image) {
                    // signed when the node follows it (`redirect_url`)
                    url.push_str(&self.http_url);
                    url.push('/');
                    url.push_str(&record.uuid.to_string());
                    url.push('/');
                    url.push_str(name);
                } else if self.sources.url(
                    name,
                    image,
                    prepared.http_url.as_deref(),
                    expires,
                    &mut url,
                )? {
                    tempurls += 1;
                }
                Ok(Some(ScriptImage {
                    name: name.into(),
                    url,
                }))
            };
        let kernel = image(kname, &prepared.kernel)?;
        let initrd = image(rname, &prepared.ramdisk)?;
        let ctx = NodeContext {
            node: ScriptNode {
                uuid: record.uuid.to_string(),
                name: record.name.clone(),
            },
            mac: mac.hexhyp(),
            bootif: bootif.to_string(),
            target: prepared.target.to_string(),
            boot_mode: prepared.boot_mode.to_string(),
            kernel,
            initrd,
            kernel_args: prepared.kernel_args.clone(),
            timeout_ms: self.timeout_ms,
            attempts: self.attempts,
            delays: ipxe::retry_delays(record.uuid.as_bytes(), self.attempts, self.max_delay),
            expires_at: if tempurls > 0 {
                expiry::iso8601(expires)
            } else {
                String::new()
            },
        };
        let script = self.templates.node(&ctx)?;
        Ok(Some(Rendered { script, tempurls }))
    }

    /// Whether scripts name `http_url/<uuid>/<label>` for signed images
    /// (`[ipxe] tempurl_redirect` in swift mode).
    pub fn redirects(&self) -> bool {
        self.redirect
    }

    /// With `[ipxe] tempurl_redirect`: the TempURL, signed now (`now` is Unix seconds),
    /// of the image a node's script names `<label>`, or `None` when the node's prepared
    /// boot has no signed image of that label.
    pub fn redirect_url(
        &self,
        record: &BootRecord,
        label: &str,
        now: i64,
    ) -> Result<Option<String>, BootError> {
        if !self.redirect || record.target == Target::None {
            return Ok(None);
        }
        let Some(prepared) = &record.prepared else {
            return Ok(None);
        };
        let (kname, rname) = labels(prepared.target);
        let image = match label {
            l if l == kname => &prepared.kernel,
            l if l == rname => &prepared.ramdisk,
            _ => return Ok(None),
        };
        let Some(image) = image.as_ref().filter(|i| Sources::is_signed(i)) else {
            return Ok(None);
        };
        let expires = now.saturating_add(i64::try_from(self.url_lifetime).unwrap_or(i64::MAX));
        let mut url = String::with_capacity(image.location.len() * 2 + 160);
        self.sources.url(
            label,
            image,
            prepared.http_url.as_deref(),
            expires,
            &mut url,
        )?;
        Ok(Some(url))
    }

    /// Fetches the cached images of `prepared` into the master cache and links them into
    /// `http_root/<node uuid>/<label>` (cache mode; nothing to do otherwise). `progress`
    /// follows the kernel's and the ramdisk's bytes. `now` is Unix seconds.
    pub async fn fetch(
        &self,
        prepared: &PreparedBoot,
        progress: [Arc<Progress>; 2],
        now: i64,
    ) -> Result<(), BootError> {
        let Some(cached) = &self.cached else {
            return Ok(());
        };
        let (klabel, rlabel) = labels(prepared.target);
        let [pk, pr] = progress;
        let fetch = |label: &'static str, image: &Option<PreparedImage>, p: Arc<Progress>| {
            let image = image.clone();
            async move {
                match image {
                    Some(i) if Sources::is_cached(&i) => {
                        cached.fetch(label, &i, Some(p), now).await
                    }
                    _ => Ok(()),
                }
            }
        };
        let (k, r) = tokio::join!(
            fetch(klabel, &prepared.kernel, pk),
            fetch(rlabel, &prepared.ramdisk, pr)
        );
        k?;
        r?;
        Ok(())
    }

    /// Removes the node's cached images from `http_root/<uuid>/` (target none, or the
    /// node deleted); the master files become evictable once nothing links them.
    pub async fn remove_images(&self, uuid: uuid::Uuid) {
        let Some(cached) = &self.cached else { return };
        let dir = cached.node_dir(&uuid);
        for label in ["deploy_kernel", "deploy_ramdisk", "kernel", "ramdisk"] {
            match tokio::fs::remove_file(dir.join(label)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(node = %uuid, "cannot remove {}/{label}: {e}", dir.display())
                }
            }
        }
        // the mirror's config may still be there; the directory goes when it is empty
        let _ = tokio::fs::remove_dir(&dir).await;
    }

    /// The master image cache, in cache mode.
    pub fn cache(&self) -> Option<&MasterCache> {
        self.cached.as_ref().map(|c| c.cache())
    }

    /// How long rendered TempURLs stay valid (0 without Swift).
    pub fn url_lifetime(&self) -> Duration {
        Duration::from_secs(self.url_lifetime)
    }
}
