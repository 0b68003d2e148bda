//! Buckets and objects: commit, read, list, copy, delete.

use crate::Store;
use crate::claims::ClaimSet;
use crate::error::StoreError;
use crate::frame;
use crate::ingest::{IngestOptions, Ingested, IngestedBody};
use crate::meta::cf;
use crate::meta::keys;
use crate::meta::values::{
    Body, BucketRecord, ChunkLoc, ChunkRef, ManifestRecord, ObjectHead, ObjectMeta, ObjectRecord, QuarantineRecord,
};
use crate::metrics::StoreMetrics;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use hw_offload::{ChecksumAlgo, ChunkId, JobError};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// An object's bytes as a stream of verified pieces.
pub type ObjectStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What a caller learns about an object (everything but its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// key
    pub key: String,
    /// size, ETag, checksums, mtime, metadata, part sizes
    pub head: ObjectHead,
}

impl ObjectInfo {
    fn from_record(key: &str, r: ObjectRecord) -> Self {
        Self { key: key.to_owned(), head: r.head }
    }
}

/// What must still hold when a write commits, checked under the bucket and key locks:
/// the request checked these before it read its body, which can take minutes.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    /// The bucket as the request found it. One deleted and re-created meanwhile (perhaps
    /// by another project) is another bucket: the write fails with NoSuchBucket.
    pub bucket: Option<BucketRecord>,
    /// `If-None-Match: *`: the key must not exist.
    pub absent: bool,
    /// `If-Match`: the key must hold an object, with this ETag if one is given.
    pub if_match: Option<EtagMatch>,
}

/// What `If-Match` asks of the object a write replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`: any object.
    Any,
    /// An object with this ETag (unquoted).
    Etag(String),
}

impl Precondition {
    /// Checks that `bucket` (its record, read under the bucket lock) is the one seen.
    pub(crate) fn check_bucket(&self, bucket: &str, current: &BucketRecord) -> Result<(), StoreError> {
        if self.bucket.as_ref().is_some_and(|seen| seen != current) {
            return Err(StoreError::NoSuchBucket(bucket.to_owned()));
        }
        Ok(())
    }

    /// Checks `bucket` and `key` against `self`, for a write.
    fn check(&self, store: &Store, bucket: &str, key: &str, current: &BucketRecord) -> Result<(), StoreError> {
        self.check_bucket(bucket, current)?;
        let okey = keys::object_key(bucket, key);
        if self.absent && store.meta.contains(cf::OBJECTS, &okey)? {
            return Err(StoreError::ObjectExists { bucket: bucket.to_owned(), key: key.to_owned() });
        }
        if let Some(expected) = &self.if_match {
            let Some(object) = store.meta.get::<ObjectRecord>(cf::OBJECTS, &okey)? else {
                return Err(StoreError::NoSuchKey { bucket: bucket.to_owned(), key: key.to_owned() });
            };
            if let EtagMatch::Etag(etag) = expected
                && object.head.etag != *etag
            {
                return Err(StoreError::EtagMismatch { bucket: bucket.to_owned(), key: key.to_owned() });
            }
        }
        Ok(())
    }
}

/// What a single-request write asks for and checks.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// S3 checksums to compute and store.
    pub checksums: Vec<ChecksumAlgo>,
    /// Content-MD5 the client sent: a mismatch stores nothing.
    pub expected_md5: Option<[u8; 16]>,
    /// Checksums the client sent up front: a mismatch stores nothing.
    pub expected_checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// objects, in key order
    pub objects: Vec<ObjectInfo>,
    /// keys rolled up at the delimiter, in order
    pub common_prefixes: Vec<String>,
    /// whether more entries follow
    pub truncated: bool,
    /// the last key or prefix returned, to continue after
    pub next_marker: Option<String>,
}

impl Store {
    // ---- buckets ----

    /// Creates a bucket owned by `owner`.
    pub async fn create_bucket(&self, bucket: &str, owner: &str) -> Result<(), StoreError> {
        self.create_bucket_with_acl(bucket, owner, crate::CannedAcl::Private).await
    }

    /// A bucket's record.
    pub fn bucket(&self, bucket: &str) -> Result<BucketRecord, StoreError> {
        self.meta
            .get::<BucketRecord>(cf::BUCKETS, bucket.as_bytes())?
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))
    }

    /// Every bucket with its record, by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError> {
        self.meta
            .scan::<BucketRecord>(cf::BUCKETS, b"", b"")
            .map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)))
            .collect()
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let _no_writers = self.bucket_lock(bucket).write().await;
        let _guard = self.lock_key(bucket, "").await;
        self.bucket(bucket)?;
        let prefix = keys::bucket_prefix(bucket);
        let has_objects = self.meta.scan_raw(cf::OBJECTS, &prefix, keys::prefix_successor(&prefix)).next().is_some();
        let has_uploads = self.meta.scan_raw(cf::UPLOADS, &prefix, keys::prefix_successor(&prefix)).next().is_some();
        if has_objects || has_uploads {
            return Err(StoreError::BucketNotEmpty(bucket.to_owned()));
        }
        let mut batch = self.meta.batch();
        batch.delete(cf::BUCKETS, bucket.as_bytes());
        batch.delete(cf::BUCKET_SETTINGS, bucket.as_bytes());
        batch.delete(cf::BUCKET_POLICIES, bucket.as_bytes());
        // A bucket of the same name created later starts with no grants and no shares.
        for family in [cf::GRANTS, cf::SITE_SHARES] {
            for entry in self.meta.scan_raw(family, &prefix, keys::prefix_successor(&prefix)) {
                batch.delete(family, &entry?.0);
            }
        }
        // With no object left, its counts are all 0: drop them now, not at compaction.
        if let Some(end) = keys::prefix_successor(&prefix) {
            batch.delete_range(cf::BUCKET_CHUNKS, &prefix, &end);
            batch.delete_range(cf::COMPLETIONS, &prefix, &end);
            batch.delete_range(cf::OBJECT_ACLS, &prefix, &end);
        }
        self.commit(batch).await
    }

    // ---- writes ----

    /// Streams `body` in and commits it as `bucket/key`, replacing any object there.
    pub async fn put_object<S, E>(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        body: S,
        opts: &PutOptions,
    ) -> Result<ObjectInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.bucket(bucket)?;
        let ingested = self.ingest_verified(body, opts, true, self.config.max_object_bytes).await?;
        let etag = hex::encode(ingested.digests.md5);
        self.commit_object(bucket, key, meta, ingested, etag, Vec::new(), &Precondition::default()).await
    }

    /// Ingests `body` computing the checksums `opts` asks for and checking those it
    /// declares; a mismatch leaves nothing committed.
    pub(crate) async fn ingest_verified<S, E>(
        &self,
        body: S,
        opts: &PutOptions,
        allow_inline: bool,
        max_bytes: u64,
    ) -> Result<Ingested, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut checksums = opts.checksums.clone();
        checksums.extend(opts.expected_checksums.iter().map(|(a, _)| *a));
        let ingested = self.ingest(body, &IngestOptions { checksums, allow_inline, max_bytes }).await?;
        check_digests(&ingested, opts.expected_md5, &opts.expected_checksums)?;
        Ok(ingested)
    }

    /// Commits an ingested body as `bucket/key` in one batch: the object record, its
    /// manifest, the new chunks and packs, and every reference count change; if `pre`
    /// still holds.
    #[allow(clippy::too_many_arguments)] // each is one part of an S3 PUT
    pub async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        ingested: Ingested,
        etag: String,
        part_sizes: Vec<u64>,
        pre: &Precondition,
    ) -> Result<ObjectInfo, StoreError> {
        let mut batch = self.meta.batch();
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        let body = match &ingested.body {
            IngestedBody::Inline(data) => Body::Inline(data.clone()),
            IngestedBody::Chunks(chunks) => {
                for c in chunks {
                    *deltas.entry(c.id).or_default() += 1;
                }
                stage_body(&mut batch, bucket, chunks.clone())
            }
        };
        let repaired = self.stage_new_chunks(&mut batch, &ingested)?;
        let head = ObjectHead {
            size: ingested.size,
            etag,
            checksums: ingested.digests.checksums.clone(),
            mtime_ms: crate::now_ms(),
            meta,
            part_sizes,
        };
        let record = ObjectRecord { head, body };
        let info = self.replace_object_repairing(bucket, key, record, batch, deltas, pre, &repaired).await?;
        ingested.record(self.metrics());
        // Claims are released only now that the commit is durable.
        drop(ingested);
        Ok(info)
    }

    /// Checks `pre` now, without locks: a request fails early, before it reads a body,
    /// on a condition the commit would refuse.
    pub fn check_precondition(&self, bucket: &str, key: &str, pre: &Precondition) -> Result<(), StoreError> {
        pre.check(self, bucket, key, &self.bucket(bucket)?)
    }

    /// Adds an ingest's new chunks and packs to a batch. Returns the chunks it brings back
    /// from quarantine (repairs): what they do to the versions held here goes into the same
    /// batch, under the versions lock ([`Store::stage_repairs`]).
    pub(crate) fn stage_new_chunks(
        &self,
        batch: &mut crate::meta::Batch,
        ingested: &Ingested,
    ) -> Result<Vec<ChunkId>, StoreError> {
        let mut repaired = Vec::new();
        for (id, loc) in &ingested.new_chunks {
            let key = keys::chunk_key(id);
            batch.put(cf::CHUNKS, &key, loc);
            // A chunk written again after quarantine is repaired by this write.
            if self.meta.contains(cf::QUARANTINE, &key)? {
                batch.delete(cf::QUARANTINE, &key);
                repaired.push(*id);
            }
        }
        for (pack, record) in &ingested.packs {
            batch.put(cf::PACKS, &keys::pack_key(*pack), record);
        }
        Ok(repaired)
    }

    /// Stages what `repaired` chunks do to the versions held here (their replicas become
    /// complete again) into `batch`, under the versions lock, returned to be held until the
    /// batch is written: an eviction of such a version meanwhile would otherwise be undone
    /// by a replica record written from what it read before. Nothing, and no lock, when no
    /// held version uses them.
    pub(crate) async fn stage_repairs(
        &self,
        batch: &mut crate::meta::Batch,
        repaired: &[ChunkId],
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, StoreError> {
        if self.replica_watch.get().is_none() || repaired.is_empty() {
            return Ok(None);
        }
        let mut used = false;
        for id in repaired {
            used |= !self.versions_using(id)?.is_empty();
        }
        if !used {
            return Ok(None);
        }
        let guard = self.lock_versions().await;
        self.stage_availability(batch, &[], repaired)?;
        Ok(Some(guard))
    }

    /// Writes `record` at `bucket/key` with `batch` and `deltas`, releasing what the
    /// previous object there referenced, if `pre` still holds. Serialised per key.
    pub(crate) async fn replace_object(
        &self,
        bucket: &str,
        key: &str,
        record: ObjectRecord,
        batch: crate::meta::Batch,
        deltas: HashMap<ChunkId, i64>,
        pre: &Precondition,
    ) -> Result<ObjectInfo, StoreError> {
        self.replace_object_repairing(bucket, key, record, batch, deltas, pre, &[]).await
    }

    /// [`Store::replace_object`] for a write whose new chunks include `repaired` ones
    /// (see [`Store::stage_repairs`]; the versions lock comes after the key's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn replace_object_repairing(
        &self,
        bucket: &str,
        key: &str,
        record: ObjectRecord,
        mut batch: crate::meta::Batch,
        mut deltas: HashMap<ChunkId, i64>,
        pre: &Precondition,
        repaired: &[ChunkId],
    ) -> Result<ObjectInfo, StoreError> {
        let _bucket_stays = self.bucket_lock(bucket).read().await;
        let _guard = self.lock_key(bucket, key).await;
        pre.check(self, bucket, key, &self.bucket(bucket)?)?;
        let _versions = self.stage_repairs(&mut batch, repaired).await?;
        let okey = keys::object_key(bucket, key);
        if let Some(old) = self.meta.get::<ObjectRecord>(cf::OBJECTS, &okey)? {
            self.release_body(&mut batch, bucket, &old.body, &mut deltas)?;
        }
        // A new object starts private: the ACL of the one it replaces is not its.
        if self.meta.contains(cf::OBJECT_ACLS, &okey)? {
            batch.delete(cf::OBJECT_ACLS, &okey);
        }
        batch.put(cf::OBJECTS, &okey, &record);
        for (id, delta) in deltas {
            batch.add_ref(&id, delta);
        }
        self.commit(batch).await?;
        Ok(ObjectInfo::from_record(key, record))
    }

    /// Stages the deletion of a body's manifest and the release of its chunks, an object
    /// of `bucket` that goes.
    pub(crate) fn release_body(
        &self,
        batch: &mut crate::meta::Batch,
        bucket: &str,
        body: &Body,
        deltas: &mut HashMap<ChunkId, i64>,
    ) -> Result<(), StoreError> {
        for c in self.body_chunks(body)? {
            *deltas.entry(c.id).or_default() -= 1;
            batch.add_bucket_ref(bucket, &c.id, -1);
        }
        if let Body::Manifest(id) = body {
            batch.delete(cf::MANIFESTS, &id.to_be_bytes());
        }
        Ok(())
    }

    /// The chunks a body references, wherever its list is kept (none when inline).
    pub(crate) fn body_chunks(&self, body: &Body) -> Result<Vec<ChunkRef>, StoreError> {
        match body {
            Body::Inline(_) => Ok(Vec::new()),
            Body::Manifest(id) => self.manifest(*id),
            Body::Chunks(chunks) => Ok(chunks.clone()),
        }
    }

    pub(crate) fn manifest(&self, id: u64) -> Result<Vec<ChunkRef>, StoreError> {
        Ok(self
            .meta
            .get::<ManifestRecord>(cf::MANIFESTS, &id.to_be_bytes())?
            .ok_or(StoreError::CorruptMetadata { kind: "manifest", reason: format!("manifest {id:016x} is missing") })?
            .chunks)
    }

    /// Deletes `bucket/key`; deleting a missing key succeeds, as in S3.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.delete_object_if(bucket, key, &Precondition::default()).await
    }

    /// Deletes `bucket/key` if the bucket is still the one `pre` saw (its `absent` is
    /// for writes).
    pub async fn delete_object_if(&self, bucket: &str, key: &str, pre: &Precondition) -> Result<(), StoreError> {
        let _bucket_stays = self.bucket_lock(bucket).read().await;
        let _guard = self.lock_key(bucket, key).await;
        pre.check_bucket(bucket, &self.bucket(bucket)?)?;
        let okey = keys::object_key(bucket, key);
        let Some(old) = self.meta.get::<ObjectRecord>(cf::OBJECTS, &okey)? else { return Ok(()) };
        let mut batch = self.meta.batch();
        let mut deltas = HashMap::new();
        self.release_body(&mut batch, bucket, &old.body, &mut deltas)?;
        batch.delete(cf::OBJECTS, &okey);
        batch.delete(cf::COMPLETIONS, &okey);
        batch.delete(cf::OBJECT_ACLS, &okey);
        for (id, delta) in deltas {
            batch.add_ref(&id, delta);
        }
        self.commit(batch).await
    }

    /// Server-side copy: the new object shares the source's chunks, no data is copied.
    /// `meta` replaces the source's metadata when given (S3's REPLACE directive); a copy
    /// onto itself is how clients update metadata.
    pub async fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        meta: Option<ObjectMeta>,
    ) -> Result<ObjectInfo, StoreError> {
        let Pinned { record: src, chunks, claims } = self.pin_object(src_bucket, src_key)?;
        let mut batch = self.meta.batch();
        let mut deltas = HashMap::new();
        let body = match &src.body {
            Body::Inline(data) => Body::Inline(data.clone()),
            Body::Manifest(_) | Body::Chunks(_) => {
                for c in &chunks {
                    *deltas.entry(c.id).or_default() += 1;
                }
                stage_body(&mut batch, dst_bucket, chunks)
            }
        };
        let head = ObjectHead { mtime_ms: crate::now_ms(), meta: meta.unwrap_or(src.head.meta), ..src.head };
        let record = ObjectRecord { head, body };
        let info = self.replace_object(dst_bucket, dst_key, record, batch, deltas, &Precondition::default()).await;
        // The copy's references are committed (or not): the source's chunks may go now.
        drop(claims);
        info
    }

    // ---- reads ----

    fn object_record(&self, bucket: &str, key: &str) -> Result<ObjectRecord, StoreError> {
        self.meta.get::<ObjectRecord>(cf::OBJECTS, &keys::object_key(bucket, key))?.ok_or_else(|| {
            match self.bucket(bucket) {
                Err(e) => e,
                Ok(_) => StoreError::NoSuchKey { bucket: bucket.to_owned(), key: key.to_owned() },
            }
        })
    }

    /// An object's metadata.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        Ok(ObjectInfo::from_record(key, self.object_record(bucket, key)?))
    }

    /// Opens an object: its metadata now, its bytes when [`OpenObject::read`] is called.
    /// Reads follow the object as it was when opened, even if it is replaced meanwhile.
    pub fn open_object(self: &Arc<Self>, bucket: &str, key: &str) -> Result<OpenObject, StoreError> {
        let mut pinned = self.pin_object(bucket, key)?;
        let inline = match std::mem::replace(&mut pinned.record.body, Body::Inline(Vec::new())) {
            Body::Inline(data) => Some(Bytes::from(data)),
            Body::Manifest(_) | Body::Chunks(_) => None,
        };
        Ok(OpenObject {
            store: self.clone(),
            info: ObjectInfo::from_record(key, pinned.record),
            inline,
            chunks: Arc::new(pinned.chunks),
            claims: Arc::new(pinned.claims),
        })
    }

    /// Reads an object and claims its chunks, so that GC keeps them while a read or a
    /// copy uses them, even if the object is deleted or replaced meanwhile.
    pub(crate) fn pin_object(&self, bucket: &str, key: &str) -> Result<Pinned, StoreError> {
        let record = self.object_record(bucket, key)?;
        self.pin_record(bucket, key, record)
    }

    /// [`Store::pin_object`] from a record of `bucket/key` read already (by a listing).
    pub(crate) fn pin_record(&self, bucket: &str, key: &str, mut record: ObjectRecord) -> Result<Pinned, StoreError> {
        for _ in 0..3 {
            let chunks = match &record.body {
                // Nothing to hold: the record read is the object.
                Body::Inline(_) => {
                    return Ok(Pinned { record, chunks: Vec::new(), claims: ClaimSet::new(self.claims.clone()) });
                }
                Body::Chunks(chunks) => chunks.clone(),
                Body::Manifest(id) => match self.manifest(*id) {
                    Ok(chunks) => chunks,
                    // Replaced between the two reads: look again.
                    Err(_) => {
                        record = self.object_record(bucket, key)?;
                        continue;
                    }
                },
            };
            let mut claims = ClaimSet::new(self.claims.clone());
            claims.claim_all(chunks.iter().map(|c| c.id));
            // Still the same object: it held its chunks' references until our claims
            // were in place, so GC cannot have taken any of them.
            let now = self.object_record(bucket, key)?;
            if now.body == record.body {
                return Ok(Pinned { record, chunks, claims });
            }
            record = now;
        }
        Err(StoreError::Backend(format!("{bucket}/{key} kept changing while being opened; retry")))
    }

    /// An object's bytes, or the `range` of them (see [`OpenObject::read`]).
    pub fn get_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectInfo, Range<u64>, ObjectStream), StoreError> {
        let open = self.open_object(bucket, key)?;
        let (range, stream) = open.read(range)?;
        Ok((open.info, range, stream))
    }

    /// Reads one chunk, decoded and verified. A chunk that fails is quarantined.
    pub async fn read_chunk(&self, chunk: &ChunkRef) -> Result<Bytes, StoreError> {
        let key = keys::chunk_key(&chunk.id);
        let mut attempts = 0;
        let (loc, raw) = loop {
            let loc = self.meta.get::<ChunkLoc>(cf::CHUNKS, &key)?.ok_or(StoreError::MissingChunk(chunk.id))?;
            match self.chunks.read(loc.pack, loc.offset, loc.frame_len).await {
                Ok(raw) => break (loc, raw),
                // GC may have moved the chunk to a new pack between our two reads.
                Err(_) if attempts == 0 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let (header, payload) = match frame::decode(&raw) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.quarantine(chunk.id, loc, e.to_string()).await),
        };
        if let Err(damage) = crate::read::check_frame(chunk, &loc, &header) {
            return Err(match damage {
                crate::read::FrameDamage::Frame(reason) => self.quarantine(chunk.id, loc, reason).await,
                crate::read::FrameDamage::Reference(e) => e,
            });
        }
        match self.offload.run(frame::verify_job(&header, payload)).await {
            Ok(out) => Ok(out.data),
            Err(e @ (JobError::Corrupt { .. } | JobError::Decode { .. })) => {
                Err(self.quarantine(chunk.id, loc, e.to_string()).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a corrupt chunk out of the index so nothing reads or dedups against it;
    /// the next write of the same bytes stores a good copy. Done in a task of its own: the
    /// reader that found it (a client's GET) may stop being polled, and must not then hold
    /// the versions lock the record takes.
    pub(crate) async fn quarantine(&self, id: ChunkId, loc: ChunkLoc, reason: String) -> StoreError {
        match self.me.upgrade() {
            Some(store) => tokio::spawn(async move { store.record_quarantine(id, loc, reason).await })
                .await
                .unwrap_or_else(|e| StoreError::CorruptChunk { id, reason: format!("quarantine task: {e}") }),
            None => self.record_quarantine(id, loc, reason).await,
        }
    }

    async fn record_quarantine(&self, id: ChunkId, loc: ChunkLoc, reason: String) -> StoreError {
        tracing::error!(chunk = %id, pack = format_args!("{:016x}", loc.pack), offset = loc.offset, %reason, "corrupt chunk quarantined");
        StoreMetrics::add(&self.metrics().chunks_corrupt, 1);
        // The versions using it lose it in the same write: their replicas turn partial.
        // (Locked only then: every other quarantine goes on without waiting for it.)
        let used_by_versions =
            self.replica_watch.get().is_some() && !self.versions_using(&id).unwrap_or_default().is_empty();
        let _versions = if used_by_versions { Some(self.lock_versions().await) } else { None };
        let mut batch = self.meta.batch();
        let key = keys::chunk_key(&id);
        // Only the copy found bad leaves the index: a good copy written since stays.
        match self.meta.get::<ChunkLoc>(cf::CHUNKS, &key) {
            Ok(Some(current)) if current != loc => return StoreError::CorruptChunk { id, reason },
            _ => {}
        }
        batch.delete(cf::CHUNKS, &key);
        batch.put(cf::QUARANTINE, &key, &QuarantineRecord { loc, reason: reason.clone(), found_ms: crate::now_ms() });
        if let Err(e) = self.stage_availability(&mut batch, &[id], &[]) {
            tracing::error!(chunk = %id, error = %e, "could not record what the quarantine does to versions");
        }
        if let Err(e) = self.commit(batch).await {
            tracing::error!(chunk = %id, error = %e, "could not record quarantine");
        }
        StoreError::CorruptChunk { id, reason }
    }

    /// Lists `bucket` in key order: keys starting with `prefix`, after `start_after`,
    /// rolled up at `delimiter`, at most `max` entries (objects plus prefixes).
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        max: usize,
    ) -> Result<ListPage, StoreError> {
        self.bucket(bucket)?;
        let mut page = ListPage::default();
        let bucket_prefix = keys::bucket_prefix(bucket);
        let scan_prefix = keys::object_key(bucket, prefix);
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut from = keys::object_key(bucket, start_after);
        from.push(0); // strictly after start_after
        // A marker inside a rolled-up prefix (the prefix itself, as NextMarker gives it)
        // continues after everything under that prefix: it was returned already.
        if let Some(d) = delimiter
            && let Some(rest) = start_after.strip_prefix(prefix)
            && let Some(pos) = rest.find(d)
        {
            let common = &start_after[..prefix.len() + pos + d.len()];
            match keys::prefix_successor(&keys::object_key(bucket, common)) {
                Some(next) => from = next,
                None => return Ok(page),
            }
        }
        'scan: loop {
            let mut restart = None;
            for item in self.meta.scan::<ObjectRecord>(cf::OBJECTS, &scan_prefix, &from) {
                let (raw_key, record) = item?;
                let key = keys::object_name(&raw_key, &bucket_prefix)?;
                if page.objects.len() + page.common_prefixes.len() >= max {
                    page.truncated = true;
                    break 'scan;
                }
                if let Some(d) = delimiter
                    && let Some(pos) = key[prefix.len()..].find(d)
                {
                    let common = &key[..prefix.len() + pos + d.len()];
                    page.common_prefixes.push(common.to_owned());
                    page.next_marker = Some(common.to_owned());
                    // Skip every key under this prefix in one seek.
                    match keys::prefix_successor(&keys::object_key(bucket, common)) {
                        Some(next) => restart = Some(next),
                        None => break 'scan,
                    }
                    break;
                }
                page.next_marker = Some(key.to_owned());
                page.objects.push(ObjectInfo::from_record(key, record));
            }
            match restart {
                Some(next) => from = next,
                None => break,
            }
        }
        if !page.truncated {
            page.next_marker = None;
        }
        Ok(page)
    }
}

/// An opened object: metadata, and the means to stream any range of its bytes.
pub struct OpenObject {
    store: Arc<Store>,
    /// what the object is
    pub info: ObjectInfo,
    /// the bytes of an inline object
    inline: Option<Bytes>,
    /// the manifest (empty for inline objects)
    chunks: Arc<Vec<ChunkRef>>,
    /// keeps the chunks from GC for as long as this or any of its streams lives
    claims: Arc<ClaimSet>,
}

/// An object record with its chunks claimed.
pub(crate) struct Pinned {
    pub(crate) record: ObjectRecord,
    pub(crate) chunks: Vec<ChunkRef>,
    pub(crate) claims: ClaimSet,
}

impl OpenObject {
    /// The object's bytes, or the `range` of them (end exclusive, clamped to the size).
    /// Only the chunks covering the range are read, each verified before it is sent.
    pub fn read(&self, range: Option<Range<u64>>) -> Result<(Range<u64>, ObjectStream), StoreError> {
        let size = self.info.head.size;
        let range = match range {
            Some(r) if r.start >= size && !(r.start == 0 && size == 0) => {
                return Err(StoreError::InvalidRange { start: r.start, size });
            }
            Some(r) => r.start..r.end.min(size),
            None => 0..size,
        };
        let store = &self.store;
        let stream: ObjectStream = match &self.inline {
            Some(data) => {
                let piece = data.slice(range.start as usize..range.end as usize);
                StoreMetrics::add(&store.metrics().bytes_read, piece.len() as u64);
                futures::stream::once(async move { Ok(piece) }).boxed()
            }
            None => {
                let claims = self.claims.clone();
                store
                    .stream_chunks(covering_chunks(&self.chunks, range.clone()))
                    .map(move |piece| {
                        // Held by the stream: dropped with it, not before.
                        let _pin = &claims;
                        piece
                    })
                    .boxed()
            }
        };
        Ok((range, stream))
    }
}

/// Checks a body against the digests the client declared.
pub fn check_digests(
    ingested: &Ingested,
    md5: Option<[u8; 16]>,
    expected: &[(ChecksumAlgo, Vec<u8>)],
) -> Result<(), StoreError> {
    if let Some(md5) = md5
        && md5 != ingested.digests.md5
    {
        return Err(StoreError::DigestMismatch {
            algo: "md5",
            expected: hex::encode(md5),
            actual: hex::encode(ingested.digests.md5),
        });
    }
    for (algo, want) in expected {
        let got = ingested.digests.checksums.iter().find(|(a, _)| a == algo).map(|(_, v)| v);
        if got != Some(want) {
            return Err(StoreError::DigestMismatch {
                algo: algo.name(),
                expected: hex::encode(want),
                actual: got.map(hex::encode).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The chunks covering `range`, each with the slice of it that falls in the range.
fn covering_chunks(chunks: &[ChunkRef], range: Range<u64>) -> Vec<(ChunkRef, Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for chunk in chunks {
        let end = start + chunk.len as u64;
        if end > range.start && start < range.end {
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end.min(end) - start) as usize;
            out.push((*chunk, from..to));
        }
        if end >= range.end {
            break;
        }
        start = end;
    }
    out
}

/// The body for an object of `chunks`: the list in the record when it is short, else a
/// manifest staged in `batch` under a new id.
pub(crate) fn stage_body(batch: &mut crate::meta::Batch, bucket: &str, chunks: Vec<ChunkRef>) -> Body {
    for c in &chunks {
        batch.add_bucket_ref(bucket, &c.id, 1);
    }
    if chunks.len() <= Body::EMBEDDED_CHUNKS_MAX {
        return Body::Chunks(chunks);
    }
    let id = rand::random::<u64>();
    batch.put(cf::MANIFESTS, &id.to_be_bytes(), &ManifestRecord { chunks });
    Body::Manifest(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_chunks_touches_only_the_range() {
        let c = |n: u8, len| ChunkRef { id: ChunkId([n; 32]), len };
        let chunks = [c(0, 10), c(1, 10), c(2, 10)];
        let got: Vec<_> = covering_chunks(&chunks, 5..15).into_iter().map(|(c, r)| (c.id.0[0], r)).collect();
        assert_eq!(got, [(0, 5..10), (1, 0..5)]);
        let got: Vec<_> = covering_chunks(&chunks, 20..30).into_iter().map(|(c, r)| (c.id.0[0], r)).collect();
        assert_eq!(got, [(2, 0..10)]);
        assert!(covering_chunks(&chunks, 0..0).is_empty());
    }
}
