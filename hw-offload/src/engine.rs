//! The engine API: submit a batch of jobs, await their completions.

use crate::buffer::JobBuffer;
use crate::job::{Job, JobError, JobOutput};
use crate::metrics::EngineMetrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A place where jobs run: the CPU pool, an offload agent, a hardware engine.
pub trait Engine: Send + Sync + 'static {
    /// Short name for logs and metrics labels.
    fn name(&self) -> &str;

    /// Queues `jobs`; the completion yields one result per job, in submission order.
    /// Must not block the caller on the work itself.
    fn submit(&self, jobs: Vec<Job>) -> Completion;

    /// The engine's counters.
    fn metrics(&self) -> &EngineMetrics;

    /// Whether this engine can run `job`'s whole chain. The router sends it nothing else.
    fn supports(&self, job: &Job) -> bool {
        let _ = job;
        true
    }

    /// Whether the engine can take work now (connected, not full). Cheap: the router
    /// asks on every submission.
    fn available(&self) -> bool {
        true
    }

    /// Changes whenever the engine behind this handle may have been replaced (an agent
    /// process that went away and came back, possibly another build): the router then
    /// puts it on probation again. Constant for an engine that cannot be replaced.
    fn incarnation(&self) -> u64 {
        0
    }

    /// A buffer of `len` bytes in memory this engine reads without copying (shared
    /// memory, DMA-able memory), or `None` if it has none to give now. Jobs over bytes
    /// from such a buffer skip the copy into the engine; every other engine still
    /// accepts them like any other bytes.
    fn buffer(&self, len: usize) -> Option<JobBuffer> {
        let _ = len;
        None
    }

    /// The engines behind this one (a router's), for metrics export; empty for a leaf.
    fn children(&self) -> Vec<Arc<dyn Engine>> {
        Vec::new()
    }

    /// A caller found an answer of the engine named `engine` wrong (a chunk id that is
    /// not the hash of its input): a router condemns that engine as if its own check had
    /// failed, and the future it returns ends once the engine's unchecked answers have
    /// been checked again (see [`Engine::wrong_chunks`]). Nothing for a leaf.
    fn distrust(&self, engine: &str, reason: &str) -> Recheck {
        let _ = (engine, reason);
        Box::pin(std::future::ready(()))
    }

    /// Chunk ids whose payloads, delivered by an engine condemned since, were found
    /// wrong when its answers were checked again: chunks stored from them must be
    /// refused or quarantined. Empty for a leaf.
    fn wrong_chunks(&self) -> Vec<crate::ChunkId> {
        Vec::new()
    }

    /// Whether some answers may come from outside the host CPU, and so be marked
    /// [`JobOutput::from_engine`] for the caller to confirm. Callers keep a job's input
    /// to confirm against only then. An engine that does not say is taken to.
    fn runs_off_host(&self) -> bool {
        true
    }
}

/// The recheck [`Engine::distrust`] starts.
pub type Recheck = Pin<Box<dyn Future<Output = ()> + Send>>;

type Results = Vec<Result<JobOutput, JobError>>;

/// The results of one submitted batch, in submission order.
pub struct Completion {
    inner: Inner,
}

enum Inner {
    Channel { engine: String, rx: oneshot::Receiver<Results>, expected: usize },
    Future(Pin<Box<dyn Future<Output = Results> + Send>>),
}

/// A batch's results, filled by index as its jobs finish (on any thread); the last one
/// sends them all to the batch's [`Completion`].
pub(crate) struct Batch {
    results: parking_lot::Mutex<Vec<Option<Result<JobOutput, JobError>>>>,
    remaining: std::sync::atomic::AtomicUsize,
    done: parking_lot::Mutex<Option<oneshot::Sender<Results>>>,
}

impl Batch {
    /// A batch of `count` jobs whose results go to `done`.
    pub(crate) fn new(count: usize, done: oneshot::Sender<Results>) -> Arc<Self> {
        Arc::new(Self {
            results: parking_lot::Mutex::new((0..count).map(|_| None).collect()),
            remaining: std::sync::atomic::AtomicUsize::new(count),
            done: parking_lot::Mutex::new(Some(done)),
        })
    }

    /// Records job `index`'s result.
    pub(crate) fn complete(&self, index: usize, result: Result<JobOutput, JobError>) {
        self.results.lock()[index] = Some(result);
        if self.remaining.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let results = std::mem::take(&mut *self.results.lock());
            let results = results.into_iter().map(|r| r.expect("every job completed")).collect();
            if let Some(tx) = self.done.lock().take() {
                // The submitter may have stopped waiting; nothing to do then.
                let _ = tx.send(results);
            }
        }
    }
}

impl Completion {
    /// A completion and the sender an engine fulfils it with.
    pub fn channel(engine: &str, expected: usize) -> (oneshot::Sender<Results>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { inner: Inner::Channel { engine: engine.to_owned(), rx, expected } })
    }

    /// A completion computed by a future (the router's: await engines, fall back, check).
    pub fn from_future(future: impl Future<Output = Results> + Send + 'static) -> Self {
        Self { inner: Inner::Future(Box::pin(future)) }
    }
}

impl Future for Completion {
    type Output = Vec<Result<JobOutput, JobError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Inner::Channel { engine, rx, expected } => Pin::new(rx).poll(cx).map(|r| match r {
                Ok(results) => results,
                // An engine that drops a batch has died; fail every job of it loudly.
                Err(_) => (0..*expected).map(|_| Err(JobError::EngineGone(engine.clone()))).collect(),
            }),
            Inner::Future(future) => future.as_mut().poll(cx),
        }
    }
}

/// The handle the data path holds. Cheap to clone.
///
/// Which engine runs a job is decided here, so that callers never change when engines
/// are added.
#[derive(Clone)]
pub struct Offload {
    engine: Arc<dyn Engine>,
}

impl Offload {
    /// Runs everything on `engine`.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Self { engine }
    }

    /// The portable default: a CPU pool of `threads` workers (0 = one per core).
    pub fn cpu(threads: usize) -> Self {
        Self::new(Arc::new(crate::CpuEngine::new(threads)))
    }

    /// A buffer of `len` bytes to fill with data that jobs will run over: in the offload
    /// engine's shared memory when one is attached (so jobs need no copy), on the heap
    /// otherwise. The bytes stay valid as long as anything references them, whatever
    /// happens to the engine.
    pub fn buffer(&self, len: usize) -> JobBuffer {
        self.engine.buffer(len).unwrap_or_else(|| JobBuffer::heap(len))
    }

    /// Submits a batch.
    pub fn submit(&self, jobs: Vec<Job>) -> Completion {
        self.engine.submit(jobs)
    }

    /// Submits one job and awaits it.
    pub async fn run(&self, job: Job) -> Result<JobOutput, JobError> {
        let mut results = self.engine.submit(vec![job]).await;
        results.pop().unwrap_or_else(|| Err(JobError::EngineGone(self.engine.name().to_owned())))
    }

    /// Routes between the CPU and offload engines (see [`crate::router`]).
    pub fn routed(router: crate::Router) -> Self {
        Self::new(Arc::new(router))
    }

    /// Reports a wrong answer of the engine named `engine` (see [`Engine::distrust`]).
    pub async fn distrust(&self, engine: &str, reason: &str) {
        self.engine.distrust(engine, reason).await;
    }

    /// Chunk ids found wrong on a recheck (see [`Engine::wrong_chunks`]).
    pub fn wrong_chunks(&self) -> Vec<crate::ChunkId> {
        self.engine.wrong_chunks()
    }

    /// Whether answers may come from outside the host CPU (see [`Engine::runs_off_host`]).
    pub fn runs_off_host(&self) -> bool {
        self.engine.runs_off_host()
    }

    /// The engines behind this handle, for metrics export.
    pub fn engines(&self) -> Vec<Arc<dyn Engine>> {
        let children = self.engine.children();
        if children.is_empty() { vec![self.engine.clone()] } else { children }
    }
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload").field("engine", &self.engine.name()).finish()
    }
}
