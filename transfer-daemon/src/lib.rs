//! The parts of the `clusster` daemon that stand without it: the transfer protocol's
//! sans-IO core ([`protocol`]), shared by the binary and the fuzz targets.

pub mod protocol;
