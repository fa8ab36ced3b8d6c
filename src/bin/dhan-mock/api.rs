//! Read-only api.dhan.co endpoints used to probe a token (docs/dhan-api.md §4) and the static-IP
//! lookup (§7).

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};

use crate::faults;
use crate::ist;
use crate::reply::{Reply, finish, header};
use crate::state::{Account, Mock, Shared, TokenCheck, now_ms};

/// Resolves `access-token` to a live account or the reply a dead/malformed token gets, plus the
/// client id to log (taken from the token's claims even when it is dead).
fn authenticate(
    mock: &Mock,
    headers: &HeaderMap,
    now_ms: i64,
    body: impl FnOnce(&Account, i64) -> Value,
) -> (Reply, Option<String>) {
    let Some(token) = header(headers, "access-token") else {
        return (Reply::dh901("missing_token"), None);
    };
    let inner = mock.lock();
    match inner.check_token(token, now_ms) {
        TokenCheck::Malformed => (Reply::gateway_unauthorized("malformed_token"), None),
        TokenCheck::Dead { client_id, style } => (Reply::dead_token(style), Some(client_id)),
        TokenCheck::Live {
            client_id, exp_ms, ..
        } => match inner.accounts.get(&client_id) {
            Some(acct) => (Reply::ok(body(acct, exp_ms), "success"), Some(client_id)),
            None => (Reply::dh901("dead_token"), Some(client_id)),
        },
    }
}

pub fn profile_body(acct: &Account, exp_ms: i64, now_ms: i64) -> Value {
    json!({
        "dhanClientId": acct.cfg.client_id,
        "tokenValidity": ist::token_validity(exp_ms.div_euclid(1000)),
        "activeSegment": "Equity, Derivative, Currency, Commodity",
        "ddpi": "Active",
        "mtf": "Active",
        "dataPlan": "Active",
        "dataValidity": ist::plain(now_ms + 30 * 86_400_000, "%Y-%m-%d %H:%M:%S.0"),
    })
}

fn fund_body(acct: &Account) -> Value {
    // Field names as in Dhan's docs, including their `availabelBalance` spelling.
    json!({
        "dhanClientId": acct.cfg.client_id,
        "availabelBalance": 100000.0,
        "sodLimit": 100000.0,
        "collateralAmount": 0.0,
        "receiveableAmount": 0.0,
        "utilizedAmount": 0.0,
        "blockedPayoutAmount": 0.0,
        "withdrawableBalance": 100000.0,
    })
}

async fn serve(
    mock: Shared,
    endpoint: &'static str,
    method: Method,
    headers: HeaderMap,
    body: impl FnOnce(&Account, i64, i64) -> Value,
) -> Response {
    if method != Method::GET {
        return finish(
            &mock,
            endpoint,
            method.as_str(),
            None,
            Reply::dh905_bad_input("bad_request"),
        );
    }
    if let Some(resp) = faults::intercept(&mock, endpoint, method.as_str(), None).await {
        return resp;
    }
    let token = header(&headers, "access-token");
    if let Some(resp) = faults::unauthorized_once(&mock, endpoint, method.as_str(), token) {
        return resp;
    }
    let now = now_ms();
    let (r, client) = authenticate(&mock, &headers, now, |a, exp| body(a, exp, now));
    finish(&mock, endpoint, method.as_str(), client.as_deref(), r)
}

pub async fn profile(State(mock): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    serve(mock, "profile", method, headers, profile_body).await
}

pub async fn fundlimit(State(mock): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    serve(mock, "fundlimit", method, headers, |a, _, _| fund_body(a)).await
}

pub async fn get_ip(State(mock): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    serve(mock, "getIP", method, headers, |a, _, _| {
        serde_json::to_value(&a.cfg.ip_info).unwrap_or_default()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::DeadTokenStyle;
    use crate::state::TokenKind;
    use crate::state::test_support::*;
    use axum::http::{HeaderValue, StatusCode};

    fn with_token(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("access-token", HeaderValue::from_str(t).unwrap());
        h
    }

    fn probe(m: &Mock, t: &str, now: i64) -> Reply {
        authenticate(m, &with_token(t), now, |a, exp| profile_body(a, exp, now)).0
    }

    #[test]
    fn live_and_dead_tokens_on_profile() {
        let m = mock(120);
        add_account(&m, "A");
        let t = m
            .lock()
            .issue(m.key(), "A", TokenKind::App, 86_400, T0_MS)
            .unwrap()
            .token;
        let live = probe(&m, &t, T0_MS + 1000);
        assert_eq!(live.status, StatusCode::OK);
        assert_eq!(live.body["dhanClientId"], "A");
        // exp 2026-01-02T00:00Z = 05:30 IST.
        assert_eq!(live.body["tokenValidity"], "02/01/2026 05:30");

        m.lock().accounts.get_mut("A").unwrap().rt.current_token = None;
        let dead = probe(&m, &t, T0_MS + 2000);
        assert_eq!(dead.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            dead.body,
            json!({"errorType":"Invalid_Authentication","errorCode":"DH-906","errorMessage":"Invalid Token"})
        );

        for (style, status, key) in [
            (DeadTokenStyle::Dh901, StatusCode::UNAUTHORIZED, "errorCode"),
            (DeadTokenStyle::Data808, StatusCode::OK, "data"),
            (
                DeadTokenStyle::Gateway,
                StatusCode::UNAUTHORIZED,
                "internalErrorCode",
            ),
        ] {
            m.lock().accounts.get_mut("A").unwrap().cfg.dead_token_style = style;
            let r = probe(&m, &t, T0_MS + 3000);
            assert_eq!(r.status, status, "{style:?}");
            assert!(r.body.get(key).is_some(), "{style:?}: {}", r.body);
        }
        m.lock().accounts.get_mut("A").unwrap().cfg.dead_token_style = DeadTokenStyle::Data808;
        assert_eq!(
            probe(&m, &t, T0_MS).body,
            json!({"data":{"808":"Authentication Failed"},"status":"failed"})
        );

        let malformed = probe(&m, "not.a.jwt", T0_MS);
        assert_eq!(malformed.body["internalErrorCode"], "RS-9005");
    }
}
