//! The real Keystone, Glance (with its Swift store) and Swift the Glance tests run against,
//! as `scripts/test.sh` starts them (`scripts/keystone-aio.sh`, `scripts/glance-aio.sh`,
//! `scripts/swift-aio.sh`) and describes them in environment variables. Every variable the
//! Glance tests read is named here and nowhere else.
//!
//! | variable | what |
//! |---|---|
//! | `IRONBOOT_TEST_KEYSTONE_URL` | Keystone's root, without `/v3` |
//! | `IRONBOOT_TEST_KEYSTONE_REGION` | `RegionOne` |
//! | `IRONBOOT_TEST_KEYSTONE_USER`, `_PASSWORD`, `_PROJECT` | the user ironboot authenticates as (`ironboot`, role member in `service`) |
//! | `IRONBOOT_TEST_KEYSTONE_ADMIN_USER`, `_PASSWORD`, `_PROJECT` | an admin (deactivates images) |
//! | `IRONBOOT_TEST_KEYSTONE_DEMO_USER`, `_PASSWORD`, `_PROJECT` | a member of another project |
//! | `IRONBOOT_TEST_GLANCE_URL` | the seed-0 Glance, the catalog's image endpoint |
//! | `IRONBOOT_TEST_GLANCE_CONTAINER`, `IRONBOOT_TEST_GLANCE_SEED` | its `swift_store_container` and seed |
//! | `IRONBOOT_TEST_GLANCE_FILE_URL` | a Glance whose store is a file system, not Swift |
//! | `IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT` | the Swift account Glance stores into (`AUTH_test`) |
//! | `SWIFT_AIO_PROXY_URL` | that Swift |
//!
//! The account's Temp-URL-Key is the one the Swift tests set (`support::swift::account_with_keys`).

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::required_env;

/// A Keystone user and the project its tokens are scoped to (all in domain Default).
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub project: String,
}

/// Where the services are and who may use them.
#[derive(Debug, Clone)]
pub struct GlanceEnv {
    pub keystone_url: String,
    pub region: String,
    pub admin: User,
    /// The user ironboot authenticates as.
    pub service: User,
    /// An ordinary project member.
    pub demo: User,
    pub glance_url: String,
    pub swift_url: String,
    pub swift_account: String,
    pub swift_key: String,
    pub container: String,
    pub seed: u8,
    /// A Glance whose store is not Swift.
    pub file_glance_url: String,
}

/// `role` is `ADMIN_`, `DEMO_` or empty (ironboot's own user).
fn user(role: &str) -> User {
    User {
        name: required_env(&format!("IRONBOOT_TEST_KEYSTONE_{role}USER")),
        password: required_env(&format!("IRONBOOT_TEST_KEYSTONE_{role}PASSWORD")),
        project: required_env(&format!("IRONBOOT_TEST_KEYSTONE_{role}PROJECT")),
    }
}

/// The services, from the environment; fails (never skips) when one is not described.
pub async fn glance_env() -> GlanceEnv {
    GlanceEnv {
        keystone_url: required_env("IRONBOOT_TEST_KEYSTONE_URL")
            .trim_end_matches('/')
            .to_string(),
        region: required_env("IRONBOOT_TEST_KEYSTONE_REGION"),
        admin: user("ADMIN_"),
        service: user(""),
        demo: user("DEMO_"),
        glance_url: required_env("IRONBOOT_TEST_GLANCE_URL")
            .trim_end_matches('/')
            .to_string(),
        swift_url: required_env("SWIFT_AIO_PROXY_URL")
            .trim_end_matches('/')
            .to_string(),
        swift_account: required_env("IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT"),
        swift_key: super::swift::account_with_keys().await.key1,
        container: required_env("IRONBOOT_TEST_GLANCE_CONTAINER"),
        seed: required_env("IRONBOOT_TEST_GLANCE_SEED")
            .parse()
            .expect("IRONBOOT_TEST_GLANCE_SEED is 0-32"),
        file_glance_url: required_env("IRONBOOT_TEST_GLANCE_FILE_URL")
            .trim_end_matches('/')
            .to_string(),
    }
}

fn http() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

impl GlanceEnv {
    /// ironboot's `[ipxe]` and `[glance]` sections for these services, authenticating as
    /// `user` at `auth_url` (Keystone's root when `None`). `extra` goes at the end of
    /// `[glance]`; an option it repeats overrides the one above.
    pub fn ironboot_config_as(&self, user: &User, auth_url: Option<&str>, extra: &str) -> String {
        format!(
            "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = {swift}\n\
             swift_account = {account}\nswift_temp_url_key = {key}\nswift_container = {container}\n\
             swift_store_multiple_containers_seed = {seed}\nauth_type = password\n\
             auth_url = {auth_url}\nusername = {user}\npassword = {password}\nproject_name = {project}\n\
             region_name = {region}\n{extra}",
            swift = self.swift_url,
            account = self.swift_account,
            key = self.swift_key,
            container = self.container,
            seed = self.seed,
            auth_url = auth_url.unwrap_or(&self.keystone_url),
            user = user.name,
            password = user.password,
            project = user.project,
            region = self.region,
        )
    }

    /// [`Self::ironboot_config_as`] the service user.
    pub fn ironboot_config(&self, extra: &str) -> String {
        self.ironboot_config_as(&self.service, None, extra)
    }

    /// A project-scoped token for `user`, and the token body.
    pub async fn token_and_body(&self, user: &User) -> (String, Value) {
        let resp = http()
            .post(format!("{}/v3/auth/tokens", self.keystone_url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user.name, "domain": {"name": "Default"}, "password": user.password}}},
                "scope": {"project": {"name": user.project, "domain": {"name": "Default"}}}}}))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Keystone at {} (IRONBOOT_TEST_KEYSTONE_URL) is unreachable: {e}",
                    self.keystone_url
                )
            });
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "token for {}",
            user.name
        );
        let token = resp.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        (token, resp.json().await.unwrap())
    }

    pub async fn token(&self, user: &User) -> String {
        self.token_and_body(user).await.0
    }

    /// Revokes `token` with an admin token (`DELETE /v3/auth/tokens`).
    pub async fn revoke(&self, token: &str) {
        let admin = self.token(&self.admin).await;
        let status = http()
            .delete(format!("{}/v3/auth/tokens", self.keystone_url))
            .header("x-auth-token", admin)
            .header("x-subject-token", token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::NO_CONTENT, "revoking a token");
    }

    /// Creates an image (`POST /v2/images`) with `fields` added to a raw/bare body; returns
    /// its id. It stays queued until [`Self::upload`].
    pub async fn create_image(&self, token: &str, fields: Value) -> String {
        let mut body = json!({"name": super::unique("it-glance"), "disk_format": "raw", "container_format": "bare"});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = http()
            .post(format!("{}/v2/images", self.glance_url))
            .header("x-auth-token", token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Glance at {} (IRONBOOT_TEST_GLANCE_URL) is unreachable: {e}",
                    self.glance_url
                )
            });
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "create image: {answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// Uploads the image's data, into `store` (a multi-store id) or the default store.
    pub async fn upload(&self, token: &str, id: &str, data: Vec<u8>, store: Option<&str>) {
        let mut req = http()
            .put(format!("{}/v2/images/{id}/file", self.glance_url))
            .header("x-auth-token", token)
            .header("content-type", "application/octet-stream")
            .body(data);
        if let Some(store) = store {
            req = req.header("x-image-meta-store", store);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "upload {id}: {}",
            resp.text().await.unwrap()
        );
    }

    /// Creates an active image holding `data` in Glance's default (Swift) store.
    pub async fn image_with(&self, token: &str, data: &[u8], fields: Value) -> String {
        let id = self.create_image(token, fields).await;
        self.upload(token, &id, data.to_vec(), None).await;
        id
    }

    /// `GET /v2/images/{id}`.
    pub async fn show(&self, token: &str, id: &str) -> Value {
        http()
            .get(format!("{}/v2/images/{id}", self.glance_url))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /v2/images/{id}/actions/deactivate` (admin).
    pub async fn deactivate(&self, token: &str, id: &str) {
        let status = http()
            .post(format!(
                "{}/v2/images/{id}/actions/deactivate",
                self.glance_url
            ))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::NO_CONTENT, "deactivate {id}");
    }

    /// Deletes images, ignoring the ones already gone.
    pub async fn delete_images(&self, token: &str, ids: &[&str]) {
        for id in ids {
            let status = http()
                .delete(format!("{}/v2/images/{id}", self.glance_url))
                .header("x-auth-token", token)
                .send()
                .await
                .unwrap()
                .status();
            assert!(
                status.is_success() || status == StatusCode::NOT_FOUND,
                "delete {id}: {status}"
            );
        }
    }
}
