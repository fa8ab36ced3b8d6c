//! `dhan-operator browser-login` against a real headless Chromium and the real `dhan-mock` login
//! page: every page variant docs/dhan-api.md §3 reports (`variants`), and the ways a login must
//! stop without harm (`safety`): refusals named by step and class, no second try of a refused
//! value, no keystroke on a foreign origin, Chromium's own sandbox where it can run.

mod support;

#[path = "browser_login/safety.rs"]
mod safety;
#[path = "browser_login/variants.rs"]
mod variants;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use dhan_operator::browser::{LoginFailure, LoginReport};
use dhan_operator::dhan::TotpKey;
use dhan_operator::dhan::totp::step_at;
use serde_json::{Value, json};
use support::{ChildProcess, Chromium, MockDhan, OPERATOR_BIN};

pub const APP_ID: &str = "app-browser";
pub const APP_SECRET: &str = "app-secret-browser";
pub const MOBILE: &str = "9812345670";
pub const PIN: &str = "274851";
pub const PASSWORD: &str = "correct-horse-7";
pub const TOTP_SECRET: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";
pub const WRONG_TOTP_SECRET: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";

/// A client id no other test of this binary uses.
pub fn client_id() -> String {
    format!("110{:07}", rand::random::<u32>() % 10_000_000)
}

/// One login's world: a mock with one account, a consent for it, and a Chromium.
pub struct Bed {
    pub mock: MockDhan,
    pub chromium: Chromium,
    pub login_url: String,
    pub client_id: String,
}

/// A bed whose mock account has `page` merged into its registration (`loginOrder`,
/// `loginInputs`, `loginPage`, `password`, …).
pub async fn bed(page: Value) -> Bed {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client_id = client_id();
    let mock = MockDhan::start(&[]).await;
    let mut account = json!({
        "clientId": client_id,
        "pin": PIN,
        "totpSecret": TOTP_SECRET,
        "mobile": format!("+91{MOBILE}"),
        "apps": [{
            "appId": APP_ID,
            "appSecret": APP_SECRET,
            "redirectUrl": "https://example.invalid/callback",
        }],
    });
    account
        .as_object_mut()
        .unwrap()
        .extend(page.as_object().expect("page is an object").clone());
    mock.register(account).await;
    let login_url = consent_url(&mock, &client_id).await;
    Bed {
        mock,
        chromium: Chromium::start(),
        login_url,
        client_id,
    }
}

/// Generates a consent as the operator does and returns its login page URL.
pub async fn consent_url(mock: &MockDhan, client_id: &str) -> String {
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
    format!(
        "{}/login/consentApp-login?consentAppId={consent_id}",
        mock.url
    )
}

/// What one `browser-login` run left behind.
pub struct Run {
    pub status: ExitStatus,
    pub termination_log: String,
    pub output: String,
}

impl Run {
    /// The login's report, as the operator reads it.
    pub fn report(&self) -> LoginReport {
        LoginReport::parse(&self.termination_log)
            .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", self.termination_log, self.output))
    }

    /// The failure, or a panic showing what happened instead.
    pub fn failure(&self) -> LoginFailure {
        match self.report() {
            LoginReport::Failed(failure) => failure,
            other => panic!("expected a failure, got {other:?}\n{}", self.output),
        }
    }

    /// The `tokenId`, or a panic showing what happened instead.
    pub fn token_id(&self) -> String {
        match self.report() {
            LoginReport::LoggedIn(token_id) => token_id.expose().to_owned(),
            LoginReport::Failed(failure) => panic!("login failed: {failure}\n{}", self.output),
        }
    }
}

/// Runs `dhan-operator browser-login` to completion with the standard credentials and `env`
/// on top. Started right after Chromium, so the connect retry is exercised as it is in a Pod,
/// where the sidecar starts alongside.
pub async fn browser_login(bed: &Bed, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("termination-log");
    let mut all = vec![
        ("DHAN_LOGIN_URL", bed.login_url.as_str()),
        ("DHAN_MOBILE", MOBILE),
        ("DHAN_PIN", PIN),
        ("DHAN_TOTP_SECRET", TOTP_SECRET),
        ("CDP_URL", bed.chromium.cdp_url.as_str()),
        ("LOGIN_TIMEOUT", "60s"),
        ("TERMINATION_LOG", log_path.to_str().unwrap()),
        ("RUST_LOG", "info,dhan_operator=debug"),
    ];
    for (name, value) in env {
        all.retain(|(n, _)| n != name);
        all.push((name, value));
    }
    let started = Instant::now();
    let mut process = ChildProcess::spawn(OPERATOR_BIN, &["browser-login"], &all);
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "browser-login still running after 90 s:\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Run {
        status,
        termination_log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        output: process.output(),
    }
}

/// Browser.close must make the sidecar exit: that is what lets the login Job complete.
pub async fn assert_chromium_exits(chromium: &mut ChildProcess) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while chromium.try_wait().is_none() {
        assert!(
            Instant::now() < deadline,
            "Chromium still running 5 s after browser-login ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exchanges a `tokenId` as the operator would and checks Dhan issued a token for the client.
pub async fn assert_consumable(bed: &Bed, token_id: &str) {
    let consumed: Value = reqwest::Client::new()
        .get(format!(
            "{}/app/consumeApp-consent?tokenId={token_id}",
            bed.mock.url
        ))
        .header("app_id", APP_ID)
        .header("app_secret", APP_SECRET)
        .send()
        .await
        .expect("consumeApp-consent")
        .json()
        .await
        .expect("consume JSON");
    assert!(
        consumed["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "tokenId not accepted: {consumed}"
    );
    assert_eq!(
        consumed["dhanClientId"],
        bed.client_id.as_str(),
        "{consumed}"
    );
}

/// How many times the page posted `step` (`mobile`, `password`, `totp`, `pin`) for the client.
pub async fn submissions(bed: &Bed, step: &str) -> usize {
    bed.mock
        .calls_to(&format!("login-{step}"), &bed.client_id)
        .await
        .len()
}

/// TOTP codes of `secret` around now: what browser-login may have typed.
fn recent_codes(secret: &str) -> Vec<String> {
    let key = TotpKey::parse(secret).expect("test secret is base32");
    let now = step_at(chrono::Utc::now());
    (now.saturating_sub(4)..=now + 1)
        .map(|step| key.code_for_step(step))
        .collect()
}

/// Neither the termination log nor the output holds a credential or a code typed.
pub fn assert_no_credentials(run: &Run, extra: &[&str]) {
    let mut codes = recent_codes(TOTP_SECRET);
    codes.extend(recent_codes(WRONG_TOTP_SECRET));
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let fixed = [MOBILE, PIN, PASSWORD, TOTP_SECRET];
    for secret in fixed.iter().chain(extra).chain(&codes) {
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

/// Logs in on the page variant `page` and checks the whole contract of a success.
pub async fn logs_in_on(page: Value, env: &[(&str, &str)]) -> Bed {
    logged_in(bed(page).await, env).await
}

/// [`logs_in_on`] with Dhan taking 2.5 s to answer the first call to each of `endpoints`.
pub async fn logs_in_on_slow(page: Value, endpoints: &[&str]) -> Bed {
    let bed = bed(page).await;
    for endpoint in endpoints {
        let fault = json!({"endpoint": endpoint, "kind": "latency", "latencyMs": 2500});
        bed.mock.fault(fault).await;
    }
    logged_in(bed, &[]).await
}

async fn logged_in(mut bed: Bed, env: &[(&str, &str)]) -> Bed {
    let page = bed.login_url.clone();
    let run = browser_login(&bed, env).await;
    assert!(
        run.status.success(),
        "{page}: {}\n{}",
        run.termination_log,
        run.output
    );
    let token_id = run.token_id();
    assert_consumable(&bed, &token_id).await;
    assert_chromium_exits(&mut bed.chromium.process).await;
    assert_no_credentials(&run, &[]);
    assert!(
        !run.output.contains(&token_id),
        "the tokenId belongs in the termination log only, not in logs"
    );
    bed
}
