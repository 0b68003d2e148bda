//! Transfers between real `clusster` daemons on loopback: push, pull, third-party copy,
//! dedup of what the receiver holds, deltas, resume after the receiver is killed, a
//! corrupt chunk at the sender, what a bucket's shares with sites let peers do, and the
//! catalog's sync between sites.

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{Daemon, content};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

fn clusster(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster")
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "clusster failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A federation of sites in a test's directory (see [`tests::Federation`]).
struct Federation(tests::Federation);

impl Federation {
    fn new(root: &Path, names: &[&str]) -> Self {
        Self::with_transfer_settings(root, names, "")
    }

    /// As [`Self::new`], with `settings` (TOML lines) added to each site's `[transfer]`.
    fn with_transfer_settings(root: &Path, names: &[&str], settings: &str) -> Self {
        let sites: Vec<(&str, &[&str])> = names.iter().map(|name| (*name, &[][..])).collect();
        Self::with_sites(root, &sites, settings)
    }

    /// Sites with attributes (`KEY=VALUE` each), and `settings` in each `[transfer]`.
    fn with_sites(root: &Path, sites: &[(&str, &[&str])], settings: &str) -> Self {
        Self(tests::Federation::new(BIN, root, sites, settings))
    }

    fn start(&self, name: &str) -> Daemon {
        self.0.start(name)
    }
}

fn s3(daemon: &Daemon) -> Client {
    let (id, secret) = daemon.create_key(BIN, "proj");
    common::s3_client(daemon, &id, &secret)
}

async fn put(client: &Client, bucket: &str, key: &str, data: Vec<u8>) {
    client.put_object().bucket(bucket).key(key).body(ByteStream::from(data)).send().await.unwrap();
}

async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Shares `bucket` at `daemon` with `site` (`rights`: "--read", "--write" or both).
fn share(daemon: &Daemon, bucket: &str, site: &str, rights: &[&str]) {
    let mut args = vec!["bucket", "share", bucket, "--site", site, "--data-dir", daemon.data_dir.to_str().unwrap()];
    args.extend_from_slice(rights);
    ok(clusster(&args));
}

/// Runs a transfer verb with --wait --json on `daemon`; returns the final status.
fn transfer(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["transfer"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wait", "--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    let out = clusster(&all);
    assert!(out.status.success(), "transfer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn objects() -> Vec<(String, Vec<u8>)> {
    vec![
        ("empty".into(), Vec::new()),
        ("small/one".into(), content(1, 10 << 10, 1)),
        ("small/two".into(), content(2, 3000, 2)),
        ("big/a".into(), content(3, 5 << 20, 3)),
        ("big/b".into(), content(4, 9 << 20, 4)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn push_then_pull_and_nothing_is_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, sa, sb) = two_sites(dir.path()).await;
    let total: usize = objects().iter().map(|(_, d)| d.len()).sum();
    for (key, data) in objects() {
        put(&sa, "data", &key, data).await;
    }

    let first = transfer(&a, &["push", "b", "data"]);
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(first["progress"]["objects"], 5);
    for (key, data) in objects() {
        assert_eq!(get(&sb, "data", &key).await, data, "{key} arrived intact");
        let (ha, hb) = (
            sa.head_object().bucket("data").key(&key).send().await.unwrap(),
            sb.head_object().bucket("data").key(&key).send().await.unwrap(),
        );
        assert_eq!(ha.e_tag(), hb.e_tag(), "{key} keeps its ETag");
    }

    // The same set again: only the manifest crosses.
    let second = transfer(&a, &["push", "b", "data"]);
    let wire = second["progress"]["wire_bytes"].as_u64().unwrap();
    assert_eq!(second["progress"]["chunks_wanted"], 0, "{second}");
    assert!((wire as f64) < 0.001 * total as f64, "identical re-send moved {wire} bytes of {total}");

    // Pull a prefix back into another bucket at a.
    sa.create_bucket().bucket("back").send().await.unwrap();
    let pulled = transfer(&a, &["pull", "b", "data/big/", "back/copy/"]);
    assert_eq!(pulled["state"], "done", "{pulled}");
    assert_eq!(get(&sa, "back", "copy/a").await, objects()[3].1);
    // a already held every chunk of it: nothing but the manifest came back.
    assert_eq!(pulled["progress"]["chunks_wanted"], 0, "{pulled}");
    let listed = sa.list_objects_v2().bucket("back").send().await.unwrap();
    assert_eq!(listed.contents().len(), 2, "only the prefix was pulled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_object_travels_as_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, sa, sb) = two_sites(dir.path()).await;
    let mut data = content(7, 8 << 20, 7);
    put(&sa, "data", "obj", data.clone()).await;
    transfer(&a, &["push", "b", "data"]);

    // Overwrite 1,000 bytes in two places, insert 500 in a third.
    data[1_000_000..1_000_500].iter_mut().for_each(|b| *b ^= 0xff);
    data[5_000_000..5_000_500].iter_mut().for_each(|b| *b ^= 0xff);
    let insert = content(8, 500, 8);
    data.splice(3_000_000..3_000_000, insert);
    put(&sa, "data", "obj", data.clone()).await;
    let status = transfer(&a, &["push", "b", "data"]);
    let p = &status["progress"];
    let wire = p["wire_bytes"].as_u64().unwrap();
    assert!(p["chunks_delta"].as_u64().unwrap() >= 3, "{status}");
    assert!(wire < 20_000, "three small edits cost {wire} bytes on the wire: {status}");
    assert_eq!(get(&sb, "data", "obj").await, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_spreads_over_several_connections() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::with_transfer_settings(dir.path(), &["a", "b"], "connections_per_peer = 3");
    let (a, b) = (fed.start("a"), fed.start("b"));
    let (sa, sb) = (s3(&a), s3(&b));
    for client in [&sa, &sb] {
        client.create_bucket().bucket("data").send().await.unwrap();
    }
    share(&b, "data", "a", &["--read", "--write"]);
    for (key, data) in objects() {
        put(&sa, "data", &key, data).await;
    }
    let pushed = transfer(&a, &["push", "b", "data"]);
    assert_eq!(pushed["state"], "done", "{pushed}");
    // The sender's data streams went out on all three.
    assert_eq!(pushed["progress"]["connections"], 3, "{pushed}");
    for (key, data) in objects() {
        assert_eq!(get(&sb, "data", &key).await, data, "{key} arrived intact");
    }
    // Pulled back over three connections, the sender being the side that accepted them.
    sa.create_bucket().bucket("back").send().await.unwrap();
    let pulled = transfer(&a, &["pull", "b", "data", "back"]);
    assert_eq!(pulled["state"], "done", "{pulled}");
    for (key, data) in objects() {
        assert_eq!(get(&sa, "back", &key).await, data, "{key} came back intact");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn third_party_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b", "c"]);
    let (a, b, c) = (fed.start("a"), fed.start("b"), fed.start("c"));
    let (sb, sc) = (s3(&b), s3(&c));
    sb.create_bucket().bucket("data").send().await.unwrap();
    sc.create_bucket().bucket("mirror").send().await.unwrap();
    for (key, data) in objects() {
        put(&sb, "data", &key, data).await;
    }
    // b lets a read its bucket, but not yet c, where a wants the copy: refused at once.
    share(&b, "data", "a", &["--read"]);
    share(&c, "mirror", "b", &["--write"]);
    let mut args = vec!["transfer", "copy", "b", "c", "data", "mirror/from-b/", "--wait", "--json", "--data-dir"];
    args.push(a.data_dir.to_str().unwrap());
    let refused = clusster(&args);
    assert_eq!(refused.status.code(), Some(1), "the copy fails");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("c may not read bucket data"), "{refused:?}");
    share(&b, "data", "c", &["--read"]);
    // c lets b write into its bucket, but not a, who asks: b may not write there for a.
    let refused = clusster(&args);
    assert_eq!(refused.status.code(), Some(1), "the copy fails");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("a may not write into bucket mirror"), "{refused:?}");
    // Both refusals reach a as refusals: b's own, and c's relayed by b.
    assert_eq!(counter(&a, "clusster_transfers_refused_by_peers_total").await, 2);
    share(&c, "mirror", "a", &["--write"]);
    // a holds nothing of it and asks b to send to c.
    let status = transfer(&a, &["copy", "b", "c", "data", "mirror/from-b/"]);
    assert_eq!(status["state"], "done", "{status}");
    for (key, data) in objects() {
        assert_eq!(get(&sc, "mirror", &format!("from-b/{key}")).await, data);
    }
    // a site that is not in the federation is refused at once
    let out = clusster(&["transfer", "push", "nowhere", "data", "--data-dir", a.data_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the federation"));
}

/// Reads a daemon's status of one transfer.
async fn status(daemon: &Daemon, id: &str) -> serde_json::Value {
    let token = std::fs::read_to_string(daemon.data_dir.join("admin.token")).unwrap();
    reqwest::Client::new()
        .get(format!("{}/admin/transfers/{id}", daemon.admin_url()))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_killed_midway_resumes_without_resending() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b"]);
    let a = fed.start("a");
    let mut b = fed.start("b");
    let (sa, sb) = (s3(&a), s3(&b));
    sa.create_bucket().bucket("data").send().await.unwrap();
    sb.create_bucket().bucket("data").send().await.unwrap();
    share(&b, "data", "a", &["--write"]);
    let files: Vec<(String, Vec<u8>)> = (0..8).map(|i| (format!("f{i}"), content(100 + i, 16 << 20, i))).collect();
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    for (key, data) in &files {
        put(&sa, "data", key, data.clone()).await;
    }
    // Capped at 32 MB/s so that the kill lands in the middle.
    let out = ok(clusster(&[
        "transfer",
        "push",
        "b",
        "data",
        "--rate-limit",
        "32M",
        "--json",
        "--data-dir",
        a.data_dir.to_str().unwrap(),
    ]));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_at_kill = loop {
        let s = status(&a, &id).await;
        let done = s["progress"]["bytes_done"].as_u64().unwrap_or(0);
        if done > total / 2 {
            break done;
        }
        assert!(Instant::now() < deadline, "transfer made no progress: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let b = fed.start("b");
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let s = status(&a, &id).await;
        if s["state"] == "done" {
            break s;
        }
        assert!(s["state"] != "failed", "{s}");
        assert!(Instant::now() < deadline, "transfer did not complete after the restart: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(last["attempts"].as_u64().unwrap() >= 2, "{last}");
    // The last attempt asked only for what b had not kept: at most the unflushed group
    // and what was in flight (well under 48 MiB) comes again.
    let asked_again = last["progress"]["bytes_wanted"].as_u64().unwrap();
    assert!(
        asked_again <= total - done_at_kill + (48 << 20),
        "resumed transfer asked for {asked_again} bytes; {done_at_kill} of {total} were sent before the kill"
    );
    let sb = s3(&b);
    for (key, data) in &files {
        assert_eq!(&get(&sb, "data", key).await, data, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_chunk_at_the_sender_is_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, sa, sb) = two_sites(dir.path()).await;
    put(&sa, "data", "victim", content(9, 2 << 20, 9)).await;
    corrupt_every_pack(&a);
    let mut args = vec!["transfer", "push", "b", "data", "--wait", "--json", "--data-dir"];
    args.push(a.data_dir.to_str().unwrap());
    let out = clusster(&args);
    assert_eq!(out.status.code(), Some(1), "the transfer fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt"), "{stderr}");
    let listed = sb.list_objects_v2().bucket("data").send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing was committed at b");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_key_too_long_fails_the_transfer_before_its_data_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, sa, sb) = two_sites(dir.path()).await;
    put(&sb, "data", "kept", b"already at b".to_vec()).await;
    put(&sa, "data", &"k".repeat(100), content(5, 4 << 20, 5)).await;
    // 1,000 bytes of prefix and a 100-byte key: over the 1,024-byte limit at b only.
    let prefix = format!("data/{}/", "p".repeat(999));
    let mut args = vec!["transfer", "push", "b", "data", &prefix, "--wait", "--json", "--data-dir"];
    args.push(a.data_dir.to_str().unwrap());
    let out = clusster(&args);
    assert_eq!(out.status.code(), Some(1), "the transfer fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too long"), "{stderr}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(status["progress"]["chunks_done"].as_u64().unwrap_or(0), 0, "no data was sent: {status}");
    let listed = sb.list_objects_v2().bucket("data").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["kept"], "nothing was committed at b, and nothing lost");
    assert_eq!(get(&sb, "data", "kept").await, b"already at b");
}

/// Sites a and b of one federation, each with an empty bucket "data" shared with the
/// other for reading and writing, and their S3 clients.
async fn two_sites(root: &Path) -> (Daemon, Daemon, Client, Client) {
    let (a, b, sa, sb) = two_unshared_sites(root).await;
    share(&a, "data", "b", &["--read", "--write"]);
    share(&b, "data", "a", &["--read", "--write"]);
    (a, b, sa, sb)
}

/// As [`two_sites`], the buckets shared with no site.
async fn two_unshared_sites(root: &Path) -> (Daemon, Daemon, Client, Client) {
    let fed = Federation::new(root, &["a", "b"]);
    let (a, b) = (fed.start("a"), fed.start("b"));
    let (sa, sb) = (s3(&a), s3(&b));
    sa.create_bucket().bucket("data").send().await.unwrap();
    sb.create_bucket().bucket("data").send().await.unwrap();
    (a, b, sa, sb)
}

/// Flips one payload byte of the first frame in every pack of `site` (headers are 48 bytes).
fn corrupt_every_pack(site: &Daemon) {
    for pack in walk(&site.data_dir.join("chunks")) {
        let mut bytes = std::fs::read(&pack).unwrap();
        if bytes.len() > 1000 {
            bytes[500] ^= 0x01;
            std::fs::write(&pack, bytes).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn scrub_finds_a_corrupt_chunk_and_repair_fetches_it_from_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sa, _sb) = two_unshared_sites(dir.path()).await;
    share(&b, "data", "a", &["--write"]);
    let data = content(11, 3 << 20, 11);
    put(&sa, "data", "obj", data.clone()).await;
    transfer(&a, &["push", "b", "data"]);
    corrupt_every_pack(&a);
    let dir_arg = a.data_dir.to_str().unwrap();
    let scrub = clusster(&["scrub", "--json", "--data-dir", dir_arg]);
    assert_eq!(scrub.status.code(), Some(3), "scrub finds the damage");
    // b holds the chunks, but a may only write into b's bucket: b gives it nothing.
    let refused = clusster(&["repair", "--json", "--data-dir", dir_arg]);
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    let report: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["repaired"], 0, "{report}");
    share(&b, "data", "a", &["--read", "--write"]);
    let repair = clusster(&["repair", "--json", "--data-dir", dir_arg]);
    assert!(repair.status.success(), "{}", String::from_utf8_lossy(&repair.stderr));
    let report: serde_json::Value = serde_json::from_slice(&repair.stdout).unwrap();
    assert_eq!(report["repaired"], report["asked"], "{report}");
    assert_eq!(report["from"]["b"], report["asked"], "{report}");
    let scrub = clusster(&["scrub", "--json", "--data-dir", dir_arg]);
    assert!(scrub.status.success(), "clean after repair: {}", String::from_utf8_lossy(&scrub.stdout));
    assert_eq!(get(&sa, "data", "obj").await, data);
    // Nothing left to repair: a second run asks for nothing.
    let again: serde_json::Value =
        serde_json::from_str(&ok(clusster(&["repair", "--json", "--data-dir", dir_arg]))).unwrap();
    assert_eq!(again["asked"], 0);
}

/// Reads one counter of a daemon's `/metrics`.
async fn counter(daemon: &Daemon, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", daemon.admin_url())).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_is_shared_with_no_site_until_its_owner_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sa, sb) = two_unshared_sites(dir.path()).await;
    put(&sa, "data", "obj", content(12, 3 << 20, 12)).await;
    put(&sb, "data", "theirs", content(13, 1 << 20, 13)).await;
    let a_dir = a.data_dir.to_str().unwrap();

    // Not shared: a push fails at once, with the reason, at its first attempt.
    let failed = |args: &[&str]| {
        let mut all = vec!["transfer"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wait", "--json", "--data-dir", a_dir]);
        let out = clusster(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?} fails");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((status["state"].as_str(), status["attempts"].as_u64()), (Some("failed"), Some(1)), "{status}");
        status["error"].as_str().unwrap().to_owned()
    };
    let error = failed(&["push", "b", "data"]);
    assert!(error.contains("refused by the peer: at b: a may not write into bucket data"), "{error}");
    assert!(error.contains("clusster bucket share data --site a --write"), "the fix is named: {error}");
    let error = failed(&["pull", "b", "data", "data/pulled/"]);
    assert!(error.contains("a may not read bucket data"), "{error}");
    assert_eq!(counter(&b, "clusster_transfers_refused_here_total").await, 2);
    assert_eq!(counter(&a, "clusster_transfers_refused_by_peers_total").await, 2);
    let listed = sb.list_objects_v2().bucket("data").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["theirs"], "nothing landed at b");

    // Write only: pushes land, but b tells a nothing of what it holds at the key (no
    // delta bases), and a still cannot read.
    share(&b, "data", "a", &["--write"]);
    assert_eq!(transfer(&a, &["push", "b", "data"])["state"], "done");
    let mut changed = content(12, 3 << 20, 12);
    changed[1_000_000] ^= 0xff;
    put(&sa, "data", "obj", changed.clone()).await;
    let pushed = transfer(&a, &["push", "b", "data"]);
    assert_eq!(pushed["progress"]["chunks_delta"], 0, "no bases for a site that cannot read: {pushed}");
    assert_eq!(get(&sb, "data", "obj").await, changed);
    failed(&["pull", "b", "data", "data/pulled/"]);

    // Listed, then withdrawn: refused again.
    let listed = ok(clusster(&["bucket", "shares", "data", "--json", "--data-dir", b.data_dir.to_str().unwrap()]));
    let shares: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!((shares[0]["site"].as_str(), shares[0]["write"].as_bool()), (Some("a"), Some(true)), "{shares}");
    assert_eq!(shares[0]["read"], false, "{shares}");
    ok(clusster(&["bucket", "unshare", "data", "--site", "a", "--data-dir", b.data_dir.to_str().unwrap()]));
    failed(&["push", "b", "data"]);
}

/// Waits until transfer `id` at `daemon` has moved some bytes.
async fn wait_for_bytes(daemon: &Daemon, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(daemon, id).await["progress"]["bytes_done"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the transfer never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until transfer `id` at `daemon` is neither queued nor running; its last status.
async fn wait_for_end(daemon: &Daemon, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(daemon, id).await;
        if s["state"] != "running" && s["state"] != "queued" {
            return s;
        }
        assert!(Instant::now() < deadline, "the transfer did not end: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_withdrawn_while_data_moves_refuses_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sa, sb) = two_unshared_sites(dir.path()).await;
    share(&b, "data", "a", &["--write"]);
    for i in 0..4 {
        put(&sa, "data", &format!("f{i}"), content(200 + i, 8 << 20, i)).await;
    }
    // 32 MiB at 8 MB/s: four seconds in which to withdraw the share.
    let args = ["transfer", "push", "b", "data", "--rate-limit", "8M", "--json", "--data-dir"];
    let out = ok(clusster(&[&args[..], &[a.data_dir.to_str().unwrap()]].concat()));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    wait_for_bytes(&a, &id).await;
    ok(clusster(&["bucket", "unshare", "data", "--site", "a", "--data-dir", b.data_dir.to_str().unwrap()]));
    let last = wait_for_end(&a, &id).await;
    assert_eq!(last["state"], "failed", "{last}");
    assert!(last["error"].as_str().unwrap().contains("a may not write into bucket data"), "{last}");
    let listed = sb.list_objects_v2().bucket("data").send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing was committed at b");
    // What b received for it is released, not kept for a resume that will not come.
    let check: serde_json::Value =
        serde_json::from_str(&ok(clusster(&["check", "--json", "--data-dir", b.data_dir.to_str().unwrap()]))).unwrap();
    assert_eq!(check["chunks_referenced"], 0, "{check}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sharing_needs_rights_a_known_site_and_a_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b"]);
    let a = fed.start("a");
    let a_dir = a.data_dir.to_str().unwrap();
    let share = |args: &[&str]| clusster(&[&["bucket", "share"], args, &["--data-dir", a_dir]].concat());
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = share(&["data", "--site", "b"]);
    assert_eq!(out.status.code(), Some(2), "no rights named is a usage error");
    assert!(stderr(&out).contains("--read, --write or both"), "{}", stderr(&out));
    let out = share(&["data", "--site", "b", "--read"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bucket \"data\" does not exist"), "{}", stderr(&out));

    s3(&a).create_bucket().bucket("data").send().await.unwrap();
    for (site, why) in [("nowhere", "not another site"), ("a", "not another site")] {
        let out = share(&["data", "--site", site, "--read"]);
        assert_eq!(out.status.code(), Some(1), "{site}");
        assert!(stderr(&out).contains(why), "{site}: {}", stderr(&out));
    }
    let listed = ok(clusster(&["bucket", "shares", "data", "--data-dir", a_dir]));
    assert!(listed.contains("shared with no site"), "nothing was shared by the refusals: {listed}");
    let out = share(&["data", "--site", "b", "--read"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = ok(clusster(&["bucket", "shares", "data", "--data-dir", a_dir]));
    assert_eq!(listed.trim(), "b  read");
    let out = clusster(&["bucket", "shares", "nope", "--data-dir", a_dir]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_withdrawn_while_a_pull_runs_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sa, sb) = two_unshared_sites(dir.path()).await;
    share(&b, "data", "a", &["--read"]);
    for i in 0..4 {
        put(&sb, "data", &format!("f{i}"), content(300 + i, 8 << 20, i)).await;
    }
    // 32 MiB at 4 MB/s: every offer is out at once, and eight seconds of data follow, which
    // leave room for the unshare and the next check (every second) on a loaded machine.
    let args = ["transfer", "pull", "b", "data", "data/pulled/", "--rate-limit", "4M", "--json", "--data-dir"];
    let out = ok(clusster(&[&args[..], &[a.data_dir.to_str().unwrap()]].concat()));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    wait_for_bytes(&a, &id).await;
    ok(clusster(&["bucket", "unshare", "data", "--site", "a", "--data-dir", b.data_dir.to_str().unwrap()]));
    let last = wait_for_end(&a, &id).await;
    assert_eq!(last["state"], "failed", "{last}");
    assert!(last["error"].as_str().unwrap().contains("a may not read bucket data"), "{last}");
    assert!(last["progress"]["bytes_done"].as_u64().unwrap() < 32 << 20, "stopped before the end: {last}");
    let listed = sa.list_objects_v2().bucket("data").prefix("pulled/").send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing was committed at a");
}

/// GETs a catalog route of `daemon` with its admin token.
async fn catalog_get(daemon: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(daemon.data_dir.join("admin.token")).unwrap();
    let answer = reqwest::Client::new()
        .get(format!("{}{path}", daemon.admin_url()))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(serde_json::Value::Null))
}

/// Waits until `daemon` shows `dataset` with `versions` versions; returns what it shows.
async fn wait_for_versions(daemon: &Daemon, dataset: &str, versions: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, shown) = catalog_get(daemon, &format!("/catalog/datasets/{dataset}")).await;
        if status == 200 && shown["versions"].as_array().is_some_and(|v| v.len() == versions) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{dataset} never showed {versions} versions: {status} {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_reaches_every_site_and_a_site_back_from_a_stop_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b", "c"]);
    // Every site checkpoints its log after each change, so that c, back from a stop, finds
    // the events it lacks dropped and loads a snapshot instead.
    for site in ["a", "b", "c"] {
        let config = fed.0.dir(site).join("clusster.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text += "\n[catalog]\ncheckpoint_every = 1\n";
        std::fs::write(&config, text).unwrap();
    }
    let (a, b, c) = (fed.start("a"), fed.start("b"), fed.start("c"));
    let sa = s3(&a);
    sa.create_bucket().bucket("data").send().await.unwrap();
    put(&sa, "data", "run1/tas.nc", content(40, 2 << 20, 40)).await;
    let publish = |tag: &str| {
        let args = ["dataset", "publish", "data/run1/", "a.climate/era5", "--tag", tag, "--json", "--data-dir"];
        serde_json::from_str::<serde_json::Value>(&ok(clusster(&[&args[..], &[a.data_dir.to_str().unwrap()]].concat())))
            .unwrap()
    };
    let v1 = publish("v1");

    // Published at a, seen at b and c, with a's replica complete and how fresh that is.
    for site in [&b, &c] {
        let shown = wait_for_versions(site, "a.climate/era5", 1).await;
        let version = &shown["versions"][0];
        assert_eq!(version["version"], v1["version"], "{shown}");
        assert_eq!(version["tags"][0], "v1");
        assert_eq!(version["replicas"][0]["site"], "a");
        assert_eq!(version["replicas"][0]["state"], "complete");
        assert!(version["replicas"][0]["heard_ms"].as_u64().is_some(), "freshness is said: {shown}");
    }
    assert!(counter(&b, "clusster_catalog_events_applied_total").await >= 4);

    // c stops; a publishes a second version and moves a tag twice, which makes the first
    // move dead; a and b drop it at their next checkpoint. c comes back and catches up by
    // itself, from a snapshot and the log's tail.
    let c_dir = c.data_dir.clone();
    c.stop();
    put(&sa, "data", "run1/tas.nc", content(41, 2 << 20, 41)).await;
    let v2 = publish("v2");
    assert_ne!(v2["version"], v1["version"]);
    dataset(&a, &["tag", "a.climate/era5@v1", "latest"]);
    dataset(&a, &["tag", "a.climate/era5@v2", "latest"]);
    let a_head = catalog_get(&a, "/catalog/sync").await.1["heads"]["a"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for site in [&a, &b] {
        // Compacted at a checkpoint past the last tag move.
        while catalog_get(site, "/catalog/sync").await.1["compacted_at"]["a"].as_u64().is_none_or(|seq| seq <= a_head) {
            assert!(Instant::now() < deadline, "no checkpoint of a's log past #{a_head}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let c = Daemon::start(BIN, &c_dir, &["--config", c_dir.join("clusster.toml").to_str().unwrap()]);
    wait_for_versions(&c, "a.climate/era5", 2).await;
    // Every site ends with the same logs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let digests: Vec<serde_json::Value> = futures::future::join_all(
            [&a, &b, &c].map(|site| async move { catalog_get(site, "/catalog/sync").await.1["digest"].clone() }),
        )
        .await;
        if digests.iter().all(|d| *d == digests[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "the sites' catalogs differ: {digests:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = dataset(&c, &["show", "a.climate/era5"]);
    let tags_of = |version: &serde_json::Value| -> Vec<String> {
        let listed = shown["versions"].as_array().unwrap().iter().find(|v| v["version"] == version["version"]);
        let tags = listed.unwrap_or_else(|| panic!("{shown}"))["tags"].as_array().unwrap();
        tags.iter().map(|t| t.as_str().unwrap().to_owned()).collect()
    };
    assert_eq!((tags_of(&v1), tags_of(&v2)), (vec!["v1".to_owned()], vec!["latest".to_owned(), "v2".to_owned()]));
    for kind in ["bad_signature", "unknown_origin", "conflicting", "unauthorized", "snapshot"] {
        let name = format!("clusster_catalog_events_refused_total{{kind=\"{kind}\"}}");
        assert_eq!(counter(&c, &name).await, 0, "nothing forged among honest sites");
    }
    assert!(counter(&c, "clusster_catalog_snapshots_installed_total").await >= 1, "c loaded a snapshot");

    // Placement, asked at c: a holds all of v2, c nothing of it; the rest comes from a.
    let placement = |sites: &'static str| {
        let c = &c;
        async move { catalog_get(c, &format!("/catalog/placement?dataset=a.climate/era5&version=v2&sites={sites}")).await }
    };
    let (status, answer) = placement("a,c").await;
    assert_eq!(status, 200, "{answer}");
    let bytes = v2["bytes"].as_u64().unwrap();
    assert_eq!(answer["version"], v2["version"]);
    assert_eq!(
        (answer["sites"][0]["bytes_present"].as_u64(), answer["sites"][0]["bytes_missing"].as_u64()),
        (Some(bytes), Some(0))
    );
    assert_eq!(answer["sites"][1]["bytes_missing"].as_u64(), Some(bytes), "{answer}");
    assert_eq!(answer["sites"][1]["best_source"], "a");
    assert!(answer["sites"][1]["estimated_secs"].as_f64().unwrap() > 0.0);
    // b gets the bytes by an ordinary transfer (not as the version): they count all the same.
    let sb = s3(&b);
    sb.create_bucket().bucket("data").send().await.unwrap();
    share(&b, "data", "a", &["--write"]);
    assert_eq!(transfer(&a, &["push", "b", "data"])["state"], "done");
    let (_, answer) = placement("b").await;
    assert_eq!(answer["sites"][0]["bytes_missing"].as_u64(), Some(0), "{answer}");
    assert_eq!(answer["sites"][0]["bytes_present"].as_u64(), Some(bytes));
    // A site that is not in the federation, and a version that does not exist.
    let (status, answer) = placement("nowhere").await;
    assert_eq!(status, 200);
    assert!(answer["sites"][0]["error"].as_str().unwrap().contains("not a site"), "{answer}");
    let (status, answer) = catalog_get(&c, "/catalog/placement?dataset=a.climate/era5&version=v9&sites=a").await;
    assert_eq!((status, answer["field"].as_str()), (404, Some("version")), "{answer}");
}

/// Runs a `dataset` verb with --json on `daemon`; returns its output as JSON.
fn dataset(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["dataset"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    serde_json::from_str(&ok(clusster(&all))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_moves_whole_to_the_sites_its_home_allows_and_then_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b"]);
    let (a, b) = (fed.start("a"), fed.start("b"));
    let sa = s3(&a);
    sa.create_bucket().bucket("data").send().await.unwrap();
    let big = content(50, 6 << 20, 50);
    put(&sa, "data", "run1/tas.nc", big.clone()).await;
    put(&sa, "data", "run1/stations.csv", b"paris,12.5\n".to_vec()).await;
    let v1 = dataset(&a, &["publish", "data/run1/", "a.climate/era5", "--tag", "v1"]);
    wait_for_versions(&b, "a.climate/era5", 1).await;

    // Until its home shares the namespace, no site may hold a copy: b's pull is refused.
    let pull = |version: &str| {
        let args = ["transfer", "pull", "a", version, "--wait", "--json", "--data-dir", b.data_dir.to_str().unwrap()];
        clusster(&args)
    };
    let refused = pull("a.climate/era5@v1");
    assert!(!refused.status.success());
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.contains("b may not hold copies of namespace a.climate") && stdout.contains("dataset share"),
        "{stdout}"
    );

    // Shared with b: the pull brings the version whole, recorded complete at b.
    let shared = dataset(&a, &["share", "a.climate", "--sites", "site in (b)"]);
    assert_eq!(shared["sites"], "site in ( b )");
    let deadline = Instant::now() + Duration::from_secs(30);
    while catalog_get(&b, "/catalog/datasets/a.climate/era5").await.1["shared_with"].is_null() {
        assert!(Instant::now() < deadline, "the share never reached b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = pull("a.climate/era5@v1");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let status: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(status["version"], v1["version"], "{status}");
    assert_eq!(status["progress"]["bytes_wanted"], v1["bytes"], "all of it was missing: {status}");
    let replica_at = |shown: &serde_json::Value, version: &serde_json::Value, site: &str| {
        let v = shown["versions"].as_array().unwrap().iter().find(|v| v["version"] == *version).cloned().unwrap();
        v["replicas"].as_array().unwrap().iter().find(|r| r["site"] == site).cloned()
    };
    let shown = dataset(&b, &["show", "a.climate/era5"]);
    let replica = replica_at(&shown, &v1["version"], "b").expect("b records its replica");
    assert_eq!((replica["state"].as_str(), &replica["bytes_held"]), (Some("complete"), &v1["bytes"]));
    // a hears of it too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica_at(&catalog_get(&a, "/catalog/datasets/a.climate/era5").await.1, &v1["version"], "b").is_none() {
        assert!(Instant::now() < deadline, "b's replica never reached a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At b, the copy checks out as objects of b's project, byte for byte.
    let sb = s3(&b);
    sb.create_bucket().bucket("data").send().await.unwrap();
    assert_eq!(dataset(&b, &["checkout", "a.climate/era5@v1", "data/era5/"])["files"], 2);
    assert_eq!(get(&sb, "data", "era5/tas.nc").await, big);

    // v2 changes the small file only: b's pull of it moves that file's bytes, no more.
    put(&sa, "data", "run1/stations.csv", b"paris,12.5\njulich,9.0\n".to_vec()).await;
    let v2 = dataset(&a, &["publish", "data/run1/", "a.climate/era5", "--tag", "v2"]);
    wait_for_versions(&b, "a.climate/era5", 2).await;
    // Placement at b: what v2 lacks there comes from a, at the rate b's pull of v1
    // measured (kept in b's store), not only by the link table.
    let (_, placed) = catalog_get(&b, "/catalog/placement?dataset=a.climate/era5&version=v2&sites=b").await;
    let placed = &placed["sites"][0];
    assert_eq!((placed["bytes_missing"].as_u64(), placed["best_source"].as_str()), (Some(22), Some("a")), "{placed}");
    assert!(placed["measured_bytes_per_sec"].as_f64().is_some_and(|rate| rate > 0.0), "{placed}");
    let done = pull("a.climate/era5@v2");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let status: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(status["progress"]["bytes_wanted"], 22, "only the changed file moved: {status}");
    let shown = dataset(&b, &["show", "a.climate/era5"]);
    assert_eq!(replica_at(&shown, &v2["version"], "b").unwrap()["state"], "complete");
    let check = clusster(&["check", "--json", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

/// Runs a CLI verb with --json on `daemon`: exit code, JSON output, stderr.
fn verb(daemon: &Daemon, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--json", "--data-dir", daemon.data_dir.to_str().unwrap()]);
    let out = clusster(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits until `daemon`'s catalog shows the replicas of `version` complete at exactly `sites`.
async fn wait_for_complete(daemon: &Daemon, dataset: &str, version: &serde_json::Value, sites: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, shown) = catalog_get(daemon, &format!("/catalog/datasets/{dataset}")).await;
        let mut complete: Vec<String> = shown["versions"]
            .as_array()
            .and_then(|all| all.iter().find(|v| v["version"] == *version))
            .map(|v| {
                v["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["state"] == "complete")
                    .map(|r| r["site"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        complete.sort();
        if complete == sites {
            return;
        }
        assert!(Instant::now() < deadline, "{version} never became complete at {sites:?} only: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_replicates_and_pins_rules_and_last_copies_refuse_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let sites: [(&str, &[&str]); 3] =
        [("a", &["tier=hpc"]), ("b", &["tier=hpc", "country=de"]), ("c", &["tier=cloud"])];
    let fed = Federation::with_sites(dir.path(), &sites, "");
    let (a, b, c) = (fed.start("a"), fed.start("b"), fed.start("c"));
    let sa = s3(&a);
    sa.create_bucket().bucket("data").send().await.unwrap();
    put(&sa, "data", "run1/tas.nc", content(60, 3 << 20, 60)).await;
    let v1 = dataset(&a, &["publish", "data/run1/", "a.climate/era5", "--tag", "v1"]);
    dataset(&a, &["share", "a.climate", "--sites", "*"]);

    // "2 copies on tier=hpc" for every version: a holds one, the rule makes b's.
    let (code, rule, err) =
        verb(&a, &["rule", "add", "two-hpc", "--dataset", "a.climate/era5", "--copies", "2", "--sites", "tier=hpc"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rule["site"], "a");
    wait_for_complete(&c, "a.climate/era5", &v1["version"], &["a", "b"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rules, _) = verb(&a, &["rule", "list"]);
        if rules[0]["state"] == "ok" {
            assert_eq!(rules[0]["copies"][v1["version"].as_str().unwrap()], serde_json::json!(["a", "b"]));
            break;
        }
        assert!(Instant::now() < deadline, "the rule never said ok: {rules}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Placement at c: all of it missing there; after c pulls it, nothing.
    let placement = async |site: &str| {
        let path = format!("/catalog/placement?dataset=a.climate/era5&version=v1&sites={site}");
        catalog_get(&c, &path).await.1["sites"][0].clone()
    };
    assert_eq!(placement("c").await["bytes_missing"], v1["bytes"]);
    assert_eq!(transfer(&c, &["pull", "b", "a.climate/era5@v1"])["state"], "done");
    assert_eq!(placement("c").await["bytes_missing"], 0);

    // a's and b's copies are the rule's two: not evicted. c's counts for nothing: evicted.
    let (code, _, err) = verb(&a, &["dataset", "evict", "a.climate/era5@v1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("409") && err.contains("rule a/two-hpc keeps 2 copies"), "{err}");
    let (code, evicted, err) = verb(&c, &["dataset", "evict", "a.climate/era5@v1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(evicted["site"], "c");
    ok(clusster(&["gc", "--data-dir", c.data_dir.to_str().unwrap()]));
    assert_eq!(placement("c").await["bytes_missing"], v1["bytes"], "collected, gone from c's count too");

    // Without the rule, a job's pin keeps b's copy until it is removed.
    let (code, _, err) = verb(&a, &["rule", "delete", "two-hpc"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, pin, err) = verb(&b, &["dataset", "pin", "a.climate/era5@v1", "--job", "4242", "--for", "1h"]);
    assert_eq!(code, Some(0), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catalog_get(&b, "/catalog/rules").await.1.as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the rule's removal never reached b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = verb(&b, &["dataset", "evict", "a.climate/era5@v1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pinned at b by job 4242"), "{err}");
    let (code, _, err) = verb(&b, &["dataset", "unpin", pin["id"].as_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(verb(&b, &["dataset", "evict", "a.climate/era5@v1"]).0, Some(0));
    // a's is now the last complete copy.
    wait_for_complete(&a, "a.climate/era5", &v1["version"], &["a"]).await;
    let (code, _, err) = verb(&a, &["dataset", "evict", "a.climate/era5@v1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("the last complete copy"), "{err}");
    // Bad input: a clear error, nothing changed.
    let (code, _, err) =
        verb(&a, &["rule", "add", "bad", "--dataset", "a.climate/era5", "--copies", "2", "--sites", "tier="]);
    assert_eq!(code, Some(1));
    assert!(err.contains("sites expression"), "{err}");
    let (code, _, err) = verb(&b, &["dataset", "pin", "a.climate/era5@v9", "--job", "1", "--for", "1h"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    assert_eq!(verb(&b, &["dataset", "pin", "a.climate/era5@v1", "--job", "1", "--for", "soon"]).0, Some(2));
    let check = clusster(&["check", "--json", "--data-dir", a.data_dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

/// The replica of `version` at `site` as `daemon`'s catalog shows it.
async fn replica(daemon: &Daemon, dataset: &str, version: &serde_json::Value, site: &str) -> serde_json::Value {
    let (_, shown) = catalog_get(daemon, &format!("/catalog/datasets/{dataset}")).await;
    let replicas = shown["versions"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["version"] == *version))
        .map(|v| v["replicas"].clone())
        .unwrap_or_default();
    replicas.as_array().and_then(|all| all.iter().find(|r| r["site"] == site).cloned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_chunk_makes_a_replica_partial_and_a_repair_makes_it_complete() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(dir.path(), &["a", "b"]);
    let (a, b) = (fed.start("a"), fed.start("b"));
    let sa = s3(&a);
    sa.create_bucket().bucket("data").send().await.unwrap();
    put(&sa, "data", "run1/tas.nc", content(70, 3 << 20, 70)).await;
    let v1 = dataset(&a, &["publish", "data/run1/", "a.climate/era5", "--tag", "v1"]);
    dataset(&a, &["share", "a.climate", "--sites", "site = b"]);
    wait_for_versions(&b, "a.climate/era5", 1).await;
    while catalog_get(&b, "/catalog/datasets/a.climate/era5").await.1["shared_with"].is_null() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(transfer(&b, &["pull", "a", "a.climate/era5@v1"])["state"], "done");
    let bytes = v1["bytes"].as_u64().unwrap();

    // A scrub at b finds damage: b's replica turns partial with what is still held, at
    // once at b (the quarantine's own write), then at a.
    corrupt_every_pack(&b);
    let scrub = clusster(&["scrub", "--json", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert_eq!(scrub.status.code(), Some(3), "scrub finds the damage");
    let damaged = replica(&b, "a.climate/era5", &v1["version"], "b").await;
    assert_eq!(damaged["state"], "partial", "{damaged}");
    let held = damaged["bytes_held"].as_u64().unwrap();
    assert!(held < bytes, "{damaged}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(&a, "a.climate/era5", &v1["version"], "b").await["state"] != "partial" {
        assert!(Instant::now() < deadline, "a never heard b's copy is partial");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A repair from a (which lets b hold the namespace) makes it complete again.
    let repair = clusster(&["repair", "--json", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert!(repair.status.success(), "{}", String::from_utf8_lossy(&repair.stdout));
    let repaired = replica(&b, "a.climate/era5", &v1["version"], "b").await;
    assert_eq!((repaired["state"].as_str(), repaired["bytes_held"].as_u64()), (Some("complete"), Some(bytes)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(&a, "a.climate/era5", &v1["version"], "b").await["state"] != "complete" {
        assert!(Instant::now() < deadline, "a never heard b's copy is complete again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = clusster(&["check", "--json", "--data-dir", b.data_dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
