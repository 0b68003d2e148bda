//! `clusster`: the site daemon and its command-line tool.
//!
//! - [`cli`]: the command line as clap parses it (verbs, arguments, help);
//! - [`commands`]: what each verb does, and its exit code;
//! - [`serve`]: `clusster serve`: the store, the S3 gateway, the transfer engine and the
//!   admin listener wired together until SIGTERM;
//! - [`config`]: the TOML config file, documented, settled into checked [`config::Settings`];
//! - [`admin`], [`api`], [`client`]: the admin HTTP API, its bodies (shared by both
//!   ends) and the CLI's client of it; [`metrics`]: its Prometheus page;
//! - [`book`]: the catalog as the transfer engine sees it, for moving dataset versions;
//! - [`offload`]: the offload engine the daemon runs with, the agent process and its bench;
//! - [`permissions`]: the modes `serve` requires of its data dir, admin token and keys.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 invalid
//! usage or configuration; 3 a scrub or check found damage (the report lists it); and for
//! `stage-in` and `stage-out`: 4 not found (dataset, tag or version);
//! 5 no space (locally, or at the site); 6 transfer failed (the site could not fetch the
//! data, or the connection failed); 7 verification failed (a chunk's BLAKE3 does not
//! match); 8 timed out.

mod admin;
mod api;
mod book;
mod cli;
mod client;
mod commands;
mod config;
mod metrics;
mod offload;
mod permissions;
mod serve;

use clap::Parser;
use commands::{DamageFound, NoSpace, NotFound, TimedOut, TransferFailed, UsageError, VerificationFailed};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusster: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else if e.is::<DamageFound>() {
                ExitCode::from(3)
            } else if e.is::<NotFound>() {
                ExitCode::from(4)
            } else if e.is::<NoSpace>() {
                ExitCode::from(5)
            } else if e.is::<TransferFailed>() {
                ExitCode::from(6)
            } else if e.is::<VerificationFailed>() {
                ExitCode::from(7)
            } else if e.is::<TimedOut>() {
                ExitCode::from(8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
