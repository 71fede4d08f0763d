//! The option table: every option ironboot reads, in one place. Names and defaults follow
//! Ironic where Ironic has the option; options Ironic lacks are marked "ironboot".
//!
//! To add an option, add one entry here: its help (doc comment), type, default, deprecated
//! names and per-value check. Checks that involve several options live in `validate.rs`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::macros::{DefaultValue, options};
use super::secret::Secret;
use super::value::AuthStrategy;
use crate::tempurl::Digest;

fn default_state_path() -> String {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective user; no libc call needed.
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        return "/var/lib/ironboot".into();
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return format!("{}/ironboot", PathBuf::from(dir).display());
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => format!("{}/.local/state/ironboot", PathBuf::from(home).display()),
        None => "./ironboot-state".into(),
    }
}

fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

const STATE_PATH: DefaultValue = DefaultValue::Computed {
    value: default_state_path,
    sample: "/var/lib/ironboot",
};
const HOST: DefaultValue = DefaultValue::Computed {
    value: default_host,
    sample: "localhost",
};
const UNSET: DefaultValue = DefaultValue::Unset;

fn port(p: &u16) -> Result<(), String> {
    if *p == 0 {
        Err("must be a TCP port between 1 and 65535".into())
    } else {
        Ok(())
    }
}

options! {
    /// Process-wide options.
    ["DEFAULT"] default: DefaultSection {
        /// Top-level directory for ironboot's state: the SQLite database and, in cache mode,
        /// the image cache. Other options may refer to it as $state_path. The default is
        /// /var/lib/ironboot for root, else $XDG_STATE_HOME/ironboot or ~/.local/state/ironboot.
        state_path: PathBuf = STATE_PATH;
        /// Name of this conductor; defaults to this machine's hostname. Several conductors
        /// sharing one database must have different names.
        host: String = HOST, check |h: &String| if h.trim().is_empty() { Err("must not be empty".into()) } else { Ok(()) };
    }

    /// How nodes get their kernels and ramdisks (the spec's [ipxe] group).
    ["ipxe"] ipxe: IpxeSection {
        /// Give nodes Swift temporary URLs, signed when the node asks for its script, instead
        /// of caching images on this host. Needs [glance] swift_endpoint_url, swift_account
        /// and a temp-URL key.
        use_swift: bool = "false", aliases ["pxe.ipxe_use_swift"];
        /// iPXE script chained by boot.ipxe when no MAC of the machine belongs to a node
        /// with a boot target, e.g. inspector.ipxe or an absolute URL. Unset: the master
        /// script reports the failure and reboots.
        fallback_script: Option<String> = UNSET, aliases ["pxe.ipxe_fallback_script"],
            check |s: &Option<String>| match s { Some(s) if s.chars().any(char::is_whitespace) => Err("must not contain whitespace".into()), _ => Ok(()) };
        /// (ironboot) Attempts per image download in the per-node script before the node
        /// gives up and reboots. Retries back off exponentially with per-node jitter.
        download_attempts: u32 = "6", check |n: &u32| if (1..=50).contains(n) { Ok(()) } else { Err("must be between 1 and 50".into()) };
        /// (ironboot) Longest wait, in seconds, between two download attempts.
        retry_max_delay: u32 = "30", check |n: &u32| if (1..=600).contains(n) { Ok(()) } else { Err("must be between 1 and 600 seconds".into()) };
    }

    /// PXE and iPXE options shared with Ironic.
    ["pxe"] pxe: PxeSection {
        /// Timeout in seconds for each iPXE download; 0 disables it. iPXE applies it to
        /// periods without progress, not to the whole transfer.
        ipxe_timeout: u32 = "0";
        /// Kernel command line for deploy and instance boots. A node's
        /// instance_info.kernel_append_params overrides it for the instance target.
        kernel_append_params: String = "nofb vga=normal", aliases ["pxe.pxe_append_params"],
            check |s: &String| if s.contains(['\n', '\r']) { Err("must be a single line".into()) } else { Ok(()) };
        /// Template of the master script boot.ipxe (minijinja). Unset: the built-in one.
        ipxe_boot_script: Option<PathBuf> = UNSET;
        /// Template of the per-node script (minijinja). Unset: the built-in one.
        ipxe_config_template: Option<PathBuf> = UNSET;
    }

    /// Files written for nodes.
    ["deploy"] deploy: DeploySection {
        /// Directory that mirrors Ironic's HTTP root: boot.ipxe, <node uuid>/config and
        /// pxelinux.cfg/<mac> links, for operators who serve it with their own web server.
        http_root: PathBuf = "$state_path/httpboot";
    }

    /// Where Glance keeps images in Swift, and how temporary URLs are signed.
    ["glance"] glance: GlanceSection {
        /// Secret key for Swift temporary URLs (the account's or container's Temp-URL-Key).
        swift_temp_url_key: Option<Secret> = UNSET;
        /// (ironboot) File holding the temp-URL key, so it stays out of this file. A trailing
        /// newline is ignored. Do not set both this and swift_temp_url_key.
        swift_temp_url_key_file: Option<PathBuf> = UNSET;
        /// Seconds a temporary URL stays valid after it is signed. Must be at least
        /// swift_temp_url_expected_download_start_delay.
        swift_temp_url_duration: u64 = "1200", check |d: &u64| if *d == 0 { Err("must be at least 1 second".into()) } else { Ok(()) };
        /// Seconds expected between signing a URL and the start of the download.
        swift_temp_url_expected_download_start_delay: u64 = "0";
        /// (ironboot) HMAC digest for temporary URLs. Swift deprecates sha1.
        swift_temp_url_digest: Digest = "sha256";
        /// (ironboot) Restrict temporary URLs to this client address or network
        /// (temp_url_ip_range), e.g. the provisioning network 10.20.0.0/16.
        swift_temp_url_ip_range: Option<String> = UNSET,
            check |r: &Option<String>| match r { Some(r) => crate::tempurl::validate_ip_range(r).map_err(|e| e.to_string()), None => Ok(()) };
        /// Swift endpoint as nodes reach it, scheme://host[:port] without /v1/AUTH_...
        /// (a trailing /v1/<prefix>_<account> is stripped). Goes into the URLs given to nodes.
        swift_endpoint_url: Option<String> = UNSET;
        /// (ironboot) Swift endpoint as this conductor reaches it, for its own checks. Unset:
        /// swift_endpoint_url. The signature covers only the path, so one URL signs for both.
        swift_internal_endpoint_url: Option<String> = UNSET;
        /// Swift API version in the URL path.
        swift_api_version: String = "v1";
        /// Swift account that holds the images, e.g. AUTH_<project id>.
        swift_account: Option<String> = UNSET;
        /// Prefix of Swift account names (the reseller_prefix of Swift's proxy); "_" is added
        /// when missing.
        swift_account_prefix: String = "AUTH";
        /// Container Glance stores images in.
        swift_container: String = "glance";
        /// Glance's swift_store_multiple_containers_seed: 0 keeps every image in
        /// swift_container; N (1-32) appends "_" and the first N characters of the image id.
        swift_store_multiple_containers_seed: u8 = "0",
            check |n: &u8| if *n <= 32 { Ok(()) } else { Err("must be between 0 and 32 (0 = single container); it must match Glance's setting".into()) };
    }

    /// The node database.
    ["database"] database: DatabaseSection {
        /// Database URL: sqlite:///<absolute path> or postgresql://user:password@host/db.
        /// The password is never printed.
        connection: Secret = "sqlite:///$state_path/ironboot.sqlite";
        /// Most database connections kept open (oslo.db's name). With SQLite each one is a
        /// thread; the boot path needs one per request it serves concurrently.
        max_pool_size: u32 = "16", check |n: &u32| if (1..=1000).contains(n) { Ok(()) } else { Err("must be between 1 and 1000".into()) };
    }

    /// The REST API listener.
    ["api"] api: ApiSection {
        /// Address the API listens on.
        host_ip: IpAddr = "127.0.0.1";
        /// Port the API listens on (Ironic's).
        port: u16 = "6385", check port;
        /// (ironboot) noauth: anyone who reaches the API may use it. token: clients send
        /// "Authorization: Bearer <token>" with the token from token_file.
        auth_strategy: AuthStrategy = "noauth";
        /// (ironboot) File holding the API token (auth_strategy = token).
        token_file: Option<PathBuf> = UNSET;
        /// (ironboot) Allow auth_strategy = noauth on an address other than loopback.
        allow_insecure_noauth: bool = "false";
    }

    /// (ironboot) The boot HTTP listener that iPXE talks to.
    ["httpboot"] httpboot: HttpbootSection {
        /// Address the boot server listens on.
        host_ip: IpAddr = "127.0.0.1";
        /// Port the boot server listens on.
        port: u16 = "8080", check port;
    }
}
