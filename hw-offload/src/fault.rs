//! An engine that misbehaves on purpose, for tests of the router and of the daemon:
//! it runs jobs on its own CPU pool, then returns wrong hashes, corrupt payloads, late
//! answers, or none at all (a crash), from a chosen job on.

use crate::engine::{Completion, Engine};
use crate::job::Job;
use crate::metrics::EngineMetrics;
use crate::{ChunkId, Codec, CpuEngine};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Nothing: a correct engine.
    None,
    /// Chunk ids and sums come back with one bit flipped.
    WrongHash,
    /// Compressed payloads come back with one byte changed.
    CorruptPayload,
    /// Every chunk id comes back as this one (another object's chunk, say), with the
    /// payload of the job's own data.
    ChunkIdOf(ChunkId),
    /// Answers arrive this late.
    Delay(Duration),
    /// The engine dies: the batch is dropped and the engine stays unavailable until
    /// [`FaultEngine::revive`].
    Crash,
    /// Every job is refused as [`crate::JobError::Busy`] (a full ring).
    Busy,
}

/// A CPU pool that turns faulty after `after_jobs` jobs.
pub struct FaultEngine {
    name: String,
    inner: CpuEngine,
    fault: Mutex<(u64, Fault)>,
    seen: AtomicU64,
    dead: Arc<AtomicBool>,
    incarnation: AtomicU64,
    metrics: EngineMetrics,
}

impl FaultEngine {
    /// An engine named `name` that behaves until it has seen `after_jobs` jobs, then
    /// shows `fault` on every job after.
    pub fn new(name: &str, after_jobs: u64, fault: Fault) -> Self {
        Self {
            name: name.to_owned(),
            inner: CpuEngine::new(1),
            fault: Mutex::new((after_jobs, fault)),
            seen: AtomicU64::new(0),
            dead: Arc::new(AtomicBool::new(false)),
            incarnation: AtomicU64::new(0),
            metrics: EngineMetrics::default(),
        }
    }

    /// Changes the fault from now on.
    pub fn set_fault(&self, after_jobs: u64, fault: Fault) {
        *self.fault.lock() = (self.seen.load(Relaxed) + after_jobs, fault);
    }

    /// Brings a crashed engine back, behaving.
    pub fn revive(&self) {
        self.restart(Fault::None);
    }

    /// The engine comes back as a new incarnation (a restarted process, maybe another
    /// build) that shows `fault` from its first job.
    pub fn restart(&self, fault: Fault) {
        *self.fault.lock() = (self.seen.load(Relaxed), fault);
        self.dead.store(false, Relaxed);
        self.incarnation.fetch_add(1, Relaxed);
    }

    /// Jobs submitted so far.
    pub fn jobs_seen(&self) -> u64 {
        self.seen.load(Relaxed)
    }
}

impl Engine for FaultEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn submit(&self, jobs: Vec<Job>) -> Completion {
        let first = self.seen.fetch_add(jobs.len() as u64, Relaxed);
        let (after, fault) = *self.fault.lock();
        let faulty = first + jobs.len() as u64 > after && fault != Fault::None;
        let fault = if faulty { fault } else { Fault::None };
        for job in &jobs {
            for step in &job.steps {
                self.metrics.record(step.op(), job.data.len(), Duration::ZERO);
            }
        }
        if fault == Fault::Crash || self.dead.load(Relaxed) {
            self.dead.store(true, Relaxed);
            let (tx, completion) = Completion::channel(&self.name, jobs.len());
            drop(tx);
            return completion;
        }
        if fault == Fault::Busy {
            let (tx, completion) = Completion::channel(&self.name, jobs.len());
            let _ = tx.send(jobs.iter().map(|_| Err(crate::JobError::Busy(self.name.clone()))).collect());
            return completion;
        }
        let done = self.inner.submit(jobs);
        let name: Arc<str> = Arc::from(self.name.as_str());
        Completion::from_future(async move {
            let mut results = done.await;
            // Its answers are an offload engine's word, as an agent's are.
            for out in results.iter_mut().flatten() {
                out.from_engine = Some(name.clone());
            }
            match fault {
                Fault::Delay(d) => tokio::time::sleep(d).await,
                Fault::WrongHash => {
                    for out in results.iter_mut().flatten() {
                        if let Some(id) = &mut out.chunk_id {
                            id.0[0] ^= 1;
                        }
                        for (_, sum) in &mut out.sums {
                            if let Some(b) = sum.first_mut() {
                                *b ^= 1;
                            }
                        }
                    }
                }
                Fault::CorruptPayload => {
                    for out in results.iter_mut().flatten() {
                        if out.codec != Codec::Raw && !out.data.is_empty() {
                            let mut bytes = out.data.to_vec();
                            let mid = bytes.len() / 2;
                            bytes[mid] ^= 0x55;
                            out.data = bytes.into();
                        }
                    }
                }
                Fault::ChunkIdOf(other) => {
                    for out in results.iter_mut().flatten() {
                        if out.chunk_id.is_some() {
                            out.chunk_id = Some(other);
                        }
                    }
                }
                Fault::None | Fault::Crash | Fault::Busy => {}
            }
            results
        })
    }

    fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    fn available(&self) -> bool {
        !self.dead.load(Relaxed)
    }

    fn incarnation(&self) -> u64 {
        self.incarnation.load(Relaxed)
    }
}
