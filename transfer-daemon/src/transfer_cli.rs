//! `clusster transfer push|pull|copy|status|cancel`: ask the local daemon to move data
//! between sites, and follow it.

use crate::AdminArgs;
use crate::client::AdminClient;
use anyhow::bail;
use std::time::Duration;

/// Transfer verbs.
#[derive(clap::Subcommand)]
pub enum TransferCommand {
    /// Send BUCKET[/PREFIX] of this site to SITE.
    Push {
        /// The receiving site.
        site: String,
        /// What to send: BUCKET or BUCKET/PREFIX on this site.
        source: String,
        /// Where it lands on SITE (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Fetch BUCKET[/PREFIX] of SITE into this site.
    Pull {
        /// The sending site.
        site: String,
        /// What to fetch: BUCKET or BUCKET/PREFIX on SITE.
        source: String,
        /// Where it lands here (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Have site FROM send BUCKET[/PREFIX] to site TO (third-party transfer).
    Copy {
        /// The sending site.
        from: String,
        /// The receiving site.
        to: String,
        /// What to send: BUCKET or BUCKET/PREFIX on FROM.
        source: String,
        /// Where it lands on TO (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Show one transfer, or all transfers this daemon knows of.
    Status {
        /// The transfer id (32 hex digits).
        id: Option<String>,
        /// Follow it until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cancel a transfer; what it already moved is released on both sides.
    Cancel {
        /// The transfer id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Options shared by push, pull and copy.
#[derive(clap::Args)]
pub struct TransferOpts {
    /// Higher runs first when transfers queue (0-255).
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Cap on the data rate, bytes per second (suffixes K, M, G: powers of 1000).
    #[arg(long)]
    rate_limit: Option<String>,
    /// Wait for the transfer to end, showing progress; exit 1 if it fails.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Runs a transfer verb.
pub async fn run(command: TransferCommand) -> anyhow::Result<()> {
    let (body, opts) = match command {
        TransferCommand::Push { site, source, dest, opts } => {
            (serde_json::json!({ "mode": "push", "to": site, "source": source, "dest": dest }), opts)
        }
        TransferCommand::Pull { site, source, dest, opts } => {
            (serde_json::json!({ "mode": "pull", "from": site, "source": source, "dest": dest }), opts)
        }
        TransferCommand::Copy { from, to, source, dest, opts } => {
            (serde_json::json!({ "mode": "copy", "from": from, "to": to, "source": source, "dest": dest }), opts)
        }
        TransferCommand::Status { id, wait, admin } => {
            let client = AdminClient::locate(admin.admin.as_deref(), admin.data_dir.as_deref())?;
            return match id {
                Some(id) if wait => follow(&client, &id, admin.json).await,
                Some(id) => {
                    let status = client.call(reqwest::Method::GET, &format!("/admin/transfers/{id}"), None).await?;
                    print(&admin, &status, describe);
                    Ok(())
                }
                None => {
                    let all = client.call(reqwest::Method::GET, "/admin/transfers", None).await?;
                    print(&admin, &all, |a| {
                        let rows: Vec<String> = a.as_array().into_iter().flatten().map(describe).collect();
                        if rows.is_empty() { "no transfers".into() } else { rows.join("\n") }
                    });
                    Ok(())
                }
            };
        }
        TransferCommand::Cancel { id, admin } => {
            let client = AdminClient::locate(admin.admin.as_deref(), admin.data_dir.as_deref())?;
            let status = client.call(reqwest::Method::DELETE, &format!("/admin/transfers/{id}"), None).await?;
            print(&admin, &status, |s| format!("cancelling {}", s["id"].as_str().unwrap_or("")));
            return Ok(());
        }
    };
    let mut body = body;
    body["priority"] = opts.priority.into();
    if let Some(rate) = &opts.rate_limit {
        body["rate_limit"] = parse_rate(rate).map_err(crate::UsageError)?.into();
    }
    for field in ["source", "dest"] {
        if let Some(s) = body[field].as_str()
            && (s.is_empty() || s.starts_with('/'))
        {
            return Err(crate::UsageError(format!("{s:?}: expected BUCKET or BUCKET/PREFIX")).into());
        }
    }
    let client = AdminClient::locate(opts.admin.admin.as_deref(), opts.admin.data_dir.as_deref())?;
    let status = client.call(reqwest::Method::POST, "/admin/transfers", Some(body)).await?;
    let id = status["id"].as_str().unwrap_or_default().to_owned();
    if opts.wait {
        return follow(&client, &id, opts.admin.json).await;
    }
    print(&opts.admin, &status, |s| format!("started transfer {}", s["id"].as_str().unwrap_or("")));
    Ok(())
}

/// Polls a transfer until it ends; progress on stderr, the final status on stdout.
async fn follow(client: &AdminClient, id: &str, json: bool) -> anyhow::Result<()> {
    loop {
        let status = client.call(reqwest::Method::GET, &format!("/admin/transfers/{id}"), None).await?;
        let state = status["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "done" | "failed" | "cancelled") {
            if json {
                println!("{status}");
            } else {
                println!("{}", describe(&status));
            }
            if state != "done" {
                bail!("transfer {id} {state}: {}", status["error"].as_str().unwrap_or("no reason given"));
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

fn describe(s: &serde_json::Value) -> String {
    let p = &s["progress"];
    let peer = match s["mode"].as_str().unwrap_or("") {
        "push" => format!("push to {}", s["to"].as_str().unwrap_or("?")),
        "pull" => format!("pull from {}", s["from"].as_str().unwrap_or("?")),
        "copy" => format!("copy {} -> {}", s["from"].as_str().unwrap_or("?"), s["to"].as_str().unwrap_or("?")),
        "incoming" => format!("incoming from {}", s["peer"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    };
    let eta = s["eta_secs"].as_f64().map(|e| format!(", eta {e:.0} s")).unwrap_or_default();
    let error = s["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
    format!(
        "{} {peer} {}: {} objects, {}/{} chunks, {:.1}/{:.1} MB moved, {:.1} MB on the wire, {:.1} MB/s{eta}{error}",
        s["id"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or(""),
        p["objects"],
        p["chunks_done"],
        p["chunks_wanted"],
        p["bytes_done"].as_f64().unwrap_or(0.0) / 1e6,
        p["bytes_wanted"].as_f64().unwrap_or(0.0) / 1e6,
        p["wire_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        s["rate_bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6,
    )
}

fn print(args: &AdminArgs, value: &serde_json::Value, human: impl Fn(&serde_json::Value) -> String) {
    if args.json {
        println!("{value}");
    } else {
        println!("{}", human(value));
    }
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
