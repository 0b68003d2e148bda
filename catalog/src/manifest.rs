//! A version's manifest: the files of a bucket prefix as they were when it was published,
//! in one canonical encoding whose BLAKE3 is the version's id.
//!
//! # Canonical encoding (format 1)
//!
//! All integers big-endian; strings are UTF-8 with a length prefix.
//!
//! ```text
//! magic      "clusster-manifest" (17 bytes)
//! format     u8 = 1
//! files      u32, then each file, in strictly increasing byte order of path:
//!   path       u16 length + bytes (relative to the published prefix, never empty)
//!   size       u64
//!   mtime_ms   u64
//!   etag       u16 length + bytes
//!   checksums  u8 count, then each, in strictly increasing order of algorithm name:
//!                u8 length + algorithm name (lower case, as in S3 headers: "crc32c", "sha256"…)
//!                u8 length + digest bytes
//!   chunks     u32 count, then each: 32-byte chunk id, u32 plain length (> 0)
//! ```
//!
//! A file's chunk lengths add up to its size; an object stored inline has one chunk named
//! by the BLAKE3 of its bytes (as transfers name it), an empty one none. Decoding refuses
//! anything that would not encode back to the same bytes (unsorted paths, trailing bytes,
//! a wrong total), so a manifest fetched from a peer is verified by its id alone.

use hw_offload::ChunkId;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 17] = b"clusster-manifest";
const FORMAT: u8 = 1;

/// Most files in one version: a bound on what a peer's manifest may make this site decode.
pub const MAX_FILES: usize = 10_000_000;

/// A version's id: the BLAKE3 of its manifest's canonical encoding. Hex in JSON, 32 bytes
/// in the binary encodings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(pub [u8; 32]);

impl Serialize for VersionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for VersionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("a version id is 64 hex digits"))
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

impl VersionId {
    /// The id of an encoded manifest.
    pub fn of(encoded: &[u8]) -> Self {
        Self(*blake3::hash(encoded).as_bytes())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`VersionId::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VersionId({})", &self.to_hex()[..16])
    }
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// path relative to the published prefix
    pub path: String,
    /// bytes
    pub size: u64,
    /// modification time, ms since the epoch
    pub mtime_ms: u64,
    /// the S3 ETag, without quotes
    pub etag: String,
    /// S3 checksums: (algorithm, digest), sorted by algorithm
    pub checksums: Vec<(String, Vec<u8>)>,
    /// chunks in order: (id, plain length)
    pub chunks: Vec<(ChunkId, u32)>,
}

/// The files of a version, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// the files, in strictly increasing byte order of path
    pub files: Vec<FileEntry>,
}

/// A manifest that cannot be encoded, or bytes that are not a canonical manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest: {0}")]
pub struct ManifestError(pub String);

fn bad(reason: impl Into<String>) -> ManifestError {
    ManifestError(reason.into())
}

impl Manifest {
    /// A manifest of `files` in any order: sorts them, and refuses what the encoding
    /// cannot hold (duplicate or empty paths, over-long strings, sizes that do not match
    /// the chunks).
    pub fn new(mut files: Vec<FileEntry>) -> Result<Self, ManifestError> {
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        for file in &mut files {
            file.checksums.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        let manifest = Self { files };
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.files.len() > MAX_FILES {
            return Err(bad(format!("{} files, at most {MAX_FILES}", self.files.len())));
        }
        for pair in self.files.windows(2) {
            if pair[0].path.as_bytes() >= pair[1].path.as_bytes() {
                return Err(bad(format!("path {:?} twice or out of order", pair[1].path)));
            }
        }
        for f in &self.files {
            if f.path.is_empty() || f.path.len() > u16::MAX as usize {
                return Err(bad(format!("path {:?}: 1 to 65,535 bytes", f.path)));
            }
            if f.etag.len() > u16::MAX as usize {
                return Err(bad(format!("{}: ETag too long", f.path)));
            }
            if f.checksums.len() > u8::MAX as usize
                || f.checksums.iter().any(|(a, d)| a.len() > u8::MAX as usize || d.len() > u8::MAX as usize)
            {
                return Err(bad(format!("{}: too many or too long checksums", f.path)));
            }
            for pair in f.checksums.windows(2) {
                if pair[0].0.as_bytes() >= pair[1].0.as_bytes() {
                    return Err(bad(format!("{}: checksum {} twice or out of order", f.path, pair[1].0)));
                }
            }
            if f.chunks.len() > u32::MAX as usize || f.chunks.iter().any(|(_, len)| *len == 0) {
                return Err(bad(format!("{}: empty chunk", f.path)));
            }
            let total: u64 = f.chunks.iter().map(|(_, len)| *len as u64).sum();
            if total != f.size {
                return Err(bad(format!("{}: size {} but chunks of {total} bytes", f.path, f.size)));
            }
        }
        Ok(())
    }

    /// Total bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The canonical encoding (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let chunks: usize = self.files.iter().map(|f| f.chunks.len()).sum();
        let mut out = Vec::with_capacity(32 + self.files.len() * 96 + chunks * 36);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            out.extend_from_slice(&(f.path.len() as u16).to_be_bytes());
            out.extend_from_slice(f.path.as_bytes());
            out.extend_from_slice(&f.size.to_be_bytes());
            out.extend_from_slice(&f.mtime_ms.to_be_bytes());
            out.extend_from_slice(&(f.etag.len() as u16).to_be_bytes());
            out.extend_from_slice(f.etag.as_bytes());
            out.push(f.checksums.len() as u8);
            for (algo, digest) in &f.checksums {
                out.push(algo.len() as u8);
                out.extend_from_slice(algo.as_bytes());
                out.push(digest.len() as u8);
                out.extend_from_slice(digest);
            }
            out.extend_from_slice(&(f.chunks.len() as u32).to_be_bytes());
            for (id, len) in &f.chunks {
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out
    }

    /// The version id of this manifest.
    pub fn id(&self) -> VersionId {
        VersionId::of(&self.encode())
    }

    /// Decodes a canonical encoding, refusing anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(bad("not a clusster manifest"));
        }
        let format = r.u8()?;
        if format != FORMAT {
            return Err(bad(format!("format {format}, this build reads {FORMAT}")));
        }
        let count = r.u32()? as usize;
        if count > MAX_FILES {
            return Err(bad(format!("{count} files, at most {MAX_FILES}")));
        }
        // Each file takes at least 27 bytes: no allocation beyond what the bytes can hold.
        let mut files = Vec::with_capacity(count.min(bytes.len() / 27));
        for _ in 0..count {
            let path = r.string16()?;
            let size = r.u64()?;
            let mtime_ms = r.u64()?;
            let etag = r.string16()?;
            let n = r.u8()? as usize;
            let mut checksums = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.u8()? as usize;
                let algo = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| bad("checksum name not UTF-8"))?;
                let len = r.u8()? as usize;
                checksums.push((algo, r.take(len)?.to_vec()));
            }
            let n = r.u32()? as usize;
            let mut chunks = Vec::with_capacity(n.min(r.left() / 36));
            for _ in 0..n {
                let id = ChunkId(r.take(32)?.try_into().expect("32 bytes"));
                chunks.push((id, r.u32()?));
            }
            files.push(FileEntry { path, size, mtime_ms, etag, checksums, chunks });
        }
        if r.left() != 0 {
            return Err(bad(format!("{} bytes after the last file", r.left())));
        }
        let manifest = Self { files };
        manifest.check()?;
        Ok(manifest)
    }

    /// Decodes `bytes` and checks that they are the manifest of `id`.
    pub fn decode_verified(bytes: &[u8], id: &VersionId) -> Result<Self, ManifestError> {
        let got = VersionId::of(bytes);
        if got != *id {
            return Err(bad(format!("bytes hash to {got}, not to version {id}")));
        }
        Self::decode(bytes)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if self.left() < n {
            return Err(bad(format!("truncated at byte {}", self.at)));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ManifestError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string16(&mut self) -> Result<String, ManifestError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sizes: &[u32]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: sizes.iter().map(|s| *s as u64).sum(),
            mtime_ms: 1_700_000_000_000,
            etag: "\"abc\"".into(),
            checksums: vec![("SHA256".into(), vec![7; 32]), ("CRC32C".into(), vec![1, 2, 3, 4])],
            chunks: sizes.iter().enumerate().map(|(i, s)| (ChunkId([i as u8; 32]), *s)).collect(),
        }
    }

    #[test]
    fn the_encoding_is_canonical_and_names_the_version() {
        let a = Manifest::new(vec![file("b/2", &[10, 20]), file("a", &[5]), file("empty", &[])]).unwrap();
        let b = Manifest::new(vec![file("empty", &[]), file("a", &[5]), file("b/2", &[10, 20])]).unwrap();
        assert_eq!(a.encode(), b.encode(), "the order files are given in does not matter");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.files[0].checksums[0].0, "CRC32C", "checksums sorted");
        let decoded = Manifest::decode_verified(&a.encode(), &a.id()).unwrap();
        assert_eq!(decoded, a);
        assert_eq!(a.bytes(), 35);
    }

    #[test]
    fn a_version_id_is_hex_in_json_and_bytes_in_postcard() {
        let id = VersionId([0xab; 32]);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<VersionId>(&serde_json::to_string(&id).unwrap()).unwrap(), id);
        assert_eq!(postcard::to_allocvec(&id).unwrap(), vec![0xab; 32]);
    }

    #[test]
    fn bytes_that_are_not_canonical_are_refused() {
        let m = Manifest::new(vec![file("a", &[5]), file("b", &[6])]).unwrap();
        let bytes = m.encode();
        // Another version's id.
        assert!(Manifest::decode_verified(&bytes, &VersionId([0; 32])).is_err());
        // Trailing bytes, truncation, a wrong format.
        assert!(Manifest::decode(&[&bytes[..], &[0]].concat()).is_err());
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut other = bytes.clone();
        other[17] = 2;
        assert!(Manifest::decode(&other).unwrap_err().0.contains("format 2"));
        // Files out of order (encoded without the sorting `new` does).
        let unsorted = Manifest { files: vec![file("b", &[6]), file("a", &[5])] };
        assert!(Manifest::decode(&unsorted.encode()).unwrap_err().0.contains("out of order"));
        // A count that promises more files than there are bytes allocates nothing big.
        let mut huge = bytes[..18].to_vec();
        huge.extend_from_slice(&(MAX_FILES as u32).to_be_bytes());
        assert!(Manifest::decode(&huge).is_err());
    }

    #[test]
    fn what_the_encoding_cannot_hold_is_refused() {
        assert!(Manifest::new(vec![file("a", &[1]), file("a", &[2])]).is_err(), "a path twice");
        assert!(Manifest::new(vec![file("", &[1])]).is_err(), "an empty path");
        let mut wrong = file("a", &[1, 2]);
        wrong.size = 4;
        assert!(Manifest::new(vec![wrong]).unwrap_err().0.contains("size 4"));
        assert!(Manifest::new(vec![file("a", &[0])]).is_err(), "an empty chunk");
    }
}
