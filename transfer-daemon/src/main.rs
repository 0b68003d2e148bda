//! `clusster`: the site daemon and its command-line tool.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 invalid
//! usage or configuration; 3 a scrub or check found damage (the report lists it).

mod admin;
mod client;
mod config;
mod federation;
mod metrics;
mod offload;
mod serve;
mod transfer;
mod transfer_cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{CONFIG_FILE, DEFAULT_DATA_DIR, Overrides, RawConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clusster",
    version,
    about = "Data plane of a federated research cloud: S3 gateway, dedup transfers, catalog"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir with a documented config file.
    Init {
        /// Where to create it.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the site daemon until SIGINT or SIGTERM.
    Serve {
        /// Config file (default: <data-dir>/clusster.toml if present, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data dir, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Admin listener address (IP:PORT, port 0 = any free port), overriding the config.
        #[arg(long)]
        admin_listen: Option<String>,
        /// S3 listener address (IP:PORT, port 0 = any free port), overriding the config.
        #[arg(long)]
        s3_listen: Option<String>,
    },
    /// Manage S3 access keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage which projects may use a bucket.
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
    /// Move data between sites: push, pull, third-party copy; follow and cancel.
    Transfer {
        #[command(subcommand)]
        command: transfer_cli::TransferCommand,
    },
    /// Run garbage collection now on the running daemon.
    Gc(AdminArgs),
    /// Verify every stored chunk now on the running daemon; exit 3 if any is corrupt.
    Scrub(AdminArgs),
    /// Recount references and look for missing chunks; exit 3 on any inconsistency.
    Check(AdminArgs),
    /// Fetch every quarantined (corrupt) chunk again from the federation's other sites;
    /// exit 3 if some could not be repaired.
    Repair(AdminArgs),
    /// Create a federation: its CA and federation file.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Create a site's identity in a federation.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Run the offload agent: hashing and compression for a daemon on this machine, on
    /// other cores (or a DPU's), through shared memory. Runs until killed.
    OffloadAgent {
        /// Socket to listen on (default: [offload] agent_socket of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Cores to pin to, e.g. 1 or 2,3 (default: [offload] agent_cores).
        #[arg(long, value_delimiter = ',')]
        cores: Option<Vec<usize>>,
        /// How long to keep polling for work after finishing some before sleeping, in
        /// microseconds, at most 1 s (0: sleep at once; each sleep costs the host a
        /// doorbell).
        #[arg(
            long,
            default_value_t = hw_offload::agent::DEFAULT_IDLE_SPIN.as_micros() as u64,
            value_parser = clap::value_parser!(u64).range(0..=1_000_000)
        )]
        idle_spin_us: u64,
        /// Config file (default: <data-dir>/clusster.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data dir, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Offload engine tools.
    Offload {
        #[command(subcommand)]
        command: OffloadCommand,
    },
}

#[derive(Subcommand)]
enum OffloadCommand {
    /// Measure host CPU per job on the CPU and through a running agent, per operation
    /// and size, and write the thresholds the router uses.
    Bench {
        /// Agent socket (default: [offload] agent_socket of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Where to write the thresholds (default: [offload] thresholds_file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Config file (default: <data-dir>/clusster.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data dir, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the measurements as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Write a CA key (ca.key, 0600), its certificate (ca.pem) and a documented federation.toml into DIR.
    Init {
        /// Directory to write into (created if missing). Keep ca.key there, offline if you can.
        #[arg(long)]
        dir: PathBuf,
        /// The federation's name: letters, digits, '.', '_' or '-'.
        #[arg(long)]
        name: String,
        /// Replace an existing CA key and federation file (every site must then be re-issued).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Make a site key and a certificate signed by the federation CA, and list the site in the federation file.
    ///
    /// Writes site.key, signing.key (both 0600), site.pem and a copy of ca.pem into --out. Runs where
    /// the CA key is (next to the federation file); if that file is read-only, prints the entry to add.
    Init {
        /// The site's name: lowercase letters, digits and '-', starting with a letter.
        name: String,
        /// The federation's directory (with federation.toml and ca.key) or its federation file.
        #[arg(long)]
        federation: PathBuf,
        /// Directory for the site's files: copy it to the site as its [federation] tls_dir.
        #[arg(long)]
        out: PathBuf,
        /// Where the site's QUIC listener is reached, host:port (a new entry defaults to 127.0.0.1:7444).
        #[arg(long)]
        quic: Option<String>,
        /// The site's S3 URL (a new entry defaults to http://127.0.0.1:9000).
        #[arg(long)]
        s3: Option<String>,
        /// An attribute for placement rules, KEY=VALUE; repeat for more (e.g. --attr country=fr --attr tier=hpc).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Replace existing site.key and signing.key (the old keys are lost).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key for a project; prints the id and the secret (shown only once).
    Create {
        /// The project the key acts for: it reaches the project's buckets and those granted to it.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (without secrets).
    List(AdminArgs),
    /// Delete a key.
    Delete {
        /// The access key id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum BucketCommand {
    /// Let a project use a bucket it does not own.
    Allow {
        /// The bucket.
        bucket: String,
        /// The project to let in.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Withdraw a project's access to a bucket it does not own.
    Revoke {
        /// The bucket.
        bucket: String,
        /// The project to shut out.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Admin address of the daemon (default: read from <data-dir>/listen.json).
    #[arg(long)]
    admin: Option<String>,
    /// The daemon's data dir, to find its admin address.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Failures that map to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(pub String);

/// A report showing damage: exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DamageFound(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusster: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusster: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else if e.is::<DamageFound>() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Federation { command: FederationCommand::Init { dir, name, force, json } } => {
            federation_init(&dir, &name, force, json)
        }
        Command::Site { command: SiteCommand::Init { name, federation, out, quic, s3, attrs, force, json } } => {
            site_init(SiteInitArgs { name, federation, out, quic, s3, attrs, force, json })
        }
        Command::Init { data_dir, json } => init(&data_dir, json),
        Command::Serve { config, data_dir, admin_listen, s3_listen } => {
            let (raw, base) = load_config(config.as_deref(), data_dir.as_deref())?;
            let overrides = Overrides { data_dir, admin_listen, s3_listen };
            let settings = raw.settle(&overrides, &base).map_err(|e| UsageError(format!("{e:#}")))?;
            serve::serve(settings).await
        }
        Command::Key { command } => key(command).await,
        Command::Transfer { command } => transfer_cli::run(command).await,
        Command::OffloadAgent { socket, cores, idle_spin_us, config, data_dir } => {
            let offload = offload_settings(config.as_deref(), data_dir)?;
            let socket = socket.unwrap_or(offload.agent_socket);
            let options = hw_offload::agent::ServeOptions {
                cores: cores.unwrap_or(offload.agent_cores),
                idle_spin: std::time::Duration::from_micros(idle_spin_us),
            };
            tokio::task::spawn_blocking(move || offload::run_agent(&socket, options)).await?
        }
        Command::Offload { command: OffloadCommand::Bench { socket, out, config, data_dir, json } } => {
            let mut settings = offload_settings(config.as_deref(), data_dir)?;
            if let Some(socket) = socket {
                settings.agent_socket = socket;
            }
            let out = out.unwrap_or_else(|| settings.thresholds_file.clone());
            let rows = offload::bench(&settings, &out).await?;
            if json {
                println!("{}", serde_json::json!({ "thresholds_file": out, "rows": rows }));
            } else {
                println!(
                    "{:<11} {:>9} {:>14} {:>16} {:>15}",
                    "op", "bytes", "cpu host ns", "agent host ns", "agent wall ns"
                );
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
        Command::Bucket { command } => {
            let (method, bucket, project, admin, verb) = match command {
                BucketCommand::Allow { bucket, project, admin } => {
                    (reqwest::Method::PUT, bucket, project, admin, "allowed")
                }
                BucketCommand::Revoke { bucket, project, admin } => {
                    (reqwest::Method::DELETE, bucket, project, admin, "revoked")
                }
            };
            admin_call(&admin, method, &format!("/admin/buckets/{bucket}/grants/{project}"), None).await?;
            print_report(&admin, &serde_json::json!({ "bucket": bucket, "project": project, verb: true }), |_| {
                format!("{verb}: project {project} on bucket {bucket}")
            });
            Ok(())
        }
        Command::Gc(args) => {
            let report = admin_call(&args, reqwest::Method::POST, "/admin/gc", None).await?;
            print_report(&args, &report, |r| {
                format!(
                    "gc: {} chunks, {} packs deleted, {} compacted, {} orphan packs, {} bytes freed",
                    r["chunks_deleted"],
                    r["packs_deleted"],
                    r["packs_compacted"],
                    r["orphan_packs_deleted"],
                    r["bytes_freed"]
                )
            });
            Ok(())
        }
        Command::Scrub(args) => {
            let report = admin_call(&args, reqwest::Method::POST, "/admin/scrub", None).await?;
            print_report(&args, &report, |r| {
                format!(
                    "scrub: {} chunks ({} bytes) verified, {} corrupt",
                    r["chunks_checked"],
                    r["bytes_checked"],
                    r["corrupt"].as_array().map_or(0, Vec::len)
                )
            });
            match report["corrupt"].as_array().map_or(0, Vec::len) {
                0 => Ok(()),
                n => Err(DamageFound(format!(
                    "{n} corrupt chunks quarantined; `clusster repair` fetches them from peers"
                ))
                .into()),
            }
        }
        Command::Repair(args) => {
            let report = admin_call(&args, reqwest::Method::POST, "/admin/repair", None).await?;
            let missing = report["missing"].as_array().map_or(0, Vec::len);
            print_report(&args, &report, |r| {
                format!(
                    "repair: {} corrupt chunks, {} repaired from {}, {missing} still missing",
                    r["asked"], r["repaired"], r["from"]
                )
            });
            if missing > 0 {
                return Err(DamageFound(format!("{missing} chunks are held by no reachable site")).into());
            }
            Ok(())
        }
        Command::Check(args) => {
            let report = admin_call(&args, reqwest::Method::GET, "/admin/check", None).await?;
            let mismatches = report["refcount_mismatches"].as_array().map_or(0, Vec::len);
            let missing = report["missing_chunks"].as_array().map_or(0, Vec::len);
            print_report(&args, &report, |r| {
                format!(
                    "check: {} objects, {} parts, {} chunks referenced, {mismatches} count mismatches, {missing} missing chunks",
                    r["objects"], r["parts"], r["chunks_referenced"]
                )
            });
            if mismatches + missing > 0 {
                return Err(DamageFound("the store is inconsistent; see the report".into()).into());
            }
            Ok(())
        }
    }
}

fn init(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
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
        signing_key: [0; 32],
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

/// The `[offload]` settings of the config `serve` would use.
fn offload_settings(config: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<config::OffloadSettings> {
    let (raw, base) = load_config(config, data_dir.as_deref())?;
    let overrides = Overrides { data_dir, ..Default::default() };
    let settings = raw.settle(&overrides, &base).map_err(|e| UsageError(format!("{e:#}")))?;
    Ok(settings.offload)
}

/// The config to use and the directory its relative paths are taken from.
fn load_config(config: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<(RawConfig, PathBuf)> {
    let cwd = std::env::current_dir()?;
    let path = match config {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let candidate = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR)).join(CONFIG_FILE);
            candidate.exists().then_some(candidate)
        }
    };
    match path {
        Some(p) => {
            let raw = RawConfig::load(&p).map_err(|e| UsageError(format!("{e:#}")))?;
            let base = p.canonicalize()?.parent().map_or(cwd, Path::to_path_buf);
            Ok((raw, base))
        }
        None => Ok((RawConfig::default(), cwd)),
    }
}

async fn admin_call(
    args: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let client = client::AdminClient::locate(args.admin.as_deref(), args.data_dir.as_deref())?;
    client.call(method, path, body).await
}

async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { project, admin } => {
            let key = admin_call(
                &admin,
                reqwest::Method::POST,
                "/admin/keys",
                Some(serde_json::json!({ "project": project })),
            )
            .await?;
            print_report(&admin, &key, |k| {
                format!(
                    "access key id:     {}\nsecret access key: {}\nproject:           {}\n(the secret is not shown again)",
                    k["access_key_id"].as_str().unwrap_or(""),
                    k["secret_access_key"].as_str().unwrap_or(""),
                    k["project"].as_str().unwrap_or("")
                )
            });
        }
        KeyCommand::List(admin) => {
            let keys = admin_call(&admin, reqwest::Method::GET, "/admin/keys", None).await?;
            print_report(&admin, &keys, |k| {
                let rows: Vec<String> = k
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        format!(
                            "{}  {}",
                            k["access_key_id"].as_str().unwrap_or(""),
                            k["project"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                if rows.is_empty() { "no keys".to_owned() } else { rows.join("\n") }
            });
        }
        KeyCommand::Delete { id, admin } => {
            admin_call(&admin, reqwest::Method::DELETE, &format!("/admin/keys/{id}"), None).await?;
            print_report(&admin, &serde_json::json!({ "deleted": id }), |_| format!("deleted key {id}"));
        }
    }
    Ok(())
}

fn print_report(args: &AdminArgs, report: &serde_json::Value, human: impl Fn(&serde_json::Value) -> String) {
    if args.json {
        println!("{report}");
    } else {
        println!("{}", human(report));
    }
}
