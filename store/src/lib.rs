//! The content-addressed store of one site: chunk packs on `object_store`, metadata in
//! RocksDB, hashing and compression on the offload engine.
//!
//! Modules:
//! - [`access`]: access keys, bucket grants to projects, bucket shares with sites;
//! - [`config`]: store settings;
//! - `meta` (private): the metadata database (all RocksDB access), keys and record formats;
//! - [`chunks`]: pack objects on the chunk backend, durable local writes;
//! - [`frame`]: the on-disk format of one chunk;
//! - [`ingest`]: the streaming write pipeline (chunk, hash, compress, dedup, pack);
//! - [`objects`]: buckets and objects: commit, read, list, copy, delete;
//! - [`multipart`]: multipart uploads;
//! - [`public`]: canned ACLs of buckets and objects, CORS rules;
//! - `read`: the read path: coalesced ranged reads of neighbouring chunks, verified in batches;
//! - [`gc`]: garbage collection of unreferenced chunks and packs;
//! - [`scrub`]: verification of every stored chunk, quarantine of bad ones;
//! - [`transfer`]: what the transfer protocol needs: export, held chunks, received chunks, atomic commit;
//! - [`versions`]: the catalog's tables, dataset versions holding their chunks, replicas
//!   through quarantine and repair;
//! - [`links`]: transfer rates measured between sites;
//! - [`metrics`]: counters for `/metrics`;
//! - [`error`]: the store's error type, [`StoreError`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), store::StoreError> {
//! use store::{Store, StoreConfig};
//! let store = Store::open(StoreConfig::new("/tmp/site"), hw_offload::Offload::cpu(0)).await?;
//! store.create_bucket("data", "").await?;
//! let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("hello"))]);
//! store.put_object("data", "greeting", Default::default(), body, &Default::default()).await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod chunks;
mod claims;
pub mod config;
pub mod error;
pub mod frame;
pub mod gc;
pub mod ingest;
pub mod links;
mod mapped;
mod meta;
pub mod metrics;
pub mod multipart;
pub mod objects;
pub mod public;
mod read;
pub mod scrub;
pub mod transfer;
pub mod versions;

pub use access::SiteAccess;
pub use chunks::ChunkBackend;
pub use config::StoreConfig;
pub use error::StoreError;
pub use ingest::{IngestOptions, Ingested};
pub use meta::values::{
    AccessKeyRecord, ApiTokenRecord, Body, BucketRecord, BucketSettingsRecord, CannedAcl, ChunkRef, CorsRule,
    ObjectHead, ObjectMeta, ObjectRecord, SiteShareRecord, TransferRecord,
};
pub use metrics::StoreMetrics;
pub use objects::{EtagMatch, ListPage, ObjectInfo, ObjectStream, OpenObject, Precondition, PutOptions, check_digests};

use claims::Claims;
use hw_offload::Offload;
use meta::MetaDb;
use std::sync::Arc;

/// Striped locks serialising commits to the same object key (read old → write new).
const KEY_LOCK_STRIPES: usize = 256;

/// One site's store. Share it in an `Arc`.
pub struct Store {
    pub(crate) meta: Arc<MetaDb>,
    pub(crate) chunks: ChunkBackend,
    pub(crate) offload: Offload,
    pub(crate) config: StoreConfig,
    pub(crate) claims: Arc<Claims>,
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Kept apart from key_locks: completing an upload holds both.
    upload_locks: Vec<tokio::sync::Mutex<()>>,
    /// Taken before key locks, never after.
    bucket_locks: Vec<tokio::sync::RwLock<()>>,
    /// Per transfer id: held from reading a transfer's markers until the batch that adds
    /// or removes markers is written (flush, commit, release), so that none of them works
    /// from markers another is changing. Taken before bucket and key locks.
    transfer_locks: Vec<tokio::sync::Mutex<()>>,
    /// Flushes started and not yet landed, per transfer: a release waits for them, since
    /// one whose caller went away still lands and must not add markers after it.
    pub(crate) flushes: parking_lot::Mutex<std::collections::HashMap<transfer::TransferId, usize>>,
    /// Told each time one of those lands.
    pub(crate) flush_landed: tokio::sync::Notify,
    /// One GC or scrub pass at a time.
    pub(crate) maintenance: tokio::sync::Mutex<()>,
    metrics: Arc<StoreMetrics>,
    /// Held by every write that changes what a version holds or records its replica
    /// (holds, releases, quarantines and repairs of chunks versions use). Taken after
    /// transfer, bucket and key locks, never before.
    pub(crate) versions_lock: tokio::sync::Mutex<()>,
    /// records what quarantines and repairs do to the versions held here
    pub(crate) replica_watch: std::sync::OnceLock<Arc<dyn versions::ReplicaWatch>>,
    /// this store, for work that must finish whether or not its caller is still polled
    me: std::sync::Weak<Store>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("meta", &self.meta).field("chunks", &self.chunks).finish()
    }
}

impl Store {
    /// Opens the store described by `config`, creating what is missing.
    pub async fn open(config: StoreConfig, offload: Offload) -> Result<Arc<Self>, StoreError> {
        let backend = match &config.chunk_store_url {
            Some(url) => ChunkBackend::from_url(url, &config.chunk_store_options)?,
            None => ChunkBackend::local(config.data_dir.join("chunks"))?,
        };
        Self::open_with_backend(config, backend, offload).await
    }

    /// Opens with an explicit chunk backend (tests run the same suite on several).
    pub async fn open_with_backend(
        config: StoreConfig,
        backend: ChunkBackend,
        offload: Offload,
    ) -> Result<Arc<Self>, StoreError> {
        config.validate()?;
        // The owner's alone: RocksDB holds the S3 secret keys.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.data_dir)?;
        let meta_dir = config.data_dir.join("meta");
        let meta = tokio::task::spawn_blocking(move || MetaDb::open(&meta_dir))
            .await
            .map_err(|e| StoreError::Metadata(format!("open task: {e}")))??;
        let store = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            meta,
            chunks: backend,
            offload,
            config,
            claims: Arc::default(),
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            upload_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            bucket_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            transfer_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            flushes: parking_lot::Mutex::default(),
            flush_landed: tokio::sync::Notify::new(),
            maintenance: tokio::sync::Mutex::new(()),
            metrics: Arc::default(),
            versions_lock: tokio::sync::Mutex::new(()),
            replica_watch: std::sync::OnceLock::new(),
        });
        let indexing = store.clone();
        tokio::task::spawn_blocking(move || {
            indexing.index_bucket_chunks().and_then(|()| indexing.index_chunk_versions())
        })
        .await
        .map_err(|e| StoreError::Metadata(format!("index task: {e}")))??;
        Ok(store)
    }

    /// The store's counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// The offload handle the store uses.
    pub fn offload(&self) -> &Offload {
        &self.offload
    }

    /// The settings in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Flushes metadata to its files; call before a clean shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || meta.flush())
            .await
            .map_err(|e| StoreError::Metadata(format!("flush task: {e}")))?
    }

    pub(crate) async fn lock_key(&self, bucket: &str, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.key_locks[stripe(&(bucket, key))].lock().await
    }

    pub(crate) async fn lock_transfer(&self, transfer: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        self.transfer_locks[stripe(&transfer)].lock().await
    }

    pub(crate) async fn lock_upload(&self, upload_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        // Hex ids parse in either case: lock on one spelling so both reach one stripe.
        self.upload_locks[stripe(&upload_id.to_ascii_lowercase())].lock().await
    }

    /// Shared by everything that creates objects or uploads in `bucket`; exclusive for
    /// deleting it, so nothing lands in a bucket being deleted.
    pub(crate) fn bucket_lock(&self, bucket: &str) -> &tokio::sync::RwLock<()> {
        &self.bucket_locks[stripe(&bucket)]
    }

    /// Commits a metadata batch off the async threads (it waits for the WAL fsync).
    pub(crate) async fn commit(&self, batch: meta::Batch) -> Result<(), StoreError> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || meta.write(batch))
            .await
            .map_err(|e| StoreError::Metadata(format!("commit task: {e}")))?
    }
}

fn stripe(what: &impl std::hash::Hash) -> usize {
    use std::hash::Hasher;
    // DefaultHasher::new() has fixed keys, so a key always maps to the same stripe.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    what.hash(&mut h);
    h.finish() as usize % KEY_LOCK_STRIPES
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
