//! The protocol's state machines, without I/O: the driver feeds them the messages it
//! reads and the answers of the store, and sends what they return. Every rule a peer
//! could break is checked here, so the fuzzer and the tests reach it without sockets.

use super::wire::{
    ChunkRef, Control, MAX_CHUNK_LEN, MAX_DELTA_BASES, MAX_KEY_LEN, OFFER_MAX_CHUNKS, OFFER_MAX_OBJECTS, OfferedObject,
    Progress, Want,
};
use hw_offload::ChunkId;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How often a chunk that fails verification is asked for again before the transfer fails.
pub const MAX_RETRIES: u8 = 3;

/// A peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation: {0}")]
pub struct Violation(pub String);

fn violation<T>(what: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(what.into()))
}

/// An object the receiver is assembling from offers.
#[derive(Debug, Clone)]
pub struct IncomingObject {
    /// the offer's first entry for it, chunk list emptied
    pub head: OfferedObject,
    /// the chunk list so far
    pub chunks: Vec<ChunkRef>,
    /// whether the list is complete
    pub complete: bool,
}

/// The receiving side of one transfer.
#[derive(Debug, Default)]
pub struct Receiver {
    next_seq: u64,
    /// objects offered and not yet taken out to be committed, in key order
    objects: Vec<IncomingObject>,
    /// how many of `objects` (from the front) came in offers already answered: only
    /// those know which of their chunks are still to come
    answered: usize,
    /// chunk references in `objects`
    held_refs: usize,
    /// the key of the last object offered, taken out or not
    last_key: Option<String>,
    /// chunks asked for and not yet kept: plain length and failed attempts
    outstanding: HashMap<ChunkId, (u32, u8)>,
    /// every chunk looked up or asked for in this session, so none is asked twice
    known: HashSet<ChunkId>,
    /// offers announced by `OfferDone`
    offers_done: Option<u64>,
    /// offers waiting for the driver's lookup before their `Need` is sent
    unanswered: u64,
    progress: Progress,
}

impl Receiver {
    /// A receiver expecting offer 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes offer `seq` in; returns the ids the driver must look up in the store (each
    /// once per session), then answer with [`Receiver::need`].
    pub fn on_offer(&mut self, seq: u64, objects: Vec<OfferedObject>) -> Result<Vec<ChunkRef>, Violation> {
        if seq != self.next_seq {
            return violation(format!("offer {seq} out of order, expected {}", self.next_seq));
        }
        if self.offers_done.is_some() {
            return violation("offer after the manifest ended");
        }
        if objects.is_empty() || objects.len() > OFFER_MAX_OBJECTS {
            return violation(format!("offer of {} objects", objects.len()));
        }
        if objects.iter().map(|o| o.chunks.len()).sum::<usize>() > OFFER_MAX_CHUNKS {
            return violation("offer of too many chunks");
        }
        self.next_seq += 1;
        self.unanswered += 1;
        let mut lookup = Vec::new();
        for mut entry in objects {
            check_key(&entry.key)?;
            if entry.chunks.iter().any(|c| c.len == 0 || c.len > MAX_CHUNK_LEN) {
                return violation(format!("chunk of bad length in {:?}", entry.key));
            }
            let chunks = std::mem::take(&mut entry.chunks);
            let ends = entry.last;
            let continues = self.in_object();
            let object = if continues {
                let open = self.objects.last_mut().expect("checked above");
                if open.head.key != entry.key || open.chunks.len() as u64 != entry.first_chunk {
                    return violation(format!("{:?} does not continue {:?}", entry.key, open.head.key));
                }
                open
            } else {
                if entry.first_chunk != 0 {
                    return violation(format!("{:?} starts at chunk {}", entry.key, entry.first_chunk));
                }
                if self.last_key.as_ref().is_some_and(|last| *last >= entry.key) {
                    return violation(format!("{:?} is not in key order", entry.key));
                }
                self.last_key = Some(entry.key.clone());
                self.progress.objects += 1;
                self.progress.bytes_total += entry.size;
                self.objects.push(IncomingObject { head: entry, chunks: Vec::new(), complete: false });
                self.objects.last_mut().expect("pushed")
            };
            for c in &chunks {
                if self.known.insert(c.id) {
                    lookup.push(*c);
                }
            }
            self.progress.chunks_offered += chunks.len() as u64;
            self.held_refs += chunks.len();
            object.chunks.extend(chunks);
            if ends {
                let sum: u64 = object.chunks.iter().map(|c| c.len as u64).sum();
                if sum != object.head.size {
                    return violation(format!(
                        "{:?}: chunks sum to {sum} bytes, size is {}",
                        object.head.key, object.head.size
                    ));
                }
                object.complete = true;
            }
        }
        Ok(lookup)
    }

    /// The answer to offer `seq`: `missing` are the looked-up chunks the store lacks,
    /// each with the delta bases the driver chose for it.
    pub fn need(&mut self, seq: u64, missing: Vec<(ChunkRef, Vec<ChunkId>)>) -> Control {
        self.unanswered = self.unanswered.saturating_sub(1);
        if self.unanswered == 0 {
            self.answered = self.objects.len();
        }
        let mut wants = Vec::with_capacity(missing.len());
        for (c, bases) in missing {
            self.outstanding.insert(c.id, (c.len, 0));
            self.progress.chunks_wanted += 1;
            self.progress.bytes_wanted += c.len as u64;
            wants.push(Want { id: c.id, bases });
        }
        Control::Need { seq, wants }
    }

    /// A chunk arrived and verified: its bytes hash to `id` and are `plain_len` long.
    /// A length other than the offered one means the offer lied about this chunk (the
    /// object it belongs to would not add up): the transfer ends, nothing of it is kept.
    pub fn on_chunk(&mut self, id: &ChunkId, plain_len: u32, wire_bytes: u64, delta: bool) -> Result<(), Violation> {
        let Some(&(len, _)) = self.outstanding.get(id) else {
            return violation(format!("chunk {id} was not asked for"));
        };
        if plain_len != len {
            return violation(format!("chunk {id} is {plain_len} bytes long; it was offered as {len}"));
        }
        self.outstanding.remove(id);
        self.progress.chunks_done += 1;
        self.progress.bytes_done += len as u64;
        self.progress.wire_bytes += wire_bytes;
        self.progress.chunks_delta += delta as u64;
        Ok(())
    }

    /// A chunk arrived and failed verification: ask again, whole, up to
    /// [`MAX_RETRIES`] times. `Ok(None)` means give up.
    pub fn on_bad_chunk(&mut self, id: &ChunkId, wire_bytes: u64) -> Result<Option<Control>, Violation> {
        let Some((_, tries)) = self.outstanding.get_mut(id) else {
            return violation(format!("chunk {id} was not asked for"));
        };
        self.progress.wire_bytes += wire_bytes;
        self.progress.chunks_retried += 1;
        *tries += 1;
        if *tries > MAX_RETRIES {
            return Ok(None);
        }
        Ok(Some(Control::Retry { ids: vec![*id] }))
    }

    /// The sender says its manifest is complete after `offers` offers.
    pub fn on_offer_done(&mut self, offers: u64) -> Result<(), Violation> {
        if offers != self.next_seq || self.offers_done.is_some() {
            return violation(format!("manifest ends after {offers} offers, {} received", self.next_seq));
        }
        if self.in_object() {
            return violation("manifest ends inside an object");
        }
        self.offers_done = Some(offers);
        Ok(())
    }

    /// Whether every object is complete and every asked chunk kept.
    pub fn is_complete(&self) -> bool {
        self.offers_done.is_some() && self.unanswered == 0 && self.outstanding.is_empty()
    }

    /// The objects offered and not yet taken out, in key order.
    pub fn objects(&self) -> &[IncomingObject] {
        &self.objects
    }

    /// Objects held (offered, not yet taken out) and the chunk references they make: what
    /// the driver bounds by not reading offers while they are too many.
    pub fn holding(&self) -> (usize, usize) {
        (self.objects.len(), self.held_refs)
    }

    /// Whether the last object offered continues in the next offer. Offers must then be
    /// read, however many objects are held, or it could never end.
    pub fn in_object(&self) -> bool {
        self.objects.last().is_some_and(|o| !o.complete)
    }

    /// Takes out, to commit them now, the objects whose chunks are all in (or were held
    /// already), in key order; the others stay.
    pub fn take_ready(&mut self) -> Vec<IncomingObject> {
        let outstanding = &self.outstanding;
        let ready: Vec<IncomingObject> = self
            .objects
            .extract_if(..self.answered, |o| o.complete && !o.chunks.iter().any(|c| outstanding.contains_key(&c.id)))
            .collect();
        self.answered -= ready.len();
        self.held_refs -= ready.iter().map(|o| o.chunks.len()).sum::<usize>();
        ready
    }

    /// Takes the objects out (to commit them), leaving none.
    pub fn take_objects(&mut self) -> Vec<IncomingObject> {
        self.answered = 0;
        self.held_refs = 0;
        std::mem::take(&mut self.objects)
    }

    /// Counters so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Another connection carries data streams.
    pub fn connection_added(&mut self) {
        self.progress.connections += 1;
    }
}

fn check_key(key: &str) -> Result<(), Violation> {
    if key.len() > MAX_KEY_LEN || key.contains('\0') {
        return violation(format!("bad object key of {} bytes", key.len()));
    }
    Ok(())
}

/// The sending side of one transfer.
#[derive(Debug)]
pub struct Sender {
    next_seq: u64,
    window: usize,
    /// offers sent and not answered: the chunks each may be asked for
    awaiting: BTreeMap<u64, HashMap<ChunkId, u32>>,
    /// chunks asked for, so that retries can be checked
    wanted: HashMap<ChunkId, u32>,
    /// when the manifest ended
    offers_done: Option<u64>,
    progress: Progress,
}

impl Sender {
    /// A sender keeping at most `window` offers unanswered.
    pub fn new(window: usize) -> Self {
        Self {
            next_seq: 0,
            window: window.max(1),
            awaiting: BTreeMap::new(),
            wanted: HashMap::new(),
            offers_done: None,
            progress: Progress::default(),
        }
    }

    /// Whether another offer may be sent now.
    pub fn may_offer(&self) -> bool {
        self.offers_done.is_none() && self.awaiting.len() < self.window
    }

    /// Records and returns the next offer.
    pub fn offer(&mut self, objects: Vec<OfferedObject>) -> Control {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut ids = HashMap::new();
        for o in &objects {
            if o.first_chunk == 0 {
                self.progress.objects += 1;
                self.progress.bytes_total += o.size;
            }
            self.progress.chunks_offered += o.chunks.len() as u64;
            ids.extend(o.chunks.iter().map(|c| (c.id, c.len)));
        }
        self.awaiting.insert(seq, ids);
        Control::Offer { seq, objects }
    }

    /// Ends the manifest.
    pub fn offer_done(&mut self) -> Control {
        self.offers_done = Some(self.next_seq);
        Control::OfferDone { offers: self.next_seq }
    }

    /// The receiver's answer to an offer: the chunks to send. Only chunks of that offer
    /// may be asked for, so a peer can never read chunks outside the transfer.
    pub fn on_need(&mut self, seq: u64, wants: Vec<Want>) -> Result<Vec<(Want, u32)>, Violation> {
        let Some(offered) = self.awaiting.remove(&seq) else {
            return violation(format!("need for offer {seq}, which is not awaiting an answer"));
        };
        let mut out = Vec::with_capacity(wants.len());
        for want in wants {
            let Some(&len) = offered.get(&want.id) else {
                return violation(format!("chunk {} was not offered in offer {seq}", want.id));
            };
            let distinct: HashSet<&ChunkId> = want.bases.iter().collect();
            if want.bases.len() > MAX_DELTA_BASES || distinct.len() != want.bases.len() {
                return violation(format!(
                    "chunk {} wanted against {} bases ({} distinct; at most {MAX_DELTA_BASES})",
                    want.id,
                    want.bases.len(),
                    distinct.len()
                ));
            }
            if self.wanted.insert(want.id, len).is_none() {
                self.progress.chunks_wanted += 1;
                self.progress.bytes_wanted += len as u64;
                out.push((want, len));
            }
        }
        Ok(out)
    }

    /// Chunks to send again, whole.
    pub fn on_retry(&mut self, ids: Vec<ChunkId>) -> Result<Vec<(ChunkId, u32)>, Violation> {
        ids.into_iter()
            .map(|id| match self.wanted.get(&id) {
                Some(&len) => {
                    self.progress.chunks_retried += 1;
                    Ok((id, len))
                }
                None => violation(format!("retry of chunk {id}, which was not asked for")),
            })
            .collect()
    }

    /// A chunk was written to a data stream.
    pub fn sent(&mut self, plain_len: u32, wire_bytes: u64, delta: bool) {
        self.progress.chunks_done += 1;
        self.progress.bytes_done += plain_len as u64;
        self.progress.wire_bytes += wire_bytes;
        self.progress.chunks_delta += delta as u64;
    }

    /// Whether the manifest ended and every offer was answered.
    pub fn all_answered(&self) -> bool {
        self.offers_done.is_some() && self.awaiting.is_empty()
    }

    /// Counters so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Another connection carries data streams.
    pub fn connection_added(&mut self) {
        self.progress.connections += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { id: ChunkId::of(&[n]), len }
    }

    fn object(key: &str, first: u64, chunks: Vec<ChunkRef>, size: u64, last: bool) -> OfferedObject {
        OfferedObject {
            key: key.into(),
            size,
            etag: String::new(),
            checksums: Vec::new(),
            mtime_ms: 0,
            meta: Vec::new(),
            part_sizes: Vec::new(),
            first_chunk: first,
            chunks,
            last,
        }
    }

    #[test]
    fn a_whole_exchange() {
        let mut tx = Sender::new(2);
        let mut rx = Receiver::new();
        let (a, b, c) = (chunk(1, 10), chunk(2, 20), chunk(3, 5));
        // One object split over two offers, the second also holds a small object.
        let Control::Offer { seq, objects } = tx.offer(vec![object("big", 0, vec![a, b], 35, false)]) else { panic!() };
        let lookup = rx.on_offer(seq, objects).unwrap();
        assert_eq!(lookup, vec![a, b]);
        let Control::Offer { seq: s2, objects } =
            tx.offer(vec![object("big", 2, vec![c], 35, true), object("small", 0, vec![a], 10, true)])
        else {
            panic!()
        };
        assert!(!tx.may_offer(), "window of 2 offers is full");
        // `a` was already looked up: it is not looked up again.
        assert_eq!(rx.on_offer(s2, objects).unwrap(), vec![c]);
        let Control::OfferDone { offers } = tx.offer_done() else { panic!() };
        rx.on_offer_done(offers).unwrap();

        let Control::Need { seq, wants } = rx.need(0, vec![(b, vec![])]) else { panic!() };
        let to_send = tx.on_need(seq, wants).unwrap();
        assert_eq!(to_send.len(), 1);
        let Control::Need { seq, wants } = rx.need(s2, vec![(c, vec![a.id])]) else { panic!() };
        assert_eq!(tx.on_need(seq, wants).unwrap()[0].0.bases, vec![a.id]);
        assert!(tx.all_answered());

        assert!(!rx.is_complete());
        assert!(rx.on_chunk(&b.id, 21, 30, false).is_err(), "offered as 20 bytes");
        rx.on_chunk(&b.id, 20, 30, false).unwrap();
        // A bad copy is asked for again, and the retry is accepted by the sender.
        let Some(Control::Retry { ids }) = rx.on_bad_chunk(&c.id, 9).unwrap() else { panic!() };
        assert_eq!(tx.on_retry(ids).unwrap(), vec![(c.id, 5)]);
        rx.on_chunk(&c.id, 5, 9, false).unwrap();
        assert!(rx.is_complete());
        assert_eq!(rx.objects().len(), 2);
        assert_eq!(rx.objects()[0].chunks, vec![a, b, c]);
        assert!(rx.on_chunk(&c.id, 5, 1, false).is_err(), "a chunk is kept once");
    }

    #[test]
    fn objects_are_taken_out_as_their_chunks_come_in() {
        let mut rx = Receiver::new();
        let (a, b) = (chunk(1, 10), chunk(2, 20));
        let offer = vec![
            object("a-waits", 0, vec![a], 10, true),
            object("b-held", 0, vec![b], 20, true),
            object("c-empty", 0, vec![], 0, true),
            object("d-long", 0, vec![b], 40, false),
        ];
        rx.on_offer(0, offer).unwrap();
        assert!(rx.take_ready().is_empty(), "nothing is ready before the offer is answered");
        rx.need(0, vec![(a, vec![])]);
        assert!(rx.in_object());
        assert_eq!(rx.holding(), (4, 3));
        // b was held already, c has no chunks; a still comes and d still grows.
        let ready: Vec<String> = rx.take_ready().into_iter().map(|o| o.head.key).collect();
        assert_eq!(ready, ["b-held", "c-empty"]);
        assert_eq!(rx.holding(), (2, 2));
        rx.on_chunk(&a.id, 10, 10, false).unwrap();
        assert_eq!(rx.take_ready().into_iter().map(|o| o.head.key).collect::<Vec<_>>(), ["a-waits"]);
        rx.on_offer(1, vec![object("d-long", 1, vec![b], 40, true)]).unwrap();
        rx.need(1, vec![]);
        assert_eq!(rx.take_ready().into_iter().map(|o| o.head.key).collect::<Vec<_>>(), ["d-long"]);
        assert_eq!(rx.holding(), (0, 0));
        // Key order holds across objects already taken out.
        let late = rx.on_offer(2, vec![object("c-late", 0, vec![], 0, true)]);
        assert!(late.unwrap_err().0.contains("not in key order"));
    }

    #[test]
    fn a_receiver_refuses_bad_offers() {
        let mut rx = Receiver::new();
        assert!(rx.on_offer(1, vec![object("k", 0, vec![], 0, true)]).is_err(), "out of order");
        assert!(rx.on_offer(0, vec![]).is_err(), "empty");
        let mut rx = Receiver::new();
        assert!(rx.on_offer(0, vec![object("k", 0, vec![chunk(1, 3)], 4, true)]).is_err(), "size mismatch");
        let mut rx = Receiver::new();
        assert!(rx.on_offer(0, vec![object("k", 1, vec![chunk(1, 3)], 3, true)]).is_err(), "starts mid-list");
        let mut rx = Receiver::new();
        assert!(rx.on_offer(0, vec![object("b", 0, vec![], 0, true), object("a", 0, vec![], 0, true)]).is_err());
        let mut rx = Receiver::new();
        assert!(rx.on_offer(0, vec![object("k", 0, vec![chunk(1, 0)], 0, true)]).is_err(), "empty chunk");
        let mut rx = Receiver::new();
        rx.on_offer(0, vec![object("k", 0, vec![chunk(1, 3)], 6, false)]).unwrap();
        assert!(rx.on_offer_done(1).is_err(), "ends inside an object");
        assert!(rx.on_chunk(&ChunkId::of(b"x"), 1, 1, false).is_err(), "unasked chunk");
        let mut rx = Receiver::new();
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(rx.on_offer(0, vec![object(&long, 0, vec![], 0, true)]).is_err());
    }

    #[test]
    fn a_sender_serves_only_what_it_offered() {
        let offered = || {
            let mut tx = Sender::new(4);
            let Control::Offer { seq, .. } = tx.offer(vec![object("k", 0, vec![chunk(1, 3)], 3, true)]) else {
                panic!()
            };
            (tx, seq)
        };
        let cases = [
            (Want { id: ChunkId::of(b"secret"), bases: vec![] }, "was not offered"),
            (
                Want { id: chunk(1, 3).id, bases: (0..=MAX_DELTA_BASES as u8).map(|i| ChunkId::of(&[i])).collect() },
                "bases",
            ),
            (Want { id: chunk(1, 3).id, bases: vec![ChunkId::of(b"b"); 2] }, "1 distinct"),
        ];
        for (want, why) in cases {
            let (mut tx, seq) = offered();
            let err = tx.on_need(seq, vec![want]).unwrap_err();
            assert!(err.0.contains(why), "{err:?} should say {why:?}");
        }
        let (mut tx, seq) = offered();
        assert!(tx.on_need(seq + 1, vec![]).is_err(), "no such offer");
        assert!(tx.on_retry(vec![ChunkId::of(b"secret")]).is_err());
    }

    #[test]
    fn retries_are_bounded() {
        let mut rx = Receiver::new();
        let c = chunk(1, 3);
        rx.on_offer(0, vec![object("k", 0, vec![c], 3, true)]).unwrap();
        rx.need(0, vec![(c, vec![])]);
        for _ in 0..MAX_RETRIES {
            assert!(rx.on_bad_chunk(&c.id, 1).unwrap().is_some());
        }
        assert!(rx.on_bad_chunk(&c.id, 1).unwrap().is_none());
    }
}
