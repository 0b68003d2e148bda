//! `clusster`: the site daemon and its command-line tool.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 invalid
//! usage or configuration; 3 a scrub or check found damage (the report lists it).

mod admin;
mod client;
mod config;
mod metrics;
mod offload;
mod serve;

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
    /// Run garbage collection now on the running daemon.
    Gc(AdminArgs),
    /// Verify every stored chunk now on the running daemon; exit 3 if any is corrupt.
    Scrub(AdminArgs),
    /// Recount references and look for missing chunks; exit 3 on any inconsistency.
    Check(AdminArgs),
    /// Run the offload agent: hashing and compression for a daemon on this machine, on
    /// other cores (or a DPU's), through shared memory. Runs until killed.
    OffloadAgent {
        /// Socket to listen on (default: [offload] agent_socket of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Cores to pin to, e.g. 1 or 2,3 (default: [offload] agent_cores).
        #[arg(long, value_delimiter = ',')]
        cores: Option<Vec<usize>>,
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
        Command::Init { data_dir, json } => init(&data_dir, json),
        Command::Serve { config, data_dir, admin_listen, s3_listen } => {
            let (raw, base) = load_config(config.as_deref(), data_dir.as_deref())?;
            let overrides = Overrides { data_dir, admin_listen, s3_listen };
            let settings = raw.settle(&overrides, &base).map_err(|e| UsageError(format!("{e:#}")))?;
            serve::serve(settings).await
        }
        Command::Key { command } => key(command).await,
        Command::OffloadAgent { socket, cores, config, data_dir } => {
            let offload = offload_settings(config.as_deref(), data_dir)?;
            let socket = socket.unwrap_or(offload.agent_socket);
            let cores = cores.unwrap_or(offload.agent_cores);
            tokio::task::spawn_blocking(move || offload::run_agent(&socket, cores)).await?
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
                n => Err(DamageFound(format!("{n} corrupt chunks quarantined; repair them from a replica")).into()),
            }
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
