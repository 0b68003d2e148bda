//! The offload engines the daemon uses, `clusster offload-agent` and
//! `clusster offload bench` (which measures each engine here and writes the size
//! thresholds the router uses).

use crate::config::OffloadSettings;
use anyhow::{Context, bail};
use bytes::Bytes;
use hw_offload::agent::{AgentConfig, AgentEngine, ServeOptions};
use hw_offload::{
    ChunkId, Codec, CpuEngine, Engine, Job, Offload, OpKind, Route, Router, Step, SumAlgo, process_cpu_ns,
};
use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Jobs from this size go to the agent when no thresholds file says otherwise: below
/// it, copying through the ring costs the host about as much as the work itself.
const DEFAULT_AGENT_MIN_BYTES: u64 = 64 << 10;

/// The operations routed to the agent, as named in the thresholds file.
const ROUTED_OPS: [OpKind; 4] = [OpKind::ChunkId, OpKind::Compress, OpKind::Decompress, OpKind::Sum];

/// The handle the store gets: the CPU alone, or a router over the agent and the CPU.
pub fn build(settings: &OffloadSettings) -> anyhow::Result<Offload> {
    if !settings.use_agent {
        return Ok(Offload::cpu(settings.cpu_threads));
    }
    let agent = Arc::new(start_agent_engine(settings)?);
    let thresholds = read_thresholds(&settings.thresholds_file)?;
    let mut route = Route::new(agent, u64::MAX);
    for op in ROUTED_OPS {
        route = route.with_threshold(op, thresholds.get(op.name()).copied().unwrap_or(DEFAULT_AGENT_MIN_BYTES));
    }
    let cpu = Arc::new(CpuEngine::new(settings.cpu_threads));
    Ok(Offload::routed(Router::new(cpu, vec![route], settings.router.clone())))
}

fn start_agent_engine(settings: &OffloadSettings) -> anyhow::Result<AgentEngine> {
    let mut config = AgentConfig::new(&settings.agent_socket);
    config.region_bytes = settings.agent_region_bytes;
    AgentEngine::start("agent", config).context("cannot start the offload agent engine")
}

/// `[agent]` op name → minimum bytes, from the file `clusster offload bench` writes.
fn read_thresholds(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct File {
        agent: BTreeMap<String, u64>,
    }
    let file: File = toml::from_str(&text)
        .with_context(|| format!("invalid thresholds file {}; rerun `clusster offload bench`", path.display()))?;
    for name in file.agent.keys() {
        if !ROUTED_OPS.iter().any(|op| op.name() == name) {
            bail!("thresholds file {}: unknown operation {name:?}", path.display());
        }
    }
    Ok(file.agent)
}

/// `clusster offload-agent`: serves hosts on `socket` until killed.
pub fn run_agent(socket: &Path, options: ServeOptions) -> anyhow::Result<()> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(crate::commands::UsageError(format!(
                "an offload agent already listens on {}; stop it or choose another --socket",
                socket.display()
            ))
            .into());
        }
        // A socket file left by an agent that died: nobody listens on it.
        std::fs::remove_file(socket).with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    let cores = &options.cores;
    hw_offload::agent::shm::pin_current_thread(cores)
        .map_err(|e| crate::commands::UsageError(format!("cannot pin the agent to cores {cores:?}: {e}")))?;
    tracing::info!(socket = %socket.display(), ?cores, idle_spin = ?options.idle_spin, "offload agent ready");
    println!("{}", serde_json::json!({ "agent_socket": socket, "cores": cores }));
    hw_offload::agent::serve(listener, options, Arc::new(AtomicBool::new(false))).context("offload agent stopped")
}

/// One measured row of the calibration.
#[derive(Debug, serde::Serialize)]
pub struct BenchRow {
    /// operation
    pub op: &'static str,
    /// job size, bytes
    pub bytes: usize,
    /// host CPU per job when the CPU engine runs it, ns
    pub cpu_host_ns: u64,
    /// host CPU per job when the agent runs it, ns
    pub agent_host_ns: u64,
    /// wall time per job through the agent, ns
    pub agent_wall_ns: u64,
}

/// Sizes the calibration measures: 512 B to 4 MiB.
const BENCH_SIZES: [usize; 7] = [512, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];

fn bench_job(op: OpKind, data: &Bytes, packed: &(Bytes, Codec)) -> Job {
    match op {
        OpKind::ChunkId => Job::new(data.clone(), vec![Step::ChunkId]),
        OpKind::Compress => {
            Job::new(data.clone(), vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }])
        }
        OpKind::Decompress => Job::encoded(
            packed.0.clone(),
            packed.1,
            vec![Step::Decompress { codec: packed.1, plain_len: data.len() as u32 }, Step::Verify(ChunkId::of(data))],
        ),
        _ => Job::new(data.clone(), vec![Step::Sum(SumAlgo::Crc32c)]),
    }
}

/// Host CPU per job on `engine`, in batches of up to 32 jobs (and up to 16 MiB, so
/// a batch fits the agent's shared region), over about `budget`.
async fn measure(
    engine: &dyn Engine,
    make: &dyn Fn() -> Job,
    size: usize,
    budget: Duration,
) -> anyhow::Result<(u64, u64)> {
    let batch = ((16 << 20) / size.max(1)).clamp(1, 32);
    let started = Instant::now();
    let cpu = process_cpu_ns();
    let mut jobs = 0u64;
    while started.elapsed() < budget || jobs < batch as u64 * 4 {
        for r in engine.submit((0..batch).map(|_| make()).collect()).await {
            r.with_context(|| format!("a calibration job failed on {}", engine.name()))?;
        }
        jobs += batch as u64;
    }
    Ok(((process_cpu_ns() - cpu) / jobs, started.elapsed().as_nanos() as u64 / jobs))
}

/// `clusster offload bench`: measures host CPU per job on the CPU engine and through the
/// agent for each operation and size, and writes the smallest size from which the
/// agent costs the host less (and every larger size does too).
pub async fn bench(settings: &OffloadSettings, out: &Path) -> anyhow::Result<Vec<BenchRow>> {
    let agent = start_agent_engine(settings)?;
    if !agent.is_attached() {
        bail!(
            "no offload agent answers on {}; start `clusster offload-agent --socket {}` first",
            settings.agent_socket.display(),
            settings.agent_socket.display()
        );
    }
    let cpu = CpuEngine::new(1);
    let mut rows = Vec::new();
    let mut thresholds = BTreeMap::new();
    for op in ROUTED_OPS {
        let mut pays_from: Option<usize> = None;
        for &size in &BENCH_SIZES {
            // Text-like data, so compression and decompression do real work.
            let data: Bytes = b"clusster calibration text: research data moves between sites\n"
                .iter()
                .cycle()
                .take(size)
                .copied()
                .collect::<Vec<u8>>()
                .into();
            let packed = cpu.submit(vec![bench_job(OpKind::Compress, &data, &(data.clone(), Codec::Raw))]).await;
            let packed = packed.into_iter().next().expect("one result")?;
            let packed = (packed.data, packed.codec);
            let make = || bench_job(op, &data, &packed);
            let budget = Duration::from_millis(300);
            let (cpu_host_ns, _) = measure(&cpu, &make, size, budget).await?;
            let (agent_host_ns, agent_wall_ns) = measure(&agent, &make, size, budget).await?;
            if agent_host_ns < cpu_host_ns {
                pays_from.get_or_insert(size);
            } else {
                pays_from = None;
            }
            rows.push(BenchRow { op: op.name(), bytes: size, cpu_host_ns, agent_host_ns, agent_wall_ns });
        }
        // "Never" is i64::MAX: TOML integers are signed.
        thresholds.insert(op.name(), pays_from.map_or(i64::MAX as u64, |s| s as u64));
    }
    let mut text = String::from(
        "# Written by `clusster offload bench`: per operation, the smallest job (bytes) from\n\
         # which the offload agent costs the host less CPU than running it inline.\n[agent]\n",
    );
    for (op, min) in &thresholds {
        text.push_str(&format!("{op} = {min}\n"));
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(rows)
}
