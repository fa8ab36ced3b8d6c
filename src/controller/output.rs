//! The output Secret trading pods consume: find the token it holds, write a token into it.
//!
//! The Secret carries what the operator needs to resume (when its token was obtained, how, its
//! hash, its expiry, which key holds it), so an operator killed between the Secret and status
//! writes recognises the token as current on restart instead of minting again, and a renamed
//! Secret or key still leads to the live token.

use crate::crd::DhanAccount;
use crate::decision::{Token, TokenFacts};
use crate::dhan::AccessToken;
use crate::token_hash::token_hash;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const DEFAULT_TOKEN_KEY: &str = "DHAN_ACCESS_TOKEN";
pub const DEFAULT_CLIENT_ID_KEY: &str = "DHAN_CLIENT_ID";
pub const DEFAULT_EXPIRES_AT_KEY: &str = "DHAN_TOKEN_EXPIRES_AT";

/// Annotations and labels under this prefix are the operator's own.
pub const OPERATOR_ANNOTATION_PREFIX: &str = "dhan-operator.dev/";
pub const OBTAINED_AT_ANNOTATION: &str = "dhan-operator.dev/obtained-at";
pub const METHOD_ANNOTATION: &str = "dhan-operator.dev/method";
/// The refresh request (the value of the account's refresh-requested annotation) the token
/// answered: written with the token, so a status write that fails cannot make the next
/// reconcile answer it again with another mint (the simulation, seed 2255).
pub const REQUEST_ANSWERED_ANNOTATION: &str = "dhan-operator.dev/refresh-request-answered";
/// The token's keyed hash, on the output Secret and on restarted workloads' pod templates.
pub const TOKEN_HASH_ANNOTATION: &str = "dhan-operator.dev/token-hash";
pub const EXPIRES_AT_ANNOTATION: &str = "dhan-operator.dev/expires-at";
/// Which data key holds the token, so a renamed key still leads to it.
pub const TOKEN_KEY_ANNOTATION: &str = "dhan-operator.dev/token-key";
/// A hash of the Secret's wanted shape (keys, labels, annotations, ownership).
pub const SHAPE_ANNOTATION: &str = "dhan-operator.dev/shape";
/// The full name of the account the Secret belongs to (labels are cut at 63 characters).
pub const ACCOUNT_ANNOTATION: &str = "dhan-operator.dev/account";
/// Label naming the account, for selection (cut to 63 characters).
pub const ACCOUNT_LABEL: &str = "dhan-operator.dev/account";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Label on login Jobs and their Pods naming their account (the owner reference, not the
/// label, says whose Job it is).
pub const LOGIN_FOR_LABEL: &str = "dhan-operator.dev/login-for";
/// Label on login Pods (and value of `app.kubernetes.io/component`), selected by their
/// NetworkPolicy.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const COMPONENT: &str = "browser-login";
/// Why a login was started (a `RefreshReason`), so a login found unrecorded after a crash
/// keeps its reason.
pub const LOGIN_REASON_ANNOTATION: &str = "dhan-operator.dev/login-reason";
pub const MANAGED_BY: &str = "dhan-operator";
pub const FIELD_MANAGER: &str = "dhan-operator";

/// Key names in the output Secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keys {
    pub token: String,
    pub client_id: String,
    pub expires_at: String,
}

/// The output Secret as the spec wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    pub keys: Keys,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `deletionPolicy: Delete`: the Secret is owned by the account and goes with it.
    pub delete_with_account: bool,
}

impl OutputSpec {
    /// A short hash of everything about the Secret's shape, so a change is seen and the token
    /// rewritten (never re-minted).
    pub fn shape(&self, client_id: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "v1;{:?};{:?};{:?};{};{client_id}",
            self.keys, self.labels, self.annotations, self.delete_with_account
        ));
        hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What an output Secret holds.
#[derive(Clone, Debug)]
// One per reconcile, moved once: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Found {
    Absent,
    /// A Secret of that name exists but is not this account's: never overwrite it.
    Foreign,
    Ours {
        /// The Secret's UID (a moved-from Secret is deleted only if it is still this one).
        uid: String,
        /// Its resource version: a write of this account's token is made on this version only,
        /// so it never replaces a token someone wrote since.
        version: Option<String>,
        token: Option<Token>,
        method: Option<String>,
        /// Whether it has the shape the spec wants.
        shaped: bool,
        /// The refresh request its token answered ([`REQUEST_ANSWERED_ANNOTATION`]).
        answered_request: Option<String>,
    },
}

/// The key with which token hashes are made for an account: stable across a delete and
/// re-create, so a retained Secret's token keeps its hash.
pub fn hash_key(account: &DhanAccount) -> String {
    format!(
        "{}/{}",
        account.namespace().unwrap_or_default(),
        account.name_any()
    )
}

/// The account label's value: its name cut to a label's 63 characters, ending in a letter or
/// digit.
pub fn account_label(account: &DhanAccount) -> String {
    short(&account.name_any(), 63)
}

/// `name` cut to `max` characters, ending in a letter or digit as names and labels must.
pub fn short(name: &str, max: usize) -> String {
    let cut: String = name.chars().take(max).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Whether `secret` belongs to `account`: owned by it, or (after a delete and re-create with
/// `deletionPolicy: Retain`) left by an account of the same name and owned by nothing.
fn belongs_to(secret: &Secret, account: &DhanAccount) -> bool {
    let uid = account.uid().unwrap_or_default();
    let owners = secret.owner_references();
    if owners.iter().any(|o| o.uid == uid) {
        return true;
    }
    let managed = secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
    let named = secret.annotations().get(ACCOUNT_ANNOTATION) == Some(&account.name_any());
    managed && named && !owners.iter().any(|o| o.controller == Some(true))
}

/// Reads Secret `name` and what it holds for `account`.
pub async fn read(
    secrets: &Api<Secret>,
    account: &DhanAccount,
    name: &str,
    spec: &OutputSpec,
) -> Result<Found, kube::Error> {
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Found::Absent);
    };
    Ok(examine(&secret, account, spec))
}

/// What `secret` holds for `account`.
pub fn examine(secret: &Secret, account: &DhanAccount, spec: &OutputSpec) -> Found {
    if !belongs_to(secret, account) {
        return Found::Foreign;
    }
    let annotations = secret.annotations();
    let time = |key: &str| {
        annotations
            .get(key)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let data = secret.data.clone().unwrap_or_default();
    let value = [
        Some(&spec.keys.token),
        annotations.get(TOKEN_KEY_ANNOTATION),
    ]
    .into_iter()
    .flatten()
    .find_map(|key| data.get(key))
    .map(|b| AccessToken::from(String::from_utf8_lossy(&b.0).trim().to_string()))
    .filter(|t| !t.expose().is_empty());
    // A token of another client (the spec's client ID changed since it was written) is not
    // this account's: it is neither kept, probed nor called `Ready` (the simulation, seed 0).
    let client_id = account.spec.client_id.trim();
    let token = value.filter(|v| {
        v.claims()
            .ok()
            .and_then(|c| c.client_id)
            .is_none_or(|id| id.trim() == client_id)
    });
    let token = token.and_then(|value| {
        let facts = token_facts(
            &hash_key(account),
            &value,
            time(OBTAINED_AT_ANNOTATION),
            time(EXPIRES_AT_ANNOTATION),
        )?;
        Some(Token { value, facts })
    });
    let shaped = annotations.get(SHAPE_ANNOTATION)
        == Some(&spec.shape(account.spec.client_id.trim()))
        && secret.name_any() == spec.name
        && data.contains_key(&spec.keys.token);
    Found::Ours {
        uid: secret.uid().unwrap_or_default(),
        version: secret.resource_version(),
        token,
        method: annotations.get(METHOD_ANNOTATION).cloned(),
        shaped,
        answered_request: annotations.get(REQUEST_ANSWERED_ANNOTATION).cloned(),
    }
}

/// What the operator needs to know about a token: from its JWT claims (docs/dhan-api.md §5),
/// or, for a token whose claims cannot be read, from the expiry recorded when it was issued.
/// `None` when neither says when it expires.
pub fn token_facts(
    hash_key: &str,
    token: &AccessToken,
    obtained_at: Option<DateTime<Utc>>,
    recorded_expiry: Option<DateTime<Utc>>,
) -> Option<TokenFacts> {
    let claims = token.claims().ok();
    let expires_at = claims.as_ref().map(|c| c.exp).or(recorded_expiry)?;
    let issued_at = claims
        .as_ref()
        .and_then(|c| c.iat)
        .unwrap_or(expires_at - chrono::Duration::hours(24));
    Some(TokenFacts {
        expires_at,
        issued_at,
        obtained_at: obtained_at.unwrap_or(issued_at).max(issued_at),
        consumer_type: claims.and_then(|c| c.consumer_type),
        hash: token_hash(hash_key, token.expose()),
    })
}

/// The output Secret for `token`, as server-side apply will send it.
pub fn secret_for(
    account: &DhanAccount,
    spec: &OutputSpec,
    token: &Token,
    method: Option<&str>,
    answered_request: Option<&str>,
) -> Secret {
    let facts = &token.facts;
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(ACCOUNT_LABEL.into(), account_label(account));
    let mut annotations = spec.annotations.clone();
    annotations.insert(OBTAINED_AT_ANNOTATION.into(), rfc3339(facts.obtained_at));
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), rfc3339(facts.expires_at));
    annotations.insert(TOKEN_HASH_ANNOTATION.into(), facts.hash.clone());
    annotations.insert(TOKEN_KEY_ANNOTATION.into(), spec.keys.token.clone());
    annotations.insert(ACCOUNT_ANNOTATION.into(), account.name_any());
    let client_id = account.spec.client_id.trim();
    annotations.insert(SHAPE_ANNOTATION.into(), spec.shape(client_id));
    if let Some(method) = method {
        annotations.insert(METHOD_ANNOTATION.into(), method.into());
    }
    if let Some(request) = answered_request {
        annotations.insert(REQUEST_ANSWERED_ANNOTATION.into(), request.into());
    }
    let data = BTreeMap::from([
        (
            spec.keys.token.clone(),
            ByteString(token.value.expose().as_bytes().to_vec()),
        ),
        (
            spec.keys.client_id.clone(),
            ByteString(client_id.as_bytes().to_vec()),
        ),
        (
            spec.keys.expires_at.clone(),
            ByteString(rfc3339(facts.expires_at).into_bytes()),
        ),
    ]);
    let owner = spec
        .delete_with_account
        .then(|| account.controller_owner_ref(&()))
        .flatten();
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: account.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            // Always sent, empty under `Retain`: server-side apply then drops an owner
            // reference this field manager set before, so the Secret outlives the account.
            owner_references: Some(owner.into_iter().collect()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Writes `token` into the output Secret (server-side apply), on resource version `on` when the
/// Secret existed (the API server refuses the write with 409 if it changed since); returns the
/// resource version written.
pub async fn write(
    secrets: &Api<Secret>,
    secret: &Secret,
    on: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    let mut value = serde_json::to_value(secret).expect("a Secret serialises");
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    if let Some(version) = on {
        value["metadata"]["resourceVersion"] = version.into();
    }
    let written = secrets
        .patch(
            &secret.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await?;
    Ok(written.resource_version())
}

/// Deletes the Secret a token moved away from, only if it is still the one read (its UID).
pub async fn delete_moved(secrets: &Api<Secret>, name: &str, uid: &str) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// RFC 3339 in UTC with second precision, as written to Secrets and status.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    crate::decision::rfc3339(t)
}
