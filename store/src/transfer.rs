//! What the transfer protocol needs from the store, on both sides.
//!
//! The sending side exports objects with their chunk lists and reads chunk frames as
//! stored (still compressed). The receiving side asks which chunks it already holds,
//! writes the ones it receives through a [`ChunkSink`], and commits the transfer's objects
//! in bounded groups with [`Store::commit_transfer_part`], the last with
//! [`Store::commit_transfer`].
//!
//! A received chunk is durable and indexed as soon as its group is flushed, and holds one
//! reference for its transfer (a `TransferChunk` marker) until the transfer commits or is
//! released: GC keeps it across restarts, and a resumed transfer finds it held and does not
//! ask for it again.

use crate::Store;
use crate::chunks::PackWriter;
use crate::claims::ClaimSet;
use crate::error::StoreError;
use crate::meta::keys::{self, TRANSFER_ID_LEN};
use crate::meta::values::{
    Body, ChunkLoc, ChunkRef, ObjectHead, ObjectRecord, PackRecord, TransferChunk, TransferRecord,
};
use crate::meta::{RawEntry, cf};
use bytes::Bytes;
use hw_offload::ChunkId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A transfer's id.
pub type TransferId = [u8; TRANSFER_ID_LEN];

/// Chunks a transfer relies on, kept from GC until it is dropped (in memory only: after
/// a restart the transfer looks again).
#[derive(Debug)]
pub struct TransferPin {
    claims: ClaimSet,
}

/// An object as a transfer sends it.
#[derive(Debug, Clone)]
pub struct ExportedObject {
    /// its record (size, ETag, checksums, metadata); an inline object's bytes are moved
    /// out into `inline`, leaving an empty inline body here
    pub record: ObjectRecord,
    /// its chunks in order; for an inline object, the one pseudo-chunk of its bytes
    pub chunks: Vec<ChunkRef>,
    /// an inline object's bytes
    pub inline: Option<Bytes>,
}

/// A page of [`Store::export_page`].
#[derive(Debug)]
pub struct ExportedPage {
    /// the objects with their keys, in key order
    pub objects: Vec<(String, ExportedObject)>,
    /// the last key of a page that is not the listing's last (to list on after it)
    pub last: Option<String>,
}

/// An object a transfer brings in, committed by [`Store::commit_transfer`].
#[derive(Debug, Clone)]
pub struct TransferredObject {
    /// destination bucket
    pub bucket: String,
    /// destination key
    pub key: String,
    /// as the source has it: size, ETag, checksums, mtime, metadata, part sizes
    pub head: ObjectHead,
    /// chunks in order, each held by this store when committing
    pub chunks: Vec<ChunkRef>,
}

impl Store {
    /// A new, empty pin.
    pub fn transfer_pin(&self) -> TransferPin {
        TransferPin { claims: ClaimSet::new(self.claims.clone()) }
    }

    /// Which of `ids` this store holds in its index. Each is claimed in `pin` before the
    /// lookup, so a chunk found held stays until the pin is dropped.
    pub fn hold_chunks(&self, pin: &mut TransferPin, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        pin.claims.claim_all(ids.iter().copied());
        let keys: Vec<[u8; 32]> = ids.iter().map(keys::chunk_key).collect();
        self.meta.contains_many(cf::CHUNKS, &keys)
    }

    /// Which of `ids`, offered by the site `site` in `transfer`, this store holds and may
    /// say it holds: a chunk that site may read here anyway, or one this transfer brought
    /// in an earlier attempt. Any other is answered as missing, so that naming a chunk id
    /// neither makes an object point at data the sender never had nor tells the sender
    /// what is stored here (the destination of a pull included, unless the sender may
    /// read it); its bytes come again and the stored copy is kept.
    pub fn hold_chunks_for(
        &self,
        pin: &mut TransferPin,
        transfer: &TransferId,
        site: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<bool>, StoreError> {
        let mut held = self.hold_chunks(pin, ids)?;
        let found: Vec<usize> = (0..ids.len()).filter(|&i| held[i]).collect();
        if found.is_empty() {
            return Ok(held);
        }
        let found_ids: Vec<ChunkId> = found.iter().map(|&i| ids[i]).collect();
        let readable = self.chunks_readable_by(site, &found_ids)?;
        let markers: Vec<_> = found_ids.iter().map(|id| keys::transfer_chunk_key(transfer, id)).collect();
        let brought = self.meta.contains_many(cf::TRANSFER_CHUNKS, &markers)?;
        for (k, i) in found.into_iter().enumerate() {
            held[i] = readable[k] || brought[k];
        }
        Ok(held)
    }

    /// The object at `bucket/key` with its chunk list, claimed in `pin`. An inline
    /// object is exported as one pseudo-chunk named by the BLAKE3 of its bytes.
    pub fn export_object(&self, pin: &mut TransferPin, bucket: &str, key: &str) -> Result<ExportedObject, StoreError> {
        let pinned = self.pin_object(bucket, key)?;
        Ok(Self::exported(pin, pinned))
    }

    /// Up to `max` objects of `bucket` under `prefix` after the key `after`, in key
    /// order, exported as [`Store::export_object`] does, from one scan: an inline object
    /// is not read again. `None` as the last key when the listing is complete.
    pub fn export_page(
        &self,
        pin: &mut TransferPin,
        bucket: &str,
        prefix: &str,
        after: &str,
        max: usize,
    ) -> Result<ExportedPage, StoreError> {
        self.bucket(bucket)?;
        let bucket_prefix = keys::bucket_prefix(bucket);
        let mut from = keys::object_key(bucket, after);
        from.push(0); // strictly after `after`
        let mut page = Vec::new();
        for item in self.meta.scan::<ObjectRecord>(cf::OBJECTS, &keys::object_key(bucket, prefix), &from) {
            let (raw_key, record) = item?;
            let key = keys::object_name(&raw_key, &bucket_prefix)?;
            if page.len() >= max {
                let last = page.last().map(|(k, _): &(String, ExportedObject)| k.clone());
                return Ok(ExportedPage { objects: page, last });
            }
            let pinned = match self.pin_record(bucket, key, record) {
                Ok(p) => p,
                // Deleted since the scan saw it: not part of the listing.
                Err(StoreError::NoSuchKey { .. }) => continue,
                Err(e) => return Err(e),
            };
            page.push((key.to_owned(), Self::exported(pin, pinned)));
        }
        Ok(ExportedPage { objects: page, last: None })
    }

    fn exported(pin: &mut TransferPin, pinned: crate::objects::Pinned) -> ExportedObject {
        pin.claims.absorb(pinned.claims);
        let mut record = pinned.record;
        // The bytes move to `inline` (not copied); the record keeps an empty body.
        let (chunks, inline) = match std::mem::replace(&mut record.body, Body::Inline(Vec::new())) {
            Body::Inline(data) if data.is_empty() => (Vec::new(), None),
            Body::Inline(data) => {
                (vec![ChunkRef { id: ChunkId::of(&data), len: data.len() as u32 }], Some(Bytes::from(data)))
            }
            body @ (Body::Manifest(_) | Body::Chunks(_)) => {
                record.body = body;
                (pinned.chunks, None)
            }
        };
        ExportedObject { record, chunks, inline }
    }

    /// A chunk's frame exactly as stored (header and compressed payload), not verified:
    /// the receiver verifies. `None` when the chunk is not held.
    pub async fn read_frame(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError> {
        let Some(loc) = self.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(id))? else { return Ok(None) };
        match self.chunks.read(loc.pack, loc.offset, loc.frame_len).await {
            Ok(raw) => Ok(Some(raw)),
            // GC may have moved it to another pack since the lookup.
            Err(_) => match self.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(id))? {
                Some(loc) => Ok(Some(self.chunks.read(loc.pack, loc.offset, loc.frame_len).await?)),
                None => Ok(None),
            },
        }
    }

    /// A held chunk's plain bytes, verified (a corrupt copy is quarantined and is an
    /// error). `None` when the chunk is not held.
    pub async fn read_chunk_by_id(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError> {
        let Some(loc) = self.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(id))? else { return Ok(None) };
        self.read_chunk(&ChunkRef { id: *id, len: loc.plain_len }).await.map(Some)
    }

    /// Chunks in quarantine (found corrupt, out of the index), to fetch again from a peer.
    pub fn quarantined(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.meta
            .scan_raw(cf::QUARANTINE, &[], None)
            .map(|r| {
                let (k, _) = r?;
                keys::decode_chunk_key(&k).ok_or(StoreError::CorruptMetadata {
                    kind: "quarantine",
                    reason: format!("key of {} bytes", k.len()),
                })
            })
            .collect()
    }

    /// Starts receiving chunks for `transfer`. A transfer that is to resume after a
    /// restart saves its record first ([`Store::save_transfer`]); the chunks of one that
    /// did not are let go at the next start ([`Store::release_unrecorded_transfers`]).
    pub fn chunk_sink(self: &Arc<Self>, transfer: TransferId) -> ChunkSink {
        ChunkSink {
            store: self.clone(),
            transfer,
            pack: None,
            unflushed: Vec::new(),
            unflushed_bytes: 0,
            claims: ClaimSet::new(self.claims.clone()),
        }
    }

    /// Records (or replaces) what is needed to resume `transfer` after a restart.
    pub async fn save_transfer(&self, transfer: TransferId, spec: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = self.meta.batch();
        batch.put(cf::TRANSFERS, &transfer, &TransferRecord { created_ms: crate::now_ms(), spec });
        self.commit(batch).await
    }

    /// Unfinished transfers, oldest first by id order.
    pub fn saved_transfers(&self) -> Result<Vec<(TransferId, TransferRecord)>, StoreError> {
        self.meta
            .scan::<TransferRecord>(cf::TRANSFERS, &[], &[])
            .map(|r| {
                let (k, v) = r?;
                let id = TransferId::try_from(&k[..]).map_err(|_| StoreError::CorruptMetadata {
                    kind: "transfer",
                    reason: format!("key of {} bytes", k.len()),
                })?;
                Ok((id, v))
            })
            .collect()
    }

    /// Forgets `transfer`: its record and the references its received chunks hold (they
    /// become garbage unless an object uses them), once its flushes already started have
    /// landed. Runs to its end even if the caller goes away (see [`PendingFlush::finish`]).
    pub async fn release_transfer(&self, transfer: TransferId) -> Result<(), StoreError> {
        match self.me.upgrade() {
            Some(store) => tokio::spawn(async move { store.release_transfer_now(transfer).await })
                .await
                .map_err(|e| StoreError::Backend(format!("release task: {e}")))?,
            None => self.release_transfer_now(transfer).await,
        }
    }

    async fn release_transfer_now(&self, transfer: TransferId) -> Result<(), StoreError> {
        loop {
            let landed = self.flush_landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if !self.flushes.lock().contains_key(&transfer) {
                break;
            }
            landed.await;
        }
        let _markers_stay = self.lock_transfer(&transfer).await;
        let mut batch = self.meta.batch();
        let mut deltas = HashMap::new();
        self.stage_release(&mut batch, &transfer, &self.transfer_markers(&transfer)?, &mut deltas);
        batch.add_refs(deltas);
        self.commit(batch).await
    }

    /// Releases the transfers that hold received chunks but saved no record
    /// ([`Store::save_transfer`]): nothing can resume them after a restart (a stage-out
    /// session lives in memory only), so nothing would ever commit or release them and
    /// their chunks would never become garbage. Answers how many were released. Call it
    /// at start, before anything receives into a transfer that saves no record.
    pub async fn release_unrecorded_transfers(&self) -> Result<usize, StoreError> {
        let mut holding = Vec::new();
        let mut from = Vec::new();
        // One seek per transfer, past its markers, not a read of every marker.
        while let Some(entry) = self.meta.scan_raw(cf::TRANSFER_CHUNKS, &from, None).next() {
            let (key, _) = entry?;
            let Some((transfer, _)) = keys::decode_transfer_chunk_key(&key) else {
                return Err(StoreError::CorruptMetadata {
                    kind: "transfer chunk",
                    reason: format!("key of {} bytes", key.len()),
                });
            };
            holding.push(transfer);
            from = markers_end(&transfer);
        }
        let recorded = self.meta.contains_many(cf::TRANSFERS, &holding)?;
        let mut released = 0;
        for (transfer, recorded) in holding.into_iter().zip(recorded) {
            if !recorded {
                self.release_transfer(transfer).await?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// The chunks `transfer` holds a reference to (a marker each), in id order.
    fn transfer_markers(&self, transfer: &TransferId) -> Result<Vec<Marker>, StoreError> {
        let mut held = Vec::new();
        for entry in self.meta.scan_raw(cf::TRANSFER_CHUNKS, transfer, Some(markers_end(transfer))) {
            let (k, v): RawEntry = entry?;
            if let Some((_, id)) = keys::decode_transfer_chunk_key(&k) {
                // A value this build cannot read only costs the commit a lookup: the
                // marker's key is what holds the reference, and releases it.
                held.push(Marker { id, plain_len: TransferChunk::length(&v).unwrap_or(None) });
            }
        }
        Ok(held)
    }

    /// The markers `transfer` holds among the chunks of `refs` (in id order), in id order.
    fn markers_of(&self, transfer: &TransferId, refs: &[(ChunkId, u32)]) -> Result<Vec<Marker>, StoreError> {
        let keys: Vec<_> = refs.iter().map(|(id, _)| keys::transfer_chunk_key(transfer, id)).collect();
        let mut held = Vec::new();
        for (&(id, _), raw) in refs.iter().zip(self.meta.get_many_raw(cf::TRANSFER_CHUNKS, &keys)?) {
            if let Some(raw) = raw {
                held.push(Marker { id, plain_len: TransferChunk::length(&raw).unwrap_or(None) });
            }
        }
        Ok(held)
    }

    /// Stages the deletion of `transfer`'s record and `markers` (read under its lock);
    /// the references they held go into `deltas`, so that a commit adding references to
    /// the same chunks writes one reference change per chunk, not two.
    pub(crate) fn stage_release(
        &self,
        batch: &mut crate::meta::Batch,
        transfer: &TransferId,
        markers: &[Marker],
        deltas: &mut HashMap<ChunkId, i64>,
    ) {
        for Marker { id, .. } in markers {
            *deltas.entry(*id).or_default() -= 1;
        }
        // One tombstone for all the markers, not one per chunk. The caller holds the
        // transfer's lock: no marker can have been added since they were read.
        if !markers.is_empty() {
            batch.delete_range(cf::TRANSFER_CHUNKS, transfer, &markers_end(transfer));
        }
        batch.delete(cf::TRANSFERS, transfer);
    }

    /// Checks the chunks a commit of `transfer` references (under the transfer's lock):
    /// each held, with the length given, none quarantined. Returns the markers the commit
    /// releases and a pin holding the chunks the transfer did not bring until it lands.
    pub(crate) fn check_transfer_refs<'a>(
        &self,
        transfer: &TransferId,
        chunks: impl Iterator<Item = &'a ChunkRef>,
        release: Release,
    ) -> Result<(Vec<Marker>, TransferPin), StoreError> {
        // Read under the transfer's lock, so that no flush, commit or release of the same
        // transfer (an attempt and its resumption) changes them meanwhile. The chunks they
        // name stay referenced until the batch below releases them: no claim needed.
        // Each referenced chunk with the length the objects give it, in id order; the same
        // id with two lengths is a lie in the objects themselves.
        let mut refs: Vec<(ChunkId, u32)> = chunks.map(|c| (c.id, c.len)).collect();
        refs.sort_unstable();
        refs.dedup();
        if let Some(pair) = refs.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(StoreError::ConflictingLengths { id: pair[0].0, one: pair[0].1, other: pair[1].1 });
        }
        // All the markers when they are released; else only those of this group's chunks,
        // looked up: a group costs its own size, not the transfer's.
        let markers = match release {
            Release::Transfer => self.transfer_markers(transfer)?,
            Release::Nothing => self.markers_of(transfer, &refs)?,
        };
        let mismatch = |id: ChunkId, referenced: u32, held: u32| {
            (held != referenced).then_some(StoreError::ChunkLengthMismatch { id, referenced, held })
        };
        // Every referenced chunk must be in the index (not quarantined by a scrub or a
        // read meanwhile) with the length the objects give it. A peer naming a chunk this
        // store already held with another length would otherwise make every object it
        // sends over that chunk unreadable: refused here, nothing is committed. The
        // chunks the transfer brought carry their verified length in their markers (both
        // lists are in id order: one merge); the others, and markers from before lengths
        // were kept, are looked up.
        let (mut brought, mut lookup, mut claim) = (Vec::new(), Vec::new(), Vec::new());
        let mut markers_left = markers.iter().peekable();
        for &(id, referenced) in &refs {
            while markers_left.next_if(|m| m.id < id).is_some() {}
            match markers_left.peek() {
                Some(Marker { id: marked, plain_len: Some(held) }) if *marked == id => {
                    if let Some(e) = mismatch(id, referenced, *held) {
                        return Err(e);
                    }
                    brought.push(id);
                }
                Some(Marker { id: marked, plain_len: None }) if *marked == id => lookup.push((id, referenced)),
                _ => {
                    lookup.push((id, referenced));
                    claim.push(id);
                }
            }
        }
        // Hold the chunks the transfer did not bring: one held when the receiver looked
        // stays now. Those it brought stay referenced by their markers.
        let mut pin = self.transfer_pin();
        pin.claims.claim_all(claim);
        let lookup_keys: Vec<_> = lookup.iter().map(|(id, _)| keys::chunk_key(id)).collect();
        for (&(id, referenced), loc) in lookup.iter().zip(self.meta.get_many::<ChunkLoc, _>(cf::CHUNKS, &lookup_keys)?)
        {
            let loc = loc.ok_or(StoreError::MissingChunk(id))?;
            if let Some(e) = mismatch(id, referenced, loc.plain_len) {
                return Err(e);
            }
        }
        // A chunk the transfer brought can have left the index since: not through GC
        // (its marker counts), only quarantined by a scrub or a read that found it
        // corrupt. Usually nothing is in quarantine, and one seek says so.
        if self.meta.any_in_range(cf::QUARANTINE, &[0; 32], &[0xff; 32])? {
            let brought_keys: Vec<_> = brought.iter().map(keys::chunk_key).collect();
            for (id, indexed) in brought.iter().zip(self.meta.contains_many(cf::CHUNKS, &brought_keys)?) {
                if !indexed {
                    return Err(StoreError::MissingChunk(*id));
                }
            }
        }
        Ok((markers, pin))
    }

    /// Commits the last objects of `transfer` in one batch, replacing what is at their
    /// keys, then releases the transfer. Every chunk they name must be held.
    pub async fn commit_transfer(
        &self,
        transfer: TransferId,
        objects: Vec<TransferredObject>,
    ) -> Result<(), StoreError> {
        self.commit_transfer_group(transfer, objects, Release::Transfer).await
    }

    /// Commits some objects of `transfer` in one batch, as [`Store::commit_transfer`]
    /// does, but keeps the transfer and every chunk it brought for the objects still to
    /// come: a long transfer lands in bounded groups, never in one batch of everything.
    pub async fn commit_transfer_part(
        &self,
        transfer: TransferId,
        objects: Vec<TransferredObject>,
    ) -> Result<(), StoreError> {
        self.commit_transfer_group(transfer, objects, Release::Nothing).await
    }

    async fn commit_transfer_group(
        &self,
        transfer: TransferId,
        objects: Vec<TransferredObject>,
        release: Release,
    ) -> Result<(), StoreError> {
        let _markers_stay = self.lock_transfer(&transfer).await;
        let buckets: BTreeSet<usize> = objects.iter().map(|o| crate::stripe(&o.bucket.as_str())).collect();
        let key_stripes: BTreeSet<usize> =
            objects.iter().map(|o| crate::stripe(&(o.bucket.as_str(), o.key.as_str()))).collect();
        // Stripes in ascending order, buckets before keys: the order every writer uses.
        let mut bucket_guards = Vec::with_capacity(buckets.len());
        for stripe in buckets {
            bucket_guards.push(self.bucket_locks[stripe].read().await);
        }
        let mut key_guards = Vec::with_capacity(key_stripes.len());
        for stripe in key_stripes {
            key_guards.push(self.key_locks[stripe].lock().await);
        }
        let (markers, _pin) =
            self.check_transfer_refs(&transfer, objects.iter().flat_map(|o| o.chunks.iter()), release)?;
        let mut batch = self.meta.batch();
        let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
        let mut checked_buckets = BTreeSet::new();
        // The objects being replaced, in one batched lookup (under the key locks).
        let okeys: Vec<_> = objects.iter().map(|o| keys::object_key(&o.bucket, &o.key)).collect();
        // Into an empty range of keys (a first copy), there is nothing to replace: one
        // seek says so, instead of a lookup per object.
        let (first, last) = (okeys.iter().min(), okeys.iter().max());
        let replaced = match (first, last) {
            (Some(first), Some(last)) if self.meta.any_in_range(cf::OBJECTS, first, last)? => {
                self.meta.get_many::<ObjectRecord, _>(cf::OBJECTS, &okeys)?
            }
            _ => vec![None; okeys.len()],
        };
        for ((o, okey), old) in objects.into_iter().zip(okeys).zip(replaced) {
            if !checked_buckets.contains(&o.bucket) {
                checked_buckets.insert(o.bucket.clone());
                self.bucket(&o.bucket)?;
            }
            if let Some(old) = old {
                self.release_body(&mut batch, &o.bucket, &old.body, &mut deltas)?;
            }
            let body = if o.chunks.is_empty() {
                Body::Inline(Vec::new())
            } else {
                for c in &o.chunks {
                    *deltas.entry(c.id).or_default() += 1;
                }
                crate::objects::stage_body(&mut batch, &o.bucket, o.chunks)
            };
            let record = ObjectRecord { head: o.head, body };
            batch.put(cf::OBJECTS, &okey, &record);
        }
        if release == Release::Transfer {
            self.stage_release(&mut batch, &transfer, &markers, &mut deltas);
        }
        // Where an object's reference replaces the transfer's, the sum is 0: nothing written.
        batch.add_refs(deltas);
        self.commit(batch).await?;
        drop(key_guards);
        drop(bucket_guards);
        Ok(())
    }
}

/// What a commit of a transfer's objects lets go of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// the transfer and the references of every chunk it brought: its last commit
    Transfer,
    /// nothing: more objects of the transfer are to come
    Nothing,
}

/// A chunk a transfer brought, as its marker records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    id: ChunkId,
    /// None for a marker written before markers kept lengths
    plain_len: Option<u32>,
}

/// Past every marker key of `transfer` (its id and 32 bytes), even for an id of all
/// 0xff bytes.
fn markers_end(transfer: &TransferId) -> Vec<u8> {
    keys::prefix_successor(transfer).unwrap_or_else(|| [&transfer[..], &[0xff; 33]].concat())
}

/// Writes a transfer's received chunks into packs; [`ChunkSink::flush`] makes them
/// durable and held.
pub struct ChunkSink {
    store: Arc<Store>,
    transfer: TransferId,
    pack: Option<PackWriter>,
    unflushed: Vec<(ChunkId, ChunkLoc)>,
    unflushed_bytes: u64,
    claims: ClaimSet,
}

impl ChunkSink {
    /// Appends a chunk frame the caller has verified (id, lengths and content).
    pub async fn append(&mut self, id: ChunkId, frame: Bytes, plain_len: u32) -> Result<(), StoreError> {
        self.append_pieces(id, [frame], plain_len).await
    }

    /// [`Self::append`] of a frame given as pieces (a header and the payload where it
    /// already is), written out without joining them.
    pub async fn append_pieces<const N: usize>(
        &mut self,
        id: ChunkId,
        frame: [Bytes; N],
        plain_len: u32,
    ) -> Result<(), StoreError> {
        let frame_len: u64 = frame.iter().map(|piece| piece.len() as u64).sum();
        // The chunk itself needs no claim yet: GC cannot see it until its group is
        // flushed, and the flush claims the group before it looks at the index.
        if self.pack.is_none() {
            let pack = rand::random::<u64>();
            self.claims.open_pack(pack);
            self.pack = Some(self.store.chunks.start_pack(pack)?);
        }
        let pack = self.pack.as_mut().expect("opened above");
        let loc = ChunkLoc { pack: pack.id(), offset: pack.len(), frame_len: frame_len as u32, plain_len };
        self.unflushed_bytes += frame_len;
        pack.append_pieces(frame).await?;
        self.unflushed.push((id, loc));
        Ok(())
    }

    /// Frame bytes appended since the last flush.
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed_bytes
    }

    /// Chunks appended since the last flush.
    pub fn unflushed_chunks(&self) -> usize {
        self.unflushed.len()
    }

    /// Seals the open pack and commits its chunks to the index, each holding a reference
    /// for the transfer. Returns the ids now held.
    pub async fn flush(&mut self) -> Result<Vec<ChunkId>, StoreError> {
        match self.start_flush() {
            Some(pending) => pending.finish().await,
            None => Ok(Vec::new()),
        }
    }

    /// Takes the open pack and its chunks out, to be made durable by
    /// [`PendingFlush::finish`] while this sink goes on receiving into a new pack. Finish
    /// each before starting the next: two groups committing at once could both count a
    /// chunk as new. The group claims its chunks until it is durable; from then on their
    /// transfer markers hold them.
    pub fn start_flush(&mut self) -> Option<PendingFlush> {
        let pack = self.pack.take()?;
        self.unflushed_bytes = 0;
        // Its own claims: GC must not take the pack or its chunks for garbage even if the
        // sink is dropped (a failed transfer) before the group is committed.
        let mut claims = ClaimSet::new(self.store.claims.clone());
        claims.open_pack(pack.id());
        claims.claim_all(self.unflushed.iter().map(|(id, _)| *id));
        *self.store.flushes.lock().entry(self.transfer).or_default() += 1;
        Some(PendingFlush {
            store: self.store.clone(),
            transfer: self.transfer,
            pack,
            chunks: std::mem::take(&mut self.unflushed),
            _claims: claims,
            _landing: Landing { store: self.store.clone(), transfer: self.transfer },
        })
    }
}

/// A group of received chunks on its way to durability (see [`ChunkSink::start_flush`]).
pub struct PendingFlush {
    store: Arc<Store>,
    transfer: TransferId,
    pack: PackWriter,
    chunks: Vec<(ChunkId, ChunkLoc)>,
    _claims: ClaimSet,
    _landing: Landing,
}

/// Counts a flush of its transfer as started until it lands or is dropped unfinished
/// (see `Store::flushes`).
struct Landing {
    store: Arc<Store>,
    transfer: TransferId,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut flushes = self.store.flushes.lock();
        if let Some(n) = flushes.get_mut(&self.transfer) {
            *n -= 1;
            if *n == 0 {
                flushes.remove(&self.transfer);
            }
        }
        drop(flushes);
        self.store.flush_landed.notify_waiters();
    }
}

impl PendingFlush {
    /// Seals the pack and commits its chunks to the index, each holding a reference for
    /// the transfer. Returns the ids now held.
    ///
    /// Runs in a task of its own, to its end even if the caller goes away (a client that
    /// hung up), and a release of the transfer waits for it: a release reading the markers
    /// before its commit lands would delete ones whose references it never takes back,
    /// and those chunks could never be collected.
    pub async fn finish(self) -> Result<Vec<ChunkId>, StoreError> {
        tokio::spawn(self.finish_now()).await.map_err(|e| StoreError::Backend(format!("flush task: {e}")))?
    }

    async fn finish_now(self) -> Result<Vec<ChunkId>, StoreError> {
        let pack_id = self.pack.id();
        let bytes = self.pack.seal().await?;
        // Markers are added under the transfer's lock (see `commit_transfer`).
        let _markers_stay = self.store.lock_transfer(&self.transfer).await;
        let mut batch = self.store.meta.batch();
        batch.put(cf::PACKS, &keys::pack_key(pack_id), &PackRecord { bytes, created_ms: crate::now_ms() });
        // In id order: the index, the markers and the counts are all keyed by the id, and
        // RocksDB inserts keys in order far faster than scattered ones.
        let mut chunks = self.chunks;
        chunks.sort_by_key(|(id, _)| *id);
        chunks.dedup_by_key(|(id, _)| *id);
        // Three batched lookups for the whole group, not three per chunk.
        let keys: Vec<_> = chunks.iter().map(|(id, _)| keys::chunk_key(id)).collect();
        let markers: Vec<_> = chunks.iter().map(|(id, _)| keys::transfer_chunk_key(&self.transfer, id)).collect();
        let indexed = self.store.meta.contains_many(cf::CHUNKS, &keys)?;
        let quarantined = self.store.meta.contains_many(cf::QUARANTINE, &keys)?;
        let marked = self.store.meta.contains_many(cf::TRANSFER_CHUNKS, &markers)?;
        // Chunks this group brings back from quarantine (a repair) change the versions
        // that use them, in the same write.
        let repaired: Vec<ChunkId> = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| !indexed[*i] && quarantined[*i])
            .map(|(_, (id, _))| *id)
            .collect();
        let _versions = if repaired.is_empty() { None } else { Some(self.store.lock_versions().await) };
        let mut held = Vec::with_capacity(chunks.len());
        for (i, (id, loc)) in chunks.into_iter().enumerate() {
            // Another writer may have stored it meanwhile: keep its copy, ours is garbage.
            if !indexed[i] {
                batch.put(cf::CHUNKS, &keys[i], &loc);
                // Receiving a quarantined chunk is how a peer repairs it.
                if quarantined[i] {
                    batch.delete(cf::QUARANTINE, &keys[i]);
                }
            }
            if !marked[i] {
                batch.put(cf::TRANSFER_CHUNKS, &markers[i], &TransferChunk { plain_len: loc.plain_len });
                batch.add_ref(&id, 1);
            }
            held.push(id);
        }
        if !repaired.is_empty() {
            self.store.stage_availability(&mut batch, &[], &repaired)?;
        }
        self.store.commit(batch).await?;
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use hw_offload::{Codec, Offload};

    async fn receive(store: &Arc<Store>, transfer: TransferId, data: &[u8]) -> ChunkRef {
        let id = ChunkId::of(data);
        let mut sink = store.chunk_sink(transfer);
        sink.append(id, crate::frame::encode(&id, Codec::Raw, data.len() as u32, data), data.len() as u32)
            .await
            .unwrap();
        assert_eq!(sink.flush().await.unwrap(), [id]);
        ChunkRef { id, len: data.len() as u32 }
    }

    /// A store in a temporary directory (kept while the guard lives) with bucket "b".
    async fn store_with_bucket() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path()), Offload::cpu(1)).await.unwrap();
        store.create_bucket("b", "").await.unwrap();
        (dir, store)
    }

    fn object(key: &str, chunk: ChunkRef) -> TransferredObject {
        TransferredObject {
            bucket: "b".into(),
            key: key.into(),
            head: ObjectHead {
                size: chunk.len as u64,
                etag: "e".into(),
                checksums: Vec::new(),
                mtime_ms: 0,
                meta: Default::default(),
                part_sizes: Vec::new(),
            },
            chunks: vec![chunk],
        }
    }

    #[tokio::test]
    async fn a_commit_over_a_chunk_quarantined_since_its_flush_fails_and_loses_nothing() {
        let (_dir, store) = store_with_bucket().await;

        let (first, second) = (rand::random::<TransferId>(), rand::random::<TransferId>());
        let kept = receive(&store, first, b"the first transfer's chunk").await;
        store.commit_transfer(first, vec![object("kept", kept)]).await.unwrap();
        assert_eq!(store.meta.refcount(&kept.id).unwrap(), 1, "the object's reference, the marker's released");

        let doomed = receive(&store, second, b"found corrupt before its commit").await;
        let loc = store.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(&doomed.id)).unwrap().unwrap();
        store.quarantine(doomed.id, loc, "test".into()).await;
        assert!(matches!(
            store.commit_transfer(second, vec![object("lost", doomed)]).await,
            Err(StoreError::MissingChunk(id)) if id == doomed.id
        ));
        store.release_transfer(second).await.unwrap();
        assert!(matches!(store.head_object("b", "lost"), Err(StoreError::NoSuchKey { .. })));
        assert_eq!(store.head_object("b", "kept").unwrap().head.size, kept.len as u64);
        assert!(store.check().unwrap().is_clean(), "{:?}", store.check().unwrap());
    }

    /// A transfer that saved no record is released at start; one that did keeps its
    /// chunks for when it resumes.
    #[tokio::test]
    async fn transfers_without_a_record_are_released_and_the_others_kept() {
        let (_dir, store) = store_with_bucket().await;
        let (recorded, unrecorded) = (rand::random::<TransferId>(), rand::random::<TransferId>());
        store.save_transfer(recorded, b"spec".to_vec()).await.unwrap();
        let kept = receive(&store, recorded, b"a chunk of a transfer that resumes").await;
        let mut dropped = Vec::new();
        for i in 0..3u8 {
            dropped.push(receive(&store, unrecorded, &[b'x', i]).await);
        }
        assert_eq!(store.release_unrecorded_transfers().await.unwrap(), 1);
        assert_eq!(store.meta.refcount(&kept.id).unwrap(), 1, "still held by its transfer");
        for chunk in &dropped {
            assert_eq!(store.meta.refcount(&chunk.id).unwrap(), 0, "garbage now");
        }
        assert_eq!(store.saved_transfers().unwrap().len(), 1);
        assert_eq!(store.release_unrecorded_transfers().await.unwrap(), 0, "nothing left to release");
        assert!(store.check().unwrap().is_clean(), "an open transfer's references count: {:?}", store.check());
        store.release_transfer(recorded).await.unwrap();
        assert!(store.check().unwrap().is_clean(), "{:?}", store.check().unwrap());
    }

    /// A flush whose caller goes away (a client that hung up), wherever it stops, lands
    /// whole before a release of its transfer reads the markers: no reference is left
    /// behind that nothing holds.
    #[tokio::test]
    async fn a_flush_dropped_midway_then_released_leaves_no_reference_behind() {
        let (_dir, store) = store_with_bucket().await;
        for polls in 0..24 {
            let transfer = rand::random::<TransferId>();
            let data = format!("dropped after {polls} polls").into_bytes();
            let id = ChunkId::of(&data);
            let mut sink = store.chunk_sink(transfer);
            let frame = crate::frame::encode(&id, Codec::Raw, data.len() as u32, &data);
            sink.append(id, frame, data.len() as u32).await.unwrap();
            let mut flush = Box::pin(sink.start_flush().expect("a pack to flush").finish());
            for poll in 0..polls {
                if poll > 0 {
                    // Lets the blocking pool get on with the seal and the commit.
                    tokio::time::sleep(std::time::Duration::from_micros(100 * (polls % 4) as u64)).await;
                }
                if futures::poll!(flush.as_mut()).is_ready() {
                    break;
                }
            }
            drop(flush);
            store.release_transfer(transfer).await.unwrap();
            // A commit that outlived its caller's lock would land about now.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(store.meta.refcount(&id).unwrap(), 0, "after {polls} polls");
            assert!(store.check().unwrap().is_clean(), "after {polls} polls: {:?}", store.check());
        }
    }

    #[tokio::test]
    async fn a_quarantine_lands_and_lets_go_even_when_the_reader_that_found_it_is_not_polled() {
        let (_dir, store) = store_with_bucket().await;
        let transfer = rand::random::<TransferId>();
        let doomed = receive(&store, transfer, b"found corrupt by a reader that then went away").await;
        let key = keys::chunk_key(&doomed.id);
        let loc = store.meta.get::<ChunkLoc>(cf::CHUNKS, &key).unwrap().unwrap();
        // A version holds it, so its quarantine takes the versions lock.
        struct Quiet;
        impl crate::versions::ReplicaWatch for Quiet {
            fn record(&self, _: &[crate::versions::Availability]) -> Vec<crate::versions::CatalogWrite> {
                Vec::new()
            }
        }
        store.set_replica_watch(Arc::new(Quiet));
        store.commit_transfer_version(transfer, &[7; 32], vec![doomed], Vec::new()).await.unwrap();
        // Polled once, then neither polled nor dropped: a client that stopped reading.
        let mut reading = Box::pin(store.quarantine(doomed.id, loc, "test".into()));
        assert!(futures::poll!(reading.as_mut()).is_pending());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !store.meta.contains(cf::QUARANTINE, &key).unwrap() {
            assert!(std::time::Instant::now() < deadline, "the quarantine never landed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!store.meta.contains(cf::CHUNKS, &key).unwrap());
        // And it does not hold the versions lock.
        let lock = tokio::time::timeout(std::time::Duration::from_secs(10), store.lock_versions()).await;
        assert!(lock.is_ok(), "the versions lock is held by a reader nobody polls");
        drop(lock);
        drop(reading);
    }

    #[tokio::test]
    async fn a_transfer_naming_a_held_chunk_with_another_length_is_refused_at_commit() {
        let (_dir, store) = store_with_bucket().await;
        // Large enough to be chunked rather than kept inline.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.clone()))]);
        store.put_object("b", "theirs", Default::default(), body, &Default::default()).await.unwrap();
        let held = store.export_object(&mut store.transfer_pin(), "b", "theirs").unwrap().chunks[0];
        let (id, len) = (held.id, held.len);
        let lying = ChunkRef { id, len: len + 100 };
        let refused = store.commit_transfer(rand::random(), vec![object("evil", lying)]).await;
        assert!(
            matches!(refused, Err(StoreError::ChunkLengthMismatch { referenced, held, .. })
                if referenced == len + 100 && held == len),
            "{refused:?}"
        );
        assert!(matches!(store.head_object("b", "evil"), Err(StoreError::NoSuchKey { .. })));
        // One transfer naming one chunk with two lengths is refused too.
        let honest = ChunkRef { id, len };
        let twice = vec![object("one", honest), object("two", lying)];
        assert!(matches!(
            store.commit_transfer(rand::random(), twice).await,
            Err(StoreError::ConflictingLengths { one, other, .. }) if one == len && other == len + 100
        ));
        assert!(store.check().unwrap().is_clean(), "{:?}", store.check().unwrap());
    }

    #[tokio::test]
    async fn a_bad_length_in_one_object_never_quarantines_the_chunk_others_share() {
        let (_dir, store) = store_with_bucket().await;
        let transfer = rand::random::<TransferId>();
        let shared = receive(&store, transfer, b"a chunk two objects share").await;
        store.commit_transfer(transfer, vec![object("good", shared)]).await.unwrap();
        // An object whose record names the chunk with a wrong length (what a lying peer
        // could commit before commits checked lengths).
        let bad = ChunkRef { id: shared.id, len: shared.len + 1 };
        let mut batch = store.meta.batch();
        let head = object("bad", bad).head;
        batch.put(cf::OBJECTS, &keys::object_key("b", "bad"), &ObjectRecord { head, body: Body::Chunks(vec![bad]) });
        batch.add_ref(&shared.id, 1);
        store.commit(batch).await.unwrap();

        let read = |key: &'static str| {
            let store = store.clone();
            async move {
                let (_, _, stream) = store.get_object("b", key, None)?;
                futures::TryStreamExt::try_collect::<Vec<Bytes>>(stream).await.map(|pieces| pieces.concat())
            }
        };
        assert!(matches!(read("bad").await, Err(StoreError::ChunkLengthMismatch { .. })));
        assert!(matches!(read("bad").await, Err(StoreError::ChunkLengthMismatch { .. })), "and again: no quarantine");
        assert_eq!(read("good").await.unwrap(), b"a chunk two objects share");
        assert!(store.meta.get::<ChunkLoc>(cf::CHUNKS, &keys::chunk_key(&shared.id)).unwrap().is_some());
    }
}
