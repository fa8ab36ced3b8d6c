//! The operator's HTTP surface: `/metrics`, `/healthz`, `/readyz`. Plain HTTP by default; with
//! `--metrics-secure`, TLS on the whole port ([`tls`]) and `/metrics` only for callers the API
//! server authenticates and authorises ([`auth`]) — the probes stay open, they tell nothing.

pub mod auth;
pub mod tls;

use crate::health::Health;
use crate::metrics::Metrics;
use auth::{MetricsAuth, Verdict};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// The routes; `/metrics` behind `auth` when given.
pub fn router(metrics: Arc<Metrics>, health: Health, auth: Option<Arc<MetricsAuth>>) -> Router {
    let mut metrics_route = Router::new().route("/metrics", get(metrics_text));
    if let Some(auth) = auth {
        metrics_route = metrics_route.layer(middleware::from_fn_with_state(auth, authorise));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(metrics_route)
        .with_state(AppState { metrics, health })
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Ready while every watch works and no DhanAccount is skipped; otherwise 503 and the
/// problems, one a line.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problems = state.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}

async fn authorise(State(auth): State<Arc<MetricsAuth>>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    match auth.verdict(bearer.as_deref()).await {
        Verdict::Allowed => next.run(request).await,
        Verdict::Unauthenticated => {
            let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Verdict::Forbidden => (StatusCode::FORBIDDEN, "Forbidden\n").into_response(),
        Verdict::Unknown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot check the caller with the API server\n",
        )
            .into_response(),
    }
}
