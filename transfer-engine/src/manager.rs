//! The daemon's transfers: starts them, runs them to the end through connection losses
//! and restarts, answers peers, and reports progress.
//!
//! The site that opens a transfer owns it: it saves the transfer in the store before the
//! first byte moves and retries it, with backoff, until it commits, fails for a reason a
//! retry cannot fix, or is cancelled. A restarted daemon picks its saved transfers up.
//! The other side keeps what it received (held by the transfer's references) so that a
//! resumed transfer does not fetch it again; it releases it when the transfer ends, or
//! after [`ABANDONED_AFTER`] without news.

use super::driver::{
    self, ConnectionFailure, Context, ControlStream, Links, LocalFailure, RateLimiter, SendingSite, TransferError,
};
use crate::versions::VersionBook;
use federation::FederationEndpoint;
use hw_offload::ChunkId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::transfer::TransferId;
use store::{SiteAccess, Store};
use tokio::sync::{Notify, mpsc, watch};
use transfer_proto::session::Violation;
use transfer_proto::wire::{
    Control, MAX_CONNECTIONS, MAX_KEY_LEN, Mode, OFFER_MAX_CHUNKS, Open, Progress, Selection, codes,
};

/// A received-side transfer record older than this, its opener never back, is released.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Backoff between attempts of a transfer whose connection failed.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A peer that does not complete the handshake by then is retried later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Transfers one peer may run here at once (pushes, pulls, repairs and third-party copies
/// it opened); one more is answered busy, and the peer retries it later.
pub const MAX_INCOMING_PER_PEER: usize = 16;
/// A transfer that moved less than this is too short to measure its link by: its time
/// is mostly round trips.
const MEASURED_FROM_BYTES: u64 = 4 << 20;
/// How often a delegating site hears of a third-party transfer's progress.
const RELAY_INTERVAL: Duration = Duration::from_millis(500);

/// What a transfer is, as asked for and as saved to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// push, pull or copy (third-party)
    #[serde(flatten)]
    pub kind: Kind,
    /// what is sent, on the sending site (none for a version)
    #[serde(default)]
    pub source: Selection,
    /// where it lands, on the receiving site (none for a version)
    #[serde(default)]
    pub dest: Selection,
    /// a dataset version to copy, as a whole, instead of objects (hex of its id)
    #[serde(default, skip_serializing_if = "Option::is_none", with = "version_hex")]
    pub version: Option<[u8; 32]>,
    /// higher runs first when transfers queue
    pub priority: u8,
    /// bytes per second, for this transfer
    pub rate_limit: Option<u64>,
}

/// Who sends to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Kind {
    /// this site sends to `to`
    Push {
        /// receiving site
        to: String,
        /// the site that asked for this push (a third-party copy it delegated here); the
        /// receiver requires its rights too
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delegated_by: Option<String>,
    },
    /// `from` sends to this site
    Pull {
        /// sending site
        from: String,
    },
    /// `from` sends to `to`, asked by this site
    Copy {
        /// sending site
        from: String,
        /// receiving site
        to: String,
    },
    /// a peer opened this transfer here
    Incoming {
        /// the peer
        peer: String,
        /// whether this site receives
        receiving: bool,
    },
}

/// A version id as JSON: 64 hex digits.
mod version_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&hex::encode(id)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
        let mut id = [0; 32];
        hex::decode_to_slice(&text, &mut id)
            .map_err(|_| D::Error::custom(format!("version {text:?}: 64 hex digits expected")))?;
        Ok(Some(id))
    }
}

/// Saved in the store to resume after a restart: `[SAVED_SPEC_VERSION][JSON of Saved]`.
/// JSON because the spec's enums are tagged and flattened, which postcard cannot decode.
/// The version byte lets a later build change the form: from this build on, a spec of a
/// newer form is kept, not released. (Builds from before the byte read it as corrupt and
/// release it: going back past this change drops saved transfers.)
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    spec: TransferSpec,
}

/// The form of saved specs this build writes. Version 1 was the bare JSON of builds
/// before the byte existed, recognised by its opening brace.
const SAVED_SPEC_VERSION: u8 = 2;
// Bare JSON starts with `{`: versions must stay below it to be told apart.
const _: () = assert!(SAVED_SPEC_VERSION < b'{');

fn saved(spec: &TransferSpec) -> Vec<u8> {
    let mut out = vec![SAVED_SPEC_VERSION];
    serde_json::to_writer(&mut out, &Saved { spec: spec.clone() }).expect("a spec serialises");
    out
}

/// Why a saved spec cannot be resumed by this build.
#[derive(Debug, thiserror::Error)]
enum UnreadableSpec {
    #[error("saved by a newer build (format {0}; this build reads up to {SAVED_SPEC_VERSION})")]
    Newer(u8),
    #[error("corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

fn read_saved(bytes: &[u8]) -> Result<TransferSpec, UnreadableSpec> {
    let json = match bytes.first() {
        Some(b'{') => bytes,
        Some(&SAVED_SPEC_VERSION) => &bytes[1..],
        Some(&v) if v > SAVED_SPEC_VERSION => return Err(UnreadableSpec::Newer(v)),
        _ => bytes,
    };
    Ok(serde_json::from_slice::<Saved>(json)?.spec)
}

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// waiting for a slot
    Queued,
    /// moving data
    Running,
    /// the connection failed; trying again
    Retrying,
    /// committed
    Done,
    /// ended in error
    Failed,
    /// cancelled
    Cancelled,
}

impl State {
    /// Done, failed or cancelled: it will not change again.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// The name the API uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

struct Entry {
    id: TransferId,
    spec: TransferSpec,
    status: Mutex<Status>,
    progress: Arc<Mutex<Progress>>,
    cancel: watch::Sender<bool>,
    /// while a peer's transfer runs here: where the connections it joins go, and how
    /// many more it announced in its Open
    joins: Mutex<Option<(mpsc::UnboundedSender<quinn::Connection>, u8)>>,
}

struct Status {
    state: State,
    error: Option<String>,
    attempts: u32,
    started: Instant,
    finished: Option<Instant>,
    /// it failed because a site refused it: relayed as such to a site that delegated it
    refused: bool,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferStatus {
    /// hex id
    pub id: String,
    /// what it is
    #[serde(flatten)]
    pub spec: TransferSpec,
    /// where it is
    pub state: State,
    /// why it failed, or why it is retrying
    pub error: Option<String>,
    /// connection attempts
    pub attempts: u32,
    /// counters
    pub progress: Progress,
    /// seconds since it started (until it ended)
    pub elapsed_secs: f64,
    /// average plain bytes per second moved
    pub rate_bytes_per_sec: f64,
    /// seconds left at that rate, once the manifest is known
    pub eta_secs: Option<f64>,
}

/// What a repair did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepairReport {
    /// quarantined chunks looked for
    pub asked: u64,
    /// chunks fetched, verified and stored
    pub repaired: u64,
    /// chunks fetched from each site
    pub from: BTreeMap<String, u64>,
    /// chunks no peer could give
    pub missing: Vec<String>,
    /// peers that failed
    pub errors: Vec<String>,
}

/// Errors of the transfer API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// bad request
    #[error("{0}")]
    Invalid(String),
    /// no such transfer
    #[error("no transfer {0}")]
    NotFound(String),
    /// already over
    #[error("transfer {0} has already ended")]
    Ended(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransferCounters {
    refused_here: AtomicU64,
    refused_by_peers: AtomicU64,
}

impl TransferCounters {
    /// (name, help, value) of each counter, for the Prometheus text format.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 2] {
        [
            (
                "transfers_refused_here_total",
                "Transfers peers asked for that this site refused: bucket missing or not shared with them",
                self.refused_here.load(Ordering::Relaxed),
            ),
            (
                "transfers_refused_by_peers_total",
                "Transfers opened here that the peer refused: bucket missing or not shared with this site",
                self.refused_by_peers.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The daemon's transfers.
pub struct Transfers {
    store: Arc<Store>,
    counters: TransferCounters,
    /// transfers each peer runs here now
    incoming: Arc<Mutex<BTreeMap<String, usize>>>,
    net: FederationEndpoint,
    streams: usize,
    slots: Slots,
    table: Mutex<BTreeMap<TransferId, Arc<Entry>>>,
    /// the catalog, for transfers of dataset versions (none: this site moves no versions)
    versions: std::sync::OnceLock<Arc<dyn VersionBook>>,
}

impl Transfers {
    /// Transfers over `net`, `streams` data streams each, at most `active` opened here
    /// running at once.
    pub fn new(store: Arc<Store>, net: FederationEndpoint, streams: usize, active: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            net,
            streams: streams.max(1),
            slots: Slots::new(active),
            table: Mutex::new(BTreeMap::new()),
            counters: TransferCounters::default(),
            incoming: Arc::default(),
            versions: std::sync::OnceLock::new(),
        })
    }

    /// Lets transfers carry dataset versions, recorded in `book` (set once, before the
    /// first transfer starts).
    pub fn set_versions(&self, book: Arc<dyn VersionBook>) {
        if self.versions.set(book).is_err() {
            tracing::warn!("the transfers' version book was set twice; the first one stays");
        }
    }

    fn book(&self) -> Result<&Arc<dyn VersionBook>, TransferError> {
        self.versions.get().ok_or_else(|| {
            LocalFailure::Refused(format!("site {} keeps no catalog: it moves no versions", self.site())).into()
        })
    }

    /// What this site sends in a transfer: the objects of `selection`, or `version`.
    fn source(&self, selection: &Selection, version: Option<[u8; 32]>) -> Result<driver::Source, TransferError> {
        Ok(match version {
            Some(id) => driver::Source::Version { id, book: self.book()?.clone() },
            None => driver::Source::Objects(selection.clone()),
        })
    }

    /// Where what this site receives lands: under `selection`, or as `version`.
    fn dest(&self, selection: &Selection, version: Option<[u8; 32]>) -> Result<driver::Dest, TransferError> {
        Ok(match version {
            Some(id) => driver::Dest::Version { id, book: self.book()?.clone() },
            None => driver::Dest::Objects(selection.clone()),
        })
    }

    /// Counters for `/metrics`.
    pub fn counters(&self) -> &TransferCounters {
        &self.counters
    }

    /// Whether `site` is a member of the federation other than this site.
    pub fn is_peer(&self, site: &str) -> bool {
        site != self.site() && self.net.federation.site(site).is_some()
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.net.endpoint.local_addr()
    }

    /// Closes every connection and the listener.
    pub async fn shutdown(&self) {
        self.net.endpoint.close(quinn::VarInt::from_u32(codes::DONE), b"site shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.net.endpoint.wait_idle()).await;
    }

    /// This site's name.
    pub fn site(&self) -> &str {
        &self.net.site_name
    }

    /// Starts a transfer this site opens; returns its status.
    pub async fn start(self: &Arc<Self>, spec: TransferSpec) -> Result<TransferStatus, ApiError> {
        self.validate(&spec)?;
        let id: TransferId = rand::random();
        self.store
            .save_transfer(id, saved(&spec))
            .await
            .map_err(|e| ApiError::Invalid(format!("cannot save it: {e}")))?;
        Ok(self.launch(id, spec))
    }

    fn validate(&self, spec: &TransferSpec) -> Result<(), ApiError> {
        let peers: Vec<&String> = match &spec.kind {
            Kind::Push { to, .. } => vec![to],
            Kind::Pull { from } => vec![from],
            Kind::Copy { from, to } => vec![from, to],
            Kind::Incoming { .. } => return Err(ApiError::Invalid("incoming transfers are opened by peers".into())),
        };
        for peer in peers {
            if peer == self.site() {
                return Err(ApiError::Invalid(format!("{peer} is this site; name another site of the federation")));
            }
            if self.net.federation.site(peer).is_none() {
                return Err(ApiError::Invalid(format!("site {peer:?} is not in the federation file")));
            }
        }
        if let Kind::Copy { from, to } = &spec.kind
            && from == to
        {
            return Err(ApiError::Invalid("a copy needs two different sites".into()));
        }
        if let Some(version) = &spec.version {
            if spec.source != Selection::default() || spec.dest != Selection::default() {
                return Err(ApiError::Invalid("a version is copied whole: name no source or destination".into()));
            }
            let book = self.book().map_err(|e| ApiError::Invalid(e.to_string()))?;
            // What this site sends must be complete here, and the site it goes to allowed.
            if let Kind::Push { to, .. } = &spec.kind {
                book.files(version).map_err(|e| ApiError::Invalid(e.to_string()))?;
                book.may_hold(version, to).map_err(|e| ApiError::Invalid(e.to_string()))?;
            }
            return Ok(());
        }
        for s in [&spec.source, &spec.dest] {
            let ok = (3..=63).contains(&s.bucket.len())
                && s.bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !ok {
                return Err(ApiError::Invalid(format!("{:?} is not a bucket name", s.bucket)));
            }
            if s.prefix.len() > MAX_KEY_LEN {
                return Err(ApiError::Invalid("key prefix longer than 1024 bytes".into()));
            }
        }
        let local = match &spec.kind {
            Kind::Push { .. } => Some(&spec.source),
            Kind::Pull { .. } => Some(&spec.dest),
            _ => None,
        };
        if let Some(local) = local {
            self.store.bucket(&local.bucket).map_err(|e| ApiError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    fn register(&self, id: TransferId, spec: TransferSpec) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            id,
            spec,
            status: Mutex::new(Status {
                state: State::Queued,
                error: None,
                attempts: 0,
                started: Instant::now(),
                finished: None,
                refused: false,
            }),
            progress: Arc::default(),
            cancel: watch::channel(false).0,
            joins: Mutex::new(None),
        });
        self.table.lock().insert(id, entry.clone());
        entry
    }

    fn launch(self: &Arc<Self>, id: TransferId, spec: TransferSpec) -> TransferStatus {
        let entry = self.register(id, spec);
        let this = self.clone();
        let run = entry.clone();
        tokio::spawn(async move { this.run_opened(run).await });
        status_of(&entry)
    }

    /// Resumes the transfers saved before a restart; releases abandoned incoming ones.
    pub async fn resume_saved(self: &Arc<Self>) -> Result<(), store::StoreError> {
        for (id, record) in self.store.saved_transfers()? {
            let spec = match read_saved(&record.spec) {
                Ok(spec) => spec,
                Err(e @ UnreadableSpec::Newer(_)) => {
                    // Kept: the build that wrote it can resume it after a downgrade is undone.
                    tracing::error!(transfer = %hex::encode(id), error = %e, "saved transfer skipped");
                    continue;
                }
                Err(e) => {
                    tracing::error!(transfer = %hex::encode(id), error = %e, "unreadable saved transfer released");
                    self.store.release_transfer(id).await?;
                    continue;
                }
            };
            match spec.kind {
                Kind::Incoming { .. } => {
                    let age = store_age(record.created_ms);
                    if age > ABANDONED_AFTER {
                        tracing::warn!(transfer = %hex::encode(id), "incoming transfer abandoned by its opener: released");
                        self.store.release_transfer(id).await?;
                    }
                }
                _ => {
                    tracing::info!(transfer = %hex::encode(id), "resuming saved transfer");
                    self.launch(id, spec);
                }
            }
        }
        Ok(())
    }

    /// All transfers this daemon knows of since it started, newest last.
    pub fn list(&self) -> Vec<TransferStatus> {
        let mut all: Vec<TransferStatus> = self.table.lock().values().map(|e| status_of(e)).collect();
        all.sort_by(|a, b| b.elapsed_secs.total_cmp(&a.elapsed_secs));
        all
    }

    /// One transfer.
    pub fn status(&self, id: &str) -> Result<TransferStatus, ApiError> {
        Ok(status_of(&*self.entry(id)?))
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, ApiError> {
        let raw = parse_id(id)?;
        self.table.lock().get(&raw).cloned().ok_or_else(|| ApiError::NotFound(id.to_owned()))
    }

    /// Cancels a transfer; what it received is released.
    pub fn cancel(&self, id: &str) -> Result<TransferStatus, ApiError> {
        let entry = self.entry(id)?;
        if entry.status.lock().state.is_final() {
            return Err(ApiError::Ended(id.to_owned()));
        }
        let _ = entry.cancel.send(true);
        Ok(status_of(&entry))
    }

    /// Runs a transfer this site opened until it ends.
    async fn run_opened(self: Arc<Self>, entry: Arc<Entry>) {
        let mut cancel = entry.cancel.subscribe();
        let permit = tokio::select! {
            p = self.slots.acquire(entry.spec.priority) => p,
            _ = cancelled(&mut cancel) => {
                self.finish(&entry, State::Cancelled, None).await;
                return;
            }
        };
        let mut backoff = RETRY_MIN;
        loop {
            {
                let mut status = entry.status.lock();
                status.state = State::Running;
                status.attempts += 1;
            }
            let started = Instant::now();
            let result = self.attempt(&entry).await;
            match result {
                Ok(()) => {
                    self.record_rate(&entry, started.elapsed()).await;
                    self.finish(&entry, State::Done, None).await;
                    break;
                }
                Err(TransferError::Cancelled) => {
                    self.finish(&entry, State::Cancelled, None).await;
                    break;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(transfer = %hex::encode(entry.id), error = %e, retry_in = ?backoff, "transfer interrupted");
                    {
                        let mut status = entry.status.lock();
                        status.state = State::Retrying;
                        status.error = Some(e.to_string());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancelled(&mut cancel) => {
                            self.finish(&entry, State::Cancelled, None).await;
                            break;
                        }
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    if e.is_refusal() {
                        self.counters.refused_by_peers.fetch_add(1, Ordering::Relaxed);
                        entry.status.lock().refused = true;
                    }
                    tracing::error!(transfer = %hex::encode(entry.id), error = %e, "transfer failed");
                    self.finish(&entry, State::Failed, Some(e.to_string())).await;
                    break;
                }
            }
        }
        drop(permit);
    }

    /// Keeps the rate a transfer that moved enough to tell ran at between its two sites,
    /// for placement's estimates.
    async fn record_rate(&self, entry: &Entry, took: Duration) {
        let (from, to) = match &entry.spec.kind {
            Kind::Push { to, .. } => (self.site(), to.as_str()),
            Kind::Pull { from } => (from.as_str(), self.site()),
            Kind::Copy { from, to } => (from.as_str(), to.as_str()),
            Kind::Incoming { .. } => return,
        };
        let wire = entry.progress.lock().wire_bytes;
        if wire < MEASURED_FROM_BYTES {
            return;
        }
        if let Err(e) = self.store.record_link_rate(from, to, wire, took.as_secs_f64()).await {
            tracing::warn!(%from, %to, error = %e, "could not keep the measured rate");
        }
    }

    async fn finish(&self, entry: &Entry, state: State, error: Option<String>) {
        // A transfer that ended, however, holds nothing any more.
        if let Err(e) = self.store.release_transfer(entry.id).await {
            tracing::error!(transfer = %hex::encode(entry.id), error = %e, "cannot release transfer");
        }
        let mut status = entry.status.lock();
        status.state = state;
        status.error = error;
        status.finished = Some(Instant::now());
    }

    fn context(&self, entry: &Entry) -> Context {
        Context {
            store: self.store.clone(),
            streams: self.streams,
            progress: entry.progress.clone(),
            cancel: entry.cancel.subscribe(),
            rate: entry.spec.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
        }
    }

    /// One connection's worth of a transfer this site opened.
    async fn attempt(&self, entry: &Entry) -> Result<(), TransferError> {
        let spec = &entry.spec;
        let (peer, mode, third_party) = match &spec.kind {
            Kind::Push { to, .. } => (to.clone(), Mode::Push, None),
            Kind::Pull { from } => (from.clone(), Mode::Pull, None),
            Kind::Copy { from, to } => (from.clone(), Mode::ThirdParty, Some(to.clone())),
            Kind::Incoming { .. } => {
                return Err(LocalFailure::Refused("incoming transfers are not opened here".into()).into());
            }
        };
        // A delegated copy moves no data over this connection: the sender connects its own.
        let connections = match mode {
            Mode::Push | Mode::Pull => {
                self.net.settings_for(&peer).connections_per_peer.clamp(1, MAX_CONNECTIONS as u32)
            }
            _ => 1,
        };
        let (conn, control) = self.open(&peer, entry.id, mode, spec, third_party, connections as u8).await?;
        // The other connections join before any data moves, so that the sender's streams
        // spread over all of them from the start.
        let joins = (1..connections).map(|_| join(&self.net, &peer, entry.id));
        let mut extra = Vec::new();
        for joined in futures::future::join_all(joins).await {
            match joined {
                Ok(conn) => extra.push(conn),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "a connection could not join the transfer; going on with fewer")
                }
            }
        }
        let (joined_tx, joined) = mpsc::unbounded_channel();
        for conn in &extra {
            let _ = joined_tx.send(conn.clone());
        }
        let links = Links { first: conn.clone(), expected: 1 + extra.len(), joined };
        let ctx = self.context(entry);
        let result = match mode {
            Mode::Push => {
                // A copy another site asked for stands on its right to read the source and
                // on the destination's; a push decided here, on nothing to check again.
                let readers: Vec<String> = match &spec.kind {
                    Kind::Push { to, delegated_by: Some(asker) } => {
                        [asker, to].into_iter().filter(|s| *s != self.site()).cloned().collect()
                    }
                    _ => Vec::new(),
                };
                let source = self.source(&spec.source, spec.version)?;
                driver::send(links, control, ctx, source, &readers).await.map(|_| ())
            }
            Mode::Pull => {
                let from = SendingSite { name: peer.clone(), pushes: false, delegated_by: None };
                let dest = self.dest(&spec.dest, spec.version)?;
                driver::receive(links, control, ctx, entry.id, dest, &from).await.map(|_| ())
            }
            Mode::ThirdParty => follow_delegated(control, ctx).await,
            Mode::Repair => Err(LocalFailure::Refused("repairs are not transfers".into()).into()),
        };
        for conn in extra.iter().chain([&conn]) {
            conn.close(quinn::VarInt::from_u32(codes::DONE), b"");
        }
        result
    }

    /// Connects to `peer` and opens a transfer there.
    async fn open(
        &self,
        peer: &str,
        transfer: TransferId,
        mode: Mode,
        spec: &TransferSpec,
        third_party: Option<String>,
        connections: u8,
    ) -> Result<(quinn::Connection, ControlStream), TransferError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.net.connect(peer))
            .await
            .map_err(|_| ConnectionFailure::Timeout { peer: peer.to_owned(), after: CONNECT_TIMEOUT })?
            .map_err(ConnectionFailure::Connect)?;
        let (send, recv) = conn.open_bi().await.map_err(ConnectionFailure::Lost)?;
        let mut control = ControlStream::new(send, recv);
        let open = Open {
            transfer,
            mode,
            source: spec.source.clone(),
            dest: spec.dest.clone(),
            third_party,
            priority: spec.priority,
            rate_limit: spec.rate_limit,
            connections,
            delegated_by: match &spec.kind {
                Kind::Push { delegated_by, .. } => delegated_by.clone(),
                _ => None,
            },
            version: spec.version,
        };
        control.send(&Control::Open(open)).await?;
        match control.recv().await? {
            Control::Accepted => Ok((conn, control)),
            other => Err(Violation(format!("expected Accepted, got {other:?}")).into()),
        }
    }

    fn repair_context(&self) -> Context {
        Context {
            store: self.store.clone(),
            streams: 1,
            progress: Arc::default(),
            cancel: watch::channel(false).1,
            rate: None,
        }
    }

    /// Fetches every quarantined chunk from the peers that hold it, asking each site of
    /// the federation in turn.
    pub async fn repair(&self) -> Result<RepairReport, store::StoreError> {
        let mut missing: Vec<ChunkId> = self.store.quarantined()?;
        let mut report = RepairReport { asked: missing.len() as u64, ..Default::default() };
        let peers: Vec<String> =
            self.net.federation.sites().map(|s| s.name.clone()).filter(|n| n != self.site()).collect();
        for peer in peers {
            if missing.is_empty() {
                break;
            }
            for batch in missing.clone().chunks(OFFER_MAX_CHUNKS) {
                let spec = TransferSpec {
                    kind: Kind::Pull { from: peer.clone() },
                    source: Selection::default(),
                    dest: Selection::default(),
                    version: None,
                    priority: 0,
                    rate_limit: None,
                };
                let id: TransferId = rand::random();
                let attempt = async {
                    let (conn, control) = self.open(&peer, id, Mode::Repair, &spec, None, 1).await?;
                    let got = driver::repair(&conn, control, self.repair_context(), id, batch.to_vec()).await;
                    conn.close(quinn::VarInt::from_u32(codes::DONE), b"");
                    got
                };
                match attempt.await {
                    Ok(repaired) => {
                        *report.from.entry(peer.clone()).or_default() += repaired.len() as u64;
                        report.repaired += repaired.len() as u64;
                        let done: std::collections::HashSet<ChunkId> = repaired.into_iter().collect();
                        missing.retain(|id| !done.contains(id));
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "repair from peer failed");
                        report.errors.push(format!("{peer}: {e}"));
                        break;
                    }
                }
            }
        }
        report.missing = missing.iter().map(|id| id.to_string()).collect();
        Ok(report)
    }

    /// Serves peers until the endpoint closes.
    pub async fn accept_loop(self: Arc<Self>) {
        self.accept_loop_with(|_, conn: quinn::Connection, _| conn.close(0u32.into(), b"protocol not served")).await
    }

    /// As [`Self::accept_loop`]; a connection that negotiated another protocol than the
    /// transfer protocol (the endpoint serves the protocols its owner names) goes to `other`.
    pub async fn accept_loop_with(
        self: Arc<Self>,
        other: impl Fn(Vec<u8>, quinn::Connection, String) + Send + 'static,
    ) {
        while let Some(incoming) = self.net.accept().await {
            let (conn, peer) = match incoming {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "QUIC connection refused");
                    continue;
                }
            };
            match federation::FederationEndpoint::protocol_of(&conn) {
                Some(protocol) if protocol != transfer_proto::wire::ALPN => {
                    other(protocol, conn, peer);
                    continue;
                }
                _ => {}
            }
            let this = self.clone();
            tokio::spawn(async move {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let this = this.clone();
                    let conn = conn.clone();
                    let peer = peer.clone();
                    tokio::spawn(async move { this.serve_transfer(conn, peer, ControlStream::new(send, recv)).await });
                }
            });
        }
    }

    /// The QUIC endpoint this site's transfers use (other protocols may connect through it).
    pub fn endpoint(&self) -> &federation::FederationEndpoint {
        &self.net
    }

    /// Answers one transfer a peer opened, or gives a running one another connection.
    async fn serve_transfer(self: Arc<Self>, conn: quinn::Connection, peer: String, mut control: ControlStream) {
        let open = match control.recv().await {
            Ok(Control::Open(open)) if (1..=MAX_CONNECTIONS).contains(&open.connections) => open,
            Ok(Control::Join { transfer }) => return self.serve_join(conn, &peer, transfer, control).await,
            Ok(other) => {
                let e = TransferError::Violation(Violation(format!(
                    "expected Open (for 1 to {MAX_CONNECTIONS} connections) or Join, got {other:?}"
                )));
                control.abort(&e).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "transfer not opened");
                control.abort(&e).await;
                return;
            }
        };
        let receiving = open.mode == Mode::Push;
        if let Err(e) = self.admit(&peer, &open) {
            self.counters.refused_here.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, mode = ?open.mode, error = %e, "transfer refused");
            control.abort(&e).await;
            // An earlier attempt of it that failed midway will not be back: what it
            // received goes now, not when it is abandoned days later.
            let earlier = self.table.lock().get(&open.transfer).cloned();
            if let Some(entry) = earlier
                && matches!(&entry.spec.kind, Kind::Incoming { peer: opener, .. } if *opener == peer)
                && !entry.status.lock().state.is_final()
            {
                self.finish(&entry, State::Failed, Some(e.to_string())).await;
            }
            return;
        }
        // Repairs, pushes and pulls of one peer share its slots here.
        let Some(_running) = IncomingSlot::take(&self.incoming, &peer) else {
            let busy = format!("{} runs {MAX_INCOMING_PER_PEER} transfers of {peer} already; try later", self.site());
            control.abort(&LocalFailure::Busy(busy).into()).await;
            return;
        };
        match open.mode {
            Mode::ThirdParty => return self.serve_delegation(peer, open, control).await,
            Mode::Repair => {
                if control.send(&Control::Accepted).await.is_ok() {
                    let ctx = self.repair_context();
                    match driver::serve_repair(&conn, control, ctx, &peer, self.versions.get()).await {
                        Ok(n) => tracing::info!(%peer, chunks = n, "sent chunks for a peer's repair"),
                        Err(e) => tracing::warn!(%peer, error = %e, "repair for a peer failed"),
                    }
                }
                return;
            }
            Mode::Push | Mode::Pull => {}
        }
        let spec = TransferSpec {
            kind: Kind::Incoming { peer: peer.clone(), receiving },
            source: open.source.clone(),
            dest: open.dest.clone(),
            version: open.version,
            priority: open.priority,
            rate_limit: open.rate_limit,
        };
        let entry = self.table.lock().get(&open.transfer).cloned();
        let entry = match entry {
            // The same transfer resumed over a new connection.
            Some(entry) if entry.spec == spec && !entry.status.lock().state.is_final() => entry,
            // Another site's transfer, or one this site opened: ids are not shared.
            Some(entry) if !matches!(&entry.spec.kind, Kind::Incoming { peer: opener, .. } if *opener == peer) => {
                let e = Violation(format!("transfer id {} is another site's here", hex::encode(open.transfer)));
                control.abort(&e.into()).await;
                return;
            }
            _ => self.register(open.transfer, spec.clone()),
        };
        if receiving && let Err(e) = self.store.save_transfer(open.transfer, saved(&spec)).await {
            control.abort(&TransferError::Store(e)).await;
            return;
        }
        // Ready for the opener's other connections before it hears Accepted.
        let (joins, joined) = mpsc::unbounded_channel();
        *entry.joins.lock() = Some((joins.clone(), open.connections - 1));
        // Forget this attempt's channel, not that of a newer attempt of the same transfer.
        let stop_joins = || {
            let mut current = entry.joins.lock();
            if current.as_ref().is_some_and(|(tx, _)| tx.same_channel(&joins)) {
                current.take();
            }
        };
        if control.send(&Control::Accepted).await.is_err() {
            stop_joins();
            return;
        }
        entry.status.lock().state = State::Running;
        entry.status.lock().attempts += 1;
        let ctx = self.context(&entry);
        let links = Links { first: conn, expected: open.connections as usize, joined };
        let result = if receiving {
            let from = SendingSite { name: peer.clone(), pushes: true, delegated_by: open.delegated_by.clone() };
            match self.dest(&open.dest, open.version) {
                Ok(dest) => driver::receive(links, control, ctx, open.transfer, dest, &from).await.map(|_| ()),
                Err(e) => Err(e),
            }
        } else {
            match self.source(&open.source, open.version) {
                Ok(source) => driver::send(links, control, ctx, source, std::slice::from_ref(&peer)).await.map(|_| ()),
                Err(e) => Err(e),
            }
        };
        stop_joins();
        if result.as_ref().is_err_and(TransferError::is_refusal) {
            self.counters.refused_here.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(()) => self.finish(&entry, State::Done, None).await,
            // The opener will be back: keep what was received.
            Err(e) if e.is_transient() => {
                let mut status = entry.status.lock();
                status.state = State::Retrying;
                status.error = Some(e.to_string());
            }
            Err(TransferError::Cancelled) => self.finish(&entry, State::Cancelled, None).await,
            Err(e) => {
                tracing::warn!(%peer, transfer = %hex::encode(open.transfer), error = %e, "incoming transfer failed");
                self.finish(&entry, State::Failed, Some(e.to_string())).await;
            }
        }
    }

    /// Whether `peer` may run `open` here: the local bucket must exist and be shared with
    /// the peer for what the transfer does (and, for a third-party copy, with the site the
    /// data goes to). A repair is checked chunk by chunk when it names them.
    fn admit(&self, peer: &str, open: &Open) -> Result<(), TransferError> {
        let here = |e: TransferError| match e {
            TransferError::Local(LocalFailure::Refused(reason)) => {
                LocalFailure::Refused(format!("at {}: {reason}", self.site())).into()
            }
            other => other,
        };
        if let Some(version) = &open.version {
            return self.admit_version(peer, open, version).map_err(here);
        }
        let (bucket, access) = match open.mode {
            Mode::Push => (&open.dest.bucket, SiteAccess::Write),
            Mode::Pull | Mode::ThirdParty => (&open.source.bucket, SiteAccess::Read),
            Mode::Repair => return Ok(()),
        };
        driver::refuse_unless_shared(&self.store, bucket, peer, access).map_err(here)?;
        // A push a third site asked the opener for writes with that site's rights too:
        // else any site could write, through a peer, where only that peer may.
        if open.mode == Mode::Push
            && let Some(asker) = &open.delegated_by
            && asker != peer
            && asker != self.site()
        {
            driver::refuse_unless_shared(&self.store, bucket, asker, access).map_err(here)?;
        }
        if open.mode == Mode::ThirdParty
            && let Some(to) = &open.third_party
            && to != peer
        {
            driver::refuse_unless_shared(&self.store, bucket, to, access).map_err(here)?;
        }
        Ok(())
    }

    /// Whether `peer` may run `open`, which moves `version`: a site receives a version
    /// only if the namespace's home lets it hold it, and sends it only to such a site
    /// (the peer that pulls, or the third site of a copy), and only a complete copy.
    fn admit_version(&self, peer: &str, open: &Open, version: &[u8; 32]) -> Result<(), TransferError> {
        let book = self.book()?;
        match open.mode {
            // The pusher must be a site that may hold it too (else any site could learn,
            // from what is asked of it, which chunks of the dataset are here), and so must
            // a site that asked it to push.
            Mode::Push => {
                book.may_hold(version, self.site())?;
                book.may_hold(version, peer)?;
                if let Some(asker) = open.delegated_by.as_deref().filter(|a| *a != peer && *a != self.site()) {
                    book.may_hold(version, asker)?;
                }
            }
            Mode::Pull | Mode::ThirdParty => {
                book.files(version)?;
                let to = match (&open.mode, &open.third_party) {
                    (Mode::ThirdParty, Some(to)) => to.as_str(),
                    _ => peer,
                };
                book.may_hold(version, to)?;
            }
            Mode::Repair => return Err(Violation("a repair carries no version".into()).into()),
        }
        Ok(())
    }

    /// Another connection of a transfer `peer` opened and runs here: its data streams go to
    /// that transfer. Only the peer that opened it may join it.
    async fn serve_join(&self, conn: quinn::Connection, peer: &str, transfer: TransferId, mut control: ControlStream) {
        let entry = self.table.lock().get(&transfer).cloned();
        let entry = entry.filter(|e| matches!(&e.spec.kind, Kind::Incoming { peer: opener, .. } if opener == peer));
        let refused = match entry.as_ref().map(|e| e.joins.lock()) {
            Some(mut joins) => match joins.as_mut() {
                Some((tx, left)) if *left > 0 && tx.send(conn).is_ok() => {
                    *left -= 1;
                    None
                }
                Some(_) => Some(format!("transfer {} has all the connections it announced", hex::encode(transfer))),
                None => Some(format!("no transfer {} from {peer} is running here to join", hex::encode(transfer))),
            },
            None => Some(format!("no transfer {} from {peer} is running here to join", hex::encode(transfer))),
        };
        match refused {
            None => {
                let _ = control.send(&Control::Accepted).await;
                control.finish();
            }
            Some(reason) => control.abort(&TransferError::Violation(Violation(reason))).await,
        }
    }

    /// A peer asks this site to push to a third: run that push (once per transfer id)
    /// and relay its progress and outcome.
    async fn serve_delegation(self: Arc<Self>, peer: String, open: Open, mut control: ControlStream) {
        let Some(to) = open.third_party.clone() else {
            let e = TransferError::Violation(Violation("third-party transfer names no site".into()));
            return control.abort(&e).await;
        };
        let spec = TransferSpec {
            kind: Kind::Push { to, delegated_by: Some(peer.clone()) },
            source: open.source.clone(),
            dest: open.dest.clone(),
            version: open.version,
            priority: open.priority,
            rate_limit: open.rate_limit,
        };
        let existing = self.table.lock().get(&open.transfer).cloned();
        let entry = match existing {
            // The same delegation asked again (the asking site reconnected).
            Some(entry) if matches!(&entry.spec.kind, Kind::Push { delegated_by: Some(asker), .. } if *asker == peer) => {
                entry
            }
            // Only the site that delegated a copy may follow or cancel it.
            Some(_) => {
                let e = Violation(format!("transfer id {} is another site's here", hex::encode(open.transfer)));
                return control.abort(&e.into()).await;
            }
            None => {
                if let Err(e) = self.validate(&spec) {
                    return control.abort(&LocalFailure::Refused(e.to_string()).into()).await;
                }
                if let Err(e) = self.store.save_transfer(open.transfer, saved(&spec)).await {
                    return control.abort(&TransferError::Store(e)).await;
                }
                tracing::info!(%peer, transfer = %hex::encode(open.transfer), "third-party transfer delegated here");
                self.launch(open.transfer, spec);
                self.table.lock().get(&open.transfer).cloned().expect("just launched")
            }
        };
        if control.send(&Control::Accepted).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(RELAY_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                msg = control.recv() => {
                    // The delegating site went away or cancelled.
                    if let Err(TransferError::Aborted { code: codes::CANCELLED, .. }) = msg {
                        let _ = entry.cancel.send(true);
                    }
                    return;
                }
            }
            let status = status_of(&entry);
            let msg = match status.state {
                State::Done => Control::Committed { objects: status.progress.objects },
                State::Failed | State::Cancelled => Control::Abort {
                    code: if entry.status.lock().refused { codes::REFUSED } else { codes::FAILED },
                    reason: status.error.unwrap_or_else(|| format!("{:?}", status.state)),
                },
                _ => Control::Progress(status.progress),
            };
            let last = !matches!(msg, Control::Progress(_));
            if control.send(&msg).await.is_err() || last {
                control.finish();
                return;
            }
        }
    }
}

/// One of a peer's transfers running here, counted until dropped.
struct IncomingSlot {
    running: Arc<Mutex<BTreeMap<String, usize>>>,
    peer: String,
}

impl IncomingSlot {
    fn take(running: &Arc<Mutex<BTreeMap<String, usize>>>, peer: &str) -> Option<Self> {
        let mut counts = running.lock();
        let count = counts.entry(peer.to_owned()).or_default();
        if *count >= MAX_INCOMING_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Self { running: running.clone(), peer: peer.to_owned() })
    }
}

impl Drop for IncomingSlot {
    fn drop(&mut self) {
        let mut counts = self.running.lock();
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Run slots for transfers this site opens: a free slot goes to the waiting transfer of
/// highest priority, first come first served within a priority.
struct Slots {
    inner: Arc<SlotsInner>,
}

struct SlotsInner {
    free: Mutex<usize>,
    waiting: Mutex<BTreeSet<(Reverse<u8>, u64)>>,
    arrivals: AtomicU64,
    changed: Notify,
}

/// A held slot, given back on drop.
struct Slot(Arc<SlotsInner>);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.changed.notify_waiters();
    }
}

/// Takes a waiter out of the queue however its wait ends (slot, or cancellation).
struct Waiting<'a>(&'a SlotsInner, (Reverse<u8>, u64));

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.lock().remove(&self.1);
        self.0.changed.notify_waiters();
    }
}

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            inner: Arc::new(SlotsInner {
                free: Mutex::new(n.max(1)),
                waiting: Mutex::default(),
                arrivals: AtomicU64::new(0),
                changed: Notify::new(),
            }),
        }
    }

    async fn acquire(&self, priority: u8) -> Slot {
        let inner = &*self.inner;
        let key = (Reverse(priority), inner.arrivals.fetch_add(1, Ordering::Relaxed));
        inner.waiting.lock().insert(key);
        let _queued = Waiting(inner, key);
        loop {
            let changed = inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before looking, so a release between the look and the wait wakes us.
            changed.as_mut().enable();
            if inner.waiting.lock().first() == Some(&key) {
                let mut free = inner.free.lock();
                if *free > 0 {
                    *free -= 1;
                    return Slot(self.inner.clone());
                }
            }
            changed.await;
        }
    }
}

/// Follows a third-party transfer from the site that asked for it.
/// Connects to `peer` again and joins the connection to the running transfer `id`.
async fn join(net: &FederationEndpoint, peer: &str, id: TransferId) -> Result<quinn::Connection, TransferError> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, net.connect(peer))
        .await
        .map_err(|_| ConnectionFailure::Timeout { peer: peer.to_owned(), after: CONNECT_TIMEOUT })?
        .map_err(ConnectionFailure::Connect)?;
    let (send, recv) = conn.open_bi().await.map_err(ConnectionFailure::Lost)?;
    let mut control = ControlStream::new(send, recv);
    control.send(&Control::Join { transfer: id }).await?;
    match control.recv().await? {
        Control::Accepted => {
            control.finish();
            Ok(conn)
        }
        other => Err(Violation(format!("expected Accepted, got {other:?}")).into()),
    }
}

async fn follow_delegated(mut control: ControlStream, ctx: Context) -> Result<(), TransferError> {
    let mut cancel = ctx.cancel.clone();
    loop {
        tokio::select! {
            msg = control.recv() => match msg? {
                Control::Progress(p) => *ctx.progress.lock() = p,
                Control::Committed { .. } => return Ok(()),
                other => return Err(Violation(format!("unexpected {other:?} from the sending site")).into()),
            },
            _ = cancel.changed() => {
                control.abort(&TransferError::Cancelled).await;
                return Err(TransferError::Cancelled);
            }
        }
    }
}

/// Resolves once the transfer is cancelled (the guard `wait_for` returns is not `Send`).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    let _ = cancel.wait_for(|c| *c).await;
}

fn store_age(created_ms: i64) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(Duration::from_millis(created_ms.max(0) as u64))
}

fn parse_id(id: &str) -> Result<TransferId, ApiError> {
    let mut raw = [0u8; 16];
    hex::decode_to_slice(id, &mut raw)
        .map_err(|_| ApiError::Invalid(format!("{id:?} is not a transfer id (32 hex digits)")))?;
    Ok(raw)
}

fn status_of(entry: &Entry) -> TransferStatus {
    let status = entry.status.lock();
    let progress = entry.progress.lock().clone();
    let elapsed = status.finished.unwrap_or_else(Instant::now).duration_since(status.started).as_secs_f64();
    let rate = if elapsed > 0.0 { progress.bytes_done as f64 / elapsed } else { 0.0 };
    let left = progress.bytes_wanted.saturating_sub(progress.bytes_done) as f64;
    let eta = (rate > 0.0 && !status.state.is_final()).then(|| left / rate);
    TransferStatus {
        id: hex::encode(entry.id),
        spec: entry.spec.clone(),
        state: status.state,
        error: status.error.clone(),
        attempts: status.attempts,
        progress,
        elapsed_secs: elapsed,
        rate_bytes_per_sec: rate,
        eta_secs: eta,
    }
}

#[cfg(test)]
mod saved_spec_tests {
    use super::*;

    fn spec() -> TransferSpec {
        TransferSpec {
            kind: Kind::Copy { from: "paris".into(), to: "julich".into() },
            source: Selection { bucket: "data".into(), prefix: "run-1/".into() },
            dest: Selection { bucket: "backup".into(), prefix: String::new() },
            version: None,
            priority: 7,
            rate_limit: Some(50_000_000),
        }
    }

    #[test]
    fn a_version_is_saved_as_hex_and_read_back() {
        let spec = TransferSpec {
            kind: Kind::Pull { from: "paris".into() },
            source: Selection::default(),
            dest: Selection::default(),
            version: Some([0xab; 32]),
            priority: 0,
            rate_limit: None,
        };
        let bytes = saved(&spec);
        assert!(String::from_utf8_lossy(&bytes).contains(&"ab".repeat(32)));
        assert_eq!(read_saved(&bytes).unwrap(), spec);
        let bad = String::from_utf8_lossy(&bytes).replace(&"ab".repeat(32), "xyz");
        assert!(read_saved(bad.as_bytes()).is_err(), "a version that is not 64 hex digits");
    }

    #[test]
    fn saved_specs_carry_their_format_and_read_back() {
        let bytes = saved(&spec());
        assert_eq!(bytes[0], SAVED_SPEC_VERSION);
        assert_eq!(read_saved(&bytes).unwrap(), spec());
    }

    #[test]
    fn specs_saved_before_the_version_byte_still_resume() {
        let legacy = serde_json::to_vec(&Saved { spec: spec() }).unwrap();
        assert_eq!(read_saved(&legacy).unwrap(), spec());
    }

    #[test]
    fn a_newer_format_is_refused_and_garbage_is_corrupt() {
        let mut newer = saved(&spec());
        newer[0] = SAVED_SPEC_VERSION + 1;
        assert!(matches!(read_saved(&newer), Err(UnreadableSpec::Newer(_))));
        assert!(matches!(read_saved(&[SAVED_SPEC_VERSION, b'x']), Err(UnreadableSpec::Corrupt(_))));
        assert!(matches!(read_saved(&[]), Err(UnreadableSpec::Corrupt(_))));
    }
}
