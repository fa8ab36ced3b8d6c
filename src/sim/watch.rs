//! What each process's watches deliver: its accounts, the Secrets they read or write, and the
//! client-ID claims, when someone else changed them.

use super::world::World;
use crate::controller::index::REPLACE_GRACE;
use crate::crd::DhanAccount;
use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use tokio::time::Instant;

impl World {
    /// What each process's watches would deliver: the accounts of its namespaces, and the
    /// Secrets they read or write, when they changed by someone else's hand.
    pub(super) async fn watch(&mut self) {
        let now = Instant::now();
        // The watch of a process settles a deleted account's claim after its grace
        // (`controller::watch`).
        let mut released = Vec::new();
        let revision = self.api.revision();
        for t in &self.tenants {
            if !self.claim_paths.contains_key(&t.client) {
                let path = format!(
                    "/apis/dhan-operator.dev/v1alpha1/dhanclientclaims/{}",
                    crate::claims::claim_name(&t.client)
                );
                self.claim_paths.insert(t.client.clone(), path);
            }
        }
        for p in self.processes.iter_mut().filter(|p| p.down_until.is_none()) {
            if p.watched == Some(revision) {
                continue;
            }
            p.watched = Some(revision);
            let mut woken_clients = BTreeSet::new();
            for t in self
                .tenants
                .iter()
                .filter(|t| p.namespaces.contains(&t.namespace))
            {
                let key = t.key();
                let path = t.account_path();
                let version = self.api.version_of(&path);
                let changed = p.seen.get(&path) != version.as_ref();
                let object = if changed && version.is_some() {
                    self.api.get(&path)
                } else {
                    None
                };
                match (object, changed) {
                    (Some(object), true) => {
                        let account: DhanAccount =
                            serde_json::from_value(object).expect("a valid DhanAccount");
                        // Deleted and created again between two looks: the watch delivers the
                        // deletion of the old object first (seed 238: without it, a replaced
                        // account's claim was never given up).
                        if let Some(old) = p.cached.get(&key).cloned()
                            && old.uid() != account.uid()
                        {
                            p.cached.remove(&key);
                            if let Some(claims) = p.ctx.claims.clone() {
                                let uid = old.uid().unwrap_or_default();
                                claims.leaving(&uid);
                                released.push((claims, uid, key.clone()));
                            }
                            let event = watcher::Event::Delete(old);
                            p.ctx.index.apply(&event);
                            p.writer.apply_watcher_event(&event);
                        }
                        p.seen.insert(path, version.unwrap_or_default());
                        let event = watcher::Event::Apply(account.clone());
                        p.ctx.index.apply(&event);
                        p.writer.apply_watcher_event(&event);
                        let own = p.ctx.memos.is_own_status_write(&account);
                        p.cached.insert(key.clone(), account);
                        if !own {
                            p.due.insert(key.clone(), now);
                        }
                    }
                    (None, true) => {
                        p.seen.remove(&path);
                        p.due.remove(&key);
                        if let Some(account) = p.cached.remove(&key) {
                            if let Some(claims) = p.ctx.claims.clone() {
                                let uid = account.uid().unwrap_or_default();
                                claims.leaving(&uid);
                                released.push((claims, uid, key.clone()));
                            }
                            let event = watcher::Event::Delete(account);
                            p.ctx.index.apply(&event);
                            p.writer.apply_watcher_event(&event);
                        }
                    }
                    _ => {}
                }
                while let Ok(woken) = p.wakes.try_recv() {
                    let woken = format!("{}/{}", woken.namespace.unwrap_or_default(), woken.name);
                    if p.cached.contains_key(&woken) {
                        p.due.insert(woken, now);
                    }
                }
                // The claims watch: a changed claim wakes the accounts of its client ID.
                let claim = self.claim_paths[&t.client].clone();
                let version = self.api.version_of(&claim);
                if p.claims_seen.get(&claim) != Some(&version) {
                    let object = self.api.get(&claim);
                    // As `controller::watch_claims`: this install's own writes wake nobody.
                    let label = object.as_ref().and_then(|c| {
                        c["metadata"]["labels"][crate::claims::INSTALL_LABEL].as_str()
                    });
                    let own = p.ctx.claims.as_ref().map(|c| c.install_label());
                    if label != own.as_deref() {
                        woken_clients.insert(t.client.clone());
                    }
                    p.claims_seen.insert(claim, version);
                }
                for secret in [t.credentials_path(), t.output_path()] {
                    let Some(version) = self.api.version_of(&secret) else {
                        continue;
                    };
                    if p.seen.get(&secret) == Some(&version) {
                        continue;
                    }
                    let Some(object) = self.api.get(&secret) else {
                        continue;
                    };
                    p.seen.insert(secret.clone(), version);
                    let secret: k8s_openapi::api::core::v1::Secret =
                        serde_json::from_value(object).expect("a Secret");
                    if !p.ctx.own_writes.is_echo(&secret) && p.cached.contains_key(&key) {
                        p.due.insert(key.clone(), now);
                    }
                }
            }
            for (key, account) in &p.cached {
                if woken_clients.contains(account.spec.client_id.trim()) {
                    p.due.insert(key.clone(), now);
                }
            }
        }
        for (claims, uid, key) in released {
            self.releases.push((now + REPLACE_GRACE, claims, uid, key));
        }
    }
}
