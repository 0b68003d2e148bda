//! The offload agent as a real process (`clusster offload-agent`): killed in the middle
//! of a 1 GiB ingest, the ingest completes on the CPU with the same stored bytes as an
//! inline-CPU store, without hanging, and the agent is re-attached when it comes back.

use bytes::Bytes;
use hw_offload::agent::{AgentConfig, AgentEngine};
use hw_offload::{CpuEngine, Engine, Offload, OpKind, Route, Router, RouterConfig};
use rand::{RngCore, SeedableRng};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{ObjectMeta, PutOptions, Store, StoreConfig};

/// The `clusster` binary cargo built for these tests; `CLUSSTER_BIN` overrides it (for
/// a target dir shared with other checkouts, whose builds replace the uplifted binary).
fn bin() -> String {
    std::env::var("CLUSSTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_clusster").to_owned())
}
const MIB: usize = 1 << 20;

/// Starts `clusster offload-agent` and waits for its ready line.
fn start_agent(socket: &Path) -> Child {
    let mut child = Command::new(bin())
        .args(["offload-agent", "--socket", socket.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run clusster offload-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    assert_eq!(ready["agent_socket"], socket.to_str().unwrap());
    child
}

/// Block `i` of the test object: half random, half text, so both compression
/// outcomes and dedup-free data are exercised.
fn block(i: usize) -> Bytes {
    let mut data = vec![0u8; MIB];
    rand::rngs::StdRng::seed_from_u64(i as u64).fill_bytes(&mut data[..MIB / 2]);
    let text = format!("block {i}: research data that compresses well. ");
    for (dst, src) in data[MIB / 2..].iter_mut().zip(text.bytes().cycle()) {
        *dst = src;
    }
    data.into()
}

fn body(
    blocks: usize,
    mut at_block: impl FnMut(usize) + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::iter((0..blocks).map(move |i| {
        at_block(i);
        Ok(block(i))
    }))
}

/// Every chunk frame in the store's packs: (chunk id, codec tag, BLAKE3 of the frame).
fn stored_frames(data_dir: &Path) -> BTreeSet<(String, u8, String)> {
    let mut frames = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = vec![data_dir.join("chunks")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pack") {
                let raw = std::fs::read(&path).unwrap();
                let mut at = 0;
                while at < raw.len() {
                    let h = store::frame::decode_header(&raw[at..]).unwrap();
                    let end = at + store::frame::HEADER_LEN + h.payload_len as usize;
                    frames.insert((h.id.to_hex(), h.codec.tag(), blake3::hash(&raw[at..end]).to_hex().to_string()));
                    at = end;
                }
            }
        }
    }
    frames
}

async fn put(store: &Store, key: &str, blocks: usize, at_block: impl FnMut(usize) + Send + 'static) -> String {
    let opts = PutOptions::default();
    let put = store.put_object("b", key, ObjectMeta::default(), body(blocks, at_block), &opts);
    tokio::time::timeout(Duration::from_secs(600), put).await.expect("the ingest does not hang").unwrap().head.etag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agent_mid_ingest_loses_nothing_and_it_is_reattached() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent_process = Arc::new(Mutex::new(Some(start_agent(&socket))));

    let mut config = AgentConfig::new(&socket);
    config.reattach_every = Duration::from_millis(50);
    let agent = Arc::new(AgentEngine::start("agent", config).unwrap());
    assert!(agent.is_attached(), "attached at start");
    let router = Router::new(
        Arc::new(CpuEngine::new(2)),
        vec![Route::new(agent.clone(), 64 << 10).with_threshold(OpKind::Boundaries, u64::MAX)],
        RouterConfig { disable_for: Duration::from_millis(200), ..Default::default() },
    );
    let offloaded = Store::open(StoreConfig::new(dir.path().join("offloaded")), Offload::routed(router)).await.unwrap();
    let inline = Store::open(StoreConfig::new(dir.path().join("inline")), Offload::cpu(2)).await.unwrap();
    for s in [&offloaded, &inline] {
        s.create_bucket("b", "p").await.unwrap();
    }

    // 1 GiB; the agent is killed (SIGKILL) once 256 MiB have gone in.
    let blocks = 1024;
    let killer = agent_process.clone();
    let started = Instant::now();
    let etag = put(&offloaded, "big", blocks, move |i| {
        if i == 256
            && let Some(mut child) = killer.lock().unwrap().take()
        {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    })
    .await;
    eprintln!("offloaded ingest with a kill: {:?}", started.elapsed());
    assert!(agent_process.lock().unwrap().is_none(), "the agent was killed during the ingest");
    let before_kill = agent.metrics().op(OpKind::Compress).jobs;
    assert!(before_kill > 0, "the agent did work before it was killed");
    assert!(!agent.is_attached());
    // The store keeps its segments in host memory, where the agent cannot rewrite the
    // bytes the host confirms chunk ids against: chunk jobs are copied into the region.
    let copied = agent.bytes_copied_in();
    assert!(copied > 0, "the agent's inputs were copied into its region");

    let inline_etag = put(&inline, "big", blocks, |_| {}).await;
    assert_eq!(etag, inline_etag);
    assert_eq!(
        stored_frames(&dir.path().join("offloaded")),
        stored_frames(&dir.path().join("inline")),
        "the same chunk frames, byte for byte"
    );
    // And the object reads back whole.
    let (info, _, mut stream) = offloaded.get_object("b", "big", None).unwrap();
    assert_eq!(info.head.size, (blocks * MIB) as u64);
    let mut hasher = blake3::Hasher::new();
    let mut expected = blake3::Hasher::new();
    let mut i = 0;
    while let Some(piece) = futures::StreamExt::next(&mut stream).await {
        hasher.update(&piece.unwrap());
    }
    while i < blocks {
        expected.update(&block(i));
        i += 1;
    }
    assert_eq!(hasher.finalize(), expected.finalize());

    // The agent comes back: re-attached, and used again.
    let _agent_again = KillOnDrop(start_agent(&socket));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.is_attached() {
        assert!(Instant::now() < deadline, "the agent was not re-attached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.attachments(), 2);
    // The router keeps the agent out for `disable_for` after the kill: ingest until jobs
    // reach it again, each time checking the result against the CPU-only store.
    let before = agent.metrics().op(OpKind::Compress).jobs;
    for attempt in 0.. {
        let key = format!("again-{attempt}");
        let etag = put(&offloaded, &key, 64, |_| {}).await;
        assert_eq!(etag, put(&inline, &key, 64, |_| {}).await);
        if agent.metrics().op(OpKind::Compress).jobs > before {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never went to the re-attached agent");
    }
    assert!(agent.bytes_copied_in() > copied, "jobs go into the new region after the re-attachment");
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _first = KillOnDrop(start_agent(&socket));
    let out = Command::new(bin())
        .args(["offload-agent", "--socket", socket.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listens"));
}

#[test]
fn an_idle_spin_out_of_range_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    for bad in ["2000000", "-1", "soon"] {
        let out = Command::new(bin())
            .args(["offload-agent", "--socket", socket.to_str().unwrap(), &format!("--idle-spin-us={bad}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--idle-spin-us {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--idle-spin-us"), "--idle-spin-us {bad}");
        assert!(!socket.exists(), "nothing listens after a refused start");
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_returning_wrong_hashes_never_gets_a_wrong_id_stored() {
    use hw_offload::{Fault, FaultEngine};
    let dir = tempfile::tempdir().unwrap();
    // Correct for its first 8 jobs (within the probation), then lies about every hash.
    let liar = Arc::new(FaultEngine::new("liar", 8, Fault::WrongHash));
    let router = Router::new(
        Arc::new(CpuEngine::new(2)),
        vec![Route::new(liar.clone(), 0).with_threshold(OpKind::Boundaries, u64::MAX)],
        RouterConfig::default(),
    );
    let offloaded = Store::open(StoreConfig::new(dir.path().join("offloaded")), Offload::routed(router)).await.unwrap();
    let inline = Store::open(StoreConfig::new(dir.path().join("inline")), Offload::cpu(1)).await.unwrap();
    for s in [&offloaded, &inline] {
        s.create_bucket("b", "p").await.unwrap();
    }
    assert_eq!(put(&offloaded, "o", 64, |_| {}).await, put(&inline, "o", 64, |_| {}).await);
    assert_eq!(stored_frames(&dir.path().join("offloaded")), stored_frames(&dir.path().join("inline")));
    // Every stored chunk verifies against its id.
    let report = offloaded.scrub().await.unwrap();
    assert!(report.corrupt.is_empty(), "{report:?}");
    let seen = liar.jobs_seen();
    assert!(seen > 8, "the liar got work");
    put(&offloaded, "again", 16, |_| {}).await;
    assert_eq!(liar.jobs_seen(), seen, "disabled after the first wrong hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_routes_to_the_configured_agent_and_exports_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = KillOnDrop(start_agent(&socket));
    std::fs::write(
        dir.path().join("clusster.toml"),
        format!(
            "[store]\ncodec = \"lz4\"\n[offload]\nengines = [\"agent\"]\nagent_socket = \"{}\"\nagent_region_mib = 16\n",
            socket.display()
        ),
    )
    .unwrap();
    let daemon = tests::Daemon::start(&bin(), dir.path(), &[]);
    let metrics = reqwest::get(format!("{}/metrics", daemon.admin_url())).await.unwrap().text().await.unwrap();
    for name in [
        "clusster_offload_jobs_total{engine=\"agent\",op=\"compress\"}",
        "clusster_offload_host_cpu_seconds_total{engine=\"agent\",op=\"chunk_id\"}",
        "clusster_offload_fallbacks_total{engine=\"agent\",op=\"compress\"}",
        "clusster_offload_op_errors_total{engine=\"cpu\",op=\"decompress\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(daemon.stop().success());
}
