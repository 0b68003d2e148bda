//! The agent side: accepts hosts on a Unix socket, maps the region each host offers,
//! and serves its submission ring until the host goes away. `clusster offload-agent`
//! is a thin wrapper around [`serve`].
//!
//! Everything read from the region is checked before use: offsets, lengths, op codes
//! and ring indices come from another process.

use super::ring::{self, Cqe, Layout, Sqe, op, status};
use super::shm::{SharedRegion, pin_current_thread};
use crate::Codec;
use crate::cpu::Worker;
use crate::job::{Job, JobError, Step};
use crate::kernels::digest::{ChunkId, SumAlgo};
use crate::metrics::{EngineMetrics, thread_cpu_ns};
use bytes::Bytes;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::{Duration, Instant};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Cores each serving thread is pinned to (empty: not pinned).
    pub cores: Vec<usize>,
    /// How long the agent keeps polling its submission tail after finishing work before
    /// it sleeps, as io_uring's `sq_thread_idle`. It should outlast the host's turnaround
    /// (being woken, taking the results, submitting the next jobs: 100 to 200 µs on a
    /// loaded VM), or the host pays for a doorbell on nearly every batch. An idle agent
    /// does not poll. The default assumes the agent has its cores to itself (`cores`):
    /// on a core shared with the host, polling takes time from the thread it waits for.
    pub idle_spin: Duration,
}

/// The agent's default [`ServeOptions::idle_spin`].
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_millis(1);

impl Default for ServeOptions {
    fn default() -> Self {
        Self { cores: Vec::new(), idle_spin: DEFAULT_IDLE_SPIN }
    }
}

/// Longest region path a hello may carry.
const MAX_PATH: u32 = 4096;
/// Largest region an agent maps.
const MAX_REGION: u64 = 16 << 30;
/// While idle, how often the agent looks at whether the host is still there (it is
/// woken by the doorbell for work, so this costs one wakeup per interval).
const IDLE_POLL_MS: i32 = 1000;
/// While busy, the agent's CPU time in the header is refreshed every this many jobs
/// (and whenever it goes to sleep).
const CPU_PUBLISH_EVERY: u64 = 1024;

/// Serves hosts on `listener` until `stop` is set (checked between connections).
/// Each host gets its own thread.
pub fn serve(listener: UnixListener, options: ServeOptions, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a host failed");
                continue;
            }
        };
        let options = options.clone();
        std::thread::Builder::new().name("offload-agent".into()).spawn(move || {
            if let Err(e) = pin_current_thread(&options.cores) {
                tracing::warn!(error = %e, cores = ?options.cores, "cannot pin the agent thread; running unpinned");
            }
            match serve_host(stream, options.idle_spin) {
                Ok(jobs) => tracing::info!(jobs, "host detached"),
                Err(e) => tracing::warn!(error = %e, "host connection ended with an error"),
            }
        })?;
    }
    Ok(())
}

/// Serves one host: hello, then the ring until the socket closes, polling for `idle_spin`
/// after work before sleeping. Returns jobs served.
pub fn serve_host(mut stream: UnixStream, idle_spin: Duration) -> std::io::Result<u64> {
    let mut hello = [0u8; 24];
    match stream.read_exact(&mut hello) {
        Ok(()) => {}
        // A probe (`offload-agent` checking whether the socket is taken) says nothing.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
        Err(e) => return Err(e),
    }
    let version = u32::from_le_bytes(hello[8..12].try_into().expect("4 bytes"));
    let path_len = u32::from_le_bytes(hello[12..16].try_into().expect("4 bytes"));
    let region_len = u64::from_le_bytes(hello[16..24].try_into().expect("8 bytes"));
    let refuse = |stream: &mut UnixStream, code: u32, why: String| {
        let mut ack = [0u8; 16];
        ack[0..8].copy_from_slice(&ring::ACK_MAGIC);
        ack[8..12].copy_from_slice(&code.to_le_bytes());
        let _ = stream.write_all(&ack);
        std::io::Error::new(std::io::ErrorKind::InvalidData, why)
    };
    if hello[0..8] != ring::HELLO_MAGIC {
        return Err(refuse(&mut stream, 1, "not a clusster offload host".into()));
    }
    if version != ring::VERSION {
        return Err(refuse(&mut stream, 2, format!("host speaks protocol {version}, agent {}", ring::VERSION)));
    }
    if path_len == 0 || path_len > MAX_PATH || region_len > MAX_REGION {
        return Err(refuse(&mut stream, 3, "region path or size out of bounds".into()));
    }
    let mut path = vec![0u8; path_len as usize];
    stream.read_exact(&mut path)?;
    let path = PathBuf::from(String::from_utf8(path).map_err(|_| refuse(&mut stream, 3, "path not UTF-8".into()))?);
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => return Err(refuse(&mut stream, 4, format!("cannot open {}: {e}", path.display()))),
    };
    let region = match SharedRegion::map(&file, region_len as usize) {
        Ok(r) => r,
        Err(e) => return Err(refuse(&mut stream, 4, format!("cannot map {}: {e}", path.display()))),
    };
    drop(file);
    let layout = match Layout::read_header(&region) {
        Ok(l) => l,
        Err(e) => return Err(refuse(&mut stream, 5, e.to_string())),
    };
    let mut ack = [0u8; 16];
    ack[0..8].copy_from_slice(&ring::ACK_MAGIC);
    ack[12..16].copy_from_slice(&1u32.to_le_bytes());
    stream.write_all(&ack)?;
    stream.set_nonblocking(true)?;
    Agent {
        region,
        layout,
        stream,
        worker: Worker::new(Arc::new(EngineMetrics::default())),
        sq_head: 0,
        cq_tail: 0,
        idle_spin,
    }
    .run()
}

struct Agent {
    region: SharedRegion,
    layout: Layout,
    stream: UnixStream,
    worker: Worker,
    sq_head: u32,
    cq_tail: u32,
    idle_spin: Duration,
}

impl Agent {
    fn run(mut self) -> std::io::Result<u64> {
        let mut served = 0u64;
        let cpu_start = thread_cpu_ns();
        // Whether a job ran since the last sleep: only then is more work likely soon.
        let mut worked = false;
        loop {
            let tail = self.region.atomic_u32(ring::off::SQ_TAIL).load(Ordering::Acquire);
            let pending = tail.wrapping_sub(self.sq_head);
            if pending > self.layout.sq_entries {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "host wrote an impossible SQ tail"));
            }
            if pending > 0 {
                // Completions may be posted only while the host has room to reap them.
                let cq_head = self.region.atomic_u32(ring::off::CQ_HEAD).load(Ordering::Acquire);
                if self.cq_tail.wrapping_sub(cq_head) >= self.layout.cq_entries {
                    if !self.sleep(cpu_start)? {
                        return Ok(served);
                    }
                    continue;
                }
                let mut raw = [0u8; ring::SQE_LEN];
                self.region.read(self.layout.sqe_at(self.sq_head), &mut raw).expect("slot inside the ring");
                self.sq_head = self.sq_head.wrapping_add(1);
                // The slot is copied: hand it back before the (long) work.
                self.region.atomic_u32(ring::off::SQ_HEAD).store(self.sq_head, Ordering::Release);
                // Wall time on this thread, which runs nothing else: reading the thread's
                // CPU clock is a system call, dearer than a small job.
                let started = Instant::now();
                let mut cqe = self.execute(&Sqe::decode(&raw));
                cqe.agent_ns = started.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                self.post(&cqe);
                served += 1;
                worked = true;
                self.region.atomic_u64(ring::off::AGENT_JOBS).store(served, Ordering::Relaxed);
                if served.is_multiple_of(CPU_PUBLISH_EVERY) {
                    self.publish_cpu(cpu_start);
                }
                // Wake the host once the ring is drained, not once per job.
                if tail.wrapping_sub(self.sq_head) == 0 {
                    self.wake_host();
                }
                continue;
            }
            // Right after work, look for more for a moment before paying for a doorbell.
            if worked && super::host::spin_until(&self.region, ring::off::SQ_TAIL, self.sq_head, self.idle_spin) {
                continue;
            }
            worked = false;
            if !self.sleep(cpu_start)? {
                return Ok(served);
            }
        }
    }

    /// Publishes this thread's CPU time since `cpu_start` in the header.
    fn publish_cpu(&self, cpu_start: u64) {
        self.region
            .atomic_u64(ring::off::AGENT_CPU_NS)
            .store(thread_cpu_ns().saturating_sub(cpu_start), Ordering::Relaxed);
    }

    fn post(&mut self, cqe: &Cqe) {
        self.region.write(self.layout.cqe_at(self.cq_tail), &cqe.encode()).expect("slot inside the ring");
        self.cq_tail = self.cq_tail.wrapping_add(1);
        self.region.atomic_u32(ring::off::CQ_TAIL).store(self.cq_tail, Ordering::Release);
    }

    fn wake_host(&mut self) {
        // Pairs with the host's fence between setting need_wakeup and re-reading the tail.
        fence(Ordering::SeqCst);
        if self.region.atomic_u32(ring::off::HOST_NEED_WAKEUP).load(Ordering::Relaxed) != 0 {
            let _ = (&self.stream).write(&[1]);
        }
    }

    /// Sleeps until the doorbell rings (or a while passes). False when the host is gone.
    fn sleep(&mut self, cpu_start: u64) -> std::io::Result<bool> {
        self.publish_cpu(cpu_start);
        self.region.atomic_u32(ring::off::AGENT_NEED_WAKEUP).store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let tail = self.region.atomic_u32(ring::off::SQ_TAIL).load(Ordering::Acquire);
        let cq_head = self.region.atomic_u32(ring::off::CQ_HEAD).load(Ordering::Acquire);
        let ring_full = self.cq_tail.wrapping_sub(cq_head) >= self.layout.cq_entries;
        let alive = if tail != self.sq_head && !ring_full { true } else { self.wait_doorbell(ring_full) };
        self.region.atomic_u32(ring::off::AGENT_NEED_WAKEUP).store(0, Ordering::Relaxed);
        Ok(alive)
    }

    fn wait_doorbell(&self, ring_full: bool) -> bool {
        // A full completion ring is drained by the host without a doorbell to us: look
        // again soon instead of sleeping the full interval.
        let timeout = if ring_full { 1 } else { IDLE_POLL_MS };
        let mut pfd = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd on a socket we own.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n <= 0 {
            return true;
        }
        let mut buf = [0u8; 64];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Runs one entry; every failure becomes a status, never a panic.
    fn execute(&mut self, sqe: &Sqe) -> Cqe {
        let mut cqe = Cqe { user_data: sqe.user_data, ..Default::default() };
        let fail = |mut cqe: Cqe, code| {
            cqe.status = code;
            cqe
        };
        let Some((job, decode_codec)) = self.decode_job(sqe) else { return fail(cqe, status::BAD_REQUEST) };
        let input_codec = job.codec;
        let input_len = job.data.len();
        let out = match self.worker.run_steps(job) {
            Ok(out) => out,
            Err(JobError::Corrupt { actual, .. }) => {
                cqe.digest = actual.0;
                cqe.digest_len = 32;
                return fail(cqe, status::CORRUPT);
            }
            Err(JobError::Decode { .. }) if decode_codec.is_some() => return fail(cqe, status::DECODE_FAILED),
            Err(JobError::Encode { .. }) => return fail(cqe, status::ENCODE_FAILED),
            Err(_) => return fail(cqe, status::BAD_REQUEST),
        };
        if let Some(id) = out.chunk_id {
            cqe.digest = id.0;
            cqe.digest_len = 32;
        } else if let Some((_, sum)) = out.sums.first() {
            cqe.digest[..sum.len()].copy_from_slice(sum);
            cqe.digest_len = sum.len() as u8;
        }
        cqe.out_codec = out.codec.tag();
        let unchanged = out.codec == input_codec && out.data.len() == input_len;
        if unchanged {
            cqe.out_in_place = 1;
        } else {
            if out.data.len() as u64 > sqe.out_cap as u64 {
                return fail(cqe, status::NO_SPACE);
            }
            let Some(at) = self.layout.data_range(sqe.out_off, out.data.len() as u64) else {
                return fail(cqe, status::BAD_REQUEST);
            };
            self.region.write(at, &out.data).expect("checked range");
            cqe.out_len = out.data.len() as u32;
        }
        cqe
    }

    /// The job an entry describes, with its input copied out of the region; `None` for
    /// anything out of bounds or unknown.
    fn decode_job(&self, sqe: &Sqe) -> Option<(Job, Option<Codec>)> {
        if sqe.in_len > ring::MAX_JOB_BYTES || sqe.out_cap > ring::MAX_JOB_BYTES || sqe.plain_len > ring::MAX_JOB_BYTES
        {
            return None;
        }
        let at = self.layout.data_range(sqe.in_off, sqe.in_len as u64)?;
        self.layout.data_range(sqe.out_off, sqe.out_cap as u64)?;
        let mut steps = Vec::with_capacity(ring::MAX_OPS);
        let mut input_codec = Codec::Raw;
        let mut decode_codec = None;
        for (i, &code) in sqe.ops.iter().enumerate() {
            let step = match code {
                op::END => break,
                op::BLAKE3 => Step::ChunkId,
                op::VERIFY => Step::Verify(ChunkId(sqe.expected)),
                op::COMPRESS_ZSTD => Step::Compress { codec: Codec::Zstd, level: sqe.level },
                op::COMPRESS_LZ4 => Step::Compress { codec: Codec::Lz4, level: 0 },
                op::DECOMPRESS_ZSTD | op::DECOMPRESS_LZ4 | op::DECOMPRESS_RAW if i == 0 => {
                    let codec = match code {
                        op::DECOMPRESS_ZSTD => Codec::Zstd,
                        op::DECOMPRESS_LZ4 => Codec::Lz4,
                        _ => Codec::Raw,
                    };
                    input_codec = codec;
                    decode_codec = Some(codec);
                    Step::Decompress { codec, plain_len: sqe.plain_len }
                }
                op::MD5 => Step::Sum(SumAlgo::Md5),
                op::CRC32 => Step::Sum(SumAlgo::Crc32),
                op::CRC32C => Step::Sum(SumAlgo::Crc32c),
                op::CRC64NVME => Step::Sum(SumAlgo::Crc64Nvme),
                op::SHA256 => Step::Sum(SumAlgo::Sha256),
                _ => return None,
            };
            steps.push(step);
        }
        let mut data = vec![0u8; sqe.in_len as usize];
        self.region.read(at, &mut data).ok()?;
        Some((Job::encoded(Bytes::from(data), input_codec, steps), decode_codec))
    }
}
