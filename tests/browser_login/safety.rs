//! Logins that must stop without harm: every refusal is named by its step and class within
//! seconds (never left to the login timeout), a refused value is never typed a second time, a
//! page on another origin gets no keystroke, and Chromium keeps its own sandbox when it runs as
//! the Job's non-root user.

use std::time::{Duration, Instant};

use dhan_operator::browser::{FailureClass, Step};
use futures::StreamExt;
use serde_json::json;

use super::support::{ChildProcess, free_port};
use super::{
    Bed, PASSWORD, WRONG_TOTP_SECRET, assert_chromium_exits, assert_no_credentials, bed,
    browser_login, consent_url, submissions,
};

const WRONG_PIN: &str = "913370";

async fn assert_nothing_redirected(bed: &Bed) {
    let calls = bed
        .mock
        .calls_to("consentApp-redirect", &bed.client_id)
        .await;
    assert!(calls.is_empty(), "no redirect after a refusal: {calls:?}");
}

/// On the plainest page (text labels, plain-text errors) and with a login timeout of 45 s, a
/// wrong PIN comes back as a PIN refusal with the page's words, counted toward the lockout.
#[tokio::test]
async fn a_wrong_pin_is_reported_as_a_pin_error_not_a_timeout() {
    let page = json!({"loginPage": {"labels": "text", "errors": "plain"}});
    let mut bed = bed(page).await;
    let run = browser_login(&bed, &[("DHAN_PIN", WRONG_PIN), ("LOGIN_TIMEOUT", "45s")]).await;
    assert_eq!(run.status.code(), Some(1));
    let failure = run.failure();
    assert_eq!(
        (failure.step, failure.class),
        (Step::Pin, FailureClass::Pin),
        "{failure}"
    );
    assert_eq!(failure.page_text.as_deref(), Some("Invalid PIN"));
    assert!(failure.reached_credential_step);
    assert_eq!(failure.to_string(), "PIN rejected: Invalid PIN");
    assert_eq!(submissions(&bed, "pin").await, 1, "the wrong PIN went once");
    assert_nothing_redirected(&bed).await;
    assert_no_credentials(&run, &[WRONG_PIN]);
    assert_chromium_exits(&mut bed.chromium.process).await;
}

#[tokio::test]
async fn a_wrong_totp_key_is_reported_as_a_totp_error() {
    let page = json!({"loginOrder": "pin-first", "loginInputs": "single",
        "loginPage": {"errors": "plain", "submit": "proceed"}});
    let bed = bed(page).await;
    let run = browser_login(&bed, &[("DHAN_TOTP_SECRET", WRONG_TOTP_SECRET)]).await;
    let failure = run.failure();
    assert_eq!(
        (failure.step, failure.class),
        (Step::Totp, FailureClass::Totp),
        "{failure}"
    );
    assert!(failure.reached_credential_step);
    assert_eq!(submissions(&bed, "totp").await, 1);
    assert_no_credentials(&run, &[WRONG_TOTP_SECRET]);
}

/// After Dhan locks the client for the day, the next login is told so at its first credential
/// step — a class of its own, so the operator can stop instead of trying again.
#[tokio::test]
async fn a_locked_account_is_reported_as_too_many_attempts() {
    let page = json!({"loginAttemptsBeforeLock": 1, "loginPage": {"errors": "plain"}});
    let mut bed = bed(page).await;
    let first = browser_login(&bed, &[("DHAN_PIN", WRONG_PIN)]).await;
    assert_eq!(first.failure().class, FailureClass::Pin);
    bed.login_url = consent_url(&bed.mock, &bed.client_id).await;
    bed.chromium = super::support::Chromium::start();
    let second = browser_login(&bed, &[]).await;
    let failure = second.failure();
    assert_eq!(failure.class, FailureClass::TooManyAttempts, "{failure}");
    assert_eq!(failure.step, Step::Totp);
    assert!(
        failure.to_string().contains("too many attempts"),
        "{failure}"
    );
    assert_eq!(
        submissions(&bed, "pin").await,
        1,
        "no PIN typed while locked"
    );
}

#[tokio::test]
async fn a_session_that_expires_midway_is_reported_as_expired() {
    let bed = bed(json!({"loginPage": {"labels": "text", "errors": "plain"}})).await;
    let message = "Your session has expired. Please login again.";
    bed.mock
        .fault(json!({"endpoint": "login-totp", "kind": "error200", "message": message}))
        .await;
    let failure = browser_login(&bed, &[]).await.failure();
    assert_eq!(failure.class, FailureClass::SessionExpired, "{failure}");
    assert_eq!(failure.step, Step::Totp);
    assert_eq!(failure.page_text.as_deref(), Some(message));
}

#[tokio::test]
async fn a_dead_consent_is_reported_as_an_expired_session() {
    let mut bed = bed(json!({})).await;
    bed.login_url = format!(
        "{}/login/consentApp-login?consentAppId=no-such-consent",
        bed.mock.url
    );
    let run = browser_login(&bed, &[]).await;
    assert_eq!(run.status.code(), Some(1));
    let failure = run.failure();
    assert_eq!(failure.step, Step::LoginPage);
    assert_eq!(failure.class, FailureClass::SessionExpired, "{failure}");
    assert_eq!(
        failure.page_text.as_deref(),
        Some("Invalid or expired consent")
    );
    assert!(!failure.reached_credential_step);
    assert_chromium_exits(&mut bed.chromium.process).await;
}

#[tokio::test]
async fn a_login_page_that_is_down_is_reported_as_unavailable() {
    let bed = bed(json!({})).await;
    bed.mock
        .fault(json!({"endpoint": "consentApp-login", "kind": "http502"}))
        .await;
    let failure = browser_login(&bed, &[]).await.failure();
    assert_eq!(failure.class, FailureClass::PageUnavailable, "{failure}");
    assert!(failure.to_string().contains("HTTP 502"), "{failure}");
}

/// The login page sends the browser to another origin (the mock under its other loopback name):
/// the navigation is blocked and nothing is typed anywhere.
#[tokio::test]
async fn a_page_that_redirects_to_another_origin_gets_no_keystrokes() {
    let mut bed = bed(json!({"loginPage": {"redirect": "foreign-origin"}})).await;
    let run = browser_login(&bed, &[]).await;
    let failure = run.failure();
    assert_eq!(failure.class, FailureClass::OriginRefused, "{failure}");
    assert!(!failure.reached_credential_step);
    assert!(
        failure.to_string().contains("http://localhost:"),
        "{failure}"
    );
    let calls = bed.mock.calls().await;
    let page_loads: Vec<&str> = calls
        .iter()
        .filter(|c| c["endpoint"] == "consentApp-login")
        .map(|c| c["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        page_loads,
        ["foreign_redirect"],
        "the foreign page never loaded"
    );
    let typed: Vec<_> = calls
        .iter()
        .filter(|c| {
            c["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("login-"))
        })
        .collect();
    assert!(typed.is_empty(), "keystrokes reached a page: {typed:?}");
    assert_chromium_exits(&mut bed.chromium.process).await;
}

#[tokio::test]
async fn a_password_step_without_a_configured_password_types_nothing() {
    let bed = bed(json!({"password": PASSWORD})).await;
    let failure = browser_login(&bed, &[]).await.failure();
    assert_eq!(
        (failure.step, failure.class),
        (Step::Password, FailureClass::Password)
    );
    assert!(!failure.reached_credential_step);
    assert!(failure.to_string().contains("DHAN_PASSWORD"), "{failure}");
    assert_eq!(submissions(&bed, "password").await, 0);
}

#[tokio::test]
async fn unreachable_chromium_times_out_naming_the_connection() {
    let mut bed = bed(json!({})).await;
    bed.chromium.cdp_url = format!("http://127.0.0.1:{}", free_port());
    let run = browser_login(&bed, &[("LOGIN_TIMEOUT", "2s")]).await;
    assert_eq!(run.status.code(), Some(1));
    let failure = run.failure();
    assert_eq!(
        (failure.step, failure.class),
        (Step::Connect, FailureClass::Timeout)
    );
    assert_eq!(
        failure.to_string(),
        "timed out at the Chromium connection step"
    );
}

/// A Chromium started as the login Job's user (UID 65532), without `--no-sandbox`.
struct SandboxedChromium {
    process: ChildProcess,
    cdp_url: String,
    profile: tempfile::TempDir,
}

fn start_sandboxed_chromium() -> SandboxedChromium {
    use std::os::unix::fs::PermissionsExt;
    let profile = tempfile::Builder::new()
        .prefix("chromium-sandboxed-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(profile.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let dir = profile.path().display().to_string();
    let process = ChildProcess::spawn(
        "setpriv",
        &[
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "--",
            "/usr/bin/chromium",
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={dir}/profile"),
            "--remote-debugging-address=127.0.0.1",
            &format!("--remote-debugging-port={port}"),
        ],
        &[("HOME", dir.as_str())],
    );
    SandboxedChromium {
        process,
        cdp_url: format!("http://127.0.0.1:{port}"),
        profile,
    }
}

/// `(uid, Seccomp mode)` of the renderer processes of the Chromium using `profile`.
fn renderers(profile: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("--type=renderer") || !cmdline.contains(profile) {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let field = |name: &str| -> Option<u32> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        if let (Some(uid), Some(seccomp)) = (field("Uid:"), field("Seccomp:")) {
            found.push((uid, seccomp));
        }
    }
    found
}

/// Opens a tab in the Chromium at `cdp_url` and returns its renderers' `(uid, Seccomp)`.
async fn renderers_with_a_tab(cdp_url: &str, profile: &str) -> Vec<(u32, u32)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (browser, mut handler) = loop {
        match chromiumoxide::Browser::connect(cdp_url).await {
            Ok(connected) => break connected,
            Err(e) if Instant::now() > deadline => panic!("Chromium at {cdp_url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let _page = browser.new_page("about:blank").await.expect("a tab");
    let seen = loop {
        let seen = renderers(profile);
        if !seen.is_empty() || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pump.abort();
    seen
}

/// Chromium's own sandbox works for the Job's UID where user namespaces are allowed (as here):
/// its renderers run under a seccomp-BPF filter, which `--no-sandbox` turns off — and a login
/// through the sandboxed Chromium succeeds.
#[tokio::test]
async fn chromium_keeps_its_sandbox_as_the_jobs_user() {
    let sandboxed = start_sandboxed_chromium();
    let profile = sandboxed.profile.path().display().to_string();
    let seen = renderers_with_a_tab(&sandboxed.cdp_url, &profile).await;
    assert!(
        !seen.is_empty(),
        "no renderer found:\n{}",
        sandboxed.process.output()
    );
    assert!(
        seen.iter()
            .all(|&(uid, seccomp)| uid == 65532 && seccomp == 2),
        "renderers (uid, seccomp) = {seen:?}"
    );
    drop(sandboxed);

    // The same check on the unsandboxed test Chromium tells the difference.
    let mut bed = bed(json!({})).await;
    let unsandboxed = renderers_with_a_tab(&bed.chromium.cdp_url, "chromium-profile-").await;
    assert!(
        unsandboxed.iter().any(|&(_, seccomp)| seccomp == 0),
        "--no-sandbox renderers run without a filter: {unsandboxed:?}"
    );

    let sandboxed = start_sandboxed_chromium();
    bed.chromium.cdp_url = sandboxed.cdp_url.clone();
    bed.login_url = consent_url(&bed.mock, &bed.client_id).await;
    let run = browser_login(&bed, &[]).await;
    assert!(
        run.status.success(),
        "{}\n{}",
        run.termination_log,
        run.output
    );
    let mut process = sandboxed.process;
    assert_chromium_exits(&mut process).await;
}
