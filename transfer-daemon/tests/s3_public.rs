//! What a bucket's owner opens to others, against the real `clusster` binary: canned ACLs
//! on buckets and objects (in headers, grant headers and ACL bodies), the anonymous and
//! other-project requests they let in and those they do not, and CORS (configuration,
//! preflights, headers on requests). Signed calls through aws-sdk-s3, unsigned ones through
//! reqwest. Every refusal keeps its S3 error and leaves what is stored as it was.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AccessControlPolicy, BucketCannedAcl, CompletedMultipartUpload, CompletedPart, CorsConfiguration, CorsRule, Grant,
    Grantee, ObjectCannedAcl, Owner, Permission, Type,
};
use reqwest::{Method, StatusCode};
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

mod common;
use common::s3_client as client;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<no code>").to_owned()
}

/// An unsigned request: its status and body.
async fn anonymous(daemon: &Daemon, method: Method, path: &str, body: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", daemon.s3_url()));
    if let Some(body) = body {
        req = req.body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn put(c: &Client, bucket: &str, key: &str, body: &str, acl: Option<ObjectCannedAcl>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .set_acl(acl)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
}

/// The grants shown as (grantee, permission), the owner's first.
fn grants(grants: &[Grant]) -> Vec<(String, String)> {
    grants
        .iter()
        .map(|g| {
            let grantee = g.grantee().unwrap();
            let who = grantee.uri().or(grantee.id()).unwrap().to_owned();
            (who, g.permission().unwrap().as_str().to_owned())
        })
        .collect()
}

fn expected(owner: &str, others: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![(owner.to_owned(), "FULL_CONTROL".to_owned())];
    all.extend(others.iter().map(|(who, p)| (who.to_string(), p.to_string())));
    all
}

async fn bucket_grants(c: &Client, bucket: &str) -> Vec<(String, String)> {
    let acl = c.get_bucket_acl().bucket(bucket).send().await.unwrap();
    assert_eq!(acl.owner().and_then(Owner::id), Some("lab"), "the owner is the bucket's project");
    grants(acl.grants())
}

async fn object_grants(c: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let acl = c.get_object_acl().bucket(bucket).key(key).send().await.unwrap();
    assert_eq!(acl.owner().and_then(Owner::id), Some("lab"));
    grants(acl.grants())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canned_acls_decide_what_anonymous_requests_and_other_projects_may_do() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (lab_key, other_key) = (daemon.create_key(BIN, "lab"), daemon.create_key(BIN, "other"));
    let (lab, other) = (client(&daemon, &lab_key.0, &lab_key.1), client(&daemon, &other_key.0, &other_key.1));

    // A public-read bucket: anyone lists it and reads its objects, no one else writes.
    lab.create_bucket().bucket("open").acl(BucketCannedAcl::PublicRead).send().await.unwrap();
    lab.create_bucket().bucket("closed").send().await.unwrap();
    put(&lab, "open", "data/a.csv", "a,b\n1,2\n", None).await;
    put(&lab, "closed", "secret", "s", None).await;
    assert_eq!(bucket_grants(&lab, "open").await, expected("lab", &[(ALL_USERS, "READ")]));
    assert_eq!(bucket_grants(&lab, "closed").await, expected("lab", &[]));
    assert_eq!(anonymous(&daemon, Method::GET, "/open/data/a.csv", None).await, (StatusCode::OK, "a,b\n1,2\n".into()));
    assert_eq!(anonymous(&daemon, Method::HEAD, "/open/data/a.csv", None).await.0, StatusCode::OK);
    for listing in ["/open?list-type=2&prefix=data/", "/open"] {
        let (status, body) = anonymous(&daemon, Method::GET, listing, None).await;
        assert_eq!(status, StatusCode::OK, "{listing}: {body}");
        assert!(body.contains("<Key>data/a.csv</Key>"), "{body}");
    }
    let (status, body) = anonymous(&daemon, Method::GET, "/open/missing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a public-read bucket may say what it does not hold: {body}");
    // Another project's key reads what anyone may read.
    let listed = other.list_objects_v2().bucket("open").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
    other.get_object().bucket("open").key("data/a.csv").send().await.unwrap();

    // Everything else unsigned is refused, and changes nothing.
    let refused = [
        (Method::GET, "/closed/secret", None),
        (Method::GET, "/closed?list-type=2", None),
        (Method::GET, "/closed/missing", None),
        (Method::GET, "/", None),
        (Method::PUT, "/open/new", Some("x")),
        (Method::DELETE, "/open/data/a.csv", None),
        (Method::PUT, "/anon-bucket", None),
        (Method::GET, "/open?acl", None),
        (Method::PUT, "/open?acl", None),
    ];
    for (method, path, body) in refused {
        let (status, text) = anonymous(&daemon, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {text}");
        assert!(text.contains("<Code>AccessDenied</Code>"), "{method} {path}: {text}");
    }
    assert_eq!(code(&lab.head_object().bucket("open").key("new").send().await.unwrap_err()), "NotFound");
    lab.head_object().bucket("open").key("data/a.csv").send().await.unwrap();
    assert!(lab.head_bucket().bucket("anon-bucket").send().await.is_err());
    assert_eq!(code(&other.get_object().bucket("closed").key("secret").send().await.unwrap_err()), "AccessDenied");
    assert_eq!(code(&other.put_object().bucket("open").key("o").send().await.unwrap_err()), "AccessDenied");

    // Only the owner changes an ACL.
    let err = other.put_bucket_acl().bucket("open").acl(BucketCannedAcl::Private).send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = other.put_object_acl().bucket("open").key("data/a.csv").acl(ObjectCannedAcl::Private).send().await;
    assert_eq!(code(&err.unwrap_err()), "AccessDenied");
    assert_eq!(anonymous(&daemon, Method::GET, "/open/data/a.csv", None).await.0, StatusCode::OK);

    // An object's own ACL: readable alone, in a bucket that stays closed to listing.
    put(&lab, "closed", "shared", "one", Some(ObjectCannedAcl::PublicRead)).await;
    assert_eq!(object_grants(&lab, "closed", "shared").await, expected("lab", &[(ALL_USERS, "READ")]));
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/shared", None).await, (StatusCode::OK, "one".into()));
    assert_eq!(anonymous(&daemon, Method::GET, "/closed?list-type=2", None).await.0, StatusCode::FORBIDDEN);
    // A new object at the key starts private, as in S3; PutObjectAcl opens and closes it.
    put(&lab, "closed", "shared", "two", None).await;
    assert_eq!(object_grants(&lab, "closed", "shared").await, expected("lab", &[]));
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/shared", None).await.0, StatusCode::FORBIDDEN);
    lab.put_object_acl().bucket("closed").key("shared").acl(ObjectCannedAcl::PublicRead).send().await.unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/shared", None).await, (StatusCode::OK, "two".into()));
    lab.put_object_acl().bucket("closed").key("shared").acl(ObjectCannedAcl::Private).send().await.unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/shared", None).await.0, StatusCode::FORBIDDEN);
    let err = lab.put_object_acl().bucket("closed").key("nothing").acl(ObjectCannedAcl::PublicRead).send().await;
    assert_eq!(code(&err.unwrap_err()), "NoSuchKey");

    // A copy and a multipart upload get the ACL they ask for, not their source's.
    lab.copy_object()
        .copy_source("open/data/a.csv")
        .bucket("closed")
        .key("copied")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/copied", None).await.0, StatusCode::OK);
    lab.copy_object().copy_source("open/data/a.csv").bucket("open").key("copy-private").send().await.unwrap();
    assert_eq!(object_grants(&lab, "open", "copy-private").await, expected("lab", &[]));
    let upload = lab
        .create_multipart_upload()
        .bucket("closed")
        .key("parts")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let part = lab
        .upload_part()
        .bucket("closed")
        .key("parts")
        .upload_id(upload_id)
        .part_number(1)
        .body("p".as_bytes().to_vec().into());
    let etag = part.send().await.unwrap().e_tag().unwrap().to_owned();
    let done = CompletedMultipartUpload::builder().parts(CompletedPart::builder().part_number(1).e_tag(etag).build());
    lab.complete_multipart_upload()
        .bucket("closed")
        .key("parts")
        .upload_id(upload_id)
        .multipart_upload(done.build())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/parts", None).await, (StatusCode::OK, "p".into()));

    // authenticated-read: any key of this site, no anonymous request.
    lab.create_bucket().bucket("site").acl(BucketCannedAcl::AuthenticatedRead).send().await.unwrap();
    put(&lab, "site", "k", "site only", None).await;
    assert_eq!(bucket_grants(&lab, "site").await, expected("lab", &[(AUTHENTICATED_USERS, "READ")]));
    other.get_object().bucket("site").key("k").send().await.unwrap();
    other.list_objects().bucket("site").send().await.unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/site/k", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(anonymous(&daemon, Method::GET, "/site", None).await.0, StatusCode::FORBIDDEN);

    // public-read-write: keys of this site write; anonymous writes stay refused.
    lab.create_bucket().bucket("drop").acl(BucketCannedAcl::PublicReadWrite).send().await.unwrap();
    assert_eq!(bucket_grants(&lab, "drop").await, expected("lab", &[(ALL_USERS, "READ"), (ALL_USERS, "WRITE")]));
    put(&other, "drop", "from-other", "hi", None).await;
    assert_eq!(anonymous(&daemon, Method::GET, "/drop/from-other", None).await, (StatusCode::OK, "hi".into()));
    let (status, body) = anonymous(&daemon, Method::PUT, "/drop/anon", Some("x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("anonymous writes are refused"), "{body}");
    let err = other
        .put_object()
        .bucket("drop")
        .key("opened")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "AccessDenied", "only the owner sets ACLs");
    for key in ["anon", "opened"] {
        assert_eq!(code(&lab.head_object().bucket("drop").key(key).send().await.unwrap_err()), "NotFound");
    }
    assert_eq!(code(&other.delete_bucket().bucket("drop").send().await.unwrap_err()), "AccessDenied");

    // The other forms of the same ACLs: grant headers, an ACL body.
    lab.put_bucket_acl().bucket("closed").grant_read(format!("uri=\"{ALL_USERS}\"")).send().await.unwrap();
    assert_eq!(bucket_grants(&lab, "closed").await, expected("lab", &[(ALL_USERS, "READ")]));
    let policy = |grants: Vec<Grant>| {
        AccessControlPolicy::builder().owner(Owner::builder().id("lab").build()).set_grants(Some(grants)).build()
    };
    let owner_grant = Grant::builder()
        .grantee(Grantee::builder().r#type(Type::CanonicalUser).id("lab").build().unwrap())
        .permission(Permission::FullControl)
        .build();
    let group_grant = |uri: &str| {
        Grant::builder()
            .grantee(Grantee::builder().r#type(Type::Group).uri(uri).build().unwrap())
            .permission(Permission::Read)
            .build()
    };
    lab.put_bucket_acl()
        .bucket("closed")
        .access_control_policy(policy(vec![owner_grant.clone(), group_grant(AUTHENTICATED_USERS)]))
        .send()
        .await
        .unwrap();
    assert_eq!(bucket_grants(&lab, "closed").await, expected("lab", &[(AUTHENTICATED_USERS, "READ")]));
    lab.put_bucket_acl()
        .bucket("closed")
        .access_control_policy(policy(vec![owner_grant.clone()]))
        .send()
        .await
        .unwrap();
    assert_eq!(bucket_grants(&lab, "closed").await, expected("lab", &[]));

    // Grants no canned ACL makes are refused, and change nothing.
    let err = lab.put_bucket_acl().bucket("closed").grant_read("id=\"other\"").send().await.unwrap_err();
    assert_eq!(code(&err), "NotImplemented");
    let err = lab.put_bucket_acl().bucket("closed").grant_read_acp(format!("uri=\"{ALL_USERS}\"")).send().await;
    assert_eq!(code(&err.unwrap_err()), "NotImplemented");
    let both = policy(vec![owner_grant, group_grant(ALL_USERS), group_grant(AUTHENTICATED_USERS)]);
    let err = lab.put_bucket_acl().bucket("closed").access_control_policy(both).send().await.unwrap_err();
    assert_eq!(code(&err), "NotImplemented");
    let err = lab
        .put_bucket_acl()
        .bucket("closed")
        .acl(BucketCannedAcl::PublicRead)
        .grant_read(format!("uri=\"{ALL_USERS}\""))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidRequest");
    let err = lab.put_object_acl().bucket("closed").key("secret").acl("aws-exec-read".into()).send().await;
    assert_eq!(code(&err.unwrap_err()), "NotImplemented");
    let err = lab.create_bucket().bucket("odd").grant_full_control("emailAddress=\"a@b.c\"").send().await.unwrap_err();
    assert_eq!(code(&err), "NotImplemented");
    assert!(lab.head_bucket().bucket("odd").send().await.is_err(), "a refused creation creates nothing");
    assert_eq!(bucket_grants(&lab, "closed").await, expected("lab", &[]));
    assert_eq!(object_grants(&lab, "closed", "secret").await, expected("lab", &[]));

    // ACLs are kept: after a restart, and not past the bucket's deletion.
    lab.put_bucket_acl().bucket("open").acl(BucketCannedAcl::Private).send().await.unwrap();
    assert_eq!(anonymous(&daemon, Method::GET, "/open/data/a.csv", None).await.0, StatusCode::FORBIDDEN);
    assert!(daemon.stop().success());
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (lab, other) = (client(&daemon, &lab_key.0, &lab_key.1), client(&daemon, &other_key.0, &other_key.1));
    assert_eq!(anonymous(&daemon, Method::GET, "/open/data/a.csv", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(anonymous(&daemon, Method::GET, "/closed/copied", None).await.0, StatusCode::OK);
    assert_eq!(anonymous(&daemon, Method::GET, "/drop?list-type=2", None).await.0, StatusCode::OK);
    lab.delete_object().bucket("site").key("k").send().await.unwrap();
    lab.delete_bucket().bucket("site").send().await.unwrap();
    other.create_bucket().bucket("site").send().await.unwrap();
    put(&other, "site", "k", "new owner", None).await;
    assert_eq!(anonymous(&daemon, Method::GET, "/site/k", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(code(&lab.get_object().bucket("site").key("k").send().await.unwrap_err()), "AccessDenied");
    assert!(daemon.stop().success());
}

/// An unsigned preflight: its status and headers.
async fn preflight(daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> (StatusCode, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().request(Method::OPTIONS, format!("{}{path}", daemon.s3_url()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.headers().clone())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_rules_answer_preflights_and_tag_the_requests_they_allow() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (lab, other) = (daemon.create_key(BIN, "lab"), daemon.create_key(BIN, "other"));
    let (lab, other) = (client(&daemon, &lab.0, &lab.1), client(&daemon, &other.0, &other.1));
    lab.create_bucket().bucket("web").acl(BucketCannedAcl::PublicRead).send().await.unwrap();
    put(&lab, "web", "index.json", "{}", None).await;

    let err = lab.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchCORSConfiguration");
    let app = "https://app.example.org";
    let (status, _) =
        preflight(&daemon, "/web/index.json", &[("origin", app), ("access-control-request-method", "GET")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CORS configuration, no preflight");

    let rules = CorsConfiguration::builder()
        .cors_rules(
            CorsRule::builder()
                .id("app")
                .allowed_origins(app)
                .allowed_methods("GET")
                .allowed_methods("PUT")
                .allowed_headers("x-amz-*")
                .allowed_headers("Content-Type")
                .expose_headers("ETag")
                .max_age_seconds(600)
                .build()
                .unwrap(),
        )
        .cors_rules(CorsRule::builder().allowed_origins("*").allowed_methods("GET").build().unwrap())
        .build()
        .unwrap();
    lab.put_bucket_cors().bucket("web").cors_configuration(rules.clone()).send().await.unwrap();
    let got = lab.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules(), rules.cors_rules());

    // A preflight the first rule allows.
    let asked = [
        ("origin", app),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "content-type, x-amz-date"),
    ];
    let (status, headers) = preflight(&daemon, "/web/upload.bin", &asked).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(app));
    assert_eq!(header(&headers, "access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(header(&headers, "access-control-allow-headers"), Some("content-type, x-amz-date"));
    assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
    assert_eq!(header(&headers, "access-control-expose-headers"), Some("ETag"));
    assert!(header(&headers, "x-amz-request-id").is_some());
    // Any origin may GET, by the second rule; nothing else.
    let elsewhere = "https://elsewhere.example";
    let (status, headers) =
        preflight(&daemon, "/web/index.json", &[("origin", elsewhere), ("access-control-request-method", "GET")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let not_allowed: [&[(&str, &str)]; 3] = [
        &[("origin", elsewhere), ("access-control-request-method", "PUT")],
        &[("origin", app), ("access-control-request-method", "DELETE")],
        &[("origin", app), ("access-control-request-method", "PUT"), ("access-control-request-headers", "x-secret")],
    ];
    for asked in not_allowed {
        let (status, headers) = preflight(&daemon, "/web/k", asked).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{asked:?}");
        assert_eq!(header(&headers, "access-control-allow-origin"), None);
    }
    let (status, _) = preflight(&daemon, "/web/k", &[("access-control-request-method", "GET")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a preflight names its origin");
    let (status, _) =
        preflight(&daemon, "/nobucket/k", &[("origin", app), ("access-control-request-method", "GET")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The request itself carries the headers of the rule that allows it.
    let get = |origin: Option<&str>| {
        let req = reqwest::Client::new().get(format!("{}/web/index.json", daemon.s3_url()));
        match origin {
            Some(origin) => req.header("origin", origin),
            None => req,
        }
    };
    let resp = get(Some(app)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), Some(app));
    assert_eq!(header(resp.headers(), "access-control-expose-headers"), Some("ETag"));
    let resp = get(None).send().await.unwrap();
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), None);
    let signed = lab.get_object().bucket("web").key("index.json").send().await.unwrap();
    assert_eq!(signed.e_tag().map(str::len), Some(34));

    // Refused configurations change nothing: another project's, bad methods, too many rules.
    let one = |origin: &str, method: &str| {
        CorsRule::builder().allowed_origins(origin).allowed_methods(method).build().unwrap()
    };
    let config = |rules: Vec<CorsRule>| CorsConfiguration::builder().set_cors_rules(Some(rules)).build().unwrap();
    let err = other.put_bucket_cors().bucket("web").cors_configuration(config(vec![one("*", "PUT")])).send().await;
    assert_eq!(code(&err.unwrap_err()), "AccessDenied");
    assert_eq!(code(&other.delete_bucket_cors().bucket("web").send().await.unwrap_err()), "AccessDenied");
    let err = lab.put_bucket_cors().bucket("web").cors_configuration(config(vec![one("*", "PATCH")])).send().await;
    assert_eq!(code(&err.unwrap_err()), "InvalidRequest");
    let err = lab
        .put_bucket_cors()
        .bucket("web")
        .cors_configuration(config(vec![one("https://*.*.org", "GET")]))
        .send()
        .await;
    assert_eq!(code(&err.unwrap_err()), "InvalidRequest");
    let many = (0..101).map(|i| one(&format!("https://{i}.example.org"), "GET")).collect();
    let err = lab.put_bucket_cors().bucket("web").cors_configuration(config(many)).send().await;
    assert_eq!(code(&err.unwrap_err()), "InvalidRequest");
    let long = (0..80).map(|i| one(&format!("https://{i}.{}.example.org", "a".repeat(900)), "GET")).collect();
    let err = lab.put_bucket_cors().bucket("web").cors_configuration(config(long)).send().await;
    assert_eq!(code(&err.unwrap_err()), "InvalidRequest", "over 64 KiB");
    assert_eq!(lab.get_bucket_cors().bucket("web").send().await.unwrap().cors_rules(), rules.cors_rules());

    // Kept over a restart; gone when deleted.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let (status, _) = preflight(&daemon, "/web/k", &[("origin", app), ("access-control-request-method", "PUT")]).await;
    assert_eq!(status, StatusCode::OK);
    let lab = {
        let key = daemon.create_key(BIN, "lab");
        client(&daemon, &key.0, &key.1)
    };
    lab.delete_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(code(&lab.get_bucket_cors().bucket("web").send().await.unwrap_err()), "NoSuchCORSConfiguration");
    let (status, _) = preflight(&daemon, "/web/k", &[("origin", app), ("access-control-request-method", "GET")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(daemon.stop().success());
}
