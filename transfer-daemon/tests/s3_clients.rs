//! Real S3 clients from Debian's packages against the real binary: rclone (provider
//! Other, which lists with V1, and Minio, which lists with V2 and checks multipart
//! ETags) and the AWS CLI v2.

use std::path::Path;
use std::process::{Command, Output};
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");
/// Debian's AWS CLI v2 (a pip v1 may shadow it in PATH).
const AWS: &str = "/usr/bin/aws";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/install-deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn rclone(daemon: &Daemon, provider: &str, key: &(String, String)) -> impl Fn(&[&str]) -> Output + use<> {
    let endpoint = daemon.s3_url();
    let (id, secret) = key.clone();
    let provider = provider.to_owned();
    move |args: &[&str]| {
        let mut cmd = Command::new("rclone");
        cmd.args(args)
            .args(["--retries", "1", "--low-level-retries", "2"])
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_C_TYPE", "s3")
            .env("RCLONE_CONFIG_C_PROVIDER", &provider)
            .env("RCLONE_CONFIG_C_ENDPOINT", &endpoint)
            .env("RCLONE_CONFIG_C_REGION", "us-east-1")
            .env("RCLONE_CONFIG_C_ACCESS_KEY_ID", &id)
            .env("RCLONE_CONFIG_C_SECRET_ACCESS_KEY", &secret)
            .env("RCLONE_CONFIG_C_FORCE_PATH_STYLE", "true")
            // rclone 1.60 fails every call with "unsupported transport" when this is set,
            // even for plain-http endpoints.
            .env_remove("AWS_CA_BUNDLE");
        run(&mut cmd)
    }
}

fn rclone_round_trip(provider: &str, big_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let key = daemon.create_key(BIN, "astro");
    let rc = rclone(&daemon, provider, &key);
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"hello from the telescope\n");
    write(&src.join("sub/b.bin"), &tests::content(1, 1 << 20, 1));
    write(&src.join("sub/deeper/c.bin"), &tests::content(2, 3 << 20, 2));
    write(&src.join("big.bin"), &tests::content(3, big_bytes, 3));
    run(Command::new("touch").args(["-d", "2001-02-03 04:05:06"]).arg(src.join("a.txt")));

    rc(&["mkdir", "c:bkt"]);
    // Small cutoff and 16 MiB chunks: big.bin goes up as a multipart upload.
    rc(&["copy", src.to_str().unwrap(), "c:bkt/data", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "16M"]);
    rc(&["check", src.to_str().unwrap(), "c:bkt/data"]);
    let listed = String::from_utf8(rc(&["lsf", "-R", "c:bkt/data"]).stdout).unwrap();
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, ["a.txt", "big.bin", "sub/", "sub/b.bin", "sub/deeper/", "sub/deeper/c.bin"]);
    let lsl = String::from_utf8(rc(&["lsl", "c:bkt/data/a.txt"]).stdout).unwrap();
    assert!(lsl.contains("2001-02-03 04:05:06"), "mtime preserved: {lsl}");

    // Change, add and remove files locally; sync makes the bucket match.
    write(&src.join("a.txt"), b"hello again\n");
    write(&src.join("new.txt"), b"new file\n");
    std::fs::remove_file(src.join("sub/b.bin")).unwrap();
    rc(&["sync", src.to_str().unwrap(), "c:bkt/data", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "16M"]);
    rc(&["check", src.to_str().unwrap(), "c:bkt/data"]);

    // Download and compare byte for byte.
    let dst = dir.path().join("dst");
    rc(&["copy", "c:bkt/data", dst.to_str().unwrap()]);
    run(Command::new("diff").arg("-r").arg(&src).arg(&dst));

    rc(&["delete", "c:bkt/data"]);
    assert!(rc(&["lsf", "-R", "c:bkt/data"]).stdout.is_empty());
    rc(&["rmdir", "c:bkt"]);
    assert!(daemon.stop().success());
}

#[test]
fn rclone_provider_other_lists_with_v1() {
    rclone_round_trip("Other", 20 << 20);
}

#[test]
fn rclone_provider_minio_lists_with_v2_and_checks_multipart_etags() {
    rclone_round_trip("Minio", 300 << 20);
}

#[test]
fn aws_cli_copies_syncs_and_uses_multipart() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let (id, secret) = daemon.create_key(BIN, "climate");
    let cfg = dir.path().join("aws.cfg");
    std::fs::write(
        &cfg,
        "[default]\ns3 =\n  addressing_style = path\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n",
    )
    .unwrap();
    let endpoint = daemon.s3_url();
    let aws = |args: &[&str]| {
        let mut cmd = Command::new(AWS);
        cmd.arg("--endpoint-url")
            .arg(&endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &cfg)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_PAGER", "")
            .env_remove("AWS_CA_BUNDLE");
        run(&mut cmd)
    };
    let src = dir.path().join("src");
    write(&src.join("one.bin"), &tests::content(5, 30 << 20, 5));
    write(&src.join("tree/two.txt"), b"two\n");
    write(&src.join("tree/three.bin"), &tests::content(6, 2 << 20, 6));

    aws(&["s3", "mb", "s3://climate"]);
    aws(&["s3", "cp", src.join("one.bin").to_str().unwrap(), "s3://climate/one.bin"]);
    aws(&["s3", "sync", src.join("tree").to_str().unwrap(), "s3://climate/tree"]);
    let ls = String::from_utf8(aws(&["s3", "ls", "--recursive", "s3://climate"]).stdout).unwrap();
    for name in ["one.bin", "tree/two.txt", "tree/three.bin"] {
        assert!(ls.contains(name), "{name} missing from: {ls}");
    }
    let back = dir.path().join("back");
    aws(&["s3", "cp", "--recursive", "s3://climate", back.to_str().unwrap()]);
    run(Command::new("diff").arg("-r").arg(&src).arg(&back));

    // s3api: an explicit multipart upload and a server-side copy.
    let part = dir.path().join("part.bin");
    write(&part, &tests::content(7, 5 << 20, 7));
    let created = aws(&["s3api", "create-multipart-upload", "--bucket", "climate", "--key", "mp.bin"]);
    let upload_id =
        serde_json::from_slice::<serde_json::Value>(&created.stdout).unwrap()["UploadId"].as_str().unwrap().to_owned();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let out = aws(&[
            "s3api",
            "upload-part",
            "--bucket",
            "climate",
            "--key",
            "mp.bin",
            "--upload-id",
            &upload_id,
            "--part-number",
            &n.to_string(),
            "--body",
            part.to_str().unwrap(),
        ]);
        let etag =
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ETag"].as_str().unwrap().to_owned();
        parts.push(serde_json::json!({ "PartNumber": n, "ETag": etag }));
    }
    let layout = serde_json::json!({ "Parts": parts }).to_string();
    aws(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "climate",
        "--key",
        "mp.bin",
        "--upload-id",
        &upload_id,
        "--multipart-upload",
        &layout,
    ]);
    aws(&["s3api", "copy-object", "--bucket", "climate", "--key", "mp-copy.bin", "--copy-source", "climate/mp.bin"]);
    let head = aws(&["s3api", "head-object", "--bucket", "climate", "--key", "mp-copy.bin"]);
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(head["ContentLength"], 10 << 20);
    assert!(head["ETag"].as_str().unwrap().ends_with("-2\""), "{head}");
    let got = dir.path().join("got.bin");
    aws(&["s3", "cp", "s3://climate/mp-copy.bin", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), [tests::content(7, 5 << 20, 7), tests::content(7, 5 << 20, 7)].concat());

    aws(&["s3", "rm", "--recursive", "s3://climate"]);
    assert!(aws(&["s3", "ls", "s3://climate"]).stdout.is_empty());
    aws(&["s3", "rb", "s3://climate"]);
    assert!(daemon.stop().success());
}

#[test]
fn boto3_over_tls_sends_trailers_and_uploads_multipart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let config = dir.path().join("clusster.toml");
    std::fs::write(&config, format!("[s3]\ntls_cert = {:?}\ntls_key = {:?}\n", cert, key)).unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let endpoint = daemon.s3_url();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let (id, secret) = daemon.create_key(BIN, "genomics");
    let script = r#"
import io, os, sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, key_id, secret, cert = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                  region_name="us-east-1", verify=cert, config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="seq")
data = os.urandom(3 * 1024 * 1024 + 17)
# Over https boto3 sends the body aws-chunked with a CRC32 trailer.
put = s3.put_object(Bucket="seq", Key="reads.fastq", Body=data)
assert "ChecksumCRC32" in put, put
got = s3.get_object(Bucket="seq", Key="reads.fastq", ChecksumMode="ENABLED")
assert got["Body"].read() == data
assert got["ChecksumCRC32"] == put["ChecksumCRC32"]
big = os.urandom(12 * 1024 * 1024)
s3.upload_fileobj(io.BytesIO(big), "seq", "big.bam",
                  Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
head = s3.head_object(Bucket="seq", Key="big.bam")
assert head["ContentLength"] == len(big) and head["ETag"].endswith('-3"'), head
out = io.BytesIO()
s3.download_fileobj("seq", "big.bam", out)
assert out.getvalue() == big
try:
    s3.put_object(Bucket="seq", Key="bad", Body=b"payload", ChecksumCRC32="AAAAAA==")
    sys.exit("a wrong checksum was accepted")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "BadDigest", e.response
print("boto3", boto3.__version__, "ok")
"#;
    let out = run(Command::new("python3").args(["-c", script, &endpoint, &id, &secret, cert.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_s3_client_round_trips() {
    use object_store::aws::AmazonS3Builder;
    use object_store::{ObjectStore, PutPayload, path::Path as ObjectPath};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let (id, secret) = daemon.create_key(BIN, "hpc");
    // The bucket comes from another client: object_store does not create buckets.
    run(Command::new(AWS)
        .args(["--endpoint-url", &daemon.s3_url(), "s3", "mb", "s3://lake"])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE"));
    let store = AmazonS3Builder::new()
        .with_endpoint(daemon.s3_url())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("lake")
        .with_access_key_id(&id)
        .with_secret_access_key(&secret)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let small = ObjectPath::from("tables/part-0.parquet");
    let data = tests::content(11, 2 << 20, 11);
    store.put(&small, PutPayload::from(data.clone())).await.unwrap();
    let range = store.get_range(&small, 1000..5000).await.unwrap();
    assert_eq!(&range[..], &data[1000..5000]);

    let big = ObjectPath::from("tables/part-1.parquet");
    let mut upload = store.put_multipart(&big).await.unwrap();
    let parts = [tests::content(12, 5 << 20, 12), tests::content(13, 5 << 20, 13), tests::content(14, 1 << 20, 14)];
    for p in &parts {
        upload.put_part(PutPayload::from(p.clone())).await.unwrap();
    }
    upload.complete().await.unwrap();
    assert_eq!(store.get(&big).await.unwrap().bytes().await.unwrap().to_vec(), parts.concat());

    store.copy(&small, &ObjectPath::from("backup/part-0.parquet")).await.unwrap();
    let mut listed: Vec<String> = futures_list(&store, "tables").await;
    listed.sort();
    assert_eq!(listed, ["tables/part-0.parquet", "tables/part-1.parquet"]);
    store.delete(&small).await.unwrap();
    assert!(matches!(store.head(&small).await, Err(object_store::Error::NotFound { .. })));
    let copy = store.get(&ObjectPath::from("backup/part-0.parquet")).await.unwrap().bytes().await.unwrap();
    assert_eq!(copy.to_vec(), data);
    assert!(daemon.stop().success());
}

async fn futures_list(store: &impl object_store::ObjectStore, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(prefix);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    metas.into_iter().map(|m| m.location.to_string()).collect()
}
