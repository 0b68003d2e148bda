//! The transfer engine: the protocol core ([`transfer_proto`]) driven over quinn streams
//! and the local store, and the manager that runs a site's transfers. The daemon starts
//! it; integration tests can too.
//!
//! - [`driver`]: the state machines over one connection's streams and the local store;
//! - [`manager`]: the site's transfers: start, resume, cancel, priorities, rate caps,
//!   third-party copies, repair, serving peers, progress;
//! - [`versions`]: dataset versions as a transfer's payload, through the catalog the
//!   daemon hands in.

pub mod driver;
pub mod manager;
pub mod versions;

#[cfg(test)]
mod tests;
