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
