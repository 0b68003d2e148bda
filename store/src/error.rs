//! Store errors, named by what happened.

use hw_offload::{ChunkId, JobError};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bucket does not exist.
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// The bucket exists already.
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    /// `If-None-Match: *` was asked and the key exists (checked at commit, under the key lock).
    #[error("{bucket}/{key} exists already and the write asked for a new key only")]
    ObjectExists {
        /// the bucket
        bucket: String,
        /// the key
        key: String,
    },
    /// `If-Match` was asked and the key holds an object with another ETag (checked at
    /// commit, under the key lock).
    #[error("{bucket}/{key} has another ETag than the write asked for")]
    EtagMismatch {
        /// the bucket
        bucket: String,
        /// the key
        key: String,
    },
    /// The bucket still holds objects or uploads.
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    /// The object does not exist.
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey {
        /// bucket
        bucket: String,
        /// key
        key: String,
    },
    /// The multipart upload does not exist (never created, completed or aborted).
    #[error("multipart upload {0} does not exist")]
    NoSuchUpload(String),
    /// A part listed for completion is missing or has another ETag.
    #[error("part {part} is missing or its ETag does not match")]
    InvalidPart {
        /// part number
        part: u32,
    },
    /// Parts listed for completion are not in ascending order.
    #[error("parts must be listed in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum part size.
    #[error("part {part} is {size} bytes; every part but the last must be at least {min} bytes")]
    PartTooSmall {
        /// part number
        part: u32,
        /// its size
        size: u64,
        /// the minimum
        min: u64,
    },
    /// The requested range starts beyond the object.
    #[error("range starts at {start}, beyond the object's {size} bytes")]
    InvalidRange {
        /// requested start
        start: u64,
        /// object size
        size: u64,
    },
    /// The body does not match the digest the client sent.
    #[error("{algo} of the body is {actual}, the request said {expected}")]
    DigestMismatch {
        /// which digest
        algo: &'static str,
        /// what the client sent (hex)
        expected: String,
        /// what the body has (hex)
        actual: String,
    },
    /// The body is larger than allowed.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// the limit
        limit: u64,
    },
    /// A stored chunk failed verification; it has been quarantined.
    #[error("chunk {id} is corrupt ({reason}); it was quarantined, repair it from another site's replica")]
    CorruptChunk {
        /// the chunk
        id: ChunkId,
        /// what was wrong
        reason: String,
    },
    /// A reference names a chunk with another length than the chunk has: the reference is
    /// wrong, not the chunk, which stays in use for every other object naming it.
    #[error(
        "chunk {id} is {held} bytes but is referenced as {referenced}: the object naming it is damaged (re-upload \
         or re-transfer it); the chunk itself is sound"
    )]
    ChunkLengthMismatch {
        /// the chunk
        id: ChunkId,
        /// the length the reference gives
        referenced: u32,
        /// the length the chunk has
        held: u32,
    },
    /// One commit names a chunk with two lengths: at least one reference lies.
    #[error("chunk {id} is named with two lengths ({one} and {other} bytes): nothing was committed")]
    ConflictingLengths {
        /// the chunk
        id: ChunkId,
        /// one length given
        one: u32,
        /// the other
        other: u32,
    },
    /// A chunk an object needs is not in the index (quarantined or lost).
    #[error("chunk {0} is missing from the store (quarantined or lost); repair it from another site's replica")]
    MissingChunk(ChunkId),
    /// A metadata value has a format version this build does not know.
    #[error("{kind} record has format version {version}, which this build does not know; upgrade clusster")]
    UnknownFormat {
        /// record type
        kind: &'static str,
        /// stored version
        version: u8,
    },
    /// A metadata value could not be decoded.
    #[error("{kind} record is corrupt: {reason}")]
    CorruptMetadata {
        /// record type
        kind: &'static str,
        /// decoder message
        reason: String,
    },
    /// The disk (or quota) is full.
    #[error("no space left: {0}; free space or add capacity, nothing stored was changed")]
    DiskFull(String),
    /// RocksDB failed.
    #[error("metadata database error: {0}")]
    Metadata(String),
    /// The chunk backend failed.
    #[error("chunk store error: {0}")]
    Backend(String),
    /// Reading the request body failed (client disconnect, bad framing).
    #[error("reading the body failed: {0}")]
    Body(String),
    /// The offload engine failed.
    #[error("offload engine: {0}")]
    Offload(#[from] JobError),
    /// A name (project, bucket) is not acceptable.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The configuration is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

/// Whether an I/O error says the disk (or the quota) is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        // object_store wraps the filesystem's error: find it in the source chain.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut full = false;
        while let Some(c) = cause {
            full |= c.downcast_ref::<std::io::Error>().is_some_and(is_full);
            cause = c.source();
        }
        if full { StoreError::DiskFull(format!("chunk store: {e}")) } else { StoreError::Backend(e.to_string()) }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if is_full(&e) { StoreError::DiskFull(e.to_string()) } else { StoreError::Backend(e.to_string()) }
    }
}
