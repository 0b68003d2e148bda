//! Object operations: PutObject, GetObject, HeadObject, GetObjectAttributes,
//! DeleteObject, DeleteObjects, CopyObject; and what they share with multipart (body
//! ingest and verification, metadata, conditional requests).

use crate::Gateway;
use crate::buckets::timestamp;
use crate::checksum;
use crate::error::from_store;
use bytes::Bytes;
use futures::StreamExt;
use hw_offload::ChecksumAlgo;
use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};
use store::{IngestOptions, Ingested, ObjectInfo, ObjectMeta};

/// Parses an `Expires` value kept as text back into a timestamp (unparseable: omitted).
fn parse_expires(text: &Option<String>) -> Option<Timestamp> {
    text.as_deref().and_then(|t| Timestamp::parse(TimestampFormat::HttpDate, t).ok())
}

/// The HTTP metadata S3 clients set on upload.
#[allow(clippy::too_many_arguments)]
pub(crate) fn object_meta(
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> ObjectMeta {
    // aws-chunked is the transfer framing of this request, not the object's encoding.
    let content_encoding = content_encoding
        .map(|e| {
            e.split(',').map(str::trim).filter(|t| !t.eq_ignore_ascii_case("aws-chunked")).collect::<Vec<_>>().join(",")
        })
        .filter(|e| !e.is_empty());
    let expires = expires.and_then(|t| {
        let mut out = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    });
    ObjectMeta {
        content_type,
        cache_control,
        content_disposition,
        content_encoding,
        content_language,
        expires,
        user: metadata.unwrap_or_default().into_iter().collect(),
    }
}

/// What a client declared about a body it sends.
pub(crate) struct Declared {
    pub(crate) content_length: Option<i64>,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) algorithm: Option<ChecksumAlgo>,
    pub(crate) header_checksums: Vec<(ChecksumAlgo, Vec<u8>)>,
}

impl Declared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        content_length: Option<i64>,
        content_md5: Option<&String>,
        algorithm: Option<&ChecksumAlgorithm>,
        fields: [&Option<String>; 5],
    ) -> S3Result<Self> {
        Ok(Self {
            content_length,
            md5: checksum::content_md5(content_md5)?,
            algorithm: algorithm.map(checksum::algo_from_s3).transpose()?,
            header_checksums: checksum::from_fields(fields)?,
        })
    }

    fn algorithms(&self) -> Vec<ChecksumAlgo> {
        let mut algos: Vec<ChecksumAlgo> = self.header_checksums.iter().map(|(a, _)| *a).collect();
        algos.extend(self.algorithm);
        algos.dedup();
        algos
    }
}

impl Gateway {
    /// Streams a request body into the store and checks it against what the client
    /// declared, trailers included. Nothing is visible until the caller commits.
    pub(crate) async fn ingest_body(
        &self,
        body: Option<StreamingBlob>,
        declared: &Declared,
        trailers: Option<&s3s::TrailingHeaders>,
        allow_inline: bool,
        max_bytes: u64,
    ) -> S3Result<Ingested> {
        if let Some(len) = declared.content_length
            && len as u64 > max_bytes
        {
            return Err(s3_error!(EntityTooLarge, "{len} bytes is over the limit of {max_bytes}"));
        }
        let body = body.ok_or_else(|| s3_error!(IncompleteBody, "the request has no body"))?;
        let opts = IngestOptions { checksums: declared.algorithms(), allow_inline, max_bytes };
        let ingested = self.store.ingest(body, &opts).await.map_err(from_store)?;
        if let Some(len) = declared.content_length
            && len as u64 != ingested.size()
        {
            return Err(s3_error!(IncompleteBody, "received {} bytes, Content-Length said {len}", ingested.size()));
        }
        // Trailers are complete only now that the body was read to its end.
        let trailer_map = trailers.and_then(|t| t.take());
        let mut expected = declared.header_checksums.clone();
        expected.extend(checksum::from_trailers(trailer_map.as_ref())?);
        match store::check_digests(&ingested, declared.md5, &expected) {
            Ok(()) => Ok(ingested),
            Err(store::StoreError::DigestMismatch { algo, .. }) => Err(checksum::mismatch(algo)),
            Err(e) => Err(from_store(e)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    pub(crate) async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let mut pre = crate::access::same_bucket(&req);
        let input = req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        let acl = object_acl(
            &input.acl,
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
            &owner,
        )?;
        write_conditions(&mut pre, &input.if_match, &input.if_none_match);
        // Conditional writes fail early, before the body is read, and again at the commit,
        // under the key lock, so that of two racing writes exactly one wins.
        self.store.check_precondition(&input.bucket, &input.key, &pre).map_err(from_store)?;
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
        let ingested = self
            .ingest_body(input.body, &declared, req.trailing_headers.as_ref(), true, self.config.max_object_bytes)
            .await?;
        let meta = object_meta(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires,
            input.metadata,
        );
        let etag = hex::encode(ingested.digests().md5);
        let info = self
            .store
            .commit_object(&input.bucket, &input.key, meta, ingested, etag, Vec::new(), &pre)
            .await
            .map_err(from_store)?;
        self.set_written_acl(&pre, &info, &input.bucket, acl).await?;
        let (fields, checksum_type) = checksum::to_fields(&info.head.checksums, 0);
        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = fields;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(info.head.etag)),
            checksum_crc32,
            checksum_crc32c,
            checksum_crc64nvme,
            checksum_sha1,
            checksum_sha256,
            checksum_type,
            size: Some(info.head.size as i64),
            ..Default::default()
        }))
    }

    /// A browser form upload: s3s checked the form's signature and every condition of its
    /// policy (expiry, eq, starts-with, content-length-range, no field left uncovered)
    /// before any of this runs; what is left is who may write and the write itself, as
    /// PutObject's.
    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    pub(crate) async fn post_object(&self, req: S3Request<PostObjectInput>) -> S3Result<S3Response<PostObjectOutput>> {
        // A multipart POST has credentials only from the form's signature, which s3s checks
        // only with a policy (s3s does not hand the policy on: it is not in the input).
        if req.credentials.is_none() {
            return Err(s3_error!(AccessDenied, "a form upload must be signed with SigV4 and carry a policy"));
        }
        // A SigV4 form's credential scope names a region; a SigV2 form's nothing (and the
        // single domain served here names none either).
        if req.region.is_none() {
            return Err(s3_error!(AccessDenied, "signature version 2 is not accepted; sign forms with SigV4"));
        }
        crate::policy::check_key(&req, "s3:putobject", &req.input.key)?;
        let owner = self.store.bucket(&req.input.bucket).map_err(from_store)?.owner;
        let project = crate::access::project(&self.store, &req)?;
        let asks_acl = req.input.acl.as_ref().is_some_and(|acl| acl.as_str() != ObjectCannedACL::PRIVATE);
        if asks_acl && project != owner {
            return Err(s3_error!(AccessDenied, "only the project that owns bucket {owner} may set ACLs"));
        }
        let req = req.map_input(|p| PutObjectInput {
            acl: p.acl,
            body: p.body,
            bucket: p.bucket,
            cache_control: p.cache_control,
            checksum_algorithm: p.checksum_algorithm,
            checksum_crc32: p.checksum_crc32,
            checksum_crc32c: p.checksum_crc32c,
            checksum_crc64nvme: p.checksum_crc64nvme,
            checksum_sha1: p.checksum_sha1,
            checksum_sha256: p.checksum_sha256,
            content_disposition: p.content_disposition,
            content_encoding: p.content_encoding,
            content_language: p.content_language,
            content_length: p.content_length,
            content_md5: p.content_md5,
            content_type: p.content_type,
            expires: p.expires,
            key: p.key,
            metadata: p.metadata,
            ..Default::default()
        });
        let out = self.put_object(req).await?;
        Ok(out.map_output(|o| PostObjectOutput {
            e_tag: o.e_tag,
            checksum_crc32: o.checksum_crc32,
            checksum_crc32c: o.checksum_crc32c,
            checksum_crc64nvme: o.checksum_crc64nvme,
            checksum_sha1: o.checksum_sha1,
            checksum_sha256: o.checksum_sha256,
            checksum_type: o.checksum_type,
            ..Default::default()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    pub(crate) async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let open = self.store.open_object(&req.input.bucket, &req.input.key).map_err(from_store)?;
        crate::access::check_object_read(&req, &open.info)?;
        let input = req.input;
        let info = &open.info;
        check_conditions(
            info,
            &input.if_match,
            &input.if_none_match,
            &input.if_modified_since,
            &input.if_unmodified_since,
        )?;
        let range = requested_range(info, input.range.as_ref(), input.part_number)?;
        let partial = range.is_some();
        let (range, stream) = open.read(range).map_err(from_store)?;
        let head = Head::of(info, input.checksum_mode.as_ref(), !partial);
        let stream = stream.map(|piece| piece.map_err(|e| std::io::Error::other(e.to_string())));
        let body = StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream));
        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = head.checksums;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((range.end - range.start) as i64),
            content_range: partial
                .then(|| format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.head.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(info.head.etag.clone())),
            last_modified: Some(timestamp(info.head.mtime_ms)),
            content_type: head.content_type,
            cache_control: info.head.meta.cache_control.clone(),
            content_disposition: info.head.meta.content_disposition.clone(),
            content_encoding: info.head.meta.content_encoding.clone(),
            content_language: info.head.meta.content_language.clone(),
            expires: parse_expires(&info.head.meta.expires),
            metadata: head.metadata,
            parts_count: head.parts_count,
            checksum_crc32,
            checksum_crc32c,
            checksum_crc64nvme,
            checksum_sha1,
            checksum_sha256,
            checksum_type: head.checksum_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let info = self.store.head_object(&req.input.bucket, &req.input.key).map_err(from_store)?;
        crate::access::check_object_read(&req, &info)?;
        let input = req.input;
        check_conditions(
            &info,
            &input.if_match,
            &input.if_none_match,
            &input.if_modified_since,
            &input.if_unmodified_since,
        )?;
        let range = requested_range(&info, input.range.as_ref(), input.part_number)?;
        let length = range.as_ref().map_or(info.head.size, |r| r.end.min(info.head.size) - r.start);
        let head = Head::of(&info, input.checksum_mode.as_ref(), range.is_none());
        let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = head.checksums;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(length as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(info.head.etag.clone())),
            last_modified: Some(timestamp(info.head.mtime_ms)),
            content_type: head.content_type,
            cache_control: info.head.meta.cache_control.clone(),
            content_disposition: info.head.meta.content_disposition.clone(),
            content_encoding: info.head.meta.content_encoding.clone(),
            content_language: info.head.meta.content_language.clone(),
            expires: parse_expires(&info.head.meta.expires),
            metadata: head.metadata,
            parts_count: head.parts_count,
            checksum_crc32,
            checksum_crc32c,
            checksum_crc64nvme,
            checksum_sha1,
            checksum_sha256,
            checksum_type: head.checksum_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        let wanted = Attributes::parse(&input.object_attributes)?;
        let info = self.store.head_object(&input.bucket, &input.key).map_err(from_store)?;
        let parts = info.head.part_sizes.len();
        let checksum = (wanted.checksum && !info.head.checksums.is_empty()).then(|| {
            // The parts count is ObjectParts' business: no "-N" suffix here.
            let (fields, _) = checksum::to_fields(&info.head.checksums, 0);
            let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = fields;
            let kind = if parts > 0 { ChecksumType::COMPOSITE } else { ChecksumType::FULL_OBJECT };
            Checksum {
                checksum_crc32,
                checksum_crc32c,
                checksum_crc64nvme,
                checksum_sha1,
                checksum_sha256,
                checksum_type: Some(ChecksumType::from_static(kind)),
            }
        });
        let object_parts = if wanted.object_parts && parts > 0 {
            let max = input.max_parts.map_or(1000, |m| m.clamp(0, 1000) as usize);
            let after = input.part_number_marker.unwrap_or(0).clamp(0, parts as i32) as usize;
            let part_checksums = self.store.part_checksums(&input.bucket, &info).map_err(from_store)?;
            let listed: Vec<ObjectPart> = (after..parts.min(after + max))
                .map(|i| {
                    let (fields, _) = checksum::to_fields(part_checksums.get(i).map_or(&[][..], Vec::as_slice), 0);
                    let [checksum_crc32, checksum_crc32c, checksum_crc64nvme, checksum_sha1, checksum_sha256] = fields;
                    ObjectPart {
                        part_number: Some(i as i32 + 1),
                        size: Some(info.head.part_sizes[i] as i64),
                        checksum_crc32,
                        checksum_crc32c,
                        checksum_crc64nvme,
                        checksum_sha1,
                        checksum_sha256,
                    }
                })
                .collect();
            Some(GetObjectAttributesParts {
                is_truncated: Some(after + listed.len() < parts),
                max_parts: Some(max as i32),
                next_part_number_marker: listed.last().and_then(|p| p.part_number),
                part_number_marker: input.part_number_marker,
                parts: Some(listed),
                total_parts_count: Some(parts as i32),
            })
        } else {
            None
        };
        Ok(S3Response::new(GetObjectAttributesOutput {
            checksum,
            e_tag: wanted.etag.then(|| ETag::Strong(info.head.etag.clone())),
            last_modified: Some(timestamp(info.head.mtime_ms)),
            object_parts,
            object_size: wanted.object_size.then_some(info.head.size as i64),
            storage_class: wanted.storage_class.then(|| StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store.delete_object(&req.input.bucket, &req.input.key).await.map_err(from_store)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(crate) async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let pre = crate::access::same_bucket(&req);
        let gate = req.extensions.get::<crate::policy::PolicyGate>().cloned();
        let input = req.input;
        self.store.bucket(&input.bucket).map_err(from_store)?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per DeleteObjects request"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in input.delete.objects {
            let allowed = gate.as_ref().map_or(Ok(()), |gate| gate.check_key("s3:deleteobject", &object.key));
            let deleted_here = match allowed {
                Ok(()) => self.store.delete_object_if(&input.bucket, &object.key, &pre).await.map_err(from_store),
                Err(refusal) => Err(refusal),
            };
            match deleted_here {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(object.key), ..Default::default() }),
                Err(e) => {
                    errors.push(Error {
                        code: Some(e.code().as_str().to_owned()),
                        key: Some(object.key),
                        message: e.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    pub(crate) async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let pre = crate::access::same_bucket(&req);
        let input = req.input;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        // A copy gets the ACL it asks for, not its source's (as in S3).
        let acl = object_acl(
            &input.acl,
            &input.grant_full_control,
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
            &owner,
        )?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let source = self.store.head_object(src_bucket, src_key).map_err(from_store)?;
        check_copy_conditions(
            &source,
            &input.copy_source_if_match,
            &input.copy_source_if_none_match,
            &input.copy_source_if_modified_since,
            &input.copy_source_if_unmodified_since,
        )?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && src_bucket == input.bucket && src_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself changes nothing; set the metadata directive to REPLACE"
            ));
        }
        let meta = replace.then(|| {
            object_meta(
                input.content_type,
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires,
                input.metadata,
            )
        });
        let info =
            self.store.copy_object(src_bucket, src_key, &input.bucket, &input.key, meta).await.map_err(from_store)?;
        self.set_written_acl(&pre, &info, &input.bucket, acl).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(info.head.etag)),
                last_modified: Some(timestamp(info.head.mtime_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// The attributes a GetObjectAttributes asks for.
#[derive(Default)]
struct Attributes {
    etag: bool,
    checksum: bool,
    object_parts: bool,
    storage_class: bool,
    object_size: bool,
}

impl Attributes {
    /// `x-amz-object-attributes`: names, comma-separated in one header or in several.
    fn parse(list: &[ObjectAttributes]) -> S3Result<Self> {
        let mut wanted = Self::default();
        for name in list.iter().flat_map(|a| a.as_str().split(',')).map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name.to_ascii_lowercase().as_str() {
                "etag" => &mut wanted.etag,
                "checksum" => &mut wanted.checksum,
                "objectparts" => &mut wanted.object_parts,
                "storageclass" => &mut wanted.storage_class,
                "objectsize" => &mut wanted.object_size,
                _ => return Err(s3_error!(InvalidArgument, "invalid object attribute {name}")),
            };
            *flag = true;
        }
        Ok(wanted)
    }
}

/// What GET and HEAD answer besides the body.
struct Head {
    content_type: Option<String>,
    metadata: Option<Metadata>,
    parts_count: Option<i32>,
    checksums: checksum::Fields,
    checksum_type: Option<ChecksumType>,
}

impl Head {
    fn of(info: &ObjectInfo, mode: Option<&ChecksumMode>, whole_object: bool) -> Self {
        let parts = info.head.part_sizes.len();
        // Checksums describe the whole object: a range must not carry them, or clients
        // that validate responses would reject correct bytes.
        let enabled = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED) && whole_object;
        let (checksums, checksum_type) =
            if enabled { checksum::to_fields(&info.head.checksums, parts) } else { (Default::default(), None) };
        Self {
            content_type: Some(info.head.meta.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into())),
            metadata: (!info.head.meta.user.is_empty()).then(|| info.head.meta.user.clone().into_iter().collect()),
            parts_count: (parts > 0).then_some(parts as i32),
            checksums,
            checksum_type,
        }
    }
}

/// The ACL an object write asks for (private when none).
pub(crate) fn object_acl(
    canned: &Option<ObjectCannedACL>,
    full_control: &Option<String>,
    read: &Option<String>,
    read_acp: &Option<String>,
    write_acp: &Option<String>,
    owner: &str,
) -> S3Result<store::CannedAcl> {
    let canned = canned.as_ref().map(ObjectCannedACL::as_str);
    let asked = crate::acl::AclRequest::headers(canned, full_control, read, read_acp, &None, write_acp);
    Ok(asked.resolve(owner)?.unwrap_or_default())
}

pub(crate) fn copy_source(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, version_id: None } => Ok((bucket, key)),
        CopySource::Bucket { .. } => Err(s3_error!(NotImplemented, "versioned copy sources are not supported")),
        _ => Err(s3_error!(NotImplemented, "copy sources other than bucket/key are not supported")),
    }
}

/// The byte range a GET or HEAD asks for: a Range header or a part number.
fn requested_range(
    info: &ObjectInfo,
    range: Option<&Range>,
    part: Option<i32>,
) -> S3Result<Option<std::ops::Range<u64>>> {
    match (range, part) {
        (Some(_), Some(_)) => Err(s3_error!(InvalidRequest, "Range and partNumber cannot be used together")),
        (Some(r), None) => {
            if info.head.size == 0 {
                return Err(s3_error!(InvalidRange, "the object is empty"));
            }
            Ok(Some(r.check(info.head.size)?))
        }
        (None, Some(n)) if n >= 1 && info.head.part_sizes.is_empty() && n == 1 => Ok(None),
        (None, Some(n)) if n >= 1 && (n as usize) <= info.head.part_sizes.len() => {
            let start: u64 = info.head.part_sizes[..n as usize - 1].iter().sum();
            Ok(Some(start..start + info.head.part_sizes[n as usize - 1]))
        }
        (None, Some(n)) => Err(crate::error::custom(
            "InvalidPartNumber",
            http::StatusCode::RANGE_NOT_SATISFIABLE,
            format!("part {n} does not exist"),
        )),
        (None, None) => Ok(None),
    }
}

/// `If-Match` and `If-None-Match: *` of a write, as conditions its commit checks.
pub(crate) fn write_conditions(
    pre: &mut store::Precondition,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
) {
    pre.absent = matches!(if_none_match, Some(ETagCondition::Any));
    pre.if_match = if_match.as_ref().map(|cond| match cond {
        ETagCondition::Any => store::EtagMatch::Any,
        ETagCondition::ETag(e) => store::EtagMatch::Etag(e.value().to_owned()),
    });
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since.
fn check_conditions(
    info: &ObjectInfo,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    let modified = timestamp(info.head.mtime_ms / 1000 * 1000);
    if let Some(cond) = if_match {
        if !etag_matches(cond, &info.head.etag) {
            return Err(s3_error!(PreconditionFailed, "If-Match does not match the object's ETag"));
        }
    } else if let Some(t) = if_unmodified_since
        && modified > *t
    {
        return Err(s3_error!(PreconditionFailed, "the object was modified since If-Unmodified-Since"));
    }
    if let Some(cond) = if_none_match {
        if etag_matches(cond, &info.head.etag) {
            return Err(not_modified(info));
        }
    } else if let Some(t) = if_modified_since
        && modified <= *t
    {
        return Err(not_modified(info));
    }
    Ok(())
}

fn not_modified(info: &ObjectInfo) -> S3Error {
    let mut e = s3_error!(NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", info.head.etag)) {
        headers.insert(http::header::ETAG, v);
    }
    e.set_headers(headers);
    e
}

/// Copy-source conditions fail with 412 in every case, as S3 does.
pub(crate) fn check_copy_conditions(
    info: &ObjectInfo,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    check_conditions(info, if_match, if_none_match, if_modified_since, if_unmodified_since).map_err(|e| {
        if *e.code() == s3s::S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed, "a copy-source condition failed")
        } else {
            e
        }
    })
}

/// A source object's range as a request body, for UploadPartCopy.
pub(crate) fn range_body(stream: store::ObjectStream) -> StreamingBlob {
    let stream =
        stream.map(|piece: Result<Bytes, store::StoreError>| piece.map_err(|e| std::io::Error::other(e.to_string())));
    StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream))
}
