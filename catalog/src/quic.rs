//! The catalog's sync over QUIC: a thin driver around the logic of [`crate::catalog`].
//!
//! Under its own ALPN on the federation's endpoint (same mutual TLS, so a peer is a site
//! of the federation before any byte is read), a site opens a bidirectional stream per
//! request: `Pull` with the heads it holds, answered with the events past them (its own
//! and relayed ones) and the peer's heads and digest; `Manifest` with a version id,
//! answered with the manifest's bytes if the peer has them (the asker checks them against
//! the id); `Presence` with a version, answered with how many of its chunks' bytes the
//! peer holds, for any data (counts only, and only for published versions: no peer learns
//! from it whether a chunk of its choosing is held). Frames are a u32 little-endian length and a postcard body, bounded.
//!
//! Every [`SYNC_INTERVAL`], each site pulls from every other until it has what they had:
//! an event reaches all sites in about one interval per relay hop, and a site that was
//! cut off or is new catches up the same way, with no manual step. When a pull leaves
//! both sides at the same heads but with different digests, the logs diverged (a site
//! signed two histories); that is logged and counted.

use crate::catalog::{Catalog, CatalogError, Heads, PullAnswer};
use crate::event::{Refusal, ReplicaState, SignedEvent};
use crate::in_store::InStore;
use crate::manifest::{Manifest, VersionId};
use crate::now_ms;
use federation::file::Federation;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use store::versions::Presence;

/// The catalog sync protocol's ALPN.
pub const ALPN: &[u8] = b"clusster-catalog/2";

/// How often a site pulls from each peer.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Events asked for per pull.
const PULL_LIMIT: u32 = 1024;

/// Largest answer read.
const MAX_FRAME: usize = 32 << 20;

/// Largest request read: a `Presence` carries a manifest (about 100 bytes a file).
const MAX_REQUEST: usize = 16 << 20;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// the events past these heads, at most `limit`
    Pull {
        /// what the asker holds
        heads: Heads,
        /// most events wanted
        limit: u32,
    },
    /// a page of the snapshot of `origin`'s log at `checkpoint`: its live events past
    /// `after` ([`crate::compaction`])
    Snapshot {
        /// whose log
        origin: String,
        /// the checkpoint's seq, as the pull answer named it
        checkpoint: u64,
        /// the last seq the asker staged (0 at first)
        after: u64,
        /// most events wanted
        limit: u32,
    },
    /// a version's manifest
    Manifest {
        /// which
        version: VersionId,
    },
    /// how much of a version the site holds, counted at chunk level over all its data
    Presence {
        /// which
        version: VersionId,
        /// its manifest, when the asker thinks the site may lack it (checked by the id)
        manifest: Option<Vec<u8>>,
    },
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// events past the asker's heads, and what the answering site holds
    Events {
        /// in log order per origin
        events: Vec<SignedEvent>,
        /// the answering site's heads
        heads: Heads,
        /// its digest
        digest: [u8; 32],
        /// origin → checkpoint: logs whose next event the asker must take from a snapshot
        snapshots: BTreeMap<String, u64>,
    },
    /// a page of a snapshot, or `None` when the site no longer serves that one
    Snapshot {
        /// the page
        page: Option<crate::compaction::SnapshotPage>,
    },
    /// a manifest's canonical bytes, if held
    Manifest {
        /// the bytes
        bytes: Option<Vec<u8>>,
    },
    /// what the site holds of a version
    Presence {
        /// the counts
        presence: store::versions::Presence,
    },
    /// the request could not be answered
    Failed {
        /// why
        reason: String,
    },
}

/// What the sync counted.
#[derive(Debug, Default)]
pub struct SyncCounters {
    applied: AtomicU64,
    duplicates: AtomicU64,
    diverged: AtomicU64,
    snapshots: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl SyncCounters {
    /// (metric name, help, value) for `/metrics`, refusals by kind under one name.
    pub fn counters(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = vec![
            (
                "catalog_events_applied_total".to_owned(),
                "Catalog events of other sites applied here",
                self.applied.load(Relaxed),
            ),
            (
                "catalog_events_duplicate_total".to_owned(),
                "Catalog events received again (harmless)",
                self.duplicates.load(Relaxed),
            ),
            (
                "catalog_logs_diverged_total".to_owned(),
                "Pulls that ended at the same heads as the peer with another digest",
                self.diverged.load(Relaxed),
            ),
            (
                "catalog_snapshots_installed_total".to_owned(),
                "Snapshots of other sites' logs installed here, in place of events dropped at the peer",
                self.snapshots.load(Relaxed),
            ),
        ];
        for kind in ["malformed", "unknown_origin", "bad_signature", "unauthorized", "gap", "conflicting", "snapshot"] {
            let value = self.refused.lock().get(kind).copied().unwrap_or(0);
            out.push((format!("catalog_events_refused_total{{kind=\"{kind}\"}}"), "Catalog events refused", value));
        }
        out
    }
}

/// What this site knows of its pulls from one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerSync {
    /// when a pull from it last completed, ms since the epoch (this site's clock)
    pub last_ok_ms: Option<u64>,
    /// why the last pull failed, if it did
    pub last_error: Option<String>,
}

/// Keeps the first events of `events` that fit, with room to spare, in one answer.
fn within_frame(events: &mut Vec<SignedEvent>) {
    let mut bytes = 0;
    events.retain(|e| {
        bytes += e.bytes.len() + e.signature.len() + 16;
        bytes < MAX_FRAME / 2
    });
}

/// Opens a connection to a peer that negotiated [`ALPN`] (the daemon's endpoint does).
pub type Dial = Box<
    dyn Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Result<quinn::Connection, String>> + Send>> + Send + Sync,
>;

/// The sync of one site's catalog with its peers.
pub struct CatalogSync {
    catalog: Arc<Catalog<InStore>>,
    federation: Arc<Federation>,
    /// counters for `/metrics`
    pub counters: SyncCounters,
    peers: Mutex<BTreeMap<String, PeerSync>>,
    dial: Dial,
    connections: tokio::sync::Mutex<BTreeMap<String, quinn::Connection>>,
    /// what peers answered of their presence, by (version, site), with when
    presence_cache: Mutex<BTreeMap<(VersionId, String), (u64, Presence)>>,
}

/// Reads one frame of at most `max` bytes, growing the buffer as the bytes come rather
/// than at the announced length.
async fn read_frame<T: for<'de> Deserialize<'de>>(recv: &mut quinn::RecvStream, max: usize) -> Result<T, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| format!("reading a frame length: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(format!("a frame of {len} bytes, at most {max}"));
    }
    let mut body = Vec::new();
    while body.len() < len {
        let want = (len - body.len()).min(64 << 10);
        match recv.read_chunk(want, true).await.map_err(|e| format!("reading a frame: {e}"))? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => return Err(format!("the stream ended {} bytes into a frame of {len}", body.len())),
        }
    }
    postcard::from_bytes(&body).map_err(|e| format!("a frame that does not decode: {e}"))
}

async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<(), String> {
    let body = postcard::to_allocvec(value).map_err(|e| e.to_string())?;
    send.write_all(&(body.len() as u32).to_le_bytes()).await.map_err(|e| e.to_string())?;
    send.write_all(&body).await.map_err(|e| e.to_string())
}

impl CatalogSync {
    /// The sync of `catalog` with the sites of `federation` (whose keys events are checked
    /// against), reaching them with `dial`.
    pub fn new(catalog: Arc<Catalog<InStore>>, federation: Arc<Federation>, dial: Dial) -> Self {
        Self {
            catalog,
            federation,
            counters: SyncCounters::default(),
            peers: Mutex::default(),
            dial,
            connections: tokio::sync::Mutex::default(),
            presence_cache: Mutex::default(),
        }
    }

    /// This site's catalog.
    pub fn catalog(&self) -> &Arc<Catalog<InStore>> {
        &self.catalog
    }

    /// A connection to `peer`, opened now or kept from before.
    async fn connection(&self, peer: &str) -> Result<quinn::Connection, String> {
        let mut connections = self.connections.lock().await;
        if let Some(conn) = connections.get(peer).filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let conn = (self.dial)(peer.to_owned()).await?;
        connections.insert(peer.to_owned(), conn.clone());
        Ok(conn)
    }

    async fn forget(&self, peer: &str) {
        self.connections.lock().await.remove(peer);
    }

    /// What this site knows of its pulls, by peer.
    pub fn peers(&self) -> BTreeMap<String, PeerSync> {
        self.peers.lock().clone()
    }

    /// Answers the requests of one connection a peer opened with [`ALPN`].
    pub async fn serve(self: Arc<Self>, conn: quinn::Connection, peer: String) {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let this = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let request = tokio::time::timeout(ANSWER_WITHIN, read_frame::<Request>(&mut recv, MAX_REQUEST))
                    .await
                    .unwrap_or_else(|_| Err(format!("no request in {} s", ANSWER_WITHIN.as_secs())));
                let answer = match request {
                    Ok(request) => this.answer(request).await,
                    Err(reason) => {
                        tracing::warn!(%peer, %reason, "bad catalog request");
                        Answer::Failed { reason }
                    }
                };
                if write_frame(&mut send, &answer).await.is_ok() {
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            });
        }
    }

    async fn answer(&self, request: Request) -> Answer {
        let catalog = self.catalog.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Answer, CatalogError> {
            Ok(match request {
                Request::Pull { heads, limit } => {
                    let PullAnswer { mut events, snapshots } =
                        catalog.pull_answer(&heads, limit.min(PULL_LIMIT) as usize)?;
                    within_frame(&mut events);
                    let (heads, digest) = catalog.heads_and_digest()?;
                    Answer::Events { events, heads, digest, snapshots }
                }
                Request::Snapshot { origin, checkpoint, after, limit } => {
                    let mut page = catalog.snapshot_page(&origin, checkpoint, after, limit.min(PULL_LIMIT) as usize)?;
                    if let Some(page) = &mut page {
                        let whole = page.events.len();
                        within_frame(&mut page.events);
                        page.done &= page.events.len() == whole;
                    }
                    Answer::Snapshot { page }
                }
                Request::Manifest { version } => {
                    Answer::Manifest { bytes: crate::publish::manifest_bytes(&catalog, &version)? }
                }
                Request::Presence { version, manifest } => {
                    // Only for versions their namespace's home published: counting any
                    // chunk list a peer makes up would tell it whether any chunk of its
                    // choosing is here. (A replica record is no proof: any site writes its
                    // own, for any id.) What is left: a site may publish, in its own
                    // namespace, a version made to probe; each such probe is a signed
                    // event every site keeps.
                    if catalog.published_as(&version)?.is_none() {
                        return Err(CatalogError::NotFound(format!(
                            "version {version} was not published, as far as this site knows"
                        )));
                    }
                    let bytes = match manifest {
                        Some(bytes) => bytes,
                        None => crate::publish::manifest_bytes(&catalog, &version)?.ok_or_else(|| {
                            CatalogError::NotFound(format!("the manifest of {version} is not known here"))
                        })?,
                    };
                    let manifest = Manifest::decode_verified(&bytes, &version)
                        .map_err(|e| CatalogError::Refused(e.to_string()))?;
                    Answer::Presence { presence: presence_of(&catalog, &manifest)? }
                }
            })
        })
        .await;
        match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Answer::Failed { reason: e.to_string() },
            Err(e) => Answer::Failed { reason: format!("task: {e}") },
        }
    }

    async fn ask(conn: &quinn::Connection, request: &Request) -> Result<Answer, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, request).await?;
        let _ = send.finish();
        match read_frame::<Answer>(&mut recv, MAX_FRAME).await? {
            Answer::Failed { reason } => Err(format!("the peer could not answer: {reason}")),
            answer => Ok(answer),
        }
    }

    fn count_refusals(&self, peer: &str, refusals: &[Refusal]) {
        let mut refused = self.counters.refused.lock();
        for refusal in refusals {
            tracing::warn!(%peer, %refusal, "catalog event refused");
            *refused.entry(refusal.kind()).or_default() += 1;
        }
    }

    /// Pulls from `peer` over `conn` until this site holds what the peer held.
    pub async fn pull(&self, conn: &quinn::Connection, peer: &str) -> Result<u64, String> {
        let mut applied = 0;
        loop {
            let heads = self.catalog.heads().map_err(|e| e.to_string())?;
            let Answer::Events { events, heads: theirs, digest, snapshots } =
                Self::ask(conn, &Request::Pull { heads: heads.clone(), limit: PULL_LIMIT }).await?
            else {
                return Err("answered a pull with something else".into());
            };
            let full = events.len() as u32 >= PULL_LIMIT;
            let accepted = self.catalog.accept(&events, &*self.federation).await.map_err(|e| e.to_string())?;
            applied += accepted.applied;
            self.counters.applied.fetch_add(accepted.applied, Relaxed);
            self.counters.duplicates.fetch_add(accepted.duplicates, Relaxed);
            self.count_refusals(peer, &accepted.refused);
            let mut installed = false;
            for (origin, checkpoint) in snapshots {
                if origin == self.catalog.site() || heads.get(&origin).is_some_and(|held| *held >= checkpoint) {
                    continue;
                }
                if let Some(events) = self.load_snapshot(conn, peer, &origin, checkpoint).await? {
                    applied += events;
                    installed = true;
                }
            }
            if (full && accepted.applied > 0) || installed {
                continue;
            }
            let (ours, our_digest) = self.catalog.heads_and_digest().map_err(|e| e.to_string())?;
            if ours == theirs && our_digest != digest {
                self.counters.diverged.fetch_add(1, Relaxed);
                tracing::error!(%peer, "the catalog logs here and at the peer hold as many events but not the same ones");
            }
            return Ok(applied);
        }
    }

    /// Loads the snapshot of `origin`'s log at `checkpoint` from `peer`, page by page, and
    /// installs it if it is the one the checkpoint describes. Returns the events it held,
    /// `None` if the peer no longer serves it.
    async fn load_snapshot(
        &self,
        conn: &quinn::Connection,
        peer: &str,
        origin: &str,
        checkpoint: u64,
    ) -> Result<Option<u64>, String> {
        let catalog = &self.catalog;
        catalog.clear_staged(origin).map_err(|e| e.to_string())?;
        let mut after = 0;
        let checkpoint_event = loop {
            let request = Request::Snapshot { origin: origin.to_owned(), checkpoint, after, limit: PULL_LIMIT };
            let Answer::Snapshot { page } = Self::ask(conn, &request).await? else {
                return Err("answered a snapshot request with something else".into());
            };
            let Some(page) = page else {
                // Compacted again since it answered the pull: the next pull names the new one.
                return Ok(None);
            };
            match catalog.stage_snapshot(origin, checkpoint, after, &page, &*self.federation) {
                Ok(Ok(last)) => after = last,
                Ok(Err(refusal)) => {
                    self.count_refusals(peer, std::slice::from_ref(&refusal));
                    catalog.clear_staged(origin).map_err(|e| e.to_string())?;
                    return Err(refusal.to_string());
                }
                Err(e) => return Err(e.to_string()),
            }
            if page.done {
                break page.checkpoint;
            }
        };
        match catalog.install_snapshot(origin, &checkpoint_event, checkpoint, &*self.federation).await {
            Ok(Ok(events)) => {
                self.counters.snapshots.fetch_add(1, Relaxed);
                tracing::info!(%peer, %origin, checkpoint, events, "installed a snapshot of a catalog log");
                Ok(Some(events))
            }
            Ok(Err(refusal)) => {
                self.count_refusals(peer, std::slice::from_ref(&refusal));
                Err(refusal.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Fetches the manifest of `version` from `peer` and checks it against the id.
    pub async fn fetch_manifest(
        &self,
        conn: &quinn::Connection,
        version: &VersionId,
    ) -> Result<Option<Vec<u8>>, String> {
        match Self::ask(conn, &Request::Manifest { version: *version }).await? {
            Answer::Manifest { bytes: Some(bytes) } => {
                crate::manifest::Manifest::decode_verified(&bytes, version).map_err(|e| e.to_string())?;
                Ok(Some(bytes))
            }
            Answer::Manifest { bytes: None } => Ok(None),
            _ => Err("answered a manifest request with something else".into()),
        }
    }

    /// Pulls from every peer every [`SYNC_INTERVAL`], until the task is dropped.
    pub async fn run(self: Arc<Self>, peers: Vec<String>) {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for peer in &peers {
                let result = match self.connection(peer).await {
                    Ok(conn) => match tokio::time::timeout(ANSWER_WITHIN, self.pull(&conn, peer)).await {
                        Ok(result) => result.map(|_| ()),
                        Err(_) => Err(format!("no answer in {} s", ANSWER_WITHIN.as_secs())),
                    },
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    self.forget(peer).await;
                }
                let mut peers = self.peers.lock();
                let state = peers.entry(peer.clone()).or_default();
                match result {
                    Ok(()) => {
                        state.last_ok_ms = Some(now_ms());
                        state.last_error = None;
                    }
                    Err(e) => state.last_error = Some(e),
                }
            }
        }
    }

    /// The manifest of `version`: this site's, or fetched from a site with a complete
    /// replica (checked against the id).
    async fn manifest_bytes(&self, version: &VersionId) -> Result<Vec<u8>, CatalogError> {
        if let Some(bytes) = crate::publish::manifest_bytes(&self.catalog, version)? {
            return Ok(bytes);
        }
        let mut tried = Vec::new();
        for (site, replica) in self.catalog.replicas(version)? {
            if replica.state != ReplicaState::Complete || site == self.catalog.site() {
                continue;
            }
            let fetched = match self.connection(&site).await {
                Ok(conn) => self.fetch_manifest(&conn, version).await,
                Err(e) => Err(e),
            };
            match fetched {
                Ok(Some(bytes)) => return Ok(bytes),
                Ok(None) => tried.push(format!("{site}: not there")),
                Err(e) => tried.push(format!("{site}: {e}")),
            }
        }
        Err(CatalogError::NotFound(format!(
            "the manifest of {version} is neither here nor at a site with a complete replica ({})",
            if tried.is_empty() { "none known".to_owned() } else { tried.join("; ") }
        )))
    }

    /// For `version` and each of `candidates`: the bytes it already holds at chunk level
    /// (any data it holds counts), the bytes missing, the best source of the rest, and the
    /// staging time estimated from the federation's link table. Remote counts are cached
    /// for [`PRESENCE_CACHE`] and say when they were taken.
    pub async fn placement(
        &self,
        version: &VersionId,
        candidates: &[String],
    ) -> Result<Vec<SitePlacement>, CatalogError> {
        let manifest_bytes = self.manifest_bytes(version).await?;
        let manifest = Manifest::decode_verified(&manifest_bytes, version)
            .map_err(|e| CatalogError::Corrupt { what: format!("manifest of {version}"), reason: e.to_string() })?;
        let sources: Vec<String> = self
            .catalog
            .replicas(version)?
            .into_iter()
            .filter(|(_, r)| r.state == ReplicaState::Complete)
            .map(|(site, _)| site)
            .collect();
        let mut out = Vec::with_capacity(candidates.len());
        for site in candidates {
            let (presence, as_of_ms, error) = if site == self.catalog.site() {
                (Some(presence_of(&self.catalog, &manifest)?), now_ms(), None)
            } else if self.federation.site(site).is_none() {
                (None, now_ms(), Some(format!("{site} is not a site of the federation")))
            } else {
                match self.remote_presence(site, version, &manifest_bytes).await {
                    Ok((at, p)) => (Some(p), at, None),
                    Err(e) => (None, now_ms(), Some(e)),
                }
            };
            let best = presence.map(|p| self.best_source(&sources, site, p.bytes_missing));
            out.push(SitePlacement {
                site: site.clone(),
                bytes_present: presence.map(|p| p.bytes_present),
                bytes_missing: presence.map(|p| p.bytes_missing),
                best_source: best.as_ref().and_then(|b| b.source.clone()),
                estimated_secs: best.as_ref().map(|b| b.secs),
                measured_bytes_per_sec: best.as_ref().and_then(|b| b.measured),
                as_of_ms,
                error,
            });
        }
        Ok(out)
    }

    /// Keeps `presence` as what `site` answered about `version` at `at_ms` (this site's
    /// clock), as [`Self::placement`] keeps a peer's answer: reused until
    /// [`PRESENCE_CACHE`] has passed since `at_ms`. Lets a benchmark or a test run
    /// placement with every remote answer cached, without peers.
    pub fn cache_presence(&self, version: VersionId, site: &str, at_ms: u64, presence: Presence) {
        self.presence_cache.lock().insert((version, site.to_owned()), (at_ms, presence));
    }

    async fn remote_presence(
        &self,
        site: &str,
        version: &VersionId,
        manifest: &[u8],
    ) -> Result<(u64, Presence), String> {
        if let Some((at, p)) = self.presence_cache.lock().get(&(*version, site.to_owned()))
            && now_ms().saturating_sub(*at) < PRESENCE_CACHE.as_millis() as u64
        {
            return Ok((*at, *p));
        }
        let conn = self.connection(site).await?;
        let request = Request::Presence { version: *version, manifest: Some(manifest.to_vec()) };
        let answer = tokio::time::timeout(ANSWER_WITHIN, Self::ask(&conn, &request))
            .await
            .map_err(|_| format!("{site} did not answer in {} s", ANSWER_WITHIN.as_secs()))?;
        match answer {
            Ok(Answer::Presence { presence }) => {
                let at = now_ms();
                self.cache_presence(*version, site, at, presence);
                Ok((at, presence))
            }
            Ok(_) => Err(format!("{site} answered with something else")),
            Err(e) => {
                self.forget(site).await;
                Err(e)
            }
        }
    }

    /// The site with a complete replica the rest comes fastest from, and the estimated
    /// seconds (none needed when nothing is missing): at the rate transfers measured from
    /// it to `to` where this site has measured one, else from the federation's link table.
    fn best_source(&self, sources: &[String], to: &str, missing: u64) -> BestSource {
        if missing == 0 {
            return BestSource { source: None, secs: 0.0, measured: None };
        }
        let estimate = |from: &str| {
            let link = self.federation.link(from, to);
            let measured = self.catalog.storage().0.link_rate(from, to).ok().flatten().map(|r| r.bytes_per_sec);
            let bytes_per_sec = measured.unwrap_or(link.bandwidth_mbps.max(1) as f64 * 1e6 / 8.0);
            let secs = missing as f64 / bytes_per_sec.max(1.0) + link.rtt_ms / 1000.0;
            BestSource { source: Some(from.to_owned()), secs, measured }
        };
        sources
            .iter()
            .filter(|s| *s != to)
            .map(|s| estimate(s))
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap_or(BestSource { source: None, secs: f64::INFINITY, measured: None })
    }
}

/// Where the missing bytes of a placement would come from.
struct BestSource {
    source: Option<String>,
    secs: f64,
    /// the measured rate the estimate used, if it used one
    measured: Option<f64>,
}

/// [`CatalogSync::placement`] for a site that is not federated: itself is the only
/// candidate it can count.
pub fn placement_here(
    catalog: &Catalog<InStore>,
    version: &VersionId,
    candidates: &[String],
) -> Result<Vec<SitePlacement>, CatalogError> {
    let manifest = crate::publish::manifest(catalog, version)?
        .ok_or_else(|| CatalogError::NotFound(format!("the manifest of {version} is not here")))?;
    let here = presence_of(catalog, &manifest)?;
    Ok(candidates
        .iter()
        .map(|site| {
            let mine = site == catalog.site();
            SitePlacement {
                site: site.clone(),
                bytes_present: mine.then_some(here.bytes_present),
                bytes_missing: mine.then_some(here.bytes_missing),
                best_source: None,
                estimated_secs: (mine && here.bytes_missing == 0).then_some(0.0),
                measured_bytes_per_sec: None,
                as_of_ms: now_ms(),
                error: (!mine).then(|| "this site is not federated: it can count only itself".to_owned()),
            }
        })
        .collect())
}

/// How long a peer's answer about what it holds is reused.
pub const PRESENCE_CACHE: Duration = Duration::from_secs(10);

/// How long a peer has to answer one request.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What this store holds of `manifest`'s chunks.
fn presence_of(catalog: &Catalog<InStore>, manifest: &Manifest) -> Result<Presence, CatalogError> {
    let chunks: Vec<store::ChunkRef> = manifest
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|(id, len)| store::ChunkRef { id: *id, len: *len }))
        .collect();
    catalog.storage().0.presence(&chunks).map_err(|e| CatalogError::Data(e.to_string()))
}

/// One candidate site of a placement query.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SitePlacement {
    /// the site
    pub site: String,
    /// bytes of the version's distinct chunks it holds already (for any data)
    pub bytes_present: Option<u64>,
    /// bytes it lacks: what staging the version there moves
    pub bytes_missing: Option<u64>,
    /// the site with a complete replica the rest would come from fastest
    pub best_source: Option<String>,
    /// seconds to stage the rest there: at the rate measured from the best source where
    /// transfers measured one, else from the federation's link table
    pub estimated_secs: Option<f64>,
    /// the measured rate (wire bytes per second, averaged over recent transfers) the
    /// estimate used; none when it came from the link table
    pub measured_bytes_per_sec: Option<f64>,
    /// when the counts were taken (ms since the epoch, this site's clock)
    pub as_of_ms: u64,
    /// why the site could not be asked
    pub error: Option<String>,
}
