//! Chunk compression. zstd at a fast level by default; data that would not shrink is
//! stored raw, decided from a small sample so random data costs almost nothing.

use serde::{Deserialize, Serialize};

/// How a chunk's payload is encoded. The numeric values are stored in chunk frames:
/// never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
#[non_exhaustive]
pub enum Codec {
    /// The plain bytes.
    Raw = 0,
    /// A zstd frame.
    Zstd = 1,
}

impl Codec {
    /// The codec stored under `tag`, if this build knows it.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Raw),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The stored tag.
    pub fn tag(self) -> u8 {
        self as u8
    }
}

/// Bytes compressed from the head of the data to judge whether compression pays.
const SAMPLE_BYTES: usize = 8 << 10;
/// Keep the compressed form only if it saves at least 1/32 (3%) of the bytes: below
/// that, the decompression on every read costs more than the space saved is worth.
const MIN_SAVING_DIVISOR: usize = 32;

/// Compresses `data` with `level`, or returns `None` when it would not pay.
pub fn compress(compressor: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    if data.len() > 2 * SAMPLE_BYTES {
        let sample = compressor.compress(&data[..SAMPLE_BYTES])?;
        if sample.len() + SAMPLE_BYTES / MIN_SAVING_DIVISOR > SAMPLE_BYTES {
            return Ok(None);
        }
    }
    let out = compressor.compress(data)?;
    Ok((out.len() + data.len() / MIN_SAVING_DIVISOR <= data.len()).then_some(out))
}

/// Decompresses a zstd frame that must expand to exactly `plain_len` bytes.
pub fn decompress(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    payload: &[u8],
    plain_len: usize,
) -> std::io::Result<Vec<u8>> {
    let out = decompressor.decompress(payload, plain_len)?;
    if out.len() != plain_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("zstd frame expanded to {} bytes, expected {plain_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn random_data_stays_raw_text_compresses() {
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let mut random = vec![0u8; 64 << 10];
        rand::thread_rng().fill_bytes(&mut random);
        assert!(compress(&mut c, &random).unwrap().is_none());
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
        let packed = compress(&mut c, &text).unwrap().expect("text compresses");
        assert!(packed.len() < text.len() / 10);
        assert_eq!(decompress(&mut d, &packed, text.len()).unwrap(), text);
        assert!(decompress(&mut d, &packed, text.len() - 1).is_err());
    }
}
