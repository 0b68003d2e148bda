//! The host side: [`AgentEngine`] hands jobs to an offload agent through a shared region
//! and takes the results back on one completion thread, which also notices a dead agent
//! (its socket closes), fails what was in flight, and re-attaches when the agent is back.

use super::ring::{self, Cqe, Layout, Sqe, op, status};
use super::shm::SharedRegion;
use crate::Codec;
use crate::engine::{Completion, Engine};
use crate::job::{Job, JobError, JobOutput, Step};
use crate::kernels::digest::{ChunkId, SumAlgo};
use crate::metrics::{EngineMetrics, OpKind, thread_cpu_ns};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::time::Duration;
use tokio::sync::oneshot;

/// How the host attaches to an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's Unix socket.
    pub socket: PathBuf,
    /// Where the shared region file is created (then unlinked once the agent has it).
    pub shm_dir: PathBuf,
    /// Shared region size: rings plus the data area jobs are copied through.
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
            // 64 MiB: 32 one-MiB chunk jobs in and out with room to spare, or two of
            // the largest (16 MiB) chunks.
            region_bytes: 64 << 20,
            ring_entries: 256,
            reattach_every: Duration::from_millis(200),
        }
    }
}

type Results = Vec<Result<JobOutput, JobError>>;

/// Results of one batch, filled as completions arrive.
struct Batch {
    results: Mutex<Vec<Option<Result<JobOutput, JobError>>>>,
    remaining: AtomicU64,
    done: Mutex<Option<oneshot::Sender<Results>>>,
}

impl Batch {
    fn complete(&self, index: usize, result: Result<JobOutput, JobError>) {
        self.results.lock()[index] = Some(result);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let results = std::mem::take(&mut *self.results.lock());
            if let Some(tx) = self.done.lock().take() {
                let _ = tx.send(results.into_iter().map(|r| r.expect("every job completed")).collect());
            }
        }
    }
}

/// What the host remembers of a job in flight.
struct InFlight {
    batch: Arc<Batch>,
    index: usize,
    input: Bytes,
    input_codec: Codec,
    digest: DigestKind,
    decode_codec: Option<Codec>,
    in_range: (u64, u64),
    out_range: (u64, u64),
    op: OpKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DigestKind {
    None,
    ChunkId,
    Verify(ChunkId),
    Sum(SumAlgo),
}

/// First-fit allocator over the data area, owned by the host alone.
struct Arena {
    free: BTreeMap<u64, u64>,
}

/// Allocations are cache-line aligned so two jobs never share a line.
const ALIGN: u64 = 64;

impl Arena {
    fn new(len: u64) -> Self {
        Self { free: BTreeMap::from([(0, len)]) }
    }

    fn alloc(&mut self, len: u64) -> Option<(u64, u64)> {
        let len = len.max(1).next_multiple_of(ALIGN);
        let (&at, &size) = self.free.iter().find(|&(_, &size)| size >= len)?;
        self.free.remove(&at);
        if size > len {
            self.free.insert(at + len, size - len);
        }
        Some((at, len))
    }

    fn release(&mut self, (at, len): (u64, u64)) {
        if len == 0 {
            return;
        }
        let mut start = at;
        let mut size = len;
        if let Some((&prev, &prev_len)) = self.free.range(..at).next_back()
            && prev + prev_len == at
        {
            self.free.remove(&prev);
            start = prev;
            size += prev_len;
        }
        if let Some(&next_len) = self.free.get(&(at + len)) {
            self.free.remove(&(at + len));
            size += next_len;
        }
        self.free.insert(start, size);
    }
}

/// Why a job was refused when the ring or the data area is full (not a failure).
const BUSY: &str = "ring or shared data area full";

type Reaped = (Arc<Batch>, usize, OpKind, Result<JobOutput, JobError>);

/// One attachment to the agent.
struct Link {
    region: SharedRegion,
    layout: Layout,
    stream: UnixStream,
    arena: Arena,
    sq_tail: u32,
    cq_head: u32,
    in_flight: HashMap<u64, InFlight>,
}

struct State {
    link: Option<Link>,
    next_user_data: u64,
}

struct Shared {
    name: String,
    config: AgentConfig,
    state: Mutex<State>,
    connected: AtomicBool,
    attachments: AtomicU64,
    stop: AtomicBool,
    metrics: EngineMetrics,
}

/// An engine that runs jobs in an offload agent process.
pub struct AgentEngine {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentEngine {
    /// Starts the completion thread, which attaches to the agent now if it is there
    /// and keeps trying if it is not; jobs submitted while detached fail as
    /// [`JobError::Unavailable`] (the router runs them on the CPU).
    pub fn start(name: &str, config: AgentConfig) -> std::io::Result<Self> {
        Layout::plan(config.region_bytes, config.ring_entries)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            config,
            state: Mutex::new(State { link: None, next_user_data: 1 }),
            connected: AtomicBool::new(false),
            attachments: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            metrics: EngineMetrics::default(),
        });
        // Attach before returning, so a daemon that starts with its agent running uses
        // it from the first job.
        if let Err(e) = attach(&shared) {
            tracing::warn!(engine = name, socket = %shared.config.socket.display(), error = %e,
                "offload agent not reachable; running on the CPU until it is");
        }
        let thread = std::thread::Builder::new().name(format!("offload-{name}-cq")).spawn({
            let shared = shared.clone();
            move || completion_loop(&shared)
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

    /// The agent's own CPU time and job count as it last published them.
    pub fn agent_counters(&self) -> Option<(u64, u64)> {
        let state = self.shared.state.lock();
        let link = state.link.as_ref()?;
        Some((
            link.region.atomic_u64(ring::off::AGENT_JOBS).load(Ordering::Relaxed),
            link.region.atomic_u64(ring::off::AGENT_CPU_NS).load(Ordering::Relaxed),
        ))
    }
}

impl Drop for AgentEngine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(link) = self.shared.state.lock().link.as_ref() {
            // Wake the completion thread out of its poll.
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
            Step::Compress { codec: target, level } if codec == Codec::Raw => {
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
        let started = thread_cpu_ns();
        let (tx, completion) = Completion::channel(&self.shared.name, jobs.len());
        if jobs.is_empty() {
            let _ = tx.send(Vec::new());
            return completion;
        }
        let count = jobs.len();
        let batch = Arc::new(Batch {
            results: Mutex::new((0..count).map(|_| None).collect()),
            remaining: AtomicU64::new(count as u64),
            done: Mutex::new(Some(tx)),
        });
        let mut refused: Vec<(usize, &str)> = Vec::new();
        let mut ops = Vec::with_capacity(count);
        {
            let mut state = self.shared.state.lock();
            let State { link, next_user_data } = &mut *state;
            for (index, job) in jobs.into_iter().enumerate() {
                let op = job.steps.last().map_or(OpKind::ChunkId, Step::op);
                ops.push(op);
                let Some(link) = link.as_mut() else {
                    refused.push((index, "agent not attached"));
                    continue;
                };
                let user_data = *next_user_data;
                *next_user_data += 1;
                if let Err(reason) = link.push(user_data, job, batch.clone(), index) {
                    refused.push((index, reason));
                }
            }
            if let Some(link) = link.as_mut() {
                link.publish();
            }
        }
        for (index, reason) in refused {
            let err = if reason == BUSY {
                JobError::Busy(self.shared.name.clone())
            } else {
                JobError::Unavailable { engine: self.shared.name.clone(), reason: reason.into() }
            };
            batch.complete(index, Err(err));
        }
        let spent = thread_cpu_ns().saturating_sub(started) / count as u64;
        for op in ops {
            self.shared.metrics.record_host_cpu(op, spent);
        }
        completion
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
}

impl Link {
    /// Copies a job into the region and writes its entry (not yet visible to the agent).
    fn push(&mut self, user_data: u64, job: Job, batch: Arc<Batch>, index: usize) -> Result<(), &'static str> {
        let plan = plan(&job).ok_or("chain not supported by the agent protocol")?;
        let head = self.region.atomic_u32(ring::off::SQ_HEAD).load(Ordering::Acquire);
        if self.sq_tail.wrapping_sub(head) >= self.layout.sq_entries
            || self.in_flight.len() >= self.layout.cq_entries as usize
        {
            return Err(BUSY);
        }
        let in_range = self.arena.alloc(job.data.len() as u64).ok_or(BUSY)?;
        let out_range = if plan.out_cap > 0 {
            match self.arena.alloc(plan.out_cap) {
                Some(r) => r,
                None => {
                    self.arena.release(in_range);
                    return Err(BUSY);
                }
            }
        } else {
            (0, 0)
        };
        let at = self.layout.data_off + in_range.0;
        self.region.write(at, &job.data).expect("arena ranges lie inside the data area");
        let sqe = Sqe {
            user_data,
            in_off: in_range.0,
            in_len: job.data.len() as u32,
            out_cap: plan.out_cap as u32,
            out_off: out_range.0,
            ops: plan.ops,
            level: plan.level,
            plain_len: plan.plain_len,
            expected: plan.expected,
        };
        self.region.write(self.layout.sqe_at(self.sq_tail), &sqe.encode()).expect("slot inside the ring");
        self.sq_tail = self.sq_tail.wrapping_add(1);
        self.in_flight.insert(
            user_data,
            InFlight {
                batch,
                index,
                input: job.data,
                input_codec: job.codec,
                digest: plan.digest,
                decode_codec: plan.decode_codec,
                in_range,
                out_range,
                op: job.steps.last().map_or(OpKind::ChunkId, Step::op),
            },
        );
        Ok(())
    }

    /// Makes the new entries visible and rings the doorbell if the agent sleeps.
    fn publish(&mut self) {
        let tail = self.region.atomic_u32(ring::off::SQ_TAIL);
        if tail.load(Ordering::Relaxed) == self.sq_tail {
            return;
        }
        tail.store(self.sq_tail, Ordering::Release);
        // Pairs with the agent's fence between setting need_wakeup and re-reading the
        // tail: one of us sees the other's store, so no wakeup is lost.
        fence(Ordering::SeqCst);
        if self.region.atomic_u32(ring::off::AGENT_NEED_WAKEUP).load(Ordering::Relaxed) != 0 {
            // A full socket buffer already holds a wakeup: WouldBlock is fine.
            let _ = (&self.stream).write(&[1]);
        }
    }

    /// Takes every posted completion; returns the batches to complete.
    fn reap(&mut self, name: &str, metrics: &EngineMetrics) -> Vec<Reaped> {
        let mut done = Vec::new();
        let tail = self.region.atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire);
        if tail.wrapping_sub(self.cq_head) > self.layout.cq_entries {
            // The agent wrote a tail it could not have produced: treat as a crash.
            return done;
        }
        while self.cq_head != tail {
            let mut raw = [0u8; ring::CQE_LEN];
            self.region.read(self.layout.cqe_at(self.cq_head), &mut raw).expect("slot inside the ring");
            self.cq_head = self.cq_head.wrapping_add(1);
            let cqe = Cqe::decode(&raw);
            let Some(job) = self.in_flight.remove(&cqe.user_data) else {
                tracing::warn!(engine = name, user_data = cqe.user_data, "completion for no job in flight; ignored");
                continue;
            };
            let result = self.result(name, &cqe, &job);
            if cqe.status != status::OK {
                metrics.record_op_error(job.op);
            } else {
                metrics.record(job.op, job.input.len(), Duration::from_nanos(cqe.agent_ns as u64));
            }
            self.arena.release(job.in_range);
            self.arena.release(job.out_range);
            done.push((job.batch, job.index, job.op, result));
        }
        self.region.atomic_u32(ring::off::CQ_HEAD).store(self.cq_head, Ordering::Release);
        done
    }

    /// Turns a completion into the job's result, checking everything the agent says.
    fn result(&self, name: &str, cqe: &Cqe, job: &InFlight) -> Result<JobOutput, JobError> {
        let malformed = |what: &str| JobError::Unavailable {
            engine: name.to_owned(),
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
                return Err(JobError::Unavailable { engine: name.to_owned(), reason: format!("agent status {other}") });
            }
        }
        let codec = Codec::from_tag(cqe.out_codec).ok_or_else(|| malformed("codec"))?;
        let data = if cqe.out_in_place == 1 {
            if codec != job.input_codec {
                return Err(malformed("in-place output with another codec"));
            }
            job.input.clone()
        } else {
            let len = cqe.out_len as u64;
            if len > job.out_range.1 {
                return Err(malformed("output longer than its buffer"));
            }
            let mut out = vec![0u8; len as usize];
            self.region.read(self.layout.data_off + job.out_range.0, &mut out).expect("arena range");
            Bytes::from(out)
        };
        let mut output = JobOutput::start(data, codec);
        match job.digest {
            DigestKind::None => {}
            DigestKind::ChunkId | DigestKind::Verify(_) => {
                output.chunk_id = Some(ChunkId(digest.try_into().map_err(|_| malformed("digest length"))?));
            }
            DigestKind::Sum(algo) => output.sums.push((algo, digest.to_vec())),
        }
        Ok(output)
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
        region,
        arena: Arena::new(layout.data_len),
        layout,
        stream,
        sq_tail: 0,
        cq_head: 0,
        in_flight: HashMap::new(),
    };
    shared.state.lock().link = Some(link);
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

/// Poll interval while waiting for completions: bounds how late a stop is noticed, not
/// how late a completion is (those ring the doorbell).
const POLL_MS: i32 = 100;

fn completion_loop(shared: &Shared) {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if !shared.connected.load(Ordering::Acquire) {
            std::thread::sleep(shared.config.reattach_every);
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let _ = attach(shared);
            continue;
        }
        let started = thread_cpu_ns();
        let (done, fd) = {
            let mut state = shared.state.lock();
            let Some(link) = state.link.as_mut() else { continue };
            let done = link.reap(&shared.name, &shared.metrics);
            let fd = if done.is_empty()
                && !link.in_flight.is_empty()
                && spin_for_tail(link, ring::off::CQ_TAIL, link.cq_head)
            {
                None
            } else if done.is_empty() {
                // Going to sleep: ask for a doorbell, then look once more (pairs with the
                // agent's fence after publishing its tail).
                link.region.atomic_u32(ring::off::HOST_NEED_WAKEUP).store(1, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                let tail = link.region.atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire);
                (tail == link.cq_head).then(|| link.stream.as_raw_fd())
            } else {
                None
            };
            (done, fd)
        };
        if !done.is_empty() {
            let count = done.len() as u64;
            let mut ops = Vec::with_capacity(done.len());
            for (batch, index, op, result) in done {
                ops.push(op);
                batch.complete(index, result);
            }
            // Completion-side host time (reaping, copying out, waking the submitter),
            // spread over the jobs reaped.
            let per_job = thread_cpu_ns().saturating_sub(started) / count;
            for op in ops {
                shared.metrics.record_host_cpu(op, per_job);
            }
            continue;
        }
        let Some(fd) = fd else { continue };
        let alive = wait_doorbell(fd);
        if let Some(link) = shared.state.lock().link.as_ref() {
            link.region.atomic_u32(ring::off::HOST_NEED_WAKEUP).store(0, Ordering::Relaxed);
        }
        if !alive {
            detach(shared);
        }
    }
}

/// How long the host polls the completion tail before sleeping while jobs are in flight:
/// a doorbell costs two context switches (tens of µs on a busy machine), far more than a
/// small job. Short, because it is host CPU: at most 10 ms per GiB of 1 MiB jobs.
pub(crate) const HOST_SPIN: Duration = Duration::from_micros(10);
/// How long the agent polls the submission tail after finishing work, like io_uring's
/// `sq_thread_idle`: it runs only right after activity, so an idle agent sleeps.
pub(crate) const AGENT_SPIN: Duration = Duration::from_micros(50);

/// Polls the ring word at `word` until it differs from `seen` or [`HOST_SPIN`] passes.
fn spin_for_tail(link: &Link, word: usize, seen: u32) -> bool {
    spin_until(&link.region, word, seen, HOST_SPIN)
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

/// Waits for a doorbell byte; false when the agent's end is closed.
fn wait_doorbell(fd: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; the fd stays open while the link is installed, and only
    // this thread removes the link.
    let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    if n <= 0 {
        return true;
    }
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reading into a local buffer of the length given; fd as above.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match r {
            0 => return false,
            r if r > 0 => continue,
            _ => {
                let err = std::io::Error::last_os_error();
                return err.kind() == std::io::ErrorKind::WouldBlock || err.kind() == std::io::ErrorKind::Interrupted;
            }
        }
    }
}

/// Drops the link and fails everything that was in flight on it.
fn detach(shared: &Shared) {
    let link = {
        let mut state = shared.state.lock();
        shared.connected.store(false, Ordering::Release);
        state.link.take()
    };
    let Some(link) = link else { return };
    if shared.stop.load(Ordering::Acquire) {
        // The engine is being dropped: closing the link is expected.
        return;
    }
    tracing::warn!(
        engine = shared.name,
        in_flight = link.in_flight.len(),
        "offload agent gone; its jobs rerun on the CPU, re-attaching when it is back"
    );
    for (_, job) in link.in_flight {
        shared.metrics.record_op_error(job.op);
        job.batch.complete(
            job.index,
            Err(JobError::Unavailable { engine: shared.name.clone(), reason: "agent connection closed".into() }),
        );
    }
}
