//! `kubectl dhan refresh NAME`: ask for a new token (the refresh-requested annotation), then
//! follow the account until the operator has answered it.

use crate::when::{ist_time, relative};
use chrono::{DateTime, Utc};
use dhan_operator::crd::{DhanAccount, DhanAccountStatus, Phase, REFRESH_REQUESTED_ANNOTATION};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

/// Dhan accepts one new token per client every 2 minutes; the operator keeps 125 s between mints
/// by default (docs/dhan-api.md §1).
const MINT_INTERVAL: chrono::Duration = chrono::Duration::seconds(125);
const POLL: Duration = Duration::from_secs(1);

/// How a request ended.
pub enum Outcome {
    Refreshed(String),
    Failed(String),
    TimedOut(String),
}

/// A note about a delay the user should expect, if any.
pub fn throttle_note(status: &DhanAccountStatus, now: DateTime<Utc>) -> Option<String> {
    let allowed = status.last_refresh_time? + MINT_INTERVAL;
    (allowed > now).then(|| {
        format!(
            "Dhan allows one new token per client every 2 minutes: the refresh waits until {} ({}).",
            ist_time(allowed),
            relative(allowed, now)
        )
    })
}

/// What a status says about the request `value`, if it is settled.
pub fn settled(
    status: &DhanAccountStatus,
    value: &str,
    hash_before: Option<&str>,
) -> Option<Outcome> {
    if status.refresh_request_handled.as_deref() != Some(value) {
        return None;
    }
    if status.phase == Some(Phase::Failed) {
        return Some(Outcome::Failed(format!(
            "refresh failed: {}: {}",
            status.last_failure_reason.as_deref().unwrap_or("Unknown"),
            status
                .last_failure_message
                .as_deref()
                .or(status.message.as_deref())
                .unwrap_or("see kubectl describe")
        )));
    }
    if status.token_hash.as_deref() == hash_before {
        return None;
    }
    let expiry = status
        .expires_at
        .map(|t| {
            format!(
                ", valid until {} ({})",
                ist_time(t),
                relative(t, Utc::now())
            )
        })
        .unwrap_or_default();
    let method = status.method.as_deref().unwrap_or("-");
    Some(Outcome::Refreshed(format!(
        "new token (method {method}){expiry}"
    )))
}

/// Sets the annotation and, with `wait`, follows the account for up to `timeout`.
pub async fn run(
    api: &Api<DhanAccount>,
    name: &str,
    wait: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let before = api.get(name).await?;
    let status = before.status.clone().unwrap_or_default();
    match status.phase {
        Some(Phase::Suspended) => anyhow::bail!("{name} is suspended (spec.suspend): no refresh"),
        Some(Phase::Conflict) => anyhow::bail!(
            "{name} does not manage its client ID: {}",
            status.message.as_deref().unwrap_or("Conflict")
        ),
        _ => {}
    }
    let value = Utc::now().timestamp_millis().to_string();
    let patch = json!({ "metadata": { "annotations": { REFRESH_REQUESTED_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("dhanaccount/{name}: refresh requested");
    if let Some(note) = throttle_note(&status, Utc::now()) {
        println!("{note}");
    }
    let Some(timeout) = wait else {
        return Ok(Outcome::Refreshed("requested; not waiting".into()));
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_phase = status.phase;
    loop {
        let status = api.get(name).await?.status.unwrap_or_default();
        if let Some(outcome) = settled(&status, &value, status_hash(&before)) {
            return Ok(outcome);
        }
        if status.phase != last_phase {
            if let Some(phase) = status.phase {
                println!("{phase}: {}", status.message.as_deref().unwrap_or(""));
            }
            last_phase = status.phase;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::TimedOut(format!(
                "no answer within {}s; the account says: {}",
                timeout.as_secs(),
                status.message.as_deref().unwrap_or("-")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_hash(account: &DhanAccount) -> Option<&str> {
    account.status.as_ref()?.token_hash.as_deref()
}
