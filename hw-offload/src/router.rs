//! The router behind [`crate::Offload`]: sends each job to the best engine that can run
//! its whole chain and from whose size threshold it pays, keeps the rest on the CPU, and
//! reruns on the CPU whatever an engine could not do (busy, past the deadline, failed).
//!
//! Trust: offloaded results are spot-checked on the CPU (every job while an engine is on
//! probation after being enabled, then one in `spot_check_one_in`, drawn at random so
//! that an engine cannot tell which of its answers will be checked). The probation ends
//! after `probation_jobs` answers were checked and found right, not after that many jobs
//! were sent: a writer that keeps more jobs in flight than that would otherwise send
//! unchecked jobs before the first check is back. A result that is wrong disables the
//! engine for good and the whole batch is answered from the CPU, so a wrong chunk id
//! never reaches the store from a checked batch.
//!
//! Answers delivered unchecked are not forgotten: the router keeps, per engine, the last
//! `recheck_bytes` of payload of the hash-and-compress answers it delivered unchecked. A
//! check that passes vouches for its own answer only, not for those before it (an engine
//! that lies on purpose answers the checked ones right). When the engine is condemned, by a check here or by a caller that found it
//! wrong ([`Engine::distrust`]), those answers are checked again on the CPU, and the
//! chunk ids whose payloads are wrong are kept for the store ([`Engine::wrong_chunks`]).
//! Their ids cannot be wrong where it matters: the store confirms every chunk id an
//! offload engine computed on the host before it is used (see `from_engine`).
//!
//! A check verifies the answer rather than redoing the job where it can, because that is
//! cheaper: for hash and compress, the CPU decodes the engine's payload, hashes what it
//! decodes and compares it with the input (decoding costs a fraction of compressing).
//! Other chains are recomputed and compared.

use crate::buffer::JobBuffer;
use crate::engine::Recheck;
use crate::engine::{Completion, Engine};
use crate::job::{Job, JobError, JobOutput, Step};
use crate::metrics::{EngineMetrics, OpKind};
use crate::{ChunkId, Codec, CpuEngine};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How the router treats offload engines.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// After the probation, one offloaded job in this many is checked on the CPU
    /// (0: never). A check costs a good part of the job's CPU time (decoding and hashing
    /// its output, or redoing it), so this trades host CPU for trust.
    pub spot_check_one_in: u64,
    /// Right answers an engine must give, every job checked, after it is first used or
    /// comes back, before its jobs are only sampled.
    pub probation_jobs: u64,
    /// An engine that failed (not a wrong result) is left alone this long.
    pub disable_for: Duration,
    /// An engine that has not answered a batch by then is given up on for that batch.
    pub deadline: Duration,
    /// Payload bytes of the latest unchecked answers kept per engine for a recheck if it
    /// is condemned; older ones are let go.
    pub recheck_bytes: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            // One in 1024: about 2 ms of host CPU per GiB for BLAKE3 + zstd checks on the
            // reference VM (benches/RESULTS.md).
            spot_check_one_in: 1024,
            probation_jobs: 64,
            disable_for: Duration::from_secs(5),
            deadline: Duration::from_secs(2),
            // 32 MiB: the store's 1,024 jobs between samples at its 64 KiB average chunk
            // (about 22 MiB after compression), so sampling alone closes the window there;
            // 1 MiB chunks get a check about every 100 jobs instead of 1,024.
            recheck_bytes: 32 << 20,
        }
    }
}

/// One offload engine and the sizes from which it pays, per operation.
#[derive(Clone)]
pub struct Route {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// A job goes to the engine only if its data is at least the largest threshold of
    /// the operations in its chain (`u64::MAX`: never for that operation).
    pub min_bytes: [u64; OpKind::ALL.len()],
}

impl Route {
    /// Every operation from `min_bytes` up.
    pub fn new(engine: Arc<dyn Engine>, min_bytes: u64) -> Self {
        Self { engine, min_bytes: [min_bytes; OpKind::ALL.len()] }
    }

    /// Sets the threshold of one operation.
    pub fn with_threshold(mut self, op: OpKind, min_bytes: u64) -> Self {
        self.min_bytes[op as usize] = min_bytes;
        self
    }

    fn threshold(&self, job: &Job) -> u64 {
        job.steps.iter().map(|s| self.min_bytes[s.op() as usize]).max().unwrap_or(u64::MAX)
    }
}

struct RouteState {
    route: Route,
    disabled_until: Mutex<Option<Instant>>,
    /// Set on a wrong result: never used again by this router.
    condemned: AtomicBool,
    /// Right answers still to see before sampling starts; until then every job is checked.
    probation_left: AtomicU64,
    /// The engine's incarnation the probation was for.
    incarnation: AtomicU64,
    /// The latest answers delivered unchecked, at most `recheck_bytes` of payload.
    unchecked: Mutex<Unchecked>,
    recheck_bytes: u64,
}

/// The latest hash-and-compress answers an engine gave unchecked, oldest first.
#[derive(Default)]
struct Unchecked {
    answers: std::collections::VecDeque<Delivered>,
    bytes: u64,
}

/// What a recheck needs of one delivered answer (the payload is the host's own copy).
struct Delivered {
    id: ChunkId,
    codec: Codec,
    payload: Bytes,
    plain_len: u32,
}

impl RouteState {
    fn usable(&self, now: Instant, probation_jobs: u64) -> bool {
        if self.condemned.load(Relaxed) {
            return false;
        }
        let mut disabled = self.disabled_until.lock();
        if let Some(until) = *disabled {
            if now < until {
                return false;
            }
            *disabled = None;
            self.probation_left.store(probation_jobs, Relaxed);
            tracing::info!(engine = self.route.engine.name(), "offload engine back in use, on probation");
        }
        drop(disabled);
        // A re-attached agent may be another process, or another build: it earns its
        // trust again, even if it went and came back while nothing was sent to it.
        let incarnation = self.route.engine.incarnation();
        if self.incarnation.swap(incarnation, Relaxed) != incarnation {
            self.probation_left.store(probation_jobs, Relaxed);
            tracing::info!(engine = self.route.engine.name(), "offload engine replaced, on probation");
        }
        self.route.engine.available()
    }

    /// Logs once per outage and keeps the engine out for `disable_for`.
    fn disable(&self, for_: Duration, reason: &str) {
        let mut disabled = self.disabled_until.lock();
        if disabled.is_none() {
            tracing::warn!(
                engine = self.route.engine.name(),
                reason,
                ?for_,
                "offload engine disabled; running on the CPU"
            );
        }
        *disabled = Some(Instant::now() + for_);
    }

    /// Disables the engine for good and returns the answers it gave since its last
    /// passed check, to be checked again (empty if it was condemned already).
    fn condemn(&self, reason: &str) -> Vec<Delivered> {
        // Under the log's lock, so that no answer is logged after the log was taken
        // (see `delivered`).
        let mut log = self.unchecked.lock();
        if self.condemned.swap(true, Relaxed) {
            return Vec::new();
        }
        let suspects: Vec<Delivered> = std::mem::take(&mut *log).answers.into();
        drop(log);
        tracing::error!(
            engine = self.route.engine.name(),
            reason,
            recheck = suspects.len(),
            "offload engine returned a wrong result and is disabled until the daemon restarts; \
             the batch was recomputed on the CPU and its answers since its last passed check are checked again"
        );
        suspects
    }

    fn wants_check(&self, one_in: u64) -> bool {
        let on_probation = self.probation_left.load(Relaxed) > 0;
        on_probation || (one_in > 0 && rand::random::<u64>().is_multiple_of(one_in))
    }

    /// Counts answers found right towards the probation.
    fn passed(&self, checked: u64) {
        let _ = self.probation_left.fetch_update(Relaxed, Relaxed, |left| Some(left.saturating_sub(checked)));
    }

    /// Remembers an answer about to be delivered without a check; false if the engine
    /// was condemned meanwhile (its late answers are not delivered at all).
    fn delivered(&self, job: &Job, out: &JobOutput) -> bool {
        let mut log = self.unchecked.lock();
        if self.condemned.load(Relaxed) {
            return false;
        }
        let (Some(id), Ok(plain_len)) = (out.chunk_id, u32::try_from(job.data.len())) else { return true };
        if Check::hash_and_compress(job) {
            log.bytes += out.data.len() as u64;
            log.answers.push_back(Delivered { id, codec: out.codec, payload: out.data.clone(), plain_len });
            // The oldest go past the bound; the latest is always kept.
            while log.bytes > self.recheck_bytes
                && log.answers.len() > 1
                && let Some(oldest) = log.answers.pop_front()
            {
                log.bytes -= oldest.payload.len() as u64;
            }
        }
        true
    }
}

/// Routes jobs between the CPU engine and offload engines. Build one, then hand it to
/// [`crate::Offload::routed`].
pub struct Router {
    cpu: Arc<dyn Engine>,
    routes: Arc<Vec<RouteState>>,
    config: RouterConfig,
    metrics: EngineMetrics,
    /// Chunk ids whose delivered payloads a recheck found wrong.
    wrong: Arc<Mutex<Vec<ChunkId>>>,
}

type Results = Vec<Result<JobOutput, JobError>>;

impl Router {
    /// A router over `cpu` and `routes`, preferred in the order given.
    pub fn new(cpu: Arc<dyn Engine>, routes: Vec<Route>, config: RouterConfig) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| RouteState {
                incarnation: AtomicU64::new(route.engine.incarnation()),
                route,
                disabled_until: Mutex::new(None),
                condemned: AtomicBool::new(false),
                probation_left: AtomicU64::new(config.probation_jobs),
                unchecked: Mutex::new(Unchecked::default()),
                recheck_bytes: config.recheck_bytes,
            })
            .collect();
        let wrong = Arc::new(Mutex::new(Vec::new()));
        Self { cpu, routes: Arc::new(routes), config, metrics: EngineMetrics::default(), wrong }
    }

    /// A router with the CPU engine only (what `Offload::cpu` gives, plus nothing).
    pub fn cpu_only(threads: usize) -> Self {
        Self::new(Arc::new(CpuEngine::new(threads)), Vec::new(), RouterConfig::default())
    }

    /// Whether the engine named `name` was disabled for a wrong result.
    pub fn is_condemned(&self, name: &str) -> bool {
        self.routes.iter().any(|r| r.route.engine.name() == name && r.condemned.load(Relaxed))
    }

    fn pick(&self, job: &Job, now: Instant) -> Option<usize> {
        let len = job.data.len() as u64;
        self.routes.iter().position(|r| {
            len >= r.route.threshold(job) && r.route.engine.supports(job) && r.usable(now, self.config.probation_jobs)
        })
    }
}

impl Engine for Router {
    fn name(&self) -> &str {
        "router"
    }

    fn submit(&self, jobs: Vec<Job>) -> Completion {
        let now = Instant::now();
        let picks: Vec<Option<usize>> = if self.routes.is_empty() {
            vec![None; jobs.len()]
        } else {
            jobs.iter().map(|j| self.pick(j, now)).collect()
        };
        if picks.iter().all(Option::is_none) {
            return self.cpu.submit(jobs);
        }
        // Small jobs and jobs no engine takes go to the CPU as one batch; each engine gets
        // its share as one batch, so a doorbell or a DMA setup is paid once per batch.
        let total = jobs.len();
        let mut cpu_part = (Vec::new(), Vec::new());
        let mut parts: Vec<Part> = Vec::new();
        for (index, (job, pick)) in jobs.into_iter().zip(picks).enumerate() {
            match pick {
                None => {
                    cpu_part.0.push(index);
                    cpu_part.1.push(job);
                }
                Some(route) => {
                    let part = match parts.iter_mut().position(|p| p.route == route) {
                        Some(i) => &mut parts[i],
                        None => {
                            parts.push(Part { route, indices: Vec::new(), originals: Vec::new(), check: Vec::new() });
                            parts.last_mut().expect("pushed")
                        }
                    };
                    part.check.push(self.routes[route].wants_check(self.config.spot_check_one_in));
                    part.indices.push(index);
                    part.originals.push(job);
                }
            }
        }
        let cpu_done = (!cpu_part.1.is_empty()).then(|| self.cpu.submit(cpu_part.1));
        let pending: Vec<(Part, Completion)> = parts
            .into_iter()
            .map(|part| {
                let jobs = part.originals.clone();
                let done = self.routes[part.route].route.engine.submit(jobs);
                (part, done)
            })
            .collect();
        let cpu = self.cpu.clone();
        let routes = self.routes.clone();
        let config = self.config.clone();
        let wrong = self.wrong.clone();
        Completion::from_future(async move {
            let mut results: Vec<Option<Result<JobOutput, JobError>>> = (0..total).map(|_| None).collect();
            if let Some(done) = cpu_done {
                for (index, result) in cpu_part.0.into_iter().zip(done.await) {
                    results[index] = Some(result);
                }
            }
            for (part, done) in pending {
                let state = &routes[part.route];
                let answers = finish_part(&part, done, state, &cpu, &config, &wrong).await;
                for (index, result) in part.indices.into_iter().zip(answers) {
                    results[index] = Some(result);
                }
            }
            results.into_iter().map(|r| r.expect("every job answered")).collect()
        })
    }

    fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Shared memory of the first engine that would take jobs now, so that jobs over the
    /// buffer skip the copy there; the heap when no such engine is up.
    fn buffer(&self, len: usize) -> Option<JobBuffer> {
        let now = Instant::now();
        self.routes
            .iter()
            .filter(|r| r.usable(now, self.config.probation_jobs))
            .find_map(|r| r.route.engine.buffer(len))
    }

    fn children(&self) -> Vec<Arc<dyn Engine>> {
        std::iter::once(self.cpu.clone()).chain(self.routes.iter().map(|r| r.route.engine.clone())).collect()
    }

    fn distrust(&self, engine: &str, reason: &str) -> Recheck {
        let Some(route) = self.routes.iter().position(|r| r.route.engine.name() == engine) else {
            return Box::pin(std::future::ready(()));
        };
        let (routes, cpu, wrong, reason) =
            (self.routes.clone(), self.cpu.clone(), self.wrong.clone(), reason.to_owned());
        Box::pin(async move {
            let suspects = routes[route].condemn(&reason);
            recheck(engine_name(&routes[route]), suspects, &cpu, &wrong).await;
        })
    }

    fn wrong_chunks(&self) -> Vec<ChunkId> {
        self.wrong.lock().clone()
    }
}

fn engine_name(state: &RouteState) -> &str {
    state.route.engine.name()
}

/// Checks again, on the CPU, answers a condemned engine delivered unchecked: each payload
/// must decode to `plain_len` bytes that hash to its chunk id. The ids of those that do
/// not are added to `wrong` (and logged), for the store to refuse or quarantine.
async fn recheck(engine: &str, suspects: Vec<Delivered>, cpu: &Arc<dyn Engine>, wrong: &Mutex<Vec<ChunkId>>) {
    if suspects.is_empty() {
        return;
    }
    let jobs = suspects
        .iter()
        .map(|d| {
            Job::encoded(
                d.payload.clone(),
                d.codec,
                vec![Step::Decompress { codec: d.codec, plain_len: d.plain_len }, Step::Verify(d.id)],
            )
        })
        .collect();
    let results = cpu.submit(jobs).await;
    let bad: Vec<ChunkId> = suspects
        .iter()
        .zip(results.iter().map(Result::is_ok).chain(std::iter::repeat(false)))
        .filter(|(_, ok)| !ok)
        .map(|(d, _)| d.id)
        .collect();
    if bad.is_empty() {
        tracing::info!(engine, rechecked = suspects.len(), "a condemned engine's earlier answers were right");
        return;
    }
    for id in &bad {
        tracing::error!(engine, chunk = %id, "a condemned engine delivered a wrong payload for this chunk");
    }
    wrong.lock().extend(bad);
}

/// The jobs of one batch sent to one engine.
struct Part {
    route: usize,
    indices: Vec<usize>,
    originals: Vec<Job>,
    check: Vec<bool>,
}

/// Awaits an engine's answers; falls back, spot-checks and condemns as needed.
async fn finish_part(
    part: &Part,
    done: Completion,
    state: &RouteState,
    cpu: &Arc<dyn Engine>,
    config: &RouterConfig,
    wrong_chunks: &Mutex<Vec<ChunkId>>,
) -> Results {
    let engine = &state.route.engine;
    let answers = match tokio::runtime::Handle::try_current() {
        // Without a runtime there is no timer: wait as long as the engine takes.
        Err(_) => done.await,
        Ok(_) => match tokio::time::timeout(config.deadline, done).await {
            Ok(answers) => answers,
            Err(_) => {
                state.disable(config.disable_for, "past the deadline");
                return rerun_on_cpu(part, cpu, engine.metrics()).await;
            }
        },
    };
    let mut answers: Vec<Option<Result<JobOutput, JobError>>> = answers.into_iter().map(Some).collect();
    answers.resize_with(part.originals.len(), || Some(Err(JobError::EngineGone(engine.name().to_owned()))));
    // Engine failures (and engine claims that data is corrupt, which a lying engine
    // could make too) are settled by the CPU.
    let mut redo: Vec<usize> = Vec::new();
    let mut compare: Vec<usize> = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Some(Ok(_)) if part.check[i] => compare.push(i),
            Some(Ok(_)) => {}
            Some(Err(JobError::Busy(_))) => redo.push(i),
            Some(Err(JobError::Unavailable { reason, .. })) => {
                state.disable(config.disable_for, reason);
                redo.push(i);
            }
            Some(Err(JobError::EngineGone(_))) => {
                state.disable(config.disable_for, "engine gone");
                redo.push(i);
            }
            Some(Err(_)) => compare.push(i),
            None => redo.push(i),
        }
    }
    if redo.is_empty() && compare.is_empty() {
        return match deliver(part, state, answers, &[]) {
            Some(answers) => answers,
            None => rerun_on_cpu(part, cpu, engine.metrics()).await,
        };
    }
    for &i in &redo {
        engine.metrics().record_fallback(main_op(&part.originals[i]));
    }
    // One CPU batch: the jobs to redo, then one check per answer to compare.
    let (checks, check_jobs): (Vec<Check>, Vec<Job>) =
        compare.iter().map(|&i| Check::plan(&part.originals[i], answers[i].as_ref().expect("present"))).unzip();
    let cpu_jobs = redo.iter().map(|&i| part.originals[i].clone()).chain(check_jobs).collect();
    let mut cpu_answers = cpu.submit(cpu_jobs).await.into_iter();
    for &i in &redo {
        answers[i] = Some(cpu_answers.next().unwrap_or_else(|| Err(JobError::EngineGone(cpu.name().to_owned()))));
    }
    let mut wrong = None;
    for (check, &i) in checks.iter().zip(&compare) {
        let cpu_answer = cpu_answers.next().unwrap_or_else(|| Err(JobError::EngineGone(cpu.name().to_owned())));
        let engine_answer = answers[i].take().expect("present");
        match check.judge(&part.originals[i], engine_answer, cpu_answer, cpu).await {
            Ok(answer) => answers[i] = Some(answer),
            Err(reason) => {
                wrong = Some(reason);
                break;
            }
        }
    }
    if let Some(reason) = wrong {
        let suspects = state.condemn(&reason);
        engine.metrics().record_op_error(main_op(&part.originals[0]));
        recheck(engine.name(), suspects, cpu, wrong_chunks).await;
        // Nothing this engine answered in this batch is trusted.
        return rerun_on_cpu(part, cpu, engine.metrics()).await;
    }
    state.passed(compare.len() as u64);
    let settled: Vec<usize> = redo.into_iter().chain(compare).collect();
    match deliver(part, state, answers, &settled) {
        Some(answers) => answers,
        None => rerun_on_cpu(part, cpu, engine.metrics()).await,
    }
}

/// Hands the answers on, remembering those of the engine that no check settled (all
/// but `settled`, which the CPU computed or confirmed); `None` if the engine was
/// condemned while they were on their way (by another batch), so that nothing it
/// answered escapes the recheck.
fn deliver(
    part: &Part,
    state: &RouteState,
    answers: Vec<Option<Result<JobOutput, JobError>>>,
    settled: &[usize],
) -> Option<Results> {
    let mut results = Vec::with_capacity(answers.len());
    for (i, answer) in answers.into_iter().enumerate() {
        let mut answer = answer.expect("present");
        if let Ok(out) = &mut answer {
            if settled.contains(&i) {
                out.from_engine = None;
            } else if !state.delivered(&part.originals[i], out) {
                return None;
            }
        }
        results.push(answer);
    }
    Some(results)
}

/// How one offloaded answer is checked on the CPU.
enum Check {
    /// The job is hash and/or compress over plain bytes and the engine succeeded: the
    /// CPU decodes the engine's payload and hashes what it decodes, which must be the
    /// input and (if asked for) the engine's chunk id.
    Verify {
        /// whether the chain asked for a chunk id
        wants_id: bool,
    },
    /// Anything else: the CPU redoes the job and the answers must mean the same.
    Recompute,
}

impl Check {
    /// The check for `answer` to `job`, and the CPU job that settles it.
    /// Whether `job` is hash and/or compress over plain bytes: its answer can be checked
    /// from the answer alone (decoding the payload), without the input.
    fn hash_and_compress(job: &Job) -> bool {
        job.codec == Codec::Raw
            && !job.steps.is_empty()
            && job.steps.iter().all(|s| matches!(s, Step::ChunkId | Step::Compress { .. }))
    }

    fn plan(job: &Job, answer: &Result<JobOutput, JobError>) -> (Self, Job) {
        let hash_and_compress = Self::hash_and_compress(job);
        match (answer, u32::try_from(job.data.len())) {
            (Ok(out), Ok(plain_len)) if hash_and_compress => {
                let wants_id = job.steps.iter().any(|s| matches!(s, Step::ChunkId));
                let decode = Job::encoded(
                    out.data.clone(),
                    out.codec,
                    vec![Step::Decompress { codec: out.codec, plain_len }, Step::ChunkId],
                );
                (Self::Verify { wants_id }, decode)
            }
            _ => (Self::Recompute, job.clone()),
        }
    }

    /// The answer to keep, or why the engine's answer is wrong.
    async fn judge(
        &self,
        job: &Job,
        engine_answer: Result<JobOutput, JobError>,
        cpu_answer: Result<JobOutput, JobError>,
        cpu: &Arc<dyn Engine>,
    ) -> Result<Result<JobOutput, JobError>, String> {
        let Self::Verify { wants_id } = *self else {
            agree(job, &engine_answer, &cpu_answer, cpu).await?;
            return Ok(cpu_answer);
        };
        let answer = engine_answer.map_err(|e| format!("engine answer changed under the check: {e}"))?;
        let decoded = cpu_answer.map_err(|e| format!("{:?} output does not decode: {e}", answer.codec))?;
        if !answer.cuts.is_empty() || !answer.sums.is_empty() || answer.digests.is_some() {
            return Err("the engine returned results the chain did not ask for".into());
        }
        if decoded.data != job.data {
            return Err(format!("{:?} output decodes to other bytes than the input", answer.codec));
        }
        let expected = if wants_id { decoded.chunk_id } else { None };
        if answer.chunk_id != expected {
            return Err(format!("chunk id {:?} where the CPU computes {expected:?}", answer.chunk_id));
        }
        Ok(Ok(answer))
    }
}

async fn rerun_on_cpu(part: &Part, cpu: &Arc<dyn Engine>, metrics: &EngineMetrics) -> Results {
    for job in &part.originals {
        metrics.record_fallback(main_op(job));
    }
    cpu.submit(part.originals.clone()).await
}

/// The operation a job is counted under: its last step (compress for hash + compress).
fn main_op(job: &Job) -> OpKind {
    job.steps.last().map_or(OpKind::ChunkId, Step::op)
}

/// Whether an engine's answer means the same as the CPU's. Compressed payloads may
/// differ byte for byte between implementations; they must decode to the same plain
/// bytes.
async fn agree(
    job: &Job,
    engine: &Result<JobOutput, JobError>,
    cpu_answer: &Result<JobOutput, JobError>,
    cpu: &Arc<dyn Engine>,
) -> Result<(), String> {
    let (e, c) = match (engine, cpu_answer) {
        (Ok(e), Ok(c)) => (e, c),
        (Err(e), Err(c)) if std::mem::discriminant(e) == std::mem::discriminant(c) => return Ok(()),
        (e, c) => return Err(format!("engine answered {:?}, the CPU {:?}", e.as_ref().err(), c.as_ref().err())),
    };
    if e.chunk_id != c.chunk_id {
        return Err(format!("chunk id {:?} where the CPU computes {:?}", e.chunk_id, c.chunk_id));
    }
    if e.sums != c.sums || e.cuts != c.cuts {
        return Err("checksums or cut points differ from the CPU's".into());
    }
    if e.codec == c.codec && e.data == c.data {
        return Ok(());
    }
    // Different encodings are fine if they decode to what the CPU decodes to.
    let plain = if c.codec == Codec::Raw {
        c.data.clone()
    } else if job.codec == Codec::Raw && !job.steps.iter().any(|s| matches!(s, Step::Decompress { .. })) {
        job.data.clone()
    } else {
        return Err("compressed output differs from the CPU's".into());
    };
    if e.codec == Codec::Raw {
        return if e.data == plain { Ok(()) } else { Err("output bytes differ from the CPU's".into()) };
    }
    let decode =
        Job::encoded(e.data.clone(), e.codec, vec![Step::Decompress { codec: e.codec, plain_len: plain.len() as u32 }]);
    match cpu.submit(vec![decode]).await.pop() {
        Some(Ok(decoded)) if decoded.data == plain => Ok(()),
        Some(Ok(_)) => Err(format!("{:?} output decodes to other bytes than the input", e.codec)),
        other => Err(format!("{:?} output does not decode: {:?}", e.codec, other.map(|r| r.err()))),
    }
}
