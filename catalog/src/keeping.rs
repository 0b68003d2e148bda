//! What keeps a copy of a version at a site: a job's pin there, a rule that counts it
//! among the copies it needs, or being the last complete copy anywhere. Evicting a copy
//! that something keeps is refused, with what keeps it.
//!
//! The checks read the catalog under its writer lock, in the same step that writes the
//! eviction, so no pin or rule recorded here can slip in between. What other sites last
//! said of their copies is as fresh as the sync made it: two sites evicting the only two
//! copies at the same moment could each count the other's; a rule keeping N ≥ 2 copies
//! is what protects against that.

use crate::catalog::{Catalog, CatalogError, PinRecord, SiteRecord};
use crate::event::{EventBody, ReplicaState, Rule, RuleTarget, check_name};
use crate::in_store::{InStore, writes};
use crate::manifest::VersionId;
use crate::sites_expr::SitesExpr;
use federation::file::Federation;
use std::collections::BTreeMap;

/// A site's attributes as rules and shares match them (none for a site the federation
/// file does not list, or on a site that is not federated).
pub fn attributes_of(federation: Option<&Federation>, site: &str) -> BTreeMap<String, String> {
    federation.and_then(|f| f.site(site)).map(|s| s.attributes.clone()).unwrap_or_default()
}

/// Longest a pin may hold, from when it is set (pinning again moves its end).
pub const MAX_PIN_SECS: u64 = 366 * 24 * 3600;

/// The id of the pin `job` holds on `version` at this site: pinning again moves its end.
pub fn pin_id(job: &str, version: &VersionId) -> String {
    format!("{job}.{}", &version.to_hex()[..12])
}

/// Pins `version` at this site for `job` until `until_ms`; returns the pin's id.
pub async fn pin(
    catalog: &Catalog<InStore>,
    version: &VersionId,
    job: &str,
    until_ms: u64,
    now_ms: u64,
) -> Result<String, CatalogError> {
    check_name("job", job).map_err(CatalogError::Refused)?;
    if until_ms <= now_ms {
        return Err(CatalogError::Refused("a pin must end in the future".into()));
    }
    if catalog.published_as(version)?.is_none() {
        return Err(CatalogError::NotFound(format!("version {version} is not in the catalog here")));
    }
    let id = pin_id(job, version);
    catalog.append(EventBody::PinSet { id: id.clone(), version: *version, job: job.into(), until_ms }, now_ms).await?;
    Ok(id)
}

/// Removes a pin of this site's.
pub async fn unpin(catalog: &Catalog<InStore>, id: &str, now_ms: u64) -> Result<(), CatalogError> {
    if !catalog.pins()?.iter().any(|p| p.site == catalog.site() && p.id == id) {
        return Err(CatalogError::NotFound(format!("no pin {id} at {}", catalog.site())));
    }
    catalog.append(EventBody::PinRemoved { id: id.into() }, now_ms).await?;
    Ok(())
}

/// The pins in force at `site` on `version`.
pub fn pins_on(
    catalog: &Catalog<InStore>,
    version: &VersionId,
    site: &str,
    now_ms: u64,
) -> Result<Vec<SiteRecord<PinRecord>>, CatalogError> {
    Ok(catalog
        .pins()?
        .into_iter()
        .filter(|p| p.site == site && p.record.version == *version && p.record.until_ms > now_ms)
        .collect())
}

/// Whether `rule` is about `version` (published as `dataset`, if known) and in force.
pub fn covers(rule: &Rule, version: &VersionId, dataset: Option<&(String, String)>, now_ms: u64) -> bool {
    let in_force = rule.until_ms.is_none_or(|until| until > now_ms);
    in_force
        && match &rule.target {
            RuleTarget::Version(v) => v == version,
            RuleTarget::Dataset { ns, name } => dataset.is_some_and(|(n, d)| n == ns && d == name),
        }
}

/// The sites with a complete copy of `version`, as this site knows them.
pub fn complete_at(catalog: &Catalog<InStore>, version: &VersionId) -> Result<Vec<String>, CatalogError> {
    Ok(catalog
        .replicas(version)?
        .into_iter()
        .filter(|(_, r)| r.state == ReplicaState::Complete)
        .map(|(site, _)| site)
        .collect())
}

/// What keeps the copy of `version` at `site`, if anything: a pin, the rule whose count
/// it is part of, or being the last complete copy.
pub fn kept_by(
    catalog: &Catalog<InStore>,
    federation: Option<&Federation>,
    version: &VersionId,
    site: &str,
    now_ms: u64,
) -> Result<Option<String>, CatalogError> {
    if let Some(pin) = pins_on(catalog, version, site, now_ms)?.first() {
        return Ok(Some(format!(
            "pinned at {site} by job {} until {} ms since the epoch (pin {})",
            pin.record.job, pin.record.until_ms, pin.id
        )));
    }
    let complete = complete_at(catalog, version)?;
    if complete.iter().all(|s| s == site) {
        return Ok(Some(format!("the last complete copy of {version} is at {site}")));
    }
    let dataset = catalog.published_as(version)?;
    for rule in catalog.rules()? {
        if !covers(&rule.record, version, dataset.as_ref(), now_ms) {
            continue;
        }
        // Only a site that may hold the version has a say in where its copies stay: any
        // site may record a rule, but not keep another's data from being evicted.
        if let Some(f) = federation
            && crate::copies::may_hold(catalog, f, version, &rule.site).is_err()
        {
            continue;
        }
        let Ok(sites) = SitesExpr::parse(&rule.record.sites) else { continue };
        let counted: Vec<&String> =
            complete.iter().filter(|s| sites.matches(s, &attributes_of(federation, s))).collect();
        if counted.iter().any(|s| *s == site) && counted.len() as u64 <= rule.record.copies as u64 {
            return Ok(Some(format!(
                "rule {}/{} keeps {} copies on sites matching {:?}, and {} are complete",
                rule.site,
                rule.id,
                rule.record.copies,
                rule.record.sites,
                counted.len()
            )));
        }
    }
    Ok(None)
}

/// What [`evict`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Evicted {
    /// the version
    pub version: VersionId,
    /// the site that no longer holds it
    pub site: String,
}

/// Evicts this site's copy of `version`: its chunks are no longer held for it (GC takes
/// those nothing else uses) and its replica here is recorded lost, in one write.
/// Refused, with the reason, when a pin, a rule or being the last complete copy keeps it.
pub async fn evict(
    catalog: &Catalog<InStore>,
    federation: Option<&Federation>,
    version: &VersionId,
    now_ms: u64,
) -> Result<Evicted, CatalogError> {
    let store = &catalog.storage().0;
    if store.version_chunks(&version.0).map_err(|e| CatalogError::Data(e.to_string()))?.is_none() {
        return Err(CatalogError::NotFound(format!("{} holds no copy of {version}", catalog.site())));
    }
    let lost =
        EventBody::ReplicaChanged { version: *version, state: ReplicaState::Lost, bytes_held: 0, chunks_held: 0 };
    catalog
        .append_with(vec![lost], now_ms, async |ops| {
            // Under the writer lock: no pin or rule is recorded here between this look and the write.
            if let Some(reason) = kept_by(catalog, federation, version, catalog.site(), now_ms)? {
                return Err(CatalogError::Refused(format!("not evicted: {reason}")));
            }
            match store.release_version(&version.0, writes(ops)).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CatalogError::NotFound(format!("{} holds no copy of {version}", catalog.site()))),
                Err(e) => Err(CatalogError::Data(e.to_string())),
            }
        })
        .await?;
    Ok(Evicted { version: *version, site: catalog.site().to_owned() })
}
