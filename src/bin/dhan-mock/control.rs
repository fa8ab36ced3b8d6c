//! `/__control/*`: test-only knobs. Not part of Dhan's API and never in the call log.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::kinds::{Fault, FaultSpec};
use crate::state::{Account, AccountConfig, Shared, TokenKind, now_ms};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/__control/accounts", post(put_account))
        .route("/__control/accounts/{client_id}", get(get_account))
        .route("/__control/web-token", post(web_token))
        .route("/__control/revoke", post(revoke))
        .route(
            "/__control/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/__control/calls", get(calls))
        .route("/__control/reset", post(reset))
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

fn parse<T: for<'de> Deserialize<'de>>(body: Value) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| e.to_string())
}

/// Registers or replaces an account. Replacing keeps the runtime state (current token, used TOTP
/// steps, counters, throttle clock) so a test can, say, change the PIN under a live token.
pub async fn put_account(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    let cfg: AccountConfig = match parse(body) {
        Ok(c) => c,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let mut fresh = match Account::new(cfg) {
        Ok(a) => a,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let client_id = fresh.cfg.client_id.clone();
    let mut inner = mock.lock();
    if let Some(old) = inner.accounts.remove(&client_id) {
        fresh.rt = old.rt;
    }
    inner.accounts.insert(client_id.clone(), fresh);
    Json(json!({"status": "ok", "clientId": client_id})).into_response()
}

pub async fn get_account(State(mock): State<Shared>, Path(client_id): Path<String>) -> Response {
    let inner = mock.lock();
    let Some(acct) = inner.accounts.get(&client_id) else {
        return bad(StatusCode::NOT_FOUND, "unknown clientId");
    };
    let current = acct.rt.current_token.as_ref();
    let info = current.and_then(|t| inner.tokens.get(t));
    Json(json!({
        "clientId": client_id,
        "currentToken": current,
        "tokenType": info.map(|i| i.kind),
        "expiresAt": info.map(|i| i.exp_ms.div_euclid(1000)),
        "mints": acct.rt.mints,
        "renewals": acct.rt.renewals,
        "webTokens": acct.rt.web_tokens,
        "consentLogins": acct.rt.consent_logins,
        "consentsToday": acct.consents_today(now_ms()),
        "failedLoginsToday": acct.failed_logins_today(now_ms()),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebTokenReq {
    client_id: String,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

/// A SELF token "as if the user logged into Dhan Web" (§2/§5). Revokes the previous token like
/// any issuance, but does not start the mint throttle (that is generateAccessToken's).
pub async fn web_token(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    let req: WebTokenReq = match parse(body) {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let ttl = req.ttl_seconds.unwrap_or(mock.cfg.token_ttl_secs);
    let mut inner = mock.lock();
    let Some(issued) = inner.issue(
        mock.key(),
        &req.client_id,
        TokenKind::SelfWeb,
        ttl,
        now_ms(),
    ) else {
        return bad(StatusCode::NOT_FOUND, "unknown clientId");
    };
    if let Some(acct) = inner.accounts.get_mut(&req.client_id) {
        acct.rt.web_tokens += 1;
    }
    Json(json!({"accessToken": issued.token, "expiresAt": issued.claims.exp})).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientReq {
    client_id: String,
}

/// §4: tokens are sometimes revoked before `exp` with no new mint.
pub async fn revoke(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    let req: ClientReq = match parse(body) {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let mut inner = mock.lock();
    let Some(acct) = inner.accounts.get_mut(&req.client_id) else {
        return bad(StatusCode::NOT_FOUND, "unknown clientId");
    };
    let revoked = acct.rt.current_token.take().is_some();
    Json(json!({"status": "ok", "revoked": revoked})).into_response()
}

pub async fn add_fault(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    let spec: FaultSpec = match parse(body) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let remaining = spec.count;
    if remaining > 0 {
        mock.lock().faults.push(Fault { spec, remaining });
    }
    Json(json!({"status": "ok"})).into_response()
}

pub async fn list_faults(State(mock): State<Shared>) -> Response {
    Json(json!(mock.lock().faults)).into_response()
}

pub async fn clear_faults(State(mock): State<Shared>) -> Response {
    mock.lock().faults.clear();
    Json(json!({"status": "ok"})).into_response()
}

pub async fn calls(State(mock): State<Shared>) -> Response {
    Json(json!(mock.lock().calls)).into_response()
}

pub async fn reset(State(mock): State<Shared>) -> Response {
    mock.lock().reset();
    Json(json!({"status": "ok"})).into_response()
}
