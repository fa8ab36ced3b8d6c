//! Secrets are watched only where DhanAccounts live: one metadata-only watch per namespace that
//! holds an account, started when the first account appears there and stopped when the last
//! one goes. A cluster-wide Secret watch would list every Secret of every tenant — data
//! included, in one response when served from the watch cache, where the apiserver ignores
//! the page limit — although the operator reads only its accounts' own Secrets. The watches
//! only wake accounts (a changed credential retries a Failed account, a deleted output Secret
//! is written again); the reconcile reads the Secrets it needs with GETs.

use super::watch::observed;
use super::{Context, accounts_using};
use crate::crd::DhanAccount;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// The name of the Secret watch of `namespace`, in `/readyz` and metrics.
pub fn watch_name(namespace: &str) -> String {
    format!("secrets/{namespace}")
}

/// Accounts to reconcile because a Secret they use changed, from watches of the namespaces
/// `namespaces` names.
pub fn triggers(
    ctx: Arc<Context>,
    namespaces: channel::Receiver<BTreeSet<String>>,
) -> impl Stream<Item = ObjectRef<DhanAccount>> + Send + use<> {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(supervise(ctx, namespaces, sender));
    receiver
}

/// Keeps one watch running per namespace in `namespaces`.
async fn supervise(
    ctx: Arc<Context>,
    mut namespaces: channel::Receiver<BTreeSet<String>>,
    sender: mpsc::Sender<ObjectRef<DhanAccount>>,
) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted = namespaces.borrow_and_update().clone();
        running.retain(|namespace, task| {
            let keep = wanted.contains(namespace);
            if !keep {
                task.abort();
                ctx.health.stopped(&watch_name(namespace));
            }
            keep
        });
        for namespace in wanted {
            running.entry(namespace.clone()).or_insert_with(|| {
                tokio::spawn(watch_namespace(ctx.clone(), namespace, sender.clone()))
            });
        }
        if namespaces.changed().await.is_err() {
            break;
        }
    }
    for task in running.values() {
        task.abort();
    }
}

/// Watches the Secrets' metadata in `namespace` (paged lists: not from the watch cache, which
/// ignores the page size) and sends the accounts each change concerns.
async fn watch_namespace(
    ctx: Arc<Context>,
    namespace: String,
    mut sender: mpsc::Sender<ObjectRef<DhanAccount>>,
) {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), &namespace);
    let events = observed(
        watch_name(&namespace),
        ctx.clone(),
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let secret = match event {
            Ok(Event::Apply(secret) | Event::InitApply(secret) | Event::Delete(secret)) => secret,
            Ok(Event::Init | Event::InitDone) | Err(_) => continue,
        };
        // This process's own write of an output Secret: the reconcile that made it knew.
        if ctx.own_writes.is_echo(&secret) {
            continue;
        }
        for account in accounts_using(&ctx.index, &secret) {
            if sender.send(account).await.is_err() {
                return;
            }
        }
    }
}
