//! A receiving site against a peer of its federation that asks for too much: a million
//! empty objects in one transfer and a thousand transfers at once. The real daemon's
//! memory stays bounded and it keeps serving S3; the objects land, in groups.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use federation::identity::SiteIdentity;
use federation::{FederationEndpoint, TransportSettings};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tests::{Daemon, content};
use transfer_engine::driver::read_frame;
use transfer_engine::manager::MAX_INCOMING_PER_PEER;
use transfer_proto::wire::{
    self, Control, MAX_CONTROL_LEN, Mode, OFFER_MAX_OBJECTS, OfferedObject, Open, Selection, codes,
};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");
const OBJECTS: usize = 1_000_000;
const TRANSFERS: usize = 1_000;
const RSS_LIMIT_MIB: u64 = 512;

fn clusster(args: &[&str]) {
    let out = Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster");
    assert!(out.status.success(), "clusster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Peak resident memory of a process, MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// A federation with the daemon "b" and the identity of "rogue", a site this test plays;
/// the rogue's endpoint, connected to b.
async fn federation(root: &Path) -> (Daemon, FederationEndpoint, quinn::Connection) {
    let fed = root.join("fed");
    clusster(&["federation", "init", "--dir", fed.to_str().unwrap(), "--name", "test"]);
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (site, quic) in [("b", format!("127.0.0.1:{port}")), ("rogue", "127.0.0.1:1".to_owned())] {
        let tls = root.join(site).join("tls");
        let fed = fed.to_str().unwrap();
        clusster(&["site", "init", site, "--federation", fed, "--out", tls.to_str().unwrap(), "--quic", &quic]);
    }
    let config = root.join("b/clusster.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"b\"\ndata_dir = \".\"\n\n[federation]\nfile = {:?}\ntls_dir = \"tls\"\nquic_listen = \"127.0.0.1:{port}\"\n",
            fed.join("federation.toml")
        ),
    )
    .unwrap();
    let b = Daemon::start(BIN, &root.join("b"), &["--config", config.to_str().unwrap()]);
    let federation = Arc::new(federation::file::Federation::load(&fed.join("federation.toml")).unwrap());
    let identity = SiteIdentity::load(&root.join("rogue/tls"), "rogue").unwrap();
    let rogue = FederationEndpoint::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        identity,
        federation,
        &TransportSettings::default(),
        &[wire::ALPN],
    )
    .unwrap();
    let address = b.listeners["quic"].as_str().unwrap().parse().unwrap();
    let conn = rogue.connect_to("b", address).await.unwrap();
    (b, rogue, conn)
}

/// Opens a push into b's bucket "data"; returns its control stream and b's first answer.
async fn open_push(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream, Control) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let data = Selection { bucket: "data".into(), prefix: String::new() };
    let open = Open {
        transfer: rand::random(),
        mode: Mode::Push,
        source: data.clone(),
        dest: data,
        third_party: None,
        priority: 0,
        rate_limit: None,
        connections: 1,
        delegated_by: None,
        version: None,
    };
    send.write_all(&wire::encode_control(&Control::Open(open))).await.unwrap();
    let answer = next(&mut recv).await;
    if answer != Control::Accepted {
        // Ended on our side too, so that the stream's slot frees for the next open.
        let _ = send.finish();
    }
    (send, recv, answer)
}

async fn next(recv: &mut quinn::RecvStream) -> Control {
    let body = tokio::time::timeout(Duration::from_secs(120), read_frame(recv, MAX_CONTROL_LEN))
        .await
        .expect("b answers")
        .unwrap()
        .expect("a frame");
    wire::decode_control(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_objects_and_a_thousand_transfers_keep_the_receiver_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _rogue, conn) = federation(dir.path()).await;
    let (id, secret) = b.create_key(BIN, "proj");
    let s3 = common::s3_client(&b, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    clusster(&["bucket", "share", "data", "--site", "rogue", "--write", "--data-dir", b.data_dir.to_str().unwrap()]);

    // A thousand pushes at once: b takes its share of them and answers the rest busy.
    let opened = futures::future::join_all((0..TRANSFERS).map(|_| open_push(&conn))).await;
    let mut running = Vec::new();
    let mut busy = 0;
    for (send, recv, answer) in opened {
        match answer {
            Control::Accepted => running.push((send, recv)),
            Control::Abort { code: codes::BUSY, .. } => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((running.len(), busy), (MAX_INCOMING_PER_PEER, TRANSFERS - MAX_INCOMING_PER_PEER));

    // One of them offers a million empty objects, as fast as b reads.
    let (mut send, mut recv) = running.pop().unwrap();
    let answers = tokio::spawn(async move {
        loop {
            match next(&mut recv).await {
                Control::Need { wants, .. } => assert!(wants.is_empty(), "empty objects need no chunk"),
                Control::Committed { objects } => return objects,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let offers = OBJECTS.div_ceil(OFFER_MAX_OBJECTS);
    for seq in 0..offers {
        let objects = (seq * OFFER_MAX_OBJECTS..((seq + 1) * OFFER_MAX_OBJECTS).min(OBJECTS)).map(offered).collect();
        send.write_all(&wire::encode_control(&Control::Offer { seq: seq as u64, objects })).await.unwrap();
        if seq == offers / 2 {
            // Mid-flight, b still serves S3.
            let body = content(1, 300_000, 1);
            s3.put_object().bucket("data").key("~during").body(ByteStream::from(body.clone())).send().await.unwrap();
            let got = s3.get_object().bucket("data").key("~during").send().await.unwrap();
            assert_eq!(got.body.collect().await.unwrap().into_bytes(), body);
        }
    }
    send.write_all(&wire::encode_control(&Control::OfferDone { offers: offers as u64 })).await.unwrap();
    assert_eq!(answers.await.unwrap(), OBJECTS as u64);
    for key in ["k0000000", "k0500000", "k0999999"] {
        let head = s3.head_object().bucket("data").key(key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(0), "{key}");
    }
    let peak = peak_rss_mib(b.child.id());
    assert!(peak < RSS_LIMIT_MIB, "b peaked at {peak} MiB resident");
    eprintln!("receiver peak RSS: {peak} MiB for {OBJECTS} objects and {TRANSFERS} transfers");
    drop(running);
    assert!(b.stop().success());
}

fn offered(i: usize) -> OfferedObject {
    OfferedObject {
        key: format!("k{i:07}"),
        size: 0,
        etag: "\"d41d8cd98f00b204e9800998ecf8427e\"".into(),
        checksums: Vec::new(),
        mtime_ms: 1_700_000_000_000,
        meta: postcard::to_allocvec(&store::ObjectMeta::default()).unwrap(),
        part_sizes: Vec::new(),
        first_chunk: 0,
        chunks: Vec::new(),
        last: true,
    }
}
