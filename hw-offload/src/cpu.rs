//! The portable engine: a pool of worker threads running the kernels, so the async
//! reactor threads never hash or compress more than a few microseconds' worth: batches
//! of at most [`INLINE_MAX_BYTES`] run on the submitting thread, where handing them to a
//! worker (a queue push, two thread wake-ups) would cost more than the work. Jobs that
//! only feed running whole-object digests go to a thread of their own, which hashes the
//! concurrent streams' MD5s together (see [`crate::kernels::md5`]).

use crate::Codec;
use crate::engine::{Batch, Completion, Engine};
use crate::job::{Job, JobError, JobOutput, Step};
use crate::kernels::{cdc, codec, digest::ChunkId, digest::StreamDigests, md5};
use crate::metrics::{EngineMetrics, OpKind};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Work {
    job: Job,
    batch: Arc<Batch>,
    index: usize,
}

/// Input bytes up to which a batch runs on the submitting thread (BLAKE3 of 16 KiB takes
/// ~4 µs here; a hand-off to a worker and back costs 10–50 µs of CPU on a busy host).
pub const INLINE_MAX_BYTES: usize = 16 << 10;

/// The bytes a job touches: its input, or what a decompression expands it to.
fn work_bytes(job: &Job) -> usize {
    job.steps.iter().fold(job.data.len(), |most, step| match step {
        Step::Decompress { plain_len, .. } => most.max(*plain_len as usize),
        _ => most,
    })
}

/// A pool of threads running jobs in FIFO order.
pub struct CpuEngine {
    queue: crossbeam_channel::Sender<Work>,
    /// Jobs that only feed running digests, for the thread that batches them (see
    /// [`to_digest_thread`]).
    digests: crossbeam_channel::Sender<Work>,
    /// Whether this CPU has a multi-lane MD5 kernel, which is what batching is for.
    batch_digests: bool,
    metrics: Arc<EngineMetrics>,
    /// codec contexts for the small batches run on the submitting thread; a submitter
    /// that finds it taken hands its batch to the pool instead of waiting
    inline: Mutex<Worker>,
}

impl CpuEngine {
    /// Starts `threads` workers (0 = one per available core).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let (queue, rx) = crossbeam_channel::unbounded::<Work>();
        let metrics = Arc::new(EngineMetrics::default());
        for i in 0..threads {
            let rx = rx.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("offload-cpu-{i}"))
                .spawn(move || {
                    let mut worker = Worker::new(metrics);
                    // Ends when the engine (the only sender) is dropped.
                    for work in rx {
                        let result = worker.run(work.job);
                        work.batch.complete(work.index, result);
                    }
                })
                .expect("spawn offload worker thread");
        }
        let (digests, rx) = crossbeam_channel::unbounded::<Work>();
        let worker = Worker::new(metrics.clone());
        std::thread::Builder::new()
            .name("offload-digests".into())
            .spawn(move || run_digests(worker, rx))
            .expect("spawn offload digest thread");
        let inline = Mutex::new(Worker::new(metrics.clone()));
        let batch_digests = md5::kernel_name() != "scalar";
        Self { queue, digests, batch_digests, metrics, inline }
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> &str {
        "cpu"
    }

    fn runs_off_host(&self) -> bool {
        false
    }

    fn submit(&self, jobs: Vec<Job>) -> Completion {
        let (tx, completion) = Completion::channel(self.name(), jobs.len());
        if jobs.is_empty() {
            let _ = tx.send(Vec::new());
            return completion;
        }
        if jobs.iter().map(work_bytes).sum::<usize>() <= INLINE_MAX_BYTES
            && let Some(mut worker) = self.inline.try_lock()
        {
            let _ = tx.send(worker.run_many(jobs));
            return completion;
        }
        let batch = Batch::new(jobs.len(), tx);
        for (index, job) in jobs.into_iter().enumerate() {
            let queue = if self.batch_digests && to_digest_thread(&job) { &self.digests } else { &self.queue };
            // Fails only when every worker is gone; the completion then reports EngineGone.
            let _ = queue.send(Work { job, batch: batch.clone(), index });
        }
        completion
    }

    fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }
}

/// How long the digest thread may wait for the other streams' next jobs before it hashes
/// a batch without them. A stream submits its next segment only when its last one is
/// done, and the segments of concurrent uploads arrive spread out in time; hashed as
/// they come, most would run alone, at the scalar kernel's cost. The wait costs no CPU.
/// A stream queues a few segments ahead (the store's digest queue), so its body is not
/// held up; what it may add is this much latency to the end of an upload.
const DIGEST_LINGER: Duration = Duration::from_millis(5);
/// A stream counts as active, one the thread waits for, this long after its last job.
const STREAM_ACTIVE: Duration = Duration::from_millis(100);

/// The digest thread: runs queued digest-only jobs of different streams together
/// through the multi-buffer MD5 kernel ([`Worker::run_many`]), one batch at a time.
fn run_digests(mut worker: Worker, rx: crossbeam_channel::Receiver<Work>) {
    // Streams by the address of their state, which each job moves back and forth in
    // the same box, with when their last job came.
    let mut active: std::collections::HashMap<usize, Instant> = std::collections::HashMap::new();
    let stream = |work: &Work| match work.job.steps.first() {
        Some(Step::Digest(state)) => &**state as *const StreamDigests as usize,
        _ => 0,
    };
    // Ends when the engine (the only sender) is dropped.
    while let Ok(first) = rx.recv() {
        let now = Instant::now();
        active.retain(|_, last| now.duration_since(*last) < STREAM_ACTIVE);
        active.insert(stream(&first), now);
        let expected = active.len().min(md5::LANES);
        let mut taken = vec![first];
        let deadline = now + DIGEST_LINGER;
        while taken.len() < md5::LANES {
            let next = if taken.len() < expected { rx.recv_deadline(deadline).ok() } else { rx.try_recv().ok() };
            let Some(work) = next else { break };
            active.insert(stream(&work), Instant::now());
            taken.push(work);
        }
        let (jobs, slots): (Vec<Job>, Vec<(Arc<Batch>, usize)>) =
            taken.into_iter().map(|w| (w.job, (w.batch, w.index))).unzip();
        for (result, (batch, index)) in worker.run_many(jobs).into_iter().zip(slots) {
            batch.complete(index, result);
        }
    }
}

/// One worker's reusable codec contexts. The agent runs the same code, so that every
/// engine's results are the CPU's results bit for bit.
pub(crate) struct Worker {
    metrics: Arc<EngineMetrics>,
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Worker {
    pub(crate) fn new(metrics: Arc<EngineMetrics>) -> Self {
        Self {
            metrics,
            compressor: None,
            decompressor: zstd::bulk::Decompressor::new().expect("zstd decompression context"),
        }
    }

    fn compressor(&mut self, level: i32) -> Result<&mut zstd::bulk::Compressor<'static>, JobError> {
        if self.compressor.as_ref().is_none_or(|(l, _)| *l != level) {
            let c = zstd::bulk::Compressor::new(level)
                .map_err(|e| JobError::Invalid(format!("zstd level {level}: {e}")))?;
            self.compressor = Some((level, c));
        }
        Ok(&mut self.compressor.as_mut().expect("set above").1)
    }

    /// Runs `jobs`, their results in the same order. Jobs that only feed running digests
    /// (of different streams: one stream's jobs must run in order, and a batch holds its
    /// state once) are run together through the multi-buffer MD5 kernel.
    pub(crate) fn run_many(&mut self, jobs: Vec<Job>) -> Vec<Result<JobOutput, JobError>> {
        let digests = jobs.iter().filter(|job| is_lone_digest(job)).count();
        if digests < 2 {
            return jobs.into_iter().map(|job| self.run(job)).collect();
        }
        let mut results: Vec<Option<Result<JobOutput, JobError>>> = Vec::with_capacity(jobs.len());
        let mut together: Vec<(usize, Box<StreamDigests>, JobOutput)> = Vec::with_capacity(digests);
        for (index, mut job) in jobs.into_iter().enumerate() {
            if is_lone_digest(&job)
                && let Some(Step::Digest(state)) = job.steps.pop()
            {
                together.push((index, state, JobOutput::start(job.data, job.codec)));
                results.push(None);
            } else {
                results.push(Some(self.run(job)));
            }
        }
        let started = Instant::now();
        let mut states: Vec<Box<StreamDigests>> = Vec::with_capacity(together.len());
        let mut outs = Vec::with_capacity(together.len());
        for (index, state, out) in together {
            states.push(state);
            outs.push((index, out));
        }
        let inputs: Vec<&[u8]> = outs.iter().map(|(_, out)| &out.data[..]).collect();
        let total: usize = inputs.iter().map(|d| d.len()).sum();
        StreamDigests::update_many(&mut states.iter_mut().map(|s| &mut **s).collect::<Vec<_>>(), &inputs);
        let elapsed = started.elapsed();
        for ((index, mut out), state) in outs.into_iter().zip(states) {
            // Each job is charged its share of the batch's time.
            let share = elapsed.mul_f64(out.data.len() as f64 / total.max(1) as f64);
            self.metrics.record(OpKind::Digest, out.data.len(), share);
            out.digests = Some(state);
            results[index] = Some(Ok(out));
        }
        results.into_iter().map(|r| r.expect("every job has a result")).collect()
    }

    pub(crate) fn run(&mut self, job: Job) -> Result<JobOutput, JobError> {
        let op = job.steps.last().map(Step::op);
        let result = self.run_steps(job);
        if result.is_err() {
            match op {
                Some(op) => self.metrics.record_op_error(op),
                None => self.metrics.record_error(),
            }
        }
        result
    }

    pub(crate) fn run_steps(&mut self, job: Job) -> Result<JobOutput, JobError> {
        let mut out = JobOutput::start(job.data, job.codec);
        for step in job.steps {
            let started = Instant::now();
            let len = out.data.len();
            let op = match step {
                Step::Boundaries { chunker, eof } => {
                    require_plain(&out, "Boundaries")?;
                    out.cuts = cdc::cut_points(&out.data, &chunker, eof);
                    OpKind::Boundaries
                }
                Step::Digest(mut digests) => {
                    require_plain(&out, "Digest")?;
                    digests.update(&out.data);
                    out.digests = Some(digests);
                    OpKind::Digest
                }
                Step::ChunkId => {
                    require_plain(&out, "ChunkId")?;
                    out.chunk_id = Some(ChunkId::of(&out.data));
                    OpKind::ChunkId
                }
                Step::Verify(expected) => {
                    require_plain(&out, "Verify")?;
                    let actual = ChunkId::of(&out.data);
                    if actual != expected {
                        return Err(JobError::Corrupt { expected, actual });
                    }
                    out.chunk_id = Some(actual);
                    OpKind::ChunkId
                }
                Step::Sum(algo) => {
                    require_plain(&out, "Sum")?;
                    out.sums.push((algo, algo.compute(&out.data)));
                    OpKind::Sum
                }
                Step::Compress { codec: target, level } => {
                    require_plain(&out, "Compress")?;
                    match target {
                        Codec::Raw => {}
                        Codec::Zstd => {
                            let compressor = self.compressor(level)?;
                            let packed = codec::compress(compressor, &out.data)
                                .map_err(|e| JobError::Encode { codec: target, reason: e.to_string() })?;
                            if let Some(packed) = packed {
                                out.data = Bytes::from(packed);
                                out.codec = Codec::Zstd;
                            }
                        }
                        Codec::Lz4 => {
                            let packed = codec::compress_lz4(&out.data)
                                .map_err(|e| JobError::Encode { codec: target, reason: e.to_string() })?;
                            if let Some(packed) = packed {
                                out.data = Bytes::from(packed);
                                out.codec = Codec::Lz4;
                            }
                        }
                    }
                    OpKind::Compress
                }
                Step::Decompress { codec: source, plain_len } => {
                    if source != out.codec {
                        return Err(JobError::Invalid(format!(
                            "asked to decode {source:?} but the data is {:?}",
                            out.codec
                        )));
                    }
                    match source {
                        Codec::Raw => {
                            if out.data.len() != plain_len as usize {
                                return Err(JobError::Decode {
                                    codec: source,
                                    reason: format!("raw payload is {} bytes, expected {plain_len}", out.data.len()),
                                });
                            }
                        }
                        Codec::Zstd => {
                            let plain = codec::decompress(&mut self.decompressor, &out.data, plain_len as usize)
                                .map_err(|e| JobError::Decode { codec: source, reason: e.to_string() })?;
                            out.data = Bytes::from(plain);
                        }
                        Codec::Lz4 => {
                            let plain = codec::decompress_lz4(&out.data, plain_len as usize)
                                .map_err(|e| JobError::Decode { codec: source, reason: e.to_string() })?;
                            out.data = Bytes::from(plain);
                        }
                    }
                    out.codec = Codec::Raw;
                    OpKind::Decompress
                }
            };
            self.metrics.record(op, len, started.elapsed());
        }
        Ok(out)
    }
}

/// A job for the digest thread: one that only feeds running digests, whose work besides
/// MD5 is at most CRCs. One thread batches them for every upload of the process; a
/// stream that also computes SHA-256 runs in the pool, as does everything on a CPU
/// without a multi-lane kernel.
fn to_digest_thread(job: &Job) -> bool {
    is_lone_digest(job) && matches!(job.steps.first(), Some(Step::Digest(state)) if state.only_crcs())
}

/// A job that only feeds plain data to running digests.
fn is_lone_digest(job: &Job) -> bool {
    job.codec == Codec::Raw && matches!(job.steps.as_slice(), [Step::Digest(_)])
}

fn require_plain(out: &JobOutput, step: &str) -> Result<(), JobError> {
    if out.codec == Codec::Raw {
        Ok(())
    } else {
        Err(JobError::Invalid(format!("{step} needs plain data; decompress the {:?} payload first", out.codec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChecksumAlgo, ChunkerConfig, Offload, StreamDigests};

    #[tokio::test]
    async fn small_batches_run_on_the_submitting_thread() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let ready = |c: &mut Completion| Future::poll(std::pin::Pin::new(c), &mut Context::from_waker(Waker::noop()));
        let engine = CpuEngine::new(1);
        // The only worker is busy with this for a good while (zstd's slowest level on text).
        let text: Vec<u8> =
            (0..200_000u32).flat_map(|i| format!("run {} sample {}\n", i % 977, i % 613).into_bytes()).collect();
        let busy = engine.submit(vec![Job::new(text, vec![Step::Compress { codec: Codec::Zstd, level: 19 }])]);
        // A small batch is done as soon as it is submitted, with the pool's result.
        let small = Bytes::from(vec![7u8; INLINE_MAX_BYTES]);
        let mut done = engine.submit(vec![Job::new(small.clone(), vec![Step::ChunkId])]);
        let Poll::Ready(mut results) = ready(&mut done) else { panic!("a small batch waited for the pool") };
        assert_eq!(results.pop().unwrap().unwrap().chunk_id, Some(ChunkId::of(&small)));
        // A small input that expands past the bound is not small: it queues for the worker.
        let zeros = vec![0u8; 1 << 20];
        let packed = Bytes::from(zstd::bulk::compress(&zeros, 1).unwrap());
        assert!(packed.len() < INLINE_MAX_BYTES);
        let steps = vec![Step::Decompress { codec: Codec::Zstd, plain_len: zeros.len() as u32 }];
        let mut expanding = engine.submit(vec![Job::encoded(packed, Codec::Zstd, steps)]);
        assert!(ready(&mut expanding).is_pending(), "a 1 MiB decompression ran on the submitting thread");
        assert_eq!(expanding.await.pop().unwrap().unwrap().data, zeros);
        busy.await.pop().unwrap().unwrap();
    }

    #[tokio::test]
    async fn hash_compress_then_decompress_verify_round_trips() {
        let offload = Offload::cpu(2);
        let text = Bytes::from(b"clusster moves research data\n".repeat(4096));
        let stored = offload
            .run(Job::new(text.clone(), vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }]))
            .await
            .unwrap();
        assert_eq!(stored.codec, Codec::Zstd);
        let id = stored.chunk_id.unwrap();
        let plain = offload
            .run(Job::encoded(
                stored.data.clone(),
                Codec::Zstd,
                vec![Step::Decompress { codec: Codec::Zstd, plain_len: text.len() as u32 }, Step::Verify(id)],
            ))
            .await
            .unwrap();
        assert_eq!(plain.data, text);
        assert_eq!(plain.codec, Codec::Raw);

        let wrong = ChunkId::of(b"something else");
        let err = offload
            .run(Job::encoded(
                stored.data,
                Codec::Zstd,
                vec![Step::Decompress { codec: Codec::Zstd, plain_len: text.len() as u32 }, Step::Verify(wrong)],
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, JobError::Corrupt { .. }));
    }

    #[tokio::test]
    async fn batch_results_come_back_in_order() {
        let offload = Offload::cpu(2);
        let jobs: Vec<Job> = (0..64u32).map(|i| Job::new(i.to_be_bytes().to_vec(), vec![Step::ChunkId])).collect();
        let results = offload.submit(jobs).await;
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap().chunk_id.unwrap(), ChunkId::of(&(i as u32).to_be_bytes()));
        }
    }

    #[tokio::test]
    async fn digests_of_many_streams_run_together_and_agree() {
        // One batch: twelve streams' digest jobs of uneven lengths, with a chunk job among
        // them, so the worker advances the digests through the multi-buffer kernel.
        let offload = Offload::cpu(1);
        let inputs: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 40_000 + 977 * i as usize]).collect();
        let mut jobs: Vec<Job> = inputs
            .iter()
            .map(|data| {
                Job::new(data.clone(), vec![Step::Digest(Box::new(StreamDigests::new(&[ChecksumAlgo::Crc32])))])
            })
            .collect();
        jobs.insert(5, Job::new(vec![9u8; 70_000], vec![Step::ChunkId]));
        let mut results = offload.submit(jobs).await;
        let chunk = results.remove(5).unwrap();
        assert_eq!(chunk.chunk_id, Some(ChunkId::of(&[9u8; 70_000])));
        for (data, result) in inputs.iter().zip(results) {
            let mut alone = StreamDigests::new(&[ChecksumAlgo::Crc32]);
            alone.update(data);
            assert_eq!(result.unwrap().digests.unwrap().finish(), alone.finish());
        }
    }

    #[tokio::test]
    async fn digest_state_travels_with_jobs() {
        let offload = Offload::cpu(1);
        let mut digests = Box::new(StreamDigests::new(&[ChecksumAlgo::Crc32c]));
        for part in [&b"1234"[..], b"56789"] {
            let out = offload.run(Job::new(part.to_vec(), vec![Step::Digest(digests)])).await.unwrap();
            digests = out.digests.unwrap();
        }
        let d = digests.finish();
        assert_eq!(d.checksums[0].1, 0xE306_9283u32.to_be_bytes());
        let cuts = offload
            .run(Job::new(vec![1u8; 300_000], vec![Step::Boundaries { chunker: ChunkerConfig::default(), eof: true }]))
            .await
            .unwrap()
            .cuts;
        assert_eq!(cuts.iter().sum::<u32>(), 300_000);
    }
}
