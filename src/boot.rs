//! The iPXE boot interface: what `PUT /v1/nodes/{node}/boot` does ([`BootService::prepare`])
//! and what a booting machine gets ([`BootService::render`]).
//!
//! `prepare` resolves the target's image references, checks them (in swift mode, a HEAD of
//! each object through a fresh TempURL on the internal endpoint) and returns a
//! [`PreparedBoot`] snapshot. The boot path renders only that snapshot, signing new
//! TempURLs for every request, so a node that reboots an hour later still gets working
//! URLs, and an edit of `driver_info` has no effect until the next prepare.
//!
//! This module speaks neither HTTP nor SQL.

use std::time::Duration;

use crate::config::{Settings, SwiftSettings};
use crate::images::ImageRef;
use crate::images::swift::{SwiftClient, SwiftError};
use crate::ipxe::{
    self, IpxeError, MasterContext, NodeContext, ScriptImage, ScriptNode, Templates,
};
use crate::node::{FieldError, Mac, Node, PreparedBoot, Target, validate_kernel_args};
use crate::store::BootRecord;
use crate::tempurl::{Signer, expiry};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A field of the node is missing or invalid.
    #[error("{0}")]
    Field(#[from] FieldError),
    /// A reference scheme that this mode cannot serve.
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
    /// Swift said no, or could not be reached.
    #[error("{field}: {source}")]
    Swift { field: String, source: SwiftError },
    /// A script could not be rendered (a custom template, or a URL that is not script-safe).
    #[error("{0}")]
    Render(#[from] IpxeError),
}

/// A rendered node script.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub script: String,
    /// TempURLs signed for it.
    pub tempurls: u32,
}

#[derive(Debug)]
struct SwiftBoot {
    settings: SwiftSettings,
    signer: Signer,
    client: SwiftClient,
}

/// Everything needed to prepare and render boots; built once from the settings.
#[derive(Debug)]
pub struct BootService {
    swift: Option<SwiftBoot>,
    use_swift: bool,
    kernel_append_params: String,
    timeout_ms: u64,
    attempts: u32,
    max_delay: u32,
    templates: Templates,
    master: String,
}

impl BootService {
    /// Builds the service; `boot_script`/`node_template` are the sources of the template
    /// files named in the config, if any.
    pub fn new(
        settings: &Settings,
        boot_script: Option<String>,
        node_template: Option<String>,
    ) -> Result<BootService, BootError> {
        let o = &settings.options;
        validate_kernel_args("pxe.kernel_append_params", &o.pxe.kernel_append_params)?;
        let templates = Templates::new(boot_script, node_template)?;
        let master = templates.master(&MasterContext {
            fallback_script: o.ipxe.fallback_script.clone(),
        })?;
        let swift = match (&settings.swift, o.ipxe.use_swift) {
            (Some(s), true) => Some(SwiftBoot {
                signer: Signer::new(s.key.expose().as_bytes(), s.digest),
                client: SwiftClient::new(s.clone(), Duration::from_secs(10)),
                settings: s.clone(),
            }),
            _ => None,
        };
        Ok(BootService {
            swift,
            use_swift: o.ipxe.use_swift,
            kernel_append_params: o.pxe.kernel_append_params.clone(),
            timeout_ms: u64::from(o.pxe.ipxe_timeout) * 1000,
            attempts: o.ipxe.download_attempts,
            max_delay: o.ipxe.retry_max_delay,
            templates,
            master,
        })
    }

    /// The master script, rendered once at start.
    pub fn master_script(&self) -> &str {
        &self.master
    }

    /// Validates and checks what `target` needs, and returns the snapshot to store
    /// (`None` for target none).
    pub async fn prepare(
        &self,
        node: &Node,
        target: Target,
        now: i64,
    ) -> Result<Option<PreparedBoot>, BootError> {
        let (kernel_field, ramdisk_field, kernel, ramdisk, kernel_args) = match target {
            Target::None => return Ok(None),
            Target::Local => {
                return Ok(Some(PreparedBoot {
                    target,
                    boot_mode: node.boot_mode,
                    kernel: None,
                    ramdisk: None,
                    kernel_args: String::new(),
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
        let required = |field: &str, value: &Option<String>| -> Result<String, BootError> {
            value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "is required for target {target}: set it with PATCH /v1/nodes/{}",
                        node.uuid
                    ),
                )
                .into()
            })
        };
        let kernel = required(kernel_field, kernel)?;
        let ramdisk = required(ramdisk_field, ramdisk)?;
        let (k, r) = tokio::join!(
            self.check_ref(kernel_field, &kernel, now),
            self.check_ref(ramdisk_field, &ramdisk, now)
        );
        k?;
        r?;
        Ok(Some(PreparedBoot {
            target,
            boot_mode: node.boot_mode,
            kernel: Some(kernel),
            ramdisk: Some(ramdisk),
            kernel_args,
        }))
    }

    async fn check_ref(&self, field: &str, text: &str, now: i64) -> Result<(), BootError> {
        match ImageRef::parse(field, text)? {
            ImageRef::Http(_) => Ok(()),
            ImageRef::Swift { container, object } => {
                let swift = self.swift.as_ref().ok_or_else(|| BootError::Unsupported {
                    field: field.into(),
                    message: "swift:// references need [ipxe] use_swift = true; in cache mode use an http(s):// URL".into(),
                })?;
                let path = SwiftClient::object_path(&swift.settings, &container, &object);
                swift
                    .client
                    .head(&path, now)
                    .await
                    .map_err(|source| BootError::Swift {
                        field: field.into(),
                        source,
                    })?;
                Ok(())
            }
            other => Err(BootError::Unsupported {
                field: field.into(),
                message: format!(
                    "{} references are not supported yet (they come with the local image cache); use swift://CONTAINER/OBJECT{} or an http(s):// URL",
                    other.scheme(),
                    if self.use_swift {
                        ""
                    } else {
                        " with [ipxe] use_swift = true"
                    }
                ),
            }),
        }
    }

    fn image_url(
        &self,
        field: &str,
        text: &str,
        expires: i64,
        minted: &mut u32,
    ) -> Result<String, BootError> {
        match ImageRef::parse(field, text)? {
            ImageRef::Http(url) => Ok(url),
            ImageRef::Swift { container, object } => {
                let swift = self.swift.as_ref().ok_or_else(|| BootError::Unsupported {
                    field: field.into(),
                    message: "swift:// reference, but [ipxe] use_swift is now false; prepare the node again".into(),
                })?;
                let path = SwiftClient::object_path(&swift.settings, &container, &object);
                let mut url = String::with_capacity(path.len() * 2 + 160);
                swift
                    .signer
                    .write_get_url(
                        &mut url,
                        &swift.settings.public_endpoint,
                        &path,
                        expires,
                        swift.settings.ip_range.as_deref(),
                    )
                    .map_err(|e| FieldError::new(field, e.to_string()))?;
                *minted += 1;
                Ok(url)
            }
            other => Err(BootError::Unsupported {
                field: field.into(),
                message: format!("{} references are not supported yet", other.scheme()),
            }),
        }
    }

    /// The script for a node booting from `mac` (`bootif` is what follows `BOOTIF=01-`),
    /// or `None` when the node has nothing to boot.
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
        let expires = now
            + self
                .swift
                .as_ref()
                .map_or(0, |s| s.settings.duration as i64);
        let (kname, rname) = match prepared.target {
            Target::Instance => ("kernel", "ramdisk"),
            _ => ("deploy_kernel", "deploy_ramdisk"),
        };
        let mut image = |field: &str,
                         name: &str,
                         r: &Option<String>|
         -> Result<Option<ScriptImage>, BootError> {
            r.as_deref()
                .map(|text| {
                    Ok(ScriptImage {
                        name: name.into(),
                        url: self.image_url(field, text, expires, &mut tempurls)?,
                    })
                })
                .transpose()
        };
        let kernel = image(kname, kname, &prepared.kernel)?;
        let initrd = image(rname, rname, &prepared.ramdisk)?;
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

    /// How long rendered TempURLs stay valid (0 without Swift).
    pub fn url_lifetime(&self) -> Duration {
        Duration::from_secs(self.swift.as_ref().map_or(0, |s| s.settings.duration))
    }
}
