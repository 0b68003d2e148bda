//! Digests: BLAKE3 chunk ids, and the whole-object digests S3 clients check (MD5 for the
//! ETag; CRC32, CRC32C, CRC64NVME, SHA1, SHA256 for `x-amz-checksum-*`).

use super::md5::Md5State;
use md5::Digest as _;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A chunk's name: the BLAKE3 hash of its plain (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// BLAKE3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        // Large buffers go through BLAKE3's tree in parallel SIMD lanes already; a
        // chunk is at most a few MiB, too small for rayon's threads to pay.
        Self(*blake3::hash(data).as_bytes())
    }

    /// Lower-case hex, as used in chunk paths and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The whole-object checksums S3 defines (`x-amz-checksum-<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChecksumAlgo {
    /// CRC32 (ISO HDLC), 4 bytes.
    Crc32,
    /// CRC32C (Castagnoli), 4 bytes.
    Crc32c,
    /// CRC64/NVME, 8 bytes.
    Crc64Nvme,
    /// SHA-1, 20 bytes.
    Sha1,
    /// SHA-256, 32 bytes.
    Sha256,
}

impl ChecksumAlgo {
    /// Every algorithm, in a fixed order.
    pub const ALL: [ChecksumAlgo; 5] = [Self::Crc32, Self::Crc32c, Self::Crc64Nvme, Self::Sha1, Self::Sha256];

    /// The lower-case name S3 uses in header names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "crc32",
            Self::Crc32c => "crc32c",
            Self::Crc64Nvme => "crc64nvme",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    /// One-shot checksum of `data`, big-endian bytes as S3 encodes them.
    pub fn checksum(self, data: &[u8]) -> Vec<u8> {
        let mut state = ChecksumState::new(self);
        state.update(data);
        state.finish()
    }
}

/// One-shot digests of a single buffer, which every engine computes (unlike
/// [`StreamDigests`], whose running state stays on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SumAlgo {
    /// MD5, 16 bytes.
    Md5,
    /// CRC32 (ISO HDLC), 4 bytes big-endian.
    Crc32,
    /// CRC32C (Castagnoli), 4 bytes big-endian.
    Crc32c,
    /// CRC64/NVME, 8 bytes big-endian.
    Crc64Nvme,
    /// SHA-256, 32 bytes.
    Sha256,
}

impl SumAlgo {
    /// Every algorithm, in a fixed order.
    pub const ALL: [SumAlgo; 5] = [Self::Md5, Self::Crc32, Self::Crc32c, Self::Crc64Nvme, Self::Sha256];

    /// The digest of `data`.
    pub fn compute(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Md5 => md5::Md5::digest(data).to_vec(),
            Self::Crc32 => ChecksumAlgo::Crc32.checksum(data),
            Self::Crc32c => ChecksumAlgo::Crc32c.checksum(data),
            Self::Crc64Nvme => ChecksumAlgo::Crc64Nvme.checksum(data),
            Self::Sha256 => ChecksumAlgo::Sha256.checksum(data),
        }
    }
}

#[derive(Clone)]
enum ChecksumState {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl ChecksumState {
    fn new(algo: ChecksumAlgo) -> Self {
        match algo {
            ChecksumAlgo::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgo::Crc32c => Self::Crc32c(0),
            ChecksumAlgo::Crc64Nvme => Self::Crc64Nvme(crc64fast_nvme::Digest::new()),
            ChecksumAlgo::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumAlgo::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            Self::Crc64Nvme(h) => h.write(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            Self::Crc64Nvme(h) => h.sum64().to_be_bytes().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Running digests over a whole object, fed in order buffer by buffer.
///
/// MD5 is always kept (it is the S3 ETag); the S3 checksums only when asked for.
#[derive(Clone)]
pub struct StreamDigests {
    md5: Md5State,
    checksums: Vec<(ChecksumAlgo, ChecksumState)>,
    bytes: u64,
}

impl StreamDigests {
    /// MD5 plus the given checksums.
    pub fn new(checksums: &[ChecksumAlgo]) -> Self {
        let mut algos = checksums.to_vec();
        algos.dedup();
        Self {
            md5: Md5State::new(),
            checksums: algos.into_iter().map(|a| (a, ChecksumState::new(a))).collect(),
            bytes: 0,
        }
    }

    /// Feeds the next bytes of the object.
    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.update_checksums(data);
    }

    /// Feeds `inputs[i]` to `streams[i]` for every `i`: the same result as
    /// [`Self::update`] on each, with the MD5s advanced together by the multi-buffer
    /// kernel ([`super::md5`]).
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn update_many(streams: &mut [&mut StreamDigests], inputs: &[&[u8]]) {
        let mut md5s: Vec<&mut Md5State> = streams.iter_mut().map(|s| &mut s.md5).collect();
        super::md5::update_many(&mut md5s, inputs);
        for (stream, data) in streams.iter_mut().zip(inputs) {
            stream.update_checksums(data);
        }
    }

    fn update_checksums(&mut self, data: &[u8]) {
        for (_, state) in &mut self.checksums {
            state.update(data);
        }
        self.bytes += data.len() as u64;
    }

    /// Whether every checksum besides MD5 is a CRC, cheap next to MD5. The CPU engine
    /// batches the MD5s of such streams on one thread; a stream that also computes SHA-1
    /// or SHA-256 would load that thread with work it cannot batch.
    pub fn only_crcs(&self) -> bool {
        self.checksums
            .iter()
            .all(|(algo, _)| matches!(algo, ChecksumAlgo::Crc32 | ChecksumAlgo::Crc32c | ChecksumAlgo::Crc64Nvme))
    }

    /// How many bytes were fed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The final values.
    pub fn finish(self) -> Digests {
        Digests {
            md5: self.md5.finalize(),
            checksums: self.checksums.into_iter().map(|(a, s)| (a, s.finish())).collect(),
        }
    }
}

impl fmt::Debug for StreamDigests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algos: Vec<_> = self.checksums.iter().map(|(a, _)| a.name()).collect();
        f.debug_struct("StreamDigests").field("bytes", &self.bytes).field("checksums", &algos).finish()
    }
}

/// Final whole-object digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// MD5 of the object.
    pub md5: [u8; 16],
    /// The S3 checksums that were asked for, big-endian bytes.
    pub checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // "123456789" is the check input of the CRC catalogue.
        let d = b"123456789";
        assert_eq!(ChecksumAlgo::Crc32.checksum(d), 0xCBF4_3926u32.to_be_bytes());
        assert_eq!(ChecksumAlgo::Crc32c.checksum(d), 0xE306_9283u32.to_be_bytes());
        assert_eq!(ChecksumAlgo::Crc64Nvme.checksum(d), 0xAE8B_1486_0A79_9888u64.to_be_bytes());
        assert_eq!(hex::encode(ChecksumAlgo::Sha1.checksum(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut s = StreamDigests::new(&[ChecksumAlgo::Sha256]);
        s.update(b"a");
        s.update(b"bc");
        let out = s.finish();
        assert_eq!(hex::encode(out.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex::encode(&out.checksums[0].1),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn chunk_id_hex_round_trip() {
        let id = ChunkId::of(b"x");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
