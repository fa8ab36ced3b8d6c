//! What this process remembers per account between reconciles, beyond the status: the last
//! probe (so a probe that finds nothing new writes nothing), a token obtained but not yet
//! written (the write-ahead: it is the only live token, so it is never dropped while valid),
//! and the resource version of its own last status write (to know when the cache is fresh).

use super::events::LastEvent;
use crate::decision::{Held, ProbeVerdict};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Memo {
    /// The last probe: which token (hash), when, and what Dhan said.
    probe: Option<(String, DateTime<Utc>, ProbeVerdict)>,
    /// A token obtained and not yet durably in the output Secret (boxed: rarely there, and
    /// every account has a memo).
    unwritten: Option<Box<Held>>,
    /// The resource version the last status write of this process produced.
    written: Option<String>,
    /// The last event published on the account, to count a repeat into its series.
    last_event: Option<LastEvent>,
    /// When the kept token's write was last refused.
    refused_write: Option<DateTime<Utc>>,
}

/// Per-account memos, by account UID.
#[derive(Default)]
pub struct Memos(Mutex<HashMap<String, Memo>>);

impl Memos {
    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Memo) -> T) -> T {
        let mut map = self.0.lock().expect("memos poisoned");
        let memo = map.entry(uid.to_string()).or_default();
        f(memo)
    }

    fn read<T>(&self, uid: &str, f: impl FnOnce(&Memo) -> Option<T>) -> Option<T> {
        self.0.lock().expect("memos poisoned").get(uid).and_then(f)
    }

    /// The last probe of the token with `hash`.
    pub fn probe(&self, uid: &str, hash: Option<&str>) -> Option<(DateTime<Utc>, ProbeVerdict)> {
        self.read(uid, |m| {
            let (probed, at, verdict) = m.probe.as_ref()?;
            (Some(probed.as_str()) == hash).then_some((*at, *verdict))
        })
    }

    pub fn remember_probe(&self, uid: &str, hash: &str, at: DateTime<Utc>, verdict: ProbeVerdict) {
        self.with(uid, |m| m.probe = Some((hash.to_string(), at, verdict)));
    }

    /// Keeps a token until it is written (write-ahead).
    pub fn keep_unwritten(&self, uid: &str, held: &Held) {
        self.with(uid, |m| m.unwritten = Some(Box::new(held.clone())));
    }

    pub fn unwritten(&self, uid: &str) -> Option<Held> {
        self.read(uid, |m| m.unwritten.as_deref().cloned())
    }

    /// The token with `hash` is durably written.
    pub fn written_token(&self, uid: &str, hash: &str) {
        self.with(uid, |m| {
            if m.unwritten
                .as_ref()
                .is_some_and(|h| h.token.facts.hash == hash)
            {
                m.unwritten = None;
                m.refused_write = None;
            }
        });
    }

    /// The kept token's write was refused at `at`.
    pub fn refused_write(&self, uid: &str, at: DateTime<Utc>) {
        self.with(uid, |m| m.refused_write = Some(at));
    }

    /// When the kept token's write was last refused.
    pub fn last_refused_write(&self, uid: &str) -> Option<DateTime<Utc>> {
        self.read(uid, |m| m.refused_write)
    }

    pub fn remember_status_write(&self, uid: &str, resource_version: Option<String>) {
        self.with(uid, |m| m.written = resource_version);
    }

    pub fn last_status_write(&self, uid: &str) -> Option<String> {
        self.read(uid, |m| m.written.clone())
    }

    /// Whether `object` is what this process's own last status write of it produced: its
    /// watch event brings nothing the reconcile that wrote it did not know.
    pub fn is_own_status_write<K: kube::Resource>(&self, object: &K) -> bool {
        let version = object.resource_version();
        version.is_some() && self.last_status_write(&object.uid().unwrap_or_default()) == version
    }

    pub fn last_event(&self, uid: &str) -> Option<LastEvent> {
        self.read(uid, |m| m.last_event.clone())
    }

    pub fn remember_event(&self, uid: &str, event: LastEvent) {
        self.with(uid, |m| m.last_event = Some(event));
    }

    /// Forgets an account.
    pub fn forget(&self, uid: &str) {
        self.0.lock().expect("memos poisoned").remove(uid);
    }

    /// Keeps only the accounts `keep` accepts; returns the UIDs dropped, in order (not the
    /// map's, which a hash seed picks).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut map = self.0.lock().expect("memos poisoned");
        let mut dropped: Vec<String> = map.keys().filter(|uid| !keep(uid)).cloned().collect();
        dropped.sort_unstable();
        for uid in &dropped {
            map.remove(uid);
        }
        dropped
    }

    /// How many accounts have a memo (for tests of pruning).
    pub fn len(&self) -> usize {
        self.0.lock().expect("memos poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The resource versions this process's own Secret writes produced, by namespace and name: the
/// watch events they cause wake no reconcile. Forgotten once seen.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<(String, String), String>>);

impl OwnWrites {
    pub fn wrote(&self, namespace: &str, name: &str, version: Option<String>) {
        let mut map = self.0.lock().expect("own writes poisoned");
        let key = (namespace.to_string(), name.to_string());
        match version {
            Some(version) => map.insert(key, version),
            None => map.remove(&key),
        };
    }

    /// Whether `object` is the result of this process's last write of it.
    pub fn is_echo<K: kube::Resource>(&self, object: &K) -> bool {
        let meta = object.meta();
        let (Some(namespace), Some(name), Some(version)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return false;
        };
        let mut map = self.0.lock().expect("own writes poisoned");
        let key = (namespace.clone(), name.clone());
        if map.get(&key) == Some(version) {
            map.remove(&key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    fn secret(name: &str, version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("t".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pruning_names_the_dropped_accounts_in_order() {
        let memos = Memos::default();
        let uids: Vec<String> = (0..16)
            .map(|i| format!("uid-{:02}", (i * 7) % 16))
            .collect();
        for uid in &uids {
            memos.remember_status_write(uid, Some("1".into()));
        }
        let mut sorted = uids.clone();
        sorted.sort();
        assert_eq!(memos.retain(|uid| uid == "uid-03"), {
            sorted.retain(|uid| uid != "uid-03");
            sorted
        });
        assert_eq!(memos.len(), 1);
    }

    #[test]
    fn only_the_event_of_an_own_write_is_an_echo_and_only_once() {
        let own = OwnWrites::default();
        own.wrote("t", "alice-token", Some("7".into()));
        assert!(
            !own.is_echo(&secret("alice-token", "6")),
            "an older version"
        );
        assert!(!own.is_echo(&secret("bob-token", "7")));
        assert!(own.is_echo(&secret("alice-token", "7")));
        assert!(!own.is_echo(&secret("alice-token", "7")), "seen once");
        own.wrote("t", "alice-token", Some("9".into()));
        assert!(
            !own.is_echo(&secret("alice-token", "10")),
            "someone else's change"
        );
    }
}
