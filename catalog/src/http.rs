//! The catalog's HTTP+JSON routes, as a router the daemon mounts. Every route needs a
//! bearer token with its scope ([`Authenticate`] says whose it is): a project's API token
//! reaches its own project's buckets only; the operator's admin token reaches all. Errors
//! are RFC 9457 problem documents that name the offending field.
//!
//! [`openapi`] describes the routes in an OpenAPI 3.1 document, generated from the
//! handlers' attributes and the types below; `GET /catalog/openapi.json` serves it, with
//! no token (a client is generated from it before it has one).

use crate::catalog::{Catalog, CatalogError};
use crate::event::ReplicaState;
use crate::in_store::InStore;
use crate::manifest::VersionId;
use crate::now_ms;
use crate::publish::{self, Published};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use utoipa::{IntoParams, OpenApi, ToSchema};

mod keep;
mod stage;

pub use keep::{EvictRequest, PinRequest, PinView, RuleRequest};

/// What the routes need.
pub struct CatalogState {
    /// this site's catalog
    pub catalog: Arc<Catalog<InStore>>,
    /// its sync with the federation's other sites, when federated
    pub sync: Option<Arc<crate::quic::CatalogSync>>,
    /// who a bearer token is
    pub auth: Arc<dyn Authenticate>,
    /// the federation file (site attributes for sharing and rules), when federated
    pub federation: Option<Arc<federation::file::Federation>>,
    /// this site's rules, acted on, when it runs them
    pub rules: Option<Arc<crate::rules::RuleEngine>>,
    /// job staging at this site
    pub stager: Arc<crate::stage::Stager>,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// the site's operator (the admin token): every scope, every project
    Operator,
    /// a project's API token, limited to its scopes
    Project {
        /// the project
        project: String,
        /// `catalog:read`, `catalog:write`, `stage`
        scopes: Vec<String>,
    },
}

impl Caller {
    fn may(&self, scope: &str) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Project { scopes, .. } => scopes.iter().any(|s| s == scope),
        }
    }

    /// Refuses unless the caller acts for `project` (the operator acts for all).
    fn acts_for(&self, project: &str, what: &str) -> Result<(), Problem> {
        match self {
            Caller::Project { project: mine, .. } if mine != project => Err(Problem {
                status: StatusCode::FORBIDDEN,
                title: "forbidden",
                detail: format!("{what} is project {project:?}'s; this token acts for project {mine:?}"),
                field: None,
            }),
            _ => Ok(()),
        }
    }
}

/// Tells who a bearer token is: the daemon's admin token, or a project's API token.
pub trait Authenticate: Send + Sync {
    /// The caller presenting `token`, or `None` if it is no token of this site's.
    fn caller(&self, token: &str) -> Option<Caller>;
}

/// The routes: under `/catalog/`. Each needs a bearer token with its scope: reads
/// `catalog:read`; publishing, checking out, sharing, evicting and rules `catalog:write`;
/// pins `stage`. Their OpenAPI document, `GET /catalog/openapi.json`, needs none.
pub fn router(state: Arc<CatalogState>) -> Router {
    let reads = Router::new()
        .route("/catalog/datasets", get(list))
        .route("/catalog/datasets/{ns}/{name}", get(show))
        .route("/catalog/sync", get(sync_status))
        .route("/catalog/placement", get(placement))
        .route("/catalog/feed", get(feed))
        .route("/catalog/pins", get(keep::pins))
        .route("/catalog/rules", get(keep::list_rules))
        .route("/catalog/rules/{site}/{id}", get(keep::show_rule))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), "catalog:read"), authorize));
    let writes = Router::new()
        .route("/catalog/datasets/{ns}/{name}/versions", post(publish_version))
        .route("/catalog/datasets/{ns}/{name}/checkout", post(checkout))
        .route("/catalog/datasets/{ns}/{name}/tags/{tag}", axum::routing::put(move_tag))
        .route("/catalog/namespaces/{ns}/sites", axum::routing::put(share))
        .route("/catalog/datasets/{ns}/{name}/metadata", axum::routing::put(describe))
        .route("/catalog/datasets/{ns}/{name}/evict", post(keep::evict))
        .route("/catalog/rules", post(keep::add_rule))
        .route("/catalog/rules/{id}", axum::routing::delete(keep::delete_rule))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), "catalog:write"), authorize));
    // Jobs pin what they stage, with the token they stage with.
    let stage = Router::new()
        .route("/catalog/pins", post(keep::pin))
        .route("/catalog/pins/{id}", axum::routing::delete(keep::unpin))
        .route("/catalog/stage/in", post(stage::stage_in))
        .route("/catalog/stage/versions/{version}/files/{*path}", get(stage::read_file))
        .route("/catalog/stage/out", post(stage::open_session))
        .route("/catalog/stage/out/{session}/missing", post(stage::missing))
        .route("/catalog/stage/out/{session}/chunks", post(stage::receive_chunks))
        .route("/catalog/stage/out/{session}/publish", post(stage::publish))
        .route("/catalog/stage/out/{session}", axum::routing::delete(stage::abort))
        // A `missing` list of 65,536 ids is 4.4 MB of JSON, a publish's file list more.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), "stage"), authorize));
    let open = Router::new().route("/catalog/openapi.json", get(openapi_json));
    reads.merge(writes).merge(stage).merge(open).with_state(state)
}

/// 401 without a token this site knows, 403 without the scope; else the caller goes along.
async fn authorize(
    State((state, scope)): State<(Arc<CatalogState>, &'static str)>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(caller) = presented.and_then(|token| state.auth.caller(token)) else {
        return Problem {
            status: StatusCode::UNAUTHORIZED,
            title: "unauthorized",
            detail: "send `Authorization: Bearer TOKEN`: a token from `clusster token create`, or the admin token"
                .into(),
            field: None,
        }
        .into_response();
    };
    if !caller.may(scope) {
        return Problem {
            status: StatusCode::FORBIDDEN,
            title: "forbidden",
            detail: format!("this token lacks the scope {scope}"),
            field: None,
        }
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The content type of every error of these routes.
const PROBLEM_JSON: &str = "application/problem+json";

/// An error of these routes: answered as a [`ProblemDocument`].
struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    field: Option<&'static str>,
}

/// An RFC 9457 problem document: how every route says what went wrong.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProblemDocument {
    /// always `about:blank`: the status and title say what kind of problem it is
    #[serde(rename = "type")]
    pub r#type: String,
    /// the kind of problem, in a few words (`not found`, `invalid request body`…)
    pub title: String,
    /// the HTTP status
    pub status: u16,
    /// what is wrong, and often how to ask instead
    pub detail: String,
    /// the body field or query parameter at fault, when one is
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemDocument {
            r#type: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field.map(str::to_owned),
        };
        let body = serde_json::to_string(&body).expect("a problem document serializes");
        (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
    }
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Self {
        let (status, title) = match &e {
            CatalogError::Refused(_) => (StatusCode::BAD_REQUEST, "refused"),
            CatalogError::NotFound(_) => (StatusCode::NOT_FOUND, "not found"),
            _ => {
                tracing::error!(error = %e, "catalog request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "catalog error")
            }
        };
        Problem { status, title, detail: e.to_string(), field: None }
    }
}

/// A 400 for a query parameter.
fn invalid_query(field: &'static str, detail: String) -> Problem {
    Problem { status: StatusCode::BAD_REQUEST, title: "invalid query", detail, field: Some(field) }
}

fn bad_body(e: axum::extract::rejection::JsonRejection, expected: &str) -> Problem {
    Problem {
        status: StatusCode::BAD_REQUEST,
        title: "invalid request body",
        detail: format!("{e}; send {expected}"),
        field: None,
    }
}

/// `POST /catalog/datasets/{ns}/{name}/versions`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// the bucket to publish from
    pub bucket: String,
    /// the prefix in it ("" for the whole bucket)
    #[serde(default)]
    pub prefix: String,
    /// a tag to move to the version
    #[serde(default)]
    pub tag: Option<String>,
}

/// The project that owns `bucket` here.
fn bucket_owner(state: &CatalogState, bucket: &str) -> Result<String, Problem> {
    state.catalog.storage().0.bucket(bucket).map(|b| b.owner).map_err(|e| Problem {
        status: StatusCode::NOT_FOUND,
        title: "no such bucket",
        detail: e.to_string(),
        field: Some("bucket"),
    })
}

/// Publishes a bucket prefix as a version of a dataset.
///
/// The version holds its chunks from then on: later writes to the prefix change nothing
/// in it. The namespace is created, owned by the bucket's owner, on its first publication.
#[utoipa::path(
    post,
    path = "/catalog/datasets/{ns}/{name}/versions",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
    ),
    request_body = PublishRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 201, description = "a new version", body = Published),
        (status = 200, body = Published,
            description = "the same content as a version published before: the tag, if any, moved to it"),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body, or a publication refused: a name, an empty prefix, a namespace \
                of another site"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the bucket's"),
        (status = 404, description = "no such bucket", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn publish_version(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"bucket": "data", "prefix": "run1/", "tag": "v1"}"#))?;
    caller.acts_for(&bucket_owner(&state, &request.bucket)?, &format!("bucket {}", request.bucket))?;
    let published: Published = publish::publish(
        &state.catalog,
        &request.bucket,
        &request.prefix,
        &ns,
        &name,
        request.tag.as_deref(),
        now_ms(),
    )
    .await?;
    let status = if published.new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(published)).into_response())
}

/// A version as `GET /catalog/datasets/{ns}/{name}` reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    /// its id
    pub version: VersionId,
    /// files in it
    pub files: u64,
    /// bytes of its files
    pub bytes: u64,
    /// when it was published, ms since the epoch (its home site's clock)
    pub published_ms: u64,
    /// the tags that name it
    pub tags: Vec<String>,
    /// where it is, as each site last said
    pub replicas: Vec<ReplicaView>,
}

/// One site's replica of a version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// the site
    pub site: String,
    /// how fresh this is: when this site last pulled from that site directly (ms since
    /// the epoch, this site's clock), now for this site's own replicas, none if never
    pub heard_ms: Option<u64>,
    /// `complete`, `partial`, `copying` or `lost`
    pub state: String,
    /// bytes of the version held there
    pub bytes_held: u64,
    /// distinct chunks held there
    pub chunks_held: u64,
    /// when the site said so, ms since the epoch (its clock)
    pub since_ms: u64,
}

/// A dataset as `GET /catalog/datasets/{ns}/{name}` reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetView {
    /// namespace
    pub ns: String,
    /// dataset name
    pub name: String,
    /// the namespace's home site and project
    pub home: String,
    /// the owning project
    pub project: String,
    /// the sites besides its home that may hold copies (an expression), if it is shared
    pub shared_with: Option<String>,
    /// what its home says of it: key → value
    pub metadata: BTreeMap<String, String>,
    /// its versions, oldest first
    pub versions: Vec<VersionView>,
}

/// A dataset: its versions, their tags, and where their replicas are.
#[utoipa::path(
    get,
    path = "/catalog/datasets/{ns}/{name}",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
    ),
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "the dataset", body = DatasetView),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such namespace or dataset in the catalog here"),
    )
)]
async fn show(
    State(state): State<Arc<CatalogState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<DatasetView>, Problem> {
    let catalog = &state.catalog;
    let heard = state.sync.as_ref().map(|s| s.peers()).unwrap_or_default();
    let namespace = catalog
        .namespace(&ns)?
        .ok_or_else(|| CatalogError::NotFound(format!("no namespace {ns} in the catalog here")))?;
    let tags = catalog.tags(&ns, &name)?;
    let mut versions = Vec::new();
    for (version, record) in catalog.versions(&ns, &name)? {
        let replicas = catalog
            .replicas(&version)?
            .into_iter()
            .map(|(site, r)| ReplicaView {
                heard_ms: if site == catalog.site() {
                    Some(now_ms())
                } else {
                    heard.get(&site).and_then(|p| p.last_ok_ms)
                },
                site,
                state: r.state.as_str().to_owned(),
                bytes_held: r.bytes_held,
                chunks_held: r.chunks_held,
                since_ms: r.since_ms,
            })
            .collect();
        versions.push(VersionView {
            version,
            files: record.files,
            bytes: record.bytes,
            published_ms: record.published_ms,
            tags: tags.iter().filter(|(_, v)| *v == version).map(|(t, _)| t.clone()).collect(),
            replicas,
        });
    }
    if versions.is_empty() {
        return Err(CatalogError::NotFound(format!("no dataset {ns}/{name} in the catalog here")).into());
    }
    versions.sort_by_key(|v| (v.published_ms, v.version));
    let shared_with = catalog.shared_with(&ns)?;
    let metadata = catalog.metadata(&ns, &name)?;
    Ok(Json(DatasetView {
        ns,
        name,
        home: namespace.home,
        project: namespace.project,
        shared_with,
        metadata,
        versions,
    }))
}

/// `GET /catalog/datasets?ns=PREFIX`: datasets whose namespace starts with the prefix.
#[derive(Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// namespace prefix ("" for all)
    #[serde(default)]
    pub ns: String,
    /// dataset name prefix ("" for all)
    #[serde(default)]
    pub name: String,
    /// only datasets with a tag of this name
    #[serde(default)]
    pub tag: Option<String>,
    /// only datasets whose metadata has `KEY=VALUE`, or has `KEY` at all
    #[serde(default)]
    pub meta: Option<String>,
}

/// One dataset of a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetEntry {
    /// namespace
    pub ns: String,
    /// name
    pub name: String,
    /// how many versions it has
    pub versions: u64,
}

/// Searches the datasets: namespace prefix, name prefix, a tag they have, and their
/// metadata.
#[utoipa::path(
    get,
    path = "/catalog/datasets",
    tag = "datasets",
    params(ListQuery),
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "the datasets, by namespace and name", body = Vec<DatasetEntry>),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a query parameter this route does not take"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn list(
    State(state): State<Arc<CatalogState>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DatasetEntry>>, Problem> {
    let axum::extract::Query(query) =
        query.map_err(|e| invalid_query("query", format!("{e}; ask /catalog/datasets?ns=PREFIX")))?;
    // KEY=VALUE, or KEY alone for any value.
    let meta = query.meta.as_deref().map(|meta| match meta.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (meta, None),
    });
    if let Some((key, _)) = meta {
        crate::event::check_name("metadata key", key)
            .map_err(|e| invalid_query("meta", format!("{e}; ask meta=KEY=VALUE or meta=KEY")))?;
    }
    let mut found = Vec::new();
    for (ns, name, versions) in state.catalog.datasets(&query.ns)? {
        if !name.starts_with(&query.name) {
            continue;
        }
        if let Some(tag) = &query.tag
            && state.catalog.tag(&ns, &name, tag)?.is_none()
        {
            continue;
        }
        if let Some((key, value)) = meta {
            let metadata = state.catalog.metadata(&ns, &name)?;
            if metadata.get(key).is_none_or(|held| value.is_some_and(|v| v != held)) {
                continue;
            }
        }
        found.push(DatasetEntry { ns, name, versions });
    }
    Ok(Json(found))
}

/// `PUT /catalog/datasets/{ns}/{name}/tags/{tag}` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    /// a tag, or a version id in hex
    pub version: String,
}

/// What `PUT /catalog/datasets/{ns}/{name}/tags/{tag}` did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TagMoved {
    /// namespace
    pub ns: String,
    /// dataset name
    pub name: String,
    /// the tag
    pub tag: String,
    /// the version it now names
    pub version: VersionId,
}

/// Moves a tag to a version (another tag's, or one named by its id).
#[utoipa::path(
    put,
    path = "/catalog/datasets/{ns}/{name}/tags/{tag}",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
        ("tag" = String, Path, description = "the tag to move"),
    ),
    request_body = TagRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 200, description = "the tag moved", body = TagMoved),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body, a tag name refused, or a namespace of another site"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, description = "no such tag or version", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn move_tag(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((ns, name, tag)): Path<(String, String, String)>,
    body: Result<Json<TagRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TagMoved>, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"version": "v1"}"#))?;
    if let Some(namespace) = state.catalog.namespace(&ns)? {
        caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    }
    let version = publish::tag(&state.catalog, &ns, &name, &tag, &request.version, now_ms()).await.map_err(|e| {
        let field = match &e {
            CatalogError::NotFound(_) => Some("version"),
            CatalogError::Refused(reason) if reason.starts_with("tag ") => Some("tag"),
            _ => None,
        };
        let mut p = Problem::from(e);
        p.field = field;
        p
    })?;
    Ok(Json(TagMoved { ns, name, tag, version }))
}

/// `PUT /catalog/namespaces/{ns}/sites` body: the sites that may hold copies.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// an expression over site names and attributes (`country=fr & tier=hpc`, `*`)
    pub sites: String,
}

/// What `PUT /catalog/namespaces/{ns}/sites` did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Shared {
    /// namespace
    pub ns: String,
    /// the expression the sites that may hold copies now match, as parsed
    pub sites: String,
}

/// Names the sites that may hold copies of a namespace's versions (its home always may).
#[utoipa::path(
    put,
    path = "/catalog/namespaces/{ns}/sites",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
    ),
    request_body = ShareRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 200, description = "the namespace is shared with the sites matching the expression", body = Shared),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body or expression, or a namespace of another site"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, description = "no such namespace", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn share(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(ns): Path<String>,
    body: Result<Json<ShareRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Shared>, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"sites": "country=fr & tier=hpc"}"#))?;
    if let Some(namespace) = state.catalog.namespace(&ns)? {
        caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    }
    let sites = publish::share(&state.catalog, &ns, &request.sites, now_ms()).await.map_err(|e| {
        let field =
            matches!(&e, CatalogError::Refused(reason) if reason.starts_with("sites expression")).then_some("sites");
        let mut p = Problem::from(e);
        p.field = field;
        p
    })?;
    Ok(Json(Shared { ns, sites }))
}

/// `PUT /catalog/datasets/{ns}/{name}/metadata` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// key → value, replacing what the dataset had (empty: none). At most 32 entries; keys
    /// are names (letters, digits, `-_.`), values at most 256 bytes.
    pub metadata: BTreeMap<String, String>,
}

/// Replaces what a dataset's home says of it (searched with `GET /catalog/datasets?meta=`).
#[utoipa::path(
    put,
    path = "/catalog/datasets/{ns}/{name}/metadata",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
    ),
    request_body = DescribeRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 200, description = "the dataset's metadata is now the one sent", body = DescribeRequest),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body or metadata, or a namespace of another site"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's"),
        (status = 404, description = "no such dataset", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn describe(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Json<DescribeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DescribeRequest>, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"metadata": {"experiment": "cmip6"}}"#))?;
    if let Some(namespace) = state.catalog.namespace(&ns)? {
        caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    }
    let metadata = request.metadata.clone();
    publish::describe(&state.catalog, &ns, &name, request.metadata, now_ms()).await.map_err(|e| {
        let field = matches!(&e, CatalogError::Refused(reason) if reason.starts_with("metadata")).then_some("metadata");
        let mut p = Problem::from(e);
        p.field = field;
        p
    })?;
    Ok(Json(DescribeRequest { metadata }))
}

/// `POST /catalog/datasets/{ns}/{name}/checkout`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// a tag, or a version id in hex
    pub version: String,
    /// the bucket to write the objects into
    pub bucket: String,
    /// the prefix their keys get
    #[serde(default)]
    pub prefix: String,
}

/// What a checkout did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckedOut {
    /// the version
    pub version: VersionId,
    /// objects made
    pub files: u64,
}

/// Makes a version's files objects of a bucket again, without copying their data.
#[utoipa::path(
    post,
    path = "/catalog/datasets/{ns}/{name}/checkout",
    tag = "datasets",
    params(
        ("ns" = String, Path, description = "namespace: SITE.LABEL, at home at SITE"),
        ("name" = String, Path, description = "dataset name"),
    ),
    request_body = CheckoutRequest,
    security(("bearer" = ["catalog:write"])),
    responses(
        (status = 200, description = "the objects were made", body = CheckedOut),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body, or a bucket or prefix refused"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "the token lacks catalog:write, or acts for another project than the namespace's or the \
                bucket's"),
        (status = 404, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "no such namespace, bucket, tag or version, or no complete replica at this site"),
    )
)]
async fn checkout(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Json<CheckoutRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<CheckedOut>, Problem> {
    let Json(request) =
        body.map_err(|e| bad_body(e, r#"{"version": "v1", "bucket": "data", "prefix": "restored/"}"#))?;
    // The files are the namespace's project's: another project's token may not make them
    // objects it can read, whatever bucket it names.
    let namespace = state
        .catalog
        .namespace(&ns)?
        .ok_or_else(|| CatalogError::NotFound(format!("no namespace {ns} in the catalog here")))?;
    caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    caller.acts_for(&bucket_owner(&state, &request.bucket)?, &format!("bucket {}", request.bucket))?;
    let version = publish::resolve(&state.catalog, &ns, &name, &request.version).map_err(|e| {
        let mut p = Problem::from(e);
        p.field = Some("version");
        p
    })?;
    let replica_here = state
        .catalog
        .replicas(&version)?
        .into_iter()
        .any(|(site, r)| site == state.catalog.site() && r.state == ReplicaState::Complete);
    if !replica_here {
        return Err(CatalogError::NotFound(format!(
            "{ns}/{name}@{} has no complete replica at this site: copy it here first",
            request.version
        ))
        .into());
    }
    let files = publish::checkout(&state.catalog, &version, &request.bucket, &request.prefix).await?;
    Ok(Json(CheckedOut { version, files }))
}

/// `GET /catalog/placement?dataset=NS/NAME&version=TAG-OR-ID&sites=a,b,c`.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PlacementQuery {
    /// NS/NAME
    pub dataset: String,
    /// a tag, or a version id in hex
    pub version: String,
    /// the candidate sites, comma-separated
    pub sites: String,
}

/// The answer to a placement query.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlacementAnswer {
    /// the version asked about
    pub version: VersionId,
    /// one entry per candidate, in the order asked
    pub sites: Vec<crate::quic::SitePlacement>,
}

/// Where a version would be staged at least cost: for each candidate site, what it holds
/// already, what it lacks, and where the rest would come from.
#[utoipa::path(
    get,
    path = "/catalog/placement",
    tag = "federation",
    params(PlacementQuery),
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "one entry per candidate, in the order asked", body = PlacementAnswer),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed query: `field` names the parameter"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such tag or version", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn placement(
    State(state): State<Arc<CatalogState>>,
    query: Result<axum::extract::Query<PlacementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PlacementAnswer>, Problem> {
    let axum::extract::Query(query) = query.map_err(|e| {
        invalid_query("query", format!("{e}; ask /catalog/placement?dataset=ns/name&version=v1&sites=a,b,c"))
    })?;
    let (ns, name) = query
        .dataset
        .split_once('/')
        .ok_or_else(|| invalid_query("dataset", format!("{:?}: name a dataset as NAMESPACE/NAME", query.dataset)))?;
    let candidates: Vec<String> =
        query.sites.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if candidates.is_empty() || candidates.len() > 64 {
        return Err(invalid_query("sites", format!("{:?}: 1 to 64 site names, comma-separated", query.sites)));
    }
    let version = publish::resolve(&state.catalog, ns, name, &query.version).map_err(|e| {
        let mut p = Problem::from(e);
        p.field = Some("version");
        p
    })?;
    let sites = match &state.sync {
        Some(sync) => sync.placement(&version, &candidates).await?,
        None => crate::quic::placement_here(&state.catalog, &version, &candidates)?,
    };
    Ok(Json(PlacementAnswer { version, sites }))
}

/// `GET /catalog/feed?cursor=C&limit=N`: the catalog's events since a cursor.
#[derive(Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// where the last page ended (`site:seq,site:seq`; empty for the start)
    #[serde(default)]
    pub cursor: String,
    /// most events (at most 1,000)
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A page of the change feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedPage {
    /// events, each site's in the order it wrote them
    pub events: Vec<crate::event::Event>,
    /// where this page ends: ask again with it for what comes next
    pub cursor: String,
}

/// Parses a feed cursor (`site:seq,site:seq`).
fn parse_cursor(text: &str) -> Result<crate::catalog::Heads, String> {
    let mut heads = crate::catalog::Heads::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (site, seq) = part.rsplit_once(':').ok_or_else(|| format!("{part:?} is not site:seq"))?;
        heads.insert(site.to_owned(), seq.parse().map_err(|_| format!("{part:?}: seq is not a number"))?);
    }
    Ok(heads)
}

/// The catalog's events after a cursor: every site's log, each in the order it was written.
#[utoipa::path(
    get,
    path = "/catalog/feed",
    tag = "federation",
    params(FeedQuery),
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "a page of events, and the cursor to ask for the next", body = FeedPage),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed query or cursor"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn feed(
    State(state): State<Arc<CatalogState>>,
    query: Result<axum::extract::Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FeedPage>, Problem> {
    let axum::extract::Query(query) =
        query.map_err(|e| invalid_query("query", format!("{e}; ask /catalog/feed?cursor=&limit=100")))?;
    let mut heads = parse_cursor(&query.cursor)
        .map_err(|e| invalid_query("cursor", format!("{e}; pass back a cursor the feed gave")))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let mut events = Vec::new();
    for signed in state.catalog.events_after(&heads, limit)? {
        let event: crate::event::Event = postcard::from_bytes(&signed.bytes)
            .map_err(|e| CatalogError::Corrupt { what: "stored event".into(), reason: e.to_string() })?;
        heads.insert(event.origin.clone(), event.seq);
        events.push(event);
    }
    let cursor = heads.iter().map(|(site, seq)| format!("{site}:{seq}")).collect::<Vec<_>>().join(",");
    Ok(Json(FeedPage { events, cursor }))
}

/// What `GET /catalog/sync` reports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    /// this site
    pub site: String,
    /// what this site holds of each site's log: the last seq
    pub heads: BTreeMap<String, u64>,
    /// a digest of every log held, hex: equal at two sites exactly when they hold the same events
    pub digest: String,
    /// this site's last pull from each peer
    pub peers: BTreeMap<String, crate::quic::PeerSync>,
    /// for each log held whole only from a checkpoint on, that checkpoint's seq: below it,
    /// only the events that still stand are held, and a peer lacking them gets a snapshot
    pub compacted_at: BTreeMap<String, u64>,
}

/// This site's heads and digest, and its last pull from each peer.
#[utoipa::path(
    get,
    path = "/catalog/sync",
    tag = "federation",
    security(("bearer" = ["catalog:read"])),
    responses(
        (status = 200, description = "this site's side of the sync", body = SyncStatus),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_READ, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
async fn sync_status(State(state): State<Arc<CatalogState>>) -> Result<Json<SyncStatus>, Problem> {
    let heads = state.catalog.heads()?;
    let digest = hex::encode(state.catalog.digest()?);
    let peers = state.sync.as_ref().map(|s| s.peers()).unwrap_or_default();
    let mut compacted_at = BTreeMap::new();
    for origin in heads.keys() {
        if let Some(seq) = state.catalog.checkpoint_record(origin)?.compacted {
            compacted_at.insert(origin.clone(), seq);
        }
    }
    Ok(Json(SyncStatus { site: state.catalog.site().to_owned(), heads, digest, peers, compacted_at }))
}

// ---------------------------------------------------------------- the API document

/// The 401 of every route but the document's.
const NO_TOKEN: &str = "no bearer token, or one this site does not know";
/// The 403 of the reading routes.
const NO_READ: &str = "the token lacks catalog:read";

/// The OpenAPI 3.1 document of [`router`]'s routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clusster catalog API",
        version = env!("CARGO_PKG_VERSION"),
        description = "The federated catalog of a clusster site: datasets, their versions and where their copies are; \
                       pins and replication rules. Errors are RFC 9457 problem documents (application/problem+json)."
    ),
    paths(
        list,
        show,
        sync_status,
        placement,
        feed,
        keep::pins,
        keep::list_rules,
        keep::show_rule,
        publish_version,
        checkout,
        move_tag,
        share,
        describe,
        keep::evict,
        keep::add_rule,
        keep::delete_rule,
        keep::pin,
        keep::unpin,
        stage::stage_in,
        stage::read_file,
        stage::open_session,
        stage::missing,
        stage::receive_chunks,
        stage::publish,
        stage::abort,
        openapi_json,
    ),
    components(schemas(ProblemDocument)),
    modifiers(&BearerScheme),
    tags(
        (name = "datasets", description = "Datasets and their versions: publish, list, tag, check out, share"),
        (name = "federation", description = "The federation's catalog as this site knows it: sync, placement, feed"),
        (name = "keeping", description = "What keeps copies: pins, eviction and replication rules"),
        (name = "staging", description = "Job stage-in and stage-out from compute nodes"),
        (name = "api", description = "This document"),
    )
)]
pub struct CatalogApi;

/// The API's OpenAPI 3.1 document, as `GET /catalog/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    CatalogApi::openapi()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/catalog/openapi.json",
    tag = "api",
    responses((status = 200, description = "the document", body = Object))
)]
async fn openapi_json() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| openapi().to_json().expect("the OpenAPI document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// The `bearer` scheme the operations' `security` names.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A project's API token from `clusster token create`, with the scopes it was given \
                 (catalog:read, catalog:write, stage), or the site's admin token (every scope, every project). \
                 Each operation's security lists the scope it needs.",
            ))
            .build();
        openapi.components.get_or_insert_default().add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// Hex in JSON, as [`VersionId`] serializes there.
impl utoipa::PartialSchema for VersionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("a version's id: the BLAKE3 of its manifest, 64 lowercase hex digits"))
            .into()
    }
}

impl ToSchema for VersionId {}
