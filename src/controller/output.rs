//! The output Secret trading pods consume: read what it holds, write a new token into it.
//!
//! The Secret is written before status and carries the facts needed to resume (when the token
//! was obtained, how, its hash), so an operator killed between the two writes recognises the
//! token as current on restart instead of minting again.

use crate::crd::DhanAccount;
use crate::decision::TokenFacts;
use crate::dhan::AccessToken;
use crate::token_hash::token_hash;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;

pub const DEFAULT_TOKEN_KEY: &str = "DHAN_ACCESS_TOKEN";
pub const DEFAULT_CLIENT_ID_KEY: &str = "DHAN_CLIENT_ID";
pub const DEFAULT_EXPIRES_AT_KEY: &str = "DHAN_TOKEN_EXPIRES_AT";

pub const OBTAINED_AT_ANNOTATION: &str = "dhan-operator.dev/obtained-at";
pub const METHOD_ANNOTATION: &str = "dhan-operator.dev/method";
pub const TOKEN_HASH_ANNOTATION: &str = "dhan-operator.dev/token-hash";
pub const EXPIRES_AT_ANNOTATION: &str = "dhan-operator.dev/expires-at";
pub const ACCOUNT_LABEL: &str = "dhan-operator.dev/account";
pub const FIELD_MANAGER: &str = "dhan-operator";

/// Name of the output Secret.
pub fn secret_name(account: &DhanAccount) -> String {
    account
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-token", account.name_any()))
}

/// Key names in the output Secret.
pub struct Keys {
    pub token: String,
    pub client_id: String,
    pub expires_at: String,
}

pub fn keys(account: &DhanAccount) -> Keys {
    let custom = account
        .spec
        .secret_template
        .as_ref()
        .and_then(|t| t.keys.clone())
        .unwrap_or_default();
    Keys {
        token: custom
            .access_token
            .unwrap_or_else(|| DEFAULT_TOKEN_KEY.into()),
        client_id: custom
            .client_id
            .unwrap_or_else(|| DEFAULT_CLIENT_ID_KEY.into()),
        expires_at: custom
            .expires_at
            .unwrap_or_else(|| DEFAULT_EXPIRES_AT_KEY.into()),
    }
}

/// What the output Secret holds.
pub enum Current {
    Absent,
    /// A Secret of that name exists but this account does not own it: never overwrite it.
    Foreign,
    Present {
        token: Option<(AccessToken, TokenFacts)>,
        method: Option<String>,
    },
}

/// Reads and decodes the token in the output Secret.
pub async fn read(secrets: &Api<Secret>, account: &DhanAccount) -> Result<Current, kube::Error> {
    let Some(secret) = secrets.get_opt(&secret_name(account)).await? else {
        return Ok(Current::Absent);
    };
    let uid = account.uid().unwrap_or_default();
    let owned = secret
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid);
    if !owned {
        return Ok(Current::Foreign);
    }
    let annotations = secret.annotations();
    let method = annotations.get(METHOD_ANNOTATION).cloned();
    let obtained_at = annotations
        .get(OBTAINED_AT_ANNOTATION)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&keys(account).token))
        .map(|b| AccessToken::from(String::from_utf8_lossy(&b.0).trim().to_string()))
        .and_then(|token| {
            let facts = token_facts(&uid, &token, obtained_at)?;
            Some((token, facts))
        });
    Ok(Current::Present { token, method })
}

/// What the operator needs to know about a token, from its JWT claims (docs/dhan-api.md §5).
/// `None` when it is not a readable Dhan JWT.
pub fn token_facts(
    account_uid: &str,
    token: &AccessToken,
    obtained_at: Option<DateTime<Utc>>,
) -> Option<TokenFacts> {
    let claims = token.claims().ok()?;
    let issued_at = claims
        .iat
        .unwrap_or(claims.exp - chrono::Duration::hours(24));
    Some(TokenFacts {
        expires_at: claims.exp,
        issued_at,
        obtained_at: obtained_at.unwrap_or(issued_at).max(issued_at),
        consumer_type: claims.consumer_type,
        hash: token_hash(account_uid, token.expose()),
    })
}

/// Writes `token` into the output Secret (server-side apply, owned by the account).
pub async fn write(
    secrets: &Api<Secret>,
    account: &DhanAccount,
    token: &AccessToken,
    facts: &TokenFacts,
    method: &str,
) -> Result<(), kube::Error> {
    let keys = keys(account);
    let template = account.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "dhan-operator".into(),
    );
    labels.insert(ACCOUNT_LABEL.into(), account.name_any());
    let mut annotations = template.annotations.unwrap_or_default();
    annotations.insert(OBTAINED_AT_ANNOTATION.into(), rfc3339(facts.obtained_at));
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), rfc3339(facts.expires_at));
    annotations.insert(METHOD_ANNOTATION.into(), method.into());
    annotations.insert(TOKEN_HASH_ANNOTATION.into(), facts.hash.clone());

    let data = BTreeMap::from([
        (keys.token, ByteString(token.expose().as_bytes().to_vec())),
        (
            keys.client_id,
            ByteString(account.spec.client_id.trim().as_bytes().to_vec()),
        ),
        (
            keys.expires_at,
            ByteString(rfc3339(facts.expires_at).into_bytes()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(account)),
            namespace: account.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: account.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret).expect("a Secret serialises");
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    secrets
        .patch(
            &secret_name(account),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await?;
    Ok(())
}

/// RFC 3339 in UTC with second precision, as written to Secrets and status.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
