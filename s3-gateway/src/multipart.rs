//! Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
//! ListMultipartUploads.

use crate::Gateway;
use crate::buckets::timestamp;
use crate::checksum;
use crate::error::from_store;
use crate::objects::{Declared, check_copy_conditions, copy_source, object_meta, range_body, write_conditions};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::StoreError;
use store::multipart::PartInfo;

impl Gateway {
    fn part_number(&self, n: i32) -> S3Result<u32> {
        if n >= 1 && n as u32 <= self.config.max_part_number {
            Ok(n as u32)
        } else {
            Err(s3_error!(InvalidArgument, "part number must be between 1 and {}", self.config.max_part_number))
        }
    }

    pub(crate) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        let acl = crate::objects::object_acl(
            &input.acl,
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
            &owner,
        )?;
        let algorithm = input.checksum_algorithm.as_ref().map(checksum::algo_from_s3).transpose()?;
        let meta = object_meta(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
            input.metadata,
        );
        let upload_id = self
            .store
            .create_upload_with_acl(&input.bucket, &input.key, meta, algorithm, acl)
            .await
            .map_err(from_store)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: algorithm.map(|_| ChecksumType::from_static(ChecksumType::COMPOSITE)),
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let part = self.part_number(input.part_number)?;
        let declared = Declared::new(
            input.content_length,
            input.content_md5.as_ref(),
            input.checksum_algorithm.as_ref(),
            [
                &input.checksum_crc32,
                &input.checksum_crc32c,
                &input.checksum_crc64nvme,
                &input.checksum_sha1,
                &input.checksum_sha256,
            ],
        )?;
        // Fail fast on a wrong upload id, before reading the body.
        self.store.upload_checksum(&input.bucket, &input.key, &input.upload_id).map_err(from_store)?;
        let ingested = self
            .ingest_body(input.body, &declared, req.trailing_headers.as_ref(), false, self.config.max_part_bytes)
            .await?;
        let info = self
            .store
            .commit_part(&input.bucket, &input.key, &input.upload_id, part, ingested)
            .await
            .map_err(from_store)?;
        let (fields, _) = checksum::to_fields(&info.checksums, 0);
        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = fields;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(info.etag)),
            checksum_crc32,
            checksum_crc32c,
            checksum_crc64nvme,
            checksum_sha1,
            checksum_sha256,
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let part = self.part_number(input.part_number)?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let open = self.store.open_object(src_bucket, src_key).map_err(from_store)?;
        check_copy_conditions(
            &open.info,
            &input.copy_source_if_match,
            &input.copy_source_if_none_match,
            &input.copy_source_if_modified_since,
            &input.copy_source_if_unmodified_since,
        )?;
        let range = input.copy_source_range.as_deref().map(|text| copy_range(text, open.info.head.size)).transpose()?;
        self.store.upload_checksum(&input.bucket, &input.key, &input.upload_id).map_err(from_store)?;
        let (range, stream) = open.read(range).map_err(from_store)?;
        // The bytes go through ingest, so every whole chunk dedups against the source.
        let declared = Declared {
            content_length: Some((range.end - range.start) as i64),
            md5: None,
            algorithm: None,
            header_checksums: vec![],
        };
        let ingested =
            self.ingest_body(Some(range_body(stream)), &declared, None, false, self.config.max_part_bytes).await?;
        let info = self
            .store
            .commit_part(&input.bucket, &input.key, &input.upload_id, part, ingested)
            .await
            .map_err(from_store)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: Some(timestamp(info.mtime_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(crate) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let mut pre = crate::access::same_bucket(&req);
        let input = req.input;
        write_conditions(&mut pre, &input.if_match, &input.if_none_match);
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(MalformedXML, "CompleteMultipartUpload lists no parts"))?;
        let mut listed = Vec::with_capacity(parts.len());
        for p in &parts {
            let n = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part has no PartNumber"))?;
            let etag = p.e_tag.as_ref().ok_or_else(|| s3_error!(MalformedXML, "part {n} has no ETag"))?;
            listed.push((self.part_number(n)?, etag.value().to_owned()));
        }
        let checksums = match self.upload_composite_checksum(&input.bucket, &input.key, &input.upload_id, &listed) {
            Ok(checksums) => checksums,
            // Completed already (its parts are gone): the store answers a retry from what
            // the completion made.
            Err(StoreError::NoSuchUpload(_)) => Vec::new(),
            Err(e) => return Err(from_store(e)),
        };
        let info = self
            .store
            .complete_upload_if(&input.bucket, &input.key, &input.upload_id, &listed, checksums, &pre)
            .await
            .map_err(from_store)?;
        let (fields, checksum_type) = checksum::to_fields(&info.head.checksums, info.head.part_sizes.len());
        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = fields;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(info.head.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            checksum_crc32,
            checksum_crc32c,
            checksum_crc64nvme,
            checksum_sha1,
            checksum_sha256,
            checksum_type,
            ..Default::default()
        }))
    }

    /// A composite checksum (checksum of the parts' checksums) when the upload declared
    /// an algorithm and every listed part has it.
    fn upload_composite_checksum(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
    ) -> Result<Vec<(hw_offload::ChecksumAlgo, Vec<u8>)>, StoreError> {
        let (stored, _) = self.store.list_parts(bucket, key, upload_id, 0, usize::MAX)?;
        let algorithm = self.store.upload_checksum(bucket, key, upload_id)?;
        Ok(algorithm.and_then(|algo| composite_checksum(algo, listed, &stored)).into_iter().collect())
    }

    pub(crate) async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.store.abort_upload(&input.bucket, &input.key, &input.upload_id).await.map_err(from_store)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = input.max_parts.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let after = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let (parts, truncated) =
            self.store.list_parts(&input.bucket, &input.key, &input.upload_id, after, max).map_err(from_store)?;
        let next = parts.last().map(|p| p.part as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| {
                        let (fields, _) = checksum::to_fields(&p.checksums, 0);
                        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] =
                            fields;
                        Part {
                            part_number: Some(p.part as i32),
                            e_tag: Some(ETag::Strong(p.etag)),
                            size: Some(p.size as i64),
                            last_modified: Some(timestamp(p.mtime_ms)),
                            checksum_crc32,
                            checksum_crc32c,
                            checksum_crc64nvme,
                            checksum_sha1,
                            checksum_sha256,
                        }
                    })
                    .collect(),
            ),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max = input.max_uploads.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let prefix = input.prefix.clone().unwrap_or_default();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let (uploads, truncated) =
            self.store.list_uploads(&input.bucket, &prefix, &key_marker, &id_marker, max).map_err(from_store)?;
        let last = uploads.last().cloned();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: last.as_ref().map(|u| u.key.clone()),
            next_upload_id_marker: last.map(|u| u.upload_id),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp(u.created_ms)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            prefix: input.prefix,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

/// `x-amz-copy-source-range`: `bytes=first-last`, both inside the source. Anything else
/// is InvalidRange (416), before any byte is copied.
fn copy_range(text: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let offset = |digits: &str| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse::<u64>().ok())?
    };
    let bounds = text
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(first, last)| Some((offset(first)?, offset(last)?)));
    match bounds {
        Some((first, last)) if first <= last && last < size => Ok(first..last + 1),
        Some(_) => Err(s3_error!(
            InvalidRange,
            "x-amz-copy-source-range {text} is not within the source object's {size} bytes"
        )),
        None => Err(s3_error!(InvalidRange, "x-amz-copy-source-range {text} is not of the form bytes=first-last")),
    }
}

/// S3's composite checksum: the checksum of the concatenated part checksums.
fn composite_checksum(
    algo: hw_offload::ChecksumAlgo,
    listed: &[(u32, String)],
    stored: &[PartInfo],
) -> Option<(hw_offload::ChecksumAlgo, Vec<u8>)> {
    let mut concat = Vec::new();
    for (n, _) in listed {
        let part = stored.iter().find(|p| p.part == *n)?;
        let (_, value) = part.checksums.iter().find(|(a, _)| *a == algo)?;
        concat.extend_from_slice(value);
    }
    Some((algo, algo.checksum(&concat)))
}
