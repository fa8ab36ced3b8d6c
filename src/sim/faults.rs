//! The fault scheduler's faults of the operator's surroundings (crashes, Dhan's answers, refused
//! writes, tenants' doings) and spec edits, each from its own random stream.

use super::dhan::{LostAs, MintFault};
use super::world::{VALIDATE_EVERY, World, bump_generation, validate_every_text};
use crate::crd::REFRESH_REQUESTED_ANNOTATION;
use http::Method;
use rand::Rng;
use std::time::Duration;
use tokio::time::Instant;

impl World {
    /// Picks and makes one spec edit, from a random stream of its own: the other faults of a
    /// seed stay as they were before spec edits existed, so the seeds kept as regressions still
    /// replay what they found.
    pub(super) fn spec_edit(&mut self) {
        let t = self.edit_rng.random_range(0..self.tenants.len());
        let tenant = self.tenants[t].clone();
        match self.edit_rng.random_range(0..2u32) {
            0 => {
                // A spec edit: another probe interval.
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let every = VALIDATE_EVERY[self.edit_rng.random_range(0..VALIDATE_EVERY.len())]
                        .map(Duration::from_secs);
                    account["spec"]["refresh"]["validateEvery"] = validate_every_text(every).into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].validate_every = every;
                    self.note(format!(
                        "fault: {} validateEvery={}",
                        tenant.key(),
                        validate_every_text(every)
                    ));
                }
            }
            _ => {
                // A spec edit: the account names another client ID (a typo fixed, or made).
                let others: Vec<String> = self
                    .pins
                    .keys()
                    .filter(|c| **c != tenant.client)
                    .cloned()
                    .collect();
                if others.is_empty() {
                    return;
                }
                let client = others[self.edit_rng.random_range(0..others.len())].clone();
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    account["spec"]["clientId"] = client.clone().into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].client = client.clone();
                    self.tenants[t].client_since = Some(self.clock.now());
                    self.cause(&tenant.client);
                    self.cause(&client);
                    self.note(format!("fault: {} clientId={client}", tenant.key()));
                }
            }
        }
    }

    /// Picks and injects one fault.
    pub(super) fn fault(&mut self) {
        let now = Instant::now();
        let kind = self.rng.random_range(0..12u32);
        let t = self.rng.random_range(0..self.tenants.len());
        let tenant = self.tenants[t].clone();
        match kind {
            0 | 1 => {
                let install = self.rng.random_range(0..self.processes.len());
                if self.processes[install].down_until.is_some() {
                    return;
                }
                // Somewhere in the next reconcile, or at a random moment.
                let within = if kind == 0 { 3_000 } else { 600_000 };
                let at = now + Duration::from_millis(self.rng.random_range(0..within));
                self.processes[install].crash_at = Some(at);
                self.note(format!(
                    "fault: install-{install} will crash in {:?}",
                    at - now
                ));
            }
            2 => {
                let fault = match self.rng.random_range(0..6u32) {
                    0 => MintFault::ServerError,
                    1 => MintFault::LostAnswer(LostAs::Timeout),
                    2 => MintFault::LostAnswer(LostAs::Reset),
                    3 => MintFault::LostAnswer(LostAs::Malformed),
                    4 => MintFault::Hang,
                    _ => MintFault::RateLimited,
                };
                self.note(format!(
                    "fault: client {}'s next mint: {fault:?}",
                    tenant.client
                ));
                // A lost answer is a cause on the day it is given (the checker counts it): the
                // fault may wait days for the next mint.
                self.dhan.schedule(&tenant.client, fault);
            }
            3 => {
                self.note(format!(
                    "fault: client {}'s next fresh token answers 401 once",
                    tenant.client
                ));
                self.dhan.spurious_401(&tenant.client);
            }
            4 => {
                if self.dhan.revoke(&tenant.client) {
                    self.cause(&tenant.client);
                    self.note(format!(
                        "fault: client {}'s token revoked (a login elsewhere)",
                        tenant.client
                    ));
                }
            }
            5 => {
                let ns = tenant.namespace.clone();
                let span = Duration::from_secs(self.rng.random_range(30..1800));
                for method in [Method::PATCH, Method::PUT, Method::POST] {
                    self.api.refuse(
                        method,
                        &format!("/namespaces/{ns}/secrets/"),
                        403,
                        "exceeded quota",
                    );
                }
                self.refusing.insert(ns.clone(), now + span);
                let clients: Vec<String> = self
                    .tenants
                    .iter()
                    .filter(|t| t.namespace == ns)
                    .map(|t| t.client.clone())
                    .collect();
                for client in clients {
                    self.cause(&client);
                }
                self.note(format!(
                    "fault: Secret writes in {ns} refused for {}s",
                    span.as_secs()
                ));
            }
            6 => {
                if let Some(mut secret) = self.api.get(&tenant.credentials_path()) {
                    secret["metadata"]["annotations"]["touched"] =
                        self.clock.now().to_rfc3339().into();
                    self.api.put(&tenant.credentials_path(), secret);
                    self.note(format!(
                        "fault: credentials of {} touched (an annotation)",
                        tenant.key()
                    ));
                }
            }
            7 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let value = format!("r{}", self.rng.random_range(0..1_000_000u32));
                    account["metadata"]["annotations"][REFRESH_REQUESTED_ANNOTATION] = value.into();
                    self.api.put(&tenant.account_path(), account);
                    self.cause(&tenant.client);
                    self.note(format!("fault: refresh requested for {}", tenant.key()));
                }
            }
            8 => {
                if tenant.absent {
                    self.create(t, 0);
                    self.note(format!("fault: {} created again", tenant.key()));
                } else {
                    self.api.remove(&tenant.account_path());
                    self.tenants[t].absent = true;
                    self.note(format!(
                        "fault: {} deleted (its Secret retained)",
                        tenant.key()
                    ));
                    if self.rng.random_bool(0.8) {
                        // `kubectl replace --force`, a GitOps re-sync: back at once.
                        self.create(t, 0);
                        self.note(format!("fault: {} created again", tenant.key()));
                    }
                }
            }
            9 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let suspend = !tenant.suspended;
                    account["spec"]["suspend"] = suspend.into();
                    bump_generation(&mut account);
                    self.api.put(&tenant.account_path(), account);
                    self.tenants[t].suspended = suspend;
                    self.cause(&tenant.client);
                    self.note(format!("fault: {} suspend={suspend}", tenant.key()));
                }
            }
            10 => {
                if let Some(mut account) = self.api.get(&tenant.account_path()) {
                    let step = crate::dhan::totp::step_at(self.clock.now());
                    account["status"]["lastTotpStep"] = (step + 1_000_000).into();
                    account["status"]["retryNotBefore"] = "2031-01-01T00:00:00Z".into();
                    self.api.put(&tenant.account_path(), account);
                    self.note(format!(
                        "fault: a tenant wrote future values into {}'s status",
                        tenant.key()
                    ));
                }
            }
            _ => {
                let ns = tenant.namespace.clone();
                let path = format!("/namespaces/{ns}/dhanaccounts/");
                let span = Duration::from_secs(self.rng.random_range(10..600));
                self.api
                    .refuse(Method::PATCH, &path, 500, "etcdserver: request timed out");
                self.refusing.insert(format!("{ns}#status"), now + span);
                self.note(format!(
                    "fault: status writes in {ns} fail for {}s",
                    span.as_secs()
                ));
            }
        }
    }
}
