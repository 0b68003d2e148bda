//! What every request gets around s3s, which does neither:
//! - a request id, in the `x-amz-request-id` header and in an error body's `RequestId`,
//!   the same, as clients (and the SDKs' error reports) expect;
//! - the refusal of a presigned URL whose `X-Amz-Expires` is outside SigV4's range, before
//!   s3s checks its signature: an edited value is then refused for what it is, not as a
//!   signature mismatch;
//! - a browser form whose policy condition is not met refused as AWS does, 403
//!   AccessDenied "Invalid according to Policy", where s3s (which checks the conditions)
//!   answers 400 InvalidPolicyDocument;
//! - CORS (cors.rs): the answer to preflight OPTIONS requests, which s3s does not route and
//!   which carry no signature, and the CORS headers of requests that carry an `Origin`.

use futures::future::BoxFuture;
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{HttpError, HttpResponse, S3Error, s3_error};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use store::Store;

use crate::cors;

/// SigV4's longest presigned URL validity, 7 days.
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

/// The S3 service as the listener serves it (built by [`crate::service`]).
#[derive(Clone)]
pub struct Front {
    s3: S3Service,
    store: Arc<Store>,
    /// for the bucket of a virtual-hosted-style request
    domain: Option<String>,
}

impl Front {
    pub(crate) fn new(s3: S3Service, store: Arc<Store>, domain: Option<String>) -> Self {
        Self { s3, store, domain }
    }

    /// The bucket a request addresses, as s3s reads it: from the host name under the
    /// configured domain, else from the path's first segment.
    fn bucket_of<B>(&self, req: &http::Request<B>) -> Option<String> {
        let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().host());
        if let (Some(domain), Some(host)) = (&self.domain, host) {
            let host = host.to_ascii_lowercase();
            if let Some(bucket) = host.strip_suffix(domain.as_str()).and_then(|h| h.strip_suffix('.')) {
                return Some(bucket.to_owned());
            }
        }
        let first = req.uri().path().trim_start_matches('/').split('/').next()?;
        let bucket = percent_encoding::percent_decode_str(first).decode_utf8().ok()?;
        (!bucket.is_empty()).then(|| bucket.into_owned())
    }

    /// The bucket's CORS rules; none for a missing bucket or on a failure to read them.
    fn cors_rules(&self, bucket: Option<&str>) -> Vec<store::CorsRule> {
        let Some(bucket) = bucket else { return Vec::new() };
        match self.store.bucket_settings(bucket) {
            Ok(settings) => settings.cors,
            Err(e) => {
                tracing::error!(error = %e, bucket, "cannot read the bucket's CORS rules");
                Vec::new()
            }
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Front {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let request_id = next_request_id();
        let front = self.clone();
        Box::pin(async move {
            let to_http = |e: S3Error| e.to_http_response().map_err(|e| HttpError::new(Box::new(e)));
            let bucket = front.bucket_of(&req);
            if req.method() == http::Method::OPTIONS {
                let rules = front.cors_rules(bucket.as_deref());
                let mut resp = cors::preflight(req.headers(), &rules).or_else(to_http)?;
                tag_with_request_id(&mut resp, &request_id);
                return Ok(resp);
            }
            let origin = req.headers().get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let method = req.method().clone();
            let mut resp = match presign_expiry_refusal(req.uri().query().unwrap_or("")) {
                Some(e) => to_http(e)?,
                None => hyper::service::Service::call(&front.s3, req).await?,
            };
            if method == http::Method::POST && resp.status() == http::StatusCode::BAD_REQUEST {
                policy_condition_refusal(&mut resp);
            }
            if let Some(origin) = origin {
                let rules = front.cors_rules(bucket.as_deref());
                let ask = cors::CorsAsk { origin: &origin, method: method.as_str(), headers: Vec::new() };
                cors::add_headers(&mut resp, &rules, &ask, false);
            }
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

/// Turns s3s's refusal of a form whose policy condition failed (400 InvalidPolicyDocument,
/// "Policy condition ...") into AWS's: 403 AccessDenied, "Invalid according to Policy:
/// Policy Condition failed". A policy that does not parse stays InvalidPolicyDocument.
fn policy_condition_refusal(resp: &mut HttpResponse) {
    let Some(body) = resp.body().bytes() else { return };
    let Ok(text) = std::str::from_utf8(&body) else { return };
    if !text.contains("<Code>InvalidPolicyDocument</Code>") || !text.contains("<Message>Policy condition") {
        return;
    }
    let detail = text
        .split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map_or("", |(message, _)| message);
    let e = s3_error!(AccessDenied, "Invalid according to Policy: {detail}");
    if let Ok(mut refused) = e.to_http_response() {
        refused.headers_mut().extend(
            resp.headers()
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("x-amz-"))
                .map(|(n, v)| (n.clone(), v.clone())),
        );
        *resp = refused;
    }
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
