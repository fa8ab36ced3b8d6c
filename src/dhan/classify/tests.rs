//! Classification tables: one row per answer Dhan gives (or is reported to give).
//! Rows are kept one per line on purpose (`rustfmt::skip`): they are data.

use super::*;
use crate::dhan::error::{ErrorKind, MINT_THROTTLE};

use ErrorKind::{ConsentLimit, Permanent, RetryAfter, TokenDead, TotpRejected, Unknown};

/// HTTP status, body, expected reason, expected kind.
type Row = (u16, &'static str, &'static str, ErrorKind);

const THROTTLE: ErrorKind = RetryAfter(MINT_THROTTLE);

fn check(rows: &[Row], classify: impl Fn(u16, &str) -> DhanError) {
    for (status, body, reason, kind) in rows {
        let error = classify(*status, body);
        assert_eq!(
            (error.reason(), error.kind()),
            (*reason, *kind),
            "HTTP {status} {body} → {error:?}"
        );
    }
}

fn mint(status: u16, body: &str) -> DhanError {
    classify_for(Endpoint::GenerateAccessToken, status, body)
}

const DH901: &str = r#"{"errorType":"Invalid_Authentication","errorCode":"DH-901","errorMessage":"Client ID or user generated access token is invalid or expired."}"#;
const DH905_RENEW: &str = r#"{"errorType":"INVALID_REQUEST","errorCode":"DH-905","errorMessage":"Renewal of token not allowed for this token type"}"#;
const DH906_INVALID_TOKEN: &str =
    r#"{"errorType":"Order_Error","errorCode":"DH-906","errorMessage":"Invalid Token"}"#;
const THROTTLE_BODY: &str =
    r#"{"status":"error","message":"Token can be generated once every 2 minutes."}"#;
const GATEWAY_RS9005: &str = r#"{"errorCode":"UNAUTHORIZED","httpStatus":"UNAUTHORIZED","internalErrorCode":"RS-9005","internalErrorMessage":"Unauthorized"}"#;

#[test]
fn invalid_pin_with_http_200_is_permanent() {
    let error = mint(200, r#"{"status":"error","message":"Invalid Pin"}"#);
    assert_eq!((error.reason(), error.kind()), ("InvalidPin", Permanent));
}

#[test]
fn invalid_totp_is_retried_once() {
    let error = mint(200, r#"{"status":"error","message":"Invalid TOTP"}"#);
    assert_eq!(
        (error.reason(), error.kind()),
        ("InvalidTotp", TotpRejected)
    );
}

#[test]
fn mint_throttle_means_retry_after_125_seconds() {
    let error = mint(200, THROTTLE_BODY);
    assert_eq!(error, DhanError::MintThrottled);
    assert_eq!(
        error.kind(),
        RetryAfter(std::time::Duration::from_secs(125))
    );
}

#[rustfmt::skip]
#[test]
fn mint_failures_seen_on_the_wire() {
    check(&[
        (200, r#"{"status":"error","message":"Invalid Pin"}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","message":"Invalid TOTP"}"#, "InvalidTotp", TotpRejected),
        (200, THROTTLE_BODY, "MintThrottled", THROTTLE),
        (400, r#"{"status":"error","message":"Invalid Pin"}"#, "InvalidPin", Permanent),
        (400, r#"{"status":"error","message":"Invalid TOTP"}"#, "InvalidTotp", TotpRejected),
        (429, THROTTLE_BODY, "MintThrottled", THROTTLE),
        (500, THROTTLE_BODY, "MintThrottled", THROTTLE),
        (200, r#"{"status":"error","message":"Something new"}"#, "InvalidCredentials", Permanent),
        (500, "", "ServerError", Unknown),
    ], mint);
}

/// docs/dhan-api.md §9: a refused PIN has more wordings than "Invalid Pin", and the next one is
/// unknown. Any refusal of a mint that is not clearly the throttle, a rate limit or a server
/// error is a refusal of the credentials: re-sending them on a timer can lock the account.
#[rustfmt::skip]
#[test]
fn every_other_mint_refusal_is_a_credential_refusal() {
    check(&[
        // Dhan's documented wording, and the one users report [doc, seen].
        (200, r#"{"status":"error","message":"Login failed. Please retry with valid credentials."}"#, "InvalidCredentials", Permanent),
        (200, r#"{"status":"error","message":"Validation failed. Please check your credentials and try again."}"#, "InvalidCredentials", Permanent),
        (400, r#"{"status":"error","message":"Login failed. Please retry with valid credentials."}"#, "InvalidCredentials", Permanent),
        (401, r#"{"status":"error","message":"Validation failed. Please check your credentials and try again."}"#, "InvalidCredentials", Permanent),
        (200, r#"{"status":"failed","remarks":"Login failed"}"#, "InvalidCredentials", Permanent),
        (200, r#"{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"Missing required fields"}"#, "InvalidCredentials", Permanent),
        (200, r#"{"errorType":"Invalid_Access","errorCode":"DH-902","errorMessage":"No API access"}"#, "InvalidCredentials", Permanent),
        (400, r#"{"data":{"811":"Something"},"status":"failed"}"#, "InvalidCredentials", Permanent),
        // A 4xx refuses whatever its body says.
        (403, "<html>Forbidden</html>", "InvalidCredentials", Permanent),
        (400, "", "InvalidCredentials", Permanent),
        // The precise reasons are kept.
        (200, r#"{"status":"error","message":"Invalid Pin"}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","message":"Invalid TOTP"}"#, "InvalidTotp", TotpRejected),
        (200, r#"{"status":"error","message":"Invalid Client ID"}"#, "InvalidClientId", Permanent),
        (200, r#"{"status":"error","message":"TOTP not enabled for this account"}"#, "TotpNotEnabled", Permanent),
        (200, r#"{"status":"error","message":"Your account is locked"}"#, "AccountLocked", Permanent),
    ], mint);
}

/// The exceptions to the rule above: Dhan said "later", or did not say anything readable.
#[rustfmt::skip]
#[test]
fn throttle_rate_limits_server_errors_and_unreadable_successes_are_not_refusals() {
    check(&[
        (200, THROTTLE_BODY, "MintThrottled", THROTTLE),
        (400, THROTTLE_BODY, "MintThrottled", THROTTLE),
        (429, "", "RateLimited", Unknown),
        (429, r#"{"status":"error","message":"Too many requests"}"#, "RateLimited", Unknown),
        (200, r#"{"errorType":"Rate_Limit","errorCode":"DH-904","errorMessage":"Too many requests"}"#, "RateLimited", Unknown),
        (200, r#"{"data":{"805":"Too many requests"},"status":"failed"}"#, "RateLimited", Unknown),
        (500, r#"{"status":"error","message":"Login failed. Please retry with valid credentials."}"#, "ServerError", Unknown),
        (502, "<html>Bad Gateway</html>", "ServerError", Unknown),
        (503, "", "ServerError", Unknown),
        (200, r#"{"errorType":"Internal_Server_Error","errorCode":"DH-908","errorMessage":"x"}"#, "ServerError", Unknown),
        // A 200 that is neither a token nor a readable error: Dhan may have minted (§1), so it
        // is not a refusal (and the previous token is checked, see `FailureKind`).
        (200, "", "UnexpectedResponse", Unknown),
        (200, r#"{"dhanClientId":"1000000001","dhanClientName":"ALICE"}"#, "UnexpectedResponse", Unknown),
        (200, r#"{"status":"success"}"#, "UnexpectedResponse", Unknown),
        (200, r#"{"dhanClientId":"1000000001","accessTo"#, "UnexpectedResponse", Unknown),
        (200, "<html>maintenance</html>", "UnexpectedResponse", Unknown),
    ], mint);
}

#[test]
fn a_credential_refusal_keeps_dhans_words_or_names_the_status() {
    let worded = mint(
        200,
        r#"{"status":"error","message":"Login failed. Please retry with valid credentials."}"#,
    );
    assert_eq!(
        worded.to_string(),
        "Dhan refused the client ID/PIN/TOTP (Login failed. Please retry with valid credentials.)"
    );
    assert_eq!(
        mint(403, "").to_string(),
        "Dhan refused the client ID/PIN/TOTP (HTTP 403)"
    );
}

#[rustfmt::skip]
#[test]
fn messages_match_case_and_punctuation_insensitively() {
    check(&[
        (200, r#"{"status":"error","message":"INVALID PIN."}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","message":"invalid_pin"}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","message":"  Invalid   pin!! "}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","errorCode":"INVALID_PIN"}"#, "InvalidPin", Permanent),
        (200, r#"{"status":"error","errorMessage":"Invalid-TOTP"}"#, "InvalidTotp", TotpRejected),
        (200, r#"{"status":"error","remarks":"invalid totp, try again"}"#, "InvalidTotp", TotpRejected),
        (200, r#"{"status":"error","message":"token CAN be generated ONCE every 2 minutes"}"#, "MintThrottled", THROTTLE),
        (200, r#"{"status":"error","message":"Token can be generated once every two minutes"}"#, "MintThrottled", THROTTLE),
    ], classify);
}

#[rustfmt::skip]
#[test]
fn similar_words_do_not_trigger_specific_rules() {
    check(&[
        (200, r#"{"status":"error","message":"Invalid pincode"}"#, "Rejected", Unknown),
        (200, r#"{"status":"error","message":"Token generated"}"#, "Rejected", Unknown),
        (200, r#"{"status":"error","message":"Client order rejected"}"#, "Rejected", Unknown),
        (200, r#"{"status":"error","message":"Unlocked account features"}"#, "Rejected", Unknown),
    ], classify);
}

/// docs/dhan-api.md §1 [?]: "some test fixtures use HTTP 401 with the DH-901 shape" on a mint.
/// Decision: permanent `InvalidCredentials` (see `classify_for`).
#[rustfmt::skip]
#[test]
fn mint_401_with_dh901_shape_is_permanent_invalid_credentials() {
    check(&[
        (401, DH901, "InvalidCredentials", Permanent),
        (200, DH901, "InvalidCredentials", Permanent),
        (401, r#"{"status":"error","message":"Unauthorized"}"#, "InvalidCredentials", Permanent),
        (401, "", "InvalidCredentials", Permanent),
        // Specific texts inside the DH-901 shape still win.
        (401, r#"{"errorType":"Invalid_Authentication","errorCode":"DH-901","errorMessage":"Invalid TOTP"}"#, "InvalidTotp", TotpRejected),
        (401, r#"{"errorType":"Invalid_Authentication","errorCode":"DH-901","errorMessage":"Invalid Pin"}"#, "InvalidPin", Permanent),
    ], mint);
}

#[test]
fn renew_of_app_token_is_permanent_not_a_server_error() {
    let error = classify_for(Endpoint::RenewToken, 500, DH905_RENEW);
    assert_eq!(error, DhanError::RenewNotAllowed);
    assert_eq!(
        (error.reason(), error.kind()),
        ("RenewNotAllowed", Permanent)
    );
}

#[rustfmt::skip]
#[test]
fn renew_failures() {
    check(&[
        (500, DH905_RENEW, "RenewNotAllowed", Permanent),
        (200, r#"{"errorType":"INVALID_REQUEST","errorCode":"DH-905","errorMessage":"renewal of token not allowed for this token type."}"#, "RenewNotAllowed", Permanent),
        // POST instead of GET (§2): a bad request, not a verdict on the token.
        (400, r#"{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"Missing required fields, bad values for parameters etc."}"#, "Rejected", Unknown),
        // An expired token cannot be renewed (§2): it is dead.
        (401, DH901, "TokenDead", TokenDead),
        (400, DH906_INVALID_TOKEN, "TokenDead", TokenDead),
    ], |s, b| classify_for(Endpoint::RenewToken, s, b));
}

#[rustfmt::skip]
#[test]
fn every_dead_token_signal_of_section_4() {
    check(&[
        (401, "", "TokenDead", TokenDead),
        (401, "Unauthorized", "TokenDead", TokenDead),
        (401, r#"{"status":"error","message":"Unauthorized"}"#, "TokenDead", TokenDead),
        (401, DH901, "TokenDead", TokenDead),
        (400, DH901, "TokenDead", TokenDead),
        (200, DH901, "TokenDead", TokenDead),
        (400, DH906_INVALID_TOKEN, "TokenDead", TokenDead),
        (400, r#"{"errorType":"Order_Error","errorCode":"DH-906","errorMessage":"invalid token."}"#, "TokenDead", TokenDead),
        (200, r#"{"data":{"807":"Access token is expired"},"status":"failed"}"#, "TokenDead", TokenDead),
        (200, r#"{"data":{"808":"Authentication Failed - Client ID or Token invalid"},"status":"failed"}"#, "TokenDead", TokenDead),
        (400, r#"{"data":{"809":"Access token is invalid"},"status":"failed"}"#, "TokenDead", TokenDead),
        (400, r#"{"data":{"810":"Client ID is invalid"},"status":"failed"}"#, "TokenDead", TokenDead),
        (401, GATEWAY_RS9005, "TokenDead", TokenDead),
        (400, r#"{"errorCode":"BAD","internalErrorCode":"RS-9005"}"#, "TokenDead", TokenDead),
    ], |s, b| classify_for(Endpoint::Profile, s, b));
}

/// A 5xx or a rate limit never proves a token dead, even when the body says so: a false "dead"
/// costs a mint that kills the token running traders hold (§1, §8); a false "unknown" costs a
/// retry.
#[rustfmt::skip]
#[test]
fn every_unknown_case_of_section_4_is_never_dead() {
    check(&[
        (429, "", "RateLimited", Unknown),
        (429, r#"{"errorType":"Rate_Limit","errorCode":"DH-904","errorMessage":"Too many requests"}"#, "RateLimited", Unknown),
        (400, r#"{"errorType":"Rate_Limit","errorCode":"DH-904","errorMessage":"Too many requests"}"#, "RateLimited", Unknown),
        (200, r#"{"data":{"805":"Too many requests"},"status":"failed"}"#, "RateLimited", Unknown),
        (500, "", "ServerError", Unknown),
        (502, "<html>Bad Gateway</html>", "ServerError", Unknown),
        (503, r#"{"status":"error","message":"Service Unavailable"}"#, "ServerError", Unknown),
        (500, DH901, "ServerError", Unknown),
        (500, DH906_INVALID_TOKEN, "ServerError", Unknown),
        (503, r#"{"data":{"808":"Authentication Failed"},"status":"failed"}"#, "ServerError", Unknown),
        (429, r#"{"data":{"808":"Authentication Failed"},"status":"failed"}"#, "RateLimited", Unknown),
        (400, r#"{"errorType":"Internal","errorCode":"DH-908","errorMessage":"Internal Server Error"}"#, "ServerError", Unknown),
        (400, r#"{"errorType":"Network","errorCode":"DH-909","errorMessage":"Network error"}"#, "ServerError", Unknown),
    ], |s, b| classify_for(Endpoint::Profile, s, b));
}

#[rustfmt::skip]
#[test]
fn every_error_shape_of_section_6() {
    check(&[
        // 1. errorType/errorCode/errorMessage, DH-901…DH-910.
        (400, DH901, "TokenDead", TokenDead),
        (400, r#"{"errorType":"Invalid_Access","errorCode":"DH-902","errorMessage":"No API access"}"#, "NoApiAccess", Permanent),
        (401, r#"{"errorType":"Invalid_Access","errorCode":"DH-902","errorMessage":"No API access"}"#, "NoApiAccess", Permanent),
        (400, r#"{"errorType":"User_Account","errorCode":"DH-903","errorMessage":"Account issue"}"#, "AccountIssue", Permanent),
        (400, r#"{"errorType":"Rate_Limit","errorCode":"DH-904","errorMessage":"x"}"#, "RateLimited", Unknown),
        (400, r#"{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"x"}"#, "Rejected", Unknown),
        (400, r#"{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"Invalid IP"}"#, "Rejected", Unknown),
        (400, r#"{"errorType":"Order_Error","errorCode":"DH-906","errorMessage":"Insufficient margin"}"#, "Rejected", Unknown),
        (400, r#"{"errorType":"Data_Error","errorCode":"DH-907","errorMessage":"x"}"#, "Rejected", Unknown),
        (500, r#"{"errorType":"Internal_Server_Error","errorCode":"DH-908","errorMessage":"x"}"#, "ServerError", Unknown),
        (400, r#"{"errorType":"Network_Error","errorCode":"DH-909","errorMessage":"x"}"#, "ServerError", Unknown),
        (400, r#"{"errorType":"Others","errorCode":"DH-910","errorMessage":"x"}"#, "Rejected", Unknown),
        (400, r#"{"errorCode":"dh_901"}"#, "TokenDead", TokenDead),
        // 2. data 8xx.
        (200, r#"{"data":{"805":"Too many requests"},"status":"failed"}"#, "RateLimited", Unknown),
        (200, r#"{"data":{"807":"expired"},"status":"failed"}"#, "TokenDead", TokenDead),
        (200, r#"{"data":{"811":"Invalid expiry date"},"status":"failed"}"#, "Rejected", Unknown),
        (200, r#"{"data":{"800":"Internal Server Error"},"status":"failed"}"#, "Rejected", Unknown),
        // 3. status/message on the auth host, often HTTP 200.
        (200, r#"{"status":"error","message":"Something new"}"#, "Rejected", Unknown),
        (200, r#"{"status":"failed","remarks":"Something new"}"#, "Rejected", Unknown),
        // 4. the gateway shape.
        (401, GATEWAY_RS9005, "TokenDead", TokenDead),
        (200, r#"{"errorCode":"UNAUTHORIZED","httpStatus":"UNAUTHORIZED","internalErrorCode":"RS-9005"}"#, "TokenDead", TokenDead),
    ], classify);
}

#[rustfmt::skip]
#[test]
fn unparseable_and_unexpected_bodies_are_unknown() {
    check(&[
        (200, "", "UnexpectedResponse", Unknown),
        (200, "OK", "UnexpectedResponse", Unknown),
        (200, "<html>login</html>", "UnexpectedResponse", Unknown),
        (200, "[1,2,3]", "UnexpectedResponse", Unknown),
        (200, r#"{"dhanClientId":"1000000001"}"#, "UnexpectedResponse", Unknown),
        (200, r#"{"status":"success"}"#, "UnexpectedResponse", Unknown),
        (302, "", "UnexpectedResponse", Unknown),
        (404, "Not Found", "UnexpectedResponse", Unknown),
        (400, "{not json", "UnexpectedResponse", Unknown),
        (418, r#"{"status":"error","message":"teapot"}"#, "Rejected", Unknown),
    ], classify);
}

#[rustfmt::skip]
#[test]
fn consent_failures() {
    check(&[
        (401, r#"{"status":"error","message":"Unauthorized"}"#, "AppUnauthorized", Permanent),
        (401, "", "AppUnauthorized", Permanent),
        (400, r#"{"status":"error","errorCode":"CONSENT_LIMIT_EXCEED","message":"Consent limit Exceeded"}"#, "ConsentLimitExceeded", ConsentLimit),
        (200, r#"{"status":"error","message":"Consent limit Exceeded"}"#, "ConsentLimitExceeded", ConsentLimit),
        (429, r#"{"errorCode":"CONSENT_LIMIT_EXCEED"}"#, "ConsentLimitExceeded", ConsentLimit),
        (500, "", "ServerError", Unknown),
    ], |s, b| classify_for(Endpoint::GenerateConsent, s, b));
    check(&[
        (401, r#"{"status":"error","message":"Unauthorized"}"#, "AppUnauthorized", Permanent),
        // A used or expired tokenId needs a new login, not new app credentials.
        (400, r#"{"status":"error","message":"Invalid tokenId"}"#, "ConsentExpired", Unknown),
        (200, r#"{"status":"error","message":"Invalid Token Id"}"#, "ConsentExpired", Unknown),
        (401, r#"{"status":"error","message":"Token Id expired"}"#, "ConsentExpired", Unknown),
    ], |s, b| classify_for(Endpoint::ConsumeConsent, s, b));
}

/// Answers about the account itself that docs/dhan-api.md lists as [?] or not at all: the
/// conservative reading is permanent (a person must look), never a retry loop.
#[rustfmt::skip]
#[test]
fn account_answers_are_permanent() {
    check(&[
        (200, r#"{"status":"error","message":"Invalid Client"}"#, "InvalidClientId", Permanent),
        (400, r#"{"status":"error","message":"Invalid client id"}"#, "InvalidClientId", Permanent),
        (200, r#"{"status":"error","message":"TOTP not enabled for this account"}"#, "TotpNotEnabled", Permanent),
        (200, r#"{"status":"error","message":"Please enable TOTP to generate token"}"#, "TotpNotEnabled", Permanent),
        (200, r#"{"status":"error","message":"Your account is locked. Please reset your PIN"}"#, "AccountLocked", Permanent),
        (403, r#"{"status":"error","message":"User is blocked"}"#, "AccountLocked", Permanent),
        // A wrong PIN is still a wrong PIN when the text also mentions the account.
        (200, r#"{"status":"error","message":"Invalid Pin, account will be locked after 3 attempts"}"#, "InvalidPin", Permanent),
    ], mint);
}

#[test]
fn dead_token_errors_name_the_signal() {
    let cases = [
        (401, "", "HTTP 401"),
        (400, DH901, "DH-901"),
        (400, DH906_INVALID_TOKEN, "DH-906 Invalid Token"),
        (200, r#"{"data":{"808":"x"},"status":"failed"}"#, "data 808"),
        (401, GATEWAY_RS9005, "RS-9005"),
    ];
    for (status, body, expected) in cases {
        let DhanError::TokenDead { signal, .. } = classify(status, body) else {
            panic!("{status} {body}");
        };
        assert_eq!(signal, expected);
    }
}

#[test]
fn messages_are_kept_for_people_but_bounded_and_jwt_free() {
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJleHAiOjF9.c2lnbmF0dXJl";
    let body = format!(r#"{{"status":"error","message":"bad token {jwt} here\u0007"}}"#);
    let text = classify(200, &body).to_string();
    assert!(text.contains("bad token <redacted> here"), "{text}");
    assert!(!text.contains(jwt));
    assert!(!text.contains('\u{7}'));

    let long = format!(r#"{{"status":"error","message":"{}"}}"#, "x".repeat(5000));
    let DhanError::Rejected { message, .. } = classify(200, &long) else {
        panic!("expected Rejected");
    };
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(message.ends_with('…'));
}

#[test]
fn unparseable_bodies_are_described_not_quoted() {
    let reflected = "reflected pin=482913&totp=123456";
    let error = classify(200, reflected);
    let text = format!("{error} {error:?}");
    assert!(!text.contains("482913"), "{text}");
    assert!(!text.contains("123456"), "{text}");
    assert!(text.contains("not JSON"), "{text}");
    assert!(classify(200, "<html/>").to_string().contains("HTML"));
    assert!(classify(200, "").to_string().contains("empty body"));
}
