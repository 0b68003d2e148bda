//! Catalog events that a peer forged, altered, replayed or sent out of order, offered to a
//! real `clusster` daemon over the real QUIC catalog protocol: each is refused, logged and
//! counted in `/metrics`, the rest of its log in that answer is left aside, and the
//! honest events of other logs in the same answer still apply.
//!
//! Sites a and c are real daemons. Site b is this test: with b's identity (made by
//! `clusster site init`) it listens on b's address from the federation file with the
//! catalog's ALPN and answers pulls, as `catalog::quic` frames them, from a
//! `Catalog<MemoryStorage>` into which it writes logs straight through the storage (past
//! every check of `Catalog::accept`): what no honest site would hold. It holds b's signing
//! key, and a's too, as a thief of it would, to sign events a never wrote.
//!
//! Each bad answer goes to c's next pull once (and never to a), so c's counters move by
//! exactly what that one answer holds; c pulls every second, which paces the test.

mod common;

use catalog::catalog::Head;
use catalog::quic::{Answer, Request};
use catalog::{
    Catalog, CatalogError, CatalogStorage, Event, EventBody, MemoryStorage, Op, ReplicaState, SignedEvent, Table,
    VersionId,
};
use federation::signing::SigningKey;
use federation::{FederationEndpoint, Membership, TransportSettings};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{Daemon, content};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

/// How long anything awaited may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);

fn clusster(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster");
    assert!(out.status.success(), "clusster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A federation of `names` in `root`: the CA, and per site `root/<name>/tls` and
/// `root/<name>/clusster.toml`. Returns the federation file.
fn federation(root: &Path, names: &[&str]) -> PathBuf {
    let sites: Vec<(&str, &[&str])> = names.iter().map(|name| (*name, &[][..])).collect();
    tests::Federation::new(BIN, root, &sites, "");
    root.join("federation").join("federation.toml")
}

/// Starts site `name`'s daemon as `tests::Daemon::start` does, with its log (stderr)
/// written to `log` (which `Daemon::start` does not keep).
fn start_logged(root: &Path, name: &str, log: &Path) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(name);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--admin-listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("clusster.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn clusster serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let listeners = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{name}'s startup line {line:?} is not JSON ({e}); its log:\n{}", read_log(log)));
    Daemon { child, data_dir: dir, listeners }
}

/// A daemon's log, without terminal colours.
fn read_log(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for ch in chars.by_ref() {
                if ch.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// GETs an admin route of `daemon` with its admin token.
async fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    let token = std::fs::read_to_string(daemon.data_dir.join("admin.token")).unwrap();
    let answer = reqwest::Client::new()
        .get(format!("{}{path}", daemon.admin_url()))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

async fn get_json(daemon: &Daemon, path: &str) -> serde_json::Value {
    let (status, body) = get(daemon, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The logs a site holds, by origin (from `/catalog/sync`).
async fn heads(daemon: &Daemon) -> BTreeMap<String, u64> {
    serde_json::from_value(get_json(daemon, "/catalog/sync").await["heads"].clone()).unwrap()
}

/// Every event a site holds, as `/catalog/feed` shows them.
async fn feed(daemon: &Daemon) -> Vec<Event> {
    let page = get_json(daemon, "/catalog/feed?cursor=&limit=1000").await;
    serde_json::from_value(page["events"].clone()).unwrap()
}

type Counts = BTreeMap<String, u64>;

/// The kinds of refusal `/metrics` counts.
const KINDS: [&str; 6] = ["malformed", "unknown_origin", "bad_signature", "unauthorized", "gap", "conflicting"];

/// The metric of a counter: `applied`, `duplicate`, or a kind of refusal.
fn metric(counter: &str) -> String {
    match counter {
        "applied" | "duplicate" => format!("clusster_catalog_events_{counter}_total"),
        kind => format!("clusster_catalog_events_refused_total{{kind=\"{kind}\"}}"),
    }
}

/// The catalog sync's counters in a daemon's `/metrics`.
async fn counts(daemon: &Daemon) -> Counts {
    let (status, text) = get(daemon, "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with("clusster_catalog_events_") || l.starts_with("clusster_catalog_logs_"))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Waits until `daemon`'s counters are `before` moved by `deltas` (by [`metric`] name;
/// every other one as it was); returns them.
async fn expect_counts(what: &str, daemon: &Daemon, before: &Counts, deltas: &[(&str, u64)]) -> Counts {
    let mut want = before.clone();
    for (counter, delta) in deltas {
        *want.get_mut(&metric(counter)).unwrap_or_else(|| panic!("no counter {counter}")) += delta;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let got = counts(daemon).await;
        if got == want {
            return got;
        }
        if Instant::now() > deadline {
            let differ: Vec<_> = want
                .iter()
                .filter(|(name, value)| got.get(*name) != Some(value))
                .map(|(name, value)| format!("{name}: want {value}, got {:?}", got.get(name)))
                .collect();
            panic!("case {what}: c's counters did not move as expected: {differ:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds.
async fn wait_until<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn sign(key: &SigningKey, origin: &str, seq: u64, body: EventBody) -> SignedEvent {
    SignedEvent::sign(&Event { origin: origin.into(), seq, at_ms: now_ms(), body }, key)
}

/// A replica record, any site may write one of its own, of a made-up version.
fn replica(n: u8) -> EventBody {
    EventBody::ReplicaChanged {
        version: VersionId([n; 32]),
        state: ReplicaState::Partial,
        bytes_held: 1000 + u64::from(n),
        chunks_held: 1,
    }
}

fn decode(signed: &SignedEvent) -> Event {
    postcard::from_bytes(&signed.bytes).unwrap()
}

/// The key of place `seq` of `origin`'s log in [`Table::Events`], as `catalog::catalog`
/// lays it out: the origin, a NUL, the seq big-endian.
fn event_key(origin: &str, seq: u64) -> Vec<u8> {
    [origin.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

/// Writes `events` straight into `storage` at places `first..` of `origin`'s log, whatever
/// each claims to be, and moves the head there: what `Catalog::accept` never lets in.
fn put_log(storage: &MemoryStorage, origin: &str, first: u64, events: &[SignedEvent]) {
    let raw = storage.get(Table::Heads, origin.as_bytes()).unwrap();
    let mut head: Option<Head> = raw.map(|raw| postcard::from_bytes(&raw).unwrap());
    let mut ops = Vec::new();
    for (place, signed) in (first..).zip(events) {
        let mut chain = blake3::Hasher::new();
        chain.update(&head.map_or([0; 32], |h| h.chain));
        chain.update(blake3::hash(&signed.bytes).as_bytes());
        head = Some(Head { seq: place, chain: *chain.finalize().as_bytes() });
        ops.push(Op::Put(Table::Events, event_key(origin, place), postcard::to_allocvec(signed).unwrap()));
    }
    let head = head.expect("events to write");
    ops.push(Op::Put(Table::Heads, origin.as_bytes().to_vec(), postcard::to_allocvec(&head).unwrap()));
    storage.write(ops).unwrap();
}

/// One answer for c's next pull, and where to say what it carried.
type Once = (Catalog<MemoryStorage>, tokio::sync::oneshot::Sender<Vec<SignedEvent>>);

/// Site b, played by the test.
struct FakeB {
    /// b's signing key file
    key: PathBuf,
    /// what b serves any pull from: its honest log
    honest: Catalog<MemoryStorage>,
    /// served to c's next pull instead of `honest`, once
    once: Mutex<Option<Once>>,
}

impl FakeB {
    fn catalog(&self) -> Catalog<MemoryStorage> {
        // Never appended to: every log is written straight into the storage.
        Catalog::new(MemoryStorage::default(), "b", SigningKey::load(&self.key).unwrap())
    }

    /// Serves c's next pull (and only that one) from what b honestly holds with `logs`
    /// (origin, first place, events) written over it; returns the events that answer
    /// carried, once c has been sent them.
    async fn offer(&self, logs: &[(&str, u64, Vec<SignedEvent>)]) -> Vec<SignedEvent> {
        let catalog = self.catalog();
        let mut ops = Vec::new();
        for table in [Table::Events, Table::Heads] {
            let entries = self.honest.storage().scan(table, b"", None, usize::MAX).unwrap();
            ops.extend(entries.into_iter().map(|(k, v)| Op::Put(table, k, v)));
        }
        catalog.storage().write(ops).unwrap();
        for (origin, first, events) in logs {
            put_log(catalog.storage(), origin, *first, events);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.once.lock().unwrap() = Some((catalog, tx));
        tokio::time::timeout(WAIT, rx).await.expect("c pulls from b within the wait").unwrap()
    }

    /// Adds honest events to b's log.
    fn publish(&self, first: u64, events: &[SignedEvent]) {
        put_log(self.honest.storage(), "b", first, events);
    }

    fn answer(&self, peer: &str, request: Request) -> Answer {
        let Request::Pull { heads, limit } = request else {
            return Answer::Failed { reason: "this b answers pulls only".into() };
        };
        let once = if peer == "c" { self.once.lock().unwrap().take() } else { None };
        let catalog = once.as_ref().map_or(&self.honest, |(catalog, _)| catalog);
        let answer = (|| -> Result<_, CatalogError> {
            Ok(Answer::Events {
                events: catalog.events_after(&heads, limit as usize)?,
                heads: catalog.heads()?,
                digest: catalog.digest()?,
                snapshots: Default::default(),
            })
        })();
        match (answer, once) {
            (Ok(Answer::Events { events, heads, digest, snapshots }), Some((_, served))) => {
                let _ = served.send(events.clone());
                Answer::Events { events, heads, digest, snapshots }
            }
            (Ok(answer), _) => answer,
            (Err(e), _) => Answer::Failed { reason: e.to_string() },
        }
    }
}

/// Answers the catalog requests of every peer that connects, framed as `catalog::quic`
/// frames them: a u32 little-endian length and a postcard body each way.
async fn serve(endpoint: FederationEndpoint, fake: Arc<FakeB>) {
    while let Some(accepted) = endpoint.accept().await {
        let Ok((conn, peer)) = accepted else { continue };
        let fake = fake.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let (fake, peer) = (fake.clone(), peer.clone());
                tokio::spawn(async move {
                    let mut len = [0; 4];
                    if recv.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let Ok(body) = recv.read_to_end(1 << 20).await else { return };
                    assert_eq!(body.len(), u32::from_le_bytes(len) as usize, "one request per stream");
                    let answer = fake.answer(&peer, postcard::from_bytes(&body).expect("a request"));
                    let body = postcard::to_allocvec(&answer).unwrap();
                    if send.write_all(&(body.len() as u32).to_le_bytes()).await.is_ok()
                        && send.write_all(&body).await.is_ok()
                    {
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    }
                });
            }
        });
    }
}

/// Publishes `bucket/run1/` at `a` as a version of a.climate/era5 tagged `tag`.
fn publish(a: &Daemon, tag: &str) -> serde_json::Value {
    let args = ["dataset", "publish", "data/run1/", "a.climate/era5", "--tag", tag, "--json", "--data-dir"];
    serde_json::from_str(&clusster(&[&args[..], &[a.data_dir.to_str().unwrap()]].concat())).unwrap()
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, data: Vec<u8>) {
    s3.put_object().bucket("data").key(key).body(data.into()).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_altered_replayed_and_out_of_order_events_are_refused_and_honest_ones_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let federation_file = federation(root, &["a", "b", "c"]);
    let a_key = SigningKey::load(&root.join("a/tls/signing.key")).unwrap();
    let b_key = SigningKey::load(&root.join("b/tls/signing.key")).unwrap();

    // b, played here: b's identity on b's address, the catalog protocol only.
    let b_address = federation::file::Federation::load(&federation_file).unwrap().site("b").unwrap().quic.clone();
    let membership =
        Membership { file: federation_file, tls_dir: root.join("b/tls"), quic_listen: b_address.parse().unwrap() };
    let transport = TransportSettings { idle_timeout_ms: 3000, keep_alive_interval_ms: 500, ..Default::default() };
    let endpoint = FederationEndpoint::bind("b", &membership, &transport, &[catalog::quic::ALPN]).unwrap();
    let key = root.join("b/tls/signing.key");
    let honest = Catalog::new(MemoryStorage::default(), "b", SigningKey::load(&key).unwrap());
    let fake = Arc::new(FakeB { key, honest, once: Mutex::new(None) });
    let mut b_log = vec![sign(&b_key, "b", 1, replica(1))];
    fake.publish(1, &b_log);
    tokio::spawn(serve(endpoint, fake.clone()));

    let (a_log, c_log) = (root.join("a.log"), root.join("c.log"));
    let (a, mut c) = (start_logged(root, "a", &a_log), start_logged(root, "c", &c_log));
    let (id, secret) = a.create_key(BIN, "proj");
    let s3 = common::s3_client(&a, &id, &secret);
    s3.create_bucket().bucket("data").send().await.unwrap();
    put(&s3, "run1/tas.nc", content(60, 256 << 10, 60)).await;
    let v1 = publish(&a, "v1");

    // c holds a's log and b's honest one, over the real protocol from both.
    let n = heads(&a).await["a"];
    let want: BTreeMap<String, u64> = [("a".to_owned(), n), ("b".to_owned(), 1)].into();
    wait_until("c holds a's log and b's first event", async || heads(&c).await == want).await;
    let a_events: Vec<Event> = feed(&a).await.into_iter().filter(|e| e.origin == "a").collect();
    assert_eq!(a_events.len() as u64, n);
    let mut counted = counts(&c).await;
    for kind in KINDS {
        assert_eq!(counted[&metric(kind)], 0, "nothing refused among honest sites: {counted:#?}");
    }
    // What c must hold after each bad answer: a's log untouched, b's honest events in.
    let check_heads = async |b: u64| {
        let want: BTreeMap<String, u64> = [("a".to_owned(), n), ("b".to_owned(), b)].into();
        assert_eq!(heads(&c).await, want, "c holds exactly a's log and b's honest events");
    };
    // Each answer carries the honest next event of b's log too, which must apply.
    let next_b = |b_log: &[SignedEvent]| {
        let seq = b_log.len() as u64 + 1;
        (seq, vec![sign(&b_key, "b", seq, replica(seq as u8))])
    };

    // 1. An event of a signed with b's key, then a genuine next event of a: the forgery is
    // refused and a's log stops there for this answer; b's event applies.
    let forged = sign(
        &b_key,
        "a",
        n + 1,
        EventBody::TagMoved { ns: "a.climate".into(), name: "era5".into(), tag: "forged".into(), version: None },
    );
    let genuine_next = sign(&a_key, "a", n + 1, replica(101));
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake.offer(&[("a", n + 1, vec![forged, genuine_next]), ("b", b_seq, b_new.clone())]).await;
    assert_eq!(served.len(), 3, "the answer carried the forgery, a's next event and b's");
    counted = expect_counts("1 (signed with b's key)", &c, &counted, &[("bad_signature", 1), ("applied", 1)]).await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 2. Signed with b's key but under a's key id: the signature itself is checked.
    let mut forged = sign(&b_key, "a", n + 1, replica(102));
    forged.key_id = a_key.key_id().0;
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake.offer(&[("a", n + 1, vec![forged]), ("b", b_seq, b_new.clone())]).await;
    assert_eq!(served.len(), 2);
    counted =
        expect_counts("2 (b's signature under a's key id)", &c, &counted, &[("bad_signature", 1), ("applied", 1)])
            .await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 3. A genuine event of a, its body altered after a signed it (the tag moved to another
    // version); with it, an event of a site the federation does not know and bytes that
    // are no event (neither names a log the federation keeps: nothing stops).
    let version = VersionId::from_hex(v1["version"].as_str().unwrap()).unwrap();
    let tag = |version| EventBody::TagMoved { ns: "a.climate".into(), name: "era5".into(), tag: "v1".into(), version };
    let mut altered = sign(&a_key, "a", n + 1, tag(Some(version)));
    let mut event = decode(&altered);
    event.body = tag(Some(VersionId([0xee; 32])));
    altered.bytes = postcard::to_allocvec(&event).unwrap();
    let stranger = sign(&SigningKey::generate().unwrap(), "mallory", 1, replica(103));
    let garbage = SignedEvent { bytes: vec![0xff; 17 << 10], key_id: [0; 8], signature: vec![0; 64] };
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake
        .offer(&[("a", n + 1, vec![altered]), ("b", b_seq, b_new.clone()), ("mallory", 1, vec![stranger, garbage])])
        .await;
    assert_eq!(served.len(), 4);
    let deltas = [("bad_signature", 1), ("unknown_origin", 1), ("malformed", 1), ("applied", 1)];
    counted = expect_counts("3 (altered, unknown origin, malformed)", &c, &counted, &deltas).await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 4. A genuine event of a that c holds (a#2, byte for byte as a signed it) replayed at
    // another place of the log: a harmless duplicate, applied once only. Then a genuine
    // event of a that skips two: a gap.
    let replayed = SignedEvent::sign(&a_events[1], &a_key);
    let skipping = sign(&a_key, "a", n + 3, replica(104));
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake.offer(&[("a", n + 1, vec![replayed.clone(), skipping]), ("b", b_seq, b_new.clone())]).await;
    assert_eq!(served.len(), 3);
    counted = expect_counts("4 (replay, gap)", &c, &counted, &[("duplicate", 1), ("gap", 1), ("applied", 1)]).await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 5. The same genuine a#2 replayed as a's next event: its seq rewritten, a's signature
    // kept.
    let mut moved = replayed.clone();
    moved.bytes = postcard::to_allocvec(&Event { seq: n + 1, ..a_events[1].clone() }).unwrap();
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake.offer(&[("a", n + 1, vec![moved]), ("b", b_seq, b_new.clone())]).await;
    assert_eq!(served.len(), 2);
    counted = expect_counts("5 (seq rewritten)", &c, &counted, &[("bad_signature", 1), ("applied", 1)]).await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 6. Another event at a place of a's log that c holds, signed with a's key (a second
    // history): conflicting, not a duplicate.
    let second_history = sign(&a_key, "a", 2, replica(105));
    let (b_seq, b_new) = next_b(&b_log);
    let served = fake.offer(&[("a", n + 1, vec![second_history]), ("b", b_seq, b_new.clone())]).await;
    assert_eq!(served.len(), 2);
    counted = expect_counts("6 (second history)", &c, &counted, &[("conflicting", 1), ("applied", 1)]).await;
    fake.publish(b_seq, &b_new);
    b_log.extend(b_new);
    check_heads(b_log.len() as u64).await;

    // 7. b, rightly signed, publishes into a's namespace, between two honest events of its
    // own: the first applies, the usurpation is refused, and b's log stops there.
    let first_b = b_log.len() as u64 + 1;
    let usurping = EventBody::VersionPublished {
        ns: "a.x".into(),
        name: "forged".into(),
        version: VersionId([0xaa; 32]),
        files: 1,
        bytes: 1,
    };
    let b_new = vec![
        sign(&b_key, "b", first_b, replica(first_b as u8)),
        sign(&b_key, "b", first_b + 1, usurping),
        sign(&b_key, "b", first_b + 2, replica(first_b as u8 + 2)),
    ];
    let served = fake.offer(&[("b", first_b, b_new.clone())]).await;
    assert_eq!(served.len(), 3);
    counted = expect_counts("7 (usurpation by b)", &c, &counted, &[("unauthorized", 1), ("applied", 1)]).await;
    fake.publish(first_b, &b_new[..1]);
    b_log.push(b_new[0].clone());
    check_heads(b_log.len() as u64).await;
    assert_eq!(get(&c, "/catalog/datasets/a.x/forged").await.0, 404, "b's usurpation left nothing at c");

    // Every refusal was logged, naming the peer and what was wrong.
    let log = read_log(&c_log);
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("catalog event refused")).collect();
    assert_eq!(refusals.len(), 9, "one line per refusal:\n{log}");
    assert!(refusals.iter().all(|l| l.contains("peer=b")), "{refusals:#?}");
    let lines_with = |text: &str| refusals.iter().filter(|l| l.contains(text)).count();
    let b_key_id = hex::encode(b_key.key_id().0);
    for (text, times) in [
        (format!("event a#{}: forged or altered", n + 1), 4),
        (format!("event a#{}: forged or altered (signed with key {b_key_id}", n + 1), 1),
        ("event from mallory, which is not a site of the federation".into(), 1),
        ("not a catalog event: ".into(), 1),
        (format!("event a#{} out of order: {n} of its log held here", n + 3), 1),
        ("event a#2 differs from the one held at that place of its log".into(), 1),
        (format!("event b#{}: b wrote into namespace a.x, whose home is another site", first_b + 1), 1),
    ] {
        assert_eq!(lines_with(&text), times, "{text:?} in c's log:\n{refusals:#?}");
    }

    // c still runs and syncs honestly: a's next version reaches it.
    put(&s3, "run1/tas.nc", content(61, 256 << 10, 61)).await;
    let v2 = publish(&a, "v2");
    let n2 = heads(&a).await["a"];
    assert!(n2 > n);
    wait_until("c shows a's second version", async || {
        let (status, body) = get(&c, "/catalog/datasets/a.climate/era5").await;
        status == 200 && body.contains(v2["version"].as_str().unwrap())
    })
    .await;
    wait_until("a and c hold the same logs", async || {
        let (at_a, at_c) = (get_json(&a, "/catalog/sync").await, get_json(&c, "/catalog/sync").await);
        at_a["heads"] == at_c["heads"] && at_a["digest"] == at_c["digest"]
    })
    .await;
    assert_eq!(heads(&c).await["a"], n2);
    // Nothing more was refused: a's new events were all applied, once.
    expect_counts("the honest sync after", &c, &counted, &[("applied", n2 - n)]).await;
    // What c holds is a's log as a wrote it and b's honest events, nothing else.
    let held = feed(&c).await;
    let of = |origin: &str| held.iter().filter(|e| e.origin == origin).cloned().collect::<Vec<_>>();
    let a_now: Vec<Event> = feed(&a).await.into_iter().filter(|e| e.origin == "a").collect();
    assert_eq!(of("a"), a_now);
    assert_eq!(of("b"), b_log.iter().map(decode).collect::<Vec<_>>());
    assert_eq!(held.len(), a_now.len() + b_log.len(), "no other log: {held:#?}");
    let peers = get_json(&c, "/catalog/sync").await["peers"].clone();
    assert!(peers["a"]["last_error"].is_null() && peers["b"]["last_error"].is_null(), "{peers}");
    assert!(c.child.try_wait().unwrap().is_none(), "c still runs");
}
