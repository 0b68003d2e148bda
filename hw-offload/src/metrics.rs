//! Counters each engine keeps per operation: jobs, bytes in, engine time, host CPU time,
//! fallbacks to the CPU and errors; and the per-thread CPU clock they are measured with.

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
    /// one-shot digests (MD5, CRCs, SHA-256)
    Sum,
}

impl OpKind {
    /// Every kind, in export order.
    pub const ALL: [OpKind; 6] =
        [Self::Boundaries, Self::Digest, Self::ChunkId, Self::Compress, Self::Decompress, Self::Sum];

    /// Label value for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boundaries => "boundaries",
            Self::Digest => "digest",
            Self::ChunkId => "chunk_id",
            Self::Compress => "compress",
            Self::Decompress => "decompress",
            Self::Sum => "sum",
        }
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    jobs: AtomicU64,
    bytes: AtomicU64,
    busy_ns: AtomicU64,
    host_cpu_ns: AtomicU64,
    fallbacks: AtomicU64,
    errors: AtomicU64,
}

/// Per-operation counters of one engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    ops: [OpCounters; OpKind::ALL.len()],
    errors: AtomicU64,
}

/// A copy of one operation's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    /// steps run
    pub jobs: u64,
    /// input bytes
    pub bytes: u64,
    /// thread time the engine spent (on its own cores for an agent), nanoseconds
    pub busy_ns: u64,
    /// host thread CPU time spent handing jobs to this engine and taking results back,
    /// nanoseconds (zero for the CPU engine, whose work is all host time: see `busy_ns`)
    pub host_cpu_ns: u64,
    /// jobs meant for this engine that ran on the CPU instead
    pub fallbacks: u64,
    /// jobs of this operation that failed on this engine
    pub errors: u64,
}

impl EngineMetrics {
    /// Records one step.
    pub fn record(&self, op: OpKind, bytes: usize, busy: std::time::Duration) {
        let c = &self.ops[op as usize];
        c.jobs.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes as u64, Relaxed);
        c.busy_ns.fetch_add(busy.as_nanos() as u64, Relaxed);
    }

    /// Records host CPU time spent on this engine's jobs of `op`.
    pub fn record_host_cpu(&self, op: OpKind, ns: u64) {
        self.ops[op as usize].host_cpu_ns.fetch_add(ns, Relaxed);
    }

    /// Records a job of `op` rerun on the CPU.
    pub fn record_fallback(&self, op: OpKind) {
        self.ops[op as usize].fallbacks.fetch_add(1, Relaxed);
    }

    /// Records a failed job.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Records a failed job whose chain involved `op`.
    pub fn record_op_error(&self, op: OpKind) {
        self.ops[op as usize].errors.fetch_add(1, Relaxed);
        self.errors.fetch_add(1, Relaxed);
    }

    /// Current counters of `op`.
    pub fn op(&self, op: OpKind) -> OpSnapshot {
        let c = &self.ops[op as usize];
        OpSnapshot {
            jobs: c.jobs.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            busy_ns: c.busy_ns.load(Relaxed),
            host_cpu_ns: c.host_cpu_ns.load(Relaxed),
            fallbacks: c.fallbacks.load(Relaxed),
            errors: c.errors.load(Relaxed),
        }
    }

    /// Failed jobs so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
}

/// CPU time the calling thread has used so far, nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time the whole process has used so far (all threads, user + system), nanoseconds.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: rusage is plain data; zeroed is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}
