//! Lookups across every watched account, kept up to date from the account watch itself, so that
//! a reconcile or a watch event costs the same with ten accounts or ten thousand: who mints for
//! a client ID, which accounts use a Secret, whose login a Pod is, which logins status records.
//! An account's entries are replaced each time the watch delivers it. An account the watch
//! cannot read keeps its claim on its client ID only (see `decode`).

use super::conflict::{Claim, Claims};
use super::output::account_label;
use super::spec::credential_secret_names;
use crate::crd::DhanAccount;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A namespace and a name.
type Key = (String, String);
/// Names of accounts in the namespace of the key they are filed under: usually one, so a `Vec`
/// (a set's first allocation has room for several, and these are kept per account).
type Names = Vec<String>;

/// The index; shared by the watch (writer) and the reconciles (readers).
#[derive(Default)]
pub struct AccountIndex(RwLock<Inner>);

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

impl AccountIndex {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.0.read().expect("account index poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.0.write().expect("account index poisoned")
    }

    /// Takes in one event of the account watch.
    pub fn apply(&self, event: &watcher::Event<DhanAccount>) {
        let mut inner = self.write();
        match event {
            watcher::Event::Apply(account) => inner.upsert(account),
            watcher::Event::Delete(account) => inner.remove(&key_of(account)),
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
        let entry = Entry {
            reference: Some(ObjectRef::from_obj(account)),
            claim: Claim::of(account),
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
