//! Where a site keeps its catalog: an ordered key-value store with atomic batches, behind
//! a trait small enough that another engine (PostgreSQL, for a site that runs several
//! gateway nodes) implements it in one table. [`conformance`] is the suite every
//! implementation passes; [`MemoryStorage`] is the one the sync simulation runs on.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The catalog's tables. Keys are bytes that sort as the queries need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// origin ‖ 0 ‖ seq (u64 BE) → [`crate::SignedEvent`] (postcard): every site's log
    Events,
    /// origin → head of its log held here: seq and hash chain
    Heads,
    /// ns → namespace record
    Namespaces,
    /// ns ‖ 0 ‖ dataset ‖ 0 ‖ version id → version record
    Versions,
    /// ns ‖ 0 ‖ dataset ‖ 0 ‖ tag → version id
    Tags,
    /// version id ‖ site → replica record
    Replicas,
    /// origin ‖ 0 ‖ rule id → rule record
    Rules,
    /// origin ‖ 0 ‖ pin id → pin record
    Pins,
    /// version id → manifest (canonical encoding), where known here
    Manifests,
    /// version id → nothing: this site's replica of it changed (a chunk quarantined or
    /// repaired) and its event is still to be appended
    Outbox,
    /// origin → [`crate::compaction::CheckpointRecord`]: the checkpoints of its log held here
    Checkpoints,
    /// origin ‖ 0 ‖ seq (u64 BE) → [`crate::SignedEvent`]: a snapshot of that log being
    /// loaded, installed once complete and checked
    Staged,
    /// ns ‖ 0 ‖ dataset → its metadata (postcard map of key → value)
    Described,
}

impl Table {
    /// Every table, in order.
    pub const ALL: [Table; 13] = [
        Table::Events,
        Table::Heads,
        Table::Namespaces,
        Table::Versions,
        Table::Tags,
        Table::Replicas,
        Table::Rules,
        Table::Pins,
        Table::Manifests,
        Table::Outbox,
        Table::Checkpoints,
        Table::Staged,
        Table::Described,
    ];

    /// A stable name (column family or SQL value): the store's names for these tables.
    pub fn name(self) -> &'static str {
        store::versions::CATALOG_TABLES[self as usize]
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// sets `key` to `value`
    Put(Table, Vec<u8>, Vec<u8>),
    /// removes `key`
    Delete(Table, Vec<u8>),
}

/// A storage failure: the catalog cannot answer or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog storage: {0}")]
pub struct StorageError(pub String);

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key-value store with atomic batches.
pub trait CatalogStorage: Send + Sync {
    /// The value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Entries whose key starts with `prefix` and sorts after `after` (all of them when
    /// `None`), in key order, at most `limit`.
    fn scan(&self, table: Table, prefix: &[u8], after: Option<&[u8]>, limit: usize)
    -> Result<Vec<Entry>, StorageError>;

    /// Applies every op, or none; durable once this returns.
    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError>;
}

impl<T: CatalogStorage + ?Sized> CatalogStorage for std::sync::Arc<T> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        (**self).scan(table, prefix, after, limit)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        (**self).write(ops)
    }
}

/// A catalog in memory (tests, and the sync simulation).
#[derive(Debug, Default)]
pub struct MemoryStorage {
    tables: Mutex<BTreeMap<Table, Sorted>>,
}

type Sorted = BTreeMap<Vec<u8>, Vec<u8>>;

impl CatalogStorage for MemoryStorage {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tables.lock().expect("not poisoned").get(&table).and_then(|t| t.get(key).cloned()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let tables = self.tables.lock().expect("not poisoned");
        let Some(t) = tables.get(&table) else { return Ok(Vec::new()) };
        let start = match after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_vec()),
            _ => std::ops::Bound::Included(prefix.to_vec()),
        };
        Ok(t.range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut tables = self.tables.lock().expect("not poisoned");
        for op in ops {
            match op {
                Op::Put(table, key, value) => {
                    tables.entry(table).or_default().insert(key, value);
                }
                Op::Delete(table, key) => {
                    if let Some(t) = tables.get_mut(&table) {
                        t.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The suite every [`CatalogStorage`] passes: call it from a test with a fresh, empty one.
pub mod conformance {
    use super::*;

    /// Runs every check against `storage` (empty when given).
    pub fn run(storage: &dyn CatalogStorage) {
        gets_what_was_put_and_not_what_was_deleted(storage);
        scans_in_key_order_within_the_prefix(storage);
        tables_are_apart(storage);
    }

    fn gets_what_was_put_and_not_what_was_deleted(s: &dyn CatalogStorage) {
        assert_eq!(s.get(Table::Heads, b"a").unwrap(), None);
        s.write(vec![Op::Put(Table::Heads, b"a".to_vec(), b"1".to_vec())]).unwrap();
        assert_eq!(s.get(Table::Heads, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        s.write(vec![Op::Put(Table::Heads, b"a".to_vec(), b"2".to_vec()), Op::Delete(Table::Heads, b"b".to_vec())])
            .unwrap();
        assert_eq!(s.get(Table::Heads, b"a").unwrap().as_deref(), Some(&b"2"[..]), "the later put wins");
        s.write(vec![Op::Delete(Table::Heads, b"a".to_vec())]).unwrap();
        assert_eq!(s.get(Table::Heads, b"a").unwrap(), None);
        // Within one batch, ops apply in order.
        s.write(vec![Op::Put(Table::Heads, b"c".to_vec(), b"x".to_vec()), Op::Delete(Table::Heads, b"c".to_vec())])
            .unwrap();
        assert_eq!(s.get(Table::Heads, b"c").unwrap(), None);
    }

    fn scans_in_key_order_within_the_prefix(s: &dyn CatalogStorage) {
        let keys: [&[u8]; 6] = [b"p\x00b", b"p\x00a", b"p\x00\xff", b"p", b"q\x00a", b"o\xff"];
        s.write(keys.iter().map(|k| Op::Put(Table::Versions, k.to_vec(), k.to_vec())).collect()).unwrap();
        let got: Vec<Vec<u8>> =
            s.scan(Table::Versions, b"p\x00", None, 10).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, [b"p\x00a".to_vec(), b"p\x00b".to_vec(), b"p\x00\xff".to_vec()]);
        let got: Vec<Vec<u8>> =
            s.scan(Table::Versions, b"p\x00", Some(b"p\x00a"), 1).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, [b"p\x00b".to_vec()], "after, and at most the limit");
        assert_eq!(s.scan(Table::Versions, b"", None, 100).unwrap().len(), 6);
        assert!(s.scan(Table::Versions, b"z", None, 10).unwrap().is_empty());
    }

    fn tables_are_apart(s: &dyn CatalogStorage) {
        s.write(vec![Op::Put(Table::Tags, b"k".to_vec(), b"tag".to_vec())]).unwrap();
        assert_eq!(s.get(Table::Pins, b"k").unwrap(), None);
        assert_eq!(s.scan(Table::Rules, b"", None, 10).unwrap(), Vec::<Entry>::new());
        for table in Table::ALL {
            assert!(table.name().starts_with("catalog_"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_storage_conforms() {
        super::conformance::run(&super::MemoryStorage::default());
    }
}
