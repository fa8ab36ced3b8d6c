//! Lookups across every watched account, kept up to date from the account watch itself, so that
//! a reconcile or a watch event costs the same with ten accounts or ten thousand: who mints for
//! a client ID, which accounts use a Secret, whose login a Pod is, which logins status records.
//! An account's entries are replaced each time the watch delivers it. An account the watch
//! cannot read keeps its claim on its client ID only (see `decode`).

use super::conflict::{Claim, Claims};
use super::output::account_label;
use super::spec::credential_secret_names;
use crate::clock::Clock;
use crate::crd::DhanAccount;
use chrono::{DateTime, Utc};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A namespace and a name.
type Key = (String, String);
/// Names of accounts in the namespace of the key they are filed under: usually one, so a `Vec`
/// (a set's first allocation has room for several, and these are kept per account).
type Names = Vec<String>;

/// The index; shared by the watch (writer) and the reconciles (readers).
#[derive(Default)]
pub struct AccountIndex {
    inner: RwLock<Inner>,
    /// For a deleted account's tombstone (none without a clock: no tombstones).
    clock: Option<Arc<dyn Clock>>,
    /// Where the accounts to reconcile again go when another account's claim on their client
    /// ID changed (see [`AccountIndex::wakes`]).
    wake: Mutex<Option<UnboundedSender<ObjectRef<DhanAccount>>>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    claims: Claims,
    /// Secrets named in specs (output and credentials), to the accounts naming them.
    secrets: HashMap<Key, Names>,
    /// Login Pods' account label (the name cut to 63 characters), to the accounts.
    login_labels: HashMap<Key, Names>,
    /// UIDs of the accounts whose status records a login in progress.
    logins: HashSet<String>,
    /// A re-list in progress: a new index built from it replaces this one once complete, as
    /// the store is replaced.
    relist: Option<Box<Inner>>,
}

/// What one account put in the index, to take it out again.
struct Entry {
    /// `None` for an account that cannot be read: it is not reconciled, so nothing leads to it.
    reference: Option<ObjectRef<DhanAccount>>,
    claim: Option<(String, Claim)>,
    /// In the account's namespace.
    secrets: Vec<String>,
    label: Option<String>,
    login: Option<String>,
}

/// How long a deleted account with a live token keeps its client ID, so that its re-creation
/// adopts the token rather than another account minting over it.
pub const REPLACE_GRACE: Duration = Duration::from_secs(60);

impl AccountIndex {
    pub fn new(clock: Arc<dyn Clock>) -> AccountIndex {
        AccountIndex {
            clock: Some(clock),
            ..Default::default()
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("account index poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("account index poisoned")
    }

    /// The accounts to reconcile again because the verdict on their client ID may have changed:
    /// another account of the same client ID changed its claim (it was deleted, suspended,
    /// failed, its token expired or it named another client ID). So an account in `Conflict`
    /// takes over at once, instead of polling. One receiver at a time: a new call replaces it.
    pub fn wakes(&self) -> UnboundedReceiver<ObjectRef<DhanAccount>> {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        *self.wake.lock().expect("wake poisoned") = Some(sender);
        receiver
    }

    /// Takes in one event of the account watch.
    pub fn apply(&self, event: &watcher::Event<DhanAccount>) {
        let mut inner = self.write();
        match event {
            watcher::Event::Apply(account) => {
                let key = key_of(account);
                let before = inner.claim_of(&key);
                inner.upsert(account);
                let after = inner.claim_of(&key);
                if before != after {
                    self.wake_rivals(&inner, &key, [before, after]);
                }
            }
            watcher::Event::Delete(account) => {
                let key = key_of(account);
                let before = inner.claim_of(&key);
                inner.remove(&key);
                let tombstone = before.as_ref().and_then(|(client, claim)| {
                    let now = self.clock.as_ref()?.now();
                    let grace = chrono::Duration::from_std(REPLACE_GRACE).ok()?;
                    Some((client.clone(), claim.tombstone(now, grace)?))
                });
                // What it leaves: its claim, until it is created again or the next relist; past
                // its grace it holds nothing.
                if let Some(tombstone) = tombstone {
                    inner.upsert_skipped(key.clone(), Some(tombstone));
                }
                if before.is_some() {
                    self.wake_rivals(&inner, &key, [before, None]);
                }
            }
            watcher::Event::Init => inner.relist = Some(Box::default()),
            // Only the entries are kept, not copies of the accounts: the store holds those.
            watcher::Event::InitApply(account) => inner
                .relist
                .get_or_insert_with(Box::default)
                .upsert(account),
            watcher::Event::InitDone => {
                let listed = inner.relist.take().unwrap_or_default();
                *inner = *listed;
            }
        }
    }

    /// Takes in an account of namespace `namespace` named `name` that the watch cannot read, in
    /// place of what it put in before: only its claim, if it makes one. Part of the relist when
    /// one is in progress (it was listed).
    pub fn skipped(&self, namespace: &str, name: &str, claim: Option<(String, Claim)>) {
        let mut inner = self.write();
        let inner = match &mut inner.relist {
            Some(relist) => relist,
            None => &mut *inner,
        };
        inner.upsert_skipped((namespace.to_string(), name.to_string()), claim);
    }

    /// The account that may mint for `account`'s client ID at `now` when it is not `account`
    /// itself.
    pub fn winner_over(&self, account: &DhanAccount, now: DateTime<Utc>) -> Option<String> {
        self.read().claims.winner_over(account, now)
    }

    /// The next moment after `now` at which the verdict on `client_id` changes with time alone
    /// (a claim stops holding, a token expires); events bring every other change.
    pub fn next_verdict_change(
        &self,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.read().claims.next_change(client_id, now)
    }

    /// The accounts of the client ID whose cluster-wide claim is named `claim`: a change of the
    /// claim (another install let it go, or took it) wakes them.
    pub fn claimants(&self, claim: &str) -> Vec<ObjectRef<DhanAccount>> {
        let inner = self.read();
        let Some(client) = inner.claims.client_of_claim(claim) else {
            return Vec::new();
        };
        inner
            .claims
            .accounts_of(client)
            .flat_map(|(namespace, name)| inner.references(namespace, [name]))
            .collect()
    }

    /// Sends the accounts other than `key` that claim the client IDs of `claims` to be
    /// reconciled again.
    fn wake_rivals(&self, inner: &Inner, key: &Key, claims: [Option<(String, Claim)>; 2]) {
        let wake = self.wake.lock().expect("wake poisoned");
        let Some(wake) = wake.as_ref() else {
            return;
        };
        let mut clients: Vec<&str> = claims.iter().flatten().map(|(c, _)| c.as_str()).collect();
        clients.dedup();
        for client in clients {
            for (namespace, name) in inner.claims.accounts_of(client) {
                if (namespace, name) == (key.0.as_str(), key.1.as_str()) {
                    continue;
                }
                let found = inner.references(namespace, [name]);
                for reference in found {
                    // Closed only when nothing reconciles any more.
                    let _ = wake.unbounded_send(reference);
                }
            }
        }
    }

    /// Accounts that own Secret `name` (their output, named by the Secret's account annotation
    /// or by the spec) or read credentials from it.
    pub fn secret_users(
        &self,
        namespace: &str,
        name: &str,
        account_annotation: Option<&str>,
    ) -> Vec<ObjectRef<DhanAccount>> {
        let inner = self.read();
        let key = (namespace.to_string(), name.to_string());
        let mut names: Vec<&str> = inner
            .secrets
            .get(&key)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(account_annotation)
            .collect();
        names.sort_unstable();
        names.dedup();
        inner.references(namespace, names)
    }

    /// Accounts whose login Pods carry `label`.
    pub fn login_label_users(&self, namespace: &str, label: &str) -> Vec<ObjectRef<DhanAccount>> {
        let key = (namespace.to_string(), label.to_string());
        let inner = self.read();
        let names = inner.login_labels.get(&key).into_iter().flatten();
        inner.references(namespace, names.map(String::as_str))
    }

    /// UIDs of the accounts whose status records a login in progress.
    pub fn recorded_logins(&self) -> HashSet<String> {
        self.read().logins.clone()
    }
}

impl Inner {
    fn claim_of(&self, key: &Key) -> Option<(String, Claim)> {
        self.entries.get(key).and_then(|e| e.claim.clone())
    }

    /// The indexed accounts of `namespace` named `names`.
    fn references<'a>(
        &self,
        namespace: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<ObjectRef<DhanAccount>> {
        names
            .into_iter()
            .filter_map(|name| {
                let key = (namespace.to_string(), name.to_string());
                self.entries.get(&key)?.reference.clone()
            })
            .collect()
    }

    fn upsert(&mut self, account: &DhanAccount) {
        let key = key_of(account);
        // A deleted account's tombstone, or its entry when the watch delivered the deletion and
        // the re-creation as one change (a relist): the new account inherits its live token.
        let uid = account.uid().unwrap_or_default();
        let tombstone = self
            .entries
            .get(&key)
            .and_then(|e| e.claim.clone())
            .filter(|(_, claim)| claim.uid() != uid);
        self.remove(&key);
        let (namespace, name) = &key;
        let mut secrets: Vec<String> = account
            .spec
            .secret_name
            .iter()
            .cloned()
            .chain(credential_secret_names(&account.spec))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        let claim = Claim::of(account).map(|(client, claim)| match tombstone {
            Some((same, tombstone)) if same == client => (client, claim.inherit(&tombstone)),
            _ => (client, claim),
        });
        let entry = Entry {
            reference: Some(ObjectRef::from_obj(account)),
            claim,
            label: Some(account_label(account)),
            login: account
                .status
                .as_ref()
                .is_some_and(|s| s.login.is_some())
                .then(|| account.uid().unwrap_or_default()),
            secrets,
        };
        if let Some((client, claim)) = &entry.claim {
            self.claims.insert(client.clone(), claim.clone());
        }
        for secret in &entry.secrets {
            let names = self.secrets.entry((namespace.clone(), secret.clone()));
            add_name(names.or_default(), name);
        }
        if let Some(label) = &entry.label {
            let names = self.login_labels.entry((namespace.clone(), label.clone()));
            add_name(names.or_default(), name);
        }
        if let Some(uid) = &entry.login {
            self.logins.insert(uid.clone());
        }
        self.entries.insert(key, entry);
    }

    fn upsert_skipped(&mut self, key: Key, claim: Option<(String, Claim)>) {
        self.remove(&key);
        if let Some((client, claim)) = &claim {
            self.claims.insert(client.clone(), claim.clone());
        }
        let entry = Entry {
            reference: None,
            claim,
            secrets: Vec::new(),
            label: None,
            login: None,
        };
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &Key) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        if let Some((client, claim)) = &entry.claim {
            self.claims.remove(client, claim);
        }
        let (namespace, name) = key;
        for secret in &entry.secrets {
            drop_name(&mut self.secrets, (namespace.clone(), secret.clone()), name);
        }
        if let Some(label) = entry.label {
            drop_name(&mut self.login_labels, (namespace.clone(), label), name);
        }
        if let Some(uid) = &entry.login {
            self.logins.remove(uid);
        }
    }
}

fn add_name(names: &mut Names, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
        names.shrink_to_fit();
    }
}

fn drop_name(map: &mut HashMap<Key, Names>, key: Key, name: &str) {
    if let Some(names) = map.get_mut(&key) {
        names.retain(|n| n != name);
        if names.is_empty() {
            map.remove(&key);
        }
    }
}

fn key_of(account: &DhanAccount) -> Key {
    (account.namespace().unwrap_or_default(), account.name_any())
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
