//! Store errors to S3 errors, in one place. Internal faults go on the wire as
//! `InternalError` and into the log with what happened.

use s3s::{S3Error, S3ErrorCode};
use store::StoreError;

/// An S3 error with a code s3s has no variant for.
pub(crate) fn custom(code: &'static str, status: http::StatusCode, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e
}

/// A failure reading the request body: s3s reports signature and payload-hash
/// mismatches of streaming uploads as body errors, known only by their text.
pub(crate) fn body_error(text: &str) -> S3Error {
    if text.contains("SignatureMismatch") {
        S3Error::with_message(S3ErrorCode::SignatureDoesNotMatch, "a chunk signature of the body does not match")
    } else if text.contains("Sha256Mismatch") {
        custom(
            "XAmzContentSHA256Mismatch",
            http::StatusCode::BAD_REQUEST,
            "the body does not match x-amz-content-sha256".into(),
        )
    } else {
        S3Error::with_message(S3ErrorCode::IncompleteBody, format!("the body could not be read completely: {text}"))
    }
}

pub(crate) fn from_store(e: StoreError) -> S3Error {
    use S3ErrorCode as C;
    let (code, message) = match e {
        StoreError::NoSuchBucket(ref b) => (C::NoSuchBucket, format!("bucket {b} does not exist")),
        StoreError::NoSuchKey { .. } => (C::NoSuchKey, e.to_string()),
        StoreError::NoSuchUpload(_) => (C::NoSuchUpload, e.to_string()),
        StoreError::BucketNotEmpty(_) => (C::BucketNotEmpty, e.to_string()),
        StoreError::BucketExists(_) => (C::BucketAlreadyExists, e.to_string()),
        StoreError::ObjectExists { .. } => (C::PreconditionFailed, e.to_string()),
        StoreError::EtagMismatch { .. } => (C::PreconditionFailed, e.to_string()),
        StoreError::InvalidPart { .. } => (C::InvalidPart, e.to_string()),
        StoreError::InvalidPartOrder => (C::InvalidPartOrder, e.to_string()),
        StoreError::PartTooSmall { .. } => (C::EntityTooSmall, e.to_string()),
        StoreError::InvalidRange { .. } => (C::InvalidRange, e.to_string()),
        StoreError::DigestMismatch { .. } => (C::BadDigest, e.to_string()),
        StoreError::TooLarge { .. } => (C::EntityTooLarge, e.to_string()),
        StoreError::InvalidName(_) => (C::InvalidArgument, e.to_string()),
        StoreError::Body(ref text) => return body_error(text),
        StoreError::DiskFull(_) => {
            tracing::error!(error = %e, "write refused: no space");
            return custom("InsufficientStorage", http::StatusCode::INSUFFICIENT_STORAGE, e.to_string());
        }
        _ => {
            tracing::error!(error = %e, "internal error");
            (C::InternalError, "internal error; the server log has the details".to_owned())
        }
    };
    S3Error::with_message(code, message)
}
