//! Events on DhanAccounts (`events.k8s.io/v1`, what `kubectl describe` shows).
//!
//! An event that repeats (same type, reason and action on the same account within six minutes)
//! is counted into the series of the first one instead of being written again: the aggregation
//! kube's own `Recorder` does. That recorder keeps every event it publishes, whole, in a table;
//! one shared by all accounts searches every cached event on each publish, and one per account
//! was half of the operator's heap at 10,000 accounts. Here an account keeps only its last
//! event's name, key, count and time, in its memo (`memo.rs`).

use super::Context;
use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::warn;

/// How long after its last observation a repeat still counts into an event (as kube's recorder).
const SERIES_WINDOW: Duration = Duration::minutes(6);

/// Longest note the API accepts (1 kB); longer ones are cut.
const NOTE_LIMIT: usize = 1000;

/// One event to publish.
#[derive(Clone, Copy, Debug)]
pub struct Occurrence<'a> {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: &'a str,
}

/// What an account remembers of the last event published on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastEvent {
    name: String,
    warning: bool,
    reason: &'static str,
    action: &'static str,
    count: i32,
    observed: DateTime<Utc>,
}

impl LastEvent {
    /// Whether `what`, at `now`, counts into this event's series.
    fn repeated_by(&self, what: &Occurrence, now: DateTime<Utc>) -> bool {
        self.warning == what.warning
            && self.reason == what.reason
            && self.action == what.action
            && now - self.observed < SERIES_WINDOW
    }
}

/// Publishes `what` on the object `regarding` (a DhanAccount), counting a repeat into the last
/// event's series. A failure is logged and otherwise ignored: events are a courtesy.
pub async fn publish(ctx: &Context, regarding: &ObjectReference, what: Occurrence<'_>) {
    let uid = regarding.uid.clone().unwrap_or_default();
    let now = ctx.clock.now();
    let namespace = regarding.namespace.as_deref().unwrap_or("default");
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(last) = ctx
        .memos
        .last_event(&uid)
        .filter(|last| last.repeated_by(&what, now))
    {
        let count = last.count + 1;
        let series = json!({"series": {"count": count, "lastObservedTime": micro_time(now)}});
        match events
            .patch(&last.name, &PatchParams::default(), &Patch::Merge(&series))
            .await
        {
            Ok(_) => {
                let last = LastEvent {
                    count,
                    observed: now,
                    ..last
                };
                ctx.memos.remember_event(&uid, last);
                return;
            }
            // Gone (events live an hour, or someone deleted it): a new one.
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => {
                warn!(%error, "could not publish event");
                return;
            }
        }
    }
    let event = new_event(ctx, regarding, &what, now);
    match events.create(&PostParams::default(), &event).await {
        Ok(created) => {
            let last = LastEvent {
                name: created.name_any(),
                warning: what.warning,
                reason: what.reason,
                action: what.action,
                count: 1,
                observed: now,
            };
            ctx.memos.remember_event(&uid, last);
        }
        Err(error) => warn!(%error, "could not publish event"),
    }
}

fn new_event(
    ctx: &Context,
    regarding: &ObjectReference,
    what: &Occurrence,
    now: DateTime<Utc>,
) -> Event {
    let controller = ctx.reporter.controller.clone();
    let prefix = regarding.name.as_deref().unwrap_or(&controller);
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(timestamp(now))),
        type_: Some(if what.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(what.reason.into()),
        action: Some(what.action.into()),
        note: Some(what.message.chars().take(NOTE_LIMIT).collect()),
        regarding: Some(regarding.clone()),
        reporting_instance: Some(
            ctx.reporter
                .instance
                .clone()
                .unwrap_or_else(|| controller.clone()),
        ),
        reporting_controller: Some(controller),
        ..Event::default()
    }
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp::from_microsecond(at.timestamp_micros()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn micro_time(at: DateTime<Utc>) -> serde_json::Value {
    serde_json::to_value(MicroTime(timestamp(at))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn last(at: DateTime<Utc>) -> LastEvent {
        LastEvent {
            name: "alice.x1".into(),
            warning: true,
            reason: "LoginFailed",
            action: "Reconcile",
            count: 1,
            observed: at,
        }
    }

    fn occurrence(reason: &'static str, warning: bool) -> Occurrence<'static> {
        Occurrence {
            warning,
            reason,
            action: "Reconcile",
            message: "whatever it says",
        }
    }

    #[test]
    fn a_repeat_counts_into_the_series_only_while_it_is_recent_and_the_same() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 3, 0, 0).unwrap();
        let last = last(at);
        let same = occurrence("LoginFailed", true);
        assert!(last.repeated_by(&same, at + Duration::minutes(5)));
        assert!(
            !last.repeated_by(&same, at + Duration::minutes(6)),
            "aged out"
        );
        assert!(!last.repeated_by(&occurrence("Refreshed", true), at));
        assert!(!last.repeated_by(&occurrence("LoginFailed", false), at));
        let other_action = Occurrence {
            action: "Decode",
            ..same
        };
        assert!(!last.repeated_by(&other_action, at));
    }

    #[test]
    fn the_series_time_is_a_micro_time() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 3, 0, 0).unwrap() + Duration::microseconds(7);
        assert_eq!(micro_time(at), json!("2026-12-03T03:00:00.000007Z"));
    }
}
