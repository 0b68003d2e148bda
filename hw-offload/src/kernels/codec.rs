//! Chunk compression. zstd at a fast level by default, or LZ4 frames (the format DPU
//! decompression engines such as BlueField-3's accept); data that would not shrink is
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
    /// An LZ4 frame (lz4 frame format 1.6.x: independent blocks, content size recorded,
    /// no checksums since the chunk id verifies the plain bytes).
    Lz4 = 2,
}

impl Codec {
    /// The codec stored under `tag`, if this build knows it.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Raw),
            1 => Some(Self::Zstd),
            2 => Some(Self::Lz4),
            _ => None,
        }
    }

    /// The stored tag.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The name used in config files and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "none",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }

    /// Parses a config name (`none`, `zstd`, `lz4`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" | "raw" => Some(Self::Raw),
            "zstd" => Some(Self::Zstd),
            "lz4" => Some(Self::Lz4),
            _ => None,
        }
    }
}

/// Bytes compressed from the head of the data to judge whether compression pays: an
/// eighth of a 32 KiB chunk (staged data), a sixteenth of a 64 KiB one.
const SAMPLE_BYTES: usize = 4 << 10;
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

/// Compresses `data` into an LZ4 frame, or returns `None` when it would not pay (same
/// rule as zstd: a sample first, then at least 1/32 saved).
pub fn compress_lz4(data: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    if data.len() > 2 * SAMPLE_BYTES {
        // The block format is the frame's payload without headers: a fair sample.
        let sample = lz4_flex::block::compress(&data[..SAMPLE_BYTES]);
        if sample.len() + SAMPLE_BYTES / MIN_SAVING_DIVISOR > SAMPLE_BYTES {
            return Ok(None);
        }
    }
    let info = lz4_flex::frame::FrameInfo::new().content_size(Some(data.len() as u64));
    let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2));
    std::io::Write::write_all(&mut encoder, data)?;
    let out = encoder.finish().map_err(std::io::Error::other)?;
    Ok((out.len() + data.len() / MIN_SAVING_DIVISOR <= data.len()).then_some(out))
}

/// Decodes an LZ4 frame that must expand to exactly `plain_len` bytes. Reads at most one
/// byte past `plain_len`, so a hostile frame cannot make us allocate more.
pub fn decompress_lz4(payload: &[u8], plain_len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(plain_len);
    let decoder = lz4_flex::frame::FrameDecoder::new(payload);
    decoder.take(plain_len as u64 + 1).read_to_end(&mut out)?;
    if out.len() != plain_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "lz4 frame expanded to {}{} bytes, expected {plain_len}",
                out.len(),
                if out.len() > plain_len { "+" } else { "" }
            ),
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

    #[test]
    fn lz4_frames_round_trip_and_refuse_wrong_lengths() {
        let mut random = vec![0u8; 64 << 10];
        rand::thread_rng().fill_bytes(&mut random);
        assert!(compress_lz4(&random).unwrap().is_none());
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
        let packed = compress_lz4(&text).unwrap().expect("text compresses");
        // LZ4 frame magic, as every LZ4 decoder (and the lz4 CLI) expects.
        assert_eq!(packed[..4], [0x04, 0x22, 0x4d, 0x18]);
        assert_eq!(decompress_lz4(&packed, text.len()).unwrap(), text);
        assert!(decompress_lz4(&packed, text.len() - 1).is_err());
        assert!(decompress_lz4(&packed, text.len() + 1).is_err());
        assert!(decompress_lz4(&packed[..packed.len() / 2], text.len()).is_err());
        assert_eq!(Codec::from_tag(2), Some(Codec::Lz4));
        assert_eq!(Codec::from_name("lz4"), Some(Codec::Lz4));
    }
}
