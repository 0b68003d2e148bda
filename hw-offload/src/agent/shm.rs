//! The one place with `unsafe`: mapping the shared region and touching it.
//!
//! The region is shared with another process that we do not trust. The ring words are
//! handed out as atomics and entries are copied in and out through bounds-checked raw
//! copies. Data-area ranges are also lent out as `&[u8]` ([`SharedRegion::slice`]) so
//! that job inputs and outputs need no copy (zero-copy buffers, `pool.rs`): the ring
//! protocol gives the agent no right to write a range outside the jobs it holds, and the
//! host lends a range only while no job of the agent may write it (see `PROTOCOL.md`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// An offset and length outside the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range {offset}+{len} is outside the shared region ({region} bytes)")]
pub struct OutOfBounds {
    /// offset asked for
    pub offset: u64,
    /// length asked for
    pub len: u64,
    /// region size
    pub region: u64,
}

/// A `MAP_SHARED` mapping of a whole file.
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory valid for the life of the value; every access
// goes through atomics or explicit copies, so sharing it between threads is sound.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps the first `len` bytes of `file`, which must be at least that long.
    pub fn map(file: &File, len: usize) -> std::io::Result<Self> {
        if len == 0 || file.metadata()?.len() < len as u64 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "shared region file too short"));
        }
        // SAFETY: a fresh mapping of a file we hold open; the kernel picks the address.
        // The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never, once mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(offset as usize),
            _ => Err(OutOfBounds { offset, len, region: self.len as u64 }),
        }
    }

    /// The 32-bit ring word at `offset` (4-byte aligned, inside the region).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len, "ring word {offset} outside the header");
        // SAFETY: in bounds and aligned (the mapping is page-aligned); the other process
        // accesses these words only atomically, as PROTOCOL.md requires.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast::<u32>()) }
    }

    /// The 64-bit word at `offset` (8-byte aligned, inside the region).
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len, "ring word {offset} outside the header");
        // SAFETY: as for `atomic_u32`.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast::<u64>()) }
    }

    /// Where `bytes` starts in the region, if all of it lies inside the mapping.
    pub fn offset_of(&self, bytes: &[u8]) -> Option<u64> {
        let start = self.ptr.as_ptr() as usize;
        let at = (bytes.as_ptr() as usize).checked_sub(start)?;
        (at.checked_add(bytes.len())? <= self.len).then_some(at as u64)
    }

    /// The bytes at `offset`, lent without a copy.
    ///
    /// The caller must own the range under the ring protocol for as long as the slice
    /// lives: the host's allocator lends a range to one buffer or job at a time, and the
    /// agent may write only the output range of a job in flight, which the host never
    /// lends out before that job's completion. A peer that breaks the protocol can change
    /// these bytes under the reader, as with any file mapped `MAP_SHARED`; it can never
    /// make the slice point outside the mapping.
    pub fn slice(&self, offset: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let at = self.check(offset, len)?;
        // SAFETY: the range is inside the mapping (checked above), which lives as long as
        // `self`; the ownership rule above is the protocol's (see the doc comment).
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len as usize) })
    }

    /// Copies `len` bytes inside the region from `from` to `to` (ranges must not overlap).
    pub fn copy_within(&self, from: u64, to: u64, len: u64) -> Result<(), OutOfBounds> {
        let src = self.check(from, len)?;
        let dst = self.check(to, len)?;
        if src.max(dst) - src.min(dst) < len as usize {
            return Err(OutOfBounds { offset: to, len, region: self.len as u64 });
        }
        // SAFETY: both ranges are inside the mapping and do not overlap (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(src), self.ptr.as_ptr().add(dst), len as usize) };
        Ok(())
    }

    /// Copies `dst.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let at = self.check(offset, dst.len() as u64)?;
        // SAFETY: the range is inside the mapping (checked above) and `dst` is ours; the
        // protocol gives the reader this range while it reads.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    pub fn write(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        let at = self.check(offset, src.len() as u64)?;
        // SAFETY: the range is inside the mapping (checked above); the protocol gives the
        // writer this range while it writes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(at), src.len()) };
        Ok(())
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it outlives
        // `self` (the atomics borrow `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Pins the calling thread to `cores` (empty: no change).
pub fn pin_current_thread(cores: &[usize]) -> std::io::Result<()> {
    if cores.is_empty() {
        return Ok(());
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cores {
        if core >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("core {core} out of range")));
        }
        // SAFETY: `core` is below CPU_SETSIZE (checked), `set` is a valid cpu_set_t.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is valid for the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
