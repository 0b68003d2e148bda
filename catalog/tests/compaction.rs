//! Compacting logs: a checkpoint drops the dead events everywhere and changes no answer;
//! a site that lacks dropped events catches up from a snapshot plus the log's tail; a
//! snapshot that is not the one its checkpoint describes is refused and changes nothing.

use catalog::catalog::Heads;
use catalog::compaction::SnapshotPage;
use catalog::{
    Catalog, EventBody, MemoryStorage, Refusal, ReplicaState, Rule, RuleTarget, SignedEvent, Table, VersionId,
};
use federation::signing::{PublicKey, SigningKey};
use std::collections::HashMap;

type Site = Catalog<MemoryStorage>;

fn site(name: &str) -> (Site, PublicKey) {
    let key = SigningKey::generate().unwrap();
    let public = key.public_key();
    (Catalog::new(MemoryStorage::default(), name, key), public)
}

fn ns_created(ns: &str) -> EventBody {
    EventBody::NamespaceCreated { ns: ns.into(), project: "climate".into() }
}

fn published(version: VersionId) -> EventBody {
    EventBody::VersionPublished { ns: "paris.x".into(), name: "d".into(), version, files: 1, bytes: 10 }
}

fn tag(tag: &str, version: Option<VersionId>) -> EventBody {
    EventBody::TagMoved { ns: "paris.x".into(), name: "d".into(), tag: tag.into(), version }
}

fn replica(version: VersionId, bytes_held: u64) -> EventBody {
    let state = if bytes_held == 10 { ReplicaState::Complete } else { ReplicaState::Partial };
    EventBody::ReplicaChanged { version, state, bytes_held, chunks_held: 1 }
}

fn rule(id: &str, version: VersionId) -> EventBody {
    let rule = Rule { target: RuleTarget::Version(version), copies: 2, sites: "*".into(), until_ms: None };
    EventBody::RuleSet { id: id.into(), rule }
}

/// Everything `site` answers about paris's records.
fn answers(site: &Site) -> String {
    let mut out = format!("{:?}\n{:?}\n", site.namespace("paris.x").unwrap(), site.shared_with("paris.x").unwrap());
    out += &format!("{:?}\n{:?}\n", site.versions("paris.x", "d").unwrap(), site.tags("paris.x", "d").unwrap());
    for v in 1..=3 {
        out += &format!("{:?}\n", site.replicas(&VersionId([v; 32])).unwrap());
    }
    out + &format!("{:?}\n{:?}\n", site.rules().unwrap(), site.pins().unwrap())
}

fn events_held(site: &Site, origin: &str) -> usize {
    use catalog::CatalogStorage;
    site.storage().scan(Table::Events, &[origin.as_bytes(), b"\0"].concat(), None, usize::MAX).unwrap().len()
}

/// A log of 55 events of which a handful still stand: versions, a tag moved many times,
/// one removed, a replica changed often, a rule and a pin added and removed.
async fn busy_paris(paris: &Site) {
    let (v1, v2, v3) = (VersionId([1; 32]), VersionId([2; 32]), VersionId([3; 32]));
    let mut t = 0;
    let mut at = || {
        t += 1;
        t
    };
    paris.append(ns_created("paris.x"), at()).await.unwrap();
    paris.append(ns_created("paris.x"), at()).await.unwrap(); // a second creation: dead
    paris.append(EventBody::NamespaceShared { ns: "paris.x".into(), sites: "*".into() }, at()).await.unwrap();
    for v in [v1, v2, v3] {
        paris.append(published(v), at()).await.unwrap();
    }
    paris.append(tag("old", Some(v1)), at()).await.unwrap();
    for i in 0..20 {
        paris.append(tag("latest", Some(if i % 2 == 0 { v2 } else { v3 })), at()).await.unwrap();
        paris.append(replica(v1, i % 11), at()).await.unwrap();
    }
    paris.append(rule("keep", v1), at()).await.unwrap();
    paris
        .append(EventBody::PinSet { id: "job-1".into(), version: v2, job: "1".into(), until_ms: 9 }, at())
        .await
        .unwrap();
    paris.append(tag("old", None), at()).await.unwrap();
    paris.append(EventBody::RuleRemoved { id: "keep".into() }, at()).await.unwrap();
    paris.append(rule("twice", v3), at()).await.unwrap();
    paris.append(EventBody::PinRemoved { id: "job-1".into() }, at()).await.unwrap();
    paris.append(replica(v1, 10), at()).await.unwrap();
    paris.append(EventBody::NamespaceShared { ns: "paris.x".into(), sites: "tier=hpc".into() }, at()).await.unwrap();
}

/// `to` pulls from `from` until it holds what `from` holds, loading snapshots as told,
/// in pages of `page`. Returns the snapshots installed.
async fn pull(to: &Site, from: &Site, keys: &HashMap<String, PublicKey>, page: usize) -> u64 {
    let mut installed = 0;
    for _ in 0..100 {
        let heads = to.heads().unwrap();
        let answer = from.pull_answer(&heads, 7).unwrap();
        let accepted = to.accept(&answer.events, keys).await.unwrap();
        assert!(accepted.refused.is_empty(), "{:?}", accepted.refused);
        for (origin, checkpoint) in &answer.snapshots {
            let mut after = 0;
            let checkpoint_event = loop {
                let page = from.snapshot_page(origin, *checkpoint, after, page).unwrap().unwrap();
                after = to.stage_snapshot(origin, *checkpoint, after, &page, keys).unwrap().unwrap();
                if page.done {
                    break page.checkpoint;
                }
            };
            to.install_snapshot(origin, &checkpoint_event, *checkpoint, keys).await.unwrap().unwrap();
            installed += 1;
        }
        if answer.events.is_empty() && answer.snapshots.is_empty() {
            return installed;
        }
    }
    panic!("no end to the pull");
}

#[tokio::test]
async fn a_checkpoint_drops_dead_events_everywhere_and_changes_no_answer() {
    let (paris, paris_key) = site("paris");
    let (julich, _) = site("julich");
    let keys = HashMap::from([("paris".to_owned(), paris_key)]);
    busy_paris(&paris).await;
    assert_eq!(pull(&julich, &paris, &keys, 5).await, 0);
    let before = answers(&paris);
    assert_eq!(events_held(&paris, "paris"), 55);

    assert_eq!(paris.checkpoint_if_due(100, 100).await.unwrap(), None, "not due yet");
    let checkpoint = paris.checkpoint_if_due(10, 100).await.unwrap().unwrap();
    assert_eq!(checkpoint, 56);
    // Live: the first creation, the last share, 3 versions, the last "latest" tag, the
    // replica's last change, rule "twice": 8, and the checkpoint.
    assert_eq!(events_held(&paris, "paris"), 9);
    assert_eq!(answers(&paris), before, "the records are the same");

    assert_eq!(pull(&julich, &paris, &keys, 5).await, 0, "julich held the log: no snapshot");
    assert_eq!(events_held(&julich, "paris"), 56, "kept until compacted");
    assert!(julich.compact().await.unwrap().is_empty());
    assert_eq!(events_held(&julich, "paris"), 9);
    assert_eq!(answers(&julich), before);
    assert_eq!(julich.digest().unwrap(), paris.digest().unwrap());

    // After another 10 events, the next checkpoint drops the first one too.
    for i in 0..10 {
        paris.append(replica(VersionId([2; 32]), i), 200 + i).await.unwrap();
    }
    assert_eq!(paris.checkpoint_if_due(10, 300).await.unwrap(), Some(67));
    assert_eq!(events_held(&paris, "paris"), 10, "8 live before, the replica of v2, the new checkpoint");
    pull(&julich, &paris, &keys, 5).await;
    assert!(julich.compact().await.unwrap().is_empty());
    assert_eq!(julich.digest().unwrap(), paris.digest().unwrap());
    assert_eq!(answers(&julich), answers(&paris));
    // The change feed past a dropped event gives what still stands.
    let feed = julich.events_after(&Heads::new(), 100).unwrap();
    assert_eq!(feed.len(), 10);
}

#[tokio::test]
async fn a_new_site_and_a_stale_one_catch_up_from_a_snapshot_and_the_tail() {
    let (paris, paris_key) = site("paris");
    let (julich, _) = site("julich");
    let (stale, _) = site("stale");
    let keys = HashMap::from([("paris".to_owned(), paris_key)]);
    let v1 = VersionId([1; 32]);
    paris.append(ns_created("paris.x"), 1).await.unwrap();
    paris.append(published(v1), 2).await.unwrap();
    paris.append(tag("old", Some(v1)), 3).await.unwrap();
    paris.append(rule("keep", v1), 4).await.unwrap();
    pull(&stale, &paris, &keys, 5).await;
    assert_eq!(stale.tags("paris.x", "d").unwrap().len(), 1);
    busy_paris(&paris).await; // removes the tag "old" and the rule "keep"
    paris.checkpoint_if_due(10, 100).await.unwrap().unwrap();
    pull(&julich, &paris, &keys, 5).await;
    julich.compact().await.unwrap();
    paris.append(tag("after", Some(v1)), 200).await.unwrap(); // the tail

    // A new site, from julich, which relays paris's log: a snapshot then the tail.
    let (lyon, _) = site("lyon");
    assert_eq!(pull(&lyon, &julich, &keys, 3).await, 1);
    pull(&lyon, &paris, &keys, 3).await;
    assert_eq!(lyon.digest().unwrap(), paris.digest().unwrap());
    assert_eq!(answers(&lyon), answers(&paris));

    // A site that held the log's start: what the dropped events removed is gone there too.
    assert_eq!(pull(&stale, &paris, &keys, 4).await, 1);
    assert_eq!(stale.digest().unwrap(), paris.digest().unwrap());
    assert_eq!(answers(&stale), answers(&paris));
    assert!(stale.tags("paris.x", "d").unwrap().iter().all(|(t, _)| t != "old"));
    assert!(stale.rules().unwrap().iter().all(|r| r.id != "keep"));
}

#[tokio::test]
async fn a_snapshot_other_than_its_checkpoint_claims_is_refused_and_changes_nothing() {
    let (paris, whole_log, paris_key) = paris_and_its_whole_log().await;
    let mallory = SigningKey::generate().unwrap();
    let keys = HashMap::from([("paris".to_owned(), paris_key), ("mallory".to_owned(), mallory.public_key())]);
    let checkpoint = paris.checkpoint_if_due(10, 100).await.unwrap().unwrap();
    paris.append(ns_created("paris.y"), 101).await.unwrap();
    let (julich, _) = site("julich");
    pull(&julich, &paris, &keys, 5).await;
    let whole = paris.snapshot_page("paris", checkpoint, 0, 100).unwrap().unwrap();
    assert!(whole.done);
    assert_eq!(whole.events.len(), 8);

    let dead = &whole_log[1]; // the second creation of paris.x: signed by paris, and dead
    let cases: Vec<(&str, SnapshotPage, &str)> = vec![
        ("an event left out", SnapshotPage { events: whole.events[1..].to_vec(), ..whole.clone() }, "snapshot"),
        (
            "a dead event added",
            SnapshotPage {
                events: [&whole.events[..1], std::slice::from_ref(dead), &whole.events[1..]].concat(),
                ..whole.clone()
            },
            "snapshot",
        ),
        (
            "an event altered",
            SnapshotPage {
                events: {
                    let mut events = whole.events.clone();
                    let last = events.last_mut().unwrap();
                    let n = last.bytes.len();
                    last.bytes[n - 1] ^= 1;
                    events
                },
                ..whole.clone()
            },
            "bad_signature",
        ),
        (
            "out of order",
            SnapshotPage {
                events: {
                    let mut events = whole.events.clone();
                    events.swap(0, 1);
                    events
                },
                ..whole.clone()
            },
            "snapshot",
        ),
        (
            "the checkpoint of another log",
            SnapshotPage {
                checkpoint: {
                    let event = catalog::event::Event {
                        origin: "mallory".into(),
                        seq: checkpoint,
                        at_ms: 1,
                        body: EventBody::Checkpoint { chain: [0; 32], live: 0, live_root: [0; 32] },
                    };
                    SignedEvent::sign(&event, &mallory)
                },
                ..whole.clone()
            },
            "snapshot",
        ),
    ];
    let (lyon, _) = site("lyon");
    // lyon holds the log's first event, as a site that pulled once long ago.
    lyon.accept(&whole_log[..1], &keys).await.unwrap();
    let before = (lyon.digest().unwrap(), answers(&lyon));
    for (what, page, kind) in cases {
        let refusal: Refusal = match lyon.stage_snapshot("paris", checkpoint, 0, &page, &keys).unwrap() {
            Err(refusal) => refusal,
            Ok(_) => lyon
                .install_snapshot("paris", &page.checkpoint, checkpoint, &keys)
                .await
                .unwrap()
                .expect_err(&format!("{what}: installed")),
        };
        assert_eq!(refusal.kind(), kind, "{what}: {refusal}");
        lyon.clear_staged("paris").unwrap();
        assert_eq!((lyon.digest().unwrap(), answers(&lyon)), before, "{what}: changed something");
    }
    // The real one installs.
    assert_eq!(pull(&lyon, &paris, &keys, 100).await, 1);
    assert_eq!(lyon.digest().unwrap(), paris.digest().unwrap());
}

/// paris after [`busy_paris`], and the whole log as a site that never compacts holds it
/// (the same events: signing is deterministic).
async fn paris_and_its_whole_log() -> (Site, Vec<SignedEvent>, PublicKey) {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = || SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap();
    let (paris, twin) = (
        Catalog::new(MemoryStorage::default(), "paris", key()),
        Catalog::new(MemoryStorage::default(), "paris", key()),
    );
    busy_paris(&paris).await;
    busy_paris(&twin).await;
    (paris, twin.events_after(&Heads::new(), 1000).unwrap(), key().public_key())
}

#[tokio::test]
async fn a_checkpoint_that_lies_about_the_log_is_not_compacted_at() {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = || SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap();
    let keys = HashMap::from([("paris".to_owned(), key().public_key())]);
    // Two catalogs with paris's key and the same log: one checkpoints honestly, and its
    // checkpoint, altered and signed again with paris's key, is the lie.
    let (paris, twin) = (
        Catalog::new(MemoryStorage::default(), "paris", key()),
        Catalog::new(MemoryStorage::default(), "paris", key()),
    );
    busy_paris(&paris).await;
    busy_paris(&twin).await;
    let held = paris.events_after(&Heads::new(), 1000).unwrap();
    let seq = twin.checkpoint_if_due(1, 100).await.unwrap().unwrap();
    let honest: catalog::event::Event =
        postcard::from_bytes(&twin.events_after(&Heads::new(), 1000).unwrap().last().unwrap().bytes).unwrap();
    let EventBody::Checkpoint { chain, live, live_root } = honest.body else { panic!("a checkpoint") };
    let lie = |body| SignedEvent::sign(&catalog::event::Event { body, ..honest.clone() }, &key());

    let cases = [
        ("one event fewer live", lie(EventBody::Checkpoint { chain, live: live - 1, live_root })),
        ("another hash", lie(EventBody::Checkpoint { chain, live, live_root: [7; 32] })),
        ("another chain", lie(EventBody::Checkpoint { chain: [7; 32], live, live_root })),
    ];
    for (what, checkpoint) in cases {
        let (julich, _) = site("julich");
        julich.accept(&held, &keys).await.unwrap();
        let accepted = julich.accept(&[checkpoint], &keys).await.unwrap();
        assert_eq!(accepted.applied, 1, "{what}: the event itself is paris's");
        let refused = julich.compact().await.unwrap();
        assert!(refused.len() <= 1 && refused.iter().all(|r| r.kind() == "snapshot"), "{what}: {refused:?}");
        assert_eq!(events_held(&julich, "paris"), held.len() + 1, "{what}: the log is kept whole");
        assert_eq!(julich.checkpoint_record("paris").unwrap().mismatched, Some(seq), "{what}");
        assert_eq!(julich.checkpoint_record("paris").unwrap().compacted, None, "{what}");
        assert_eq!(answers(&julich), answers(&paris), "{what}");
    }
}
