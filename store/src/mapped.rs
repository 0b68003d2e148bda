//! Read-only memory mappings of sealed pack files, so that a read hands the page cache's
//! own pages to the verifier and the socket instead of copying them into a buffer first
//! (the copy was a fifth of the server's CPU on large GETs).
//!
//! Sound because a sealed pack is never written again: packs are written to a temp file
//! and renamed into place once complete, and GC deletes whole files (a mapping keeps a
//! deleted file's data alive). The range is checked against the file's size when it is
//! mapped; a pack truncated behind the daemon's back while a read holds its mapping
//! would fault the process, as it would any database that maps its files. So would a
//! disk error on a page while it is mapped, which a copying read reports as an error
//! (and the chunk is then quarantined and repaired). Only reads of whole runs of chunks
//! map; a single chunk's read (the scrubber's, a repair's, a transfer's) copies unless
//! the store was configured for chunks over 512 KiB (`MAP_MIN_BYTES` in `chunks.rs`).
//! Only local packs are mapped, never a network object store's.

use bytes::Bytes;
use std::fs::File;
use std::os::fd::AsRawFd;

/// A private read-only mapping of `len` bytes of a file, from `skip` bytes into the
/// mapping (which starts at a page boundary).
struct Mapping {
    base: *mut libc::c_void,
    map_len: usize,
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone until it is dropped.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base` maps `map_len` ≥ `skip + len` readable bytes until `drop`.
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(self.skip), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `map_len` are exactly what mmap returned and was given.
        unsafe { libc::munmap(self.base, self.map_len) };
    }
}

/// Maps `len` bytes at `offset` of `file`, faulted in at once (one call into the kernel
/// rather than a page fault per few pages: the verifier reads them all next).
pub(crate) fn map_range(file: &File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let size = file.metadata()?.len();
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("range {offset}+{len} is beyond the pack's {size} bytes"),
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let aligned = offset / page * page;
    let skip = (offset - aligned) as usize;
    let map_len = skip + len;
    // SAFETY: a fresh private read-only mapping of a range the file holds (checked
    // above); nothing else is mapped at an address the kernel chooses.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_POPULATE,
            file.as_raw_fd(),
            aligned as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Bytes::from_owner(Mapping { base, map_len, skip, len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_any_range_and_refuses_one_beyond_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
        let file = File::open(&path).unwrap();
        for (offset, len) in
            [(0usize, 1usize), (1, 4095), (4095, 2), (4096, 8192), (12_345, 7_655), (19_999, 1), (7, 0)]
        {
            let bytes = map_range(&file, offset as u64, len).unwrap();
            assert_eq!(&bytes[..], &data[offset..offset + len], "{offset}+{len}");
            // A slice outlives the Bytes it was cut from; the mapping goes with the last.
            let tail = bytes.slice(len / 2..);
            drop(bytes);
            assert_eq!(&tail[..], &data[offset + len / 2..offset + len]);
        }
        let err = map_range(&file, 19_999, 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(map_range(&file, u64::MAX, 2).is_err());
    }
}
