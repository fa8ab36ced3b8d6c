//! The controller's watches: the DhanAccounts (decoded one by one, so one unreadable object is
//! reported and skipped instead of failing the list, keeping its claim on its client ID), and
//! around every watch its health (for `/readyz`), its errors logged and counted.

use super::Context;
use super::decode::{Undecodable, decode, stand_in};
use super::events::{self, Occurrence};
use crate::crd::DhanAccount;
use crate::metrics::WatchLabels;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch as channel;
use tracing::warn;

/// Name of the DhanAccount watch in `/readyz` and metrics.
pub const ACCOUNTS_WATCH: &str = "dhanaccounts";

/// Passes a watch's events through, keeping its health and counting its errors.
pub fn observed<K, S>(
    name: String,
    ctx: Arc<Context>,
    stream: S,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + use<K, S>
where
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
{
    ctx.health.starting(&name);
    stream.inspect(move |event| match event {
        Ok(Event::Init | Event::InitApply(_)) => {}
        Ok(Event::InitDone) => ctx.health.listed(&name),
        Ok(Event::Apply(_) | Event::Delete(_)) => ctx.health.delivered(&name),
        Err(error) => {
            let error = describe(error);
            warn!(watch = %name, %error, "watch failed; retrying");
            ctx.health.failed(&name, error);
            ctx.metrics
                .watch_errors
                .get_or_create(&WatchLabels {
                    watch: name.clone(),
                })
                .inc();
        }
    })
}

/// A watch error in a line: the API server's message rather than its whole status.
fn describe(error: &watcher::Error) -> String {
    use watcher::Error as E;
    let api = |step: &str, error: &kube::Error| match error {
        kube::Error::Api(s) => format!("{step}: {} ({} {})", s.message, s.code, s.reason),
        other => format!("{step}: {other}"),
    };
    match error {
        E::InitialListFailed(e) => api("list", e),
        E::WatchStartFailed(e) => api("watch", e),
        E::WatchFailed(e) => api("watch stream", e),
        E::WatchError(s) => format!("watch: {} ({} {})", s.message, s.code, s.reason),
        E::NoResourceVersion => error.to_string(),
    }
}

/// The DhanAccounts in scope, decoded one by one into the controller's cache (`writer`). The
/// namespaces that hold accounts go to `namespaces` (Secrets are watched there only).
pub fn accounts(
    ctx: Arc<Context>,
    scope: &[String],
    writer: Writer<DhanAccount>,
    namespaces: channel::Sender<BTreeSet<String>>,
    changes: channel::Sender<()>,
) -> impl Stream<Item = watcher::Result<DhanAccount>> + Send + use<> {
    let resource = ApiResource::erase::<DhanAccount>(&());
    let api = move |client: &kube::Client, namespace: Option<&str>| -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    };
    // From the apiserver's watch cache: the operator only ever needs a recent view.
    let config = watcher::Config::default().any_semantic();
    let mut decoder = Decoder {
        ctx: ctx.clone(),
        namespaces,
        seen: Placement::default(),
        relisted: None,
    };
    let memos = ctx.memos.clone();
    let watch = super::scope::watch(&ctx.client, scope, config, api);
    observed(ACCOUNTS_WATCH.into(), ctx, watch)
        .filter_map(move |event| future::ready(decoder.map(event)))
        // Nothing reads them, and with thousands of accounts they are most of the cache.
        .modify(|account| {
            account.managed_fields_mut().clear();
            account.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .reflect(writer)
        .inspect_ok(move |_| {
            changes.send_replace(());
        })
        .applied_objects()
        // The cache takes in every change; the change a reconcile's own status write made wakes no
        // second reconcile: that one already knew it.
        .try_filter(move |account| future::ready(!memos.is_own_status_write(account)))
}

/// What `kubectl apply` keeps on every object it applied: a copy of the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Turns the untyped DhanAccount events into typed ones, reporting and leaving out what does
/// not decode, keeps the account index, and tracks which namespaces hold accounts.
struct Decoder {
    ctx: Arc<Context>,
    namespaces: channel::Sender<BTreeSet<String>>,
    /// Namespace of every account in the cache.
    seen: Placement,
    /// The same, being rebuilt during a relist.
    relisted: Option<Relist>,
}

/// What a relist has shown so far.
#[derive(Default)]
struct Relist {
    namespaces: HashMap<String, String>,
    /// Every object listed, readable or not.
    uids: HashSet<String>,
}

impl Decoder {
    fn map(
        &mut self,
        event: watcher::Result<Event<DynamicObject>>,
    ) -> Option<watcher::Result<Event<DhanAccount>>> {
        let event = match event {
            Err(error) => return Some(Err(error)),
            Ok(event) => event,
        };
        let mapped = match event {
            Event::Init => {
                self.relisted = Some(Relist::default());
                Event::Init
            }
            Event::InitDone => {
                if let Some(relist) = self.relisted.take() {
                    // A skipped object deleted while the watch was down is gone for good.
                    for uid in self.ctx.health.skipped_uids() {
                        if !relist.uids.contains(&uid) {
                            self.ctx.health.unskip(&uid);
                        }
                    }
                    self.count_skipped();
                    self.seen = Placement::from(relist.namespaces);
                    self.publish();
                }
                Event::InitDone
            }
            Event::InitApply(object) => {
                if let Some(relist) = &mut self.relisted {
                    relist.uids.insert(uid(&object));
                }
                let account = match self.readable(&object) {
                    Ok(account) => account,
                    Err(undecodable) => {
                        self.index_skipped(&object, &undecodable);
                        return None;
                    }
                };
                if let Some(relist) = &mut self.relisted {
                    relist
                        .namespaces
                        .insert(uid(&object), object.namespace().unwrap_or_default());
                }
                Event::InitApply(account)
            }
            Event::Apply(object) => match self.readable(&object) {
                Ok(account) => {
                    if self
                        .seen
                        .insert(uid(&object), object.namespace().unwrap_or_default())
                    {
                        self.publish();
                    }
                    Event::Apply(account)
                }
                // A readable account that turned unreadable leaves the cache: reconciling a
                // stale copy would act on what its owner no longer says. Not the index: there
                // it keeps its claim.
                Err(undecodable) => {
                    if self.seen.remove(&uid(&object)) {
                        self.publish();
                    }
                    self.index_skipped(&object, &undecodable);
                    return Some(Ok(Event::Delete(stand_in(&object))));
                }
            },
            Event::Delete(object) => {
                let uid = uid(&object);
                self.ctx.health.unskip(&uid);
                self.count_skipped();
                if self.seen.remove(&uid) {
                    self.publish();
                }
                // Its claim waits out the grace, then passes to its re-creation or is
                // released: released at once, another install's account would mint over the
                // token the re-created one is about to adopt.
                if let Some(claims) = self.ctx.claims.clone() {
                    claims.leaving(&uid);
                    let store = self.ctx.store.clone();
                    let key = ObjectRef::<DhanAccount>::new(&object.name_any())
                        .within(&object.namespace().unwrap_or_default());
                    tokio::spawn(async move {
                        tokio::time::sleep(super::index::REPLACE_GRACE).await;
                        let successor = store.get(&key).and_then(|a| a.uid());
                        let successor = successor.filter(|s| *s != uid);
                        claims.departed(&uid, successor.as_deref()).await;
                    });
                }
                Event::Delete(stand_in(&object))
            }
        };
        self.ctx.index.apply(&mapped);
        Some(Ok(mapped))
    }

    /// The account in `object`, or why it cannot be read (reported once per version).
    fn readable(&self, object: &DynamicObject) -> Result<DhanAccount, Box<Undecodable>> {
        let health = &self.ctx.health;
        let result = decode(object);
        match &result {
            Ok(_) => health.unskip(&uid(object)),
            Err(undecodable) => {
                if health.skip(&undecodable.uid, undecodable.skipped.clone()) {
                    let why = &undecodable.skipped.why;
                    let claims = undecodable.claim.filed().is_some();
                    warn!(account = %undecodable.skipped.object, %why, claims_client_id = claims,
                        "skipping a DhanAccount that cannot be read");
                    let message = format!(
                        "The operator cannot read this DhanAccount and leaves it alone until it \
                         is fixed: {why}. {}",
                        undecodable.claim.consequence()
                    );
                    tokio::spawn(report(self.ctx.clone(), reference(object), message));
                }
            }
        }
        self.count_skipped();
        result
    }

    /// Files what unreadable `object` still claims in the index, in place of its entries.
    fn index_skipped(&self, object: &DynamicObject, undecodable: &Undecodable) {
        let namespace = object.namespace().unwrap_or_default();
        let claim = undecodable.claim.filed();
        self.ctx
            .index
            .skipped(&namespace, &object.name_any(), claim);
    }

    fn count_skipped(&self) {
        let count = self.ctx.health.skipped_count();
        self.ctx.metrics.skipped_accounts.set(count as i64);
    }

    fn publish(&self) {
        let namespaces: BTreeSet<String> = self.seen.by_namespace.keys().cloned().collect();
        self.namespaces.send_if_modified(|current| {
            let changed = *current != namespaces;
            *current = namespaces;
            changed
        });
    }
}

/// Which namespace each account is in, and how many accounts each namespace holds: an account's
/// event costs the same with ten accounts or ten thousand.
#[derive(Default)]
struct Placement {
    by_uid: HashMap<String, String>,
    by_namespace: HashMap<String, usize>,
}

impl From<HashMap<String, String>> for Placement {
    fn from(by_uid: HashMap<String, String>) -> Self {
        let mut by_namespace = HashMap::new();
        for namespace in by_uid.values() {
            *by_namespace.entry(namespace.clone()).or_default() += 1;
        }
        Placement {
            by_uid,
            by_namespace,
        }
    }
}

impl Placement {
    /// Records `uid` in `namespace`; whether the set of namespaces changed.
    fn insert(&mut self, uid: String, namespace: String) -> bool {
        if self.by_uid.get(&uid) == Some(&namespace) {
            return false;
        }
        let left = self.remove(&uid);
        let count = self.by_namespace.entry(namespace.clone()).or_default();
        *count += 1;
        self.by_uid.insert(uid, namespace);
        left || *count == 1
    }

    /// Forgets `uid`; whether the set of namespaces changed.
    fn remove(&mut self, uid: &str) -> bool {
        let Some(namespace) = self.by_uid.remove(uid) else {
            return false;
        };
        let Some(count) = self.by_namespace.get_mut(&namespace) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.by_namespace.remove(&namespace);
            return true;
        }
        false
    }
}

fn uid(object: &DynamicObject) -> String {
    object.uid().unwrap_or_default()
}

fn reference(object: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some("dhan-operator.dev/v1alpha1".into()),
        kind: Some("DhanAccount".into()),
        name: object.metadata.name.clone(),
        namespace: object.metadata.namespace.clone(),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// An event on the unreadable account, so its owner sees why nothing happens.
async fn report(ctx: Arc<Context>, object: ObjectReference, message: String) {
    let what = Occurrence {
        warning: true,
        reason: "Undecodable",
        action: "Decode",
        message: &message,
    };
    events::publish(&ctx, &object, what).await;
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn the_namespaces_change_only_with_the_first_and_last_account_in_one() {
        let mut placement = Placement::default();
        assert!(
            placement.insert("a".into(), "team-a".into()),
            "a new namespace"
        );
        assert!(!placement.insert("b".into(), "team-a".into()));
        assert!(!placement.insert("b".into(), "team-a".into()), "seen again");
        assert!(placement.insert("c".into(), "team-b".into()));
        assert!(!placement.remove("a"), "team-a still has b");
        assert!(placement.remove("b"), "team-a is empty");
        assert!(!placement.remove("b"), "already gone");
        let mut names: Vec<_> = placement.by_namespace.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["team-b"]);
        let rebuilt = Placement::from(placement.by_uid.clone());
        assert_eq!(rebuilt.by_namespace, placement.by_namespace);
    }
}
