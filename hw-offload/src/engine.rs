//! The engine API: submit a batch of jobs, await their completions.

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
}

/// The results of one submitted batch, in submission order.
pub struct Completion {
    engine: String,
    rx: oneshot::Receiver<Vec<Result<JobOutput, JobError>>>,
    expected: usize,
}

impl Completion {
    /// A completion and the sender an engine fulfils it with.
    pub fn channel(engine: &str, expected: usize) -> (oneshot::Sender<Vec<Result<JobOutput, JobError>>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { engine: engine.to_owned(), rx, expected })
    }
}

impl Future for Completion {
    type Output = Vec<Result<JobOutput, JobError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.rx).poll(cx).map(|r| match r {
            Ok(results) => results,
            // An engine that drops a batch has died; fail every job of it loudly.
            Err(_) => (0..this.expected).map(|_| Err(JobError::EngineGone(this.engine.clone()))).collect(),
        })
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

    /// Submits a batch.
    pub fn submit(&self, jobs: Vec<Job>) -> Completion {
        self.engine.submit(jobs)
    }

    /// Submits one job and awaits it.
    pub async fn run(&self, job: Job) -> Result<JobOutput, JobError> {
        let mut results = self.engine.submit(vec![job]).await;
        results.pop().unwrap_or_else(|| Err(JobError::EngineGone(self.engine.name().to_owned())))
    }

    /// The engines behind this handle, for metrics export.
    pub fn engines(&self) -> Vec<Arc<dyn Engine>> {
        vec![self.engine.clone()]
    }
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload").field("engine", &self.engine.name()).finish()
    }
}
