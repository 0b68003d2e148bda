//! The `s3s::S3` trait: one span per operation, delegating to the operation groups.
//! Operations not listed answer NotImplemented (s3s's default).

use crate::Gateway;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

#[async_trait::async_trait]
impl S3 for Gateway {
    #[tracing::instrument(level = "debug", name = "ListBuckets", skip_all)]
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        Gateway::list_buckets(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "CreateBucket", skip_all)]
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        Gateway::create_bucket(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "DeleteBucket", skip_all)]
    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        Gateway::delete_bucket(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "HeadBucket", skip_all)]
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        Gateway::head_bucket(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetBucketLocation", skip_all)]
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        Gateway::get_bucket_location(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PutObject", skip_all)]
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        Gateway::put_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetObject", skip_all)]
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        Gateway::get_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "HeadObject", skip_all)]
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        Gateway::head_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetObjectAttributes", skip_all)]
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        Gateway::get_object_attributes(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "DeleteObject", skip_all)]
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        Gateway::delete_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "DeleteObjects", skip_all)]
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        Gateway::delete_objects(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "CopyObject", skip_all)]
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        Gateway::copy_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "ListObjects", skip_all)]
    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        Gateway::list_objects(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "ListObjectsV2", skip_all)]
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        Gateway::list_objects_v2(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "CreateMultipartUpload", skip_all)]
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        Gateway::create_multipart_upload(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "UploadPart", skip_all)]
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        Gateway::upload_part(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "UploadPartCopy", skip_all)]
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        Gateway::upload_part_copy(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "CompleteMultipartUpload", skip_all)]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        Gateway::complete_multipart_upload(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "AbortMultipartUpload", skip_all)]
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        Gateway::abort_multipart_upload(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "ListParts", skip_all)]
    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        Gateway::list_parts(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "ListMultipartUploads", skip_all)]
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Gateway::list_multipart_uploads(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetBucketAcl", skip_all)]
    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
        Gateway::get_bucket_acl(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PutBucketAcl", skip_all)]
    async fn put_bucket_acl(&self, req: S3Request<PutBucketAclInput>) -> S3Result<S3Response<PutBucketAclOutput>> {
        Gateway::put_bucket_acl(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetObjectAcl", skip_all)]
    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
        Gateway::get_object_acl(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PutObjectAcl", skip_all)]
    async fn put_object_acl(&self, req: S3Request<PutObjectAclInput>) -> S3Result<S3Response<PutObjectAclOutput>> {
        Gateway::put_object_acl(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PutBucketCors", skip_all)]
    async fn put_bucket_cors(&self, req: S3Request<PutBucketCorsInput>) -> S3Result<S3Response<PutBucketCorsOutput>> {
        Gateway::put_bucket_cors(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetBucketCors", skip_all)]
    async fn get_bucket_cors(&self, req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
        Gateway::get_bucket_cors(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "DeleteBucketCors", skip_all)]
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        Gateway::delete_bucket_cors(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PostObject", skip_all)]
    async fn post_object(&self, req: S3Request<PostObjectInput>) -> S3Result<S3Response<PostObjectOutput>> {
        Gateway::post_object(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "PutBucketPolicy", skip_all)]
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        Gateway::put_bucket_policy(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "GetBucketPolicy", skip_all)]
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        Gateway::get_bucket_policy(self, req).await
    }

    #[tracing::instrument(level = "debug", name = "DeleteBucketPolicy", skip_all)]
    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        Gateway::delete_bucket_policy(self, req).await
    }
}
