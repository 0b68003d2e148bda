//! The admin HTTP listener: `/health` and `/metrics` for monitoring, and `/admin/*`
//! (maintenance, access keys, bucket grants and shares with sites, transfers) for the operator, behind the bearer token
//! kept in `<data_dir>/admin.token`. Errors are RFC 9457 problem documents.

use crate::api::{BucketShare, CreatedKey, CreatedToken, KeyInfo, NewKey, NewToken, NewTransfer, SiteRights, Unshared};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use store::Store;
use transfer_engine::manager::{ApiError, Kind, TransferSpec, Transfers};
use transfer_proto::wire::Selection;

/// What the handlers share.
pub struct AdminState {
    /// the store
    pub store: Arc<Store>,
    /// set once every listener is bound, cleared when shutdown starts
    pub ready: AtomicBool,
    /// site name and bound addresses, reported by /health
    pub listeners: serde_json::Value,
    /// the bearer token /admin/* requires
    pub token: String,
    /// transfers, when this site is federated
    pub transfers: Option<Arc<Transfers>>,
    /// this site's catalog
    pub catalog: Arc<catalog::http::CatalogState>,
}

/// The admin token file in a data dir.
pub const TOKEN_FILE: &str = "admin.token";

/// Reads the admin token, creating it (readable by the owner only) on first start.
pub fn ensure_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    Ok(token)
}

/// An error as `application/problem+json`.
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, title, detail: detail.into() }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

impl From<store::StoreError> for Problem {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError as E;
        match e {
            E::NoSuchBucket(_) => Problem::new(StatusCode::NOT_FOUND, "no such bucket", e.to_string()),
            E::InvalidName(_) => Problem::new(StatusCode::BAD_REQUEST, "invalid name", e.to_string()),
            _ => {
                tracing::error!(error = %e, "admin request failed");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store error", e.to_string())
            }
        }
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

/// The router.
pub fn router(state: Arc<AdminState>) -> Router {
    let operator = Router::new()
        .route("/admin/gc", post(gc))
        .route("/admin/scrub", post(scrub))
        .route("/admin/check", get(check))
        .route("/admin/keys", post(create_key).get(list_keys))
        .route("/admin/keys/{id}", axum::routing::delete(delete_key))
        .route("/admin/tokens", post(create_token).get(list_tokens))
        .route("/admin/tokens/{id}", axum::routing::delete(delete_token))
        .route("/admin/buckets/{bucket}/grants/{project}", axum::routing::put(grant).delete(revoke))
        .route("/admin/buckets/{bucket}/sites", get(list_shares))
        .route("/admin/buckets/{bucket}/sites/{site}", axum::routing::put(share).delete(unshare))
        .route("/admin/repair", post(repair))
        .route("/admin/transfers", post(start_transfer).get(list_transfers))
        .route("/admin/transfers/{id}", get(transfer_status).delete(cancel_transfer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        // The catalog's routes check tokens and scopes themselves (see `Tokens`).
        .merge(catalog::http::router(state.catalog.clone()));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(operator)
        .fallback(|| async {
            Problem::new(StatusCode::NOT_FOUND, "not found", "no such endpoint; see the README's admin API")
        })
}

/// Whether `presented` is `token`, compared in constant time: the admin token is the only
/// credential of the operator's routes.
fn is_admin_token(presented: &str, token: &str) -> bool {
    presented.len() == token.len() && presented.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Who a bearer token is, for the catalog's routes: the operator (the admin token), or the
/// project of an API token from `clusster token create`.
pub struct Tokens {
    /// the admin token
    pub admin: String,
    /// where API tokens are kept (hashed)
    pub store: Arc<Store>,
}

impl catalog::http::Authenticate for Tokens {
    fn caller(&self, token: &str) -> Option<catalog::http::Caller> {
        if is_admin_token(token, &self.admin) {
            return Some(catalog::http::Caller::Operator);
        }
        match self.store.api_token(token) {
            Ok(record) => record.map(|r| catalog::http::Caller::Project { project: r.project, scopes: r.scopes }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read API tokens");
                None
            }
        }
    }
}

async fn require_token(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = presented.is_some_and(|p| is_admin_token(p, &state.token));
    if ok {
        next.run(request).await
    } else {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("send Authorization: Bearer <token>; the token is in the data dir's {TOKEN_FILE}"),
        )
        .into_response()
    }
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        json(&serde_json::json!({ "status": "ready", "listeners": state.listeners }))
    } else {
        Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "not ready",
            detail: "starting or shutting down".into(),
        }
        .into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state.store, state.transfers.as_deref(), state.catalog.sync.as_deref()),
    )
        .into_response()
}

async fn gc(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&state.store.gc().await?))
}

async fn scrub(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&state.store.scrub().await?))
}

async fn create_key(
    State(state): State<Arc<AdminState>>,
    body: Result<axum::Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let axum::Json(req) = body.map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid request", format!("{e}; send {{\"project\": \"NAME\"}}"))
    })?;
    let (id, secret) = state.store.create_access_key(&req.project).await?;
    Ok((StatusCode::CREATED, json(&CreatedKey { access_key_id: id, secret_access_key: secret, project: req.project }))
        .into_response())
}

async fn create_token(
    State(state): State<Arc<AdminState>>,
    body: Result<axum::Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let axum::Json(req) = body.map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid request",
            format!("{e}; send {{\"project\": \"NAME\", \"scopes\": [\"catalog:read\"]}}"),
        )
    })?;
    let (token, record) = state.store.create_api_token(&req.project, &req.scopes).await?;
    let created = CreatedToken { token, id: record.id, project: record.project, scopes: record.scopes };
    Ok((StatusCode::CREATED, json(&created)).into_response())
}

async fn list_tokens(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    let tokens: Vec<serde_json::Value> = state
        .store
        .list_api_tokens()?
        .into_iter()
        .map(
            |r| serde_json::json!({ "id": r.id, "project": r.project, "scopes": r.scopes, "created_ms": r.created_ms }),
        )
        .collect();
    Ok(json(&tokens))
}

async fn delete_token(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    if state.store.delete_api_token(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "no such token", format!("no API token with id {id}")))
    }
}

async fn list_keys(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    let keys: Vec<_> = state
        .store
        .list_access_keys()?
        .into_iter()
        .map(|(id, r)| KeyInfo { access_key_id: id, project: r.project, created_ms: r.created_ms })
        .collect();
    Ok(json(&keys))
}

async fn delete_key(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    if state.store.delete_access_key(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "no such key", format!("access key {id} does not exist")))
    }
}

async fn grant(
    State(state): State<Arc<AdminState>>,
    Path((bucket, project)): Path<(String, String)>,
) -> Result<Response, Problem> {
    state.store.grant_bucket(&bucket, &project).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke(
    State(state): State<Arc<AdminState>>,
    Path((bucket, project)): Path<(String, String)>,
) -> Result<Response, Problem> {
    state.store.revoke_bucket(&bucket, &project).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn share(
    State(state): State<Arc<AdminState>>,
    Path((bucket, site)): Path<(String, String)>,
    body: Result<axum::Json<SiteRights>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid share", detail);
    let axum::Json(rights) = body.map_err(|e| bad(format!("{e}; send {{\"read\": true, \"write\": false}}")))?;
    // A typo would otherwise share the bucket with nobody, silently. (A site that is not
    // federated yet may set its shares before it joins: nothing to check them against.)
    if let Some(transfers) = &state.transfers
        && !transfers.is_peer(&site)
    {
        return Err(bad(format!("{site:?} is not another site of this site's federation file")));
    }
    let record = state.store.share_bucket(&bucket, &site, rights.read, rights.write).await?;
    Ok(json(&BucketShare { bucket, site, read: record.read, write: record.write, created_ms: record.created_ms }))
}

async fn unshare(
    State(state): State<Arc<AdminState>>,
    Path((bucket, site)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let was_shared = state.store.unshare_bucket(&bucket, &site).await?;
    Ok(json(&Unshared { bucket, site, was_shared }))
}

async fn list_shares(State(state): State<Arc<AdminState>>, Path(bucket): Path<String>) -> Result<Response, Problem> {
    let shares: Vec<BucketShare> = state
        .store
        .bucket_shares(&bucket)?
        .into_iter()
        .map(|(site, r)| BucketShare {
            bucket: bucket.clone(),
            site,
            read: r.read,
            write: r.write,
            created_ms: r.created_ms,
        })
        .collect();
    Ok(json(&shares))
}

async fn check(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    let store = state.store.clone();
    let report = tokio::task::spawn_blocking(move || store.check()).await.map_err(|e| Problem {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        title: "task failed",
        detail: e.to_string(),
    })??;
    Ok(json(&report))
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(_) => Problem::new(StatusCode::BAD_REQUEST, "invalid transfer", e.to_string()),
            ApiError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "no such transfer", e.to_string()),
            ApiError::Ended(_) => Problem::new(StatusCode::CONFLICT, "transfer ended", e.to_string()),
        }
    }
}

fn transfers(state: &AdminState) -> Result<&Arc<Transfers>, Problem> {
    state.transfers.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "not federated",
            "this site has no federation: set [federation] file in its config (see `clusster federation init`)",
        )
    })
}

/// `bucket/prefix` → selection.
pub fn parse_selection(text: &str) -> Result<Selection, String> {
    let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
    if bucket.is_empty() {
        return Err(format!("{text:?}: expected BUCKET or BUCKET/PREFIX"));
    }
    Ok(Selection { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
}

async fn start_transfer(
    State(state): State<Arc<AdminState>>,
    body: Result<axum::Json<NewTransfer>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let transfers = transfers(&state)?;
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid transfer", detail);
    let axum::Json(req) = body.map_err(|e| {
        bad(format!("{e}; send {{\"mode\": \"push\", \"to\": \"SITE\", \"source\": \"BUCKET/PREFIX\"}}"))
    })?;
    let need =
        |site: Option<String>, field: &str| site.ok_or_else(|| bad(format!("mode {} needs \"{field}\"", req.mode)));
    let kind = match req.mode.as_str() {
        "push" => Kind::Push { to: need(req.to.clone(), "to")?, delegated_by: None },
        "pull" => Kind::Pull { from: need(req.from.clone(), "from")? },
        "copy" => Kind::Copy { from: need(req.from.clone(), "from")?, to: need(req.to.clone(), "to")? },
        other => return Err(bad(format!("mode {other:?}: expected push, pull or copy"))),
    };
    // No bucket name holds '@': a source with one names a dataset version.
    let (source, dest, version) = match req.source.split_once('@') {
        Some((dataset, reference)) => {
            if req.dest.is_some() {
                return Err(bad("a version lands as itself: give no \"dest\" with a version as source".into()));
            }
            let Some((ns, name)) = dataset.split_once('/') else {
                return Err(bad(format!("{:?}: name a version as NAMESPACE/NAME@TAG", req.source)));
            };
            let version = catalog::publish::resolve(&state.catalog.catalog, ns, name, reference)
                .map_err(|e| bad(format!("source: {e}")))?;
            (Selection::default(), Selection::default(), Some(version.0))
        }
        None => {
            let source = parse_selection(&req.source).map_err(bad)?;
            let dest = match &req.dest {
                Some(d) => parse_selection(d).map_err(bad)?,
                None => source.clone(),
            };
            (source, dest, None)
        }
    };
    if req.rate_limit == Some(0) {
        return Err(bad("rate_limit must be positive (bytes per second)".into()));
    }
    let spec = TransferSpec { kind, source, dest, version, priority: req.priority, rate_limit: req.rate_limit };
    let status = transfers.start(spec).await?;
    Ok((StatusCode::ACCEPTED, json(&status)).into_response())
}

async fn list_transfers(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&transfers(&state)?.list()))
}

async fn transfer_status(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    Ok(json(&transfers(&state)?.status(&id)?))
}

async fn cancel_transfer(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    Ok((StatusCode::ACCEPTED, json(&transfers(&state)?.cancel(&id)?)).into_response())
}

async fn repair(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&transfers(&state)?.repair().await?))
}
