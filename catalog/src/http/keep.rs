//! Routes for what keeps copies: pins (`stage`), eviction and rules (`catalog:write` to
//! change, `catalog:read` to look).

use super::{Caller, CatalogState, Problem, bad_body};
use crate::catalog::CatalogError;
use crate::event::{Rule, RuleTarget};
use crate::keeping::{self, Evicted};
use crate::manifest::VersionId;
use crate::now_ms;
use crate::publish;
use crate::rules::{self, RuleStatus};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A problem about one field of the request.
fn field(e: CatalogError, name: &'static str) -> Problem {
    let mut p = Problem::from(e);
    p.field = Some(name);
    p
}

fn invalid(name: &'static str, detail: String) -> Problem {
    Problem { status: StatusCode::BAD_REQUEST, title: "invalid request body", detail, field: Some(name) }
}

/// `NS/NAME@REF` resolved to a version known here; the namespace too.
fn resolve_ref(state: &CatalogState, text: &str, name: &'static str) -> Result<(String, VersionId), Problem> {
    let parsed = text
        .rsplit_once('@')
        .and_then(|(dataset, reference)| dataset.split_once('/').map(|(ns, d)| (ns, d, reference)));
    let Some((ns, dataset, reference)) = parsed else {
        return Err(invalid(
            name,
            format!("{text:?}: name a version as NAMESPACE/NAME@TAG or NAMESPACE/NAME@VERSION-ID"),
        ));
    };
    let version = publish::resolve(&state.catalog, ns, dataset, reference).map_err(|e| field(e, name))?;
    Ok((ns.to_owned(), version))
}

/// Refuses unless `caller` acts for the project owning `ns` (when the namespace is known).
fn acts_for_namespace(state: &CatalogState, caller: &Caller, ns: &str) -> Result<(), Problem> {
    match state.catalog.namespace(ns)? {
        Some(namespace) => caller.acts_for(&namespace.project, &format!("namespace {ns}")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- pins

/// `POST /catalog/pins`: a job keeps a version at this site for a while.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// the version, `NS/NAME@TAG` or `NS/NAME@VERSION-ID`
    pub version: String,
    /// the job's id (Slurm's, or the scheduler's)
    pub job: String,
    /// how long the pin holds, in seconds
    pub seconds: u64,
}

/// A pin, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinView {
    /// its id at its site
    pub id: String,
    /// the site where it keeps the copy
    pub site: String,
    /// the version kept
    pub version: VersionId,
    /// the job that asked
    pub job: String,
    /// when it lapses, ms since the epoch
    pub until_ms: u64,
}

pub(super) async fn pin(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Body<PinRequest>,
) -> Result<(StatusCode, Json<PinView>), Problem> {
    let Json(request) =
        body.map_err(|e| bad_body(e, r#"{"version": "ns/name@v1", "job": "4242", "seconds": 3600}"#))?;
    let (ns, version) = resolve_ref(&state, &request.version, "version")?;
    acts_for_namespace(&state, &caller, &ns)?;
    if request.seconds == 0 || request.seconds > 366 * 24 * 3600 {
        return Err(invalid("seconds", "a pin lasts 1 second to 366 days".into()));
    }
    let now = now_ms();
    let until_ms = now + request.seconds * 1000;
    let id = keeping::pin(&state.catalog, &version, &request.job, until_ms, now).await.map_err(|e| match e {
        e @ CatalogError::Refused(_) => field(e, "job"),
        e => e.into(),
    })?;
    let site = state.catalog.site().to_owned();
    Ok((StatusCode::CREATED, Json(PinView { id, site, version, job: request.job, until_ms })))
}

pub(super) async fn unpin(
    State(state): State<Arc<CatalogState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    keeping::unpin(&state.catalog, &id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn pins(State(state): State<Arc<CatalogState>>) -> Result<Json<Vec<PinView>>, Problem> {
    let pins = state.catalog.pins()?;
    Ok(Json(
        pins.into_iter()
            .map(|p| PinView {
                id: p.id,
                site: p.site,
                version: p.record.version,
                job: p.record.job,
                until_ms: p.record.until_ms,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------- eviction

/// `POST /catalog/datasets/{ns}/{name}/evict`: drop this site's copy of a version.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvictRequest {
    /// a tag, or a version id in hex
    pub version: String,
}

pub(super) async fn evict(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((ns, name)): Path<(String, String)>,
    body: Body<EvictRequest>,
) -> Result<Json<Evicted>, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"version": "v1"}"#))?;
    acts_for_namespace(&state, &caller, &ns)?;
    let version = publish::resolve(&state.catalog, &ns, &name, &request.version).map_err(|e| field(e, "version"))?;
    let evicted =
        keeping::evict(&state.catalog, state.federation.as_deref(), &version, now_ms()).await.map_err(|e| {
            match e {
                // Something keeps it: the request conflicts with the catalog's state.
                CatalogError::Refused(detail) => {
                    Problem { status: StatusCode::CONFLICT, title: "kept", detail, field: None }
                }
                e => e.into(),
            }
        })?;
    Ok(Json(evicted))
}

// ---------------------------------------------------------------- rules

/// `POST /catalog/rules`: add or replace one of this site's rules. Name either a
/// `version` or a `dataset` (every version of it, as they are published).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// the rule's id at this site
    pub id: String,
    /// one version, `NS/NAME@TAG`
    #[serde(default)]
    pub version: Option<String>,
    /// every version of a dataset, `NS/NAME`
    #[serde(default)]
    pub dataset: Option<String>,
    /// complete copies wanted on matching sites
    pub copies: u32,
    /// which sites: an expression over names and attributes (`country=fr & tier=hpc`)
    pub sites: String,
    /// when the rule lapses, ms since the epoch
    #[serde(default)]
    pub until_ms: Option<u64>,
}

pub(super) async fn add_rule(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Body<RuleRequest>,
) -> Result<(StatusCode, Json<RuleStatus>), Problem> {
    let example = r#"{"id": "two-hpc", "dataset": "paris.climate/era5", "copies": 2, "sites": "tier=hpc"}"#;
    let Json(request) = body.map_err(|e| bad_body(e, example))?;
    let (ns, target) = match (&request.version, &request.dataset) {
        (Some(version), None) => {
            let (ns, version) = resolve_ref(&state, version, "version")?;
            (ns, RuleTarget::Version(version))
        }
        (None, Some(dataset)) => match dataset.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                (ns.to_owned(), RuleTarget::Dataset { ns: ns.to_owned(), name: name.to_owned() })
            }
            _ => return Err(invalid("dataset", format!("{dataset:?}: name a dataset as NAMESPACE/NAME"))),
        },
        _ => return Err(invalid("version", "name either a version or a dataset, not both".into())),
    };
    acts_for_namespace(&state, &caller, &ns)?;
    let rule = Rule { target, copies: request.copies, sites: request.sites, until_ms: request.until_ms };
    rules::add(&state.catalog, &request.id, rule, now_ms()).await.map_err(|e| {
        let name = match &e {
            CatalogError::Refused(r) if r.starts_with("sites expression") => "sites",
            CatalogError::Refused(r) if r.starts_with("copies") => "copies",
            CatalogError::Refused(r) if r.starts_with("until") => "until_ms",
            CatalogError::Refused(_) => "id",
            _ => {
                if request.version.is_some() {
                    "version"
                } else {
                    "dataset"
                }
            }
        };
        field(e, name)
    })?;
    let status = rule_statuses(&state)?
        .into_iter()
        .find(|r| r.site == state.catalog.site() && r.id == request.id)
        .ok_or_else(|| CatalogError::NotFound(format!("rule {} vanished", request.id)))?;
    Ok((StatusCode::CREATED, Json(status)))
}

fn rule_statuses(state: &CatalogState) -> Result<Vec<RuleStatus>, CatalogError> {
    match &state.rules {
        Some(engine) => engine.statuses(),
        None => rules::statuses(&state.catalog, state.federation.as_deref(), None),
    }
}

pub(super) async fn list_rules(State(state): State<Arc<CatalogState>>) -> Result<Json<Vec<RuleStatus>>, Problem> {
    Ok(Json(rule_statuses(&state)?))
}

pub(super) async fn show_rule(
    State(state): State<Arc<CatalogState>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<Json<RuleStatus>, Problem> {
    rule_statuses(&state)?
        .into_iter()
        .find(|r| r.site == site && r.id == id)
        .map(Json)
        .ok_or_else(|| CatalogError::NotFound(format!("no rule {id} of site {site} in the catalog here")).into())
}

pub(super) async fn delete_rule(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if let Some(rule) = state.catalog.rules()?.into_iter().find(|r| r.site == state.catalog.site() && r.id == id) {
        let ns = match &rule.record.target {
            RuleTarget::Dataset { ns, .. } => Some(ns.clone()),
            RuleTarget::Version(v) => state.catalog.published_as(v)?.map(|(ns, _)| ns),
        };
        if let Some(ns) = ns {
            acts_for_namespace(&state, &caller, &ns)?;
        }
    }
    rules::remove(&state.catalog, &id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}
