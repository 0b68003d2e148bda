//! The catalog kept in the store's own metadata database (RocksDB), in column families
//! of its own beside the store's.
//!
//! Why there and not in a database of its own: what the catalog says about this site must
//! change in the same write as the data it describes. A published version's hold on its
//! chunks and the event that publishes it, a replica's state and the chunk that arrives,
//! is quarantined or is repaired: with two databases, a crash between the writes would
//! leave a catalog that says what is not so. One database makes each change one atomic,
//! synced write, and costs nothing at read time (separate column families, their own
//! memtables and files).

use crate::storage::{CatalogStorage, Entry, Op, StorageError, Table};
use std::sync::Arc;
use store::Store;
use store::versions::CatalogWrite;

/// The catalog's tables in `store`'s metadata database.
#[derive(Clone)]
pub struct InStore(pub Arc<Store>);

fn failed(e: store::StoreError) -> StorageError {
    StorageError(e.to_string())
}

/// The store's writes for `ops`.
pub fn writes(ops: Vec<Op>) -> Vec<CatalogWrite> {
    ops.into_iter()
        .map(|op| match op {
            Op::Put(table, key, value) => CatalogWrite::Put(table.name(), key, value),
            Op::Delete(table, key) => CatalogWrite::Delete(table.name(), key),
        })
        .collect()
}

impl CatalogStorage for InStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.catalog_get(table.name(), key).map_err(failed)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let entries = self.0.catalog_scan(table.name(), prefix, after, limit).map_err(failed)?;
        Ok(entries.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())).collect())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.0.catalog_write(writes(ops)).map_err(failed)
    }
}
