//! What every request gets around s3s, which does neither:
//! - a request id, in the `x-amz-request-id` header and in an error body's `RequestId`,
//!   the same, as clients (and the SDKs' error reports) expect;
//! - the refusal of a presigned URL whose `X-Amz-Expires` is outside SigV4's range, before
//!   s3s checks its signature: an edited value is then refused for what it is, not as a
//!   signature mismatch.

use futures::future::BoxFuture;
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{HttpError, HttpResponse, S3Error, s3_error};
use std::sync::atomic::{AtomicU64, Ordering};

/// SigV4's longest presigned URL validity, 7 days.
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

/// The S3 service as the listener serves it.
#[derive(Clone)]
pub(crate) struct Front {
    s3: S3Service,
}

impl Front {
    pub(crate) fn new(s3: S3Service) -> Self {
        Self { s3 }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Front {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let request_id = next_request_id();
        let refusal = presign_expiry_refusal(req.uri().query().unwrap_or(""));
        let s3 = self.s3.clone();
        Box::pin(async move {
            let mut resp = match refusal {
                Some(e) => e.to_http_response().map_err(|e| HttpError::new(Box::new(e)))?,
                None => hyper::service::Service::call(&s3, req).await?,
            };
            tag_with_request_id(&mut resp, &request_id);
            Ok(resp)
        })
    }
}

/// 16 hex digits, as AWS's: unique in this process, not guessable from another's.
fn next_request_id() -> String {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016X}", KEYS.get_or_init(std::hash::RandomState::new).hash_one(n))
}

fn tag_with_request_id(resp: &mut HttpResponse, request_id: &str) {
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amz-request-id", value);
    }
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return;
    }
    // Error bodies are small and whole (s3s serialises them at once); a streamed one is
    // left as it is.
    let Some(body) = resp.body().bytes() else { return };
    let Some(with_id) = with_request_id(&body, request_id) else { return };
    let len = with_id.len();
    *resp.body_mut() = s3s::Body::from(bytes::Bytes::from(with_id));
    if resp.headers().contains_key(http::header::CONTENT_LENGTH) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
}

/// An S3 error document with `RequestId` added, unless it has one or is not one.
fn with_request_id(body: &[u8], request_id: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.contains("<RequestId>") {
        return None;
    }
    let end = text.rfind("</Error>")?;
    Some(format!("{}<RequestId>{request_id}</RequestId>{}", &text[..end], &text[end..]).into_bytes())
}

/// The error for a presigned URL whose `X-Amz-Expires` no valid URL has (AWS's codes:
/// 400 AuthorizationQueryParametersError for a value out of range; 0 has expired when it
/// arrives, 403 AccessDenied as for any expired URL).
fn presign_expiry_refusal(query: &str) -> Option<S3Error> {
    let text = crate::access::query_param(query, "X-Amz-Expires")?;
    let refusal = |message: &'static str| {
        crate::error::custom("AuthorizationQueryParametersError", http::StatusCode::BAD_REQUEST, message.into())
    };
    match text.parse::<i64>() {
        Err(_) => Some(refusal("X-Amz-Expires should be a number")),
        Ok(secs) if secs < 0 => Some(refusal("X-Amz-Expires must be non-negative")),
        Ok(0) => Some(s3_error!(AccessDenied, "Request has expired")),
        Ok(secs) if secs > MAX_PRESIGN_SECS => {
            Some(refusal("X-Amz-Expires must be less than a week (in seconds) that is 604800"))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    #[test]
    fn request_ids_go_into_error_documents_once() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>"#;
        let tagged = String::from_utf8(with_request_id(doc, "ABC").unwrap()).unwrap();
        assert!(tagged.ends_with("<Code>NoSuchKey</Code><RequestId>ABC</RequestId></Error>"), "{tagged}");
        assert_eq!(with_request_id(tagged.as_bytes(), "DEF"), None);
        assert_eq!(with_request_id(b"<ListBucketResult/>", "ABC"), None);
        assert_ne!(next_request_id(), next_request_id());
        assert_eq!(next_request_id().len(), 16);
    }

    #[test]
    fn presign_expiries_out_of_range_are_refused() {
        let code = |q: &str| presign_expiry_refusal(q).map(|e| e.code().as_str().to_owned());
        assert_eq!(code("X-Amz-Expires=60"), None);
        assert_eq!(code("X-Amz-Expires=604800"), None);
        assert_eq!(code("list-type=2"), None);
        assert_eq!(code("X-Amz-Expires=604801").as_deref(), Some("AuthorizationQueryParametersError"));
        assert_eq!(code("X-Amz-Expires=-1").as_deref(), Some("AuthorizationQueryParametersError"));
        assert_eq!(code("X-Amz-Expires=soon").as_deref(), Some("AuthorizationQueryParametersError"));
        assert_eq!(code("X-Amz-Expires=0").as_deref(), Some(S3ErrorCode::AccessDenied.as_str()));
    }
}
