//! The transfer protocol's core, without I/O: tested and fuzzed without sockets.
//!
//! - [`wire`]: frames and messages, bounded before parsing;
//! - [`session`]: the sender and receiver state machines;
//! - [`delta`]: changed chunks coded against the chunks they replaced.
//!
//! A transfer: the sender offers its manifest in batches ([`wire::Control::Offer`]); the
//! receiver answers each with the chunks it lacks ([`wire::Control::Need`]), naming for a
//! changed chunk the ones it replaced; the sender streams those chunks as stored (or as
//! deltas) on several unidirectional streams; the receiver verifies each one's BLAKE3,
//! keeps it durably under the transfer's reference, asks again for any that fail, and
//! commits every object in one batch when all are in.

pub mod delta;
pub mod session;
pub mod wire;
