//! The agent over real shared memory and a real Unix socket, its serving loop on a
//! thread of this process: results identical to the CPU's, fallback while detached,
//! and re-attachment.

mod common;

use hw_offload::agent::{AgentConfig, AgentEngine, ServeOptions, serve};
use hw_offload::{ChunkId, Codec, CpuEngine, Engine, Job, Offload, Route, Router, RouterConfig, Step};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn start_agent(socket: &std::path::Path) {
    start_agent_with(socket, ServeOptions::default());
}

fn start_agent_with(socket: &std::path::Path, options: ServeOptions) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || serve(listener, options, Arc::new(AtomicBool::new(false))));
}

fn config(dir: &std::path::Path) -> AgentConfig {
    let mut config = AgentConfig::new(dir.join("agent.sock"));
    // Room for a whole conformance batch of 16 MiB jobs and their outputs.
    config.region_bytes = 256 << 20;
    config.reattach_every = Duration::from_millis(20);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_agrees_with_the_cpu_on_every_size() {
    let dir = tempfile::tempdir().unwrap();
    start_agent(&dir.path().join("agent.sock"));
    let agent: Arc<dyn Engine> = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    let cpu: Arc<dyn Engine> = Arc::new(CpuEngine::new(1));
    common::conformance(agent.clone(), cpu, &common::SIZES).await;
    assert!(agent.metrics().op(hw_offload::OpKind::Compress).jobs > 0);
    assert!(agent.metrics().op(hw_offload::OpKind::Compress).host_cpu_ns > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_payloads_and_wrong_ids_are_reported_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    start_agent(&dir.path().join("agent.sock"));
    let agent = AgentEngine::start("agent", config(dir.path())).unwrap();
    let data = common::compressible(300_000, 1);
    let out = agent
        .submit(vec![Job::new(data.clone(), vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 3 }])])
        .await
        .pop()
        .unwrap()
        .unwrap();
    let id = out.chunk_id.unwrap();
    let mut bad = out.data.to_vec();
    bad[10] ^= 0xff;
    let decode = |payload: Vec<u8>, expect: ChunkId| {
        Job::encoded(
            payload.into(),
            Codec::Zstd,
            vec![Step::Decompress { codec: Codec::Zstd, plain_len: data.len() as u32 }, Step::Verify(expect)],
        )
    };
    let results = agent
        .submit(vec![decode(bad, id), decode(out.data.to_vec(), ChunkId::of(b"x")), decode(out.data.to_vec(), id)])
        .await;
    assert!(matches!(results[0], Err(hw_offload::JobError::Decode { .. }) | Err(hw_offload::JobError::Corrupt { .. })));
    assert!(matches!(results[1], Err(hw_offload::JobError::Corrupt { actual, .. }) if actual == id));
    assert_eq!(results[2].as_ref().unwrap().data, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_the_cpu_until_the_agent_arrives_then_on_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    assert!(!agent.is_attached());
    let router = Router::new(
        Arc::new(CpuEngine::new(1)),
        vec![Route::new(agent.clone(), 0)],
        RouterConfig { disable_for: Duration::from_millis(10), ..Default::default() },
    );
    let offload = Offload::routed(router);
    let data = common::random(100_000, 5);
    let out = offload.run(Job::new(data.clone(), vec![Step::ChunkId])).await.unwrap();
    assert_eq!(out.chunk_id, Some(ChunkId::of(&data)));
    assert_eq!(agent.metrics().op(hw_offload::OpKind::ChunkId).jobs, 0);

    start_agent(&dir.path().join("agent.sock"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.is_attached() {
        assert!(Instant::now() < deadline, "the agent was not attached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = offload.run(Job::new(data.clone(), vec![Step::ChunkId])).await.unwrap();
    assert_eq!(out.chunk_id, Some(ChunkId::of(&data)));
    assert_eq!(agent.metrics().op(hw_offload::OpKind::ChunkId).jobs, 1);
}

#[test]
fn the_agent_refuses_out_of_bounds_entries_and_keeps_serving() {
    use hw_offload::agent::ring::{self, Cqe, Layout, Sqe, op, status};
    use hw_offload::agent::shm::SharedRegion;
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    start_agent(&socket);
    let region_len = 1u64 << 20;
    let path = dir.path().join("region");
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len(region_len).unwrap();
    let region = SharedRegion::map(&file, region_len as usize).unwrap();
    let layout = Layout::plan(region_len, 8).unwrap();
    layout.write_header(&region);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let path_bytes = path.to_str().unwrap().as_bytes();
    let mut hello = ring::HELLO_MAGIC.to_vec();
    hello.extend_from_slice(&ring::VERSION.to_le_bytes());
    hello.extend_from_slice(&(path_bytes.len() as u32).to_le_bytes());
    hello.extend_from_slice(&region_len.to_le_bytes());
    hello.extend_from_slice(path_bytes);
    stream.write_all(&hello).unwrap();
    let mut ack = [0u8; 16];
    stream.read_exact(&mut ack).unwrap();
    assert_eq!(&ack[..8], &ring::ACK_MAGIC);

    region.write(layout.data_off, b"hello").unwrap();
    let entries = [
        // input past the end of the data area
        Sqe {
            user_data: 1,
            in_off: layout.data_len - 2,
            in_len: 5,
            ops: [op::BLAKE3, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        },
        // offset that overflows
        Sqe { user_data: 2, in_off: u64::MAX, in_len: 5, ops: [op::BLAKE3, 0, 0, 0, 0, 0, 0, 0], ..Default::default() },
        // unknown op code
        Sqe { user_data: 3, in_len: 5, ops: [99, 0, 0, 0, 0, 0, 0, 0], ..Default::default() },
        // output buffer past the end
        Sqe {
            user_data: 4,
            in_len: 5,
            out_off: layout.data_len,
            out_cap: 64,
            ops: [op::COMPRESS_LZ4, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        },
        // a good one after all that
        Sqe { user_data: 5, in_len: 5, ops: [op::BLAKE3, 0, 0, 0, 0, 0, 0, 0], ..Default::default() },
    ];
    for (i, sqe) in entries.iter().enumerate() {
        region.write(layout.sqe_at(i as u32), &sqe.encode()).unwrap();
    }
    region.atomic_u32(ring::off::SQ_TAIL).store(entries.len() as u32, Ordering::Release);
    stream.write_all(&[1]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.atomic_u32(ring::off::CQ_TAIL).load(Ordering::Acquire) < entries.len() as u32 {
        assert!(Instant::now() < deadline, "the agent stopped answering");
        std::thread::sleep(Duration::from_millis(5));
    }
    let cqes: Vec<Cqe> = (0..entries.len() as u32)
        .map(|i| {
            let mut raw = [0u8; ring::CQE_LEN];
            region.read(layout.cqe_at(i), &mut raw).unwrap();
            Cqe::decode(&raw)
        })
        .collect();
    for cqe in &cqes[..4] {
        assert_eq!(cqe.status, status::BAD_REQUEST, "entry {}", cqe.user_data);
    }
    assert_eq!(cqes[4].status, status::OK);
    assert_eq!(cqes[4].digest, *blake3::hash(b"hello").as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_over_shared_buffers_are_not_copied_and_results_outlive_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    start_agent(&dir.path().join("agent.sock"));
    let agent = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    let offload = Offload::new(agent.clone());
    let data = common::compressible(1 << 20, 7);
    let mut buffer = offload.buffer(data.len() / 2);
    assert!(buffer.is_shared(), "an attached agent lends shared memory");
    buffer.extend_from_slice(&data[..1000]);
    // Past the capacity: the buffer moves to a larger range and stays shared.
    buffer.extend_from_slice(&data[1000..]);
    assert!(buffer.is_shared());
    let input = buffer.freeze();
    assert_eq!(input, data);
    let compress =
        |bytes: bytes::Bytes| Job::new(bytes, vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }]);

    let copied = agent.bytes_copied_in();
    let out = offload.run(compress(input.slice(4096..))).await.unwrap();
    assert_eq!(agent.bytes_copied_in(), copied, "a job over a shared buffer is submitted by offset");
    assert_eq!(out.chunk_id, Some(ChunkId::of(&data[4096..])));
    assert_eq!(out.codec, Codec::Zstd);
    offload.run(compress(data.clone())).await.unwrap();
    assert_eq!(agent.bytes_copied_in(), copied + data.len() as u64, "heap inputs are copied in");

    // The engine goes away (and with it the link); what points into the region stays valid.
    drop(offload);
    drop(agent);
    let cpu = Offload::cpu(1);
    let plain = cpu
        .run(Job::encoded(
            out.data.clone(),
            out.codec,
            vec![
                Step::Decompress { codec: out.codec, plain_len: (data.len() - 4096) as u32 },
                Step::Verify(out.chunk_id.unwrap()),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(plain.data, data.slice(4096..));
    assert_eq!(input, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_agent_buffers_are_plain_heap_memory() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    let router = Router::new(Arc::new(CpuEngine::new(1)), vec![Route::new(agent, 0)], RouterConfig::default());
    let offload = Offload::routed(router);
    let mut buffer = offload.buffer(100);
    assert!(!buffer.is_shared());
    buffer.extend_from_slice(b"plain");
    let out = offload.run(Job::new(buffer.freeze(), vec![Step::ChunkId])).await.unwrap();
    assert_eq!(out.chunk_id, Some(ChunkId::of(b"plain")));
}

#[test]
fn an_agent_writing_an_impossible_completion_tail_is_detached_then_attached_afresh() {
    use hw_offload::agent::ring;
    use hw_offload::agent::shm::SharedRegion;
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // A broken agent: accepts the region, then claims a million completions.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut hello = [0u8; 24];
            stream.read_exact(&mut hello).unwrap();
            let path_len = u32::from_le_bytes(hello[12..16].try_into().unwrap()) as usize;
            let region_len = u64::from_le_bytes(hello[16..24].try_into().unwrap()) as usize;
            let mut path = vec![0u8; path_len];
            stream.read_exact(&mut path).unwrap();
            let file = std::fs::OpenOptions::new().read(true).write(true).open(String::from_utf8(path).unwrap());
            let region = SharedRegion::map(&file.unwrap(), region_len).unwrap();
            let mut ack = ring::ACK_MAGIC.to_vec();
            ack.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            stream.write_all(&ack).unwrap();
            region.atomic_u32(ring::off::CQ_TAIL).store(1 << 20, Ordering::Release);
            stream.write_all(&[1]).unwrap();
            held.push((stream, region));
        }
    });
    let agent = AgentEngine::start("agent", config(dir.path())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.attachments() < 2 {
        assert!(Instant::now() < deadline, "not detached and attached again");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_doorbell_is_lost_when_the_agent_sleeps_after_every_batch() {
    // The agent does not poll after work, so nearly every batch needs a doorbell; four
    // tasks submit at once, large batches (reaped through the host's doorbell) and small
    // ones (polled for by their task). A lost doorbell to the host would hang a batch; one
    // to the agent would stall it until the agent's 1 s idle look, so the whole run is
    // bounded generously as a hang guard, not a speed test.
    let dir = tempfile::tempdir().unwrap();
    start_agent_with(&dir.path().join("agent.sock"), ServeOptions { idle_spin: Duration::ZERO, ..Default::default() });
    let agent = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    let run = async {
        let tasks: Vec<_> = (0..4u64)
            .map(|task| {
                let agent = agent.clone();
                tokio::spawn(async move {
                    for i in 0..150u64 {
                        let len = if i % 2 == 0 { 2 << 10 } else { 96 << 10 };
                        let data = common::compressible(len, task * 1000 + i);
                        let out = agent.submit(vec![Job::new(data.clone(), vec![Step::ChunkId])]).await;
                        assert_eq!(
                            out[0].as_ref().unwrap().chunk_id,
                            Some(ChunkId::of(&data)),
                            "task {task} batch {i}"
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("every batch answered");
    assert_eq!(agent.metrics().op(hw_offload::OpKind::ChunkId).jobs, 600);
}
