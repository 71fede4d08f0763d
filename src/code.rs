//! Stable error codes: what clients, scripts and the `ironboot_errors_total` metric match
//! on. Every module's error enum says which code each of its kinds has (`fn code()`); the
//! HTTP edge maps a code to a status in one place. Codes never come from message text.
//!
//! `docs/operations.md` lists every code; a test checks that the two lists agree.

macro_rules! codes {
    ($($variant:ident = $text:literal,)+) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),+ }

        impl ErrorCode {
            /// Every code, for the documentation check.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),+ }
            }
        }
    };
}

codes! {
    // The request itself.
    InvalidBody = "invalid_body",
    InvalidField = "invalid_field",
    InvalidMac = "invalid_mac",
    InvalidQuery = "invalid_query",
    ReadOnlyField = "read_only_field",
    BodyTooLarge = "body_too_large",
    DocumentTooLarge = "document_too_large",
    Unauthorized = "unauthorized",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    RequestTimeout = "request_timeout",
    RangeNotSatisfiable = "range_not_satisfiable",
    // Nodes.
    NodeNotFound = "node_not_found",
    DuplicateMac = "duplicate_mac",
    DuplicateName = "duplicate_name",
    ConcurrentUpdate = "concurrent_update",
    NoBootTarget = "no_boot_target",
    NoMacs = "no_macs",
    // Images.
    MissingImage = "missing_image",
    InvalidImageRef = "invalid_image_ref",
    UnsupportedImageRef = "unsupported_image_ref",
    ImageNotFound = "image_not_found",
    SwiftRefusedTempurl = "swift_refused_tempurl",
    SwiftUnreachable = "swift_unreachable",
    SwiftError = "swift_error",
    SwiftKeyUnavailable = "swift_key_unavailable",
    SwiftAuthFailed = "swift_auth_failed",
    // Glance and Keystone.
    GlanceImageNotFound = "glance_image_not_found",
    GlanceImageForbidden = "glance_image_forbidden",
    GlanceImageNotActive = "glance_image_not_active",
    GlanceImageNotInSwift = "glance_image_not_in_swift",
    GlanceObjectNotFound = "glance_object_not_found",
    GlanceUnreachable = "glance_unreachable",
    GlanceTimeout = "glance_timeout",
    GlanceError = "glance_error",
    KeystoneAuthFailed = "keystone_auth_failed",
    KeystoneUnreachable = "keystone_unreachable",
    KeystoneError = "keystone_error",
    // The image cache and the origins it downloads from.
    InvalidChecksum = "invalid_checksum",
    ImageChecksumMismatch = "image_checksum_mismatch",
    CacheFull = "cache_full",
    ImageSourceUnreachable = "image_source_unreachable",
    ImageSourceTimeout = "image_source_timeout",
    ImageSourceError = "image_source_error",
    CacheIo = "cache_io",
    // The service.
    RenderFailed = "render_failed",
    DatabaseUnavailable = "database_unavailable",
    DatabaseGone = "database_gone",
    CorruptRecord = "corrupt_record",
    FallbackMissing = "fallback_missing",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes in the "Error codes" table of docs/operations.md.
    fn documented() -> std::collections::BTreeSet<String> {
        let doc = include_str!("../docs/operations.md");
        let table = doc
            .split("### Error codes")
            .nth(1)
            .expect("docs/operations.md has an Error codes section");
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_code_is_documented_and_every_documented_code_exists() {
        let code: std::collections::BTreeSet<String> = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        let doc = documented();
        let undocumented: Vec<_> = code.difference(&doc).collect();
        let unknown: Vec<_> = doc.difference(&code).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "not in docs/operations.md: {undocumented:?}; documented but not in src/code.rs: {unknown:?}"
        );
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
        }
    }
}
