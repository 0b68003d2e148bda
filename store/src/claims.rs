//! What in-flight writes hold, so garbage collection leaves it alone.
//!
//! A writer claims each chunk id *before* it checks whether the chunk is stored, and
//! releases the claims only after its commit. GC deletes a chunk only while holding the
//! same lock, after seeing it unclaimed and re-reading a zero count; so a writer either
//! sees the chunk gone (and writes it again) or GC sees the claim (and skips it).

use hw_offload::ChunkId;
use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;

/// Claims come and go several times per received chunk: foldhash (seeded per process)
/// instead of SipHash, which was most of their cost.
#[derive(Debug, Default)]
pub(crate) struct ClaimTable {
    chunks: foldhash::HashMap<ChunkId, u32>,
    packs: foldhash::HashSet<u64>,
}

impl ClaimTable {
    pub(crate) fn chunk_claimed(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub(crate) fn pack_open(&self, pack: u64) -> bool {
        self.packs.contains(&pack)
    }
}

/// The shared table.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    table: Mutex<ClaimTable>,
}

impl Claims {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ClaimTable> {
        self.table.lock()
    }
}

/// One writer's claims, released on drop (commit, error or a dropped request alike).
#[derive(Debug)]
pub(crate) struct ClaimSet {
    claims: Arc<Claims>,
    chunks: Vec<ChunkId>,
    packs: Vec<u64>,
}

impl ClaimSet {
    pub(crate) fn new(claims: Arc<Claims>) -> Self {
        Self { claims, chunks: Vec::new(), packs: Vec::new() }
    }

    /// Claims `id`; the caller then checks the index. Claim each id once per writer.
    pub(crate) fn claim_chunk(&mut self, id: ChunkId) {
        *self.claims.lock().chunks.entry(id).or_insert(0) += 1;
        self.chunks.push(id);
    }

    /// Claims every id of `ids` not yet claimed by this set, under one lock.
    pub(crate) fn claim_all(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        let mut distinct: Vec<ChunkId> = ids.into_iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut table = self.claims.lock();
        for id in &distinct {
            *table.chunks.entry(*id).or_insert(0) += 1;
        }
        drop(table);
        self.chunks.extend(distinct);
    }

    /// Takes over `other`'s claims without releasing them.
    pub(crate) fn absorb(&mut self, mut other: ClaimSet) {
        self.chunks.append(&mut other.chunks);
        self.packs.append(&mut other.packs);
    }

    /// Marks a pack as being written.
    pub(crate) fn open_pack(&mut self, pack: u64) {
        self.claims.lock().packs.insert(pack);
        self.packs.push(pack);
    }
}

impl Drop for ClaimSet {
    fn drop(&mut self) {
        let mut table = self.claims.lock();
        for id in &self.chunks {
            if let Some(n) = table.chunks.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    table.chunks.remove(id);
                }
            }
        }
        for pack in &self.packs {
            table.packs.remove(pack);
        }
    }
}
