//! The read path for chunked objects: the chunks covering a range are looked up a
//! window at a time, neighbours in the same pack are fetched with one ranged read (a
//! freshly written object is contiguous in its packs), and each window's chunks are
//! decoded and verified as one batch on the offload engine.

use crate::Store;
use crate::error::StoreError;
use crate::frame::{self, FrameHeader};
use crate::meta::values::{ChunkLoc, ChunkRef};
use crate::meta::{cf, keys};
use crate::metrics::StoreMetrics;
use bytes::Bytes;
use futures::{StreamExt, stream};
use hw_offload::JobError;
use std::ops::Range;
use std::sync::Arc;

/// Chunks whose locations are looked up together.
const WINDOW_CHUNKS: usize = 128;
/// Largest single ranged read: bounds memory per read in flight.
const MAX_RUN_BYTES: u64 = 1 << 20;

/// Neighbouring chunks fetched with one ranged read.
struct Run {
    pack: u64,
    start: u64,
    end: u64,
    /// each chunk, its location, and the slice of its plain bytes wanted
    chunks: Vec<(ChunkRef, ChunkLoc, Range<usize>)>,
}

impl Store {
    /// Streams the plain bytes of `chunks` in order from `skip` bytes into the first,
    /// verified; neighbours in a pack are read together.
    pub fn read_chunks(
        self: &Arc<Self>,
        chunks: Vec<ChunkRef>,
        skip: usize,
    ) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static + use<> {
        let pieces = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let from = if i == 0 { skip.min(chunk.len as usize) } else { 0 };
                (chunk, from..chunk.len as usize)
            })
            .collect();
        self.stream_chunks(pieces)
    }

    /// Streams `pieces` (chunks and the slice of each wanted), verified.
    pub(crate) fn stream_chunks(
        self: &Arc<Self>,
        pieces: Vec<(ChunkRef, Range<usize>)>,
    ) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static + use<> {
        let windows: Vec<Vec<(ChunkRef, Range<usize>)>> = pieces.chunks(WINDOW_CHUNKS).map(<[_]>::to_vec).collect();
        let planner = self.clone();
        let reader = self.clone();
        // Each run is a few MiB at most; keep about as many bytes in flight as the
        // per-chunk read-ahead would.
        let runs_in_flight = (self.config.read_ahead_chunks / 2).max(2);
        stream::iter(windows)
            .map(move |window| planner.plan_runs(window))
            .flat_map(|planned| {
                let items: Vec<Result<Run, StoreError>> = match planned {
                    Ok(runs) => runs.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(items)
            })
            .map(move |run| {
                let store = reader.clone();
                async move { store.read_run(run?).await }
            })
            .buffered(runs_in_flight)
            .flat_map(|pieces| {
                let items: Vec<Result<Bytes, StoreError>> = match pieces {
                    Ok(p) => p.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                stream::iter(items)
            })
    }

    /// Looks up a window's locations and groups neighbours into runs.
    fn plan_runs(&self, window: Vec<(ChunkRef, Range<usize>)>) -> Result<Vec<Run>, StoreError> {
        let mut runs: Vec<Run> = Vec::new();
        for (chunk, within) in window {
            let loc = self
                .meta
                .get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(&chunk.id))?
                .ok_or(StoreError::MissingChunk(chunk.id))?;
            let end = loc.offset + loc.frame_len as u64;
            match runs.last_mut() {
                Some(run) if run.pack == loc.pack && run.end == loc.offset && end - run.start <= MAX_RUN_BYTES => {
                    run.end = end;
                    run.chunks.push((chunk, loc, within));
                }
                _ => runs.push(Run { pack: loc.pack, start: loc.offset, end, chunks: vec![(chunk, loc, within)] }),
            }
        }
        Ok(runs)
    }

    /// Fetches a run with one ranged read and verifies its chunks as one batch.
    async fn read_run(&self, run: Run) -> Result<Vec<Bytes>, StoreError> {
        let raw = match self.chunks.read(run.pack, run.start, (run.end - run.start) as u32).await {
            Ok(raw) => raw,
            // GC may have moved these chunks since the lookup: read each anew.
            Err(_) => {
                let mut out = Vec::with_capacity(run.chunks.len());
                for (chunk, _, within) in run.chunks {
                    out.push(self.read_chunk(&chunk).await?.slice(within));
                }
                return Ok(out);
            }
        };
        let mut jobs = Vec::with_capacity(run.chunks.len());
        for (chunk, loc, _) in &run.chunks {
            let at = (loc.offset - run.start) as usize;
            let bytes = raw.slice(at..at + loc.frame_len as usize);
            let (header, payload) = match frame::decode(&bytes) {
                Ok(decoded) => decoded,
                Err(e) => return Err(self.quarantine(chunk.id, *loc, e.to_string()).await),
            };
            if let Err(damage) = check_frame(chunk, loc, &header) {
                return Err(match damage {
                    FrameDamage::Frame(reason) => self.quarantine(chunk.id, *loc, reason).await,
                    FrameDamage::Reference(e) => e,
                });
            }
            jobs.push(frame::verify_job(&header, payload));
        }
        let results = self.offload.submit(jobs).await;
        let mut out = Vec::with_capacity(results.len());
        for ((chunk, loc, within), result) in run.chunks.into_iter().zip(results) {
            match result {
                Ok(plain) => {
                    StoreMetrics::add(&self.metrics().bytes_read, within.len() as u64);
                    out.push(plain.data.slice(within));
                }
                Err(e @ (JobError::Corrupt { .. } | JobError::Decode { .. })) => {
                    return Err(self.quarantine(chunk.id, loc, e.to_string()).await);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

/// What is wrong when a frame read for a chunk does not match what the index and the
/// object say, found before its payload is verified.
pub(crate) enum FrameDamage {
    /// The stored frame is not what the index describes: the chunk is damaged (quarantine
    /// it, a peer can repair it).
    Frame(String),
    /// The object's reference disagrees with the index: that object is damaged, not the
    /// chunk, which every other object naming it still reads.
    Reference(StoreError),
}

/// Checks a frame's header against the chunk's index entry, and the object's reference
/// against both. The index entry was written from the verified chunk, and a frame header
/// carries no checksum of its own: where the two disagree, the frame is damaged.
pub(crate) fn check_frame(chunk: &ChunkRef, loc: &ChunkLoc, header: &FrameHeader) -> Result<(), FrameDamage> {
    if header.id != chunk.id {
        return Err(FrameDamage::Frame(format!("frame names chunk {}", header.id)));
    }
    if header.plain_len != loc.plain_len {
        return Err(FrameDamage::Frame(format!("frame says {} bytes, the index {}", header.plain_len, loc.plain_len)));
    }
    if chunk.len != loc.plain_len {
        return Err(FrameDamage::Reference(StoreError::ChunkLengthMismatch {
            id: chunk.id,
            referenced: chunk.len,
            held: loc.plain_len,
        }));
    }
    Ok(())
}
