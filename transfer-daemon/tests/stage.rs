//! `clusster stage-out` and `clusster stage-in` against the real daemon (one site, a
//! project token with the `stage` scope): a tree goes out and comes back byte for byte
//! with its mtimes, a changed tree sends only what changed, stage-in resumes, and bad
//! input gets its exit code and a message. A small hand-made HTTP server stands in for a
//! hostile or failing daemon where the real one cannot be made to misbehave.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use tests::{Daemon, content, tree, write_file};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

/// Where and as whom the CLI stages.
#[derive(Clone)]
struct Env {
    endpoint: String,
    token: String,
    home: PathBuf,
}

/// Runs `clusster ARGS` as a job would (endpoint and token from the environment, no
/// scheduler's job id, a HOME without a client config); its exit code, JSON and stderr.
fn run(env: &Env, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = command(env).args(args).output().expect("run clusster");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn command(env: &Env) -> Command {
    tests::job_command(BIN, &env.endpoint, &env.token, &env.home)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_stages_out_and_back_in_resumes_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // Stage-out clients cut as the store does here (by default they cut finer: see
    // docs/staging.md), so that staged files dedup against S3 objects.
    let config = dir.path().join("clusster.toml");
    std::fs::write(&config, "[catalog]\nstage_chunk_avg_bytes = 65536\n").unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let env = Env {
        endpoint: daemon.admin_url(),
        token: daemon.create_token(BIN, "climate", &["stage"]),
        home: dir.path().join("home"),
    };

    // The project already stores the big file as an S3 object: stage-out finds its chunks
    // there, which it can only if it cuts them exactly as the store did.
    let big = content(1, 5 << 20, 1);
    let (id, secret) = daemon.create_key(BIN, "climate");
    let s3 = common::s3_client(&daemon, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    s3.put_object().bucket("data").key("big.bin").body(ByteStream::from(big.clone())).send().await.unwrap();

    // Nested directories, an empty file, unicode names, a symlink inside, an empty dir.
    let src = dir.path().join("src");
    let notes = content(2, 4096, 2);
    write_file(&src.join("big.bin"), &big, 1_700_000_000_123);
    write_file(&src.join("empty"), b"", 1_600_000_000_001);
    write_file(&src.join("a/b/c/deep.txt"), b"deep down\n", 1_650_000_000_999);
    write_file(&src.join("données/été.csv"), "ville,°C\nLyon,31\n".as_bytes(), 1_690_000_000_500);
    write_file(&src.join("notes.txt"), &notes, 1_710_000_000_007);
    std::os::unix::fs::symlink("notes.txt", src.join("link-to-notes")).unwrap();
    std::fs::create_dir_all(src.join("nothing-here")).unwrap();
    let total = (big.len() + notes.len() * 2 + 10 + "ville,°C\nLyon,31\n".len()) as u64;

    let src_s = src.to_str().unwrap();
    let (code, out, err) =
        run(&env, &["stage-out", src_s, "local.jobs/results", "--tag", "v1", "--job", "42", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "nothing on stderr with --json: {err}");
    assert_eq!(out["files"], 6, "{out}");
    assert_eq!(out["bytes"], total, "{out}");
    assert_eq!(out["new"], true);
    // All but the big file (found in the bucket) and the link's copy of notes.txt.
    assert_eq!(out["bytes_sent"], total - big.len() as u64 - notes.len() as u64, "{out}");
    let v1 = out["version"].as_str().unwrap().to_owned();

    // Back in: the same files, bytes and mtimes; the empty directory is not stored.
    let dest = dir.path().join("dest");
    let dest_s = dest.to_str().unwrap();
    let (code, out, err) = run(&env, &["stage-in", "local.jobs/results@v1", dest_s, "--job", "42", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["version"], v1.as_str(), "{out}");
    assert_eq!((out["files"].as_u64(), out["bytes_written"].as_u64()), (Some(6), Some(total)), "{out}");
    assert_eq!(tree(&dest), tree(&src));
    assert!(!dest.join("nothing-here").exists());
    assert!(!dest.join("link-to-notes").is_symlink(), "a symlink comes back as the file it pointed to");

    // Again, by version id, with the endpoint and token from a client config file: it
    // writes nothing.
    let config = dir.path().join("client.toml");
    std::fs::write(dir.path().join("token"), format!("{}\n", env.token)).unwrap();
    std::fs::write(&config, format!("endpoint = \"{}\"\ntoken_file = \"token\"\n", env.endpoint)).unwrap();
    let by_id = format!("local.jobs/results@{v1}");
    let out = command(&env)
        .env_remove("CLUSSTER_ENDPOINT")
        .env_remove("CLUSSTER_TOKEN")
        .env("CLUSSTER_CLIENT_CONFIG", &config)
        .env("SLURM_JOB_ID", "42")
        .args(["stage-in", &by_id, dest_s, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out["bytes_written"].as_u64(), out["files_skipped"].as_u64()), (Some(0), Some(6)), "{out}");

    // A part file cut short, its last bytes damaged: kept up to the damage, the rest asked.
    std::fs::remove_file(dest.join("big.bin")).unwrap();
    let mut part = big[..3_000_000].to_vec();
    for b in &mut part[2_999_000..] {
        *b ^= 0xff;
    }
    std::fs::write(dest.join(".big.bin.clusster-part"), &part).unwrap();
    let (code, out, err) = run(&env, &["stage-in", "local.jobs/results@v1", dest_s, "--job", "42", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let resumed = out["bytes_resumed"].as_u64().unwrap();
    assert!(resumed > 2_000_000 && resumed < 2_999_000, "{out}");
    assert_eq!(out["bytes_written"].as_u64(), Some(big.len() as u64 - resumed), "{out}");
    assert_eq!(out["files_written"].as_u64(), Some(1), "{out}");
    assert_eq!(tree(&dest), tree(&src));
    assert!(!dest.join(".big.bin.clusster-part").exists());

    // About 1% changed (a few bytes of the big file, a new small file): only that is sent.
    let mut changed = big.clone();
    changed[2_500_000..2_500_100].fill(7);
    write_file(&src.join("big.bin"), &changed, 1_700_000_100_000);
    write_file(&src.join("a/new.txt"), &content(3, 40_000, 3), 1_700_000_100_001);
    let (code, out, err) = run(&env, &["stage-out", src_s, "local.jobs/results", "--tag", "v2", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let (sent, all) = (out["bytes_sent"].as_u64().unwrap(), out["bytes"].as_u64().unwrap());
    assert!(sent * 20 < all, "{sent} bytes sent of {all}: {out}");
    assert_ne!(out["version"], v1.as_str());
    // Into the directory holding v1, without --json (stderr is no terminal: plain lines).
    let out = command(&env).args(["stage-in", "local.jobs/results@v2", dest_s, "--job", "43"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("staged local.jobs/results@v2"));
    assert_eq!(tree(&dest), tree(&src));

    // Bad input.
    let stage_in = |version: &str, dest: &str, env: &Env| run(env, &["stage-in", version, dest, "--job", "42"]);
    let (code, _, err) = stage_in("local.jobs/nothing@v1", dest_s, &env);
    assert_eq!(code, Some(4), "{err}");
    let (code, _, err) = stage_in("local.jobs/results@v9", dest_s, &env);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("v9"), "{err}");
    let (code, _, err) = stage_in("results@v1", dest_s, &env);
    assert_eq!(code, Some(2), "{err}");
    // DEST not writable: under a file, or a file itself, or (not as root) a read-only dir.
    let under_file = src.join("notes.txt/dest");
    let (code, _, err) = stage_in("local.jobs/results@v1", under_file.to_str().unwrap(), &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot write into DEST"), "{err}");
    let (code, _, err) = stage_in("local.jobs/results@v1", src.join("notes.txt").to_str().unwrap(), &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    if std::fs::write(read_only.join("probe"), b"").is_err() {
        let (code, _, err) = stage_in("local.jobs/results@v1", read_only.to_str().unwrap(), &env);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("cannot write into DEST"), "{err}");
    }
    // No job: refused before anything is asked.
    let (code, _, err) = run(&env, &["stage-in", "local.jobs/results@v1", dest_s]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--job"), "{err}");
    // A pin longer than a site holds one.
    let (code, _, err) = run(&env, &["stage-in", "local.jobs/results@v1", dest_s, "--job", "42", "--pin-for", "400d"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("pin_secs") && err.contains("366 days"), "{err}");
    // A token without the stage scope.
    let reader = Env { token: daemon.create_token(BIN, "climate", &["catalog:read"]), ..env.clone() };
    let (code, _, err) = stage_in("local.jobs/results@v1", dest_s, &reader);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("scope stage"), "{err}");
    // A symlink out of SRC, a name with a newline, a bad rule: refused, nothing sent.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(src.join("notes.txt"), outside.join("escape")).unwrap();
    let (code, _, err) = run(&env, &["stage-out", outside.to_str().unwrap(), "local.jobs/other"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("escape") && err.contains("outside SRC"), "{err}");
    let newline = dir.path().join("newline");
    write_file(&newline.join("bad\nname"), b"x", 1_700_000_000_000);
    let (code, _, err) = run(&env, &["stage-out", newline.to_str().unwrap(), "local.jobs/other"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad\\nname") && err.contains("newline"), "{err}");
    let (code, _, err) = run(&env, &["stage-out", src_s, "local.jobs/other", "--rule", "two copies"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = stage_in("local.jobs/other", dest_s, &env);
    assert_eq!(code, Some(4), "nothing was published: {err}");
}

// ---------------------------------------------------------------- a daemon misbehaving

/// A one-route-at-a-time HTTP server: `answer` gets the request line and gives the
/// status, content type and body. Serves until the test ends.
fn fake_daemon(answer: impl Fn(&str) -> (u16, &'static str, Vec<u8>) + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let (status, kind, body) = answer(line.trim());
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

/// A ready answer naming one file at `path` whose one chunk is `data`'s BLAKE3 (or not).
fn ready(path: &str, data: &[u8], id_of: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "version": "ab".repeat(32), "state": "ready", "pin": "p", "bytes_missing": 0, "source": null,
        "files": [{ "path": path, "size": data.len(), "mtime_ms": 1_700_000_000_000u64, "etag": "x",
            "chunks": [{ "id": blake3::hash(id_of).to_hex().to_string(), "len": data.len() }] }],
    })
    .to_string()
    .into_bytes()
}

#[test]
fn a_daemon_misbehaving_gets_its_exit_code_and_nothing_is_written_outside_dest() {
    let dir = tempfile::tempdir().unwrap();
    let env = |endpoint: String| Env { endpoint, token: "t".into(), home: dir.path().to_owned() };
    let dest = dir.path().join("dest");
    let dest_s = dest.to_str().unwrap();
    let json = "application/json";

    // Bytes that do not hash to the manifest's id, however often asked: exit 7.
    let bad = env(fake_daemon(move |line| match line.starts_with("POST /catalog/stage/in") {
        true => (200, json, ready("data.bin", b"the bytes", b"other bytes")),
        false => (200, "application/octet-stream", b"the bytes".to_vec()),
    }));
    let (code, _, err) = run(&bad, &["stage-in", "x.y/z@v1", dest_s, "--job", "1"]);
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("BLAKE3"), "{err}");
    assert!(!dest.join("data.bin").exists());

    // A path out of DEST: refused before anything is written.
    let hostile = env(fake_daemon(move |_| (200, json, ready("../escaped", b"evil", b"evil"))));
    let (code, _, err) = run(&hostile, &["stage-in", "x.y/z@v1", dest_s, "--job", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("../escaped"), "{err}");
    assert!(!dir.path().join("escaped").exists());

    // Still fetching when the timeout comes: exit 8; a fetch that failed: exit 6.
    let slow = env(fake_daemon(move |_| {
        let answer = serde_json::json!({ "version": "ab".repeat(32), "state": "fetching", "pin": "p",
            "bytes_missing": 1000, "source": "paris", "files": [] });
        (200, json, answer.to_string().into_bytes())
    }));
    let (code, _, err) = run(&slow, &["stage-in", "x.y/z@v1", dest_s, "--job", "1", "--timeout", "2s"]);
    assert_eq!(code, Some(8), "{err}");
    let failed = env(fake_daemon(move |_| {
        let problem = r#"{"status":502,"title":"transfer failed","detail":"paris is down"}"#;
        (502, "application/problem+json", problem.as_bytes().to_vec())
    }));
    let (code, _, err) = run(&failed, &["stage-in", "x.y/z@v1", dest_s, "--job", "1"]);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("paris is down"), "{err}");
    let full = env(fake_daemon(move |_| (507, json, br#"{"detail":"disk full"}"#.to_vec())));
    let src = dir.path().join("src");
    write_file(&src.join("one"), b"1", 1_700_000_000_000);
    let (code, _, err) = run(&full, &["stage-out", src.to_str().unwrap(), "x.y/z"]);
    assert_eq!(code, Some(5), "{err}");
    // The session gone once opened (the daemon restarted): exit 6, run it again.
    let restarted = env(fake_daemon(move |line| match line.starts_with("POST /catalog/stage/out ") {
        true => {
            let session = r#"{"session":"s1","chunk_min":2048,"chunk_avg":8192,"chunk_max":32768}"#;
            (201, json, session.as_bytes().to_vec())
        }
        false => (404, "application/problem+json", br#"{"status":404,"detail":"no stage-out session"}"#.to_vec()),
    }));
    let (code, _, err) = run(&restarted, &["stage-out", src.to_str().unwrap(), "x.y/z"]);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("no stage-out session; run the stage-out again"), "{err}");
    // Nobody listening: exit 6.
    let (code, _, err) = run(&env("http://127.0.0.1:1".into()), &["stage-in", "x.y/z@v1", dest_s, "--job", "1"]);
    assert_eq!(code, Some(6), "{err}");
}

// ---------------------------------------------------------------- a client lying

/// A stage-out client that lies to the real daemon's HTTP routes, where a project's
/// client meets the site, gets nothing it should not: bytes that do not hash to their id,
/// records cut short, empty or too long are refused (400) and leave the chunk missing; a
/// publish naming a chunk never sent nor found is refused (409) and publishes nothing;
/// another project's token cannot use the session (404), nor learn through `missing`
/// what this project stores; a token without `stage` gets 403. After all that an honest
/// client's chunk, the id the lie used, publishes and stages back in byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_lying_stage_out_client_is_refused_and_the_site_is_not_damaged() {
    /// Status and JSON of an answer; an error's must be a problem document of that status.
    async fn send(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("the daemon answers");
        let status = response.status().as_u16();
        let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await.expect("the answer's body");
        let json = match body.is_empty() {
            true => serde_json::Value::Null,
            false => serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{status}: {:?} is not JSON: {e}", String::from_utf8_lossy(&body))),
        };
        if status >= 400 {
            assert_eq!(kind.as_deref(), Some("application/problem+json"), "{status}: {json}");
            assert_eq!(json["status"], status, "{json}");
        }
        (status, json)
    }
    /// Asserts `answer` is a problem of `status` whose detail says `phrase`.
    fn refused(answer: &(u16, serde_json::Value), status: u16, phrase: &str) {
        assert_eq!(answer.0, status, "{}", answer.1);
        let detail = answer.1["detail"].as_str().unwrap_or_else(|| panic!("no detail: {}", answer.1));
        assert!(detail.contains(phrase), "{phrase:?} not in {detail:?}");
    }
    /// A `chunks` record: id, u32 big-endian length, bytes.
    fn record(id: &[u8; 32], len: u32, bytes: &[u8]) -> Vec<u8> {
        [&id[..], &len.to_be_bytes(), bytes].concat()
    }
    fn hex_id(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    let dir = tempfile::tempdir().unwrap();
    // The daemon takes chunks as long as its store cuts them too: stage-out clients are
    // asked to cut at the store's size here, so the session's chunk_max is the limit.
    let config = dir.path().join("clusster.toml");
    std::fs::write(&config, "[catalog]\nstage_chunk_avg_bytes = 65536\n").unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let base = daemon.admin_url();
    let env = Env {
        endpoint: base.clone(),
        token: daemon.create_token(BIN, "climate", &["stage"]),
        home: dir.path().join("home"),
    };
    let (a, b) = (env.token.clone(), daemon.create_token(BIN, "rival", &["stage"]));
    let reader = daemon.create_token(BIN, "climate", &["catalog:read"]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{base}/catalog/stage/out{path}");
    let open = |token: &str, dataset: &str| {
        http.post(url("")).bearer_auth(token).json(&serde_json::json!({ "dataset": dataset }))
    };
    let missing = |token: &str, session: &str, ids: &[&str]| {
        http.post(url(&format!("/{session}/missing"))).bearer_auth(token).json(&serde_json::json!({ "chunks": ids }))
    };
    let chunks = |token: &str, session: &str, body: Vec<u8>| {
        let request = http.post(url(&format!("/{session}/chunks"))).bearer_auth(token);
        request.header("content-type", "application/octet-stream").body(body)
    };
    let publish = |token: &str, session: &str, data: &[u8], id: &str| {
        use md5::Digest;
        let file = serde_json::json!({ "path": "out.bin", "size": data.len(), "mtime_ms": 1_700_000_000_321u64,
            "etag": hex::encode(md5::Md5::digest(data)), "chunks": [{ "id": id, "len": data.len() }] });
        let body = serde_json::json!({ "files": [file], "tag": "v1", "job": "7" });
        http.post(url(&format!("/{session}/publish"))).bearer_auth(token).json(&body)
    };

    // Each project opens a session for a dataset of its own.
    let (status, session) = send(open(&a, "local.jobs/results")).await;
    assert_eq!(status, 201, "{session}");
    let sa = session["session"].as_str().unwrap().to_owned();
    let (chunk_min, chunk_max) = (session["chunk_min"].as_u64().unwrap(), session["chunk_max"].as_u64().unwrap());
    let (status, session) = send(open(&b, "local.rival/results")).await;
    assert_eq!(status, 201, "{session}");
    let sb = session["session"].as_str().unwrap().to_owned();
    assert_ne!(sa, sb);

    // The honest file: shorter than chunk_min, so one chunk, `h`. The lies use its id.
    let data = content(9, 10_000, 9);
    assert!((data.len() as u64) < chunk_min, "one chunk: {chunk_min}");
    let h = hex_id(&data);
    let h_bytes: [u8; 32] = *blake3::hash(&data).as_bytes();
    let still_missing = async |token: &str, session: &str, id: &str| {
        let (status, answer) = send(missing(token, session, &[id])).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["chunks"], serde_json::json!([id]), "{id} must still be missing");
    };
    still_missing(&a, &sa, &h).await;

    // 1. Other bytes under h's id: refused, and h is still missing.
    let mut other = data.clone();
    other[5_000] ^= 1;
    let answer = send(chunks(&a, &sa, record(&h_bytes, other.len() as u32, &other))).await;
    refused(&answer, 400, "BLAKE3 of the body is");
    refused(&answer, 400, &h);
    still_missing(&a, &sa, &h).await;

    // 2. A body ending in a record's header, or in its bytes.
    let answer = send(chunks(&a, &sa, h_bytes[..20].to_vec())).await;
    refused(&answer, 400, "into a record");
    let answer = send(chunks(&a, &sa, record(&h_bytes, data.len() as u32, &data[..data.len() / 2]))).await;
    refused(&answer, 400, "into a record");
    still_missing(&a, &sa, &h).await;

    // 3. An empty record, and a record longer than chunk_max (its header is enough).
    let empty = *blake3::hash(b"").as_bytes();
    let answer = send(chunks(&a, &sa, record(&empty, 0, b""))).await;
    refused(&answer, 400, "a chunk of 0 bytes");
    let too_long = content(10, chunk_max as usize + 1, 10);
    let answer = send(chunks(&a, &sa, record(blake3::hash(&too_long).as_bytes(), too_long.len() as u32, b""))).await;
    refused(&answer, 400, &format!("a chunk of {} bytes: chunks are 1 to {chunk_max} bytes", chunk_max + 1));
    still_missing(&a, &sa, &hex_id(&too_long)).await;
    still_missing(&a, &sa, &hex_id(b"")).await;

    // 4. Publishing h, never sent: refused, nothing published.
    let answer = send(publish(&a, &sa, &data, &h)).await;
    refused(&answer, 409, &format!("chunk {h} was neither sent in this session nor found here"));
    let dest = dir.path().join("dest");
    let dest_s = dest.to_str().unwrap();
    let (code, _, err) = run(&env, &["stage-in", "local.jobs/results", dest_s, "--job", "7"]);
    assert_eq!(code, Some(4), "nothing was published: {err}");

    // 5. Another project's token gets nothing of A's session (a proper record of its own
    // is not stored there either); a token without stage, or no token of the site's, none.
    let theirs = content(11, 3_000, 11);
    let their_id = hex_id(&theirs);
    let their_record = record(blake3::hash(&theirs).as_bytes(), theirs.len() as u32, &theirs);
    let not_yours = format!("no stage-out session {sa:?} of this project");
    refused(&send(missing(&b, &sa, &[&h])).await, 404, &not_yours);
    refused(&send(chunks(&b, &sa, their_record.clone())).await, 404, &not_yours);
    refused(&send(publish(&b, &sa, &data, &h)).await, 404, &not_yours);
    refused(&send(http.delete(url(&format!("/{sa}"))).bearer_auth(&b)).await, 404, &not_yours);
    // Said as for a session that does not exist: the id tells B nothing.
    let unknown = "0".repeat(32);
    let (_, for_theirs) = send(missing(&b, &sa, &[&h])).await;
    let (_, for_unknown) = send(missing(&b, &unknown, &[&h])).await;
    assert_eq!(for_theirs["detail"].as_str().unwrap().replace(&sa, &unknown), for_unknown["detail"].as_str().unwrap());
    refused(&send(open(&reader, "local.jobs/results")).await, 403, "lacks the scope stage");
    refused(&send(missing(&reader, &sa, &[&h])).await, 403, "lacks the scope stage");
    refused(&send(chunks(&reader, &sa, their_record)).await, 403, "lacks the scope stage");
    refused(&send(missing("not-a-token", &sa, &[&h])).await, 401, "Authorization: Bearer");
    still_missing(&a, &sa, &their_id).await;
    still_missing(&a, &sa, &h).await;

    // 6. The honest client, in the same session (still open: nothing above ended it).
    let (status, stored) = send(chunks(&a, &sa, record(&h_bytes, data.len() as u32, &data))).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored, serde_json::json!({ "chunks": 1, "bytes": data.len() }));
    let (status, answer) = send(missing(&a, &sa, &[&h])).await;
    assert_eq!((status, answer), (200, serde_json::json!({ "chunks": [] })));
    // Project B is not told A holds h now, nor may it publish it.
    still_missing(&b, &sb, &h).await;
    refused(&send(publish(&b, &sb, &data, &h)).await, 409, "neither sent in this session nor found here");

    let (status, published) = send(publish(&a, &sa, &data, &h)).await;
    assert_eq!(status, 200, "{published}");
    assert_eq!((published["files"].as_u64(), published["bytes"].as_u64()), (Some(1), Some(data.len() as u64)));
    assert_eq!(published["new"], true, "{published}");
    let version = published["version"].as_str().unwrap().to_owned();
    // Published: the session has ended; B still learns nothing of h through its own.
    refused(&send(missing(&a, &sa, &[&h])).await, 404, "no stage-out session");
    still_missing(&b, &sb, &h).await;
    let (status, answer) = send(http.delete(url(&format!("/{sb}"))).bearer_auth(&b)).await;
    assert_eq!((status, answer), (204, serde_json::Value::Null));

    let (code, out, err) = run(&env, &["stage-in", "local.jobs/results@v1", dest_s, "--job", "7", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["version"], version.as_str(), "{out}");
    assert_eq!(tree(&dest), vec![("out.bin".to_owned(), data, 1_700_000_000_321)]);
}
