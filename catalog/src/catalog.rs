//! One site's catalog: its own log, the logs of the others as far as it holds them, and the
//! records they make, with the sync logic (no I/O): what to ask a peer for, what to answer,
//! and what to accept.
//!
//! Applying an event is deterministic and each record has one writer (see
//! [`crate::event`]), so two sites holding the same logs hold the same catalog, whatever
//! order the logs came in. A site's log is gap-free: an event is accepted only as the next
//! one of its origin's log held here, so the head of each log (a version vector) says
//! exactly what a site holds, and a pull asks for what lies past it. Each head also keeps
//! a hash chain over the log, so that two sites can tell, by comparing [`Catalog::digest`],
//! that they hold the same events and not only as many.

use crate::event::{Event, EventBody, Refusal, ReplicaState, Rule, SignedEvent, SiteKeys};
use crate::manifest::VersionId;
use crate::storage::{CatalogStorage, Op, StorageError, Table};
use federation::signing::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Separates the parts of a key (names never hold a NUL).
pub(crate) const SEP: u8 = 0;

/// Most events one pull answer carries.
pub const MAX_EVENTS_PER_ANSWER: usize = 4096;

/// What a site holds of each log: origin → the last seq held.
pub type Heads = BTreeMap<String, u64>;

/// The head of one log as held here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// the last seq held
    pub seq: u64,
    /// BLAKE3(previous chain ‖ BLAKE3(event bytes)) over the log up to `seq`
    pub chain: [u8; 32],
}

impl Head {
    /// The head once `signed`, at `seq`, follows a log whose chain was `previous`.
    pub(crate) fn after(previous: [u8; 32], seq: u64, signed: &SignedEvent) -> Self {
        let mut chain = blake3::Hasher::new();
        chain.update(&previous);
        chain.update(blake3::hash(&signed.bytes).as_bytes());
        Head { seq, chain: *chain.finalize().as_bytes() }
    }
}

/// A namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// its home site
    pub home: String,
    /// the owning project there
    pub project: String,
    /// when it was created (home's clock)
    pub created_ms: u64,
}

/// A version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// number of files
    pub files: u64,
    /// bytes of the files
    pub bytes: u64,
    /// when it was published (home's clock)
    pub published_ms: u64,
}

/// A version's replica at one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// its state
    pub state: ReplicaState,
    /// bytes of the version's files held there
    pub bytes_held: u64,
    /// distinct chunks of it held there
    pub chunks_held: u64,
    /// when that site said so (its clock)
    pub since_ms: u64,
}

/// A pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// the version kept
    pub version: VersionId,
    /// the job that asked
    pub job: String,
    /// when it lapses
    pub until_ms: u64,
}

/// A record a site owns under an id of its choosing (a rule, a pin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord<T> {
    /// the site that wrote it
    pub site: String,
    /// its id there
    pub id: String,
    /// the record
    pub record: T,
}

/// A catalog failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// the storage failed
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// a stored record does not decode
    #[error("catalog record {what}: {reason}")]
    Corrupt {
        /// which record
        what: String,
        /// why
        reason: String,
    },
    /// this site may not write that (another site's record), or it is malformed
    #[error("{0}")]
    Refused(String),
    /// what was asked for is not in the catalog
    #[error("{0}")]
    NotFound(String),
    /// the data the catalog describes could not be read or written
    #[error("store: {0}")]
    Data(String),
}

/// What [`Catalog::accept`] did with a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// events applied
    pub applied: u64,
    /// events held already, byte for byte (a repeat, harmless)
    pub duplicates: u64,
    /// events refused, each stopping the rest of its origin's log in the batch
    pub refused: Vec<Refusal>,
}

/// What a pull is answered with ([`Catalog::pull_answer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullAnswer {
    /// events past the asker's heads, each log in order and with no gap
    pub events: Vec<SignedEvent>,
    /// origin → checkpoint: logs whose next event the asker must take from a snapshot
    pub snapshots: BTreeMap<String, u64>,
}

/// A site's catalog over a storage.
pub struct Catalog<S> {
    storage: S,
    site: String,
    pub(crate) key: SigningKey,
    /// Held by whatever writes logs (a local append, accepting a peer's events) from
    /// reading a head to committing past it: this site's own log stays gap-free even when
    /// a commit fails, and nothing is applied twice.
    pub(crate) writer: tokio::sync::Mutex<()>,
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: impl FnOnce() -> String,
    raw: &[u8],
) -> Result<T, CatalogError> {
    postcard::from_bytes(raw).map_err(|e| CatalogError::Corrupt { what: what(), reason: e.to_string() })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("records encode")
}

/// `parts` joined by [`SEP`].
pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Marks the by-id entries of [`Table::Versions`]: no namespace name starts with it.
const BY_ID: u8 = 0xff;

/// `[BY_ID][version id][ns ‖ 0 ‖ name]` → nothing: a dataset that published a version.
/// The same files may be published by several namespaces (each home publishes what its
/// buckets hold); each publication is kept, so that whoever must allow a copy is known
/// whatever order the events came in. (Builds before this one kept one entry,
/// `[BY_ID][version id]` → `ns ‖ 0 ‖ name`; it is still read.)
fn published_key(version: &VersionId, ns: &str, name: &str) -> Vec<u8> {
    [&[BY_ID][..], &version.0, &key(&[ns.as_bytes(), name.as_bytes()])].concat()
}

/// `version ‖ site` in [`Table::Replicas`]: the replica of `version` at `site`.
pub(crate) fn replica_key(version: &VersionId, site: &str) -> Vec<u8> {
    [&version.0[..], site.as_bytes()].concat()
}

/// `ns ‖ 0 ‖ "sites"` in [`Table::Namespaces`]: who may hold copies (names hold no NUL,
/// so no namespace has this key).
fn shared_key(ns: &str) -> Vec<u8> {
    key(&[ns.as_bytes(), b"sites"])
}

pub(crate) fn event_key(origin: &str, seq: u64) -> Vec<u8> {
    key(&[origin.as_bytes(), &seq.to_be_bytes()])
}

impl<S: CatalogStorage> Catalog<S> {
    /// The catalog of `site`, which signs its events with `key`.
    pub fn new(storage: S, site: impl Into<String>, key: SigningKey) -> Self {
        Self { storage, site: site.into(), key, writer: tokio::sync::Mutex::new(()) }
    }

    /// This site's name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The storage underneath.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    // ---------------------------------------------------------------- logs

    pub(crate) fn head(&self, origin: &str) -> Result<Option<Head>, CatalogError> {
        match self.storage.get(Table::Heads, origin.as_bytes())? {
            Some(raw) => decode(|| format!("head of {origin}"), &raw).map(Some),
            None => Ok(None),
        }
    }

    /// What this site holds of each log.
    pub fn heads(&self) -> Result<Heads, CatalogError> {
        Ok(self.heads_and_digest()?.0)
    }

    /// A digest of every log held: equal at two sites exactly when they hold the same events.
    pub fn digest(&self) -> Result<[u8; 32], CatalogError> {
        Ok(self.heads_and_digest()?.1)
    }

    /// [`Self::heads`] and [`Self::digest`] from one read: taken apart, an event appended in
    /// between would pair heads with the digest of other ones (and a peer comparing them
    /// would report a divergence that is not there).
    pub fn heads_and_digest(&self) -> Result<(Heads, [u8; 32]), CatalogError> {
        let mut heads = Heads::new();
        let mut hasher = blake3::Hasher::new();
        for (k, v) in self.storage.scan(Table::Heads, b"", None, usize::MAX)? {
            hasher.update(&(k.len() as u32).to_be_bytes());
            hasher.update(&k);
            hasher.update(&v);
            let origin = String::from_utf8_lossy(&k).into_owned();
            let head: Head = decode(|| format!("head of {origin}"), &v)?;
            heads.insert(origin, head.seq);
        }
        Ok((heads, *hasher.finalize().as_bytes()))
    }

    /// Appends an event to this site's own log, signed, and applies it.
    pub async fn append(&self, body: EventBody, now_ms: u64) -> Result<SignedEvent, CatalogError> {
        let mut signed = self
            .append_with(vec![body], now_ms, async |ops| self.storage.write(ops).map_err(CatalogError::from))
            .await?;
        Ok(signed.pop().expect("one event"))
    }

    /// Appends events to this site's own log, signed, and hands what applying them writes
    /// to `commit`, which writes it with whatever else must land in the same write (a
    /// version's hold on its chunks). Nothing is appended if `commit` fails.
    pub async fn append_with(
        &self,
        bodies: Vec<EventBody>,
        now_ms: u64,
        commit: impl AsyncFnOnce(Vec<Op>) -> Result<(), CatalogError>,
    ) -> Result<Vec<SignedEvent>, CatalogError> {
        let _writer = self.writer.lock().await;
        let mut head = self.head(&self.site)?;
        let mut ops = Vec::new();
        let mut signed_events = Vec::with_capacity(bodies.len());
        let mut created = HashSet::new();
        for body in bodies {
            let seq = head.map_or(0, |h| h.seq) + 1;
            let event = Event { origin: self.site.clone(), seq, at_ms: now_ms, body };
            event.check_authority().map_err(CatalogError::Refused)?;
            let signed = SignedEvent::sign(&event, &self.key);
            let (next, event_ops) = self.ops(head, &signed, &event, &mut created)?;
            head = Some(next);
            ops.extend(event_ops);
            signed_events.push(signed);
        }
        commit(ops).await?;
        Ok(signed_events)
    }

    /// The events past `heads` (what a peer holds), each log in order and with no gap, at
    /// most `limit`; and the logs whose next event this site no longer holds, with the
    /// checkpoint whose snapshot the peer should load instead ([`crate::compaction`]).
    pub fn pull_answer(&self, heads: &Heads, limit: usize) -> Result<PullAnswer, CatalogError> {
        let limit = limit.min(MAX_EVENTS_PER_ANSWER);
        let mut answer = PullAnswer::default();
        for (origin, held_here) in self.heads()? {
            let held_there = heads.get(&origin).copied().unwrap_or(0);
            if held_there >= held_here || answer.events.len() >= limit {
                continue;
            }
            let prefix = key(&[origin.as_bytes(), b""]);
            let after = event_key(&origin, held_there);
            let mut next = held_there + 1;
            for (k, raw) in self.storage.scan(Table::Events, &prefix, Some(&after), limit - answer.events.len())? {
                if k != event_key(&origin, next) {
                    break; // dropped here by a checkpoint: the peer loads its snapshot
                }
                answer.events.push(decode(|| format!("event of {origin}"), &raw)?);
                next += 1;
            }
            if next == held_there + 1
                && let Some(checkpoint) = self.checkpoint_record(&origin)?.compacted
                && held_there < checkpoint
            {
                answer.snapshots.insert(origin, checkpoint);
            }
        }
        Ok(answer)
    }

    /// The events past `heads`, each log in order, at most `limit`: the change feed. Below
    /// a checkpoint, only the events that still stand are held, so a reader far behind
    /// skips what later events undid, as it would reading the records.
    pub fn events_after(&self, heads: &Heads, limit: usize) -> Result<Vec<SignedEvent>, CatalogError> {
        let limit = limit.min(MAX_EVENTS_PER_ANSWER);
        let mut out = Vec::new();
        for (origin, held_here) in self.heads()? {
            let held_there = heads.get(&origin).copied().unwrap_or(0);
            if held_there >= held_here {
                continue;
            }
            let prefix = key(&[origin.as_bytes(), b""]);
            let after = event_key(&origin, held_there);
            for (_, raw) in self.storage.scan(Table::Events, &prefix, Some(&after), limit - out.len())? {
                out.push(decode(|| format!("event of {origin}"), &raw)?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Accepts events from a peer (its own or relayed). Each is verified against its
    /// origin's key and must be the next of its log held here; the first one refused
    /// stops the rest of its origin's log in this batch, and the others go on. What is
    /// applied is written in one synced write: a site catching up pays one sync per
    /// answer, not one per event.
    pub async fn accept(
        &self,
        events: &[SignedEvent],
        keys: &(impl SiteKeys + ?Sized),
    ) -> Result<Accepted, CatalogError> {
        let _writer = self.writer.lock().await;
        let mut report = Accepted::default();
        let mut stopped: Vec<String> = Vec::new();
        // What this batch has applied so far, not yet in the storage.
        let mut heads: HashMap<String, Head> = HashMap::new();
        let mut applied: HashMap<(String, u64), &[u8]> = HashMap::new();
        let mut created = HashSet::new();
        let mut ops = Vec::new();
        for signed in events {
            let event = match signed.verify(keys) {
                Ok(event) => event,
                Err(refusal) => {
                    if let Some(origin) = refusal_origin(&refusal) {
                        stopped.push(origin);
                    }
                    report.refused.push(refusal);
                    continue;
                }
            };
            if stopped.contains(&event.origin) {
                continue;
            }
            let head = match heads.get(&event.origin) {
                Some(head) => Some(*head),
                None => self.head(&event.origin)?,
            };
            let held = head.map_or(0, |h| h.seq);
            if event.seq <= held {
                let same = match applied.get(&(event.origin.clone(), event.seq)) {
                    Some(bytes) => *bytes == signed.bytes.as_slice(),
                    None => match self.storage.get(Table::Events, &event_key(&event.origin, event.seq))? {
                        Some(raw) => decode::<SignedEvent>(|| "event".into(), &raw)?.bytes == signed.bytes,
                        // Dropped here by a checkpoint: a dead event, or one this site
                        // holds in its place; either way nothing to apply.
                        None => self.checkpoint_record(&event.origin)?.compacted.is_some_and(|c| event.seq < c),
                    },
                };
                match same {
                    true => report.duplicates += 1,
                    false => {
                        stopped.push(event.origin.clone());
                        report.refused.push(Refusal::Conflicting { origin: event.origin, seq: event.seq });
                    }
                }
                continue;
            }
            if event.seq > held + 1 {
                stopped.push(event.origin.clone());
                report.refused.push(Refusal::Gap { origin: event.origin, seq: event.seq, held });
                continue;
            }
            let (next, event_ops) = self.ops(head, signed, &event, &mut created)?;
            ops.extend(event_ops);
            applied.insert((event.origin.clone(), event.seq), signed.bytes.as_slice());
            heads.insert(event.origin, next);
            report.applied += 1;
        }
        if !ops.is_empty() {
            self.storage.write(ops)?;
        }
        Ok(report)
    }

    /// What recording `event` (verified, the next of its log after `head`) writes: the
    /// event, the new head, and the records it changes. Returns the new head too.
    /// `created`: the namespaces created earlier in the same write.
    pub(crate) fn ops(
        &self,
        head: Option<Head>,
        signed: &SignedEvent,
        event: &Event,
        created: &mut HashSet<String>,
    ) -> Result<(Head, Vec<Op>), CatalogError> {
        let previous = head.map_or([0; 32], |h| h.chain);
        let head = Head::after(previous, event.seq, signed);
        let mut ops = vec![
            Op::Put(Table::Events, event_key(&event.origin, event.seq), encode(signed)),
            Op::Put(Table::Heads, event.origin.as_bytes().to_vec(), encode(&head)),
        ];
        if let EventBody::Checkpoint { chain: claimed, .. } = &event.body {
            // Compacted at later (`Catalog::compact`), if what it claims matches the log
            // held here.
            let mut record = self.checkpoint_record(&event.origin)?;
            match *claimed == previous {
                true => record.pending = Some(event.seq),
                false => record.mismatched = Some(event.seq),
            }
            ops.push(Op::Put(Table::Checkpoints, event.origin.as_bytes().to_vec(), encode(&record)));
        }
        self.record_ops(event, created, &mut ops)?;
        Ok((head, ops))
    }

    /// What `event` writes to the records (not the log): `created` as for [`Self::ops`].
    pub(crate) fn record_ops(
        &self,
        event: &Event,
        created: &mut HashSet<String>,
        ops: &mut Vec<Op>,
    ) -> Result<(), CatalogError> {
        let origin = event.origin.as_bytes();
        match &event.body {
            // The first creation stands: a later one (the home's log is ordered, so every
            // site sees the same first) changes nothing, so a namespace cannot change hands.
            EventBody::NamespaceCreated { ns, project } => {
                if !created.contains(ns) && self.storage.get(Table::Namespaces, ns.as_bytes())?.is_none() {
                    created.insert(ns.clone());
                    let record = NamespaceRecord {
                        home: event.origin.clone(),
                        project: project.clone(),
                        created_ms: event.at_ms,
                    };
                    ops.push(Op::Put(Table::Namespaces, ns.as_bytes().to_vec(), encode(&record)));
                }
            }
            EventBody::VersionPublished { ns, name, version, files, bytes } => {
                let record = VersionRecord { files: *files, bytes: *bytes, published_ms: event.at_ms };
                ops.push(Op::Put(Table::Versions, key(&[ns.as_bytes(), name.as_bytes(), &version.0]), encode(&record)));
                ops.push(Op::Put(Table::Versions, published_key(version, ns, name), Vec::new()));
            }
            EventBody::TagMoved { ns, name, tag, version } => {
                let k = key(&[ns.as_bytes(), name.as_bytes(), tag.as_bytes()]);
                ops.push(match version {
                    Some(v) => Op::Put(Table::Tags, k, v.0.to_vec()),
                    None => Op::Delete(Table::Tags, k),
                });
            }
            EventBody::ReplicaChanged { version, state, bytes_held, chunks_held } => {
                let record = ReplicaRecord {
                    state: *state,
                    bytes_held: *bytes_held,
                    chunks_held: *chunks_held,
                    since_ms: event.at_ms,
                };
                ops.push(Op::Put(Table::Replicas, replica_key(version, &event.origin), encode(&record)));
            }
            EventBody::RuleSet { id, rule } => {
                ops.push(Op::Put(Table::Rules, key(&[origin, id.as_bytes()]), encode(rule)));
            }
            EventBody::RuleRemoved { id } => ops.push(Op::Delete(Table::Rules, key(&[origin, id.as_bytes()]))),
            EventBody::PinSet { id, version, job, until_ms } => {
                let record = PinRecord { version: *version, job: job.clone(), until_ms: *until_ms };
                ops.push(Op::Put(Table::Pins, key(&[origin, id.as_bytes()]), encode(&record)));
            }
            EventBody::PinRemoved { id } => ops.push(Op::Delete(Table::Pins, key(&[origin, id.as_bytes()]))),
            EventBody::NamespaceShared { ns, sites } => {
                ops.push(Op::Put(Table::Namespaces, shared_key(ns), sites.as_bytes().to_vec()));
            }
            EventBody::DatasetDescribed { ns, name, metadata } => {
                let k = key(&[ns.as_bytes(), name.as_bytes()]);
                ops.push(match metadata.is_empty() {
                    true => Op::Delete(Table::Described, k),
                    false => Op::Put(Table::Described, k, encode(metadata)),
                });
            }
            EventBody::Checkpoint { .. } => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------- queries

    /// A namespace.
    pub fn namespace(&self, ns: &str) -> Result<Option<NamespaceRecord>, CatalogError> {
        match self.storage.get(Table::Namespaces, ns.as_bytes())? {
            Some(raw) => decode(|| format!("namespace {ns}"), &raw).map(Some),
            None => Ok(None),
        }
    }

    /// The expression naming the sites that may hold copies of `ns`'s versions besides
    /// its home, if its home shared it.
    pub fn shared_with(&self, ns: &str) -> Result<Option<String>, CatalogError> {
        Ok(self.storage.get(Table::Namespaces, &shared_key(ns))?.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// The versions of `ns/name`, by id.
    pub fn versions(&self, ns: &str, name: &str) -> Result<Vec<(VersionId, VersionRecord)>, CatalogError> {
        let prefix = key(&[ns.as_bytes(), name.as_bytes(), b""]);
        self.storage
            .scan(Table::Versions, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let id = VersionId(k[prefix.len()..].try_into().map_err(|_| CatalogError::Corrupt {
                    what: format!("version key of {ns}/{name}"),
                    reason: "not 32 bytes of id".into(),
                })?);
                Ok((id, decode(|| format!("version {id}"), &v)?))
            })
            .collect()
    }

    /// The record of `version`, as its first publication has it.
    pub fn version_record(&self, version: &VersionId) -> Result<Option<VersionRecord>, CatalogError> {
        for (ns, name) in self.publications(version)? {
            if let Some((_, record)) = self.versions(&ns, &name)?.into_iter().find(|(v, _)| v == version) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// The version a tag of `ns/name` names.
    pub fn tag(&self, ns: &str, name: &str, tag: &str) -> Result<Option<VersionId>, CatalogError> {
        let raw = self.storage.get(Table::Tags, &key(&[ns.as_bytes(), name.as_bytes(), tag.as_bytes()]))?;
        Ok(raw.and_then(|raw| raw.try_into().ok()).map(VersionId))
    }

    /// The datasets whose namespace starts with `ns_prefix`, with how many versions each
    /// has, in (namespace, name) order.
    pub fn datasets(&self, ns_prefix: &str) -> Result<Vec<(String, String, u64)>, CatalogError> {
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for (k, _) in self.storage.scan(Table::Versions, ns_prefix.as_bytes(), None, usize::MAX)? {
            if k.first() == Some(&BY_ID) {
                continue;
            }
            let mut parts = k.splitn(3, |b| *b == SEP);
            let (Some(ns), Some(name)) = (parts.next(), parts.next()) else {
                return Err(CatalogError::Corrupt { what: "version key".into(), reason: hex::encode(&k) });
            };
            let (ns, name) = (String::from_utf8_lossy(ns).into_owned(), String::from_utf8_lossy(name).into_owned());
            match out.last_mut() {
                Some(last) if last.0 == ns && last.1 == name => last.2 += 1,
                _ => out.push((ns, name, 1)),
            }
        }
        Ok(out)
    }

    /// The dataset (namespace, name) that published `version`, if one did: the first in
    /// name order when several did (every site picks the same).
    pub fn published_as(&self, version: &VersionId) -> Result<Option<(String, String)>, CatalogError> {
        Ok(self.publications(version)?.into_iter().next())
    }

    /// Every dataset (namespace, name) that published `version`, in name order.
    pub fn publications(&self, version: &VersionId) -> Result<Vec<(String, String)>, CatalogError> {
        let prefix = [&[BY_ID][..], &version.0].concat();
        let split = |raw: &[u8]| {
            let mut parts = raw.splitn(2, |b| *b == SEP);
            let ns = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            (ns, name)
        };
        let mut out: Vec<(String, String)> = self
            .storage
            .scan(Table::Versions, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| if k.len() == prefix.len() { split(&v) } else { split(&k[prefix.len()..]) })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The metadata of `ns/name` (empty when it has none).
    pub fn metadata(&self, ns: &str, name: &str) -> Result<BTreeMap<String, String>, CatalogError> {
        match self.storage.get(Table::Described, &key(&[ns.as_bytes(), name.as_bytes()]))? {
            Some(raw) => decode(|| format!("metadata of {ns}/{name}"), &raw),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Every tag of `ns/name`, by name.
    pub fn tags(&self, ns: &str, name: &str) -> Result<Vec<(String, VersionId)>, CatalogError> {
        let prefix = key(&[ns.as_bytes(), name.as_bytes(), b""]);
        self.storage
            .scan(Table::Tags, &prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let tag = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let id = v.try_into().map_err(|_| CatalogError::Corrupt {
                    what: format!("tag {ns}/{name}@{tag}"),
                    reason: "not 32 bytes of version id".into(),
                })?;
                Ok((tag, VersionId(id)))
            })
            .collect()
    }

    /// The replicas of a version, by site.
    pub fn replicas(&self, version: &VersionId) -> Result<Vec<(String, ReplicaRecord)>, CatalogError> {
        self.storage
            .scan(Table::Replicas, &version.0, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let site = String::from_utf8_lossy(&k[32..]).into_owned();
                let record = decode(|| format!("replica of {version} at {site}"), &v)?;
                Ok((site, record))
            })
            .collect()
    }

    /// Every rule, by the site that owns it and its id.
    pub fn rules(&self) -> Result<Vec<SiteRecord<Rule>>, CatalogError> {
        self.records(Table::Rules)
    }

    /// Every pin, by the site it holds at and its id.
    pub fn pins(&self) -> Result<Vec<SiteRecord<PinRecord>>, CatalogError> {
        self.records(Table::Pins)
    }

    fn records<T: for<'de> Deserialize<'de>>(&self, table: Table) -> Result<Vec<SiteRecord<T>>, CatalogError> {
        self.storage
            .scan(table, b"", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let split = k.iter().position(|b| *b == SEP).unwrap_or(k.len());
                let site = String::from_utf8_lossy(&k[..split]).into_owned();
                let id = String::from_utf8_lossy(k.get(split + 1..).unwrap_or_default()).into_owned();
                let record = decode(|| format!("{} {site}/{id}", table.name()), &v)?;
                Ok(SiteRecord { site, id, record })
            })
            .collect()
    }
}

/// The log a refusal stops, if it names one.
fn refusal_origin(refusal: &Refusal) -> Option<String> {
    match refusal {
        Refusal::BadSignature { origin, .. }
        | Refusal::Unauthorized { origin, .. }
        | Refusal::Gap { origin, .. }
        | Refusal::Conflicting { origin, .. }
        | Refusal::Snapshot { origin, .. } => Some(origin.clone()),
        Refusal::UnknownOrigin(_) | Refusal::Malformed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn the_first_creation_of_a_namespace_stands() {
        let catalog = Catalog::new(MemoryStorage::default(), "paris", SigningKey::generate().unwrap());
        let create = |project: &str| EventBody::NamespaceCreated { ns: "paris.x".into(), project: project.into() };
        catalog.append(create("climate"), 1).await.unwrap();
        catalog.append(create("physics"), 2).await.unwrap();
        let record = catalog.namespace("paris.x").unwrap().unwrap();
        assert_eq!((record.project.as_str(), record.created_ms), ("climate", 1));
    }

    /// The federation's keys, for accepting events from `paris` only.
    struct ParisKey(federation::signing::PublicKey);

    impl SiteKeys for ParisKey {
        fn signing_key(&self, site: &str) -> Option<federation::signing::PublicKey> {
            (site == "paris").then_some(self.0)
        }
    }

    #[tokio::test]
    async fn one_answer_is_applied_in_one_write_as_if_event_by_event() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_key();
        let paris = Catalog::new(MemoryStorage::default(), "paris", key);
        let create = |project: &str| EventBody::NamespaceCreated { ns: "paris.x".into(), project: project.into() };
        let mut events = paris
            .append_with(vec![create("climate"), create("physics")], 1, async |ops| {
                paris.storage().write(ops).map_err(CatalogError::from)
            })
            .await
            .unwrap();
        // Each event twice in the answer: the second is a duplicate, even within it.
        events = events.into_iter().flat_map(|e| [e.clone(), e]).collect();
        let julich = Catalog::new(MemoryStorage::default(), "julich", SigningKey::generate().unwrap());
        let accepted = julich.accept(&events, &ParisKey(public)).await.unwrap();
        assert_eq!((accepted.applied, accepted.duplicates, accepted.refused.len()), (2, 2, 0));
        assert_eq!(julich.namespace("paris.x").unwrap().unwrap().project, "climate", "the first creation stands");
        assert_eq!(julich.digest().unwrap(), paris.digest().unwrap());
    }

    #[tokio::test]
    async fn every_publication_of_the_same_files_is_kept_whatever_the_order() {
        let version = VersionId([9; 32]);
        let published =
            |ns: &str| EventBody::VersionPublished { ns: ns.into(), name: "d".into(), version, files: 1, bytes: 1 };
        let paris = Catalog::new(MemoryStorage::default(), "paris", SigningKey::generate().unwrap());
        paris.append(published("paris.x"), 1).await.unwrap();
        let evil = Catalog::new(MemoryStorage::default(), "evil", SigningKey::generate().unwrap());
        evil.append(published("evil.x"), 1).await.unwrap();
        // A third site applies both, evil's first: both namespaces are known to have
        // published it, so the home of each has a say in who may hold a copy
        // (copies::may_hold asks every one), not the last to arrive.
        let storage = MemoryStorage::default();
        let mut ops = Vec::new();
        for (catalog, ns) in [(&evil, "evil.x"), (&paris, "paris.x")] {
            let signed = catalog.events_after(&Heads::new(), 10).unwrap().remove(0);
            let event = Event { origin: catalog.site().into(), seq: 1, at_ms: 1, body: published(ns) };
            let bystander = Catalog::new(MemoryStorage::default(), "x", SigningKey::generate().unwrap());
            ops.extend(bystander.ops(None, &signed, &event, &mut HashSet::new()).unwrap().1);
        }
        storage.write(ops).unwrap();
        let bystander = Catalog::new(storage, "bystander", SigningKey::generate().unwrap());
        assert_eq!(
            bystander.publications(&version).unwrap(),
            [("evil.x".to_owned(), "d".to_owned()), ("paris.x".to_owned(), "d".to_owned())]
        );
        assert_eq!(bystander.published_as(&version).unwrap(), Some(("evil.x".to_owned(), "d".to_owned())));
    }

    #[tokio::test]
    async fn a_version_is_known_as_published_only_from_its_publication() {
        let catalog = Catalog::new(MemoryStorage::default(), "paris", SigningKey::generate().unwrap());
        let version = VersionId([7; 32]);
        // Any site writes its own replica records, for any id: that is no publication.
        let replica =
            EventBody::ReplicaChanged { version, state: ReplicaState::Complete, bytes_held: 1, chunks_held: 1 };
        catalog.append(replica, 1).await.unwrap();
        assert_eq!(catalog.published_as(&version).unwrap(), None);
        let published =
            EventBody::VersionPublished { ns: "paris.x".into(), name: "d".into(), version, files: 1, bytes: 1 };
        catalog.append(published, 2).await.unwrap();
        assert_eq!(catalog.published_as(&version).unwrap(), Some(("paris.x".into(), "d".into())));
        assert_eq!(
            catalog.datasets("").unwrap(),
            [("paris.x".to_owned(), "d".to_owned(), 1)],
            "the index is not listed"
        );
    }
}
