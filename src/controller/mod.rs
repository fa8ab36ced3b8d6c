//! The Kubernetes side: watches DhanAccounts and the Secrets they use, and runs the reconciler.

pub mod conflict;
pub mod credentials;
pub mod login;
pub mod login_job;
pub mod login_network_policy;
pub mod login_outcome;
pub mod obtain;
pub mod output;
pub mod reconcile;
pub mod refresh;
pub mod rollout;
pub mod status;

use crate::crd::DhanAccount;
use crate::decision::{Limits, ProbeVerdict};
use crate::dhan::DhanClient;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use login::{LoginSettings, LoginSlots};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::info;

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub dhan: DhanClient,
    pub limiter: RateLimiter,
    pub limits: Limits,
    pub recorder: Recorder,
    pub store: Store<DhanAccount>,
    pub metrics: Arc<Metrics>,
    /// The `browser` method's settings.
    pub login: LoginSettings,
    /// The cap on concurrent login Jobs.
    pub logins: LoginSlots,
    /// Last probe per account UID: (token hash, when, verdict). Kept in memory only, so a
    /// probe that finds nothing new writes nothing.
    probes: Mutex<HashMap<String, ProbeRecord>>,
}

/// The last probe of an account: which token, when, and what Dhan said.
struct ProbeRecord {
    token_hash: String,
    at: DateTime<Utc>,
    verdict: ProbeVerdict,
}

impl Context {
    /// The last probe of this account's current token, if any.
    pub fn probe_of(
        &self,
        uid: &str,
        token_hash: Option<&str>,
    ) -> Option<(DateTime<Utc>, ProbeVerdict)> {
        let probes = self.probes.lock().expect("probe map poisoned");
        let record = probes.get(uid)?;
        (Some(record.token_hash.as_str()) == token_hash).then_some((record.at, record.verdict))
    }

    pub fn remember_probe(
        &self,
        uid: &str,
        token_hash: &str,
        at: DateTime<Utc>,
        verdict: ProbeVerdict,
    ) {
        self.probes.lock().expect("probe map poisoned").insert(
            uid.to_string(),
            ProbeRecord {
                token_hash: token_hash.to_string(),
                at,
                verdict,
            },
        );
    }
}

/// Settings of the controller.
pub struct Settings {
    pub namespace: Option<String>,
    pub dhan: DhanClient,
    pub dhan_calls_per_second: f64,
    pub limits: Limits,
    pub concurrency: u16,
    pub login: LoginSettings,
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) {
    let (accounts, secrets): (Api<DhanAccount>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller = Controller::new(accounts, watcher::Config::default().any_semantic())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(settings.concurrency),
        );
    let store = controller.store();
    metrics.watch_accounts(store.clone());
    let secret_index = store.clone();
    let reporter = Reporter {
        controller: "dhan-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        dhan: settings.dhan,
        limiter: RateLimiter::new(settings.dhan_calls_per_second),
        limits: settings.limits,
        store,
        metrics,
        probes: Mutex::default(),
        logins: LoginSlots::new(settings.login.max_concurrent),
        login: settings.login.clone(),
    });
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
        let pod_index = context.store.clone();
        controller
            .owns(
                jobs,
                watcher::Config::default().labels(login_job::ACCOUNT_LABEL),
            )
            .watches(
                pods,
                watcher::Config::default().labels(login_job::ACCOUNT_LABEL),
                move |pod| account_of_login_pod(&pod_index, &pod),
            )
    } else {
        controller
    };
    controller
        .watches(
            secrets,
            watcher::Config::default().any_semantic(),
            move |secret| accounts_using(&secret_index, &secret),
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The account a login Pod belongs to, by its label (the account's name, cut to 63 characters).
fn account_of_login_pod(store: &Store<DhanAccount>, pod: &Pod) -> Vec<ObjectRef<DhanAccount>> {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(label) = pod.labels().get(login_job::ACCOUNT_LABEL) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|a| a.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|a| login_job::account_label(a) == *label)
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Accounts that own `secret` (their output) or read credentials from it.
fn accounts_using(store: &Store<DhanAccount>, secret: &Secret) -> Vec<ObjectRef<DhanAccount>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let owners: Vec<String> = secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "DhanAccount")
        .map(|o| o.uid.clone())
        .collect();
    store
        .state()
        .iter()
        .filter(|a| a.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|a| {
            a.uid().is_some_and(|uid| owners.contains(&uid))
                || credentials::CredentialKey::ALL.iter().any(|key| {
                    credentials::source_of(&a.spec, *key).is_some_and(|s| s.secret_name == name)
                })
        })
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}
