//! S3 behaviours clients rely on beyond the basic operations, against the real `clusster`
//! binary: retried completions, copy ranges, conditional writes, listing edge cases,
//! ListBuckets pages, GetObjectAttributes, request ids, Content-Encoding, presigned URL
//! expiry. Every refusal keeps its S3 error and leaves what is stored as it was.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, EncodingType, ObjectAttributes, StorageClass,
};
use std::time::{Duration, SystemTime};
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

mod common;
use common::s3_client as client;

fn data(len: usize, seed: u64) -> Vec<u8> {
    tests::content(seed, len, seed)
}

async fn get_bytes(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    c.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes().to_vec()
}

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<no code>").to_owned()
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A started daemon with a key for `project` and a client for it.
fn start(dir: &std::path::Path, project: &str) -> (Daemon, Client, (String, String)) {
    let daemon = Daemon::start(BIN, dir, &[]);
    let key = daemon.create_key(BIN, project);
    let c = client(&daemon, &key.0, &key.1);
    (daemon, c, key)
}

/// Uploads `parts` to a new upload of `bucket/key`; returns the upload id and the list to complete with.
async fn upload_parts(
    c: &Client,
    bucket: &str,
    key: &str,
    parts: &[&[u8]],
    algorithm: Option<ChecksumAlgorithm>,
) -> (String, Vec<CompletedPart>) {
    let upload = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_checksum_algorithm(algorithm.clone())
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap().to_owned();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .set_checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(part.to_vec()))
            .send()
            .await
            .unwrap();
        let mut done = CompletedPart::builder().part_number(n).e_tag(up.e_tag().unwrap());
        if algorithm.is_some() {
            done = done.set_checksum_crc32(up.checksum_crc32().map(str::to_owned));
        }
        completed.push(done.build());
    }
    (upload_id, completed)
}

fn listing(parts: &[CompletedPart]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder().set_parts(Some(parts.to_vec())).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_completion_answers_the_first_success() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, (id, secret)) = start(dir.path(), "retry");
    c.create_bucket().bucket("mpu").send().await.unwrap();
    let (p1, p2) = (data(5 << 20, 1), data(1000, 2));
    let (upload_id, parts) = upload_parts(&c, "mpu", "obj", &[&p1, &p2], None).await;
    let complete = |c: &Client, key: &str, parts: &[CompletedPart]| {
        c.complete_multipart_upload().bucket("mpu").key(key).upload_id(&upload_id).multipart_upload(listing(parts))
    };
    let first = complete(&c, "obj", &parts).send().await.unwrap();
    let again = complete(&c, "obj", &parts).send().await.unwrap();
    assert_eq!(again.e_tag(), first.e_tag());
    assert_eq!(again.location(), first.location());
    assert_eq!((again.bucket(), again.key()), (Some("mpu"), Some("obj")));

    // Another list of parts for the completed id is not a retry, nor is another key.
    let err = complete(&c, "obj", &parts[..1]).send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchUpload");
    let other_etag = [parts[0].clone(), CompletedPart::builder().part_number(2).e_tag("\"00ff\"").build()];
    assert_eq!(code(&complete(&c, "obj", &other_etag).send().await.unwrap_err()), "NoSuchUpload");
    assert_eq!(code(&complete(&c, "elsewhere", &parts).send().await.unwrap_err()), "NoSuchUpload");
    let expected = [p1.as_slice(), &p2].concat();
    assert_eq!(get_bytes(&c, "mpu", "obj").await, expected, "refused retries change nothing");
    assert!(c.head_object().bucket("mpu").key("elsewhere").send().await.is_err());

    // The memory is durable: still answered after a restart.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let c = client(&daemon, &id, &secret);
    let after_restart = complete(&c, "obj", &parts).send().await.unwrap();
    assert_eq!(after_restart.e_tag(), first.e_tag());

    // Once the key is overwritten the completion no longer speaks for it.
    c.put_object().bucket("mpu").key("obj").body(ByteStream::from_static(b"newer")).send().await.unwrap();
    assert_eq!(code(&complete(&c, "obj", &parts).send().await.unwrap_err()), "NoSuchUpload");
    assert_eq!(get_bytes(&c, "mpu", "obj").await, b"newer");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_range_outside_the_source_is_invalid_range() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, _) = start(dir.path(), "ranges");
    c.create_bucket().bucket("ranges").send().await.unwrap();
    let source = data(1000, 3);
    c.put_object().bucket("ranges").key("src").body(ByteStream::from(source.clone())).send().await.unwrap();
    let upload = c.create_multipart_upload().bucket("ranges").key("dst").send().await.unwrap();
    let upload_id = upload.upload_id().unwrap();
    let copy = |range: &str| {
        c.upload_part_copy()
            .bucket("ranges")
            .key("dst")
            .upload_id(upload_id)
            .part_number(1)
            .copy_source("ranges/src")
            .copy_source_range(range)
            .send()
    };
    for range in
        ["bytes=1000-1000", "bytes=0-1000", "bytes=999-2000", "bytes=5-", "bytes=-5", "bytes=9-3", "0-9", "bytes=a-b"]
    {
        let err = copy(range).await.unwrap_err();
        assert_eq!(code(&err), "InvalidRange", "{range}");
        assert_eq!(status(&err), Some(416), "{range}");
        assert!(err.message().is_some_and(|m| m.contains(range)), "{range}: {:?}", err.message());
    }
    let parts = c.list_parts().bucket("ranges").key("dst").upload_id(upload_id).send().await.unwrap();
    assert!(parts.parts().is_empty(), "a refused copy stores no part");
    // The last byte is inside: accepted.
    let last = copy("bytes=999-999").await.unwrap();
    assert!(last.copy_part_result().and_then(|r| r.e_tag()).is_some());
    let parts = c.list_parts().bucket("ranges").key("dst").upload_id(upload_id).send().await.unwrap();
    assert_eq!(parts.parts().iter().map(|p| p.size()).collect::<Vec<_>>(), [Some(1)]);
    assert_eq!(get_bytes(&c, "ranges", "src").await, source);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_conditional_on_the_etag() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, _) = start(dir.path(), "cas");
    c.create_bucket().bucket("cas").send().await.unwrap();
    let put =
        |key: &str, body: &'static [u8]| c.put_object().bucket("cas").key(key).body(ByteStream::from_static(body));
    let first = put("k", b"version 1").send().await.unwrap();
    let etag = first.e_tag().unwrap().to_owned();

    let err = put("k", b"lost update").if_match("\"0123456789abcdef0123456789abcdef\"").send().await.unwrap_err();
    assert_eq!((code(&err), status(&err)), ("PreconditionFailed".into(), Some(412)));
    assert_eq!(get_bytes(&c, "cas", "k").await, b"version 1");
    // AWS answers 404 NoSuchKey to If-Match on a key that holds nothing.
    let err = put("missing", b"x").if_match(&etag).send().await.unwrap_err();
    assert_eq!((code(&err), status(&err)), ("NoSuchKey".into(), Some(404)));
    assert!(c.head_object().bucket("cas").key("missing").send().await.is_err(), "nothing was created");
    let err = put("missing", b"x").if_match("*").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");

    let second = put("k", b"version 2").if_match(&etag).send().await.unwrap();
    assert_eq!(get_bytes(&c, "cas", "k").await, b"version 2");
    // The ETag that matched is gone now: a second writer with it loses.
    let err = put("k", b"version 2b").if_match(&etag).send().await.unwrap_err();
    assert_eq!(code(&err), "PreconditionFailed");
    put("k", b"version 3").if_match("*").send().await.unwrap();
    assert_eq!(get_bytes(&c, "cas", "k").await, b"version 3");
    let err = put("k", b"again").if_none_match("*").send().await.unwrap_err();
    assert_eq!(code(&err), "PreconditionFailed");
    assert_ne!(second.e_tag(), first.e_tag());

    // Two writers with the same ETag at once: the commit decides, exactly one wins.
    let base = c.put_object().bucket("cas").key("race").body(ByteStream::from_static(b"base")).send().await.unwrap();
    let racer = |seed| {
        c.put_object()
            .bucket("cas")
            .key("race")
            .if_match(base.e_tag().unwrap())
            .body(ByteStream::from(data(12 << 20, seed)))
            .send()
    };
    let (a, b) = tokio::join!(racer(10), racer(11));
    let (won, lost) = match (a, b) {
        (Ok(_), Err(e)) => (data(12 << 20, 10), e),
        (Err(e), Ok(_)) => (data(12 << 20, 11), e),
        (a, b) => panic!("exactly one conditional write wins: {a:?} / {b:?}"),
    };
    assert_eq!(code(&lost), "PreconditionFailed");
    assert_eq!(get_bytes(&c, "cas", "race").await, won);

    // CompleteMultipartUpload, under the same conditions.
    let current = c.head_object().bucket("cas").key("k").send().await.unwrap().e_tag().unwrap().to_owned();
    let (upload_id, parts) = upload_parts(&c, "cas", "k", &[b"assembled"], None).await;
    let complete =
        || c.complete_multipart_upload().bucket("cas").key("k").upload_id(&upload_id).multipart_upload(listing(&parts));
    let err = complete().if_none_match("*").send().await.unwrap_err();
    assert_eq!((code(&err), status(&err)), ("PreconditionFailed".into(), Some(412)));
    let err = complete().if_match(&etag).send().await.unwrap_err();
    assert_eq!(code(&err), "PreconditionFailed");
    assert_eq!(get_bytes(&c, "cas", "k").await, b"version 3", "refused completions change nothing");
    complete().if_match(&current).send().await.unwrap();
    assert_eq!(get_bytes(&c, "cas", "k").await, b"assembled");
    let (upload_id, parts) = upload_parts(&c, "cas", "new", &[b"fresh"], None).await;
    let err = c
        .complete_multipart_upload()
        .bucket("cas")
        .key("new")
        .upload_id(&upload_id)
        .multipart_upload(listing(&parts))
        .if_match(&current)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    c.complete_multipart_upload()
        .bucket("cas")
        .key("new")
        .upload_id(&upload_id)
        .multipart_upload(listing(&parts))
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(&c, "cas", "new").await, b"fresh");
    assert!(daemon.stop().success());
}

/// Keys a listing must return as they are: a space, '+', '%', non-ASCII, a delimiter.
const ODD_KEYS: [&str; 5] = ["a b/c", "per%cent", "plus+sign", "x/y", "\u{fc}n\u{ef}/c\u{f6}d\u{e9}"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_with_an_empty_delimiter_and_odd_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, (id, secret)) = start(dir.path(), "lists");
    c.create_bucket().bucket("lists").send().await.unwrap();
    for key in ODD_KEYS {
        c.put_object().bucket("lists").key(key).body(ByteStream::from(key.as_bytes().to_vec())).send().await.unwrap();
    }
    let mut sorted: Vec<&str> = ODD_KEYS.to_vec();
    sorted.sort();

    let v2 = c.list_objects_v2().bucket("lists").delimiter("").send().await.unwrap();
    assert_eq!(v2.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), sorted);
    assert!(v2.common_prefixes().is_empty() && v2.delimiter().is_none(), "{v2:?}");
    let v1 = c.list_objects().bucket("lists").delimiter("").send().await.unwrap();
    assert_eq!(v1.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), sorted);
    assert!(v1.common_prefixes().is_empty() && v1.delimiter().is_none(), "{v1:?}");
    // The bytes on the wire, whatever the SDK makes of them.
    let http = reqwest::Client::new();
    let base = format!("{}/lists", daemon.s3_url());
    for query in ["?delimiter=&list-type=2", "?delimiter="] {
        let url = tests::presign_url(&format!("{base}{query}"), &id, &secret, Duration::from_secs(60));
        let xml = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(!xml.contains("<Delimiter") && !xml.contains("<CommonPrefixes"), "{query}: {xml}");
        for key in ODD_KEYS {
            assert!(xml.contains(&format!("<Key>{key}</Key>")), "{key} as it is, in {xml}");
        }
    }

    // encoding-type=url encodes every key, prefix and delimiter, and only then.
    let encoded = ["a%20b/c", "per%25cent", "plus%2Bsign", "x/y", "%C3%BCn%C3%AF/c%C3%B6d%C3%A9"];
    let mut encoded_sorted = Vec::new();
    for key in &sorted {
        encoded_sorted.push(encoded[ODD_KEYS.iter().position(|k| k == key).unwrap()]);
    }
    let v2 = c.list_objects_v2().bucket("lists").encoding_type(EncodingType::Url).send().await.unwrap();
    assert_eq!(v2.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), encoded_sorted);
    let v1 = c.list_objects().bucket("lists").encoding_type(EncodingType::Url).send().await.unwrap();
    assert_eq!(v1.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), encoded_sorted);
    let rolled =
        c.list_objects_v2().bucket("lists").delimiter("/").encoding_type(EncodingType::Url).send().await.unwrap();
    let prefixes: Vec<_> = rolled.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["a%20b/", "x/", "%C3%BCn%C3%AF/"]);
    let plain = c.list_objects_v2().bucket("lists").delimiter("/").send().await.unwrap();
    let prefixes: Vec<_> = plain.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["a b/", "x/", "\u{fc}n\u{ef}/"]);
    assert_eq!(plain.delimiter(), Some("/"));
    for key in ODD_KEYS {
        assert_eq!(get_bytes(&c, "lists", key).await, key.as_bytes());
    }
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_buckets_pages_by_count_token_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, _) = start(dir.path(), "pages");
    let names = ["other", "pg-a", "pg-b", "pg-c"];
    for name in names {
        c.create_bucket().bucket(name).send().await.unwrap();
    }
    let (other_id, other_secret) = daemon.create_key(BIN, "neighbours");
    client(&daemon, &other_id, &other_secret).create_bucket().bucket("pg-theirs").send().await.unwrap();

    let page_names = |out: &aws_sdk_s3::operation::list_buckets::ListBucketsOutput| {
        out.buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect::<Vec<_>>()
    };
    let all = c.list_buckets().send().await.unwrap();
    assert_eq!(page_names(&all), names);
    assert!(all.continuation_token().is_none());

    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = c.list_buckets().max_buckets(3).set_continuation_token(token).send().await.unwrap();
        seen.extend(page_names(&page));
        pages += 1;
        token = page.continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!((seen, pages), (names.map(String::from).to_vec(), 2));

    let first = c.list_buckets().prefix("pg-").max_buckets(2).send().await.unwrap();
    assert_eq!(page_names(&first), ["pg-a", "pg-b"]);
    assert_eq!(first.prefix(), Some("pg-"));
    let token = first.continuation_token().expect("more buckets follow");
    let rest = c.list_buckets().prefix("pg-").max_buckets(2).continuation_token(token).send().await.unwrap();
    assert_eq!(page_names(&rest), ["pg-c"], "another project's pg-theirs is not listed");
    assert!(rest.continuation_token().is_none());

    for bad in [0, 10_001] {
        let err = c.list_buckets().max_buckets(bad).send().await.unwrap_err();
        assert_eq!(code(&err), "InvalidArgument", "max-buckets {bad}");
    }
    let err = c.list_buckets().continuation_token("not base64 !").send().await.unwrap_err();
    assert_eq!(code(&err), "InvalidArgument");
    assert_eq!(page_names(&c.list_buckets().send().await.unwrap()), names);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_object_attributes_answers_what_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, _) = start(dir.path(), "attrs");
    c.create_bucket().bucket("attrs").send().await.unwrap();
    let single = data(70_000, 4);
    let put = c
        .put_object()
        .bucket("attrs")
        .key("single")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(single.clone()))
        .send()
        .await
        .unwrap();
    let every = [
        ObjectAttributes::Etag,
        ObjectAttributes::Checksum,
        ObjectAttributes::ObjectParts,
        ObjectAttributes::StorageClass,
        ObjectAttributes::ObjectSize,
    ];
    let attrs = c
        .get_object_attributes()
        .bucket("attrs")
        .key("single")
        .set_object_attributes(Some(every.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.e_tag().map(|e| e.trim_matches('"')), put.e_tag().map(|e| e.trim_matches('"')));
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_sha256()), put.checksum_sha256());
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_type()).map(|t| t.as_str()), Some("FULL_OBJECT"));
    assert!(attrs.object_parts().is_none(), "a single PUT has no parts");
    assert_eq!(attrs.storage_class(), Some(&StorageClass::Standard));
    assert_eq!(attrs.object_size(), Some(70_000));
    assert!(attrs.last_modified().is_some());
    let only_size = c
        .get_object_attributes()
        .bucket("attrs")
        .key("single")
        .object_attributes(ObjectAttributes::ObjectSize)
        .send()
        .await;
    let only_size = only_size.unwrap();
    assert_eq!(only_size.object_size(), Some(70_000));
    assert!(only_size.e_tag().is_none() && only_size.checksum().is_none() && only_size.storage_class().is_none());

    // A multipart object with CRC32 parts: the composite checksum and each part's.
    let (p1, p2, p3) = (data(5 << 20, 5), data(5 << 20, 6), data(1234, 7));
    let (upload_id, parts) = upload_parts(&c, "attrs", "multi", &[&p1, &p2, &p3], Some(ChecksumAlgorithm::Crc32)).await;
    let done = c
        .complete_multipart_upload()
        .bucket("attrs")
        .key("multi")
        .upload_id(&upload_id)
        .multipart_upload(listing(&parts))
        .send()
        .await
        .unwrap();
    let attrs = c
        .get_object_attributes()
        .bucket("attrs")
        .key("multi")
        .set_object_attributes(Some(every.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.e_tag().map(|e| e.trim_matches('"')), done.e_tag().map(|e| e.trim_matches('"')));
    let composite = done.checksum_crc32().expect("a composite CRC32");
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_crc32()), composite.split('-').next());
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_type()).map(|t| t.as_str()), Some("COMPOSITE"));
    assert_eq!(attrs.object_size(), Some((p1.len() + p2.len() + p3.len()) as i64));
    let object_parts = attrs.object_parts().expect("ObjectParts");
    assert_eq!(object_parts.total_parts_count(), Some(3));
    assert_eq!(object_parts.is_truncated(), Some(false));
    let listed: Vec<_> = object_parts.parts().iter().map(|p| (p.part_number(), p.size(), p.checksum_crc32())).collect();
    let expected: Vec<_> = parts
        .iter()
        .zip([p1.len(), p2.len(), p3.len()])
        .map(|(p, len)| (p.part_number(), Some(len as i64), p.checksum_crc32()))
        .collect();
    assert_eq!(listed, expected);
    let first_page = c
        .get_object_attributes()
        .bucket("attrs")
        .key("multi")
        .object_attributes(ObjectAttributes::ObjectParts)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    let first_page = first_page.object_parts().unwrap();
    assert_eq!(first_page.parts().len(), 2);
    assert_eq!((first_page.is_truncated(), first_page.next_part_number_marker()), (Some(true), Some("2")));
    let rest = c
        .get_object_attributes()
        .bucket("attrs")
        .key("multi")
        .object_attributes(ObjectAttributes::ObjectParts)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    let rest = rest.object_parts().unwrap();
    assert_eq!(rest.parts().iter().map(|p| p.part_number()).collect::<Vec<_>>(), [Some(3)]);
    assert_eq!(rest.is_truncated(), Some(false));

    let err = c
        .get_object_attributes()
        .bucket("attrs")
        .key("missing")
        .object_attributes(ObjectAttributes::Etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    assert_eq!(get_bytes(&c, "attrs", "single").await, single);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_name_the_request_id_of_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, (id, secret)) = start(dir.path(), "ids");
    c.create_bucket().bucket("ids").send().await.unwrap();
    c.put_object().bucket("ids").key("k").body(ByteStream::from_static(b"kept")).send().await.unwrap();
    let http = reqwest::Client::new();
    let base = daemon.s3_url();
    let signed = |path: &str| tests::presign_url(&format!("{base}{path}"), &id, &secret, Duration::from_secs(60));
    // Refused by the operation, by the access check, by s3s's signature check.
    let mut forged = signed("/ids/k");
    forged.replace_range(forged.len() - 4.., "0000");
    let cases = [
        (signed("/ids/missing"), 404, "NoSuchKey"),
        (format!("{base}/ids/k"), 403, "AccessDenied"),
        (forged, 403, "SignatureDoesNotMatch"),
        (signed("/nosuchbucket/k"), 404, "NoSuchBucket"),
    ];
    let mut ids = Vec::new();
    for (url, want_status, want_code) in cases {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want_status, "{url}");
        let header = resp.headers()["x-amz-request-id"].to_str().unwrap().to_owned();
        let xml = resp.text().await.unwrap();
        assert!(xml.contains(&format!("<Code>{want_code}</Code>")), "{xml}");
        assert!(xml.contains(&format!("<RequestId>{header}</RequestId>")), "{header} in {xml}");
        assert_eq!(xml.matches("<RequestId>").count(), 1, "{xml}");
        ids.push(header);
    }
    let ok = http.get(signed("/ids/k")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    ids.push(ok.headers()["x-amz-request-id"].to_str().unwrap().to_owned());
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "one id per request: {ids:?}");
    // The SDK reads the same header.
    use aws_sdk_s3::operation::RequestId as _;
    let err = c.get_object().bucket("ids").key("missing").send().await.unwrap_err();
    assert!(err.request_id().is_some_and(|id| id.len() == 16), "{:?}", err.request_id());
    assert_eq!(get_bytes(&c, "ids", "k").await, b"kept");
    assert!(daemon.stop().success());
}

/// base64 of a CRC-32 (ISO-HDLC), as an aws-chunked trailer carries it.
fn crc32_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = u64::from(crc32(data)) << 16;
    let digits: String = (0..6).map(|i| ALPHABET[(n >> (42 - 6 * i) & 63) as usize] as char).collect();
    digits + "=="
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoding_is_kept_as_sent_but_aws_chunked() {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, (id, secret)) = start(dir.path(), "encodings");
    c.create_bucket().bucket("encodings").send().await.unwrap();
    // Through the SDK, which frames the body aws-chunked for its CRC32 trailer.
    c.put_object()
        .bucket("encodings")
        .key("gz")
        .content_encoding("gzip")
        .body(ByteStream::from_static(b"\x1f\x8b pretend"))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("encodings").key("gz").send().await.unwrap();
    assert_eq!(head.content_encoding(), Some("gzip"));
    let get = c.get_object().bucket("encodings").key("gz").send().await.unwrap();
    assert_eq!(get.content_encoding(), Some("gzip"));
    assert_eq!(get.body.collect().await.unwrap().into_bytes().as_ref(), b"\x1f\x8b pretend", "stored as sent");
    c.put_object()
        .bucket("encodings")
        .key("two")
        .content_encoding("br, gzip")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("encodings").key("two").send().await.unwrap();
    assert_eq!(head.content_encoding(), Some("br,gzip"));

    // `aws-chunked,gzip` exactly as a client writes it, aws-chunked first.
    let payload = b"compressed bytes";
    let url = format!("{}/encodings/raw", daemon.s3_url());
    let headers = [
        ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER".to_owned()),
        ("x-amz-trailer", "x-amz-checksum-crc32".to_owned()),
        ("content-encoding", "aws-chunked,gzip".to_owned()),
        ("x-amz-decoded-content-length", payload.len().to_string()),
    ];
    let identity = aws_credential_types::Credentials::new(&id, &secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "PUT",
        &url,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Precomputed("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let trailer = crc32_base64(payload);
    let mut body = format!("{:x}\r\n", payload.len()).into_bytes();
    body.extend_from_slice(payload);
    body.extend_from_slice(format!("\r\n0\r\nx-amz-checksum-crc32:{trailer}\r\n\r\n").as_bytes());
    let mut request = http::Request::builder().method("PUT").uri(&url);
    for (k, v) in &headers {
        request = request.header(*k, v);
    }
    let mut request = request.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    let mut send = reqwest::Client::new().put(&url).body(body);
    for (k, v) in request.headers() {
        send = send.header(k, v);
    }
    let resp = send.send().await.unwrap();
    let status = resp.status();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    let head = c.head_object().bucket("encodings").key("raw").send().await.unwrap();
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(
        get_bytes(&c, "encodings", "raw").await,
        payload,
        "the aws-chunked framing is gone, the bytes are as sent"
    );
    // aws-chunked alone is no encoding of the object.
    c.put_object().bucket("encodings").key("plain").body(ByteStream::from_static(b"p")).send().await.unwrap();
    assert_eq!(c.head_object().bucket("encodings").key("plain").send().await.unwrap().content_encoding(), None);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_expired_or_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, c, _) = start(dir.path(), "presign");
    c.create_bucket().bucket("presign").send().await.unwrap();
    c.put_object().bucket("presign").key("k").body(ByteStream::from_static(b"kept")).send().await.unwrap();
    let http = reqwest::Client::new();
    let presign = async |secs| {
        let config = PresigningConfig::expires_in(Duration::from_secs(secs)).unwrap();
        c.get_object().bucket("presign").key("k").presigned(config).await.unwrap().uri().to_owned()
    };
    let short = presign(1).await;
    let fresh = presign(300).await;
    assert_eq!(http.get(&short).send().await.unwrap().status(), 200, "valid while not expired");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = http.get(&short).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("<Code>AccessDenied</Code>") && xml.contains("expired"), "{xml}");

    // X-Amz-Expires edited: refused for the value, before the signature is looked at.
    let edited = |value: &str| fresh.replace("X-Amz-Expires=300", &format!("X-Amz-Expires={value}"));
    assert_ne!(edited("0"), fresh);
    for (value, want_status, want_code) in [
        ("0", 403, "AccessDenied"),
        ("604801", 400, "AuthorizationQueryParametersError"),
        ("99999999999", 400, "AuthorizationQueryParametersError"),
        ("-1", 400, "AuthorizationQueryParametersError"),
        ("soon", 400, "AuthorizationQueryParametersError"),
    ] {
        let resp = http.get(edited(value)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want_status, "X-Amz-Expires={value}");
        let xml = resp.text().await.unwrap();
        assert!(xml.contains(&format!("<Code>{want_code}</Code>")), "X-Amz-Expires={value}: {xml}");
    }
    // An edit within range is a signature mismatch, as any edit of a signed URL.
    let resp = http.get(edited("600")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("<Code>SignatureDoesNotMatch</Code>"));
    let put = c
        .put_object()
        .bucket("presign")
        .key("k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap()
        .uri()
        .replace("X-Amz-Expires=300", "X-Amz-Expires=0");
    let resp = http.put(&put).body("overwritten").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(http.get(&fresh).send().await.unwrap().bytes().await.unwrap().as_ref(), b"kept");
    assert_eq!(get_bytes(&c, "presign", "k").await, b"kept");
    assert!(daemon.stop().success());
}
