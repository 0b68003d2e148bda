//! Host CPU cost of offloading to the agent, against running the same work inline on
//! the CPU engine. Starts `clusster offload-agent` pinned to one core, pins itself to
//! another, and measures CPU time (getrusage of this process, and the clock of the
//! submitting thread), not wall time, since the machine is shared.
//!
//! usage: offload-bench CLUSSTER_BIN HOST_CORE AGENT_CORE RUNS
//!
//! Prints markdown rows: host CPU per GiB for BLAKE3 + zstd on 1 MiB chunks, with as
//! many jobs in flight as the store's ingest keeps (inline; the agent with inputs in its
//! shared region, as the store's segment buffers are, also with half as many in flight,
//! and with inputs copied in; the router with its spot checks); the size sweep with the
//! router (agent from the thresholds below, inputs copied in) against inline; host CPU
//! per offloaded job; ring round-trip latency; the store's own ingest of 1 GiB, inline
//! and with the agent; the idle agent's CPU. Medians over RUNS.

use bytes::Bytes;
use hw_offload::agent::{AgentConfig, AgentEngine};
use hw_offload::{
    Codec, CpuEngine, Engine, Job, OpKind, Route, Router, RouterConfig, Step, process_cpu_ns, thread_cpu_ns,
};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn pin(core: usize) {
    hw_offload::agent::shm::pin_current_thread(&[core]).expect("pin the bench thread");
}

/// Data that compresses about 3:1 with zstd level 1, like text and logs.
fn chunk(len: usize, seed: u64) -> Bytes {
    let words: [&[u8]; 8] = [b"chunk ", b"dataset ", b"replica ", b"site ", b"federation ", b"0.125 ", b"\n", b"42 "];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(len + 16);
    while data.len() < len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        data.extend_from_slice(words[(x >> 61) as usize]);
        if x & 0xff < 40 {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(len);
    data.into()
}

fn job(data: &Bytes) -> Job {
    Job::new(data.clone(), vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }])
}

struct Cost {
    process_ns: u64,
    thread_ns: u64,
    /// voluntary context switches of the submitting thread
    thread_sleeps: u64,
    wall: Duration,
}

/// Voluntary context switches (sleeps) of the calling thread.
fn this_thread_sleeps() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Jobs the store's ingest keeps in flight per writer, which the 1 MiB rows keep too.
const IN_FLIGHT: usize = store::ingest::CHUNK_JOBS_IN_FLIGHT;

/// Runs every job of `data` through `engine`, `batch` jobs per submission and
/// `in_flight` jobs (rounded up to whole submissions) in flight, as the store's ingest
/// keeps chunk jobs in flight.
async fn run(engine: &dyn Engine, data: &[Bytes], batch: usize, in_flight: usize) -> Cost {
    let submissions = in_flight.div_ceil(batch).max(1);
    let thread_sleeps = this_thread_sleeps();
    let started = Instant::now();
    let process = process_cpu_ns();
    let thread = thread_cpu_ns();
    let mut pending = std::collections::VecDeque::new();
    for group in data.chunks(batch) {
        pending.push_back(engine.submit(group.iter().map(job).collect()));
        if pending.len() >= submissions {
            for r in pending.pop_front().unwrap().await {
                r.expect("job");
            }
        }
    }
    while let Some(done) = pending.pop_front() {
        for r in done.await {
            r.expect("job");
        }
    }
    let (process_ns, thread_ns, wall) = (process_cpu_ns() - process, thread_cpu_ns() - thread, started.elapsed());
    Cost { process_ns, thread_ns, thread_sleeps: this_thread_sleeps() - thread_sleeps, wall }
}

/// Puts `body` as one object into a fresh store at `dir` on `offload`; host CPU and wall
/// time of the put alone.
async fn ingest(offload: &hw_offload::Offload, dir: std::path::PathBuf, body: &[Bytes]) -> Cost {
    let store = store::Store::open(store::StoreConfig::new(dir), offload.clone()).await.expect("open the store");
    store.create_bucket("b", "bench").await.expect("create the bucket");
    let pieces = futures::stream::iter(body.iter().cloned().map(Ok::<Bytes, std::io::Error>));
    let started = Instant::now();
    let process = process_cpu_ns();
    let thread = thread_cpu_ns();
    store
        .put_object("b", "o", store::ObjectMeta::default(), pieces, &store::PutOptions::default())
        .await
        .expect("put the object");
    Cost {
        process_ns: process_cpu_ns() - process,
        thread_ns: thread_cpu_ns() - thread,
        thread_sleeps: 0,
        wall: started.elapsed(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (ns) of every thread of process `pid`, from `/proc/<pid>/task/*/schedstat`:
/// nanoseconds, where `/proc/<pid>/stat` counts 10 ms ticks (one tick in a 10 s idle
/// window would read as 0.1 % of a core).
fn proc_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: offload-bench CLUSSTER_BIN HOST_CORE AGENT_CORE RUNS (ZERO_COPY_ONLY=1: one row only)");
        std::process::exit(2);
    }
    let host_core: usize = args[2].parse().expect("HOST_CORE");
    let agent_core: &str = &args[3];
    let runs: usize = args[4].parse().expect("RUNS");
    pin(host_core);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let mut agent_process = KillOnDrop(
        Command::new(&args[1])
            .args(["offload-agent", "--socket", socket.to_str().unwrap(), "--cores", agent_core])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start clusster offload-agent"),
    );
    let mut line = String::new();
    BufReader::new(agent_process.0.stdout.take().unwrap()).read_line(&mut line).expect("agent ready line");
    let mut config = AgentConfig::new(&socket);
    // Room for the whole GiB of inputs as buffers (at most 3/4 of the data area) plus
    // the outputs of the jobs in flight.
    config.region_bytes = 1536 << 20;
    let agent = Arc::new(AgentEngine::start("agent", config).expect("attach"));
    assert!(agent.is_attached());
    let cpu = Arc::new(CpuEngine::new(1));
    let router = Router::new(
        cpu.clone(),
        vec![Route::new(agent.clone(), 64 << 10).with_threshold(OpKind::Boundaries, u64::MAX)],
        RouterConfig::default(),
    );

    // 1. BLAKE3 + zstd on 1 GiB of 1 MiB chunks: on the heap for inline and the copying
    // agent, in the agent's shared region (filled before the clock starts, as inline's
    // data is ready before its clock starts) for zero-copy.
    let gib: Vec<Bytes> = (0..1024).map(|i| chunk(MIB, i)).collect();
    let shared: Vec<Bytes> = gib
        .iter()
        .map(|data| {
            let mut buffer = agent.buffer(data.len()).expect("room in the shared region for the input");
            buffer.extend_from_slice(data);
            buffer.freeze()
        })
        .collect();
    // The router's first jobs are all checked (probation): get past it before measuring,
    // so the figures show the steady state (one job in 1,024 checked).
    run(&router, &shared[..RouterConfig::default().probation_jobs as usize], 16, IN_FLIGHT).await;
    if std::env::var_os("ZERO_COPY_ONLY").is_some() {
        // For profiling the host side (`perf record -t`): only the zero-copy agent runs.
        for _ in 0..runs {
            let accounted = agent.metrics().op(OpKind::Compress).host_cpu_ns;
            let c = run(agent.as_ref(), &shared, 16, IN_FLIGHT).await;
            println!(
                "agent, zero-copy: host CPU {:.1} ms/GiB, {} sleeps, {:.1} ms in submitting and reaping",
                c.process_ns as f64 / 1e6,
                c.thread_sleeps,
                (agent.metrics().op(OpKind::Compress).host_cpu_ns - accounted) as f64 / 1e6
            );
        }
        return;
    }
    let mut rows = std::collections::BTreeMap::<String, [Vec<f64>; 4]>::new();
    for _ in 0..runs {
        for (name, engine, data, in_flight) in [
            ("inline", cpu.as_ref() as &dyn Engine, &gib, IN_FLIGHT),
            ("agent, zero-copy", agent.as_ref(), &shared, IN_FLIGHT),
            // Half the store's window: twice the doorbells (the method of earlier figures).
            ("agent, zero-copy", agent.as_ref(), &shared, IN_FLIGHT / 2),
            ("agent, copied in", agent.as_ref(), &gib, IN_FLIGHT),
            ("router, zero-copy, spot checks", &router, &shared, IN_FLIGHT),
        ] {
            let c = run(engine, data, 16, in_flight).await;
            let row = rows.entry(format!("{name}, {in_flight} in flight")).or_default();
            row[0].push(c.process_ns as f64 / 1e6);
            row[1].push(c.thread_ns as f64 / 1e6);
            row[2].push(c.thread_sleeps as f64);
            row[3].push(1024.0 / c.wall.as_secs_f64());
        }
    }
    let inline_mibs = median(rows[&format!("inline, {IN_FLIGHT} in flight")][3].clone());
    println!(
        "| BLAKE3 + zstd-1, 1 MiB chunks, 1 GiB, submissions of 16 jobs | host CPU ms/GiB (process) \
         | submitting thread \
         | its sleeps | MiB/s |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (name, [process, thread, thread_sleeps, mibs]) in &rows {
        let mut line = String::new();
        let mibs = median(mibs.clone());
        let _ = write!(
            line,
            "| {name} | {:.1} | {:.1} | {:.0} | {mibs:.0}",
            median(process.clone()),
            median(thread.clone()),
            median(thread_sleeps.clone()),
        );
        if !name.starts_with("inline") {
            let _ = write!(line, " ({:.2}x inline)", mibs / inline_mibs);
        }
        println!("{line} |");
    }
    drop(shared);

    // 2. Size sweep, 512 B to 16 MiB, router with the default agent threshold (64 KiB)
    // against inline, inputs on the heap (copied into the region).
    println!("\n| job size | inline host CPU ns/job | router host CPU ns/job | ratio (median of the runs' ratios) |");
    println!("| --- | --- | --- | --- |");
    let mut size = 512;
    while size <= 16 * MIB {
        // 64 MiB of jobs, but at least 16 and at most 16,384 of them: the small buckets
        // then take long enough (about 0.1 s of CPU per run) for the noise to average out.
        let count = ((64 * MIB) / size).clamp(16, 16_384);
        let data: Vec<Bytes> = (0..count).map(|i| chunk(size, i as u64)).collect();
        let (mut i_ns, mut r_ns, mut ratios) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            // Both sides take turns on slices of the data (each going first on every other
            // slice), so that a change in the shared machine's load while a run lasts
            // falls on both alike; the ratio is taken within the run.
            let (mut i, mut r) = (0u64, 0u64);
            for (slice_index, slice) in data.chunks(count.div_ceil(8)).enumerate() {
                let inline_first = slice_index % 2 == 0;
                for side in [inline_first, !inline_first] {
                    if side {
                        i += run(cpu.as_ref(), slice, 16, IN_FLIGHT).await.process_ns;
                    } else {
                        r += run(&router, slice, 16, IN_FLIGHT).await.process_ns;
                    }
                }
            }
            i_ns.push(i as f64 / count as f64);
            r_ns.push(r as f64 / count as f64);
            ratios.push(r as f64 / i as f64);
        }
        println!("| {size} | {:.0} | {:.0} | {:.2} |", median(i_ns), median(r_ns), median(ratios));
        // By fours, ending on the largest chunk (16 MiB).
        size = if size < 4 * MIB { size * 4 } else { size * 2 };
    }

    // 3. Host CPU per offloaded job, small jobs in batches of 32.
    let small: Vec<Bytes> = (0..32 * 1000).map(|i| chunk(512, i)).collect();
    let mut per_job = vec![];
    for _ in 0..runs {
        let started = process_cpu_ns();
        for group in small.chunks(32) {
            for r in agent.submit(group.iter().map(|d| Job::new(d.clone(), vec![Step::ChunkId])).collect()).await {
                r.expect("job");
            }
        }
        per_job.push((process_cpu_ns() - started) as f64 / small.len() as f64);
    }
    println!("\nhost CPU per offloaded 512 B BLAKE3 job, batches of 32: {:.2} µs", median(per_job) / 1000.0);

    // 4. Ring round trip: one 64 B job at a time, the awaiting task reaping it itself
    // unless the agent takes longer than its polling window.
    let tiny = chunk(64, 1);
    let (mut p50, mut p99, mut over, mut cpu_per_trip, mut wakes) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let mut lat = Vec::with_capacity(20_000);
        let process = process_cpu_ns();
        let sleeps = this_thread_sleeps();
        for _ in 0..20_000 {
            let t = Instant::now();
            agent.submit(vec![Job::new(tiny.clone(), vec![Step::ChunkId])]).await.pop().unwrap().expect("job");
            lat.push(t.elapsed().as_nanos() as f64);
        }
        cpu_per_trip.push((process_cpu_ns() - process) as f64 / lat.len() as f64);
        wakes.push((this_thread_sleeps() - sleeps) as f64);
        lat.sort_by(f64::total_cmp);
        p50.push(lat[lat.len() / 2]);
        p99.push(lat[lat.len() * 99 / 100]);
        over.push(lat.iter().filter(|&&ns| ns > 5_000.0).count() as f64 / lat.len() as f64 * 100.0);
    }
    println!(
        "ring round trip, one 64 B job at a time: p50 {:.1} µs, p99 {:.1} µs, {:.2} % over 5 µs, \
         host CPU {:.2} µs per round trip, the host thread slept {:.0} times per 20,000",
        median(p50) / 1000.0,
        median(p99) / 1000.0,
        median(over),
        median(cpu_per_trip) / 1000.0,
        median(wakes)
    );

    // 5. The store's own ingest (the S3 PUT path: FastCDC, MD5, BLAKE3 + zstd-1, packs)
    // of the same GiB arriving in 64 KiB body pieces: inline against the router with
    // the agent, whose segment buffers are in the shared region. A fresh store per run,
    // so every run writes every chunk.
    let body: Vec<Bytes> =
        gib.iter().flat_map(|c| (0..16).map(move |i| c.slice(i * (64 << 10)..(i + 1) * (64 << 10)))).collect();
    let routed = hw_offload::Offload::routed(Router::new(
        cpu.clone(),
        vec![Route::new(agent.clone(), 64 << 10).with_threshold(OpKind::Boundaries, u64::MAX)],
        RouterConfig::default(),
    ));
    let (mut inline_ms, mut inline_mibs, mut routed_ms, mut routed_mibs, mut copied) =
        (vec![], vec![], vec![], vec![], vec![]);
    // The router's probation (every job checked until 64 answers were right) is spent on
    // a warm-up put.
    ingest(&routed, dir.path().join("warm-up"), &body[..1024]).await;
    for run in 0..runs {
        let cost = ingest(&hw_offload::Offload::cpu(1), dir.path().join(format!("inline-{run}")), &body).await;
        inline_ms.push(cost.process_ns as f64 / 1e6);
        inline_mibs.push(1024.0 / cost.wall.as_secs_f64());
        let before = agent.bytes_copied_in();
        let cost = ingest(&routed, dir.path().join(format!("routed-{run}")), &body).await;
        routed_ms.push(cost.process_ns as f64 / 1e6);
        routed_mibs.push(1024.0 / cost.wall.as_secs_f64());
        copied.push((agent.bytes_copied_in() - before) as f64 / MIB as f64);
    }
    println!(
        "\nstore ingest of 1 GiB: inline {:.0} ms/GiB host CPU, {:.0} MiB/s; router with the agent {:.0} ms/GiB, \
         {:.0} MiB/s, {:.1} MiB copied into the region",
        median(inline_ms),
        median(inline_mibs),
        median(routed_ms),
        median(routed_mibs),
        median(copied)
    );

    // 6. Idle agent CPU over 10 s, attached.
    let pid = agent_process.0.id();
    let before = proc_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle = proc_cpu_ns(pid) - before;
    println!("idle agent: {:.3} % of a core over 10 s", idle as f64 / 1e10 * 100.0);
    drop(agent_process);
}

/// The agent process, killed however the bench ends (a panic would otherwise leave it
/// running, holding its shared region and the bench's stderr).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
