//! Transfers between sites over QUIC: the protocol core ([`transfer_daemon::protocol`])
//! driven over quinn streams and the store.
//!
//! - [`driver`]: the state machines over one connection's streams and the local store;
//! - [`manager`]: the daemon's transfers: start, resume, cancel, serve peers, progress.

pub mod driver;
pub mod manager;

#[cfg(test)]
use transfer_daemon::protocol::wire;

#[cfg(test)]
mod tests;
