//! Stored values. Each is `[format version][postcard body]`; a value of a version this
//! build does not know is an error naming the family and version, never a guess.
//! A format change adds a version and a migration from the previous one next to it.

use crate::error::StoreError;
use hw_offload::{ChecksumAlgo, ChunkId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// A stored record type and its current format version.
pub trait Record: Serialize + DeserializeOwned {
    /// Name used in errors.
    const KIND: &'static str;
    /// The version this build writes.
    const VERSION: u8;
    /// The oldest version this build still reads (earlier encodings that decode as this
    /// one: a version that only adds enum variants).
    const OLDEST_READABLE: u8 = Self::VERSION;

    /// `[version][body]`.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![Self::VERSION];
        // postcard cannot fail on these types: no maps with non-string keys, no I/O.
        postcard::to_io(self, &mut out).expect("postcard encoding into a Vec");
        out
    }

    /// Decodes a value written by [`Record::encode`].
    fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        decode_as::<Self, Self>(raw, Self::OLDEST_READABLE)
    }
}

/// `raw` decoded as `R`'s encoding, for the versions from `oldest` to `R::VERSION`.
fn decode_as<R: Record, T: DeserializeOwned>(raw: &[u8], oldest: u8) -> Result<T, StoreError> {
    match raw.split_first() {
        Some((&v, body)) if (oldest..=R::VERSION).contains(&v) => {
            postcard::from_bytes(body).map_err(|e| StoreError::CorruptMetadata { kind: R::KIND, reason: e.to_string() })
        }
        Some((&v, _)) => Err(StoreError::UnknownFormat { kind: R::KIND, version: v }),
        None => Err(StoreError::CorruptMetadata { kind: R::KIND, reason: "empty value".into() }),
    }
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
    /// the access key's project that owns it ("" when unowned)
    pub owner: String,
}

impl Record for BucketRecord {
    const KIND: &'static str = "bucket";
    const VERSION: u8 = 1;
}

/// One chunk of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of its plain bytes
    pub id: ChunkId,
    /// plain length
    pub len: u32,
}

/// An object's bytes: inline for small objects, else its chunk list, in the record for
/// objects of a few chunks and in a manifest stored apart for the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// the bytes themselves (as a byte string: postcard's encoding is the same as for a
    /// sequence of u8, but decoding it is a copy instead of a visit per byte)
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// the id of its `ManifestRecord` in the manifests family
    Manifest(u64),
    /// the chunks themselves, in order (at most [`Body::EMBEDDED_CHUNKS_MAX`]): one
    /// record to write and read instead of two
    Chunks(Vec<ChunkRef>),
}

impl Body {
    /// The most chunks kept in the object's record rather than in a manifest (about
    /// 600 bytes of record; listings read every record of the range they list).
    pub const EMBEDDED_CHUNKS_MAX: usize = 16;
}

/// The ordered chunk list of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// chunks in object order
    pub chunks: Vec<ChunkRef>,
}

impl Record for ManifestRecord {
    const KIND: &'static str = "manifest";
    const VERSION: u8 = 1;
}

/// HTTP-level metadata stored with an object and returned as it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Content-Type
    pub content_type: Option<String>,
    /// Cache-Control
    pub cache_control: Option<String>,
    /// Content-Disposition
    pub content_disposition: Option<String>,
    /// Content-Encoding
    pub content_encoding: Option<String>,
    /// Content-Language
    pub content_language: Option<String>,
    /// Expires, as the client sent it
    pub expires: Option<String>,
    /// x-amz-meta-* pairs (names lower-case, without the prefix)
    pub user: BTreeMap<String, String>,
}

/// Everything S3 shows of an object but its key and bytes: the one field group that a
/// stored record, a listing or HEAD answer ([`crate::ObjectInfo`]) and an object a
/// transfer brings in share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHead {
    /// length in bytes
    pub size: u64,
    /// the S3 ETag without quotes: hex MD5, or `md5-of-part-md5s-N` for multipart
    pub etag: String,
    /// S3 checksums over the whole object (or composite, for multipart), big-endian bytes
    pub checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
    /// last modification, ms since the Unix epoch
    pub mtime_ms: i64,
    /// HTTP metadata
    pub meta: ObjectMeta,
    /// sizes of the parts it was uploaded in (empty for a single PUT)
    pub part_sizes: Vec<u64>,
}

/// A stored object. postcard writes a nested struct as its fields in order, so this is
/// the same encoding as when the head's fields sat here one by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// what S3 shows of it
    pub head: ObjectHead,
    /// the bytes
    pub body: Body,
}

impl Record for ObjectRecord {
    const KIND: &'static str = "object";
    /// 2 added `Body::Chunks`: a build that reads only 1 reports such a record as a
    /// format it does not know, not as corrupt.
    const VERSION: u8 = 2;
    const OLDEST_READABLE: u8 = 1;
}

/// Where a chunk's frame is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLoc {
    /// the pack object holding it
    pub pack: u64,
    /// byte offset of the frame in the pack
    pub offset: u64,
    /// frame length (header + payload)
    pub frame_len: u32,
    /// plain length of the chunk
    pub plain_len: u32,
}

impl Record for ChunkLoc {
    const KIND: &'static str = "chunk location";
    const VERSION: u8 = 1;
}

/// A pack object: frames appended by one writer, written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    /// total bytes of the pack object
    pub bytes: u64,
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
}

impl Record for PackRecord {
    const KIND: &'static str = "pack";
    const VERSION: u8 = 1;
}

/// A transfer this site takes part in and has not finished. The spec is the transfer
/// engine's own description, versioned by it, opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
    /// what the transfer layer needs to resume it
    pub spec: Vec<u8>,
}

impl Record for TransferRecord {
    const KIND: &'static str = "transfer";
    const VERSION: u8 = 1;
}

/// Marks a chunk received by an unfinished transfer; it holds one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferChunk {
    /// the chunk's plain length, as its verified bytes measured it: the transfer's commit
    /// checks the objects' references against it without a lookup per chunk
    pub plain_len: u32,
}

impl Record for TransferChunk {
    const KIND: &'static str = "transfer chunk";
    /// 2 added `plain_len`; a marker of version 1 (empty) is read as "length unknown"
    /// by [`TransferChunk::length`].
    const VERSION: u8 = 2;
}

impl TransferChunk {
    /// The length a stored marker records: None for a version-1 marker, which has none.
    pub fn length(raw: &[u8]) -> Result<Option<u32>, StoreError> {
        match raw {
            [1] => Ok(None),
            _ => Self::decode(raw).map(|marker| Some(marker.plain_len)),
        }
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
    /// metadata the completed object gets
    pub meta: ObjectMeta,
    /// the checksum algorithm the client declared for its parts, if any
    pub checksum: Option<ChecksumAlgo>,
    /// the ACL the completed object gets
    pub acl: CannedAcl,
}

impl Record for UploadRecord {
    const KIND: &'static str = "upload";
    /// 2 added `acl`; a version-1 record (an upload started before) reads as private.
    const VERSION: u8 = 2;
    const OLDEST_READABLE: u8 = 1;

    fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        #[derive(Deserialize)]
        struct Version1 {
            created_ms: i64,
            meta: ObjectMeta,
            checksum: Option<ChecksumAlgo>,
        }
        if raw.first() == Some(&1) {
            let Version1 { created_ms, meta, checksum } = decode_as::<Self, Version1>(raw, 1)?;
            return Ok(Self { created_ms, meta, checksum, acl: CannedAcl::Private });
        }
        decode_as::<Self, Self>(raw, Self::VERSION)
    }
}

/// Who besides the bucket's projects may read or write: S3's canned ACLs. New variants go
/// at the end (postcard encodes the variant's index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CannedAcl {
    /// the owner and the projects granted the bucket only
    #[default]
    Private,
    /// anyone may read (and list, on a bucket)
    PublicRead,
    /// anyone may read; any key of this site may write too (not anonymous requests)
    PublicReadWrite,
    /// any key of this site may read
    AuthenticatedRead,
}

impl CannedAcl {
    /// Whether it lets a request read: `signed` by any key of this site, or anonymous.
    pub fn lets_read(self, signed: bool) -> bool {
        match self {
            Self::Private => false,
            Self::PublicRead | Self::PublicReadWrite => true,
            Self::AuthenticatedRead => signed,
        }
    }
}

/// A CORS rule, as PutBucketCors gives it (checked by the gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// the rule's name, if given
    pub id: Option<String>,
    /// origins, each with at most one `*`
    pub allowed_origins: Vec<String>,
    /// HTTP methods
    pub allowed_methods: Vec<String>,
    /// request headers a preflight may ask for, each with at most one `*`
    pub allowed_headers: Vec<String>,
    /// response headers a browser may show the page
    pub expose_headers: Vec<String>,
    /// how long a browser may keep a preflight's answer
    pub max_age_seconds: Option<i32>,
}

/// What a bucket's owner opened to others (the `BUCKET_SETTINGS` column family).
/// Kept out of [`BucketRecord`]: that is compared whole as a write's precondition, and an
/// ACL change must not fail the writes in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSettingsRecord {
    /// the bucket's ACL
    pub acl: CannedAcl,
    /// its CORS rules; none is no CORS configuration
    pub cors: Vec<CorsRule>,
}

impl Record for BucketSettingsRecord {
    const KIND: &'static str = "bucket settings";
    const VERSION: u8 = 1;
}

/// A bucket's policy (the `BUCKET_POLICIES` column family): the JSON
/// document as its owner gave it, kept whole so that GetBucketPolicy answers it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPolicyRecord {
    /// the policy document (JSON)
    pub document: String,
}

impl Record for BucketPolicyRecord {
    const KIND: &'static str = "bucket policy";
    const VERSION: u8 = 1;
}

/// An object's ACL (the `OBJECT_ACLS` column family), for the object known
/// by its ETag and modification time: it says nothing of another object at the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAclRecord {
    /// the object's ETag
    pub etag: String,
    /// the object's modification time, ms since the Unix epoch
    pub mtime_ms: i64,
    /// its ACL
    pub acl: CannedAcl,
}

impl Record for ObjectAclRecord {
    const KIND: &'static str = "object acl";
    const VERSION: u8 = 1;
}

/// What a multipart completion made at a key (the `COMPLETIONS` column family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionRecord {
    /// the completed upload
    pub upload_id: [u8; 16],
    /// MD5 of the listed parts (numbers and ETags): a retry must list the same
    pub parts_digest: [u8; 16],
    /// the object it made, known by its ETag and modification time
    pub etag: String,
    /// see `etag`
    pub mtime_ms: i64,
    /// each listed part's checksums of the object's checksum algorithm, in part order
    pub part_checksums: Vec<Vec<(ChecksumAlgo, Vec<u8>)>>,
}

impl Record for CompletionRecord {
    const KIND: &'static str = "completion";
    const VERSION: u8 = 1;
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// length in bytes
    pub size: u64,
    /// MD5 of the part
    pub md5: [u8; 16],
    /// S3 checksums of the part
    pub checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
    /// upload time, ms since the Unix epoch
    pub mtime_ms: i64,
    /// the part's chunks (parts are never inline: they are concatenated on completion)
    pub chunks: Vec<ChunkRef>,
}

impl Record for PartRecord {
    const KIND: &'static str = "part";
    const VERSION: u8 = 1;
}

/// A chunk taken out of service because its stored bytes are wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// where it was
    pub loc: ChunkLoc,
    /// what was wrong
    pub reason: String,
    /// when it was found, ms since the Unix epoch
    pub found_ms: i64,
}

impl Record for QuarantineRecord {
    const KIND: &'static str = "quarantine";
    const VERSION: u8 = 1;
}

/// An S3 access key. The secret is kept in clear because SigV4 verification needs it
/// (as in every S3 server); the data dir is the operator's to protect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// the secret
    pub secret: String,
    /// the project whose buckets this key reaches
    pub project: String,
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
}

impl Record for AccessKeyRecord {
    const KIND: &'static str = "access key";
    const VERSION: u8 = 1;
}

/// An API token for the catalog and staging routes: a project's, limited to scopes. Only
/// the BLAKE3 of the token is kept (the key of its record), so the metadata database
/// never holds one that works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    /// a short public id, to list and delete it by
    pub id: String,
    /// the project it acts for
    pub project: String,
    /// what it may do (`catalog:read`, `catalog:write`, `stage`)
    pub scopes: Vec<String>,
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
}

impl Record for ApiTokenRecord {
    const KIND: &'static str = "api token";
    const VERSION: u8 = 1;
}

/// A project allowed into another project's bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// when it was granted, ms since the Unix epoch
    pub created_ms: i64,
}

impl Record for GrantRecord {
    const KIND: &'static str = "grant";
    const VERSION: u8 = 1;
}

/// What a site of the federation may do with a bucket here. The bucket's owner decides;
/// a bucket no record names is shared with no site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteShareRecord {
    /// the site may pull the bucket's objects, copy them to a third site, and repair the
    /// chunks they use from here
    pub read: bool,
    /// the site may push objects into the bucket
    pub write: bool,
    /// when it was last set, ms since the Unix epoch
    pub created_ms: i64,
}

impl Record for SiteShareRecord {
    const KIND: &'static str = "site share";
    const VERSION: u8 = 1;
}

/// Reference counts: `[version][i64 BE]`, summed by RocksDB's merge operator so that
/// concurrent commits never read-modify-write.
pub mod refcount {
    /// Current format.
    pub const VERSION: u8 = 1;

    /// Encodes a count or a delta.
    pub fn encode(n: i64) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = VERSION;
        out[1..].copy_from_slice(&n.to_be_bytes());
        out
    }

    /// Decodes a count or delta; `None` for an unknown version or a torn value.
    pub fn decode(raw: &[u8]) -> Option<i64> {
        match raw {
            [VERSION, rest @ ..] => Some(i64::from_be_bytes(rest.try_into().ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_unknown_versions() {
        let rec = BucketRecord { created_ms: 5, owner: "proj".into() };
        let raw = rec.encode();
        assert_eq!(BucketRecord::decode(&raw).unwrap(), rec);
        let mut future = raw.clone();
        future[0] = 9;
        assert!(matches!(BucketRecord::decode(&future), Err(StoreError::UnknownFormat { kind: "bucket", version: 9 })));
        assert!(matches!(BucketRecord::decode(&raw[..1]), Err(StoreError::CorruptMetadata { .. })));
        assert_eq!(refcount::decode(&refcount::encode(-3)), Some(-3));
        assert_eq!(refcount::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn object_records_of_version_1_still_read_and_chunk_lists_need_version_2() {
        let mut rec = ObjectRecord { head: head(), body: Body::Manifest(7) };
        // What version 1 wrote: the same body encoding under the version byte 1.
        let mut v1 = rec.encode();
        assert_eq!(v1[0], 2);
        v1[0] = 1;
        assert_eq!(ObjectRecord::decode(&v1).unwrap(), rec);
        rec.body = Body::Chunks(vec![ChunkRef { id: ChunkId::of(b"abc"), len: 3 }]);
        let v2 = rec.encode();
        assert_eq!(ObjectRecord::decode(&v2).unwrap(), rec);
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert!(matches!(ObjectRecord::decode(&v3), Err(StoreError::UnknownFormat { kind: "object", version: 3 })));
    }

    fn head() -> ObjectHead {
        ObjectHead {
            size: 3,
            etag: "e".into(),
            checksums: vec![(ChecksumAlgo::Crc32c, vec![1, 2, 3, 4])],
            mtime_ms: 1,
            meta: ObjectMeta { content_type: Some("text/plain".into()), ..ObjectMeta::default() },
            part_sizes: vec![3],
        }
    }

    #[test]
    fn the_head_group_keeps_the_encoding_of_its_fields_in_the_record() {
        // What earlier builds wrote, before the head was a struct of its own.
        #[derive(Serialize)]
        struct FlatRecord {
            size: u64,
            etag: String,
            checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
            mtime_ms: i64,
            meta: ObjectMeta,
            part_sizes: Vec<u64>,
            body: Body,
        }
        let h = head();
        let flat = FlatRecord {
            size: h.size,
            etag: h.etag.clone(),
            checksums: h.checksums.clone(),
            mtime_ms: h.mtime_ms,
            meta: h.meta.clone(),
            part_sizes: h.part_sizes.clone(),
            body: Body::Manifest(9),
        };
        let nested = ObjectRecord { head: h, body: Body::Manifest(9) };
        assert_eq!(postcard::to_allocvec(&flat).unwrap(), postcard::to_allocvec(&nested).unwrap());
    }

    #[test]
    fn upload_records_of_version_1_read_as_private() {
        #[derive(Serialize)]
        struct Version1 {
            created_ms: i64,
            meta: ObjectMeta,
            checksum: Option<ChecksumAlgo>,
        }
        let meta = ObjectMeta { content_type: Some("text/csv".into()), ..ObjectMeta::default() };
        let mut v1 = vec![1];
        let old = Version1 { created_ms: 7, meta: meta.clone(), checksum: Some(ChecksumAlgo::Crc32) };
        v1.extend(postcard::to_allocvec(&old).unwrap());
        let read = UploadRecord::decode(&v1).unwrap();
        assert_eq!(
            read,
            UploadRecord { created_ms: 7, meta, checksum: Some(ChecksumAlgo::Crc32), acl: CannedAcl::Private }
        );
        let public = UploadRecord { acl: CannedAcl::PublicRead, ..read };
        assert_eq!(UploadRecord::decode(&public.encode()).unwrap(), public);
        let mut v3 = public.encode();
        v3[0] = 3;
        assert!(matches!(UploadRecord::decode(&v3), Err(StoreError::UnknownFormat { kind: "upload", version: 3 })));
    }

    #[test]
    fn transfer_markers_of_version_1_read_as_length_unknown() {
        assert_eq!(TransferChunk::length(&[1]).unwrap(), None, "what builds before lengths wrote");
        let marker = TransferChunk { plain_len: 65_536 };
        assert_eq!(TransferChunk::length(&marker.encode()).unwrap(), Some(65_536));
        assert!(matches!(TransferChunk::length(&[3]), Err(StoreError::UnknownFormat { .. })));
    }

    #[test]
    fn inline_bodies_keep_the_encoding_of_a_u8_sequence() {
        // What earlier builds wrote, before the body was a byte string.
        #[derive(Serialize)]
        enum OldBody {
            Inline(Vec<u8>),
        }
        let bytes: Vec<u8> = (0..=255).chain(0..40).collect();
        let old = postcard::to_allocvec(&OldBody::Inline(bytes.clone())).unwrap();
        assert_eq!(postcard::to_allocvec(&Body::Inline(bytes.clone())).unwrap(), old);
        assert_eq!(postcard::from_bytes::<Body>(&old).unwrap(), Body::Inline(bytes));
    }
}
