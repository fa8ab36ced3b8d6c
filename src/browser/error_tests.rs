use super::*;

const MOBILE: &str = "9876543210";
const PIN: &str = "482913";
const SECRET: &str = "JBSWY3DPEHPK3PXP";
const CODE: &str = "731904";

fn every_failure(text: &str) -> Vec<LoginFailure> {
    let steps = [
        Step::Connect,
        Step::LoginPage,
        Step::Mobile,
        Step::Password,
        Step::Totp,
        Step::Pin,
        Step::TotpOrPin,
        Step::Redirect,
    ];
    let mut all = vec![
        LoginFailure::config(text),
        LoginFailure::no_token_id(),
        LoginFailure::password_not_configured(),
        LoginFailure::page_unavailable(502, text),
    ];
    for step in steps {
        all.push(LoginFailure::no_field(step));
        all.push(LoginFailure::timeout(step));
        all.push(LoginFailure::unexpected(step, text));
        all.push(LoginFailure::browser(step, text));
        all.push(LoginFailure::origin_refused(step, text));
        for class in [
            FailureClass::Pin,
            FailureClass::Totp,
            FailureClass::TooManyAttempts,
            FailureClass::Unknown,
        ] {
            all.push(LoginFailure::rejected(step, class, text));
        }
    }
    all
}

#[test]
fn no_failure_leaks_credentials_once_redacted() {
    let echoed = format!("Invalid PIN {PIN} for +91 {MOBILE}, key {SECRET}, code {CODE}");
    for failure in every_failure(&echoed) {
        let line = failure.redacted(&[MOBILE, PIN, SECRET, CODE]).to_string();
        for secret in [MOBILE, PIN, SECRET, CODE] {
            assert!(!line.contains(secret), "{secret} leaked in {line:?}");
        }
        assert!(!line.contains('\n'));
    }
}

#[test]
fn messages_name_the_step_and_the_page_text() {
    let cases = [
        (
            LoginFailure::rejected(Step::Pin, FailureClass::Pin, "Invalid PIN"),
            "PIN rejected: Invalid PIN",
        ),
        (
            LoginFailure::rejected(
                Step::Pin,
                FailureClass::TooManyAttempts,
                "Account locked for the day",
            ),
            "PIN rejected (too many attempts): Account locked for the day",
        ),
        (
            LoginFailure::rejected(Step::Totp, FailureClass::Unknown, "Oops"),
            "TOTP rejected (unrecognised message): Oops",
        ),
        (LoginFailure::no_field(Step::Pin), "PIN: no PIN field found"),
        (
            LoginFailure::timeout(Step::Totp),
            "timed out at the TOTP step",
        ),
        (
            LoginFailure::page_unavailable(502, "502 Bad Gateway"),
            "login page unavailable (HTTP 502): 502 Bad Gateway",
        ),
        (
            LoginFailure::config("DHAN_PIN is not set"),
            "configuration: DHAN_PIN is not set",
        ),
    ];
    for (failure, line) in cases {
        assert_eq!(failure.to_string(), line);
    }
    let origin = LoginFailure::origin_refused(Step::LoginPage, "https://evil.example");
    assert!(
        origin
            .to_string()
            .starts_with("login page: the page went to https://evil.example"),
        "{origin}"
    );
}

#[test]
fn only_refusals_of_what_the_user_configured_are_permanent() {
    for class in [
        FailureClass::Pin,
        FailureClass::Totp,
        FailureClass::TooManyAttempts,
        FailureClass::OriginRefused,
    ] {
        assert!(class.is_permanent(), "{class:?}");
    }
    for class in [
        FailureClass::SessionExpired,
        FailureClass::Timeout,
        FailureClass::PageUnavailable,
        FailureClass::Unknown,
        FailureClass::Browser,
    ] {
        assert!(!class.is_permanent(), "{class:?}");
    }
}

#[test]
fn redaction_replaces_longest_first_and_folds_lines() {
    assert_eq!(
        redact("a\n 919876543210 b", &["9876543210", "919876543210"]),
        "a <redacted> b"
    );
    // A one-digit "secret" would shred ordinary text; such values are not credentials.
    assert_eq!(redact("step 1 of 3", &["1", ""]), "step 1 of 3");
}
