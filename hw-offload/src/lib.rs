//! Work on bytes that the data path hands off: content-defined chunk boundaries, BLAKE3
//! chunk ids, whole-object digests (MD5 for S3 ETags, CRC32/CRC32C/CRC64NVME/SHA1/SHA256
//! for S3 checksums) and compression.
//!
//! Callers never run the kernels themselves: they describe a [`Job`] (a chain of
//! [`Step`]s over one buffer), submit batches to an [`Offload`] handle and await the
//! completions. The engine behind the handle decides where the work runs; the portable
//! default is [`CpuEngine`], a pool of worker threads away from the async reactor.
//!
//! Modules:
//! - [`kernels`]: the byte-crunching functions (for engines and benchmarks only);
//! - [`job`]: jobs, steps, outputs and errors, the engine-neutral description of work;
//! - [`engine`]: the [`Engine`] trait and the [`Offload`] handle the store calls;
//! - [`buffer`]: [`JobBuffer`], memory an engine reads without a copy (or the heap);
//! - [`cpu`]: the CPU engine;
//! - [`router`]: picks an engine per job, falls back to the CPU, spot-checks results;
//! - [`agent`]: the offload agent (another process, on other cores or a DPU) and the
//!   host engine that talks to it through shared-memory rings (`PROTOCOL.md`);
//! - [`fault`]: an engine that fails on purpose, for tests;
//! - [`metrics`]: per-operation counters every engine keeps.
//!
//! ```
//! # tokio_test_runtime();
//! # fn tokio_test_runtime() {
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! use hw_offload::{Job, Offload, Step};
//! let offload = Offload::cpu(1);
//! let out = offload.run(Job::new(&b"hello"[..], vec![Step::ChunkId])).await.unwrap();
//! assert_eq!(out.chunk_id.unwrap().to_hex(), blake3::hash(b"hello").to_hex().as_str());
//! # });
//! # }
//! ```

pub mod agent;
pub mod buffer;
pub mod cpu;
pub mod engine;
pub mod fault;
pub mod job;
pub mod kernels;
pub mod metrics;
pub mod router;

pub use agent::{AgentConfig, AgentEngine};
pub use buffer::JobBuffer;
pub use cpu::CpuEngine;
pub use engine::{Completion, Engine, Offload};
pub use fault::{Fault, FaultEngine};
pub use job::{Job, JobError, JobOutput, Step};
pub use kernels::cdc::{ChunkerConfig, ChunkerConfigError};
pub use kernels::codec::Codec;
pub use kernels::digest::{ChecksumAlgo, ChunkId, Digests, StreamDigests, SumAlgo};
pub use metrics::{EngineMetrics, OpKind, process_cpu_ns, thread_cpu_ns};
pub use router::{Route, Router, RouterConfig};
