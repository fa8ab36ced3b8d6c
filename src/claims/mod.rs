//! One minter per client ID across operator installs: a new token kills the client's previous
//! one (docs/dhan-api.md §1), so two installs that cannot see each other's DhanAccounts (two
//! single-namespace installs, say) must still never both mint for one client.
//!
//! Each client ID gets a `coordination.k8s.io` Lease named by a hash of it, in a namespace every
//! install is pointed at (`--client-claims-namespace`). An account takes it right before its
//! first call that would mint (or spend a consent), and holds it while it has a live token or a
//! login in progress: a claim goes to accounts that actually obtain tokens, so a DhanAccount
//! naming someone else's client ID with no usable credentials claims nothing, and one whose
//! credentials Dhan refuses gives the claim up at the end of that round. The holder renews it
//! in the background ([`Claims::renew_due`]); it is released when the account is deleted,
//! changes its client ID or no longer holds a token, and expires by itself when its install
//! is gone. The holder is named `<install>/<account UID>`: whoever reads the Lease learns
//! neither the account's namespace nor its name.
//!
//! kube-lease-manager (used for leader election) blocks until it holds a Lease; a claim needs a
//! single try that answers at once, hence the few Lease calls here.

mod verdict;

pub use verdict::{Verdict, client_hash, lease_name, verdict};

use crate::clock::Clock;
use crate::leader::SKEW_MARGIN;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Label on every claim Lease.
pub const CLAIM_LABEL: &str = "dhan-operator.dev/client-claim";

/// Settings of client-ID claims.
#[derive(Clone, Debug)]
pub struct ClaimSettings {
    /// Where the claim Leases live: the same for every install that may see a client ID.
    pub namespace: String,
    /// This install's name, stable across restarts and replicas.
    pub install: String,
    /// How long a claim stays valid without renewal.
    pub duration: Duration,
}

/// Why an account may not mint now.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the client ID is claimed by another DhanAccount")]
    Taken,
    #[error("cannot claim the client ID (Lease {lease} in namespace {namespace}): {detail}")]
    Unavailable {
        lease: String,
        namespace: String,
        detail: String,
    },
}

#[derive(Clone, Debug)]
struct Held {
    client_id: String,
    /// The `renewTime` this process last wrote, by its clock.
    renewed: DateTime<Utc>,
}

/// The claims this install holds.
pub struct Claims {
    leases: Api<Lease>,
    settings: ClaimSettings,
    clock: Arc<dyn Clock>,
    /// By account UID, in order: releases and renewals walk it, and their Lease writes must not
    /// come in an order a hash seed picks.
    held: Mutex<BTreeMap<String, Held>>,
}

impl Claims {
    pub fn new(client: Client, settings: ClaimSettings, clock: Arc<dyn Clock>) -> Claims {
        Claims {
            leases: Api::namespaced(client, &settings.namespace),
            settings,
            clock,
            held: Mutex::default(),
        }
    }

    fn holder(&self, uid: &str) -> String {
        format!("{}/{uid}", self.settings.install)
    }

    fn held(&self, uid: &str) -> Option<Held> {
        self.held.lock().expect("claims poisoned").get(uid).cloned()
    }

    fn forget(&self, uid: &str) -> Option<Held> {
        self.held.lock().expect("claims poisoned").remove(uid)
    }

    /// The client ID account `uid` holds a claim on, if any.
    pub fn claimed_by(&self, uid: &str) -> Option<String> {
        self.held(uid).map(|h| h.client_id)
    }

    /// Account UIDs holding claims.
    pub fn holders(&self) -> Vec<String> {
        self.held
            .lock()
            .expect("claims poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Before a mint: account `uid` holds the claim on `client_id`, valid for `needed` more.
    /// Answers from memory while the claim is fresh; otherwise takes or renews the Lease.
    pub async fn secure(
        &self,
        uid: &str,
        client_id: &str,
        needed: Duration,
    ) -> Result<(), ClaimError> {
        let client_id = client_id.trim();
        if let Some(held) = self.held(uid) {
            if held.client_id == client_id {
                let valid_until = held.renewed + self.settings.duration;
                if self.clock.now() + needed + SKEW_MARGIN < valid_until {
                    return Ok(());
                }
            } else {
                self.release(uid).await;
            }
        }
        self.take(uid, client_id).await
    }

    /// Takes (or renews) the Lease for `client_id` in the name of account `uid`.
    async fn take(&self, uid: &str, client_id: &str) -> Result<(), ClaimError> {
        let name = lease_name(client_id);
        let holder = self.holder(uid);
        // Two tries: a create or replace that loses a race (409) reads the Lease again.
        for _ in 0..2 {
            let now = self.clock.now();
            let current = self
                .leases
                .get_opt(&name)
                .await
                .map_err(|e| self.unavailable(&name, e))?;
            let written =
                match verdict(current.as_ref().and_then(|l| l.spec.as_ref()), &holder, now) {
                    Verdict::Taken => {
                        self.forget(uid);
                        return Err(ClaimError::Taken);
                    }
                    Verdict::Absent => {
                        let lease = self.lease(&name, &holder, now, None);
                        self.leases.create(&PostParams::default(), &lease).await
                    }
                    Verdict::Ours | Verdict::Free => {
                        let current = current.expect("a verdict other than Absent reads a Lease");
                        let lease = self.lease(&name, &holder, now, Some(&current));
                        self.leases
                            .replace(&name, &PostParams::default(), &lease)
                            .await
                    }
                };
            match written {
                Ok(_) => {
                    let held = Held {
                        client_id: client_id.to_string(),
                        renewed: now,
                    };
                    let fresh = self
                        .held
                        .lock()
                        .expect("claims poisoned")
                        .insert(uid.to_string(), held)
                        .is_none();
                    if fresh {
                        info!(lease = %name, "claimed the client ID for an account");
                    }
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(error) => return Err(self.unavailable(&name, error)),
            }
        }
        self.forget(uid);
        Err(ClaimError::Taken)
    }

    /// The Lease as this holder writes it: `current`'s metadata (its resource version makes
    /// the write fail if someone else wrote in between), a new holder counted as a transition.
    fn lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        current: Option<&Lease>,
    ) -> Lease {
        let previous = current.and_then(|l| l.spec.clone()).unwrap_or_default();
        let same_holder = previous.holder_identity.as_deref() == Some(holder);
        let time = MicroTime(
            k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros())
                .expect("the clock reads a representable time"),
        );
        let metadata = match current {
            Some(lease) => lease.metadata.clone(),
            None => ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(
                    CLAIM_LABEL.to_string(),
                    "client-id".to_string(),
                )])),
                ..ObjectMeta::default()
            },
        };
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                lease_duration_seconds: Some(
                    self.settings.duration.as_secs().min(i32::MAX as u64) as i32
                ),
                acquire_time: if same_holder {
                    previous.acquire_time
                } else {
                    Some(time.clone())
                },
                renew_time: Some(time),
                lease_transitions: Some(
                    previous.lease_transitions.unwrap_or(0)
                        + i32::from(!same_holder && current.is_some()),
                ),
                ..LeaseSpec::default()
            }),
        }
    }

    fn unavailable(&self, lease: &str, error: kube::Error) -> ClaimError {
        let detail = match error {
            kube::Error::Api(e) => format!("{} ({} {})", e.message, e.code, e.reason),
            other => other.to_string(),
        };
        ClaimError::Unavailable {
            lease: lease.to_string(),
            namespace: self.settings.namespace.clone(),
            detail,
        }
    }

    /// Gives up account `uid`'s claim: deletes the Lease if it still names this holder (a
    /// failure only means the Lease lapses by itself).
    pub async fn release(&self, uid: &str) {
        let Some(held) = self.forget(uid) else {
            return;
        };
        let name = lease_name(&held.client_id);
        let result = async {
            let Some(lease) = self.leases.get_opt(&name).await? else {
                return Ok(());
            };
            let ours = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.holder(uid).as_str());
            if !ours {
                return Ok(());
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: lease.uid(),
                    resource_version: lease.resource_version(),
                }),
                ..DeleteParams::default()
            };
            match self.leases.delete(&name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        .await;
        match result {
            Ok(()) => info!(lease = %name, "released the client-ID claim of an account"),
            Err(error) => {
                warn!(lease = %name, %error, "could not release a client-ID claim; it lapses by itself")
            }
        }
    }

    /// Renews every claim a third of its duration old. A claim someone else took meanwhile
    /// (only possible once it lapsed) is forgotten: the next mint tries to take it again.
    pub async fn renew_due(&self) {
        let due: Vec<(String, Held)> = {
            let now = self.clock.now();
            let held = self.held.lock().expect("claims poisoned");
            held.iter()
                .filter(|(_, h)| {
                    (now - h.renewed).to_std().unwrap_or_default() >= self.settings.duration / 3
                })
                .map(|(uid, h)| (uid.clone(), h.clone()))
                .collect()
        };
        for (uid, held) in due {
            match self.take(&uid, &held.client_id).await {
                Ok(()) => {}
                Err(ClaimError::Taken) => {
                    warn!(lease = %lease_name(&held.client_id), "a client-ID claim was taken over after it lapsed")
                }
                Err(error) => warn!(%error, "could not renew a client-ID claim"),
            }
        }
    }

    /// How often [`Claims::renew_due`] should run.
    pub fn renew_every(&self) -> Duration {
        (self.settings.duration / 6).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}
