//! The admin HTTP listener: `/health`, `/metrics` and maintenance endpoints.
//! Errors are RFC 9457 problem documents.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use store::Store;

/// What the handlers share.
pub struct AdminState {
    /// the store
    pub store: Arc<Store>,
    /// set once every listener is bound, cleared when shutdown starts
    pub ready: AtomicBool,
    /// site name and bound addresses, reported by /health
    pub listeners: serde_json::Value,
}

/// An error as `application/problem+json`.
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
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
        tracing::error!(error = %e, "admin request failed");
        Problem { status: StatusCode::INTERNAL_SERVER_ERROR, title: "store error", detail: e.to_string() }
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

/// The router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/gc", post(gc))
        .route("/admin/scrub", post(scrub))
        .route("/admin/check", get(check))
        .fallback(|| async {
            Problem {
                status: StatusCode::NOT_FOUND,
                title: "not found",
                detail: "no such endpoint; see the README's admin API".into(),
            }
        })
        .with_state(state)
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&state.store)).into_response()
}

async fn gc(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&state.store.gc().await?))
}

async fn scrub(State(state): State<Arc<AdminState>>) -> Result<Response, Problem> {
    Ok(json(&state.store.scrub().await?))
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
