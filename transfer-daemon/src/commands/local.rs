//! Verbs on local files: `init`, `federation init`, `site init`, and the offload agent
//! with its bench. None of them needs a running daemon.

use super::{UsageError, settle};
use crate::cli::{ConfigArgs, FederationCommand, OffloadCommand, SiteCommand};
use crate::config::{CONFIG_FILE, Overrides, RawConfig};
use anyhow::Context;
use std::path::{Path, PathBuf};

pub(super) fn federation(command: FederationCommand) -> anyhow::Result<()> {
    let FederationCommand::Init { dir, name, force, json } = command;
    federation_init(&dir, &name, force, json)
}

pub(super) fn site(command: SiteCommand) -> anyhow::Result<()> {
    let SiteCommand::Init { name, federation, out, quic, s3, attrs, force, json } = command;
    site_init(SiteInitArgs { name, federation, out, quic, s3, attrs, force, json })
}

pub(super) async fn offload_agent(
    socket: Option<PathBuf>,
    cores: Option<Vec<usize>>,
    idle_spin_us: u64,
    config: &ConfigArgs,
) -> anyhow::Result<()> {
    let offload = settle(config, Overrides::default())?.offload;
    let socket = socket.unwrap_or(offload.agent_socket);
    let options = hw_offload::agent::ServeOptions {
        cores: cores.unwrap_or(offload.agent_cores),
        idle_spin: std::time::Duration::from_micros(idle_spin_us),
    };
    tokio::task::spawn_blocking(move || crate::offload::run_agent(&socket, options)).await?
}

pub(super) async fn offload(command: OffloadCommand) -> anyhow::Result<()> {
    let OffloadCommand::Bench { socket, out, config, json } = command;
    let mut settings = settle(&config, Overrides::default())?.offload;
    if let Some(socket) = socket {
        settings.agent_socket = socket;
    }
    let out = out.unwrap_or_else(|| settings.thresholds_file.clone());
    let rows = crate::offload::bench(&settings, &out).await?;
    if json {
        println!("{}", serde_json::json!({ "thresholds_file": out, "rows": rows }));
    } else {
        println!("{:<11} {:>9} {:>14} {:>16} {:>15}", "op", "bytes", "cpu host ns", "agent host ns", "agent wall ns");
        for r in &rows {
            println!(
                "{:<11} {:>9} {:>14} {:>16} {:>15}",
                r.op, r.bytes, r.cpu_host_ns, r.agent_host_ns, r.agent_wall_ns
            );
        }
        println!("thresholds written to {}", out.display());
    }
    Ok(())
}

pub(super) fn init(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    crate::permissions::create_private_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let config = data_dir.join(CONFIG_FILE);
    if config.exists() {
        return Err(
            UsageError(format!("{} exists already; edit it or choose another --data-dir", config.display())).into()
        );
    }
    std::fs::write(&config, RawConfig::documented_default(Path::new(".")))
        .with_context(|| format!("cannot write {}", config.display()))?;
    if json {
        println!("{}", serde_json::json!({ "data_dir": data_dir, "config": config }));
    } else {
        println!("created {}\nrun: clusster serve --config {}", data_dir.display(), config.display());
    }
    Ok(())
}

/// Usage errors (exit 2) for what the user gave us, plain failures for the rest.
fn federation_failure(e: federation::FederationError) -> anyhow::Error {
    if e.is_bad_input() { UsageError(e.to_string()).into() } else { e.into() }
}

fn federation_init(dir: &Path, name: &str, force: bool, json: bool) -> anyhow::Result<()> {
    let done = federation::identity::init_federation(dir, name, force).map_err(federation_failure)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "federation": name,
                "ca_cert": done.ca_cert,
                "ca_key": done.ca_key,
                "federation_file": done.federation_file,
            })
        );
    } else {
        println!(
            "created federation {name}:\n  {}  (CA private key, 0600: keep it offline)\n  {}\n  {}\n\
             next: clusster site init NAME --federation {} --out DIR --quic HOST:PORT --s3 URL",
            done.ca_key.display(),
            done.ca_cert.display(),
            done.federation_file.display(),
            dir.display()
        );
    }
    Ok(())
}

struct SiteInitArgs {
    name: String,
    federation: PathBuf,
    out: PathBuf,
    quic: Option<String>,
    s3: Option<String>,
    attrs: Vec<String>,
    force: bool,
    json: bool,
}

fn site_init(args: SiteInitArgs) -> anyhow::Result<()> {
    let mut attributes = std::collections::BTreeMap::new();
    for attr in &args.attrs {
        let (key, value) = attr
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--attr {attr:?} is not KEY=VALUE; write e.g. --attr country=fr")))?;
        attributes.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    let entry = federation::file::SiteEntry {
        name: args.name.clone(),
        quic: args.quic,
        s3: args.s3,
        attributes,
        // The keys are made by init_site.
        ..Default::default()
    };
    let done = federation::identity::init_site(&args.federation, &args.name, &args.out, entry, args.force)
        .map_err(federation_failure)?;
    let federation_file = federation::identity::federation_file_path(&args.federation);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "site": args.name,
                "site_key": done.site_key,
                "site_cert": done.site_cert,
                "ca_cert": done.ca_cert,
                "signing_key": done.signing_key,
                "signing_public_key": federation::file::format_signing_key(&done.entry.signing_key),
                "tls_key": federation::file::format_tls_key(&done.entry.tls_key),
                "federation_file": federation_file,
                "federation_updated": done.federation_updated,
                "entry": done.entry_text,
            })
        );
        return Ok(());
    }
    println!(
        "site {}: wrote {}, {} (0600), {}, {}",
        args.name,
        done.site_key.display(),
        done.signing_key.display(),
        done.site_cert.display(),
        done.ca_cert.display()
    );
    if done.federation_updated {
        println!(
            "listed in {}; hand the updated file to every site.\nnext: copy {} to the site and set [federation] file and tls_dir in its clusster.toml",
            federation_file.display(),
            args.out.display()
        );
    } else {
        println!(
            "{} is read-only: add this entry to it, then hand it to every site:\n\n{}",
            federation_file.display(),
            done.entry_text
        );
    }
    Ok(())
}
