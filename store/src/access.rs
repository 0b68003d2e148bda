//! Access keys and bucket grants: which project a key acts for, and which projects may
//! use a bucket (its owner, plus any granted).

use crate::Store;
use crate::error::StoreError;
use crate::meta::values::{AccessKeyRecord, BucketRecord, GrantRecord};
use crate::meta::{cf, keys};
use rand::Rng;

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
}
