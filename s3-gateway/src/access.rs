//! Who may do what.
//!
//! - [`KeyAuth`] gives s3s the secret of an access key (SigV4 verification is s3s's).
//! - [`ProjectAccess`] runs before any body is read (a form upload's file excepted: s3s
//!   reads it to check the form's policy): it refuses SigV2 and presigned URLs valid for
//!   more than the limit; then applies the bucket's policy's Deny statements (policy.rs),
//!   which keep out everyone they name, the owner included; then lets a key reach the
//!   buckets its project owns or was granted, and only the owner delete a bucket or change
//!   its ACLs, CORS rules or policy. Beyond those, what the ACLs open (acl.rs): a
//!   `public-read` or `public-read-write` bucket may be listed and its objects read by
//!   anyone, an `authenticated-read` one by any key of this site, likewise an object by its
//!   own ACL; `public-read-write` lets any key of this site write (anonymous writes stay
//!   refused).
//!   Last, what the policy's Allow statements open (to anonymous requests, reads only).
//!   Anything else unsigned is refused.

use crate::GatewayConfig;
use crate::policy::{Ask, Policy, PolicyGate};
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

    /// The policy of `bucket`, if it exists and has one.
    fn policy(&self, bucket: &str) -> S3Result<Option<Arc<Policy>>> {
        match self.store.bucket_policy(bucket).map_err(crate::error::from_store)? {
            None => Ok(None),
            Some(document) => Policy::parse(&document, bucket).map(|p| Some(Arc::new(p))).map_err(|e| {
                tracing::error!(bucket, error = %e, "a stored bucket policy does not parse");
                s3_error!(InternalError, "the bucket policy cannot be read")
            }),
        }
    }

    /// A copy reads its source: from a bucket of the project's, or one its ACL lets any
    /// key read (an object's own ACL does not reach copies), or its policy does; never
    /// what its policy denies.
    fn check_copy_source<T>(&self, req: &S3Request<T>, source: &CopySource) -> S3Result<()> {
        let Some(credentials) = &req.credentials else { return Err(s3_error!(AccessDenied)) };
        let project = self.project_of(&credentials.access_key)?;
        match source {
            CopySource::Bucket { bucket, key, .. } => {
                let policy = self.policy(bucket)?;
                let ask = Ask { principal: Some(&project), action: "s3:getobject", key: Some(Some(key)) };
                if policy.as_ref().is_some_and(|p| p.denies(&ask, bucket)) {
                    return Err(s3_error!(AccessDenied, "the policy of bucket {bucket} denies reading {key}"));
                }
                match self.check_bucket(&project, bucket) {
                    Ok(_) => Ok(()),
                    Err(refusal) => {
                        let acl = match self.store.bucket(bucket) {
                            Ok(_) => self.store.bucket_settings(bucket).map_err(crate::error::from_store)?.acl,
                            Err(_) => store::CannedAcl::Private,
                        };
                        let allowed = acl.lets_read(true) || policy.is_some_and(|p| p.allows(&ask, bucket));
                        if allowed { Ok(()) } else { Err(refusal) }
                    }
                }
            }
            _ => Err(s3_error!(NotImplemented, "copy sources other than buckets are not supported")),
        }
    }
}

/// Operations only a bucket's owner may do, and what they do, for the refusal.
const OWNER_ONLY: [(&str, &str); 8] = [
    ("DeleteBucket", "delete it"),
    ("PutBucketAcl", "change its ACL"),
    ("PutObjectAcl", "change the ACLs of its objects"),
    ("PutBucketCors", "change its CORS configuration"),
    ("DeleteBucketCors", "change its CORS configuration"),
    ("PutBucketPolicy", "change its policy"),
    ("GetBucketPolicy", "read its policy"),
    ("DeleteBucketPolicy", "change its policy"),
];

/// What a bucket's policy does not govern: its owner manages the policy even when the
/// policy denies the owner everything else (AWS's root user can).
const POLICY_OPS: [&str; 3] = ["PutBucketPolicy", "GetBucketPolicy", "DeleteBucketPolicy"];

/// Operations whose keys are known only to the operation: it asks the policy about each.
const KEYS_IN_BODY: [&str; 2] = ["PostObject", "DeleteObjects"];

/// What a bucket's ACL lets anyone who may read it do.
const PUBLIC_READS: [&str; 5] = ["ListObjects", "ListObjectsV2", "HeadBucket", "GetObject", "HeadObject"];

/// What `public-read-write` lets any key of this site do besides reading: write, replace
/// and delete objects, as S3's WRITE on a bucket does.
const PUBLIC_WRITES: [&str; 12] = [
    "PutObject",
    "PostObject",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
];

fn anonymous_refused() -> s3s::S3Error {
    s3_error!(AccessDenied, "anonymous access is off here; sign the request with an access key")
}

/// Whether a request's headers ask for an ACL other than private.
fn sets_acl(headers: &http::HeaderMap) -> bool {
    let grants = headers.keys().any(|name| name.as_str().starts_with("x-amz-grant-"));
    let canned = headers.get("x-amz-acl").and_then(|v| v.to_str().ok());
    grants || canned.is_some_and(|c| !matches!(crate::acl::canned_acl(c), Ok(store::CannedAcl::Private)))
}

/// An object read through the object's own ACL, which speaks for that object only: the
/// read must open the one checked.
#[derive(Clone)]
pub(crate) struct ReadThroughObjectAcl {
    etag: String,
    mtime_ms: i64,
}

/// Refuses the read of `info` if the access check let it through another object's ACL.
pub(crate) fn check_object_read<T>(req: &S3Request<T>, info: &store::ObjectInfo) -> S3Result<()> {
    match req.extensions.get::<ReadThroughObjectAcl>() {
        Some(seen) if (&seen.etag, seen.mtime_ms) != (&info.head.etag, info.head.mtime_ms) => {
            Err(s3_error!(AccessDenied, "the object changed and is not public"))
        }
        _ => Ok(()),
    }
}

impl ProjectAccess {
    /// What the bucket's and object's ACLs let a request from outside the bucket's
    /// projects do: `project` signed it, or no one did.
    fn check_public(&self, cx: &mut S3AccessContext<'_>, project: Option<&str>, bucket: &str) -> S3Result<()> {
        let denied = || match project {
            None => anonymous_refused(),
            Some(project) => s3_error!(AccessDenied, "project {project} has no access to bucket {bucket}"),
        };
        let op = cx.s3_op().name();
        let record = match self.store.bucket(bucket) {
            Ok(record) => record,
            Err(store::StoreError::NoSuchBucket(_)) => return Err(denied()),
            Err(e) => return Err(crate::error::from_store(e)),
        };
        let acl = self.store.bucket_settings(bucket).map_err(crate::error::from_store)?.acl;
        let signed = project.is_some();
        let bucket_allows = (acl.lets_read(signed) && PUBLIC_READS.contains(&op))
            || (acl == store::CannedAcl::PublicReadWrite && PUBLIC_WRITES.contains(&op));
        if bucket_allows {
            if !signed && !PUBLIC_READS.contains(&op) {
                // Anyone could fill the bucket, unaccounted for, and replace or delete what
                // is in it: public-read-write lets keys of this site write, not everyone.
                return Err(s3_error!(
                    AccessDenied,
                    "anonymous writes are refused, even to public-read-write buckets; sign with an access key"
                ));
            }
            if sets_acl(cx.headers()) {
                return Err(s3_error!(AccessDenied, "only the project that owns bucket {bucket} may set ACLs"));
            }
            cx.extensions_mut().insert(BucketSeen(record));
            return Ok(());
        }
        if let ("GetObject" | "HeadObject", S3Path::Object { key, .. }) = (op, cx.s3_path()) {
            let key = key.to_string();
            let info = match self.store.head_object(bucket, &key) {
                Ok(info) => info,
                Err(store::StoreError::NoSuchKey { .. }) => return Err(denied()),
                Err(e) => return Err(crate::error::from_store(e)),
            };
            if self.store.object_acl(bucket, &key, &info.head).map_err(crate::error::from_store)?.lets_read(signed) {
                cx.extensions_mut().insert(ReadThroughObjectAcl { etag: info.head.etag, mtime_ms: info.head.mtime_ms });
                return Ok(());
            }
        }
        Err(denied())
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
        let project = match cx.credentials() {
            Some(credentials) => Some(self.project_of(&credentials.access_key)?),
            None => None,
        };
        let op = cx.s3_op().name().to_owned();
        let op = op.as_str();
        let bucket = match cx.s3_path() {
            S3Path::Root if project.is_some() => return Ok(()),
            // Anyone with a key may create a bucket; it belongs to their project.
            S3Path::Bucket { .. } if project.is_some() && op == "CreateBucket" => return Ok(()),
            S3Path::Root => return Err(anonymous_refused()),
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
        };
        let policy = if POLICY_OPS.contains(&op) { None } else { self.policy(&bucket)? };
        let key = match cx.s3_path() {
            S3Path::Object { key, .. } => Some(key.to_string()),
            _ => None,
        };
        let (action, on_object) = crate::policy::action_of(op);
        let key_known = !KEYS_IN_BODY.contains(&op);
        let ask = Ask {
            principal: project.as_deref(),
            action: &action,
            key: on_object.then_some(key.as_deref().filter(|_| key_known)),
        };
        if let Some(policy) = &policy {
            if policy.denies(&ask, &bucket) {
                return Err(s3_error!(AccessDenied, "the policy of bucket {bucket} denies this request"));
            }
            if !key_known {
                let gate = PolicyGate {
                    policy: policy.clone(),
                    bucket: bucket.clone(),
                    principal: project.clone(),
                    needs_allow: false,
                };
                cx.extensions_mut().insert(gate);
            }
        }
        let through_policy = |cx: &mut S3AccessContext<'_>, refused: s3s::S3Error| -> S3Result<()> {
            let Some(policy) = &policy else { return Err(refused) };
            if refused.code() != &s3s::S3ErrorCode::AccessDenied || !policy.allows(&ask, &bucket) {
                return Err(refused);
            }
            if sets_acl(cx.headers()) {
                return Err(s3_error!(AccessDenied, "only the project that owns bucket {bucket} may set ACLs"));
            }
            let record = self.store.bucket(&bucket).map_err(crate::error::from_store)?;
            cx.extensions_mut().insert(BucketSeen(record));
            if !key_known {
                let gate = PolicyGate {
                    policy: policy.clone(),
                    bucket: bucket.clone(),
                    principal: ask.principal.map(str::to_owned),
                    needs_allow: true,
                };
                cx.extensions_mut().insert(gate);
            }
            Ok(())
        };
        let Some(project) = project.as_deref() else {
            return self.check_public(cx, None, &bucket).or_else(|refused| through_policy(cx, refused));
        };
        // A grant lets a project use a bucket, not remove it (and take the name over), nor
        // open it or its objects to others.
        if let Some(what) = OWNER_ONLY.iter().find_map(|(name, what)| (*name == op).then_some(what)) {
            let record = self.store.bucket(&bucket).map_err(crate::error::from_store)?;
            if record.owner != project {
                return Err(s3_error!(AccessDenied, "only the project that owns bucket {bucket} may {what}"));
            }
            cx.extensions_mut().insert(BucketSeen(record));
            return Ok(());
        }
        match self.store.bucket_for(&bucket, project).map_err(crate::error::from_store)? {
            Some(record) => {
                if record.owner != project && sets_acl(cx.headers()) {
                    return Err(s3_error!(AccessDenied, "only the project that owns bucket {bucket} may set ACLs"));
                }
                // The operation commits against the bucket checked here, not against one
                // of the same name created while its body was read.
                cx.extensions_mut().insert(BucketSeen(record));
                Ok(())
            }
            None => self.check_public(cx, Some(project), &bucket).or_else(|refused| through_policy(cx, refused)),
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
