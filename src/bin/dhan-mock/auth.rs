//! Token-producing endpoints: TOTP mint (docs/dhan-api.md §1), RenewToken (§2), and the API-key consent
//! pair generate-consent / consumeApp-consent (§3).
//!
//! Each endpoint has a synchronous core taking `now_ms` (unit-tested with a fixed clock) and a
//! thin async handler that applies faults and logs the call.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::faults;
use crate::reply::{self, Reply, finish, header};
use crate::state::{ConsentSession, Mock, Shared, TokenCheck, TokenKind, now_ms, uuid_v4};

type Params = HashMap<String, String>;

fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn method_not_allowed() -> Reply {
    Reply::auth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request method not supported",
        "method_not_allowed",
    )
}

/// §1. Failures are HTTP 200 with `{"status":"error","message":...}`, as seen on the wire.
/// Check order: client, PIN, TOTP (consuming the step even if the throttle then refuses —
/// an accepted code is spent), throttle. Every attempt for a known client, refused or not,
/// starts the 2-minute window again (§9).
pub fn mint_totp(mock: &Mock, q: &Params, now_ms: i64) -> Reply {
    let (Some(client_id), Some(pin), Some(code)) =
        (param(q, "dhanClientId"), param(q, "pin"), param(q, "totp"))
    else {
        return Reply::auth_error(
            StatusCode::OK,
            "dhanClientId, pin and totp are required",
            "bad_request",
        );
    };
    let mut inner = mock.lock();
    let Some(acct) = inner.accounts.get_mut(client_id) else {
        return Reply::auth_error(StatusCode::OK, "Invalid Client ID", "unknown_client");
    };
    let window_ms = mock.cfg.mint_throttle_secs * 1000;
    let locked = acct
        .rt
        .last_mint_attempt_ms
        .is_some_and(|last| now_ms - last < window_ms);
    acct.rt.last_mint_attempt_ms = Some(now_ms);
    if acct.cfg.pin != pin {
        return Reply::auth_error(StatusCode::OK, "Invalid Pin", "invalid_pin");
    }
    if !acct.accept_totp(code, now_ms) {
        return Reply::auth_error(StatusCode::OK, "Invalid TOTP", "invalid_totp");
    }
    if locked {
        return Reply::auth_error(StatusCode::OK, reply::THROTTLE_MESSAGE, "throttled");
    }
    acct.rt.mints += 1;
    let client_id = client_id.to_string();
    let issued = inner
        .issue(
            mock.key(),
            &client_id,
            TokenKind::App,
            mock.cfg.token_ttl_secs,
            now_ms,
        )
        .expect("account exists");
    Reply::ok(inner.token_response(&issued), "success")
}

pub async fn generate_access_token(
    State(mock): State<Shared>,
    method: Method,
    Query(q): Query<Params>,
) -> Response {
    const EP: &str = "generateAccessToken";
    let client = param(&q, "dhanClientId").map(str::to_string);
    let client = client.as_deref();
    if method != Method::POST {
        return finish(&mock, EP, method.as_str(), client, method_not_allowed());
    }
    if let Some(resp) = faults::intercept(&mock, EP, method.as_str(), client).await {
        return resp;
    }
    let r = mint_totp(&mock, &q, now_ms());
    faults::answer_after_mint(&mock, EP, method.as_str(), client, r).await
}

/// §2. Returns the reply and the client id to log.
pub fn renew(
    mock: &Mock,
    method: &Method,
    headers: &HeaderMap,
    now_ms: i64,
) -> (Reply, Option<String>) {
    let header_client = header(headers, "dhanClientId").map(str::to_string);
    // §2: "POST gets HTTP 400 DH-905".
    if method != Method::GET {
        return (Reply::dh905_bad_input("bad_request"), header_client);
    }
    let (Some(token), Some(client_id)) = (header(headers, "access-token"), header_client.clone())
    else {
        return (Reply::dh905_bad_input("bad_request"), header_client);
    };
    let mut inner = mock.lock();
    let kind = match inner.check_token(token, now_ms) {
        TokenCheck::Malformed => {
            return (Reply::gateway_unauthorized("dead_token"), Some(client_id));
        }
        // §2: only active tokens can be renewed; dead ones get the plain auth failure.
        TokenCheck::Dead { .. } => return (Reply::dh901("dead_token"), Some(client_id)),
        TokenCheck::Live {
            client_id: owner,
            kind,
            ..
        } => {
            if owner != client_id {
                return (Reply::dh901("client_mismatch"), Some(client_id));
            }
            kind
        }
    };
    if kind != TokenKind::SelfWeb {
        // §2, seen by four projects: HTTP 500 with INVALID_REQUEST / DH-905.
        let r = Reply::dh(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INVALID_REQUEST",
            "DH-905",
            "Renewal of token not allowed for this token type",
            "renew_refused",
        );
        return (r, Some(client_id));
    }
    // Renewals are not throttled: §1's throttle is about generateAccessToken only.
    let issued = inner
        .issue(
            mock.key(),
            &client_id,
            TokenKind::SelfWeb,
            mock.cfg.token_ttl_secs,
            now_ms,
        )
        .expect("live token implies account");
    if let Some(acct) = inner.accounts.get_mut(&client_id) {
        acct.rt.renewals += 1;
    }
    (
        Reply::ok(inner.token_response(&issued), "success"),
        Some(client_id),
    )
}

pub async fn renew_token(
    State(mock): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "RenewToken";
    let client = header(&headers, "dhanClientId").map(str::to_string);
    if method == Method::GET
        && let Some(resp) = faults::intercept(&mock, EP, method.as_str(), client.as_deref()).await
    {
        return resp;
    }
    let (r, client) = renew(&mock, &method, &headers, now_ms());
    faults::answer_after_mint(&mock, EP, method.as_str(), client.as_deref(), r).await
}

fn unauthorized() -> Reply {
    // §3: wrong app credentials.
    Reply::auth_error(StatusCode::UNAUTHORIZED, "Unauthorized", "unauthorized")
}

/// §3 step 1.
pub fn consent(mock: &Mock, q: &Params, headers: &HeaderMap, now_ms: i64) -> Reply {
    let Some(client_id) = param(q, "client_id") else {
        return Reply::auth_error(
            StatusCode::BAD_REQUEST,
            "client_id is required",
            "bad_request",
        );
    };
    // Underscored header names on purpose (§3); `app-id` is not accepted.
    let (Some(app_id), Some(app_secret)) =
        (header(headers, "app_id"), header(headers, "app_secret"))
    else {
        return unauthorized();
    };
    let mut inner = mock.lock();
    let Some(acct) = inner.accounts.get_mut(client_id) else {
        return unauthorized();
    };
    if !acct
        .cfg
        .apps
        .iter()
        .any(|a| a.app_id == app_id && a.app_secret == app_secret)
    {
        return unauthorized();
    }
    if acct.consents_today(now_ms) >= mock.cfg.consent_limit {
        // §3: body from a single report. HTTP 200 (not 429) because the auth host reports its
        // refusals with 200 (§1), and a client that only treated 429 as "limit" would be wrong.
        return Reply {
            status: StatusCode::OK,
            body: json!({
                "status": "error",
                "errorCode": "CONSENT_LIMIT_EXCEED",
                "message": "Consent limit Exceeded",
            }),
            outcome: "consent_limit",
        };
    }
    acct.count_consent(now_ms);
    let id = uuid_v4();
    inner.consents.insert(
        id.clone(),
        ConsentSession {
            client_id: client_id.to_string(),
            app_id: app_id.to_string(),
            progress: 0,
            completion_code: None,
            finished: false,
        },
    );
    Reply::ok(
        json!({"consentAppId": id, "consentAppStatus": "GENERATED", "status": "success"}),
        "success",
    )
}

pub async fn generate_consent(
    State(mock): State<Shared>,
    method: Method,
    Query(q): Query<Params>,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "generate-consent";
    let client = param(&q, "client_id").map(str::to_string);
    let client = client.as_deref();
    if method != Method::POST {
        return finish(&mock, EP, method.as_str(), client, method_not_allowed());
    }
    if let Some(resp) = faults::intercept(&mock, EP, method.as_str(), client).await {
        return resp;
    }
    let r = consent(&mock, &q, &headers, now_ms());
    finish(&mock, EP, method.as_str(), client, r)
}

/// §3 step 3. An unknown, used or foreign `tokenId` gets HTTP 200 with a shape-3 error — the auth
/// host's usual way of refusing (§1); Dhan's real answer is undocumented.
pub fn consume(
    mock: &Mock,
    q: &Params,
    headers: &HeaderMap,
    now_ms: i64,
) -> (Reply, Option<String>) {
    let (Some(app_id), Some(app_secret)) =
        (header(headers, "app_id"), header(headers, "app_secret"))
    else {
        return (unauthorized(), None);
    };
    let mut inner = mock.lock();
    let creds_ok = |apps: &[crate::state::AppConfig]| {
        apps.iter()
            .any(|a| a.app_id == app_id && a.app_secret == app_secret)
    };
    if !inner.accounts.values().any(|a| creds_ok(&a.cfg.apps)) {
        return (unauthorized(), None);
    }
    let invalid = Reply::auth_error(StatusCode::OK, "Invalid Token Id", "invalid_token_id");
    let Some(token_id) = param(q, "tokenId") else {
        return (invalid, None);
    };
    let Some(grant) = inner.token_ids.get(token_id).cloned() else {
        return (invalid, None);
    };
    let client_id = grant.client_id.clone();
    if grant.app_id != app_id {
        return (invalid, Some(client_id));
    }
    match inner.accounts.get(&client_id) {
        Some(acct) if creds_ok(&acct.cfg.apps) => {}
        Some(_) => return (unauthorized(), Some(client_id)),
        None => return (invalid, Some(client_id)),
    }
    inner.token_ids.remove(token_id);
    // §5: the consumer type of API-key tokens is unknown; "APP" is a guess. What matters is
    // that §3 says these tokens cannot be renewed, and RenewToken refuses anything not SELF.
    let issued = inner
        .issue(
            mock.key(),
            &client_id,
            TokenKind::App,
            mock.cfg.token_ttl_secs,
            now_ms,
        )
        .expect("account checked above");
    if let Some(acct) = inner.accounts.get_mut(&client_id) {
        acct.rt.consent_logins += 1;
    }
    (
        Reply::ok(inner.token_response(&issued), "success"),
        Some(client_id),
    )
}

/// §3: docs say POST, the official SDK uses GET; both are served.
pub async fn consume_consent(
    State(mock): State<Shared>,
    method: Method,
    Query(q): Query<Params>,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "consumeApp-consent";
    if method != Method::POST && method != Method::GET {
        return finish(&mock, EP, method.as_str(), None, method_not_allowed());
    }
    if let Some(resp) = faults::intercept(&mock, EP, method.as_str(), None).await {
        return resp;
    }
    let (r, client) = consume(&mock, &q, &headers, now_ms());
    faults::answer_after_mint(&mock, EP, method.as_str(), client.as_deref(), r).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt;
    use crate::state::test_support::*;
    use axum::http::HeaderValue;

    fn q(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn mint_at(m: &Mock, now: i64) -> Reply {
        mint_totp(
            m,
            &q(&[
                ("dhanClientId", "A"),
                ("pin", "123456"),
                ("totp", &code(now)),
            ]),
            now,
        )
    }

    #[test]
    fn mint_success_body_and_jwt() {
        let m = mock(120);
        add_account(&m, "A");
        let r = mint_at(&m, T0_MS);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.outcome, "success");
        for f in [
            "dhanClientId",
            "dhanClientName",
            "dhanClientUcc",
            "givenPowerOfAttorney",
            "accessToken",
            "expiryTime",
        ] {
            assert!(r.body.get(f).is_some(), "missing {f}");
        }
        let claims = jwt::decode_unverified(r.body["accessToken"].as_str().unwrap()).unwrap();
        assert_eq!(claims.token_consumer_type, "APP");
        assert_eq!(claims.exp - claims.iat, 86_400);
        assert_eq!(claims.iat, T0_MS / 1000);
        // exp = 2026-01-02T00:00:00Z → 05:30 IST, no offset.
        assert_eq!(r.body["expiryTime"], "2026-01-02T05:30:00");
    }

    #[test]
    fn mint_errors_are_http_200() {
        // No throttle: the refused attempts would re-arm it (§9), which is not the point here.
        let m = mock(0);
        add_account(&m, "A");
        let bad_pin = mint_totp(
            &m,
            &q(&[
                ("dhanClientId", "A"),
                ("pin", "000000"),
                ("totp", &code(T0_MS)),
            ]),
            T0_MS,
        );
        assert_eq!(bad_pin.status, StatusCode::OK);
        assert_eq!(
            bad_pin.body,
            json!({"status":"error","message":"Invalid Pin"})
        );
        let unknown = mint_totp(
            &m,
            &q(&[
                ("dhanClientId", "Z"),
                ("pin", "123456"),
                ("totp", &code(T0_MS)),
            ]),
            T0_MS,
        );
        assert_eq!(unknown.status, StatusCode::OK);
        assert_eq!(unknown.body["status"], "error");
        // The wrong-PIN attempt did not spend the step, so the same code still works once...
        assert_eq!(mint_at(&m, T0_MS).outcome, "success");
    }

    #[test]
    fn replayed_code_is_invalid_totp() {
        let m = mock(0);
        add_account(&m, "A");
        assert_eq!(mint_at(&m, T0_MS).outcome, "success");
        let again = mint_at(&m, T0_MS + 2_000);
        assert_eq!(
            again.body,
            json!({"status":"error","message":"Invalid TOTP"})
        );
        assert_eq!(mint_at(&m, T0_MS + 30_000).outcome, "success");
    }

    #[test]
    fn throttle_and_revocation() {
        let m = mock(120);
        add_account(&m, "A");
        let first = mint_at(&m, T0_MS);
        let t1 = first.body["accessToken"].as_str().unwrap().to_string();
        let early = mint_at(&m, T0_MS + 119_000);
        assert_eq!(early.status, StatusCode::OK);
        assert_eq!(
            early.body,
            json!({"status":"error","message":"Token can be generated once every 2 minutes."})
        );
        // The throttled attempt left the first token alive.
        assert!(matches!(
            m.lock().check_token(&t1, T0_MS + 119_500),
            TokenCheck::Live { .. }
        ));
        // The throttled attempt re-armed the lock (§9): two minutes from it, not from the mint.
        assert_eq!(mint_at(&m, T0_MS + 150_000).outcome, "throttled");
        let later = mint_at(&m, T0_MS + 270_000);
        assert_eq!(later.outcome, "success");
        let t2 = later.body["accessToken"].as_str().unwrap();
        assert_ne!(t1, t2);
        let inner = m.lock();
        assert!(matches!(
            inner.check_token(&t1, T0_MS + 271_000),
            TokenCheck::Dead { .. }
        ));
        assert!(matches!(
            inner.check_token(t2, T0_MS + 271_000),
            TokenCheck::Live { .. }
        ));
        assert_eq!(inner.accounts["A"].rt.mints, 2);
    }

    #[test]
    fn refused_attempts_re_arm_the_throttle() {
        let m = mock(120);
        add_account(&m, "A");
        let with = |pin: &str, totp: &str, now: i64| {
            mint_totp(
                &m,
                &q(&[("dhanClientId", "A"), ("pin", pin), ("totp", totp)]),
                now,
            )
        };
        assert_eq!(with("000000", &code(T0_MS), T0_MS).outcome, "invalid_pin");
        // No token was ever minted, yet the refusal armed the lock (§9).
        assert_eq!(mint_at(&m, T0_MS + 60_000).outcome, "throttled");
        // The throttle answer re-armed it: 2 minutes after the refusal is not enough.
        assert_eq!(mint_at(&m, T0_MS + 150_000).outcome, "throttled");
        // A wrong code re-arms it too.
        let stale = code(T0_MS - 600_000);
        assert_eq!(
            with("123456", &stale, T0_MS + 240_000).outcome,
            "invalid_totp"
        );
        assert_eq!(mint_at(&m, T0_MS + 330_000).outcome, "throttled");
        assert_eq!(mint_at(&m, T0_MS + 450_000).outcome, "success");
        assert_eq!(m.lock().accounts["A"].rt.mints, 1);
    }

    #[test]
    fn expiry_time_alternates_between_forms() {
        let m = mock(0);
        add_account(&m, "A");
        let a = mint_at(&m, T0_MS + 19);
        let b = mint_at(&m, T0_MS + 30_019);
        let forms = [
            a.body["expiryTime"].as_str().unwrap(),
            b.body["expiryTime"].as_str().unwrap(),
        ];
        assert_eq!(forms, ["2026-01-02T05:30:00.019", "2026-01-02T05:30:30"]);
    }

    fn renew_headers(token: &str, client: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("access-token", HeaderValue::from_str(token).unwrap());
        h.insert("dhanClientId", HeaderValue::from_str(client).unwrap());
        h
    }

    #[test]
    fn renew_rules() {
        let m = mock(120);
        add_account(&m, "A");
        let web = m
            .lock()
            .issue(m.key(), "A", TokenKind::SelfWeb, 86_400, T0_MS)
            .unwrap()
            .token;

        // POST → 400 DH-905.
        let (post, _) = renew(&m, &Method::POST, &renew_headers(&web, "A"), T0_MS + 1000);
        assert_eq!(post.status, StatusCode::BAD_REQUEST);
        assert_eq!(post.body["errorCode"], "DH-905");
        assert_eq!(post.body["errorType"], "Input_Exception");

        // `client-id` instead of `dhanClientId` is a missing field.
        let mut wrong = HeaderMap::new();
        wrong.insert("access-token", HeaderValue::from_str(&web).unwrap());
        wrong.insert("client-id", HeaderValue::from_static("A"));
        assert_eq!(
            renew(&m, &Method::GET, &wrong, T0_MS + 1000).0.status,
            StatusCode::BAD_REQUEST
        );

        // SELF renews: new token, 24 h from now, old one dead.
        let (ok, _) = renew(&m, &Method::GET, &renew_headers(&web, "A"), T0_MS + 5_000);
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        let renewed = ok.body["accessToken"].as_str().unwrap().to_string();
        let claims = jwt::decode_unverified(&renewed).unwrap();
        assert_eq!(claims.token_consumer_type, "SELF");
        assert_eq!(claims.iat, T0_MS / 1000 + 5);
        assert_eq!(claims.exp - claims.iat, 86_400);
        let (old_again, _) = renew(&m, &Method::GET, &renew_headers(&web, "A"), T0_MS + 6_000);
        assert_eq!(old_again.status, StatusCode::UNAUTHORIZED);
        assert_eq!(old_again.body["errorCode"], "DH-901");

        // APP token → HTTP 500 DH-905 with the exact seen body.
        let app = mint_at(&m, T0_MS + 10_000).body["accessToken"]
            .as_str()
            .unwrap()
            .to_string();
        let (refused, _) = renew(&m, &Method::GET, &renew_headers(&app, "A"), T0_MS + 11_000);
        assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            refused.body,
            json!({"errorType":"INVALID_REQUEST","errorCode":"DH-905","errorMessage":"Renewal of token not allowed for this token type"})
        );
        // An expired SELF token cannot be renewed either.
        let web2 = m
            .lock()
            .issue(m.key(), "A", TokenKind::SelfWeb, 60, T0_MS + 20_000)
            .unwrap()
            .token;
        let (expired, _) = renew(&m, &Method::GET, &renew_headers(&web2, "A"), T0_MS + 81_000);
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
        assert_eq!(m.lock().accounts["A"].rt.renewals, 1);
    }

    fn app_headers(id: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("app_id", HeaderValue::from_str(id).unwrap());
        h.insert("app_secret", HeaderValue::from_str(secret).unwrap());
        h
    }

    #[test]
    fn consent_credentials_and_daily_limit() {
        let m = mock(120); // consent limit 3
        add_account(&m, "A");
        let qa = q(&[("client_id", "A")]);
        let bad = consent(&m, &qa, &app_headers("app-1", "nope"), T0_MS);
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert_eq!(bad.body, json!({"status":"error","message":"Unauthorized"}));
        for _ in 0..3 {
            let ok = consent(&m, &qa, &app_headers("app-1", "s3cret"), T0_MS);
            assert_eq!(ok.body["consentAppStatus"], "GENERATED");
            assert_eq!(ok.body["consentAppId"].as_str().unwrap().len(), 36);
        }
        let over = consent(&m, &qa, &app_headers("app-1", "s3cret"), T0_MS);
        assert_eq!(over.body["errorCode"], "CONSENT_LIMIT_EXCEED");
        // Next IST day (T0 is 05:30 IST; +19 h is past midnight IST).
        let next_day = consent(
            &m,
            &qa,
            &app_headers("app-1", "s3cret"),
            T0_MS + 19 * 3_600_000,
        );
        assert_eq!(next_day.body["status"], "success");
    }

    #[test]
    fn token_ids_are_single_use_and_bound_to_the_app() {
        let m = mock(120);
        add_account(&m, "A");
        m.lock().token_ids.insert(
            "tid".into(),
            crate::state::TokenIdGrant {
                client_id: "A".into(),
                app_id: "app-1".into(),
            },
        );
        let qt = q(&[("tokenId", "tid")]);
        assert_eq!(
            consume(&m, &qt, &app_headers("app-1", "x"), T0_MS).0.status,
            StatusCode::UNAUTHORIZED
        );
        let (ok, client) = consume(&m, &qt, &app_headers("app-1", "s3cret"), T0_MS);
        assert_eq!(ok.outcome, "success");
        assert_eq!(client.as_deref(), Some("A"));
        assert!(
            ok.body["accessToken"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        let (again, _) = consume(&m, &qt, &app_headers("app-1", "s3cret"), T0_MS);
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(
            again.body,
            json!({"status":"error","message":"Invalid Token Id"})
        );
    }
}
