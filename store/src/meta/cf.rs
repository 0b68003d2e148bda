//! Column family names: the one list of what the metadata database holds.

/// bucket name → [`BucketRecord`](super::values::BucketRecord)
pub const BUCKETS: &str = "buckets";
/// [`object_key`](super::keys::object_key) → [`ObjectRecord`](super::values::ObjectRecord)
pub const OBJECTS: &str = "objects";
/// manifest id (u64 BE) → [`ManifestRecord`](super::values::ManifestRecord): the chunk
/// list of an object, kept apart so listings never decode manifests
pub const MANIFESTS: &str = "manifests";
/// chunk id → [`ChunkLoc`](super::values::ChunkLoc): where the chunk's frame lives
pub const CHUNKS: &str = "chunks";
/// chunk id → reference count (merge operator adds deltas)
pub const REFCOUNTS: &str = "refcounts";
/// [`bucket_chunk_key`](super::keys::bucket_chunk_key) → reference count: how many
/// objects of the bucket use the chunk (merge operator adds deltas; 0 is absent), so that
/// what a peer allowed to read some buckets could fetch anyway is a lookup, not a scan.
/// The empty key marks the index as built (a store made before it is indexed at open).
pub const BUCKET_CHUNKS: &str = "bucket_chunks";
/// pack id → [`PackRecord`](super::values::PackRecord)
pub const PACKS: &str = "packs";
/// [`upload_key`](super::keys::upload_key) → [`UploadRecord`](super::values::UploadRecord)
pub const UPLOADS: &str = "uploads";
/// [`part_key`](super::keys::part_key) → [`PartRecord`](super::values::PartRecord)
pub const PARTS: &str = "parts";
/// chunk id → [`QuarantineRecord`](super::values::QuarantineRecord): chunks scrub or a
/// read found corrupt, kept out of the index until repaired
pub const QUARANTINE: &str = "quarantine";

/// transfer id (16 bytes) → [`TransferRecord`](super::values::TransferRecord): a transfer
/// this site takes part in that has not finished, so it resumes after a restart
pub const TRANSFERS: &str = "transfers";
/// [`transfer_chunk_key`](super::keys::transfer_chunk_key) → [`TransferChunk`](super::values::TransferChunk):
/// a chunk an unfinished transfer received; each holds one reference, so GC keeps the chunk
pub const TRANSFER_CHUNKS: &str = "transfer_chunks";

/// access key id → [`AccessKeyRecord`](super::values::AccessKeyRecord)
pub const ACCESS_KEYS: &str = "access_keys";
/// [`grant_key`](super::keys::grant_key) → [`GrantRecord`](super::values::GrantRecord):
/// projects allowed into a bucket besides its owner
pub const GRANTS: &str = "grants";
/// [`grant_key`](super::keys::grant_key)`(bucket, site)` → [`SiteShareRecord`](super::values::SiteShareRecord):
/// the sites of the federation a bucket is shared with
pub const SITE_SHARES: &str = "site_shares";

/// BLAKE3 of an API token → [`ApiTokenRecord`](super::values::ApiTokenRecord)
pub const API_TOKENS: &str = "api_tokens";

/// version id (32 bytes) → [`ManifestRecord`](super::values::ManifestRecord): the chunks a
/// published dataset version holds, one reference per occurrence, as an object does
pub const VERSION_HOLDS: &str = "version_holds";

/// chunk id ‖ version id → nothing: the versions held here that use a chunk, so that a
/// chunk quarantined or repaired changes their replicas in the same write
pub const CHUNK_VERSIONS: &str = "chunk_versions";

/// from site ‖ 0 ‖ to site → [`LinkRate`](crate::links::LinkRate), encoded by it: the
/// transfer rates measured between sites
pub const LINK_RATES: &str = "link_rates";

/// [`object_key`](super::keys::object_key) → [`CompletionRecord`](super::values::CompletionRecord):
/// what the last multipart completion at a key made, so that a retried completion gets the
/// same answer and GetObjectAttributes the parts' checksums. At most one per key, and it
/// speaks for the object only while the object is still the one it made.
pub const COMPLETIONS: &str = "completions";

/// bucket name → [`BucketSettingsRecord`](super::values::BucketSettingsRecord): the ACL
/// and CORS rules its owner set; none is private and no CORS
pub const BUCKET_SETTINGS: &str = "bucket_settings";

/// [`object_key`](super::keys::object_key) → [`ObjectAclRecord`](super::values::ObjectAclRecord):
/// the ACL of an object that is not private, for as long as the object is the one it names
pub const OBJECT_ACLS: &str = "object_acls";

/// bucket name → [`BucketPolicyRecord`](super::values::BucketPolicyRecord): the bucket
/// policy its owner set, as given (the gateway parses and enforces it); none is no policy
pub const BUCKET_POLICIES: &str = "bucket_policies";

/// The catalog's tables (`catalog::storage::Table`), kept here so that a version's hold on
/// its chunks and the catalog records that describe it commit in one write.
pub const CATALOG: [&str; 13] = [
    "catalog_events",
    "catalog_heads",
    "catalog_namespaces",
    "catalog_versions",
    "catalog_tags",
    "catalog_replicas",
    "catalog_rules",
    "catalog_pins",
    "catalog_manifests",
    "catalog_outbox",
    "catalog_checkpoints",
    "catalog_staged",
    "catalog_described",
];

/// Every column family, in creation order.
pub const ALL: [&str; 36] = [
    BUCKETS,
    OBJECTS,
    MANIFESTS,
    CHUNKS,
    REFCOUNTS,
    PACKS,
    UPLOADS,
    PARTS,
    QUARANTINE,
    ACCESS_KEYS,
    GRANTS,
    TRANSFERS,
    TRANSFER_CHUNKS,
    SITE_SHARES,
    BUCKET_CHUNKS,
    VERSION_HOLDS,
    API_TOKENS,
    CATALOG[0],
    CATALOG[1],
    CATALOG[2],
    CATALOG[3],
    CATALOG[4],
    CATALOG[5],
    CATALOG[6],
    CATALOG[7],
    CATALOG[8],
    CATALOG[9],
    CHUNK_VERSIONS,
    LINK_RATES,
    CATALOG[10],
    CATALOG[11],
    CATALOG[12],
    COMPLETIONS,
    BUCKET_SETTINGS,
    OBJECT_ACLS,
    BUCKET_POLICIES,
];
