//! The login page's step endpoint (`POST /login/api/verify`) and the final hop that answers 302
//! to `<redirect URL>?tokenId=<id>` (docs/dhan-api.md §3).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::faults;
use crate::login_page::{html_error, steps};
use crate::reply::{Reply, finish};
use crate::state::{Mock, Shared, TokenIdGrant, now_ms, random_hex, uuid_v4};

type Params = HashMap<String, String>;

/// What Dhan's page says once the day's wrong attempts are used up (the wording is the mock's;
/// docs/dhan-api.md §3 only reports that repeated wrong PINs can lock an account).
pub const LOCKED_MESSAGE: &str =
    "Too many incorrect attempts. Your account is locked for today, try again after midnight.";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRequest {
    pub consent_app_id: String,
    pub step: String,
    pub value: String,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn last10(s: &str) -> String {
    let d = digits(s);
    d[d.len().saturating_sub(10)..].to_string()
}

/// The mobile box takes the ten national digits, nothing else (docs/dhan-api.md §3: no `+91`).
fn mobile_matches(configured: Option<&str>, typed: &str) -> bool {
    let ten_digits = typed.len() == 10 && typed.chars().all(|c| c.is_ascii_digit());
    ten_digits && configured.is_none_or(|m| last10(m) == typed)
}

/// Server-side validation of one login step. Wrong input is HTTP 200 with a shape-3 error whose
/// message the page shows verbatim ("Invalid mobile number", "Invalid TOTP", "Invalid PIN");
/// the step does not advance. Wrong credentials count toward the day's lock. Protocol misuse
/// (unknown consent, wrong step) is HTTP 400, except a TOTP sent again after it was accepted:
/// that is a replay, refused as "Invalid TOTP" (docs/dhan-api.md §1, §3).
pub fn verify_step(mock: &Mock, req: &StepRequest, now_ms: i64) -> (Reply, Option<String>) {
    let mut inner = mock.lock();
    let Some(session) = inner.consents.get(&req.consent_app_id).cloned() else {
        let r = Reply::auth_error(
            StatusCode::BAD_REQUEST,
            "Invalid or expired consent",
            "invalid_consent",
        );
        return (r, None);
    };
    let client = Some(session.client_id.clone());
    if session.completion_code.is_some() || session.finished {
        let r = Reply::auth_error(
            StatusCode::BAD_REQUEST,
            "This consent has already been used",
            "consent_used",
        );
        return (r, client);
    }
    let Some(acct) = inner.accounts.get_mut(&session.client_id) else {
        let r = Reply::auth_error(
            StatusCode::BAD_REQUEST,
            "Invalid or expired consent",
            "invalid_consent",
        );
        return (r, client);
    };
    let order = steps(&acct.cfg);
    let passed = &order[..session.progress.min(order.len())];
    if order.get(session.progress) != Some(&req.step.as_str()) {
        let r = if req.step == "totp" && passed.contains(&"totp") {
            acct.count_failed_login(now_ms);
            Reply::auth_error(StatusCode::OK, "Invalid TOTP", "totp_replay")
        } else {
            Reply::auth_error(StatusCode::BAD_REQUEST, "Unexpected step", "bad_step")
        };
        return (r, client);
    }
    let credential = req.step != "mobile";
    if credential && acct.login_locked(now_ms) {
        let r = Reply::auth_error(StatusCode::OK, LOCKED_MESSAGE, "login_locked");
        return (r, client);
    }
    let ok = match req.step.as_str() {
        "mobile" => mobile_matches(acct.cfg.mobile.as_deref(), &req.value),
        "password" => acct.cfg.password.as_deref() == Some(req.value.as_str()),
        "totp" => acct.accept_totp(req.value.trim(), now_ms),
        _ => acct.cfg.pin == req.value.trim(),
    };
    if !ok {
        let (msg, outcome) = match req.step.as_str() {
            "mobile" => ("Invalid mobile number", "invalid_mobile"),
            "password" => ("Incorrect password", "invalid_password"),
            "totp" => ("Invalid TOTP", "invalid_totp"),
            _ => ("Invalid PIN", "invalid_pin"),
        };
        if credential {
            acct.count_failed_login(now_ms);
        }
        return (Reply::auth_error(StatusCode::OK, msg, outcome), client);
    }
    let progress = session.progress + 1;
    let session = inner
        .consents
        .get_mut(&req.consent_app_id)
        .expect("looked up above");
    session.progress = progress;
    if progress < order.len() {
        let r = Reply::ok(
            json!({"status": "success", "next": order[progress]}),
            "step_ok",
        );
        return (r, client);
    }
    let code = random_hex(16);
    session.completion_code = Some(code.clone());
    let redirect_to = format!(
        "/login/consentApp-redirect?consentAppId={}&code={code}",
        req.consent_app_id
    );
    let r = Reply::ok(
        json!({"status": "success", "next": "done", "redirectTo": redirect_to}),
        "success",
    );
    (r, client)
}

/// A server goes on with a request whose client hung up (a page that navigated away while its
/// call was slow): the step is verified, counted and logged all the same.
pub async fn verify(
    State(mock): State<Shared>,
    body: Result<Json<StepRequest>, JsonRejection>,
) -> Response {
    match tokio::spawn(verify_detached(mock, body)).await {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn verify_detached(mock: Shared, body: Result<Json<StepRequest>, JsonRejection>) -> Response {
    let Ok(Json(req)) = body else {
        let r = Reply::auth_error(StatusCode::BAD_REQUEST, "Invalid request", "bad_request");
        return finish(&mock, "login-verify", "POST", None, r);
    };
    let endpoint = match req.step.as_str() {
        "mobile" => "login-mobile",
        "password" => "login-password",
        "totp" => "login-totp",
        "pin" => "login-pin",
        _ => "login-verify",
    };
    if let Some(resp) = faults::intercept(&mock, endpoint, "POST", None).await {
        return resp;
    }
    let (r, client) = verify_step(&mock, &req, now_ms());
    finish(&mock, endpoint, "POST", client.as_deref(), r)
}

fn with_token_id(redirect_url: &str, token_id: &str) -> String {
    match url::Url::parse(redirect_url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("tokenId", token_id);
            u.to_string()
        }
        Err(_) => {
            let sep = if redirect_url.contains('?') { '&' } else { '?' };
            format!("{redirect_url}{sep}tokenId={token_id}")
        }
    }
}

/// The final hop: one-time `code` → fresh single-use `tokenId` → 302 to the app's redirect URL.
pub fn complete(mock: &Mock, q: &Params) -> Result<(String, String), &'static str> {
    let id = q.get("consentAppId").ok_or("invalid_consent")?;
    let code = q.get("code").ok_or("invalid_code")?;
    let mut inner = mock.lock();
    let session = inner.consents.get_mut(id).ok_or("invalid_consent")?;
    if session.finished || session.completion_code.as_deref() != Some(code.as_str()) {
        return Err("invalid_code");
    }
    session.finished = true;
    let (client_id, app_id) = (session.client_id.clone(), session.app_id.clone());
    let redirect = inner
        .accounts
        .get(&client_id)
        .and_then(|a| a.cfg.apps.iter().find(|app| app.app_id == app_id))
        .map(|app| app.redirect_url.clone())
        .ok_or("unknown_app")?;
    let token_id = uuid_v4();
    inner.token_ids.insert(
        token_id.clone(),
        TokenIdGrant {
            client_id: client_id.clone(),
            app_id,
        },
    );
    Ok((with_token_id(&redirect, &token_id), client_id))
}

pub async fn redirect(State(mock): State<Shared>, Query(q): Query<Params>) -> Response {
    const EP: &str = "consentApp-redirect";
    match complete(&mock, &q) {
        Ok((location, client)) => {
            mock.record(EP, "GET", Some(&client), 302, "success");
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        Err(outcome) => {
            mock.record(EP, "GET", None, 400, outcome);
            html_error(StatusCode::BAD_REQUEST, "Invalid or expired login request")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::state::test_support::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn new_consent(m: &Mock) -> String {
        let mut h = HeaderMap::new();
        h.insert("app_id", HeaderValue::from_static("app-1"));
        h.insert("app_secret", HeaderValue::from_static("s3cret"));
        let q: Params = [("client_id".to_string(), "A".to_string())].into();
        let r = auth::consent(m, &q, &h, T0_MS);
        r.body["consentAppId"].as_str().unwrap().to_string()
    }

    fn step(m: &Mock, id: &str, step: &str, value: &str, now: i64) -> Reply {
        let req = StepRequest {
            consent_app_id: id.into(),
            step: step.into(),
            value: value.into(),
        };
        verify_step(m, &req, now).0
    }

    #[test]
    fn login_steps_validate_and_redirect_once() {
        let m = mock(120);
        add_account(&m, "A");
        let id = new_consent(&m);
        // Steps must come in order; TOTP before mobile is refused.
        assert_eq!(
            step(&m, &id, "totp", &code(T0_MS), T0_MS).status,
            StatusCode::BAD_REQUEST
        );
        let bad = step(&m, &id, "mobile", "9999999999", T0_MS);
        assert_eq!(
            bad.body,
            json!({"status":"error","message":"Invalid mobile number"})
        );
        // The box takes ten digits: a number with its country code is not one.
        assert_eq!(
            step(&m, &id, "mobile", "+91 98765 43210", T0_MS).body["message"],
            "Invalid mobile number"
        );
        assert_eq!(
            step(&m, &id, "mobile", "9876543210", T0_MS).body["next"],
            "totp"
        );
        assert_eq!(
            step(&m, &id, "totp", "000000", T0_MS).body["message"],
            "Invalid TOTP"
        );
        assert_eq!(
            step(&m, &id, "totp", &code(T0_MS), T0_MS).body["next"],
            "pin"
        );
        assert_eq!(
            step(&m, &id, "pin", "654321", T0_MS).body["message"],
            "Invalid PIN"
        );
        let done = step(&m, &id, "pin", "123456", T0_MS);
        assert_eq!(done.body["next"], "done");
        let to = done.body["redirectTo"].as_str().unwrap();
        let query: Params = url::Url::parse(&format!("http://x{to}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let (location, client) = complete(&m, &query).unwrap();
        assert_eq!(client, "A");
        let loc = url::Url::parse(&location).unwrap();
        assert_eq!(loc.path(), "/cb");
        let token_id = loc
            .query_pairs()
            .find(|(k, _)| k == "tokenId")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert!(m.lock().token_ids.contains_key(&token_id));
        // The redirect hop and the consent are single-use.
        assert_eq!(complete(&m, &query), Err("invalid_code"));
        assert_eq!(
            step(&m, &id, "pin", "123456", T0_MS).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn login_page_shares_totp_replay_with_mint() {
        let m = mock(0);
        add_account(&m, "A");
        let id = new_consent(&m);
        step(&m, &id, "mobile", "9876543210", T0_MS);
        assert_eq!(
            step(&m, &id, "totp", &code(T0_MS), T0_MS).outcome,
            "step_ok"
        );
        let q: Params = [
            ("dhanClientId", "A"),
            ("pin", "123456"),
            ("totp", code(T0_MS).as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            auth::mint_totp(&m, &q, T0_MS + 1000).outcome,
            "invalid_totp"
        );
    }

    #[test]
    fn wrong_credentials_lock_the_login_for_the_ist_day() {
        let m = mock(120);
        add_account(&m, "A");
        m.lock()
            .accounts
            .get_mut("A")
            .unwrap()
            .cfg
            .login_attempts_before_lock = 1;
        let id = new_consent(&m);
        step(&m, &id, "mobile", "9876543210", T0_MS);
        assert_eq!(
            step(&m, &id, "totp", "000000", T0_MS).outcome,
            "invalid_totp"
        );
        let id = new_consent(&m);
        step(&m, &id, "mobile", "9876543210", T0_MS);
        let locked = step(&m, &id, "totp", &code(T0_MS), T0_MS);
        assert_eq!(locked.outcome, "login_locked");
        assert_eq!(locked.body["message"], LOCKED_MESSAGE);
        // The next IST day starts afresh.
        let tomorrow = T0_MS + 86_400_000;
        let id = new_consent(&m);
        step(&m, &id, "mobile", "9876543210", tomorrow);
        assert_eq!(
            step(&m, &id, "totp", &code(tomorrow), tomorrow).outcome,
            "step_ok"
        );
    }

    #[test]
    fn a_totp_sent_again_after_it_was_accepted_is_a_replay() {
        let m = mock(120);
        add_account(&m, "A");
        let id = new_consent(&m);
        step(&m, &id, "mobile", "9876543210", T0_MS);
        assert_eq!(
            step(&m, &id, "totp", &code(T0_MS), T0_MS).outcome,
            "step_ok"
        );
        let again = step(&m, &id, "totp", &code(T0_MS), T0_MS + 200);
        assert_eq!(again.outcome, "totp_replay");
        assert_eq!(again.body["message"], "Invalid TOTP");
    }

    #[test]
    fn a_password_step_follows_the_mobile_number_when_configured() {
        let m = mock(120);
        add_account(&m, "A");
        m.lock().accounts.get_mut("A").unwrap().cfg.password = Some("hunter22".into());
        let id = new_consent(&m);
        assert_eq!(
            step(&m, &id, "mobile", "9876543210", T0_MS).body["next"],
            "password"
        );
        let wrong = step(&m, &id, "password", "hunter", T0_MS);
        assert_eq!(wrong.body["message"], "Incorrect password");
        assert_eq!(
            step(&m, &id, "password", "hunter22", T0_MS).body["next"],
            "totp"
        );
    }
}
