//! The federated catalog of datasets, versions, replicas and rules.
//!
//! Not built yet: this crate only holds its place in the layering
//! (`hw-offload` ← `store` ← `catalog` ← `transfer-daemon`). The catalog issue fills it
//! with the federation log, placement queries and the scheduler API; until then it
//! exports nothing, so nothing can mistake it for a working catalog.
