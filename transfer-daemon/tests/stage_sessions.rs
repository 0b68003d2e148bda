//! Stage-out sessions against the real daemon, as a client that never finishes them:
//! the chunks of a session a stop ended are let go at the next start (nothing could ever
//! publish or abort it), and one project cannot open sessions without end.

use std::process::Command;
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

/// POSTs `body`, JSON unless it is a `chunks` body.
async fn post(daemon: &Daemon, token: &str, path: &str, body: reqwest::Body) -> (u16, serde_json::Value) {
    let kind = if path.ends_with("/chunks") { "application/octet-stream" } else { "application/json" };
    let response = reqwest::Client::new()
        .post(format!("{}{path}", daemon.admin_url()))
        .bearer_auth(token)
        .header("content-type", kind)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

async fn open(daemon: &Daemon, token: &str, dataset: &str) -> (u16, serde_json::Value) {
    post(daemon, token, "/catalog/stage/out", serde_json::json!({ "dataset": dataset }).to_string().into()).await
}

/// A `chunks` body of `chunks`: id, u32 big-endian length, bytes each.
fn records(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for c in chunks {
        body.extend_from_slice(blake3::hash(c).as_bytes());
        body.extend_from_slice(&(c.len() as u32).to_be_bytes());
        body.extend_from_slice(c);
    }
    body
}

fn gc(daemon: &Daemon) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["gc", "--json", "--data-dir", daemon.data_dir.to_str().unwrap()])
        .output()
        .expect("run clusster gc");
    assert!(out.status.success(), "gc: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_lets_go_of_unfinished_sessions_and_a_project_cannot_open_them_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let daemon = Daemon::start(BIN, &site, &[]);
    let climate = daemon.create_token(BIN, "climate", &["stage"]);

    // Chunks sent in a session that is never published: held while it lives.
    let (status, session) = open(&daemon, &climate, "local.climate/run").await;
    assert_eq!(status, 201, "{session}");
    let id = session["session"].as_str().unwrap().to_owned();
    let chunks: Vec<Vec<u8>> = (0..4u64).map(|i| tests::content(i, 100_000, i)).collect();
    let (status, stored) =
        post(&daemon, &climate, &format!("/catalog/stage/out/{id}/chunks"), records(&chunks).into()).await;
    assert_eq!((status, stored["chunks"].as_u64()), (200, Some(4)), "{stored}");
    assert_eq!(gc(&daemon)["chunks_deleted"], 0, "a live session's chunks are kept");

    // The daemon stops with the session open; once started again, nothing can end
    // that session, and its chunks are garbage.
    assert!(daemon.stop().success());
    let daemon = Daemon::start(BIN, &site, &[]);
    let (status, gone) =
        post(&daemon, &climate, &format!("/catalog/stage/out/{id}/missing"), r#"{"chunks": []}"#.into()).await;
    assert_eq!(status, 404, "the session ended with the stop: {gone}");
    assert_eq!(gc(&daemon)["chunks_deleted"], 4, "the ended session's chunks are let go");

    // Sessions per project are bounded; another project is not held back by it, and
    // a session that ends makes room.
    let mut ids = Vec::new();
    for n in 0..catalog::stage::MAX_SESSIONS_PER_PROJECT {
        let (status, session) = open(&daemon, &climate, &format!("local.climate/run{n}")).await;
        assert_eq!(status, 201, "{session}");
        ids.push(session["session"].as_str().unwrap().to_owned());
    }
    let (status, refused) = open(&daemon, &climate, "local.climate/one-more").await;
    assert_eq!(status, 429, "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("16 stage-out sessions open") && detail.contains("abort"), "{detail}");
    let ocean = daemon.create_token(BIN, "ocean", &["stage"]);
    assert_eq!(open(&daemon, &ocean, "local.ocean/run").await.0, 201, "another project opens its own");
    let aborted = reqwest::Client::new()
        .delete(format!("{}/catalog/stage/out/{}", daemon.admin_url(), ids[0]))
        .bearer_auth(&climate)
        .send()
        .await
        .unwrap();
    assert!(aborted.status().is_success(), "{}", aborted.status());
    assert_eq!(open(&daemon, &climate, "local.climate/one-more").await.0, 201, "an ended session makes room");

    // What was refused left the site as it was.
    let out = Command::new(BIN).args(["check", "--data-dir", site.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "check: {}", String::from_utf8_lossy(&out.stderr));
    assert!(daemon.stop().success());
}
