//! Nodes: what a machine is (MACs, boot mode, images) and what it should boot next. Pure
//! types and validation; storage is in `store`, the boot logic in `boot`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A field that failed validation, with the field's path (`macs[1]`,
/// `driver_info.deploy_kernel`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A unicast Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

impl Mac {
    /// Parses `52:54:00:12:34:56`, `52-54-00-12-34-56`, `5254.0012.3456` or `525400123456`,
    /// in any case.
    pub fn parse(s: &str) -> Result<Mac, String> {
        let hex: String = s
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        let shaped = {
            let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
            let groups = |sep: char, n: usize, width: usize| {
                let parts: Vec<&str> = t.split(sep).collect();
                parts.len() == n && parts.iter().all(|p| p.len() == width)
            };
            groups(':', 6, 2)
                || groups('-', 6, 2)
                || groups('.', 3, 4)
                || (t.len() == 12 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        if !shaped || hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{s:?} is not a MAC address; write six hex octets such as 52:54:00:12:34:56"
            ));
        }
        let mut bytes = [0u8; 6];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("checked hex");
        }
        if bytes[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast address; a NIC's MAC is unicast"
            ));
        }
        if bytes == [0; 6] {
            return Err(format!("{s:?} is the all-zero address"));
        }
        Ok(Mac(bytes))
    }

    /// `52-54-00-12-34-56`: iPXE's `${mac:hexhyp}` and Ironic's `pxelinux.cfg` file name.
    pub fn hexhyp(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// Firmware kind; UEFI scripts need `initrd=<name>` on the kernel line.
    BootMode { Bios = "bios", Uefi = "uefi" }
}

string_enum! {
    /// What the node boots next.
    Target {
        /// Nothing: the boot server answers 404 and the machine moves on.
        None = "none",
        /// The deploy ramdisk (driver_info.deploy_kernel/deploy_ramdisk).
        Deploy = "deploy",
        /// The instance's kernel and ramdisk (instance_info.kernel/ramdisk).
        Instance = "instance",
        /// The local disk.
        Local = "local",
    }
}

string_enum! {
    /// Outcome of the last boot preparation.
    State {
        /// No boot target.
        Idle = "idle",
        /// The target's images are being fetched into the cache; the previous target is
        /// served until they are in place.
        Preparing = "preparing",
        /// The target was prepared and is served.
        Ready = "ready",
        /// The last preparation failed; see last_error. The previous target stays in force.
        Failed = "failed",
    }
}

/// Images for the deploy ramdisk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_ramdisk: Option<String>,
    /// Anything else an operator keeps here; stored and returned as is.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Images and kernel arguments for the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_append_params: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Which image source resolved a reference; render asks that source for the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Swift object; `location` is its unencoded path `/v1/<account>/<container>/<object>`.
    Swift,
    /// An http(s) URL passed to the node as it is; `location` is the URL.
    Http,
    /// Fetched into the master cache and served by ironboot; `location` is
    /// `<node uuid>/<label>` under `[deploy] http_root` and `[deploy] http_url`.
    Cache,
    /// Stored by ironboot 0.1 as a bare reference string: the source is found again at
    /// render time from the reference alone.
    Unresolved,
}

/// One image as `prepare` resolved and checked it: enough for render to build the URL
/// without I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PreparedImageRepr")]
pub struct PreparedImage {
    /// The reference as the operator wrote it.
    pub reference: String,
    pub source: SourceKind,
    /// Where the source found it (see [`SourceKind`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// The digest the bytes must have, `algo:hex` (cached images: Glance's os_hash or
    /// md5 checksum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PreparedImageRepr {
    Legacy(String),
    Current {
        reference: String,
        source: SourceKind,
        #[serde(default)]
        location: String,
        #[serde(default)]
        checksum: Option<String>,
    },
}

impl From<PreparedImageRepr> for PreparedImage {
    fn from(r: PreparedImageRepr) -> Self {
        match r {
            PreparedImageRepr::Legacy(reference) => PreparedImage {
                reference,
                source: SourceKind::Unresolved,
                location: String::new(),
                checksum: None,
            },
            PreparedImageRepr::Current {
                reference,
                source,
                location,
                checksum,
            } => PreparedImage {
                reference,
                source,
                location,
                checksum,
            },
        }
    }
}

/// What `prepare` checked and the boot path renders: the node's boot exactly as validated,
/// so later edits of driver_info or instance_info take effect only at the next prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedBoot {
    pub target: Target,
    pub boot_mode: BootMode,
    /// Kernel and ramdisk (absent for local boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PreparedImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<PreparedImage>,
    /// The kernel command line.
    #[serde(default)]
    pub kernel_args: String,
    /// Cache mode: the `[deploy] http_url` of the conductor whose `http_root` holds the
    /// cached images, which scripts name whichever conductor renders them. Set by the
    /// conductor that fetched them; absent for snapshots without cached images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
}

/// A preparation asked for and not yet finished: the node's owner fetches its images,
/// then makes it the node's boot target. Stored, so that another conductor can finish it
/// when the one that started it dies; a later request replaces it (a new `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Tells this request from a later one.
    pub id: uuid::Uuid,
    pub target: Target,
    pub prepared: PreparedBoot,
}

/// What the boot path needs to render a node's script: no MAC list, no documents. Built
/// from a [`Node`] in one place ([`BootRecord::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    pub uuid: uuid::Uuid,
    pub name: Option<String>,
    pub target: Target,
    pub prepared: Option<PreparedBoot>,
}

impl BootRecord {
    pub fn of(node: &Node) -> BootRecord {
        BootRecord {
            uuid: node.uuid,
            name: node.name.clone(),
            target: node.target,
            prepared: node.prepared.clone(),
        }
    }
}

/// A node as stored and returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub uuid: uuid::Uuid,
    pub name: Option<String>,
    pub macs: Vec<Mac>,
    pub boot_mode: BootMode,
    pub driver_info: DriverInfo,
    pub instance_info: InstanceInfo,
    pub target: Target,
    pub state: State,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PreparedBoot>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Incremented by every change; used for optimistic concurrency.
    #[serde(skip)]
    pub version: i64,
    /// While the node is `preparing`: the target being prepared and the bytes fetched so
    /// far. Not stored: it lives in the conductor doing the work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<PrepareProgress>,
    /// A preparation not yet finished (stored; see [`Pending`]).
    #[serde(skip)]
    pub pending: Option<Pending>,
    /// The conductor doing this node's preparation work now (Ironic's `reservation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// The conductor the hash ring gives this node to (Ironic's `conductor`); set when the
    /// node is read through the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conductor: Option<String>,
}

/// How far a preparation in progress has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrepareProgress {
    pub target: Target,
    pub bytes_done: u64,
    /// `None` while a size is unknown.
    pub bytes_total: Option<u64>,
}

impl PreparedBoot {
    /// Whether any image must be fetched into the cache before the boot can be served.
    pub fn needs_fetch(&self) -> bool {
        [&self.kernel, &self.ramdisk]
            .into_iter()
            .flatten()
            .any(|i| i.source == SourceKind::Cache)
    }
}

/// Checks a node name: Ironic allows letters, digits and `-._~`, and a name must not look
/// like a UUID (it would shadow one).
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 255 {
        return Err(FieldError::new("name", "must be 1 to 255 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(FieldError::new(
            "name",
            format!("{name:?} may contain only letters, digits and -._~"),
        ));
    }
    if name == "." || name == ".." {
        return Err(FieldError::new(
            "name",
            format!("{name:?} cannot be used in a URL path (clients remove dot segments)"),
        ));
    }
    if uuid::Uuid::try_parse(name).is_ok() {
        return Err(FieldError::new(
            "name",
            format!("{name:?} looks like a UUID; names must not, so they cannot shadow one"),
        ));
    }
    Ok(())
}

/// Parses and de-duplicates a list of MACs; errors name the index.
pub fn parse_macs(raw: &[String]) -> Result<Vec<Mac>, FieldError> {
    let mut macs = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let mac = Mac::parse(text).map_err(|m| FieldError::new(format!("macs[{i}]"), m))?;
        if macs.contains(&mac) {
            return Err(FieldError::new(
                format!("macs[{i}]"),
                format!("{mac} is listed twice"),
            ));
        }
        macs.push(mac);
    }
    Ok(macs)
}

/// The longest kernel arguments accepted. x86 kernels keep 2047 bytes of command line and
/// iPXE silently cuts the rest; the script appends ` initrd=<name>` and
/// ` BOOTIF=01-<mac>` (up to 50 bytes) after the arguments, which must survive.
pub const MAX_KERNEL_ARGS: usize = 1990;

/// Checks a kernel command line: it goes into the script's `kernel` line as it is, so it
/// must pass [`crate::script::check_line`].
pub fn validate_kernel_args(field: &str, args: &str) -> Result<(), FieldError> {
    crate::script::check_line(args, MAX_KERNEL_ARGS)
        .map_err(|e| FieldError::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_normalize_from_every_common_spelling() {
        for s in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52:54:00:12:34:56 ",
            "5254.0012.3456",
            "525400123456",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            let m = Mac::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(m.to_string(), "52:54:00:12:34:56");
            assert_eq!(m.hexhyp(), "52-54-00-12-34-56");
        }
    }

    #[test]
    fn bad_macs_say_why() {
        assert!(
            Mac::parse("52:54:00:12:34")
                .unwrap_err()
                .contains("not a MAC address")
        );
        assert!(
            Mac::parse("52:54:00:12:34:5g")
                .unwrap_err()
                .contains("not a MAC address")
        );
        assert!(Mac::parse("52:54:00:12:34:56:78").is_err());
        assert!(Mac::parse("5:54:00:12:34:56").is_err());
        // regression (found by the script fuzzer): group sizes were not checked
        for bad in [
            "5-254-00-12-34-56",
            "525:4:00:12:34:56",
            "52.540012.3456",
            "52:54-00:12-34:56",
            "\u{85}52:54:00:12:34:56",
        ] {
            assert!(Mac::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Mac::parse("").is_err());
        assert!(
            Mac::parse("01:00:5e:00:00:01")
                .unwrap_err()
                .contains("multicast")
        );
        assert!(
            Mac::parse("00:00:00:00:00:00")
                .unwrap_err()
                .contains("all-zero")
        );
    }

    #[test]
    fn mac_lists_name_the_bad_index() {
        let err = parse_macs(&["52:54:00:12:34:56".into(), "nope".into()]).unwrap_err();
        assert_eq!(err.field, "macs[1]");
        let err =
            parse_macs(&["52:54:00:12:34:56".into(), "52-54-00-12-34-56".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "macs[1]: 52:54:00:12:34:56 is listed twice"
        );
    }

    #[test]
    fn names_follow_ironic_rules() {
        assert!(validate_name("node-1.rack_2~a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(".").is_err() && validate_name("..").is_err());
        assert!(validate_name("...").is_ok());
        assert!(
            validate_name("757274c4-2856-4bd2-bb20-9a4a231e187b")
                .unwrap_err()
                .message
                .contains("UUID")
        );
    }

    #[test]
    fn kernel_args_cannot_break_the_script() {
        assert!(validate_kernel_args("k", "nofb vga=normal console=ttyS0 a=b&c").is_ok());
        for bad in [
            "a\nb",
            "x=${foo}",
            "a #comment",
            "a || b",
            "a ; b",
            "a\u{0}b",
            "a\u{7}",
            "\u{1b}[0m",
            "a\u{7f}",
        ] {
            assert!(validate_kernel_args("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_round_trip_and_list_choices() {
        assert_eq!("uefi".parse::<BootMode>(), Ok(BootMode::Uefi));
        assert_eq!("deploy".parse::<Target>(), Ok(Target::Deploy));
        assert_eq!(
            "rescue".parse::<Target>().unwrap_err(),
            "\"rescue\" is not one of none, deploy, instance, local"
        );
        assert_eq!(serde_json::to_string(&Target::Local).unwrap(), "\"local\"");
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn snapshots_of_ironboot_0_1_still_load() {
        let old: PreparedBoot = serde_json::from_str(
            r#"{"target":"deploy","boot_mode":"bios","kernel":"swift://c/k","ramdisk":"http://h/r","kernel_args":"a"}"#,
        )
        .unwrap();
        let k = old.kernel.unwrap();
        assert_eq!(
            (k.reference.as_str(), k.source),
            ("swift://c/k", SourceKind::Unresolved)
        );
        let new = PreparedImage {
            reference: "swift://c/k".into(),
            source: SourceKind::Swift,
            location: "/v1/AUTH_t/c/k".into(),
            checksum: None,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<PreparedImage>(&text).unwrap(), new);
    }
}
