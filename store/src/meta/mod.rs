//! The metadata database. All RocksDB access is in this module, so that another engine
//! (a distributed one, for a site that outgrows one machine) can replace it later.
//!
//! - [`cf`]: column family names;
//! - [`keys`]: key encoders and decoders;
//! - [`values`]: versioned record formats.

pub mod cf;
pub mod keys;
pub mod values;

use crate::error::StoreError;
use hw_offload::ChunkId;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, MergeOperands, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use values::{Record, refcount};

/// One block cache for every column family (RocksDB's default is 32 MiB per family).
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// A raw key/value pair as RocksDB returns it.
pub type RawEntry = (Box<[u8]>, Box<[u8]>);

/// The metadata database of one site.
pub struct MetaDb {
    db: DB,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDb").field("path", &self.db.path()).finish()
    }
}

fn add_refcounts(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    // None makes RocksDB report corruption for this key instead of inventing a count.
    let mut total = match existing {
        Some(raw) => refcount::decode(raw)?,
        None => 0,
    };
    for op in operands {
        total += refcount::decode(op)?;
    }
    Some(refcount::encode(total).to_vec())
}

pub(crate) fn db_error(e: rocksdb::Error) -> StoreError {
    // RocksDB reports ENOSPC as an IOError whose NoSpace subcode its C API does not carry
    // (rocksdb::ErrorKind has no such kind): the status text is all there is to go on.
    let no_space = e.kind() == rocksdb::ErrorKind::IOError;
    let text = e.into_string();
    if no_space && text.contains("No space left") {
        StoreError::DiskFull(format!("metadata database: {text}"))
    } else {
        StoreError::Metadata(text)
    }
}

impl MetaDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Zstd);
        // Bounded memory whatever the number of families: 8 MiB write buffers.
        opts.set_write_buffer_size(8 << 20);
        // Most lookups are for keys that are absent (is this chunk held? an object at
        // this key? a transfer's marker?): bloom filters answer those without reading
        // data blocks, in the files (10 bits a key, ~1 % false positives) and in the
        // memtables, which hold the most recent writes a transfer asks about.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
        let descriptors = cf::ALL.iter().map(|&name| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Zstd);
            cf_opts.set_write_buffer_size(8 << 20);
            cf_opts.set_block_based_table_factory(&table);
            cf_opts.set_memtable_prefix_bloom_ratio(0.02);
            cf_opts.set_memtable_whole_key_filtering(true);
            if name == cf::REFCOUNTS || name == cf::BUCKET_CHUNKS {
                cf_opts.set_merge_operator_associative("clusster_refcount_add", add_refcounts);
            }
            if name == cf::BUCKET_CHUNKS {
                // A bucket that no longer uses a chunk keeps a count of 0 until compaction
                // drops it (the chunk's own count is GC's business, not this index's).
                cf_opts.set_compaction_filter("clusster_drop_unused", |_level: u32, key: &[u8], value: &[u8]| {
                    match refcount::decode(value) {
                        Some(0) if !key.is_empty() => rocksdb::compaction_filter::Decision::Remove,
                        _ => rocksdb::compaction_filter::Decision::Keep,
                    }
                });
            }
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(db_error)?;
        Ok(Arc::new(Self { db }))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is created at open"))
    }

    /// Reads and decodes one record.
    pub fn get<R: Record>(&self, cf: &str, key: &[u8]) -> Result<Option<R>, StoreError> {
        match self.db.get_pinned_cf(self.cf(cf), key).map_err(db_error)? {
            Some(raw) => R::decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    /// The raw value at `key` in `cf`.
    pub fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf), key).map_err(db_error)?.map(|v| v.to_vec()))
    }

    /// Whether `key` is present in `cf`.
    pub fn contains(&self, cf: &str, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf), key).map_err(db_error)?.is_some())
    }

    /// A chunk's reference count (0 when it has none).
    pub fn refcount(&self, id: &ChunkId) -> Result<i64, StoreError> {
        match self.db.get_pinned_cf(self.cf(cf::REFCOUNTS), keys::chunk_key(id)).map_err(db_error)? {
            Some(raw) => refcount::decode(&raw).ok_or(StoreError::CorruptMetadata {
                kind: "refcount",
                reason: format!("undecodable count for chunk {id}"),
            }),
            None => Ok(0),
        }
    }

    /// Whether each of `keys` is present in `cf`, in one batched lookup.
    pub fn contains_many<K: AsRef<[u8]>>(&self, cf: &str, keys: &[K]) -> Result<Vec<bool>, StoreError> {
        let handle = self.cf(cf);
        self.db
            .batched_multi_get_cf(handle, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(db_error))
            .collect()
    }

    /// The raw values at `keys` in `cf`, in order, read in one batched lookup.
    pub fn get_many_raw<K: AsRef<[u8]>>(&self, cf: &str, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let handle = self.cf(cf);
        self.db
            .batched_multi_get_cf(handle, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(db_error))
            .collect()
    }

    /// Whether the count at each of `keys` in `cf` (a family of merged counts) is above 0,
    /// in one batched lookup.
    pub fn counted_many<K: AsRef<[u8]>>(&self, cf: &str, keys: &[K]) -> Result<Vec<bool>, StoreError> {
        let handle = self.cf(cf);
        self.db
            .batched_multi_get_cf(handle, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|r| match r.map_err(db_error)? {
                Some(raw) => refcount::decode(&raw)
                    .map(|n| n > 0)
                    .ok_or(StoreError::CorruptMetadata { kind: "count", reason: format!("undecodable count in {cf}") }),
                None => Ok(false),
            })
            .collect()
    }

    /// The records at `keys` in `cf`, in order, read in one batched lookup.
    pub fn get_many<R: Record, K: AsRef<[u8]>>(&self, cf: &str, keys: &[K]) -> Result<Vec<Option<R>>, StoreError> {
        let handle = self.cf(cf);
        self.db
            .batched_multi_get_cf(handle, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|r| match r.map_err(db_error)? {
                Some(raw) => R::decode(&raw).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Whether `cf` holds any key from `first` to `last`, both inclusive.
    pub fn any_in_range(&self, cf: &str, first: &[u8], last: &[u8]) -> Result<bool, StoreError> {
        let mut ro = ReadOptions::default();
        let mut end = last.to_vec();
        end.push(0); // the smallest key after `last`
        ro.set_iterate_upper_bound(end);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), ro);
        it.seek(first);
        if it.valid() {
            return Ok(true);
        }
        it.status().map_err(db_error)?;
        Ok(false)
    }

    /// Raw key/value pairs of `cf` from `start` (inclusive) to `end` (exclusive).
    pub fn scan_raw<'a>(
        &'a self,
        cf: &'static str,
        start: &[u8],
        end: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<RawEntry, StoreError>> + use<'a> {
        let mut ro = ReadOptions::default();
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end);
        }
        // A full scan (GC, scrub) should not evict the hot blocks reads rely on.
        ro.fill_cache(false);
        self.db
            .iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(start, rocksdb::Direction::Forward))
            .map(|r| r.map_err(db_error))
    }

    /// Decoded records of `cf` whose keys start with `prefix`, from `start` on.
    pub fn scan<'a, R: Record + 'a>(
        &'a self,
        cf: &'static str,
        prefix: &[u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Box<[u8]>, R), StoreError>> + use<'a, R> {
        let start = if start > prefix { start } else { prefix };
        self.scan_raw(cf, start, keys::prefix_successor(prefix)).map(|r| r.and_then(|(k, v)| Ok((k, R::decode(&v)?))))
    }

    /// Starts a batch of writes, committed atomically by [`MetaDb::write`].
    pub fn batch(self: &Arc<Self>) -> Batch {
        Batch { db: self.clone(), inner: WriteBatch::default(), bucket_refs: HashMap::new() }
    }

    /// Commits a batch, synced to the WAL before returning: once this returns, the batch
    /// survives a crash or power loss.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let Batch { mut inner, bucket_refs, .. } = batch;
        let handle = self.cf(cf::BUCKET_CHUNKS);
        for (key, delta) in bucket_refs {
            if delta != 0 {
                inner.merge_cf(handle, key, refcount::encode(delta));
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(inner, &opts).map_err(db_error)
    }

    /// Flushes memtables (used before a clean shutdown so restart needs no WAL replay).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in cf::ALL {
            self.db.flush_cf(self.cf(name)).map_err(db_error)?;
        }
        Ok(())
    }
}

/// Writes to commit together.
pub struct Batch {
    db: Arc<MetaDb>,
    inner: WriteBatch,
    /// Per-bucket chunk counts, summed here so that an object replaced by one that shares
    /// its chunks writes nothing for them.
    bucket_refs: HashMap<Vec<u8>, i64>,
}

impl Batch {
    /// Puts a record.
    pub fn put<R: Record>(&mut self, cf: &str, key: &[u8], value: &R) {
        self.inner.put_cf(self.db.cf(cf), key, value.encode());
    }

    /// Puts raw bytes (a marker, not a record).
    pub fn put_raw(&mut self, cf: &str, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.db.cf(cf), key, value);
    }

    /// Deletes a key.
    pub fn delete(&mut self, cf: &str, key: &[u8]) {
        self.inner.delete_cf(self.db.cf(cf), key);
    }

    /// Deletes every key of `cf` from `start` (inclusive) to `end` (exclusive) with one
    /// range tombstone, however many there are.
    pub fn delete_range(&mut self, cf: &str, start: &[u8], end: &[u8]) {
        self.inner.delete_range_cf(self.db.cf(cf), start, end);
    }

    /// Adds `delta` to a chunk's reference count.
    pub fn add_ref(&mut self, id: &ChunkId, delta: i64) {
        if delta != 0 {
            self.inner.merge_cf(self.db.cf(cf::REFCOUNTS), keys::chunk_key(id), refcount::encode(delta));
        }
    }

    /// Adds every reference change of `deltas` in chunk id order (RocksDB takes keys in
    /// order far faster than scattered ones); a change of 0 writes nothing.
    pub fn add_refs(&mut self, deltas: HashMap<ChunkId, i64>) {
        let mut deltas: Vec<(ChunkId, i64)> = deltas.into_iter().collect();
        deltas.sort_unstable_by_key(|(id, _)| *id);
        for (id, delta) in deltas {
            self.add_ref(&id, delta);
        }
    }

    /// Adds `delta` to the number of objects of `bucket` that use a chunk
    /// ([`cf::BUCKET_CHUNKS`]), once per object that uses it.
    pub fn add_bucket_ref(&mut self, bucket: &str, id: &ChunkId, delta: i64) {
        *self.bucket_refs.entry(keys::bucket_chunk_key(bucket, id)).or_default() += delta;
    }
}
