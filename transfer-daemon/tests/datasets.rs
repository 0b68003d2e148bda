//! `clusster dataset publish|show|checkout` against the real daemon, with aws-sdk-s3
//! writing and reading the objects: a published version outlives S3 overwrites and
//! deletes of its prefix, and bad input gets a clear error and changes nothing.

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use std::process::Command;
use tests::{Daemon, content};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

fn clusster(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster")
}

/// Runs a `dataset` verb with `--json` against `daemon`; its exit code and output.
fn dataset(daemon: &Daemon, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["dataset"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    let out = clusster(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn put(s3: &Client, key: &str, data: Vec<u8>) {
    s3.put_object().bucket("data").key(key).body(ByteStream::from(data)).send().await.unwrap();
}

async fn get(s3: &Client, key: &str) -> Vec<u8> {
    let out = s3.get_object().bucket("data").key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_version_outlives_s3_writes_and_checks_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let (id, secret) = daemon.create_key(BIN, "climate");
    let s3 = common::s3_client(&daemon, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    let big = content(1, 5 << 20, 1);
    let small = b"station,temp\nparis,12.5\n".to_vec();
    put(&s3, "run1/tas.nc", big.clone()).await;
    put(&s3, "run1/stations.csv", small.clone()).await;

    // The default site is "local": its namespaces are local.something.
    let (code, published, err) = dataset(&daemon, &["publish", "data/run1/", "local.climate/era5", "--tag", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(published["files"], 2, "{published}");
    assert_eq!(published["bytes"], (big.len() + small.len()) as u64);
    assert_eq!(published["new"], true);
    let version = published["version"].as_str().unwrap().to_owned();
    assert_eq!(version.len(), 64);

    // Overwritten and deleted by S3, then collected: the version does not change.
    put(&s3, "run1/tas.nc", content(2, 5 << 20, 2)).await;
    s3.delete_object().bucket("data").key("run1/stations.csv").send().await.unwrap();
    let gc = clusster(&["gc", "--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    assert!(gc.status.success());
    let (code, shown, err) = dataset(&daemon, &["show", "local.climate/era5"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(shown["versions"][0]["version"], version.as_str(), "{shown}");
    assert_eq!(shown["versions"][0]["tags"][0], "v1");
    assert_eq!(shown["versions"][0]["replicas"][0]["site"], "local");
    assert_eq!(shown["versions"][0]["replicas"][0]["state"], "complete");
    assert_eq!(shown["project"], "climate");

    // Checked out by tag, and by id: the files as published.
    let (code, done, err) = dataset(&daemon, &["checkout", "local.climate/era5@v1", "data/restored/"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(done["files"], 2);
    assert_eq!(get(&s3, "restored/tas.nc").await, big);
    assert_eq!(get(&s3, "restored/stations.csv").await, small);
    let by_id = format!("local.climate/era5@{version}");
    assert_eq!(dataset(&daemon, &["checkout", &by_id, "data/again/"]).0, Some(0));
    assert_eq!(get(&s3, "again/tas.nc").await, big);
    let check = clusster(&["check", "--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // A second version; the tag `latest` moves between them; the listing counts both.
    let (code, v2, err) = dataset(&daemon, &["publish", "data/run1/", "local.climate/era5", "--tag", "latest"]);
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(v2["version"], version.as_str());
    let (code, moved, err) = dataset(&daemon, &["tag", "local.climate/era5@v1", "latest"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(moved["version"], version.as_str());
    let (_, listed, _) = dataset(&daemon, &["list", "local."]);
    assert_eq!(listed, serde_json::json!([{ "ns": "local.climate", "name": "era5", "versions": 2 }]));
    let (_, listed, _) = dataset(&daemon, &["list", "paris."]);
    assert_eq!(listed, serde_json::json!([]));
    // Searched by name prefix and by a tag it has.
    let (_, listed, _) = dataset(&daemon, &["list", "local.", "--name", "era", "--tag", "latest"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(dataset(&daemon, &["list", "--name", "cmip"]).1, serde_json::json!([]));
    assert_eq!(dataset(&daemon, &["list", "--tag", "v7"]).1, serde_json::json!([]));
    let (code, _, err) = dataset(&daemon, &["tag", "local.climate/era5@v9", "latest"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no such tag or version"), "{err}");
    let (code, _, err) = dataset(&daemon, &["tag", "local.climate/era5@v1", "bad tag"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("tag \"bad tag\""), "{err}");
    // Described, then found by its metadata; a redescription replaces it.
    let (code, described, err) =
        dataset(&daemon, &["describe", "local.climate/era5", "experiment=cmip6", "grid=0.25 deg"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(described["metadata"]["grid"], "0.25 deg", "{described}");
    let found = |meta: &str| dataset(&daemon, &["list", "--meta", meta]).1;
    assert_eq!(found("experiment=cmip6")[0]["name"], "era5");
    assert_eq!(found("grid")[0]["name"], "era5", "a key alone matches any value");
    assert_eq!(found("experiment=cmip5"), serde_json::json!([]));
    let (code, _, err) = dataset(&daemon, &["list", "--meta", "bad key=1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("metadata key"), "{err}");
    for bad in [&["local.climate/era5", "no-equals-sign"][..], &["local.climate/nothing", "a=1"], &["paris.x/d", "a=1"]]
    {
        let (code, _, err) = dataset(&daemon, &[&["describe"][..], bad].concat());
        assert_ne!(code, Some(0), "{bad:?}");
        assert!(!err.is_empty(), "{bad:?}");
    }
    let (code, _, err) = dataset(&daemon, &["describe", "local.climate/era5", "bad\nvalue=1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("metadata key"), "{err}");
    assert_eq!(found("experiment=cmip6")[0]["name"], "era5", "a refused description changes nothing");
    let (_, shown, _) = dataset(&daemon, &["show", "local.climate/era5"]);
    assert_eq!(shown["metadata"], serde_json::json!({ "experiment": "cmip6", "grid": "0.25 deg" }), "{shown}");
    dataset(&daemon, &["describe", "local.climate/era5", "--clear"]);
    assert_eq!(found("experiment"), serde_json::json!([]));
    let (_, shown, _) = dataset(&daemon, &["show", "local.climate/era5"]);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    let first = shown["versions"].as_array().unwrap().iter().find(|v| v["version"] == version.as_str()).unwrap();
    let mut tags: Vec<&str> = first["tags"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1"], "{shown}");

    // The change feed, in pages: every event once, in log order, then nothing new.
    let data_dir = daemon.data_dir.to_str().unwrap();
    let page = |cursor: &str| {
        let out = clusster(&["catalog", "feed", "--cursor", cursor, "--limit", "3", "--json", "--data-dir", data_dir]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (mut cursor, mut seqs) = (String::new(), Vec::new());
    loop {
        let p = page(&cursor);
        let events = p["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        cursor = p["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(cursor, format!("local:{}", seqs.len()));
    let out = clusster(&["catalog", "feed", "--cursor", "nonsense", "--data-dir", data_dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("site:seq"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_dataset_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let (id, secret) = daemon.create_key(BIN, "climate");
    let s3 = common::s3_client(&daemon, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    put(&s3, "a", b"x".to_vec()).await;

    // Malformed names: usage errors (exit 2) before the daemon is asked.
    let (code, _, err) = dataset(&daemon, &["publish", "data", "no-slash"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
    let (code, _, err) = dataset(&daemon, &["checkout", "local.c/d", "data/"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("@TAG"), "{err}");
    // Refused by the daemon: exit 1 with its reason.
    let (code, _, err) = dataset(&daemon, &["publish", "data", "paris.climate/era5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at home at site paris"), "{err}");
    let (code, _, err) = dataset(&daemon, &["publish", "nope/x/", "local.climate/era5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = dataset(&daemon, &["publish", "data/empty/", "local.climate/era5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to publish"), "{err}");
    let (code, _, err) = dataset(&daemon, &["show", "local.climate/era5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "nothing was published: {err}");

    dataset(&daemon, &["publish", "data", "local.climate/era5", "--tag", "v1"]);
    let (code, _, err) = dataset(&daemon, &["checkout", "local.climate/era5@v9", "data/out/"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no such tag"), "{err}");
    // The raw API names what is wrong in a problem document.
    let token = std::fs::read_to_string(daemon.data_dir.join("admin.token")).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/catalog/datasets/local.climate/era5/versions", daemon.admin_url()))
        .bearer_auth(token.trim())
        .header("content-type", "application/json")
        .body(r#"{"bucket": "data", "colour": "blue"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");
    // Without the token: 401.
    let answer = reqwest::get(format!("{}/catalog/datasets/local.climate/era5", daemon.admin_url())).await.unwrap();
    assert_eq!(answer.status(), 401);
    let listed = s3.list_objects_v2().bucket("data").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1, "no refused request wrote an object");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_reach_their_project_and_scopes_only() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &[]);
    let (id, secret) = daemon.create_key(BIN, "climate");
    let s3 = common::s3_client(&daemon, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    put(&s3, "run1/a", b"some data".to_vec()).await;
    let data_dir = daemon.data_dir.to_str().unwrap();
    let token = |project: &str, scopes: &[&str]| {
        let mut args = vec!["token", "create", "--project", project, "--json", "--data-dir", data_dir];
        for scope in scopes {
            args.extend_from_slice(&["--scope", scope]);
        }
        let out = clusster(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (created["token"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned())
    };
    let (reader, _) = token("climate", &["catalog:read"]);
    let (writer, writer_id) = token("climate", &["catalog:read", "catalog:write"]);
    let (stranger, _) = token("physics", &["catalog:write"]);
    let call = |token: Option<String>, method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let url = format!("{}{path}", daemon.admin_url());
        async move {
            let mut request = reqwest::Client::new().request(method, url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let publish = serde_json::json!({ "bucket": "data", "prefix": "run1/", "tag": "v1" });
    let versions = "/catalog/datasets/local.climate/era5/versions";

    let (status, problem) = call(None, reqwest::Method::POST, versions, Some(publish.clone())).await;
    assert_eq!(status, 401, "{problem}");
    let (status, problem) = call(Some(reader.clone()), reqwest::Method::POST, versions, Some(publish.clone())).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("catalog:write"), "{problem}");
    let (status, problem) = call(Some(stranger), reqwest::Method::POST, versions, Some(publish.clone())).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("acts for project \"physics\""), "{problem}");
    let (status, published) = call(Some(writer.clone()), reqwest::Method::POST, versions, Some(publish)).await;
    assert_eq!(status, 201, "{published}");
    let (status, shown) =
        call(Some(reader.clone()), reqwest::Method::GET, "/catalog/datasets/local.climate/era5", None).await;
    assert_eq!(status, 200, "{shown}");
    // Metadata: written by the namespace's project only, with a problem naming the field.
    let describe = "/catalog/datasets/local.climate/era5/metadata";
    let metadata = serde_json::json!({ "metadata": { "experiment": "cmip6" } });
    let (status, _) = call(Some(reader.clone()), reqwest::Method::PUT, describe, Some(metadata.clone())).await;
    assert_eq!(status, 403);
    let (status, described) = call(Some(writer.clone()), reqwest::Method::PUT, describe, Some(metadata)).await;
    assert_eq!(status, 200, "{described}");
    let too_long = serde_json::json!({ "metadata": { "experiment": "x".repeat(300) } });
    let (status, problem) = call(Some(writer.clone()), reqwest::Method::PUT, describe, Some(too_long)).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("metadata")), "{problem}");
    let (status, problem) =
        call(Some(reader.clone()), reqwest::Method::GET, "/catalog/datasets?meta=experiment=cmip6", None).await;
    assert_eq!((status, problem[0]["name"].as_str()), (200, Some("era5")), "{problem}");
    // Another project may not check climate's files out into a bucket of its own.
    let (physics_id, physics_secret) = daemon.create_key(BIN, "physics");
    let physics_s3 = common::s3_client(&daemon, &physics_id, &physics_secret);
    physics_s3.create_bucket().bucket("phys").send().await.unwrap();
    let (stranger_writer, _) = token("physics", &["catalog:write"]);
    let checkout = serde_json::json!({ "version": "v1", "bucket": "phys", "prefix": "stolen/" });
    let (status, problem) = call(
        Some(stranger_writer),
        reqwest::Method::POST,
        "/catalog/datasets/local.climate/era5/checkout",
        Some(checkout),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("namespace local.climate"), "{problem}");
    assert!(physics_s3.list_objects_v2().bucket("phys").send().await.unwrap().contents().is_empty());
    // An API token is no admin token.
    assert_eq!(call(Some(writer.clone()), reqwest::Method::GET, "/admin/keys", None).await.0, 401);
    // The CLI takes one from CLUSSTER_TOKEN.
    let out = Command::new(BIN)
        .args(["dataset", "show", "local.climate/era5", "--json", "--data-dir", data_dir])
        .env("CLUSSTER_TOKEN", &reader)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Listed without the tokens themselves; deleted, one stops working at once.
    let listed = clusster(&["token", "list", "--json", "--data-dir", data_dir]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains(&writer) && text.contains(&writer_id), "{text}");
    assert!(clusster(&["token", "delete", &writer_id, "--data-dir", data_dir]).status.success());
    let (status, _) = call(Some(writer), reqwest::Method::GET, "/catalog/datasets/local.climate/era5", None).await;
    assert_eq!(status, 401);
    // A scope that does not exist is refused, with the ones that do.
    let out = clusster(&["token", "create", "--project", "climate", "--scope", "root", "--data-dir", data_dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("catalog:read"), "{}", String::from_utf8_lossy(&out.stderr));
}
