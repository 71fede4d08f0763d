//! The option table: every option ironboot reads, in one place. Names and defaults follow
//! Ironic where Ironic has the option; options Ironic lacks are marked "ironboot".
//!
//! To add an option, add one entry here: its help (doc comment), type, default, deprecated
//! names and per-value check. Checks that involve several options live in `validate.rs`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::macros::{DefaultValue, options};
use super::secret::Secret;
use super::value::{AuthStrategy, GlanceAuthType, Interfaces, SwiftAuthType};
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

/// Ten years, the longest duration any option accepts: far beyond any sensible setting,
/// far below what `now + duration` can overflow.
const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
/// 64 MiB, the largest size in bytes any option accepts.
const MIB_64: u64 = 64 * 1024 * 1024;
/// Largest connection limit: the usual kernel ceiling of open files per process (nr_open).
const MAX_CONNECTIONS: u64 = 1 << 20;

fn in_range(n: u64, min: u64, max: u64, unit: &str) -> Result<(), String> {
    if (min..=max).contains(&n) {
        return Ok(());
    }
    let human = |v: u64| match unit {
        " seconds" if v == TEN_YEARS => format!("{v} seconds (10 years)"),
        " seconds" if v >= 3600 && v.is_multiple_of(3600) => {
            format!("{v} seconds ({} h)", v / 3600)
        }
        " bytes" if v >= 1024 * 1024 && v.is_multiple_of(1024 * 1024) => {
            format!("{v} bytes ({} MiB)", v / (1024 * 1024))
        }
        " bytes" if v >= 1024 && v.is_multiple_of(1024) => format!("{v} bytes ({} KiB)", v / 1024),
        _ => format!("{v}{unit}"),
    };
    Err(format!("must be between {min} and {}", human(max)))
}

/// A duration in seconds between `MIN` and `MAX`.
fn seconds<T: Copy + Into<u64>, const MIN: u64, const MAX: u64>(n: &T) -> Result<(), String> {
    in_range((*n).into(), MIN, MAX, " seconds")
}

/// A size in bytes between `MIN` and `MAX`.
fn bytes<T: Copy + Into<u64>, const MIN: u64, const MAX: u64>(n: &T) -> Result<(), String> {
    in_range((*n).into(), MIN, MAX, " bytes")
}

/// A count between `MIN` and `MAX`.
fn count<T: Copy + Into<u64>, const MIN: u64, const MAX: u64>(n: &T) -> Result<(), String> {
    in_range((*n).into(), MIN, MAX, "")
}

/// `[ipxe] fallback_script`: an absolute http(s) URL, or a plain file name that the boot
/// listener serves at `/<name>` from `[deploy] http_root`. The name must be one path segment
/// that no route of the boot listener uses and that no router reads as a pattern.
fn fallback_script(value: &Option<String>) -> Result<(), String> {
    let Some(name) = value else { return Ok(()) };
    let fix = "name a file in deploy.http_root such as inspector.ipxe, or give an absolute \
               http:// or https:// URL";
    if let Some((scheme, _)) = name.split_once("://") {
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "only http:// and https:// URLs are accepted; {fix}"
            ));
        }
        let url = url::Url::parse(name).map_err(|e| format!("not a valid URL ({e}); {fix}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("the URL has no host; {fix}"));
        }
        return crate::ipxe::check_url("ipxe.fallback_script", name).map_err(|e| match e {
            crate::ipxe::IpxeError::Unsafe { reason, .. } => {
                format!("{reason}; percent-encode it or {fix}")
            }
            other => other.to_string(),
        });
    }
    if matches!(name.as_str(), "boot.ipxe" | "pxelinux.cfg") {
        return Err(format!(
            "/{name} is a route of the boot listener already; {fix} with another name"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || "/{}*?%\\:".contains(c))
    {
        return Err(format!(
            "a file name must not contain {c:?} (no /, {{, }}, *, ?, %, \\, :, spaces or control \
             characters: it is served as /<name> and would break the boot listener's routes); {fix}"
        ));
    }
    if name.starts_with(['.', '#']) {
        return Err(format!(
            "a file name must not start with '.' or '#' (hidden files are not served; iPXE \
             reads # as a comment); {fix}"
        ));
    }
    if uuid::Uuid::try_parse(name).is_ok() {
        return Err(format!(
            "a UUID is not a file name here: /<node uuid>/… are the nodes' paths on the boot \
             listener; {fix}"
        ));
    }
    Ok(())
}

/// An http(s) URL with a host and without user or password (Keystone's and Glance's).
fn service_url(value: &Option<String>) -> Result<(), String> {
    let Some(text) = value else { return Ok(()) };
    let url = url::Url::parse(text).map_err(|e| {
        format!("not a valid URL ({e}); write e.g. http://keystone.example.com:5000/v3")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are accepted".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not hold a user or password; use username and password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".into());
    }
    Ok(())
}

fn interfaces(value: &Interfaces) -> Result<(), String> {
    if value.0.is_empty() {
        Err("must name at least one of public, internal, admin".into())
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
        /// Seconds `serve` waits for requests in progress to finish after SIGTERM or SIGINT
        /// before it exits anyway (oslo.service's name). 1 to 3600.
        graceful_shutdown_timeout: u64 = "60", check seconds::<_, 1, 3600>;
    }

    /// How nodes get their kernels and ramdisks (the spec's [ipxe] group).
    ["ipxe"] ipxe: IpxeSection {
        /// Give nodes Swift temporary URLs, signed when the node asks for its script, instead
        /// of caching images on this host. Needs [glance] swift_endpoint_url, swift_account
        /// and a temp-URL key.
        use_swift: bool = "false", aliases ["pxe.ipxe_use_swift"];
        /// iPXE script chained by boot.ipxe when no MAC of the machine belongs to a node
        /// with a boot target, e.g. inspector.ipxe or an absolute URL. Unset: the master
        /// script reports the failure and reboots. A file name is served by the boot listener
        /// from [deploy] http_root; it must be one plain path segment.
        fallback_script: Option<String> = UNSET, aliases ["pxe.ipxe_fallback_script"],
            check fallback_script;
        /// (ironboot) Attempts per image download in the per-node script before the node
        /// gives up and reboots, 1 to 50. Retries back off exponentially with per-node
        /// jitter.
        download_attempts: u32 = "6", check count::<_, 1, 50>;
        /// (ironboot) Longest wait, in seconds, between two download attempts; 1 to 600.
        retry_max_delay: u32 = "30", check seconds::<_, 1, 600>;
        /// (ironboot) Swift mode: scripts point at [deploy] http_url/<node uuid>/<label>,
        /// which answers with a 302 to a TempURL signed at that moment, so a retry never
        /// meets an expired URL and the static mirror holds no signatures. false: scripts
        /// carry the TempURLs themselves (the spec's behaviour).
        tempurl_redirect: bool = "false";
    }

    /// PXE and iPXE options shared with Ironic.
    ["pxe"] pxe: PxeSection {
        /// Timeout in seconds for each iPXE download, up to 3600; 0 disables it. iPXE
        /// applies it to periods without progress, not to the whole transfer.
        ipxe_timeout: u32 = "0", check seconds::<_, 0, 3600>;
        /// Kernel command line for deploy and instance boots. A node's
        /// instance_info.kernel_append_params overrides it for the instance target. It goes
        /// into iPXE scripts: one line, no ${, no ||, && or ; words, no word starting with #.
        kernel_append_params: String = "nofb vga=normal", aliases ["pxe.pxe_append_params"],
            check |s: &String| crate::node::validate_kernel_args("pxe.kernel_append_params", s)
                .map_err(|e| e.message);
        /// Template of the master script boot.ipxe (minijinja). Unset: the built-in one.
        ipxe_boot_script: Option<PathBuf> = UNSET;
        /// Template of the per-node script (minijinja). Unset: the built-in one.
        ipxe_config_template: Option<PathBuf> = UNSET;
        /// Master directory of the image cache (cache mode): each kernel and ramdisk is
        /// downloaded here once and hardlinked into [deploy] http_root/<node uuid>/<label>.
        tftp_master_path: PathBuf = "$state_path/master_images";
        /// Largest size of the master image cache in MiB, images in use included; unused
        /// images are evicted to stay under it. 1 to 16777216 (16 TiB).
        image_cache_size: u64 = "20480", check count::<_, 1, 16_777_216>;
        /// Minutes an unused master image is kept before it is evicted first. 1 to 5256000
        /// (10 years).
        image_cache_ttl: u64 = "10080", check count::<_, 1, 5_256_000>;
        /// (ironboot) In cache mode, give nodes http(s):// references as they are instead of
        /// caching them. A node's instance_info.http_passthrough (true/false) overrides it.
        http_passthrough: bool = "false";
    }

    /// Files written for nodes.
    ["deploy"] deploy: DeploySection {
        /// Directory that mirrors Ironic's HTTP root: boot.ipxe, <node uuid>/config and
        /// pxelinux.cfg/<mac> links, for operators who serve it with their own web server.
        http_root: PathBuf = "$state_path/httpboot";
        /// URL of [deploy] http_root as nodes reach it, e.g. http://10.20.0.1:8080: scripts
        /// point at <http_url>/<node uuid>/<label> for cached images. Unset: the boot
        /// listener's own address (http://[httpboot] host_ip:port), which nodes can reach
        /// only when host_ip is not a loopback address.
        http_url: Option<String> = UNSET, check service_url;
    }

    /// Where Glance keeps images in Swift, how temporary URLs are signed, and how ironboot
    /// reads image metadata from Glance (keystoneauth's options).
    ["glance"] glance: GlanceSection {
        /// Secret key for Swift temporary URLs (the account's or container's Temp-URL-Key).
        swift_temp_url_key: Option<Secret> = UNSET;
        /// (ironboot) File holding the temp-URL key, so it stays out of this file. Exactly one
        /// trailing newline is removed. Do not set both this and swift_temp_url_key.
        swift_temp_url_key_file: Option<PathBuf> = UNSET;
        /// Seconds a temporary URL stays valid after it is signed. Must be at least
        /// swift_temp_url_expected_download_start_delay, and at most 315360000 (10 years).
        swift_temp_url_duration: u64 = "1200", check seconds::<_, 1, TEN_YEARS>;
        /// Seconds expected between signing a URL and the start of the download, up to
        /// 315360000 (10 years).
        swift_temp_url_expected_download_start_delay: u64 = "0", check seconds::<_, 0, TEN_YEARS>;
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
        swift_account_prefix: String = "AUTH",
            check |p: &String| if p.contains('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err("must be part of one path segment: no '/', spaces or control characters (Swift's reseller_prefix, e.g. AUTH)".into())
            } else { Ok(()) };
        /// Container Glance stores images in.
        swift_container: String = "glance";
        /// Glance's swift_store_multiple_containers_seed: 0 keeps every image in
        /// swift_container; N (1-32) appends "_" and the first N characters of the image id.
        swift_store_multiple_containers_seed: u8 = "0",
            check |n: &u8| if *n <= 32 { Ok(()) } else { Err("must be between 0 and 32 (0 = single container); it must match Glance's setting".into()) };
        /// How ironboot authenticates to Glance (keystoneauth's auth_type): password (a
        /// Keystone v3 user and project) or none (no Keystone: Glance at endpoint_override).
        /// Swift mode reads image metadata and signs TempURLs to Glance's objects; cache
        /// mode downloads the images through Glance's API. Unset: glance://UUID and bare
        /// UUID references are not served.
        auth_type: Option<GlanceAuthType> = UNSET;
        /// Keystone URL, with its version (http://keystone:5000/v3) or without
        /// (http://keystone:5000: the v3 API is found by version discovery).
        auth_url: Option<String> = UNSET, check service_url;
        /// Keystone user name (auth_type = password).
        username: Option<String> = UNSET;
        /// Password of username. Never printed.
        password: Option<Secret> = UNSET;
        /// (ironboot) File holding the password, so it stays out of this file. Exactly one
        /// trailing newline is removed. Do not set both this and password.
        password_file: Option<PathBuf> = UNSET;
        /// Project the token is scoped to; Glance shows the images this project may see.
        project_name: Option<String> = UNSET;
        /// Domain of username.
        user_domain_name: String = "Default",
            check |d: &String| if d.trim().is_empty() { Err("must not be empty (Keystone's default domain is Default)".into()) } else { Ok(()) };
        /// Domain of project_name.
        project_domain_name: String = "Default",
            check |d: &String| if d.trim().is_empty() { Err("must not be empty (Keystone's default domain is Default)".into()) } else { Ok(()) };
        /// Region of the image endpoint in Keystone's catalog. Unset: the catalog must have
        /// one image endpoint per interface.
        region_name: Option<String> = UNSET;
        /// Interfaces of the catalog's image endpoint, tried in this order (Ironic's default).
        valid_interfaces: Interfaces = "internal,public", check interfaces;
        /// Glance URL used instead of the catalog's, e.g. http://glance.example.com:9292.
        /// Required with auth_type = none.
        endpoint_override: Option<String> = UNSET, check service_url;
        /// PEM file of the certificate authorities that sign Keystone's and Glance's TLS
        /// certificates; it replaces the system's. Unset: the system's.
        cafile: Option<PathBuf> = UNSET;
        /// Do not verify the TLS certificates of Keystone and Glance. Only for tests.
        insecure: bool = "false";
        /// (ironboot default; keystoneauth's is none) Seconds each request to Keystone or
        /// Glance may take, connection included, 1 to 600.
        timeout: u64 = "10", check seconds::<_, 1, 600>;
        /// Retries of a Glance request that failed with a 5xx answer or a connection error,
        /// 0 to 10 (Ironic's). ironboot waits 0.5 s before the first retry and doubles the
        /// wait each time, up to 8 s.
        num_retries: u32 = "0", check count::<_, 0, 10>;
        /// (ironboot) Seconds Glance's answer about an image is reused for other prepares,
        /// so nodes sharing an image cause one Glance request per period, not one each.
        /// Only active images are kept. 0: ask Glance every time. 0 to 3600.
        metadata_cache_ttl: u64 = "30", check seconds::<_, 0, 3600>;
    }

    /// How ironboot reads the temp-URL key from the Swift account when [glance]
    /// swift_temp_url_key is not set (Ironic's [swift] group), and re-reads it so that a
    /// key rotation never breaks a boot.
    ["swift"] swift: SwiftSection {
        /// password: a Keystone v3 user and project; Swift is the catalog's object-store
        /// endpoint and the account is [glance] swift_account_prefix + the project id.
        /// v1password: Swift's own v1 auth (tempauth, swauth) at auth_url; the account is
        /// the one of the storage URL it returns. Unset: [glance] swift_temp_url_key is used.
        auth_type: Option<SwiftAuthType> = UNSET;
        /// Keystone URL (password), with or without /v3; or Swift's v1 auth URL
        /// (v1password), e.g. http://swift.example.com:8080/auth/v1.0.
        auth_url: Option<String> = UNSET, check service_url;
        /// Keystone user (password), or account:user (v1password).
        username: Option<String> = UNSET;
        /// Password of username (the key, for v1password). Never printed.
        password: Option<Secret> = UNSET;
        /// (ironboot) File holding the password, so it stays out of this file. Exactly one
        /// trailing newline is removed. Do not set both this and password.
        password_file: Option<PathBuf> = UNSET;
        /// Project the token is scoped to (password); its account holds the images.
        project_name: Option<String> = UNSET;
        /// Domain of username (password).
        user_domain_name: String = "Default",
            check |d: &String| if d.trim().is_empty() { Err("must not be empty (Keystone's default domain is Default)".into()) } else { Ok(()) };
        /// Domain of project_name (password).
        project_domain_name: String = "Default",
            check |d: &String| if d.trim().is_empty() { Err("must not be empty (Keystone's default domain is Default)".into()) } else { Ok(()) };
        /// Region of the object-store endpoint in Keystone's catalog (password). Unset:
        /// the catalog must have one object-store endpoint per interface.
        region_name: Option<String> = UNSET;
        /// Interfaces of the catalog's object-store endpoint, tried in this order (password).
        valid_interfaces: Interfaces = "internal,public", check interfaces;
        /// (ironboot default; keystoneauth's is none) Seconds each request to Keystone or
        /// Swift's auth may take, connection included, 1 to 600.
        timeout: u64 = "10", check seconds::<_, 1, 600>;
        /// (ironboot) Seconds between two reads of the account's Temp-URL-Key-2 and
        /// Temp-URL-Key, 10 to 86400. When rotating a key, wait at least this plus
        /// [glance] swift_temp_url_duration before removing the key ironboot was signing with.
        temp_url_key_refresh_interval: u64 = "60", check seconds::<_, 10, 86400>;
    }

    /// The conductor's periodic work.
    ["conductor"] conductor: ConductorSection {
        /// Seconds between two cleanups of the master image cache (cache mode): expired
        /// images no node uses are evicted, then the oldest unused ones while the cache is
        /// over [pxe] image_cache_size, and abandoned temporary files are removed. 0 turns
        /// the periodic cleanup off (downloads still make room). Up to 86400.
        cache_clean_up_interval: u64 = "3600", check count::<_, 0, 86400>;
        /// Seconds between two heartbeats of this conductor in the database, 1 to 600.
        heartbeat_interval: u64 = "10", check seconds::<_, 1, 600>;
        /// Seconds after its last heartbeat when a conductor counts as dead and the others
        /// take its nodes; more than heartbeat_interval. 2 to 3600.
        heartbeat_timeout: u64 = "60", check seconds::<_, 2, 3600>;
        /// (ironboot) Seconds between two full rereads of the node table into the boot
        /// index with PostgreSQL, which catch a change whose notification was lost; other
        /// conductors' changes otherwise arrive by LISTEN/NOTIFY within milliseconds. 1 to
        /// 86400.
        index_resync_interval: u64 = "60", check seconds::<_, 1, 86400>;
    }

    /// The node database.
    ["database"] database: DatabaseSection {
        /// Database URL: sqlite:///<absolute path> or postgresql://user:password@host/db.
        /// The password is never printed.
        connection: Secret = "sqlite:///$state_path/ironboot.sqlite";
        /// Most database connections kept open (oslo.db's name). With SQLite each one is a
        /// thread; the boot path needs one per request it serves concurrently. 1 to 1000.
        max_pool_size: u32 = "16", check count::<_, 1, 1000>;
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
        /// (ironboot) Seconds a client has to send a request's head (line and headers) on
        /// a new or kept-alive connection. 1 to 3600.
        header_timeout: u64 = "10", check seconds::<_, 1, 3600>;
        /// (ironboot) Seconds an idle keep-alive connection stays open. 1 to 3600.
        keepalive_timeout: u64 = "60", check seconds::<_, 1, 3600>;
        /// (ironboot) Seconds one API request may take in all, body and Swift checks
        /// included. 1 to 3600.
        request_timeout: u64 = "60", check seconds::<_, 1, 3600>;
        /// (ironboot) Most connections served at once, up to 1048576; 0: a share of the
        /// open-file limit, computed at start.
        max_connections: u32 = "0", check count::<_, 0, MAX_CONNECTIONS>;
        /// Largest number of items a list returns, and the page size when the client gives
        /// no limit (Ironic's). 1 to 100000.
        max_limit: u32 = "1000", check count::<_, 1, 100_000>;
        /// (ironboot) Largest size in bytes of each of a node's driver_info and
        /// instance_info (and their extra fields), as JSON. 1024 to 67108864 (64 MiB).
        max_document_size: u32 = "65536", check bytes::<_, 1024, MIB_64>;
        /// (ironboot) Largest request body in bytes, 1024 to 67108864 (64 MiB), and at
        /// least max_document_size.
        max_body_size: u32 = "1048576", check bytes::<_, 1024, MIB_64>;
    }

    /// (ironboot) The boot HTTP listener that iPXE talks to.
    ["httpboot"] httpboot: HttpbootSection {
        /// Address the boot server listens on.
        host_ip: IpAddr = "127.0.0.1";
        /// Port the boot server listens on.
        port: u16 = "8080", check port;
        /// Seconds a client has to send a request's head; generous, for iPXE on a busy or
        /// slow boot network. 1 to 3600.
        header_timeout: u64 = "30", check seconds::<_, 1, 3600>;
        /// Seconds an idle keep-alive connection stays open; longer than iPXE's pauses
        /// between the script and the images it fetches. 1 to 3600.
        keepalive_timeout: u64 = "75", check seconds::<_, 1, 3600>;
        /// Most connections served at once, up to 1048576; 0: a share of the open-file
        /// limit, computed at start.
        max_connections: u32 = "0", check count::<_, 0, MAX_CONNECTIONS>;
    }
}
