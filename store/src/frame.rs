//! The chunk frame: how one chunk is laid out inside a pack.
//!
//! ```text
//! offset size
//!      0    4  magic "CLCF"
//!      4    1  format version (1)
//!      5    1  codec tag (hw_offload::Codec)
//!      6    2  reserved, zero
//!      8    4  plain length, u32 BE
//!     12    4  payload length, u32 BE
//!     16   32  BLAKE3 of the plain bytes (the chunk id)
//!     48    n  payload
//! ```
//! The header is checked (magic, version, codec, lengths) before the payload is touched;
//! the payload is verified against the id after decoding.

use bytes::{BufMut, Bytes, BytesMut};
use hw_offload::{ChunkId, Codec, Job, Step};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"CLCF";
/// Current frame format.
pub const VERSION: u8 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 48;
/// No chunk is larger than this (FastCDC's maximum is 16 MiB; a delta never exceeds it).
pub const MAX_PLAIN_LEN: u32 = 16 << 20;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// payload codec
    pub codec: Codec,
    /// plain length
    pub plain_len: u32,
    /// payload length
    pub payload_len: u32,
    /// chunk id
    pub id: ChunkId,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header or the payload it announces.
    #[error("truncated frame: {have} bytes, need {need}")]
    Truncated {
        /// bytes available
        have: usize,
        /// bytes needed
        need: usize,
    },
    /// Not a chunk frame.
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// A frame format this build does not know.
    #[error("frame format version {0} is unknown to this build")]
    UnknownVersion(u8),
    /// A codec this build does not know.
    #[error("frame codec {0} is unknown to this build")]
    UnknownCodec(u8),
    /// Lengths out of bounds.
    #[error("frame lengths out of bounds: plain {plain}, payload {payload}")]
    BadLength {
        /// plain length
        plain: u32,
        /// payload length
        payload: u32,
    },
}

/// Encodes a frame around `payload`.
pub fn encode(id: &ChunkId, codec: Codec, plain_len: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    put_header(&mut out, id, codec, plain_len, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// The header of a frame around a payload of `payload_len` bytes: a writer that sends
/// the header and the payload as two pieces never copies the payload.
pub fn header(id: &ChunkId, codec: Codec, plain_len: u32, payload_len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN);
    put_header(&mut out, id, codec, plain_len, payload_len);
    out.freeze()
}

fn put_header(out: &mut BytesMut, id: &ChunkId, codec: Codec, plain_len: u32, payload_len: usize) {
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(codec.tag());
    out.put_u16(0);
    out.put_u32(plain_len);
    out.put_u32(payload_len as u32);
    out.put_slice(&id.0);
}

/// Checks and decodes the header at the start of `raw`.
pub fn decode_header(raw: &[u8]) -> Result<FrameHeader, FrameError> {
    if raw.len() < HEADER_LEN {
        return Err(FrameError::Truncated { have: raw.len(), need: HEADER_LEN });
    }
    let magic: [u8; 4] = raw[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if raw[4] != VERSION {
        return Err(FrameError::UnknownVersion(raw[4]));
    }
    let codec = Codec::from_tag(raw[5]).ok_or(FrameError::UnknownCodec(raw[5]))?;
    let plain_len = u32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
    let payload_len = u32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
    let raw_mismatch = codec == Codec::Raw && payload_len != plain_len;
    if plain_len > MAX_PLAIN_LEN || payload_len > MAX_PLAIN_LEN + (MAX_PLAIN_LEN >> 7) || raw_mismatch {
        return Err(FrameError::BadLength { plain: plain_len, payload: payload_len });
    }
    let id = ChunkId(raw[16..48].try_into().expect("32 bytes"));
    Ok(FrameHeader { codec, plain_len, payload_len, id })
}

/// Decodes a whole frame: the header and its payload, which must be all of `raw`.
pub fn decode(raw: &Bytes) -> Result<(FrameHeader, Bytes), FrameError> {
    let header = decode_header(raw)?;
    let need = HEADER_LEN + header.payload_len as usize;
    if raw.len() != need {
        return Err(FrameError::Truncated { have: raw.len(), need });
    }
    Ok((header, raw.slice(HEADER_LEN..)))
}

/// The offload job that turns a decoded frame's payload into its plain bytes, verified
/// against the id the header names: the one way a stored or received frame is checked
/// (reads, GC's compaction, transfers). Compare `header.id` with the chunk expected
/// before running it.
pub fn verify_job(header: &FrameHeader, payload: Bytes) -> Job {
    Job::encoded(
        payload,
        header.codec,
        vec![Step::Decompress { codec: header.codec, plain_len: header.plain_len }, Step::Verify(header.id)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let id = ChunkId::of(b"payload");
        let frame = encode(&id, Codec::Raw, 7, b"payload");
        let (h, payload) = decode(&frame).unwrap();
        assert_eq!((h.id, h.codec, h.plain_len, &payload[..]), (id, Codec::Raw, 7, &b"payload"[..]));

        let truncated = frame.slice(..frame.len() - 1);
        assert_eq!(decode(&truncated), Err(FrameError::Truncated { have: 54, need: 55 }));
        assert!(matches!(decode(&frame.slice(..10)), Err(FrameError::Truncated { .. })));
        let mut bad = frame.to_vec();
        bad[4] = 2;
        assert_eq!(decode(&Bytes::from(bad.clone())), Err(FrameError::UnknownVersion(2)));
        bad[4] = 1;
        bad[5] = 77;
        assert_eq!(decode(&Bytes::from(bad)), Err(FrameError::UnknownCodec(77)));
        let huge = encode(&id, Codec::Zstd, MAX_PLAIN_LEN + 1, b"");
        assert!(matches!(decode(&huge), Err(FrameError::BadLength { .. })));
    }

    #[test]
    fn lz4_frames_decode_and_old_codecs_still_do() {
        let text = b"research data, again and again\n".repeat(500);
        let id = ChunkId::of(&text);
        let packed = hw_offload::kernels::codec::compress_lz4(&text).unwrap().expect("text compresses");
        let frame = encode(&id, Codec::Lz4, text.len() as u32, &packed);
        assert_eq!(frame[5], 2, "LZ4 is tag 2 on disk");
        let (h, payload) = decode(&frame).unwrap();
        assert_eq!((h.codec, h.plain_len, h.id), (Codec::Lz4, text.len() as u32, id));
        let plain = hw_offload::kernels::codec::decompress_lz4(&payload, h.plain_len as usize).unwrap();
        assert_eq!(plain, text);
        // Frames written before LZ4 existed keep their tags.
        for (codec, tag) in [(Codec::Raw, 0), (Codec::Zstd, 1)] {
            let f = encode(&id, codec, if codec == Codec::Raw { 3 } else { 9 }, b"abc");
            assert_eq!(f[5], tag);
            assert_eq!(decode(&f).unwrap().0.codec, codec);
        }
    }
}
