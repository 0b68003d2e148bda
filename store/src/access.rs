//! Access keys and bucket grants: which project a key acts for, which projects may use a
//! bucket (its owner, plus any granted), and which sites of the federation may read or
//! write it (none unless shared).

use crate::Store;
use crate::error::StoreError;
use crate::meta::values::{AccessKeyRecord, BucketRecord, GrantRecord, SiteShareRecord};
use crate::meta::{cf, keys};
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
}
