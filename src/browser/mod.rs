//! The browser half of the API-key flow (docs/dhan-api.md §3 step 2), run as `dhan-operator
//! browser-login` in a login Job next to a headless Chromium sidecar.
//!
//! - [`config`]: the environment contract set by the Job's Pod spec.
//! - [`steps`]: reading the page — which fields it shows and for what, texts, submit buttons.
//! - [`classify`]: what a message on the page means (wrong PIN, session expired, locked out …).
//! - [`origin`]: the hosts where credentials may be typed.
//! - [`driver`], [`network`], [`walk`], [`typing`]: the DevTools session (chromiumoxide) that
//!   watches the network, types, clicks and intercepts.
//! - [`mod@error`]: why a login failed, without credentials.
//! - [`report`]: the result as the termination message, shared with the operator that reads it.
//!
//! The Job needs no Kubernetes API access and never sees the app's credentials.

pub mod classify;
pub mod config;
pub mod driver;
pub mod error;
pub mod network;
pub mod origin;
pub mod progress;
pub mod report;
pub mod steps;
pub mod typing;
pub mod walk;

use std::path::Path;

// tokio's `Instant`: the deadline follows tokio's clock, paused and advanced in tests.
use tokio::time::{Instant, timeout_at};
use tracing::{error, info};

pub use config::LoginConfig;
pub use error::{FailureClass, LoginFailure, Step};
pub use report::{LoginReport, TokenId};

use crate::clock::Clock;
use crate::dhan::totp::step_at;
use driver::Session;
use progress::Progress;

/// Logs in through the Chromium at `config.cdp_url` and returns the redirect's `tokenId`.
/// Always ends with CDP `Browser.close` once connected, so the sidecar exits. `clock` picks the
/// TOTP codes.
pub async fn login(config: LoginConfig, clock: &dyn Clock) -> Result<TokenId, LoginFailure> {
    // chromiumoxide fetches `/json/version` with the crate's reqwest, built without a default
    // TLS provider; building any client panics until one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let first_step = step_at(clock.now());
    let result = login_until(&config, clock, Instant::now() + config.timeout).await;
    result.map_err(|e| {
        let mut secrets = config.secrets();
        // Codes typed during the login, should the page have echoed one.
        secrets
            .extend((first_step..=step_at(clock.now()) + 1).map(|s| config.totp.code_for_step(s)));
        e.redacted(&secrets.iter().map(String::as_str).collect::<Vec<_>>())
    })
}

async fn login_until(
    config: &LoginConfig,
    clock: &dyn Clock,
    deadline: Instant,
) -> Result<TokenId, LoginFailure> {
    let Ok(session) = timeout_at(deadline, Session::connect(&config.cdp_url)).await else {
        return Err(LoginFailure::timeout(Step::Connect));
    };
    let progress = Progress::new(Step::LoginPage);
    let result = timeout_at(deadline, session.log_in(config, clock, &progress))
        .await
        .unwrap_or_else(|_| {
            let mut failure = LoginFailure::timeout(progress.get());
            failure.reached_credential_step = progress.reached_credential_step();
            Err(failure)
        });
    session.close().await;
    result
}

/// `dhan-operator browser-login`: reads [`LoginConfig`] from the environment, logs in, writes
/// the termination log, and returns the process exit code (0 success, 1 login failed, 2 bad
/// configuration).
pub async fn run_from_env(clock: &dyn Clock) -> i32 {
    let lookup = |name: &str| std::env::var(name).ok();
    let termination_log = config::termination_log_path(&lookup);
    let result = match LoginConfig::from_lookup(lookup) {
        Ok(config) => login(config, clock).await,
        Err(e) => Err(e),
    };
    report(&termination_log, result)
}

/// Writes the outcome where Kubernetes picks up the termination message; returns the exit code.
fn report(termination_log: &Path, result: Result<TokenId, LoginFailure>) -> i32 {
    let code = match &result {
        Ok(_) => 0,
        Err(failure) if failure.class == FailureClass::Config => 2,
        Err(_) => 1,
    };
    match &result {
        Ok(_) => info!("login succeeded; tokenId captured"),
        Err(failure) => error!(
            reason = failure.class.reason(),
            reached_credential_step = failure.reached_credential_step,
            "browser login failed: {failure}"
        ),
    }
    let report = match result {
        Ok(token_id) => LoginReport::LoggedIn(token_id),
        Err(failure) => LoginReport::Failed(failure),
    };
    if let Err(e) = std::fs::write(termination_log, report.to_message()) {
        error!(path = %termination_log.display(), error = %e, "cannot write the termination log");
        return code.max(1);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(path: &Path) -> LoginReport {
        LoginReport::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn success_writes_a_report_with_the_token_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        assert_eq!(report(&path, Ok(TokenId::new("tok-123").unwrap())), 0);
        match written(&path) {
            LoginReport::LoggedIn(token_id) => assert_eq!(token_id.expose(), "tok-123"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_writes_a_typed_report_and_exits_non_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let mut rejected = LoginFailure::rejected(Step::Pin, FailureClass::Pin, "Invalid PIN");
        rejected.reached_credential_step = true;
        assert_eq!(report(&path, Err(rejected.clone())), 1);
        match written(&path) {
            LoginReport::Failed(failure) => assert_eq!(failure, rejected),
            other => panic!("{other:?}"),
        }
        let config = LoginFailure::config("DHAN_PIN is not set");
        assert_eq!(report(&path, Err(config)), 2);
    }

    #[test]
    fn unwritable_termination_log_fails_even_a_successful_login() {
        let path = Path::new("/nonexistent-dir/termination-log");
        assert_eq!(report(path, Ok(TokenId::new("tok-123").unwrap())), 1);
    }
}
