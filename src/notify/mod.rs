//! Notifications without Alertmanager: a task beside the controller that watches DhanAccounts
//! and DhanNotifiers, derives each account's state from its status, and sends one message per
//! change of state to the notifier's Telegram chat or webhook.
//!
//! It never touches the refresh path: it only reads accounts, and a slow or failing receiver
//! delays nothing but later messages of the same notifier. Only the leader runs it.

pub mod deliver;
pub mod egress;
pub mod error;
pub mod health;
pub mod message;
pub mod resource;

use crate::calendar_file::CalendarInForce;
use crate::clock::Clock;
use crate::controller::AccountReader;
use crate::crd::DhanAccount;
use crate::decision::calendar::TradingCalendar;
use crate::health::Health as WatchHealth;
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use health::{Health, Notice, health_of, notice_for};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use resource::{DhanNotifier, DhanNotifierSpec};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Time-based states (expiry within the hour) are re-checked this often.
const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Messages waiting for one notifier; past that, new ones are dropped and counted as failed.
const QUEUE: usize = 64;
/// A failed delivery is tried once more after this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One message for one notifier.
struct Outgoing {
    /// The notifier's spec when the message was queued: where it goes.
    spec: DhanNotifierSpec,
    notice: Notice,
    text: String,
    webhook_body: serde_json::Value,
}

/// Per notifier: what was last reported for each account, and its delivery queue.
struct NotifierState {
    reported: BTreeMap<String, Health>,
    queue: mpsc::Sender<Outgoing>,
}

/// The operator's parts the notifier shares: its time and trading calendar.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub calendar: CalendarInForce,
    /// Where messages may go.
    pub egress: egress::Egress,
}

/// Runs until the process stops. `namespaces` (none: all) limit it as `--namespace` limits the
/// controller;
/// `watch_health` names the accounts left out of the cache because they cannot be read.
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    shared: Shared,
    accounts: AccountReader,
    watch_health: WatchHealth,
) {
    let Shared {
        metrics,
        clock,
        calendar,
        egress,
    } = shared;
    let notifiers = crate::controller::scope::watch(
        &client,
        &namespaces,
        watcher::Config::default().any_semantic(),
        |client, namespace| -> Api<DhanNotifier> {
            match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        },
    );
    let account_store = accounts.store;
    let account_changes = futures::stream::unfold(accounts.changes, |mut changes| async move {
        changes.changed().await.ok().map(|()| ((), changes))
    });
    let (notifier_store, notifier_writer) = reflector::store();
    let notifier_events = reflector::reflector(notifier_writer, notifiers)
        .touched_objects()
        .map(|_| ());
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(RECHECK_EVERY).await;
        Some(((), ()))
    });
    // Changes that arrive together are judged together: judging looks at every account, and
    // the 08:00 refresh of thousands of accounts must not cost thousands of full passes.
    let mut wakeups = std::pin::pin!(
        futures::stream::select(
            futures::stream::select(account_changes, notifier_events),
            ticks,
        )
        .ready_chunks(WAKEUPS_PER_PASS)
    );
    let http = deliver::Sender::new(egress);
    let mut states: HashMap<String, NotifierState> = HashMap::new();
    info!("notifications started");
    while wakeups.next().await.is_some() {
        // Until both caches hold the full lists, an account not yet listed would look deleted
        // and be reported afresh once it appears.
        let synced = |store_ready: Option<Result<(), _>>| store_ready.is_some_and(|r| r.is_ok());
        if !synced(account_store.wait_until_ready().now_or_never())
            || !synced(notifier_store.wait_until_ready().now_or_never())
        {
            continue;
        }
        let delivery = Delivery {
            client: &client,
            http: &http,
            metrics: &metrics,
            clock: &clock,
        };
        let calendar = calendar.snapshot();
        evaluate(
            &delivery,
            &account_store,
            &watch_health,
            &notifier_store,
            &mut states,
            &calendar,
            clock.now(),
        )
        .await;
        tokio::time::sleep(PASS_PAUSE).await;
    }
}

/// At most this many changes are taken in per pass over the accounts.
const WAKEUPS_PER_PASS: usize = 4096;
/// The pause after each pass: changes meanwhile wait for the next one.
const PASS_PAUSE: Duration = Duration::from_secs(1);

/// What sends the messages and records their delivery.
struct Delivery<'a> {
    client: &'a Client,
    http: &'a deliver::Sender,
    metrics: &'a Arc<Metrics>,
    clock: &'a Arc<dyn Clock>,
}

/// The cache's objects by namespace and name: the cache's own order follows a hash seed, and
/// the order in which messages are queued and statuses written should not.
fn in_order<K: kube::Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_unstable_by(|a, b| namespace_and_name(a).cmp(&namespace_and_name(b)));
    objects
}

fn namespace_and_name<K: kube::Resource>(object: &Arc<K>) -> (Option<&str>, Option<&str>) {
    let meta = object.meta();
    (meta.namespace.as_deref(), meta.name.as_deref())
}

async fn evaluate(
    out: &Delivery<'_>,
    accounts: &Store<DhanAccount>,
    watch_health: &WatchHealth,
    notifiers: &Store<DhanNotifier>,
    states: &mut HashMap<String, NotifierState>,
    calendar: &TradingCalendar,
    now: DateTime<Utc>,
) {
    let all_accounts = in_order(accounts.state());
    let skipped = watch_health.skipped_objects();
    let notifiers = in_order(notifiers.state());
    let live: Vec<String> = notifiers.iter().filter_map(|n| n.uid()).collect();
    states.retain(|uid, _| live.contains(uid));
    for notifier in notifiers {
        let (Some(uid), Some(namespace)) = (notifier.uid(), notifier.namespace()) else {
            continue;
        };
        let state = states.entry(uid).or_insert_with(|| NotifierState {
            reported: remembered(&notifier),
            queue: spawn_worker(out, &notifier),
        });
        let watched: Vec<&Arc<DhanAccount>> = all_accounts
            .iter()
            .filter(|a| a.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|a| covers(&notifier.spec, &a.name_any()))
            .collect();
        let before = state.reported.clone();
        // An account that cannot be read is out of the cache, not gone: what was reported of it
        // stands, or it would be announced afresh once it can be read again.
        state.reported.retain(|name, _| {
            watched.iter().any(|a| &a.name_any() == name)
                || (covers(&notifier.spec, name)
                    && skipped.contains(&format!("{namespace}/{name}")))
        });
        for account in watched {
            let Some(health) = health_of(account, calendar, now) else {
                continue;
            };
            let name = account.name_any();
            let notice = notice_for(state.reported.get(&name).copied(), health);
            state.reported.insert(name, health);
            if let Some(notice) = notice.filter(|n| wanted(&notifier.spec, *n)) {
                queue(state, &notifier.spec, out.metrics, notice, account, now);
            }
        }
        if state.reported != before {
            remember(out.client, &notifier, &state.reported).await;
        }
    }
}

fn queue(
    state: &NotifierState,
    spec: &DhanNotifierSpec,
    metrics: &Metrics,
    notice: Notice,
    account: &DhanAccount,
    now: DateTime<Utc>,
) {
    let text = message::text(notice, account, now);
    let webhook_body = message::webhook_body(notice, account, &text);
    let outgoing = Outgoing {
        spec: spec.clone(),
        notice,
        text,
        webhook_body,
    };
    if state.queue.try_send(outgoing).is_err() {
        warn!(
            account = %account.name_any(),
            notice = notice.as_str(),
            "notification queue full; message dropped"
        );
        metrics.notification("queue", false);
    }
}

fn covers(spec: &DhanNotifierSpec, account: &str) -> bool {
    spec.accounts
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| n == account))
}

fn wanted(spec: &DhanNotifierSpec, notice: Notice) -> bool {
    spec.events
        .as_ref()
        .is_none_or(|events| events.iter().any(|e| e == notice.as_str()))
}

/// What the notifier's status says was last reported (survives operator restarts).
fn remembered(notifier: &DhanNotifier) -> BTreeMap<String, Health> {
    notifier
        .status
        .as_ref()
        .map(|s| {
            s.notified
                .iter()
                .filter_map(|(name, h)| Some((name.clone(), Health::parse(h)?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn remember(client: &Client, notifier: &DhanNotifier, reported: &BTreeMap<String, Health>) {
    let notified: BTreeMap<&str, &str> = reported
        .iter()
        .map(|(name, h)| (name.as_str(), h.as_str()))
        .collect();
    // A merge patch replaces the map's keys but keeps others: null out the accounts gone.
    let mut patch_map = serde_json::Map::new();
    if let Some(old) = notifier.status.as_ref() {
        for name in old.notified.keys() {
            patch_map.insert(name.clone(), serde_json::Value::Null);
        }
    }
    for (name, h) in notified {
        patch_map.insert(name.to_string(), json!(h));
    }
    patch_status(
        client,
        notifier,
        json!({ "status": { "notified": patch_map } }),
    )
    .await;
}

async fn patch_status(client: &Client, notifier: &DhanNotifier, patch: serde_json::Value) {
    let api: Api<DhanNotifier> =
        Api::namespaced(client.clone(), &notifier.namespace().unwrap_or_default());
    if let Err(error) = api
        .patch_status(
            &notifier.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(notifier = %notifier.name_any(), %error, "cannot write the notifier's status");
    }
}

/// One task per notifier delivers its messages in order.
fn spawn_worker(out: &Delivery<'_>, notifier: &DhanNotifier) -> mpsc::Sender<Outgoing> {
    let (sender, mut receiver) = mpsc::channel::<Outgoing>(QUEUE);
    let (client, http, metrics, clock) = (
        out.client.clone(),
        out.http.clone(),
        out.metrics.clone(),
        out.clock.clone(),
    );
    let notifier = notifier.clone();
    tokio::spawn(async move {
        let namespace = notifier.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        while let Some(outgoing) = receiver.recv().await {
            let mut problems = Vec::new();
            if let Some(target) = &outgoing.spec.telegram {
                let send = || {
                    deliver::telegram(
                        &http,
                        &secrets,
                        &target.secret_name,
                        target.api_url.as_deref(),
                        &outgoing.text,
                    )
                };
                let result = with_retry(send).await;
                report(
                    &metrics,
                    &notifier,
                    "telegram",
                    outgoing.notice,
                    result,
                    &mut problems,
                );
            }
            if let Some(target) = &outgoing.spec.webhook {
                let send = || {
                    deliver::webhook(&http, &secrets, &target.secret_name, &outgoing.webhook_body)
                };
                let result = with_retry(send).await;
                report(
                    &metrics,
                    &notifier,
                    "webhook",
                    outgoing.notice,
                    result,
                    &mut problems,
                );
            }
            // A delivery clears the last problem; a failure leaves lastDeliveryTime as it was.
            let status = if problems.is_empty() {
                json!({ "lastDeliveryTime": clock.now(), "message": null })
            } else {
                json!({ "message": problems.join("; ") })
            };
            patch_status(&client, &notifier, json!({ "status": status })).await;
        }
    });
    sender
}

async fn with_retry<F, Fut>(send: F) -> Result<(), deliver::DeliveryError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), deliver::DeliveryError>>,
{
    match send().await {
        Err(deliver::DeliveryError::Unreachable(_) | deliver::DeliveryError::Rejected(500..)) => {
            tokio::time::sleep(RETRY_AFTER).await;
            send().await
        }
        result => result,
    }
}

fn report(
    metrics: &Metrics,
    notifier: &DhanNotifier,
    channel: &str,
    notice: Notice,
    result: Result<(), deliver::DeliveryError>,
    problems: &mut Vec<String>,
) {
    metrics.notification(channel, result.is_ok());
    match result {
        Ok(()) => info!(
            notifier = %notifier.name_any(),
            namespace = %notifier.namespace().unwrap_or_default(),
            channel,
            notice = notice.as_str(),
            "notification sent"
        ),
        Err(error) => {
            warn!(
                notifier = %notifier.name_any(),
                namespace = %notifier.namespace().unwrap_or_default(),
                channel,
                notice = notice.as_str(),
                %error,
                "notification not delivered"
            );
            problems.push(format!("{channel}: {error}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DhanAccountSpec, DhanAccountStatus, Phase};
    use kube::runtime::reflector::store::Writer;

    /// An API server that answers nothing: status writes fail, and are only logged.
    fn offline() -> Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("offline"))
        });
        Client::new(service, "default")
    }

    fn failed(name: &str) -> DhanAccount {
        let mut account = DhanAccount::new(name, DhanAccountSpec::default());
        account.metadata.namespace = Some("trading".into());
        account.status = Some(DhanAccountStatus {
            phase: Some(Phase::Failed),
            ..Default::default()
        });
        account
    }

    #[tokio::test]
    async fn messages_are_queued_in_account_order_whatever_the_caches_order() {
        let (accounts, mut account_writer): (_, Writer<DhanAccount>) = reflector::store();
        let names: Vec<String> = (0..16)
            .map(|i| format!("acct-{:02}", (i * 7) % 16))
            .collect();
        for name in &names {
            account_writer.apply_watcher_event(&watcher::Event::Apply(failed(name)));
        }
        let (notifiers, mut notifier_writer): (_, Writer<DhanNotifier>) = reflector::store();
        let mut notifier = DhanNotifier::new("ops", DhanNotifierSpec::default());
        notifier.metadata.namespace = Some("trading".into());
        notifier.metadata.uid = Some("uid-ops".into());
        notifier_writer.apply_watcher_event(&watcher::Event::Apply(notifier));
        let (queue, mut queued) = mpsc::channel(QUEUE);
        let mut states = HashMap::from([(
            "uid-ops".to_string(),
            NotifierState {
                reported: BTreeMap::new(),
                queue,
            },
        )]);
        // reqwest is built without a TLS provider; the operator installs ring's at start.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let delivery = Delivery {
            client: &offline(),
            http: &deliver::Sender::new(egress::Egress::default()),
            metrics: &Arc::new(Metrics::default()),
            clock: &(Arc::new(crate::clock::SystemClock) as Arc<dyn Clock>),
        };
        let now = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let calendar = TradingCalendar::builtin();
        evaluate(
            &delivery,
            &accounts,
            &WatchHealth::default(),
            &notifiers,
            &mut states,
            &calendar,
            now,
        )
        .await;

        let mut messaged = Vec::new();
        while let Ok(outgoing) = queued.try_recv() {
            messaged.push(
                outgoing.webhook_body["account"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        let mut sorted = names;
        sorted.sort();
        assert_eq!(messaged, sorted);
    }
}
