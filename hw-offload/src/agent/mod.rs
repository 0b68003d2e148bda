//! The offload agent: a process on other cores (a DPU's Arm cores, or spare host cores)
//! that runs hashing, checksum and compression jobs the host hands it through a shared
//! memory region. The wire format is in `hw-offload/PROTOCOL.md`.
//!
//! - [`shm`]: the mapping (the only `unsafe` code);
//! - [`ring`]: region layout, submission and completion entries;
//! - `pool`: the host's allocator over the data area, and the zero-copy slots it lends;
//! - [`host`]: [`AgentEngine`], the engine the host's router sends jobs to;
//! - [`server`]: the agent's serving loop.

pub mod host;
pub(crate) mod pool;
pub mod ring;
pub mod server;
pub mod shm;

pub use host::{AgentConfig, AgentEngine};
pub use server::{DEFAULT_IDLE_SPIN, ServeOptions, serve, serve_host};
