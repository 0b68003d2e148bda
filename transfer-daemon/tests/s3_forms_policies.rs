//! Browser form uploads (POST Object with a SigV4-signed policy) and bucket policies,
//! against the real `clusster` binary. Forms are built and signed here and posted as
//! multipart/form-data with reqwest; everything else goes through aws-sdk-s3. Every refusal
//! keeps its S3 error and leaves what is stored as it was.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use reqwest::StatusCode;
use std::time::{SystemTime, UNIX_EPOCH};
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

mod common;
use common::s3_client as client;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<no code>").to_owned()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// (year, month, day, hour, minute, second) in UTC.
fn utc(time: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rest) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// A signed form: its fields in order (the file goes last) and the file.
struct Form {
    fields: Vec<(String, String)>,
    file: Vec<u8>,
}

/// A form of the key `id`/`secret` whose policy has `conditions` (JSON values, without the
/// signing fields' conditions, which are added) and expires at `expiration`; `fields` are
/// the form's own fields.
fn signed_form(
    id: &str,
    secret: &str,
    expiration: &str,
    conditions: &[&str],
    fields: &[(&str, &str)],
    file: &[u8],
) -> Form {
    let now = SystemTime::now();
    let (y, mo, d, h, mi, s) = utc(now);
    let date = format!("{y:04}{mo:02}{d:02}");
    let amz_date = format!("{date}T{h:02}{mi:02}{s:02}Z");
    let credential = format!("{id}/{date}/us-east-1/s3/aws4_request");
    let mut all: Vec<String> = conditions.iter().map(|c| c.to_string()).collect();
    all.push(r#"{"x-amz-algorithm": "AWS4-HMAC-SHA256"}"#.into());
    all.push(format!(r#"{{"x-amz-credential": "{credential}"}}"#));
    all.push(format!(r#"{{"x-amz-date": "{amz_date}"}}"#));
    let policy = format!(r#"{{"expiration": "{expiration}", "conditions": [{}]}}"#, all.join(", "));
    let policy = base64(policy.as_bytes());
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, now, "us-east-1", "s3");
    let signature = aws_sigv4::sign::v4::calculate_signature(key, policy.as_bytes());
    let mut form: Vec<(String, String)> = fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    form.push(("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()));
    form.push(("x-amz-credential".into(), credential));
    form.push(("x-amz-date".into(), amz_date));
    form.push(("policy".into(), policy));
    form.push(("x-amz-signature".into(), signature));
    Form { fields: form, file: file.to_vec() }
}

impl Form {
    fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.insert(0, (name.to_owned(), value.to_owned())),
        }
    }

    fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| n != name);
    }
}

/// Posts `form` to `bucket`: status, Location header and body.
async fn post(daemon: &Daemon, bucket: &str, form: &Form) -> (StatusCode, Option<String>, String) {
    let boundary = "----clussterFormBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in &form.fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload.txt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&form.file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = http
        .post(format!("{}/{bucket}", daemon.s3_url()))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), location, resp.text().await.unwrap())
}

async fn keys(c: &Client, bucket: &str) -> Vec<String> {
    let listed = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    listed.contents().iter().map(|o| o.key().unwrap().to_owned()).collect()
}

async fn body_of(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let got = c.get_object().bucket(bucket).key(key).send().await.unwrap();
    got.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn put(c: &Client, bucket: &str, key: &str, body: &str) {
    c.put_object().bucket(bucket).key(key).body(ByteStream::from(body.as_bytes().to_vec())).send().await.unwrap();
}

const LATER: &str = "2099-12-31T00:00:00.000Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_uploads_store_only_what_their_signed_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (lab_key, other_key) = (daemon.create_key(BIN, "lab"), daemon.create_key(BIN, "other"));
    let lab = client(&daemon, &lab_key.0, &lab_key.1);
    lab.create_bucket().bucket("forms").send().await.unwrap();

    let conditions = [
        r#"{"bucket": "forms"}"#,
        r#"["starts-with", "$key", "uploads/"]"#,
        r#"["content-length-range", 1, 100]"#,
        r#"{"success_action_status": "201"}"#,
        r#"["starts-with", "$Content-Type", "text/"]"#,
        r#"{"x-amz-meta-owner": "alice"}"#,
    ];
    let fields = [
        ("key", "uploads/a.txt"),
        ("success_action_status", "201"),
        ("Content-Type", "text/plain"),
        ("x-amz-meta-owner", "alice"),
    ];
    let form = |file: &[u8]| signed_form(&lab_key.0, &lab_key.1, LATER, &conditions, &fields, file);

    // A form that meets its policy: stored with its type and metadata, 201 with the XML.
    let (status, _, body) = post(&daemon, "forms", &form(b"hello form")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.contains("<Key>uploads/a.txt</Key>") && body.contains("<Bucket>forms</Bucket>"), "{body}");
    assert_eq!(body_of(&lab, "forms", "uploads/a.txt").await, b"hello form");
    let head = lab.head_object().bucket("forms").key("uploads/a.txt").send().await.unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.metadata().unwrap().get("owner").map(String::as_str), Some("alice"));

    // success_action_status 200 and 204 (the default) answer with no body.
    for (status_field, expect) in [("200", StatusCode::OK), ("204", StatusCode::NO_CONTENT)] {
        let cond = format!(r#"{{"success_action_status": "{status_field}"}}"#);
        let one = signed_form(
            &lab_key.0,
            &lab_key.1,
            LATER,
            &[r#"{"bucket": "forms"}"#, r#"["starts-with", "$key", "uploads/"]"#, &cond],
            &[("key", &format!("uploads/s{status_field}")), ("success_action_status", status_field)],
            b"x",
        );
        let (status, _, body) = post(&daemon, "forms", &one).await;
        assert_eq!(status, expect, "{body}");
    }
    // success_action_redirect: 303 to it, with bucket, key and ETag.
    let redirect = signed_form(
        &lab_key.0,
        &lab_key.1,
        LATER,
        &[
            r#"{"bucket": "forms"}"#,
            r#"["eq", "$key", "uploads/r"]"#,
            r#"["starts-with", "$success_action_redirect", "https://example.org/"]"#,
        ],
        &[("key", "uploads/r"), ("success_action_redirect", "https://example.org/done")],
        b"redirected",
    );
    let (status, location, body) = post(&daemon, "forms", &redirect).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with("https://example.org/done?bucket=forms&key=uploads%2Fr&etag="), "{location}");
    assert_eq!(body_of(&lab, "forms", "uploads/r").await, b"redirected");

    // Refusals, each with AWS's code, none storing anything.
    let mut refusals: Vec<(&str, Form, StatusCode, &str)> = Vec::new();
    let expired = signed_form(&lab_key.0, &lab_key.1, "2020-01-01T00:00:00.000Z", &conditions, &fields, b"x");
    refusals.push(("expired", expired, StatusCode::FORBIDDEN, "AccessDenied"));
    let mut wrong_key = form(b"x");
    wrong_key.set("key", "elsewhere/a.txt");
    refusals.push(("key outside starts-with", wrong_key, StatusCode::FORBIDDEN, "AccessDenied"));
    let mut not_json = form(b"x");
    not_json.set("policy", &base64(b"{\"expiration\": oops"));
    refusals.push(("a policy that is not JSON", not_json, StatusCode::BAD_REQUEST, "InvalidPolicyDocument"));
    let mut wrong_meta = form(b"x");
    wrong_meta.set("x-amz-meta-owner", "mallory");
    refusals.push(("eq not met", wrong_meta, StatusCode::FORBIDDEN, "AccessDenied"));
    let mut wrong_type = form(b"x");
    wrong_type.set("Content-Type", "application/x-sh");
    refusals.push(("starts-with not met", wrong_type, StatusCode::FORBIDDEN, "AccessDenied"));
    let mut missing = form(b"x");
    missing.remove("x-amz-meta-owner");
    refusals.push(("a conditioned field missing", missing, StatusCode::FORBIDDEN, "AccessDenied"));
    refusals.push(("too large", form(&[b'x'; 101]), StatusCode::BAD_REQUEST, "EntityTooLarge"));
    refusals.push(("too small", form(b""), StatusCode::BAD_REQUEST, "EntityTooSmall"));
    let mut extra = form(b"x");
    extra.set("x-amz-meta-extra", "1");
    refusals.push(("a field no condition covers", extra, StatusCode::FORBIDDEN, "AccessDenied"));
    let mut bad_signature = form(b"x");
    bad_signature.set("x-amz-signature", &"0".repeat(64));
    refusals.push(("bad signature", bad_signature, StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
    let mut swapped_policy = form(b"x");
    let other_policy = signed_form(&lab_key.0, &lab_key.1, LATER, &[r#"["starts-with", "$key", ""]"#], &[], b"");
    let other_policy = other_policy.fields.iter().find(|(n, _)| n == "policy").unwrap().1.clone();
    swapped_policy.set("policy", &other_policy);
    refusals.push(("a policy it was not signed with", swapped_policy, StatusCode::FORBIDDEN, "SignatureDoesNotMatch"));
    let other_project = signed_form(&other_key.0, &other_key.1, LATER, &conditions, &fields, b"x");
    refusals.push(("another project's key", other_project, StatusCode::FORBIDDEN, "AccessDenied"));
    let anonymous = Form {
        fields: vec![("key".into(), "uploads/anon".into()), ("success_action_status".into(), "201".into())],
        file: b"x".to_vec(),
    };
    refusals.push(("unsigned", anonymous, StatusCode::FORBIDDEN, "AccessDenied"));
    let v2_policy =
        base64(br#"{"expiration": "2099-12-31T00:00:00.000Z", "conditions": [["starts-with", "$key", ""]]}"#);
    let v2 = Form {
        fields: vec![
            ("key".into(), "uploads/v2".into()),
            ("AWSAccessKeyId".into(), lab_key.0.clone()),
            ("policy".into(), v2_policy.clone()),
            ("signature".into(), tests::sig_v2(&lab_key.1, &v2_policy)),
        ],
        file: b"x".to_vec(),
    };
    refusals.push(("signed with SigV2", v2, StatusCode::FORBIDDEN, "AccessDenied"));
    let public_acl = signed_form(
        &other_key.0,
        &other_key.1,
        LATER,
        &[r#"["starts-with", "$key", "uploads/"]"#, r#"{"acl": "public-read"}"#],
        &[("key", "uploads/public"), ("acl", "public-read")],
        b"x",
    );
    refusals.push(("a non-member asking for an ACL", public_acl, StatusCode::FORBIDDEN, "AccessDenied"));
    let before = keys(&lab, "forms").await;
    for (what, form, status, code) in &refusals {
        let (got, _, body) = post(&daemon, "forms", form).await;
        assert_eq!(got, *status, "{what}: {body}");
        assert!(body.contains(&format!("<Code>{code}</Code>")), "{what}: {body}");
        if what.contains("met") || what.contains("starts-with") || what.contains("missing") {
            assert!(body.contains("Invalid according to Policy"), "{what}: {body}");
        }
    }
    assert_eq!(keys(&lab, "forms").await, before, "no refused form stored anything");
    assert_eq!(body_of(&lab, "forms", "uploads/a.txt").await, b"hello form");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_policies_allow_and_deny_by_principal_action_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (lab_key, other_key) = (daemon.create_key(BIN, "lab"), daemon.create_key(BIN, "other"));
    let (lab, other) = (client(&daemon, &lab_key.0, &lab_key.1), client(&daemon, &other_key.0, &other_key.1));
    lab.create_bucket().bucket("shared").send().await.unwrap();
    for key in ["pub/a", "pub/secret.txt", "priv/x", "public/p", "keep/k", "pub/b", "pub/c"] {
        put(&lab, "shared", key, key).await;
    }
    let anonymous = |path: &str| {
        let url = format!("{}{path}", daemon.s3_url());
        async move {
            let resp = reqwest::get(url).await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };

    // No policy yet; only the owner reads or sets one; what is not supported is refused.
    let err = lab.get_bucket_policy().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucketPolicy");
    let err = other.get_bucket_policy().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let open_all =
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::shared/*"}}"#;
    let err = other.put_bucket_policy().bucket("shared").policy(open_all).send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let big = format!(
        r#"{{"Id":"{}","Statement":{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/*"}}}}"#,
        "x".repeat(21 * 1024)
    );
    let malformed = [
        "{not json",
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}}"#,
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::elsewhere/*"}}"#,
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:PutBucketAcl","Resource":"arn:aws:s3:::shared"}}"#,
        big.as_str(),
    ];
    for policy in malformed {
        let err = lab.put_bucket_policy().bucket("shared").policy(policy).send().await.unwrap_err();
        assert_eq!(code(&err), "MalformedPolicy", "{}", &policy[..policy.len().min(120)]);
    }
    assert_eq!(code(&lab.get_bucket_policy().bucket("shared").send().await.unwrap_err()), "NoSuchBucketPolicy");
    assert_eq!(code(&other.get_object().bucket("shared").key("pub/a").send().await.unwrap_err()), "AccessDenied");

    let policy = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "OtherReadsPub", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::other:root"]},
     "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/pub/*"]},
    {"Sid": "OtherWritesInbox", "Effect": "Allow", "Principal": {"AWS": "other"},
     "Action": "s3:PutObject", "Resource": "arn:aws:s3:::shared/inbox/*"},
    {"Sid": "AnyoneReadsPublic", "Effect": "Allow", "Principal": "*",
     "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::shared/public/*"},
    {"Sid": "KeepIsKept", "Effect": "Deny", "Principal": "*",
     "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::shared/keep/*"},
    {"Sid": "NoSecrets", "Effect": "Deny", "Principal": {"AWS": "other"},
     "Action": "s3:Get*", "Resource": "arn:aws:s3:::shared/pub/secret*"}
  ]
}"#;
    lab.put_bucket_policy().bucket("shared").policy(policy).send().await.unwrap();
    let got = lab.get_bucket_policy().bucket("shared").send().await.unwrap();
    assert_eq!(got.policy(), Some(policy), "the policy reads back as given");

    // The other project: what the Allows name, nothing the Deny names, nothing else.
    assert_eq!(body_of(&other, "shared", "pub/a").await, b"pub/a");
    other.head_object().bucket("shared").key("pub/a").send().await.unwrap();
    let listed = other.list_objects_v2().bucket("shared").send().await.unwrap();
    assert_eq!(listed.contents().len(), 7);
    let err = other.get_object().bucket("shared").key("pub/secret.txt").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied", "Deny wins over the Allow of pub/*");
    assert_eq!(code(&other.get_object().bucket("shared").key("priv/x").send().await.unwrap_err()), "AccessDenied");
    put(&other, "shared", "inbox/from-other", "hi").await;
    assert_eq!(body_of(&lab, "shared", "inbox/from-other").await, b"hi");
    let err = other.put_object().bucket("shared").key("pub/new").body(ByteStream::from_static(b"n")).send().await;
    assert_eq!(code(&err.unwrap_err()), "AccessDenied");
    assert_eq!(code(&other.delete_object().bucket("shared").key("pub/a").send().await.unwrap_err()), "AccessDenied");
    let err = other.put_bucket_acl().bucket("shared").acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead).send().await;
    assert_eq!(code(&err.unwrap_err()), "AccessDenied");

    // Anonymous: reads of public/ only; writes stay refused even where an Allow names them.
    assert_eq!(anonymous("/shared/public/p").await, (StatusCode::OK, "public/p".into()));
    for path in ["/shared/pub/a", "/shared/priv/x", "/shared?list-type=2"] {
        let (status, body) = anonymous(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    }
    let resp = reqwest::Client::new().put(format!("{}/shared/public/anon", daemon.s3_url())).body("a").send().await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // A Deny holds the owner too, in DeleteObject and in each key of DeleteObjects.
    let err = lab.delete_object().bucket("shared").key("keep/k").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let delete = Delete::builder()
        .objects(ObjectIdentifier::builder().key("keep/k").build().unwrap())
        .objects(ObjectIdentifier::builder().key("pub/c").build().unwrap())
        .build()
        .unwrap();
    let out = lab.delete_objects().bucket("shared").delete(delete).send().await.unwrap();
    assert_eq!(out.deleted().iter().map(|d| d.key().unwrap()).collect::<Vec<_>>(), ["pub/c"]);
    assert_eq!(
        out.errors().iter().map(|e| (e.key().unwrap(), e.code().unwrap())).collect::<Vec<_>>(),
        [("keep/k", "AccessDenied")]
    );
    lab.delete_object().bucket("shared").key("pub/b").send().await.unwrap();
    assert_eq!(
        keys(&lab, "shared").await,
        ["inbox/from-other", "keep/k", "priv/x", "pub/a", "pub/secret.txt", "public/p"],
        "refused requests changed nothing"
    );

    // A form upload through the policy: the other project may post into inbox/ only.
    let inbox_form = |key: &str| {
        signed_form(
            &other_key.0,
            &other_key.1,
            LATER,
            &[r#"{"bucket": "shared"}"#, r#"["starts-with", "$key", ""]"#],
            &[("key", key)],
            b"posted",
        )
    };
    assert_eq!(post(&daemon, "shared", &inbox_form("inbox/posted")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(body_of(&lab, "shared", "inbox/posted").await, b"posted");
    let (status, _, body) = post(&daemon, "shared", &inbox_form("pub/posted")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&lab.head_object().bucket("shared").key("pub/posted").send().await.unwrap_err()), "NotFound");

    // Deny everything to everyone: the owner is out too, but still manages the policy.
    let lock = r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::shared","arn:aws:s3:::shared/*"]}]}"#;
    lab.put_bucket_policy().bucket("shared").policy(lock).send().await.unwrap();
    assert_eq!(code(&lab.get_object().bucket("shared").key("pub/a").send().await.unwrap_err()), "AccessDenied");
    let err = lab.list_objects_v2().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = lab.put_object().bucket("shared").key("x").body(ByteStream::from_static(b"x")).send().await;
    assert_eq!(code(&err.unwrap_err()), "AccessDenied");
    let err = lab.get_bucket_acl().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    assert_eq!(lab.get_bucket_policy().bucket("shared").send().await.unwrap().policy(), Some(lock));
    lab.delete_bucket_policy().bucket("shared").send().await.unwrap();
    assert_eq!(code(&lab.get_bucket_policy().bucket("shared").send().await.unwrap_err()), "NoSuchBucketPolicy");
    assert_eq!(body_of(&lab, "shared", "pub/a").await, b"pub/a");
    assert_eq!(code(&other.get_object().bucket("shared").key("pub/a").send().await.unwrap_err()), "AccessDenied");
    assert_eq!(anonymous("/shared/public/p").await.0, StatusCode::FORBIDDEN);
}
