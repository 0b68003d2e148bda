//! The daemon's TOML configuration, in two steps: [`RawConfig`] mirrors the file (every
//! field documented and defaulted), [`Settings`] is what the code uses once checked.

use anyhow::{Context, bail};
use federation::{Membership, TransportSettings};
use hw_offload::ChunkerConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use store::StoreConfig;

/// The name of the config file `clusster init` writes into a data dir.
pub const CONFIG_FILE: &str = "clusster.toml";
/// The file `clusster serve` writes with the addresses it bound.
pub const LISTEN_FILE: &str = "listen.json";
/// The data dir used when neither flag nor config names one.
pub const DEFAULT_DATA_DIR: &str = "clusster-data";

/// The config file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// This site.
    pub site: RawSite,
    /// The content-addressed store.
    pub store: RawStore,
    /// Where checksum and compression work runs.
    pub offload: RawOffload,
    /// The operator's HTTP listener: /health, /metrics, maintenance.
    pub admin: RawAdmin,
    /// The S3 gateway.
    pub s3: RawS3,
    /// Membership of a federation; absent file = a site on its own, no QUIC listener.
    pub federation: RawFederation,
    /// QUIC transport tuning for transfers between sites.
    pub transfer: TransportSettings,
    /// The federated catalog.
    pub catalog: RawCatalog,
}

/// `[catalog]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCatalog {
    /// Events of this site's catalog log between two checkpoints, after each of which every
    /// site drops the events later ones undid, and a site that lacks them loads a snapshot.
    pub checkpoint_every: u64,
    /// The average size of the chunks stage-out clients cut (a power of two; a quarter of
    /// it at least, four times at most).
    pub stage_chunk_avg_bytes: u32,
}

impl Default for RawCatalog {
    fn default() -> Self {
        Self {
            checkpoint_every: catalog::compaction::CHECKPOINT_EVERY,
            stage_chunk_avg_bytes: catalog::stage::STAGE_CHUNK_AVG_BYTES,
        }
    }
}

/// `[site]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSite {
    /// The site's name in the federation.
    pub name: String,
    /// Where metadata and (by default) chunk packs live. Relative paths are taken from
    /// the directory of the config file.
    pub data_dir: PathBuf,
}

impl Default for RawSite {
    fn default() -> Self {
        Self { name: "local".into(), data_dir: PathBuf::from(DEFAULT_DATA_DIR) }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStore {
    /// Put chunk packs in any object_store URL instead of `<data_dir>/chunks`
    /// (`s3://bucket/prefix`, `file:///path`). Empty: the data dir.
    pub chunk_store_url: String,
    /// Options for that URL, e.g. `aws_endpoint = "http://127.0.0.1:9000"`.
    pub chunk_store_options: std::collections::BTreeMap<String, String>,
    /// FastCDC minimum chunk size, bytes.
    pub chunk_min_bytes: u32,
    /// FastCDC average chunk size, bytes (a power of two).
    pub chunk_avg_bytes: u32,
    /// FastCDC maximum chunk size, bytes.
    pub chunk_max_bytes: u32,
    /// Objects up to this size are stored inside the metadata, not chunked.
    pub inline_max_bytes: u32,
    /// A pack object is sealed at this size, bytes.
    pub pack_target_bytes: u64,
    /// zstd level for chunks; 0 stores chunks uncompressed.
    pub zstd_level: i32,
    /// Codec for new chunks: "zstd", "lz4" (what DPU engines decompress) or "none".
    pub codec: String,
    /// Chunks read ahead of the client on a GET.
    pub read_ahead_chunks: usize,
    /// Seconds between garbage collection passes; 0 disables them.
    pub gc_interval_secs: u64,
    /// Seconds between scrubs of every chunk; 0 disables them.
    pub scrub_interval_secs: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        let d = StoreConfig::new(".");
        Self {
            chunk_store_url: String::new(),
            chunk_store_options: Default::default(),
            chunk_min_bytes: d.chunker.min_bytes,
            chunk_avg_bytes: d.chunker.avg_bytes,
            chunk_max_bytes: d.chunker.max_bytes,
            inline_max_bytes: d.inline_max_bytes,
            pack_target_bytes: d.pack_target_bytes,
            zstd_level: d.zstd_level.unwrap_or(0),
            codec: d.codec.name().into(),
            read_ahead_chunks: d.read_ahead_chunks,
            gc_interval_secs: 3600,
            scrub_interval_secs: 7 * 24 * 3600,
        }
    }
}

/// `[offload]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOffload {
    /// CPU engine worker threads; 0 = one per core.
    pub cpu_threads: usize,
    /// Offload engines used besides the CPU, in order of preference: "agent".
    pub engines: Vec<String>,
    /// The offload agent's Unix socket; relative to the data dir.
    pub agent_socket: PathBuf,
    /// Cores `clusster offload-agent` pins its threads to; empty: not pinned.
    pub agent_cores: Vec<usize>,
    /// Size of the memory region shared with the agent, MiB.
    pub agent_region_mib: u64,
    /// Size thresholds written by `clusster offload bench`; relative to the data dir.
    /// A missing file means the built-in thresholds.
    pub thresholds_file: PathBuf,
    /// One offloaded job in this many is checked on the CPU (0: none after probation).
    pub spot_check_one_in: u64,
    /// Answers an engine must give right, every job checked, each time it is (re)enabled
    /// or re-attached, before its jobs are only sampled.
    pub probation_jobs: u64,
    /// An engine that has not answered a batch within this many ms is bypassed.
    pub deadline_ms: u64,
    /// A failing engine is left alone this many seconds before it is tried again.
    pub disable_secs: u64,
}

impl Default for RawOffload {
    fn default() -> Self {
        let router = hw_offload::RouterConfig::default();
        Self {
            cpu_threads: 0,
            engines: Vec::new(),
            agent_socket: PathBuf::from("offload-agent.sock"),
            agent_cores: Vec::new(),
            agent_region_mib: 64,
            thresholds_file: PathBuf::from("offload-thresholds.toml"),
            spot_check_one_in: router.spot_check_one_in,
            probation_jobs: router.probation_jobs,
            deadline_ms: router.deadline.as_millis() as u64,
            disable_secs: router.disable_for.as_secs(),
        }
    }
}

/// Checked `[offload]` settings.
#[derive(Debug, Clone)]
pub struct OffloadSettings {
    /// CPU engine threads (0: one per core)
    pub cpu_threads: usize,
    /// whether to use the agent
    pub use_agent: bool,
    /// absolute agent socket path
    pub agent_socket: PathBuf,
    /// cores the agent pins itself to
    pub agent_cores: Vec<usize>,
    /// shared region size, bytes
    pub agent_region_bytes: u64,
    /// absolute thresholds file path
    pub thresholds_file: PathBuf,
    /// router behaviour
    pub router: hw_offload::RouterConfig,
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin HTTP listener (port 0 picks a free port).
    pub listen: String,
    /// Address of a second, HTTPS listener of the same routes, for clients off this host
    /// (stage-in/out from compute nodes); empty: none.
    pub tls_listen: String,
    /// Its certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9470".into(),
            tls_listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

/// `[s3]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawS3 {
    /// Address of the S3 listener (port 0 picks a free port).
    pub listen: String,
    /// Region reported to clients.
    pub region: String,
    /// Base domain for virtual-hosted-style addressing (`bucket.<domain>`), port
    /// included as clients send it; empty serves path-style only.
    pub domain: String,
    /// PEM certificate chain for HTTPS; empty serves plain HTTP.
    pub tls_cert: PathBuf,
    /// PEM private key for HTTPS.
    pub tls_key: PathBuf,
    /// Time a client has to send a request's headers (also ends idle keep-alive
    /// connections), ms.
    pub header_read_timeout_ms: u64,
    /// Time a client has to finish the TLS handshake, ms.
    pub tls_handshake_timeout_ms: u64,
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for RawS3 {
    fn default() -> Self {
        let limits = s3_gateway::server::ConnectionLimits::default();
        Self {
            listen: "127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            domain: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            header_read_timeout_ms: limits.header_read_timeout.as_millis() as u64,
            tls_handshake_timeout_ms: limits.tls_handshake_timeout.as_millis() as u64,
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
        }
    }
}

/// `[federation]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFederation {
    /// The federation file; empty: this site is not federated and no QUIC listener starts.
    /// A relative path is taken from the directory of the config file.
    pub file: PathBuf,
    /// Directory holding site.key, site.pem and ca.pem; empty: `<data_dir>/tls`.
    pub tls_dir: PathBuf,
    /// Address of the QUIC transfer listener (port 0 picks a free port).
    pub quic_listen: String,
}

impl Default for RawFederation {
    fn default() -> Self {
        Self { file: PathBuf::new(), tls_dir: PathBuf::new(), quic_listen: DEFAULT_QUIC_LISTEN.into() }
    }
}

/// The QUIC listener of a federated site unless configured otherwise.
pub const DEFAULT_QUIC_LISTEN: &str = "127.0.0.1:7444";
/// Where the TLS files live inside the data dir unless `tls_dir` says otherwise.
pub const DEFAULT_TLS_DIR: &str = "tls";

/// What the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// --data-dir
    pub data_dir: Option<PathBuf>,
    /// --admin-listen
    pub admin_listen: Option<String>,
    /// --s3-listen
    pub s3_listen: Option<String>,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// site name
    pub site_name: String,
    /// absolute data dir
    pub data_dir: PathBuf,
    /// store settings
    pub store: StoreConfig,
    /// offload engines and routing
    pub offload: OffloadSettings,
    /// admin listener
    pub admin_listen: SocketAddr,
    /// the admin routes' HTTPS listener: address, certificate and key
    pub admin_tls: Option<(SocketAddr, PathBuf, PathBuf)>,
    /// GC period (None: off)
    pub gc_interval: Option<std::time::Duration>,
    /// scrub period (None: off)
    pub scrub_interval: Option<std::time::Duration>,
    /// S3 listener
    pub s3_listen: SocketAddr,
    /// S3 gateway settings
    pub s3: s3_gateway::GatewayConfig,
    /// certificate and key for HTTPS on the S3 listener
    pub s3_tls: Option<(PathBuf, PathBuf)>,
    /// what slow and idle clients may hold of the S3 listener
    pub s3_limits: s3_gateway::server::ConnectionLimits,
    /// federation membership (None: not federated, no QUIC listener)
    pub federation: Option<Membership>,
    /// QUIC transport tuning
    pub transfer: TransportSettings,
    /// events of this site's catalog log between two checkpoints
    pub catalog_checkpoint_every: u64,
    /// how stage-out clients cut files
    pub stage_chunker: ChunkerConfig,
}

impl RawConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// The file `clusster init` writes: every field, with its documentation.
    pub fn documented_default(data_dir: &Path) -> String {
        let d = RawConfig::default();
        format!(
            r#"# clusster site configuration. Every field is optional; shown are the defaults.

[site]
# The site's name in the federation.
name = "{name}"
# Metadata (RocksDB) and, unless chunk_store_url is set, chunk packs live here.
# A relative path is taken from this file's directory.
data_dir = "{data_dir}"

[store]
# Chunk packs in any object_store URL instead of <data_dir>/chunks
# (s3://bucket/prefix, file:///path). Empty: the data dir.
chunk_store_url = ""
# FastCDC chunk sizes in bytes (average a power of two). Changing them affects only
# new data; stored objects stay readable and keep deduplicating.
chunk_min_bytes = {min}
chunk_avg_bytes = {avg}
chunk_max_bytes = {max}
# Objects up to this size are stored inside the metadata, not chunked.
inline_max_bytes = {inline}
# A pack object is sealed at this size (one fsync per pack).
pack_target_bytes = {pack}
# zstd level for chunks (incompressible chunks are stored raw); 0 disables compression.
zstd_level = {zstd}
# Codec for new chunks: "zstd", "lz4" (LZ4 frames, which DPU engines such as
# BlueField-3 decompress in hardware) or "none". Stored chunks keep their codec.
codec = "{codec}"
# Chunks read ahead of the client on a GET.
read_ahead_chunks = {ahead}
# Seconds between garbage collection passes (0: off) and full scrubs (0: off).
gc_interval_secs = {gc}
scrub_interval_secs = {scrub}

[store.chunk_store_options]
# e.g. aws_endpoint = "http://127.0.0.1:9000"

[offload]
# CPU engine worker threads; 0 = one per core.
cpu_threads = {threads}
# Offload engines used besides the CPU, in order of preference. "agent" hands
# hashing and compression to `clusster offload-agent` (on a DPU's cores or spare
# host cores) through shared memory; the CPU takes over whenever it is absent,
# busy, slow or wrong.
engines = []
# The agent's Unix socket (relative: under the data dir).
agent_socket = "{agent_socket}"
# Cores `clusster offload-agent --config` pins itself to, e.g. [1]; [] = unpinned.
agent_cores = []
# Memory shared with the agent (rings, job data, and the ingest buffers jobs read
# without a copy: a few 3 MiB buffers per ingest running at once), MiB.
agent_region_mib = {region}
# Size thresholds written by `clusster offload bench` (relative: under the data dir);
# without the file, jobs from 64 KiB go to the agent.
thresholds_file = "{thresholds}"
# Once {probation} answers (all checked) were right, one offloaded job in this many is
# checked on the CPU; a wrong result disables the engine until restart.
spot_check_one_in = {spot}
probation_jobs = {probation}
# An engine that has not answered within this many ms is bypassed; a failing one is
# left alone this many seconds.
deadline_ms = {deadline}
disable_secs = {disable}

[admin]
# /health, /metrics and maintenance endpoints. Port 0 picks a free port; the bound
# address is written to <data_dir>/{listen_file}. Maintenance endpoints need the token
# in <data_dir>/admin.token, which the CLI reads.
listen = "{admin}"
# The same routes over HTTPS, for stage-in/out from compute nodes (whose bearer tokens
# should not cross the network in clear): address, certificate chain and key (PEM, all
# three or none). Clients name the CA with --ca-file or CLUSSTER_CA_FILE.
tls_listen = ""
tls_cert = ""
tls_key = ""

[s3]
# The S3 gateway. Port 0 picks a free port.
listen = "{s3_listen}"
# Region reported to clients.
region = "{s3_region}"
# Base domain for virtual-hosted-style requests (bucket.<domain>), port included as
# clients send it; empty serves path-style only.
domain = ""
# PEM certificate chain and private key for HTTPS; both empty serves plain HTTP.
tls_cert = ""
tls_key = ""
# Slow and idle clients: the time a client has to send a request's headers (which also
# closes a keep-alive connection left idle that long) and to finish a TLS handshake, and
# the connections open at once, in all and from one IP address (one over is closed).
header_read_timeout_ms = {s3_header_read_timeout_ms}
tls_handshake_timeout_ms = {s3_tls_handshake_timeout_ms}
max_connections = {s3_max_connections}
max_connections_per_ip = {s3_max_connections_per_ip}

[federation]
# The federation file (see `clusster federation init` and `clusster site init`). Empty:
# this site is on its own and no QUIC listener starts. A relative path is taken from
# this file's directory.
file = ""
# Directory holding this site's site.key, site.pem and the federation's ca.pem, as
# `clusster site init` writes them. Empty: <data_dir>/{tls_dir}.
tls_dir = ""
# The QUIC transfer listener (UDP). Port 0 picks a free port.
quic_listen = "{quic_listen}"

[transfer]
# QUIC transport tuning. Windows default to 2x the bandwidth-delay product of a
# {default_mbps} Mbit/s, {default_rtt} ms path; with size_windows_from_links they follow the
# federation file's link table per peer instead.
# Congestion controller: "bbr" (holds its rate under random loss), "cubic" or "newreno".
congestion_controller = "{cc}"
# Bytes a peer may send on one stream, and on one connection, before we read them.
stream_receive_window_bytes = {stream_window}
receive_window_bytes = {receive_window}
# Bytes we keep in flight unacknowledged on one connection.
send_window_bytes = {send_window}
# Streams a peer may open towards us at once.
max_concurrent_bidi_streams = {bidi}
max_concurrent_uni_streams = {uni}
# Keep-alive period on idle connections (0: none) and idle timeout, milliseconds.
keep_alive_interval_ms = {keep_alive}
idle_timeout_ms = {idle}
# RTT assumed before the first measurement, milliseconds.
initial_rtt_ms = {initial_rtt}
# QUIC connections per peer; with a loss-based controller, long links get up to 8.
connections_per_peer = {connections}
# Size windows (and connections, for cubic/newreno) per peer from the link table.
size_windows_from_links = {from_links}
# Batch UDP sends with GSO where the kernel supports it.
segmentation_offload = {gso}
# Data streams a sender opens per transfer, and transfers opened here that run at once
# (the others queue, highest --priority first).
streams_per_transfer = {streams}
max_active_transfers = {active}

[catalog]
# Events of this site's catalog log between two checkpoints. After each, every site drops
# the events that later ones undid (a replica's old states, moved tags), and a site that
# lacks them catches up from a snapshot plus the log's tail.
checkpoint_every = {checkpoint_every}
# Average size of the chunks stage-out clients cut (a power of two). Smaller than the
# store's, so that job outputs staged out again with small changes send little; staged
# files do not dedup against the same bytes uploaded through S3.
stage_chunk_avg_bytes = {stage_avg}
"#,
            checkpoint_every = d.catalog.checkpoint_every,
            stage_avg = d.catalog.stage_chunk_avg_bytes,
            name = d.site.name,
            data_dir = data_dir.display(),
            min = d.store.chunk_min_bytes,
            avg = d.store.chunk_avg_bytes,
            max = d.store.chunk_max_bytes,
            inline = d.store.inline_max_bytes,
            pack = d.store.pack_target_bytes,
            zstd = d.store.zstd_level,
            ahead = d.store.read_ahead_chunks,
            gc = d.store.gc_interval_secs,
            scrub = d.store.scrub_interval_secs,
            threads = d.offload.cpu_threads,
            codec = d.store.codec,
            agent_socket = d.offload.agent_socket.display(),
            region = d.offload.agent_region_mib,
            thresholds = d.offload.thresholds_file.display(),
            spot = d.offload.spot_check_one_in,
            probation = d.offload.probation_jobs,
            deadline = d.offload.deadline_ms,
            disable = d.offload.disable_secs,
            listen_file = LISTEN_FILE,
            admin = d.admin.listen,
            s3_listen = d.s3.listen,
            s3_region = d.s3.region,
            s3_header_read_timeout_ms = d.s3.header_read_timeout_ms,
            s3_tls_handshake_timeout_ms = d.s3.tls_handshake_timeout_ms,
            s3_max_connections = d.s3.max_connections,
            s3_max_connections_per_ip = d.s3.max_connections_per_ip,
            tls_dir = DEFAULT_TLS_DIR,
            quic_listen = d.federation.quic_listen,
            default_mbps = federation::DEFAULT_LINK.bandwidth_mbps,
            default_rtt = federation::DEFAULT_LINK.rtt_ms,
            cc = d.transfer.congestion_controller,
            stream_window = d.transfer.stream_receive_window_bytes,
            receive_window = d.transfer.receive_window_bytes,
            send_window = d.transfer.send_window_bytes,
            bidi = d.transfer.max_concurrent_bidi_streams,
            uni = d.transfer.max_concurrent_uni_streams,
            keep_alive = d.transfer.keep_alive_interval_ms,
            idle = d.transfer.idle_timeout_ms,
            initial_rtt = d.transfer.initial_rtt_ms,
            connections = d.transfer.connections_per_peer,
            from_links = d.transfer.size_windows_from_links,
            gso = d.transfer.segmentation_offload,
            streams = d.transfer.streams_per_transfer,
            active = d.transfer.max_active_transfers,
        )
    }

    /// Applies overrides and checks everything. `base` resolves relative paths.
    pub fn settle(self, overrides: &Overrides, base: &Path) -> anyhow::Result<Settings> {
        let data_dir = overrides.data_dir.clone().unwrap_or(self.site.data_dir);
        let data_dir = if data_dir.is_absolute() { data_dir } else { base.join(data_dir) };
        let admin = overrides.admin_listen.clone().unwrap_or(self.admin.listen);
        let admin_listen: SocketAddr =
            admin.parse().with_context(|| format!("admin listen address {admin:?} is not IP:PORT"))?;
        let s3_addr = overrides.s3_listen.clone().unwrap_or(self.s3.listen);
        let s3_listen: SocketAddr =
            s3_addr.parse().with_context(|| format!("s3 listen address {s3_addr:?} is not IP:PORT"))?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let s3_tls = match (self.s3.tls_cert.as_os_str().is_empty(), self.s3.tls_key.as_os_str().is_empty()) {
            (true, true) => None,
            (false, false) => Some((resolve(self.s3.tls_cert), resolve(self.s3.tls_key))),
            _ => bail!("[s3] tls_cert and tls_key must be set together"),
        };
        let admin_tls = match (
            self.admin.tls_listen.is_empty(),
            self.admin.tls_cert.as_os_str().is_empty(),
            self.admin.tls_key.as_os_str().is_empty(),
        ) {
            (true, true, true) => None,
            (false, false, false) => {
                let addr = &self.admin.tls_listen;
                let listen: SocketAddr =
                    addr.parse().with_context(|| format!("[admin] tls_listen {addr:?} is not IP:PORT"))?;
                Some((listen, resolve(self.admin.tls_cert), resolve(self.admin.tls_key)))
            }
            _ => bail!("[admin] tls_listen, tls_cert and tls_key must be set together"),
        };
        let positive = |value: u64, name: &str| match value {
            0 => Err(anyhow::anyhow!("[s3] {name} must be positive")),
            v => Ok(v),
        };
        let s3_limits = s3_gateway::server::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_millis(positive(
                self.s3.header_read_timeout_ms,
                "header_read_timeout_ms",
            )?),
            tls_handshake_timeout: std::time::Duration::from_millis(positive(
                self.s3.tls_handshake_timeout_ms,
                "tls_handshake_timeout_ms",
            )?),
            max_connections: positive(self.s3.max_connections as u64, "max_connections")? as usize,
            max_connections_per_ip: positive(self.s3.max_connections_per_ip as u64, "max_connections_per_ip")? as usize,
        };
        let s3 = s3_gateway::GatewayConfig {
            region: self.s3.region,
            domain: (!self.s3.domain.is_empty()).then_some(self.s3.domain),
            ..Default::default()
        };
        if self.site.name.is_empty() {
            bail!("[site] name must not be empty");
        }
        let federation = if self.federation.file.as_os_str().is_empty() {
            None
        } else {
            federation::validate_site_name(&self.site.name).map_err(|e| {
                anyhow::anyhow!("[site] name: {e}; a federated site's name is the one its certificate carries")
            })?;
            let quic = &self.federation.quic_listen;
            let quic_listen: SocketAddr =
                quic.parse().with_context(|| format!("[federation] quic_listen {quic:?} is not IP:PORT"))?;
            let tls_dir = if self.federation.tls_dir.as_os_str().is_empty() {
                data_dir.join(DEFAULT_TLS_DIR)
            } else {
                resolve(self.federation.tls_dir)
            };
            Some(Membership { file: resolve(self.federation.file), tls_dir, quic_listen })
        };
        self.transfer.validate().map_err(anyhow::Error::msg)?;
        if self.catalog.checkpoint_every == 0 {
            anyhow::bail!("[catalog] checkpoint_every must be 1 or more events");
        }
        let stage_chunker = catalog::stage::stage_chunker(self.catalog.stage_chunk_avg_bytes)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("[catalog] stage_chunk_avg_bytes = {}", self.catalog.stage_chunk_avg_bytes))?;
        let s = self.store;
        let mut store = StoreConfig::new(&data_dir);
        store.chunk_store_url = (!s.chunk_store_url.is_empty()).then_some(s.chunk_store_url);
        store.chunk_store_options = s.chunk_store_options.into_iter().collect();
        store.chunker =
            ChunkerConfig { min_bytes: s.chunk_min_bytes, avg_bytes: s.chunk_avg_bytes, max_bytes: s.chunk_max_bytes };
        store.inline_max_bytes = s.inline_max_bytes;
        store.pack_target_bytes = s.pack_target_bytes;
        store.zstd_level = (s.zstd_level != 0).then_some(s.zstd_level);
        store.codec = hw_offload::Codec::from_name(&s.codec)
            .with_context(|| format!("[store] codec {:?} is unknown; use \"zstd\", \"lz4\" or \"none\"", s.codec))?;
        store.read_ahead_chunks = s.read_ahead_chunks;
        store.validate().context("invalid [store] section")?;
        let period = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
        let offload = self.offload.settle(&data_dir)?;
        Ok(Settings {
            site_name: self.site.name,
            data_dir,
            store,
            offload,
            admin_listen,
            admin_tls,
            gc_interval: period(s.gc_interval_secs),
            scrub_interval: period(s.scrub_interval_secs),
            s3_listen,
            s3,
            s3_tls,
            s3_limits,
            federation,
            transfer: self.transfer,
            catalog_checkpoint_every: self.catalog.checkpoint_every,
            stage_chunker,
        })
    }
}

impl RawOffload {
    /// Checks the section; relative paths are taken from `data_dir`.
    pub fn settle(self, data_dir: &Path) -> anyhow::Result<OffloadSettings> {
        let mut use_agent = false;
        for engine in &self.engines {
            match engine.as_str() {
                "agent" => use_agent = true,
                "cpu" => {}
                other => bail!(
                    "[offload] engines: {other:?} is unknown; the engines are \"agent\" (and the implicit \"cpu\")"
                ),
            }
        }
        if !(1..=16 * 1024).contains(&self.agent_region_mib) {
            bail!("[offload] agent_region_mib must be 1..=16384 (got {})", self.agent_region_mib);
        }
        if self.deadline_ms == 0 {
            bail!("[offload] deadline_ms must be at least 1");
        }
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { data_dir.join(p) };
        Ok(OffloadSettings {
            cpu_threads: self.cpu_threads,
            use_agent,
            agent_socket: resolve(self.agent_socket),
            agent_cores: self.agent_cores,
            agent_region_bytes: self.agent_region_mib << 20,
            thresholds_file: resolve(self.thresholds_file),
            router: hw_offload::RouterConfig {
                spot_check_one_in: self.spot_check_one_in,
                probation_jobs: self.probation_jobs,
                deadline: std::time::Duration::from_millis(self.deadline_ms),
                disable_for: std::time::Duration::from_secs(self.disable_secs),
                // Not in the config file: bounds memory, never correctness.
                ..Default::default()
            },
        })
    }
}

#[cfg(test)]
mod tests;
