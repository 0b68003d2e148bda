//! `clusster stage-in` and `clusster stage-out`: a job's data to and from the site daemon,
//! through the staging routes described in [`catalog::stage`], with a `stage`-scoped token.
//!
//! - stage-in asks `POST /catalog/stage/in` until the site holds the whole version (it
//!   pins it for the job), then reads each file from `…/versions/{v}/files/{path}`, at
//!   most `--parallel` at once, into `DEST/<dir>/.<name>.clusster-part`: every chunk is
//!   checked against the manifest's BLAKE3 as its bytes arrive (a bad one is cut off and
//!   asked again, three times at most); the part is synced, given the manifest's mtime
//!   and renamed. A file already there with the manifest's size and mtime is taken as done
//!   (it was checked before its rename); a part file is kept up to its first chunk that
//!   does not match and the rest asked with a `Range`. The manifest's paths are checked
//!   first: nothing is written outside DEST whatever the daemon says.
//! - stage-out walks SRC, cuts every file with FastCDC at the session's sizes exactly as
//!   the store's ingest does (2 MiB segments, the cut points of a segment not at the end
//!   of the file left for the next), hashes chunks (BLAKE3) and files (MD5, the ETag) on
//!   threads, asks which chunks the site lacks, sends those (re-read from the files) in
//!   bodies of at most 16 MiB, then publishes. A session it opened is deleted if it fails.
//!
//! Exit codes (mapped in `main.rs`):
//!
//! | code | meaning                                                                      |
//! |------|------------------------------------------------------------------------------|
//! | 0    | success                                                                      |
//! | 1    | any other failure: the message says why (e.g. a token without `stage`: 401/403) |
//! | 2    | usage: bad arguments, no job id, DEST not writable, refused names or symlinks |
//! | 3    | (damage found: `scrub`/`check`, not these verbs)                             |
//! | 4    | [`NotFound`]: dataset, tag or version unknown (a 404 problem)                 |
//! | 5    | [`NoSpace`]: ENOSPC/EDQUOT here, or 507 from the site                         |
//! | 6    | [`TransferFailed`]: the site could not fetch the data (502), the connection failed, or the site ended a stage-out's session |
//! | 7    | [`VerificationFailed`]: a chunk's BLAKE3 does not match, after 3 retries      |
//! | 8    | [`TimedOut`]: the site did not hold the version within `--timeout`           |

use super::UsageError;
use super::dataset::parse_duration;
use crate::cli::{EndpointArgs, StageInArgs, StageOutArgs};
use anyhow::{Context, anyhow};
use bytes::{Bytes, BytesMut};
use catalog::stage::{
    ChunkList, ChunksStored, MAX_ASKED, MAX_CHUNKS_BODY, StageInAnswer, StageInRequest, StageInState, StageOutPublish,
    StageOutPublished, StageOutRequest, StageOutSession, StagedChunk, StagedFile,
};
use hw_offload::kernels::cdc::cut_points;
use hw_offload::kernels::md5 as multi_md5;
use hw_offload::{ChunkId, ChunkerConfig};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The dataset, tag or version is not known (a 404 problem): exit 4.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// No space left, here (ENOSPC, EDQUOT) or at the site (507): exit 5.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoSpace(pub String);

/// The site could not fetch the data, the connection to it failed, or the site ended a
/// stage-out's session (a restart): exit 6.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransferFailed(pub String);

/// A chunk's bytes do not hash to the manifest's BLAKE3, after retries: exit 7.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

/// The site did not hold the version within `--timeout`: exit 8.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

/// How often a file's request is tried again after a bad chunk, or a broken answer.
const RETRIES: u32 = 3;

/// Bytes of a file read and cut at once, or the site's largest chunk if more: segments of
/// at least `max_bytes` give the cut points of the whole file (a cut depends only on the
/// bytes from the chunk's start to at most `max_bytes` on).
const SEGMENT_BYTES: usize = 1 << 20;

/// Largest `chunks` body sent: a quarter of what the site takes, so that `--parallel`
/// bodies in memory stay small.
const BODY_BYTES: usize = MAX_CHUNKS_BODY / 4;

/// Files a stage-in reads at once, by default: each is fsynced before its rename, and
/// with 4 at once the fsyncs left the daemon and the disk idle (1 GiB in 64 files: 1.19 s
/// with 4, 0.87 s with 16).
const STAGE_IN_PARALLEL: u16 = 16;
/// Hashing threads (at most one per core) and chunk bodies in flight of a stage-out: the
/// site seals each body's pack with an fsync before it answers, and with 4 bodies at once
/// its CPU waited on them (1 GiB in 64 files, medians of 3 alternated: 1.34 s with 4,
/// 1.22 s with 8).
const STAGE_OUT_PARALLEL: u16 = 8;

/// Suffix of the file a stage-in writes before its rename.
const PART_SUFFIX: &str = ".clusster-part";

// ------------------------------------------------------------------ errors from here

/// A local I/O error: no space is [`NoSpace`], the rest a plain failure.
fn local_error(e: std::io::Error, what: impl std::fmt::Display) -> anyhow::Error {
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => NoSpace(format!("{what}: {e}")).into(),
        _ => anyhow!("{what}: {e}"),
    }
}

fn mtime_ms(meta: &fs::Metadata) -> Option<u64> {
    let since = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Bytes as people read them.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

// ------------------------------------------------------------------ the site daemon

/// The client config file: `$CLUSSTER_CLIENT_CONFIG`, else `~/.config/clusster/client.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    endpoint: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl ClientConfig {
    /// The file if there is one (a missing default file is no error; a missing file
    /// named by `$CLUSSTER_CLIENT_CONFIG` is), and the directory its paths are taken from.
    fn load() -> anyhow::Result<(Self, PathBuf)> {
        let (path, named) = match std::env::var_os("CLUSSTER_CLIENT_CONFIG") {
            Some(path) => (PathBuf::from(path), true),
            None => match std::env::var_os("HOME") {
                Some(home) => (Path::new(&home).join(".config/clusster/client.toml"), false),
                None => return Ok((Self::default(), PathBuf::from("."))),
            },
        };
        let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let config = toml::from_str(&text)
                    .map_err(|e| UsageError(format!("client config {}: {}", path.display(), e.message())))?;
                Ok((config, base))
            }
            Err(e) if e.kind() == ErrorKind::NotFound && !named => Ok((Self::default(), base)),
            Err(e) => Err(UsageError(format!("cannot read the client config {}: {e}", path.display())).into()),
        }
    }
}

/// Where an https endpoint's CA is looked for when none is named.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client configuration trusting the CA certificates of `ca_file` (PEM) only.
fn tls_trusting(ca_file: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let unusable = |e: &dyn std::fmt::Display| {
        UsageError(format!(
            "CA file {}: {e} (name the CA of the site's certificate with --ca-file or CLUSSTER_CA_FILE)",
            ca_file.display()
        ))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| unusable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unusable(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    // A system bundle may hold a certificate this build cannot use: the others still count.
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(unusable(&"no CA certificate this client can use in it").into());
    }
    // ring explicitly, as the daemon's listeners do.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The site daemon's staging routes, with the job's token.
struct Api {
    base: reqwest::Url,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// Endpoint: `--endpoint`, `$CLUSSTER_ENDPOINT`, the config file. Token:
    /// `$CLUSSTER_TOKEN`, the config file's `token`, its `token_file`. CA of an https
    /// endpoint: `--ca-file`, `$CLUSSTER_CA_FILE`, the config file's `ca_file`, the system's.
    fn connect(args: &EndpointArgs) -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut endpoint = args.endpoint.clone().or_else(|| env("CLUSSTER_ENDPOINT"));
        let mut token = env("CLUSSTER_TOKEN");
        let mut ca_file = args.ca_file.clone().or_else(|| env("CLUSSTER_CA_FILE").map(PathBuf::from));
        // The file is read only for what the flags and the environment leave unsaid.
        let wants_https = |endpoint: &Option<String>| endpoint.as_ref().is_none_or(|e| e.starts_with("https://"));
        if endpoint.is_none() || token.is_none() || (ca_file.is_none() && wants_https(&endpoint)) {
            let (config, base) = ClientConfig::load()?;
            endpoint = endpoint.or(config.endpoint);
            ca_file = ca_file.or(config.ca_file.map(|file| base.join(file)));
            if token.is_none() {
                token = match (config.token, config.token_file) {
                    (Some(token), _) => Some(token),
                    (None, Some(file)) => {
                        let file = base.join(file);
                        let text = fs::read_to_string(&file)
                            .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?;
                        Some(text)
                    }
                    (None, None) => None,
                };
            }
        }
        let endpoint = endpoint.ok_or_else(|| {
            UsageError(
                "no endpoint: pass --endpoint http://HOST:PORT, set CLUSSTER_ENDPOINT, or write endpoint = \"…\" \
                 in ~/.config/clusster/client.toml"
                    .into(),
            )
        })?;
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).ok_or_else(|| {
            UsageError(
                "no token: set CLUSSTER_TOKEN, or token = \"…\" (or token_file) in ~/.config/clusster/client.toml, \
                 to a token from `clusster token create --scope stage`"
                    .into(),
            )
        })?;
        let text = if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let base = reqwest::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| UsageError(format!("endpoint {endpoint:?}: give it as http://HOST:PORT or https://…")))?;
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if base.scheme() == "https" {
            let ca_file = ca_file.unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
            http = http.use_preconfigured_tls(tls_trusting(&ca_file)?).https_only(true);
        }
        Ok(Self { base, token, http: http.build().context("cannot make an HTTP client")? })
    }

    /// The URL of the route made of `segments`, each percent-encoded.
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("an http URL has a path").pop_if_empty().extend(segments);
        url
    }

    /// Sends `request` with the token; a problem document becomes the error of its kind.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            TransferFailed(format!(
                "{what}: cannot reach the site daemon at {}: {:#}",
                self.base,
                anyhow::Error::from(e)
            ))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(problem(response, what).await)
    }

    /// Calls a JSON route.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl Serialize,
        what: &str,
        timeout: Option<Duration>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.request(method, self.url(segments.iter().copied())).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = self.send(request, what).await?;
        let text = response.text().await.map_err(|e| TransferFailed(format!("{what}: reading the answer: {e}")))?;
        serde_json::from_str(&text).with_context(|| {
            format!("{what}: the site daemon answered in a form this client does not know: is it of another version?")
        })
    }
}

/// The error a non-2xx answer stands for, with its problem document's detail.
async fn problem(response: reqwest::Response, what: &str) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().chars().take(300).collect());
    let message = format!("{what}: {status}: {detail}");
    match status.as_u16() {
        401 | 403 => anyhow!("{message} (a job stages with a token from `clusster token create --scope stage`)"),
        404 => NotFound(message).into(),
        507 => NoSpace(message).into(),
        502..=504 => TransferFailed(message).into(),
        _ => anyhow!(message),
    }
}

/// `--job`, else `$SLURM_JOB_ID`, else `$FLUX_JOB_ID`.
fn job_id(flag: Option<&str>) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok();
    flag.map(str::to_owned).or_else(|| env("SLURM_JOB_ID")).or_else(|| env("FLUX_JOB_ID")).filter(|j| !j.is_empty())
}

/// `NS/NAME`, checked for its form.
fn check_dataset(text: &str) -> Result<(), UsageError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(()),
        _ => Err(UsageError(format!("{text:?}: name a dataset as NAMESPACE/NAME, as in paris.climate/era5"))),
    }
}

// ------------------------------------------------------------------ progress

/// Progress on stderr: a bar on a terminal, a plain line at most once a second
/// otherwise, nothing with `--json`.
#[derive(Clone)]
struct Progress(Arc<Shown>);

enum Shown {
    Quiet,
    Bar(indicatif::ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    printed: Option<Instant>,
}

impl Lines {
    /// True if a line may be printed now (the last one was a second ago or more).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.printed.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return false;
        }
        self.printed = Some(now);
        true
    }
}

impl Progress {
    fn new(json: bool, label: &str, total: Option<u64>) -> Self {
        if json {
            return Self(Arc::new(Shown::Quiet));
        }
        if std::io::stderr().is_terminal() {
            let bar = match total {
                Some(total) => {
                    let style = indicatif::ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> ");
                    indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr())
                        .with_style(style)
                }
                None => {
                    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
                        .with_style(
                            indicatif::ProgressStyle::with_template("{prefix} {spinner} {msg}")
                                .expect("a valid template"),
                        );
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar
                }
            };
            return Self(Arc::new(Shown::Bar(bar.with_prefix(label.to_owned()))));
        }
        Self(Arc::new(Shown::Lines(Mutex::new(Lines {
            label: label.to_owned(),
            total: total.unwrap_or(0),
            done: 0,
            started: Instant::now(),
            printed: None,
        }))))
    }

    fn inc(&self, bytes: u64) {
        match &*self.0 {
            Shown::Quiet => {}
            Shown::Bar(bar) => bar.inc(bytes),
            Shown::Lines(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                l.done += bytes;
                // Nothing for what ends within a second; then a line a second at most.
                if l.done < l.total && l.started.elapsed() >= Duration::from_secs(1) && l.due() {
                    let secs = l.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = l.done as f64 / secs;
                    let eta =
                        if rate > 0.0 { format!("{:.0} s", (l.total - l.done) as f64 / rate) } else { "?".into() };
                    eprintln!(
                        "{}: {} of {} ({}%), {}/s, ETA {eta}",
                        l.label,
                        human(l.done),
                        human(l.total),
                        l.done * 100 / l.total.max(1),
                        human(rate as u64)
                    );
                }
            }
        }
    }

    /// Two at once, shown one above the other on a terminal.
    fn pair(json: bool, first: (&str, Option<u64>), second: (&str, Option<u64>)) -> (Self, Self) {
        let (a, b) = (Self::new(json, first.0, first.1), Self::new(json, second.0, second.1));
        if let (Shown::Bar(x), Shown::Bar(y)) = (&*a.0, &*b.0) {
            let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
            multi.add(x.clone());
            multi.add(y.clone());
        }
        (a, b)
    }

    /// More to do than said so far.
    fn grow(&self, bytes: u64) {
        match &*self.0 {
            Shown::Quiet => {}
            Shown::Bar(bar) => bar.inc_length(bytes),
            Shown::Lines(lines) => lines.lock().unwrap_or_else(|e| e.into_inner()).total += bytes,
        }
    }

    /// Says what is going on (the site fetching, …).
    fn note(&self, text: &str) {
        match &*self.0 {
            Shown::Quiet => {}
            Shown::Bar(bar) => bar.set_message(text.to_owned()),
            Shown::Lines(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                if l.due() {
                    eprintln!("{}: {text}", l.label);
                }
            }
        }
    }

    fn finish(&self) {
        if let Shown::Bar(bar) = &*self.0 {
            bar.finish_and_clear();
        }
    }
}

// ------------------------------------------------------------------ stage-in

/// What a stage-in did, for `--json`.
#[derive(Debug, Default, Serialize)]
struct StagedIn {
    version: String,
    pin: String,
    dest: String,
    files: u64,
    bytes: u64,
    /// bytes written by this run (checked chunks)
    bytes_written: u64,
    /// bytes of part files kept from an earlier run
    bytes_resumed: u64,
    /// files written by this run
    files_written: u64,
    /// files already there (the manifest's size and mtime), left as they were
    files_skipped: u64,
    /// requests asked again after a bad chunk or a broken answer
    retries: u64,
}

#[derive(Default)]
struct Counters {
    bytes_written: AtomicU64,
    bytes_resumed: AtomicU64,
    files_written: AtomicU64,
    files_skipped: AtomicU64,
    retries: AtomicU64,
}

/// What reading one file needs.
struct Reader {
    api: Api,
    version: String,
    /// what to ask `POST /catalog/stage/in` again when a read fails: the site may have
    /// found a chunk corrupt meanwhile, and then fetches it again before it answers ready
    again: Again,
    dest: PathBuf,
    progress: Progress,
    counters: Counters,
}

pub(super) async fn stage_in(args: StageInArgs) -> anyhow::Result<()> {
    let StageInArgs { version, dest, timeout, pin_for, common } = args;
    let (dataset, reference) = version.rsplit_once('@').unwrap_or((&version, "-"));
    check_dataset(dataset)?;
    if reference.is_empty() {
        return Err(UsageError(format!("{version:?}: give NS/NAME@TAG, NS/NAME@VERSION-ID or NS/NAME")).into());
    }
    let timeout = Duration::from_secs(parse_duration(&timeout)?);
    let pin_secs = parse_duration(&pin_for)?;
    let job = job_id(common.job.as_deref()).ok_or_else(|| {
        UsageError("no job: pass --job ID (Slurm and Flux set SLURM_JOB_ID or FLUX_JOB_ID in a job)".into())
    })?;
    let api = Api::connect(&common)?;
    prepare_dest(&dest)?;

    let answer = wait_ready(&api, &version, &job, pin_secs, timeout, common.json).await?;
    let mut seen = HashSet::new();
    for file in &answer.files {
        check_manifest_path(&file.path)?;
        if !seen.insert(file.path.as_str()) {
            anyhow::bail!("the site's manifest names {:?} twice: refused", file.path);
        }
        if file.chunks.iter().map(|c| c.len as u64).sum::<u64>() != file.size {
            anyhow::bail!(
                "the site's manifest is inconsistent: the chunks of {:?} do not add up to its size",
                file.path
            );
        }
    }
    let total: u64 = answer.files.iter().map(|f| f.size).sum();
    let progress = Progress::new(common.json, "stage-in", Some(total));
    let again = Again { version: format!("{dataset}@{}", answer.version.to_hex()), job, pin_secs, timeout };
    let reader = Arc::new(Reader {
        api,
        again,
        version: answer.version.to_hex(),
        dest: dest.clone(),
        progress: progress.clone(),
        counters: Counters::default(),
    });
    let files = Arc::new(answer.files);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..(common.parallel.unwrap_or(STAGE_IN_PARALLEL) as usize).min(files.len()).max(1) {
        let (reader, files, next) = (reader.clone(), files.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = files.get(i) else { return Ok(()) };
                read_file(&reader, file).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        let outcome: anyhow::Result<()> = done.context("a stage-in worker failed")?;
        if let Err(e) = outcome {
            progress.finish();
            return Err(e);
        }
    }
    progress.finish();
    // The renames made durable, each directory once, before saying the files are there.
    // A crash before this may lose renames (and part files): a run again fetches what it
    // does not find whole under its own name.
    let directories: std::collections::BTreeSet<PathBuf> =
        files.iter().filter_map(|f| reader.dest.join(&f.path).parent().map(Path::to_path_buf)).collect();
    tokio::task::spawn_blocking(move || {
        for dir in directories {
            // Not every filesystem can sync a directory; the files themselves are synced.
            if let Ok(dir) = File::open(&dir) {
                let _ = dir.sync_all();
            }
        }
    })
    .await
    .context("syncing DEST's directories")?;

    let c = &reader.counters;
    let report = StagedIn {
        version: reader.version.clone(),
        pin: answer.pin,
        dest: dest.display().to_string(),
        files: files.len() as u64,
        bytes: total,
        bytes_written: c.bytes_written.load(Ordering::Relaxed),
        bytes_resumed: c.bytes_resumed.load(Ordering::Relaxed),
        files_written: c.files_written.load(Ordering::Relaxed),
        files_skipped: c.files_skipped.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
    };
    if common.json {
        println!("{}", super::json_text(&report));
    } else {
        println!(
            "staged {version} ({}) into {}: {} files, {} ({} written, {} resumed, {} files already there)",
            report.version,
            report.dest,
            report.files,
            human(report.bytes),
            human(report.bytes_written),
            human(report.bytes_resumed),
            report.files_skipped
        );
    }
    Ok(())
}

/// Makes DEST and checks a file can be written there (exit 2 if not, before asking the site).
fn prepare_dest(dest: &Path) -> anyhow::Result<()> {
    let unusable = |e: std::io::Error| -> anyhow::Error {
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                NoSpace(format!("DEST {}: {e}", dest.display())).into()
            }
            _ => UsageError(format!("cannot write into DEST {}: {e}", dest.display())).into(),
        }
    };
    if dest.exists() && !dest.is_dir() {
        return Err(UsageError(format!("DEST {} is not a directory", dest.display())).into());
    }
    fs::create_dir_all(dest).map_err(unusable)?;
    let probe = dest.join(format!(".clusster-probe-{}", std::process::id()));
    File::create(&probe).map_err(unusable)?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// A path of the manifest is relative, `/`-separated, without empty, `.` or `..`
/// segments: the daemon cannot make the client write outside DEST.
fn check_manifest_path(path: &str) -> anyhow::Result<()> {
    let safe = !path.is_empty()
        && !path.contains('\0')
        && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && !path.ends_with(PART_SUFFIX);
    if safe {
        Ok(())
    } else {
        Err(anyhow!(
            "the site's manifest names {path:?}, which is not a relative path within DEST (or ends in {PART_SUFFIX}): \
             refused, nothing written"
        ))
    }
}

/// Asks the site until it holds the whole version, or `timeout` passes.
async fn wait_ready(
    api: &Api,
    version: &str,
    job: &str,
    pin_secs: u64,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<StageInAnswer> {
    let deadline = Instant::now() + timeout;
    let mut progress: Option<Progress> = None;
    loop {
        let asked = Instant::now();
        let wait_secs = deadline.saturating_duration_since(asked).as_secs().min(30);
        let request = StageInRequest { version: version.to_owned(), job: job.to_owned(), pin_secs, wait_secs };
        let answer: StageInAnswer = api
            .json(
                Method::POST,
                &["catalog", "stage", "in"],
                &request,
                &format!("stage-in {version}"),
                Some(Duration::from_secs(wait_secs + 60)),
            )
            .await?;
        if answer.state == StageInState::Ready {
            if let Some(p) = progress {
                p.finish();
            }
            return Ok(answer);
        }
        let source = answer.source.as_deref().unwrap_or("another site");
        if Instant::now() >= deadline {
            if let Some(p) = progress {
                p.finish();
            }
            return Err(TimedOut(format!(
                "{version}: the site still lacks {} of it after {} s (fetching from {source}); run again to wait more",
                human(answer.bytes_missing),
                timeout.as_secs()
            ))
            .into());
        }
        progress
            .get_or_insert_with(|| Progress::new(json, "stage-in", None))
            .note(&format!("the site is fetching {} from {source}", human(answer.bytes_missing)));
        // A quick answer (the wait was short): not a busy loop.
        let since = asked.elapsed();
        if since < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1) - since).await;
        }
    }
}

/// A stage-in's request, to ask again by version id.
struct Again {
    version: String,
    job: String,
    pin_secs: u64,
    timeout: Duration,
}

/// Why one request for a file's bytes stopped before its end.
enum Stopped {
    /// a chunk did not match: asked again
    BadChunk(String),
    /// the answer broke off: asked again
    Broken(String),
    /// no point asking again
    Fatal(anyhow::Error),
}

/// Brings one file into DEST: kept if already there, resumed from its part file.
async fn read_file(reader: &Reader, file: &StagedFile) -> anyhow::Result<()> {
    let target = reader.dest.join(&file.path);
    if let Ok(meta) = fs::symlink_metadata(&target)
        && meta.is_file()
        && meta.len() == file.size
        && mtime_ms(&meta) == Some(file.mtime_ms)
    {
        reader.counters.files_skipped.fetch_add(1, Ordering::Relaxed);
        reader.progress.inc(file.size);
        return Ok(());
    }
    let parent = target.parent().expect("a file under DEST has a parent").to_path_buf();
    let name = file.path.rsplit('/').next().expect("a checked path has a name");
    fs::create_dir_all(&parent).map_err(|e| local_error(e, format!("creating {}", parent.display())))?;
    let part = parent.join(format!(".{name}{PART_SUFFIX}"));

    let (handle, chunks) = (part.clone(), file.chunks.clone());
    let (mut out, mut good, mut index) = tokio::task::spawn_blocking(move || open_part(&handle, &chunks))
        .await
        .context("checking a part file")?
        .map_err(|e| local_error(e, format!("opening {}", part.display())))?;
    reader.counters.bytes_resumed.fetch_add(good, Ordering::Relaxed);
    reader.progress.inc(good);

    let (mut bad, mut broken) = (0, 0);
    while index < file.chunks.len() {
        let stopped = match fetch_from(reader, file, &mut out, &mut good, &mut index).await {
            Ok(()) => continue,
            Err(stopped) => stopped,
        };
        // Back to the last good chunk, and ask again from there.
        out.set_len(good)
            .and_then(|()| out.seek(SeekFrom::Start(good)).map(drop))
            .map_err(|e| local_error(e, format!("truncating {}", part.display())))?;
        match stopped {
            Stopped::Fatal(e) => return Err(e),
            Stopped::BadChunk(why) => {
                bad += 1;
                if bad > RETRIES {
                    return Err(VerificationFailed(format!("{why} (asked {bad} times)")).into());
                }
            }
            Stopped::Broken(why) => {
                broken += 1;
                if broken > RETRIES {
                    return Err(TransferFailed(format!("{why} (asked {broken} times)")).into());
                }
            }
        }
        reader.counters.retries.fetch_add(1, Ordering::Relaxed);
        // Before asking again: the site holds the whole version once more (a chunk it
        // found corrupt while reading it out is quarantined, and fetched again now).
        let a = &reader.again;
        wait_ready(&reader.api, &a.version, &a.job, a.pin_secs, a.timeout, true).await?;
    }

    let mtime = UNIX_EPOCH + Duration::from_millis(file.mtime_ms);
    let (from, to) = (part.clone(), target.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        out.set_modified(mtime)?;
        // Synced before the rename: a file under its own name is whole, whatever crashes.
        // Its directory is synced once at the end, with the others'.
        out.sync_all()?;
        drop(out);
        fs::rename(&from, &to)?;
        Ok(())
    })
    .await
    .context("finishing a file")?
    .map_err(|e| local_error(e, format!("finishing {}", target.display())))?;
    reader.counters.files_written.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Opens (or creates) a part file and keeps it up to its first chunk that does not
/// match the manifest; answers it positioned there, with the bytes and chunks kept.
fn open_part(part: &Path, chunks: &[StagedChunk]) -> std::io::Result<(File, u64, usize)> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(part)?;
    let len = file.metadata()?.len();
    let (mut good, mut index) = (0u64, 0usize);
    let mut buffer = Vec::new();
    for chunk in chunks {
        if good + chunk.len as u64 > len {
            break;
        }
        buffer.resize(chunk.len as usize, 0);
        file.read_exact(&mut buffer)?;
        if ChunkId::of(&buffer) != chunk.id {
            break;
        }
        good += chunk.len as u64;
        index += 1;
    }
    file.set_len(good)?;
    file.seek(SeekFrom::Start(good))?;
    Ok((file, good, index))
}

/// One request for the bytes of `file` from `good` on, written to `out` and checked
/// chunk by chunk; `good` and `index` follow the chunks checked.
async fn fetch_from(
    reader: &Reader,
    file: &StagedFile,
    out: &mut File,
    good: &mut u64,
    index: &mut usize,
) -> Result<(), Stopped> {
    let segments = ["catalog", "stage", "versions", reader.version.as_str(), "files"].into_iter();
    let url = reader.api.url(segments.chain(file.path.split('/')));
    let mut request = reader.api.http.get(url);
    if *good > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={good}-"));
    }
    let what = format!("reading {}", file.path);
    let mut response = match reader.api.send(request, &what).await {
        Ok(response) => response,
        Err(e) if e.is::<TransferFailed>() => return Err(Stopped::Broken(e.to_string())),
        Err(e) => return Err(Stopped::Fatal(e)),
    };
    // A daemon that ignored the range sends the whole file: the start is skipped.
    let mut skip = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT { 0 } else { *good as usize };
    let mut hasher = blake3::Hasher::new();
    let mut filled = 0u32;
    let mut written_back = *good;
    loop {
        let piece = match response.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                return Err(Stopped::Broken(format!("{what}: the answer broke off: {:#}", anyhow::Error::from(e))));
            }
        };
        let mut piece = &piece[..];
        let skipped = skip.min(piece.len());
        piece = &piece[skipped..];
        skip -= skipped;
        while !piece.is_empty() {
            let Some(chunk) = file.chunks.get(*index) else {
                return Err(Stopped::BadChunk(format!(
                    "{what}: the site sent more than the manifest's {} bytes",
                    file.size
                )));
            };
            let take = piece.len().min((chunk.len - filled) as usize);
            out.write_all(&piece[..take]).map_err(|e| {
                Stopped::Fatal(local_error(e, format!("writing {}", reader.dest.join(&file.path).display())))
            })?;
            hasher.update(&piece[..take]);
            filled += take as u32;
            piece = &piece[take..];
            if filled == chunk.len {
                if hasher.finalize().as_bytes() != &chunk.id.0 {
                    return Err(Stopped::BadChunk(format!(
                        "{}: chunk {} (bytes {}..{}) does not hash to the manifest's BLAKE3 {}",
                        file.path,
                        *index,
                        *good,
                        *good + chunk.len as u64,
                        chunk.id
                    )));
                }
                *good += chunk.len as u64;
                *index += 1;
                filled = 0;
                hasher.reset();
                reader.counters.bytes_written.fetch_add(chunk.len as u64, Ordering::Relaxed);
                reader.progress.inc(chunk.len as u64);
                if *good - written_back >= WRITE_BACK_BYTES {
                    // The fsync before the rename then waits for the tail only.
                    store::chunks::start_write_back(out, written_back, *good - written_back);
                    written_back = *good;
                }
            }
        }
    }
    if *index < file.chunks.len() {
        return Err(Stopped::Broken(format!("{what}: the answer ended at byte {} of {}", *good, file.size)));
    }
    Ok(())
}

/// Bytes of a part file after which the kernel is asked to start writing them out.
const WRITE_BACK_BYTES: u64 = 8 << 20;

// ------------------------------------------------------------------ stage-out

/// A file of SRC to stage out.
struct LocalFile {
    /// its path in the version, `/`-separated
    rel: String,
    /// where to read it (a symlink's target)
    path: PathBuf,
    size: u64,
    mtime_ms: u64,
}

/// A file cut and hashed.
struct Scanned {
    chunks: Vec<StagedChunk>,
    etag: String,
}

/// What a stage-out did, for `--json`: the site's answer and what was sent.
#[derive(Serialize)]
struct StagedOut {
    dataset: String,
    #[serde(flatten)]
    published: StageOutPublished,
    /// chunks the site lacked, sent
    chunks_sent: u64,
    /// their bytes
    bytes_sent: u64,
    /// chunks of the files (distinct)
    chunks: u64,
}

pub(super) async fn stage_out(args: StageOutArgs) -> anyhow::Result<()> {
    let StageOutArgs { src, dataset, tag, rule, common } = args;
    check_dataset(&dataset)?;
    if let Some(rule) = &rule {
        catalog::stage::parse_rule(rule).map_err(UsageError)?;
    }
    let job = job_id(common.job.as_deref());
    let api = Api::connect(&common)?;
    let root = src.clone();
    let files = tokio::task::spawn_blocking(move || walk(&root)).await.context("walking SRC")??;
    if files.is_empty() {
        return Err(UsageError(format!(
            "SRC {}: no files to stage out (directories alone are not stored)",
            src.display()
        ))
        .into());
    }

    let session: StageOutSession = api
        .json(
            Method::POST,
            &["catalog", "stage", "out"],
            &StageOutRequest { dataset: dataset.clone() },
            &format!("stage-out to {dataset}"),
            None,
        )
        .await?;
    let staged = send_and_publish(&api, &session, files, tag, rule, job, &common).await.map_err(|e| {
        // Once a session is open, the only thing not found is the session itself.
        match e.downcast::<NotFound>() {
            Ok(NotFound(message)) => TransferFailed(format!("{message}; run the stage-out again")).into(),
            Err(e) => e,
        }
    });
    if staged.is_err() {
        // Best effort: the site drops an idle session's chunks anyway. Twice: the first may
        // go down a pooled connection the site closed after its error.
        let url = api.url(["catalog", "stage", "out", session.session.as_str()]);
        for _ in 0..2 {
            let delete = api.http.delete(url.clone()).bearer_auth(&api.token).timeout(Duration::from_secs(10));
            if delete.send().await.is_ok() {
                break;
            }
        }
    }
    let (published, chunks, chunks_sent, bytes_sent) = staged?;
    let report = StagedOut { dataset: dataset.clone(), published, chunks_sent, bytes_sent, chunks };
    if common.json {
        println!("{}", super::json_text(&report));
    } else {
        let p = &report.published;
        let mut summary = format!(
            "staged out {} as {dataset}@{}: {} files, {} ({} sent)",
            src.display(),
            p.version,
            p.files,
            human(p.bytes),
            human(bytes_sent)
        );
        if !p.new {
            summary.push_str(", the same files as a version already published");
        }
        if let Some(rule) = &p.rule {
            summary.push_str(&format!(", rule {rule}"));
        }
        if p.unpinned > 0 {
            summary.push_str(&format!(", {} pins of the job ended", p.unpinned));
        }
        eprintln!("{summary}");
        println!("{}", p.version);
    }
    Ok(())
}

/// Cuts and hashes the files, sends what the site lacks, publishes; answers with the
/// site's answer, the distinct chunks, and the chunks and bytes sent.
async fn send_and_publish(
    api: &Api,
    session: &StageOutSession,
    files: Vec<LocalFile>,
    tag: Option<String>,
    rule: Option<String>,
    job: Option<String>,
    common: &EndpointArgs,
) -> anyhow::Result<(StageOutPublished, u64, u64, u64)> {
    let config =
        ChunkerConfig { min_bytes: session.chunk_min, avg_bytes: session.chunk_avg, max_bytes: session.chunk_max };
    config.validate().map_err(|e| anyhow!("the site cuts chunks in a way this client cannot: {e}"))?;
    let parallel = common.parallel.unwrap_or(STAGE_OUT_PARALLEL) as usize;
    let sid = session.session.as_str();

    let total: u64 = files.iter().map(|f| f.size).sum();
    let (hashing, sending) =
        Progress::pair(common.json, ("stage-out: hashing", Some(total)), ("stage-out: sending", Some(0)));
    let files = Arc::new(files);
    let sent = scan_and_send(api, sid, &files, config, parallel, &hashing, &sending).await;
    hashing.finish();
    sending.finish();
    let (scanned, chunks, chunks_sent, bytes_sent) = sent?;

    let staged: Vec<StagedFile> = files
        .iter()
        .zip(scanned)
        .map(|(f, s)| StagedFile {
            path: f.rel.clone(),
            size: f.size,
            mtime_ms: f.mtime_ms,
            etag: s.etag,
            chunks: s.chunks,
        })
        .collect();
    let request = StageOutPublish { files: staged, tag, rule, job };
    let published: StageOutPublished =
        api.json(Method::POST, &["catalog", "stage", "out", sid, "publish"], &request, "publishing", None).await?;
    Ok((published, chunks, chunks_sent, bytes_sent))
}

/// A chunk to send: its id and its bytes, kept as they were read and hashed.
type Record = (ChunkId, Bytes);

/// Chunks not yet asked about: a batch is asked once this many bytes of them wait (or
/// [`MAX_ASKED`] of them, or the hashing ended), or a quarter of it while nothing is
/// being sent: each request costs a round trip and a look-up of the project's buckets.
const ASK_BYTES: u64 = BODY_BYTES as u64;

/// The site ends a session with no request for `SESSION_IDLE_SECS`: a long hash that finds
/// nothing new to ask about (a tree of the same bytes over and over) asks about nothing
/// this often.
const KEEP_ALIVE: Duration = Duration::from_secs(catalog::stage::SESSION_IDLE_SECS / 4);

/// Cuts and hashes the files and, as their chunks are found, asks the site which it lacks
/// (each distinct chunk once, where it is first found) and sends those, while the rest
/// is hashed; answers with the files' scans in their order, the distinct chunks, and the
/// chunks and bytes sent. The first failure, here or there, stops the rest.
async fn scan_and_send(
    api: &Api,
    sid: &str,
    files: &Arc<Vec<LocalFile>>,
    config: ChunkerConfig,
    parallel: usize,
    hashing: &Progress,
    sending: &Progress,
) -> anyhow::Result<(Vec<Scanned>, u64, u64, u64)> {
    // Bounded, as the sends are: what is read waits in memory until it is sent or found
    // present, so the hashing waits for a slow network rather than hold every file.
    let (tx, mut rx) = tokio::sync::mpsc::channel(FOUND_QUEUE);
    let (shared, shown) = (files.clone(), hashing.clone());
    // Its sender goes with it: the channel closes once the hashing ends.
    let mut scan = Some(tokio::task::spawn_blocking(move || scan_all(&shared, &config, parallel, &shown, &tx)));
    let mut scanned: Vec<Option<Scanned>> = (0..files.len()).map(|_| None).collect();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let (mut pending, mut pending_bytes): (Vec<Record>, u64) = (Vec::new(), 0);
    let (mut body, mut body_bytes): (Vec<Record>, usize) = (Vec::new(), 0);
    let in_flight = parallel.clamp(1, 8);
    let mut sends = Sends {
        set: tokio::task::JoinSet::new(),
        semaphore: Arc::new(tokio::sync::Semaphore::new(in_flight)),
        url: api.url(["catalog", "stage", "out", sid, "chunks"]),
        progress: sending.clone(),
        chunks: 0,
        bytes: 0,
    };
    let mut found = |what: Found, pending: &mut Vec<Record>, pending_bytes: &mut u64| match what {
        Found::Chunks { chunks, data } => {
            let mut fresh = Vec::new();
            let mut at = 0;
            for c in chunks {
                let end = at + c.len as usize;
                if seen.insert(c.id) {
                    fresh.push((c.id, at..end));
                }
                at = end;
            }
            // A slice keeps all of `data` in memory: where the new chunks are less than half
            // of it (the rest found earlier in this tree), they are copied out instead.
            let fresh_bytes: usize = fresh.iter().map(|(_, r)| r.len()).sum();
            let copy = 2 * fresh_bytes < data.len();
            for (id, range) in fresh {
                let bytes = if copy { Bytes::copy_from_slice(&data[range]) } else { data.slice(range) };
                pending.push((id, bytes));
            }
            *pending_bytes += fresh_bytes as u64;
        }
        Found::Done { file, scanned: s } => scanned[file] = Some(s),
    };
    let mut hashed = false;
    let mut last_request = Instant::now();
    loop {
        // What the hashing found meanwhile, unless bodies already wait for their turn.
        while !hashed && sends.set.len() <= in_flight {
            match rx.try_recv() {
                Ok(what) => found(what, &mut pending, &mut pending_bytes),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => hashed = true,
            }
        }
        if hashed && let Some(handle) = scan.take() {
            handle.await.context("hashing the files")??;
            hashing.finish();
        }
        sends.reap()?;
        let idle = sends.set.is_empty();
        let ask = hashed
            || pending_bytes >= ASK_BYTES
            || pending.len() >= MAX_ASKED
            || (idle && pending_bytes >= ASK_BYTES / 4);
        if ask && !pending.is_empty() {
            last_request = Instant::now();
            let batch = std::mem::take(&mut pending);
            pending_bytes = 0;
            for part in batch.chunks(MAX_ASKED) {
                let ids = part.iter().map(|r| r.0).collect();
                let answer = ask_missing(api, sid, ids, "asking which chunks the site lacks").await?;
                // Only chunks asked about are sent, each once, whatever the answer names.
                let missing: HashSet<ChunkId> = answer.chunks.into_iter().collect();
                // Unless the site lacks them all (a first stage-out), the chunks to send are
                // copied out of the buffers they were read into, which then go with the rest.
                let all = part.iter().all(|r| missing.contains(&r.0));
                for (id, bytes) in part.iter().filter(|r| missing.contains(&r.0)) {
                    let len = 36 + bytes.len();
                    if !body.is_empty() && body_bytes + len > BODY_BYTES {
                        sends.spawn(api, std::mem::take(&mut body));
                        body_bytes = 0;
                    }
                    body.push((*id, if all { bytes.clone() } else { Bytes::copy_from_slice(bytes) }));
                    body_bytes += len;
                }
                sends.reap()?;
            }
        }
        if !body.is_empty() && (hashed || (sends.set.is_empty() && body_bytes >= BODY_BYTES / 4)) {
            sends.spawn(api, std::mem::take(&mut body));
            body_bytes = 0;
        }
        if hashed {
            // All asked about, all sent or being sent.
            break;
        }
        tokio::select! {
            what = rx.recv(), if sends.set.len() <= in_flight => match what {
                Some(what) => found(what, &mut pending, &mut pending_bytes),
                None => hashed = true,
            },
            Some(done) = sends.set.join_next(), if !sends.set.is_empty() => {
                done.context("a sender failed").and_then(|r| r)?;
                last_request = Instant::now();
            }
            () = tokio::time::sleep_until((last_request + KEEP_ALIVE).into()) => {
                ask_missing(api, sid, Vec::new(), "keeping the session open").await?;
                last_request = Instant::now();
            }
        }
    }
    while let Some(done) = sends.set.join_next().await {
        done.context("a sender failed").and_then(|r| r)?;
    }
    let scanned = scanned.into_iter().map(|s| s.expect("every file scanned")).collect();
    Ok((scanned, seen.len() as u64, sends.chunks, sends.bytes))
}

/// Which of `chunks` the site lacks, for session `sid` (asking about none keeps it open).
async fn ask_missing(api: &Api, sid: &str, chunks: Vec<ChunkId>, what: &str) -> anyhow::Result<ChunkList> {
    api.json(Method::POST, &["catalog", "stage", "out", sid, "missing"], &ChunkList { chunks }, what, None).await
}

/// The `chunks` bodies being sent, at most so many at once.
struct Sends {
    set: tokio::task::JoinSet<anyhow::Result<()>>,
    semaphore: Arc<tokio::sync::Semaphore>,
    url: reqwest::Url,
    progress: Progress,
    /// chunks and bytes handed out to send
    chunks: u64,
    bytes: u64,
}

impl Sends {
    /// Sends `body` once a place is free.
    fn spawn(&mut self, api: &Api, body: Vec<Record>) {
        let (count, bytes) = (body.len() as u64, body.iter().map(|r| r.1.len() as u64).sum::<u64>());
        self.chunks += count;
        self.bytes += bytes;
        self.progress.grow(bytes);
        let (semaphore, shown) = (self.semaphore.clone(), self.progress.clone());
        let request = api.http.post(self.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        let token = api.token.clone();
        self.set.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("the semaphore stays open");
            let data = reqwest::Body::wrap(RecordsBody::new(body));
            let response = request.bearer_auth(token).body(data).send().await.map_err(|e| {
                TransferFailed(format!("sending chunks: cannot reach the site daemon: {:#}", anyhow::Error::from(e)))
            })?;
            if !response.status().is_success() {
                return Err(problem(response, "sending chunks").await);
            }
            let stored: ChunksStored = response.json().await.context("sending chunks: the site's answer")?;
            if stored.chunks != count || stored.bytes != bytes {
                anyhow::bail!("sending chunks: the site stored {} of {count} chunks", stored.chunks);
            }
            shown.inc(bytes);
            Ok(())
        });
    }

    /// The first failure of the sends that ended, if any.
    fn reap(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.set.try_join_next() {
            done.context("a sender failed").and_then(|r| r)?;
        }
        Ok(())
    }
}

/// The files under `src`, sorted by path: symlinks followed (refused if they lead out of
/// SRC, or into a loop), names refused that are not UTF-8 or hold a newline.
fn walk(src: &Path) -> anyhow::Result<Vec<LocalFile>> {
    let root = src.canonicalize().map_err(|e| UsageError(format!("SRC {}: {e}", src.display())))?;
    if !root.is_dir() {
        return Err(UsageError(format!("SRC {} is not a directory", src.display())).into());
    }
    let mut files = Vec::new();
    let mut ancestors = vec![root.clone()];
    walk_dir(&root, src, "", &mut ancestors, &mut files)?;
    files.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(files)
}

fn walk_dir(
    root: &Path,
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    files: &mut Vec<LocalFile>,
) -> anyhow::Result<()> {
    let listing = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut entries = listing.collect::<Result<Vec<_>, _>>().with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(UsageError(format!("{path:?}: its name is not valid UTF-8; rename it to stage it out")).into());
        };
        if name.contains('\n') {
            return Err(UsageError(format!("{path:?}: its name holds a newline; rename it to stage it out")).into());
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let kind = entry.file_type().with_context(|| format!("reading {}", path.display()))?;
        let (meta, real) = if kind.is_symlink() {
            let target = fs::canonicalize(&path).map_err(|e| {
                UsageError(format!("{path:?} is a symlink whose target cannot be reached ({e}): refused"))
            })?;
            if !target.starts_with(root) {
                return Err(UsageError(format!(
                    "{path:?} is a symlink to {target:?}, outside SRC: refused (copy what it points to into SRC)"
                ))
                .into());
            }
            (fs::metadata(&target).with_context(|| format!("reading {}", target.display()))?, target)
        } else {
            (entry.metadata().with_context(|| format!("reading {}", path.display()))?, path.clone())
        };
        if meta.is_dir() {
            let canonical = real.canonicalize().with_context(|| format!("reading {}", path.display()))?;
            if ancestors.contains(&canonical) {
                return Err(
                    UsageError(format!("{path:?} is a symlink to a directory holding it: refused (a loop)")).into()
                );
            }
            ancestors.push(canonical);
            walk_dir(root, &path, &rel, ancestors, files)?;
            ancestors.pop();
        } else if meta.is_file() {
            files.push(LocalFile { rel, path: real, size: meta.len(), mtime_ms: mtime_ms(&meta).unwrap_or(0) });
        } else {
            return Err(
                UsageError(format!("{path:?} is not a regular file (a fifo, socket or device): refused")).into()
            );
        }
    }
    Ok(())
}

/// Files one hashing thread cuts at once, their MD5s advanced together by the
/// multi-buffer kernel ([`multi_md5`]), whose widest takes 16: MD5, serial within a
/// file, was half of a stage-out's CPU.
const FILES_PER_THREAD: usize = 16;

/// What the hashing threads may have told and not yet been heard, at most: a segment
/// of each file of two threads.
const FOUND_QUEUE: usize = 2 * FILES_PER_THREAD;

/// A hashing thread stopped by another's failure, or by the end of the stage-out.
#[derive(Debug, thiserror::Error)]
#[error("hashing stopped")]
struct HashingStopped;

/// What the hashing threads tell as they go.
enum Found {
    /// Chunks just cut from a file, following those told before, and their bytes: final,
    /// whatever follows.
    Chunks { chunks: Vec<StagedChunk>, data: Bytes },
    /// File `file` cut and hashed to its end, and unchanged.
    Done { file: usize, scanned: Scanned },
}

/// Cuts and hashes every file on `parallel` threads (at most one per core and one per
/// file), each taking up to [`FILES_PER_THREAD`] files at a time (fewer when there are
/// few files, so that every thread has some), telling `found` what they find as they go
/// (its receiver gone stops them); the first failure stops the rest.
fn scan_all(
    files: &[LocalFile],
    config: &ChunkerConfig,
    parallel: usize,
    progress: &Progress,
    found: &tokio::sync::mpsc::Sender<Found>,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = parallel.min(cores).min(files.len()).max(1);
    let at_once = files.len().div_ceil(threads).clamp(1, FILES_PER_THREAD);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let take = || {
                        if failed.load(Ordering::Relaxed) {
                            return None;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        files.get(i).map(|file| (i, file))
                    };
                    let tell = |what: Found| {
                        if failed.load(Ordering::Relaxed) {
                            return Err(HashingStopped.into());
                        }
                        found.blocking_send(what).map_err(|_| HashingStopped.into())
                    };
                    let scanned = scan_files(take, tell, at_once, config, progress);
                    if scanned.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    scanned
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a hashing thread panicked")).collect::<Vec<_>>()
    });
    // The first failure is the one that is not only "stopped" by another.
    let mut first = None;
    for result in results {
        if let Err(e) = result {
            let stopped = e.is::<HashingStopped>();
            if first.as_ref().is_none_or(|(was_stopped, _)| *was_stopped && !stopped) {
                first = Some((stopped, e));
            }
        }
    }
    first.map_or(Ok(()), |(_, e)| Err(e))
}

/// Cuts and hashes the files `take` hands out, up to `at_once` at a time, in segments of
/// [`SEGMENT_BYTES`] (what a segment's cut points leave carried to the next): BLAKE3 per
/// chunk, MD5 of it all. Tells `tell` the chunks of each segment as they are cut, with
/// their bytes, and each file once done.
fn scan_files<'f>(
    mut take: impl FnMut() -> Option<(usize, &'f LocalFile)>,
    mut tell: impl FnMut(Found) -> anyhow::Result<()>,
    at_once: usize,
    config: &ChunkerConfig,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut open: Vec<FileScan<'f>> = Vec::new();
    loop {
        while open.len() < at_once
            && let Some((index, file)) = take()
        {
            open.push(FileScan::open(index, file)?);
        }
        if open.is_empty() {
            return Ok(());
        }
        let segment = SEGMENT_BYTES.max(config.max_bytes as usize);
        let fresh: Vec<usize> =
            open.iter_mut().map(|scan| scan.fill(segment, progress)).collect::<anyhow::Result<_>>()?;
        let (mut states, mut inputs) = (Vec::with_capacity(open.len()), Vec::with_capacity(open.len()));
        for (scan, &from) in open.iter_mut().zip(&fresh) {
            states.push(&mut scan.md5);
            inputs.push(&scan.carry[from..]);
        }
        multi_md5::update_many(&mut states, &inputs);
        for scan in &mut open {
            let data = scan.cut(config, segment);
            if scan.told < scan.chunks.len() {
                let chunks = scan.chunks[scan.told..].to_vec();
                scan.told = scan.chunks.len();
                tell(Found::Chunks { chunks, data })?;
            }
        }
        let mut i = 0;
        while i < open.len() {
            if open[i].eof {
                let scan = open.swap_remove(i);
                let file = scan.index;
                tell(Found::Done { file, scanned: scan.finish()? })?;
            } else {
                i += 1;
            }
        }
    }
}

/// One file being cut and hashed.
struct FileScan<'f> {
    index: usize,
    file: &'f LocalFile,
    input: File,
    md5: multi_md5::Md5State,
    /// Bytes read and not yet cut into chunks (read into, never zeroed first).
    carry: Vec<u8>,
    chunks: Vec<StagedChunk>,
    /// Chunks told so far.
    told: usize,
    size: u64,
    eof: bool,
}

impl<'f> FileScan<'f> {
    fn open(index: usize, file: &'f LocalFile) -> anyhow::Result<Self> {
        let input = File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
        Ok(Self {
            index,
            file,
            input,
            md5: multi_md5::Md5State::new(),
            carry: Vec::new(),
            chunks: Vec::new(),
            told: 0,
            size: 0,
            eof: false,
        })
    }

    /// Reads up to `segment` bytes in all, or to the end; returns where the new bytes start.
    fn fill(&mut self, segment: usize, progress: &Progress) -> anyhow::Result<usize> {
        let from = self.carry.len();
        if !self.eof && from < segment {
            // No more than what is left of the file (and a byte to see its end): a small
            // file's buffer is kept while its chunks wait to be sent.
            let left = self.file.size.saturating_sub(self.size) as usize + 1;
            let want = (segment - from).min(left);
            self.carry.reserve_exact(want);
            let want = want as u64;
            // `Take` over `File` reads into the spare capacity as it is, without zeroing it.
            let n = (&mut self.input)
                .take(want)
                .read_to_end(&mut self.carry)
                .map_err(|e| anyhow!("reading {}: {e}", self.file.path.display()))?;
            self.eof = (n as u64) < want;
            self.size += n as u64;
            progress.inc(n as u64);
        }
        Ok(from)
    }

    /// Cuts what was read (all of it at the end of the file), hashing each chunk; answers
    /// with the bytes of the chunks cut, and carries the rest into a buffer of its own.
    fn cut(&mut self, config: &ChunkerConfig, segment: usize) -> Bytes {
        let mut offset = 0usize;
        for len in cut_points(&self.carry, config, self.eof) {
            let end = offset + len as usize;
            self.chunks.push(StagedChunk { id: ChunkId::of(&self.carry[offset..end]), len });
            offset = end;
        }
        if offset == 0 {
            return Bytes::new();
        }
        let rest = self.carry.len() - offset;
        let capacity = if self.eof { rest } else { segment.max(rest) };
        let mut cut = std::mem::replace(&mut self.carry, Vec::with_capacity(capacity));
        self.carry.extend_from_slice(&cut[offset..]);
        cut.truncate(offset);
        // Its chunks go on being sent from this buffer; the file is read on into the next.
        Bytes::from(cut)
    }

    fn finish(self) -> anyhow::Result<Scanned> {
        debug_assert!(self.carry.is_empty(), "the cut points at the end cover everything");
        let path = self.file.path.display();
        let now = self.input.metadata().with_context(|| format!("reading {path}"))?;
        if self.size != self.file.size
            || now.len() != self.file.size
            || mtime_ms(&now).unwrap_or(0) != self.file.mtime_ms
        {
            anyhow::bail!("{path} changed while it was read: stage out again once it is written");
        }
        Ok(Scanned { chunks: self.chunks, etag: hex::encode(self.md5.finalize()) })
    }
}

/// A `chunks` body: each record's id, length (u32 big-endian) and bytes, handed to the
/// connection piece by piece as they are held, not copied into one buffer first.
struct RecordsBody {
    pieces: std::collections::VecDeque<Bytes>,
    /// bytes of the pieces left
    left: u64,
}

impl RecordsBody {
    fn new(records: Vec<Record>) -> Self {
        let mut headers = BytesMut::with_capacity(36 * records.len());
        for (id, bytes) in &records {
            headers.extend_from_slice(&id.0);
            headers.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        }
        let mut headers = headers.freeze();
        let mut pieces = std::collections::VecDeque::with_capacity(2 * records.len());
        for (_, bytes) in records {
            pieces.push_back(headers.split_to(36));
            pieces.push_back(bytes);
        }
        let left = pieces.iter().map(|p| p.len() as u64).sum();
        Self { pieces, left }
    }
}

impl http_body::Body for RecordsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let piece = self.pieces.pop_front();
        if let Some(piece) = &piece {
            self.left -= piece.len() as u64;
        }
        std::task::Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Exact: the request carries a `Content-Length`.
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn manifest_paths_stay_inside_dest() {
        for good in ["a", "a/b/c.txt", "données/été.csv", ".hidden", "a/..b", "x y/z"] {
            assert!(check_manifest_path(good).is_ok(), "{good:?}");
        }
        for bad in
            ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a/", "./a", "a/.", "..", "a\0b", ".x.clusster-part"]
        {
            assert!(check_manifest_path(bad).is_err(), "{bad:?}");
        }
    }

    /// A file cut in segments as the store's ingest cuts it gives the cut points of the
    /// whole file at once, with each chunk's BLAKE3 and the file's MD5.
    #[test]
    fn files_are_cut_as_a_whole() {
        let config = ChunkerConfig { min_bytes: 2048, avg_bytes: 8192, max_bytes: 32768 };
        let mut data = vec![0u8; 5 * SEGMENT_BYTES + 12_345];
        rand::rngs::StdRng::seed_from_u64(9).fill_bytes(&mut data);
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 2047, 40_000, SEGMENT_BYTES, data.len()] {
            let path = dir.path().join(format!("f{len}"));
            fs::write(&path, &data[..len]).unwrap();
            let meta = fs::metadata(&path).unwrap();
            let file = LocalFile { rel: "f".into(), path, size: len as u64, mtime_ms: mtime_ms(&meta).unwrap() };
            let mut one = Some((0, &file));
            let (mut told, mut done) = (Vec::new(), None);
            let tell = |found| {
                match found {
                    Found::Chunks { chunks, data } => told.push((chunks, data)),
                    Found::Done { file: 0, scanned } => done = Some(scanned),
                    _ => panic!("another file"),
                }
                Ok(())
            };
            scan_files(|| one.take(), tell, 1, &config, &Progress::new(true, "test", None)).unwrap();
            let scanned = done.expect("the file done");
            // What was told as it went is the file's chunks, in order, with their bytes.
            let mut at = 0;
            let mut all = Vec::new();
            for (chunks, bytes) in told {
                let end = at + chunks.iter().map(|c| c.len as usize).sum::<usize>();
                assert!(bytes[..] == data[at..end], "{len}");
                at = end;
                all.extend(chunks);
            }
            assert_eq!(all, scanned.chunks, "{len}");
            let whole = cut_points(&data[..len], &config, true);
            assert_eq!(scanned.chunks.iter().map(|c| c.len).collect::<Vec<_>>(), whole, "{len}");
            let mut offset = 0;
            for c in &scanned.chunks {
                assert_eq!(c.id, ChunkId::of(&data[offset..offset + c.len as usize]));
                offset += c.len as usize;
            }
            assert_eq!(scanned.etag, hex::encode(md5::Md5::digest(&data[..len])), "{len}");
        }
    }
}
