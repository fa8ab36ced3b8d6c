//! The browser half of the API-key flow (docs/dhan-api.md §3 step 2): a login page asking for the
//! mobile number, then TOTP and PIN (order per account), a JSON endpoint the page posts each
//! step to, and the final hop that answers 302 to `<redirect URL>?tokenId=<id>`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::faults;
use crate::reply::{Reply, finish};
use crate::state::{
    LoginInputs, LoginOrder, Mock, Shared, TokenIdGrant, now_ms, random_hex, uuid_v4,
};

const SCRIPT: &str = include_str!("login_page.js");

pub fn steps(order: LoginOrder) -> [&'static str; 3] {
    match order {
        LoginOrder::TotpFirst => ["mobile", "totp", "pin"],
        LoginOrder::PinFirst => ["mobile", "pin", "totp"],
    }
}

pub fn render(consent_id: &str, order: LoginOrder, inputs: LoginInputs) -> String {
    let config = json!({
        "consentAppId": consent_id,
        "steps": steps(order),
        "inputs": match inputs { LoginInputs::Boxes => "boxes", LoginInputs::Single => "single" },
    })
    .to_string()
    .replace('<', "\\u003c");
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Login | Dhan</title>
<style>
body{{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f3f5fa;color:#1c2434}}
.card{{max-width:380px;margin:64px auto;background:#fff;border-radius:12px;box-shadow:0 2px 14px rgba(0,0,0,.08);padding:32px}}
.brand{{font-weight:700;font-size:18px;color:#4f46e5;margin-bottom:18px}}
h1{{font-size:22px;margin:0 0 6px}}
.sub{{color:#667085;margin:0 0 22px;font-size:14px}}
.field{{width:100%;box-sizing:border-box;padding:12px;font-size:16px;border:1px solid #d0d5dd;border-radius:8px}}
.otp{{display:flex;gap:8px;justify-content:space-between}}
.otp input{{width:44px;height:50px;text-align:center;font-size:20px;border:1px solid #d0d5dd;border-radius:8px}}
button{{margin-top:18px;width:100%;padding:12px;font-size:16px;border:0;border-radius:8px;background:#4f46e5;color:#fff;cursor:pointer}}
button:disabled{{opacity:.6;cursor:default}}
.err{{color:#d92d20;font-size:14px;margin:12px 0 0;min-height:18px}}
</style>
</head>
<body>
<div id="root"><noscript>Please enable JavaScript to log in.</noscript></div>
<script type="application/json" id="login-config">{config}</script>
<script>
{SCRIPT}
</script>
</body>
</html>
"#
    )
}

fn html_error(status: StatusCode, text: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Login | Dhan</title></head>\
         <body><p class=\"err\" role=\"alert\">{text}</p></body></html>"
    );
    (status, Html(body)).into_response()
}

type Params = HashMap<String, String>;

pub async fn page(State(mock): State<Shared>, Query(q): Query<Params>) -> Response {
    const EP: &str = "consentApp-login";
    if let Some(resp) = faults::intercept(&mock, EP, "GET", None).await {
        return resp;
    }
    let id = q.get("consentAppId").map(String::as_str).unwrap_or("");
    let found = {
        let inner = mock.lock();
        inner.consents.get(id).map(|s| {
            let acct = inner.accounts.get(&s.client_id);
            (
                s.client_id.clone(),
                s.completion_code.is_some() || s.finished,
                acct.map(|a| (a.cfg.login_order, a.cfg.login_inputs)),
            )
        })
    };
    let (status, outcome, client, resp) = match found {
        None | Some((_, _, None)) => (
            400,
            "invalid_consent",
            None,
            html_error(StatusCode::BAD_REQUEST, "Invalid or expired consent"),
        ),
        Some((client, true, _)) => (
            400,
            "consent_used",
            Some(client),
            html_error(
                StatusCode::BAD_REQUEST,
                "This consent has already been used",
            ),
        ),
        Some((client, false, Some((order, inputs)))) => (
            200,
            "success",
            Some(client),
            Html(render(id, order, inputs)).into_response(),
        ),
    };
    mock.record(EP, "GET", client.as_deref(), status, outcome);
    resp
}

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

/// Server-side validation of one login step. Wrong input is HTTP 200 with a shape-3 error whose
/// message the page shows verbatim ("Invalid mobile number", "Invalid TOTP", "Invalid PIN");
/// the step does not advance. Protocol misuse (unknown consent, wrong step) is HTTP 400.
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
    let order = steps(acct.cfg.login_order);
    if order.get(session.progress) != Some(&req.step.as_str()) {
        let r = Reply::auth_error(StatusCode::BAD_REQUEST, "Unexpected step", "bad_step");
        return (r, client);
    }
    let ok = match req.step.as_str() {
        "mobile" => match &acct.cfg.mobile {
            Some(m) => last10(m) == last10(&req.value) && digits(&req.value).len() >= 10,
            // No number configured: any 10-digit number passes.
            None => digits(&req.value).len() == 10,
        },
        "totp" => acct.accept_totp(req.value.trim(), now_ms),
        _ => acct.cfg.pin == req.value.trim(),
    };
    if !ok {
        let (msg, outcome) = match req.step.as_str() {
            "mobile" => ("Invalid mobile number", "invalid_mobile"),
            "totp" => ("Invalid TOTP", "invalid_totp"),
            _ => ("Invalid PIN", "invalid_pin"),
        };
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

pub async fn verify(
    State(mock): State<Shared>,
    body: Result<Json<StepRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        let r = Reply::auth_error(StatusCode::BAD_REQUEST, "Invalid request", "bad_request");
        return finish(&mock, "login-verify", "POST", None, r);
    };
    let endpoint = match req.step.as_str() {
        "mobile" => "login-mobile",
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
        assert_eq!(
            step(&m, &id, "mobile", "+91 98765 43210", T0_MS).body["next"],
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
    fn page_variants_render() {
        let html = render("c-1", LoginOrder::PinFirst, LoginInputs::Single);
        assert!(html.contains(r#""steps":["mobile","pin","totp"]"#));
        assert!(html.contains(r#""inputs":"single""#));
        assert!(html.contains("isTrusted"));
        assert!(!html.contains("<script src"), "no external resources");
        let boxes = render("c-1", LoginOrder::TotpFirst, LoginInputs::Boxes);
        assert!(boxes.contains(r#""steps":["mobile","totp","pin"]"#));
    }
}
