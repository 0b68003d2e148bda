//! The S3 service of this crate over a store in a temporary directory, served in this
//! process and driven by aws-sdk-s3: what a client sees of each operation and of bad
//! input, without building or starting the `clusster` binary (whose own client tests,
//! rclone and the AWS CLI among them, live in transfer-daemon/tests).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use s3_gateway::GatewayConfig;
use std::sync::Arc;
use std::time::Duration;
use store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A gateway over a fresh store, listening on a loopback port until dropped.
struct Gateway {
    store: Arc<Store>,
    url: String,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path()), hw_offload::Offload::cpu(2)).await.unwrap();
        let service = s3_gateway::service(store.clone(), GatewayConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, watch) = watch::channel(false);
        tokio::spawn(s3_gateway::server::serve("s3", listener, service, None, Default::default(), watch));
        Self { store, url, _shutdown: shutdown, _dir: dir }
    }

    /// A path-style client with a new key of `project`.
    async fn client(&self, project: &str) -> Client {
        let (id, secret) = self.store.create_access_key(project).await.unwrap();
        self.client_with(&id, &secret)
    }

    fn client_with(&self, id: &str, secret: &str) -> Client {
        let creds = aws_credential_types::Credentials::new(id, secret, None, None, "in-process");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        Client::from_conf(config)
    }
}

/// A SigV4 presigned GET of `path` valid for `expires`, whatever its length (the SDK
/// refuses to make one of more than 7 days): the path and query to request.
fn presigned_get(base: &str, path: &str, id: &str, secret: &str, expires: Duration) -> String {
    let url = tests::presign_url(&format!("{base}{path}"), id, secret, expires);
    url.strip_prefix(base).expect("the URL signed").to_owned()
}

/// A bare HTTP/1.1 GET of `path_and_query`, as a hand-written client would send it:
/// the status and the whole answer.
async fn raw_get(base: &str, path_and_query: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (answer[9..12].parse().unwrap(), answer)
}

fn url_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<no code>").to_owned()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

async fn get(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    c.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes().to_vec()
}

async fn put(c: &Client, bucket: &str, key: &str, body: &[u8]) -> String {
    let out = c.put_object().bucket(bucket).key(key).body(ByteStream::from(body.to_vec())).send().await.unwrap();
    out.e_tag().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_ranges_conditions_and_metadata() {
    let gw = Gateway::start().await;
    let c = gw.client("physics").await;
    c.create_bucket().bucket("runs").send().await.unwrap();

    // Small (inline in the metadata) and large (chunked) objects alike.
    let small = data(100, 1);
    let large = data(3 << 20, 2);
    let etag = put(&c, "runs", "small.txt", &small).await;
    assert_eq!(etag, format!("\"{}\"", hex::encode(<md5::Md5 as md5::Digest>::digest(&small))));
    put(&c, "runs", "dir/large.bin", &large).await;
    assert_eq!(get(&c, "runs", "small.txt").await, small);
    assert_eq!(get(&c, "runs", "dir/large.bin").await, large);

    // A range across chunk boundaries, and a suffix range.
    let part = c.get_object().bucket("runs").key("dir/large.bin").range("bytes=65000-1300000").send().await.unwrap();
    assert_eq!(part.content_range(), Some(&*format!("bytes 65000-1300000/{}", large.len())));
    assert_eq!(part.body.collect().await.unwrap().into_bytes(), large[65000..=1300000]);
    let tail = c.get_object().bucket("runs").key("dir/large.bin").range("bytes=-10").send().await.unwrap();
    assert_eq!(tail.body.collect().await.unwrap().into_bytes(), large[large.len() - 10..]);
    let beyond = c.get_object().bucket("runs").key("small.txt").range("bytes=500-600").send().await.unwrap_err();
    assert_eq!(code(&beyond.into_service_error()), "InvalidRange");

    // Conditions on the ETag.
    let stale = c.get_object().bucket("runs").key("small.txt").if_match("\"0000\"").send().await.unwrap_err();
    assert_eq!(stale.raw_response().map(|r| r.status().as_u16()), Some(412));
    let fresh = c.get_object().bucket("runs").key("small.txt").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(fresh.raw_response().map(|r| r.status().as_u16()), Some(304));

    // Metadata kept on PUT and replaced on a copy that asks for it.
    c.put_object()
        .bucket("runs")
        .key("meta.json")
        .content_type("application/json")
        .metadata("run", "42")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("runs").key("meta.json").send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(head.metadata().unwrap()["run"], "42");
    c.copy_object()
        .bucket("runs")
        .key("meta-copy.json")
        .copy_source("runs/meta.json")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("run", "43")
        .send()
        .await
        .unwrap();
    let copied = c.head_object().bucket("runs").key("meta-copy.json").send().await.unwrap();
    assert_eq!(copied.metadata().unwrap()["run"], "43");
    assert_eq!(get(&c, "runs", "meta-copy.json").await, b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_and_group_by_delimiter() {
    let gw = Gateway::start().await;
    let c = gw.client("physics").await;
    c.create_bucket().bucket("tree").send().await.unwrap();
    for i in 0..7 {
        put(&c, "tree", &format!("a/{i}"), b"x").await;
    }
    put(&c, "tree", "b/deep/1", b"x").await;
    put(&c, "tree", "top", b"x").await;

    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page =
            c.list_objects_v2().bucket("tree").max_keys(3).set_continuation_token(token.clone()).send().await.unwrap();
        assert!(page.contents().len() <= 3);
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(keys.len(), 9);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys in order: {keys:?}");

    let grouped = c.list_objects_v2().bucket("tree").delimiter("/").send().await.unwrap();
    let prefixes: Vec<_> = grouped.common_prefixes().iter().map(|p| p.prefix().unwrap()).collect();
    assert_eq!(prefixes, ["a/", "b/"]);
    assert_eq!(grouped.contents().iter().map(|o| o.key().unwrap()).collect::<Vec<_>>(), ["top"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_assemble_and_refuse_wrong_parts() {
    let gw = Gateway::start().await;
    let c = gw.client("physics").await;
    c.create_bucket().bucket("uploads").send().await.unwrap();
    let parts = [data(5 << 20, 3), data(5 << 20, 4), data(1000, 5)];
    let upload = c.create_multipart_upload().bucket("uploads").key("big").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let mut completed = Vec::new();
    for (n, body) in parts.iter().enumerate() {
        let n = n as i32 + 1;
        let out = c
            .upload_part()
            .bucket("uploads")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        completed.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    // A part list naming an ETag that was never uploaded is refused, and changes nothing.
    let mut wrong = completed.clone();
    wrong[1] = CompletedPart::builder().part_number(2).e_tag("\"00000000000000000000000000000000\"").build();
    let refused = c
        .complete_multipart_upload()
        .bucket("uploads")
        .key("big")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(wrong)).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused.into_service_error()), "InvalidPart");
    let missing = c.head_object().bucket("uploads").key("big").send().await.unwrap_err();
    assert_eq!(missing.raw_response().map(|r| r.status().as_u16()), Some(404));

    let done = c
        .complete_multipart_upload()
        .bucket("uploads")
        .key("big")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-3\""), "{:?}", done.e_tag());
    assert_eq!(get(&c, "uploads", "big").await, parts.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_s3_error_and_other_projects_are_kept_out() {
    let gw = Gateway::start().await;
    let physics = gw.client("physics").await;
    let biology = gw.client("biology").await;
    physics.create_bucket().bucket("private").send().await.unwrap();
    put(&physics, "private", "kept", b"still here").await;

    let no_key = physics.get_object().bucket("private").key("absent").send().await.unwrap_err();
    assert_eq!(code(&no_key.into_service_error()), "NoSuchKey");
    let no_bucket = physics.get_object().bucket("absent").key("k").send().await.unwrap_err();
    assert_eq!(code(&no_bucket.into_service_error()), "NoSuchBucket");
    let bad_name = physics.create_bucket().bucket("Not_A_Bucket").send().await.unwrap_err();
    assert_eq!(code(&bad_name.into_service_error()), "InvalidBucketName");
    let long_key = "k".repeat(1025);
    let too_long = physics
        .put_object()
        .bucket("private")
        .key(&long_key)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&too_long.into_service_error()), "KeyTooLongError");

    // Another project's key reaches neither the bucket nor its objects.
    let denied = biology.get_object().bucket("private").key("kept").send().await.unwrap_err();
    assert_eq!(code(&denied.into_service_error()), "AccessDenied");
    let denied = biology
        .put_object()
        .bucket("private")
        .key("kept")
        .body(ByteStream::from_static(b"overwritten"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&denied.into_service_error()), "AccessDenied");
    let denied = biology.delete_bucket().bucket("private").send().await.unwrap_err();
    assert_eq!(code(&denied.into_service_error()), "AccessDenied");

    // Unknown keys and wrong secrets are refused before anything is read.
    let stranger = gw.client_with("CKNOSUCHKEY000000000", "secret");
    let unknown = stranger.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&unknown.into_service_error()), "InvalidAccessKeyId");
    let (id, _) = gw.store.create_access_key("physics").await.unwrap();
    let forged = gw.client_with(&id, "not-the-secret");
    let mismatch = forged.get_object().bucket("private").key("kept").send().await.unwrap_err();
    assert_eq!(code(&mismatch.into_service_error()), "SignatureDoesNotMatch");

    // A non-empty bucket stays, with what it holds.
    let not_empty = physics.delete_bucket().bucket("private").send().await.unwrap_err();
    assert_eq!(code(&not_empty.into_service_error()), "BucketNotEmpty");
    assert_eq!(get(&physics, "private", "kept").await, b"still here");
}

#[test]
fn an_unusable_domain_is_a_setup_error_naming_it() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime.block_on(Store::open(StoreConfig::new(dir.path()), hw_offload::Offload::cpu(1))).unwrap();
    let config = GatewayConfig { domain: Some("bad domain!".into()), ..GatewayConfig::default() };
    let Err(error) = s3_gateway::service(store, config) else { panic!("a bad domain is refused") };
    assert!(matches!(error, s3_gateway::SetupError::Domain { .. }), "{error}");
    assert!(error.to_string().contains("bad domain!"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grantee_may_use_a_bucket_but_not_delete_it_or_take_its_name() {
    let gw = Gateway::start().await;
    let physics = gw.client("physics").await;
    let biology = gw.client("biology").await;
    physics.create_bucket().bucket("shared").send().await.unwrap();
    gw.store.grant_bucket("shared", "biology").await.unwrap();
    put(&biology, "shared", "from-biology", b"granted").await;
    physics.delete_object().bucket("shared").key("from-biology").send().await.unwrap();

    let refused = biology.delete_bucket().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&refused.into_service_error()), "AccessDenied");
    physics.head_bucket().bucket("shared").send().await.unwrap();
    let taken = biology.create_bucket().bucket("shared").send().await.unwrap_err();
    assert_eq!(code(&taken.into_service_error()), "BucketAlreadyExists");
    // The owner still may.
    physics.delete_bucket().bucket("shared").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_query_names_do_not_slip_past_the_presign_limit_or_the_sigv2_refusal() {
    let gw = Gateway::start().await;
    let (id, secret) = gw.store.create_access_key("physics").await.unwrap();
    let c = gw.client_with(&id, &secret);
    c.create_bucket().bucket("signed").send().await.unwrap();
    put(&c, "signed", "k", b"presigned body").await;

    let day = Duration::from_secs(24 * 3600);
    let within = presigned_get(&gw.url, "/signed/k", &id, &secret, day);
    let (status, answer) = raw_get(&gw.url, &within).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("presigned body"));

    let too_long = presigned_get(&gw.url, "/signed/k", &id, &secret, 8 * day);
    let (status, answer) = raw_get(&gw.url, &too_long).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("AuthorizationQueryParametersError"), "{answer}");
    // The same URL with the parameter's name percent-encoded: the signature still checks
    // (its canonical form decodes names), so the limit must look at the decoded name too.
    let disguised = too_long.replace("X-Amz-Expires=", "X-Amz-Expire%73=");
    assert_ne!(disguised, too_long);
    let (status, answer) = raw_get(&gw.url, &disguised).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("AuthorizationQueryParametersError"), "{answer}");

    // A correctly signed SigV2 presigned URL (s3s would accept it) with its parameter
    // names encoded is still SigV2, and refused.
    let expires = 4102444800u64;
    let signature = tests::sig_v2(&secret, &format!("GET\n\n\n{expires}\n/signed/k"));
    let signature: String = url_encode(&signature);
    let v2 = format!("/signed/k?AWSAccessKeyI%64={id}&Expires={expires}&Signatur%65={signature}");
    let (status, answer) = raw_get(&gw.url, &v2).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("signature version 2 is not accepted"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_create_only_puts_exactly_one_wins() {
    let gw = Gateway::start().await;
    let c = gw.client("physics").await;
    c.create_bucket().bucket("race").send().await.unwrap();
    for round in 0..5 {
        let key = format!("k{round}");
        let create = |seed: u8| {
            let c = c.clone();
            let key = key.clone();
            async move {
                c.put_object()
                    .bucket("race")
                    .key(&key)
                    .if_none_match("*")
                    .body(ByteStream::from(data(2 << 20, seed)))
                    .send()
                    .await
            }
        };
        let (a, b) = tokio::join!(create(1), create(2));
        let failed: Vec<_> = [&a, &b].into_iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(failed.len(), 1, "round {round}: exactly one create wins");
        assert_eq!(failed[0].raw_response().map(|r| r.status().as_u16()), Some(412));
        let winner = if a.is_ok() { 1 } else { 2 };
        assert_eq!(get(&c, "race", &key).await, data(2 << 20, winner), "the winner's bytes are stored");
    }
}
