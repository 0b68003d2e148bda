//! Listings: ListObjects (V1) and ListObjectsV2, with prefix, delimiter, markers,
//! max-keys (at most 1000) and encoding-type=url.

use crate::Gateway;
use crate::buckets::timestamp;
use crate::error::from_store;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use store::ListPage;

/// What S3 leaves unescaped with encoding-type=url (RFC 3986 unreserved, and '/').
const URL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

struct Encoder(bool);

impl Encoder {
    fn new(encoding: &Option<EncodingType>) -> S3Result<Self> {
        match encoding {
            None => Ok(Self(false)),
            Some(e) if e.as_str().eq_ignore_ascii_case(EncodingType::URL) => Ok(Self(true)),
            Some(e) => Err(s3_error!(InvalidArgument, "invalid encoding-type {}; only url is supported", e.as_str())),
        }
    }

    fn apply(&self, s: String) -> String {
        if self.0 { utf8_percent_encode(&s, URL_ESCAPE).to_string() } else { s }
    }

    fn opt(&self, s: Option<String>) -> Option<String> {
        s.map(|s| self.apply(s))
    }
}

/// A query parameter sent empty (`delimiter=`) is one not sent, as in S3.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl Gateway {
    fn max_keys(&self, requested: Option<i32>) -> S3Result<usize> {
        match requested {
            None => Ok(self.config.max_keys),
            Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(n) => Ok((n as usize).min(self.config.max_keys)),
        }
    }

    fn page(&self, bucket: &str, prefix: &str, delimiter: Option<&str>, after: &str, max: usize) -> S3Result<ListPage> {
        if max == 0 {
            self.store.bucket(bucket).map_err(from_store)?;
            return Ok(ListPage::default());
        }
        self.store.list_objects(bucket, prefix, delimiter, after, max).map_err(from_store)
    }

    fn contents(page: &ListPage, enc: &Encoder, owner: Option<&str>) -> Vec<Object> {
        page.objects
            .iter()
            .map(|o| Object {
                key: Some(enc.apply(o.key.clone())),
                e_tag: Some(ETag::Strong(o.head.etag.clone())),
                last_modified: Some(timestamp(o.head.mtime_ms)),
                size: Some(o.head.size as i64),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                owner: owner.map(|p| Owner { id: Some(p.to_owned()), display_name: Some(p.to_owned()) }),
                ..Default::default()
            })
            .collect()
    }

    fn prefixes(page: &ListPage, enc: &Encoder) -> Vec<CommonPrefix> {
        page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc.apply(p.clone())) }).collect()
    }

    pub(crate) async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let enc = Encoder::new(&input.encoding_type)?;
        let max = self.max_keys(input.max_keys)?;
        let prefix = input.prefix.unwrap_or_default();
        let marker = input.marker.unwrap_or_default();
        let delimiter = given(input.delimiter);
        let page = self.page(&input.bucket, &prefix, delimiter.as_deref(), &marker, max)?;
        let owner = self.store.bucket(&input.bucket).map_err(from_store)?.owner;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc.apply(prefix)),
            marker: Some(enc.apply(marker)),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            // V1 clients page with NextMarker when a delimiter is used.
            next_marker: enc.opt(page.next_marker.clone().filter(|_| page.truncated)),
            contents: Some(Self::contents(&page, &enc, Some(&owner))),
            common_prefixes: Some(Self::prefixes(&page, &enc)),
            delimiter: enc.opt(delimiter),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let enc = Encoder::new(&input.encoding_type)?;
        let max = self.max_keys(input.max_keys)?;
        let prefix = input.prefix.unwrap_or_default();
        // The continuation token is the last key or prefix returned, opaque to clients.
        let after = match &input.continuation_token {
            Some(token) => TOKEN
                .decode(token)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is invalid"))?,
            None => input.start_after.clone().unwrap_or_default(),
        };
        let delimiter = given(input.delimiter);
        let page = self.page(&input.bucket, &prefix, delimiter.as_deref(), &after, max)?;
        let owner = if input.fetch_owner == Some(true) {
            Some(self.store.bucket(&input.bucket).map_err(from_store)?.owner)
        } else {
            None
        };
        let contents = Self::contents(&page, &enc, owner.as_deref());
        let common_prefixes = Self::prefixes(&page, &enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc.apply(prefix)),
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_marker.filter(|_| page.truncated).map(|m| TOKEN.encode(m)),
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            delimiter: enc.opt(delimiter),
            encoding_type: input.encoding_type,
            start_after: enc.opt(input.start_after),
            ..Default::default()
        }))
    }
}
