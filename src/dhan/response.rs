//! Reading Dhan's success bodies, leniently.
//!
//! Success is decided by content, not by HTTP status (docs/dhan-api.md §1): a token response is a
//! success when it carries a non-empty `accessToken` (or `token`, §2 [?]), and anything else is
//! handed to [`classify_for`]. Every field but the token is optional.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::classify::{ErrorBody, classify_for};
use super::error::{DhanError, Endpoint};
use super::ist;
use super::jwt::scalar_string;
use super::token::{AccessToken, IssuedToken};

/// Dhan tokens live exactly 24 h from minting (§1): the expiry when neither the JWT nor
/// `expiryTime` can be read, and the longest anything a mint made can matter.
pub const TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// Beyond this, JWT `exp` and `expiryTime` disagree enough to be worth a warning.
const EXPIRY_DISAGREEMENT: TimeDelta = TimeDelta::seconds(60);

/// The account profile (`GET /v2/profile`, docs/dhan-api.md §4). Used as the liveness probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `dhanClientId`.
    pub client_id: Option<String>,
    /// `tokenValidity` (`DD/MM/YYYY HH:MM` IST) as UTC; `None` when absent or unreadable.
    pub token_validity: Option<DateTime<Utc>>,
    /// `activeSegment`, e.g. `"Equity, Derivative"`.
    pub active_segment: Option<String>,
    /// `ddpi` status.
    pub ddpi: Option<String>,
    /// `mtf` status.
    pub mtf: Option<String>,
    /// `dataPlan` status.
    pub data_plan: Option<String>,
    /// `dataValidity`, as sent.
    pub data_validity: Option<String>,
}

/// The static IPs registered on the account (`GET /v2/ip/getIP`, docs/dhan-api.md §7). Read-only:
/// the operator never sets IPs (a change locks them for 7 days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpInfo {
    /// `primaryIP`.
    pub primary_ip: Option<String>,
    /// `secondaryIP`.
    pub secondary_ip: Option<String>,
    /// `ordersAllowed`, when sent (§7 [?]).
    pub orders_allowed: Option<bool>,
    /// `ipMatchStatus`, when sent (§7 [?]).
    pub ip_match_status: Option<String>,
}

/// Reads a token response (mint §1, renew §2, consume consent §3.3).
///
/// `expires_at` is the JWT `exp`; `expiryTime` (IST) is the fallback and a cross-check; if
/// neither is readable, `now + 24 h` — the token is still returned, because the previous one is
/// already invalidated (§1) and dropping the new one would leave the client with none.
pub(crate) fn parse_issued_token(
    endpoint: Endpoint,
    status: u16,
    body: &str,
    now: DateTime<Utc>,
) -> Result<IssuedToken, DhanError> {
    let Some((fields, raw_token)) = json_object(body).and_then(|map| find_token(&map)) else {
        return Err(classify_for(endpoint, status, body));
    };
    let token = AccessToken::from(raw_token);
    let claims = token.claims().ok();
    let expiry_time = match fields.get("expiryTime").and_then(scalar_string) {
        None => None,
        Some(raw) => match ist::parse_expiry_time(&raw) {
            Ok(at) => Some(at),
            Err(error) => {
                tracing::warn!(endpoint = endpoint.as_str(), %error, "ignoring unreadable expiryTime");
                None
            }
        },
    };
    let expires_at = match (&claims, expiry_time) {
        (Some(claims), Some(expiry_time)) => {
            let difference = (claims.exp - expiry_time).abs();
            if difference > EXPIRY_DISAGREEMENT {
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    jwt_exp = %claims.exp,
                    expiry_time = %expiry_time,
                    difference_seconds = difference.num_seconds(),
                    "JWT exp and expiryTime disagree; trusting the JWT"
                );
            }
            claims.exp
        }
        (Some(claims), None) => claims.exp,
        (None, Some(expiry_time)) => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                "token is not a readable JWT; using expiryTime"
            );
            expiry_time
        }
        (None, None) => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                "neither JWT exp nor expiryTime readable; assuming Dhan's 24 h lifetime"
            );
            now + TOKEN_LIFETIME
        }
    };
    Ok(IssuedToken {
        token,
        expires_at,
        issued_at: claims.as_ref().and_then(|c| c.iat),
        consumer_type: claims.and_then(|c| c.consumer_type),
        client_name: fields.get("dhanClientName").and_then(scalar_string),
    })
}

/// Reads the `consentAppId` of a generate-consent response (§3.1).
pub(crate) fn parse_consent(status: u16, body: &str) -> Result<String, DhanError> {
    json_object(body)
        .and_then(|map| map.get("consentAppId").and_then(scalar_string))
        .ok_or_else(|| classify_for(Endpoint::GenerateConsent, status, body))
}

/// Reads a profile (§4). It must be a 2xx JSON object without error markers that carries at
/// least `dhanClientId` or `tokenValidity`: a probe that cannot tell is `Unknown`, not alive.
pub(crate) fn parse_profile(status: u16, body: &str) -> Result<Profile, DhanError> {
    let fields = success_object(status, body)
        .filter(|map| map.contains_key("dhanClientId") || map.contains_key("tokenValidity"))
        .ok_or_else(|| classify_for(Endpoint::Profile, status, body))?;
    let text = |key: &str| fields.get(key).and_then(scalar_string);
    let token_validity = text("tokenValidity").and_then(|raw| {
        ist::parse_token_validity(&raw)
            .inspect_err(|error| tracing::warn!(%error, "ignoring unreadable tokenValidity"))
            .ok()
    });
    Ok(Profile {
        client_id: text("dhanClientId"),
        token_validity,
        active_segment: text("activeSegment"),
        ddpi: text("ddpi"),
        mtf: text("mtf"),
        data_plan: text("dataPlan"),
        data_validity: text("dataValidity"),
    })
}

/// Reads the registered static IPs (§7). All fields are optional (none may be registered).
pub(crate) fn parse_ip_info(status: u16, body: &str) -> Result<IpInfo, DhanError> {
    let fields =
        success_object(status, body).ok_or_else(|| classify_for(Endpoint::IpInfo, status, body))?;
    let text = |key: &str| fields.get(key).and_then(scalar_string);
    Ok(IpInfo {
        primary_ip: text("primaryIP"),
        secondary_ip: text("secondaryIP"),
        orders_allowed: fields.get("ordersAllowed").and_then(lenient_bool),
        ip_match_status: text("ipMatchStatus"),
    })
}

fn json_object(body: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(body.trim()) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// A 2xx JSON object that does not describe itself as an error (200-with-error bodies, §1).
fn success_object(status: u16, body: &str) -> Option<Map<String, Value>> {
    if !(200..300).contains(&status) || ErrorBody::parse(body).looks_like_error() {
        return None;
    }
    json_object(body)
}

/// The object holding the token and the token itself: `accessToken`, or `token` (§2 [?]), at
/// the top level or — costing nothing to accept — inside a `data` wrapper.
fn find_token(map: &Map<String, Value>) -> Option<(Map<String, Value>, String)> {
    let token_in = |fields: &Map<String, Value>| {
        ["accessToken", "token"]
            .iter()
            .find_map(|key| match fields.get(*key) {
                Some(Value::String(token)) if !token.trim().is_empty() => {
                    Some(token.trim().to_owned())
                }
                _ => None,
            })
    };
    if let Some(token) = token_in(map) {
        return Some((map.clone(), token));
    }
    match map.get("data") {
        Some(Value::Object(data)) => token_in(data).map(|token| (data.clone(), token)),
        _ => None,
    }
}

fn lenient_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "allowed" => Some(true),
            "false" | "no" | "n" | "0" | "not allowed" | "notallowed" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhan::error::ErrorKind;
    use crate::dhan::jwt::testing::jwt;
    use serde_json::json;

    const NOW: i64 = 1_758_600_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn app_jwt(exp: i64) -> String {
        jwt(
            json!({"iss":"dhan","exp": exp, "iat": exp - 86_400, "tokenConsumerType":"APP","dhanClientId":"1000000001"}),
        )
    }

    fn mint(status: u16, body: &str) -> Result<IssuedToken, DhanError> {
        parse_issued_token(Endpoint::GenerateAccessToken, status, body, now())
    }

    #[test]
    fn documented_mint_success_is_read_completely() {
        let token = app_jwt(1_758_700_000);
        // 1_758_700_000 = 2025-09-24T07:46:40Z = 13:16:40 IST.
        let body = json!({
            "dhanClientId": "1000000001", "dhanClientName": "ALICE", "dhanClientUcc": "ABCD1234",
            "givenPowerOfAttorney": true, "accessToken": token, "expiryTime": "2025-09-24T13:16:40.000"
        });
        let issued = mint(200, &body.to_string()).unwrap();
        assert_eq!(issued.token.expose(), token);
        assert_eq!(issued.expires_at, at(1_758_700_000));
        assert_eq!(issued.issued_at, Some(at(1_758_700_000 - 86_400)));
        assert_eq!(issued.consumer_type.as_deref(), Some("APP"));
        assert_eq!(issued.client_name.as_deref(), Some("ALICE"));
    }

    #[test]
    fn jwt_exp_wins_over_expiry_time() {
        // expiryTime one hour later than exp (and read as IST): exp is the truth.
        let body =
            json!({"accessToken": app_jwt(1_758_700_000), "expiryTime": "2025-09-24T14:16:40"});
        assert_eq!(
            mint(200, &body.to_string()).unwrap().expires_at,
            at(1_758_700_000)
        );
    }

    #[test]
    fn expiry_time_is_the_fallback_when_the_token_is_not_a_jwt() {
        let body = json!({"accessToken": "opaque-token", "expiryTime": "2025-09-24T13:16:40"});
        let issued = mint(200, &body.to_string()).unwrap();
        assert_eq!(issued.expires_at, at(1_758_700_000));
        assert_eq!(issued.issued_at, None);
        assert_eq!(issued.consumer_type, None);
    }

    #[test]
    fn without_exp_or_expiry_time_the_token_is_kept_with_24h_assumed() {
        for body in [
            json!({"accessToken": "opaque-token"}),
            json!({"accessToken": "opaque-token", "expiryTime": "someday"}),
        ] {
            let issued = mint(200, &body.to_string()).unwrap();
            assert_eq!(issued.token.expose(), "opaque-token");
            assert_eq!(issued.expires_at, now() + TimeDelta::hours(24));
        }
    }

    #[test]
    fn token_alias_is_accepted() {
        let token = app_jwt(1_758_700_000);
        let issued = parse_issued_token(
            Endpoint::RenewToken,
            200,
            &json!({"token": token, "expiryTime": "2025-09-24T13:16:40"}).to_string(),
            now(),
        )
        .unwrap();
        assert_eq!(issued.token.expose(), token);
    }

    #[test]
    fn token_inside_a_data_wrapper_is_accepted() {
        let token = app_jwt(1_758_700_000);
        let body =
            json!({"status": "success", "data": {"accessToken": token, "dhanClientName": "BOB"}});
        let issued = mint(200, &body.to_string()).unwrap();
        assert_eq!(issued.token.expose(), token);
        assert_eq!(issued.client_name.as_deref(), Some("BOB"));
    }

    #[test]
    fn success_is_decided_by_the_token_not_the_status() {
        let body = json!({"accessToken": app_jwt(1_758_700_000)}).to_string();
        for status in [200, 201, 202, 400, 500] {
            assert!(mint(status, &body).is_ok(), "HTTP {status}");
        }
    }

    #[test]
    fn http_200_without_a_token_is_an_error() {
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
                r#"{"accessToken":"","status":"error","message":"Invalid TOTP"}"#,
                "InvalidTotp",
            ),
            (
                r#"{"accessToken":"   ","status":"error","message":"Invalid Pin"}"#,
                "InvalidPin",
            ),
            (
                r#"{"accessToken":null,"dhanClientId":"1000000001"}"#,
                "UnexpectedResponse",
            ),
            (r#"{"accessToken":12345}"#, "UnexpectedResponse"),
            (
                r#"{"dhanClientId":"1000000001","expiryTime":"2025-09-24T13:16:40"}"#,
                "UnexpectedResponse",
            ),
            ("", "UnexpectedResponse"),
            ("<html></html>", "UnexpectedResponse"),
        ];
        for (body, reason) in cases {
            let error = mint(200, body).unwrap_err();
            assert_eq!(error.reason(), reason, "{body}");
        }
    }

    #[test]
    fn consent_id_is_read_and_failures_classified() {
        let ok = r#"{"consentAppId":"940b0ca1-3ff4-4476-b46e-03a3ce7dc55d","consentAppStatus":"GENERATED","status":"success"}"#;
        assert_eq!(
            parse_consent(200, ok).unwrap(),
            "940b0ca1-3ff4-4476-b46e-03a3ce7dc55d"
        );
        let unauthorized =
            parse_consent(401, r#"{"status":"error","message":"Unauthorized"}"#).unwrap_err();
        assert_eq!(unauthorized.reason(), "AppUnauthorized");
        assert_eq!(unauthorized.kind(), ErrorKind::Permanent);
        assert_eq!(
            parse_consent(200, r#"{"consentAppId":""}"#)
                .unwrap_err()
                .kind(),
            ErrorKind::Unknown
        );
    }

    #[test]
    fn profile_is_read_with_token_validity_in_ist() {
        let body = r#"{"dhanClientId":"1100003626","tokenValidity":"30/03/2025 15:37","activeSegment":"Equity, Derivative, Currency, Commodity","ddpi":"Active","mtf":"Active","dataPlan":"Active","dataValidity":"2024-12-05 09:37:52.0"}"#;
        let profile = parse_profile(200, body).unwrap();
        assert_eq!(
            profile,
            Profile {
                client_id: Some("1100003626".into()),
                token_validity: Some(
                    DateTime::parse_from_rfc3339("2025-03-30T10:07:00Z")
                        .unwrap()
                        .to_utc()
                ),
                active_segment: Some("Equity, Derivative, Currency, Commodity".into()),
                ddpi: Some("Active".into()),
                mtf: Some("Active".into()),
                data_plan: Some("Active".into()),
                data_validity: Some("2024-12-05 09:37:52.0".into()),
            }
        );
    }

    #[test]
    fn profile_tolerates_odd_fields_but_not_error_bodies() {
        let odd =
            parse_profile(200, r#"{"dhanClientId":1100003626,"tokenValidity":"soon"}"#).unwrap();
        assert_eq!(odd.client_id.as_deref(), Some("1100003626"));
        assert_eq!(odd.token_validity, None);

        let cases = [
            (
                200,
                r#"{"data":{"808":"Authentication Failed"},"status":"failed"}"#,
                ErrorKind::TokenDead,
            ),
            (
                200,
                r#"{"dhanClientId":"1","errorCode":"DH-901","errorType":"x","errorMessage":"x"}"#,
                ErrorKind::TokenDead,
            ),
            (401, r#"{"dhanClientId":"1"}"#, ErrorKind::TokenDead),
            (200, "{}", ErrorKind::Unknown),
            (200, "", ErrorKind::Unknown),
            (500, r#"{"dhanClientId":"1"}"#, ErrorKind::Unknown),
        ];
        for (status, body, kind) in cases {
            assert_eq!(
                parse_profile(status, body).unwrap_err().kind(),
                kind,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn ip_info_reads_documented_and_extra_fields() {
        let body = r#"{"primaryIP":"203.0.113.7","secondaryIP":"","modifyDatePrimary":"2026-04-01","ordersAllowed":"true","ipMatchStatus":"MATCHED"}"#;
        assert_eq!(
            parse_ip_info(200, body).unwrap(),
            IpInfo {
                primary_ip: Some("203.0.113.7".into()),
                secondary_ip: None,
                orders_allowed: Some(true),
                ip_match_status: Some("MATCHED".into()),
            }
        );
        assert_eq!(parse_ip_info(200, "{}").unwrap(), IpInfo::default());
        assert_eq!(
            parse_ip_info(200, r#"{"ordersAllowed":false}"#)
                .unwrap()
                .orders_allowed,
            Some(false)
        );
        assert_eq!(
            parse_ip_info(401, "").unwrap_err().kind(),
            ErrorKind::TokenDead
        );
    }
}
