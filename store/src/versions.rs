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
pub const CATALOG_TABLES: [&str; 9] = cf::CATALOG;

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
        let _one_at_a_time = self.lock_key("", "\0versions").await;
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
                self.stage_new_chunks(&mut batch, ingested)?;
            }
            batch.put(cf::VERSION_HOLDS, version, &ManifestRecord { chunks });
            for (id, delta) in deltas {
                batch.add_ref(&id, delta);
            }
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
        let _one_at_a_time = self.lock_key("", "\0versions").await;
        let (markers, _pin) = self.check_transfer_refs(&transfer, chunks.iter(), Release::Transfer)?;
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, catalog)?;
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        let held = self.meta.contains(cf::VERSION_HOLDS, version)?;
        if !held {
            for c in &chunks {
                *deltas.entry(c.id).or_default() += 1;
            }
            batch.put(cf::VERSION_HOLDS, version, &ManifestRecord { chunks });
        }
        self.stage_release(&mut batch, &transfer, &markers, &mut deltas);
        let mut deltas: Vec<(ChunkId, i64)> = deltas.into_iter().filter(|(_, delta)| *delta != 0).collect();
        deltas.sort_unstable_by_key(|(id, _)| *id);
        for (id, delta) in deltas {
            batch.add_ref(&id, delta);
        }
        self.commit(batch).await?;
        Ok(!held)
    }

    /// Lets go of `version` here: its hold on its chunks ends (they become garbage unless
    /// something else uses them) and `catalog` is applied, in one write. False, and
    /// nothing written, if it was not held.
    pub async fn release_version(&self, version: &[u8; 32], catalog: Vec<CatalogWrite>) -> Result<bool, StoreError> {
        let _one_at_a_time = self.lock_key("", "\0versions").await;
        let Some(held) = self.meta.get::<ManifestRecord>(cf::VERSION_HOLDS, version)? else { return Ok(false) };
        let mut batch = self.meta.batch();
        stage_catalog(&mut batch, catalog)?;
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        for c in &held.chunks {
            *deltas.entry(c.id).or_default() -= 1;
        }
        batch.delete(cf::VERSION_HOLDS, version);
        let mut deltas: Vec<(ChunkId, i64)> = deltas.into_iter().collect();
        deltas.sort_unstable_by_key(|(id, _)| *id);
        for (id, delta) in deltas {
            batch.add_ref(&id, delta);
        }
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
