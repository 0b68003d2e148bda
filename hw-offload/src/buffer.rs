//! Buffers a caller fills and then hands to jobs: in memory the engine reads without a
//! copy (the offload agent's shared region) when the engine has such memory, on the
//! heap otherwise. [`crate::Offload::buffer`] picks; callers never need to know which.

use crate::agent::pool::Slot;
use bytes::{Bytes, BytesMut};

/// A growable byte buffer, frozen into [`Bytes`] once filled.
///
/// Jobs over the frozen bytes (or any slice of them) skip the copy into the engine's
/// memory. Growing past the capacity moves the contents (to a larger shared range if
/// one is free, else to the heap), so size the buffer for what it will hold.
pub struct JobBuffer {
    backing: Backing,
}

enum Backing {
    Heap(BytesMut),
    Shared { slot: Slot, len: usize },
}

impl JobBuffer {
    /// A heap buffer with room for `capacity` bytes.
    pub fn heap(capacity: usize) -> Self {
        Self { backing: Backing::Heap(BytesMut::with_capacity(capacity)) }
    }

    pub(crate) fn shared(slot: Slot) -> Self {
        Self { backing: Backing::Shared { slot, len: 0 } }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        match &self.backing {
            Backing::Heap(b) => b.len(),
            Backing::Shared { len, .. } => *len,
        }
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes it holds without moving.
    pub fn capacity(&self) -> usize {
        match &self.backing {
            Backing::Heap(b) => b.capacity(),
            Backing::Shared { slot, .. } => slot.capacity() as usize,
        }
    }

    /// Whether the bytes live in an engine's shared memory (jobs over them are not copied).
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Shared { .. })
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        match &self.backing {
            Backing::Heap(b) => b,
            Backing::Shared { slot, len } => slot.bytes(*len as u64),
        }
    }

    /// Appends `src`, growing (and moving) the buffer if it is full.
    pub fn extend_from_slice(&mut self, src: &[u8]) {
        match &mut self.backing {
            Backing::Heap(b) => b.extend_from_slice(src),
            Backing::Shared { slot, len } => {
                let needed = *len + src.len();
                if needed as u64 > slot.capacity() {
                    let wanted = needed.max(slot.capacity() as usize * 2) as u64;
                    match slot.pool().buffer(wanted) {
                        Some(bigger) => {
                            slot.copy_to(&bigger, *len as u64);
                            *slot = bigger;
                        }
                        None => {
                            // The shared area is full: carry on in ordinary memory.
                            let mut heap = BytesMut::with_capacity(wanted as usize);
                            heap.extend_from_slice(slot.bytes(*len as u64));
                            heap.extend_from_slice(src);
                            self.backing = Backing::Heap(heap);
                            return;
                        }
                    }
                }
                slot.write(*len as u64, src);
                *len = needed;
            }
        }
    }

    /// The bytes written, as `Bytes` (pointing into shared memory for a shared buffer;
    /// the unused tail is given back).
    pub fn freeze(self) -> Bytes {
        match self.backing {
            Backing::Heap(b) => b.freeze(),
            Backing::Shared { slot, len } => slot.into_bytes(len as u64),
        }
    }
}

impl std::fmt::Debug for JobBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBuffer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("shared", &self.is_shared())
            .finish()
    }
}
