//! The sync logic without I/O, in a seeded simulation: 5 to 20 sites publish, tag, change
//! replicas, rules and pins, and pull each other's logs over a network that drops,
//! duplicates and reorders messages, splits into partitions, and restarts sites; sites
//! checkpoint their logs and drop dead events, so that others catch up from snapshots; an
//! attacker injects forged, altered and foreign events. Once the network heals, every site
//! holds the same catalog, and no forged event was ever applied anywhere.

use catalog::catalog::{Heads, PinRecord};
use catalog::{Catalog, EventBody, MemoryStorage, Refusal, ReplicaState, Rule, RuleTarget, SignedEvent, VersionId};
use federation::signing::{PublicKey, SigningKey};
use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// The mark every forged event carries, so that its effect would show if it were applied.
const FORGED_BYTES: u64 = 666_666;

enum Message {
    /// `from` asks `to` for what lies past its heads
    Pull { from: usize, to: usize, heads: Heads, limit: usize },
    /// events for `to`, and the logs whose next events it must take from a snapshot
    Events { to: usize, from: usize, events: Vec<SignedEvent>, snapshots: BTreeMap<String, u64> },
}

struct Site {
    name: String,
    storage: Arc<MemoryStorage>,
    catalog: Catalog<Arc<MemoryStorage>>,
    key_pkcs8: Vec<u8>,
    namespaces: Vec<String>,
    rules: Vec<String>,
    pins: Vec<String>,
}

impl Site {
    fn restart(&mut self) {
        let key = SigningKey::from_pkcs8(&self.key_pkcs8).unwrap();
        self.catalog = Catalog::new(self.storage.clone(), self.name.clone(), key);
    }
}

fn pkcs8() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec()
}

struct World {
    rng: StdRng,
    sites: Vec<Site>,
    keys: HashMap<String, PublicKey>,
    mallory: SigningKey,
    net: VecDeque<Message>,
    /// side of each site while partitioned
    partition: Option<Vec<bool>>,
    versions: Vec<VersionId>,
    now_ms: u64,
    refusals: Vec<Refusal>,
    forged_sent: u64,
    snapshots_installed: u64,
}

impl World {
    fn new(seed: u64, n: usize) -> Self {
        let mut sites = Vec::new();
        let mut keys = HashMap::new();
        for i in 0..n {
            let name = format!("s{i:02}");
            let key_pkcs8 = pkcs8();
            let key = SigningKey::from_pkcs8(&key_pkcs8).unwrap();
            keys.insert(name.clone(), key.public_key());
            let storage = Arc::new(MemoryStorage::default());
            let catalog = Catalog::new(storage.clone(), name.clone(), key);
            sites.push(Site {
                name,
                storage,
                catalog,
                key_pkcs8,
                namespaces: Vec::new(),
                rules: Vec::new(),
                pins: Vec::new(),
            });
        }
        World {
            rng: StdRng::seed_from_u64(seed),
            sites,
            keys,
            mallory: SigningKey::generate().unwrap(),
            net: VecDeque::new(),
            partition: None,
            versions: Vec::new(),
            now_ms: 1_000,
            refusals: Vec::new(),
            forged_sent: 0,
            snapshots_installed: 0,
        }
    }

    fn name(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.rng.gen_range(0..6))
    }

    /// A site does something of its own.
    fn local_change(&mut self, i: usize) {
        self.now_ms += 1;
        let kind = self.rng.gen_range(0..9);
        let site_name = self.sites[i].name.clone();
        let body = match kind {
            0 => {
                let ns = format!("{site_name}.{}", self.name("ns"));
                self.sites[i].namespaces.push(ns.clone());
                EventBody::NamespaceCreated { ns, project: self.name("p") }
            }
            1 | 2 if !self.sites[i].namespaces.is_empty() => {
                let ns = self.sites[i].namespaces[self.rng.gen_range(0..self.sites[i].namespaces.len())].clone();
                let version = VersionId(self.rng.r#gen());
                self.versions.push(version);
                if kind == 1 {
                    let files = self.rng.gen_range(1..100);
                    EventBody::VersionPublished { ns, name: self.name("d"), version, files, bytes: files * 1000 }
                } else {
                    let version = (self.rng.gen_bool(0.8)).then_some(version);
                    EventBody::TagMoved { ns, name: self.name("d"), tag: self.name("v"), version }
                }
            }
            3 | 4 if !self.versions.is_empty() => {
                let version = self.versions[self.rng.gen_range(0..self.versions.len())];
                let state = [ReplicaState::Complete, ReplicaState::Partial, ReplicaState::Copying, ReplicaState::Lost]
                    [self.rng.gen_range(0..4)];
                EventBody::ReplicaChanged {
                    version,
                    state,
                    bytes_held: self.rng.gen_range(0..1_000_000),
                    chunks_held: self.rng.gen_range(0..100),
                }
            }
            5 => {
                let id = self.name("r");
                self.sites[i].rules.push(id.clone());
                let target = match self.versions.last() {
                    Some(v) if self.rng.gen_bool(0.5) => RuleTarget::Version(*v),
                    _ => RuleTarget::Dataset { ns: format!("{site_name}.ns0"), name: "d0".into() },
                };
                EventBody::RuleSet {
                    id,
                    rule: Rule { target, copies: self.rng.gen_range(1..4), sites: "tier=hpc".into(), until_ms: None },
                }
            }
            6 if !self.sites[i].rules.is_empty() => {
                let at = self.rng.gen_range(0..self.sites[i].rules.len());
                EventBody::RuleRemoved { id: self.sites[i].rules.swap_remove(at) }
            }
            7 if !self.versions.is_empty() && self.rng.gen_bool(0.7) => {
                let id = self.name("pin");
                self.sites[i].pins.push(id.clone());
                let version = self.versions[self.rng.gen_range(0..self.versions.len())];
                EventBody::PinSet { id, version, job: self.name("job"), until_ms: self.now_ms + 3_600_000 }
            }
            7 if !self.sites[i].pins.is_empty() => {
                let at = self.rng.gen_range(0..self.sites[i].pins.len());
                EventBody::PinRemoved { id: self.sites[i].pins.swap_remove(at) }
            }
            8 if !self.sites[i].namespaces.is_empty() => {
                let ns = self.sites[i].namespaces[self.rng.gen_range(0..self.sites[i].namespaces.len())].clone();
                let mut metadata = std::collections::BTreeMap::new();
                for _ in 0..self.rng.gen_range(0..3) {
                    metadata.insert(self.name("k"), self.name("value "));
                }
                EventBody::DatasetDescribed { ns, name: self.name("d"), metadata }
            }
            _ => return,
        };
        block_on(self.sites[i].catalog.append(body, self.now_ms)).unwrap();
    }

    /// Events an attacker makes: signed with its own key for a real site, real events
    /// altered, events of a site that is not in the federation, and events out of place.
    fn forged(&mut self, victim: usize) -> Vec<SignedEvent> {
        let origin = self.sites[victim].name.clone();
        let seq = self.sites[victim].catalog.heads().unwrap().get(&origin).copied().unwrap_or(0) + 1;
        let marked = |origin: &str, seq: u64| catalog::Event {
            origin: origin.into(),
            seq,
            at_ms: 0,
            body: EventBody::ReplicaChanged {
                version: VersionId([6; 32]),
                state: ReplicaState::Complete,
                bytes_held: FORGED_BYTES,
                chunks_held: 1,
            },
        };
        let mut out = vec![
            // the next event of a real site's log, signed by the attacker
            SignedEvent::sign(&marked(&origin, seq), &self.mallory),
            // a site the federation does not know
            SignedEvent::sign(&marked("mallory", 1), &self.mallory),
        ];
        // a real event re-signed by the attacker after changing it, claiming the victim's key id
        let mut relabelled = SignedEvent::sign(&marked(&origin, seq), &self.mallory);
        relabelled.key_id = federation::signing::KeyId::of(&self.keys[&origin]).0;
        out.push(relabelled);
        // a real event with its bytes altered (the mark written over its body)
        let real = self.sites[victim].catalog.events_after(&Heads::new(), 1).unwrap();
        if let Some(real) = real.first() {
            let mut altered = real.clone();
            altered.bytes = postcard::to_allocvec(&marked(&origin, 1)).unwrap();
            out.push(altered);
        }
        self.forged_sent += out.len() as u64;
        out
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_some_and(|side| side[a] != side[b])
    }

    fn deliver(&mut self, msg: Message, lossy: bool) {
        if lossy && self.rng.gen_bool(0.1) {
            return; // dropped
        }
        match msg {
            Message::Pull { from, to, heads, limit } => {
                if self.cut(from, to) {
                    return;
                }
                let answer = self.sites[to].catalog.pull_answer(&heads, limit).unwrap();
                self.net.push_back(Message::Events {
                    to: from,
                    from: to,
                    events: answer.events,
                    snapshots: answer.snapshots,
                });
            }
            Message::Events { to, from, events, snapshots } => {
                if self.cut(from, to) {
                    return;
                }
                let accepted = block_on(self.sites[to].catalog.accept(&events, &self.keys)).unwrap();
                self.refusals.extend(accepted.refused);
                for (origin, checkpoint) in snapshots {
                    self.load_snapshot(to, from, &origin, checkpoint);
                }
            }
        }
    }

    /// `to` loads the snapshot of `origin`'s log at `checkpoint` from `from`, in pages
    /// of random sizes, if it still lacks it and `from` still serves it.
    fn load_snapshot(&mut self, to: usize, from: usize, origin: &str, checkpoint: u64) {
        if origin == self.sites[to].name
            || self.sites[to].catalog.heads().unwrap().get(origin).is_some_and(|held| *held >= checkpoint)
        {
            return;
        }
        let catalog = &self.sites[to].catalog;
        catalog.clear_staged(origin).unwrap();
        let mut after = 0;
        loop {
            let limit = self.rng.gen_range(1..20);
            let Some(page) = self.sites[from].catalog.snapshot_page(origin, checkpoint, after, limit).unwrap() else {
                return; // compacted again since: a later pull names the new one
            };
            let catalog = &self.sites[to].catalog;
            after = catalog.stage_snapshot(origin, checkpoint, after, &page, &self.keys).unwrap().unwrap();
            if page.done {
                block_on(catalog.install_snapshot(origin, &page.checkpoint, checkpoint, &self.keys)).unwrap().unwrap();
                self.snapshots_installed += 1;
                return;
            }
        }
    }

    fn step(&mut self) {
        let n = self.sites.len();
        match self.rng.gen_range(0..100) {
            0..=29 => {
                let i = self.rng.gen_range(0..n);
                self.local_change(i);
            }
            30..=59 => {
                let (from, to) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
                if from != to {
                    let heads = self.sites[from].catalog.heads().unwrap();
                    let limit = self.rng.gen_range(1..40);
                    self.net.push_back(Message::Pull { from, to, heads, limit });
                }
            }
            60..=89 if !self.net.is_empty() => {
                // Any message in flight, not the oldest: reordering.
                let at = self.rng.gen_range(0..self.net.len());
                let msg = self.net.remove(at).unwrap();
                if self.rng.gen_bool(0.1) {
                    let copy = match &msg {
                        Message::Pull { from, to, heads, limit } => {
                            Message::Pull { from: *from, to: *to, heads: heads.clone(), limit: *limit }
                        }
                        Message::Events { to, from, events, snapshots } => Message::Events {
                            to: *to,
                            from: *from,
                            events: events.clone(),
                            snapshots: snapshots.clone(),
                        },
                    };
                    self.net.push_back(copy); // duplicated
                }
                self.deliver(msg, true);
            }
            90..=92 => {
                self.partition = match self.partition {
                    Some(_) => None,
                    None => Some((0..n).map(|_| self.rng.gen_bool(0.5)).collect()),
                };
            }
            93..=94 => {
                let i = self.rng.gen_range(0..n);
                self.sites[i].restart();
                self.net.retain(|m| !matches!(m, Message::Events { to, .. } if *to == i));
            }
            95..=96 => {
                let (victim, to) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
                let mut events = self.forged(victim);
                // Forged events mixed in among real ones a peer relays.
                let real = self.sites[victim].catalog.events_after(&Heads::new(), 5).unwrap();
                events.extend(real);
                let at = self.rng.gen_range(0..events.len());
                events.rotate_left(at);
                self.net.push_back(Message::Events { to, from: victim, events, snapshots: BTreeMap::new() });
            }
            97..=98 => {
                // A site checkpoints its own log; another drops what checkpoints made dead.
                let (i, j) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
                let every = self.rng.gen_range(3..30);
                block_on(self.sites[i].catalog.checkpoint_if_due(every, self.now_ms)).unwrap();
                let mismatched = block_on(self.sites[j].catalog.compact()).unwrap();
                assert!(mismatched.is_empty(), "an honest checkpoint did not match: {mismatched:?}");
            }
            _ => {}
        }
    }

    /// Heals the network and syncs every pair, in order, until nothing changes.
    fn heal(&mut self) {
        self.partition = None;
        self.net.clear();
        let n = self.sites.len();
        for _round in 0..4 * n {
            let before: Vec<_> = self.sites.iter().map(|s| s.catalog.digest().unwrap()).collect();
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        loop {
                            let heads = self.sites[from].catalog.heads().unwrap();
                            let answer = self.sites[to].catalog.pull_answer(&heads, 64).unwrap();
                            if answer.events.is_empty() && answer.snapshots.is_empty() {
                                break;
                            }
                            let (events, snapshots) = (answer.events, answer.snapshots);
                            self.deliver(Message::Events { to: from, from: to, events, snapshots }, false);
                        }
                    }
                }
            }
            let after: Vec<_> = self.sites.iter().map(|s| s.catalog.digest().unwrap()).collect();
            if before == after {
                return;
            }
        }
    }
}

/// Everything a site's catalog answers, to compare sites with.
fn everything(site: &Site) -> String {
    let c = &site.catalog;
    let mut out = format!("{:?}\n", c.heads().unwrap());
    let mut namespaces = Vec::new();
    for s in 0..20 {
        for k in 0..6 {
            let ns = format!("s{s:02}.ns{k}");
            if let Some(record) = c.namespace(&ns).unwrap() {
                namespaces.push(ns.clone());
                out += &format!("{ns} {record:?}\n");
            }
        }
    }
    for ns in &namespaces {
        for d in 0..6 {
            let name = format!("d{d}");
            out += &format!("{ns}/{name} {:?}\n", c.versions(ns, &name).unwrap());
            for t in 0..6 {
                out += &format!("{ns}/{name}@v{t} {:?}\n", c.tag(ns, &name, &format!("v{t}")).unwrap());
            }
            out += &format!("{ns}/{name} {:?}\n", c.metadata(ns, &name).unwrap());
        }
    }
    out += &format!("{:?}\n{:?}\n", c.rules().unwrap(), c.pins().unwrap());
    out
}

fn replicas_everywhere(site: &Site, versions: &[VersionId]) -> String {
    versions.iter().map(|v| format!("{v} {:?}\n", site.catalog.replicas(v).unwrap())).collect()
}

#[test]
fn sites_converge_and_never_apply_a_forged_event() {
    let mut snapshots_installed = 0;
    for seed in 0..12u64 {
        let n = 5 + (seed as usize * 7) % 16; // 5 to 20 sites
        let mut world = World::new(seed, n);
        for _ in 0..2_500 {
            world.step();
        }
        world.heal();
        let digest = world.sites[0].catalog.digest().unwrap();
        let reference = everything(&world.sites[0]);
        let replicas = replicas_everywhere(&world.sites[0], &world.versions);
        for site in &world.sites {
            assert_eq!(site.catalog.digest().unwrap(), digest, "seed {seed}: {} holds other events", site.name);
            assert_eq!(everything(site), reference, "seed {seed}: {} answers otherwise", site.name);
            assert_eq!(replicas_everywhere(site, &world.versions), replicas, "seed {seed}: replicas at {}", site.name);
            // Each origin's log, as held anywhere, is the one it wrote.
            for origin in &world.sites {
                let held = site.catalog.heads().unwrap().get(&origin.name).copied().unwrap_or(0);
                let own = origin.catalog.heads().unwrap().get(&origin.name).copied().unwrap_or(0);
                assert_eq!(held, own, "seed {seed}: {} lacks some of {}'s log", site.name, origin.name);
            }
            // No forged mark anywhere.
            let forged = site.catalog.replicas(&VersionId([6; 32])).unwrap();
            assert!(forged.iter().all(|(_, r)| r.bytes_held != FORGED_BYTES), "seed {seed}: forged replica applied");
            assert!(!site.catalog.heads().unwrap().contains_key("mallory"));
            let pins: Vec<PinRecord> = site.catalog.pins().unwrap().into_iter().map(|p| p.record).collect();
            assert!(pins.iter().all(|p| p.version != VersionId([6; 32])));
        }
        assert!(world.forged_sent > 0, "seed {seed}: the attacker sent something");
        snapshots_installed += world.snapshots_installed;
        let kinds: Vec<&str> = world.refusals.iter().map(Refusal::kind).collect();
        assert!(kinds.contains(&"bad_signature") || kinds.contains(&"unknown_origin"), "seed {seed}: {kinds:?}");
        let total: u64 = world.sites.iter().map(|s| s.catalog.heads().unwrap().values().sum::<u64>()).sum();
        assert!(total > 0, "seed {seed}: something happened");
    }
    assert!(snapshots_installed > 0, "some site caught up from a snapshot");
}
