//! `kubectl dhan inspect secret NAME`: what token a Secret holds — type, client, issue and
//! expiry — read from the JWT's claims without printing the token (docs/dhan-api.md §5).

use crate::when::{ist_time, relative};
use chrono::{DateTime, Utc};
use dhan_operator::controller::output::{
    DEFAULT_CLIENT_ID_KEY, DEFAULT_TOKEN_KEY, TOKEN_KEY_ANNOTATION,
};
use dhan_operator::crd::DhanAccount;
use dhan_operator::dhan::jwt::decode_claims;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Where the token and client ID are in `secret`: the key the operator recorded on it, its
/// account's key names, else the defaults.
pub fn key_names(secret: &Secret, owner: Option<&DhanAccount>) -> (String, String) {
    let custom = owner
        .and_then(|a| a.spec.secret_template.as_ref())
        .and_then(|t| t.keys.clone())
        .unwrap_or_default();
    let has = |k: &str| secret.data.as_ref().is_some_and(|d| d.contains_key(k));
    let token = secret
        .annotations()
        .get(TOKEN_KEY_ANNOTATION)
        .cloned()
        .or(custom.access_token)
        .unwrap_or_else(|| DEFAULT_TOKEN_KEY.into());
    // A credentials Secret holds a pasted Dhan Web token under `accessToken`.
    let token = if !has(&token) && has("accessToken") {
        "accessToken".into()
    } else {
        token
    };
    let client = custom
        .client_id
        .unwrap_or_else(|| DEFAULT_CLIENT_ID_KEY.into());
    (token, client)
}

/// The report, or why there is none. Never contains the token.
pub fn describe(
    secret: &Secret,
    owner: Option<&DhanAccount>,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let (token_key, client_key) = key_names(secret, owner);
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
    };
    let token = value(&token_key)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Secret {} has no key {token_key:?}", secret.name_any()))?;
    let claims = decode_claims(&token).map_err(|e| {
        format!(
            "key {token_key:?} of Secret {} does not hold a Dhan token: {e}",
            secret.name_any()
        )
    })?;
    let mut lines = vec![
        format!(
            "Secret:      {}/{}",
            secret.namespace().unwrap_or_default(),
            secret.name_any()
        ),
        format!(
            "Account:     {}",
            owner.map_or("- (not written by a DhanAccount)".into(), |a| a.name_any())
        ),
        format!(
            "Key:         {token_key} ({} characters, not shown)",
            token.chars().count()
        ),
        format!(
            "Type:        {}",
            match claims.consumer_type.as_deref() {
                Some(t) if claims.is_renewable() => format!("{t} (Dhan Web token: renewable)"),
                Some(t) => format!("{t} (not renewable: a new token needs a mint or a login)"),
                None => "unknown (no tokenConsumerType claim)".into(),
            }
        ),
        format!(
            "Client:      {}",
            claims.client_id.clone().unwrap_or_else(|| "-".into())
        ),
    ];
    if let (Some(in_token), Some(in_secret)) = (claims.client_id.as_deref(), value(&client_key))
        && in_token != in_secret
    {
        lines.push(format!(
            "Warning:     {client_key} says {in_secret}, the token is for {in_token}"
        ));
    }
    if let Some(iat) = claims.iat {
        lines.push(format!(
            "Issued:      {} ({})",
            ist_time(iat),
            relative(iat, now)
        ));
    }
    let state = if claims.exp > now { "valid" } else { "EXPIRED" };
    lines.push(format!(
        "Expires:     {} ({}, {state})",
        ist_time(claims.exp),
        relative(claims.exp, now)
    ));
    Ok(lines.join("\n") + "\n")
}
