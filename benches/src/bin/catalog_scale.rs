//! The catalog at scale (issue 13): one site's catalog over a real store (RocksDB), filled
//! with 10^6 versions and 10^7 replica records, then timed on what a scheduler asks: the
//! replicas of a version, and placement over 10 candidate sites with every remote answer
//! cached. Also the bytes on disk per record.
//!
//! usage:
//!   catalog_scale [--dir DIR] [--versions N] [--sites S] [--namespaces K] [--manifests M]
//!                 [--batch B] [--queries Q] [--seed X] [--query-seed Y] [--reuse] [--drop-cache]
//!
//! Population, at site s0 of the sites s0..s{S-1}, each with its own signing key:
//! - s0 creates K namespaces `s0.nsNNN` and publishes N versions of their datasets `d`
//!   (version k in namespace k mod K): the first M (`--manifests`) with
//!   `catalog::publish::publish` from real objects of a bucket (three files each), so that
//!   they have manifests and chunks (placement is timed on these); the others as
//!   `VersionPublished` events through `Catalog::append_with`, B versions per call, each
//!   with s0's own `ReplicaChanged` as a publication writes it;
//! - every other site writes one `ReplicaChanged` per version, signed with its own key, and
//!   they reach s0 as in production: through `Catalog::accept`, B events per call (default
//!   `MAX_EVENTS_PER_ANSWER`), checked against the keys of the federation file.
//!
//! So there are N × S replica records and N × (S + 1) events (plus K namespace events).
//! Signing the other sites' events is their cost, not s0's: it runs on a second thread,
//! and the rates below say what they count.
//!
//! Measuring, after `Store::flush` (the store exposes no compaction: RocksDB compacts in
//! the background as in the daemon, and the bench waits for the directory's size to
//! settle before sizing it):
//! - `Catalog::replicas` of Q random versions of the N;
//! - placement of a random version of the M over all S sites as `GET /catalog/placement`
//!   does it: `publish::resolve` of the version's id in its dataset, then
//!   `CatalogSync::placement`, with each remote site's presence answer put in the cache
//!   (`CatalogSync::cache_presence`, not timed) just before, so no peer is asked;
//! - `Catalog::versions` of a random dataset (what resolving a version id scans);
//! - the metadata directory's size per record, and each column family's SST bytes
//!   (RocksDB opened read-only once the store is closed).
//!
//! The summary is one JSON object on stdout; progress goes to stderr. `--dir` keeps the
//! store (without it, a temporary directory is removed at the end); `--reuse` with a
//! populated `--dir` measures again without populating; `--drop-cache` measures with the
//! metadata files out of the kernel's page cache.

use anyhow::{Context, bail, ensure};
use catalog::catalog::MAX_EVENTS_PER_ANSWER;
use catalog::event::Event;
use catalog::in_store::InStore;
use catalog::quic::{CatalogSync, Dial};
use catalog::{Catalog, CatalogError, CatalogStorage, EventBody, ReplicaState, SignedEvent, VersionId};
use clap::Parser;
use federation::file::Federation;
use federation::signing::SigningKey;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::versions::Presence;
use store::{Store, StoreConfig};

/// What `--reuse` reads back: the layout and the population's figures.
const STATE_FILE: &str = "catalog-scale.json";
/// Every namespace has one dataset of this name.
const DATASET: &str = "d";
/// The bucket (and its owning project) the manifest versions are published from.
const BUCKET: &str = "bench";
const PROJECT: &str = "bench";

/// The catalog at scale: populate one site's catalog, then time its queries.
#[derive(Parser)]
struct Args {
    /// the store's directory (kept); a temporary one (removed) when not given
    #[arg(long)]
    dir: Option<PathBuf>,
    /// versions published by the home site s0
    #[arg(long, default_value_t = 1_000_000)]
    versions: u64,
    /// sites s0..s{N-1}, each with a replica record of every version
    #[arg(long, default_value_t = 10)]
    sites: usize,
    /// namespaces of s0, one dataset each
    #[arg(long, default_value_t = 1000)]
    namespaces: u64,
    /// versions published from real objects, with manifests (placement runs on these)
    #[arg(long, default_value_t = 1000)]
    manifests: u64,
    /// versions per `append_with` call, and events per `accept` call
    #[arg(long, default_value_t = MAX_EVENTS_PER_ANSWER)]
    batch: usize,
    /// timed queries of each kind
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// seed of the population (version ids, sizes, replica states)
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// seed of the queries' random choices (default: from the clock)
    #[arg(long)]
    query_seed: Option<u64>,
    /// measure an already populated --dir again instead of populating it
    #[arg(long)]
    reuse: bool,
    /// before measuring, drop the kernel's cached pages of the store's metadata files (and
    /// only those), so that queries read what they need from the disk
    #[arg(long)]
    drop_cache: bool,
}

// ------------------------------------------------------------------------------ layout

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix(a: u64, b: u64) -> u64 {
    splitmix(a ^ splitmix(b))
}

/// A version published with a manifest.
#[derive(Clone)]
struct Manifested {
    id: VersionId,
    bytes: u64,
    chunks: u64,
}

/// What is in the catalog, all derived from the seed but the manifest versions' ids.
struct Layout {
    versions: u64,
    sites: usize,
    namespaces: u64,
    seed: u64,
    manifests: Vec<Manifested>,
}

impl Layout {
    fn site(i: usize) -> String {
        format!("s{i}")
    }

    /// The namespace of version `k`.
    fn ns(&self, k: u64) -> String {
        format!("s0.ns{:03}", k % self.namespaces)
    }

    fn version(&self, k: u64) -> VersionId {
        if let Some(m) = self.manifests.get(k as usize) {
            return m.id;
        }
        let mut id = [0u8; 32];
        for (i, part) in id.chunks_mut(8).enumerate() {
            part.copy_from_slice(&mix(mix(self.seed, k), i as u64).to_le_bytes());
        }
        VersionId(id)
    }

    /// (files, bytes, chunks) of version `k`: up to 500 files of 1 MiB to 4 GiB.
    fn size(&self, k: u64) -> (u64, u64, u64) {
        if let Some(m) = self.manifests.get(k as usize) {
            return (3, m.bytes, m.chunks);
        }
        let h = mix(self.seed ^ 0x5151, k);
        let files = 1 + h % 500;
        let bytes = files * (1 << 20) * (1 + (h >> 16) % 4096);
        (files, bytes, bytes.div_ceil(64 << 10))
    }

    /// Site `i`'s replica of version `k`: s0 holds every version; elsewhere 90 % complete,
    /// 5 % partial, 3 % copying, 2 % lost.
    fn replica(&self, k: u64, i: usize) -> (ReplicaState, u64, u64) {
        let (_, bytes, chunks) = self.size(k);
        if i == 0 {
            return (ReplicaState::Complete, bytes, chunks);
        }
        let h = mix(mix(self.seed, k), 100 + i as u64);
        let share = (h >> 8) % 100;
        match h % 100 {
            0..90 => (ReplicaState::Complete, bytes, chunks),
            90..95 => (ReplicaState::Partial, bytes * share / 100, chunks * share / 100),
            95..98 => (ReplicaState::Copying, 0, 0),
            _ => (ReplicaState::Lost, 0, 0),
        }
    }

    /// What site `i` would answer about version `k`'s presence (for the cache).
    fn presence(&self, k: u64, i: usize) -> Presence {
        let (_, bytes, chunks) = self.size(k);
        let (_, held, held_chunks) = self.replica(k, i);
        Presence {
            bytes_present: held,
            bytes_missing: bytes - held,
            chunks_present: held_chunks,
            chunks_missing: chunks - held_chunks,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "versions": self.versions,
            "sites": self.sites,
            "namespaces": self.namespaces,
            "seed": self.seed,
            "manifests": self.manifests.iter().map(|m| json!([m.id.to_hex(), m.bytes, m.chunks])).collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value) -> anyhow::Result<Self> {
        let int = |name: &str| v[name].as_u64().with_context(|| format!("{STATE_FILE}: no {name}"));
        let manifests = v["manifests"]
            .as_array()
            .context("no manifests")?
            .iter()
            .map(|m| {
                let id = m[0].as_str().and_then(VersionId::from_hex).context("a manifest id")?;
                Ok(Manifested { id, bytes: m[1].as_u64().context("bytes")?, chunks: m[2].as_u64().context("chunks")? })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            versions: int("versions")?,
            sites: int("sites")? as usize,
            namespaces: int("namespaces")?,
            seed: int("seed")?,
            manifests,
        })
    }
}

// ------------------------------------------------------------------------------ helpers

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn cpu_s(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = splitmix(seed) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn put(store: &Store, key: &str, data: Vec<u8>) -> anyhow::Result<()> {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data))]);
    store.put_object(BUCKET, key, Default::default(), body, &Default::default()).await?;
    Ok(())
}

/// p50 / p99 / max / mean of latencies, in ms.
fn stats(mut samples: Vec<Duration>) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0 });
    }
    samples.sort_unstable();
    let n = samples.len();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let at = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    let mean = samples.iter().sum::<Duration>() / n as u32;
    json!({ "count": n, "p50_ms": ms(at(0.50)), "p99_ms": ms(at(0.99)), "max_ms": ms(samples[n - 1]), "mean_ms": ms(mean) })
}

/// Apparent bytes of the files under `dir`, by RocksDB file kind.
fn dir_sizes(dir: &Path) -> anyhow::Result<Value> {
    let (mut sst, mut wal, mut info_log, mut other, mut files) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        files += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let len = meta.len();
        if name.ends_with(".sst") {
            sst += len;
        } else if name.ends_with(".log") {
            wal += len;
        } else if name.starts_with("LOG") {
            info_log += len;
        } else {
            other += len;
        }
    }
    Ok(json!({
        "files": files,
        "sst_bytes": sst,
        "wal_bytes": wal,
        "info_log_bytes": info_log,
        "other_bytes": other,
        "total_bytes": sst + wal + info_log + other,
        "counted_bytes": sst + wal + other,
    }))
}

/// Asks the kernel to drop its cached pages of every file in `dir` (those files only: the
/// rest of the machine's page cache stays), so that reads of them go to the disk. RocksDB
/// keeps the index and filter blocks of open tables in its own memory; data blocks are
/// read again. Returns how many files.
fn drop_cached_pages(dir: &Path) -> anyhow::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.metadata()?.is_file() {
            continue;
        }
        let file = std::fs::File::open(entry.path())?;
        // SAFETY: advice about a file descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        ensure!(rc == 0, "posix_fadvise {}: error {rc}", entry.path().display());
        files += 1;
    }
    Ok(files)
}

fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Flushes the store, then waits (at most 10 minutes) until the metadata directory's size
/// has not changed for 10 s: background compactions done.
async fn flush_and_settle(store: &Store, meta_dir: &Path) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    store.flush().await?;
    let (mut last, mut stable) = (0, 0);
    while stable < 5 && t0.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = dir_sizes(meta_dir)?["total_bytes"].as_u64().unwrap_or(0);
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// SST bytes and entries of each column family, read from RocksDB opened read-only (the
/// store must be closed, or at least flushed).
fn column_families(meta_dir: &Path) -> anyhow::Result<Value> {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, meta_dir)?;
    let db = rocksdb::DB::open_cf_for_read_only(&opts, meta_dir, &names, false)?;
    let mut by_cf: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for file in db.live_files()? {
        let e = by_cf.entry(file.column_family_name).or_default();
        e.0 += file.size as u64;
        e.1 += file.num_entries;
        e.2 += 1;
    }
    Ok(by_cf
        .into_iter()
        .filter(|(_, (bytes, _, _))| *bytes > 0)
        .map(|(cf, (bytes, entries, files))| {
            let per = if entries > 0 { (bytes as f64 / entries as f64 * 10.0).round() / 10.0 } else { 0.0 };
            (cf, json!({ "sst_bytes": bytes, "entries": entries, "files": files, "bytes_per_entry": per }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

fn federation_text(public_keys: &[[u8; 32]], seed: u64) -> String {
    let mut text = String::from(
        "name = \"bench\"\nca_cert = \"\"\"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n\"\"\"\n",
    );
    for (i, key) in public_keys.iter().enumerate() {
        text += &format!(
            "[[site]]\nname = \"{}\"\nquic = \"127.0.0.1:{}\"\ns3 = \"http://127.0.0.1:9000\"\n\
             signing_key = \"{}\"\ntls_key = \"sha256:{}\"\n",
            Layout::site(i),
            7444 + i,
            federation::file::format_signing_key(key),
            "00".repeat(32),
        );
    }
    // A link table: every pair, 100 Mbit/s to 10 Gbit/s, 5 to 155 ms.
    for a in 0..public_keys.len() {
        for b in a + 1..public_keys.len() {
            let h = mix(seed, (a * 1000 + b) as u64);
            text += &format!(
                "[[link]]\na = \"{}\"\nb = \"{}\"\nbandwidth_mbps = {}\nrtt_ms = {}\n",
                Layout::site(a),
                Layout::site(b),
                [100, 1000, 10_000][(h % 3) as usize],
                5 + (h >> 8) % 150
            );
        }
    }
    text
}

/// A dial that never connects: placement must find every remote answer in the cache.
fn no_network() -> Dial {
    Box::new(|peer: String| {
        let fail: std::pin::Pin<Box<dyn Future<Output = Result<_, String>> + Send>> =
            Box::pin(async move { Err(format!("catalog_scale has no network (asked to dial {peer})")) });
        fail
    })
}

// ------------------------------------------------------------------------------ population

/// Signs every other site's replica events, in blocks of `batch` versions, each site's
/// block one batch; returns this thread's CPU seconds.
fn sign_replicas(
    layout: Arc<Layout>,
    keys: Vec<SigningKey>,
    batch: usize,
    out: std::sync::mpsc::SyncSender<Vec<SignedEvent>>,
) -> f64 {
    for start in (0..layout.versions).step_by(batch) {
        let end = (start + batch as u64).min(layout.versions);
        for (i, key) in keys.iter().enumerate() {
            let site = i + 1;
            let origin = Layout::site(site);
            let at_ms = now_ms();
            let events = (start..end)
                .map(|k| {
                    let (state, bytes_held, chunks_held) = layout.replica(k, site);
                    let body = EventBody::ReplicaChanged { version: layout.version(k), state, bytes_held, chunks_held };
                    SignedEvent::sign(&Event { origin: origin.clone(), seq: k + 1, at_ms, body }, key)
                })
                .collect();
            if out.send(events).is_err() {
                return cpu_s(libc::RUSAGE_THREAD);
            }
        }
    }
    cpu_s(libc::RUSAGE_THREAD)
}

async fn append(catalog: &Catalog<InStore>, bodies: Vec<EventBody>) -> anyhow::Result<usize> {
    let n = bodies.len();
    catalog.append_with(bodies, now_ms(), async |ops| catalog.storage().write(ops).map_err(CatalogError::from)).await?;
    Ok(n)
}

/// Publishes the manifest versions from real objects: three files each (a 256 KiB file
/// shared by every tenth version, one of 64 KiB to 1 MiB, a small JSON kept inline by the
/// store until published).
async fn publish_manifests(
    store: &Store,
    catalog: &Catalog<InStore>,
    args: &Args,
) -> anyhow::Result<(Vec<Manifested>, Value)> {
    store.create_bucket(BUCKET, PROJECT).await?;
    let (mut ingest, mut publish) = (Duration::ZERO, Duration::ZERO);
    let (mut data_bytes, mut out) = (0u64, Vec::new());
    let layout = Layout { versions: 0, sites: 0, namespaces: args.namespaces, seed: args.seed, manifests: Vec::new() };
    for j in 0..args.manifests {
        let prefix = format!("v{j:06}/");
        let h = mix(args.seed ^ 0xabc, j);
        let files = [
            ("calibration.nc", noise(256 << 10, j % 10)),
            ("run.nc", noise((64 << 10) + (h % (960 << 10)) as usize, h)),
            ("meta.json", format!("{{\"run\": {j}, \"note\": \"{}\"}}", "x".repeat((h >> 20) as usize % 3000)).into()),
        ];
        let t = Instant::now();
        for (name, data) in files {
            data_bytes += data.len() as u64;
            put(store, &format!("{prefix}{name}"), data).await?;
        }
        ingest += t.elapsed();
        let t = Instant::now();
        let published =
            catalog::publish::publish(catalog, BUCKET, &prefix, &layout.ns(j), DATASET, None, now_ms()).await?;
        publish += t.elapsed();
        ensure!(published.new, "version {j} published twice");
        out.push(Manifested { id: published.version, bytes: published.bytes, chunks: published.chunks });
    }
    let figures = json!({
        "count": args.manifests,
        "data_bytes": data_bytes,
        "ingest_s": ingest.as_secs_f64(),
        "publish_s": publish.as_secs_f64(),
        "publish_ms_each": publish.as_secs_f64() * 1e3 / args.manifests.max(1) as f64,
    });
    Ok((out, figures))
}

async fn populate(
    store: &Arc<Store>,
    catalog: &Catalog<InStore>,
    federation: &Federation,
    other_keys: Vec<SigningKey>,
    args: &Args,
) -> anyhow::Result<(Layout, Value)> {
    let (t0, cpu0) = (Instant::now(), cpu_s(libc::RUSAGE_SELF));
    let load_start = loadavg();
    let namespaces: Vec<EventBody> = (0..args.namespaces)
        .map(|i| EventBody::NamespaceCreated { ns: format!("s0.ns{i:03}"), project: PROJECT.into() })
        .collect();
    let mut own_events = append(catalog, namespaces).await? as u64;
    eprintln!("populate: {} namespaces", args.namespaces);

    let (manifests, manifest_figures) = publish_manifests(store, catalog, args).await?;
    // Each publication: namespace's first creation is there already, so version + replica.
    own_events += 2 * manifests.len() as u64;
    eprintln!("populate: {} versions published from objects in {:.1} s", manifests.len(), t0.elapsed().as_secs_f64());
    let layout = Arc::new(Layout {
        versions: args.versions,
        sites: args.sites,
        namespaces: args.namespaces,
        seed: args.seed,
        manifests,
    });

    let (tx, rx) = std::sync::mpsc::sync_channel(2 * args.sites);
    let signer = {
        let (layout, batch) = (layout.clone(), args.batch);
        std::thread::spawn(move || sign_replicas(layout, other_keys, batch, tx))
    };
    let (t_stream, m) = (Instant::now(), layout.manifests.len() as u64);
    let (mut own_time, mut accept_time, mut accepted) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut last_report = Instant::now();
    for start in (0..layout.versions).step_by(args.batch) {
        let end = (start + args.batch as u64).min(layout.versions);
        let bodies: Vec<EventBody> = (start.max(m)..end)
            .flat_map(|k| {
                let (files, bytes, chunks) = layout.size(k);
                let version = layout.version(k);
                [
                    EventBody::VersionPublished { ns: layout.ns(k), name: DATASET.into(), version, files, bytes },
                    EventBody::ReplicaChanged {
                        version,
                        state: ReplicaState::Complete,
                        bytes_held: bytes,
                        chunks_held: chunks,
                    },
                ]
            })
            .collect();
        if !bodies.is_empty() {
            let t = Instant::now();
            own_events += append(catalog, bodies).await? as u64;
            own_time += t.elapsed();
        }
        for _ in 1..layout.sites {
            let events: Vec<SignedEvent> = rx.recv().context("the signing thread stopped")?;
            let t = Instant::now();
            let report = catalog.accept(&events, federation).await?;
            accept_time += t.elapsed();
            ensure!(
                report.applied == events.len() as u64 && report.refused.is_empty(),
                "accept: {} of {} applied, refused {:?}",
                report.applied,
                events.len(),
                report.refused.first()
            );
            accepted += report.applied;
        }
        if last_report.elapsed() > Duration::from_secs(15) || end == layout.versions {
            last_report = Instant::now();
            let secs = t_stream.elapsed().as_secs_f64();
            let done = (end - m) as f64 / (layout.versions - m).max(1) as f64;
            eprintln!(
                "populate: {end}/{} versions, {} events in {secs:.0} s: {:.0} events/s; accept {:.0} events/s, \
                 append {:.0} events/s; eta {:.0} s; load {}",
                layout.versions,
                own_events + accepted,
                (own_events + accepted) as f64 / secs,
                accepted as f64 / accept_time.as_secs_f64().max(1e-9),
                own_events as f64 / own_time.as_secs_f64().max(1e-9),
                secs / done.max(1e-9) - secs,
                loadavg(),
            );
        }
    }
    let signing_cpu_s = signer.join().map_err(|_| anyhow::anyhow!("the signing thread panicked"))?;
    let stream_s = t_stream.elapsed().as_secs_f64();
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(libc::RUSAGE_SELF) - cpu0;
    let events = own_events + accepted;
    let figures = json!({
        "events": events,
        "own_events": own_events,
        "accepted_events": accepted,
        "batch": args.batch,
        "manifests": manifest_figures,
        "wall_s": wall_s,
        "events_per_s_wall": events as f64 / wall_s,
        "stream_wall_s": stream_s,
        "accept_s": accept_time.as_secs_f64(),
        "accept_events_per_s": accepted as f64 / accept_time.as_secs_f64().max(1e-9),
        "append_s": own_time.as_secs_f64(),
        "append_events_per_s": (own_events - 2 * m - args.namespaces) as f64 / own_time.as_secs_f64().max(1e-9),
        "process_cpu_s": cpu,
        "signing_thread_cpu_s": signing_cpu_s,
        "load_start": load_start,
        "load_end": loadavg(),
    });
    let layout = Arc::into_inner(layout).context("the layout is still shared")?;
    Ok((layout, figures))
}

// ------------------------------------------------------------------------------ measuring

async fn measure(
    catalog: &Arc<Catalog<InStore>>,
    federation: Arc<Federation>,
    layout: &Layout,
    queries: usize,
    query_seed: u64,
) -> anyhow::Result<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(query_seed);
    let load_start = loadavg();

    eprintln!("measure: replicas of {queries} random versions");
    let mut replicas = Vec::with_capacity(queries);
    let mut wrong_counts = 0u64;
    for _ in 0..queries {
        let version = layout.version(rng.gen_range(0..layout.versions));
        let t = Instant::now();
        let found = catalog.replicas(&version)?;
        replicas.push(t.elapsed());
        wrong_counts += u64::from(found.len() != layout.sites);
    }

    let dataset_queries = queries.min(1000);
    eprintln!("measure: versions of {dataset_queries} random datasets");
    let mut versions = Vec::with_capacity(dataset_queries);
    let mut listed = 0u64;
    for _ in 0..dataset_queries {
        let ns = layout.ns(rng.gen_range(0..layout.namespaces));
        let t = Instant::now();
        listed += catalog.versions(&ns, DATASET)?.len() as u64;
        versions.push(t.elapsed());
    }

    let (mut resolve, mut placement, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors = 0u64;
    if !layout.manifests.is_empty() {
        eprintln!("measure: placement of {queries} random manifest versions over {} sites", layout.sites);
        let sync = CatalogSync::new(catalog.clone(), federation, no_network());
        let candidates: Vec<String> = (0..layout.sites).map(Layout::site).collect();
        for _ in 0..queries {
            let k = rng.gen_range(0..layout.manifests.len() as u64);
            let version = layout.version(k);
            for (i, site) in candidates.iter().enumerate().skip(1) {
                sync.cache_presence(version, site, now_ms(), layout.presence(k, i));
            }
            let t = Instant::now();
            let resolved = catalog::publish::resolve(catalog, &layout.ns(k), DATASET, &version.to_hex())?;
            let t_resolved = Instant::now();
            let placed = sync.placement(&resolved, &candidates).await?;
            let t_end = Instant::now();
            resolve.push(t_resolved - t);
            placement.push(t_end - t_resolved);
            total.push(t_end - t);
            ensure!(resolved == version && placed.len() == candidates.len(), "placement of {version}: {placed:?}");
            errors += placed.iter().filter(|p| p.error.is_some() || p.bytes_missing.is_none()).count() as u64;
            let here = &placed[0];
            ensure!(here.bytes_missing == Some(0), "s0 holds every chunk of {version}: {here:?}");
        }
    }
    Ok(json!({
        "query_seed": query_seed,
        "replicas": stats(replicas),
        "replica_count_mismatches": wrong_counts,
        "versions_of_dataset": stats(versions),
        "versions_listed_mean": listed as f64 / dataset_queries.max(1) as f64,
        "placement_total": stats(total),
        "placement_resolve": stats(resolve),
        "placement_sync": stats(placement),
        "placement_site_errors": errors,
        "load_start": load_start,
        "load_end": loadavg(),
    }))
}

// ------------------------------------------------------------------------------ main

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.sites >= 1 && args.sites <= 64, "--sites: 1 to 64 (a placement query names at most 64)");
    ensure!(args.namespaces >= 1 && args.namespaces <= 1000, "--namespaces: 1 to 1000");
    ensure!(args.manifests <= args.versions, "--manifests: at most --versions");
    ensure!(args.batch >= 1, "--batch: at least 1");
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("catalog-scale").tempdir_in("/var/tmp")?),
    };
    let dir = args.dir.clone().unwrap_or_else(|| temp.as_ref().expect("temp dir").path().to_path_buf());
    let state_path = dir.join(STATE_FILE);
    let meta_dir = dir.join("meta");
    let populated = state_path.exists();
    if populated && !args.reuse {
        bail!("{} is populated already: --reuse to measure it again, or remove it", dir.display());
    }
    if !populated && meta_dir.exists() {
        bail!("{} holds a store but no {STATE_FILE} (an interrupted population?): remove it", dir.display());
    }
    let query_seed = args.query_seed.unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
    eprintln!("catalog_scale: {} (load {})", dir.display(), loadavg());

    let store = Store::open(StoreConfig::new(&dir), hw_offload::Offload::cpu(1)).await?;
    let mut keys: Vec<SigningKey> = (0..args.sites).map(|_| SigningKey::generate()).collect::<Result<_, _>>()?;
    let public: Vec<[u8; 32]> = keys.iter().map(SigningKey::public_key).collect();
    let federation = Arc::new(Federation::parse(&federation_text(&public, args.seed), Path::new("/"))?);
    let others = keys.split_off(1);
    let catalog = Arc::new(Catalog::new(InStore(store.clone()), "s0", keys.pop().expect("s0's key")));

    let (layout, population, settle_s) = if populated {
        let state: Value = serde_json::from_slice(&std::fs::read(&state_path)?)?;
        let layout = Layout::from_json(&state["layout"])?;
        eprintln!("reusing: {} versions, {} sites", layout.versions, layout.sites);
        let mut population = state["population"].clone();
        population["reused"] = json!(true);
        (layout, population, 0.0)
    } else {
        let (layout, mut population) = populate(&store, &catalog, &federation, others, &args).await?;
        eprintln!(
            "populated in {:.0} s; flushing and waiting for compactions",
            population["wall_s"].as_f64().unwrap_or(0.0)
        );
        let settle_s = flush_and_settle(&store, &meta_dir).await?;
        population["meta_dir_after_flush"] = dir_sizes(&meta_dir)?;
        let state = json!({ "layout": layout.to_json(), "population": population });
        std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)?;
        (layout, population, settle_s)
    };

    let heads = catalog.heads()?;
    let events_held: u64 = heads.values().sum();
    let replica_records = layout.versions * layout.sites as u64;
    if args.drop_cache {
        let files = drop_cached_pages(&meta_dir)?;
        eprintln!("dropped the cached pages of {files} metadata files");
    }
    let mut queries = measure(&catalog, federation, &layout, args.queries, query_seed).await?;
    queries["page_cache_dropped_first"] = json!(args.drop_cache);

    let disk = dir_sizes(&meta_dir)?;
    let counted = disk["counted_bytes"].as_u64().unwrap_or(0);
    let per = |n: u64| (counted as f64 / n.max(1) as f64 * 10.0).round() / 10.0;
    let chunk_data_bytes = tree_bytes(&dir.join("chunks"));
    drop(catalog);
    drop(store);
    let column_families = column_families(&meta_dir)?;
    let catalog_sst: u64 = column_families
        .as_object()
        .map(|m| {
            m.iter().filter(|(cf, _)| cf.starts_with("catalog_")).filter_map(|(_, v)| v["sst_bytes"].as_u64()).sum()
        })
        .unwrap_or(0);

    let summary = json!({
        "bench": "catalog_scale",
        "dir": dir.display().to_string(),
        "layout": {
            "versions": layout.versions,
            "sites": layout.sites,
            "namespaces": layout.namespaces,
            "manifest_versions": layout.manifests.len(),
            "replica_records": replica_records,
            "events_held": events_held,
        },
        "machine": { "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()), "load_now": loadavg() },
        "population": population,
        "settle_s": settle_s,
        "queries": queries,
        "disk": {
            "meta_dir": disk,
            "what_is_counted": "counted_bytes: every file of <dir>/meta (the store's whole RocksDB: SST files, \
                WAL, MANIFEST, OPTIONS) but RocksDB's info logs (LOG*); chunk data is apart",
            "counted_bytes_per_replica_record": per(replica_records),
            "counted_bytes_per_event": per(events_held),
            "catalog_sst_bytes": catalog_sst,
            "catalog_sst_bytes_per_replica_record": (catalog_sst as f64 / replica_records.max(1) as f64 * 10.0).round()
                / 10.0,
            "chunk_data_bytes": chunk_data_bytes,
            "column_families": column_families,
        },
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    drop(temp);
    Ok(())
}
