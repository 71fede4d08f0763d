//! A small client of ironboot's REST API, for the `node` and `conductor` commands.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::CliError;
use crate::config::Secret;

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl ApiClient {
    /// A client of the API at `base`, with the token read from `token_file` (by the rule
    /// `serve` reads `[api] token_file` by, so both sides get the same token).
    pub fn from_args(
        base: &str,
        token_file: Option<&std::path::Path>,
    ) -> Result<ApiClient, CliError> {
        let token = match token_file {
            Some(path) => {
                let file = crate::config::read_secret_file(path)
                    .map_err(|e| CliError::Usage(format!("--token-file: {e}")))?;
                if let Some(w) = file.warning {
                    eprintln!("warning: --token-file: {w}");
                }
                Some(file.secret)
            }
            None => None,
        };
        Ok(ApiClient::new(base, token))
    }

    pub fn new(base: &str, token: Option<Secret>) -> ApiClient {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ironboot-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("a reqwest client with rustls builds");
        ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// Sends a request; a JSON error body becomes `CliError::Api` with its code and message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        if let Some(b) = body {
            let content_type = if path.ends_with("/boot") {
                "application/json"
            } else {
                "application/merge-patch+json"
            };
            req = req.header("content-type", content_type).body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Runtime(format!("cannot reach the ironboot API at {}: {}; is `ironboot serve` running? (set --url or IRONBOOT_URL)", self.base, root_cause(&e)))
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Runtime(format!("reading the API response: {e}")))?;
        if status.is_success() {
            return Ok((status, text));
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let (code, message) = match parsed.as_ref().and_then(|v| v.get("error")) {
            Some(e) => (
                e.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or(&text)
                    .to_string(),
            ),
            None => (status.as_u16().to_string(), text.trim().to_string()),
        };
        Err(CliError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Every item of a paged listing (`{"nodes": [...], "next": "<url>"}` as Ironic pages):
    /// follows `next` until a page has none. The next page is requested from this client's
    /// own base URL with the query of `next`, so the token goes nowhere else whatever host
    /// the link names.
    pub async fn list_all(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
    ) -> Result<Vec<Value>, CliError> {
        let key = path.rsplit('/').next().unwrap_or(path).to_string();
        let mut items = Vec::new();
        let mut markers = std::collections::HashSet::new();
        let mut next_query: Vec<(String, String)>;
        loop {
            let mut page = self.json(Method::GET, path, &query, None).await?;
            match page.get_mut(&key).map(Value::take) {
                Some(Value::Array(a)) => items.extend(a),
                _ => {
                    return Err(CliError::Runtime(format!(
                        "the API answered GET {path} without a {key:?} list"
                    )));
                }
            }
            let Some(next) = page.get("next").and_then(Value::as_str) else {
                return Ok(items);
            };
            let base = url::Url::parse("http://ironboot.invalid/").expect("a valid URL");
            let link = base.join(next).map_err(|e| {
                CliError::Runtime(format!("the API sent an invalid next link {next:?}: {e}"))
            })?;
            next_query = link.query_pairs().into_owned().collect();
            let marker = next_query
                .iter()
                .find(|(k, _)| k == "marker")
                .map(|(_, v)| v.clone());
            if !marker.is_some_and(|m| markers.insert(m)) {
                return Err(CliError::Runtime(format!(
                    "the API sent a next link without a new marker: {next}"
                )));
            }
            query = next_query
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
        }
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let (_, text) = self.send(method, path, query, body).await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| CliError::Runtime(format!("the API sent invalid JSON: {e}")))
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
