//! Garbage collection: chunks whose reference count fell to zero, packs left with no
//! live chunk (or few, which are compacted into a new pack), and packs a crash left
//! behind before their commit.
//!
//! Never deleted: a chunk referenced by an object, an upload's part or a transfer pin
//! (all hold references), or one a writer has claimed (see `claims.rs`).

use crate::Store;
use crate::error::StoreError;
use crate::frame;
use crate::meta::values::{ChunkLoc, PackRecord, refcount};
use crate::meta::{cf, keys};
use crate::metrics::StoreMetrics;
use hw_offload::ChunkId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Chunks deleted per metadata batch: the claim lock is held across the batch's synced
/// write, so keep writers' waits short.
const DELETE_BATCH: usize = 128;
/// A pack whose live bytes fall below this fraction is rewritten (1/2: the rewrite
/// costs at most the bytes it frees).
const COMPACT_BELOW_LIVE_FRACTION: f64 = 0.5;

/// What a GC pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    /// unreferenced chunks removed from the index
    pub chunks_deleted: u64,
    /// packs deleted (no live chunk left)
    pub packs_deleted: u64,
    /// packs rewritten to drop dead chunks
    pub packs_compacted: u64,
    /// packs found without a commit (left by a crash) and deleted
    pub orphan_packs_deleted: u64,
    /// bytes of pack objects freed
    pub bytes_freed: u64,
}

impl Store {
    /// Runs one GC pass. Safe to run while the store serves reads and writes.
    #[tracing::instrument(skip(self))]
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let _one_at_a_time = self.maintenance.lock().await;
        let mut report = GcReport::default();
        self.delete_dead_chunks(&mut report).await?;
        self.collect_packs(&mut report).await?;
        self.delete_orphan_packs(&mut report).await?;
        StoreMetrics::add(&self.metrics().chunks_collected, report.chunks_deleted);
        StoreMetrics::add(&self.metrics().packs_collected, report.packs_deleted + report.orphan_packs_deleted);
        tracing::info!(?report, "gc pass done");
        Ok(report)
    }

    async fn delete_dead_chunks(&self, report: &mut GcReport) -> Result<(), StoreError> {
        let mut candidates = Vec::new();
        for item in self.meta.scan_raw(cf::REFCOUNTS, b"", None) {
            let (k, v) = item?;
            let count = refcount::decode(&v)
                .ok_or(StoreError::CorruptMetadata { kind: "refcount", reason: hex::encode(&k) })?;
            if count < 0 {
                // More releases than references: a bug somewhere. Deleting is still
                // right (nothing references it), but say so loudly.
                tracing::error!(chunk = hex::encode(&k), count, "negative reference count");
            }
            if count <= 0
                && let Some(id) = keys::decode_chunk_key(&k)
            {
                candidates.push(id);
            }
        }
        for group in candidates.chunks(DELETE_BATCH) {
            let group = group.to_vec();
            let meta = self.meta.clone();
            let claims = self.claims.clone();
            let deleted = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
                // Held across the check and the delete: a writer claims before it looks.
                let table = claims.lock();
                let mut batch = meta.batch();
                let mut n = 0;
                for id in group {
                    if table.chunk_claimed(&id) || meta.refcount(&id)? > 0 {
                        continue;
                    }
                    let key = keys::chunk_key(&id);
                    batch.delete(cf::REFCOUNTS, &key);
                    batch.delete(cf::CHUNKS, &key);
                    batch.delete(cf::QUARANTINE, &key);
                    n += 1;
                }
                meta.write(batch)?;
                drop(table);
                Ok(n)
            })
            .await
            .map_err(|e| StoreError::Metadata(format!("gc task: {e}")))??;
            report.chunks_deleted += deleted;
        }
        Ok(())
    }

    async fn collect_packs(&self, report: &mut GcReport) -> Result<(), StoreError> {
        // Packs first, then chunks: every pack listed here had its chunk locations
        // committed in the same batch, so the chunk scan below sees all of them.
        let mut packs: Vec<(u64, PackRecord)> = Vec::new();
        for item in self.meta.scan::<PackRecord>(cf::PACKS, b"", b"") {
            let (k, record) = item?;
            packs.push((keys::decode_pack_key(&k).unwrap_or_default(), record));
        }
        let mut live: HashMap<u64, Vec<(ChunkId, ChunkLoc)>> = HashMap::new();
        for item in self.meta.scan::<ChunkLoc>(cf::CHUNKS, b"", b"") {
            let (k, loc) = item?;
            if let Some(id) = keys::decode_chunk_key(&k) {
                live.entry(loc.pack).or_default().push((id, loc));
            }
        }
        for (pack, record) in packs {
            let chunks = live.remove(&pack).unwrap_or_default();
            let live_bytes: u64 = chunks.iter().map(|(_, l)| l.frame_len as u64).sum();
            if chunks.is_empty() {
                let mut batch = self.meta.batch();
                batch.delete(cf::PACKS, &keys::pack_key(pack));
                self.commit(batch).await?;
                self.chunks.delete_pack(pack).await?;
                report.packs_deleted += 1;
                report.bytes_freed += record.bytes;
            } else if (live_bytes as f64) < record.bytes as f64 * COMPACT_BELOW_LIVE_FRACTION {
                self.compact_pack(pack, record, chunks).await?;
                report.packs_compacted += 1;
                report.bytes_freed += record.bytes - live_bytes;
            }
        }
        Ok(())
    }

    /// Copies a pack's live chunks (verified on the way) into a new pack and deletes it.
    async fn compact_pack(
        &self,
        pack: u64,
        record: PackRecord,
        chunks: Vec<(ChunkId, ChunkLoc)>,
    ) -> Result<(), StoreError> {
        let new_pack = rand::random::<u64>();
        let mut claims = crate::claims::ClaimSet::new(self.claims.clone());
        claims.open_pack(new_pack);
        let mut frames = Vec::new();
        let mut moved = Vec::new();
        let mut offset = 0u64;
        for (id, loc) in chunks {
            let raw = self.chunks.read(loc.pack, loc.offset, loc.frame_len).await?;
            let verified = match frame::decode(&raw) {
                Ok((h, payload)) if h.id == id => {
                    self.offload.run(frame::verify_job(&h, payload)).await.map_err(|e| e.to_string())
                }
                Ok((h, _)) => Err(format!("frame names chunk {}", h.id)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(reason) = verified {
                self.quarantine(id, loc, reason).await;
                continue;
            }
            moved.push((id, ChunkLoc { pack: new_pack, offset, ..loc }));
            offset += raw.len() as u64;
            frames.push(raw);
        }
        let bytes = self.chunks.put_pack(new_pack, frames).await?;
        let mut batch = self.meta.batch();
        for (id, loc) in &moved {
            batch.put(cf::CHUNKS, &keys::chunk_key(id), loc);
        }
        batch.put(cf::PACKS, &keys::pack_key(new_pack), &PackRecord { bytes, created_ms: record.created_ms });
        batch.delete(cf::PACKS, &keys::pack_key(pack));
        self.commit(batch).await?;
        drop(claims);
        // Readers that fetched the old location retry with the new one.
        self.chunks.delete_pack(pack).await
    }

    async fn delete_orphan_packs(&self, report: &mut GcReport) -> Result<(), StoreError> {
        let listed = self.chunks.list_packs().await?;
        let mut orphans = Vec::new();
        for pack in listed {
            // Open first, then committed: a writer commits before it closes its pack.
            if self.claims.lock().pack_open(pack.id) {
                continue;
            }
            // A temp file of a pack no writer holds was left by a crash; a sealed pack is
            // garbage unless committed.
            if pack.unsealed || !self.meta.contains(cf::PACKS, &keys::pack_key(pack.id))? {
                orphans.push(pack);
            }
        }
        for pack in orphans {
            tracing::info!(
                pack = format_args!("{:016x}", pack.id),
                bytes = pack.bytes,
                unsealed = pack.unsealed,
                "deleting uncommitted pack"
            );
            self.chunks.delete_listed(&pack).await?;
            report.orphan_packs_deleted += 1;
            report.bytes_freed += pack.bytes;
        }
        Ok(())
    }
}
