//! The shared region's layout and the ring entries, byte for byte as `PROTOCOL.md`
//! describes them: fixed-width little-endian fields, so a C agent can use the same
//! `struct`s. Decoding checks everything the other side could get wrong.

use super::shm::SharedRegion;
use std::sync::atomic::Ordering;

/// Region magic, the first 8 bytes.
pub const REGION_MAGIC: [u8; 8] = *b"CLOFRGN\0";
/// Hello magic (host to agent).
pub const HELLO_MAGIC: [u8; 8] = *b"CLOFHLO\0";
/// Acknowledgement magic (agent to host).
pub const ACK_MAGIC: [u8; 8] = *b"CLOFACK\0";
/// Protocol version; a peer with another version is refused at the hello. Version 2:
/// input ranges are read-only for the agent, and output ranges are the host's once
/// completed (zero-copy buffers); the layout is version 1's.
pub const VERSION: u32 = 2;
/// The header occupies the first page.
pub const HEADER_LEN: u64 = 4096;
/// Submission entry size.
pub const SQE_LEN: usize = 128;
/// Completion entry size.
pub const CQE_LEN: usize = 64;
/// Largest input or output of one job (a 16 MiB chunk plus compression overhead).
pub const MAX_JOB_BYTES: u32 = 32 << 20;
/// Most steps in one entry.
pub const MAX_OPS: usize = 8;

/// Header field offsets. Each ring word sits on its own 64-byte cache line so that the
/// producer and the consumer do not bounce one line between cores.
pub mod off {
    /// `[u8; 8]` magic
    pub const MAGIC: usize = 0;
    /// `u32` version
    pub const VERSION: usize = 8;
    /// `u32` header length
    pub const HEADER_LEN: usize = 12;
    /// `u64` region length
    pub const REGION_LEN: usize = 16;
    /// `u64` submission ring offset
    pub const SQ_OFF: usize = 24;
    /// `u32` submission ring entries (a power of two)
    pub const SQ_ENTRIES: usize = 32;
    /// `u32` submission entry size
    pub const SQE_SIZE: usize = 36;
    /// `u64` completion ring offset
    pub const CQ_OFF: usize = 40;
    /// `u32` completion ring entries (a power of two)
    pub const CQ_ENTRIES: usize = 48;
    /// `u32` completion entry size
    pub const CQE_SIZE: usize = 52;
    /// `u64` data area offset
    pub const DATA_OFF: usize = 56;
    /// `u64` data area length
    pub const DATA_LEN: usize = 64;
    /// `u32` SQ tail, written by the host
    pub const SQ_TAIL: usize = 128;
    /// `u32` SQ head, written by the agent
    pub const SQ_HEAD: usize = 192;
    /// `u32` CQ tail, written by the agent
    pub const CQ_TAIL: usize = 256;
    /// `u32` CQ head, written by the host
    pub const CQ_HEAD: usize = 320;
    /// `u32` agent needs a doorbell to notice new submissions (written by the agent)
    pub const AGENT_NEED_WAKEUP: usize = 384;
    /// `u32` host needs a doorbell to notice new completions (written by the host)
    pub const HOST_NEED_WAKEUP: usize = 448;
    /// `u64` jobs the agent has completed (written by the agent, informational)
    pub const AGENT_JOBS: usize = 512;
    /// `u64` nanoseconds of agent thread CPU time (written by the agent, informational)
    pub const AGENT_CPU_NS: usize = 520;
}

/// Operation codes of a submission's chain, run in order; 0 ends the chain.
pub mod op {
    /// end of chain
    pub const END: u8 = 0;
    /// BLAKE3 of the current data into the digest
    pub const BLAKE3: u8 = 1;
    /// BLAKE3 of the current data must equal `expected`; the digest gets the actual hash
    pub const VERIFY: u8 = 2;
    /// zstd at `level`, kept only if it saves 1/32 (else the data stays raw)
    pub const COMPRESS_ZSTD: u8 = 3;
    /// LZ4 frame, kept only if it saves 1/32
    pub const COMPRESS_LZ4: u8 = 4;
    /// decode a zstd frame of exactly `plain_len` bytes
    pub const DECOMPRESS_ZSTD: u8 = 5;
    /// decode an LZ4 frame of exactly `plain_len` bytes
    pub const DECOMPRESS_LZ4: u8 = 6;
    /// the raw input must be exactly `plain_len` bytes
    pub const DECOMPRESS_RAW: u8 = 7;
    /// MD5 into the digest
    pub const MD5: u8 = 16;
    /// CRC32 (big-endian) into the digest
    pub const CRC32: u8 = 17;
    /// CRC32C (big-endian) into the digest
    pub const CRC32C: u8 = 18;
    /// CRC64/NVME (big-endian) into the digest
    pub const CRC64NVME: u8 = 19;
    /// SHA-256 into the digest
    pub const SHA256: u8 = 20;
}

/// Completion status codes.
pub mod status {
    /// done; outputs valid
    pub const OK: u32 = 0;
    /// VERIFY failed; the digest holds the actual hash
    pub const CORRUPT: u32 = 1;
    /// a DECOMPRESS step could not decode the data
    pub const DECODE_FAILED: u32 = 2;
    /// a COMPRESS step failed inside the codec
    pub const ENCODE_FAILED: u32 = 3;
    /// offsets, lengths or op codes are invalid
    pub const BAD_REQUEST: u32 = 4;
    /// the output does not fit `out_cap`
    pub const NO_SPACE: u32 = 5;
}

/// A submission entry (128 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Sqe {
    /// echoed in the completion
    pub user_data: u64,
    /// input offset in the data area
    pub in_off: u64,
    /// input length
    pub in_len: u32,
    /// output capacity (0 when the chain does not change the data)
    pub out_cap: u32,
    /// output offset in the data area
    pub out_off: u64,
    /// the chain, [`op`] codes, 0-terminated unless all 8 are used
    pub ops: [u8; MAX_OPS],
    /// compression level (zstd)
    pub level: i32,
    /// decoded length for DECOMPRESS steps
    pub plain_len: u32,
    /// the hash VERIFY expects
    pub expected: [u8; 32],
}

/// A completion entry (64 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Cqe {
    /// from the submission
    pub user_data: u64,
    /// a [`status`] code
    pub status: u32,
    /// codec of the output: 0 raw, 1 zstd, 2 lz4 (frame codec tags)
    pub out_codec: u8,
    /// 1: the output is the input, unchanged; nothing was written at `out_off`
    pub out_in_place: u8,
    /// bytes of `digest` used
    pub digest_len: u8,
    /// output length written at `out_off`
    pub out_len: u32,
    /// agent thread CPU time for the job, nanoseconds (saturating)
    pub agent_ns: u32,
    /// the digest of the chain's hash or checksum step
    pub digest: [u8; 32],
}

impl Sqe {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        b[0..8].copy_from_slice(&self.user_data.to_le_bytes());
        b[8..16].copy_from_slice(&self.in_off.to_le_bytes());
        b[16..20].copy_from_slice(&self.in_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.out_cap.to_le_bytes());
        b[24..32].copy_from_slice(&self.out_off.to_le_bytes());
        b[32..40].copy_from_slice(&self.ops);
        b[40..44].copy_from_slice(&self.level.to_le_bytes());
        b[44..48].copy_from_slice(&self.plain_len.to_le_bytes());
        b[48..80].copy_from_slice(&self.expected);
        b
    }

    /// Parses wire bytes (any values: the agent checks them before use).
    pub fn decode(b: &[u8; SQE_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Self {
            user_data: u64_at(0),
            in_off: u64_at(8),
            in_len: u32_at(16),
            out_cap: u32_at(20),
            out_off: u64_at(24),
            ops: b[32..40].try_into().expect("8 bytes"),
            level: u32_at(40) as i32,
            plain_len: u32_at(44),
            expected: b[48..80].try_into().expect("32 bytes"),
        }
    }
}

impl Cqe {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        b[0..8].copy_from_slice(&self.user_data.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12] = self.out_codec;
        b[13] = self.out_in_place;
        b[14] = self.digest_len;
        b[16..20].copy_from_slice(&self.out_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.agent_ns.to_le_bytes());
        b[24..56].copy_from_slice(&self.digest);
        b
    }

    /// Parses wire bytes (any values: the host checks them before use).
    pub fn decode(b: &[u8; CQE_LEN]) -> Self {
        Self {
            user_data: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            status: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            out_codec: b[12],
            out_in_place: b[13],
            digest_len: b[14],
            out_len: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            agent_ns: u32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
            digest: b[24..56].try_into().expect("32 bytes"),
        }
    }
}

/// The geometry of a region, as its header states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// whole region
    pub region_len: u64,
    /// submission ring offset
    pub sq_off: u64,
    /// submission ring entries
    pub sq_entries: u32,
    /// completion ring offset
    pub cq_off: u64,
    /// completion ring entries
    pub cq_entries: u32,
    /// data area offset
    pub data_off: u64,
    /// data area length
    pub data_len: u64,
}

/// Why a region header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// Not a region of this protocol.
    #[error("not an offload region (bad magic)")]
    BadMagic,
    /// Another protocol version.
    #[error("region protocol version {0}, this build speaks {VERSION}")]
    Version(u32),
    /// Sizes that do not fit together.
    #[error("inconsistent region layout: {0}")]
    Geometry(String),
}

impl Layout {
    /// The layout for a region of `region_len` bytes with `entries` slots per ring.
    pub fn plan(region_len: u64, entries: u32) -> Result<Self, LayoutError> {
        let sq_off = HEADER_LEN;
        let cq_off = sq_off + entries as u64 * SQE_LEN as u64;
        let data_off = (cq_off + entries as u64 * CQE_LEN as u64).next_multiple_of(4096);
        let layout = Self {
            region_len,
            sq_off,
            sq_entries: entries,
            cq_off,
            cq_entries: entries,
            data_off,
            data_len: region_len.saturating_sub(data_off),
        };
        layout.check()?;
        Ok(layout)
    }

    fn check(&self) -> Result<(), LayoutError> {
        let bad = |why: &str| Err(LayoutError::Geometry(why.to_owned()));
        if !self.sq_entries.is_power_of_two() || !self.cq_entries.is_power_of_two() {
            return bad("ring entries must be powers of two");
        }
        if self.sq_entries > 1 << 16 || self.cq_entries > 1 << 16 {
            return bad("at most 65536 ring entries");
        }
        let sq_end = self.sq_off.checked_add(self.sq_entries as u64 * SQE_LEN as u64);
        let cq_end = self.cq_off.checked_add(self.cq_entries as u64 * CQE_LEN as u64);
        let data_end = self.data_off.checked_add(self.data_len);
        match (sq_end, cq_end, data_end) {
            (Some(sq_end), Some(cq_end), Some(data_end))
                if self.sq_off >= HEADER_LEN
                    && sq_end <= self.cq_off
                    && cq_end <= self.data_off
                    && data_end <= self.region_len
                    && self.data_len > 0 => {}
            _ => return bad("rings and data area must follow the header in order, inside the region"),
        }
        if !self.sq_off.is_multiple_of(64) || !self.cq_off.is_multiple_of(64) {
            return bad("rings must be 64-byte aligned");
        }
        Ok(())
    }

    /// Writes a fresh header (rings empty, nobody waiting) into `region`.
    pub fn write_header(&self, region: &SharedRegion) {
        let mut h = vec![0u8; 128];
        h[off::MAGIC..off::MAGIC + 8].copy_from_slice(&REGION_MAGIC);
        h[off::VERSION..off::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        h[off::HEADER_LEN..off::HEADER_LEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[off::REGION_LEN..off::REGION_LEN + 8].copy_from_slice(&self.region_len.to_le_bytes());
        h[off::SQ_OFF..off::SQ_OFF + 8].copy_from_slice(&self.sq_off.to_le_bytes());
        h[off::SQ_ENTRIES..off::SQ_ENTRIES + 4].copy_from_slice(&self.sq_entries.to_le_bytes());
        h[off::SQE_SIZE..off::SQE_SIZE + 4].copy_from_slice(&(SQE_LEN as u32).to_le_bytes());
        h[off::CQ_OFF..off::CQ_OFF + 8].copy_from_slice(&self.cq_off.to_le_bytes());
        h[off::CQ_ENTRIES..off::CQ_ENTRIES + 4].copy_from_slice(&self.cq_entries.to_le_bytes());
        h[off::CQE_SIZE..off::CQE_SIZE + 4].copy_from_slice(&(CQE_LEN as u32).to_le_bytes());
        h[off::DATA_OFF..off::DATA_OFF + 8].copy_from_slice(&self.data_off.to_le_bytes());
        h[off::DATA_LEN..off::DATA_LEN + 8].copy_from_slice(&self.data_len.to_le_bytes());
        region.write(0, &h).expect("the header fits any planned region");
        for word in
            [off::SQ_TAIL, off::SQ_HEAD, off::CQ_TAIL, off::CQ_HEAD, off::AGENT_NEED_WAKEUP, off::HOST_NEED_WAKEUP]
        {
            region.atomic_u32(word).store(0, Ordering::Relaxed);
        }
    }

    /// Reads and checks the header of a region someone else wrote.
    pub fn read_header(region: &SharedRegion) -> Result<Self, LayoutError> {
        let mut h = [0u8; 128];
        region.read(0, &mut h).map_err(|e| LayoutError::Geometry(e.to_string()))?;
        if h[0..8] != REGION_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(off::VERSION) != VERSION {
            return Err(LayoutError::Version(u32_at(off::VERSION)));
        }
        if u32_at(off::HEADER_LEN) as u64 != HEADER_LEN
            || u32_at(off::SQE_SIZE) as usize != SQE_LEN
            || u32_at(off::CQE_SIZE) as usize != CQE_LEN
        {
            return Err(LayoutError::Geometry(format!("header or entry sizes differ from version {VERSION}")));
        }
        let layout = Self {
            region_len: u64_at(off::REGION_LEN),
            sq_off: u64_at(off::SQ_OFF),
            sq_entries: u32_at(off::SQ_ENTRIES),
            cq_off: u64_at(off::CQ_OFF),
            cq_entries: u32_at(off::CQ_ENTRIES),
            data_off: u64_at(off::DATA_OFF),
            data_len: u64_at(off::DATA_LEN),
        };
        if layout.region_len != region.len() as u64 {
            return Err(LayoutError::Geometry(format!(
                "header says {} bytes, the mapping has {}",
                layout.region_len,
                region.len()
            )));
        }
        layout.check()?;
        Ok(layout)
    }

    /// Offset of submission slot `index` (any u32: wrapped into the ring).
    pub fn sqe_at(&self, index: u32) -> u64 {
        self.sq_off + (index & (self.sq_entries - 1)) as u64 * SQE_LEN as u64
    }

    /// Offset of completion slot `index` (any u32: wrapped into the ring).
    pub fn cqe_at(&self, index: u32) -> u64 {
        self.cq_off + (index & (self.cq_entries - 1)) as u64 * CQE_LEN as u64
    }

    /// Whether `offset + len` lies inside the data area; returns the region offset.
    pub fn data_range(&self, offset: u64, len: u64) -> Option<u64> {
        let end = offset.checked_add(len)?;
        (end <= self.data_len).then(|| self.data_off + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_at_the_documented_offsets() {
        let sqe = Sqe {
            user_data: 0x0102_0304_0506_0708,
            in_off: 4096,
            in_len: 77,
            out_cap: 80,
            out_off: 8192,
            ops: [op::BLAKE3, op::COMPRESS_LZ4, 0, 0, 0, 0, 0, 0],
            level: -3,
            plain_len: 9,
            expected: [0xab; 32],
        };
        let b = sqe.encode();
        assert_eq!(b[0], 0x08, "little-endian user_data");
        assert_eq!(&b[32..34], &[op::BLAKE3, op::COMPRESS_LZ4]);
        assert_eq!(Sqe::decode(&b), sqe);
        let cqe = Cqe {
            user_data: 5,
            status: status::CORRUPT,
            out_codec: 2,
            digest_len: 32,
            out_len: 3,
            ..Default::default()
        };
        let b = cqe.encode();
        assert_eq!((b[8], b[12], b[14]), (1, 2, 32));
        assert_eq!(Cqe::decode(&b), cqe);
        // The Rust structs match the wire sizes, so a C mirror with the same fields does too.
        assert_eq!(std::mem::size_of::<Sqe>(), 80);
        assert_eq!(std::mem::size_of::<Cqe>(), 56);
    }

    #[test]
    fn layouts_are_checked() {
        let layout = Layout::plan(1 << 20, 64).unwrap();
        assert_eq!(layout.sq_off, 4096);
        assert_eq!(layout.data_off % 4096, 0);
        assert!(Layout::plan(1 << 20, 63).is_err());
        assert!(Layout::plan(8192, 64).is_err(), "no room for data");
        assert_eq!(layout.data_range(layout.data_len - 1, 1), Some(layout.data_off + layout.data_len - 1));
        assert_eq!(layout.data_range(layout.data_len, 1), None);
        assert_eq!(layout.data_range(u64::MAX, 2), None);
        assert_eq!(layout.sqe_at(64), layout.sqe_at(0));
    }
}
