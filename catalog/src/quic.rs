//! The catalog's sync over QUIC: a thin driver around the logic of [`crate::catalog`].
//!
//! Under its own ALPN on the federation's endpoint (same mutual TLS, so a peer is a site
//! of the federation before any byte is read), a site opens a bidirectional stream per
//! request: `Pull` with the heads it holds, answered with the events past them (its own
//! and relayed ones) and the peer's heads and digest; `Manifest` with a version id,
//! answered with the manifest's bytes if the peer has them (the asker checks them against
//! the id). Frames are a u32 little-endian length and a postcard body, bounded.
//!
//! Every [`SYNC_INTERVAL`], each site pulls from every other until it has what they had:
//! an event reaches all sites in about one interval per relay hop, and a site that was
//! cut off or is new catches up the same way, with no manual step. When a pull leaves
//! both sides at the same heads but with different digests, the logs diverged (a site
//! signed two histories); that is logged and counted.

use crate::catalog::{Catalog, CatalogError, Heads};
use crate::event::{SignedEvent, SiteKeys};
use crate::in_store::InStore;
use crate::manifest::VersionId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The catalog sync protocol's ALPN.
pub const ALPN: &[u8] = b"clusster-catalog/1";

/// How often a site pulls from each peer.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Events asked for per pull.
const PULL_LIMIT: u32 = 1024;

/// Largest frame read, either way.
const MAX_FRAME: usize = 32 << 20;

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
    /// a version's manifest
    Manifest {
        /// which
        version: VersionId,
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
    },
    /// a manifest's canonical bytes, if held
    Manifest {
        /// the bytes
        bytes: Option<Vec<u8>>,
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
        ];
        for kind in ["malformed", "unknown_origin", "bad_signature", "unauthorized", "gap", "conflicting"] {
            let value = self.refused.lock().get(kind).copied().unwrap_or(0);
            out.push((format!("catalog_events_refused_total{{kind=\"{kind}\"}}"), "Catalog events refused", value));
        }
        out
    }
}

/// What this site knows of its pulls from one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerSync {
    /// when a pull from it last completed, ms since the epoch (this site's clock)
    pub last_ok_ms: Option<u64>,
    /// why the last pull failed, if it did
    pub last_error: Option<String>,
}

/// A way to open a connection to a peer for the catalog protocol (the daemon's endpoint).
pub trait Dialer: Send + Sync + 'static {
    /// A connection to `peer` that negotiated [`ALPN`].
    fn dial(&self, peer: &str) -> impl Future<Output = Result<quinn::Connection, String>> + Send;
}

/// The sync of one site's catalog with its peers.
pub struct CatalogSync {
    catalog: Arc<Catalog<InStore>>,
    keys: Arc<dyn SiteKeys + Send + Sync>,
    /// counters for `/metrics`
    pub counters: SyncCounters,
    peers: Mutex<BTreeMap<String, PeerSync>>,
}

async fn read_frame<T: for<'de> Deserialize<'de>>(recv: &mut quinn::RecvStream) -> Result<T, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| format!("reading a frame length: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes, at most {MAX_FRAME}"));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| format!("reading a frame: {e}"))?;
    postcard::from_bytes(&body).map_err(|e| format!("a frame that does not decode: {e}"))
}

async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<(), String> {
    let body = postcard::to_allocvec(value).map_err(|e| e.to_string())?;
    send.write_all(&(body.len() as u32).to_le_bytes()).await.map_err(|e| e.to_string())?;
    send.write_all(&body).await.map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl CatalogSync {
    /// The sync of `catalog`, checking events against `keys`.
    pub fn new(catalog: Arc<Catalog<InStore>>, keys: Arc<dyn SiteKeys + Send + Sync>) -> Self {
        Self { catalog, keys, counters: SyncCounters::default(), peers: Mutex::default() }
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
                let answer = match read_frame::<Request>(&mut recv).await {
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
                    let mut events = catalog.events_after(&heads, limit.min(PULL_LIMIT) as usize)?;
                    // Bounded in bytes too, whatever the events' sizes.
                    let mut bytes = 0;
                    events.retain(|e| {
                        bytes += e.bytes.len() + e.signature.len() + 16;
                        bytes < MAX_FRAME / 2
                    });
                    Answer::Events { events, heads: catalog.heads()?, digest: catalog.digest()? }
                }
                Request::Manifest { version } => {
                    Answer::Manifest { bytes: crate::publish::manifest_bytes(&catalog, &version)? }
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
        match read_frame::<Answer>(&mut recv).await? {
            Answer::Failed { reason } => Err(format!("the peer could not answer: {reason}")),
            answer => Ok(answer),
        }
    }

    /// Pulls from `peer` over `conn` until this site holds what the peer held.
    pub async fn pull(&self, conn: &quinn::Connection, peer: &str) -> Result<u64, String> {
        let mut applied = 0;
        loop {
            let heads = self.catalog.heads().map_err(|e| e.to_string())?;
            let Answer::Events { events, heads: theirs, digest } =
                Self::ask(conn, &Request::Pull { heads: heads.clone(), limit: PULL_LIMIT }).await?
            else {
                return Err("answered a pull with something else".into());
            };
            let full = events.len() as u32 >= PULL_LIMIT;
            let accepted = self.catalog.accept(&events, &*self.keys).await.map_err(|e| e.to_string())?;
            applied += accepted.applied;
            self.counters.applied.fetch_add(accepted.applied, Relaxed);
            self.counters.duplicates.fetch_add(accepted.duplicates, Relaxed);
            if !accepted.refused.is_empty() {
                let mut refused = self.counters.refused.lock();
                for refusal in &accepted.refused {
                    tracing::warn!(%peer, %refusal, "catalog event refused");
                    *refused.entry(refusal.kind()).or_default() += 1;
                }
            }
            if full && accepted.applied > 0 {
                continue;
            }
            let ours = self.catalog.heads().map_err(|e| e.to_string())?;
            if ours == theirs && self.catalog.digest().map_err(|e| e.to_string())? != digest {
                self.counters.diverged.fetch_add(1, Relaxed);
                tracing::error!(%peer, "the catalog logs here and at the peer hold as many events but not the same ones");
            }
            return Ok(applied);
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
    pub async fn run(self: Arc<Self>, dialer: impl Dialer, peers: Vec<String>) {
        let mut connections: BTreeMap<String, quinn::Connection> = BTreeMap::new();
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for peer in &peers {
                let conn = match connections.get(peer).filter(|c| c.close_reason().is_none()) {
                    Some(conn) => conn.clone(),
                    None => match dialer.dial(peer).await {
                        Ok(conn) => {
                            connections.insert(peer.clone(), conn.clone());
                            conn
                        }
                        Err(e) => {
                            self.peers.lock().entry(peer.clone()).or_default().last_error = Some(e);
                            continue;
                        }
                    },
                };
                let result = tokio::time::timeout(Duration::from_secs(30), self.pull(&conn, peer)).await;
                let mut peers = self.peers.lock();
                let state = peers.entry(peer.clone()).or_default();
                match result {
                    Ok(Ok(_)) => {
                        state.last_ok_ms = Some(now_ms());
                        state.last_error = None;
                    }
                    Ok(Err(e)) => {
                        state.last_error = Some(e);
                        connections.remove(peer);
                    }
                    Err(_) => {
                        state.last_error = Some("no answer in 30 s".into());
                        connections.remove(peer);
                    }
                }
            }
        }
    }
}
