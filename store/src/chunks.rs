//! Chunk packs on `object_store`.
//!
//! A writer appends chunk frames to a pack and writes the pack once, as one object
//! (`packs/<2 hex>/<16 hex>.pack`). Reads fetch one frame by byte range. On the local
//! filesystem a pack is written durably by hand (temp file, fsync, rename, fsync of the
//! directory), because `object_store`'s local backend renames without syncing.

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

/// A pack object seen in a listing.
#[derive(Debug, Clone, Copy)]
pub struct PackListing {
    /// pack id
    pub id: u64,
    /// its size
    pub bytes: u64,
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

    fn parse_pack_path(path: &Path) -> Option<u64> {
        let name = path.filename()?.strip_suffix(".pack")?;
        u64::from_str_radix(name, 16).ok().filter(|_| name.len() == 16)
    }

    /// Writes a pack durably; returns its size.
    pub async fn put_pack(&self, id: u64, frames: Vec<Bytes>) -> Result<u64, StoreError> {
        let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        match &self.local_root {
            Some(root) => {
                let path = root.join(Self::pack_path(id).as_ref());
                tokio::task::spawn_blocking(move || write_durably(&path, &frames))
                    .await
                    .map_err(|e| StoreError::Backend(format!("pack writer task: {e}")))??;
            }
            None => {
                self.store.put(&Self::pack_path(id), PutPayload::from_iter(frames)).await?;
            }
        }
        Ok(bytes)
    }

    /// Reads `len` bytes at `offset` of a pack.
    pub async fn read(&self, pack: u64, offset: u64, len: u32) -> Result<Bytes, StoreError> {
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

    /// Every pack object present.
    pub async fn list_packs(&self) -> Result<Vec<PackListing>, StoreError> {
        let objects: Vec<_> = self.store.list(Some(&Path::from("packs"))).try_collect().await?;
        Ok(objects
            .into_iter()
            .filter_map(|o| Some(PackListing { id: Self::parse_pack_path(&o.location)?, bytes: o.size }))
            .collect())
    }
}

/// Removes a temp file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// temp file → write → fsync → rename → fsync directory.
fn write_durably(path: &std::path::Path, frames: &[Bytes]) -> Result<(), StoreError> {
    let dir = path.parent().expect("pack paths have a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", rand::random::<u32>()));
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut file = std::fs::File::create(&tmp)?;
    for frame in frames {
        file.write_all(frame)?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    guard.0 = None;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
