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
    /// Whether `/readyz` names the skipped accounts: not when `/metrics`, which names accounts,
    /// is kept from unauthorised callers.
    names_accounts: bool,
}

/// The routes; `/metrics` behind `auth` when given.
pub fn router(metrics: Arc<Metrics>, health: Health, auth: Option<Arc<MetricsAuth>>) -> Router {
    let mut metrics_route = Router::new().route("/metrics", get(metrics_text));
    let names_accounts = auth.is_none();
    if let Some(auth) = auth {
        metrics_route = metrics_route.layer(middleware::from_fn_with_state(auth, authorise));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(metrics_route)
        .with_state(AppState {
            metrics,
            health,
            names_accounts,
        })
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

/// Ready while every watch works; otherwise 503 and the problems, one a line. DhanAccounts
/// skipped because they cannot be read follow, one a line (or only their number), and never
/// make the operator unready: the contents of a tenant's object say nothing about whether this
/// replica can work.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problems = state.health.problems();
    let mut body = if problems.is_empty() {
        "ready\n".to_string()
    } else {
        format!("not ready:\n{}\n", problems.join("\n"))
    };
    let skipped = state.health.skipped();
    if state.names_accounts {
        body.extend(skipped.iter().map(|line| format!("{line}\n")));
    } else if !skipped.is_empty() {
        body.push_str(&format!(
            "{} DhanAccount(s) skipped, as they cannot be read: named in the log and in an \
             Undecodable event on each\n",
            skipped.len()
        ));
    }
    let code = match problems.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Skipped;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// `/readyz` of a router whose `/metrics` is open (`names_accounts`) or not: code and body.
    async fn readyz_of(health: Health, names_accounts: bool) -> (StatusCode, String) {
        let state = AppState {
            metrics: Arc::new(Metrics::default()),
            health,
            names_accounts,
        };
        let app = Router::new()
            .route("/readyz", get(readyz))
            .with_state(state);
        let request = Request::get("/readyz").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let code = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    fn with_one_skipped() -> Health {
        let health = Health::default();
        health.listed("dhanaccounts");
        health.skip(
            "uid-1",
            Skipped {
                object: "trading/bad".into(),
                resource_version: Some("7".into()),
                why: "status.failedAttempts: out of range".into(),
            },
        );
        health
    }

    #[tokio::test]
    async fn a_skipped_account_is_named_and_the_operator_stays_ready() {
        let (code, body) = readyz_of(with_one_skipped(), true).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            "ready\nDhanAccount trading/bad skipped: status.failedAttempts: out of range\n"
        );
    }

    #[tokio::test]
    async fn behind_secure_metrics_skipped_accounts_are_counted_not_named() {
        let (code, body) = readyz_of(with_one_skipped(), false).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(
            body.starts_with("ready\n1 DhanAccount(s) skipped"),
            "{body}"
        );
        assert!(!body.contains("trading"), "{body}");
    }

    #[tokio::test]
    async fn a_failing_watch_makes_it_unready_and_skipped_accounts_are_still_named() {
        let health = with_one_skipped();
        health.failed("dhanaccounts", "403 Forbidden".into());
        let (code, body) = readyz_of(health, true).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready:\nwatch dhanaccounts: 403 Forbidden\n\
             DhanAccount trading/bad skipped: status.failedAttempts: out of range\n"
        );
    }
}
