//! A peer that breaks the protocol: oversized and malformed frames are answered with an
//! error code on that transfer only, and the daemon goes on serving.

use super::driver::read_frame;
use super::manager::Transfers;
use federation::file::Federation;
use federation::file::SiteEntry;
use federation::identity::SiteIdentity;
use federation::identity::{init_federation, init_site};
use federation::{FederationEndpoint, TransportSettings};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::{Store, StoreConfig};
use transfer_proto::wire::{self, Control, MAX_CONTROL_LEN, Mode, Open, Selection, codes};

const WAIT: Duration = Duration::from_secs(10);

fn federation(dir: &Path, sites: &[&str]) -> Arc<Federation> {
    init_federation(dir, "test", false).unwrap();
    for site in sites {
        let entry = SiteEntry { quic: Some("127.0.0.1:1".into()), ..SiteEntry::default() };
        init_site(dir, site, &dir.join(site), entry, false).unwrap();
    }
    Arc::new(Federation::load(&dir.join("federation.toml")).unwrap())
}

fn endpoint(dir: &Path, site: &str, federation: &Arc<Federation>) -> FederationEndpoint {
    let identity = SiteIdentity::load(&dir.join(site), site).unwrap();
    FederationEndpoint::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        identity,
        federation.clone(),
        &TransportSettings::default(),
        &[wire::ALPN],
    )
    .unwrap()
}

/// The next control message the daemon sends on `recv`.
async fn next(recv: &mut quinn::RecvStream) -> Control {
    let body = tokio::time::timeout(WAIT, read_frame(recv, MAX_CONTROL_LEN)).await.unwrap().unwrap().unwrap();
    wire::decode_control(&body).unwrap()
}

/// Sends raw bytes on a new control stream; returns the first answer the daemon sends.
async fn answer_to(conn: &quinn::Connection, raw: &[u8]) -> Control {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(raw).await.unwrap();
    next(&mut recv).await
}

/// A new transfer of `mode` over the whole of `bucket` (at both ends).
fn open(mode: Mode, bucket: &str) -> Open {
    let whole = Selection { bucket: bucket.into(), prefix: String::new() };
    Open {
        transfer: rand::random(),
        mode,
        source: whole.clone(),
        dest: whole,
        third_party: None,
        priority: 0,
        rate_limit: None,
        connections: 1,
        delegated_by: None,
        version: None,
    }
}

/// Site "good" serving transfers with an empty bucket "data" shared with "rogue" for
/// reading and writing, its store, and a connection to it from site "rogue" of the same
/// federation (its endpoint kept alive beside it).
async fn good_site_and_rogue_peer(dir: &Path) -> (FederationEndpoint, quinn::Connection, Arc<Store>) {
    let fed = federation(dir, &["good", "rogue"]);
    let store = Store::open(StoreConfig::new(dir.join("store")), hw_offload::Offload::cpu(1)).await.unwrap();
    store.create_bucket("data", "").await.unwrap();
    store.share_bucket("data", "rogue", true, true).await.unwrap();
    let daemon = Transfers::new(store.clone(), endpoint(dir, "good", &fed), 2, 2);
    let address = daemon.local_addr().unwrap();
    tokio::spawn(daemon.clone().accept_loop());
    let rogue = endpoint(dir, "rogue", &fed);
    let conn = rogue.connect_to("good", address).await.unwrap();
    (rogue, conn, store)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_end_one_transfer_not_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_rogue, conn, store) = good_site_and_rogue_peer(dir.path()).await;

    // A length beyond the control bound: refused before anything is allocated.
    let answer = answer_to(&conn, &u32::MAX.to_le_bytes()).await;
    assert!(matches!(answer, Control::Abort { code: codes::FRAME_TOO_LARGE, .. }), "{answer:?}");
    // A frame of the right size that does not decode.
    let answer = answer_to(&conn, &[3, 0, 0, 0, wire::KIND_CONTROL, 0xff, 0xff]).await;
    assert!(matches!(answer, Control::Abort { code: codes::MALFORMED, .. }), "{answer:?}");
    // A data frame kind on the control stream.
    let answer = answer_to(&conn, &[1, 0, 0, 0, wire::KIND_CHUNK]).await;
    assert!(matches!(answer, Control::Abort { code: codes::MALFORMED, .. }), "{answer:?}");
    // A message out of place.
    let answer = answer_to(&conn, &wire::encode_control(&Control::Committed { objects: 1 })).await;
    assert!(matches!(answer, Control::Abort { code: codes::PROTOCOL, .. }), "{answer:?}");
    // A bucket that does not exist.
    let open = |bucket: &str| open(Mode::Pull, bucket);
    let answer = answer_to(&conn, &wire::encode_control(&Control::Open(open("nope")))).await;
    assert!(
        matches!(&answer, Control::Abort { code: codes::REFUSED, reason } if reason.contains("nope")),
        "{answer:?}"
    );
    // A bucket not shared with the peer.
    store.create_bucket("private", "").await.unwrap();
    let answer = answer_to(&conn, &wire::encode_control(&Control::Open(open("private")))).await;
    assert!(
        matches!(&answer, Control::Abort { code: codes::REFUSED, reason } if reason.contains("may not read bucket private")),
        "{answer:?}"
    );
    // No connections, or a connection joining a transfer that does not run here.
    let answer = answer_to(&conn, &wire::encode_control(&Control::Open(Open { connections: 0, ..open("data") }))).await;
    assert!(matches!(answer, Control::Abort { code: codes::PROTOCOL, .. }), "{answer:?}");
    let answer = answer_to(&conn, &wire::encode_control(&Control::Join { transfer: rand::random() })).await;
    assert!(matches!(&answer, Control::Abort { reason, .. } if reason.contains("to join")), "{answer:?}");

    // The same connection, and the daemon, still serve a well-formed transfer.
    let answer = answer_to(&conn, &wire::encode_control(&Control::Open(open("data")))).await;
    assert_eq!(answer, Control::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_against_bases_the_receiver_did_not_suggest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_rogue, conn, _store) = good_site_and_rogue_peer(dir.path()).await;

    // A push of one new 100-byte object: good has no earlier version, so it suggests no base.
    let plain = vec![42u8; 100];
    let id = hw_offload::ChunkId::of(&plain);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_control(&Control::Open(open(Mode::Push, "data")))).await.unwrap();
    assert_eq!(next(&mut recv).await, Control::Accepted);
    let object = offered("k", vec![wire::ChunkRef { id, len: 100 }]);
    send.write_all(&wire::encode_control(&Control::Offer { seq: 0, objects: vec![object] })).await.unwrap();
    let Control::Need { wants, .. } = next(&mut recv).await else { panic!("expected Need") };
    assert_eq!(wants, vec![wire::Want { id, bases: vec![] }]);

    // The chunk as a delta against a base good never named.
    let base = hw_offload::ChunkId::of(b"some chunk good may hold");
    let coded = transfer_proto::delta::encode(&[b"some chunk good may hold"], &plain).unwrap();
    let frame = store::frame::encode(&id, hw_offload::Codec::Zstd, 100, &coded);
    let mut data = conn.open_uni().await.unwrap();
    data.write_all(&wire::data_header(&[base], frame.len())).await.unwrap();
    data.write_all(&frame).await.unwrap();
    let answer = next(&mut recv).await;
    assert!(
        matches!(&answer, Control::Abort { code: codes::PROTOCOL, reason } if reason.contains("did not suggest")),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_gets_only_chunks_of_buckets_the_peer_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_rogue, conn, store) = good_site_and_rogue_peer(dir.path()).await;
    store.create_bucket("private", "").await.unwrap();
    let put = |bucket: &'static str, seed: u8| {
        let store = store.clone();
        async move {
            let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 ^ seed).collect();
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
            store.put_object(bucket, "k", Default::default(), body, &Default::default()).await.unwrap();
            store.export_object(&mut store.transfer_pin(), bucket, "k").unwrap().chunks
        }
    };
    let shared = put("data", 1).await;
    let private = put("private", 2).await;
    // The rogue knows the ids of both (an id can leak without the content: in a listing of
    // deltas, a log, a guess): it gets the bytes of those it may read, and hears nothing of
    // the others, not even that they are held.
    let wanted: Vec<_> = shared.iter().chain(&private).map(|c| c.id).collect();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_control(&Control::Open(open(Mode::Repair, "")))).await.unwrap();
    assert_eq!(next(&mut recv).await, Control::Accepted);
    send.write_all(&wire::encode_control(&Control::Wanted { ids: wanted })).await.unwrap();
    let Control::Holding { ids } = next(&mut recv).await else { panic!("expected Holding") };
    assert_eq!(ids, shared.iter().map(|c| c.id).collect::<Vec<_>>());
}

/// Puts `body` at `bucket/key` on `store`; returns its chunks.
async fn put(store: &Arc<Store>, bucket: &str, key: &str, body: Vec<u8>) -> Vec<store::ChunkRef> {
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
    store.put_object(bucket, key, Default::default(), stream, &Default::default()).await.unwrap();
    store.export_object(&mut store.transfer_pin(), bucket, key).unwrap().chunks
}

/// An offer of one object made of `chunks`, to be pushed at `key`.
fn offered(key: &str, chunks: Vec<wire::ChunkRef>) -> wire::OfferedObject {
    wire::OfferedObject {
        key: key.into(),
        size: chunks.iter().map(|c| c.len as u64).sum(),
        etag: String::new(),
        checksums: Vec::new(),
        mtime_ms: 0,
        meta: postcard::to_allocvec(&store::ObjectMeta::default()).unwrap(),
        part_sizes: Vec::new(),
        first_chunk: 0,
        chunks,
        last: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_naming_chunks_the_peer_may_not_read_must_bring_their_bytes() {
    // Issue 12, item 1. The rogue knows the id of a chunk of a bucket it may not read, and
    // pushes an object that names it into a bucket it may read and write. Were the chunk
    // answered as held, the object would be committed pointing at it and the rogue could
    // pull the private bytes back; and the answer alone would tell it the chunk is here.
    let dir = tempfile::tempdir().unwrap();
    let (_rogue, conn, store) = good_site_and_rogue_peer(dir.path()).await;
    store.create_bucket("private", "").await.unwrap();
    let secret: Vec<u8> = (0..200_000).map(|_| rand::random::<u8>()).collect();
    let private = put(&store, "private", "secret", secret).await;
    let shared = put(&store, "data", "mine", (0..200_000).map(|_| rand::random::<u8>()).collect()).await;
    let to_wire = |c: &store::ChunkRef| wire::ChunkRef { id: c.id, len: c.len };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_control(&Control::Open(open(Mode::Push, "data")))).await.unwrap();
    assert_eq!(next(&mut recv).await, Control::Accepted);
    let chunks = vec![to_wire(&private[0]), to_wire(&shared[0])];
    send.write_all(&wire::encode_control(&Control::Offer { seq: 0, objects: vec![offered("stolen", chunks)] }))
        .await
        .unwrap();
    let Control::Need { wants, .. } = next(&mut recv).await else { panic!("expected Need") };
    let wanted: Vec<_> = wants.iter().map(|w| w.id).collect();
    assert_eq!(wanted, vec![private[0].id], "the private chunk is asked for; the one the rogue may read is not");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_is_never_coded_against_chunks_of_another_bucket() {
    // The rogue pulls a bucket it may read and suggests, as the delta base of its first
    // chunk, a chunk of a bucket it may not read that differs from it by one byte. A delta
    // against it would be a few bytes: its size would say the chunk is here, and what it
    // looks like. The chunk comes whole.
    let dir = tempfile::tempdir().unwrap();
    let (_rogue, conn, store) = good_site_and_rogue_peer(dir.path()).await;
    store.create_bucket("private", "").await.unwrap();
    let mut body: Vec<u8> = (0..200_000).map(|_| rand::random::<u8>()).collect();
    let private = put(&store, "private", "k", body.clone()).await;
    body[10] ^= 1;
    let shared = put(&store, "data", "k", body).await;
    assert_ne!(private[0].id, shared[0].id);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_control(&Control::Open(open(Mode::Pull, "data")))).await.unwrap();
    assert_eq!(next(&mut recv).await, Control::Accepted);
    let seq = loop {
        match next(&mut recv).await {
            Control::Offer { seq, .. } => break seq,
            Control::OfferDone { .. } => panic!("no offer"),
            _ => continue,
        }
    };
    let wants = vec![wire::Want { id: shared[0].id, bases: vec![private[0].id] }];
    send.write_all(&wire::encode_control(&Control::Need { seq, wants })).await.unwrap();
    // The chunk comes on one of the sender's data streams, whichever it is.
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(4);
    let streams = conn.clone();
    tokio::spawn(async move {
        while let Ok(mut stream) = streams.accept_uni().await {
            let frames_tx = frames_tx.clone();
            tokio::spawn(async move {
                if let Ok(Some(body)) = read_frame(&mut stream, wire::MAX_DATA_LEN).await {
                    let _ = frames_tx.send(body).await;
                }
            });
        }
    });
    let body = tokio::time::timeout(WAIT, frames.recv()).await.unwrap().unwrap();
    match wire::decode_data(body).unwrap() {
        wire::Data::Chunk(frame) => assert!(frame.len() as u32 >= shared[0].len, "the whole chunk"),
        wire::Data::Delta { bases, .. } => panic!("coded against {bases:?}"),
    }
}

#[test]
fn the_protocol_bounds_match_the_store_frame() {
    assert_eq!(wire::MAX_CHUNK_LEN, store::frame::MAX_PLAIN_LEN);
    assert_eq!(wire::CHUNK_FRAME_HEADER_LEN, store::frame::HEADER_LEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_id_belongs_to_the_site_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let fed = federation(dir.path(), &["good", "rogue", "thief"]);
    let store = Store::open(StoreConfig::new(dir.path().join("store")), hw_offload::Offload::cpu(1)).await.unwrap();
    store.create_bucket("data", "").await.unwrap();
    for site in ["rogue", "thief"] {
        store.share_bucket("data", site, true, true).await.unwrap();
    }
    let daemon = Transfers::new(store, endpoint(dir.path(), "good", &fed), 2, 2);
    let address = daemon.local_addr().unwrap();
    tokio::spawn(daemon.clone().accept_loop());
    let (rogue, thief) = (endpoint(dir.path(), "rogue", &fed), endpoint(dir.path(), "thief", &fed));
    let open = wire::encode_control(&Control::Open(open(Mode::Push, "data")));
    let conn = rogue.connect_to("good", address).await.unwrap();
    assert_eq!(answer_to(&conn, &open).await, Control::Accepted);
    // Another site naming the same id would share what the first received, or cancel it.
    let conn = thief.connect_to("good", address).await.unwrap();
    let answer = answer_to(&conn, &open).await;
    assert!(
        matches!(&answer, Control::Abort { code: codes::PROTOCOL, reason } if reason.contains("another site's")),
        "{answer:?}"
    );
}
