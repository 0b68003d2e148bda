//! Scrub and check.
//!
//! - [`Store::scrub`] reads and verifies every indexed chunk; corrupt ones are
//!   quarantined (repair from another site comes with the transfer protocol).
//! - [`Store::check`] recounts references from every object and part and compares
//!   them with the stored counts, and finds referenced chunks missing from the index.

use crate::Store;
use crate::error::StoreError;
use crate::meta::values::{ChunkLoc, ChunkRef, ObjectRecord, PartRecord, refcount};
use crate::meta::{cf, keys};
use hw_offload::ChunkId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Chunks verified concurrently by a scrub.
const SCRUB_PARALLEL: usize = 4;

/// What a scrub found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScrubReport {
    /// chunks read and verified
    pub chunks_checked: u64,
    /// plain bytes verified
    pub bytes_checked: u64,
    /// chunks found corrupt (now quarantined), with the reason
    pub corrupt: Vec<(String, String)>,
}

/// What a check found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckReport {
    /// objects examined
    pub objects: u64,
    /// parts of uploads in progress examined
    pub parts: u64,
    /// published dataset versions examined
    #[serde(default)]
    pub versions: u64,
    /// distinct chunks referenced
    pub chunks_referenced: u64,
    /// chunks whose stored count differs from the recount: (id, stored, recounted)
    pub refcount_mismatches: Vec<(String, i64, i64)>,
    /// referenced chunks absent from the index (quarantined or lost)
    pub missing_chunks: Vec<String>,
    /// (bucket, chunk) whose count of objects using it differs from the recount:
    /// (bucket, id, stored, recounted)
    #[serde(default)]
    pub bucket_chunk_mismatches: Vec<(String, String, i64, i64)>,
}

impl CheckReport {
    /// Whether everything agreed.
    pub fn is_clean(&self) -> bool {
        self.refcount_mismatches.is_empty() && self.missing_chunks.is_empty() && self.bucket_chunk_mismatches.is_empty()
    }
}

impl Store {
    /// Verifies every stored chunk.
    #[tracing::instrument(skip(self))]
    pub async fn scrub(&self) -> Result<ScrubReport, StoreError> {
        use futures::StreamExt;
        let _one_at_a_time = self.maintenance.lock().await;
        let mut chunks = Vec::new();
        for item in self.meta.scan::<ChunkLoc>(cf::CHUNKS, b"", b"") {
            let (k, loc) = item?;
            if let Some(id) = keys::decode_chunk_key(&k) {
                chunks.push(ChunkRef { id, len: loc.plain_len });
            }
        }
        let mut report = ScrubReport::default();
        let mut results = futures::stream::iter(chunks)
            .map(|c| async move { (c, self.read_chunk(&c).await) })
            .buffer_unordered(SCRUB_PARALLEL);
        // Quarantined once the reads are done: a quarantine awaited here would stop the
        // reads in flight, one of which may hold the lock it waits for.
        let mut unreadable = Vec::new();
        while let Some((chunk, result)) = results.next().await {
            report.chunks_checked += 1;
            match result {
                Ok(data) => report.bytes_checked += data.len() as u64,
                Err(StoreError::CorruptChunk { id, reason }) => report.corrupt.push((id.to_hex(), reason)),
                // GC removed it since the scan: nothing to verify.
                Err(StoreError::MissingChunk(_)) => report.chunks_checked -= 1,
                // The pack itself is unreadable (deleted by hand, lost disk).
                Err(StoreError::Backend(reason)) => unreadable.push((chunk, reason)),
                Err(e) => return Err(e),
            }
        }
        drop(results);
        for (chunk, reason) in unreadable {
            if let Some(loc) = self.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(&chunk.id))? {
                let err = self.quarantine(chunk.id, loc, format!("pack unreadable: {reason}")).await;
                report.corrupt.push((chunk.id.to_hex(), err.to_string()));
            }
        }
        tracing::info!(checked = report.chunks_checked, corrupt = report.corrupt.len(), "scrub done");
        Ok(report)
    }

    /// Recounts references and compares them with the stored counts.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut counts: HashMap<ChunkId, i64> = HashMap::new();
        let mut in_buckets: HashMap<Vec<u8>, i64> = HashMap::new();
        for item in self.meta.scan::<ObjectRecord>(cf::OBJECTS, b"", b"") {
            let (key, record) = item?;
            let (bucket, _) = keys::decode_object_key(&key)
                .ok_or_else(|| StoreError::CorruptMetadata { kind: "object key", reason: hex::encode(&key) })?;
            report.objects += 1;
            for c in self.body_chunks(&record.body)? {
                *counts.entry(c.id).or_default() += 1;
                *in_buckets.entry(keys::bucket_chunk_key(bucket, &c.id)).or_default() += 1;
            }
        }
        // The index of the chunks each bucket uses (a count of 0 is as good as none).
        let mismatch = |key: &[u8], stored: i64, actual: i64| {
            let (bucket, id) = key.split_at(key.len().saturating_sub(32));
            (String::from_utf8_lossy(bucket.get(1..).unwrap_or_default()).into_owned(), hex::encode(id), stored, actual)
        };
        for item in self.meta.scan_raw(cf::BUCKET_CHUNKS, b"", None) {
            let (k, v) = item?;
            if k.is_empty() {
                continue; // the index's built marker
            }
            let stored = refcount::decode(&v).unwrap_or(i64::MIN);
            let actual = in_buckets.remove(&k[..]).unwrap_or(0);
            if stored != actual {
                report.bucket_chunk_mismatches.push(mismatch(&k, stored, actual));
            }
        }
        for (k, actual) in in_buckets {
            report.bucket_chunk_mismatches.push(mismatch(&k, 0, actual));
        }
        // Published dataset versions hold their chunks as objects do.
        for item in self.meta.scan::<crate::meta::values::ManifestRecord>(cf::VERSION_HOLDS, b"", b"") {
            let (_, held) = item?;
            report.versions += 1;
            for c in held.chunks {
                *counts.entry(c.id).or_default() += 1;
            }
        }
        for item in self.meta.scan::<PartRecord>(cf::PARTS, b"", b"") {
            let (_, part) = item?;
            report.parts += 1;
            for c in part.chunks {
                *counts.entry(c.id).or_default() += 1;
            }
        }
        // A transfer holds one reference to each chunk it received (its marker) until it
        // commits or is released: a stage-out session, a transfer being received.
        for item in self.meta.scan_raw(cf::TRANSFER_CHUNKS, b"", None) {
            let (k, _) = item?;
            let (_, id) = keys::decode_transfer_chunk_key(&k)
                .ok_or_else(|| StoreError::CorruptMetadata { kind: "transfer chunk key", reason: hex::encode(&k) })?;
            *counts.entry(id).or_default() += 1;
        }
        report.chunks_referenced = counts.len() as u64;
        for item in self.meta.scan_raw(cf::REFCOUNTS, b"", None) {
            let (k, v) = item?;
            let id = keys::decode_chunk_key(&k)
                .ok_or(StoreError::CorruptMetadata { kind: "refcount key", reason: hex::encode(&k) })?;
            let stored = refcount::decode(&v).unwrap_or(i64::MIN);
            let actual = counts.remove(&id).unwrap_or(0);
            if stored != actual {
                report.refcount_mismatches.push((id.to_hex(), stored, actual));
            }
        }
        for (id, actual) in counts {
            report.refcount_mismatches.push((id.to_hex(), 0, actual));
        }
        // Every chunk with a positive count must be findable.
        for item in self.meta.scan_raw(cf::REFCOUNTS, b"", None) {
            let (k, v) = item?;
            if refcount::decode(&v).unwrap_or(0) > 0 && !self.meta.contains(cf::CHUNKS, &k)? {
                report.missing_chunks.push(hex::encode(&k));
            }
        }
        Ok(report)
    }
}
