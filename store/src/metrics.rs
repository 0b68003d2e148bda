//! Store counters, exported by the daemon's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters since the store was opened.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// plain bytes accepted by ingests that were committed
    pub bytes_ingested: AtomicU64,
    /// payload bytes written to packs (after compression)
    pub bytes_written: AtomicU64,
    /// plain bytes not written because the chunk was already stored
    pub bytes_deduplicated: AtomicU64,
    /// plain bytes minus payload bytes of compressed chunks written
    pub compression_saved: AtomicU64,
    /// chunks written
    pub chunks_written: AtomicU64,
    /// chunks found already stored
    pub chunks_deduplicated: AtomicU64,
    /// packs written
    pub packs_written: AtomicU64,
    /// plain bytes served by reads
    pub bytes_read: AtomicU64,
    /// chunks that failed verification
    pub chunks_corrupt: AtomicU64,
    /// chunks deleted by GC
    pub chunks_collected: AtomicU64,
    /// packs deleted by GC
    pub packs_collected: AtomicU64,
}

impl StoreMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Name, help and value of every counter, for export.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            ("store_bytes_ingested_total", "Plain bytes of committed writes", self.bytes_ingested.load(Relaxed)),
            ("store_bytes_written_total", "Payload bytes written to packs", self.bytes_written.load(Relaxed)),
            (
                "store_bytes_deduplicated_total",
                "Plain bytes not written because already stored",
                self.bytes_deduplicated.load(Relaxed),
            ),
            (
                "store_compression_saved_bytes_total",
                "Bytes saved by chunk compression",
                self.compression_saved.load(Relaxed),
            ),
            ("store_chunks_written_total", "Chunks written", self.chunks_written.load(Relaxed)),
            ("store_chunks_deduplicated_total", "Chunks found already stored", self.chunks_deduplicated.load(Relaxed)),
            ("store_packs_written_total", "Pack objects written", self.packs_written.load(Relaxed)),
            ("store_bytes_read_total", "Plain bytes served by reads", self.bytes_read.load(Relaxed)),
            ("store_chunks_corrupt_total", "Chunks that failed verification", self.chunks_corrupt.load(Relaxed)),
            (
                "store_chunks_collected_total",
                "Chunks removed by garbage collection",
                self.chunks_collected.load(Relaxed),
            ),
            ("store_packs_collected_total", "Packs removed by garbage collection", self.packs_collected.load(Relaxed)),
        ]
    }
}
