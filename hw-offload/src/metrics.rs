//! Counters each engine keeps per operation: jobs, bytes in, time spent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The operations engines report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpKind {
    /// FastCDC boundaries
    Boundaries,
    /// whole-object digests
    Digest,
    /// BLAKE3 chunk ids (and verification)
    ChunkId,
    /// compression
    Compress,
    /// decompression
    Decompress,
}

impl OpKind {
    /// Every kind, in export order.
    pub const ALL: [OpKind; 5] = [Self::Boundaries, Self::Digest, Self::ChunkId, Self::Compress, Self::Decompress];

    /// Label value for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boundaries => "boundaries",
            Self::Digest => "digest",
            Self::ChunkId => "chunk_id",
            Self::Compress => "compress",
            Self::Decompress => "decompress",
        }
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    jobs: AtomicU64,
    bytes: AtomicU64,
    busy_ns: AtomicU64,
}

/// Per-operation counters of one engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    ops: [OpCounters; 5],
    errors: AtomicU64,
}

/// A copy of one operation's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    /// steps run
    pub jobs: u64,
    /// input bytes
    pub bytes: u64,
    /// thread time spent, nanoseconds
    pub busy_ns: u64,
}

impl EngineMetrics {
    /// Records one step.
    pub fn record(&self, op: OpKind, bytes: usize, busy: std::time::Duration) {
        let c = &self.ops[op as usize];
        c.jobs.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes as u64, Relaxed);
        c.busy_ns.fetch_add(busy.as_nanos() as u64, Relaxed);
    }

    /// Records a failed job.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Current counters of `op`.
    pub fn op(&self, op: OpKind) -> OpSnapshot {
        let c = &self.ops[op as usize];
        OpSnapshot { jobs: c.jobs.load(Relaxed), bytes: c.bytes.load(Relaxed), busy_ns: c.busy_ns.load(Relaxed) }
    }

    /// Failed jobs so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
}
