//! The host's allocator over the data area of one shared region, and the slots it lends.
//!
//! Every byte range a job or a caller's buffer uses in the data area is a [`Slot`]: it
//! holds the region alive (an `Arc` of the mapping) and gives its range back when
//! dropped. That is what makes zero-copy safe across agent restarts: a `Bytes` that
//! points into a region keeps that mapping (not the agent) alive, and a region whose
//! link is gone is *retired*, so its ranges drain and are never lent again.
//!
//! Only the host allocates; the agent reads and writes the offsets a job names.

use super::shm::SharedRegion;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Allocations are cache-line aligned so two slots never share a line.
const ALIGN: u64 = 64;

/// First-fit allocator over `[0, len)`, free ranges keyed by offset.
struct Arena {
    free: BTreeMap<u64, u64>,
}

impl Arena {
    fn new(len: u64) -> Self {
        Self { free: BTreeMap::from([(0, len)]) }
    }

    /// A range of at least `len` bytes (rounded up to [`ALIGN`]): `(offset, reserved)`.
    fn alloc(&mut self, len: u64) -> Option<(u64, u64)> {
        let len = len.max(1).next_multiple_of(ALIGN);
        let (&at, &size) = self.free.iter().find(|&(_, &size)| size >= len)?;
        self.free.remove(&at);
        if size > len {
            self.free.insert(at + len, size - len);
        }
        Some((at, len))
    }

    fn release(&mut self, at: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut start = at;
        let mut size = len;
        if let Some((&prev, &prev_len)) = self.free.range(..at).next_back()
            && prev + prev_len == at
        {
            self.free.remove(&prev);
            start = prev;
            size += prev_len;
        }
        if let Some(&next_len) = self.free.get(&(at + len)) {
            self.free.remove(&(at + len));
            size += next_len;
        }
        self.free.insert(start, size);
    }
}

/// One region's data area and who holds which part of it.
pub(crate) struct Pool {
    region: SharedRegion,
    data_off: u64,
    data_len: u64,
    arena: Mutex<Arena>,
    /// Set when the link to the agent that used this region is gone: nothing new is
    /// allocated here, the ranges still lent out stay valid until their holders drop them.
    retired: AtomicBool,
    /// Bytes lent to callers' buffers ([`Pool::buffer`]), as opposed to jobs in flight.
    buffer_bytes: AtomicU64,
}

impl Pool {
    pub(crate) fn new(region: SharedRegion, data_off: u64, data_len: u64) -> Arc<Self> {
        Arc::new(Self {
            region,
            data_off,
            data_len,
            arena: Mutex::new(Arena::new(data_len)),
            retired: AtomicBool::new(false),
            buffer_bytes: AtomicU64::new(0),
        })
    }

    /// The mapping (ring words, entries).
    pub(crate) fn region(&self) -> &SharedRegion {
        &self.region
    }

    /// Stops lending: called when the link that used this region is dropped.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// A range for a job (input copy or output) of `len` bytes, or `None` when full.
    pub(crate) fn alloc(self: &Arc<Self>, len: u64) -> Option<Slot> {
        if self.retired.load(Ordering::Acquire) {
            return None;
        }
        let (at, reserved) = self.arena.lock().alloc(len)?;
        Some(Slot { pool: self.clone(), at, reserved, buffer: false })
    }

    /// A range for a caller's buffer, or `None` when buffers already hold
    /// [`BUFFER_SHARE`] of the data area: the rest stays free for job outputs and for
    /// inputs that must be copied in, so buffers never starve the ring.
    pub(crate) fn buffer(self: &Arc<Self>, len: u64) -> Option<Slot> {
        let limit = self.data_len / BUFFER_SHARE.1 * BUFFER_SHARE.0;
        let len = len.max(1).next_multiple_of(ALIGN);
        let held = self.buffer_bytes.fetch_add(len, Ordering::AcqRel);
        if held + len > limit {
            self.buffer_bytes.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        match self.alloc(len) {
            Some(mut slot) => {
                slot.buffer = true;
                Some(slot)
            }
            None => {
                self.buffer_bytes.fetch_sub(len, Ordering::AcqRel);
                None
            }
        }
    }

    /// Where `bytes` lies in the data area, if it lies there whole: a job over it needs
    /// no copy.
    pub(crate) fn data_offset_of(&self, bytes: &[u8]) -> Option<u64> {
        let at = self.region.offset_of(bytes)?.checked_sub(self.data_off)?;
        (at + bytes.len() as u64 <= self.data_len).then_some(at)
    }
}

/// Buffers may hold at most this fraction (numerator, denominator) of the data area.
const BUFFER_SHARE: (u64, u64) = (3, 4);

/// A range of a pool's data area, given back when dropped.
pub(crate) struct Slot {
    pool: Arc<Pool>,
    /// offset in the data area
    at: u64,
    /// bytes reserved (a multiple of [`ALIGN`])
    reserved: u64,
    /// counted against the buffers' share
    buffer: bool,
}

impl Slot {
    /// Offset in the data area (what ring entries carry).
    pub(crate) fn data_offset(&self) -> u64 {
        self.at
    }

    /// Bytes usable.
    pub(crate) fn capacity(&self) -> u64 {
        self.reserved
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Copies `src` in at `offset` within the slot.
    pub(crate) fn write(&self, offset: u64, src: &[u8]) {
        assert!(offset + src.len() as u64 <= self.reserved, "write past the end of a shared slot");
        self.pool.region.write(self.pool.data_off + self.at + offset, src).expect("slots lie inside the data area");
    }

    /// Copies the first `len` bytes of `self` to the start of `to` (same region).
    pub(crate) fn copy_to(&self, to: &Slot, len: u64) {
        assert!(len <= self.reserved && len <= to.reserved && Arc::ptr_eq(&self.pool, &to.pool));
        let base = self.pool.data_off;
        self.pool.region.copy_within(base + self.at, base + to.at, len).expect("distinct slots of one data area");
    }

    /// The first `len` bytes, lent without a copy (see [`SharedRegion::slice`]).
    pub(crate) fn bytes(&self, len: u64) -> &[u8] {
        assert!(len <= self.reserved, "read past the end of a shared slot");
        self.pool.region.slice(self.pool.data_off + self.at, len).expect("slots lie inside the data area")
    }

    /// Gives back everything past the first `len` bytes (an output shorter than its cap,
    /// a buffer frozen before it was full), so long-lived results hold only their size.
    pub(crate) fn shrink_to(&mut self, len: u64) {
        let keep = len.max(1).next_multiple_of(ALIGN);
        if keep >= self.reserved {
            return;
        }
        self.pool.arena.lock().release(self.at + keep, self.reserved - keep);
        if self.buffer {
            self.pool.buffer_bytes.fetch_sub(self.reserved - keep, Ordering::AcqRel);
        }
        self.reserved = keep;
    }

    /// The first `len` bytes as `Bytes` that point into the region; the range is given
    /// back when the last clone or slice of them drops.
    pub(crate) fn into_bytes(mut self, len: u64) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        self.shrink_to(len);
        Bytes::from_owner(SlotBytes { slot: self, len })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.arena.lock().release(self.at, self.reserved);
        if self.buffer {
            self.pool.buffer_bytes.fetch_sub(self.reserved, Ordering::AcqRel);
        }
    }
}

/// The owner behind `Bytes` that point into a region.
struct SlotBytes {
    slot: Slot,
    len: u64,
}

impl AsRef<[u8]> for SlotBytes {
    fn as_ref(&self) -> &[u8] {
        self.slot.bytes(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(len: u64) -> Arc<Pool> {
        let file = tempfile::tempfile().unwrap();
        file.set_len(len).unwrap();
        let region = SharedRegion::map(&file, len as usize).unwrap();
        Pool::new(region, 4096, len - 4096)
    }

    #[test]
    fn slots_come_back_when_their_bytes_drop() {
        let pool = pool(1 << 20);
        let data_len = (1 << 20) - 4096;
        let slot = pool.alloc(1000).unwrap();
        slot.write(0, b"zero-copy");
        let bytes = slot.into_bytes(9);
        assert_eq!(&bytes[..], b"zero-copy");
        let part = bytes.slice(5..);
        assert_eq!(pool.data_offset_of(&part), Some(5));
        drop(bytes);
        // The slice still holds the range: the whole area is not free yet.
        assert!(pool.alloc(data_len).is_none());
        assert_eq!(&part[..], b"copy");
        drop(part);
        assert!(pool.alloc(data_len).is_some(), "everything given back");
        assert_eq!(pool.data_offset_of(b"heap bytes"), None);
    }

    #[test]
    fn a_buffer_that_outgrows_a_full_region_moves_to_the_heap_intact() {
        let pool = pool(1 << 20);
        let data_len = (1 << 20) - 4096;
        let mut buffer = crate::JobBuffer::shared(pool.buffer(4096).unwrap());
        buffer.extend_from_slice(&[7u8; 3000]);
        // The rest of the buffers' share (3/4 of the area) is taken: growing cannot stay
        // shared.
        let hog = pool.buffer(data_len / 4 * 3 - 4096).unwrap();
        buffer.extend_from_slice(&[9u8; 3000]);
        assert!(!buffer.is_shared());
        let bytes = buffer.freeze();
        assert_eq!(bytes.len(), 6000);
        assert!(bytes[..3000].iter().all(|&b| b == 7) && bytes[3000..].iter().all(|&b| b == 9));
        assert_eq!(pool.data_offset_of(&bytes), None);
        drop(hog);
        assert!(pool.alloc(data_len).is_some(), "the first range was given back when the buffer moved");
    }

    #[test]
    fn buffers_leave_a_share_for_jobs_and_retired_pools_lend_nothing() {
        let pool = pool(1 << 20);
        let data_len = (1 << 20) - 4096;
        let big = pool.buffer(data_len / 2).unwrap();
        assert!(pool.buffer(data_len / 2).is_none(), "over the buffers' share");
        let job = pool.alloc(data_len / 4).expect("jobs still find room");
        drop(big);
        let again = pool.buffer(data_len / 2).expect("the share was given back");
        pool.retire();
        assert!(pool.alloc(64).is_none() && pool.buffer(64).is_none());
        drop((job, again));
    }
}
