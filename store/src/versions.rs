//! What the catalog keeps in this store: its tables, and the dataset versions it
//! publishes. A published version holds one reference to each chunk occurrence of its
//! files, as an object does (GC keeps them; `check` counts them), so S3 writes to the
//! prefix it was taken from never change it. Its hold and the catalog records that
//! describe it commit in one metadata write.
//!
//! Objects small enough to be kept inline in metadata are written as chunks when a
//! version takes them: a version is chunks only, named as transfers name inline objects
//! (the BLAKE3 of their bytes, the id a one-chunk body gets).

use crate::Store;
use crate::error::StoreError;
use crate::ingest::{IngestOptions, Ingested, IngestedBody};
use crate::meta::keys;
use crate::meta::values::{Body, ChunkLoc, ChunkRef, ManifestRecord, ObjectHead, ObjectRecord};
use crate::meta::{RawEntry, cf};
use crate::transfer::{Release, TransferId, TransferPin};
use hw_offload::ChunkId;
use std::collections::HashMap;

/// A write to one of the catalog's tables ([`CATALOG_TABLES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogWrite {
    /// sets a key
    Put(&'static str, Vec<u8>, Vec<u8>),
    /// removes a key
    Delete(&'static str, Vec<u8>),
}

/// The catalog's tables, by name.
pub const CATALOG_TABLES: [&str; 13] = cf::CATALOG;

/// What a version held here is, after some of its chunks left the index (quarantined)
/// or came back (repaired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    /// the version
    pub version: [u8; 32],
    /// bytes of its files whose chunks are in the index
    pub bytes_held: u64,
    /// distinct chunks of it in the index
    pub chunks_held: u64,
    /// every chunk is
    pub complete: bool,
}

/// Records what a chunk leaving or rejoining the index does to the versions held here,
/// in the same write (the catalog: a replica is exact).
pub trait ReplicaWatch: Send + Sync {
    /// The catalog writes recording `changed`, staged into the batch that changes them.
    fn record(&self, changed: &[Availability]) -> Vec<CatalogWrite>;
}

/// One file of a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// its key, relative to the prefix snapshotted
    pub path: String,
    /// size, ETag, checksums, mtime, metadata
    pub head: ObjectHead,
    /// its chunks, in order (none when empty)
    pub chunks: Vec<ChunkRef>,
}

/// The objects under a prefix, pinned (their chunks cannot be collected) until they are
/// held by [`Store::hold_version`] or the snapshot is dropped.
pub struct Snapshot {
    /// the files, in key order
    pub files: Vec<SnapshotFile>,
    _pin: TransferPin,
    /// inline objects written as chunks, to commit with the hold
    written: Vec<Ingested>,
}

fn known_table(family: &'static str) -> Result<&'static str, StoreError> {
    if cf::CATALOG.contains(&family) {
        Ok(family)
    } else {
        Err(StoreError::Metadata(format!("{family} is not a catalog table")))
    }
}

impl Store {
    /// The value at `key` in the catalog table `table`.
    pub fn catalog_get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta.get_raw(known_table(table)?, key)
    }

    /// Entries of the catalog table `table` whose keys start with `prefix` and sort after
    /// `after`, in key order, at most `limit`.
    pub fn catalog_scan(
        &self,
        table: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let table = known_table(table)?;
        let mut start = prefix.to_vec();
        if let Some(after) = after.filter(|a| *a >= prefix) {
            start = after.to_vec();
            start.push(0); // the smallest key after `after`
        }
        self.meta.scan_raw(table, &start, keys::prefix_successor(prefix)).take(limit).collect()
    }

    /// Applies catalog writes in one synced metadata write (blocking).
    pub fn catalog_write(&self, writes: Vec<CatalogWrite>) -> Result<(), StoreError> {
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, writes)?;
        self.meta.write(batch)
    }

    /// The objects of `bucket` under `prefix`, pinned, with inline ones written as chunks.
    pub async fn snapshot(&self, bucket: &str, prefix: &str) -> Result<Snapshot, StoreError> {
        let mut pin = self.transfer_pin();
        let mut files = Vec::new();
        let mut written = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.export_page(&mut pin, bucket, prefix, &after, 1000)?;
            for (key, exported) in page.objects {
                let chunks = match exported.inline {
                    Some(bytes) => {
                        let opts = IngestOptions { checksums: Vec::new(), allow_inline: false, max_bytes: u64::MAX };
                        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes)]);
                        let ingested = self.ingest(body, &opts).await?;
                        let IngestedBody::Chunks(chunks) = &ingested.body else {
                            return Err(StoreError::Metadata("an inline object was not chunked".into()));
                        };
                        let chunks = chunks.clone();
                        written.push(ingested);
                        chunks
                    }
                    None => exported.chunks,
                };
                files.push(SnapshotFile { path: key[prefix.len()..].to_owned(), head: exported.record.head, chunks });
            }
            match page.last {
                Some(last) => after = last,
                None => break,
            }
        }
        Ok(Snapshot { files, _pin: pin, written })
    }

    /// Makes `version` hold the chunks of `snapshot` and applies `catalog`, in one write.
    /// False, and nothing held twice, if the version is held already (the catalog writes
    /// are applied all the same).
    pub async fn hold_version(
        &self,
        version: &[u8; 32],
        snapshot: Snapshot,
        catalog: Vec<CatalogWrite>,
    ) -> Result<bool, StoreError> {
        let _one_at_a_time = self.lock_versions().await;
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, catalog)?;
        let held = self.meta.contains(cf::VERSION_HOLDS, version)?;
        if !held {
            let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
            let mut chunks = Vec::new();
            for file in &snapshot.files {
                for c in &file.chunks {
                    *deltas.entry(c.id).or_default() += 1;
                    chunks.push(*c);
                }
            }
            for ingested in &snapshot.written {
                // Under the versions lock already.
                let repaired = self.stage_new_chunks(&mut batch, ingested)?;
                self.stage_availability(&mut batch, &[], &repaired)?;
            }
            stage_version_index(&mut batch, version, &chunks, true);
            batch.put(cf::VERSION_HOLDS, version, &ManifestRecord { chunks });
            batch.add_refs(deltas);
        }
        self.commit(batch).await?;
        // The snapshot's pins and claims end only now that the hold is durable.
        drop(snapshot);
        Ok(!held)
    }

    /// Lands a version a transfer brought: `version` holds `chunks` (each held here, the
    /// transfer's or found held when the receiver looked) and `catalog` is applied, in one
    /// write that also releases the transfer. False, and nothing held twice, if the version
    /// was held here already.
    pub async fn commit_transfer_version(
        &self,
        transfer: TransferId,
        version: &[u8; 32],
        chunks: Vec<ChunkRef>,
        catalog: Vec<CatalogWrite>,
    ) -> Result<bool, StoreError> {
        let _markers_stay = self.lock_transfer(&transfer).await;
        let _one_at_a_time = self.lock_versions().await;
        let (markers, _pin) = self.check_transfer_refs(&transfer, chunks.iter(), Release::Transfer)?;
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, catalog)?;
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        let held = self.meta.contains(cf::VERSION_HOLDS, version)?;
        if !held {
            for c in &chunks {
                *deltas.entry(c.id).or_default() += 1;
            }
            stage_version_index(&mut batch, version, &chunks, true);
            batch.put(cf::VERSION_HOLDS, version, &ManifestRecord { chunks });
        }
        self.stage_release(&mut batch, &transfer, &markers, &mut deltas);
        batch.add_refs(deltas);
        self.commit(batch).await?;
        Ok(!held)
    }

    /// Lets go of `version` here: its hold on its chunks ends (they become garbage unless
    /// something else uses them) and `catalog` is applied, in one write. False, and
    /// nothing written, if it was not held.
    pub async fn release_version(&self, version: &[u8; 32], catalog: Vec<CatalogWrite>) -> Result<bool, StoreError> {
        let _one_at_a_time = self.lock_versions().await;
        let Some(held) = self.meta.get::<ManifestRecord>(cf::VERSION_HOLDS, version)? else { return Ok(false) };
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, catalog)?;
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        for c in &held.chunks {
            *deltas.entry(c.id).or_default() -= 1;
        }
        stage_version_index(&mut batch, version, &held.chunks, false);
        batch.delete(cf::VERSION_HOLDS, version);
        batch.add_refs(deltas);
        self.commit(batch).await?;
        Ok(true)
    }

    /// The chunks `version` holds here, if it is held.
    pub fn version_chunks(&self, version: &[u8; 32]) -> Result<Option<Vec<ChunkRef>>, StoreError> {
        Ok(self.meta.get::<ManifestRecord>(cf::VERSION_HOLDS, version)?.map(|m| m.chunks))
    }

    /// Makes `files` visible again as objects of `bucket` under `prefix`, sharing the
    /// chunks `version` holds (no data is copied); objects at those keys are replaced.
    pub async fn checkout(
        &self,
        version: &[u8; 32],
        bucket: &str,
        prefix: &str,
        files: Vec<SnapshotFile>,
    ) -> Result<u64, StoreError> {
        let held: std::collections::HashSet<ChunkId> = self
            .version_chunks(version)?
            .ok_or_else(|| StoreError::Metadata(format!("version {} is not held here", hex::encode(version))))?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut count = 0;
        for file in files {
            if let Some(c) = file.chunks.iter().find(|c| !held.contains(&c.id)) {
                return Err(StoreError::MissingChunk(c.id));
            }
            let key = format!("{prefix}{}", file.path);
            let mut batch = self.meta.batch();
            let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
            for c in &file.chunks {
                *deltas.entry(c.id).or_default() += 1;
            }
            let body = if file.chunks.is_empty() {
                Body::Inline(Vec::new())
            } else {
                crate::objects::stage_body(&mut batch, bucket, file.chunks)
            };
            let record = ObjectRecord { head: ObjectHead { mtime_ms: crate::now_ms(), ..file.head }, body };
            self.replace_object(bucket, &key, record, batch, deltas, &crate::objects::Precondition::default()).await?;
            count += 1;
        }
        Ok(count)
    }
}

/// Adds (or removes) `version` to the versions each of `chunks` is used by.
fn stage_version_index(batch: &mut crate::meta::Batch, version: &[u8; 32], chunks: &[ChunkRef], add: bool) {
    let mut ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let key = [&keys::chunk_key(&id)[..], &version[..]].concat();
        if add {
            batch.put_raw(cf::CHUNK_VERSIONS, &key, b"");
        } else {
            batch.delete(cf::CHUNK_VERSIONS, &key);
        }
    }
}

/// The key of [`cf::CHUNK_VERSIONS`] that says the index is built.
const CHUNK_VERSIONS_BUILT: &[u8] = b"";

impl Store {
    /// Has `watch` record, with each quarantine or repair, what it does to the versions
    /// held here (set once, before the store is used).
    pub fn set_replica_watch(&self, watch: std::sync::Arc<dyn ReplicaWatch>) {
        if self.replica_watch.set(watch).is_err() {
            tracing::warn!("the store's replica watch was set twice; the first one stays");
        }
    }

    /// Stages, into `batch`, what taking `lost` out of the index and putting `back` into
    /// it does to the versions held here, as the replica watch records it. The caller
    /// holds the versions lock ([`Store::lock_versions`]) until the batch is written.
    pub(crate) fn stage_availability(
        &self,
        batch: &mut crate::meta::Batch,
        lost: &[ChunkId],
        back: &[ChunkId],
    ) -> Result<(), StoreError> {
        let Some(watch) = self.replica_watch.get() else { return Ok(()) };
        let mut versions: Vec<[u8; 32]> = Vec::new();
        for id in lost.iter().chain(back) {
            versions.extend(self.versions_using(id)?);
        }
        versions.sort_unstable();
        versions.dedup();
        let mut changed = Vec::with_capacity(versions.len());
        for version in versions {
            let Some(held) = self.meta.get::<ManifestRecord>(cf::VERSION_HOLDS, &version)? else { continue };
            let mut distinct: Vec<ChunkId> = held.chunks.iter().map(|c| c.id).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let keys: Vec<[u8; 32]> = distinct.iter().map(keys::chunk_key).collect();
            let indexed = self.meta.contains_many(cf::CHUNKS, &keys)?;
            let present: std::collections::HashSet<ChunkId> = distinct
                .iter()
                .zip(indexed)
                .filter(|(id, indexed)| (*indexed || back.contains(id)) && !lost.contains(id))
                .map(|(id, _)| *id)
                .collect();
            let bytes_held = held.chunks.iter().filter(|c| present.contains(&c.id)).map(|c| c.len as u64).sum();
            changed.push(Availability {
                version,
                bytes_held,
                chunks_held: present.len() as u64,
                complete: present.len() == distinct.len(),
            });
        }
        if !changed.is_empty() {
            stage_catalog(batch, watch.record(&changed))?;
        }
        Ok(())
    }

    /// The versions held here that use chunk `id`.
    pub fn versions_using(&self, id: &ChunkId) -> Result<Vec<[u8; 32]>, StoreError> {
        let prefix = keys::chunk_key(id);
        let mut versions = Vec::new();
        for entry in self.meta.scan_raw(cf::CHUNK_VERSIONS, &prefix, keys::prefix_successor(&prefix)) {
            let (key, _) = entry?;
            if let Ok(version) = <[u8; 32]>::try_from(&key[32..]) {
                versions.push(version);
            }
        }
        Ok(versions)
    }

    /// Taken by every write that changes what a version holds or records its replica.
    pub(crate) async fn lock_versions(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.versions_lock.lock().await
    }

    /// Applies `writes` (catalog tables) only if `table`'s `key` still holds `expected`
    /// (`None`: absent), under the versions lock; false, and nothing written, if not.
    pub async fn catalog_write_if(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<CatalogWrite>,
    ) -> Result<bool, StoreError> {
        let _versions = self.lock_versions().await;
        if self.meta.get_raw(known_table(table)?, key)?.as_deref() != expected {
            return Ok(false);
        }
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, writes)?;
        self.commit(batch).await?;
        Ok(true)
    }

    /// Builds [`cf::CHUNK_VERSIONS`] from the version holds if it is not built (a store
    /// made before the index existed); the empty key marks it done.
    pub(crate) fn index_chunk_versions(&self) -> Result<(), StoreError> {
        if self.meta.contains(cf::CHUNK_VERSIONS, CHUNK_VERSIONS_BUILT)? {
            return Ok(());
        }
        let mut batch = self.meta.batch();
        let mut versions = 0u64;
        for item in self.meta.scan::<ManifestRecord>(cf::VERSION_HOLDS, b"", b"") {
            let (key, held) = item?;
            let version: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::CorruptMetadata { kind: "version hold key", reason: hex::encode(&key) })?;
            stage_version_index(&mut batch, &version, &held.chunks, true);
            versions += 1;
        }
        batch.put_raw(cf::CHUNK_VERSIONS, CHUNK_VERSIONS_BUILT, b"");
        self.meta.write(batch)?;
        if versions > 0 {
            tracing::info!(versions, "indexed the chunks each held version uses");
        }
        Ok(())
    }
}

fn stage_catalog(batch: &mut crate::meta::Batch, writes: Vec<CatalogWrite>) -> Result<(), StoreError> {
    for write in writes {
        match write {
            CatalogWrite::Put(table, key, value) => batch.put_raw(known_table(table)?, &key, &value),
            CatalogWrite::Delete(table, key) => batch.delete(known_table(table)?, &key),
        }
    }
    Ok(())
}

impl Store {
    /// Of `chunks` (counted once each), the bytes and chunks this store holds, for any data
    /// at all, and those it lacks: what staging them here would move.
    pub fn presence(&self, chunks: &[ChunkRef]) -> Result<Presence, StoreError> {
        let mut distinct: Vec<ChunkRef> = chunks.to_vec();
        distinct.sort_unstable_by_key(|c| c.id);
        distinct.dedup_by_key(|c| c.id);
        let keys: Vec<[u8; 32]> = distinct.iter().map(|c| keys::chunk_key(&c.id)).collect();
        let mut presence = Presence::default();
        for (chunk, held) in distinct.iter().zip(self.meta.get_many::<ChunkLoc, _>(cf::CHUNKS, &keys)?) {
            if let Some(loc) = held {
                // The length stored, not the one asked about: a made-up length must not
                // come back as the count of a held chunk.
                presence.bytes_present += loc.plain_len as u64;
                presence.chunks_present += 1;
            } else {
                presence.bytes_missing += chunk.len as u64;
                presence.chunks_missing += 1;
            }
        }
        Ok(presence)
    }
}

/// What [`Store::presence`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// bytes of the distinct chunks held
    pub bytes_present: u64,
    /// bytes of the distinct chunks not held
    pub bytes_missing: u64,
    /// distinct chunks held
    pub chunks_present: u64,
    /// distinct chunks not held
    pub chunks_missing: u64,
}
