//! Frames on the wire: `[body length: u32 LE][kind: u8][body]`, the length covering the
//! kind byte. A reader checks the length against the bound for the stream it reads
//! *before* it allocates or parses anything.
//!
//! - kind [`KIND_CONTROL`]: a postcard-encoded [`Control`] message (control stream);
//! - kind [`KIND_CHUNK`]: a chunk frame exactly as the store keeps it (data streams);
//! - kind [`KIND_DELTA`]: a count `n` (1..=[`MAX_DELTA_BASES`]) and the 32-byte ids of
//!   `n` base chunks, then a store frame whose payload is zstd compressed with the bases'
//!   plain bytes, concatenated in that order, as a raw-content prefix.

use bytes::{BufMut, Bytes, BytesMut};
use hw_offload::{ChecksumAlgo, ChunkId};
use serde::{Deserialize, Serialize};

/// ALPN of this protocol; the suffix is its version. A peer that offers another is
/// refused in the handshake.
pub const ALPN: &[u8] = b"clusster/4";

/// Largest control message body.
pub const MAX_CONTROL_LEN: usize = 4 << 20;
/// Largest chunk, plain (the store's frame limit; transfer-engine's tests check they agree).
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// Header of a stored chunk frame (likewise checked against the store).
pub const CHUNK_FRAME_HEADER_LEN: usize = 48;
/// Most base chunks one delta is coded against: bounds what each side reads per chunk.
pub const MAX_DELTA_BASES: usize = 4;
/// Largest data frame body: a kind byte, the base ids, and the frame of the largest chunk
/// with the store's bound on incompressible growth.
pub const MAX_DATA_LEN: usize =
    2 + 32 * MAX_DELTA_BASES + CHUNK_FRAME_HEADER_LEN + MAX_CHUNK_LEN as usize + (MAX_CHUNK_LEN >> 7) as usize;
/// Chunk references per offer: bounds the offer (~40 bytes each) and the receiver's
/// lookup batch.
pub const OFFER_MAX_CHUNKS: usize = 8192;
/// Objects per offer, so that many small objects share round trips but an offer stays
/// far below [`MAX_CONTROL_LEN`].
pub const OFFER_MAX_OBJECTS: usize = 4096;
/// Most connections one transfer uses.
pub const MAX_CONNECTIONS: u8 = 64;
/// Longest object key (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Control message frame kind.
pub const KIND_CONTROL: u8 = 1;
/// Whole chunk frame kind.
pub const KIND_CHUNK: u8 = 2;
/// Delta chunk frame kind.
pub const KIND_DELTA: u8 = 3;

/// QUIC application error codes, sent when a stream or connection is closed on error.
pub mod codes {
    /// Normal end.
    pub const DONE: u32 = 0;
    /// A frame longer than its stream allows.
    pub const FRAME_TOO_LARGE: u32 = 0x10;
    /// A frame that does not parse.
    pub const MALFORMED: u32 = 0x11;
    /// A message that is not allowed at this point.
    pub const PROTOCOL: u32 = 0x12;
    /// The transfer was cancelled.
    pub const CANCELLED: u32 = 0x13;
    /// A local failure (storage, a chunk corrupt at the source).
    pub const FAILED: u32 = 0x14;
    /// The site will not take part: the bucket is missing, or not shared with the site
    /// asking for what the transfer does. Trying again will not help until that changes.
    pub const REFUSED: u32 = 0x15;
    /// The site runs as many transfers of the asking site as it takes at once: try again
    /// later.
    pub const BUSY: u32 = 0x16;
}

/// Which end opened the transfer and who sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The opener sends its objects to the acceptor.
    Push,
    /// The acceptor sends its objects to the opener.
    Pull,
    /// The acceptor pushes its objects to a third site, named in [`Open::third_party`].
    ThirdParty,
    /// The opener asks for chunks by id to replace corrupt copies ([`Control::Wanted`]).
    Repair,
}

/// A bucket and key prefix on one side (empty for a transfer of a dataset version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// bucket name
    pub bucket: String,
    /// key prefix ("" for the whole bucket)
    pub prefix: String,
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.prefix)
    }
}

/// Opens a transfer (first message on the control stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// the transfer id, the same across resumptions
    pub transfer: [u8; 16],
    /// who sends
    pub mode: Mode,
    /// what is sent, on the sending site
    pub source: Selection,
    /// where it lands, on the receiving site
    pub dest: Selection,
    /// for [`Mode::ThirdParty`]: the site that receives
    pub third_party: Option<String>,
    /// higher runs first
    pub priority: u8,
    /// a cap on the data rate, bytes per second
    pub rate_limit: Option<u64>,
    /// connections the opener gives this transfer, 1 to [`MAX_CONNECTIONS`]: this one, and
    /// the others it joins ([`Control::Join`]); the sender spreads its data streams over all
    pub connections: u8,
    /// for a push a third site asked the opener for ([`Mode::ThirdParty`]): that site,
    /// which the receiver holds to the same rights as the opener (added in clusster/3)
    pub delegated_by: Option<String>,
    /// a dataset version (its id) instead of objects: the sender offers the files of the
    /// version it holds, and the receiver lands them as that version, checked against
    /// its id; `source` and `dest` are then empty (added in clusster/4)
    pub version: Option<[u8; 32]>,
}

/// One chunk of an object: its id and plain length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of its plain bytes
    pub id: ChunkId,
    /// plain length
    pub len: u32,
}

/// One object (or a continuation of its chunk list) in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedObject {
    /// key relative to the source prefix
    pub key: String,
    /// length in bytes
    pub size: u64,
    /// the source's ETag
    pub etag: String,
    /// the source's checksums
    pub checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
    /// modification time, ms since the Unix epoch
    pub mtime_ms: i64,
    /// HTTP metadata, encoded by the daemon (opaque to the protocol)
    pub meta: Vec<u8>,
    /// multipart part sizes
    pub part_sizes: Vec<u64>,
    /// index of `chunks[0]` in the object's chunk list (non-zero for a continuation)
    pub first_chunk: u64,
    /// a slice of the chunk list
    pub chunks: Vec<ChunkRef>,
    /// whether this entry ends the object's chunk list
    pub last: bool,
}

/// A chunk the receiver lacks, and the chunks it holds that this one most likely replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// the chunk wanted
    pub id: ChunkId,
    /// chunks the receiver holds to delta against, at most [`MAX_DELTA_BASES`], in order
    pub bases: Vec<ChunkId>,
}

/// Control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// opens a transfer
    Open(Open),
    /// the acceptor takes it
    Accepted,
    /// first message on another connection to a transfer opened on an earlier one: this
    /// connection's data streams carry its chunks too (several connections, several
    /// congestion windows: a loss-based controller holds up better on a lossy long path)
    Join {
        /// the transfer's id
        transfer: [u8; 16],
    },
    /// part of the sender's manifest
    Offer {
        /// 0, 1, 2… in sending order
        seq: u64,
        /// objects, in key order
        objects: Vec<OfferedObject>,
    },
    /// the receiver's answer to offer `seq`: the chunks it lacks
    Need {
        /// the offer answered
        seq: u64,
        /// wanted chunks
        wants: Vec<Want>,
    },
    /// chunks that failed verification, asked for again (whole, never as deltas)
    Retry {
        /// their ids
        ids: Vec<ChunkId>,
    },
    /// the manifest is complete
    OfferDone {
        /// offers sent
        offers: u64,
    },
    /// progress of a delegated (third-party) transfer, relayed to the site that asked
    Progress(Progress),
    /// repair: the chunks the opener lacks (at most [`OFFER_MAX_CHUNKS`])
    Wanted {
        /// their ids
        ids: Vec<ChunkId>,
    },
    /// repair: those of them the acceptor holds and sends next
    Holding {
        /// their ids
        ids: Vec<ChunkId>,
    },
    /// the receiver committed every object
    Committed {
        /// objects committed
        objects: u64,
    },
    /// the transfer ends in error
    Abort {
        /// one of [`codes`]
        code: u32,
        /// for humans
        reason: String,
    },
}

/// Counters of one transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// objects in the manifest so far
    pub objects: u64,
    /// their bytes
    pub bytes_total: u64,
    /// chunks offered
    pub chunks_offered: u64,
    /// chunks the receiver asked for
    pub chunks_wanted: u64,
    /// plain bytes of those
    pub bytes_wanted: u64,
    /// chunks sent or received so far
    pub chunks_done: u64,
    /// plain bytes of those
    pub bytes_done: u64,
    /// chunks sent as deltas
    pub chunks_delta: u64,
    /// frame bytes of data streams
    pub wire_bytes: u64,
    /// chunks that failed verification and were asked for again
    pub chunks_retried: u64,
    /// connections carrying data streams (of the current attempt)
    pub connections: u64,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// longer than the stream allows
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// announced length
        len: usize,
        /// the limit
        max: usize,
    },
    /// the length covers no kind byte
    #[error("empty frame")]
    Empty,
    /// a kind this stream does not carry
    #[error("frame kind {0} is not allowed here")]
    UnexpectedKind(u8),
    /// a body that does not decode
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl WireError {
    /// The QUIC error code to close the stream with.
    pub fn code(&self) -> u32 {
        match self {
            Self::TooLarge { .. } => codes::FRAME_TOO_LARGE,
            _ => codes::MALFORMED,
        }
    }
}

/// A decoded data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// a stored chunk frame
    Chunk(Bytes),
    /// a chunk coded against `bases`
    Delta {
        /// the receiver's chunks whose bytes, concatenated, are the prefix
        bases: Vec<ChunkId>,
        /// a store frame whose payload needs the bases to decode
        frame: Bytes,
    },
}

/// Checks a frame's announced length; `max` is the stream's bound.
pub fn check_len(len: u32, max: usize) -> Result<usize, WireError> {
    let len = len as usize;
    if len == 0 {
        return Err(WireError::Empty);
    }
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(len)
}

/// Encodes a control message as a frame.
pub fn encode_control(msg: &Control) -> Bytes {
    let body = postcard::to_allocvec(msg).expect("postcard encoding into a Vec");
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u32_le(1 + body.len() as u32);
    out.put_u8(KIND_CONTROL);
    out.put_slice(&body);
    out.freeze()
}

/// Decodes a control frame body (kind byte included).
pub fn decode_control(body: &[u8]) -> Result<Control, WireError> {
    match body.split_first() {
        None => Err(WireError::Empty),
        Some((&KIND_CONTROL, rest)) => {
            postcard::from_bytes(rest).map_err(|e| WireError::Malformed(format!("control message: {e}")))
        }
        Some((&kind, _)) => Err(WireError::UnexpectedKind(kind)),
    }
}

/// The header of a data frame carrying `frame`, a delta against `bases` if there are any
/// (at most [`MAX_DELTA_BASES`]); send the header then the frame.
pub fn data_header(bases: &[ChunkId], frame_len: usize) -> Bytes {
    assert!(bases.len() <= MAX_DELTA_BASES, "{} delta bases", bases.len());
    let extra = if bases.is_empty() { 0 } else { 1 + 32 * bases.len() };
    let mut out = BytesMut::with_capacity(5 + extra);
    out.put_u32_le((1 + extra + frame_len) as u32);
    if bases.is_empty() {
        out.put_u8(KIND_CHUNK);
    } else {
        out.put_u8(KIND_DELTA);
        out.put_u8(bases.len() as u8);
        for base in bases {
            out.put_slice(&base.0);
        }
    }
    out.freeze()
}

/// Decodes a data frame body (kind byte included). The store frame inside is checked
/// by the caller, which must verify its content anyway.
pub fn decode_data(body: Bytes) -> Result<Data, WireError> {
    match body.first() {
        None => Err(WireError::Empty),
        Some(&KIND_CHUNK) => Ok(Data::Chunk(body.slice(1..))),
        Some(&KIND_DELTA) => {
            let n = *body.get(1).ok_or_else(|| WireError::Malformed("delta frame without its bases".into()))? as usize;
            if !(1..=MAX_DELTA_BASES).contains(&n) {
                return Err(WireError::Malformed(format!("delta against {n} bases (1 to {MAX_DELTA_BASES})")));
            }
            let frame_at = 2 + 32 * n;
            if body.len() < frame_at {
                return Err(WireError::Malformed("delta frame shorter than its base ids".into()));
            }
            let bases =
                body[2..frame_at].chunks_exact(32).map(|id| ChunkId(id.try_into().expect("32 bytes"))).collect();
            Ok(Data::Delta { bases, frame: body.slice(frame_at..) })
        }
        Some(&kind) => Err(WireError::UnexpectedKind(kind)),
    }
}

/// Splits complete frames off the front of a buffer (for the fuzzer and tests; the
/// driver reads frames straight off QUIC streams with the same checks).
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = check_len(u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")), max)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len);
    Ok(Some(frame.split_off(4).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trip() {
        let wants = vec![Want { id: ChunkId::of(b"a"), bases: vec![ChunkId::of(b"b"), ChunkId::of(b"c")] }];
        let msg = Control::Need { seq: 7, wants };
        let mut buf = BytesMut::from(&encode_control(&msg)[..]);
        let body = split_frame(&mut buf, MAX_CONTROL_LEN).unwrap().unwrap();
        assert_eq!(decode_control(&body).unwrap(), msg);
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_are_bounded_before_parsing() {
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(matches!(split_frame(&mut buf, MAX_CONTROL_LEN), Err(WireError::TooLarge { .. })));
        let mut buf = BytesMut::from(&0u32.to_le_bytes()[..]);
        assert_eq!(split_frame(&mut buf, MAX_CONTROL_LEN), Err(WireError::Empty));
        // A partial frame waits for more bytes.
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, KIND_CONTROL][..]);
        assert_eq!(split_frame(&mut buf, MAX_CONTROL_LEN), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(decode_control(&[KIND_CONTROL, 0xff, 0xff]), Err(WireError::Malformed(_))));
        assert_eq!(decode_control(&[KIND_CHUNK]), Err(WireError::UnexpectedKind(KIND_CHUNK)));
        assert!(matches!(decode_data(Bytes::from_static(&[KIND_DELTA, 1, 2])), Err(WireError::Malformed(_))));
        assert!(matches!(decode_data(Bytes::from_static(&[KIND_DELTA])), Err(WireError::Malformed(_))));
        // No bases, or more than the bound, whatever follows.
        for n in [0, MAX_DELTA_BASES as u8 + 1] {
            let mut body = vec![KIND_DELTA, n];
            body.resize(2 + 32 * 8 + 64, 0);
            assert!(matches!(decode_data(Bytes::from(body)), Err(WireError::Malformed(_))), "{n} bases");
        }
        assert_eq!(decode_data(Bytes::from_static(&[KIND_CONTROL])), Err(WireError::UnexpectedKind(KIND_CONTROL)));
    }

    #[test]
    fn data_frames_round_trip() {
        let bases: Vec<ChunkId> = (0..MAX_DELTA_BASES as u8).map(|i| ChunkId::of(&[i])).collect();
        let frame = Bytes::from_static(b"stored frame");
        let mut buf = BytesMut::new();
        for n in [0, 1, MAX_DELTA_BASES] {
            buf.extend_from_slice(&data_header(&bases[..n], frame.len()));
            buf.extend_from_slice(&frame);
        }
        let mut next = || decode_data(split_frame(&mut buf, MAX_DATA_LEN).unwrap().unwrap()).unwrap();
        assert_eq!(next(), Data::Chunk(frame.clone()));
        assert_eq!(next(), Data::Delta { bases: bases[..1].to_vec(), frame: frame.clone() });
        assert_eq!(next(), Data::Delta { bases, frame });
    }
}
