//! Catalog events: what a site appends to its own log, signed with its key.
//!
//! Every record of the catalog has one writer, so that sites converge without conflicts
//! and none can forge another's records:
//! - a namespace, its datasets' versions and tags: the namespace's home site, which is
//!   part of its name (`paris.climate` is at home at `paris`);
//! - the replica of a version at a site, and the pins at a site: that site;
//! - a rule: the site that added it.
//!
//! An event is the postcard encoding of [`Event`]; the signature covers those exact bytes,
//! which travel and are stored as they were signed (never re-encoded), so a relayed event
//! verifies against its origin's key wherever it is read.

use crate::manifest::VersionId;
use federation::signing::{self, KeyId, PublicKey, SIGNATURE_LEN, Signature, SigningKey};
use serde::{Deserialize, Serialize};

/// The signing purpose of catalog events (see `federation::signing`).
pub const PURPOSE: &str = "clusster catalog event v1";

/// Longest name of a namespace, dataset, tag, rule, pin or job.
pub const MAX_NAME_LEN: usize = 128;

/// Largest encoded event accepted from a peer.
pub const MAX_EVENT_LEN: usize = 16 << 10;

/// The state of one version at one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ReplicaState {
    /// every chunk of every file is held and readable
    Complete,
    /// some chunks are held (exactly the bytes said)
    Partial,
    /// a transfer is bringing it
    Copying,
    /// none of it is held any more
    Lost,
}

impl ReplicaState {
    /// Lowercase, as the API and the CLI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Partial => "partial",
            Self::Copying => "copying",
            Self::Lost => "lost",
        }
    }
}

/// What a replication rule keeps copies of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RuleTarget {
    /// one version
    Version(VersionId),
    /// every version of a dataset, as they are published
    Dataset {
        /// namespace
        ns: String,
        /// dataset name in it
        name: String,
    },
}

/// "N copies of a version (or of every version of a dataset) on sites matching an
/// expression, until a time".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rule {
    /// what is copied
    pub target: RuleTarget,
    /// how many complete replicas, this site's included if it matches
    pub copies: u32,
    /// the sites that may hold them, as an expression over names and attributes
    pub sites: String,
    /// when the rule lapses (ms since the epoch), if ever
    pub until_ms: Option<u64>,
}

/// What happened, as the site that did it tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventBody {
    /// A namespace now exists, owned by `project` at its home site (the origin).
    NamespaceCreated {
        /// namespace
        ns: String,
        /// owning project at the home site
        project: String,
    },
    /// A version of `ns/name` was published at the home site.
    VersionPublished {
        /// namespace
        ns: String,
        /// dataset
        name: String,
        /// the version
        version: VersionId,
        /// number of files
        files: u64,
        /// bytes of the files
        bytes: u64,
    },
    /// A tag now names `version` (or nothing, when `None`).
    TagMoved {
        /// namespace
        ns: String,
        /// dataset
        name: String,
        /// tag
        tag: String,
        /// the version it names, if any
        version: Option<VersionId>,
    },
    /// The origin's replica of `version` is now as said.
    ReplicaChanged {
        /// the version
        version: VersionId,
        /// its state here
        state: ReplicaState,
        /// bytes of its files held here
        bytes_held: u64,
        /// distinct chunks of it held here
        chunks_held: u64,
    },
    /// A rule of the origin's was added or replaced.
    RuleSet {
        /// its id, unique at the origin
        id: String,
        /// the rule
        rule: Rule,
    },
    /// A rule of the origin's was removed.
    RuleRemoved {
        /// its id
        id: String,
    },
    /// A job pinned `version` at the origin until a time.
    PinSet {
        /// its id, unique at the origin
        id: String,
        /// the version kept
        version: VersionId,
        /// the job that asked
        job: String,
        /// when it lapses, ms since the epoch
        until_ms: u64,
    },
    /// A pin at the origin was removed.
    PinRemoved {
        /// its id
        id: String,
    },
    /// The sites that may hold copies of the namespace's versions are now those matching
    /// `sites` (a [`crate::sites_expr`] expression); the home site always may. Until the
    /// first such event, only the home does.
    NamespaceShared {
        /// namespace
        ns: String,
        /// the expression
        sites: String,
    },
    /// The dataset's metadata is now `metadata`, replacing what it was (empty: none).
    DatasetDescribed {
        /// namespace
        ns: String,
        /// dataset
        name: String,
        /// key → value, searched by `GET /catalog/datasets?meta=KEY=VALUE`
        metadata: std::collections::BTreeMap<String, String>,
    },
    /// The origin's log up to here, compacted: of the events before this one, those whose
    /// records still stand (`crate::compaction`) are `live` and hash to `live_root`. Every
    /// site may drop the others, and a site that lacks some of them loads these instead.
    Checkpoint {
        /// the log's hash chain through the event before this one
        chain: [u8; 32],
        /// how many events are live
        live: u64,
        /// the hash of the live events (`crate::compaction::LiveRoot`)
        live_root: [u8; 32],
    },
}

/// One entry of a site's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// the site whose log this is
    pub origin: String,
    /// its place in that log: 1, 2, 3… with no gap
    pub seq: u64,
    /// when the origin wrote it, ms since the epoch (its clock: for display only)
    pub at_ms: u64,
    /// what happened
    pub body: EventBody,
}

/// The home site of a namespace: the part of its name before the first dot.
pub fn home_of(ns: &str) -> Option<&str> {
    ns.split_once('.').map(|(site, _)| site).filter(|site| !site.is_empty())
}

/// Checks a name: 1 to [`MAX_NAME_LEN`] bytes of letters, digits and `-_.`; no leading dot.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {name:?}: 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.' (not first)"))
    }
}

/// Most metadata entries of one dataset.
pub const MAX_METADATA_ENTRIES: usize = 32;

/// Longest metadata value, bytes.
pub const MAX_METADATA_VALUE: usize = 256;

/// Checks a dataset's metadata: at most [`MAX_METADATA_ENTRIES`] entries, keys that are
/// names, values of at most [`MAX_METADATA_VALUE`] bytes without control characters.
pub fn check_metadata(metadata: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(format!("metadata: {} entries, at most {MAX_METADATA_ENTRIES}", metadata.len()));
    }
    for (key, value) in metadata {
        check_name("metadata key", key)?;
        if value.len() > MAX_METADATA_VALUE || value.chars().any(char::is_control) {
            return Err(format!(
                "metadata {key}: a value of at most {MAX_METADATA_VALUE} bytes without control characters"
            ));
        }
    }
    Ok(())
}

/// Checks a namespace name: a name whose home site comes first (`site.label`).
pub fn check_namespace(ns: &str) -> Result<(), String> {
    check_name("namespace", ns)?;
    match home_of(ns) {
        Some(_) if !ns.ends_with('.') => Ok(()),
        _ => Err(format!(
            "namespace {ns:?}: name it after its home site, as in \"paris.climate\" for a namespace of site paris"
        )),
    }
}

impl Event {
    /// Whether the origin may write this event: it is well formed and about records the
    /// origin owns. An event that is not is refused wherever it arrives.
    pub fn check_authority(&self) -> Result<(), String> {
        let own_namespace = |ns: &str| -> Result<(), String> {
            check_namespace(ns)?;
            match home_of(ns) {
                Some(home) if home == self.origin => Ok(()),
                _ => Err(format!("{} wrote into namespace {ns}, whose home is another site", self.origin)),
            }
        };
        match &self.body {
            EventBody::NamespaceCreated { ns, project } => {
                own_namespace(ns)?;
                check_name("project", project)
            }
            EventBody::VersionPublished { ns, name, .. } => {
                own_namespace(ns)?;
                check_name("dataset", name)
            }
            EventBody::TagMoved { ns, name, tag, .. } => {
                own_namespace(ns)?;
                check_name("dataset", name)?;
                check_name("tag", tag)
            }
            EventBody::ReplicaChanged { .. } | EventBody::Checkpoint { .. } => Ok(()),
            EventBody::DatasetDescribed { ns, name, metadata } => {
                own_namespace(ns)?;
                check_name("dataset", name)?;
                check_metadata(metadata)
            }
            EventBody::NamespaceShared { ns, sites } => {
                own_namespace(ns)?;
                crate::sites_expr::SitesExpr::parse(sites).map(|_| ()).map_err(|e| e.to_string())
            }
            EventBody::RuleSet { id, rule } => {
                check_name("rule", id)?;
                if let RuleTarget::Dataset { ns, name } = &rule.target {
                    check_namespace(ns)?;
                    check_name("dataset", name)?;
                }
                if rule.copies == 0 {
                    return Err(format!("rule {id}: at least one copy"));
                }
                crate::sites_expr::SitesExpr::parse(&rule.sites).map(|_| ()).map_err(|e| format!("rule {id}: {e}"))
            }
            EventBody::RuleRemoved { id } | EventBody::PinRemoved { id } => check_name("id", id),
            EventBody::PinSet { id, job, .. } => {
                check_name("pin", id)?;
                check_name("job", job)
            }
        }
    }
}

/// An event as its origin signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEvent {
    /// the postcard encoding of the [`Event`], as signed
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// the id of the origin's key that signed it
    pub key_id: [u8; 8],
    /// Ed25519 over [`PURPOSE`] and `bytes`
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// not an event, or too large
    #[error("not a catalog event: {0}")]
    Malformed(String),
    /// its origin is not a site of the federation
    #[error("event from {0}, which is not a site of the federation")]
    UnknownOrigin(String),
    /// the signature does not verify with the origin's key
    #[error("event {origin}#{seq}: forged or altered ({reason})")]
    BadSignature {
        /// claimed origin
        origin: String,
        /// claimed place in its log
        seq: u64,
        /// what did not match
        reason: String,
    },
    /// the origin may not write it
    #[error("event {origin}#{seq}: {reason}")]
    Unauthorized {
        /// origin
        origin: String,
        /// place in its log
        seq: u64,
        /// what it may not do
        reason: String,
    },
    /// it skips events of its log not yet held here
    #[error("event {origin}#{seq} out of order: {held} of its log held here")]
    Gap {
        /// origin
        origin: String,
        /// place in its log
        seq: u64,
        /// what is held
        held: u64,
    },
    /// another event with the same place in the log is held here: the origin signed two
    /// histories, or the event was altered and signed again by a stolen key
    #[error("event {origin}#{seq} differs from the one held at that place of its log")]
    Conflicting {
        /// origin
        origin: String,
        /// place in its log
        seq: u64,
    },
    /// a snapshot of a log that is not the one its origin's checkpoint describes: events
    /// left out, added or altered on the way
    #[error("snapshot of {origin}'s log at #{seq}: {reason}")]
    Snapshot {
        /// origin
        origin: String,
        /// the checkpoint's place in its log
        seq: u64,
        /// what does not match
        reason: String,
    },
}

impl Refusal {
    /// The metric label of this kind of refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownOrigin(_) => "unknown_origin",
            Self::BadSignature { .. } => "bad_signature",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Gap { .. } => "gap",
            Self::Conflicting { .. } => "conflicting",
            Self::Snapshot { .. } => "snapshot",
        }
    }
}

/// The public signing keys of the federation's sites.
pub trait SiteKeys {
    /// The key `site` signs with, if it is a site of the federation.
    fn signing_key(&self, site: &str) -> Option<PublicKey>;
}

impl SiteKeys for federation::file::Federation {
    fn signing_key(&self, site: &str) -> Option<PublicKey> {
        self.site(site).map(|s| s.signing_key)
    }
}

impl SiteKeys for std::collections::HashMap<String, PublicKey> {
    fn signing_key(&self, site: &str) -> Option<PublicKey> {
        self.get(site).copied()
    }
}

impl SignedEvent {
    /// Encodes and signs `event`.
    pub fn sign(event: &Event, key: &SigningKey) -> Self {
        let bytes = postcard::to_allocvec(event).expect("events encode");
        let signature = key.sign(PURPOSE, &bytes).to_vec();
        Self { bytes, key_id: key.key_id().0, signature }
    }

    /// Decodes the event and checks its signature against its origin's key, and that the
    /// origin may write it.
    pub fn verify(&self, keys: &(impl SiteKeys + ?Sized)) -> Result<Event, Refusal> {
        if self.bytes.len() > MAX_EVENT_LEN {
            return Err(Refusal::Malformed(format!("{} bytes, at most {MAX_EVENT_LEN}", self.bytes.len())));
        }
        let event: Event = postcard::from_bytes(&self.bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let Some(public) = keys.signing_key(&event.origin) else {
            return Err(Refusal::UnknownOrigin(event.origin));
        };
        let forged = |reason: String| Refusal::BadSignature { origin: event.origin.clone(), seq: event.seq, reason };
        if KeyId::of(&public).0 != self.key_id {
            return Err(forged(format!(
                "signed with key {}, the federation file lists {} for {}",
                hex::encode(self.key_id),
                KeyId::of(&public),
                event.origin
            )));
        }
        let signature: Signature = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| forged(format!("a signature of {} bytes, not {SIGNATURE_LEN}", self.signature.len())))?;
        signing::verify(&public, PURPOSE, &self.bytes, &signature).map_err(|e| forged(e.to_string()))?;
        if event.seq == 0 {
            return Err(Refusal::Malformed(format!("event {}#0: logs start at 1", event.origin)));
        }
        event.check_authority().map_err(|reason| Refusal::Unauthorized {
            origin: event.origin.clone(),
            seq: event.seq,
            reason,
        })?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn keys(sites: &[(&str, &SigningKey)]) -> HashMap<String, PublicKey> {
        sites.iter().map(|(name, key)| (name.to_string(), key.public_key())).collect()
    }

    fn created(origin: &str, ns: &str) -> Event {
        Event {
            origin: origin.into(),
            seq: 1,
            at_ms: 5,
            body: EventBody::NamespaceCreated { ns: ns.into(), project: "climate".into() },
        }
    }

    #[test]
    fn an_event_verifies_only_as_its_origin_signed_it() {
        let (paris, julich) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        let keys = keys(&[("paris", &paris), ("julich", &julich)]);
        let event = created("paris", "paris.climate");
        let signed = SignedEvent::sign(&event, &paris);
        assert_eq!(signed.verify(&keys).unwrap(), event);

        // Signed by another site's key, for paris.
        let forged = SignedEvent::sign(&event, &julich);
        assert!(matches!(forged.verify(&keys), Err(Refusal::BadSignature { .. })));
        // The same key id, another key.
        let mut forged = SignedEvent::sign(&event, &julich);
        forged.key_id = paris.key_id().0;
        assert!(matches!(forged.verify(&keys), Err(Refusal::BadSignature { .. })));
        // Altered after signing.
        let mut altered = signed.clone();
        let at = altered.bytes.len() - 1;
        altered.bytes[at] ^= 1;
        assert!(altered.verify(&keys).is_err());
        // From a site the federation does not know.
        let stranger = SigningKey::generate().unwrap();
        let unknown = SignedEvent::sign(&created("mallory", "mallory.x"), &stranger);
        assert!(matches!(unknown.verify(&keys), Err(Refusal::UnknownOrigin(_))));
    }

    #[test]
    fn a_site_writes_only_its_own_records() {
        let julich = SigningKey::generate().unwrap();
        let keys = keys(&[("julich", &julich)]);
        // julich, rightly signed, claims a namespace of paris.
        let signed = SignedEvent::sign(&created("julich", "paris.climate"), &julich);
        assert!(matches!(signed.verify(&keys), Err(Refusal::Unauthorized { .. })));
        let tag = Event {
            origin: "julich".into(),
            seq: 2,
            at_ms: 0,
            body: EventBody::TagMoved {
                ns: "paris.climate".into(),
                name: "era5".into(),
                tag: "v1".into(),
                version: None,
            },
        };
        assert!(SignedEvent::sign(&tag, &julich).verify(&keys).is_err());
        assert!(check_namespace("climate").is_err(), "a namespace names its home site");
        assert!(check_namespace("paris.").is_err());
        assert_eq!(home_of("paris.climate.cmip6"), Some("paris"));
    }
}
