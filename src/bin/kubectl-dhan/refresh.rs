//! `kubectl dhan refresh NAME`: ask for a new token (the refresh-requested annotation), then
//! follow the account until the operator has answered it. It says at once what the request will
//! wait for: the market's close (a new token kills the one running Pods hold, so the operator
//! holds requests during the session) or Dhan's 2-minute limit. `--now` asks for a token during
//! the session, after naming the Pods whose token dies.

use crate::when::{ist_time, relative};
use chrono::{DateTime, Utc};
use dhan_operator::controller::spec::output_secret_name;
use dhan_operator::crd::{
    DhanAccount, DhanAccountStatus, Phase, REFRESH_NOW_PREFIX, REFRESH_REQUESTED_ANNOTATION,
};
use dhan_operator::decision::calendar::TradingCalendar;
use dhan_operator::decision::market::{in_market_hours, market_close};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// Dhan accepts one new token per client every 2 minutes; the operator keeps 125 s between mints
/// by default (docs/dhan-api.md §1).
const MINT_INTERVAL: chrono::Duration = chrono::Duration::seconds(125);
const POLL: Duration = Duration::from_secs(1);

/// How a request ended.
pub enum Outcome {
    Refreshed(String),
    /// Recorded; the operator answers it later (at the market's close).
    Held(String),
    Failed(String),
    TimedOut(String),
}

/// When the market is open at `now` (by `calendar`): when it closes.
pub fn session_close(calendar: &TradingCalendar, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    in_market_hours(calendar, now).then(|| market_close(calendar, now))
}

/// What a plain request during the session waits for.
pub fn market_note(close: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "The market is open: a new token kills the one running Pods hold, so the operator holds \
         the request until the close at {} ({}). `kubectl dhan refresh --now` asks for a token \
         during the session.",
        ist_time(close),
        relative(close, now)
    )
}

/// Whether `pod` reads Secret `secret`: a volume (plain or projected), `env` or `envFrom`.
pub fn uses_secret(pod: &Pod, secret: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let volumes = spec.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
            })
    });
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    volumes
        || containers.into_iter().any(|c| {
            c.env_from
                .iter()
                .flatten()
                .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == secret))
                || c.env.iter().flatten().any(|e| {
                    e.value_from
                        .as_ref()
                        .and_then(|v| v.secret_key_ref.as_ref())
                        .is_some_and(|r| r.name == secret)
                })
        })
}

/// The running Pods of `namespace` whose token `account`'s new one kills.
pub async fn pods_holding_token(
    pods: &Api<Pod>,
    account: &DhanAccount,
) -> anyhow::Result<Vec<String>> {
    let secret = output_secret_name(account);
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| uses_secret(p, &secret))
        .map(|p| p.name_any())
        .collect())
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

/// Whether `name` may be refreshed at all; its account.
pub async fn refreshable(api: &Api<DhanAccount>, name: &str) -> anyhow::Result<DhanAccount> {
    let account = api.get(name).await?;
    let status = account.status.clone().unwrap_or_default();
    match status.phase {
        Some(Phase::Suspended) => anyhow::bail!("{name} is suspended (spec.suspend): no refresh"),
        Some(Phase::Conflict) => anyhow::bail!(
            "{name} does not manage its client ID: {}",
            status.message.as_deref().unwrap_or("Conflict")
        ),
        _ => Ok(account),
    }
}

/// Sets the annotation (`now`: answered even during the session) and, with `wait`, follows
/// the account for up to `timeout`. A plain request during the session (`close`: when it ends)
/// is not followed: the operator answers it at the close.
pub async fn run(
    api: &Api<DhanAccount>,
    before: &DhanAccount,
    now: bool,
    close: Option<DateTime<Utc>>,
    wait: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let name = before.name_any();
    let name = name.as_str();
    let status = before.status.clone().unwrap_or_default();
    let millis = Utc::now().timestamp_millis();
    let value = if now {
        format!("{REFRESH_NOW_PREFIX}{millis}")
    } else {
        millis.to_string()
    };
    let patch = json!({ "metadata": { "annotations": { REFRESH_REQUESTED_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("dhanaccount/{name}: refresh requested");
    if let Some(note) = throttle_note(&status, Utc::now()) {
        println!("{note}");
    }
    if let (Some(close), false) = (close, now) {
        return Ok(Outcome::Held(format!(
            "held until the market's close at {}",
            ist_time(close)
        )));
    }
    let Some(timeout) = wait else {
        return Ok(Outcome::Refreshed("requested; not waiting".into()));
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_phase = status.phase;
    loop {
        let status = api.get(name).await?.status.unwrap_or_default();
        if let Some(outcome) = settled(&status, &value, status_hash(before)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_session_is_known_from_the_calendar_and_its_close_named() {
        let calendar = TradingCalendar::builtin();
        // Monday 2026-11-23, 11:00 IST: open until 15:30 IST.
        let now = utc("2026-11-23T05:30:00Z");
        let close = session_close(&calendar, now).expect("in session");
        assert_eq!(close, utc("2026-11-23T10:00:00Z"));
        let note = market_note(close, now);
        assert!(note.contains("15:30") && note.contains("--now"), "{note}");
        // Sunday, and Monday after the close: no session, nothing to wait for.
        assert_eq!(session_close(&calendar, utc("2026-11-22T05:30:00Z")), None);
        assert_eq!(session_close(&calendar, utc("2026-11-23T10:30:00Z")), None);
    }

    #[test]
    fn a_pod_holds_the_token_through_any_volume_or_variable() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({ "metadata": { "name": "p" }, "spec": spec })).unwrap()
        };
        let container = |extra: serde_json::Value| {
            let mut c = json!({ "name": "c", "image": "i" });
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        let holding = [
            json!({ "containers": [container(json!({}))],
                    "volumes": [{ "name": "t", "secret": { "secretName": "alice-token" } }] }),
            json!({ "containers": [container(json!({}))],
                    "volumes": [{ "name": "t", "projected": { "sources": [
                        { "secret": { "name": "alice-token" } }] } }] }),
            json!({ "containers": [container(json!({ "envFrom": [
                        { "secretRef": { "name": "alice-token" } }] }))] }),
            json!({ "containers": [container(json!({ "env": [{ "name": "T", "valueFrom": {
                        "secretKeyRef": { "name": "alice-token", "key": "DHAN_ACCESS_TOKEN" } } }] }))] }),
        ];
        for spec in holding {
            assert!(uses_secret(&pod(spec.clone()), "alice-token"), "{spec}");
            assert!(!uses_secret(&pod(spec.clone()), "bob-token"), "{spec}");
        }
    }
}
