//! The engine-neutral description of work: a [`Job`] is one buffer and a chain of
//! [`Step`]s applied in order; transforming steps (compress, decompress) replace the
//! buffer for the steps after them.

use crate::kernels::cdc::ChunkerConfig;
use crate::kernels::codec::Codec;
use crate::kernels::digest::{ChunkId, StreamDigests, SumAlgo};
use crate::metrics::OpKind;
use bytes::Bytes;
use std::sync::Arc;

/// One step of a job's chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Step {
    /// FastCDC chunk lengths of the data, which starts on a boundary
    /// (see [`crate::kernels::cdc::cut_points`] for `eof`).
    Boundaries {
        /// chunk size bounds
        chunker: ChunkerConfig,
        /// whether the data ends the stream
        eof: bool,
    },
    /// Feeds the data to running whole-object digests, handed back in
    /// [`JobOutput::digests`]. Jobs carrying the same digests must be run in order.
    Digest(Box<StreamDigests>),
    /// BLAKE3 of the current data, into [`JobOutput::chunk_id`].
    ChunkId,
    /// Compresses the current data; it stays [`Codec::Raw`] when compression does not pay.
    Compress {
        /// the codec to try
        codec: Codec,
        /// its level
        level: i32,
    },
    /// Decodes the current data, which must expand to exactly `plain_len` bytes.
    Decompress {
        /// the codec the data is in
        codec: Codec,
        /// the expected decoded length
        plain_len: u32,
    },
    /// The BLAKE3 of the current data must equal this id.
    Verify(ChunkId),
    /// A one-shot digest of the current data, appended to [`JobOutput::sums`].
    Sum(SumAlgo),
}

impl Step {
    /// The operation this step counts as in metrics and routing.
    pub fn op(&self) -> OpKind {
        match self {
            Self::Boundaries { .. } => OpKind::Boundaries,
            Self::Digest(_) => OpKind::Digest,
            Self::ChunkId | Self::Verify(_) => OpKind::ChunkId,
            Self::Compress { .. } => OpKind::Compress,
            Self::Decompress { .. } => OpKind::Decompress,
            Self::Sum(_) => OpKind::Sum,
        }
    }
}

/// A buffer and the steps to run over it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The input bytes.
    pub data: Bytes,
    /// The codec `data` is in when the job starts (Raw unless it is a stored payload).
    pub codec: Codec,
    /// The chain of steps.
    pub steps: Vec<Step>,
}

impl Job {
    /// A job over plain bytes.
    pub fn new(data: impl Into<Bytes>, steps: Vec<Step>) -> Self {
        Self { data: data.into(), codec: Codec::Raw, steps }
    }

    /// A job over a stored payload in `codec`.
    pub fn encoded(data: Bytes, codec: Codec, steps: Vec<Step>) -> Self {
        Self { data, codec, steps }
    }
}

/// What a job produced.
#[derive(Debug)]
pub struct JobOutput {
    /// The data after the last transforming step.
    pub data: Bytes,
    /// The codec `data` is in.
    pub codec: Codec,
    /// From [`Step::ChunkId`].
    pub chunk_id: Option<ChunkId>,
    /// From [`Step::Boundaries`]: chunk lengths.
    pub cuts: Vec<u32>,
    /// From [`Step::Digest`]: the digests, advanced by this job's data.
    pub digests: Option<Box<StreamDigests>>,
    /// From [`Step::Sum`] steps, in step order.
    pub sums: Vec<(SumAlgo, Vec<u8>)>,
    /// The offload engine whose word these results are, or `None` when the host CPU
    /// computed them or confirmed them (a router's checked answers). An engine other
    /// than the host is trusted for speed, never for correctness: a chunk id it computed
    /// is confirmed on the host before it decides what is stored (the store's ingest).
    pub from_engine: Option<Arc<str>>,
}

impl JobOutput {
    /// The output of a job with no steps run yet: its input.
    pub fn start(data: Bytes, codec: Codec) -> Self {
        Self { data, codec, chunk_id: None, cuts: Vec::new(), digests: None, sums: Vec::new(), from_engine: None }
    }
}

/// Why a job failed. A failed job never yields partial output.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// The data does not hash to the id it should have.
    #[error("checksum mismatch: expected chunk {expected}, data hashes to {actual}")]
    Corrupt {
        /// the id asked for
        expected: ChunkId,
        /// what the data hashes to
        actual: ChunkId,
    },
    /// The payload could not be decoded.
    #[error("cannot decode {codec:?} payload: {reason}")]
    Decode {
        /// the codec tried
        codec: Codec,
        /// what the decoder said
        reason: String,
    },
    /// The payload could not be encoded (an internal fault of the codec library).
    #[error("cannot encode with {codec:?}: {reason}")]
    Encode {
        /// the codec tried
        codec: Codec,
        /// what the encoder said
        reason: String,
    },
    /// The job asks for something this engine cannot do with this input.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// The engine stopped before running the job.
    #[error("offload engine {0} is shut down")]
    EngineGone(String),
    /// The engine is full right now (ring or shared buffers): the router runs the job on
    /// the CPU and keeps using the engine.
    #[error("offload engine {0} is busy")]
    Busy(String),
    /// The engine could not take the job now (disconnected, misbehaving);
    /// the router reruns it on the CPU.
    #[error("offload engine {engine} could not run the job: {reason}")]
    Unavailable {
        /// the engine
        engine: String,
        /// why
        reason: String,
    },
}
