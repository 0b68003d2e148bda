//! Job stage-in and stage-out: what a compute node's `clusster stage-in` and
//! `clusster stage-out` exchange with the site daemon (the routes are in `http::stage`,
//! under `/catalog/stage/`, with a `stage`-scoped token).
//!
//! Stage-in: `POST /catalog/stage/in` resolves the version, pins it for the job, and makes
//! the site's replica complete (fetching what is missing from the best replica the
//! placement names) before it answers with the files; each file is then read from
//! `GET /catalog/stage/versions/{version}/files/{path}` (ranges allowed, to resume). The
//! client checks every chunk's BLAKE3 against the manifest: the daemon's word is not
//! taken for the bytes.
//!
//! Stage-out: `POST /catalog/stage/out` opens a session for a dataset and says how the
//! site cuts chunks; the client cuts and hashes its files itself, asks
//! `…/{session}/missing` which chunks the site lacks, sends only those to
//! `…/{session}/chunks` (each checked against its id on arrival), and
//! `…/{session}/publish` makes the files a version, in one write with the chunks' hold.
//! A chunk counts as present only if the token's project may read it here already (an
//! object of its buckets, or a version of the dataset's namespace): the answer never
//! tells a project what another one stores.

use crate::manifest::{FileEntry, VersionId};
use hw_offload::{ChunkId, ChunkerConfig};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most chunk ids one `missing` request may ask about.
pub const MAX_ASKED: usize = 65_536;

/// Largest body of one `chunks` request.
pub const MAX_CHUNKS_BODY: usize = 64 << 20;
/// Chunks of a body hashed and compressed at once on the offload engine while the next
/// are read: enough to keep its threads busy.
const CHUNKS_HASHED_AT_ONCE: usize = 16;

/// A stage-out session with no request for this long is dropped, and what it sent with it.
pub const SESSION_IDLE_SECS: u64 = 600;

/// Stage-out sessions one project may have open at once: each holds memory and chunks
/// until it ends or goes idle.
pub const MAX_SESSIONS_PER_PROJECT: usize = 16;

/// Chunk ids one stage-out session may name, asked about and sent (an honest client
/// names each distinct chunk at most twice): what the session remembers stays bounded.
/// At the default 32 KiB chunks, a tree of 128 GiB or more.
pub const MAX_SESSION_CHUNKS: u64 = 1 << 23;

/// `POST /catalog/stage/in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageInRequest {
    /// `NS/NAME@TAG` or `NS/NAME@VERSION-ID`
    pub version: String,
    /// the job the version is pinned for
    pub job: String,
    /// how long the pin holds, seconds: 1 to 366 days' worth
    pub pin_secs: u64,
    /// how long to wait for the replica here to become complete before answering
    /// `fetching` (the client asks again)
    #[serde(default)]
    pub wait_secs: u64,
}

/// Where the site's replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageInState {
    /// complete here: the files can be read
    Ready,
    /// being fetched from another site: ask again
    Fetching,
}

/// What `POST /catalog/stage/in` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageInAnswer {
    /// the version
    pub version: VersionId,
    /// where the replica here stands
    pub state: StageInState,
    /// the pin's id (unpinned by stage-out, or when it lapses)
    pub pin: String,
    /// bytes of the version this site still lacks
    pub bytes_missing: u64,
    /// the site the missing bytes come from, while fetching
    pub source: Option<String>,
    /// the files, when ready
    pub files: Vec<StagedFile>,
}

/// A file of a version, as staging moves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StagedFile {
    /// path relative to the dataset's root, `/`-separated
    pub path: String,
    /// bytes
    pub size: u64,
    /// modification time, ms since the epoch
    pub mtime_ms: u64,
    /// the S3 ETag (MD5 of the bytes for a file staged out), without quotes
    pub etag: String,
    /// chunks in order: BLAKE3 id (hex) and length
    pub chunks: Vec<StagedChunk>,
}

/// One chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StagedChunk {
    /// BLAKE3 of its bytes, hex
    #[schema(value_type = String)]
    #[serde(with = "hex_id")]
    pub id: ChunkId,
    /// its length
    pub len: u32,
}

impl From<&FileEntry> for StagedFile {
    fn from(f: &FileEntry) -> Self {
        StagedFile {
            path: f.path.clone(),
            size: f.size,
            mtime_ms: f.mtime_ms,
            etag: f.etag.clone(),
            chunks: f.chunks.iter().map(|(id, len)| StagedChunk { id: *id, len: *len }).collect(),
        }
    }
}

impl From<StagedFile> for FileEntry {
    fn from(f: StagedFile) -> Self {
        FileEntry {
            path: f.path,
            size: f.size,
            mtime_ms: f.mtime_ms,
            etag: f.etag,
            checksums: Vec::new(),
            chunks: f.chunks.into_iter().map(|c| (c.id, c.len)).collect(),
        }
    }
}

/// `POST /catalog/stage/out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageOutRequest {
    /// `NS/NAME`: the dataset the files become a version of
    pub dataset: String,
}

/// A stage-out session, and how this site cuts chunks (the client cuts the same way, so
/// that what the site holds already is found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageOutSession {
    /// its id, for the session's other routes
    pub session: String,
    /// FastCDC's smallest chunk, bytes
    pub chunk_min: u32,
    /// FastCDC's average chunk, bytes
    pub chunk_avg: u32,
    /// FastCDC's largest chunk, bytes
    pub chunk_max: u32,
}

/// `POST /catalog/stage/out/{session}/missing`, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkList {
    /// chunk ids (BLAKE3, hex), at most [`MAX_ASKED`]
    #[schema(value_type = Vec<String>)]
    #[serde(with = "hex_ids")]
    pub chunks: Vec<ChunkId>,
}

/// What `POST /catalog/stage/out/{session}/chunks` stored. Its body is a sequence of
/// records, each a 32-byte chunk id, a u32 big-endian length, then that many bytes; at
/// most [`MAX_CHUNKS_BODY`] bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChunksStored {
    /// chunks received
    pub chunks: u64,
    /// their bytes
    pub bytes: u64,
}

/// `POST /catalog/stage/out/{session}/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageOutPublish {
    /// the files, in any order
    pub files: Vec<StagedFile>,
    /// a tag to move to the version
    #[serde(default)]
    pub tag: Option<String>,
    /// a rule for the version: `N copies on SITES-EXPRESSION`, as in `2 copies on tier=hpc`
    #[serde(default)]
    pub rule: Option<String>,
    /// the job whose pins (its inputs') end now
    #[serde(default)]
    pub job: Option<String>,
}

/// What a stage-out published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageOutPublished {
    /// the version
    pub version: VersionId,
    /// files
    pub files: u64,
    /// bytes of the files
    pub bytes: u64,
    /// false when the same files were published before
    pub new: bool,
    /// the rule's id, when one was asked for
    pub rule: Option<String>,
    /// pins of the job's removed
    pub unpinned: u64,
}

/// A chunk id as 64 hex digits in JSON.
mod hex_id {
    use hw_offload::ChunkId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ChunkId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(id.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChunkId, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<ChunkId, String> {
        let bytes = hex::decode(text).map_err(|_| format!("chunk id {text:?}: 64 hex digits"))?;
        bytes.try_into().map(ChunkId).map_err(|_| format!("chunk id {text:?}: 64 hex digits"))
    }
}

/// Chunk ids as hex strings in JSON.
mod hex_ids {
    use hw_offload::ChunkId;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ids: &[ChunkId], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&hex::encode(id.0))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkId>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| super::hex_id::parse(t).map_err(serde::de::Error::custom)).collect()
    }
}

/// Parses `N copies on EXPRESSION` (or `N copy on …`).
pub fn parse_rule(text: &str) -> Result<(u32, String), String> {
    let bad = || format!("rule {text:?}: write it as \"N copies on SITES\", as in \"2 copies on tier=hpc\"");
    let (count, rest) = text.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
    let copies: u32 = count.parse().map_err(|_| bad())?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("copies").or_else(|| rest.strip_prefix("copy")).ok_or_else(bad)?;
    let sites = rest.trim_start().strip_prefix("on").ok_or_else(bad)?.trim();
    if copies == 0 || sites.is_empty() {
        return Err(bad());
    }
    crate::sites_expr::SitesExpr::parse(sites).map_err(|e| format!("rule {text:?}: {e}"))?;
    Ok((copies, sites.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records come out the same however the body is cut into frames, slices of the
    /// frames where they are whole in one; a bad length is refused wherever it falls.
    #[test]
    fn records_come_out_whole_however_the_body_is_framed() {
        let chunks: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 40 * i as usize]).collect();
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(&ChunkId::of(c).0);
            body.extend_from_slice(&(c.len() as u32).to_be_bytes());
            body.extend_from_slice(c);
        }
        for frame_len in [1, 7, 35, 36, 37, 76, 100, 1000, body.len()] {
            let mut reader = RecordReader { partial: BytesMut::new(), max_chunk: 200 };
            let mut got = Vec::new();
            for frame in body.chunks(frame_len) {
                let mut frame = Bytes::copy_from_slice(frame);
                while let Some((id, bytes)) = reader.next(&mut frame).unwrap() {
                    got.push((id, bytes.to_vec()));
                }
                assert!(frame.is_empty(), "{frame_len}: a frame used up");
            }
            assert!(reader.partial.is_empty(), "{frame_len}");
            let want: Vec<_> = chunks.iter().map(|c| (ChunkId::of(c), c.clone())).collect();
            assert_eq!(got, want, "{frame_len}");
        }
        let too_long = [&[0u8; 32][..], &201u32.to_be_bytes()].concat();
        for frame_len in [1, 36] {
            let mut reader = RecordReader { partial: BytesMut::new(), max_chunk: 200 };
            let refused = too_long.chunks(frame_len).find_map(|frame| {
                let mut frame = Bytes::copy_from_slice(frame);
                reader.next(&mut frame).err()
            });
            assert!(refused.expect("refused").to_string().contains("201 bytes"), "{frame_len}");
        }
    }

    #[test]
    fn rules_read_as_written() {
        assert_eq!(parse_rule("2 copies on tier=hpc"), Ok((2, "tier=hpc".into())));
        assert_eq!(parse_rule(" 1 copy on site in (a, b) "), Ok((1, "site in (a, b)".into())));
        for bad in ["", "two copies on *", "0 copies on *", "2 copies", "2 copies on", "2 on *", "2 copies on ("] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
    }
}

// ---------------------------------------------------------------- the daemon's side

use crate::catalog::{Catalog, CatalogError};
use crate::event::{EventBody, ReplicaState, Rule, RuleTarget, check_name, check_namespace, home_of};
use crate::in_store::{InStore, writes};
use crate::manifest::Manifest;
use crate::quic::CatalogSync;
use crate::rules::{CopyState, Replicator};
use crate::storage::{Op, Table};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::ChunkRef;
use store::StoreError;
use store::transfer::TransferPin;

/// Why staging failed, as the routes answer it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// the catalog refused or failed
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// the data could not be brought here from another site
    #[error("{0}")]
    TransferFailed(String),
    /// this site's disk is full
    #[error("{0}")]
    NoSpace(String),
    /// a limit on what one project or session may hold here was reached
    #[error("{0}")]
    TooMany(String),
    /// the request does not fit the session's state
    #[error("{0}")]
    Conflict(String),
}

impl From<StoreError> for StageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => StageError::NoSpace(e.to_string()),
            StoreError::DigestMismatch { .. } => StageError::Catalog(CatalogError::Refused(e.to_string())),
            e => StageError::Catalog(CatalogError::Data(e.to_string())),
        }
    }
}

/// A copy of a version this site started for a stage-in.
#[derive(Debug, Clone)]
struct Fetch {
    transfer: String,
    source: String,
    /// copies of this version that failed before this one
    failed: u32,
}

/// Copies of one version a stage-in starts again after a failure (a chunk found corrupt
/// here while the copy ran makes its landing fail: the next copy brings it).
const FETCH_ATTEMPTS: u32 = 4;

/// One stage-out: the chunks it brought are held by a transfer of the store until the
/// publish lands them as a version (or the session ends and they are let go).
/// A stage-out session. Its `missing` and `chunks` requests run at once (a client sends
/// several bodies in parallel) under the session's read lock; publish, abort and the idle
/// sweep take its write lock, so they wait for the bodies in flight and none starts after.
struct Session {
    project: String,
    ns: String,
    name: String,
    transfer: store::transfer::TransferId,
    /// what the concurrent requests change, each briefly
    state: parking_lot::Mutex<SessionState>,
    /// published or aborted: a request that waited for the lock meanwhile finds it gone
    ended: bool,
}

struct SessionState {
    /// keeps the chunks found present from GC until the publish
    pin: TransferPin,
    /// chunks the files may name: sent in this session, or found present and readable
    /// by the project
    allowed: HashSet<hw_offload::ChunkId>,
    /// the chunks the project may read here through the dataset's namespace's versions
    readable: Option<Arc<HashSet<hw_offload::ChunkId>>>,
    /// chunk ids named so far, asked about and sent: at most [`MAX_SESSION_CHUNKS`]
    named: u64,
    last_used: Instant,
}

impl SessionState {
    /// Counts `more` chunk ids named, unless that goes past [`MAX_SESSION_CHUNKS`].
    fn name_chunks(&mut self, more: u64) -> Result<(), StageError> {
        if self.named + more > MAX_SESSION_CHUNKS {
            return Err(StageError::TooMany(format!(
                "this stage-out session has named {} chunks, and may name {MAX_SESSION_CHUNKS} in all: \
                 stage the tree out as several datasets, or in a new session",
                self.named
            )));
        }
        self.named += more;
        Ok(())
    }
}

type SessionLock = Arc<tokio::sync::RwLock<Session>>;

/// Staging for jobs at this site: stage-in's fetches and stage-out's sessions.
pub struct Stager {
    catalog: Arc<Catalog<InStore>>,
    /// How stage-out clients cut files (see [`stage_chunker`]).
    chunker: ChunkerConfig,
    sync: Option<Arc<CatalogSync>>,
    replicator: Option<Arc<dyn Replicator>>,
    fetching: parking_lot::Mutex<HashMap<VersionId, Fetch>>,
    /// held while a fetch of the version is looked at or started, until it is complete here
    fetch_gates: parking_lot::Mutex<HashMap<VersionId, Arc<tokio::sync::Mutex<()>>>>,
    /// by id, with the project that owns each
    sessions: parking_lot::Mutex<HashMap<String, (String, SessionLock)>>,
}

/// The chunks stage-out clients cut, from their average size: a quarter of it at least,
/// four times at most (the store's own proportions).
///
/// Job outputs are often staged out again with small changes, and a change costs the
/// chunks it touches: with the store's 64 KiB average, a tree with 1 % of every file
/// changed in four places sends 3.9 % of its bytes; at 32 KiB, about 2 %. The price is
/// twice the chunk records per byte for staged data, and no dedup between staged files
/// and the same bytes uploaded through S3 (cut at other points).
pub fn stage_chunker(avg_bytes: u32) -> Result<ChunkerConfig, String> {
    let config = ChunkerConfig { min_bytes: avg_bytes / 4, avg_bytes, max_bytes: avg_bytes.saturating_mul(4) };
    config.validate().map_err(|e| e.to_string())?;
    // Clients cut 2 MiB segments as the store's ingest does: a chunk may not be longer.
    if config.max_bytes > STAGE_CHUNK_MAX_BYTES {
        return Err(format!(
            "chunks of up to {} bytes: at most {} for staging (an average of {} or less)",
            config.max_bytes,
            STAGE_CHUNK_MAX_BYTES,
            STAGE_CHUNK_MAX_BYTES / 4
        ));
    }
    Ok(config)
}

/// The longest chunk a stage-out client may be asked to cut: its segment.
const STAGE_CHUNK_MAX_BYTES: u32 = 2 << 20;

/// The average chunk size stage-out clients are asked to cut at, by default.
pub const STAGE_CHUNK_AVG_BYTES: u32 = 32 << 10;

impl Stager {
    /// Staging over `catalog`, fetching from other sites through `replicator` (none: a
    /// site on its own, whose replicas are its own).
    pub fn new(
        catalog: Arc<Catalog<InStore>>,
        sync: Option<Arc<CatalogSync>>,
        replicator: Option<Arc<dyn Replicator>>,
        chunker: ChunkerConfig,
    ) -> Self {
        Self {
            catalog,
            chunker,
            sync,
            replicator,
            fetching: parking_lot::Mutex::default(),
            fetch_gates: parking_lot::Mutex::default(),
            sessions: parking_lot::Mutex::default(),
        }
    }

    fn store(&self) -> &Arc<store::Store> {
        &self.catalog.storage().0
    }

    // ------------------------------------------------------------ stage-in

    /// Pins `version` for `job` and makes this site's replica complete, waiting up to
    /// `wait`; answers with the files once it is.
    pub async fn stage_in(
        &self,
        version: VersionId,
        job: &str,
        pin_until_ms: u64,
        wait: Duration,
    ) -> Result<StageInAnswer, StageError> {
        let now = crate::now_ms();
        let pin = crate::keeping::pin_id(job, &version);
        // Pinned again only when the pin would lapse sooner than asked (a client asking
        // again while a fetch runs does not write an event each time).
        let pinned = crate::keeping::pins_on(&self.catalog, &version, self.catalog.site(), now)?
            .iter()
            .any(|p| p.id == pin && p.record.until_ms + 60_000 >= pin_until_ms);
        if !pinned {
            crate::keeping::pin(&self.catalog, &version, job, pin_until_ms, now).await?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let (state, bytes_missing) = self.replica_here(&version)?;
            if state == Some(ReplicaState::Complete) && self.store().version_chunks(&version.0)?.is_some() {
                self.fetching.lock().remove(&version);
                // Unless a stage-in is still at the gate: it would start a second one.
                let mut gates = self.fetch_gates.lock();
                if gates.get(&version).is_some_and(|gate| Arc::strong_count(gate) == 1) {
                    gates.remove(&version);
                }
                let manifest = crate::publish::manifest(&self.catalog, &version)?.ok_or_else(|| {
                    CatalogError::Data(format!("the replica of {version} here is complete but its manifest is not"))
                })?;
                let files = manifest.files.iter().map(StagedFile::from).collect();
                return Ok(StageInAnswer {
                    version,
                    state: StageInState::Ready,
                    pin,
                    bytes_missing: 0,
                    source: None,
                    files,
                });
            }
            let fetch = self.fetch(&version, deadline).await?;
            if Instant::now() >= deadline {
                return Ok(StageInAnswer {
                    version,
                    state: StageInState::Fetching,
                    pin,
                    bytes_missing,
                    source: fetch.map(|f| f.source),
                    files: Vec::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// This site's replica of `version`: its state, and the bytes it lacks.
    fn replica_here(&self, version: &VersionId) -> Result<(Option<ReplicaState>, u64), CatalogError> {
        let total = self.catalog.version_record(version)?.map_or(0, |r| r.bytes);
        let here = self.catalog.replicas(version)?.into_iter().find(|(site, _)| site == self.catalog.site());
        Ok(match here {
            Some((_, r)) => (Some(r.state), total.saturating_sub(r.bytes_held)),
            None => (None, total),
        })
    }

    /// The copy bringing `version` here: the one running, or one started now from the
    /// best complete replica the placement names. A copy that failed is an error, once.
    /// `None`: another stage-in was starting it until `deadline`.
    async fn fetch(&self, version: &VersionId, deadline: Instant) -> Result<Option<Fetch>, StageError> {
        // One at a time per version: two stage-ins of it finding no copy running would
        // each start one.
        let gate = self.fetch_gates.lock().entry(*version).or_default().clone();
        let Ok(_alone) = tokio::time::timeout_at(deadline.into(), gate.lock()).await else {
            // Another stage-in is starting it: asked again, this one finds it running.
            return Ok(None);
        };
        let running = self.fetching.lock().get(version).cloned();
        let replicator = self.replicator.as_ref().ok_or_else(|| {
            StageError::TransferFailed(format!(
                "version {version} is not complete here, and this site is not federated: nothing to fetch it from"
            ))
        })?;
        let mut failed = 0;
        if let Some(fetch) = running {
            match replicator.state(&fetch.transfer) {
                Some(CopyState::Failed(reason)) => {
                    self.fetching.lock().remove(version);
                    failed = fetch.failed + 1;
                    tracing::warn!(%version, source = %fetch.source, %reason, failed, "stage-in: a fetch failed");
                    if failed >= FETCH_ATTEMPTS {
                        return Err(StageError::TransferFailed(format!(
                            "fetching {version} from {} failed {failed} times, the last: {reason}",
                            fetch.source
                        )));
                    }
                }
                // Running, or done (the replica's record follows its landing in the same
                // write) but the replica is not complete: a chunk went missing since.
                Some(CopyState::Running) => return Ok(Some(fetch)),
                Some(CopyState::Done) | None => {
                    self.fetching.lock().remove(version);
                    failed = fetch.failed;
                }
            }
        }
        let sync = self.sync.as_ref().ok_or_else(|| StageError::TransferFailed("this site does not sync".into()))?;
        let here = self.catalog.site().to_owned();
        let placement = sync.placement(version, std::slice::from_ref(&here)).await?;
        let source = placement.into_iter().find_map(|p| p.best_source).ok_or_else(|| {
            StageError::TransferFailed(format!("no site holds a complete replica of {version} to fetch it from"))
        })?;
        let transfer = replicator.copy(version, &source, &here).await.map_err(|e| {
            StageError::TransferFailed(format!("could not start fetching {version} from {source}: {e}"))
        })?;
        tracing::info!(%version, %source, %transfer, "stage-in: fetching what is missing here");
        let fetch = Fetch { transfer, source, failed };
        self.fetching.lock().insert(*version, fetch.clone());
        Ok(Some(fetch))
    }

    /// The bytes of `path` in `version` from `offset` on, read from this site's chunks
    /// (each verified by the store as it is read). The caller checks the token may read
    /// the version.
    pub fn read_file(
        &self,
        version: &VersionId,
        path: &str,
        offset: u64,
    ) -> Result<(u64, impl Stream<Item = Result<Bytes, StoreError>> + use<>), StageError> {
        let manifest = crate::publish::manifest(&self.catalog, version)?
            .ok_or_else(|| CatalogError::NotFound(format!("version {version} has no replica here")))?;
        let file = manifest
            .files
            .binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes()))
            .map(|i| manifest.files[i].clone())
            .map_err(|_| CatalogError::NotFound(format!("no file {path:?} in version {version}")))?;
        if offset > file.size {
            return Err(StageError::Conflict(format!(
                "offset {offset} is past the end of {path} ({} bytes)",
                file.size
            )));
        }
        // The chunks from the one holding `offset`, and where in it to start.
        let mut start = 0u64;
        let mut skip = 0usize;
        let mut chunks = Vec::new();
        for (id, len) in &file.chunks {
            let end = start + *len as u64;
            if end > offset {
                if chunks.is_empty() {
                    skip = (offset - start) as usize;
                }
                chunks.push(ChunkRef { id: *id, len: *len });
            }
            start = end;
        }
        Ok((file.size - offset, self.store().read_chunks(chunks, skip)))
    }

    // ------------------------------------------------------------ stage-out

    /// Opens a stage-out session of `project` for `ns/name`.
    pub async fn open(&self, project: &str, ns: &str, name: &str) -> Result<StageOutSession, StageError> {
        check_namespace(ns).map_err(CatalogError::Refused)?;
        check_name("dataset", name).map_err(CatalogError::Refused)?;
        if home_of(ns) != Some(self.catalog.site()) {
            return Err(CatalogError::Refused(format!(
                "namespace {ns} is at home at site {}: stage out there (a namespace of this site is named {}.something)",
                home_of(ns).unwrap_or("?"),
                self.catalog.site()
            ))
            .into());
        }
        if let Some(record) = self.catalog.namespace(ns)?
            && record.project != project
        {
            return Err(CatalogError::Refused(format!(
                "namespace {ns} is project {:?}'s; this token acts for project {project:?}",
                record.project
            ))
            .into());
        }
        self.drop_idle().await;
        let id: [u8; 16] = rand::random();
        let session = Session {
            project: project.to_owned(),
            ns: ns.to_owned(),
            name: name.to_owned(),
            transfer: rand::random(),
            state: parking_lot::Mutex::new(SessionState {
                pin: self.store().transfer_pin(),
                allowed: HashSet::new(),
                readable: None,
                named: 0,
                last_used: Instant::now(),
            }),
            ended: false,
        };
        let id = hex::encode(id);
        {
            let mut sessions = self.sessions.lock();
            let open = sessions.values().filter(|(owner, _)| owner == project).count();
            if open >= MAX_SESSIONS_PER_PROJECT {
                return Err(StageError::TooMany(format!(
                    "project {project:?} has {open} stage-out sessions open here, the most it may: \
                     let some end (or abort them), or wait {SESSION_IDLE_SECS} s for idle ones to go"
                )));
            }
            sessions.insert(id.clone(), (project.to_owned(), Arc::new(tokio::sync::RwLock::new(session))));
        }
        let chunker = &self.chunker;
        Ok(StageOutSession {
            session: id,
            chunk_min: chunker.min_bytes,
            chunk_avg: chunker.avg_bytes,
            chunk_max: chunker.max_bytes,
        })
    }

    /// Lets go of sessions nobody used for [`SESSION_IDLE_SECS`], and what they brought.
    /// Runs at each open and every minute or so (the daemon's sweep).
    pub async fn drop_idle(&self) {
        let idle: Vec<SessionLock> = {
            let mut sessions = self.sessions.lock();
            let cutoff = Duration::from_secs(SESSION_IDLE_SECS);
            // A session with a request in flight is not idle, whatever its last use.
            let stale: Vec<String> = sessions
                .iter()
                .filter(|(_, (_, s))| s.try_write().is_ok_and(|s| s.state.lock().last_used.elapsed() > cutoff))
                .map(|(id, _)| id.clone())
                .collect();
            stale.iter().filter_map(|id| sessions.remove(id)).map(|(_, s)| s).collect()
        };
        for session in idle {
            let mut s = session.write().await;
            s.ended = true;
            if let Err(e) = self.store().release_transfer(s.transfer).await {
                tracing::warn!(error = %e, "could not let go of an idle stage-out session's chunks");
            }
        }
    }

    /// The session `id`, if `project` (`None`: the operator) owns it.
    fn find_session(&self, id: &str) -> Result<SessionLock, StageError> {
        let session = self.sessions.lock().get(id).map(|(_, s)| s.clone());
        Ok(session.ok_or_else(|| no_session(id))?)
    }

    /// Checks a session once its lock is held (ended meanwhile, or another project's).
    fn check_session(session: &Session, id: &str, project: Option<&str>) -> Result<(), StageError> {
        // Another project's, or ended, is said as for a session that does not exist:
        // an id tells nothing to others.
        if session.ended || project.is_some_and(|project| session.project != project) {
            return Err(no_session(id).into());
        }
        session.state.lock().last_used = Instant::now();
        Ok(())
    }

    /// The session, read-locked: for requests that may run beside each other.
    async fn session(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<Session>, StageError> {
        let guard = self.find_session(id)?.read_owned().await;
        Self::check_session(&guard, id, project)?;
        Ok(guard)
    }

    /// The session, write-locked: for the requests that end it.
    async fn session_alone(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<tokio::sync::OwnedRwLockWriteGuard<Session>, StageError> {
        let guard = self.find_session(id)?.write_owned().await;
        Self::check_session(&guard, id, project)?;
        Ok(guard)
    }

    /// Which of `ids` this site lacks, for the session's project: a chunk counts as
    /// present only if the project may read it here already.
    pub async fn missing(
        &self,
        id: &str,
        project: Option<&str>,
        ids: Vec<hw_offload::ChunkId>,
    ) -> Result<Vec<hw_offload::ChunkId>, StageError> {
        if ids.len() > MAX_ASKED {
            return Err(CatalogError::Refused(format!("{} chunk ids, at most {MAX_ASKED} at once", ids.len())).into());
        }
        let s = self.session(id, project).await?;
        s.state.lock().name_chunks(ids.len() as u64)?;
        let store = self.store().clone();
        let indexed = store.hold_chunks(&mut s.state.lock().pin, &ids)?;
        // The namespace may have been created for another project since the session opened:
        // its versions' chunks are then none of this project's business.
        if let Some(namespace) = self.catalog.namespace(&s.ns)?
            && namespace.project != s.project
        {
            return Err(CatalogError::Refused(format!(
                "namespace {} is project {:?}'s now; this session cannot publish into it",
                s.ns, namespace.project
            ))
            .into());
        }
        let known = s.state.lock().readable.clone();
        let through_versions = match known {
            Some(known) => known,
            None => {
                let found = Arc::new(self.readable_through_versions(&s.ns)?);
                s.state.lock().readable.get_or_insert(found).clone()
            }
        };
        let mut readable = vec![false; ids.len()];
        for (bucket, record) in store.list_buckets()? {
            if record.owner != s.project {
                continue;
            }
            for (r, used) in readable.iter_mut().zip(store.chunks_used_in(&bucket, &ids)?) {
                *r |= used;
            }
        }
        let mut missing = Vec::new();
        let mut state = s.state.lock();
        for (i, id) in ids.into_iter().enumerate() {
            let present = indexed[i] && (readable[i] || through_versions.contains(&id) || state.allowed.contains(&id));
            if present {
                state.allowed.insert(id);
            } else {
                missing.push(id);
            }
        }
        Ok(missing)
    }

    /// The chunks of the versions of namespace `ns` held here.
    fn readable_through_versions(&self, ns: &str) -> Result<HashSet<hw_offload::ChunkId>, StageError> {
        let mut out = HashSet::new();
        for (dataset_ns, name, _) in self.catalog.datasets(ns)? {
            if dataset_ns != ns {
                continue;
            }
            for (version, _) in self.catalog.versions(ns, &name)? {
                if let Some(chunks) = self.store().version_chunks(&version.0)? {
                    out.extend(chunks.into_iter().map(|c| c.id));
                }
            }
        }
        Ok(out)
    }

    /// Receives chunks for the session: records of a 32-byte id, a u32 big-endian length
    /// and the bytes; each is hashed here and refused if it does not match its id.
    pub async fn receive<E: std::fmt::Display>(
        &self,
        id: &str,
        project: Option<&str>,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<ChunksStored, StageError> {
        futures::pin_mut!(body);
        let mut total = 0usize;
        // Read-locked: the client's other bodies are received beside this one.
        let stored = match self.session(id, project).await {
            Ok(s) => self.store_records(&s, body.as_mut(), &mut total).await,
            Err(e) => Err(e),
        };
        if stored.is_err() {
            // Read to its end, as far as a body may go, before answering: a client still
            // sending when its connection closed would see a broken pipe, not the answer.
            while total <= MAX_CHUNKS_BODY
                && let Some(Ok(frame)) = body.next().await
            {
                total += frame.len();
            }
        }
        stored
    }

    /// Stores the records of `body` for session `s`, counting the bytes read in `total`.
    async fn store_records<E: std::fmt::Display>(
        &self,
        s: &Session,
        mut body: std::pin::Pin<&mut impl Stream<Item = Result<Bytes, E>>>,
        total: &mut usize,
    ) -> Result<ChunksStored, StageError> {
        let mut sink = self.store().chunk_sink(s.transfer);
        let mut stored = ChunksStored { chunks: 0, bytes: 0 };
        // Chunks are cut as this site asks stage-out clients to, or as its store cuts.
        let max_chunk = self.chunker.max_bytes.max(self.store().config().chunker.max_bytes) as usize;
        let mut records = RecordReader { partial: BytesMut::new(), max_chunk };
        let mut received = Vec::new();
        // Chunks being hashed and compressed on the offload engine, stored in order.
        let mut hashing: std::collections::VecDeque<(hw_offload::ChunkId, store::ingest::PlainChunkJob)> =
            std::collections::VecDeque::new();
        while let Some(frame) = body.next().await {
            let mut frame = frame.map_err(|e| CatalogError::Refused(format!("reading the body: {e}")))?;
            *total += frame.len();
            if *total > MAX_CHUNKS_BODY {
                return Err(CatalogError::Refused(format!(
                    "a body of more than {MAX_CHUNKS_BODY} bytes: send the chunks in several requests"
                ))
                .into());
            }
            while let Some((chunk_id, bytes)) = records.next(&mut frame)? {
                s.state.lock().name_chunks(1)?;
                stored.chunks += 1;
                stored.bytes += bytes.len() as u64;
                hashing.push_back((chunk_id, self.store().start_plain_chunk(bytes)));
                if hashing.len() >= CHUNKS_HASHED_AT_ONCE {
                    let (chunk_id, job) = hashing.pop_front().expect("not empty");
                    self.store().keep_plain_chunk(&mut sink, chunk_id, job).await?;
                    received.push(chunk_id);
                }
            }
        }
        if !records.partial.is_empty() {
            return Err(CatalogError::Refused(format!(
                "the body ends {} bytes into a record: send whole records (id, u32 length, bytes)",
                records.partial.len()
            ))
            .into());
        }
        for (chunk_id, job) in hashing {
            self.store().keep_plain_chunk(&mut sink, chunk_id, job).await?;
            received.push(chunk_id);
        }
        sink.flush().await?;
        s.state.lock().allowed.extend(received);
        Ok(stored)
    }

    /// Publishes the session's files as a version of its dataset, in one write with the
    /// chunks' hold; applies the rule asked for and ends the job's pins. Ends the session.
    pub async fn publish(
        &self,
        id: &str,
        project: Option<&str>,
        request: StageOutPublish,
    ) -> Result<StageOutPublished, StageError> {
        let mut s = self.session_alone(id, project).await?;
        if let Some(tag) = &request.tag {
            check_name("tag", tag).map_err(CatalogError::Refused)?;
        }
        let rule = request.rule.as_deref().map(parse_rule).transpose().map_err(CatalogError::Refused)?;
        if let Some(job) = &request.job {
            check_name("job", job).map_err(CatalogError::Refused)?;
        }
        if request.files.is_empty() {
            return Err(CatalogError::Refused("no files: nothing to publish".into()).into());
        }
        let manifest = Manifest::new(request.files.into_iter().map(FileEntry::from).collect())
            .map_err(|e| CatalogError::Refused(e.to_string()))?;
        let mut chunks: Vec<ChunkRef> = Vec::new();
        for file in &manifest.files {
            for (chunk, len) in &file.chunks {
                if !s.state.get_mut().allowed.contains(chunk) {
                    return Err(StageError::Conflict(format!(
                        "{}: chunk {chunk} was neither sent in this session nor found here for this project",
                        file.path
                    )));
                }
                chunks.push(ChunkRef { id: *chunk, len: *len });
            }
        }
        let (ns, name) = (s.ns.clone(), s.name.clone());
        let existing = self.catalog.namespace(&ns)?;
        let (published, bodies) = crate::publish::publication(
            &self.catalog,
            &ns,
            &name,
            request.tag.as_deref(),
            &s.project,
            existing.is_none(),
            &manifest,
        )?;
        let (version, encoded) = (published.version, manifest.encode());
        let store = self.store();
        let transfer = s.transfer;
        let project = s.project.clone();
        self.catalog
            .append_with(bodies, crate::now_ms(), async |mut ops| {
                // Under the catalog's writer lock: the namespace may have been created
                // since it was looked at.
                if let Some(now) = self.catalog.namespace(&ns)?
                    && now.project != project
                {
                    return Err(CatalogError::Refused(format!(
                        "namespace {ns} was just created for project {:?}",
                        now.project
                    )));
                }
                ops.push(Op::Put(Table::Manifests, version.0.to_vec(), encoded));
                store.commit_transfer_version(transfer, &version.0, chunks, writes(ops)).await.map_err(
                    |e| match e {
                        // What the client's file list says, not this site's fault.
                        e @ (StoreError::ChunkLengthMismatch { .. }
                        | StoreError::ConflictingLengths { .. }
                        | StoreError::MissingChunk(_)) => CatalogError::Refused(e.to_string()),
                        e => CatalogError::Data(e.to_string()),
                    },
                )?;
                Ok(())
            })
            .await?;
        s.ended = true;
        self.sessions.lock().remove(id);
        drop(s);
        let now = crate::now_ms();
        let rule = match rule {
            Some((copies, sites)) => {
                // Per dataset and version: the same files published by another namespace
                // must not replace this rule.
                let rule_id = format!("stage.{ns}.{name}.{}", &version.to_hex()[..16]);
                let rule = Rule { target: RuleTarget::Version(version), copies, sites, until_ms: None };
                crate::rules::add(&self.catalog, &rule_id, rule, now).await?;
                Some(rule_id)
            }
            None => None,
        };
        let mut unpinned = 0;
        if let Some(job) = &request.job {
            for pin in self.catalog.pins()? {
                // Only pins on versions of this project's namespaces: job ids are easy to
                // guess, and another project's job keeps its inputs.
                let ours =
                    self.catalog.publications(&pin.record.version)?.iter().any(|(pns, _)| {
                        self.catalog.namespace(pns).ok().flatten().is_some_and(|n| n.project == project)
                    });
                if pin.site == self.catalog.site() && pin.record.job == *job && ours {
                    self.catalog.append(EventBody::PinRemoved { id: pin.id }, now).await?;
                    unpinned += 1;
                }
            }
        }
        Ok(StageOutPublished {
            version,
            files: published.files,
            bytes: published.bytes,
            new: published.new,
            rule,
            unpinned,
        })
    }

    /// Ends a session without publishing; what it brought is let go.
    pub async fn abort(&self, id: &str, project: Option<&str>) -> Result<(), StageError> {
        let mut s = self.session_alone(id, project).await?;
        s.ended = true;
        self.sessions.lock().remove(id);
        self.store().release_transfer(s.transfer).await?;
        Ok(())
    }
}

/// The answer for a session that is not there for the caller: never was, ended, or is
/// another project's, said alike.
fn no_session(id: &str) -> CatalogError {
    CatalogError::NotFound(format!(
        "no stage-out session {id:?} of this project here (it ended, the daemon restarted, or it was idle for \
         {SESSION_IDLE_SECS} s)"
    ))
}

/// Splits a `chunks` body into its records as its frames come: a record whole in a frame
/// is a slice of it; only a record split across frames is copied, to put it together.
struct RecordReader {
    /// the start of a record the frames so far have cut short
    partial: BytesMut,
    max_chunk: usize,
}

impl RecordReader {
    /// The next record, from what came before and `frame`; `None` once `frame` is used up.
    fn next(&mut self, frame: &mut Bytes) -> Result<Option<(ChunkId, Bytes)>, CatalogError> {
        if self.partial.is_empty() && frame.len() >= 36 {
            let len = self.length(&frame[32..36])?;
            if frame.len() >= 36 + len {
                let id = ChunkId(frame[..32].try_into().expect("32 bytes"));
                frame.advance(36);
                return Ok(Some((id, frame.split_to(len))));
            }
        }
        if self.partial.len() < 36 {
            let header = (36 - self.partial.len()).min(frame.len());
            self.partial.extend_from_slice(&frame.split_to(header));
            if self.partial.len() < 36 {
                return Ok(None);
            }
        }
        let len = self.length(&self.partial[32..36])?;
        let rest = (36 + len - self.partial.len()).min(frame.len());
        self.partial.extend_from_slice(&frame.split_to(rest));
        if self.partial.len() < 36 + len {
            return Ok(None);
        }
        let mut record = self.partial.split().freeze();
        let id = ChunkId(record[..32].try_into().expect("32 bytes"));
        record.advance(36);
        Ok(Some((id, record)))
    }

    fn length(&self, field: &[u8]) -> Result<usize, CatalogError> {
        let len = u32::from_be_bytes(field.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > self.max_chunk {
            return Err(CatalogError::Refused(format!(
                "a chunk of {len} bytes: chunks are 1 to {} bytes here",
                self.max_chunk
            )));
        }
        Ok(len)
    }
}
