//! The transfer protocol's core, without I/O: tested and fuzzed without sockets.
//!
//! - [`wire`]: frames and messages, bounded before parsing;
//! - [`session`]: the sender and receiver state machines;
//! - [`offer`]: how the sender cuts its objects into offers;
//! - [`delta`]: changed chunks coded against the chunks they replaced, which bases the
//!   receiver suggests, and the check that a delta uses only those.
//!
//! The driver (the `transfer-engine` crate) moves bytes and time: it reads and writes
//! streams, looks chunks up in its store and runs the offload jobs. The rules of a
//! transfer's exchange (offers and their bounds, what may be asked for and sent, chunk
//! lengths, delta bases) are decided here, where tests and the fuzzer reach them without
//! sockets; the engine still checks what only it can see (a repair's asked ids against its
//! store, destination keys and metadata, Open and Join against its transfers).
//!
//! A transfer: the sender offers its manifest in batches ([`wire::Control::Offer`]); the
//! receiver answers each with the chunks it lacks ([`wire::Control::Need`]), naming for a
//! changed chunk the ones it replaced; the sender streams those chunks as stored (or as
//! deltas) on several unidirectional streams; the receiver verifies each one's BLAKE3,
//! keeps it durably under the transfer's reference, asks again for any that fail, and
//! commits every object in one batch when all are in.

pub mod delta;
pub mod offer;
pub mod session;
pub mod wire;
