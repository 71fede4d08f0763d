//! The name of a master file: Ironic's rule (`ironic/drivers/modules/image_cache.py`,
//! `ImageCache.fetch_image`): a Glance image is named by its image id, any other reference
//! by `uuid5(NAMESPACE_URL, href)` of the whole reference as the node's record holds it.

use std::fmt;

use super::CacheError;

/// The longest key accepted (Glance ids are 36 characters; file names may be 255 bytes, and
/// a key also names `.tmp-<key>-<random>`, `<key>.meta` and `<key>.lock`).
pub const MAX_KEY_LEN: usize = 128;

/// The name of one master file in the cache directory. Only ASCII letters, digits, `-` and
/// `_`, 1 to [`MAX_KEY_LEN`] characters: no `/`, no `.` (so never `.`, `..`, a hidden
/// file, a temporary file or another key's `.meta`/`.lock` sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of a Glance image: its id, as Ironic names the master file. Refuses an id
    /// that is not a safe file name.
    pub fn glance(id: &str) -> Result<CacheKey, CacheError> {
        CacheKey::parse(id)
    }

    /// The key of any other reference (`http(s)://…`, `file://…`):
    /// `uuid5(NAMESPACE_URL, url)` of the reference exactly as given, query string
    /// included, as Ironic computes it.
    pub fn url(url: &str) -> CacheKey {
        CacheKey(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, url.as_bytes()).to_string())
    }

    /// Checks that `text` is a safe key (for Glance ids and names read back from the
    /// cache directory).
    pub fn parse(text: &str) -> Result<CacheKey, CacheError> {
        let reason = if text.is_empty() {
            Some("is empty")
        } else if text.len() > MAX_KEY_LEN {
            Some("is longer than 128 characters")
        } else if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some("may contain only ASCII letters, digits, '-' and '_'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(CacheError::InvalidKey {
                // Debug formatting escapes control characters; the length is bounded so a
                // hostile id cannot flood a log line.
                key: format!("{:?}", truncate(text, 80)),
                reason,
            }),
            None => Ok(CacheKey(text.to_string())),
        }
    }

    /// The key as a file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from Python 3: `str(uuid.uuid5(uuid.NAMESPACE_URL, url))`, the
    /// expression Ironic's image cache uses.
    #[test]
    fn url_keys_are_pythons_uuid5() {
        for (url, want) in [
            (
                "http://10.0.2.2/images/deploy.kernel",
                "d6178465-2d04-5e48-af40-afe5e1f4ad22",
            ),
            (
                "https://images.example.com/ipa.initramfs?temp_url_sig=abc&temp_url_expires=1",
                "3bf8acb1-1dfd-5b16-98bd-a8b854511ec3",
            ),
            (
                "file:///srv/images/k",
                "c0dc0936-966e-5856-9501-ef2cdae018eb",
            ),
        ] {
            assert_eq!(CacheKey::url(url).as_str(), want, "{url}");
            assert!(CacheKey::parse(want).is_ok());
        }
    }

    #[test]
    fn glance_ids_are_keys_as_they_are() {
        let id = "757274c4-2856-4bd2-bb20-9a4a231e187b";
        assert_eq!(CacheKey::glance(id).unwrap().as_str(), id);
    }

    #[test]
    fn hostile_keys_are_refused() {
        let long = "a".repeat(MAX_KEY_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "/abs",
            ".tmp-x-1",
            "k.meta",
            "k.lock",
            "a b",
            "a\u{0}b",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            let e = CacheKey::glance(bad).unwrap_err();
            assert!(matches!(e, CacheError::InvalidKey { .. }), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(CacheKey::glance(&"a".repeat(MAX_KEY_LEN)).is_ok());
    }
}
