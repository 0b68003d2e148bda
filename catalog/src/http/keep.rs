//! Routes for what keeps copies: pins (`stage`), eviction and rules (`catalog:write` to
//! change, `catalog:read` to look).

use super::{Caller, CatalogState, NO_READ, NO_TOKEN, PROBLEM_JSON, Problem, ProblemDocument, bad_body};
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
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Keeps a version at this site for a job, for a while.
#[utoipa::path(
    post,
    path = "/catalog/pins",
    tag = "keeping",
    request_body = PinRequest,
    security(("bearer" = ["stage"])),
    responses(
        (status = 201, description = "the pin", body = PinView),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body, a job name or duration refused"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks stage, or acts for another project than the namespace's"),
        (status = 404, description = "no such tag or version", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn pin(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Body<PinRequest>,
) -> Result<(StatusCode, Json<PinView>), Problem> {
    let Json(request) =
        body.map_err(|e| bad_body(e, r#"{"version": "ns/name@v1", "job": "4242", "seconds": 3600}"#))?;
    let (ns, version) = resolve_ref(&state, &request.version, "version")?;
    acts_for_namespace(&state, &caller, &ns)?;
    if request.seconds == 0 || request.seconds > keeping::MAX_PIN_SECS {
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

/// Removes a pin of this site's.
#[utoipa::path(
    delete,
    path = "/catalog/pins/{id}",
    tag = "keeping",
    params(("id" = String, Path, description = "the pin's id at this site")),
    security(("bearer" = ["stage"])),
    responses(
        (status = 204, description = "the pin is gone"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "the token lacks stage", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such pin at this site"),
    )
)]
pub(super) async fn unpin(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    // A project lifts only the pins on its own namespaces' versions.
    let pin = state.catalog.pins()?.into_iter().find(|p| p.site == state.catalog.site() && p.id == id);
    if let Some(pin) = pin
        && let Some((ns, _)) = state.catalog.published_as(&pin.record.version)?
    {
        acts_for_namespace(&state, &caller, &ns)?;
    }
    keeping::unpin(&state.catalog, &id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the pins in the catalog, every site's.
#[utoipa::path(
    get,
    path = "/catalog/pins",
    tag = "keeping",
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "the pins", body = Vec<PinView>),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
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
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvictRequest {
    /// a tag, or a version id in hex
    pub version: String,
}

/// Drops this site's copy of a version, unless a pin, a rule or being its last complete
/// copy keeps it.
#[utoipa::path(
    post,
    path = "/catalog/datasets/{ns}/{name}/evict",
    tag = "keeping",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
    ),
    request_body = EvictRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 200, description = "the copy is gone", body = Evicted),
        (status = 400, description = "a malformed body", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such tag or version, or no copy of it at this site"),
        (status = 409, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a pin, a rule or being the last complete copy keeps it: the detail says which"),
    )
)]
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
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
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

/// Adds or replaces one of this site's replication rules: N complete copies of a version,
/// or of every version of a dataset, on the sites an expression matches.
#[utoipa::path(
    post,
    path = "/catalog/rules",
    tag = "keeping",
    request_body = RuleRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 201, description = "the rule, and where it stands", body = RuleStatus),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body or rule: `field` names what is wrong"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, description = "no such tag or version", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
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

/// Lists the replication rules in the catalog, every site's, with where each stands.
#[utoipa::path(
    get,
    path = "/catalog/rules",
    tag = "keeping",
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "the rules", body = Vec<RuleStatus>),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn list_rules(State(state): State<Arc<CatalogState>>) -> Result<Json<Vec<RuleStatus>>, Problem> {
    Ok(Json(rule_statuses(&state)?))
}

/// One rule, and where it stands.
#[utoipa::path(
    get,
    path = "/catalog/rules/{site}/{id}",
    tag = "keeping",
    params(
        ("site" = String, Path, description = "the site that owns the rule"),
        ("id" = String, Path, description = "the rule's id there"),
    ),
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "the rule", body = RuleStatus),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such rule in the catalog here"),
    )
)]
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

/// Removes one of this site's rules.
#[utoipa::path(
    delete,
    path = "/catalog/rules/{id}",
    tag = "keeping",
    params(("id" = String, Path, description = "the rule's id at this site")),
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 204, description = "the rule is gone"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such rule at this site"),
    )
)]
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
