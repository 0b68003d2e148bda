//! Chunk packs on `object_store`.
//!
//! A writer appends chunk frames to a [`PackWriter`] and seals it once, as one object
//! (`packs/<2 hex>/<16 hex>.pack`). Reads fetch frames by byte range. On the local
//! filesystem a pack is streamed to a temp file as it fills (so a writer holds about
//! 1 MiB, not a whole pack) and sealed durably by hand (fsync, rename, fsync of the
//! directory), because `object_store`'s local backend renames without syncing. Other
//! backends receive the pack as one put when it is sealed.

use crate::error::StoreError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, local::LocalFileSystem, memory::InMemory, path::Path};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Where packs are kept.
#[derive(Clone)]
pub struct ChunkBackend {
    store: Arc<dyn ObjectStore>,
    /// Set for the local filesystem backend, which is written directly for durability.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for ChunkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBackend").field("store", &self.store.to_string()).finish()
    }
}

/// A pack object (or a pack's temp file) seen in a listing.
#[derive(Debug, Clone)]
pub struct PackListing {
    /// pack id
    pub id: u64,
    /// its size
    pub bytes: u64,
    /// a local pack still being written, or left by a crash before it was sealed
    pub unsealed: bool,
    location: Path,
}

impl ChunkBackend {
    /// The local filesystem under `root`.
    pub fn local(root: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root)?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self { store: Arc::new(store), local_root: Some(root) })
    }

    /// An in-memory backend (tests, benchmarks of the metadata path).
    pub fn memory() -> Self {
        Self { store: Arc::new(InMemory::new()), local_root: None }
    }

    /// Any `object_store` URL.
    pub fn from_url(url: &str, options: &[(String, String)]) -> Result<Self, StoreError> {
        if url == "memory://" || url == "memory:///" {
            return Ok(Self::memory());
        }
        let parsed = url::Url::parse(url).map_err(|e| StoreError::Config(format!("chunk_store_url {url:?}: {e}")))?;
        if parsed.scheme() == "file" {
            let root = parsed
                .to_file_path()
                .map_err(|()| StoreError::Config(format!("chunk_store_url {url:?} is not a local path")))?;
            return Self::local(root);
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter().cloned())?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Self { store, local_root: None })
    }

    /// A backend over an existing `object_store`.
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
    }

    fn pack_path(id: u64) -> Path {
        let hex = format!("{id:016x}");
        Path::from(format!("packs/{}/{hex}.pack", &hex[..2]))
    }

    /// (pack id, unsealed) for `<16 hex>.pack` and its temp files `<16 hex>.tmp.<n>`.
    fn parse_pack_path(path: &Path) -> Option<(u64, bool)> {
        let name = path.filename()?;
        let (id, unsealed) = match name.strip_suffix(".pack") {
            Some(id) => (id, false),
            None => (name.split_once(".tmp.")?.0, true),
        };
        u64::from_str_radix(id, 16).ok().filter(|_| id.len() == 16).map(|id| (id, unsealed))
    }

    /// Starts a pack; frames are appended to it and it is sealed with [`PackWriter::seal`].
    pub fn start_pack(&self, id: u64) -> Result<PackWriter, StoreError> {
        let sink = match &self.local_root {
            Some(root) => {
                let path = root.join(Self::pack_path(id).as_ref());
                create_dir_durably(path.parent().expect("pack paths have a directory"))?;
                let tmp = path.with_extension(format!("tmp.{}", rand::random::<u32>()));
                let file = std::fs::File::create(&tmp)?;
                Sink::Local {
                    file: Some(file),
                    path,
                    guard: TempGuard(Some(tmp)),
                    pending: Vec::new(),
                    pending_bytes: 0,
                }
            }
            None => Sink::Remote { store: self.store.clone(), frames: Vec::new() },
        };
        Ok(PackWriter { id, bytes: 0, sink })
    }

    /// Writes a whole pack durably; returns its size.
    pub async fn put_pack(&self, id: u64, frames: Vec<Bytes>) -> Result<u64, StoreError> {
        let mut pack = self.start_pack(id)?;
        for frame in frames {
            pack.append(frame).await?;
        }
        pack.seal().await
    }

    /// Reads `len` bytes at `offset` of a pack. A local pack is mapped rather than read
    /// into a buffer (see `mapped.rs`).
    pub async fn read(&self, pack: u64, offset: u64, len: u32) -> Result<Bytes, StoreError> {
        if let Some(root) = &self.local_root {
            let path = root.join(Self::pack_path(pack).as_ref());
            return tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path)?;
                if (len as usize) < MAP_MIN_BYTES {
                    let mut buffer = vec![0u8; len as usize];
                    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buffer, offset)?;
                    return Ok(Bytes::from(buffer));
                }
                crate::mapped::map_range(&file, offset, len as usize)
            })
            .await
            .map_err(|e| StoreError::Backend(format!("pack reader task: {e}")))?
            .map_err(|e| StoreError::Backend(format!("pack {pack:016x}, {len} bytes at {offset}: {e}")));
        }
        let range = offset..offset + len as u64;
        let bytes = self.store.get_range(&Self::pack_path(pack), range).await?;
        Ok(bytes)
    }

    /// Deletes a pack; deleting one already gone is not an error.
    pub async fn delete_pack(&self, id: u64) -> Result<(), StoreError> {
        match self.store.delete(&Self::pack_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every pack object and pack temp file present.
    pub async fn list_packs(&self) -> Result<Vec<PackListing>, StoreError> {
        let objects: Vec<_> = self.store.list(Some(&Path::from("packs"))).try_collect().await?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let (id, unsealed) = Self::parse_pack_path(&o.location)?;
                Some(PackListing { id, bytes: o.size, unsealed, location: o.location })
            })
            .collect())
    }

    /// Deletes what a listing found (a pack or a stale temp file).
    pub async fn delete_listed(&self, listing: &PackListing) -> Result<(), StoreError> {
        match self.store.delete(&listing.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Removes a temp file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    /// The file was renamed into place: keep it.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads from this size on map the pack rather than copy it: a mapping costs two system
/// calls and, once unmapped, a TLB flush on every core running the daemon, more than
/// copying a single chunk's frame (at most 256 KiB with the default chunk sizes): reads
/// of whole runs of neighbouring chunks map, single chunks copy.
const MAP_MIN_BYTES: usize = 512 << 10;

/// Bytes a local pack buffers before writing them out.
const LOCAL_WRITE_BYTES: usize = 1 << 20;

enum Sink {
    Local { file: Option<std::fs::File>, path: PathBuf, guard: TempGuard, pending: Vec<Bytes>, pending_bytes: usize },
    Remote { store: Arc<dyn ObjectStore>, frames: Vec<Bytes> },
}

/// A pack being written. Dropped unsealed, it leaves nothing behind locally (its temp
/// file is removed); nothing references it either way until its commit.
pub struct PackWriter {
    id: u64,
    bytes: u64,
    sink: Sink,
}

impl PackWriter {
    /// The pack's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes appended so far: the offset the next frame gets.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Appends a frame.
    pub async fn append(&mut self, frame: Bytes) -> Result<(), StoreError> {
        self.append_pieces([frame]).await
    }

    /// Appends one frame given as pieces (a header and the payload where it already is),
    /// written out as they are, without joining them.
    pub async fn append_pieces<const N: usize>(&mut self, pieces: [Bytes; N]) -> Result<(), StoreError> {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        self.bytes += len as u64;
        match &mut self.sink {
            Sink::Local { pending, pending_bytes, .. } => {
                *pending_bytes += len;
                pending.extend(pieces);
                if *pending_bytes >= LOCAL_WRITE_BYTES {
                    self.write_pending().await?;
                }
            }
            // Kept until the pack is sealed: joined into a buffer of their own, so that a
            // payload does not hold the whole body segment it was cut from.
            Sink::Remote { frames, .. } => {
                let mut frame = bytes::BytesMut::with_capacity(len);
                for piece in &pieces {
                    frame.extend_from_slice(piece);
                }
                frames.push(frame.freeze());
            }
        }
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<(), StoreError> {
        let Sink::Local { file, pending, pending_bytes, .. } = &mut self.sink else { return Ok(()) };
        let frames = std::mem::take(pending);
        let written = std::mem::take(pending_bytes) as u64;
        let end = self.bytes;
        let mut f = file.take().expect("the file is put back after every write");
        let f = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StoreError> {
            write_all_vectored(&mut f, &frames)?;
            start_write_back(&f, end - written, written);
            Ok(f)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("pack writer task: {e}")))??;
        *file = Some(f);
        Ok(())
    }

    /// Makes the pack durable under its final name; returns its size.
    pub async fn seal(mut self) -> Result<u64, StoreError> {
        self.write_pending().await?;
        match self.sink {
            Sink::Local { file, path, mut guard, .. } => {
                let file = file.expect("the file is put back after every write");
                let tmp = guard.0.clone().expect("armed until sealed");
                tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                    file.sync_all()?;
                    drop(file);
                    std::fs::rename(&tmp, &path)?;
                    guard.disarm();
                    std::fs::File::open(path.parent().expect("pack paths have a directory"))?.sync_all()?;
                    Ok(())
                })
                .await
                .map_err(|e| StoreError::Backend(format!("pack writer task: {e}")))??;
            }
            Sink::Remote { store, frames } => {
                store.put(&ChunkBackend::pack_path(self.id), PutPayload::from_iter(frames)).await?;
            }
        }
        Ok(self.bytes)
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now,
/// without waiting: the fsync that seals the file (a pack here, a staged file in the
/// CLI) then waits for its tail, not for all of it at once. A hint; a filesystem that
/// cannot is left alone.
pub fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Writes every piece in order with as few system calls as the kernel allows.
fn write_all_vectored(file: &mut std::fs::File, pieces: &[Bytes]) -> std::io::Result<()> {
    // The kernel takes at most IOV_MAX (1024) pieces per call.
    for group in pieces.chunks(1024) {
        let mut slices: Vec<std::io::IoSlice<'_>> = group.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each made durable in its parent: a pack fsynced
/// into a directory whose own entry a crash lost would be lost with it.
fn create_dir_durably(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent();
    if let Some(parent) = parent {
        create_dir_durably(parent)?;
    }
    if let Err(e) = std::fs::create_dir(dir) {
        // Another writer made it meanwhile: its entry may not be synced yet, so sync here too.
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    if let Some(parent) = parent {
        std::fs::File::open(parent)?.sync_all()?;
        #[cfg(test)]
        tests::SYNCED_DIRS.with(|synced| synced.borrow_mut().push(parent.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// Directories whose entries [`create_dir_durably`] synced on this thread.
        pub(super) static SYNCED_DIRS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn a_new_pack_directory_is_synced_into_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chunks");
        let backend = ChunkBackend::local(root.clone()).unwrap();
        let pack = backend.start_pack(0x0123_4567_89ab_cdef).unwrap();
        let pack_dir = root.join(ChunkBackend::pack_path(0x0123_4567_89ab_cdef).as_ref());
        let pack_dir = pack_dir.parent().unwrap();
        let synced = SYNCED_DIRS.with(|s| s.take());
        assert!(pack_dir.is_dir());
        assert!(
            synced.contains(&pack_dir.parent().unwrap().to_path_buf()),
            "{pack_dir:?}'s parent was synced: {synced:?}"
        );
        // A second pack in the same directory syncs nothing more.
        drop(pack);
        backend.start_pack(0x0123_4567_89ab_cdee).unwrap();
        assert!(SYNCED_DIRS.with(|s| s.take()).is_empty());
    }
}
