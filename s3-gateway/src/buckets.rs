//! Bucket operations: ListBuckets (paginated), CreateBucket (with an ACL), DeleteBucket, HeadBucket,
//! GetBucketLocation.

use crate::acl::AclRequest;
use crate::error::from_store;
use crate::{Gateway, access};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::StoreError;

/// The largest ListBuckets page, as S3's.
const MAX_BUCKETS_PAGE: usize = 10_000;

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

impl Gateway {
    pub(crate) async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let project = access::project(&self.store, &req)?;
        let input = req.input;
        let max = match input.max_buckets {
            None => MAX_BUCKETS_PAGE,
            Some(n) if (1..=MAX_BUCKETS_PAGE as i32).contains(&n) => n as usize,
            Some(n) => {
                return Err(s3_error!(InvalidArgument, "max-buckets {n} is not between 1 and {MAX_BUCKETS_PAGE}"));
            }
        };
        // The continuation token is the last name returned, opaque to clients.
        let after = match input.continuation_token.as_deref() {
            None | Some("") => String::new(),
            Some(token) => TOKEN
                .decode(token)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is invalid"))?,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let in_region = input.bucket_region.as_ref().is_none_or(|r| *r == self.config.region);
        let mut buckets = Vec::new();
        let mut truncated = false;
        for (name, record) in self.store.list_buckets().map_err(from_store)? {
            if !in_region || !name.starts_with(&prefix) || name <= after {
                continue;
            }
            if self.store.bucket_allows(&name, &project).map_err(from_store)? {
                if buckets.len() == max {
                    truncated = true;
                    break;
                }
                buckets.push(Bucket {
                    name: Some(name),
                    creation_date: Some(timestamp(record.created_ms)),
                    bucket_region: Some(self.config.region.clone()),
                });
            }
        }
        let continuation_token =
            buckets.last().and_then(|b| b.name.as_deref()).filter(|_| truncated).map(|n| TOKEN.encode(n));
        Ok(S3Response::new(ListBucketsOutput {
            continuation_token,
            buckets: Some(buckets),
            owner: Some(Owner { id: Some(project.clone()), display_name: Some(project) }),
            prefix: input.prefix,
        }))
    }

    pub(crate) async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let project = access::project(&self.store, &req)?;
        let input = &req.input;
        let bucket = &input.bucket;
        let acl = AclRequest::headers(
            input.acl.as_ref().map(BucketCannedACL::as_str),
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write,
            &input.grant_write_acp,
        )
        .resolve(&project)?
        .unwrap_or_default();
        match self.store.create_bucket_with_acl(bucket, &project, acl).await {
            Ok(()) => Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) })),
            Err(StoreError::BucketExists(_)) => {
                let owner = self.store.bucket(bucket).map_err(from_store)?.owner;
                if owner == project {
                    Err(s3_error!(BucketAlreadyOwnedByYou, "you already own bucket {bucket}"))
                } else {
                    Err(s3_error!(
                        BucketAlreadyExists,
                        "bucket {bucket} belongs to another project; choose another name"
                    ))
                }
            }
            Err(e) => Err(from_store(e)),
        }
    }

    pub(crate) async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.delete_bucket(&req.input.bucket).await.map_err(from_store)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(crate) async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.bucket(&req.input.bucket).map_err(from_store)?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.config.region.clone()), ..Default::default() }))
    }

    pub(crate) async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.store.bucket(&req.input.bucket).map_err(from_store)?;
        // us-east-1 is reported as an empty constraint, as AWS does.
        let location_constraint =
            (self.config.region != "us-east-1").then(|| BucketLocationConstraint::from(self.config.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }
}
