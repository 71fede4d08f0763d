//! Image references and where their bytes come from.
//!
//! A reference is a string in a node's `driver_info` or `instance_info`:
//!
//! | form | meaning |
//! |---|---|
//! | `swift://CONTAINER/OBJECT` | an object in `[glance] swift_account`; nodes get a TempURL signed when they ask. The object part is taken as it is (no percent-decoding) and may contain `/`. |
//! | `http://…`, `https://…` | passed to the node unchanged. |
//! | `glance://UUID` or a bare UUID | a Glance image; not supported yet (cache mode). |
//! | `file:///path` | a local file; not supported yet (cache mode). |
//!
//! Parsing is pure; [`swift`] is the client for the conductor's own Swift requests.

pub mod swift;

use crate::node::FieldError;

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
            if object.contains(['\n', '\r', '\0'])
                || container
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(format!(
                    "{text:?} contains control characters or a container with spaces"
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

/// An http(s) URL that can go into an iPXE script as it is: a host, no whitespace, no
/// `${`, no fragment.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?} contains whitespace; percent-encode it (%20)"
        ));
    }
    if url.contains("${") {
        return Err(format!(
            "{url:?} contains ${{, which iPXE would expand; percent-encode the $ (%24)"
        ));
    }
    if url.contains('#') {
        return Err(format!(
            "{url:?} has a fragment (#); iPXE drops it and a server never sees it"
        ));
    }
    Ok(())
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
