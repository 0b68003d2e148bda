//! The real `clusster` binary: init, serve on port 0, /health, /metrics, maintenance
//! verbs with --json, problem documents, bad configs, graceful shutdown.

use std::process::Command;
use tests::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

fn clusster(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_writes_a_config_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let out = clusster(&["init", "--data-dir", site.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = created["config"].as_str().unwrap().to_owned();
    assert!(std::fs::read_to_string(&config).unwrap().contains("chunk_avg_bytes = 65536"));

    let again = clusster(&["init", "--data-dir", site.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "init over an existing config is a usage error");
    assert!(text(&again.stderr).contains("exists already"), "{}", text(&again.stderr));

    // serve picks up <data-dir>/clusster.toml; the flag overrides its admin address.
    let daemon = Daemon::start(BIN, &site, &[]);
    let listen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(site.join("listen.json")).unwrap()).unwrap();
    assert_eq!(listen, daemon.listeners);
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM ends the daemon cleanly: {status}");
    assert!(!site.join("listen.json").exists(), "listen.json is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_maintenance_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(BIN, dir.path(), &[]);
    let base = daemon.admin_url();
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ready");

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "clusster_store_bytes_written_total",
        "clusster_store_bytes_deduplicated_total",
        "clusster_store_compression_saved_bytes_total",
        "clusster_offload_bytes_total{engine=\"cpu\",op=\"chunk_id\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    let missing = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    let data_dir = dir.path().to_str().unwrap();
    for verb in ["gc", "scrub", "check"] {
        let out = clusster(&[verb, "--data-dir", data_dir, "--json"]);
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{verb} --json printed {:?}: {e}", text(&out.stdout)));
        assert!(report.is_object(), "{verb}: {report}");
    }
    // The operator endpoints need the data dir's token; without it they are refused.
    let anonymous = http.post(format!("{base}/admin/gc")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    let forged = http.post(format!("{base}/admin/gc")).bearer_auth("0".repeat(64)).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let human = clusster(&["check", "--admin", &base, "--data-dir", data_dir]);
    assert!(text(&human.stdout).starts_with("check: 0 objects"), "{}", text(&human.stdout));
    assert!(daemon.stop().success());

    // With the daemon gone, the verbs say what to do and fail with exit code 1.
    let out = clusster(&["gc", "--data-dir", data_dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is `clusster serve` running"), "{}", text(&out.stderr));
}

#[test]
fn bad_configs_are_usage_errors_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[store]\nchunk_avg_bytes = 65000\n").unwrap();
    let out = clusster(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("power of two"), "{}", text(&out.stderr));

    std::fs::write(&config, "[catalog]\nstage_chunk_avg_bytes = 40000\n").unwrap();
    let out = clusster(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("stage_chunk_avg_bytes = 40000") && err.contains("power of two"), "{err}");
    std::fs::write(&config, "[catalog]\nstage_chunk_avg_bytes = 1048576\n").unwrap();
    let out = clusster(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("at most 2097152 for staging"), "{err}");

    std::fs::write(&config, "[stroe]\n").unwrap();
    let out = clusster(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown field"), "{}", text(&out.stderr));

    let out = clusster(&["serve", "--data-dir", dir.path().to_str().unwrap(), "--admin-listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not IP:PORT"), "{}", text(&out.stderr));
}

#[test]
fn a_busy_port_is_a_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let out = clusster(&["serve", "--data-dir", site.to_str().unwrap(), "--admin-listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot bind the admin listener"), "{}", text(&out.stderr));
}
