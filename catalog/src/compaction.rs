//! Compacting logs: checkpoints, and the snapshots a site loads when a peer no longer holds
//! the part of a log it lacks.
//!
//! Every record has one writer and most events only replace a record an earlier one wrote
//! (a replica's state, a tag), so most of a long log is dead: replaying it yields nothing
//! its later events do not overwrite. An event is *live* while it is the one that gives its
//! record its value: the last write of the record, the first creation of a namespace, and
//! none for a record removed since. Which events are live is a function of the log alone,
//! so every site holding it finds the same ones.
//!
//! Every [`checkpoint_every`](Catalog::checkpoint_if_due) events, a site appends a
//! [`EventBody::Checkpoint`] to its own log: its chain so far and a hash of its live events
//! ([`LiveRoot`]), signed like any event. Each site that applies one checks the claim
//! against the log it holds and then drops the dead events ([`Catalog::compact`]).
//!
//! A peer whose head lies below such a gap is told so in a pull answer; it then fetches
//! the live events below the checkpoint page by page ([`Catalog::snapshot_page`]),
//! verifies each against its origin's key as it stages it ([`Catalog::stage_snapshot`]),
//! and installs them, in one write, only if together they hash to what the origin
//! signed ([`Catalog::install_snapshot`]). A relay can therefore withhold a snapshot but
//! not change it: leaving an event out, adding a dead one or altering one is refused.
//! Installing resets the origin's removable records (tags, metadata, rules, pins) to what the live
//! events say, since the events that removed some may be among those dropped.

use crate::catalog::{Catalog, CatalogError, Head, decode, encode, event_key, key};
use crate::event::{Event, EventBody, Refusal, SignedEvent, SiteKeys};
use crate::storage::{CatalogStorage, Op, Table};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Events of its own log between two checkpoints a site writes, by default.
pub const CHECKPOINT_EVERY: u64 = 10_000;

/// Events read or written per page while compacting or installing.
const PAGE: usize = 4096;

/// The checkpoints of one log held here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// the checkpoint whose dead events were dropped here: the events held below it are
    /// exactly its live ones, which is the snapshot this site serves
    pub compacted: Option<u64>,
    /// a later checkpoint applied here and not yet compacted at
    pub pending: Option<u64>,
    /// the last checkpoint whose claim did not match the log held here (never compacted at)
    pub mismatched: Option<u64>,
}

/// The record an event writes, as far as liveness goes.
enum Writes {
    /// the first such event gives the record its value (a namespace's creation)
    First(Vec<u8>),
    /// the last one does
    Last(Vec<u8>),
    /// the record is removed: no earlier write of it stays live
    Clears(Vec<u8>),
    /// no record
    Nothing,
}

/// The record `body` writes, named by a key unique within one origin's log.
fn writes(body: &EventBody) -> Writes {
    let k = |kind: &[u8], parts: &[&[u8]]| [kind, &key(parts)].concat();
    match body {
        EventBody::NamespaceCreated { ns, .. } => Writes::First(k(b"n", &[ns.as_bytes()])),
        EventBody::NamespaceShared { ns, .. } => Writes::Last(k(b"s", &[ns.as_bytes()])),
        EventBody::VersionPublished { ns, name, version, .. } => {
            Writes::Last(k(b"v", &[ns.as_bytes(), name.as_bytes(), &version.0]))
        }
        EventBody::TagMoved { ns, name, tag, version } => {
            let slot = k(b"t", &[ns.as_bytes(), name.as_bytes(), tag.as_bytes()]);
            if version.is_some() { Writes::Last(slot) } else { Writes::Clears(slot) }
        }
        EventBody::ReplicaChanged { version, .. } => Writes::Last(k(b"r", &[&version.0])),
        EventBody::DatasetDescribed { ns, name, metadata } => {
            let slot = k(b"m", &[ns.as_bytes(), name.as_bytes()]);
            if metadata.is_empty() { Writes::Clears(slot) } else { Writes::Last(slot) }
        }
        EventBody::RuleSet { id, .. } => Writes::Last(k(b"u", &[id.as_bytes()])),
        EventBody::RuleRemoved { id } => Writes::Clears(k(b"u", &[id.as_bytes()])),
        EventBody::PinSet { id, .. } => Writes::Last(k(b"p", &[id.as_bytes()])),
        EventBody::PinRemoved { id } => Writes::Clears(k(b"p", &[id.as_bytes()])),
        // A checkpoint is superseded by the next; the newest is kept as the checkpoint.
        EventBody::Checkpoint { .. } => Writes::Nothing,
    }
}

/// Which events of one log, fed in seq order, are live.
#[derive(Default)]
pub struct Liveness {
    slots: HashMap<Vec<u8>, Option<u64>>,
}

impl Liveness {
    /// Takes the next event of the log.
    pub fn add(&mut self, seq: u64, body: &EventBody) {
        match writes(body) {
            Writes::First(slot) => {
                self.slots.entry(slot).or_insert(Some(seq));
            }
            Writes::Last(slot) => {
                self.slots.insert(slot, Some(seq));
            }
            Writes::Clears(slot) => {
                self.slots.insert(slot, None);
            }
            Writes::Nothing => {}
        }
    }

    /// The live events' seqs.
    pub fn live(self) -> BTreeSet<u64> {
        self.slots.into_values().flatten().collect()
    }
}

/// The hash a checkpoint signs over its live events:
/// `acc ← BLAKE3(acc ‖ seq (u64 BE) ‖ BLAKE3(event bytes))` for each in seq order, from
/// 32 zero bytes. Built one event at a time, so neither side holds the events in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveRoot {
    /// the hash so far
    pub root: [u8; 32],
    /// events hashed
    pub count: u64,
}

impl LiveRoot {
    /// Takes the next live event.
    pub fn add(&mut self, seq: u64, bytes: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(&self.root);
        h.update(&seq.to_be_bytes());
        h.update(blake3::hash(bytes).as_bytes());
        self.root = *h.finalize().as_bytes();
        self.count += 1;
    }
}

/// A checkpoint's claim, from its verified event.
struct Claim {
    seq: u64,
    chain: [u8; 32],
    live: u64,
    live_root: [u8; 32],
}

/// One page of a snapshot of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// the checkpoint, as its origin signed it
    pub checkpoint: SignedEvent,
    /// live events below it, in seq order
    pub events: Vec<SignedEvent>,
    /// no live event lies past these
    pub done: bool,
}

/// The origin and seq of a stored event key (`origin ‖ 0 ‖ seq`).
fn seq_of(k: &[u8]) -> u64 {
    let tail: [u8; 8] = k[k.len().saturating_sub(8)..].try_into().unwrap_or_default();
    u64::from_be_bytes(tail)
}

fn log_prefix(origin: &str) -> Vec<u8> {
    key(&[origin.as_bytes(), b""])
}

impl<S: CatalogStorage> Catalog<S> {
    /// The checkpoints of `origin`'s log held here.
    pub fn checkpoint_record(&self, origin: &str) -> Result<CheckpointRecord, CatalogError> {
        match self.storage().get(Table::Checkpoints, origin.as_bytes())? {
            Some(raw) => decode(|| format!("checkpoints of {origin}"), &raw),
            None => Ok(CheckpointRecord::default()),
        }
    }

    /// Calls `each` with every event of `origin`'s log held here below `below`, in order.
    fn each_event(
        &self,
        origin: &str,
        below: u64,
        mut each: impl FnMut(u64, &SignedEvent) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError> {
        let prefix = log_prefix(origin);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.storage().scan(Table::Events, &prefix, after.as_deref(), PAGE)?;
            for (k, raw) in &page {
                let seq = seq_of(k);
                if seq >= below {
                    return Ok(());
                }
                each(seq, &decode(|| format!("event {origin}#{seq}"), raw)?)?;
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// The live events of `origin`'s log below `below`, as held here, and their hash.
    fn live_below(&self, origin: &str, below: u64) -> Result<(BTreeSet<u64>, LiveRoot), CatalogError> {
        let mut liveness = Liveness::default();
        self.each_event(origin, below, |seq, signed| {
            let event: Event = decode(|| format!("event {origin}#{seq}"), &signed.bytes)?;
            liveness.add(seq, &event.body);
            Ok(())
        })?;
        let live = liveness.live();
        let mut root = LiveRoot::default();
        self.each_event(origin, below, |seq, signed| {
            if live.contains(&seq) {
                root.add(seq, &signed.bytes);
            }
            Ok(())
        })?;
        Ok((live, root))
    }

    /// Deletes of the events of `origin`'s log below `below` that are not `live`.
    fn drop_dead(&self, origin: &str, below: u64, live: &BTreeSet<u64>) -> Result<Vec<Op>, CatalogError> {
        let mut ops = Vec::new();
        self.each_event(origin, below, |seq, _| {
            if !live.contains(&seq) {
                ops.push(Op::Delete(Table::Events, event_key(origin, seq)));
            }
            Ok(())
        })?;
        Ok(ops)
    }

    /// Appends a checkpoint to this site's own log, and drops the events it makes dead,
    /// when `every` events or more came since the last one. Returns its seq if it did.
    pub async fn checkpoint_if_due(&self, every: u64, now_ms: u64) -> Result<Option<u64>, CatalogError> {
        let _writer = self.writer.lock().await;
        let Some(head) = self.head(self.site())? else { return Ok(None) };
        let record = self.checkpoint_record(self.site())?;
        let last = record.compacted.max(record.pending).unwrap_or(0);
        if head.seq.saturating_sub(last) < every.max(1) {
            return Ok(None);
        }
        let (live, root) = self.live_below(self.site(), head.seq + 1)?;
        let seq = head.seq + 1;
        let body = EventBody::Checkpoint { chain: head.chain, live: root.count, live_root: root.root };
        let event = Event { origin: self.site().to_owned(), seq, at_ms: now_ms, body };
        let signed = SignedEvent::sign(&event, &self.key);
        let (_, mut ops) = self.ops(Some(head), &signed, &event, &mut HashSet::new())?;
        ops.extend(self.drop_dead(self.site(), seq, &live)?);
        let record = CheckpointRecord { compacted: Some(seq), pending: None, ..record };
        ops.push(Op::Put(Table::Checkpoints, self.site().as_bytes().to_vec(), encode(&record)));
        self.storage().write(ops)?;
        Ok(Some(seq))
    }

    /// Drops, for every log with a checkpoint applied here and not yet compacted at, the
    /// events the checkpoint made dead, once its claim matches the log held here. Returns
    /// the checkpoints whose claim did not match (never compacted at: the log is kept).
    pub async fn compact(&self) -> Result<Vec<Refusal>, CatalogError> {
        let _writer = self.writer.lock().await;
        let mut mismatched = Vec::new();
        for (k, raw) in self.storage().scan(Table::Checkpoints, b"", None, usize::MAX)? {
            let origin = String::from_utf8_lossy(&k).into_owned();
            let mut record: CheckpointRecord = decode(|| format!("checkpoints of {origin}"), &raw)?;
            let Some(seq) = record.pending else { continue };
            let claim = self.stored_claim(&origin, seq)?;
            let (live, root) = self.live_below(&origin, seq)?;
            let mut ops = Vec::new();
            if (root.count, root.root) == (claim.live, claim.live_root) {
                ops = self.drop_dead(&origin, seq, &live)?;
                record.compacted = Some(seq);
            } else {
                record.mismatched = Some(seq);
                mismatched.push(Refusal::Snapshot {
                    origin: origin.clone(),
                    seq,
                    reason: format!(
                        "it claims {} live events, the log held here has {} with another hash; kept whole",
                        claim.live, root.count
                    ),
                });
            }
            record.pending = None;
            ops.push(Op::Put(Table::Checkpoints, k, encode(&record)));
            self.storage().write(ops)?;
        }
        Ok(mismatched)
    }

    /// The claim of the checkpoint stored at `origin`#`seq`.
    fn stored_claim(&self, origin: &str, seq: u64) -> Result<Claim, CatalogError> {
        let corrupt =
            |reason: &str| CatalogError::Corrupt { what: format!("checkpoint {origin}#{seq}"), reason: reason.into() };
        let raw = self.storage().get(Table::Events, &event_key(origin, seq))?.ok_or_else(|| corrupt("not held"))?;
        let signed: SignedEvent = decode(|| format!("event {origin}#{seq}"), &raw)?;
        let event: Event = decode(|| format!("event {origin}#{seq}"), &signed.bytes)?;
        match event.body {
            EventBody::Checkpoint { chain, live, live_root } => Ok(Claim { seq, chain, live, live_root }),
            _ => Err(corrupt("not a checkpoint")),
        }
    }

    /// A page of the snapshot of `origin`'s log at `checkpoint`: its live events past
    /// `after`, at most `limit`. `None` when this site serves no such snapshot (it holds
    /// the log whole, or has compacted at a later checkpoint since).
    pub fn snapshot_page(
        &self,
        origin: &str,
        checkpoint: u64,
        after: u64,
        limit: usize,
    ) -> Result<Option<SnapshotPage>, CatalogError> {
        if self.checkpoint_record(origin)?.compacted != Some(checkpoint) {
            return Ok(None);
        }
        let Some(raw) = self.storage().get(Table::Events, &event_key(origin, checkpoint))? else {
            return Ok(None);
        };
        let checkpoint_event: SignedEvent = decode(|| format!("event {origin}#{checkpoint}"), &raw)?;
        let limit = limit.clamp(1, crate::catalog::MAX_EVENTS_PER_ANSWER);
        let page =
            self.storage().scan(Table::Events, &log_prefix(origin), Some(&event_key(origin, after)), limit + 1)?;
        let mut events = Vec::new();
        let mut done = true;
        for (k, raw) in page {
            if seq_of(&k) >= checkpoint {
                break;
            }
            if events.len() == limit {
                done = false;
                break;
            }
            events.push(decode(|| format!("event {origin}"), &raw)?);
        }
        Ok(Some(SnapshotPage { checkpoint: checkpoint_event, events, done }))
    }

    /// Checks a checkpoint offered for `origin`'s snapshot: signed by `origin`, at `seq`.
    fn verify_checkpoint(
        signed: &SignedEvent,
        origin: &str,
        seq: u64,
        keys: &(impl SiteKeys + ?Sized),
    ) -> Result<Claim, Refusal> {
        let event = signed.verify(keys)?;
        let refuse = |reason: &str| Refusal::Snapshot { origin: origin.into(), seq, reason: reason.into() };
        if event.origin != origin || event.seq != seq {
            return Err(refuse(&format!("the checkpoint offered is {}#{}", event.origin, event.seq)));
        }
        match event.body {
            EventBody::Checkpoint { chain, live, live_root } => Ok(Claim { seq, chain, live, live_root }),
            _ => Err(refuse("the event offered as its checkpoint is not one")),
        }
    }

    /// Forgets what was staged of a snapshot of `origin`'s log.
    pub fn clear_staged(&self, origin: &str) -> Result<(), CatalogError> {
        loop {
            let page = self.storage().scan(Table::Staged, &log_prefix(origin), None, PAGE)?;
            if page.is_empty() {
                return Ok(());
            }
            self.storage().write(page.into_iter().map(|(k, _)| Op::Delete(Table::Staged, k)).collect())?;
        }
    }

    /// Stages a page of the snapshot of `origin`'s log whose checkpoint is `page.checkpoint`
    /// at `checkpoint`, the pages before it having ended at `after`: each event must verify
    /// against its origin's key and come in order below the checkpoint. Returns the last
    /// seq staged.
    pub fn stage_snapshot(
        &self,
        origin: &str,
        checkpoint: u64,
        after: u64,
        page: &SnapshotPage,
        keys: &(impl SiteKeys + ?Sized),
    ) -> Result<Result<u64, Refusal>, CatalogError> {
        if let Err(refusal) = Self::verify_checkpoint(&page.checkpoint, origin, checkpoint, keys) {
            return Ok(Err(refusal));
        }
        // A relay answering empty pages that are not the last would stall the load for good.
        // (What it may pad pages with is bounded: genuine events of the origin below the
        // checkpoint, strictly increasing, so at most the log's length; the hash refuses them.)
        if page.events.is_empty() && !page.done {
            return Ok(Err(Refusal::Snapshot {
                origin: origin.into(),
                seq: checkpoint,
                reason: "an empty page that is not the last".into(),
            }));
        }
        let mut last = after;
        let mut ops = Vec::with_capacity(page.events.len());
        for signed in &page.events {
            let event = match signed.verify(keys) {
                Ok(event) => event,
                Err(refusal) => return Ok(Err(refusal)),
            };
            if event.origin != origin || event.seq <= last || event.seq >= checkpoint {
                return Ok(Err(Refusal::Snapshot {
                    origin: origin.into(),
                    seq: checkpoint,
                    reason: format!("{}#{} offered after #{last}, out of place", event.origin, event.seq),
                }));
            }
            last = event.seq;
            ops.push(Op::Put(Table::Staged, event_key(origin, event.seq), encode(signed)));
        }
        self.storage().write(ops)?;
        Ok(Ok(last))
    }

    /// Installs the staged snapshot of `origin`'s log at `checkpoint`, in one write, if the
    /// staged events hash to what the checkpoint claims; they then replace what this site
    /// held of that log, and its head moves to the checkpoint. Refused, and the staged
    /// events forgotten, otherwise. Returns how many events the snapshot held (0 when this
    /// site holds the log that far already).
    pub async fn install_snapshot(
        &self,
        origin: &str,
        checkpoint: &SignedEvent,
        seq: u64,
        keys: &(impl SiteKeys + ?Sized),
    ) -> Result<Result<u64, Refusal>, CatalogError> {
        let claim = match Self::verify_checkpoint(checkpoint, origin, seq, keys) {
            Ok(claim) => claim,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let _writer = self.writer.lock().await;
        if self.head(origin)?.is_some_and(|h| h.seq >= claim.seq) {
            self.clear_staged(origin)?;
            return Ok(Ok(0));
        }
        let mut root = LiveRoot::default();
        let mut staged = Vec::new();
        let prefix = log_prefix(origin);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.storage().scan(Table::Staged, &prefix, after.as_deref(), PAGE)?;
            for (k, raw) in &page {
                let signed: SignedEvent = decode(|| format!("staged event of {origin}"), raw)?;
                root.add(seq_of(k), &signed.bytes);
                staged.push(signed);
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
                _ => break,
            }
        }
        if (root.count, root.root) != (claim.live, claim.live_root) {
            self.clear_staged(origin)?;
            return Ok(Err(Refusal::Snapshot {
                origin: origin.into(),
                seq: claim.seq,
                reason: format!(
                    "{} events offered, the checkpoint claims {} with another hash: some were left out, added or altered",
                    root.count, claim.live
                ),
            }));
        }
        // What this site held of the log, and the records a dropped event may have removed.
        let mut ops = Vec::new();
        self.each_event(origin, u64::MAX, |seq, _| {
            ops.push(Op::Delete(Table::Events, event_key(origin, seq)));
            Ok(())
        })?;
        ops.extend(self.removable_records(origin)?.into_iter().map(|(table, k)| Op::Delete(table, k)));
        let mut created = HashSet::new();
        for signed in &staged {
            let event: Event = decode(|| format!("staged event of {origin}"), &signed.bytes)?;
            ops.push(Op::Put(Table::Events, event_key(origin, event.seq), encode(signed)));
            self.record_ops(&event, &mut created, &mut ops)?;
        }
        let head = Head::after(claim.chain, claim.seq, checkpoint);
        ops.push(Op::Put(Table::Events, event_key(origin, claim.seq), encode(checkpoint)));
        ops.push(Op::Put(Table::Heads, origin.as_bytes().to_vec(), encode(&head)));
        let record = CheckpointRecord { compacted: Some(claim.seq), pending: None, ..self.checkpoint_record(origin)? };
        ops.push(Op::Put(Table::Checkpoints, origin.as_bytes().to_vec(), encode(&record)));
        self.storage().write(ops)?;
        self.clear_staged(origin)?;
        Ok(Ok(root.count))
    }

    /// The records of `origin` that an event may remove: the tags and metadata of its
    /// namespaces' datasets, its rules and its pins.
    fn removable_records(&self, origin: &str) -> Result<Vec<(Table, Vec<u8>)>, CatalogError> {
        let mut out = Vec::new();
        for (ns, raw) in self.storage().scan(Table::Namespaces, b"", None, usize::MAX)? {
            if ns.contains(&crate::catalog::SEP) {
                continue; // not a namespace record (who it is shared with)
            }
            let record: crate::catalog::NamespaceRecord = decode(|| "namespace".into(), &raw)?;
            if record.home == origin {
                let prefix = key(&[&ns, b""]);
                for table in [Table::Tags, Table::Described] {
                    out.extend(
                        self.storage().scan(table, &prefix, None, usize::MAX)?.into_iter().map(|(k, _)| (table, k)),
                    );
                }
            }
        }
        for table in [Table::Rules, Table::Pins] {
            out.extend(
                self.storage().scan(table, &log_prefix(origin), None, usize::MAX)?.into_iter().map(|(k, _)| (table, k)),
            );
        }
        Ok(out)
    }
}
