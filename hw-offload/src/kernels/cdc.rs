//! Content-defined chunking with FastCDC (2020 variant).
//!
//! Boundaries depend only on the bytes since the previous boundary, so the data can be
//! cut buffer by buffer: [`cut_points`] reports every boundary that more data could not
//! move, and the caller carries the rest over to the next buffer.

use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};

/// Chunk size bounds for FastCDC.
///
/// Changing these only changes how *new* data is cut: manifests record each chunk's
/// length and chunk ids are content hashes, so stored objects stay readable and chunks
/// already stored still dedup whenever the same bytes come around again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    /// No boundary before this many bytes (except at the end of the data).
    pub min_bytes: u32,
    /// The expected chunk size; must be a power of two.
    pub avg_bytes: u32,
    /// A boundary is forced after this many bytes.
    pub max_bytes: u32,
}

impl Default for ChunkerConfig {
    /// 16 / 64 / 256 KiB: measured against the dedup targets (see benches/RESULTS.md):
    /// scattered edits cost a few chunks each while a petabyte site keeps its chunk
    /// index around 1.7e10 entries, a quarter of what 16 KiB chunks would need.
    fn default() -> Self {
        Self { min_bytes: 16 << 10, avg_bytes: 64 << 10, max_bytes: 256 << 10 }
    }
}

/// Why a [`ChunkerConfig`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkerConfigError {
    /// The sizes are not ordered min < avg < max.
    #[error("chunk sizes must satisfy min < avg < max (got {min} / {avg} / {max})")]
    Unordered {
        /// min_bytes given
        min: u32,
        /// avg_bytes given
        avg: u32,
        /// max_bytes given
        max: u32,
    },
    /// A size is outside what FastCDC supports.
    #[error("{field} = {value} is outside FastCDC's range {lo}..={hi}")]
    OutOfRange {
        /// which field
        field: &'static str,
        /// the value given
        value: u32,
        /// smallest allowed
        lo: u32,
        /// largest allowed
        hi: u32,
    },
    /// The average is not a power of two, so FastCDC's masks would not match it.
    #[error("avg_bytes = {0} must be a power of two")]
    AvgNotPowerOfTwo(u32),
}

impl ChunkerConfig {
    /// Checks the bounds against what FastCDC accepts.
    pub fn validate(&self) -> Result<(), ChunkerConfigError> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let check = |field, value, lo, hi| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ChunkerConfigError::OutOfRange { field, value, lo, hi })
            }
        };
        check("min_bytes", self.min_bytes, MINIMUM_MIN, MINIMUM_MAX)?;
        check("avg_bytes", self.avg_bytes, AVERAGE_MIN, AVERAGE_MAX)?;
        check("max_bytes", self.max_bytes, MAXIMUM_MIN, MAXIMUM_MAX)?;
        if !(self.min_bytes < self.avg_bytes && self.avg_bytes < self.max_bytes) {
            return Err(ChunkerConfigError::Unordered {
                min: self.min_bytes,
                avg: self.avg_bytes,
                max: self.max_bytes,
            });
        }
        if !self.avg_bytes.is_power_of_two() {
            return Err(ChunkerConfigError::AvgNotPowerOfTwo(self.avg_bytes));
        }
        Ok(())
    }
}

/// Chunk lengths for `data`, which starts on a chunk boundary.
///
/// With `eof`, the lengths cover all of `data`. Without it, the trailing bytes whose
/// boundary could still move with more data are left out; the caller keeps them and
/// prepends them to the next buffer. Passing at least `max_bytes` guarantees progress.
pub fn cut_points(data: &[u8], config: &ChunkerConfig, eof: bool) -> Vec<u32> {
    let mut lengths = Vec::with_capacity(data.len() / config.avg_bytes as usize + 1);
    let chunker = FastCDC::new(data, config.min_bytes, config.avg_bytes, config.max_bytes);
    for chunk in chunker {
        let ends_at_data_end = chunk.offset + chunk.length == data.len();
        // A chunk that ends where the data ends was cut by the buffer, not by content,
        // unless it reached the maximum size (a forced cut that more data cannot move).
        if ends_at_data_end && !eof && chunk.length < config.max_bytes as usize {
            break;
        }
        lengths.push(chunk.length as u32);
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    #[test]
    fn buffered_cuts_match_whole_input_cuts() {
        let config = ChunkerConfig { min_bytes: 2048, avg_bytes: 8192, max_bytes: 32768 };
        let data = random(1 << 20, 7);
        let whole = cut_points(&data, &config, true);
        // Feed in odd-sized buffers, carrying the remainder over as the store does.
        let mut pieces = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for block in data.chunks(40_000) {
            pending.extend_from_slice(block);
            if pending.len() < config.max_bytes as usize {
                continue;
            }
            let cuts = cut_points(&pending, &config, false);
            let used: usize = cuts.iter().map(|&c| c as usize).sum();
            pieces.extend(cuts);
            pending.drain(..used);
        }
        pieces.extend(cut_points(&pending, &config, true));
        assert_eq!(whole, pieces);
        assert_eq!(whole.iter().map(|&c| c as usize).sum::<usize>(), data.len());
    }

    #[test]
    fn zeros_are_cut_at_max() {
        let config = ChunkerConfig::default();
        let cuts = cut_points(&vec![0u8; 1 << 20], &config, false);
        assert_eq!(cuts, vec![config.max_bytes; 4]);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = ChunkerConfig { min_bytes: 64 << 10, avg_bytes: 16 << 10, max_bytes: 1 << 20 };
        assert!(matches!(bad.validate(), Err(ChunkerConfigError::Unordered { .. })));
        let bad = ChunkerConfig { min_bytes: 4096, avg_bytes: 20_000, max_bytes: 1 << 20 };
        assert_eq!(bad.validate(), Err(ChunkerConfigError::AvgNotPowerOfTwo(20_000)));
        ChunkerConfig::default().validate().unwrap();
    }
}
