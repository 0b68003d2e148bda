//! Multipart uploads: parts are ingested like objects (never inline) and hold their
//! chunks' references until the upload is completed (the object takes them over) or
//! aborted (they are released).

use crate::Store;
use crate::error::StoreError;
use crate::ingest::{Ingested, IngestedBody};
use crate::meta::values::{
    CannedAcl, CompletionRecord, ObjectHead, ObjectMeta, ObjectRecord, PartRecord, UploadRecord,
};
use crate::meta::{cf, keys};
use crate::objects::{ObjectInfo, Precondition, PutOptions};
use bytes::Bytes;
use futures::Stream;
use hw_offload::{ChecksumAlgo, ChunkId};
use md5::Digest as _;
use std::collections::HashMap;

/// S3's minimum size of every part but the last.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's part numbers run from 1 to 10,000.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// How long a completed upload answers a retry of its completion (a client that lost the
/// first answer retries within seconds; a day covers a retry queue's backoff).
pub const COMPLETION_RETRY_MS: i64 = 24 * 3600 * 1000;

/// S3 checksums, by algorithm, as big-endian bytes.
pub type Checksums = Vec<(ChecksumAlgo, Vec<u8>)>;

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// the key it will create
    pub key: String,
    /// its id
    pub upload_id: String,
    /// creation time, ms since the Unix epoch
    pub created_ms: i64,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// part number
    pub part: u32,
    /// length
    pub size: u64,
    /// ETag (hex MD5), unquoted
    pub etag: String,
    /// S3 checksums of the part
    pub checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
    /// upload time, ms since the Unix epoch
    pub mtime_ms: i64,
}

impl PartInfo {
    fn from_record(part: u32, r: &PartRecord) -> Self {
        Self { part, size: r.size, etag: hex::encode(r.md5), checksums: r.checksums.clone(), mtime_ms: r.mtime_ms }
    }
}

fn parse_upload_id(upload_id: &str) -> Result<[u8; keys::UPLOAD_ID_LEN], StoreError> {
    let mut id = [0u8; keys::UPLOAD_ID_LEN];
    hex::decode_to_slice(upload_id, &mut id).map_err(|_| StoreError::NoSuchUpload(upload_id.to_owned()))?;
    Ok(id)
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// What identifies the parts a completion listed.
fn parts_digest(listed: &[(u32, String)]) -> [u8; 16] {
    let mut md5 = md5::Md5::new();
    for (n, etag) in listed {
        md5.update(n.to_be_bytes());
        md5.update(unquote(etag).as_bytes());
        md5.update([0]);
    }
    md5.finalize().into()
}

impl Store {
    /// Starts an upload; returns its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        checksum: Option<ChecksumAlgo>,
    ) -> Result<String, StoreError> {
        self.create_upload_with_acl(bucket, key, meta, checksum, CannedAcl::Private).await
    }

    /// Starts an upload whose object gets `acl`; returns its id.
    pub async fn create_upload_with_acl(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        checksum: Option<ChecksumAlgo>,
        acl: CannedAcl,
    ) -> Result<String, StoreError> {
        let _bucket_stays = self.bucket_lock(bucket).read().await;
        self.bucket(bucket)?;
        let id: [u8; keys::UPLOAD_ID_LEN] = rand::random();
        let mut batch = self.meta.batch();
        batch.put(
            cf::UPLOADS,
            &keys::upload_key(bucket, key, &id),
            &UploadRecord { created_ms: crate::now_ms(), meta, checksum, acl },
        );
        self.commit(batch).await?;
        Ok(hex::encode(id))
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<([u8; 16], UploadRecord), StoreError> {
        let id = parse_upload_id(upload_id)?;
        let record = self
            .meta
            .get::<UploadRecord>(cf::UPLOADS, &keys::upload_key(bucket, key, &id))?
            .ok_or_else(|| StoreError::NoSuchUpload(upload_id.to_owned()))?;
        Ok((id, record))
    }

    /// Streams one part in, replacing an earlier part of the same number.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part<S, E>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: u32,
        body: S,
        opts: &PutOptions,
    ) -> Result<PartInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.upload(bucket, key, upload_id)?;
        let ingested = self.ingest_verified(body, opts, false, MIN_PART_BYTES * 1024).await?;
        self.commit_part(bucket, key, upload_id, part, ingested).await
    }

    /// Commits an ingested body (ingested with `allow_inline: false`) as part `part`,
    /// replacing an earlier part of the same number.
    pub async fn commit_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: u32,
        ingested: Ingested,
    ) -> Result<PartInfo, StoreError> {
        let _guard = self.lock_upload(upload_id).await;
        let (id, _) = self.upload(bucket, key, upload_id)?;
        let chunks = match &ingested.body {
            IngestedBody::Chunks(c) => c.clone(),
            IngestedBody::Inline(_) => {
                return Err(StoreError::Config("parts must be ingested with allow_inline = false".into()));
            }
        };
        let record = PartRecord {
            size: ingested.size,
            md5: ingested.digests.md5,
            checksums: ingested.digests.checksums.clone(),
            mtime_ms: crate::now_ms(),
            chunks,
        };
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        for c in &record.chunks {
            *deltas.entry(c.id).or_default() += 1;
        }
        let pkey = keys::part_key(&id, part);
        if let Some(old) = self.meta.get::<PartRecord>(cf::PARTS, &pkey)? {
            for c in &old.chunks {
                *deltas.entry(c.id).or_default() -= 1;
            }
        }
        let mut batch = self.meta.batch();
        let repaired = self.stage_new_chunks(&mut batch, &ingested)?;
        let _versions = self.stage_repairs(&mut batch, &repaired).await?;
        batch.put(cf::PARTS, &pkey, &record);
        for (chunk, delta) in deltas {
            batch.add_ref(&chunk, delta);
        }
        self.commit(batch).await?;
        ingested.record(self.metrics());
        Ok(PartInfo::from_record(part, &record))
    }

    /// The checksum algorithm an upload declared at creation.
    pub fn upload_checksum(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<ChecksumAlgo>, StoreError> {
        Ok(self.upload(bucket, key, upload_id)?.1.checksum)
    }

    fn parts(&self, id: &[u8; 16]) -> Result<Vec<(u32, PartRecord)>, StoreError> {
        self.meta
            .scan::<PartRecord>(cf::PARTS, id, id)
            .map(|r| {
                let (k, v) = r?;
                let (_, n) = keys::decode_part_key(&k)
                    .ok_or(StoreError::CorruptMetadata { kind: "part key", reason: hex::encode(&k) })?;
                Ok((n, v))
            })
            .collect()
    }

    /// Completes an upload from the listed parts (number, ETag) in ascending order.
    /// Parts not listed are released. `checksums` are stored as the object's checksums.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
        checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
    ) -> Result<ObjectInfo, StoreError> {
        self.complete_upload_if(bucket, key, upload_id, listed, checksums, &Precondition::default()).await
    }

    /// [`Store::complete_upload`] if `pre` holds at the commit. A retry of a completion
    /// that succeeded (same upload id, same parts listed) answers the object it made, for
    /// [`COMPLETION_RETRY_MS`] and as long as that object is still the one at the key;
    /// otherwise the upload is gone (NoSuchUpload).
    pub async fn complete_upload_if(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
        checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
        pre: &Precondition,
    ) -> Result<ObjectInfo, StoreError> {
        let _guard = self.lock_upload(upload_id).await;
        let (id, upload) = match self.upload(bucket, key, upload_id) {
            Err(StoreError::NoSuchUpload(_)) => return self.completed_upload(bucket, key, upload_id, listed),
            found => found?,
        };
        if listed.is_empty() {
            return Err(StoreError::InvalidPart { part: 0 });
        }
        let mut parts: HashMap<u32, PartRecord> = self.parts(&id)?.into_iter().collect();
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::InvalidPartOrder);
        }
        let mut chunks = Vec::new();
        let mut part_sizes = Vec::with_capacity(listed.len());
        let mut part_checksums = Vec::with_capacity(listed.len());
        let mut md5s = md5::Md5::new();
        let mut size = 0u64;
        let mut batch = self.meta.batch();
        for (i, (n, etag)) in listed.iter().enumerate() {
            let part = parts.remove(n).filter(|p| hex::encode(p.md5) == unquote(etag));
            let part = part.ok_or(StoreError::InvalidPart { part: *n })?;
            if i + 1 < listed.len() && part.size < MIN_PART_BYTES {
                return Err(StoreError::PartTooSmall { part: *n, size: part.size, min: MIN_PART_BYTES });
            }
            md5s.update(part.md5);
            let of_the_object = part.checksums.iter().filter(|(a, _)| checksums.iter().any(|(b, _)| a == b));
            part_checksums.push(of_the_object.cloned().collect());
            size += part.size;
            part_sizes.push(part.size);
            chunks.extend_from_slice(&part.chunks);
            batch.delete(cf::PARTS, &keys::part_key(&id, *n));
        }
        // Parts uploaded but not listed are dropped with the upload.
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        for (n, part) in parts {
            for c in &part.chunks {
                *deltas.entry(c.id).or_default() -= 1;
            }
            batch.delete(cf::PARTS, &keys::part_key(&id, n));
        }
        batch.delete(cf::UPLOADS, &keys::upload_key(bucket, key, &id));
        let body = crate::objects::stage_body(&mut batch, bucket, chunks);
        let head = ObjectHead {
            size,
            etag: format!("{}-{}", hex::encode(md5s.finalize()), listed.len()),
            checksums,
            mtime_ms: crate::now_ms(),
            meta: upload.meta,
            part_sizes,
        };
        let completion = CompletionRecord {
            upload_id: id,
            parts_digest: parts_digest(listed),
            etag: head.etag.clone(),
            mtime_ms: head.mtime_ms,
            part_checksums,
        };
        batch.put(cf::COMPLETIONS, &keys::object_key(bucket, key), &completion);
        let record = ObjectRecord { head, body };
        let info = self.replace_object(bucket, key, record, batch, deltas, pre).await?;
        // Like a PUT's: the object is private from its commit until this (see `set_object_acl`).
        if upload.acl != CannedAcl::Private {
            self.set_object_acl(bucket, key, upload.acl, Some(&info.head), pre).await?;
        }
        Ok(info)
    }

    /// The answer to a retried completion of an upload that is gone (see
    /// [`Store::complete_upload_if`]).
    fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
    ) -> Result<ObjectInfo, StoreError> {
        let gone = || StoreError::NoSuchUpload(upload_id.to_owned());
        let id = parse_upload_id(upload_id)?;
        let Some(done) = self.meta.get::<CompletionRecord>(cf::COMPLETIONS, &keys::object_key(bucket, key))? else {
            return Err(gone());
        };
        let object = match self.head_object(bucket, key) {
            Err(StoreError::NoSuchKey { .. }) => return Err(gone()),
            found => found?,
        };
        let recent = crate::now_ms().saturating_sub(done.mtime_ms) <= COMPLETION_RETRY_MS;
        let same_object = object.head.etag == done.etag && object.head.mtime_ms == done.mtime_ms;
        if done.upload_id != id || done.parts_digest != parts_digest(listed) || !recent || !same_object {
            return Err(gone());
        }
        Ok(object)
    }

    /// The checksums of each part of a multipart object, of its own checksum algorithm, in
    /// part order; empty when unknown (a single PUT, an object a transfer brought).
    pub fn part_checksums(&self, bucket: &str, info: &ObjectInfo) -> Result<Vec<Checksums>, StoreError> {
        let okey = keys::object_key(bucket, &info.key);
        Ok(match self.meta.get::<CompletionRecord>(cf::COMPLETIONS, &okey)? {
            Some(done) if done.etag == info.head.etag && done.mtime_ms == info.head.mtime_ms => done.part_checksums,
            _ => Vec::new(),
        })
    }

    /// Aborts an upload, releasing its parts.
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let _guard = self.lock_upload(upload_id).await;
        let (id, _) = self.upload(bucket, key, upload_id)?;
        let mut batch = self.meta.batch();
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        for (n, part) in self.parts(&id)? {
            for c in &part.chunks {
                *deltas.entry(c.id).or_default() -= 1;
            }
            batch.delete(cf::PARTS, &keys::part_key(&id, n));
        }
        for (chunk, delta) in deltas {
            batch.add_ref(&chunk, delta);
        }
        batch.delete(cf::UPLOADS, &keys::upload_key(bucket, key, &id));
        self.commit(batch).await
    }

    /// Parts of an upload numbered above `after`, at most `max`; and whether more follow.
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<PartInfo>, bool), StoreError> {
        let (id, _) = self.upload(bucket, key, upload_id)?;
        let mut parts: Vec<PartInfo> =
            self.parts(&id)?.iter().filter(|(n, _)| *n > after).map(|(n, p)| PartInfo::from_record(*n, p)).collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok((parts, truncated))
    }

    /// Uploads in progress in `bucket` under `prefix`, after (`key_marker`,
    /// `upload_id_marker`), at most `max`; and whether more follow.
    pub fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        max: usize,
    ) -> Result<(Vec<UploadInfo>, bool), StoreError> {
        self.bucket(bucket)?;
        let scan_prefix = keys::object_key(bucket, prefix);
        let start = if key_marker.is_empty() {
            scan_prefix.clone()
        } else {
            match parse_upload_id(upload_id_marker) {
                Ok(marker_id) => {
                    let mut k = keys::upload_key(bucket, key_marker, &marker_id);
                    k.push(0);
                    k
                }
                // No upload id marker: start after every upload of key_marker.
                Err(_) => keys::prefix_successor(&{
                    let mut k = keys::object_key(bucket, key_marker);
                    k.push(0);
                    k
                })
                .unwrap_or_default(),
            }
        };
        let mut out = Vec::new();
        for item in self.meta.scan::<UploadRecord>(cf::UPLOADS, &scan_prefix, &start) {
            let (raw, record) = item?;
            if out.len() == max {
                return Ok((out, true));
            }
            let (_, key, id) = keys::decode_upload_key(&raw)
                .ok_or(StoreError::CorruptMetadata { kind: "upload key", reason: hex::encode(&raw) })?;
            out.push(UploadInfo { key: key.to_owned(), upload_id: hex::encode(id), created_ms: record.created_ms });
        }
        Ok((out, false))
    }
}
