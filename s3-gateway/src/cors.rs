//! CORS: PutBucketCors, GetBucketCors, DeleteBucketCors, and the rules applied, as S3
//! applies them, to preflight OPTIONS requests and to requests that carry an `Origin`
//! (both in front.rs: s3s routes no OPTIONS, and adds no headers of its own).

use crate::error::{custom, from_store};
use crate::{Gateway, access};
use http::HeaderValue;
use s3s::dto::*;
use s3s::{HttpResponse, S3Request, S3Response, S3Result, s3_error};
use store::CorsRule;

/// S3's limits on a CORS configuration.
const MAX_RULES: usize = 100;
const MAX_CONFIGURATION_BYTES: usize = 64 << 10;
const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

impl Gateway {
    pub(crate) async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let pre = access::same_bucket(&req);
        let declared_len = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let rules = checked_rules(&req.input.cors_configuration.cors_rules, declared_len)?;
        self.store.set_bucket_cors(&req.input.bucket, rules, &pre).await.map_err(from_store)?;
        Ok(S3Response::new(PutBucketCorsOutput {}))
    }

    pub(crate) async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let bucket = &req.input.bucket;
        self.store.bucket(bucket).map_err(from_store)?;
        let rules = self.store.bucket_settings(bucket).map_err(from_store)?.cors;
        if rules.is_empty() {
            return Err(s3_error!(NoSuchCORSConfiguration, "bucket {bucket} has no CORS configuration"));
        }
        let rules = rules
            .into_iter()
            .map(|r| CORSRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: (!r.allowed_headers.is_empty()).then_some(r.allowed_headers),
                expose_headers: (!r.expose_headers.is_empty()).then_some(r.expose_headers),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        Ok(S3Response::new(GetBucketCorsOutput { cors_rules: Some(rules) }))
    }

    pub(crate) async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        let pre = access::same_bucket(&req);
        self.store.set_bucket_cors(&req.input.bucket, Vec::new(), &pre).await.map_err(from_store)?;
        Ok(S3Response::new(DeleteBucketCorsOutput {}))
    }
}

/// The rules to store, refused (with S3's messages) unless S3 would accept them.
fn checked_rules(rules: &[CORSRule], declared_len: usize) -> S3Result<Vec<CorsRule>> {
    if rules.is_empty() {
        return Err(s3_error!(MalformedXML, "a CORS configuration needs at least one CORSRule"));
    }
    if rules.len() > MAX_RULES {
        return Err(s3_error!(
            InvalidRequest,
            "a CORS configuration has at most {MAX_RULES} rules, not {}",
            rules.len()
        ));
    }
    let text_len: usize = rules
        .iter()
        .flat_map(|r| {
            let lists = [&r.allowed_origins, &r.allowed_methods];
            let optional = [&r.allowed_headers, &r.expose_headers].into_iter().flatten();
            lists.into_iter().chain(optional).flatten().chain(&r.id)
        })
        .map(String::len)
        .sum();
    if declared_len.max(text_len) > MAX_CONFIGURATION_BYTES {
        return Err(s3_error!(InvalidRequest, "a CORS configuration is at most {MAX_CONFIGURATION_BYTES} bytes"));
    }
    let one_wildcard = |what: &str, values: &[String]| match values.iter().find(|v| v.matches('*').count() > 1) {
        Some(v) => Err(s3_error!(InvalidRequest, "{what} \"{v}\" can not have more than one wildcard.")),
        None => Ok(()),
    };
    let mut checked = Vec::with_capacity(rules.len());
    for rule in rules {
        if rule.allowed_methods.is_empty() || rule.allowed_origins.is_empty() {
            return Err(s3_error!(MalformedXML, "each CORSRule needs an AllowedMethod and an AllowedOrigin"));
        }
        if let Some(method) = rule.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(s3_error!(
                InvalidRequest,
                "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
            ));
        }
        one_wildcard("AllowedOrigin", &rule.allowed_origins)?;
        let allowed_headers = rule.allowed_headers.clone().unwrap_or_default();
        one_wildcard("AllowedHeader", &allowed_headers)?;
        if rule.max_age_seconds.is_some_and(|s| s < 0) {
            return Err(s3_error!(MalformedXML, "MaxAgeSeconds cannot be negative"));
        }
        if rule.id.as_ref().is_some_and(|id| id.len() > 255) {
            return Err(s3_error!(InvalidRequest, "a CORSRule ID is at most 255 characters"));
        }
        checked.push(CorsRule {
            id: rule.id.clone(),
            allowed_origins: rule.allowed_origins.clone(),
            allowed_methods: rule.allowed_methods.clone(),
            allowed_headers,
            expose_headers: rule.expose_headers.clone().unwrap_or_default(),
            max_age_seconds: rule.max_age_seconds,
        });
    }
    Ok(checked)
}

/// Whether `value` matches `pattern`, which holds at most one `*` (any run of characters).
fn glob_matches(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len() && value.starts_with(head) && value.ends_with(tail)
        }
    }
}

/// What a browser asks, from a preflight or from the request itself.
pub(crate) struct CorsAsk<'a> {
    pub(crate) origin: &'a str,
    pub(crate) method: &'a str,
    /// request headers a preflight asks for, lower-case
    pub(crate) headers: Vec<String>,
}

/// The first rule that allows `ask`, as S3 picks it.
fn matching_rule<'r>(rules: &'r [CorsRule], ask: &CorsAsk<'_>) -> Option<(&'r CorsRule, bool)> {
    rules.iter().find_map(|rule| {
        let origin = rule.allowed_origins.iter().find(|o| glob_matches(o, ask.origin))?;
        rule.allowed_methods.iter().any(|m| m == ask.method).then_some(())?;
        let header_allowed = |h: &String| rule.allowed_headers.iter().any(|a| glob_matches(&a.to_ascii_lowercase(), h));
        ask.headers.iter().all(header_allowed).then_some((rule, origin == "*"))
    })
}

/// Adds the headers of the rule of `rules` that allows `ask` to `resp`; false when none does.
/// A preflight's answer adds the request headers allowed and the time to keep it.
pub(crate) fn add_headers(resp: &mut HttpResponse, rules: &[CorsRule], ask: &CorsAsk<'_>, preflight: bool) -> bool {
    let Some((rule, any_origin)) = matching_rule(rules, ask) else { return false };
    let headers = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    if any_origin {
        set("access-control-allow-origin", "*".into());
    } else {
        set("access-control-allow-origin", ask.origin.into());
        // Cookies and authorization may go with a request to a named origin (as S3 says).
        set("access-control-allow-credentials", "true".into());
    }
    set("access-control-allow-methods", rule.allowed_methods.join(", "));
    if !rule.expose_headers.is_empty() {
        set("access-control-expose-headers", rule.expose_headers.join(", "));
    }
    if preflight {
        if !ask.headers.is_empty() {
            set("access-control-allow-headers", ask.headers.join(", "));
        }
        if let Some(secs) = rule.max_age_seconds {
            set("access-control-max-age", secs.to_string());
        }
    }
    set("vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into());
    true
}

/// The answer to a preflight (OPTIONS) request for `bucket`, whose rules are `rules`.
pub(crate) fn preflight(headers: &http::HeaderMap, rules: &[CorsRule]) -> S3Result<HttpResponse> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = text("origin") else {
        return Err(custom(
            "BadRequest",
            http::StatusCode::BAD_REQUEST,
            "Insufficient information. Origin request header needed.".into(),
        ));
    };
    let Some(method) = text("access-control-request-method").filter(|m| METHODS.contains(m)) else {
        return Err(custom(
            "BadRequest",
            http::StatusCode::BAD_REQUEST,
            "Invalid Access-Control-Request-Method: give one of GET, PUT, HEAD, POST, DELETE".into(),
        ));
    };
    let forbidden = |message: &str| custom("AccessForbidden", http::StatusCode::FORBIDDEN, message.into());
    if rules.is_empty() {
        return Err(forbidden("CORSResponse: CORS is not enabled for this bucket."));
    }
    let requested = text("access-control-request-headers").unwrap_or("");
    let ask = CorsAsk {
        origin,
        method,
        headers: requested.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
    };
    let mut resp = HttpResponse::new(s3s::Body::empty());
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
    if add_headers(&mut resp, rules, &ask, true) {
        Ok(resp)
    } else {
        Err(forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the evaluation of Origin, \
             request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted \
             by the resource's CORS spec.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        CorsRule {
            allowed_origins: strings(origins),
            allowed_methods: strings(methods),
            allowed_headers: strings(headers),
            ..CorsRule::default()
        }
    }

    #[test]
    fn rules_match_by_origin_method_and_every_requested_header() {
        let rules = [rule(&["https://*.example.org"], &["GET"], &["x-amz-*"]), rule(&["*"], &["PUT"], &["*"])];
        let ask = |origin, method, headers: &[&str]| CorsAsk {
            origin,
            method,
            headers: headers.iter().map(|s| s.to_string()).collect(),
        };
        let found = |a: CorsAsk<'_>| matching_rule(&rules, &a).map(|(r, any)| (r.allowed_methods[0].clone(), any));
        assert_eq!(found(ask("https://a.example.org", "GET", &["x-amz-date"])), Some(("GET".into(), false)));
        assert_eq!(found(ask("https://a.example.org", "GET", &["x-amz-date", "range"])), None);
        assert_eq!(found(ask("https://example.org", "GET", &[])), None, "*. needs a subdomain");
        assert_eq!(found(ask("https://elsewhere", "PUT", &["content-type"])), Some(("PUT".into(), true)));
        assert_eq!(found(ask("https://elsewhere", "DELETE", &[])), None);
        assert!(glob_matches("ab*ba", "aba*ba") && !glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn configurations_are_bounded_and_checked() {
        let s3_rule = |methods: &[&str], origins: &[&str]| CORSRule {
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let code =
            |rules: &[CORSRule], len| checked_rules(rules, len).map(drop).map_err(|e| e.code().as_str().to_owned());
        assert_eq!(code(&[s3_rule(&["GET"], &["*"])], 100), Ok(()));
        assert_eq!(code(&[], 0).unwrap_err(), "MalformedXML");
        assert_eq!(code(&[s3_rule(&["PATCH"], &["*"])], 0).unwrap_err(), "InvalidRequest");
        assert_eq!(code(&[s3_rule(&["GET"], &["https://*.*.org"])], 0).unwrap_err(), "InvalidRequest");
        assert_eq!(code(&vec![s3_rule(&["GET"], &["*"]); 101], 0).unwrap_err(), "InvalidRequest");
        assert_eq!(code(&[s3_rule(&["GET"], &["*"])], 65 << 10).unwrap_err(), "InvalidRequest");
        let long_origin = format!("https://{}", "a".repeat(65 << 10));
        assert_eq!(code(&[s3_rule(&["GET"], &[&long_origin])], 0).unwrap_err(), "InvalidRequest");
    }
}
