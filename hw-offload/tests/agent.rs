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
    use std::io::Write;
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // A broken agent: accepts the region, then claims a million completions.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let region = take_region(&mut stream);
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

/// How the lying agent below lies. It speaks the protocol correctly and runs every job
/// on the CPU, then changes what it says or does after.
#[derive(Clone, Copy)]
enum Lie {
    /// Answers a VERIFY with status OK whatever the data: with the digest it computed
    /// (which differs from the expected one), or with the expected one echoed back and,
    /// `flip`, one byte of its output changed.
    VerifySaysOk { echo_expected: bool, flip: bool },
    /// Answers honestly; once the host has taken a completion, and the test says so,
    /// rewrites that job's output bytes in the region.
    RewriteAfterReap,
}

/// Starts a lying agent on `socket`. For [`Lie::RewriteAfterReap`], a message on the
/// first channel makes it rewrite the last output it wrote; it answers on the second.
fn start_lying_agent(
    socket: &std::path::Path,
    lie: Lie,
) -> (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>) {
    use hw_offload::agent::ring::{self, Cqe, Layout, Sqe, op, status};
    use std::io::Write;
    use std::sync::atomic::Ordering;

    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let cpu = CpuEngine::new(1);
        let mut stream = listener.incoming().next().unwrap().unwrap();
        let region = take_region(&mut stream);
        let layout = Layout::read_header(&region).unwrap();
        let (mut sq_head, mut cq_tail) = (0u32, 0u32);
        let mut last_output: Option<(u64, u32)> = None;
        loop {
            if go_rx.try_recv().is_ok() {
                if let Some((at, len)) = last_output {
                    let mut bytes = vec![0u8; len as usize];
                    region.read(at, &mut bytes).unwrap();
                    for b in &mut bytes {
                        *b ^= 0x5a;
                    }
                    region.write(at, &bytes).unwrap();
                }
                done_tx.send(()).unwrap();
            }
            if region.atomic_u32(ring::off::SQ_TAIL).load(Ordering::Acquire) == sq_head {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            let mut raw = [0u8; ring::SQE_LEN];
            region.read(layout.sqe_at(sq_head), &mut raw).unwrap();
            sq_head = sq_head.wrapping_add(1);
            region.atomic_u32(ring::off::SQ_HEAD).store(sq_head, Ordering::Release);
            let sqe = Sqe::decode(&raw);
            let mut input = vec![0u8; sqe.in_len as usize];
            region.read(layout.data_off + sqe.in_off, &mut input).unwrap();
            let (mut codec, mut verify, mut steps) = (Codec::Raw, None, Vec::new());
            for (i, &code) in sqe.ops.iter().enumerate() {
                steps.push(match code {
                    op::END => break,
                    op::BLAKE3 => Step::ChunkId,
                    op::VERIFY => {
                        verify = Some(ChunkId(sqe.expected));
                        // The lie: the check is left out.
                        if matches!(lie, Lie::VerifySaysOk { .. }) {
                            continue;
                        }
                        Step::Verify(ChunkId(sqe.expected))
                    }
                    op::COMPRESS_ZSTD => Step::Compress { codec: Codec::Zstd, level: sqe.level },
                    op::COMPRESS_LZ4 => Step::Compress { codec: Codec::Lz4, level: 0 },
                    op::DECOMPRESS_ZSTD if i == 0 => {
                        codec = Codec::Zstd;
                        Step::Decompress { codec, plain_len: sqe.plain_len }
                    }
                    other => panic!("the lying agent does not do op {other}"),
                });
            }
            let mut cqe = Cqe { user_data: sqe.user_data, ..Default::default() };
            match runtime.block_on(cpu.submit(vec![Job::encoded(input.clone().into(), codec, steps)])).pop().unwrap() {
                Ok(out) => {
                    let mut data = out.data.to_vec();
                    if let Some(id) = out.chunk_id.or(verify) {
                        cqe.digest = id.0;
                        cqe.digest_len = 32;
                    }
                    if let (Some(expected), Lie::VerifySaysOk { echo_expected, flip }) = (verify, lie) {
                        cqe.digest = if echo_expected { expected.0 } else { ChunkId::of(&data).0 };
                        if flip {
                            data[0] ^= 1;
                        }
                    }
                    cqe.out_codec = out.codec.tag();
                    if out.codec == codec && data == input {
                        cqe.out_in_place = 1;
                    } else {
                        let at = layout.data_off + sqe.out_off;
                        region.write(at, &data).unwrap();
                        cqe.out_len = data.len() as u32;
                        last_output = Some((at, cqe.out_len));
                    }
                }
                Err(_) => cqe.status = status::BAD_REQUEST,
            }
            region.write(layout.cqe_at(cq_tail), &cqe.encode()).unwrap();
            cq_tail = cq_tail.wrapping_add(1);
            region.atomic_u32(ring::off::CQ_TAIL).store(cq_tail, Ordering::Release);
            let _ = (&stream).write(&[1]);
        }
    });
    (go_tx, done_rx)
}

/// A zstd payload of `data` and a VERIFY job over it expecting `expect`.
fn verify_job(data: &[u8], expect: ChunkId) -> Job {
    let payload = zstd::bulk::compress(data, 1).unwrap();
    Job::encoded(
        payload.into(),
        Codec::Zstd,
        vec![Step::Decompress { codec: Codec::Zstd, plain_len: data.len() as u32 }, Step::Verify(expect)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_answers_ok_to_a_failed_verify_is_not_believed() {
    // Issue 12, item 12: the VERIFY answer is checked on the host.
    let data = common::compressible(200_000, 3);
    let other = ChunkId::of(b"another chunk");
    for (echo_expected, flip, expect) in [(false, false, other), (true, false, other), (true, true, ChunkId::of(&data))]
    {
        let dir = tempfile::tempdir().unwrap();
        start_lying_agent(&dir.path().join("agent.sock"), Lie::VerifySaysOk { echo_expected, flip });
        let agent = AgentEngine::start("liar", config(dir.path())).unwrap();
        let answer = agent.submit(vec![verify_job(&data, expect)]).await.pop().unwrap();
        assert!(
            matches!(answer, Err(hw_offload::JobError::Corrupt { expected, .. }) if expected == expect),
            "echo {echo_expected}, flip {flip}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_verify_condemns_the_agent_and_the_cpu_answers() {
    let dir = tempfile::tempdir().unwrap();
    start_lying_agent(&dir.path().join("agent.sock"), Lie::VerifySaysOk { echo_expected: true, flip: true });
    let agent = Arc::new(AgentEngine::start("liar", config(dir.path())).unwrap());
    let router = Router::new(
        Arc::new(CpuEngine::new(1)),
        vec![Route::new(agent, 0)],
        RouterConfig { spot_check_one_in: 0, probation_jobs: 0, ..Default::default() },
    );
    let data = common::compressible(200_000, 4);
    let out = router.submit(vec![verify_job(&data, ChunkId::of(&data))]).await.pop().unwrap().unwrap();
    assert_eq!(out.data, data, "the CPU's answer, not the agent's changed bytes");
    assert!(router.is_condemned("liar"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_change_an_output_after_it_was_checked() {
    // Issue 12, item 13: the router checks the answer (the agent is on probation), then
    // the agent rewrites the output range it wrote; what the caller holds must not move.
    let dir = tempfile::tempdir().unwrap();
    let (rewrite, rewritten) = start_lying_agent(&dir.path().join("agent.sock"), Lie::RewriteAfterReap);
    let agent = Arc::new(AgentEngine::start("agent", config(dir.path())).unwrap());
    let offload = Offload::routed(Router::new(
        Arc::new(CpuEngine::new(1)),
        vec![Route::new(agent.clone(), 0)],
        RouterConfig::default(),
    ));
    let data = common::compressible(300_000, 5);
    let mut buffer = offload.buffer(data.len());
    buffer.extend_from_slice(&data);
    let input = buffer.freeze();
    let out = offload
        .run(Job::new(input, vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }]))
        .await
        .unwrap();
    assert_eq!(agent.metrics().op(hw_offload::OpKind::Compress).jobs, 1, "the agent ran it");
    assert_eq!(out.codec, Codec::Zstd);
    let payload = out.data.to_vec();
    rewrite.send(()).unwrap();
    rewritten.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(out.data, payload, "the output changed after the check");
    assert_eq!(zstd::bulk::decompress(&out.data, data.len()).unwrap(), data);
}

/// A hand-written agent's side of the attach handshake: reads the host's hello, maps the
/// region it names and acknowledges it (version 1).
fn take_region(stream: &mut std::os::unix::net::UnixStream) -> hw_offload::agent::shm::SharedRegion {
    use hw_offload::agent::ring;
    use std::io::{Read, Write};
    let mut hello = [0u8; 24];
    stream.read_exact(&mut hello).unwrap();
    let path_len = u32::from_le_bytes(hello[12..16].try_into().unwrap()) as usize;
    let region_len = u64::from_le_bytes(hello[16..24].try_into().unwrap()) as usize;
    let mut path = vec![0u8; path_len];
    stream.read_exact(&mut path).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(String::from_utf8(path).unwrap());
    let region = hw_offload::agent::shm::SharedRegion::map(&file.unwrap(), region_len).unwrap();
    let mut ack = ring::ACK_MAGIC.to_vec();
    ack.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    stream.write_all(&ack).unwrap();
    region
}
