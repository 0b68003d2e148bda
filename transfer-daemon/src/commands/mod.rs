//! What each verb of [`crate::cli`] does, and how its failure maps to an exit code.
//!
//! - [`local`]: verbs on local files (`init`, `federation init`, `site init`, the offload
//!   agent and its bench);
//! - [`operator`]: verbs that ask the running daemon through its admin API (keys, API
//!   tokens, bucket grants, gc, scrub, check, repair);
//! - [`dataset`]: `dataset publish|show|checkout` and `catalog placement`, through the
//!   catalog's routes;
//! - [`transfer`]: `transfer push|pull|copy|status|cancel`;
//! - [`stage`]: `stage-in` and `stage-out`, a job's data to and from the site daemon.

mod dataset;
mod local;
mod operator;
mod stage;
mod transfer;

pub use stage::{NoSpace, NotFound, TimedOut, TransferFailed, VerificationFailed};

use crate::cli::{AdminArgs, Command, ConfigArgs};
use crate::config::{CONFIG_FILE, DEFAULT_DATA_DIR, Overrides, RawConfig, Settings};
use std::path::{Path, PathBuf};

/// Failures that map to exit code 2: what the user gave us is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A report showing damage: exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DamageFound(pub String);

/// JSON as the CLI prints it: keys sorted (through `serde_json::Value`), as it always has.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).expect("reports serialise").to_string()
}

/// Runs one verb.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { data_dir, json } => local::init(&data_dir, json),
        Command::Federation { command } => local::federation(command),
        Command::Site { command } => local::site(command),
        Command::Serve { config, admin_listen, s3_listen } => {
            let settings = settle(&config, Overrides { data_dir: None, admin_listen, s3_listen })?;
            crate::serve::serve(settings).await
        }
        Command::OffloadAgent { socket, cores, idle_spin_us, config } => {
            local::offload_agent(socket, cores, idle_spin_us, &config).await
        }
        Command::Offload { command } => local::offload(command).await,
        Command::Key { command } => operator::key(command).await,
        Command::Token { command } => operator::token(command).await,
        Command::Bucket { command } => operator::bucket(command).await,
        Command::Gc(args) => operator::gc(&args).await,
        Command::Scrub(args) => operator::scrub(&args).await,
        Command::Check(args) => operator::check(&args).await,
        Command::Repair(args) => operator::repair(&args).await,
        Command::Dataset { command } => dataset::run(command).await,
        Command::Catalog { command } => dataset::catalog(command).await,
        Command::Rule { command } => dataset::rule(command).await,
        Command::Transfer { command } => transfer::run(command).await,
        Command::StageIn(args) => stage::stage_in(args).await,
        Command::StageOut(args) => stage::stage_out(args).await,
    }
}

/// The settings `serve` would run with, from `--config`/`--data-dir` and the overrides.
fn settle(args: &ConfigArgs, mut overrides: Overrides) -> anyhow::Result<Settings> {
    let (raw, base) = load_config(args.config.as_deref(), args.data_dir.as_deref())?;
    overrides.data_dir = args.data_dir.clone();
    raw.settle(&overrides, &base).map_err(|e| UsageError(format!("{e:#}")).into())
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

/// Prints `report` as JSON with `--json`, else as the sentence `human` makes of it.
fn print_report<T: serde::Serialize>(args: &AdminArgs, report: &T, human: impl FnOnce(&T) -> String) {
    if args.json {
        println!("{}", json_text(report));
    } else {
        println!("{}", human(report));
    }
}
