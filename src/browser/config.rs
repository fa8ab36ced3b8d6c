//! The `browser-login` environment contract, set by the login Job's Pod spec.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::decision::duration::parse_duration;
use crate::dhan::TotpKey;

use super::error::LoginFailure;
use super::origin::AllowedHosts;

/// Where Chromium's DevTools endpoint listens in the login Pod (the sidecar).
pub const DEFAULT_CDP_URL: &str = "http://127.0.0.1:9222";
/// Whole login, from the first connection attempt to the captured `tokenId`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Kubernetes reads a container's termination message from here by default.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// Everything one browser login needs. `Debug` shows no credential.
#[derive(Clone)]
pub struct LoginConfig {
    /// `DHAN_LOGIN_URL`: `{auth}/login/consentApp-login?consentAppId=<id>` (docs/dhan-api.md §3).
    pub login_url: String,
    /// `DHAN_REDIRECT_URL_PREFIX`: the app's redirect URL. Unset: any URL with `tokenId=`.
    pub redirect_prefix: Option<String>,
    /// `DHAN_LOGIN_ALLOWED_HOSTS` plus the login URL's own host: where credentials may be typed.
    pub allowed_hosts: AllowedHosts,
    /// `DHAN_MOBILE`.
    pub mobile: String,
    /// `DHAN_PIN`.
    pub pin: String,
    /// `DHAN_PASSWORD`, for page variants with a password step (docs/dhan-api.md §3); optional.
    pub password: Option<String>,
    /// `DHAN_TOTP_SECRET`, parsed.
    pub totp: TotpKey,
    /// `DHAN_TOTP_AFTER_STEP`: the last 30-second TOTP step already used for this client. Dhan
    /// rejects a step used twice as a replay (docs/dhan-api.md §1), so the login waits for a later one.
    pub totp_after_step: Option<u64>,
    /// `DHAN_TOTP_SECRET` as given, kept only to redact it from error texts.
    pub(crate) totp_secret_text: String,
    /// `CDP_URL`.
    pub cdp_url: String,
    /// `LOGIN_TIMEOUT` (Go-style duration, e.g. `120s`).
    pub timeout: Duration,
    /// `TERMINATION_LOG`.
    pub termination_log: PathBuf,
}

impl LoginConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<LoginConfig, LoginFailure> {
        LoginConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; empty values count as unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<LoginConfig, LoginFailure> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str| {
            get(name).ok_or_else(|| LoginFailure::config(format!("{name} is not set")))
        };
        let login_url = required("DHAN_LOGIN_URL")?;
        let parsed = url::Url::parse(&login_url)
            .map_err(|e| LoginFailure::config(format!("DHAN_LOGIN_URL is not a URL: {e}")))?;
        let allowed_hosts = AllowedHosts::new(&parsed, get("DHAN_LOGIN_ALLOWED_HOSTS").as_deref())
            .map_err(|e| LoginFailure::config(format!("DHAN_LOGIN_ALLOWED_HOSTS: {e}")))?;
        let mobile = required("DHAN_MOBILE")?;
        if national_mobile(&mobile).is_none() {
            return Err(LoginFailure::config(
                "DHAN_MOBILE is not a 10-digit Indian mobile number (+91 or a leading 0 may precede it)",
            ));
        }
        let pin = required("DHAN_PIN")?.trim().to_owned();
        let password = get("DHAN_PASSWORD");
        let totp_secret_text = required("DHAN_TOTP_SECRET")?;
        let totp = TotpKey::parse(&totp_secret_text)
            .map_err(|e| LoginFailure::config(format!("DHAN_TOTP_SECRET: {e}")))?;
        let timeout = match get("LOGIN_TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_duration(&text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    LoginFailure::config(format!(
                        "LOGIN_TIMEOUT {text:?} is not a duration such as 120s or 2m"
                    ))
                })?,
        };
        let totp_after_step = match get("DHAN_TOTP_AFTER_STEP") {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                LoginFailure::config(format!(
                    "DHAN_TOTP_AFTER_STEP {text:?} is not a TOTP step number"
                ))
            })?),
        };
        Ok(LoginConfig {
            totp_after_step,
            login_url,
            redirect_prefix: get("DHAN_REDIRECT_URL_PREFIX"),
            allowed_hosts,
            mobile,
            pin,
            password,
            totp,
            totp_secret_text,
            cdp_url: get("CDP_URL").unwrap_or_else(|| DEFAULT_CDP_URL.into()),
            timeout,
            termination_log: termination_log_path(&lookup),
        })
    }

    /// The mobile number as the page's field takes it: the ten national digits
    /// (docs/dhan-api.md §3: no `+91`).
    pub fn mobile_for_field(&self) -> String {
        national_mobile(&self.mobile).unwrap_or_else(|| mobile_digits(&self.mobile))
    }

    /// Texts that must never appear in an error message.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            self.mobile.clone(),
            self.mobile_for_field(),
            self.pin.clone(),
            self.totp_secret_text.clone(),
        ];
        secrets.extend(self.password.clone());
        secrets
    }
}

impl fmt::Debug for LoginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginConfig")
            .field("login_url", &self.login_url)
            .field("redirect_prefix", &self.redirect_prefix)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("mobile", &"<redacted>")
            .field("pin", &"<redacted>")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("totp", &self.totp)
            .field("totp_after_step", &self.totp_after_step)
            .field("cdp_url", &self.cdp_url)
            .field("timeout", &self.timeout)
            .field("termination_log", &self.termination_log)
            .finish()
    }
}

/// `TERMINATION_LOG`, read on its own so a configuration error can still be reported there.
pub fn termination_log_path(lookup: &impl Fn(&str) -> Option<String>) -> PathBuf {
    lookup("TERMINATION_LOG")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TERMINATION_LOG.into())
        .into()
}

/// The ten-digit national number the login page's mobile box takes (docs/dhan-api.md §3), from
/// the ways people write it: `+91 98765 43210`, `091-9876543210`, `09876543210`, `9876543210`.
/// `None` for anything else — cutting an unknown prefix could type someone else's number.
pub fn national_mobile(mobile: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_digit() || " -+().".contains(c);
    if !mobile.trim().chars().all(allowed) {
        return None;
    }
    let digits: String = mobile.chars().filter(char::is_ascii_digit).collect();
    let national = match digits.len() {
        10 => digits.as_str(),
        11 => digits.strip_prefix('0')?,
        12 => digits.strip_prefix("91")?,
        13 => digits.strip_prefix("091")?,
        _ => return None,
    };
    // Indian mobile numbers start with 6, 7, 8 or 9.
    national
        .starts_with(['6', '7', '8', '9'])
        .then(|| national.to_owned())
}

/// The national number when [`national_mobile`] finds one, else all the digits given (so a
/// length check still tells a short number).
pub fn mobile_digits(mobile: &str) -> String {
    national_mobile(mobile).unwrap_or_else(|| mobile.chars().filter(char::is_ascii_digit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const MINIMAL: &[(&str, &str)] = &[
        (
            "DHAN_LOGIN_URL",
            "https://auth.dhan.co/login/consentApp-login?consentAppId=c-1",
        ),
        ("DHAN_MOBILE", "+91 98765 43210"),
        ("DHAN_PIN", "482913"),
        ("DHAN_TOTP_SECRET", "JBSWY3DPEHPK3PXP"),
    ];

    #[test]
    fn defaults_apply_when_optional_variables_are_unset() {
        let config = LoginConfig::from_lookup(env(MINIMAL)).unwrap();
        assert_eq!(config.cdp_url, "http://127.0.0.1:9222");
        assert_eq!(config.timeout, Duration::from_secs(120));
        assert_eq!(
            config.termination_log,
            PathBuf::from("/dev/termination-log")
        );
        assert_eq!(config.redirect_prefix, None);
        assert_eq!(config.mobile_for_field(), "9876543210");
        assert_eq!(config.totp_after_step, None);
    }

    #[test]
    fn the_last_used_totp_step_is_a_number_or_an_error() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DHAN_TOTP_AFTER_STEP", "59123456"));
        let config = LoginConfig::from_lookup(env(&pairs)).unwrap();
        assert_eq!(config.totp_after_step, Some(59_123_456));
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DHAN_TOTP_AFTER_STEP", "soon"));
        let error = LoginConfig::from_lookup(env(&pairs)).unwrap_err();
        assert!(
            error.to_string().contains("DHAN_TOTP_AFTER_STEP"),
            "{error}"
        );
    }

    #[test]
    fn optional_variables_override_defaults() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("CDP_URL", "http://127.0.0.1:9333"),
            ("LOGIN_TIMEOUT", "45s"),
            ("TERMINATION_LOG", "/tmp/t"),
            ("DHAN_REDIRECT_URL_PREFIX", "https://example.invalid/cb"),
        ]);
        let config = LoginConfig::from_lookup(env(&pairs)).unwrap();
        assert_eq!(config.cdp_url, "http://127.0.0.1:9333");
        assert_eq!(config.timeout, Duration::from_secs(45));
        assert_eq!(config.termination_log, PathBuf::from("/tmp/t"));
        assert_eq!(
            config.redirect_prefix.as_deref(),
            Some("https://example.invalid/cb")
        );
    }

    #[test]
    fn configuration_errors_name_the_variable_but_not_its_value() {
        for (name, bad) in [
            ("DHAN_PIN", ""),
            ("DHAN_MOBILE", "98765"),
            ("DHAN_TOTP_SECRET", "not*base32*secret"),
            ("LOGIN_TIMEOUT", "soon"),
            ("DHAN_LOGIN_URL", "auth.dhan.co/login"),
        ] {
            let mut pairs: Vec<_> = MINIMAL
                .iter()
                .filter(|(k, _)| *k != name)
                .copied()
                .collect();
            pairs.push((name, bad));
            let error = LoginConfig::from_lookup(env(&pairs)).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(name), "{text}");
            if name != "LOGIN_TIMEOUT" && name != "DHAN_LOGIN_URL" && !bad.is_empty() {
                assert!(!text.contains(bad), "{text}");
            }
        }
    }

    #[test]
    fn debug_shows_no_credentials() {
        let config = LoginConfig::from_lookup(env(MINIMAL)).unwrap();
        let shown = format!("{config:?}");
        for secret in ["98765", "482913", "JBSWY3DPEHPK3PXP"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn the_mobile_number_is_typed_as_its_ten_national_digits() {
        for written in [
            "9876543210",
            "+91 98765 43210",
            "+91-98765-43210",
            "+919876543210",
            "91 9876543210",
            "098765 43210",
            "091 98765 43210",
            " (+91) 98765-43210 ",
        ] {
            assert_eq!(
                national_mobile(written).as_deref(),
                Some("9876543210"),
                "{written:?}"
            );
        }
        for wrong in [
            "12345",
            "98765432101",
            "+1 415 555 0100 12",
            "1234567890",
            "+44 7911 123456",
            "98765x43210",
            "",
        ] {
            assert_eq!(national_mobile(wrong), None, "{wrong:?}");
        }
        assert_eq!(mobile_digits("12345"), "12345");
    }

    #[test]
    fn a_password_is_optional_and_never_shown() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DHAN_PASSWORD", "s3cret-pass"));
        let config = LoginConfig::from_lookup(env(&pairs)).unwrap();
        assert_eq!(config.password.as_deref(), Some("s3cret-pass"));
        assert!(config.secrets().contains(&"s3cret-pass".to_string()));
        assert!(!format!("{config:?}").contains("s3cret-pass"));
        let config = LoginConfig::from_lookup(env(MINIMAL)).unwrap();
        assert_eq!(config.password, None);
    }

    #[test]
    fn the_login_host_is_always_allowed_and_more_can_be_added() {
        let config = LoginConfig::from_lookup(env(MINIMAL)).unwrap();
        assert!(config.allowed_hosts.allows_host("auth.dhan.co"));
        assert!(!config.allowed_hosts.allows_host("login.dhan.co"));
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DHAN_LOGIN_ALLOWED_HOSTS", "*.dhan.co"));
        let config = LoginConfig::from_lookup(env(&pairs)).unwrap();
        assert!(config.allowed_hosts.allows_host("login.dhan.co"));
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("DHAN_LOGIN_ALLOWED_HOSTS", "*"));
        let error = LoginConfig::from_lookup(env(&pairs)).unwrap_err();
        assert!(
            error.to_string().contains("DHAN_LOGIN_ALLOWED_HOSTS"),
            "{error}"
        );
    }
}
