//! Job staging across two real daemons of one federation: a tree staged out at `a` is
//! staged in at `b` where `b` holds none of it, then part of it, then all of it; `b`
//! killed in the middle of a stage-in and the command run again; a chunk corrupted at `b`
//! is found while it is read out, and fetched again from `a` before the stage-in goes on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tests::{Daemon, content};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

/// Runs `clusster ARGS` against `daemon`'s staging routes with `token`, as a job would.
fn stage(daemon: &Daemon, token: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = stage_command(daemon, token, args).output().expect("run clusster");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stage_command(daemon: &Daemon, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--endpoint", &daemon.admin_url(), "--json"])
        .env("RUST_LOG", "warn")
        .env("CLUSSTER_TOKEN", token)
        .env_remove("CLUSSTER_CLIENT_CONFIG")
        .env_remove("SLURM_JOB_ID");
    command
}

/// `clusster ARGS --json --data-dir` of `daemon`, which must succeed.
fn admin(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .args(["--json", "--data-dir", daemon.data_dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run clusster");
    assert!(out.status.success(), "clusster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn write(path: &Path, data: &[u8], mtime_ms: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_millis(mtime_ms)).unwrap();
}

/// Every file under `root`: relative path, bytes, mtime in ms (files being written,
/// `.…clusster-part`, left out).
fn tree(root: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.to_str().unwrap().ends_with(".clusster-part") {
                // Read while a stage-in may rename files: one gone meanwhile is skipped.
                let (Ok(meta), Ok(bytes)) = (std::fs::metadata(&path), std::fs::read(&path)) else { continue };
                let mtime = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                out.push((rel, bytes, mtime));
            }
        }
    }
    out.sort();
    out
}

/// Waits until `daemon`'s catalog lists `versions` versions of `dataset`.
async fn wait_for_versions(daemon: &Daemon, dataset: &str, versions: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(BIN)
            .args(["dataset", "show", dataset, "--json", "--data-dir", daemon.data_dir.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if shown["versions"].as_array().is_some_and(|v| v.len() >= versions) {
            return;
        }
        assert!(Instant::now() < deadline, "{dataset} never showed {versions} versions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn corrupt_every_pack(dir: &Path) {
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 1000 {
                bytes[500] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_stages_in_at_one_site_what_another_staged_out() {
    let dir = tempfile::tempdir().unwrap();
    let fed = tests::Federation::new(BIN, dir.path(), &[("a", &[]), ("b", &[])], "");
    let (a, mut b) = (fed.start("a"), fed.start("b"));
    let (token_a, token_b) = (a.create_token(BIN, "climate", &["stage"]), b.create_token(BIN, "climate", &["stage"]));

    // A job's results at a: 40 files of 256 KiB and a few odd ones.
    let src = dir.path().join("results");
    for i in 0..40u64 {
        write(&src.join(format!("out/part-{i:03}.bin")), &content(i, 256 << 10, i), 1_700_000_000_000 + i);
    }
    write(&src.join("summary.csv"), b"run,value\n1,0.5\n", 1_700_000_123_456);
    write(&src.join("empty"), b"", 1_600_000_000_000);
    let (code, out, err) = stage(&a, &token_a, &["stage-out", src.to_str().unwrap(), "a.climate/era5", "--tag", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["version"].as_str().map(str::len), Some(64), "{out}");
    admin(&a, &["dataset", "share", "a.climate", "--sites", "*"]);
    wait_for_versions(&b, "a.climate/era5", 1).await;

    // At b, which holds none of it: b fetches the version from a, then the files come.
    let held_nowhere = dir.path().join("in-1");
    let (code, out, err) =
        stage(&b, &token_b, &["stage-in", "a.climate/era5@v1", held_nowhere.to_str().unwrap(), "--job", "11"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["bytes_written"].as_u64(), Some(40 * (256 << 10) + 16), "{out}");
    assert_eq!(tree(&held_nowhere), tree(&src), "byte for byte, with the mtimes");

    // A second version changing one file: b holds all but that file's changed chunks.
    let mut changed = content(7, 256 << 10, 7);
    changed[1000..1100].fill(0xee);
    write(&src.join("out/part-007.bin"), &changed, 1_700_000_999_000);
    let (code, _, err) = stage(&a, &token_a, &["stage-out", src.to_str().unwrap(), "a.climate/era5", "--tag", "v2"]);
    assert_eq!(code, Some(0), "{err}");
    wait_for_versions(&b, "a.climate/era5", 2).await;
    let placed = admin(&b, &["catalog", "placement", "a.climate/era5@v2", "--sites", "b"]);
    let missing = placed["sites"][0]["bytes_missing"].as_u64().unwrap();
    assert!(missing > 0 && missing <= 256 << 10, "b lacks only the changed file's chunks: {placed}");
    let held_partly = dir.path().join("in-2");
    let (code, _, err) =
        stage(&b, &token_b, &["stage-in", "a.climate/era5@v2", held_partly.to_str().unwrap(), "--job", "12"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tree(&held_partly), tree(&src));
    // Now held whole at b: staged in again without asking a for anything.
    let held_whole = dir.path().join("in-3");
    let (code, out, err) =
        stage(&b, &token_b, &["stage-in", "a.climate/era5@v2", held_whole.to_str().unwrap(), "--job", "13"]);
    assert_eq!((code, out["retries"].as_u64()), (Some(0), Some(0)), "{err}");
    assert_eq!(tree(&held_whole), tree(&src));

    // b killed while a stage-in reads from it; started again, the same command resumes.
    let interrupted = dir.path().join("in-4");
    let mut running = stage_command(&b, &token_b, &["stage-in", "a.climate/era5@v1", interrupted.to_str().unwrap()])
        .args(["--job", "14", "--parallel", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tree(&interrupted.join("out")).len() < 2 && running.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the stage-in wrote nothing");
        if !interrupted.join("out").is_dir() {
            std::fs::create_dir_all(interrupted.join("out")).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let status = running.wait().unwrap();
    let written_before = tree(&interrupted).len();
    eprintln!("b killed with {written_before} of 42 files staged in; the client {status}");
    drop(b);
    b = fed.start("b");
    let (code, out, err) = stage(
        &b,
        &token_b,
        &["stage-in", "a.climate/era5@v1", interrupted.to_str().unwrap(), "--job", "14", "--parallel", "1"],
    );
    assert_eq!(code, Some(0), "{err}");
    if !status.success() {
        // It was cut off: the files it completed are kept, the rest come now.
        assert_eq!(out["files_skipped"].as_u64(), Some(written_before as u64), "{out}");
    }
    let mut v1_tree = tree(&held_nowhere);
    v1_tree.sort();
    assert_eq!(tree(&interrupted), v1_tree);

    // Every chunk at b corrupted: the stage-in finds it while reading, b quarantines it,
    // fetches it again from a, and the files come whole.
    corrupt_every_pack(&b.data_dir.join("chunks"));
    let repaired = dir.path().join("in-5");
    let (code, out, err) =
        stage(&b, &token_b, &["stage-in", "a.climate/era5@v2", repaired.to_str().unwrap(), "--job", "15"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out["retries"].as_u64().unwrap() >= 1, "the damage was found and read again: {out}");
    assert_eq!(tree(&repaired), tree(&src));
}
