//! iPXE scripts: the master script (`boot.ipxe`) and the per-node script, rendered from
//! minijinja templates that are compiled in and can be replaced by files named in the config
//! (`[pxe] ipxe_boot_script`, `[pxe] ipxe_config_template`).
//!
//! What the built-in templates do, and why (see `../shared/notes/ipxe-client.md`):
//! * every image is fetched with `--name`, and the kernel line carries `initrd=<name>`
//!   (UEFI with Debian's 2019 iPXE cannot find the initrd otherwise) and
//!   `BOOTIF=01-<mac>` with the MAC the script was requested for (on a machine with several
//!   NICs iPXE's `${mac}` may name another one);
//! * `imgfree` before every attempt, so a stray image never becomes an initrd;
//! * `--timeout` only when `[pxe] ipxe_timeout` is above 0 (iPXE's is an idle timeout);
//! * a retry loop whose back-off doubles up to `[ipxe] retry_max_delay`, plus jitter that
//!   is computed here per node (iPXE has no random numbers), so a rack that lost power does
//!   not retry in lockstep;
//! * the final failure reboots: Debian's iPXE has no `poweroff`;
//! * operators are whole-word `||`, never Ironic's single `|`.
//!
//! URLs are written as they are: iPXE has no quoting, and `&` is only an operator as a
//! separate word. Every variable that reaches a script is checked first by the rules in
//! [`crate::script`].
//!
//! This module does no I/O: callers pass template sources and finished URLs.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The built-in master script template.
pub const DEFAULT_BOOT_SCRIPT: &str = include_str!("templates/boot.ipxe.j2");
/// The built-in per-node template.
pub const DEFAULT_NODE_TEMPLATE: &str = include_str!("templates/node.ipxe.j2");

const BOOT: &str = "boot.ipxe";
const NODE: &str = "node.ipxe";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpxeError {
    #[error("template {name}: {detail}")]
    Template { name: String, detail: String },
    #[error("{field}: {value:?} cannot go into an iPXE script: it {reason}")]
    Unsafe {
        field: String,
        value: String,
        reason: crate::script::Unsafe,
    },
}

/// Checks a URL or another single word before it goes into a script (see
/// [`crate::script`], the one place with the rules).
pub fn check_url(field: &str, url: &str) -> Result<(), IpxeError> {
    crate::script::check_word(url).map_err(|reason| IpxeError::Unsafe {
        field: field.into(),
        value: url.into(),
        reason,
    })
}

fn check_line(field: &str, text: &str) -> Result<(), IpxeError> {
    crate::script::check_line(text, crate::node::MAX_KERNEL_ARGS).map_err(|reason| {
        IpxeError::Unsafe {
            field: field.into(),
            value: text.into(),
            reason,
        }
    })
}

/// Seconds to sleep after each failed attempt (one entry per attempt but the last). The
/// ceiling doubles from 2 s up to `max_delay`, and each delay is drawn between half the
/// ceiling and the ceiling ("equal jitter"), so no delay exceeds `max_delay`. The draw is a
/// hash of `seed` (the node's UUID) and the attempt: one node always gets the same
/// schedule, different nodes get different ones.
pub fn retry_delays(seed: &[u8], attempts: u32, max_delay: u32) -> Vec<u32> {
    (1..attempts)
        .map(|attempt| {
            let ceiling = 2u32.saturating_pow(attempt).min(max_delay).max(1);
            let half = ceiling / 2;
            half + (fnv1a(seed, attempt) % u64::from(ceiling - half + 1)) as u32
        })
        .collect()
}

fn fnv1a(seed: &[u8], salt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seed.iter().chain(&salt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The master script's variables.
#[derive(Debug, Clone, Serialize)]
pub struct MasterContext {
    /// `[ipxe] fallback_script`: a path relative to boot.ipxe, or an absolute URL.
    pub fallback_script: Option<String>,
}

/// An image in a node script.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptImage {
    /// The iPXE image name (`--name`), also used in `initrd=`.
    pub name: String,
    pub url: String,
}

/// Identity of the node in a script.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptNode {
    pub uuid: String,
    pub name: Option<String>,
}

/// The per-node script's variables. Template authors can rely on all of them.
#[derive(Debug, Clone, Serialize)]
pub struct NodeContext {
    pub node: ScriptNode,
    /// The MAC the script was requested for, as `aa-bb-cc-dd-ee-ff`.
    pub mac: String,
    /// What follows `BOOTIF=01-`: the requested MAC for per-MAC scripts, `${mac:hexhyp}` in
    /// the static mirror's config, which all of a node's MACs share.
    pub bootif: String,
    /// `deploy`, `instance` or `local`.
    pub target: String,
    /// `bios` or `uefi`.
    pub boot_mode: String,
    /// Absent for local boot.
    pub kernel: Option<ScriptImage>,
    pub initrd: Option<ScriptImage>,
    pub kernel_args: String,
    /// `--timeout` in milliseconds; 0 leaves it out.
    pub timeout_ms: u64,
    pub attempts: u32,
    /// Seconds to sleep after attempt 1, 2, … (see [`retry_delays`]).
    pub delays: Vec<u32>,
    /// When the URLs in the script stop working (ISO 8601), or empty.
    pub expires_at: String,
}

/// The compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles the templates (the built-in ones when `None`) and renders each once with
    /// sample values, so a broken template is found at start-up, not at the first boot.
    pub fn new(
        boot_script: Option<String>,
        node_template: Option<String>,
    ) -> Result<Templates, IpxeError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        for (name, source) in [
            (
                BOOT,
                boot_script.unwrap_or_else(|| DEFAULT_BOOT_SCRIPT.to_string()),
            ),
            (
                NODE,
                node_template.unwrap_or_else(|| DEFAULT_NODE_TEMPLATE.to_string()),
            ),
        ] {
            env.add_template_owned(name, source)
                .map_err(|e| IpxeError::Template {
                    name: name.into(),
                    detail: format!("{e:#}"),
                })?;
        }
        let templates = Templates { env };
        templates.master(&MasterContext {
            fallback_script: Some("inspector.ipxe".into()),
        })?;
        for target in ["deploy", "local"] {
            for boot_mode in ["bios", "uefi"] {
                templates.node(&sample_context(target, boot_mode))?;
            }
        }
        Ok(templates)
    }

    pub fn master(&self, ctx: &MasterContext) -> Result<String, IpxeError> {
        if let Some(url) = &ctx.fallback_script {
            check_url("ipxe.fallback_script", url)?;
        }
        self.render(BOOT, ctx)
    }

    /// Renders a node script after checking every variable that comes from a node, an
    /// image or the configuration. (The UUID, the MAC, `bootif` and the numbers are
    /// ironboot's own, from typed values.)
    pub fn node(&self, ctx: &NodeContext) -> Result<String, IpxeError> {
        for (field, image) in [("kernel", &ctx.kernel), ("initrd", &ctx.initrd)] {
            if let Some(image) = image {
                check_url(field, &image.url)?;
                check_url(field, &image.name)?;
            }
        }
        if let Some(name) = &ctx.node.name {
            check_url("name", name)?;
        }
        check_line("kernel_args", &ctx.kernel_args)?;
        self.render(NODE, ctx)
    }

    fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, IpxeError> {
        let template = self
            .env
            .get_template(name)
            .expect("templates are added in new()");
        template
            .render(minijinja::value::Serde(ctx))
            .map_err(|e| IpxeError::Template {
                name: name.into(),
                detail: format!("{e:#}"),
            })
    }
}

fn sample_context(target: &str, boot_mode: &str) -> NodeContext {
    let netboot = target != "local";
    NodeContext {
        node: ScriptNode {
            uuid: "00000000-0000-0000-0000-000000000000".into(),
            name: Some("sample".into()),
        },
        mac: "52-54-00-12-34-56".into(),
        bootif: "${mac:hexhyp}".into(),
        target: target.into(),
        boot_mode: boot_mode.into(),
        kernel: netboot.then(|| ScriptImage {
            name: "deploy_kernel".into(),
            url: "http://192.0.2.1/k".into(),
        }),
        initrd: netboot.then(|| ScriptImage {
            name: "deploy_ramdisk".into(),
            url: "http://192.0.2.1/r".into(),
        }),
        kernel_args: "nofb vga=normal".into(),
        timeout_ms: 0,
        attempts: 3,
        delays: vec![2, 4],
        expires_at: String::new(),
    }
}

#[cfg(test)]
mod tests;
