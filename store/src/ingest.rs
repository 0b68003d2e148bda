//! The write pipeline: body stream → FastCDC → BLAKE3 + compression on the offload
//! engine → dedup against the index → new chunks appended to packs.
//!
//! An offload engine other than the host CPU (an agent on a DPU, another vendor's
//! program) is trusted for speed, never for what the store serves: every chunk id it
//! computed is confirmed on the host (BLAKE3 of the plain chunk) before the id is looked
//! up for dedup or written. Confirming only dedup hits would not be enough: a chunk
//! written under a wrong id X would later be a dedup hit, rightly confirmed, for another
//! object whose chunk really hashes to X, which would then point at this object's data.
//! The cost is one host BLAKE3 of the bytes offloaded (about 4 GiB/s per core, against
//! the compression the engine keeps doing; `benches/RESULTS.md`). Ids the CPU engine
//! computed, or the router confirmed, are not hashed again.
//!
//! Memory stays bounded whatever the object size: one segment being cut, a bounded
//! number of chunk jobs in flight and the unwritten tail of one open pack. Nothing is visible until
//! [`crate::Store`] commits the returned [`Ingested`] in one metadata batch.

use crate::Store;
use crate::chunks::PackWriter;
use crate::claims::ClaimSet;
use crate::error::StoreError;
use crate::frame;
use crate::meta::{cf, keys, values::ChunkLoc, values::ChunkRef, values::PackRecord};
use crate::metrics::StoreMetrics;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use hw_offload::{
    ChecksumAlgo, ChunkId, Codec, Completion, Digests, Job, JobBuffer, JobError, Offload, Step, StreamDigests,
};
use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;

/// Bytes cut per boundaries job; the carry-over is at most one chunk.
const SEGMENT_BYTES: usize = 2 << 20;
/// Room in a segment buffer: the segment plus one body piece that overshoots it (pieces
/// are usually far smaller; a larger one makes the buffer grow, which moves it).
const SEGMENT_BUFFER_BYTES: usize = SEGMENT_BYTES + (1 << 20);
/// Chunk jobs in flight per writer: enough to keep every engine thread busy while the
/// writer awaits pack I/O, bounded so a fast client cannot queue the whole object. With
/// an offload agent, the host pays per doorbell (a wake-up of its thread, about 150 µs
/// of CPU with cold caches on a loaded VM) rather than per job, and the agent rings once
/// its queue is drained: the deeper the window, the fewer doorbells per GiB.
pub const CHUNK_JOBS_IN_FLIGHT: usize = 64;
/// Chunk jobs in flight per writer when the engine is the host's own CPU pool, which
/// pays per job, not per wake-up: enough for its threads, and each job holds its
/// segment (2 MiB) in memory until it is polled.
const CHUNK_JOBS_IN_FLIGHT_ON_HOST: usize = 16;
/// Segments queued for the whole-object digests. The digest engine hashes concurrent
/// bodies together and may wait a few milliseconds for company: two segments keep a
/// body from waiting on it, and each holds 2 MiB.
const DIGEST_QUEUE: usize = 2;

/// What an ingest should compute and allow.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// S3 checksums to compute over the whole body (MD5 is always computed).
    pub checksums: Vec<ChecksumAlgo>,
    /// Whether a small body may be kept inline in metadata.
    pub allow_inline: bool,
    /// Reject bodies longer than this.
    pub max_bytes: u64,
}

/// How the body is stored.
#[derive(Debug)]
pub(crate) enum IngestedBody {
    Inline(Vec<u8>),
    Chunks(Vec<ChunkRef>),
}

/// A body written to packs but not yet committed: invisible, and released (its packs
/// left to GC) if dropped.
#[derive(Debug)]
pub struct Ingested {
    pub(crate) body: IngestedBody,
    pub(crate) size: u64,
    pub(crate) digests: Digests,
    pub(crate) new_chunks: Vec<(ChunkId, ChunkLoc)>,
    pub(crate) packs: Vec<(u64, PackRecord)>,
    /// Held for its `Drop`: the claims end when the ingest is committed or dropped.
    pub(crate) _claims: ClaimSet,
    pub(crate) stats: IngestStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IngestStats {
    pub(crate) payload_written: u64,
    pub(crate) deduplicated: u64,
    pub(crate) compression_saved: u64,
    pub(crate) chunks_written: u64,
    pub(crate) chunks_deduplicated: u64,
}

impl Ingested {
    /// Bytes in the body.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The body's digests.
    pub fn digests(&self) -> &Digests {
        &self.digests
    }

    pub(crate) fn record(&self, metrics: &StoreMetrics) {
        StoreMetrics::add(&metrics.bytes_ingested, self.size);
        StoreMetrics::add(&metrics.bytes_written, self.stats.payload_written);
        StoreMetrics::add(&metrics.bytes_deduplicated, self.stats.deduplicated);
        StoreMetrics::add(&metrics.compression_saved, self.stats.compression_saved);
        StoreMetrics::add(&metrics.chunks_written, self.stats.chunks_written);
        StoreMetrics::add(&metrics.chunks_deduplicated, self.stats.chunks_deduplicated);
        StoreMetrics::add(&metrics.packs_written, self.packs.len() as u64);
    }
}

/// Runs the whole-object digests in order on the engine, fed segment by segment.
struct DigestPipe {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<Result<Box<StreamDigests>, StoreError>>,
}

impl DigestPipe {
    fn start(offload: Offload, checksums: &[ChecksumAlgo]) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(DIGEST_QUEUE);
        let mut state = Box::new(StreamDigests::new(checksums));
        let task = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                let out = offload.run(Job::new(data, vec![Step::Digest(state)])).await?;
                state = out.digests.expect("a Digest step returns its state");
            }
            Ok(state)
        });
        Self { tx, task }
    }

    async fn feed(&self, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.tx.send(data).await.is_err() {
            // The task ended early, which it does only on an engine error: surface it.
            return Err(StoreError::Backend("digest pipeline stopped".into()));
        }
        Ok(())
    }

    async fn finish(self) -> Result<Digests, StoreError> {
        drop(self.tx);
        let state = self.task.await.map_err(|e| StoreError::Backend(format!("digest task: {e}")))??;
        Ok(state.finish())
    }
}

/// Appends new chunk frames to packs, sealing each at the target size.
struct Packer<'a> {
    store: &'a Store,
    pack: Option<PackWriter>,
    new_chunks: Vec<(ChunkId, ChunkLoc)>,
    packs: Vec<(u64, PackRecord)>,
    /// New chunks whose payload is an offload engine's (their ids were confirmed on the
    /// host, their payloads only as the router samples them).
    engine_payloads: HashSet<ChunkId>,
}

impl Packer<'_> {
    async fn append(
        &mut self,
        claims: &mut ClaimSet,
        id: ChunkId,
        frame: [Bytes; 2],
        plain_len: u32,
    ) -> Result<(), StoreError> {
        if self.pack.is_none() {
            let pack = rand::random::<u64>();
            claims.open_pack(pack);
            self.pack = Some(self.store.chunks.start_pack(pack)?);
        }
        let pack = self.pack.as_mut().expect("opened above");
        let frame_len = frame.iter().map(Bytes::len).sum::<usize>() as u32;
        let loc = ChunkLoc { pack: pack.id(), offset: pack.len(), frame_len, plain_len };
        pack.append_pieces(frame).await?;
        self.new_chunks.push((id, loc));
        if pack.len() >= self.store.config.pack_target_bytes {
            self.seal().await?;
        }
        Ok(())
    }

    async fn seal(&mut self) -> Result<(), StoreError> {
        let Some(pack) = self.pack.take() else { return Ok(()) };
        let id = pack.id();
        let bytes = pack.seal().await?;
        self.packs.push((id, PackRecord { bytes, created_ms: crate::now_ms() }));
        Ok(())
    }
}

impl Store {
    /// Reads `body` through the pipeline into packs. The result is invisible until
    /// committed (as an object or a part).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn ingest<S, E>(&self, body: S, opts: &IngestOptions) -> Result<Ingested, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut body = pin!(body);
        let offload = self.offload.clone();
        let digests = DigestPipe::start(offload.clone(), &opts.checksums);
        let mut claims = ClaimSet::new(self.claims.clone());
        let mut packer = Packer {
            store: self,
            pack: None,
            new_chunks: Vec::new(),
            packs: Vec::new(),
            engine_payloads: HashSet::new(),
        };
        let mut stats = IngestStats::default();
        let mut manifest: Vec<ChunkRef> = Vec::new();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut jobs: FuturesOrdered<ChunkJob> = FuturesOrdered::new();
        // Segments are filled in host memory, never in an offload agent's shared region:
        // the agent could rewrite bytes there after handing back its chunk id, and the
        // host confirms that id by hashing these very bytes (and keeps them raw when the
        // id is wrong). Jobs copy their input into the region instead.
        let mut carry = JobBuffer::heap(SEGMENT_BUFFER_BYTES);
        let mut size = 0u64;
        let mut eof = false;
        let mut first = true;
        let in_flight = if offload.runs_off_host() { CHUNK_JOBS_IN_FLIGHT } else { CHUNK_JOBS_IN_FLIGHT_ON_HOST };
        let inline_max = if opts.allow_inline { self.config.inline_max_bytes as usize } else { 0 };

        while !eof {
            let carried = carry.len();
            while !eof && carry.len() < SEGMENT_BYTES {
                match body.next().await {
                    Some(Ok(data)) => {
                        size += data.len() as u64;
                        if size > opts.max_bytes {
                            return Err(StoreError::TooLarge { limit: opts.max_bytes });
                        }
                        carry.extend_from_slice(&data);
                    }
                    Some(Err(e)) => return Err(StoreError::Body(e.to_string())),
                    None => eof = true,
                }
            }
            let next = JobBuffer::heap(if eof { 0 } else { SEGMENT_BUFFER_BYTES });
            let segment = std::mem::replace(&mut carry, next).freeze();
            digests.feed(segment.slice(carried..)).await?;
            if first && eof && segment.len() <= inline_max {
                let digests = digests.finish().await?;
                return Ok(Ingested {
                    body: IngestedBody::Inline(segment.to_vec()),
                    size,
                    digests,
                    new_chunks: Vec::new(),
                    packs: Vec::new(),
                    _claims: claims,
                    stats,
                });
            }
            first = false;
            let cuts = offload
                .run(Job::new(segment.clone(), vec![Step::Boundaries { chunker: self.config.chunker, eof }]))
                .await?
                .cuts;
            let mut offset = 0usize;
            for len in cuts {
                let chunk = segment.slice(offset..offset + len as usize);
                offset += len as usize;
                jobs.push_back(self.chunk_job(chunk));
                while jobs.len() >= in_flight {
                    let done = jobs.next().await.expect("queue is not empty");
                    self.keep_chunk(done?, &mut claims, &mut seen, &mut packer, &mut manifest, &mut stats).await?;
                }
            }
            carry.extend_from_slice(&segment[offset..]);
        }
        while let Some(done) = jobs.next().await {
            self.keep_chunk(done?, &mut claims, &mut seen, &mut packer, &mut manifest, &mut stats).await?;
        }
        packer.seal().await?;
        // An engine condemned while this body was written may have delivered payloads
        // that a recheck found wrong: a body that wrote one of them is not committed.
        let wrong = offload.wrong_chunks();
        if let Some(bad) = wrong.iter().find(|id| packer.engine_payloads.contains(id)) {
            return Err(StoreError::Offload(JobError::Unavailable {
                engine: "offload".into(),
                reason: format!("a condemned offload engine delivered a wrong payload for chunk {bad}; retry"),
            }));
        }
        let digests = digests.finish().await?;
        Ok(Ingested {
            body: IngestedBody::Chunks(manifest),
            size,
            digests,
            new_chunks: packer.new_chunks,
            packs: packer.packs,
            _claims: claims,
            stats,
        })
    }

    fn chunk_job(&self, chunk: Bytes) -> ChunkJob {
        let mut steps = vec![Step::ChunkId];
        steps.extend(self.config.compress_step());
        // The input is kept only where an answer may need confirming: a reference keeps
        // its whole segment in memory until the job is polled, which with many bodies
        // in flight is tens of MiB.
        let plain = if self.offload.runs_off_host() { chunk.clone() } else { Bytes::new() };
        ChunkJob { plain_len: chunk.len() as u32, completion: self.offload.submit(vec![Job::new(chunk, steps)]), plain }
    }

    /// Dedups one hashed chunk or appends it to the pack.
    async fn keep_chunk(
        &self,
        done: HashedChunk,
        claims: &mut ClaimSet,
        seen: &mut HashSet<ChunkId>,
        packer: &mut Packer<'_>,
        manifest: &mut Vec<ChunkRef>,
        stats: &mut IngestStats,
    ) -> Result<(), StoreError> {
        let done = self.confirm(done).await;
        manifest.push(ChunkRef { id: done.id, len: done.plain_len });
        // A chunk whose stored payload a recheck found wrong is written again (which
        // repairs it at commit), never deduplicated against.
        let suspect = self.offload.wrong_chunks().contains(&done.id);
        if !seen.insert(done.id) && !suspect {
            stats.deduplicated += done.plain_len as u64;
            return Ok(());
        }
        // Claim before looking: see claims.rs for why the order matters.
        claims.claim_chunk(done.id);
        if !suspect && self.meta.contains(cf::CHUNKS, &keys::chunk_key(&done.id))? {
            stats.deduplicated += done.plain_len as u64;
            stats.chunks_deduplicated += 1;
            return Ok(());
        }
        // The payload is usually a slice of the body's segment (a chunk kept raw), and
        // goes to the pack file as it is.
        let frame = [frame::header(&done.id, done.codec, done.plain_len, done.payload.len()), done.payload.clone()];
        stats.payload_written += done.payload.len() as u64;
        stats.compression_saved += (done.plain_len as u64).saturating_sub(done.payload.len() as u64);
        stats.chunks_written += 1;
        if done.from_engine.is_some() {
            packer.engine_payloads.insert(done.id);
        }
        packer.append(claims, done.id, frame, done.plain_len).await
    }
}

impl Store {
    /// Starts hashing and compressing a chunk a client cut and hashed itself (a job's
    /// stage-out), on the offload engine: its id is a claim, so it is hashed again here,
    /// and compressed as an ingest would. [`Self::keep_plain_chunk`] stores it. Several
    /// started at once keep the engine's threads busy while the caller reads the next.
    pub fn start_plain_chunk(&self, plain: Bytes) -> PlainChunkJob {
        PlainChunkJob(self.chunk_job(plain))
    }

    /// Stores into `sink` a chunk [`Self::start_plain_chunk`] started: refused, nothing
    /// appended, if its bytes do not hash to `claimed`.
    pub async fn keep_plain_chunk(
        &self,
        sink: &mut crate::transfer::ChunkSink,
        claimed: ChunkId,
        job: PlainChunkJob,
    ) -> Result<(), StoreError> {
        let done = self.confirm(job.0.await?).await;
        if done.id != claimed {
            return Err(StoreError::DigestMismatch {
                algo: "BLAKE3",
                expected: claimed.to_string(),
                actual: done.id.to_string(),
            });
        }
        let header = frame::header(&done.id, done.codec, done.plain_len, done.payload.len());
        sink.append_pieces(done.id, [header, done.payload], done.plain_len).await
    }

    /// Confirms on the host a chunk id an offload engine computed (see the module doc).
    /// A wrong one condemns the engine, and the chunk is kept raw under the id the host
    /// computed: the engine's payload is its word too.
    async fn confirm(&self, done: HashedChunk) -> HashedChunk {
        let Some(engine) = &done.from_engine else { return done };
        let id = ChunkId::of(&done.plain);
        if id == done.id {
            return done;
        }
        let reason = format!("chunk id {} where the host computes {id}", done.id);
        tracing::error!(engine = &**engine, %reason, "offload engine gave a wrong chunk id; confirmed on the host");
        self.offload.distrust(engine, &reason).await;
        HashedChunk {
            id,
            plain_len: done.plain_len,
            codec: Codec::Raw,
            payload: done.plain.clone(),
            plain: done.plain,
            from_engine: None,
        }
    }
}

struct HashedChunk {
    id: ChunkId,
    plain_len: u32,
    codec: Codec,
    payload: Bytes,
    /// The chunk's plain bytes, to confirm an engine's id with.
    plain: Bytes,
    /// The offload engine whose word `id` is (`None`: computed or confirmed on the host).
    from_engine: Option<Arc<str>>,
}

/// A client's chunk being hashed and compressed ([`Store::start_plain_chunk`]).
pub struct PlainChunkJob(ChunkJob);

/// A chunk's hash-and-compress job.
struct ChunkJob {
    plain_len: u32,
    /// The input, when an answer may need confirming against it (else empty).
    plain: Bytes,
    completion: Completion,
}

impl std::future::Future for ChunkJob {
    type Output = Result<HashedChunk, StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let mut results = std::task::ready!(std::pin::Pin::new(&mut self.completion).poll(cx));
        let plain = std::mem::take(&mut self.plain);
        std::task::Poll::Ready(results.pop().expect("one result per job").map_err(StoreError::from).map(|out| {
            HashedChunk {
                id: out.chunk_id.expect("ChunkId step ran"),
                plain_len: self.plain_len,
                codec: out.codec,
                payload: out.data,
                plain: if out.from_engine.is_some() { plain } else { Bytes::new() },
                from_engine: out.from_engine,
            }
        }))
    }
}
