//! What a bucket's owner opens to others than its projects: canned ACLs on buckets and
//! objects, and CORS rules. The gateway decides who they let in; this keeps them.

use crate::Store;
use crate::error::StoreError;
use crate::meta::cf;
use crate::meta::keys;
use crate::meta::values::{
    BucketPolicyRecord, BucketRecord, BucketSettingsRecord, CannedAcl, CorsRule, ObjectAclRecord, ObjectHead,
};
use crate::objects::Precondition;

impl Store {
    /// Creates a bucket owned by `owner` with `acl`, in one write.
    pub async fn create_bucket_with_acl(&self, bucket: &str, owner: &str, acl: CannedAcl) -> Result<(), StoreError> {
        let _guard = self.lock_key(bucket, "").await;
        if self.meta.contains(cf::BUCKETS, bucket.as_bytes())? {
            return Err(StoreError::BucketExists(bucket.to_owned()));
        }
        let mut batch = self.meta.batch();
        batch.put(
            cf::BUCKETS,
            bucket.as_bytes(),
            &BucketRecord { created_ms: crate::now_ms(), owner: owner.to_owned() },
        );
        if acl != CannedAcl::Private {
            batch.put(cf::BUCKET_SETTINGS, bucket.as_bytes(), &BucketSettingsRecord { acl, cors: Vec::new() });
        }
        self.commit(batch).await
    }

    /// A bucket's ACL and CORS rules (private and none when never set).
    pub fn bucket_settings(&self, bucket: &str) -> Result<BucketSettingsRecord, StoreError> {
        Ok(self.meta.get::<BucketSettingsRecord>(cf::BUCKET_SETTINGS, bucket.as_bytes())?.unwrap_or_default())
    }

    /// Sets a bucket's ACL, if the bucket is still the one `pre` saw.
    pub async fn set_bucket_acl(&self, bucket: &str, acl: CannedAcl, pre: &Precondition) -> Result<(), StoreError> {
        self.change_settings(bucket, pre, |settings| settings.acl = acl).await
    }

    /// Sets a bucket's CORS rules (none deletes them), if the bucket is still the one `pre` saw.
    pub async fn set_bucket_cors(
        &self,
        bucket: &str,
        cors: Vec<CorsRule>,
        pre: &Precondition,
    ) -> Result<(), StoreError> {
        self.change_settings(bucket, pre, |settings| settings.cors = cors).await
    }

    async fn change_settings(
        &self,
        bucket: &str,
        pre: &Precondition,
        change: impl FnOnce(&mut BucketSettingsRecord),
    ) -> Result<(), StoreError> {
        // The lock bucket creation and deletion take: the settings cannot outlive the bucket.
        let _guard = self.lock_key(bucket, "").await;
        pre.check_bucket(bucket, &self.bucket(bucket)?)?;
        let mut settings = self.bucket_settings(bucket)?;
        change(&mut settings);
        let mut batch = self.meta.batch();
        if settings == BucketSettingsRecord::default() {
            batch.delete(cf::BUCKET_SETTINGS, bucket.as_bytes());
        } else {
            batch.put(cf::BUCKET_SETTINGS, bucket.as_bytes(), &settings);
        }
        self.commit(batch).await
    }

    /// A bucket's policy document, if its owner set one.
    pub fn bucket_policy(&self, bucket: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get::<BucketPolicyRecord>(cf::BUCKET_POLICIES, bucket.as_bytes())?.map(|r| r.document))
    }

    /// Sets a bucket's policy (none deletes it), if the bucket is still the one `pre` saw.
    pub async fn set_bucket_policy(
        &self,
        bucket: &str,
        document: Option<String>,
        pre: &Precondition,
    ) -> Result<(), StoreError> {
        // The lock bucket creation and deletion take: the policy cannot outlive the bucket.
        let _guard = self.lock_key(bucket, "").await;
        pre.check_bucket(bucket, &self.bucket(bucket)?)?;
        let mut batch = self.meta.batch();
        match document {
            Some(document) => batch.put(cf::BUCKET_POLICIES, bucket.as_bytes(), &BucketPolicyRecord { document }),
            None => batch.delete(cf::BUCKET_POLICIES, bucket.as_bytes()),
        }
        self.commit(batch).await
    }

    /// The ACL of the object at `bucket/key` whose head is `head`.
    pub fn object_acl(&self, bucket: &str, key: &str, head: &ObjectHead) -> Result<CannedAcl, StoreError> {
        let record = self.meta.get::<ObjectAclRecord>(cf::OBJECT_ACLS, &keys::object_key(bucket, key))?;
        Ok(match record {
            Some(r) if r.etag == head.etag && r.mtime_ms == head.mtime_ms => r.acl,
            _ => CannedAcl::Private,
        })
    }

    /// Sets the ACL of the object at `bucket/key`, if the bucket is still the one `pre`
    /// saw. With `only`, just for that object (its head): the call does nothing once another
    /// replaced it, so that a write's ACL, set after its commit, never lands on a later
    /// object. A write commits private and sets its ACL after: between the two (or for good,
    /// after a crash) the object is private, never more open than asked.
    pub async fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        acl: CannedAcl,
        only: Option<&ObjectHead>,
        pre: &Precondition,
    ) -> Result<(), StoreError> {
        let _bucket_stays = self.bucket_lock(bucket).read().await;
        let _guard = self.lock_key(bucket, key).await;
        pre.check_bucket(bucket, &self.bucket(bucket)?)?;
        let current = self.head_object(bucket, key)?.head;
        if only.is_some_and(|head| (&head.etag, head.mtime_ms) != (&current.etag, current.mtime_ms)) {
            return Ok(());
        }
        let okey = keys::object_key(bucket, key);
        let mut batch = self.meta.batch();
        match acl {
            CannedAcl::Private => batch.delete(cf::OBJECT_ACLS, &okey),
            _ => batch.put(
                cf::OBJECT_ACLS,
                &okey,
                &ObjectAclRecord { etag: current.etag, mtime_ms: current.mtime_ms, acl },
            ),
        }
        self.commit(batch).await
    }
}
