//! CLI verbs that ask the running daemon through its admin listener.

use crate::config::{DEFAULT_DATA_DIR, LISTEN_FILE};
use anyhow::{Context, bail};
use std::path::Path;

/// The admin base URL: `--admin` if given, else the address the daemon wrote into its
/// data dir.
pub fn admin_url(admin: Option<&str>, data_dir: Option<&Path>) -> anyhow::Result<String> {
    if let Some(addr) = admin {
        return Ok(if addr.starts_with("http") { addr.to_owned() } else { format!("http://{addr}") });
    }
    let dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
    let file = dir.join(LISTEN_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}: is `clusster serve` running with this data dir? (or pass --admin ADDR)",
            file.display()
        )
    })?;
    let listeners: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let addr = listeners["admin"].as_str().with_context(|| format!("{} names no admin address", file.display()))?;
    Ok(format!("http://{addr}"))
}

/// Calls an admin endpoint and returns its JSON answer; a problem document becomes the
/// error message.
pub async fn call(base: &str, method: reqwest::Method, path: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base}{path}");
    let response = reqwest::Client::new()
        .request(method, &url)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {base}: is it running?"))?;
    let status = response.status();
    let body: serde_json::Value =
        response.json().await.with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        bail!("{url}: {status}: {detail}");
    }
    Ok(body)
}
