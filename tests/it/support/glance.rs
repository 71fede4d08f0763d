//! Clients for the real Keystone and Glances that `scripts/test.sh` starts
//! (`scripts/keystone-aio.sh`, `scripts/glance-aio.sh`), talking plain HTTP with reqwest:
//! Keystone v3 password tokens, Glance v2 images, and the Swift objects behind them.
//!
//! The Glances (all with `auth_strategy = keystone`):
//! - [`Glance::seed0`]: images in Swift container `$IRONBOOT_TEST_GLANCE_CONTAINER`
//!   (`glance`), seed 0; the one in the Keystone catalog;
//! - [`Glance::seed3`]: images in `$IRONBOOT_TEST_GLANCE3_CONTAINER` + `_` + the first 3
//!   characters of the id (`glance3_1f0`), seed 3; not in the catalog;
//! - [`Glance::file`]: images in a local directory, no Swift; not in the catalog.
//!
//! Both Swift Glances store images of `$IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB` (1) "MB" or
//! more as a DLO manifest plus segments of `$IRONBOOT_TEST_GLANCE_CHUNK_MB` (1) "MB", where
//! glance_store's MB is 1,024,000 bytes ([`GLANCE_STORE_MB`]). Keystone tokens may live only
//! `$IRONBOOT_TEST_KEYSTONE_TOKEN_EXPIRATION` (60) seconds: [`Glance`] fetches a new one
//! when less than [`TOKEN_MARGIN`] is left.
//!
//! Glance's default policies apply: a `member` creates private, shared and community images
//! in its own project; only an `admin` creates public images and deactivates/reactivates.
//! Images of other projects that the caller may not see answer 404.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Map, Value, json};

/// Re-authenticate when a token has less than this left.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(20);

/// An environment variable that `scripts/test.sh` sets once Keystone and Glance run.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the real Keystone and Glance that scripts/test.sh \
             starts (run scripts/test.sh, or start scripts/swift-aio.sh, scripts/keystone-aio.sh \
             and scripts/glance-aio.sh and eval their `env` output)"
        )
    })
}

fn env_num(name: &str) -> u64 {
    env(name)
        .parse()
        .unwrap_or_else(|e| panic!("{name}={:?} is not a number: {e}", env(name)))
}

/// Keystone's root URL, without `/v3`, e.g. `http://127.0.0.1:25357`.
pub fn keystone_url() -> String {
    env("IRONBOOT_TEST_KEYSTONE_URL")
}

pub fn region() -> String {
    env("IRONBOOT_TEST_KEYSTONE_REGION")
}

/// `[token] expiration` of the test Keystone, in seconds.
pub fn token_expiration() -> u64 {
    env_num("IRONBOOT_TEST_KEYSTONE_TOKEN_EXPIRATION")
}

/// The Swift account every Glance store writes to, e.g. `AUTH_test`.
pub fn swift_account() -> String {
    env("IRONBOOT_TEST_GLANCE_SWIFT_ACCOUNT")
}

/// glance_store's "MB" for `swift_store_large_object_size` and `_chunk_size`:
/// `units.k * units.Ki`, 1,024,000 bytes ("the mixed meaning of MB", store.py).
pub const GLANCE_STORE_MB: usize = 1000 * 1024;

/// Images of at least this many bytes (or of unknown size: a chunked upload) are stored
/// as a manifest plus segments.
pub fn large_object_bytes() -> usize {
    env_num("IRONBOOT_TEST_GLANCE_LARGE_OBJECT_MB") as usize * GLANCE_STORE_MB
}

/// The size of each segment of a large image (the last one holds the rest).
pub fn chunk_bytes() -> usize {
    env_num("IRONBOOT_TEST_GLANCE_CHUNK_MB") as usize * GLANCE_STORE_MB
}

/// The container of an image, as glance_store (and Ironic's `_get_swift_container`)
/// computes it: `base` for seed 0, else `base_` + the first `seed` characters of the
/// lower-cased id, plus one more for each `-` among them.
pub fn container_for(image_id: &str, base: &str, seed: usize) -> String {
    if seed == 0 {
        return base.to_string();
    }
    let id = image_id.to_lowercase();
    let dashes = id.chars().take(seed).filter(|c| *c == '-').count();
    format!(
        "{base}_{}",
        id.chars().take(seed + dashes).collect::<String>()
    )
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ------------------------------------------------------------------ Keystone

/// A Keystone user and the project its tokens are scoped to (domain `Default`).
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub project: String,
    pub domain: String,
}

impl User {
    fn from_env(prefix: &str) -> User {
        User {
            name: env(&format!("{prefix}_USER")),
            password: env(&format!("{prefix}_PASSWORD")),
            project: env(&format!("{prefix}_PROJECT")),
            domain: env("IRONBOOT_TEST_KEYSTONE_DOMAIN"),
        }
    }

    /// `ironboot` in project `service`, role `member`: reads public images of every
    /// project and private ones of its own, not private ones of other projects.
    pub fn ironboot() -> User {
        User::from_env("IRONBOOT_TEST_KEYSTONE")
    }

    /// `demo` in project `demo`, role `member`: an ordinary image owner.
    pub fn demo() -> User {
        User::from_env("IRONBOOT_TEST_KEYSTONE_DEMO")
    }

    /// `admin` in project `admin`, role `admin`: public images, (de)activation.
    pub fn admin() -> User {
        User::from_env("IRONBOOT_TEST_KEYSTONE_ADMIN")
    }
}

/// A project-scoped Keystone token.
#[derive(Clone, Debug)]
pub struct Token {
    /// The `X-Subject-Token` header: what goes into `X-Auth-Token`.
    pub id: String,
    /// Unix times from the body (`2026-11-30T11:10:51.000000Z`, UTC).
    pub issued_at: i64,
    pub expires_at: i64,
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    /// The whole `token` object, catalog included.
    pub body: Value,
}

impl Token {
    /// The URL of the `interface` endpoint of the first service of `service_type` in
    /// `region` (trailing `/` removed).
    pub fn endpoint(&self, service_type: &str, interface: &str, region: &str) -> Option<String> {
        self.body["catalog"]
            .as_array()?
            .iter()
            .filter(|s| s["type"] == service_type)
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["interface"] == interface && e["region_id"] == region)
            .and_then(|e| {
                e["url"]
                    .as_str()
                    .map(|u| u.trim_end_matches('/').to_string())
            })
    }

    /// Seconds left before `expires_at`.
    pub fn seconds_left(&self) -> i64 {
        self.expires_at - super::now()
    }
}

/// Keystone's time format: `2026-11-30T11:10:51.000000Z`.
pub fn parse_keystone_time(s: &str) -> i64 {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]Z"
    );
    time::PrimitiveDateTime::parse(s, &format)
        .unwrap_or_else(|e| panic!("Keystone time {s:?}: {e}"))
        .assume_utc()
        .unix_timestamp()
}

/// The request body of a v3 password authentication scoped to the user's project.
pub fn password_auth_body(user: &User) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user.name, "domain": {"name": user.domain}, "password": user.password}}},
        "scope": {"project": {"name": user.project, "domain": {"name": user.domain}}}}})
}

/// `POST /v3/auth/tokens` with the user's password; panics unless Keystone answers 201.
pub async fn token(user: &User) -> Token {
    let url = format!("{}/v3/auth/tokens", keystone_url());
    let resp = http()
        .post(&url)
        .json(&password_auth_body(user))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Keystone at {url} (IRONBOOT_TEST_KEYSTONE_URL): {e}"));
    let status = resp.status();
    let id = resp
        .headers()
        .get("X-Subject-Token")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status,
        StatusCode::CREATED,
        "password auth as {}@{}: {body}",
        user.name,
        user.project
    );
    let t = body["token"].clone();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    Token {
        id: id.expect("201 without X-Subject-Token"),
        issued_at: parse_keystone_time(t["issued_at"].as_str().unwrap()),
        expires_at: parse_keystone_time(t["expires_at"].as_str().unwrap()),
        user_id: text(&t["user"]["id"]),
        project_id: text(&t["project"]["id"]),
        roles: t["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| text(&r["name"]))
            .collect(),
        body: t,
    }
}

// ------------------------------------------------------------------ Glance

/// What `POST /v2/images` gets: name, formats, visibility and extra properties.
#[derive(Clone, Debug)]
pub struct NewImage {
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    /// `private` (the default here), `public` (admin only), `shared` or `community`.
    pub visibility: String,
    /// Extra properties: top-level keys of the image, e.g. `kernel_id`.
    pub properties: Map<String, Value>,
}

impl NewImage {
    /// A private raw/bare image named `name`.
    pub fn new(name: &str) -> NewImage {
        NewImage {
            name: name.to_string(),
            disk_format: "raw".into(),
            container_format: "bare".into(),
            visibility: "private".into(),
            properties: Map::new(),
        }
    }

    pub fn visibility(mut self, visibility: &str) -> NewImage {
        self.visibility = visibility.to_string();
        self
    }

    pub fn formats(mut self, disk: &str, container: &str) -> NewImage {
        self.disk_format = disk.to_string();
        self.container_format = container.to_string();
        self
    }

    pub fn property(mut self, key: &str, value: impl Into<Value>) -> NewImage {
        self.properties.insert(key.to_string(), value.into());
        self
    }

    fn body(&self) -> Value {
        let mut body = self.properties.clone();
        body.insert("name".into(), json!(self.name));
        body.insert("disk_format".into(), json!(self.disk_format));
        body.insert("container_format".into(), json!(self.container_format));
        body.insert("visibility".into(), json!(self.visibility));
        Value::Object(body)
    }
}

/// One Glance API used as one Keystone user.
pub struct Glance {
    /// Without `/v2`, e.g. `http://127.0.0.1:29300`.
    pub url: String,
    /// Where the URL came from, for messages.
    pub var: &'static str,
    pub user: User,
    http: Client,
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Glance {
    /// The Glance at `$var`, used as `user`.
    pub fn at(var: &'static str, user: User) -> Glance {
        Glance {
            url: env(var).trim_end_matches('/').to_string(),
            var,
            user,
            http: http(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The seed-0 Swift Glance (container `glance`), the one in the catalog.
    pub fn seed0(user: User) -> Glance {
        Glance::at("IRONBOOT_TEST_GLANCE_URL", user)
    }

    /// The seed-3 Swift Glance (containers `glance3_<3 chars>`).
    pub fn seed3(user: User) -> Glance {
        Glance::at("IRONBOOT_TEST_GLANCE3_URL", user)
    }

    /// The file-store Glance (no Swift).
    pub fn file(user: User) -> Glance {
        Glance::at("IRONBOOT_TEST_GLANCE_FILE_URL", user)
    }

    /// A valid token of the user: the cached one unless it has less than [`TOKEN_MARGIN`] left.
    pub async fn token(&self) -> Token {
        let mut cached = self.token.lock().await;
        match &*cached {
            Some(t) if t.seconds_left() > TOKEN_MARGIN.as_secs() as i64 => t.clone(),
            _ => {
                let t = token(&self.user).await;
                *cached = Some(t.clone());
                t
            }
        }
    }

    /// A request to `{url}{path}` carrying the user's token.
    pub async fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let token = self.token().await.id;
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-Auth-Token", token)
            .header("Accept", "application/json")
    }

    async fn send(&self, req: RequestBuilder, what: &str) -> (StatusCode, Value) {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("Glance at {} ({}): {what}: {e}", self.url, self.var));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    fn expect(&self, what: &str, got: (StatusCode, Value), want: StatusCode) -> Value {
        assert_eq!(
            got.0, want,
            "{what} at {} ({}) as {}@{}: {}",
            self.url, self.var, self.user.name, self.user.project, got.1
        );
        got.1
    }

    /// `POST /v2/images`: (status, body). A created image is `queued` (no data yet).
    pub async fn try_create_image(&self, image: &NewImage) -> (StatusCode, Value) {
        let req = self
            .request(Method::POST, "/v2/images")
            .await
            .json(&image.body());
        self.send(req, "create image").await
    }

    /// Creates a `queued` image (no data) and returns it; panics unless 201.
    pub async fn create_image(&self, image: &NewImage) -> Value {
        let got = self.try_create_image(image).await;
        self.expect(
            &format!("create image {:?}", image.name),
            got,
            StatusCode::CREATED,
        )
    }

    /// `PUT /v2/images/{id}/file` with `data`: the status.
    pub async fn try_upload(&self, id: &str, data: Vec<u8>) -> StatusCode {
        let req = self
            .request(Method::PUT, &format!("/v2/images/{id}/file"))
            .await
            .header("Content-Type", "application/octet-stream")
            .body(data);
        self.send(req, "upload").await.0
    }

    /// Uploads `data`; panics unless 204. The image is then `active`.
    pub async fn upload(&self, id: &str, data: Vec<u8>) {
        let status = self.try_upload(id, data).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "upload to image {id} at {} ({})",
            self.url,
            self.var
        );
    }

    /// Creates an image, uploads `data` and returns the `active` image.
    pub async fn create_active(&self, image: &NewImage, data: Vec<u8>) -> Value {
        let id = self.create_image(image).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.upload(&id, data).await;
        let shown = self.image(&id).await;
        assert_eq!(
            shown["status"], "active",
            "image {id} after upload: {shown}"
        );
        shown
    }

    /// `GET /v2/images/{id}`: (status, body).
    pub async fn show(&self, id: &str) -> (StatusCode, Value) {
        let req = self.request(Method::GET, &format!("/v2/images/{id}")).await;
        self.send(req, "show image").await
    }

    /// The image; panics unless 200.
    pub async fn image(&self, id: &str) -> Value {
        let got = self.show(id).await;
        self.expect(&format!("show image {id}"), got, StatusCode::OK)
    }

    /// `GET /v2/images?...`: the `images` of the first page.
    pub async fn list(&self, query: &str) -> Vec<Value> {
        let req = self
            .request(Method::GET, &format!("/v2/images?{query}"))
            .await;
        let got = self.send(req, "list images").await;
        self.expect("list images", got, StatusCode::OK)["images"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// `GET /v2/images/{id}/file`: (status, bytes).
    pub async fn download(&self, id: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .request(Method::GET, &format!("/v2/images/{id}/file"))
            .await
            .send()
            .await
            .unwrap_or_else(|e| panic!("Glance at {} ({}): download: {e}", self.url, self.var));
        let status = resp.status();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    async fn action(&self, id: &str, action: &str) {
        let req = self
            .request(Method::POST, &format!("/v2/images/{id}/actions/{action}"))
            .await;
        let got = self.send(req, action).await;
        self.expect(&format!("{action} image {id}"), got, StatusCode::NO_CONTENT);
    }

    /// Deactivates an image (admin only): its data can no longer be downloaded by
    /// non-admins (403).
    pub async fn deactivate(&self, id: &str) {
        self.action(id, "deactivate").await;
    }

    /// Reactivates a deactivated image (admin only).
    pub async fn reactivate(&self, id: &str) {
        self.action(id, "reactivate").await;
    }

    /// Deletes an image; an image that is already gone is fine.
    pub async fn delete(&self, id: &str) {
        let req = self
            .request(Method::DELETE, &format!("/v2/images/{id}"))
            .await;
        let (status, body) = self.send(req, "delete image").await;
        assert!(
            status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND,
            "delete image {id} at {} ({}): {status} {body}",
            self.url,
            self.var
        );
    }
}

// ------------------------------------------------------------------ Swift

/// The Swift account behind the Glances, logged in with tempauth.
pub struct SwiftStore {
    pub http: Client,
    /// `http://127.0.0.1:28080/v1/AUTH_test`
    pub storage_url: String,
    token: String,
}

impl SwiftStore {
    /// Logs in as `$SWIFT_AIO_USER` (the user the Glances store with).
    pub async fn login() -> SwiftStore {
        let http = http();
        let auth = super::required_env("SWIFT_AIO_AUTH_URL");
        let resp = http
            .get(&auth)
            .header("X-Auth-User", super::required_env("SWIFT_AIO_USER"))
            .header("X-Auth-Key", super::required_env("SWIFT_AIO_KEY"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Swift auth at {auth} (SWIFT_AIO_AUTH_URL): {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "tempauth login at {auth}");
        let header = |n: &str| resp.headers()[n].to_str().unwrap().to_string();
        SwiftStore {
            storage_url: header("X-Storage-Url"),
            token: header("X-Auth-Token"),
            http,
        }
    }

    fn url(&self, container: &str, object: &str) -> String {
        format!("{}/{container}/{object}", self.storage_url)
    }

    /// `HEAD` an object: status and headers.
    pub async fn head(
        &self,
        container: &str,
        object: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap) {
        let resp = self
            .http
            .head(self.url(container, object))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.headers().clone())
    }

    /// `GET` an object (a DLO manifest returns the whole image): status and bytes.
    pub async fn get(&self, container: &str, object: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .http
            .get(self.url(container, object))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }

    /// The JSON listing of the objects in `container` whose names start with `prefix`
    /// (empty when the container does not exist).
    pub async fn list(&self, container: &str, prefix: &str) -> Vec<Value> {
        let resp = self
            .http
            .get(format!("{}/{container}", self.storage_url))
            .query(&[("format", "json"), ("prefix", prefix)])
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert!(
            resp.status().is_success(),
            "list {container}: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }
}
