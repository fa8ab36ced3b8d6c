//! `dhan-operator browser-login` against a real headless Chromium and the real `dhan-mock` login
//! page: every page variant docs/dhan-api.md §3 allows, and the two ways a login is refused.

mod support;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use dhan_operator::dhan::TotpKey;
use dhan_operator::dhan::totp::step_at;
use serde_json::{Value, json};
use support::{ChildProcess, Chromium, MockDhan, OPERATOR_BIN, free_port, wait_for};

const APP_ID: &str = "app-browser";
const APP_SECRET: &str = "app-secret-browser";
const MOBILE: &str = "9812345670";
const PIN: &str = "274851";
const TOTP_SECRET: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";
const WRONG_TOTP_SECRET: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";

/// One login's world: a mock with one account, a consent for it, and a Chromium.
struct Bed {
    mock: MockDhan,
    chromium: Chromium,
    login_url: String,
}

async fn bed(client_id: &str, order: &str, inputs: &str) -> Bed {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockDhan::start(&[]).await;
    mock.register(json!({
        "clientId": client_id,
        "pin": PIN,
        "totpSecret": TOTP_SECRET,
        "mobile": format!("+91{MOBILE}"),
        "apps": [{
            "appId": APP_ID,
            "appSecret": APP_SECRET,
            "redirectUrl": "https://example.invalid/callback",
        }],
        "loginOrder": order,
        "loginInputs": inputs,
    }))
    .await;
    let consent: Value = reqwest::Client::new()
        .post(format!(
            "{}/app/generate-consent?client_id={client_id}",
            mock.url
        ))
        .header("app_id", APP_ID)
        .header("app_secret", APP_SECRET)
        .send()
        .await
        .expect("generate-consent")
        .json()
        .await
        .expect("consent JSON");
    let consent_id = consent["consentAppId"]
        .as_str()
        .unwrap_or_else(|| panic!("no consentAppId in {consent}"));
    let login_url = format!(
        "{}/login/consentApp-login?consentAppId={consent_id}",
        mock.url
    );

    Bed {
        mock,
        chromium: Chromium::start(),
        login_url,
    }
}

/// What one `browser-login` run left behind.
struct Run {
    status: ExitStatus,
    termination_log: String,
    output: String,
    took: Duration,
}

/// Runs `dhan-operator browser-login` to completion. Started right after Chromium, so the
/// connect retry is exercised as it is in a Pod, where the sidecar starts alongside.
async fn browser_login(bed: &Bed, pin: &str, totp_secret: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("termination-log");
    let started = Instant::now();
    let mut process = ChildProcess::spawn(
        OPERATOR_BIN,
        &["browser-login"],
        &[
            ("DHAN_LOGIN_URL", bed.login_url.as_str()),
            ("DHAN_MOBILE", MOBILE),
            ("DHAN_PIN", pin),
            ("DHAN_TOTP_SECRET", totp_secret),
            ("CDP_URL", bed.chromium.cdp_url.as_str()),
            ("LOGIN_TIMEOUT", "60s"),
            ("TERMINATION_LOG", log_path.to_str().unwrap()),
            ("RUST_LOG", "info,dhan_operator=debug"),
        ],
    );
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "browser-login still running after 75 s:\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Run {
        status,
        termination_log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        output: process.output(),
        took: started.elapsed(),
    }
}

/// Browser.close must make the sidecar exit: that is what lets the login Job complete.
async fn assert_chromium_exits(bed: &mut Bed) {
    let chromium = &mut bed.chromium.process;
    let deadline = Instant::now() + Duration::from_secs(5);
    while chromium.try_wait().is_none() {
        assert!(
            Instant::now() < deadline,
            "Chromium still running 5 s after browser-login ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn consume(mock: &MockDhan, token_id: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "{}/app/consumeApp-consent?tokenId={token_id}",
            mock.url
        ))
        .header("app_id", APP_ID)
        .header("app_secret", APP_SECRET)
        .send()
        .await
        .expect("consumeApp-consent")
        .json()
        .await
        .expect("consume JSON")
}

async fn logs_in_on(order: &str, inputs: &str) {
    let client_id = format!("110{}", rand::random::<u32>() % 10_000_000);
    let mut bed = bed(&client_id, order, inputs).await;
    let run = browser_login(&bed, PIN, TOTP_SECRET).await;
    assert!(
        run.status.success(),
        "browser-login failed ({}): {}\n{}",
        run.status,
        run.termination_log,
        run.output
    );
    let token_id = run.termination_log.clone();
    assert!(
        !token_id.is_empty() && !token_id.contains(char::is_whitespace),
        "termination log must hold only the tokenId, got {token_id:?}"
    );
    let consumed = consume(&bed.mock, &token_id).await;
    assert!(
        consumed["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "tokenId {token_id} not accepted: {consumed}"
    );
    assert_eq!(consumed["dhanClientId"], client_id.as_str(), "{consumed}");
    assert_chromium_exits(&mut bed).await;
    assert_no_credentials(&run, &[]);
    assert!(
        !run.output.contains(&token_id),
        "the tokenId belongs in the termination log only, not in logs"
    );
    eprintln!("{order}/{inputs}: logged in in {:?}", run.took);
}

/// TOTP codes of `secret` around now: what browser-login may have typed.
fn recent_codes(secret: &str) -> Vec<String> {
    let key = TotpKey::parse(secret).expect("test secret is base32");
    let now = step_at(chrono::Utc::now());
    (now.saturating_sub(3)..=now + 1)
        .map(|step| key.code_for_step(step))
        .collect()
}

fn assert_no_credentials(run: &Run, extra: &[&str]) {
    let mut codes = recent_codes(TOTP_SECRET);
    codes.extend(recent_codes(WRONG_TOTP_SECRET));
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    for secret in [MOBILE, PIN, TOTP_SECRET].iter().chain(extra).chain(&codes) {
        assert!(
            !run.termination_log.contains(secret),
            "termination log leaks a credential: {:?}",
            run.termination_log
        );
        assert!(
            !run.output.contains(secret),
            "output leaks a credential:\n{}",
            run.output
        );
    }
}

#[tokio::test]
async fn logs_in_with_boxes_totp_first() {
    logs_in_on("totp-first", "boxes").await;
}

#[tokio::test]
async fn logs_in_with_boxes_pin_first() {
    logs_in_on("pin-first", "boxes").await;
}

#[tokio::test]
async fn logs_in_with_single_fields_totp_first() {
    logs_in_on("totp-first", "single").await;
}

#[tokio::test]
async fn wrong_pin_is_reported_with_the_page_text() {
    let mut bed = bed("1100000101", "totp-first", "boxes").await;
    let wrong_pin = "913370";
    let run = browser_login(&bed, wrong_pin, TOTP_SECRET).await;
    assert!(!run.status.success(), "a wrong PIN must fail the login");
    assert_eq!(run.termination_log, "PIN rejected: Invalid PIN");
    assert_no_credentials(&run, &[wrong_pin]);
    assert_chromium_exits(&mut bed).await;
    let calls = bed.mock.calls_to("consentApp-redirect", "1100000101").await;
    assert!(calls.is_empty(), "no redirect after a wrong PIN: {calls:?}");
}

#[tokio::test]
async fn wrong_totp_secret_is_reported_as_totp_rejected() {
    let mut bed = bed("1100000102", "pin-first", "single").await;
    let run = browser_login(&bed, PIN, WRONG_TOTP_SECRET).await;
    assert!(!run.status.success(), "a wrong TOTP must fail the login");
    assert_eq!(run.termination_log, "TOTP rejected: Invalid TOTP");
    assert_no_credentials(&run, &[WRONG_TOTP_SECRET]);
    assert_chromium_exits(&mut bed).await;
}

#[tokio::test]
async fn a_dead_consent_is_reported_with_the_page_text() {
    let mut bed = bed("1100000103", "totp-first", "boxes").await;
    bed.login_url = format!(
        "{}/login/consentApp-login?consentAppId=no-such-consent",
        bed.mock.url
    );
    let run = browser_login(&bed, PIN, TOTP_SECRET).await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.termination_log,
        "login page rejected: Invalid or expired consent"
    );
    assert_chromium_exits(&mut bed).await;
}

#[tokio::test]
async fn unreachable_chromium_times_out_naming_the_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("termination-log");
    let port = free_port().to_string();
    let cdp_url = format!("http://127.0.0.1:{port}");
    let mut process = ChildProcess::spawn(
        OPERATOR_BIN,
        &["browser-login"],
        &[
            (
                "DHAN_LOGIN_URL",
                "http://127.0.0.1:9/login/consentApp-login?consentAppId=x",
            ),
            ("DHAN_MOBILE", MOBILE),
            ("DHAN_PIN", PIN),
            ("DHAN_TOTP_SECRET", TOTP_SECRET),
            ("CDP_URL", cdp_url.as_str()),
            ("LOGIN_TIMEOUT", "2s"),
            ("TERMINATION_LOG", log_path.to_str().unwrap()),
        ],
    );
    let status = wait_for(Duration::from_secs(10), || {
        let status = process.try_wait();
        async move { status }
    })
    .await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&log_path).unwrap(),
        "timed out at the Chromium connection step"
    );
}
