//! The Kubernetes side: watches DhanAccounts and the Secrets and Jobs they use, and runs the
//! reconciler — gather ([`gather`]), decide (`crate::decision`) with Dhan calls ([`act`]),
//! apply ([`apply`]).

pub mod act;
pub mod apply;
pub mod conflict;
pub mod credentials;
pub mod decode;
pub mod error;
pub mod events;
pub mod gather;
pub mod index;
pub mod login;
pub mod login_job;
pub mod login_network_policy;
pub mod login_outcome;
pub mod login_pod;
pub mod memo;
pub mod output;
pub mod pod_sync;
pub mod reconcile;
pub mod rollout;
pub mod scope;
pub mod secret_watch;
pub mod spec;
pub mod status;
pub mod watch;

use crate::calendar_file::CalendarInForce;
use crate::claims::{ClaimSettings, Claims};
use crate::clock::Clock;
use crate::crd::DhanAccount;
use crate::decision::Limits;
use crate::dhan::DhanApi;
use crate::health::Health;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use futures::StreamExt;
use index::AccountIndex;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use login::{LoginSettings, LoginSlots};
use memo::{Memos, OwnWrites};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub dhan: Arc<dyn DhanApi>,
    /// The only clock the reconciler reads.
    pub clock: Arc<dyn Clock>,
    /// The trading calendar this operator decides by; each reconcile takes a snapshot.
    pub calendar: CalendarInForce,
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
    /// Client-ID claims shared with other installs, when configured.
    pub claims: Option<Arc<Claims>>,
    /// Whether `spec.rolloutRestartTargets` are restarted at all (workloads must also opt in).
    pub rollouts: bool,
    /// Whether running Pods that mount an output Secret and opted in are told to sync when it
    /// holds a new token (`pod_sync`).
    pub sync_pods: bool,
    /// What `/readyz` reports: the watches' health, skipped objects.
    pub health: Health,
}

/// Settings of the controller.
pub struct Settings {
    /// The namespaces watched; none: all of them.
    pub namespaces: Vec<String>,
    pub dhan: Arc<dyn DhanApi>,
    pub clock: Arc<dyn Clock>,
    pub calendar: CalendarInForce,
    pub dhan_calls_per_second: f64,
    pub limits: Limits,
    pub concurrency: u16,
    pub login: LoginSettings,
    pub leadership: Option<Arc<Leadership>>,
    pub dhan_timeout: Duration,
    pub claims: Option<ClaimSettings>,
    pub rollouts: bool,
    pub sync_pods: bool,
    pub health: Health,
}

/// The controller's cache of DhanAccounts, which the notifier reads too: one watch and one copy
/// of every account, however many parts read them.
pub struct AccountCache {
    store: Store<DhanAccount>,
    writer: Writer<DhanAccount>,
    changes: tokio::sync::watch::Sender<()>,
}

/// A reader of the [`AccountCache`]: the accounts, and a signal that ticks when they changed
/// (many changes in a row tick once).
pub struct AccountReader {
    pub store: Store<DhanAccount>,
    pub changes: tokio::sync::watch::Receiver<()>,
}

impl Default for AccountCache {
    fn default() -> Self {
        let (store, writer) = reflector::store();
        AccountCache {
            store,
            writer,
            changes: tokio::sync::watch::channel(()).0,
        }
    }
}

impl AccountCache {
    pub fn reader(&self) -> AccountReader {
        AccountReader {
            store: self.store.clone(),
            changes: self.changes.subscribe(),
        }
    }
}

/// How often per-account memory of deleted accounts is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, cache: AccountCache) {
    let AccountCache {
        store,
        writer,
        changes,
    } = cache;
    let calendar = settings.calendar.clone();
    metrics.watch_accounts(
        store.clone(),
        settings.clock.clone(),
        Arc::new(move || calendar.snapshot()),
    );
    let reporter = Reporter {
        controller: "dhan-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let claims = settings
        .claims
        .map(|c| Arc::new(Claims::new(client.clone(), c, settings.clock.clone())));
    let index = Arc::new(AccountIndex::new(settings.clock.clone()));
    let context = Arc::new(Context {
        reporter,
        client,
        dhan: settings.dhan,
        clock: settings.clock,
        calendar: settings.calendar,
        limiter: RateLimiter::new(settings.dhan_calls_per_second),
        limits: settings.limits,
        store: store.clone(),
        index,
        metrics,
        memos: Arc::new(Memos::default()),
        own_writes: Arc::new(OwnWrites::default()),
        logins: LoginSlots::new(settings.login.max_concurrent),
        login: settings.login.clone(),
        leadership: settings.leadership,
        dhan_timeout: settings.dhan_timeout,
        claims,
        rollouts: settings.rollouts,
        sync_pods: settings.sync_pods,
        health: settings.health,
    });
    tokio::spawn(prune(context.clone()));
    if let Some(claims) = context.claims.clone() {
        tokio::spawn(keep_claims(claims));
    }
    let scope = settings.namespaces.as_slice();
    let (namespaces, with_accounts) = tokio::sync::watch::channel(Default::default());
    let accounts = watch::accounts(context.clone(), scope, writer, namespaces, changes);
    let mut controller = Controller::for_stream(accounts, store)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .reconcile_on(secret_watch::triggers(context.clone(), with_accounts))
        .reconcile_on(context.index.wakes());
    if settings.login.enabled {
        controller = watch_logins(controller, &context, scope);
    }
    if context.claims.is_some() {
        controller = watch_claims(controller, &context);
    }
    info!("controller started");
    controller
        .shutdown_on_signal()
        .run(
            reconcile::reconcile,
            reconcile::error_policy,
            context.clone(),
        )
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // Logged where they happen: the watches and the reconciler.
                Err(controller::Error::QueueError(e)) => debug!(error = %e, "watch error"),
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(o)) => debug!(%o, "object gone"),
                Err(e) => warn!(error = %e, "controller error"),
            }
            futures::future::ready(())
        })
        .await;
    // Every reconcile in flight has ended: the next process of this install may act at once.
    if let Some(claims) = &context.claims {
        claims.stop().await;
    }
}

/// Login Jobs and their Pods wake their account: a finished Job at once, and a Pod as soon
/// as its `login` container terminated, even while a Chromium sidecar that did not exit
/// keeps the Job running. Metadata only: the reconcile reads what it needs.
fn watch_logins(
    controller: Controller<DhanAccount>,
    ctx: &Arc<Context>,
    scope: &[String],
) -> Controller<DhanAccount> {
    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        client: &Client,
        namespace: Option<&str>,
    ) -> Api<PartialObjectMeta<K>> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let labelled = || watcher::Config::default().labels(login_job::LOGIN_FOR_LABEL);
    let jobs = watch::observed(
        "login-jobs".into(),
        ctx.clone(),
        scope::watch(&ctx.client, scope, labelled(), api::<Job>),
    );
    let pods = watch::observed(
        "login-pods".into(),
        ctx.clone(),
        scope::watch(&ctx.client, scope, labelled(), api::<Pod>),
    );
    let pod_index = ctx.index.clone();
    controller
        .owns_stream(jobs.touched_objects())
        .watches_stream(pods.touched_objects(), move |pod| {
            account_of_login_pod(&pod_index, &pod)
        })
}

/// The cluster-wide client-ID claims wake the accounts of their client ID here: one waiting in
/// `Conflict` for another install's account takes over as soon as that one lets go, without
/// polling. Metadata only: a claim's name and version say that it changed.
fn watch_claims(
    controller: Controller<DhanAccount>,
    ctx: &Arc<Context>,
) -> Controller<DhanAccount> {
    let api: Api<PartialObjectMeta<crate::claims::DhanClientClaim>> = Api::all(ctx.client.clone());
    let claims = watch::observed(
        "client-claims".into(),
        ctx.clone(),
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let index = ctx.index.clone();
    let own = ctx.claims.as_ref().map(|c| c.install_label());
    controller.watches_stream(claims.touched_objects(), move |claim| {
        // This install's own writes (a mint recorded, a claim taken) tell its accounts nothing
        // they do not know; within the install the account index wakes them.
        let held_here = claim.labels().get(crate::claims::INSTALL_LABEL) == own.as_ref();
        if held_here {
            return Vec::new();
        }
        index.claimants(&claim.name_any())
    })
}

/// Keeps this install's heartbeat, so its client-ID claims hold.
async fn keep_claims(claims: Arc<Claims>) {
    loop {
        if let Err(error) = claims.beat().await {
            warn!(%error, "not acting for this install: no mints meanwhile");
        }
        tokio::time::sleep(crate::claims::HEARTBEAT_EVERY).await;
    }
}

/// Drops what this process remembers of accounts that are gone (a deleted object is never
/// reconciled again, so nothing else would).
async fn prune(ctx: Arc<Context>) {
    // Before the first list the cache is empty, and every account would look gone.
    if ctx.store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let mut live: HashSet<String> = ctx.store.state().iter().filter_map(|a| a.uid()).collect();
        // Skipped accounts exist: they keep what this process holds for them.
        live.extend(ctx.health.skipped_uids());
        prune_once(&ctx, &live);
        if let Some(claims) = &ctx.claims {
            prune_claims(claims, &live).await;
        }
    }
}

/// Releases the claims of accounts that are gone, but not those of accounts deleted within
/// their grace: their re-creations may still adopt the tokens the claims protect.
pub(crate) async fn prune_claims(claims: &Claims, live: &HashSet<String>) {
    let gone = claims.holders().into_iter().filter(|u| !live.contains(u));
    for uid in gone.filter(|u| !claims.is_leaving(u)).collect::<Vec<_>>() {
        claims.release(&uid).await;
    }
}

/// Forgets every account whose UID is not in `live`.
pub(crate) fn prune_once(ctx: &Context, live: &HashSet<String>) {
    for uid in ctx.memos.retain(|uid| live.contains(uid)) {
        ctx.logins.release(&uid);
    }
}

/// The account a login Pod belongs to, by its label (the account's name, cut to 63 characters).
fn account_of_login_pod(index: &AccountIndex, pod: &impl Resource) -> Vec<ObjectRef<DhanAccount>> {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(label) = pod.labels().get(login_job::LOGIN_FOR_LABEL) else {
        return Vec::new();
    };
    index.login_label_users(&namespace, label)
}

/// Accounts that own `secret` (their output) or read credentials from it.
fn accounts_using(index: &AccountIndex, secret: &impl Resource) -> Vec<ObjectRef<DhanAccount>> {
    let meta = secret.meta();
    let account = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(output::ACCOUNT_ANNOTATION));
    index.secret_users(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        account.map(String::as_str),
    )
}

#[cfg(test)]
pub(crate) mod tests;
