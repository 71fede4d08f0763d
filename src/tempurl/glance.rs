//! Where Glance keeps an image in Swift, by Ironic's rules
//! (`ironic/common/glance_service/image_service.py`, `swift_temp_url`):
//!
//! * URL: `{endpoint}/{api_version}/{account}/{container}/{image_id}`.
//! * Endpoint: a trailing `/v1/{prefix}<account>` (with an optional `/`) is stripped, so a
//!   catalog-style endpoint such as `http://swift:8080/v1/AUTH_abc` works.
//! * Account: `[glance] swift_account`, else `swift_account_prefix` (with `_` appended when
//!   missing) followed by the project id.
//! * Container: with `swift_store_multiple_containers_seed = N > 0`, the id is lowercased,
//!   the dashes among its first N characters are counted, and the first N + dashes characters
//!   are appended to the container with `_`: seed 3 and `3A1…` give `glance_3a1`.
//!   With N = 0 the container is used as it is.
//! * The image id must be UUID-like (oslo's `is_uuid_like`).

/// Ironic's account prefix rule: the prefix always ends with `_`.
pub fn normalized_account_prefix(prefix: &str) -> String {
    if prefix.ends_with('_') {
        prefix.to_string()
    } else {
        format!("{prefix}_")
    }
}

/// The account for a project id when `swift_account` is not set.
pub fn account_for_project(prefix: &str, project_id: &str) -> String {
    format!("{}{project_id}", normalized_account_prefix(prefix))
}

/// Strips a trailing `/v1/<prefix><account>[/]` from an endpoint, as Ironic does with the
/// endpoint it gets from the catalog or the config. The prefix is matched literally.
pub fn strip_account_suffix<'a>(endpoint: &'a str, prefix: &str) -> &'a str {
    let trimmed = endpoint.strip_suffix('/').unwrap_or(endpoint);
    let marker = format!("/v1/{}", normalized_account_prefix(prefix));
    if let Some(at) = trimmed.rfind(&marker) {
        let account = &trimmed[at + marker.len()..];
        if !account.is_empty() && !account.contains('/') {
            return &endpoint[..at];
        }
    }
    endpoint
}

/// The container an image lives in, for a multiple-containers seed of 0–32.
pub fn container_for(container: &str, seed: u8, image_id: &str) -> String {
    if seed == 0 {
        return container.to_string();
    }
    let id = image_id.to_lowercase();
    let seed = usize::from(seed);
    let dashes = id.chars().take(seed).filter(|&c| c == '-').count();
    let suffix: String = id.chars().take(seed + dashes).collect();
    format!("{container}_{suffix}")
}

/// oslo.utils' `is_uuid_like`: 32 hex digits, optionally with the usual dashes, braces or
/// `urn:uuid:` prefix, in any case.
pub fn is_uuid_like(value: &str) -> bool {
    let v = value.trim();
    let v = v.strip_prefix("urn:uuid:").unwrap_or(v);
    let v = v
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(v);
    uuid::Uuid::try_parse(v).is_ok()
}

/// The unencoded object path of a Glance image: `/{api_version}/{account}/{container}/{id}`.
/// Returns `None` when the id is not UUID-like (Ironic raises `ImageUnacceptable`).
pub fn image_path(
    api_version: &str,
    account: &str,
    container: &str,
    seed: u8,
    image_id: &str,
) -> Option<String> {
    if !is_uuid_like(image_id) {
        return None;
    }
    let container = container_for(container, seed, image_id);
    Some(format!("/{api_version}/{account}/{container}/{image_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples below are the cases of Ironic's TestGlanceSwiftTempURL and the examples
    // in its option help and docstrings.
    const ID: &str = "757274c4-2856-4bd2-bb20-9a4a231e187b";
    const ACCOUNT: &str = "AUTH_a422b2-91f3-2f46-74b7-d7c9e8958f5d30";

    #[test]
    fn single_container_mode_uses_the_container_as_is() {
        assert_eq!(
            image_path("v1", ACCOUNT, "glance", 0, ID).unwrap(),
            format!("/v1/{ACCOUNT}/glance/{ID}")
        );
    }

    #[test]
    fn multiple_containers_take_seed_chars_plus_dashes() {
        // test_swift_temp_url_multiple_containers: seed 8 → glance_757274c4
        assert_eq!(container_for("glance", 8, ID), "glance_757274c4");
        // docstring: 'glance_3a1' for image uuid 3A1xxxxxxx...
        assert_eq!(
            container_for("glance", 3, "3A1B2C3D-0000-0000-0000-000000000000"),
            "glance_3a1"
        );
        // a dash inside the first N characters extends the suffix by one
        assert_eq!(container_for("glance", 9, ID), "glance_757274c4-2");
        assert_eq!(container_for("glance", 13, ID), "glance_757274c4-2856-");
        assert_eq!(container_for("glance", 14, ID), "glance_757274c4-2856-4b");
        // the whole id at seed 32 (four dashes)
        assert_eq!(container_for("glance", 32, ID), format!("glance_{ID}"));
        // the object keeps the id as given, only the container is lowercased
        let upper = ID.to_uppercase();
        assert_eq!(
            image_path("v1", "AUTH_x", "glance", 8, &upper).unwrap(),
            format!("/v1/AUTH_x/glance_757274c4/{upper}")
        );
    }

    #[test]
    fn account_prefix_gets_one_underscore() {
        // test_swift_temp_url_account_detected[_with_prefix[_underscore]]
        assert_eq!(account_for_project("AUTH", "42"), "AUTH_42");
        assert_eq!(account_for_project("SWIFTPREFIX", "42"), "SWIFTPREFIX_42");
        assert_eq!(account_for_project("SWIFTPREFIX_", "42"), "SWIFTPREFIX_42");
    }

    #[test]
    fn endpoint_account_suffix_is_stripped() {
        // test_swift_temp_url_endpoint_with_suffix
        assert_eq!(
            strip_account_suffix("http://another.example.com:8080/v1/AUTH_foobar", "AUTH"),
            "http://another.example.com:8080"
        );
        assert_eq!(
            strip_account_suffix("http://another.example.com:8080/v1/AUTH_foobar/", "AUTH"),
            "http://another.example.com:8080"
        );
        // RADOS GW style endpoints keep their /swift path
        assert_eq!(
            strip_account_suffix("http://rgw:7480/swift/v1/AUTH_abc", "AUTH"),
            "http://rgw:7480/swift"
        );
        assert_eq!(
            strip_account_suffix("http://rgw:7480/swift/v1/SP_abc", "SP_"),
            "http://rgw:7480/swift"
        );
        // nothing to strip
        assert_eq!(
            strip_account_suffix("http://another.example.com:8080", "AUTH"),
            "http://another.example.com:8080"
        );
        assert_eq!(strip_account_suffix("http://x/v1", "AUTH"), "http://x/v1");
        assert_eq!(
            strip_account_suffix("http://x/v1/AUTH_", "AUTH"),
            "http://x/v1/AUTH_"
        );
        assert_eq!(
            strip_account_suffix("http://x/v1/AUTH_a/b", "AUTH"),
            "http://x/v1/AUTH_a/b"
        );
        // the prefix is literal, not a regex
        assert_eq!(
            strip_account_suffix("http://x/v1/AXTH_a", "A.TH"),
            "http://x/v1/AXTH_a"
        );
    }

    #[test]
    fn image_ids_must_be_uuid_like() {
        // test_swift_temp_url_invalid_image_info
        assert!(image_path("v1", "AUTH_x", "glance", 0, "not an id").is_none());
        assert!(image_path("v1", "AUTH_x", "glance", 0, "").is_none());
        assert!(is_uuid_like(ID));
        assert!(is_uuid_like(&ID.to_uppercase()));
        assert!(is_uuid_like(&ID.replace('-', "")));
        assert!(is_uuid_like(&format!("{{{ID}}}")));
        assert!(is_uuid_like(&format!("urn:uuid:{ID}")));
        assert!(!is_uuid_like(&ID[1..]));
    }
}
