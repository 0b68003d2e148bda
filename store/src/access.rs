//! Access keys and bucket grants: which project a key acts for, which projects may use a
//! bucket (its owner, plus any granted), and which sites of the federation may read or
//! write it (none unless shared).

use crate::Store;
use crate::error::StoreError;
use crate::meta::values::{AccessKeyRecord, ApiTokenRecord, BucketRecord, GrantRecord, ObjectRecord, SiteShareRecord};
use crate::meta::{cf, keys};
use hw_offload::ChunkId;
use rand::Rng;

/// What a peer site asks to do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteAccess {
    /// pull its objects, copy them to a third site, repair the chunks they use
    Read,
    /// push objects into it
    Write,
}

impl SiteAccess {
    /// The word for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    fn allowed_by(self, share: &SiteShareRecord) -> bool {
        match self {
            Self::Read => share.read,
            Self::Write => share.write,
        }
    }
}

const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// Project names: what clients see in bucket ownership; kept to a safe alphabet.
pub fn valid_project(project: &str) -> bool {
    (1..=64).contains(&project.len())
        && project.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Store {
    /// Creates a key for `project`; returns (access key id, secret).
    pub async fn create_access_key(&self, project: &str) -> Result<(String, String), StoreError> {
        if !valid_project(project) {
            return Err(StoreError::InvalidName(format!(
                "project {project:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        // 20 characters like AWS key ids, "CK" marking clusster's.
        let id = format!("CK{}", random_string(KEY_ID_ALPHABET, 18));
        let secret = random_string(SECRET_ALPHABET, 40);
        let mut batch = self.meta.batch();
        let record =
            AccessKeyRecord { secret: secret.clone(), project: project.to_owned(), created_ms: crate::now_ms() };
        batch.put(cf::ACCESS_KEYS, id.as_bytes(), &record);
        self.commit(batch).await?;
        Ok((id, secret))
    }

    /// A key's record, if it exists.
    pub fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        self.meta.get(cf::ACCESS_KEYS, id.as_bytes())
    }

    /// Every key id with its record.
    pub fn list_access_keys(&self) -> Result<Vec<(String, AccessKeyRecord)>, StoreError> {
        self.meta
            .scan::<AccessKeyRecord>(cf::ACCESS_KEYS, b"", b"")
            .map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)))
            .collect()
    }

    /// Deletes a key; `false` if there was none.
    pub async fn delete_access_key(&self, id: &str) -> Result<bool, StoreError> {
        if self.access_key(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = self.meta.batch();
        batch.delete(cf::ACCESS_KEYS, id.as_bytes());
        self.commit(batch).await?;
        Ok(true)
    }

    /// Creates an API token for `project` limited to `scopes` (each one of [`API_SCOPES`]);
    /// returns the token (shown once: only its hash is kept) and its record.
    pub async fn create_api_token(
        &self,
        project: &str,
        scopes: &[String],
    ) -> Result<(String, ApiTokenRecord), StoreError> {
        if !valid_project(project) {
            return Err(StoreError::InvalidName(format!(
                "project {project:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if scopes.is_empty() {
            return Err(StoreError::InvalidName(format!(
                "a token needs at least one scope of {}",
                API_SCOPES.join(", ")
            )));
        }
        if let Some(bad) = scopes.iter().find(|s| !API_SCOPES.contains(&s.as_str())) {
            return Err(StoreError::InvalidName(format!("scope {bad:?}: one of {}", API_SCOPES.join(", "))));
        }
        let token = format!("clst_{}", random_string(SECRET_ALPHABET, 43));
        let record = ApiTokenRecord {
            id: random_string(KEY_ID_ALPHABET, 12),
            project: project.to_owned(),
            scopes: scopes.to_vec(),
            created_ms: crate::now_ms(),
        };
        let mut batch = self.meta.batch();
        batch.put(cf::API_TOKENS, &ChunkId::of(token.as_bytes()).0, &record);
        self.commit(batch).await?;
        Ok((token, record))
    }

    /// The record of the token `presented`, if it is one.
    pub fn api_token(&self, presented: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.meta.get(cf::API_TOKENS, &ChunkId::of(presented.as_bytes()).0)
    }

    /// Every API token's record.
    pub fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        self.meta.scan::<ApiTokenRecord>(cf::API_TOKENS, b"", b"").map(|r| r.map(|(_, v)| v)).collect()
    }

    /// Deletes the token whose id is `id`; `false` if there is none.
    pub async fn delete_api_token(&self, id: &str) -> Result<bool, StoreError> {
        for item in self.meta.scan::<ApiTokenRecord>(cf::API_TOKENS, b"", b"") {
            let (key, record) = item?;
            if record.id == id {
                let mut batch = self.meta.batch();
                batch.delete(cf::API_TOKENS, &key);
                self.commit(batch).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Lets `project` use `bucket`.
    pub async fn grant_bucket(&self, bucket: &str, project: &str) -> Result<(), StoreError> {
        self.bucket(bucket)?;
        if !valid_project(project) {
            return Err(StoreError::InvalidName(format!("project {project:?}")));
        }
        let mut batch = self.meta.batch();
        batch.put(cf::GRANTS, &keys::grant_key(bucket, project), &GrantRecord { created_ms: crate::now_ms() });
        self.commit(batch).await
    }

    /// Withdraws a grant.
    pub async fn revoke_bucket(&self, bucket: &str, project: &str) -> Result<(), StoreError> {
        let mut batch = self.meta.batch();
        batch.delete(cf::GRANTS, &keys::grant_key(bucket, project));
        self.commit(batch).await
    }

    /// Whether `project` may use `bucket` (owner or granted). A missing bucket is
    /// reported as such, so callers can answer NoSuchBucket.
    pub fn bucket_allows(&self, bucket: &str, project: &str) -> Result<bool, StoreError> {
        Ok(self.bucket_for(bucket, project)?.is_some())
    }

    /// The bucket's record if `project` may use it (owner or granted), None if not; a
    /// missing bucket is NoSuchBucket. One read of the record for callers that need both.
    pub fn bucket_for(&self, bucket: &str, project: &str) -> Result<Option<BucketRecord>, StoreError> {
        let record = self.bucket(bucket)?;
        let allowed = record.owner == project || self.meta.contains(cf::GRANTS, &keys::grant_key(bucket, project))?;
        Ok(allowed.then_some(record))
    }

    /// Shares `bucket` with the federation site `site` for reading, writing or both,
    /// replacing what it was shared for. Sharing for neither is [`Store::unshare_bucket`].
    pub async fn share_bucket(
        &self,
        bucket: &str,
        site: &str,
        read: bool,
        write: bool,
    ) -> Result<SiteShareRecord, StoreError> {
        if !valid_project(site) {
            return Err(StoreError::InvalidName(format!("site {site:?}: not a site name")));
        }
        if !read && !write {
            return Err(StoreError::InvalidName(format!(
                "sharing {bucket} with {site} for neither reading nor writing: unshare it instead"
            )));
        }
        // Serialised with bucket creation and deletion, which drops a bucket's shares.
        let _guard = self.lock_key(bucket, "").await;
        self.bucket(bucket)?;
        let share = SiteShareRecord { read, write, created_ms: crate::now_ms() };
        let mut batch = self.meta.batch();
        batch.put(cf::SITE_SHARES, &keys::grant_key(bucket, site), &share);
        self.commit(batch).await?;
        Ok(share)
    }

    /// Stops sharing `bucket` with `site`; `false` if it was not shared with it.
    pub async fn unshare_bucket(&self, bucket: &str, site: &str) -> Result<bool, StoreError> {
        let _guard = self.lock_key(bucket, "").await;
        self.bucket(bucket)?;
        let key = keys::grant_key(bucket, site);
        if !self.meta.contains(cf::SITE_SHARES, &key)? {
            return Ok(false);
        }
        let mut batch = self.meta.batch();
        batch.delete(cf::SITE_SHARES, &key);
        self.commit(batch).await?;
        Ok(true)
    }

    /// The sites `bucket` is shared with, by name.
    pub fn bucket_shares(&self, bucket: &str) -> Result<Vec<(String, SiteShareRecord)>, StoreError> {
        self.bucket(bucket)?;
        let prefix = keys::bucket_prefix(bucket);
        self.meta
            .scan::<SiteShareRecord>(cf::SITE_SHARES, &prefix, b"")
            .map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v)))
            .collect()
    }

    /// Whether the site `site` may `access` `bucket`. A missing bucket is NoSuchBucket.
    pub fn site_may(&self, bucket: &str, site: &str, access: SiteAccess) -> Result<bool, StoreError> {
        self.bucket(bucket)?;
        let share = self.meta.get::<SiteShareRecord>(cf::SITE_SHARES, &keys::grant_key(bucket, site))?;
        Ok(share.is_some_and(|s| access.allowed_by(&s)))
    }

    /// The buckets `site` may `access`, by name.
    pub fn buckets_shared_with(&self, site: &str, access: SiteAccess) -> Result<Vec<String>, StoreError> {
        let mut buckets = Vec::new();
        for item in self.meta.scan::<SiteShareRecord>(cf::SITE_SHARES, b"", b"") {
            let (key, share) = item?;
            let Some((bucket, shared_with)) = keys::decode_object_key(&key) else {
                return Err(StoreError::CorruptMetadata { kind: "site share key", reason: hex::encode(&key) });
            };
            if shared_with == site && access.allowed_by(&share) {
                buckets.push(bucket.to_owned());
            }
        }
        Ok(buckets)
    }

    /// Which of `ids` an object of a bucket shared with `site` for reading uses: what that
    /// site could fetch anyway. Knowing a chunk's id is no right to its bytes (a peer may
    /// have learnt the id without ever holding the content), so only for these may a peer
    /// be told that a chunk is held here, or be sent it.
    pub fn chunks_readable_by(&self, site: &str, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        let mut readable = vec![false; ids.len()];
        for bucket in self.buckets_shared_with(site, SiteAccess::Read)? {
            let left: Vec<usize> = (0..ids.len()).filter(|&i| !readable[i]).collect();
            if left.is_empty() {
                break;
            }
            let asked: Vec<ChunkId> = left.iter().map(|&i| ids[i]).collect();
            for (i, used) in left.into_iter().zip(self.chunks_used_in(&bucket, &asked)?) {
                readable[i] = used;
            }
        }
        Ok(readable)
    }

    /// Whether an object of `bucket` uses each of `ids`, in one batched lookup.
    pub fn chunks_used_in(&self, bucket: &str, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<_> = ids.iter().map(|id| keys::bucket_chunk_key(bucket, id)).collect();
        self.meta.counted_many(cf::BUCKET_CHUNKS, &keys)
    }

    /// Whether each of `ids` may be a delta base for data sent from `bucket`: used by an
    /// object of it, or by nothing at all (the chunks of a version just overwritten, until
    /// GC takes them; what a changed object is best coded against). A chunk any other
    /// bucket, upload or transfer holds is not: a delta's size would tell the receiver
    /// that it is here and how much it looks like the data sent.
    pub fn chunks_usable_as_bases(&self, bucket: &str, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        let mut usable = self.chunks_used_in(bucket, ids)?;
        for (ok, id) in usable.iter_mut().zip(ids) {
            if !*ok {
                *ok = self.meta.refcount(id)? <= 0;
            }
        }
        Ok(usable)
    }

    /// Builds [`cf::BUCKET_CHUNKS`] from the objects if it is not built (a store made
    /// before the index existed). A build cut short starts again from nothing at the
    /// next open; the empty key marks it done.
    pub(crate) fn index_bucket_chunks(&self) -> Result<(), StoreError> {
        if self.meta.contains(cf::BUCKET_CHUNKS, BUCKET_CHUNKS_BUILT)? {
            return Ok(());
        }
        let mut batch = self.meta.batch();
        // Every index key starts with a bucket name's length, at most 63.
        batch.delete_range(cf::BUCKET_CHUNKS, b"", &[u8::MAX]);
        let mut objects = 0u64;
        for item in self.meta.scan::<ObjectRecord>(cf::OBJECTS, b"", b"") {
            let (key, record) = item?;
            let (bucket, _) = keys::decode_object_key(&key)
                .ok_or_else(|| StoreError::CorruptMetadata { kind: "object key", reason: hex::encode(&key) })?;
            for chunk in self.body_chunks(&record.body)? {
                batch.add_bucket_ref(bucket, &chunk.id, 1);
            }
            objects += 1;
            if objects.is_multiple_of(10_000) {
                self.meta.write(std::mem::replace(&mut batch, self.meta.batch()))?;
            }
        }
        batch.put_raw(cf::BUCKET_CHUNKS, BUCKET_CHUNKS_BUILT, b"1");
        self.meta.write(batch)?;
        if objects > 0 {
            tracing::info!(objects, "indexed the chunks each bucket uses");
        }
        Ok(())
    }
}

/// The scopes an API token may have: reading the catalog, writing it (publish, tag,
/// checkout), and staging data in and out for jobs.
pub const API_SCOPES: [&str; 3] = ["catalog:read", "catalog:write", "stage"];

/// The key of [`cf::BUCKET_CHUNKS`] that says the index is built.
const BUCKET_CHUNKS_BUILT: &[u8] = b"";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use hw_offload::Offload;

    #[tokio::test]
    async fn a_store_made_before_the_bucket_chunk_index_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(StoreConfig::new(dir.path()), Offload::cpu(1));
        let store = open().await.unwrap();
        store.create_bucket("b", "").await.unwrap();
        store.share_bucket("b", "julich", true, false).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data))]);
        store.put_object("b", "k", Default::default(), body, &Default::default()).await.unwrap();
        let ids: Vec<ChunkId> =
            store.export_object(&mut store.transfer_pin(), "b", "k").unwrap().chunks.iter().map(|c| c.id).collect();
        assert!(ids.len() > 1);
        // As an older build left it: no index at all.
        let mut batch = store.meta.batch();
        batch.delete_range(cf::BUCKET_CHUNKS, b"", &[u8::MAX]);
        store.meta.write(batch).unwrap();
        assert!(store.chunks_readable_by("julich", &ids).unwrap().iter().all(|r| !r));
        drop(store);
        let store = open().await.unwrap();
        assert!(store.chunks_readable_by("julich", &ids).unwrap().iter().all(|r| *r));
        assert!(store.check().unwrap().is_clean());
    }
}
