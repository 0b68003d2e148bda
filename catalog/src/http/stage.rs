//! Routes for job staging (`stage` scope): stage-in's version and files, stage-out's
//! sessions. The exchange is described in [`crate::stage`].

use super::{Caller, CatalogState, NO_TOKEN, PROBLEM_JSON, Problem, ProblemDocument, bad_body};
use crate::catalog::CatalogError;
use crate::manifest::VersionId;
use crate::stage::{
    ChunkList, ChunksStored, StageError, StageInAnswer, StageInRequest, StageOutPublish, StageOutPublished,
    StageOutRequest, StageOutSession,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Longest a stage-in request waits for a fetch before answering `fetching`.
const MAX_WAIT_SECS: u64 = 60;

/// The 429 of a session's `missing` and `chunks`.
const SESSION_FULL: &str = "the session has named as many chunks as one session may";

/// The 403 of the staging routes.
const NO_STAGE: &str = "the token lacks stage, or acts for another project than the dataset's";

impl From<StageError> for Problem {
    fn from(e: StageError) -> Self {
        let (status, title) = match &e {
            StageError::Catalog(e) => return Problem::from(e.clone()),
            StageError::TransferFailed(_) => (StatusCode::BAD_GATEWAY, "transfer failed"),
            StageError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "no space"),
            StageError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            StageError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too many"),
        };
        Problem { status, title, detail: e.to_string(), field: None }
    }
}

fn invalid(name: &'static str, detail: String) -> Problem {
    Problem { status: StatusCode::BAD_REQUEST, title: "invalid request body", detail, field: Some(name) }
}

/// `NS/NAME` into its parts.
fn dataset_parts(text: &str) -> Option<(&str, &str)> {
    text.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

/// The project the caller stages for in namespace `ns`: its own (a project token), or the
/// namespace's (the operator, for a namespace that exists).
fn staging_project(state: &CatalogState, caller: &Caller, ns: &str) -> Result<String, Problem> {
    let namespace = state.catalog.namespace(ns)?;
    if let Some(namespace) = &namespace {
        caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    }
    match (caller, namespace) {
        (Caller::Project { project, .. }, _) => Ok(project.clone()),
        (Caller::Operator, Some(namespace)) => Ok(namespace.project),
        (Caller::Operator, None) => Err(invalid(
            "dataset",
            format!("namespace {ns} does not exist yet: stage out with a project's token, which it will belong to"),
        )),
    }
}

/// The caller's project, for the session routes (`None`: the operator, who may use any).
fn caller_project(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Project { project, .. } => Some(project),
        Caller::Operator => None,
    }
}

/// Pins a version for a job and makes the site's replica complete, fetching what is
/// missing from the best replica; answers with the files once it is (else `fetching`:
/// ask again).
#[utoipa::path(
    post,
    path = "/catalog/stage/in",
    tag = "staging",
    request_body = StageInRequest,
    security(("bearer" = ["stage"])),
    responses(
        (status = 200, description = "the version, pinned, with its files once the replica here is complete",
            body = StageInAnswer),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body, version, job or pin_secs (1 s to 366 days)"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such dataset, tag or version", body = ProblemDocument,
            content_type = PROBLEM_JSON),
        (status = 502, description = "what is missing here could not be fetched from another site",
            body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn stage_in(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Body<StageInRequest>,
) -> Result<Json<StageInAnswer>, Problem> {
    let Json(request) = body.map_err(|e| {
        bad_body(e, r#"{"version": "paris.climate/era5@v3", "job": "1234", "pin_secs": 86400, "wait_secs": 30}"#)
    })?;
    let (dataset, reference) = request.version.rsplit_once('@').unwrap_or((&request.version, ""));
    let Some((ns, name)) = dataset_parts(dataset) else {
        return Err(invalid(
            "version",
            format!("{:?}: name it NAMESPACE/NAME, NAMESPACE/NAME@TAG or NAMESPACE/NAME@VERSION-ID", request.version),
        ));
    };
    if let Some(namespace) = state.catalog.namespace(ns)? {
        caller.acts_for(&namespace.project, &format!("namespace {ns}"))?;
    }
    let version = match reference {
        // No reference: the version published last.
        "" => state
            .catalog
            .versions(ns, name)?
            .into_iter()
            .max_by_key(|(id, record)| (record.published_ms, *id))
            .map(|(id, _)| id)
            .ok_or_else(|| CatalogError::NotFound(format!("no dataset {ns}/{name} in the catalog here")))?,
        reference => crate::publish::resolve(&state.catalog, ns, name, reference).map_err(|e| {
            let mut p = Problem::from(e);
            p.field = Some("version");
            p
        })?,
    };
    crate::event::check_name("job", &request.job).map_err(|e| invalid("job", e))?;
    if request.pin_secs == 0 || request.pin_secs > crate::keeping::MAX_PIN_SECS {
        return Err(invalid(
            "pin_secs",
            format!(
                "pin_secs {} (--pin-for): a pin lasts 1 second to 366 days; stage in again to hold it longer",
                request.pin_secs
            ),
        ));
    }
    let until = crate::now_ms() + request.pin_secs * 1000;
    let wait = Duration::from_secs(request.wait_secs.min(MAX_WAIT_SECS));
    Ok(Json(state.stager.stage_in(version, &request.job, until, wait).await?))
}

/// The bytes of one file of a version held here, from `Range: bytes=N-` when given (to
/// resume). Each chunk is verified as it is read; the client checks them against the
/// manifest too.
#[utoipa::path(
    get,
    path = "/catalog/stage/versions/{version}/files/{path}",
    tag = "staging",
    params(
        ("version" = String, Path, description = "the version id, hex"),
        ("path" = String, Path, description = "the file's path in the version, `/`-separated"),
    ),
    security(("bearer" = ["stage"])),
    responses(
        (status = 200, description = "the file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the file's bytes from the range's start", content_type = "application/octet-stream",
            body = Vec<u8>),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such version here, or no such file in it", body = ProblemDocument,
            content_type = PROBLEM_JSON),
        (status = 416, description = "a range other than `bytes=N-` within the file", body = ProblemDocument,
            content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn read_file(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((version, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let version = VersionId::from_hex(&version).ok_or_else(|| Problem {
        field: Some("version"),
        ..Problem::from(CatalogError::Refused(format!("{version:?}: a version id is 64 hex digits")))
    })?;
    // The caller may read it if it acts for a namespace that published it.
    let publications = state.catalog.publications(&version)?;
    let mut allowed = false;
    let mut refusal = None;
    for (ns, _) in &publications {
        if let Some(namespace) = state.catalog.namespace(ns)? {
            match caller.acts_for(&namespace.project, &format!("version {version}")) {
                Ok(()) => allowed = true,
                Err(p) => refusal = Some(p),
            }
        }
    }
    if !allowed {
        return Err(refusal.unwrap_or_else(|| {
            Problem::from(CatalogError::NotFound(format!("version {version} is not in the catalog here")))
        }));
    }
    let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or("")).map(|text| {
        text.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<u64>().ok()).ok_or_else(
            || Problem {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                title: "range not satisfiable",
                detail: format!("range {text:?}: ask bytes=N- (from byte N to the end)"),
                field: None,
            },
        )
    });
    let offset = match range {
        Some(range) => Some(range?),
        None => None,
    };
    let (len, stream) = state.stager.read_file(&version, &path, offset.unwrap_or(0)).map_err(|e| match e {
        StageError::Conflict(detail) => {
            Problem { status: StatusCode::RANGE_NOT_SATISFIABLE, title: "range not satisfiable", detail, field: None }
        }
        e => Problem::from(e),
    })?;
    let status = if offset.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let body = axum::body::Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, len.to_string())],
        body,
    )
        .into_response())
}

use futures::StreamExt;

/// Opens a stage-out session for a dataset of this site's, and says how the site cuts
/// chunks.
#[utoipa::path(
    post,
    path = "/catalog/stage/out",
    tag = "staging",
    request_body = StageOutRequest,
    security(("bearer" = ["stage"])),
    responses(
        (status = 201, description = "a session", body = StageOutSession),
        (status = 400, body = ProblemDocument, content_type = PROBLEM_JSON,
            description = "a malformed body or dataset, or a namespace of another site"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "the project has as many sessions open as it may", body = ProblemDocument,
            content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn open_session(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Body<StageOutRequest>,
) -> Result<(StatusCode, Json<StageOutSession>), Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"dataset": "paris.climate/results"}"#))?;
    let Some((ns, name)) = dataset_parts(&request.dataset) else {
        return Err(invalid("dataset", format!("{:?}: name it NAMESPACE/NAME", request.dataset)));
    };
    let project = staging_project(&state, &caller, ns)?;
    let session = state.stager.open(&project, ns, name).await.map_err(|e| {
        let mut p = Problem::from(e);
        if p.status == StatusCode::BAD_REQUEST {
            p.field = p.field.or(Some("dataset"));
        }
        p
    })?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Which of the chunks listed this site lacks, for the session's project.
#[utoipa::path(
    post,
    path = "/catalog/stage/out/{session}/missing",
    tag = "staging",
    params(("session" = String, Path, description = "the session")),
    request_body = ChunkList,
    security(("bearer" = ["stage"])),
    responses(
        (status = 200, description = "the chunks to send", body = ChunkList),
        (status = 400, description = "a malformed body, or too many ids", body = ProblemDocument,
            content_type = PROBLEM_JSON),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such session", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = SESSION_FULL, body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn missing(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session): Path<String>,
    body: Body<ChunkList>,
) -> Result<Json<ChunkList>, Problem> {
    let Json(request) = body.map_err(|e| bad_body(e, r#"{"chunks": ["<64 hex digits>", "…"]}"#))?;
    let chunks = state.stager.missing(&session, caller_project(&caller), request.chunks).await?;
    Ok(Json(ChunkList { chunks }))
}

/// Receives chunks for the session: records of a 32-byte id, a u32 big-endian length and
/// the bytes, each checked against its id.
#[utoipa::path(
    post,
    path = "/catalog/stage/out/{session}/chunks",
    tag = "staging",
    params(("session" = String, Path, description = "the session")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "records: 32-byte chunk id, u32 big-endian length, the bytes; at most 64 MiB"),
    security(("bearer" = ["stage"])),
    responses(
        (status = 200, description = "what was stored", body = ChunksStored),
        (status = 400, description = "a record cut short, too large, or bytes that do not hash to their id",
            body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such session", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = SESSION_FULL, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 507, description = "this site's disk is full", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn receive_chunks(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session): Path<String>,
    body: axum::body::Body,
) -> Result<Json<ChunksStored>, Problem> {
    let stream = body.into_data_stream();
    let (stager, project) = (state.stager.clone(), caller_project(&caller).map(str::to_owned));
    // In a task of its own, holding the session until the chunks it stores have landed:
    // a client hanging up mid-way must not let an abort or a publish of the session run
    // between the two (the abort would miss what lands after it, held for ever).
    let received = tokio::spawn(async move { stager.receive(&session, project.as_deref(), stream).await });
    let stored = received.await.map_err(|e| Problem::from(CatalogError::Data(format!("receiving chunks: {e}"))))?;
    Ok(Json(stored?))
}

/// Publishes the session's files as a version (the chunks they name were sent or found
/// here), applies the rule asked for and ends the job's pins. Ends the session.
#[utoipa::path(
    post,
    path = "/catalog/stage/out/{session}/publish",
    tag = "staging",
    params(("session" = String, Path, description = "the session")),
    request_body = StageOutPublish,
    security(("bearer" = ["stage"])),
    responses(
        (status = 200, description = "the version", body = StageOutPublished),
        (status = 400, description = "a malformed body, file list, tag or rule", body = ProblemDocument,
            content_type = PROBLEM_JSON),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such session", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "a file names a chunk neither sent nor found here", body = ProblemDocument,
            content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn publish(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session): Path<String>,
    body: Body<StageOutPublish>,
) -> Result<Json<StageOutPublished>, Problem> {
    let Json(request) = body
        .map_err(|e| bad_body(e, r#"{"files": [...], "tag": "v1", "rule": "2 copies on tier=hpc", "job": "1234"}"#))?;
    Ok(Json(state.stager.publish(&session, caller_project(&caller), request).await?))
}

/// Ends a session without publishing; what it brought is let go.
#[utoipa::path(
    delete,
    path = "/catalog/stage/out/{session}",
    tag = "staging",
    params(("session" = String, Path, description = "the session")),
    security(("bearer" = ["stage"])),
    responses(
        (status = 204, description = "ended"),
        (status = 401, description = NO_TOKEN, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = NO_STAGE, body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "no such session", body = ProblemDocument, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn abort(
    State(state): State<Arc<CatalogState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session): Path<String>,
) -> Result<StatusCode, Problem> {
    state.stager.abort(&session, caller_project(&caller)).await?;
    Ok(StatusCode::NO_CONTENT)
}
