//! The Keystone and the three Glances that `scripts/test.sh` starts behave as the Glance
//! tests rely on: where each Glance puts an image's bytes in Swift (seed 0, seed 3, large
//! objects in segments), which images a project sees, the file store, (de)activation.

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha512};

use crate::support::glance::{
    Glance, NewImage, SwiftStore, User, chunk_bytes, container_for, env, large_object_bytes,
    region, swift_account, token, token_expiration,
};
use crate::support::unique;

/// `len` bytes that differ from image to image.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 251) as u8).wrapping_add(seed))
        .collect()
}

fn sha512_hex(data: &[u8]) -> String {
    Sha512::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn id_of(image: &Value) -> String {
    image["id"].as_str().unwrap().to_string()
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn keystone_issues_project_tokens_with_the_seed0_glance_in_its_catalog() {
    let t = token(&User::ironboot()).await;
    assert_eq!(t.expires_at - t.issued_at, token_expiration() as i64);
    assert!(t.roles.contains(&"member".to_string()), "{:?}", t.roles);
    assert!(!t.roles.contains(&"admin".to_string()), "{:?}", t.roles);
    assert_eq!(
        t.body["project"]["name"],
        env("IRONBOOT_TEST_KEYSTONE_PROJECT")
    );
    let glance = env("IRONBOOT_TEST_GLANCE_URL");
    for interface in ["public", "internal"] {
        assert_eq!(
            t.endpoint("image", interface, &region()).as_deref(),
            Some(glance.as_str()),
            "image {interface} endpoint in {}",
            t.body["catalog"]
        );
    }
    assert_eq!(t.endpoint("image", "public", "nowhere"), None);

    let demo = token(&User::demo()).await;
    assert_ne!(demo.project_id, t.project_id);
}

#[tokio::test]
async fn the_seed0_glance_stores_an_image_as_object_id_in_its_container() {
    let glance = Glance::seed0(User::ironboot());
    let bytes = data(4096, 1);
    let image = glance
        .create_active(
            &NewImage::new(&unique("it-glance-seed0")).property("kernel_id", "k-1"),
            bytes.clone(),
        )
        .await;
    let id = id_of(&image);
    assert_eq!(env("IRONBOOT_TEST_GLANCE_SEED"), "0");
    let container = env("IRONBOOT_TEST_GLANCE_CONTAINER");
    assert_eq!(container_for(&id, &container, 0), container);
    assert_eq!(image["stores"], "swift");
    assert_eq!(image["size"], 4096);
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], sha512_hex(&bytes));
    assert_eq!(image["kernel_id"], "k-1");
    assert_eq!(
        image["direct_url"],
        format!("swift+config://ref1/{container}/{id}")
    );

    let swift = SwiftStore::login().await;
    assert!(
        swift
            .storage_url
            .ends_with(&format!("/{}", swift_account()))
    );
    let (status, headers) = swift.head(&container, &id).await;
    assert_eq!(status, StatusCode::OK, "HEAD {container}/{id}");
    assert_eq!(header(&headers, "content-length"), "4096");
    assert_eq!(
        header(&headers, "etag"),
        image["checksum"].as_str().unwrap()
    );
    assert_eq!(swift.get(&container, &id).await.1, bytes);

    glance.delete(&id).await;
    assert_eq!(swift.head(&container, &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_seed3_glance_stores_an_image_in_a_container_named_after_the_id() {
    let glance = Glance::seed3(User::ironboot());
    let bytes = data(1000, 2);
    let image = glance
        .create_active(&NewImage::new(&unique("it-glance-seed3")), bytes.clone())
        .await;
    let id = id_of(&image);
    assert_eq!(env("IRONBOOT_TEST_GLANCE3_SEED"), "3");
    let base = env("IRONBOOT_TEST_GLANCE3_CONTAINER");
    // a UUID's first dash is its 9th character: 3 characters, no dash among them
    let container = format!("{base}_{}", &id[..3]);
    assert_eq!(container_for(&id, &base, 3), container);
    assert_eq!(
        image["direct_url"],
        format!("swift+config://ref1/{container}/{id}")
    );

    let swift = SwiftStore::login().await;
    let (status, headers) = swift.head(&container, &id).await;
    assert_eq!(status, StatusCode::OK, "HEAD {container}/{id}");
    assert_eq!(header(&headers, "content-length"), "1000");
    let seed0 = env("IRONBOOT_TEST_GLANCE_CONTAINER");
    assert_eq!(swift.head(&seed0, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(swift.head(&base, &id).await.0, StatusCode::NOT_FOUND);

    glance.delete(&id).await;
    assert_eq!(swift.head(&container, &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_image_above_the_large_object_size_is_a_manifest_with_segments() {
    let glance = Glance::seed0(User::ironboot());
    let size = 2 * large_object_bytes() + large_object_bytes() / 2;
    let segments = size.div_ceil(chunk_bytes());
    assert!(segments >= 2, "{size} bytes in chunks of {}", chunk_bytes());
    let bytes = data(size, 3);
    let image = glance
        .create_active(&NewImage::new(&unique("it-glance-large")), bytes.clone())
        .await;
    let id = id_of(&image);
    let container = env("IRONBOOT_TEST_GLANCE_CONTAINER");
    assert_eq!(image["size"], size);

    let swift = SwiftStore::login().await;
    let (status, headers) = swift.head(&container, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "x-object-manifest"),
        format!("{container}/{id}-"),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "content-length"), size.to_string());
    let parts = swift.list(&container, &format!("{id}-")).await;
    assert_eq!(parts.len(), segments, "{parts:?}");
    let stored: u64 = parts.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert_eq!(stored, size as u64);
    // the manifest alone is 0 bytes in the listing: never take the listing for the size
    let listed = swift.list(&container, &id).await;
    let manifest = listed.iter().find(|o| o["name"] == id.as_str()).unwrap();
    assert_eq!(manifest["bytes"], 0);
    assert_eq!(swift.get(&container, &id).await.1, bytes);
    assert_eq!(glance.download(&id).await, (StatusCode::OK, bytes));

    glance.delete(&id).await;
    assert_eq!(swift.head(&container, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(swift.list(&container, &format!("{id}-")).await.len(), 0);
}

/// Glance hides images a project may not see: another project's private image answers
/// 404, not 403.
#[tokio::test]
async fn a_project_sees_public_images_but_not_another_projects_private_ones() {
    let ironboot = Glance::seed0(User::ironboot());
    let demo = Glance::seed0(User::demo());
    let admin = Glance::seed0(User::admin());

    let name = unique("it-glance-private");
    let private = ironboot.create_image(&NewImage::new(&name)).await;
    let id = id_of(&private);
    assert_eq!(private["status"], "queued");
    assert_eq!(private["visibility"], "private");
    assert_eq!(private["owner"], token(&User::ironboot()).await.project_id);
    // a queued image has no data: 204
    assert_eq!(
        ironboot.download(&id).await,
        (StatusCode::NO_CONTENT, vec![])
    );
    let (status, body) = demo.show(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "demo sees {id}: {body}");
    assert_eq!(demo.download(&id).await.0, StatusCode::NOT_FOUND);
    assert!(demo.list(&format!("name={name}")).await.is_empty());
    assert_eq!(ironboot.list(&format!("name={name}")).await.len(), 1);

    // only an admin publishes
    let (status, _) = ironboot
        .try_create_image(&NewImage::new(&unique("it-glance-pub")).visibility("public"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bytes = data(100, 4);
    let public = admin
        .create_active(
            &NewImage::new(&unique("it-glance-pub")).visibility("public"),
            bytes.clone(),
        )
        .await;
    let public_id = id_of(&public);
    assert_eq!(ironboot.image(&public_id).await["visibility"], "public");
    assert_eq!(ironboot.download(&public_id).await, (StatusCode::OK, bytes));
    assert_eq!(demo.show(&public_id).await.0, StatusCode::OK);
    let admin_private = admin
        .create_image(&NewImage::new(&unique("it-glance-adm")))
        .await;
    assert_eq!(
        ironboot.show(&id_of(&admin_private)).await.0,
        StatusCode::NOT_FOUND
    );

    ironboot.delete(&id).await;
    admin.delete(&public_id).await;
    admin.delete(&id_of(&admin_private)).await;
}

#[tokio::test]
async fn a_deactivated_image_cannot_be_downloaded_until_it_is_reactivated() {
    let owner = Glance::seed3(User::ironboot());
    let admin = Glance::seed3(User::admin());
    let bytes = data(200, 5);
    let id = id_of(
        &owner
            .create_active(&NewImage::new(&unique("it-glance-deact")), bytes.clone())
            .await,
    );
    admin.deactivate(&id).await;
    assert_eq!(owner.image(&id).await["status"], "deactivated");
    assert_eq!(owner.download(&id).await.0, StatusCode::FORBIDDEN);
    admin.reactivate(&id).await;
    assert_eq!(owner.image(&id).await["status"], "active");
    assert_eq!(owner.download(&id).await, (StatusCode::OK, bytes));
    owner.delete(&id).await;
}

#[tokio::test]
async fn the_file_store_glance_keeps_images_out_of_swift() {
    let glance = Glance::file(User::ironboot());
    let bytes = data(3000, 6);
    let image = glance
        .create_active(&NewImage::new(&unique("it-glance-file")), bytes.clone())
        .await;
    let id = id_of(&image);
    assert_eq!(image["stores"], "fs");
    let direct = image["direct_url"].as_str().unwrap();
    assert!(direct.starts_with("file://"), "{direct}");
    let locations = image["locations"].as_array().unwrap();
    assert!(!locations.is_empty());
    for l in locations {
        let url = l["url"].as_str().unwrap();
        assert!(url.starts_with("file://"), "{url}");
    }
    assert_eq!(glance.download(&id).await, (StatusCode::OK, bytes));

    let swift = SwiftStore::login().await;
    let seed0 = env("IRONBOOT_TEST_GLANCE_CONTAINER");
    let seeded = container_for(&id, &env("IRONBOOT_TEST_GLANCE3_CONTAINER"), 3);
    assert_eq!(swift.head(&seed0, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(swift.head(&seeded, &id).await.0, StatusCode::NOT_FOUND);
    glance.delete(&id).await;
}
