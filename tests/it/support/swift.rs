//! A minimal client for the real Swift that `scripts/swift-aio.sh` runs: tempauth login,
//! containers, objects and temp-URL key metadata.

use std::sync::OnceLock;

use ironboot::tempurl::encode_path;
use reqwest::{Client, StatusCode};

use super::required_env;

/// The Swift all-in-one's proxy, e.g. `http://127.0.0.1:28080`.
pub fn proxy_url() -> String {
    required_env("SWIFT_AIO_PROXY_URL")
}

/// A logged-in Swift account.
#[derive(Clone)]
pub struct Account {
    pub http: Client,
    /// `http://127.0.0.1:28080/v1/AUTH_test`
    pub storage_url: String,
    /// `/v1/AUTH_test`
    pub path: String,
    token: String,
}

fn http() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

impl Account {
    /// Logs in with tempauth, e.g. `test:tester` / `testing`.
    pub async fn login(user: &str, key: &str) -> Account {
        let http = http();
        let auth = required_env("SWIFT_AIO_AUTH_URL");
        let resp = http
            .get(&auth)
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Swift auth at {auth} unreachable: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "tempauth login as {user}");
        let header = |n: &str| resp.headers()[n].to_str().unwrap().to_string();
        let storage_url = header("X-Storage-Url");
        let token = header("X-Auth-Token");
        let path = storage_url[proxy_url().len()..].to_string();
        Account {
            http,
            storage_url,
            path,
            token,
        }
    }

    /// The main test account, AUTH_test.
    pub async fn test() -> Account {
        Account::login(
            &required_env("SWIFT_AIO_USER"),
            &required_env("SWIFT_AIO_KEY"),
        )
        .await
    }

    /// A second account, AUTH_test2, used by tests that change account metadata.
    pub async fn test2() -> Account {
        Account::login("test2:tester2", "testing2").await
    }

    fn url(&self, rest: &str) -> String {
        format!("{}{}", self.storage_url, encode_path(rest))
    }

    /// Sends a metadata request (no body) with extra headers and asserts it succeeded.
    async fn meta(
        &self,
        method: reqwest::Method,
        url: String,
        headers: &[(&str, &str)],
        what: &str,
    ) {
        let mut req = self
            .http
            .request(method, url)
            .header("X-Auth-Token", &self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let status = req.send().await.unwrap().status();
        assert!(status.is_success(), "{what}: {status}");
    }

    /// POSTs account metadata, e.g. `("X-Account-Meta-Temp-URL-Key", "k")`. An empty value
    /// removes the header, as in Swift.
    pub async fn post_account(&self, headers: &[(&str, &str)]) {
        self.meta(
            reqwest::Method::POST,
            self.storage_url.clone(),
            headers,
            "POST account",
        )
        .await;
    }

    pub async fn put_container(&self, name: &str, headers: &[(&str, &str)]) {
        self.meta(
            reqwest::Method::PUT,
            self.url(&format!("/{name}")),
            headers,
            &format!("PUT container {name}"),
        )
        .await;
    }

    pub async fn post_container(&self, name: &str, headers: &[(&str, &str)]) {
        self.meta(
            reqwest::Method::POST,
            self.url(&format!("/{name}")),
            headers,
            &format!("POST container {name}"),
        )
        .await;
    }

    pub async fn put_object(&self, container: &str, name: &str, body: Vec<u8>) {
        let status = self
            .http
            .put(self.url(&format!("/{container}/{name}")))
            .header("X-Auth-Token", &self.token)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::CREATED, "PUT {container}/{name}");
    }

    pub async fn delete_object(&self, container: &str, name: &str) {
        let status = self
            .http
            .delete(self.url(&format!("/{container}/{name}")))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "DELETE {container}/{name}: {status}"
        );
    }
}

/// The account keys of AUTH_test, set once per test run and never changed afterwards, so
/// that tests running in parallel can rely on them. Tests that rotate keys use AUTH_test2.
pub struct AccountKeys {
    pub account: Account,
    pub key1: String,
    pub key2: String,
}

static KEYS: OnceLock<(String, String)> = OnceLock::new();
static KEYS_SET: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

pub async fn account_with_keys() -> AccountKeys {
    let (key1, key2) = KEYS
        .get_or_init(|| (super::unique("acct-key1"), super::unique("acct-key2")))
        .clone();
    let account = Account::test().await;
    KEYS_SET
        .get_or_init(|| async {
            account
                .post_account(&[
                    ("X-Account-Meta-Temp-URL-Key", &key1),
                    ("X-Account-Meta-Temp-URL-Key-2", &key2),
                ])
                .await;
        })
        .await;
    AccountKeys {
        account,
        key1,
        key2,
    }
}
