//! The CLI's client of the running daemon's admin API.

use crate::admin::TOKEN_FILE;
use crate::config::{DEFAULT_DATA_DIR, LISTEN_FILE};
use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Where and how to reach the daemon's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// `--admin` if given, else the address the daemon wrote into its data dir; the
    /// token from `CLUSSTER_TOKEN` (an API token), `CLUSSTER_ADMIN_TOKEN` or the data dir.
    pub fn locate(admin: Option<&str>, data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
        // A project's API token (for the catalog's routes) if given, else the operator's.
        let token = std::env::var("CLUSSTER_TOKEN")
            .ok()
            .or_else(|| std::env::var("CLUSSTER_ADMIN_TOKEN").ok())
            .or_else(|| std::fs::read_to_string(dir.join(TOKEN_FILE)).ok())
            .map(|t| t.trim().to_owned());
        let base = match admin {
            Some(addr) if addr.starts_with("http") => addr.to_owned(),
            Some(addr) => format!("http://{addr}"),
            None => {
                let file = dir.join(LISTEN_FILE);
                let text = std::fs::read_to_string(&file).with_context(|| {
                    format!(
                        "cannot read {}: is `clusster serve` running with this data dir? (or pass --admin ADDR)",
                        file.display()
                    )
                })?;
                let listeners: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                let addr = listeners["admin"]
                    .as_str()
                    .with_context(|| format!("{} names no admin address", file.display()))?;
                format!("http://{addr}")
            }
        };
        Ok(Self { base, token })
    }

    /// Calls an endpoint with an optional JSON body; returns its answer decoded as `T`
    /// (`()` for an empty one). A problem document becomes the error message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = reqwest::Client::new().request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}: is it running?", self.base))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
        let body: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{url} answered {status} without JSON"))?
        };
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("{url}: {status}: {detail}");
        }
        serde_json::from_value(body).with_context(|| {
            format!("{url} answered in a form this CLI does not know: is the daemon of another version?")
        })
    }

    /// As [`Self::call`] without a body.
    pub async fn call_without_body<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        self.call(method, path, None::<&()>).await
    }
}
