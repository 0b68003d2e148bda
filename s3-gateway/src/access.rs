//! Who may do what.
//!
//! - [`KeyAuth`] gives s3s the secret of an access key (SigV4 verification is s3s's).
//! - [`ProjectAccess`] runs before any body is read: it refuses anonymous requests,
//!   SigV2, browser form uploads and presigned URLs valid for more than the limit; then
//!   lets a key reach only buckets its project owns or was granted, and delete only buckets
//!   its project owns.

use crate::GatewayConfig;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Request, S3Result, s3_error};
use std::sync::Arc;
use store::{BucketRecord, Store};

/// Secrets from the store's access keys.
pub struct KeyAuth {
    store: Arc<Store>,
}

impl KeyAuth {
    /// Over `store`'s keys.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.store.access_key(access_key).map_err(crate::error::from_store)? {
            Some(record) => Ok(SecretKey::from(record.secret)),
            None => Err(s3_error!(InvalidAccessKeyId, "the access key {access_key} does not exist")),
        }
    }
}

/// Per-project bucket access.
pub struct ProjectAccess {
    store: Arc<Store>,
    max_presign_secs: u64,
}

impl ProjectAccess {
    /// Over `store`'s keys and grants.
    pub fn new(store: Arc<Store>, config: &GatewayConfig) -> Self {
        Self { store, max_presign_secs: config.max_presign_secs }
    }

    fn project_of(&self, access_key: &str) -> S3Result<String> {
        match self.store.access_key(access_key).map_err(crate::error::from_store)? {
            Some(record) => Ok(record.project),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }

    /// The bucket, if `project` may use it; NoSuchBucket for a missing one (no project
    /// learns more of a name it cannot use than S3 would tell anyone).
    fn check_bucket(&self, project: &str, bucket: &str) -> S3Result<BucketRecord> {
        match self.store.bucket_for(bucket, project).map_err(crate::error::from_store)? {
            Some(record) => Ok(record),
            None => Err(s3_error!(AccessDenied, "project {project} has no access to bucket {bucket}")),
        }
    }

    fn check_copy_source<T>(&self, req: &S3Request<T>, source: &CopySource) -> S3Result<()> {
        let Some(credentials) = &req.credentials else { return Err(s3_error!(AccessDenied)) };
        let project = self.project_of(&credentials.access_key)?;
        match source {
            CopySource::Bucket { bucket, .. } => self.check_bucket(&project, bucket).map(drop),
            _ => Err(s3_error!(NotImplemented, "copy sources other than buckets are not supported")),
        }
    }
}

/// The value of query parameter `name`, names and values percent-decoded: the signature
/// check decodes them, so `X-Amz-Expire%73` must count as `X-Amz-Expires` here too. A
/// name without `=` has the empty value.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    let decode = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

#[async_trait::async_trait]
impl S3Access for ProjectAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let query = cx.uri().query().unwrap_or("");
        let sig_v2_header = cx
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS "));
        if sig_v2_header || query_param(query, "Signature").is_some() || query_param(query, "AWSAccessKeyId").is_some()
        {
            return Err(s3_error!(AccessDenied, "signature version 2 is not accepted; sign requests with SigV4"));
        }
        if cx.s3_op().name() == "PostObject" {
            return Err(s3_error!(NotImplemented, "browser form uploads (POST Object) are not supported; use PUT"));
        }
        if let Some(expires) = query_param(query, "X-Amz-Expires") {
            let secs: u64 = expires
                .parse()
                .map_err(|_| s3_error!(AuthorizationQueryParametersError, "X-Amz-Expires is not a number"))?;
            if secs > self.max_presign_secs {
                return Err(s3_error!(
                    AuthorizationQueryParametersError,
                    "X-Amz-Expires must be at most {} seconds (7 days)",
                    self.max_presign_secs
                ));
            }
        }
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "anonymous access is off; sign the request with an access key"));
        };
        let project = self.project_of(&credentials.access_key)?;
        match cx.s3_path() {
            S3Path::Root => Ok(()),
            // Anyone with a key may create a bucket; it belongs to their project.
            S3Path::Bucket { .. } if cx.s3_op().name() == "CreateBucket" => Ok(()),
            // A grant lets a project use a bucket, not remove it (and take the name over).
            S3Path::Bucket { bucket } if cx.s3_op().name() == "DeleteBucket" => {
                let bucket = bucket.to_string();
                match self.store.bucket(&bucket).map_err(crate::error::from_store)? {
                    record if record.owner == project => Ok(()),
                    _ => Err(s3_error!(AccessDenied, "only the project that owns bucket {bucket} may delete it")),
                }
            }
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => {
                let bucket = bucket.to_string();
                let record = self.check_bucket(&project, &bucket)?;
                // The operation commits against the bucket checked here, not against one
                // of the same name created while its body was read.
                cx.extensions_mut().insert(BucketSeen(record));
                Ok(())
            }
        }
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.check_copy_source(req, &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.check_copy_source(req, &req.input.copy_source)
    }
}

/// The bucket as the access check found it, handed to the operation in the request's
/// extensions: a write commits only if the bucket is still that one.
#[derive(Clone)]
pub(crate) struct BucketSeen(pub(crate) BucketRecord);

/// The write condition that the bucket be the one the access check saw.
pub(crate) fn same_bucket<T>(req: &S3Request<T>) -> store::Precondition {
    store::Precondition { bucket: req.extensions.get::<BucketSeen>().map(|seen| seen.0.clone()), ..Default::default() }
}

/// The project of the key that signed `req`.
pub(crate) fn project<T>(store: &Store, req: &S3Request<T>) -> S3Result<String> {
    let Some(credentials) = &req.credentials else { return Err(s3_error!(AccessDenied)) };
    match store.access_key(&credentials.access_key).map_err(crate::error::from_store)? {
        Some(record) => Ok(record.project),
        None => Err(s3_error!(InvalidAccessKeyId)),
    }
}
