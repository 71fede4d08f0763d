//! How one option's text becomes a typed value, and how the value prints back.

use std::net::IpAddr;
use std::path::PathBuf;

use super::secret::{REDACTED, Secret};
use crate::tempurl::Digest;

/// A type an option can have.
pub trait OptionValue: Sized {
    /// oslo.config's words for the type, used in `config sample`.
    const TYPE_NAME: &'static str;
    /// Secrets are redacted in `config check`, errors and logs.
    const SECRET: bool = false;
    /// Parses the text (already interpolated). The error says what was expected.
    fn parse(raw: &str) -> Result<Self, String>;
    /// The value when the option is not set and has no default.
    fn unset() -> Option<Self> {
        None
    }
    /// The effective value, for `config check`.
    fn render(&self) -> String;
}

impl OptionValue for bool {
    const TYPE_NAME: &'static str = "boolean value";

    fn parse(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Ok(true),
            "false" | "0" | "off" | "no" => Ok(false),
            _ => Err("expected a boolean: true/false, yes/no, on/off or 1/0".into()),
        }
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl OptionValue for $t {
            const TYPE_NAME: &'static str = "integer value";

            fn parse(raw: &str) -> Result<Self, String> {
                raw.parse::<$t>().map_err(|_| {
                    format!("expected a whole number between {} and {}", <$t>::MIN, <$t>::MAX)
                })
            }

            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_value!(u8, u16, u32, u64);

impl OptionValue for String {
    const TYPE_NAME: &'static str = "string value";

    fn parse(raw: &str) -> Result<Self, String> {
        Ok(raw.to_string())
    }

    fn render(&self) -> String {
        self.clone()
    }
}

impl OptionValue for PathBuf {
    const TYPE_NAME: &'static str = "path value";

    fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("expected a path, got an empty value".into());
        }
        Ok(PathBuf::from(raw))
    }

    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl OptionValue for Secret {
    const TYPE_NAME: &'static str = "string value, secret";
    const SECRET: bool = true;

    fn parse(raw: &str) -> Result<Self, String> {
        Ok(Secret::new(raw))
    }

    fn render(&self) -> String {
        REDACTED.into()
    }
}

impl OptionValue for Digest {
    const TYPE_NAME: &'static str = "string value, one of sha1, sha256, sha512";

    fn parse(raw: &str) -> Result<Self, String> {
        raw.parse()
            .map_err(|_| "expected one of sha1, sha256, sha512".to_string())
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

impl OptionValue for IpAddr {
    const TYPE_NAME: &'static str = "IP address value";

    fn parse(raw: &str) -> Result<Self, String> {
        raw.parse()
            .map_err(|_| "expected an IP address such as 127.0.0.1 or ::1".to_string())
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

/// How API clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStrategy {
    /// Anyone who can reach the API may use it.
    Noauth,
    /// `Authorization: Bearer <token>`, with the token read from `[api] token_file`.
    Token,
}

impl OptionValue for AuthStrategy {
    const TYPE_NAME: &'static str = "string value, one of noauth, token";

    fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "noauth" => Ok(AuthStrategy::Noauth),
            "token" => Ok(AuthStrategy::Token),
            "keystone" | "http_basic" => Err(format!(
                "{raw:?} is an Ironic strategy that ironboot does not implement; use noauth or token"
            )),
            _ => Err("expected noauth or token".into()),
        }
    }

    fn render(&self) -> String {
        match self {
            AuthStrategy::Noauth => "noauth",
            AuthStrategy::Token => "token",
        }
        .into()
    }
}

/// How ironboot authenticates to Glance (keystoneauth's `auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlanceAuthType {
    /// Keystone v3 password authentication, scoped to a project.
    Password,
    /// No Keystone: Glance at `endpoint_override` accepts requests without a token.
    None,
}

impl OptionValue for GlanceAuthType {
    const TYPE_NAME: &'static str = "string value, one of password, none";

    fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "password" | "v3password" => Ok(GlanceAuthType::Password),
            "none" | "noauth" => Ok(GlanceAuthType::None),
            "token" | "v3token" | "v3applicationcredential" | "admin_token" | "v3oidcpassword" => {
                Err(format!(
                    "{raw:?} is a keystoneauth plugin that ironboot does not implement; use password or none"
                ))
            }
            _ => Err("expected password or none".into()),
        }
    }

    fn render(&self) -> String {
        match self {
            GlanceAuthType::Password => "password",
            GlanceAuthType::None => "none",
        }
        .into()
    }
}

/// How ironboot signs in to Swift to read the account's temp-URL keys (`[swift] auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwiftAuthType {
    /// Keystone v3 password authentication, scoped to a project; Swift is the catalog's
    /// object-store endpoint (Ironic's `[swift]` group).
    Password,
    /// Swift's own v1 auth (tempauth, swauth): `X-Auth-User`/`X-Auth-Key` at `auth_url`.
    V1Password,
}

impl OptionValue for SwiftAuthType {
    const TYPE_NAME: &'static str = "string value, one of password, v1password";

    fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "password" | "v3password" => Ok(SwiftAuthType::Password),
            "v1password" => Ok(SwiftAuthType::V1Password),
            "none" | "noauth" => Err(
                "reading the account's temp-URL key needs credentials; use password or \
                 v1password, or leave auth_type unset and set [glance] swift_temp_url_key"
                    .into(),
            ),
            _ => Err(
                "expected password (Keystone) or v1password (Swift's v1 auth, e.g. tempauth)"
                    .into(),
            ),
        }
    }

    fn render(&self) -> String {
        match self {
            SwiftAuthType::Password => "password",
            SwiftAuthType::V1Password => "v1password",
        }
        .into()
    }
}

/// An interface of a catalog endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interface {
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// keystoneauth's `valid_interfaces`: catalog interfaces in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces(pub Vec<Interface>);

impl OptionValue for Interfaces {
    const TYPE_NAME: &'static str = "list value of public, internal, admin";

    fn parse(raw: &str) -> Result<Self, String> {
        let mut list = Vec::new();
        for item in raw.split(',').map(str::trim) {
            // keystoneauth accepts the old catalog spellings publicURL, internalURL, adminURL
            let name = item.strip_suffix("URL").unwrap_or(item);
            let interface = match name.to_ascii_lowercase().as_str() {
                "public" => Interface::Public,
                "internal" => Interface::Internal,
                "admin" => Interface::Admin,
                "" => {
                    return Err(
                        "expected a comma-separated list such as internal,public; an item is empty"
                            .into(),
                    );
                }
                _ => {
                    return Err(format!(
                        "{item:?} is not an interface; expected a comma-separated list of public, internal and admin"
                    ));
                }
            };
            if !list.contains(&interface) {
                list.push(interface);
            }
        }
        Ok(Interfaces(list))
    }

    fn render(&self) -> String {
        self.0
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Options without a default are optional: an empty value also means "not set".
impl<T: OptionValue> OptionValue for Option<T> {
    const TYPE_NAME: &'static str = T::TYPE_NAME;
    const SECRET: bool = T::SECRET;

    fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            Ok(None)
        } else {
            T::parse(raw).map(Some)
        }
    }

    fn unset() -> Option<Self> {
        Some(None)
    }

    fn render(&self) -> String {
        match self {
            Some(v) => v.render(),
            None => "<None>".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_oslo_spellings() {
        for t in ["true", "True", "1", "on", "YES"] {
            assert_eq!(bool::parse(t), Ok(true), "{t}");
        }
        for f in ["false", "FALSE", "0", "off", "no"] {
            assert_eq!(bool::parse(f), Ok(false), "{f}");
        }
        assert!(bool::parse("maybe").unwrap_err().contains("true/false"));
        assert!(bool::parse("").is_err());
    }

    #[test]
    fn integers_name_their_range() {
        assert_eq!(u8::parse("32"), Ok(32));
        assert!(u8::parse("300").unwrap_err().contains("between 0 and 255"));
        assert!(u64::parse("-1").is_err());
        assert!(u64::parse("12s").is_err());
    }

    #[test]
    fn optional_values_treat_empty_as_unset() {
        assert_eq!(Option::<u64>::parse(""), Ok(None));
        assert_eq!(Option::<u64>::parse("5"), Ok(Some(5)));
        assert_eq!(Option::<u64>::unset(), Some(None));
        assert_eq!(u64::unset(), None);
        assert_eq!(Option::<Secret>::parse("k").unwrap().render(), REDACTED);
        const { assert!(<Option<Secret> as OptionValue>::SECRET) };
    }

    #[test]
    fn glance_auth_types_and_interfaces() {
        assert_eq!(
            GlanceAuthType::parse("password"),
            Ok(GlanceAuthType::Password)
        );
        assert_eq!(GlanceAuthType::parse("none"), Ok(GlanceAuthType::None));
        assert!(
            GlanceAuthType::parse("v3applicationcredential")
                .unwrap_err()
                .contains("does not implement")
        );
        assert!(GlanceAuthType::parse("Password").is_err());
        let i = Interfaces::parse("internal, publicURL,internal").unwrap();
        assert_eq!(i.0, vec![Interface::Internal, Interface::Public]);
        assert_eq!(i.render(), "internal,public");
        assert!(
            Interfaces::parse("internal,")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            Interfaces::parse("private")
                .unwrap_err()
                .contains("\"private\"")
        );
    }

    #[test]
    fn auth_strategies_explain_ironic_ones() {
        assert_eq!(AuthStrategy::parse("token"), Ok(AuthStrategy::Token));
        assert!(
            AuthStrategy::parse("keystone")
                .unwrap_err()
                .contains("does not implement")
        );
    }
}
