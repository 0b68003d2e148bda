//! The host side: [`AgentEngine`] hands jobs to an offload agent through a shared region
//! and takes the results back.
//!
//! Zero-copy in: a job whose input already lies in the region (a [`crate::JobBuffer`]
//! from [`Engine::buffer`]) is submitted by offset; any other input is copied in.
//!
//! Copy out: the agent is trusted for speed, never for correctness, and it keeps the
//! region mapped writable, so whatever the host checks or hands on must be bytes the
//! agent can no longer change. Outputs (and an in-place output over an input in the
//! region) are copied out of the region when the completion is reaped, before anything
//! looks at them; their range goes back to the pool at once. No page protection can do
//! this instead: the host cannot take write access away from another process's mapping.
//! A VERIFY answer is then confirmed on the host, as the CPU engine does it: the copied
//! output must hash to the expected id (the agent's OK and digest are not enough: it
//! was handed the expected id).
//!
//! Completions are reaped by whoever gets there first: the task awaiting a small batch
//! polls the completion ring for a few microseconds itself (no thread hand-off), and a
//! reaper task, woken by the agent's doorbell through the async runtime's poller, takes
//! everything else. The reaper runs on the runtime that started the engine, so a
//! doorbell wakes one thread (the one that runs the awaiting task next), not a
//! completion thread and then the awaiting one; without a runtime it gets its own
//! thread. It also notices a dead agent (its socket closes), fails what was in flight,
//! and re-attaches when the agent is back.

use super::pool::{Pool, Slot};
use super::ring::{self, Cqe, Layout, Sqe, op, status};
use super::shm::SharedRegion;
use crate::Codec;
use crate::buffer::JobBuffer;
use crate::engine::{Batch, Completion, Engine};
use crate::job::{Job, JobError, JobOutput, Step};
use crate::kernels::digest::{ChunkId, SumAlgo};
use crate::metrics::{EngineMetrics, OpKind, thread_cpu_ns};
use bytes::Bytes;
use parking_lot::Mutex;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, oneshot};

/// How the host attaches to an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's Unix socket.
    pub socket: PathBuf,
    /// Where the shared region file is created (then unlinked once the agent has it).
    pub shm_dir: PathBuf,
    /// Shared region size: rings plus the data area (job inputs and outputs, and the
    /// buffers [`Engine::buffer`] lends).
    pub region_bytes: u64,
    /// Entries per ring (a power of two): the most jobs in flight.
    pub ring_entries: u32,
    /// How often to try to attach while the agent is away.
    pub reattach_every: Duration,
}

impl AgentConfig {
    /// Defaults for an agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            shm_dir: PathBuf::from("/dev/shm"),
            // 64 MiB: an ingest's 64 chunk jobs in flight at the default chunk sizes
            // (64 KiB average, 256 KiB at most) and its segment buffers with room to
            // spare, or two of the largest (16 MiB) chunks. Larger chunks need more:
            // jobs that do not fit rerun on the CPU.
            region_bytes: 64 << 20,
            ring_entries: 256,
            reattach_every: Duration::from_millis(200),
        }
    }
}

type Results = Vec<Result<JobOutput, JobError>>;

/// What the host remembers of a job in flight.
struct InFlight {
    batch: Arc<Batch>,
    index: usize,
    /// The job's input; when it lies in the region, holding it keeps its range from
    /// being reused while the agent reads it.
    input: Bytes,
    /// Whether `input` lies in the region (a zero-copy input), where the agent could
    /// still write it.
    input_shared: bool,
    input_codec: Codec,
    digest: DigestKind,
    decode_codec: Option<Codec>,
    /// The input's copy in the region, when it was not there already.
    _input_copy: Option<Slot>,
    /// Where the agent writes a changed output, and how much it may write.
    output: Option<Slot>,
    out_cap: u32,
    op: OpKind,
}

/// The jobs in flight on one link. A job's `user_data` is its slot (low 32 bits) and the
/// slot's generation (high 32 bits), so a completion finds its job without hashing and a
/// stale or forged `user_data` matches nothing. Freed slots are reused last-in first-out,
/// which keeps the few in use warm in the cache.
#[derive(Default)]
struct InFlightTable {
    slots: Vec<(u32, Option<InFlight>)>,
    free: Vec<u32>,
    len: usize,
}

impl InFlightTable {
    fn len(&self) -> usize {
        self.len
    }

    fn insert(&mut self, job: InFlight) -> u64 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let (generation, slot) = &mut self.slots[index as usize];
        *generation = generation.wrapping_add(1);
        *slot = Some(job);
        self.len += 1;
        (u64::from(*generation) << 32) | u64::from(index)
    }

    fn remove(&mut self, user_data: u64) -> Option<InFlight> {
        let index = user_data as u32;
        let (generation, slot) = self.slots.get_mut(index as usize)?;
        if u64::from(*generation) != user_data >> 32 {
            return None;
        }
        let job = slot.take()?;
        self.free.push(index);
        self.len -= 1;
        Some(job)
    }

    /// Takes every job; the slots keep their generations, so no user_data issued before
    /// matches a job issued after.
    fn drain(&mut self) -> Vec<InFlight> {
        self.len = 0;
        let mut jobs = Vec::new();
        for (index, (_, slot)) in self.slots.iter_mut().enumerate() {
            if let Some(job) = slot.take() {
                jobs.push(job);
                self.free.push(index as u32);
            }
        }
        jobs
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DigestKind {
    None,
    ChunkId,
    Verify(ChunkId),
    Sum(SumAlgo),
}

/// Why a job was refused when the ring or the data area is full (not a failure).
const BUSY: &str = "ring or shared data area full";

type Reaped = (Arc<Batch>, usize, OpKind, Result<JobOutput, JobError>);

/// One attachment to the agent.
struct Link {
    /// Which attachment this is (1 for the first), so the reaper knows when its doorbell
    /// registration belongs to an earlier one.
    generation: u64,
    pool: Arc<Pool>,
    layout: Layout,
    stream: UnixStream,
    sq_tail: u32,
    cq_head: u32,
    in_flight: InFlightTable,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Ranges still referenced (outputs, buffers) stay valid; nothing new goes there.
        self.pool.retire();
    }
}

struct Shared {
    name: String,
    /// The name once more, handed to every output as [`JobOutput::from_engine`] (a
    /// reference count, not an allocation per job).
    word: Arc<str>,
    config: AgentConfig,
    /// The attachment, while there is one.
    link: Mutex<Option<Link>>,
    connected: AtomicBool,
    attachments: AtomicU64,
    stop: AtomicBool,
    /// Ends the reaper's wait between attachment attempts when the engine is dropped.
    stopped: Notify,
    metrics: EngineMetrics,
    /// Tasks polling the completion ring themselves right now; while there are any, the
    /// agent need not ring the reaper.
    reapers: AtomicU32,
    /// Input bytes copied into the region (inputs that were not in it already).
    copied_in: AtomicU64,
    /// Heap buffers that outputs are copied out into, recycled.
    out_buffers: Arc<OutBuffers>,
}

impl Shared {
    /// Takes whatever completions are posted and hands them to their batches.
    fn reap_now(&self) -> usize {
        let done = {
            let mut link = self.link.lock();
            let Some(link) = link.as_mut() else { return 0 };
            link.reap(&self.word, &self.metrics, &self.out_buffers)
        };
        let count = done.len();
        for (batch, index, _, result) in done {
            batch.complete(index, result);
        }
        count
    }

    /// Asks the agent for doorbells again (unless a task is polling) and reports whether
    /// completions arrived meanwhile; pairs with the agent's fence after publishing its
    /// tail, so a completion is either seen here or rung for.
    fn arm_doorbell(&self, link: &Link) -> bool {
        if self.reapers.load(Ordering::Acquire) == 0 {
            link.pool.region().atomic_u32(ring::off::HOST_NEED_WAKEUP).store(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        link.pool.region().atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire) != link.cq_head
    }
}

/// An engine that runs jobs in an offload agent process.
pub struct AgentEngine {
    shared: Arc<Shared>,
    /// The reaper's own thread, when the engine was started outside an async runtime.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentEngine {
    /// Starts the reaper, which attaches to the agent now if it is there and keeps
    /// trying if it is not; jobs submitted while detached fail as
    /// [`JobError::Unavailable`] (the router runs them on the CPU). Called inside a Tokio
    /// runtime, the reaper is a task on it (a doorbell then wakes one thread, the one that
    /// runs the awaiting task), and that runtime must have I/O and timers enabled
    /// (`Builder::enable_all`); called outside any runtime, it runs on a thread of its own.
    pub fn start(name: &str, config: AgentConfig) -> std::io::Result<Self> {
        Layout::plan(config.region_bytes, config.ring_entries)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            word: Arc::from(name),
            config,
            link: Mutex::new(None),
            connected: AtomicBool::new(false),
            attachments: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stopped: Notify::new(),
            metrics: EngineMetrics::default(),
            reapers: AtomicU32::new(0),
            copied_in: AtomicU64::new(0),
            out_buffers: Arc::default(),
        });
        // Attach before returning, so a daemon that starts with its agent running uses
        // it from the first job.
        if let Err(e) = attach(&shared) {
            tracing::warn!(engine = name, socket = %shared.config.socket.display(), error = %e,
                "offload agent not reachable; running on the CPU until it is");
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reaper(shared.clone()));
            return Ok(Self { shared, thread: None });
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name(format!("offload-{name}-cq")).spawn({
            let shared = shared.clone();
            move || runtime.block_on(reaper(shared))
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Whether an agent is attached now.
    pub fn is_attached(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// How many times an agent was attached (re-attachments count).
    pub fn attachments(&self) -> u64 {
        self.shared.attachments.load(Ordering::Acquire)
    }

    /// Input bytes copied into the shared region so far: the inputs of jobs that did
    /// not come from [`Engine::buffer`] (or an earlier job's output).
    pub fn bytes_copied_in(&self) -> u64 {
        self.shared.copied_in.load(Ordering::Relaxed)
    }

    /// The agent's own CPU time and job count as it last published them.
    pub fn agent_counters(&self) -> Option<(u64, u64)> {
        let link = self.shared.link.lock();
        let link = link.as_ref()?;
        let region = link.pool.region();
        Some((
            region.atomic_u64(ring::off::AGENT_JOBS).load(Ordering::Relaxed),
            region.atomic_u64(ring::off::AGENT_CPU_NS).load(Ordering::Relaxed),
        ))
    }
}

impl Drop for AgentEngine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stopped.notify_one();
        // The agent sees its socket close now, whenever the reaper task next runs; the
        // shutdown also ends the reaper's wait for a doorbell.
        let link = self.shared.link.lock().take();
        if let Some(link) = link {
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Registers a descriptor with the current runtime's poller, for reading only: the
/// host also writes doorbells to the agent on this socket, and each one the agent reads
/// would otherwise wake the poller as the socket turns writable again.
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor and nothing replaces or closes it while
    // it is registered; it is closed only when the `AsyncFd` drops.
    unsafe { Ok(AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?) }
}

/// The chain as agent op codes, or `None` if the agent protocol cannot express it.
struct Plan {
    ops: [u8; ring::MAX_OPS],
    level: i32,
    plain_len: u32,
    expected: [u8; 32],
    digest: DigestKind,
    decode_codec: Option<Codec>,
    out_cap: u64,
}

fn plan(job: &Job) -> Option<Plan> {
    let mut p = Plan {
        ops: [op::END; ring::MAX_OPS],
        level: 0,
        plain_len: 0,
        expected: [0; 32],
        digest: DigestKind::None,
        decode_codec: None,
        out_cap: 0,
    };
    let mut codec = job.codec;
    let mut len = job.data.len() as u64;
    let mut n = 0;
    if len > ring::MAX_JOB_BYTES as u64 || job.steps.len() > ring::MAX_OPS {
        return None;
    }
    for step in &job.steps {
        let code = match *step {
            Step::Decompress { codec: source, plain_len } if source == codec && n == 0 => {
                p.plain_len = plain_len;
                p.decode_codec = Some(source);
                codec = Codec::Raw;
                len = plain_len as u64;
                match source {
                    Codec::Raw => op::DECOMPRESS_RAW,
                    Codec::Zstd => {
                        p.out_cap = p.out_cap.max(len);
                        op::DECOMPRESS_ZSTD
                    }
                    Codec::Lz4 => {
                        p.out_cap = p.out_cap.max(len);
                        op::DECOMPRESS_LZ4
                    }
                }
            }
            // One digest per entry: the completion has one digest slot.
            Step::ChunkId if codec == Codec::Raw && p.digest == DigestKind::None => {
                p.digest = DigestKind::ChunkId;
                op::BLAKE3
            }
            Step::Verify(id) if codec == Codec::Raw && p.digest == DigestKind::None => {
                p.digest = DigestKind::Verify(id);
                p.expected = id.0;
                op::VERIFY
            }
            Step::Sum(algo) if codec == Codec::Raw && p.digest == DigestKind::None => {
                p.digest = DigestKind::Sum(algo);
                match algo {
                    SumAlgo::Md5 => op::MD5,
                    SumAlgo::Crc32 => op::CRC32,
                    SumAlgo::Crc32c => op::CRC32C,
                    SumAlgo::Crc64Nvme => op::CRC64NVME,
                    SumAlgo::Sha256 => op::SHA256,
                }
            }
            // A VERIFY answer is confirmed by hashing the output on the host, which
            // must then be the verified plain bytes.
            Step::Compress { codec: target, level }
                if codec == Codec::Raw && !matches!(p.digest, DigestKind::Verify(_)) =>
            {
                // Compression is kept only when it shrinks the data, so the input length
                // bounds the output.
                p.out_cap = p.out_cap.max(len);
                match target {
                    Codec::Raw => continue,
                    Codec::Zstd => {
                        p.level = level;
                        codec = Codec::Zstd;
                        op::COMPRESS_ZSTD
                    }
                    Codec::Lz4 => {
                        codec = Codec::Lz4;
                        op::COMPRESS_LZ4
                    }
                }
            }
            _ => return None,
        };
        p.ops[n] = code;
        n += 1;
    }
    Some(p)
}

impl Engine for AgentEngine {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn submit(&self, jobs: Vec<Job>) -> Completion {
        let count = jobs.len();
        // Host CPU on the submission path (here, and reaping in `AgentCompletion`) is
        // measured with the monotonic clock: these sections never block, so their wall
        // time is their CPU time (more if the thread is preempted). The thread's CPU
        // clock is a system call of 0.6 µs here, several µs under load: more than a
        // small job's whole round trip.
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if jobs.is_empty() {
            let _ = tx.send(Vec::new());
            return Completion::from_future(async move { rx.await.unwrap_or_default() });
        }
        let batch = Batch::new(count, tx);
        let bytes: usize = jobs.iter().map(|j| j.data.len()).sum();
        let mut refused: Vec<(usize, &str)> = Vec::new();
        let mut ops = Vec::with_capacity(count);
        let mut copied = 0;
        {
            let mut link = self.shared.link.lock();
            for (index, job) in jobs.into_iter().enumerate() {
                let op = job.steps.last().map_or(OpKind::ChunkId, Step::op);
                ops.push(op);
                let Some(link) = link.as_mut() else {
                    refused.push((index, "agent not attached"));
                    continue;
                };
                match link.push(job, batch.clone(), index) {
                    Ok(bytes) => copied += bytes,
                    Err(reason) => refused.push((index, reason)),
                }
            }
            if let Some(link) = link.as_mut() {
                link.publish();
            }
        }
        if copied > 0 {
            self.shared.copied_in.fetch_add(copied, Ordering::Relaxed);
        }
        for (index, reason) in refused {
            let err = if reason == BUSY {
                JobError::Busy(self.shared.name.clone())
            } else {
                JobError::Unavailable { engine: self.shared.name.clone(), reason: reason.into() }
            };
            batch.complete(index, Err(err));
        }
        let spent = started.elapsed().as_nanos() as u64 / count as u64;
        for &op in &ops {
            self.shared.metrics.record_host_cpu(op, spent);
        }
        Completion::from_future(AgentCompletion {
            rx,
            shared: self.shared.clone(),
            expected: count,
            reap_for: reap_window(count, bytes),
            ops,
        })
    }

    fn buffer(&self, len: usize) -> Option<JobBuffer> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return None;
        }
        let pool = self.shared.link.lock().as_ref()?.pool.clone();
        pool.buffer(len as u64).map(JobBuffer::shared)
    }

    fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    fn supports(&self, job: &Job) -> bool {
        plan(job).is_some()
    }

    fn available(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    fn incarnation(&self) -> u64 {
        self.attachments()
    }
}

/// Small batches are reaped by the awaiting task itself if the agent answers within
/// this long: a thread hand-off (doorbell, poller, task wake-up) costs 10 to
/// 50 µs on a shared machine, far more than a small job.
const REAP_SPIN_MAX: Duration = Duration::from_micros(50);
/// Batches with more input than this take longer on the agent than the task should
/// poll for; they are reaped by the reaper task.
const REAP_SPIN_MAX_BYTES: usize = 64 << 10;

/// How long the task awaiting a batch of `jobs` jobs and `bytes` bytes polls for its
/// completions before relying on the reaper: about what a polling agent
/// needs for small jobs (a few µs, plus roughly 1 µs per KiB for hash and compress),
/// and not at all for large batches.
fn reap_window(jobs: usize, bytes: usize) -> Duration {
    if jobs == 0 || bytes > REAP_SPIN_MAX_BYTES {
        return Duration::ZERO;
    }
    let micros = 5 + 2 * jobs as u64 + (bytes as u64 >> 10);
    Duration::from_micros(micros).min(REAP_SPIN_MAX)
}

/// The results of one batch: reaped by the awaiting task itself when the batch is
/// small and the agent is quick, otherwise delivered by the reaper.
struct AgentCompletion {
    rx: oneshot::Receiver<Results>,
    shared: Arc<Shared>,
    expected: usize,
    /// How long the first poll may look for the completions itself (zero: not at all).
    reap_for: Duration,
    /// The jobs' operations, which the reaping time is charged to.
    ops: Vec<OpKind>,
}

impl AgentCompletion {
    /// The results if they are in (or the engine is gone).
    fn try_take(&mut self) -> Option<Results> {
        match self.rx.try_recv() {
            Ok(results) => Some(results),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(self.gone()),
        }
    }

    fn gone(&self) -> Results {
        (0..self.expected).map(|_| Err(JobError::EngineGone(self.shared.name.clone()))).collect()
    }

    /// Polls the completion ring for up to `reap_for`, reaping what arrives.
    fn reap_here(&mut self) -> Option<Results> {
        let shared = self.shared.clone();
        let started = Instant::now();
        let pool = {
            let mut link = shared.link.lock();
            let link = link.as_mut()?;
            // While this task polls, the agent need not ring: we look at the tail.
            shared.reapers.fetch_add(1, Ordering::AcqRel);
            link.pool.region().atomic_u32(ring::off::HOST_NEED_WAKEUP).store(0, Ordering::Relaxed);
            link.pool.clone()
        };
        let deadline = Instant::now() + self.reap_for;
        let mut results = None;
        loop {
            // Another task (or the reaper) may have taken ours: look anyway.
            shared.reap_now();
            if let Some(r) = self.try_take() {
                results = Some(r);
                break;
            }
            // Bounded by the deadline even if the tail moves with nothing to reap (an
            // impossible tail is left for the end of the socket to settle).
            let left = deadline.saturating_duration_since(Instant::now());
            let head = pool.region().atomic_u32(ring::off::CQ_HEAD).load(Ordering::Relaxed);
            if left.is_zero() || !spin_until(pool.region(), ring::off::CQ_TAIL, head, left) {
                break;
            }
        }
        if shared.reapers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last task to stop polling asks for doorbells again, then takes what
            // arrived while no one would have been rung.
            let arrived = shared.link.lock().as_ref().is_some_and(|link| shared.arm_doorbell(link));
            if arrived {
                shared.reap_now();
            }
        }
        let spent = started.elapsed().as_nanos() as u64 / self.ops.len().max(1) as u64;
        for &op in &self.ops {
            shared.metrics.record_host_cpu(op, spent);
        }
        results.or_else(|| self.try_take())
    }
}

impl Future for AgentCompletion {
    type Output = Results;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Results> {
        let this = &mut *self;
        if let Some(results) = this.try_take() {
            return Poll::Ready(results);
        }
        if !this.reap_for.is_zero() {
            let reaped = this.reap_here();
            // Only the first poll looks itself: later ones follow the reaper's
            // wake-up, which brings the results.
            this.reap_for = Duration::ZERO;
            if let Some(results) = reaped {
                return Poll::Ready(results);
            }
        }
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(Ok(results)) => Poll::Ready(results),
            Poll::Ready(Err(_)) => Poll::Ready(this.gone()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Link {
    /// Writes a job's entry (not yet visible to the agent), copying its input into the
    /// region unless it lies there already; returns the bytes copied.
    fn push(&mut self, job: Job, batch: Arc<Batch>, index: usize) -> Result<u64, &'static str> {
        let plan = plan(&job).ok_or("chain not supported by the agent protocol")?;
        let region = self.pool.region();
        let head = region.atomic_u32(ring::off::SQ_HEAD).load(Ordering::Acquire);
        if self.sq_tail.wrapping_sub(head) >= self.layout.sq_entries
            || self.in_flight.len() >= self.layout.cq_entries as usize
        {
            return Err(BUSY);
        }
        let mut input_shared = false;
        let (in_off, input_copy) = match self.pool.data_offset_of(&job.data) {
            _ if job.data.is_empty() => (0, None),
            Some(offset) => {
                input_shared = true;
                (offset, None)
            }
            None => {
                let slot = self.pool.alloc(job.data.len() as u64).ok_or(BUSY)?;
                slot.write(0, &job.data);
                (slot.data_offset(), Some(slot))
            }
        };
        let copied = if input_copy.is_some() { job.data.len() as u64 } else { 0 };
        let output = match plan.out_cap {
            0 => None,
            cap => Some(self.pool.alloc(cap).ok_or(BUSY)?),
        };
        let out_off = output.as_ref().map_or(0, Slot::data_offset);
        let in_len = job.data.len() as u32;
        let user_data = self.in_flight.insert(InFlight {
            batch,
            index,
            input: job.data,
            input_shared,
            input_codec: job.codec,
            digest: plan.digest,
            decode_codec: plan.decode_codec,
            _input_copy: input_copy,
            output,
            out_cap: plan.out_cap as u32,
            op: job.steps.last().map_or(OpKind::ChunkId, Step::op),
        });
        let sqe = Sqe {
            user_data,
            in_off,
            in_len,
            out_cap: plan.out_cap as u32,
            out_off,
            ops: plan.ops,
            level: plan.level,
            plain_len: plan.plain_len,
            expected: plan.expected,
        };
        region.write(self.layout.sqe_at(self.sq_tail), &sqe.encode()).expect("slot inside the ring");
        self.sq_tail = self.sq_tail.wrapping_add(1);
        Ok(copied)
    }

    /// Makes the new entries visible and rings the doorbell if the agent sleeps.
    fn publish(&mut self) {
        let region = self.pool.region();
        let tail = region.atomic_u32(ring::off::SQ_TAIL);
        if tail.load(Ordering::Relaxed) == self.sq_tail {
            return;
        }
        tail.store(self.sq_tail, Ordering::Release);
        // Pairs with the agent's fence between setting need_wakeup and re-reading the
        // tail: one of us sees the other's store, so no wakeup is lost. Taking the flag
        // (not just reading it) rings once per sleep: the submissions that follow before
        // the agent is up find it cleared.
        fence(Ordering::SeqCst);
        let need_wakeup = region.atomic_u32(ring::off::AGENT_NEED_WAKEUP);
        if need_wakeup.swap(0, Ordering::Relaxed) != 0 {
            loop {
                match (&self.stream).write(&[1]) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A full socket buffer already holds a wakeup.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // Not rung: leave the flag for the next publication to try again (a
                    // closed socket is the reaper's to notice).
                    Err(_) => {
                        need_wakeup.store(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }

    /// Whether the agent published a completion tail it could not have produced (more
    /// entries than the ring holds ahead of our head).
    fn impossible_tail(&self) -> bool {
        let tail = self.pool.region().atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire);
        tail.wrapping_sub(self.cq_head) > self.layout.cq_entries
    }

    /// Takes every posted completion; returns the batches to complete.
    fn reap(&mut self, name: &Arc<str>, metrics: &EngineMetrics, buffers: &Arc<OutBuffers>) -> Vec<Reaped> {
        let region = self.pool.region();
        let tail = region.atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire);
        let posted = tail.wrapping_sub(self.cq_head);
        if posted == 0 || posted > self.layout.cq_entries {
            // Nothing new, or a tail the agent could not have produced (the reaper
            // detaches on seeing it).
            return Vec::new();
        }
        let mut done = Vec::with_capacity(posted as usize);
        while self.cq_head != tail {
            let mut raw = [0u8; ring::CQE_LEN];
            region.read(self.layout.cqe_at(self.cq_head), &mut raw).expect("slot inside the ring");
            self.cq_head = self.cq_head.wrapping_add(1);
            let cqe = Cqe::decode(&raw);
            let Some(mut job) = self.in_flight.remove(cqe.user_data) else {
                tracing::warn!(engine = &**name, user_data = cqe.user_data, "completion for no job in flight; ignored");
                continue;
            };
            let result = result(name, &cqe, &mut job, buffers);
            if cqe.status != status::OK {
                metrics.record_op_error(job.op);
            } else {
                metrics.record(job.op, job.input.len(), Duration::from_nanos(cqe.agent_ns as u64));
            }
            done.push((job.batch, job.index, job.op, result));
        }
        region.atomic_u32(ring::off::CQ_HEAD).store(self.cq_head, Ordering::Release);
        done
    }
}

/// Turns a completion into the job's result, checking everything the agent says. The
/// output is copied out of the region first (see the module doc): every check below and
/// every later use sees bytes the agent can no longer change.
fn result(name: &Arc<str>, cqe: &Cqe, job: &mut InFlight, buffers: &Arc<OutBuffers>) -> Result<JobOutput, JobError> {
    let malformed = |what: &str| JobError::Unavailable {
        engine: name.to_string(),
        reason: format!("agent sent a malformed completion: {what}"),
    };
    let digest_len = cqe.digest_len as usize;
    if digest_len > 32 {
        return Err(malformed("digest length"));
    }
    let digest = &cqe.digest[..digest_len];
    match cqe.status {
        status::OK => {}
        status::CORRUPT => {
            let DigestKind::Verify(expected) = job.digest else { return Err(malformed("CORRUPT without VERIFY")) };
            let actual = ChunkId(digest.try_into().map_err(|_| malformed("digest length"))?);
            return Err(JobError::Corrupt { expected, actual });
        }
        status::DECODE_FAILED => {
            let codec = job.decode_codec.ok_or_else(|| malformed("DECODE_FAILED without a decode step"))?;
            return Err(JobError::Decode { codec, reason: "the offload agent could not decode it".into() });
        }
        other => {
            return Err(JobError::Unavailable { engine: name.to_string(), reason: format!("agent status {other}") });
        }
    }
    let codec = Codec::from_tag(cqe.out_codec).ok_or_else(|| malformed("codec"))?;
    let data = if cqe.out_in_place == 1 {
        if codec != job.input_codec {
            return Err(malformed("in-place output with another codec"));
        }
        // An input in the region is as writable by the agent as an output.
        if job.input_shared { buffers.copy(&job.input) } else { job.input.clone() }
    } else {
        if cqe.out_len > job.out_cap {
            return Err(malformed("output longer than its buffer"));
        }
        let output = job.output.take().ok_or_else(|| malformed("output for a job without an output buffer"))?;
        // Copied out, and the range given back to the pool now (`output` drops here).
        buffers.copy(output.bytes(cqe.out_len as u64))
    };
    let mut output = JobOutput::start(data, codec);
    // The agent's word, except a verified output, which the host hashed below.
    if !matches!(job.digest, DigestKind::Verify(_)) {
        output.from_engine = Some(name.clone());
    }
    match job.digest {
        DigestKind::None => {}
        DigestKind::ChunkId => {
            output.chunk_id = Some(ChunkId(digest.try_into().map_err(|_| malformed("digest length"))?));
        }
        DigestKind::Verify(expected) => {
            // The answer decides what is served: the host hashes the frozen bytes itself.
            // A digest that disagrees with an OK status is a wrong answer too; both come
            // back as `Corrupt`, which the router settles on the CPU (and condemns the
            // engine if the CPU finds the data right).
            let reported = ChunkId(digest.try_into().map_err(|_| malformed("digest length"))?);
            if codec != Codec::Raw {
                return Err(malformed("VERIFY answered with an encoded output"));
            }
            let actual = ChunkId::of(&output.data);
            if actual != expected {
                return Err(JobError::Corrupt { expected, actual });
            }
            if reported != expected {
                return Err(JobError::Corrupt { expected, actual: reported });
            }
            output.chunk_id = Some(actual);
        }
        DigestKind::Sum(algo) => output.sums.push((algo, digest.to_vec())),
    }
    Ok(output)
}

/// Outputs copied out of the region go to heap buffers that come back here when the
/// last reference to them drops. Fresh allocations of outputs' sizes (hundreds of KiB)
/// are often mapped and unmapped by the allocator each time, and faulting their pages in
/// costs far more than the copy itself.
#[derive(Default)]
pub(crate) struct OutBuffers {
    free: Mutex<(Vec<Vec<u8>>, u64)>,
}

/// Free bytes [`OutBuffers`] keeps: about what the jobs in flight of an ingest produce.
const OUT_BUFFERS_KEPT_BYTES: u64 = 32 << 20;

impl OutBuffers {
    /// `src`, copied into a recycled buffer (or a new one).
    fn copy(self: &Arc<Self>, src: &[u8]) -> Bytes {
        if src.is_empty() {
            return Bytes::new();
        }
        let recycled = {
            let mut free = self.free.lock();
            // Not one much larger than needed: a small output would pin it.
            let fits = |b: &Vec<u8>| (src.len()..=src.len().saturating_mul(4)).contains(&b.capacity());
            let found = free.0.iter().rposition(fits);
            found.map(|i| {
                let buffer = free.0.swap_remove(i);
                free.1 -= buffer.capacity() as u64;
                buffer
            })
        };
        let mut buffer = recycled.unwrap_or_else(|| Vec::with_capacity(src.len()));
        buffer.clear();
        buffer.extend_from_slice(src);
        Bytes::from_owner(OutBuffer { buffer, home: Arc::downgrade(self) })
    }
}

/// An output's bytes; its buffer goes back to [`OutBuffers`] when dropped.
struct OutBuffer {
    buffer: Vec<u8>,
    home: std::sync::Weak<OutBuffers>,
}

impl AsRef<[u8]> for OutBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for OutBuffer {
    fn drop(&mut self) {
        let Some(home) = self.home.upgrade() else { return };
        let mut free = home.free.lock();
        let size = self.buffer.capacity() as u64;
        if free.1 + size <= OUT_BUFFERS_KEPT_BYTES {
            free.1 += size;
            free.0.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// Connects, creates a region, hands it over, and installs the link.
fn attach(shared: &Shared) -> std::io::Result<()> {
    let config = &shared.config;
    let mut stream = UnixStream::connect(&config.socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let layout = Layout::plan(config.region_bytes, config.ring_entries)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let path = config.shm_dir.join(format!(
        "clusster-offload-{}-{}-{:016x}",
        std::process::id(),
        shared.attachments.load(Ordering::Relaxed),
        rand_u64()
    ));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    // Whatever happens next, the name goes: both sides keep their mappings.
    let _unlink = Unlink(path.clone());
    file.set_len(config.region_bytes)?;
    let region = SharedRegion::map(&file, config.region_bytes as usize)?;
    layout.write_header(&region);
    let path_bytes = path.as_os_str().as_encoded_bytes();
    let mut hello = Vec::with_capacity(24 + path_bytes.len());
    hello.extend_from_slice(&ring::HELLO_MAGIC);
    hello.extend_from_slice(&ring::VERSION.to_le_bytes());
    hello.extend_from_slice(&(path_bytes.len() as u32).to_le_bytes());
    hello.extend_from_slice(&config.region_bytes.to_le_bytes());
    hello.extend_from_slice(path_bytes);
    stream.write_all(&hello)?;
    let mut ack = [0u8; 16];
    stream.read_exact(&mut ack)?;
    let code = u32::from_le_bytes(ack[8..12].try_into().expect("4 bytes"));
    if ack[0..8] != ring::ACK_MAGIC || code != 0 {
        return Err(std::io::Error::other(format!("offload agent refused the region (code {code})")));
    }
    stream.set_read_timeout(None)?;
    stream.set_nonblocking(true)?;
    let link = Link {
        generation: shared.attachments.load(Ordering::Relaxed) + 1,
        pool: Pool::new(region, layout.data_off, layout.data_len),
        layout,
        stream,
        sq_tail: 0,
        cq_head: 0,
        in_flight: InFlightTable::default(),
    };
    *shared.link.lock() = Some(link);
    shared.attachments.fetch_add(1, Ordering::AcqRel);
    shared.connected.store(true, Ordering::Release);
    tracing::info!(engine = shared.name, socket = %config.socket.display(), "offload agent attached");
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(thread_cpu_ns());
    h.finish()
}

/// The doorbell of one attachment, registered with the runtime's poller: a duplicate of
/// the link's socket, so the link's own handle stays a plain non-blocking socket that
/// submitters write to from any thread.
struct Doorbell {
    generation: u64,
    fd: AsyncFd<OwnedFd>,
}

/// Takes the completions that nobody polls for, hands them to their batches, and keeps
/// the link: detaches when the agent goes (or misbehaves) and attaches again.
async fn reaper(shared: Arc<Shared>) {
    // If the runtime drops this task (it shut down while the engine lives on), nothing
    // would reap any more: detach, so that jobs in flight fail over to the CPU instead of
    // waiting forever and new ones are not sent.
    struct DetachOnDrop(Arc<Shared>);
    impl Drop for DetachOnDrop {
        fn drop(&mut self) {
            if !self.0.stop.load(Ordering::Acquire) {
                tracing::warn!(
                    engine = self.0.name,
                    "offload reaper stopped with its runtime; the agent stays detached"
                );
            }
            detach(&self.0);
        }
    }
    let guard = DetachOnDrop(shared);
    let shared = &guard.0;
    let mut doorbell: Option<Doorbell> = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if !shared.connected.load(Ordering::Acquire) {
            doorbell = None;
            tokio::select! {
                _ = tokio::time::sleep(shared.config.reattach_every) => {}
                _ = shared.stopped.notified() => return,
            }
            // Attaching waits for the agent's answer (up to its 5 s read timeout).
            let attaching = shared.clone();
            let _ = tokio::task::spawn_blocking(move || attach(&attaching)).await;
            continue;
        }
        // Monotonic clock, as on the submission path: this section does not block.
        let started = Instant::now();
        let (done, wait, broken) = {
            let mut guard = shared.link.lock();
            let Some(link) = guard.as_mut() else { continue };
            if doorbell.as_ref().is_none_or(|d| d.generation != link.generation) {
                doorbell = match link.stream.try_clone().and_then(|s| register(OwnedFd::from(s))) {
                    Ok(fd) => Some(Doorbell { generation: link.generation, fd }),
                    Err(e) => {
                        // Without a doorbell no completion would ever be taken.
                        drop(guard);
                        tracing::warn!(engine = shared.name, error = %e, "cannot wait for the offload agent's doorbell; detaching");
                        detach(shared);
                        continue;
                    }
                };
            }
            let done = link.reap(&shared.word, &shared.metrics, &shared.out_buffers);
            let broken = done.is_empty() && link.impossible_tail();
            // Nothing to take: ask for a doorbell, look once more, then wait. No polling
            // here: small batches are polled for by the tasks awaiting them, and large
            // ones take far longer than a doorbell.
            let wait = done.is_empty() && !broken && !shared.arm_doorbell(link);
            (done, wait, broken)
        };
        if broken {
            // Nothing could ever be reaped again: drop the link (its jobs rerun on the
            // CPU, the agent sees the socket close) and attach afresh later.
            tracing::warn!(engine = shared.name, "offload agent wrote an impossible completion tail; detaching");
            detach(shared);
            continue;
        }
        if !done.is_empty() {
            let count = done.len() as u64;
            let mut per_op = [0u64; OpKind::ALL.len()];
            for (batch, index, op, result) in done {
                per_op[op as usize] += 1;
                batch.complete(index, result);
            }
            // Completion-side host time (reaping, copying out, waking the submitter),
            // spread over the jobs reaped.
            let per_job = started.elapsed().as_nanos() as u64 / count;
            for op in OpKind::ALL {
                let jobs = per_op[op as usize];
                if jobs > 0 {
                    shared.metrics.record_host_cpu(op, per_job * jobs);
                }
            }
            // Look again at once (more may have arrived meanwhile), but let the tasks just
            // woken run first once this task has used its share of the runtime: an
            // unconditional yield costs the runtime a poll of its driver, a system call.
            tokio::task::coop::consume_budget().await;
            continue;
        }
        if !wait {
            continue;
        }
        let Some(bell) = doorbell.as_ref() else { continue };
        let alive = match bell.fd.readable().await {
            Ok(mut ready) => match drain_doorbell(ready.get_inner()) {
                // Drained (or woken with nothing to read): wait for the next event. A byte
                // that arrived after the drain is a newer event, which this does not clear.
                Ok(alive) => {
                    ready.clear_ready();
                    alive
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        if let Some(link) = shared.link.lock().as_ref() {
            link.pool.region().atomic_u32(ring::off::HOST_NEED_WAKEUP).store(0, Ordering::Relaxed);
        }
        if !alive {
            detach(shared);
        }
    }
}

/// Polls `word` of `region` until it differs from `seen` or `spin` passes.
pub(crate) fn spin_until(region: &SharedRegion, word: usize, seen: u32, spin: Duration) -> bool {
    let started = std::time::Instant::now();
    let atom = region.atomic_u32(word);
    loop {
        for _ in 0..64 {
            if atom.load(Ordering::Acquire) != seen {
                return true;
            }
            std::hint::spin_loop();
        }
        if started.elapsed() >= spin {
            return false;
        }
    }
}

/// Reads every doorbell byte there is: `Ok(false)` when the agent's end is closed, an
/// error when the socket broke.
fn drain_doorbell(fd: &OwnedFd) -> std::io::Result<bool> {
    let mut buf = [0u8; 64];
    loop {
        match read_fd(fd, &mut buf) {
            Ok(0) => return Ok(false),
            // A short read drained the socket: no second call just to hear WouldBlock.
            Ok(n) if n < buf.len() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: reading into a buffer of the length given, from a descriptor we own.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// Drops the link and fails everything that was in flight on it.
fn detach(shared: &Shared) {
    let link = {
        let mut link = shared.link.lock();
        shared.connected.store(false, Ordering::Release);
        link.take()
    };
    let Some(mut link) = link else { return };
    if shared.stop.load(Ordering::Acquire) {
        // The engine is being dropped: closing the link is expected.
        return;
    }
    tracing::warn!(
        engine = shared.name,
        in_flight = link.in_flight.len(),
        "offload agent gone; its jobs rerun on the CPU, re-attaching when it is back"
    );
    for job in link.in_flight.drain() {
        shared.metrics.record_op_error(job.op);
        job.batch.complete(
            job.index,
            Err(JobError::Unavailable { engine: shared.name.clone(), reason: "agent connection closed".into() }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight() -> InFlight {
        let (tx, _rx) = oneshot::channel();
        InFlight {
            batch: Batch::new(1, tx),
            index: 0,
            input: Bytes::new(),
            input_shared: false,
            input_codec: Codec::Raw,
            digest: DigestKind::None,
            decode_codec: None,
            _input_copy: None,
            output: None,
            out_cap: 0,
            op: OpKind::ChunkId,
        }
    }

    #[test]
    fn a_completion_finds_only_the_job_it_was_issued_for() {
        let mut table = InFlightTable::default();
        let first = table.insert(in_flight());
        assert!(table.remove(first).is_some());
        assert!(table.remove(first).is_none(), "a job is taken once");
        let second = table.insert(in_flight());
        assert_eq!(second as u32, first as u32, "the freed slot is reused");
        assert!(table.remove(first).is_none(), "a stale user_data matches nothing");
        assert!(table.remove(0).is_none() && table.remove(u64::MAX).is_none(), "nor does a forged one");
        let third = table.insert(in_flight());
        assert_eq!(table.len(), 2);
        assert_eq!(table.drain().len(), 2);
        assert_eq!(table.len(), 0);
        assert!(table.remove(second).is_none() && table.remove(third).is_none());
        let again = table.insert(in_flight());
        assert!(![first, second, third].contains(&again), "no user_data is issued twice");
        assert!(table.remove(again).is_some(), "usable after a drain");
    }
}
