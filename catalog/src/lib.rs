//! The federated catalog of datasets, versions, replicas, rules and pins.
//!
//! - [`manifest`]: a version's files and the canonical encoding its id is the hash of;
//! - [`event`]: what a site appends to its own log, signed, and who may write what;
//! - [`catalog`]: one site's catalog over a storage, and the sync logic without I/O
//!   (heads, what to answer a pull with, what to accept from one);
//! - [`compaction`]: checkpoints, dropping dead events, and snapshots for sites that lack
//!   what was dropped;
//! - [`storage`]: the storage trait, its conformance suite, and the in-memory storage;
//! - [`in_store`]: the storage in the store's RocksDB database, and why there;
//! - [`http`]: the routes the daemon mounts;
//! - [`quic`]: the sync driver over the federation's QUIC endpoint;
//! - [`publish`]: a bucket prefix published as a version that holds its chunks, and
//!   checked out again as objects;
//! - [`copies`]: copies of a version at other sites: who may hold one, what is sent, and
//!   landing one that arrived;
//! - [`keeping`]: pins, and what keeps a copy from eviction;
//! - [`rules`]: replication rules, acted on by the site that owns them;
//! - [`stage`]: what job stage-in and stage-out exchange with the daemon;
//! - [`sites_expr`]: the expressions that name sites (`country=fr & tier=hpc`).

pub mod catalog;
pub mod compaction;
pub mod copies;
pub mod event;
pub mod http;
pub mod in_store;
pub mod keeping;
pub mod manifest;
pub mod publish;
pub mod quic;
pub mod rules;
pub mod sites_expr;
pub mod stage;
pub mod storage;

pub use catalog::{Accepted, Catalog, CatalogError, Heads, PullAnswer};
pub use event::{Event, EventBody, Refusal, ReplicaState, Rule, RuleTarget, SignedEvent, SiteKeys};
pub use manifest::{FileEntry, Manifest, VersionId};
pub use storage::{CatalogStorage, MemoryStorage, Op, Table};

/// Now, ms since the Unix epoch (this site's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
