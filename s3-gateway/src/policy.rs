//! Bucket policies: Put/Get/DeleteBucketPolicy (owner only), and what a policy lets in or
//! keeps out (access.rs applies it).
//!
//! What a policy may say, a subset of AWS's, refused as MalformedPolicy otherwise:
//! - `Version` (2012-10-17 or 2008-10-17) and `Id`, optional; `Statement`, one or a list;
//! - per statement `Sid`, `Effect` (`Allow` or `Deny`), `Principal`, `Action`, `Resource`
//!   (no `NotPrincipal`, `NotAction`, `NotResource` or `Condition`);
//! - `Principal`: `"*"` (anyone, signed or not), or `{"AWS": ...}` with one or a list of
//!   `"*"`, `arn:aws:iam::<project>:root` or the bare project name: a project of this site
//!   stands for the AWS account (all its keys);
//! - `Action`: `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject`, `s3:ListBucket`, or a
//!   pattern with `*`/`?` that names at least one of them (`s3:*`, `s3:Get*`);
//! - `Resource`: `arn:aws:s3:::<this bucket>` and `arn:aws:s3:::<this bucket>/<key pattern>`
//!   with `*`/`?`; every action must apply to one of the statement's resources.
//!
//! The actions of requests: GetObject, HeadObject and GetObjectAttributes are
//! `s3:GetObject`; PutObject, POST Object, CopyObject (its target) and the multipart
//! operations `s3:PutObject`; DeleteObject and each key of DeleteObjects `s3:DeleteObject`;
//! ListObjects(V2), HeadBucket and ListMultipartUploads `s3:ListBucket`. Any other operation
//! is `s3:<operation>`, which only `s3:*` names: a Deny of `s3:*` keeps everyone out of
//! everything but the owner's management of the policy itself, as in AWS.
//!
//! Evaluation, as AWS's: an explicit Deny that matches wins over everything (the owner's
//! rights, grants, ACLs); else what the grants and ACLs let in; else an Allow that matches.
//! An Allow opens to anonymous requests only `s3:GetObject` and `s3:ListBucket`: anonymous
//! writes stay refused whatever a policy says.

use crate::error::from_store;
use crate::{Gateway, access};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use serde_json::Value;

/// AWS's bound on a bucket policy.
pub(crate) const MAX_POLICY_BYTES: usize = 20 * 1024;

/// The actions a policy may name.
const ACTIONS: [&str; 4] = ["s3:getobject", "s3:putobject", "s3:deleteobject", "s3:listbucket"];

const ARN_PREFIX: &str = "arn:aws:s3:::";

/// A parsed bucket policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    /// None: anyone
    principals: Option<Vec<String>>,
    /// lower-case patterns
    actions: Vec<String>,
    /// patterns over `bucket` or `bucket/key`
    resources: Vec<String>,
}

/// What a request asks of a policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// the signing project; None for anonymous
    pub(crate) principal: Option<&'a str>,
    /// `s3:...`, lower-case
    pub(crate) action: &'a str,
    /// the object key for object actions; `Some(None)` when the key is not known yet (a
    /// form upload's, DeleteObjects'); None for bucket actions
    pub(crate) key: Option<Option<&'a str>>,
}

fn malformed(message: impl std::fmt::Display) -> s3s::S3Error {
    s3_error!(MalformedPolicy, "{message}")
}

/// One string or a list of them.
fn strings(value: &Value, what: &str) -> S3Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| malformed(format!("{what} must be strings"))))
            .collect(),
        _ => Err(malformed(format!("{what} must be a string or a non-empty list of strings"))),
    }
}

/// `*` any run of characters, `?` any one.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn is_object_action(action: &str) -> bool {
    action != "s3:listbucket"
}

impl Policy {
    /// Parses and checks `document` as a policy of `bucket`.
    pub(crate) fn parse(document: &str, bucket: &str) -> S3Result<Self> {
        let root: Value = serde_json::from_str(document).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let Value::Object(root) = root else { return Err(malformed("the policy must be a JSON object")) };
        let mut statements = None;
        for (name, value) in &root {
            match name.as_str() {
                "Version" => match value.as_str() {
                    Some("2012-10-17" | "2008-10-17") => {}
                    _ => return Err(malformed("Version must be 2012-10-17 or 2008-10-17")),
                },
                "Id" if value.is_string() => {}
                "Statement" => statements = Some(value),
                other => return Err(malformed(format!("unsupported policy element {other:?}"))),
            }
        }
        let list = match statements {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(malformed("Statement must be a statement or a non-empty list of them")),
        };
        let statements = list.into_iter().map(|s| Statement::parse(s, bucket)).collect::<S3Result<_>>()?;
        Ok(Self { statements })
    }

    fn matching<'a>(&'a self, ask: &'a Ask<'_>, bucket: &'a str) -> impl Iterator<Item = &'a Statement> {
        self.statements.iter().filter(move |s| s.covers(ask, bucket))
    }

    /// Whether a Deny statement matches. A key not known yet matches none: the operation
    /// asks again for each key.
    pub(crate) fn denies(&self, ask: &Ask<'_>, bucket: &str) -> bool {
        if matches!(ask.key, Some(None)) {
            return false;
        }
        self.matching(ask, bucket).any(|s| !s.allow)
    }

    /// Whether an Allow statement matches. A key not known yet matches any object
    /// resource: the operation asks again for each key.
    pub(crate) fn allows(&self, ask: &Ask<'_>, bucket: &str) -> bool {
        if ask.principal.is_none() && !matches!(ask.action, "s3:getobject" | "s3:listbucket") {
            return false;
        }
        self.matching(ask, bucket).any(|s| s.allow)
    }
}

impl Statement {
    fn parse(value: &Value, bucket: &str) -> S3Result<Self> {
        let Value::Object(fields) = value else { return Err(malformed("a statement must be a JSON object")) };
        let (mut effect, mut principal, mut actions, mut resources) = (None, None, None, None);
        for (name, value) in fields {
            match name.as_str() {
                "Sid" if value.is_string() => {}
                "Effect" => effect = Some(value),
                "Principal" => principal = Some(value),
                "Action" => actions = Some(strings(value, "Action")?),
                "Resource" => resources = Some(strings(value, "Resource")?),
                other => return Err(malformed(format!("unsupported statement element {other:?}"))),
            }
        }
        let allow = match effect.and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(malformed("Effect must be Allow or Deny")),
        };
        let principals = match principal {
            Some(Value::String(s)) if s == "*" => None,
            Some(Value::Object(map)) if map.len() == 1 && map.contains_key("AWS") => {
                let mut projects = Vec::new();
                let mut anyone = false;
                for entry in strings(&map["AWS"], "Principal AWS")? {
                    if entry == "*" {
                        anyone = true;
                    } else if let Some(project) =
                        entry.strip_prefix("arn:aws:iam::").and_then(|rest| rest.strip_suffix(":root"))
                        && valid_project(project)
                    {
                        projects.push(project.to_owned());
                    } else if valid_project(&entry) {
                        projects.push(entry);
                    } else {
                        return Err(malformed(format!(
                            "invalid principal {entry:?}: give \"*\", a project or arn:aws:iam::<project>:root"
                        )));
                    }
                }
                (!anyone).then_some(projects)
            }
            Some(_) => return Err(malformed("Principal must be \"*\" or {\"AWS\": ...}")),
            None => return Err(malformed("a statement must name its Principal")),
        };
        let actions = actions.ok_or_else(|| malformed("a statement must name its Action"))?;
        let actions: Vec<String> = actions.into_iter().map(|a| a.to_ascii_lowercase()).collect();
        for action in &actions {
            if !ACTIONS.iter().any(|known| wildcard_match(action, known)) {
                return Err(malformed(format!(
                    "unsupported action {action:?}: s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket \
                     or a pattern of them"
                )));
            }
        }
        let resources = resources.ok_or_else(|| malformed("a statement must name its Resource"))?;
        let mut patterns = Vec::new();
        for resource in resources {
            let Some(rest) = resource.strip_prefix(ARN_PREFIX) else {
                return Err(malformed(format!("invalid resource {resource:?}: give arn:aws:s3:::{bucket}[/...]")));
            };
            let named = rest.split('/').next().unwrap_or("");
            if named != bucket {
                return Err(malformed(format!("resource {resource:?} is not in bucket {bucket}")));
            }
            patterns.push(rest.to_owned());
        }
        // Every action must apply to one of the resources, as AWS checks.
        for action in &actions {
            let applies = ACTIONS.iter().filter(|known| wildcard_match(action, known)).any(|known| {
                patterns.iter().any(|p| if is_object_action(known) { p.contains('/') } else { !p.contains('/') })
            });
            if !applies {
                return Err(malformed(format!("action {action:?} does not apply to any resource in the statement")));
            }
        }
        Ok(Self { allow, principals, actions, resources: patterns })
    }

    fn covers(&self, ask: &Ask<'_>, bucket: &str) -> bool {
        let principal_ok = match (&self.principals, ask.principal) {
            (None, _) => true,
            (Some(projects), Some(p)) => projects.iter().any(|x| x == p),
            (Some(_), None) => false,
        };
        if !principal_ok || !self.actions.iter().any(|a| wildcard_match(a, ask.action)) {
            return false;
        }
        match ask.key {
            None => self.resources.iter().any(|r| wildcard_match(r, bucket)),
            Some(Some(key)) => {
                let resource = format!("{bucket}/{key}");
                self.resources.iter().any(|r| wildcard_match(r, &resource))
            }
            Some(None) => self.resources.iter().any(|r| r.contains('/')),
        }
    }
}

/// What a policy's principal may name as a project (as keys' projects are named).
fn valid_project(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The policy action of an operation, and whether it acts on an object.
pub(crate) fn action_of(op: &str) -> (String, bool) {
    let object = |a: &str| (a.to_owned(), true);
    match op {
        "GetObject" | "HeadObject" | "GetObjectAttributes" => object("s3:getobject"),
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => object("s3:putobject"),
        "DeleteObject" | "DeleteObjects" => object("s3:deleteobject"),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" | "ListMultipartUploads" => ("s3:listbucket".into(), false),
        "GetObjectAcl" | "PutObjectAcl" => (format!("s3:{}", op.to_ascii_lowercase()), true),
        other => (format!("s3:{}", other.to_ascii_lowercase()), false),
    }
}

/// The policy of a request that must still be asked about keys known only to the
/// operation (POST Object's, DeleteObjects'); handed over in the request's extensions.
#[derive(Clone)]
pub(crate) struct PolicyGate {
    pub(crate) policy: std::sync::Arc<Policy>,
    pub(crate) bucket: String,
    pub(crate) principal: Option<String>,
    /// the request came in through the policy's Allow alone: each key needs one
    pub(crate) needs_allow: bool,
}

impl PolicyGate {
    /// Refuses `action` on `key` if the policy denies it, or lets it in only through an
    /// Allow that does not cover it.
    pub(crate) fn check_key(&self, action: &str, key: &str) -> S3Result<()> {
        let ask = Ask { principal: self.principal.as_deref(), action, key: Some(Some(key)) };
        if self.policy.denies(&ask, &self.bucket) {
            return Err(s3_error!(AccessDenied, "the bucket policy denies {action} on {key}"));
        }
        if self.needs_allow && !self.policy.allows(&ask, &self.bucket) {
            return Err(s3_error!(AccessDenied, "no access to {key}"));
        }
        Ok(())
    }
}

/// The gate of `req`, if its bucket has a policy, and the check of `key` with it.
pub(crate) fn check_key<T>(req: &S3Request<T>, action: &str, key: &str) -> S3Result<()> {
    match req.extensions.get::<PolicyGate>() {
        Some(gate) => gate.check_key(action, key),
        None => Ok(()),
    }
}

impl Gateway {
    pub(crate) async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let pre = access::same_bucket(&req);
        let input = req.input;
        self.store.bucket(&input.bucket).map_err(from_store)?;
        if input.policy.len() > MAX_POLICY_BYTES {
            return Err(malformed(format!("the policy is over the limit of {MAX_POLICY_BYTES} bytes")));
        }
        Policy::parse(&input.policy, &input.bucket)?;
        self.store.set_bucket_policy(&input.bucket, Some(input.policy), &pre).await.map_err(from_store)?;
        Ok(S3Response::new(PutBucketPolicyOutput {}))
    }

    pub(crate) async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let bucket = &req.input.bucket;
        self.store.bucket(bucket).map_err(from_store)?;
        match self.store.bucket_policy(bucket).map_err(from_store)? {
            Some(policy) => Ok(S3Response::new(GetBucketPolicyOutput { policy: Some(policy) })),
            None => Err(s3_error!(NoSuchBucketPolicy, "bucket {bucket} has no policy")),
        }
    }

    pub(crate) async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        let pre = access::same_bucket(&req);
        self.store.set_bucket_policy(&req.input.bucket, None, &pre).await.map_err(from_store)?;
        Ok(S3Response::new(DeleteBucketPolicyOutput {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("b/data/*", "b/data/x/y"));
        assert!(wildcard_match("s3:get*", "s3:getobject"));
        assert!(wildcard_match("b/?.csv", "b/a.csv"));
        assert!(!wildcard_match("b/data/*", "b/other"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("b", "b/x"));
    }

    #[test]
    fn policies_parse_and_refuse_what_is_not_supported() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::other:root","third"]},
            "Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::b","arn:aws:s3:::b/pub/*"]}]}"#;
        let policy = Policy::parse(ok, "b").unwrap();
        let ask = |p: Option<&'static str>, a: &'static str, k: Option<Option<&'static str>>| Ask {
            principal: p,
            action: a,
            key: k,
        };
        assert!(policy.allows(&ask(Some("other"), "s3:getobject", Some(Some("pub/x"))), "b"));
        assert!(policy.allows(&ask(Some("third"), "s3:listbucket", None), "b"));
        assert!(!policy.allows(&ask(Some("other"), "s3:getobject", Some(Some("priv/x"))), "b"));
        assert!(!policy.allows(&ask(None, "s3:getobject", Some(Some("pub/x"))), "b"));
        assert!(!policy.allows(&ask(Some("other"), "s3:putobject", Some(Some("pub/x"))), "b"));
        for bad in [
            "not json",
            r#"{"Statement":[]}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::c/*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:PutBucketAcl","Resource":"arn:aws:s3:::b"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b"}}"#,
            r#"{"Statement":{"Effect":"Maybe","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{}}}"#,
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123:user/x"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#,
        ] {
            let e = Policy::parse(bad, "b").unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::MalformedPolicy, "{bad}");
        }
    }
}
