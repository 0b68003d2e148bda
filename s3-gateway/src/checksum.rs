//! Content-MD5 and `x-amz-checksum-*`: parsed from headers and trailers, verified by
//! the store's digests, returned base64-encoded as S3 clients expect.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hw_offload::ChecksumAlgo;
use s3s::dto::{ChecksumAlgorithm, ChecksumType};
use s3s::{S3Error, S3Result, s3_error};

pub(crate) fn algo_from_s3(a: &ChecksumAlgorithm) -> S3Result<ChecksumAlgo> {
    Ok(match a.as_str().to_ascii_uppercase().as_str() {
        "CRC32" => ChecksumAlgo::Crc32,
        "CRC32C" => ChecksumAlgo::Crc32c,
        "CRC64NVME" => ChecksumAlgo::Crc64Nvme,
        "SHA1" => ChecksumAlgo::Sha1,
        "SHA256" => ChecksumAlgo::Sha256,
        other => return Err(s3_error!(InvalidArgument, "unknown checksum algorithm {other}")),
    })
}

fn expected_len(a: ChecksumAlgo) -> usize {
    match a {
        ChecksumAlgo::Crc32 | ChecksumAlgo::Crc32c => 4,
        ChecksumAlgo::Crc64Nvme => 8,
        ChecksumAlgo::Sha1 => 20,
        _ => 32,
    }
}

fn decode(a: ChecksumAlgo, value: &str) -> S3Result<Vec<u8>> {
    match B64.decode(value.trim()) {
        Ok(raw) if raw.len() == expected_len(a) => Ok(raw),
        _ => Err(s3_error!(
            InvalidRequest,
            "value for x-amz-checksum-{} is not a valid base64 {}-byte checksum",
            a.name(),
            expected_len(a)
        )),
    }
}

/// Content-MD5 (base64 of 16 bytes).
pub(crate) fn content_md5(value: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(value) = value else { return Ok(None) };
    let raw = B64.decode(value.trim()).ok().and_then(|r| <[u8; 16]>::try_from(r).ok());
    raw.map(Some).ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes"))
}

/// The five `checksum_*` fields S3 inputs and outputs carry, in [`ChecksumAlgo::ALL`] order.
pub(crate) type Fields = [Option<String>; 5];

/// Checksums the client declared in header fields.
pub(crate) fn from_fields(fields: [&Option<String>; 5]) -> S3Result<Vec<(ChecksumAlgo, Vec<u8>)>> {
    let mut out = Vec::new();
    for (algo, value) in ChecksumAlgo::ALL.into_iter().zip(fields) {
        if let Some(v) = value {
            out.push((algo, decode(algo, v)?));
        }
    }
    Ok(out)
}

/// Checksums sent as aws-chunked trailers.
pub(crate) fn from_trailers(trailers: Option<&http::HeaderMap>) -> S3Result<Vec<(ChecksumAlgo, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(headers) = trailers else { return Ok(out) };
    for algo in ChecksumAlgo::ALL {
        if let Some(v) = headers.get(format!("x-amz-checksum-{}", algo.name())) {
            let v = v.to_str().map_err(|_| s3_error!(InvalidRequest, "checksum trailer is not text"))?;
            out.push((algo, decode(algo, v)?));
        }
    }
    Ok(out)
}

/// Output fields for stored checksums; `parts` > 0 marks a composite (multipart) value.
pub(crate) fn to_fields(checksums: &[(ChecksumAlgo, Vec<u8>)], parts: usize) -> (Fields, Option<ChecksumType>) {
    let mut fields: Fields = Default::default();
    for (algo, raw) in checksums {
        if let Some(i) = ChecksumAlgo::ALL.iter().position(|a| a == algo) {
            let mut v = B64.encode(raw);
            if parts > 0 {
                v.push_str(&format!("-{parts}"));
            }
            fields[i] = Some(v);
        }
    }
    let kind = (!checksums.is_empty()).then(|| {
        ChecksumType::from_static(if parts > 0 { ChecksumType::COMPOSITE } else { ChecksumType::FULL_OBJECT })
    });
    (fields, kind)
}

/// The mismatch error S3 clients expect.
pub(crate) fn mismatch(algo: &str) -> S3Error {
    s3_error!(BadDigest, "the {algo} checksum of the body does not match the one sent")
}
