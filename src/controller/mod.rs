//! The Kubernetes side: watches DhanAccounts and the Secrets and Jobs they use, and runs the
//! reconciler — gather ([`gather`]), decide (`crate::decision`) with Dhan calls ([`act`]),
//! apply ([`apply`]).

pub mod act;
pub mod apply;
pub mod conflict;
pub mod credentials;
pub mod gather;
pub mod index;
pub mod login;
pub mod login_job;
pub mod login_network_policy;
pub mod login_outcome;
pub mod memo;
pub mod output;
pub mod reconcile;
pub mod rollout;
pub mod spec;
pub mod status;

use crate::clock::Clock;
use crate::crd::DhanAccount;
use crate::decision::Limits;
use crate::dhan::DhanApi;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use futures::{StreamExt, TryStreamExt};
use index::AccountIndex;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use login::{LoginSettings, LoginSlots};
use memo::{Memos, OwnWrites};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub dhan: Arc<dyn DhanApi>,
    /// The only clock the reconciler reads.
    pub clock: Arc<dyn Clock>,
    pub limiter: RateLimiter,
    pub limits: Limits,
    /// Who publishes events (each account has its own recorder, in `memos`).
    pub reporter: Reporter,
    pub store: Store<DhanAccount>,
    /// Lookups across all accounts (conflicts, Secret users, recorded logins).
    pub index: Arc<AccountIndex>,
    pub metrics: Arc<Metrics>,
    /// The `browser` method's settings.
    pub login: LoginSettings,
    /// The cap on concurrent login Jobs.
    pub logins: LoginSlots,
    /// What this process remembers per account between reconciles (probes, unwritten tokens,
    /// its own last status write).
    pub memos: Arc<Memos>,
    /// This process's own Secret writes, whose watch events wake no reconcile.
    pub own_writes: Arc<OwnWrites>,
    /// With several replicas: confirms before each mint that this process still leads.
    pub leadership: Option<Arc<Leadership>>,
    /// The longest one Dhan call may take (its client timeout).
    pub dhan_timeout: Duration,
}

/// Settings of the controller.
pub struct Settings {
    pub namespace: Option<String>,
    pub dhan: Arc<dyn DhanApi>,
    pub clock: Arc<dyn Clock>,
    pub dhan_calls_per_second: f64,
    pub limits: Limits,
    pub concurrency: u16,
    pub login: LoginSettings,
    pub leadership: Option<Arc<Leadership>>,
    pub dhan_timeout: Duration,
}

/// What `kubectl apply` keeps on every object it applied: a copy of the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How often per-account memory of deleted accounts is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) {
    let (accounts, secrets): (Api<DhanAccount>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let index = Arc::new(AccountIndex::default());
    let (store, writer) = reflector::store();
    let indexing = index.clone();
    let account_events = watcher(accounts, watcher::Config::default().any_semantic())
        .default_backoff()
        // Nothing reads them, and with thousands of accounts they are most of the cache.
        .modify(|account| {
            account.managed_fields_mut().clear();
            account.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .map_ok(move |event| {
            indexing.apply(&event);
            event
        });
    let memos = Arc::new(Memos::default());
    let own_writes = Arc::new(OwnWrites::default());
    let own_status = memos.clone();
    // The cache takes in every change; the change a reconcile's own status write made wakes
    // no second reconcile: that one already knew it.
    let triggers = reflector::reflector(writer, account_events)
        .applied_objects()
        .try_filter(move |account| {
            futures::future::ready(!own_status.is_own_status_write(account))
        });
    let controller = Controller::for_stream(triggers, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(settings.concurrency),
    );
    metrics.watch_accounts(store.clone());
    let secret_index = index.clone();
    let reporter = Reporter {
        controller: "dhan-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        reporter,
        client,
        dhan: settings.dhan,
        clock: settings.clock,
        limiter: RateLimiter::new(settings.dhan_calls_per_second),
        limits: settings.limits,
        store,
        index,
        metrics,
        memos,
        own_writes: own_writes.clone(),
        logins: LoginSlots::new(settings.login.max_concurrent),
        login: settings.login.clone(),
        leadership: settings.leadership,
        dhan_timeout: settings.dhan_timeout,
    });
    tokio::spawn(prune(context.clone()));
    info!("controller started");
    let controller = if settings.login.enabled {
        // Login Jobs are owned by their account: a finished one wakes its account at once.
        let jobs: Api<Job> = match &settings.namespace {
            Some(ns) => Api::namespaced(context.client.clone(), ns),
            None => Api::all(context.client.clone()),
        };
        // Their Pods too: the `login` container's result counts as soon as it terminates, even
        // while a Chromium sidecar that did not exit keeps the Job running.
        let pods: Api<Pod> = match &settings.namespace {
            Some(ns) => Api::namespaced(context.client.clone(), ns),
            None => Api::all(context.client.clone()),
        };
        let pod_index = context.index.clone();
        controller
            .owns(
                jobs,
                watcher::Config::default().labels(login_job::LOGIN_FOR_LABEL),
            )
            .watches(
                pods,
                watcher::Config::default().labels(login_job::LOGIN_FOR_LABEL),
                move |pod| account_of_login_pod(&pod_index, &pod),
            )
    } else {
        controller
    };
    controller
        .watches(
            secrets,
            watcher::Config::default().any_semantic(),
            move |secret| {
                if own_writes.is_echo(&secret) {
                    return Vec::new();
                }
                accounts_using(&secret_index, &secret)
            },
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Drops what this process remembers of accounts that are gone (a deleted object is never
/// reconciled again, so nothing else would).
async fn prune(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let live: HashSet<String> = ctx.store.state().iter().filter_map(|a| a.uid()).collect();
        prune_once(&ctx, &live);
    }
}

/// Forgets every account whose UID is not in `live`.
pub(crate) fn prune_once(ctx: &Context, live: &HashSet<String>) {
    for uid in ctx.memos.retain(|uid| live.contains(uid)) {
        ctx.logins.release(&uid);
    }
}

/// The account a login Pod belongs to, by its label (the account's name, cut to 63 characters).
fn account_of_login_pod(index: &AccountIndex, pod: &Pod) -> Vec<ObjectRef<DhanAccount>> {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(label) = pod.labels().get(login_job::LOGIN_FOR_LABEL) else {
        return Vec::new();
    };
    index.login_label_users(&namespace, label)
}

/// Accounts that own `secret` (their output) or read credentials from it.
fn accounts_using(index: &AccountIndex, secret: &Secret) -> Vec<ObjectRef<DhanAccount>> {
    let account = secret.annotations().get(output::ACCOUNT_ANNOTATION);
    index.secret_users(
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default(),
        account.map(String::as_str),
    )
}

#[cfg(test)]
mod tests;
