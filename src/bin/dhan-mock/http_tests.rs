//! In-process HTTP tests: the real router on 127.0.0.1:0, driven by a plain HTTP client.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::state::test_support::{SECRET_B32, account_json};
use crate::state::{Config, Mock, now_ms};
use crate::totp;

async fn start(throttle: i64) -> String {
    let mock = Arc::new(Mock::new(Config {
        mint_throttle_secs: throttle,
        token_ttl_secs: 86_400,
        consent_limit: 25,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, crate::router(mock)).await });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; these tests only speak plain HTTP, but the
    // builder still wants a provider installed. Ignore "already installed" from another test.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn current_code() -> String {
    let secret = totp::decode_secret(SECRET_B32).unwrap();
    totp::code_at(&secret, (now_ms() / 1000) as u64)
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn mint_probe_revoke_probe() {
    let base = start(120).await;
    let c = client();
    let r = c
        .post(format!("{base}/__control/accounts"))
        .json(&account_json("1000000001"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // GET is not how you mint.
    let (status, _) = json_of(
        c.get(format!("{base}/app/generateAccessToken"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);

    let code = current_code();
    let mint_url =
        format!("{base}/app/generateAccessToken?dhanClientId=1000000001&pin=123456&totp={code}");
    let (status, body) = json_of(c.post(&mint_url).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let token = body["accessToken"].as_str().unwrap().to_string();
    assert_eq!(body["dhanClientId"], "1000000001");

    // The same code again: replay → Invalid TOTP, still HTTP 200.
    let (status, body) = json_of(c.post(&mint_url).send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (200, json!({"status":"error","message":"Invalid TOTP"}))
    );

    let (status, profile) = json_of(
        c.get(format!("{base}/v2/profile"))
            .header("access-token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(profile["dhanClientId"], "1000000001");

    let (_, acct) = json_of(
        c.get(format!("{base}/__control/accounts/1000000001"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(acct["currentToken"], token.as_str());
    assert_eq!(acct["tokenType"], "APP");
    assert_eq!(acct["mints"], 1);

    let r = c
        .post(format!("{base}/__control/revoke"))
        .json(&json!({"clientId": "1000000001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (status, dead) = json_of(
        c.get(format!("{base}/v2/profile"))
            .header("access-token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        dead,
        json!({"errorType":"Invalid_Authentication","errorCode":"DH-906","errorMessage":"Invalid Token"})
    );

    // Faults: one HTTP 500, then normal service again.
    c.post(format!("{base}/__control/faults"))
        .json(&json!({"endpoint": "profile", "kind": "http500", "count": 1}))
        .send()
        .await
        .unwrap();
    let r = c
        .get(format!("{base}/v2/profile"))
        .header("access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let r = c
        .get(format!("{base}/v2/profile"))
        .header("access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A dropped connection is a transport error, not a response.
    c.post(format!("{base}/__control/faults"))
        .json(&json!({"endpoint": "*", "kind": "drop"}))
        .send()
        .await
        .unwrap();
    let dropped = async {
        let resp = client()
            .get(format!("{base}/v2/fundlimit"))
            .header("access-token", &token)
            .send()
            .await?;
        resp.bytes().await
    }
    .await;
    assert!(
        dropped.is_err(),
        "expected a transport error, got {dropped:?}"
    );

    // RenewToken refuses POST with 400 DH-905.
    let (status, body) = json_of(
        c.post(format!("{base}/v2/RenewToken"))
            .header("access-token", &token)
            .header("dhanClientId", "1000000001")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["errorCode"], "DH-905");

    let (_, calls) = json_of(
        c.get(format!("{base}/__control/calls"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let outcomes: Vec<(&str, &str)> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["endpoint"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("generateAccessToken", "method_not_allowed"),
            ("generateAccessToken", "success"),
            ("generateAccessToken", "invalid_totp"),
            ("profile", "success"),
            ("profile", "dead_token"),
            ("profile", "fault"),
            ("profile", "dead_token"),
            ("fundlimit", "fault"),
            ("RenewToken", "bad_request"),
        ]
    );
    let log = calls.to_string();
    assert!(!log.contains(&token), "call log must not contain tokens");
    assert!(!log.contains("123456"), "call log must not contain the PIN");
}

#[tokio::test]
async fn web_token_renew_and_consent_login_flow() {
    let base = start(120).await;
    let c = client();
    c.post(format!("{base}/__control/accounts"))
        .json(&account_json("A"))
        .send()
        .await
        .unwrap();

    let (_, web) = json_of(
        c.post(format!("{base}/__control/web-token"))
            .json(&json!({"clientId": "A"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let web_token = web["accessToken"].as_str().unwrap();
    let (status, renewed) = json_of(
        c.get(format!("{base}/v2/RenewToken"))
            .header("access-token", web_token)
            .header("dhanClientId", "A")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["accessToken"], web["accessToken"]);

    let (status, consent) = json_of(
        c.post(format!("{base}/app/generate-consent?client_id=A"))
            .header("app_id", "app-1")
            .header("app_secret", "s3cret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let id = consent["consentAppId"].as_str().unwrap();

    let page = c
        .get(format!("{base}/login/consentApp-login?consentAppId={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(id) && html.contains("isTrusted"));

    let mut redirect_to = String::new();
    for (step, value) in [
        ("mobile", "9876543210".to_string()),
        ("totp", current_code()),
        ("pin", "123456".to_string()),
    ] {
        let (status, body) = json_of(
            c.post(format!("{base}/login/api/verify"))
                .json(&json!({"consentAppId": id, "step": step, "value": value}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("success")),
            "{step}: {body}"
        );
        if let Some(to) = body["redirectTo"].as_str() {
            redirect_to = to.to_string();
        }
    }
    let hop = c.get(format!("{base}{redirect_to}")).send().await.unwrap();
    assert_eq!(hop.status(), 302);
    let location = hop.headers()["location"].to_str().unwrap();
    let token_id = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "tokenId")
        .unwrap()
        .1
        .into_owned();

    let consume = |method: reqwest::Method| {
        c.request(
            method,
            format!("{base}/app/consumeApp-consent?tokenId={token_id}"),
        )
        .header("app_id", "app-1")
        .header("app_secret", "s3cret")
        .send()
    };
    let (status, minted) = json_of(consume(reqwest::Method::GET).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        minted["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    // Single use.
    let (_, again) = json_of(consume(reqwest::Method::POST).await.unwrap()).await;
    assert_eq!(again["status"], "error");

    // The consent token replaced the renewed web token.
    let (status, _) = json_of(
        c.get(format!("{base}/v2/profile"))
            .header("access-token", renewed["accessToken"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

async fn register(c: &reqwest::Client, base: &str, client_id: &str) {
    let r = c
        .post(format!("{base}/__control/accounts"))
        .json(&account_json(client_id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn fault(c: &reqwest::Client, base: &str, fault: Value) {
    let r = c
        .post(format!("{base}/__control/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{fault}");
}

async fn mint(
    c: &reqwest::Client,
    base: &str,
    client_id: &str,
) -> reqwest::Result<reqwest::Response> {
    let code = current_code();
    c.post(format!(
        "{base}/app/generateAccessToken?dhanClientId={client_id}&pin=123456&totp={code}"
    ))
    .send()
    .await
}

async fn account(c: &reqwest::Client, base: &str, client_id: &str) -> Value {
    let r = c
        .get(format!("{base}/__control/accounts/{client_id}"))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn outcomes(c: &reqwest::Client, base: &str) -> Vec<(String, u64, String)> {
    let r = c
        .get(format!("{base}/__control/calls"))
        .send()
        .await
        .unwrap();
    let calls: Value = r.json().await.unwrap();
    calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["endpoint"].as_str().unwrap().to_owned(),
                c["status"].as_u64().unwrap(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// docs/dhan-api.md §9: the two other wordings of a refused PIN, as the auth host answers its
/// errors (§1, §6.3: HTTP 200, `{"status":"error","message":...}`), for one client only.
#[tokio::test]
async fn refusal_wordings_are_answered_as_the_auth_host_does() {
    let base = start(0).await;
    let c = client();
    register(&c, &base, "A").await;
    register(&c, &base, "B").await;
    fault(
        &c,
        &base,
        json!({"endpoint": "generateAccessToken", "kind": "loginFailed", "clientId": "A"}),
    )
    .await;
    fault(
        &c,
        &base,
        json!({"endpoint": "generateAccessToken", "kind": "validationFailed", "clientId": "B"}),
    )
    .await;
    let (status, body) = json_of(mint(&c, &base, "B").await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status":"error","message":"Validation failed. Please check your credentials and try again."})
        )
    );
    let (status, body) = json_of(mint(&c, &base, "A").await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status":"error","message":"Login failed. Please retry with valid credentials."})
        )
    );
    assert_eq!(
        account(&c, &base, "A").await["mints"],
        0,
        "a refusal mints nothing"
    );
}

/// A mint carried out whose answer is lost: the previous token is revoked all the same (§1).
#[tokio::test]
async fn a_reset_after_a_mint_revokes_the_previous_token_and_answers_nothing() {
    let base = start(0).await;
    let c = client();
    register(&c, &base, "A").await;
    let (_, web) = json_of(
        c.post(format!("{base}/__control/web-token"))
            .json(&json!({"clientId": "A"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let first = web["accessToken"].as_str().unwrap().to_owned();
    fault(
        &c,
        &base,
        json!({"endpoint": "generateAccessToken", "kind": "resetAfterMint"}),
    )
    .await;
    let lost = async { mint(&client(), &base, "A").await?.bytes().await }.await;
    assert!(lost.is_err(), "expected a broken connection, got {lost:?}");
    let after = account(&c, &base, "A").await;
    assert_eq!(after["mints"], 1, "the mint was carried out");
    assert_ne!(after["currentToken"], first.as_str());
    let probe = c
        .get(format!("{base}/v2/profile"))
        .header("access-token", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 400, "the previous token is revoked");
    assert!(outcomes(&c, &base).await.contains(&(
        "generateAccessToken".into(),
        0,
        "fault_after_mint".into()
    )));
}

/// A mint carried out and answered HTTP 200 without a token (neither a token nor an error).
#[tokio::test]
async fn a_malformed_200_after_a_mint_has_no_token_and_no_error() {
    let base = start(0).await;
    let c = client();
    register(&c, &base, "A").await;
    fault(
        &c,
        &base,
        json!({"endpoint": "generateAccessToken", "kind": "malformedAfterMint"}),
    )
    .await;
    let (status, body) = json_of(mint(&c, &base, "A").await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["dhanClientId"], "A");
    assert!(body.get("accessToken").is_none(), "{body}");
    assert!(body.get("status").is_none(), "{body}");
    let after = account(&c, &base, "A").await;
    assert_eq!(after["mints"], 1, "the mint was carried out");
    assert!(after["currentToken"].is_string());
}

/// §9: a freshly minted token has been seen to answer 401 once, then work.
#[tokio::test]
async fn a_fresh_token_answers_its_first_profile_call_with_401_then_works() {
    let base = start(0).await;
    let c = client();
    register(&c, &base, "A").await;
    fault(
        &c,
        &base,
        json!({"endpoint": "profile", "kind": "unauthorizedAfterMint"}),
    )
    .await;
    let (_, body) = json_of(mint(&c, &base, "A").await.unwrap()).await;
    let token = body["accessToken"].as_str().unwrap();
    let probe = || {
        c.get(format!("{base}/v2/profile"))
            .header("access-token", token)
            .send()
    };
    let (status, first) = json_of(probe().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(first["errorCode"], "DH-901");
    let (status, second) = json_of(probe().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(second["dhanClientId"], "A");
}
