//! The kernels: pure functions on byte slices. Engines run them; the data path reaches
//! them only through an engine. Public so that benchmarks can measure them bare.

pub mod cdc;
pub mod codec;
pub mod digest;
pub mod md5;
