//! `clusster transfer push|pull|copy|status|cancel`: ask the local daemon to move data
//! between sites, and follow it.

use super::{UsageError, print_report};
use crate::api::{NewTransfer, TransferStatus};
use crate::cli::{TransferCommand, TransferOpts};
use crate::client::AdminClient;
use anyhow::bail;
use reqwest::Method;
use std::time::Duration;
use transfer_engine::manager::{Kind, State};

/// Runs a transfer verb.
pub(super) async fn run(command: TransferCommand) -> anyhow::Result<()> {
    let request = |mode: &str, from: Option<String>, to: Option<String>, source: String, dest: Option<String>| {
        NewTransfer { mode: mode.into(), to, from, source, dest, priority: 0, rate_limit: None }
    };
    let (mut body, opts) = match command {
        TransferCommand::Push { site, source, dest, opts } => (request("push", None, Some(site), source, dest), opts),
        TransferCommand::Pull { site, source, dest, opts } => (request("pull", Some(site), None, source, dest), opts),
        TransferCommand::Copy { from, to, source, dest, opts } => {
            (request("copy", Some(from), Some(to), source, dest), opts)
        }
        TransferCommand::Status { id, wait, admin } => {
            let client = AdminClient::locate(admin.admin.as_deref(), admin.data_dir.as_deref())?;
            return match id {
                Some(id) if wait => follow(&client, &id, admin.json).await,
                Some(id) => {
                    let status: TransferStatus =
                        client.call_without_body(Method::GET, &format!("/admin/transfers/{id}")).await?;
                    print_report(&admin, &status, describe);
                    Ok(())
                }
                None => {
                    let all: Vec<TransferStatus> = client.call_without_body(Method::GET, "/admin/transfers").await?;
                    print_report(&admin, &all, |all| {
                        let rows: Vec<String> = all.iter().map(describe).collect();
                        if rows.is_empty() { "no transfers".into() } else { rows.join("\n") }
                    });
                    Ok(())
                }
            };
        }
        TransferCommand::Cancel { id, admin } => {
            let client = AdminClient::locate(admin.admin.as_deref(), admin.data_dir.as_deref())?;
            let status: TransferStatus =
                client.call_without_body(Method::DELETE, &format!("/admin/transfers/{id}")).await?;
            print_report(&admin, &status, |s| format!("cancelling {}", s.id));
            return Ok(());
        }
    };
    let TransferOpts { priority, rate_limit, wait, admin } = opts;
    body.priority = priority;
    if let Some(rate) = &rate_limit {
        body.rate_limit = Some(parse_rate(rate).map_err(UsageError)?);
    }
    for selection in std::iter::once(&body.source).chain(&body.dest) {
        if selection.is_empty() || selection.starts_with('/') {
            return Err(UsageError(format!("{selection:?}: expected BUCKET or BUCKET/PREFIX")).into());
        }
    }
    let client = AdminClient::locate(admin.admin.as_deref(), admin.data_dir.as_deref())?;
    let status: TransferStatus = client.call(Method::POST, "/admin/transfers", Some(&body)).await?;
    if wait {
        return follow(&client, &status.id, admin.json).await;
    }
    print_report(&admin, &status, |s| format!("started transfer {}", s.id));
    Ok(())
}

/// Polls a transfer until it ends; progress on stderr, the final status on stdout.
async fn follow(client: &AdminClient, id: &str, json: bool) -> anyhow::Result<()> {
    loop {
        let status: TransferStatus = client.call_without_body(Method::GET, &format!("/admin/transfers/{id}")).await?;
        if status.state.is_final() {
            if json {
                println!("{}", super::json_text(&status));
            } else {
                println!("{}", describe(&status));
            }
            if status.state != State::Done {
                bail!("transfer {id} {}: {}", status.state, status.error.as_deref().unwrap_or("no reason given"));
            }
            return Ok(());
        }
        if !json {
            eprintln!("{}", describe(&status));
        }
        // Short enough that a waiting script sees the end within a tenth of a second.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(s: &TransferStatus) -> String {
    let p = &s.progress;
    let peer = match &s.spec.kind {
        Kind::Push { to, delegated_by: None } => format!("push to {to}"),
        Kind::Push { to, delegated_by: Some(asker) } => format!("push to {to} for {asker}"),
        Kind::Pull { from } => format!("pull from {from}"),
        Kind::Copy { from, to } => format!("copy {from} -> {to}"),
        Kind::Incoming { peer, .. } => format!("incoming from {peer}"),
    };
    let peer = match &s.spec.version {
        Some(id) => format!("{peer}, version {}", hex::encode(&id[..6])),
        None => peer,
    };
    let eta = s.eta_secs.map(|e| format!(", eta {e:.0} s")).unwrap_or_default();
    let error = s.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
    format!(
        "{} {peer} {}: {} objects, {}/{} chunks, {:.1}/{:.1} MB moved, {:.1} MB on the wire, {:.1} MB/s{eta}{error}",
        s.id,
        s.state,
        p.objects,
        p.chunks_done,
        p.chunks_wanted,
        p.bytes_done as f64 / 1e6,
        p.bytes_wanted as f64 / 1e6,
        p.wire_bytes as f64 / 1e6,
        s.rate_bytes_per_sec / 1e6,
    )
}

/// `100M` → 100,000,000 bytes per second.
fn parse_rate(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 1_000),
        Some('M' | 'm') => (&text[..text.len() - 1], 1_000_000),
        Some('G' | 'g') => (&text[..text.len() - 1], 1_000_000_000),
        _ => (text, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => n.checked_mul(scale).ok_or_else(|| format!("rate {text:?} is too large")),
        _ => Err(format!("rate {text:?}: expected a positive number of bytes per second, e.g. 50M")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates() {
        assert_eq!(super::parse_rate("50M"), Ok(50_000_000));
        assert_eq!(super::parse_rate("1500"), Ok(1500));
        assert!(super::parse_rate("0").is_err());
        assert!(super::parse_rate("fast").is_err());
    }
}
