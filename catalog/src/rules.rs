//! Replication rules: "N copies of a version, or of every version of a dataset, on the
//! sites matching an expression, until a time". A rule is recorded in the log of the site
//! that added it, and that site acts on it: it counts the complete copies on matching
//! sites, picks targets for the missing ones by placement cost (the bytes each candidate
//! lacks and the time to stage them from the best source), starts the copies through
//! [`Replicator`] (the daemon's transfer engine), retries failed ones with backoff, and
//! reports `ok`, `replicating` or `stuck` with the reason.

use crate::catalog::{Catalog, CatalogError, SiteRecord};
use crate::event::{EventBody, Rule, RuleTarget, check_name, check_namespace};
use crate::in_store::InStore;
use crate::keeping::{attributes_of, complete_at};
use crate::manifest::VersionId;
use crate::quic::CatalogSync;
use crate::sites_expr::SitesExpr;
use federation::file::Federation;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the owning site looks at its rules.
pub const ROUND: Duration = Duration::from_secs(2);
/// Failed copies of one version to one site in a row before the rule says it is stuck
/// (it keeps trying, less and less often).
const STUCK_AFTER: u32 = 3;
/// How long a copy done may take to show complete here before it is made again.
const DONE_GRACE: Duration = Duration::from_secs(60);
/// Longest wait between tries of a failing copy.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Adds (or replaces) this site's rule `id`.
pub async fn add(catalog: &Catalog<InStore>, id: &str, rule: Rule, now_ms: u64) -> Result<(), CatalogError> {
    check_name("rule", id).map_err(CatalogError::Refused)?;
    SitesExpr::parse(&rule.sites).map_err(|e| CatalogError::Refused(e.to_string()))?;
    if rule.copies == 0 {
        return Err(CatalogError::Refused("copies: at least 1".into()));
    }
    if rule.until_ms.is_some_and(|until| until <= now_ms) {
        return Err(CatalogError::Refused("until: a rule must end in the future".into()));
    }
    match &rule.target {
        RuleTarget::Version(version) => {
            if catalog.published_as(version)?.is_none() {
                return Err(CatalogError::NotFound(format!("version {version} is not in the catalog here")));
            }
        }
        RuleTarget::Dataset { ns, name } => {
            check_namespace(ns).map_err(CatalogError::Refused)?;
            check_name("dataset", name).map_err(CatalogError::Refused)?;
            if catalog.namespace(ns)?.is_none() {
                return Err(CatalogError::NotFound(format!("no namespace {ns} in the catalog here")));
            }
        }
    }
    catalog.append(EventBody::RuleSet { id: id.into(), rule }, now_ms).await?;
    Ok(())
}

/// Removes this site's rule `id`.
pub async fn remove(catalog: &Catalog<InStore>, id: &str, now_ms: u64) -> Result<(), CatalogError> {
    if !catalog.rules()?.iter().any(|r| r.site == catalog.site() && r.id == id) {
        return Err(CatalogError::NotFound(format!("no rule {id} at {}", catalog.site())));
    }
    catalog.append(EventBody::RuleRemoved { id: id.into() }, now_ms).await?;
    Ok(())
}

/// The versions a rule is about now.
fn versions_of(catalog: &Catalog<InStore>, rule: &Rule) -> Result<Vec<VersionId>, CatalogError> {
    Ok(match &rule.target {
        RuleTarget::Version(v) => vec![*v],
        RuleTarget::Dataset { ns, name } => catalog.versions(ns, name)?.into_iter().map(|(v, _)| v).collect(),
    })
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    /// every version it covers has its copies
    Ok,
    /// copies are under way
    Replicating,
    /// copies are missing and none can be made now (the reason says why)
    Stuck,
    /// its end has passed: it no longer acts
    Lapsed,
}

/// A rule with where it stands, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleStatus {
    /// the site that owns it and acts on it
    pub site: String,
    /// its id there
    pub id: String,
    /// the rule
    pub rule: Rule,
    /// where it stands (as the owning site last found; other sites' rules show
    /// `replicating` until their copies are complete here in the catalog)
    pub state: RuleState,
    /// the version's complete copies on matching sites, per version
    pub copies: BTreeMap<String, Vec<String>>,
    /// copies under way: version → (target, transfer id)
    pub transfers: BTreeMap<String, Vec<(String, String)>>,
    /// why it is stuck
    pub reason: Option<String>,
}

/// How a copy the engine started is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// still moving
    Running,
    /// committed at the target
    Done,
    /// ended without landing, and why
    Failed(String),
}

/// What [`Replicator::copy`] returns: the transfer's id, to await.
pub type Started<'a> = std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// The transfer engine, as rules use it (the daemon implements it).
pub trait Replicator: Send + Sync {
    /// Starts copying `version` from `from` to `to` (either may be this site).
    fn copy(&self, version: &VersionId, from: &str, to: &str) -> Started<'_>;

    /// How the copy with transfer id `id` is doing (`None`: not known here any more).
    fn state(&self, id: &str) -> Option<CopyState>;
}

/// One copy of one version to one site, as the engine follows it.
#[derive(Debug, Clone, Default)]
struct Attempts {
    transfer: Option<String>,
    /// when its transfer was seen done (the replica's event is on its way here)
    done_since: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
    next_try: Option<Instant>,
}

/// The owning site's rules, acted on.
pub struct RuleEngine {
    catalog: Arc<Catalog<InStore>>,
    federation: Option<Arc<Federation>>,
    sync: Option<Arc<CatalogSync>>,
    replicator: Arc<dyn Replicator>,
    /// (rule id, version, target site) → its copy's attempts
    attempts: Mutex<BTreeMap<(String, VersionId, String), Attempts>>,
    /// rule id → (state, reason) found in the last round
    found: Mutex<BTreeMap<String, (RuleState, Option<String>)>>,
}

impl RuleEngine {
    /// What starts its copies (job staging fetches through it too).
    pub fn replicator(&self) -> Arc<dyn Replicator> {
        self.replicator.clone()
    }

    /// An engine for `catalog`'s own rules.
    pub fn new(
        catalog: Arc<Catalog<InStore>>,
        federation: Option<Arc<Federation>>,
        sync: Option<Arc<CatalogSync>>,
        replicator: Arc<dyn Replicator>,
    ) -> Arc<Self> {
        Arc::new(Self { catalog, federation, sync, replicator, attempts: Mutex::default(), found: Mutex::default() })
    }

    /// Acts on this site's rules every [`ROUND`], until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ROUND);
        loop {
            tick.tick().await;
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "rules round failed");
            }
        }
    }

    /// One look at every rule of this site's: starts the copies each lacks.
    pub async fn round(&self) -> Result<(), CatalogError> {
        let now = crate::now_ms();
        let mine: Vec<SiteRecord<Rule>> =
            self.catalog.rules()?.into_iter().filter(|r| r.site == self.catalog.site()).collect();
        let ids: Vec<String> = mine.iter().map(|r| r.id.clone()).collect();
        self.attempts.lock().retain(|(id, _, _), _| ids.contains(id));
        self.found.lock().retain(|id, _| ids.contains(id));
        for rule in mine {
            let found = if rule.record.until_ms.is_some_and(|until| until <= now) {
                (RuleState::Lapsed, None)
            } else {
                match self.act(&rule).await {
                    Ok(found) => found,
                    Err(e) => (RuleState::Stuck, Some(e.to_string())),
                }
            };
            self.found.lock().insert(rule.id.clone(), found);
        }
        Ok(())
    }

    /// Acts on one rule; what it found.
    async fn act(&self, rule: &SiteRecord<Rule>) -> Result<(RuleState, Option<String>), CatalogError> {
        let sites = SitesExpr::parse(&rule.record.sites).map_err(|e| CatalogError::Refused(e.to_string()))?;
        let federation = self.federation.as_deref();
        let all_sites: Vec<String> = match federation {
            Some(f) => f.sites().map(|s| s.name.clone()).collect(),
            None => vec![self.catalog.site().to_owned()],
        };
        let matching: Vec<String> =
            all_sites.into_iter().filter(|s| sites.matches(s, &attributes_of(federation, s))).collect();
        let mut state = RuleState::Ok;
        let mut reasons = Vec::new();
        for version in versions_of(&self.catalog, &rule.record)? {
            let complete: Vec<String> =
                complete_at(&self.catalog, &version)?.into_iter().filter(|s| matching.contains(s)).collect();
            let want = rule.record.copies as usize;
            if complete.len() >= want {
                continue;
            }
            let (running, stuck) = self.follow(&rule.id, &version, &complete);
            let missing = want.saturating_sub(complete.len() + running);
            if missing == 0 {
                state = state.max_with(RuleState::Replicating);
                continue;
            }
            let started = self.start_copies(&rule.id, &version, &matching, &complete, missing).await?;
            if started.0 + running > 0 {
                state = state.max_with(RuleState::Replicating);
            }
            if started.0 < missing {
                let why = started.1.or(stuck).unwrap_or_else(|| "no candidate site".into());
                reasons.push(format!(
                    "{version}: {} of {want} copies on sites matching {:?}; {why}",
                    complete.len(),
                    rule.record.sites
                ));
                if started.0 + running == 0 {
                    state = RuleState::Stuck;
                }
            }
        }
        let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
        Ok((state, reason))
    }

    /// Updates the copies of `version` under way for rule `id`; returns how many still
    /// run and, if some failed too often, why.
    fn follow(&self, id: &str, version: &VersionId, complete: &[String]) -> (usize, Option<String>) {
        let mut running = 0;
        let mut stuck = None;
        let mut attempts = self.attempts.lock();
        for ((rule, v, target), a) in attempts.iter_mut() {
            if rule != id || v != version {
                continue;
            }
            if complete.contains(target) {
                a.transfer = None;
                a.failures = 0;
                continue;
            }
            let Some(transfer) = a.transfer.clone() else {
                if a.failures >= STUCK_AFTER {
                    stuck = a.last_error.clone().map(|e| format!("copies to {target} keep failing: {e}"));
                }
                continue;
            };
            match self.replicator.state(&transfer) {
                Some(CopyState::Running) => running += 1,
                // Landed; its replica event is on its way here. One that never comes (the
                // copy was evicted, or landed partial) lets the copy be made again.
                Some(CopyState::Done) => {
                    let since = *a.done_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < DONE_GRACE {
                        running += 1;
                    } else {
                        a.transfer = None;
                        a.done_since = None;
                    }
                }
                Some(CopyState::Failed(error)) => {
                    a.failures += 1;
                    a.last_error = Some(error);
                    a.transfer = None;
                    let backoff = ROUND * 2u32.saturating_pow(a.failures.min(10));
                    a.next_try = Some(Instant::now() + backoff.min(MAX_BACKOFF));
                }
                None => a.transfer = None,
            }
        }
        (running, stuck)
    }

    /// Starts up to `missing` copies of `version` to the best candidates; returns how many
    /// started and, if fewer than asked, why.
    async fn start_copies(
        &self,
        id: &str,
        version: &VersionId,
        matching: &[String],
        complete: &[String],
        missing: usize,
    ) -> Result<(usize, Option<String>), CatalogError> {
        let federation = self.federation.as_deref();
        let all_complete = complete_at(&self.catalog, version)?;
        let mut refusals = Vec::new();
        let mut candidates = Vec::new();
        for site in matching {
            if complete.contains(site) {
                continue;
            }
            let key = (id.to_owned(), *version, site.clone());
            let waiting = self
                .attempts
                .lock()
                .get(&key)
                .is_some_and(|a| a.transfer.is_some() || a.next_try.is_some_and(|t| Instant::now() < t));
            if waiting {
                continue;
            }
            match federation.map(|f| crate::copies::may_hold(&self.catalog, f, version, site)) {
                Some(Ok(())) => candidates.push(site.clone()),
                Some(Err(e)) => refusals.push(e.to_string()),
                None => refusals.push("this site is not federated".into()),
            }
        }
        if candidates.is_empty() {
            let why = if refusals.is_empty() { None } else { Some(refusals.join("; ")) };
            return Ok((0, why));
        }
        // Cheapest first: the placement estimate (bytes each lacks, from the best source).
        let ranked: Vec<(String, Option<String>)> = match &self.sync {
            Some(sync) => {
                let mut placed = sync.placement(version, &candidates).await?;
                placed.retain(|p| p.error.is_none());
                placed.sort_by(|a, b| {
                    let cost = |p: &crate::quic::SitePlacement| p.estimated_secs.unwrap_or(f64::INFINITY);
                    cost(a).total_cmp(&cost(b)).then_with(|| a.site.cmp(&b.site))
                });
                placed.into_iter().map(|p| (p.site, p.best_source)).collect()
            }
            None => candidates.into_iter().map(|s| (s, None)).collect(),
        };
        let mut started = 0;
        let mut errors = Vec::new();
        for (target, best_source) in ranked.into_iter().take(missing) {
            let Some(source) = best_source.or_else(|| all_complete.iter().find(|s| **s != target).cloned()) else {
                errors.push(format!("no complete copy to send to {target}"));
                continue;
            };
            let key = (id.to_owned(), *version, target.clone());
            match self.replicator.copy(version, &source, &target).await {
                Ok(transfer) => {
                    tracing::info!(rule = id, %version, from = %source, to = %target, %transfer, "rule copies a version");
                    let mut attempts = self.attempts.lock();
                    let a = attempts.entry(key).or_default();
                    a.transfer = Some(transfer);
                    a.done_since = None;
                    started += 1;
                }
                Err(e) => {
                    let mut attempts = self.attempts.lock();
                    let a = attempts.entry(key).or_default();
                    a.failures += 1;
                    a.last_error = Some(e.clone());
                    a.next_try =
                        Some(Instant::now() + (ROUND * 2u32.saturating_pow(a.failures.min(10))).min(MAX_BACKOFF));
                    errors.push(format!("copy to {target}: {e}"));
                }
            }
        }
        let why = (!errors.is_empty() || !refusals.is_empty()).then(|| [errors, refusals].concat().join("; "));
        Ok((started, why))
    }

    /// Every rule known here with where it stands: this site's as its engine found them,
    /// other sites' from the copies the catalog records.
    pub fn statuses(&self) -> Result<Vec<RuleStatus>, CatalogError> {
        statuses(&self.catalog, self.federation.as_deref(), Some(self))
    }
}

impl RuleState {
    /// The worse of two states, for a rule over several versions.
    fn max_with(self, other: RuleState) -> RuleState {
        let rank = |s: RuleState| match s {
            RuleState::Ok => 0,
            RuleState::Replicating => 1,
            RuleState::Stuck => 2,
            RuleState::Lapsed => 3,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

/// Every rule known here with where it stands (`engine`: this site's, if it runs one).
pub fn statuses(
    catalog: &Catalog<InStore>,
    federation: Option<&Federation>,
    engine: Option<&RuleEngine>,
) -> Result<Vec<RuleStatus>, CatalogError> {
    let now = crate::now_ms();
    let mut out = Vec::new();
    for rule in catalog.rules()? {
        let sites = SitesExpr::parse(&rule.record.sites).ok();
        let mut copies = BTreeMap::new();
        let mut short = false;
        for version in versions_of(catalog, &rule.record)? {
            let complete: Vec<String> = complete_at(catalog, &version)?
                .into_iter()
                .filter(|s| sites.as_ref().is_some_and(|e| e.matches(s, &attributes_of(federation, s))))
                .collect();
            short |= complete.len() < rule.record.copies as usize;
            copies.insert(version.to_hex(), complete);
        }
        let mut transfers: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let (state, reason) = match engine.filter(|_| rule.site == catalog.site()) {
            Some(engine) => {
                for ((id, version, target), a) in engine.attempts.lock().iter() {
                    if *id == rule.id
                        && let Some(t) = &a.transfer
                    {
                        transfers.entry(version.to_hex()).or_default().push((target.clone(), t.clone()));
                    }
                }
                let found = engine.found.lock().get(&rule.id).cloned();
                match found {
                    // A rule whose copies all show complete is ok, whatever the last round said.
                    _ if !short && rule.record.until_ms.is_none_or(|u| u > now) => (RuleState::Ok, None),
                    Some(found) => found,
                    None => (RuleState::Replicating, None),
                }
            }
            None if rule.record.until_ms.is_some_and(|u| u <= now) => (RuleState::Lapsed, None),
            None if short => (RuleState::Replicating, None),
            None => (RuleState::Ok, None),
        };
        out.push(RuleStatus { site: rule.site, id: rule.id, rule: rule.record, state, copies, transfers, reason });
    }
    Ok(out)
}
