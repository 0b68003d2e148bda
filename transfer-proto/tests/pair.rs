//! An in-memory sender/receiver pair: the protocol's state machines, wire codec, offer
//! cutting and deltas, driven the way the transfer engine drives them, between two fake
//! stores over a simulated network with virtual time, reordering, loss (as QUIC shows it:
//! a late retransmission) and connection cuts. No sockets and no sleeps: the whole file
//! runs in well under a second.

use bytes::{BufMut, Bytes, BytesMut};
use hw_offload::ChunkId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use transfer_proto::delta::{self, SuggestedBases};
use transfer_proto::offer::{OfferCutter, SourceObject};
use transfer_proto::session::{MAX_RETRIES, Receiver, Sender, Violation};
use transfer_proto::wire::{
    self, ChunkRef, Control, Data, MAX_CONTROL_LEN, MAX_DATA_LEN, Mode, OfferedObject, Open, Selection,
};

// ---------------------------------------------------------------- the fake store

/// A site's store: durable chunks by id and committed objects as chunk lists.
#[derive(Debug, Clone, Default, PartialEq)]
struct FakeStore {
    chunks: HashMap<ChunkId, Bytes>,
    objects: BTreeMap<String, Vec<ChunkRef>>,
}

impl FakeStore {
    /// Stores `data` under `key`, cut into chunks of `chunk_len` bytes.
    fn put(&mut self, key: &str, data: &[u8], chunk_len: usize) {
        let chunks = data
            .chunks(chunk_len)
            .map(|piece| {
                let id = ChunkId::of(piece);
                self.chunks.insert(id, Bytes::copy_from_slice(piece));
                ChunkRef { id, len: piece.len() as u32 }
            })
            .collect();
        self.objects.insert(key.to_owned(), chunks);
    }

    /// An object's bytes, every chunk verified.
    fn read(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.objects[key] {
            let bytes = &self.chunks[&c.id];
            assert_eq!(ChunkId::of(bytes), c.id, "a stored chunk holds its id's bytes");
            assert_eq!(bytes.len() as u32, c.len);
            out.extend_from_slice(bytes);
        }
        out
    }

    fn source_object(&self, key: &str, chunks: &[ChunkRef]) -> SourceObject {
        SourceObject {
            head: OfferedObject {
                key: key.to_owned(),
                size: chunks.iter().map(|c| c.len as u64).sum(),
                etag: format!("etag-of-{key}"),
                checksums: Vec::new(),
                mtime_ms: 1_700_000_000_000,
                meta: Vec::new(),
                part_sizes: Vec::new(),
                first_chunk: 0,
                chunks: Vec::new(),
                last: false,
            },
            chunks: chunks.to_vec(),
            inline: None,
        }
    }
}

/// The fake store's chunk frame, opaque to the protocol: `[plain length][id][payload]`,
/// the payload plain or, in a delta frame, coded against the bases.
fn frame(id: &ChunkId, plain_len: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(36 + payload.len());
    out.put_u32(plain_len);
    out.put_slice(&id.0);
    out.put_slice(payload);
    out.freeze()
}

fn unframe(raw: &Bytes) -> Option<(ChunkId, u32, Bytes)> {
    if raw.len() < 36 {
        return None;
    }
    let plain_len = u32::from_be_bytes(raw[..4].try_into().unwrap());
    Some((ChunkId(raw[4..36].try_into().unwrap()), plain_len, raw.slice(36..)))
}

// ---------------------------------------------------------------- the network

/// How the simulated network and the peers behave.
#[derive(Debug, Clone)]
struct Conditions {
    seed: u64,
    /// Data frames arrive 1 to this many ticks after they are sent (data streams are
    /// independent, so they overtake each other and the control stream).
    max_latency: u64,
    /// Fraction of data frames lost once: QUIC retransmits them `retransmit_after` later.
    loss: f64,
    retransmit_after: u64,
    /// The connection is cut at this tick: everything in flight is lost.
    cut_at: Option<u64>,
    /// The receiver makes received chunks durable every this many ticks (a cut loses the
    /// rest, as a crash loses the receiver's unflushed group).
    flush_every: u64,
    lies: Lies,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            seed: 1,
            max_latency: 1,
            loss: 0.0,
            retransmit_after: 20,
            cut_at: None,
            flush_every: 4,
            lies: Lies::default(),
        }
    }
}

/// What a lying peer does.
#[derive(Debug, Clone, Default)]
struct Lies {
    /// The sender sends other bytes under this chunk's id, every time it is asked.
    wrong_bytes: Option<ChunkId>,
    /// The sender offers this chunk one byte longer than it is (and its object one byte
    /// larger, so the offer adds up).
    wrong_length: Option<ChunkId>,
    /// The receiver asks for a chunk that was never offered.
    ask_unoffered: bool,
    /// The sender codes chunks as deltas against a chunk the receiver never suggested.
    unsuggested_base: Option<ChunkId>,
}

enum Packet {
    /// A control frame from the sender, on the control stream.
    ToReceiver(Bytes),
    /// A control frame from the receiver.
    ToSender(Bytes),
    /// A data frame, on one of the data streams.
    Data(Bytes),
}

struct Net {
    rng: StdRng,
    now: u64,
    sent: u64,
    /// (arrival tick, send order, packet)
    in_flight: Vec<(u64, u64, Packet)>,
    conditions: Conditions,
}

impl Net {
    fn send(&mut self, packet: Packet) {
        let delay = match &packet {
            // One ordered stream each way: a fixed delay keeps it in order.
            Packet::ToReceiver(_) | Packet::ToSender(_) => 1,
            Packet::Data(_) => {
                let mut delay = self.rng.gen_range(1..=self.conditions.max_latency);
                if self.rng.gen_bool(self.conditions.loss) {
                    delay += self.conditions.retransmit_after;
                }
                delay
            }
        };
        self.sent += 1;
        self.in_flight.push((self.now + delay, self.sent, packet));
    }

    /// The packets due now, in arrival order.
    fn due(&mut self) -> Vec<Packet> {
        let (mut due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|(at, _, _)| *at <= self.now);
        self.in_flight = later;
        due.sort_by_key(|(at, order, _)| (*at, *order));
        due.into_iter().map(|(_, _, p)| p).collect()
    }
}

// ---------------------------------------------------------------- the two ends

/// How one attempt ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The receiver committed this many objects.
    Committed(u64),
    /// The connection was cut.
    Cut,
    /// A peer broke the protocol; the side that noticed says why.
    Violation(String),
    /// A chunk kept failing verification.
    GaveUp(String),
}

/// Counters of one attempt, as the receiver saw them.
#[derive(Debug, Default)]
struct Seen {
    chunks_wanted: u64,
    chunks_delta: u64,
    wire_bytes: u64,
    bytes_done: u64,
    retries: u64,
}

struct SendingEnd<'a> {
    store: &'a FakeStore,
    session: Sender,
    cutter: OfferCutter,
    objects: std::vec::IntoIter<SourceObject>,
    manifest_done: bool,
    lies: Lies,
}

impl<'a> SendingEnd<'a> {
    fn new(store: &'a FakeStore, source: Selection, lies: Lies) -> Self {
        let mut objects: Vec<SourceObject> = store
            .objects
            .range(source.prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&source.prefix))
            .map(|(key, chunks)| store.source_object(&key[source.prefix.len()..], chunks))
            .collect();
        if let Some(liar) = lies.wrong_length {
            for o in &mut objects {
                for c in o.chunks.iter_mut().filter(|c| c.id == liar) {
                    c.len += 1;
                    o.head.size += 1;
                }
            }
        }
        Self {
            store,
            session: Sender::new(4),
            cutter: OfferCutter::new(),
            objects: objects.into_iter(),
            manifest_done: false,
            lies,
        }
    }

    fn offer(&mut self, net: &mut Net) {
        while !self.manifest_done && self.session.may_offer() {
            let objects = &mut self.objects;
            let offer = self.cutter.next_offer(|| Ok::<_, ()>(objects.next())).unwrap();
            let msg = if offer.objects.is_empty() {
                self.manifest_done = true;
                self.session.offer_done()
            } else {
                self.session.offer(offer.objects)
            };
            net.send(Packet::ToReceiver(wire::encode_control(&msg)));
        }
    }

    fn on_control(&mut self, msg: Control, net: &mut Net) -> Result<Option<u64>, Violation> {
        match msg {
            Control::Need { seq, wants } => {
                for (want, _len) in self.session.on_need(seq, wants)? {
                    self.send_chunk(&want.id, &want.bases, net);
                }
                Ok(None)
            }
            Control::Retry { ids } => {
                for (id, _len) in self.session.on_retry(ids)? {
                    self.send_chunk(&id, &[], net);
                }
                Ok(None)
            }
            Control::Committed { objects } => Ok(Some(objects)),
            other => Err(Violation(format!("unexpected message from the receiver: {other:?}"))),
        }
    }

    /// Puts one chunk on a data stream: as a delta when the receiver suggested bases this
    /// store holds and the delta is smaller, else whole.
    fn send_chunk(&mut self, id: &ChunkId, bases: &[ChunkId], net: &mut Net) {
        let mut plain = self.store.chunks[id].clone();
        if self.lies.wrong_bytes == Some(*id) {
            let mut forged = plain.to_vec();
            forged[0] ^= 0xff;
            plain = forged.into();
        }
        let plain_len = plain.len() as u32;
        let mut bases: Vec<ChunkId> = bases.iter().filter(|b| self.store.chunks.contains_key(b)).copied().collect();
        if let Some(liar) = self.lies.unsuggested_base {
            bases = vec![liar];
        }
        let coded = (!bases.is_empty())
            .then(|| {
                let prefix: Vec<&[u8]> = bases.iter().map(|b| &self.store.chunks[b][..]).collect();
                delta::encode(&prefix, &plain).unwrap()
            })
            .filter(|coded| coded.len() < plain.len() || self.lies.unsuggested_base.is_some());
        let (bases, body) = match coded {
            Some(coded) => (bases, frame(id, plain_len, &coded)),
            None => (Vec::new(), frame(id, plain_len, &plain)),
        };
        let mut packet = BytesMut::from(&wire::data_header(&bases, body.len())[..]);
        packet.extend_from_slice(&body);
        self.session.sent(plain_len, packet.len() as u64, !bases.is_empty());
        net.send(Packet::Data(packet.freeze()));
    }
}

struct ReceivingEnd<'a> {
    store: &'a mut FakeStore,
    dest: Selection,
    session: Receiver,
    suggested: SuggestedBases,
    /// verified chunks not yet durable
    staged: HashMap<ChunkId, Bytes>,
    lies: Lies,
    seen: Seen,
}

enum Arrival {
    Kept,
    Retry(Control),
    GaveUp(String),
}

impl<'a> ReceivingEnd<'a> {
    fn new(store: &'a mut FakeStore, dest: Selection, lies: Lies) -> Self {
        Self {
            store,
            dest,
            session: Receiver::new(),
            suggested: SuggestedBases::default(),
            staged: HashMap::new(),
            lies,
            seen: Seen::default(),
        }
    }

    fn dest_key(&self, key: &str) -> String {
        format!("{}{key}", self.dest.prefix)
    }

    fn holds(&self, id: &ChunkId) -> Option<&Bytes> {
        self.store.chunks.get(id).or_else(|| self.staged.get(id))
    }

    fn on_control(&mut self, msg: Control) -> Result<Option<Control>, Violation> {
        match msg {
            Control::Offer { seq, objects } => {
                let lookup = self.session.on_offer(seq, objects)?;
                let missing: Vec<ChunkRef> = lookup.into_iter().filter(|c| self.holds(&c.id).is_none()).collect();
                let store = &*self.store;
                let prefix = &self.dest.prefix;
                let mut bases = delta::bases_for_missing(
                    self.session.objects(),
                    |o| &o.chunks[..],
                    &missing,
                    |o| Ok::<_, ()>(store.objects.get(&format!("{prefix}{}", o.head.key)).cloned().unwrap_or_default()),
                )
                .unwrap();
                for (id, b) in &bases {
                    self.suggested.suggest(*id, b.clone());
                }
                let mut wants: Vec<(ChunkRef, Vec<ChunkId>)> =
                    missing.into_iter().map(|c| (c, bases.remove(&c.id).unwrap_or_default())).collect();
                if self.lies.ask_unoffered {
                    let never = b"never offered";
                    wants.push((ChunkRef { id: ChunkId::of(never), len: never.len() as u32 }, Vec::new()));
                }
                self.seen.chunks_wanted += wants.len() as u64;
                Ok(Some(self.session.need(seq, wants)))
            }
            Control::OfferDone { offers } => {
                self.session.on_offer_done(offers)?;
                Ok(None)
            }
            other => Err(Violation(format!("unexpected message from the sender: {other:?}"))),
        }
    }

    /// Checks a data frame as the driver does: bases suggested, bytes decoded and hashed.
    fn on_data(&mut self, packet: Bytes) -> Result<Arrival, Violation> {
        let mut buf = BytesMut::from(&packet[..]);
        let body = wire::split_frame(&mut buf, MAX_DATA_LEN).unwrap().expect("one whole frame");
        let wire_len = packet.len() as u64;
        self.seen.wire_bytes += wire_len;
        let (bases, raw) = match wire::decode_data(body).map_err(|e| Violation(e.to_string()))? {
            Data::Chunk(raw) => (Vec::new(), raw),
            Data::Delta { bases, frame } => (bases, frame),
        };
        let (id, plain_len, payload) = unframe(&raw).ok_or_else(|| Violation("short chunk frame".into()))?;
        if !bases.is_empty() {
            self.suggested.check(&id, &bases)?;
        }
        let plain = if bases.is_empty() {
            Some(payload)
        } else {
            let prefix: Vec<Bytes> =
                bases.iter().map(|b| self.holds(b).expect("suggested bases are held").clone()).collect();
            let prefix: Vec<&[u8]> = prefix.iter().map(|b| &b[..]).collect();
            delta::decode(&prefix, &payload, plain_len).ok().map(Bytes::from)
        };
        let verified = plain.filter(|p| ChunkId::of(p) == id && p.len() as u32 == plain_len);
        let Some(plain) = verified else {
            self.seen.retries += 1;
            return Ok(match self.session.on_bad_chunk(&id, wire_len)? {
                Some(retry) => Arrival::Retry(retry),
                None => Arrival::GaveUp(format!("chunk {id} failed verification {} times", MAX_RETRIES + 1)),
            });
        };
        self.session.on_chunk(&id, plain_len, wire_len, !bases.is_empty())?;
        self.suggested.settled(&id);
        self.seen.chunks_delta += !bases.is_empty() as u64;
        self.seen.bytes_done += plain_len as u64;
        self.staged.insert(id, plain);
        Ok(Arrival::Kept)
    }

    fn flush(&mut self) {
        self.store.chunks.extend(self.staged.drain());
    }

    /// Every chunk is in: make them durable and commit the objects at once.
    fn commit(&mut self) -> u64 {
        self.flush();
        let objects = self.session.take_objects();
        for o in &objects {
            let key = self.dest_key(&o.head.key);
            self.store.objects.insert(key, o.chunks.clone());
        }
        objects.len() as u64
    }
}

/// One attempt of a transfer opened by `opener` with `mode` (push: the opener sends;
/// pull: the acceptor sends), `source` and `dest` as in the `Open` message, which travels
/// encoded like every other message.
fn attempt(
    mode: Mode,
    opener: &mut FakeStore,
    acceptor: &mut FakeStore,
    source: &str,
    dest: &str,
    conditions: &Conditions,
) -> (Outcome, Seen) {
    let selection = |text: &str| {
        let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
        Selection { bucket: bucket.into(), prefix: prefix.into() }
    };
    let open = Control::Open(Open {
        transfer: [7; 16],
        mode,
        source: selection(source),
        dest: selection(dest),
        third_party: None,
        priority: 0,
        rate_limit: None,
        connections: 1,
        delegated_by: Some("c".into()),
        version: None,
    });
    let mut buf = BytesMut::from(&wire::encode_control(&open)[..]);
    let body = wire::split_frame(&mut buf, MAX_CONTROL_LEN).unwrap().unwrap();
    let Control::Open(open) = wire::decode_control(&body).unwrap() else { panic!("an Open") };
    let (sender_store, receiver_store) = match open.mode {
        Mode::Push => (&*opener, acceptor),
        Mode::Pull => (&*acceptor, opener),
        other => panic!("{other:?} is not a sending mode"),
    };
    let mut sender = SendingEnd::new(sender_store, open.source, conditions.lies.clone());
    let mut receiver = ReceivingEnd::new(receiver_store, open.dest, conditions.lies.clone());
    let mut net = Net {
        rng: StdRng::seed_from_u64(conditions.seed),
        now: 0,
        sent: 0,
        in_flight: Vec::new(),
        conditions: conditions.clone(),
    };
    let outcome = run(&mut sender, &mut receiver, &mut net);
    (outcome, receiver.seen)
}

fn run(sender: &mut SendingEnd<'_>, receiver: &mut ReceivingEnd<'_>, net: &mut Net) -> Outcome {
    loop {
        if Some(net.now) == net.conditions.cut_at {
            // What was in flight and what the receiver had not made durable are lost.
            net.in_flight.clear();
            receiver.staged.clear();
            return Outcome::Cut;
        }
        sender.offer(net);
        for packet in net.due() {
            let step = match packet {
                Packet::ToSender(frame) => {
                    let msg = decode(&frame);
                    match sender.on_control(msg, net) {
                        Ok(Some(committed)) => return Outcome::Committed(committed),
                        Ok(None) => Ok(()),
                        Err(v) => Err(v),
                    }
                }
                Packet::ToReceiver(frame) => receiver.on_control(decode(&frame)).map(|answer| {
                    if let Some(answer) = answer {
                        net.send(Packet::ToSender(wire::encode_control(&answer)));
                    }
                }),
                Packet::Data(packet) => match receiver.on_data(packet) {
                    Ok(Arrival::Kept) => Ok(()),
                    Ok(Arrival::Retry(retry)) => {
                        net.send(Packet::ToSender(wire::encode_control(&retry)));
                        Ok(())
                    }
                    Ok(Arrival::GaveUp(reason)) => return Outcome::GaveUp(reason),
                    Err(v) => Err(v),
                },
            };
            if let Err(violation) = step {
                return Outcome::Violation(violation.to_string());
            }
            if receiver.session.is_complete() {
                let committed = receiver.commit();
                net.send(Packet::ToSender(wire::encode_control(&Control::Committed { objects: committed })));
            }
        }
        net.now += 1;
        if net.now.is_multiple_of(net.conditions.flush_every) {
            receiver.flush();
        }
        assert!(net.now < 1_000_000, "the pair made no progress: a deadlock in the protocol");
    }
}

fn decode(frame: &Bytes) -> Control {
    let mut buf = BytesMut::from(&frame[..]);
    let body = wire::split_frame(&mut buf, MAX_CONTROL_LEN).unwrap().unwrap();
    wire::decode_control(&body).unwrap()
}

// ---------------------------------------------------------------- data sets

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    rng.fill(&mut out[..]);
    out
}

/// A bucket prefix `run/` of objects of assorted sizes (a long one spans several offers'
/// worth of nothing but keeps the test quick), with one chunk shared by two objects.
fn dataset(seed: u64) -> FakeStore {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = FakeStore::default();
    for i in 0..40 {
        let len = rng.gen_range(0..20_000);
        store.put(&format!("run/file-{i:03}"), &random_bytes(&mut rng, len), 4096);
    }
    let shared = random_bytes(&mut rng, 4096);
    store.put("run/shared-a", &shared, 4096);
    store.put("run/shared-b", &shared, 4096);
    store.put("other/not-selected", &random_bytes(&mut rng, 9000), 4096);
    store
}

fn keys_under<'a>(store: &'a FakeStore, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    store.objects.keys().filter(move |k| k.starts_with(prefix))
}

fn assert_copied(from: &FakeStore, from_prefix: &str, to: &FakeStore, to_prefix: &str) {
    let sent: Vec<_> = keys_under(from, from_prefix).collect();
    let got: Vec<_> = keys_under(to, to_prefix).collect();
    assert_eq!(sent.len(), got.len(), "every object arrives, no other");
    for key in sent {
        let there = format!("{to_prefix}{}", &key[from_prefix.len()..]);
        assert_eq!(from.read(key), to.read(&there), "{key} arrives byte for byte as {there}");
    }
}

/// The first chunk of the first non-empty object under `run/`.
fn some_chunk(store: &FakeStore) -> ChunkId {
    keys_under(store, "run/").find_map(|k| store.objects[k].first()).expect("a non-empty object").id
}

fn distinct_chunks(store: &FakeStore, prefix: &str) -> usize {
    let mut ids: Vec<ChunkId> = keys_under(store, prefix).flat_map(|k| store.objects[k].iter().map(|c| c.id)).collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

// ---------------------------------------------------------------- tests

#[test]
fn a_push_copies_a_prefix_and_sends_each_chunk_once() {
    let mut paris = dataset(1);
    let mut julich = FakeStore::default();
    let (outcome, seen) = attempt(Mode::Push, &mut paris, &mut julich, "data/run/", "copy/in/", &Conditions::default());
    assert_eq!(outcome, Outcome::Committed(42));
    assert_copied(&paris, "run/", &julich, "in/");
    // The chunk two objects share is asked for once.
    assert_eq!(seen.chunks_wanted as usize, distinct_chunks(&paris, "run/"));
}

#[test]
fn a_pull_brings_the_acceptors_objects_to_the_opener() {
    let mut julich = FakeStore::default();
    let mut paris = dataset(2);
    let (outcome, _) = attempt(Mode::Pull, &mut julich, &mut paris, "data/run/", "mirror/", &Conditions::default());
    assert_eq!(outcome, Outcome::Committed(42));
    assert_copied(&paris, "run/", &julich, "");
}

#[test]
fn reordering_and_retransmission_delays_change_nothing_but_the_timing() {
    let reference = dataset(3);
    for seed in 0..8 {
        let mut paris = reference.clone();
        let mut julich = FakeStore::default();
        let conditions = Conditions { seed, max_latency: 12, loss: 0.2, ..Conditions::default() };
        let (outcome, seen) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &conditions);
        assert_eq!(outcome, Outcome::Committed(42), "seed {seed}");
        assert_copied(&paris, "run/", &julich, "run/");
        assert_eq!(seen.chunks_wanted as usize, distinct_chunks(&paris, "run/"), "each chunk asked once (seed {seed})");
    }
}

#[test]
fn a_transfer_cut_midway_resumes_with_only_what_was_not_kept() {
    let mut paris = dataset(4);
    let total = distinct_chunks(&paris, "run/");
    let mut julich = FakeStore::default();
    let cut = Conditions { max_latency: 6, cut_at: Some(6), ..Conditions::default() };
    let (outcome, first) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &cut);
    assert_eq!(outcome, Outcome::Cut);
    assert!(julich.objects.is_empty(), "nothing is committed before every chunk is in");
    let kept = julich.chunks.len();
    assert!(kept > 0 && kept < total, "the cut falls midway: {kept} of {total} chunks kept");
    assert!(first.bytes_done > 0);
    for (id, bytes) in &julich.chunks {
        assert_eq!(ChunkId::of(bytes), *id, "only verified chunks are kept");
    }

    let (outcome, resumed) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &Conditions::default());
    assert_eq!(outcome, Outcome::Committed(42));
    assert_eq!(resumed.chunks_wanted as usize, total - kept, "kept chunks are not sent again");
    assert_copied(&paris, "run/", &julich, "run/");
}

#[test]
fn a_changed_chunk_travels_as_a_delta_against_the_old_version() {
    let mut rng = StdRng::seed_from_u64(5);
    let old = random_bytes(&mut rng, 64 * 1024);
    let mut new = old.clone();
    // A small edit inside the fifth 4 KiB chunk: only that chunk changes.
    new[4 * 4096 + 100..4 * 4096 + 140].copy_from_slice(&[0x55; 40]);
    // Both sites hold the old version (a delta needs its bases at both ends); paris keeps
    // it under another key, outside the selection.
    let mut paris = FakeStore::default();
    paris.put("run/model.bin", &new, 4096);
    paris.put("archive/model-v1.bin", &old, 4096);
    let mut julich = FakeStore::default();
    julich.put("run/model.bin", &old, 4096);

    let (outcome, seen) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &Conditions::default());
    assert_eq!(outcome, Outcome::Committed(1));
    assert_eq!(julich.read("run/model.bin"), new);
    assert_eq!(seen.chunks_wanted, 1, "the unchanged chunks are held already");
    assert_eq!(seen.chunks_delta, 1);
    assert!(seen.wire_bytes < 1024, "a 40-byte edit of a 4 KiB chunk costs {} bytes on the wire", seen.wire_bytes);
}

#[test]
fn a_sender_lying_about_a_chunks_bytes_gets_retries_then_nothing_committed() {
    let mut paris = dataset(6);
    let liar = some_chunk(&paris);
    let mut julich = FakeStore::default();
    julich.put("run/file-000", b"what julich had before", 4096);
    let before = julich.clone();
    let conditions = Conditions { lies: Lies { wrong_bytes: Some(liar), ..Lies::default() }, ..Conditions::default() };
    let (outcome, seen) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &conditions);
    assert!(matches!(&outcome, Outcome::GaveUp(reason) if reason.contains(&liar.to_string())), "{outcome:?}");
    assert_eq!(seen.retries, MAX_RETRIES as u64 + 1);
    for (id, bytes) in &julich.chunks {
        assert_eq!(ChunkId::of(bytes), *id, "only verified chunks are kept");
    }
    assert!(!julich.chunks.contains_key(&liar), "the forged chunk is never kept");
    assert_eq!(julich.objects, before.objects, "objects already there are untouched");
}

#[test]
fn a_chunk_of_another_length_than_offered_ends_the_transfer() {
    let mut paris = dataset(7);
    let liar = some_chunk(&paris);
    let mut julich = FakeStore::default();
    let conditions = Conditions { lies: Lies { wrong_length: Some(liar), ..Lies::default() }, ..Conditions::default() };
    let (outcome, _) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &conditions);
    assert!(matches!(&outcome, Outcome::Violation(v) if v.contains("offered as")), "{outcome:?}");
    assert!(julich.objects.is_empty());
}

#[test]
fn a_receiver_asking_for_a_chunk_never_offered_is_refused() {
    let mut paris = dataset(8);
    let mut julich = FakeStore::default();
    let conditions = Conditions { lies: Lies { ask_unoffered: true, ..Lies::default() }, ..Conditions::default() };
    let (outcome, _) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &conditions);
    assert!(matches!(&outcome, Outcome::Violation(v) if v.contains("was not offered")), "{outcome:?}");
}

#[test]
fn a_delta_against_bases_the_receiver_did_not_suggest_is_refused() {
    let mut paris = dataset(9);
    // A chunk both sides hold, which the receiver never named as a base.
    let common = paris.objects["run/shared-a"][0].id;
    let mut julich = FakeStore::default();
    julich.chunks.insert(common, paris.chunks[&common].clone());
    let conditions =
        Conditions { lies: Lies { unsuggested_base: Some(common), ..Lies::default() }, ..Conditions::default() };
    let (outcome, _) = attempt(Mode::Push, &mut paris, &mut julich, "b/run/", "b/run/", &conditions);
    assert!(matches!(&outcome, Outcome::Violation(v) if v.contains("did not suggest")), "{outcome:?}");
    assert!(julich.objects.is_empty());
}
