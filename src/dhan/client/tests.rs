//! Wire-format tests against an in-process HTTP server on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::dhan::error::ErrorKind;
use crate::dhan::jwt::testing::jwt;

fn wall_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

const CLIENT_ID: &str = "1000000001";
const PIN: &str = "482913";
const TOTP_CODE: &str = "705164";
const APP_ID: &str = "app-id-7f3a";
const APP_SECRET: &str = "app-secret-9c1e2d";
const TOKEN_ID: &str = "token-id-55aa";

/// What the fake Dhan saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

/// What the fake Dhan answers.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    location: Option<&'static str>,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            location: None,
        }
    }
}

type Responder = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Responder,
}

struct FakeDhan {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeDhan {
    async fn start(responder: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let fake = Fake {
            seen: Arc::default(),
            responder: Arc::new(responder),
        };
        let seen = fake.seen.clone();
        let app = Router::new().fallback(handle).with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, seen }
    }

    fn client(&self) -> DhanClient {
        DhanClient::new(&self.base, &self.base, Duration::from_secs(5), wall_clock()).unwrap()
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only_request(&self) -> Seen {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

async fn handle(State(fake): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
        body,
    };
    fake.seen.lock().unwrap().push(seen.clone());
    let reply = (fake.responder)(&seen);
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    if let Some(location) = reply.location {
        response
            .headers_mut()
            .insert(header::LOCATION, location.parse().unwrap());
    }
    response
}

fn token_body(consumer_type: &str) -> (String, String) {
    let token = jwt(json!({
        "iss": "dhan", "exp": 1_758_700_000, "iat": 1_758_613_600,
        "tokenConsumerType": consumer_type, "dhanClientId": CLIENT_ID
    }));
    let body = json!({
        "dhanClientId": CLIENT_ID, "dhanClientName": "ALICE", "dhanClientUcc": "ABCD1234",
        "givenPowerOfAttorney": false, "accessToken": token,
        "expiryTime": "2025-09-24T13:16:40.000"
    });
    (token, body.to_string())
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Every way an error can be printed contains none of the secrets.
fn assert_no_secrets(error: &DhanError, secrets: &[&str]) {
    let printed = format!("{error} | {error:?} | {error:#?}");
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret:?} leaked in {printed}");
    }
}

#[tokio::test]
async fn mint_sends_post_with_the_three_query_params_and_no_body() {
    let (token, body) = token_body("APP");
    let dhan = FakeDhan::start(move |_| Reply::new(200, body.clone())).await;

    let issued = dhan
        .client()
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap();

    let seen = dhan.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/app/generateAccessToken");
    let expected: BTreeMap<String, String> = [
        ("dhanClientId", CLIENT_ID),
        ("pin", PIN),
        ("totp", TOTP_CODE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(seen.query, expected);
    assert!(seen.body.is_empty());
    assert_eq!(header(&seen, "content-length"), Some("0"));
    assert_eq!(header(&seen, "access-token"), None);

    assert_eq!(issued.token.expose(), token);
    assert_eq!(issued.expires_at.timestamp(), 1_758_700_000);
    assert_eq!(issued.consumer_type.as_deref(), Some("APP"));
    assert_eq!(issued.client_name.as_deref(), Some("ALICE"));
}

#[tokio::test]
async fn mint_failure_with_http_200_is_classified_from_the_body() {
    let cases = [
        (
            r#"{"status":"error","message":"Invalid Pin"}"#,
            "InvalidPin",
        ),
        (
            r#"{"status":"error","message":"Invalid TOTP"}"#,
            "InvalidTotp",
        ),
        (
            r#"{"status":"error","message":"Token can be generated once every 2 minutes."}"#,
            "MintThrottled",
        ),
    ];
    for (body, reason) in cases {
        let dhan = FakeDhan::start(move |_| Reply::new(200, body)).await;
        let error = dhan
            .client()
            .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
            .await
            .unwrap_err();
        assert_eq!(error.reason(), reason);
        assert_no_secrets(&error, &[PIN, TOTP_CODE]);
    }
}

#[tokio::test]
async fn failing_mint_errors_never_contain_pin_or_totp() {
    // The server echoes the request URL back, as some error pages do.
    let echo = FakeDhan::start(|seen| {
        Reply::new(
            500,
            format!(
                r#"{{"status":"error","message":"failed for pin={} totp={}"}}"#,
                seen.query["pin"], seen.query["totp"]
            ),
        )
    })
    .await;
    let error = echo
        .client()
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ServerError");
    assert_no_secrets(&error, &[PIN, TOTP_CODE]);

    // Nothing listens: reqwest's error would name the URL, query string included.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = DhanClient::new(&base, &base, Duration::from_secs(5), wall_clock()).unwrap();
    let error = client
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Network");
    assert_eq!(error.kind(), ErrorKind::Unknown);
    assert_no_secrets(&error, &[PIN, TOTP_CODE, "pin=", "generateAccessToken"]);
}

/// A connection that breaks after the request went out (a reset, a proxy dropping it) may
/// have had its request carried out — a mint among them (§1) —, unlike one that never opened.
#[tokio::test]
async fn a_connection_lost_after_sending_is_told_apart_from_one_never_opened() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            // Closed without a word.
        }
    });
    let client = DhanClient::new(&base, &base, Duration::from_secs(5), wall_clock()).unwrap();
    let error = client
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ConnectionLost", "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Unknown);
    assert_no_secrets(&error, &[PIN, TOTP_CODE, "pin=", "generateAccessToken"]);
}

#[tokio::test]
async fn timeouts_map_to_unknown_timeout() {
    let dhan = FakeDhan::start(|_| Reply {
        delay: Duration::from_secs(3),
        ..Reply::new(200, "{}")
    })
    .await;
    let client = DhanClient::new(
        &dhan.base,
        &dhan.base,
        Duration::from_millis(200),
        wall_clock(),
    )
    .unwrap();

    let error = client
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap_err();
    assert_eq!(error, DhanError::Timeout);
    assert_eq!(error.reason(), "Timeout");
    assert_eq!(error.kind(), ErrorKind::Unknown);

    let probe = client.profile(&AccessToken::from("t")).await.unwrap_err();
    assert_eq!(probe.kind(), ErrorKind::Unknown);
}

#[tokio::test]
async fn renew_sends_get_with_access_token_and_dhan_client_id_headers() {
    let (old, _) = token_body("SELF");
    let (new, body) = token_body("SELF");
    let dhan = FakeDhan::start(move |_| Reply::new(200, body.clone())).await;

    let issued = dhan
        .client()
        .renew_token(CLIENT_ID, &AccessToken::from(old.clone()))
        .await
        .unwrap();

    let seen = dhan.only_request();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/v2/RenewToken");
    assert!(seen.query.is_empty());
    assert_eq!(header(&seen, "access-token"), Some(old.as_str()));
    assert_eq!(header(&seen, "dhanClientId"), Some(CLIENT_ID));
    assert!(seen.body.is_empty());
    assert_eq!(issued.token.expose(), new);
}

#[tokio::test]
async fn renew_of_an_app_token_is_permanent_renew_not_allowed() {
    let dhan = FakeDhan::start(|_| {
        Reply::new(
            500,
            r#"{"errorType":"INVALID_REQUEST","errorCode":"DH-905","errorMessage":"Renewal of token not allowed for this token type"}"#,
        )
    })
    .await;
    let (token, _) = token_body("APP");
    let error = dhan
        .client()
        .renew_token(CLIENT_ID, &AccessToken::from(token.clone()))
        .await
        .unwrap_err();
    assert_eq!(error, DhanError::RenewNotAllowed);
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_no_secrets(&error, &[&token]);
}

#[tokio::test]
async fn api_url_is_accepted_with_or_without_v2_and_trailing_slash() {
    let dhan = FakeDhan::start(|_| Reply::new(200, r#"{"dhanClientId":"1000000001"}"#)).await;
    for suffix in ["", "/", "/v2", "/v2/", "/V2"] {
        let api = format!("{}{suffix}", dhan.base);
        let client = DhanClient::new(
            &format!("{}/", dhan.base),
            &api,
            Duration::from_secs(5),
            wall_clock(),
        )
        .unwrap();
        client.profile(&AccessToken::from("t")).await.unwrap();
    }
    let paths: Vec<String> = dhan.requests().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/v2/profile"; 5]);
}

#[tokio::test]
async fn base_urls_may_carry_a_path_prefix() {
    let dhan = FakeDhan::start(|_| Reply::new(200, r#"{"dhanClientId":"1"}"#)).await;
    let client = DhanClient::new(
        &format!("{}/auth", dhan.base),
        &format!("{}/sandbox/v2", dhan.base),
        Duration::from_secs(5),
        wall_clock(),
    )
    .unwrap();
    client.profile(&AccessToken::from("t")).await.unwrap();
    assert_eq!(dhan.only_request().path, "/sandbox/v2/profile");
    assert_eq!(
        client.consent_login_url("abc"),
        format!("{}/auth/login/consentApp-login?consentAppId=abc", dhan.base)
    );
}

#[tokio::test]
async fn profile_sends_access_token_and_reads_the_answer() {
    let dhan = FakeDhan::start(|_| {
        Reply::new(
            200,
            r#"{"dhanClientId":"1000000001","tokenValidity":"24/09/2025 13:16","activeSegment":"Equity"}"#,
        )
    })
    .await;
    let profile = dhan
        .client()
        .profile(&AccessToken::from("the-token"))
        .await
        .unwrap();
    let seen = dhan.only_request();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/v2/profile")
    );
    assert_eq!(header(&seen, "access-token"), Some("the-token"));
    assert_eq!(profile.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(
        profile.token_validity.map(|t| t.timestamp()),
        Some(1_758_700_000 - 40)
    );
}

#[tokio::test]
async fn probe_verdicts_come_from_the_wire() {
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJleHAiOjF9.secret-signature";
    let cases = [
        (401, "".to_owned(), ErrorKind::TokenDead),
        (
            400,
            r#"{"errorType":"Order_Error","errorCode":"DH-906","errorMessage":"Invalid Token"}"#
                .to_owned(),
            ErrorKind::TokenDead,
        ),
        // A server that echoes the token in its complaint.
        (
            401,
            format!(r#"{{"status":"error","message":"token {token} unknown"}}"#),
            ErrorKind::TokenDead,
        ),
        (429, "".to_owned(), ErrorKind::Unknown),
        (503, "".to_owned(), ErrorKind::Unknown),
    ];
    for (status, body, kind) in cases {
        let dhan = FakeDhan::start(move |_| Reply::new(status, body.clone())).await;
        let error = dhan
            .client()
            .profile(&AccessToken::from(token))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), kind, "HTTP {status}");
        assert_no_secrets(&error, &[token, "secret-signature"]);
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let dhan = FakeDhan::start(|seen| {
        if seen.path == "/elsewhere" {
            Reply::new(200, r#"{"dhanClientId":"1"}"#)
        } else {
            Reply {
                location: Some("/elsewhere"),
                ..Reply::new(302, "")
            }
        }
    })
    .await;
    let error = dhan
        .client()
        .profile(&AccessToken::from("t"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "UnexpectedResponse");
    assert_eq!(dhan.requests().len(), 1);
}

#[tokio::test]
async fn consent_sends_app_id_and_app_secret_headers() {
    let dhan = FakeDhan::start(|_| {
        Reply::new(
            200,
            r#"{"consentAppId":"940b0ca1-3ff4","consentAppStatus":"GENERATED","status":"success"}"#,
        )
    })
    .await;
    let consent = dhan
        .client()
        .generate_consent(CLIENT_ID, APP_ID, APP_SECRET)
        .await
        .unwrap();
    assert_eq!(consent, "940b0ca1-3ff4");
    let seen = dhan.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/app/generate-consent");
    assert_eq!(
        seen.query.get("client_id").map(String::as_str),
        Some(CLIENT_ID)
    );
    assert_eq!(header(&seen, "app_id"), Some(APP_ID));
    assert_eq!(header(&seen, "app_secret"), Some(APP_SECRET));
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn consent_with_wrong_app_credentials_is_permanent() {
    let dhan =
        FakeDhan::start(|_| Reply::new(401, r#"{"status":"error","message":"Unauthorized"}"#))
            .await;
    let error = dhan
        .client()
        .generate_consent(CLIENT_ID, APP_ID, APP_SECRET)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "AppUnauthorized");
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_no_secrets(&error, &[APP_SECRET]);
}

#[tokio::test]
async fn consent_login_url_points_at_the_auth_host() {
    let client = DhanClient::new(
        "https://auth.dhan.co/",
        "https://api.dhan.co",
        Duration::from_secs(1),
        wall_clock(),
    )
    .unwrap();
    assert_eq!(
        client.consent_login_url("940b0ca1-3ff4-4476"),
        "https://auth.dhan.co/login/consentApp-login?consentAppId=940b0ca1-3ff4-4476"
    );
    assert_eq!(
        client.consent_login_url("a b&c"),
        "https://auth.dhan.co/login/consentApp-login?consentAppId=a+b%26c"
    );
}

#[tokio::test]
async fn consume_falls_back_from_get_to_post() {
    let (token, body) = token_body("APP");
    for refusal in [404, 405] {
        let body = body.clone();
        let dhan = FakeDhan::start(move |seen| {
            if seen.method == "GET" {
                Reply::new(refusal, "")
            } else {
                Reply::new(200, body.clone())
            }
        })
        .await;
        let issued = dhan
            .client()
            .consume_consent(TOKEN_ID, APP_ID, APP_SECRET)
            .await
            .unwrap();
        assert_eq!(issued.token.expose(), token);

        let requests = dhan.requests();
        let methods: Vec<&str> = requests.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["GET", "POST"], "after HTTP {refusal}");
        for seen in &requests {
            assert_eq!(seen.path, "/app/consumeApp-consent");
            assert_eq!(
                seen.query.get("tokenId").map(String::as_str),
                Some(TOKEN_ID)
            );
            assert_eq!(header(seen, "app_id"), Some(APP_ID));
            assert_eq!(header(seen, "app_secret"), Some(APP_SECRET));
        }
    }
}

#[tokio::test]
async fn consume_uses_get_alone_when_get_answers() {
    let (_, body) = token_body("APP");
    let dhan = FakeDhan::start(move |_| Reply::new(200, body.clone())).await;
    dhan.client()
        .consume_consent(TOKEN_ID, APP_ID, APP_SECRET)
        .await
        .unwrap();
    assert_eq!(dhan.only_request().method, "GET");
}

#[tokio::test]
async fn consume_does_not_retry_on_real_errors() {
    let dhan =
        FakeDhan::start(|_| Reply::new(400, r#"{"status":"error","message":"Invalid tokenId"}"#))
            .await;
    let error = dhan
        .client()
        .consume_consent(TOKEN_ID, APP_ID, APP_SECRET)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unknown);
    assert_eq!(dhan.requests().len(), 1);
    assert_no_secrets(&error, &[APP_SECRET]);
}

#[tokio::test]
async fn ip_info_is_a_read_only_get() {
    let dhan = FakeDhan::start(|_| {
        Reply::new(
            200,
            r#"{"primaryIP":"203.0.113.7","secondaryIP":null,"modifyDatePrimary":"2026-04-01","modifyDateSecondary":null}"#,
        )
    })
    .await;
    let info = dhan
        .client()
        .ip_info(&AccessToken::from("t"))
        .await
        .unwrap();
    let seen = dhan.only_request();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/v2/ip/getIP")
    );
    assert_eq!(header(&seen, "access-token"), Some("t"));
    assert_eq!(info.primary_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(info.secondary_ip, None);
}

#[test]
fn unusable_base_urls_are_rejected_at_construction() {
    let good = "https://api.dhan.co";
    for bad in [
        "",
        "auth.dhan.co",
        "ftp://auth.dhan.co",
        "https://auth.dhan.co?x=1",
        "https://user:pw@auth.dhan.co",
    ] {
        let error = DhanClient::new(bad, good, Duration::from_secs(1), wall_clock()).unwrap_err();
        assert_eq!(error.reason(), "InvalidConfig", "{bad:?}");
        assert_eq!(error.kind(), ErrorKind::Permanent);
        assert_no_secrets(&error, &["pw"]);
        assert_eq!(
            DhanClient::new(good, bad, Duration::from_secs(1), wall_clock())
                .unwrap_err()
                .reason(),
            "InvalidConfig"
        );
    }
}

#[test]
fn client_debug_shows_only_the_bases() {
    let client = DhanClient::new(
        "https://auth.dhan.co",
        "https://sandbox.dhan.co/v2/",
        Duration::from_secs(1),
        wall_clock(),
    )
    .unwrap();
    let printed = format!("{client:?}");
    assert!(printed.contains("https://auth.dhan.co"), "{printed}");
    assert!(printed.contains("https://sandbox.dhan.co/v2"), "{printed}");
    assert!(!printed.contains("/v2/v2"), "{printed}");
}

#[tokio::test]
async fn headers_that_cannot_be_sent_fail_without_echoing_the_value() {
    let dhan = FakeDhan::start(|_| Reply::new(200, "{}")).await;
    let bad_token = "abc\ndef-secret";
    let error = dhan
        .client()
        .profile(&AccessToken::from(bad_token))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "MalformedToken");
    assert_no_secrets(&error, &["def-secret"]);
    let error = dhan
        .client()
        .generate_consent(CLIENT_ID, APP_ID, "bad\rsecret-value")
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "InvalidConfig");
    assert_no_secrets(&error, &["secret-value"]);
    assert!(dhan.requests().is_empty());
}

/// A clock that stands still.
#[derive(Debug)]
struct Fixed(DateTime<Utc>);

impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[tokio::test]
async fn unreadable_expiry_falls_back_to_the_injected_clock() {
    let dhan = FakeDhan::start(|_| Reply::new(200, r#"{"accessToken":"opaque"}"#)).await;
    let now = DateTime::from_timestamp(1_758_600_000, 0).unwrap();
    let client = DhanClient::new(
        &dhan.base,
        &dhan.base,
        Duration::from_secs(5),
        Arc::new(Fixed(now)),
    )
    .unwrap();
    let issued = client
        .generate_access_token(CLIENT_ID, PIN, TOTP_CODE)
        .await
        .unwrap();
    assert_eq!(issued.expires_at, now + chrono::TimeDelta::hours(24));
}
