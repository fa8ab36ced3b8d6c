//! The browser half of the API-key flow (docs/dhan-api.md §3 step 2), run as `dhan-operator
//! browser-login` in a login Job next to a headless Chromium sidecar.
//!
//! - [`config`]: the environment contract set by the Job's Pod spec.
//! - [`steps`]: reading the page — which fields it shows and for what, errors, submit buttons.
//! - [`driver`]: the DevTools session (chromiumoxide) that types, clicks and intercepts.
//! - [`mod@error`]: why a login failed, without credentials.
//!
//! The result goes to the container's termination log — the `tokenId` alone on success, a
//! one-line reason on failure — where the operator reads it from the finished Pod; the Job needs
//! no Kubernetes API access and never sees the app's credentials.

pub mod config;
pub mod driver;
pub mod error;
pub mod steps;

use std::path::Path;

use chrono::Utc;
use tokio::time::{Instant, timeout_at};
use tracing::{error, info};

pub use config::LoginConfig;
pub use error::{LoginError, Step};

use crate::dhan::totp::step_at;
use driver::{Progress, Session};

/// Logs in through the Chromium at `config.cdp_url` and returns the redirect's `tokenId`.
/// Always ends with CDP `Browser.close` once connected, so the sidecar exits.
pub async fn login(config: LoginConfig) -> Result<String, LoginError> {
    // chromiumoxide fetches `/json/version` with the crate's reqwest, built without a default
    // TLS provider; building any client panics until one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let first_step = step_at(Utc::now());
    let result = login_until(&config, Instant::now() + config.timeout).await;
    result.map_err(|e| {
        let mut secrets = config.secrets();
        // Codes typed during the login, should the page have echoed one.
        secrets
            .extend((first_step..=step_at(Utc::now()) + 1).map(|s| config.totp.code_for_step(s)));
        e.redacted(&secrets.iter().map(String::as_str).collect::<Vec<_>>())
    })
}

async fn login_until(config: &LoginConfig, deadline: Instant) -> Result<String, LoginError> {
    let Ok(session) = timeout_at(deadline, Session::connect(&config.cdp_url)).await else {
        return Err(LoginError::Timeout {
            step: Step::Connect,
        });
    };
    let progress = Progress::new(Step::LoginPage);
    let result = timeout_at(deadline, session.log_in(config, &progress))
        .await
        .unwrap_or_else(|_| {
            Err(LoginError::Timeout {
                step: progress.get(),
            })
        });
    session.close().await;
    result
}

/// `dhan-operator browser-login`: reads [`LoginConfig`] from the environment, logs in, writes
/// the termination log, and returns the process exit code (0 success, 1 login failed, 2 bad
/// configuration).
pub async fn run_from_env() -> i32 {
    let lookup = |name: &str| std::env::var(name).ok();
    let termination_log = config::termination_log_path(&lookup);
    let result = match LoginConfig::from_lookup(lookup) {
        Ok(config) => login(config).await,
        Err(e) => Err(e),
    };
    report(&termination_log, result)
}

/// Writes the outcome where Kubernetes picks up the termination message; returns the exit code.
fn report(termination_log: &Path, result: Result<String, LoginError>) -> i32 {
    let (text, code) = match &result {
        Ok(token_id) => (token_id.clone(), 0),
        Err(e @ LoginError::Config(_)) => (e.to_string(), 2),
        Err(e) => (e.to_string(), 1),
    };
    match &result {
        Ok(_) => info!("login succeeded; tokenId captured"),
        Err(e) => error!(reason = e.reason(), "browser login failed: {e}"),
    }
    if let Err(e) = std::fs::write(termination_log, text) {
        error!(path = %termination_log.display(), error = %e, "cannot write the termination log");
        return code.max(1);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_writes_only_the_token_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        assert_eq!(report(&path, Ok("tok-123".into())), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok-123");
    }

    #[test]
    fn failure_writes_one_line_and_exits_non_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let rejected = LoginError::Rejected {
            step: Step::Pin,
            page_message: "Invalid PIN".into(),
        };
        assert_eq!(report(&path, Err(rejected)), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "PIN rejected: Invalid PIN"
        );
        let config = LoginError::Config("DHAN_PIN is not set".into());
        assert_eq!(report(&path, Err(config)), 2);
    }

    #[test]
    fn unwritable_termination_log_fails_even_a_successful_login() {
        let path = Path::new("/nonexistent-dir/termination-log");
        assert_eq!(report(path, Ok("tok-123".into())), 1);
    }
}
